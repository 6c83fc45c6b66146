/*
 * cpu_comm.c: the in-process communicator (kernels/comm.h): ranks are threads sharing host
 * memory; CPU backend memory is host memory, so a rank reads its peers' buffers directly.
 *
 * Every collective is: publish this rank's pointer, barrier, work, barrier. The second
 * barrier means no rank returns (and reuses its buffer or the pointer slots) while a peer
 * still reads them. All-reduce: rank r sums slice r of the elements over ranks 0, 1, ...,
 * size-1 in that order (f32 accumulation) and writes the sum into every rank's buffer, so the
 * result is bit-identical on all ranks and from run to run.
 *
 * The barrier waits on a condition variable (no spinning: CI machines have 2 cores and TP=4
 * runs 4 rank threads). abort wakes every waiter with DEVICE and fails later collectives.
 */
#include <pthread.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "kernels/comm.h"

typedef struct {
    skv_comm_group_t base;
    pthread_mutex_t lock;
    pthread_cond_t cv;
    int32_t arrived;
    uint64_t generation;
    int aborted;
    const void **ptrs; /* [size]: the buffer each rank published for this collective */
} skv_cpu_group_t;

typedef struct {
    skv_comm_t base;
    skv_cpu_group_t *group;
} skv_cpu_comm_t;

static skv_cpu_group_t *skv_cpu_group_of(skv_comm_t *comm)
{
    return ((skv_cpu_comm_t *)comm)->group;
}

/* Waits until every rank has arrived. DEVICE when the group was aborted. */
static skv_status_t skv_cpu_group_barrier(skv_cpu_group_t *g)
{
    pthread_mutex_lock(&g->lock);
    if (g->aborted) {
        pthread_mutex_unlock(&g->lock);
        return SKV_STATUS_DEVICE;
    }
    uint64_t gen = g->generation;
    if (++g->arrived == g->base.size) {
        g->arrived = 0;
        g->generation++;
        pthread_cond_broadcast(&g->cv);
    } else {
        while (gen == g->generation && !g->aborted) {
            pthread_cond_wait(&g->cv, &g->lock);
        }
    }
    int failed = gen == g->generation; /* woken by abort, not by the last arrival */
    pthread_mutex_unlock(&g->lock);
    return failed ? SKV_STATUS_DEVICE : SKV_STATUS_OK;
}

static float skv_cpu_load(const void *p, size_t i, skv_dtype_t dtype)
{
    switch (dtype) {
    case SKV_DTYPE_BF16:
        return skv_bf16_to_f32(((const uint16_t *)p)[i]);
    case SKV_DTYPE_F16:
        return skv_f16_to_f32(((const uint16_t *)p)[i]);
    default:
        return ((const float *)p)[i];
    }
}

static void skv_cpu_store(void *p, size_t i, skv_dtype_t dtype, float v)
{
    switch (dtype) {
    case SKV_DTYPE_BF16:
        ((uint16_t *)p)[i] = skv_f32_to_bf16(v);
        break;
    case SKV_DTYPE_F16:
        ((uint16_t *)p)[i] = skv_f32_to_f16(v);
        break;
    default:
        ((float *)p)[i] = v;
    }
}

/* Sums elements [i0, i1) over the ranks in rank order and writes the sum to every rank. */
static void skv_cpu_reduce_slice(skv_cpu_group_t *g, size_t i0, size_t i1, skv_dtype_t dtype)
{
    int32_t n = g->base.size;
    void **bufs = (void **)g->ptrs;
    if (dtype == SKV_DTYPE_F32) { /* the CPU backend's activations: the fast path */
        for (size_t i = i0; i < i1; i++) {
            float s = ((const float *)bufs[0])[i];
            for (int32_t k = 1; k < n; k++) {
                s += ((const float *)bufs[k])[i];
            }
            for (int32_t k = 0; k < n; k++) {
                ((float *)bufs[k])[i] = s;
            }
        }
        return;
    }
    for (size_t i = i0; i < i1; i++) {
        float s = skv_cpu_load(bufs[0], i, dtype);
        for (int32_t k = 1; k < n; k++) {
            s += skv_cpu_load(bufs[k], i, dtype);
        }
        for (int32_t k = 0; k < n; k++) {
            skv_cpu_store(bufs[k], i, dtype, s);
        }
    }
}

