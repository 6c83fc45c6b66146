/*
 * kvx_push.c: the initiator (prefill) side: one push per request writes KV blocks into the
 * target's pool with ucp_put_nbx (native RMA) or as data messages the target writes into the
 * leased blocks (kvx_am.c; transports without native RMA), then flushes the endpoint and
 * sends the completion message (which, for messages, carries how many were sent).
 *
 * Puts never wait: each is counted (per push for host sources, per staging buffer for staged
 * sources) and the count drops in the UCX callback. Runs whose destination and source are
 * both contiguous become one put. The state machine (PUSHING -> FLUSHING -> SENDING -> DONE)
 * advances only in skv_kvx_push_test, so the engine loop is never blocked. The only waits
 * (staging-buffer reuse, abandon at destroy) are bounded by the push deadline.
 * Not here: device memory (the copy callback of a staged push reaches it).
 */
#include <sched.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "common/kvx/kvx_internal.h"
#include "base/log.h"

/* Records the first error of a push; logs it once. */
void skv_kvx_push_fail(skv_kvx_push_t *push, skv_status_t status, const char *what)
{
    if (push->error == SKV_STATUS_OK) {
        SKV_LOG_WARN("kvx: push of request %llu failed (%s): %s",
                     (unsigned long long)push->desc->request_id, what, skv_status_str(status));
        push->error = status;
    }
}

static void skv_kvx_put_host_cb(void *request, ucs_status_t status, void *user_data)
{
    skv_kvx_push_t *push = user_data;
    ucp_request_free(request);
    push->inflight--;
    if (status != UCS_OK) {
        skv_kvx_push_fail(push, skv_kvx_status_from_ucs(status), "put");
    }
}

void skv_kvx_put_stage_cb(void *request, ucs_status_t status, void *user_data)
{
    skv_kvx_stage_t *st = user_data;
    ucp_request_free(request);
    st->inflight--;
    if (status != UCS_OK && st->push != NULL) {
        skv_kvx_push_fail(st->push, skv_kvx_status_from_ucs(status), "staged put");
    }
}

/* Connects to the target and unpacks every rank's rkey (the clone has 1..SKV_KVX_MAX_RANKS
 * ranks: skv_kvx_push_create checked). */
static skv_status_t skv_kvx_push_connect(skv_kvx_push_t *push)
{
    const skv_kvx_desc_t *d = push->desc;
    for (uint32_t r = 0; r < d->tp_size; r++) {
        SKV_CHECK(skv_kvx_rkey_check(d->ranks[r].rkey, d->ranks[r].rkey_bytes));
    }
    SKV_CHECK(skv_kvx_peer_get(push->kvx, d->worker_addr, d->worker_addr_bytes, &push->peer));
    for (uint32_t r = 0; r < d->tp_size; r++) {
        ucs_status_t us = ucp_ep_rkey_unpack(push->peer->ep, d->ranks[r].rkey, &push->rkeys[r]);
        if (us != UCS_OK) {
            SKV_LOG_WARN("kvx: request %llu: rkey of rank %u (%zu bytes) refused: %s",
                         (unsigned long long)d->request_id, r, d->ranks[r].rkey_bytes,
                         ucs_status_string(us));
            push->rkeys[r] = NULL;
            return SKV_STATUS_FORMAT;
        }
    }
    return SKV_STATUS_OK;
}

/* Before the first data of a push: waits (bounded by the push deadline) for the peer's wireup
 * to finish, then picks puts or messages from the endpoint's final lanes (during wireup UCX
 * shows a temporary configuration). */
skv_status_t skv_kvx_push_ready(skv_kvx_push_t *push)
{
    if (push->ready) {
        return SKV_STATUS_OK;
    }
    skv_status_t status = skv_kvx_peer_wait_wired(push->kvx, push->peer, push->deadline_ns);
    if (status != SKV_STATUS_OK) {
        skv_kvx_push_fail(push, status, "wireup");
        return status;
    }
    const skv_kvx_desc_t *d = push->desc;
    push->mode = skv_kvx_peer_mode(push->kvx, push->peer, d->rkey, d->rkey_bytes);
    push->ready = 1;
    return SKV_STATUS_OK;
}

