/*
 * router_stop.h: stop strings matched on the streamed, detokenized text of one request.
 *
 * Owns: a copy of the stop strings and the text held back because it could still be the start
 * of a stop string. Does not own: the detokenizer (the caller feeds whole UTF-8 pieces).
 *
 * Semantics (independent of how the text is split into pieces):
 * - A match is the stop string occurrence that ENDS first in the stream; among stop strings
 *   ending at the same byte the longest (earliest start) wins.
 * - Only occurrences that end inside text pushed while `armed` count (min_tokens: the caller
 *   arms the matcher from the first token after min_tokens). Held text from unarmed pushes
 *   can still be the start of a match that ends in armed text.
 * - Text is released as soon as no suffix of it is a proper prefix of a stop string, so held
 *   text is at most (longest stop - 1) bytes. Stops and text are valid UTF-8, so every
 *   released piece starts and ends on a code point boundary.
 * - On a match, the text up to the match start (or its end with include_stop) is released
 *   and the matcher is finished: later pushes release nothing.
 * One matcher per request; one thread at a time.
 */
#ifndef SKV_ROUTER_STOP_H
#define SKV_ROUTER_STOP_H

#include <stddef.h>

#include "base/status.h"

/* Limits enforced by skv_stop_matcher_init (and by request validation, with field names). */
#define SKV_STOP_MAX_STRINGS 16
#define SKV_STOP_MAX_BYTES   256

typedef struct {
    char **stops;       /* owned copies, n_stops of them */
    size_t *stop_bytes; /* length of each stop */
    size_t n_stops;
    int include_stop;  /* release the matched stop string too */
    char *buf;         /* owned: held text, then the piece released by the last call */
    size_t n_buf;      /* bytes in buf */
    size_t n_released; /* leading bytes of buf released by the last call (dropped next call) */
    size_t cap;        /* bytes allocated at buf */
    int matched;       /* index of the matched stop, -1 while none */
} skv_stop_matcher_t;

/* Prepares a matcher over n stop strings (copied; each non-empty, at most SKV_STOP_MAX_BYTES,
 * at most SKV_STOP_MAX_STRINGS of them; n may be 0: then text passes straight through).
 * Returns OK, INVALID_ARGUMENT (a limit above, logged nowhere: validation names the field
 * first) or NO_MEMORY (nothing to clean up then). */
skv_status_t skv_stop_matcher_init(skv_stop_matcher_t *m, const char *const *stops, size_t n,
                                   int include_stop);

/* Frees the matcher's memory; safe on a zeroed or cleaned-up matcher. */
void skv_stop_matcher_cleanup(skv_stop_matcher_t *m);

/* Feeds len bytes of whole UTF-8 text. On OK, *out_p and *out_len_p give the text now safe to emit
 * (valid until the next call; maybe empty) and *match_p is the index of the matched stop
 * string or -1. After a match every later push releases nothing and reports the same index.
 * Returns OK or NO_MEMORY (the matcher is unchanged then). */
skv_status_t skv_stop_matcher_push(skv_stop_matcher_t *m, const char *text, size_t len, int armed,
                                   const char **out_p, size_t *out_len_p, int *match_p);

/* End of stream: releases the held text (none after a match). Output as for push. */
void skv_stop_matcher_flush(skv_stop_matcher_t *m, const char **out_p, size_t *out_len_p);

/* Returns the matched stop string (NUL-terminated, owned by the matcher) or NULL. */
const char *skv_stop_matcher_matched(const skv_stop_matcher_t *m);

#endif /* SKV_ROUTER_STOP_H */
