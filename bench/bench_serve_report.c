/*
 * bench_serve_report.c: what skv_bench_serve prints and writes. A run's table on stdout (the
 * layout of vLLM's benchmark_serving), a one-line-per-rate table after a sweep, and the JSON
 * file (jansson): the run's parameters, the model, and every point's numbers. Request rates
 * that are infinite are written as the string "inf" (JSON has no infinity).
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "bench/bench_serve.h"

#define SKV_BENCH_RULE "=================================================================="

/* "Poisson 4.00 req/s, at most 512 in flight" / "concurrency 8" into buf. */
static const char *skv_bench_mode_str(const skv_bench_config_t *cfg, const skv_bench_summary_t *sum,
                                      char *buf, size_t size)
{
    if (cfg->concurrency > 0) {
        snprintf(buf, size, "fixed concurrency %d", sum->max_concurrency);
    } else if (isinf(sum->request_rate)) {
        snprintf(buf, size, "all at once, at most %d in flight", sum->max_concurrency);
    } else {
        snprintf(buf, size, "Poisson %.2f req/s, at most %d in flight", sum->request_rate,
                 sum->max_concurrency);
    }
    return buf;
}

static void skv_bench_row(const char *name, const char *fmt, double v)
{
    printf("%-40s", name);
    printf(fmt, v);
    printf("\n");
}

static void skv_bench_print_errors(const skv_bench_summary_t *sum)
{
    for (int c = 0; c <= 16; c++) {
        if (sum->error_codes[c] > 0) {
            printf("  %-38s%d\n", skv_bench_grpc_code_name(c), sum->error_codes[c]);
        }
    }
    if (sum->error_other > 0) {
        printf("  %-38s%d\n", "no thread", sum->error_other);
    }
    if (sum->first_error[0] != '\0') {
        printf("  first: %s\n", sum->first_error);
    }
}

static void skv_bench_print_dist(const char *name, const skv_bench_dist_t *d)
{
    printf("%-6s %10.2f %10.2f %10.2f %10.2f %10.2f %9zu\n", name, d->mean, d->p50, d->p90, d->p99,
           d->max, d->count);
}

void skv_bench_report_print(const skv_bench_config_t *cfg, const skv_bench_summary_t *sum)
{
    char mode[96];
    printf("%s\n%-40s%s\n", SKV_BENCH_RULE, "Target:", cfg->target);
    printf("%-40s%s\n", "Mode:", skv_bench_mode_str(cfg, sum, mode, sizeof(mode)));
    skv_bench_row("Successful requests:", "%.0f", (double)sum->completed);
    skv_bench_row("Failed requests:", "%.0f", (double)sum->failed);
    skv_bench_print_errors(sum);
    skv_bench_row("Peak requests in flight:", "%.0f", (double)sum->peak_inflight);
    skv_bench_row("Benchmark duration (s):", "%.2f", sum->duration_s);
    skv_bench_row("Total input tokens:", "%.0f", (double)sum->input_tokens);
    skv_bench_row("Total generated tokens:", "%.0f", (double)sum->output_tokens);
    skv_bench_row("Request throughput (req/s):", "%.2f", sum->request_throughput);
    if (cfg->goodput) {
        skv_bench_row("Request goodput (req/s):", "%.2f", sum->goodput);
    }
    skv_bench_row("Input token throughput (tok/s):", "%.2f", sum->input_throughput);
    skv_bench_row("Output token throughput (tok/s):", "%.2f", sum->output_throughput);
    skv_bench_row("Total token throughput (tok/s):", "%.2f", sum->total_throughput);
    printf("%s\n%-6s %10s %10s %10s %10s %10s %9s\n", "---- latency (ms) ----", "", "mean", "p50",
           "p90", "p99", "max", "count");
    skv_bench_print_dist("TTFT", &sum->ttft);
    skv_bench_print_dist("TPOT", &sum->tpot);
    skv_bench_print_dist("ITL", &sum->itl);
    skv_bench_print_dist("E2E", &sum->e2el);
    printf("%s\n", SKV_BENCH_RULE);
}

void skv_bench_report_sweep(const skv_bench_summary_t *sums, size_t n)
{
    printf("%s\n%8s %6s %6s %9s %10s %9s %9s %9s %9s\n", "---- sweep ----", "rate", "ok", "failed",
           "req/s", "out tok/s", "TTFT p50", "TTFT p99", "TPOT p50", "TPOT p99");
    for (size_t i = 0; i < n; i++) {
        const skv_bench_summary_t *s = &sums[i];
        printf("%8.2f %6zu %6zu %9.2f %10.2f %9.2f %9.2f %9.2f %9.2f\n", s->request_rate,
               s->completed, s->failed, s->request_throughput, s->output_throughput, s->ttft.p50,
               s->ttft.p99, s->tpot.p50, s->tpot.p99);
    }
}

/* ---- JSON ---- */

static json_t *skv_bench_json_rate(double rate)
{
    return isinf(rate) ? json_string("inf") : json_real(rate);
}

static json_t *skv_bench_json_dist(const skv_bench_dist_t *d)
{
    return json_pack("{s:I, s:f, s:f, s:f, s:f, s:f}", "count", (json_int_t)d->count, "mean",
                     d->mean, "p50", d->p50, "p90", d->p90, "p99", d->p99, "max", d->max);
}

