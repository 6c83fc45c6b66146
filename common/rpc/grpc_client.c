/*
 * grpc_client.c: unary and server-streaming client calls over C core (see grpc_client.h).
 *
 * Every call owns a pluck completion queue and plucks its own tags, so any number of threads
 * can call at once without sharing a queue (C core allows at most 6 pluckers per queue).
 * Unary: one batch of six ops. Streaming (GRPC_C.md): a start batch (send initial metadata,
 * message, close; receive initial metadata), RECV_STATUS_ON_CLIENT in its own batch, then one
 * RECV_MESSAGE at a time until the buffer is NULL, then the status.
 */
#include <stdio.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <grpc/support/time.h>

#include "base/alloc.h"
#include "common/rpc/grpc_client.h"
#include "common/rpc/grpc_internal.h"
#include "base/log.h"

struct skv_grpc_channel {
    grpc_channel *channel;
    char *target;
};

struct skv_grpc_stream {
    grpc_call *call;
    grpc_completion_queue *cq;
    const ProtobufCMessageDescriptor *desc;
    grpc_metadata_array initial_md;
    grpc_metadata_array trailing_md;
    grpc_status_code code;
    grpc_slice details;
    grpc_byte_buffer *recv;
    int start_pending;
    int status_pending;
    int ended;
    skv_status_t final;
    skv_grpc_error_t final_err;
    char tag_start, tag_status, tag_read; /* addresses used as tags */
};

skv_status_t skv_grpc_code_to_status(int grpc_code)
{
    switch ((grpc_status_code)grpc_code) {
    case GRPC_STATUS_OK:
        return SKV_STATUS_OK;
    case GRPC_STATUS_CANCELLED:
        return SKV_STATUS_CANCELLED;
    case GRPC_STATUS_INVALID_ARGUMENT:
        return SKV_STATUS_INVALID_ARGUMENT;
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        return SKV_STATUS_TIMEOUT;
    case GRPC_STATUS_NOT_FOUND:
        return SKV_STATUS_NOT_FOUND;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        return SKV_STATUS_BUSY;
    case GRPC_STATUS_FAILED_PRECONDITION:
        return SKV_STATUS_MISMATCH;
    case GRPC_STATUS_OUT_OF_RANGE:
        return SKV_STATUS_OUT_OF_RANGE;
    case GRPC_STATUS_UNIMPLEMENTED:
        return SKV_STATUS_UNSUPPORTED;
    case GRPC_STATUS_UNAVAILABLE:
        return SKV_STATUS_UNAVAILABLE;
    case GRPC_STATUS_DATA_LOSS:
        return SKV_STATUS_TRANSPORT;
    default:
        return SKV_STATUS_INTERNAL;
    }
}

