/*
 * skv_generate: loads a model folder and generates from a prompt with the engine alone (no
 * services). Prompt as text (--prompt, encoded with the model's tokenizer.json; --chat wraps it
 * as one user turn of the model's chat format) or as token ids (--tokens 1,2,3). Streams the
 * generated text (or ids with --tokens) to stdout and timings to stderr.
 *
 *   skv_generate --model DIR (--prompt TEXT [--chat] | --tokens 128000,15339) [flags]
 *
 * `skv_generate --help` lists every flag with its default and SKV_GENERATE_* variable (one
 * table, base/cli.h). Exit: 0 done, 1 a failure, 2 bad usage.
 *
 * --kv-dtype picks the KV cache dtype: auto (the backend's default), fp8 (E4M3, half the bytes
 * of bf16; kernels/ops.h), or the default's own name; one the backend does not take fails.
 *
 * --tp N splits the model over N ranks (threads) of the backend (common/model/model_tp.h): N CPU
 * backends with --threads each, or GPUs 0..N-1 with NCCL; the output must not change.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/cli.h"
#include "kernels/backend.h"
#include "base/clock.h"
#include "common/model/generate.h"
#include "base/log.h"
#include "common/model/model_tp.h"
#include "common/tokenizer/tokenizer.h"

typedef struct {
    const char *model_dir;
    const char *tokens;
    const char *prompt;
    int chat;
    const char *backend;
    const char *mode;
    const char *kv_dtype;
    int threads;
    int block_size;
    int tp;
    int max_tokens, top_k, chunk;
    int64_t seed;
    skv_generate_opts_t gen;
} skv_gen_args_t;

#define SKV_GEN_I(name, env, field, lo, hi, help)                                                  \
    {name, env, SKV_CLI_INT, &a->field, lo, hi, 0, 0, help}
#define SKV_GEN_S(name, env, field, help)                                                          \
    {name, env, SKV_CLI_STRING, &a->field, 0, 0, 0, 0, help}
#define SKV_GEN_B(name, env, field, help)                                                          \
    {name, env, SKV_CLI_SWITCH, &a->field, 0, 1, 0, 0, help}

static void skv_gen_defaults(skv_gen_args_t *a)
{
    memset(a, 0, sizeof(*a));
    a->backend = "cpu";
    a->mode = "auto";
    a->block_size = 16;
    a->tp = 1;
    a->max_tokens = 32;
    skv_sampling_params_default(&a->gen.sampling);
}

/* Returns SKV_CLI_OK, SKV_CLI_HELP or SKV_CLI_USAGE (base/cli.h). */
static int skv_gen_table(int argc, char **argv, skv_gen_args_t *a)
{
    skv_sampling_params_t *sp = &a->gen.sampling;
    char backends[128];
    snprintf(backends, sizeof(backends), "compute backend: %s", skv_backend_names());
    const skv_cli_opt_t opts[] = {
        SKV_GEN_S("model", "SKV_GENERATE_MODEL", model_dir, "HF model folder (required)"),
        SKV_GEN_S("prompt", NULL, prompt, "prompt text, encoded with the model's tokenizer"),
        SKV_GEN_B("chat", "SKV_GENERATE_CHAT", chat,
                  "--prompt is one user turn of the chat format"),
        SKV_GEN_S("tokens", NULL, tokens,
                  "prompt token ids, comma-separated (instead of --prompt)"),
        SKV_GEN_I("max-tokens", "SKV_GENERATE_MAX_TOKENS", max_tokens, 1, INT32_MAX,
                  "tokens to generate"),
        {"temperature", "SKV_GENERATE_TEMPERATURE", SKV_CLI_FLOAT, &sp->temperature, 0, 0, 0.0,
         100.0, "sampling temperature; 0: greedy"},
        SKV_GEN_I("top-k", "SKV_GENERATE_TOP_K", top_k, 0, INT32_MAX, "top-k filter; 0: off"),
        {"top-p", "SKV_GENERATE_TOP_P", SKV_CLI_FLOAT, &sp->top_p, 0, 0, 0.0, 1.0,
         "top-p (nucleus) filter; 1: off"},
        {"min-p", "SKV_GENERATE_MIN_P", SKV_CLI_FLOAT, &sp->min_p, 0, 0, 0.0, 1.0,
         "min-p filter; 0: off"},
        {"seed", "SKV_GENERATE_SEED", SKV_CLI_INT64, &a->seed, 0, INT64_MAX, 0, 0, "sampling seed"},
        SKV_GEN_S("mode", "SKV_GENERATE_MODE", mode, "auto | base | swiftkv"),
        SKV_GEN_S("backend", "SKV_GENERATE_BACKEND", backend, backends),
        SKV_GEN_I("threads", "SKV_GENERATE_THREADS", threads, 0, 4096, "CPU threads (0: all)"),
        SKV_GEN_I("block-size", "SKV_GENERATE_BLOCK_SIZE", block_size, 1, 4096,
                  "tokens per KV block"),
        SKV_GEN_I("chunk", "SKV_GENERATE_CHUNK", chunk, 0, 1 << 20,
                  "prefill chunk in tokens (0: 512)"),
        SKV_GEN_B("ignore-eos", "SKV_GENERATE_IGNORE_EOS", gen.ignore_eos,
                  "keep generating past end-of-sequence ids"),
        SKV_GEN_I("tp", "SKV_GENERATE_TP", tp, 1, 16,
                  "tensor-parallel ranks (common/model/model_tp.md)"),
        SKV_GEN_S("kv-dtype", "SKV_GENERATE_KV_DTYPE", kv_dtype,
                  "KV cache dtype: auto (the backend's), fp8 (E4M3), f32, bf16"),
    };
    return skv_cli_parse("skv_generate",
                         "Generates from a prompt with the engine alone (no services): the text "
                         "(or the ids, with --tokens) on stdout, timings on stderr.",
                         opts, sizeof(opts) / sizeof(opts[0]), argc, argv, NULL);
}

