/*
 * grpc_server.c: the gRPC server over C core (see grpc_server.h for the contract).
 *
 * Threads: n workers, each blocked in grpc_completion_queue_next on its own queue; every
 * call is bound to the queue it arrived on. A call is a refcounted context: one reference
 * per outstanding tag (request, RECV_CLOSE_ON_SERVER, the one send batch) and one for the
 * application from the handler until skv_grpc_call_finish. Sends go through a per-call queue
 * drained one SEND_MESSAGE at a time (flow control); batches start under the call lock from
 * whichever thread (worker or compute) makes progress possible. Shutdown follows GRPC_C.md:
 * stop re-posting, shutdown_and_notify, grace, cancel_all, wait for the notify tag and for
 * every call context to be freed, then shut down and drain the queues, destroy, grpc_shutdown.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "common/rpc/grpc_internal.h"
#include "base/log.h"
#include "grpc/health/v1/health.pb-c.h"

#define SKV_GRPC_DEFAULT_MSG_BYTES (4 * 1024 * 1024)
#define SKV_GRPC_DEFAULT_QUEUED    256

typedef enum {
    SKV_GRPC_TAG_REQUEST = 0,
    SKV_GRPC_TAG_SEND,
    SKV_GRPC_TAG_CLOSE,
    SKV_GRPC_TAG_SHUTDOWN,
} skv_grpc_tag_kind_t;

typedef struct {
    skv_grpc_tag_kind_t kind;
    skv_grpc_call_t *call; /* NULL for the shutdown tag */
} skv_grpc_tag_t;

typedef struct skv_grpc_msg {
    struct skv_grpc_msg *next;
    grpc_byte_buffer *bb;
} skv_grpc_msg_t;

typedef struct {
    skv_grpc_method_t m;
    void *registered; /* grpc_server_register_method handle */
} skv_grpc_method_entry_t;

typedef struct {
    skv_grpc_server_t *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    int started;
} skv_grpc_worker_t;

struct skv_grpc_server {
    grpc_server *server;
    skv_grpc_worker_t *workers;
    int n_workers;
    skv_grpc_method_entry_t *methods;
    size_t n_methods;
    int port;
    int max_queued;
    skv_grpc_health_registry_t *health;
    skv_grpc_tag_t shutdown_tag;
    pthread_mutex_t mu; /* guards the fields below */
    pthread_cond_t cv;
    int n_calls;   /* call contexts alive, pending requests included */
    int n_active;  /* calls that arrived and are not freed yet */
    int accepting; /* 0 once a drain started: requests are not re-posted */
    int shutdown_notified;
    int drained;
    skv_status_t drain_status;
};

struct skv_grpc_call {
    pthread_mutex_t mu; /* guards the state below and every grpc_call_start_batch */
    int refs;           /* atomic */
    skv_grpc_server_t *server;
    skv_grpc_worker_t *worker;
    const skv_grpc_method_entry_t *method; /* NULL: the generic (unknown method) request */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_call_details details;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    ProtobufCMessage *request;
    int64_t deadline_ns;
    skv_grpc_tag_t tag_request, tag_send, tag_close;
    int close_cancelled; /* written by C core on RECV_CLOSE_ON_SERVER */
    skv_grpc_msg_t *q_head, *q_tail;
    int n_queued;
    int n_written;
    grpc_byte_buffer *sending;
    int initial_md_sent, send_in_flight, finish_requested, status_sent;
    int app_owned, cancelled, cancel_fired, active;
    grpc_status_code status_code;
    grpc_slice status_details;
    int has_status_details;
    skv_grpc_cancel_fn cancel_fn;
    void *cancel_user;
};

/* ---- packing ---- */

skv_status_t skv_grpc_pack(const ProtobufCMessage *msg, grpc_byte_buffer **bb_p)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    grpc_slice slice = grpc_slice_malloc(n);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(slice));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    if (bb == NULL) {
        SKV_LOG_ERROR("grpc: byte buffer of %zu bytes", n);
        return SKV_STATUS_NO_MEMORY;
    }
    *bb_p = bb;
    return SKV_STATUS_OK;
}

int skv_utf8_valid(const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t len = c < 0x80           ? 1
                     : (c >> 5) == 0x6  ? 2
                     : (c >> 4) == 0xe  ? 3
                     : (c >> 3) == 0x1e ? 4
                                        : 0;
        if (len == 0 || i + len > n) {
            return 0;
        }
        uint32_t cp = len == 1 ? c : len == 2 ? (c & 0x1f) : len == 3 ? (c & 0x0f) : (c & 0x07);
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xc0) != 0x80) {
                return 0;
            }
            cp = (cp << 6) | (p[i + k] & 0x3f);
        }
        /* Overlong forms, UTF-16 surrogates and values past U+10FFFF are invalid. */
        static const uint32_t min_cp[5] = {0, 0, 0x80, 0x800, 0x10000};
        if (cp < min_cp[len] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
            return 0;
        }
        i += len;
    }
    return 1;
}

