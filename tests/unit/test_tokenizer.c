/*
 * test_tokenizer.c: edge cases of skv_tokenizer on a tiny in-memory tokenizer (see
 * tiny_tokenizer.h): empty text, special tokens on/off, invalid UTF-8, bad and unsupported
 * files, decode(encode(x)) == x, streaming detokenization of characters split across tokens,
 * the Llama-3 chat format, and allocation failures turned into statuses.
 * Exactness against HF is the job of tests/tokenizer/compare_hf.py.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "base/log.h"
#include "common/tokenizer/tokenizer.h"
#include "tests/unit/tiny_tokenizer.h"

/* Loads a tokenizer from JSON trees (config may be NULL); returns the status. */
static skv_status_t load_trees(json_t *root, json_t *config, skv_tokenizer_t **tok_p)
{
    char *j = json_dumps(root, JSON_COMPACT);
    char *c = config ? json_dumps(config, JSON_COMPACT) : NULL;
    skv_status_t st = skv_tokenizer_load_mem(j, strlen(j), c, c ? strlen(c) : 0, tok_p);
    free(j);
    free(c);
    return st;
}

/* The tiny tokenizer with the Llama-3 chat template. */
static skv_tokenizer_t *tiny(void)
{
    json_t *root = skv_tiny_tokenizer_json(), *cfg = skv_tiny_config_json(SKV_TINY_LLAMA3_TEMPLATE);
    skv_tokenizer_t *tok = NULL;
    assert_int_equal(load_trees(root, cfg, &tok), SKV_STATUS_OK);
    json_decref(root);
    json_decref(cfg);
    return tok;
}

static void expect_ids(const skv_tokenizer_t *tok, const char *text, unsigned flags,
                       const int32_t *want, size_t n_want)
{
    int32_t *ids = NULL;
    size_t n = 99;
    assert_int_equal(skv_tokenizer_encode(tok, text, strlen(text), flags, &ids, &n), SKV_STATUS_OK);
    assert_non_null(ids);
    assert_int_equal(n, n_want);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(ids[i], want[i]);
    }
    skv_free(ids);
}

static void test_empty_and_bos(void **state)
{
    skv_tokenizer_t *tok = tiny();
    int32_t bos[] = {300};
    expect_ids(tok, "", 0, NULL, 0);
    expect_ids(tok, "", SKV_TOKENIZER_ENCODE_ADD_BOS, bos, 1);
    assert_int_equal(skv_tokenizer_bos_id(tok), 300);
    assert_int_equal(skv_tokenizer_eos_id(tok), 301);
    assert_int_equal(skv_tokenizer_n_vocab(tok), 306);
    skv_tokenizer_destroy(tok);
}

static void test_merges_and_lookup(void **state)
{
    skv_tokenizer_t *tok = tiny();
    /* 258 = " the", 261 = "hello" (a space before hello has no merge). */
    expect_ids(tok, "hi the hello", 0, (int32_t[]){'h', 'i', 258, ' ', 261}, 5);
    int32_t id;
    assert_int_equal(skv_tokenizer_token_id(tok, "<|eot_id|>", &id), SKV_STATUS_OK);
    assert_int_equal(id, 301);
    assert_int_equal(skv_tokenizer_token_id(tok, "Ġthe", &id), SKV_STATUS_OK);
    assert_int_equal(id, 258);
    assert_int_equal(skv_tokenizer_token_id(tok, "nope", &id), SKV_STATUS_NOT_FOUND);
    assert_true(skv_tokenizer_is_special(tok, 301));
    assert_false(skv_tokenizer_is_special(tok, 304));
    assert_false(skv_tokenizer_is_special(tok, 100000));
    skv_tokenizer_destroy(tok);
}

