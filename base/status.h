/*
 * status.h: the one status enum of swiftkv-serve and its helpers.
 *
 * Every fallible function returns skv_status_t. Values are a small vocabulary in the spirit of
 * nginx's return codes: each names what the caller should do, and each has exactly one gRPC
 * status code it maps to (see skv_status_grpc_code). "Out of KV blocks" is SKV_STATUS_BUSY
 * (backpressure), not a failure. This header has no dependencies and no allocation.
 */
#ifndef SKV_COMMON_STATUS_H
#define SKV_COMMON_STATUS_H

typedef enum {
    SKV_STATUS_OK = 0,
    SKV_STATUS_INVALID_ARGUMENT,  /* the caller's data is malformed or out of its domain */
    SKV_STATUS_OUT_OF_RANGE,      /* well-formed but beyond a limit (context length, ...) */
    SKV_STATUS_NOT_FOUND,         /* a named thing (file, tensor, field, request) is absent */
    SKV_STATUS_FORMAT,            /* a file or message is corrupt or does not match its schema */
    SKV_STATUS_UNSUPPORTED,       /* valid, but a feature this build does not implement */
    SKV_STATUS_NO_MEMORY,         /* host or device allocation failed */
    SKV_STATUS_IO,                /* a system call on a file or socket failed */
    SKV_STATUS_BUSY,              /* no capacity now (KV blocks, queue): retry later */
    SKV_STATUS_AGAIN,             /* not finished yet; call again (non-blocking progress) */
    SKV_STATUS_TIMEOUT,           /* a deadline passed */
    SKV_STATUS_CANCELLED,         /* the request was cancelled by its owner */
    SKV_STATUS_UNAVAILABLE,       /* a peer process is down or unreachable */
    SKV_STATUS_TRANSPORT,         /* a transfer (UCX, gRPC) failed mid-way */
    SKV_STATUS_DEVICE,            /* a GPU/driver call failed */
    SKV_STATUS_INTERNAL,          /* a bug surfaced as an error where aborting is worse */
    SKV_STATUS_MISMATCH,          /* peers disagree on a contract (KV layout fingerprint) */
    SKV_STATUS_COUNT_
} skv_status_t;

/* Returns a static, human-readable name for a status ("INVALID_ARGUMENT"). Any thread. */
const char *skv_status_str(skv_status_t status);

/* Returns the gRPC status code (grpc_status_code numbering) a status maps to. Any thread. */
int skv_status_grpc_code(skv_status_t status);

/* Evaluates expr once; returns its status from the calling function when it is not OK. */
#define SKV_CHECK(expr)                                  \
    do {                                                 \
        skv_status_t skv_check_status_ = (expr);         \
        if (skv_check_status_ != SKV_STATUS_OK) {        \
            return skv_check_status_;                    \
        }                                                \
    } while (0)

/* Evaluates expr into the local `status`; jumps to label when it is not OK. */
#define SKV_CHECK_GOTO(expr, label)                      \
    do {                                                 \
        status = (expr);                                 \
        if (status != SKV_STATUS_OK) {                   \
            goto label;                                  \
        }                                                \
    } while (0)

#endif /* SKV_COMMON_STATUS_H */
