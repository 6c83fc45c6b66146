/*
 * model.h: a loaded Llama-3 / SwiftKV model and its backend-blind forward pass.
 *
 * The model owns its weights and per-step workspace in backend memory; the KV pool is
 * separate (one per worker, shared by all sequences). One forward step takes a batch of
 * sequences, each contributing a chunk of new tokens (a prefill chunk, or one decode token),
 * and returns next-token logits only for the sequences that ask for them.
 *
 * SwiftKV mode (SWIFTKV.md): all N tokens run layers 0..Lk-1; one fused GEMM projects the
 * normed residual into every later cache layer's K/V (RoPE + scatter in one op); only the M
 * rows that need logits run layers Lk..L-1 with their swiftkv query weights. A non-final
 * prefill chunk (want_logits = 0) stops after the KV projection.
 * Base mode: every layer for every token with the original projections (plain Llama, and a
 * SwiftKV checkpoint run as its teacher).
 *
 * Pure decode steps (one token and logits per sequence) run as a recorded graph on backends
 * that have the graph ops (CUDA), one per (batch size, power-of-two context bucket);
 * SKV_NO_GRAPHS in the environment turns that off.
 *
 * skv_model_forward_sample picks the next tokens where the logits are (the backend's sample
 * op, run after the step or its graph replay, so the recorded graphs are the same for both
 * entry points): only the sampling rows go up, with the step's metadata, and only the M token
 * ids come down, instead of M x vocab logits and a host pass over them.
 *
 * Threading: one thread drives a model at a time.
 */
#ifndef SKV_COMMON_MODEL_H
#define SKV_COMMON_MODEL_H

#include <stdint.h>

#include "common/model/kv_pool.h"
#include "common/model/model_config.h"
#include "common/model/sampler.h"
#include "base/status.h"
#include "kernels/ops.h"

typedef enum {
    SKV_MODEL_MODE_AUTO = 0, /* SwiftKV when the checkpoint has it, else base */
    SKV_MODEL_MODE_BASE,     /* all layers for all tokens, original projections */
    SKV_MODEL_MODE_SWIFTKV,
} skv_model_mode_t;

typedef struct {
    skv_model_mode_t mode;
    int32_t max_batch_tokens; /* N limit of one step (prefill chunk budget) */
    int32_t max_seqs;         /* sequences per step (and so logit rows) */
    int32_t max_context;      /* 0 = the model's max_position_embeddings */
    /* KV cache dtype by name, as skv_kv_dtype_resolve takes it: NULL or "auto" = the
     * backend's default (ops->kv_dtype), "fp8" = f8e4m3, or another name in the backend's
     * kv_dtypes. Read during the load only (the model keeps the resolved dtype). */
    const char *kv_dtype;
    int no_graphs; /* 1: decode steps never run as recorded device graphs (A/B runs) */
} skv_model_opts_t;

/* Applies the environment's model switches to opts, for a process's main (nothing below
 * reads the environment): SKV_NO_GRAPHS (set and not "0") sets no_graphs. */
void skv_model_opts_env(skv_model_opts_t *opts);

typedef struct skv_model skv_model_t;

/* Loads the HF model folder dir onto backend be (borrowed; must outlive the model).
 * Checks that every tensor the mode needs is present with the right shape, and that no
 * tensor is unexpected; errors name the tensor. NOT_FOUND / FORMAT / UNSUPPORTED /
 * NO_MEMORY; INVALID_ARGUMENT or UNSUPPORTED for a KV dtype (opts.kv_dtype) that is no dtype
 * or that the backend's KV ops do not take. */
skv_status_t skv_model_load(const char *dir, skv_backend_t *be, const skv_model_opts_t *opts,
                            skv_model_t **model_p);

/* Builds a model of config cfg (validated by the caller, e.g. skv_model_config_preset) with
 * deterministic pseudo-random weights from seed instead of a checkpoint: benchmarks at real
 * sizes without a 16 GB file, and backend comparisons (every backend gets bit-identical
 * weights, exact in bf16). Same ownership and errors as skv_model_load. */
