/*
 * tokenizer.c: loading entry points, lookups and the encode pipeline.
 *
 * Encode follows HF tokenizers' order exactly: (1) split out added tokens, leftmost-longest,
 * first those with normalized=false, then those with normalized=true in the remaining gaps
 * (special ones only with PARSE_SPECIAL); (2) run each Split regex over each remaining piece,
 * keeping matches and gaps (behavior Isolated); (3) ByteLevel: prefix a space when configured,
 * split with the GPT-2 regex when use_regex; (4) BPE each piece; (5) the template tokens around.
 * Empty pieces are dropped at every step, as HF does. Decode and chat live in their own files.
 */
#define _GNU_SOURCE /* qsort_r */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/alloc.h"
#include "base/log.h"
#include "common/tokenizer/tokenizer_internal.h"

/* ---- PCRE2 memory through skv_malloc -------------------------------------------------- */

static void *skv_tok_pcre_malloc(PCRE2_SIZE bytes, void *data)
{
    return skv_malloc(bytes);
}

static void skv_tok_pcre_free(void *p, void *data)
{
    skv_free(p);
}

/* ---- load / destroy ------------------------------------------------------------------- */

void skv_tokenizer_destroy(skv_tokenizer_t *tok)
{
    if (tok == NULL) {
        return;
    }
    for (size_t i = 0; i < tok->n_split; i++) {
        pcre2_code_free(tok->split_re[i]);
    }
    pcre2_code_free(tok->bytelevel_re);
    pcre2_compile_context_free(tok->pcre_cctx);
    pcre2_general_context_free(tok->pcre_gctx);
    for (size_t i = 0; i < tok->n_added; i++) {
        skv_free(tok->added[i].content);
        skv_free(tok->added[i].dec);
    }
    skv_free(tok->added);
    skv_free(tok->added_order);
    skv_tok_strmap_cleanup(&tok->bytes_map);
    skv_tok_pairmap_cleanup(&tok->merges);
    skv_free(tok->vocab_bytes);
    skv_free(tok->vocab_len);
    skv_free(tok->tok_bytes);
    skv_free(tok->tok_len);
    skv_free(tok->tok_flags);
    skv_free(tok->arena);
    skv_free(tok->post_prefix);
    skv_free(tok->post_suffix);
    skv_free(tok->bos_text);
    skv_free(tok);
}

/* qsort_r order of added-token indices: by first byte, then longest first. */
static int skv_tok_added_cmp(const void *pa, const void *pb, void *ctx)
{
    const skv_tok_added_t *added = ctx;
    const skv_tok_added_t *a = &added[*(const uint32_t *)pa];
    const skv_tok_added_t *b = &added[*(const uint32_t *)pb];
    unsigned char fa = (unsigned char)a->content[0], fb = (unsigned char)b->content[0];
    if (fa != fb) {
        return fa < fb ? -1 : 1;
    }
    if (a->len != b->len) {
        return a->len > b->len ? -1 : 1; /* longest first: the first hit is the longest */
    }
    return *(const uint32_t *)pa < *(const uint32_t *)pb ? -1 : 1;
}

/* Builds added_order / added_begin for the matcher. */
static skv_status_t skv_tok_index_added(skv_tokenizer_t *tok)
{
    tok->added_order = skv_mallocn(tok->n_added + 1, sizeof(*tok->added_order));
    if (tok->added_order == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for the added-token index");
        return SKV_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < tok->n_added; i++) {
        tok->added_order[i] = (uint32_t)i;
    }
    qsort_r(tok->added_order, tok->n_added, sizeof(*tok->added_order), skv_tok_added_cmp,
            tok->added);
    size_t k = 0;
    for (unsigned b = 0; b <= 256; b++) {
        while (k < tok->n_added && (unsigned char)tok->added[tok->added_order[k]].content[0] < b) {
            k++;
        }
        tok->added_begin[b] = (uint32_t)k;
    }
    return SKV_STATUS_OK;
}

