/*
 * kvx.h: KV-cache transfer over UCX (disaggregated prefill -> decode). See common/kvx/kvx.md.
 *
 * One skv_kvx_t per process owns the UCX context, one worker, the endpoint cache (one endpoint
 * per peer worker address) and, on a decode worker, the registration of its KV pool and the
 * lease table. The decode side ("target") reserves blocks and hands out a transfer-target
 * descriptor (opaque bytes the caller ships inside its own gRPC messages); the prefill side
 * ("initiator") decodes it and writes KV blocks with one-sided puts, flushes, then sends a
 * completion active message on the same endpoint.
 *
 * Threading: a skv_kvx_t and everything made from it belong to ONE thread (the engine loop
 * that created it); UCX runs in single-thread mode. Nothing here blocks unless its name says
 * wait, and every wait is bounded by a deadline (CLOCK_MONOTONIC ns, see base/clock.h).
 * The owner thread must call skv_kvx_progress() often (every engine-loop iteration): over
 * tcp and shared memory UCX emulates RMA with active messages, so a target that does not
 * progress stalls every initiator writing into it.
 *
 * Not owned here: the block allocator (the target calls the caller's release callback), gRPC,
 * and device memory: CUDA calls go through skv_kvx_device_ops_t (kernels/cuda fills it).
 */
#ifndef SKV_COMMON_KVX_H
#define SKV_COMMON_KVX_H

#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "kernels/kvx_device_ops.h"

typedef struct skv_kvx skv_kvx_t;
typedef struct skv_kvx_push skv_kvx_push_t;

/* Hard limits of the descriptor format; larger values are rejected as malformed. */
#define SKV_KVX_MAX_BLOCKS     65536u /* blocks per request (256 MiB / 4 KiB) */
#define SKV_KVX_MAX_BLOB_BYTES 65536u /* worker address or packed rkey */
#define SKV_KVX_MAX_RANKS                                                                          \
    16u /* memories of one pool (tensor-parallel ranks of one                                      \
           process: one node's GPUs) */

/* ---- transport ------------------------------------------------------------------------ */

/* Allocates/frees one host staging buffer; the CUDA backend passes cudaHostAlloc/FreeHost so
 * the staging buffers are pinned. NULL hooks mean page-aligned host memory. */
typedef void *(*skv_kvx_host_alloc_fn)(void *ctx, size_t bytes);
typedef void (*skv_kvx_host_free_fn)(void *ctx, void *ptr, size_t bytes);

/* Device-memory hooks (skv_kvx_device_ops_t): kernels/kvx_device_ops.h. */

/* How KV bytes move to a peer (kvx_am.c): chosen per peer, or forced (tests, benchmarks). */
typedef enum {
    SKV_KVX_DATA_AUTO = 0, /* puts over native RMA, active messages otherwise */
    SKV_KVX_DATA_PUT,      /* one-sided puts (UCX emulates them where RMA is software) */
    SKV_KVX_DATA_AM,       /* data messages the target checks and writes */
} skv_kvx_data_mode_t;

typedef struct {
    const char *name;                    /* UCX context name for its logs; may be NULL */
    size_t staging_bytes;                /* bytes per staging buffer; 0 = 4 MiB */
    unsigned n_staging;                  /* staging buffers (2 = double buffering); 0 = 2 */
    skv_kvx_host_alloc_fn staging_alloc; /* NULL = aligned host memory */
    skv_kvx_host_free_fn staging_free;
    void *staging_ctx;
    int64_t close_timeout_ms;               /* bound on closing endpoints at destroy; 0 = 1000 */
    size_t am_message_bytes;                /* largest KV data message (transports without native
                                               RMA, see kvx.md); 0 = 8 MiB */
    const skv_kvx_device_ops_t *device_ops; /* NULL = host memory only; borrowed until
                                               destroy */
    skv_kvx_data_mode_t data_mode;          /* AUTO, or a forced data path */
    int no_ipc;        /* non-zero: device pushes never use CUDA IPC (they stage through host
                          memory and UCX, as between hosts) */
    unsigned n_bounce; /* target with a device pool: host buffers (staging_alloc, am_message_bytes
                          each) that data messages land in before their copy to the device;
                          0 = 4 */
} skv_kvx_config_t;

/* Fills cfg with defaults. Any thread. */
void skv_kvx_config_default(skv_kvx_config_t *cfg);

