/*
 * kvx_internal.h: the structures shared by the kvx source files (kvx.c: transport, endpoint
 * cache, progress; kvx_desc.c: descriptor codec; kvx_lease.c: target pool and leases;
 * kvx_push.c: initiator puts, staging, completion; kvx_am.c: KV as active messages on
 * transports without native RMA, and the choice between the two). Not a public header.
 *
 * Invariants: everything is touched by the owner thread only; a peer is freed only when no
 * push references it and its endpoint close finished; a lease is in the table until it ends,
 * and it ends exactly once (handed to the owner, or released through the release callback).
 */
#ifndef SKV_COMMON_KVX_INTERNAL_H
#define SKV_COMMON_KVX_INTERNAL_H

#include <ucp/api/ucp.h>

#include "common/kvx/kvx.h"

/* Active message ids: the completion message and KV data messages (kvx_am.c). */
#define SKV_KVX_AM_COMPLETE 0x5u
#define SKV_KVX_AM_DATA     0x6u

/* Completion message, little-endian fields (see kvx_lease.c): version 1 is 32 bytes;
 * version 2 (40 bytes) adds the number of data messages the target must have written. */
#define SKV_KVX_COMPLETE_MAGIC    0x43564B53u /* "SKVC" */
#define SKV_KVX_COMPLETE_BYTES_V1 32u
#define SKV_KVX_COMPLETE_BYTES    40u

/* KV data message header (kvx_am.c), little-endian: version 1 is 48 bytes (rank 0); version 2
 * (56 bytes) adds the rank whose memory the data goes to. */
#define SKV_KVX_DATA_MAGIC           0x41564B53u /* "SKVA" */
#define SKV_KVX_DATA_HEADER_BYTES    48u
#define SKV_KVX_DATA_HEADER_BYTES_V2 56u

/* The initiator's state machine (kvx_push.c). */
typedef enum {
    SKV_KVX_PUSH_PUSHING = 0,
    SKV_KVX_PUSH_FINISHING, /* finish called; device copies may still hold back sends */
    SKV_KVX_PUSH_FLUSHING,
    SKV_KVX_PUSH_SENDING,
    SKV_KVX_PUSH_DONE,
} skv_kvx_push_state_t;

/* How a push moves bytes (see kvx_am.c for the choice). */
typedef enum {
    SKV_KVX_MODE_PUT = 0, /* ucp_put_nbx into the registered pool (native RMA) */
    SKV_KVX_MODE_AM,      /* active messages the target writes into the leased blocks */
} skv_kvx_mode_t;

/* One connected peer worker; shared by all pushes to it. */
typedef struct skv_kvx_peer {
    struct skv_kvx_peer *next;
    void *addr; /* the peer's worker address (the cache key), owned */
    size_t addr_bytes;
    ucp_ep_h ep;          /* NULL once closed */
    ucs_status_t failure; /* UCS_OK while healthy; set by the error handler */
    void *close_req;      /* pending ucp_ep_close_nbx request, or NULL */
    uint32_t refs;        /* live pushes using this peer */
    void *wireup_req;     /* first flush after connect (wireup barrier), or NULL */
    int wired;            /* the wireup flush completed */
    int mode_known;       /* mode was decided for this peer (and rkey_md_map) */
    skv_kvx_mode_t mode;
    uint64_t mode_md_map; /* the packed rkey md_map the mode was decided for */
    int ipc_state;        /* CUDA IPC mapping of the peer's pool: 0 none, 1 open, -1 failed */
    void *ipc_base;       /* the mapped allocation (ipc_state 1) */
    uint8_t ipc_handle[SKV_KVX_IPC_HANDLE_BYTES];
} skv_kvx_peer_t;

/* A registered staging buffer; its puts in flight are counted so it is reused only after. */
typedef struct {
    void *ptr;
    size_t bytes;
    ucp_mem_h memh;
    uint32_t inflight;
    skv_kvx_push_t *push;     /* the push whose puts are in flight (errors go there) */
    void *fence;              /* device staging: device-to-host copies still running, or NULL */
    struct skv_kvx_run *runs; /* device staging: runs to send once the fence passed */
    uint32_t n_runs;
    uint32_t cap_runs;
} skv_kvx_stage_t;

/* A checked data message header (kvx_am.c): n pieces of `bytes` at `offset` of the lease's
 * blocks first..first+n-1, in rank `rank`'s memory. */
