/*
 * test_cuda_model: tiny models end to end, CUDA (bf16) against the CPU reference (fp32).
 *
 *   test_cuda_model [MODEL_DIR]
 *
 * With MODEL_DIR, that checkpoint runs in its own mode (SwiftKV when it has it) and as base.
 * Without, the test builds its models itself with skv_model_create_random (bit-identical
 * weights on both backends): "tiny" (plain Llama), "tiny-swiftkv" (Lk = L/2) and the same
 * with AcrossKV G = 2. For each: a 45-token prompt (chunked prefill of 20 on the GPU, with
 * a block size of 7; one chunk and block size 16 on the CPU), then 32 greedy steps on each
 * backend independently. Pass: identical tokens, and every step's logits within relative
 * error 2e-2 (||gpu - cpu|| / ||cpu||). A different token is accepted only at a near-tie (the
 * CPU's own logits of the two tokens within 2e-2 * max |logit|); it is reported, and both
 * sides then continue with the CPU's token so all 32 steps are still compared.
 *
 * Then the batching engine with tokens picked on the GPU (the sample op after each step or
 * decode-graph replay): 4 concurrent requests of 32 tokens. Greedy against the CPU engine
 * with host sampling: identical, except after a near-tie (checked on the CPU's logits of that
 * prefix, as above), where the request stops being compared. On the GPU, device picking
 * against host picking (the same GPU logits): identical, greedy and seeded top-k / top-p.
 * Exit 77 when the build or the machine has no CUDA device.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "common/model/engine.h"
#include "common/model/generate.h"
#include "base/log.h"
#include "common/model/model.h"
#include "kernels/cpu/cpu.h"

#define N_PROMPT      45
#define N_STEPS       32
#define LOGIT_TOL     2e-2
#define FP8_LOGIT_TOL 5e-2 /* both sides on fp8 KV pools (see run_case) */

typedef struct {
    skv_backend_t *be;
    skv_model_t *model;
    skv_kv_pool_t *pool;
    skv_kv_seq_t seq;
    float *logits;
} side_t;

static int side_open(side_t *s, skv_backend_t *be, const char *dir, const skv_model_config_t *cfg,
                     skv_model_mode_t mode, int32_t block_size, const char *kv_dtype)
{
    skv_model_opts_t mo = {mode, 64, 2, 256, kv_dtype, 0};
    memset(s, 0, sizeof(*s));
    s->be = be;
    skv_status_t st = dir ? skv_model_load(dir, be, &mo, &s->model)
                          : skv_model_create_random(cfg, be, &mo, 42, &s->model);
    if (st != SKV_STATUS_OK) {
        fprintf(stderr, "model on %s: %s\n", be->ops->name, skv_status_str(st));
        return -1;
    }
    skv_kv_layout_t layout;
    skv_model_kv_layout(s->model, block_size, &layout);
    if (skv_kv_pool_create(&layout, 256 / block_size + 4, be, &s->pool) != SKV_STATUS_OK) {
        return -1;
    }
    s->logits = malloc(sizeof(float) * (size_t)skv_model_config(s->model)->vocab_size);
    return 0;
}

static void side_close(side_t *s)
{
    if (s->pool) {
        skv_kv_seq_release(s->pool, &s->seq);
        skv_kv_pool_destroy(s->pool);
    }
    skv_model_destroy(s->model);
    free(s->logits);
}

static int32_t argmax(const float *v, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        best = v[i] > v[best] ? i : best;
    }
    return best;
}