/* Applies the transfer switches of the environment to cfg, for a process's main (nothing
 * below reads the environment): SKV_KVX_DATA=put|am forces the data path, SKV_KVX_NO_IPC=1
 * turns CUDA IPC off. Returns INVALID_ARGUMENT (logged) for a value it does not know. */
skv_status_t skv_kvx_config_env(skv_kvx_config_t *cfg);

/* Creates the process's transport: UCX context (RMA + AM), one worker, an empty endpoint
 * cache. Transports come from UCX's environment (UCX_TLS, UCX_NET_DEVICES, ...). cfg is
 * copied (NULL = defaults). Returns OK, UNAVAILABLE when UCX cannot start, NO_MEMORY. The
 * calling thread becomes the owner thread. */
skv_status_t skv_kvx_create(const skv_kvx_config_t *cfg, skv_kvx_t **kvx_p);

/* Ends every live lease (release callback, then owner told CANCELLED), closes endpoints
 * (bounded by close_timeout_ms, forced when a peer is gone), unregisters the pool and frees
 * everything. NULL is a no-op. Owner thread. */
void skv_kvx_destroy(skv_kvx_t *kvx);

/* Makes progress without blocking: drives the UCX worker (puts into our pool, completions,
 * wireup) and expires leases whose deadline passed. Returns the number of UCX events
 * handled (0 = idle, the caller may sleep or do other work). Owner thread. */
unsigned skv_kvx_progress(skv_kvx_t *kvx);

/* Returns this worker's address (the connection info a peer needs), borrowed until destroy. */
void skv_kvx_worker_address(const skv_kvx_t *kvx, const void **addr_p, size_t *bytes_p);

/* Returns non-zero when UCX reports support for CUDA device memory (UCP memory types), so
 * device memory could be registered directly. Debian/Ubuntu UCX builds report 0. Any time. */
int skv_kvx_cuda_supported(const skv_kvx_t *kvx);

/* ---- target (decode worker) ------------------------------------------------------------ */

/* Release callback: the lease of request_id ended without a completion (expired, cancelled,
 * failure completion, destroy); the blocks go back to the caller's allocator. Called exactly
 * once per such lease, from the owner thread inside a kvx call. block_ids is borrowed. */
typedef void (*skv_kvx_release_fn)(void *ctx, uint64_t request_id, const uint32_t *block_ids,
                                   uint32_t n_blocks);

/* Owner notification: the lease of request_id ended. status OK: the prefill completed, all
 * bytes are in the blocks, which now belong to the decode owner (no release callback);
 * first_token is valid. Otherwise (TIMEOUT = lease expired, CANCELLED, or the prefill's
 * failure status) the blocks were already released. Owner thread, inside a kvx call. */
typedef void (*skv_kvx_complete_fn)(void *ctx, uint64_t request_id, int32_t first_token,
                                    skv_status_t status);

typedef struct {
    void *base;           /* the contiguous KV pool of n_blocks * block_bytes bytes, or
                             NULL: UCX allocates it (shared-memory transports can then
                             map it into peers: true one-sided puts on one host) */
    uint64_t block_bytes; /* one block, all layers */
    uint32_t n_blocks;
    uint64_t fingerprint;     /* the KV layout fingerprint (dtype, block size, heads, ...) */
    int64_t release_grace_ms; /* blocks go back this long after a lease deadline, so puts a
                                 late initiator had in flight land first; 0 = 200 */
    skv_kvx_release_fn release;
    void *release_ctx;
    skv_kvx_complete_fn on_complete;
    void *complete_ctx;
    int device_memory; /* base is device memory (not NULL): with device_ops, it is
                          exported for same-host CUDA IPC pushes, and data messages land
                          in host bounce buffers and are copied in by the device hooks
                          (kvx_bounce.c); registered with UCX (one-sided puts over RDMA)
                          only when UCX supports CUDA memory */
    /* Tensor parallelism: the pool's blocks are split by KV head over n_ranks memories (one
     * per rank, the same block ids in each, every one n_blocks * block_bytes bytes). */
    uint32_t n_ranks;        /* 0 or 1: base alone; 2..SKV_KVX_MAX_RANKS: rank_bases */
    void *const *rank_bases; /* [n_ranks] when n_ranks > 1 (base is then ignored); each is
                                registered with UCX; the array is read only by register */
    uint32_t kv_heads;       /* KV heads per rank, stated in the descriptors of a multi-rank
                                pool (required when n_ranks > 1) */
} skv_kvx_pool_config_t;

