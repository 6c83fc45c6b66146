/*
 * router_drive.c: one driver thread per public Generate call.
 *
 * A driver validates and tokenizes the request, picks a decode worker D by least outstanding
 * work and then either
 *   - disaggregated (prefill workers configured, prompt >= disagg_min_tokens):
 *     D.Reserve -> P.Prefill (first token streamed to the client at once) -> D.Decode stream;
 *     a prefill that fails UNAVAILABLE (P down) or FAILED_PRECONDITION (layout mismatch)
 *     releases the reservation and falls back to D.Generate;
 *   - or Worker.Generate on D.
 * Token chunks are relayed with incremental detokenization and stop strings (router_text.h).
 * Every worker call names the client call as parent, so the client's deadline and cancel flow
 * on; a stop-string match cancels the worker stream (which frees D's KV). A reservation whose
 * Decode never started is released explicitly. A worker that answers UNAVAILABLE before any
 * token reached the client is backed off and the request retried on another D.
 * Owns: the driver state below, its endpoint holds and the worker streams it opens; finishes
 * the client call exactly once.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "router/router_calls.h"
#include "router/router_internal.h"
#include "router/router_text.h"

#define SKV_ROUTER_MAX_ATTEMPTS           3
#define SKV_GRPC_CODE_FAILED_PRECONDITION 9

typedef struct {
    skv_router_t *r;
    skv_grpc_call_t *call;
    const Skv__V1__GenerateRequest *req; /* owned by the call until finish */
    char id[48];                         /* internal request id */
    const char *client_id;               /* echoed in every chunk */
    skv_router_prompt_t prompt;
    skv_router_text_t text;
    skv_router_call_ctx_t ctx;
    int64_t t0_ns;       /* arrival */
    int64_t deadline_ns; /* client deadline or request_timeout_ms, the earlier */
    int64_t t_first_ns;  /* first token sent; 0 before */
    uint32_t n_tokens;   /* generated tokens relayed */
    int sent;            /* a token went to the client: no retry from here on */
    int finished;        /* the client call was finished */
    Skv__V1__Timings timings;
    skv_router_endpoint_t *d; /* held decode worker (work d_work) */
    int64_t d_work;
    char msg[320];
} skv_router_drive_t;

/* Finishes the client call with an error (once). */
static void skv_router_fail(skv_router_drive_t *d, skv_status_t st)
{
    if (!d->finished) {
        d->finished = 1;
        skv_grpc_call_finish(d->call, st, d->msg[0] ? d->msg : skv_status_str(st));
    }
}

/* Milliseconds left before the request deadline (at least 1). */
static int64_t skv_router_left_ms(const skv_router_drive_t *d)
{
    int64_t left = (d->deadline_ns - skv_clock_now_ns()) / 1000000;
    return left > 0 ? left : 1;
}

/* Options for a worker call: parent = the client call, timeout = min(cap_ms, time left). */
static skv_grpc_call_opts_t skv_router_opts(const skv_router_drive_t *d, int64_t cap_ms)
{
    int64_t left = skv_router_left_ms(d);
    skv_grpc_call_opts_t o = {.timeout_ms = cap_ms > 0 && cap_ms < left ? cap_ms : left,
                              .parent = d->call};
    return o;
}

/* Records a worker error into d->msg and returns its status (gRPC code passed through). */
static skv_status_t skv_router_worker_error(skv_router_drive_t *d, const char *what,
                                            skv_router_endpoint_t *ep, skv_status_t st,
                                            const skv_grpc_error_t *err)
{
    snprintf(d->msg, sizeof(d->msg), "%s on %s: %s", what, skv_router_endpoint_addr(ep),
             err->message[0] ? err->message : skv_status_str(st));
    if (st == SKV_STATUS_UNAVAILABLE && !skv_grpc_call_cancelled(d->call)) {
        skv_router_workers_backoff(d->r->workers, ep);
    }
    return st;
}

