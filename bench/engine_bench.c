/*
 * engine_bench: prefill and decode throughput of the engine alone (no services, no gRPC), on
 * any backend. Prints a table and, with --json FILE, machine-readable results.
 *
 *   engine_bench (--model DIR | --random-preset llama3-8b|llama3-8b-swiftkv|tiny|..) [flags]
 *
 * `engine_bench --help` lists every flag with its default and SKV_ENGINE_BENCH_* variable (one
 * table, base/cli.h). Exit: 0 done, 1 a failure, 2 bad usage.
 *
 * --kv-dtype picks the KV pool dtype (auto: the backend's default; fp8: E4M3, kernels/ops.h).
 *
 * --sample says how each step's tokens are picked, so ms/step includes it: device (the
 * default when the backend has a sample op) picks where the logits are and copies only the
 * token ids back (skv_model_forward_sample); host copies the logits back and runs one host
 * sampler per sequence (the engine's host path); none copies the logits back and picks
 * nothing. The sampling parameters (default greedy) apply to every sequence.
 *
 * --tp N runs the model split over N ranks (common/model/model_tp.h: CPU threads, or GPUs 0..N-1
 * with NCCL); --threads is then per rank. Throughput is the whole group's.
 * --random-preset builds the named architecture with deterministic random weights (filled on
 * the device where the backend can), so a GPU machine needs no checkpoint on disk.
 *
 * Prefill: B prompts of P random tokens in one step (the prefill worker's batch), tokens/s
 * and achieved model FLOP/s (2 * multiply-adds of the linear layers actually run + attention).
 * Decode: B sequences at context C, one token each per step, ms/step and tokens/s.
 * --upload: weight_upload throughput from host f32 / f16 / bf16 rows into a 512 MiB weight
 * (host bytes per second; what loading a checkpoint costs on this backend).
 * --gemm (the backend's own GEMM rate on the model's largest projection, the ceiling the
 * prefill number is compared with) is accepted but measures nothing at present.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/cli.h"
#include "kernels/backend.h"
#include "base/clock.h"
#include "base/log.h"
#include "common/model/model.h"
#include "common/model/model_tp.h"
#include "common/model/sampler.h"

typedef enum {
    SKV_BENCH_SAMPLE_DEFAULT = 0, /* device when the backend has a sample op, else host */
    SKV_BENCH_SAMPLE_DEVICE,
    SKV_BENCH_SAMPLE_HOST,
    SKV_BENCH_SAMPLE_NONE,
} skv_bench_sample_t;

#define SKV_BENCH_MAX_LIST 16 /* items of a list flag */

typedef struct {
    const char *model_dir, *preset, *backend, *mode, *json, *kv_dtype, *sample_name;
    int prompt_len, steps, threads, gemm, upload, tp, top_k;
    skv_bench_sample_t sample;
    skv_sampling_params_t sampling;
    int32_t contexts[SKV_BENCH_MAX_LIST], n_ctx;
    int32_t prefill_batches[SKV_BENCH_MAX_LIST], n_prefill;
    int32_t decode_batches[SKV_BENCH_MAX_LIST], n_decode;
} skv_bench_args_t;

static void skv_bench_defaults(skv_bench_args_t *a)
{
    memset(a, 0, sizeof(*a));
    a->backend = "cpu";
    a->mode = "auto";
    a->prompt_len = 256;
    a->contexts[0] = 256;
    a->n_ctx = 1;
    a->steps = 8;
    a->tp = 1;
    a->prefill_batches[0] = 1;
    a->prefill_batches[1] = 4;
    a->n_prefill = 2;
    a->decode_batches[0] = 1;
    a->decode_batches[1] = 4;
    a->decode_batches[2] = 16;
    a->n_decode = 3;
    skv_sampling_params_default(&a->sampling);
}

#define SKV_BENCH_I(name, env, field, lo, hi, help)                                                \
    {name, env, SKV_CLI_INT, &a->field, lo, hi, 0, 0, help}
#define SKV_BENCH_S(name, env, field, help)                                                        \
    {name, env, SKV_CLI_STRING, &a->field, 0, 0, 0, 0, help}
