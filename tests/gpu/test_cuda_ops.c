/*
 * test_cuda_ops: every CUDA op against the CPU reference backend over a table of shapes
 * (1 token, widths that are not multiples of a warp or tile, strided views, odd block sizes,
 * GQA ratios 1/4/8/16, long contexts that split, the Llama-3-8B sizes), and the optional
 * sample op against the host sampler.
 *
 * Inputs are drawn once per case (seeded), rounded to bf16 so both backends see the same
 * numbers, and uploaded to each (f32 on the CPU, bf16 on the GPU). GPU outputs are poisoned
 * with NaN before each run, so an unwritten element fails. Pass: no NaN, and
 * ||gpu - cpu|| / ||cpu|| under the op's tolerance (bf16 rounding: ~1e-2; copies: exact).
 * Exit 77 (skip) when the build or the machine has no CUDA device.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "base/log.h"
#include "common/model/model_config.h"
#include "common/model/sampler.h"
#include "kernels/cpu/cpu.h"

static skv_backend_t *g_cpu, *g_gpu;
static int g_failures, g_checks;
static uint64_t g_rng = 12345;

#define TOL_BF16 1e-2
#define TOL_COPY 1e-6

/* ---- helpers ------------------------------------------------------------------------- */

static uint32_t rnd_u32(void)
{
    g_rng = g_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(g_rng >> 33);
}

static float rnd_uniform(float lo, float hi)
{
    return lo + (hi - lo) * (float)rnd_u32() / 2147483648.0f;
}

static float bf16_round(float f)
{
    return skv_bf16_to_f32(skv_f32_to_bf16(f));
}

#define MAX_ALLOCS 64
static void *g_allocs[MAX_ALLOCS][2];
static int g_n_allocs;

static void *be_alloc(skv_backend_t *be, size_t bytes)
{
    void *p = NULL;
    if (be->ops->alloc(be, bytes, &p) != SKV_STATUS_OK) {
        fprintf(stderr, "alloc of %zu bytes failed\n", bytes);
        exit(1);
    }
    SKV_ASSERT(g_n_allocs < MAX_ALLOCS);
    g_allocs[g_n_allocs][0] = be;
    g_allocs[g_n_allocs++][1] = p;
    return p;
}

static void free_all(void)
{
    for (int i = g_n_allocs - 1; i >= 0; i--) {
        skv_backend_t *be = g_allocs[i][0];
        be->ops->free(be, g_allocs[i][1]);
    }
    g_n_allocs = 0;
}

static void check(skv_status_t st, const char *what)
{
    if (st != SKV_STATUS_OK) {
        fprintf(stderr, "%s failed: %s\n", what, skv_status_str(st));
        exit(1);
    }
}

/* One logical tensor on both backends: host values h (f32, bf16-exact), CPU copy c (f32),
 * GPU copy g (bf16, or i32 / f32 as asked). */
typedef struct {
    float *h;
    skv_tensor_t c, g;
} pair_t;

static void pair_upload(pair_t *p)
{
    int64_t n = p->c.rows * p->c.ld;
    memcpy(p->c.data, p->h, (size_t)n * 4);
    if (p->g.dtype == SKV_DTYPE_BF16) {
        uint16_t *b = malloc((size_t)n * 2);
        for (int64_t i = 0; i < n; i++) {
            b[i] = skv_f32_to_bf16(p->h[i]);
        }
        check(g_gpu->ops->copy_h2d(g_gpu, p->g.data, b, (size_t)n * 2), "h2d");
        check(g_gpu->ops->sync(g_gpu), "sync");
        free(b);
    } else {
        check(g_gpu->ops->copy_h2d(g_gpu, p->g.data, p->h, (size_t)n * 4), "h2d");
    }
}

/* rows x cols with row stride ld, uniform in [lo, hi), rounded to bf16. */
static pair_t pair_new(int64_t rows, int64_t cols, int64_t ld, float lo, float hi,
                       skv_dtype_t gdtype)
{
    pair_t p;
    int64_t n = rows * ld;
    p.h = malloc((size_t)(n ? n : 1) * 4);
    for (int64_t i = 0; i < n; i++) {
        p.h[i] = bf16_round(rnd_uniform(lo, hi));
    }
    p.c = skv_tensor_make(be_alloc(g_cpu, (size_t)n * 4), SKV_DTYPE_F32, rows, cols);
    p.g = skv_tensor_make(be_alloc(g_gpu, (size_t)n * skv_dtype_size(gdtype)), gdtype, rows, cols);
    p.c.ld = p.g.ld = ld;
    pair_upload(&p);
    return p;
}

/* i32 [1, n] on both backends. */
static pair_t pair_ints(const int32_t *v, int64_t n)
{
    pair_t p;
    p.h = malloc((size_t)(n ? n : 1) * 4);
    memcpy(p.h, v, (size_t)n * 4);
    p.c = skv_tensor_make(be_alloc(g_cpu, (size_t)n * 4), SKV_DTYPE_I32, 1, n);
    p.g = skv_tensor_make(be_alloc(g_gpu, (size_t)n * 4), SKV_DTYPE_I32, 1, n);
    pair_upload(&p);
    return p;
}

static void pair_free(pair_t *p)
{
    free(p->h);
}

/* Fills the GPU copy with NaN so an element the op does not write fails the comparison. */
static void pair_poison(pair_t *p)
{
    int64_t n = p->g.rows * p->g.ld;
    size_t es = skv_dtype_size(p->g.dtype);
    unsigned char *b = malloc((size_t)n * es);
    for (int64_t i = 0; i < n; i++) {
        if (es == 2) {
            ((uint16_t *)b)[i] = 0x7FC0;
        } else {
            ((uint32_t *)b)[i] = 0x7FC00000u;
        }
    }
    check(g_gpu->ops->copy_h2d(g_gpu, p->g.data, b, (size_t)n * es), "h2d");
    free(b);
}