static void test_special_on_off(void **state)
{
    skv_tokenizer_t *tok = tiny();
    int32_t on[] = {'a', 301, 'b'};
    expect_ids(tok, "a<|eot_id|>b", SKV_TOKENIZER_ENCODE_PARSE_SPECIAL, on, 3);
    /* Off: the special string is plain text; the non-special <tool> is still matched. */
    int32_t *ids;
    size_t n;
    const char *text = "a<|eot_id|>b<tool>";
    assert_int_equal(skv_tokenizer_encode(tok, text, strlen(text), 0, &ids, &n), SKV_STATUS_OK);
    assert_true(n > 4);
    for (size_t i = 0; i + 1 < n; i++) {
        assert_int_not_equal(ids[i], 301);
    }
    assert_int_equal(ids[n - 1], 304);
    char *dec;
    size_t len;
    assert_int_equal(skv_tokenizer_decode(tok, ids, n, 0, &dec, &len), SKV_STATUS_OK);
    assert_string_equal(dec, text);
    skv_free(dec);
    skv_free(ids);
    /* Skip special on decode. */
    int32_t mixed[] = {300, 'h', 'i', 301};
    assert_int_equal(
        skv_tokenizer_decode(tok, mixed, 4, SKV_TOKENIZER_DECODE_SKIP_SPECIAL, &dec, &len),
        SKV_STATUS_OK);
    assert_string_equal(dec, "hi");
    skv_free(dec);
    assert_int_equal(skv_tokenizer_decode(tok, mixed, 4, 0, &dec, &len), SKV_STATUS_OK);
    assert_string_equal(dec, "<|begin_of_text|>hi<|eot_id|>");
    skv_free(dec);
    skv_tokenizer_destroy(tok);
}

static void test_roundtrip(void **state)
{
    static const char *const texts[] = {"",
                                        " ",
                                        "hello world",
                                        "It's 12345 the\n\n\n  end  ",
                                        "中文 😀 👩‍👩‍👧‍👦 e\xcc\x81",
                                        "tab\there\r\nx",
                                        "'S 'LL",
                                        "<|begin_of_text|><|eot_id|<tool>",
                                        "\xc2\x85\xe3\x80\x80"};
    skv_tokenizer_t *tok = tiny();
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        int32_t *ids;
        size_t n, len;
        char *dec;
        const char *t = texts[i];
        assert_int_equal(
            skv_tokenizer_encode(tok, t, strlen(t), SKV_TOKENIZER_ENCODE_PARSE_SPECIAL, &ids, &n),
            SKV_STATUS_OK);
        assert_int_equal(skv_tokenizer_decode(tok, ids, n, 0, &dec, &len), SKV_STATUS_OK);
        assert_int_equal(len, strlen(t));
        assert_memory_equal(dec, t, len);
        skv_free(dec);
        skv_free(ids);
    }
    /* NUL bytes are ordinary text. */
    int32_t *ids;
    size_t n;
    assert_int_equal(skv_tokenizer_encode(tok, "a\0b", 3, 0, &ids, &n), SKV_STATUS_OK);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], 0);
    skv_free(ids);
    skv_tokenizer_destroy(tok);
}

static void test_invalid_utf8(void **state)
{
    static const char *const bad[] = {"\xc0\x80",         "a\xed\xa0\x80", "\xe4\xb8",
                                      "\xf5\x80\x80\x80", "\x80",          "ok\xff",
                                      "\xf4\x90\x80\x80"};
    skv_tokenizer_t *tok = tiny();
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int32_t *ids = NULL;
        size_t n = 0;
        assert_int_equal(skv_tokenizer_encode(tok, bad[i], strlen(bad[i]), 0, &ids, &n),
                         SKV_STATUS_INVALID_ARGUMENT);
        assert_null(ids);
    }
    /* Decode is lossy like HF: byte tokens making invalid UTF-8 become U+FFFD. */
    int32_t lone[] = {0xE4, 'A', 0xE4, 0xB8};
    char *dec;
    size_t len;
    assert_int_equal(skv_tokenizer_decode(tok, lone, 4, 0, &dec, &len), SKV_STATUS_OK);
    assert_string_equal(dec, "\xef\xbf\xbd"
                             "A"
                             "\xef\xbf\xbd");
    skv_free(dec);
    int32_t out_of_range[] = {5, 306};
    assert_int_equal(skv_tokenizer_decode(tok, out_of_range, 2, 0, &dec, &len),
                     SKV_STATUS_INVALID_ARGUMENT);
    int32_t gap[] = {299}; /* between the vocabulary and the added tokens */
    assert_int_equal(skv_tokenizer_decode(tok, gap, 1, 0, &dec, &len), SKV_STATUS_INVALID_ARGUMENT);
    skv_tokenizer_destroy(tok);
}