/* Parses the command line into a; SKV_CLI_OK, SKV_CLI_HELP or SKV_CLI_USAGE (reported). */
static int skv_gen_parse(int argc, char **argv, skv_gen_args_t *a)
{
    skv_gen_defaults(a);
    int st = skv_gen_table(argc, argv, a);
    if (st != SKV_CLI_OK) {
        return st;
    }
    a->gen.max_new_tokens = a->max_tokens;
    a->gen.chunk_tokens = a->chunk;
    a->gen.sampling.top_k = a->top_k;
    a->gen.sampling.seed = (uint64_t)a->seed;
    if (a->model_dir == NULL || (a->tokens != NULL) == (a->prompt != NULL)) {
        fprintf(stderr, "skv_generate: --model and one of --prompt or --tokens are required "
                        "(--help lists the flags)\n");
        return SKV_CLI_USAGE;
    }
    if (strcmp(a->mode, "auto") != 0 && strcmp(a->mode, "base") != 0 &&
        strcmp(a->mode, "swiftkv") != 0) {
        fprintf(stderr, "skv_generate: --mode '%s': expected auto, base or swiftkv\n", a->mode);
        return SKV_CLI_USAGE;
    }
    return SKV_CLI_OK;
}

/* Parses "1,2,3" into a new array as a list flag (base/cli.h) with room for every id; returns
 * the count, or -1 (a bad id is reported). */
static int32_t skv_gen_parse_ids(const char *s, int32_t **ids_p)
{
    size_t cap = strlen(s) / 2 + 1; /* one id per two characters, plus one */
    *ids_p = skv_mallocn(cap, sizeof(int32_t));
    skv_cli_list_t list = {*ids_p, cap, 0};
    const skv_cli_opt_t row = {"tokens", NULL, SKV_CLI_LIST, &list, 0, INT32_MAX, 0, 0, ""};
    if (list.items == NULL || skv_cli_value("skv_generate", &row, "--tokens", s) != SKV_CLI_OK ||
        list.n == 0 || list.n > INT32_MAX) {
        return -1;
    }
    return (int32_t)list.n;
}

static skv_model_mode_t skv_gen_mode(const char *s)
{
    if (strcmp(s, "base") == 0) {
        return SKV_MODEL_MODE_BASE;
    }
    return strcmp(s, "swiftkv") == 0 ? SKV_MODEL_MODE_SWIFTKV : SKV_MODEL_MODE_AUTO;
}

typedef struct {
    int printed;
    skv_detok_t *detok; /* NULL: print ids */
} skv_gen_out_t;

static int skv_gen_print(void *ctx, const skv_sample_t *s)
{
    skv_gen_out_t *o = ctx;
    const char *text;
    size_t len;
    if (o->detok == NULL) {
        printf("%s%d", o->printed ? "," : "", s->token);
    } else if (skv_detok_push(o->detok, s->token, &text, &len) == SKV_STATUS_OK) {
        fwrite(text, 1, len, stdout);
    }
    fflush(stdout);
    o->printed = 1;
    return 0;
}