skv_status_t skv_grpc_channel_create(const char *target, const skv_grpc_channel_config_t *config,
                                     skv_grpc_channel_t **channel_p)
{
    if (target == NULL || target[0] == '\0') {
        SKV_LOG_ERROR("grpc: empty channel target");
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    skv_grpc_channel_config_t defaults = {0};
    const skv_grpc_channel_config_t *c = config != NULL ? config : &defaults;
    skv_grpc_channel_t *ch = skv_calloc(1, sizeof(*ch));
    char *copy = skv_strdup(target);
    if (ch == NULL || copy == NULL) {
        skv_free(ch);
        skv_free(copy);
        return SKV_STATUS_NO_MEMORY;
    }
    grpc_init();
    grpc_arg args[4];
    size_t n = 0;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[n++].value.integer =
        c->max_recv_message_bytes > 0 ? c->max_recv_message_bytes : 4 * 1024 * 1024;
    args[n].type = GRPC_ARG_INTEGER;
    args[n].key = GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS;
    args[n++].value.integer = c->dns_min_resolution_ms > 0 ? c->dns_min_resolution_ms : 1000;
    if (c->round_robin) {
        args[n].type = GRPC_ARG_STRING;
        args[n].key = GRPC_ARG_SERVICE_CONFIG;
        args[n++].value.string = "{\"loadBalancingConfig\":[{\"round_robin\":{}}]}";
    }
    if (c->keepalive_ms > 0) {
        args[n].type = GRPC_ARG_INTEGER;
        args[n].key = GRPC_ARG_KEEPALIVE_TIME_MS;
        args[n++].value.integer = c->keepalive_ms;
    }
    grpc_channel_args channel_args = {n, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    ch->channel = grpc_channel_create(target, creds, &channel_args);
    grpc_channel_credentials_release(creds);
    ch->target = copy;
    *channel_p = ch;
    return SKV_STATUS_OK;
}

void skv_grpc_channel_destroy(skv_grpc_channel_t *channel)
{
    if (channel == NULL) {
        return;
    }
    grpc_channel_destroy(channel->channel);
    skv_free(channel->target);
    skv_free(channel);
    grpc_shutdown();
}

const char *skv_grpc_channel_target(const skv_grpc_channel_t *channel)
{
    return channel->target;
}

/* Creates the C-core call with the options' deadline and parent. */
static grpc_call *skv_grpc_client_call(skv_grpc_channel_t *ch, const char *method,
                                       const skv_grpc_call_opts_t *opts, grpc_completion_queue *cq)
{
    gpr_timespec deadline = gpr_inf_future(GPR_CLOCK_MONOTONIC);
    if (opts != NULL && opts->timeout_ms > 0) {
        deadline = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                gpr_time_from_millis(opts->timeout_ms, GPR_TIMESPAN));
    }
    grpc_call *parent =
        opts != NULL && opts->parent != NULL ? skv_grpc_call_raw(opts->parent) : NULL;
    uint32_t mask = parent != NULL ? (GRPC_PROPAGATE_DEADLINE | GRPC_PROPAGATE_CANCELLATION)
                                   : GRPC_PROPAGATE_DEFAULTS;
    grpc_slice m = grpc_slice_from_copied_string(method);
    grpc_call *call =
        grpc_channel_create_call(ch->channel, parent, mask, cq, m, NULL, deadline, NULL);
    grpc_slice_unref(m);
    return call;
}

/* Fills err and returns the mapped status of a finished call. */
static skv_status_t skv_grpc_final(grpc_status_code code, grpc_slice details, skv_grpc_error_t *err)
{
    if (err != NULL) {
        err->grpc_code = (int)code;
        size_t n = GRPC_SLICE_LENGTH(details);
        n = n < sizeof(err->message) - 1 ? n : sizeof(err->message) - 1;
        memcpy(err->message, GRPC_SLICE_START_PTR(details), n);
        err->message[n] = '\0';
    }
    return skv_grpc_code_to_status((int)code);
}

static void skv_grpc_set_err(skv_grpc_error_t *err, int code, const char *message)
{
    if (err != NULL) {
        err->grpc_code = code;
        snprintf(err->message, sizeof(err->message), "%s", message);
    }
}

/* Fills ops[0..3] (zeroed by the caller) with the four ops that open every call: send the
 * initial metadata (wait-for-ready as opts asks), the request and the half-close, and
 * receive the server's initial metadata into initial_md. */
static void skv_grpc_client_start_ops(grpc_op *ops, grpc_byte_buffer *req,
                                      const skv_grpc_call_opts_t *opts,
                                      grpc_metadata_array *initial_md)
{
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].flags = opts != NULL && opts->wait_for_ready ? GRPC_INITIAL_METADATA_WAIT_FOR_READY : 0;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = initial_md;
}

