/*
 * test_grpc_server.c: the gRPC server and client helpers in one process over loopback, with
 * the test-only Echo service: unary, streaming with backpressure, 64 concurrent streams,
 * client cancellation, deadlines and their propagation to child calls, unknown methods,
 * malformed and non-UTF-8 payloads, health Check/Watch over the real protocol, drain with an
 * in-flight stream finishing, drain whose grace expires, a taken port.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/clock.h"
#include "common/rpc/grpc_client.h"
#include "common/rpc/grpc_server.h"
#include "echo.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "tests/grpc/echo_service.h"

typedef struct {
    skv_echo_state_t echo;
    skv_grpc_server_t *server;
    skv_grpc_channel_t *channel;
} fixture_t;

static int fixture_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    skv_grpc_method_t methods[16];
    skv_grpc_server_config_t config = {.address = "127.0.0.1:0",
                                       .n_threads = 4,
                                       .max_queued_messages = 8,
                                       .methods = methods,
                                       .n_methods = skv_echo_methods(&f->echo, methods)};
    if (skv_grpc_server_create(&config, &f->server) != SKV_STATUS_OK) {
        return -1;
    }
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", skv_grpc_server_port(f->server));
    skv_grpc_channel_t *self = NULL;
    if (skv_grpc_channel_create(target, NULL, &f->channel) != SKV_STATUS_OK ||
        skv_grpc_channel_create(target, NULL, &self) != SKV_STATUS_OK) {
        return -1;
    }
    /* Published atomically: the Relay thread gets to it through C core, which TSan cannot see. */
    __atomic_store_n(&f->echo.self, self, __ATOMIC_RELEASE);
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    fixture_t *f = *state;
    skv_grpc_channel_destroy(f->channel);
    skv_grpc_server_destroy(f->server);
    assert_int_equal(skv_echo_wait_idle(&f->echo), 0);
    skv_grpc_channel_destroy(f->echo.self);
    free(f);
    return 0;
}

/* Polls an int until it reaches `want` (5 s). */
static int wait_int(const int *p, int want)
{
    for (int i = 0; i < 5000; i++) {
        if (__atomic_load_n(p, __ATOMIC_SEQ_CST) >= want) {
            return 1;
        }
        usleep(1000);
    }
    return 0;
}

