/*
 * kvx.c: the process's UCX transport: context, one worker, non-blocking progress, the
 * endpoint cache (one endpoint per peer worker address, error mode PEER), staging buffers,
 * and bounded teardown. Target leases live in kvx_lease.c, pushes in kvx_push.c.
 *
 * Progress strategy: no progress thread. The owner (engine loop) calls skv_kvx_progress()
 * once per iteration; it never blocks. Why: UCX in multi-thread mode takes a lock on every
 * call, a spinning progress thread takes a whole core from compute on small machines, and the
 * engine loops already iterate at decode-step cadence; the GPU work they launch is
 * asynchronous, so polling between launches keeps the target's emulated RMA moving.
 */
#include "common/kvx/kvx_internal.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"

#define SKV_KVX_DEFAULT_STAGING_BYTES ((size_t)4 << 20) /* >= one 2 MiB Llama-3-8B block */
#define SKV_KVX_DEFAULT_N_STAGING     2u                /* double buffering */
#define SKV_KVX_DEFAULT_CLOSE_MS      1000
#define SKV_KVX_DEFAULT_AM_MESSAGE    ((size_t)8 << 20)

void skv_kvx_config_default(skv_kvx_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->name = "skv_kvx";
    cfg->staging_bytes = SKV_KVX_DEFAULT_STAGING_BYTES;
    cfg->n_staging = SKV_KVX_DEFAULT_N_STAGING;
    cfg->close_timeout_ms = SKV_KVX_DEFAULT_CLOSE_MS;
    cfg->am_message_bytes = SKV_KVX_DEFAULT_AM_MESSAGE;
}

