/*
 * cuda_internal.h: state and helpers shared by the CUDA backend's translation units.
 * Included only by the .cu files of kernels/cuda.
 *
 * Invariants: every op enqueues on be->stream and never allocates; every CUDA or cuBLAS
 * failure becomes SKV_STATUS_DEVICE through SKV_CUDA_CHECK / SKV_CUBLAS_CHECK, which log the
 * failing call once, where it is decided.
 */
#ifndef SKV_KERNELS_CUDA_INTERNAL_H
#define SKV_KERNELS_CUDA_INTERNAL_H

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

extern "C" {
#include "base/log.h"
#include "kernels/cuda/cuda.h"
}

/* Attention split workspace: partial outputs of the decode kernel when a row's context is
 * split over several blocks. Floats; 32 Mi floats (128 MiB) hold e.g. 512 rows x 32 heads
 * x 15 splits of head_dim 128. Splits are cut to fit, never an error. */
#define SKV_CUDA_ATTN_WS_FLOATS ((size_t)32 << 20)
/* cuBLAS workspace, set once so cuBLAS never allocates on the hot path. */
#define SKV_CUDA_CUBLAS_WS_BYTES ((size_t)32 << 20)
/* Weight upload: two pinned host buffers and one device buffer of this many bytes. */
#define SKV_CUDA_STAGE_BYTES ((size_t)64 << 20)

/* Captured step graphs kept per backend (decode batch sizes x context buckets). */
#define SKV_CUDA_MAX_GRAPHS 64

typedef struct {
    uint64_t key;
    cudaGraphExec_t exec;
} skv_cuda_graph_t;

typedef struct {
    skv_backend_t base;
    int device;
    int n_sms;
    cudaStream_t stream;
    cublasHandle_t cublas;
    void *d_cublas_ws;
    float *d_attn_ws;          /* SKV_CUDA_ATTN_WS_FLOATS */
    void *h_stage[2];          /* pinned upload staging */
    cudaEvent_t stage_done[2]; /* the DMA out of h_stage[i] finished */
    void *d_stage;             /* device side of a converting upload */
    skv_cuda_graph_t graphs[SKV_CUDA_MAX_GRAPHS];
    int n_graphs;
} skv_cuda_backend_t;

static inline skv_cuda_backend_t *skv_cuda(skv_backend_t *be)
{
    return (skv_cuda_backend_t *)be;
}

skv_status_t skv_cuda_error(cudaError_t err, const char *what, const char *file, int line);
skv_status_t skv_cublas_error(cublasStatus_t st, const char *what, const char *file, int line);