static skv_status_t echo_unary_call(skv_grpc_channel_t *ch, const char *method, const char *text,
                                    int64_t timeout_ms, skv_grpc_error_t *err, char *out,
                                    size_t out_bytes)
{
    Skv__Test__EchoRequest req = SKV__TEST__ECHO_REQUEST__INIT;
    req.text = (char *)text;
    skv_grpc_call_opts_t opts = {.timeout_ms = timeout_ms};
    ProtobufCMessage *resp = NULL;
    skv_status_t st = skv_grpc_unary(ch, method, &req.base, &skv__test__echo_reply__descriptor,
                                     &opts, &resp, err);
    if (st == SKV_STATUS_OK) {
        snprintf(out, out_bytes, "%s", ((Skv__Test__EchoReply *)resp)->text);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
    return st;
}

static void test_unary(void **state)
{
    fixture_t *f = *state;
    char out[64];
    skv_grpc_error_t err;
    assert_int_equal(
        echo_unary_call(f->channel, "/skv.test.Echo/Unary", "hello", 5000, &err, out, sizeof(out)),
        SKV_STATUS_OK);
    assert_string_equal(out, "hello");
}

/* Reads a whole Echo stream, checking order; returns the number of replies (or -1). */
static int read_echo_stream(skv_grpc_stream_t *s, uint32_t payload_bytes, int slow_first,
                            skv_status_t *final)
{
    int n = 0;
    ProtobufCMessage *msg;
    skv_status_t st;
    while ((st = skv_grpc_stream_read(s, &msg, NULL)) == SKV_STATUS_OK && msg != NULL) {
        Skv__Test__EchoReply *r = (Skv__Test__EchoReply *)msg;
        int ok = r->index == (uint32_t)n && r->payload.len == payload_bytes;
        protobuf_c_message_free_unpacked(msg, NULL);
        if (!ok) {
            return -1;
        }
        if (n < slow_first) {
            usleep(2000);
        }
        n++;
    }
    *final = st;
    return n;
}

static skv_grpc_stream_t *open_echo_stream(fixture_t *f, const char *method, uint32_t count,
                                           uint32_t payload_bytes, uint32_t delay_ms,
                                           int64_t timeout_ms)
{
    Skv__Test__EchoRequest req = SKV__TEST__ECHO_REQUEST__INIT;
    req.text = "s";
    req.count = count;
    req.payload_bytes = payload_bytes;
    req.delay_ms = delay_ms;
    skv_grpc_call_opts_t opts = {.timeout_ms = timeout_ms};
    skv_grpc_stream_t *s = NULL;
    assert_int_equal(skv_grpc_stream_open(f->channel, method, &req.base,
                                          &skv__test__echo_reply__descriptor, &opts, &s),
                     SKV_STATUS_OK);
    return s;
}

static void test_stream_backpressure(void **state)
{
    fixture_t *f = *state;
    /* 2000 x 16 KiB with a slow reader at first: HTTP/2 windows fill, sends stop completing,
     * the per-call queue (8) fills and the producer sees BUSY. */
    skv_grpc_stream_t *s = open_echo_stream(f, "/skv.test.Echo/Stream", 2000, 16384, 0, 60000);
    skv_status_t final;
    assert_int_equal(read_echo_stream(s, 16384, 100, &final), 2000);
    assert_int_equal(final, SKV_STATUS_OK);
    skv_grpc_stream_destroy(s);
    assert_true(__atomic_load_n(&f->echo.busy_seen, __ATOMIC_SEQ_CST) > 0);
}

#define N_CONCURRENT 64

static void *concurrent_reader(void *arg)
{
    fixture_t *f = arg;
    skv_grpc_stream_t *s = open_echo_stream(f, "/skv.test.Echo/Stream", 100, 512, 0, 60000);
    skv_status_t final = SKV_STATUS_INTERNAL;
    intptr_t n = read_echo_stream(s, 512, 0, &final);
    skv_grpc_stream_destroy(s);
    return (void *)(final == SKV_STATUS_OK ? n : -1);
}

static void test_concurrent_streams(void **state)
{
    fixture_t *f = *state;
    pthread_t t[N_CONCURRENT];
    for (int i = 0; i < N_CONCURRENT; i++) {
        assert_int_equal(pthread_create(&t[i], NULL, concurrent_reader, f), 0);
    }
    for (int i = 0; i < N_CONCURRENT; i++) {
        void *n;
        pthread_join(t[i], &n);
        assert_int_equal((intptr_t)n, 100);
    }
}

static void test_client_cancel_seen_by_server(void **state)
{
    fixture_t *f = *state;
    int before = __atomic_load_n(&f->echo.cancel_seen, __ATOMIC_SEQ_CST);
    skv_grpc_stream_t *s = open_echo_stream(f, "/skv.test.Echo/Hang", 0, 0, 0, 0);
    ProtobufCMessage *msg = NULL;
    assert_int_equal(skv_grpc_stream_read(s, &msg, NULL), SKV_STATUS_OK);
    assert_non_null(msg);
    protobuf_c_message_free_unpacked(msg, NULL);
    skv_grpc_stream_cancel(s);
    assert_int_equal(skv_grpc_stream_read(s, &msg, NULL), SKV_STATUS_CANCELLED);
    assert_null(msg);
    skv_grpc_stream_destroy(s);
    assert_true(wait_int(&f->echo.cancel_seen, before + 1));
}

static void test_deadline_exceeded(void **state)
{
    fixture_t *f = *state;
    int before = __atomic_load_n(&f->echo.cancel_seen, __ATOMIC_SEQ_CST);
    int64_t t0 = skv_clock_now_ns();
    char out[64];
    skv_grpc_error_t err;
    assert_int_equal(
        echo_unary_call(f->channel, "/skv.test.Echo/SlowUnary", "x", 200, &err, out, sizeof(out)),
        SKV_STATUS_TIMEOUT);
    assert_int_equal(err.grpc_code, 4); /* DEADLINE_EXCEEDED */
    int64_t seen = __atomic_load_n(&f->echo.last_deadline_ns, __ATOMIC_SEQ_CST);
    /* The handler saw the client's deadline: about 200 ms after t0 on our clock. */
    assert_true(seen > t0 + 100 * 1000000LL && seen < t0 + 1000 * 1000000LL);
    assert_true(wait_int(&f->echo.cancel_seen, before + 1));
}

static void test_deadline_propagates_to_child(void **state)
{
    fixture_t *f = *state;
    /* Relay calls Hang with the incoming call as parent and no deadline of its own: the
     * client's 300 ms deadline ends the child too. */
    skv_grpc_stream_t *s = open_echo_stream(f, "/skv.test.Echo/Relay", 0, 0, 0, 300);
    skv_status_t final;
    ProtobufCMessage *msg;
    while ((final = skv_grpc_stream_read(s, &msg, NULL)) == SKV_STATUS_OK && msg != NULL) {
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    assert_int_equal(final, SKV_STATUS_TIMEOUT);
    skv_grpc_stream_destroy(s);
    assert_true(wait_int(&f->echo.relay_child_status, 0));
    int child = __atomic_load_n(&f->echo.relay_child_status, __ATOMIC_SEQ_CST);
    assert_true(child == SKV_STATUS_TIMEOUT || child == SKV_STATUS_CANCELLED);
}

static void test_cancel_propagates_to_child(void **state)
{
    fixture_t *f = *state;
    int before = __atomic_load_n(&f->echo.cancel_seen, __ATOMIC_SEQ_CST);
    __atomic_store_n(&f->echo.relay_child_status, -1, __ATOMIC_SEQ_CST);
    skv_grpc_stream_t *s = open_echo_stream(f, "/skv.test.Echo/Relay", 0, 0, 0, 0);
    ProtobufCMessage *msg = NULL;
    assert_int_equal(skv_grpc_stream_read(s, &msg, NULL), SKV_STATUS_OK); /* relayed "hanging" */
    assert_non_null(msg);
    protobuf_c_message_free_unpacked(msg, NULL);
    skv_grpc_stream_cancel(s);
    skv_grpc_stream_destroy(s);
    assert_true(wait_int(&f->echo.relay_child_status, 0));
    assert_int_equal(__atomic_load_n(&f->echo.relay_child_status, __ATOMIC_SEQ_CST),
                     SKV_STATUS_CANCELLED);
    assert_true(wait_int(&f->echo.cancel_seen, before + 1)); /* the child's server side saw it */
}

static void test_unknown_method(void **state)
{
    fixture_t *f = *state;
    char out[64];
    skv_grpc_error_t err;
    assert_int_equal(
        echo_unary_call(f->channel, "/skv.test.Echo/Nope", "x", 5000, &err, out, sizeof(out)),
        SKV_STATUS_UNSUPPORTED);
    assert_int_equal(err.grpc_code, 12); /* UNIMPLEMENTED, at once rather than at the deadline */
    assert_int_equal(
        echo_unary_call(f->channel, "/no.Such/Service", "x", 5000, &err, out, sizeof(out)),
        SKV_STATUS_UNSUPPORTED);
}

static void test_malformed_payload(void **state)
{
    fixture_t *f = *state;
    skv_grpc_error_t err;
    ProtobufCMessage *resp = NULL;
    /* field 1 (string) claims 5 bytes, 1 follows */
    static const uint8_t truncated[] = {0x0a, 0x05, 'a'};
    assert_int_equal(skv_grpc_unary_bytes(f->channel, "/skv.test.Echo/Unary", truncated,
                                          sizeof(truncated), &skv__test__echo_reply__descriptor,
                                          NULL, &resp, &err),
                     SKV_STATUS_INVALID_ARGUMENT);
    assert_int_equal(err.grpc_code, 3);
    assert_non_null(strstr(err.message, "malformed"));
    /* a string field that is not UTF-8 */
    static const uint8_t bad_utf8[] = {0x0a, 0x02, 0xc3, 0x28};
    assert_int_equal(skv_grpc_unary_bytes(f->channel, "/skv.test.Echo/Unary", bad_utf8,
                                          sizeof(bad_utf8), &skv__test__echo_reply__descriptor,
                                          NULL, &resp, &err),
                     SKV_STATUS_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "UTF-8"));
    char out[64];
    assert_int_equal(echo_unary_call(f->channel, "/skv.test.Echo/Unary", "still up", 5000, &err,
                                     out, sizeof(out)),
                     SKV_STATUS_OK);
}

static void test_utf8_validator(void **state)
{
    assert_true(skv_utf8_valid("", 0));
    assert_true(skv_utf8_valid("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80", 15));
    assert_false(skv_utf8_valid("\xc0\xaf", 2));         /* overlong '/' */
    assert_false(skv_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
    assert_false(skv_utf8_valid("\xf4\x90\x80\x80", 4)); /* > U+10FFFF */
    assert_false(skv_utf8_valid("\xe2\x82", 2));         /* truncated */
}

static int health_check(fixture_t *f, const char *service, skv_status_t *st_p)
{
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)service;
    ProtobufCMessage *resp = NULL;
    skv_grpc_call_opts_t opts = {.timeout_ms = 5000};
    *st_p =
        skv_grpc_unary(f->channel, "/grpc.health.v1.Health/Check", &req.base,
                       &grpc__health__v1__health_check_response__descriptor, &opts, &resp, NULL);
    if (*st_p != SKV_STATUS_OK) {
        return -1;
    }
    int status = ((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    protobuf_c_message_free_unpacked(resp, NULL);
    return status;
}

static int watch_next(skv_grpc_stream_t *s)
{
    ProtobufCMessage *msg = NULL;
    if (skv_grpc_stream_read(s, &msg, NULL) != SKV_STATUS_OK || msg == NULL) {
        return -1;
    }
    int status = ((Grpc__Health__V1__HealthCheckResponse *)msg)->status;
    protobuf_c_message_free_unpacked(msg, NULL);
    return status;
}

static void test_health(void **state)
{
    fixture_t *f = *state;
    skv_status_t st;
    assert_int_equal(health_check(f, "", &st), SKV_GRPC_HEALTH_SERVING);
    assert_int_equal(health_check(f, "skv.test.Echo", &st), SKV_GRPC_HEALTH_SERVING);
    assert_int_equal(health_check(f, "no.Such", &st), -1);
    assert_int_equal(st, SKV_STATUS_NOT_FOUND);

    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = "skv.test.Echo";
    skv_grpc_stream_t *w = NULL;
    assert_int_equal(skv_grpc_stream_open(f->channel, "/grpc.health.v1.Health/Watch", &req.base,
                                          &grpc__health__v1__health_check_response__descriptor,
                                          NULL, &w),
                     SKV_STATUS_OK);
    assert_int_equal(watch_next(w), SKV_GRPC_HEALTH_SERVING);
    assert_int_equal(
        skv_grpc_server_set_health(f->server, "skv.test.Echo", SKV_GRPC_HEALTH_NOT_SERVING),
        SKV_STATUS_OK);
    assert_int_equal(watch_next(w), SKV_GRPC_HEALTH_NOT_SERVING);
    assert_int_equal(health_check(f, "skv.test.Echo", &st), SKV_GRPC_HEALTH_NOT_SERVING);
    assert_int_equal(
        skv_grpc_server_set_health(f->server, "skv.test.Echo", SKV_GRPC_HEALTH_SERVING),
        SKV_STATUS_OK);
    assert_int_equal(watch_next(w), SKV_GRPC_HEALTH_SERVING);
    skv_grpc_stream_cancel(w);
    skv_grpc_stream_destroy(w);
}

typedef struct {
    skv_grpc_stream_t *s;
    int n;
    skv_status_t final;
} reader_t;

static void *drain_reader(void *arg)
{
    reader_t *r = arg;
    r->n = read_echo_stream(r->s, 8, 0, &r->final);
    return NULL;
}

static void test_drain_lets_inflight_finish(void **state)
{
    fixture_t *f = *state;
    /* 20 replies 25 ms apart (~0.5 s) started before the drain must all arrive, OK. */
    reader_t r = {open_echo_stream(f, "/skv.test.Echo/Stream", 20, 8, 25, 30000), 0,
                  SKV_STATUS_INTERNAL};
    Grpc__Health__V1__HealthCheckRequest hreq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    skv_grpc_stream_t *w = NULL;
    assert_int_equal(skv_grpc_stream_open(f->channel, "/grpc.health.v1.Health/Watch", &hreq.base,
                                          &grpc__health__v1__health_check_response__descriptor,
                                          NULL, &w),
                     SKV_STATUS_OK);
    assert_int_equal(watch_next(w), SKV_GRPC_HEALTH_SERVING);
    pthread_t t;
    pthread_create(&t, NULL, drain_reader, &r);
    usleep(100 * 1000);
    assert_int_equal(skv_grpc_server_drain(f->server, 10000), SKV_STATUS_OK);
    pthread_join(t, NULL);
    assert_int_equal(r.n, 20);
    assert_int_equal(r.final, SKV_STATUS_OK);
    skv_grpc_stream_destroy(r.s);
    /* the Watch stream was told NOT_SERVING and ended cleanly */
    assert_int_equal(watch_next(w), SKV_GRPC_HEALTH_NOT_SERVING);
    ProtobufCMessage *msg = NULL;
    assert_int_equal(skv_grpc_stream_read(w, &msg, NULL), SKV_STATUS_OK);
    assert_null(msg);
    skv_grpc_stream_destroy(w);
    /* nobody listens any more */
    char out[64];
    skv_grpc_error_t err;
    assert_int_equal(
        echo_unary_call(f->channel, "/skv.test.Echo/Unary", "x", 2000, &err, out, sizeof(out)),
        SKV_STATUS_UNAVAILABLE);
}

static void test_drain_grace_expires(void **state)
{
    fixture_t *f = *state;
    int before = __atomic_load_n(&f->echo.cancel_seen, __ATOMIC_SEQ_CST);
    skv_grpc_stream_t *s = open_echo_stream(f, "/skv.test.Echo/Hang", 0, 0, 0, 0);
    ProtobufCMessage *msg = NULL;
    assert_int_equal(skv_grpc_stream_read(s, &msg, NULL), SKV_STATUS_OK);
    protobuf_c_message_free_unpacked(msg, NULL);
    int64_t t0 = skv_clock_now_ns();
    assert_int_equal(skv_grpc_server_drain(f->server, 200), SKV_STATUS_TIMEOUT);
    assert_true(skv_clock_now_ns() - t0 < 5000 * 1000000LL);
    assert_true(__atomic_load_n(&f->echo.cancel_seen, __ATOMIC_SEQ_CST) >= before + 1);
    skv_status_t st = skv_grpc_stream_read(s, &msg, NULL);
    assert_true(st == SKV_STATUS_CANCELLED || st == SKV_STATUS_UNAVAILABLE);
    skv_grpc_stream_destroy(s);
}

static void test_port_taken(void **state)
{
    fixture_t *f = *state;
    char address[64];
    snprintf(address, sizeof(address), "127.0.0.1:%d", skv_grpc_server_port(f->server));
    skv_grpc_server_config_t config = {.address = address, .n_threads = 1};
    skv_grpc_server_t *second = NULL;
    assert_int_equal(skv_grpc_server_create(&config, &second), SKV_STATUS_UNAVAILABLE);
    assert_null(second);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_utf8_validator),
        cmocka_unit_test_setup_teardown(test_unary, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_stream_backpressure, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_streams, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_client_cancel_seen_by_server, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_exceeded, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_deadline_propagates_to_child, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_cancel_propagates_to_child, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_method, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_malformed_payload, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_health, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_drain_lets_inflight_finish, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_drain_grace_expires, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_port_taken, fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
