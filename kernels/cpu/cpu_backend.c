/*
 * cpu_backend.c: the CPU implementation of skv_ops_t (reference and fast modes).
 *
 * All tensors are f32 except i32 metadata and the KV pool, which is f32 (the default) or fp8
 * E4M3 (quantized on write by skv_f32_to_f8e4m3, widened on read through a 256-entry table of
 * skv_f8e4m3_to_f32; the math is f32 either way, so an fp8 pool gives exactly what an f32
 * pool holding the same rounded values gives). Memory is plain host memory, so copies are
 * memcpy and sync is a no-op. FAST mode threads with OpenMP over independent rows/heads; every op
 * writes disjoint outputs per thread, so results do not depend on the thread count except
 * through BLAS summation order. REFERENCE mode runs the same loops single-threaded and does
 * GEMMs with a plain dot product per output element.
 */
#include "kernels/cpu/cpu.h"
#include "kernels/cpu/cpu_sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef SKV_HAVE_OPENBLAS
#include <cblas.h>
#endif
#ifdef _OPENMP
#include <omp.h>
#endif

#include "base/alloc.h"
#include "base/log.h"

typedef struct {
    skv_backend_t base;
    skv_cpu_mode_t mode;
    int n_threads;
    float f8_to_f32[256]; /* skv_f8e4m3_to_f32 of every code: fp8 KV widened by lookup */
} skv_cpu_backend_t;

/* The KV pool dtypes the KV ops below read and write (the ops table's kv_dtypes). */
#define SKV_CPU_KV_DTYPES ((1u << SKV_DTYPE_F32) | (1u << SKV_DTYPE_F8E4M3))

/* The longest head vector the KV ops stage on the stack (the model refuses longer heads). */
#define SKV_CPU_MAX_HEAD_DIM 512

/* Number of OpenMP threads an op may use: 1 in reference mode. */
static int skv_cpu_threads(skv_backend_t *be)
{
    skv_cpu_backend_t *cpu = (skv_cpu_backend_t *)be;
    return cpu->mode == SKV_CPU_MODE_FAST ? cpu->n_threads : 1;
}

#define SKV_F32(t, r, c) (((float *)(t)->data)[(int64_t)(r) * (t)->ld + (c)])
#define SKV_I32(t, i) (((const int32_t *)(t)->data)[i])

static void skv_cpu_destroy(skv_backend_t *be)
{
    skv_free(be);
}

static skv_status_t skv_cpu_alloc(skv_backend_t *be, size_t bytes, void **ptr_p)
{
    /* 64-byte alignment for vector loads; zeroed so a fresh KV pool never holds garbage. */
    void *p = NULL;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (posix_memalign(&p, 64, rounded ? rounded : 64) != 0) {
        SKV_LOG_ERROR("cpu backend: cannot allocate %zu bytes", bytes);
        return SKV_STATUS_NO_MEMORY;
    }
    memset(p, 0, rounded);
    *ptr_p = p;
    return SKV_STATUS_OK;
}

static void skv_cpu_free(skv_backend_t *be, void *ptr)
{
    free(ptr);
}

static skv_status_t skv_cpu_copy(skv_backend_t *be, void *dst, const void *src, size_t bytes)
{
    memmove(dst, src, bytes);
    return SKV_STATUS_OK;
}

static skv_status_t skv_cpu_sync(skv_backend_t *be)
{
    return SKV_STATUS_OK;
}

/* Widens one host row of src_dtype into f32. */
static void skv_cpu_row_to_f32(float *dst, const void *src, skv_dtype_t dtype, int64_t n)
{
    if (dtype == SKV_DTYPE_F32) {
        memcpy(dst, src, (size_t)n * 4);
    } else if (dtype == SKV_DTYPE_BF16) {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) {
            dst[i] = skv_bf16_to_f32(s[i]);
        }
    } else {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++) {
            dst[i] = skv_f16_to_f32(s[i]);
        }
    }
}