typedef struct {
    uint64_t request_id;
    uint64_t lease_token;
    uint32_t first;
    uint32_t n;
    uint64_t offset;
    uint64_t bytes;
    uint32_t rank;
} skv_kvx_am_hdr_t;

/* A host buffer a data message for a device pool lands in before the device hooks copy its
 * pieces into the blocks (kvx_bounce.c). */
typedef enum {
    SKV_KVX_BOUNCE_FREE = 0,
    SKV_KVX_BOUNCE_RECV, /* UCX receives a rendezvous payload into it */
    SKV_KVX_BOUNCE_COPY, /* its copies to the device run until fence passes */
} skv_kvx_bounce_state_t;

typedef struct {
    uint8_t *buf; /* am_message_bytes of staging_alloc memory (pinned with CUDA hooks) */
    skv_kvx_bounce_state_t state;
    skv_kvx_am_hdr_t h; /* the message it holds */
    void *fence;
    struct skv_kvx *kvx; /* for the receive callback */
} skv_kvx_bounce_t;

/* A data message for a device pool that found every bounce buffer busy: a rendezvous
 * descriptor UCX keeps until it is received, or an eager payload kept by UCX (data_desc,
 * released with ucp_am_data_release) or copied (owned). Counted in its lease's am_pending. */
typedef struct skv_kvx_bounce_wait {
    struct skv_kvx_bounce_wait *next;
    skv_kvx_am_hdr_t h;
    void *desc;         /* rendezvous descriptor, or NULL */
    const void *data;   /* eager payload, or NULL */
    void *data_desc;    /* UCX's eager payload to release, or NULL */
    uint8_t *data_copy; /* our copy of an eager payload, or NULL */
    size_t data_bytes;
} skv_kvx_bounce_wait_t;

/* One registered memory of the target's pool (one per tensor-parallel rank). */
typedef struct {
    void *base;     /* the caller's memory, or the one UCX allocated */
    ucp_mem_h memh; /* NULL: not registered (device pool without UCX CUDA support) */
    void *rkey_buf; /* packed rkey */
    size_t rkey_bytes;
} skv_kvx_mem_t;

/* A reserved request on the target. Data messages (AM mode) are counted so the lease ends
 * only when every message the completion announces is in the blocks and no receive into
 * them is still running. */
typedef struct {
    uint64_t request_id;
    uint64_t lease_token;
    int64_t deadline_ns; /* lease deadline; blocks go back at deadline + grace */
    uint32_t n_blocks;
    uint32_t *block_ids; /* owned */
    uint32_t am_pending; /* rendezvous receives into the blocks still running */
    uint32_t am_done;    /* data messages written completely */
    uint32_t am_bad;     /* data messages refused or failed */
    int completed;       /* a completion arrived; waiting for the data it announces */
    uint32_t am_expect;  /* data messages the completion announced */
    int32_t first_token;
    skv_status_t final_status;
    skv_status_t end_status; /* OK, or why it must end once am_pending drops to 0 */
    ucp_ep_h data_ep;        /* the endpoint its data messages came from (UCX's), or NULL */
} skv_kvx_lease_t;

struct skv_kvx {
    skv_kvx_config_t cfg;
    ucp_context_h ctx;
    ucp_worker_h worker;
    ucp_address_t *addr;
    size_t addr_bytes;
    int cuda;
    uint64_t rng; /* xorshift state for lease tokens */
    skv_kvx_peer_t *peers;
    /* staging (initiator) */
    skv_kvx_stage_t *stages;
    unsigned n_stages;
    unsigned next_stage;
    /* pool and leases (target) */
    int have_pool;
    skv_kvx_pool_config_t pool; /* pool.base is mems[0].base; pool.rank_bases is NULL */
    skv_kvx_mem_t mems[SKV_KVX_MAX_RANKS];
    uint32_t n_mems; /* registered memories (ranks) */
    skv_kvx_lease_t *leases;
    uint32_t n_leases;
    uint32_t cap_leases;
    int64_t next_scan_ns; /* next lease-expiry scan */
    uint8_t host_id[16];  /* this host's identity (boot id) for same-host IPC */
    int have_host_id;
    int pool_ipc; /* the pool is exported for CUDA IPC */
    uint8_t pool_ipc_handle[SKV_KVX_IPC_HANDLE_BYTES];
    uint64_t pool_ipc_offset;
    int rkey_is_ours; /* mems[0].rkey_buf is our placeholder (device pool, no UCX CUDA) */
    /* bounce buffers of a device pool (kvx_bounce.c) */
    skv_kvx_bounce_t *bounce;
    unsigned n_bounce;
    skv_kvx_bounce_wait_t *wait_head, *wait_tail;
};

