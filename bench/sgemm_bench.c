/*
 * sgemm_bench: the machine's measured BLAS sgemm rate (OpenBLAS, all threads) on the shape
 * of a prefill GEMM, x[M, K] * w[N, K]^T. This is the ceiling the CPU prefill is held to.
 *   sgemm_bench [M N K] [repeats]
 */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "base/clock.h"

int main(int argc, char **argv)
{
    int M = argc > 3 ? atoi(argv[1]) : 1024, N = argc > 3 ? atoi(argv[2]) : 2048;
    int K = argc > 3 ? atoi(argv[3]) : 768, reps = argc > 4 ? atoi(argv[4]) : 10;
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
