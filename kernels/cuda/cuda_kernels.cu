/*
 * cuda_kernels.cu: the CUDA backend's element kernels: embedding gather, (fused residual)
 * RMSNorm, RoPE, KV scatter, the fused SwiftKV epilogue, SwiGLU, row gather, weight
 * conversion and hash fill. All bf16 in memory (the KV pool bf16 or fp8, cuda_kv.h), fp32
 * inside a kernel.
 *
 * Each op's launcher takes the backend's stream and checks the launch. Kernels take explicit
 * row strides, so column views of a fused buffer work unchanged. Math that the CPU reference
 * does in f32 (RoPE angles pos * inv_freq, silu) is done the same way here; sin/cos use the
 * accurate sincosf because angles reach 1e5 radians at long positions.
 */
#include <math.h>
#include <stdint.h>

#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/cuda_kv.h"

typedef __nv_bfloat16 bf16;

#define SKV_CUDA_ROW_THREADS 256

/* Whether every row of t starts on 16 bytes and holds whole 16-byte vectors. */
static bool skv_vec8_ok(const skv_tensor_t *t)
{
    return t == NULL || ((uintptr_t)t->data % 16 == 0 && t->ld % 8 == 0 && t->cols % 8 == 0);
}

static unsigned skv_row_threads(int64_t cols)
{
    /* Narrow rows get one warp per 32 columns (at least one warp), wide rows 256 threads. */
    int64_t t = (cols + 31) / 32 * 32;
    return (unsigned)(t < SKV_CUDA_ROW_THREADS ? (t < 32 ? 32 : t) : SKV_CUDA_ROW_THREADS);
}

/* Sum over the block (blockDim.x a multiple of 32, <= 1024); every thread gets the result. */
static __device__ float skv_block_sum(float v)
{
    __shared__ float part[32];
    for (int o = 16; o > 0; o >>= 1) {
        v += __shfl_xor_sync(0xffffffffu, v, o);
    }
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads(); /* part may still be read by a previous call */
    if (lane == 0) {
        part[warp] = v;
    }
    __syncthreads();
    float t = 0.0f;
    for (int w = 0; w < (int)blockDim.x / 32; w++) {
        t += part[w];
    }
    return t;
}

/* One block per row: dst row <- src row (bf16). */
__global__ void skv_copy_rows_kernel(bf16 *dst, int64_t ldd, const bf16 *src, int64_t lds,
                                     const int32_t *idx, int64_t cols)
{
    int64_t r = blockIdx.x;
    skv_pdl_trigger();
    skv_pdl_wait();
    const bf16 *s = src + (int64_t)idx[r] * lds;
    bf16 *d = dst + r * ldd;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
        d[c] = s[c];
    }
}

/* The same with 16-byte vectors (rows aligned, cols % 8 == 0; see skv_launch_copy_rows). */
__global__ void skv_copy_rows_vec8_kernel(bf16 *dst, int64_t ldd, const bf16 *src, int64_t lds,
                                          const int32_t *idx, int64_t cols)
{
    int64_t r = blockIdx.x;
    skv_pdl_trigger();
    skv_pdl_wait();
    const uint4 *s = (const uint4 *)(src + (int64_t)idx[r] * lds);
    uint4 *d = (uint4 *)(dst + r * ldd);
    for (int64_t c = threadIdx.x; c < cols / 8; c += blockDim.x) {
        d[c] = s[c];
    }
}

/* out row r <- src row idx[r] for every row of out. */
static skv_status_t skv_launch_copy_rows(skv_backend_t *be, const skv_tensor_t *out,
                                         const skv_tensor_t *src, const int32_t *idx)
{
    cudaStream_t st = skv_cuda(be)->stream;
    if (skv_vec8_ok(out) && skv_vec8_ok(src)) {
        skv_cuda_launch(skv_copy_rows_vec8_kernel, (unsigned)out->rows,
                        skv_row_threads(out->cols / 8), 0, st, (bf16 *)out->data, out->ld,
                        (const bf16 *)src->data, src->ld, idx, out->cols);
    } else {
        skv_cuda_launch(skv_copy_rows_kernel, (unsigned)out->rows, SKV_CUDA_ROW_THREADS, 0, st,
                        (bf16 *)out->data, out->ld, (const bf16 *)src->data, src->ld, idx,
                        out->cols);
    }
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}

skv_status_t skv_cuda_embed(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *table,
                            const skv_tensor_t *tokens)
{
    SKV_ASSERT(out->cols == table->cols && tokens->cols == out->rows);
    SKV_ASSERT(out->dtype == SKV_DTYPE_BF16 && table->dtype == SKV_DTYPE_BF16);
    if (out->rows == 0) {
        return SKV_STATUS_OK;
    }
    /* Token ids were validated on the host by the engine before the step. */
    return skv_launch_copy_rows(be, out, table, (const int32_t *)tokens->data);
}

