/*
 * make_model.h: what skv_make_model's two files share: the model options (filled from presets
 * and flags by skv_make_model.c) and the weight writer (make_model_weights.c). Tool-internal;
 * nothing outside tools/ includes it.
 */
#ifndef SKV_TOOLS_MAKE_MODEL_H
#define SKV_TOOLS_MAKE_MODEL_H

#include <jansson.h>
#include <stdint.h>

#include "base/status.h"

#define SKV_MM_PATH_MAX    4096
#define SKV_MM_MAX_EOS     8
#define SKV_MM_MAX_THREADS 64

typedef enum {
    SKV_MM_DTYPE_F32 = 0,
    SKV_MM_DTYPE_BF16,
    SKV_MM_DTYPE_F16,
} skv_mm_dtype_t;

typedef enum {
    SKV_MM_ROPE_NONE = 0,
    SKV_MM_ROPE_LLAMA3,
    SKV_MM_ROPE_LINEAR,
} skv_mm_rope_t;

/* Every model flag; presets fill it, command-line overrides follow. */
typedef struct {
    const char *out_dir;
    int64_t hidden, n_layers, n_heads, n_kv_heads, head_dim, intermediate, vocab, max_pos;
    int64_t n_kv_layers; /* Lk: layers with their own K/V; 0 = plain Llama */
    int64_t group;       /* G: AcrossKV group size */
    int tie;
    skv_mm_rope_t rope;
    double rope_factor, rope_theta, rope_low_freq, rope_high_freq;
    int64_t rope_orig_max;
    double rms_eps;
    skv_mm_dtype_t dtype;
    int64_t shard_mb; /* 0 = single model.safetensors */
    uint64_t seed;
    double init_std;
    const char *tokenizer_dir; /* NULL = default rule (tiny tokenizer when vocab is 1024) */
    int64_t bos_id;
    int64_t eos_ids[SKV_MM_MAX_EOS];
    int n_eos;
    int n_threads;
} skv_mm_opts_t;

/* Writes the safetensors file(s) of the model o describes into o->out_dir (which exists),
 * removing weight files of an earlier run first, plus model.safetensors.index.json when
 * sharded. Streams: memory use is one chunk buffer, whatever the model size. Returns IO,
 * NO_MEMORY (logged). Single caller thread; it starts and joins its own worker threads. */
skv_status_t skv_mm_weights_write(const skv_mm_opts_t *o);

/* Writes root as dir/name: 2-space indent, insertion order, trailing newline. IO on failure. */
skv_status_t skv_mm_json_write(const char *dir, const char *name, const json_t *root);

/* "float32" | "bfloat16" | "float16": the torch_dtype name of a stored dtype. */
const char *skv_mm_dtype_torch_name(skv_mm_dtype_t dtype);

#endif /* SKV_TOOLS_MAKE_MODEL_H */
