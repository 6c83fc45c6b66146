/*
 * generate.c: the single-sequence loop (prefill in chunks, then decode step by step).
 */
#include "common/model/generate.h"

#include "base/alloc.h"
#include "base/log.h"

skv_status_t skv_generate_prefill(skv_model_t *model, skv_kv_pool_t *pool, skv_kv_seq_t *seq,
                                  const int32_t *prompt, int32_t n_prompt, int32_t chunk_tokens,
                                  float *logits)
{
    SKV_CHECK(skv_kv_seq_reserve(pool, seq, n_prompt));
    int32_t chunk = chunk_tokens > 0 ? chunk_tokens : n_prompt;
    for (int32_t pos = 0; pos < n_prompt; pos += chunk) {
        int32_t n = n_prompt - pos < chunk ? n_prompt - pos : chunk;
        skv_seq_step_t step = {prompt + pos, n, pos, seq->blocks, seq->n_blocks,
                               pos + n == n_prompt};
        SKV_CHECK(skv_model_forward(model, pool, &step, 1, pos + n == n_prompt ? logits : NULL));
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_generate_decode(skv_model_t *model, skv_kv_pool_t *pool, skv_kv_seq_t *seq,
                                 int32_t token, int32_t pos, float *logits)
{
    SKV_CHECK(skv_kv_seq_reserve(pool, seq, (int64_t)pos + 1));
    skv_seq_step_t step = {&token, 1, pos, seq->blocks, seq->n_blocks, 1};
    return skv_model_forward(model, pool, &step, 1, logits);
}

/* The loop body after prefill: sample, report, and feed tokens back. */
static skv_status_t skv_generate_loop(skv_model_t *model, skv_kv_pool_t *pool, skv_kv_seq_t *seq,
                                      int32_t n_prompt, const skv_generate_opts_t *opts,
                                      skv_sampler_t *sampler, float *logits, skv_generate_cb_t cb,
                                      void *cb_ctx, int32_t *out, int32_t *n_out_p)
{
    const skv_model_config_t *cfg = skv_model_config(model);
    int32_t n = 0;
    while (n < opts->max_new_tokens) {
        skv_sample_t sample;
        SKV_CHECK(skv_sampler_next(sampler, logits, &sample));
        out[n++] = sample.token;
        *n_out_p = n;
        if ((cb != NULL && cb(cb_ctx, &sample)) ||
            (!opts->ignore_eos && skv_model_config_is_eos(cfg, sample.token)) ||
            n == opts->max_new_tokens || n_prompt + n >= skv_model_max_context(model)) {
            break;
        }
        SKV_CHECK(skv_generate_decode(model, pool, seq, sample.token, n_prompt + n - 1, logits));
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_generate(skv_model_t *model, skv_kv_pool_t *pool, const int32_t *prompt,
                          int32_t n_prompt, const skv_generate_opts_t *opts, skv_generate_cb_t cb,
                          void *cb_ctx, int32_t *out, int32_t *n_out_p)
{
    const skv_model_config_t *cfg = skv_model_config(model);
    skv_kv_seq_t seq = {0};
    skv_sampler_t *sampler = NULL;
    float *logits = skv_mallocn((size_t)cfg->vocab_size, sizeof(float));
    skv_status_t status = logits ? SKV_STATUS_OK : SKV_STATUS_NO_MEMORY;
    *n_out_p = 0;
    if (status == SKV_STATUS_OK) {
        status = skv_sampler_create(&opts->sampling, cfg->vocab_size, &sampler);
    }
    if (status == SKV_STATUS_OK) {
        status = skv_generate_prefill(model, pool, &seq, prompt, n_prompt, opts->chunk_tokens,
                                      logits);
    }
    if (status == SKV_STATUS_OK) {
        status = skv_generate_loop(model, pool, &seq, n_prompt, opts, sampler, logits, cb, cb_ctx,
                                   out, n_out_p);
    }
    skv_kv_seq_release(pool, &seq);
    skv_sampler_destroy(sampler);
    skv_free(logits);
    return status;
}
