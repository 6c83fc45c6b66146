/*
 * model_tp.h: a tensor-parallel model: one process, one thread per rank, one backend (GPU)
 * per rank, Megatron-style weight shards, and a communicator (kernels/comm.h) between them.
 * Design and the byte layout of the sharded KV cache: common/model/model_tp.md.
 *
 * The object it returns IS a skv_model_t: skv_model_forward on it validates the batch once,
 * hands the step to every rank thread (each runs the ordinary backend-blind forward on its
 * slice: own heads, own FFN columns, two all-reduces per layer), all-gathers the
 * vocabulary-parallel logits and returns them from rank 0, so the engine, skv_generate and
 * the workers drive it exactly like a single-device model. Its KV pool must come from
 * skv_model_kv_pool_create (one block allocator, one memory per rank).
 *
 * Why one thread per rank, not one process per GPU: the rank threads share the engine, the
 * request state and one block allocator with no IPC, the CPU communicator (threads as ranks)
 * is the CI twin of the NCCL one, and each thread drives its own CUDA device and stream as
 * one process per worker would. NCCL is equally happy with threads (ncclCommInitRank per
 * thread), and one process keeps a worker one Kubernetes container.
 *
 * Threading: like skv_model_t, one thread drives the model at a time; the rank threads are
 * internal. A device failure on any rank aborts the communicator: that step and every later
 * one return DEVICE (reload the model).
 */
#ifndef SKV_COMMON_MODEL_TP_H
#define SKV_COMMON_MODEL_TP_H

#include <stdint.h>

#include "common/model/model.h"

typedef struct {
    int32_t tp_size;     /* ranks, >= 1; must divide the attention heads, KV heads, FFN width */
    const char *backend; /* every rank's backend: "cpu", "cpu-ref" or "cuda" (NCCL) */
    int n_threads;       /* CPU threads per rank backend; 0 = cores / tp_size (at least 1) */
    int device0;         /* CUDA: rank r drives GPU device0 + r */
} skv_model_tp_opts_t;

/* Loads the HF folder dir split over tp->tp_size ranks: starts the rank threads, creates each
 * rank's backend on its thread, joins the communicator and loads each rank's shard (see
 * model_tp.md). On success *model_p owns all of it; skv_model_destroy stops the threads and
 * frees every rank. UNSUPPORTED (logged, naming the count) when tp_size does not divide the
 * heads, KV heads or FFN width, or the backend has no communicator in this build; errors of
 * skv_model_load and skv_backend_create otherwise. Caller thread only. */
skv_status_t skv_model_load_tp(const char *dir, const skv_model_tp_opts_t *tp,
                               const skv_model_opts_t *opts, skv_model_t **model_p);

/* The same split of the random-weight model skv_model_create_random(cfg, ..., seed) would
 * build (each rank fills exactly the values of its shard, on its backend): benchmarks of TP at
 * real sizes without a checkpoint. Same ownership and errors as skv_model_load_tp. */
skv_status_t skv_model_create_random_tp(const skv_model_config_t *cfg,
                                        const skv_model_tp_opts_t *tp, const skv_model_opts_t *opts,
                                        uint64_t seed, skv_model_t **model_p);

#endif /* SKV_COMMON_MODEL_TP_H */
