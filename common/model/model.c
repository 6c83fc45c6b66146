/*
 * model.c: the backend-blind forward step (Llama-3 and SwiftKV), reading top to bottom like
 * SWIFTKV.md. Host-side work per step: validate the batch, lay out integer metadata (token
 * ids, positions, cache slots, block tables, logit rows) in one staging buffer and upload it
 * with one copy; everything else is ops calls.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "common/model/model_internal.h"

/* Per-step views into the uploaded integer metadata. */
typedef struct {
    int32_t n_rows;          /* N */
    int32_t n_logit_rows;    /* M */
    skv_tensor_t tokens;     /* i32 [1, N] */
    skv_attn_meta_t meta_n;  /* all N rows */
    skv_attn_meta_t meta_m;  /* the M logit rows (separate metadata, never the N-row one) */
    skv_tensor_t logit_rows; /* i32 [1, M]: row index of each logit row within N */
} skv_step_t;

/* Rejects a batch the model cannot run, before anything touches the cache. */
static skv_status_t skv_step_validate(const skv_model_t *m, const skv_kv_pool_t *pool,
                                      const skv_seq_step_t *seqs, int32_t n_seqs)
{
    int64_t n_tokens = 0;
    int32_t bs = skv_kv_pool_layout(pool)->block_size;
    if (n_seqs < 1 || n_seqs > m->opts.max_seqs) {
        SKV_LOG_ERROR("step has %d sequences; the model takes 1..%d", n_seqs, m->opts.max_seqs);
        return SKV_STATUS_OUT_OF_RANGE;
    }
    for (int32_t s = 0; s < n_seqs; s++) {
        const skv_seq_step_t *q = &seqs[s];
        if (q->n_tokens < 1 || q->pos0 < 0 || (int64_t)q->pos0 + q->n_tokens > m->max_ctx) {
            SKV_LOG_ERROR("sequence %d: positions [%d, %lld) exceed the context of %d", s,
                          q->pos0, (long long)q->pos0 + q->n_tokens, m->max_ctx);
            return SKV_STATUS_OUT_OF_RANGE;
        }
        if ((int64_t)q->n_blocks * bs < (int64_t)q->pos0 + q->n_tokens) {
            SKV_LOG_ERROR("sequence %d: %d blocks of %d do not cover %d tokens", s, q->n_blocks,
                          bs, q->pos0 + q->n_tokens);
            return SKV_STATUS_INVALID_ARGUMENT;
        }
        for (int32_t i = 0; i < q->n_tokens; i++) {
            if (q->tokens[i] < 0 || q->tokens[i] >= m->cfg.vocab_size) {
                SKV_LOG_ERROR("sequence %d: token id %d outside the vocabulary of %d", s,
                              q->tokens[i], m->cfg.vocab_size);
                return SKV_STATUS_INVALID_ARGUMENT;
            }
        }
        for (int32_t b = 0; b < q->n_blocks; b++) {
            SKV_ASSERT(q->blocks[b] >= 0 && q->blocks[b] < skv_kv_pool_n_blocks(pool));
        }
        n_tokens += q->n_tokens;
    }
    if (n_tokens > m->opts.max_batch_tokens) {
        SKV_LOG_ERROR("step has %lld tokens; the budget is %d", (long long)n_tokens,
                      m->opts.max_batch_tokens);
        return SKV_STATUS_OUT_OF_RANGE;
    }
    return SKV_STATUS_OK;
}

/* Carves n ints out of the staging buffer and returns the matching backend view. */
static skv_tensor_t skv_step_ints(skv_model_t *m, size_t *used, int32_t **host, int64_t rows,
                                  int64_t cols)
{
    size_t n = (size_t)(rows * cols);
    SKV_ASSERT(*used + n <= m->ints_cap);
    *host = m->h_ints + *used;
    skv_tensor_t t = skv_tensor_make((int32_t *)m->d_ints + *used, SKV_DTYPE_I32, rows, cols);
    *used += n;
    return t;
}

