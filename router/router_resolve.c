/*
 * router_resolve.c: getaddrinfo-based endpoint discovery (see router_resolve.h).
 *
 * State per name: the endpoints of its last successful resolution. A tick resolves every name
 * (without the mutex: getaddrinfo blocks), then unions the per-name sets of each role and
 * hands the union to the registry. The thread sleeps on a condition variable so destroy wakes
 * it at once.
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "base/alloc.h"
#include "base/log.h"
#include "router/router_resolve.h"

typedef struct {
    char *name;   /* as configured */
    char **addrs; /* last successful resolution */
    size_t n_addrs;
} skv_router_name_t;

struct skv_router_resolver {
    skv_router_workers_t *workers;
    skv_router_name_t *names[SKV_ROUTER_ROLE_COUNT_];
    size_t n_names[SKV_ROUTER_ROLE_COUNT_];
    int period_ms;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int stop;
};

void skv_router_addrs_free(char **addrs, size_t n)
{
    for (size_t i = 0; addrs != NULL && i < n; i++) {
        skv_free(addrs[i]);
    }
    skv_free(addrs);
}

/* Returns non-zero for targets C core resolves itself and we pass through. */
static int skv_router_is_passthrough(const char *target)
{
    return strncmp(target, "unix:", 5) == 0 || strncmp(target, "ipv4:", 5) == 0 ||
           strncmp(target, "ipv6:", 5) == 0;
}

/* Splits "host:port" / "[v6]:port" into host and port buffers. */
static skv_status_t skv_router_split_hostport(const char *target, char *host, size_t host_bytes,
                                              char *port, size_t port_bytes)
{
    const char *colon = strrchr(target, ':');
    const char *h = target, *h_end = colon;
    if (colon == NULL || colon[1] == '\0' || strlen(colon + 1) >= port_bytes) {
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    if (target[0] == '[') {
        h = target + 1;
        h_end = strchr(target, ']');
        if (h_end == NULL || h_end + 1 != colon) {
            return SKV_STATUS_INVALID_ARGUMENT;
        }
    }
    size_t n = (size_t)(h_end - h);
    if (n == 0 || n >= host_bytes) {
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    memcpy(host, h, n);
    host[n] = '\0';
    snprintf(port, port_bytes, "%s", colon + 1);
    return SKV_STATUS_OK;
}

/* Formats one getaddrinfo answer as "ip:port" / "[ip6]:port" into a new string. */
static char *skv_router_format_addr(const struct addrinfo *ai, const char *port)
{
    char ip[INET6_ADDRSTRLEN], out[INET6_ADDRSTRLEN + 32];
    if (ai->ai_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)ai->ai_addr)->sin_addr, ip, sizeof(ip));
        snprintf(out, sizeof(out), "%s:%s", ip, port);
    } else if (ai->ai_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, ip, sizeof(ip));
        snprintf(out, sizeof(out), "[%s]:%s", ip, port);
    } else {
        return NULL;
    }
    return skv_strdup(out);
}

static int skv_router_cmp_addr(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Collects the answers of getaddrinfo into a sorted unique array. */
static skv_status_t skv_router_collect(const struct addrinfo *res, const char *port,
                                       char ***addrs_p, size_t *n_p)
{
    size_t n = 0, cap = 0;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        cap++;
    }
    char **addrs = skv_calloc(cap + 1, sizeof(*addrs));
    if (addrs == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6) {
            if ((addrs[n] = skv_router_format_addr(ai, port)) == NULL) {
                skv_router_addrs_free(addrs, n);
                return SKV_STATUS_NO_MEMORY;
            }
            n++;
        }
    }
    qsort(addrs, n, sizeof(*addrs), skv_router_cmp_addr);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) { /* drop duplicates (one per socket type/protocol) */
        if (kept > 0 && strcmp(addrs[i], addrs[kept - 1]) == 0) {
            skv_free(addrs[i]);
        } else {
            addrs[kept++] = addrs[i];
        }
    }
    *addrs_p = addrs;
    *n_p = kept;
    return SKV_STATUS_OK;
}

skv_status_t skv_router_resolve(const char *target, char ***addrs_p, size_t *n_p)
{
    char host[256], port[16];
    if (skv_router_is_passthrough(target)) {
        char **addrs = skv_calloc(1, sizeof(*addrs));
        if (addrs == NULL || (addrs[0] = skv_strdup(target)) == NULL) {
            skv_free(addrs);
            return SKV_STATUS_NO_MEMORY;
        }
        *addrs_p = addrs;
        *n_p = 1;
        return SKV_STATUS_OK;
    }
    if (strncmp(target, "dns:///", 7) == 0) {
        target += 7;
    }
    SKV_CHECK(skv_router_split_hostport(target, host, sizeof(host), port, sizeof(port)));
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        SKV_LOG_DEBUG("router: resolving %s: %s", target, gai_strerror(rc));
        return SKV_STATUS_NOT_FOUND;
    }
    skv_status_t st = skv_router_collect(res, port, addrs_p, n_p);
    freeaddrinfo(res);
    return st;
}

/* Re-resolves one name; keeps its previous endpoints when resolution fails or is empty. */
static void skv_router_name_refresh(skv_router_name_t *nm)
{
    char **addrs = NULL;
    size_t n = 0;
    skv_status_t st = skv_router_resolve(nm->name, &addrs, &n);
    if (st != SKV_STATUS_OK || n == 0) {
        if (nm->n_addrs > 0) {
            SKV_LOG_DEBUG("router: %s did not resolve (%s); keeping %zu endpoints", nm->name,
                          skv_status_str(st), nm->n_addrs);
        }
        skv_router_addrs_free(addrs, n);
        return;
    }
    skv_router_addrs_free(nm->addrs, nm->n_addrs);
    nm->addrs = addrs;
    nm->n_addrs = n;
}

