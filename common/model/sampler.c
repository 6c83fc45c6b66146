/*
 * sampler.c: the per-request sampler: penalties, seeded draws, logprobs, generated-token
 * counts. The pick itself (temperature, top-k/top-p/min-p thresholds, the draw) is the one
 * implementation in kernels/sample_math.h, which the CPU sample op calls too: the contract of
 * the backend sample op (kernels/ops.h) is this sampler's behaviour. Candidates ((id, logit)
 * pairs) serve the top-n logprobs (a partial selection, then a sort of n). Generated-token
 * counts are a small open-addressing table, so memory is O(generated), not O(vocab), per
 * request.
 */
#include "common/model/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "kernels/sample_math.h"

typedef struct {
    int32_t id;
    float logit;
} skv_cand_t;

struct skv_sampler {
    skv_sampling_params_t p;
    int32_t vocab;
    uint64_t rng;
    skv_cand_t *cand; /* [vocab] scratch */
    float *work;      /* [vocab] scratch logits */
    int32_t *count_ids; /* open-addressing table of generated ids (-1 = empty) */
    int32_t *counts;
    int32_t count_cap;  /* power of two */
    int32_t n_counted;
};

void skv_sampling_params_default(skv_sampling_params_t *p)
{
    memset(p, 0, sizeof(*p));
    p->top_p = 1.0f;
}

skv_status_t skv_sampling_params_validate(const skv_sampling_params_t *p, int32_t vocab,
                                          const char **why)
{
    *why = NULL;
    if (!(p->temperature >= 0.0f) || p->temperature > 100.0f) {
        *why = "temperature must be in [0, 100]";
    } else if (p->top_k < 0) {
        *why = "top_k must be >= 0";
    } else if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) {
        *why = "top_p must be in (0, 1]";
    } else if (!(p->min_p >= 0.0f && p->min_p < 1.0f)) {
        *why = "min_p must be in [0, 1)";
    } else if (!(fabsf(p->presence_penalty) <= 2.0f) || !(fabsf(p->frequency_penalty) <= 2.0f)) {
        *why = "presence_penalty and frequency_penalty must be in [-2, 2]";
    } else if (p->n_logprobs < 0 || p->n_logprobs > SKV_SAMPLER_MAX_LOGPROBS ||
               p->n_logprobs > vocab) {
        *why = "logprobs must be in [0, 20]";
    }
    return *why ? SKV_STATUS_INVALID_ARGUMENT : SKV_STATUS_OK;
}

/* splitmix64: small, fast, and good enough for sampling; one state word per request. */
static uint64_t skv_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1) with 24 random bits: exact as a float, so the draw handed to the backend
 * sample op (f32 parameters) is the very value the host draw uses. */
static double skv_rng_uniform(uint64_t *state)
{
    return (double)(skv_rng_next(state) >> 40) * (1.0 / 16777216.0);
}