/* Carves one attention metadata set (n_seqs sequences, n_rows query rows) out of the staging
 * buffer and returns its host arrays for the caller to fill. */
static void skv_step_meta(skv_model_t *m, size_t *used, skv_attn_meta_t *a, int32_t n_seqs,
                          int32_t n_rows, int32_t max_blocks, int32_t **pos, int32_t **slot,
                          int32_t **rows, int32_t **bt)
{
    a->row_pos = skv_step_ints(m, used, pos, 1, n_rows);
    a->row_slot = skv_step_ints(m, used, slot, 1, n_rows);
    a->seq_rows = skv_step_ints(m, used, rows, 1, n_seqs + 1);
    a->block_table = skv_step_ints(m, used, bt, n_seqs, max_blocks);
    a->n_seqs = n_seqs;
    a->n_rows = n_rows;
    a->max_blocks = max_blocks;
    a->max_ctx = 0;
    a->h_seq_rows = *rows;
    a->h_row_pos = *pos;
}

/* Fills the N-row metadata (token ids, positions, slots, rows per seq, block table). */
static void skv_step_fill_n(skv_model_t *m, skv_step_t *st, size_t *used, int32_t bs,
                            const skv_seq_step_t *seqs, int32_t n_seqs, int32_t max_blocks)
{
    int32_t *tok, *pos, *slot, *rows, *bt;
    int32_t N = st->n_rows;
    st->tokens = skv_step_ints(m, used, &tok, 1, N);
    skv_attn_meta_t *a = &st->meta_n;
    skv_step_meta(m, used, a, n_seqs, N, max_blocks, &pos, &slot, &rows, &bt);
    int32_t r = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        const skv_seq_step_t *q = &seqs[s];
        rows[s] = r;
        memset(bt + (size_t)s * max_blocks, 0, sizeof(int32_t) * (size_t)max_blocks);
        /* A table may hold blocks reserved ahead; only those covering the context matter. */
        int32_t nb = q->n_blocks < max_blocks ? q->n_blocks : max_blocks;
        memcpy(bt + (size_t)s * max_blocks, q->blocks, sizeof(int32_t) * (size_t)nb);
        for (int32_t i = 0; i < q->n_tokens; i++, r++) {
            int32_t p = q->pos0 + i;
            tok[r] = q->tokens[i];
            pos[r] = p;
            slot[r] = q->blocks[p / bs] * bs + p % bs;
        }
        int32_t ctx = q->pos0 + q->n_tokens;
        a->max_ctx = ctx > a->max_ctx ? ctx : a->max_ctx;
    }
    rows[n_seqs] = r;
}

/* Fills the M-row metadata: one row per sequence that wants logits (its chunk's last token). */
static void skv_step_fill_m(skv_model_t *m, skv_step_t *st, size_t *used,
                            const skv_seq_step_t *seqs, int32_t n_seqs, int32_t max_blocks)
{
    int32_t M = st->n_logit_rows;
    int32_t *idx, *pos, *slot, *rows, *bt;
    const int32_t *n_pos = st->meta_n.h_row_pos;
    const int32_t *n_slot = m->h_ints + ((int32_t *)st->meta_n.row_slot.data - (int32_t *)m->d_ints);
    const int32_t *n_bt = m->h_ints + ((int32_t *)st->meta_n.block_table.data - (int32_t *)m->d_ints);
    st->logit_rows = skv_step_ints(m, used, &idx, 1, M);
    skv_attn_meta_t *a = &st->meta_m;
    skv_step_meta(m, used, a, M, M, max_blocks, &pos, &slot, &rows, &bt);
    int32_t k = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        if (!seqs[s].want_logits) {
            continue;
        }
        int32_t last = st->meta_n.h_seq_rows[s + 1] - 1;
        idx[k] = last;
        pos[k] = n_pos[last];
        slot[k] = n_slot[last];
        rows[k] = k;
        memcpy(bt + (size_t)k * max_blocks, n_bt + (size_t)s * max_blocks,
               sizeof(int32_t) * (size_t)max_blocks);
        a->max_ctx = pos[k] + 1 > a->max_ctx ? pos[k] + 1 : a->max_ctx;
        k++;
    }
    rows[M] = M;
}

