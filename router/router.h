/*
 * router.h: the router process as an object: public skv.v1.Generation service + health over
 * the worker registry (see ARCHITECTURE.md, "router").
 *
 * Owns: the gRPC server, the tokenizer, the worker registry and resolver, the cached model
 * info, one detached driver thread per in-flight Generate (and per Stats sweep).
 * Does not own: the configuration strings (borrowed; they must outlive the router).
 * Lifecycle (main thread): create -> (serve; skv_grpc_server_wait_signal(skv_router_server(r)))
 * -> destroy, which drains, waits for every driver and frees.
 */
#ifndef SKV_ROUTER_ROUTER_H
#define SKV_ROUTER_ROUTER_H

#include <stddef.h>
#include <stdint.h>

#include "common/rpc/grpc_server.h"
#include "base/status.h"

typedef struct skv_router skv_router_t;

typedef struct {
    const char *listen;                 /* "0.0.0.0:50051"; port 0 picks one */
    const char *tokenizer;              /* model dir or tokenizer.json */
    const char *const *decode_targets;  /* HOST:PORT names, each may resolve to several pods */
    size_t n_decode;                    /* >= 1 */
    const char *const *prefill_targets; /* none: every request runs Worker.Generate on D */
    size_t n_prefill;
    int n_threads;              /* server completion-queue threads; 0 -> 4 */
    uint32_t disagg_min_tokens; /* prompts shorter than this skip P; 0 -> 32 */
    int max_inflight;           /* Generate calls at once; beyond: RESOURCE_EXHAUSTED */
    int resolve_ms;             /* DNS re-resolve period; 0 -> 5000; < 0: never */
    int backoff_ms;             /* skip a worker that failed UNAVAILABLE; 0 -> 2000 */
    int rpc_timeout_ms;         /* Reserve/Release/Stats/ModelInfo; 0 -> 5000 */
    int64_t request_timeout_ms; /* bound of a request without a client deadline;
                                   0 -> 600000 */
    uint32_t lease_ms;          /* reservation lease; 0 -> 30000 */
    int64_t startup_timeout_ms; /* wait for a decode worker's ModelInfo; 0 -> 60000 */
} skv_router_config_t;

/* Loads the tokenizer, resolves the workers, waits (bounded by startup_timeout_ms) until a
 * decode worker answers ModelInfo, then starts the server. Returns OK, INVALID_ARGUMENT (bad
 * config, logged), NOT_FOUND/FORMAT/UNSUPPORTED (tokenizer), TIMEOUT (no worker answered),
 * UNAVAILABLE (bind failed), NO_MEMORY. Main thread; *router_p is owned by the caller. */
skv_status_t skv_router_create(const skv_router_config_t *config, skv_router_t **router_p);

/* The bound port. Any thread. */
int skv_router_port(const skv_router_t *r);

/* The server (for skv_grpc_server_wait_signal / drain). Any thread. */
skv_grpc_server_t *skv_router_server(skv_router_t *r);

/* Drains the server (zero grace if not drained yet), waits for the drivers (they end once
 * their calls are cancelled), stops the resolver and frees everything. NULL is a no-op.
 * Main thread. */
void skv_router_destroy(skv_router_t *r);

#endif /* SKV_ROUTER_ROUTER_H */