skv_status_t skv_cuda_gather_rows(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *x,
                                  const skv_tensor_t *idx)
{
    SKV_ASSERT(out->cols == x->cols && idx->cols == out->rows);
    SKV_ASSERT(out->data != x->data); /* rows could overlap; the model gathers into xm */
    if (out->rows == 0) {
        return SKV_STATUS_OK;
    }
    return skv_launch_copy_rows(be, out, x, (const int32_t *)idx->data);
}

/* Unpacks / packs 8 bf16 held in a 16-byte vector. */
static __device__ void skv_unpack8(const uint4 &u, float *f)
{
    const __nv_bfloat162 *b = (const __nv_bfloat162 *)&u;
#pragma unroll
    for (int e = 0; e < 4; e++) {
        float2 t = __bfloat1622float2(b[e]);
        f[2 * e] = t.x;
        f[2 * e + 1] = t.y;
    }
}

static __device__ uint4 skv_pack8(const float *f)
{
    uint4 u;
    __nv_bfloat162 *b = (__nv_bfloat162 *)&u;
#pragma unroll
    for (int e = 0; e < 4; e++) {
        b[e] = __floats2bfloat162_rn(f[2 * e], f[2 * e + 1]);
    }
    return u;
}

/* One block per row: if delta, x += delta (stored bf16, like the model's bf16 residual);
 * then, if out, out = x * rsqrt(mean(x^2) + eps) * w over the stored (rounded) x. Each thread
 * re-reads only elements it wrote itself, so out may alias x. Any shape or alignment. */
__global__ void skv_add_rmsnorm_kernel(bf16 *x, int64_t ldx, const bf16 *delta, int64_t ldd,
                                       bf16 *out, int64_t ldo, const bf16 *w, int64_t cols,
                                       float eps)
{
    int64_t r = blockIdx.x;
    bf16 *xr = x + r * ldx;
    float ss = 0.0f;
    skv_pdl_trigger();
    skv_pdl_wait();
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
        float v = __bfloat162float(xr[c]);
        if (delta != NULL) {
            bf16 s = __float2bfloat16(v + __bfloat162float(delta[r * ldd + c]));
            xr[c] = s;
            v = __bfloat162float(s);
        }
        ss += v * v;
    }
    if (out == NULL) {
        return;
    }
    float inv = rsqrtf(skv_block_sum(ss) / (float)cols + eps);
    bf16 *orow = out + r * ldo;
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
        orow[c] = __float2bfloat16(__bfloat162float(xr[c]) * inv * __bfloat162float(w[c]));
    }
}

/* The same with 16-byte accesses (every row start and cols a multiple of 8 elements, checked
 * by the launcher) and the row held in registers: thread t owns the vectors t, t + blockDim.x,
 * ... (at most NV of them), so x is read once and written once. Same arithmetic and rounding
 * as skv_add_rmsnorm_kernel. */
template <int NV>
__global__ void skv_add_rmsnorm_reg_kernel(bf16 *x, int64_t ldx, const bf16 *delta, int64_t ldd,
                                           bf16 *out, int64_t ldo, const bf16 *w, int64_t cols,
                                           float eps)
{
    int64_t r = blockIdx.x;
    bf16 *xr = x + r * ldx;
    float v[NV][8];
    float ss = 0.0f;
    skv_pdl_trigger();
    skv_pdl_wait();
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int64_t c = ((int64_t)k * blockDim.x + threadIdx.x) * 8;
        if (c >= cols) {
            continue; /* the rest of k is past the row too; predicated, keeps v in registers */
        }
        uint4 xu = *(const uint4 *)(xr + c);
        skv_unpack8(xu, v[k]);
        if (delta != NULL) {
            float d[8];
            skv_unpack8(*(const uint4 *)(delta + r * ldd + c), d);
#pragma unroll
            for (int e = 0; e < 8; e++) {
                v[k][e] += d[e];
            }
            xu = skv_pack8(v[k]);
            *(uint4 *)(xr + c) = xu;
            skv_unpack8(xu, v[k]); /* the norm sees the rounded residual */
        }
#pragma unroll
        for (int e = 0; e < 8; e++) {
            ss += v[k][e] * v[k][e];
        }
    }
    if (out == NULL) {
        return;
    }
    float inv = rsqrtf(skv_block_sum(ss) / (float)cols + eps);
    bf16 *orow = out + r * ldo;
#pragma unroll
    for (int k = 0; k < NV; k++) {
        int64_t c = ((int64_t)k * blockDim.x + threadIdx.x) * 8;
        if (c >= cols) {
            continue;
        }
        float wv[8];
        skv_unpack8(*(const uint4 *)(w + c), wv);
#pragma unroll
        for (int e = 0; e < 8; e++) {
            v[k][e] = v[k][e] * inv * wv[e];
        }
        *(uint4 *)(orow + c) = skv_pack8(v[k]);
    }
}

