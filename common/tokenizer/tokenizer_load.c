/*
 * tokenizer_load.c: builds a tokenizer from the parsed tokenizer.json and tokenizer_config.json.
 *
 * Reads the BPE model (vocab, merges as "a b" strings or ["a", "b"] pairs, unk/fuse_unk,
 * ignore_merges), added_tokens, pre_tokenizer, post_processor, decoder and the config's
 * bos/eos tokens and chat_template. Every field is type-checked: a wrong type is FORMAT, an
 * unimplemented feature UNSUPPORTED, each logged once here with the field path. The JSON tree
 * is borrowed; everything kept is copied into the tokenizer.
 */
#include <jansson.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "common/tokenizer/tokenizer_internal.h"

#define SKV_TOK_MAX_ID 0x7FFFFFF0 /* ids are int32 and id + 1 must fit */

/* Returns member key of obj, or NULL when absent or JSON null. */
static json_t *skv_tok_member(const json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_null(v) ? NULL : v;
}

/* Reads an optional boolean field (default def). */
static skv_status_t skv_tok_get_bool(const json_t *obj, const char *key, const char *where, int def,
                                     int *out_p)
{
    json_t *v = skv_tok_member(obj, key);
    if (v == NULL) {
        *out_p = def;
        return SKV_STATUS_OK;
    }
    if (!json_is_boolean(v)) {
        SKV_LOG_ERROR("tokenizer.json: %s.%s must be true or false", where, key);
        return SKV_STATUS_FORMAT;
    }
    *out_p = json_is_true(v);
    return SKV_STATUS_OK;
}

/* Reads an optional string field; *out_p is NULL when absent. */
static skv_status_t skv_tok_get_str(const json_t *obj, const char *key, const char *where,
                                    const char **out_p)
{
    json_t *v = skv_tok_member(obj, key);
    if (v != NULL && !json_is_string(v)) {
        SKV_LOG_ERROR("tokenizer.json: %s.%s must be a string", where, key);
        return SKV_STATUS_FORMAT;
    }
    *out_p = v ? json_string_value(v) : NULL;
    return SKV_STATUS_OK;
}

/* Reads a token id from a JSON integer. */
static skv_status_t skv_tok_get_id(const json_t *v, const char *where, int32_t *id_p)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        json_integer_value(v) > SKV_TOK_MAX_ID) {
        SKV_LOG_ERROR("tokenizer.json: %s must be a token id (integer 0..%d)", where,
                      SKV_TOK_MAX_ID);
        return SKV_STATUS_FORMAT;
    }
    *id_p = (int32_t)json_integer_value(v);
    return SKV_STATUS_OK;
}

/* Checks obj.type == one of the names in the NULL-terminated list; returns its index. */
static skv_status_t skv_tok_get_type(const json_t *obj, const char *where, const char *const *names,
                                     int *which_p)
{
    if (!json_is_object(obj)) {
        SKV_LOG_ERROR("tokenizer.json: %s must be an object", where);
        return SKV_STATUS_FORMAT;
    }
    const char *type;
    SKV_CHECK(skv_tok_get_str(obj, "type", where, &type));
    if (type == NULL) {
        SKV_LOG_ERROR("tokenizer.json: %s.type is missing", where);
        return SKV_STATUS_FORMAT;
    }
    for (int i = 0; names[i] != NULL; i++) {
        if (strcmp(type, names[i]) == 0) {
            *which_p = i;
            return SKV_STATUS_OK;
        }
    }
    SKV_LOG_ERROR("tokenizer.json: %s.type '%s' is not supported", where, type);
    return SKV_STATUS_UNSUPPORTED;
}

/* ---- ids table ------------------------------------------------------------------------ */

/* Finds the largest id in model.vocab and added_tokens, and the total bytes of the vocabulary's
 * keys (an upper bound of what the arena needs), in one pass over the vocabulary. */
static skv_status_t skv_tok_max_id(const json_t *vocab, const json_t *added, int32_t *max_p,
                                   size_t *key_bytes_p)
{
    int32_t max = -1, id;
    size_t key_bytes = 1;
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)vocab, key, v)
    {
        SKV_CHECK(skv_tok_get_id(v, "model.vocab value", &id));
        max = id > max ? id : max;
        key_bytes += strlen(key);
    }
    size_t i;
    json_array_foreach(added, i, v)
    {
        SKV_CHECK(skv_tok_get_id(json_object_get(v, "id"), "added_tokens[].id", &id));
        max = id > max ? id : max;
    }
    *max_p = max;
    *key_bytes_p = key_bytes;
    return SKV_STATUS_OK;
}

