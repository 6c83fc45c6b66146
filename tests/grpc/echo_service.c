/*
 * echo_service.c: skv.test.Echo and a fake skv.v1.Generation over skv_grpc (test only).
 *
 * Stream and Relay run on detached producer threads, the way an engine thread writes tokens;
 * Hang and SlowUnary are finished by their cancel callbacks. Every handler finishes its call
 * exactly once. The fake Generation streams the prompt's words back, one token per word.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "echo.pb-c.h"
#include "skv/v1/generate.pb-c.h"
#include "tests/grpc/echo_service.h"

typedef struct {
    skv_echo_state_t *state;
    skv_grpc_call_t *call;
    const Skv__Test__EchoRequest *req;
} skv_echo_job_t;

#define ATOMIC_INC(p) __atomic_add_fetch((p), 1, __ATOMIC_SEQ_CST)
#define ATOMIC_DEC(p) __atomic_sub_fetch((p), 1, __ATOMIC_SEQ_CST)

static void echo_unary(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    const Skv__Test__EchoRequest *req = (const Skv__Test__EchoRequest *)request;
    Skv__Test__EchoReply reply = SKV__TEST__ECHO_REPLY__INIT;
    reply.text = req->text;
    skv_grpc_call_finish_msg(call, &reply.base, SKV_STATUS_OK, NULL);
}

/* Writes `count` replies with BUSY retried (backpressure), then finishes. */
static void *echo_stream_main(void *arg)
{
    skv_echo_job_t *job = arg;
    const Skv__Test__EchoRequest *req = job->req;
    uint8_t *payload = skv_calloc(req->payload_bytes + 1, 1);
    skv_status_t st = SKV_STATUS_OK;
    for (uint32_t i = 0; i < req->count && st == SKV_STATUS_OK; i++) {
        Skv__Test__EchoReply reply = SKV__TEST__ECHO_REPLY__INIT;
        reply.text = req->text;
        reply.index = i;
        reply.payload.data = payload;
        reply.payload.len = req->payload_bytes;
        while ((st = skv_grpc_call_write(job->call, &reply.base)) == SKV_STATUS_BUSY) {
            ATOMIC_INC(&job->state->busy_seen);
            usleep(200);
        }
        if (req->delay_ms > 0) {
            usleep(req->delay_ms * 1000);
        }
    }
    skv_free(payload);
    skv_grpc_call_finish(job->call, st, st == SKV_STATUS_OK ? NULL : "stream stopped");
    ATOMIC_DEC(&job->state->producers_live);
    skv_free(job);
    return NULL;
}

/* Starts fn on a detached thread for the call; finishes the call on failure. */
static void echo_spawn(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user,
                       void *(*fn)(void *))
{
    skv_echo_job_t *job = skv_malloc(sizeof(*job));
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (job == NULL) {
        skv_grpc_call_finish(call, SKV_STATUS_NO_MEMORY, "no memory");
        pthread_attr_destroy(&attr);
        return;
    }
    *job = (skv_echo_job_t){user, call, (const Skv__Test__EchoRequest *)request};
    ATOMIC_INC(&job->state->producers_live);
    if (pthread_create(&t, &attr, fn, job) != 0) {
        ATOMIC_DEC(&job->state->producers_live);
        skv_free(job);
        skv_grpc_call_finish(call, SKV_STATUS_NO_MEMORY, "no thread");
    }
    pthread_attr_destroy(&attr);
}

static void echo_stream(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    echo_spawn(call, request, user, echo_stream_main);
}

static void echo_cancelled(skv_grpc_call_t *call, void *user)
{
    skv_echo_state_t *state = user;
    ATOMIC_INC(&state->cancel_seen);
    skv_grpc_call_finish(call, SKV_STATUS_CANCELLED, "cancelled");
}

static void echo_hang(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    Skv__Test__EchoReply reply = SKV__TEST__ECHO_REPLY__INIT;
    reply.text = "hanging";
    (void)skv_grpc_call_write(call, &reply.base);
    skv_grpc_call_set_cancel(call, echo_cancelled, user); /* the callback finishes the call */
}