static skv_status_t skv_launch_add_rmsnorm(skv_backend_t *be, const skv_tensor_t *x,
                                           const skv_tensor_t *delta, const skv_tensor_t *out,
                                           const skv_tensor_t *w, float eps)
{
    bool vec = skv_vec8_ok(x) && skv_vec8_ok(delta) && skv_vec8_ok(out) && skv_vec8_ok(w);
    unsigned threads = skv_row_threads(vec ? x->cols / 8 : x->cols);
    cudaStream_t st = skv_cuda(be)->stream;
    bf16 *xd = (bf16 *)x->data;
    const bf16 *dd = delta ? (const bf16 *)delta->data : NULL;
    bf16 *od = out ? (bf16 *)out->data : NULL;
    const bf16 *wd = out ? (const bf16 *)w->data : NULL;
    int64_t ldd = delta ? delta->ld : 0, ldo = out ? out->ld : 0;
    int64_t nv = (x->cols / 8 + threads - 1) / threads; /* vectors per thread */
    unsigned rows = (unsigned)x->rows;
    if (vec && nv <= 1) {
        skv_cuda_launch(skv_add_rmsnorm_reg_kernel<1>, rows, threads, 0, st, xd, x->ld, dd, ldd, od,
                        ldo, wd, x->cols, eps);
    } else if (vec && nv <= 2) {
        skv_cuda_launch(skv_add_rmsnorm_reg_kernel<2>, rows, threads, 0, st, xd, x->ld, dd, ldd, od,
                        ldo, wd, x->cols, eps);
    } else if (vec && nv <= 4) {
        skv_cuda_launch(skv_add_rmsnorm_reg_kernel<4>, rows, threads, 0, st, xd, x->ld, dd, ldd, od,
                        ldo, wd, x->cols, eps);
    } else if (vec && nv <= 8) { /* hidden up to 16384 (Llama-3 405B) */
        skv_cuda_launch(skv_add_rmsnorm_reg_kernel<8>, rows, threads, 0, st, xd, x->ld, dd, ldd, od,
                        ldo, wd, x->cols, eps);
    } else {
        skv_cuda_launch(skv_add_rmsnorm_kernel, rows, skv_row_threads(x->cols), 0, st, xd, x->ld,
                        dd, ldd, od, ldo, wd, x->cols, eps);
    }
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}

skv_status_t skv_cuda_rmsnorm(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *x,
                              const skv_tensor_t *w, float eps)
{
    SKV_ASSERT(out->rows == x->rows && out->cols == x->cols && w->cols == x->cols);
    if (x->rows == 0) {
        return SKV_STATUS_OK;
    }
    /* x is only read (delta NULL); the kernel writes out. */
    return skv_launch_add_rmsnorm(be, x, NULL, out, w, eps);
}

skv_status_t skv_cuda_add_rmsnorm(skv_backend_t *be, const skv_tensor_t *x,
                                  const skv_tensor_t *delta, const skv_tensor_t *out,
                                  const skv_tensor_t *w, float eps)
{
    SKV_ASSERT(x->rows == delta->rows && x->cols == delta->cols);
    SKV_ASSERT(out == NULL || (out->rows == x->rows && out->cols == x->cols));
    if (x->rows == 0) {
        return SKV_STATUS_OK;
    }
    return skv_launch_add_rmsnorm(be, x, delta, out, out ? w : NULL, eps);
}

/* Rotates pair (x, y) of one head by pos * inv_freq (f32 product, as the CPU reference) into
 * (*fa, *fb), unrounded. */
static __device__ void skv_rope_pair_f(bf16 x, bf16 y, int32_t pos, float inv_freq, float *fa,
                                       float *fb)
{
    float s, c;
    sincosf((float)pos * inv_freq, &s, &c);
    float fx = __bfloat162float(x), fy = __bfloat162float(y);
    *fa = fx * c - fy * s;
    *fb = fy * c + fx * s;
}

/* The same in place, rounded to bf16. */
static __device__ void skv_rope_pair(bf16 *a, bf16 *b, int32_t pos, float inv_freq)
{
    float fa, fb;
    skv_rope_pair_f(*a, *b, pos, inv_freq, &fa, &fb);
    *a = __float2bfloat16(fa);
    *b = __float2bfloat16(fb);
}

/* One block per row; threads over (head, d < half) pairs. */
__global__ void skv_rope_kernel(bf16 *x, int64_t ldx, int32_t n_heads, int32_t head_dim,
                                const int32_t *pos, const float *inv_freq)
{
    int64_t r = blockIdx.x;
    int32_t half = head_dim / 2, p = pos[r];
    bf16 *xr = x + r * ldx;
    for (int32_t i = threadIdx.x; i < n_heads * half; i += blockDim.x) {
        int32_t h = i / half, d = i % half;
        skv_rope_pair(&xr[h * head_dim + d], &xr[h * head_dim + d + half], p, inv_freq[d]);
    }
}

#define SKV_ROPE_MAX_HALF 256 /* head_dim <= 512 for the table kernels */

/* Fills cs[0..half) with (cos, sin) of pos * inv_freq[d]: every head of a row shares them,
 * so a row costs half sincosf calls, not heads * half. Ends with a barrier. */
static __device__ void skv_rope_table(float2 *cs, int32_t half, int32_t pos, const float *inv_freq)
{
    for (int32_t d = threadIdx.x; d < half; d += blockDim.x) {
        float sn, cn;
        sincosf((float)pos * inv_freq[d], &sn, &cn);
        cs[d] = make_float2(cn, sn);
    }
    __syncthreads();
}