skv_status_t skv_kvx_push_create(skv_kvx_t *kvx, const skv_kvx_desc_t *desc, int64_t deadline_ns,
                                 skv_kvx_push_t **push_p)
{
    skv_status_t status;
    if (desc->tp_size > SKV_KVX_MAX_RANKS || (desc->tp_size > 1 && desc->ranks == NULL)) {
        SKV_LOG_WARN("kvx: request %llu: %u ranks (limit %u) without their memories",
                     (unsigned long long)desc->request_id, desc->tp_size, SKV_KVX_MAX_RANKS);
        return SKV_STATUS_FORMAT;
    }
    if (skv_clock_expired(desc->lease_deadline_ns)) {
        SKV_LOG_WARN("kvx: request %llu: lease already over", (unsigned long long)desc->request_id);
        return SKV_STATUS_TIMEOUT;
    }
    skv_kvx_push_t *push = skv_calloc(1, sizeof(*push));
    if (push == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    push->kvx = kvx;
    push->deadline_ns =
        deadline_ns < desc->lease_deadline_ns ? deadline_ns : desc->lease_deadline_ns;
    SKV_CHECK_GOTO(skv_kvx_desc_clone(desc, &push->desc), fail);
    SKV_CHECK_GOTO(skv_kvx_push_connect(push), fail);
    *push_p = push;
    return SKV_STATUS_OK;
fail:
    skv_kvx_push_destroy(push);
    return status;
}

/* Returns the push's error, noticing a failed peer or a passed deadline first. */
skv_status_t skv_kvx_push_health(skv_kvx_push_t *push)
{
    if (push->error == SKV_STATUS_OK && push->peer->failure != UCS_OK) {
        skv_kvx_push_fail(push, skv_kvx_status_from_ucs(push->peer->failure), "peer");
    }
    if (push->error == SKV_STATUS_OK && push->state != SKV_KVX_PUSH_DONE &&
        skv_clock_expired(push->deadline_ns)) {
        skv_kvx_push_fail(push, SKV_STATUS_TIMEOUT, "deadline");
    }
    return push->error;
}

/* A data message in flight: its header and iov must live until UCX calls back. */
typedef struct {
    ucp_send_nbx_callback_t cb;
    void *cb_arg;
    uint32_t hdr_bytes; /* version 1 (rank 0) or 2 */
    uint8_t hdr[SKV_KVX_DATA_HEADER_BYTES_V2];
    ucp_dt_iov_t iov[];
} skv_kvx_msg_t;

static void skv_kvx_msg_cb(void *request, ucs_status_t status, void *user_data)
{
    skv_kvx_msg_t *m = user_data;
    m->cb(request, status, m->cb_arg);
    skv_free(m);
}

/* Builds the data message of a run: header and, for scattered host sources, an iov. */
static skv_kvx_msg_t *skv_kvx_msg_make(const skv_kvx_push_t *push, const skv_kvx_run_t *run,
                                       const void *const *srcs, uint32_t *n_iov_p)
{
    skv_kvx_msg_t *m = skv_malloc(sizeof(*m) + (srcs ? run->n : 0) * sizeof(ucp_dt_iov_t));
    if (m == NULL) {
        return NULL;
    }
    uint8_t *h = m->hdr;
    skv_kvx_put_u32(h, SKV_KVX_DATA_MAGIC);
    skv_kvx_put_u32(h + 4, run->rank == 0 ? 1 : 2);
    skv_kvx_put_u64(h + 8, push->desc->request_id);
    skv_kvx_put_u64(h + 16, push->desc->lease_token);
    skv_kvx_put_u32(h + 24, run->first);
    skv_kvx_put_u32(h + 28, run->n);
    skv_kvx_put_u64(h + 32, run->offset);
    skv_kvx_put_u64(h + 40, run->piece);
    skv_kvx_put_u32(h + 48, run->rank);
    skv_kvx_put_u32(h + 52, 0);
    m->hdr_bytes = run->rank == 0 ? SKV_KVX_DATA_HEADER_BYTES : SKV_KVX_DATA_HEADER_BYTES_V2;
    uint32_t n_iov = 0;
    for (uint32_t k = 0; srcs != NULL && k < run->n; k++) { /* adjacent sources merge */
        const uint8_t *src = srcs[k];
        if (n_iov > 0 &&
            (const uint8_t *)m->iov[n_iov - 1].buffer + m->iov[n_iov - 1].length == src) {
            m->iov[n_iov - 1].length += run->piece;
        } else {
            m->iov[n_iov++] = (ucp_dt_iov_t){.buffer = (void *)src, .length = run->piece};
        }
    }
    *n_iov_p = n_iov;
    return m;
}

/* Issues one put (or, in message mode, one data message); counted in *counter until its
 * callback runs. srcs (message mode, host sources) gives the run's n piece sources; NULL
 * means the run's source is contiguous. */
skv_status_t skv_kvx_send(skv_kvx_push_t *push, const skv_kvx_run_t *run, const void *const *srcs,
                          ucp_send_nbx_callback_t cb, void *cb_arg, uint32_t *counter)
{
    ucp_request_param_t rp = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA,
        .cb.send = cb,
        .user_data = cb_arg,
    };
    void *req;
    skv_kvx_msg_t *m = NULL;
    if (push->mode == SKV_KVX_MODE_PUT) {
        req = ucp_put_nbx(push->peer->ep, run->src, run->bytes, run->dst, push->rkeys[run->rank],
                          &rp);
    } else {
        uint32_t n_iov = 0;
        m = skv_kvx_msg_make(push, run, srcs, &n_iov);
        if (m == NULL) {
            skv_kvx_push_fail(push, SKV_STATUS_NO_MEMORY, "data message");
            return push->error;
        }
        m->cb = cb;
        m->cb_arg = cb_arg;
        rp.cb.send = skv_kvx_msg_cb;
        rp.user_data = m;
        rp.op_attr_mask |= UCP_OP_ATTR_FIELD_FLAGS;
        rp.flags = UCP_AM_SEND_FLAG_REPLY; /* the target can fail a stuck receive by its ep */
        const void *buf = run->src;
        size_t count = run->bytes;
        if (n_iov > 1) {
            rp.op_attr_mask |= UCP_OP_ATTR_FIELD_DATATYPE;
            rp.datatype = ucp_dt_make_iov();
            buf = m->iov;
            count = n_iov;
        } else if (n_iov == 1) {
            buf = m->iov[0].buffer;
        }
        req =
            ucp_am_send_nbx(push->peer->ep, SKV_KVX_AM_DATA, m->hdr, m->hdr_bytes, buf, count, &rp);
        push->am_msgs++;
    }
    push->n_puts++;
    if (req == NULL) {
        skv_free(m);
        return SKV_STATUS_OK; /* completed in place */
    }
    if (UCS_PTR_IS_ERR(req)) {
        skv_free(m);
        skv_kvx_push_fail(push, skv_kvx_status_from_ucs(UCS_PTR_STATUS(req)),
                          push->mode == SKV_KVX_MODE_PUT ? "ucp_put_nbx" : "ucp_am_send_nbx");
        return push->error;
    }
    /* Freed in the callback: a request freed earlier gets no callback (ucp_request_free). */
    (*counter)++;
    return SKV_STATUS_OK;
}

