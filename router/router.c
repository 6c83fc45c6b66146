/*
 * router.c: the router's lifecycle (create/destroy), its detached-job bookkeeping, the cached
 * model info and the small unary methods (Tokenize, Detokenize, ModelInfo). Generate lives in
 * router_drive.c, Stats in router_stats.c.
 * Invariant: everything a handler reads is set before skv_grpc_server_create and never
 * changes afterwards.
 */
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "router/router_internal.h"

#ifndef SKV_ROUTER_VERSION
#define SKV_ROUTER_VERSION "dev"
#endif

skv_status_t skv_router_spawn(skv_router_t *r, void *(*fn)(void *), void *arg)
{
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_mutex_lock(&r->mu);
    r->n_jobs++;
    pthread_mutex_unlock(&r->mu);
    int rc = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        SKV_LOG_ERROR("router: pthread_create failed (%d)", rc);
        skv_router_job_done(r);
        return SKV_STATUS_NO_MEMORY;
    }
    return SKV_STATUS_OK;
}

void skv_router_job_done(skv_router_t *r)
{
    pthread_mutex_lock(&r->mu);
    if (--r->n_jobs == 0) {
        pthread_cond_broadcast(&r->idle_cv);
    }
    pthread_mutex_unlock(&r->mu);
}

void skv_router_next_id(skv_router_t *r, char *buf, size_t buf_bytes)
{
    uint64_t n = __atomic_add_fetch(&r->id_counter, 1, __ATOMIC_RELAXED);
    snprintf(buf, buf_bytes, "%016llx-%llu", (unsigned long long)r->id_prefix,
             (unsigned long long)n);
}

/* ---- unary methods ---- */

static void skv_router_tokenize(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    skv_router_t *r = user;
    const Skv__V1__TokenizeRequest *req = (const Skv__V1__TokenizeRequest *)request;
    Skv__V1__TokenizeResponse resp = SKV__V1__TOKENIZE_RESPONSE__INIT;
    char msg[256] = "input: one of text, chat is required";
    int32_t *ids = NULL;
    size_t n = 0;
    skv_status_t st = SKV_STATUS_INVALID_ARGUMENT;
    if (req->input_case == SKV__V1__TOKENIZE_REQUEST__INPUT_TEXT) {
        st = skv_router_encode_text(r->tok, req->text, req->add_special_tokens, &ids, &n, msg,
                                    sizeof(msg));
    } else if (req->input_case == SKV__V1__TOKENIZE_REQUEST__INPUT_CHAT) {
        st = skv_router_encode_chat(r->tok, req->chat, &ids, &n, msg, sizeof(msg));
    }
    if (st != SKV_STATUS_OK) {
        skv_grpc_call_finish(call, st, msg);
        return;
    }
    resp.ids = ids;
    resp.n_ids = n;
    skv_grpc_call_finish_msg(call, &resp.base, SKV_STATUS_OK, NULL);
    skv_free(ids);
}

static void skv_router_detokenize(skv_grpc_call_t *call, const ProtobufCMessage *request,
                                  void *user)
{
    skv_router_t *r = user;
    const Skv__V1__DetokenizeRequest *req = (const Skv__V1__DetokenizeRequest *)request;
    Skv__V1__DetokenizeResponse resp = SKV__V1__DETOKENIZE_RESPONSE__INIT;
    size_t n_vocab = skv_tokenizer_n_vocab(r->tok);
    char msg[128];
    for (size_t i = 0; i < req->n_ids; i++) {
        if (req->ids[i] < 0 || (size_t)req->ids[i] >= n_vocab) {
            snprintf(msg, sizeof(msg), "ids[%zu] = %d is outside the vocabulary [0, %zu)", i,
                     req->ids[i], n_vocab);
            skv_grpc_call_finish(call, SKV_STATUS_INVALID_ARGUMENT, msg);
            return;
        }
    }
    char *text = NULL;
    size_t len = 0;
    unsigned flags = req->skip_special_tokens ? SKV_TOKENIZER_DECODE_SKIP_SPECIAL : 0;
    skv_status_t st = skv_tokenizer_decode(r->tok, req->ids, req->n_ids, flags, &text, &len);
    if (st != SKV_STATUS_OK) {
        skv_grpc_call_finish(call, st, "detokenize failed");
        return;
    }
    resp.text = text;
    skv_grpc_call_finish_msg(call, &resp.base, SKV_STATUS_OK, NULL);
    skv_free(text);
}

static void skv_router_model_info(skv_grpc_call_t *call, const ProtobufCMessage *request,
                                  void *user)
{
    skv_router_t *r = user;
    Skv__V1__ModelInfoResponse resp = *r->info; /* shallow: only server_version differs */
    char version[64];
    snprintf(version, sizeof(version), "swiftkv-serve router %s", SKV_ROUTER_VERSION);
    resp.server_version = version;
    skv_grpc_call_finish_msg(call, &resp.base, SKV_STATUS_OK, NULL);
}

