/*
 * kv_pool.h: the paged KV cache of one worker: one contiguous pool of fixed-size blocks.
 *
 * The pool memory comes from the compute backend (device memory on CUDA) in ONE allocation,
 * so a single UCX registration covers it. Blocks are handed out by id; a sequence owns a
 * block table (skv_kv_seq_t) that grows on demand. Layout of a block: every cache layer's K
 * and V for block_size tokens (see kernels/ops.h); SwiftKV with AcrossKV G > 1 has
 * Lk + (L - Lk) / G cache layers, so the later layers' share shrinks by G.
 *
 * The layout fingerprint (dtype, block size, heads, head_dim, layer mapping, TP split) names
 * one rank's layout; the model fingerprint (the same without the split) is exchanged at
 * reservation time, with the split stated beside it: peers whose model fingerprints differ
 * must refuse to transfer.
 *
 * Tensor parallelism: a pool whose layout has tp_size > 1 is rank 0's memory plus one
 * attached allocation per other rank (skv_kv_pool_attach_rank), each on that rank's backend
 * with that rank's KV heads; block ids (one allocator) are shared, so block b of every rank
 * holds the same tokens; a worker registers each rank's memory with UCX. The functions
 * without "rank" in their name speak of rank 0.
 *
 * Thread-safety: alloc/release/counters are mutex-protected (leases may expire on a transport
 * thread); a skv_kv_seq_t belongs to one thread.
 */
#ifndef SKV_COMMON_KV_POOL_H
#define SKV_COMMON_KV_POOL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "kernels/ops.h"

typedef struct {
    skv_dtype_t dtype;      /* elements: one of the backend's kv_dtypes (f8e4m3: 1 byte) */
    int32_t block_size;     /* tokens per block */
    int32_t n_kv_heads;     /* KV heads held by this pool (per TP rank) */
    int32_t head_dim;
    int32_t n_layers;       /* L */
    int32_t n_kv_layers;    /* Lk (== L for plain Llama or SwiftKV run as base) */
    int32_t kv_group;       /* G */
    int32_t n_cache_layers; /* Lk + (L - Lk) / G */
    int32_t tp_rank;        /* which head slice this pool holds */
    int32_t tp_size;
} skv_kv_layout_t;

/* Returns the bytes of one block under layout. */
size_t skv_kv_layout_block_bytes(const skv_kv_layout_t *layout);

/* Returns a 64-bit fingerprint of every field of layout (FNV-1a over a canonical encoding). */
uint64_t skv_kv_layout_fingerprint(const skv_kv_layout_t *layout);

/* Returns the fingerprint of the whole model's KV layout, whatever its head split: the
 * fingerprint of the unsplit layout (every KV head, tp_rank 0, tp_size 1). Equal for every rank
 * of every split of one model, and to skv_kv_layout_fingerprint of an unsplit layout, so
 * workers with different TP sizes compare this one (and exchange the split itself). */
uint64_t skv_kv_layout_model_fingerprint(const skv_kv_layout_t *layout);

/* Fills *out with the layout of rank `rank` when layout's model (any rank of any split) is
 * split over tp_size ranks of kv_heads KV heads each; kv_heads 0 means every head (tp_size
 * must then be 1). Returns MISMATCH when that split does not cover the model's KV heads
 * exactly (tp_size * kv_heads differs from the total, tp_size < 1) or rank is outside
 * [0, tp_size); not logged: the caller reports it with its context. Any thread. */
skv_status_t skv_kv_layout_split(const skv_kv_layout_t *layout, int32_t tp_size, int32_t kv_heads,
                                 int32_t rank, skv_kv_layout_t *out);

/* Returns the cache layer of model layer `layer` (AcrossKV groups share one). */
int32_t skv_kv_layout_cache_layer(const skv_kv_layout_t *layout, int32_t layer);

typedef struct skv_kv_pool skv_kv_pool_t;

/* Creates a pool of n_blocks blocks in backend memory (zeroed). Startup only.
 * Borrows be, which must outlive the pool. NO_MEMORY when the backend cannot allocate. */
skv_status_t skv_kv_pool_create(const skv_kv_layout_t *layout, int64_t n_blocks,
                                skv_backend_t *be, skv_kv_pool_t **pool_p);

