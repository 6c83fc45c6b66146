/*
 * backend.h: creating a compute backend by name ("cpu", "cpu-ref", "cuda"), so binaries
 * choose a backend with a flag and never include a backend's header. Implemented in
 * kernels/backend_select.c (the one place that knows every backend this build has).
 */
#ifndef SKV_COMMON_BACKEND_H
#define SKV_COMMON_BACKEND_H

#include <stddef.h>

#include "base/status.h"
#include "kernels/kvx_device_ops.h"
#include "kernels/ops.h"

/* Creates the backend named `name` with n_threads CPU threads (0 = all; CPU backends) on
 * device `device` (CUDA). UNSUPPORTED when this build or machine lacks it (logged). */
skv_status_t skv_backend_create(const char *name, int n_threads, int device,
                                skv_backend_t **be_p);

/* Returns a comma-separated list of backend names this build has ("cpu,cpu-ref,cuda"). */
const char *skv_backend_names(void);

/* Returns 1 when backend `name` keeps its tensors and KV pools in host memory (the CPU
 * backends), 0 for device memory. Any thread. */
int skv_backend_host_memory(const char *name);

/* What the KV transfer (common/kvx) needs from a device backend: the device hooks (CUDA IPC,
 * asynchronous copies on a stream of their own, fences) and a pinned host allocator for its
 * staging and bounce buffers. A host-memory backend has none (ops NULL). */
typedef struct {
    const skv_kvx_device_ops_t *ops;
    void *(*host_alloc)(void *ctx, size_t bytes);
    void (*host_free)(void *ctx, void *ptr, size_t bytes);
    void *impl; /* the backend's own state */
} skv_backend_kvx_t;

/* Fills *k for backend `name` on GPU `device`: OK with the hooks, OK with ops NULL for a
 * host-memory backend, or the hooks' error (UNSUPPORTED, DEVICE; logged). The transport's
 * owner thread calls it; skv_backend_kvx_destroy after the transport is gone. */
skv_status_t skv_backend_kvx_create(const char *name, int device, skv_backend_kvx_t *k);

/* Frees what skv_backend_kvx_create made; a zeroed struct is a no-op. */
void skv_backend_kvx_destroy(skv_backend_kvx_t *k);

#endif /* SKV_COMMON_BACKEND_H */