#define SKV_BENCH_B(name, env, field, help)                                                        \
    {name, env, SKV_CLI_SWITCH, &a->field, 0, 1, 0, 0, help}
#define SKV_BENCH_L(name, env, list, lo, hi, help)                                                 \
    {name, env, SKV_CLI_LIST, &list, lo, hi, 0, 0, help}

/* Parses the environment and argv into a (defaults in it); SKV_CLI_OK, SKV_CLI_HELP or
 * SKV_CLI_USAGE (base/cli.h). */
static int skv_bench_table(int argc, char **argv, skv_bench_args_t *a)
{
    skv_cli_list_t pb = {a->prefill_batches, SKV_BENCH_MAX_LIST, (size_t)a->n_prefill};
    skv_cli_list_t db = {a->decode_batches, SKV_BENCH_MAX_LIST, (size_t)a->n_decode};
    skv_cli_list_t ctx = {a->contexts, SKV_BENCH_MAX_LIST, (size_t)a->n_ctx};
    skv_sampling_params_t *sp = &a->sampling;
    char backends[128];
    snprintf(backends, sizeof(backends), "compute backend: %s", skv_backend_names());
    const skv_cli_opt_t opts[] = {
        SKV_BENCH_S("model", "SKV_ENGINE_BENCH_MODEL", model_dir, "HF model folder"),
        SKV_BENCH_S("random-preset", "SKV_ENGINE_BENCH_RANDOM_PRESET", preset,
                    "instead of --model: this architecture with random weights (llama3-8b, "
                    "llama3-8b-swiftkv, tiny, ...)"),
        SKV_BENCH_S("backend", "SKV_ENGINE_BENCH_BACKEND", backend, backends),
        SKV_BENCH_S("mode", "SKV_ENGINE_BENCH_MODE", mode, "auto | base | swiftkv"),
        SKV_BENCH_I("prompt-len", "SKV_ENGINE_BENCH_PROMPT_LEN", prompt_len, 1, 1 << 24,
                    "prefill: tokens per prompt"),
        SKV_BENCH_L("prefill-batch", "SKV_ENGINE_BENCH_PREFILL_BATCH", pb, 1, 65536,
                    "prefill: prompts per step, one case each (empty: no prefill)"),
        SKV_BENCH_L("decode-batch", "SKV_ENGINE_BENCH_DECODE_BATCH", db, 1, 65536,
                    "decode: sequences per step, one case each (empty: no decode)"),
        SKV_BENCH_L("context", "SKV_ENGINE_BENCH_CONTEXT", ctx, 1, 1 << 24,
                    "decode: context lengths, one case each"),
        SKV_BENCH_I("steps", "SKV_ENGINE_BENCH_STEPS", steps, 1, 1 << 20, "steps per case"),
        SKV_BENCH_I("threads", "SKV_ENGINE_BENCH_THREADS", threads, 0, 4096,
                    "CPU threads, per rank (0: all)"),
        SKV_BENCH_S("json", "SKV_ENGINE_BENCH_JSON", json, "write the results there"),
        SKV_BENCH_B("gemm", "SKV_ENGINE_BENCH_GEMM", gemm,
                    "the backend's GEMM rate (accepted; not measured at present)"),
        SKV_BENCH_B("upload", "SKV_ENGINE_BENCH_UPLOAD", upload,
                    "weight_upload throughput from host f32 / f16 / bf16 rows first"),
        SKV_BENCH_I("tp", "SKV_ENGINE_BENCH_TP", tp, 1, 16,
                    "tensor-parallel ranks (common/model/model_tp.md)"),
        SKV_BENCH_S("sample", "SKV_ENGINE_BENCH_SAMPLE", sample_name,
                    "device | host | none (default: device when the backend has a sample op)"),
        {"temperature", "SKV_ENGINE_BENCH_TEMPERATURE", SKV_CLI_FLOAT, &sp->temperature, 0, 0, 0.0,
         100.0, "sampling temperature; 0: greedy"},
        SKV_BENCH_I("top-k", "SKV_ENGINE_BENCH_TOP_K", top_k, 0, INT32_MAX, "0: off"),
        {"top-p", "SKV_ENGINE_BENCH_TOP_P", SKV_CLI_FLOAT, &sp->top_p, 0, 0, 0.0, 1.0, "1: off"},
        SKV_BENCH_S("kv-dtype", "SKV_ENGINE_BENCH_KV_DTYPE", kv_dtype,
                    "KV pool dtype: auto (the backend's), fp8 (E4M3), or a dtype's name"),
    };
    int st = skv_cli_parse("engine_bench",
                           "Prefill and decode throughput of the engine alone (the header of "
                           "bench/engine_bench.c describes the measurements).",
                           opts, sizeof(opts) / sizeof(opts[0]), argc, argv, NULL);
    a->n_prefill = (int32_t)pb.n;
    a->n_decode = (int32_t)db.n;
    a->n_ctx = (int32_t)ctx.n;
    return st;
}