/* Checks that the rank, blocks [first, first+n) and bytes [offset, offset+bytes) are in
 * range. */
skv_status_t skv_kvx_push_check_range(const skv_kvx_push_t *push, uint32_t rank, uint32_t first,
                                      uint32_t n, uint64_t offset, uint64_t bytes)
{
    const skv_kvx_desc_t *d = push->desc;
    if (push->state != SKV_KVX_PUSH_PUSHING || rank >= d->tp_size || n == 0 ||
        first >= d->n_blocks || n > d->n_blocks - first || bytes == 0 || offset >= d->block_bytes ||
        bytes > d->block_bytes - offset) {
        SKV_LOG_WARN("kvx: request %llu: push to rank %u of blocks [%u, +%u) bytes [%llu, +%llu) "
                     "outside %u ranks of %u blocks of %llu bytes (or after finish)",
                     (unsigned long long)d->request_id, rank, first, n, (unsigned long long)offset,
                     (unsigned long long)bytes, d->tp_size, d->n_blocks,
                     (unsigned long long)d->block_bytes);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    return SKV_STATUS_OK;
}

/* Remote address of bytes [offset, ...) of descriptor block index i in rank's memory. */
uint64_t skv_kvx_push_dst(const skv_kvx_push_t *push, uint32_t rank, uint32_t i, uint64_t offset)
{
    const skv_kvx_desc_t *d = push->desc;
    return d->ranks[rank].remote_base + (uint64_t)d->block_ids[i] * d->block_bytes + offset;
}

/* Extends run with (dst, src, bytes) when both sides are contiguous; returns 1 if merged. */
int skv_kvx_run_extend(skv_kvx_run_t *run, uint64_t dst, const uint8_t *src, uint64_t bytes)
{
    if (run->bytes != 0 && run->dst + run->bytes == dst && run->src + run->bytes == src) {
        run->bytes += bytes;
        return 1;
    }
    return 0;
}

/* Largest data message: big enough to amortize the per-message cost, small enough that
 * several are in flight (the target receives one while the next is on the wire). */
uint64_t skv_kvx_msg_max(const skv_kvx_push_t *push)
{
    return push->kvx->cfg.am_message_bytes;
}

/* Message mode: blocks [first, first + n) in messages of at most msg_max bytes. */
static skv_status_t skv_kvx_push_host_am(skv_kvx_push_t *push, uint32_t rank, uint32_t first,
                                         uint32_t n, uint64_t offset, uint64_t bytes,
                                         const void *const *srcs)
{
    uint64_t per = skv_kvx_msg_max(push) / bytes;
    per = per == 0 ? 1 : per;
    for (uint32_t k = 0; k < n;) {
        uint32_t m = n - k < per ? n - k : (uint32_t)per;
        skv_kvx_run_t run = {.rank = rank,
                             .src = srcs[k],
                             .bytes = (uint64_t)m * bytes,
                             .first = first + k,
                             .n = m,
                             .offset = offset,
                             .piece = bytes};
        SKV_CHECK(skv_kvx_send(push, &run, srcs + k, skv_kvx_put_host_cb, push, &push->inflight));
        k += m;
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_kvx_push_host_rank(skv_kvx_push_t *push, uint32_t rank, uint32_t first, uint32_t n,
                                    uint64_t offset, uint64_t bytes, const void *const *srcs)
{
    SKV_CHECK(skv_kvx_push_check_range(push, rank, first, n, offset, bytes));
    SKV_CHECK(skv_kvx_push_health(push));
    SKV_CHECK(skv_kvx_push_ready(push));
    if (push->mode == SKV_KVX_MODE_AM) {
        return skv_kvx_push_host_am(push, rank, first, n, offset, bytes, srcs);
    }
    skv_kvx_run_t run = {.rank = rank};
    for (uint32_t k = 0; k < n; k++) {
        uint64_t dst = skv_kvx_push_dst(push, rank, first + k, offset);
        const uint8_t *src = srcs[k];
        if (skv_kvx_run_extend(&run, dst, src, bytes)) {
            continue;
        }
        if (run.bytes != 0) {
            SKV_CHECK(skv_kvx_send(push, &run, NULL, skv_kvx_put_host_cb, push, &push->inflight));
        }
        run = (skv_kvx_run_t){.rank = rank, .dst = dst, .src = src, .bytes = bytes};
    }
    return skv_kvx_send(push, &run, NULL, skv_kvx_put_host_cb, push, &push->inflight);
}

skv_status_t skv_kvx_push_host(skv_kvx_push_t *push, uint32_t first, uint32_t n, uint64_t offset,
                               uint64_t bytes, const void *const *srcs)
{
    return skv_kvx_push_host_rank(push, 0, first, n, offset, bytes, srcs);
}

/* ---- staged sources ---------------------------------------------------------------------- */

/* Takes the next staging buffer, waiting (bounded) until its earlier puts completed. */
static skv_status_t skv_kvx_stage_acquire(skv_kvx_push_t *push, skv_kvx_stage_t **st_p)
{
    skv_kvx_t *kvx = push->kvx;
    skv_kvx_stage_t *st = &kvx->stages[kvx->next_stage];
    kvx->next_stage = (kvx->next_stage + 1) % kvx->n_stages;
    while (st->inflight > 0) {
        skv_kvx_progress(kvx);
        SKV_CHECK(skv_kvx_push_health(push));
    }
    st->push = push;
    *st_p = st;
    return SKV_STATUS_OK;
}

/* Staged-push cursor: the buffer being filled and the run being coalesced in it. */
typedef struct {
    skv_kvx_stage_t *st;
    size_t fill;
    skv_kvx_run_t run;
} skv_kvx_stage_cursor_t;

/* Puts the pending run of the cursor's buffer. */
static skv_status_t skv_kvx_stage_emit(skv_kvx_push_t *push, skv_kvx_stage_cursor_t *c)
{
    if (c->run.bytes == 0) {
        return SKV_STATUS_OK;
    }
    skv_kvx_run_t run = c->run;
    c->run.bytes = 0;
    return skv_kvx_send(push, &run, NULL, skv_kvx_put_stage_cb, c->st, &c->st->inflight);
}

/* Extends a staged run with a piece that follows it in the staging buffer: for puts when the
 * destination is contiguous too; for messages when the piece is the next block at the same
 * offset and size (the message header describes exactly that). Never across ranks. Returns 1
 * if merged. */
skv_kvx_run_t skv_kvx_run_piece(uint32_t rank, uint64_t dst, const uint8_t *src, uint32_t i,
                                uint64_t offset, uint64_t bytes)
{
    return (skv_kvx_run_t){.rank = rank,
                           .dst = dst,
                           .src = src,
                           .bytes = bytes,
                           .first = i,
                           .n = 1,
                           .offset = offset,
                           .piece = bytes};
}

int skv_kvx_stage_extend(const skv_kvx_push_t *push, skv_kvx_run_t *run, uint32_t rank,
                         uint64_t dst, const uint8_t *src, uint32_t i, uint64_t offset,
                         uint64_t bytes)
{
    if (run->bytes != 0 && run->rank != rank) {
        return 0;
    }
    if (push->mode == SKV_KVX_MODE_PUT) {
        return skv_kvx_run_extend(run, dst, src, bytes);
    }
    if (run->bytes != 0 && run->src + run->bytes == src && run->first + run->n == i &&
        run->offset == offset && run->piece == bytes &&
        run->bytes + bytes <= skv_kvx_msg_max(push)) {
        run->bytes += bytes;
        run->n++;
        return 1;
    }
    return 0;
}

/* Copies one piece into the current buffer (switching buffers when full) and coalesces it. */
static skv_status_t skv_kvx_stage_piece(skv_kvx_push_t *push, skv_kvx_stage_cursor_t *c,
                                        uint32_t rank, uint32_t i, uint64_t offset, uint64_t bytes,
                                        skv_kvx_copy_fn copy, void *copy_ctx)
{
    if (c->st == NULL || c->fill == c->st->bytes) {
        SKV_CHECK(skv_kvx_stage_emit(push, c));
        SKV_CHECK(skv_kvx_stage_acquire(push, &c->st));
        c->fill = 0;
    }
    uint8_t *dst_host = (uint8_t *)c->st->ptr + c->fill;
    skv_status_t status = copy(copy_ctx, i, offset, dst_host, bytes);
    if (status != SKV_STATUS_OK) {
        skv_kvx_push_fail(push, status, "copy callback");
        return status;
    }
    c->fill += bytes;
    uint64_t dst = skv_kvx_push_dst(push, rank, i, offset);
    if (!skv_kvx_stage_extend(push, &c->run, rank, dst, dst_host, i, offset, bytes)) {
        SKV_CHECK(skv_kvx_stage_emit(push, c));
        c->run = skv_kvx_run_piece(rank, dst, dst_host, i, offset, bytes);
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_kvx_push_staged_rank(skv_kvx_push_t *push, uint32_t rank, uint32_t first,
                                      uint32_t n, uint64_t offset, uint64_t bytes,
                                      skv_kvx_copy_fn copy, void *copy_ctx)
{
    SKV_CHECK(skv_kvx_push_check_range(push, rank, first, n, offset, bytes));
    SKV_CHECK(skv_kvx_push_health(push));
    if (copy == NULL || push->kvx->n_stages == 0) {
        return SKV_STATUS_UNSUPPORTED;
    }
    SKV_CHECK(skv_kvx_push_ready(push));
    skv_kvx_stage_cursor_t c = {0};
    for (uint32_t k = 0; k < n; k++) {
        /* A block range larger than a staging buffer goes in buffer-sized pieces. */
        for (uint64_t done = 0; done < bytes;) {
            uint64_t room = c.st == NULL ? push->kvx->cfg.staging_bytes : c.st->bytes - c.fill;
            room = room == 0 ? push->kvx->cfg.staging_bytes : room;
            uint64_t piece = bytes - done < room ? bytes - done : room;
            SKV_CHECK(skv_kvx_stage_piece(push, &c, rank, first + k, offset + done, piece, copy,
                                          copy_ctx));
            done += piece;
        }
    }
    return skv_kvx_stage_emit(push, &c);
}

skv_status_t skv_kvx_push_staged(skv_kvx_push_t *push, uint32_t first, uint32_t n, uint64_t offset,
                                 uint64_t bytes, skv_kvx_copy_fn copy, void *copy_ctx)
{
    return skv_kvx_push_staged_rank(push, 0, first, n, offset, bytes, copy, copy_ctx);
}

/* ---- finish ------------------------------------------------------------------------------ */

/* Returns the number of staged puts of this push still in flight. */
static uint32_t skv_kvx_push_staged_inflight(const skv_kvx_push_t *push)
{
    uint32_t n = 0;
    for (unsigned i = 0; i < push->kvx->n_stages; i++) {
        if (push->kvx->stages[i].push == push) {
            n += push->kvx->stages[i].inflight;
        }
    }
    return n;
}

static skv_status_t skv_kvx_push_step(skv_kvx_push_t *push);

skv_status_t skv_kvx_push_finish(skv_kvx_push_t *push, int32_t first_token, skv_status_t status)
{
    SKV_CHECK(skv_kvx_push_health(push));
    if (push->state != SKV_KVX_PUSH_PUSHING) {
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    uint8_t *m = push->msg;
    skv_kvx_put_u32(m, SKV_KVX_COMPLETE_MAGIC);
    skv_kvx_put_u32(m + 4, 2); /* version 2, reserved 0 */
    skv_kvx_put_u64(m + 8, push->desc->request_id);
    skv_kvx_put_u64(m + 16, push->desc->lease_token);
    skv_kvx_put_u32(m + 24, (uint32_t)first_token);
    skv_kvx_put_u32(m + 28, (uint32_t)status);
    push->state = SKV_KVX_PUSH_FINISHING; /* the flush follows the last device copy */
    skv_status_t st = skv_kvx_push_step(push);
    return st == SKV_STATUS_AGAIN ? SKV_STATUS_OK : st;
}

/* Issues the flush once every send is issued (device copies passed their fences). */
static skv_status_t skv_kvx_push_flush(skv_kvx_push_t *push)
{
    skv_status_t status = skv_kvx_device_poll(push);
    if (status != SKV_STATUS_OK) {
        return status;
    }
    /* Known only now: staged device buffers send when their copies are done. */
    skv_kvx_put_u32(push->msg + 32, push->am_msgs); /* the target waits for all of them */
    skv_kvx_put_u32(push->msg + 36, 0);
    /* The flush covers every put issued so far on the endpoint, so all bytes are remote
     * before the completion leaves (puts and AMs may use different lanes). */
    ucp_request_param_t rp = {.op_attr_mask = 0};
    void *req = ucp_ep_flush_nbx(push->peer->ep, &rp);
    if (UCS_PTR_IS_ERR(req)) {
        skv_kvx_push_fail(push, skv_kvx_status_from_ucs(UCS_PTR_STATUS(req)), "flush");
        return push->error;
    }
    push->flush_req = req;
    push->state = SKV_KVX_PUSH_FLUSHING;
    return SKV_STATUS_OK;
}

/* Returns AGAIN while req is in flight, OK when done (req freed), or its error. */
static skv_status_t skv_kvx_req_test(skv_kvx_push_t *push, void **req, const char *what)
{
    if (*req == NULL) {
        return SKV_STATUS_OK;
    }
    ucs_status_t us = ucp_request_check_status(*req);
    if (us == UCS_INPROGRESS) {
        return SKV_STATUS_AGAIN;
    }
    ucp_request_free(*req);
    *req = NULL;
    if (us != UCS_OK) {
        skv_kvx_push_fail(push, skv_kvx_status_from_ucs(us), what);
        return push->error;
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_kvx_push_send_completion(skv_kvx_push_t *push)
{
    ucp_request_param_t rp = {.op_attr_mask = 0};
    void *req = ucp_am_send_nbx(push->peer->ep, SKV_KVX_AM_COMPLETE, push->msg, sizeof(push->msg),
                                NULL, 0, &rp);
    if (UCS_PTR_IS_ERR(req)) {
        skv_kvx_push_fail(push, skv_kvx_status_from_ucs(UCS_PTR_STATUS(req)), "completion");
        return push->error;
    }
    push->am_req = req;
    push->state = SKV_KVX_PUSH_SENDING;
    return SKV_STATUS_OK;
}

/* Advances the state machine by at most one step per finished request. */
static skv_status_t skv_kvx_push_step(skv_kvx_push_t *push)
{
    skv_status_t status;
    switch (push->state) {
    case SKV_KVX_PUSH_PUSHING:
        /* Device copies (IPC, staging) first: a passed fence releases a buffer's sends. */
        status = skv_kvx_device_poll(push);
        if (status != SKV_STATUS_OK) {
            return status;
        }
        return push->inflight + skv_kvx_push_staged_inflight(push) ? SKV_STATUS_AGAIN
                                                                   : SKV_STATUS_OK;
    case SKV_KVX_PUSH_FINISHING:
        status = skv_kvx_push_flush(push);
        if (status != SKV_STATUS_OK) {
            return status;
        }
        __attribute__((fallthrough));
    case SKV_KVX_PUSH_FLUSHING:
        status = skv_kvx_req_test(push, &push->flush_req, "flush");
        if (status != SKV_STATUS_OK) {
            return status;
        }
        status = skv_kvx_push_send_completion(push);
        if (status != SKV_STATUS_OK) {
            return status;
        }
        /* The AM may have completed in place: test it now. */
        __attribute__((fallthrough));
    case SKV_KVX_PUSH_SENDING:
        SKV_CHECK(skv_kvx_req_test(push, &push->am_req, "completion"));
        push->state = SKV_KVX_PUSH_DONE;
        return SKV_STATUS_OK;
    case SKV_KVX_PUSH_DONE:
        return SKV_STATUS_OK;
    }
    return SKV_STATUS_INTERNAL;
}

skv_status_t skv_kvx_push_test(skv_kvx_push_t *push)
{
    skv_kvx_progress(push->kvx);
    SKV_CHECK(skv_kvx_push_health(push));
    return skv_kvx_push_step(push);
}

skv_status_t skv_kvx_push_wait(skv_kvx_push_t *push)
{
    skv_status_t status;
    for (;;) {
        unsigned events = skv_kvx_progress(push->kvx);
        status = skv_kvx_push_health(push);
        if (status == SKV_STATUS_OK) {
            status = skv_kvx_push_step(push);
        }
        if (status != SKV_STATUS_AGAIN) {
            return status;
        }
        if (events == 0) {
            /* Nothing arrived: let the peer (often on the same cores) run. Two processes
             * spinning on a loaded 2-core machine otherwise starve each other. */
            sched_yield();
        }
    }
}

uint64_t skv_kvx_push_n_puts(const skv_kvx_push_t *push)
{
    return push->n_puts;
}

int skv_kvx_push_uses_messages(const skv_kvx_push_t *push)
{
    return push->mode == SKV_KVX_MODE_AM;
}

/* Returns 1 while a staging buffer of this push waits for its device copies. */
static int skv_kvx_push_fenced(const skv_kvx_push_t *push)
{
    for (unsigned i = 0; i < push->kvx->n_stages; i++) {
        if (push->kvx->stages[i].push == push && push->kvx->stages[i].fence != NULL) {
            return 1;
        }
    }
    return 0;
}

/* Returns non-zero while UCX may still call back into (or read memory of) this push. */
static int skv_kvx_push_busy(const skv_kvx_push_t *push)
{
    return push->inflight > 0 || skv_kvx_push_staged_inflight(push) > 0 ||
           push->ipc_fence != NULL || skv_kvx_push_fenced(push) ||
           (push->flush_req && ucp_request_check_status(push->flush_req) == UCS_INPROGRESS) ||
           (push->am_req && ucp_request_check_status(push->am_req) == UCS_INPROGRESS);
}

/* Waits for the push's requests until its deadline; then forces the endpoint closed, which
 * completes them with errors, and waits (bounded) for that. Returns 1 when idle. */
static int skv_kvx_push_drain(skv_kvx_push_t *push)
{
    skv_kvx_t *kvx = push->kvx;
    if (push->state != SKV_KVX_PUSH_DONE) {
        skv_kvx_device_abandon(push); /* not finished: no new copies, wait for running ones */
    }
    while (skv_kvx_push_busy(push) && !skv_clock_expired(push->deadline_ns) &&
           push->peer->failure == UCS_OK) {
        skv_kvx_progress(kvx);
        if (skv_kvx_device_poll(push) != SKV_STATUS_AGAIN && push->error != SKV_STATUS_OK) {
            skv_kvx_device_abandon(push); /* a failed copy: its buffers' runs never leave */
        }
    }
    skv_kvx_device_abandon(push); /* copies not yet sent are dropped (the push failed) */
    if (!skv_kvx_push_busy(push)) {
        return 1;
    }
    skv_kvx_peer_force_close(kvx, push->peer);
    int64_t deadline = skv_clock_deadline_ms(kvx->cfg.close_timeout_ms);
    while (skv_kvx_push_busy(push) && !skv_clock_expired(deadline)) {
        ucp_worker_progress(kvx->worker);
    }
    return !skv_kvx_push_busy(push);
}

void skv_kvx_push_destroy(skv_kvx_push_t *push)
{
    if (push == NULL) {
        return;
    }
    if (push->peer != NULL && !skv_kvx_push_drain(push)) {
        /* UCX still owns requests pointing into this push: leaking it beats a use after
         * free. Only reachable when a forced close does not finish (a UCX bug). */
        SKV_LOG_ERROR("kvx: request %llu: requests stuck after forced close; push leaked",
                      (unsigned long long)push->desc->request_id);
        return;
    }
    for (unsigned i = 0; i < push->kvx->n_stages; i++) {
        if (push->kvx->stages[i].push == push) {
            push->kvx->stages[i].push = NULL;
        }
    }
    if (push->flush_req != NULL) {
        ucp_request_free(push->flush_req);
    }
    if (push->am_req != NULL) {
        ucp_request_free(push->am_req);
    }
    for (uint32_t r = 0; r < SKV_KVX_MAX_RANKS; r++) {
        if (push->rkeys[r] != NULL) {
            ucp_rkey_destroy(push->rkeys[r]);
        }
    }
    if (push->peer != NULL) {
        skv_kvx_peer_put(push->kvx, push->peer);
    }
    skv_kvx_desc_destroy(push->desc);
    skv_free(push);
}