/* Compares the [rows, cols] views (the padding of ld is not compared). */
static void pair_check(const char *what, const pair_t *p, double tol)
{
    int64_t n = p->g.rows * p->g.ld;
    size_t es = skv_dtype_size(p->g.dtype);
    unsigned char *b = malloc((size_t)(n ? n : 1) * es);
    check(g_gpu->ops->copy_d2h(g_gpu, b, p->g.data, (size_t)n * es), "d2h");
    check(g_gpu->ops->sync(g_gpu), "sync");
    double num = 0, den = 0;
    int64_t nan = 0, worst = -1;
    double worst_d = -1;
    for (int64_t r = 0; r < p->g.rows; r++) {
        for (int64_t c = 0; c < p->g.cols; c++) {
            int64_t i = r * p->g.ld + c;
            float g = es == 2 ? skv_bf16_to_f32(((uint16_t *)b)[i]) : ((float *)b)[i];
            float ref = ((float *)p->c.data)[i];
            if (isnan(g) || isnan(ref)) {
                nan++;
                continue;
            }
            double d = fabs((double)g - ref);
            num += d * d;
            den += (double)ref * ref;
            if (d > worst_d) {
                worst_d = d;
                worst = i;
            }
        }
    }
    double rel = sqrt(num) / (sqrt(den) > 1e-30 ? sqrt(den) : 1e-30);
    g_checks++;
    if (nan > 0 || rel > tol) {
        g_failures++;
        printf("FAIL %-58s rel %.3e (tol %.0e) nan %lld worst |d| %.3g at %lld\n", what, rel, tol,
               (long long)nan, worst_d, (long long)worst);
    } else {
        printf("ok   %-58s rel %.3e\n", what, rel);
    }
    free(b);
}

/* ---- element ops --------------------------------------------------------------------- */

/* pad: extra row stride of x, delta and out (0: dense rows, the 16-byte vector path). */
static void test_norms(int64_t N, int64_t H, int64_t pad)
{
    char name[128];
    pair_t x = pair_new(N, H, H + 3 * pad, -2, 2, SKV_DTYPE_BF16);
    pair_t d = pair_new(N, H, H + pad, -1, 1, SKV_DTYPE_BF16);
    pair_t w = pair_new(1, H, H, 0.5f, 1.5f, SKV_DTYPE_BF16);
    pair_t o = pair_new(N, H, H + 5 * pad, 0, 1, SKV_DTYPE_BF16);
    pair_poison(&o);
    check(g_cpu->ops->rmsnorm(g_cpu, &o.c, &x.c, &w.c, 1e-5f), "cpu rmsnorm");
    check(g_gpu->ops->rmsnorm(g_gpu, &o.g, &x.g, &w.g, 1e-5f), "gpu rmsnorm");
    snprintf(name, sizeof(name), "rmsnorm N %lld H %lld", (long long)N, (long long)H);
    pair_check(name, &o, TOL_BF16);
    /* in place: out aliases x */
    pair_t xi = pair_new(N, H, H, -2, 2, SKV_DTYPE_BF16);
    check(g_cpu->ops->rmsnorm(g_cpu, &xi.c, &xi.c, &w.c, 1e-5f), "cpu rmsnorm");
    check(g_gpu->ops->rmsnorm(g_gpu, &xi.g, &xi.g, &w.g, 1e-5f), "gpu rmsnorm");
    snprintf(name, sizeof(name), "rmsnorm in place N %lld H %lld", (long long)N, (long long)H);
    pair_check(name, &xi, TOL_BF16);
    pair_poison(&o);
    check(g_cpu->ops->add_rmsnorm(g_cpu, &x.c, &d.c, &o.c, &w.c, 1e-5f), "cpu add_rmsnorm");
    check(g_gpu->ops->add_rmsnorm(g_gpu, &x.g, &d.g, &o.g, &w.g, 1e-5f), "gpu add_rmsnorm");
    snprintf(name, sizeof(name), "add_rmsnorm x N %lld H %lld pad %lld", (long long)N, (long long)H,
             (long long)pad);
    pair_check(name, &x, TOL_BF16);
    snprintf(name, sizeof(name), "add_rmsnorm out N %lld H %lld", (long long)N, (long long)H);
    pair_check(name, &o, TOL_BF16);
    check(g_cpu->ops->add_rmsnorm(g_cpu, &x.c, &d.c, NULL, &w.c, 1e-5f), "cpu add");
    check(g_gpu->ops->add_rmsnorm(g_gpu, &x.g, &d.g, NULL, &w.g, 1e-5f), "gpu add");
    snprintf(name, sizeof(name), "add (out NULL) N %lld H %lld", (long long)N, (long long)H);
    pair_check(name, &x, TOL_BF16);
    pair_free(&x), pair_free(&d), pair_free(&w), pair_free(&o), pair_free(&xi);
    free_all();
}

static void test_matmul(int64_t N, int64_t I, int64_t O, skv_dtype_t out_dtype, int strided)
{
    char name[128];
    pair_t x = pair_new(N, I, I + (strided ? 8 : 0), -1, 1, SKV_DTYPE_BF16);
    pair_t w = pair_new(O, I, I, -0.05f, 0.05f, SKV_DTYPE_BF16);
    pair_t o = pair_new(N, O, O + (strided ? 24 : 0), 0, 1, out_dtype);
    pair_poison(&o);
    check(g_cpu->ops->matmul(g_cpu, &o.c, &x.c, &w.c), "cpu matmul");
    check(g_gpu->ops->matmul(g_gpu, &o.g, &x.g, &w.g), "gpu matmul");
    snprintf(name, sizeof(name), "matmul %lldx%lld * %lldx%lld^T -> %s%s", (long long)N,
             (long long)I, (long long)O, (long long)I, skv_dtype_name(out_dtype),
             strided ? " strided" : "");
    pair_check(name, &o, TOL_BF16);
    pair_free(&x), pair_free(&w), pair_free(&o);
    free_all();
}

/* The fused gate/up projection + SwiGLU (GPU) against matmul then swiglu (CPU); a shape the
 * fusion declines must return UNSUPPORTED. */
static void test_matmul_swiglu(int64_t N, int64_t I, int64_t F, int expect_fused)
{
    char name[128];
    pair_t x = pair_new(N, I, I + 8, -1, 1, SKV_DTYPE_BF16);
    pair_t w = pair_new(2 * F, I, I, -0.05f, 0.05f, SKV_DTYPE_BF16);
    pair_t gu = pair_new(N, 2 * F, 2 * F, 0, 1, SKV_DTYPE_BF16);
    pair_t o = pair_new(N, F, F + 8, 0, 1, SKV_DTYPE_BF16);
    pair_poison(&o);
    check(g_cpu->ops->matmul(g_cpu, &gu.c, &x.c, &w.c), "cpu matmul");
    check(g_cpu->ops->swiglu(g_cpu, &o.c, &gu.c), "cpu swiglu");
    skv_status_t st = g_gpu->ops->matmul_swiglu(g_gpu, &o.g, &x.g, &w.g);
    snprintf(name, sizeof(name), "matmul_swiglu %lldx%lld -> %lld", (long long)N, (long long)I,
             (long long)F);
    if (!expect_fused) {
        g_checks++;
        if (st != SKV_STATUS_UNSUPPORTED) {
            g_failures++;
            printf("FAIL %s: expected UNSUPPORTED, got %s\n", name, skv_status_str(st));
        } else {
            printf("ok   %s: declined (UNSUPPORTED)\n", name);
        }
    } else {
        check(st, "gpu matmul_swiglu");
        pair_check(name, &o, TOL_BF16);
    }
    pair_free(&x), pair_free(&w), pair_free(&gu), pair_free(&o);
    free_all();
}