/* Turns a failing CUDA runtime call into SKV_STATUS_DEVICE (logged with the CUDA string). */
#define SKV_CUDA_CHECK(call)                                                                       \
    do {                                                                                           \
        cudaError_t skv_cuda_err_ = (call);                                                        \
        if (skv_cuda_err_ != cudaSuccess) {                                                        \
            return skv_cuda_error(skv_cuda_err_, #call, __FILE__, __LINE__);                       \
        }                                                                                          \
    } while (0)

/* After a kernel launch: launch-configuration errors surface here, not at the next sync. */
#define SKV_CUDA_CHECK_LAUNCH() SKV_CUDA_CHECK(cudaGetLastError())

#define SKV_CUBLAS_CHECK(call)                                                                     \
    do {                                                                                           \
        cublasStatus_t skv_cublas_st_ = (call);                                                    \
        if (skv_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                                             \
            return skv_cublas_error(skv_cublas_st_, #call, __FILE__, __LINE__);                    \
        }                                                                                          \
    } while (0)

/* Programmatic dependent launch (PDL, sm_90): a kernel launched with skv_cuda_launch may be
 * scheduled while the kernel before it on the stream still runs, once every block of that one
 * has called skv_pdl_trigger, so its launch hides behind that kernel's tail. Contract of every
 * kernel launched so: each block calls skv_pdl_wait before it reads what earlier kernels wrote,
 * writes anything or exits (code before the wait may only compute addresses), which also makes its
 * completion imply that of every kernel before it. Used on the decode path (GEMV, norms, RoPE + KV
 * write, decode attention, row copies, sampling): H100, 8B, ctx 2048: batch 1 6.00-6.04
 * against 6.06-6.09 ms per step, batch 4 7.68-7.71 against 7.76-7.81 (an L2 prefetch of the GEMV's
 * weight rows before the wait was tried: 0.7 ms slower at batch 1). Kernels that call
 * skv_pdl_trigger first thing let the next kernel in. Both are no-ops below sm_90 and in a kernel
 * launched without PDL. SKV_NO_PDL=1 (read at backend creation) launches without it, for A/B. */
extern int g_skv_cuda_pdl;

static __device__ __forceinline__ void skv_pdl_trigger(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

static __device__ __forceinline__ void skv_pdl_wait(void)
{
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

/* Launches kernel<<<grid, block, smem, stream>>>(args) with PDL when g_skv_cuda_pdl is set
 * (see above for the kernel's side of the contract). A launch error is left for
 * SKV_CUDA_CHECK_LAUNCH, as with <<<>>>. */
template <typename... KArgs, typename... Args>
static inline void skv_cuda_launch(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem,
                                   cudaStream_t stream, Args... args)
{
    cudaLaunchAttribute attr;
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cfg.attrs = &attr;
    cfg.numAttrs = g_skv_cuda_pdl ? 1 : 0;
    (void)cudaLaunchKernelEx(&cfg, kernel, args...);
}

static inline unsigned skv_cuda_blocks(int64_t n, int threads)
{
    return (unsigned)((n + threads - 1) / threads);
}

/* Element ops (cuda_kernels.cu). */
skv_status_t skv_cuda_embed(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *table,
                            const skv_tensor_t *tokens);
skv_status_t skv_cuda_rmsnorm(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *x,
                              const skv_tensor_t *w, float eps);
skv_status_t skv_cuda_add_rmsnorm(skv_backend_t *be, const skv_tensor_t *x,
                                  const skv_tensor_t *delta, const skv_tensor_t *out,
                                  const skv_tensor_t *w, float eps);
skv_status_t skv_cuda_rope(skv_backend_t *be, const skv_tensor_t *x, int32_t n_heads,
                           int32_t head_dim, const skv_tensor_t *pos, const skv_tensor_t *inv_freq);
skv_status_t skv_cuda_kv_write(skv_backend_t *be, const skv_kv_view_t *kv, int32_t cache_layer,
                               const skv_tensor_t *k, const skv_tensor_t *v,
                               const skv_attn_meta_t *meta);
skv_status_t skv_cuda_swiftkv_kv_write(skv_backend_t *be, const skv_kv_view_t *kv,
                                       int32_t first_layer, int32_t n_layers,
                                       const skv_tensor_t *kvs, const skv_attn_meta_t *meta,
                                       const skv_tensor_t *inv_freq);
skv_status_t skv_cuda_swiglu(skv_backend_t *be, const skv_tensor_t *out,
                             const skv_tensor_t *gate_up);
skv_status_t skv_cuda_gather_rows(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *x,
                                  const skv_tensor_t *idx);
skv_status_t skv_cuda_weight_fill(skv_backend_t *be, const skv_tensor_t *dst, uint64_t seed,
                                  float scale, float offset);
/* Converts n_rows x cols of src_dtype (dense, device) into bf16 rows of dst from row0. */
skv_status_t skv_cuda_convert_rows(skv_backend_t *be, const skv_tensor_t *dst, int64_t row0,
                                   const void *d_src, skv_dtype_t src_dtype, int64_t n_rows);

/* Few-row matmul (cuda_gemv.cu): whether skv_cuda_gemv takes out = x w^T (x->rows small
 * enough, 16-byte aligned rows, cols % 8 == 0), and the op itself (same contract as matmul). */
bool skv_cuda_gemv_applies(const skv_tensor_t *out, const skv_tensor_t *x, const skv_tensor_t *w);
skv_status_t skv_cuda_gemv(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *x,
                           const skv_tensor_t *w);
/* The matmul_swiglu op (ops.h): the fused GEMV when skv_cuda_gemv_applies, else UNSUPPORTED. */
skv_status_t skv_cuda_matmul_swiglu(skv_backend_t *be, const skv_tensor_t *out,
                                    const skv_tensor_t *x, const skv_tensor_t *w);
/* The rope_kv_write op (ops.h), cuda_kernels.cu. */
skv_status_t skv_cuda_rope_kv_write(skv_backend_t *be, const skv_tensor_t *qk, int32_t n_heads,
                                    const skv_tensor_t *v, const skv_kv_view_t *kv,
                                    int32_t cache_layer, const skv_tensor_t *pos,
                                    const skv_tensor_t *inv_freq, const skv_attn_meta_t *meta);

/* Sampling (cuda_sample.cu). */
skv_status_t skv_cuda_sample(skv_backend_t *be, const skv_tensor_t *tokens,
                             const skv_tensor_t *logits, const skv_tensor_t *params);

/* Attention (cuda_attention.cu). */
skv_status_t skv_cuda_attention(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *q,
                                const skv_kv_view_t *kv, int32_t cache_layer, int32_t n_heads,
                                float scale, const skv_attn_meta_t *meta);

#endif /* SKV_KERNELS_CUDA_INTERNAL_H */
