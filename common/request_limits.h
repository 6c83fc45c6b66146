/*
 * request_limits.h: the per-request limits of the public and internal APIs, written once. The
 * router refuses a request beyond them before any worker sees it; workers and the engine apply
 * the same numbers (a request the router let through is never refused later, after tokens
 * were streamed). Constants only: any layer may include it.
 */
#ifndef SKV_COMMON_REQUEST_LIMITS_H
#define SKV_COMMON_REQUEST_LIMITS_H

#define SKV_MAX_STOP_TOKEN_IDS 64 /* stop.stop_token_ids per request (vLLM takes any number;
                                     the engine keeps them inline in each request) */
#define SKV_MAX_LOGPROBS       20 /* top alternatives per token, as OpenAI's top_logprobs */

#endif /* SKV_COMMON_REQUEST_LIMITS_H */