/* Allocates the per-id arrays for ids 0..max_id and the vocabulary arena. */
static skv_status_t skv_tok_alloc_ids(skv_tokenizer_t *tok, int32_t max_id, size_t arena_bytes)
{
    tok->n_ids = (size_t)max_id + 1;
    tok->vocab_bytes = skv_calloc(tok->n_ids, sizeof(*tok->vocab_bytes));
    tok->vocab_len = skv_calloc(tok->n_ids, sizeof(*tok->vocab_len));
    tok->tok_bytes = skv_calloc(tok->n_ids, sizeof(*tok->tok_bytes));
    tok->tok_len = skv_calloc(tok->n_ids, sizeof(*tok->tok_len));
    tok->tok_flags = skv_calloc(tok->n_ids, sizeof(*tok->tok_flags));
    tok->arena = skv_malloc(arena_bytes);
    if (!tok->vocab_bytes || !tok->vocab_len || !tok->tok_bytes || !tok->tok_len ||
        !tok->tok_flags || !tok->arena) {
        SKV_LOG_ERROR("tokenizer: no memory for %zu ids", tok->n_ids);
        return SKV_STATUS_NO_MEMORY;
    }
    return SKV_STATUS_OK;
}

/* Writes the bytes token string s stands for into dst (len bytes at most) and returns their
 * count; *raw_p = 1 when s is not a byte-level spelling, which HF's decoder passes through as
 * UTF-8. */
static size_t skv_tok_unmap_or_copy(const char *s, size_t len, char *dst, int *raw_p)
{
    long n = skv_tok_bytelevel_unmap(s, len, dst);
    *raw_p = n < 0;
    if (n < 0) {
        memcpy(dst, s, len);
        n = (long)len;
    }
    return (size_t)n;
}

/* Reads model.vocab into the id table and the byte map. */
static skv_status_t skv_tok_load_vocab(skv_tokenizer_t *tok, const json_t *vocab)
{
    const char *key;
    json_t *v;
    size_t off = 0, n_batch = 0;
    int32_t batch[SKV_TOK_BATCH_MAX];
    json_object_foreach((json_t *)vocab, key, v)
    {
        int32_t id = (int32_t)json_integer_value(v);
        int raw;
        if (tok->vocab_bytes[id] != NULL) {
            SKV_LOG_ERROR("tokenizer.json: model.vocab gives id %d to two tokens ('%s')", id, key);
            return SKV_STATUS_FORMAT;
        }
        tok->vocab_bytes[id] = tok->tok_bytes[id] = tok->arena + off;
        tok->vocab_len[id] = tok->tok_len[id] =
            (uint32_t)skv_tok_unmap_or_copy(key, strlen(key), tok->arena + off, &raw);
        off += tok->vocab_len[id];
        if (raw) {
            tok->tok_flags[id] |= SKV_TOK_F_RAW;
            continue;
        }
        batch[n_batch++] = id;
        if (n_batch == SKV_TOK_BATCH_MAX) {
            skv_tok_strmap_put_batch(&tok->bytes_map, n_batch, batch);
            n_batch = 0;
        }
    }
    skv_tok_strmap_put_batch(&tok->bytes_map, n_batch, batch);
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        tok->byte_id[b] = skv_tok_strmap_get(&tok->bytes_map, &c, 1);
    }
    return SKV_STATUS_OK;
}

/* Splits merge entry m (a "a b" string or an ["a", "b"] pair) into its two operands. */
static skv_status_t skv_tok_merge_parts(const json_t *m, size_t i, const char **a, size_t *la,
                                        const char **b, size_t *lb)
{
    if (json_is_string(m)) {
        const char *s = json_string_value(m);
        const char *sp = strchr(s, ' ');
        if (sp == NULL || strchr(sp + 1, ' ') != NULL) {
            SKV_LOG_ERROR("tokenizer.json: model.merges[%zu] '%s' must be two tokens separated "
                          "by one space",
                          i, s);
            return SKV_STATUS_FORMAT;
        }
        *a = s, *la = (size_t)(sp - s), *b = sp + 1, *lb = strlen(sp + 1);
        return SKV_STATUS_OK;
    }
    if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
        json_is_string(json_array_get(m, 1))) {
        *a = json_string_value(json_array_get(m, 0));
        *b = json_string_value(json_array_get(m, 1));
        *la = json_string_length(json_array_get(m, 0));
        *lb = json_string_length(json_array_get(m, 1));
        return SKV_STATUS_OK;
    }
    SKV_LOG_ERROR("tokenizer.json: model.merges[%zu] must be a \"a b\" string or a pair of "
                  "strings",
                  i);
    return SKV_STATUS_FORMAT;
}

/* Merges are resolved SKV_TOK_MERGE_BATCH at a time: 3 lookups each (a, b, a+b) in one batch. */
#define SKV_TOK_MERGE_BATCH (SKV_TOK_BATCH_MAX / 3)

