/*
 * test_tp.c: tensor parallelism on the CPU backend (threads as ranks), tiny GQA models with 4
 * KV heads made by skv_make_model (plain with tied embeddings and a vocabulary that TP=4 does
 * not divide; SwiftKV; SwiftKV with AcrossKV groups):
 *   - TP=2 and TP=4 against TP=1 (the ordinary single-backend model) over one fixed schedule
 *     of steps: a chunked prefill beside a sequence fed one prompt token per step (logits at
 *     every one of its positions), mixed prefill + decode steps, then 32 greedy tokens each:
 *     every logits row within 1e-4, every greedy token identical; the same with an fp8 KV
 *     cache (logits within 0.1 there: see FP8_LOGITS_TOL);
 *   - the same requests through the batching engine (chunked prefill, concurrent requests),
 *     greedy and seeded top-k/top-p, tokens picked on the backend (rank 0's sample op after
 *     the all-gather) and on the host: every TP size and path gives TP=1's host tokens;
 *   - KV computed at TP=2 moved into a TP=1 pool (and TP=1 into TP=2) with the head-split
 *     ranges of skv_kv_layout_tp_ranges: decode continues with identical greedy tokens;
 *   - random-weight TP models (the benchmark path) against the TP=1 random model;
 *   - the range math itself, and refusals: a TP size that does not divide the heads gives
 *     UNSUPPORTED, a pool of another TP size INVALID_ARGUMENT.
 * usage: test_tp MAKE_MODEL
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "common/model/engine.h"
#include "common/model/generate.h"
#include "base/log.h"
#include "common/model/model_tp.h"
#include "kernels/cpu/cpu.h"
#include "tests/common/skv_test.h"

#define N_GEN      32 /* greedy tokens per sequence */
#define MAX_ROWS   256
#define LOGITS_TOL 1e-4f
/* On an fp8 KV cache: each TP size's f32 summation order can move a K/V value across an fp8
 * rounding midpoint, and that element then differs by one fp8 step (~6%); measured worst
 * 0.031 on logits up to 9 (swiftkv-across, TP=2). Greedy tokens must still be identical. */
#define FP8_LOGITS_TOL 0.1f

/* A model under test: TP=1 is the ordinary model on its own backend, TP>1 a TP group. */
typedef struct {
    skv_backend_t *be; /* TP=1 only */
    skv_model_t *model;
    skv_kv_pool_t *pool;
} skv_tp_fixture_t;

/* Random-weight models (the benchmark path) when the test runs one from a config. */
static const skv_model_config_t *skv_random_cfg;
/* The KV cache dtype of the fixtures' models (NULL: the backend's default). */
static const char *skv_kv_dtype;

static skv_status_t skv_fixture_open(const char *dir, int32_t tp, int32_t budget, int32_t max_seqs,
                                     int32_t block_size, skv_tp_fixture_t *f)
{
    skv_model_opts_t mo = {SKV_MODEL_MODE_AUTO, budget, max_seqs, 512, skv_kv_dtype, 0};
    const skv_model_config_t *cfg = skv_random_cfg;
    skv_model_tp_opts_t to = {tp, "cpu", 1, 0};
    memset(f, 0, sizeof(*f));
    if (tp == 1) {
        skv_cpu_backend_create(SKV_CPU_MODE_FAST, 1, &f->be);
        SKV_CHECK(cfg ? skv_model_create_random(cfg, f->be, &mo, 7, &f->model)
                      : skv_model_load(dir, f->be, &mo, &f->model));
    } else {
        SKV_CHECK(cfg ? skv_model_create_random_tp(cfg, &to, &mo, 7, &f->model)
                      : skv_model_load_tp(dir, &to, &mo, &f->model));
    }
    return skv_model_kv_pool_create(f->model, block_size, 128, &f->pool);
}

static void skv_fixture_close(skv_tp_fixture_t *f)
{
    skv_kv_pool_destroy(f->pool);
    skv_model_destroy(f->model);
    if (f->be != NULL) {
        f->be->ops->destroy(f->be);
    }
}

static int32_t skv_argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        best = x[i] > x[best] ? i : best;
    }
    return best;
}

