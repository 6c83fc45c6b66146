/*
 * skv_bench_serve: a load generator for the public skv.v1.Generation API (the router, or a
 * worker serving both roles), in the spirit of `vllm bench serve`. This file owns the command
 * line, the sequence of runs (warm-up, one run or a rate sweep) and the exit status; the other
 * bench_serve_*.c files are listed in bench_serve.h.
 *
 *   skv_bench_serve [--target HOST:PORT] [mode] [inputs] [options]
 * `skv_bench_serve --help` lists every flag with its default and SKV_BENCH_SERVE_* variable (one
 * table, base/cli.h). The mode is one of --concurrency N (N requests in flight), --request-rate R
 * (Poisson arrivals of R req/s, seeded; inf, the default: all at once, within
 * --max-concurrency) or --sweep-rates R1,R2,... (one run per rate, each with the same prompts).
 * Prompts are random token ids of exact length (--input-len, --output-len tokens out, every
 * request forced to its full output unless --allow-eos), or a JSONL --workload of
 * {"prompt": "text" | "prompt_token_ids": [ids], "max_tokens": N} lines. --goodput takes one or
 * more limits, ttft:MS tpot:MS e2el:MS (as separate words or comma-separated), and counts the
 * requests/s that meet every one.
 * Example (router on the default port, 8 in flight, then a sweep with a plot):
 *   skv_bench_serve --target 127.0.0.1:50051 --concurrency 8 --num-prompts 64 \
 *       --input-len 256 --output-len 64
 *   skv_bench_serve --sweep-rates 1,2,4,8 --num-prompts 100 --json sweep.json
 *   python3 bench/plot_serve.py sweep.json --out sweep.png
 * Stdout: a table per run (counts, duration, request/token throughput, goodput, TTFT / TPOT /
 * ITL / E2E mean, p50, p90, p99, max in ms), a line per rate after a sweep. TTFT is send ->
 * first token, TPOT (e2e - TTFT) / (tokens - 1), ITL each gap between token chunks; latencies
 * count completed requests only (bench_serve_stats.c has the definitions).
 * Exit: 0 when every measured request succeeded, 1 when any failed (or the server could not be
 * reached, or a run gave up on late requests), 2 on bad usage.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/cli.h"
#include "bench/bench_serve.h"

#define SKV_BENCH_WARMUP_SEED     0x5eedf00dull
#define SKV_BENCH_INFO_TIMEOUT_MS 30000 /* the ModelInfo call before the runs */

/* What one process holds across its runs. */
typedef struct {
    skv_bench_config_t cfg;
    skv_grpc_channel_t *channel;
    skv_bench_model_t model;
    skv_bench_prompt_t *prompts, *warmup;
    size_t n_prompts;
    skv_bench_summary_t sums[SKV_BENCH_MAX_RATES];
    size_t n_sums;
} skv_bench_t;

/* ---- flag values ---- */

