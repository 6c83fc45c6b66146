/*
 * decode.c (decode role): the decode side of disaggregation: KV reservations (Decode.Reserve), their
 * leases on the UCX transport, early release (Decode.Release), and the admission of a
 * transferred prompt into the engine (Decode.Decode) once the prefill's completion arrived.
 * A tensor-parallel pool is one set of block ids over one memory per rank: one reservation and
 * one lease cover the blocks in every rank's memory, and the completion (sent after the data
 * of every rank was flushed) hands all of them over at once.
 *
 * Block ownership: Reserve takes the prompt's blocks from the pool into a reservation and
 * leases them to the transport. While the lease lives (ready == 0) the transport decides:
 * on completion the blocks stay with the reservation (ready = 1); on expiry, cancel or a
 * failed prefill the transport's release callback returns them to the pool and the completion
 * callback removes the reservation. A ready reservation hands its blocks to the engine when
 * Decode starts, or back to the pool when released or when nobody decodes it in time.
 * Loop thread only (the transport's callbacks run inside its calls on this thread).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "decode_worker/decode.h"
#include "decode_worker/decode_internal.h"

static skv_wres_t *skv_wres_by_id(skv_worker_t *w, uint64_t id)
{
    for (skv_wres_t *res = w->reservations; res != NULL; res = res->next) {
        if (res->id == id) {
            return res;
        }
    }
    return NULL;
}

static skv_wres_t *skv_wres_by_name(skv_worker_t *w, const char *request_id)
{
    for (skv_wres_t *res = w->reservations; res != NULL; res = res->next) {
        if (strcmp(res->request_id, request_id) == 0) {
            return res;
        }
    }
    return NULL;
}

/* Unlinks and frees a reservation whose blocks are no longer its own. */
static void skv_wres_remove(skv_worker_t *w, skv_wres_t *res)
{
    for (skv_wres_t **pp = &w->reservations; *pp != NULL; pp = &(*pp)->next) {
        if (*pp == res) {
            *pp = res->next;
            break;
        }
    }
    SKV_ASSERT(res->kv.n_blocks == 0);
    skv_free(res->request_id);
    skv_free(res->prompt);
    skv_free(res);
}

/* Gives a reservation's blocks back: through the transport while leased (its callbacks then
 * remove the reservation), directly when ready. */
static void skv_wres_drop(skv_worker_t *w, skv_wres_t *res)
{
    if (!res->ready && skv_kvx_target_cancel(w->kvx, res->id) == SKV_STATUS_OK) {
        return;
    }
    skv_kv_seq_release(w->pool, &res->kv);
    skv_wres_remove(w, res);
}

/* Transport: a lease ended without a completion; its blocks go back to the pool. */
static void skv_worker_lease_release(void *ctx, uint64_t id, const uint32_t *blocks, uint32_t n)
{
    (void)blocks;
    (void)n;
    skv_worker_t *w = ctx;
    skv_wres_t *res = skv_wres_by_id(w, id);
    if (res != NULL) {
        skv_kv_seq_release(w->pool, &res->kv);
    }
}

/* Hands a ready reservation to the engine for the waiting Decode call r. */
static void skv_worker_decode_admit(skv_worker_t *w, skv_wreq_t *r);

/* Transport: the lease of reservation `id` ended (OK: the prompt's KV is in its blocks). */
static void skv_worker_lease_complete(void *ctx, uint64_t id, int32_t first_token,
                                      skv_status_t status)
{
    skv_worker_t *w = ctx;
    skv_wres_t *res = skv_wres_by_id(w, id);
    if (res == NULL) {
        return;
    }
    if (status == SKV_STATUS_OK) {
        res->ready = 1;
        res->first_token = first_token;
        res->expires_ns = skv_clock_deadline_ms(w->cfg.lease_ms_default);
        if (res->decode != NULL) {
            skv_worker_decode_admit(w, res->decode);
        }
        return;
    }
    skv_wreq_t *r = res->decode;
    if (r != NULL) {
        r->res = NULL;
        skv_worker_stream_fail(w, r, SKV_STATUS_UNAVAILABLE,
                               status == SKV_STATUS_TIMEOUT
                                   ? "the prompt's KV did not arrive before the lease expired"
                                   : "the prefill worker reported a failed KV transfer");
    }
    skv_wres_remove(w, res);
}