/* One sequence of the schedule: prompt then generated tokens, n_ctx of them in the cache. */
typedef struct {
    int32_t toks[64 + N_GEN];
    int32_t n_prompt;
    int32_t n_total;
    int32_t n_ctx;
    int32_t chunk; /* prefill chunk (1: one prompt token per step, logits at each) */
    skv_kv_seq_t kv;
} skv_tseq_t;

/* Everything a schedule run produced: every logits row in order, and the greedy tokens. */
typedef struct {
    float *logits; /* [n_rows, vocab] */
    int32_t n_rows;
    int32_t gen[2][N_GEN];
} skv_trace_t;

static void skv_tseq_init(skv_tseq_t *s, int32_t n_prompt, int32_t chunk, int32_t salt)
{
    memset(s, 0, sizeof(*s));
    s->n_prompt = s->n_total = n_prompt;
    s->chunk = chunk;
    for (int32_t j = 0; j < n_prompt; j++) {
        s->toks[j] = (salt * 131 + j * 17 + 1) % 1000;
    }
}

/* Runs the fixed schedule: A prefills 19 tokens in chunks of 8 while B feeds its 6 prompt
 * tokens one per step with logits; both then decode N_GEN greedy tokens, in shared steps
 * (mixed prefill + decode while B is in its prompt). */
static skv_status_t skv_trace_run(skv_tp_fixture_t *f, skv_trace_t *t)
{
    int32_t V = skv_model_config(f->model)->vocab_size;
    skv_tseq_t q[2];
    skv_tseq_init(&q[0], 19, 8, 3);
    skv_tseq_init(&q[1], 6, 1, 7);
    float *lg = skv_mallocn(2 * (size_t)V, sizeof(float));
    skv_status_t status = SKV_STATUS_OK;
    t->n_rows = 0;
    while (status == SKV_STATUS_OK) {
        skv_seq_step_t steps[2];
        int32_t idx[2], n = 0;
        for (int32_t i = 0; i < 2; i++) {
            skv_tseq_t *s = &q[i];
            if (s->n_total - s->n_prompt == N_GEN && s->n_ctx == s->n_total - 1) {
                continue; /* done: its last token needs no forward */
            }
            int32_t c = s->n_ctx < s->n_prompt ? s->chunk : 1;
            c = s->n_ctx + c > s->n_total ? s->n_total - s->n_ctx : c;
            SKV_CHECK(skv_kv_seq_reserve(f->pool, &s->kv, s->n_ctx + c));
            steps[n] =
                (skv_seq_step_t){s->toks + s->n_ctx, c,
                                 s->n_ctx,           s->kv.blocks,
                                 s->kv.n_blocks,     s->chunk == 1 || s->n_ctx + c == s->n_total};
            idx[n++] = i;
        }
        if (n == 0) {
            break;
        }
        status = skv_model_forward(f->model, f->pool, steps, n, lg);
        for (int32_t k = 0, r = 0; k < n && status == SKV_STATUS_OK; k++) {
            skv_tseq_t *s = &q[idx[k]];
            s->n_ctx += steps[k].n_tokens;
            if (!steps[k].want_logits) {
                continue;
            }
            SKV_ASSERT(t->n_rows < MAX_ROWS);
            memcpy(t->logits + (size_t)t->n_rows++ * V, lg + (size_t)r * V, sizeof(float) * V);
            if (s->n_ctx == s->n_total) {
                int32_t tok = skv_argmax(lg + (size_t)r * V, V);
                t->gen[idx[k]][s->n_total - s->n_prompt] = tok;
                s->toks[s->n_total++] = tok;
            }
            r++;
        }
    }
    skv_kv_seq_release(f->pool, &q[0].kv);
    skv_kv_seq_release(f->pool, &q[1].kv);
    skv_free(lg);
    return status;
}

