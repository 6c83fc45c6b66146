/*
 * tokenizer_bpe.c: byte-pair merging of one pre-token, as HF tokenizers' BPE::merge_word does.
 *
 * Rule (identical to HF): repeatedly merge the adjacent pair with the lowest merge rank, the
 * leftmost one on ties, until no adjacent pair has a merge. Short words use a flat array scan
 * (fast for the typical 2-10 bytes); long words (long white-space runs, base64 blobs) use a
 * binary heap keyed by (rank, position) over a linked list, so they stay O(n log n).
 * Owns no state: the scratch space belongs to the caller's encode call.
 */
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "common/tokenizer/tokenizer_internal.h"

#define SKV_TOK_NO_RANK UINT32_MAX
/* Words up to this many symbols use the O(n^2) array scan; beyond it the heap. */
#define SKV_TOK_SCAN_MAX 128

skv_status_t skv_tok_ids_push(skv_tok_ids_t *v, int32_t id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *ids = skv_realloc(v->ids, cap * sizeof(*ids));
        if (ids == NULL) {
            SKV_LOG_ERROR("tokenizer: no memory for %zu ids", cap);
            return SKV_STATUS_NO_MEMORY;
        }
        v->ids = ids;
        v->cap = cap;
    }
    v->ids[v->n++] = id;
    return SKV_STATUS_OK;
}

void skv_tok_bpe_ws_cleanup(skv_tok_bpe_ws_t *ws)
{
    skv_free(ws->sym);
    skv_free(ws->next);
    skv_free(ws->prev);
    skv_free(ws->rank);
    skv_free(ws->heap);
    memset(ws, 0, sizeof(*ws));
}

/* Makes room for n symbols in the scratch space. */
static skv_status_t skv_tok_bpe_ws_reserve(skv_tok_bpe_ws_t *ws, size_t n)
{
    if (n <= ws->cap) {
        return SKV_STATUS_OK;
    }
    size_t cap = n < 256 ? 256 : n;
    skv_tok_bpe_ws_t fresh = {0};
    fresh.sym = skv_mallocn(cap, sizeof(int32_t));
    fresh.next = skv_mallocn(cap, sizeof(int32_t));
    fresh.prev = skv_mallocn(cap, sizeof(int32_t));
    fresh.rank = skv_mallocn(cap, sizeof(uint32_t));
    fresh.heap = skv_mallocn(3 * cap, sizeof(uint64_t)); /* n - 1 pairs + 2 per merge */
    fresh.cap = cap;
    if (!fresh.sym || !fresh.next || !fresh.prev || !fresh.rank || !fresh.heap) {
        SKV_LOG_ERROR("tokenizer: no memory for a %zu-byte word", n);
        skv_tok_bpe_ws_cleanup(&fresh);
        return SKV_STATUS_NO_MEMORY;
    }
    skv_tok_bpe_ws_cleanup(ws);
    *ws = fresh;
    return SKV_STATUS_OK;
}

/* Returns the rank of merging a then b (SKV_TOK_NO_RANK when they do not merge). */
static uint32_t skv_tok_pair_rank(const skv_tokenizer_t *tok, int32_t a, int32_t b,
                                  int32_t *merged_p)
{
    uint32_t rank;
    if (!skv_tok_pairmap_get(&tok->merges, a, b, &rank, merged_p)) {
        return SKV_TOK_NO_RANK;
    }
    return rank;
}

/* Fills ws->sym with the single-byte ids of w; unknown bytes become the unk id (fused when
 * fuse_unk) or are dropped when there is none, as HF does. Returns the symbol count. */
static size_t skv_tok_bpe_init_syms(const skv_tokenizer_t *tok, skv_tok_bpe_ws_t *ws, const char *w,
                                    size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        int32_t id = tok->byte_id[(unsigned char)w[i]];
        if (id < 0) {
            if (tok->unk_id < 0 || (tok->fuse_unk && n > 0 && ws->sym[n - 1] == tok->unk_id)) {
                continue;
            }
            id = tok->unk_id;
        }
        ws->sym[n++] = id;
    }
    return n;
}

/* Short words: merge in a flat array, rescanning for the lowest rank. Returns the new count. */
static size_t skv_tok_bpe_scan(const skv_tokenizer_t *tok, skv_tok_bpe_ws_t *ws, size_t n)
{
    int32_t *sym = ws->sym;
    uint32_t *rank = ws->rank;
    int32_t *merged = ws->next; /* merged id of the pair at i */
    for (size_t i = 0; i + 1 < n; i++) {
        rank[i] = skv_tok_pair_rank(tok, sym[i], sym[i + 1], &merged[i]);
    }
    while (n > 1) {
        size_t best = 0;
        for (size_t i = 1; i + 1 < n; i++) {
            if (rank[i] < rank[best]) {
                best = i;
            }
        }
        if (rank[best] == SKV_TOK_NO_RANK) {
            break;
        }
        sym[best] = merged[best];
        memmove(sym + best + 1, sym + best + 2, (n - best - 2) * sizeof(*sym));
        memmove(rank + best + 1, rank + best + 2, (n - best - 2) * sizeof(*rank));
        memmove(merged + best + 1, merged + best + 2, (n - best - 2) * sizeof(*merged));
        n--;
        if (best > 0) {
            rank[best - 1] = skv_tok_pair_rank(tok, sym[best - 1], sym[best], &merged[best - 1]);
        }
        if (best + 1 < n) {
            rank[best] = skv_tok_pair_rank(tok, sym[best], sym[best + 1], &merged[best]);
        }
    }
    return n;
}