/* Creates the tokenizer object with its PCRE2 contexts. */
static skv_status_t skv_tok_alloc(skv_tokenizer_t **tok_p)
{
    skv_tokenizer_t *tok = skv_calloc(1, sizeof(*tok));
    if (tok == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory");
        return SKV_STATUS_NO_MEMORY;
    }
    tok->unk_id = tok->bos_id = tok->eos_id = -1;
    tok->pcre_gctx = pcre2_general_context_create(skv_tok_pcre_malloc, skv_tok_pcre_free, NULL);
    tok->pcre_cctx = tok->pcre_gctx ? pcre2_compile_context_create(tok->pcre_gctx) : NULL;
    if (tok->pcre_cctx == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for PCRE2 contexts");
        skv_tokenizer_destroy(tok);
        return SKV_STATUS_NO_MEMORY;
    }
    *tok_p = tok;
    return SKV_STATUS_OK;
}

/* Parses JSON text (len bytes) into *root_p; what names the file in messages. */
static skv_status_t skv_tok_parse(const char *text, size_t len, const char *what, json_t **root_p)
{
    json_error_t err;
    json_t *root = json_loadb(text, len, 0, &err);
    if (root == NULL) {
        SKV_LOG_ERROR("%s: invalid JSON at line %d column %d: %s", what, err.line, err.column,
                      err.text);
        return SKV_STATUS_FORMAT;
    }
    *root_p = root;
    return SKV_STATUS_OK;
}

skv_status_t skv_tokenizer_load_mem(const char *json, size_t len, const char *config,
                                    size_t config_len, skv_tokenizer_t **tok_p)
{
    json_t *root = NULL, *cfg = NULL;
    skv_tokenizer_t *tok = NULL;
    skv_status_t status;
    SKV_CHECK_GOTO(skv_tok_parse(json, len, "tokenizer.json", &root), out);
    if (config != NULL) {
        SKV_CHECK_GOTO(skv_tok_parse(config, config_len, "tokenizer_config.json", &cfg), out);
    }
    SKV_CHECK_GOTO(skv_tok_alloc(&tok), out);
    SKV_CHECK_GOTO(skv_tok_load_json(tok, root, cfg), out);
    SKV_CHECK_GOTO(skv_tok_index_added(tok), out);
    *tok_p = tok;
    tok = NULL;
out:
    skv_tokenizer_destroy(tok);
    json_decref(cfg);
    json_decref(root);
    return status;
}

/* Reads a whole file into a new buffer (*len_p bytes, NUL-terminated). NOT_FOUND when absent. */
static skv_status_t skv_tok_read_file(const char *path, char **buf_p, size_t *len_p)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return errno == ENOENT ? SKV_STATUS_NOT_FOUND : SKV_STATUS_IO;
    }
    skv_status_t status = SKV_STATUS_OK;
    char *buf = NULL;
    long size = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) {
        SKV_LOG_ERROR("%s: cannot read: %s", path, strerror(errno));
        status = SKV_STATUS_IO;
        goto out;
    }
    buf = skv_malloc((size_t)size + 1);
    if (buf == NULL) {
        SKV_LOG_ERROR("%s: no memory for %ld bytes", path, size);
        status = SKV_STATUS_NO_MEMORY;
        goto out;
    }
    if (fread(buf, 1, (size_t)size, f) != (size_t)size) {
        SKV_LOG_ERROR("%s: short read", path);
        status = SKV_STATUS_IO;
        goto out;
    }
    buf[size] = '\0';
    *buf_p = buf;
    *len_p = (size_t)size;
    buf = NULL;
out:
    skv_free(buf);
    fclose(f);
    return status;
}

/* Works out the tokenizer.json and tokenizer_config.json paths from a directory or a file. */
static skv_status_t skv_tok_paths(const char *path, char **json_p, char **config_p)
{
    struct stat st;
    int is_dir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    const char *slash = strrchr(path, '/');
    size_t dir_len = is_dir ? strlen(path) : (slash ? (size_t)(slash - path) : 0);
    size_t cap = strlen(path) + 32;
    *json_p = skv_malloc(cap);
    *config_p = skv_malloc(cap);
    if (*json_p == NULL || *config_p == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for paths");
        return SKV_STATUS_NO_MEMORY;
    }
    if (is_dir) {
        snprintf(*json_p, cap, "%s/tokenizer.json", path);
    } else {
        snprintf(*json_p, cap, "%s", path);
    }
    snprintf(*config_p, cap, "%.*s%stokenizer_config.json", (int)dir_len, path,
             dir_len > 0 || slash ? "/" : "");
    return SKV_STATUS_OK;
}

