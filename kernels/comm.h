/*
 * comm.h: collective communication between the ranks of a tensor-parallel group (sum
 * all-reduce, all-gather, barrier) over backend memory, behind one small table per
 * implementation, like the ops table.
 *
 * Why here (kernels/) and not in common/: a communicator is tied to a backend's memory and
 * stream (NCCL enqueues on the CUDA backend's stream; the CPU one reads host pointers), so it
 * is a backend component; common/ sees only this interface, as it sees ops.h.
 *
 * Two implementations:
 *   cpu  (kernels/cpu/cpu_comm.c): ranks are threads of one process sharing host memory.
 *        The sum runs in a FIXED order (rank 0 + rank 1 + ... in f32) and every rank gets the
 *        same bits, so a TP run is reproducible and its ranks never drift apart.
 *   nccl (kernels/cuda/cuda_comm.cu, CUDA builds with NCCL): one GPU per rank, collectives
 *        enqueued on the rank backend's stream (capturable in CUDA graphs).
 *
 * Model: one group per TP set of ranks, created once (skv_comm_group_create); each rank then
 * joins it from the thread that drives that rank's backend (skv_comm_join: NCCL's init blocks
 * until every rank has joined, so all ranks must join concurrently). A collective must be
 * called by every rank of the group, in the same order, with the same count and dtype; it is
 * ordered after the ops already enqueued on the rank's backend and before those enqueued
 * later (synchronous on the CPU). A rank that fails mid-step calls abort: every pending and
 * later collective of the group returns SKV_STATUS_DEVICE instead of waiting forever.
 */
#ifndef SKV_KERNELS_COMM_H
#define SKV_KERNELS_COMM_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "kernels/ops.h"

typedef struct skv_comm skv_comm_t;
typedef struct skv_comm_group skv_comm_group_t;

typedef struct skv_comm_ops {
    const char *name;
    /* Frees this rank's communicator (after the rank's last collective). */
    void (*destroy)(skv_comm_t *comm);
    /* In place: buf[count] (backend memory, dtype f32 / bf16 / f16) <- the sum of every
     * rank's buf. OK, or DEVICE after an abort or a device failure. */
    skv_status_t (*all_reduce_sum)(skv_comm_t *comm, void *buf, size_t count, skv_dtype_t dtype);
    /* recv[size * count] <- each rank r's send[count] at recv + r * count elements. send and
     * recv are backend memory and must not overlap. OK or DEVICE. */
    skv_status_t (*all_gather)(skv_comm_t *comm, const void *send, void *recv, size_t count,
                               skv_dtype_t dtype);
    /* Returns when every rank has called it (and, on a device, this rank's stream has
     * drained). OK or DEVICE. */
    skv_status_t (*barrier)(skv_comm_t *comm);
    /* Makes every pending and later collective of the group fail with DEVICE. Any thread. */
    void (*abort)(skv_comm_t *comm);
} skv_comm_ops_t;

/* One rank's communicator: the implementation embeds this. */
struct skv_comm {
    const skv_comm_ops_t *ops;
    int32_t rank;
    int32_t size;
};

/* The state shared by the ranks of a group before they join (the CPU rendezvous, NCCL's
 * unique id). The implementation embeds this. */
struct skv_comm_group {
    int32_t size;
    /* Joins rank `rank` driving backend be (borrowed; outlives the comm). */
    skv_status_t (*join)(skv_comm_group_t *group, int32_t rank, skv_backend_t *be,
                         skv_comm_t **comm_p);
    void (*destroy)(skv_comm_group_t *group);
};

/* Creates a group of n_ranks ranks for backends named backend_name ("cpu" and "cpu-ref" get
 * the CPU communicator, "cuda" NCCL). UNSUPPORTED (logged) when this build has no
 * communicator for that backend; INVALID_ARGUMENT for n_ranks < 1; NO_MEMORY / DEVICE.
 * Implemented in kernels/backend_select.c, which knows the backends of the build. */
skv_status_t skv_comm_group_create(const char *backend_name, int32_t n_ranks,
                                   skv_comm_group_t **group_p);

/* Joins rank `rank` (0 <= rank < size) from the thread that drives be; every rank must join,
 * concurrently (NCCL blocks until all have). The comm borrows the group, which must outlive
 * it. OK, NO_MEMORY, DEVICE. */
static inline skv_status_t skv_comm_join(skv_comm_group_t *group, int32_t rank, skv_backend_t *be,
                                         skv_comm_t **comm_p)
{
    return group->join(group, rank, be, comm_p);
}

/* Frees the group after every rank's comm is destroyed. NULL is ignored. */
static inline void skv_comm_group_destroy(skv_comm_group_t *group)
{
    if (group != NULL) {
        group->destroy(group);
    }
}

/* The CPU implementation (always built). */
skv_status_t skv_cpu_comm_group_create(int32_t n_ranks, skv_comm_group_t **group_p);

#endif /* SKV_KERNELS_COMM_H */
