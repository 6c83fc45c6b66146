/*
 * router_workers.h: the router's registry of worker endpoints and the least-work picker.
 *
 * Owns: one endpoint per (role, "ip:port") with its gRPC channel, its outstanding work (tokens
 * in flight: prompt + max_tokens of each decode request, the prompt of each prefill), its
 * number of active requests and its back-off deadline. Does not own: name resolution (the
 * resolver calls skv_router_workers_set with each new address set).
 * Invariants: an endpoint removed from the set stays alive (channel included) until the last
 * request holding it releases it; all state is under one mutex, never held across a gRPC call.
 * Thread-safe: every function may be called from any thread.
 */
#ifndef SKV_ROUTER_WORKERS_H
#define SKV_ROUTER_WORKERS_H

#include <stddef.h>
#include <stdint.h>

#include "common/rpc/grpc_client.h"
#include "base/status.h"

typedef enum {
    SKV_ROUTER_ROLE_DECODE = 0,
    SKV_ROUTER_ROLE_PREFILL = 1,
    SKV_ROUTER_ROLE_COUNT_
} skv_router_role_t;

typedef struct skv_router_workers skv_router_workers_t;
typedef struct skv_router_endpoint skv_router_endpoint_t;

/* Creates an empty registry. backoff_ms: how long an endpoint that failed UNAVAILABLE is
 * skipped (0 -> 2000). channel_config is copied (NULL: defaults). Returns OK or NO_MEMORY. */
skv_status_t skv_router_workers_create(int backoff_ms,
                                       const skv_grpc_channel_config_t *channel_config,
                                       skv_router_workers_t **workers_p);

/* Frees the registry and every endpoint. Every acquired endpoint must have been released. */
void skv_router_workers_destroy(skv_router_workers_t *w);

/* Makes the endpoint set of `role` equal to addrs (n strings, any order, duplicates allowed):
 * new addresses get an endpoint and a channel, missing ones are dropped (freed once their
 * last holder releases them), kept ones keep their work counts. On *added_p and *removed_p (NULL
 * allowed) the numbers of changes. Returns OK or NO_MEMORY (then the set is partly updated:
 * calling again with the same addrs completes it). */
skv_status_t skv_router_workers_set(skv_router_workers_t *w, skv_router_role_t role,
                                    const char *const *addrs, size_t n, size_t *added_p,
                                    size_t *removed_p);

/* Picks the endpoint of `role` with the least outstanding work among those not backing off
 * (when all back off: among all of them), ties broken by fewer active requests then in
 * rotation, and charges it `work` tokens and one active request. *ep_p is held until
 * skv_router_workers_release. `exclude` (may be NULL) is skipped unless it is the only one.
 * Returns OK or UNAVAILABLE (no endpoint of that role). */
skv_status_t skv_router_workers_acquire(skv_router_workers_t *w, skv_router_role_t role,
                                        int64_t work, const skv_router_endpoint_t *exclude,
                                        skv_router_endpoint_t **ep_p);

/* Returns `work` tokens and the active request charged by acquire and drops the hold. */
void skv_router_workers_release(skv_router_workers_t *w, skv_router_endpoint_t *ep, int64_t work);

/* Marks ep as failing (UNAVAILABLE): pickers skip it for the back-off time. */
void skv_router_workers_backoff(skv_router_workers_t *w, skv_router_endpoint_t *ep);

/* Holds up to max endpoints of role into eps (no work charged) for a Stats sweep; drop each
 * with skv_router_workers_unhold. Returns how many were held. */
size_t skv_router_workers_snapshot(skv_router_workers_t *w, skv_router_role_t role,
                                   skv_router_endpoint_t **eps, size_t max);

/* Drops a hold taken by skv_router_workers_snapshot. */
void skv_router_workers_unhold(skv_router_workers_t *w, skv_router_endpoint_t *ep);

/* Number of endpoints of role in the current set. */
size_t skv_router_workers_count(skv_router_workers_t *w, skv_router_role_t role);

/* Outstanding work and active requests of an endpoint (tests, logs). */
int64_t skv_router_endpoint_work(skv_router_workers_t *w, const skv_router_endpoint_t *ep);
int skv_router_endpoint_active(skv_router_workers_t *w, const skv_router_endpoint_t *ep);

/* The endpoint's channel and "ip:port" address; valid while the endpoint is held. */
skv_grpc_channel_t *skv_router_endpoint_channel(const skv_router_endpoint_t *ep);
const char *skv_router_endpoint_addr(const skv_router_endpoint_t *ep);

/* Diffs two sorted arrays of unique strings: indexes of new[] not in old[] go to added_idx
 * (*n_added_p of them), indexes of old[] not in new[] to removed_idx. Both index arrays need
 * room for n_new and n_old entries. Pure; any thread. */
void skv_router_addrs_diff(const char *const *old, size_t n_old, const char *const *new_addrs,
                           size_t n_new, size_t *added_idx, size_t *n_added_p, size_t *removed_idx,
                           size_t *n_removed_p);

/* Sorts n strings in place (strcmp order) and drops duplicates; returns the new count. */
size_t skv_router_addrs_sort_unique(const char **addrs, size_t n);

#endif /* SKV_ROUTER_WORKERS_H */
