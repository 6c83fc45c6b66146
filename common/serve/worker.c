/*
 * worker.c: lifecycle and loop thread of a worker (see worker.h).
 *
 * The loop thread owns the engine stepping and the UCX transport. One iteration: adopt the
 * calls queued by handlers, progress UCX, expire reservations, watch every live call
 * (cancel/deadline, KV pushes, streamed tokens), run one engine step; sleep briefly only
 * when none of that had work (1 ms while UCX transfers may be in flight, else 5 ms: a
 * handler's enqueue wakes it at once).
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "common/rpc/grpc_client.h"
#include "base/log.h"
#include "common/serve/worker_internal.h"

#define SKV_WORKER_IDLE_WAIT_NS 5000000LL /* nothing in flight: bound on cancel latency */
#define SKV_WORKER_UCX_WAIT_NS  100000LL /* leases or pushes live: UCX (and device fences) want
                                              progress; a KV hand-over waits on this poll */
#define SKV_WORKER_DEVICE_STAGES      8u               /* pinned staging buffers (device pool) */
#define SKV_WORKER_DEVICE_STAGE_BYTES ((size_t)8 << 20) /* = the largest data message */

void skv_worker_config_default(skv_worker_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->role = SKV_WORKER_ROLE_BOTH;
    cfg->listen = "127.0.0.1:0";
    skv_kvx_config_default(&cfg->kvx);
}

static void skv_worker_config_fill(skv_worker_config_t *c)
{
    c->grpc_threads = c->grpc_threads > 0 ? c->grpc_threads : 2;
    c->max_waiting = c->max_waiting > 0 ? c->max_waiting : 256;
    c->max_requests = c->max_requests > 0 ? c->max_requests : 1024;
    c->lease_ms_default = c->lease_ms_default > 0 ? c->lease_ms_default : 10000;
    c->lease_ms_max = c->lease_ms_max > 0 ? c->lease_ms_max : 60000;
    c->push_timeout_ms = c->push_timeout_ms > 0 ? c->push_timeout_ms : 30000;
    c->push_backlog_ms = c->push_backlog_ms > 0 ? c->push_backlog_ms : 2000;
    c->model_name = c->model_name ? c->model_name : "";
    c->backend_name = c->backend_name ? c->backend_name : "cpu";
}

