/*
 * chat_template.c: the Llama-3 chat format, recognised from tokenizer_config.json.
 *
 * We do not run Jinja. The Llama-3 template is recognised by its markers (<|start_header_id|>,
 * <|end_header_id|>, <|eot_id|>) and reproduced in C:
 *   for each message: "<|start_header_id|>" + role + "<|end_header_id|>\n\n" + content|trim +
 *   "<|eot_id|>", bos_token before the first one; then
 *   "<|start_header_id|>assistant<|end_header_id|>\n\n" when add_generation_prompt.
 * Templates that add more (Llama-3.1's "Cutting Knowledge Date" system block, tool calls) or
 * any other family are refused as UNSUPPORTED rather than approximated.
 */
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "common/tokenizer/tokenizer_internal.h"

#define SKV_TOK_HDR_START "<|start_header_id|>"
#define SKV_TOK_HDR_END   "<|end_header_id|>"
#define SKV_TOK_EOT       "<|eot_id|>"

skv_tok_chat_t skv_tok_chat_classify(const char *tmpl)
{
    if (strstr(tmpl, SKV_TOK_HDR_START) == NULL || strstr(tmpl, SKV_TOK_HDR_END) == NULL ||
        strstr(tmpl, SKV_TOK_EOT) == NULL) {
        return SKV_TOK_CHAT_UNKNOWN;
    }
    /* Llama-3.1+ templates inject a dated system block and tool-call syntax. */
    if (strstr(tmpl, "Cutting Knowledge Date") != NULL || strstr(tmpl, "<|python_tag|>") != NULL ||
        strstr(tmpl, "tools") != NULL) {
        return SKV_TOK_CHAT_UNKNOWN;
    }
    return SKV_TOK_CHAT_LLAMA3;
}

/* Returns the length of the Python-str.isspace() character at s (0 when not white space). */
static size_t skv_tok_space_len(const unsigned char *s, size_t len)
{
    if (s[0] == ' ' || (s[0] >= 0x09 && s[0] <= 0x0D) || (s[0] >= 0x1C && s[0] <= 0x1F)) {
        return 1;
    }
    if (len >= 2 && s[0] == 0xC2 && (s[1] == 0x85 || s[1] == 0xA0)) {
        return 2;
    }
    if (len >= 3 && s[0] == 0xE1 && s[1] == 0x9A && s[2] == 0x80) { /* U+1680 */
        return 3;
    }
    if (len >= 3 && s[0] == 0xE2 && s[1] == 0x80 &&
        (s[2] <= 0x8A || s[2] == 0xA8 || s[2] == 0xA9 || s[2] == 0xAF)) { /* U+2000..200A etc. */
        return 3;
    }
    if (len >= 3 && s[0] == 0xE2 && s[1] == 0x81 && s[2] == 0x9F) { /* U+205F */
        return 3;
    }
    if (len >= 3 && s[0] == 0xE3 && s[1] == 0x80 && s[2] == 0x80) { /* U+3000 */
        return 3;
    }
    return 0;
}

/* Jinja's trim (Python str.strip()): drops leading and trailing white space of s. */
static void skv_tok_trim(const char *s, const char **start_p, size_t *len_p)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t len = strlen(s), n;
    while (len > 0 && (n = skv_tok_space_len(u, len)) > 0) {
        u += n, len -= n;
    }
    for (;;) { /* trailing: find the last character and test it */
        size_t k = len;
        while (k > 0 && (u[k - 1] & 0xC0) == 0x80) {
            k--;
        }
        if (k == 0 || (n = skv_tok_space_len(u + k - 1, len - k + 1)) == 0) {
            break;
        }
        len = k - 1;
    }
    *start_p = (const char *)u;
    *len_p = len;
}

/* One rendered part: a special marker, or a plain segment with an optional "\n\n" before it
 * (the text between two markers is one segment, so "\n\n" + content is encoded together). */
typedef struct {
    const char *text;
    size_t len;
    int special;
    int nl2; /* plain segment preceded by "\n\n" */
} skv_tok_part_t;