/* Parses the command line into a; SKV_CLI_OK, SKV_CLI_HELP or SKV_CLI_USAGE (reported). */
static int skv_bench_parse(int argc, char **argv, skv_bench_args_t *a)
{
    skv_bench_defaults(a);
    int st = skv_bench_table(argc, argv, a);
    if (st != SKV_CLI_OK) {
        return st;
    }
    const char *s = a->sample_name, *why = NULL;
    a->sample = s == NULL                  ? SKV_BENCH_SAMPLE_DEFAULT
                : strcmp(s, "device") == 0 ? SKV_BENCH_SAMPLE_DEVICE
                : strcmp(s, "host") == 0   ? SKV_BENCH_SAMPLE_HOST
                : strcmp(s, "none") == 0   ? SKV_BENCH_SAMPLE_NONE
                                           : (skv_bench_sample_t)-1;
    a->sampling.top_k = a->top_k;
    if (a->model_dir == NULL && a->preset == NULL) {
        why = "--model or --random-preset is required";
    } else if (a->n_ctx == 0) {
        why = "--context needs at least one context";
    } else if ((int)a->sample < 0) {
        why = "--sample: expected device, host or none";
    } else if (strcmp(a->mode, "auto") != 0 && strcmp(a->mode, "base") != 0 &&
               strcmp(a->mode, "swiftkv") != 0) {
        why = "--mode: expected auto, base or swiftkv";
    } else if (skv_sampling_params_validate(&a->sampling, 1 << 30, &why) != SKV_STATUS_OK) {
        why = why != NULL ? why : "bad sampling parameters";
    }
    if (why != NULL) {
        fprintf(stderr, "engine_bench: %s (--help lists the flags)\n", why);
        return SKV_CLI_USAGE;
    }
    return SKV_CLI_OK;
}

/* How the steps pick tokens, and what that needs: per-sequence samplers, host logits, and the
 * rows / tokens of skv_model_forward_sample. */
typedef struct {
    skv_model_t *m;
    skv_kv_pool_t *pool;
    skv_bench_sample_t mode;
    int32_t n; /* samplers: the model's max_seqs */
    skv_sampler_t **samplers;
    skv_sample_row_t *rows;
    int32_t *tokens;
    float *logits; /* [max_seqs, vocab] */
} skv_bench_pick_t;

static skv_status_t skv_bench_pick_init(skv_bench_pick_t *p, skv_model_t *m, skv_kv_pool_t *pool,
                                        skv_bench_sample_t mode, const skv_sampling_params_t *sp)
{
    int32_t V = skv_model_config(m)->vocab_size;
    memset(p, 0, sizeof(*p));
    p->m = m;
    p->pool = pool;
    p->mode = mode;
    p->n = skv_model_max_seqs(m);
    p->samplers = skv_calloc((size_t)p->n, sizeof(*p->samplers));
    p->rows = skv_calloc((size_t)p->n, sizeof(*p->rows));
    p->tokens = skv_calloc((size_t)p->n, sizeof(*p->tokens));
    p->logits = skv_mallocn((size_t)p->n * V, sizeof(float));
    if (!p->samplers || !p->rows || !p->tokens || !p->logits) {
        return SKV_STATUS_NO_MEMORY;
    }
    for (int32_t i = 0; i < p->n; i++) {
        skv_sampling_params_t q = *sp;
        q.seed = 1 + (uint64_t)i;
        SKV_CHECK(skv_sampler_create(&q, V, &p->samplers[i]));
    }
    return SKV_STATUS_OK;
}