/* Stages the sampling rows of the M logit rows after the step's metadata: params f32 [M, 4]
 * (bit copies into the i32 staging buffer; top_k >= vocab written as 0, off), room for the M
 * tokens, and under TP the gather_rows order that puts rank-major gathered logits into
 * vocabulary order: row i * tp + k of logits_v <- row k * M + i of logits_all. */
static void skv_step_fill_sample(skv_model_t *m, size_t *used, const skv_sample_row_t *rows,
                                 int32_t M)
{
    int32_t *p, *tok, *ord, V = m->cfg.vocab_size, tp = m->tp_size;
    skv_tensor_t pv = skv_step_ints(m, used, &p, M, 4);
    m->sample_params = skv_tensor_make(pv.data, SKV_DTYPE_F32, M, 4);
    for (int32_t k = 0; k < M; k++) {
        const skv_sample_row_t *r = &rows[k];
        float v[4] = {r->temperature, r->top_k > 0 && r->top_k < V ? (float)r->top_k : 0.0f,
                      r->top_p, r->u};
        memcpy(p + (size_t)k * 4, v, sizeof(v));
    }
    m->sample_tokens = skv_step_ints(m, used, &tok, 1, M);
    if (tp > 1) {
        m->sample_order = skv_step_ints(m, used, &ord, 1, (int64_t)tp * M);
        for (int32_t i = 0; i < M; i++) {
            for (int32_t k = 0; k < tp; k++) {
                ord[i * tp + k] = k * M + i;
            }
        }
    }
}

/* Lays out and uploads all integer metadata of a step with one host-to-backend copy.
 * ctx_cap > 0 (graph steps): block tables are ctx_cap / block_size wide whatever the
 * sequences hold, and max_ctx reads ctx_cap, so the layout and every op's host-side launch
 * decisions depend only on (n_seqs, ctx_cap). */
static skv_status_t skv_step_prepare(skv_model_t *m, const skv_kv_pool_t *pool,
                                     const skv_seq_step_t *seqs, int32_t n_seqs, int32_t ctx_cap,
                                     const skv_sample_row_t *rows, skv_step_t *st)
{
    int32_t max_blocks = 1, bs = skv_kv_pool_layout(pool)->block_size;
    memset(st, 0, sizeof(*st));
    for (int32_t s = 0; s < n_seqs; s++) {
        st->n_rows += seqs[s].n_tokens;
        st->n_logit_rows += seqs[s].want_logits ? 1 : 0;
        max_blocks = seqs[s].n_blocks > max_blocks ? seqs[s].n_blocks : max_blocks;
    }
    if (ctx_cap > 0) {
        max_blocks = (ctx_cap + bs - 1) / bs;
    }
    size_t used = 0;
    skv_step_fill_n(m, st, &used, bs, seqs, n_seqs, max_blocks);
    skv_step_fill_m(m, st, &used, seqs, n_seqs, max_blocks);
    if (rows != NULL) { /* after the metadata: a graph step's layout does not move */
        skv_step_fill_sample(m, &used, rows, st->n_logit_rows);
    }
    if (ctx_cap > 0) {
        st->meta_n.max_ctx = st->meta_m.max_ctx = ctx_cap;
    }
    return m->be->ops->copy_h2d(m->be, m->d_ints, m->h_ints, used * sizeof(int32_t));
}

/* Tensor parallelism: o holds this rank's partial o_proj / down_proj output (its heads' or
 * FFN slice's share of the sum); one all-reduce makes it the full output on every rank. */
