/*
 * sgemm_bench: the machine's measured BLAS sgemm rate (OpenBLAS, all threads) on the shape
 * of a prefill GEMM, x[M, K] * w[N, K]^T. This is the ceiling the CPU prefill is held to.
 *   sgemm_bench [flags] [M N K [REPEATS]]
 * `sgemm_bench --help` lists the flags (--m, --n, --k, --repeats, which the positional numbers
 * stand for) with their defaults and SKV_SGEMM_BENCH_* variables (one table, base/cli.h).
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/cli.h"
#include "base/clock.h"

#define SKV_SGEMM_I(name, env, dst, lo, hi, help)                                                  \
    {name, env, SKV_CLI_INT, dst, lo, hi, 0, 0, help}

/* Parses the flags, then M N K [REPEATS] (standing for --m --n --k --repeats); SKV_CLI_OK,
 * SKV_CLI_HELP or SKV_CLI_USAGE (reported). */
static int skv_sgemm_parse(int argc, char **argv, int *M, int *N, int *K, int *reps)
{
    const skv_cli_opt_t opts[] = {
        SKV_SGEMM_I("m", "SKV_SGEMM_BENCH_M", M, 1, 1 << 20, "rows of x (tokens)"),
        SKV_SGEMM_I("n", "SKV_SGEMM_BENCH_N", N, 1, 1 << 20, "rows of w (output features)"),
        SKV_SGEMM_I("k", "SKV_SGEMM_BENCH_K", K, 1, 1 << 20, "shared dimension (input features)"),
        SKV_SGEMM_I("repeats", "SKV_SGEMM_BENCH_REPEATS", reps, 1, 1 << 20,
                    "timed calls after one warm-up (the best is printed)"),
    };
    static const char *const names[] = {"M", "N", "K", "REPEATS"};
    int pos = 0;
    int st = skv_cli_parse("sgemm_bench",
                           "sgemm_bench [flags] [M N K [REPEATS]]: the BLAS sgemm rate on "
                           "x[M, K] * w[N, K]^T.",
                           opts, 4, argc, argv, &pos);
    int n = argc - pos;
    if (st == SKV_CLI_OK && n != 0 && n != 3 && n != 4) {
        fprintf(stderr, "usage: sgemm_bench [flags] [M N K [REPEATS]] (--help lists the flags)\n");
        return SKV_CLI_USAGE;
    }
    for (int i = 0; st == SKV_CLI_OK && i < n; i++) {
        st = skv_cli_value("sgemm_bench", &opts[i], names[i], argv[pos + i]);
    }
    return st;
}

int main(int argc, char **argv)
{
    int M = 1024, N = 2048, K = 768, reps = 10;
    int parsed = skv_sgemm_parse(argc, argv, &M, &N, &K, &reps);
    if (parsed != SKV_CLI_OK) {
        return parsed == SKV_CLI_HELP ? 0 : 2;
    }
    float *x = malloc(sizeof(float) * (size_t)M * K), *w = malloc(sizeof(float) * (size_t)N * K);
    float *o = malloc(sizeof(float) * (size_t)M * N);
    for (size_t i = 0; i < (size_t)M * K; i++) {
        x[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    }
    for (size_t i = 0; i < (size_t)N * K; i++) {
        w[i] = (float)((i * 40503u) % 1000) / 1000.0f - 0.5f;
    }
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        int64_t t0 = skv_clock_now_ns();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, M, N, K, 1.0f, x, K, w, K, 0.0f, o, N);
        double dt = (skv_clock_now_ns() - t0) / 1e9;
        best = r > 0 && dt < best ? dt : best;
    }
    printf("sgemm %d x %d x %d: %.3f ms  %.1f GFLOP/s\n", M, N, K, best * 1e3,
           2.0 * M * N * K / best / 1e9);
    free(x);
    free(w);
    free(o);
    return 0;
}
