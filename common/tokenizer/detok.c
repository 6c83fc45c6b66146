/*
 * detok.c: ids -> text, in one go (skv_tokenizer_decode) or streamed (skv_detok_*).
 *
 * Both concatenate the tokens' bytes and convert them to UTF-8 the way Rust's
 * String::from_utf8_lossy does (what HF's ByteLevel decoder uses): every maximal invalid
 * subpart becomes one U+FFFD. The streaming form holds back only a *possibly incomplete*
 * character at the end of what it has seen (at most 3 bytes), so its output pieces are whole
 * characters and their concatenation equals the one-shot decode.
 */
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "common/tokenizer/tokenizer_internal.h"

static const char skv_tok_replacement[3] = {(char)0xEF, (char)0xBF, (char)0xBD}; /* U+FFFD */

/* Classifies the bytes at s[0..len): returns the length of a valid character (> 0), or 0 with
 * *bad_p = length of the maximal invalid subpart, or 0 with *bad_p = 0 when s is a valid but
 * unfinished prefix of a character that more bytes could complete. */
static size_t skv_tok_utf8_step(const unsigned char *s, size_t len, size_t *bad_p)
{
    unsigned c = s[0];
    size_t need;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    *bad_p = 1;
    if (c < 0x80) {
        return 1;
    } else if (c >= 0xC2 && c <= 0xDF) {
        need = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 0;
    }
    for (size_t i = 1; i < need; i++) {
        if (i >= len) {
            *bad_p = 0; /* unfinished */
            return 0;
        }
        unsigned b = s[i];
        if (i == 1 ? (b < lo || b > hi) : (b & 0xC0) != 0x80) {
            *bad_p = i;
            return 0;
        }
    }
    return need;
}

/* Appends n bytes to dst (capacity checked by the caller). */
static size_t skv_tok_put(char *dst, size_t at, const void *src, size_t n)
{
    memcpy(dst + at, src, n);
    return at + n;
}

/* Converts s[0..len) lossily into dst (which needs 3 * len bytes). When hold is set, an
 * unfinished character at the end is not converted; *used_p tells how many input bytes were
 * consumed. Returns the bytes written. */
static size_t skv_tok_utf8_lossy(const unsigned char *s, size_t len, int hold, char *dst,
                                 size_t *used_p)
{
    size_t i = 0, o = 0, bad;
    while (i < len) {
        size_t n = skv_tok_utf8_step(s + i, len - i, &bad);
        if (n > 0) {
            o = skv_tok_put(dst, o, s + i, n);
            i += n;
        } else if (bad == 0 && hold) {
            break;
        } else {
            o = skv_tok_put(dst, o, skv_tok_replacement, 3);
            i += bad == 0 ? len - i : bad; /* an unfinished tail is one subpart */
        }
    }
    *used_p = i;
    return o;
}

/* Checks that every id is in the vocabulary. */
static skv_status_t skv_tok_check_ids(const skv_tokenizer_t *tok, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= tok->n_ids || tok->tok_bytes[ids[i]] == NULL) {
            SKV_LOG_ERROR("tokenizer: decode of id %d (position %zu) outside the vocabulary of "
                          "%zu",
                          ids[i], i, tok->n_ids);
            return SKV_STATUS_INVALID_ARGUMENT;
        }
    }
    return SKV_STATUS_OK;
}

/* Returns 1 when id is dropped by the flags. */
static int skv_tok_skipped(const skv_tokenizer_t *tok, int32_t id, unsigned flags)
{
    return (flags & SKV_TOKENIZER_DECODE_SKIP_SPECIAL) && (tok->tok_flags[id] & SKV_TOK_F_SPECIAL);
}

skv_status_t skv_tokenizer_decode(const skv_tokenizer_t *tok, const int32_t *ids, size_t n,
                                  unsigned flags, char **text_p, size_t *len_p)
{
    SKV_CHECK(skv_tok_check_ids(tok, ids, n));
    size_t raw_len = 0;
    for (size_t i = 0; i < n; i++) {
        raw_len += skv_tok_skipped(tok, ids[i], flags) ? 0 : tok->tok_len[ids[i]];
    }
    unsigned char *raw = skv_malloc(raw_len);
    char *text = skv_mallocn(3, raw_len + 1);
    if (raw == NULL || text == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory to decode %zu ids", n);
        skv_free(raw);
        skv_free(text);
        return SKV_STATUS_NO_MEMORY;
    }
    size_t at = 0, used;
    for (size_t i = 0; i < n; i++) {
        if (!skv_tok_skipped(tok, ids[i], flags)) {
            at = skv_tok_put((char *)raw, at, tok->tok_bytes[ids[i]], tok->tok_len[ids[i]]);
        }
    }
    size_t len = skv_tok_utf8_lossy(raw, raw_len, 0, text, &used);
    text[len] = '\0';
    skv_free(raw);
    *text_p = text;
    *len_p = len;
    return SKV_STATUS_OK;
}

/* ---- streaming ------------------------------------------------------------------------ */

void skv_detok_init(skv_detok_t *dt, const skv_tokenizer_t *tok, unsigned flags)
{
    memset(dt, 0, sizeof(*dt));
    dt->tok = tok;
    dt->flags = flags;
}

void skv_detok_cleanup(skv_detok_t *dt)
{
    skv_free(dt->out);
    memset(dt, 0, sizeof(*dt));
}

/* Makes dt->out hold at least cap bytes. */
static skv_status_t skv_detok_reserve(skv_detok_t *dt, size_t cap)
{
    if (cap <= dt->out_cap) {
        return SKV_STATUS_OK;
    }
    char *out = skv_realloc(dt->out, cap);
    if (out == NULL) {
        SKV_LOG_ERROR("detok: no memory for %zu bytes", cap);
        return SKV_STATUS_NO_MEMORY;
    }
    dt->out = out;
    dt->out_cap = cap;
    return SKV_STATUS_OK;
}

/* Converts pending + bytes; keeps an unfinished tail in pending unless final. */
static skv_status_t skv_detok_emit(skv_detok_t *dt, const char *bytes, size_t n, int final,
                                   const char **text_p, size_t *len_p)
{
    size_t total = dt->n_pending + n, used;
    /* Input (total bytes) is staged after the output area, which needs 3 bytes per input. */
    SKV_CHECK(skv_detok_reserve(dt, 4 * total + 4));
    unsigned char *in = (unsigned char *)dt->out + 3 * total + 3;
    memcpy(in, dt->pending, dt->n_pending);
    if (n > 0) {
        memcpy(in + dt->n_pending, bytes, n);
    }
    size_t len = skv_tok_utf8_lossy(in, total, !final, dt->out, &used);
    dt->n_pending = total - used; /* < 4: only an unfinished character is held */
    memcpy(dt->pending, in + used, dt->n_pending);
    *text_p = dt->out;
    *len_p = len;
    return SKV_STATUS_OK;
}

skv_status_t skv_detok_push(skv_detok_t *dt, int32_t id, const char **text_p, size_t *len_p)
{
    const skv_tokenizer_t *tok = dt->tok;
    SKV_CHECK(skv_tok_check_ids(tok, &id, 1));
    if (skv_tok_skipped(tok, id, dt->flags)) {
        *text_p = dt->out ? dt->out : "";
        *len_p = 0;
        return SKV_STATUS_OK;
    }
    return skv_detok_emit(dt, tok->tok_bytes[id], tok->tok_len[id], 0, text_p, len_p);
}

skv_status_t skv_detok_flush(skv_detok_t *dt, const char **text_p, size_t *len_p)
{
    return skv_detok_emit(dt, NULL, 0, 1, text_p, len_p);
}
