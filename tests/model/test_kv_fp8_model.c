/*
 * test_kv_fp8_model.c: models running on an fp8 E4M3 KV cache (opts.kv_dtype "fp8"), CPU
 * backend in reference mode (deterministic), tiny and tiny-swiftkv presets of skv_make_model:
 *   - the layout: 1-byte elements (a quarter of the f32 block), its own layout and model
 *     fingerprints (workers of different KV dtypes refuse to transfer); "bf16" (not a CPU KV
 *     dtype) and an unknown name are refused at load;
 *   - exactness end to end: chunked prefill and decode on the fp8 cache give bit for bit the
 *     logits of the f32 cache whose K/V are rounded through fp8 as they are written (the same
 *     CPU backend with its KV write ops followed by that rounding), so the only difference
 *     from the f32 cache is the quantization;
 *   - accuracy against the plain f32 cache, teacher-forced (decode fed the f32 run's greedy
 *     tokens): every logits row within SKV_FP8_REL_TOL relative L2, the greedy choice the same
 *     for at least SKV_FP8_MIN_AGREE of the rows, and the first free-running greedy token the
 *     same for at least SKV_FP8_MIN_FIRST of the prompts. The same numbers for a bf16-rounded
 *     cache are printed beside them as the scale: these random models (weights of std 0.25,
 *     peaky attention) amplify any KV rounding, bf16's by the same factor as fp8's.
 * usage: test_kv_fp8_model MAKE_MODEL
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "common/model/generate.h"
#include "base/log.h"
#include "kernels/cpu/cpu.h"
#include "tests/common/skv_test.h"

#define N_PROMPTS 8
#define N_STEPS   16 /* logits rows per prompt: after the prompt, then 15 decode steps */
#define N_GEN     12 /* free-running greedy tokens */

/* Measured (tiny / tiny-swiftkv) against the f32 cache: relative L2 worst 0.43 / 0.51, mean
 * 0.16 / 0.17; argmax agreement 0.77 / 0.70; first greedy token equal for 6 / 7 of 8 prompts
 * (common greedy prefix 2.8 / 3.5 of 12 on average). A bf16-rounded cache gives 0.035 worst,
 * 0.011 mean, agreement 0.97 / 0.99: fp8's 3 mantissa bits against bf16's 8 scale the error
 * by ~16. The bounds leave room over the fp8 numbers; wrong values in the cache (f32 bits
 * read as fp8, a dropped write) give errors of order 1 and chance agreement. */
#define SKV_FP8_REL_TOL   0.75
#define SKV_FP8_MIN_AGREE 0.60
#define SKV_FP8_MIN_FIRST 4

/* ---- the f32 cache with rounded K/V: the CPU backend, its KV writes then rounded ---------- */

static const skv_ops_t *skv_real_ops; /* the CPU table */
static skv_ops_t skv_round_ops[2];    /* [0]: rounds through fp8, [1]: through bf16 */

static float skv_round_f8(float f)
{
    return skv_f8e4m3_to_f32(skv_f32_to_f8e4m3(f));
}

static float skv_round_bf16(float f)
{
    return skv_bf16_to_f32(skv_f32_to_bf16(f));
}

static float (*skv_rounder(const skv_backend_t *be))(float)
{
    return be->ops == &skv_round_ops[0] ? skv_round_f8 : skv_round_bf16;
}

/* Rounds the head_dim vector of (slot, layer, t, head) of an f32 pool in place. */
static void skv_round_vec(const skv_kv_view_t *kv, int32_t slot, int32_t layer, int32_t t,
                          int32_t head, float (*rnd)(float))
{
    int64_t block = slot / kv->block_size, off = slot % kv->block_size;
    int64_t idx = ((block * kv->n_cache_layers + layer) * 2 + t) * kv->n_kv_heads + head;
    float *v = (float *)kv->base + (idx * kv->block_size + off) * kv->head_dim;
    for (int32_t d = 0; d < kv->head_dim; d++) {
        v[d] = rnd(v[d]);
    }
}

