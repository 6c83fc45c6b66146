/*
 * test_engine.c: the batching engine on the CPU backend with tiny models (plain and SwiftKV):
 *   - greedy tokens of many concurrent requests (chunked prefill, mixed steps) equal each
 *     request generated alone;
 *   - seeded sampling gives the same tokens alone and in a batch;
 *   - tokens picked on the backend (the sample op; the engine's default) equal the host
 *     sampler's (skv_generate alone, and the engine forced to host sampling) for greedy,
 *     temperature, top-k and top-p requests, alone and batched, also mixed with requests whose
 *     penalties, min-p or logprobs force whole steps onto the host path, and across the
 *     prefill-only -> transferred KV -> decode split with either path on either side;
 *   - skv_model_forward_sample on a backend without the sample op (host fallback) equals the
 *     backend op and skv_sampler_next, with sequences that want no logits in the step;
 *   - a pool far too small for the load: every request completes (preemption + recompute)
 *     with the same tokens, no block leaks; an impossible request is refused with BUSY;
 *   - cancel frees the blocks; prefill-only + transferred KV (the disaggregated flow with the
 *     KV copied between two pools) equals single-process generation;
 *   - the engine thread serves submissions from several threads.
 * usage: test_engine MAKE_MODEL
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "common/model/engine.h"
#include "common/model/generate.h"
#include "kernels/cpu/cpu.h"
#include "tests/common/skv_test.h"

#define N_REQ   12
#define MAX_NEW 20

typedef struct {
    int32_t tokens[N_REQ][MAX_NEW + 1];
    int32_t n[N_REQ];
    int finished[N_REQ];
    skv_finish_t finish[N_REQ];
    skv_kv_seq_t handed[N_REQ];
    int32_t first[N_REQ];
    pthread_mutex_t lock;
} skv_sink_t;

static void skv_on_token(void *ctx, uint64_t id, const skv_sample_t *s, int32_t index)
{
    skv_sink_t *k = ctx;
    pthread_mutex_lock(&k->lock);
    k->tokens[id][index] = s->token;
    k->n[id] = index + 1;
    pthread_mutex_unlock(&k->lock);
}

static void skv_on_finish(void *ctx, uint64_t id, const skv_request_result_t *r)
{
    skv_sink_t *k = ctx;
    pthread_mutex_lock(&k->lock);
    k->finished[id] = 1;
    k->finish[id] = r->finish;
    k->first[id] = r->first_token;
    if (r->kv != NULL) {
        k->handed[id] = *r->kv; /* take the blocks */
        memset(r->kv, 0, sizeof(*r->kv));
    }
    pthread_mutex_unlock(&k->lock);
}

static void skv_prompt(int i, int32_t *p, int32_t *n)
{
    *n = 3 + (i * 7) % 23; /* 3..25 tokens */
    for (int32_t j = 0; j < *n; j++) {
        p[j] = (int32_t)((i * 131 + j * 17 + 1) % 1000);
    }
}

/* Sampling mixes: every request greedy; every one at temperature 0.9; per request greedy,
 * top-k, top-p or both (all pickable on the backend); the same with three requests that need
 * the host sampler (penalties, logprobs, min-p). */
typedef enum {
    SKV_MIX_GREEDY = 0,
    SKV_MIX_SAMPLED,
    SKV_MIX_FILTERED,
    SKV_MIX_HOST_SOME,
} skv_mix_t;

static void skv_sampling_for(int i, skv_mix_t mix, skv_sampling_params_t *p)
{
    skv_sampling_params_default(p);
    p->seed = 1000 + (uint64_t)i;
    p->temperature = mix == SKV_MIX_SAMPLED ? 0.9f : 0.0f;
    if (mix == SKV_MIX_FILTERED || mix == SKV_MIX_HOST_SOME) {
        static const float temp[4] = {0.0f, 0.8f, 1.1f, 0.7f}, top_p[4] = {1, 1, 0.8f, 0.9f};
        static const int32_t top_k[4] = {0, 5, 0, 20};
        p->temperature = temp[i % 4];
        p->top_k = top_k[i % 4];
        p->top_p = top_p[i % 4];
    }
    /* The last three arrive after the first max_seqs have filled the batch: the steps before
     * they join can pick on the backend, the steps with them cannot. */
    if (mix == SKV_MIX_HOST_SOME && i == N_REQ - 3) {
        p->presence_penalty = 0.5f;
        p->frequency_penalty = 0.3f;
    } else if (mix == SKV_MIX_HOST_SOME && i == N_REQ - 2) {
        p->n_logprobs = 3;
    } else if (mix == SKV_MIX_HOST_SOME && i == N_REQ - 1) {
        p->min_p = 0.1f;
    }
}