/* A pending contiguous run (destination address, source pointer, bytes) being coalesced.
 * For data messages, the run also names its pieces: n pieces of piece bytes at offset of
 * descriptor blocks first..first+n-1, sources contiguous from src. A run stays inside one
 * rank's memory (one rkey, one message header). */
typedef struct skv_kvx_run {
    uint32_t rank;
    uint64_t dst;
    const uint8_t *src;
    uint64_t bytes;
    uint32_t first;
    uint32_t n;
    uint64_t offset;
    uint64_t piece;
} skv_kvx_run_t;

/* Device sources of one skv_kvx_push_device call not yet copied into staging buffers
 * (kvx_device.c): n pieces of `bytes` at `offset` of descriptor blocks first.., from srcs. */
typedef struct skv_kvx_dwork {
    uint32_t first;
    uint32_t n;
    uint64_t offset;
    uint64_t bytes;
    const void **srcs; /* [n], owned */
} skv_kvx_dwork_t;

struct skv_kvx_push {
    skv_kvx_t *kvx;
    skv_kvx_peer_t *peer;
    ucp_rkey_h rkeys[SKV_KVX_MAX_RANKS]; /* one per rank of the target ([tp_size]) */
    skv_kvx_desc_t *desc;                /* owned copy */
    int64_t deadline_ns;
    skv_kvx_push_state_t state;
    skv_status_t error;  /* first error; sticky */
    uint32_t inflight;   /* host-source puts not yet completed */
    int ready;           /* wired up and mode chosen (skv_kvx_push_ready) */
    skv_kvx_mode_t mode; /* puts or data messages (kvx_am.c) */
    uint32_t am_msgs;    /* data messages sent (the completion announces them) */
    uint64_t n_puts;
    void *flush_req;
    void *am_req;
    skv_kvx_dwork_t *dwork;    /* staged device sources waiting for a free staging buffer: */
    uint32_t n_dwork;          /* queue [dwork_next, n_dwork) of cap_dwork; within */
    uint32_t cap_dwork;        /* dwork[dwork_next], pieces before dwork_k and dwork_done */
    uint32_t dwork_next;       /* bytes of piece dwork_k are already copied */
    uint32_t dwork_k;
    uint64_t dwork_done;
    int ipc;                             /* device sources go device-to-device (CUDA IPC) */
    void *ipc_fence;                     /* fence after the last IPC copies, or NULL */
    uint8_t msg[SKV_KVX_COMPLETE_BYTES]; /* completion header; alive until sent */
};

/* kvx_push.c: helpers shared with kvx_device.c */
void skv_kvx_push_fail(skv_kvx_push_t *push, skv_status_t status, const char *what);
void skv_kvx_put_stage_cb(void *request, ucs_status_t status, void *user_data);
skv_status_t skv_kvx_push_ready(skv_kvx_push_t *push);
skv_status_t skv_kvx_push_health(skv_kvx_push_t *push);
skv_status_t skv_kvx_send(skv_kvx_push_t *push, const skv_kvx_run_t *run, const void *const *srcs,
                          ucp_send_nbx_callback_t cb, void *cb_arg, uint32_t *counter);
skv_status_t skv_kvx_push_check_range(const skv_kvx_push_t *push, uint32_t rank, uint32_t first,
                                      uint32_t n, uint64_t offset, uint64_t bytes);
uint64_t skv_kvx_push_dst(const skv_kvx_push_t *push, uint32_t rank, uint32_t i, uint64_t offset);
int skv_kvx_run_extend(skv_kvx_run_t *run, uint64_t dst, const uint8_t *src, uint64_t bytes);
uint64_t skv_kvx_msg_max(const skv_kvx_push_t *push);
int skv_kvx_stage_extend(const skv_kvx_push_t *push, skv_kvx_run_t *run, uint32_t rank,
                         uint64_t dst, const uint8_t *src, uint32_t i, uint64_t offset,
                         uint64_t bytes);
/* A run of one piece: bytes at offset of descriptor block i of rank, from src to dst. */
skv_kvx_run_t skv_kvx_run_piece(uint32_t rank, uint64_t dst, const uint8_t *src, uint32_t i,
                                uint64_t offset, uint64_t bytes);

