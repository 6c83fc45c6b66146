/*
 * cuda_sample.cu: the optional sample op: greedy, or temperature + top-k + top-p + one draw,
 * per logit row, on the GPU (contract in kernels/ops.h).
 *
 * One block of 1024 threads per row; the row stays in global memory (a 128k vocabulary is
 * 512 KB) and is read once per pass (about 13 passes, from L2). Top-k and top-p thresholds are
 * found exactly by selection over the order-preserving integer key of each logit: one pass
 * into eighth-octave probability bins, then 4 radix passes of 8 key bits within the chosen bin
 * (histograms in shared memory): top-k counts ids, top-p accumulates probability mass. The kept set
 * is every id whose key is at least the threshold, so ids tied with the boundary value are all
 * kept. The draw is a block-wide prefix sum over contiguous per-thread chunks in id order.
 * Probabilities are exp2((x - max) / T * log2 e) in fp32.
 */
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>
#include <math.h>
#include <stdint.h>

#include "kernels/cuda/cuda_internal.h"

#define SKV_SAMPLE_THREADS 1024

typedef cub::BlockReduce<float, SKV_SAMPLE_THREADS> skv_sample_reduce_t;
typedef cub::BlockScan<float, SKV_SAMPLE_THREADS> skv_sample_scan_t;

/* Order-preserving map of a float to an unsigned key (larger float, larger key). */
static __device__ __forceinline__ uint32_t skv_sample_key(float x)
{
    uint32_t b = __float_as_uint(x);
    return b ^ ((b >> 31) ? 0xffffffffu : 0x80000000u);
}

struct skv_argmax_t {
    float v;
    int32_t i;
};

struct skv_argmax_op {
    __device__ skv_argmax_t operator()(const skv_argmax_t &a, const skv_argmax_t &b) const
    {
        return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a; /* ties: lowest id */
    }
};

/* The coarse level's bin of logit v: 255 - floor(8 log2(1 / p)) for p = exp2((v - xmax) sc),
 * clamped to [0, 255]: eighth-octave bins of probability, non-decreasing in v (every step is
 * monotone), so a bin is a key range. Logits spread over many bins, where the top byte of
 * their float keys falls in a handful: the first pass's shared-memory atomics stop colliding. */
static __device__ __forceinline__ int skv_sample_bucket(float v, float xmax, float sc)
{
    return 255 - (int)fminf((xmax - v) * sc * 8.0f, 255.0f);
}

/* The largest key threshold t such that the ids with key >= floor_key and key >= t hold at
 * least `target` of weight (mass != 0: probability exp2((x - xmax) * sc); mass == 0: count).
 * Level 0 picks the probability bin (skv_sample_bucket) that holds the boundary; levels 1-4
 * then select exactly within that bin by radix over the key, top byte first. Thread 0 walks
 * each 256-bin histogram. */
static __device__ uint32_t skv_sample_select(const float *x, int32_t V, uint32_t floor_key,
                                             float target, int mass, float xmax, float sc)
{
    __shared__ float hist[256];
    __shared__ uint32_t s_prefix, s_mask;
    __shared__ int s_bucket;
    __shared__ float s_above;
    if (threadIdx.x == 0) {
        s_prefix = 0;
        s_mask = 0;
        s_bucket = -1;
        s_above = 0.0f;
    }
    for (int level = 0; level <= 4; level++) {
        int shift = 32 - 8 * level; /* levels 1-4: key bits 31-24, ..., 7-0 */
        for (int b = threadIdx.x; b < 256; b += blockDim.x) {
            hist[b] = 0.0f;
        }
        __syncthreads();
        uint32_t prefix = s_prefix, mask = s_mask;
        int bucket = s_bucket;
        for (int32_t i = threadIdx.x; i < V; i += blockDim.x) {
            float v = x[i];
            uint32_t k = skv_sample_key(v);
            if (k < floor_key) {
                continue;
            }
            int b = skv_sample_bucket(v, xmax, sc);
            if (level > 0 && (b != bucket || (k & mask) != prefix)) {
                continue;
            }
            int bin = level == 0 ? b : (int)((k >> shift) & 255);
            atomicAdd(&hist[bin], mass ? exp2f((v - xmax) * sc) : 1.0f);
        }
        __syncthreads();
        if (threadIdx.x == 0) {
            float above = s_above;
            int chosen = -1, last = 0;
            for (int b = 255; b >= 0; b--) {
                if (hist[b] == 0.0f) {
                    continue;
                }
                last = b;
                if (above + hist[b] >= target) {
                    chosen = b;
                    break;
                }
                above += hist[b];
            }
            if (chosen < 0) { /* rounding left the target unreached: lowest non-empty bin */
                chosen = last;
                above -= hist[last];
            }
            s_above = above;
            if (level == 0) {
                s_bucket = chosen;
            } else {
                s_prefix = prefix | ((uint32_t)chosen << shift);
                s_mask = mask | (255u << shift);
            }
        }
        __syncthreads();
    }
    return s_prefix;
}