static json_t *skv_bench_json_errors(const skv_bench_summary_t *sum)
{
    json_t *o = json_object();
    for (int c = 0; c <= 16; c++) {
        if (sum->error_codes[c] > 0) {
            json_object_set_new(o, skv_bench_grpc_code_name(c), json_integer(sum->error_codes[c]));
        }
    }
    if (sum->error_other > 0) {
        json_object_set_new(o, "OTHER", json_integer(sum->error_other));
    }
    return o;
}

static json_t *skv_bench_json_point(const skv_bench_summary_t *s)
{
    return json_pack(
        "{s:o, s:i, s:i, s:I, s:I, s:o, s:s, s:f, s:I, s:I, s:f, s:f, s:f, s:f, s:I, s:f,"
        " s:o, s:o, s:o, s:o}",
        "request_rate", skv_bench_json_rate(s->request_rate), "max_concurrency", s->max_concurrency,
        "peak_inflight", s->peak_inflight, "completed", (json_int_t)s->completed, "failed",
        (json_int_t)s->failed, "errors", skv_bench_json_errors(s), "first_error", s->first_error,
        "duration_s", s->duration_s, "total_input_tokens", (json_int_t)s->input_tokens,
        "total_output_tokens", (json_int_t)s->output_tokens, "request_throughput",
        s->request_throughput, "input_throughput", s->input_throughput, "output_throughput",
        s->output_throughput, "total_token_throughput", s->total_throughput, "good_requests",
        (json_int_t)s->good_requests, "request_goodput", s->goodput, "ttft_ms",
        skv_bench_json_dist(&s->ttft), "tpot_ms", skv_bench_json_dist(&s->tpot), "itl_ms",
        skv_bench_json_dist(&s->itl), "e2el_ms", skv_bench_json_dist(&s->e2el));
}

static json_t *skv_bench_json_rates(const skv_bench_config_t *cfg)
{
    json_t *a = json_array();
    for (int i = 0; i < cfg->n_rates; i++) {
        json_array_append_new(a, json_real(cfg->rates[i]));
    }
    return a;
}

static json_t *skv_bench_json_params(const skv_bench_config_t *cfg)
{
    return json_pack(
        "{s:s, s:s, s:i, s:o, s:i, s:o, s:i, s:i, s:i, s:i, s:f, s:[i,i], s:I, s:f, s:b, s:s?,"
        " s:I, s:{s:f, s:f, s:f}}",
        "target", cfg->target, "mode", cfg->concurrency > 0 ? "concurrency" : "rate", "concurrency",
        cfg->concurrency, "request_rate", skv_bench_json_rate(cfg->request_rate), "max_concurrency",
        cfg->max_concurrency, "sweep_rates", skv_bench_json_rates(cfg), "num_prompts",
        cfg->num_prompts, "warmup", cfg->warmup, "input_len", cfg->input_len, "output_len",
        cfg->output_len, "random_range_ratio", cfg->range_ratio, "vocab_range", cfg->vocab_lo,
        cfg->vocab_hi, "seed", (json_int_t)cfg->seed, "temperature", cfg->temperature, "ignore_eos",
        !cfg->allow_eos, "workload", cfg->workload, "timeout_ms", (json_int_t)cfg->timeout_ms,
        "goodput", "ttft_ms", cfg->goodput_ttft_ms, "tpot_ms", cfg->goodput_tpot_ms, "e2el_ms",
        cfg->goodput_e2el_ms);
}

/* The whole document; NULL when jansson ran out of memory. */
static json_t *skv_bench_json_doc(const skv_bench_config_t *cfg, const skv_bench_model_t *model,
                                  const skv_bench_summary_t *sums, size_t n)
{
    char date[32];
    time_t now = time(NULL);
    struct tm tm;
    json_int_t completed = 0, failed = 0;
    json_t *points = json_array();
    for (size_t i = 0; i < n; i++) {
        completed += (json_int_t)sums[i].completed;
        failed += (json_int_t)sums[i].failed;
        json_array_append_new(points, skv_bench_json_point(&sums[i]));
    }
    strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    return json_pack("{s:s, s:o, s:{s:s, s:s, s:i, s:i}, s:I, s:I, s:o}", "date", date,
                     "parameters", skv_bench_json_params(cfg), "model", "name", model->name,
                     "backend", model->backend, "vocab_size", (int)model->vocab_size,
                     "context_length", (int)model->context_length, "completed", completed, "failed",
                     failed, "points", points);
}

skv_status_t skv_bench_report_json(const char *path, const skv_bench_config_t *cfg,
                                   const skv_bench_model_t *model, const skv_bench_summary_t *sums,
                                   size_t n)
{
    json_t *doc = skv_bench_json_doc(cfg, model, sums, n);
    if (doc == NULL) {
        fprintf(stderr, "skv_bench_serve: could not build the JSON document\n");
        return SKV_STATUS_NO_MEMORY;
    }
    int rc = json_dump_file(doc, path, JSON_INDENT(2) | JSON_REAL_PRECISION(10));
    json_decref(doc);
    if (rc != 0) {
        fprintf(stderr, "skv_bench_serve: cannot write %s: %s\n", path, strerror(errno));
        return SKV_STATUS_IO;
    }
    return SKV_STATUS_OK;
}