/* Rotates the 8 pairs (ua[e], ub[e]) at dims d..d+7 of one head, 16-byte bf16 vectors, by
 * the table (f32, as the reference) into a[8], b[8], unrounded (a key bound for an fp8 pool
 * is rounded once, from these). */
static __device__ void skv_rope8_f(const uint4 &ua, const uint4 &ub, const float2 *cs, int32_t d,
                                   float *a, float *b)
{
    skv_unpack8(ua, a);
    skv_unpack8(ub, b);
#pragma unroll
    for (int e = 0; e < 8; e++) {
        float2 t = cs[d + e];
        float xa = a[e], xb = b[e];
        a[e] = xa * t.x - xb * t.y;
        b[e] = xb * t.x + xa * t.y;
    }
}

/* Rotates 8 pairs (a[e], b[e]) at dims d..d+7 of one head, held as 16-byte bf16 vectors, by
 * the table (f32, as the reference), in place. */
static __device__ void skv_rope8(uint4 &ua, uint4 &ub, const float2 *cs, int32_t d)
{
    float a[8], b[8];
    skv_rope8_f(ua, ub, cs, d, a, b);
    ua = skv_pack8(a);
    ub = skv_pack8(b);
}

/* One block per row; a thread takes 8 pairs of one head (16-byte loads; half % 8 == 0 and
 * 16-byte aligned rows, checked by the launcher). */
__global__ void skv_rope_vec8_kernel(bf16 *x, int64_t ldx, int32_t n_heads, int32_t head_dim,
                                     const int32_t *pos, const float *inv_freq)
{
    __shared__ float2 cs[SKV_ROPE_MAX_HALF];
    int32_t half = head_dim / 2, per_head = half / 8;
    skv_rope_table(cs, half, pos[blockIdx.x], inv_freq);
    bf16 *xr = x + (int64_t)blockIdx.x * ldx;
    for (int32_t i = threadIdx.x; i < n_heads * per_head; i += blockDim.x) {
        int32_t h = i / per_head, d = (i % per_head) * 8;
        uint4 *pa = (uint4 *)(xr + h * head_dim + d), *pb = (uint4 *)(xr + h * head_dim + d + half);
        uint4 ua = *pa, ub = *pb;
        skv_rope8(ua, ub, cs, d);
        *pa = ua;
        *pb = ub;
    }
}

/* Whether the table kernels apply: 16-byte vectors inside each half of a head. */
static bool skv_rope_vec8_ok(const skv_tensor_t *x, int32_t head_dim)
{
    return skv_vec8_ok(x) && head_dim % 16 == 0 && head_dim / 2 <= SKV_ROPE_MAX_HALF;
}

skv_status_t skv_cuda_rope(skv_backend_t *be, const skv_tensor_t *x, int32_t n_heads,
                           int32_t head_dim, const skv_tensor_t *pos, const skv_tensor_t *inv_freq)
{
    SKV_ASSERT(x->cols == (int64_t)n_heads * head_dim && pos->cols == x->rows);
    SKV_ASSERT(inv_freq->dtype == SKV_DTYPE_F32 && head_dim % 2 == 0);
    if (x->rows == 0) {
        return SKV_STATUS_OK;
    }
    cudaStream_t st = skv_cuda(be)->stream;
    bf16 *xd = (bf16 *)x->data;
    const int32_t *pd = (const int32_t *)pos->data;
    const float *fd = (const float *)inv_freq->data;
    if (skv_rope_vec8_ok(x, head_dim)) {
        skv_rope_vec8_kernel<<<(unsigned)x->rows, skv_row_threads((int64_t)n_heads * head_dim / 16),
                               0, st>>>(xd, x->ld, n_heads, head_dim, pd, fd);
    } else {
        skv_rope_kernel<<<(unsigned)x->rows, skv_row_threads((int64_t)n_heads * head_dim / 2), 0,
                          st>>>(xd, x->ld, n_heads, head_dim, pd, fd);
    }
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}

/* The pool geometry a kernel needs to address one (slot, layer, K|V, head) vector. */
typedef struct {
    void *base; /* elements of the pool's type (bf16 or fp8; the kernels' KT) */
    int32_t block_size, n_kv_heads, head_dim, n_cache_layers;
} skv_kv_geom_t;

static skv_kv_geom_t skv_kv_geom(const skv_kv_view_t *kv)
{
    skv_kv_geom_t g = {kv->base, kv->block_size, kv->n_kv_heads, kv->head_dim, kv->n_cache_layers};
    return g;
}

/* Whether the pool's dtype is one the kernels take; logs the refusal once per call. */
static bool skv_kv_check_dtype(const skv_kv_view_t *kv, const char *op)
{
    if (skv_cuda_kv_dtype_ok(kv->dtype)) {
        return true;
    }
    SKV_LOG_ERROR("cuda %s: KV pool dtype %s unsupported (bf16, f8e4m3)", op,
                  skv_dtype_name(kv->dtype));
    return false;
}