static skv_status_t skv_cpu_comm_all_reduce_sum(skv_comm_t *comm, void *buf, size_t count,
                                                skv_dtype_t dtype)
{
    SKV_ASSERT(dtype == SKV_DTYPE_F32 || dtype == SKV_DTYPE_BF16 || dtype == SKV_DTYPE_F16);
    skv_cpu_group_t *g = skv_cpu_group_of(comm);
    if (comm->size == 1) {
        return skv_cpu_group_barrier(g); /* nothing to sum; still reports an abort */
    }
    g->ptrs[comm->rank] = buf;
    SKV_CHECK(skv_cpu_group_barrier(g));
    size_t chunk = (count + (size_t)comm->size - 1) / (size_t)comm->size;
    size_t i0 = chunk * (size_t)comm->rank;
    size_t i1 = i0 + chunk < count ? i0 + chunk : count;
    if (i0 < i1) {
        skv_cpu_reduce_slice(g, i0, i1, dtype);
    }
    return skv_cpu_group_barrier(g);
}

static skv_status_t skv_cpu_comm_all_gather(skv_comm_t *comm, const void *send, void *recv,
                                            size_t count, skv_dtype_t dtype)
{
    skv_cpu_group_t *g = skv_cpu_group_of(comm);
    size_t bytes = count * skv_dtype_size(dtype);
    g->ptrs[comm->rank] = send;
    SKV_CHECK(skv_cpu_group_barrier(g));
    for (int32_t k = 0; k < comm->size; k++) {
        memcpy((char *)recv + bytes * (size_t)k, g->ptrs[k], bytes);
    }
    return skv_cpu_group_barrier(g);
}

static skv_status_t skv_cpu_comm_barrier(skv_comm_t *comm)
{
    return skv_cpu_group_barrier(skv_cpu_group_of(comm));
}

static void skv_cpu_comm_abort(skv_comm_t *comm)
{
    skv_cpu_group_t *g = skv_cpu_group_of(comm);
    pthread_mutex_lock(&g->lock);
    g->aborted = 1;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->lock);
}

static void skv_cpu_comm_destroy(skv_comm_t *comm)
{
    skv_free(comm);
}

static const skv_comm_ops_t skv_cpu_comm_ops = {
    .name = "cpu",
    .destroy = skv_cpu_comm_destroy,
    .all_reduce_sum = skv_cpu_comm_all_reduce_sum,
    .all_gather = skv_cpu_comm_all_gather,
    .barrier = skv_cpu_comm_barrier,
    .abort = skv_cpu_comm_abort,
};

static skv_status_t skv_cpu_group_join(skv_comm_group_t *group, int32_t rank, skv_backend_t *be,
                                       skv_comm_t **comm_p)
{
    (void)be; /* CPU backend memory is host memory: nothing per backend to set up */
    SKV_ASSERT(rank >= 0 && rank < group->size);
    skv_cpu_comm_t *c = skv_calloc(1, sizeof(*c));
    if (c == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    c->base.ops = &skv_cpu_comm_ops;
    c->base.rank = rank;
    c->base.size = group->size;
    c->group = (skv_cpu_group_t *)group;
    *comm_p = &c->base;
    return SKV_STATUS_OK;
}

static void skv_cpu_group_destroy(skv_comm_group_t *group)
{
    skv_cpu_group_t *g = (skv_cpu_group_t *)group;
    pthread_cond_destroy(&g->cv);
    pthread_mutex_destroy(&g->lock);
    skv_free(g->ptrs);
    skv_free(g);
}

skv_status_t skv_cpu_comm_group_create(int32_t n_ranks, skv_comm_group_t **group_p)
{
    if (n_ranks < 1) {
        SKV_LOG_ERROR("a communicator group needs at least one rank (got %d)", n_ranks);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    skv_cpu_group_t *g = skv_calloc(1, sizeof(*g));
    const void **ptrs = skv_calloc((size_t)n_ranks, sizeof(*ptrs));
    if (g == NULL || ptrs == NULL) {
        skv_free(g);
        skv_free(ptrs);
        return SKV_STATUS_NO_MEMORY;
    }
    g->base.size = n_ranks;
    g->base.join = skv_cpu_group_join;
    g->base.destroy = skv_cpu_group_destroy;
    g->ptrs = ptrs;
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cv, NULL);
    *group_p = &g->base;
    return SKV_STATUS_OK;
}
