/*
 * tokenizer_bytelevel.c: the GPT-2 byte <-> character alphabet and strict UTF-8 checks.
 *
 * Byte-level BPE spells every byte as one printable character: bytes '!'..'~', 0xA1..0xAC and
 * 0xAE..0xFF stand for themselves, the other 68 bytes (controls, space, 0x7F..0xA0, 0xAD) map in
 * order to U+0100..U+0143. We only need the inverse (character -> byte): the tokenizer keeps
 * raw bytes internally and never spells text in this alphabet.
 */
#include "common/tokenizer/tokenizer_internal.h"

/* Returns 1 when byte b stands for itself in the byte-level alphabet. */
static int skv_tok_byte_is_printable(unsigned b)
{
    return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
}

/* Returns the byte that code point cp spells, or -1 when cp is not in the alphabet. */
static int skv_tok_bytelevel_byte(uint32_t cp)
{
    if (cp < 256) {
        return skv_tok_byte_is_printable(cp) ? (int)cp : -1;
    }
    if (cp >= 256 + 68) {
        return -1;
    }
    /* The n-th non-printable byte maps to U+0100 + n: 0x00..0x20 are n = 0..32, 0x7F..0xA0
     * are n = 33..66 and 0xAD is n = 67. */
    uint32_t n = cp - 256;
    if (n <= 32) {
        return (int)n;
    }
    return n <= 66 ? (int)(0x7F + n - 33) : 0xAD;
}

/* Decodes one UTF-8 character at s (len > 0 bytes, strict). Returns its byte length, 0 when
 * invalid or truncated; *cp_p receives the code point. */
static size_t skv_tok_utf8_next(const unsigned char *s, size_t len, uint32_t *cp_p)
{
    unsigned c = s[0];
    if (c < 0x80) {
        *cp_p = c;
        return 1;
    }
    size_t n;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2, cp = c & 0x1F, min = 0x80;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3, cp = c & 0x0F, min = 0x800;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len < n) {
        return 0;
    }
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
        return 0;
    }
    *cp_p = cp;
    return n;
}

size_t skv_tok_utf8_check(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        if (u[i] < 0x80) { /* ASCII fast path */
            i++;
            continue;
        }
        uint32_t cp;
        size_t n = skv_tok_utf8_next(u + i, len - i, &cp);
        if (n == 0) {
            return i;
        }
        i += n;
    }
    return len;
}

long skv_tok_bytelevel_unmap(const char *s, size_t len, char *out)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    long n_out = 0;
    while (i < len) {
        if (u[i] >= 0x21 && u[i] <= 0x7E) { /* printable ASCII spells itself: the common case */
            out[n_out++] = (char)u[i++];
            continue;
        }
        uint32_t cp;
        size_t n = skv_tok_utf8_next(u + i, len - i, &cp);
        int b = n == 0 ? -1 : skv_tok_bytelevel_byte(cp);
        if (b < 0) {
            return -1;
        }
        out[n_out++] = (char)b;
        i += n;
    }
    return n_out;
}
