/*
 * kvx_bounce.c: data messages into a device pool (target side). UCX only ever reads or writes
 * host memory here: a rendezvous payload is received into one of a few host bounce buffers
 * (pinned when the CUDA hooks allocate them), an eager payload is copied into one, and the
 * device hooks copy the message's pieces into the leased blocks on their own stream. The
 * message counts as written on its lease only when the fence after those copies passed, so
 * a completion never hands over blocks whose bytes are still on their way.
 *
 * Why not let UCX receive into the device pool: what that does depends on the UCX build and
 * the transport (a UCX without CUDA support writes a device pointer as host memory; one with
 * CUDA support crashed receiving rendezvous data over tcp into device memory). A host bounce
 * works over every transport, and every write is still checked against the lease first.
 *
 * A message that finds every buffer busy waits in arrival order (a rendezvous payload stays
 * with the sender until it is received; an eager one is kept by UCX or copied) and counts in
 * its lease's am_pending, so the lease cannot end under it. Buffers free as copies finish,
 * which the owner's progress polls (skv_kvx_bounce_poll): every wait here is bounded by the
 * device finishing copies that were already queued.
 */
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "common/kvx/kvx_internal.h"

#define SKV_KVX_DEFAULT_N_BOUNCE 4u

skv_status_t skv_kvx_bounce_init(skv_kvx_t *kvx)
{
    unsigned n = kvx->cfg.n_bounce ? kvx->cfg.n_bounce : SKV_KVX_DEFAULT_N_BOUNCE;
    kvx->bounce = skv_calloc(n, sizeof(*kvx->bounce));
    if (kvx->bounce == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    kvx->n_bounce = n;
    for (unsigned i = 0; i < n; i++) {
        kvx->bounce[i].kvx = kvx;
        kvx->bounce[i].buf = kvx->cfg.staging_alloc(kvx->cfg.staging_ctx, kvx->cfg.am_message_bytes);
        if (kvx->bounce[i].buf == NULL) {
            SKV_LOG_ERROR("kvx: bounce buffer %u of %zu bytes: out of memory", i,
                          kvx->cfg.am_message_bytes);
            return SKV_STATUS_NO_MEMORY;
        }
    }
    return SKV_STATUS_OK;
}

static skv_kvx_bounce_t *skv_kvx_bounce_free_one(skv_kvx_t *kvx)
{
    for (unsigned i = 0; i < kvx->n_bounce; i++) {
        if (kvx->bounce[i].state == SKV_KVX_BOUNCE_FREE) {
            return &kvx->bounce[i];
        }
    }
    return NULL;
}

/* Ends a message that will not be copied (its lease is ending, or a step failed). */
static void skv_kvx_bounce_drop(skv_kvx_t *kvx, skv_kvx_bounce_t *b, ucs_status_t status)
{
    b->state = SKV_KVX_BOUNCE_FREE;
    skv_kvx_am_recv_end(kvx, b->h.request_id, b->h.lease_token, status);
}

/* Enqueues the copies of the message in b (its bytes are in b->buf) into the leased blocks,
 * adjacent pieces as one copy, and a fence after them. */
static void skv_kvx_bounce_copy(skv_kvx_t *kvx, skv_kvx_bounce_t *b)
{
    const skv_kvx_device_ops_t *ops = kvx->cfg.device_ops;
    long i = skv_kvx_lease_find_token(kvx, b->h.request_id, b->h.lease_token);
    if (i < 0 || kvx->leases[i].end_status != SKV_STATUS_OK) {
        skv_kvx_bounce_drop(kvx, b, UCS_ERR_CANCELED); /* the lease ends; bytes not needed */
        return;
    }
    const skv_kvx_lease_t *l = &kvx->leases[i];
    skv_status_t st = SKV_STATUS_OK;
    uint8_t *run_dst = NULL;
    uint64_t run_src = 0, run_bytes = 0;
    for (uint32_t k = 0; k <= b->h.n && st == SKV_STATUS_OK; k++) {
        uint8_t *dst = k < b->h.n ? skv_kvx_am_dst(kvx, l, &b->h, k) : NULL;
        if (dst != NULL && run_dst != NULL && run_dst + run_bytes == dst) {
            run_bytes += b->h.bytes;
            continue;
        }
        if (run_dst != NULL) {
            st = ops->copy_async(ops->ctx, run_dst, b->buf + run_src, run_bytes);
        }
        run_dst = dst;
        run_src = (uint64_t)k * b->h.bytes;
        run_bytes = b->h.bytes;
    }
    if (st == SKV_STATUS_OK) {
        st = ops->fence(ops->ctx, &b->fence);
    }
    if (st != SKV_STATUS_OK) {
        SKV_LOG_WARN("kvx: request %llu: copy of a data message to the device pool failed: %s",
                     (unsigned long long)b->h.request_id, skv_status_str(st));
        skv_kvx_bounce_drop(kvx, b, UCS_ERR_IO_ERROR);
        return;
    }
    b->state = SKV_KVX_BOUNCE_COPY;
}

static void skv_kvx_bounce_recv_cb(void *request, ucs_status_t status, size_t length,
                                   void *user_data)
{
    skv_kvx_bounce_t *b = user_data;
    ucp_request_free(request);
    if (status != UCS_OK) {
        skv_kvx_bounce_drop(b->kvx, b, status);
        return;
    }
    skv_kvx_bounce_copy(b->kvx, b);
}

/* Starts the receive of a rendezvous payload into b. */
static void skv_kvx_bounce_recv(skv_kvx_t *kvx, skv_kvx_bounce_t *b, void *desc,
                                size_t data_bytes)
{
    b->state = SKV_KVX_BOUNCE_RECV;
    ucp_request_param_t rp = {
        .op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA |
                        UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_MEMORY_TYPE,
        .cb.recv_am = skv_kvx_bounce_recv_cb,
        .user_data = b,
        .datatype = ucp_dt_make_contig(1),
        .memory_type = UCS_MEMORY_TYPE_HOST,
    };
    void *req = ucp_am_recv_data_nbx(kvx->worker, desc, b->buf, data_bytes, &rp);
    if (UCS_PTR_IS_PTR(req)) {
        return; /* skv_kvx_bounce_recv_cb goes on */
    }
    if (UCS_PTR_STATUS(req) != UCS_OK) {
        skv_kvx_bounce_drop(kvx, b, UCS_PTR_STATUS(req));
        return;
    }
    skv_kvx_bounce_copy(kvx, b); /* received in place */
}

/* Puts a message into the free buffer b: rendezvous payloads are received, eager ones copied.
 * A message whose lease is ending is dropped instead. */
static void skv_kvx_bounce_start(skv_kvx_t *kvx, skv_kvx_bounce_t *b, const skv_kvx_am_hdr_t *h,
                                 void *desc, const void *data, size_t data_bytes)
{
    b->h = *h;
    if (desc != NULL) {
        skv_kvx_bounce_recv(kvx, b, desc, data_bytes);
        return;
    }
    memcpy(b->buf, data, data_bytes);
    skv_kvx_bounce_copy(kvx, b);
}

/* Queues a message that found no free buffer; returns what the UCX callback returns. */
static ucs_status_t skv_kvx_bounce_wait(skv_kvx_t *kvx, const skv_kvx_am_hdr_t *h, void *data,
                                        size_t data_bytes, int rndv, int keep)
{
    skv_kvx_bounce_wait_t *q = skv_calloc(1, sizeof(*q));
    if (q != NULL && !rndv && !keep) {
        q->data_copy = skv_malloc(data_bytes);
        if (q->data_copy == NULL) {
            skv_free(q);
            q = NULL;
        }
    }
    if (q == NULL) {
        SKV_LOG_WARN("kvx: request %llu: no memory to hold a data message: refused",
                     (unsigned long long)h->request_id);
        skv_kvx_am_recv_end(kvx, h->request_id, h->lease_token, UCS_ERR_NO_MEMORY);
        return rndv ? UCS_ERR_NO_MEMORY : UCS_OK;
    }
    q->h = *h;
    q->data_bytes = data_bytes;
    if (rndv) {
        q->desc = data;
    } else if (keep) {
        q->data = data;
        q->data_desc = data;
    } else {
        memcpy(q->data_copy, data, data_bytes);
        q->data = q->data_copy;
    }
    if (kvx->wait_tail != NULL) {
        kvx->wait_tail->next = q;
    } else {
        kvx->wait_head = q;
    }
    kvx->wait_tail = q;
    return rndv || keep ? UCS_INPROGRESS : UCS_OK;
}

ucs_status_t skv_kvx_bounce_take(skv_kvx_t *kvx, long i, const skv_kvx_am_hdr_t *h, void *data,
                                 size_t data_bytes, const ucp_am_recv_param_t *param)
{
    int rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
    if (data_bytes > kvx->cfg.am_message_bytes) {
        SKV_LOG_WARN("kvx: request %llu: a %zu-byte data message for the device pool exceeds the "
                     "%zu-byte bounce buffers: refused",
                     (unsigned long long)h->request_id, data_bytes, kvx->cfg.am_message_bytes);
        kvx->leases[i].am_bad++;
        return rndv ? UCS_ERR_MESSAGE_TRUNCATED : UCS_OK;
    }
    kvx->leases[i].am_pending++; /* until its copies passed their fence */
    skv_kvx_bounce_t *b = kvx->wait_head == NULL ? skv_kvx_bounce_free_one(kvx) : NULL;
    if (b == NULL) {
        int keep = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_DATA) != 0;
        return skv_kvx_bounce_wait(kvx, h, data, data_bytes, rndv, keep);
    }
    skv_kvx_bounce_start(kvx, b, h, rndv ? data : NULL, data, data_bytes);
    return rndv ? UCS_INPROGRESS : UCS_OK; /* UCX owns a rendezvous desc once received */
}