/* A batch of merges being resolved; key k of merge j is keys[3 j + k] (a, b, a+b). */
typedef struct {
    const char *keys[SKV_TOK_BATCH_MAX];
    size_t lens[SKV_TOK_BATCH_MAX];
    int32_t ids[SKV_TOK_BATCH_MAX];
    int usable[SKV_TOK_MERGE_BATCH]; /* 0: an operand is not a byte-level spelling */
    const char *a[SKV_TOK_MERGE_BATCH], *b[SKV_TOK_MERGE_BATCH];
    size_t la[SKV_TOK_MERGE_BATCH], lb[SKV_TOK_MERGE_BATCH];
    size_t n;
    char *buf; /* unmapped bytes; a's bytes then b's, so a+b is one span */
    size_t buf_cap;
} skv_tok_merge_batch_t;

/* Adds merge i to the batch: unmaps both operands into the batch buffer. */
static skv_status_t skv_tok_batch_add(skv_tok_merge_batch_t *mb, const json_t *m, size_t i,
                                      size_t *off)
{
    size_t j = mb->n++;
    SKV_CHECK(skv_tok_merge_parts(m, i, &mb->a[j], &mb->la[j], &mb->b[j], &mb->lb[j]));
    char *pa = mb->buf + *off;
    long na = skv_tok_bytelevel_unmap(mb->a[j], mb->la[j], pa);
    long nb = na < 0 ? -1 : skv_tok_bytelevel_unmap(mb->b[j], mb->lb[j], pa + na);
    mb->usable[j] = nb >= 0; /* else: operands that byte-level text never produces */
    if (nb < 0) {
        na = nb = 0;
    }
    mb->keys[3 * j] = pa, mb->lens[3 * j] = (size_t)na;
    mb->keys[3 * j + 1] = pa + na, mb->lens[3 * j + 1] = (size_t)nb;
    mb->keys[3 * j + 2] = pa, mb->lens[3 * j + 2] = (size_t)(na + nb);
    *off += (size_t)(na + nb);
    return SKV_STATUS_OK;
}

/* Resolves the batch (merges first..first+n-1) and records the merges. */
static skv_status_t skv_tok_batch_flush(skv_tokenizer_t *tok, skv_tok_merge_batch_t *mb,
                                        size_t first)
{
    skv_tok_strmap_get_batch(&tok->bytes_map, 3 * mb->n, mb->keys, mb->lens, mb->ids);
    for (size_t j = 0; j < mb->n; j++) {
        const int32_t *id = &mb->ids[3 * j];
        if (!mb->usable[j]) {
            continue;
        }
        if (id[0] < 0 || id[1] < 0) {
            SKV_LOG_ERROR("tokenizer.json: model.merges[%zu] uses '%.*s' which is not in "
                          "model.vocab",
                          first + j, (int)(id[0] < 0 ? mb->la[j] : mb->lb[j]),
                          id[0] < 0 ? mb->a[j] : mb->b[j]);
            return SKV_STATUS_FORMAT;
        }
        if (id[2] < 0) {
            SKV_LOG_ERROR("tokenizer.json: model.merges[%zu] ('%.*s' '%.*s') makes a token that "
                          "is not in model.vocab",
                          first + j, (int)mb->la[j], mb->a[j], (int)mb->lb[j], mb->b[j]);
            return SKV_STATUS_FORMAT;
        }
        skv_tok_pairmap_prefetch(&tok->merges, id[0], id[1]);
    }
    for (size_t j = 0; j < mb->n; j++) {
        if (mb->usable[j]) {
            skv_tok_pairmap_put(&tok->merges, mb->ids[3 * j], mb->ids[3 * j + 1],
                                (uint32_t)(first + j), mb->ids[3 * j + 2]);
        }
    }
    mb->n = 0;
    return SKV_STATUS_OK;
}

/* Makes the batch buffer hold need more bytes after off. */
static skv_status_t skv_tok_batch_reserve(skv_tok_merge_batch_t *mb, size_t need)
{
    if (need <= mb->buf_cap) {
        return SKV_STATUS_OK;
    }
    size_t cap = 2 * need + 4096;
    char *buf = skv_realloc(mb->buf, cap);
    if (buf == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for merges");
        return SKV_STATUS_NO_MEMORY;
    }
    if (buf != mb->buf) { /* re-point the keys already in the batch */
        for (size_t k = 0; k < 3 * mb->n; k++) {
            mb->keys[k] = buf + (mb->keys[k] - mb->buf);
        }
    }
    mb->buf = buf;
    mb->buf_cap = cap;
    return SKV_STATUS_OK;
}

