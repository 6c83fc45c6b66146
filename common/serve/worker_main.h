/*
 * worker_main.h: the whole program of a worker binary (flags, model, pool, serving, drain);
 * prefill_worker/main.c and decode_worker/main.c differ in their default role and in the
 * roles' code they link.
 */
#ifndef SKV_COMMON_WORKER_MAIN_H
#define SKV_COMMON_WORKER_MAIN_H

#include "common/serve/worker.h"

/* Parses argv (see the header of common/serve/worker_main.c for flags and environment), serves
 * the chosen role(s) with the roles' code the binary was linked with (prefill_ops /
 * decode_ops, NULL when the binary lacks that role), until SIGTERM/SIGINT, and drains.
 * Returns the process exit code: 0, 1 on a startup failure, 2 for bad usage (also a role the
 * binary lacks). Main thread. */
int skv_worker_main(int argc, char **argv, skv_worker_role_t default_role,
                    const skv_worker_role_ops_t *prefill_ops,
                    const skv_worker_role_ops_t *decode_ops);

#endif /* SKV_COMMON_WORKER_MAIN_H */
