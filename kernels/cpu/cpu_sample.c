/*
 * cpu_sample.c: the sample op on the CPU (contract in kernels/ops.h): per logit row, greedy,
 * or temperature -> top-k -> top-p -> one draw with the caller's uniform u. The math is the
 * host sampler's own (kernels/sample_math.h, which common/model/sampler.c also calls), so the
 * op picks exactly the token the host sampler picks for the same u. Rows run in parallel;
 * each thread has two scratch rows of V floats.
 */
#include "kernels/cpu/cpu_sample.h"
#include "kernels/sample_math.h"

#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "base/alloc.h"
#include "base/log.h"

/* One row: x [V] logits, pr [4] parameters (temperature, top_k, top_p, u), s and buf [V]
 * scratch: the host sampler's math (kernels/sample_math.h). */
static int32_t skv_cpu_sample_row(const float *x, int32_t V, const float *pr, float *s, float *buf)
{
    float kf = pr[1];
    int32_t top_k = kf >= 1.0f && kf < (float)V ? (int32_t)kf : 0; /* 0 or >= V: off */
    return skv_sample_pick(x, V, pr[0], top_k, pr[2], 0.0f, (double)pr[3], s, buf);
}

skv_status_t skv_cpu_sample(int n_threads, const skv_tensor_t *tokens, const skv_tensor_t *logits,
                            const skv_tensor_t *params)
{
    SKV_ASSERT(logits->dtype == SKV_DTYPE_F32 && params->dtype == SKV_DTYPE_F32);
    SKV_ASSERT(tokens->dtype == SKV_DTYPE_I32 && tokens->rows * tokens->cols == logits->rows);
    SKV_ASSERT(params->rows == logits->rows && params->cols == 4 && params->ld == 4);
    int64_t M = logits->rows;
    int32_t V = (int32_t)logits->cols;
    if (M == 0) {
        return SKV_STATUS_OK;
    }
    int nt = M < n_threads ? (int)M : n_threads;
    nt = nt > 0 ? nt : 1;
    float *scratch = skv_mallocn((size_t)nt * 2 * (size_t)V, sizeof(float));
    if (scratch == NULL) {
        SKV_LOG_ERROR("cpu sample: cannot allocate scratch for %d rows of %d", nt, V);
        return SKV_STATUS_NO_MEMORY;
    }
#pragma omp parallel for num_threads(nt) if (nt > 1)
    for (int64_t r = 0; r < M; r++) {
#ifdef _OPENMP
        float *s = scratch + (size_t)omp_get_thread_num() * 2 * (size_t)V;
#else
        float *s = scratch;
#endif
        const float *x = (const float *)logits->data + r * logits->ld;
        const float *pr = (const float *)params->data + r * 4;
        ((int32_t *)tokens->data)[r] = skv_cpu_sample_row(x, V, pr, s, s + V);
    }
    skv_free(scratch);
    return SKV_STATUS_OK;
}
