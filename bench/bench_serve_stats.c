/*
 * bench_serve_stats.c: the numbers of skv_bench_serve. Growable arrays of latencies, the one
 * percentile function (sort, then interpolate between the closest ranks as numpy does), and
 * the summary of a run: counts, throughput, TTFT / TPOT / ITL / E2E distributions, goodput.
 *
 * Definitions (as vLLM's benchmark_serving): latencies come from completed requests only;
 * TPOT = (e2e - TTFT) / (output_tokens - 1) over requests with more than one token; ITL is
 * the gap between consecutive chunks that carry tokens (one gap per chunk); a request is good
 * when it completed and meets every --goodput limit; goodput = good requests / duration.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_serve.h"

skv_status_t skv_bench_vec_push(skv_bench_vec_t *vec, double x)
{
    if (vec->n == vec->cap) {
        size_t cap = vec->cap ? vec->cap * 2 : 64;
        double *v = realloc(vec->v, cap * sizeof(*v));
        if (v == NULL) {
            return SKV_STATUS_NO_MEMORY;
        }
        vec->v = v;
        vec->cap = cap;
    }
    vec->v[vec->n++] = x;
    return SKV_STATUS_OK;
}

skv_status_t skv_bench_vec_extend(skv_bench_vec_t *vec, const skv_bench_vec_t *src)
{
    for (size_t i = 0; i < src->n; i++) {
        SKV_CHECK(skv_bench_vec_push(vec, src->v[i]));
    }
    return SKV_STATUS_OK;
}

void skv_bench_vec_free(skv_bench_vec_t *vec)
{
    free(vec->v);
    *vec = (skv_bench_vec_t){0};
}

static int skv_bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double skv_bench_percentile(const double *sorted, size_t n, double p)
{
    if (n == 0) {
        return 0.0;
    }
    double rank = p / 100.0 * (double)(n - 1);
    size_t lo = (size_t)floor(rank);
    size_t hi = lo + 1 < n ? lo + 1 : lo;
    return sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - (double)lo);
}

void skv_bench_dist(skv_bench_vec_t *vals, skv_bench_dist_t *dist)
{
    double sum = 0.0;
    *dist = (skv_bench_dist_t){.count = vals->n};
    if (vals->n == 0) {
        return;
    }
    qsort(vals->v, vals->n, sizeof(double), skv_bench_cmp_double);
    for (size_t i = 0; i < vals->n; i++) {
        sum += vals->v[i];
    }
    dist->mean = sum / (double)vals->n;
    dist->p50 = skv_bench_percentile(vals->v, vals->n, 50);
    dist->p90 = skv_bench_percentile(vals->v, vals->n, 90);
    dist->p99 = skv_bench_percentile(vals->v, vals->n, 99);
    dist->max = vals->v[vals->n - 1];
}

const char *skv_bench_grpc_code_name(int code)
{
    static const char *names[] = {"OK",
                                  "CANCELLED",
                                  "UNKNOWN",
                                  "INVALID_ARGUMENT",
                                  "DEADLINE_EXCEEDED",
                                  "NOT_FOUND",
                                  "ALREADY_EXISTS",
                                  "PERMISSION_DENIED",
                                  "RESOURCE_EXHAUSTED",
                                  "FAILED_PRECONDITION",
                                  "ABORTED",
                                  "OUT_OF_RANGE",
                                  "UNIMPLEMENTED",
                                  "INTERNAL",
                                  "UNAVAILABLE",
                                  "DATA_LOSS",
                                  "UNAUTHENTICATED"};
    return code >= 0 && code <= 16 ? names[code] : "OTHER";
}

/* TPOT of one completed request, or -1 when it has fewer than two tokens. */
static double skv_bench_tpot(const skv_bench_result_t *r)
{
    return r->output_tokens > 1 ? (r->e2e_ms - r->ttft_ms) / (double)(r->output_tokens - 1) : -1;
}