static void fill_inv_freq(int32_t hd, float *inv)
{
    skv_model_config_t cfg;
    check(skv_model_config_preset("llama3-8b", &cfg), "preset");
    cfg.head_dim = hd; /* llama3 scaling, any head_dim */
    skv_model_config_inv_freq(&cfg, inv);
}

static void test_rope(int64_t N, int32_t nh, int32_t hd)
{
    char name[128];
    float inv[256];
    int32_t *pos = malloc((size_t)N * 4);
    fill_inv_freq(hd, inv);
    for (int64_t i = 0; i < N; i++) {
        pos[i] = i == 0 ? 0 : (int32_t)(rnd_u32() % 131072);
    }
    pair_t x = pair_new(N, (int64_t)nh * hd, (int64_t)nh * hd + 2 * hd, -1, 1, SKV_DTYPE_BF16);
    pair_t p = pair_ints(pos, N);
    pair_t f = pair_new(1, hd / 2, hd / 2, 0, 1, SKV_DTYPE_F32);
    memcpy(f.h, inv, sizeof(float) * (size_t)hd / 2);
    pair_upload(&f);
    check(g_cpu->ops->rope(g_cpu, &x.c, nh, hd, &p.c, &f.c), "cpu rope");
    check(g_gpu->ops->rope(g_gpu, &x.g, nh, hd, &p.g, &f.g), "gpu rope");
    snprintf(name, sizeof(name), "rope N %lld heads %d hd %d", (long long)N, nh, hd);
    pair_check(name, &x, TOL_BF16);
    pair_free(&x), pair_free(&p), pair_free(&f);
    free(pos);
    free_all();
}

/* pad: extra elements per row of every tensor (0 / 8 keep 16-byte rows when F % 8 == 0, so
 * the vectorized kernels run; odd pads take the element-wise ones). */
static void test_swiglu_gather_embed(int64_t N, int64_t F, int64_t pad)
{
    char name[128];
    pair_t gu = pair_new(N, 2 * F, 2 * F + pad, -4, 4, SKV_DTYPE_BF16);
    pair_t o = pair_new(N, F, F + pad, 0, 1, SKV_DTYPE_BF16);
    pair_poison(&o);
    check(g_cpu->ops->swiglu(g_cpu, &o.c, &gu.c), "cpu swiglu");
    check(g_gpu->ops->swiglu(g_gpu, &o.g, &gu.g), "gpu swiglu");
    snprintf(name, sizeof(name), "swiglu N %lld F %lld pad %lld", (long long)N, (long long)F,
             (long long)pad);
    pair_check(name, &o, TOL_BF16);
    /* gather rows of gu's first F columns (a view) into a fresh tensor */
    int64_t M = N > 3 ? 3 : N;
    int32_t idx[3];
    for (int64_t m = 0; m < M; m++) {
        idx[m] = (int32_t)(rnd_u32() % (uint32_t)N);
    }
    pair_t id = pair_ints(idx, M);
    pair_t g = pair_new(M, F, F, 0, 1, SKV_DTYPE_BF16);
    skv_tensor_t src_c = skv_tensor_cols(&gu.c, 0, F), src_g = skv_tensor_cols(&gu.g, 0, F);
    pair_poison(&g);
    check(g_cpu->ops->gather_rows(g_cpu, &g.c, &src_c, &id.c), "cpu gather");
    check(g_gpu->ops->gather_rows(g_gpu, &g.g, &src_g, &id.g), "gpu gather");
    snprintf(name, sizeof(name), "gather_rows M %lld of N %lld F %lld", (long long)M, (long long)N,
             (long long)F);
    pair_check(name, &g, TOL_COPY);
    /* embed: N tokens from a table of 37 rows */
    int32_t *tok = malloc((size_t)N * 4);
    for (int64_t i = 0; i < N; i++) {
        tok[i] = (int32_t)(rnd_u32() % 37);
    }
    pair_t t = pair_ints(tok, N);
    pair_t table = pair_new(37, F, F, -1, 1, SKV_DTYPE_BF16);
    pair_t e = pair_new(N, F, F + pad, 0, 1, SKV_DTYPE_BF16);
    pair_poison(&e);
    check(g_cpu->ops->embed(g_cpu, &e.c, &table.c, &t.c), "cpu embed");
    check(g_gpu->ops->embed(g_gpu, &e.g, &table.g, &t.g), "gpu embed");
    snprintf(name, sizeof(name), "embed N %lld H %lld", (long long)N, (long long)F);
    pair_check(name, &e, TOL_COPY);
    free(tok);
    pair_free(&gu), pair_free(&o), pair_free(&id), pair_free(&g), pair_free(&t);
    pair_free(&table), pair_free(&e);
    free_all();
}

/* weight_upload from each host dtype into rows [row0, row0 + n) of a strided bf16 weight. */
static void test_weight_upload(int64_t rows, int64_t cols)
{
    char name[128];
    skv_dtype_t srcs[3] = {SKV_DTYPE_F32, SKV_DTYPE_F16, SKV_DTYPE_BF16};
    for (int k = 0; k < 3; k++) {
        pair_t w = pair_new(rows, cols, cols + (k == 2 ? 5 : 0), 0, 1, SKV_DTYPE_BF16);
        pair_poison(&w);
        int64_t row0 = rows / 3, n = rows - row0;
        void *src = malloc((size_t)(n * cols) * 4);
        for (int64_t i = 0; i < n * cols; i++) {
            float v = bf16_round(rnd_uniform(-3, 3));
            if (srcs[k] == SKV_DTYPE_F32) {
                ((float *)src)[i] = v;
            } else if (srcs[k] == SKV_DTYPE_F16) {
                ((uint16_t *)src)[i] = skv_f32_to_f16(v);
            } else {
                ((uint16_t *)src)[i] = skv_f32_to_bf16(v);
            }
        }
        /* rows before row0: same values on both sides through a bf16 upload */
        check(g_cpu->ops->weight_upload(g_cpu, &w.c, row0, src, srcs[k], n), "cpu upload");
        check(g_gpu->ops->weight_upload(g_gpu, &w.g, row0, src, srcs[k], n), "gpu upload");
        check(g_gpu->ops->sync(g_gpu), "sync");
        free(src);
        uint16_t *b = malloc((size_t)(row0 * cols) * 2 + 2);
        for (int64_t i = 0; i < row0 * cols; i++) {
            b[i] = skv_f32_to_bf16(w.h[(i / cols) * w.c.ld + i % cols]);
        }
        check(g_cpu->ops->weight_upload(g_cpu, &w.c, 0, b, SKV_DTYPE_BF16, row0), "cpu upload");
        check(g_gpu->ops->weight_upload(g_gpu, &w.g, 0, b, SKV_DTYPE_BF16, row0), "gpu upload");
        check(g_gpu->ops->sync(g_gpu), "sync");
        free(b);
        snprintf(name, sizeof(name), "weight_upload %s %lldx%lld ld %lld", skv_dtype_name(srcs[k]),
                 (long long)rows, (long long)cols, (long long)w.c.ld);
        pair_check(name, &w, TOL_COPY);
        pair_free(&w);
        free_all();
    }
}

