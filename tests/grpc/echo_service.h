/*
 * echo_service.h: the test-only skv.test.Echo service (echo.proto) on top of skv_grpc, plus
 * a fake skv.v1.Generation for the command-line client. Counters let tests observe what the
 * server side saw (backpressure, cancellations, deadlines, propagated child statuses).
 */
#ifndef SKV_TESTS_GRPC_ECHO_SERVICE_H
#define SKV_TESTS_GRPC_ECHO_SERVICE_H

#include <stdint.h>

#include "common/rpc/grpc_client.h"
#include "common/rpc/grpc_server.h"

typedef struct {
    skv_grpc_channel_t *self; /* atomic: channel to this server, for Relay; set after create */
    int busy_seen;            /* atomic: writes answered BUSY (backpressure) */
    int cancel_seen;          /* atomic: cancel callbacks run */
    int producers_live;       /* atomic: producer threads running */
    int64_t last_deadline_ns; /* atomic: deadline seen by the last SlowUnary */
    int relay_child_status;   /* atomic: skv_status_t of the last Relay child, -1 none */
} skv_echo_state_t;

/* Fills methods[] (at most 16) with the Echo service bound to state; returns the count. */
size_t skv_echo_methods(skv_echo_state_t *state, skv_grpc_method_t *methods);

/* Appends the fake Generation service (prompt words streamed back) to methods[]; returns
 * the count added. */
size_t skv_fake_generation_methods(skv_grpc_method_t *methods);

/* Waits until no producer thread is running (up to 10 s). Returns 0 or -1. */
int skv_echo_wait_idle(skv_echo_state_t *state);

#endif
