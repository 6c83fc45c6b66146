/*
 * engine.c: continuous batching (see engine.h for the model of a request and the policy).
 *
 * Data: `inbox` (new requests, guarded by lock) and `active` (accepted requests in arrival
 * order, owned by the stepping thread). Cancels are ids queued under the lock and applied at
 * the start of a step, so a request's memory is only ever touched by the stepping thread.
 */
#include "common/model/engine.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"

typedef struct skv_req {
    struct skv_req *next; /* inbox link */
    skv_request_desc_t d; /* d.prompt is not used after submit */
    uint64_t seqno;       /* arrival order */
    int32_t *tokens;      /* prompt, then generated tokens */
    int32_t n_total;
    int32_t n_ctx;        /* tokens whose KV is in the cache */
    int32_t n_generated;
    skv_kv_seq_t kv;
    skv_sampler_t *sampler;
    skv_request_timing_t timing;
    int32_t step_chunk;   /* tokens fed this step (0 = not in the batch) */
    skv_status_t failed;  /* set when the request must end with ERROR */
} skv_req_t;

struct skv_engine {
    skv_model_t *model;
    skv_kv_pool_t *pool;
    skv_engine_opts_t opts;
    int32_t vocab, max_ctx, max_seqs, budget, block_size;

    pthread_mutex_t lock; /* guards everything up to `active` */
    pthread_cond_t cond;
    skv_req_t *inbox_head, *inbox_tail;
    int32_t n_inbox;
    uint64_t *cancels;
    int32_t n_cancels, cap_cancels;
    uint64_t next_seqno;
    skv_engine_stats_t stats;
    int stop;
    int thread_running;
    pthread_t thread;

    skv_req_t **active; /* stepping thread only */
    int32_t n_active, cap_active;
    skv_seq_step_t *steps;
    skv_req_t **batch;
    float *logits;          /* [max_seqs, vocab] host logits (host sampling) */
    int backend_sampling;   /* the model picks on its backend and the options allow it */
    skv_sample_row_t *rows; /* [max_seqs] sampling rows of a backend-sampled step */
    int32_t *picked;        /* [max_seqs] its tokens */
};

static void skv_req_free(skv_req_t *r)
{
    skv_sampler_destroy(r->sampler);
    skv_free(r->tokens);
    skv_free(r);
}

