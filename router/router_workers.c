/*
 * router_workers.c: worker endpoint registry and least-outstanding-work picker.
 *
 * Per role, a sorted array of endpoint pointers (sorted by address, so a new address set is
 * merged in with one diff). An endpoint is reference counted: one reference for being in the
 * set, one per request holding it. Channels are created when an address appears and destroyed
 * when the last reference goes, outside the mutex.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/log.h"
#include "router/router_workers.h"

struct skv_router_endpoint {
    char *addr;                  /* "ip:port", owned */
    skv_grpc_channel_t *channel; /* owned */
    int64_t work;                /* tokens in flight charged by acquire */
    int active;                  /* requests holding it through acquire */
    int refs;                    /* 1 while in the set + 1 per holder */
    int64_t backoff_until_ns;    /* skipped by pickers until then */
};

struct skv_router_workers {
    pthread_mutex_t mu;
    int64_t backoff_ns;
    skv_grpc_channel_config_t channel_config;
    skv_router_endpoint_t **eps[SKV_ROUTER_ROLE_COUNT_]; /* sorted by addr */
    size_t n_eps[SKV_ROUTER_ROLE_COUNT_];
    unsigned rotation; /* tie-break start for the picker */
};

static int skv_router_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

size_t skv_router_addrs_sort_unique(const char **addrs, size_t n)
{
    if (n == 0) {
        return 0;
    }
    qsort(addrs, n, sizeof(*addrs), skv_router_cmp_str);
    size_t out = 1;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(addrs[i], addrs[out - 1]) != 0) {
            addrs[out++] = addrs[i];
        }
    }
    return out;
}

void skv_router_addrs_diff(const char *const *old, size_t n_old, const char *const *new_addrs,
                           size_t n_new, size_t *added_idx, size_t *n_added_p, size_t *removed_idx,
                           size_t *n_removed_p)
{
    size_t i = 0, j = 0, n_added = 0, n_removed = 0;
    while (i < n_old || j < n_new) {
        int c = i == n_old ? 1 : j == n_new ? -1 : strcmp(old[i], new_addrs[j]);
        if (c < 0) {
            removed_idx[n_removed++] = i++;
        } else if (c > 0) {
            added_idx[n_added++] = j++;
        } else {
            i++, j++;
        }
    }
    *n_added_p = n_added;
    *n_removed_p = n_removed;
}

