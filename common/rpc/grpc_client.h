/*
 * grpc_client.h: gRPC client calls over C core for protobuf-c messages.
 *
 * A channel per target ("host:port", "dns:///decode:50052" re-resolved by C core's DNS
 * resolver, "ipv4:...", "unix:..."), shared by any number of threads. Unary calls block the
 * calling thread; server-streaming calls are read message by message. Each call has its own
 * completion queue, so calls on different threads never contend. A call made while serving
 * another (router -> worker) can name that server call as parent: its deadline and its
 * cancellation then flow on to the child (GRPC_PROPAGATE_DEADLINE | _CANCELLATION).
 */
#ifndef SKV_COMMON_GRPC_CLIENT_H
#define SKV_COMMON_GRPC_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "common/rpc/grpc_server.h"
#include "base/status.h"

typedef struct skv_grpc_channel skv_grpc_channel_t;
typedef struct skv_grpc_stream skv_grpc_stream_t;

typedef struct {
    int max_recv_message_bytes; /* 0 -> 4 MiB */
    int dns_min_resolution_ms;  /* 0 -> 1000: how soon a dns:/// target may be re-resolved */
    int round_robin;            /* non-zero: spread calls over all resolved addresses */
    int keepalive_ms;           /* 0 -> off */
} skv_grpc_channel_config_t;

/* Per-call options; a zeroed struct (or NULL) means no deadline, no parent. */
typedef struct {
    int64_t timeout_ms;      /* 0 -> no deadline of its own */
    skv_grpc_call_t *parent; /* a server call being served: propagate deadline + cancel */
    int wait_for_ready;      /* non-zero: wait for the channel instead of failing fast */
} skv_grpc_call_opts_t;

/* What the server said when a call did not end OK. */
typedef struct {
    int grpc_code;     /* grpc_status_code */
    char message[256]; /* status details, truncated */
} skv_grpc_error_t;

/* Creates a channel to `target` (connection is lazy). config may be NULL. Returns OK,
 * INVALID_ARGUMENT (empty target) or NO_MEMORY. The caller owns *channel_p. Any thread. */
skv_status_t skv_grpc_channel_create(const char *target, const skv_grpc_channel_config_t *config,
                                     skv_grpc_channel_t **channel_p);

/* Destroys the channel; every call and stream on it must be finished. NULL is a no-op. */
void skv_grpc_channel_destroy(skv_grpc_channel_t *channel);

/* Returns the target the channel was created for. */
const char *skv_grpc_channel_target(const skv_grpc_channel_t *channel);

/* Maps a gRPC status code back to a status (UNIMPLEMENTED -> UNSUPPORTED, DEADLINE_EXCEEDED
 * -> TIMEOUT, RESOURCE_EXHAUSTED -> BUSY, ...). Any thread. */
skv_status_t skv_grpc_code_to_status(int grpc_code);

/* Calls unary `method` ("/pkg.Service/Method") with `request`, blocking until the answer.
 * On OK, *response_p is a `response_desc` message the caller frees with
 * protobuf_c_message_free_unpacked(msg, NULL). Otherwise returns the mapped status (TIMEOUT,
 * UNAVAILABLE, INVALID_ARGUMENT, UNSUPPORTED, CANCELLED, ...) and fills err when not NULL.
 * Any thread. */
skv_status_t skv_grpc_unary(skv_grpc_channel_t *channel, const char *method,
                            const ProtobufCMessage *request,
                            const ProtobufCMessageDescriptor *response_desc,
                            const skv_grpc_call_opts_t *opts, ProtobufCMessage **response_p,
                            skv_grpc_error_t *err);

/* As skv_grpc_unary with the request already serialized (tests send malformed bytes). */
skv_status_t skv_grpc_unary_bytes(skv_grpc_channel_t *channel, const char *method,
                                  const void *request, size_t request_bytes,
                                  const ProtobufCMessageDescriptor *response_desc,
                                  const skv_grpc_call_opts_t *opts, ProtobufCMessage **response_p,
                                  skv_grpc_error_t *err);

/* Starts a server-streaming call. Returns OK (the stream is open; errors surface in
 * skv_grpc_stream_read) or NO_MEMORY/INTERNAL. The caller owns *stream_p. Any thread. */
skv_status_t skv_grpc_stream_open(skv_grpc_channel_t *channel, const char *method,
                                  const ProtobufCMessage *request,
                                  const ProtobufCMessageDescriptor *response_desc,
                                  const skv_grpc_call_opts_t *opts, skv_grpc_stream_t **stream_p);

/* Blocks for the next message. Returns OK with *msg_p set (caller frees it with
 * protobuf_c_message_free_unpacked), OK with *msg_p == NULL at a clean end of stream, or the
 * call's final status (err filled) when it ended otherwise; INVALID_ARGUMENT also when the
 * server sent an undecodable message (the stream is then cancelled). After the end, further
 * reads return the same result. One reader thread at a time. */
skv_status_t skv_grpc_stream_read(skv_grpc_stream_t *stream, ProtobufCMessage **msg_p,
                                  skv_grpc_error_t *err);

/* Cancels the stream; a blocked reader returns CANCELLED. Any thread, any time before
 * destroy. */
void skv_grpc_stream_cancel(skv_grpc_stream_t *stream);

/* Cancels the stream if it has not ended, waits for its completions and frees it. The reader
 * must have returned. NULL is a no-op. */
void skv_grpc_stream_destroy(skv_grpc_stream_t *stream);

#endif /* SKV_COMMON_GRPC_CLIENT_H */