/* TP=1, 2, 4 over the schedule: logits within tolerance, tokens identical. */
static void skv_check_schedule(const char *dir, const char *name)
{
    skv_trace_t tr[3];
    const int32_t tps[3] = {1, 2, 4};
    int32_t V = 0;
    for (int i = 0; i < 3; i++) {
        skv_tp_fixture_t f;
        skv_status_t s = skv_fixture_open(dir, tps[i], 32, 4, 4, &f);
        SKV_EXPECT(s == SKV_STATUS_OK, "%s: TP=%d load: %s", name, tps[i], skv_status_str(s));
        if (s != SKV_STATUS_OK) {
            exit(1);
        }
        for (int32_t r = 0; r < skv_kv_pool_n_ranks(f.pool); r++) {
            skv_dtype_t d = skv_kv_pool_rank_layout(f.pool, r)->dtype;
            SKV_EXPECT(d == (skv_kv_dtype ? SKV_DTYPE_F8E4M3 : SKV_DTYPE_F32),
                       "%s: TP=%d rank %d pool of %s", name, tps[i], r, skv_dtype_name(d));
        }
        V = skv_model_config(f.model)->vocab_size;
        tr[i].logits = skv_mallocn((size_t)MAX_ROWS * V, sizeof(float));
        s = skv_trace_run(&f, &tr[i]);
        SKV_EXPECT(s == SKV_STATUS_OK, "%s: TP=%d schedule: %s", name, tps[i], skv_status_str(s));
        SKV_EXPECT(skv_kv_pool_n_free(f.pool) == 128, "%s: TP=%d leaked blocks", name, tps[i]);
        skv_fixture_close(&f);
    }
    for (int i = 1; i < 3; i++) {
        float worst = 0.0f, amax = 0.0f;
        SKV_EXPECT(tr[i].n_rows == tr[0].n_rows, "%s: TP=%d has %d logits rows, TP=1 %d", name,
                   tps[i], tr[i].n_rows, tr[0].n_rows);
        for (size_t j = 0; j < (size_t)tr[0].n_rows * V; j++) {
            float d = fabsf(tr[i].logits[j] - tr[0].logits[j]);
            worst = d > worst || isnan(d) ? (isnan(d) ? INFINITY : d) : worst;
            amax = fabsf(tr[0].logits[j]) > amax ? fabsf(tr[0].logits[j]) : amax;
        }
        /* 1e-4 absolute for logits up to 10 (every checkpoint model here: at most 9); beyond,
         * f32 rounding grows with magnitude (the tied random model reaches 133). */
        float tol =
            (skv_kv_dtype ? FP8_LOGITS_TOL : LOGITS_TOL) * (amax > 10.0f ? amax / 10.0f : 1.0f);
        SKV_EXPECT(worst <= tol, "%s: TP=%d logits differ from TP=1 by %g (bound %g)", name, tps[i],
                   worst, tol);
        SKV_EXPECT(memcmp(tr[i].gen, tr[0].gen, sizeof(tr[0].gen)) == 0,
                   "%s: TP=%d greedy tokens differ from TP=1", name, tps[i]);
        printf("%-16s TP=%d: %d logits rows (max |logit| %.1f), max |diff| %.2e, 2 x %d greedy "
               "tokens %s\n",
               name, tps[i], tr[0].n_rows, amax, worst, N_GEN,
               memcmp(tr[i].gen, tr[0].gen, sizeof(tr[0].gen)) == 0 ? "identical" : "DIFFER");
    }
    for (int i = 0; i < 3; i++) {
        skv_free(tr[i].logits);
    }
}

/* ---- through the engine -------------------------------------------------------------- */

#define N_REQ   6
#define ENG_GEN 16

typedef struct {
    int32_t tokens[N_REQ][ENG_GEN];
    int32_t n[N_REQ];
    int finished[N_REQ];
} skv_sink_t;

static void skv_on_token(void *ctx, uint64_t id, const skv_sample_t *s, int32_t index)
{
    skv_sink_t *k = ctx;
    k->tokens[id][index] = s->token;
    k->n[id] = index + 1;
}

static void skv_on_finish(void *ctx, uint64_t id, const skv_request_result_t *r)
{
    (void)r;
    ((skv_sink_t *)ctx)->finished[id] = 1;
}

/* N_REQ requests through the engine at TP size tp (host != 0: host sampling); even ids greedy,
 * odd ids seeded with top-k / top-p. */