/* Queues a chunk for the client; waits (bounded by the deadline) while the queue is full. */
static skv_status_t skv_router_send(skv_router_drive_t *d, const Skv__V1__GenerateChunk *c)
{
    for (;;) {
        skv_status_t st = skv_grpc_call_write(d->call, &c->base);
        if (st != SKV_STATUS_BUSY) {
            return st;
        }
        if (skv_clock_expired(d->deadline_ns)) {
            snprintf(d->msg, sizeof(d->msg), "client did not read its stream before the deadline");
            return SKV_STATUS_TIMEOUT;
        }
        usleep(1000); /* the client reads slower than the worker writes: backpressure */
    }
}

/* Adds worker timings (the parts each side measured) into the request's. */
static void skv_router_add_timings(skv_router_drive_t *d, const Skv__V1__Timings *t)
{
    if (t == NULL) {
        return;
    }
    d->timings.queue_us += t->queue_us;
    d->timings.prefill_us += t->prefill_us;
    d->timings.transfer_us += t->transfer_us;
    d->timings.decode_us += t->decode_us;
    d->timings.inter_token_mean_us = t->inter_token_mean_us;
    d->timings.inter_token_max_us = t->inter_token_max_us;
}

/* A batch of generated tokens as the worker sent them. */
typedef struct {
    const int32_t *ids;
    size_t n;
    Skv__V1__TokenLogprob **lps;  /* one per id, or NULL */
    Skv__V1__FinishReason reason; /* UNSPECIFIED: more follow */
    const char *detail;
} skv_router_batch_t;

/* Runs the tokens through the text pipeline; cuts the batch at a stop-string match. */
static skv_status_t skv_router_batch_text(skv_router_drive_t *d, skv_router_batch_t *b)
{
    for (size_t i = 0; i < b->n; i++) {
        int stopped = 0;
        SKV_CHECK(skv_router_text_push(&d->text, b->ids[i], &stopped));
        d->n_tokens++;
        if (stopped) {
            b->n = i + 1;
            b->reason = SKV__V1__FINISH_REASON__FINISH_REASON_STOP;
            b->detail = skv_router_text_stop_matched(&d->text);
            return SKV_STATUS_OK;
        }
    }
    if (b->reason != SKV__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) {
        SKV_CHECK(skv_router_text_finish(&d->text));
    }
    return SKV_STATUS_OK;
}

/* Relays one batch to the client: a plain chunk, or the last chunk (usage, timings) that
 * finishes the call. *final_p tells which. */
static skv_status_t skv_router_emit(skv_router_drive_t *d, skv_router_batch_t *b, int *final_p)
{
    Skv__V1__GenerateChunk c = SKV__V1__GENERATE_CHUNK__INIT;
    Skv__V1__Usage usage = SKV__V1__USAGE__INIT;
    skv_status_t st = skv_router_batch_text(d, b);
    if (st != SKV_STATUS_OK) {
        snprintf(d->msg, sizeof(d->msg), "router: no memory for the text of the stream");
        return st;
    }
    int64_t now = skv_clock_now_ns();
    c.request_id = (char *)d->client_id;
    c.token_ids = (int32_t *)b->ids;
    c.n_token_ids = b->n;
    c.logprobs = b->lps;
    c.n_logprobs = b->lps != NULL ? b->n : 0;
    c.text = (char *)skv_router_text_take(&d->text);
    c.elapsed_us = (uint64_t)(now - d->t0_ns) / 1000;
    if (b->n > 0 && d->t_first_ns == 0) {
        d->t_first_ns = now;
    }
    *final_p = b->reason != SKV__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED;
    if (!*final_p) {
        d->sent |= b->n > 0;
        return c.n_token_ids > 0 || c.text[0] != '\0' ? skv_router_send(d, &c) : SKV_STATUS_OK;
    }
    usage.prompt_tokens = (uint32_t)d->prompt.n_ids;
    usage.completion_tokens = d->n_tokens;
    d->timings.ttft_us = d->t_first_ns ? (uint64_t)(d->t_first_ns - d->t0_ns) / 1000 : 0;
    d->timings.total_us = c.elapsed_us;
    c.finish_reason = b->reason;
    c.finish_detail = (char *)(b->detail != NULL ? b->detail : "");
    c.usage = &usage;
    c.timings = &d->timings;
    d->finished = 1;
    skv_grpc_call_finish_msg(d->call, &c.base, SKV_STATUS_OK, NULL);
    return SKV_STATUS_OK;
}

