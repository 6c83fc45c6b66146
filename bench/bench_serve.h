/*
 * bench_serve.h: the shared types of skv_bench_serve (a load generator for the public
 * skv.v1.Generation API) and the functions its files offer each other:
 *   bench_serve.c          command line, the run/sweep sequence, exit status
 *   bench_serve_workload.c the prompts (random token ids or a JSONL workload) and the RNG
 *   bench_serve_run.c      one run: pacing, in-flight limit, one thread per request, gRPC
 *   bench_serve_stats.c    growable arrays, the percentile, a run's summary
 *   bench_serve_report.c   the table on stdout and the JSON file
 * This header holds every include of common/ in skv_bench_serve (status, clock, gRPC client).
 */
#ifndef SKV_BENCH_SERVE_H
#define SKV_BENCH_SERVE_H

#include <stddef.h>
#include <stdint.h>

#include "base/clock.h"
#include "common/rpc/grpc_client.h"
#include "base/status.h"

#define SKV_BENCH_MAX_INFLIGHT 512 /* threads (requests in flight) at most */
#define SKV_BENCH_MAX_RATES    64  /* points of --sweep-rates */

/* The run's parameters, as parsed from the command line. */
typedef struct {
    const char *target;
    int64_t timeout_ms;  /* per request (gRPC deadline); > 0 */
    int concurrency;     /* > 0: fixed-concurrency mode */
    double request_rate; /* req/s; INFINITY: all at once (rate mode) */
    int max_concurrency; /* in-flight cap in rate mode; 0: SKV_BENCH_MAX_INFLIGHT */
    int num_prompts;     /* measured requests per run (point) */
    int warmup;          /* requests before the first run, not counted */
    int input_len, output_len;
    double range_ratio;         /* lengths uniform in [len*(1-r), len*(1+r)] */
    int32_t vocab_lo, vocab_hi; /* random ids in [lo, hi); hi 0: the model's vocabulary */
    uint64_t seed;
    double temperature;
    int allow_eos;        /* 0: every request sets ignore_eos (exactly max_tokens out) */
    const char *workload; /* JSONL file, or NULL for random token ids */
    double goodput_ttft_ms, goodput_tpot_ms, goodput_e2el_ms; /* 0: no limit */
    int goodput; /* non-zero when any goodput limit was given */
    const char *json_path;
    int progress; /* draw the progress bar on stderr */
    double rates[SKV_BENCH_MAX_RATES];
    int n_rates; /* > 0: --sweep-rates */
} skv_bench_config_t;

/* One request's input: token ids (exact prompt length) or text; and its output budget. */
typedef struct {
    int32_t *ids; /* NULL when text is set */
    size_t n_ids;
    char *text; /* NULL when ids are set */
    uint32_t max_tokens;
} skv_bench_prompt_t;

/* What the server said about the model (ModelInfo). */
typedef struct {
    char name[128];
    char backend[32];
    uint32_t vocab_size, context_length;
} skv_bench_model_t;

/* A growable array of doubles. */
typedef struct {
    double *v;
    size_t n, cap;
} skv_bench_vec_t;

/* One measured request. Times are milliseconds from the send. */
typedef struct {
    int ok;                               /* the stream ended with gRPC OK */
    int grpc_code;                        /* when !ok (-1: the request never started) */
    char message[256];                    /* when !ok: the status details */
    double ttft_ms;                       /* send -> first token; 0 when no token came */
    double e2e_ms;                        /* send -> end of stream */
    uint32_t output_tokens, input_tokens; /* input: the server's usage, else the prompt's ids */
} skv_bench_result_t;

/* mean / percentiles / max of one metric over a run, milliseconds. */
typedef struct {
    size_t count;
    double mean, p50, p90, p99, max;
} skv_bench_dist_t;

/* Everything reported about one run (one point of a sweep). */
typedef struct {
    double request_rate; /* INFINITY for "all at once" */
    int max_concurrency; /* the in-flight cap the run used */
    int peak_inflight;
    size_t completed, failed;
    double duration_s;
    uint64_t input_tokens, output_tokens;
    double request_throughput, input_throughput, output_throughput, total_throughput;
    size_t good_requests;
    double goodput; /* good requests per second */
    skv_bench_dist_t ttft, tpot, itl, e2el;
    int error_codes[17]; /* failed requests per gRPC code (0..16) */
    int error_other;     /* failed requests with another code (e.g. no thread) */
    char first_error[300];
} skv_bench_summary_t;

/* ---- bench_serve_workload.c ---- */

/* A seeded 64-bit RNG (xoshiro256**): the same seed gives the same stream on every host. */
typedef struct {
    uint64_t s[4];
} skv_bench_rng_t;

/* Seeds rng from seed (splitmix64 expansion). */
void skv_bench_rng_seed(skv_bench_rng_t *rng, uint64_t seed);

/* Returns a uniform double in [0, 1). */
double skv_bench_rng_uniform(skv_bench_rng_t *rng);

/* Returns a uniform integer in [lo, hi] (lo <= hi). */
int64_t skv_bench_rng_range(skv_bench_rng_t *rng, int64_t lo, int64_t hi);