static void skv_bench_pick_free(skv_bench_pick_t *p)
{
    for (int32_t i = 0; p->samplers && i < p->n; i++) {
        skv_sampler_destroy(p->samplers[i]);
    }
    skv_free(p->samplers);
    skv_free(p->rows);
    skv_free(p->tokens);
    skv_free(p->logits);
}

/* One step over B sequences (every one wants logits) with the chosen way of picking. */
static skv_status_t skv_bench_step(skv_bench_pick_t *p, const skv_seq_step_t *seqs, int32_t B)
{
    if (p->mode == SKV_BENCH_SAMPLE_DEVICE) {
        for (int32_t i = 0; i < B; i++) {
            skv_sampler_draw_row(p->samplers[i], &p->rows[i]);
        }
        SKV_CHECK(skv_model_forward_sample(p->m, p->pool, seqs, B, p->rows, p->tokens));
        for (int32_t i = 0; i < B; i++) {
            SKV_CHECK(skv_sampler_accept(p->samplers[i], p->tokens[i]));
        }
        return SKV_STATUS_OK;
    }
    SKV_CHECK(skv_model_forward(p->m, p->pool, seqs, B, p->logits));
    int32_t V = skv_model_config(p->m)->vocab_size;
    for (int32_t i = 0; i < B && p->mode == SKV_BENCH_SAMPLE_HOST; i++) {
        skv_sample_t out;
        SKV_CHECK(skv_sampler_next(p->samplers[i], p->logits + (size_t)i * V, &out));
    }
    return SKV_STATUS_OK;
}

static const char *skv_bench_sample_name(const skv_bench_pick_t *p)
{
    return p->mode == SKV_BENCH_SAMPLE_HOST     ? "host"
           : p->mode == SKV_BENCH_SAMPLE_NONE   ? "none"
           : skv_model_samples_on_backend(p->m) ? "device"
                                                : "device (no sample op: host fallback)";
}

/* Linear-layer FLOPs of one token through n layers (2 per multiply-add). */
static double skv_bench_layer_flops(const skv_model_config_t *c, int swiftkv_q)
{
    double H = c->hidden_size, F = c->intermediate_size;
    double q = (double)c->n_heads * c->head_dim, kv = (double)c->n_kv_heads * c->head_dim;
    double proj = swiftkv_q ? q * H : (q + 2 * kv) * H;
    return 2.0 * (proj + q * H + 3 * F * H);
}

/* Model FLOPs of a prefill of B prompts of P tokens (linear layers + attention scores and
 * values over the causal triangle), matching what the engine runs in its mode. */
static double skv_bench_prefill_flops(const skv_model_t *m, int32_t B, int32_t P)
{
    const skv_model_config_t *c = skv_model_config(m);
    int sw = skv_model_is_swiftkv(m);
    int32_t Lk = sw ? c->n_kv_layers : c->n_layers;
    double kvw = (double)c->n_kv_heads * c->head_dim, H = c->hidden_size;
    double attn_tok = 2.0 * 2.0 * c->n_heads * c->head_dim * (P + 1) / 2.0; /* QK + PV, avg ctx */
    double per_tok = Lk * (skv_bench_layer_flops(c, 0) + attn_tok);
    double total = (double)B * P * per_tok;
    if (sw) {
        total += (double)B * P * 2.0 * H * kvw * 2 * (c->n_layers - Lk) / c->kv_group;
        total += (double)B * (c->n_layers - Lk) * (skv_bench_layer_flops(c, 1) + 2 * attn_tok);
    }
    return total + (double)B * 2.0 * H * c->vocab_size;
}

static void skv_bench_tokens(int32_t *t, int32_t n, int32_t vocab, uint64_t *rng)
{
    for (int32_t i = 0; i < n; i++) {
        *rng = *rng * 6364136223846793005ULL + 1442695040888963407ULL;
        t[i] = (int32_t)((*rng >> 33) % (uint64_t)vocab);
    }
}