/* Streams ids through a detokenizer; checks each piece is whole UTF-8 and returns the text. */
static char *stream(const skv_tokenizer_t *tok, const int32_t *ids, size_t n, unsigned flags)
{
    skv_detok_t dt;
    char *all = calloc(1, 4 * n + 16);
    size_t at = 0;
    skv_detok_init(&dt, tok, flags);
    for (size_t i = 0; i <= n; i++) {
        const char *piece;
        size_t len;
        skv_status_t st =
            i < n ? skv_detok_push(&dt, ids[i], &piece, &len) : skv_detok_flush(&dt, &piece, &len);
        assert_int_equal(st, SKV_STATUS_OK);
        /* A piece never ends inside a character. */
        assert_true(len == 0 || (unsigned char)piece[len - 1] < 0x80 ||
                    (unsigned char)piece[len - 1] < 0xC0);
        memcpy(all + at, piece, len);
        at += len;
    }
    skv_detok_cleanup(&dt);
    return all;
}

static void test_detok_streaming(void **state)
{
    skv_tokenizer_t *tok = tiny();
    const char *text =
        "h\xc3\xa9llo \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80!"; /* héllo 中文 😀! */
    int32_t ids[64];
    size_t n = 0;
    for (const char *p = text; *p; p++) { /* one byte per token: every character is split */
        ids[n++] = (unsigned char)*p;
    }
    char *got = stream(tok, ids, n, 0);
    assert_string_equal(got, text);
    free(got);
    /* Held bytes that turn out invalid, and an unfinished tail at the end, match decode. */
    int32_t bad[] = {0xF0, 0x9F, 'x', 0xE4, 0xB8};
    got = stream(tok, bad, 5, 0);
    char *dec;
    size_t len;
    assert_int_equal(skv_tokenizer_decode(tok, bad, 5, 0, &dec, &len), SKV_STATUS_OK);
    assert_string_equal(got, dec);
    assert_string_equal(got, "\xef\xbf\xbdx\xef\xbf\xbd");
    free(got);
    skv_free(dec);
    int32_t special[] = {300, 'o', 'k', 301};
    got = stream(tok, special, 4, SKV_TOKENIZER_DECODE_SKIP_SPECIAL);
    assert_string_equal(got, "ok");
    free(got);
    skv_detok_t dt;
    const char *piece;
    skv_detok_init(&dt, tok, 0);
    assert_int_equal(skv_detok_push(&dt, -1, &piece, &len), SKV_STATUS_INVALID_ARGUMENT);
    skv_detok_cleanup(&dt);
    skv_tokenizer_destroy(tok);
}

static void test_chat_llama3(void **state)
{
    skv_tokenizer_t *tok = tiny();
    skv_chat_msg_t msgs[] = {{"system", "  Be brief.\n"}, {"user", "hello <|eot_id|>"}};
    char *text;
    size_t len;
    assert_int_equal(skv_tokenizer_chat_render(tok, msgs, 2, 1, &text, &len), SKV_STATUS_OK);
    assert_string_equal(text, "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                              "Be brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
                              "hello <|eot_id|><|eot_id|><|start_header_id|>assistant"
                              "<|end_header_id|>\n\n");
    int32_t *ids, *ref;
    size_t n, n_ref;
    assert_int_equal(skv_tokenizer_chat_encode(tok, msgs, 1, 1, &ids, &n), SKV_STATUS_OK);
    skv_free(text);
    assert_int_equal(skv_tokenizer_chat_render(tok, msgs, 1, 1, &text, &len), SKV_STATUS_OK);
    assert_int_equal(
        skv_tokenizer_encode(tok, text, len, SKV_TOKENIZER_ENCODE_PARSE_SPECIAL, &ref, &n_ref),
        SKV_STATUS_OK);
    assert_int_equal(n, n_ref);
    assert_memory_equal(ids, ref, n * sizeof(*ids));
    skv_free(ids);
    skv_free(ref);
    skv_free(text);
    /* A user cannot inject markers through chat_encode: only 2 + 3 + 3 markers, one eot. */
    assert_int_equal(skv_tokenizer_chat_encode(tok, &msgs[1], 1, 0, &ids, &n), SKV_STATUS_OK);
    int n_eot = 0;
    for (size_t i = 0; i < n; i++) {
        n_eot += ids[i] == 301;
    }
    assert_int_equal(n_eot, 1);
    skv_free(ids);
    skv_chat_msg_t no_role[] = {{NULL, "x"}};
    assert_int_equal(skv_tokenizer_chat_render(tok, no_role, 1, 0, &text, &len),
                     SKV_STATUS_INVALID_ARGUMENT);
    skv_tokenizer_destroy(tok);
}

