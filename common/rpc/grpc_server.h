/*
 * grpc_server.h: a gRPC server over the C core for protobuf-c services.
 *
 * Owns: the grpc_server, one completion queue and one thread per `n_threads`, every call's
 * state machine, the built-in grpc.health.v1.Health service, graceful drain. Does not own:
 * the handlers' work (engines), which may run on any thread and talk back through the
 * thread-safe call writer API below (skv_grpc_call_write / skv_grpc_call_finish).
 * Invariants: every gRPC C-core call of the process lives in common/grpc_*.c; a call has at
 * most one send batch in flight (the rest wait in a per-call queue: that is the flow-control
 * backpressure), and every batch is started under the call's lock.
 */
#ifndef SKV_COMMON_GRPC_SERVER_H
#define SKV_COMMON_GRPC_SERVER_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "base/status.h"

typedef struct skv_grpc_server skv_grpc_server_t;
typedef struct skv_grpc_call skv_grpc_call_t;

typedef enum {
    SKV_GRPC_METHOD_UNARY = 0,
    SKV_GRPC_METHOD_SERVER_STREAMING,
} skv_grpc_method_kind_t;

/*
 * A handler is called on a server thread with the unpacked, UTF-8-validated request, which
 * the call owns and keeps valid until skv_grpc_call_finish. It should return quickly (queue
 * work elsewhere). The handler, or whoever it hands the call to, must call
 * skv_grpc_call_finish exactly once, from any thread, also when the client cancelled.
 */
typedef void (*skv_grpc_handler_fn)(skv_grpc_call_t *call, const ProtobufCMessage *request,
                                    void *user);

/* Called once, on a server thread, when the client cancels, the deadline passes or the server
 * cancels the call in a drain; never after skv_grpc_call_finish. Must not block. */
typedef void (*skv_grpc_cancel_fn)(skv_grpc_call_t *call, void *user);

typedef struct {
    const char *name; /* "/skv.v1.Generation/Generate" */
    skv_grpc_method_kind_t kind;
    const ProtobufCMessageDescriptor
        *request_desc; /* e.g. &skv__v1__generate_request__descriptor */
    const ProtobufCMessageDescriptor *response_desc;
    skv_grpc_handler_fn handler;
    void *user; /* passed to the handler */
} skv_grpc_method_t;

typedef struct {
    const char *address;              /* "0.0.0.0:50051"; port 0 picks a free port */
    int n_threads;                    /* completion-queue threads; 0 -> 2 */
    int max_recv_message_bytes;       /* 0 -> 4 MiB */
    int max_send_message_bytes;       /* 0 -> 4 MiB */
    int max_queued_messages;          /* per call, before skv_grpc_call_write says BUSY; 0 -> 256 */
    const skv_grpc_method_t *methods; /* copied; names and descriptors must outlive the server */
    size_t n_methods;
} skv_grpc_server_config_t;

typedef enum {
    SKV_GRPC_HEALTH_UNKNOWN = 0, /* numbering of grpc.health.v1.HealthCheckResponse */
    SKV_GRPC_HEALTH_SERVING = 1,
    SKV_GRPC_HEALTH_NOT_SERVING = 2,
} skv_grpc_health_t;

/* ---- server ---- */

/* Creates a server bound to config->address (SO_REUSEPORT off, so a taken port fails), with
 * the methods plus grpc.health.v1.Health/Check and /Watch registered, and starts its threads.
 * Health: "" and each service named in the method table are SERVING from the start.
 * Returns OK, INVALID_ARGUMENT (bad config), UNAVAILABLE (bind failed), NO_MEMORY.
 * Main thread; the caller owns *server_p and releases it with skv_grpc_server_destroy. */
skv_status_t skv_grpc_server_create(const skv_grpc_server_config_t *config,
                                    skv_grpc_server_t **server_p);

/* Returns the bound TCP port (the real one when the address asked for port 0). Any thread. */
int skv_grpc_server_port(const skv_grpc_server_t *server);

/* Sets the health status of `service` ("" is the whole server) and tells every Watch stream.
 * Returns OK or NO_MEMORY. Any thread. */
skv_status_t skv_grpc_server_set_health(skv_grpc_server_t *server, const char *service,
                                        skv_grpc_health_t health);

