/*
 * worker_main.h: the whole program of a worker binary (flags, model, pool, serving, drain);
 * prefill_worker/main.c and decode_worker/main.c differ only in their default role.
 */
#ifndef SKV_COMMON_WORKER_MAIN_H
#define SKV_COMMON_WORKER_MAIN_H

#include "common/serve/worker.h"

/* Parses argv (see the header of common/serve/worker_main.c for flags and environment), serves
 * until SIGTERM/SIGINT and drains. Returns the process exit code: 0, 1 on a startup failure,
 * 2 for bad usage. Main thread. */
int skv_worker_main(int argc, char **argv, skv_worker_role_t default_role);

#endif /* SKV_COMMON_WORKER_MAIN_H */
