/*
 * backend_select.c: maps backend names to constructors. The CUDA constructor is linked in
 * only when the build has the CUDA backend (SKV_HAVE_CUDA_BACKEND), so no #ifdef appears in
 * callers.
 */
#include <string.h>

#include "kernels/backend.h"
#include "base/log.h"
#include "kernels/comm.h"
#include "kernels/cpu/cpu.h"

#ifdef SKV_HAVE_CUDA_BACKEND
#include "kernels/cuda/cuda.h"
#include "kernels/cuda/cuda_kvx.h"
#endif
#ifdef SKV_HAVE_NCCL
#include "kernels/cuda/cuda_comm.h"
#endif

skv_status_t skv_backend_create(const char *name, int n_threads, int device,
                                skv_backend_t **be_p)
{
    if (strcmp(name, "cpu") == 0) {
        return skv_cpu_backend_create(SKV_CPU_MODE_FAST, n_threads, be_p);
    }
    if (strcmp(name, "cpu-ref") == 0) {
        return skv_cpu_backend_create(SKV_CPU_MODE_REFERENCE, 1, be_p);
    }
#ifdef SKV_HAVE_CUDA_BACKEND
    if (strcmp(name, "cuda") == 0) {
        return skv_cuda_backend_create(device, be_p);
    }
#endif
    SKV_LOG_ERROR("backend '%s' is not available in this build (have: %s)", name,
                  skv_backend_names());
    return SKV_STATUS_UNSUPPORTED;
}

const char *skv_backend_names(void)
{
#ifdef SKV_HAVE_CUDA_BACKEND
    return "cpu,cpu-ref,cuda";
#else
    return "cpu,cpu-ref";
#endif
}

int skv_backend_host_memory(const char *name)
{
    return strcmp(name, "cpu") == 0 || strcmp(name, "cpu-ref") == 0;
}

skv_status_t skv_backend_kvx_create(const char *name, int device, skv_backend_kvx_t *k)
{
    memset(k, 0, sizeof(*k));
    if (skv_backend_host_memory(name)) {
        return SKV_STATUS_OK;
    }
#ifdef SKV_HAVE_CUDA_BACKEND
    if (strcmp(name, "cuda") == 0) {
        skv_cuda_kvx_t *ck = NULL;
        SKV_CHECK(skv_cuda_kvx_create(device, &ck));
        k->ops = skv_cuda_kvx_ops(ck);
        k->host_alloc = skv_cuda_kvx_host_alloc;
        k->host_free = skv_cuda_kvx_host_free;
        k->impl = ck;
        return SKV_STATUS_OK;
    }
#endif
    SKV_LOG_ERROR("backend '%s' has no KV transfer hooks in this build", name);
    return SKV_STATUS_UNSUPPORTED;
}

void skv_backend_kvx_destroy(skv_backend_kvx_t *k)
{
#ifdef SKV_HAVE_CUDA_BACKEND
    if (k->impl != NULL) {
        skv_cuda_kvx_destroy(k->impl);
    }
#endif
    memset(k, 0, sizeof(*k));
}

skv_status_t skv_comm_group_create(const char *backend_name, int32_t n_ranks,
                                   skv_comm_group_t **group_p)
{
    if (strcmp(backend_name, "cpu") == 0 || strcmp(backend_name, "cpu-ref") == 0) {
        return skv_cpu_comm_group_create(n_ranks, group_p);
    }
#ifdef SKV_HAVE_NCCL
    if (strcmp(backend_name, "cuda") == 0) {
        return skv_nccl_comm_group_create(n_ranks, group_p);
    }
#endif
    SKV_LOG_ERROR("no communicator for backend '%s' in this build (tensor parallelism needs "
                  "cpu, cpu-ref, or cuda built with NCCL)",
                  backend_name);
    return SKV_STATUS_UNSUPPORTED;
}