/* Reads model.merges into the pair map; rank = position in the list. */
static skv_status_t skv_tok_load_merges(skv_tokenizer_t *tok, const json_t *merges)
{
    skv_tok_merge_batch_t mb = {0};
    skv_status_t status = SKV_STATUS_OK;
    size_t i, off = 0;
    json_t *m;
    json_array_foreach(merges, i, m)
    {
        /* The JSON nodes are scattered on the heap: start loading a later entry and the text
         * of a nearer one (load time is memory bound). */
        __builtin_prefetch(json_array_get(merges, i + 2 * SKV_TOK_MERGE_BATCH));
        const char *ahead = json_string_value(json_array_get(merges, i + SKV_TOK_MERGE_BATCH));
        if (ahead != NULL) {
            __builtin_prefetch(ahead);
        }
        /* An operand's bytes are never more than its spelling's. */
        size_t need = json_is_string(m) ? json_string_length(m)
                                        : json_string_length(json_array_get(m, 0)) +
                                              json_string_length(json_array_get(m, 1));
        SKV_CHECK_GOTO(skv_tok_batch_reserve(&mb, off + need), out);
        SKV_CHECK_GOTO(skv_tok_batch_add(&mb, m, i, &off), out);
        if (mb.n == SKV_TOK_MERGE_BATCH) {
            SKV_CHECK_GOTO(skv_tok_batch_flush(tok, &mb, i + 1 - mb.n), out);
            off = 0;
        }
    }
    if (mb.n > 0) {
        SKV_CHECK_GOTO(skv_tok_batch_flush(tok, &mb, json_array_size(merges) - mb.n), out);
    }
out:
    skv_free(mb.buf);
    return status;
}

/* Reads the scalar options of the BPE model. */
static skv_status_t skv_tok_load_bpe_options(skv_tokenizer_t *tok, const json_t *model)
{
    json_t *dropout = skv_tok_member(model, "dropout");
    if (dropout != NULL && !(json_is_number(dropout) && json_number_value(dropout) == 0.0)) {
        SKV_LOG_ERROR("tokenizer.json: model.dropout is not supported (must be null)");
        return SKV_STATUS_UNSUPPORTED;
    }
    static const char *const unsupported_str[] = {"continuing_subword_prefix",
                                                  "end_of_word_suffix"};
    for (size_t i = 0; i < 2; i++) {
        const char *s;
        SKV_CHECK(skv_tok_get_str(model, unsupported_str[i], "model", &s));
        if (s != NULL && s[0] != '\0') {
            SKV_LOG_ERROR("tokenizer.json: model.%s is not supported", unsupported_str[i]);
            return SKV_STATUS_UNSUPPORTED;
        }
    }
    int byte_fallback;
    SKV_CHECK(skv_tok_get_bool(model, "byte_fallback", "model", 0, &byte_fallback));
    if (byte_fallback) {
        SKV_LOG_ERROR("tokenizer.json: model.byte_fallback is not supported (not byte-level BPE)");
        return SKV_STATUS_UNSUPPORTED;
    }
    SKV_CHECK(skv_tok_get_bool(model, "fuse_unk", "model", 0, &tok->fuse_unk));
    SKV_CHECK(skv_tok_get_bool(model, "ignore_merges", "model", 0, &tok->ignore_merges));
    return SKV_STATUS_OK;
}

/* Reads model.unk_token (optional) once the vocabulary is loaded. */
static skv_status_t skv_tok_load_unk(skv_tokenizer_t *tok, const json_t *model)
{
    const char *unk;
    tok->unk_id = -1;
    SKV_CHECK(skv_tok_get_str(model, "unk_token", "model", &unk));
    skv_status_t st = unk ? skv_tokenizer_token_id(tok, unk, &tok->unk_id) : SKV_STATUS_OK;
    if (st == SKV_STATUS_NOT_FOUND) {
        SKV_LOG_ERROR("tokenizer.json: model.unk_token '%s' is not in model.vocab", unk);
        return SKV_STATUS_FORMAT;
    }
    return st;
}

/* Checks the model object and returns its vocab and merges. */
static skv_status_t skv_tok_model_parts(const json_t *root, json_t **model_p, json_t **vocab_p,
                                        json_t **merges_p)
{
    static const char *const types[] = {"BPE", NULL};
    json_t *model = skv_tok_member(root, "model");
    int which;
    if (model == NULL) {
        SKV_LOG_ERROR("tokenizer.json: 'model' is missing");
        return SKV_STATUS_FORMAT;
    }
    SKV_CHECK(skv_tok_get_type(model, "model", types, &which));
    *vocab_p = json_object_get(model, "vocab");
    *merges_p = json_object_get(model, "merges");
    if (!json_is_object(*vocab_p)) {
        SKV_LOG_ERROR("tokenizer.json: model.vocab must be an object");
        return SKV_STATUS_FORMAT;
    }
    if (!json_is_array(*merges_p)) {
        SKV_LOG_ERROR("tokenizer.json: model.merges must be an array");
        return SKV_STATUS_FORMAT;
    }
    *model_p = model;
    return SKV_STATUS_OK;
}

/* ---- added tokens --------------------------------------------------------------------- */