skv_status_t skv_model_create_random(const skv_model_config_t *cfg, skv_backend_t *be,
                                     const skv_model_opts_t *opts, uint64_t seed,
                                     skv_model_t **model_p);

/* Frees the model's weights and workspace. */
void skv_model_destroy(skv_model_t *model);

/* The validated config, and whether the loaded mode is SwiftKV. */
const skv_model_config_t *skv_model_config(const skv_model_t *model);
int skv_model_is_swiftkv(const skv_model_t *model);
int32_t skv_model_max_context(const skv_model_t *model);
/* The step limits the model was loaded with (opts.max_seqs, opts.max_batch_tokens). */
int32_t skv_model_max_seqs(const skv_model_t *model);
int32_t skv_model_max_batch_tokens(const skv_model_t *model);

/* Fills the KV layout this model needs for pools of block_size tokens per block (for a TP
 * group: rank 0's, whose fingerprint names the split). Its dtype is the KV dtype chosen at
 * load (opts.kv_dtype), so block bytes and the fingerprint follow it. */
void skv_model_kv_layout(const skv_model_t *model, int32_t block_size, skv_kv_layout_t *layout);

/* Creates a KV pool of n_blocks blocks of block_size tokens for this model: one pool on its
 * backend, or for a TP group (model_tp.h) one pool whose block ids are shared and whose
 * memory is one allocation per rank, on that rank's backend, holding its KV heads. Free with
 * skv_kv_pool_destroy before the model. Errors as skv_kv_pool_create. Startup. */
skv_status_t skv_model_kv_pool_create(skv_model_t *model, int32_t block_size, int64_t n_blocks,
                                      skv_kv_pool_t **pool_p);

/* One sequence's part of a step. Its blocks must cover positions [0, pos0 + n_tokens). */
typedef struct {
    const int32_t *tokens; /* [n_tokens] new token ids */
    int32_t n_tokens;      /* >= 1 */
    int32_t pos0;          /* tokens already in the cache (position of tokens[0]) */
    const int32_t *blocks; /* block table */
    int32_t n_blocks;
    int32_t want_logits;   /* 1: return logits after the last token of this chunk */
} skv_seq_step_t;

/* Runs one step over n_seqs sequences. logits: host f32 [number of want_logits seqs, vocab]
 * in sequence order (may be NULL when none wants logits). INVALID_ARGUMENT for a token id
 * outside the vocabulary or a block table that does not cover the chunk; OUT_OF_RANGE when
 * positions exceed the context or the step exceeds max_batch_tokens / max_seqs. Nothing is
 * written to the cache when the batch is rejected. */
skv_status_t skv_model_forward(skv_model_t *model, skv_kv_pool_t *pool,
                               const skv_seq_step_t *seqs, int32_t n_seqs, float *logits);

/* Whether skv_model_forward_sample picks on the backend (it has the sample op; for a TP group,
 * rank 0's backend) rather than on the host from copied logits. */
int skv_model_samples_on_backend(const skv_model_t *model);

/* Runs one step like skv_model_forward and picks one token per sequence that wants logits:
 * rows[k] are the sampling parameters of the k-th such sequence (sequence order; u from
 * skv_sampler_draw_row) and tokens[k] (host) receives its token, the one skv_sample_row_pick
 * would pick from the step's logits. Logits stay in backend memory; without a sample op they
 * come to the host and skv_sample_row_pick picks, so callers need not branch. rows and tokens
 * may be NULL when no sequence wants logits. Errors of skv_model_forward, INVALID_ARGUMENT
 * for a row out of range (skv_sample_row_check), NO_MEMORY when the host fallback cannot
 * allocate its buffers. */
skv_status_t skv_model_forward_sample(skv_model_t *model, skv_kv_pool_t *pool,
                                      const skv_seq_step_t *seqs, int32_t n_seqs,
                                      const skv_sample_row_t *rows, int32_t *tokens);

#endif /* SKV_COMMON_MODEL_H */
