/*
 * router_text.h: the text side of one streamed request: incremental detokenization followed
 * by stop-string matching, with min_tokens.
 *
 * Owns: a streaming detokenizer (whole UTF-8 pieces only), a stop matcher (router_stop.h) and
 * the text accumulated for the next chunk. Borrows: the tokenizer.
 * Token k (1-based, the first generated token is 1) arms stop strings when k > min_tokens:
 * "stops are ignored before min_tokens tokens", the same rule the workers apply to EOS.
 * One per request; one thread at a time.
 */
#ifndef SKV_ROUTER_TEXT_H
#define SKV_ROUTER_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "common/tokenizer/tokenizer.h"
#include "router/router_stop.h"

typedef struct {
    skv_detok_t detok;
    skv_stop_matcher_t stop;
    uint32_t min_tokens;
    uint32_t n_tokens; /* tokens pushed so far */
    char *text;        /* owned: text for the next chunk, NUL-terminated */
    size_t n_text;
    size_t cap;
    int taken; /* text was handed out: the next append starts afresh */
    int done;  /* a stop matched or finish ran: nothing more is appended */
} skv_router_text_t;

/* Prepares the pipeline over tok (borrowed) with skip_special, the stop strings (copied) and
 * min_tokens. Returns OK, INVALID_ARGUMENT (stop limits) or NO_MEMORY (nothing to clean). */
skv_status_t skv_router_text_init(skv_router_text_t *t, const skv_tokenizer_t *tok,
                                  int skip_special, const char *const *stops, size_t n_stops,
                                  int include_stop, uint32_t min_tokens);

/* Frees everything; safe on a zeroed or cleaned-up pipeline. */
void skv_router_text_cleanup(skv_router_text_t *t);

/* Feeds one generated token. Its text (what the stop matcher releases) is appended to the
 * pending chunk text. *stopped_p: non-zero when a stop string matched on this token (the
 * text is already trimmed; later pushes add nothing). An id the tokenizer does not know adds
 * no text. Returns OK or NO_MEMORY. */
skv_status_t skv_router_text_push(skv_router_text_t *t, int32_t id, int *stopped_p);

/* End of the stream (not after a stop): releases held bytes and held text. Returns OK or
 * NO_MEMORY. */
skv_status_t skv_router_text_finish(skv_router_text_t *t);

/* Hands out the pending chunk text (NUL-terminated, maybe ""), valid until the next call on
 * t; the next push starts a new chunk's text. */
const char *skv_router_text_take(skv_router_text_t *t);

/* The matched stop string, or NULL. */
const char *skv_router_text_stop_matched(const skv_router_text_t *t);

#endif /* SKV_ROUTER_TEXT_H */