static void skv_desc(skv_request_desc_t *d, int i, const int32_t *prompt, int32_t n,
                     skv_sink_t *sink, skv_mix_t mix)
{
    memset(d, 0, sizeof(*d));
    d->id = (uint64_t)i;
    d->prompt = prompt;
    d->n_prompt = n;
    d->max_tokens = MAX_NEW;
    skv_sampling_for(i, mix, &d->sampling);
    d->ignore_eos = 1;
    d->first_token = -1;
    d->cbs = (skv_request_cbs_t){skv_on_token, skv_on_finish, sink};
}

typedef struct {
    skv_backend_t *be;
    skv_model_t *model;
} skv_fixture_t;

static void skv_fixture(const char *dir, int32_t budget, int32_t max_seqs, skv_fixture_t *f)
{
    skv_model_opts_t mo = {SKV_MODEL_MODE_AUTO, budget, max_seqs, 0, NULL, 0};
    skv_cpu_backend_create(SKV_CPU_MODE_FAST, 2, &f->be);
    if (skv_model_load(dir, f->be, &mo, &f->model) != SKV_STATUS_OK) {
        fprintf(stderr, "cannot load %s\n", dir);
        exit(1);
    }
}

static void skv_fixture_free(skv_fixture_t *f)
{
    skv_model_destroy(f->model);
    f->be->ops->destroy(f->be);
}

/* Reference: each request alone with skv_generate (the host sampler). */
static void skv_alone(const char *dir, skv_mix_t mix, int32_t out[N_REQ][MAX_NEW + 1])
{
    skv_fixture_t f;
    skv_kv_pool_t *pool;
    skv_kv_layout_t l;
    skv_fixture(dir, 64, 1, &f);
    skv_model_kv_layout(f.model, 16, &l);
    skv_kv_pool_create(&l, 64, f.be, &pool);
    for (int i = 0; i < N_REQ; i++) {
        int32_t p[32], n, n_out;
        skv_prompt(i, p, &n);
        skv_generate_opts_t o;
        memset(&o, 0, sizeof(o));
        o.max_new_tokens = MAX_NEW;
        o.ignore_eos = 1;
        skv_sampling_for(i, mix, &o.sampling);
        skv_generate(f.model, pool, p, n, &o, NULL, NULL, out[i], &n_out);
    }
    skv_kv_pool_destroy(pool);
    skv_fixture_free(&f);
}

static void skv_run_until_done(skv_engine_t *e, skv_sink_t *k, int n)
{
    for (int step = 0; step < 10000; step++) {
        int done = 0;
        for (int i = 0; i < n; i++) {
            done += k->finished[i];
        }
        if (done == n) {
            return;
        }
        skv_engine_step(e);
    }
    SKV_EXPECT(0, "engine did not finish %d requests in 10000 steps", n);
}

static void skv_compare(const char *what, int32_t ref[N_REQ][MAX_NEW + 1], skv_sink_t *k)
{
    for (int i = 0; i < N_REQ; i++) {
        SKV_EXPECT(k->finished[i] && k->n[i] == MAX_NEW &&
                       memcmp(ref[i], k->tokens[i], sizeof(int32_t) * MAX_NEW) == 0,
                   "%s: request %d differs from its run alone (finished %d, %d tokens)", what, i,
                   k->finished[i], k->n[i]);
    }
}

/* Checks which path picked the tokens: none on the backend with host sampling; otherwise
 * every step, or (mix with host-only requests) some steps but not all. */
