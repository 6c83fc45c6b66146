/*
 * skv_tokenize: command-line front end of skv_tokenizer, used by tests and for debugging.
 *
 *   skv_tokenize TOKENIZER [--add-bos] [--parse-special] TEXT   print the ids as a JSON array
 *   skv_tokenize TOKENIZER --decode ID,ID,...                   print the decoded text
 *   skv_tokenize TOKENIZER --jsonl [--add-bos] [--parse-special] [--skip-special]
 *        stdin: one JSON string per line; stdout: one {"ids": [...], "text": decode(ids)} per line
 *   skv_tokenize TOKENIZER --chat [--gen]
 *        stdin: a JSON array of {"role", "content"}; stdout: {"text": ..., "ids": [...]}
 * TOKENIZER is a model directory or a tokenizer.json; the flags follow it, TEXT comes last.
 * `skv_tokenize --help` lists every flag with its default and SKV_TOKENIZE_* variable (one table,
 * base/cli.h). Exit status 0 on success, 1 on an error (logged), 2 on bad usage.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/cli.h"
#include "base/log.h"
#include "common/tokenizer/tokenizer.h"

typedef struct {
    unsigned enc_flags, dec_flags;
    int add_bos, parse_special, skip_special;
    int jsonl, chat, gen;
    const char *decode;
    int32_t *ids; /* --decode's, parsed */
    size_t n_ids;
    const char *text;
} skv_tok_opts_t;

/* Builds a JSON array of ids (new reference). */
static json_t *skv_tok_ids_json(const int32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(a, json_integer(ids[i]));
    }
    return a;
}

/* Prints a JSON value on one line and drops the reference. */
static void skv_tok_print(json_t *v)
{
    char *s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    puts(s);
    free(s);
    json_decref(v);
}

/* --jsonl: encode then decode every line. */
static skv_status_t skv_tok_jsonl(const skv_tokenizer_t *tok, const skv_tok_opts_t *o)
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
            json_object_set_new(out, "ids", skv_tok_ids_json(ids, n));
            json_object_set_new(out, "text", json_stringn(text, len));
            skv_tok_print(out);
        }
        skv_free(ids);
        skv_free(text);
        json_decref(s);
    }
    free(line);
    return status;
}

/* --chat: render and encode the messages on stdin. */
static skv_status_t skv_tok_chat(const skv_tokenizer_t *tok, const skv_tok_opts_t *o)
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
    json_object_set_new(out, "ids", skv_tok_ids_json(ids, n));
    skv_tok_print(out);
out:
    skv_free(ids);
    skv_free(text);
    skv_free(m);
    json_decref(msgs);
    return status;
}

/* --decode: comma-separated ids. */
static skv_status_t skv_tok_decode(const skv_tokenizer_t *tok, const skv_tok_opts_t *o)
{
    size_t len;
    char *text = NULL;
    skv_status_t status = skv_tokenizer_decode(tok, o->ids, o->n_ids, o->dec_flags, &text, &len);
    if (status == SKV_STATUS_OK) {
        fwrite(text, 1, len, stdout);
        putchar('\n');
    }
    skv_free(text);
    return status;
}

/* Encodes one command-line text. */
static skv_status_t skv_tok_encode(const skv_tokenizer_t *tok, const skv_tok_opts_t *o)
{
    int32_t *ids;
    size_t n;
    SKV_CHECK(skv_tokenizer_encode(tok, o->text, strlen(o->text), o->enc_flags, &ids, &n));
    skv_tok_print(skv_tok_ids_json(ids, n));
    skv_free(ids);
    return SKV_STATUS_OK;
}

#define SKV_TOK_B(name, env, field, help)                                                          \
    {name, env, SKV_CLI_SWITCH, &o->field, 0, 1, 0, 0, help}

/* Parses --decode's ids into o->ids as a list flag (base/cli.h) with room for every one;
 * SKV_CLI_OK or SKV_CLI_USAGE (reported). */
static int skv_tok_ids_parse(skv_tok_opts_t *o)
{
    size_t cap = strlen(o->decode) / 2 + 1; /* "1,2,3": one id per two characters, plus one */
    o->ids = skv_mallocn(cap, sizeof(*o->ids));
    skv_cli_list_t list = {o->ids, cap, 0};
    const skv_cli_opt_t row = {"decode", NULL, SKV_CLI_LIST, &list, 0, INT32_MAX, 0, 0, ""};
    if (o->ids == NULL) {
        fprintf(stderr, "skv_tokenize: out of memory\n");
        return SKV_CLI_USAGE;
    }
    int st = skv_cli_value("skv_tokenize", &row, "--decode", o->decode);
    o->n_ids = list.n;
    return st;
}