void skv_worker_wake(skv_worker_t *w)
{
    pthread_mutex_lock(&w->mu);
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Frees a call record the loop no longer references. */
static void skv_wreq_free(skv_wreq_t *r)
{
    skv_free(r->out_tokens);
    skv_free(r->out_samples);
    skv_kvx_desc_destroy(r->desc);
    skv_free(r);
}

/* Removes finished records from the live list and frees them. */
static void skv_worker_reap(skv_worker_t *w)
{
    skv_wreq_t **pp = &w->live;
    while (*pp != NULL) {
        skv_wreq_t *r = *pp;
        if (r->call == NULL && !r->in_engine && r->push == NULL && r->res == NULL) {
            *pp = r->next;
            skv_wreq_free(r);
        } else {
            pp = &r->next;
        }
    }
}

/* Counts a finished call (the finish itself is done by the caller). */
void skv_worker_retire(skv_worker_t *w, skv_wreq_t *r)
{
    r->call = NULL;
    r->msg = NULL;
    r->request_id = NULL;
    __atomic_sub_fetch(&w->n_live_calls, 1, __ATOMIC_RELAXED);
}

/* The roles this worker serves, in a fixed order (each hook is called for both). */
static const skv_worker_role_ops_t *skv_worker_role(const skv_worker_t *w, int i)
{
    return i == 0 ? ((w->cfg.role & SKV_WORKER_ROLE_PREFILL) ? w->cfg.prefill_ops : NULL)
                  : ((w->cfg.role & SKV_WORKER_ROLE_DECODE) ? w->cfg.decode_ops : NULL);
}

/* Starts a newly adopted call: a prefill is the prefill role's, every other kind the decode
 * role's (the handlers accept only the kinds of the roles served). */
static void skv_worker_dispatch(skv_worker_t *w, skv_wreq_t *r)
{
    r->id = ++w->next_id;
    const skv_worker_role_ops_t *ops = skv_worker_role(w, r->kind == SKV_WREQ_PREFILL ? 0 : 1);
    ops->start(w, r);
}

/* Moves the inbox to the live list and starts each call. Returns how many were adopted and
 * sets *stop_p when the worker is stopping. */
static int skv_worker_adopt(skv_worker_t *w, int *stop_p)
{
    pthread_mutex_lock(&w->mu);
    skv_wreq_t *in = w->inbox_head;
    w->inbox_head = w->inbox_tail = NULL;
    *stop_p = w->stop;
    pthread_mutex_unlock(&w->mu);
    int n = 0;
    while (in != NULL) {
        skv_wreq_t *next = in->next;
        in->next = w->live;
        w->live = in;
        skv_worker_dispatch(w, in);
        in = next;
        n++;
    }
    return n;
}

/* A live call whose client went away (cancel or deadline): stop its work; the engine's
 * on_finish (or the reservation code) then finishes the call. */
static void skv_worker_watch_cancel(skv_worker_t *w, skv_wreq_t *r)
{
    if (r->call == NULL || !skv_grpc_call_cancelled(r->call)) {
        return;
    }
    if (r->in_engine && !r->cancel_asked) {
        r->cancel_asked = skv_engine_cancel(w->engine, r->id) == SKV_STATUS_OK;
        return;
    }
    for (int i = 0; i < 2; i++) {
        const skv_worker_role_ops_t *ops = skv_worker_role(w, i);
        if (ops != NULL && ops->cancelled != NULL) {
            ops->cancelled(w, r);
        }
    }
}

/* The roles' per-iteration work (decode: reservations past their lease). */
static void skv_worker_tick(skv_worker_t *w)
{
    int64_t now = skv_clock_now_ns();
    for (int i = 0; i < 2; i++) {
        const skv_worker_role_ops_t *ops = skv_worker_role(w, i);
        if (ops != NULL && ops->tick != NULL) {
            ops->tick(w, now);
        }
    }
}

/* Watches every live call once. Returns non-zero when a transfer may still need progress. */
static int skv_worker_watch(skv_worker_t *w)
{
    int busy = 0;
    for (skv_wreq_t *r = w->live; r != NULL; r = r->next) {
        skv_worker_watch_cancel(w, r);
        for (int i = 0; i < 2; i++) {
            const skv_worker_role_ops_t *ops = skv_worker_role(w, i);
            if (ops != NULL && ops->watch != NULL) {
                busy |= ops->watch(w, r);
            }
        }
    }
    skv_worker_reap(w);
    return busy;
}

/* Sleeps until a handler wakes the loop or wait_ns pass. */
static void skv_worker_idle(skv_worker_t *w, int64_t wait_ns)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t t = (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec + wait_ns;
    ts.tv_sec = t / 1000000000LL;
    ts.tv_nsec = t % 1000000000LL;
    pthread_mutex_lock(&w->mu);
    if (w->inbox_head == NULL && !w->stop) {
        (void)pthread_cond_timedwait(&w->cv, &w->mu, &ts);
    }
    pthread_mutex_unlock(&w->mu);
}

/* Creates the transport on the loop thread (its owner) and tells skv_worker_create. */
static skv_status_t skv_worker_loop_init(skv_worker_t *w)
{
    skv_kvx_config_t kc = w->cfg.kvx;
    kc.name = "skv-worker";
    /* A device pool moves through the backend's hooks: CUDA IPC to a decode worker on this
     * host, pinned staging otherwise, and bounce buffers for data messages into our pool. */
    skv_status_t st = skv_backend_kvx_create(w->cfg.backend_name, w->cfg.device, &w->bkvx);
    if (st == SKV_STATUS_OK && w->bkvx.ops != NULL) {
        kc.device_ops = w->bkvx.ops;
        kc.staging_alloc = w->bkvx.host_alloc;
        kc.staging_free = w->bkvx.host_free;
        kc.staging_ctx = NULL;
        /* A device prompt's KV is hundreds of MB (2000 tokens of an 8B model: 262 MB): enough
         * pinned buffers that copies and sends overlap with several pushes in flight. */
        kc.n_staging = kc.n_staging > SKV_WORKER_DEVICE_STAGES ? kc.n_staging
                                                               : SKV_WORKER_DEVICE_STAGES;
        kc.staging_bytes = kc.staging_bytes > SKV_WORKER_DEVICE_STAGE_BYTES
                               ? kc.staging_bytes
                               : SKV_WORKER_DEVICE_STAGE_BYTES;
    }
    if (st == SKV_STATUS_OK) {
        st = skv_kvx_create(&kc, &w->kvx);
    }
    for (int i = 0; i < 2 && st == SKV_STATUS_OK; i++) {
        const skv_worker_role_ops_t *ops = skv_worker_role(w, i);
        if (ops != NULL && ops->init != NULL) {
            st = ops->init(w);
        }
    }
    pthread_mutex_lock(&w->mu);
    w->loop_init_status = st;
    w->loop_init_done = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return st;
}

static void *skv_worker_loop_main(void *arg)
{
    skv_worker_t *w = arg;
    if (skv_worker_loop_init(w) != SKV_STATUS_OK) {
        skv_kvx_destroy(w->kvx);
        w->kvx = NULL;
        skv_backend_kvx_destroy(&w->bkvx);
        return NULL;
    }
    for (;;) {
        int stop = 0;
        int work = skv_worker_adopt(w, &stop);
        if (stop && w->live == NULL) {
            break;
        }
        work += (int)skv_kvx_progress(w->kvx);
        skv_worker_tick(w);
        int transfers = skv_worker_watch(w);
        skv_status_t st = skv_engine_step(w->engine);
        if (st != SKV_STATUS_AGAIN) {
            work++;
        }
        if (work == 0) {
            skv_worker_idle(w, transfers ? SKV_WORKER_UCX_WAIT_NS : SKV_WORKER_IDLE_WAIT_NS);
        }
    }
    for (int i = 0; i < 2; i++) {
        const skv_worker_role_ops_t *ops = skv_worker_role(w, i);
        if (ops != NULL && ops->stop != NULL) {
            ops->stop(w);
        }
    }
    skv_kvx_destroy(w->kvx);
    w->kvx = NULL;
    skv_backend_kvx_destroy(&w->bkvx); /* after the transport that borrowed its hooks */
    return NULL;
}

/* Starts the loop thread and waits for its transport setup. */
static skv_status_t skv_worker_loop_start(skv_worker_t *w)
{
    if (pthread_create(&w->loop, NULL, skv_worker_loop_main, w) != 0) {
        SKV_LOG_ERROR("worker: cannot start the loop thread");
        return SKV_STATUS_NO_MEMORY;
    }
    w->loop_started = 1;
    pthread_mutex_lock(&w->mu);
    while (!w->loop_init_done) {
        pthread_cond_wait(&w->cv, &w->mu);
    }
    skv_status_t st = w->loop_init_status;
    pthread_mutex_unlock(&w->mu);
    return st;
}

static void skv_worker_loop_join(skv_worker_t *w)
{
    if (!w->loop_started) {
        return;
    }
    pthread_mutex_lock(&w->mu);
    w->stop = 1;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->loop, NULL);
    w->loop_started = 0;
}

