/*
 * tokenizer_map.c: the two hash maps of the tokenizer (token bytes -> id, id pair -> merge).
 *
 * Open addressing with linear probing and power-of-two tables sized at init for at most 50%
 * load, so a put never grows the table and a get always finds an empty slot. Built once at
 * load, read-only afterwards (safe to share between threads).
 */
#include <string.h>

#include "common/alloc.h"
#include "common/log.h"
#include "common/tokenizer_internal.h"

/* Returns the smallest power of two >= 2 * n (and >= 16). */
static size_t skv_tok_table_size(size_t n)
{
    size_t s = 16;
    while (s < 2 * n) {
        s <<= 1;
    }
    return s;
}

/* FNV-1a over the bytes, then a final mix so the low bits are well spread. */
static uint64_t skv_tok_hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t skv_tok_hash_u64(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
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

/* Returns the slot holding s, or the empty slot where it would go. */
static size_t skv_tok_strmap_find(const skv_tok_strmap_t *m, const char *s, size_t len)
{
    size_t i = skv_tok_hash_bytes(s, len) & m->mask;
    for (;;) {
        int32_t v = m->slots[i];
        if (v == 0) {
            return i;
        }
        int32_t id = v - 1;
        if (m->key_len[id] == len && memcmp(m->key_ptr[id], s, len) == 0) {
            return i;
        }
        i = (i + 1) & m->mask;
    }
}

void skv_tok_strmap_put(skv_tok_strmap_t *m, int32_t id)
{
    size_t i = skv_tok_strmap_find(m, m->key_ptr[id], m->key_len[id]);
    if (m->slots[i] == 0) {
        SKV_ASSERT(m->n_used < m->mask / 2 + 1); /* sized at init */
        m->n_used++;
    }
    m->slots[i] = id + 1;
}

int32_t skv_tok_strmap_get(const skv_tok_strmap_t *m, const char *s, size_t len)
{
    return m->slots[skv_tok_strmap_find(m, s, len)] - 1;
}

skv_status_t skv_tok_pairmap_init(skv_tok_pairmap_t *m, size_t n_expected)
{
    size_t n = skv_tok_table_size(n_expected);
    m->keys = skv_calloc(n, sizeof(*m->keys));
    m->rank = skv_mallocn(n, sizeof(*m->rank));
    m->merged = skv_mallocn(n, sizeof(*m->merged));
    if (m->keys == NULL || m->rank == NULL || m->merged == NULL) {
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
    skv_free(m->keys);
    skv_free(m->rank);
    skv_free(m->merged);
    m->keys = NULL;
    m->rank = NULL;
    m->merged = NULL;
}

static uint64_t skv_tok_pair_key(int32_t left, int32_t right)
{
    return (((uint64_t)(uint32_t)left << 32) | (uint32_t)right) + 1;
}

void skv_tok_pairmap_put(skv_tok_pairmap_t *m, int32_t left, int32_t right, uint32_t rank,
                         int32_t merged)
{
    uint64_t key = skv_tok_pair_key(left, right);
    size_t i = skv_tok_hash_u64(key) & m->mask;
    while (m->keys[i] != 0 && m->keys[i] != key) {
        i = (i + 1) & m->mask;
    }
    if (m->keys[i] == 0) {
        SKV_ASSERT(m->n_used < m->mask / 2 + 1);
        m->n_used++;
    }
    m->keys[i] = key;
    m->rank[i] = rank;
    m->merged[i] = merged;
}

int skv_tok_pairmap_get(const skv_tok_pairmap_t *m, int32_t left, int32_t right, uint32_t *rank_p,
                        int32_t *merged_p)
{
    uint64_t key = skv_tok_pair_key(left, right);
    size_t i = skv_tok_hash_u64(key) & m->mask;
    for (;;) {
        uint64_t k = m->keys[i];
        if (k == key) {
            *rank_p = m->rank[i];
            *merged_p = m->merged[i];
            return 1;
        }
        if (k == 0) {
            return 0;
        }
        i = (i + 1) & m->mask;
    }
}