static void skv_engine_run(const char *dir, int32_t tp, int host, skv_sink_t *k)
{
    skv_tp_fixture_t f;
    skv_engine_t *e;
    int32_t prompts[N_REQ][32];
    skv_engine_opts_t eo = {.max_waiting = 16, .host_sampling = host};
    SKV_EXPECT(skv_fixture_open(dir, tp, 12, 4, 4, &f) == SKV_STATUS_OK, "engine TP=%d load", tp);
    skv_engine_create(f.model, f.pool, &eo, &e);
    for (int i = 0; i < N_REQ; i++) {
        skv_request_desc_t d;
        const char *why;
        memset(&d, 0, sizeof(d));
        d.id = (uint64_t)i;
        d.n_prompt = 5 + (i * 7) % 19;
        for (int32_t j = 0; j < d.n_prompt; j++) {
            prompts[i][j] = (i * 37 + j * 11 + 5) % 1000;
        }
        d.prompt = prompts[i];
        d.max_tokens = ENG_GEN;
        skv_sampling_params_default(&d.sampling);
        d.sampling.temperature = i % 2 ? 0.8f : 0.0f;
        d.sampling.top_k = i % 4 == 1 ? 10 : 0;
        d.sampling.top_p = i % 4 == 3 ? 0.9f : 1.0f;
        d.sampling.seed = 500 + (uint64_t)i;
        d.ignore_eos = 1;
        d.first_token = -1;
        d.cbs = (skv_request_cbs_t){skv_on_token, skv_on_finish, k};
        SKV_EXPECT(skv_engine_submit(e, &d, &why) == SKV_STATUS_OK, "engine submit %d", i);
    }
    for (int step = 0; step < 1000; step++) {
        int done = 0;
        for (int i = 0; i < N_REQ; i++) {
            done += k->finished[i];
        }
        if (done == N_REQ) {
            break;
        }
        skv_engine_step(e);
    }
    skv_engine_stats_t st;
    skv_engine_stats(e, &st);
    SKV_EXPECT(host ? st.n_backend_sampled == 0 : st.n_backend_sampled == st.n_steps,
               "engine TP=%d: %lld of %lld steps sampled on the backend", tp,
               (long long)st.n_backend_sampled, (long long)st.n_steps);
    skv_engine_destroy(e);
    SKV_EXPECT(skv_kv_pool_n_free(f.pool) == 128, "engine TP=%d leaked blocks", tp);
    skv_fixture_close(&f);
}

static void skv_check_engine(const char *dir, const char *name)
{
    static const int32_t tps[4] = {1, 2, 2, 4};
    static const int hosts[4] = {0, 0, 1, 0};
    skv_sink_t ref, got;
    memset(&ref, 0, sizeof(ref));
    skv_engine_run(dir, 1, 1, &ref);
    for (int c = 0; c < 4; c++) {
        memset(&got, 0, sizeof(got));
        skv_engine_run(dir, tps[c], hosts[c], &got);
        int same = memcmp(ref.tokens, got.tokens, sizeof(ref.tokens)) == 0;
        for (int i = 0; i < N_REQ; i++) {
            same = same && got.finished[i] && got.n[i] == ENG_GEN;
        }
        SKV_EXPECT(same, "%s: engine at TP=%d (%s sampling) differs from TP=1 (host)", name, tps[c],
                   hosts[c] ? "host" : "backend");
        printf("%-16s engine TP=%d %-7s sampling: %d requests x %d tokens (greedy, seeded) %s\n",
               name, tps[c], hosts[c] ? "host" : "backend", N_REQ, ENG_GEN,
               same ? "identical" : "DIFFER");
    }
}

/* ---- KV transfer between TP degrees --------------------------------------------------- */

/* Copies blocks src_ids of every rank of pool a into blocks dst_ids of every rank of pool b
 * through the head-split ranges, as a prefill worker's ranks would push them. */