/* Gives free buffers to waiting messages, in arrival order. */
static void skv_kvx_bounce_serve(skv_kvx_t *kvx)
{
    skv_kvx_bounce_t *b;
    while (kvx->wait_head != NULL && (b = skv_kvx_bounce_free_one(kvx)) != NULL) {
        skv_kvx_bounce_wait_t *q = kvx->wait_head;
        kvx->wait_head = q->next;
        if (kvx->wait_head == NULL) {
            kvx->wait_tail = NULL;
        }
        skv_kvx_bounce_start(kvx, b, &q->h, q->desc, q->data, q->data_bytes);
        if (q->data_desc != NULL) {
            ucp_am_data_release(kvx->worker, q->data_desc);
        }
        skv_free(q->data_copy);
        skv_free(q);
    }
}

void skv_kvx_bounce_poll(skv_kvx_t *kvx)
{
    const skv_kvx_device_ops_t *ops = kvx->cfg.device_ops;
    for (unsigned i = 0; i < kvx->n_bounce; i++) {
        skv_kvx_bounce_t *b = &kvx->bounce[i];
        if (b->state != SKV_KVX_BOUNCE_COPY) {
            continue;
        }
        skv_status_t st = ops->fence_test(ops->ctx, b->fence);
        if (st == SKV_STATUS_AGAIN) {
            continue;
        }
        ops->fence_free(ops->ctx, b->fence);
        b->fence = NULL;
        skv_kvx_bounce_drop(kvx, b, st == SKV_STATUS_OK ? UCS_OK : UCS_ERR_IO_ERROR);
    }
    skv_kvx_bounce_serve(kvx);
}

