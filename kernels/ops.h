/*
 * ops.h: the compute-backend interface (one ops table per backend).
 *
 * The model forward in common/model/model.c is backend-blind: it sees only skv_tensor_t views and
 * calls through skv_ops_t. A backend owns its memory (host for CPU, device for CUDA), its
 * streams and handles, and the dtype of activations and weights it wants. All tensors are
 * 2-D, row-major, with an explicit row stride `ld` (elements), so column slices of a fused
 * buffer (q/k/v out of one GEMM) are views, not copies.
 *
 * KV cache layout (one contiguous pool, fixed-size blocks; see skv_kv_view_t):
 *   pool[block][cache_layer][kv (0=K, 1=V)][kv_head][slot in block][head_dim]
 * so one block holds every layer of block_size tokens: a request's KV is a few contiguous
 * runs, which is what the UCX push moves. Elements are of the pool's dtype, one of the
 * backend's kv_dtypes (its kv_dtype by default; F8E4M3 halves the bytes per token).
 *
 * Threading: one backend instance is driven by one thread at a time. Ops are asynchronous
 * on devices; skv_ops_t.sync waits for all of them. Integer metadata (tokens, positions,
 * slots, block tables) lives in backend memory too, uploaded with copy_h2d.
 */
#ifndef SKV_KERNELS_OPS_H
#define SKV_KERNELS_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"

typedef enum {
    SKV_DTYPE_F32 = 0,
    SKV_DTYPE_F16,
    SKV_DTYPE_BF16,
    SKV_DTYPE_I32,
    /* OCP fp8 E4M3 "fn" (1 sign, 4 exponent bits of bias 7, 3 mantissa bits; no infinities,
     * 0x7f / 0xff are NaN, largest finite +-448). A KV cache dtype only (see kv_dtypes):
     * values are stored unscaled (a fixed scale of 1.0, as vLLM's kv_cache_dtype=fp8 without
     * calibration), quantized on write and widened to the compute dtype on read. Appended last
     * so the values above, which layout fingerprints encode, stay as they were. */
    SKV_DTYPE_F8E4M3,
    SKV_DTYPE_COUNT_
} skv_dtype_t;

/* Returns the size in bytes of one element of dtype. */
size_t skv_dtype_size(skv_dtype_t dtype);
/* Returns a static name ("bf16", "f8e4m3"). */
const char *skv_dtype_name(skv_dtype_t dtype);

/* A 2-D view of backend memory. Row i, column j is at data + (i * ld + j) * elem_size. */
typedef struct {
    void *data;
    skv_dtype_t dtype;
    int64_t rows;
    int64_t cols;
    int64_t ld; /* row stride in elements, >= cols */
} skv_tensor_t;

/* The paged KV pool as ops see it. Element (block b, cache layer c, kv t, head h, slot s,
 * dim d) is at base[((((b * n_cache_layers + c) * 2 + t) * n_kv_heads + h) * block_size + s)
 * * head_dim + d]. */
typedef struct {
    void *base;
    skv_dtype_t dtype;
    int32_t block_size;
    int32_t n_kv_heads;
    int32_t head_dim;
    int32_t n_cache_layers;
    int64_t n_blocks;
} skv_kv_view_t;

/* Per-step attention metadata for one set of query rows (the N-row batch, or the M logit
 * rows of the SwiftKV second half: build separate metadata for each; never share).
 * Query rows of one sequence are contiguous and in increasing position; row r of sequence s
 * attends causally to cache positions 0..row_pos[r] of s (its own K/V already written). */
typedef struct {
    int32_t n_seqs;
    int32_t n_rows;
    int32_t max_blocks;       /* columns of block_table */
    int32_t max_ctx;          /* max over rows of row_pos + 1 (bounds split work) */
    skv_tensor_t seq_rows;    /* i32 [1, n_seqs + 1]: first query row of each sequence */
    skv_tensor_t row_pos;     /* i32 [1, n_rows]: absolute position of each row */
    skv_tensor_t row_slot;    /* i32 [1, n_rows]: cache slot (block * block_size + offset) */
    skv_tensor_t block_table; /* i32 [n_seqs, max_blocks]: physical block ids */
    const int32_t *h_seq_rows; /* host mirrors of the above, for host-side scheduling */
    const int32_t *h_row_pos;
} skv_attn_meta_t;