static void skv_copy_kv(skv_kv_pool_t *a, const int32_t *src_ids, skv_kv_pool_t *b,
                        const int32_t *dst_ids, int32_t n)
{
    for (int32_t ra = 0; ra < skv_kv_pool_n_ranks(a); ra++) {
        for (int32_t rb = 0; rb < skv_kv_pool_n_ranks(b); rb++) {
            const skv_kv_layout_t *la = skv_kv_pool_rank_layout(a, ra);
            const skv_kv_layout_t *lb = skv_kv_pool_rank_layout(b, rb);
            size_t bba = skv_kv_layout_block_bytes(la), bbb = skv_kv_layout_block_bytes(lb);
            skv_kv_range_t rg[64];
            int32_t nr = 0;
            SKV_EXPECT(skv_kv_layout_tp_ranges(la, lb, rg, 64, &nr) == SKV_STATUS_OK,
                       "transfer ranges %d -> %d", ra, rb);
            for (int32_t i = 0; i < n; i++) {
                char *sa = (char *)skv_kv_pool_rank_base(a, ra) + bba * (size_t)src_ids[i];
                char *db = (char *)skv_kv_pool_rank_base(b, rb) + bbb * (size_t)dst_ids[i];
                for (int32_t j = 0; j < nr; j++) {
                    memcpy(db + rg[j].dst_offset, sa + rg[j].src_offset, rg[j].bytes);
                }
            }
        }
    }
}

/* Prefills on `from` (TP=tp_from), moves the KV to a TP=tp_to pool, decodes N_GEN greedy
 * tokens there; they must equal the tokens of TP=1 alone (ref). */
static void skv_check_transfer(const char *dir, const char *name, int32_t tp_from, int32_t tp_to,
                               const int32_t *ref)
{
    skv_tp_fixture_t p, d;
    int32_t prompt[19], gen[N_GEN];
    skv_kv_seq_t sp = {0}, sd = {0};
    SKV_EXPECT(skv_fixture_open(dir, tp_from, 32, 4, 4, &p) == SKV_STATUS_OK, "transfer load");
    SKV_EXPECT(skv_fixture_open(dir, tp_to, 32, 4, 4, &d) == SKV_STATUS_OK, "transfer load");
    int32_t V = skv_model_config(p.model)->vocab_size;
    float *lg = skv_mallocn((size_t)V, sizeof(float));
    for (int32_t j = 0; j < 19; j++) {
        prompt[j] = (3 * 131 + j * 17 + 1) % 1000;
    }
    skv_status_t s = skv_generate_prefill(p.model, p.pool, &sp, prompt, 19, 8, lg);
    /* Take blocks from the far end of the decode pool, so block ids differ on the two sides. */
    int32_t filler[100];
    skv_kv_pool_alloc(d.pool, 100, filler);
    if (s == SKV_STATUS_OK) {
        s = skv_kv_seq_reserve(d.pool, &sd, 19);
    }
    if (s == SKV_STATUS_OK) {
        skv_copy_kv(p.pool, sp.blocks, d.pool, sd.blocks, sd.n_blocks);
        gen[0] = skv_argmax(lg, V);
    }
    for (int32_t i = 1; i < N_GEN && s == SKV_STATUS_OK; i++) {
        s = skv_kv_seq_reserve(d.pool, &sd, 19 + i);
        if (s == SKV_STATUS_OK) {
            s = skv_generate_decode(d.model, d.pool, &sd, gen[i - 1], 19 + i - 1, lg);
        }
        gen[i] = s == SKV_STATUS_OK ? skv_argmax(lg, V) : -1;
    }
    int same = s == SKV_STATUS_OK && memcmp(gen, ref, sizeof(gen)) == 0;
    SKV_EXPECT(same, "%s: KV TP=%d -> TP=%d: decode differs (%s)", name, tp_from, tp_to,
               skv_status_str(s));
    printf("%-16s KV TP=%d -> TP=%d: %d greedy tokens %s\n", name, tp_from, tp_to, N_GEN,
           same ? "identical" : "DIFFER");
    skv_kv_pool_release(d.pool, 100, filler);
    skv_kv_seq_release(p.pool, &sp);
    skv_kv_seq_release(d.pool, &sd);
    skv_free(lg);
    skv_fixture_close(&p);
    skv_fixture_close(&d);
}

