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