static void echo_slow_unary(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    skv_echo_state_t *state = user;
    __atomic_store_n(&state->last_deadline_ns, skv_grpc_call_deadline_ns(call), __ATOMIC_SEQ_CST);
    skv_grpc_call_set_cancel(call, echo_cancelled, user);
}

/* Relay: a child Hang call with this call as parent; its replies are forwarded until it ends
 * (by propagated deadline or cancellation). */
static void *echo_relay_main(void *arg)
{
    skv_echo_job_t *job = arg;
    skv_grpc_call_opts_t opts = {.parent = job->call};
    skv_grpc_stream_t *child = NULL;
    skv_grpc_channel_t *self = __atomic_load_n(&job->state->self, __ATOMIC_ACQUIRE);
    skv_status_t st = skv_grpc_stream_open(self, "/skv.test.Echo/Hang", &job->req->base,
                                           &skv__test__echo_reply__descriptor, &opts, &child);
    ProtobufCMessage *msg = NULL;
    while (st == SKV_STATUS_OK && (st = skv_grpc_stream_read(child, &msg, NULL)) == SKV_STATUS_OK &&
           msg) {
        (void)skv_grpc_call_write(job->call, msg);
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    skv_grpc_stream_destroy(child);
    __atomic_store_n(&job->state->relay_child_status, (int)st, __ATOMIC_SEQ_CST);
    skv_grpc_call_finish(job->call, st, "relay child ended");
    ATOMIC_DEC(&job->state->producers_live);
    skv_free(job);
    return NULL;
}

static void echo_relay(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    echo_spawn(call, request, user, echo_relay_main);
}

size_t skv_echo_methods(skv_echo_state_t *state, skv_grpc_method_t *m)
{
    const ProtobufCMessageDescriptor *rq = &skv__test__echo_request__descriptor;
    const ProtobufCMessageDescriptor *rp = &skv__test__echo_reply__descriptor;
    state->relay_child_status = -1;
    m[0] = (skv_grpc_method_t){
        "/skv.test.Echo/Unary", SKV_GRPC_METHOD_UNARY, rq, rp, echo_unary, state};
    m[1] = (skv_grpc_method_t){
        "/skv.test.Echo/Stream", SKV_GRPC_METHOD_SERVER_STREAMING, rq, rp, echo_stream, state};
    m[2] = (skv_grpc_method_t){
        "/skv.test.Echo/Hang", SKV_GRPC_METHOD_SERVER_STREAMING, rq, rp, echo_hang, state};
    m[3] = (skv_grpc_method_t){
        "/skv.test.Echo/SlowUnary", SKV_GRPC_METHOD_UNARY, rq, rp, echo_slow_unary, state};
    m[4] = (skv_grpc_method_t){
        "/skv.test.Echo/Relay", SKV_GRPC_METHOD_SERVER_STREAMING, rq, rp, echo_relay, state};
    return 5;
}

int skv_echo_wait_idle(skv_echo_state_t *state)
{
    for (int i = 0; i < 10000; i++) {
        if (__atomic_load_n(&state->producers_live, __ATOMIC_SEQ_CST) == 0) {
            usleep(1000); /* let the last producer return from its final call */
            return 0;
        }
        usleep(1000);
    }
    return -1;
}

/* ---- fake Generation ---- */

/* Streams each space-separated word of the text prompt as one token, then a final chunk. */
static void fake_generate(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    const Skv__V1__GenerateRequest *req = (const Skv__V1__GenerateRequest *)request;
    if (req->input_case != SKV__V1__GENERATE_REQUEST__INPUT_TEXT) {
        skv_grpc_call_finish(call, SKV_STATUS_UNSUPPORTED, "fake generation takes text only");
        return;
    }
    uint32_t max =
        req->stop != NULL && req->stop->max_tokens > 0 ? req->stop->max_tokens : UINT32_MAX;
    char *copy = skv_strdup(req->text);
    char *save = NULL;
    uint32_t n = 0;
    for (char *w = strtok_r(copy, " ", &save); w != NULL && n < max;
         w = strtok_r(NULL, " ", &save)) {
        Skv__V1__GenerateChunk chunk = SKV__V1__GENERATE_CHUNK__INIT;
        char text[256];
        int32_t id = (int32_t)n;
        snprintf(text, sizeof(text), "%s%s", n > 0 ? " " : "", w);
        chunk.request_id = req->request_id;
        chunk.n_token_ids = 1;
        chunk.token_ids = &id;
        chunk.text = text;
        (void)skv_grpc_call_write(call, &chunk.base);
        n++;
    }
    skv_free(copy);
    Skv__V1__GenerateChunk last = SKV__V1__GENERATE_CHUNK__INIT;
    Skv__V1__Usage usage = SKV__V1__USAGE__INIT;
    usage.completion_tokens = n;
    last.usage = &usage;
    last.finish_reason = n >= max ? SKV__V1__FINISH_REASON__FINISH_REASON_LENGTH
                                  : SKV__V1__FINISH_REASON__FINISH_REASON_STOP;
    skv_grpc_call_finish_msg(call, &last.base, SKV_STATUS_OK, NULL);
}

/* Tokenize: one id per byte. */
static void fake_tokenize(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    const Skv__V1__TokenizeRequest *req = (const Skv__V1__TokenizeRequest *)request;
    const char *text = req->input_case == SKV__V1__TOKENIZE_REQUEST__INPUT_TEXT ? req->text : "";
    size_t n = strlen(text);
    int32_t *ids = skv_mallocn(n + 1, sizeof(*ids));
    for (size_t i = 0; i < n; i++) {
        ids[i] = (unsigned char)text[i];
    }
    Skv__V1__TokenizeResponse resp = SKV__V1__TOKENIZE_RESPONSE__INIT;
    resp.n_ids = n;
    resp.ids = ids;
    skv_status_t st = skv_grpc_call_write(call, &resp.base);
    skv_free(ids);
    skv_grpc_call_finish(call, st, NULL);
}

static void fake_model_info(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    Skv__V1__ModelInfoResponse resp = SKV__V1__MODEL_INFO_RESPONSE__INIT;
    resp.name = "fake-echo";
    resp.architecture = "swiftkv-llama";
    resp.context_length = 4096;
    resp.vocab_size = 256;
    resp.n_layers = 4;
    resp.swiftkv_lk = 2;
    skv_grpc_call_finish(call, skv_grpc_call_write(call, &resp.base), NULL);
}

static void fake_stats(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user)
{
    Skv__V1__StatsResponse resp = SKV__V1__STATS_RESPONSE__INIT;
    resp.role = "fake";
    resp.kv_blocks_total = 64;
    resp.kv_blocks_free = 64;
    skv_grpc_call_finish(call, skv_grpc_call_write(call, &resp.base), NULL);
}

size_t skv_fake_generation_methods(skv_grpc_method_t *m)
{
    m[0] = (skv_grpc_method_t){"/skv.v1.Generation/Generate",
                               SKV_GRPC_METHOD_SERVER_STREAMING,
                               &skv__v1__generate_request__descriptor,
                               &skv__v1__generate_chunk__descriptor,
                               fake_generate,
                               NULL};
    m[1] = (skv_grpc_method_t){"/skv.v1.Generation/Tokenize",
                               SKV_GRPC_METHOD_UNARY,
                               &skv__v1__tokenize_request__descriptor,
                               &skv__v1__tokenize_response__descriptor,
                               fake_tokenize,
                               NULL};
    m[2] = (skv_grpc_method_t){"/skv.v1.Generation/ModelInfo",
                               SKV_GRPC_METHOD_UNARY,
                               &skv__v1__model_info_request__descriptor,
                               &skv__v1__model_info_response__descriptor,
                               fake_model_info,
                               NULL};
    m[3] = (skv_grpc_method_t){"/skv.v1.Generation/Stats",
                               SKV_GRPC_METHOD_UNARY,
                               &skv__v1__stats_request__descriptor,
                               &skv__v1__stats_response__descriptor,
                               fake_stats,
                               NULL};
    return 4;
}
