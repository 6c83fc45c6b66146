/*
 * sample_math.c: the sampling math of sample_math.h. Top-k finds the k-th largest value with a
 * radix select over order-preserving keys (four 256-bin histogram passes, O(n), no sort);
 * top-p and min-p sort only what top-k kept.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/sample_math.h"

/* Order-preserving map of a float to an unsigned key (larger float, larger key). -0 is
 * folded into +0 first (v + 0.0f) so the two zeros, equal as floats, share one key. */
static uint32_t skv_sample_key(float v)
{
    float f = v + 0.0f;
    uint32_t b;
    memcpy(&b, &f, sizeof(b));
    return b ^ ((b >> 31) ? 0xffffffffu : 0x80000000u);
}

static float skv_sample_key_value(uint32_t k)
{
    uint32_t b = k ^ ((k >> 31) ? 0x80000000u : 0xffffffffu);
    float f;
    memcpy(&f, &b, sizeof(f));
    return f;
}

float skv_sample_kth_largest(const float *s, int32_t n, int32_t k)
{
    /* The most significant byte first, each pass a histogram of the keys that match the
     * prefix chosen so far. */
    uint32_t prefix = 0, mask = 0;
    int64_t need = k;
    for (int shift = 24; shift >= 0; shift -= 8) {
        int64_t hist[256] = {0};
        for (int32_t i = 0; i < n; i++) {
            uint32_t key = skv_sample_key(s[i]);
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
    return skv_sample_key_value(prefix);
}

static int skv_sample_desc(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? 1 : (x > y ? -1 : 0);
}

float skv_sample_threshold(const float *s, int32_t n, float max, int32_t top_k, float top_p,
                           float min_p, float *buf)
{
    float thr = -INFINITY;
    if (top_k > 0 && top_k < n) {
        thr = skv_sample_kth_largest(s, n, top_k);
    }
    if (top_p >= 1.0f && min_p <= 0.0f) {
        return thr;
    }
    int32_t m = 0;
    for (int32_t i = 0; i < n; i++) {
        if (s[i] >= thr) {
            buf[m++] = s[i];
        }
    }
    qsort(buf, (size_t)m, sizeof(float), skv_sample_desc);
    double z = 0.0, cum = 0.0;
    for (int32_t j = 0; j < m; j++) {
        z += exp((double)buf[j] - max);
    }
    for (int32_t j = 0; j < m; j++) {
        double p = exp((double)buf[j] - max) / z;
        if (min_p > 0.0f && j > 0 && p < min_p * (1.0 / z)) {
            return buf[j - 1]; /* p_max = 1/z once the max is subtracted */
        }
        cum += p;
        if (top_p < 1.0f && cum >= top_p) {
            return buf[j];
        }
    }
    return buf[m - 1];
}

int32_t skv_sample_draw(const float *s, int32_t n, float thr, float max, double u)
{
    double z = 0.0;
    for (int32_t i = 0; i < n; i++) {
        if (s[i] >= thr) {
            z += exp((double)s[i] - max);
        }
    }
    double target = u * z, acc = 0.0;
    int32_t last = 0;
    for (int32_t i = 0; i < n; i++) {
        if (s[i] >= thr) {
            acc += exp((double)s[i] - max);
            last = i;
            if (acc > target) {
                return i;
            }
        }
    }
    return last; /* rounding left the target at the total: the last kept id */
}

int32_t skv_sample_pick(const float *x, int32_t n, float temperature, int32_t top_k, float top_p,
                        float min_p, double u, float *s, float *buf)
{
    if (!(temperature > 0.0f)) { /* greedy: argmax, lowest id on ties (as torch.argmax) */
        int32_t best = 0;
        for (int32_t i = 1; i < n; i++) {
            best = x[i] > x[best] ? i : best;
        }
        return best;
    }
    float inv_t = 1.0f / temperature, max = -INFINITY;
    for (int32_t i = 0; i < n; i++) {
        s[i] = x[i] * inv_t;
        max = s[i] > max ? s[i] : max;
    }
    float thr = skv_sample_threshold(s, n, max, top_k, top_p, min_p, buf);
    return skv_sample_draw(s, n, thr, max, u);
}