static void skv_check_paths(const char *what, skv_engine_t *e, skv_mix_t mix, int host)
{
    skv_engine_stats_t st;
    skv_engine_stats(e, &st);
    if (host) {
        SKV_EXPECT(st.n_backend_sampled == 0, "%s: %lld steps sampled on the backend", what,
                   (long long)st.n_backend_sampled);
    } else if (mix == SKV_MIX_HOST_SOME) {
        SKV_EXPECT(st.n_backend_sampled > 0 && st.n_backend_sampled < st.n_steps,
                   "%s: %lld of %lld steps on the backend, expected some", what,
                   (long long)st.n_backend_sampled, (long long)st.n_steps);
    } else {
        SKV_EXPECT(st.n_backend_sampled == st.n_steps, "%s: %lld of %lld steps on the backend",
                   what, (long long)st.n_backend_sampled, (long long)st.n_steps);
    }
}

/* All requests at once through one engine with pool_blocks blocks of block_size; host 1
 * forces host sampling with the engine option. */
static void skv_batched(const char *dir, skv_mix_t mix, int host, int32_t budget,
                        int64_t pool_blocks, int32_t block_size, int32_t ref[N_REQ][MAX_NEW + 1],
                        const char *what)
{
    skv_fixture_t f;
    skv_kv_pool_t *pool;
    skv_engine_t *e;
    skv_kv_layout_t l;
    skv_sink_t *k = skv_calloc(1, sizeof(*k));
    pthread_mutex_init(&k->lock, NULL);
    skv_fixture(dir, budget, 8, &f);
    skv_model_kv_layout(f.model, block_size, &l);
    skv_kv_pool_create(&l, pool_blocks, f.be, &pool);
    skv_engine_opts_t eo = {.max_waiting = 64, .host_sampling = host == 1};
    skv_engine_create(f.model, pool, &eo, &e);
    int32_t prompts[N_REQ][32];
    for (int i = 0; i < N_REQ; i++) {
        int32_t n;
        skv_request_desc_t d;
        const char *why;
        skv_prompt(i, prompts[i], &n);
        skv_desc(&d, i, prompts[i], n, k, mix);
        SKV_EXPECT(skv_engine_submit(e, &d, &why) == SKV_STATUS_OK, "%s: submit %d", what, i);
    }
    skv_run_until_done(e, k, N_REQ);
    skv_compare(what, ref, k);
    skv_check_paths(what, e, mix, host);
    skv_engine_stats_t st;
    skv_engine_stats(e, &st);
    printf("%-28s steps %4lld  on backend %4lld  preemptions %3lld\n", what, (long long)st.n_steps,
           (long long)st.n_backend_sampled, (long long)st.n_preemptions);
    SKV_EXPECT(skv_kv_pool_n_free(pool) == pool_blocks, "%s: leaked %lld blocks", what,
               (long long)(pool_blocks - skv_kv_pool_n_free(pool)));
    if (pool_blocks < 20) {
        SKV_EXPECT(st.n_preemptions > 0, "%s: expected preemptions with a tiny pool", what);
    }
    skv_engine_destroy(e);
    skv_kv_pool_destroy(pool);
    skv_fixture_free(&f);
    skv_free(k);
}