/* grid (M), SKV_SAMPLE_THREADS threads: one row each. */
__global__ void __launch_bounds__(SKV_SAMPLE_THREADS)
    skv_sample_kernel(int32_t *tokens, const float *logits, int64_t ld, int32_t V,
                      const float *params)
{
    __shared__ union {
        skv_sample_reduce_t::TempStorage reduce;
        skv_sample_scan_t::TempStorage scan;
        typename cub::BlockReduce<skv_argmax_t, SKV_SAMPLE_THREADS>::TempStorage argmax;
    } tmp;
    __shared__ float s_f;
    __shared__ int32_t s_i;
    int32_t row = blockIdx.x;
    skv_pdl_trigger();
    skv_pdl_wait();
    const float *x = logits + (int64_t)row * ld;
    const float *pr = params + (int64_t)row * 4;
    float temp = pr[0], top_p = pr[2], u = pr[3];
    int32_t top_k = (int32_t)pr[1];

    skv_argmax_t best = {-INFINITY, V};
    for (int32_t i = threadIdx.x; i < V; i += blockDim.x) {
        best = skv_argmax_op()(best, skv_argmax_t{x[i], i});
    }
    best = cub::BlockReduce<skv_argmax_t, SKV_SAMPLE_THREADS>(tmp.argmax)
               .Reduce(best, skv_argmax_op());
    if (threadIdx.x == 0) {
        s_f = best.v;
        s_i = best.i < V ? best.i : 0;
    }
    __syncthreads();
    float xmax = s_f;
    if (temp <= 0.0f) {
        if (threadIdx.x == 0) {
            tokens[row] = s_i;
        }
        return;
    }
    float sc = 1.4426950408889634f / temp; /* exp(x / T) = exp2(x * log2(e) / T) */
    uint32_t thr = 0;
    if (top_k > 0 && top_k < V) {
        thr = skv_sample_select(x, V, 0, (float)top_k, 0, xmax, sc);
    }
    if (top_p < 1.0f) {
        float z = 0.0f;
        for (int32_t i = threadIdx.x; i < V; i += blockDim.x) {
            float v = x[i];
            z += skv_sample_key(v) >= thr ? exp2f((v - xmax) * sc) : 0.0f;
        }
        __syncthreads(); /* tmp was last used by the argmax reduction */
        z = skv_sample_reduce_t(tmp.reduce).Sum(z);
        if (threadIdx.x == 0) {
            s_f = z;
        }
        __syncthreads();
        thr = skv_sample_select(x, V, thr, top_p * s_f, 1, xmax, sc);
    }

    /* Draw: thread t owns ids [t * chunk, (t + 1) * chunk); exclusive prefix of kept mass. */
    int32_t chunk = (V + SKV_SAMPLE_THREADS - 1) / SKV_SAMPLE_THREADS;
    int32_t i0 = threadIdx.x * chunk, i1 = min(V, i0 + chunk);
    float local = 0.0f;
    for (int32_t i = i0; i < i1; i++) {
        float v = x[i];
        local += skv_sample_key(v) >= thr ? exp2f((v - xmax) * sc) : 0.0f;
    }
    float before = 0.0f, total = 0.0f;
    __syncthreads();
    skv_sample_scan_t(tmp.scan).ExclusiveSum(local, before, total);
    if (threadIdx.x == 0) {
        s_i = -1;
    }
    __syncthreads();
    float target = u * total;
    if (local > 0.0f && before <= target && target < before + local) {
        float acc = before;
        int32_t pick = -1, last = -1;
        for (int32_t i = i0; i < i1 && pick < 0; i++) {
            float v = x[i];
            if (skv_sample_key(v) >= thr) {
                last = i;
                acc += exp2f((v - xmax) * sc);
                pick = acc > target ? i : -1;
            }
        }
        s_i = pick >= 0 ? pick : last; /* one thread's range holds the target */
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        /* target == total (rounding): no range claimed it; the argmax is always kept. */
        tokens[row] = s_i >= 0 ? s_i : (best.i < V ? best.i : 0);
    }
}

skv_status_t skv_cuda_sample(skv_backend_t *be, const skv_tensor_t *tokens,
                             const skv_tensor_t *logits, const skv_tensor_t *params)
{
    SKV_ASSERT(logits->dtype == SKV_DTYPE_F32 && params->dtype == SKV_DTYPE_F32);
    SKV_ASSERT(tokens->dtype == SKV_DTYPE_I32 && tokens->rows * tokens->cols == logits->rows);
    SKV_ASSERT(params->rows == logits->rows && params->cols == 4 && params->ld == 4);
    if (logits->rows == 0) {
        return SKV_STATUS_OK;
    }
    skv_cuda_launch(skv_sample_kernel, (unsigned)logits->rows, SKV_SAMPLE_THREADS, 0,
                    skv_cuda(be)->stream, (int32_t *)tokens->data, (const float *)logits->data,
                    logits->ld, (int32_t)logits->cols, (const float *)params->data);
    SKV_CUDA_CHECK_LAUNCH();
    return SKV_STATUS_OK;
}
