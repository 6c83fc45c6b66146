/*
 * skv_tokenize: command-line front end of skv_tokenizer, used by tests and for debugging.
 *
 *   skv_tokenize TOKENIZER [--add-bos] [--parse-special] TEXT   print the ids as a JSON array
 *   skv_tokenize TOKENIZER --decode ID,ID,...                   print the decoded text
 *   skv_tokenize TOKENIZER --jsonl [--add-bos] [--parse-special] [--skip-special]
 *        stdin: one JSON string per line; stdout: one {"ids": [...], "text": decode(ids)} per line
 *   skv_tokenize TOKENIZER --chat [--gen]
 *        stdin: a JSON array of {"role", "content"}; stdout: {"text": ..., "ids": [...]}
 * TOKENIZER is a model directory or a tokenizer.json. Exit status 0 on success, 1 on an error
 * (logged), 2 on bad usage.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "common/tokenizer/tokenizer.h"

typedef struct {
    unsigned enc_flags, dec_flags;
    int jsonl, chat, gen;
    const char *decode;
    const char *text;
} skv_cli_opts_t;

/* Builds a JSON array of ids (new reference). */
static json_t *skv_cli_ids(const int32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(a, json_integer(ids[i]));
    }
    return a;
}

/* Prints a JSON value on one line and drops the reference. */
static void skv_cli_print(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    puts(s);
    free(s);
    json_decref(v);
}

/* --jsonl: encode then decode every line. */
static skv_status_t skv_cli_jsonl(const skv_tokenizer_t *tok, const skv_cli_opts_t *o)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    skv_status_t status = SKV_STATUS_OK;
    while (status == SKV_STATUS_OK && (got = getline(&line, &cap, stdin)) > 0) {
        json_error_t err;
        json_t *s = json_loadb(line, (size_t)got, JSON_DECODE_ANY | JSON_ALLOW_NUL, &err);
        int32_t *ids = NULL;
        size_t n = 0, len = 0;
        char *text = NULL;
        if (!json_is_string(s)) {
            SKV_LOG_ERROR("stdin: each line must be a JSON string (%s)", err.text);
            status = SKV_STATUS_FORMAT;
        } else if ((status = skv_tokenizer_encode(tok, json_string_value(s), json_string_length(s),
                                                  o->enc_flags, &ids, &n)) == SKV_STATUS_OK &&
                   (status = skv_tokenizer_decode(tok, ids, n, o->dec_flags, &text, &len)) ==
                       SKV_STATUS_OK) {
            json_t *out = json_object();
            json_object_set_new(out, "ids", skv_cli_ids(ids, n));
            json_object_set_new(out, "text", json_stringn(text, len));
            skv_cli_print(out);
        }
        skv_free(ids);
        skv_free(text);
        json_decref(s);
    }
    free(line);
    return status;
}

/* --chat: render and encode the messages on stdin. */
static skv_status_t skv_cli_chat(const skv_tokenizer_t *tok, const skv_cli_opts_t *o)
{
    json_error_t err;
    json_t *msgs = json_loadf(stdin, 0, &err);
    size_t n_msgs = json_array_size(msgs), n = 0, len = 0;
    skv_chat_msg_t *m = skv_calloc(n_msgs, sizeof(*m));
    int32_t *ids = NULL;
    char *text = NULL;
    skv_status_t status;
    if (!json_is_array(msgs) || m == NULL) {
        SKV_LOG_ERROR("stdin: expected a JSON array of messages (%s)", err.text);
        status = SKV_STATUS_FORMAT;
        goto out;
    }
    for (size_t i = 0; i < n_msgs; i++) {
        m[i].role = json_string_value(json_object_get(json_array_get(msgs, i), "role"));
        m[i].content = json_string_value(json_object_get(json_array_get(msgs, i), "content"));
    }
    SKV_CHECK_GOTO(skv_tokenizer_chat_render(tok, m, n_msgs, o->gen, &text, &len), out);
    SKV_CHECK_GOTO(skv_tokenizer_chat_encode(tok, m, n_msgs, o->gen, &ids, &n), out);
    json_t *out = json_object();
    json_object_set_new(out, "text", json_stringn(text, len));
    json_object_set_new(out, "ids", skv_cli_ids(ids, n));
    skv_cli_print(out);
out:
    skv_free(ids);
    skv_free(text);
    skv_free(m);
    json_decref(msgs);
    return status;
}

