/*
 * generate.h: single-sequence generation on top of skv_model_forward: chunked prefill, then
 * one decode step per token, sampling on the host. This is the engine-alone path (CLI, model
 * tests, the prefill(N) == prefill(N-1) + decode(1) checks); batching engines live in the
 * workers.
 */
#ifndef SKV_COMMON_GENERATE_H
#define SKV_COMMON_GENERATE_H

#include <stdint.h>

#include "common/model/kv_pool.h"
#include "common/model/model.h"
#include "common/model/sampler.h"

/* Called for each generated token; return non-zero to stop. */
typedef int (*skv_generate_cb_t)(void *ctx, const skv_sample_t *sample);

typedef struct {
    int32_t max_new_tokens;
    int32_t chunk_tokens;   /* prefill chunk size (0 = the model's batch budget) */
    int ignore_eos;         /* keep going past end-of-sequence ids */
    skv_sampling_params_t sampling;
} skv_generate_opts_t;

/* Prefills prompt[n_prompt] into seq (reserving blocks from pool) and returns the logits
 * after the last prompt token in logits[vocab]. The caller owns seq and releases it.
 * BUSY when the pool cannot hold the prompt; errors of skv_model_forward otherwise. */
skv_status_t skv_generate_prefill(skv_model_t *model, skv_kv_pool_t *pool, skv_kv_seq_t *seq,
                                  const int32_t *prompt, int32_t n_prompt, int32_t chunk_tokens,
                                  float *logits);

/* Appends one token at position pos (the sequence already holds pos tokens) and returns the
 * next-token logits. */
skv_status_t skv_generate_decode(skv_model_t *model, skv_kv_pool_t *pool, skv_kv_seq_t *seq,
                                 int32_t token, int32_t pos, float *logits);

/* Generates up to opts->max_new_tokens after prompt, calling cb for each; writes the tokens
 * to out (capacity max_new_tokens) and their count to *n_out_p. Releases its KV blocks before
 * returning. */
skv_status_t skv_generate(skv_model_t *model, skv_kv_pool_t *pool, const int32_t *prompt,
                          int32_t n_prompt, const skv_generate_opts_t *opts, skv_generate_cb_t cb,
                          void *cb_ctx, int32_t *out, int32_t *n_out_p);

#endif /* SKV_COMMON_GENERATE_H */