/* ---- startup: model info from a decode worker ---- */

/* Asks each decode endpoint for ModelInfo once; stores the first answer. */
static skv_status_t skv_router_ask_info(skv_router_t *r, int64_t deadline_ns)
{
    skv_router_endpoint_t *eps[64];
    size_t n = skv_router_workers_snapshot(r->workers, SKV_ROUTER_ROLE_DECODE, eps, 64);
    skv_status_t st = SKV_STATUS_UNAVAILABLE;
    for (size_t i = 0; i < n; i++) {
        Skv__V1__ModelInfoRequest rq = SKV__V1__MODEL_INFO_REQUEST__INIT;
        int64_t left = (deadline_ns - skv_clock_now_ns()) / 1000000;
        left = left < 1 ? 1 : left; /* timeout 0 would mean no deadline at all */
        skv_grpc_call_opts_t o = {
            .timeout_ms = left < r->config.rpc_timeout_ms ? left : r->config.rpc_timeout_ms};
        skv_grpc_error_t err = {0};
        ProtobufCMessage *m = NULL;
        if (st != SKV_STATUS_OK &&
            (st = skv_grpc_unary(skv_router_endpoint_channel(eps[i]), "/skv.v1.Worker/ModelInfo",
                                 &rq.base, &skv__v1__model_info_response__descriptor, &o, &m,
                                 &err)) == SKV_STATUS_OK) {
            r->info = (Skv__V1__ModelInfoResponse *)m;
            SKV_LOG_INFO("router: model '%s' (context %u, vocab %u) from %s", r->info->name,
                         r->info->context_length, r->info->vocab_size,
                         skv_router_endpoint_addr(eps[i]));
        } else if (st != SKV_STATUS_OK) {
            SKV_LOG_DEBUG("router: ModelInfo from %s: %s", skv_router_endpoint_addr(eps[i]),
                          err.message);
        }
        skv_router_workers_unhold(r->workers, eps[i]);
    }
    return st;
}

/* Fills r->model from r->info (EOS from the tokenizer when the worker names none). */
static void skv_router_model_from_info(skv_router_t *r)
{
    const Skv__V1__ModelInfoResponse *mi = r->info;
    r->model.context_length = mi->context_length;
    r->model.vocab_size =
        mi->vocab_size > 0 ? mi->vocab_size : (uint32_t)skv_tokenizer_n_vocab(r->tok);
    for (size_t i = 0; i < mi->n_eos_token_ids && r->model.n_eos < SKV_ROUTER_MAX_EOS; i++) {
        r->model.eos_ids[r->model.n_eos++] = mi->eos_token_ids[i];
    }
    if (r->model.n_eos == 0 && skv_tokenizer_eos_id(r->tok) >= 0) {
        r->model.eos_ids[r->model.n_eos++] = skv_tokenizer_eos_id(r->tok);
    }
}

/* Retries ModelInfo on the decode workers until one answers or startup_timeout_ms passes. */
static skv_status_t skv_router_wait_info(skv_router_t *r)
{
    int64_t deadline = skv_clock_deadline_ms(r->config.startup_timeout_ms);
    while (skv_router_ask_info(r, deadline) != SKV_STATUS_OK) {
        if (skv_clock_expired(deadline)) {
            SKV_LOG_ERROR("router: no decode worker answered ModelInfo within %lld ms",
                          (long long)r->config.startup_timeout_ms);
            return SKV_STATUS_TIMEOUT;
        }
        usleep(200 * 1000); /* workers may still be loading their model */
        if (skv_router_workers_count(r->workers, SKV_ROUTER_ROLE_DECODE) == 0) {
            skv_router_resolver_tick(r->resolver);
        }
    }
    if (r->info->context_length == 0) {
        SKV_LOG_ERROR("router: the decode worker reports context_length 0");
        return SKV_STATUS_FORMAT;
    }
    skv_router_model_from_info(r);
    return SKV_STATUS_OK;
}

/* ---- lifecycle ---- */