/* Graceful drain: health NOT_SERVING (Watch streams end), stop accepting calls (new ones fail
 * UNAVAILABLE), let in-flight calls finish for up to `grace_ms`, then cancel the rest (their
 * cancel callbacks run; their owners must still finish them), wait until every call is gone
 * and stop the threads in the order GRPC_C.md documents. Idempotent. Returns OK, or TIMEOUT
 * when calls had to be cancelled. Not from a server thread (it joins them). */
skv_status_t skv_grpc_server_drain(skv_grpc_server_t *server, int64_t grace_ms);

/* Drains with zero grace if not yet drained, then frees everything. NULL is a no-op. */
void skv_grpc_server_destroy(skv_grpc_server_t *server);

/* Installs SIGTERM and SIGINT handlers that only record the signal (async-signal-safe).
 * Call once from main before skv_grpc_server_wait_signal. */
void skv_grpc_signals_install(void);

/* Writes a server's bound port to path ("PORT\n") through a rename, so a reader polling for
 * the file never sees a partial one (tests and scripts listen on port 0 and read it back).
 * Logs and returns IO when it cannot. Any thread. */
skv_status_t skv_grpc_port_file_write(const char *path, int port);

/* Blocks until SIGTERM/SIGINT arrives (see skv_grpc_signals_install), then drains the server
 * with `grace_ms`. Returns what skv_grpc_server_drain returns. Main thread. */
skv_status_t skv_grpc_server_wait_signal(skv_grpc_server_t *server, int64_t grace_ms);

/* ---- call writer: any thread, while the caller owns the call (before finish) ---- */

/* Packs `msg` (must be of the method's response type) and queues it; it is sent when the
 * previous message has been handed to the transport. Does not take ownership of msg.
 * Returns OK; BUSY when max_queued_messages are waiting (backpressure: retry later, nothing
 * was queued); CANCELLED when the client is gone (stop producing, then finish); INVALID_ARGUMENT
 * for a wrong message type or a unary call written twice; NO_MEMORY. */
skv_status_t skv_grpc_call_write(skv_grpc_call_t *call, const ProtobufCMessage *msg);

/* Ends the call: the status goes out after every queued message (status OK -> gRPC OK, else
 * skv_status_grpc_code(status) with `message`, copied; NULL is allowed). After this returns
 * the caller must not touch `call` again. Exactly once per call. Any thread. */
void skv_grpc_call_finish(skv_grpc_call_t *call, skv_status_t status, const char *message);

/* Queues last_msg regardless of max_queued (a final chunk, a unary answer), then finishes as
 * skv_grpc_call_finish does; a failure to queue it (NO_MEMORY, wrong type) turns an OK status
 * into that error. After this returns the caller must not touch `call`. Any thread. */
void skv_grpc_call_finish_msg(skv_grpc_call_t *call, const ProtobufCMessage *last_msg,
                              skv_status_t status, const char *message);

/* Registers the cancel callback (replacing any); if the call is already cancelled it runs at
 * once on this thread. Any thread, before finish. */
void skv_grpc_call_set_cancel(skv_grpc_call_t *call, skv_grpc_cancel_fn fn, void *user);

/* Returns non-zero once the client cancelled, the deadline passed, a write failed or a drain
 * cancelled the call. Any thread, before finish. */
int skv_grpc_call_cancelled(const skv_grpc_call_t *call);

/* Returns the call's deadline on the skv_clock_now_ns() clock, INT64_MAX for none. Any thread. */
int64_t skv_grpc_call_deadline_ns(const skv_grpc_call_t *call);

/* Returns the method name ("/pkg.Service/Method"), static. Any thread, before finish. */
const char *skv_grpc_call_method(const skv_grpc_call_t *call);

/* Returns the number of messages queued and not yet handed to the transport. Any thread. */
int skv_grpc_call_queued(const skv_grpc_call_t *call);

/* Returns the first value of request metadata `key` (lowercase), copied into buf (NUL
 * terminated, truncated to buf_bytes); 0 when present, -1 when absent. Any thread. */
int skv_grpc_call_metadata(const skv_grpc_call_t *call, const char *key, char *buf,
                           size_t buf_bytes);

/* Returns non-zero when the n bytes at s are valid UTF-8 (no overlongs, no surrogates). */
int skv_utf8_valid(const char *s, size_t n);

#endif /* SKV_COMMON_GRPC_SERVER_H */