static void test_chat_unsupported(void **state)
{
    static const char *const templates[] = {
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>{% endfor %}",
        "<|start_header_id|><|end_header_id|><|eot_id|>Cutting Knowledge Date: December 2023"};
    skv_chat_msg_t msg = {"user", "hi"};
    char *text;
    size_t len;
    for (size_t i = 0; i <= 2; i++) {
        json_t *root = skv_tiny_tokenizer_json();
        json_t *cfg = i < 2 ? skv_tiny_config_json(templates[i]) : NULL;
        skv_tokenizer_t *tok;
        assert_int_equal(load_trees(root, cfg, &tok), SKV_STATUS_OK);
        assert_int_equal(skv_tokenizer_chat_render(tok, &msg, 1, 1, &text, &len),
                         SKV_STATUS_UNSUPPORTED);
        skv_tokenizer_destroy(tok);
        json_decref(root);
        json_decref(cfg);
    }
}

/* Applies a mutation to a fresh tiny tokenizer.json and checks the load status. */
static void expect_load(const char *path, json_t *value, skv_status_t want)
{
    json_t *root = skv_tiny_tokenizer_json();
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *obj = root;
    char *key = buf, *dot;
    while ((dot = strchr(key, '.')) != NULL) { /* walk "a.b.c" to the parent object */
        *dot = '\0';
        obj = json_object_get(obj, key);
        key = dot + 1;
    }
    json_object_set_new(obj, key, value);
    skv_tokenizer_t *tok = NULL;
    assert_int_equal(load_trees(root, NULL, &tok), want);
    assert_null(tok);
    json_decref(root);
}

static void test_bad_files(void **state)
{
    skv_tokenizer_t *tok = NULL;
    assert_int_equal(skv_tokenizer_load("/nonexistent/dir", &tok), SKV_STATUS_NOT_FOUND);
    assert_int_equal(skv_tokenizer_load_mem("{\"model\":", 9, NULL, 0, &tok), SKV_STATUS_FORMAT);
    assert_int_equal(skv_tokenizer_load_mem("[]", 2, NULL, 0, &tok), SKV_STATUS_FORMAT);
    assert_int_equal(skv_tokenizer_load_mem("{}", 2, NULL, 0, &tok), SKV_STATUS_FORMAT);
    expect_load("model.vocab", json_array(), SKV_STATUS_FORMAT);
    expect_load("model.merges", json_pack("[i]", 3), SKV_STATUS_FORMAT);
    expect_load("model.merges", json_pack("[s]", "a b c"), SKV_STATUS_FORMAT);
    expect_load("model.merges", json_pack("[s]", "a zz"), SKV_STATUS_FORMAT);
    expect_load("model.merges", json_pack("[[s,i]]", "a", 1), SKV_STATUS_FORMAT);
    expect_load("model.vocab.a", json_string("x"), SKV_STATUS_FORMAT);
    expect_load("model.vocab.a", json_integer(-1), SKV_STATUS_FORMAT);
    expect_load("model.fuse_unk", json_string("yes"), SKV_STATUS_FORMAT);
    expect_load("model.unk_token", json_string("<nope>"), SKV_STATUS_FORMAT);
    expect_load("added_tokens", json_object(), SKV_STATUS_FORMAT);
    expect_load("added_tokens", json_pack("[{s:s}]", "id", "x"), SKV_STATUS_FORMAT);
    expect_load("model.type", json_string("WordPiece"), SKV_STATUS_UNSUPPORTED);
    expect_load("model.type", json_string("Unigram"), SKV_STATUS_UNSUPPORTED);
    expect_load("model.byte_fallback", json_true(), SKV_STATUS_UNSUPPORTED);
    expect_load("model.dropout", json_real(0.1), SKV_STATUS_UNSUPPORTED);
    expect_load("normalizer", json_pack("{s:s}", "type", "NFC"), SKV_STATUS_UNSUPPORTED);
    expect_load("decoder", json_pack("{s:s}", "type", "WordPiece"), SKV_STATUS_UNSUPPORTED);
    expect_load("pre_tokenizer", json_pack("{s:s}", "type", "Whitespace"), SKV_STATUS_UNSUPPORTED);
    expect_load("pre_tokenizer", json_null(), SKV_STATUS_UNSUPPORTED);
    expect_load("pre_tokenizer.pretokenizers",
                json_pack("[{s:s,s:{s:s},s:s}]", "type", "Split", "pattern", "Regex", "(",
                          "behavior", "Isolated"),
                SKV_STATUS_UNSUPPORTED);
    expect_load("post_processor", json_pack("{s:s}", "type", "BertProcessing"),
                SKV_STATUS_UNSUPPORTED);
    expect_load("post_processor", json_pack("{s:s,s:i}", "type", "TemplateProcessing", "single", 1),
                SKV_STATUS_FORMAT);
    expect_load("model", json_string("BPE"), SKV_STATUS_FORMAT);
}

