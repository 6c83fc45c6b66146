/*
 * worker.h: a worker process's serving core: the gRPC services of the prefill and decode roles
 * over one model, one KV pool, one batching engine and one UCX transport.
 *
 * Owns: the gRPC server, the engine (borrowing the caller's model and pool), the UCX transport
 * (skv_kvx) and one loop thread. The loop thread is the only thread that steps the engine and
 * touches the transport (skv_kvx is single-threaded by contract); gRPC handlers only validate
 * and queue commands for it. Each loop iteration: take queued commands, progress UCX, watch
 * live calls (client cancel, deadline), flush streamed tokens, run one engine step.
 * Does not own: the backend, model and pool (main.c builds them; they outlive the worker).
 *
 * Roles (services registered, see proto/skv/v1/worker.proto):
 *   PREFILL: skv.v1.Prefill (Prefill pushes the prompt's KV into a decode worker over UCX).
 *   DECODE:  skv.v1.Decode (Reserve/Release/Decode/Stats) and skv.v1.Worker (Generate,
 *            ModelInfo, Stats): a decode worker can always serve a whole request itself.
 *   BOTH:    all of the above (single-GPU deployments, short prompts, a lost prefill).
 * Invariants: every KV block is owned by exactly one of {free list, a reservation (lease),
 * the engine, a finished prefill being pushed}; every accepted call is finished exactly once
 * by the loop thread; every wait is bounded (lease deadlines, call deadlines, push deadlines).
 */
#ifndef SKV_COMMON_WORKER_H
#define SKV_COMMON_WORKER_H

#include <stdint.h>

#include "base/status.h"
#include "common/kvx/kvx.h"
#include "common/model/engine.h"

typedef enum {
    SKV_WORKER_ROLE_PREFILL = 1,
    SKV_WORKER_ROLE_DECODE = 2,
    SKV_WORKER_ROLE_BOTH = 3,
} skv_worker_role_t;

typedef struct skv_worker skv_worker_t;
typedef struct skv_wreq skv_wreq_t; /* one accepted call (worker_internal.h) */

/* What a role adds to the serving core; the role's own folder fills it (prefill_worker/,
 * decode_worker/) and the process's main hands it to the worker, so the core never calls
 * up into a role. Every hook runs on the loop thread; NULL hooks are absent. */
typedef struct {
    /* After the transport exists, before any call (decode: register the KV pool). */
    skv_status_t (*init)(skv_worker_t *w);
    /* A newly accepted call of one of this role's kinds (skv_wreq_kind_t). */
    void (*start)(skv_worker_t *w, skv_wreq_t *r);
    /* Every live call, every loop iteration: move its work on (pushes, streamed tokens).
     * Returns non-zero while a transfer of the call needs the loop to poll soon. */
    int (*watch)(skv_worker_t *w, skv_wreq_t *r);
    /* A call whose client went away and that the engine does not hold. */
    void (*cancelled)(skv_worker_t *w, skv_wreq_t *r);
    /* Once per loop iteration (decode: expire reservations). */
    void (*tick)(skv_worker_t *w, int64_t now_ns);
    /* The loop ends: give back what the role holds (decode: reservations). */
    void (*stop)(skv_worker_t *w);
} skv_worker_role_ops_t;

typedef struct {
    skv_worker_role_t role;
    const skv_worker_role_ops_t *prefill_ops; /* the roles' code; each role cfg.role includes */
    const skv_worker_role_ops_t *decode_ops;  /* needs its table (borrowed, static) */
    const char *listen;        /* gRPC address, "0.0.0.0:50052"; port 0 picks one */
    int grpc_threads;          /* completion-queue threads; 0 -> 2 */
    int32_t max_waiting;       /* engine queue bound (backpressure); 0 -> 256 */
    int32_t max_requests;      /* live calls of all kinds beyond which RESOURCE_EXHAUSTED;
                                  0 -> 1024 */
    uint32_t lease_ms_default; /* Reserve without lease_ms; 0 -> 10000 */
    uint32_t lease_ms_max;     /* cap on a requested lease; 0 -> 60000 */
    int64_t push_timeout_ms;   /* bound of one KV push without a call deadline; 0 -> 30000 */
    int64_t push_backlog_ms;   /* a prompt whose push would queue behind more than this (at the
                                  measured push rate) is refused UNAVAILABLE: the router then
                                  decodes it on the decode worker; 0 -> 2000 */
    const char *model_name;    /* reported by ModelInfo */
    const char *backend_name;  /* "cpu" | "cuda", reported by ModelInfo; a device backend's
                                  KV transfer uses its hooks (kernels/backend.h) */
    int device;                /* the device backend's GPU (its transfer hooks' stream) */
    int host_sampling;         /* 1: the engine picks tokens on the host (A/B runs) */
    skv_kvx_config_t kvx;      /* transfer options (skv_kvx_config_default, then the main's
                                  switches); the worker fills name, device_ops and the
                                  staging allocator */
    const char *advertise;     /* address other processes use to reach this worker (Stats,
                                  TransferTarget.decode_target); NULL -> listen address */
} skv_worker_config_t;

/* Fills cfg with the defaults above (role BOTH, listen "127.0.0.1:0", kvx defaults). */
void skv_worker_config_default(skv_worker_config_t *cfg);

/* Creates the engine over model/pool/be (borrowed; they must outlive the worker), starts the
 * loop thread (which creates the UCX transport and, for decode roles, registers the whole KV
 * pool with it: every rank's memory of a tensor-parallel pool) and then the gRPC server.
 * A tensor-parallel model (common/model/model_tp.h, pool from skv_model_kv_pool_create) owns its
 * ranks' backends: be may then be NULL. Returns OK; INVALID_ARGUMENT for a bad config;
 * UNAVAILABLE when the port cannot be bound or UCX cannot start; UNSUPPORTED when a decode
 * role's pool is device memory the transport cannot register, or a tensor-parallel prefill
 * role's pool is device memory (only host pools push per rank); NO_MEMORY. Main thread. */
skv_status_t skv_worker_create(const skv_worker_config_t *cfg, skv_model_t *model,
                               skv_kv_pool_t *pool, skv_backend_t *be, skv_worker_t **worker_p);

/* The bound gRPC port. Any thread. */
int skv_worker_port(const skv_worker_t *worker);

/* Blocks until SIGTERM/SIGINT (skv_grpc_signals_install must have run), then drains: new calls
 * are refused, in-flight calls get up to grace_ms to finish, the rest are cancelled (their KV
 * released). Returns OK or TIMEOUT (some calls had to be cancelled). Main thread. */
skv_status_t skv_worker_wait_signal(skv_worker_t *worker, int64_t grace_ms);

/* Drains with zero grace if still serving, stops the loop thread, releases every reservation
 * and engine request, destroys the transport and the engine. NULL is a no-op. Main thread. */
void skv_worker_destroy(skv_worker_t *worker);

#endif /* SKV_COMMON_WORKER_H */