/* Registers the whole pool once (one ucp_mem_map per rank memory; with base NULL and one rank
 * it also allocates it) and packs one rkey per memory; borrows the memories until destroy
 * (UCX-allocated memory is freed by destroy). Returns OK, INVALID_ARGUMENT (zero sizes,
 * overflow, already registered, more than SKV_KVX_MAX_RANKS ranks or a NULL rank base, no
 * kv_heads), UNSUPPORTED (a multi-rank device pool on a UCX without CUDA support: CUDA IPC
 * export is single-memory), TRANSPORT when UCX refuses a registration. Owner thread, at
 * startup. */
skv_status_t skv_kvx_pool_register(skv_kvx_t *kvx, const skv_kvx_pool_config_t *cfg);

/* Returns the pool's base address (the caller's, or the one UCX allocated), NULL without a
 * pool. For a multi-rank pool: rank 0's memory. Owner thread. */
void *skv_kvx_pool_base(const skv_kvx_t *kvx);

/* Returns rank `rank`'s memory of the pool, NULL without a pool or for a rank it does not
 * have. Owner thread. */
void *skv_kvx_pool_rank_base(const skv_kvx_t *kvx, uint32_t rank);

/* Compares the fingerprint a reservation request states with the pool's. Returns OK or
 * INVALID_ARGUMENT (mismatch, logged with both values; also when no pool is registered). */
skv_status_t skv_kvx_fingerprint_check(const skv_kvx_t *kvx, uint64_t fingerprint);

/* Reserves: checks the stated fingerprint, records a lease for request_id over the given
 * blocks (ids already taken from the caller's allocator; copied) until lease_deadline_ns,
 * and returns the encoded transfer-target descriptor in a new buffer (caller frees with
 * skv_free). Returns OK; INVALID_ARGUMENT (fingerprint mismatch, block id out of the pool,
 * zero or too many blocks, deadline passed); BUSY when request_id already holds a lease;
 * NO_MEMORY. On error no lease exists and the blocks are still the caller's. Owner thread. */
skv_status_t skv_kvx_target_reserve(skv_kvx_t *kvx, uint64_t request_id, uint64_t fingerprint,
                                    const uint32_t *block_ids, uint32_t n_blocks,
                                    int64_t lease_deadline_ns, void **desc_p, size_t *desc_bytes_p);

/* Ends the lease early: releases its blocks, tells the owner CANCELLED. Returns OK or
 * NOT_FOUND (no live lease; nothing happens). Owner thread. */
skv_status_t skv_kvx_target_cancel(skv_kvx_t *kvx, uint64_t request_id);

/* Number of live leases and of blocks they hold (tests, metrics). Owner thread. */
void skv_kvx_target_stats(const skv_kvx_t *kvx, uint32_t *n_leases_p, uint64_t *n_blocks_p);

/* ---- descriptor ------------------------------------------------------------------------ */

/* One memory (tensor-parallel rank) of the target's pool. */
typedef struct {
    uint64_t remote_base; /* address of block 0 in that memory */
    const void *rkey;     /* its packed rkey */
    size_t rkey_bytes;
} skv_kvx_desc_rank_t;

/* A decoded transfer-target descriptor. Blobs and block ids point into the same allocation. */
typedef struct {
    uint64_t request_id;
    uint64_t lease_token; /* random per lease: a completion must carry it */
    uint64_t fingerprint;
    uint64_t remote_base; /* address of block 0 in the target's pool */
    uint64_t block_bytes;
    uint32_t pool_blocks; /* block ids are < pool_blocks */
    uint32_t n_blocks;
    const uint32_t *block_ids; /* n_blocks, in request order */
    int64_t lease_deadline_ns; /* local monotonic clock: decode time + lease time left */
    const void *worker_addr;
    size_t worker_addr_bytes;
    const void *rkey;
    size_t rkey_bytes;
    /* Descriptor version 2: the pool is device memory exported for same-host CUDA IPC. */
    int ipc;
    uint8_t ipc_host[16]; /* the target host's identity (boot id) */
    uint8_t ipc_handle[SKV_KVX_IPC_HANDLE_BYTES];
    uint64_t ipc_offset; /* offset of block 0 inside the exported allocation */
    /* Descriptor version 3: the pool is split by KV head over tp_size memories (ranks), each
     * with the same block ids and block_bytes (one rank's share of a block). The fields
     * above (remote_base, rkey) are rank 0's. Versions 1 and 2 decode as tp_size 1,
     * kv_heads 0 (not stated: every head). Encode reads ranks[1..tp_size-1] when
     * tp_size > 1 (ranks may be NULL otherwise; tp_size 0 means 1). */
    uint32_t tp_size;
    uint32_t kv_heads;                /* KV heads per rank */
    const skv_kvx_desc_rank_t *ranks; /* decoded: [tp_size], ranks[0] repeats rank 0 */
} skv_kvx_desc_t;