skv_status_t skv_sampler_create(const skv_sampling_params_t *p, int32_t vocab,
                                skv_sampler_t **sampler_p)
{
    skv_sampler_t *s = skv_calloc(1, sizeof(*s));
    if (s == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    s->p = *p;
    s->vocab = vocab;
    s->rng = p->seed;
    s->cand = skv_mallocn((size_t)vocab, sizeof(*s->cand));
    s->work = skv_mallocn((size_t)vocab, sizeof(float));
    s->count_cap = 64;
    s->count_ids = skv_mallocn((size_t)s->count_cap, sizeof(int32_t));
    s->counts = skv_calloc((size_t)s->count_cap, sizeof(int32_t));
    if (s->cand == NULL || s->work == NULL || s->count_ids == NULL || s->counts == NULL) {
        skv_sampler_destroy(s);
        return SKV_STATUS_NO_MEMORY;
    }
    memset(s->count_ids, 0xff, sizeof(int32_t) * (size_t)s->count_cap);
    *sampler_p = s;
    return SKV_STATUS_OK;
}

void skv_sampler_destroy(skv_sampler_t *s)
{
    if (s == NULL) {
        return;
    }
    skv_free(s->cand);
    skv_free(s->work);
    skv_free(s->count_ids);
    skv_free(s->counts);
    skv_free(s);
}

static uint32_t skv_count_slot(const skv_sampler_t *s, int32_t id)
{
    uint32_t h = (uint32_t)id * 2654435761u;
    uint32_t mask = (uint32_t)s->count_cap - 1;
    uint32_t i = h & mask;
    while (s->count_ids[i] != -1 && s->count_ids[i] != id) {
        i = (i + 1) & mask;
    }
    return i;
}

static skv_status_t skv_count_grow(skv_sampler_t *s)
{
    int32_t old_cap = s->count_cap;
    int32_t *old_ids = s->count_ids, *old_counts = s->counts;
    s->count_cap = old_cap * 2;
    s->count_ids = skv_mallocn((size_t)s->count_cap, sizeof(int32_t));
    s->counts = skv_calloc((size_t)s->count_cap, sizeof(int32_t));
    if (s->count_ids == NULL || s->counts == NULL) {
        skv_free(s->count_ids);
        skv_free(s->counts);
        s->count_ids = old_ids;
        s->counts = old_counts;
        s->count_cap = old_cap;
        return SKV_STATUS_NO_MEMORY;
    }
    memset(s->count_ids, 0xff, sizeof(int32_t) * (size_t)s->count_cap);
    for (int32_t i = 0; i < old_cap; i++) {
        if (old_ids[i] != -1) {
            uint32_t j = skv_count_slot(s, old_ids[i]);
            s->count_ids[j] = old_ids[i];
            s->counts[j] = old_counts[i];
        }
    }
    skv_free(old_ids);
    skv_free(old_counts);
    return SKV_STATUS_OK;
}

skv_status_t skv_sampler_accept(skv_sampler_t *s, int32_t token)
{
    if (2 * (s->n_counted + 1) > s->count_cap) {
        SKV_CHECK(skv_count_grow(s));
    }
    uint32_t i = skv_count_slot(s, token);
    if (s->count_ids[i] == -1) {
        s->count_ids[i] = token;
        s->n_counted++;
    }
    s->counts[i]++;
    return SKV_STATUS_OK;
}

/* work = logits with presence/frequency penalties applied to generated tokens. */
static void skv_apply_penalties(skv_sampler_t *s, const float *logits)
{
    memcpy(s->work, logits, sizeof(float) * (size_t)s->vocab);
    if (s->p.presence_penalty == 0.0f && s->p.frequency_penalty == 0.0f) {
        return;
    }
    for (int32_t i = 0; i < s->count_cap; i++) {
        int32_t id = s->count_ids[i];
        if (id >= 0 && id < s->vocab) {
            s->work[id] -= s->p.presence_penalty + s->p.frequency_penalty * (float)s->counts[i];
        }
    }
}

static int32_t skv_argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++) {
        if (x[i] > x[best]) {
            best = i; /* ties: lowest id, like torch.argmax */
        }
    }
    return best;
}

static int skv_cand_desc(const void *a, const void *b)
{
    const skv_cand_t *x = a, *y = b;
    if (x->logit != y->logit) {
        return x->logit < y->logit ? 1 : -1;
    }
    return x->id - y->id;
}

/* Moves the k largest candidates to the front (unordered); average O(n). */
static void skv_select_top(skv_cand_t *c, int32_t n, int32_t k)
{
    int32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        float pivot = c[(lo + hi) / 2].logit;
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (c[i].logit > pivot) {
                i++;
            }
            while (c[j].logit < pivot) {
                j--;
            }
            if (i <= j) {
                skv_cand_t t = c[i];
                c[i++] = c[j];
                c[j--] = t;
            }
        }
        if (k - 1 <= j) {
            hi = j;
        } else if (k - 1 >= i) {
            lo = i;
        } else {
            break;
        }
    }
}