/* The reference for the transfers: TP=1 alone, sequence A of the schedule. */
static void skv_check_transfers(const char *dir, const char *name)
{
    skv_tp_fixture_t f;
    skv_trace_t t;
    SKV_EXPECT(skv_fixture_open(dir, 1, 32, 4, 4, &f) == SKV_STATUS_OK, "reference load");
    int32_t V = skv_model_config(f.model)->vocab_size;
    t.logits = skv_mallocn((size_t)MAX_ROWS * V, sizeof(float));
    SKV_EXPECT(skv_trace_run(&f, &t) == SKV_STATUS_OK, "reference run");
    skv_fixture_close(&f);
    skv_check_transfer(dir, name, 2, 1, t.gen[0]);
    skv_check_transfer(dir, name, 1, 2, t.gen[0]);
    skv_check_transfer(dir, name, 4, 2, t.gen[0]);
    skv_free(t.logits);
}

/* ---- range math and refusals ---------------------------------------------------------- */

static skv_kv_layout_t skv_layout(int32_t rank, int32_t size)
{
    skv_kv_layout_t l = {SKV_DTYPE_F32, 4, 4 / size, 16, 4, 2, 2, 3, rank, size};
    return l;
}

static void skv_check_ranges(void)
{
    skv_kv_range_t rg[16];
    int32_t n = -1;
    uint64_t head = 4 * 16 * 4; /* block_size x head_dim x f32 */
    skv_kv_layout_t one = skv_layout(0, 1), a = skv_layout(1, 2), b = skv_layout(1, 4);
    skv_kv_layout_t c = skv_layout(2, 4);
    SKV_EXPECT(skv_kv_layout_tp_ranges(&one, &one, rg, 16, &n) == SKV_STATUS_OK && n == 1 &&
                   rg[0].src_offset == 0 && rg[0].dst_offset == 0 &&
                   rg[0].bytes == skv_kv_layout_block_bytes(&one),
               "equal layouts: one range of the whole block (n %d)", n);
    /* TP=2 rank 1 (heads 2,3) -> TP=1: per (layer, K|V) run, 2 heads at heads 2..3 of 4. */
    SKV_EXPECT(skv_kv_layout_tp_ranges(&a, &one, rg, 16, &n) == SKV_STATUS_OK && n == 6 &&
                   rg[1].src_offset == 2 * head && rg[1].dst_offset == (4 + 2) * head &&
                   rg[1].bytes == 2 * head,
               "TP=2 rank 1 -> TP=1 (n %d)", n);
    /* TP=2 rank 1 (heads 2,3) -> TP=4 rank 2 (head 2): first head of each source run. */
    SKV_EXPECT(skv_kv_layout_tp_ranges(&a, &c, rg, 16, &n) == SKV_STATUS_OK && n == 6 &&
                   rg[5].src_offset == 5 * 2 * head && rg[5].dst_offset == 5 * head &&
                   rg[5].bytes == head,
               "TP=2 rank 1 -> TP=4 rank 2 (n %d)", n);
    SKV_EXPECT(skv_kv_layout_tp_ranges(&a, &b, rg, 16, &n) == SKV_STATUS_OK && n == 0,
               "disjoint slices: no range (n %d)", n);
    skv_kv_layout_t other = one;
    other.head_dim = 32;
    SKV_EXPECT(skv_kv_layout_tp_ranges(&one, &other, rg, 16, &n) == SKV_STATUS_INVALID_ARGUMENT,
               "layouts of different models are refused");
    SKV_EXPECT(skv_kv_layout_tp_ranges(&a, &one, rg, 2, &n) == SKV_STATUS_INVALID_ARGUMENT,
               "too few ranges is refused");
    SKV_EXPECT(skv_kv_layout_fingerprint(&a) != skv_kv_layout_fingerprint(&b),
               "fingerprints name the split");
}

