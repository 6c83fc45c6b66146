/*
 * model_internal.h: the model struct shared by model_load.c (weights, workspace) and
 * model.c (forward). Not part of the public API.
 */
#ifndef SKV_COMMON_MODEL_INTERNAL_H
#define SKV_COMMON_MODEL_INTERNAL_H

#include "common/model.h"

typedef struct {
    skv_tensor_t attn_norm;  /* [1, H] input_layernorm */
    skv_tensor_t wqkv;       /* [(nh + 2 kvh) * hd, H]: q, k, v rows stacked (base path) */
    skv_tensor_t wq_swiftkv; /* [nh * hd, H]: SwiftKV query weight of layers >= Lk */
    skv_tensor_t wo;         /* [H, nh * hd] */
    skv_tensor_t ffn_norm;   /* [1, H] post_attention_layernorm */
    skv_tensor_t w_gate_up;  /* [2 F, H]: gate rows, then up rows */
    skv_tensor_t w_down;     /* [H, F] */
} skv_layer_t;

#define SKV_MODEL_MAX_ALLOCS 16

struct skv_model {
    skv_model_config_t cfg;
    skv_model_opts_t opts;
    skv_backend_t *be;
    int swiftkv;            /* running the SwiftKV path */
    int32_t n_full_layers;  /* layers run for every token: Lk (SwiftKV) or L */
    int32_t n_kv_groups;    /* (L - Lk) / G later cache layers (SwiftKV), else 0 */
    int32_t n_cache_layers;
    int32_t max_ctx;
    int32_t max_blocks;     /* block-table columns a sequence can need at block size 1 */

    /* weights (backend memory, weight dtype) */
    skv_tensor_t embed;        /* [V, H] */
    skv_tensor_t norm;         /* [1, H] model.norm */
    skv_tensor_t lm_head;      /* [V, H]; aliases embed when tied */
    skv_tensor_t norm_swiftkv; /* [1, H] */
    skv_tensor_t w_kv_swiftkv; /* [n_kv_groups * 2 * kvh * hd, H]: per group K rows, V rows */
    skv_layer_t *layers;       /* [L] */
    skv_tensor_t inv_freq;     /* f32 [1, hd / 2] */

    /* workspace (backend memory, activation dtype), rows = max_batch_tokens unless noted */
    skv_tensor_t x;      /* [N, H] residual stream */
    skv_tensor_t h;      /* [N, H] normed input of a sub-block */
    skv_tensor_t big;    /* [N, max(qkv, 2F, kv_swiftkv)] GEMM outputs */
    skv_tensor_t mid;    /* [N, max(nh * hd, F)] attention output / SwiGLU output */
    skv_tensor_t o;      /* [N, H] projection back to the residual width */
    skv_tensor_t xm;     /* [max_seqs, H] residual of the logit rows */
    skv_tensor_t logits; /* f32 [max_seqs, V] */

    /* integer metadata: host staging and its backend copy, uploaded once per step */
    int32_t *h_ints;
    void *d_ints;
    size_t ints_cap; /* elements */

    void *allocs[SKV_MODEL_MAX_ALLOCS]; /* backend allocations to free */
    int n_allocs;
};

/* Allocates a backend tensor [rows, cols] of dtype owned by the model. */
skv_status_t skv_model_alloc_tensor(skv_model_t *m, skv_dtype_t dtype, int64_t rows, int64_t cols,
                                    skv_tensor_t *t);

#endif /* SKV_COMMON_MODEL_INTERNAL_H */
