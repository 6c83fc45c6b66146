/*
 * cuda_attn.h: what the attention kernels of kernels/cuda share: the argument block that
 * describes one cache layer of the paged pool plus a step's metadata, the pool addressing
 * helper, and the launchers of the tensor-core kernels (cuda_attn_mma.cu). Included only by
 * the .cu files of kernels/cuda, after cuda_internal.h.
 *
 * Pool layout (kernels/ops.h): pool[block][cache_layer][kv][kv_head][slot][head_dim], so the
 * head_dim vector of one (position, kv head) is contiguous and its V vector lies
 * n_kv_heads * block_size * head_dim elements after its K vector.
 */
#ifndef SKV_KERNELS_CUDA_ATTN_H
#define SKV_KERNELS_CUDA_ATTN_H

#include <stdint.h>

#include "kernels/cuda/cuda_internal.h"

typedef struct {
    const void *base; /* pool elements: bf16 or fp8 (the kernel's KT, cuda_kv.h) */
    int32_t block_size, n_kv_heads, head_dim, n_cache_layers, layer;
    const int32_t *seq_rows, *row_pos, *block_table;
    int32_t max_blocks, n_seqs;
} skv_attn_args_t;

/* Element offset in the pool of the K vector of position p of the sequence whose block table
 * row is bt, kv head kh. The V vector is n_kv_heads * block_size * head_dim further. */
static __device__ __forceinline__ int64_t skv_attn_koff(const skv_attn_args_t &a, const int32_t *bt,
                                                        int32_t p, int32_t kh)
{
    int64_t blk = bt[p / a.block_size];
    int64_t idx = ((blk * a.n_cache_layers + a.layer) * 2) * a.n_kv_heads + kh;
    return (idx * a.block_size + p % a.block_size) * a.head_dim;
}

/* Whether the mma prefill kernel takes this call: head_dim 64 or 128, and q / out laid out for
 * 16-byte Q loads and 4-byte output stores. Host only. */
int skv_attn_prefill_mma_ok(int32_t head_dim, const skv_tensor_t *q, const skv_tensor_t *out);

/* Causal prefill attention on the tensor cores (mma.sync m16n8k16 bf16, fp32 accumulate) for
 * every query row of a: out[r, h*hd:(h+1)*hd] = softmax(q_r,h . K^T * scale) V over positions
 * 0..row_pos[r] of r's sequence, kv head h / (n_heads / n_kv_heads). max_q: the most query
 * rows of one sequence (grid size). fp8: the pool holds E4M3 elements (else bf16), widened
 * to bf16 in shared memory. Only when skv_attn_prefill_mma_ok. Enqueues on stream;
 * DEVICE on a launch failure. */
skv_status_t skv_attn_prefill_mma(cudaStream_t stream, const skv_attn_args_t *a, bool fp8,
                                  const skv_tensor_t *out, const skv_tensor_t *q, int32_t n_heads,
                                  float scale, int32_t max_q);

/* Sets the kernels' shared-memory limits; once at backend creation. */
skv_status_t skv_attn_mma_init(void);

#endif /* SKV_KERNELS_CUDA_ATTN_H */