/* Times one prefill step of B prompts (after one warm-up); returns seconds or < 0. */
static double skv_bench_prefill(skv_bench_pick_t *pk, int32_t B, int32_t P, int32_t steps)
{
    skv_model_t *m = pk->m;
    skv_kv_pool_t *pool = pk->pool;
    const skv_model_config_t *c = skv_model_config(m);
    int32_t bs = skv_kv_pool_layout(pool)->block_size, nb = (P + bs - 1) / bs;
    int32_t *tok = skv_mallocn((size_t)B * P, sizeof(int32_t));
    int32_t *blocks = skv_mallocn((size_t)B * nb, sizeof(int32_t));
    skv_seq_step_t *seqs = skv_calloc((size_t)B, sizeof(*seqs));
    uint64_t rng = 1;
    double best = -1;
    if (skv_kv_pool_alloc(pool, B * nb, blocks) != SKV_STATUS_OK) {
        fprintf(stderr, "pool too small for prefill batch %d\n", B);
        goto out;
    }
    skv_bench_tokens(tok, B * P, c->vocab_size, &rng);
    for (int32_t s = 0; s < B; s++) {
        seqs[s] = (skv_seq_step_t){tok + (size_t)s * P, P, 0, blocks + (size_t)s * nb, nb, 1};
    }
    for (int32_t it = 0; it <= steps; it++) {
        int64_t t0 = skv_clock_now_ns();
        if (skv_bench_step(pk, seqs, B) != SKV_STATUS_OK) {
            best = -1;
            break;
        }
        double dt = (skv_clock_now_ns() - t0) / 1e9;
        best = it == 0 ? -1 : (best < 0 || dt < best ? dt : best); /* it 0 is the warm-up */
    }
    skv_kv_pool_release(pool, B * nb, blocks);
out:
    skv_free(tok);
    skv_free(blocks);
    skv_free(seqs);
    return best;
}

/* Times decode steps of B sequences at context ctx (their KV is whatever the pool holds:
 * attention cost depends on the length, not the values). Returns median-free best seconds. */
static double skv_bench_decode(skv_bench_pick_t *pk, int32_t B, int32_t ctx, int32_t steps)
{
    skv_kv_pool_t *pool = pk->pool;
    int32_t bs = skv_kv_pool_layout(pool)->block_size, nb = (ctx + 1 + bs - 1) / bs;
    int32_t *blocks = skv_mallocn((size_t)B * nb, sizeof(int32_t));
    int32_t *tok = skv_calloc((size_t)B, sizeof(int32_t));
    skv_seq_step_t *seqs = skv_calloc((size_t)B, sizeof(*seqs));
    double total = 0;
    int32_t timed = 0;
    if (skv_kv_pool_alloc(pool, B * nb, blocks) != SKV_STATUS_OK) {
        fprintf(stderr, "pool too small for decode batch %d at context %d\n", B, ctx);
        total = -1;
        goto out;
    }
    for (int32_t s = 0; s < B; s++) {
        seqs[s] = (skv_seq_step_t){tok + s, 1, ctx, blocks + (size_t)s * nb, nb, 1};
    }
    for (int32_t it = 0; it <= steps; it++) {
        int64_t t0 = skv_clock_now_ns();
        if (skv_bench_step(pk, seqs, B) != SKV_STATUS_OK) {
            total = -1;
            break;
        }
        if (it > 0) {
            total += (skv_clock_now_ns() - t0) / 1e9;
            timed++;
        }
    }
    skv_kv_pool_release(pool, B * nb, blocks);
out:
    skv_free(blocks);
    skv_free(tok);
    skv_free(seqs);
    return total < 0 ? -1 : total / timed;
}

/* weight_upload of a [65536, 4096] weight from host rows of each dtype; prints GB/s of host
 * bytes (best of 3, after one warm-up). */
