/*
 * cpu_sample.h: the CPU backend's sample op (kernels/ops.h contract), kept in its own file;
 * cpu_backend.c puts it in the ops table. Internal to kernels/cpu.
 */
#ifndef SKV_KERNELS_CPU_SAMPLE_H
#define SKV_KERNELS_CPU_SAMPLE_H

#include "kernels/ops.h"

/* One token per row of logits f32 [M, V] into tokens i32 [1, M], with params f32 [M, 4]
 * (temperature, top_k, top_p, u) as the ops.h sample op describes, on up to n_threads OpenMP
 * threads (rows are independent). NO_MEMORY when the per-thread scratch (V floats each)
 * cannot be allocated. */
skv_status_t skv_cpu_sample(int n_threads, const skv_tensor_t *tokens, const skv_tensor_t *logits,
                            const skv_tensor_t *params);

#endif /* SKV_KERNELS_CPU_SAMPLE_H */