skv_status_t skv_tokenizer_load(const char *model_dir_or_file, skv_tokenizer_t **tok_p)
{
    char *json_path = NULL, *config_path = NULL, *json = NULL, *config = NULL;
    size_t json_len = 0, config_len = 0;
    skv_status_t status;
    SKV_CHECK_GOTO(skv_tok_paths(model_dir_or_file, &json_path, &config_path), out);
    status = skv_tok_read_file(json_path, &json, &json_len);
    if (status != SKV_STATUS_OK) {
        SKV_LOG_ERROR("tokenizer: cannot load %s (%s)", json_path, skv_status_str(status));
        goto out;
    }
    status = skv_tok_read_file(config_path, &config, &config_len);
    if (status != SKV_STATUS_OK && status != SKV_STATUS_NOT_FOUND) {
        SKV_LOG_ERROR("tokenizer: cannot load %s (%s)", config_path, skv_status_str(status));
        goto out;
    }
    status = skv_tokenizer_load_mem(json, json_len, config, config_len, tok_p);
out:
    skv_free(config);
    skv_free(json);
    skv_free(config_path);
    skv_free(json_path);
    return status;
}

/* ---- lookups -------------------------------------------------------------------------- */

size_t skv_tokenizer_n_vocab(const skv_tokenizer_t *tok)
{
    return tok->n_ids;
}

int32_t skv_tokenizer_bos_id(const skv_tokenizer_t *tok)
{
    return tok->bos_id;
}

int32_t skv_tokenizer_eos_id(const skv_tokenizer_t *tok)
{
    return tok->eos_id;
}

int skv_tokenizer_is_special(const skv_tokenizer_t *tok, int32_t id)
{
    return id >= 0 && (size_t)id < tok->n_ids && (tok->tok_flags[id] & SKV_TOK_F_SPECIAL);
}

skv_status_t skv_tokenizer_token_id(const skv_tokenizer_t *tok, const char *token, int32_t *id_p)
{
    size_t len = strlen(token);
    for (size_t i = 0; i < tok->n_added; i++) {
        if (tok->added[i].len == len && memcmp(tok->added[i].content, token, len) == 0) {
            *id_p = tok->added[i].id;
            return SKV_STATUS_OK;
        }
    }
    char *buf = skv_malloc(len + 1);
    if (buf == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory to look up a %zu-byte token", len);
        return SKV_STATUS_NO_MEMORY;
    }
    long n = skv_tok_bytelevel_unmap(token, len, buf);
    int32_t id = n >= 0 ? skv_tok_strmap_get(&tok->bytes_map, buf, (size_t)n) : -1;
    skv_free(buf);
    for (size_t i = 0; id < 0 && n < 0 && i < tok->n_ids; i++) { /* rare non-byte-level entries */
        if ((tok->tok_flags[i] & SKV_TOK_F_RAW) && tok->vocab_len[i] == len &&
            memcmp(tok->vocab_bytes[i], token, len) == 0) {
            id = (int32_t)i;
        }
    }
    if (id < 0) {
        return SKV_STATUS_NOT_FOUND;
    }
    *id_p = id;
    return SKV_STATUS_OK;
}

/* ---- encode --------------------------------------------------------------------------- */

/* State of one encode call. */
typedef struct {
    const skv_tokenizer_t *tok;
    int parse_special;
    skv_tok_ids_t out;
    skv_tok_bpe_ws_t ws;
    pcre2_match_data *md;
    char *buf; /* piece with its prefix space */
    size_t buf_cap;
} skv_tok_enc_t;

typedef skv_status_t (*skv_tok_piece_fn)(skv_tok_enc_t *e, const char *s, size_t len, int stage);

