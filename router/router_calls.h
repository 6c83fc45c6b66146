/*
 * router_calls.h: the router's calls to its workers (skv.v1.Decode, Prefill, Worker), built
 * from a validated public request. One function per RPC; each borrows its arguments, blocks
 * the calling driver thread (unary) or opens a stream, and reports the worker's gRPC status in
 * err. Stop strings are never sent to workers (the router matches them on text); max_tokens
 * is the effective one. Any thread.
 */
#ifndef SKV_ROUTER_CALLS_H
#define SKV_ROUTER_CALLS_H

#include "common/rpc/grpc_client.h"
#include "router/router_validate.h"
#include "router/router_workers.h"
#include "skv/v1/worker.pb-c.h"

/* What every worker call of one request shares. */
typedef struct {
    const char *id;                      /* internal request id */
    const Skv__V1__GenerateRequest *req; /* the public request (sampling, stop, logprobs) */
    const skv_router_prompt_t *prompt;   /* validated ids and effective max_tokens */
} skv_router_call_ctx_t;

/* Decode.Reserve on ep. On OK *resp_p is owned by the caller (free_unpacked). */
skv_status_t skv_router_call_reserve(skv_router_endpoint_t *ep, const skv_router_call_ctx_t *c,
                                     uint32_t lease_ms, const skv_grpc_call_opts_t *opts,
                                     Skv__V1__ReserveResponse **resp_p, skv_grpc_error_t *err);

/* Prefill.Prefill on ep into target (borrowed). On OK *resp_p is owned by the caller. */
skv_status_t skv_router_call_prefill(skv_router_endpoint_t *ep, const skv_router_call_ctx_t *c,
                                     Skv__V1__TransferTarget *target,
                                     const skv_grpc_call_opts_t *opts,
                                     Skv__V1__PrefillResponse **resp_p, skv_grpc_error_t *err);

/* Decode.Release on ep with its own timeout and no parent (the client may be gone). Failures
 * are logged (the lease frees the blocks anyway). */
void skv_router_call_release(skv_router_endpoint_t *ep, const char *id, int timeout_ms);

/* Opens Decode.Decode on ep from the first token (first_lp may be NULL). */
skv_status_t skv_router_open_decode(skv_router_endpoint_t *ep, const skv_router_call_ctx_t *c,
                                    int32_t first_token, Skv__V1__TokenLogprob *first_lp,
                                    const skv_grpc_call_opts_t *opts, skv_grpc_stream_t **s_p);

/* Opens Worker.Generate on ep (prefill + decode in one process). */
skv_status_t skv_router_open_generate(skv_router_endpoint_t *ep, const skv_router_call_ctx_t *c,
                                      const skv_grpc_call_opts_t *opts, skv_grpc_stream_t **s_p);

#endif /* SKV_ROUTER_CALLS_H */
