/*
 * decode.h: the decode role (Decode.Reserve/Release/Decode, Worker.Generate/ModelInfo/Stats):
 * KV reservations a prefill worker pushes into, admission of transferred KV into continuous
 * batching, token streaming, and whole requests served here. The worker's serving core
 * (common/serve) calls it through this table.
 */
#ifndef SKV_DECODE_WORKER_DECODE_H
#define SKV_DECODE_WORKER_DECODE_H

#include "common/serve/worker.h"

extern const skv_worker_role_ops_t skv_decode_role;

#endif /* SKV_DECODE_WORKER_DECODE_H */
