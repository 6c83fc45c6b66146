/*
 * engine.h: the batching engine of a worker: continuous batching over one model and one KV
 * pool, with chunked prefill, preemption, and per-request sampling and stop conditions.
 *
 * One formulation covers every role: a request is a token array (prompt, then generated
 * tokens) and a count n_ctx of those whose KV is in the cache. Each step a request feeds
 * tokens[n_ctx..n_total) (or a chunk of them within the token budget) and asks for logits when
 * its chunk reaches n_total. A decode request feeds one token; a prefill feeds chunks; a
 * request preempted when the pool is full drops its KV (n_ctx = 0) and is recomputed later.
 *   - prefill worker: requests with prefill_only finish after their first token and hand the
 *     KV blocks to the caller (who pushes them to a decode worker and releases them);
 *   - decode worker: requests arrive with their prompt's KV already in the pool (n_cached)
 *     and the first token sampled elsewhere;
 *   - both roles in one process: plain requests.
 *
 * Scheduling per step: running decode requests first (oldest first), then prefill chunks in
 * arrival order (FCFS; a long prompt is chunked, later prompts wait behind it but decode never
 * starves). When a decode request cannot grow, the youngest running request is preempted
 * (recompute later), so the oldest always progresses: no deadlock. A request that could never
 * fit the pool fails with BUSY (RESOURCE_EXHAUSTED). The waiting queue is bounded: submit
 * answers BUSY beyond it (backpressure the router sees).
 *
 * Token selection per step: when every request that gets logits in the step samples without
 * penalties, min-p or logprobs (skv_sampler_row_ok) and the model can pick on its backend,
 * the step picks there (skv_model_forward_sample: no logits to the host); otherwise the whole
 * step copies logits out and runs each request's host sampler. Both give the same tokens: the
 * backend pick takes u from the request's RNG as the host sampler would.
 *
 * Threading: submit, cancel and stats may be called from any thread. Steps run on one engine
 * thread (skv_engine_start) or by the caller (skv_engine_step, for tests). Callbacks run on
 * the stepping thread and must not block.
 */
#ifndef SKV_COMMON_ENGINE_H
#define SKV_COMMON_ENGINE_H

#include <stdint.h>

#include "common/model/kv_pool.h"
#include "common/model/model.h"
#include "common/model/sampler.h"

#define SKV_ENGINE_MAX_STOP_IDS SKV_MAX_STOP_TOKEN_IDS

typedef enum {
    SKV_FINISH_STOP = 0,  /* an end-of-sequence or stop token */
    SKV_FINISH_LENGTH,    /* max_tokens or the context limit */
    SKV_FINISH_CANCELLED, /* skv_engine_cancel */
    SKV_FINISH_ERROR,     /* see the result's status */
    SKV_FINISH_PREFILLED, /* prefill_only request: first token ready, KV handed over */
} skv_finish_t;

/* Per-request timings, nanoseconds on the skv_clock (0 = did not happen). */
typedef struct {
    int64_t submitted;
    int64_t first_scheduled;
    int64_t first_token;
    int64_t last_token;
    int64_t finished;
    int32_t n_preemptions;
} skv_request_timing_t;

typedef struct {
    skv_finish_t finish;
    skv_status_t status;      /* OK unless finish == ERROR */
    int32_t n_prompt;
    int32_t n_generated;
    skv_request_timing_t timing;
    int32_t first_token;      /* PREFILLED: the sampled first token */
    skv_kv_seq_t *kv;         /* PREFILLED: the prompt's blocks; the callback takes them
                               * (copy the struct, then reset *kv to {0}); else NULL */
} skv_request_result_t;

typedef struct {
    /* Called for every generated token (index 0 = first), also for the first token of a
     * prefill_only request (before its on_finish). sample->logprob and the top list are
     * filled when the request asked for logprobs (n_logprobs > 0); otherwise the token may
     * have been picked on the backend and they are 0. */
    void (*on_token)(void *ctx, uint64_t id, const skv_sample_t *sample, int32_t index);
    /* Called exactly once per accepted request, last. */
    void (*on_finish)(void *ctx, uint64_t id, const skv_request_result_t *result);
    void *ctx;
} skv_request_cbs_t;

typedef struct {
    uint64_t id;
    const int32_t *prompt; /* copied */
    int32_t n_prompt;
    int32_t max_tokens;
    skv_sampling_params_t sampling;
    int32_t stop_ids[SKV_ENGINE_MAX_STOP_IDS];
    int32_t n_stop_ids;
    int ignore_eos;
    int32_t min_tokens;  /* EOS and stop ids do not end the request before this many tokens */
    int prefill_only;
    /* Decode-side admission of transferred KV: the first n_cached prompt tokens are in kv
     * (ownership moves to the engine on success) and first_token (>= 0) was sampled by the
     * prefill worker; generation continues after it. */
    int32_t n_cached;
    skv_kv_seq_t kv;
    int32_t first_token;
    skv_request_cbs_t cbs;
} skv_request_desc_t;

typedef struct {
    int32_t max_waiting; /* queued requests beyond which submit answers BUSY */
    int host_sampling;   /* 1: always pick tokens on the host (A/B runs; the workers' main
                          * sets it from SKV_HOST_SAMPLING) */
} skv_engine_opts_t;

typedef struct {
    int32_t n_waiting;
    int32_t n_running;
    int64_t kv_free_blocks;
    int64_t kv_total_blocks;
    int64_t n_finished;
    int64_t n_preemptions;
    int64_t n_steps;
    int64_t n_backend_sampled; /* steps whose tokens were picked on the backend */
} skv_engine_stats_t;

typedef struct skv_engine skv_engine_t;

/* Creates an engine over model and pool (borrowed; they outlive it). */
skv_status_t skv_engine_create(skv_model_t *model, skv_kv_pool_t *pool,
                               const skv_engine_opts_t *opts, skv_engine_t **eng_p);

/* Stops the engine thread if running, finishes every remaining request as CANCELLED (their
 * callbacks run), releases their KV and frees the engine. */
void skv_engine_destroy(skv_engine_t *eng);

/* Queues a request. INVALID_ARGUMENT for bad sampling/tokens (message in *why, static),
 * OUT_OF_RANGE when prompt + max_tokens exceeds the context, BUSY when the waiting queue is
 * full or the request could never fit the pool. On success the callbacks will run; on error
 * they will not and desc->kv stays with the caller. Any thread. */
skv_status_t skv_engine_submit(skv_engine_t *eng, const skv_request_desc_t *desc,
                               const char **why);

/* Asks for request id to finish as CANCELLED at the next step (KV released); an id that is
 * unknown or already finished is ignored. NO_MEMORY when the cancel cannot be queued.
 * Any thread. */
skv_status_t skv_engine_cancel(skv_engine_t *eng, uint64_t id);

/* Runs one scheduling step. AGAIN when there was nothing to do. Stepping thread only. */
skv_status_t skv_engine_step(skv_engine_t *eng);

/* Starts / stops a thread that steps whenever there is work. */
skv_status_t skv_engine_start(skv_engine_t *eng);
void skv_engine_stop(skv_engine_t *eng);

/* A consistent snapshot of the counters. Any thread. */
void skv_engine_stats(skv_engine_t *eng, skv_engine_stats_t *stats);

#endif /* SKV_COMMON_ENGINE_H */
