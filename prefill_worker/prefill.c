/*
 * prefill.c (prefill role): the prefill side of disaggregation (Prefill.Prefill / Worker.Prefill):
 * checks the decode worker's transfer target, runs the prompt through the engine as a
 * prefill-only request (batched with other prompts, chunked within the token budget), pushes
 * the prompt's KV blocks into the target's blocks over UCX, sends the completion with the
 * first token, and answers the first token.
 *
 * The prompt's blocks stay with this request from the engine's hand-over until the push has
 * ended (OK or not), then go back to the pool. Every push is bounded by the call's deadline
 * (or push_timeout_ms) and by the target's lease. Loop thread only.
 *
 * Tensor parallelism: this worker's ranks and the target's ranks may split the KV heads
 * differently (prefill TP p, decode TP d). Both sides agree on the model's KV layout (the
 * split-independent fingerprint); the descriptor states the target's split (d ranks of
 * kv_heads each). Every local rank pushes, into every target rank whose heads overlap its
 * own, the byte ranges skv_kv_layout_tp_ranges gives (one per cache layer and K/V at most,
 * the whole block when the splits are equal), all in one push: one completion, sent after
 * the data of every rank was flushed.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "common/request_limits.h"
#include "common/serve/worker_internal.h"
#include "prefill_worker/prefill.h"

/* The request's push leaves the backlog (it ended, or never started). */
static void skv_worker_backlog_leave(skv_worker_t *w, skv_wreq_t *r)
{
    w->push_backlog_bytes -= r->push_bytes;
    r->push_bytes = 0;
}

/* Conditional disaggregation by the KV link's backlog: a prompt whose push would wait behind
 * more than push_backlog_ms of pushes already admitted (at the rate pushes were seen to
 * drain) is refused UNAVAILABLE, so the router decodes it on the decode worker alone instead
 * of queueing it on a slow link (tcp between nodes) until deadlines pass. Until a push has
 * been timed, every prompt is admitted; a fast link (CUDA IPC) never builds a backlog. */
static skv_status_t skv_worker_backlog_admit(skv_worker_t *w, skv_wreq_t *r, int32_t n_prompt,
                                             char *why, size_t why_bytes)
{
    int32_t bs = skv_kv_pool_layout(w->pool)->block_size;
    uint64_t bytes = (uint64_t)skv_kv_blocks_for(n_prompt, bs) * w->block_bytes * (uint64_t)w->tp_size;
    if (w->push_bytes_per_ns > 0) {
        double wait_ms = (double)(w->push_backlog_bytes + bytes) / w->push_bytes_per_ns / 1e6;
        if (wait_ms > (double)w->cfg.push_backlog_ms) {
            snprintf(why, why_bytes,
                     "the KV link to the decode worker is saturated: %.0f ms of pushes would be "
                     "ahead of this one (limit %lld ms)",
                     wait_ms, (long long)w->cfg.push_backlog_ms);
            return SKV_STATUS_UNAVAILABLE;
        }
    }
    r->push_bytes = bytes;
    w->push_backlog_bytes += bytes;
    return SKV_STATUS_OK;
}

/* Times a finished push for the backlog estimate: its bytes over the time since it started
 * or since the previous push ended, whichever is later (pushes share the link). */
static void skv_worker_backlog_rate(skv_worker_t *w, const skv_wreq_t *r)
{
    int64_t from = r->push_start_ns > w->push_last_end_ns ? r->push_start_ns : w->push_last_end_ns;
    double sample = (double)r->push_bytes / (double)(r->push_end_ns - from + 1);
    w->push_bytes_per_ns =
        w->push_bytes_per_ns > 0 ? 0.75 * w->push_bytes_per_ns + 0.25 * sample : sample;
    w->push_last_end_ns = r->push_end_ns;
}

static void skv_worker_prefill_fail(skv_worker_t *w, skv_wreq_t *r, skv_status_t st,
                                    const char *why)
{
    skv_worker_backlog_leave(w, r);
    skv_kv_seq_release(w->pool, &r->kv);
    skv_grpc_call_finish(r->call, st, why);
    skv_worker_retire(w, r);
}