static void test_weight_fill(int64_t rows, int64_t cols)
{
    pair_t w = pair_new(rows, cols, cols, 0, 1, SKV_DTYPE_BF16);
    for (int64_t i = 0; i < rows * cols; i++) {
        ((float *)w.c.data)[i] = skv_weight_hash_value(77, (uint64_t)i, 1.0f / 1024, 0.0f);
    }
    pair_poison(&w);
    check(g_gpu->ops->weight_fill(g_gpu, &w.g, 77, 1.0f / 1024, 0.0f), "gpu fill");
    pair_check("weight_fill (device hash == host hash)", &w, TOL_COPY);
    pair_free(&w);
    free_all();
}

/* ---- KV cache ops and attention ------------------------------------------------------ */

typedef struct {
    int32_t n_kv_heads, head_dim, block_size, n_cache_layers;
    int64_t n_blocks;
    int fp8;     /* E4M3 pools on both backends; else f32 on the CPU, bf16 on the GPU */
    pair_t pool; /* !fp8: [n_blocks * per_block] as rows of head_dim */
    uint8_t *c8; /* fp8: the CPU pool (host memory) */
    void *g8;    /* fp8: the GPU pool */
    int64_t n8;  /* fp8: elements of each */
} kvpair_t;

static kvpair_t kv_new(int32_t kvh, int32_t hd, int32_t bs, int32_t ncl, int64_t n_blocks, int fp8)
{
    kvpair_t k = {kvh, hd, bs, ncl, n_blocks, fp8, {0}, NULL, NULL, 0};
    int64_t vecs = n_blocks * ncl * 2 * kvh * bs;
    if (!fp8) {
        k.pool = pair_new(vecs, hd, hd, -1, 1, SKV_DTYPE_BF16);
        return k;
    }
    k.n8 = vecs * hd;
    k.c8 = be_alloc(g_cpu, (size_t)k.n8);
    k.g8 = be_alloc(g_gpu, (size_t)k.n8);
    for (int64_t i = 0; i < k.n8; i++) {
        k.c8[i] = skv_f32_to_f8e4m3(rnd_uniform(-1, 1));
    }
    check(g_gpu->ops->copy_h2d(g_gpu, k.g8, k.c8, (size_t)k.n8), "h2d");
    return k;
}

static skv_kv_view_t kv_view(const kvpair_t *k, int gpu)
{
    void *base = k->fp8 ? (gpu ? k->g8 : (void *)k->c8) : (gpu ? k->pool.g.data : k->pool.c.data);
    skv_dtype_t d = k->fp8 ? SKV_DTYPE_F8E4M3 : (gpu ? SKV_DTYPE_BF16 : SKV_DTYPE_F32);
    skv_kv_view_t v = {base,       d, k->block_size, k->n_kv_heads, k->head_dim, k->n_cache_layers,
                       k->n_blocks};
    return v;
}

/* Whether E4M3 codes a and b are neighbours (one step apart, across zero included). */
static int fp8_adjacent(uint8_t a, uint8_t b)
{
    if ((a ^ b) & 0x80) {
        return (a & 0x7f) + (b & 0x7f) == 1; /* +-0 and the smallest subnormal of either sign */
    }
    return abs((int)(a & 0x7f) - (int)(b & 0x7f)) == 1;
}

/* Compares the two pools. fp8: tol 0 means byte for byte; otherwise every byte that differs
 * must be one E4M3 step from the CPU's (a rounding that sincosf tipped) and the relative L2
 * error of the decoded values must be <= tol; the differing bytes are counted in the report. */
static void kv_check(const char *what, const kvpair_t *k, double tol)
{
    if (!k->fp8) {
        pair_check(what, &k->pool, tol);
        return;
    }
    uint8_t *g = malloc((size_t)k->n8);
    check(g_gpu->ops->copy_d2h(g_gpu, g, k->g8, (size_t)k->n8), "d2h");
    check(g_gpu->ops->sync(g_gpu), "sync");
    double num = 0, den = 0;
    int64_t differ = 0, far = 0;
    for (int64_t i = 0; i < k->n8; i++) {
        double c = skv_f8e4m3_to_f32(k->c8[i]), d = skv_f8e4m3_to_f32(g[i]) - c;
        differ += g[i] != k->c8[i];
        far += g[i] != k->c8[i] && !fp8_adjacent(g[i], k->c8[i]);
        num += d * d;
        den += c * c;
    }
    double rel = sqrt(num) / (sqrt(den) > 1e-30 ? sqrt(den) : 1e-30);
    int ok = tol == 0 ? differ == 0 : rel <= tol && far == 0;
    g_checks++;
    g_failures += !ok;
    printf("%s %-58s rel %.3e, %lld of %lld bytes differ (%lld by more than a step)\n",
           ok ? "ok  " : "FAIL", what, rel, (long long)differ, (long long)k->n8, (long long)far);
    free(g);
}

static void kv_free(kvpair_t *k)
{
    if (!k->fp8) {
        pair_free(&k->pool);
    }
}

/* Attention metadata for sequences with n_new[s] query rows starting at pos0[s], each
 * with a random set of distinct blocks. */
typedef struct {
    skv_attn_meta_t c, g;
    pair_t seq_rows, row_pos, row_slot, block_table;
    int32_t *h_seq_rows, *h_row_pos;
} metapair_t;