/* Relative L2 error of g against c; NaN in g counts as infinite. */
static double rel_err(const float *g, const float *c, int32_t n)
{
    double num = 0, den = 0;
    for (int32_t i = 0; i < n; i++) {
        if (isnan(g[i])) {
            return INFINITY;
        }
        num += ((double)g[i] - c[i]) * ((double)g[i] - c[i]);
        den += (double)c[i] * c[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* Runs one model on both backends; returns 0 on pass. kv_dtype "fp8": both KV pools E4M3,
 * where the two sides' keys and values may round to neighbouring E4M3 values (they come
 * from bf16 on the GPU, f32 on the CPU): logits are held to FP8_LOGIT_TOL. */
static int run_case(const char *what, skv_backend_t *cpu, skv_backend_t *gpu, const char *dir,
                    const skv_model_config_t *cfg, skv_model_mode_t mode, const char *kv_dtype)
{
    side_t c, g;
    int fail = 0;
    double tol = kv_dtype ? FP8_LOGIT_TOL : LOGIT_TOL;
    if (side_open(&c, cpu, dir, cfg, mode, 16, kv_dtype) != 0 ||
        side_open(&g, gpu, dir, cfg, mode, 7, kv_dtype) != 0) {
        return 1;
    }
    int32_t V = skv_model_config(c.model)->vocab_size;
    int32_t prompt[N_PROMPT];
    uint64_t rng = 7;
    for (int i = 0; i < N_PROMPT; i++) {
        rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
        prompt[i] = (int32_t)((rng >> 33) % (uint64_t)V);
    }
    if (skv_generate_prefill(c.model, c.pool, &c.seq, prompt, N_PROMPT, 0, c.logits) != 0 ||
        skv_generate_prefill(g.model, g.pool, &g.seq, prompt, N_PROMPT, 20, g.logits) != 0) {
        fprintf(stderr, "%s: prefill failed\n", what);
        fail = 1;
    }
    double worst = 0;
    int32_t step = 0, ties = 0;
    for (; step <= N_STEPS && !fail; step++) {
        double e = rel_err(g.logits, c.logits, V);
        worst = e > worst ? e : worst;
        int32_t tc = argmax(c.logits, V), tg = argmax(g.logits, V);
        if (e > tol) {
            printf("FAIL %s: step %d logits rel err %.3e > %.0e\n", what, step, e, tol);
            fail = 1;
            break;
        }
        if (tc != tg) {
            float mx = 0;
            for (int32_t i = 0; i < V; i++) {
                mx = fabsf(c.logits[i]) > mx ? fabsf(c.logits[i]) : mx;
            }
            float gap = c.logits[tc] - c.logits[tg];
            if (gap > tol * mx) {
                printf("FAIL %s: step %d token cpu %d gpu %d (cpu gap %.4f of max %.3f)\n", what,
                       step, tc, tg, gap, mx);
                fail = 1;
                break;
            }
            printf("note %s: near-tie at step %d (cpu gap %.2e of max %.3f); continuing with "
                   "the cpu token\n",
                   what, step, gap, mx);
            ties++;
            tg = tc;
        }
        if (step == N_STEPS) {
            break;
        }
        int32_t pos = N_PROMPT + step;
        if (skv_generate_decode(c.model, c.pool, &c.seq, tc, pos, c.logits) != 0 ||
            skv_generate_decode(g.model, g.pool, &g.seq, tg, pos, g.logits) != 0) {
            fprintf(stderr, "%s: decode failed at step %d\n", what, step);
            fail = 1;
        }
    }
    if (!fail) {
        printf("ok   %s: %d greedy steps, %d near-tie(s), worst logits rel err %.3e\n", what, step,
               ties, worst);
    }
    side_close(&c);
    side_close(&g);
    return fail;
}

/* ---- the engine with device sampling ---------------------------------------------------- */

#define ENG_REQ    4
#define ENG_PROMPT 20

typedef struct {
    int32_t tok[ENG_REQ][N_STEPS];
    int32_t n[ENG_REQ];
    int done[ENG_REQ];
} eng_sink_t;

static void eng_on_token(void *ctx, uint64_t id, const skv_sample_t *s, int32_t index)
{
    eng_sink_t *k = ctx;
    if (index < N_STEPS) {
        k->tok[id][index] = s->token;
        k->n[id] = index + 1;
    }
}

static void eng_on_finish(void *ctx, uint64_t id, const skv_request_result_t *r)
{
    (void)r;
    ((eng_sink_t *)ctx)->done[id] = 1;
}

/* ENG_REQ requests of N_STEPS tokens through one engine on m; host forces host picking;
 * temperature > 0: seeded, with top-k on odd ids and top-p on even ones. Returns 0 when every
 * request finished with all its tokens and the expected path picked every step's tokens. */
static int eng_run(skv_model_t *m, int32_t block_size, int32_t (*prompts)[ENG_PROMPT], int host,
                   float temperature, eng_sink_t *k)
{
    skv_kv_pool_t *pool = NULL;
    skv_engine_t *e = NULL;
    memset(k, 0, sizeof(*k));
    skv_engine_opts_t eo = {.max_waiting = 16, .host_sampling = host};
    if (skv_model_kv_pool_create(m, block_size, ENG_REQ * (256 / block_size + 1), &pool) !=
        SKV_STATUS_OK) {
        return -1;
    }
    skv_engine_create(m, pool, &eo, &e);
    for (int i = 0; i < ENG_REQ; i++) {
        skv_request_desc_t d;
        const char *why;
        memset(&d, 0, sizeof(d));
        d.id = (uint64_t)i;
        d.prompt = prompts[i];
        d.n_prompt = ENG_PROMPT - 3 * i; /* different lengths */
        d.max_tokens = N_STEPS;
        skv_sampling_params_default(&d.sampling);
        d.sampling.temperature = temperature;
        d.sampling.top_k = i % 2 ? 40 : 0;
        d.sampling.top_p = i % 2 ? 1.0f : 0.9f;
        d.sampling.seed = 99 + (uint64_t)i;
        d.ignore_eos = 1;
        d.first_token = -1;
        d.cbs = (skv_request_cbs_t){eng_on_token, eng_on_finish, k};
        if (skv_engine_submit(e, &d, &why) != SKV_STATUS_OK) {
            fprintf(stderr, "engine submit %d: %s\n", i, why);
        }
    }
    int done = 0;
    for (int step = 0; step < 2000 && done < ENG_REQ; step++) {
        skv_engine_step(e);
        done = 0;
        for (int i = 0; i < ENG_REQ; i++) {
            done += k->done[i];
        }
    }
    skv_engine_stats_t st;
    skv_engine_stats(e, &st);
    int bad = done < ENG_REQ || st.n_backend_sampled != (host ? 0 : st.n_steps);
    for (int i = 0; i < ENG_REQ; i++) {
        bad |= k->n[i] != N_STEPS;
    }
    skv_engine_destroy(e);
    skv_kv_pool_destroy(pool);
    return bad ? -1 : 0;
}

/* Whether the CPU's logits after prompt + tokens[0..t) put `other` within LOGIT_TOL * max |logit|
 * of its own greedy token tokens[t] (a near-tie, where bf16 may pick either). */
static int eng_near_tie(skv_model_t *cpu, const int32_t *prompt, int32_t n_prompt,
                        const int32_t *tokens, int32_t t, int32_t other)
{
    int32_t V = skv_model_config(cpu)->vocab_size, seq_toks[ENG_PROMPT + N_STEPS];
    float *lg = malloc(sizeof(float) * (size_t)V);
    skv_kv_pool_t *pool = NULL;
    skv_kv_seq_t seq = {0};
    memcpy(seq_toks, prompt, sizeof(int32_t) * (size_t)n_prompt);
    memcpy(seq_toks + n_prompt, tokens, sizeof(int32_t) * (size_t)t);
    int near = 0;
    if (skv_model_kv_pool_create(cpu, 16, 256 / 16 + 1, &pool) == SKV_STATUS_OK &&
        skv_generate_prefill(cpu, pool, &seq, seq_toks, n_prompt + t, 0, lg) == SKV_STATUS_OK) {
        float mx = 0;
        for (int32_t i = 0; i < V; i++) {
            mx = fabsf(lg[i]) > mx ? fabsf(lg[i]) : mx;
        }
        near = lg[tokens[t]] - lg[other] <= LOGIT_TOL * mx;
    }
    skv_kv_seq_release(pool, &seq);
    skv_kv_pool_destroy(pool);
    free(lg);
    return near;
}

/* The engine on both backends for one model (see the file comment); returns 0 on pass. */
static int eng_case(const char *what, skv_backend_t *cpu, skv_backend_t *gpu,
                    const skv_model_config_t *cfg, skv_model_mode_t mode)
{
    skv_model_opts_t mo = {mode, 64, ENG_REQ, 256, NULL, 0};
    skv_model_t *mc = NULL, *mg = NULL;
    static eng_sink_t ref, dev, host, sdev, shost;
    int32_t prompts[ENG_REQ][ENG_PROMPT];
    int fail = 0, ties = 0;
    if (skv_model_create_random(cfg, cpu, &mo, 42, &mc) != SKV_STATUS_OK ||
        skv_model_create_random(cfg, gpu, &mo, 42, &mg) != SKV_STATUS_OK) {
        fprintf(stderr, "%s: engine models\n", what);
        return 1;
    }
    if (!skv_model_samples_on_backend(mg)) {
        printf("FAIL %s: the CUDA backend has no sample op\n", what);
        fail = 1;
        goto out;
    }
    uint64_t rng = 11;
    for (int i = 0; i < ENG_REQ; i++) {
        for (int j = 0; j < ENG_PROMPT; j++) {
            rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
            prompts[i][j] = (int32_t)((rng >> 33) % (uint64_t)cfg->vocab_size);
        }
    }
    if (eng_run(mc, 16, prompts, 1, 0.0f, &ref) || eng_run(mg, 7, prompts, 0, 0.0f, &dev) ||
        eng_run(mg, 7, prompts, 1, 0.0f, &host) || eng_run(mg, 7, prompts, 0, 0.8f, &sdev) ||
        eng_run(mg, 7, prompts, 1, 0.8f, &shost)) {
        printf("FAIL %s: an engine run did not complete on the expected path\n", what);
        fail = 1;
        goto out;
    }
    for (int i = 0; i < ENG_REQ && !fail; i++) {
        for (int t = 0; t < N_STEPS; t++) {
            if (dev.tok[i][t] == ref.tok[i][t]) {
                continue;
            }
            if (!eng_near_tie(mc, prompts[i], ENG_PROMPT - 3 * i, ref.tok[i], t, dev.tok[i][t])) {
                printf("FAIL %s: request %d token %d: gpu (device pick) %d, cpu %d\n", what, i, t,
                       dev.tok[i][t], ref.tok[i][t]);
                fail = 1;
            } else {
                printf("note %s: request %d near-tie at token %d; not compared further\n", what, i,
                       t);
                ties++;
            }
            break;
        }
    }
    if (memcmp(dev.tok, host.tok, sizeof(dev.tok)) != 0) {
        printf("FAIL %s: greedy tokens picked on the GPU differ from the host's\n", what);
        fail = 1;
    }
    if (memcmp(sdev.tok, shost.tok, sizeof(sdev.tok)) != 0) {
        printf("FAIL %s: seeded tokens picked on the GPU differ from the host's\n", what);
        fail = 1;
    }
    if (!fail) {
        printf("ok   %s: engine, %d requests x %d tokens picked on the GPU: greedy == cpu (%d "
               "near-tie(s)), greedy and seeded == host picking\n",
               what, ENG_REQ, N_STEPS, ties);
    }
out:
    skv_model_destroy(mc);
    skv_model_destroy(mg);
    return fail;
}

int main(int argc, char **argv)
{
    skv_backend_t *gpu = NULL, *cpu = NULL;
    skv_status_t st = skv_backend_create("cuda", 0, 0, &gpu);
    if (st != SKV_STATUS_OK) {
        printf("no CUDA backend/device (%s): skipping\n", skv_status_str(st));
        return 77;
    }
    if (skv_cpu_backend_create(SKV_CPU_MODE_REFERENCE, 1, &cpu) != SKV_STATUS_OK) {
        return 1;
    }
    int fails = 0;
    if (argc > 1) {
        fails += run_case("checkpoint (auto)", cpu, gpu, argv[1], NULL, SKV_MODEL_MODE_AUTO, NULL);
        fails += run_case("checkpoint (base)", cpu, gpu, argv[1], NULL, SKV_MODEL_MODE_BASE, NULL);
    } else {
        skv_model_config_t cfg;
        skv_model_config_preset("tiny", &cfg);
        fails += run_case("tiny (plain llama)", cpu, gpu, NULL, &cfg, SKV_MODEL_MODE_AUTO, NULL);
        fails += run_case("tiny fp8 KV", cpu, gpu, NULL, &cfg, SKV_MODEL_MODE_AUTO, "fp8");
        skv_model_config_preset("tiny-swiftkv", &cfg);
        fails +=
            run_case("tiny-swiftkv (Lk 2 of 4)", cpu, gpu, NULL, &cfg, SKV_MODEL_MODE_AUTO, NULL);
        fails += run_case("tiny-swiftkv fp8 KV", cpu, gpu, NULL, &cfg, SKV_MODEL_MODE_AUTO, "fp8");
        fails += run_case("tiny-swiftkv as base", cpu, gpu, NULL, &cfg, SKV_MODEL_MODE_BASE, NULL);
        cfg.kv_group = 2;
        fails +=
            run_case("tiny-swiftkv AcrossKV G 2", cpu, gpu, NULL, &cfg, SKV_MODEL_MODE_AUTO, NULL);
        skv_model_config_preset("tiny", &cfg);
        fails += eng_case("tiny (plain llama)", cpu, gpu, &cfg, SKV_MODEL_MODE_AUTO);
        skv_model_config_preset("tiny-swiftkv", &cfg);
        fails += eng_case("tiny-swiftkv (Lk 2 of 4)", cpu, gpu, &cfg, SKV_MODEL_MODE_AUTO);
    }
    gpu->ops->destroy(gpu);
    cpu->ops->destroy(cpu);
    printf("%d model case(s) failed\n", fails);
    return fails ? 1 : 0;
}
