/*
 * skv_prefill_worker: the prefill worker process. Everything but the default role lives in
 * common/worker*.c; flags and environment are listed in common/serve/worker_main.c.
 */
#include "common/serve/worker_main.h"

int main(int argc, char **argv)
{
    return skv_worker_main(argc, argv, SKV_WORKER_ROLE_PREFILL);
}