/* Reads a worker stream to its end and relays it. Returns OK once the call is finished (last
 * chunk sent, or the stream was cancelled after a stop-string match); otherwise the error
 * (d->msg set) and *got_p tells whether any chunk came from this stream. */
static skv_status_t skv_router_relay(skv_router_drive_t *d, skv_router_endpoint_t *ep,
                                     skv_grpc_stream_t *s, const char *what, int *got_p)
{
    *got_p = 0;
    for (;;) {
        ProtobufCMessage *m = NULL;
        skv_grpc_error_t err = {0};
        skv_status_t st = skv_grpc_stream_read(s, &m, &err);
        if (st != SKV_STATUS_OK) {
            return skv_router_worker_error(d, what, ep, st, &err);
        }
        if (m == NULL) {
            snprintf(d->msg, sizeof(d->msg), "%s on %s ended without a finish reason", what,
                     skv_router_endpoint_addr(ep));
            return SKV_STATUS_INTERNAL;
        }
        const Skv__V1__DecodeChunk *dc = (const Skv__V1__DecodeChunk *)m;
        skv_router_batch_t b = {dc->token_ids, dc->n_token_ids,
                                dc->n_logprobs == dc->n_token_ids ? dc->logprobs : NULL,
                                dc->finish_reason, dc->finish_detail};
        int final = 0;
        *got_p = 1;
        if (dc->finish_reason != SKV__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) {
            skv_router_add_timings(d, dc->timings);
        }
        st = skv_router_emit(d, &b, &final);
        protobuf_c_message_free_unpacked(m, NULL);
        if (st != SKV_STATUS_OK || final) {
            return st; /* a stop match cancels the stream when the caller destroys it */
        }
    }
}

/* Moves the request to another decode worker than the held (failed) one. Returns non-zero
 * when it did; zero when D is the only one (the hold is unchanged). */
static int skv_router_switch_decode(skv_router_drive_t *d)
{
    skv_router_endpoint_t *next = NULL;
    if (skv_router_workers_acquire(d->r->workers, SKV_ROUTER_ROLE_DECODE, d->d_work, d->d, &next) !=
        SKV_STATUS_OK) {
        return 0;
    }
    if (next == d->d) {
        skv_router_workers_release(d->r->workers, next, d->d_work);
        return 0;
    }
    skv_router_workers_release(d->r->workers, d->d, d->d_work);
    d->d = next;
    d->msg[0] = '\0';
    return 1;
}

/* Worker.Generate on the held D, retried on another D while D is down and nothing was sent. */
static skv_status_t skv_router_run_generate(skv_router_drive_t *d)
{
    for (int attempt = 0;; attempt++) {
        skv_grpc_stream_t *s = NULL;
        skv_grpc_call_opts_t o = skv_router_opts(d, 0);
        int got = 0;
        skv_status_t st = skv_router_open_generate(d->d, &d->ctx, &o, &s);
        if (st == SKV_STATUS_OK) {
            st = skv_router_relay(d, d->d, s, "Worker.Generate", &got);
        }
        skv_grpc_stream_destroy(s);
        if (st != SKV_STATUS_UNAVAILABLE || got || d->sent ||
            attempt + 1 >= SKV_ROUTER_MAX_ATTEMPTS || skv_grpc_call_cancelled(d->call)) {
            return st;
        }
        if (!skv_router_switch_decode(d)) {
            return st;
        }
    }
}