/* Initializes the mutex and the monotonic-clock condition variable. */
static void skv_worker_sync_init(skv_worker_t *w)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&w->mu, NULL);
}

/* Starts the gRPC server with the role's methods. */
static skv_status_t skv_worker_server_start(skv_worker_t *w)
{
    skv_grpc_method_t methods[16];
    skv_grpc_server_config_t sc = {0};
    sc.address = w->cfg.listen;
    sc.n_threads = w->cfg.grpc_threads;
    sc.max_queued_messages = 64; /* a slow reader makes tokens pile up in the worker instead */
    sc.methods = methods;
    sc.n_methods = skv_worker_methods(w, methods);
    SKV_CHECK(skv_grpc_server_create(&sc, &w->server));
    if (w->cfg.advertise == NULL) {
        const char *colon = strrchr(w->cfg.listen, ':');
        int host_len = colon ? (int)(colon - w->cfg.listen) : 0;
        snprintf(w->advertise, sizeof(w->advertise), "%.*s:%d", host_len, w->cfg.listen,
                 skv_grpc_server_port(w->server));
    }
    return SKV_STATUS_OK;
}

/* What a tensor-parallel worker cannot do, refused at startup rather than at the first
 * request: a prefill role on device memory (its ranks' KV would have to be copied off each
 * rank's GPU by that rank's backend; only host pools push per rank today), and a pool of more
 * rank memories than a transfer descriptor carries. */
