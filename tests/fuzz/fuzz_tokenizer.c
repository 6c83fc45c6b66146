/*
 * fuzz_tokenizer.c: fuzz target for encode, decode and the streaming detokenizer.
 *
 * Input: byte 0 = flags, the rest = text. Checks: encode never crashes; valid UTF-8 round-trips
 * (decode(encode(x)) == x); invalid UTF-8 is INVALID_ARGUMENT; the same bytes read as ids
 * stream through skv_detok_* to exactly what skv_tokenizer_decode gives. The tokenizer is the
 * in-memory tiny one (tests/unit/tiny_tokenizer.h), built once.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "common/tokenizer/tokenizer.h"
#include "tests/unit/tiny_tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static skv_tokenizer_t *skv_fuzz_tok;

/* Builds the tiny tokenizer on first use. */
static const skv_tokenizer_t *skv_fuzz_tokenizer(void)
{
    if (skv_fuzz_tok == NULL) {
        json_t *root = skv_tiny_tokenizer_json(),
               *cfg = skv_tiny_config_json(SKV_TINY_LLAMA3_TEMPLATE);
        char *j = json_dumps(root, JSON_COMPACT), *c = json_dumps(cfg, JSON_COMPACT);
        SKV_ASSERT(skv_tokenizer_load_mem(j, strlen(j), c, strlen(c), &skv_fuzz_tok) ==
                   SKV_STATUS_OK);
        free(j);
        free(c);
        json_decref(root);
        json_decref(cfg);
    }
    return skv_fuzz_tok;
}

/* Encode + decode round trip. */
static void skv_fuzz_roundtrip(const skv_tokenizer_t *tok, const char *text, size_t len,
                               unsigned flags)
{
    int32_t *ids = NULL;
    size_t n = 0, out_len;
    char *out = NULL;
    skv_status_t st = skv_tokenizer_encode(tok, text, len, flags, &ids, &n);
    if (st != SKV_STATUS_OK) {
        SKV_ASSERT(st == SKV_STATUS_INVALID_ARGUMENT);
        return;
    }
    SKV_ASSERT(skv_tokenizer_decode(tok, ids, n, 0, &out, &out_len) == SKV_STATUS_OK);
    if (!(flags & SKV_TOKENIZER_ENCODE_ADD_BOS)) {
        SKV_ASSERT(out_len == len && memcmp(out, text, len) == 0);
    }
    skv_free(out);
    skv_free(ids);
}

/* Reads the bytes as ids (mod a bit more than the vocabulary) and streams them. */
static void skv_fuzz_detok(const skv_tokenizer_t *tok, const uint8_t *data, size_t size)
{
    size_t n = size / 2, len, at = 0;
    int32_t *ids = skv_mallocn(n + 1, sizeof(*ids));
    char *full = NULL, *streamed = NULL;
    for (size_t i = 0; i < n; i++) {
        ids[i] = (int32_t)((data[2 * i] | data[2 * i + 1] << 8) % (skv_tokenizer_n_vocab(tok) + 4));
    }
    skv_status_t st = skv_tokenizer_decode(tok, ids, n, 0, &full, &len);
    if (st == SKV_STATUS_OK) {
        streamed = skv_malloc(len + 1); /* streaming must give exactly the full decode */
    }
    skv_detok_t dt;
    skv_detok_init(&dt, tok, 0);
    for (size_t i = 0; i <= n && st == SKV_STATUS_OK; i++) {
        const char *piece;
        size_t piece_len;
        SKV_ASSERT((i < n ? skv_detok_push(&dt, ids[i], &piece, &piece_len)
                          : skv_detok_flush(&dt, &piece, &piece_len)) == SKV_STATUS_OK);
        SKV_ASSERT(at + piece_len <= len);
        memcpy(streamed + at, piece, piece_len);
        at += piece_len;
    }
    SKV_ASSERT(st != SKV_STATUS_OK || (at == len && memcmp(streamed, full, len) == 0));
    skv_detok_cleanup(&dt);
    skv_free(full);
    skv_free(streamed);
    skv_free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) {
        return 0;
    }
    const skv_tokenizer_t *tok = skv_fuzz_tokenizer();
    skv_fuzz_roundtrip(tok, (const char *)data + 1, size - 1, data[0] & 3u);
    skv_fuzz_detok(tok, data, size);
    return 0;
}