template <typename KT>
static __device__ KT *skv_kv_vec(const skv_kv_geom_t &g, int32_t slot, int32_t layer, int32_t t,
                                 int32_t head)
{
    int64_t block = slot / g.block_size, off = slot % g.block_size;
    int64_t idx = ((block * g.n_cache_layers + layer) * 2 + t) * g.n_kv_heads + head;
    return (KT *)g.base + (idx * g.block_size + off) * g.head_dim;
}

/* One block per row; threads over kv_heads * head_dim elements of K and of V. */
template <typename KT>
__global__ void skv_kv_write_kernel(skv_kv_geom_t g, int32_t layer, const bf16 *k, int64_t ldk,
                                    const bf16 *v, int64_t ldv, const int32_t *row_slot)
{
    int64_t r = blockIdx.x;
    int32_t slot = row_slot[r], width = g.n_kv_heads * g.head_dim;
    for (int32_t i = threadIdx.x; i < width; i += blockDim.x) {
        int32_t h = i / g.head_dim, d = i % g.head_dim;
        skv_kv_put1<KT>(skv_kv_vec<KT>(g, slot, layer, 0, h) + d, k[r * ldk + i]);
        skv_kv_put1<KT>(skv_kv_vec<KT>(g, slot, layer, 1, h) + d, v[r * ldv + i]);
    }
}

/* The same with 16-byte vectors: a thread moves 8 dims of one head of K and of V
 * (head_dim % 8 == 0 and aligned rows, checked by the launcher). */
template <typename KT>
__global__ void skv_kv_write_vec8_kernel(skv_kv_geom_t g, int32_t layer, const bf16 *k, int64_t ldk,
                                         const bf16 *v, int64_t ldv, const int32_t *row_slot)
{
    int64_t r = blockIdx.x;
    int32_t slot = row_slot[r], per_head = g.head_dim / 8;
    for (int32_t i = threadIdx.x; i < g.n_kv_heads * per_head; i += blockDim.x) {
        int32_t h = i / per_head, d = (i % per_head) * 8, c = h * g.head_dim + d;
        skv_kv_put8<KT>(skv_kv_vec<KT>(g, slot, layer, 0, h) + d,
                        *(const uint4 *)(k + r * ldk + c));
        skv_kv_put8<KT>(skv_kv_vec<KT>(g, slot, layer, 1, h) + d,
                        *(const uint4 *)(v + r * ldv + c));
    }
}

/* Whether the pool's head vectors are 16-byte aligned runs of whole vectors. */
static bool skv_kv_vec8_ok(const skv_kv_view_t *kv)
{
    return (uintptr_t)kv->base % 16 == 0 && kv->head_dim % 8 == 0;
}

template <typename KT>
static void skv_launch_kv_write(skv_backend_t *be, const skv_kv_view_t *kv, int32_t cache_layer,
                                const skv_tensor_t *k, const skv_tensor_t *v,
                                const skv_attn_meta_t *meta)
{
    cudaStream_t st = skv_cuda(be)->stream;
    const int32_t *slots = (const int32_t *)meta->row_slot.data;
    if (skv_kv_vec8_ok(kv) && skv_vec8_ok(k) && skv_vec8_ok(v)) {
        skv_kv_write_vec8_kernel<KT><<<(unsigned)k->rows, skv_row_threads(k->cols / 8), 0, st>>>(
            skv_kv_geom(kv), cache_layer, (const bf16 *)k->data, k->ld, (const bf16 *)v->data,
            v->ld, slots);
    } else {
        skv_kv_write_kernel<KT><<<(unsigned)k->rows, skv_row_threads(k->cols), 0, st>>>(
            skv_kv_geom(kv), cache_layer, (const bf16 *)k->data, k->ld, (const bf16 *)v->data,
            v->ld, slots);
    }
}

skv_status_t skv_cuda_kv_write(skv_backend_t *be, const skv_kv_view_t *kv, int32_t cache_layer,
                               const skv_tensor_t *k, const skv_tensor_t *v,
                               const skv_attn_meta_t *meta)
{
    SKV_ASSERT(k->rows == v->rows && k->cols == (int64_t)kv->n_kv_heads * kv->head_dim);
    SKV_ASSERT(cache_layer >= 0 && cache_layer < kv->n_cache_layers);
    if (!skv_kv_check_dtype(kv, "kv_write")) {
        return SKV_STATUS_UNSUPPORTED;
    }
    if (k->rows == 0) {
        return SKV_STATUS_OK;
    }
    if (kv->dtype == SKV_DTYPE_F8E4M3) {
        skv_launch_kv_write<skv_fp8_t>(be, kv, cache_layer, k, v, meta);
    } else {
        skv_launch_kv_write<bf16>(be, kv, cache_layer, k, v, meta);
    }
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}

/* RoPE of q and k and the scatter of k and v, one block per row (the fusion of
 * skv_rope_vec8_kernel and skv_kv_write_vec8_kernel, same arithmetic): qk holds n_heads query
 * heads then g.n_kv_heads key heads; rotated keys go to the cache and back to qk. */