/* Finds the next match of re in s[0..len) at or after *pos; returns 1 with [*ms, *me) or 0. */
static skv_status_t skv_tok_re_next(skv_tok_enc_t *e, const pcre2_code *re, const char *s,
                                    size_t len, size_t pos, size_t *ms, size_t *me, int *found)
{
    int rc = pcre2_match(re, (PCRE2_SPTR)s, len, pos, PCRE2_NO_UTF_CHECK, e->md, NULL);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) { /* pathological input: the interpreter uses heap */
        rc = pcre2_match(re, (PCRE2_SPTR)s, len, pos, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, e->md,
                         NULL);
    }
    if (rc == PCRE2_ERROR_NOMATCH) {
        *found = 0;
        return SKV_STATUS_OK;
    }
    if (rc < 0) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(rc, msg, sizeof(msg));
        SKV_LOG_ERROR("tokenizer: regex match failed on a %zu-byte piece: %s", len,
                      (const char *)msg);
        return rc == PCRE2_ERROR_NOMEMORY ? SKV_STATUS_NO_MEMORY : SKV_STATUS_INTERNAL;
    }
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
    *ms = ov[0];
    *me = ov[1];
    *found = 1;
    return SKV_STATUS_OK;
}

/* Returns the byte length of the UTF-8 character starting with byte c. */
static size_t skv_tok_utf8_len(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

/* Splits s with re (behavior Isolated: matches and the gaps between them are pieces) and
 * hands every non-empty piece to fn at stage. Empty matches are skipped, one character on. */
static skv_status_t skv_tok_split(skv_tok_enc_t *e, const pcre2_code *re, const char *s, size_t len,
                                  skv_tok_piece_fn fn, int stage)
{
    size_t pos = 0, prev = 0, ms, me;
    int found;
    while (pos < len) {
        SKV_CHECK(skv_tok_re_next(e, re, s, len, pos, &ms, &me, &found));
        if (!found) {
            break;
        }
        if (me == ms) {
            pos = ms + skv_tok_utf8_len((unsigned char)s[ms]);
            continue;
        }
        if (ms > prev) {
            SKV_CHECK(fn(e, s + prev, ms - prev, stage));
        }
        SKV_CHECK(fn(e, s + ms, me - ms, stage));
        prev = pos = me;
    }
    return prev < len ? fn(e, s + prev, len - prev, stage) : SKV_STATUS_OK;
}

/* BPE on one final piece (a callback of the ByteLevel regex split). */
static skv_status_t skv_tok_bpe_piece(skv_tok_enc_t *e, const char *s, size_t len, int stage)
{
    return skv_tok_bpe_word(e->tok, &e->ws, s, len, &e->out);
}

/* ByteLevel stage: optional prefix space, optional GPT-2 split, then BPE. */
static skv_status_t skv_tok_bytelevel_piece(skv_tok_enc_t *e, const char *s, size_t len)
{
    if (e->tok->add_prefix_space && s[0] != ' ') {
        if (len + 1 > e->buf_cap) {
            char *buf = skv_realloc(e->buf, 2 * len + 64);
            if (buf == NULL) {
                SKV_LOG_ERROR("tokenizer: no memory for a %zu-byte piece", len);
                return SKV_STATUS_NO_MEMORY;
            }
            e->buf = buf;
            e->buf_cap = 2 * len + 64;
        }
        e->buf[0] = ' ';
        memcpy(e->buf + 1, s, len);
        s = e->buf;
        len++;
    }
    if (e->tok->bytelevel_re != NULL) {
        return skv_tok_split(e, e->tok->bytelevel_re, s, len, skv_tok_bpe_piece, 0);
    }
    return skv_tok_bpe_word(e->tok, &e->ws, s, len, &e->out);
}

/* Pre-tokenizer stage `stage` (0..n_split-1: Split regexes; n_split: ByteLevel). */
static skv_status_t skv_tok_pretok_piece(skv_tok_enc_t *e, const char *s, size_t len, int stage)
{
    if ((size_t)stage < e->tok->n_split) {
        return skv_tok_split(e, e->tok->split_re[stage], s, len, skv_tok_pretok_piece, stage + 1);
    }
    return skv_tok_bytelevel_piece(e, s, len);
}

/* Returns the added token matching at s[0..len) (longest first) for this pass, or NULL. */
static const skv_tok_added_t *skv_tok_added_at(const skv_tok_enc_t *e, const char *s, size_t len,
                                               int normalized)
{
    const skv_tokenizer_t *tok = e->tok;
    unsigned char b = (unsigned char)s[0];
    for (uint32_t k = tok->added_begin[b]; k < tok->added_begin[b + 1]; k++) {
        const skv_tok_added_t *a = &tok->added[tok->added_order[k]];
        if (a->normalized == normalized && (e->parse_special || !a->special) && a->len <= len &&
            memcmp(a->content, s, a->len) == 0) {
            return a;
        }
    }
    return NULL;
}

/* Splits out added tokens of one pass (0: normalized=false, 1: normalized=true); the gaps go
 * to the next pass, then to the pre-tokenizer. */
static skv_status_t skv_tok_added_piece(skv_tok_enc_t *e, const char *s, size_t len, int pass)
{
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        const skv_tok_added_t *a;
        if (!e->tok->added_first[(unsigned char)s[i]] ||
            (a = skv_tok_added_at(e, s + i, len - i, pass)) == NULL) {
            continue;
        }
        if (i > start) {
            SKV_CHECK(pass == 0 ? skv_tok_added_piece(e, s + start, i - start, 1)
                                : skv_tok_pretok_piece(e, s + start, i - start, 0));
        }
        SKV_CHECK(skv_tok_ids_push(&e->out, a->id));
        start = i + a->len;
        i = start - 1;
    }
    if (start >= len) {
        return SKV_STATUS_OK;
    }
    return pass == 0 ? skv_tok_added_piece(e, s + start, len - start, 1)
                     : skv_tok_pretok_piece(e, s + start, len - start, 0);
}