static void skv_check_refusals_and_cancel(const char *dir)
{
    skv_fixture_t f;
    skv_kv_pool_t *pool;
    skv_engine_t *e;
    skv_kv_layout_t l;
    skv_sink_t *k = skv_calloc(1, sizeof(*k));
    pthread_mutex_init(&k->lock, NULL);
    skv_fixture(dir, 16, 4, &f);
    skv_model_kv_layout(f.model, 4, &l);
    skv_kv_pool_create(&l, 8, f.be, &pool);
    skv_engine_opts_t eo = {.max_waiting = 2};
    skv_engine_create(f.model, pool, &eo, &e);
    int32_t p[40] = {1, 2, 3, 4};
    skv_request_desc_t d;
    const char *why;
    skv_desc(&d, 0, p, 30, k, SKV_MIX_GREEDY);
    SKV_EXPECT(skv_engine_submit(e, &d, &why) == SKV_STATUS_BUSY, "too large for the pool");
    skv_desc(&d, 0, p, 4, k, SKV_MIX_GREEDY);
    d.max_tokens = 1 << 20;
    SKV_EXPECT(skv_engine_submit(e, &d, &why) == SKV_STATUS_OUT_OF_RANGE, "beyond context");
    p[1] = 5000;
    skv_desc(&d, 0, p, 4, k, SKV_MIX_GREEDY);
    SKV_EXPECT(skv_engine_submit(e, &d, &why) == SKV_STATUS_INVALID_ARGUMENT, "bad token");
    p[1] = 2;
    skv_desc(&d, 0, p, 4, k, SKV_MIX_GREEDY);
    d.sampling.temperature = -1.0f;
    SKV_EXPECT(skv_engine_submit(e, &d, &why) == SKV_STATUS_INVALID_ARGUMENT, "bad temperature");
    for (int i = 0; i < 3; i++) {
        skv_desc(&d, i, p, 4, k, SKV_MIX_GREEDY);
        skv_status_t s = skv_engine_submit(e, &d, &why);
        SKV_EXPECT(s == (i < 2 ? SKV_STATUS_OK : SKV_STATUS_BUSY), "queue bound at %d", i);
    }
    skv_engine_step(e);
    skv_engine_step(e);
    SKV_EXPECT(skv_kv_pool_n_free(pool) < 8, "running requests hold blocks");
    skv_engine_cancel(e, 0);
    skv_engine_cancel(e, 1);
    skv_engine_cancel(e, 77); /* unknown: ignored */
    skv_engine_step(e);
    SKV_EXPECT(k->finished[0] && k->finish[0] == SKV_FINISH_CANCELLED, "cancel 0");
    SKV_EXPECT(k->finished[1] && k->finish[1] == SKV_FINISH_CANCELLED, "cancel 1");
    SKV_EXPECT(skv_kv_pool_n_free(pool) == 8, "cancel frees blocks");
    skv_engine_destroy(e);
    skv_kv_pool_destroy(pool);
    skv_fixture_free(&f);
    skv_free(k);
}

/* Copies the KV of blocks src[] in pool a into blocks dst[] of pool b (the UCX push does the
 * same between processes). */
static void skv_copy_blocks(skv_kv_pool_t *a, const int32_t *src, skv_kv_pool_t *b,
                            const int32_t *dst, int32_t n)
{
    size_t bb = skv_kv_layout_block_bytes(skv_kv_pool_layout(a));
    for (int32_t i = 0; i < n; i++) {
        memcpy((char *)skv_kv_pool_base(b) + bb * (size_t)dst[i],
               (char *)skv_kv_pool_base(a) + bb * (size_t)src[i], bb);
    }
}

/* Prefill-only requests on one engine, their KV copied into a second engine's pool and
 * admitted there with the first token (skv_sampler_resume advances the RNG past it); host_p /
 * host_d force host sampling on the prefill / decode side. */
static void skv_check_disaggregated(const char *dir, skv_mix_t mix, int host_p, int host_d,
                                    int32_t ref[N_REQ][MAX_NEW + 1], const char *what)
{
    skv_fixture_t fp, fd;
    skv_kv_pool_t *pp, *pd;
    skv_engine_t *ep, *ed;
    skv_kv_layout_t l;
    skv_sink_t *kp = skv_calloc(1, sizeof(*kp)), *kd = skv_calloc(1, sizeof(*kd));
    pthread_mutex_init(&kp->lock, NULL);
    pthread_mutex_init(&kd->lock, NULL);
    skv_fixture(dir, 32, 8, &fp);
    skv_fixture(dir, 32, 8, &fd);
    skv_model_kv_layout(fp.model, 8, &l);
    skv_kv_pool_create(&l, 128, fp.be, &pp);
    skv_kv_pool_create(&l, 128, fd.be, &pd);
    skv_engine_opts_t eo_p = {.max_waiting = 64, .host_sampling = host_p};
    skv_engine_opts_t eo_d = {.max_waiting = 64, .host_sampling = host_d};
    skv_engine_create(fp.model, pp, &eo_p, &ep);
    skv_engine_create(fd.model, pd, &eo_d, &ed);
    int32_t prompts[N_REQ][32], n[N_REQ];
    const char *why;
    for (int i = 0; i < N_REQ; i++) {
        skv_request_desc_t d;
        skv_prompt(i, prompts[i], &n[i]);
        skv_desc(&d, i, prompts[i], n[i], kp, mix);
        d.prefill_only = 1;
        skv_engine_submit(ep, &d, &why);
    }
    skv_run_until_done(ep, kp, N_REQ);
    for (int i = 0; i < N_REQ; i++) {
        skv_request_desc_t d;
        skv_kv_seq_t dst = {0};
        SKV_EXPECT(kp->finish[i] == SKV_FINISH_PREFILLED && kp->first[i] == ref[i][0],
                   "prefill-only %d: first token %d, alone %d", i, kp->first[i], ref[i][0]);
        skv_kv_seq_reserve(pd, &dst, n[i]);
        skv_copy_blocks(pp, kp->handed[i].blocks, pd, dst.blocks, dst.n_blocks);
        skv_kv_seq_release(pp, &kp->handed[i]);
        skv_desc(&d, i, prompts[i], n[i], kd, mix);
        d.n_cached = n[i];
        d.kv = dst;
        d.first_token = kp->first[i];
        SKV_EXPECT(skv_engine_submit(ed, &d, &why) == SKV_STATUS_OK, "decode submit %d", i);
        kd->tokens[i][0] = kp->first[i]; /* index 0 came from the prefill side */
    }
    skv_run_until_done(ed, kd, N_REQ);
    skv_compare(what, ref, kd);
    skv_check_paths(what, ep, mix, host_p);
    skv_check_paths(what, ed, mix, host_d);
    SKV_EXPECT(skv_kv_pool_n_free(pp) == 128 && skv_kv_pool_n_free(pd) == 128,
               "disaggregated: leaked blocks");
    skv_engine_destroy(ep);
    skv_engine_destroy(ed);
    skv_kv_pool_destroy(pp);
    skv_kv_pool_destroy(pd);
    skv_fixture_free(&fp);
    skv_fixture_free(&fd);
    skv_free(kp);
    skv_free(kd);
}