template <typename KT>
__global__ void skv_rope_kv_write_kernel(skv_kv_geom_t g, int32_t layer, bf16 *qk, int64_t ldqk,
                                         int32_t n_heads, const bf16 *v, int64_t ldv,
                                         const int32_t *pos, const int32_t *row_slot,
                                         const float *inv_freq)
{
    __shared__ float2 cs[SKV_ROPE_MAX_HALF];
    int64_t r = blockIdx.x;
    skv_pdl_trigger();
    skv_pdl_wait();
    int32_t hd = g.head_dim, half = hd / 2, per_head = half / 8, slot = row_slot[r];
    skv_rope_table(cs, half, pos[r], inv_freq);
    bf16 *xr = qk + r * ldqk;
    for (int32_t i = threadIdx.x; i < (n_heads + g.n_kv_heads) * per_head; i += blockDim.x) {
        int32_t h = i / per_head, d = (i % per_head) * 8;
        uint4 *pa = (uint4 *)(xr + h * hd + d), *pb = (uint4 *)(xr + h * hd + d + half);
        uint4 ua = *pa, ub = *pb;
        skv_rope8(ua, ub, cs, d);
        *pa = ua;
        *pb = ub;
        if (h >= n_heads) { /* the rounded key, as rope then kv_write store it */
            KT *kd = skv_kv_vec<KT>(g, slot, layer, 0, h - n_heads) + d;
            skv_kv_put8<KT>(kd, ua);
            skv_kv_put8<KT>(kd + half, ub);
        }
    }
    for (int32_t i = threadIdx.x; i < g.n_kv_heads * hd / 8; i += blockDim.x) {
        int32_t h = i / (hd / 8), d = (i % (hd / 8)) * 8;
        skv_kv_put8<KT>(skv_kv_vec<KT>(g, slot, layer, 1, h) + d,
                        *(const uint4 *)(v + r * ldv + h * hd + d));
    }
}

skv_status_t skv_cuda_rope_kv_write(skv_backend_t *be, const skv_tensor_t *qk, int32_t n_heads,
                                    const skv_tensor_t *v, const skv_kv_view_t *kv,
                                    int32_t cache_layer, const skv_tensor_t *pos,
                                    const skv_tensor_t *inv_freq, const skv_attn_meta_t *meta)
{
    int32_t hd = kv->head_dim, heads = n_heads + kv->n_kv_heads;
    SKV_ASSERT(qk->cols == (int64_t)heads * hd && v->rows == qk->rows);
    SKV_ASSERT(v->cols == (int64_t)kv->n_kv_heads * hd && pos->cols == qk->rows);
    if (!skv_kv_check_dtype(kv, "rope_kv_write")) {
        return SKV_STATUS_UNSUPPORTED;
    }
    if (qk->rows == 0) {
        return SKV_STATUS_OK;
    }
    if (!skv_rope_vec8_ok(qk, hd) || !skv_vec8_ok(v) || !skv_kv_vec8_ok(kv)) {
        skv_tensor_t k = skv_tensor_cols(qk, (int64_t)n_heads * hd, v->cols);
        skv_status_t st = skv_cuda_rope(be, qk, heads, hd, pos, inv_freq);
        return st == SKV_STATUS_OK ? skv_cuda_kv_write(be, kv, cache_layer, &k, v, meta) : st;
    }
    dim3 grid((unsigned)qk->rows), block(skv_row_threads((int64_t)heads * hd / 16));
    cudaStream_t st = skv_cuda(be)->stream;
    const int32_t *pd = (const int32_t *)pos->data, *sd = (const int32_t *)meta->row_slot.data;
    if (kv->dtype == SKV_DTYPE_F8E4M3) {
        skv_cuda_launch(skv_rope_kv_write_kernel<skv_fp8_t>, grid, block, 0, st, skv_kv_geom(kv),
                        cache_layer, (bf16 *)qk->data, qk->ld, n_heads, (const bf16 *)v->data,
                        v->ld, pd, sd, (const float *)inv_freq->data);
    } else {
        skv_cuda_launch(skv_rope_kv_write_kernel<bf16>, grid, block, 0, st, skv_kv_geom(kv),
                        cache_layer, (bf16 *)qk->data, qk->ld, n_heads, (const bf16 *)v->data,
                        v->ld, pd, sd, (const float *)inv_freq->data);
    }
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}

/* SwiftKV epilogue, grid (rows, later cache layers): K with RoPE and V of layer g of row r go
 * to their slot in cache layer first + g. One launch for every later layer. */
