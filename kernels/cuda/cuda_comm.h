/*
 * cuda_comm.h: the NCCL communicator's constructor (kernels/comm.h), the only symbol of
 * cuda_comm.cu the rest of the build sees. Plain C, no CUDA or NCCL header. Present only in
 * builds with NCCL (SKV_HAVE_NCCL).
 */
#ifndef SKV_KERNELS_CUDA_COMM_H
#define SKV_KERNELS_CUDA_COMM_H

#include "kernels/comm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Creates a group of n_ranks NCCL ranks (one GPU each): takes NCCL's unique id. Ranks join
 * with skv_comm_join from the threads that drive their CUDA backends. INVALID_ARGUMENT,
 * NO_MEMORY, DEVICE (logged). Any thread. */
skv_status_t skv_nccl_comm_group_create(int32_t n_ranks, skv_comm_group_t **group_p);

#ifdef __cplusplus
}
#endif

#endif /* SKV_KERNELS_CUDA_COMM_H */