/* Runs one unary call with the request already in a byte buffer (borrowed). */
static skv_status_t skv_grpc_unary_bb(skv_grpc_channel_t *ch, const char *method,
                                      grpc_byte_buffer *req,
                                      const ProtobufCMessageDescriptor *response_desc,
                                      const skv_grpc_call_opts_t *opts,
                                      ProtobufCMessage **response_p, skv_grpc_error_t *err)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_call *call = skv_grpc_client_call(ch, method, opts, cq);
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_byte_buffer *resp = NULL;
    grpc_status_code code = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    skv_grpc_client_start_ops(ops, req, opts, &initial_md);
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &code;
    ops[5].data.recv_status_on_client.status_details = &details;
    char tag;
    skv_status_t status;
    grpc_call_error e = grpc_call_start_batch(call, ops, 6, &tag, NULL);
    if (e != GRPC_CALL_OK) {
        SKV_LOG_ERROR("grpc: %s: start_batch = %d", method, (int)e);
        skv_grpc_set_err(err, GRPC_STATUS_INTERNAL, "start_batch failed");
        status = SKV_STATUS_INTERNAL;
        goto cleanup;
    }
    grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    status = skv_grpc_final(code, details, err);
    if (status == SKV_STATUS_OK) {
        char why[256];
        status = skv_grpc_unpack(resp, response_desc, response_p, why, sizeof(why));
        if (status != SKV_STATUS_OK) {
            SKV_LOG_ERROR("grpc: %s: bad response: %s", method, why);
            skv_grpc_set_err(err, GRPC_STATUS_INTERNAL, why);
        }
    }
cleanup:
    if (resp != NULL) {
        grpc_byte_buffer_destroy(resp);
    }
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    return status;
}

skv_status_t skv_grpc_unary(skv_grpc_channel_t *channel, const char *method,
                            const ProtobufCMessage *request,
                            const ProtobufCMessageDescriptor *response_desc,
                            const skv_grpc_call_opts_t *opts, ProtobufCMessage **response_p,
                            skv_grpc_error_t *err)
{
    grpc_byte_buffer *bb = NULL;
    SKV_CHECK(skv_grpc_pack(request, &bb));
    skv_status_t status =
        skv_grpc_unary_bb(channel, method, bb, response_desc, opts, response_p, err);
    grpc_byte_buffer_destroy(bb);
    return status;
}

skv_status_t skv_grpc_unary_bytes(skv_grpc_channel_t *channel, const char *method,
                                  const void *request, size_t request_bytes,
                                  const ProtobufCMessageDescriptor *response_desc,
                                  const skv_grpc_call_opts_t *opts, ProtobufCMessage **response_p,
                                  skv_grpc_error_t *err)
{
    grpc_slice slice = grpc_slice_from_copied_buffer(request, request_bytes);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    skv_status_t status =
        skv_grpc_unary_bb(channel, method, bb, response_desc, opts, response_p, err);
    grpc_byte_buffer_destroy(bb);
    return status;
}

/* Starts the stream's first two batches. Returns 0 or -1. */
static int skv_grpc_stream_start(skv_grpc_stream_t *s, grpc_byte_buffer *req,
                                 const skv_grpc_call_opts_t *opts)
{
    grpc_op ops[4];
    memset(ops, 0, sizeof(ops));
    skv_grpc_client_start_ops(ops, req, opts, &s->initial_md);
    if (grpc_call_start_batch(s->call, ops, 4, &s->tag_start, NULL) != GRPC_CALL_OK) {
        return -1;
    }
    s->start_pending = 1;
    grpc_op st;
    memset(&st, 0, sizeof(st));
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &s->trailing_md;
    st.data.recv_status_on_client.status = &s->code;
    st.data.recv_status_on_client.status_details = &s->details;
    if (grpc_call_start_batch(s->call, &st, 1, &s->tag_status, NULL) != GRPC_CALL_OK) {
        return -1;
    }
    s->status_pending = 1;
    return 0;
}