static metapair_t meta_new(int32_t n_seqs, const int32_t *n_new, const int32_t *pos0, int32_t bs,
                           int64_t n_blocks)
{
    metapair_t mp;
    int32_t n_rows = 0, max_blocks = 1, max_ctx = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        int32_t ctx = pos0[s] + n_new[s], nb = (ctx + bs - 1) / bs;
        n_rows += n_new[s];
        max_blocks = nb > max_blocks ? nb : max_blocks;
        max_ctx = ctx > max_ctx ? ctx : max_ctx;
    }
    int32_t *perm = malloc((size_t)n_blocks * 4);
    for (int64_t i = 0; i < n_blocks; i++) {
        perm[i] = (int32_t)i;
    }
    for (int64_t i = n_blocks - 1; i > 0; i--) {
        int64_t j = rnd_u32() % (uint32_t)(i + 1);
        int32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int32_t *sr = malloc((size_t)(n_seqs + 1) * 4), *rp = malloc((size_t)n_rows * 4);
    int32_t *rs = malloc((size_t)n_rows * 4);
    int32_t *bt = calloc((size_t)n_seqs * max_blocks, 4);
    int32_t r = 0, used = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        int32_t ctx = pos0[s] + n_new[s], nb = (ctx + bs - 1) / bs;
        SKV_ASSERT(used + nb <= n_blocks);
        memcpy(bt + (size_t)s * max_blocks, perm + used, (size_t)nb * 4);
        used += nb;
        sr[s] = r;
        for (int32_t i = 0; i < n_new[s]; i++, r++) {
            int32_t p = pos0[s] + i;
            rp[r] = p;
            rs[r] = bt[(size_t)s * max_blocks + p / bs] * bs + p % bs;
        }
    }
    sr[n_seqs] = r;
    mp.seq_rows = pair_ints(sr, n_seqs + 1);
    mp.row_pos = pair_ints(rp, n_rows);
    mp.row_slot = pair_ints(rs, n_rows);
    mp.block_table = pair_ints(bt, (int64_t)n_seqs * max_blocks);
    mp.h_seq_rows = sr;
    mp.h_row_pos = rp;
    for (int gpu = 0; gpu < 2; gpu++) {
        skv_attn_meta_t *m = gpu ? &mp.g : &mp.c;
        m->n_seqs = n_seqs;
        m->n_rows = n_rows;
        m->max_blocks = max_blocks;
        m->max_ctx = max_ctx;
        m->seq_rows = gpu ? mp.seq_rows.g : mp.seq_rows.c;
        m->row_pos = gpu ? mp.row_pos.g : mp.row_pos.c;
        m->row_slot = gpu ? mp.row_slot.g : mp.row_slot.c;
        m->block_table = gpu ? mp.block_table.g : mp.block_table.c;
        m->block_table.rows = n_seqs;
        m->block_table.cols = m->block_table.ld = max_blocks;
        m->h_seq_rows = sr;
        m->h_row_pos = rp;
    }
    free(perm), free(rs), free(bt);
    return mp;
}

static void meta_free(metapair_t *mp)
{
    pair_free(&mp->seq_rows), pair_free(&mp->row_pos), pair_free(&mp->row_slot);
    pair_free(&mp->block_table);
    free(mp->h_seq_rows), free(mp->h_row_pos);
}

static int64_t blocks_needed(int32_t n_seqs, const int32_t *n_new, const int32_t *pos0, int32_t bs)
{
    int64_t n = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        n += (pos0[s] + n_new[s] + bs - 1) / bs;
    }
    return n + 2; /* spare blocks no sequence owns: must stay untouched */
}

typedef struct {
    const char *what;
    int32_t n_heads, n_kv_heads, head_dim, block_size, n_seqs;
    int32_t n_new[6], pos0[6];
} attn_case_t;

/* fp8: the pools hold E4M3 on both backends, which read the same values, so attention is
 * held to the bf16 tolerance; kv_write stores the same bytes. The SwiftKV epilogue rounds its
 * RoPE'd keys once from f32, as the CPU does; rope_kv_write stores the bf16-rounded key (it
 * equals rope then kv_write on the GPU), so about 1% of its keys land one E4M3 step from the
 * CPU's f32 -> fp8 rounding. */
