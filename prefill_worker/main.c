/*
 * skv_prefill_worker: the prefill worker process: the serving core (common/serve) with the
 * prefill role (prefill.c). Flags and environment are listed in common/serve/worker_main.c.
 */
#include "common/serve/worker_main.h"
#include "prefill_worker/prefill.h"

int main(int argc, char **argv)
{
    return skv_worker_main(argc, argv, SKV_WORKER_ROLE_PREFILL, &skv_prefill_role, NULL);
}
