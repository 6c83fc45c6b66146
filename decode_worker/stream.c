/*
 * stream.c (decode role): the streamed answers of a worker (Worker.Generate and Decode.Decode): the
 * engine callbacks that collect tokens, and the flush that turns collected tokens into
 * DecodeChunk messages.
 *
 * Engine callbacks must not block, and a slow client must not stall the engine: tokens pile up
 * in the call's outbox and each flush writes everything collected since the last write as ONE
 * chunk (a BUSY write leaves them for the next loop iteration). The end of the request is sent
 * with the last tokens, once they are all out. Loop thread only.
 */
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "decode_worker/decode_internal.h"

/* Appends one sampled token to the outbox. */
static skv_status_t skv_wreq_out_push(skv_wreq_t *r, const skv_sample_t *s, int keep_sample)
{
    if (r->n_out == r->cap_out) {
        int32_t cap = r->cap_out ? 2 * r->cap_out : 16;
        int32_t *t = skv_realloc(r->out_tokens, (size_t)cap * sizeof(*t));
        if (t == NULL) {
            return SKV_STATUS_NO_MEMORY;
        }
        r->out_tokens = t;
        if (keep_sample) { /* decided once per request, so both arrays grow together */
            skv_sample_t *ss = skv_realloc(r->out_samples, (size_t)cap * sizeof(*ss));
            if (ss == NULL) {
                return SKV_STATUS_NO_MEMORY;
            }
            r->out_samples = ss;
        }
        r->cap_out = cap;
    }
    r->out_tokens[r->n_out] = s->token;
    if (keep_sample) {
        r->out_samples[r->n_out] = *s;
    }
    r->n_out++;
    return SKV_STATUS_OK;
}

/* Records the gap since the previous token (inter-token latency of this worker). */
static void skv_wreq_note_gap(skv_wreq_t *r, int64_t now)
{
    if (r->last_token_ns != 0) {
        int64_t gap = now - r->last_token_ns;
        r->max_gap_ns = gap > r->max_gap_ns ? gap : r->max_gap_ns;
        r->sum_gap_ns += gap;
        r->n_gaps++;
    }
    r->last_token_ns = now;
}

static void skv_worker_stream_on_token(void *ctx, uint64_t id, const skv_sample_t *s, int32_t index)
{
    (void)id;
    (void)index;
    skv_wreq_t *r = ctx;
    skv_wreq_note_gap(r, skv_clock_now_ns());
    __atomic_add_fetch(&r->w->n_tokens_total, 1, __ATOMIC_RELAXED);
    if (r->call == NULL) {
        return;
    }
    if (skv_wreq_out_push(r, s, r->want_logprobs) != SKV_STATUS_OK && !r->cancel_asked) {
        r->cancel_asked = skv_engine_cancel(r->w->engine, r->id) == SKV_STATUS_OK;
    }
}

static void skv_worker_stream_on_finish(void *ctx, uint64_t id, const skv_request_result_t *res)
{
    (void)id;
    skv_wreq_t *r = ctx;
    r->in_engine = 0;
    r->finish_ready = 1;
    r->finish = res->finish;
    r->finish_status = res->finish == SKV_FINISH_ERROR ? res->status : SKV_STATUS_OK;
    r->timing = res->timing;
    r->n_prompt = res->n_prompt;
    if (res->finish == SKV_FINISH_ERROR) {
        r->finish_detail = "the engine failed the request";
    } else if (res->finish == SKV_FINISH_CANCELLED) {
        r->finish_status = SKV_STATUS_CANCELLED;
        r->finish_detail = "cancelled";
    }
    if (r->call != NULL) {
        skv_worker_stream_flush(r->w, r);
    }
}

const skv_request_cbs_t skv_worker_stream_cbs = {skv_worker_stream_on_token,
                                                 skv_worker_stream_on_finish, NULL};

static Skv__V1__FinishReason skv_worker_finish_reason(const skv_worker_t *w, const skv_wreq_t *r)
{
    switch (r->finish) {
    case SKV_FINISH_STOP:
        return SKV__V1__FINISH_REASON__FINISH_REASON_STOP;
    case SKV_FINISH_LENGTH:
        return r->n_prompt + r->n_sent + r->n_out >= skv_model_max_context(w->model)
                   ? SKV__V1__FINISH_REASON__FINISH_REASON_CONTEXT_LENGTH
                   : SKV__V1__FINISH_REASON__FINISH_REASON_LENGTH;
    case SKV_FINISH_CANCELLED:
        return SKV__V1__FINISH_REASON__FINISH_REASON_CANCELLED;
    default:
        return SKV__V1__FINISH_REASON__FINISH_REASON_ERROR;
    }
}

