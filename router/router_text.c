/*
 * router_text.c: detokenizer -> stop matcher -> chunk text (see router_text.h).
 */
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "router/router_text.h"

skv_status_t skv_router_text_init(skv_router_text_t *t, const skv_tokenizer_t *tok,
                                  int skip_special, const char *const *stops, size_t n_stops,
                                  int include_stop, uint32_t min_tokens)
{
    memset(t, 0, sizeof(*t));
    SKV_CHECK(skv_stop_matcher_init(&t->stop, stops, n_stops, include_stop));
    skv_detok_init(&t->detok, tok, skip_special ? SKV_TOKENIZER_DECODE_SKIP_SPECIAL : 0);
    t->min_tokens = min_tokens;
    return SKV_STATUS_OK;
}

void skv_router_text_cleanup(skv_router_text_t *t)
{
    if (t->detok.tok != NULL) {
        skv_detok_cleanup(&t->detok);
    }
    skv_stop_matcher_cleanup(&t->stop);
    skv_free(t->text);
    memset(t, 0, sizeof(*t));
}

/* Appends len bytes to the pending chunk text. */
static skv_status_t skv_router_text_append(skv_router_text_t *t, const char *s, size_t len)
{
    if (t->taken) {
        t->n_text = 0;
        t->taken = 0;
    }
    if (t->n_text + len + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 128;
        while (cap < t->n_text + len + 1) {
            cap *= 2;
        }
        char *p = skv_realloc(t->text, cap);
        if (p == NULL) {
            return SKV_STATUS_NO_MEMORY;
        }
        t->text = p;
        t->cap = cap;
    }
    if (len > 0) {
        memcpy(t->text + t->n_text, s, len);
    }
    t->n_text += len;
    t->text[t->n_text] = '\0';
    return SKV_STATUS_OK;
}

/* Runs a detokenized piece through the matcher and appends what it releases. */
static skv_status_t skv_router_text_feed(skv_router_text_t *t, const char *piece, size_t len,
                                         int armed, int *stopped_p)
{
    const char *out;
    size_t n_out;
    int match;
    SKV_CHECK(skv_stop_matcher_push(&t->stop, piece, len, armed, &out, &n_out, &match));
    SKV_CHECK(skv_router_text_append(t, out, n_out));
    if (match >= 0) {
        t->done = 1;
        *stopped_p = 1;
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_router_text_push(skv_router_text_t *t, int32_t id, int *stopped_p)
{
    const char *piece = NULL;
    size_t len = 0;
    *stopped_p = 0;
    SKV_CHECK(skv_router_text_append(t, "", 0)); /* starts a new chunk's text if taken */
    if (t->done) {
        return SKV_STATUS_OK;
    }
    t->n_tokens++;
    skv_status_t st = skv_detok_push(&t->detok, id, &piece, &len);
    if (st == SKV_STATUS_INVALID_ARGUMENT) {
        SKV_LOG_DEBUG("router: generated id %d has no text in the tokenizer", id);
        return SKV_STATUS_OK;
    }
    SKV_CHECK(st);
    return skv_router_text_feed(t, piece, len, t->n_tokens > t->min_tokens, stopped_p);
}

skv_status_t skv_router_text_finish(skv_router_text_t *t)
{
    const char *piece = NULL, *out = NULL;
    size_t len = 0, n_out = 0;
    int stopped = 0;
    SKV_CHECK(skv_router_text_append(t, "", 0));
    if (t->done) {
        return SKV_STATUS_OK;
    }
    SKV_CHECK(skv_detok_flush(&t->detok, &piece, &len));
    SKV_CHECK(skv_router_text_feed(t, piece, len, t->n_tokens > t->min_tokens, &stopped));
    if (!stopped) {
        skv_stop_matcher_flush(&t->stop, &out, &n_out);
        SKV_CHECK(skv_router_text_append(t, out, n_out));
    }
    t->done = 1;
    return SKV_STATUS_OK;
}

const char *skv_router_text_take(skv_router_text_t *t)
{
    if (t->taken || t->text == NULL) {
        return "";
    }
    t->taken = 1;
    return t->text;
}

const char *skv_router_text_stop_matched(const skv_router_text_t *t)
{
    return skv_stop_matcher_matched(&t->stop);
}