template <typename KT>
__global__ void skv_swiftkv_kv_write_kernel(skv_kv_geom_t g, int32_t first, const bf16 *kvs,
                                            int64_t ld, const int32_t *row_slot,
                                            const int32_t *row_pos, const float *inv_freq)
{
    int64_t r = blockIdx.x;
    int32_t layer = blockIdx.y, slot = row_slot[r], pos = row_pos[r];
    int32_t hd = g.head_dim, half = hd / 2, width = g.n_kv_heads * hd;
    const bf16 *src = kvs + r * ld + (int64_t)layer * 2 * width;
    for (int32_t i = threadIdx.x; i < g.n_kv_heads * half; i += blockDim.x) {
        int32_t h = i / half, d = i % half;
        KT *kd = skv_kv_vec<KT>(g, slot, first + layer, 0, h);
        float fa, fb;
        skv_rope_pair_f(src[h * hd + d], src[h * hd + d + half], pos, inv_freq[d], &fa, &fb);
        skv_kv_put1f<KT>(kd + d, fa);
        skv_kv_put1f<KT>(kd + d + half, fb);
    }
    for (int32_t i = threadIdx.x; i < width; i += blockDim.x) {
        skv_kv_put1<KT>(skv_kv_vec<KT>(g, slot, first + layer, 1, i / hd) + i % hd, src[width + i]);
    }
}

/* The same with the RoPE table and 16-byte vectors: a thread takes 8 dims of one head's K
 * pair (d, d + half) and 16 dims of its V (head_dim % 16 == 0, aligned; see the launcher). */
template <typename KT>
__global__ void skv_swiftkv_kv_write_vec8_kernel(skv_kv_geom_t g, int32_t first, const bf16 *kvs,
                                                 int64_t ld, const int32_t *row_slot,
                                                 const int32_t *row_pos, const float *inv_freq)
{
    __shared__ float2 cs[SKV_ROPE_MAX_HALF];
    int64_t r = blockIdx.x;
    int32_t layer = first + blockIdx.y, slot = row_slot[r];
    int32_t hd = g.head_dim, half = hd / 2, per_head = half / 8, width = g.n_kv_heads * hd;
    skv_rope_table(cs, half, row_pos[r], inv_freq);
    const bf16 *src = kvs + r * ld + (int64_t)blockIdx.y * 2 * width;
    for (int32_t i = threadIdx.x; i < g.n_kv_heads * per_head; i += blockDim.x) {
        int32_t h = i / per_head, d = (i % per_head) * 8;
        const bf16 *sk = src + h * hd + d, *sv = src + width + h * hd + d;
        float fa[8], fb[8];
        skv_rope8_f(*(const uint4 *)sk, *(const uint4 *)(sk + half), cs, d, fa, fb);
        KT *kd = skv_kv_vec<KT>(g, slot, layer, 0, h) + d;
        skv_kv_put8f<KT>(kd, fa);
        skv_kv_put8f<KT>(kd + half, fb);
        KT *vd = skv_kv_vec<KT>(g, slot, layer, 1, h) + d;
        skv_kv_put8<KT>(vd, *(const uint4 *)sv);
        skv_kv_put8<KT>(vd + half, *(const uint4 *)(sv + half));
    }
}

template <typename KT>
static void skv_launch_swiftkv_kv_write(skv_backend_t *be, const skv_kv_view_t *kv,
                                        int32_t first_layer, int32_t n_layers,
                                        const skv_tensor_t *kvs, const skv_attn_meta_t *meta,
                                        const skv_tensor_t *inv_freq)
{
    int64_t width = (int64_t)kv->n_kv_heads * kv->head_dim;
    dim3 grid((unsigned)kvs->rows, (unsigned)n_layers);
    cudaStream_t st = skv_cuda(be)->stream;
    const bf16 *src = (const bf16 *)kvs->data;
    const int32_t *slots = (const int32_t *)meta->row_slot.data;
    const int32_t *pos = (const int32_t *)meta->row_pos.data;
    const float *fd = (const float *)inv_freq->data;
    if (skv_kv_vec8_ok(kv) && skv_rope_vec8_ok(kvs, kv->head_dim)) {
        skv_swiftkv_kv_write_vec8_kernel<KT><<<grid, skv_row_threads(width / 16), 0, st>>>(
            skv_kv_geom(kv), first_layer, src, kvs->ld, slots, pos, fd);
    } else {
        skv_swiftkv_kv_write_kernel<KT><<<grid, skv_row_threads(width), 0, st>>>(
            skv_kv_geom(kv), first_layer, src, kvs->ld, slots, pos, fd);
    }
}

skv_status_t skv_cuda_swiftkv_kv_write(skv_backend_t *be, const skv_kv_view_t *kv,
                                       int32_t first_layer, int32_t n_layers,
                                       const skv_tensor_t *kvs, const skv_attn_meta_t *meta,
                                       const skv_tensor_t *inv_freq)
{
    int64_t width = (int64_t)kv->n_kv_heads * kv->head_dim;
    SKV_ASSERT(kvs->cols == (int64_t)n_layers * 2 * width);
    SKV_ASSERT(first_layer >= 0 && first_layer + n_layers <= kv->n_cache_layers);
    if (!skv_kv_check_dtype(kv, "swiftkv_kv_write")) {
        return SKV_STATUS_UNSUPPORTED;
    }
    if (kvs->rows == 0 || n_layers == 0) {
        return SKV_STATUS_OK;
    }
    if (kv->dtype == SKV_DTYPE_F8E4M3) {
        skv_launch_swiftkv_kv_write<skv_fp8_t>(be, kv, first_layer, n_layers, kvs, meta, inv_freq);
    } else {
        skv_launch_swiftkv_kv_write<bf16>(be, kv, first_layer, n_layers, kvs, meta, inv_freq);
    }
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}

