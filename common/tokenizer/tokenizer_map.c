/*
 * tokenizer_map.c: the two hash maps of the tokenizer (token bytes -> id, id pair -> merge).
 *
 * Open addressing with linear probing and power-of-two tables sized at init for at most 75%
 * load (a 128k vocabulary and 280k merges fit in 4 MB + 8 MB; smaller tables load faster), so
 * a put never grows the table and a get always finds an empty slot. Built once at load,
 * read-only afterwards (safe to share between threads).
 */
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "common/tokenizer/tokenizer_internal.h"

/* Returns the smallest power of two >= 4/3 * n (and >= 16). */
static size_t skv_tok_table_size(size_t n)
{
    size_t s = 16;
    while (3 * s < 4 * n) {
        s <<= 1;
    }
    return s;
}

/* MurmurHash3's 64-bit finalizer: spreads every input bit over the low (index) bits. */
static uint64_t skv_tok_hash_u64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ull;
    k ^= k >> 33;
    return k;
}

/* FNV-1a over the bytes, then the finalizer (FNV alone clusters badly under linear probing). */
static uint64_t skv_tok_hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    }
    return skv_tok_hash_u64(h);
}

skv_status_t skv_tok_strmap_init(skv_tok_strmap_t *m, size_t n_expected, const char *const *key_ptr,
                                 const uint32_t *key_len)
{
    size_t n = skv_tok_table_size(n_expected);
    m->slots = skv_calloc(n, sizeof(*m->slots));
    if (m->slots == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for a %zu-slot map", n);
        return SKV_STATUS_NO_MEMORY;
    }
    m->mask = n - 1;
    m->n_used = 0;
    m->key_ptr = key_ptr;
    m->key_len = key_len;
    return SKV_STATUS_OK;
}

void skv_tok_strmap_cleanup(skv_tok_strmap_t *m)
{
    skv_free(m->slots);
    m->slots = NULL;
}

/* Returns the slot holding s (whose hash is h), or the empty slot where it would go. */
static size_t skv_tok_strmap_find_h(const skv_tok_strmap_t *m, const char *s, size_t len,
                                    uint64_t h)
{
    uint32_t tag = (uint32_t)(h >> 32);
    size_t i = h & m->mask;
    for (;;) {
        const skv_tok_strslot_t *slot = &m->slots[i];
        if (slot->id1 == 0) {
            return i;
        }
        int32_t id = slot->id1 - 1;
        if (slot->hash == tag && m->key_len[id] == len && memcmp(m->key_ptr[id], s, len) == 0) {
            return i;
        }
        i = (i + 1) & m->mask;
    }
}

/* Inserts id, whose key hashes to h. */
static void skv_tok_strmap_put_h(skv_tok_strmap_t *m, int32_t id, uint64_t h)
{
    size_t i = skv_tok_strmap_find_h(m, m->key_ptr[id], m->key_len[id], h);
    if (m->slots[i].id1 == 0) {
        SKV_ASSERT(m->n_used < m->mask); /* sized at init; one slot always stays empty */
        m->n_used++;
    }
    m->slots[i] = (skv_tok_strslot_t){id + 1, (uint32_t)(h >> 32)};
}

void skv_tok_strmap_put_batch(skv_tok_strmap_t *m, size_t n, const int32_t *ids)
{
    uint64_t h[SKV_TOK_BATCH_MAX];
    SKV_ASSERT(n <= SKV_TOK_BATCH_MAX);
    for (size_t i = 0; i < n; i++) {
        h[i] = skv_tok_hash_bytes(m->key_ptr[ids[i]], m->key_len[ids[i]]);
        __builtin_prefetch(&m->slots[h[i] & m->mask], 1);
    }
    for (size_t i = 0; i < n; i++) {
        skv_tok_strmap_put_h(m, ids[i], h[i]);
    }
}

int32_t skv_tok_strmap_get(const skv_tok_strmap_t *m, const char *s, size_t len)
{
    return m->slots[skv_tok_strmap_find_h(m, s, len, skv_tok_hash_bytes(s, len))].id1 - 1;
}