/* Decides whether the first token (sampled by P) already ends the request. */
static Skv__V1__FinishReason skv_router_first_reason(const skv_router_drive_t *d, int32_t tok)
{
    const Skv__V1__StopCriteria *s = d->req->stop;
    uint32_t min_tokens = s != NULL ? s->min_tokens : 0;
    if (min_tokens < 1) {
        for (size_t i = 0; s != NULL && i < s->n_stop_token_ids; i++) {
            if (s->stop_token_ids[i] == tok) {
                return SKV__V1__FINISH_REASON__FINISH_REASON_STOP;
            }
        }
        for (size_t i = 0; (s == NULL || !s->ignore_eos) && i < d->r->model.n_eos; i++) {
            if (d->r->model.eos_ids[i] == tok) {
                return SKV__V1__FINISH_REASON__FINISH_REASON_STOP;
            }
        }
    }
    return d->prompt.max_tokens <= 1 ? SKV__V1__FINISH_REASON__FINISH_REASON_LENGTH
                                     : SKV__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED;
}

/* Reserve on D, retried on another D while D is down. On OK *resp_p is the reservation. */
static skv_status_t skv_router_reserve(skv_router_drive_t *d, Skv__V1__ReserveResponse **resp_p)
{
    for (int attempt = 0;; attempt++) {
        skv_grpc_call_opts_t o = skv_router_opts(d, d->r->config.rpc_timeout_ms);
        skv_grpc_error_t err = {0};
        skv_status_t st =
            skv_router_call_reserve(d->d, &d->ctx, d->r->config.lease_ms, &o, resp_p, &err);
        if (st == SKV_STATUS_OK) {
            return (*resp_p)->target != NULL ? SKV_STATUS_OK : SKV_STATUS_INTERNAL;
        }
        skv_router_worker_error(d, "Decode.Reserve", d->d, st, &err);
        if (st != SKV_STATUS_UNAVAILABLE || attempt + 1 >= SKV_ROUTER_MAX_ATTEMPTS ||
            skv_grpc_call_cancelled(d->call) || !skv_router_switch_decode(d)) {
            return st;
        }
    }
}

/* Prefill on a least-loaded P into the reservation's target. */
static skv_status_t skv_router_prefill(skv_router_drive_t *d, Skv__V1__TransferTarget *target,
                                       Skv__V1__PrefillResponse **resp_p, int *grpc_code_p)
{
    skv_router_endpoint_t *p = NULL;
    int64_t work = (int64_t)d->prompt.n_ids;
    skv_grpc_error_t err = {0};
    *grpc_code_p = 14; /* UNAVAILABLE: no prefill worker at all */
    if (skv_router_workers_acquire(d->r->workers, SKV_ROUTER_ROLE_PREFILL, work, NULL, &p) !=
        SKV_STATUS_OK) {
        snprintf(d->msg, sizeof(d->msg), "no prefill worker");
        return SKV_STATUS_UNAVAILABLE;
    }
    skv_grpc_call_opts_t o = skv_router_opts(d, 0);
    skv_status_t st = skv_router_call_prefill(p, &d->ctx, target, &o, resp_p, &err);
    if (st != SKV_STATUS_OK) {
        *grpc_code_p = err.grpc_code;
        skv_router_worker_error(d, "Prefill.Prefill", p, st, &err);
    }
    skv_router_workers_release(d->r->workers, p, work);
    return st;
}

