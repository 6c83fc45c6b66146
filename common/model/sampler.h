/*
 * sampler.h: next-token selection from host logits, one sampler per request.
 *
 * Order of processing (the same as common serving engines): presence/frequency penalties over
 * the tokens generated so far -> temperature -> top-k -> top-p -> min-p -> draw. Temperature
 * 0 is greedy (argmax after penalties). Every request has its own RNG seeded from its seed, so
 * a seeded request draws the same tokens alone or in any batch. Log-probabilities reported
 * are of the unfiltered, unpenalised model distribution (log_softmax of the raw logits).
 *
 * Every filter keeps a set {id : scaled logit >= threshold}: ids tied with the boundary value
 * are all kept. The draw takes one uniform u from the RNG (24 bits, so it is exact as a
 * float) and returns the first id, in id order, at which the running sum of the kept
 * probabilities exceeds u. That is the contract of the backend sample op (kernels/ops.h), so
 * a request without penalties, min-p or logprobs can have its token picked on the backend
 * with u from skv_sampler_draw_row and get exactly the token skv_sampler_next would pick.
 */
#ifndef SKV_COMMON_SAMPLER_H
#define SKV_COMMON_SAMPLER_H

#include <stddef.h>
#include <stdint.h>

#include "common/request_limits.h"
#include "base/status.h"

#define SKV_SAMPLER_MAX_LOGPROBS SKV_MAX_LOGPROBS

typedef struct {
    float temperature;       /* 0 = greedy; must be >= 0 */
    int32_t top_k;           /* 0 = off */
    float top_p;             /* (0, 1]; 1 = off */
    float min_p;             /* [0, 1); 0 = off */
    float presence_penalty;  /* [-2, 2] */
    float frequency_penalty; /* [-2, 2] */
    uint64_t seed;
    int32_t n_logprobs;      /* top-n logprobs to report, 0..SKV_SAMPLER_MAX_LOGPROBS */
} skv_sampling_params_t;

/* Fills p with the defaults: greedy, no filters, no penalties, seed 0. */
void skv_sampling_params_default(skv_sampling_params_t *p);

/* Checks ranges; INVALID_ARGUMENT with a message naming the field in *why (static string). */
skv_status_t skv_sampling_params_validate(const skv_sampling_params_t *p, int32_t vocab,
                                          const char **why);

typedef struct {
    int32_t token;
    float logprob;                             /* of the chosen token */
    int32_t n_top;
    int32_t top_ids[SKV_SAMPLER_MAX_LOGPROBS]; /* most likely first */
    float top_logprobs[SKV_SAMPLER_MAX_LOGPROBS];
} skv_sample_t;

typedef struct skv_sampler skv_sampler_t;

/* Creates a sampler for one request over a vocabulary of `vocab` ids. Takes a copy of p.
 * NO_MEMORY on allocation failure. */
skv_status_t skv_sampler_create(const skv_sampling_params_t *p, int32_t vocab,
                                skv_sampler_t **sampler_p);
void skv_sampler_destroy(skv_sampler_t *s);

/* Picks the next token from logits[vocab] (not modified) and records it for the penalties.
 * Only the request's own thread calls it. */
skv_status_t skv_sampler_next(skv_sampler_t *s, const float *logits, skv_sample_t *out);

/* Records a token as generated without sampling (e.g. a first token decided elsewhere). */
skv_status_t skv_sampler_accept(skv_sampler_t *s, int32_t token);

/* Continues a request whose first token was sampled by another process with the same
 * parameters: records the token and advances the RNG past the draw that produced it, so a
 * seeded request gives the same tokens split across workers as in one process. */
skv_status_t skv_sampler_resume(skv_sampler_t *s, int32_t first_token);

/* The sampling parameters of one logit row for a pick outside the sampler (the backend sample
 * op, kernels/ops.h, or skv_sample_row_pick): temperature (0 = greedy), top_k (0 = off),
 * top_p ((0, 1]; 1 = off) and u, the request's uniform draw in [0, 1) (0 when greedy). */
typedef struct {
    float temperature;
    int32_t top_k;
    float top_p;
    float u;
} skv_sample_row_t;

/* Whether s's next token may be picked outside the sampler from the raw logits: no presence
 * or frequency penalty, no min-p and no logprobs. */
int skv_sampler_row_ok(const skv_sampler_t *s);

/* Fills row with s's parameters and draws u from s's RNG exactly as skv_sampler_next would
 * consume it (one draw when temperature > 0, none when greedy), so the seeded stream is the
 * same whichever path picks the token. The caller then records the picked token with
 * skv_sampler_accept. Only the request's own thread calls it. */
void skv_sampler_draw_row(skv_sampler_t *s, skv_sample_row_t *row);

/* Bytes of scratch skv_sample_row_pick needs for a vocabulary of vocab ids. */
size_t skv_sample_row_scratch_bytes(int32_t vocab);

/* Picks a token from logits[vocab] with row's parameters on the host: the same code as
 * skv_sampler_next without penalties or min-p, so the same token for the same u (the host
 * twin of the backend sample op). row must be in range (skv_sample_row_check). scratch:
 * caller-owned, skv_sample_row_scratch_bytes(vocab) bytes, 8-byte aligned. Any thread. */
int32_t skv_sample_row_pick(const float *logits, int32_t vocab, const skv_sample_row_t *row,
                            void *scratch);

/* INVALID_ARGUMENT (*why names the field, static) unless temperature is in [0, 100], top_k
 * >= 0, top_p in (0, 1] and u in [0, 1). */
skv_status_t skv_sample_row_check(const skv_sample_row_t *row, const char **why);

#endif /* SKV_COMMON_SAMPLER_H */