/* Fills *prompts_p with n prompts of random token ids in [cfg->vocab_lo, cfg->vocab_hi),
 * lengths from cfg (input_len, output_len, range_ratio), drawn from `seed`. The caller frees
 * them with skv_bench_prompts_free. Returns OK or NO_MEMORY. */
skv_status_t skv_bench_prompts_random(const skv_bench_config_t *cfg, uint64_t seed, size_t n,
                                      skv_bench_prompt_t **prompts_p);

/* Reads a JSONL workload: one object per line with "prompt" (text) or "prompt_token_ids"
 * (array of ints), and optional "max_tokens" (default cfg->output_len). Blank lines are
 * skipped. *prompts_p gets every line's prompt, *n_p their count (> 0). Returns OK, NOT_FOUND
 * (no file), FORMAT (a bad line, message on stderr naming it) or NO_MEMORY. */
skv_status_t skv_bench_prompts_load(const skv_bench_config_t *cfg, const char *path,
                                    skv_bench_prompt_t **prompts_p, size_t *n_p);

/* Returns n prompts taken from src (n_src > 0) in order, cycling, starting at `first`; the
 * copies share nothing with src. Returns OK or NO_MEMORY. */
skv_status_t skv_bench_prompts_cycle(const skv_bench_prompt_t *src, size_t n_src, size_t first,
                                     size_t n, skv_bench_prompt_t **prompts_p);

/* Frees n prompts and the array. NULL is a no-op. */
void skv_bench_prompts_free(skv_bench_prompt_t *prompts, size_t n);

/* ---- bench_serve_run.c ---- */

/* Asks the server for ModelInfo (deadline timeout_ms). Returns OK or the call's status
 * (message on stderr). */
skv_status_t skv_bench_model_info(skv_grpc_channel_t *channel, int64_t timeout_ms,
                                  skv_bench_model_t *model);

/* Runs prompts[0..n) against the channel: requests start at Poisson arrivals of `rate` req/s
 * (INFINITY: all at once; arrivals drawn from `seed`) with at most `limit` in flight
 * (1..SKV_BENCH_MAX_INFLIGHT), one thread each. results[i] gets request i; *itl_ms every
 * inter-token gap of the completed requests; *duration_s first send -> last end;
 * *peak_p the most requests in flight. `label` names the run on the progress bar (NULL: no
 * bar). Returns OK when every request ended (failed or not) or INTERNAL when one outlived its
 * deadline by far (the run then stops waiting; its state is leaked to the late threads). */
skv_status_t skv_bench_run(skv_grpc_channel_t *channel, const skv_bench_config_t *cfg,
                           const skv_bench_prompt_t *prompts, size_t n, double rate, int limit,
                           uint64_t seed, const char *label, skv_bench_result_t *results,
                           skv_bench_vec_t *itl_ms, double *duration_s, int *peak_p);

/* ---- bench_serve_stats.c ---- */

/* Appends x. Returns OK or NO_MEMORY. */
skv_status_t skv_bench_vec_push(skv_bench_vec_t *vec, double x);

/* Appends every value of src. Returns OK or NO_MEMORY. */
skv_status_t skv_bench_vec_extend(skv_bench_vec_t *vec, const skv_bench_vec_t *src);

/* Frees the values and zeroes vec. */
void skv_bench_vec_free(skv_bench_vec_t *vec);

/* Returns the p-th percentile (0..100) of sorted[0..n) with linear interpolation between
 * the closest ranks (numpy's default); 0 when n == 0. */
double skv_bench_percentile(const double *sorted, size_t n, double p);

/* Sorts vals in place and fills *dist (all zero when vals is empty). */
void skv_bench_dist(skv_bench_vec_t *vals, skv_bench_dist_t *dist);

/* Summarizes one run: results[0..n) of prompts, itl_ms (sorted in place), the duration and
 * the config's goodput limits. rate / limit / peak are copied in. Returns OK or NO_MEMORY. */
skv_status_t skv_bench_summarize(const skv_bench_config_t *cfg, const skv_bench_result_t *results,
                                 size_t n, skv_bench_vec_t *itl_ms, double duration_s, double rate,
                                 int limit, int peak, skv_bench_summary_t *sum);

/* Returns the name of gRPC status code `code` ("DEADLINE_EXCEEDED"), "OTHER" outside 0..16. */
const char *skv_bench_grpc_code_name(int code);

/* ---- bench_serve_report.c ---- */

/* Prints one run's table on stdout (vLLM's layout: counts, throughput, latency rows). */
void skv_bench_report_print(const skv_bench_config_t *cfg, const skv_bench_summary_t *sum);

/* Prints one line per point of a sweep on stdout (rate, throughput, TTFT/TPOT p50/p99). */
void skv_bench_report_sweep(const skv_bench_summary_t *sums, size_t n);

/* Writes the JSON file: {"parameters": {...}, "model": {...}, "completed": N, "failed": N,
 * "points": [one object per run]}. Returns OK, IO (message on stderr) or NO_MEMORY. */
skv_status_t skv_bench_report_json(const char *path, const skv_bench_config_t *cfg,
                                   const skv_bench_model_t *model, const skv_bench_summary_t *sums,
                                   size_t n);

#endif /* SKV_BENCH_SERVE_H */
