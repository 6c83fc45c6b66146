/*
 * cuda_gemv.cu: the matmul of a few rows (decode at small batch): out[M, O] = x[M, I] w[O, I]^T
 * with M <= SKV_GEMV_MAX_ROWS, bf16 in, f32 accumulate, bf16 or f32 out.
 *
 * At M = 1..4 the product is a stream over the weights (O x I bf16, read once) and the time is
 * the weight bytes over HBM bandwidth. cuBLAS reaches 1.8-2.1 TB/s on the 8B model's q/k/v and
 * o projections (6144 x 4096, 4096 x 4096) at M = 1; this kernel keeps more loads in flight
 * per SM: one warp per output column, each lane streaming 16-byte weight vectors with UNROLL
 * of them outstanding (no L1 allocation: every weight byte is used once), the M input rows read
 * through L1 (they are reused by every warp of the SM). Lanes sum in registers, the warp by
 * shuffles; no shared memory, no atomics, so results are deterministic.
 *
 * Applies when x and w rows are 16-byte aligned and I % 8 == 0 (skv_cuda_gemv_applies);
 * otherwise the caller uses cuBLAS. The same weight stream also serves the fused gate/up
 * projection + SwiGLU of the MLP (matmul_swiglu): a warp sums the gate and the up row of one
 * output column, so gate_up never goes to memory and the swiglu launch disappears.
 */
#include <stdint.h>
#include <stdlib.h>

#include <type_traits>

#include "kernels/cuda/cuda_internal.h"

typedef __nv_bfloat16 bf16;

#define SKV_GEMV_WARPS  8 /* warps per block, one output column each */
#define SKV_GEMV_UNROLL 4 /* 16-byte weight loads in flight per lane */

/* A 16-byte weight load that bypasses L1 (streamed once). */
static __device__ __forceinline__ uint4 skv_ld_stream(const void *p)
{
    uint4 v;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
                 : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
                 : "l"(p));
    return v;
}

/* acc += dot(w8, x8) over 8 bf16 pairs, f32. */
static __device__ __forceinline__ float skv_dot8(uint4 w, uint4 x, float acc)
{
    const __nv_bfloat162 *wb = (const __nv_bfloat162 *)&w;
    const __nv_bfloat162 *xb = (const __nv_bfloat162 *)&x;
#pragma unroll
    for (int e = 0; e < 4; e++) {
        float2 a = __bfloat1622float2(wb[e]), b = __bfloat1622float2(xb[e]);
        acc = fmaf(a.x, b.x, acc);
        acc = fmaf(a.y, b.y, acc);
    }
    return acc;
}

static __device__ __forceinline__ void skv_gemv_store(float *out, int64_t i, float v)
{
    out[i] = v;
}

static __device__ __forceinline__ void skv_gemv_store(bf16 *out, int64_t i, float v)
{
    out[i] = __float2bfloat16(v);
}

/* acc[m] += dot(w row, x row m) over n_in columns for this lane's share: vectors lane,
 * lane + 32, ... with UNROLL weight loads in flight; the caller reduces over the warp. */
template <int M>
static __device__ __forceinline__ void skv_gemv_row(float *acc, const bf16 *wr, const bf16 *x,
                                                    int64_t ldx, int64_t n_in, int lane)
{
    int64_t n_vec = n_in / 8, v = lane;
    for (; v + 32 * (SKV_GEMV_UNROLL - 1) < n_vec; v += 32 * SKV_GEMV_UNROLL) {
        uint4 wv[SKV_GEMV_UNROLL];
#pragma unroll
        for (int u = 0; u < SKV_GEMV_UNROLL; u++) {
            wv[u] = skv_ld_stream(wr + (v + 32 * u) * 8);
        }
#pragma unroll
        for (int u = 0; u < SKV_GEMV_UNROLL; u++) {
#pragma unroll
            for (int m = 0; m < M; m++) {
                uint4 xv = __ldg((const uint4 *)(x + m * ldx + (v + 32 * u) * 8));
                acc[m] = skv_dot8(wv[u], xv, acc[m]);
            }
        }
    }
    for (; v < n_vec; v += 32) { /* tail: fewer than 32 * UNROLL vectors left */
        uint4 wv = skv_ld_stream(wr + v * 8);
#pragma unroll
        for (int m = 0; m < M; m++) {
            acc[m] = skv_dot8(wv, __ldg((const uint4 *)(x + m * ldx + v * 8)), acc[m]);
        }
    }
#pragma unroll
    for (int m = 0; m < M; m++) {
        for (int off = 16; off > 0; off >>= 1) {
            acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], off);
        }
    }
}

