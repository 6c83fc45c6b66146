/*
 * router_calls.c: request messages for the worker RPCs (see router_calls.h). Messages are
 * built on the stack over borrowed arrays; nothing here allocates except the gRPC layer.
 */
#include "base/log.h"
#include "router/router_calls.h"

/* The sampling parameters to forward (the client's, or defaults: greedy). */
static Skv__V1__SamplingParams *skv_router_sampling(const skv_router_call_ctx_t *c,
                                                    Skv__V1__SamplingParams *fallback)
{
    return c->req->sampling != NULL ? c->req->sampling : fallback;
}

/* The stop criteria for a worker: the client's ids and flags, the effective max_tokens, no
 * stop strings. */
static void skv_router_stop_for_worker(const skv_router_call_ctx_t *c, Skv__V1__StopCriteria *s)
{
    const Skv__V1__StopCriteria *in = c->req->stop;
    skv__v1__stop_criteria__init(s);
    s->max_tokens = c->prompt->max_tokens;
    if (in != NULL) {
        s->stop_token_ids = in->stop_token_ids;
        s->n_stop_token_ids = in->n_stop_token_ids;
        s->ignore_eos = in->ignore_eos;
        s->min_tokens = in->min_tokens;
    }
}

skv_status_t skv_router_call_reserve(skv_router_endpoint_t *ep, const skv_router_call_ctx_t *c,
                                     uint32_t lease_ms, const skv_grpc_call_opts_t *opts,
                                     Skv__V1__ReserveResponse **resp_p, skv_grpc_error_t *err)
{
    Skv__V1__ReserveRequest rq = SKV__V1__RESERVE_REQUEST__INIT;
    rq.request_id = (char *)c->id;
    rq.prompt_token_ids = c->prompt->ids;
    rq.n_prompt_token_ids = c->prompt->n_ids;
    rq.max_tokens = c->prompt->max_tokens;
    rq.layout_fingerprint = 0; /* the prefill worker checks the target's fingerprint */
    rq.lease_ms = lease_ms;
    return skv_grpc_unary(skv_router_endpoint_channel(ep), "/skv.v1.Decode/Reserve", &rq.base,
                          &skv__v1__reserve_response__descriptor, opts, (ProtobufCMessage **)resp_p,
                          err);
}

skv_status_t skv_router_call_prefill(skv_router_endpoint_t *ep, const skv_router_call_ctx_t *c,
                                     Skv__V1__TransferTarget *target,
                                     const skv_grpc_call_opts_t *opts,
                                     Skv__V1__PrefillResponse **resp_p, skv_grpc_error_t *err)
{
    Skv__V1__PrefillRequest rq = SKV__V1__PREFILL_REQUEST__INIT;
    Skv__V1__SamplingParams greedy = SKV__V1__SAMPLING_PARAMS__INIT;
    rq.request_id = (char *)c->id;
    rq.token_ids = c->prompt->ids;
    rq.n_token_ids = c->prompt->n_ids;
    rq.sampling = skv_router_sampling(c, &greedy);
    rq.logprobs = c->req->logprobs;
    rq.target = target;
    return skv_grpc_unary(skv_router_endpoint_channel(ep), "/skv.v1.Prefill/Prefill", &rq.base,
                          &skv__v1__prefill_response__descriptor, opts, (ProtobufCMessage **)resp_p,
                          err);
}

void skv_router_call_release(skv_router_endpoint_t *ep, const char *id, int timeout_ms)
{
    Skv__V1__ReleaseRequest rq = SKV__V1__RELEASE_REQUEST__INIT;
    skv_grpc_call_opts_t opts = {.timeout_ms = timeout_ms};
    skv_grpc_error_t err = {0};
    ProtobufCMessage *resp = NULL;
    rq.request_id = (char *)id;
    skv_status_t st =
        skv_grpc_unary(skv_router_endpoint_channel(ep), "/skv.v1.Decode/Release", &rq.base,
                       &skv__v1__release_response__descriptor, &opts, &resp, &err);
    if (st != SKV_STATUS_OK) {
        SKV_LOG_WARN("router: Release %s on %s failed: %s (%s); the lease frees it", id,
                     skv_router_endpoint_addr(ep), skv_status_str(st), err.message);
        return;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
}

skv_status_t skv_router_open_decode(skv_router_endpoint_t *ep, const skv_router_call_ctx_t *c,
                                    int32_t first_token, Skv__V1__TokenLogprob *first_lp,
                                    const skv_grpc_call_opts_t *opts, skv_grpc_stream_t **s_p)
{
    Skv__V1__DecodeRequest rq = SKV__V1__DECODE_REQUEST__INIT;
    Skv__V1__SamplingParams greedy = SKV__V1__SAMPLING_PARAMS__INIT;
    Skv__V1__StopCriteria stop;
    skv_router_stop_for_worker(c, &stop);
    rq.request_id = (char *)c->id;
    rq.first_token = first_token;
    rq.first_logprob = first_lp;
    rq.sampling = skv_router_sampling(c, &greedy);
    rq.stop = &stop;
    rq.logprobs = c->req->logprobs;
    rq.n_prompt_tokens = (uint32_t)c->prompt->n_ids;
    return skv_grpc_stream_open(skv_router_endpoint_channel(ep), "/skv.v1.Decode/Decode", &rq.base,
                                &skv__v1__decode_chunk__descriptor, opts, s_p);
}

skv_status_t skv_router_open_generate(skv_router_endpoint_t *ep, const skv_router_call_ctx_t *c,
                                      const skv_grpc_call_opts_t *opts, skv_grpc_stream_t **s_p)
{
    Skv__V1__WorkerGenerateRequest rq = SKV__V1__WORKER_GENERATE_REQUEST__INIT;
    Skv__V1__SamplingParams greedy = SKV__V1__SAMPLING_PARAMS__INIT;
    Skv__V1__StopCriteria stop;
    skv_router_stop_for_worker(c, &stop);
    rq.request_id = (char *)c->id;
    rq.token_ids = c->prompt->ids;
    rq.n_token_ids = c->prompt->n_ids;
    rq.sampling = skv_router_sampling(c, &greedy);
    rq.stop = &stop;
    rq.logprobs = c->req->logprobs;
    return skv_grpc_stream_open(skv_router_endpoint_channel(ep), "/skv.v1.Worker/Generate",
                                &rq.base, &skv__v1__decode_chunk__descriptor, opts, s_p);
}
