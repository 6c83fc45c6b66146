/*
 * skv_decode_worker: the decode worker process: the serving core (common/serve) with the
 * decode role (decode.c, stream.c) and, by default, the prefill role too (--role decode
 * serves the decode role alone). Flags and environment are listed in common/serve/worker_main.c.
 */
#include "common/serve/worker_main.h"
#include "decode_worker/decode.h"
#include "prefill_worker/prefill.h"

int main(int argc, char **argv)
{
    return skv_worker_main(argc, argv, SKV_WORKER_ROLE_BOTH, &skv_prefill_role, &skv_decode_role);
}