static void test_attention(const attn_case_t *t, int fp8)
{
    char name[160];
    int32_t ncl = 3, layer = 1;
    const char *kd = fp8 ? " fp8" : "";
    int64_t nb = blocks_needed(t->n_seqs, t->n_new, t->pos0, t->block_size);
    kvpair_t kv = kv_new(t->n_kv_heads, t->head_dim, t->block_size, ncl, nb, fp8);
    metapair_t mp = meta_new(t->n_seqs, t->n_new, t->pos0, t->block_size, nb);
    int64_t R = mp.c.n_rows, qw = (int64_t)t->n_heads * t->head_dim;
    pair_t q =
        pair_new(R, qw, qw + 2 * (int64_t)t->n_kv_heads * t->head_dim, -1, 1, SKV_DTYPE_BF16);
    pair_t o = pair_new(R, qw, qw + 16, 0, 1, SKV_DTYPE_BF16);
    skv_kv_view_t vc = kv_view(&kv, 0), vg = kv_view(&kv, 1);
    float scale = 1.0f / sqrtf((float)t->head_dim) * 2.0f; /* sharper than 1/sqrt(d) */
    pair_poison(&o);
    check(g_cpu->ops->attention(g_cpu, &o.c, &q.c, &vc, layer, t->n_heads, scale, &mp.c),
          "cpu attention");
    check(g_gpu->ops->attention(g_gpu, &o.g, &q.g, &vg, layer, t->n_heads, scale, &mp.g),
          "gpu attention");
    snprintf(name, sizeof(name), "attention%s %s (h %d/%d hd %d bs %d rows %lld ctx %d)", kd,
             t->what, t->n_heads, t->n_kv_heads, t->head_dim, t->block_size, (long long)R,
             mp.c.max_ctx);
    pair_check(name, &o, TOL_BF16);

    /* kv_write of these rows' K/V into layer 2, then the SwiftKV epilogue into layers 0..2
     * (one op); the whole pool must match, including blocks no row owns. */
    int64_t kvw = (int64_t)t->n_kv_heads * t->head_dim;
    pair_t k = pair_new(R, kvw, kvw + 8, -1, 1, SKV_DTYPE_BF16);
    pair_t v = pair_new(R, kvw, kvw, -1, 1, SKV_DTYPE_BF16);
    check(g_cpu->ops->kv_write(g_cpu, &vc, 2, &k.c, &v.c, &mp.c), "cpu kv_write");
    check(g_gpu->ops->kv_write(g_gpu, &vg, 2, &k.g, &v.g, &mp.g), "gpu kv_write");
    snprintf(name, sizeof(name), "kv_write%s (hd %d bs %d rows %lld)", kd, t->head_dim,
             t->block_size, (long long)R);
    kv_check(name, &kv, fp8 ? 0 : TOL_COPY);
    float inv[256];
    fill_inv_freq(t->head_dim, inv);
    pair_t f = pair_new(1, t->head_dim / 2, t->head_dim / 2, 0, 1, SKV_DTYPE_F32);
    memcpy(f.h, inv, sizeof(float) * (size_t)t->head_dim / 2);
    pair_upload(&f);
    /* The fused RoPE + kv_write (GPU) against rope then kv_write (CPU), into layer 0: q|k
     * rows padded by 8 (vectorized kernel when head_dim % 16 == 0) or 3 (the unfused path). */
    for (int64_t pad = 3; pad <= 8; pad += 5) {
        int64_t qkw = (int64_t)(t->n_heads + t->n_kv_heads) * t->head_dim;
        pair_t qk = pair_new(R, qkw, qkw + pad, -1, 1, SKV_DTYPE_BF16);
        skv_tensor_t kc = skv_tensor_cols(&qk.c, qw, kvw);
        check(g_cpu->ops->rope(g_cpu, &qk.c, t->n_heads + t->n_kv_heads, t->head_dim, &mp.c.row_pos,
                               &f.c),
              "cpu rope");
        check(g_cpu->ops->kv_write(g_cpu, &vc, 0, &kc, &v.c, &mp.c), "cpu kv_write");
        check(g_gpu->ops->rope_kv_write(g_gpu, &qk.g, t->n_heads, &v.g, &vg, 0, &mp.g.row_pos, &f.g,
                                        &mp.g),
              "gpu rope_kv_write");
        snprintf(name, sizeof(name), "rope_kv_write q|k (hd %d bs %d rows %lld pad %lld)",
                 t->head_dim, t->block_size, (long long)R, (long long)pad);
        pair_check(name, &qk, TOL_BF16);
        snprintf(name, sizeof(name), "rope_kv_write pool%s (hd %d bs %d rows %lld pad %lld)", kd,
                 t->head_dim, t->block_size, (long long)R, (long long)pad);
        kv_check(name, &kv, fp8 ? 1.5e-2 : 4e-3);
        pair_free(&qk);
    }
    /* pad 4: the element-wise epilogue; pad 8: 16-byte rows, the vectorized one (hd % 16 == 0) */
    for (int64_t pad = 4; pad <= 8; pad += 4) {
        pair_t kvs = pair_new(R, 3 * 2 * kvw, 3 * 2 * kvw + pad, -1, 1, SKV_DTYPE_BF16);
        check(g_cpu->ops->swiftkv_kv_write(g_cpu, &vc, 0, 3, &kvs.c, &mp.c, &f.c), "cpu skv");
        check(g_gpu->ops->swiftkv_kv_write(g_gpu, &vg, 0, 3, &kvs.g, &mp.g, &f.g), "gpu skv");
        snprintf(name, sizeof(name), "swiftkv_kv_write%s 3 layers (hd %d bs %d rows %lld pad %lld)",
                 kd, t->head_dim, t->block_size, (long long)R, (long long)pad);
        kv_check(name, &kv, 4e-3); /* most of the pool is exact copies: tighter */
        pair_free(&kvs);
    }
    pair_free(&q), pair_free(&o), pair_free(&k), pair_free(&v), pair_free(&f);
    kv_free(&kv);
    meta_free(&mp);
    free_all();
}

/* ---- sampling ------------------------------------------------------------------------ */

static const float *g_sort_x;

static int desc_by_logit(const void *a, const void *b)
{
    float x = g_sort_x[*(const int32_t *)a], y = g_sort_x[*(const int32_t *)b];
    return x != y ? (x < y ? 1 : -1) : *(const int32_t *)a - *(const int32_t *)b;
}

/* The host sampler's filter in double precision: prob[id] = probability of id after
 * temperature, top-k and top-p (0 when filtered out). */
static void ref_filter(const float *x, int32_t V, float temp, int32_t top_k, float top_p,
                       double *prob)
{
    int32_t *idx = malloc(sizeof(int32_t) * (size_t)V);
    for (int32_t i = 0; i < V; i++) {
        idx[i] = i;
        prob[i] = 0.0;
    }
    g_sort_x = x;
    qsort(idx, (size_t)V, sizeof(int32_t), desc_by_logit);
    int32_t n = top_k > 0 && top_k < V ? top_k : V;
    double z = 0.0, cum = 0.0;
    for (int32_t i = 0; i < n; i++) {
        z += exp(((double)x[idx[i]] - x[idx[0]]) / temp);
    }
    int32_t keep = n;
    for (int32_t i = 0; i < n && top_p < 1.0f; i++) {
        cum += exp(((double)x[idx[i]] - x[idx[0]]) / temp) / z;
        if (cum >= top_p) {
            keep = i + 1;
            break;
        }
    }
    double zk = 0.0;
    for (int32_t i = 0; i < keep; i++) {
        zk += exp(((double)x[idx[i]] - x[idx[0]]) / temp);
    }
    for (int32_t i = 0; i < keep; i++) {
        prob[idx[i]] = exp(((double)x[idx[i]] - x[idx[0]]) / temp) / zk;
    }
    free(idx);
}

/* Runs the GPU sample op on M rows of V logits (row r = logits row r % n_distinct) with one
 * parameter set and per-row draws u; returns the tokens (malloc'd; poisoned with -7 first). */
static int32_t *gpu_sample(const float *logits, int32_t n_distinct, int32_t M, int32_t V,
                           const float *params3, const float *u)
{
    float *lg = malloc(sizeof(float) * (size_t)M * V);
    float *pr = malloc(sizeof(float) * (size_t)M * 4);
    for (int32_t r = 0; r < M; r++) {
        memcpy(lg + (size_t)r * V, logits + (size_t)(r % n_distinct) * V,
               sizeof(float) * (size_t)V);
        memcpy(pr + (size_t)r * 4, params3, sizeof(float) * 3);
        pr[(size_t)r * 4 + 3] = u[r];
    }
    skv_tensor_t tl =
        skv_tensor_make(be_alloc(g_gpu, sizeof(float) * (size_t)M * V), SKV_DTYPE_F32, M, V);
    skv_tensor_t tp =
        skv_tensor_make(be_alloc(g_gpu, sizeof(float) * (size_t)M * 4), SKV_DTYPE_F32, M, 4);
    skv_tensor_t tt =
        skv_tensor_make(be_alloc(g_gpu, sizeof(int32_t) * (size_t)M), SKV_DTYPE_I32, 1, M);
    check(g_gpu->ops->copy_h2d(g_gpu, tl.data, lg, sizeof(float) * (size_t)M * V), "h2d");
    check(g_gpu->ops->copy_h2d(g_gpu, tp.data, pr, sizeof(float) * (size_t)M * 4), "h2d");
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)M);
    for (int32_t r = 0; r < M; r++) {
        tok[r] = -7;
    }
    check(g_gpu->ops->copy_h2d(g_gpu, tt.data, tok, sizeof(int32_t) * (size_t)M), "h2d");
    check(g_gpu->ops->sample(g_gpu, &tt, &tl, &tp), "gpu sample");
    check(g_gpu->ops->copy_d2h(g_gpu, tok, tt.data, sizeof(int32_t) * (size_t)M), "d2h");
    check(g_gpu->ops->sync(g_gpu), "sync");
    free(lg), free(pr);
    free_all();
    return tok;
}

