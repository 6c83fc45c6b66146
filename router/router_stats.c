/*
 * router_stats.c: Generation.Stats: the router's counters plus every worker's Stats.
 *
 * Runs on a detached job (it makes one unary call per worker, each bounded by rpc_timeout_ms
 * and the client's deadline). The router's kv_blocks_* fields are the sums over the decode
 * workers that answered, so "no reserved blocks anywhere" is one field. A worker that does not
 * answer appears in `workers` with its address as target and role "unreachable".
 */
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "router/router_internal.h"

#define SKV_ROUTER_STATS_MAX 256

typedef struct {
    skv_router_t *r;
    skv_grpc_call_t *call;
} skv_router_stats_job_t;

/* One worker's entry (new or unpacked message) for the sweep. */
typedef struct {
    skv_router_endpoint_t *ep;
    Skv__V1__StatsResponse *resp; /* unpacked answer, or NULL */
    Skv__V1__StatsResponse placeholder;
} skv_router_stats_entry_t;

/* Asks one worker; fills e->resp on success, the placeholder otherwise. */
static void skv_router_stats_ask(skv_router_stats_job_t *j, skv_router_role_t role,
                                 skv_router_stats_entry_t *e)
{
    Skv__V1__StatsRequest rq = SKV__V1__STATS_REQUEST__INIT;
    skv_grpc_call_opts_t o = {.timeout_ms = j->r->config.rpc_timeout_ms, .parent = j->call};
    skv_grpc_error_t err = {0};
    ProtobufCMessage *m = NULL;
    const char *method =
        role == SKV_ROUTER_ROLE_DECODE ? "/skv.v1.Decode/Stats" : "/skv.v1.Prefill/Stats";
    skv_status_t st = skv_grpc_unary(skv_router_endpoint_channel(e->ep), method, &rq.base,
                                     &skv__v1__stats_response__descriptor, &o, &m, &err);
    skv__v1__stats_response__init(&e->placeholder);
    e->placeholder.target = (char *)skv_router_endpoint_addr(e->ep);
    e->placeholder.role = "unreachable";
    if (st != SKV_STATUS_OK) {
        SKV_LOG_DEBUG("router: Stats of %s: %s", skv_router_endpoint_addr(e->ep), err.message);
        return;
    }
    e->resp = (Skv__V1__StatsResponse *)m;
    /* The address the router knows the worker by. The unpacked message is freed by
     * protobuf-c's default allocator (malloc/free), so its string is swapped with plain libc. */
    char *addr = strdup(skv_router_endpoint_addr(e->ep));
    if (addr != NULL) {
        if (e->resp->target != protobuf_c_empty_string) {
            free(e->resp->target);
        }
        e->resp->target = addr;
    }
}

/* Adds a decode worker's KV and request counts into the router's totals. */
static void skv_router_stats_sum(Skv__V1__StatsResponse *out, const Skv__V1__StatsResponse *w)
{
    out->kv_blocks_total += w->kv_blocks_total;
    out->kv_blocks_free += w->kv_blocks_free;
    out->kv_blocks_reserved += w->kv_blocks_reserved;
    out->waiting_requests += w->waiting_requests;
}

static void *skv_router_stats_main(void *arg)
{
    skv_router_stats_job_t *j = arg;
    skv_router_t *r = j->r;
    skv_router_stats_entry_t *e = skv_calloc(SKV_ROUTER_STATS_MAX, sizeof(*e));
    Skv__V1__StatsResponse **list = skv_calloc(SKV_ROUTER_STATS_MAX, sizeof(*list));
    Skv__V1__StatsResponse resp = SKV__V1__STATS_RESPONSE__INIT;
    size_t n = 0;
    if (e == NULL || list == NULL) {
        skv_grpc_call_finish(j->call, SKV_STATUS_NO_MEMORY, "router: no memory for stats");
        goto out;
    }
    for (int role = 0; role < SKV_ROUTER_ROLE_COUNT_; role++) {
        skv_router_endpoint_t *eps[SKV_ROUTER_STATS_MAX];
        size_t k = skv_router_workers_snapshot(r->workers, (skv_router_role_t)role, eps,
                                               SKV_ROUTER_STATS_MAX - n);
        for (size_t i = 0; i < k; i++, n++) {
            e[n].ep = eps[i];
            skv_router_stats_ask(j, (skv_router_role_t)role, &e[n]);
            list[n] = e[n].resp != NULL ? e[n].resp : &e[n].placeholder;
            if (role == SKV_ROUTER_ROLE_DECODE && e[n].resp != NULL) {
                skv_router_stats_sum(&resp, e[n].resp);
            }
        }
    }
    resp.target = r->target;
    resp.role = "router";
    resp.running_requests = (uint32_t)__atomic_load_n(&r->inflight, __ATOMIC_RELAXED);
    resp.requests_total = __atomic_load_n(&r->requests_total, __ATOMIC_RELAXED);
    resp.tokens_generated_total = __atomic_load_n(&r->tokens_total, __ATOMIC_RELAXED);
    resp.workers = list;
    resp.n_workers = n;
    skv_grpc_call_finish_msg(j->call, &resp.base, SKV_STATUS_OK, NULL);
out:
    for (size_t i = 0; i < n; i++) {
        if (e[i].resp != NULL) {
            protobuf_c_message_free_unpacked(&e[i].resp->base, NULL);
        }
        skv_router_workers_unhold(r->workers, e[i].ep);
    }
    skv_free(list);
    skv_free(e);
    skv_free(j);
    skv_router_job_done(r);
    return NULL;
}

void skv_router_stats(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    skv_router_t *r = user;
    skv_router_stats_job_t *j = skv_malloc(sizeof(*j));
    (void)request;
    if (j == NULL) {
        skv_grpc_call_finish(call, SKV_STATUS_NO_MEMORY, "router: no memory for stats");
        return;
    }
    *j = (skv_router_stats_job_t){r, call};
    if (skv_router_spawn(r, skv_router_stats_main, j) != SKV_STATUS_OK) {
        skv_free(j);
        skv_grpc_call_finish(call, SKV_STATUS_NO_MEMORY, "router: no thread for stats");
    }
}