/* Microseconds from a to b, 0 when either did not happen. */
static uint64_t skv_us(int64_t a, int64_t b)
{
    return a > 0 && b >= a ? (uint64_t)((b - a) / 1000) : 0;
}

static void skv_worker_fill_timings(const skv_wreq_t *r, int64_t now, Skv__V1__Timings *t)
{
    skv__v1__timings__init(t);
    t->queue_us = skv_us(r->received_ns, r->timing.first_scheduled);
    t->prefill_us =
        r->kind == SKV_WREQ_GENERATE ? skv_us(r->timing.first_scheduled, r->timing.first_token) : 0;
    t->ttft_us = r->kind == SKV_WREQ_GENERATE ? skv_us(r->received_ns, r->timing.first_token) : 0;
    t->decode_us = skv_us(r->timing.first_token, r->timing.last_token);
    t->inter_token_mean_us = r->n_gaps > 0 ? (uint64_t)(r->sum_gap_ns / r->n_gaps / 1000) : 0;
    t->inter_token_max_us = (uint64_t)(r->max_gap_ns / 1000);
    t->total_us = skv_us(r->received_ns, now);
}

/* Logprob arrays for one chunk, in one allocation. */
typedef struct {
    Skv__V1__TokenLogprob lp;
    Skv__V1__TopLogprob tops[SKV_SAMPLER_MAX_LOGPROBS];
    Skv__V1__TopLogprob *top_ptrs[SKV_SAMPLER_MAX_LOGPROBS];
} skv_chunk_lp_t;

/* Fills the chunk's logprobs from the outbox samples. NO_MEMORY leaves the chunk without. */
static skv_status_t skv_worker_chunk_logprobs(const skv_wreq_t *r, Skv__V1__DecodeChunk *c,
                                              skv_chunk_lp_t **lps_p,
                                              Skv__V1__TokenLogprob ***ptrs_p)
{
    *lps_p = NULL;
    *ptrs_p = NULL;
    if (r->out_samples == NULL || r->n_out == 0) {
        return SKV_STATUS_OK;
    }
    skv_chunk_lp_t *lps = skv_mallocn((size_t)r->n_out, sizeof(*lps));
    Skv__V1__TokenLogprob **ptrs = skv_mallocn((size_t)r->n_out, sizeof(*ptrs));
    if (lps == NULL || ptrs == NULL) {
        skv_free(lps);
        skv_free(ptrs);
        return SKV_STATUS_NO_MEMORY;
    }
    for (int32_t i = 0; i < r->n_out; i++) {
        skv_worker_fill_logprob(&r->out_samples[i], &lps[i].lp, lps[i].tops, lps[i].top_ptrs);
        ptrs[i] = &lps[i].lp;
    }
    c->n_logprobs = (size_t)r->n_out;
    c->logprobs = ptrs;
    *lps_p = lps;
    *ptrs_p = ptrs;
    return SKV_STATUS_OK;
}

/* Finishes the call with the last chunk (tokens still in the outbox go with it). */
static void skv_worker_stream_end(skv_worker_t *w, skv_wreq_t *r, Skv__V1__DecodeChunk *c,
                                  int64_t now)
{
    Skv__V1__Timings t;
    skv_worker_fill_timings(r, now, &t);
    c->finish_reason = skv_worker_finish_reason(w, r);
    c->finish_detail = (char *)(r->finish_detail ? r->finish_detail : "");
    c->timings = &t;
    skv_status_t st = r->finish_status;
    if (st == SKV_STATUS_OK || st == SKV_STATUS_CANCELLED) {
        skv_grpc_call_finish_msg(r->call, &c->base, st, r->finish_detail);
    } else {
        skv_grpc_call_finish(r->call, st, r->finish_detail);
    }
    skv_worker_retire(w, r);
}

void skv_worker_stream_flush(skv_worker_t *w, skv_wreq_t *r)
{
    if (r->call == NULL || (r->n_out == 0 && !r->finish_ready)) {
        return;
    }
    int64_t now = skv_clock_now_ns();
    Skv__V1__DecodeChunk c = SKV__V1__DECODE_CHUNK__INIT;
    c.request_id = (char *)r->request_id;
    c.n_token_ids = (size_t)r->n_out;
    c.token_ids = r->out_tokens;
    c.completion_tokens = (uint32_t)(r->n_sent + r->n_out);
    c.elapsed_us = skv_us(r->received_ns, now);
    skv_chunk_lp_t *lps = NULL;
    Skv__V1__TokenLogprob **ptrs = NULL;
    if (skv_worker_chunk_logprobs(r, &c, &lps, &ptrs) != SKV_STATUS_OK) {
        r->finish_ready = 1;
        r->finish = SKV_FINISH_ERROR;
        r->finish_status = SKV_STATUS_NO_MEMORY;
        r->finish_detail = "no memory for the answer";
    }
    if (r->finish_ready) {
        skv_worker_stream_end(w, r, &c, now);
    } else if (skv_grpc_call_write(r->call, &c.base) == SKV_STATUS_OK) {
        r->n_sent += r->n_out;
        r->n_out = 0;
    } /* BUSY: kept for the next flush; CANCELLED: the watcher cancels the request */
    skv_free(lps);
    skv_free(ptrs);
}