void skv_kvx_bounce_cleanup(skv_kvx_t *kvx)
{
    if (kvx->bounce == NULL) {
        return;
    }
    /* Waiting messages are dropped (their leases end with destroy); copies already queued
     * finish on their own: wait for them (bounded) before the buffers they read go away. */
    while (kvx->wait_head != NULL) {
        skv_kvx_bounce_wait_t *q = kvx->wait_head;
        kvx->wait_head = q->next;
        if (q->desc != NULL || q->data_desc != NULL) {
            ucp_am_data_release(kvx->worker, q->desc != NULL ? q->desc : q->data_desc);
        }
        skv_free(q->data_copy);
        skv_free(q);
    }
    kvx->wait_tail = NULL;
    int64_t deadline = skv_clock_deadline_ms(kvx->cfg.close_timeout_ms);
    const skv_kvx_device_ops_t *ops = kvx->cfg.device_ops;
    for (unsigned i = 0; i < kvx->n_bounce; i++) {
        skv_kvx_bounce_t *b = &kvx->bounce[i];
        while (b->fence != NULL && ops->fence_test(ops->ctx, b->fence) == SKV_STATUS_AGAIN &&
               skv_clock_now_ns() < deadline) {
        }
        if (b->fence != NULL) {
            ops->fence_free(ops->ctx, b->fence);
            b->fence = NULL;
        }
    }
}

void skv_kvx_bounce_free(skv_kvx_t *kvx)
{
    for (unsigned i = 0; kvx->bounce != NULL && i < kvx->n_bounce; i++) {
        if (kvx->bounce[i].buf != NULL) {
            kvx->cfg.staging_free(kvx->cfg.staging_ctx, kvx->bounce[i].buf,
                                  kvx->cfg.am_message_bytes);
        }
    }
    skv_free(kvx->bounce);
    kvx->bounce = NULL;
    kvx->n_bounce = 0;
}
