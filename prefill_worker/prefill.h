/*
 * prefill.h: the prefill role (Prefill.Prefill / Worker.Prefill): prompts through the engine
 * as prefill-only requests and their KV pushed into a decode worker's reservation. The
 * worker's serving core (common/serve) calls it through this table.
 */
#ifndef SKV_PREFILL_WORKER_PREFILL_H
#define SKV_PREFILL_WORKER_PREFILL_H

#include "common/serve/worker.h"

extern const skv_worker_role_ops_t skv_prefill_role;

#endif /* SKV_PREFILL_WORKER_PREFILL_H */
