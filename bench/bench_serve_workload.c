/*
 * bench_serve_workload.c: the prompts skv_bench_serve sends, and its seeded RNG.
 *
 * Random prompts are token ids drawn uniformly from a vocabulary range, so a prompt's length
 * is exact and no tokenizer is needed; lengths are fixed or uniform in [len*(1-r), len*(1+r)]
 * (vLLM's --random-range-ratio). A workload file is JSONL, one request per line:
 *   {"prompt": "text", "max_tokens": 64}
 *   {"prompt_token_ids": [128000, 9906, 1917], "max_tokens": 16}
 * The RNG is xoshiro256** seeded through splitmix64: the same seed gives the same prompts and
 * arrivals on every host.
 */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench/bench_serve.h"

static uint64_t skv_bench_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t skv_bench_rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t skv_bench_rng_next(skv_bench_rng_t *rng)
{
    uint64_t *s = rng->s;
    uint64_t out = skv_bench_rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = skv_bench_rotl(s[3], 45);
    return out;
}

void skv_bench_rng_seed(skv_bench_rng_t *rng, uint64_t seed)
{
    for (int i = 0; i < 4; i++) {
        rng->s[i] = skv_bench_splitmix64(&seed);
    }
}

double skv_bench_rng_uniform(skv_bench_rng_t *rng)
{
    return (double)(skv_bench_rng_next(rng) >> 11) * 0x1.0p-53;
}

int64_t skv_bench_rng_range(skv_bench_rng_t *rng, int64_t lo, int64_t hi)
{
    uint64_t span = (uint64_t)(hi - lo) + 1;
    return span == 0 ? (int64_t)skv_bench_rng_next(rng)
                     : lo + (int64_t)(skv_bench_rng_next(rng) % span);
}

/* A length drawn uniformly from [len*(1-r), len*(1+r)], at least 1. */
static int64_t skv_bench_draw_len(skv_bench_rng_t *rng, int len, double r)
{
    int64_t lo = (int64_t)floor(len * (1.0 - r));
    int64_t hi = (int64_t)floor(len * (1.0 + r));
    int64_t v = skv_bench_rng_range(rng, lo, hi < lo ? lo : hi);
    return v < 1 ? 1 : v;
}

