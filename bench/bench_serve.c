/*
 * skv_bench_serve: a load generator for the public skv.v1.Generation API (the router, or a
 * worker serving both roles), in the spirit of `vllm bench serve`. This file owns the command
 * line, the sequence of runs (warm-up, one run or a rate sweep) and the exit status; the other
 * bench_serve_*.c files are listed in bench_serve.h.
 *
 *   skv_bench_serve [--target HOST:PORT] [mode] [inputs] [options]
 *     --target HOST:PORT        the router (default 127.0.0.1:50051; any gRPC target)
 *   mode (one of; default --request-rate inf):
 *     --concurrency N           keep N requests in flight (1..512)
 *     --request-rate R          Poisson arrivals of R req/s (seeded); inf: all at once
 *     --sweep-rates R1,R2,...   one run per rate, in turn (each with the same prompts)
 *     --max-concurrency N       in rate modes: at most N in flight (default and limit 512)
 *   inputs:
 *     --num-prompts N           measured requests per run (default 1000; with --workload:
 *                               the file's count, cycled or cut to N when given)
 *     --input-len N --output-len N   random prompts: N token ids in, N tokens out (1024, 128)
 *     --random-range-ratio R    lengths uniform in [len*(1-R), len*(1+R)] (0 <= R < 1; 0)
 *     --vocab-range LO:HI       random ids in [LO, HI) (default: the model's whole vocabulary)
 *     --workload FILE           JSONL: {"prompt": "text" | "prompt_token_ids": [ids],
 *                               "max_tokens": N (default --output-len)} per line
 *     --seed S                  prompts and arrivals (default 0)
 *     --temperature T           sampling temperature (default 0: greedy)
 *     --allow-eos               let EOS end a request (default: ignore_eos, so every request
 *                               produces exactly its max tokens)
 *   options:
 *     --warmup N                N requests before the measured runs, not counted (default 0;
 *                               random prompts of another seed, or the workload's first lines)
 *     --timeout-ms N            deadline of each request (default 120000)
 *     --goodput ttft:MS tpot:MS e2el:MS   requests/s that meet every given limit
 *     --json FILE               parameters, model and every run's numbers
 *     --progress | --no-progress   the bar on stderr (default: when stderr is a terminal)
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
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static int skv_bench_usage(FILE *out)
{
    fprintf(out,
            "usage: skv_bench_serve [--target HOST:PORT] [--concurrency N | --request-rate R|inf"
            " | --sweep-rates R1,R2,..] [--max-concurrency N] [--num-prompts N] [--input-len N]"
            " [--output-len N] [--random-range-ratio R] [--vocab-range LO:HI] [--workload FILE]"
            " [--seed S] [--temperature T] [--allow-eos] [--warmup N] [--timeout-ms N]"
            " [--goodput ttft:MS tpot:MS e2el:MS] [--json FILE] [--progress|--no-progress]\n"
            "  (the header of bench/bench_serve.c describes each flag)\n");
    return 2;
}

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

/* One flag: how its value is read and where it goes. */
typedef struct {
    const char *name;
    char kind; /* i int, l int64, u uint64, d double, s string, 1 / 0 set to 1 / 0, p parser */
    void *dst;
    double lo, hi;                                    /* i, l, d: the accepted range */
    int (*parse)(const char *, skv_bench_config_t *); /* p */
} skv_bench_flag_t;

/* Fills flags (SKV_BENCH_N_FLAGS entries) with cfg's destinations. */
#define SKV_BENCH_N_FLAGS 21
static void skv_bench_flags(skv_bench_config_t *c, skv_bench_flag_t *f)
{
    const double big = 1e7, inf = INFINITY, inflight = SKV_BENCH_MAX_INFLIGHT;
    const skv_bench_flag_t t[SKV_BENCH_N_FLAGS] = {
        {"target", 's', &c->target, 0, 0, NULL},
        {"timeout-ms", 'l', &c->timeout_ms, 1, 86400000, NULL},
        {"concurrency", 'i', &c->concurrency, 1, inflight, NULL},
        {"request-rate", 'd', &c->request_rate, 1e-9, inf, NULL},
        {"max-concurrency", 'i', &c->max_concurrency, 1, inflight, NULL},
        {"num-prompts", 'i', &c->num_prompts, 1, big, NULL},
        {"warmup", 'i', &c->warmup, 0, big, NULL},
        {"input-len", 'i', &c->input_len, 1, big, NULL},
        {"output-len", 'i', &c->output_len, 1, big, NULL},
        {"random-range-ratio", 'd', &c->range_ratio, 0, 0.999999, NULL},
        {"vocab-range", 'p', NULL, 0, 0, skv_bench_parse_vocab},
        {"seed", 'u', &c->seed, 0, 0, NULL},
        {"temperature", 'd', &c->temperature, 0, 100, NULL},
        {"allow-eos", '1', &c->allow_eos, 0, 0, NULL},
        {"workload", 's', &c->workload, 0, 0, NULL},
        {"goodput", 'p', NULL, 0, 0, skv_bench_parse_goodput},
        {"json", 's', &c->json_path, 0, 0, NULL},
        {"progress", '1', &c->progress, 0, 0, NULL},
        {"no-progress", '0', &c->progress, 0, 0, NULL},
        {"sweep-rates", 'p', NULL, 0, 0, skv_bench_parse_rates},
        {"help", 'h', NULL, 0, 0, NULL}};
    memcpy(f, t, sizeof(t));
}

