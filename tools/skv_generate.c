/*
 * skv_generate: loads a model folder and generates from a prompt with the engine alone (no
 * services). Prompt as text (--prompt, encoded with the model's tokenizer.json; --chat wraps it
 * as one user turn of the model's chat format) or as token ids (--tokens 1,2,3). Streams the
 * generated text (or ids with --tokens) to stdout and timings to stderr.
 *
 *   skv_generate --model DIR (--prompt TEXT [--chat] | --tokens 128000,15339) [--max-tokens 32]
 *                [--top-k K] [--top-p P] [--min-p P] [--seed S] [--mode auto|base|swiftkv]
 *                [--backend cpu|cpu-ref|cuda] [--threads N] [--block-size B] [--chunk N]
 *                [--ignore-eos] [--tp N] [--kv-dtype auto|fp8|f32|bf16]
 *
 * --kv-dtype picks the KV cache dtype: auto (the backend's default), fp8 (E4M3, half the bytes
 * of bf16; kernels/ops.h), or the default's own name; one the backend does not take fails.
 *
 * --tp N splits the model over N ranks (threads) of the backend (common/model/model_tp.h): N CPU
 * backends with --threads each, or GPUs 0..N-1 with NCCL; the output must not change.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
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
    skv_generate_opts_t gen;
} skv_gen_args_t;

static void skv_gen_usage(void)
{
    fprintf(stderr, "usage: skv_generate --model DIR (--prompt TEXT [--chat] | --tokens ID,ID,...) "
                    "[--max-tokens N] "
                    "[--temperature T] [--top-k K] [--top-p P] [--min-p P] [--seed S]\n"
                    "       [--mode auto|base|swiftkv] [--backend %s] [--threads N] "
                    "[--block-size B] [--chunk N] [--ignore-eos] [--tp N] "
                    "[--kv-dtype auto|fp8|NAME]\n",
            skv_backend_names());
}

static int skv_gen_parse(int argc, char **argv, skv_gen_args_t *a)
{
    static const struct option opts[] = {
        {"model", 1, 0, 'm'},      {"tokens", 1, 0, 't'},      {"max-tokens", 1, 0, 'n'},
        {"temperature", 1, 0, 'T'}, {"top-k", 1, 0, 'k'},      {"top-p", 1, 0, 'p'},
        {"min-p", 1, 0, 'P'},      {"seed", 1, 0, 's'},        {"mode", 1, 0, 'M'},
        {"backend", 1, 0, 'b'},    {"threads", 1, 0, 'j'},     {"block-size", 1, 0, 'B'},
        {"chunk", 1, 0, 'c'},      {"ignore-eos", 0, 0, 'e'},  {"help", 0, 0, 'h'},
        {"prompt", 1, 0, 'x'},     {"chat", 0, 0, 'C'},        {"tp", 1, 0, 'D'},
        {"kv-dtype", 1, 0, 'K'},   {0, 0, 0, 0}};
    memset(a, 0, sizeof(*a));
    a->backend = "cpu";
    a->mode = "auto";
    a->block_size = 16;
    a->tp = 1;
    a->gen.max_new_tokens = 32;
    skv_sampling_params_default(&a->gen.sampling);
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': a->model_dir = optarg; break;
        case 't': a->tokens = optarg; break;
        case 'n': a->gen.max_new_tokens = atoi(optarg); break;
        case 'T': a->gen.sampling.temperature = strtof(optarg, NULL); break;
        case 'k': a->gen.sampling.top_k = atoi(optarg); break;
        case 'p': a->gen.sampling.top_p = strtof(optarg, NULL); break;
        case 'P': a->gen.sampling.min_p = strtof(optarg, NULL); break;
        case 's': a->gen.sampling.seed = strtoull(optarg, NULL, 10); break;
        case 'M': a->mode = optarg; break;
        case 'b': a->backend = optarg; break;
        case 'j': a->threads = atoi(optarg); break;
        case 'B': a->block_size = atoi(optarg); break;
        case 'c': a->gen.chunk_tokens = atoi(optarg); break;
        case 'e': a->gen.ignore_eos = 1; break;
        case 'x': a->prompt = optarg; break;
        case 'C': a->chat = 1; break;
        case 'D': a->tp = atoi(optarg); break;
        case 'K': a->kv_dtype = optarg; break;
        default: return -1;
        }
    }
    return (a->model_dir && (a->tokens != NULL) != (a->prompt != NULL) && a->gen.max_new_tokens > 0 && a->block_size > 0 && a->tp > 0) ? 0 : -1;
}

/* Parses "1,2,3" into a new array; returns the count or -1. */
static int32_t skv_gen_parse_ids(const char *s, int32_t **ids_p)
{
    int32_t cap = 16, n = 0;
    int32_t *ids = skv_mallocn((size_t)cap, sizeof(int32_t));
    while (ids != NULL && *s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > INT32_MAX) {
            skv_free(ids);
            return -1;
        }
        if (n == cap) {
            int32_t *grown = skv_realloc(ids, sizeof(int32_t) * (size_t)(cap *= 2));
            if (grown == NULL) {
                skv_free(ids);
                return -1;
            }
            ids = grown;
        }
        ids[n++] = (int32_t)v;
        s = *end == ',' ? end + 1 : end;
        if (*end != ',' && *end != '\0') {
            skv_free(ids);
            return -1;
        }
    }
    *ids_p = ids;
    return ids != NULL && n > 0 ? n : -1;
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
    if (skv_gen_parse(argc, argv, &a) != 0) {
        skv_gen_usage();
        return 2;
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