/* Returns the name of the first string field of m (recursively) that is not UTF-8, or NULL. */
static const char *skv_grpc_bad_string(const ProtobufCMessage *m)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE) {
            continue;
        }
        const char *base = (const char *)m + f->offset;
        size_t n = 1;
        void *const *items = (void *const *)base;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            n = *(const size_t *)((const char *)m + f->quantifier_offset);
            items = *(void *const *const *)base;
        } else if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)((const char *)m + f->quantifier_offset) != f->id) {
                continue;
            }
        }
        for (size_t k = 0; k < n; k++) {
            if (items[k] == NULL) {
                continue;
            }
            if (f->type == PROTOBUF_C_TYPE_STRING) {
                const char *s = items[k];
                if (!skv_utf8_valid(s, strlen(s))) {
                    return f->name;
                }
            } else {
                const char *bad = skv_grpc_bad_string(items[k]);
                if (bad != NULL) {
                    return bad;
                }
            }
        }
    }
    return NULL;
}

skv_status_t skv_grpc_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                             ProtobufCMessage **msg_p, char *why, size_t why_bytes)
{
    grpc_byte_buffer_reader reader;
    if (bb == NULL || !grpc_byte_buffer_reader_init(&reader, bb)) {
        snprintf(why, why_bytes, "missing %s message", desc->name);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    grpc_slice all = grpc_byte_buffer_reader_readall(&reader);
    grpc_byte_buffer_reader_destroy(&reader);
    ProtobufCMessage *msg =
        protobuf_c_message_unpack(desc, NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
    size_t n = GRPC_SLICE_LENGTH(all);
    grpc_slice_unref(all);
    if (msg == NULL) {
        snprintf(why, why_bytes, "malformed %s (%zu bytes)", desc->name, n);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    const char *bad = skv_grpc_bad_string(msg);
    if (bad != NULL) {
        snprintf(why, why_bytes, "%s: field %s is not valid UTF-8", desc->name, bad);
        protobuf_c_message_free_unpacked(msg, NULL);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    *msg_p = msg;
    return SKV_STATUS_OK;
}

/* ---- call lifetime ---- */

static int64_t skv_grpc_deadline_to_ns(gpr_timespec d)
{
    if (gpr_time_cmp(d, gpr_inf_future(d.clock_type)) == 0 || d.tv_sec > INT64_MAX / 4000000000LL) {
        return INT64_MAX;
    }
    gpr_timespec rem = gpr_time_sub(d, gpr_now(d.clock_type));
    return skv_clock_now_ns() + rem.tv_sec * 1000000000LL + rem.tv_nsec;
}

static void skv_grpc_call_ref(skv_grpc_call_t *call)
{
    __atomic_add_fetch(&call->refs, 1, __ATOMIC_RELAXED);
}

static void skv_grpc_queue_clear(skv_grpc_call_t *call)
{
    while (call->q_head != NULL) {
        skv_grpc_msg_t *m = call->q_head;
        call->q_head = m->next;
        grpc_byte_buffer_destroy(m->bb);
        skv_free(m);
    }
    call->q_tail = NULL;
    call->n_queued = 0;
}

/* Frees a call context and tells the server one fewer is alive. */
static void skv_grpc_call_free(skv_grpc_call_t *call)
{
    skv_grpc_server_t *server = call->server;
    if (call->call != NULL) {
        grpc_call_unref(call->call);
    }
    if (call->request != NULL) {
        protobuf_c_message_free_unpacked(call->request, NULL);
    }
    if (call->payload != NULL) {
        grpc_byte_buffer_destroy(call->payload);
    }
    if (call->sending != NULL) {
        grpc_byte_buffer_destroy(call->sending);
    }
    if (call->has_status_details) {
        grpc_slice_unref(call->status_details);
    }
    skv_grpc_queue_clear(call);
    grpc_metadata_array_destroy(&call->md);
    grpc_call_details_destroy(&call->details);
    pthread_mutex_destroy(&call->mu);
    int active = call->active;
    skv_free(call);
    pthread_mutex_lock(&server->mu);
    server->n_calls--;
    server->n_active -= active;
    pthread_cond_broadcast(&server->cv);
    pthread_mutex_unlock(&server->mu);
}

static void skv_grpc_call_unref(skv_grpc_call_t *call)
{
    if (__atomic_sub_fetch(&call->refs, 1, __ATOMIC_ACQ_REL) == 0) {
        skv_grpc_call_free(call);
    }
}

/* Starts a batch under the (held) call lock with a reference for its tag. A refused batch is
 * our bug; the call is cancelled so that it still ends. */
static int skv_grpc_call_start_locked(skv_grpc_call_t *call, const grpc_op *ops, size_t n_ops,
                                      skv_grpc_tag_t *tag)
{
    skv_grpc_call_ref(call);
    grpc_call_error err = grpc_call_start_batch(call->call, ops, n_ops, tag, NULL);
    if (err != GRPC_CALL_OK) {
        SKV_LOG_ERROR("grpc: start_batch(%s, %zu ops) = %d", skv_grpc_call_method(call), n_ops,
                      (int)err);
        __atomic_sub_fetch(&call->refs, 1, __ATOMIC_RELAXED); /* caller still holds one */
        grpc_call_cancel(call->call, NULL);
        return -1;
    }
    return 0;
}

/* Sends what can be sent now: the next queued message (with the status when it is the last
 * and the call is finishing), or the status alone. One send batch at a time. Locked. */
static void skv_grpc_call_pump_locked(skv_grpc_call_t *call)
{
    if (call->send_in_flight || call->status_sent) {
        return;
    }
    if (call->cancelled) {
        skv_grpc_queue_clear(call); /* the client is gone: nothing more will be sent */
        return;
    }
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (!call->initial_md_sent && (call->q_head != NULL || call->finish_requested)) {
        ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
        call->initial_md_sent = 1;
    }
    if (call->q_head != NULL) {
        skv_grpc_msg_t *m = call->q_head;
        call->q_head = m->next;
        if (call->q_head == NULL) {
            call->q_tail = NULL;
        }
        call->n_queued--;
        call->sending = m->bb;
        skv_free(m);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = call->sending;
    }
    if (call->finish_requested && call->q_head == NULL) {
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = call->status_code;
        ops[n++].data.send_status_from_server.status_details =
            call->has_status_details ? &call->status_details : NULL;
        call->status_sent = 1;
    }
    if (n == 0) {
        return;
    }
    call->send_in_flight = 1;
    if (skv_grpc_call_start_locked(call, ops, n, &call->tag_send) != 0) {
        call->send_in_flight = 0;
        call->cancelled = 1;
    }
}

/* Runs the cancel callback once, outside the call lock, if the application still owns the
 * call. The caller holds a reference, so the call stays valid during the callback. */
static void skv_grpc_call_fire_cancel(skv_grpc_call_t *call)
{
    pthread_mutex_lock(&call->mu);
    skv_grpc_cancel_fn fn = NULL;
    void *user = NULL;
    if (call->cancelled && !call->cancel_fired && call->app_owned && call->cancel_fn != NULL) {
        call->cancel_fired = 1;
        fn = call->cancel_fn;
        user = call->cancel_user;
    }
    pthread_mutex_unlock(&call->mu);
    if (fn != NULL) {
        fn(call, user);
    }
}

/* ---- call writer API ---- */

/* Packs msg and appends it to the call's queue (respecting max_queued unless `last`). When
 * `last`, the call is finished in the same critical section. */
static skv_status_t skv_grpc_call_enqueue(skv_grpc_call_t *call, const ProtobufCMessage *msg,
                                          int last)
{
    const skv_grpc_method_entry_t *me = call->method;
    if (me == NULL || msg->descriptor != me->m.response_desc) {
        SKV_LOG_ERROR("grpc: %s: write of %s", skv_grpc_call_method(call), msg->descriptor->name);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    skv_grpc_msg_t *m = skv_malloc(sizeof(*m));
    if (m == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    m->next = NULL;
    skv_status_t status = skv_grpc_pack(msg, &m->bb);
    if (status != SKV_STATUS_OK) {
        skv_free(m);
        return status;
    }
    pthread_mutex_lock(&call->mu);
    SKV_ASSERT(call->app_owned && !call->finish_requested);
    if (call->cancelled) {
        status = SKV_STATUS_CANCELLED;
    } else if (me->m.kind == SKV_GRPC_METHOD_UNARY && call->n_written > 0) {
        SKV_LOG_ERROR("grpc: %s: second write on a unary call", me->m.name);
        status = SKV_STATUS_INVALID_ARGUMENT;
    } else if (!last && call->n_queued >= call->server->max_queued) {
        status = SKV_STATUS_BUSY;
    } else {
        if (call->q_tail != NULL) {
            call->q_tail->next = m;
        } else {
            call->q_head = m;
        }
        call->q_tail = m;
        call->n_queued++;
        call->n_written++;
        m = NULL;
        if (!last) {
            skv_grpc_call_pump_locked(call);
        }
    }
    pthread_mutex_unlock(&call->mu);
    if (m != NULL) {
        grpc_byte_buffer_destroy(m->bb);
        skv_free(m);
    }
    return status;
}

skv_status_t skv_grpc_call_write(skv_grpc_call_t *call, const ProtobufCMessage *msg)
{
    return skv_grpc_call_enqueue(call, msg, 0);
}

void skv_grpc_call_finish_msg(skv_grpc_call_t *call, const ProtobufCMessage *last_msg,
                              skv_status_t status, const char *message)
{
    skv_status_t st = skv_grpc_call_enqueue(call, last_msg, 1);
    if (st != SKV_STATUS_OK && st != SKV_STATUS_CANCELLED && status == SKV_STATUS_OK) {
        status = st;
        message = "the last message could not be queued";
    }
    skv_grpc_call_finish(call, status, message);
}

void skv_grpc_call_finish(skv_grpc_call_t *call, skv_status_t status, const char *message)
{
    pthread_mutex_lock(&call->mu);
    SKV_ASSERT(call->app_owned && !call->finish_requested);
    call->app_owned = 0;
    call->finish_requested = 1;
    call->status_code = (grpc_status_code)skv_status_grpc_code(status);
    if (message != NULL && message[0] != '\0') {
        call->status_details = grpc_slice_from_copied_string(message);
        call->has_status_details = 1;
    }
    skv_grpc_call_pump_locked(call);
    pthread_mutex_unlock(&call->mu);
    skv_grpc_call_unref(call); /* the application's reference */
}

void skv_grpc_call_set_cancel(skv_grpc_call_t *call, skv_grpc_cancel_fn fn, void *user)
{
    pthread_mutex_lock(&call->mu);
    call->cancel_fn = fn;
    call->cancel_user = user;
    pthread_mutex_unlock(&call->mu);
    skv_grpc_call_fire_cancel(call);
}

int skv_grpc_call_cancelled(const skv_grpc_call_t *call)
{
    return __atomic_load_n(&call->cancelled, __ATOMIC_ACQUIRE);
}

int64_t skv_grpc_call_deadline_ns(const skv_grpc_call_t *call)
{
    return call->deadline_ns;
}

const char *skv_grpc_call_method(const skv_grpc_call_t *call)
{
    return call->method != NULL ? call->method->m.name : "(unknown method)";
}

int skv_grpc_call_queued(const skv_grpc_call_t *call)
{
    skv_grpc_call_t *c = (skv_grpc_call_t *)call;
    pthread_mutex_lock(&c->mu);
    int n = c->n_queued;
    pthread_mutex_unlock(&c->mu);
    return n;
}

int skv_grpc_call_metadata(const skv_grpc_call_t *call, const char *key, char *buf,
                           size_t buf_bytes)
{
    for (size_t i = 0; i < call->md.count; i++) {
        const grpc_metadata *md = &call->md.metadata[i];
        if (grpc_slice_str_cmp(md->key, key) == 0) {
            size_t n = GRPC_SLICE_LENGTH(md->value);
            n = n < buf_bytes - 1 ? n : buf_bytes - 1;
            memcpy(buf, GRPC_SLICE_START_PTR(md->value), n);
            buf[n] = '\0';
            return 0;
        }
    }
    return -1;
}

grpc_call *skv_grpc_call_raw(const skv_grpc_call_t *call)
{
    return call->call;
}

/* ---- request posting and arrival ---- */

/* Posts one request for `me` (NULL: the generic request for unknown methods) on a worker's
 * queue, unless a drain has begun. The server lock orders this against shutdown. */
static void skv_grpc_post_request(skv_grpc_worker_t *w, const skv_grpc_method_entry_t *me)
{
    skv_grpc_server_t *server = w->server;
    skv_grpc_call_t *call = skv_calloc(1, sizeof(*call));
    if (call == NULL) {
        SKV_LOG_ERROR("grpc: no memory to post a request for %s", me ? me->m.name : "(generic)");
        return;
    }
    pthread_mutex_init(&call->mu, NULL);
    call->refs = 1; /* the request tag */
    call->server = server;
    call->worker = w;
    call->method = me;
    call->tag_request = (skv_grpc_tag_t){SKV_GRPC_TAG_REQUEST, call};
    call->tag_send = (skv_grpc_tag_t){SKV_GRPC_TAG_SEND, call};
    call->tag_close = (skv_grpc_tag_t){SKV_GRPC_TAG_CLOSE, call};
    grpc_metadata_array_init(&call->md);
    grpc_call_details_init(&call->details);
    pthread_mutex_lock(&server->mu);
    grpc_call_error err = GRPC_CALL_ERROR;
    if (server->accepting) {
        server->n_calls++;
        if (me != NULL) {
            err = grpc_server_request_registered_call(server->server, me->registered, &call->call,
                                                      &call->deadline, &call->md, &call->payload,
                                                      w->cq, w->cq, &call->tag_request);
        } else {
            err = grpc_server_request_call(server->server, &call->call, &call->details, &call->md,
                                           w->cq, w->cq, &call->tag_request);
        }
        if (err != GRPC_CALL_OK) {
            server->n_calls--;
            SKV_LOG_ERROR("grpc: request_call(%s) = %d", me ? me->m.name : "(generic)", (int)err);
        }
    }
    pthread_mutex_unlock(&server->mu);
    if (err != GRPC_CALL_OK) {
        grpc_metadata_array_destroy(&call->md);
        grpc_call_details_destroy(&call->details);
        pthread_mutex_destroy(&call->mu);
        skv_free(call);
    }
}

/* A call arrived: re-post, watch for the close, then hand it to its handler (or answer an
 * unknown method / a bad payload ourselves). */
static void skv_grpc_call_arrived(skv_grpc_call_t *call)
{
    skv_grpc_server_t *server = call->server;
    skv_grpc_post_request(call->worker, call->method);
    pthread_mutex_lock(&server->mu);
    server->n_active++;
    pthread_mutex_unlock(&server->mu);
    call->active = 1;
    call->deadline_ns =
        skv_grpc_deadline_to_ns(call->method ? call->deadline : call->details.deadline);

    grpc_op close_op;
    memset(&close_op, 0, sizeof(close_op));
    close_op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    close_op.data.recv_close_on_server.cancelled = &call->close_cancelled;
    pthread_mutex_lock(&call->mu);
    call->app_owned = 1;
    skv_grpc_call_ref(call); /* the application's (or our own answer's) reference */
    skv_grpc_call_start_locked(call, &close_op, 1, &call->tag_close);
    pthread_mutex_unlock(&call->mu);

    char why[256];
    if (call->method == NULL) {
        char *name = grpc_slice_to_c_string(call->details.method);
        snprintf(why, sizeof(why), "unknown method %s", name);
        gpr_free(name);
        skv_grpc_call_finish(call, SKV_STATUS_UNSUPPORTED, why);
        return;
    }
    const skv_grpc_method_t *m = &call->method->m;
    skv_status_t status =
        skv_grpc_unpack(call->payload, m->request_desc, &call->request, why, sizeof(why));
    if (status != SKV_STATUS_OK) {
        SKV_LOG_DEBUG("grpc: %s: %s", m->name, why);
        skv_grpc_call_finish(call, status, why);
        return;
    }
    m->handler(call, call->request, m->user);
}

/* A send batch completed: a failure means the client left (cancel and stop). */
static void skv_grpc_send_done(skv_grpc_call_t *call, int ok)
{
    pthread_mutex_lock(&call->mu);
    call->send_in_flight = 0;
    if (call->sending != NULL) {
        grpc_byte_buffer_destroy(call->sending);
        call->sending = NULL;
    }
    if (!ok && !call->cancelled) {
        __atomic_store_n(&call->cancelled, 1, __ATOMIC_RELEASE);
        grpc_call_cancel(call->call, NULL);
    }
    skv_grpc_call_pump_locked(call);
    pthread_mutex_unlock(&call->mu);
    if (!ok) {
        skv_grpc_call_fire_cancel(call);
    }
}

/* RECV_CLOSE_ON_SERVER completed: the call is over on the client's side. */
static void skv_grpc_close_done(skv_grpc_call_t *call)
{
    if (!call->close_cancelled) {
        return;
    }
    pthread_mutex_lock(&call->mu);
    __atomic_store_n(&call->cancelled, 1, __ATOMIC_RELEASE);
    skv_grpc_queue_clear(call);
    pthread_mutex_unlock(&call->mu);
    skv_grpc_call_fire_cancel(call);
}

static void skv_grpc_dispatch(skv_grpc_tag_t *tag, int ok, skv_grpc_server_t *server)
{
    if (tag->kind == SKV_GRPC_TAG_SHUTDOWN) {
        pthread_mutex_lock(&server->mu);
        server->shutdown_notified = 1;
        pthread_cond_broadcast(&server->cv);
        pthread_mutex_unlock(&server->mu);
        return;
    }
    skv_grpc_call_t *call = tag->call;
    switch (tag->kind) {
    case SKV_GRPC_TAG_REQUEST:
        if (ok) {
            skv_grpc_call_arrived(call);
        }
        break;
    case SKV_GRPC_TAG_SEND:
        skv_grpc_send_done(call, ok);
        break;
    case SKV_GRPC_TAG_CLOSE:
        skv_grpc_close_done(call);
        break;
    default:
        SKV_ASSERT(0);
    }
    skv_grpc_call_unref(call); /* the tag's reference */
}

static void *skv_grpc_worker_main(void *arg)
{
    skv_grpc_worker_t *w = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            break;
        }
        if (ev.type == GRPC_OP_COMPLETE) {
            skv_grpc_dispatch(ev.tag, ev.success, w->server);
        }
    }
    return NULL;
}

/* ---- server ---- */

/* Copies the configured methods and appends the two health methods. */
static skv_status_t skv_grpc_methods_init(skv_grpc_server_t *server,
                                          const skv_grpc_server_config_t *config)
{
    server->n_methods = config->n_methods + 2;
    server->methods = skv_calloc(server->n_methods, sizeof(*server->methods));
    if (server->methods == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < config->n_methods; i++) {
        const skv_grpc_method_t *m = &config->methods[i];
        if (m->name == NULL || m->name[0] != '/' || m->handler == NULL || m->request_desc == NULL ||
            m->response_desc == NULL) {
            SKV_LOG_ERROR("grpc: method %zu (%s) is incomplete", i, m->name ? m->name : "NULL");
            return SKV_STATUS_INVALID_ARGUMENT;
        }
        server->methods[i].m = *m;
    }
    skv_grpc_method_t *check = &server->methods[config->n_methods].m;
    *check = (skv_grpc_method_t){"/grpc.health.v1.Health/Check",
                                 SKV_GRPC_METHOD_UNARY,
                                 &grpc__health__v1__health_check_request__descriptor,
                                 &grpc__health__v1__health_check_response__descriptor,
                                 skv_grpc_health_check,
                                 server->health};
    skv_grpc_method_t *watch = &server->methods[config->n_methods + 1].m;
    *watch = *check;
    watch->name = "/grpc.health.v1.Health/Watch";
    watch->kind = SKV_GRPC_METHOD_SERVER_STREAMING;
    watch->handler = skv_grpc_health_watch;
    return SKV_STATUS_OK;
}

/* Marks each service of the method table SERVING ("/pkg.Svc/Method" -> "pkg.Svc"). */
static skv_status_t skv_grpc_health_init(skv_grpc_server_t *server)
{
    for (size_t i = 0; i < server->n_methods; i++) {
        const char *name = server->methods[i].m.name + 1;
        const char *slash = strchr(name, '/');
        char service[256];
        size_t n = slash ? (size_t)(slash - name) : strlen(name);
        if (n >= sizeof(service)) {
            continue;
        }
        memcpy(service, name, n);
        service[n] = '\0';
        SKV_CHECK(skv_grpc_health_registry_set(server->health, service, SKV_GRPC_HEALTH_SERVING));
    }
    return SKV_STATUS_OK;
}

/* Creates the C-core server with our channel args and binds the address. */
static skv_status_t skv_grpc_server_bind(skv_grpc_server_t *server,
                                         const skv_grpc_server_config_t *config)
{
    grpc_arg args[3];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[0].value.integer = 0; /* a taken port must fail, not bind silently (GRPC_C.md) */
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[1].value.integer = config->max_recv_message_bytes > 0 ? config->max_recv_message_bytes
                                                               : SKV_GRPC_DEFAULT_MSG_BYTES;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[2].value.integer = config->max_send_message_bytes > 0 ? config->max_send_message_bytes
                                                               : SKV_GRPC_DEFAULT_MSG_BYTES;
    grpc_channel_args channel_args = {3, args};
    server->server = grpc_server_create(&channel_args, NULL);
    for (size_t i = 0; i < server->n_methods; i++) {
        server->methods[i].registered =
            grpc_server_register_method(server->server, server->methods[i].m.name, NULL,
                                        GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (server->methods[i].registered == NULL) {
            SKV_LOG_ERROR("grpc: cannot register %s (duplicate?)", server->methods[i].m.name);
            return SKV_STATUS_INVALID_ARGUMENT;
        }
    }
    for (int i = 0; i < server->n_workers; i++) {
        server->workers[i].server = server;
        server->workers[i].cq = grpc_completion_queue_create_for_next(NULL);
        grpc_server_register_completion_queue(server->server, server->workers[i].cq, NULL);
    }
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    server->port = grpc_server_add_http2_port(server->server, config->address, creds);
    grpc_server_credentials_release(creds);
    if (server->port == 0) {
        SKV_LOG_ERROR("grpc: cannot bind %s (in use or bad address)", config->address);
        return SKV_STATUS_UNAVAILABLE;
    }
    return SKV_STATUS_OK;
}

/* Starts the server, posts the requests of every method on every queue, starts threads. */
static skv_status_t skv_grpc_server_launch(skv_grpc_server_t *server)
{
    grpc_server_start(server->server);
    server->accepting = 1;
    for (int i = 0; i < server->n_workers; i++) {
        skv_grpc_worker_t *w = &server->workers[i];
        for (size_t k = 0; k < server->n_methods; k++) {
            skv_grpc_post_request(w, &server->methods[k]);
        }
        skv_grpc_post_request(w, NULL);
    }
    for (int i = 0; i < server->n_workers; i++) {
        if (pthread_create(&server->workers[i].thread, NULL, skv_grpc_worker_main,
                           &server->workers[i]) != 0) {
            SKV_LOG_ERROR("grpc: cannot start server thread %d", i);
            return SKV_STATUS_NO_MEMORY;
        }
        server->workers[i].started = 1;
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_grpc_server_create(const skv_grpc_server_config_t *config,
                                    skv_grpc_server_t **server_p)
{
    if (config == NULL || config->address == NULL ||
        (config->n_methods > 0 && config->methods == NULL)) {
        SKV_LOG_ERROR("grpc: server config without an address or methods");
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    skv_grpc_server_t *server = skv_calloc(1, sizeof(*server));
    if (server == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    grpc_init();
    pthread_mutex_init(&server->mu, NULL);
    pthread_cond_init(&server->cv, NULL);
    server->shutdown_tag.kind = SKV_GRPC_TAG_SHUTDOWN;
    server->max_queued =
        config->max_queued_messages > 0 ? config->max_queued_messages : SKV_GRPC_DEFAULT_QUEUED;
    server->n_workers = config->n_threads > 0 ? config->n_threads : 2;
    skv_status_t status;
    server->workers = skv_calloc((size_t)server->n_workers, sizeof(*server->workers));
    if (server->workers == NULL) {
        status = SKV_STATUS_NO_MEMORY;
        goto fail;
    }
    SKV_CHECK_GOTO(skv_grpc_health_registry_create(&server->health), fail);
    SKV_CHECK_GOTO(skv_grpc_methods_init(server, config), fail);
    SKV_CHECK_GOTO(skv_grpc_health_init(server), fail);
    SKV_CHECK_GOTO(skv_grpc_server_bind(server, config), fail);
    SKV_CHECK_GOTO(skv_grpc_server_launch(server), fail);
    SKV_LOG_INFO("grpc: serving %s on port %d with %d threads", config->address, server->port,
                 server->n_workers);
    *server_p = server;
    return SKV_STATUS_OK;
fail:
    skv_grpc_server_destroy(server);
    return status;
}

int skv_grpc_server_port(const skv_grpc_server_t *server)
{
    return server->port;
}

skv_status_t skv_grpc_server_set_health(skv_grpc_server_t *server, const char *service,
                                        skv_grpc_health_t health)
{
    return skv_grpc_health_registry_set(server->health, service, health);
}

/* Waits on the server condition until pred(server) or deadline_ns; returns pred's value. */
static int skv_grpc_server_wait_until(skv_grpc_server_t *server, int (*pred)(skv_grpc_server_t *),
                                      int64_t deadline_ns)
{
    pthread_mutex_lock(&server->mu);
    while (!pred(server)) {
        int64_t now = skv_clock_now_ns();
        if (now >= deadline_ns) {
            break;
        }
        /* CLOCK_REALTIME wait in short slices, re-checked against the monotonic deadline. */
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        int64_t slice = deadline_ns - now < 100000000 ? deadline_ns - now : 100000000;
        ts.tv_nsec += (long)slice;
        ts.tv_sec += ts.tv_nsec / 1000000000;
        ts.tv_nsec %= 1000000000;
        pthread_cond_timedwait(&server->cv, &server->mu, &ts);
    }
    int done = pred(server);
    pthread_mutex_unlock(&server->mu);
    return done;
}

static int skv_grpc_no_active(skv_grpc_server_t *s)
{
    return s->n_active == 0;
}
static int skv_grpc_notified(skv_grpc_server_t *s)
{
    return s->shutdown_notified;
}
static int skv_grpc_no_calls(skv_grpc_server_t *s)
{
    return s->n_calls == 0;
}

/* Shuts down and drains every completion queue, joins the threads, destroys the server. */
static void skv_grpc_server_stop_threads(skv_grpc_server_t *server)
{
    for (int i = 0; i < server->n_workers; i++) {
        if (server->workers[i].cq != NULL) {
            grpc_completion_queue_shutdown(server->workers[i].cq);
        }
    }
    for (int i = 0; i < server->n_workers; i++) {
        skv_grpc_worker_t *w = &server->workers[i];
        if (w->started) {
            pthread_join(w->thread, NULL);
            w->started = 0;
        } else if (w->cq != NULL) {
            while (
                grpc_completion_queue_next(w->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
                GRPC_QUEUE_SHUTDOWN) {
            }
        }
    }
    if (server->server != NULL) {
        grpc_server_destroy(server->server);
        server->server = NULL;
    }
    for (int i = 0; i < server->n_workers; i++) {
        if (server->workers[i].cq != NULL) {
            grpc_completion_queue_destroy(server->workers[i].cq);
            server->workers[i].cq = NULL;
        }
    }
}

skv_status_t skv_grpc_server_drain(skv_grpc_server_t *server, int64_t grace_ms)
{
    pthread_mutex_lock(&server->mu);
    if (server->drained || !server->accepting) {
        skv_status_t s = server->drain_status;
        pthread_mutex_unlock(&server->mu);
        return s;
    }
    server->accepting = 0;
    grpc_server_shutdown_and_notify(server->server, server->workers[0].cq, &server->shutdown_tag);
    pthread_mutex_unlock(&server->mu);
    SKV_LOG_INFO("grpc: draining port %d (grace %lld ms)", server->port, (long long)grace_ms);
    skv_grpc_health_registry_shutdown(server->health);

    skv_status_t status = SKV_STATUS_OK;
    if (!skv_grpc_server_wait_until(server, skv_grpc_no_active, skv_clock_deadline_ms(grace_ms))) {
        SKV_LOG_WARN("grpc: drain grace of %lld ms over; cancelling the calls left",
                     (long long)grace_ms);
        grpc_server_cancel_all_calls(server->server);
        status = SKV_STATUS_TIMEOUT;
    }
    skv_grpc_server_wait_until(server, skv_grpc_notified, INT64_MAX);
    while (!skv_grpc_server_wait_until(server, skv_grpc_no_calls, skv_clock_deadline_ms(5000))) {
        SKV_LOG_WARN("grpc: drain waits for %d calls whose owners have not finished them",
                     server->n_calls);
    }
    skv_grpc_server_stop_threads(server);
    pthread_mutex_lock(&server->mu);
    server->drained = 1;
    server->drain_status = status;
    pthread_mutex_unlock(&server->mu);
    return status;
}

void skv_grpc_server_destroy(skv_grpc_server_t *server)
{
    if (server == NULL) {
        return;
    }
    if (server->accepting) {
        skv_grpc_server_drain(server, 0);
    } else if (server->workers != NULL && !server->drained) {
        skv_grpc_server_stop_threads(server); /* a failed create: nothing was accepted */
    }
    skv_grpc_health_registry_destroy(server->health);
    skv_free(server->methods);
    skv_free(server->workers);
    pthread_cond_destroy(&server->cv);
    pthread_mutex_destroy(&server->mu);
    skv_free(server);
    grpc_shutdown();
}

/* ---- signals ---- */

static sem_t skv_grpc_signal_sem;
static volatile sig_atomic_t skv_grpc_signal_seen;

static void skv_grpc_on_signal(int sig)
{
    skv_grpc_signal_seen = sig;
    sem_post(&skv_grpc_signal_sem); /* async-signal-safe */
}

void skv_grpc_signals_install(void)
{
    sem_init(&skv_grpc_signal_sem, 0, 0);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = skv_grpc_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

skv_status_t skv_grpc_server_wait_signal(skv_grpc_server_t *server, int64_t grace_ms)
{
    while (sem_wait(&skv_grpc_signal_sem) != 0 && errno == EINTR) {
    }
    SKV_LOG_INFO("grpc: signal %d: draining", (int)skv_grpc_signal_seen);
    return skv_grpc_server_drain(server, grace_ms);
}

skv_status_t skv_grpc_port_file_write(const char *path, int port)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int ok = f != NULL && fprintf(f, "%d\n", port) >= 0;
    ok = f != NULL && fclose(f) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        SKV_LOG_ERROR("cannot write the port file %s", path);
        return SKV_STATUS_IO;
    }
    return SKV_STATUS_OK;
}