/* Stores one flag's value; returns 0 or -1 (bad value). */
static int skv_bench_apply(const skv_bench_flag_t *f, const char *arg, skv_bench_config_t *cfg)
{
    double d = 0;
    char *end;
    switch (f->kind) {
    case 's':
        *(const char **)f->dst = arg;
        return 0;
    case '1':
    case '0':
        *(int *)f->dst = f->kind == '1';
        return 0;
    case 'u':
        *(uint64_t *)f->dst = strtoull(arg, &end, 10);
        return end == arg || *end != '\0' ? -1 : 0;
    case 'p':
        return f->parse(arg, cfg);
    }
    if (skv_bench_parse_double(arg, f->lo, f->hi, &d) != 0 || (f->kind != 'd' && d != floor(d))) {
        return -1;
    }
    if (f->kind == 'i') {
        *(int *)f->dst = (int)d;
    } else if (f->kind == 'l') {
        *(int64_t *)f->dst = (int64_t)d;
    } else {
        *(double *)f->dst = d;
    }
    return 0;
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

/* Parses argv into cfg; returns -1 on bad usage (message printed), 1 for --help, 0 ok. */
static int skv_bench_parse(int argc, char **argv, skv_bench_config_t *cfg, int *num_given)
{
    skv_bench_flag_t flags[SKV_BENCH_N_FLAGS];
    struct option opts[SKV_BENCH_N_FLAGS + 1] = {{0}};
    int c, rate_given = 0;
    skv_bench_flags(cfg, flags);
    for (int i = 0; i < SKV_BENCH_N_FLAGS; i++) {
        int no_arg = flags[i].kind == '0' || flags[i].kind == '1' || flags[i].kind == 'h';
        opts[i] = (struct option){flags[i].name, no_arg ? 0 : 1, NULL, i};
    }
    *num_given = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c == '?') {
            return -1; /* getopt said why */
        }
        if (flags[c].kind == 'h') {
            return 1;
        }
        if (skv_bench_apply(&flags[c], optarg, cfg) != 0) {
            fprintf(stderr, "skv_bench_serve: bad value for --%s: '%s'\n", flags[c].name, optarg);
            return -1;
        }
        rate_given |= flags[c].dst == &cfg->request_rate;
        *num_given |= flags[c].dst == &cfg->num_prompts;
    }
    /* `--goodput ttft:500 tpot:50`: the terms after the first are left as operands */
    for (; optind < argc; optind++) {
        if (!cfg->goodput || skv_bench_parse_goodput_term(argv[optind], cfg) != 0) {
            fprintf(stderr, "skv_bench_serve: unexpected argument '%s'\n", argv[optind]);
            return -1;
        }
    }
    const char *why = skv_bench_check_mode(cfg, rate_given);
    if (why != NULL) {
        fprintf(stderr, "skv_bench_serve: %s\n", why);
        return -1;
    }
    return 0;
}

static void skv_bench_defaults(skv_bench_config_t *cfg)
{
    *cfg = (skv_bench_config_t){.target = "127.0.0.1:50051",
                                .timeout_ms = 120000,
                                .request_rate = INFINITY,
                                .num_prompts = 1000,
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
    int rc = skv_bench_parse(argc, argv, &b.cfg, &num_given);
    if (rc > 0) {
        skv_bench_usage(stdout);
        return 0;
    }
    if (rc < 0) {
        return skv_bench_usage(stderr);
    }
    return skv_bench_main(&b, num_given);
}