static skv_status_t skv_tp_reduce(skv_model_t *m, const skv_tensor_t *o)
{
    if (m->comm == NULL) {
        return SKV_STATUS_OK;
    }
    SKV_ASSERT(o->ld == o->cols);
    return m->comm->ops->all_reduce_sum(m->comm, o->data, (size_t)(o->rows * o->cols), o->dtype);
}

/* Attention sub-block of layer l over R rows whose normed input is in h. Leaves the
 * projected output in o. SwiftKV later layers (swiftkv_q) take q from q_proj_swiftkv and read
 * K/V that SingleInputKV already wrote; ordinary layers project q/k/v and write K/V. */
static skv_status_t skv_attn_block(skv_model_t *m, int32_t l, int64_t R, const skv_kv_view_t *kv,
                                   const skv_attn_meta_t *meta, const skv_tensor_t *pos)
{
    const skv_ops_t *ops = m->be->ops;
    const skv_model_config_t *c = &m->cfg;
    const skv_layer_t *L = &m->layers[l];
    int64_t qw = (int64_t)c->n_heads * c->head_dim, kvw = (int64_t)c->n_kv_heads * c->head_dim;
    skv_tensor_t h = skv_tensor_rows(&m->h, 0, R);
    skv_tensor_t big = skv_tensor_rows(&m->big, 0, R);
    skv_tensor_t attn = skv_tensor_cols(&m->mid, 0, qw);
    attn = skv_tensor_rows(&attn, 0, R);
    skv_tensor_t o = skv_tensor_rows(&m->o, 0, R);
    int swiftkv_q = l >= m->n_full_layers;
    int32_t cache_layer = swiftkv_q ? m->n_full_layers + (l - m->n_full_layers) / c->kv_group : l;
    skv_tensor_t qkv = skv_tensor_cols(&big, 0, swiftkv_q ? qw : qw + 2 * kvw);
    skv_tensor_t q = skv_tensor_cols(&qkv, 0, qw);

    SKV_CHECK(ops->matmul(m->be, &qkv, &h, swiftkv_q ? &L->wq_swiftkv : &L->wqkv));
    /* q and k are adjacent columns of qkv: one RoPE call rotates both (heads are independent). */
    int32_t rope_heads = swiftkv_q ? c->n_heads : c->n_heads + c->n_kv_heads;
    skv_tensor_t qk = skv_tensor_cols(&qkv, 0, (int64_t)rope_heads * c->head_dim);
    if (swiftkv_q) { /* K/V of this layer were written by the SwiftKV epilogue */
        SKV_CHECK(ops->rope(m->be, &qk, rope_heads, c->head_dim, pos, &m->inv_freq));
    } else {
        skv_tensor_t v = skv_tensor_cols(&qkv, qw + kvw, kvw);
        if (ops->rope_kv_write != NULL) {
            SKV_CHECK(ops->rope_kv_write(m->be, &qk, c->n_heads, &v, kv, cache_layer, pos,
                                         &m->inv_freq, meta));
        } else {
            skv_tensor_t k = skv_tensor_cols(&qkv, qw, kvw);
            SKV_CHECK(ops->rope(m->be, &qk, rope_heads, c->head_dim, pos, &m->inv_freq));
            SKV_CHECK(ops->kv_write(m->be, kv, cache_layer, &k, &v, meta));
        }
    }
    float scale = 1.0f / sqrtf((float)c->head_dim);
    SKV_CHECK(ops->attention(m->be, &attn, &q, kv, cache_layer, c->n_heads, scale, meta));
    SKV_CHECK(ops->matmul(m->be, &o, &attn, &L->wo));
    return skv_tp_reduce(m, &o);
}