/* Checks the target's head split against this model: tp_size ranks of kv_heads KV heads
 * must be exactly this model's KV heads, with one rank's share of a block as its block. */
static skv_status_t skv_worker_split_check(const skv_worker_t *w, const skv_kvx_desc_t *d,
                                           char *why, size_t why_bytes)
{
    const skv_kv_layout_t *l = skv_kv_pool_layout(w->pool);
    skv_kv_layout_t dst;
    skv_status_t st = skv_kv_layout_split(l, (int32_t)d->tp_size, (int32_t)d->kv_heads, 0, &dst);
    if (st == SKV_STATUS_OK && d->block_bytes == skv_kv_layout_block_bytes(&dst)) {
        return SKV_STATUS_OK;
    }
    snprintf(why, why_bytes,
             "KV layout mismatch: the decode worker splits its KV heads over %u ranks of %u "
             "(%" PRIu64 "-byte blocks); this model has %d KV heads (%d ranks of %d here)",
             d->tp_size, d->kv_heads, d->block_bytes, l->n_kv_heads * w->tp_size, w->tp_size,
             l->n_kv_heads);
    return SKV_STATUS_MISMATCH;
}

/* Decodes and checks the target against this worker's layout and the prompt. */
static skv_status_t skv_worker_target_check(skv_worker_t *w, skv_wreq_t *r,
                                            const Skv__V1__TransferTarget *t, int32_t n_prompt,
                                            char *why, size_t why_bytes)
{
    int32_t bs = skv_kv_pool_layout(w->pool)->block_size;
    if (t->layout_fingerprint != w->fingerprint || t->block_size != (uint32_t)bs) {
        snprintf(why, why_bytes,
                 "KV layout mismatch: decode fingerprint %016" PRIx64
                 " block size %u, prefill %016" PRIx64 " block size %d",
                 t->layout_fingerprint, t->block_size, w->fingerprint, bs);
        return SKV_STATUS_MISMATCH;
    }
    if (skv_kvx_desc_decode(t->descriptor.data, t->descriptor.len, &r->desc) != SKV_STATUS_OK) {
        snprintf(why, why_bytes, "the transfer target's descriptor is malformed");
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    if (r->desc->fingerprint != w->fingerprint) {
        snprintf(why, why_bytes,
                 "KV layout mismatch: the descriptor says %016" PRIx64 ", this worker %016" PRIx64,
                 r->desc->fingerprint, w->fingerprint);
        return SKV_STATUS_MISMATCH;
    }
    SKV_CHECK(skv_worker_split_check(w, r->desc, why, why_bytes));
    uint32_t need = (uint32_t)skv_kv_blocks_for(n_prompt, bs);
    if (r->desc->n_blocks < need) {
        snprintf(why, why_bytes,
                 "the transfer target does not fit the prompt (%u blocks for %u needed)",
                 r->desc->n_blocks, need);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    return SKV_STATUS_OK;
}

static const skv_request_cbs_t skv_worker_prefill_cbs;

static void skv_worker_start_prefill(skv_worker_t *w, skv_wreq_t *r)
{
    const Skv__V1__PrefillRequest *q = (const Skv__V1__PrefillRequest *)r->msg;
    char why[256] = "invalid request";
    const char *swhy = NULL;
    skv_request_desc_t d;
    memset(&d, 0, sizeof(d));
    d.prompt = q->token_ids;
    d.n_prompt = (int32_t)q->n_token_ids;
    d.max_tokens = 1;
    d.prefill_only = 1;
    skv_status_t st = q->n_token_ids == 0 ? SKV_STATUS_INVALID_ARGUMENT : SKV_STATUS_OK;
    if (st == SKV_STATUS_OK) {
        st = skv_worker_sampling_from_msg(w, q->sampling, q->logprobs, &d.sampling, &swhy);
        r->want_logprobs = d.sampling.n_logprobs > 0;
    }
    if (st == SKV_STATUS_OK && q->target != NULL) {
        st = skv_worker_target_check(w, r, q->target, d.n_prompt, why, sizeof(why));
        swhy = NULL;
    }
    if (st == SKV_STATUS_OK && q->target != NULL) {
        st = skv_worker_backlog_admit(w, r, d.n_prompt, why, sizeof(why));
    }
    if (st == SKV_STATUS_OK) {
        d.id = r->id;
        d.cbs = skv_worker_prefill_cbs;
        d.cbs.ctx = r;
        st = skv_engine_submit(w->engine, &d, &swhy);
    }
    if (st != SKV_STATUS_OK) {
        skv_worker_prefill_fail(w, r, st,
                                swhy             ? swhy
                                : q->n_token_ids ? why
                                                 : "token_ids is empty");
        return;
    }
    r->in_engine = 1;
    __atomic_add_fetch(&w->n_requests_total, 1, __ATOMIC_RELAXED);
}

/* One range of a device-pool push: the copy callback reads src_offset where the target
 * writes dst_offset (the two differ when the head splits differ). */
typedef struct {
    skv_wreq_t *r;
    uint64_t src_offset;
    uint64_t dst_offset;
} skv_worker_copy_t;

/* Copies [offset, offset+bytes) of the target's block `index` (target offsets) from the
 * device pool (one rank: skv_worker_tp_check refuses device pools of several). */
static skv_status_t skv_worker_copy_block(void *ctx, uint32_t index, uint64_t offset, void *dst,
                                          uint64_t bytes)
{
    const skv_worker_copy_t *c = ctx;
    skv_worker_t *w = c->r->w;
    const uint8_t *base = skv_kv_pool_base(w->pool);
    const uint8_t *src = base + (size_t)c->r->kv.blocks[index] * w->block_bytes +
                         (offset - c->dst_offset + c->src_offset);
    return w->be->ops->copy_d2h(w->be, dst, src, bytes);
}

/* What one (local rank, target rank) pair of a push needs. */
typedef struct {
    skv_worker_t *w;
    skv_wreq_t *r;
    uint32_t n_blocks;
    skv_kv_range_t *ranges; /* [cap] */
    int32_t cap;
    const void **srcs; /* [n_blocks] */
} skv_worker_push_ctx_t;

/* Pushes the byte ranges local rank s holds and target rank d needs, for every block. */
static skv_status_t skv_worker_push_pair(const skv_worker_push_ctx_t *c, int32_t s, uint32_t d)
{
    skv_worker_t *w = c->w;
    const skv_kvx_desc_t *desc = c->r->desc;
    skv_kv_layout_t dst;
    int32_t n = 0;
    /* Checked at Prefill (skv_worker_split_check): the split covers this model's heads. */
    SKV_CHECK(skv_kv_layout_split(skv_kv_pool_layout(w->pool), (int32_t)desc->tp_size,
                                  (int32_t)desc->kv_heads, (int32_t)d, &dst));
    SKV_CHECK(
        skv_kv_layout_tp_ranges(skv_kv_pool_rank_layout(w->pool, s), &dst, c->ranges, c->cap, &n));
    const uint8_t *base = skv_kv_pool_rank_base(w->pool, s);
    /* Device sources go through the transport's device hooks (CUDA IPC on this host, pinned
     * staging pipelined with the sends otherwise) when the target is one memory; a
     * tensor-parallel target's ranks are reached by copying block by block. */
    int device = !w->host_pool && desc->tp_size <= 1 && w->bkvx.ops != NULL;
    for (int32_t k = 0; k < n; k++) {
        const skv_kv_range_t *g = &c->ranges[k];
        if (!w->host_pool && !device) {
            skv_worker_copy_t cc = {c->r, g->src_offset, g->dst_offset};
            SKV_CHECK(skv_kvx_push_staged_rank(c->r->push, d, 0, c->n_blocks, g->dst_offset,
                                               g->bytes, skv_worker_copy_block, &cc));
            continue;
        }
        for (uint32_t i = 0; i < c->n_blocks; i++) {
            c->srcs[i] = base + (size_t)c->r->kv.blocks[i] * w->block_bytes + g->src_offset;
        }
        SKV_CHECK(device ? skv_kvx_push_device(c->r->push, 0, c->n_blocks, g->dst_offset, g->bytes,
                                               c->srcs)
                         : skv_kvx_push_host_rank(c->r->push, d, 0, c->n_blocks, g->dst_offset,
                                                  g->bytes, c->srcs));
    }
    return SKV_STATUS_OK;
}

/* Issues every put (or data message) of the prompt's blocks, for every pair of ranks whose
 * heads overlap, then the completion. */
static skv_status_t skv_worker_push_issue(skv_worker_t *w, skv_wreq_t *r, uint32_t n_blocks)
{
    skv_worker_push_ctx_t c = {w, r, n_blocks, NULL, 0, NULL};
    c.cap = 2 * skv_kv_pool_layout(w->pool)->n_cache_layers; /* a K and a V run per layer */
    c.ranges = skv_mallocn((size_t)c.cap, sizeof(*c.ranges));
    c.srcs = skv_mallocn(n_blocks, sizeof(*c.srcs));
    skv_status_t st = c.ranges && c.srcs ? SKV_STATUS_OK : SKV_STATUS_NO_MEMORY;
    for (int32_t s = 0; s < w->tp_size && st == SKV_STATUS_OK; s++) {
        for (uint32_t d = 0; d < r->desc->tp_size && st == SKV_STATUS_OK; d++) {
            st = skv_worker_push_pair(&c, s, d);
        }
    }
    skv_free(c.ranges);
    skv_free(c.srcs);
    SKV_CHECK(st);
    return skv_kvx_push_finish(r->push, r->first.token, SKV_STATUS_OK);
}

/* The status a failed push answers with: DEADLINE_EXCEEDED only when the caller's deadline
 * passed; otherwise (the link failed, or the push outlived push_timeout_ms on a slow link)
 * UNAVAILABLE, on which the router decodes the request on the decode worker alone. */
static skv_status_t skv_worker_push_status(const skv_wreq_t *r, skv_status_t st)
{
    int64_t call_deadline = r->call != NULL ? skv_grpc_call_deadline_ns(r->call) : INT64_MAX;
    return st == SKV_STATUS_TIMEOUT && skv_clock_now_ns() >= call_deadline ? SKV_STATUS_TIMEOUT
                                                                            : SKV_STATUS_UNAVAILABLE;
}

/* Starts the KV push of a finished prefill. */
static void skv_worker_push_start(skv_worker_t *w, skv_wreq_t *r)
{
    int32_t bs = skv_kv_pool_layout(w->pool)->block_size;
    uint32_t n_blocks = (uint32_t)skv_kv_blocks_for(r->n_prompt, bs);
    int64_t deadline = skv_clock_deadline_ms(w->cfg.push_timeout_ms);
    int64_t call_deadline = skv_grpc_call_deadline_ns(r->call);
    deadline = call_deadline < deadline ? call_deadline : deadline;
    r->push_start_ns = skv_clock_now_ns();
    skv_status_t st = skv_kvx_push_create(w->kvx, r->desc, deadline, &r->push);
    if (st == SKV_STATUS_OK) {
        st = skv_worker_push_issue(w, r, n_blocks);
    }
    if (st != SKV_STATUS_OK) {
        char why[160];
        snprintf(why, sizeof(why), "the KV push to the decode worker failed: %s",
                 skv_status_str(st));
        skv_kvx_push_destroy(r->push);
        r->push = NULL;
        skv_worker_prefill_fail(w, r, skv_worker_push_status(r, st), why);
    }
}

/* Answers the first token (after the push, when there was a target). */
static void skv_worker_prefill_answer(skv_worker_t *w, skv_wreq_t *r)
{
    Skv__V1__Timings t = SKV__V1__TIMINGS__INIT;
    t.queue_us = (uint64_t)((r->timing.first_scheduled - r->received_ns) / 1000);
    t.prefill_us = (uint64_t)((r->timing.first_token - r->timing.first_scheduled) / 1000);
    t.transfer_us = r->push_end_ns > 0 ? (uint64_t)((r->push_end_ns - r->push_start_ns) / 1000) : 0;
    Skv__V1__TokenLogprob lp;
    Skv__V1__TopLogprob tops[SKV_SAMPLER_MAX_LOGPROBS];
    Skv__V1__TopLogprob *top_ptrs[SKV_SAMPLER_MAX_LOGPROBS];
    Skv__V1__PrefillResponse a = SKV__V1__PREFILL_RESPONSE__INIT;
    a.first_token = r->first.token;
    a.n_prompt_tokens = (uint32_t)r->n_prompt;
    a.timings = &t;
    if (r->want_logprobs) {
        skv_worker_fill_logprob(&r->first, &lp, tops, top_ptrs);
        a.first_logprob = &lp;
    }
    skv_worker_backlog_leave(w, r);
    skv_kv_seq_release(w->pool, &r->kv);
    skv_grpc_call_finish_msg(r->call, &a.base, SKV_STATUS_OK, NULL);
    skv_worker_retire(w, r);
}

static void skv_worker_prefill_progress(skv_worker_t *w, skv_wreq_t *r)
{
    skv_status_t st = skv_kvx_push_test(r->push);
    if (st == SKV_STATUS_AGAIN) {
        return;
    }
    r->push_end_ns = skv_clock_now_ns();
    skv_kvx_push_destroy(r->push);
    r->push = NULL;
    if (st == SKV_STATUS_OK) {
        skv_worker_backlog_rate(w, r);
        skv_worker_prefill_answer(w, r);
        return;
    }
    char why[160];
    snprintf(why, sizeof(why), "the KV push to the decode worker failed: %s", skv_status_str(st));
    skv_worker_prefill_fail(w, r, skv_worker_push_status(r, st), why);
}

static void skv_worker_prefill_on_token(void *ctx, uint64_t id, const skv_sample_t *s,
                                        int32_t index)
{
    (void)id;
    skv_wreq_t *r = ctx;
    if (index == 0) {
        r->first = *s;
        r->has_first = 1;
    }
}

static void skv_worker_prefill_on_finish(void *ctx, uint64_t id, const skv_request_result_t *res)
{
    (void)id;
    skv_wreq_t *r = ctx;
    skv_worker_t *w = r->w;
    r->in_engine = 0;
    r->timing = res->timing;
    r->n_prompt = res->n_prompt;
    if (res->finish != SKV_FINISH_PREFILLED || !r->has_first) {
        skv_status_t st = res->finish == SKV_FINISH_CANCELLED ? SKV_STATUS_CANCELLED
                          : res->status != SKV_STATUS_OK      ? res->status
                                                              : SKV_STATUS_INTERNAL;
        skv_worker_prefill_fail(w, r, st,
                                st == SKV_STATUS_CANCELLED ? "cancelled" : "the prefill failed");
        return;
    }
    r->kv = *res->kv; /* the prompt's blocks are ours until the push ends */
    *res->kv = (skv_kv_seq_t){0};
    if (r->desc != NULL) {
        skv_worker_push_start(w, r);
    } else {
        skv_worker_prefill_answer(w, r);
    }
}

static const skv_request_cbs_t skv_worker_prefill_cbs = {skv_worker_prefill_on_token,
                                                  skv_worker_prefill_on_finish, NULL};

/* A prefill whose push is in flight moves on (and keeps the loop polling the transport). */
static int skv_worker_prefill_watch(skv_worker_t *w, skv_wreq_t *r)
{
    if (r->push == NULL) {
        return 0;
    }
    skv_worker_prefill_progress(w, r);
    return 1;
}

const skv_worker_role_ops_t skv_prefill_role = {
    .start = skv_worker_start_prefill,
    .watch = skv_worker_prefill_watch,
};
