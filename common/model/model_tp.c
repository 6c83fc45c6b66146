/*
 * model_tp.c: the tensor-parallel group behind a front skv_model_t (model_tp.h): rank
 * threads that each own a backend, a communicator and a rank model (model_load.c's
 * skv_model_load_shard), and a job mechanism that runs one function on every rank and waits.
 *
 * Jobs: the caller sets (fn, arg), bumps job_seq and waits until all ranks have reported; a
 * rank thread runs fn(rank, arg) and records its status. Every backend call of a rank (create,
 * load, forward, pool memory, destroy) happens on that rank's thread, as the CUDA backend
 * requires. Invariant: at most one job in flight; the front model's thread is the only caller.
 */
#include "common/model/model_tp.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "kernels/backend.h"
#include "base/log.h"
#include "common/model/model_internal.h"

typedef struct skv_tp_group skv_tp_group_t;

typedef struct {
    skv_tp_group_t *g;
    int32_t rank;
    pthread_t thread;
    skv_backend_t *be;
    skv_comm_t *comm;
    skv_model_t *model;
    skv_status_t status; /* of the last job */
} skv_tp_rank_t;

typedef skv_status_t (*skv_tp_job_fn)(skv_tp_rank_t *r, void *arg);

struct skv_tp_group {
    int32_t size;
    int32_t n_started;
    char backend[32];
    int n_threads;
    int device0;
    skv_comm_group_t *comm_group;
    pthread_mutex_t lock;
    pthread_cond_t cv_job;
    pthread_cond_t cv_done;
    uint64_t job_seq;
    int32_t n_done;
    skv_tp_job_fn fn;
    void *arg;
    int quit;
    int broken;      /* a step failed on some rank: the communicator is aborted */
    float *h_gather; /* [size * max_seqs * lm_rows]: rank 0's host copy of gathered logits */
    skv_tp_rank_t *ranks;
};

static void *skv_tp_rank_main(void *arg)
{
    skv_tp_rank_t *r = arg;
    skv_tp_group_t *g = r->g;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&g->lock);
        while (g->job_seq == seen && !g->quit) {
            pthread_cond_wait(&g->cv_job, &g->lock);
        }
        if (g->quit) {
            pthread_mutex_unlock(&g->lock);
            return NULL;
        }
        seen = g->job_seq;
        skv_tp_job_fn fn = g->fn;
        void *job_arg = g->arg;
        pthread_mutex_unlock(&g->lock);
        skv_status_t status = fn(r, job_arg);
        pthread_mutex_lock(&g->lock);
        r->status = status;
        if (++g->n_done == g->n_started) {
            pthread_cond_signal(&g->cv_done);
        }
        pthread_mutex_unlock(&g->lock);
    }
}

/* Runs fn on every started rank thread and waits; returns the lowest rank's error, or OK. */
static skv_status_t skv_tp_run(skv_tp_group_t *g, skv_tp_job_fn fn, void *arg)
{
    pthread_mutex_lock(&g->lock);
    g->fn = fn;
    g->arg = arg;
    g->n_done = 0;
    g->job_seq++;
    pthread_cond_broadcast(&g->cv_job);
    while (g->n_done < g->n_started) {
        pthread_cond_wait(&g->cv_done, &g->lock);
    }
    pthread_mutex_unlock(&g->lock);
    for (int32_t i = 0; i < g->n_started; i++) {
        if (g->ranks[i].status != SKV_STATUS_OK) {
            return g->ranks[i].status;
        }
    }
    return SKV_STATUS_OK;
}

/* ---- jobs ---------------------------------------------------------------------------- */

static skv_status_t skv_tp_job_backend(skv_tp_rank_t *r, void *arg)
{
    (void)arg;
    skv_tp_group_t *g = r->g;
    return skv_backend_create(g->backend, g->n_threads, g->device0 + r->rank, &r->be);
}

typedef struct {
    const char *dir; /* NULL: random weights of cfg from seed */
    const skv_model_config_t *cfg;
    uint64_t seed;
    const skv_model_opts_t *opts;
} skv_tp_load_t;

static skv_status_t skv_tp_job_load(skv_tp_rank_t *r, void *arg)
{
    const skv_tp_load_t *a = arg;
    skv_tp_group_t *g = r->g;
    SKV_CHECK(skv_comm_join(g->comm_group, r->rank, r->be, &r->comm));
    /* Alone, a rank needs no collectives: no comm, so o_proj/down_proj skip the all-reduce. */
    return skv_model_create_shard(a->dir, a->cfg, a->seed, r->be, a->opts, r->rank, g->size,
                                  g->size > 1 ? r->comm : NULL, &r->model);
}

