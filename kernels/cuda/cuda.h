/*
 * cuda.h: the CUDA backend's constructor, the only CUDA-backend symbol the rest of the build
 * sees. Plain C: no CUDA header is included, so callers build without the toolkit's headers.
 *
 * The backend computes in bf16 (weights, activations, KV cache) with fp32 accumulation,
 * GEMMs through cuBLAS, and our own kernels for everything else (kernels/cuda/ *.cu files).
 */
#ifndef SKV_KERNELS_CUDA_H
#define SKV_KERNELS_CUDA_H

#include "kernels/ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Creates a CUDA backend on GPU `device` with its own stream, cuBLAS handle and
 * preallocated workspace. On success *be_p owns it; free with be->ops->destroy(be).
 * UNSUPPORTED when there is no such GPU (logged once, no crash); DEVICE / NO_MEMORY when the
 * driver or an allocation fails. Call from the thread that will drive the backend. */
skv_status_t skv_cuda_backend_create(int device, skv_backend_t **be_p);

#ifdef __cplusplus
}
#endif

#endif /* SKV_KERNELS_CUDA_H */
