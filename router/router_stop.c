/*
 * router_stop.c: the stop-string matcher (see router_stop.h for the semantics).
 *
 * buf holds [released piece of the last call | held text | new text]. A push drops the
 * released piece, appends the new text, scans every new end position for a stop string
 * ending there (only when armed), and otherwise releases all but the longest suffix that is a
 * proper prefix of some stop. Cost per push: new bytes x stops x stop length for the scan and
 * (longest stop)^2 x stops for the hold, both bounded by the limits in the header.
 */
#include <string.h>

#include "base/alloc.h"
#include "router/router_stop.h"

skv_status_t skv_stop_matcher_init(skv_stop_matcher_t *m, const char *const *stops, size_t n,
                                   int include_stop)
{
    memset(m, 0, sizeof(*m));
    m->matched = -1;
    m->include_stop = include_stop;
    if (n > SKV_STOP_MAX_STRINGS) {
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    for (size_t i = 0; i < n; i++) {
        size_t len = strlen(stops[i]);
        if (len == 0 || len > SKV_STOP_MAX_BYTES) {
            return SKV_STATUS_INVALID_ARGUMENT;
        }
    }
    if (n == 0) {
        return SKV_STATUS_OK;
    }
    m->stops = skv_calloc(n, sizeof(*m->stops));
    m->stop_bytes = skv_calloc(n, sizeof(*m->stop_bytes));
    if (m->stops == NULL || m->stop_bytes == NULL) {
        goto fail;
    }
    for (size_t i = 0; i < n; i++, m->n_stops++) {
        if ((m->stops[i] = skv_strdup(stops[i])) == NULL) {
            goto fail;
        }
        m->stop_bytes[i] = strlen(stops[i]);
    }
    return SKV_STATUS_OK;
fail:
    skv_stop_matcher_cleanup(m);
    return SKV_STATUS_NO_MEMORY;
}

void skv_stop_matcher_cleanup(skv_stop_matcher_t *m)
{
    for (size_t i = 0; i < m->n_stops; i++) {
        skv_free(m->stops[i]);
    }
    skv_free(m->stops);
    skv_free(m->stop_bytes);
    skv_free(m->buf);
    memset(m, 0, sizeof(*m));
    m->matched = -1;
}

/* Where output starts: buf, or "" before anything was pushed (never NULL). */
static const char *skv_stop_out(const skv_stop_matcher_t *m)
{
    return m->buf != NULL ? m->buf : "";
}

/* Drops the piece released by the previous call. */
static void skv_stop_compact(skv_stop_matcher_t *m)
{
    if (m->n_released > 0) {
        memmove(m->buf, m->buf + m->n_released, m->n_buf - m->n_released);
        m->n_buf -= m->n_released;
        m->n_released = 0;
    }
}

/* Returns the index of the longest stop ending exactly at byte `end` of buf, or -1. */
static int skv_stop_ending_at(const skv_stop_matcher_t *m, size_t end)
{
    int best = -1;
    for (size_t i = 0; i < m->n_stops; i++) {
        size_t n = m->stop_bytes[i];
        if (n <= end && memcmp(m->buf + end - n, m->stops[i], n) == 0 &&
            (best < 0 || n > m->stop_bytes[best])) {
            best = (int)i;
        }
    }
    return best;
}

/* Returns the length of the longest suffix of buf that is a proper prefix of a stop. */
static size_t skv_stop_hold_bytes(const skv_stop_matcher_t *m)
{
    size_t longest = 0;
    for (size_t i = 0; i < m->n_stops; i++) {
        size_t k = m->stop_bytes[i] - 1 < m->n_buf ? m->stop_bytes[i] - 1 : m->n_buf;
        for (; k > longest; k--) {
            if (memcmp(m->buf + m->n_buf - k, m->stops[i], k) == 0) {
                longest = k;
                break;
            }
        }
    }
    return longest;
}

/* Appends len bytes to buf, growing it. */
static skv_status_t skv_stop_append(skv_stop_matcher_t *m, const char *text, size_t len)
{
    if (m->n_buf + len > m->cap) {
        size_t cap = m->cap ? m->cap : 256;
        while (cap < m->n_buf + len) {
            cap *= 2;
        }
        char *p = skv_realloc(m->buf, cap);
        if (p == NULL) {
            return SKV_STATUS_NO_MEMORY;
        }
        m->buf = p;
        m->cap = cap;
    }
    if (len > 0) {
        memcpy(m->buf + m->n_buf, text, len);
    }
    m->n_buf += len;
    return SKV_STATUS_OK;
}

skv_status_t skv_stop_matcher_push(skv_stop_matcher_t *m, const char *text, size_t len, int armed,
                                   const char **out_p, size_t *out_len_p, int *match_p)
{
    skv_stop_compact(m);
    *out_p = skv_stop_out(m);
    *out_len_p = 0;
    *match_p = m->matched;
    if (m->matched >= 0) {
        return SKV_STATUS_OK;
    }
    size_t old = m->n_buf;
    SKV_CHECK(skv_stop_append(m, text, len));
    for (size_t end = old + 1; armed && end <= m->n_buf; end++) {
        int hit = skv_stop_ending_at(m, end);
        if (hit >= 0) {
            m->matched = hit;
            m->n_released = m->include_stop ? end : end - m->stop_bytes[hit];
            m->n_buf = m->n_released; /* text after the stop is never emitted */
            *out_p = skv_stop_out(m);
            *out_len_p = m->n_released;
            *match_p = hit;
            return SKV_STATUS_OK;
        }
    }
    m->n_released = m->n_buf - skv_stop_hold_bytes(m);
    *out_p = skv_stop_out(m);
    *out_len_p = m->n_released;
    return SKV_STATUS_OK;
}

void skv_stop_matcher_flush(skv_stop_matcher_t *m, const char **out_p, size_t *out_len_p)
{
    skv_stop_compact(m);
    *out_p = skv_stop_out(m);
    *out_len_p = 0;
    if (m->matched >= 0) {
        return;
    }
    m->n_released = m->n_buf;
    *out_len_p = m->n_buf;
}

const char *skv_stop_matcher_matched(const skv_stop_matcher_t *m)
{
    return m->matched >= 0 ? m->stops[m->matched] : NULL;
}