static skv_status_t skv_worker_decode_init(skv_worker_t *w)
{
    /* Every rank's memory of a tensor-parallel pool is registered; the descriptor states
     * the split (ranks x KV heads each) so a prefill worker of another TP size can map its
     * heads onto ours. */
    void *bases[SKV_KVX_MAX_RANKS];
    for (int32_t r = 0; r < w->tp_size; r++) {
        bases[r] = skv_kv_pool_rank_base(w->pool, r);
    }
    skv_kvx_pool_config_t pc = {0};
    pc.base = skv_kv_pool_base(w->pool);
    pc.n_ranks = (uint32_t)w->tp_size;
    pc.rank_bases = bases;
    pc.kv_heads = (uint32_t)skv_kv_pool_layout(w->pool)->n_kv_heads;
    pc.block_bytes = w->block_bytes;
    pc.n_blocks = (uint32_t)skv_kv_pool_n_blocks(w->pool);
    pc.fingerprint = w->fingerprint;
    pc.device_memory = !w->host_pool; /* IPC export, bounced data messages (kvx_bounce.c) */
    pc.release = skv_worker_lease_release;
    pc.release_ctx = w;
    pc.on_complete = skv_worker_lease_complete;
    pc.complete_ctx = w;
    return skv_kvx_pool_register(w->kvx, &pc);
}