/* Whether a completed request meets every goodput limit (0 = no limit). */
static int skv_bench_is_good(const skv_bench_config_t *cfg, const skv_bench_result_t *r)
{
    double tpot = skv_bench_tpot(r);
    return (cfg->goodput_ttft_ms <= 0 || r->ttft_ms <= cfg->goodput_ttft_ms) &&
           (cfg->goodput_tpot_ms <= 0 || tpot <= cfg->goodput_tpot_ms) &&
           (cfg->goodput_e2el_ms <= 0 || r->e2e_ms <= cfg->goodput_e2el_ms);
}

/* Counts one failed request by code; keeps the first message. */
static void skv_bench_count_error(skv_bench_summary_t *sum, const skv_bench_result_t *r)
{
    if (r->grpc_code >= 0 && r->grpc_code <= 16) {
        sum->error_codes[r->grpc_code]++;
    } else {
        sum->error_other++;
    }
    if (sum->first_error[0] == '\0') {
        snprintf(sum->first_error, sizeof(sum->first_error), "%s: %s",
                 skv_bench_grpc_code_name(r->grpc_code), r->message);
    }
}

/* Adds one completed request's TTFT / TPOT / E2E to the arrays, its tokens to the sums. */
static skv_status_t skv_bench_count_ok(const skv_bench_config_t *cfg, skv_bench_summary_t *sum,
                                       const skv_bench_result_t *r, skv_bench_vec_t v[3])
{
    sum->completed++;
    sum->input_tokens += r->input_tokens;
    sum->output_tokens += r->output_tokens;
    sum->good_requests += skv_bench_is_good(cfg, r);
    if (r->output_tokens > 0) {
        SKV_CHECK(skv_bench_vec_push(&v[0], r->ttft_ms));
    }
    if (r->output_tokens > 1) {
        SKV_CHECK(skv_bench_vec_push(&v[1], skv_bench_tpot(r)));
    }
    return skv_bench_vec_push(&v[2], r->e2e_ms);
}

/* Throughput figures from the counts and the duration. */
static void skv_bench_rates(skv_bench_summary_t *sum)
{
    double d = sum->duration_s > 0 ? sum->duration_s : 1e-9;
    sum->request_throughput = (double)sum->completed / d;
    sum->input_throughput = (double)sum->input_tokens / d;
    sum->output_throughput = (double)sum->output_tokens / d;
    sum->total_throughput = (double)(sum->input_tokens + sum->output_tokens) / d;
    sum->goodput = (double)sum->good_requests / d;
}

skv_status_t skv_bench_summarize(const skv_bench_config_t *cfg, const skv_bench_result_t *results,
                                 size_t n, skv_bench_vec_t *itl_ms, double duration_s, double rate,
                                 int limit, int peak, skv_bench_summary_t *sum)
{
    skv_bench_vec_t v[3] = {{0}, {0}, {0}}; /* ttft, tpot, e2e */
    skv_status_t status = SKV_STATUS_OK;
    memset(sum, 0, sizeof(*sum));
    sum->request_rate = rate;
    sum->max_concurrency = limit;
    sum->peak_inflight = peak;
    sum->duration_s = duration_s;
    for (size_t i = 0; i < n && status == SKV_STATUS_OK; i++) {
        if (results[i].ok) {
            status = skv_bench_count_ok(cfg, sum, &results[i], v);
        } else {
            sum->failed++;
            skv_bench_count_error(sum, &results[i]);
        }
    }
    skv_bench_rates(sum);
    skv_bench_dist(&v[0], &sum->ttft);
    skv_bench_dist(&v[1], &sum->tpot);
    skv_bench_dist(&v[2], &sum->e2el);
    skv_bench_dist(itl_ms, &sum->itl);
    for (int k = 0; k < 3; k++) {
        skv_bench_vec_free(&v[k]);
    }
    return status;
}