/* Decodes and validates descriptor bytes: magic, version, exact length, limits, block ids in
 * the pool, address arithmetic without overflow (every rank), the packed rkeys' structure,
 * CRC-32C.
 * Returns OK with a new descriptor (free with skv_kvx_desc_destroy), FORMAT for garbage or
 * truncated input (logged once), NO_MEMORY. Never reads outside [bytes, bytes + n). Any
 * thread. */
skv_status_t skv_kvx_desc_decode(const void *bytes, size_t n, skv_kvx_desc_t **desc_p);

/* Encodes a descriptor (the lease time left is taken from lease_deadline_ns at this moment).
 * Returns OK with a new buffer (skv_free), INVALID_ARGUMENT for out-of-limit fields,
 * NO_MEMORY. Any thread. */
skv_status_t skv_kvx_desc_encode(const skv_kvx_desc_t *desc, void **bytes_p, size_t *n_p);

/* Frees a decoded descriptor. NULL is a no-op. */
void skv_kvx_desc_destroy(skv_kvx_desc_t *desc);

/* Checks that bytes look like a UCX packed rkey (bounds of every per-memory-domain part)
 * before UCX parses it, since ucp_ep_rkey_unpack takes no length. Returns OK or FORMAT. */
skv_status_t skv_kvx_rkey_check(const void *rkey, size_t n);

/* ---- initiator (prefill worker) -------------------------------------------------------- */

/* Copies block `index` (position in the descriptor's block list) of the request, the bytes
 * [offset, offset + bytes) of the block, into host staging memory dst. The CUDA backend does
 * a device-to-host copy into a pinned buffer here. Returns OK or an error that fails the
 * push. Owner thread. */
typedef skv_status_t (*skv_kvx_copy_fn)(void *ctx, uint32_t index, uint64_t offset, void *dst,
                                        uint64_t bytes);

/* Starts a push to the descriptor's target: connects (or reuses the cached endpoint, error
 * mode PEER), unpacks the rkey of every rank. One push (one lease, one completion) covers
 * every rank of a multi-rank target: the completion leaves only after the data of all of
 * them was flushed. deadline_ns bounds every later wait of this push (connect,
 * staging-buffer reuse, flush, completion); it is clipped to the lease deadline. The
 * descriptor is copied. Returns OK; FORMAT (rkey refused by UCX); UNAVAILABLE (cannot
 * reach the peer); TIMEOUT (lease already over); NO_MEMORY. Owner thread. */
skv_status_t skv_kvx_push_create(skv_kvx_t *kvx, const skv_kvx_desc_t *desc, int64_t deadline_ns,
                                 skv_kvx_push_t **push_p);

/* Writes bytes [offset, offset + bytes) of blocks first..first+n-1 (descriptor order) from
 * host memory: srcs[i] is the start of block first+i's range. Runs whose destinations and
 * sources are both contiguous become one put. Does not wait: the sources are borrowed until
 * the push finishes (skv_kvx_push_test returns non-AGAIN). Can be called many times (layer
 * by layer, block range by block range). Returns OK; INVALID_ARGUMENT (range outside the
 * request/block); the push's first error (TRANSPORT, UNAVAILABLE, TIMEOUT). Owner thread. */
skv_status_t skv_kvx_push_host(skv_kvx_push_t *push, uint32_t first, uint32_t n, uint64_t offset,
                               uint64_t bytes, const void *const *srcs);