/* Checks a Reserve request against the model and the pool. */
static skv_status_t skv_worker_reserve_check(skv_worker_t *w, const Skv__V1__ReserveRequest *q,
                                             char *why, size_t why_bytes)
{
    int32_t vocab = skv_model_config(w->model)->vocab_size;
    int64_t ctx = skv_model_max_context(w->model);
    int64_t bs = skv_kv_pool_layout(w->pool)->block_size;
    if (q->request_id[0] == '\0' || q->n_prompt_token_ids == 0) {
        snprintf(why, why_bytes, "request_id and prompt_token_ids are required");
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < q->n_prompt_token_ids; i++) {
        if (q->prompt_token_ids[i] < 0 || q->prompt_token_ids[i] >= vocab) {
            snprintf(why, why_bytes, "prompt_token_ids[%zu] = %d is outside the vocabulary", i,
                     q->prompt_token_ids[i]);
            return SKV_STATUS_INVALID_ARGUMENT;
        }
    }
    if (!skv_request_fits_context((int64_t)q->n_prompt_token_ids, q->max_tokens, ctx)) {
        snprintf(why, why_bytes,
                 "prompt (%zu tokens) + max_tokens (%u) exceed the context (%" PRId64 ")",
                 q->n_prompt_token_ids, q->max_tokens, ctx);
        return SKV_STATUS_OUT_OF_RANGE;
    }
    if (q->layout_fingerprint != 0 && q->layout_fingerprint != w->fingerprint) {
        snprintf(why, why_bytes,
                 "KV layout fingerprint mismatch: prefill %016" PRIx64 ", decode %016" PRIx64,
                 q->layout_fingerprint, w->fingerprint);
        return SKV_STATUS_MISMATCH;
    }
    int64_t need = skv_kv_blocks_for((int64_t)q->n_prompt_token_ids + q->max_tokens, bs);
    if (need > skv_kv_pool_n_blocks(w->pool)) {
        snprintf(why, why_bytes, "the request needs %" PRId64 " KV blocks; the pool has %" PRId64,
                 need, skv_kv_pool_n_blocks(w->pool));
        return SKV_STATUS_BUSY;
    }
    if (skv_wres_by_name(w, q->request_id) != NULL) {
        snprintf(why, why_bytes, "request_id '%.64s' already holds a reservation", q->request_id);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    return SKV_STATUS_OK;
}

/* Makes the reservation record with the prompt's blocks taken from the pool. */
static skv_status_t skv_wres_make(skv_worker_t *w, const Skv__V1__ReserveRequest *q,
                                  skv_wres_t **res_p)
{
    skv_wres_t *res = skv_calloc(1, sizeof(*res));
    if (res == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    res->n_prompt = (int32_t)q->n_prompt_token_ids;
    res->request_id = skv_strdup(q->request_id);
    res->prompt = skv_mallocn(q->n_prompt_token_ids, sizeof(int32_t));
    skv_status_t st = res->request_id && res->prompt ? SKV_STATUS_OK : SKV_STATUS_NO_MEMORY;
    if (st == SKV_STATUS_OK) {
        memcpy(res->prompt, q->prompt_token_ids, sizeof(int32_t) * q->n_prompt_token_ids);
        st = skv_kv_seq_reserve(w->pool, &res->kv, res->n_prompt);
    }
    if (st != SKV_STATUS_OK) {
        skv_free(res->request_id);
        skv_free(res->prompt);
        skv_free(res);
        return st;
    }
    *res_p = res;
    return SKV_STATUS_OK;
}

/* Leases res's blocks to the transport; answers the descriptor bytes. */
static skv_status_t skv_wres_lease(skv_worker_t *w, skv_wres_t *res, uint32_t lease_ms,
                                   void **desc_p, size_t *desc_bytes_p)
{
    uint32_t *ids = skv_mallocn((size_t)res->kv.n_blocks, sizeof(uint32_t));
    if (ids == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    for (int32_t i = 0; i < res->kv.n_blocks; i++) {
        ids[i] = (uint32_t)res->kv.blocks[i];
    }
    skv_status_t st =
        skv_kvx_target_reserve(w->kvx, res->id, w->fingerprint, ids, (uint32_t)res->kv.n_blocks,
                               skv_clock_deadline_ms(lease_ms), desc_p, desc_bytes_p);
    skv_free(ids);
    return st;
}

/* Answers a Reserve with the transfer target. */
static void skv_worker_reserve_answer(skv_worker_t *w, skv_wreq_t *r, const skv_wres_t *res,
                                      void *desc, size_t desc_bytes, uint32_t lease_ms)
{
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    Skv__V1__TransferTarget t = SKV__V1__TRANSFER_TARGET__INIT;
    t.descriptor.data = desc;
    t.descriptor.len = desc_bytes;
    t.n_block_ids = (size_t)res->kv.n_blocks;
    t.block_ids = (uint32_t *)res->kv.blocks; /* ids are < 2^31: same bits as int32 */
    t.layout_fingerprint = w->fingerprint;
    t.block_size = (uint32_t)skv_kv_pool_layout(w->pool)->block_size;
    t.lease_deadline_unix_ms =
        (uint64_t)now.tv_sec * 1000u + (uint64_t)now.tv_nsec / 1000000u + lease_ms;
    t.decode_target = w->advertise;
    t.reservation_id = res->id;
    Skv__V1__ReserveResponse a = SKV__V1__RESERVE_RESPONSE__INIT;
    a.target = &t;
    skv_grpc_call_finish_msg(r->call, &a.base, SKV_STATUS_OK, NULL);
    skv_worker_retire(w, r);
}

static void skv_worker_reserve(skv_worker_t *w, skv_wreq_t *r)
{
    const Skv__V1__ReserveRequest *q = (const Skv__V1__ReserveRequest *)r->msg;
    char why[256] = "";
    skv_wres_t *res = NULL;
    void *desc = NULL;
    size_t desc_bytes = 0;
    uint32_t lease_ms = q->lease_ms ? q->lease_ms : w->cfg.lease_ms_default;
    lease_ms = lease_ms < w->cfg.lease_ms_max ? lease_ms : w->cfg.lease_ms_max;
    skv_status_t st = skv_worker_reserve_check(w, q, why, sizeof(why));
    if (st == SKV_STATUS_OK) {
        st = skv_wres_make(w, q, &res);
        snprintf(why, sizeof(why), "%s",
                 st == SKV_STATUS_BUSY ? "no free KV blocks for the prompt"
                                       : "no memory for the reservation");
    }
    if (st == SKV_STATUS_OK) {
        res->id = r->id;
        st = skv_wres_lease(w, res, lease_ms, &desc, &desc_bytes);
        snprintf(why, sizeof(why), "the transport refused the reservation");
        if (st != SKV_STATUS_OK) {
            skv_kv_seq_release(w->pool, &res->kv);
            skv_wres_remove(w, res);
        }
    }
    if (st != SKV_STATUS_OK) {
        skv_grpc_call_finish(r->call, st, why);
        skv_worker_retire(w, r);
        return;
    }
    res->next = w->reservations;
    w->reservations = res;
    /* Counted before the answer, so a Stats call that follows it sees the reservation (the
     * loop's sweep recomputes the count every iteration). */
    __atomic_add_fetch(&w->n_reserved_blocks, (int64_t)res->kv.n_blocks, __ATOMIC_RELAXED);
    skv_worker_reserve_answer(w, r, res, desc, desc_bytes, lease_ms);
    skv_free(desc);
}

static void skv_worker_release(skv_worker_t *w, skv_wreq_t *r)
{
    const Skv__V1__ReleaseRequest *q = (const Skv__V1__ReleaseRequest *)r->msg;
    skv_wres_t *res = skv_wres_by_name(w, q->request_id);
    Skv__V1__ReleaseResponse a = SKV__V1__RELEASE_RESPONSE__INIT;
    if (res != NULL && res->decode == NULL) {
        skv_wres_drop(w, res);
        a.released = 1;
    }
    skv_grpc_call_finish_msg(r->call, &a.base, SKV_STATUS_OK, NULL);
    skv_worker_retire(w, r);
}

/* Fails a Decode call and frees the reservation it was bound to. */
static void skv_worker_decode_fail(skv_worker_t *w, skv_wreq_t *r, skv_status_t st, const char *why)
{
    skv_wres_t *res = r->res;
    if (res != NULL) {
        res->decode = NULL;
        r->res = NULL;
        skv_wres_drop(w, res);
    }
    skv_worker_stream_fail(w, r, st, why);
}

/* Builds the engine request of a Decode call over its ready reservation. */
static skv_status_t skv_worker_decode_desc(skv_worker_t *w, skv_wreq_t *r, skv_request_desc_t *d,
                                           const char **why)
{
    const Skv__V1__DecodeRequest *q = (const Skv__V1__DecodeRequest *)r->msg;
    skv_wres_t *res = r->res;
    memset(d, 0, sizeof(*d));
    if (q->first_token != res->first_token) {
        *why = "first_token differs from the one the prefill worker sent with the KV";
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    d->prompt = res->prompt;
    d->n_prompt = res->n_prompt;
    d->n_cached = res->n_prompt;
    d->kv = res->kv;
    d->first_token = res->first_token;
    SKV_CHECK(skv_worker_sampling_from_msg(w, q->sampling, q->logprobs, &d->sampling, why));
    return skv_worker_stop_from_msg(w, q->stop, res->n_prompt, d, why);
}

static void skv_worker_decode_admit(skv_worker_t *w, skv_wreq_t *r)
{
    skv_request_desc_t d;
    const char *why = "invalid request";
    skv_status_t st = skv_worker_decode_desc(w, r, &d, &why);
    if (st == SKV_STATUS_OK) {
        r->n_sent = 1; /* the transferred first token counts in completion_tokens */
        r->last_token_ns = skv_clock_now_ns();
        st = skv_worker_stream_submit(w, r, &d, &why);
    }
    if (st != SKV_STATUS_OK) {
        skv_worker_decode_fail(w, r, st, why);
        return;
    }
    skv_wres_t *res = r->res; /* its blocks now belong to the engine */
    res->kv = (skv_kv_seq_t){0};
    res->decode = NULL;
    r->res = NULL;
    skv_wres_remove(w, res);
}

static void skv_worker_start_decode(skv_worker_t *w, skv_wreq_t *r)
{
    const Skv__V1__DecodeRequest *q = (const Skv__V1__DecodeRequest *)r->msg;
    skv_wres_t *res = skv_wres_by_name(w, q->request_id);
    if (res == NULL || res->decode != NULL) {
        skv_worker_stream_fail(w, r, res ? SKV_STATUS_INVALID_ARGUMENT : SKV_STATUS_NOT_FOUND,
                               res ? "a Decode for this request_id is already running"
                                   : "no KV reservation for this request_id (never made, "
                                     "released or expired)");
        return;
    }
    r->res = res;
    res->decode = r;
    if (q->n_prompt_tokens != 0 && (int32_t)q->n_prompt_tokens != res->n_prompt) {
        skv_worker_decode_fail(w, r, SKV_STATUS_INVALID_ARGUMENT,
                               "n_prompt_tokens differs from the reservation's prompt");
    } else if (res->ready) {
        skv_worker_decode_admit(w, r);
    } /* else the completion callback admits it, or the lease expiry fails it */
}

static void skv_worker_decode_cancelled(skv_worker_t *w, skv_wreq_t *r)
{
    skv_worker_decode_fail(w, r, SKV_STATUS_CANCELLED, "cancelled");
}

static void skv_worker_expire_reservations(skv_worker_t *w, int64_t now)
{
    int64_t reserved = 0;
    skv_wres_t *res = w->reservations;
    while (res != NULL) {
        skv_wres_t *next = res->next;
        if (res->ready && res->decode == NULL && now > res->expires_ns) {
            SKV_LOG_WARN("worker: request '%s': KV arrived but no Decode came; blocks freed",
                         res->request_id);
            skv_wres_drop(w, res);
        } else {
            reserved += res->kv.n_blocks;
        }
        res = next;
    }
    __atomic_store_n(&w->n_reserved_blocks, reserved, __ATOMIC_RELAXED);
}

static void skv_worker_drop_reservations(skv_worker_t *w)
{
    while (w->reservations != NULL) {
        skv_wres_t *res = w->reservations;
        if (res->decode != NULL) {
            skv_worker_decode_fail(w, res->decode, SKV_STATUS_CANCELLED, "the worker stopped");
        } else {
            skv_wres_drop(w, res);
        }
    }
    __atomic_store_n(&w->n_reserved_blocks, 0, __ATOMIC_RELAXED);
}

/* Starts a call of the decode role's kinds. */
static void skv_worker_decode_start(skv_worker_t *w, skv_wreq_t *r)
{
    switch (r->kind) {
    case SKV_WREQ_GENERATE:
        skv_worker_start_generate(w, r);
        break;
    case SKV_WREQ_DECODE:
        skv_worker_start_decode(w, r);
        break;
    case SKV_WREQ_RESERVE:
        skv_worker_reserve(w, r);
        break;
    case SKV_WREQ_RELEASE:
        skv_worker_release(w, r);
        break;
    case SKV_WREQ_PREFILL:
        break; /* the prefill role's */
    }
}

/* Streams what a call's tokens produced; a call waiting on a reservation keeps the loop
 * polling the transport. */
static int skv_worker_decode_watch(skv_worker_t *w, skv_wreq_t *r)
{
    if (r->call != NULL && (r->kind == SKV_WREQ_GENERATE || r->kind == SKV_WREQ_DECODE)) {
        skv_worker_stream_flush(w, r);
    }
    return r->res != NULL;
}

static void skv_worker_decode_on_cancel(skv_worker_t *w, skv_wreq_t *r)
{
    if (r->res != NULL) {
        skv_worker_decode_cancelled(w, r);
    }
}

const skv_worker_role_ops_t skv_decode_role = {
    .init = skv_worker_decode_init,
    .start = skv_worker_decode_start,
    .watch = skv_worker_decode_watch,
    .cancelled = skv_worker_decode_on_cancel,
    .tick = skv_worker_expire_reservations,
    .stop = skv_worker_drop_reservations,
};