typedef struct skv_backend skv_backend_t;

/* Marks the few helpers below callable from device code when a CUDA compiler includes this
 * header (no CUDA header is included here). */
#ifdef __CUDACC__
#define SKV_HOST_DEVICE __host__ __device__
#else
#define SKV_HOST_DEVICE
#endif

/* The deterministic "random" weight value of element idx of a tensor filled with seed:
 * offset + k * scale with k an integer in [-128, 127] from a splitmix64 hash. With scale a
 * power of two and offset 0 or 1 (|k * scale| <= 1 then), the value is exact in bf16, f16
 * and f32, so every backend that fills a tensor (on the host or on a device) holds the same
 * numbers: the CPU reference and a bf16 device run start from identical weights. */
static inline SKV_HOST_DEVICE float skv_weight_hash_value(uint64_t seed, uint64_t idx, float scale,
                                                          float offset)
{
    uint64_t z = seed + (idx + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return offset + (float)((int32_t)(z >> 56) - 128) * scale;
}

/* The ops table. Every op returns SKV_STATUS_OK or a status for a device failure; shape
 * mismatches are bugs of the caller and asserted. Shapes in comments: N rows, H hidden. */
typedef struct skv_ops {
    const char *name;
    skv_dtype_t act_dtype;    /* activations the backend computes in */
    skv_dtype_t weight_dtype; /* weights as stored on the backend */
    skv_dtype_t kv_dtype;     /* KV cache elements by default */
    /* The KV pool dtypes (bit 1u << dtype) that kv_write, swiftkv_kv_write, attention and
     * rope_kv_write accept; kv_dtype is one of them. Those ops return UNSUPPORTED (logged,
     * nothing read or written) for a skv_kv_view_t of any other dtype. Pools of a dtype
     * narrower than the activations (F8E4M3) are quantized by the write ops (round to nearest
     * even, saturating to the finite range, as skv_f32_to_f8e4m3) and widened exactly by
     * attention (skv_f8e4m3_to_f32); the math in between is the same as for kv_dtype. */
    uint32_t kv_dtypes;

    void (*destroy)(skv_backend_t *be);
    /* Allocates bytes of backend memory (zeroed); *ptr_p set on success. Startup only. */
    skv_status_t (*alloc)(skv_backend_t *be, size_t bytes, void **ptr_p);
    void (*free)(skv_backend_t *be, void *ptr);
    skv_status_t (*copy_h2d)(skv_backend_t *be, void *dst, const void *src, size_t bytes);
    skv_status_t (*copy_d2h)(skv_backend_t *be, void *dst, const void *src, size_t bytes);
    skv_status_t (*sync)(skv_backend_t *be);

    /* dst rows [row0, row0 + n_rows) <- host rows of src_dtype (converted). Startup. */
    skv_status_t (*weight_upload)(skv_backend_t *be, const skv_tensor_t *dst, int64_t row0,
                                  const void *src, skv_dtype_t src_dtype, int64_t n_rows);

    /* out[N,H] = table[tokens[n], :]; tokens i32 [1,N]. */
    skv_status_t (*embed)(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *table,
                          const skv_tensor_t *tokens);
    /* out[N,H] = x * rsqrt(mean(x^2) + eps) * w; w [1,H]. out may alias x. */
    skv_status_t (*rmsnorm)(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *x,
                            const skv_tensor_t *w, float eps);
    /* x[N,H] += delta[N,H]; then out = rmsnorm(x, w) (fused residual). out may be NULL. */
    skv_status_t (*add_rmsnorm)(skv_backend_t *be, const skv_tensor_t *x,
                                const skv_tensor_t *delta, const skv_tensor_t *out,
                                const skv_tensor_t *w, float eps);
    /* out[N,O] = x[N,I] * w[O,I]^T (PyTorch Linear layout). out dtype may be f32 for logits. */
    skv_status_t (*matmul)(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *x,
                           const skv_tensor_t *w);
    /* In place RoPE (rotate-half pairing d, d + head_dim/2) on x[N, n_heads*head_dim] at
     * positions pos i32 [1,N] with inv_freq f32 [1, head_dim/2]. */
    skv_status_t (*rope)(skv_backend_t *be, const skv_tensor_t *x, int32_t n_heads,
                         int32_t head_dim, const skv_tensor_t *pos, const skv_tensor_t *inv_freq);
    /* Scatter k,v [N, kv_heads*head_dim] of cache layer c into their slots (meta.row_slot). */
    skv_status_t (*kv_write)(skv_backend_t *be, const skv_kv_view_t *kv, int32_t cache_layer,
                             const skv_tensor_t *k, const skv_tensor_t *v,
                             const skv_attn_meta_t *meta);
    /* SwiftKV epilogue: kvs [N, n_layers * 2 * kv_heads * head_dim] holds, per later cache
     * layer g, [K_g | V_g]; RoPE the K parts at meta.row_pos and scatter K and V into cache
     * layers first_layer + g, all in one op. */
    skv_status_t (*swiftkv_kv_write)(skv_backend_t *be, const skv_kv_view_t *kv,
                                     int32_t first_layer, int32_t n_layers,
                                     const skv_tensor_t *kvs, const skv_attn_meta_t *meta,
                                     const skv_tensor_t *inv_freq);
    /* out[R, n_heads*head_dim] = softmax(q k^T * scale) v over the paged cache layer, causal,
     * GQA (head h uses kv head h / (n_heads / kv_heads)). */
    skv_status_t (*attention)(skv_backend_t *be, const skv_tensor_t *out, const skv_tensor_t *q,
                              const skv_kv_view_t *kv, int32_t cache_layer, int32_t n_heads,
                              float scale, const skv_attn_meta_t *meta);
    /* out[N,F] = silu(gate_up[:, :F]) * gate_up[:, F:]. */
    skv_status_t (*swiglu)(skv_backend_t *be, const skv_tensor_t *out,
                           const skv_tensor_t *gate_up);
    /* out[M,H] = x[idx[m], :]; idx i32 [1,M]. */
    skv_status_t (*gather_rows)(skv_backend_t *be, const skv_tensor_t *out,
                                const skv_tensor_t *x, const skv_tensor_t *idx);

    /* Optional (NULL when absent): fills weight dst (dense, ld == cols) with
     * skv_weight_hash_value(seed, row * cols + col, scale, offset), computed where the memory
     * is. Random-weight models use it to skip the host; without it they fill host chunks and
     * weight_upload them. Startup. */
    skv_status_t (*weight_fill)(skv_backend_t *be, const skv_tensor_t *dst, uint64_t seed,
                                float scale, float offset);

    /* Optional (all three NULL when absent): record a step's ops once and replay them.
     * graph_launch replays the graph stored under key: OK, or NOT_FOUND when there is none
     * (nothing logged). graph_capture_begin starts recording: ops called until
     * graph_capture_end are recorded, not run. graph_capture_end(key, keep): keep != 0
     * stores the recording under key and launches it; keep == 0 discards it (the step failed
     * while recording). The caller guarantees that one key always records the same ops with
     * the same arguments (tensor addresses, shapes, host-side metadata such as max_ctx);
     * only the contents of backend memory may differ between replays. */
    skv_status_t (*graph_launch)(skv_backend_t *be, uint64_t key);
    skv_status_t (*graph_capture_begin)(skv_backend_t *be);
    skv_status_t (*graph_capture_end)(skv_backend_t *be, uint64_t key, int keep);

    /* Optional (NULL when absent; the host sampler, common/model/sampler.h, is the reference): one
     * token per row of logits f32 [M, V], on the backend. params f32 [M, 4], per row:
     * temperature (0 = greedy: argmax, lowest id on ties), top_k (an integer value; 0 = off),
     * top_p ((0, 1]; 1 = off) and u, a uniform draw in [0, 1) made by the caller from the
     * request's RNG. Filters as the host sampler does (scaled logits -> top-k -> top-p; ids
     * tied with a boundary value are all kept), then draws the first id, in id order, at which
     * the running sum of the kept probabilities exceeds u. tokens i32 [1, M].
     * No penalties, min-p or logprobs: requests that need them use the host sampler. */
    skv_status_t (*sample)(skv_backend_t *be, const skv_tensor_t *tokens,
                           const skv_tensor_t *logits, const skv_tensor_t *params);

    /* Optional fusions (NULL when absent; the model then calls the ops they fuse). Each gives
     * exactly the results of the unfused sequence, roundings included. */
    /* out[N,F] = swiglu(x[N,I] * w[2F,I]^T): matmul into gate_up (rounded to the activation
     * dtype), then swiglu, without storing gate_up. May decline a shape it does not fuse
     * (e.g. many rows): UNSUPPORTED with nothing enqueued. */
    skv_status_t (*matmul_swiglu)(skv_backend_t *be, const skv_tensor_t *out,
                                  const skv_tensor_t *x, const skv_tensor_t *w);
    /* rope(qk, n_heads + n_kv_heads heads) then kv_write(k = the last n_kv_heads heads of qk,
     * v) into cache layer c: qk [N, (n_heads + kv_heads) * head_dim], v [N, kv_heads * head_dim]. */
    skv_status_t (*rope_kv_write)(skv_backend_t *be, const skv_tensor_t *qk, int32_t n_heads,
                                  const skv_tensor_t *v, const skv_kv_view_t *kv,
                                  int32_t cache_layer, const skv_tensor_t *pos,
                                  const skv_tensor_t *inv_freq, const skv_attn_meta_t *meta);
} skv_ops_t;

/* A backend instance: the ops table plus the backend's private state (it embeds this). */
struct skv_backend {
    const skv_ops_t *ops;
};

/* Chooses the KV cache dtype of a process on a backend: name NULL, "" or "auto" is the
 * backend's default (ops->kv_dtype); otherwise a dtype name (skv_dtype_name) or the alias
 * "fp8" (= "f8e4m3"). INVALID_ARGUMENT for a name that is no dtype, UNSUPPORTED when the
 * backend's KV ops do not accept the dtype (not in ops->kv_dtypes); both logged with the
 * names the backend accepts. *dtype_p is set only on success. Any thread. */
skv_status_t skv_kv_dtype_resolve(const skv_ops_t *ops, const char *name, skv_dtype_t *dtype_p);

/* Returns a view of rows [row0, row0+n) of t. */
skv_tensor_t skv_tensor_rows(const skv_tensor_t *t, int64_t row0, int64_t n);
/* Returns a view of columns [col0, col0+n) of t (same rows, same ld). */
skv_tensor_t skv_tensor_cols(const skv_tensor_t *t, int64_t col0, int64_t n);
/* Returns a dense tensor view over data. */
skv_tensor_t skv_tensor_make(void *data, skv_dtype_t dtype, int64_t rows, int64_t cols);

/* Converts one bf16 / f16 value to float (host helpers shared by backends and tools). */
float skv_bf16_to_f32(uint16_t v);
uint16_t skv_f32_to_bf16(float f);
float skv_f16_to_f32(uint16_t v);
uint16_t skv_f32_to_f16(float f);

/* fp8 E4M3 "fn" (SKV_DTYPE_F8E4M3) <-> float, host helpers. Decoding is exact for all 256
 * codes (0x80 is -0.0; 0x7f / 0xff decode to NaN of that sign). Encoding rounds to nearest
 * even, subnormals (multiples of 2^-9 below 2^-6) included; finite values and infinities
 * beyond +-448 saturate to +-448 (0x7e / 0xfe), as CUDA's __nv_cvt_float_to_fp8(x,
 * __NV_SATFINITE, __NV_E4M3) does; NaN gives 0x7f / 0xff by its sign. No scale is applied. */
float skv_f8e4m3_to_f32(uint8_t v);
uint8_t skv_f32_to_f8e4m3(float f);

#endif /* SKV_KERNELS_OPS_H */