/* Hands the union of the role's per-name endpoints to the registry. */
static void skv_router_apply_role(skv_router_resolver_t *r, skv_router_role_t role)
{
    size_t total = 0, k = 0, added = 0, removed = 0;
    for (size_t i = 0; i < r->n_names[role]; i++) {
        total += r->names[role][i].n_addrs;
    }
    const char **all = skv_mallocn(total + 1, sizeof(*all));
    if (all == NULL) {
        SKV_LOG_ERROR("router: no memory for %zu endpoints", total);
        return;
    }
    for (size_t i = 0; i < r->n_names[role]; i++) {
        for (size_t j = 0; j < r->names[role][i].n_addrs; j++) {
            all[k++] = r->names[role][i].addrs[j];
        }
    }
    skv_status_t st = skv_router_workers_set(r->workers, role, all, total, &added, &removed);
    if (st != SKV_STATUS_OK) {
        SKV_LOG_ERROR("router: updating %s endpoints: %s",
                      role == SKV_ROUTER_ROLE_DECODE ? "decode" : "prefill", skv_status_str(st));
    }
    if (added + removed > 0) {
        SKV_LOG_INFO("router: %s endpoints: +%zu -%zu, now %zu",
                     role == SKV_ROUTER_ROLE_DECODE ? "decode" : "prefill", added, removed,
                     skv_router_workers_count(r->workers, role));
    }
    skv_free(all);
}

void skv_router_resolver_tick(skv_router_resolver_t *r)
{
    for (int role = 0; role < SKV_ROUTER_ROLE_COUNT_; role++) {
        for (size_t i = 0; i < r->n_names[role]; i++) {
            skv_router_name_refresh(&r->names[role][i]);
        }
        skv_router_apply_role(r, (skv_router_role_t)role);
    }
}

static void *skv_router_resolver_main(void *arg)
{
    skv_router_resolver_t *r = arg;
    pthread_mutex_lock(&r->mu);
    while (!r->stop) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += r->period_ms / 1000;
        ts.tv_nsec += (long)(r->period_ms % 1000) * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++, ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&r->cv, &r->mu, &ts);
        if (r->stop) {
            break;
        }
        pthread_mutex_unlock(&r->mu);
        skv_router_resolver_tick(r);
        pthread_mutex_lock(&r->mu);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

/* Copies and checks the configured names of one role. */
static skv_status_t skv_router_names_init(skv_router_resolver_t *r, skv_router_role_t role,
                                          const char *const *names, size_t n)
{
    r->names[role] = skv_calloc(n + 1, sizeof(*r->names[role]));
    if (r->names[role] == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < n; i++, r->n_names[role]++) {
        char host[256], port[16];
        const char *t = strncmp(names[i], "dns:///", 7) == 0 ? names[i] + 7 : names[i];
        if (!skv_router_is_passthrough(t) &&
            skv_router_split_hostport(t, host, sizeof(host), port, sizeof(port)) != SKV_STATUS_OK) {
            SKV_LOG_ERROR("router: worker address '%s' is not HOST:PORT", names[i]);
            return SKV_STATUS_INVALID_ARGUMENT;
        }
        if ((r->names[role][i].name = skv_strdup(names[i])) == NULL) {
            return SKV_STATUS_NO_MEMORY;
        }
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_router_resolver_create(skv_router_workers_t *workers,
                                        const char *const *names[SKV_ROUTER_ROLE_COUNT_],
                                        const size_t n_names[SKV_ROUTER_ROLE_COUNT_], int period_ms,
                                        skv_router_resolver_t **resolver_p)
{
    skv_router_resolver_t *r = skv_calloc(1, sizeof(*r));
    if (r == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    r->workers = workers;
    r->period_ms = period_ms;
    pthread_mutex_init(&r->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&r->cv, &ca);
    pthread_condattr_destroy(&ca);
    skv_status_t st = SKV_STATUS_OK;
    for (int role = 0; role < SKV_ROUTER_ROLE_COUNT_ && st == SKV_STATUS_OK; role++) {
        st = skv_router_names_init(r, (skv_router_role_t)role, names[role], n_names[role]);
    }
    if (st != SKV_STATUS_OK) {
        skv_router_resolver_destroy(r);
        return st;
    }
    skv_router_resolver_tick(r);
    if (period_ms > 0 && pthread_create(&r->thread, NULL, skv_router_resolver_main, r) == 0) {
        r->thread_started = 1;
    }
    *resolver_p = r;
    return SKV_STATUS_OK;
}

void skv_router_resolver_destroy(skv_router_resolver_t *r)
{
    if (r == NULL) {
        return;
    }
    if (r->thread_started) {
        pthread_mutex_lock(&r->mu);
        r->stop = 1;
        pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->mu);
        pthread_join(r->thread, NULL);
    }
    for (int role = 0; role < SKV_ROUTER_ROLE_COUNT_; role++) {
        for (size_t i = 0; i < r->n_names[role]; i++) {
            skv_free(r->names[role][i].name);
            skv_router_addrs_free(r->names[role][i].addrs, r->names[role][i].n_addrs);
        }
        skv_free(r->names[role]);
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    skv_free(r);
}