/* MLP sub-block of layer l over R rows whose normed input is in h; output in o. */
static skv_status_t skv_mlp_block(skv_model_t *m, int32_t l, int64_t R)
{
    const skv_ops_t *ops = m->be->ops;
    const skv_layer_t *L = &m->layers[l];
    int64_t F = m->cfg.intermediate_size;
    skv_tensor_t h = skv_tensor_rows(&m->h, 0, R);
    skv_tensor_t gu = skv_tensor_cols(&m->big, 0, 2 * F);
    gu = skv_tensor_rows(&gu, 0, R);
    skv_tensor_t ff = skv_tensor_cols(&m->mid, 0, F);
    ff = skv_tensor_rows(&ff, 0, R);
    skv_tensor_t o = skv_tensor_rows(&m->o, 0, R);
    skv_status_t st = ops->matmul_swiglu != NULL ? ops->matmul_swiglu(m->be, &ff, &h, &L->w_gate_up)
                                                 : SKV_STATUS_UNSUPPORTED;
    if (st == SKV_STATUS_UNSUPPORTED) { /* no fusion for this shape: gate_up, then SwiGLU */
        SKV_CHECK(ops->matmul(m->be, &gu, &h, &L->w_gate_up));
        st = ops->swiglu(m->be, &ff, &gu);
    }
    SKV_CHECK(st);
    SKV_CHECK(ops->matmul(m->be, &o, &ff, &L->w_down));
    return skv_tp_reduce(m, &o);
}

/* Runs layers [l0, l1) over the R rows of residual x (h already holds the first layer's
 * normed input). After the last layer, x holds the residual and h = rmsnorm(x, next_norm)
 * when next_norm is given. */
static skv_status_t skv_layers(skv_model_t *m, int32_t l0, int32_t l1, const skv_tensor_t *x,
                               const skv_kv_view_t *kv, const skv_attn_meta_t *meta,
                               const skv_tensor_t *pos, const skv_tensor_t *next_norm)
{
    const skv_ops_t *ops = m->be->ops;
    float eps = m->cfg.rms_eps;
    int64_t R = x->rows;
    skv_tensor_t h = skv_tensor_rows(&m->h, 0, R);
    skv_tensor_t o = skv_tensor_rows(&m->o, 0, R);
    for (int32_t l = l0; l < l1; l++) {
        SKV_CHECK(skv_attn_block(m, l, R, kv, meta, pos));
        SKV_CHECK(ops->add_rmsnorm(m->be, x, &o, &h, &m->layers[l].ffn_norm, eps));
        SKV_CHECK(skv_mlp_block(m, l, R));
        /* Fused: residual add of this MLP + the next sub-block's input norm. */
        const skv_tensor_t *nn = l + 1 < l1 ? &m->layers[l + 1].attn_norm : next_norm;
        SKV_CHECK(ops->add_rmsnorm(m->be, x, &o, nn ? &h : NULL, nn, eps));
    }
    return SKV_STATUS_OK;
}

/* SingleInputKV: h = rmsnorm(x, norm_swiftkv) for all N rows -> one GEMM into every later
 * cache layer's K/V -> RoPE on K + scatter into the cache, in one op. */
static skv_status_t skv_swiftkv_project(skv_model_t *m, const skv_step_t *st,
                                        const skv_kv_view_t *kv)
{
    int64_t N = st->n_rows;
    int64_t kvw = (int64_t)m->cfg.n_kv_heads * m->cfg.head_dim;
    skv_tensor_t h = skv_tensor_rows(&m->h, 0, N);
    skv_tensor_t kvs = skv_tensor_cols(&m->big, 0, (int64_t)m->n_kv_groups * 2 * kvw);
    kvs = skv_tensor_rows(&kvs, 0, N);
    SKV_CHECK(m->be->ops->matmul(m->be, &kvs, &h, &m->w_kv_swiftkv));
    return m->be->ops->swiftkv_kv_write(m->be, kv, m->n_full_layers, m->n_kv_groups, &kvs,
                                        &st->meta_n, &m->inv_freq);
}