/* Parses the flags and TEXT of argv (argv[0] is TOKENIZER); SKV_CLI_OK, SKV_CLI_HELP or
 * SKV_CLI_USAGE (reported). */
static int skv_tok_table(int argc, char **argv, skv_tok_opts_t *o, int *pos_p)
{
    const skv_cli_opt_t opts[] = {
        SKV_TOK_B("add-bos", "SKV_TOKENIZE_ADD_BOS", add_bos, "encode: put BOS first"),
        SKV_TOK_B("parse-special", "SKV_TOKENIZE_PARSE_SPECIAL", parse_special,
                  "encode: special-token text becomes the special token"),
        SKV_TOK_B("skip-special", "SKV_TOKENIZE_SKIP_SPECIAL", skip_special,
                  "decode: leave special tokens out"),
        SKV_TOK_B("jsonl", NULL, jsonl,
                  "stdin: one JSON string per line; stdout: {\"ids\", \"text\"} per line"),
        SKV_TOK_B("chat", NULL, chat,
                  "stdin: a JSON array of {\"role\", \"content\"}; stdout: {\"text\", \"ids\"}"),
        SKV_TOK_B("gen", NULL, gen, "--chat: end with the assistant's generation prompt"),
        {"decode", NULL, SKV_CLI_STRING, &o->decode, 0, 0, 0, 0,
         "print the text of these comma-separated ids"},
    };
    return skv_cli_parse("skv_tokenize",
                         "skv_tokenize TOKENIZER [flags] (TEXT | --decode IDS | --jsonl | --chat): "
                         "TEXT prints its ids as a JSON array. TOKENIZER is a model folder or a "
                         "tokenizer.json.",
                         opts, sizeof(opts) / sizeof(opts[0]), argc, argv, pos_p);
}

/* Parses argv (TOKENIZER, the flags, then TEXT) into o; SKV_CLI_OK, SKV_CLI_HELP or
 * SKV_CLI_USAGE (reported). */
static int skv_tok_parse(int argc, char **argv, skv_tok_opts_t *o)
{
    int pos = 0, first = argc >= 2 && argv[1][0] != '-'; /* TOKENIZER plays argv[0] */
    int st = skv_tok_table(argc - first, argv + first, o, &pos);
    if (st != SKV_CLI_OK) {
        return st;
    }
    o->text = pos < argc - first ? argv[first + pos] : NULL;
    o->enc_flags = (o->add_bos ? SKV_TOKENIZER_ENCODE_ADD_BOS : 0) |
                   (o->parse_special ? SKV_TOKENIZER_ENCODE_PARSE_SPECIAL : 0);
    o->dec_flags = o->skip_special ? SKV_TOKENIZER_DECODE_SKIP_SPECIAL : 0;
    if (!first || pos + 1 < argc - first || !(o->jsonl || o->chat || o->decode || o->text)) {
        fprintf(stderr, "usage: skv_tokenize TOKENIZER [flags] (TEXT | --decode IDS | --jsonl | "
                        "--chat [--gen]) (--help lists the flags)\n");
        return SKV_CLI_USAGE;
    }
    return o->decode != NULL ? skv_tok_ids_parse(o) : SKV_CLI_OK;
}

int main(int argc, char **argv)
{
    skv_tok_opts_t o = {0};
    skv_tokenizer_t *tok = NULL;
    int parsed = skv_tok_parse(argc, argv, &o);
    if (parsed != SKV_CLI_OK) {
        skv_free(o.ids);
        return parsed == SKV_CLI_HELP ? 0 : 2;
    }
    skv_status_t status = skv_tokenizer_load(argv[1], &tok);
    if (status == SKV_STATUS_OK) {
        status = o.jsonl    ? skv_tok_jsonl(tok, &o)
                 : o.chat   ? skv_tok_chat(tok, &o)
                 : o.decode ? skv_tok_decode(tok, &o)
                            : skv_tok_encode(tok, &o);
    }
    skv_tokenizer_destroy(tok);
    skv_free(o.ids);
    if (status != SKV_STATUS_OK) {
        fprintf(stderr, "skv_tokenize: %s\n", skv_status_str(status));
        return 1;
    }
    return 0;
}