/* Frees the pool memory. Every block should be released first (leaks are logged). */
void skv_kv_pool_destroy(skv_kv_pool_t *pool);

/* Takes n free blocks into ids (all or nothing). BUSY when fewer than n are free:
 * backpressure, not an error, so nothing is logged. Any thread. */
skv_status_t skv_kv_pool_alloc(skv_kv_pool_t *pool, int32_t n, int32_t *ids);

/* Returns blocks to the pool. Releasing a block that is not allocated is a bug (asserted).
 * Any thread. */
void skv_kv_pool_release(skv_kv_pool_t *pool, int32_t n, const int32_t *ids);

/* Counters. Any thread. */
int64_t skv_kv_pool_n_free(skv_kv_pool_t *pool);
int64_t skv_kv_pool_n_blocks(const skv_kv_pool_t *pool);

/* The pool as ops see it, its layout, and its memory (for UCX registration). */
skv_kv_view_t skv_kv_pool_view(const skv_kv_pool_t *pool);
const skv_kv_layout_t *skv_kv_pool_layout(const skv_kv_pool_t *pool);
void *skv_kv_pool_base(const skv_kv_pool_t *pool);
size_t skv_kv_pool_bytes(const skv_kv_pool_t *pool);

/* Tensor parallelism: allocates rank layout->tp_rank's memory (n_blocks blocks of its layout)
 * on be (borrowed, outlives the pool), from the thread that drives be. The layout must match
 * rank 0's except for tp_rank (INVALID_ARGUMENT, logged); NO_MEMORY. Each rank attaches once;
 * different ranks may attach concurrently. Startup only. */
skv_status_t skv_kv_pool_attach_rank(skv_kv_pool_t *pool, const skv_kv_layout_t *layout,
                                     skv_backend_t *be);

/* The number of ranks (layout tp_size) and rank r's view, layout and memory. The view of a
 * rank not yet attached has base NULL. */
int32_t skv_kv_pool_n_ranks(const skv_kv_pool_t *pool);
skv_kv_view_t skv_kv_pool_rank_view(const skv_kv_pool_t *pool, int32_t rank);
const skv_kv_layout_t *skv_kv_pool_rank_layout(const skv_kv_pool_t *pool, int32_t rank);
void *skv_kv_pool_rank_base(const skv_kv_pool_t *pool, int32_t rank);

/* One contiguous byte range of a block to move between two layouts of one model that split
 * the KV heads differently: bytes at src_offset of a src block go to dst_offset of the dst
 * block (offsets relative to each block's start). */
typedef struct {
    uint64_t src_offset;
    uint64_t dst_offset;
    uint64_t bytes;
} skv_kv_range_t;

/* The ranges of one block that rank src->tp_rank (of src->tp_size) holds and rank
 * dst->tp_rank (of dst->tp_size) needs: for every cache layer and K/V, the run of KV heads
 * both rank slices contain (ranges adjacent on both sides are merged, so equal layouts give
 * one range, the whole block). *n_p = 0 when the slices do not overlap. A prefill worker's
 * rank pushes each range with skv_kvx_push_host(offset = dst_offset, bytes, sources at
 * src_offset) to every decode rank whose slice overlaps its own. INVALID_ARGUMENT (logged)
 * when the layouts are not of one model (dtype, block size, head_dim, layers, total KV heads)
 * or cap (2 * n_cache_layers always suffices) is too small. Any thread. */
skv_status_t skv_kv_layout_tp_ranges(const skv_kv_layout_t *src, const skv_kv_layout_t *dst,
                                     skv_kv_range_t *ranges, int32_t cap, int32_t *n_p);

/* A sequence's block table. Init to zero ({0}) before first use. */
typedef struct {
    int32_t *blocks;
    int32_t n_blocks;
    int32_t cap;
} skv_kv_seq_t;

/* Grows seq so it covers n_tokens positions. BUSY when the pool is short (seq unchanged);
 * NO_MEMORY when the table cannot grow. */
skv_status_t skv_kv_seq_reserve(skv_kv_pool_t *pool, skv_kv_seq_t *seq, int64_t n_tokens);

/* Releases every block of seq and frees its table; seq is reset to empty. */
void skv_kv_seq_release(skv_kv_pool_t *pool, skv_kv_seq_t *seq);

#endif /* SKV_COMMON_KV_POOL_H */