/* grid (column blocks, rows): out = silu(gate) * up, in f32, rounded once. */
__global__ void skv_swiglu_kernel(bf16 *out, int64_t ldo, const bf16 *gu, int64_t ldg, int64_t f)
{
    int64_t r = blockIdx.y, c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= f) {
        return;
    }
    float g = __bfloat162float(gu[r * ldg + c]), u = __bfloat162float(gu[r * ldg + f + c]);
    out[r * ldo + c] = __float2bfloat16(g / (1.0f + expf(-g)) * u);
}

/* The same, 8 columns per thread with 16-byte accesses (launcher checks the alignment):
 * grid (column blocks of 8 * blockDim.x, rows). */
__global__ void skv_swiglu_vec8_kernel(bf16 *out, int64_t ldo, const bf16 *gu, int64_t ldg,
                                       int64_t f)
{
    int64_t r = blockIdx.y, c = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 8;
    if (c >= f) {
        return;
    }
    float g[8], u[8];
    skv_unpack8(*(const uint4 *)(gu + r * ldg + c), g);
    skv_unpack8(*(const uint4 *)(gu + r * ldg + f + c), u);
#pragma unroll
    for (int e = 0; e < 8; e++) {
        g[e] = g[e] / (1.0f + expf(-g[e])) * u[e];
    }
    *(uint4 *)(out + r * ldo + c) = skv_pack8(g);
}

skv_status_t skv_cuda_swiglu(skv_backend_t *be, const skv_tensor_t *out,
                             const skv_tensor_t *gate_up)
{
    int64_t f = out->cols;
    SKV_ASSERT(gate_up->cols == 2 * f && gate_up->rows == out->rows);
    if (out->rows == 0) {
        return SKV_STATUS_OK;
    }
    cudaStream_t st = skv_cuda(be)->stream;
    if (skv_vec8_ok(out) && skv_vec8_ok(gate_up)) {
        dim3 grid(skv_cuda_blocks(f / 8, 128), (unsigned)out->rows);
        skv_swiglu_vec8_kernel<<<grid, 128, 0, st>>>((bf16 *)out->data, out->ld,
                                                     (const bf16 *)gate_up->data, gate_up->ld, f);
    } else {
        dim3 grid(skv_cuda_blocks(f, 256), (unsigned)out->rows);
        skv_swiglu_kernel<<<grid, 256, 0, st>>>((bf16 *)out->data, out->ld,
                                                (const bf16 *)gate_up->data, gate_up->ld, f);
    }
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}

/* Grid-stride over n_rows * cols dense source elements into bf16 dst rows from row0. */
template <typename T>
__global__ void skv_convert_kernel(bf16 *dst, int64_t ld, const T *src, int64_t n, int64_t cols)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        dst[(i / cols) * ld + i % cols] = __float2bfloat16((float)src[i]);
    }
}

skv_status_t skv_cuda_convert_rows(skv_backend_t *be, const skv_tensor_t *dst, int64_t row0,
                                   const void *d_src, skv_dtype_t src_dtype, int64_t n_rows)
{
    int64_t n = n_rows * dst->cols;
    bf16 *d = (bf16 *)dst->data + row0 * dst->ld;
    unsigned blocks = skv_cuda_blocks(n, 256) < 4096 ? skv_cuda_blocks(n, 256) : 4096;
    cudaStream_t st = skv_cuda(be)->stream;
    if (n == 0) {
        return SKV_STATUS_OK;
    }
    if (src_dtype == SKV_DTYPE_F32) {
        skv_convert_kernel<float>
            <<<blocks, 256, 0, st>>>(d, dst->ld, (const float *)d_src, n, dst->cols);
    } else {
        skv_convert_kernel<__half>
            <<<blocks, 256, 0, st>>>(d, dst->ld, (const __half *)d_src, n, dst->cols);
    }
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}

__global__ void skv_fill_kernel(bf16 *dst, int64_t ld, int64_t n, int64_t cols, uint64_t seed,
                                float scale, float offset)
{
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x) {
        dst[(i / cols) * ld + i % cols] =
            __float2bfloat16(skv_weight_hash_value(seed, (uint64_t)i, scale, offset));
    }
}

skv_status_t skv_cuda_weight_fill(skv_backend_t *be, const skv_tensor_t *dst, uint64_t seed,
                                  float scale, float offset)
{
    SKV_ASSERT(dst->dtype == SKV_DTYPE_BF16);
    int64_t n = dst->rows * dst->cols;
    if (n == 0) {
        return SKV_STATUS_OK;
    }
    unsigned blocks = (unsigned)(skv_cuda(be)->n_sms * 8);
    skv_fill_kernel<<<blocks, 256, 0, skv_cuda(be)->stream>>>((bf16 *)dst->data, dst->ld, n,
                                                              dst->cols, seed, scale, offset);
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}