static skv_status_t skv_cpu_weight_upload(skv_backend_t *be, const skv_tensor_t *dst, int64_t row0,
                                          const void *src, skv_dtype_t src_dtype, int64_t n_rows)
{
    SKV_ASSERT(dst->dtype == SKV_DTYPE_F32 && row0 + n_rows <= dst->rows);
    size_t src_row_bytes = (size_t)dst->cols * skv_dtype_size(src_dtype);
    for (int64_t r = 0; r < n_rows; r++) {
        skv_cpu_row_to_f32(&SKV_F32(dst, row0 + r, 0), (const char *)src + r * src_row_bytes,
                           src_dtype, dst->cols);
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_cpu_embed(skv_backend_t *be, const skv_tensor_t *out,
                                  const skv_tensor_t *table, const skv_tensor_t *tokens)
{
    SKV_ASSERT(out->cols == table->cols && tokens->cols == out->rows);
    for (int64_t n = 0; n < out->rows; n++) {
        int32_t id = SKV_I32(tokens, n);
        SKV_ASSERT(id >= 0 && id < table->rows); /* validated by the engine before a step */
        memcpy(&SKV_F32(out, n, 0), &SKV_F32(table, id, 0), (size_t)out->cols * 4);
    }
    return SKV_STATUS_OK;
}

/* out_row = x_row * rsqrt(mean(x_row^2) + eps) * w, sums in double for a stable reference. */
static void skv_cpu_rmsnorm_row(float *out, const float *x, const float *w, int64_t n, float eps)
{
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++) {
        ss += (double)x[i] * x[i];
    }
    float inv = (float)(1.0 / sqrt(ss / (double)n + eps));
    for (int64_t i = 0; i < n; i++) {
        out[i] = (x[i] * inv) * w[i];
    }
}

static skv_status_t skv_cpu_rmsnorm(skv_backend_t *be, const skv_tensor_t *out,
                                    const skv_tensor_t *x, const skv_tensor_t *w, float eps)
{
    SKV_ASSERT(out->rows == x->rows && out->cols == x->cols && w->cols == x->cols);
#pragma omp parallel for num_threads(skv_cpu_threads(be)) if (x->rows > 1)
    for (int64_t r = 0; r < x->rows; r++) {
        skv_cpu_rmsnorm_row(&SKV_F32(out, r, 0), &SKV_F32(x, r, 0), w->data, x->cols, eps);
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_cpu_add_rmsnorm(skv_backend_t *be, const skv_tensor_t *x,
                                        const skv_tensor_t *delta, const skv_tensor_t *out,
                                        const skv_tensor_t *w, float eps)
{
    SKV_ASSERT(x->rows == delta->rows && x->cols == delta->cols);
#pragma omp parallel for num_threads(skv_cpu_threads(be)) if (x->rows > 1)
    for (int64_t r = 0; r < x->rows; r++) {
        float *xr = &SKV_F32(x, r, 0);
        const float *dr = &SKV_F32(delta, r, 0);
        for (int64_t i = 0; i < x->cols; i++) {
            xr[i] += dr[i];
        }
        if (out != NULL) {
            skv_cpu_rmsnorm_row(&SKV_F32(out, r, 0), xr, w->data, x->cols, eps);
        }
    }
    return SKV_STATUS_OK;
}

/* Reference GEMM: one dot product per output element, f32 accumulation like BLAS. */
static void skv_cpu_matmul_ref(const skv_tensor_t *out, const skv_tensor_t *x,
                               const skv_tensor_t *w)
{
    for (int64_t n = 0; n < x->rows; n++) {
        const float *xr = &SKV_F32(x, n, 0);
        for (int64_t o = 0; o < w->rows; o++) {
            const float *wr = &SKV_F32(w, o, 0);
            float acc = 0.0f;
            for (int64_t i = 0; i < x->cols; i++) {
                acc += xr[i] * wr[i];
            }
            SKV_F32(out, n, o) = acc;
        }
    }
}

static skv_status_t skv_cpu_matmul(skv_backend_t *be, const skv_tensor_t *out,
                                   const skv_tensor_t *x, const skv_tensor_t *w)
{
    SKV_ASSERT(x->cols == w->cols && out->rows == x->rows && out->cols == w->rows);
    SKV_ASSERT(out->dtype == SKV_DTYPE_F32 && w->dtype == SKV_DTYPE_F32);
    if (x->rows == 0) {
        return SKV_STATUS_OK;
    }
#ifdef SKV_HAVE_OPENBLAS
    if (((skv_cpu_backend_t *)be)->mode == SKV_CPU_MODE_FAST) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)x->rows, (int)w->rows,
                    (int)x->cols, 1.0f, x->data, (int)x->ld, w->data, (int)w->ld, 0.0f,
                    out->data, (int)out->ld);
        return SKV_STATUS_OK;
    }
#endif
    skv_cpu_matmul_ref(out, x, w);
    return SKV_STATUS_OK;
}