typedef struct {
    skv_engine_t *e;
    skv_sink_t *k;
    int first;
    int32_t (*prompts)[32];
} skv_submitter_t;

static void *skv_submit_thread(void *arg)
{
    skv_submitter_t *s = arg;
    for (int i = s->first; i < N_REQ; i += 3) {
        int32_t n;
        skv_request_desc_t d;
        const char *why;
        skv_prompt(i, s->prompts[i], &n);
        skv_desc(&d, i, s->prompts[i], n, s->k, SKV_MIX_GREEDY);
        while (skv_engine_submit(s->e, &d, &why) == SKV_STATUS_BUSY) {
            usleep(1000);
        }
    }
    return NULL;
}

static void skv_check_thread(const char *dir, int32_t ref[N_REQ][MAX_NEW + 1])
{
    skv_fixture_t f;
    skv_kv_pool_t *pool;
    skv_engine_t *e;
    skv_kv_layout_t l;
    skv_sink_t *k = skv_calloc(1, sizeof(*k));
    pthread_mutex_init(&k->lock, NULL);
    skv_fixture(dir, 48, 8, &f);
    skv_model_kv_layout(f.model, 16, &l);
    skv_kv_pool_create(&l, 64, f.be, &pool);
    skv_engine_opts_t eo = {.max_waiting = 4};
    skv_engine_create(f.model, pool, &eo, &e);
    skv_engine_start(e);
    int32_t prompts[N_REQ][32];
    pthread_t th[3];
    skv_submitter_t sub[3];
    for (int t = 0; t < 3; t++) {
        sub[t] = (skv_submitter_t){e, k, t, prompts};
        pthread_create(&th[t], NULL, skv_submit_thread, &sub[t]);
    }
    for (int t = 0; t < 3; t++) {
        pthread_join(th[t], NULL);
    }
    int64_t deadline = skv_clock_deadline_ms(60000);
    int done = 0;
    while (!skv_clock_expired(deadline) && done < N_REQ) {
        usleep(2000);
        pthread_mutex_lock(&k->lock);
        done = 0;
        for (int i = 0; i < N_REQ; i++) {
            done += k->finished[i];
        }
        pthread_mutex_unlock(&k->lock);
    }
    skv_engine_stop(e);
    skv_compare("engine thread", ref, k);
    skv_engine_destroy(e);
    SKV_EXPECT(skv_kv_pool_n_free(pool) == 64, "engine thread: leaked blocks");
    skv_kv_pool_destroy(pool);
    skv_fixture_free(&f);
    skv_free(k);
}