void skv_worker_stream_fail(skv_worker_t *w, skv_wreq_t *r, skv_status_t st, const char *why)
{
    skv_grpc_call_finish(r->call, st, why);
    skv_worker_retire(w, r);
}

skv_status_t skv_worker_stop_from_msg(const skv_worker_t *w, const Skv__V1__StopCriteria *m,
                                      int32_t n_prompt, skv_request_desc_t *d, const char **why)
{
    int32_t ctx = skv_model_max_context(w->model);
    if (n_prompt >= ctx) {
        *why = "the prompt fills the model's context";
        return SKV_STATUS_OUT_OF_RANGE;
    }
    d->max_tokens = ctx - n_prompt;
    if (m == NULL) {
        return SKV_STATUS_OK;
    }
    if (m->max_tokens > 0) {
        if (!skv_request_fits_context(n_prompt, m->max_tokens, ctx)) {
            *why = "prompt tokens + max_tokens exceed the model's context length";
            return SKV_STATUS_OUT_OF_RANGE;
        }
        d->max_tokens = (int32_t)m->max_tokens;
    }
    if (m->n_stop_token_ids > SKV_ENGINE_MAX_STOP_IDS) {
        *why = "too many stop_token_ids (SKV_MAX_STOP_TOKEN_IDS, common/request_limits.h)";
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    int32_t vocab = skv_model_config(w->model)->vocab_size;
    for (size_t i = 0; i < m->n_stop_token_ids; i++) {
        if (m->stop_token_ids[i] < 0 || m->stop_token_ids[i] >= vocab) {
            *why = "a stop_token_id is outside the vocabulary";
            return SKV_STATUS_INVALID_ARGUMENT;
        }
        d->stop_ids[i] = m->stop_token_ids[i];
    }
    d->n_stop_ids = (int32_t)m->n_stop_token_ids;
    d->ignore_eos = m->ignore_eos;
    d->min_tokens = (int32_t)(m->min_tokens < (uint32_t)d->max_tokens ? m->min_tokens
                                                                      : (uint32_t)d->max_tokens);
    return SKV_STATUS_OK;
}

skv_status_t skv_worker_stream_submit(skv_worker_t *w, skv_wreq_t *r, skv_request_desc_t *d,
                                      const char **why)
{
    d->id = r->id;
    d->cbs = skv_worker_stream_cbs;
    d->cbs.ctx = r;
    r->want_logprobs = d->sampling.n_logprobs > 0;
    SKV_CHECK(skv_engine_submit(w->engine, d, why));
    r->in_engine = 1;
    __atomic_add_fetch(&w->n_requests_total, 1, __ATOMIC_RELAXED);
    return SKV_STATUS_OK;
}

void skv_worker_start_generate(skv_worker_t *w, skv_wreq_t *r)
{
    const Skv__V1__WorkerGenerateRequest *q = (const Skv__V1__WorkerGenerateRequest *)r->msg;
    skv_request_desc_t d;
    memset(&d, 0, sizeof(d));
    const char *why = "invalid request";
    d.prompt = q->token_ids;
    d.n_prompt = (int32_t)q->n_token_ids;
    skv_status_t st = q->n_token_ids == 0 ? SKV_STATUS_INVALID_ARGUMENT : SKV_STATUS_OK;
    why = q->n_token_ids == 0 ? "token_ids is empty" : why;
    if (st == SKV_STATUS_OK) {
        st = skv_worker_sampling_from_msg(w, q->sampling, q->logprobs, &d.sampling, &why);
    }
    if (st == SKV_STATUS_OK) {
        st = skv_worker_stop_from_msg(w, q->stop, d.n_prompt, &d, &why);
    }
    if (st == SKV_STATUS_OK) {
        st = skv_worker_stream_submit(w, r, &d, &why);
    }
    if (st != SKV_STATUS_OK) {
        skv_worker_stream_fail(w, r, st, why);
    }
}
