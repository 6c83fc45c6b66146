/*
 * kvx_device.c: pushes from device memory, through the hooks of skv_kvx_device_ops_t (the CUDA
 * backend fills them; nothing here includes a CUDA header).
 *
 * Two paths behind skv_kvx_push_device, chosen per push; the completion protocol is the same:
 * - Same-host CUDA IPC: the target exported its device pool (descriptor version 2: host id,
 *   IPC handle, offset). When the host id is ours, the initiator maps the handle once per peer
 *   and enqueues device-to-device copies on the transport's stream; a fence after them is
 *   polled from skv_kvx_push_test, and only when it passed does the completion message leave
 *   over UCX. A handle that does not open here (other GPU domain) falls back to staging.
 * - Staged: pinned staging buffers (staging_alloc) filled by asynchronous device-to-host copies;
 *   each buffer gets a fence and the runs to send once it passed. While buffer k's bytes are
 *   on the wire, buffer k+1 is being filled by the copy engine. A call queues its sources on
 *   the push; free buffers are filled at once and the rest from skv_kvx_push_test as
 *   buffers come back, so nothing waits (the owner thread keeps serving other requests while
 *   a slow link drains).
 * Invariants: a staging buffer is reused only when its fence passed and its sends completed;
 * a push is DONE only after its fences passed; fences are freed exactly once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "common/kvx/kvx_internal.h"
#include "base/log.h"

/* ---- host identity ------------------------------------------------------------------------ */

void skv_kvx_host_id(uint8_t id[16])
{
    /* The kernel's boot id is the same for every process on a host (and differs between
     * hosts), which is what "may try CUDA IPC" needs. 32 hex digits with dashes. */
    memset(id, 0, 16);
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f == NULL) {
        return;
    }
    char text[64] = {0};
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    int nibbles = 0;
    for (size_t i = 0; i < n && nibbles < 32; i++) {
        char c = text[i];
        int v = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (v >= 0) {
            id[nibbles / 2] = (uint8_t)(id[nibbles / 2] | (v << (nibbles % 2 ? 0 : 4)));
            nibbles++;
        }
    }
}

/* ---- CUDA IPC ------------------------------------------------------------------------------ */

void skv_kvx_peer_ipc_close(skv_kvx_t *kvx, skv_kvx_peer_t *peer)
{
    const skv_kvx_device_ops_t *ops = kvx->cfg.device_ops;
    if (peer->ipc_state == 1 && ops != NULL && ops->ipc_close != NULL) {
        ops->ipc_close(ops->ctx, peer->ipc_base);
    }
    peer->ipc_state = 0;
    peer->ipc_base = NULL;
}

/* Maps the target's exported pool when it is on this host; 1 = use IPC, 0 = stage. */
static int skv_kvx_ipc_map(skv_kvx_push_t *push)
{
    skv_kvx_t *kvx = push->kvx;
    const skv_kvx_device_ops_t *ops = kvx->cfg.device_ops;
    const skv_kvx_desc_t *d = push->desc;
    skv_kvx_peer_t *peer = push->peer;
    if (!d->ipc || ops->ipc_open == NULL || !kvx->have_host_id ||
        memcmp(d->ipc_host, kvx->host_id, 16) != 0 || kvx->cfg.no_ipc) {
        return 0;
    }
    if (peer->ipc_state != 0 && memcmp(peer->ipc_handle, d->ipc_handle, sizeof(d->ipc_handle))) {
        skv_kvx_peer_ipc_close(kvx, peer); /* the peer re-exported (restarted pool) */
    }
    if (peer->ipc_state == 0) {
        memcpy(peer->ipc_handle, d->ipc_handle, sizeof(d->ipc_handle));
        skv_status_t st = ops->ipc_open(ops->ctx, d->ipc_handle, &peer->ipc_base);
        peer->ipc_state = st == SKV_STATUS_OK ? 1 : -1;
        if (st != SKV_STATUS_OK) {
            SKV_LOG_WARN("kvx: same-host CUDA IPC handle did not open (%s): staging through "
                         "host memory for this peer",
                         skv_status_str(st));
        }
    }
    return peer->ipc_state == 1;
}