skv_status_t skv_engine_create(skv_model_t *model, skv_kv_pool_t *pool,
                               const skv_engine_opts_t *opts, skv_engine_t **eng_p)
{
    skv_engine_t *e = skv_calloc(1, sizeof(*e));
    if (e == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    const skv_model_config_t *cfg = skv_model_config(model);
    e->model = model;
    e->pool = pool;
    e->opts = *opts;
    e->vocab = cfg->vocab_size;
    e->max_ctx = skv_model_max_context(model);
    e->block_size = skv_kv_pool_layout(pool)->block_size;
    e->max_seqs = skv_model_max_seqs(model);
    e->budget = skv_model_max_batch_tokens(model);
    e->steps = skv_calloc((size_t)e->max_seqs, sizeof(*e->steps));
    e->batch = skv_calloc((size_t)e->max_seqs, sizeof(*e->batch));
    e->logits = skv_mallocn((size_t)e->max_seqs * (size_t)e->vocab, sizeof(float));
    e->rows = skv_calloc((size_t)e->max_seqs, sizeof(*e->rows));
    e->picked = skv_calloc((size_t)e->max_seqs, sizeof(*e->picked));
    e->backend_sampling = !opts->host_sampling && skv_model_samples_on_backend(model);
    if (e->steps == NULL || e->batch == NULL || e->logits == NULL || e->rows == NULL ||
        e->picked == NULL) {
        skv_engine_destroy(e);
        return SKV_STATUS_NO_MEMORY;
    }
    pthread_mutex_init(&e->lock, NULL);
    pthread_cond_init(&e->cond, NULL);
    e->stats.kv_total_blocks = skv_kv_pool_n_blocks(pool);
    *eng_p = e;
    return SKV_STATUS_OK;
}

/* Checks a request against the model and pool; *why names the problem. */
static skv_status_t skv_engine_validate(const skv_engine_t *e, const skv_request_desc_t *d,
                                        const char **why)
{
    if (d->n_prompt < 1 || d->prompt == NULL) {
        *why = "the prompt is empty";
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    for (int32_t i = 0; i < d->n_prompt; i++) {
        if (d->prompt[i] < 0 || d->prompt[i] >= e->vocab) {
            *why = "a prompt token id is outside the vocabulary";
            return SKV_STATUS_INVALID_ARGUMENT;
        }
    }
    if (d->max_tokens < 1 || d->n_stop_ids < 0 || d->n_stop_ids > SKV_ENGINE_MAX_STOP_IDS) {
        *why = "max_tokens must be >= 1, with at most SKV_MAX_STOP_TOKEN_IDS stop token ids";
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    SKV_CHECK(skv_sampling_params_validate(&d->sampling, e->vocab, why));
    if (!skv_request_fits_context(d->n_prompt, d->max_tokens, e->max_ctx)) {
        *why = "prompt tokens + max_tokens exceed the model's context length";
        return SKV_STATUS_OUT_OF_RANGE;
    }
    int64_t need = skv_kv_blocks_for((int64_t)d->n_prompt + d->max_tokens, e->block_size);
    if (need > skv_kv_pool_n_blocks(e->pool)) {
        *why = "the request needs more KV blocks than the whole pool holds";
        return SKV_STATUS_BUSY;
    }
    int cached_ok = d->n_cached == 0 ||
                    (d->n_cached == d->n_prompt && d->first_token >= 0 &&
                     d->first_token < e->vocab &&
                     (int64_t)d->kv.n_blocks * e->block_size >= d->n_cached);
    if (d->n_cached < 0 || !cached_ok) {
        *why = "transferred KV must cover the whole prompt and come with its first token";
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    return SKV_STATUS_OK;
}

/* Builds the engine-side copy of a request. */
static skv_status_t skv_req_make(const skv_engine_t *e, const skv_request_desc_t *d,
                                 skv_req_t **r_p)
{
    skv_req_t *r = skv_calloc(1, sizeof(*r));
    if (r == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    r->d = *d;
    r->d.prompt = NULL;
    r->tokens = skv_mallocn((size_t)d->n_prompt + (size_t)d->max_tokens + 1, sizeof(int32_t));
    if (r->tokens == NULL || skv_sampler_create(&d->sampling, e->vocab, &r->sampler) != SKV_STATUS_OK) {
        skv_req_free(r);
        return SKV_STATUS_NO_MEMORY;
    }
    memcpy(r->tokens, d->prompt, sizeof(int32_t) * (size_t)d->n_prompt);
    r->n_total = d->n_prompt;
    r->timing.submitted = skv_clock_now_ns();
    if (d->n_cached > 0) {
        r->kv = d->kv;
        r->n_ctx = d->n_cached;
        r->tokens[r->n_total++] = d->first_token;
        r->n_generated = 1;
        skv_sampler_resume(r->sampler, d->first_token);
    }
    *r_p = r;
    return SKV_STATUS_OK;
}

skv_status_t skv_engine_submit(skv_engine_t *e, const skv_request_desc_t *d, const char **why)
{
    skv_req_t *r = NULL;
    *why = NULL;
    SKV_CHECK(skv_engine_validate(e, d, why));
    pthread_mutex_lock(&e->lock);
    int full = e->stop || e->n_inbox + e->stats.n_waiting >= e->opts.max_waiting;
    pthread_mutex_unlock(&e->lock);
    if (full) {
        *why = "the worker's queue is full";
        return SKV_STATUS_BUSY;
    }
    if (skv_req_make(e, d, &r) != SKV_STATUS_OK) {
        *why = "out of memory";
        return SKV_STATUS_NO_MEMORY;
    }
    pthread_mutex_lock(&e->lock);
    r->seqno = e->next_seqno++;
    if (e->inbox_tail) {
        e->inbox_tail->next = r;
    } else {
        e->inbox_head = r;
    }
    e->inbox_tail = r;
    e->n_inbox++;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->lock);
    return SKV_STATUS_OK;
}

skv_status_t skv_engine_cancel(skv_engine_t *e, uint64_t id)
{
    pthread_mutex_lock(&e->lock);
    skv_status_t status = SKV_STATUS_OK;
    {
        if (e->n_cancels == e->cap_cancels) {
            int32_t cap = e->cap_cancels ? 2 * e->cap_cancels : 16;
            uint64_t *c = skv_realloc(e->cancels, sizeof(uint64_t) * (size_t)cap);
            if (c == NULL) {
                pthread_mutex_unlock(&e->lock);
                return SKV_STATUS_NO_MEMORY;
            }
            e->cancels = c;
            e->cap_cancels = cap;
        }
        e->cancels[e->n_cancels++] = id;
        pthread_cond_signal(&e->cond);
    }
    pthread_mutex_unlock(&e->lock);
    return status;
}

/* Finishes r: releases its KV unless handed over, runs on_finish, frees it. The caller
 * removes r from `active`. */
static void skv_req_finish(skv_engine_t *e, skv_req_t *r, skv_finish_t finish, skv_status_t status)
{
    skv_request_result_t res;
    memset(&res, 0, sizeof(res));
    r->timing.finished = skv_clock_now_ns();
    res.finish = finish;
    res.status = status;
    res.n_prompt = r->d.n_prompt;
    res.n_generated = r->n_generated;
    res.timing = r->timing;
    res.first_token = r->n_generated > 0 ? r->tokens[r->d.n_prompt] : -1;
    if (finish == SKV_FINISH_PREFILLED) {
        res.kv = &r->kv;
    }
    if (r->d.cbs.on_finish) {
        r->d.cbs.on_finish(r->d.cbs.ctx, r->d.id, &res);
    }
    skv_kv_seq_release(e->pool, &r->kv); /* no-op when the callback took the blocks */
    pthread_mutex_lock(&e->lock);
    e->stats.n_finished++;
    pthread_mutex_unlock(&e->lock);
    skv_req_free(r);
}

static skv_status_t skv_engine_push_active(skv_engine_t *e, skv_req_t *r)
{
    if (e->n_active == e->cap_active) {
        int32_t cap = e->cap_active ? 2 * e->cap_active : 64;
        skv_req_t **a = skv_realloc(e->active, sizeof(*a) * (size_t)cap);
        if (a == NULL) {
            return SKV_STATUS_NO_MEMORY;
        }
        e->active = a;
        e->cap_active = cap;
    }
    e->active[e->n_active++] = r;
    return SKV_STATUS_OK;
}

/* Returns the stop reason after r's newest token, or -1 to go on. */
static int skv_req_stop_reason(const skv_engine_t *e, const skv_req_t *r)
{
    int32_t t = r->tokens[r->n_total - 1];
    if (r->d.prefill_only) {
        return SKV_FINISH_PREFILLED;
    }
    int may_stop = r->n_generated >= r->d.min_tokens; /* min_tokens defers EOS and stops */
    if (may_stop && !r->d.ignore_eos && skv_model_config_is_eos(skv_model_config(e->model), t)) {
        return SKV_FINISH_STOP;
    }
    for (int32_t i = 0; may_stop && i < r->d.n_stop_ids; i++) {
        if (r->d.stop_ids[i] == t) {
            return SKV_FINISH_STOP;
        }
    }
    if (r->n_generated >= r->d.max_tokens || r->n_total >= e->max_ctx) {
        return SKV_FINISH_LENGTH;
    }
    return -1;
}

/* Moves the inbox into `active` and applies cancels. */
static void skv_engine_admit(skv_engine_t *e)
{
    pthread_mutex_lock(&e->lock);
    skv_req_t *in = e->inbox_head;
    e->inbox_head = e->inbox_tail = NULL;
    e->n_inbox = 0;
    uint64_t cancels[64];
    int32_t n_cancels = e->n_cancels < 64 ? e->n_cancels : 64;
    if (n_cancels > 0) { /* e->cancels is NULL until the first cancel */
        memcpy(cancels, e->cancels, sizeof(uint64_t) * (size_t)n_cancels);
        memmove(e->cancels, e->cancels + n_cancels,
                sizeof(uint64_t) * (size_t)(e->n_cancels - n_cancels));
        e->n_cancels -= n_cancels;
    }
    pthread_mutex_unlock(&e->lock);
    while (in != NULL) {
        skv_req_t *next = in->next;
        in->next = NULL;
        int stop = in->n_generated > 0 ? skv_req_stop_reason(e, in) : -1;
        if (skv_engine_push_active(e, in) != SKV_STATUS_OK) {
            skv_req_finish(e, in, SKV_FINISH_ERROR, SKV_STATUS_NO_MEMORY);
        } else if (stop >= 0) {
            e->n_active--; /* a transferred first token that already ends the request */
            skv_req_finish(e, in, (skv_finish_t)stop, SKV_STATUS_OK);
        }
        in = next;
    }
    for (int32_t c = 0; c < n_cancels; c++) {
        for (int32_t i = 0; i < e->n_active; i++) {
            if (e->active[i]->d.id == cancels[c]) {
                skv_req_t *r = e->active[i];
                memmove(&e->active[i], &e->active[i + 1], sizeof(*e->active) * (size_t)(e->n_active - i - 1));
                e->n_active--;
                skv_req_finish(e, r, SKV_FINISH_CANCELLED, SKV_STATUS_CANCELLED);
                break;
            }
        }
    }
}

/* Drops the KV of the youngest request holding blocks that is not in this step's batch;
 * returns it (it will be recomputed), or NULL when there is none. */
static skv_req_t *skv_engine_preempt_youngest(skv_engine_t *e)
{
    for (int32_t i = e->n_active - 1; i >= 0; i--) {
        skv_req_t *r = e->active[i];
        if (r->step_chunk == 0 && r->kv.n_blocks > 0) {
            skv_kv_seq_release(e->pool, &r->kv);
            r->n_ctx = 0;
            r->timing.n_preemptions++;
            pthread_mutex_lock(&e->lock);
            e->stats.n_preemptions++;
            pthread_mutex_unlock(&e->lock);
            return r;
        }
    }
    return NULL;
}

/* Adds r's next chunk of `n` tokens to the batch. */
static void skv_engine_add(skv_engine_t *e, skv_req_t *r, int32_t n, int32_t *n_seqs)
{
    r->step_chunk = n;
    e->batch[*n_seqs] = r;
    e->steps[*n_seqs] = (skv_seq_step_t){r->tokens + r->n_ctx, n, r->n_ctx, r->kv.blocks,
                                         r->kv.n_blocks, r->n_ctx + n == r->n_total};
    if (r->timing.first_scheduled == 0) {
        r->timing.first_scheduled = skv_clock_now_ns();
    }
    (*n_seqs)++;
}

/* Pass 1: decode requests (one pending token, KV present), oldest first; grows their block
 * tables, preempting the youngest others when the pool is full. */
static void skv_engine_pick_decodes(skv_engine_t *e, int32_t *n_seqs, int32_t *budget)
{
    for (int32_t i = 0; i < e->n_active && *n_seqs < e->max_seqs && *budget > 0; i++) {
        skv_req_t *r = e->active[i];
        if (r->n_ctx == 0 || r->n_total - r->n_ctx != 1) {
            continue;
        }
        skv_status_t s;
        while ((s = skv_kv_seq_reserve(e->pool, &r->kv, r->n_total)) == SKV_STATUS_BUSY) {
            if (skv_engine_preempt_youngest(e) == r || r->n_ctx == 0) {
                break; /* r itself was the youngest: it waits for recompute */
            }
        }
        if (s == SKV_STATUS_OK && r->n_ctx > 0) {
            skv_engine_add(e, r, 1, n_seqs);
            (*budget)--;
        }
    }
}

/* Pass 2: prefill chunks (new, partial and preempted requests) in arrival order. Stops at
 * the first request that does not fit, so later ones never overtake it (FCFS). */
static void skv_engine_pick_prefills(skv_engine_t *e, int32_t *n_seqs, int32_t *budget)
{
    for (int32_t i = 0; i < e->n_active && *n_seqs < e->max_seqs && *budget > 0; i++) {
        skv_req_t *r = e->active[i];
        if (r->step_chunk > 0 || r->n_total - r->n_ctx < 1 ||
            (r->n_ctx > 0 && r->n_total - r->n_ctx == 1)) {
            continue;
        }
        int32_t n = r->n_total - r->n_ctx < *budget ? r->n_total - r->n_ctx : *budget;
        if (skv_kv_seq_reserve(e->pool, &r->kv, (int64_t)r->n_ctx + n) != SKV_STATUS_OK) {
            break;
        }
        skv_engine_add(e, r, n, n_seqs);
        *budget -= n;
    }
}

/* Whether this step's tokens are picked on the backend: the engine may, and every request
 * that gets logits can (no penalties, min-p or logprobs; min_tokens only defers the stop
 * checks, nothing else here reads logits). If so, fills e->rows in batch order, drawing each
 * sampled request's u from its RNG. */
static int skv_engine_backend_rows(skv_engine_t *e, int32_t n_seqs)
{
    if (!e->backend_sampling) {
        return 0;
    }
    for (int32_t s = 0; s < n_seqs; s++) {
        if (e->steps[s].want_logits && !skv_sampler_row_ok(e->batch[s]->sampler)) {
            return 0;
        }
    }
    int32_t k = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        if (e->steps[s].want_logits) {
            skv_sampler_draw_row(e->batch[s]->sampler, &e->rows[k++]);
        }
    }
    return 1;
}

/* The token of logit row `row`: picked on the backend (recorded in the sampler for its
 * bookkeeping) or sampled from the host logits. */
static skv_status_t skv_engine_pick(skv_engine_t *e, skv_req_t *r, int backend, int32_t row,
                                    skv_sample_t *sample)
{
    if (!backend) {
        return skv_sampler_next(r->sampler, e->logits + (size_t)row * e->vocab, sample);
    }
    memset(sample, 0, sizeof(*sample));
    sample->token = e->picked[row];
    return skv_sampler_accept(r->sampler, sample->token);
}

/* Samples for every batch entry that produced logits and applies stop conditions. */
static void skv_engine_post(skv_engine_t *e, int32_t n_seqs, int backend)
{
    int32_t row = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        skv_req_t *r = e->batch[s];
        int want = e->steps[s].want_logits;
        r->n_ctx += r->step_chunk;
        r->step_chunk = 0;
        if (!want) {
            continue;
        }
        skv_sample_t sample;
        if (skv_engine_pick(e, r, backend, row++, &sample) != SKV_STATUS_OK) {
            r->failed = SKV_STATUS_NO_MEMORY; /* finished with an error by the reaper */
            continue;
        }
        r->tokens[r->n_total++] = sample.token;
        int64_t now = skv_clock_now_ns();
        r->timing.first_token = r->timing.first_token ? r->timing.first_token : now;
        r->timing.last_token = now;
        if (r->d.cbs.on_token) {
            r->d.cbs.on_token(r->d.cbs.ctx, r->d.id, &sample, r->n_generated);
        }
        r->n_generated++;
    }
}

/* Removes finished requests from `active` (keeping arrival order). */
static void skv_engine_reap(skv_engine_t *e)
{
    int32_t keep = 0;
    for (int32_t i = 0; i < e->n_active; i++) {
        skv_req_t *r = e->active[i];
        int stop = r->failed != SKV_STATUS_OK ? SKV_FINISH_ERROR
                   : (r->n_generated > 0 && r->n_ctx == r->n_total - 1) ? skv_req_stop_reason(e, r)
                                                                        : -1;
        if (stop < 0) {
            e->active[keep++] = r;
        } else {
            skv_req_finish(e, r, (skv_finish_t)stop, r->failed);
        }
    }
    e->n_active = keep;
}

static void skv_engine_update_stats(skv_engine_t *e)
{
    int32_t running = 0;
    for (int32_t i = 0; i < e->n_active; i++) {
        running += e->active[i]->kv.n_blocks > 0;
    }
    pthread_mutex_lock(&e->lock);
    e->stats.n_running = running;
    e->stats.n_waiting = e->n_active - running;
    e->stats.n_steps++;
    pthread_mutex_unlock(&e->lock);
}

/* A failed forward step is a device/engine failure: every request in it ends with ERROR. */
static void skv_engine_fail_batch(skv_engine_t *e, int32_t n_seqs, skv_status_t status)
{
    SKV_LOG_ERROR("forward step of %d sequences failed: %s", n_seqs, skv_status_str(status));
    for (int32_t s = 0; s < n_seqs; s++) {
        e->batch[s]->step_chunk = 0;
        e->batch[s]->failed = status;
    }
}

skv_status_t skv_engine_step(skv_engine_t *e)
{
    skv_engine_admit(e);
    int32_t n_seqs = 0, budget = e->budget;
    skv_engine_pick_decodes(e, &n_seqs, &budget);
    skv_engine_pick_prefills(e, &n_seqs, &budget);
    if (n_seqs == 0) {
        skv_engine_update_stats(e);
        return SKV_STATUS_AGAIN;
    }
    int backend = skv_engine_backend_rows(e, n_seqs);
    skv_status_t s =
        backend ? skv_model_forward_sample(e->model, e->pool, e->steps, n_seqs, e->rows, e->picked)
                : skv_model_forward(e->model, e->pool, e->steps, n_seqs, e->logits);
    if (s == SKV_STATUS_OK) {
        skv_engine_post(e, n_seqs, backend);
        if (backend) {
            pthread_mutex_lock(&e->lock);
            e->stats.n_backend_sampled++;
            pthread_mutex_unlock(&e->lock);
        }
    } else {
        skv_engine_fail_batch(e, n_seqs, s);
    }
    skv_engine_reap(e);
    skv_engine_update_stats(e);
    return SKV_STATUS_OK;
}

static int skv_engine_has_work(skv_engine_t *e)
{
    return e->inbox_head != NULL || e->n_cancels > 0;
}

static void *skv_engine_thread(void *arg)
{
    skv_engine_t *e = arg;
    for (;;) {
        pthread_mutex_lock(&e->lock);
        while (!e->stop && !skv_engine_has_work(e) && e->stats.n_running + e->stats.n_waiting == 0) {
            pthread_cond_wait(&e->cond, &e->lock);
        }
        int stop = e->stop;
        pthread_mutex_unlock(&e->lock);
        if (stop) {
            break;
        }
        if (skv_engine_step(e) == SKV_STATUS_AGAIN) {
            /* Work exists but nothing fits (blocks held by transfers): wait briefly. */
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

skv_status_t skv_engine_start(skv_engine_t *e)
{
    if (pthread_create(&e->thread, NULL, skv_engine_thread, e) != 0) {
        SKV_LOG_ERROR("cannot start the engine thread");
        return SKV_STATUS_NO_MEMORY;
    }
    e->thread_running = 1;
    return SKV_STATUS_OK;
}

void skv_engine_stop(skv_engine_t *e)
{
    if (!e->thread_running) {
        return;
    }
    pthread_mutex_lock(&e->lock);
    e->stop = 1;
    pthread_cond_signal(&e->cond);
    pthread_mutex_unlock(&e->lock);
    pthread_join(e->thread, NULL);
    e->thread_running = 0;
}

void skv_engine_stats(skv_engine_t *e, skv_engine_stats_t *stats)
{
    pthread_mutex_lock(&e->lock);
    *stats = e->stats;
    stats->n_waiting += e->n_inbox;
    pthread_mutex_unlock(&e->lock);
    stats->kv_free_blocks = skv_kv_pool_n_free(e->pool);
}

void skv_engine_destroy(skv_engine_t *e)
{
    if (e == NULL) {
        return;
    }
    skv_engine_stop(e);
    if (e->steps != NULL) {
        skv_engine_admit(e);
        for (int32_t i = 0; i < e->n_active; i++) {
            skv_req_finish(e, e->active[i], SKV_FINISH_CANCELLED, SKV_STATUS_CANCELLED);
        }
        pthread_mutex_destroy(&e->lock);
        pthread_cond_destroy(&e->cond);
    }
    skv_free(e->active);
    skv_free(e->cancels);
    skv_free(e->steps);
    skv_free(e->batch);
    skv_free(e->logits);
    skv_free(e->rows);
    skv_free(e->picked);
    skv_free(e);
}
