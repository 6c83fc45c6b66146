/*
 * router_resolve.h: worker addresses from names, re-resolved periodically.
 *
 * Each configured target ("decode.ns.svc:50052", "10.0.0.5:50052", "[::1]:50052") is a DNS
 * name that may resolve to several pods. The resolver runs getaddrinfo on every name at start
 * and then every period_ms on its own thread, turns the answers into sorted "ip:port"
 * endpoints, unions them per role and hands the set to the worker registry, which creates
 * channels for new endpoints and drops vanished ones (after their in-flight requests end).
 * A name that fails to resolve (or resolves to nothing) keeps its previous endpoints: a DNS
 * hiccup never empties the pool. Targets with a gRPC scheme ("unix:", "ipv4:", "ipv6:") are
 * used as one endpoint as given; "dns:///name:port" is resolved here like a bare name.
 */
#ifndef SKV_ROUTER_RESOLVE_H
#define SKV_ROUTER_RESOLVE_H

#include <stddef.h>

#include "base/status.h"
#include "router/router_workers.h"

typedef struct skv_router_resolver skv_router_resolver_t;

/* Resolves one target into *n_p sorted unique endpoint strings (*addrs_p, free with
 * skv_router_addrs_free). Returns OK, INVALID_ARGUMENT (no ":port", empty host), NOT_FOUND
 * (the name does not resolve; logged at debug), NO_MEMORY. Any thread; blocks on DNS. */
skv_status_t skv_router_resolve(const char *target, char ***addrs_p, size_t *n_p);

/* Frees what skv_router_resolve returned. NULL is a no-op. */
void skv_router_addrs_free(char **addrs, size_t n);

/* Creates the resolver over workers (borrowed; must outlive it) with the names per role
 * (copied), resolves every name once (synchronously) and starts the re-resolve thread when
 * period_ms > 0. Returns OK, INVALID_ARGUMENT (a malformed target, logged), NO_MEMORY.
 * Main thread. */
skv_status_t skv_router_resolver_create(skv_router_workers_t *workers,
                                        const char *const *names[SKV_ROUTER_ROLE_COUNT_],
                                        const size_t n_names[SKV_ROUTER_ROLE_COUNT_], int period_ms,
                                        skv_router_resolver_t **resolver_p);

/* Resolves every name once more and updates the registry (what the thread does each period).
 * Any thread, one at a time. */
void skv_router_resolver_tick(skv_router_resolver_t *r);

/* Stops the thread and frees the resolver. NULL is a no-op. */
void skv_router_resolver_destroy(skv_router_resolver_t *r);

#endif /* SKV_ROUTER_RESOLVE_H */
