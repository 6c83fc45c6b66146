/*
 * worker_rpc.c: the gRPC face of a worker: the method table of each role, handlers that queue
 * calls for the loop thread, the answers that need no loop (ModelInfo, Stats), and conversion
 * of sampling parameters and log-probabilities between protobuf and engine types.
 *
 * Handlers never block and never touch the engine or the transport: they count the call,
 * allocate its record and append it to the loop's inbox.
 */
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "common/serve/worker_internal.h"

#define SKV_WORKER_VERSION "swiftkv-serve 0.1.0"

/* Queues the call for the loop, or finishes it at once when the worker is full. */
static void skv_worker_enqueue(skv_grpc_call_t *call, const ProtobufCMessage *msg, skv_worker_t *w,
                               skv_wreq_kind_t kind, const char *request_id)
{
    int64_t live = __atomic_add_fetch(&w->n_live_calls, 1, __ATOMIC_RELAXED);
    skv_wreq_t *r = live <= w->cfg.max_requests ? skv_calloc(1, sizeof(*r)) : NULL;
    if (r == NULL) {
        __atomic_sub_fetch(&w->n_live_calls, 1, __ATOMIC_RELAXED);
        skv_grpc_call_finish(call, SKV_STATUS_BUSY,
                             live > w->cfg.max_requests ? "the worker has too many requests"
                                                        : "no memory for the request");
        return;
    }
    *r = (skv_wreq_t){.w = w,
                      .kind = kind,
                      .call = call,
                      .msg = msg,
                      .request_id = request_id,
                      .received_ns = skv_clock_now_ns()};
    pthread_mutex_lock(&w->mu);
    if (w->inbox_tail != NULL) {
        w->inbox_tail->next = r;
    } else {
        w->inbox_head = r;
    }
    w->inbox_tail = r;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void skv_worker_on_generate(skv_grpc_call_t *call, const ProtobufCMessage *m, void *user)
{
    const Skv__V1__WorkerGenerateRequest *q = (const Skv__V1__WorkerGenerateRequest *)m;
    skv_worker_enqueue(call, m, user, SKV_WREQ_GENERATE, q->request_id);
}

static void skv_worker_on_decode(skv_grpc_call_t *call, const ProtobufCMessage *m, void *user)
{
    const Skv__V1__DecodeRequest *q = (const Skv__V1__DecodeRequest *)m;
    skv_worker_enqueue(call, m, user, SKV_WREQ_DECODE, q->request_id);
}

static void skv_worker_on_prefill(skv_grpc_call_t *call, const ProtobufCMessage *m, void *user)
{
    const Skv__V1__PrefillRequest *q = (const Skv__V1__PrefillRequest *)m;
    skv_worker_enqueue(call, m, user, SKV_WREQ_PREFILL, q->request_id);
}

static void skv_worker_on_reserve(skv_grpc_call_t *call, const ProtobufCMessage *m, void *user)
{
    const Skv__V1__ReserveRequest *q = (const Skv__V1__ReserveRequest *)m;
    skv_worker_enqueue(call, m, user, SKV_WREQ_RESERVE, q->request_id);
}

static void skv_worker_on_release(skv_grpc_call_t *call, const ProtobufCMessage *m, void *user)
{
    const Skv__V1__ReleaseRequest *q = (const Skv__V1__ReleaseRequest *)m;
    skv_worker_enqueue(call, m, user, SKV_WREQ_RELEASE, q->request_id);
}

static void skv_worker_on_model_info(skv_grpc_call_t *call, const ProtobufCMessage *m, void *user)
{
    (void)m;
    skv_worker_t *w = user;
    const skv_model_config_t *c = skv_model_config(w->model);
    const skv_kv_layout_t *l = skv_kv_pool_layout(w->pool);
    Skv__V1__ModelInfoResponse a = SKV__V1__MODEL_INFO_RESPONSE__INIT;
    a.name = (char *)w->cfg.model_name;
    a.architecture = skv_model_is_swiftkv(w->model) ? "swiftkv-llama" : "llama";
    a.context_length = (uint32_t)skv_model_max_context(w->model);
    a.vocab_size = (uint32_t)c->vocab_size;
    a.n_layers = (uint32_t)c->n_layers;
    a.swiftkv_lk = skv_model_is_swiftkv(w->model) ? (uint32_t)c->n_kv_layers : 0;
    a.hidden_size = (uint32_t)c->hidden_size;
    a.n_heads = (uint32_t)c->n_heads;
    a.n_kv_heads = (uint32_t)c->n_kv_heads;
    a.head_dim = (uint32_t)c->head_dim;
    a.n_eos_token_ids = (size_t)c->n_eos;
    a.eos_token_ids = (int32_t *)c->eos_ids;
    a.bos_token_id = c->bos_id;
    a.kv_block_size = (uint32_t)l->block_size;
    a.dtype = (char *)skv_dtype_name(l->dtype);
    a.backend = (char *)w->cfg.backend_name;
    a.server_version = SKV_WORKER_VERSION;
    a.tp_size = (uint32_t)w->tp_size;
    skv_grpc_call_finish_msg(call, &a.base, SKV_STATUS_OK, NULL);
}

static const char *skv_worker_role_name(skv_worker_role_t role)
{
    return role == SKV_WORKER_ROLE_PREFILL  ? "prefill"
           : role == SKV_WORKER_ROLE_DECODE ? "decode"
                                            : "worker";
}

static void skv_worker_on_stats(skv_grpc_call_t *call, const ProtobufCMessage *m, void *user)
{
    (void)m;
    skv_worker_t *w = user;
    skv_engine_stats_t es;
    skv_engine_stats(w->engine, &es);
    Skv__V1__StatsResponse a = SKV__V1__STATS_RESPONSE__INIT;
    a.target = w->advertise;
    a.role = (char *)skv_worker_role_name(w->cfg.role);
    a.kv_blocks_total = (uint32_t)es.kv_total_blocks;
    a.kv_blocks_free = (uint32_t)es.kv_free_blocks;
    a.kv_blocks_reserved = (uint32_t)__atomic_load_n(&w->n_reserved_blocks, __ATOMIC_RELAXED);
    a.running_requests = (uint32_t)es.n_running;
    a.waiting_requests = (uint32_t)es.n_waiting;
    a.requests_total = (uint64_t)__atomic_load_n(&w->n_requests_total, __ATOMIC_RELAXED);
    a.tokens_generated_total = (uint64_t)__atomic_load_n(&w->n_tokens_total, __ATOMIC_RELAXED);
    a.tp_size = (uint32_t)w->tp_size;
    skv_grpc_call_finish_msg(call, &a.base, SKV_STATUS_OK, NULL);
}

#define SKV_M(svc, name, kind, rq, rp, fn)                                                         \
    (skv_grpc_method_t)                                                                            \
    {                                                                                              \
        "/skv.v1." svc "/" name, SKV_GRPC_METHOD_##kind, &skv__v1__##rq##__descriptor,             \
            &skv__v1__##rp##__descriptor, fn, w                                                    \
    }

size_t skv_worker_methods(skv_worker_t *w, skv_grpc_method_t *m)
{
    size_t n = 0;
    if (w->cfg.role & SKV_WORKER_ROLE_PREFILL) {
        m[n++] = SKV_M("Prefill", "Prefill", UNARY, prefill_request, prefill_response,
                       skv_worker_on_prefill);
        m[n++] =
            SKV_M("Prefill", "Stats", UNARY, stats_request, stats_response, skv_worker_on_stats);
    }
    if (w->cfg.role & SKV_WORKER_ROLE_DECODE) {
        m[n++] = SKV_M("Decode", "Reserve", UNARY, reserve_request, reserve_response,
                       skv_worker_on_reserve);
        m[n++] = SKV_M("Decode", "Release", UNARY, release_request, release_response,
                       skv_worker_on_release);
        m[n++] = SKV_M("Decode", "Decode", SERVER_STREAMING, decode_request, decode_chunk,
                       skv_worker_on_decode);
        m[n++] =
            SKV_M("Decode", "Stats", UNARY, stats_request, stats_response, skv_worker_on_stats);
        m[n++] = SKV_M("Worker", "Generate", SERVER_STREAMING, worker_generate_request,
                       decode_chunk, skv_worker_on_generate);
        m[n++] = SKV_M("Worker", "Prefill", UNARY, prefill_request, prefill_response,
                       skv_worker_on_prefill);
        m[n++] = SKV_M("Worker", "ModelInfo", UNARY, model_info_request, model_info_response,
                       skv_worker_on_model_info);
        m[n++] =
            SKV_M("Worker", "Stats", UNARY, stats_request, stats_response, skv_worker_on_stats);
    }
    return n;
}

/* A seed for requests that did not state one: different per request, never 0-biased. */
static uint64_t skv_worker_random_seed(void)
{
    static uint64_t counter;
    uint64_t x = (uint64_t)skv_clock_now_ns() ^
                 (__atomic_add_fetch(&counter, 1, __ATOMIC_RELAXED) * 0x9E3779B97F4A7C15ULL);
    x ^= x >> 31;
    return x * 0xBF58476D1CE4E5B9ULL;
}

skv_status_t skv_worker_sampling_from_msg(const skv_worker_t *w, const Skv__V1__SamplingParams *m,
                                          uint32_t logprobs, skv_sampling_params_t *p,
                                          const char **why)
{
    skv_sampling_params_default(p);
    p->seed = skv_worker_random_seed();
    if (logprobs > SKV_SAMPLER_MAX_LOGPROBS) {
        *why = "logprobs must be at most 20";
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    p->n_logprobs = (int32_t)logprobs;
    if (m != NULL) {
        if (m->repetition_penalty != 0.0f && m->repetition_penalty != 1.0f) {
            *why = "sampling.repetition_penalty is not supported (use presence_penalty or "
                   "frequency_penalty)";
            return SKV_STATUS_INVALID_ARGUMENT;
        }
        p->temperature = m->temperature;
        p->top_k = m->top_k;
        p->top_p = m->top_p == 0.0f ? 1.0f : m->top_p;
        p->min_p = m->min_p;
        p->presence_penalty = m->presence_penalty;
        p->frequency_penalty = m->frequency_penalty;
        if (m->seed_present_case == SKV__V1__SAMPLING_PARAMS__SEED_PRESENT_SEED) {
            p->seed = m->seed;
        }
    }
    return skv_sampling_params_validate(p, skv_model_config(w->model)->vocab_size, why);
}

void skv_worker_fill_logprob(const skv_sample_t *s, Skv__V1__TokenLogprob *lp,
                             Skv__V1__TopLogprob *tops, Skv__V1__TopLogprob **top_ptrs)
{
    skv__v1__token_logprob__init(lp);
    lp->token_id = s->token;
    lp->logprob = s->logprob;
    for (int32_t i = 0; i < s->n_top; i++) {
        skv__v1__top_logprob__init(&tops[i]);
        tops[i].token_id = s->top_ids[i];
        tops[i].logprob = s->top_logprobs[i];
        top_ptrs[i] = &tops[i];
    }
    lp->n_top = (size_t)s->n_top;
    lp->top = top_ptrs;
}
