/*
 * model_load.c: builds a skv_model_t from an HF folder: config, weights (checked by name,
 * shape and dtype, fused into the layouts the forward pass wants) and workspace.
 *
 * Fusions done here, at load: q/k/v of a layer stacked into one [(nh + 2kvh) hd, H] weight;
 * gate/up into one [2F, H]; every later layer group's k/v_proj_swiftkv into ONE
 * [groups * 2 * kvh * hd, H] weight so SingleInputKV is a single GEMM.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "common/model/model_internal.h"
#include "common/model/safetensors.h"

skv_status_t skv_model_alloc_tensor(skv_model_t *m, skv_dtype_t dtype, int64_t rows, int64_t cols,
                                    skv_tensor_t *t)
{
    SKV_ASSERT(m->n_allocs < SKV_MODEL_MAX_ALLOCS);
    void *p = NULL;
    size_t bytes = (size_t)rows * (size_t)cols * skv_dtype_size(dtype);
    if (m->be->ops->alloc(m->be, bytes, &p) != SKV_STATUS_OK) {
        SKV_LOG_ERROR("cannot allocate %zu bytes of backend memory for the model", bytes);
        return SKV_STATUS_NO_MEMORY;
    }
    m->allocs[m->n_allocs++] = p;
    *t = skv_tensor_make(p, dtype, rows, cols);
    return SKV_STATUS_OK;
}

/* How a checkpoint tensor is split across TP ranks (model_tp.md). */
typedef enum {
    SKV_SPLIT_NONE = 0, /* whole on every rank (norms, embedding) */
    SKV_SPLIT_ROWS,     /* by output feature: this rank's heads / FFN slice */
    SKV_SPLIT_COLS,     /* by input feature (o_proj, down_proj): partial sums, all-reduced */
    SKV_SPLIT_VOCAB,    /* lm_head rows, ceil(V / tp) per rank, the last rank's zero-padded */
} skv_split_t;

/* The split of layer tensor `suffix` (self_attn.q_proj.weight, ...). */
static skv_split_t skv_layer_split(const char *suffix)
{
    if (strstr(suffix, "o_proj") != NULL || strstr(suffix, "down_proj") != NULL) {
        return SKV_SPLIT_COLS;
    }
    if (strstr(suffix, "_proj") != NULL) {
        return SKV_SPLIT_ROWS; /* q/k/v (original and _swiftkv), gate, up */
    }
    return SKV_SPLIT_NONE;
}

/* Uploads this rank's shard of t (full shape [rows * tp | V, cols] or [rows, cols * tp]) into
 * dst at row0. Column shards are gathered into a host buffer first (startup only). */