/* Enqueues the device-to-device copies of one call (contiguous runs merged) and a fence. */
static skv_status_t skv_kvx_ipc_copy(skv_kvx_push_t *push, uint32_t first, uint32_t n,
                                     uint64_t offset, uint64_t bytes, const void *const *srcs)
{
    const skv_kvx_device_ops_t *ops = push->kvx->cfg.device_ops;
    const skv_kvx_desc_t *d = push->desc;
    uint8_t *base = (uint8_t *)push->peer->ipc_base + d->ipc_offset;
    skv_kvx_run_t run = {0};
    skv_status_t st = SKV_STATUS_OK;
    for (uint32_t k = 0; k <= n && st == SKV_STATUS_OK; k++) {
        if (k < n) {
            uint64_t dst =
                (uint64_t)(uintptr_t)(base + (uint64_t)d->block_ids[first + k] * d->block_bytes +
                                      offset);
            if (skv_kvx_run_extend(&run, dst, srcs[k], bytes)) {
                continue;
            }
        }
        if (run.bytes != 0) {
            st = ops->copy_async(ops->ctx, (void *)(uintptr_t)run.dst, run.src, run.bytes);
            push->n_puts++;
        }
        if (k < n) {
            run = (skv_kvx_run_t){
                .dst = (uint64_t)(uintptr_t)(base +
                                             (uint64_t)d->block_ids[first + k] * d->block_bytes +
                                             offset),
                .src = srcs[k],
                .bytes = bytes};
        }
    }
    void *fence = NULL;
    if (st == SKV_STATUS_OK) {
        st = ops->fence(ops->ctx, &fence);
    }
    if (st != SKV_STATUS_OK) {
        skv_kvx_push_fail(push, st, "device-to-device copy");
        return st;
    }
    if (push->ipc_fence != NULL) { /* one stream: the new fence covers the old one */
        ops->fence_free(ops->ctx, push->ipc_fence);
    }
    push->ipc_fence = fence;
    return SKV_STATUS_OK;
}

/* ---- staged device sources ---------------------------------------------------------------- */