/* Fills the chosen token's logprob and the top-n list from the raw logits. */
static void skv_logprobs(skv_sampler_t *s, const float *logits, skv_sample_t *out)
{
    double max = logits[skv_argmax(logits, s->vocab)], z = 0.0;
    for (int32_t i = 0; i < s->vocab; i++) {
        z += exp((double)logits[i] - max);
    }
    double lz = log(z) + max;
    out->logprob = (float)((double)logits[out->token] - lz);
    out->n_top = s->p.n_logprobs;
    if (out->n_top == 0) {
        return;
    }
    for (int32_t i = 0; i < s->vocab; i++) {
        s->cand[i].id = i;
        s->cand[i].logit = logits[i];
    }
    skv_select_top(s->cand, s->vocab, out->n_top);
    qsort(s->cand, (size_t)out->n_top, sizeof(skv_cand_t), skv_cand_desc);
    for (int32_t i = 0; i < out->n_top; i++) {
        out->top_ids[i] = s->cand[i].id;
        out->top_logprobs[i] = (float)((double)s->cand[i].logit - lz);
    }
}

skv_status_t skv_sampler_next(skv_sampler_t *s, const float *logits, skv_sample_t *out)
{
    memset(out, 0, sizeof(*out));
    skv_apply_penalties(s, logits);
    if (s->p.temperature == 0.0f) {
        out->token = skv_argmax(s->work, s->vocab);
    } else { /* work is scaled in place; cand's memory serves as the sort buffer */
        out->token = skv_sample_pick(s->work, s->vocab, s->p.temperature, s->p.top_k, s->p.top_p,
                                     s->p.min_p, skv_rng_uniform(&s->rng), s->work,
                                     (float *)s->cand);
    }
    skv_logprobs(s, logits, out);
    return skv_sampler_accept(s, out->token);
}

skv_status_t skv_sampler_resume(skv_sampler_t *s, int32_t first_token)
{
    if (s->p.temperature != 0.0f) {
        (void)skv_rng_uniform(&s->rng); /* exactly one draw per sampled token (skv_pick) */
    }
    return skv_sampler_accept(s, first_token);
}

int skv_sampler_row_ok(const skv_sampler_t *s)
{
    return s->p.presence_penalty == 0.0f && s->p.frequency_penalty == 0.0f && s->p.min_p == 0.0f &&
           s->p.n_logprobs == 0;
}

void skv_sampler_draw_row(skv_sampler_t *s, skv_sample_row_t *row)
{
    row->temperature = s->p.temperature;
    row->top_k = s->p.top_k;
    row->top_p = s->p.top_p;
    /* The same single draw skv_sampler_next makes for a sampled token; greedy makes none. */
    row->u = s->p.temperature != 0.0f ? (float)skv_rng_uniform(&s->rng) : 0.0f;
}

size_t skv_sample_row_scratch_bytes(int32_t vocab)
{
    return 2 * (size_t)vocab * sizeof(float);
}

int32_t skv_sample_row_pick(const float *logits, int32_t vocab, const skv_sample_row_t *row,
                            void *scratch)
{
    float *s = scratch;
    return skv_sample_pick(logits, vocab, row->temperature, row->top_k, row->top_p, 0.0f, row->u,
                           s, s + vocab);
}

skv_status_t skv_sample_row_check(const skv_sample_row_t *row, const char **why)
{
    *why = NULL;
    if (!(row->temperature >= 0.0f && row->temperature <= 100.0f)) {
        *why = "temperature must be in [0, 100]";
    } else if (row->top_k < 0) {
        *why = "top_k must be >= 0";
    } else if (!(row->top_p > 0.0f && row->top_p <= 1.0f)) {
        *why = "top_p must be in (0, 1]";
    } else if (!(row->u >= 0.0f && row->u < 1.0f)) {
        *why = "u must be in [0, 1)";
    }
    return *why ? SKV_STATUS_INVALID_ARGUMENT : SKV_STATUS_OK;
}