/* Grid: ceil(O / SKV_GEMV_WARPS) blocks of SKV_GEMV_WARPS warps; warp -> output column o.
 * x [M, I] (row stride ldx), w [O, I] (row stride ldw), out [M, O] (row stride ldo); I % 8 == 0. */
template <int M, typename TOut>
__global__ void __launch_bounds__(SKV_GEMV_WARPS * 32)
    skv_gemv_kernel(TOut *out, int64_t ldo, const bf16 *x, int64_t ldx, const bf16 *w, int64_t ldw,
                    int64_t n_out, int64_t n_in)
{
    int64_t o = (int64_t)blockIdx.x * SKV_GEMV_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    skv_pdl_trigger();
    skv_pdl_wait(); /* x comes from the kernel before */
    if (o >= n_out) {
        return;
    }
    float acc[M];
#pragma unroll
    for (int m = 0; m < M; m++) {
        acc[m] = 0.0f;
    }
    skv_gemv_row<M>(acc, w + o * ldw, x, ldx, n_in, lane);
    if (lane == 0) {
#pragma unroll
        for (int m = 0; m < M; m++) {
            skv_gemv_store(out, m * ldo + o, acc[m]);
        }
    }
}

/* The fused gate/up projection and SwiGLU: warp -> output column c < F, from weight rows c
 * (gate) and F + c (up), each summed exactly as skv_gemv_kernel sums it and rounded to bf16,
 * then out = silu(g) * u as the swiglu op computes it. out [M, F] (row stride ldo). */
template <int M>
__global__ void __launch_bounds__(SKV_GEMV_WARPS * 32)
    skv_gemv_swiglu_kernel(bf16 *out, int64_t ldo, const bf16 *x, int64_t ldx, const bf16 *w,
                           int64_t ldw, int64_t f, int64_t n_in)
{
    int64_t c = (int64_t)blockIdx.x * SKV_GEMV_WARPS + threadIdx.x / 32;
    int lane = threadIdx.x % 32;
    skv_pdl_trigger();
    skv_pdl_wait(); /* x comes from the kernel before */
    if (c >= f) {
        return;
    }
    float g[M], u[M];
#pragma unroll
    for (int m = 0; m < M; m++) {
        g[m] = u[m] = 0.0f;
    }
    skv_gemv_row<M>(g, w + c * ldw, x, ldx, n_in, lane);
    skv_gemv_row<M>(u, w + (f + c) * ldw, x, ldx, n_in, lane);
    if (lane == 0) {
#pragma unroll
        for (int m = 0; m < M; m++) {
            float gb = __bfloat162float(__float2bfloat16(g[m]));
            float ub = __bfloat162float(__float2bfloat16(u[m]));
            out[m * ldo + c] = __float2bfloat16(gb / (1.0f + expf(-gb)) * ub);
        }
    }
}

/* The largest M this module takes: SKV_GEMV_MAX_ROWS from the environment (0 disables the
 * kernel, for A/B against cuBLAS), default 4, at most 8. Read once. */
static int skv_gemv_max_rows(void)
{
    static int max_rows = -1;
    if (max_rows < 0) {
        const char *e = getenv("SKV_GEMV_MAX_ROWS");
        int v = e != NULL ? atoi(e) : 4;
        max_rows = v < 0 ? 0 : (v > 8 ? 8 : v);
    }
    return max_rows;
}

