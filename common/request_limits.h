/*
 * request_limits.h: the per-request limits of the public and internal APIs, written once. The
 * router refuses a request beyond them before any worker sees it; workers and the engine apply
 * the same numbers (a request the router let through is never refused later, after tokens
 * were streamed). Constants and two pure rules: any layer may include it.
 */
#ifndef SKV_COMMON_REQUEST_LIMITS_H
#define SKV_COMMON_REQUEST_LIMITS_H

#define SKV_MAX_STOP_TOKEN_IDS 64 /* stop.stop_token_ids per request (vLLM takes any number;
                                     the engine keeps them inline in each request) */
#define SKV_MAX_LOGPROBS       20 /* top alternatives per token, as OpenAI's top_logprobs */

#include <stdint.h>

/* 1 when a prompt of n_prompt tokens (>= 1) leaves room in a context of ctx tokens for
 * max_tokens generated ones (0: as many as fit, which must be at least one). */
static inline int skv_request_fits_context(int64_t n_prompt, int64_t max_tokens, int64_t ctx)
{
    return n_prompt >= 1 && n_prompt < ctx && max_tokens <= ctx - n_prompt;
}

/* KV blocks of block_size tokens that n_tokens tokens occupy. */
static inline int64_t skv_kv_blocks_for(int64_t n_tokens, int64_t block_size)
{
    return (n_tokens + block_size - 1) / block_size;
}

#endif /* SKV_COMMON_REQUEST_LIMITS_H */