skv_status_t skv_bench_prompts_random(const skv_bench_config_t *cfg, uint64_t seed, size_t n,
                                      skv_bench_prompt_t **prompts_p)
{
    skv_bench_prompt_t *p = calloc(n ? n : 1, sizeof(*p));
    skv_bench_rng_t rng;
    if (p == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    skv_bench_rng_seed(&rng, seed);
    for (size_t i = 0; i < n; i++) {
        p[i].n_ids = (size_t)skv_bench_draw_len(&rng, cfg->input_len, cfg->range_ratio);
        p[i].max_tokens = (uint32_t)skv_bench_draw_len(&rng, cfg->output_len, cfg->range_ratio);
        p[i].ids = malloc(p[i].n_ids * sizeof(int32_t));
        if (p[i].ids == NULL) {
            skv_bench_prompts_free(p, n);
            return SKV_STATUS_NO_MEMORY;
        }
        for (size_t k = 0; k < p[i].n_ids; k++) {
            p[i].ids[k] = (int32_t)skv_bench_rng_range(&rng, cfg->vocab_lo, cfg->vocab_hi - 1);
        }
    }
    *prompts_p = p;
    return SKV_STATUS_OK;
}

/* Copies a JSON array of token ids into out->ids. OK, FORMAT or NO_MEMORY. */
static skv_status_t skv_bench_json_ids(const json_t *arr, skv_bench_prompt_t *out)
{
    size_t n = json_array_size(arr);
    if (n == 0) {
        return SKV_STATUS_FORMAT;
    }
    out->ids = malloc(n * sizeof(int32_t));
    if (out->ids == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    out->n_ids = n;
    for (size_t i = 0; i < n; i++) {
        const json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX) {
            return SKV_STATUS_FORMAT;
        }
        out->ids[i] = (int32_t)json_integer_value(v);
    }
    return SKV_STATUS_OK;
}

/* Fills out from one workload object. OK, FORMAT (why in *why) or NO_MEMORY. */
static skv_status_t skv_bench_json_prompt(const json_t *obj, int default_max,
                                          skv_bench_prompt_t *out, const char **why)
{
    const json_t *text = json_object_get(obj, "prompt");
    const json_t *ids = json_object_get(obj, "prompt_token_ids");
    const json_t *max = json_object_get(obj, "max_tokens");
    *why = "needs \"prompt\" (string) or \"prompt_token_ids\" (non-empty array of ids >= 0)";
    out->max_tokens = (uint32_t)default_max;
    if (max != NULL) {
        if (!json_is_integer(max) || json_integer_value(max) < 1 ||
            json_integer_value(max) > UINT32_MAX) {
            *why = "\"max_tokens\" must be an integer >= 1";
            return SKV_STATUS_FORMAT;
        }
        out->max_tokens = (uint32_t)json_integer_value(max);
    }
    if (json_is_string(text)) {
        out->text = strdup(json_string_value(text));
        return out->text != NULL ? SKV_STATUS_OK : SKV_STATUS_NO_MEMORY;
    }
    return json_is_array(ids) ? skv_bench_json_ids(ids, out) : SKV_STATUS_FORMAT;
}

/* Appends one prompt slot to *p (capacity doubling); returns the new slot or NULL. */
static skv_bench_prompt_t *skv_bench_prompts_grow(skv_bench_prompt_t **p, size_t n, size_t *cap)
{
    if (n == *cap) {
        size_t cap2 = *cap ? *cap * 2 : 64;
        skv_bench_prompt_t *q = realloc(*p, cap2 * sizeof(*q));
        if (q == NULL) {
            return NULL;
        }
        *p = q;
        *cap = cap2;
    }
    memset(&(*p)[n], 0, sizeof(**p));
    return &(*p)[n];
}

/* Parses one non-blank line into slot; prints the reason on a FORMAT error. */
static skv_status_t skv_bench_parse_line(const char *path, size_t lineno, const char *line,
                                         int default_max, skv_bench_prompt_t *slot)
{
    json_error_t jerr;
    const char *why = "is not a JSON object";
    json_t *obj = json_loads(line, JSON_REJECT_DUPLICATES, &jerr);
    skv_status_t st = json_is_object(obj) ? skv_bench_json_prompt(obj, default_max, slot, &why)
                                          : SKV_STATUS_FORMAT;
    if (st == SKV_STATUS_FORMAT) {
        fprintf(stderr, "skv_bench_serve: %s:%zu: %s%s%s\n", path, lineno, why,
                obj == NULL ? ": " : "", obj == NULL ? jerr.text : "");
    }
    json_decref(obj);
    return st;
}

static int skv_bench_blank(const char *s)
{
    return s[strspn(s, " \t\r\n")] == '\0';
}

skv_status_t skv_bench_prompts_load(const skv_bench_config_t *cfg, const char *path,
                                    skv_bench_prompt_t **prompts_p, size_t *n_p)
{
    FILE *f = fopen(path, "r");
    skv_bench_prompt_t *p = NULL, *slot;
    size_t n = 0, cap = 0, lineno = 0, linecap = 0;
    char *line = NULL;
    skv_status_t st = SKV_STATUS_OK;
    if (f == NULL) {
        fprintf(stderr, "skv_bench_serve: cannot open %s: %s\n", path, strerror(errno));
        return SKV_STATUS_NOT_FOUND;
    }
    while (st == SKV_STATUS_OK && getline(&line, &linecap, f) >= 0) {
        lineno++;
        if (skv_bench_blank(line)) {
            continue;
        }
        slot = skv_bench_prompts_grow(&p, n, &cap);
        st = slot == NULL ? SKV_STATUS_NO_MEMORY
                          : skv_bench_parse_line(path, lineno, line, cfg->output_len, slot);
        n += slot != NULL; /* a half-filled slot is freed with the rest */
    }
    free(line);
    fclose(f);
    if (st == SKV_STATUS_OK && n == 0) {
        fprintf(stderr, "skv_bench_serve: %s has no requests\n", path);
        st = SKV_STATUS_FORMAT;
    }
    if (st != SKV_STATUS_OK) {
        skv_bench_prompts_free(p, n);
        return st;
    }
    *prompts_p = p;
    *n_p = n;
    return SKV_STATUS_OK;
}

/* Deep-copies one prompt. OK or NO_MEMORY (dst then holds what was copied). */
static skv_status_t skv_bench_prompt_copy(const skv_bench_prompt_t *src, skv_bench_prompt_t *dst)
{
    *dst = (skv_bench_prompt_t){.n_ids = src->n_ids, .max_tokens = src->max_tokens};
    if (src->text != NULL) {
        dst->text = strdup(src->text);
        return dst->text != NULL ? SKV_STATUS_OK : SKV_STATUS_NO_MEMORY;
    }
    dst->ids = malloc(src->n_ids * sizeof(int32_t));
    if (dst->ids == NULL) {
        dst->n_ids = 0;
        return SKV_STATUS_NO_MEMORY;
    }
    memcpy(dst->ids, src->ids, src->n_ids * sizeof(int32_t));
    return SKV_STATUS_OK;
}

skv_status_t skv_bench_prompts_cycle(const skv_bench_prompt_t *src, size_t n_src, size_t first,
                                     size_t n, skv_bench_prompt_t **prompts_p)
{
    skv_bench_prompt_t *p = calloc(n ? n : 1, sizeof(*p));
    if (p == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    for (size_t i = 0; i < n; i++) {
        if (skv_bench_prompt_copy(&src[(first + i) % n_src], &p[i]) != SKV_STATUS_OK) {
            skv_bench_prompts_free(p, i + 1);
            return SKV_STATUS_NO_MEMORY;
        }
    }
    *prompts_p = p;
    return SKV_STATUS_OK;
}

void skv_bench_prompts_free(skv_bench_prompt_t *prompts, size_t n)
{
    if (prompts == NULL) {
        return;
    }
    for (size_t i = 0; i < n; i++) {
        free(prompts[i].ids);
        free(prompts[i].text);
    }
    free(prompts);
}