/* Reads one added_tokens entry into a. */
static skv_status_t skv_tok_load_added_one(skv_tokenizer_t *tok, const json_t *e,
                                           skv_tok_added_t *a)
{
    const char *content;
    int single_word;
    if (!json_is_object(e)) {
        SKV_LOG_ERROR("tokenizer.json: added_tokens[] entries must be objects");
        return SKV_STATUS_FORMAT;
    }
    SKV_CHECK(skv_tok_get_id(json_object_get(e, "id"), "added_tokens[].id", &a->id));
    SKV_CHECK(skv_tok_get_str(e, "content", "added_tokens[]", &content));
    SKV_CHECK(skv_tok_get_bool(e, "special", "added_tokens[]", 0, &a->special));
    SKV_CHECK(skv_tok_get_bool(e, "lstrip", "added_tokens[]", 0, &a->lstrip));
    SKV_CHECK(skv_tok_get_bool(e, "rstrip", "added_tokens[]", 0, &a->rstrip));
    SKV_CHECK(skv_tok_get_bool(e, "single_word", "added_tokens[]", 0, &single_word));
    SKV_CHECK(skv_tok_get_bool(e, "normalized", "added_tokens[]", !a->special, &a->normalized));
    if (content == NULL || content[0] == '\0') {
        SKV_LOG_ERROR("tokenizer.json: added_tokens[] id %d has no content", a->id);
        return SKV_STATUS_FORMAT;
    }
    if (single_word || a->lstrip || a->rstrip) {
        SKV_LOG_ERROR("tokenizer.json: added_tokens[] '%s': single_word/lstrip/rstrip are not "
                      "supported",
                      content);
        return SKV_STATUS_UNSUPPORTED;
    }
    a->len = json_string_length(json_object_get(e, "content"));
    a->content = skv_strndup(content, a->len);
    if (a->content == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for added token '%s'", content);
        return SKV_STATUS_NO_MEMORY;
    }
    return SKV_STATUS_OK;
}

/* Reads added_tokens; each id's decode bytes become the token's content (decoder rule). */
static skv_status_t skv_tok_load_added(skv_tokenizer_t *tok, const json_t *added)
{
    size_t n = json_array_size(added), i;
    json_t *e;
    tok->added = skv_calloc(n, sizeof(*tok->added));
    if (tok->added == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for %zu added tokens", n);
        return SKV_STATUS_NO_MEMORY;
    }
    json_array_foreach(added, i, e)
    {
        skv_tok_added_t *a = &tok->added[i];
        SKV_CHECK(skv_tok_load_added_one(tok, e, a));
        tok->n_added++;
        /* Decode bytes: what HF's ByteLevel decoder makes of the content. */
        int raw;
        a->dec = skv_malloc(a->len);
        if (a->dec == NULL) {
            SKV_LOG_ERROR("tokenizer: no memory for added token '%s'", a->content);
            return SKV_STATUS_NO_MEMORY;
        }
        tok->tok_bytes[a->id] = a->dec;
        tok->tok_len[a->id] = (uint32_t)skv_tok_unmap_or_copy(a->content, a->len, a->dec, &raw);
        tok->tok_flags[a->id] |= SKV_TOK_F_ADDED | (a->special ? SKV_TOK_F_SPECIAL : 0);
        tok->added_first[(unsigned char)a->content[0]] = 1;
    }
    return SKV_STATUS_OK;
}

/* ---- pre-tokenizer -------------------------------------------------------------------- */

/* GPT-2's split regex, used by ByteLevel when use_regex is true (HF tokenizers' copy). */
static const char skv_tok_gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Compiles a split regex (UTF + UCP; JIT when the library has it). */
static skv_status_t skv_tok_compile(skv_tokenizer_t *tok, const char *pattern, size_t len,
                                    uint32_t extra, pcre2_code **re_p)
{
    int err;
    PCRE2_SIZE err_off;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, len, PCRE2_UTF | PCRE2_UCP | extra, &err,
                                   &err_off, tok->pcre_cctx);
    if (re == NULL) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof(msg));
        SKV_LOG_ERROR("tokenizer.json: pre_tokenizer regex '%.*s' does not compile at offset "
                      "%zu: %s",
                      (int)len, pattern, (size_t)err_off, (const char *)msg);
        return err == PCRE2_ERROR_HEAP_FAILED ? SKV_STATUS_NO_MEMORY : SKV_STATUS_UNSUPPORTED;
    }
    tok->jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    *re_p = re;
    return SKV_STATUS_OK;
}

