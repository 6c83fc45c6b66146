/*
 * cuda_kvx.cu: CUDA implementation of the KV-transfer device hooks (see cuda_kvx.h): CUDA IPC
 * memory handles of the device KV pool, asynchronous copies on a stream owned by the hooks
 * (device to device through an opened IPC mapping, device to pinned host for staging), and
 * fences as CUDA events. The transport (common/kvx/kvx_device.c) decides what to copy and when.
 *
 * Invariants: every copy goes on ck->stream, so a fence covers every copy enqueued before it;
 * every CUDA failure becomes SKV_STATUS_DEVICE, logged once where it happens.
 */
#include <cuda.h>
#include <cuda_runtime.h>

#include <new>
#include <string.h>

extern "C" {
#include "base/log.h"
}

extern "C" {
#include "kernels/cuda/cuda_kvx.h"
}

/* A failing CUDA call becomes SKV_STATUS_DEVICE, logged once with the CUDA string. (Own
 * helper: this file builds into skv_cuda_kvx, which does not need the compute backend.) */
static skv_status_t skv_cuda_kvx_error(cudaError_t err, const char *what, int line)
{
    (void)cudaGetLastError();
    SKV_LOG_ERROR("cuda_kvx:%d: %s: %s", line, what, cudaGetErrorString(err));
    return SKV_STATUS_DEVICE;
}

#define SKV_CUDA_KVX_CHECK(call)                                                                   \
    do {                                                                                           \
        cudaError_t skv_ck_err_ = (call);                                                          \
        if (skv_ck_err_ != cudaSuccess) {                                                          \
            return skv_cuda_kvx_error(skv_ck_err_, #call, __LINE__);                               \
        }                                                                                          \
    } while (0)

struct skv_cuda_kvx {
    skv_kvx_device_ops_t ops;
    int device;
    cudaStream_t stream;
};

static_assert(sizeof(cudaIpcMemHandle_t) == SKV_KVX_IPC_HANDLE_BYTES, "IPC handle size");

static skv_status_t skv_cuda_kvx_export(void *ctx, const void *ptr, uint64_t bytes,
                                        uint8_t handle[SKV_KVX_IPC_HANDLE_BYTES],
                                        uint64_t *offset_p)
{
    /* The handle names the whole allocation; the pool may start inside it. The driver's
     * range query comes through the runtime, so nothing links libcuda (a build without a
     * driver still loads and skips). */
    typedef CUresult (*range_fn_t)(CUdeviceptr *, size_t *, CUdeviceptr);
    void *fn = NULL;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    SKV_CUDA_KVX_CHECK(cudaGetDriverEntryPointByVersion("cuMemGetAddressRange", &fn, 12000,
                                                        cudaEnableDefault, &q));
    CUdeviceptr base = 0;
    size_t size = 0;
    CUresult cr = fn != NULL && q == cudaDriverEntryPointSuccess
                      ? ((range_fn_t)fn)(&base, &size, (CUdeviceptr)(uintptr_t)ptr)
                      : CUDA_ERROR_NOT_FOUND;
    if (cr != CUDA_SUCCESS || (uintptr_t)ptr + bytes > (uintptr_t)base + size) {
        SKV_LOG_WARN("cuda_kvx: pool %p (+%llu) is not inside one device allocation (%d)", ptr,
                     (unsigned long long)bytes, (int)cr);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    cudaIpcMemHandle_t h;
    SKV_CUDA_KVX_CHECK(cudaIpcGetMemHandle(&h, (void *)(uintptr_t)base));
    memcpy(handle, &h, sizeof(h));
    *offset_p = (uint64_t)((uintptr_t)ptr - (uintptr_t)base);
    return SKV_STATUS_OK;
}

static skv_status_t skv_cuda_kvx_open(void *ctx, const uint8_t handle[SKV_KVX_IPC_HANDLE_BYTES],
                                      void **base_p)
{
    skv_cuda_kvx_t *ck = (skv_cuda_kvx_t *)ctx;
    cudaIpcMemHandle_t h;
    memcpy(&h, handle, sizeof(h));
    SKV_CUDA_KVX_CHECK(cudaSetDevice(ck->device));
    cudaError_t err = cudaIpcOpenMemHandle(base_p, h, cudaIpcMemLazyEnablePeerAccess);
    if (err != cudaSuccess) {
        (void)cudaGetLastError(); /* not sticky: the caller falls back to staging */
        SKV_LOG_WARN("cuda_kvx: cudaIpcOpenMemHandle: %s", cudaGetErrorString(err));
        *base_p = NULL;
        return SKV_STATUS_UNSUPPORTED;
    }
    return SKV_STATUS_OK;
}

static void skv_cuda_kvx_close(void *ctx, void *base)
{
    if (base != NULL) {
        (void)cudaIpcCloseMemHandle(base);
    }
}

static skv_status_t skv_cuda_kvx_copy_async(void *ctx, void *dst, const void *src, uint64_t bytes)
{
    skv_cuda_kvx_t *ck = (skv_cuda_kvx_t *)ctx;
    SKV_CUDA_KVX_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, ck->stream));
    return SKV_STATUS_OK;
}

