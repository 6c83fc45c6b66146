/*
 * kvx_lease.c: the target (decode) side: one registration of the whole KV pool (one per rank
 * memory of a tensor-parallel pool), the lease table of reserved requests, the completion
 * active-message handler, expiry and cancel. One lease covers a request's blocks in every
 * rank's memory (the block ids are shared), and it ends once, for all of them.
 *
 * Every lease ends exactly once: a completion with status OK hands the blocks to the owner
 * (on_complete OK, no release); anything else (failure completion, expiry, cancel, destroy)
 * calls the release callback once, then tells the owner. A lease is unlinked from the table
 * before any callback runs, so callbacks may reserve or cancel. Blocks of an expired lease go
 * back release_grace_ms after its deadline, so puts a late initiator still had in flight land
 * before the allocator can hand the blocks to someone else. In AM mode (kvx_am.c) a lease also
 * counts its data messages: a completion waits until every message it announces is written,
 * and no lease ends (expiry, cancel, completion) while a receive into its blocks is running.
 * This file never reads or writes the pool memory itself: the decode owner touches blocks
 * only after completion.
 */
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "common/kvx/kvx_internal.h"
#include "base/log.h"

#define SKV_KVX_DEFAULT_GRACE_MS 200

/* Maps one memory of the pool and packs its rkey: the caller's memory, or (base NULL) memory
 * UCX allocates itself, which shared-memory transports can expose to peers so puts become
 * plain one-sided copies. On error m may hold a mapping the caller unmaps. */
static skv_status_t skv_kvx_pool_map(skv_kvx_t *kvx, skv_kvx_mem_t *m, void *base, uint64_t bytes)
{
    ucp_mem_map_params_t mp = {
        .field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                      UCP_MEM_MAP_PARAM_FIELD_FLAGS,
        .address = base,
        .length = bytes,
        .flags = base == NULL ? UCP_MEM_MAP_ALLOCATE : 0,
    };
    ucs_status_t us = ucp_mem_map(kvx->ctx, &mp, &m->memh);
    if (us != UCS_OK) {
        SKV_LOG_ERROR("kvx: ucp_mem_map of %llu-byte pool (%s): %s", (unsigned long long)bytes,
                      base == NULL ? "allocate" : "register", ucs_status_string(us));
        m->memh = NULL;
        return SKV_STATUS_TRANSPORT;
    }
    ucp_mem_attr_t attr = {.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS};
    if (ucp_mem_query(m->memh, &attr) != UCS_OK) {
        SKV_LOG_ERROR("kvx: ucp_mem_query of the pool failed");
        return SKV_STATUS_TRANSPORT;
    }
    m->base = attr.address;
    us = ucp_rkey_pack(kvx->ctx, m->memh, &m->rkey_buf, &m->rkey_bytes);
    if (us != UCS_OK) {
        SKV_LOG_ERROR("kvx: ucp_rkey_pack: %s", ucs_status_string(us));
        m->rkey_buf = NULL;
        return SKV_STATUS_TRANSPORT;
    }
    return SKV_STATUS_OK;
}

void skv_kvx_pool_unmap(skv_kvx_t *kvx)
{
    for (uint32_t r = 0; r < SKV_KVX_MAX_RANKS; r++) {
        skv_kvx_mem_t *m = &kvx->mems[r];
        if (m->rkey_buf != NULL && kvx->rkey_is_ours) {
            skv_free(m->rkey_buf);
        } else if (m->rkey_buf != NULL) {
            ucp_rkey_buffer_release(m->rkey_buf);
        }
        if (m->memh != NULL) {
            ucp_mem_unmap(kvx->ctx, m->memh);
        }
        *m = (skv_kvx_mem_t){0};
    }
    kvx->n_mems = 0;
    kvx->rkey_is_ours = 0;
}