/* skv_model_forward_sample at the model level on three models of dir, each with its own pool:
 * A picks with the CPU sample op, B runs on a CPU backend whose table lacks the op (host
 * fallback), C is skv_model_forward + skv_sampler_next. Three sequences with filtered
 * sampling; in the first step sequence 1 feeds a non-final chunk (no logits, so no row); then
 * 12 steps where all three decode. Every token must agree; a bad row is refused. */
static void skv_check_forward_sample(const char *dir)
{
    enum { NS = 3, NSTEP = 13 };
    skv_fixture_t f[3];
    skv_kv_pool_t *pool[3];
    skv_kv_layout_t l;
    static skv_ops_t no_sample;
    skv_sampler_t *smp[3][NS];
    skv_kv_seq_t kv[3][NS];
    int32_t toks[NS][64], n_total[NS], n_ctx[NS] = {0}, V = 0;
    float *logits = NULL;
    memset(kv, 0, sizeof(kv));
    for (int m = 0; m < 3; m++) {
        skv_fixture(dir, 64, NS, &f[m]);
        if (m == 1) { /* the same backend, its table without the sample op */
            no_sample = *f[m].be->ops;
            no_sample.sample = NULL;
            f[m].be->ops = &no_sample;
        }
        skv_model_kv_layout(f[m].model, 8, &l);
        skv_kv_pool_create(&l, 64, f[m].be, &pool[m]);
        V = skv_model_config(f[m].model)->vocab_size;
        for (int s = 0; s < NS; s++) {
            skv_sampling_params_t p;
            skv_sampling_for(s + 1, SKV_MIX_FILTERED, &p); /* top-k, top-p, both */
            skv_sampler_create(&p, V, &smp[m][s]);
        }
    }
    SKV_EXPECT(skv_model_samples_on_backend(f[0].model) &&
                   !skv_model_samples_on_backend(f[1].model),
               "forward_sample: which models sample on the backend");
    logits = skv_mallocn((size_t)NS * V, sizeof(float));
    for (int s = 0; s < NS; s++) {
        skv_prompt(s + 3, toks[s], &n_total[s]);
    }
    for (int step = 0; step < NSTEP; step++) {
        int32_t got[3][NS], n_want = 0;
        skv_seq_step_t st[3][NS];
        for (int m = 0; m < 3; m++) {
            skv_sample_row_t rows[NS];
            n_want = 0;
            for (int s = 0; s < NS; s++) {
                /* step 0: sequence 1 feeds only the first 2 of its prompt tokens */
                int32_t n = step == 0 && s == 1 ? 2 : n_total[s] - n_ctx[s];
                skv_kv_seq_reserve(pool[m], &kv[m][s], n_ctx[s] + n);
                st[m][s] = (skv_seq_step_t){.tokens = toks[s] + n_ctx[s],
                                            .n_tokens = n,
                                            .pos0 = n_ctx[s],
                                            .blocks = kv[m][s].blocks,
                                            .n_blocks = kv[m][s].n_blocks,
                                            .want_logits = n_ctx[s] + n == n_total[s]};
                if (st[m][s].want_logits && m < 2) {
                    skv_sampler_draw_row(smp[m][s], &rows[n_want]);
                }
                n_want += st[m][s].want_logits;
            }
            skv_status_t rc =
                m < 2 ? skv_model_forward_sample(f[m].model, pool[m], st[m], NS, rows, got[m])
                      : skv_model_forward(f[m].model, pool[m], st[m], NS, logits);
            SKV_EXPECT(rc == SKV_STATUS_OK, "forward_sample: model %d step %d", m, step);
            for (int s = 0, k = 0; s < NS && m == 2; s++) {
                skv_sample_t out;
                if (st[m][s].want_logits) {
                    skv_sampler_next(smp[m][s], logits + (size_t)k * V, &out);
                    got[m][k++] = out.token;
                }
            }
        }
        for (int k = 0; k < n_want; k++) {
            SKV_EXPECT(got[0][k] == got[2][k] && got[1][k] == got[2][k],
                       "forward_sample step %d row %d: op %d, fallback %d, sampler %d", step, k,
                       got[0][k], got[1][k], got[2][k]);
        }
        for (int s = 0, k = 0; s < NS; s++) {
            n_ctx[s] += st[0][s].n_tokens;
            if (st[0][s].want_logits) {
                for (int m = 0; m < 2; m++) {
                    skv_sampler_accept(smp[m][s], got[2][k]);
                }
                toks[s][n_total[s]++] = got[2][k++];
            }
        }
    }
    skv_sample_row_t bad = {1.0f, 0, 1.0f, 1.0f}; /* u must be < 1 */
    skv_seq_step_t one = {toks[0] + n_ctx[0], 1, n_ctx[0], kv[0][0].blocks, kv[0][0].n_blocks, 1};
    int32_t tok;
    SKV_EXPECT(skv_model_forward_sample(f[0].model, pool[0], &one, 1, &bad, &tok) ==
                   SKV_STATUS_INVALID_ARGUMENT,
               "forward_sample: a bad row is refused");
    printf("%-28s %d steps: backend op == host fallback == host sampler\n", "forward_sample",
           NSTEP);
    for (int m = 0; m < 3; m++) {
        for (int s = 0; s < NS; s++) {
            skv_kv_seq_release(pool[m], &kv[m][s]);
            skv_sampler_destroy(smp[m][s]);
        }
        skv_kv_pool_destroy(pool[m]);
        skv_fixture_free(&f[m]);
    }
    skv_free(logits);
}