static void report(int ok, const char *what, double a, double b)
{
    g_checks++;
    g_failures += !ok;
    printf("%s %-58s %.4g of %.4g\n", ok ? "ok  " : "FAIL", what, a, b);
}

/* Greedy: every row's token equals the host sampler's argmax (ties: lowest id). */
static void test_sample_greedy(int32_t V, int32_t M)
{
    char name[128];
    float *x = malloc(sizeof(float) * (size_t)M * V), *u = calloc((size_t)M, sizeof(float));
    for (int64_t i = 0; i < (int64_t)M * V; i++) {
        x[i] = rnd_uniform(-10, 10);
    }
    if (V > 2 && M > 1) { /* an exact tie for the max in row 1: the lower id wins */
        x[V + V - 1] = x[V + 1] = 11.0f;
    }
    float params[3] = {0.0f, 0.0f, 1.0f};
    int32_t *tok = gpu_sample(x, M, M, V, params, u);
    skv_sampling_params_t sp;
    skv_sampling_params_default(&sp);
    int32_t bad = 0;
    for (int32_t r = 0; r < M; r++) {
        skv_sampler_t *smp = NULL;
        skv_sample_t out;
        check(skv_sampler_create(&sp, V, &smp), "sampler");
        check(skv_sampler_next(smp, x + (size_t)r * V, &out), "sampler next");
        bad += out.token != tok[r];
        skv_sampler_destroy(smp);
    }
    snprintf(name, sizeof(name), "sample greedy V %d: rows != host sampler", V);
    report(bad == 0, name, bad, M);
    free(x), free(u), free(tok);
}

/* Temperature + top-k + top-p over M draws of one row: every id inside the host filter's set,
 * almost every row equal to the host's id-order draw with the same u (rounding may move a
 * draw that lands on a boundary), and frequencies close to the filtered probabilities. */
static void test_sample_filtered(int32_t V, int32_t M, float temp, int32_t top_k, float top_p)
{
    char name[128];
    float *x = malloc(sizeof(float) * (size_t)V), *u = malloc(sizeof(float) * (size_t)M);
    double *prob = malloc(sizeof(double) * (size_t)V), *freq = calloc((size_t)V, sizeof(double));
    for (int32_t i = 0; i < V; i++) {
        x[i] = rnd_uniform(-4, 4);
    }
    for (int32_t r = 0; r < M; r++) {
        u[r] = rnd_uniform(0, 1);
    }
    ref_filter(x, V, temp, top_k, top_p, prob);
    float params[3] = {temp, (float)top_k, top_p};
    int32_t *tok = gpu_sample(x, 1, M, V, params, u);
    int32_t outside = 0, differ = 0;
    for (int32_t r = 0; r < M; r++) {
        if (tok[r] < 0 || tok[r] >= V || prob[tok[r]] == 0.0) {
            outside++;
            continue;
        }
        freq[tok[r]] += 1.0 / M;
        double cum = 0.0;
        int32_t want = -1;
        for (int32_t i = 0; i < V && want < 0; i++) {
            cum += prob[i];
            want = cum > u[r] ? i : -1;
        }
        differ += want != tok[r];
    }
    double tv = 0.0;
    for (int32_t i = 0; i < V; i++) {
        tv += 0.5 * fabs(freq[i] - prob[i]);
    }
    snprintf(name, sizeof(name), "sample T %.1f k %d p %.2f V %d: rows outside set", temp, top_k,
             top_p, V);
    report(outside == 0, name, outside, M);
    snprintf(name, sizeof(name), "sample T %.1f k %d p %.2f V %d: rows != host draw", temp, top_k,
             top_p, V);
    report(differ * 100 <= M, name, differ, M);
    if (M >= 1000) { /* expected total variation at 4096 draws: ~0.02-0.04 */
        snprintf(name, sizeof(name), "sample T %.1f k %d p %.2f V %d: TV distance, draws", temp,
                 top_k, top_p, V);
        report(tv < 0.1, name, tv, M);
    }
    free(x), free(u), free(prob), free(freq), free(tok);
}

static void test_sample(void)
{
    if (g_gpu->ops->sample == NULL) {
        printf("note sample op absent: not tested\n");
        return;
    }
    test_sample_greedy(1, 2);
    test_sample_greedy(1000, 7);
    test_sample_greedy(128256, 3);
    test_sample_filtered(512, 4096, 0.8f, 40, 1.0f);
    test_sample_filtered(512, 4096, 1.2f, 0, 0.8f);
    test_sample_filtered(512, 4096, 1.0f, 100, 0.9f);
    test_sample_filtered(128256, 8, 1.0f, 50, 0.95f);
    test_sample_filtered(128256, 8, 0.7f, 0, 0.5f);
}