/* Final norm and lm_head for the M rows in xm (logits stay in backend memory). */
static skv_status_t skv_lm_head(skv_model_t *m, const skv_step_t *st, int normed)
{
    const skv_ops_t *ops = m->be->ops;
    int64_t M = st->n_logit_rows;
    skv_tensor_t xm = skv_tensor_rows(&m->xm, 0, M);
    skv_tensor_t hm = skv_tensor_rows(&m->h, 0, M);
    skv_tensor_t lg = skv_tensor_rows(&m->logits, 0, M);
    if (!normed) {
        SKV_CHECK(ops->rmsnorm(m->be, &hm, &xm, &m->norm, m->cfg.rms_eps));
    }
    return ops->matmul(m->be, &lg, &hm, &m->lm_head);
}

/* Every op of one step, from the embedding to the logits in backend memory; no host
 * synchronization, so it can be recorded as a graph. */
static skv_status_t skv_forward_ops(skv_model_t *m, const skv_step_t *st, const skv_kv_view_t *kv)
{
    const skv_ops_t *ops = m->be->ops;
    int64_t N = st->n_rows, M = st->n_logit_rows;
    skv_tensor_t x = skv_tensor_rows(&m->x, 0, N);
    skv_tensor_t h = skv_tensor_rows(&m->h, 0, N);
    float eps = m->cfg.rms_eps;

    /* 1. Embedding, then layers 0..Lk-1 (all layers in base mode) for all N rows. */
    SKV_CHECK(ops->embed(m->be, &x, &m->embed, &st->tokens));
    SKV_CHECK(ops->rmsnorm(m->be, &h, &x, &m->layers[0].attn_norm, eps));
    SKV_CHECK(skv_layers(m, 0, m->n_full_layers, &x, kv, &st->meta_n, &st->meta_n.row_pos,
                         m->swiftkv ? &m->norm_swiftkv : NULL));
    /* 2. SingleInputKV for every later layer (SwiftKV mode). */
    if (m->swiftkv) {
        SKV_CHECK(skv_swiftkv_project(m, st, kv));
    }
    if (M == 0) {
        return SKV_STATUS_OK; /* a non-final prefill chunk ends here */
    }
    /* 3. Only the M logit rows continue. */
    skv_tensor_t xm = skv_tensor_rows(&m->xm, 0, M);
    SKV_CHECK(ops->gather_rows(m->be, &xm, &x, &st->logit_rows));
    if (!m->swiftkv) {
        return skv_lm_head(m, st, 0);
    }
    /* 4. Later layers for the M rows with their own metadata. */
    skv_tensor_t hm = skv_tensor_rows(&m->h, 0, M);
    SKV_CHECK(ops->rmsnorm(m->be, &hm, &xm, &m->layers[m->n_full_layers].attn_norm, eps));
    SKV_CHECK(skv_layers(m, m->n_full_layers, m->cfg.n_layers, &xm, kv, &st->meta_m,
                         &st->meta_m.row_pos, &m->norm));
    /* 5. lm_head on the M rows (already normed by the fused add). */
    return skv_lm_head(m, st, 1);
}

/* A pure decode step (one token and logits per sequence) on a backend with graphs runs as
 * a recorded graph keyed by (model, pool, n_seqs, context bucket); returns the bucket (a
 * power of two >= the step's context, so a graph serves many steps), or 0 for no graph. */
static int32_t skv_graph_ctx_cap(const skv_model_t *m, const skv_seq_step_t *seqs,
                                 int32_t n_seqs)
{
    if (m->be->ops->graph_launch == NULL || m->opts.no_graphs) {
        return 0;
    }
    int32_t max_ctx = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        if (seqs[s].n_tokens != 1 || !seqs[s].want_logits) {
            return 0;
        }
        max_ctx = seqs[s].pos0 + 1 > max_ctx ? seqs[s].pos0 + 1 : max_ctx;
    }
    int32_t cap = 256;
    while (cap < max_ctx) {
        cap *= 2;
    }
    return cap < m->max_ctx ? cap : m->max_ctx;
}

