/*
 * cpu_sample.c: the sample op on the CPU (contract in kernels/ops.h): per logit row, greedy,
 * or temperature -> top-k -> top-p -> one draw with the caller's uniform u.
 *
 * Written from the contract; it must pick exactly the token common/model/sampler.c picks for the
 * same u, so the arithmetic is pinned down: scaled logits s = x * (1 / T) in f32,
 * probabilities exp(s - max) in double, top-p walks the values top-k kept in descending order
 * (ties adjacent, so the running sums round the same whatever the order among equal values),
 * the kept set is every id with s >= the boundary value (ties kept), and the draw walks ids in
 * increasing order. Top-k finds the k-th largest value by radix selection over an
 * order-preserving integer key (4 passes of 8 bits, no sort); only top-p sorts, and only the
 * values top-k kept. Rows run in parallel; each thread has a scratch row of V floats.
 */
#include "kernels/cpu/cpu_sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "base/alloc.h"
#include "base/log.h"

/* Order-preserving map of a float to an unsigned key (larger float, larger key). -0 is
 * folded into +0 first (v + 0.0f) so the two zeros, equal as floats, share one key. */
static uint32_t skv_cpu_key(float v)
{
    float f = v + 0.0f;
    uint32_t b;
    memcpy(&b, &f, sizeof(b));
    return b ^ ((b >> 31) ? 0xffffffffu : 0x80000000u);
}

static float skv_cpu_key_value(uint32_t k)
{
    uint32_t b = k ^ ((k >> 31) ? 0x80000000u : 0xffffffffu);
    float f;
    memcpy(&f, &b, sizeof(f));
    return f;
}

/* The k-th largest of s[0..n) (1 <= k <= n), counting equal values separately: the most
 * significant byte first, each pass a 256-bin histogram of the keys that match the prefix
 * chosen so far. */
static float skv_cpu_kth_largest(const float *s, int32_t n, int32_t k)
{
    uint32_t prefix = 0, mask = 0;
    int64_t need = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        int64_t hist[256] = {0};
        for (int32_t i = 0; i < n; i++) {
            uint32_t key = skv_cpu_key(s[i]);
            if ((key & mask) == prefix) {
                hist[(key >> shift) & 255]++;
            }
        }
        int b = 255;
        while (hist[b] < need) { /* the bins above hold fewer than `need`: go lower */
            need -= hist[b];
            b--;
        }
        prefix |= (uint32_t)b << shift;
        mask |= 255u << shift;
    }
    return skv_cpu_key_value(prefix);
}

static int skv_cpu_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : (x > y ? -1 : 0);
}

/* Top-p over the values of s[0..V) at or above thr: the smallest value at which the running
 * probability mass, walked from the largest value down, reaches top_p; thr itself when it
 * never does. buf: [V] scratch. */
static float skv_cpu_top_p(const float *s, int32_t V, float thr, float max, float top_p, float *buf)
{
    int32_t n = 0;
    for (int32_t i = 0; i < V; i++) {
        if (s[i] >= thr) {
            buf[n++] = s[i];
        }
    }
    qsort(buf, (size_t)n, sizeof(float), skv_cpu_desc);
    double z = 0.0, cum = 0.0;
    for (int32_t j = 0; j < n; j++) {
        z += exp((double)buf[j] - max);
    }
    for (int32_t j = 0; j < n; j++) {
        cum += exp((double)buf[j] - max) / z;
        if (cum >= top_p) {
            return buf[j];
        }
    }
    return thr;
}

/* The draw: the first id (increasing) at which the running sum of exp(s - max) over the kept
 * ids (s >= thr) exceeds u times their total; the last kept id if rounding never gets there. */
static int32_t skv_cpu_draw(const float *s, int32_t V, float thr, float max, double u)
{
    double z = 0.0;
    for (int32_t i = 0; i < V; i++) {
        if (s[i] >= thr) {
            z += exp((double)s[i] - max);
        }
    }
    double target = u * z, acc = 0.0;
    int32_t last = 0;
    for (int32_t i = 0; i < V; i++) {
        if (s[i] >= thr) {
            acc += exp((double)s[i] - max);
            last = i;
            if (acc > target) {
                return i;
            }
        }
    }
    return last;
}

/* One row: x [V] logits, pr [4] parameters, s and buf [V] scratch. */
static int32_t skv_cpu_sample_row(const float *x, int32_t V, const float *pr, float *s, float *buf)
{
    float temp = pr[0], kf = pr[1], top_p = pr[2];
    if (!(temp > 0.0f)) { /* greedy: argmax, lowest id on ties */
        int32_t best = 0;
        for (int32_t i = 1; i < V; i++) {
            best = x[i] > x[best] ? i : best;
        }
        return best;
    }
    float inv_t = 1.0f / temp, max = -INFINITY;
    for (int32_t i = 0; i < V; i++) {
        s[i] = x[i] * inv_t;
        max = s[i] > max ? s[i] : max;
    }
    float thr = -INFINITY;
    if (kf >= 1.0f && kf < (float)V) { /* top_k = 0 or >= V: off */
        thr = skv_cpu_kth_largest(s, V, (int32_t)kf);
    }
    if (top_p < 1.0f) {
        thr = skv_cpu_top_p(s, V, thr, max, top_p, buf);
    }
    return skv_cpu_draw(s, V, thr, max, (double)pr[3]);
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