/* After a successful prefill: first token to the client, then the Decode stream. */
static skv_status_t skv_router_decode(skv_router_drive_t *d, Skv__V1__PrefillResponse *pr)
{
    int32_t first = pr->first_token;
    skv_router_batch_t b = {&first, 1, pr->first_logprob != NULL ? &pr->first_logprob : NULL,
                            skv_router_first_reason(d, first), ""};
    int final = 0, got = 0;
    skv_router_add_timings(d, pr->timings);
    skv_status_t st = skv_router_emit(d, &b, &final);
    if (st != SKV_STATUS_OK || final) {
        skv_router_call_release(d->d, d->id, d->r->config.rpc_timeout_ms);
        return st;
    }
    skv_grpc_stream_t *s = NULL;
    skv_grpc_call_opts_t o = skv_router_opts(d, 0);
    st = skv_router_open_decode(d->d, &d->ctx, first, pr->first_logprob, &o, &s);
    if (st == SKV_STATUS_OK) {
        st = skv_router_relay(d, d->d, s, "Decode.Decode", &got);
    }
    skv_grpc_stream_destroy(s);
    if (st != SKV_STATUS_OK && !got) { /* Decode may never have reached D */
        skv_router_call_release(d->d, d->id, d->r->config.rpc_timeout_ms);
    }
    return st;
}

/* A call that ended by the client's cancel or deadline may have left a reservation on D that
 * the router never heard of (Reserve answered after the call ended) or never handed to a
 * Decode: release it now (by request id; a reservation a Decode holds is not touched) rather
 * than leave its blocks to the lease. */
static void skv_router_release_if_ended(skv_router_drive_t *d, skv_status_t st)
{
    if (st == SKV_STATUS_CANCELLED || st == SKV_STATUS_TIMEOUT || skv_grpc_call_cancelled(d->call)) {
        skv_router_call_release(d->d, d->id, d->r->config.rpc_timeout_ms);
    }
}

/* Reserve -> Prefill -> Decode, with the fallback to Worker.Generate on D. */
static skv_status_t skv_router_run_disagg(skv_router_drive_t *d)
{
    Skv__V1__ReserveResponse *rr = NULL;
    Skv__V1__PrefillResponse *pr = NULL;
    int code = 0;
    skv_status_t st = skv_router_reserve(d, &rr);
    if (st != SKV_STATUS_OK) {
        skv_router_release_if_ended(d, st);
        goto out;
    }
    st = skv_router_prefill(d, rr->target, &pr, &code);
    if (st == SKV_STATUS_OK) {
        st = skv_router_decode(d, pr);
        if (st != SKV_STATUS_OK) {
            skv_router_release_if_ended(d, st);
        }
        goto out;
    }
    skv_router_call_release(d->d, d->id, d->r->config.rpc_timeout_ms);
    if ((code == 14 || code == SKV_GRPC_CODE_FAILED_PRECONDITION) &&
        !skv_grpc_call_cancelled(d->call)) {
        SKV_LOG_WARN("router: %s: %s; decoding it on %s alone", d->id, d->msg,
                     skv_router_endpoint_addr(d->d));
        d->msg[0] = '\0';
        st = skv_router_run_generate(d);
    }
out:
    if (rr != NULL) {
        protobuf_c_message_free_unpacked(&rr->base, NULL);
    }
    if (pr != NULL) {
        protobuf_c_message_free_unpacked(&pr->base, NULL);
    }
    return st;
}

/* Validates the request, prepares its text pipeline and picks its decode worker. */
static skv_status_t skv_router_prepare(skv_router_drive_t *d)
{
    const Skv__V1__StopCriteria *s = d->req->stop;
    SKV_CHECK(skv_router_validate_request(d->req, d->r->tok, &d->r->model, &d->prompt, d->msg,
                                          sizeof(d->msg)));
    skv_status_t st = skv_router_text_init(&d->text, d->r->tok, d->req->skip_special_tokens,
                                           s != NULL ? (const char *const *)s->stop : NULL,
                                           s != NULL ? s->n_stop : 0, d->req->include_stop_string,
                                           s != NULL ? s->min_tokens : 0);
    if (st != SKV_STATUS_OK) {
        snprintf(d->msg, sizeof(d->msg), "stop strings: %s", skv_status_str(st));
        return st;
    }
    d->ctx = (skv_router_call_ctx_t){d->id, d->req, &d->prompt};
    d->d_work = (int64_t)d->prompt.n_ids + d->prompt.max_tokens;
    if (skv_router_workers_acquire(d->r->workers, SKV_ROUTER_ROLE_DECODE, d->d_work, NULL, &d->d) !=
        SKV_STATUS_OK) {
        snprintf(d->msg, sizeof(d->msg), "no decode worker is configured or resolved");
        return SKV_STATUS_UNAVAILABLE;
    }
    return SKV_STATUS_OK;
}