/* A double in [lo, hi] ("inf" allowed when hi is infinite). */
static int skv_bench_parse_double(const char *s, double lo, double hi, double *out)
{
    char *end;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || isnan(v) || v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

/* "1,2,4,8" into cfg->rates (finite, > 0). */
static int skv_bench_parse_rates(const char *s, skv_bench_config_t *cfg)
{
    char buf[1024], *save = NULL;
    snprintf(buf, sizeof(buf), "%s", s);
    cfg->n_rates = 0;
    for (char *tok = strtok_r(buf, ",", &save); tok != NULL; tok = strtok_r(NULL, ",", &save)) {
        if (cfg->n_rates == SKV_BENCH_MAX_RATES ||
            skv_bench_parse_double(tok, 1e-9, 1e12, &cfg->rates[cfg->n_rates]) != 0) {
            return -1;
        }
        cfg->n_rates++;
    }
    return cfg->n_rates > 0 ? 0 : -1;
}

/* One goodput term "ttft:500" into cfg. */
static int skv_bench_parse_goodput_term(const char *term, skv_bench_config_t *cfg)
{
    static const char *keys[] = {"ttft:", "tpot:", "e2el:"};
    double *dst[] = {&cfg->goodput_ttft_ms, &cfg->goodput_tpot_ms, &cfg->goodput_e2el_ms};
    for (int k = 0; k < 3; k++) {
        if (strncmp(term, keys[k], 5) == 0) {
            cfg->goodput = 1;
            return skv_bench_parse_double(term + 5, 1e-9, 1e12, dst[k]);
        }
    }
    return -1;
}

/* "ttft:500 tpot:50" or "ttft:500,tpot:50" (one or more terms) into cfg. */
static int skv_bench_parse_goodput(const char *s, skv_bench_config_t *cfg)
{
    char buf[256], *save = NULL;
    int n = 0;
    snprintf(buf, sizeof(buf), "%s", s);
    for (char *t = strtok_r(buf, ", ", &save); t != NULL; t = strtok_r(NULL, ", ", &save), n++) {
        if (skv_bench_parse_goodput_term(t, cfg) != 0) {
            return -1;
        }
    }
    return n > 0 ? 0 : -1;
}

static int skv_bench_parse_vocab(const char *s, skv_bench_config_t *cfg)
{
    char *end;
    long lo = strtol(s, &end, 10);
    if (end == s || *end != ':') {
        return -1;
    }
    const char *h = end + 1;
    long hi = strtol(h, &end, 10);
    if (end == h || *end != '\0' || lo < 0 || hi <= lo || hi > INT32_MAX) {
        return -1;
    }
    cfg->vocab_lo = (int32_t)lo;
    cfg->vocab_hi = (int32_t)hi;
    return 0;
}

/* ---- the command line ---- */

/* The flags not stored in the configuration as they are given. */
typedef struct {
    const char *vocab, *goodput, *sweep;
    int64_t seed;
    int no_progress;
} skv_bench_flags_t;

#define SKV_BENCH_I(name, env, field, lo, hi, help)                                                \
    {name, env, SKV_CLI_INT, &c->field, lo, hi, 0, 0, help}
#define SKV_BENCH_D(name, env, field, lo, hi, help)                                                \
    {name, env, SKV_CLI_DOUBLE, &c->field, 0, 0, lo, hi, help}
#define SKV_BENCH_S(name, env, dst, help)                                                          \
    {name, env, SKV_CLI_STRING, dst, 0, 0, 0, 0, help}

/* Parses the environment and argv into c and f up to the first positional argument (its index
 * in *pos_p); SKV_CLI_OK, SKV_CLI_HELP or SKV_CLI_USAGE (base/cli.h). */
static int skv_bench_table(int argc, char **argv, skv_bench_config_t *c, skv_bench_flags_t *f,
                           int *pos_p)
{
    const int big = 10000000, inflight = SKV_BENCH_MAX_INFLIGHT;
    const skv_cli_opt_t opts[] = {
        SKV_BENCH_S("target", "SKV_BENCH_SERVE_TARGET", &c->target,
                    "the router (or any gRPC target)"),
        {"timeout-ms", "SKV_BENCH_SERVE_TIMEOUT_MS", SKV_CLI_INT64, &c->timeout_ms, 1, 86400000, 0,
         0, "deadline of each request"},
        SKV_BENCH_I("concurrency", "SKV_BENCH_SERVE_CONCURRENCY", concurrency, 1, inflight,
                    "mode: keep N requests in flight (0: a rate mode)"),
        SKV_BENCH_D("request-rate", "SKV_BENCH_SERVE_REQUEST_RATE", request_rate, 1e-9, INFINITY,
                    "mode: Poisson arrivals of R req/s (seeded); inf: all at once"),
        SKV_BENCH_S("sweep-rates", "SKV_BENCH_SERVE_SWEEP_RATES", &f->sweep,
                    "mode: one run per rate, R1,R2,... in turn (each with the same prompts)"),
        SKV_BENCH_I("max-concurrency", "SKV_BENCH_SERVE_MAX_CONCURRENCY", max_concurrency, 1,
                    inflight, "rate modes: at most N in flight (0: 512, the limit)"),
        SKV_BENCH_I("num-prompts", "SKV_BENCH_SERVE_NUM_PROMPTS", num_prompts, 1, big,
                    "measured requests per run (0: 1000, or the --workload file's count; a "
                    "workload is cycled or cut to N when given)"),
        SKV_BENCH_I("input-len", "SKV_BENCH_SERVE_INPUT_LEN", input_len, 1, big,
                    "random prompts: token ids in"),
        SKV_BENCH_I("output-len", "SKV_BENCH_SERVE_OUTPUT_LEN", output_len, 1, big,
                    "tokens out (a workload line's default max_tokens)"),
        SKV_BENCH_D("random-range-ratio", "SKV_BENCH_SERVE_RANDOM_RANGE_RATIO", range_ratio, 0,
                    0.999999, "random prompts: lengths uniform in [len*(1-R), len*(1+R)]"),
        SKV_BENCH_S("vocab-range", "SKV_BENCH_SERVE_VOCAB_RANGE", &f->vocab,
                    "LO:HI: random ids in [LO, HI) (default: the model's whole vocabulary)"),
        SKV_BENCH_S("workload", "SKV_BENCH_SERVE_WORKLOAD", &c->workload,
                    "JSONL prompts: {\"prompt\": TEXT | \"prompt_token_ids\": [ids], "
                    "\"max_tokens\": N} per line"),
        {"seed", "SKV_BENCH_SERVE_SEED", SKV_CLI_INT64, &f->seed, 0, INT64_MAX, 0, 0,
         "prompts and arrivals"},
        SKV_BENCH_D("temperature", "SKV_BENCH_SERVE_TEMPERATURE", temperature, 0, 100,
                    "sampling temperature; 0: greedy"),
        {"allow-eos", "SKV_BENCH_SERVE_ALLOW_EOS", SKV_CLI_SWITCH, &c->allow_eos, 0, 1, 0, 0,
         "let EOS end a request (default: ignore_eos, exactly the max tokens out)"},
        {"warmup", "SKV_BENCH_SERVE_WARMUP", SKV_CLI_INT, &c->warmup, 0, big, 0, 0,
         "requests before the measured runs, not counted (random prompts of another seed, or "
         "the workload's first lines)"},
        SKV_BENCH_S("goodput", "SKV_BENCH_SERVE_GOODPUT", &f->goodput,
                    "limits ttft:MS tpot:MS e2el:MS (one or more): requests/s that meet each"),
        SKV_BENCH_S("json", "SKV_BENCH_SERVE_JSON", &c->json_path,
                    "write the parameters, model and every run's numbers there"),
        {"progress", "SKV_BENCH_SERVE_PROGRESS", SKV_CLI_SWITCH, &c->progress, 0, 1, 0, 0,
         "the progress bar on stderr (default: when stderr is a terminal)"},
        {"no-progress", NULL, SKV_CLI_SWITCH, &f->no_progress, 0, 1, 0, 0, "no progress bar"},
    };
    return skv_cli_parse("skv_bench_serve",
                         "A load generator for the public skv.v1.Generation API (the header of "
                         "bench/bench_serve.c describes the modes and the output).",
                         opts, sizeof(opts) / sizeof(opts[0]), argc, argv, pos_p);
}

/* Moves the goodput limits after the first ("--goodput ttft:500 tpot:50 --json F") out of argv
 * into terms; the other arguments go to args (both arrays have argc + 1 entries). Returns the
 * count in args; *n_terms_p gets the terms'. */
static int skv_bench_split_goodput(int argc, char **argv, char **args, char **terms, int *n_terms_p)
{
    int n = 0, after = 0;
    *n_terms_p = 0;
    for (int i = 0; i < argc; i++) {
        if (after && argv[i][0] != '-' && strchr(argv[i], ':') != NULL) {
            terms[(*n_terms_p)++] = argv[i];
            continue;
        }
        args[n++] = argv[i];
        after = strncmp(argv[i], "--goodput=", 10) == 0;
        if (strcmp(argv[i], "--goodput") == 0 && i + 1 < argc) {
            args[n++] = argv[++i];
            after = 1;
        }
    }
    args[n] = NULL;
    return n;
}

static const char *skv_bench_check_mode(skv_bench_config_t *cfg, int rate_given)
{
    int modes = (cfg->concurrency > 0) + rate_given + (cfg->n_rates > 0);
    if (modes > 1) {
        return "--concurrency, --request-rate and --sweep-rates exclude each other";
    }
    if (cfg->concurrency > 0 && cfg->max_concurrency > 0) {
        return "--max-concurrency goes with --request-rate or --sweep-rates";
    }
    if (cfg->workload != NULL && cfg->range_ratio > 0) {
        return "--random-range-ratio applies to random prompts, not to --workload";
    }
    return NULL;
}

/* Reports a bad value of flag; returns -1. */
static int skv_bench_bad(const char *flag, const char *value)
{
    fprintf(stderr, "skv_bench_serve: bad value for --%s: '%s'\n", flag, value);
    return -1;
}

/* Stores the flags parsed as text into cfg: the vocabulary range, the rates and the goodput
 * limits (with the terms moved out of argv and the trailing ones, rest); 0 or -1 (reported). */
static int skv_bench_values(skv_bench_config_t *cfg, const skv_bench_flags_t *f, char **terms,
                            int n_terms, char **rest, int n_rest)
{
    if (f->vocab != NULL && skv_bench_parse_vocab(f->vocab, cfg) != 0) {
        return skv_bench_bad("vocab-range", f->vocab);
    }
    if (f->sweep != NULL && skv_bench_parse_rates(f->sweep, cfg) != 0) {
        return skv_bench_bad("sweep-rates", f->sweep);
    }
    if (f->goodput != NULL && skv_bench_parse_goodput(f->goodput, cfg) != 0) {
        return skv_bench_bad("goodput", f->goodput);
    }
    for (int i = 0; i < n_terms; i++) {
        if (skv_bench_parse_goodput_term(terms[i], cfg) != 0) {
            return skv_bench_bad("goodput", terms[i]);
        }
    }
    for (int i = 0; i < n_rest; i++) { /* `--json F --goodput ttft:500 tpot:50` */
        if (!cfg->goodput || skv_bench_parse_goodput_term(rest[i], cfg) != 0) {
            fprintf(stderr, "skv_bench_serve: unexpected argument '%s'\n", rest[i]);
            return -1;
        }
    }
    return 0;
}

/* Parses the environment and argv into cfg (defaults in it); *num_given: --num-prompts was
 * given. SKV_CLI_OK, SKV_CLI_HELP or SKV_CLI_USAGE (reported). */
static int skv_bench_parse(int argc, char **argv, skv_bench_config_t *cfg, int *num_given)
{
    char **args = calloc((size_t)argc + 1, sizeof(char *));
    char **terms = calloc((size_t)argc + 1, sizeof(char *));
    skv_bench_flags_t f = {.seed = (int64_t)cfg->seed};
    int n_terms = 0, pos = 0, st = SKV_CLI_USAGE;
    if (args != NULL && terms != NULL) {
        int n = skv_bench_split_goodput(argc, argv, args, terms, &n_terms);
        st = skv_bench_table(n, args, cfg, &f, &pos);
        if (st == SKV_CLI_OK &&
            skv_bench_values(cfg, &f, terms, n_terms, args + pos, n - pos) != 0) {
            st = SKV_CLI_USAGE;
        }
    }
    free(args);
    free(terms);
    if (st != SKV_CLI_OK) {
        return st;
    }
    cfg->seed = (uint64_t)f.seed;
    cfg->progress = cfg->progress && !f.no_progress;
    *num_given = cfg->num_prompts > 0;
    cfg->num_prompts = *num_given ? cfg->num_prompts : 1000;
    const char *why = skv_bench_check_mode(cfg, !isinf(cfg->request_rate));
    if (why != NULL) {
        fprintf(stderr, "skv_bench_serve: %s\n", why);
        return SKV_CLI_USAGE;
    }
    return SKV_CLI_OK;
}

static void skv_bench_defaults(skv_bench_config_t *cfg)
{
    *cfg = (skv_bench_config_t){.target = "127.0.0.1:50051",
                                .timeout_ms = 120000,
                                .request_rate = INFINITY,
                                .input_len = 1024,
                                .output_len = 128,
                                .progress = isatty(STDERR_FILENO)};
}

/* ---- runs ---- */

/* The model's vocabulary fills in --vocab-range; prompts must fit the context. */
static skv_status_t skv_bench_check_model(skv_bench_config_t *cfg, const skv_bench_model_t *m)
{
    if (cfg->vocab_hi == 0) {
        cfg->vocab_hi = (int32_t)m->vocab_size;
    }
    if (cfg->workload != NULL) {
        return SKV_STATUS_OK;
    }
    if ((uint32_t)cfg->vocab_hi > m->vocab_size || cfg->vocab_lo >= cfg->vocab_hi) {
        fprintf(stderr, "skv_bench_serve: --vocab-range %d:%d is outside the vocabulary [0, %u)\n",
                cfg->vocab_lo, cfg->vocab_hi, m->vocab_size);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    double longest = floor((cfg->input_len + cfg->output_len) * (1.0 + cfg->range_ratio));
    if (m->context_length > 0 && longest > m->context_length) {
        fprintf(stderr,
                "skv_bench_serve: prompts of up to %.0f tokens with their output exceed "
                "the model's context of %u\n",
                longest, m->context_length);
        return SKV_STATUS_OUT_OF_RANGE;
    }
    return SKV_STATUS_OK;
}

/* Builds the measured and warm-up prompts (random ids, or the workload cycled). */
static skv_status_t skv_bench_make_prompts(skv_bench_t *b, int num_given)
{
    skv_bench_config_t *cfg = &b->cfg;
    size_t n_warm = (size_t)cfg->warmup;
    if (cfg->workload == NULL) {
        b->n_prompts = (size_t)cfg->num_prompts;
        SKV_CHECK(skv_bench_prompts_random(cfg, cfg->seed, b->n_prompts, &b->prompts));
        return skv_bench_prompts_random(cfg, cfg->seed ^ SKV_BENCH_WARMUP_SEED, n_warm, &b->warmup);
    }
    skv_bench_prompt_t *file = NULL;
    size_t n_file = 0;
    SKV_CHECK(skv_bench_prompts_load(cfg, cfg->workload, &file, &n_file));
    b->n_prompts = num_given ? (size_t)cfg->num_prompts : n_file;
    cfg->num_prompts = (int)b->n_prompts;
    skv_status_t st = skv_bench_prompts_cycle(file, n_file, 0, b->n_prompts, &b->prompts);
    if (st == SKV_STATUS_OK) {
        st = skv_bench_prompts_cycle(file, n_file, 0, n_warm, &b->warmup);
    }
    skv_bench_prompts_free(file, n_file);
    return st;
}

/* The in-flight limit of a run. */
static int skv_bench_limit(const skv_bench_config_t *cfg)
{
    if (cfg->concurrency > 0) {
        return cfg->concurrency;
    }
    return cfg->max_concurrency > 0 ? cfg->max_concurrency : SKV_BENCH_MAX_INFLIGHT;
}

/* Runs the warm-up requests (all at once within the limit); failures only warn. */
static skv_status_t skv_bench_warmup(skv_bench_t *b)
{
    size_t n = (size_t)b->cfg.warmup, failed = 0;
    skv_bench_result_t *res = calloc(n, sizeof(*res));
    skv_bench_vec_t itl = {0};
    double duration;
    int peak;
    if (res == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    skv_status_t st =
        skv_bench_run(b->channel, &b->cfg, b->warmup, n, INFINITY, skv_bench_limit(&b->cfg),
                      b->cfg.seed, b->cfg.progress ? "warmup" : NULL, res, &itl, &duration, &peak);
    for (size_t i = 0; i < n && st == SKV_STATUS_OK; i++) {
        failed += !res[i].ok;
    }
    if (failed > 0) {
        fprintf(stderr, "skv_bench_serve: warning: %zu of %zu warm-up requests failed\n", failed,
                n);
    }
    if (st != SKV_STATUS_INTERNAL) { /* INTERNAL: late threads still write res */
        free(res);
        skv_bench_vec_free(&itl);
    }
    return st;
}

/* One measured run at `rate` into b->sums[b->n_sums++]; prints its table. */
static skv_status_t skv_bench_point(skv_bench_t *b, double rate)
{
    skv_bench_result_t *res = calloc(b->n_prompts, sizeof(*res));
    skv_bench_vec_t itl = {0};
    char label[64];
    double duration = 0;
    int peak = 0, limit = skv_bench_limit(&b->cfg);
    if (res == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    if (b->cfg.concurrency > 0) {
        snprintf(label, sizeof(label), "concurrency %d", limit);
    } else {
        snprintf(label, sizeof(label), "rate %.2f", rate);
    }
    skv_status_t st =
        skv_bench_run(b->channel, &b->cfg, b->prompts, b->n_prompts, rate, limit, b->cfg.seed + 1,
                      b->cfg.progress ? label : NULL, res, &itl, &duration, &peak);
    if (st == SKV_STATUS_OK) {
        skv_bench_summary_t *sum = &b->sums[b->n_sums];
        st =
            skv_bench_summarize(&b->cfg, res, b->n_prompts, &itl, duration, rate, limit, peak, sum);
        if (st == SKV_STATUS_OK) {
            b->n_sums++;
            skv_bench_report_print(&b->cfg, sum);
            fflush(stdout);
        }
    }
    if (st != SKV_STATUS_INTERNAL) { /* INTERNAL: late threads still write res */
        free(res);
        skv_bench_vec_free(&itl);
    }
    return st;
}

/* Warm-up, then every point; writes the JSON. */
static skv_status_t skv_bench_all(skv_bench_t *b)
{
    skv_bench_config_t *cfg = &b->cfg;
    skv_status_t st = cfg->warmup > 0 ? skv_bench_warmup(b) : SKV_STATUS_OK;
    if (cfg->n_rates == 0) {
        st = st == SKV_STATUS_OK
                 ? skv_bench_point(b, cfg->concurrency > 0 ? INFINITY : cfg->request_rate)
                 : st;
    }
    for (int i = 0; i < cfg->n_rates && st == SKV_STATUS_OK; i++) {
        st = skv_bench_point(b, cfg->rates[i]);
    }
    if (cfg->n_rates > 0 && b->n_sums > 0) {
        skv_bench_report_sweep(b->sums, b->n_sums);
    }
    if (cfg->json_path != NULL && b->n_sums > 0) {
        skv_status_t js = skv_bench_report_json(cfg->json_path, cfg, &b->model, b->sums, b->n_sums);
        st = st == SKV_STATUS_OK ? js : st;
    }
    return st;
}

/* Connects, asks for the model, builds the prompts and runs; 0, 1 (a failure) or 2. */
static int skv_bench_main(skv_bench_t *b, int num_given)
{
    skv_status_t st = skv_grpc_channel_create(b->cfg.target, NULL, &b->channel);
    if (st != SKV_STATUS_OK) {
        fprintf(stderr, "skv_bench_serve: bad target '%s'\n", b->cfg.target);
        return 2;
    }
    st = skv_bench_model_info(b->channel, SKV_BENCH_INFO_TIMEOUT_MS, &b->model);
    if (st == SKV_STATUS_OK) {
        st = skv_bench_check_model(&b->cfg, &b->model);
        st = st == SKV_STATUS_OK ? skv_bench_make_prompts(b, num_given) : st;
        if (st == SKV_STATUS_OK) {
            st = skv_bench_all(b);
        } else if (st == SKV_STATUS_NO_MEMORY) {
            fprintf(stderr, "skv_bench_serve: out of memory for the prompts\n");
        }
    }
    size_t failed = 0;
    for (size_t i = 0; i < b->n_sums; i++) {
        failed += b->sums[i].failed;
    }
    if (st != SKV_STATUS_INTERNAL) { /* INTERNAL: late request threads still use these */
        skv_bench_prompts_free(b->prompts, b->n_prompts);
        skv_bench_prompts_free(b->warmup, (size_t)b->cfg.warmup);
        skv_grpc_channel_destroy(b->channel);
    }
    return st != SKV_STATUS_OK || failed > 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
    static skv_bench_t b; /* large (the sweep's summaries); zeroed */
    int num_given = 0;
    skv_bench_defaults(&b.cfg);
    int parsed = skv_bench_parse(argc, argv, &b.cfg, &num_given);
    if (parsed != SKV_CLI_OK) {
        return parsed == SKV_CLI_HELP ? 0 : 2;
    }
    return skv_bench_main(&b, num_given);
}
