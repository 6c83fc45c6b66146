/*
 * cpu.h: the CPU backend. fp32 activations, weights and KV cache (weights stored as bf16 or
 * f16 in a checkpoint are widened at upload); the KV cache may instead be fp8 E4M3 (kv_dtypes:
 * f32 and f8e4m3; the reference the CUDA fp8 KV ops are tested against). Two modes share one
 * ops table shape:
 *   REFERENCE: plain loops, one thread; the ground truth other backends are tested against.
 *   FAST: BLAS sgemm (OpenBLAS) for GEMMs and OpenMP threads for attention and elementwise ops.
 */
#ifndef SKV_KERNELS_CPU_H
#define SKV_KERNELS_CPU_H

#include "kernels/ops.h"

typedef enum {
    SKV_CPU_MODE_REFERENCE = 0,
    SKV_CPU_MODE_FAST,
} skv_cpu_mode_t;

/* Creates a CPU backend in `mode` using n_threads (0 = all cores) in FAST mode.
 * On success *be_p owns a backend; free with be->ops->destroy(be). */
skv_status_t skv_cpu_backend_create(skv_cpu_mode_t mode, int n_threads, skv_backend_t **be_p);

#endif /* SKV_KERNELS_CPU_H */