static uint64_t skv_graph_mix(uint64_t h, uint64_t v)
{
    uint64_t z = (h ^ v) + 0x9E3779B97F4A7C15ULL; /* splitmix64 finalizer */
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The graph's key: the model's process-unique id, not its address (a model created after
 * another was destroyed can get the same address and would replay the old one's graph, with
 * its freed buffers), the pool view and the step shape. */
static uint64_t skv_graph_key(const skv_model_t *m, const skv_kv_view_t *kv, int32_t n_seqs,
                              int32_t ctx_cap)
{
    uint64_t key = skv_graph_mix(0, m->graph_id);
    key = skv_graph_mix(key, (uint64_t)(uintptr_t)kv->base);
    key = skv_graph_mix(key, (uint64_t)kv->n_blocks);
    return skv_graph_mix(key, ((uint64_t)(uint32_t)n_seqs << 32) | (uint32_t)ctx_cap);
}

static skv_status_t skv_forward_graph(skv_model_t *m, const skv_step_t *st,
                                      const skv_kv_view_t *kv, int32_t n_seqs, int32_t ctx_cap)
{
    const skv_ops_t *ops = m->be->ops;
    uint64_t key = skv_graph_key(m, kv, n_seqs, ctx_cap);
    skv_status_t status = ops->graph_launch(m->be, key);
    if (status != SKV_STATUS_NOT_FOUND) {
        return status;
    }
    SKV_CHECK(ops->graph_capture_begin(m->be));
    status = skv_forward_ops(m, st, kv);
    skv_status_t end = ops->graph_capture_end(m->be, key, status == SKV_STATUS_OK);
    return status != SKV_STATUS_OK ? status : end;
}

skv_status_t skv_model_forward_local(skv_model_t *m, skv_kv_pool_t *pool, const skv_kv_view_t *kv,
                                     const skv_seq_step_t *seqs, int32_t n_seqs,
                                     const skv_sample_row_t *rows)
{
    skv_step_t st;
    int32_t ctx_cap = skv_graph_ctx_cap(m, seqs, n_seqs);
    SKV_CHECK(skv_step_prepare(m, pool, seqs, n_seqs, ctx_cap, rows, &st));
    SKV_ASSERT(kv->n_cache_layers == m->n_cache_layers);
    if (ctx_cap > 0) {
        return skv_forward_graph(m, &st, kv, n_seqs, ctx_cap);
    }
    return skv_forward_ops(m, &st, kv);
}

static int32_t skv_count_logit_rows(const skv_seq_step_t *seqs, int32_t n_seqs)
{
    int32_t n = 0;
    for (int32_t s = 0; s < n_seqs; s++) {
        n += seqs[s].want_logits ? 1 : 0;
    }
    return n;
}

skv_status_t skv_model_forward(skv_model_t *m, skv_kv_pool_t *pool, const skv_seq_step_t *seqs,
                               int32_t n_seqs, float *logits)
{
    const skv_ops_t *ops;
    SKV_CHECK(skv_step_validate(m, pool, seqs, n_seqs));
    if (m->group_ops != NULL) { /* TP: rank threads */
        return m->group_ops->forward(m, pool, seqs, n_seqs, logits, NULL, NULL);
    }
    ops = m->be->ops;
    skv_kv_view_t kv = skv_kv_pool_view(pool);
    SKV_CHECK(skv_model_forward_local(m, pool, &kv, seqs, n_seqs, NULL));
    int32_t n_logit_rows = skv_count_logit_rows(seqs, n_seqs);
    if (n_logit_rows > 0) {
        size_t bytes = (size_t)n_logit_rows * m->cfg.vocab_size * sizeof(float);
        SKV_CHECK(ops->copy_d2h(m->be, logits, m->logits.data, bytes));
    }
    return ops->sync(m->be);
}

/* ---- picking tokens where the logits are ----------------------------------------------- */

int skv_model_samples_on_backend(const skv_model_t *m)
{
    return m->be->ops->sample != NULL;
}

skv_status_t skv_model_sample_local(skv_model_t *m, const skv_tensor_t *logits, int32_t *tokens)
{
    const skv_ops_t *ops = m->be->ops;
    SKV_ASSERT(logits->rows == m->sample_params.rows && ops->sample != NULL);
    SKV_CHECK(ops->sample(m->be, &m->sample_tokens, logits, &m->sample_params));
    return ops->copy_d2h(m->be, tokens, m->sample_tokens.data,
                         sizeof(int32_t) * (size_t)logits->rows);
}

void skv_model_sample_free(skv_model_t *m)
{
    skv_free(m->h_pick_logits);
    skv_free(m->h_pick_scratch);
    m->h_pick_logits = NULL;
    m->h_pick_scratch = NULL;
}

/* A backend without a sample op: the logits come to the host and skv_sample_row_pick picks
 * (the same tokens). The buffers are allocated on first use and kept. */
static skv_status_t skv_forward_sample_host(skv_model_t *m, skv_kv_pool_t *pool,
                                            const skv_seq_step_t *seqs, int32_t n_seqs,
                                            const skv_sample_row_t *rows, int32_t M,
                                            int32_t *tokens)
{
    int32_t V = m->cfg.vocab_size;
    if (m->h_pick_logits == NULL) {
        m->h_pick_logits = skv_mallocn((size_t)m->opts.max_seqs * (size_t)V, sizeof(float));
        m->h_pick_scratch = skv_malloc(skv_sample_row_scratch_bytes(V));
        if (m->h_pick_logits == NULL || m->h_pick_scratch == NULL) {
            SKV_LOG_ERROR("cannot allocate host logits for %d rows of %d", m->opts.max_seqs, V);
            skv_model_sample_free(m);
            return SKV_STATUS_NO_MEMORY;
        }
    }
    SKV_CHECK(skv_model_forward(m, pool, seqs, n_seqs, m->h_pick_logits));
    for (int32_t k = 0; k < M; k++) {
        tokens[k] =
            skv_sample_row_pick(m->h_pick_logits + (size_t)k * V, V, &rows[k], m->h_pick_scratch);
    }
    return SKV_STATUS_OK;
}

skv_status_t skv_model_forward_sample(skv_model_t *m, skv_kv_pool_t *pool,
                                      const skv_seq_step_t *seqs, int32_t n_seqs,
                                      const skv_sample_row_t *rows, int32_t *tokens)
{
    SKV_CHECK(skv_step_validate(m, pool, seqs, n_seqs));
    int32_t M = skv_count_logit_rows(seqs, n_seqs);
    SKV_ASSERT(M == 0 || (rows != NULL && tokens != NULL));
    for (int32_t k = 0; k < M; k++) {
        const char *why;
        if (skv_sample_row_check(&rows[k], &why) != SKV_STATUS_OK) {
            SKV_LOG_ERROR("sampling row %d: %s", k, why);
            return SKV_STATUS_INVALID_ARGUMENT;
        }
    }
    if (!skv_model_samples_on_backend(m)) {
        return skv_forward_sample_host(m, pool, seqs, n_seqs, rows, M, tokens);
    }
    if (m->group_ops != NULL) { /* TP: rank 0 picks after the all-gather */
        return m->group_ops->forward(m, pool, seqs, n_seqs, NULL, rows, tokens);
    }
    const skv_ops_t *ops = m->be->ops;
    skv_kv_view_t kv = skv_kv_pool_view(pool);
    SKV_CHECK(skv_model_forward_local(m, pool, &kv, seqs, n_seqs, rows));
    if (M > 0) {
        skv_tensor_t lg = skv_tensor_rows(&m->logits, 0, M); /* [M, vocab]: lm_rows == V */
        SKV_CHECK(skv_model_sample_local(m, &lg, tokens));
    }
    return ops->sync(m->be); /* the tokens' copy has landed */
}
