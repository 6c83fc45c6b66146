/*
 * grpc_health.c: the standard grpc.health.v1.Health service (Check and Watch), built into
 * every skv_grpc_server. C core has none (GRPC_C.md); Kubernetes gRPC probes and Python
 * grpcio clients talk to this one.
 *
 * Owns a small table service -> status and the list of open Watch streams. Uses only the
 * call writer API (no C-core calls). Lock order: registry lock, then a call's lock (inside
 * skv_grpc_call_write/finish); cancel callbacks run with no call lock held, so they may take
 * the registry lock. Whoever removes a watcher from the list finishes its call.
 */
#include <pthread.h>
#include <string.h>

#include "base/alloc.h"
#include "common/rpc/grpc_internal.h"
#include "base/log.h"
#include "grpc/health/v1/health.pb-c.h"

#define SKV_HEALTH_SERVICE_UNKNOWN 3 /* HealthCheckResponse.SERVICE_UNKNOWN, Watch only */

typedef struct {
    char *name;
    int status;
} skv_health_service_t;

typedef struct skv_health_watcher {
    struct skv_health_watcher *next;
    skv_grpc_call_t *call;
    char *service;
} skv_health_watcher_t;

struct skv_grpc_health_registry {
    pthread_mutex_t mu;
    skv_health_service_t *services;
    size_t n_services;
    skv_health_watcher_t *watchers;
    int shut_down;
};

skv_status_t skv_grpc_health_registry_create(skv_grpc_health_registry_t **health_p)
{
    skv_grpc_health_registry_t *h = skv_calloc(1, sizeof(*h));
    if (h == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    pthread_mutex_init(&h->mu, NULL);
    skv_status_t status = skv_grpc_health_registry_set(h, "", SKV_GRPC_HEALTH_SERVING);
    if (status != SKV_STATUS_OK) {
        skv_grpc_health_registry_destroy(h);
        return status;
    }
    *health_p = h;
    return SKV_STATUS_OK;
}

void skv_grpc_health_registry_destroy(skv_grpc_health_registry_t *h)
{
    if (h == NULL) {
        return;
    }
    SKV_ASSERT(h->watchers == NULL);
    for (size_t i = 0; i < h->n_services; i++) {
        skv_free(h->services[i].name);
    }
    skv_free(h->services);
    pthread_mutex_destroy(&h->mu);
    skv_free(h);
}

/* Returns the status of `service`, or -1 when it is not registered. Locked. */
static int skv_health_lookup_locked(const skv_grpc_health_registry_t *h, const char *service)
{
    for (size_t i = 0; i < h->n_services; i++) {
        if (strcmp(h->services[i].name, service) == 0) {
            return h->services[i].status;
        }
    }
    return -1;
}

/* Sends one HealthCheckResponse; a full or cancelled stream just misses the update. */
static void skv_health_send(skv_grpc_call_t *call, int status)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    (void)skv_grpc_call_write(call, &resp.base);
}

skv_status_t skv_grpc_health_registry_set(skv_grpc_health_registry_t *h, const char *service,
                                          skv_grpc_health_t status)
{
    skv_status_t rc = SKV_STATUS_OK;
    pthread_mutex_lock(&h->mu);
    if (h->shut_down) {
        status = SKV_GRPC_HEALTH_NOT_SERVING; /* a draining server never turns SERVING again */
    }
    size_t i = 0;
    while (i < h->n_services && strcmp(h->services[i].name, service) != 0) {
        i++;
    }
    if (i == h->n_services) {
        skv_health_service_t *grown = skv_realloc(h->services, (i + 1) * sizeof(*grown));
        char *name = skv_strdup(service);
        if (grown != NULL) {
            h->services = grown;
        }
        if (grown == NULL || name == NULL) {
            skv_free(name);
            rc = SKV_STATUS_NO_MEMORY;
            goto out;
        }
        h->services[i].name = name;
        h->n_services++;
    }
    h->services[i].status = (int)status;
    for (skv_health_watcher_t *w = h->watchers; w != NULL; w = w->next) {
        if (strcmp(w->service, service) == 0) {
            skv_health_send(w->call, (int)status);
        }
    }
out:
    pthread_mutex_unlock(&h->mu);
    return rc;
}

void skv_grpc_health_registry_shutdown(skv_grpc_health_registry_t *h)
{
    pthread_mutex_lock(&h->mu);
    h->shut_down = 1;
    for (size_t i = 0; i < h->n_services; i++) {
        h->services[i].status = SKV_GRPC_HEALTH_NOT_SERVING;
    }
    while (h->watchers != NULL) {
        skv_health_watcher_t *w = h->watchers;
        h->watchers = w->next;
        skv_health_send(w->call, SKV_GRPC_HEALTH_NOT_SERVING);
        skv_grpc_call_finish(w->call, SKV_STATUS_OK, NULL);
        skv_free(w->service);
        skv_free(w);
    }
    pthread_mutex_unlock(&h->mu);
}

void skv_grpc_health_check(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    skv_grpc_health_registry_t *h = user;
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)request;
    pthread_mutex_lock(&h->mu);
    int status = skv_health_lookup_locked(h, req->service);
    pthread_mutex_unlock(&h->mu);
    if (status < 0) {
        skv_grpc_call_finish(call, SKV_STATUS_NOT_FOUND, "unknown service");
        return;
    }
    skv_health_send(call, status);
    skv_grpc_call_finish(call, SKV_STATUS_OK, NULL);
}

/* Cancel callback of a Watch: if the watcher is still listed, unlist and finish it. */
static void skv_health_watch_cancelled(skv_grpc_call_t *call, void *user)
{
    skv_grpc_health_registry_t *h = user;
    skv_health_watcher_t *found = NULL;
    pthread_mutex_lock(&h->mu);
    for (skv_health_watcher_t **p = &h->watchers; *p != NULL; p = &(*p)->next) {
        if ((*p)->call == call) {
            found = *p;
            *p = found->next;
            break;
        }
    }
    pthread_mutex_unlock(&h->mu);
    if (found != NULL) {
        skv_grpc_call_finish(call, SKV_STATUS_CANCELLED, NULL);
        skv_free(found->service);
        skv_free(found);
    }
}

void skv_grpc_health_watch(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    skv_grpc_health_registry_t *h = user;
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)request;
    skv_health_watcher_t *w = skv_calloc(1, sizeof(*w));
    char *service = skv_strdup(req->service);
    if (w == NULL || service == NULL) {
        skv_free(w);
        skv_free(service);
        skv_grpc_call_finish(call, SKV_STATUS_NO_MEMORY, "no memory for a watcher");
        return;
    }
    /* The callback is set first: a cancel from now on either finds the watcher listed or
     * happens before the check below, which then finishes the call itself. */
    skv_grpc_call_set_cancel(call, skv_health_watch_cancelled, h);
    pthread_mutex_lock(&h->mu);
    int status = skv_health_lookup_locked(h, req->service);
    skv_health_send(call, status < 0 ? SKV_HEALTH_SERVICE_UNKNOWN : status);
    if (h->shut_down || skv_grpc_call_cancelled(call)) {
        pthread_mutex_unlock(&h->mu);
        skv_free(w);
        skv_free(service);
        skv_grpc_call_finish(call, SKV_STATUS_OK, NULL);
        return;
    }
    w->call = call;
    w->service = service;
    w->next = h->watchers;
    h->watchers = w;
    pthread_mutex_unlock(&h->mu);
}
