/*
 * fuzz_tokenizer_load.c: fuzz target for the tokenizer.json loader.
 *
 * Input: tokenizer.json text. Checks: loading never crashes and returns a status; when it
 * loads, encoding and decoding a fixed text works.
 */
#include <stdint.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "common/tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char text[] = "Hello <|eot_id|> wörld 12345 中文 😀\n\n  ok";
    skv_tokenizer_t *tok = NULL;
    if (skv_tokenizer_load_mem((const char *)data, size, NULL, 0, &tok) != SKV_STATUS_OK) {
        return 0;
    }
    int32_t *ids = NULL;
    size_t n = 0, len;
    char *out = NULL;
    if (skv_tokenizer_encode(tok, text, sizeof(text) - 1,
                             SKV_TOKENIZER_ENCODE_ADD_BOS | SKV_TOKENIZER_ENCODE_PARSE_SPECIAL,
                             &ids, &n) == SKV_STATUS_OK) {
        SKV_ASSERT(skv_tokenizer_decode(tok, ids, n, 0, &out, &len) == SKV_STATUS_OK);
    }
    skv_free(out);
    skv_free(ids);
    skv_tokenizer_destroy(tok);
    return 0;
}