/* kvx_device.c. poll: sends staging buffers whose copies passed, fills free ones from the
 * push's queue (never waits); AGAIN while copies or queued sources remain. abandon: drops
 * the queue and waits (bounded) for the push's copies. */
skv_status_t skv_kvx_device_poll(skv_kvx_push_t *push);
void skv_kvx_device_abandon(skv_kvx_push_t *push);
void skv_kvx_peer_ipc_close(skv_kvx_t *kvx, skv_kvx_peer_t *peer);
void skv_kvx_host_id(uint8_t id[16]);

/* kvx.c */
skv_status_t skv_kvx_peer_get(skv_kvx_t *kvx, const void *addr, size_t addr_bytes,
                              skv_kvx_peer_t **peer_p);
void skv_kvx_peer_put(skv_kvx_t *kvx, skv_kvx_peer_t *peer);
void skv_kvx_peer_force_close(skv_kvx_t *kvx, skv_kvx_peer_t *peer);
skv_status_t skv_kvx_peer_wait_wired(skv_kvx_t *kvx, skv_kvx_peer_t *peer, int64_t deadline_ns);
skv_status_t skv_kvx_status_from_ucs(ucs_status_t status);
uint64_t skv_kvx_random64(skv_kvx_t *kvx);

/* kvx_am.c. am_dst: the address of piece k of a checked message in its lease's blocks.
 * am_recv_end: counts a finished (or failed) message on its lease, if it still exists, and
 * settles the lease. */
uint8_t *skv_kvx_am_dst(const skv_kvx_t *kvx, const skv_kvx_lease_t *l, const skv_kvx_am_hdr_t *h,
                        uint32_t k);
void skv_kvx_am_recv_end(skv_kvx_t *kvx, uint64_t request_id, uint64_t token,
                         ucs_status_t status);
ucs_status_t skv_kvx_am_data_cb(void *arg, const void *header, size_t header_bytes, void *data,
                                size_t data_bytes, const ucp_am_recv_param_t *param);
void skv_kvx_am_abort_ep(skv_kvx_t *kvx, ucp_ep_h ep);
skv_kvx_mode_t skv_kvx_peer_mode(skv_kvx_t *kvx, skv_kvx_peer_t *peer, const void *rkey,
                                 size_t rkey_bytes);

/* kvx_bounce.c: data messages into a device pool through host bounce buffers.
 * init: allocates the buffers (at pool registration). take: the data callback's path for a
 * checked message of lease i (returns what the callback returns). poll: from progress, ends
 * messages whose device copies passed and serves waiting ones. cleanup: before the UCX
 * worker goes (drops waiting messages, waits for queued copies, bounded); free: after it. */
skv_status_t skv_kvx_bounce_init(skv_kvx_t *kvx);
ucs_status_t skv_kvx_bounce_take(skv_kvx_t *kvx, long i, const skv_kvx_am_hdr_t *h, void *data,
                                 size_t data_bytes, const ucp_am_recv_param_t *param);
void skv_kvx_bounce_poll(skv_kvx_t *kvx);
void skv_kvx_bounce_cleanup(skv_kvx_t *kvx);
void skv_kvx_bounce_free(skv_kvx_t *kvx);

/* kvx_lease.c */
void skv_kvx_pool_unmap(skv_kvx_t *kvx);
long skv_kvx_lease_find_token(const skv_kvx_t *kvx, uint64_t request_id, uint64_t token);
void skv_kvx_lease_settle(skv_kvx_t *kvx, uint32_t i);
ucs_status_t skv_kvx_am_complete_cb(void *arg, const void *header, size_t header_bytes, void *data,
                                    size_t data_bytes, const ucp_am_recv_param_t *param);
void skv_kvx_leases_expire(skv_kvx_t *kvx, int64_t now_ns);
void skv_kvx_leases_cleanup(skv_kvx_t *kvx);

/* kvx_desc.c: a deep copy of a descriptor in one allocation (skv_kvx_desc_destroy frees it),
 * and little-endian helpers shared with the completion and data messages. */
skv_status_t skv_kvx_desc_clone(const skv_kvx_desc_t *d, skv_kvx_desc_t **out_p);
void skv_kvx_put_u32(uint8_t *p, uint32_t v);
void skv_kvx_put_u64(uint8_t *p, uint64_t v);
uint32_t skv_kvx_get_u32(const uint8_t *p);
uint64_t skv_kvx_get_u64(const uint8_t *p);

#endif /* SKV_COMMON_KVX_INTERNAL_H */