/* Rotates one head vector in place: pairs (d, d + half), angle pos * inv_freq[d]. */
static void skv_cpu_rope_head(float *v, int32_t head_dim, int32_t pos, const float *inv_freq)
{
    int32_t half = head_dim / 2;
    for (int32_t d = 0; d < half; d++) {
        float angle = (float)pos * inv_freq[d]; /* f32 product, as the HF reference does */
        float c = cosf(angle);
        float s = sinf(angle);
        float a = v[d];
        float b = v[d + half];
        v[d] = a * c - b * s;
        v[d + half] = b * c + a * s;
    }
}

static skv_status_t skv_cpu_rope(skv_backend_t *be, const skv_tensor_t *x, int32_t n_heads,
                                 int32_t head_dim, const skv_tensor_t *pos,
                                 const skv_tensor_t *inv_freq)
{
    SKV_ASSERT(x->cols == (int64_t)n_heads * head_dim && pos->cols == x->rows);
#pragma omp parallel for num_threads(skv_cpu_threads(be)) if (x->rows > 1)
    for (int64_t r = 0; r < x->rows; r++) {
        for (int32_t h = 0; h < n_heads; h++) {
            skv_cpu_rope_head(&SKV_F32(x, r, (int64_t)h * head_dim), head_dim, SKV_I32(pos, r),
                              inv_freq->data);
        }
    }
    return SKV_STATUS_OK;
}

/* OK when the KV ops handle kv's dtype; UNSUPPORTED (logged, nothing touched) otherwise. */
static skv_status_t skv_cpu_kv_check(const skv_kv_view_t *kv, const char *op)
{
    if ((unsigned)kv->dtype >= 32 || (SKV_CPU_KV_DTYPES & (1u << kv->dtype)) == 0) {
        SKV_LOG_ERROR("cpu backend: %s on a KV pool of dtype %s (this backend's KV ops take "
                      "f32 and f8e4m3)",
                      op, skv_dtype_name(kv->dtype));
        return SKV_STATUS_UNSUPPORTED;
    }
    SKV_ASSERT(kv->head_dim <= SKV_CPU_MAX_HEAD_DIM);
    return SKV_STATUS_OK;
}

/* Element offset of (slot, cache layer, kv, head) in the pool: a head_dim-long vector. */
static int64_t skv_cpu_kv_off(const skv_kv_view_t *kv, int32_t slot, int32_t layer, int32_t t,
                              int32_t head)
{
    int64_t block = slot / kv->block_size;
    int64_t off = slot % kv->block_size;
    int64_t idx = (((block * kv->n_cache_layers + layer) * 2 + t) * kv->n_kv_heads + head);
    return (idx * kv->block_size + off) * kv->head_dim;
}

