/*
 * kv_pool.c: block allocator (a LIFO free stack plus an allocated bitmap that catches double
 * releases) and per-sequence block tables.
 */
#include "common/request_limits.h"
#include "common/model/kv_pool.h"

#include <string.h>

#include "base/alloc.h"
#include "base/log.h"

/* One rank's memory of a TP pool (rank 0's is the pool's own). */
typedef struct {
    skv_kv_layout_t layout;
    skv_backend_t *be;
    void *base;
} skv_kv_rank_t;

struct skv_kv_pool {
    skv_kv_layout_t layout;
    skv_backend_t *be;
    void *base;
    skv_kv_rank_t *ranks; /* [tp_size] when tp_size > 1 (entry 0 mirrors the pool), else NULL */
    size_t bytes;
    int64_t n_blocks;
    pthread_mutex_t lock;
    int32_t *free_stack; /* [n_blocks]: ids of free blocks, top at n_free - 1 */
    int64_t n_free;
    uint8_t *allocated;  /* [n_blocks]: 1 while a block is handed out */
};

size_t skv_kv_layout_block_bytes(const skv_kv_layout_t *l)
{
    return (size_t)l->n_cache_layers * 2 * l->n_kv_heads * l->block_size * l->head_dim *
           skv_dtype_size(l->dtype);
}