/* Exports a device pool for same-host CUDA IPC when the device hooks can. */
static void skv_kvx_pool_export(skv_kvx_t *kvx, uint64_t bytes)
{
    const skv_kvx_device_ops_t *ops = kvx->cfg.device_ops;
    if (ops == NULL || ops->ipc_export == NULL || !kvx->have_host_id) {
        return;
    }
    skv_status_t st = ops->ipc_export(ops->ctx, kvx->pool.base, bytes, kvx->pool_ipc_handle,
                                      &kvx->pool_ipc_offset);
    kvx->pool_ipc = st == SKV_STATUS_OK;
    if (st != SKV_STATUS_OK) {
        SKV_LOG_WARN("kvx: device pool not exported for CUDA IPC: %s", skv_status_str(st));
    }
}

/* A device pool UCX cannot register: exported for IPC, placeholder rkey. */
static skv_status_t skv_kvx_pool_device_only(skv_kvx_t *kvx, uint64_t bytes)
{
    skv_kvx_pool_export(kvx, bytes);
    if (!kvx->pool_ipc && kvx->bounce == NULL) {
        SKV_LOG_ERROR("kvx: device pool: UCX has no CUDA support, the pool could not be "
                      "exported for CUDA IPC and there are no device hooks to bounce data");
        return SKV_STATUS_UNSUPPORTED;
    }
    skv_kvx_mem_t *m = &kvx->mems[0];
    m->base = kvx->pool.base;
    m->rkey_bytes = 9; /* md_map 0, host memory type: a valid rkey for no memory domain */
    m->rkey_buf = skv_calloc(1, m->rkey_bytes);
    if (m->rkey_buf == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    kvx->rkey_is_ours = 1;
    kvx->n_mems = 1;
    if (kvx->pool.release_grace_ms <= 0) {
        kvx->pool.release_grace_ms = SKV_KVX_DEFAULT_GRACE_MS;
    }
    kvx->have_pool = 1;
    return SKV_STATUS_OK;
}

/* Checks a pool configuration; logs the first problem. */
static skv_status_t skv_kvx_pool_check(const skv_kvx_t *kvx, const skv_kvx_pool_config_t *cfg,
                                       uint64_t *bytes_p)
{
    uint32_t n = cfg->n_ranks > 1 ? cfg->n_ranks : 1;
    if (kvx->have_pool || cfg->block_bytes == 0 || cfg->n_blocks == 0 || cfg->release == NULL ||
        __builtin_mul_overflow(cfg->block_bytes, (uint64_t)cfg->n_blocks, bytes_p) ||
        n > SKV_KVX_MAX_RANKS || (n > 1 && (cfg->rank_bases == NULL || cfg->kv_heads == 0))) {
        SKV_LOG_ERROR("kvx: pool register: %u blocks of %llu bytes, %u ranks (limit %u) of %u KV "
                      "heads, registered %d",
                      cfg->n_blocks, (unsigned long long)cfg->block_bytes, n, SKV_KVX_MAX_RANKS,
                      cfg->kv_heads, kvx->have_pool);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    for (uint32_t r = 0; n > 1 && r < n; r++) {
        if (cfg->rank_bases[r] == NULL) {
            SKV_LOG_ERROR("kvx: pool register: rank %u has no memory", r);
            return SKV_STATUS_INVALID_ARGUMENT;
        }
    }
    if (cfg->device_memory && n == 1 && cfg->base == NULL) {
        SKV_LOG_ERROR("kvx: pool register: device memory needs the caller's base");
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    if (cfg->device_memory && n > 1 && !kvx->cuda) {
        SKV_LOG_ERROR("kvx: pool register: a device pool of %u ranks needs a UCX with CUDA "
                      "support (CUDA IPC export covers one memory)",
                      n);
        return SKV_STATUS_UNSUPPORTED;
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_kvx_pool_register(skv_kvx_t *kvx, const skv_kvx_pool_config_t *cfg)
{
    uint64_t bytes = 0;
    SKV_CHECK(skv_kvx_pool_check(kvx, cfg, &bytes));
    uint32_t n = cfg->n_ranks > 1 ? cfg->n_ranks : 1;
    kvx->pool = *cfg;
    kvx->pool.n_ranks = n;
    kvx->pool.rank_bases = NULL; /* borrowed for this call only */
    if (kvx->pool.release_grace_ms <= 0) {
        kvx->pool.release_grace_ms = SKV_KVX_DEFAULT_GRACE_MS;
    }
    if (cfg->device_memory && kvx->cfg.device_ops != NULL) {
        SKV_CHECK(skv_kvx_bounce_init(kvx)); /* data messages land there first */
    }
    if (cfg->device_memory && !kvx->cuda) {
        /* UCX without CUDA support would treat device memory as host memory and crash: no
         * registration; a placeholder rkey names no memory domain (UCX then writes nothing),
         * so initiators send data messages (bounced) or use same-host CUDA IPC. */
        return skv_kvx_pool_device_only(kvx, bytes);
    }
    skv_status_t status = SKV_STATUS_OK;
    for (uint32_t r = 0; r < n && status == SKV_STATUS_OK; r++) {
        status =
            skv_kvx_pool_map(kvx, &kvx->mems[r], n > 1 ? cfg->rank_bases[r] : cfg->base, bytes);
    }
    if (status != SKV_STATUS_OK) {
        skv_kvx_pool_unmap(kvx);
        return status;
    }
    kvx->n_mems = n;
    kvx->pool.base = kvx->mems[0].base;
    if (cfg->device_memory && n == 1) {
        skv_kvx_pool_export(kvx, bytes);
    }
    kvx->have_pool = 1;
    return SKV_STATUS_OK;
}

void *skv_kvx_pool_base(const skv_kvx_t *kvx)
{
    return kvx->have_pool ? kvx->pool.base : NULL;
}

void *skv_kvx_pool_rank_base(const skv_kvx_t *kvx, uint32_t rank)
{
    return kvx->have_pool && rank < kvx->n_mems ? kvx->mems[rank].base : NULL;
}

skv_status_t skv_kvx_fingerprint_check(const skv_kvx_t *kvx, uint64_t fingerprint)
{
    if (!kvx->have_pool) {
        SKV_LOG_WARN("kvx: fingerprint check without a registered pool");
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    if (fingerprint != kvx->pool.fingerprint) {
        SKV_LOG_WARN("kvx: KV layout fingerprint mismatch: request 0x%016llx, pool 0x%016llx",
                     (unsigned long long)fingerprint, (unsigned long long)kvx->pool.fingerprint);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    return SKV_STATUS_OK;
}

/* Returns the table index of request_id's lease (also one that is ending), or -1. */
static long skv_kvx_lease_find(const skv_kvx_t *kvx, uint64_t request_id)
{
    for (uint32_t i = 0; i < kvx->n_leases; i++) {
        if (kvx->leases[i].request_id == request_id) {
            return i;
        }
    }
    return -1;
}

long skv_kvx_lease_find_token(const skv_kvx_t *kvx, uint64_t request_id, uint64_t token)
{
    long i = skv_kvx_lease_find(kvx, request_id);
    return i >= 0 && kvx->leases[i].lease_token == token ? i : -1;
}

static skv_status_t skv_kvx_reserve_check(const skv_kvx_t *kvx, uint64_t request_id,
                                          const uint32_t *block_ids, uint32_t n_blocks,
                                          int64_t deadline_ns)
{
    if (n_blocks == 0 || n_blocks > SKV_KVX_MAX_BLOCKS || skv_clock_expired(deadline_ns)) {
        SKV_LOG_WARN("kvx: reserve request %llu: %u blocks, deadline in %lld ms",
                     (unsigned long long)request_id, n_blocks,
                     (long long)(deadline_ns - skv_clock_now_ns()) / 1000000);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    for (uint32_t i = 0; i < n_blocks; i++) {
        if (block_ids[i] >= kvx->pool.n_blocks) {
            SKV_LOG_WARN("kvx: reserve request %llu: block id %u outside the pool of %u",
                         (unsigned long long)request_id, block_ids[i], kvx->pool.n_blocks);
            return SKV_STATUS_INVALID_ARGUMENT;
        }
    }
    if (skv_kvx_lease_find(kvx, request_id) >= 0) {
        SKV_LOG_WARN("kvx: reserve request %llu: already holds a lease",
                     (unsigned long long)request_id);
        return SKV_STATUS_BUSY;
    }
    return SKV_STATUS_OK;
}

/* Appends a lease (ids copied); the table grows by doubling. */
static skv_status_t skv_kvx_lease_add(skv_kvx_t *kvx, const skv_kvx_lease_t *src)
{
    if (kvx->n_leases == kvx->cap_leases) {
        uint32_t cap = kvx->cap_leases ? 2 * kvx->cap_leases : 64;
        skv_kvx_lease_t *t = skv_realloc(kvx->leases, cap * sizeof(*t));
        if (t == NULL) {
            return SKV_STATUS_NO_MEMORY;
        }
        kvx->leases = t;
        kvx->cap_leases = cap;
    }
    uint32_t *ids = skv_mallocn(src->n_blocks, sizeof(*ids));
    if (ids == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    memcpy(ids, src->block_ids, src->n_blocks * sizeof(*ids));
    kvx->leases[kvx->n_leases] = *src;
    kvx->leases[kvx->n_leases].block_ids = ids;
    kvx->n_leases++;
    return SKV_STATUS_OK;
}

/* Unlinks lease i (swap with the last) and returns it; the caller frees its ids. */
static skv_kvx_lease_t skv_kvx_lease_take(skv_kvx_t *kvx, uint32_t i)
{
    skv_kvx_lease_t l = kvx->leases[i];
    kvx->leases[i] = kvx->leases[--kvx->n_leases];
    return l;
}

static skv_status_t skv_kvx_target_encode(skv_kvx_t *kvx, const skv_kvx_lease_t *l, void **desc_p,
                                          size_t *desc_bytes_p)
{
    skv_kvx_desc_rank_t ranks[SKV_KVX_MAX_RANKS];
    for (uint32_t r = 0; r < kvx->n_mems; r++) {
        ranks[r] = (skv_kvx_desc_rank_t){(uint64_t)(uintptr_t)kvx->mems[r].base,
                                         kvx->mems[r].rkey_buf, kvx->mems[r].rkey_bytes};
    }
    skv_kvx_desc_t d = {
        .request_id = l->request_id,
        .lease_token = l->lease_token,
        .fingerprint = kvx->pool.fingerprint,
        .remote_base = (uint64_t)(uintptr_t)kvx->pool.base,
        .block_bytes = kvx->pool.block_bytes,
        .pool_blocks = kvx->pool.n_blocks,
        .n_blocks = l->n_blocks,
        .block_ids = l->block_ids,
        .lease_deadline_ns = l->deadline_ns,
        .worker_addr = kvx->addr,
        .worker_addr_bytes = kvx->addr_bytes,
        .rkey = ranks[0].rkey,
        .rkey_bytes = ranks[0].rkey_bytes,
        .ipc = kvx->pool_ipc,
        .ipc_offset = kvx->pool_ipc_offset,
        .tp_size = kvx->n_mems,
        .kv_heads = kvx->n_mems > 1 ? kvx->pool.kv_heads : 0,
        .ranks = ranks,
    };
    if (kvx->pool_ipc) {
        memcpy(d.ipc_host, kvx->host_id, sizeof(d.ipc_host));
        memcpy(d.ipc_handle, kvx->pool_ipc_handle, sizeof(d.ipc_handle));
    }
    return skv_kvx_desc_encode(&d, desc_p, desc_bytes_p);
}

skv_status_t skv_kvx_target_reserve(skv_kvx_t *kvx, uint64_t request_id, uint64_t fingerprint,
                                    const uint32_t *block_ids, uint32_t n_blocks,
                                    int64_t lease_deadline_ns, void **desc_p, size_t *desc_bytes_p)
{
    SKV_CHECK(skv_kvx_fingerprint_check(kvx, fingerprint));
    SKV_CHECK(skv_kvx_reserve_check(kvx, request_id, block_ids, n_blocks, lease_deadline_ns));
    skv_kvx_lease_t l = {
        .request_id = request_id,
        .lease_token = skv_kvx_random64(kvx),
        .deadline_ns = lease_deadline_ns,
        .n_blocks = n_blocks,
        .block_ids = (uint32_t *)block_ids,
    };
    skv_status_t status = skv_kvx_target_encode(kvx, &l, desc_p, desc_bytes_p);
    if (status != SKV_STATUS_OK) {
        return status;
    }
    status = skv_kvx_lease_add(kvx, &l);
    if (status != SKV_STATUS_OK) {
        skv_free(*desc_p);
        *desc_p = NULL;
    }
    return status;
}

/* Ends a lease that did not complete: release once, then tell the owner. */
static void skv_kvx_lease_end_released(skv_kvx_t *kvx, skv_kvx_lease_t *l, skv_status_t why)
{
    kvx->pool.release(kvx->pool.release_ctx, l->request_id, l->block_ids, l->n_blocks);
    if (kvx->pool.on_complete != NULL) {
        kvx->pool.on_complete(kvx->pool.complete_ctx, l->request_id, -1, why);
    }
    skv_free(l->block_ids);
}

skv_status_t skv_kvx_target_cancel(skv_kvx_t *kvx, uint64_t request_id)
{
    long i = skv_kvx_lease_find(kvx, request_id);
    if (i < 0 || kvx->leases[i].end_status != SKV_STATUS_OK) {
        return SKV_STATUS_NOT_FOUND;
    }
    kvx->leases[i].end_status = SKV_STATUS_CANCELLED;
    skv_kvx_lease_settle(kvx, (uint32_t)i); /* now, or when its receives finished */
    return SKV_STATUS_OK;
}

void skv_kvx_target_stats(const skv_kvx_t *kvx, uint32_t *n_leases_p, uint64_t *n_blocks_p)
{
    uint64_t blocks = 0;
    for (uint32_t i = 0; i < kvx->n_leases; i++) {
        blocks += kvx->leases[i].n_blocks;
    }
    *n_leases_p = kvx->n_leases;
    *n_blocks_p = blocks;
}

void skv_kvx_leases_expire(skv_kvx_t *kvx, int64_t now_ns)
{
    int64_t grace_ns = kvx->pool.release_grace_ms * 1000000LL;
    uint32_t i = 0;
    while (i < kvx->n_leases) {
        if (now_ns < kvx->leases[i].deadline_ns + grace_ns) {
            i++;
            continue;
        }
        if (kvx->leases[i].am_pending > 0) {
            /* UCX is still writing into its blocks: they go back when the receives end
             * (a dead peer fails them). */
            if (kvx->leases[i].end_status == SKV_STATUS_OK) {
                kvx->leases[i].end_status = SKV_STATUS_TIMEOUT;
            }
            if (kvx->leases[i].data_ep != NULL) {
                skv_kvx_am_abort_ep(kvx, kvx->leases[i].data_ep);
            }
            i++;
            continue;
        }
        skv_kvx_lease_t l = skv_kvx_lease_take(kvx, i);
        SKV_LOG_WARN("kvx: lease of request %llu (%u blocks) expired without completion",
                     (unsigned long long)l.request_id, l.n_blocks);
        /* The table may change inside the callbacks; index i now holds an unvisited lease. */
        skv_kvx_lease_end_released(kvx, &l, SKV_STATUS_TIMEOUT);
    }
}

void skv_kvx_leases_cleanup(skv_kvx_t *kvx)
{
    while (kvx->n_leases > 0) {
        skv_kvx_lease_t l = skv_kvx_lease_take(kvx, kvx->n_leases - 1);
        skv_kvx_lease_end_released(kvx, &l, SKV_STATUS_CANCELLED);
    }
    skv_free(kvx->leases);
    kvx->leases = NULL;
    kvx->cap_leases = 0;
}

/* Maps a status number received from a peer to our enum; unknown numbers become TRANSPORT. */
static skv_status_t skv_kvx_wire_status(uint32_t v)
{
    if (v == SKV_STATUS_OK || v >= SKV_STATUS_COUNT_) {
        return v == SKV_STATUS_OK ? SKV_STATUS_OK : SKV_STATUS_TRANSPORT;
    }
    return (skv_status_t)v;
}

/* Ends lease i if it can end now: no receive into its blocks is running, and either an end
 * was requested (cancel, expiry) or a completion arrived whose data messages all landed. */
void skv_kvx_lease_settle(skv_kvx_t *kvx, uint32_t i)
{
    skv_kvx_lease_t *p = &kvx->leases[i];
    if (p->am_pending > 0) {
        return;
    }
    if (p->end_status != SKV_STATUS_OK) {
        skv_kvx_lease_t l = skv_kvx_lease_take(kvx, i);
        skv_kvx_lease_end_released(kvx, &l, l.end_status);
        return;
    }
    if (!p->completed ||
        (p->final_status == SKV_STATUS_OK && p->am_bad == 0 && p->am_done < p->am_expect)) {
        return; /* no completion yet, or its data messages are still on the way */
    }
    skv_kvx_lease_t l = skv_kvx_lease_take(kvx, i);
    if (l.final_status != SKV_STATUS_OK || l.am_bad > 0 || l.am_done != l.am_expect) {
        if (l.final_status == SKV_STATUS_OK) {
            SKV_LOG_WARN("kvx: request %llu completed with %u of %u data messages written, "
                         "%u refused or failed",
                         (unsigned long long)l.request_id, l.am_done, l.am_expect, l.am_bad);
        }
        skv_kvx_lease_end_released(
            kvx, &l, l.final_status != SKV_STATUS_OK ? l.final_status : SKV_STATUS_TRANSPORT);
        return;
    }
    if (kvx->pool.on_complete != NULL) {
        kvx->pool.on_complete(kvx->pool.complete_ctx, l.request_id, l.first_token, SKV_STATUS_OK);
    }
    skv_free(l.block_ids);
}

/* Completion message: magic u32, version u16, reserved u16, request_id u64, lease_token u64,
 * first_token i32, status u32; version 2 adds data_messages u32, reserved u32. Runs inside
 * ucp_worker_progress on the owner thread. */
ucs_status_t skv_kvx_am_complete_cb(void *arg, const void *header, size_t header_bytes, void *data,
                                    size_t data_bytes, const ucp_am_recv_param_t *param)
{
    skv_kvx_t *kvx = arg;
    const uint8_t *h = header;
    uint32_t version = header_bytes >= 8 ? skv_kvx_get_u32(h + 4) : 0;
    if (data_bytes != 0 || header_bytes < SKV_KVX_COMPLETE_BYTES_V1 ||
        skv_kvx_get_u32(h) != SKV_KVX_COMPLETE_MAGIC ||
        !((version == 1 && header_bytes == SKV_KVX_COMPLETE_BYTES_V1) ||
          (version == 2 && header_bytes == SKV_KVX_COMPLETE_BYTES))) {
        SKV_LOG_WARN("kvx: malformed completion (%zu header, %zu data bytes) ignored", header_bytes,
                     data_bytes);
        return UCS_OK;
    }
    uint64_t request_id = skv_kvx_get_u64(h + 8);
    long i = skv_kvx_lease_find_token(kvx, request_id, skv_kvx_get_u64(h + 16));
    if (i < 0 || kvx->leases[i].completed || kvx->leases[i].end_status != SKV_STATUS_OK) {
        SKV_LOG_WARN("kvx: completion for unknown or expired request %llu ignored",
                     (unsigned long long)request_id);
        return UCS_OK;
    }
    skv_kvx_lease_t *l = &kvx->leases[i];
    l->completed = 1;
    l->first_token = (int32_t)skv_kvx_get_u32(h + 24);
    l->final_status = skv_kvx_wire_status(skv_kvx_get_u32(h + 28));
    l->am_expect = version == 2 ? skv_kvx_get_u32(h + 32) : 0;
    skv_kvx_lease_settle(kvx, (uint32_t)i);
    return UCS_OK;
}
