/*
 * model_config.h: the model hyper-parameters read from an HF model folder.
 *
 * Reads config.json (LlamaForCausalLM, model_type "llama"; LlamaSwiftKVForCausalLM,
 * model_type "llama_swiftkv" with num_key_value_layers / key_value_group_size) and
 * generation_config.json when present. Validates every relation the forward pass relies on
 * (heads divide, head_dim even, (L - Lk) % G == 0, ...) and names the offending field.
 */
#ifndef SKV_COMMON_MODEL_CONFIG_H
#define SKV_COMMON_MODEL_CONFIG_H

#include <stdint.h>

#include "base/status.h"

typedef enum {
    SKV_ROPE_DEFAULT = 0, /* plain RoPE, no scaling */
    SKV_ROPE_LINEAR,
    SKV_ROPE_LLAMA3,
} skv_rope_type_t;

#define SKV_MAX_EOS_IDS 8

typedef struct {
    int32_t vocab_size;
    int32_t hidden_size;
    int32_t intermediate_size;
    int32_t n_layers;    /* L */
    int32_t n_heads;
    int32_t n_kv_heads;
    int32_t head_dim;
    int32_t max_pos;     /* max_position_embeddings: the context limit we enforce */
    float rms_eps;
    double rope_theta;
    skv_rope_type_t rope_type;
    double rope_factor;
    double rope_low_freq_factor;
    double rope_high_freq_factor;
    int32_t rope_orig_max_pos;
    int tie_embeddings;
    int swiftkv;         /* the checkpoint carries SwiftKV weights */
    int32_t n_kv_layers; /* Lk: layers 0..Lk-1 are ordinary (== L for plain Llama) */
    int32_t kv_group;    /* G: AcrossKV group size (1 = none) */
    int32_t bos_id;      /* -1 when unknown */
    int32_t eos_ids[SKV_MAX_EOS_IDS];
    int32_t n_eos;
    /* generation_config.json defaults (0 / -1 when absent) */
    float gen_temperature;
    float gen_top_p;
    int32_t gen_top_k;
} skv_model_config_t;

/* Loads and validates dir/config.json (+ dir/generation_config.json when present) into *cfg.
 * NOT_FOUND when config.json is missing; FORMAT for bad JSON or a missing/invalid field;
 * UNSUPPORTED for an architecture or feature we do not run (attention_bias, another act). */
skv_status_t skv_model_config_load(const char *dir, skv_model_config_t *cfg);

/* Fills cfg with a named architecture without reading files: "llama3-8b" (Llama-3.1-8B),
 * "llama3-8b-swiftkv" (the same with SwiftKV, Lk = 16, G = 1), "tiny" and "tiny-swiftkv"
 * (vocab 1024, H 512, 4 layers, 8 heads / 2 kv heads of 64, Lk = 2; for tests).
 * NOT_FOUND for another name. */
skv_status_t skv_model_config_preset(const char *name, skv_model_config_t *cfg);

/* Computes RoPE inverse frequencies [head_dim / 2] for cfg, scaling included. */
void skv_model_config_inv_freq(const skv_model_config_t *cfg, float *inv_freq);

/* Returns non-zero when token is one of the model's end-of-sequence ids. */
int skv_model_config_is_eos(const skv_model_config_t *cfg, int32_t token);

#endif /* SKV_COMMON_MODEL_CONFIG_H */
