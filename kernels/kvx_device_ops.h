/*
 * kvx_device_ops.h: the device-memory hooks the KV transfer (common/kvx) calls for pools and
 * sources in GPU memory. A backend that has device memory fills the table
 * (kernels/cuda/cuda_kvx.h); the transport above includes no CUDA header and only calls
 * through it. Plain C, no dependency beyond base/.
 */
#ifndef SKV_KERNELS_KVX_DEVICE_OPS_H
#define SKV_KERNELS_KVX_DEVICE_OPS_H

#include <stdint.h>

#include "base/status.h"

#define SKV_KVX_IPC_HANDLE_BYTES 64u /* sizeof(cudaIpcMemHandle_t) */

/* Every function is called from the transport's owner thread. */
typedef struct {
    void *ctx;
    /* Target: exports the device allocation that holds [ptr, ptr + bytes) for other
     * processes on this host (cudaIpcGetMemHandle); *offset_p is ptr's offset inside it. */
    skv_status_t (*ipc_export)(void *ctx, const void *ptr, uint64_t bytes,
                               uint8_t handle[SKV_KVX_IPC_HANDLE_BYTES], uint64_t *offset_p);
    /* Initiator: maps a peer's exported allocation (cudaIpcOpenMemHandle); *base_p is its
     * start here. An error means "not reachable from here": the push falls back to UCX. */
    skv_status_t (*ipc_open)(void *ctx, const uint8_t handle[SKV_KVX_IPC_HANDLE_BYTES],
                             void **base_p);
    void (*ipc_close)(void *ctx, void *base);
    /* Enqueues an asynchronous copy (device to device, device to pinned host) on the
     * transport's own stream; returns without waiting for it. */
    skv_status_t (*copy_async)(void *ctx, void *dst, const void *src, uint64_t bytes);
    /* Records a fence after every copy enqueued so far (*fence_p, freed by fence_free). */
    skv_status_t (*fence)(void *ctx, void **fence_p);
    /* OK when the copies before the fence finished, AGAIN while not, DEVICE when one failed. */
    skv_status_t (*fence_test)(void *ctx, void *fence);
    void (*fence_free)(void *ctx, void *fence);
} skv_kvx_device_ops_t;

#endif /* SKV_KERNELS_KVX_DEVICE_OPS_H */