static skv_status_t skv_router_config_check(skv_router_config_t *c)
{
    if (c->listen == NULL || c->tokenizer == NULL || c->n_decode == 0) {
        SKV_LOG_ERROR("router: needs a listen address, a tokenizer and at least one decode "
                      "worker address");
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    c->n_threads = c->n_threads > 0 ? c->n_threads : 4;
    c->disagg_min_tokens = c->disagg_min_tokens > 0 ? c->disagg_min_tokens : 32;
    c->max_inflight = c->max_inflight > 0 ? c->max_inflight : 256;
    c->resolve_ms = c->resolve_ms != 0 ? c->resolve_ms : 5000;
    c->backoff_ms = c->backoff_ms > 0 ? c->backoff_ms : 2000;
    c->rpc_timeout_ms = c->rpc_timeout_ms > 0 ? c->rpc_timeout_ms : 5000;
    c->request_timeout_ms = c->request_timeout_ms > 0 ? c->request_timeout_ms : 600000;
    c->lease_ms = c->lease_ms > 0 ? c->lease_ms : 30000;
    c->startup_timeout_ms = c->startup_timeout_ms > 0 ? c->startup_timeout_ms : 60000;
    return SKV_STATUS_OK;
}

/* Registers the public methods and starts the server. */
static skv_status_t skv_router_serve(skv_router_t *r)
{
    const skv_grpc_method_t methods[] = {
        {"/skv.v1.Generation/Generate", SKV_GRPC_METHOD_SERVER_STREAMING,
         &skv__v1__generate_request__descriptor, &skv__v1__generate_chunk__descriptor,
         skv_router_generate, r},
        {"/skv.v1.Generation/Tokenize", SKV_GRPC_METHOD_UNARY,
         &skv__v1__tokenize_request__descriptor, &skv__v1__tokenize_response__descriptor,
         skv_router_tokenize, r},
        {"/skv.v1.Generation/Detokenize", SKV_GRPC_METHOD_UNARY,
         &skv__v1__detokenize_request__descriptor, &skv__v1__detokenize_response__descriptor,
         skv_router_detokenize, r},
        {"/skv.v1.Generation/ModelInfo", SKV_GRPC_METHOD_UNARY,
         &skv__v1__model_info_request__descriptor, &skv__v1__model_info_response__descriptor,
         skv_router_model_info, r},
        {"/skv.v1.Generation/Stats", SKV_GRPC_METHOD_UNARY, &skv__v1__stats_request__descriptor,
         &skv__v1__stats_response__descriptor, skv_router_stats, r},
    };
    skv_grpc_server_config_t sc = {.address = r->config.listen,
                                   .n_threads = r->config.n_threads,
                                   .methods = methods,
                                   .n_methods = sizeof(methods) / sizeof(methods[0])};
    SKV_CHECK(skv_grpc_server_create(&sc, &r->server));
    snprintf(r->target, sizeof(r->target), "%.40s", r->config.listen);
    char *colon = strrchr(r->target, ':');
    if (colon != NULL) {
        snprintf(colon + 1, sizeof(r->target) - (size_t)(colon + 1 - r->target), "%d",
                 skv_grpc_server_port(r->server));
    }
    return SKV_STATUS_OK;
}

/* Creates the tokenizer, the registry and the resolver. */
static skv_status_t skv_router_init_parts(skv_router_t *r)
{
    SKV_CHECK(skv_tokenizer_load(r->config.tokenizer, &r->tok));
    skv_grpc_channel_config_t cc = {.keepalive_ms = 30000};
    SKV_CHECK(skv_router_workers_create(r->config.backoff_ms, &cc, &r->workers));
    const char *const *names[SKV_ROUTER_ROLE_COUNT_] = {r->config.decode_targets,
                                                        r->config.prefill_targets};
    const size_t n_names[SKV_ROUTER_ROLE_COUNT_] = {r->config.n_decode, r->config.n_prefill};
    return skv_router_resolver_create(r->workers, names, n_names, r->config.resolve_ms,
                                      &r->resolver);
}

skv_status_t skv_router_create(const skv_router_config_t *config, skv_router_t **router_p)
{
    skv_router_t *r = skv_calloc(1, sizeof(*r));
    if (r == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    r->config = *config;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->idle_cv, NULL);
    if (getrandom(&r->id_prefix, sizeof(r->id_prefix), 0) != sizeof(r->id_prefix)) {
        r->id_prefix = (uint64_t)skv_clock_now_ns() ^ ((uint64_t)getpid() << 40);
    }
    skv_status_t st = skv_router_config_check(&r->config);
    if (st == SKV_STATUS_OK) {
        st = skv_router_init_parts(r);
    }
    if (st == SKV_STATUS_OK) {
        st = skv_router_wait_info(r);
    }
    if (st == SKV_STATUS_OK) {
        st = skv_router_serve(r);
    }
    if (st != SKV_STATUS_OK) {
        skv_router_destroy(r);
        return st;
    }
    *router_p = r;
    return SKV_STATUS_OK;
}

int skv_router_port(const skv_router_t *r)
{
    return skv_grpc_server_port(r->server);
}

skv_grpc_server_t *skv_router_server(skv_router_t *r)
{
    return r->server;
}

void skv_router_destroy(skv_router_t *r)
{
    if (r == NULL) {
        return;
    }
    skv_grpc_server_destroy(r->server); /* drains: waits until every call is finished */
    pthread_mutex_lock(&r->mu);
    while (r->n_jobs > 0) { /* drivers still releasing reservations after their finish */
        pthread_cond_wait(&r->idle_cv, &r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    skv_router_resolver_destroy(r->resolver);
    skv_router_workers_destroy(r->workers);
    skv_tokenizer_destroy(r->tok);
    if (r->info != NULL) {
        protobuf_c_message_free_unpacked(&r->info->base, NULL);
    }
    pthread_cond_destroy(&r->idle_cv);
    pthread_mutex_destroy(&r->mu);
    skv_free(r);
}