static skv_status_t skv_tp_job_teardown(skv_tp_rank_t *r, void *arg)
{
    (void)arg;
    skv_model_destroy(r->model);
    if (r->comm != NULL) {
        r->comm->ops->destroy(r->comm);
    }
    if (r->be != NULL) {
        r->be->ops->destroy(r->be);
    }
    r->model = NULL;
    r->comm = NULL;
    r->be = NULL;
    return SKV_STATUS_OK;
}

typedef struct {
    int32_t block_size;
    int64_t n_blocks;
    skv_kv_pool_t *pool;
} skv_tp_pool_t;

/* Rank 0 creates the pool (the allocator and its memory); see skv_tp_kv_pool_create. */
static skv_status_t skv_tp_job_pool_create(skv_tp_rank_t *r, void *arg)
{
    skv_tp_pool_t *a = arg;
    if (r->rank != 0) {
        return SKV_STATUS_OK;
    }
    skv_kv_layout_t layout;
    skv_model_kv_layout(r->model, a->block_size, &layout);
    return skv_kv_pool_create(&layout, a->n_blocks, r->be, &a->pool);
}

/* Every other rank allocates its head slice's memory on its own backend. */
static skv_status_t skv_tp_job_pool_attach(skv_tp_rank_t *r, void *arg)
{
    skv_tp_pool_t *a = arg;
    if (r->rank == 0) {
        return SKV_STATUS_OK;
    }
    skv_kv_layout_t layout;
    skv_model_kv_layout(r->model, a->block_size, &layout);
    return skv_kv_pool_attach_rank(a->pool, &layout, r->be);
}

typedef struct {
    skv_kv_pool_t *pool;
    const skv_seq_step_t *seqs;
    int32_t n_seqs;
    int32_t n_logit_rows;
    int32_t vocab;
    float *logits;                /* host logits out, or NULL when rows is set */
    const skv_sample_row_t *rows; /* pick on rank 0's backend (NULL: logits) */
    int32_t *tokens;              /* [n_logit_rows] host tokens out when rows is set */
} skv_tp_step_t;

/* All-gathers every rank's [M, lm_rows] logits; rank 0 copies them to the host and lays them
 * out as [M, V] in the caller's buffer (dropping the last rank's padding rows). */
static skv_status_t skv_tp_gather_logits(skv_tp_rank_t *r, const skv_tp_step_t *a)
{
    skv_tp_group_t *g = r->g;
    skv_model_t *m = r->model;
    const skv_ops_t *ops = m->be->ops;
    int64_t M = a->n_logit_rows, lr = m->lm_rows;
    size_t count = (size_t)(M * lr);
    const void *src = m->logits.data;
    if (g->size > 1) {
        SKV_CHECK(r->comm->ops->all_gather(r->comm, m->logits.data, m->logits_all.data, count,
                                           SKV_DTYPE_F32));
        src = m->logits_all.data;
    }
    if (r->rank != 0) {
        return SKV_STATUS_OK;
    }
    SKV_CHECK(ops->copy_d2h(m->be, g->h_gather, src, (size_t)g->size * count * sizeof(float)));
    SKV_CHECK(ops->sync(m->be));
    for (int32_t k = 0; k < g->size; k++) {
        int64_t c0 = k * lr, n = a->vocab - c0 < lr ? a->vocab - c0 : lr;
        for (int64_t i = 0; i < M && n > 0; i++) {
            memcpy(a->logits + i * a->vocab + c0, g->h_gather + ((size_t)k * M + i) * lr,
                   (size_t)n * sizeof(float));
        }
    }
    return SKV_STATUS_OK;
}

/* All-gathers the logits as skv_tp_gather_logits does, but keeps them on rank 0's backend:
 * one gather_rows puts the rank-major [size][M][lm_rows] rows into vocabulary order
 * (logits_v row i = every rank's row i side by side), the sample op picks there, and only the
 * M tokens reach the host. gather_rows copies rows of the activation dtype; an f32 row of
 * lm_rows values is moved as 4 / (activation size) times as many of those elements. */
static skv_status_t skv_tp_sample(skv_tp_rank_t *r, const skv_tp_step_t *a)
{
    skv_tp_group_t *g = r->g;
    skv_model_t *m = r->model;
    const skv_ops_t *ops = m->be->ops;
    int64_t M = a->n_logit_rows, lr = m->lm_rows;
    skv_tensor_t lg = skv_tensor_rows(&m->logits, 0, M); /* alone: lm_rows == vocab */
    if (g->size > 1) {
        SKV_CHECK(r->comm->ops->all_gather(r->comm, m->logits.data, m->logits_all.data,
                                           (size_t)(M * lr), SKV_DTYPE_F32));
        if (r->rank != 0) {
            return SKV_STATUS_OK;
        }
        skv_dtype_t act = ops->act_dtype;
        int64_t per = 4 / (int64_t)skv_dtype_size(act);
        SKV_ASSERT(per * (int64_t)skv_dtype_size(act) == 4);
        skv_tensor_t src = skv_tensor_make(m->logits_all.data, act, g->size * M, lr * per);
        skv_tensor_t dst = skv_tensor_make(m->logits_v.data, act, M * g->size, lr * per);
        SKV_CHECK(ops->gather_rows(m->be, &dst, &src, &m->sample_order));
        lg = skv_tensor_make(m->logits_v.data, SKV_DTYPE_F32, M, a->vocab);
        lg.ld = g->size * lr;
    }
    return skv_model_sample_local(m, &lg, a->tokens);
}