/* Sends a staging buffer's runs once its copies passed the fence; AGAIN while they run. */
static skv_status_t skv_kvx_dstage_test(skv_kvx_push_t *push, skv_kvx_stage_t *st)
{
    const skv_kvx_device_ops_t *ops = push->kvx->cfg.device_ops;
    if (st->fence == NULL) {
        return SKV_STATUS_OK;
    }
    skv_status_t s = ops->fence_test(ops->ctx, st->fence);
    if (s == SKV_STATUS_AGAIN) {
        return s;
    }
    ops->fence_free(ops->ctx, st->fence);
    st->fence = NULL;
    uint32_t n_runs = st->n_runs;
    st->n_runs = 0;
    if (s != SKV_STATUS_OK) {
        skv_kvx_push_fail(push, s, "device-to-host copy");
        return s;
    }
    for (uint32_t r = 0; r < n_runs; r++) {
        SKV_CHECK(skv_kvx_send(push, &st->runs[r], NULL, skv_kvx_put_stage_cb, st, &st->inflight));
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_kvx_dstage_pump(skv_kvx_push_t *push);

skv_status_t skv_kvx_device_poll(skv_kvx_push_t *push)
{
    skv_kvx_t *kvx = push->kvx;
    skv_status_t result = SKV_STATUS_OK;
    for (unsigned i = 0; i < kvx->n_stages; i++) {
        skv_kvx_stage_t *st = &kvx->stages[i];
        if (st->push == push && st->fence != NULL) {
            skv_status_t s = skv_kvx_dstage_test(push, st);
            result = s == SKV_STATUS_OK ? result : s;
            if (s != SKV_STATUS_OK && s != SKV_STATUS_AGAIN) {
                return s;
            }
        }
    }
    if (push->dwork_next < push->n_dwork) {
        SKV_CHECK(skv_kvx_dstage_pump(push));
        result = SKV_STATUS_AGAIN; /* queued sources, or copies just enqueued */
    }
    if (push->ipc_fence != NULL) {
        const skv_kvx_device_ops_t *ops = kvx->cfg.device_ops;
        skv_status_t s = ops->fence_test(ops->ctx, push->ipc_fence);
        if (s == SKV_STATUS_AGAIN) {
            return s;
        }
        ops->fence_free(ops->ctx, push->ipc_fence);
        push->ipc_fence = NULL;
        if (s != SKV_STATUS_OK) {
            skv_kvx_push_fail(push, s, "device-to-device copy");
            return s;
        }
    }
    return result;
}

/* Waits (bounded) for a fence so no copy still writes into memory that is reused, frees it. */
static void skv_kvx_fence_drop(const skv_kvx_device_ops_t *ops, void *fence)
{
    int64_t deadline = skv_clock_deadline_ms(1000); /* copies finish unless the GPU is dead */
    while (ops->fence_test(ops->ctx, fence) == SKV_STATUS_AGAIN && !skv_clock_expired(deadline)) {
    }
    ops->fence_free(ops->ctx, fence);
}

/* Drops the sources not yet copied (a failed or abandoned push). */
static void skv_kvx_dwork_drop(skv_kvx_push_t *push)
{
    for (uint32_t i = push->dwork_next; i < push->n_dwork; i++) {
        skv_free(push->dwork[i].srcs);
    }
    skv_free(push->dwork);
    push->dwork = NULL;
    push->n_dwork = push->cap_dwork = push->dwork_next = push->dwork_k = 0;
    push->dwork_done = 0;
}

void skv_kvx_device_abandon(skv_kvx_push_t *push)
{
    skv_kvx_t *kvx = push->kvx;
    const skv_kvx_device_ops_t *ops = kvx->cfg.device_ops;
    skv_kvx_dwork_drop(push);
    for (unsigned i = 0; ops != NULL && i < kvx->n_stages; i++) {
        skv_kvx_stage_t *st = &kvx->stages[i];
        if (st->push == push && st->fence != NULL) {
            skv_kvx_fence_drop(ops, st->fence);
            st->fence = NULL;
            st->n_runs = 0;
        }
    }
    if (ops != NULL && push->ipc_fence != NULL) {
        skv_kvx_fence_drop(ops, push->ipc_fence);
        push->ipc_fence = NULL;
    }
}

/* A staging buffer nobody uses: its copies passed and its sends completed, or NULL. */
static skv_kvx_stage_t *skv_kvx_dstage_free(skv_kvx_t *kvx)
{
    for (unsigned i = 0; i < kvx->n_stages; i++) {
        skv_kvx_stage_t *st = &kvx->stages[kvx->next_stage];
        kvx->next_stage = (kvx->next_stage + 1) % kvx->n_stages;
        if (st->fence == NULL && st->inflight == 0) {
            return st;
        }
    }
    return NULL;
}

/* Appends a run to a staging buffer's list (or extends its last run). */
static skv_status_t skv_kvx_dstage_add(skv_kvx_push_t *push, skv_kvx_stage_t *st, uint64_t dst,
                                       const uint8_t *src, uint32_t i, uint64_t offset,
                                       uint64_t bytes)
{
    if (st->n_runs > 0 &&
        skv_kvx_stage_extend(push, &st->runs[st->n_runs - 1], 0, dst, src, i, offset, bytes)) {
        return SKV_STATUS_OK;
    }
    if (st->n_runs == st->cap_runs) {
        uint32_t cap = st->cap_runs ? 2 * st->cap_runs : 16;
        skv_kvx_run_t *r = skv_realloc(st->runs, cap * sizeof(*r));
        if (r == NULL) {
            skv_kvx_push_fail(push, SKV_STATUS_NO_MEMORY, "staging runs");
            return SKV_STATUS_NO_MEMORY;
        }
        st->runs = r;
        st->cap_runs = cap;
    }
    st->runs[st->n_runs++] = skv_kvx_run_piece(0, dst, src, i, offset, bytes);
    return SKV_STATUS_OK;
}

/* Closes a filled staging buffer: one fence after its copies; its runs leave when it passed. */
static skv_status_t skv_kvx_dstage_seal(skv_kvx_push_t *push, skv_kvx_stage_t *st)
{
    const skv_kvx_device_ops_t *ops = push->kvx->cfg.device_ops;
    skv_status_t s = ops->fence(ops->ctx, &st->fence);
    if (s != SKV_STATUS_OK) {
        st->fence = NULL;
        st->n_runs = 0;
        skv_kvx_push_fail(push, s, "device-to-host fence");
    }
    return s;
}

/* Fills one free staging buffer from the front of the push's queue: asynchronous
 * device-to-host copies, their runs, one fence. */
static skv_status_t skv_kvx_dstage_fill(skv_kvx_push_t *push, skv_kvx_stage_t *st)
{
    const skv_kvx_device_ops_t *ops = push->kvx->cfg.device_ops;
    st->push = push;
    st->n_runs = 0;
    size_t fill = 0;
    while (fill < st->bytes && push->dwork_next < push->n_dwork) {
        skv_kvx_dwork_t *w = &push->dwork[push->dwork_next];
        uint32_t k = push->dwork_k;
        uint64_t done = push->dwork_done;
        uint64_t piece = w->bytes - done < st->bytes - fill ? w->bytes - done : st->bytes - fill;
        uint8_t *host = (uint8_t *)st->ptr + fill;
        skv_status_t s = ops->copy_async(ops->ctx, host, (const uint8_t *)w->srcs[k] + done, piece);
        if (s != SKV_STATUS_OK) {
            skv_kvx_push_fail(push, s, "device-to-host copy");
            return s;
        }
        SKV_CHECK(skv_kvx_dstage_add(push, st,
                                     skv_kvx_push_dst(push, 0, w->first + k, w->offset + done),
                                     host, w->first + k, w->offset + done, piece));
        fill += piece;
        done += piece;
        if (done == w->bytes) {
            done = 0;
            if (++k == w->n) {
                k = 0;
                skv_free(w->srcs);
                w->srcs = NULL;
                push->dwork_next++;
            }
        }
        push->dwork_k = k;
        push->dwork_done = done;
    }
    return skv_kvx_dstage_seal(push, st);
}

/* Copies queued sources into every free staging buffer; never waits. Buffers are shared by
 * all pushes of the transport: a push that finds none busy-free simply tries again at its
 * next poll, so one slow peer never stalls the owner thread. */
static skv_status_t skv_kvx_dstage_pump(skv_kvx_push_t *push)
{
    skv_kvx_stage_t *st;
    while (push->dwork_next < push->n_dwork && (st = skv_kvx_dstage_free(push->kvx)) != NULL) {
        SKV_CHECK(skv_kvx_dstage_fill(push, st));
    }
    if (push->dwork_next == push->n_dwork) {
        push->n_dwork = push->dwork_next = 0; /* the array is reused by the next call */
    }
    return SKV_STATUS_OK;
}

/* Queues one call's device sources (the pointer array is copied) and starts what free
 * buffers allow. */
static skv_status_t skv_kvx_dstage_push(skv_kvx_push_t *push, uint32_t first, uint32_t n,
                                        uint64_t offset, uint64_t bytes, const void *const *srcs)
{
    if (push->n_dwork == push->cap_dwork) {
        uint32_t cap = push->cap_dwork ? 2 * push->cap_dwork : 16;
        skv_kvx_dwork_t *w = skv_realloc(push->dwork, cap * sizeof(*w));
        if (w == NULL) {
            skv_kvx_push_fail(push, SKV_STATUS_NO_MEMORY, "staging queue");
            return SKV_STATUS_NO_MEMORY;
        }
        push->dwork = w;
        push->cap_dwork = cap;
    }
    const void **copy = skv_mallocn(n, sizeof(*copy));
    if (copy == NULL) {
        skv_kvx_push_fail(push, SKV_STATUS_NO_MEMORY, "staging queue");
        return SKV_STATUS_NO_MEMORY;
    }
    memcpy(copy, srcs, n * sizeof(*copy));
    push->dwork[push->n_dwork++] =
        (skv_kvx_dwork_t){.first = first, .n = n, .offset = offset, .bytes = bytes, .srcs = copy};
    return skv_kvx_dstage_pump(push);
}

skv_status_t skv_kvx_push_device(skv_kvx_push_t *push, uint32_t first, uint32_t n, uint64_t offset,
                                 uint64_t bytes, const void *const *srcs)
{
    const skv_kvx_device_ops_t *ops = push->kvx->cfg.device_ops;
    if (ops == NULL || ops->copy_async == NULL || ops->fence == NULL || ops->fence_test == NULL ||
        ops->fence_free == NULL) {
        SKV_LOG_WARN("kvx: push from device memory without device hooks");
        return SKV_STATUS_UNSUPPORTED;
    }
    if (push->desc->tp_size > 1) {
        SKV_LOG_WARN("kvx: request %llu: device pushes reach one memory; the target has %u "
                     "ranks (use skv_kvx_push_staged_rank)",
                     (unsigned long long)push->desc->request_id, push->desc->tp_size);
        return SKV_STATUS_UNSUPPORTED;
    }
    SKV_CHECK(skv_kvx_push_check_range(push, 0, first, n, offset, bytes));
    SKV_CHECK(skv_kvx_push_health(push));
    SKV_CHECK(skv_kvx_push_ready(push));
    if (!push->ipc && push->n_puts == 0 && skv_kvx_ipc_map(push)) {
        push->ipc = 1; /* decided at the first data of the push */
    }
    if (push->ipc) {
        return skv_kvx_ipc_copy(push, first, n, offset, bytes, srcs);
    }
    if (push->kvx->n_stages == 0) {
        return SKV_STATUS_UNSUPPORTED;
    }
    return skv_kvx_dstage_push(push, first, n, offset, bytes, srcs);
}

int skv_kvx_push_uses_ipc(const skv_kvx_push_t *push)
{
    return push->ipc;
}