/* Checks that a message string is present and valid UTF-8. */
static skv_status_t skv_tok_chat_check(const char *s, size_t i, const char *what)
{
    if (s == NULL || skv_tok_utf8_check(s, strlen(s)) != strlen(s)) {
        SKV_LOG_ERROR("tokenizer: chat message %zu: %s is %s", i, what,
                      s == NULL ? "missing" : "not valid UTF-8");
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    return SKV_STATUS_OK;
}

/* Appends the parts of one message (or of the generation prompt when msg is NULL). */
static skv_status_t skv_tok_chat_msg_parts(const skv_chat_msg_t *msg, size_t i, skv_tok_part_t *p,
                                           size_t *n_p)
{
    size_t n = *n_p;
    const char *role = msg ? msg->role : "assistant";
    SKV_CHECK(skv_tok_chat_check(role, i, "role"));
    p[n++] = (skv_tok_part_t){SKV_TOK_HDR_START, sizeof(SKV_TOK_HDR_START) - 1, 1, 0};
    p[n++] = (skv_tok_part_t){role, strlen(role), 0, 0};
    p[n++] = (skv_tok_part_t){SKV_TOK_HDR_END, sizeof(SKV_TOK_HDR_END) - 1, 1, 0};
    if (msg == NULL) {
        p[n++] = (skv_tok_part_t){"", 0, 0, 1};
    } else {
        SKV_CHECK(skv_tok_chat_check(msg->content, i, "content"));
        p[n] = (skv_tok_part_t){NULL, 0, 0, 1};
        skv_tok_trim(msg->content, &p[n].text, &p[n].len);
        n++;
        p[n++] = (skv_tok_part_t){SKV_TOK_EOT, sizeof(SKV_TOK_EOT) - 1, 1, 0};
    }
    *n_p = n;
    return SKV_STATUS_OK;
}

/* Lays the conversation out as parts; *parts_p is new (skv_free), *n_p entries. */
static skv_status_t skv_tok_chat_parts(const skv_tokenizer_t *tok, const skv_chat_msg_t *msgs,
                                       size_t n_msgs, int add_generation_prompt,
                                       skv_tok_part_t **parts_p, size_t *n_p)
{
    if (tok->chat != SKV_TOK_CHAT_LLAMA3) {
        SKV_LOG_ERROR("tokenizer: chat template is %s; only the Llama-3 format is supported",
                      tok->chat == SKV_TOK_CHAT_NONE ? "absent" : "not recognised");
        return SKV_STATUS_UNSUPPORTED;
    }
    skv_tok_part_t *p = skv_mallocn(5 * n_msgs + 6, sizeof(*p));
    if (p == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for %zu chat messages", n_msgs);
        return SKV_STATUS_NO_MEMORY;
    }
    skv_status_t status = SKV_STATUS_OK;
    size_t n = 0;
    if (tok->bos_text != NULL && n_msgs > 0) { /* the template adds it to the first message */
        p[n++] = (skv_tok_part_t){tok->bos_text, strlen(tok->bos_text), 1, 0};
    }
    for (size_t i = 0; i < n_msgs; i++) {
        SKV_CHECK_GOTO(skv_tok_chat_msg_parts(&msgs[i], i, p, &n), fail);
    }
    if (add_generation_prompt) {
        SKV_CHECK_GOTO(skv_tok_chat_msg_parts(NULL, n_msgs, p, &n), fail);
    }
    *parts_p = p;
    *n_p = n;
    return SKV_STATUS_OK;
fail:
    skv_free(p);
    return status;
}

skv_status_t skv_tokenizer_chat_render(const skv_tokenizer_t *tok, const skv_chat_msg_t *msgs,
                                       size_t n_msgs, int add_generation_prompt, char **text_p,
                                       size_t *len_p)
{
    skv_tok_part_t *p;
    size_t n, len = 0, at = 0;
    SKV_CHECK(skv_tok_chat_parts(tok, msgs, n_msgs, add_generation_prompt, &p, &n));
    for (size_t i = 0; i < n; i++) {
        len += p[i].len + 2;
    }
    char *text = skv_malloc(len + 1);
    if (text == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for a %zu-byte chat text", len);
        skv_free(p);
        return SKV_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < n; i++) {
        if (p[i].nl2) {
            memcpy(text + at, "\n\n", 2);
            at += 2;
        }
        memcpy(text + at, p[i].text, p[i].len);
        at += p[i].len;
    }
    text[at] = '\0';
    skv_free(p);
    *text_p = text;
    *len_p = at;
    return SKV_STATUS_OK;
}

/* Encodes one part and appends its ids to *all (n_all, cap_all). */
static skv_status_t skv_tok_chat_encode_part(const skv_tokenizer_t *tok, const skv_tok_part_t *p,
                                             int32_t **all, size_t *n_all)
{
    int32_t *ids = NULL, id;
    size_t n = 0;
    skv_status_t status = SKV_STATUS_OK;
    if (p->special) {
        if (skv_tokenizer_token_id(tok, p->text, &id) != SKV_STATUS_OK) {
            SKV_LOG_ERROR("tokenizer: chat marker '%s' is not a token", p->text);
            return SKV_STATUS_UNSUPPORTED;
        }
        ids = &id;
        n = 1;
    } else {
        char *seg = skv_malloc(p->len + 2);
        if (seg == NULL) {
            SKV_LOG_ERROR("tokenizer: no memory for a chat segment");
            return SKV_STATUS_NO_MEMORY;
        }
        memcpy(seg, "\n\n", 2);
        memcpy(seg + 2, p->text, p->len);
        status = skv_tokenizer_encode(tok, p->nl2 ? seg : seg + 2, p->len + (p->nl2 ? 2 : 0), 0,
                                      &ids, &n);
        skv_free(seg);
        SKV_CHECK(status);
    }
    int32_t *grown = skv_realloc(*all, (*n_all + n + 1) * sizeof(**all));
    if (grown == NULL) {
        SKV_LOG_ERROR("tokenizer: no memory for %zu chat ids", *n_all + n);
        status = SKV_STATUS_NO_MEMORY;
    } else {
        memcpy(grown + *n_all, ids, n * sizeof(*ids));
        *all = grown;
        *n_all += n;
    }
    if (!p->special) {
        skv_free(ids);
    }
    return status;
}

skv_status_t skv_tokenizer_chat_encode(const skv_tokenizer_t *tok, const skv_chat_msg_t *msgs,
                                       size_t n_msgs, int add_generation_prompt, int32_t **ids_p,
                                       size_t *n_p)
{
    skv_tok_part_t *p;
    size_t n_parts, n = 0;
    int32_t *ids = NULL;
    skv_status_t status = SKV_STATUS_OK;
    SKV_CHECK(skv_tok_chat_parts(tok, msgs, n_msgs, add_generation_prompt, &p, &n_parts));
    for (size_t i = 0; i < n_parts; i++) {
        SKV_CHECK_GOTO(skv_tok_chat_encode_part(tok, &p[i], &ids, &n), fail);
    }
    skv_free(p);
    *ids_p = ids;
    *n_p = n;
    return SKV_STATUS_OK;
fail:
    skv_free(ids);
    skv_free(p);
    return status;
}
