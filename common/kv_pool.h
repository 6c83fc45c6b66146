/*
 * kv_pool.h: the paged KV cache of one worker: one contiguous pool of fixed-size blocks.
 *
 * The pool memory comes from the compute backend (device memory on CUDA) in ONE allocation,
 * so a single UCX registration covers it. Blocks are handed out by id; a sequence owns a
 * block table (skv_kv_seq_t) that grows on demand. Layout of a block: every cache layer's K
 * and V for block_size tokens (see kernels/ops.h); SwiftKV with AcrossKV G > 1 has
 * Lk + (L - Lk) / G cache layers, so the later layers' share shrinks by G.
 *
 * The layout fingerprint (dtype, block size, heads, head_dim, layer mapping, TP split) is
 * exchanged at reservation time: peers with different fingerprints must refuse to transfer.
 *
 * Thread-safety: alloc/release/counters are mutex-protected (leases may expire on a transport
 * thread); a skv_kv_seq_t belongs to one thread.
 */
#ifndef SKV_COMMON_KV_POOL_H
#define SKV_COMMON_KV_POOL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "kernels/ops.h"

typedef struct {
    skv_dtype_t dtype;
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