void skv_tok_strmap_get_batch(const skv_tok_strmap_t *m, size_t n, const char *const *keys,
                              const size_t *lens, int32_t *ids)
{
    uint64_t h[SKV_TOK_BATCH_MAX];
    int32_t cand[SKV_TOK_BATCH_MAX];
    SKV_ASSERT(n <= SKV_TOK_BATCH_MAX);
    /* 1: hash all keys and start loading their home slots. */
    for (size_t i = 0; i < n; i++) {
        h[i] = skv_tok_hash_bytes(keys[i], lens[i]);
        __builtin_prefetch(&m->slots[h[i] & m->mask]);
    }
    /* 2: first slot with a matching tag (or empty); start loading its key's length/pointer. */
    for (size_t i = 0; i < n; i++) {
        size_t j = h[i] & m->mask;
        while (m->slots[j].id1 != 0 && m->slots[j].hash != (uint32_t)(h[i] >> 32)) {
            j = (j + 1) & m->mask;
        }
        cand[i] = m->slots[j].id1 - 1;
        if (cand[i] >= 0) {
            __builtin_prefetch(&m->key_len[cand[i]]);
            __builtin_prefetch(&m->key_ptr[cand[i]]);
        }
    }
    /* 3: start loading the candidate keys' bytes. */
    for (size_t i = 0; i < n; i++) {
        if (cand[i] >= 0) {
            __builtin_prefetch(m->key_ptr[cand[i]]);
        }
    }
    /* 4: verify; a tag collision (rare) falls back to the plain lookup. */
    for (size_t i = 0; i < n; i++) {
        int32_t c = cand[i];
        int hit =
            c >= 0 && m->key_len[c] == lens[i] && memcmp(m->key_ptr[c], keys[i], lens[i]) == 0;
        ids[i] = hit ? c : c < 0 ? -1 : skv_tok_strmap_get(m, keys[i], lens[i]);
    }
}

skv_status_t skv_tok_pairmap_init(skv_tok_pairmap_t *m, size_t n_expected)
{
    size_t n = skv_tok_table_size(n_expected);
    m->slots = skv_calloc(n, sizeof(*m->slots));
    if (m->slots == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for a %zu-slot merge map", n);
        skv_tok_pairmap_cleanup(m);
        return SKV_STATUS_NO_MEMORY;
    }
    m->mask = n - 1;
    m->n_used = 0;
    return SKV_STATUS_OK;
}

void skv_tok_pairmap_cleanup(skv_tok_pairmap_t *m)
{
    skv_free(m->slots);
    m->slots = NULL;
}

static uint64_t skv_tok_pair_key(int32_t left, int32_t right)
{
    return (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
}

void skv_tok_pairmap_prefetch(const skv_tok_pairmap_t *m, int32_t left, int32_t right)
{
    __builtin_prefetch(&m->slots[skv_tok_hash_u64(skv_tok_pair_key(left, right)) & m->mask]);
}

void skv_tok_pairmap_put(skv_tok_pairmap_t *m, int32_t left, int32_t right, uint32_t rank,
                         int32_t merged)
{
    uint64_t key = skv_tok_pair_key(left, right);
    size_t i = skv_tok_hash_u64(key) & m->mask;
    while (m->slots[i].key != 0 && m->slots[i].key != key) {
        i = (i + 1) & m->mask;
    }
    if (m->slots[i].key == 0) {
        SKV_ASSERT(m->n_used < m->mask);
        m->n_used++;
    }
    m->slots[i] = (skv_tok_pairslot_t){key, rank, merged};
}

int skv_tok_pairmap_get(const skv_tok_pairmap_t *m, int32_t left, int32_t right, uint32_t *rank_p,
                        int32_t *merged_p)
{
    uint64_t key = skv_tok_pair_key(left, right);
    size_t i = skv_tok_hash_u64(key) & m->mask;
    for (;;) {
        const skv_tok_pairslot_t *slot = &m->slots[i];
        if (slot->key == key) {
            *rank_p = slot->rank;
            *merged_p = slot->merged;
            return 1;
        }
        uint64_t k = slot->key;
        if (k == 0) {
            return 0;
        }
        i = (i + 1) & m->mask;
    }
}
