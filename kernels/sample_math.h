/*
 * sample_math.h: the sampling math, written once, below every caller: the host sampler
 * (common/model/sampler.c) and the CPU backend's sample op (kernels/cpu/cpu_sample.c) both
 * pick through skv_sample_pick, so the CPU op is the host sampler by construction (the CUDA
 * op is tested against them).
 *
 * One pick: logits scaled by 1/temperature; the kept set is {id : scaled[id] >= threshold}
 * with the threshold from top-k (the k-th largest value; ties with it stay), then top-p and
 * min-p over the probabilities of what top-k kept, walked from the largest value down; then
 * the first id, in id order, at which the running sum of exp(scaled - max) over the kept ids
 * exceeds u times their total. Temperature 0 is greedy: argmax, the lowest id on ties. Pure
 * functions; any thread.
 */
#ifndef SKV_KERNELS_SAMPLE_MATH_H
#define SKV_KERNELS_SAMPLE_MATH_H

#include <stdint.h>

/* The k-th largest of s[0..n) (1 <= k <= n), equal values counted separately. */
float skv_sample_kth_largest(const float *s, int32_t n, int32_t k);

/* The kept set's threshold over scaled values s[0..n) whose maximum is max: top_k (0 or >= n:
 * off), then top_p (1: off) and min_p (0: off). -INFINITY keeps every id. buf: [n] scratch. */
float skv_sample_threshold(const float *s, int32_t n, float max, int32_t top_k, float top_p,
                           float min_p, float *buf);

/* The draw over the kept ids (s >= thr) with u in [0, 1); the last kept id when rounding
 * never reaches the target. */
int32_t skv_sample_draw(const float *s, int32_t n, float thr, float max, double u);

/* One whole pick from logits x[0..n) (see the file comment). s: [n] scratch for the scaled
 * logits (may be x itself, which is then scaled in place), buf: [n] scratch. */
int32_t skv_sample_pick(const float *x, int32_t n, float temperature, int32_t top_k, float top_p,
                        float min_p, double u, float *s, float *buf);

#endif /* SKV_KERNELS_SAMPLE_MATH_H */