int main(int argc, char **argv)
{
    char tmp[] = "/tmp/skv_engine_XXXXXX";
    skv_test_start(argc, argv, 1, "MAKE_MODEL", tmp);
    const char *presets[2] = {"tiny", "tiny-swiftkv"};
    static int32_t greedy[N_REQ][MAX_NEW + 1], sampled[N_REQ][MAX_NEW + 1];
    static int32_t filtered[N_REQ][MAX_NEW + 1], host_some[N_REQ][MAX_NEW + 1];
    for (int p = 0; p < 2; p++) {
        char dir[512];
        snprintf(dir, sizeof(dir), "%s/%s", tmp, presets[p]);
        const char *make_args[] = {"--preset", presets[p], NULL};
        skv_test_make_model_or_exit(argv[1], dir, make_args);
        printf("== %s\n", presets[p]);
        skv_alone(dir, SKV_MIX_GREEDY, greedy);
        skv_alone(dir, SKV_MIX_SAMPLED, sampled);
        skv_alone(dir, SKV_MIX_FILTERED, filtered);
        skv_alone(dir, SKV_MIX_HOST_SOME, host_some);
        skv_check_forward_sample(dir);
        skv_batched(dir, SKV_MIX_GREEDY, 0, 32, 256, 16, greedy, "greedy, budget 32");
        skv_batched(dir, SKV_MIX_GREEDY, 1, 32, 256, 16, greedy, "greedy, host sampling");
        skv_batched(dir, SKV_MIX_GREEDY, 0, 7, 256, 5, greedy, "greedy, budget 7, block 5");
        skv_batched(dir, SKV_MIX_SAMPLED, 0, 32, 256, 16, sampled, "seeded sampling");
        skv_batched(dir, SKV_MIX_FILTERED, 0, 32, 256, 16, filtered, "top-k/top-p, backend");
        skv_batched(dir, SKV_MIX_FILTERED, 1, 32, 256, 16, filtered, "top-k/top-p, host");
        skv_batched(dir, SKV_MIX_HOST_SOME, 0, 32, 256, 16, host_some, "some need the host");
        skv_batched(dir, SKV_MIX_GREEDY, 0, 32, 14, 4, greedy, "tiny pool (preemption)");
        skv_batched(dir, SKV_MIX_SAMPLED, 0, 32, 14, 4, sampled, "tiny pool, sampled");
        skv_check_refusals_and_cancel(dir);
        skv_check_disaggregated(dir, SKV_MIX_GREEDY, 0, 0, greedy, "disaggregated greedy");
        skv_check_disaggregated(dir, SKV_MIX_SAMPLED, 0, 0, sampled, "disaggregated sampled");
        skv_check_disaggregated(dir, SKV_MIX_FILTERED, 0, 1, filtered,
                                "disaggregated, decode on host");
        skv_check_disaggregated(dir, SKV_MIX_FILTERED, 1, 0, filtered,
                                "disaggregated, prefill on host");
        skv_check_disaggregated(dir, SKV_MIX_HOST_SOME, 0, 0, host_some,
                                "disaggregated, some host");
        skv_check_thread(dir, greedy);
    }
    return skv_test_finish(tmp);
}