static skv_status_t skv_worker_tp_check(const skv_worker_t *w)
{
    if (w->tp_size > 1 && !w->host_pool && (w->cfg.role & SKV_WORKER_ROLE_PREFILL)) {
        SKV_LOG_ERROR("worker: a tensor-parallel (%d ranks) prefill role on the %s backend cannot "
                      "push its KV: only host-memory pools push per rank; run the prefill role "
                      "with --tp 1 or on a CPU backend",
                      w->tp_size, w->cfg.backend_name);
        return SKV_STATUS_UNSUPPORTED;
    }
    if (w->tp_size > (int32_t)SKV_KVX_MAX_RANKS) {
        SKV_LOG_ERROR("worker: %d tensor-parallel ranks; a KV transfer carries at most %u",
                      w->tp_size, SKV_KVX_MAX_RANKS);
        return SKV_STATUS_UNSUPPORTED;
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_worker_create(const skv_worker_config_t *cfg, skv_model_t *model,
                               skv_kv_pool_t *pool, skv_backend_t *be, skv_worker_t **worker_p)
{
    if (cfg == NULL || cfg->listen == NULL || cfg->role < SKV_WORKER_ROLE_PREFILL ||
        cfg->role > SKV_WORKER_ROLE_BOTH || model == NULL || pool == NULL ||
        (be == NULL && skv_kv_pool_n_ranks(pool) == 1) ||
        ((cfg->role & SKV_WORKER_ROLE_PREFILL) && cfg->prefill_ops == NULL) ||
        ((cfg->role & SKV_WORKER_ROLE_DECODE) && cfg->decode_ops == NULL)) {
        SKV_LOG_ERROR("worker: invalid configuration (listen address, role and its code, model, "
                      "pool, backend)");
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    skv_status_t status = SKV_STATUS_NO_MEMORY;
    skv_worker_t *w = skv_calloc(1, sizeof(*w));
    if (w == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    w->cfg = *cfg;
    skv_worker_config_fill(&w->cfg);
    w->model = model;
    w->pool = pool;
    w->be = be;
    w->fingerprint = skv_kv_layout_model_fingerprint(skv_kv_pool_layout(pool));
    w->block_bytes = skv_kv_layout_block_bytes(skv_kv_pool_layout(pool));
    w->tp_size = skv_kv_pool_n_ranks(pool);
    w->host_pool = skv_backend_host_memory(w->cfg.backend_name);
    if (cfg->advertise != NULL) {
        snprintf(w->advertise, sizeof(w->advertise), "%s", cfg->advertise);
    }
    skv_worker_sync_init(w);
    status = skv_worker_tp_check(w);
    if (status != SKV_STATUS_OK) {
        goto fail;
    }
    skv_engine_opts_t eo = {.max_waiting = w->cfg.max_waiting,
                            .host_sampling = w->cfg.host_sampling};
    SKV_CHECK_GOTO(skv_engine_create(model, pool, &eo, &w->engine), fail);
    SKV_CHECK_GOTO(skv_worker_loop_start(w), fail);
    SKV_CHECK_GOTO(skv_worker_server_start(w), fail);
    *worker_p = w;
    return SKV_STATUS_OK;
fail:
    skv_worker_destroy(w);
    return status;
}

int skv_worker_port(const skv_worker_t *worker)
{
    return skv_grpc_server_port(worker->server);
}

skv_status_t skv_worker_wait_signal(skv_worker_t *worker, int64_t grace_ms)
{
    return skv_grpc_server_wait_signal(worker->server, grace_ms);
}

void skv_worker_destroy(skv_worker_t *w)
{
    if (w == NULL) {
        return;
    }
    /* The drain waits for every call; the loop is still running and finishes them. */
    skv_grpc_server_destroy(w->server);
    skv_worker_loop_join(w);
    skv_engine_destroy(w->engine);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    skv_free(w);
}