static void skv_bench_upload(skv_backend_t *be)
{
    const int64_t rows = 65536, cols = 4096;
    skv_dtype_t wd = be->ops->weight_dtype, srcs[3] = {SKV_DTYPE_F32, SKV_DTYPE_F16, SKV_DTYPE_BF16};
    void *dst = NULL;
    void *host = skv_mallocn((size_t)(rows * cols), 4);
    if (host == NULL || be->ops->alloc(be, (size_t)(rows * cols) * skv_dtype_size(wd), &dst) != 0) {
        fprintf(stderr, "upload bench: cannot allocate\n");
        skv_free(host);
        return;
    }
    for (int64_t i = 0; i < rows * cols; i++) {
        ((uint32_t *)host)[i] = 0x3F803F80u + (uint32_t)(i & 0xFF); /* ~1.0 in every dtype */
    }
    skv_tensor_t t = skv_tensor_make(dst, wd, rows, cols);
    for (int k = 0; k < 3; k++) {
        double best = -1;
        for (int it = 0; it < 4; it++) {
            int64_t t0 = skv_clock_now_ns();
            if (be->ops->weight_upload(be, &t, 0, host, srcs[k], rows) != 0 ||
                be->ops->sync(be) != 0) {
                break;
            }
            double dt = (skv_clock_now_ns() - t0) / 1e9;
            best = it == 0 ? best : (best < 0 || dt < best ? dt : best);
        }
        double bytes = (double)(rows * cols) * skv_dtype_size(srcs[k]);
        printf("upload   %4s -> %s %lldx%lld: %8.1f ms  %6.1f GB/s of host bytes\n",
               skv_dtype_name(srcs[k]), skv_dtype_name(wd), (long long)rows, (long long)cols,
               best * 1e3, bytes / best / 1e9);
    }
    be->ops->free(be, dst);
    skv_free(host);
}

static skv_model_mode_t skv_bench_mode(const char *s)
{
    return strcmp(s, "base") == 0      ? SKV_MODEL_MODE_BASE
           : strcmp(s, "swiftkv") == 0 ? SKV_MODEL_MODE_SWIFTKV
                                       : SKV_MODEL_MODE_AUTO;
}

static int32_t skv_bench_max(const int32_t *v, int32_t n)
{
    int32_t m = 1;
    for (int32_t i = 0; i < n; i++) {
        m = v[i] > m ? v[i] : m;
    }
    return m;
}