static skv_status_t skv_round_kv_write(skv_backend_t *be, const skv_kv_view_t *kv,
                                       int32_t cache_layer, const skv_tensor_t *k,
                                       const skv_tensor_t *v, const skv_attn_meta_t *meta)
{
    SKV_CHECK(skv_real_ops->kv_write(be, kv, cache_layer, k, v, meta));
    for (int64_t r = 0; r < k->rows; r++) {
        int32_t slot = ((const int32_t *)meta->row_slot.data)[r];
        for (int32_t h = 0; h < kv->n_kv_heads; h++) {
            skv_round_vec(kv, slot, cache_layer, 0, h, skv_rounder(be));
            skv_round_vec(kv, slot, cache_layer, 1, h, skv_rounder(be));
        }
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_round_swiftkv_kv_write(skv_backend_t *be, const skv_kv_view_t *kv,
                                               int32_t first_layer, int32_t n_layers,
                                               const skv_tensor_t *kvs, const skv_attn_meta_t *meta,
                                               const skv_tensor_t *inv_freq)
{
    SKV_CHECK(skv_real_ops->swiftkv_kv_write(be, kv, first_layer, n_layers, kvs, meta, inv_freq));
    for (int64_t r = 0; r < kvs->rows; r++) {
        int32_t slot = ((const int32_t *)meta->row_slot.data)[r];
        for (int32_t g = 0; g < n_layers; g++) {
            for (int32_t h = 0; h < kv->n_kv_heads; h++) {
                skv_round_vec(kv, slot, first_layer + g, 0, h, skv_rounder(be));
                skv_round_vec(kv, slot, first_layer + g, 1, h, skv_rounder(be));
            }
        }
    }
    return SKV_STATUS_OK;
}

/* A CPU backend; rounding 0: plain, 1: KV rounded through fp8, 2: through bf16. */
static skv_backend_t *skv_backend(int rounding)
{
    skv_backend_t *be = NULL;
    if (skv_cpu_backend_create(SKV_CPU_MODE_REFERENCE, 1, &be) != SKV_STATUS_OK) {
        exit(1);
    }
    if (rounding > 0) {
        skv_real_ops = be->ops;
        skv_ops_t *t = &skv_round_ops[rounding - 1];
        *t = *be->ops;
        t->kv_write = skv_round_kv_write;
        t->swiftkv_kv_write = skv_round_swiftkv_kv_write;
        SKV_ASSERT(t->rope_kv_write == NULL); /* would need rounding too */
        be->ops = t;
    }
    return be;
}

/* ---- runs --------------------------------------------------------------------------------- */

typedef struct {
    skv_backend_t *be;
    skv_model_t *model;
    skv_kv_pool_t *pool;
} skv_run_t;

static skv_status_t skv_run_open(const char *dir, int rounding, const char *kv_dtype, skv_run_t *r)
{
    skv_model_opts_t mo = {SKV_MODEL_MODE_AUTO, 16, 1, 256, kv_dtype, 0};
    memset(r, 0, sizeof(*r));
    r->be = skv_backend(rounding);
    SKV_CHECK(skv_model_load(dir, r->be, &mo, &r->model));
    return skv_model_kv_pool_create(r->model, 16, 8, &r->pool);
}

static void skv_run_close(skv_run_t *r)
{
    skv_kv_pool_destroy(r->pool);
    skv_model_destroy(r->model);
    r->be->ops->destroy(r->be);
}

static void skv_prompt(int i, int32_t *p, int32_t *n)
{
    *n = 1 + (i * 11) % 40; /* 1..34 tokens: up to 3 prefill chunks of 16 */
    for (int32_t j = 0; j < *n; j++) {
        p[j] = (int32_t)((i * 193 + j * 29 + 5) % 1000);
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

/* Prefill prompt (chunks of 16), then N_STEPS - 1 decode steps fed with feed[] (NULL: the
 * run's own greedy tokens, written to feed_out). logits [N_STEPS, V]. */
static skv_status_t skv_trace(skv_run_t *r, const int32_t *prompt, int32_t n, const int32_t *feed,
                              int32_t *feed_out, float *logits)
{
    int32_t V = skv_model_config(r->model)->vocab_size;
    skv_kv_seq_t seq = {0};
    skv_status_t status = skv_generate_prefill(r->model, r->pool, &seq, prompt, n, 16, logits);
    for (int32_t s = 1; s < N_STEPS && status == SKV_STATUS_OK; s++) {
        int32_t tok = feed ? feed[s - 1] : skv_argmax(logits + (size_t)(s - 1) * V, V);
        if (feed_out != NULL) {
            feed_out[s - 1] = tok;
        }
        status =
            skv_generate_decode(r->model, r->pool, &seq, tok, n + s - 1, logits + (size_t)s * V);
    }
    skv_kv_seq_release(r->pool, &seq);
    return status;
}

/* Greedy tokens of a free-running generation. */
static int32_t skv_greedy(skv_run_t *r, const int32_t *prompt, int32_t n, int32_t *out)
{
    skv_generate_opts_t o;
    int32_t n_out = 0;
    memset(&o, 0, sizeof(o));
    o.max_new_tokens = N_GEN;
    o.chunk_tokens = 16;
    o.ignore_eos = 1;
    skv_sampling_params_default(&o.sampling);
    skv_status_t s = skv_generate(r->model, r->pool, prompt, n, &o, NULL, NULL, out, &n_out);
    return s == SKV_STATUS_OK ? n_out : -1;
}

static double skv_rel_l2(const float *a, const float *ref, int32_t n)
{
    double num = 0.0, den = 0.0;
    for (int32_t i = 0; i < n; i++) {
        double d = (double)a[i] - ref[i];
        num += isnan(a[i]) ? INFINITY : d * d;
        den += (double)ref[i] * ref[i];
    }
    return sqrt(num / (den > 0.0 ? den : 1.0));
}

/* How one run's logits and greedy tokens compare with the f32 run's. */
typedef struct {
    double worst_rel, mean_rel;
    int32_t agree, rows;
    int32_t first_same; /* prompts whose first free-running greedy token is the same */
    double mean_prefix; /* greedy tokens in common before the first difference */
    int32_t bit_differ; /* rows not bit-identical to the exact reference */
} skv_cmp_t;

static void skv_cmp_rows(skv_cmp_t *c, const float *got, const float *ref, int32_t V)
{
    for (int32_t s = 0; s < N_STEPS; s++) {
        const float *a = got + (size_t)s * V, *b = ref + (size_t)s * V;
        double rel = skv_rel_l2(a, b, V);
        c->worst_rel =
            isnan(rel) || rel > c->worst_rel ? (isnan(rel) ? INFINITY : rel) : c->worst_rel;
        c->mean_rel += rel / (N_PROMPTS * N_STEPS);
        c->agree += skv_argmax(a, V) == skv_argmax(b, V);
        c->rows++;
    }
}

static void skv_cmp_greedy(skv_cmp_t *c, const int32_t *got, const int32_t *ref)
{
    int32_t k = 0;
    while (k < N_GEN && got[k] == ref[k]) {
        k++;
    }
    c->first_same += k > 0;
    c->mean_prefix += (double)k / N_PROMPTS;
}

static void skv_check_layout(const skv_run_t *r32, const skv_run_t *r8, const char *name)
{
    skv_kv_layout_t l32, l8;
    skv_model_kv_layout(r32->model, 16, &l32);
    skv_model_kv_layout(r8->model, 16, &l8);
    SKV_EXPECT(l8.dtype == SKV_DTYPE_F8E4M3 && l32.dtype == SKV_DTYPE_F32,
               "%s: layout dtypes %s / %s", name, skv_dtype_name(l32.dtype),
               skv_dtype_name(l8.dtype));
    SKV_EXPECT(skv_kv_layout_block_bytes(&l8) * 4 == skv_kv_layout_block_bytes(&l32) &&
                   skv_kv_pool_bytes(r8->pool) * 4 == skv_kv_pool_bytes(r32->pool),
               "%s: fp8 block %zu bytes, f32 block %zu", name, skv_kv_layout_block_bytes(&l8),
               skv_kv_layout_block_bytes(&l32));
    SKV_EXPECT(skv_kv_layout_fingerprint(&l8) != skv_kv_layout_fingerprint(&l32) &&
                   skv_kv_layout_model_fingerprint(&l8) != skv_kv_layout_model_fingerprint(&l32),
               "%s: the KV dtype changes the layout and model fingerprints", name);
}

static void skv_check_refused(const char *dir)
{
    const char *names[2] = {"bf16", "fp4"};
    const skv_status_t want[2] = {SKV_STATUS_UNSUPPORTED, SKV_STATUS_INVALID_ARGUMENT};
    for (int i = 0; i < 2; i++) {
        skv_run_t r;
        skv_status_t s = skv_run_open(dir, 0, names[i], &r);
        SKV_EXPECT(s == want[i], "kv dtype %s on the cpu backend: %s, expected %s", names[i],
                   skv_status_str(s), skv_status_str(want[i]));
        if (s == SKV_STATUS_OK) {
            skv_run_close(&r);
        } else {
            r.be->ops->destroy(r.be);
        }
    }
}

enum { RUN_F32, RUN_FP8, RUN_F32_Q8, RUN_F32_QBF, N_RUNS };

static void skv_check_model(const char *dir, const char *name)
{
    static const struct {
        int rounding;
        const char *kv_dtype;
    } how[N_RUNS] = {{0, "auto"}, {0, "fp8"}, {1, "f32"}, {2, "f32"}};
    skv_run_t run[N_RUNS];
    for (int k = 0; k < N_RUNS; k++) {
        if (skv_run_open(dir, how[k].rounding, how[k].kv_dtype, &run[k]) != SKV_STATUS_OK) {
            fprintf(stderr, "%s: cannot load the model\n", name);
            exit(1);
        }
    }
    skv_check_layout(&run[RUN_F32], &run[RUN_FP8], name);
    int32_t V = skv_model_config(run[RUN_F32].model)->vocab_size;
    float *lg[N_RUNS];
    for (int k = 0; k < N_RUNS; k++) {
        lg[k] = skv_mallocn((size_t)N_STEPS * V, sizeof(float));
    }
    skv_cmp_t fp8 = {0}, bf16 = {0};
    for (int i = 0; i < N_PROMPTS; i++) {
        int32_t p[64], n, feed[N_STEPS], g[N_RUNS][N_GEN];
        skv_prompt(i, p, &n);
        for (int k = 0; k < N_RUNS; k++) {
            skv_status_t s = skv_trace(&run[k], p, n, k ? feed : NULL, k ? NULL : feed, lg[k]);
            int32_t ng = skv_greedy(&run[k], p, n, g[k]);
            SKV_EXPECT(s == SKV_STATUS_OK && ng == N_GEN, "%s: prompt %d run %d: %s, %d tokens",
                       name, i, k, skv_status_str(s), ng);
        }
        fp8.bit_differ += memcmp(lg[RUN_FP8], lg[RUN_F32_Q8], sizeof(float) * N_STEPS * V) != 0;
        fp8.bit_differ += memcmp(g[RUN_FP8], g[RUN_F32_Q8], sizeof(g[0])) != 0;
        skv_cmp_rows(&fp8, lg[RUN_FP8], lg[RUN_F32], V);
        skv_cmp_rows(&bf16, lg[RUN_F32_QBF], lg[RUN_F32], V);
        skv_cmp_greedy(&fp8, g[RUN_FP8], g[RUN_F32]);
        skv_cmp_greedy(&bf16, g[RUN_F32_QBF], g[RUN_F32]);
    }
    SKV_EXPECT(fp8.bit_differ == 0,
               "%s: %d prompts: the fp8 cache differs from the f32 cache of fp8-rounded K/V", name,
               fp8.bit_differ);
    const skv_cmp_t *cs[2] = {&fp8, &bf16};
    for (int k = 0; k < 2; k++) {
        const skv_cmp_t *c = cs[k];
        printf("%-13s %-4s KV vs f32 KV: %d logits rows (teacher-forced): relative L2 worst %.3f "
               "mean %.3f, argmax agreement %.3f; free-running greedy: first token equal for %d "
               "of %d prompts, common prefix %.1f of %d\n",
               name, k ? "bf16" : "fp8", c->rows, c->worst_rel, c->mean_rel,
               (double)c->agree / c->rows, c->first_same, N_PROMPTS, c->mean_prefix, N_GEN);
    }
    printf("%-13s fp8 cache == f32 cache of fp8-rounded K/V: %s\n", name,
           fp8.bit_differ ? "NO" : "bit for bit");
    SKV_EXPECT(fp8.worst_rel <= SKV_FP8_REL_TOL, "%s: relative logits error %.3f > %.2f", name,
               fp8.worst_rel, SKV_FP8_REL_TOL);
    SKV_EXPECT((double)fp8.agree / fp8.rows >= SKV_FP8_MIN_AGREE,
               "%s: argmax agreement %.3f < %.2f", name, (double)fp8.agree / fp8.rows,
               SKV_FP8_MIN_AGREE);
    SKV_EXPECT(fp8.first_same >= SKV_FP8_MIN_FIRST, "%s: first greedy token equal for %d prompts",
               name, fp8.first_same);
    for (int k = 0; k < N_RUNS; k++) {
        SKV_EXPECT(skv_kv_pool_n_free(run[k].pool) == 8, "%s: run %d leaked blocks", name, k);
        skv_free(lg[k]);
        skv_run_close(&run[k]);
    }
}

int main(int argc, char **argv)
{
    char tmp[] = "/tmp/skv_fp8_XXXXXX";
    skv_test_start(argc, argv, 1, "MAKE_MODEL", tmp);
    const char *presets[2] = {"tiny", "tiny-swiftkv"};
    for (int i = 0; i < 2; i++) {
        char dir[512];
        snprintf(dir, sizeof(dir), "%s/%s", tmp, presets[i]);
        const char *args[] = {"--preset", presets[i], NULL};
        skv_test_make_model_or_exit(argv[1], dir, args);
        if (i == 0) {
            skv_check_refused(dir);
        }
        skv_check_model(dir, presets[i]);
    }
    return skv_test_finish(tmp);
}