static int skv_gen_run(const skv_gen_args_t *a, const int32_t *prompt, int32_t n_prompt,
                       skv_detok_t *detok)
{
    skv_backend_t *be = NULL;
    skv_model_t *model = NULL;
    skv_kv_pool_t *pool = NULL;
    int32_t *out = skv_mallocn((size_t)a->gen.max_new_tokens, sizeof(int32_t));
    int32_t n_out = 0;
    skv_gen_out_t printed = {0, detok};
    skv_model_opts_t mo = {skv_gen_mode(a->mode),
                           a->gen.chunk_tokens > 0 ? a->gen.chunk_tokens : 512, 1, 0, a->kv_dtype, 0};
    skv_model_opts_env(&mo);
    skv_generate_opts_t gen = a->gen;
    gen.chunk_tokens = mo.max_batch_tokens;
    skv_status_t status = out ? SKV_STATUS_OK : SKV_STATUS_NO_MEMORY;
    int64_t t0 = skv_clock_now_ns();
    if (a->tp > 1) { /* each rank creates its own backend */
        skv_model_tp_opts_t tp = {a->tp, a->backend, a->threads, 0};
        SKV_CHECK_GOTO(skv_model_load_tp(a->model_dir, &tp, &mo, &model), done);
    } else {
        SKV_CHECK_GOTO(skv_backend_create(a->backend, a->threads, 0, &be), done);
        SKV_CHECK_GOTO(skv_model_load(a->model_dir, be, &mo, &model), done);
    }
    int64_t ctx = n_prompt + a->gen.max_new_tokens + a->block_size;
    SKV_CHECK_GOTO(skv_model_kv_pool_create(model, a->block_size, ctx / a->block_size + 1, &pool),
                   done);
    int64_t t1 = skv_clock_now_ns();
    status = skv_generate(model, pool, prompt, n_prompt, &gen, skv_gen_print, &printed, out, &n_out);
    int64_t t2 = skv_clock_now_ns();
    const char *tail;
    size_t tail_len;
    if (detok != NULL && skv_detok_flush(detok, &tail, &tail_len) == SKV_STATUS_OK) {
        fwrite(tail, 1, tail_len, stdout);
    }
    printf("\n");
    fprintf(stderr,
            "load %.1f ms, generate %d tokens after %d prompt tokens in %.1f ms (%s, %s, tp %d, "
            "kv %s)\n",
            (t1 - t0) / 1e6, n_out, n_prompt, (t2 - t1) / 1e6, a->backend,
            skv_model_is_swiftkv(model) ? "swiftkv" : "base", a->tp,
            skv_dtype_name(skv_kv_pool_layout(pool)->dtype));
done:
    if (status != SKV_STATUS_OK) {
        fprintf(stderr, "skv_generate: %s\n", skv_status_str(status));
    }
    skv_kv_pool_destroy(pool);
    skv_model_destroy(model);
    if (be != NULL) {
        be->ops->destroy(be);
    }
    skv_free(out);
    return status == SKV_STATUS_OK ? 0 : 1;
}

/* Encodes the text prompt with the model's tokenizer (chat format with --chat). */
static int32_t skv_gen_encode(const skv_gen_args_t *a, skv_tokenizer_t *tok, int32_t **ids_p)
{
    size_t n = 0;
    skv_status_t s;
    if (a->chat) {
        skv_chat_msg_t msg = {"user", a->prompt};
        s = skv_tokenizer_chat_encode(tok, &msg, 1, 1, ids_p, &n);
    } else {
        s = skv_tokenizer_encode(tok, a->prompt, strlen(a->prompt), SKV_TOKENIZER_ENCODE_ADD_BOS,
                                 ids_p, &n);
    }
    return s == SKV_STATUS_OK && n > 0 ? (int32_t)n : -1;
}

int main(int argc, char **argv)
{
    skv_gen_args_t a;
    int32_t *prompt = NULL;
    skv_tokenizer_t *tok = NULL;
    skv_detok_t detok;
    int parsed = skv_gen_parse(argc, argv, &a);
    if (parsed != SKV_CLI_OK) {
        return parsed == SKV_CLI_HELP ? 0 : 2;
    }
    int32_t n_prompt;
    if (a.tokens != NULL) {
        n_prompt = skv_gen_parse_ids(a.tokens, &prompt);
    } else if (skv_tokenizer_load(a.model_dir, &tok) != SKV_STATUS_OK) {
        fprintf(stderr, "skv_generate: the model folder has no usable tokenizer.json\n");
        return 1;
    } else {
        n_prompt = skv_gen_encode(&a, tok, &prompt);
        skv_detok_init(&detok, tok, SKV_TOKENIZER_DECODE_SKIP_SPECIAL);
        printf("%s", a.prompt);
    }
    if (n_prompt < 0) {
        fprintf(stderr, "skv_generate: the prompt could not be turned into token ids\n");
        skv_tokenizer_destroy(tok);
        return 2;
    }
    int rc = skv_gen_run(&a, prompt, n_prompt, tok ? &detok : NULL);
    if (tok != NULL) {
        skv_detok_cleanup(&detok);
        skv_tokenizer_destroy(tok);
    }
    skv_free(prompt);
    return rc;
}