static uint64_t skv_fnv1a(uint64_t h, int64_t v)
{
    for (int i = 0; i < 8; i++) {
        h ^= (uint64_t)(v >> (8 * i)) & 0xffu;
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint64_t skv_kv_layout_fingerprint(const skv_kv_layout_t *l)
{
    const int64_t fields[] = {1 /* layout version */, l->dtype, l->block_size, l->n_kv_heads,
                              l->head_dim, l->n_layers, l->n_kv_layers, l->kv_group,
                              l->n_cache_layers, l->tp_rank, l->tp_size};
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        h = skv_fnv1a(h, fields[i]);
    }
    return h;
}

/* KV heads of the whole model a (rank) layout belongs to. */
static int64_t skv_kv_layout_total_heads(const skv_kv_layout_t *l)
{
    return (int64_t)l->n_kv_heads * (l->tp_size > 1 ? l->tp_size : 1);
}

uint64_t skv_kv_layout_model_fingerprint(const skv_kv_layout_t *l)
{
    skv_kv_layout_t whole = *l;
    whole.n_kv_heads = (int32_t)skv_kv_layout_total_heads(l);
    whole.tp_rank = 0;
    whole.tp_size = 1;
    return skv_kv_layout_fingerprint(&whole);
}

skv_status_t skv_kv_layout_split(const skv_kv_layout_t *l, int32_t tp_size, int32_t kv_heads,
                                 int32_t rank, skv_kv_layout_t *out)
{
    int64_t total = skv_kv_layout_total_heads(l);
    int64_t heads = kv_heads == 0 && tp_size == 1 ? total : kv_heads;
    if (tp_size < 1 || heads < 1 || heads * tp_size != total || rank < 0 || rank >= tp_size) {
        return SKV_STATUS_MISMATCH;
    }
    *out = *l;
    out->n_kv_heads = (int32_t)heads;
    out->tp_rank = rank;
    out->tp_size = tp_size;
    return SKV_STATUS_OK;
}

int32_t skv_kv_layout_cache_layer(const skv_kv_layout_t *l, int32_t layer)
{
    if (layer < l->n_kv_layers) {
        return layer;
    }
    return l->n_kv_layers + (layer - l->n_kv_layers) / l->kv_group;
}

skv_status_t skv_kv_pool_create(const skv_kv_layout_t *layout, int64_t n_blocks,
                                skv_backend_t *be, skv_kv_pool_t **pool_p)
{
    SKV_ASSERT(n_blocks > 0 && n_blocks < INT32_MAX);
    skv_kv_pool_t *pool = skv_calloc(1, sizeof(*pool));
    if (pool == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    pool->layout = *layout;
    pool->be = be;
    pool->n_blocks = n_blocks;
    pool->bytes = skv_kv_layout_block_bytes(layout) * (size_t)n_blocks;
    pool->free_stack = skv_mallocn((size_t)n_blocks, sizeof(int32_t));
    pool->allocated = skv_calloc((size_t)n_blocks, 1);
    int32_t n_ranks = layout->tp_size > 1 ? layout->tp_size : 0;
    pool->ranks = n_ranks ? skv_calloc((size_t)n_ranks, sizeof(*pool->ranks)) : NULL;
    if (pool->free_stack == NULL || pool->allocated == NULL || (n_ranks && !pool->ranks) ||
        be->ops->alloc(be, pool->bytes, &pool->base) != SKV_STATUS_OK) {
        SKV_LOG_ERROR("cannot allocate a KV pool of %lld blocks (%zu bytes)", (long long)n_blocks,
                      pool->bytes);
        skv_free(pool->free_stack);
        skv_free(pool->allocated);
        skv_free(pool->ranks);
        skv_free(pool);
        return SKV_STATUS_NO_MEMORY;
    }
    if (pool->ranks != NULL) {
        pool->ranks[0] = (skv_kv_rank_t){*layout, be, pool->base};
    }
    /* Stack top = lowest id, so a fresh pool hands out 0, 1, 2...: contiguous runs. */
    for (int64_t i = 0; i < n_blocks; i++) {
        pool->free_stack[i] = (int32_t)(n_blocks - 1 - i);
    }
    pool->n_free = n_blocks;
    pthread_mutex_init(&pool->lock, NULL);
    *pool_p = pool;
    return SKV_STATUS_OK;
}

void skv_kv_pool_destroy(skv_kv_pool_t *pool)
{
    if (pool == NULL) {
        return;
    }
    if (pool->n_free != pool->n_blocks) {
        SKV_LOG_WARN("KV pool destroyed with %lld blocks still allocated",
                     (long long)(pool->n_blocks - pool->n_free));
    }
    for (int32_t r = 1; pool->ranks != NULL && r < pool->layout.tp_size; r++) {
        if (pool->ranks[r].base != NULL) {
            pool->ranks[r].be->ops->free(pool->ranks[r].be, pool->ranks[r].base);
        }
    }
    skv_free(pool->ranks);
    pool->be->ops->free(pool->be, pool->base);
    pthread_mutex_destroy(&pool->lock);
    skv_free(pool->free_stack);
    skv_free(pool->allocated);
    skv_free(pool);
}

skv_status_t skv_kv_pool_alloc(skv_kv_pool_t *pool, int32_t n, int32_t *ids)
{
    pthread_mutex_lock(&pool->lock);
    if (n > pool->n_free) {
        pthread_mutex_unlock(&pool->lock);
        return SKV_STATUS_BUSY;
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t id = pool->free_stack[--pool->n_free];
        SKV_ASSERT(!pool->allocated[id]);
        pool->allocated[id] = 1;
        ids[i] = id;
    }
    pthread_mutex_unlock(&pool->lock);
    return SKV_STATUS_OK;
}

void skv_kv_pool_release(skv_kv_pool_t *pool, int32_t n, const int32_t *ids)
{
    pthread_mutex_lock(&pool->lock);
    for (int32_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        SKV_ASSERT(id >= 0 && id < pool->n_blocks && pool->allocated[id]);
        pool->allocated[id] = 0;
        pool->free_stack[pool->n_free++] = id;
    }
    pthread_mutex_unlock(&pool->lock);
}

int64_t skv_kv_pool_n_free(skv_kv_pool_t *pool)
{
    pthread_mutex_lock(&pool->lock);
    int64_t n = pool->n_free;
    pthread_mutex_unlock(&pool->lock);
    return n;
}

int64_t skv_kv_pool_n_blocks(const skv_kv_pool_t *pool)
{
    return pool->n_blocks;
}

skv_kv_view_t skv_kv_pool_view(const skv_kv_pool_t *pool)
{
    const skv_kv_layout_t *l = &pool->layout;
    skv_kv_view_t v = {pool->base,  l->dtype,          l->block_size, l->n_kv_heads,
                       l->head_dim, l->n_cache_layers, pool->n_blocks};
    return v;
}

const skv_kv_layout_t *skv_kv_pool_layout(const skv_kv_pool_t *pool)
{
    return &pool->layout;
}

void *skv_kv_pool_base(const skv_kv_pool_t *pool)
{
    return pool->base;
}

size_t skv_kv_pool_bytes(const skv_kv_pool_t *pool)
{
    return pool->bytes;
}

skv_status_t skv_kv_seq_reserve(skv_kv_pool_t *pool, skv_kv_seq_t *seq, int64_t n_tokens)
{
    int64_t need64 = skv_kv_blocks_for(n_tokens, pool->layout.block_size);
    if (need64 > pool->n_blocks) {
        return SKV_STATUS_BUSY;
    }
    int32_t need = (int32_t)need64;
    if (need <= seq->n_blocks) {
        return SKV_STATUS_OK;
    }
    if (need > seq->cap) {
        int32_t cap = seq->cap ? seq->cap : 8;
        while (cap < need) {
            cap *= 2;
        }
        int32_t *nb = skv_realloc(seq->blocks, (size_t)cap * sizeof(int32_t));
        if (nb == NULL) {
            return SKV_STATUS_NO_MEMORY;
        }
        seq->blocks = nb;
        seq->cap = cap;
    }
    SKV_CHECK(skv_kv_pool_alloc(pool, need - seq->n_blocks, seq->blocks + seq->n_blocks));
    seq->n_blocks = need;
    return SKV_STATUS_OK;
}

void skv_kv_seq_release(skv_kv_pool_t *pool, skv_kv_seq_t *seq)
{
    if (seq->n_blocks > 0) {
        skv_kv_pool_release(pool, seq->n_blocks, seq->blocks);
    }
    skv_free(seq->blocks);
    memset(seq, 0, sizeof(*seq));
}

/* 1 when a and b describe slices of one model's KV (everything but the head split agrees). */
static int skv_kv_layout_same_model(const skv_kv_layout_t *a, const skv_kv_layout_t *b)
{
    int32_t ta = a->tp_size > 1 ? a->tp_size : 1, tb = b->tp_size > 1 ? b->tp_size : 1;
    return a->dtype == b->dtype && a->block_size == b->block_size && a->head_dim == b->head_dim &&
           a->n_layers == b->n_layers && a->n_kv_layers == b->n_kv_layers &&
           a->kv_group == b->kv_group && a->n_cache_layers == b->n_cache_layers &&
           (int64_t)a->n_kv_heads * ta == (int64_t)b->n_kv_heads * tb;
}

skv_status_t skv_kv_pool_attach_rank(skv_kv_pool_t *pool, const skv_kv_layout_t *layout,
                                     skv_backend_t *be)
{
    const skv_kv_layout_t *l0 = &pool->layout;
    int32_t r = layout->tp_rank;
    if (pool->ranks == NULL || layout->tp_size != l0->tp_size || r < 1 || r >= l0->tp_size ||
        layout->n_kv_heads != l0->n_kv_heads || !skv_kv_layout_same_model(layout, l0) ||
        pool->ranks[r].base != NULL) {
        SKV_LOG_ERROR("cannot attach TP rank %d of %d (%d KV heads) to a pool of rank 0 of %d "
                      "(%d KV heads), or it is attached already",
                      r, layout->tp_size, layout->n_kv_heads, l0->tp_size, l0->n_kv_heads);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    void *base = NULL;
    if (be->ops->alloc(be, pool->bytes, &base) != SKV_STATUS_OK) {
        SKV_LOG_ERROR("cannot allocate TP rank %d's KV pool (%zu bytes)", r, pool->bytes);
        return SKV_STATUS_NO_MEMORY;
    }
    pool->ranks[r] = (skv_kv_rank_t){*layout, be, base};
    return SKV_STATUS_OK;
}

int32_t skv_kv_pool_n_ranks(const skv_kv_pool_t *pool)
{
    return pool->ranks != NULL ? pool->layout.tp_size : 1;
}

const skv_kv_layout_t *skv_kv_pool_rank_layout(const skv_kv_pool_t *pool, int32_t rank)
{
    SKV_ASSERT(rank >= 0 && rank < skv_kv_pool_n_ranks(pool));
    return pool->ranks != NULL ? &pool->ranks[rank].layout : &pool->layout;
}

void *skv_kv_pool_rank_base(const skv_kv_pool_t *pool, int32_t rank)
{
    SKV_ASSERT(rank >= 0 && rank < skv_kv_pool_n_ranks(pool));
    return pool->ranks != NULL ? pool->ranks[rank].base : pool->base;
}

skv_kv_view_t skv_kv_pool_rank_view(const skv_kv_pool_t *pool, int32_t rank)
{
    skv_kv_view_t v = skv_kv_pool_view(pool);
    v.base = skv_kv_pool_rank_base(pool, rank);
    return v;
}

skv_status_t skv_kv_layout_tp_ranges(const skv_kv_layout_t *src, const skv_kv_layout_t *dst,
                                     skv_kv_range_t *ranges, int32_t cap, int32_t *n_p)
{
    if (!skv_kv_layout_same_model(src, dst) || cap < 0) {
        SKV_LOG_ERROR("KV layouts of different models: %d x %d KV heads of %d, block %d, %d "
                      "cache layers vs %d x %d of %d, block %d, %d",
                      src->tp_size, src->n_kv_heads, src->head_dim, src->block_size,
                      src->n_cache_layers, dst->tp_size, dst->n_kv_heads, dst->head_dim,
                      dst->block_size, dst->n_cache_layers);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    /* Global KV heads [lo, hi) held by both sides; per (cache layer, K|V) they are one run. */
    int64_t s0 = (int64_t)src->tp_rank * src->n_kv_heads,
            d0 = (int64_t)dst->tp_rank * dst->n_kv_heads;
    int64_t lo = s0 > d0 ? s0 : d0;
    int64_t hi =
        s0 + src->n_kv_heads < d0 + dst->n_kv_heads ? s0 + src->n_kv_heads : d0 + dst->n_kv_heads;
    uint64_t head =
        (uint64_t)src->block_size * (uint64_t)src->head_dim * skv_dtype_size(src->dtype);
    int32_t n = 0;
    for (int64_t run = 0; lo < hi && run < 2LL * src->n_cache_layers; run++) {
        skv_kv_range_t r = {(uint64_t)(run * src->n_kv_heads + lo - s0) * head,
                            (uint64_t)(run * dst->n_kv_heads + lo - d0) * head,
                            (uint64_t)(hi - lo) * head};
        skv_kv_range_t *prev = n > 0 ? &ranges[n - 1] : NULL;
        if (prev && prev->src_offset + prev->bytes == r.src_offset &&
            prev->dst_offset + prev->bytes == r.dst_offset) {
            prev->bytes += r.bytes; /* contiguous on both sides: one range */
            continue;
        }
        if (n == cap) {
            SKV_LOG_ERROR("KV transfer needs more than %d ranges per block", cap);
            return SKV_STATUS_INVALID_ARGUMENT;
        }
        ranges[n++] = r;
    }
    *n_p = n;
    return SKV_STATUS_OK;
}
