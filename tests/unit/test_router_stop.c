/*
 * test_router_stop.c: the router's stop-string matcher and its text pipeline (detokenizer ->
 * stop matcher, min_tokens): matches split across pushes, held-back prefixes that turn out not
 * to match, overlapping and nested candidates, several stops, multi-byte UTF-8, include_stop,
 * arming, and a seeded randomized comparison against a brute-force reference over random
 * splits of random text.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "router/router_stop.h"
#include "router/router_text.h"
#include "tests/unit/tiny_tokenizer.h"

/* Feeds pieces (NULL-terminated list) into m, all armed; returns the concatenated output
 * (static buffer) and the match index. */
static const char *skv_feed(skv_stop_matcher_t *m, const char *const *pieces, int *match_p)
{
    static char out[1024];
    size_t n = 0;
    const char *o;
    size_t len;
    int match = -1;
    for (size_t i = 0; pieces[i] != NULL; i++) {
        assert_int_equal(
            skv_stop_matcher_push(m, pieces[i], strlen(pieces[i]), 1, &o, &len, &match), 0);
        memcpy(out + n, o, len);
        n += len;
    }
    skv_stop_matcher_flush(m, &o, &len);
    memcpy(out + n, o, len);
    n += len;
    out[n] = '\0';
    *match_p = match;
    return out;
}

/* Runs one case: stops, pieces, expected output and matched stop (NULL: none). */
static void skv_case(const char *const *stops, size_t n_stops, int include,
                     const char *const *pieces, const char *want, const char *want_stop)
{
    skv_stop_matcher_t m;
    int match;
    assert_int_equal(skv_stop_matcher_init(&m, stops, n_stops, include), SKV_STATUS_OK);
    assert_string_equal(skv_feed(&m, pieces, &match), want);
    if (want_stop == NULL) {
        assert_int_equal(match, -1);
        assert_null(skv_stop_matcher_matched(&m));
    } else {
        assert_true(match >= 0);
        assert_string_equal(skv_stop_matcher_matched(&m), want_stop);
    }
    skv_stop_matcher_cleanup(&m);
}

static void test_no_stops_pass_through(void **state)
{
    const char *p[] = {"hello", " ", "world", NULL};
    skv_case(NULL, 0, 0, p, "hello world", NULL);
}

static void test_split_across_pushes(void **state)
{
    const char *stops[] = {"o w"};
    const char *p[] = {"Hel", "lo", " ", "wo", "rld", NULL};
    skv_case(stops, 1, 0, p, "Hell", "o w");
    skv_case(stops, 1, 1, p, "Hello w", "o w");
}

