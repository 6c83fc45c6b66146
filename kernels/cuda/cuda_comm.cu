/*
 * cuda_comm.cu: the NCCL communicator (kernels/comm.h): one GPU per rank, one rank per
 * thread of one process (each thread drives its rank's CUDA backend). The group holds the
 * NCCL unique id; each rank thread joins with ncclCommInitRank on its own device, so all
 * ranks must join concurrently (NCCL blocks until they have). Collectives are enqueued on the
 * rank backend's stream, so they are ordered with the model's ops and can be recorded in the
 * backend's decode graphs. NCCL's sum order is fixed for a given topology and algorithm, so
 * a TP run repeats bit for bit on one machine (NCCL does not promise more).
 *
 * Built only when the toolkit ships NCCL (SKV_HAVE_NCCL); errors become SKV_STATUS_DEVICE,
 * logged once where they happen.
 */
#include <nccl.h>

#include "kernels/cuda/cuda_internal.h"

extern "C" {
#include "base/alloc.h"
#include "kernels/comm.h"
#include "kernels/cuda/cuda_comm.h"
}

typedef struct {
    skv_comm_group_t base;
    ncclUniqueId id;
} skv_nccl_group_t;

typedef struct {
    skv_comm_t base;
    ncclComm_t nccl;
    cudaStream_t stream; /* the rank backend's stream */
    int device;
    int *d_flag; /* one int for the barrier's all-reduce */
} skv_nccl_comm_t;

static skv_status_t skv_nccl_error(ncclResult_t r, const char *what)
{
    SKV_LOG_ERROR("%s failed: %s", what, ncclGetErrorString(r));
    return SKV_STATUS_DEVICE;
}

#define SKV_NCCL_CHECK(call)                                                                       \
    do {                                                                                           \
        ncclResult_t skv_nccl_r_ = (call);                                                         \
        if (skv_nccl_r_ != ncclSuccess) {                                                          \
            return skv_nccl_error(skv_nccl_r_, #call);                                             \
        }                                                                                          \
    } while (0)

static skv_nccl_comm_t *skv_nccl(skv_comm_t *comm)
{
    return (skv_nccl_comm_t *)comm;
}

/* NCCL's name for a dtype; activations are bf16 on the CUDA backend, f32 on logits. */
static ncclDataType_t skv_nccl_dtype(skv_dtype_t dtype)
{
    switch (dtype) {
    case SKV_DTYPE_BF16:
        return ncclBfloat16;
    case SKV_DTYPE_F16:
        return ncclFloat16;
    case SKV_DTYPE_I32:
        return ncclInt32;
    default:
        return ncclFloat32;
    }
}

static skv_status_t skv_nccl_all_reduce_sum(skv_comm_t *comm, void *buf, size_t count,
                                            skv_dtype_t dtype)
{
    skv_nccl_comm_t *c = skv_nccl(comm);
    SKV_NCCL_CHECK(
        ncclAllReduce(buf, buf, count, skv_nccl_dtype(dtype), ncclSum, c->nccl, c->stream));
    return SKV_STATUS_OK;
}

static skv_status_t skv_nccl_all_gather(skv_comm_t *comm, const void *send, void *recv,
                                        size_t count, skv_dtype_t dtype)
{
    skv_nccl_comm_t *c = skv_nccl(comm);
    SKV_NCCL_CHECK(ncclAllGather(send, recv, count, skv_nccl_dtype(dtype), c->nccl, c->stream));
    return SKV_STATUS_OK;
}

/* A one-int all-reduce, then a stream sync: every rank has reached this point. */
static skv_status_t skv_nccl_barrier(skv_comm_t *comm)
{
    skv_nccl_comm_t *c = skv_nccl(comm);
    SKV_NCCL_CHECK(ncclAllReduce(c->d_flag, c->d_flag, 1, ncclInt32, ncclSum, c->nccl, c->stream));
    SKV_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return SKV_STATUS_OK;
}

static void skv_nccl_abort(skv_comm_t *comm)
{
    /* Unblocks this rank's pending NCCL kernels; peers see a failed or aborted comm. */
    ncclCommAbort(skv_nccl(comm)->nccl);
    skv_nccl(comm)->nccl = NULL;
}

static void skv_nccl_destroy(skv_comm_t *comm)
{
    skv_nccl_comm_t *c = skv_nccl(comm);
    if (c->nccl != NULL) {
        ncclCommDestroy(c->nccl);
    }
    if (c->d_flag != NULL) {
        cudaFree(c->d_flag);
    }
    skv_free(c);
}

static const skv_comm_ops_t skv_nccl_ops = {
    "nccl",           skv_nccl_destroy, skv_nccl_all_reduce_sum, skv_nccl_all_gather,
    skv_nccl_barrier, skv_nccl_abort,
};

static skv_status_t skv_nccl_join_setup(skv_nccl_group_t *g, skv_nccl_comm_t *c, int32_t rank)
{
    SKV_CUDA_CHECK(cudaSetDevice(c->device));
    SKV_CUDA_CHECK(cudaMalloc((void **)&c->d_flag, sizeof(int)));
    SKV_CUDA_CHECK(cudaMemset(c->d_flag, 0, sizeof(int)));
    SKV_NCCL_CHECK(ncclCommInitRank(&c->nccl, g->base.size, g->id, rank));
    return SKV_STATUS_OK;
}

static skv_status_t skv_nccl_join(skv_comm_group_t *group, int32_t rank, skv_backend_t *be,
                                  skv_comm_t **comm_p)
{
    skv_nccl_group_t *g = (skv_nccl_group_t *)group;
    skv_nccl_comm_t *c = (skv_nccl_comm_t *)skv_calloc(1, sizeof(*c));
    if (c == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    c->base.ops = &skv_nccl_ops;
    c->base.rank = rank;
    c->base.size = group->size;
    c->stream = skv_cuda(be)->stream;
    c->device = skv_cuda(be)->device;
    skv_status_t status = skv_nccl_join_setup(g, c, rank);
    if (status != SKV_STATUS_OK) {
        skv_nccl_destroy(&c->base);
        return status;
    }
    *comm_p = &c->base;
    return SKV_STATUS_OK;
}

static void skv_nccl_group_destroy(skv_comm_group_t *group)
{
    skv_free(group);
}

skv_status_t skv_nccl_comm_group_create(int32_t n_ranks, skv_comm_group_t **group_p)
{
    if (n_ranks < 1) {
        SKV_LOG_ERROR("a communicator group needs at least one rank (got %d)", n_ranks);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    skv_nccl_group_t *g = (skv_nccl_group_t *)skv_calloc(1, sizeof(*g));
    if (g == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    ncclResult_t r = ncclGetUniqueId(&g->id);
    if (r != ncclSuccess) {
        skv_free(g);
        return skv_nccl_error(r, "ncclGetUniqueId");
    }
    g->base.size = n_ranks;
    g->base.join = skv_nccl_join;
    g->base.destroy = skv_nccl_group_destroy;
    *group_p = &g->base;
    return SKV_STATUS_OK;
}