static const attn_case_t g_attn_cases[] = {
    {"1 token", 4, 4, 64, 16, 1, {1}, {0}},
    {"decode GQA 1", 8, 8, 64, 16, 2, {1, 1}, {3000, 17}},
    {"prefill + chunk + decode, odd bs", 8, 2, 128, 7, 3, {70, 130, 1}, {0, 37, 200}},
    {"decode GQA 8 long (splits)", 32, 4, 128, 16, 3, {1, 1, 1}, {5000, 4095, 64}},
    {"hd 96 rows kernel", 12, 4, 96, 5, 2, {40, 3}, {10, 0}},
    {"GQA 16 (head chunks)", 16, 1, 64, 32, 3, {2, 17, 1}, {300, 0, 999}},
    {"short chunk 17 rows", 8, 2, 64, 3, 1, {17}, {5}},
    {"llama3-8b prefill 256", 32, 8, 128, 16, 1, {256}, {0}},
    {"llama3-8b decode x4 ctx 1.5k", 32, 8, 128, 16, 4, {1, 1, 1, 1}, {1500, 1499, 700, 2047}},
    /* Tensor-core prefill: lengths around the 64-row / 64-key tiles, 1-row sequences in the
     * same batch, chunks that start mid-block and mid-tile, GQA 4 and 8. */
    {"prefill odd lengths GQA 8", 32, 4, 128, 16, 5, {1, 63, 65, 200, 17}, {0, 0, 129, 1000, 63}},
    {"prefill hd 64 GQA 4 chunks", 16, 4, 64, 16, 3, {100, 33, 257}, {5, 300, 0}},
    {"prefill GQA 1 bs 7", 4, 4, 128, 7, 2, {129, 64}, {0, 64}},
    {"llama3-8b prefill 600 + 333 + chunk", 32, 8, 128, 16, 3, {600, 333, 129}, {0, 0, 700}},
    /* Decode kernel: contexts 1, 2, 3 and odd ones around the splits and warp steps, 2k,
     * GQA 2/4/8, block sizes 7 and 16, head_dim 64 and 128, a few rows per sequence. */
    {"decode GQA 4 bs 7 odd ctx", 32, 8, 128, 7, 5, {1, 1, 1, 1, 1}, {0, 2, 1032, 2046, 65}},
    {"decode GQA 8 bs 16 ctx 2k", 64, 8, 128, 16, 4, {1, 1, 1, 1}, {2047, 1, 777, 16}},
    {"decode hd 64 GQA 4 bs 7", 16, 4, 64, 7, 3, {1, 1, 1}, {2047, 130, 0}},
    {"decode hd 64 GQA 8 bs 16", 16, 2, 64, 16, 2, {1, 1}, {1999, 31}},
    {"decode GQA 2 rows 3 + 5", 8, 4, 128, 16, 2, {3, 5}, {1000, 62}},
};

int main(int argc, char **argv)
{
    skv_status_t st = skv_backend_create("cuda", 0, 0, &g_gpu);
    if (st != SKV_STATUS_OK) {
        printf("no CUDA backend/device (%s): skipping\n", skv_status_str(st));
        return 77;
    }
    check(skv_cpu_backend_create(SKV_CPU_MODE_REFERENCE, 1, &g_cpu), "cpu backend");
    int quick = argc > 1 && strcmp(argv[1], "--quick") == 0; /* for compute-sanitizer runs */

    int64_t norm_shapes[][3] = {{1, 64, 1},    {7, 100, 1},  {33, 4096, 1}, {300, 1000, 1},
                                {2, 4097, 1},  {1, 4096, 0}, {65, 512, 0},  {3, 1000, 0},
                                {2, 16384, 1}, {1, 20480, 1}};
    for (size_t i = 0; i < sizeof(norm_shapes) / sizeof(norm_shapes[0]); i++) {
        test_norms(norm_shapes[i][0], norm_shapes[i][1], norm_shapes[i][2]);
    }
    test_matmul(1, 64, 96, SKV_DTYPE_BF16, 0);
    test_matmul(7, 100, 37, SKV_DTYPE_BF16, 1);
    test_matmul(5, 256, 1000, SKV_DTYPE_F32, 1);
    if (!quick) {
        test_matmul(33, 4096, 6144, SKV_DTYPE_BF16, 0); /* llama3-8b fused qkv */
        test_matmul(7, 14336, 4096, SKV_DTYPE_BF16, 0); /* down_proj */
        test_matmul(3, 4096, 28672, SKV_DTYPE_BF16, 1); /* gate_up */
        test_matmul(2, 4096, 128256, SKV_DTYPE_F32, 0); /* logits */
        /* few rows: the GEMV kernel (M <= 4, 16-byte rows), then cuBLAS again above it */
        test_matmul(1, 4096, 6144, SKV_DTYPE_BF16, 0);
        test_matmul(4, 14336, 4096, SKV_DTYPE_BF16, 1);
        test_matmul(1, 4096, 128256, SKV_DTYPE_F32, 0);
        test_matmul(5, 4096, 4096, SKV_DTYPE_BF16, 0);
    }
    test_matmul(1, 4104, 77, SKV_DTYPE_BF16, 1); /* a tail of vectors, O not whole blocks */
    test_matmul_swiglu(1, 256, 333, 1);
    test_matmul_swiglu(3, 4104, 64, 1);
    test_matmul_swiglu(9, 256, 100, 0);
    if (!quick) {
        test_matmul_swiglu(1, 4096, 14336, 1); /* llama3-8b MLP */
        test_matmul_swiglu(4, 4096, 14336, 1);
    }
    test_matmul(3, 256, 1000, SKV_DTYPE_F32, 1);
    test_matmul(2, 8, 5, SKV_DTYPE_BF16, 0);
    test_rope(1, 1, 64);
    test_rope(9, 5, 96);
    test_rope(64, 32, 128);
    test_rope(17, 8, 128);
    test_rope(3, 4, 10); /* head_dim % 16 != 0: the element-wise kernel */
    test_swiglu_gather_embed(1, 64, 3);
    test_swiglu_gather_embed(1, 64, 0);
    test_swiglu_gather_embed(13, 333, 7);
    test_swiglu_gather_embed(13, 336, 8);
    test_swiglu_gather_embed(40, 14336, 3);
    test_swiglu_gather_embed(40, 14336, 0);
    test_weight_upload(7, 100);
    test_weight_upload(300, 4096);
    test_weight_fill(33, 517);
    size_t n_cases = sizeof(g_attn_cases) / sizeof(g_attn_cases[0]);
    for (size_t i = 0; i < n_cases; i++) {
        if (!quick || i < 3 || i == 4 || i == 5 || i == 9 || i == 10 || i == 13 || i == 15) {
            test_attention(&g_attn_cases[i], 0);
        }
    }
    /* The fp8 pool on every kernel: decode and rows (head_dim 96), the mma prefill (64-key
     * tiles, odd lengths, chunks), both head_dims. */
    if (g_gpu->ops->kv_dtypes & (1u << SKV_DTYPE_F8E4M3)) {
        for (size_t i = 0; i < n_cases; i++) {
            if (!quick || i == 2 || i == 4 || i == 9 || i == 13) {
                test_attention(&g_attn_cases[i], 1);
            }
        }
    } else {
        printf("note fp8 KV pools not taken by this backend: not tested\n");
    }
    test_sample();
    g_gpu->ops->destroy(g_gpu);
    g_cpu->ops->destroy(g_cpu);
    printf("%d of %d checks failed\n", g_failures, g_checks);
    return g_failures ? 1 : 0;
}