static void skv_check_refusals(const char *dir)
{
    skv_model_opts_t mo = {SKV_MODEL_MODE_AUTO, 32, 4, 512, NULL, 0};
    skv_model_t *m = NULL;
    for (int32_t tp = 3; tp <= 8; tp += 5) { /* 3: does not divide 8 heads; 8: nor 4 KV heads */
        skv_model_tp_opts_t to = {tp, "cpu", 1, 0};
        skv_status_t s = skv_model_load_tp(dir, &to, &mo, &m);
        SKV_EXPECT(s == SKV_STATUS_UNSUPPORTED, "TP=%d: %s, expected UNSUPPORTED", tp,
                   skv_status_str(s));
    }
    skv_tp_fixture_t f1, f2;
    SKV_EXPECT(skv_fixture_open(dir, 1, 32, 4, 4, &f1) == SKV_STATUS_OK, "load");
    SKV_EXPECT(skv_fixture_open(dir, 2, 32, 4, 4, &f2) == SKV_STATUS_OK, "load");
    int32_t tok = 5, blk = 0;
    skv_seq_step_t st = {&tok, 1, 0, &blk, 1, 1};
    float *lg = skv_mallocn((size_t)skv_model_config(f1.model)->vocab_size, sizeof(float));
    SKV_EXPECT(skv_model_forward(f2.model, f1.pool, &st, 1, lg) == SKV_STATUS_INVALID_ARGUMENT,
               "a TP=2 model refuses a TP=1 pool");
    tok = 1 << 20;
    SKV_EXPECT(skv_model_forward(f2.model, f2.pool, &st, 1, lg) == SKV_STATUS_INVALID_ARGUMENT,
               "a TP=2 model refuses a bad token id");
    tok = 5;
    SKV_EXPECT(skv_model_forward(f2.model, f2.pool, &st, 1, lg) == SKV_STATUS_OK,
               "the TP=2 model still works after refusals");
    skv_free(lg);
    skv_fixture_close(&f1);
    skv_fixture_close(&f2);
}

int main(int argc, char **argv)
{
    char tmp[] = "/tmp/skv_tp_XXXXXX";
    skv_test_start(argc, argv, 1, "MAKE_MODEL", tmp);
    /* GQA with 8 query heads on 4 KV heads (divisible by 4). The plain model ties its
     * embeddings and has 1030 tokens, so TP=4's vocabulary slices end in padding. */
    static const char *const plain[] = {"--preset", "tiny",       "--heads", "8",     "--kv-heads",
                                        "4",        "--head-dim", "16",      "--tie", "1",
                                        "--vocab",  "1030",       NULL};
    static const char *const swift[] = {"--preset", "tiny-swiftkv", "--heads", "8", "--kv-heads",
                                        "4",        "--head-dim",   "16",      NULL};
    static const char *const across[] = {"--preset",
                                         "tiny-swiftkv",
                                         "--heads",
                                         "8",
                                         "--kv-heads",
                                         "4",
                                         "--head-dim",
                                         "16",
                                         "--layers",
                                         "6",
                                         "--swiftkv-layers",
                                         "2",
                                         "--group",
                                         "2",
                                         NULL};
    const char *const *models[] = {plain, swift, across};
    const char *names[] = {"plain-tied", "swiftkv", "swiftkv-across"};
    skv_check_ranges();
    /* Random weights (skv_model_create_random_tp): each rank fills its shard of the TP=1
     * model's values; the same schedule must agree. 4 KV heads; the plain one tied with a
     * vocabulary TP=4 does not divide. */
    skv_model_config_t rc[2];
    skv_model_config_preset("tiny-swiftkv", &rc[0]);
    skv_model_config_preset("tiny", &rc[1]);
    rc[0].n_kv_heads = rc[1].n_kv_heads = 4;
    rc[1].tie_embeddings = 1;
    rc[1].vocab_size = 1030;
    for (int i = 0; i < 2; i++) {
        skv_random_cfg = &rc[i];
        skv_check_schedule(NULL, i == 0 ? "random-swiftkv" : "random-tied");
    }
    skv_random_cfg = NULL;
    for (int i = 0; i < 3; i++) {
        char dir[512];
        snprintf(dir, sizeof(dir), "%s/%s", tmp, names[i]);
        skv_test_make_model_or_exit(argv[1], dir, models[i]);
        skv_check_schedule(dir, names[i]);
        skv_kv_dtype = "fp8"; /* each rank quantizes its heads as TP=1 does */
        char fp8_name[64];
        snprintf(fp8_name, sizeof(fp8_name), "%s-fp8", names[i]);
        skv_check_schedule(dir, fp8_name);
        skv_kv_dtype = NULL;
        skv_check_engine(dir, names[i]);
        skv_check_transfers(dir, names[i]);
        if (i == 1) {
            skv_check_refusals(dir);
        }
    }
    return skv_test_finish(tmp);
}