static bool skv_gemv_aligned(const skv_tensor_t *t)
{
    return (uintptr_t)t->data % 16 == 0 && t->ld % 8 == 0;
}

bool skv_cuda_gemv_applies(const skv_tensor_t *out, const skv_tensor_t *x, const skv_tensor_t *w)
{
    return x->rows <= skv_gemv_max_rows() && x->cols % 8 == 0 && skv_gemv_aligned(x) &&
           skv_gemv_aligned(w);
}

template <int M, typename TOut>
static void skv_gemv_launch_m(cudaStream_t st, const skv_tensor_t *out, const skv_tensor_t *x,
                              const skv_tensor_t *w)
{
    unsigned blocks = skv_cuda_blocks(w->rows, SKV_GEMV_WARPS);
    skv_cuda_launch(skv_gemv_kernel<M, TOut>, blocks, SKV_GEMV_WARPS * 32, 0, st, (TOut *)out->data,
                    out->ld, (const bf16 *)x->data, x->ld, (const bf16 *)w->data, w->ld, w->rows,
                    w->cols);
}

/* Calls fn(std::integral_constant<int, M>) with M = rows (1..8): one kernel instance per M. */
template <typename Fn> static void skv_gemv_by_rows(int64_t rows, Fn fn)
{
    switch (rows) {
    case 1:
        fn(std::integral_constant<int, 1>());
        break;
    case 2:
        fn(std::integral_constant<int, 2>());
        break;
    case 3:
        fn(std::integral_constant<int, 3>());
        break;
    case 4:
        fn(std::integral_constant<int, 4>());
        break;
    case 5:
        fn(std::integral_constant<int, 5>());
        break;
    case 6:
        fn(std::integral_constant<int, 6>());
        break;
    case 7:
        fn(std::integral_constant<int, 7>());
        break;
    default:
        fn(std::integral_constant<int, 8>());
        break;
    }
}

template <int M>
static void skv_gemv_swiglu_launch_m(cudaStream_t st, const skv_tensor_t *out,
                                     const skv_tensor_t *x, const skv_tensor_t *w)
{
    unsigned blocks = skv_cuda_blocks(out->cols, SKV_GEMV_WARPS);
    skv_cuda_launch(skv_gemv_swiglu_kernel<M>, blocks, SKV_GEMV_WARPS * 32, 0, st,
                    (bf16 *)out->data, out->ld, (const bf16 *)x->data, x->ld, (const bf16 *)w->data,
                    w->ld, out->cols, w->cols);
}

skv_status_t skv_cuda_matmul_swiglu(skv_backend_t *be, const skv_tensor_t *out,
                                    const skv_tensor_t *x, const skv_tensor_t *w)
{
    SKV_ASSERT(x->cols == w->cols && out->rows == x->rows && 2 * out->cols == w->rows);
    SKV_ASSERT(out->dtype == SKV_DTYPE_BF16);
    if (x->rows == 0 || !skv_cuda_gemv_applies(out, x, w)) {
        return x->rows == 0 ? SKV_STATUS_OK : SKV_STATUS_UNSUPPORTED; /* nothing enqueued */
    }
    cudaStream_t st = skv_cuda(be)->stream;
    skv_gemv_by_rows(x->rows,
                     [&](auto m) { skv_gemv_swiglu_launch_m<decltype(m)::value>(st, out, x, w); });
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}

skv_status_t skv_cuda_gemv(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *x,
                           const skv_tensor_t *w)
{
    SKV_ASSERT(x->rows >= 1 && x->rows <= 8 && skv_cuda_gemv_applies(out, x, w));
    cudaStream_t st = skv_cuda(be)->stream;
    skv_gemv_by_rows(x->rows, [&](auto m) {
        if (out->dtype == SKV_DTYPE_F32) {
            skv_gemv_launch_m<decltype(m)::value, float>(st, out, x, w);
        } else {
            skv_gemv_launch_m<decltype(m)::value, bf16>(st, out, x, w);
        }
    });
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}