/* Binary min-heap of (rank << 32 | position) keys. */
static void skv_tok_heap_push(uint64_t *h, size_t *n, uint64_t key)
{
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2] > key) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = key;
}

static uint64_t skv_tok_heap_pop(uint64_t *h, size_t *n)
{
    uint64_t top = h[0];
    uint64_t last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n) {
            break;
        }
        if (c + 1 < *n && h[c + 1] < h[c]) {
            c++;
        }
        if (h[c] >= last) {
            break;
        }
        h[i] = h[c];
        i = c;
    }
    h[i] = last;
    return top;
}

/* Pushes the pair starting at symbol i (if it merges) and records its rank. */
static void skv_tok_bpe_heap_pair(const skv_tokenizer_t *tok, skv_tok_bpe_ws_t *ws, size_t *n_heap,
                                  int32_t i)
{
    int32_t j = ws->next[i];
    int32_t merged;
    ws->rank[i] = j < 0 ? SKV_TOK_NO_RANK : skv_tok_pair_rank(tok, ws->sym[i], ws->sym[j], &merged);
    if (ws->rank[i] != SKV_TOK_NO_RANK) {
        skv_tok_heap_push(ws->heap, n_heap, ((uint64_t)ws->rank[i] << 32) | (uint32_t)i);
    }
}

/* Long words: heap over a linked list. Stale heap entries (the pair changed since the push)
 * are recognised by a rank mismatch and skipped, as HF does. Returns the new count, with the
 * symbols compacted to the front of ws->sym. */
static size_t skv_tok_bpe_heap(const skv_tokenizer_t *tok, skv_tok_bpe_ws_t *ws, size_t n)
{
    size_t n_heap = 0;
    for (size_t i = 0; i < n; i++) {
        ws->next[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
        ws->prev[i] = (int32_t)i - 1;
    }
    for (size_t i = 0; i < n; i++) {
        skv_tok_bpe_heap_pair(tok, ws, &n_heap, (int32_t)i);
    }
    while (n_heap > 0) {
        uint64_t top = skv_tok_heap_pop(ws->heap, &n_heap);
        int32_t i = (int32_t)(uint32_t)top;
        uint32_t rank = (uint32_t)(top >> 32);
        if (ws->sym[i] < 0 || ws->rank[i] != rank || ws->next[i] < 0) {
            continue; /* symbol merged away, or its pair changed */
        }
        int32_t j = ws->next[i], merged;
        skv_tok_pair_rank(tok, ws->sym[i], ws->sym[j], &merged);
        ws->sym[i] = merged;
        ws->sym[j] = -1;
        ws->next[i] = ws->next[j];
        if (ws->next[j] >= 0) {
            ws->prev[ws->next[j]] = i;
        }
        skv_tok_bpe_heap_pair(tok, ws, &n_heap, i);
        if (ws->prev[i] >= 0) {
            skv_tok_bpe_heap_pair(tok, ws, &n_heap, ws->prev[i]);
        }
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (ws->sym[i] >= 0) {
            ws->sym[m++] = ws->sym[i];
        }
    }
    return m;
}

skv_status_t skv_tok_bpe_word(const skv_tokenizer_t *tok, skv_tok_bpe_ws_t *ws, const char *w,
                              size_t len, skv_tok_ids_t *out)
{
    if (len == 0) {
        return SKV_STATUS_OK;
    }
    if (len == 1 && tok->byte_id[(unsigned char)w[0]] >= 0) {
        return skv_tok_ids_push(out, tok->byte_id[(unsigned char)w[0]]);
    }
    if (tok->ignore_merges) {
        int32_t id = skv_tok_strmap_get(&tok->bytes_map, w, len);
        if (id >= 0) {
            return skv_tok_ids_push(out, id);
        }
    }
    SKV_CHECK(skv_tok_bpe_ws_reserve(ws, len));
    size_t n = skv_tok_bpe_init_syms(tok, ws, w, len);
    n = n <= SKV_TOK_SCAN_MAX ? skv_tok_bpe_scan(tok, ws, n) : skv_tok_bpe_heap(tok, ws, n);
    for (size_t i = 0; i < n; i++) {
        SKV_CHECK(skv_tok_ids_push(out, ws->sym[i]));
    }
    return SKV_STATUS_OK;
}