/* --decode: comma-separated ids. */
static skv_status_t skv_cli_decode(const skv_tokenizer_t *tok, const skv_cli_opts_t *o)
{
    size_t n = 0, len;
    int32_t *ids = skv_mallocn(strlen(o->decode) + 1, sizeof(*ids));
    char *text = NULL, *end;
    if (ids == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    for (const char *p = o->decode; *p; p = *end ? end + 1 : end) {
        ids[n++] = (int32_t)strtol(p, &end, 10);
    }
    skv_status_t status = skv_tokenizer_decode(tok, ids, n, o->dec_flags, &text, &len);
    if (status == SKV_STATUS_OK) {
        fwrite(text, 1, len, stdout);
        putchar('\n');
    }
    skv_free(ids);
    skv_free(text);
    return status;
}

/* Encodes one command-line text. */
static skv_status_t skv_cli_encode(const skv_tokenizer_t *tok, const skv_cli_opts_t *o)
{
    int32_t *ids;
    size_t n;
    SKV_CHECK(skv_tokenizer_encode(tok, o->text, strlen(o->text), o->enc_flags, &ids, &n));
    skv_cli_print(skv_cli_ids(ids, n));
    skv_free(ids);
    return SKV_STATUS_OK;
}

/* Parses argv[2..]; returns 0 on bad usage. */
static int skv_cli_parse(int argc, char **argv, skv_cli_opts_t *o)
{
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--add-bos") == 0) {
            o->enc_flags |= SKV_TOKENIZER_ENCODE_ADD_BOS;
        } else if (strcmp(a, "--parse-special") == 0) {
            o->enc_flags |= SKV_TOKENIZER_ENCODE_PARSE_SPECIAL;
        } else if (strcmp(a, "--skip-special") == 0) {
            o->dec_flags |= SKV_TOKENIZER_DECODE_SKIP_SPECIAL;
        } else if (strcmp(a, "--jsonl") == 0) {
            o->jsonl = 1;
        } else if (strcmp(a, "--chat") == 0) {
            o->chat = 1;
        } else if (strcmp(a, "--gen") == 0) {
            o->gen = 1;
        } else if (strcmp(a, "--decode") == 0 && i + 1 < argc) {
            o->decode = argv[++i];
        } else if (a[0] != '-' && o->text == NULL) {
            o->text = a;
        } else {
            return 0;
        }
    }
    return o->jsonl || o->chat || o->decode || o->text;
}

int main(int argc, char **argv)
{
    skv_cli_opts_t o = {0};
    skv_tokenizer_t *tok = NULL;
    if (argc < 3 || !skv_cli_parse(argc, argv, &o)) {
        fprintf(stderr,
                "usage: %s TOKENIZER [--add-bos] [--parse-special] [--skip-special] "
                "(TEXT | --decode IDS | --jsonl | --chat [--gen])\n",
                argv[0]);
        return 2;
    }
    skv_status_t status = skv_tokenizer_load(argv[1], &tok);
    if (status == SKV_STATUS_OK) {
        status = o.jsonl    ? skv_cli_jsonl(tok, &o)
                 : o.chat   ? skv_cli_chat(tok, &o)
                 : o.decode ? skv_cli_decode(tok, &o)
                            : skv_cli_encode(tok, &o);
    }
    skv_tokenizer_destroy(tok);
    if (status != SKV_STATUS_OK) {
        fprintf(stderr, "skv_tokenize: %s\n", skv_status_str(status));
        return 1;
    }
    return 0;
}