static skv_status_t skv_tp_job_step(skv_tp_rank_t *r, void *arg)
{
    const skv_tp_step_t *a = arg;
    skv_model_t *m = r->model;
    skv_kv_view_t kv = skv_kv_pool_rank_view(a->pool, r->rank);
    const skv_sample_row_t *rows = r->rank == 0 ? a->rows : NULL; /* only rank 0 picks */
    skv_status_t status = skv_model_forward_local(m, a->pool, &kv, a->seqs, a->n_seqs, rows);
    if (status == SKV_STATUS_OK && a->n_logit_rows > 0) {
        status = a->rows != NULL ? skv_tp_sample(r, a) : skv_tp_gather_logits(r, a);
    }
    if (status == SKV_STATUS_OK) {
        status = m->be->ops->sync(m->be);
    }
    if (status != SKV_STATUS_OK && r->comm != NULL) {
        r->comm->ops->abort(r->comm); /* peers waiting in a collective return DEVICE */
    }
    return status;
}

/* ---- the front model's hooks ---------------------------------------------------------- */

static skv_status_t skv_tp_forward(skv_model_t *m, skv_kv_pool_t *pool, const skv_seq_step_t *seqs,
                                   int32_t n_seqs, float *logits, const skv_sample_row_t *rows,
                                   int32_t *tokens)
{
    skv_tp_group_t *g = m->group;
    if (g->broken) {
        SKV_LOG_ERROR("tensor-parallel group failed in an earlier step; reload the model");
        return SKV_STATUS_DEVICE;
    }
    const skv_kv_layout_t *l = skv_kv_pool_layout(pool);
    if (skv_kv_pool_n_ranks(pool) != g->size || l->tp_size != g->size) {
        SKV_LOG_ERROR("KV pool has %d ranks; this model has %d (create the pool with "
                      "skv_model_kv_pool_create)",
                      skv_kv_pool_n_ranks(pool), g->size);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    skv_tp_step_t step = {pool, seqs, n_seqs, 0, m->cfg.vocab_size, logits, rows, tokens};
    for (int32_t s = 0; s < n_seqs; s++) {
        step.n_logit_rows += seqs[s].want_logits ? 1 : 0;
    }
    skv_status_t status = skv_tp_run(g, skv_tp_job_step, &step);
    if (status != SKV_STATUS_OK) {
        g->broken = 1;
        SKV_LOG_ERROR("tensor-parallel step failed on a rank: %s", skv_status_str(status));
    }
    return status;
}

static skv_status_t skv_tp_kv_pool_create(skv_model_t *m, int32_t block_size, int64_t n_blocks,
                                          skv_kv_pool_t **pool_p)
{
    skv_tp_group_t *g = m->group;
    skv_tp_pool_t a = {block_size, n_blocks, NULL};
    SKV_CHECK(skv_tp_run(g, skv_tp_job_pool_create, &a));
    skv_status_t status = skv_tp_run(g, skv_tp_job_pool_attach, &a);
    if (status != SKV_STATUS_OK) {
        skv_kv_pool_destroy(a.pool);
        return status;
    }
    *pool_p = a.pool;
    return SKV_STATUS_OK;
}

static void skv_tp_group_free(skv_tp_group_t *g)
{
    if (g->n_started > 0) {
        skv_tp_run(g, skv_tp_job_teardown, NULL);
        pthread_mutex_lock(&g->lock);
        g->quit = 1;
        pthread_cond_broadcast(&g->cv_job);
        pthread_mutex_unlock(&g->lock);
        for (int32_t i = 0; i < g->n_started; i++) {
            pthread_join(g->ranks[i].thread, NULL);
        }
    }
    skv_comm_group_destroy(g->comm_group);
    pthread_cond_destroy(&g->cv_done);
    pthread_cond_destroy(&g->cv_job);
    pthread_mutex_destroy(&g->lock);
    skv_free(g->h_gather);
    skv_free(g->ranks);
    skv_free(g);
}

static void skv_tp_destroy(skv_model_t *m)
{
    skv_tp_group_free(m->group);
    skv_model_sample_free(m);
    skv_free(m);
}

static const skv_model_group_ops_t skv_tp_group_ops = {
    skv_tp_forward,
    skv_tp_kv_pool_create,
    skv_tp_destroy,
};

/* ---- loading -------------------------------------------------------------------------- */

static skv_status_t skv_tp_group_create(const skv_model_tp_opts_t *tp, skv_tp_group_t **g_p)
{
    skv_tp_group_t *g = skv_calloc(1, sizeof(*g));
    if (g == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cv_job, NULL);
    pthread_cond_init(&g->cv_done, NULL);
    g->size = tp->tp_size;
    snprintf(g->backend, sizeof(g->backend), "%s", tp->backend ? tp->backend : "cpu");
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    g->n_threads = tp->n_threads > 0 ? tp->n_threads : (int)(cores / tp->tp_size);
    g->n_threads = g->n_threads > 0 ? g->n_threads : 1;
    g->device0 = tp->device0;
    g->ranks = skv_calloc((size_t)g->size, sizeof(*g->ranks));
    skv_status_t status = g->ranks ? SKV_STATUS_OK : SKV_STATUS_NO_MEMORY;
    if (status == SKV_STATUS_OK) {
        status = skv_comm_group_create(g->backend, g->size, &g->comm_group);
    }
    for (int32_t i = 0; i < g->size && status == SKV_STATUS_OK; i++) {
        g->ranks[i].g = g;
        g->ranks[i].rank = i;
        if (pthread_create(&g->ranks[i].thread, NULL, skv_tp_rank_main, &g->ranks[i]) != 0) {
            SKV_LOG_ERROR("cannot start the thread of tensor-parallel rank %d", i);
            status = SKV_STATUS_NO_MEMORY;
        } else {
            g->n_started++;
        }
    }
    if (status != SKV_STATUS_OK) {
        skv_tp_group_free(g);
        return status;
    }
    *g_p = g;
    return SKV_STATUS_OK;
}

/* Creates every rank's backend first, so NCCL's join (which waits for all ranks) only starts
 * once every rank can reach it; then joins and loads the shards in parallel. */
static skv_status_t skv_tp_group_load(skv_tp_group_t *g, skv_model_t *front,
                                      const skv_tp_load_t *load)
{
    const skv_model_opts_t *opts = load->opts;
    SKV_CHECK(skv_tp_run(g, skv_tp_job_backend, NULL));
    SKV_CHECK(skv_tp_run(g, skv_tp_job_load, (void *)load));
    g->h_gather = skv_mallocn((size_t)g->size * (size_t)opts->max_seqs * (size_t)front->lm_rows,
                              sizeof(float));
    return g->h_gather ? SKV_STATUS_OK : SKV_STATUS_NO_MEMORY;
}

/* The front model of either kind: full config, options checked, no weights; then the group. */
static skv_status_t skv_tp_create(const skv_tp_load_t *load, const skv_model_tp_opts_t *tp,
                                  skv_model_t **model_p)
{
    skv_model_t *front = skv_calloc(1, sizeof(*front));
    skv_tp_group_t *g = NULL;
    if (front == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    skv_status_t status = SKV_STATUS_OK;
    if (load->dir != NULL) {
        SKV_CHECK_GOTO(skv_model_config_load(load->dir, &front->cfg), fail);
    } else {
        front->cfg = *load->cfg;
    }
    SKV_CHECK_GOTO(skv_model_tp_check(&front->cfg, tp->tp_size), fail);
    front->tp_size = tp->tp_size; /* before setup: lm_rows is per rank */
    SKV_CHECK_GOTO(skv_model_setup(front, load->opts), fail);
    SKV_CHECK_GOTO(skv_tp_group_create(tp, &g), fail);
    SKV_CHECK_GOTO(skv_tp_group_load(g, front, load), fail);
    front->be = g->ranks[0].be; /* borrowed: its ops table; never driven from here */
    front->kv_dtype = g->ranks[0].model->kv_dtype;
    front->group = g;
    front->group_ops = &skv_tp_group_ops;
    *model_p = front;
    return SKV_STATUS_OK;
fail:
    if (g != NULL) {
        skv_tp_group_free(g);
    }
    skv_free(front);
    return status;
}

skv_status_t skv_model_load_tp(const char *dir, const skv_model_tp_opts_t *tp,
                               const skv_model_opts_t *opts, skv_model_t **model_p)
{
    skv_tp_load_t load = {dir, NULL, 0, opts};
    return skv_tp_create(&load, tp, model_p);
}

skv_status_t skv_model_create_random_tp(const skv_model_config_t *cfg,
                                        const skv_model_tp_opts_t *tp, const skv_model_opts_t *opts,
                                        uint64_t seed, skv_model_t **model_p)
{
    skv_tp_load_t load = {NULL, cfg, seed, opts};
    return skv_tp_create(&load, tp, model_p);
}