static void test_held_text_is_released_when_no_match(void **state)
{
    const char *stops[] = {"STOP"};
    const char *p[] = {"abcST", "AR", "S", "TO", "x", NULL};
    skv_case(stops, 1, 0, p, "abcSTARSTOx", NULL);

    /* what is held is exactly the possible prefix */
    skv_stop_matcher_t m;
    const char *o;
    size_t len;
    int match;
    assert_int_equal(skv_stop_matcher_init(&m, stops, 1, 0), SKV_STATUS_OK);
    assert_int_equal(skv_stop_matcher_push(&m, "abcST", 5, 1, &o, &len, &match), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(o, "abc", 3);
    assert_int_equal(skv_stop_matcher_push(&m, "O", 1, 1, &o, &len, &match), 0);
    assert_int_equal(len, 0);
    assert_int_equal(skv_stop_matcher_push(&m, "P!", 2, 1, &o, &len, &match), 0);
    assert_int_equal(len, 0);
    assert_int_equal(match, 0);
    /* after a match nothing more comes out */
    assert_int_equal(skv_stop_matcher_push(&m, "more", 4, 1, &o, &len, &match), 0);
    assert_int_equal(len, 0);
    assert_int_equal(match, 0);
    skv_stop_matcher_flush(&m, &o, &len);
    assert_int_equal(len, 0);
    skv_stop_matcher_cleanup(&m);
}

static void test_self_overlapping_stop(void **state)
{
    const char *stops[] = {"aab"};
    const char *p[] = {"a", "a", "a", "b", "c", NULL};
    skv_case(stops, 1, 0, p, "a", "aab");
    const char *q[] = {"xaaa", "ab", NULL};
    skv_case(stops, 1, 1, q, "xaaaab", "aab");
}

static void test_overlapping_candidates(void **state)
{
    /* "abcd" is a candidate until "x" arrives; "bcx" completes first */
    const char *stops[] = {"abcd", "bcx"};
    const char *p[] = {"ab", "c", "x", "d", NULL};
    skv_case(stops, 2, 0, p, "a", "bcx");
}

static void test_earliest_end_wins_over_list_order(void **state)
{
    const char *stops[] = {"cd", "b"};
    const char *p[] = {"abcd", NULL};
    skv_case(stops, 2, 0, p, "a", "b");
    /* same end: the longer (earlier starting) stop wins */
    const char *stops2[] = {"b", "ab"};
    const char *q[] = {"xa", "b", NULL};
    skv_case(stops2, 2, 0, q, "x", "ab");
    skv_case(stops2, 2, 1, q, "xab", "ab");
}

static void test_multibyte_utf8(void **state)
{
    const char *stops[] = {"é!", "日本"};
    const char *p[] = {"caf", "é", "!", " more", NULL};
    skv_case(stops, 2, 0, p, "caf", "é!");
    const char *q[] = {"日", "日", "本語", NULL};
    skv_case(stops, 2, 0, q, "日", "日本");
    const char *r[] = {"é", "é?", NULL};
    skv_case(stops, 2, 0, r, "éé?", NULL);

    /* a held multi-byte prefix is never split when released */
    skv_stop_matcher_t m;
    const char *o;
    size_t len;
    int match;
    assert_int_equal(skv_stop_matcher_init(&m, stops, 2, 0), SKV_STATUS_OK);
    assert_int_equal(skv_stop_matcher_push(&m, "x日", strlen("x日"), 1, &o, &len, &match), 0);
    assert_int_equal(len, 1); /* "日" held whole */
    assert_int_equal(skv_stop_matcher_push(&m, "x", 1, 1, &o, &len, &match), 0);
    assert_int_equal(len, strlen("日x"));
    assert_memory_equal(o, "日x", len);
    skv_stop_matcher_cleanup(&m);
}

static void test_arming(void **state)
{
    const char *stops[] = {"ab"};
    skv_stop_matcher_t m;
    const char *o;
    size_t len;
    int match;
    assert_int_equal(skv_stop_matcher_init(&m, stops, 1, 0), SKV_STATUS_OK);
    /* unarmed: a whole stop passes; a trailing prefix is still held */
    assert_int_equal(skv_stop_matcher_push(&m, "xaba", 4, 0, &o, &len, &match), 0);
    assert_int_equal(match, -1);
    assert_int_equal(len, 3);
    assert_memory_equal(o, "xab", 3);
    /* armed: a match that started in held unarmed text counts */
    assert_int_equal(skv_stop_matcher_push(&m, "b", 1, 1, &o, &len, &match), 0);
    assert_int_equal(match, 0);
    assert_int_equal(len, 0);
    skv_stop_matcher_cleanup(&m);
}

static void test_limits(void **state)
{
    skv_stop_matcher_t m;
    const char *empty[] = {""};
    assert_int_equal(skv_stop_matcher_init(&m, empty, 1, 0), SKV_STATUS_INVALID_ARGUMENT);
    skv_stop_matcher_cleanup(&m);
    const char *many[SKV_STOP_MAX_STRINGS + 1];
    for (int i = 0; i <= SKV_STOP_MAX_STRINGS; i++) {
        many[i] = "x";
    }
    assert_int_equal(skv_stop_matcher_init(&m, many, SKV_STOP_MAX_STRINGS + 1, 0),
                     SKV_STATUS_INVALID_ARGUMENT);
    skv_stop_matcher_cleanup(&m);
    char big[SKV_STOP_MAX_BYTES + 2];
    memset(big, 'a', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    const char *bigs[] = {big};
    assert_int_equal(skv_stop_matcher_init(&m, bigs, 1, 0), SKV_STATUS_INVALID_ARGUMENT);
    skv_stop_matcher_cleanup(&m);
}

/* ---- randomized comparison with a brute-force reference ---- */

static const char *const skv_alphabet[] = {"a", "b", "c", "é", "日", " "};

/* Brute force: the first end position (> armed_from) where any stop ends; longest wins. */
static size_t skv_reference(const char *text, const char *const *stops, size_t n_stops,
                            size_t armed_from, int include, int *match_p)
{
    size_t len = strlen(text);
    for (size_t end = armed_from + 1; end <= len; end++) {
        int best = -1;
        for (size_t i = 0; i < n_stops; i++) {
            size_t n = strlen(stops[i]);
            if (n <= end && memcmp(text + end - n, stops[i], n) == 0 &&
                (best < 0 || n > strlen(stops[best]))) {
                best = (int)i;
            }
        }
        if (best >= 0) {
            *match_p = best;
            return include ? end : end - strlen(stops[best]);
        }
    }
    *match_p = -1;
    return len;
}

/* Appends n random symbols of the alphabet to buf; piece boundaries are symbol boundaries. */
static size_t skv_random_text(unsigned *seed, char *buf, size_t *bounds, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = skv_alphabet[rand_r(seed) % 6];
        memcpy(buf + len, s, strlen(s));
        len += strlen(s);
        bounds[i] = len;
    }
    buf[len] = '\0';
    return len;
}

static void skv_random_round(unsigned *seed)
{
    char text[512], stop_buf[4][64];
    size_t bounds[128];
    size_t n_sym = 1 + (size_t)(rand_r(seed) % 60);
    skv_random_text(seed, text, bounds, n_sym);
    const char *stops[4];
    size_t n_stops = (size_t)(rand_r(seed) % 4);
    for (size_t i = 0; i < n_stops; i++) {
        size_t b[8];
        skv_random_text(seed, stop_buf[i], b, 1 + (size_t)(rand_r(seed) % 3));
        stops[i] = stop_buf[i];
    }
    int include = rand_r(seed) % 2;
    skv_stop_matcher_t m;
    assert_int_equal(skv_stop_matcher_init(&m, stops, n_stops, include), SKV_STATUS_OK);
    size_t arm_piece = (size_t)(rand_r(seed) % 4), start = 0, n_out = 0, piece = 0;
    size_t armed_from = 0;
    char out[512];
    int match = -1;
    for (size_t i = 0; i < n_sym; piece++) {
        size_t j = i + 1 + (size_t)(rand_r(seed) % 4); /* 1..4 symbols per push */
        j = j < n_sym ? j : n_sym;
        const char *o;
        size_t len;
        int armed = piece >= arm_piece;
        if (!armed) {
            armed_from = bounds[j - 1];
        }
        assert_int_equal(
            skv_stop_matcher_push(&m, text + start, bounds[j - 1] - start, armed, &o, &len, &match),
            0);
        memcpy(out + n_out, o, len);
        n_out += len;
        start = bounds[j - 1];
        i = j;
    }
    const char *o;
    size_t len;
    skv_stop_matcher_flush(&m, &o, &len);
    memcpy(out + n_out, o, len);
    n_out += len;
    int want_match;
    size_t want = skv_reference(text, stops, n_stops, armed_from, include, &want_match);
    assert_int_equal(match, want_match);
    assert_int_equal(n_out, want);
    assert_memory_equal(out, text, want);
    skv_stop_matcher_cleanup(&m);
}

static void test_random_against_reference(void **state)
{
    unsigned seed = 12345;
    for (int round = 0; round < 20000; round++) {
        skv_random_round(&seed);
    }
}

/* ---- the text pipeline over a real (tiny) tokenizer ---- */

static skv_tokenizer_t *skv_tiny(void)
{
    json_t *j = skv_tiny_tokenizer_json(), *c = skv_tiny_config_json(SKV_TINY_LLAMA3_TEMPLATE);
    char *js = json_dumps(j, 0), *cs = json_dumps(c, 0);
    skv_tokenizer_t *tok = NULL;
    assert_int_equal(skv_tokenizer_load_mem(js, strlen(js), cs, strlen(cs), &tok), 0);
    free(js);
    free(cs);
    json_decref(j);
    json_decref(c);
    return tok;
}

/* Pushes byte tokens of s (the tiny tokenizer's ids 0..255 are the bytes) then the extra ids;
 * returns the concatenated chunk text and the token index that stopped (0: none). */
static const char *skv_pipe(skv_router_text_t *t, const char *s, const int32_t *extra,
                            size_t n_extra, int finish, int *stop_at_p)
{
    static char out[512];
    size_t n = 0, len = strlen(s);
    *stop_at_p = 0;
    for (size_t i = 0; i < len + n_extra && *stop_at_p == 0; i++) {
        int32_t id = i < len ? (unsigned char)s[i] : extra[i - len];
        int stopped = 0;
        assert_int_equal(skv_router_text_push(t, id, &stopped), 0);
        const char *piece = skv_router_text_take(t);
        memcpy(out + n, piece, strlen(piece));
        n += strlen(piece);
        *stop_at_p = stopped ? (int)i + 1 : 0;
    }
    if (finish && *stop_at_p == 0) {
        assert_int_equal(skv_router_text_finish(t), 0);
        const char *piece = skv_router_text_take(t);
        memcpy(out + n, piece, strlen(piece));
        n += strlen(piece);
    }
    out[n] = '\0';
    return out;
}

static void test_pipeline_multibyte_stop_across_tokens(void **state)
{
    skv_tokenizer_t *tok = skv_tiny();
    skv_router_text_t t;
    const char *stops[] = {"é!"};
    int at;
    assert_int_equal(skv_router_text_init(&t, tok, 1, stops, 1, 0, 0), 0);
    /* "é" is two byte tokens: the detokenizer holds C3, the matcher holds "é" */
    assert_string_equal(skv_pipe(&t, "caf\xc3\xa9!!", NULL, 0, 1, &at), "caf");
    assert_int_equal(at, 6);
    assert_string_equal(skv_router_text_stop_matched(&t), "é!");
    skv_router_text_cleanup(&t);

    assert_int_equal(skv_router_text_init(&t, tok, 1, stops, 1, 1, 0), 0);
    assert_string_equal(skv_pipe(&t, "caf\xc3\xa9?", NULL, 0, 1, &at), "café?");
    assert_int_equal(at, 0);
    skv_router_text_cleanup(&t);
    skv_tokenizer_destroy(tok);
}

static void test_pipeline_min_tokens_and_specials(void **state)
{
    skv_tokenizer_t *tok = skv_tiny();
    skv_router_text_t t;
    const char *stops[] = {"a"};
    int at;
    /* the first 2 tokens cannot stop */
    assert_int_equal(skv_router_text_init(&t, tok, 1, stops, 1, 0, 2), 0);
    assert_string_equal(skv_pipe(&t, "aaaa", NULL, 0, 1, &at), "aa");
    assert_int_equal(at, 3);
    skv_router_text_cleanup(&t);

    /* special tokens: skipped, or rendered (and then matchable) */
    const int32_t eot[] = {301};
    const char *sp[] = {"<|eot"};
    assert_int_equal(skv_router_text_init(&t, tok, 1, sp, 1, 0, 0), 0);
    assert_string_equal(skv_pipe(&t, "hi", eot, 1, 1, &at), "hi");
    assert_int_equal(at, 0);
    skv_router_text_cleanup(&t);
    assert_int_equal(skv_router_text_init(&t, tok, 0, sp, 1, 1, 0), 0);
    assert_string_equal(skv_pipe(&t, "hi", eot, 1, 1, &at), "hi<|eot");
    assert_int_equal(at, 3);
    skv_router_text_cleanup(&t);

    /* an incomplete UTF-8 tail at the end becomes U+FFFD, a held prefix is released */
    const char *xyz[] = {"xyz"};
    assert_int_equal(skv_router_text_init(&t, tok, 1, xyz, 1, 0, 0), 0);
    assert_string_equal(skv_pipe(&t, "abx\xc3", NULL, 0, 1, &at), "abx\xef\xbf\xbd");
    skv_router_text_cleanup(&t);
    skv_tokenizer_destroy(tok);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_no_stops_pass_through),
        cmocka_unit_test(test_split_across_pushes),
        cmocka_unit_test(test_held_text_is_released_when_no_match),
        cmocka_unit_test(test_self_overlapping_stop),
        cmocka_unit_test(test_overlapping_candidates),
        cmocka_unit_test(test_earliest_end_wins_over_list_order),
        cmocka_unit_test(test_multibyte_utf8),
        cmocka_unit_test(test_arming),
        cmocka_unit_test(test_limits),
        cmocka_unit_test(test_random_against_reference),
        cmocka_unit_test(test_pipeline_multibyte_stop_across_tokens),
        cmocka_unit_test(test_pipeline_min_tokens_and_specials),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