static skv_status_t skv_cuda_kvx_fence(void *ctx, void **fence_p)
{
    skv_cuda_kvx_t *ck = (skv_cuda_kvx_t *)ctx;
    cudaEvent_t ev = NULL;
    SKV_CUDA_KVX_CHECK(cudaEventCreateWithFlags(&ev, cudaEventDisableTiming));
    cudaError_t err = cudaEventRecord(ev, ck->stream);
    if (err != cudaSuccess) {
        cudaEventDestroy(ev);
        return skv_cuda_kvx_error(err, "cudaEventRecord", __LINE__);
    }
    *fence_p = (void *)ev;
    return SKV_STATUS_OK;
}

static skv_status_t skv_cuda_kvx_fence_test(void *ctx, void *fence)
{
    cudaError_t err = cudaEventQuery((cudaEvent_t)fence);
    if (err == cudaErrorNotReady) {
        return SKV_STATUS_AGAIN;
    }
    SKV_CUDA_KVX_CHECK(err);
    return SKV_STATUS_OK;
}

static void skv_cuda_kvx_fence_free(void *ctx, void *fence)
{
    (void)cudaEventDestroy((cudaEvent_t)fence);
}

extern "C" int skv_cuda_kvx_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        (void)cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" skv_status_t skv_cuda_kvx_create(int device, skv_cuda_kvx_t **ck_p)
{
    if (device < 0 || device >= skv_cuda_kvx_device_count()) {
        SKV_LOG_WARN("cuda_kvx: no GPU %d", device);
        return SKV_STATUS_UNSUPPORTED;
    }
    skv_cuda_kvx_t *ck = new (std::nothrow) skv_cuda_kvx_t();
    if (ck == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    ck->device = device;
    cudaError_t err = cudaSetDevice(device);
    if (err == cudaSuccess) {
        err = cudaStreamCreateWithFlags(&ck->stream, cudaStreamNonBlocking);
    }
    if (err != cudaSuccess) {
        delete ck;
        return skv_cuda_kvx_error(err, "cuda_kvx stream", __LINE__);
    }
    ck->ops.ctx = ck;
    ck->ops.ipc_export = skv_cuda_kvx_export;
    ck->ops.ipc_open = skv_cuda_kvx_open;
    ck->ops.ipc_close = skv_cuda_kvx_close;
    ck->ops.copy_async = skv_cuda_kvx_copy_async;
    ck->ops.fence = skv_cuda_kvx_fence;
    ck->ops.fence_test = skv_cuda_kvx_fence_test;
    ck->ops.fence_free = skv_cuda_kvx_fence_free;
    *ck_p = ck;
    return SKV_STATUS_OK;
}

extern "C" void skv_cuda_kvx_destroy(skv_cuda_kvx_t *ck)
{
    if (ck == NULL) {
        return;
    }
    (void)cudaStreamSynchronize(ck->stream);
    (void)cudaStreamDestroy(ck->stream);
    delete ck;
}

extern "C" const skv_kvx_device_ops_t *skv_cuda_kvx_ops(skv_cuda_kvx_t *ck)
{
    return &ck->ops;
}

extern "C" void *skv_cuda_kvx_host_alloc(void *ctx, size_t bytes)
{
    void *p = NULL;
    if (cudaHostAlloc(&p, bytes, cudaHostAllocPortable) != cudaSuccess) {
        (void)cudaGetLastError();
        SKV_LOG_ERROR("cuda_kvx: cudaHostAlloc of %zu bytes failed", bytes);
        return NULL;
    }
    return p;
}

extern "C" void skv_cuda_kvx_host_free(void *ctx, void *ptr, size_t bytes)
{
    (void)cudaFreeHost(ptr);
}

extern "C" skv_status_t skv_cuda_kvx_malloc(size_t bytes, void **ptr_p)
{
    SKV_CUDA_KVX_CHECK(cudaMalloc(ptr_p, bytes));
    return SKV_STATUS_OK;
}

extern "C" void skv_cuda_kvx_free(void *ptr)
{
    (void)cudaFree(ptr);
}

extern "C" skv_status_t skv_cuda_kvx_copy(void *dst, const void *src, size_t bytes)
{
    SKV_CUDA_KVX_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDefault));
    return SKV_STATUS_OK;
}