/* Reads a Split pre-tokenizer (pattern Regex/String, behavior Isolated, invert false). */
static skv_status_t skv_tok_load_split(skv_tokenizer_t *tok, const json_t *pt)
{
    const char *behavior, *re = NULL, *lit = NULL;
    int invert;
    json_t *pattern = json_object_get(pt, "pattern");
    SKV_CHECK(skv_tok_get_str(pt, "behavior", "pre_tokenizer.Split", &behavior));
    SKV_CHECK(skv_tok_get_bool(pt, "invert", "pre_tokenizer.Split", 0, &invert));
    if (behavior == NULL || strcmp(behavior, "Isolated") != 0 || invert) {
        SKV_LOG_ERROR("tokenizer.json: pre_tokenizer.Split.behavior '%s' (invert %d) is not "
                      "supported (only Isolated, invert false)",
                      behavior ? behavior : "", invert);
        return SKV_STATUS_UNSUPPORTED;
    }
    if (!json_is_object(pattern)) {
        SKV_LOG_ERROR("tokenizer.json: pre_tokenizer.Split.pattern must be an object");
        return SKV_STATUS_FORMAT;
    }
    SKV_CHECK(skv_tok_get_str(pattern, "Regex", "pre_tokenizer.Split.pattern", &re));
    SKV_CHECK(skv_tok_get_str(pattern, "String", "pre_tokenizer.Split.pattern", &lit));
    if ((re == NULL) == (lit == NULL)) {
        SKV_LOG_ERROR("tokenizer.json: pre_tokenizer.Split.pattern needs Regex or String");
        return SKV_STATUS_FORMAT;
    }
    if (tok->n_split == SKV_TOK_MAX_SPLITS) {
        SKV_LOG_ERROR("tokenizer.json: more than %d Split pre-tokenizers", SKV_TOK_MAX_SPLITS);
        return SKV_STATUS_UNSUPPORTED;
    }
    const char *p = re ? re : lit;
    SKV_CHECK(
        skv_tok_compile(tok, p, strlen(p), re ? 0 : PCRE2_LITERAL, &tok->split_re[tok->n_split]));
    tok->n_split++;
    return SKV_STATUS_OK;
}

/* Reads a ByteLevel pre-tokenizer. */
static skv_status_t skv_tok_load_bytelevel(skv_tokenizer_t *tok, const json_t *pt)
{
    int use_regex;
    SKV_CHECK(skv_tok_get_bool(pt, "add_prefix_space", "pre_tokenizer.ByteLevel", 1,
                               &tok->add_prefix_space));
    SKV_CHECK(skv_tok_get_bool(pt, "use_regex", "pre_tokenizer.ByteLevel", 1, &use_regex));
    if (use_regex) {
        SKV_CHECK(skv_tok_compile(tok, skv_tok_gpt2_regex, sizeof(skv_tok_gpt2_regex) - 1, 0,
                                  &tok->bytelevel_re));
    }
    return SKV_STATUS_OK;
}

/* Reads pre_tokenizer: ByteLevel, or Sequence[Split..., ByteLevel]. */
static skv_status_t skv_tok_load_pretok(skv_tokenizer_t *tok, const json_t *root)
{
    static const char *const top[] = {"ByteLevel", "Sequence", NULL};
    static const char *const inner[] = {"Split", "ByteLevel", NULL};
    json_t *pt = skv_tok_member(root, "pre_tokenizer");
    int which;
    if (pt == NULL) {
        SKV_LOG_ERROR("tokenizer.json: pre_tokenizer null is not supported (need ByteLevel)");
        return SKV_STATUS_UNSUPPORTED;
    }
    SKV_CHECK(skv_tok_get_type(pt, "pre_tokenizer", top, &which));
    if (which == 0) {
        return skv_tok_load_bytelevel(tok, pt);
    }
    json_t *list = json_object_get(pt, "pretokenizers"), *e;
    size_t n = json_array_size(list), i;
    if (!json_is_array(list) || n == 0) {
        SKV_LOG_ERROR("tokenizer.json: pre_tokenizer.pretokenizers must be a non-empty array");
        return SKV_STATUS_FORMAT;
    }
    json_array_foreach(list, i, e)
    {
        SKV_CHECK(skv_tok_get_type(e, "pre_tokenizer.pretokenizers[]", inner, &which));
        if ((which == 1) != (i == n - 1)) {
            SKV_LOG_ERROR("tokenizer.json: pre_tokenizer.pretokenizers must be Split entries "
                          "followed by one ByteLevel");
            return SKV_STATUS_UNSUPPORTED;
        }
        SKV_CHECK(which == 0 ? skv_tok_load_split(tok, e) : skv_tok_load_bytelevel(tok, e));
    }
    return SKV_STATUS_OK;
}

/* ---- post-processor, decoder, normalizer ---------------------------------------------- */

/* Appends the ids of template special token `name` to *v (n_p entries). */
static skv_status_t skv_tok_post_special(const json_t *specials, const char *name, int32_t **v,
                                         size_t *n_p)
{
    json_t *ids = json_object_get(json_object_get(specials, name), "ids"), *e;
    size_t i;
    if (!json_is_array(ids)) {
        SKV_LOG_ERROR("tokenizer.json: post_processor.special_tokens['%s'].ids is missing", name);
        return SKV_STATUS_FORMAT;
    }
    int32_t *grown = skv_realloc(*v, (*n_p + json_array_size(ids) + 1) * sizeof(**v));
    if (grown == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for the post-processor");
        return SKV_STATUS_NO_MEMORY;
    }
    *v = grown;
    json_array_foreach(ids, i, e)
    {
        SKV_CHECK(skv_tok_get_id(e, "post_processor.special_tokens[].ids[]", &grown[*n_p]));
        (*n_p)++;
    }
    return SKV_STATUS_OK;
}

