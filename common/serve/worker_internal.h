/*
 * worker_internal.h: the data of a worker shared by its source files (worker.c: lifecycle and
 * loop; worker_rpc.c: handlers and message conversion) and by the roles' code, which the
 * core reaches only through skv_worker_role_ops_t (decode_worker/decode.c: reservations and
 * KV admission; decode_worker/stream.c: streamed answers; prefill_worker/prefill.c: prefill
 * and KV push).
 *
 * Threads: handlers (gRPC threads) only allocate a skv_wreq_t and append it to the inbox
 * under `mu`; everything else in a skv_wreq_t / skv_wres_t is touched by the loop thread only.
 * Counters read by Stats handlers are atomics written by the loop.
 */
#ifndef SKV_COMMON_WORKER_INTERNAL_H
#define SKV_COMMON_WORKER_INTERNAL_H

#include <pthread.h>

#include "common/rpc/grpc_server.h"
#include "common/kvx/kvx.h"
#include "kernels/backend.h"
#include "common/serve/worker.h"
#include "skv/v1/worker.pb-c.h"

typedef enum {
    SKV_WREQ_GENERATE = 0, /* Worker.Generate: prefill + decode here, stream */
    SKV_WREQ_DECODE,       /* Decode.Decode: decode transferred KV, stream */
    SKV_WREQ_PREFILL,      /* Prefill.Prefill / Worker.Prefill: unary */
    SKV_WREQ_RESERVE,      /* Decode.Reserve: unary, answered inside the loop */
    SKV_WREQ_RELEASE,      /* Decode.Release: unary, answered inside the loop */
} skv_wreq_kind_t;

typedef struct skv_wres skv_wres_t;

/* One accepted call. Lives from the handler until the call is finished and the engine and
 * the transport hold no reference (in_engine == 0, push == NULL). */
struct skv_wreq {
    struct skv_wreq *next;
    struct skv_worker *w; /* back pointer for engine callbacks */
    skv_wreq_kind_t kind;
    uint64_t id;                 /* engine request id and UCX lease/completion id */
    skv_grpc_call_t *call;       /* NULL once finished */
    const ProtobufCMessage *msg; /* the request, owned by the call until finished */
    const char *request_id;      /* points into msg */
    int64_t received_ns;
    int in_engine;    /* submitted; on_finish not yet seen */
    int cancel_asked; /* skv_engine_cancel already called */
    /* streamed tokens not yet written (stream kinds), and the end once known */
    int32_t *out_tokens;       /* [n_out] */
    skv_sample_t *out_samples; /* [n_out], only when logprobs were asked */
    int32_t n_out, cap_out;
    int want_logprobs; /* keep out_samples (decided at submit) */
    int32_t n_sent;    /* tokens written so far, plus DECODE's transferred first */
    int32_t n_prompt;
    int finish_ready;
    skv_finish_t finish;
    skv_status_t finish_status;
    const char *finish_detail; /* static */
    skv_request_timing_t timing;
    int64_t max_gap_ns, sum_gap_ns, n_gaps, last_token_ns;
    /* DECODE: the reservation it waits on */
    skv_wres_t *res;
    /* PREFILL */
    skv_kvx_desc_t *desc; /* decoded target, NULL without one */
    skv_kvx_push_t *push; /* in flight */
    skv_kv_seq_t kv;      /* the prompt's blocks while pushing */
    skv_sample_t first;   /* the sampled first token */
    int has_first;
    int64_t push_start_ns, push_end_ns;
    uint64_t push_bytes; /* its share of the worker's push backlog (0 once left) */
};

/* One reservation of KV blocks on a decode worker (Decode.Reserve). */
struct skv_wres {
    skv_wres_t *next;
    uint64_t id;      /* lease id (in the descriptor and the UCX completion) */
    char *request_id; /* copied */
    int32_t *prompt;  /* [n_prompt], copied: the engine needs it for penalties and
                         for recompute after a preemption */
    int32_t n_prompt;
    skv_kv_seq_t kv; /* the leased blocks */
    int ready;       /* completion arrived: kv holds the prompt's KV */
    int32_t first_token;
    int64_t expires_ns; /* a ready reservation nobody decodes is freed after this */
    skv_wreq_t *decode; /* a Decode call waiting for the completion */
};

struct skv_worker {
    skv_worker_config_t cfg;
    skv_model_t *model;
    skv_kv_pool_t *pool;
    skv_backend_t *be;
    skv_engine_t *engine;
    skv_kvx_t *kvx;         /* loop thread only */
    skv_backend_kvx_t bkvx; /* the backend's transfer hooks (ops NULL on host pools) */
    skv_grpc_server_t *server;
    uint64_t fingerprint; /* the model's KV layout, the same for every TP size
                             (skv_kv_layout_model_fingerprint) */
    uint64_t block_bytes; /* one rank's share of a KV block */
    int32_t tp_size;      /* tensor-parallel ranks of the model and the pool */
    int host_pool;        /* pool memory is host memory (CPU backends) */
    char advertise[256];
    /* inbox and loop control */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    skv_wreq_t *inbox_head, *inbox_tail;
    int stop;
    pthread_t loop;
    int loop_started;
    skv_status_t loop_init_status; /* set by the loop thread after creating the transport */
    int loop_init_done;
    /* loop-owned */
    skv_wreq_t *live;
    skv_wres_t *reservations;
    uint64_t next_id;
    /* KV push backlog (loop-owned; worker_prefill.c) */
    uint64_t push_backlog_bytes; /* prompts admitted with a target, until their push ends */
    double push_bytes_per_ns;    /* the rate pushes drained at (EWMA; 0 = not yet timed) */
    int64_t push_last_end_ns;
    /* atomics for Stats */
    int64_t n_live_calls;
    int64_t n_reserved_blocks;
    int64_t n_requests_total;
    int64_t n_tokens_total;
};

/* worker_rpc.c */
size_t skv_worker_methods(skv_worker_t *w, skv_grpc_method_t *methods);
skv_status_t skv_worker_sampling_from_msg(const skv_worker_t *w, const Skv__V1__SamplingParams *m,
                                          uint32_t logprobs, skv_sampling_params_t *p,
                                          const char **why);
void skv_worker_fill_logprob(const skv_sample_t *s, Skv__V1__TokenLogprob *lp,
                             Skv__V1__TopLogprob *tops, Skv__V1__TopLogprob **top_ptrs);

/* worker.c */
void skv_worker_retire(skv_worker_t *w, skv_wreq_t *r);
void skv_worker_wake(skv_worker_t *w);

#endif /* SKV_COMMON_WORKER_INTERNAL_H */