/* Stores the head vector src [head_dim] at element offset off, in the pool's dtype. */
static void skv_cpu_kv_store(const skv_kv_view_t *kv, int64_t off, const float *src)
{
    if (kv->dtype == SKV_DTYPE_F32) {
        memcpy((float *)kv->base + off, src, (size_t)kv->head_dim * 4);
        return;
    }
    uint8_t *dst = (uint8_t *)kv->base + off;
    for (int32_t d = 0; d < kv->head_dim; d++) {
        dst[d] = skv_f32_to_f8e4m3(src[d]);
    }
}

/* The head vector at element offset off as f32: in place for an f32 pool, else widened into
 * tmp [head_dim] through the fp8 table. */
static const float *skv_cpu_kv_load(const skv_kv_view_t *kv, const float *f8_to_f32, int64_t off,
                                    float *tmp)
{
    if (kv->dtype == SKV_DTYPE_F32) {
        return (const float *)kv->base + off;
    }
    const uint8_t *src = (const uint8_t *)kv->base + off;
    for (int32_t d = 0; d < kv->head_dim; d++) {
        tmp[d] = f8_to_f32[src[d]];
    }
    return tmp;
}

static skv_status_t skv_cpu_kv_write(skv_backend_t *be, const skv_kv_view_t *kv,
                                     int32_t cache_layer, const skv_tensor_t *k,
                                     const skv_tensor_t *v, const skv_attn_meta_t *meta)
{
    SKV_CHECK(skv_cpu_kv_check(kv, "kv_write"));
    for (int64_t r = 0; r < k->rows; r++) {
        int32_t slot = SKV_I32(&meta->row_slot, r);
        for (int32_t h = 0; h < kv->n_kv_heads; h++) {
            int64_t col = (int64_t)h * kv->head_dim;
            skv_cpu_kv_store(kv, skv_cpu_kv_off(kv, slot, cache_layer, 0, h), &SKV_F32(k, r, col));
            skv_cpu_kv_store(kv, skv_cpu_kv_off(kv, slot, cache_layer, 1, h), &SKV_F32(v, r, col));
        }
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_cpu_swiftkv_kv_write(skv_backend_t *be, const skv_kv_view_t *kv,
                                             int32_t first_layer, int32_t n_layers,
                                             const skv_tensor_t *kvs, const skv_attn_meta_t *meta,
                                             const skv_tensor_t *inv_freq)
{
    int64_t width = (int64_t)kv->n_kv_heads * kv->head_dim;
    SKV_CHECK(skv_cpu_kv_check(kv, "swiftkv_kv_write"));
    SKV_ASSERT(kvs->cols == (int64_t)n_layers * 2 * width);
#pragma omp parallel for num_threads(skv_cpu_threads(be)) if (kvs->rows > 1)
    for (int64_t r = 0; r < kvs->rows; r++) {
        int32_t slot = SKV_I32(&meta->row_slot, r);
        int32_t pos = SKV_I32(&meta->row_pos, r);
        float kbuf[SKV_CPU_MAX_HEAD_DIM];
        for (int32_t g = 0; g < n_layers; g++) {
            for (int32_t h = 0; h < kv->n_kv_heads; h++) {
                int64_t koff = skv_cpu_kv_off(kv, slot, first_layer + g, 0, h);
                int64_t col = (int64_t)g * 2 * width + (int64_t)h * kv->head_dim;
                /* f32: RoPE in place in the pool; fp8: in f32 on the stack, then quantized */
                float *kd = kv->dtype == SKV_DTYPE_F32 ? (float *)kv->base + koff : kbuf;
                memcpy(kd, &SKV_F32(kvs, r, col), (size_t)kv->head_dim * 4);
                skv_cpu_rope_head(kd, kv->head_dim, pos, inv_freq->data);
                if (kd == kbuf) {
                    skv_cpu_kv_store(kv, koff, kbuf);
                }
                skv_cpu_kv_store(kv, skv_cpu_kv_off(kv, slot, first_layer + g, 1, h),
                                 &SKV_F32(kvs, r, col + width));
            }
        }
    }
    return SKV_STATUS_OK;
}

/* Keys are processed in tiles of this many positions: scores live on the stack and the
 * running max/sum are rescaled once per tile (online softmax without a per-key exp pair). */
#define SKV_CPU_ATTN_TILE 64

/* One query head against positions 0..ctx-1 of one sequence's cache layer (f8_to_f32: the
 * table that widens an fp8 pool). */
static void skv_cpu_attn_head(float *out, const float *q, const skv_kv_view_t *kv,
                              const float *f8_to_f32, const int32_t *blocks, int32_t layer,
                              int32_t kv_head, int32_t ctx, float scale)
{
    int32_t hd = kv->head_dim;
    float acc[SKV_CPU_MAX_HEAD_DIM];
    float tmp[SKV_CPU_MAX_HEAD_DIM]; /* one widened K or V vector of an fp8 pool */
    float scores[SKV_CPU_ATTN_TILE];
    float m = -INFINITY;
    float l = 0.0f;
    memset(acc, 0, sizeof(float) * (size_t)hd);
    for (int32_t t0 = 0; t0 < ctx; t0 += SKV_CPU_ATTN_TILE) {
        int32_t nt = ctx - t0 < SKV_CPU_ATTN_TILE ? ctx - t0 : SKV_CPU_ATTN_TILE;
        float tile_max = -INFINITY;
        for (int32_t i = 0; i < nt; i++) {
            int32_t p = t0 + i;
            int32_t slot = blocks[p / kv->block_size] * kv->block_size + p % kv->block_size;
            const float *k =
                skv_cpu_kv_load(kv, f8_to_f32, skv_cpu_kv_off(kv, slot, layer, 0, kv_head), tmp);
            float dot = 0.0f;
            for (int32_t d = 0; d < hd; d++) {
                dot += q[d] * k[d];
            }
            scores[i] = dot * scale;
            tile_max = scores[i] > tile_max ? scores[i] : tile_max;
        }
        float m_new = tile_max > m ? tile_max : m;
        float corr = expf(m - m_new);
        l *= corr;
        for (int32_t d = 0; d < hd; d++) {
            acc[d] *= corr;
        }
        for (int32_t i = 0; i < nt; i++) {
            int32_t p = t0 + i;
            int32_t slot = blocks[p / kv->block_size] * kv->block_size + p % kv->block_size;
            const float *v =
                skv_cpu_kv_load(kv, f8_to_f32, skv_cpu_kv_off(kv, slot, layer, 1, kv_head), tmp);
            float e = expf(scores[i] - m_new);
            l += e;
            for (int32_t d = 0; d < hd; d++) {
                acc[d] += e * v[d];
            }
        }
        m = m_new;
    }
    for (int32_t d = 0; d < hd; d++) {
        out[d] = acc[d] / l;
    }
}

static skv_status_t skv_cpu_attention(skv_backend_t *be, const skv_tensor_t *out,
                                      const skv_tensor_t *q, const skv_kv_view_t *kv,
                                      int32_t cache_layer, int32_t n_heads, float scale,
                                      const skv_attn_meta_t *meta)
{
    int32_t hd = kv->head_dim;
    int32_t group = n_heads / kv->n_kv_heads;
    const float *f8_to_f32 = ((skv_cpu_backend_t *)be)->f8_to_f32;
    SKV_CHECK(skv_cpu_kv_check(kv, "attention"));
    SKV_ASSERT(q->cols == (int64_t)n_heads * hd && out->rows == q->rows);
    int64_t work = (int64_t)meta->n_rows * n_heads;
#pragma omp parallel for num_threads(skv_cpu_threads(be)) schedule(dynamic, 4) if (work > 1)
    for (int64_t w = 0; w < work; w++) {
        int32_t r = (int32_t)(w / n_heads);
        int32_t h = (int32_t)(w % n_heads);
        int32_t s = 0;
        while (SKV_I32(&meta->seq_rows, s + 1) <= r) {
            s++;
        }
        const int32_t *blocks = (const int32_t *)meta->block_table.data + (int64_t)s * meta->max_blocks;
        int32_t ctx = SKV_I32(&meta->row_pos, r) + 1;
        skv_cpu_attn_head(&SKV_F32(out, r, (int64_t)h * hd), &SKV_F32(q, r, (int64_t)h * hd), kv,
                          f8_to_f32, blocks, cache_layer, h / group, ctx, scale);
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_cpu_swiglu(skv_backend_t *be, const skv_tensor_t *out,
                                   const skv_tensor_t *gate_up)
{
    int64_t f = out->cols;
    SKV_ASSERT(gate_up->cols == 2 * f && gate_up->rows == out->rows);
#pragma omp parallel for num_threads(skv_cpu_threads(be)) if (out->rows > 1)
    for (int64_t r = 0; r < out->rows; r++) {
        const float *g = &SKV_F32(gate_up, r, 0);
        const float *u = &SKV_F32(gate_up, r, f);
        float *o = &SKV_F32(out, r, 0);
        for (int64_t i = 0; i < f; i++) {
            o[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
        }
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_cpu_gather_rows(skv_backend_t *be, const skv_tensor_t *out,
                                        const skv_tensor_t *x, const skv_tensor_t *idx)
{
    SKV_ASSERT(out->cols == x->cols && idx->cols == out->rows);
    for (int64_t m = 0; m < out->rows; m++) {
        int32_t r = SKV_I32(idx, m);
        SKV_ASSERT(r >= 0 && r < x->rows);
        memmove(&SKV_F32(out, m, 0), &SKV_F32(x, r, 0), (size_t)x->cols * 4);
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_cpu_sample_op(skv_backend_t *be, const skv_tensor_t *tokens,
                                      const skv_tensor_t *logits, const skv_tensor_t *params)
{
    return skv_cpu_sample(skv_cpu_threads(be), tokens, logits, params);
}

static const skv_ops_t skv_cpu_ops_table = {
    .name = "cpu",
    .act_dtype = SKV_DTYPE_F32,
    .weight_dtype = SKV_DTYPE_F32,
    .kv_dtype = SKV_DTYPE_F32,
    .kv_dtypes = SKV_CPU_KV_DTYPES,
    .destroy = skv_cpu_destroy,
    .alloc = skv_cpu_alloc,
    .free = skv_cpu_free,
    .copy_h2d = skv_cpu_copy,
    .copy_d2h = skv_cpu_copy,
    .sync = skv_cpu_sync,
    .weight_upload = skv_cpu_weight_upload,
    .embed = skv_cpu_embed,
    .rmsnorm = skv_cpu_rmsnorm,
    .add_rmsnorm = skv_cpu_add_rmsnorm,
    .matmul = skv_cpu_matmul,
    .rope = skv_cpu_rope,
    .kv_write = skv_cpu_kv_write,
    .swiftkv_kv_write = skv_cpu_swiftkv_kv_write,
    .attention = skv_cpu_attention,
    .swiglu = skv_cpu_swiglu,
    .gather_rows = skv_cpu_gather_rows,
    .sample = skv_cpu_sample_op,
};

skv_status_t skv_cpu_backend_create(skv_cpu_mode_t mode, int n_threads, skv_backend_t **be_p)
{
    skv_cpu_backend_t *cpu = skv_calloc(1, sizeof(*cpu));
    if (cpu == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    cpu->base.ops = &skv_cpu_ops_table;
    cpu->mode = mode;
    for (int c = 0; c < 256; c++) {
        cpu->f8_to_f32[c] = skv_f8e4m3_to_f32((uint8_t)c);
    }
#ifdef _OPENMP
    cpu->n_threads = n_threads > 0 ? n_threads : omp_get_num_procs();
#else
    cpu->n_threads = 1;
#endif
#ifdef SKV_HAVE_OPENBLAS
    if (mode == SKV_CPU_MODE_FAST) {
        openblas_set_num_threads(cpu->n_threads);
    }
#endif
    *be_p = &cpu->base;
    return SKV_STATUS_OK;
}