/* Same as skv_kvx_push_host, but sources are reached through copy (e.g. device memory): the
 * blocks are copied into the transport's staging buffers, and a filled buffer is put while
 * the next one is being copied (double buffering). Returns after the last buffer's puts are
 * issued; waits only for a staging buffer to come back, bounded by the push deadline.
 * Returns as skv_kvx_push_host, plus the copy callback's error, and UNSUPPORTED when the
 * transport has no staging buffers. Owner thread. */
skv_status_t skv_kvx_push_staged(skv_kvx_push_t *push, uint32_t first, uint32_t n, uint64_t offset,
                                 uint64_t bytes, skv_kvx_copy_fn copy, void *copy_ctx);

/* skv_kvx_push_host and skv_kvx_push_staged into rank `rank`'s memory of a multi-rank target
 * (descriptor version 3; the functions without _rank write rank 0). offset and bytes are in
 * that rank's blocks (block_bytes is one rank's share). INVALID_ARGUMENT also for a rank the
 * target does not have. A caller moving KV between different head splits gets the ranges
 * from skv_kv_layout_tp_ranges (common/model/kv_pool.h). Owner thread. */
skv_status_t skv_kvx_push_host_rank(skv_kvx_push_t *push, uint32_t rank, uint32_t first, uint32_t n,
                                    uint64_t offset, uint64_t bytes, const void *const *srcs);
skv_status_t skv_kvx_push_staged_rank(skv_kvx_push_t *push, uint32_t rank, uint32_t first,
                                      uint32_t n, uint64_t offset, uint64_t bytes,
                                      skv_kvx_copy_fn copy, void *copy_ctx);

/* Ends the push without waiting: after every put, flushes the endpoint, then sends the
 * completion (request id, lease token, first_token, status) as an active message on the same
 * endpoint. A non-OK status tells the target the prefill failed (it releases the blocks).
 * Returns OK or the push's first error (then nothing is sent and the lease just expires).
 * Drive it with skv_kvx_push_test. Owner thread. */
skv_status_t skv_kvx_push_finish(skv_kvx_push_t *push, int32_t first_token, skv_status_t status);

/* Progresses the transport and reports the push's state: AGAIN while puts, flush or the
 * completion are in flight; OK when the completion left (target has all bytes); TRANSPORT /
 * UNAVAILABLE when the peer failed; TIMEOUT when the deadline passed. Owner thread. */
skv_status_t skv_kvx_push_test(skv_kvx_push_t *push);

/* Loops skv_kvx_push_test until it is not AGAIN (at most until the push deadline). */
skv_status_t skv_kvx_push_wait(skv_kvx_push_t *push);

/* Same as skv_kvx_push_host, but srcs[i] are device pointers (the transport needs
 * device_ops). A target on this host that exported its device pool gets device-to-device
 * copies through CUDA IPC (the mapping is opened once per peer); otherwise the blocks go
 * through the pinned staging buffers: asynchronous device-to-host copies on the transport's
 * stream, each buffer sent as soon as its copies finished while the next one fills. Never
 * waits: sources that find no free staging buffer are queued on the push (srcs is copied)
 * and move from skv_kvx_push_test. Returns as skv_kvx_push_host, DEVICE when a copy fails,
 * UNSUPPORTED without device_ops or for a multi-rank target (rank memories are reached only
 * by skv_kvx_push_host_rank / skv_kvx_push_staged_rank). Owner thread. */
skv_status_t skv_kvx_push_device(skv_kvx_push_t *push, uint32_t first, uint32_t n, uint64_t offset,
                                 uint64_t bytes, const void *const *srcs);

/* Returns 1 when the push moves bytes with device-to-device copies (CUDA IPC). */
int skv_kvx_push_uses_ipc(const skv_kvx_push_t *push);

/* Number of data operations issued: ucp_put_nbx calls, or data messages on transports
 * without native RMA (tests check coalescing). */
uint64_t skv_kvx_push_n_puts(const skv_kvx_push_t *push);

/* Returns 1 when the push carries KV as active messages the target writes into the leased
 * blocks (transports without native RMA, or SKV_KVX_DATA=am), 0 for one-sided puts. */
int skv_kvx_push_uses_messages(const skv_kvx_push_t *push);

/* Frees the push. An unfinished push is abandoned: in-flight requests are waited for until
 * the push deadline, and the endpoint is closed when that does not succeed (the target's
 * lease then expires). NULL is a no-op. Owner thread. */
void skv_kvx_push_destroy(skv_kvx_push_t *push);

#endif /* SKV_COMMON_KVX_H */
