/*
 * backend.h: creating a compute backend by name ("cpu", "cpu-ref", "cuda"), so binaries
 * choose a backend with a flag and never include a backend's header. Implemented in
 * kernels/backend_select.c (the one place that knows every backend this build has).
 */
#ifndef SKV_COMMON_BACKEND_H
#define SKV_COMMON_BACKEND_H

#include "base/status.h"
#include "kernels/ops.h"

/* Creates the backend named `name` with n_threads CPU threads (0 = all; CPU backends) on
 * device `device` (CUDA). UNSUPPORTED when this build or machine lacks it (logged). */
skv_status_t skv_backend_create(const char *name, int n_threads, int device,
                                skv_backend_t **be_p);

/* Returns a comma-separated list of backend names this build has ("cpu,cpu-ref,cuda"). */
const char *skv_backend_names(void);

#endif /* SKV_COMMON_BACKEND_H */