/* Returns non-zero when the request takes the disaggregated path. */
static int skv_router_use_disagg(const skv_router_drive_t *d)
{
    return skv_router_workers_count(d->r->workers, SKV_ROUTER_ROLE_PREFILL) > 0 &&
           d->prompt.n_ids >= d->r->config.disagg_min_tokens;
}

static void *skv_router_drive_main(void *arg)
{
    skv_router_drive_t *d = arg;
    skv_router_t *r = d->r;
    skv_status_t st = skv_router_prepare(d);
    if (st == SKV_STATUS_OK) {
        st = skv_router_use_disagg(d) ? skv_router_run_disagg(d) : skv_router_run_generate(d);
    }
    if (st != SKV_STATUS_OK) {
        SKV_LOG_DEBUG("router: %s failed: %s: %s", d->id, skv_status_str(st), d->msg);
    }
    skv_router_fail(d, st); /* no-op when the last chunk already finished the call */
    if (d->d != NULL) {
        skv_router_workers_release(r->workers, d->d, d->d_work);
    }
    __atomic_add_fetch(&r->tokens_total, d->n_tokens, __ATOMIC_RELAXED);
    skv_router_text_cleanup(&d->text);
    skv_free(d->prompt.ids);
    skv_free(d);
    __atomic_sub_fetch(&r->inflight, 1, __ATOMIC_SEQ_CST);
    skv_router_job_done(r);
    return NULL;
}

/* Deadline of the request: the client's, bounded by request_timeout_ms. */
static int64_t skv_router_deadline(const skv_router_t *r, skv_grpc_call_t *call, int64_t t0)
{
    int64_t own = t0 + r->config.request_timeout_ms * 1000000;
    int64_t client = skv_grpc_call_deadline_ns(call);
    return client < own ? client : own;
}

void skv_router_generate(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    skv_router_t *r = user;
    __atomic_add_fetch(&r->requests_total, 1, __ATOMIC_RELAXED);
    if (__atomic_add_fetch(&r->inflight, 1, __ATOMIC_SEQ_CST) > r->config.max_inflight) {
        __atomic_sub_fetch(&r->inflight, 1, __ATOMIC_SEQ_CST);
        char msg[96];
        snprintf(msg, sizeof(msg), "router: %d requests in flight (--max-inflight)",
                 r->config.max_inflight);
        skv_grpc_call_finish(call, SKV_STATUS_BUSY, msg);
        return;
    }
    skv_router_drive_t *d = skv_calloc(1, sizeof(*d));
    if (d == NULL) {
        __atomic_sub_fetch(&r->inflight, 1, __ATOMIC_SEQ_CST);
        skv_grpc_call_finish(call, SKV_STATUS_NO_MEMORY, "router: no memory");
        return;
    }
    d->r = r;
    d->call = call;
    d->req = (const Skv__V1__GenerateRequest *)request;
    skv__v1__timings__init(&d->timings);
    d->t0_ns = skv_clock_now_ns();
    d->deadline_ns = skv_router_deadline(r, call, d->t0_ns);
    skv_router_next_id(r, d->id, sizeof(d->id));
    d->client_id = d->req->request_id[0] != '\0' ? d->req->request_id : d->id;
    if (skv_router_spawn(r, skv_router_drive_main, d) != SKV_STATUS_OK) {
        __atomic_sub_fetch(&r->inflight, 1, __ATOMIC_SEQ_CST);
        skv_free(d);
        skv_grpc_call_finish(call, SKV_STATUS_NO_MEMORY, "router: no thread for the request");
    }
}
