/*
 * cuda_kvx.h: the CUDA side of KV transfer: the device hooks of kernels/kvx_device_ops.h
 * (skv_kvx_device_ops_t: CUDA IPC export/open, asynchronous copies on a stream of their own,
 * fences as CUDA events) and pinned staging allocation (cudaHostAlloc). Plain C: no CUDA
 * header is included, so common/ and the workers build without the toolkit's headers.
 *
 * Ownership: one skv_cuda_kvx_t per transport (same owner thread), created before and
 * destroyed after the skv_kvx_t that borrows its ops table.
 */
#ifndef SKV_KERNELS_CUDA_KVX_H
#define SKV_KERNELS_CUDA_KVX_H

#include <stddef.h>

#include "kernels/kvx_device_ops.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct skv_cuda_kvx skv_cuda_kvx_t;

/* Creates the hooks on GPU `device` with their own non-blocking stream. Returns OK,
 * UNSUPPORTED (no such GPU, logged), DEVICE, NO_MEMORY. Owner thread. */
skv_status_t skv_cuda_kvx_create(int device, skv_cuda_kvx_t **ck_p);

/* Waits for the stream, frees it. NULL is a no-op. Owner thread. */
void skv_cuda_kvx_destroy(skv_cuda_kvx_t *ck);

/* The ops table for skv_kvx_config_t.device_ops; borrowed until destroy. */
const skv_kvx_device_ops_t *skv_cuda_kvx_ops(skv_cuda_kvx_t *ck);

/* skv_kvx_config_t.staging_alloc/free: pinned host memory (cudaHostAlloc); ctx unused. */
void *skv_cuda_kvx_host_alloc(void *ctx, size_t bytes);
void skv_cuda_kvx_host_free(void *ctx, void *ptr, size_t bytes);

/* Number of visible GPUs (0 when none or no driver). Any thread. */
int skv_cuda_kvx_device_count(void);

/* Device memory for tests and benchmarks: allocate, free, synchronous copy (any direction,
 * unified addressing). Return OK or DEVICE / NO_MEMORY. */
skv_status_t skv_cuda_kvx_malloc(size_t bytes, void **ptr_p);
void skv_cuda_kvx_free(void *ptr);
skv_status_t skv_cuda_kvx_copy(void *dst, const void *src, size_t bytes);

#ifdef __cplusplus
}
#endif

#endif /* SKV_KERNELS_CUDA_KVX_H */