skv_status_t skv_kvx_config_env(skv_kvx_config_t *cfg)
{
    const char *data = getenv("SKV_KVX_DATA");
    if (data != NULL && *data != '\0') {
        if (strcmp(data, "put") == 0) {
            cfg->data_mode = SKV_KVX_DATA_PUT;
        } else if (strcmp(data, "am") == 0) {
            cfg->data_mode = SKV_KVX_DATA_AM;
        } else if (strcmp(data, "auto") == 0) {
            cfg->data_mode = SKV_KVX_DATA_AUTO;
        } else {
            SKV_LOG_ERROR("SKV_KVX_DATA='%s': expected auto, put or am", data);
            return SKV_STATUS_INVALID_ARGUMENT;
        }
    }
    const char *no_ipc = getenv("SKV_KVX_NO_IPC");
    if (no_ipc != NULL && *no_ipc != '\0') {
        cfg->no_ipc = strcmp(no_ipc, "0") != 0;
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_kvx_status_from_ucs(ucs_status_t status)
{
    switch (status) {
    case UCS_OK:
        return SKV_STATUS_OK;
    case UCS_ERR_NO_MEMORY:
        return SKV_STATUS_NO_MEMORY;
    case UCS_ERR_TIMED_OUT:
        return SKV_STATUS_TIMEOUT;
    case UCS_ERR_CANCELED:
        return SKV_STATUS_CANCELLED;
    case UCS_ERR_ENDPOINT_TIMEOUT: /* the peer stopped answering: gone, not slow */
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_REJECTED:
        return SKV_STATUS_UNAVAILABLE;
    default:
        return SKV_STATUS_TRANSPORT;
    }
}

uint64_t skv_kvx_random64(skv_kvx_t *kvx)
{
    /* xorshift64*: lease tokens only need to differ between leases, not be secret. */
    kvx->rng ^= kvx->rng >> 12;
    kvx->rng ^= kvx->rng << 25;
    kvx->rng ^= kvx->rng >> 27;
    return kvx->rng * 0x2545F4914F6CDD1DULL;
}

/* Reads the memory types UCX supports; CUDA support means device memory could be mapped. */
static void skv_kvx_query_memory(skv_kvx_t *kvx)
{
    ucp_context_attr_t attr = {.field_mask = UCP_ATTR_FIELD_MEMORY_TYPES};
    if (ucp_context_query(kvx->ctx, &attr) != UCS_OK) {
        return;
    }
    kvx->cuda = (attr.memory_types & UCS_BIT(UCS_MEMORY_TYPE_CUDA)) != 0;
}

static skv_status_t skv_kvx_ucp_init(skv_kvx_t *kvx)
{
    ucp_config_t *config = NULL;
    ucs_status_t us = ucp_config_read(NULL, NULL, &config);
    if (us != UCS_OK) {
        SKV_LOG_ERROR("kvx: ucp_config_read: %s", ucs_status_string(us));
        return SKV_STATUS_UNAVAILABLE;
    }
    ucp_params_t params = {
        .field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_NAME,
        .features = UCP_FEATURE_RMA | UCP_FEATURE_AM,
        .name = kvx->cfg.name,
    };
    us = ucp_init(&params, config, &kvx->ctx);
    ucp_config_release(config);
    if (us != UCS_OK) {
        SKV_LOG_ERROR("kvx: ucp_init: %s", ucs_status_string(us));
        kvx->ctx = NULL;
        return SKV_STATUS_UNAVAILABLE;
    }
    skv_kvx_query_memory(kvx);
    return SKV_STATUS_OK;
}

static skv_status_t skv_kvx_worker_init(skv_kvx_t *kvx)
{
    /* SINGLE: the owner thread is the only caller (see file comment). */
    ucp_worker_params_t wp = {.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE,
                              .thread_mode = UCS_THREAD_MODE_SINGLE};
    ucs_status_t us = ucp_worker_create(kvx->ctx, &wp, &kvx->worker);
    if (us != UCS_OK) {
        SKV_LOG_ERROR("kvx: ucp_worker_create: %s", ucs_status_string(us));
        kvx->worker = NULL;
        return SKV_STATUS_UNAVAILABLE;
    }
    us = ucp_worker_get_address(kvx->worker, &kvx->addr, &kvx->addr_bytes);
    if (us != UCS_OK) {
        SKV_LOG_ERROR("kvx: ucp_worker_get_address: %s", ucs_status_string(us));
        kvx->addr = NULL;
        return SKV_STATUS_UNAVAILABLE;
    }
    ucp_am_handler_param_t ap = {
        .field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_CB |
                      UCP_AM_HANDLER_PARAM_FIELD_ARG,
        .id = SKV_KVX_AM_COMPLETE,
        .cb = skv_kvx_am_complete_cb,
        .arg = kvx,
    };
    us = ucp_worker_set_am_recv_handler(kvx->worker, &ap);
    if (us == UCS_OK) {
        /* KV data (kvx_am.c): whole messages, so eager payloads arrive in one piece. */
        ap.field_mask |= UCP_AM_HANDLER_PARAM_FIELD_FLAGS;
        ap.id = SKV_KVX_AM_DATA;
        ap.cb = skv_kvx_am_data_cb;
        ap.flags = UCP_AM_FLAG_WHOLE_MSG;
        us = ucp_worker_set_am_recv_handler(kvx->worker, &ap);
    }
    if (us != UCS_OK) {
        SKV_LOG_ERROR("kvx: ucp_worker_set_am_recv_handler: %s", ucs_status_string(us));
        return SKV_STATUS_UNAVAILABLE;
    }
    return SKV_STATUS_OK;
}

static void *skv_kvx_default_alloc(void *ctx, size_t bytes)
{
    void *p = NULL;
    /* Page alignment: what pinning and DMA engines want; mirrors cudaHostAlloc. */
    if (posix_memalign(&p, 4096, bytes) != 0) {
        return NULL;
    }
    return p;
}

static void skv_kvx_default_free(void *ctx, void *ptr, size_t bytes)
{
    free(ptr);
}

/* Maps one staging buffer with UCX so RDMA transports can use it without a copy. */
static skv_status_t skv_kvx_stage_init(skv_kvx_t *kvx, skv_kvx_stage_t *st)
{
    st->bytes = kvx->cfg.staging_bytes;
    st->ptr = kvx->cfg.staging_alloc(kvx->cfg.staging_ctx, st->bytes);
    if (st->ptr == NULL) {
        SKV_LOG_ERROR("kvx: staging buffer of %zu bytes: out of memory", st->bytes);
        return SKV_STATUS_NO_MEMORY;
    }
    ucp_mem_map_params_t mp = {
        .field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH,
        .address = st->ptr,
        .length = st->bytes,
    };
    ucs_status_t us = ucp_mem_map(kvx->ctx, &mp, &st->memh);
    if (us != UCS_OK) {
        SKV_LOG_ERROR("kvx: ucp_mem_map staging: %s", ucs_status_string(us));
        st->memh = NULL;
        return SKV_STATUS_TRANSPORT;
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_kvx_stages_init(skv_kvx_t *kvx)
{
    if (kvx->cfg.staging_alloc == NULL || kvx->cfg.staging_free == NULL) {
        kvx->cfg.staging_alloc = skv_kvx_default_alloc;
        kvx->cfg.staging_free = skv_kvx_default_free;
    }
    kvx->stages = skv_calloc(kvx->cfg.n_staging, sizeof(*kvx->stages));
    if (kvx->stages == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    kvx->n_stages = kvx->cfg.n_staging;
    for (unsigned i = 0; i < kvx->n_stages; i++) {
        SKV_CHECK(skv_kvx_stage_init(kvx, &kvx->stages[i]));
    }
    return SKV_STATUS_OK;
}

static void skv_kvx_stages_cleanup(skv_kvx_t *kvx)
{
    for (unsigned i = 0; kvx->stages != NULL && i < kvx->n_stages; i++) {
        skv_kvx_stage_t *st = &kvx->stages[i];
        if (st->memh != NULL) {
            ucp_mem_unmap(kvx->ctx, st->memh);
        }
        if (st->ptr != NULL) {
            kvx->cfg.staging_free(kvx->cfg.staging_ctx, st->ptr, st->bytes);
        }
        skv_free(st->runs);
    }
    skv_free(kvx->stages);
    kvx->stages = NULL;
}

skv_status_t skv_kvx_create(const skv_kvx_config_t *cfg, skv_kvx_t **kvx_p)
{
    skv_status_t status;
    skv_kvx_t *kvx = skv_calloc(1, sizeof(*kvx));
    if (kvx == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    skv_kvx_config_default(&kvx->cfg);
    if (cfg != NULL) {
        kvx->cfg = *cfg;
    }
    if (kvx->cfg.staging_bytes == 0) {
        kvx->cfg.staging_bytes = SKV_KVX_DEFAULT_STAGING_BYTES;
    }
    if (kvx->cfg.n_staging == 0) {
        kvx->cfg.n_staging = SKV_KVX_DEFAULT_N_STAGING;
    }
    if (kvx->cfg.close_timeout_ms <= 0) {
        kvx->cfg.close_timeout_ms = SKV_KVX_DEFAULT_CLOSE_MS;
    }
    if (kvx->cfg.am_message_bytes == 0) {
        kvx->cfg.am_message_bytes = SKV_KVX_DEFAULT_AM_MESSAGE;
    }
    kvx->rng = (uint64_t)skv_clock_now_ns() ^ ((uint64_t)getpid() << 32) ^ (uintptr_t)kvx;
    kvx->rng |= 1; /* xorshift state must not be zero */
    skv_kvx_host_id(kvx->host_id);
    for (int i = 0; i < 16; i++) {
        kvx->have_host_id |= kvx->host_id[i] != 0;
    }
    SKV_CHECK_GOTO(skv_kvx_ucp_init(kvx), fail);
    SKV_CHECK_GOTO(skv_kvx_worker_init(kvx), fail);
    SKV_CHECK_GOTO(skv_kvx_stages_init(kvx), fail);
    *kvx_p = kvx;
    return SKV_STATUS_OK;
fail:
    skv_kvx_destroy(kvx);
    return status;
}

unsigned skv_kvx_progress(skv_kvx_t *kvx)
{
    unsigned total = 0;
    /* Bounded: at most 64 rounds so one call never monopolizes the engine loop. */
    for (int i = 0; i < 64; i++) {
        unsigned n = ucp_worker_progress(kvx->worker);
        if (n == 0) {
            break;
        }
        total += n;
    }
    if (kvx->n_bounce > 0) {
        skv_kvx_bounce_poll(kvx);
    }
    if (kvx->n_leases > 0) {
        int64_t now = skv_clock_now_ns();
        if (now >= kvx->next_scan_ns) {
            skv_kvx_leases_expire(kvx, now);
            kvx->next_scan_ns = now + 1000000; /* scan at most once a millisecond */
        }
    }
    return total;
}

void skv_kvx_worker_address(const skv_kvx_t *kvx, const void **addr_p, size_t *bytes_p)
{
    *addr_p = kvx->addr;
    *bytes_p = kvx->addr_bytes;
}

int skv_kvx_cuda_supported(const skv_kvx_t *kvx)
{
    return kvx->cuda;
}

/* ---- endpoint cache ------------------------------------------------------------------- */

/* UCX calls this from progress when a peer fails; pushes see it through peer->failure. */
static void skv_kvx_peer_error_cb(void *arg, ucp_ep_h ep, ucs_status_t status)
{
    skv_kvx_peer_t *peer = arg;
    if (peer->failure == UCS_OK) {
        SKV_LOG_WARN("kvx: peer endpoint failed: %s", ucs_status_string(status));
        peer->failure = status;
    }
}

static skv_status_t skv_kvx_peer_connect(skv_kvx_t *kvx, skv_kvx_peer_t *peer)
{
    ucp_ep_params_t ep_params = {
        .field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                      UCP_EP_PARAM_FIELD_ERR_HANDLER,
        .address = peer->addr,
        .err_mode = UCP_ERR_HANDLING_MODE_PEER,
        .err_handler = {.cb = skv_kvx_peer_error_cb, .arg = peer},
    };
    ucs_status_t us = ucp_ep_create(kvx->worker, &ep_params, &peer->ep);
    if (us != UCS_OK) {
        SKV_LOG_ERROR("kvx: ucp_ep_create (%zu-byte address): %s", peer->addr_bytes,
                      ucs_status_string(us));
        peer->ep = NULL;
        return SKV_STATUS_UNAVAILABLE;
    }
    /* Wireup barrier: the flush completes once the peer answered the wireup. Pushes wait
     * for it before sending data (skv_kvx_peer_wait_wired), so a peer that dies later never
     * leaves the other side with a wireup reply still queued (UCX 1.13 asserts on that). */
    ucp_request_param_t rp = {.op_attr_mask = 0};
    void *req = ucp_ep_flush_nbx(peer->ep, &rp);
    if (UCS_PTR_IS_ERR(req)) {
        peer->failure = UCS_PTR_STATUS(req);
    } else if (req == NULL) {
        peer->wired = 1;
    } else {
        peer->wireup_req = req;
    }
    return SKV_STATUS_OK;
}

/* Returns 1 once the peer's wireup flush completed (0 while in flight); a failed flush
 * marks the peer failed. */
static int skv_kvx_peer_wired(skv_kvx_peer_t *peer)
{
    if (peer->wired || peer->wireup_req == NULL) {
        return peer->wired || peer->failure != UCS_OK;
    }
    ucs_status_t us = ucp_request_check_status(peer->wireup_req);
    if (us == UCS_INPROGRESS) {
        return 0;
    }
    ucp_request_free(peer->wireup_req);
    peer->wireup_req = NULL;
    if (us != UCS_OK && peer->failure == UCS_OK) {
        peer->failure = us;
    }
    peer->wired = us == UCS_OK;
    return 1;
}

skv_status_t skv_kvx_peer_wait_wired(skv_kvx_t *kvx, skv_kvx_peer_t *peer, int64_t deadline_ns)
{
    while (!skv_kvx_peer_wired(peer)) {
        if (skv_clock_expired(deadline_ns)) {
            SKV_LOG_WARN("kvx: peer endpoint not wired up before the deadline");
            return SKV_STATUS_TIMEOUT;
        }
        skv_kvx_progress(kvx);
    }
    return peer->failure == UCS_OK ? SKV_STATUS_OK : skv_kvx_status_from_ucs(peer->failure);
}

/* Returns the live cached peer for addr, or NULL. */
static skv_kvx_peer_t *skv_kvx_peer_find(skv_kvx_t *kvx, const void *addr, size_t bytes)
{
    for (skv_kvx_peer_t *p = kvx->peers; p != NULL; p = p->next) {
        if (p->ep != NULL && p->failure == UCS_OK && p->addr_bytes == bytes &&
            memcmp(p->addr, addr, bytes) == 0) {
            return p;
        }
    }
    return NULL;
}

skv_status_t skv_kvx_peer_get(skv_kvx_t *kvx, const void *addr, size_t addr_bytes,
                              skv_kvx_peer_t **peer_p)
{
    skv_kvx_peer_t *peer = skv_kvx_peer_find(kvx, addr, addr_bytes);
    if (peer == NULL) {
        peer = skv_calloc(1, sizeof(*peer));
        if (peer == NULL || (peer->addr = skv_malloc(addr_bytes)) == NULL) {
            skv_free(peer);
            return SKV_STATUS_NO_MEMORY;
        }
        memcpy(peer->addr, addr, addr_bytes);
        peer->addr_bytes = addr_bytes;
        if (skv_kvx_peer_connect(kvx, peer) != SKV_STATUS_OK) {
            skv_free(peer->addr);
            skv_free(peer);
            return SKV_STATUS_UNAVAILABLE;
        }
        peer->next = kvx->peers;
        kvx->peers = peer;
    }
    peer->refs++;
    *peer_p = peer;
    return SKV_STATUS_OK;
}

/* Starts closing peer's endpoint (forced: every request on it completes with an error). */
void skv_kvx_peer_force_close(skv_kvx_t *kvx, skv_kvx_peer_t *peer)
{
    if (peer->ep == NULL) {
        return;
    }
    ucp_request_param_t rp = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                              .flags = UCP_EP_CLOSE_FLAG_FORCE};
    void *req = ucp_ep_close_nbx(peer->ep, &rp);
    peer->ep = NULL;
    if (peer->failure == UCS_OK) {
        peer->failure = UCS_ERR_CANCELED;
    }
    if (UCS_PTR_IS_PTR(req)) {
        peer->close_req = req;
    }
}

/* Unlinks and frees a peer whose endpoint is closed. */
static void skv_kvx_peer_free(skv_kvx_t *kvx, skv_kvx_peer_t *peer)
{
    if (peer->wireup_req != NULL) {
        ucp_request_free(peer->wireup_req);
        peer->wireup_req = NULL;
    }
    skv_kvx_peer_ipc_close(kvx, peer);
    for (skv_kvx_peer_t **pp = &kvx->peers; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == peer) {
            *pp = peer->next;
            break;
        }
    }
    skv_free(peer->addr);
    skv_free(peer);
}

/* A failed peer no push uses is closed and dropped, so the next push reconnects. */
void skv_kvx_peer_put(skv_kvx_t *kvx, skv_kvx_peer_t *peer)
{
    SKV_ASSERT(peer->refs > 0);
    peer->refs--;
    if (peer->refs > 0 || peer->failure == UCS_OK) {
        return;
    }
    skv_kvx_peer_force_close(kvx, peer);
    int64_t deadline = skv_clock_deadline_ms(kvx->cfg.close_timeout_ms);
    while (peer->close_req != NULL && ucp_request_check_status(peer->close_req) == UCS_INPROGRESS &&
           !skv_clock_expired(deadline)) {
        ucp_worker_progress(kvx->worker);
    }
    if (peer->close_req != NULL) {
        ucp_request_free(peer->close_req);
    }
    skv_kvx_peer_free(kvx, peer);
}

/* Closes every cached endpoint, gracefully where the peer is healthy, all bounded. */
static void skv_kvx_peers_close(skv_kvx_t *kvx)
{
    for (skv_kvx_peer_t *p = kvx->peers; p != NULL; p = p->next) {
        if (p->ep == NULL) {
            continue;
        }
        ucp_request_param_t rp = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS,
                                  .flags = p->failure == UCS_OK ? 0 : UCP_EP_CLOSE_FLAG_FORCE};
        void *req = ucp_ep_close_nbx(p->ep, &rp);
        p->ep = NULL;
        p->close_req = UCS_PTR_IS_PTR(req) ? req : NULL;
    }
    int64_t deadline = skv_clock_deadline_ms(kvx->cfg.close_timeout_ms);
    for (skv_kvx_peer_t *p = kvx->peers; p != NULL; p = p->next) {
        while (p->close_req != NULL && ucp_request_check_status(p->close_req) == UCS_INPROGRESS &&
               !skv_clock_expired(deadline)) {
            ucp_worker_progress(kvx->worker);
        }
        if (p->close_req != NULL) {
            if (ucp_request_check_status(p->close_req) == UCS_INPROGRESS) {
                SKV_LOG_WARN("kvx: endpoint close did not finish in %lld ms",
                             (long long)kvx->cfg.close_timeout_ms);
            }
            ucp_request_free(p->close_req);
            p->close_req = NULL;
        }
    }
    while (kvx->peers != NULL) {
        skv_kvx_peer_free(kvx, kvx->peers);
    }
}

void skv_kvx_destroy(skv_kvx_t *kvx)
{
    if (kvx == NULL) {
        return;
    }
    skv_kvx_leases_cleanup(kvx);
    if (kvx->worker != NULL) {
        skv_kvx_peers_close(kvx);
        skv_kvx_bounce_cleanup(kvx);
    }
    if (kvx->ctx != NULL) {
        skv_kvx_pool_unmap(kvx);
    }
    skv_kvx_stages_cleanup(kvx);
    if (kvx->addr != NULL) {
        ucp_worker_release_address(kvx->worker, kvx->addr);
    }
    if (kvx->worker != NULL) {
        ucp_worker_destroy(kvx->worker);
    }
    skv_kvx_bounce_free(kvx); /* after the worker: no receive can still write them */
    if (kvx->ctx != NULL) {
        ucp_cleanup(kvx->ctx);
    }
    skv_free(kvx);
}