/* Appends n ids. */
static skv_status_t skv_tok_push_all(skv_tok_ids_t *v, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        SKV_CHECK(skv_tok_ids_push(v, ids[i]));
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_tokenizer_encode(const skv_tokenizer_t *tok, const char *text, size_t len,
                                  unsigned flags, int32_t **ids_p, size_t *n_p)
{
    skv_tok_enc_t e = {.tok = tok, .parse_special = !!(flags & SKV_TOKENIZER_ENCODE_PARSE_SPECIAL)};
    skv_status_t status = SKV_STATUS_OK;
    size_t bad = skv_tok_utf8_check(text, len);
    if (bad != len) {
        SKV_LOG_ERROR("tokenizer: text is not valid UTF-8 (byte 0x%02x at offset %zu of %zu)",
                      (unsigned char)text[bad], bad, len);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    e.md = pcre2_match_data_create(1, tok->pcre_gctx);
    if (e.md == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for regex match data");
        return SKV_STATUS_NO_MEMORY;
    }
    if (flags & SKV_TOKENIZER_ENCODE_ADD_BOS) {
        SKV_CHECK_GOTO(skv_tok_push_all(&e.out, tok->post_prefix, tok->n_post_prefix), out);
    }
    if (len > 0) {
        SKV_CHECK_GOTO(skv_tok_added_piece(&e, text, len, 0), out);
    }
    if (flags & SKV_TOKENIZER_ENCODE_ADD_BOS) {
        SKV_CHECK_GOTO(skv_tok_push_all(&e.out, tok->post_suffix, tok->n_post_suffix), out);
    }
    if (e.out.ids == NULL) { /* promised non-NULL even when empty */
        SKV_CHECK_GOTO(skv_tok_ids_push(&e.out, 0), out);
        e.out.n = 0;
    }
    *ids_p = e.out.ids;
    *n_p = e.out.n;
    e.out.ids = NULL;
out:
    skv_free(e.out.ids);
    skv_free(e.buf);
    skv_tok_bpe_ws_cleanup(&e.ws);
    pcre2_match_data_free(e.md);
    return status;
}