static void test_load_from_dir(void **state)
{
    char dir[] = "/tmp/skv_tok_test_XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[256], cfg_path[256];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    snprintf(cfg_path, sizeof(cfg_path), "%s/tokenizer_config.json", dir);
    json_t *root = skv_tiny_tokenizer_json(), *cfg = skv_tiny_config_json(SKV_TINY_LLAMA3_TEMPLATE);
    assert_int_equal(json_dump_file(root, path, 0), 0);
    assert_int_equal(json_dump_file(cfg, cfg_path, 0), 0);
    skv_tokenizer_t *a, *b;
    assert_int_equal(skv_tokenizer_load(dir, &a), SKV_STATUS_OK);
    assert_int_equal(skv_tokenizer_load(path, &b), SKV_STATUS_OK);
    assert_int_equal(skv_tokenizer_eos_id(a), 301);
    assert_int_equal(skv_tokenizer_eos_id(b), 301);
    skv_tokenizer_destroy(a);
    skv_tokenizer_destroy(b);
    unlink(path);
    unlink(cfg_path);
    rmdir(dir);
    json_decref(root);
    json_decref(cfg);
}

/* Every allocation failure during load and encode is a status, never a crash or a leak. */
static void test_alloc_failures(void **state)
{
    json_t *root = skv_tiny_tokenizer_json();
    char *j = json_dumps(root, JSON_COMPACT);
    const char *text = "hello the world <|eot_id|> 12345 中文";
    for (long k = 1; k < 400; k++) {
        skv_tokenizer_t *tok = NULL;
        skv_alloc_fail_after(k);
        skv_status_t st = skv_tokenizer_load_mem(j, strlen(j), NULL, 0, &tok);
        if (st == SKV_STATUS_OK) {
            int32_t *ids = NULL;
            size_t n;
            st = skv_tokenizer_encode(tok, text, strlen(text), SKV_TOKENIZER_ENCODE_PARSE_SPECIAL,
                                      &ids, &n);
            skv_free(ids);
        }
        skv_alloc_fail_after(0);
        assert_true(st == SKV_STATUS_OK || st == SKV_STATUS_NO_MEMORY);
        skv_tokenizer_destroy(tok);
    }
    free(j);
    json_decref(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty_and_bos),  cmocka_unit_test(test_merges_and_lookup),
        cmocka_unit_test(test_special_on_off), cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_invalid_utf8),   cmocka_unit_test(test_detok_streaming),
        cmocka_unit_test(test_chat_llama3),    cmocka_unit_test(test_chat_unsupported),
        cmocka_unit_test(test_bad_files),      cmocka_unit_test(test_load_from_dir),
        cmocka_unit_test(test_alloc_failures),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
