/*
 * grpc_internal.h: what the gRPC modules of common/ (grpc_server.c, grpc_health.c,
 * grpc_client.c) share and nobody else includes: message packing, the raw call for
 * deadline/cancel propagation and the health registry the server embeds.
 * Only these files may include gRPC C-core headers (GRPC_C.md: the C API changes between
 * minors, so it stays in one place).
 */
#ifndef SKV_COMMON_GRPC_INTERNAL_H
#define SKV_COMMON_GRPC_INTERNAL_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>

#include "common/rpc/grpc_server.h"

/* Packs msg into a new byte buffer (*bb_p, owned by the caller). Returns OK or NO_MEMORY. */
skv_status_t skv_grpc_pack(const ProtobufCMessage *msg, grpc_byte_buffer **bb_p);

/* Unpacks bb as `desc` and checks every string field is valid UTF-8. On failure writes a
 * reason into why (why_bytes) and returns INVALID_ARGUMENT (NO_MEMORY on allocation failure).
 * *msg_p is freed with protobuf_c_message_free_unpacked(msg, NULL). */
skv_status_t skv_grpc_unpack(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *desc,
                             ProtobufCMessage **msg_p, char *why, size_t why_bytes);

/* Returns the C-core call behind a server call (a parent for propagation). Borrowed. */
grpc_call *skv_grpc_call_raw(const skv_grpc_call_t *call);

/* ---- health registry (grpc_health.c), one per server ---- */
typedef struct skv_grpc_health_registry skv_grpc_health_registry_t;

/* Creates an empty registry; "" is added SERVING. Returns OK or NO_MEMORY. */
skv_status_t skv_grpc_health_registry_create(skv_grpc_health_registry_t **health_p);

/* Frees the registry; every Watch must already be finished (see _shutdown). */
void skv_grpc_health_registry_destroy(skv_grpc_health_registry_t *health);

/* Sets a service's status and sends it to its Watch streams. Returns OK or NO_MEMORY. */
skv_status_t skv_grpc_health_registry_set(skv_grpc_health_registry_t *health, const char *service,
                                          skv_grpc_health_t status);

/* Marks every service NOT_SERVING, sends that to the watchers and finishes their streams;
 * later Watch calls get NOT_SERVING and end at once. Any thread. */
void skv_grpc_health_registry_shutdown(skv_grpc_health_registry_t *health);

/* Handlers of /grpc.health.v1.Health/Check and /Watch; user is the registry. */
void skv_grpc_health_check(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user);
void skv_grpc_health_watch(skv_grpc_call_t *call, const ProtobufCMessage *request, void *user);

#endif /* SKV_COMMON_GRPC_INTERNAL_H */