int main(int argc, char **argv)
{
    skv_bench_args_t a;
    int parsed = skv_bench_parse(argc, argv, &a);
    if (parsed != SKV_CLI_OK) {
        return parsed == SKV_CLI_HELP ? 0 : 2;
    }
    int32_t max_pb = skv_bench_max(a.prefill_batches, a.n_prefill);
    int32_t max_db = skv_bench_max(a.decode_batches, a.n_decode);
    int32_t max_c = skv_bench_max(a.contexts, a.n_ctx);
    skv_backend_t *be = NULL;
    skv_model_t *m = NULL;
    skv_kv_pool_t *pool = NULL;
    /* The context limit covers what is benchmarked, which keeps block tables small. */
    int32_t need_ctx = a.prompt_len > max_c + 1 ? a.prompt_len : max_c + 1;
    int32_t budget = max_pb * a.prompt_len > max_db ? max_pb * a.prompt_len : max_db;
    skv_model_opts_t mo = {skv_bench_mode(a.mode), budget, max_pb > max_db ? max_pb : max_db,
                           need_ctx, a.kv_dtype, 0};
    skv_model_opts_env(&mo);
    skv_model_config_t pcfg;
    if (skv_backend_create(a.backend, a.threads, 0, &be) != SKV_STATUS_OK) {
        return 1;
    }
    if (a.upload) {
        skv_bench_upload(be);
    }
    int64_t t_load = skv_clock_now_ns();
    skv_status_t st = a.preset ? skv_model_config_preset(a.preset, &pcfg) : SKV_STATUS_OK;
    skv_model_tp_opts_t tp = {a.tp, a.backend, a.threads, 0};
    if (st == SKV_STATUS_OK && a.tp > 1) { /* the ranks create their own backends */
        st = a.preset ? skv_model_create_random_tp(&pcfg, &tp, &mo, 1, &m)
                      : skv_model_load_tp(a.model_dir, &tp, &mo, &m);
    } else if (st == SKV_STATUS_OK) {
        st = a.preset ? skv_model_create_random(&pcfg, be, &mo, 1, &m)
                      : skv_model_load(a.model_dir, be, &mo, &m);
    }
    if (st != SKV_STATUS_OK) {
        fprintf(stderr, "cannot build the model: %s\n", skv_status_str(st));
        return 1;
    }
    double load_s = (skv_clock_now_ns() - t_load) / 1e9;
    const skv_model_config_t *c = skv_model_config(m);
    int64_t need_p = (int64_t)max_pb * ((a.prompt_len + 15) / 16);
    int64_t need_d = (int64_t)max_db * ((max_c + 16) / 16);
    if (skv_model_kv_pool_create(m, 16, need_p > need_d ? need_p : need_d, &pool) != SKV_STATUS_OK) {
        return 1;
    }
    skv_bench_pick_t pick;
    if (a.sample == SKV_BENCH_SAMPLE_DEFAULT) {
        a.sample =
            skv_model_samples_on_backend(m) ? SKV_BENCH_SAMPLE_DEVICE : SKV_BENCH_SAMPLE_HOST;
    }
    if (skv_bench_pick_init(&pick, m, pool, a.sample, &a.sampling) != SKV_STATUS_OK) {
        fprintf(stderr, "cannot allocate the samplers\n");
        return 1;
    }
    FILE *js = a.json ? fopen(a.json, "w") : NULL;
    const char *kvd = skv_dtype_name(skv_kv_pool_layout(pool)->dtype);
    printf("model %s  backend %s  tp %d  mode %s  L %d  Lk %d  H %d  kv %s  (built in %.1f s)\n",
           a.preset ? a.preset : a.model_dir, a.backend, a.tp,
           skv_model_is_swiftkv(m) ? "swiftkv" : "base", c->n_layers,
           skv_model_is_swiftkv(m) ? c->n_kv_layers : c->n_layers, c->hidden_size, kvd, load_s);
    printf("sample %s  (temperature %g  top_k %d  top_p %g)\n", skv_bench_sample_name(&pick),
           a.sampling.temperature, a.sampling.top_k, a.sampling.top_p);
    if (js) {
        fprintf(js,
                "{\"backend\": \"%s\", \"mode\": \"%s\", \"kv_dtype\": \"%s\", "
                "\"sample\": \"%s\", \"prefill\": [",
                a.backend, skv_model_is_swiftkv(m) ? "swiftkv" : "base", kvd,
                skv_bench_sample_name(&pick));
    }
    for (int32_t i = 0; i < a.n_prefill; i++) {
        int32_t B = a.prefill_batches[i];
        double s = skv_bench_prefill(&pick, B, a.prompt_len, a.steps);
        double flops = skv_bench_prefill_flops(m, B, a.prompt_len);
        printf("prefill  batch %3d x %5d tokens: %9.1f ms  %10.0f tok/s  %8.1f GFLOP/s\n", B,
               a.prompt_len, s * 1e3, B * a.prompt_len / s, flops / s / 1e9);
        if (js) {
            fprintf(js, "%s{\"batch\": %d, \"prompt_len\": %d, \"seconds\": %.6f, \"tok_s\": %.1f, "
                        "\"gflops\": %.2f}", i ? ", " : "", B, a.prompt_len, s,
                    B * a.prompt_len / s, flops / s / 1e9);
        }
    }
    if (js) {
        fprintf(js, "], \"decode\": [");
    }
    for (int32_t k = 0; k < a.n_ctx; k++) {
        for (int32_t i = 0; i < a.n_decode; i++) {
            int32_t B = a.decode_batches[i], C = a.contexts[k];
            double s = skv_bench_decode(&pick, B, C, a.steps);
            printf("decode   batch %3d ctx %5d:       %9.2f ms/step  %8.1f tok/s\n", B, C,
                   s * 1e3, B / s);
            if (js) {
                fprintf(js, "%s{\"batch\": %d, \"context\": %d, \"ms_step\": %.4f, "
                            "\"tok_s\": %.1f}", (k || i) ? ", " : "", B, C, s * 1e3, B / s);
            }
        }
    }
    if (js) {
        fprintf(js, "]}\n");
        fclose(js);
    }
    skv_bench_pick_free(&pick);
    skv_kv_pool_destroy(pool);
    skv_model_destroy(m);
    be->ops->destroy(be);
    return 0;
}