static skv_status_t skv_upload_shard(const skv_model_t *m, const skv_st_tensor_t *t,
                                     skv_split_t split, int64_t rows, int64_t cols,
                                     const skv_tensor_t *dst, int64_t row0)
{
    skv_backend_t *be = m->be;
    size_t es = skv_dtype_size(t->dtype), full_cols = (size_t)t->shape[1];
    if (split != SKV_SPLIT_COLS) {
        int64_t r0 = (int64_t)m->tp_rank * rows;
        int64_t n = t->shape[0] - r0 < rows ? t->shape[0] - r0 : rows; /* VOCAB: pad rows */
        if (n <= 0) {
            return SKV_STATUS_OK; /* this rank's lm_head rows are all padding */
        }
        const char *src = (const char *)t->data + (size_t)r0 * full_cols * es;
        return be->ops->weight_upload(be, dst, row0, src, t->dtype, n);
    }
    char *buf = skv_mallocn((size_t)(rows * cols), es);
    if (buf == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    for (int64_t r = 0; r < rows; r++) {
        memcpy(buf + (size_t)(r * cols) * es,
               (const char *)t->data + ((size_t)r * full_cols + (size_t)(m->tp_rank * cols)) * es,
               (size_t)cols * es);
    }
    skv_status_t status = be->ops->weight_upload(be, dst, row0, buf, t->dtype, rows);
    if (status == SKV_STATUS_OK) {
        status = be->ops->sync(be); /* buf is freed next */
    }
    skv_free(buf);
    return status;
}

/* Finds `name`, checks its shape is [rows, cols] (or [cols] for rows == 0: a vector) before
 * the TP split, and uploads it (this rank's shard of it) into dst at row0. Marks it used. */
static skv_status_t skv_load_tensor(const skv_model_t *m, skv_st_t *st, const char *name,
                                    int64_t rows, int64_t cols, skv_split_t split,
                                    const skv_tensor_t *dst, int64_t row0)
{
    skv_st_tensor_t *t = skv_st_find(st, name);
    if (t == NULL) {
        SKV_LOG_ERROR("checkpoint is missing tensor '%s'", name);
        return SKV_STATUS_FORMAT;
    }
    int64_t local_rows = rows, local_cols = cols;
    split = m->tp_size > 1 ? split : SKV_SPLIT_NONE;
    if (split == SKV_SPLIT_ROWS) {
        rows *= m->tp_size;
    } else if (split == SKV_SPLIT_COLS) {
        cols *= m->tp_size;
    } else if (split == SKV_SPLIT_VOCAB) {
        rows = m->cfg.vocab_size;
    }
    int ok = rows == 0 ? (t->n_dims == 1 && t->shape[0] == cols)
                       : (t->n_dims == 2 && t->shape[0] == rows && t->shape[1] == cols);
    if (!ok) {
        SKV_LOG_ERROR("tensor '%s' has shape [%lld, %lld] (%d dims); expected [%lld, %lld]", name,
                      (long long)t->shape[0], (long long)(t->n_dims > 1 ? t->shape[1] : 0),
                      t->n_dims, (long long)(rows ? rows : cols), (long long)(rows ? cols : 0));
        return SKV_STATUS_FORMAT;
    }
    t->used = 1;
    if (split != SKV_SPLIT_NONE) {
        return skv_upload_shard(m, t, split, local_rows, local_cols, dst, row0);
    }
    return m->be->ops->weight_upload(m->be, dst, row0, t->data, t->dtype, rows ? rows : 1);
}

/* Loads model.layers.{l}.<suffix> (this rank's shard of it) into dst at row0. */
static skv_status_t skv_load_layer_tensor(skv_model_t *m, skv_st_t *st, int32_t l,
                                          const char *suffix, int64_t rows, int64_t cols,
                                          const skv_tensor_t *dst, int64_t row0)
{
    char name[256];
    snprintf(name, sizeof(name), "model.layers.%d.%s", l, suffix);
    return skv_load_tensor(m, st, name, rows, cols, skv_layer_split(suffix), dst, row0);
}

#define SKV_WEIGHT_ALIGN 256

/* Carves one weight tensor out of the arena; weights share allocations per kind to stay under the cap. */
static skv_status_t skv_weight(skv_model_t *m, char **arena, int64_t rows, int64_t cols,
                               skv_tensor_t *t)
{
    /* Each weight starts on a 256-byte boundary so device kernels can use wide loads. */
    size_t bytes = (size_t)rows * (size_t)cols * skv_dtype_size(m->be->ops->weight_dtype);
    *t = skv_tensor_make(*arena, m->be->ops->weight_dtype, rows, cols);
    *arena += (bytes + SKV_WEIGHT_ALIGN - 1) & ~(size_t)(SKV_WEIGHT_ALIGN - 1);
    return SKV_STATUS_OK;
}

/* Elements of all weights this mode needs, so they come from ONE backend allocation, plus
 * slack for the per-tensor alignment (at most 8 tensors per layer and 8 globals). */
static size_t skv_weight_elems(const skv_model_t *m)
{
    const skv_model_config_t *c = &m->cfg;
    size_t H = (size_t)c->hidden_size, F = (size_t)c->intermediate_size;
    size_t q = (size_t)c->n_heads * c->head_dim, kv = (size_t)c->n_kv_heads * c->head_dim;
    size_t n = (size_t)c->vocab_size * H + H;
    n += c->tie_embeddings && m->tp_size <= 1 ? 0 : (size_t)m->lm_rows * H;
    for (int32_t l = 0; l < c->n_layers; l++) {
        n += 2 * H + q * H + 3 * F * H;
        n += (l < m->n_full_layers) ? (q + 2 * kv) * H : q * H;
    }
    if (m->swiftkv) {
        n += H + (size_t)m->n_kv_groups * 2 * kv * H;
    }
    return n + (8 * (size_t)c->n_layers + 8) * SKV_WEIGHT_ALIGN;
}

/* Carves layer l's weights out of the arena (the shapes this mode needs). */
static void skv_carve_layer(skv_model_t *m, int32_t l, char **arena)
{
    const skv_model_config_t *c = &m->cfg;
    int64_t H = c->hidden_size, F = c->intermediate_size;
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    skv_layer_t *L = &m->layers[l];
    skv_weight(m, arena, 1, H, &L->attn_norm);
    skv_weight(m, arena, 1, H, &L->ffn_norm);
    skv_weight(m, arena, H, q, &L->wo);
    skv_weight(m, arena, 2 * F, H, &L->w_gate_up);
    skv_weight(m, arena, H, F, &L->w_down);
    if (l < m->n_full_layers) {
        skv_weight(m, arena, q + 2 * kv, H, &L->wqkv);
    } else {
        skv_weight(m, arena, q, H, &L->wq_swiftkv);
    }
}

static skv_status_t skv_load_layer(skv_model_t *m, skv_st_t *st, int32_t l)
{
    const skv_model_config_t *c = &m->cfg;
    int64_t H = c->hidden_size, F = c->intermediate_size;
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    skv_layer_t *L = &m->layers[l];
    SKV_CHECK(skv_load_layer_tensor(m, st, l, "input_layernorm.weight", 0, H, &L->attn_norm, 0));
    SKV_CHECK(skv_load_layer_tensor(m, st, l, "post_attention_layernorm.weight", 0, H,
                                    &L->ffn_norm, 0));
    SKV_CHECK(skv_load_layer_tensor(m, st, l, "self_attn.o_proj.weight", H, q, &L->wo, 0));
    SKV_CHECK(skv_load_layer_tensor(m, st, l, "mlp.gate_proj.weight", F, H, &L->w_gate_up, 0));
    SKV_CHECK(skv_load_layer_tensor(m, st, l, "mlp.up_proj.weight", F, H, &L->w_gate_up, F));
    SKV_CHECK(skv_load_layer_tensor(m, st, l, "mlp.down_proj.weight", H, F, &L->w_down, 0));
    if (l < m->n_full_layers) {
        SKV_CHECK(skv_load_layer_tensor(m, st, l, "self_attn.q_proj.weight", q, H, &L->wqkv, 0));
        SKV_CHECK(skv_load_layer_tensor(m, st, l, "self_attn.k_proj.weight", kv, H, &L->wqkv, q));
        SKV_CHECK(skv_load_layer_tensor(m, st, l, "self_attn.v_proj.weight", kv, H, &L->wqkv,
                                        q + kv));
        return SKV_STATUS_OK;
    }
    SKV_CHECK(skv_load_layer_tensor(m, st, l, "self_attn.q_proj_swiftkv.weight", q, H,
                                    &L->wq_swiftkv, 0));
    int32_t g = (l - c->n_kv_layers) / c->kv_group;
    if ((l - c->n_kv_layers) % c->kv_group == 0) {
        SKV_CHECK(skv_load_layer_tensor(m, st, l, "self_attn.k_proj_swiftkv.weight", kv, H,
                                        &m->w_kv_swiftkv, (int64_t)g * 2 * kv));
        SKV_CHECK(skv_load_layer_tensor(m, st, l, "self_attn.v_proj_swiftkv.weight", kv, H,
                                        &m->w_kv_swiftkv, (int64_t)g * 2 * kv + kv));
    }
    return SKV_STATUS_OK;
}

/* Tensors a mode may leave unused: the other path's projections. Anything else is an error. */
static int skv_unused_allowed(const skv_model_t *m, const char *name)
{
    int layer = -1;
    char rest[128];
    if (strstr(name, "rotary_emb.inv_freq") != NULL) {
        return 1; /* old checkpoints store the RoPE buffer; we compute it */
    }
    if (strcmp(name, "model.norm_swiftkv.weight") == 0) {
        return !m->swiftkv;
    }
    if (sscanf(name, "model.layers.%d.self_attn.%127s", &layer, rest) != 2) {
        return 0;
    }
    if (strstr(rest, "_swiftkv.weight") != NULL) {
        return !m->swiftkv; /* the teacher run ignores the SwiftKV weights */
    }
    return m->swiftkv && layer >= m->n_full_layers &&
           (strcmp(rest, "q_proj.weight") == 0 || strcmp(rest, "k_proj.weight") == 0 ||
            strcmp(rest, "v_proj.weight") == 0);
}

static skv_status_t skv_check_unused(skv_model_t *m, skv_st_t *st)
{
    for (size_t i = 0; i < skv_st_count(st); i++) {
        skv_st_tensor_t *t = skv_st_at(st, i);
        if (!t->used && !skv_unused_allowed(m, t->name)) {
            SKV_LOG_ERROR("checkpoint has unexpected tensor '%s' for this config", t->name);
            return SKV_STATUS_FORMAT;
        }
    }
    return SKV_STATUS_OK;
}

/* Carves the model-wide weights out of the arena. */
static void skv_carve_globals(skv_model_t *m, char **arena)
{
    const skv_model_config_t *c = &m->cfg;
    int64_t H = c->hidden_size, V = c->vocab_size;
    skv_weight(m, arena, V, H, &m->embed);
    skv_weight(m, arena, 1, H, &m->norm);
    if (c->tie_embeddings && m->tp_size <= 1) {
        m->lm_head = m->embed;
    } else { /* a TP rank holds its own vocabulary slice, tied or not */
        skv_weight(m, arena, m->lm_rows, H, &m->lm_head);
    }
    if (m->swiftkv) {
        int64_t kv = (int64_t)c->n_kv_heads * c->head_dim;
        skv_weight(m, arena, 1, H, &m->norm_swiftkv);
        skv_weight(m, arena, (int64_t)m->n_kv_groups * 2 * kv, H, &m->w_kv_swiftkv);
    }
}

static skv_status_t skv_load_globals(skv_model_t *m, skv_st_t *st)
{
    const skv_model_config_t *c = &m->cfg;
    int64_t H = c->hidden_size, V = c->vocab_size;
    SKV_CHECK(
        skv_load_tensor(m, st, "model.embed_tokens.weight", V, H, SKV_SPLIT_NONE, &m->embed, 0));
    SKV_CHECK(skv_load_tensor(m, st, "model.norm.weight", 0, H, SKV_SPLIT_NONE, &m->norm, 0));
    if (!c->tie_embeddings || m->tp_size > 1) {
        const char *name = c->tie_embeddings ? "model.embed_tokens.weight" : "lm_head.weight";
        SKV_CHECK(skv_load_tensor(m, st, name, m->lm_rows, H, SKV_SPLIT_VOCAB, &m->lm_head, 0));
    }
    if (m->swiftkv) {
        SKV_CHECK(skv_load_tensor(m, st, "model.norm_swiftkv.weight", 0, H, SKV_SPLIT_NONE,
                                  &m->norm_swiftkv, 0));
    }
    return SKV_STATUS_OK;
}

/* Allocates the one weight arena and carves every weight of this mode out of it. */
static skv_status_t skv_alloc_weights(skv_model_t *m)
{
    skv_tensor_t arena_t;
    SKV_CHECK(skv_model_alloc_tensor(m, m->be->ops->weight_dtype, 1,
                                     (int64_t)skv_weight_elems(m), &arena_t));
    char *arena = arena_t.data;
    m->layers = skv_calloc((size_t)m->cfg.n_layers, sizeof(*m->layers));
    if (m->layers == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    skv_carve_globals(m, &arena);
    for (int32_t l = 0; l < m->cfg.n_layers; l++) {
        skv_carve_layer(m, l, &arena);
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_load_weights(skv_model_t *m, const char *dir)
{
    skv_st_t *st = NULL;
    SKV_CHECK(skv_st_open(dir, &st));
    skv_status_t status = skv_alloc_weights(m);
    if (status == SKV_STATUS_OK) {
        status = skv_load_globals(m, st);
    }
    for (int32_t l = 0; l < m->cfg.n_layers && status == SKV_STATUS_OK; l++) {
        status = skv_load_layer(m, st, l);
    }
    if (status == SKV_STATUS_OK) {
        status = skv_check_unused(m, st);
    }
    skv_st_close(st);
    return status;
}

static int64_t skv_max64(int64_t a, int64_t b)
{
    return a > b ? a : b;
}

static skv_status_t skv_alloc_workspace(skv_model_t *m)
{
    const skv_model_config_t *c = &m->cfg;
    skv_dtype_t act = m->be->ops->act_dtype;
    int64_t N = m->opts.max_batch_tokens, S = m->opts.max_seqs, H = c->hidden_size;
    int64_t q = (int64_t)c->n_heads * c->head_dim, kv = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t big = skv_max64(skv_max64(q + 2 * kv, 2LL * c->intermediate_size),
                            (int64_t)m->n_kv_groups * 2 * kv);
    SKV_CHECK(skv_model_alloc_tensor(m, act, N, H, &m->x));
    SKV_CHECK(skv_model_alloc_tensor(m, act, N, H, &m->h));
    SKV_CHECK(skv_model_alloc_tensor(m, act, N, big, &m->big));
    SKV_CHECK(skv_model_alloc_tensor(m, act, N, skv_max64(q, c->intermediate_size), &m->mid));
    SKV_CHECK(skv_model_alloc_tensor(m, act, N, H, &m->o));
    SKV_CHECK(skv_model_alloc_tensor(m, act, S, H, &m->xm));
    SKV_CHECK(skv_model_alloc_tensor(m, SKV_DTYPE_F32, S, m->lm_rows, &m->logits));
    if (m->tp_size > 1) { /* every rank's M x lm_rows logits, gathered */
        SKV_CHECK(skv_model_alloc_tensor(m, SKV_DTYPE_F32, 1, m->tp_size * S * m->lm_rows,
                                         &m->logits_all));
    }
    if (m->tp_size > 1 && m->tp_rank == 0) { /* the gathered rows in vocabulary order */
        SKV_CHECK(
            skv_model_alloc_tensor(m, SKV_DTYPE_F32, S, m->tp_size * m->lm_rows, &m->logits_v));
    }
    SKV_CHECK(skv_model_alloc_tensor(m, SKV_DTYPE_F32, 1, c->head_dim / 2, &m->inv_freq));
    float inv[256];
    skv_model_config_inv_freq(c, inv);
    SKV_CHECK(m->be->ops->copy_h2d(m->be, m->inv_freq.data, inv, sizeof(float) * c->head_dim / 2));
    /* ints: 3 per token (id, pos, slot) + per seq (rows, m_idx, m_pos, m_slot, m_rows) + two
     * block tables of max_seqs x max_blocks + per logit row 4 sampling parameters and the
     * token (+ tp_size gather indices under TP). */
    m->ints_cap = (size_t)(3 * N + 5 * (S + 1) + 2 * S * (int64_t)m->max_blocks + 5 * S +
                           (m->tp_size > 1 ? m->tp_size * S : 0));
    skv_tensor_t ints;
    SKV_CHECK(skv_model_alloc_tensor(m, SKV_DTYPE_I32, 1, (int64_t)m->ints_cap, &ints));
    m->d_ints = ints.data;
    m->h_ints = skv_mallocn(m->ints_cap, sizeof(int32_t));
    return m->h_ints ? SKV_STATUS_OK : SKV_STATUS_NO_MEMORY;
}

skv_status_t skv_model_setup(skv_model_t *m, const skv_model_opts_t *opts)
{
    static _Atomic uint64_t next_graph_id = 1;
    const skv_model_config_t *c = &m->cfg;
    if (opts->mode == SKV_MODEL_MODE_SWIFTKV && !c->swiftkv) {
        SKV_LOG_ERROR("SwiftKV mode requested but the checkpoint is a plain Llama");
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    if (opts->max_batch_tokens < 1 || opts->max_seqs < 1 || c->head_dim > 512) {
        SKV_LOG_ERROR("invalid model options: max_batch_tokens %d, max_seqs %d",
                      opts->max_batch_tokens, opts->max_seqs);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    /* A TP group's front has no backend yet: its ranks resolve the name, the front takes
     * rank 0's dtype (model_tp.c). */
    if (m->be != NULL) {
        SKV_CHECK(skv_kv_dtype_resolve(m->be->ops, opts->kv_dtype, &m->kv_dtype));
    }
    m->opts = *opts;
    m->opts.kv_dtype = NULL; /* borrowed for the load only; m->kv_dtype holds the choice */
    m->graph_id = next_graph_id++;
    m->swiftkv = c->swiftkv && opts->mode != SKV_MODEL_MODE_BASE;
    m->n_full_layers = m->swiftkv ? c->n_kv_layers : c->n_layers;
    m->n_kv_groups = m->swiftkv ? (c->n_layers - c->n_kv_layers) / c->kv_group : 0;
    m->n_cache_layers = m->n_full_layers + m->n_kv_groups;
    m->max_ctx = opts->max_context > 0 && opts->max_context < c->max_pos ? opts->max_context
                                                                          : c->max_pos;
    m->max_blocks = m->max_ctx; /* block size 1 is the worst case a pool can have */
    m->lm_rows = m->tp_size > 1 ? (c->vocab_size + m->tp_size - 1) / m->tp_size : c->vocab_size;
    return SKV_STATUS_OK;
}

skv_status_t skv_model_load(const char *dir, skv_backend_t *be, const skv_model_opts_t *opts,
                            skv_model_t **model_p)
{
    return skv_model_create_shard(dir, NULL, 0, be, opts, 0, 1, NULL, model_p);
}

skv_status_t skv_model_tp_check(const skv_model_config_t *c, int32_t tp_size)
{
    if (tp_size < 1) {
        SKV_LOG_ERROR("tensor parallel size %d: must be at least 1", tp_size);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    const struct {
        const char *what;
        int64_t n;
    } counts[] = {{"num_key_value_heads", c->n_kv_heads},
                  {"num_attention_heads", c->n_heads},
                  {"intermediate_size", c->intermediate_size}};
    for (size_t i = 0; i < sizeof(counts) / sizeof(counts[0]); i++) {
        if (counts[i].n % tp_size != 0) {
            SKV_LOG_ERROR("tensor parallel size %d does not divide %s = %lld: each rank must "
                          "hold whole heads; use a size that divides it",
                          tp_size, counts[i].what, (long long)counts[i].n);
            return SKV_STATUS_UNSUPPORTED;
        }
    }
    return SKV_STATUS_OK;
}

/* Turns the full config into rank `rank`'s slice of it (heads and FFN width divided). */
static skv_status_t skv_model_shard_config(skv_model_t *m, int32_t rank, int32_t tp_size)
{
    SKV_CHECK(skv_model_tp_check(&m->cfg, tp_size));
    SKV_ASSERT(rank >= 0 && rank < tp_size);
    m->tp_rank = rank;
    m->tp_size = tp_size;
    m->cfg.n_heads /= tp_size;
    m->cfg.n_kv_heads /= tp_size;
    m->cfg.intermediate_size /= tp_size;
    return SKV_STATUS_OK;
}

static skv_status_t skv_fill_random(skv_model_t *m, uint64_t seed);

skv_status_t skv_model_create_shard(const char *dir, const skv_model_config_t *cfg, uint64_t seed,
                                    skv_backend_t *be, const skv_model_opts_t *opts, int32_t rank,
                                    int32_t tp_size, skv_comm_t *comm, skv_model_t **model_p)
{
    skv_model_t *m = skv_calloc(1, sizeof(*m));
    if (m == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    m->be = be;
    m->comm = comm;
    skv_status_t status = SKV_STATUS_OK;
    if (dir != NULL) {
        SKV_CHECK_GOTO(skv_model_config_load(dir, &m->cfg), fail);
    } else {
        m->cfg = *cfg;
    }
    SKV_CHECK_GOTO(skv_model_shard_config(m, rank, tp_size), fail);
    SKV_CHECK_GOTO(skv_model_setup(m, opts), fail);
    if (dir != NULL) {
        SKV_CHECK_GOTO(skv_load_weights(m, dir), fail);
    } else {
        SKV_CHECK_GOTO(skv_alloc_weights(m), fail);
        SKV_CHECK_GOTO(skv_fill_random(m, seed), fail);
    }
    SKV_CHECK_GOTO(skv_alloc_workspace(m), fail);
    SKV_CHECK_GOTO(be->ops->sync(be), fail);
    *model_p = m;
    return SKV_STATUS_OK;
fail:
    skv_model_destroy(m);
    return status;
}

/* Random weights: fills t with skv_weight_hash_value(seed, i, scale, offset), on the backend
 * when it has weight_fill, else in host chunks of bf16 (exact: see ops.h) through
 * weight_upload. Both give identical values, so backends can be compared. */
static skv_status_t skv_fill_weight(skv_model_t *m, const skv_tensor_t *t, uint64_t seed,
                                    float scale, float offset)
{
    const skv_ops_t *ops = m->be->ops;
    if (ops->weight_fill != NULL) {
        return ops->weight_fill(m->be, t, seed, scale, offset);
    }
    int64_t chunk = (((int64_t)1 << 22) + t->cols - 1) / t->cols; /* ~4 Mi elements */
    chunk = chunk < t->rows ? chunk : t->rows; /* one-row fills of column shards stay small */
    uint16_t *buf = skv_mallocn((size_t)(chunk * t->cols), sizeof(uint16_t));
    skv_status_t status = buf ? SKV_STATUS_OK : SKV_STATUS_NO_MEMORY;
    for (int64_t r0 = 0; r0 < t->rows && status == SKV_STATUS_OK; r0 += chunk) {
        int64_t n = t->rows - r0 < chunk ? t->rows - r0 : chunk;
        for (int64_t i = 0; i < n * t->cols; i++) {
            uint64_t idx = (uint64_t)(r0 * t->cols + i);
            buf[i] = skv_f32_to_bf16(skv_weight_hash_value(seed, idx, scale, offset));
        }
        status = ops->weight_upload(m->be, t, r0, buf, SKV_DTYPE_BF16, n);
        if (status == SKV_STATUS_OK) {
            status = ops->sync(m->be); /* buf is reused by the next chunk */
        }
    }
    skv_free(buf);
    return status;
}

/* The power of two nearest 1 / (74 sqrt(fan_in)): the hash's integers k in [-128, 127] have
 * a standard deviation of about 74, so a linear layer's outputs keep unit scale. */
static float skv_random_scale(int64_t fan_in)
{
    return ldexpf(1.0f, -(int)lrint(log2(74.0 * sqrt((double)fan_in))));
}

/* skv_weight_hash_value hashes seed + (idx + 1) * golden, so the value at index idx + k under
 * seed equals the value at idx under seed + k * golden: a run of a shard that is contiguous in
 * the full tensor is one fill with a shifted seed. test_tp checks shards against TP=1. */
static uint64_t skv_seed_at(uint64_t seed, int64_t k)
{
    return seed + (uint64_t)k * 0x9E3779B97F4A7C15ULL;
}

/* Row-split shard run: rows [row0, row0 + n) of t hold rows [full_row0, ...) of the full
 * tensor (same column count). */
static skv_status_t skv_fill_rows(skv_model_t *m, const skv_tensor_t *t, int64_t row0, int64_t n,
                                  uint64_t seed, float scale, int64_t full_row0)
{
    if (n <= 0) {
        return SKV_STATUS_OK; /* a vocabulary slice that is all padding */
    }
    skv_tensor_t v = skv_tensor_rows(t, row0, n);
    return skv_fill_weight(m, &v, skv_seed_at(seed, full_row0 * t->cols), scale, 0.0f);
}

/* Column-split shard: t holds columns [col0, col0 + t->cols) of a full tensor of full_cols
 * columns, so every row is its own contiguous run. */
static skv_status_t skv_fill_cols(skv_model_t *m, const skv_tensor_t *t, uint64_t seed, float scale,
                                  int64_t full_cols, int64_t col0)
{
    for (int64_t r = 0; r < t->rows; r++) {
        skv_tensor_t v = skv_tensor_rows(t, r, 1);
        SKV_CHECK(skv_fill_weight(m, &v, skv_seed_at(seed, r * full_cols + col0), scale, 0.0f));
    }
    return SKV_STATUS_OK;
}

/* Fills this rank's shards with exactly the values the full random model holds there (same
 * seeds in the same order as skv_fill_random; fused tensors filled run by run). */
static skv_status_t skv_fill_random_shard(skv_model_t *m, uint64_t seed)
{
    const skv_model_config_t *c = &m->cfg; /* this rank's slice */
    int64_t tp = m->tp_size, r = m->tp_rank, H = c->hidden_size, lr = m->lm_rows;
    int64_t ql = (int64_t)c->n_heads * c->head_dim, kvl = (int64_t)c->n_kv_heads * c->head_dim;
    int64_t Fl = c->intermediate_size, Q = ql * tp, KV = kvl * tp, F = Fl * tp;
    int64_t lm_n = c->vocab_size - r * lr < lr ? c->vocab_size - r * lr : lr;
    uint64_t id = seed * 1000003ULL, embed_id = id;
    const float norm_scale = 1.0f / 128.0f, hs = skv_random_scale(H);
    SKV_CHECK(skv_fill_weight(m, &m->embed, id++, 1.0f / 128.0f, 0.0f));
    SKV_CHECK(skv_fill_weight(m, &m->norm, id++, norm_scale, 1.0f));
    if (c->tie_embeddings) { /* the embedding's rows, in this rank's own lm_head */
        SKV_CHECK(skv_fill_rows(m, &m->lm_head, 0, lm_n, embed_id, 1.0f / 128.0f, r * lr));
    } else {
        SKV_CHECK(skv_fill_rows(m, &m->lm_head, 0, lm_n, id++, hs, r * lr));
    }
    if (m->swiftkv) {
        SKV_CHECK(skv_fill_weight(m, &m->norm_swiftkv, id++, norm_scale, 1.0f));
        uint64_t s = id++;
        for (int64_t g = 0; g < m->n_kv_groups; g++) { /* per group: K rows, then V rows */
            SKV_CHECK(skv_fill_rows(m, &m->w_kv_swiftkv, g * 2 * kvl, kvl, s, hs, g * 2 * KV + r * kvl));
            SKV_CHECK(skv_fill_rows(m, &m->w_kv_swiftkv, g * 2 * kvl + kvl, kvl, s, hs,
                                    g * 2 * KV + KV + r * kvl));
        }
    }
    for (int32_t l = 0; l < c->n_layers; l++) {
        skv_layer_t *L = &m->layers[l];
        SKV_CHECK(skv_fill_weight(m, &L->attn_norm, id++, norm_scale, 1.0f));
        SKV_CHECK(skv_fill_weight(m, &L->ffn_norm, id++, norm_scale, 1.0f));
        uint64_t s = id++;
        if (l < m->n_full_layers) { /* q, k, v rows of this rank's heads */
            SKV_CHECK(skv_fill_rows(m, &L->wqkv, 0, ql, s, hs, r * ql));
            SKV_CHECK(skv_fill_rows(m, &L->wqkv, ql, kvl, s, hs, Q + r * kvl));
            SKV_CHECK(skv_fill_rows(m, &L->wqkv, ql + kvl, kvl, s, hs, Q + KV + r * kvl));
        } else {
            SKV_CHECK(skv_fill_rows(m, &L->wq_swiftkv, 0, ql, s, hs, r * ql));
        }
        SKV_CHECK(skv_fill_cols(m, &L->wo, id++, skv_random_scale(Q), Q, r * ql));
        s = id++;
        SKV_CHECK(skv_fill_rows(m, &L->w_gate_up, 0, Fl, s, hs, r * Fl));
        SKV_CHECK(skv_fill_rows(m, &L->w_gate_up, Fl, Fl, s, hs, F + r * Fl));
        SKV_CHECK(skv_fill_cols(m, &L->w_down, id++, skv_random_scale(F), F, r * Fl));
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_fill_random(skv_model_t *m, uint64_t seed)
{
    if (m->tp_size > 1) {
        return skv_fill_random_shard(m, seed);
    }
    const skv_model_config_t *c = &m->cfg;
    uint64_t id = seed * 1000003ULL;
    const float norm_scale = 1.0f / 128.0f; /* norm weights 1 + k/128, in [0, 2) */
    SKV_CHECK(skv_fill_weight(m, &m->embed, id++, 1.0f / 128.0f, 0.0f));
    SKV_CHECK(skv_fill_weight(m, &m->norm, id++, norm_scale, 1.0f));
    if (!c->tie_embeddings) {
        SKV_CHECK(skv_fill_weight(m, &m->lm_head, id++, skv_random_scale(c->hidden_size), 0.0f));
    }
    if (m->swiftkv) {
        SKV_CHECK(skv_fill_weight(m, &m->norm_swiftkv, id++, norm_scale, 1.0f));
        SKV_CHECK(skv_fill_weight(m, &m->w_kv_swiftkv, id++, skv_random_scale(c->hidden_size),
                                  0.0f));
    }
    for (int32_t l = 0; l < c->n_layers; l++) {
        skv_layer_t *L = &m->layers[l];
        const skv_tensor_t *proj = l < m->n_full_layers ? &L->wqkv : &L->wq_swiftkv;
        SKV_CHECK(skv_fill_weight(m, &L->attn_norm, id++, norm_scale, 1.0f));
        SKV_CHECK(skv_fill_weight(m, &L->ffn_norm, id++, norm_scale, 1.0f));
        SKV_CHECK(skv_fill_weight(m, proj, id++, skv_random_scale(proj->cols), 0.0f));
        SKV_CHECK(skv_fill_weight(m, &L->wo, id++, skv_random_scale(L->wo.cols), 0.0f));
        SKV_CHECK(skv_fill_weight(m, &L->w_gate_up, id++, skv_random_scale(L->w_gate_up.cols),
                                  0.0f));
        SKV_CHECK(skv_fill_weight(m, &L->w_down, id++, skv_random_scale(L->w_down.cols), 0.0f));
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_model_create_random(const skv_model_config_t *cfg, skv_backend_t *be,
                                     const skv_model_opts_t *opts, uint64_t seed,
                                     skv_model_t **model_p)
{
    return skv_model_create_shard(NULL, cfg, seed, be, opts, 0, 1, NULL, model_p);
}

void skv_model_destroy(skv_model_t *m)
{
    if (m == NULL) {
        return;
    }
    if (m->group_ops != NULL) {
        m->group_ops->destroy(m); /* a TP group's front: frees the ranks and m */
        return;
    }
    for (int i = m->n_allocs - 1; i >= 0; i--) {
        m->be->ops->free(m->be, m->allocs[i]);
    }
    skv_free(m->h_ints);
    skv_model_sample_free(m);
    skv_free(m->layers);
    skv_free(m);
}

const skv_model_config_t *skv_model_config(const skv_model_t *m)
{
    return &m->cfg;
}

int skv_model_is_swiftkv(const skv_model_t *m)
{
    return m->swiftkv;
}

int32_t skv_model_max_context(const skv_model_t *m)
{
    return m->max_ctx;
}

int32_t skv_model_max_seqs(const skv_model_t *m)
{
    return m->opts.max_seqs;
}

int32_t skv_model_max_batch_tokens(const skv_model_t *m)
{
    return m->opts.max_batch_tokens;
}

void skv_model_kv_layout(const skv_model_t *m, int32_t block_size, skv_kv_layout_t *layout)
{
    memset(layout, 0, sizeof(*layout));
    layout->dtype = m->kv_dtype;
    layout->block_size = block_size;
    /* A rank's cfg holds its own heads; a TP front describes rank 0's pool. */
    layout->n_kv_heads = m->group_ops != NULL ? m->cfg.n_kv_heads / m->tp_size : m->cfg.n_kv_heads;
    layout->head_dim = m->cfg.head_dim;
    layout->n_layers = m->cfg.n_layers;
    layout->n_kv_layers = m->n_full_layers;
    layout->kv_group = m->swiftkv ? m->cfg.kv_group : 1;
    layout->n_cache_layers = m->n_cache_layers;
    layout->tp_rank = m->tp_rank;
    layout->tp_size = m->tp_size > 1 ? m->tp_size : 1;
}

skv_status_t skv_model_kv_pool_create(skv_model_t *m, int32_t block_size, int64_t n_blocks,
                                      skv_kv_pool_t **pool_p)
{
    if (m->group_ops != NULL) {
        return m->group_ops->kv_pool_create(m, block_size, n_blocks, pool_p);
    }
    skv_kv_layout_t layout;
    skv_model_kv_layout(m, block_size, &layout);
    return skv_kv_pool_create(&layout, n_blocks, m->be, pool_p);
}

void skv_model_opts_env(skv_model_opts_t *opts)
{
    const char *v = getenv("SKV_NO_GRAPHS");
    if (v != NULL && v[0] != '\0' && strcmp(v, "0") != 0) {
        opts->no_graphs = 1;
    }
}