/* Reads a TemplateProcessing's `single` template: tokens before and after $A. */
static skv_status_t skv_tok_load_template(skv_tokenizer_t *tok, const json_t *pp)
{
    json_t *single = json_object_get(pp, "single"),
           *specials = json_object_get(pp, "special_tokens");
    json_t *e;
    size_t i;
    int seen_a = 0;
    if (!json_is_array(single)) {
        SKV_LOG_ERROR("tokenizer.json: post_processor.single must be an array");
        return SKV_STATUS_FORMAT;
    }
    json_array_foreach(single, i, e)
    {
        json_t *sp = json_object_get(e, "SpecialToken"), *seq = json_object_get(e, "Sequence");
        const char *id = json_string_value(json_object_get(sp ? sp : seq, "id"));
        if (id == NULL || (sp == NULL) == (seq == NULL) || (seq && (strcmp(id, "A") || seen_a))) {
            SKV_LOG_ERROR("tokenizer.json: post_processor.single[%zu] must be a SpecialToken or "
                          "the one Sequence A",
                          i);
            return SKV_STATUS_FORMAT;
        }
        if (seq) {
            seen_a = 1;
            continue;
        }
        SKV_CHECK(seen_a
                      ? skv_tok_post_special(specials, id, &tok->post_suffix, &tok->n_post_suffix)
                      : skv_tok_post_special(specials, id, &tok->post_prefix, &tok->n_post_prefix));
    }
    return SKV_STATUS_OK;
}

/* Reads one post-processor (ByteLevel: no effect on ids; TemplateProcessing; Sequence). */
static skv_status_t skv_tok_load_post_one(skv_tokenizer_t *tok, const json_t *pp, int depth)
{
    static const char *const types[] = {"ByteLevel", "TemplateProcessing", "Sequence", NULL};
    int which;
    SKV_CHECK(skv_tok_get_type(pp, "post_processor", types, &which));
    if (which == 1) {
        if (tok->post_prefix != NULL || tok->post_suffix != NULL) {
            SKV_LOG_ERROR("tokenizer.json: more than one TemplateProcessing post_processor");
            return SKV_STATUS_UNSUPPORTED;
        }
        return skv_tok_load_template(tok, pp);
    }
    if (which == 2) {
        json_t *list = json_object_get(pp, "processors"), *e;
        size_t i;
        if (!json_is_array(list) || depth > 0) {
            SKV_LOG_ERROR("tokenizer.json: post_processor.processors must be an array (no "
                          "nesting)");
            return SKV_STATUS_FORMAT;
        }
        json_array_foreach(list, i, e)
        {
            SKV_CHECK(skv_tok_load_post_one(tok, e, depth + 1));
        }
    }
    return SKV_STATUS_OK;
}

/* Checks normalizer (null only), decoder (ByteLevel) and post_processor. */
static skv_status_t skv_tok_load_pipeline(skv_tokenizer_t *tok, const json_t *root)
{
    static const char *const decoders[] = {"ByteLevel", NULL};
    json_t *norm = skv_tok_member(root, "normalizer");
    json_t *dec = skv_tok_member(root, "decoder");
    json_t *post = skv_tok_member(root, "post_processor");
    int which;
    if (norm != NULL) {
        const char *type = json_string_value(json_object_get(norm, "type"));
        SKV_LOG_ERROR("tokenizer.json: normalizer.type '%s' is not supported (only null)",
                      type ? type : "?");
        return SKV_STATUS_UNSUPPORTED;
    }
    if (dec == NULL) {
        SKV_LOG_ERROR("tokenizer.json: decoder null is not supported (need ByteLevel)");
        return SKV_STATUS_UNSUPPORTED;
    }
    SKV_CHECK(skv_tok_get_type(dec, "decoder", decoders, &which));
    if (skv_tok_member(root, "truncation") || skv_tok_member(root, "padding")) {
        SKV_LOG_WARN("tokenizer.json: truncation/padding are ignored (the server decides)");
    }
    return post ? skv_tok_load_post_one(tok, post, 0) : SKV_STATUS_OK;
}

/* ---- tokenizer_config.json ------------------------------------------------------------ */

/* Returns the text of a config token field (a string or {"content": string}), or NULL. */
static const char *skv_tok_config_token(const json_t *config, const char *key)
{
    json_t *v = json_object_get(config, key);
    if (json_is_object(v)) {
        v = json_object_get(v, "content");
    }
    return json_string_value(v);
}

/* Returns the chat template text: a string, or the "default" entry of a named list. */
static const char *skv_tok_config_template(const json_t *config)
{
    json_t *t = json_object_get(config, "chat_template"), *e;
    size_t i;
    if (json_is_array(t)) {
        json_array_foreach(t, i, e)
        {
            const char *name = json_string_value(json_object_get(e, "name"));
            if (name != NULL && strcmp(name, "default") == 0) {
                return json_string_value(json_object_get(e, "template"));
            }
        }
        return NULL;
    }
    return json_string_value(t);
}