skv_status_t skv_router_workers_create(int backoff_ms,
                                       const skv_grpc_channel_config_t *channel_config,
                                       skv_router_workers_t **workers_p)
{
    skv_router_workers_t *w = skv_calloc(1, sizeof(*w));
    if (w == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    pthread_mutex_init(&w->mu, NULL);
    w->backoff_ns = (int64_t)(backoff_ms > 0 ? backoff_ms : 2000) * 1000000;
    if (channel_config != NULL) {
        w->channel_config = *channel_config;
    }
    *workers_p = w;
    return SKV_STATUS_OK;
}

static void skv_router_endpoint_free(skv_router_endpoint_t *ep)
{
    skv_grpc_channel_destroy(ep->channel);
    skv_free(ep->addr);
    skv_free(ep);
}

void skv_router_workers_destroy(skv_router_workers_t *w)
{
    if (w == NULL) {
        return;
    }
    for (int r = 0; r < SKV_ROUTER_ROLE_COUNT_; r++) {
        for (size_t i = 0; i < w->n_eps[r]; i++) {
            SKV_ASSERT(w->eps[r][i]->refs == 1);
            skv_router_endpoint_free(w->eps[r][i]);
        }
        skv_free(w->eps[r]);
    }
    pthread_mutex_destroy(&w->mu);
    skv_free(w);
}

/* Creates an endpoint (refs 1) with a lazy channel to addr. */
static skv_status_t skv_router_endpoint_new(skv_router_workers_t *w, const char *addr,
                                            skv_router_endpoint_t **ep_p)
{
    skv_router_endpoint_t *ep = skv_calloc(1, sizeof(*ep));
    if (ep == NULL || (ep->addr = skv_strdup(addr)) == NULL) {
        skv_free(ep);
        return SKV_STATUS_NO_MEMORY;
    }
    skv_status_t st = skv_grpc_channel_create(addr, &w->channel_config, &ep->channel);
    if (st != SKV_STATUS_OK) {
        skv_free(ep->addr);
        skv_free(ep);
        return st;
    }
    ep->refs = 1;
    *ep_p = ep;
    return SKV_STATUS_OK;
}

/* Builds the merged endpoint array for the sorted set addrs; dropped endpoints whose last
 * reference goes are moved to dead[] (freed by the caller outside the mutex); an address whose
 * endpoint cannot be created is skipped (retried by the next set). Mutex held. */
static skv_status_t skv_router_workers_merge(skv_router_workers_t *w, skv_router_role_t role,
                                             const char **addrs, size_t n,
                                             skv_router_endpoint_t **dead, size_t *n_dead_p,
                                             size_t *added_p, size_t *removed_p)
{
    size_t n_old = w->n_eps[role], i = 0, j = 0, out = 0;
    skv_router_endpoint_t **old = w->eps[role];
    skv_router_endpoint_t **merged = skv_mallocn(n_old + n + 1, sizeof(*merged));
    if (merged == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    skv_status_t st = SKV_STATUS_OK;
    while (i < n_old || j < n) {
        int c = i == n_old ? 1 : j == n ? -1 : strcmp(old[i]->addr, addrs[j]);
        if (c == 0) {
            merged[out++] = old[i++];
            j++;
        } else if (c < 0) {
            skv_router_endpoint_t *ep = old[i++];
            (*removed_p)++;
            if (--ep->refs == 0) {
                dead[(*n_dead_p)++] = ep;
            }
        } else {
            skv_status_t s = skv_router_endpoint_new(w, addrs[j++], &merged[out]);
            if (s == SKV_STATUS_OK) {
                out++, (*added_p)++;
            } else {
                st = s;
            }
        }
    }
    skv_free(old);
    w->eps[role] = merged;
    w->n_eps[role] = out;
    return st;
}

skv_status_t skv_router_workers_set(skv_router_workers_t *w, skv_router_role_t role,
                                    const char *const *addrs, size_t n, size_t *added_p,
                                    size_t *removed_p)
{
    const char **sorted = skv_mallocn(n + 1, sizeof(*sorted));
    skv_router_endpoint_t **dead = NULL;
    size_t n_dead = 0, added = 0, removed = 0;
    if (sorted == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    if (n > 0) {
        memcpy(sorted, addrs, n * sizeof(*sorted));
    }
    n = skv_router_addrs_sort_unique(sorted, n);
    pthread_mutex_lock(&w->mu);
    dead = skv_mallocn(w->n_eps[role] + 1, sizeof(*dead));
    skv_status_t st = dead == NULL ? SKV_STATUS_NO_MEMORY
                                   : skv_router_workers_merge(w, role, sorted, n, dead, &n_dead,
                                                              &added, &removed);
    pthread_mutex_unlock(&w->mu);
    for (size_t i = 0; i < n_dead; i++) {
        skv_router_endpoint_free(dead[i]);
    }
    skv_free(dead);
    skv_free(sorted);
    if (added_p != NULL) {
        *added_p = added;
    }
    if (removed_p != NULL) {
        *removed_p = removed;
    }
    return st;
}

/* Returns non-zero when a is a better pick than b (b may be NULL). */
static int skv_router_better(const skv_router_endpoint_t *a, const skv_router_endpoint_t *b)
{
    return b == NULL || a->work < b->work || (a->work == b->work && a->active < b->active);
}

/* Least-work endpoint of role, skipping `exclude` and (when healthy_only) backing-off ones. */
static skv_router_endpoint_t *skv_router_pick(skv_router_workers_t *w, skv_router_role_t role,
                                              const skv_router_endpoint_t *exclude,
                                              int healthy_only, int64_t now)
{
    size_t n = w->n_eps[role];
    skv_router_endpoint_t *best = NULL;
    for (size_t k = 0; k < n; k++) {
        skv_router_endpoint_t *ep = w->eps[role][(k + w->rotation) % n];
        if (ep == exclude || (healthy_only && ep->backoff_until_ns > now)) {
            continue;
        }
        if (skv_router_better(ep, best)) {
            best = ep;
        }
    }
    return best;
}

skv_status_t skv_router_workers_acquire(skv_router_workers_t *w, skv_router_role_t role,
                                        int64_t work, const skv_router_endpoint_t *exclude,
                                        skv_router_endpoint_t **ep_p)
{
    int64_t now = skv_clock_now_ns();
    pthread_mutex_lock(&w->mu);
    skv_router_endpoint_t *ep = skv_router_pick(w, role, exclude, 1, now);
    if (ep == NULL) {
        ep = skv_router_pick(w, role, exclude, 0, now);
    }
    if (ep == NULL) {
        ep = skv_router_pick(w, role, NULL, 0, now);
    }
    if (ep != NULL) {
        ep->work += work;
        ep->active++;
        ep->refs++;
        w->rotation++;
    }
    pthread_mutex_unlock(&w->mu);
    if (ep == NULL) {
        return SKV_STATUS_UNAVAILABLE;
    }
    *ep_p = ep;
    return SKV_STATUS_OK;
}

void skv_router_workers_release(skv_router_workers_t *w, skv_router_endpoint_t *ep, int64_t work)
{
    pthread_mutex_lock(&w->mu);
    ep->work -= work;
    ep->active--;
    int last = --ep->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if (last) {
        skv_router_endpoint_free(ep);
    }
}

void skv_router_workers_backoff(skv_router_workers_t *w, skv_router_endpoint_t *ep)
{
    pthread_mutex_lock(&w->mu);
    ep->backoff_until_ns = skv_clock_now_ns() + w->backoff_ns;
    pthread_mutex_unlock(&w->mu);
    SKV_LOG_WARN("router: worker %s unavailable, skipped for %lld ms", ep->addr,
                 (long long)(w->backoff_ns / 1000000));
}

size_t skv_router_workers_snapshot(skv_router_workers_t *w, skv_router_role_t role,
                                   skv_router_endpoint_t **eps, size_t max)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->n_eps[role] < max ? w->n_eps[role] : max;
    for (size_t i = 0; i < n; i++) {
        eps[i] = w->eps[role][i];
        eps[i]->refs++;
    }
    pthread_mutex_unlock(&w->mu);
    return n;
}

void skv_router_workers_unhold(skv_router_workers_t *w, skv_router_endpoint_t *ep)
{
    pthread_mutex_lock(&w->mu);
    int last = --ep->refs == 0;
    pthread_mutex_unlock(&w->mu);
    if (last) {
        skv_router_endpoint_free(ep);
    }
}

size_t skv_router_workers_count(skv_router_workers_t *w, skv_router_role_t role)
{
    pthread_mutex_lock(&w->mu);
    size_t n = w->n_eps[role];
    pthread_mutex_unlock(&w->mu);
    return n;
}

int64_t skv_router_endpoint_work(skv_router_workers_t *w, const skv_router_endpoint_t *ep)
{
    pthread_mutex_lock(&w->mu);
    int64_t v = ep->work;
    pthread_mutex_unlock(&w->mu);
    return v;
}

int skv_router_endpoint_active(skv_router_workers_t *w, const skv_router_endpoint_t *ep)
{
    pthread_mutex_lock(&w->mu);
    int v = ep->active;
    pthread_mutex_unlock(&w->mu);
    return v;
}

skv_grpc_channel_t *skv_router_endpoint_channel(const skv_router_endpoint_t *ep)
{
    return ep->channel;
}

const char *skv_router_endpoint_addr(const skv_router_endpoint_t *ep)
{
    return ep->addr;
}
