/*
 * router_internal.h: the router object shared by router.c (lifecycle, unary methods),
 * router_drive.c (Generate drivers) and router_stats.c (Stats sweep).
 * Invariants: config, tok, workers, info and model are set before the server starts and are
 * read-only afterwards; counters are atomics; n_jobs counts live detached threads under mu.
 */
#ifndef SKV_ROUTER_INTERNAL_H
#define SKV_ROUTER_INTERNAL_H

#include <pthread.h>
#include <stdint.h>

#include "common/rpc/grpc_client.h"
#include "common/rpc/grpc_server.h"
#include "common/tokenizer/tokenizer.h"
#include "router/router.h"
#include "router/router_resolve.h"
#include "router/router_validate.h"
#include "router/router_workers.h"
#include "skv/v1/generate.pb-c.h"

struct skv_router {
    skv_router_config_t config; /* defaults filled in */
    skv_tokenizer_t *tok;
    skv_router_workers_t *workers;
    skv_router_resolver_t *resolver;
    skv_grpc_server_t *server;
    Skv__V1__ModelInfoResponse *info; /* a decode worker's answer, owned (unpacked) */
    skv_router_model_t model;
    char target[64];         /* "host:port" the server listens on (Stats.target) */
    uint64_t id_prefix;      /* random per process: request ids are unique per router */
    uint64_t id_counter;     /* atomic */
    int inflight;            /* Generate drivers running; atomic */
    uint64_t requests_total; /* atomic */
    uint64_t tokens_total;   /* atomic: generated tokens relayed */
    pthread_mutex_t mu;
    pthread_cond_t idle_cv;
    int n_jobs; /* live detached threads (drivers, stats sweeps); under mu */
};

/* Runs fn(arg) on a detached thread counted in n_jobs (destroy waits for them). Returns OK or
 * NO_MEMORY (thread creation failed; nothing ran). Any thread. */
skv_status_t skv_router_spawn(skv_router_t *r, void *(*fn)(void *), void *arg);

/* Marks the end of a spawned job; the last statement of every job function. */
void skv_router_job_done(skv_router_t *r);

/* Writes a new internal request id "<16 hex>-<n>" into buf. Any thread. */
void skv_router_next_id(skv_router_t *r, char *buf, size_t buf_bytes);

/* Server handlers (registered by router.c). */
void skv_router_generate(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user);
void skv_router_stats(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user);

#endif /* SKV_ROUTER_INTERNAL_H */