/* Reads bos/eos and the chat format from tokenizer_config.json (config may be NULL). */
static skv_status_t skv_tok_load_config(skv_tokenizer_t *tok, const json_t *config)
{
    const char *bos = config ? skv_tok_config_token(config, "bos_token") : NULL;
    const char *eos = config ? skv_tok_config_token(config, "eos_token") : NULL;
    tok->bos_id = tok->n_post_prefix > 0 ? tok->post_prefix[0] : -1;
    tok->eos_id = -1;
    if (bos != NULL && skv_tokenizer_token_id(tok, bos, &tok->bos_id) != SKV_STATUS_OK) {
        SKV_LOG_WARN("tokenizer_config.json: bos_token '%s' is not a token", bos);
    }
    if (eos != NULL && skv_tokenizer_token_id(tok, eos, &tok->eos_id) != SKV_STATUS_OK) {
        SKV_LOG_WARN("tokenizer_config.json: eos_token '%s' is not a token", eos);
    }
    if (bos != NULL && (tok->bos_text = skv_strdup(bos)) == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for bos_token");
        return SKV_STATUS_NO_MEMORY;
    }
    const char *tmpl = config ? skv_tok_config_template(config) : NULL;
    tok->chat = tmpl ? skv_tok_chat_classify(tmpl) : SKV_TOK_CHAT_NONE;
    if (tok->chat == SKV_TOK_CHAT_UNKNOWN) {
        SKV_LOG_WARN("tokenizer_config.json: chat_template is not the Llama-3 format; chat "
                     "requests will be refused (UNSUPPORTED)");
    }
    return SKV_STATUS_OK;
}

/* Checks that the template's ids exist (decode must be able to print them). */
static skv_status_t skv_tok_check_post_ids(const skv_tokenizer_t *tok)
{
    for (size_t k = 0; k < 2; k++) {
        const int32_t *ids = k ? tok->post_suffix : tok->post_prefix;
        size_t n = k ? tok->n_post_suffix : tok->n_post_prefix;
        for (size_t i = 0; i < n; i++) {
            if ((size_t)ids[i] >= tok->n_ids || tok->tok_bytes[ids[i]] == NULL) {
                SKV_LOG_ERROR("tokenizer.json: post_processor uses id %d, which is not a token",
                              ids[i]);
                return SKV_STATUS_FORMAT;
            }
        }
    }
    return SKV_STATUS_OK;
}

/* ---- entry ---------------------------------------------------------------------------- */

skv_status_t skv_tok_load_json(skv_tokenizer_t *tok, const json_t *root, const json_t *config)
{
    json_t *model, *vocab, *merges;
    int32_t max_id;
    size_t key_bytes;
    if (!json_is_object(root)) {
        SKV_LOG_ERROR("tokenizer.json: the top level must be an object");
        return SKV_STATUS_FORMAT;
    }
    json_t *added = skv_tok_member(root, "added_tokens");
    if (added != NULL && !json_is_array(added)) {
        SKV_LOG_ERROR("tokenizer.json: added_tokens must be an array");
        return SKV_STATUS_FORMAT;
    }
    SKV_CHECK(skv_tok_model_parts(root, &model, &vocab, &merges));
    SKV_CHECK(skv_tok_load_pipeline(tok, root));
    SKV_CHECK(skv_tok_load_bpe_options(tok, model));
    SKV_CHECK(skv_tok_max_id(vocab, added, &max_id, &key_bytes));
    if (max_id < 0) {
        SKV_LOG_ERROR("tokenizer.json: model.vocab is empty");
        return SKV_STATUS_FORMAT;
    }
    SKV_CHECK(skv_tok_alloc_ids(tok, max_id, key_bytes));
    SKV_CHECK(skv_tok_strmap_init(&tok->bytes_map, json_object_size(vocab),
                                  (const char *const *)tok->vocab_bytes, tok->vocab_len));
    SKV_CHECK(skv_tok_pairmap_init(&tok->merges, json_array_size(merges)));
    SKV_CHECK(skv_tok_load_vocab(tok, vocab));
    SKV_CHECK(skv_tok_load_merges(tok, merges));
    if (added != NULL) {
        SKV_CHECK(skv_tok_load_added(tok, added));
    }
    SKV_CHECK(skv_tok_check_post_ids(tok));
    SKV_CHECK(skv_tok_load_unk(tok, model));
    SKV_CHECK(skv_tok_load_pretok(tok, root));
    if (config != NULL && !json_is_object(config)) {
        SKV_LOG_ERROR("tokenizer_config.json: the top level must be an object");
        return SKV_STATUS_FORMAT;
    }
    return skv_tok_load_config(tok, config);
}