skv_status_t skv_grpc_stream_open(skv_grpc_channel_t *channel, const char *method,
                                  const ProtobufCMessage *request,
                                  const ProtobufCMessageDescriptor *response_desc,
                                  const skv_grpc_call_opts_t *opts, skv_grpc_stream_t **stream_p)
{
    grpc_byte_buffer *bb = NULL;
    SKV_CHECK(skv_grpc_pack(request, &bb));
    skv_grpc_stream_t *s = skv_calloc(1, sizeof(*s));
    if (s == NULL) {
        grpc_byte_buffer_destroy(bb);
        return SKV_STATUS_NO_MEMORY;
    }
    s->desc = response_desc;
    s->details = grpc_empty_slice();
    grpc_metadata_array_init(&s->initial_md);
    grpc_metadata_array_init(&s->trailing_md);
    s->cq = grpc_completion_queue_create_for_pluck(NULL);
    s->call = skv_grpc_client_call(channel, method, opts, s->cq);
    int rc = skv_grpc_stream_start(s, bb, opts);
    grpc_byte_buffer_destroy(bb); /* C core holds its own reference while sending */
    if (rc != 0) {
        SKV_LOG_ERROR("grpc: %s: cannot start the stream", method);
        skv_grpc_stream_destroy(s);
        return SKV_STATUS_INTERNAL;
    }
    *stream_p = s;
    return SKV_STATUS_OK;
}

/* Plucks the start and status tags (the call is over) and records the final status. */
static void skv_grpc_stream_end(skv_grpc_stream_t *s)
{
    if (s->start_pending) {
        grpc_completion_queue_pluck(s->cq, &s->tag_start, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        s->start_pending = 0;
    }
    if (s->status_pending) {
        grpc_completion_queue_pluck(s->cq, &s->tag_status, gpr_inf_future(GPR_CLOCK_REALTIME),
                                    NULL);
        s->status_pending = 0;
    }
    if (!s->ended) {
        s->final = skv_grpc_final(s->code, s->details, &s->final_err);
        s->ended = 1;
    }
}

skv_status_t skv_grpc_stream_read(skv_grpc_stream_t *s, ProtobufCMessage **msg_p,
                                  skv_grpc_error_t *err)
{
    *msg_p = NULL;
    if (!s->ended) {
        grpc_op op;
        memset(&op, 0, sizeof(op));
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &s->recv;
        if (grpc_call_start_batch(s->call, &op, 1, &s->tag_read, NULL) == GRPC_CALL_OK) {
            grpc_completion_queue_pluck(s->cq, &s->tag_read, gpr_inf_future(GPR_CLOCK_REALTIME),
                                        NULL);
        }
        if (s->recv != NULL) {
            char why[256];
            skv_status_t st = skv_grpc_unpack(s->recv, s->desc, msg_p, why, sizeof(why));
            grpc_byte_buffer_destroy(s->recv);
            s->recv = NULL;
            if (st == SKV_STATUS_OK) {
                return SKV_STATUS_OK;
            }
            SKV_LOG_ERROR("grpc: bad stream message: %s", why);
            grpc_call_cancel(s->call, NULL);
            skv_grpc_stream_end(s);
            s->final = st;
            skv_grpc_set_err(&s->final_err, GRPC_STATUS_INTERNAL, why);
        }
        skv_grpc_stream_end(s);
    }
    if (err != NULL) {
        *err = s->final_err;
    }
    return s->final;
}

void skv_grpc_stream_cancel(skv_grpc_stream_t *s)
{
    grpc_call_cancel(s->call, NULL);
}

void skv_grpc_stream_destroy(skv_grpc_stream_t *s)
{
    if (s == NULL) {
        return;
    }
    if (!s->ended && s->call != NULL) {
        grpc_call_cancel(s->call, NULL);
    }
    if (s->call != NULL) {
        skv_grpc_stream_end(s);
        grpc_call_unref(s->call);
    }
    grpc_slice_unref(s->details);
    grpc_metadata_array_destroy(&s->initial_md);
    grpc_metadata_array_destroy(&s->trailing_md);
    grpc_completion_queue_shutdown(s->cq);
    grpc_completion_queue_destroy(s->cq);
    skv_free(s);
}
