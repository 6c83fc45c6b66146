/*
 * model_internal.h: the model struct shared by model_load.c (weights, workspace) and
 * model.c (forward). Not part of the public API.
 */
#ifndef SKV_COMMON_MODEL_INTERNAL_H
#define SKV_COMMON_MODEL_INTERNAL_H

#include "common/model/model.h"
#include "kernels/comm.h"

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

/* A TP group's front model (common/model/model_tp.c) runs steps on its rank threads through these
 * hooks, so skv_model itself does not link the backends that the group creates. */
typedef struct {
    /* logits != NULL: host logits as skv_model_forward; else rows/tokens as
     * skv_model_forward_sample (rank 0 picks on its backend). */
    skv_status_t (*forward)(skv_model_t *m, skv_kv_pool_t *pool, const skv_seq_step_t *seqs,
                            int32_t n_seqs, float *logits, const skv_sample_row_t *rows,
                            int32_t *tokens);
    skv_status_t (*kv_pool_create)(skv_model_t *m, int32_t block_size, int64_t n_blocks,
                                   skv_kv_pool_t **pool_p);
    void (*destroy)(skv_model_t *m);
} skv_model_group_ops_t;

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
    skv_dtype_t kv_dtype;   /* KV pool dtype (opts.kv_dtype resolved on the backend) */
    uint64_t graph_id;      /* unique per model in the process (never reused, unlike its
                             * address): names its recorded decode graphs */

    /* Tensor parallelism (common/model/model_tp.md). A rank model (tp_size > 1) holds its slice:
     * cfg.n_heads, n_kv_heads and intermediate_size are this rank's, the weights below are
     * its shards, and comm sums the o_proj / down_proj partial outputs. A group's front
     * model has the full cfg, no weights, and group_ops set. Alone: tp_size 0, comm NULL. */
    int32_t tp_rank;
    int32_t tp_size;
    int32_t lm_rows;  /* lm_head rows held here: V alone, ceil(V / tp_size) on a rank */
    skv_comm_t *comm; /* borrowed */
    const skv_model_group_ops_t *group_ops;
    void *group;

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
    skv_tensor_t logits; /* f32 [max_seqs, lm_rows] */
    /* TP only: f32 [1, tp_size * max_seqs * lm_rows], every rank's logits all-gathered */
    skv_tensor_t logits_all;
    /* TP rank 0 only: f32 [max_seqs, tp_size * lm_rows], logits_all's rows reordered into
     * vocabulary order for the sample op (columns past the vocabulary are padding) */
    skv_tensor_t logits_v;

    /* backend sampling, views into d_ints set by a step that stages sampling rows (valid
     * until the next step): params f32 [M, 4] (temperature, top_k, top_p, u), tokens i32
     * [1, M], and under TP order i32 [1, tp_size * M] (gather_rows indices of logits_v) */
    skv_tensor_t sample_params;
    skv_tensor_t sample_tokens;
    skv_tensor_t sample_order;
    /* host fallback of skv_model_forward_sample (backend without a sample op), allocated on
     * first use: logits [max_seqs, vocab] and skv_sample_row_pick's scratch */
    float *h_pick_logits;
    void *h_pick_scratch;

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

/* Checks opts against cfg and fills the derived fields (mode, layer counts, context). */
skv_status_t skv_model_setup(skv_model_t *m, const skv_model_opts_t *opts);

/* UNSUPPORTED (logged, naming the count) unless tp_size divides the attention heads, the KV
 * heads and the FFN width of c. */
skv_status_t skv_model_tp_check(const skv_model_config_t *c, int32_t tp_size);

/* Creates rank `rank` of a tp_size split on be: loaded from dir, or (dir NULL) the shard of
 * the random model skv_model_create_random(cfg, seed) would make. q/k/v, gate/up and the
 * SwiftKV K/V rows of this rank's heads (split by output), o_proj and down_proj columns (split
 * by input), lm_head rows [rank * ceil(V / tp_size), ...) zero-padded, embedding and norms
 * whole. Borrows be and comm (NULL when tp_size is 1; otherwise every step all-reduces twice
 * per layer through it). Errors of skv_model_load plus UNSUPPORTED from skv_model_tp_check. */
skv_status_t skv_model_create_shard(const char *dir, const skv_model_config_t *cfg, uint64_t seed,
                                    skv_backend_t *be, const skv_model_opts_t *opts, int32_t rank,
                                    int32_t tp_size, skv_comm_t *comm, skv_model_t **model_p);

/* One step's ops on this model's slice against the KV view kv (its rank's memory of pool),
 * without validation (the caller validated the batch) and without copying logits out: they
 * stay in m->logits, M rows of lm_rows. rows (NULL: none), one per logit row, are staged in
 * backend memory with the step's metadata for skv_model_sample_local (sample_params,
 * sample_tokens, and sample_order on a TP rank 0). */
skv_status_t skv_model_forward_local(skv_model_t *m, skv_kv_pool_t *pool, const skv_kv_view_t *kv,
                                     const skv_seq_step_t *seqs, int32_t n_seqs,
                                     const skv_sample_row_t *rows);

/* Runs the backend's sample op over logits f32 [M, V] (backend memory, M = the last step's
 * logit rows) with the rows that step staged, and queues the copy of the M tokens to the host
 * array tokens; the caller syncs the backend before reading them. Device errors. */
skv_status_t skv_model_sample_local(skv_model_t *m, const skv_tensor_t *logits, int32_t *tokens);

/* Frees the host fallback buffers of skv_model_forward_sample (either kind of model). */
void skv_model_sample_free(skv_model_t *m);

#endif /* SKV_COMMON_MODEL_INTERNAL_H */
