/*
 * kvx_am.c: KV bytes as active messages, for transports without native RMA (tcp, and shared
 * memory into caller memory), and the per-peer choice between puts and messages.
 *
 * Why: over such transports UCX 1.13 emulates a put with messages anyway, and its emulation
 * acknowledges every put from the target's progress with no error path: a target whose
 * initiator dies mid-transfer can abort inside UCX. Carrying the KV as our own messages keeps
 * the target silent (eager) or on UCX's error-handled rendezvous path, and lets the target
 * check every write against the lease before it lands.
 *
 * Data message: header (48 bytes, little-endian)
 *   0 magic "SKVA" u32 | 4 version u32 (1) | 8 request_id u64 | 16 lease_token u64
 *  24 first u32 (index in the lease's block list) | 28 n u32 | 32 offset u64 | 40 bytes u64
 * and a payload of n * bytes: piece k goes to bytes [offset, offset + bytes) of block
 * first + k. Version 2 (56 bytes) adds 48 rank u32 | 52 reserved u32 (0): the data goes to
 * that rank's memory of a tensor-parallel pool (version 1 means rank 0, and is what rank 0's
 * data is sent as, so single-memory targets of older builds still understand it). The
 * target checks the lease (id and token), the rank, the index range and the byte range
 * before writing; eager payloads are copied, rendezvous payloads are received by UCX straight
 * into the blocks (an iov of the pieces). A device pool's messages go through host bounce
 * buffers instead (kvx_bounce.c): UCX never writes device memory on this path. Every data message counts on its lease; the
 * completion (version 2) carries how many the initiator sent, so the target hands blocks over
 * only when all of them are written, whatever order UCX delivers them in.
 *
 * Choice (skv_kvx_peer_mode): skv_kvx_config_t.data_mode forces a mode; otherwise puts are used only
 * when the endpoint has an RMA lane over a transport that writes remote memory without the
 * target's help (RDMA, cma, self, ...) and the target's packed rkey names that lane's remote
 * memory domain, i.e. exactly when UCX would not emulate the put. UCX 1.13 has no query for an
 * endpoint's lanes, so they are read from ucp_ep_print_info.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "common/kvx/kvx_internal.h"
#include "base/log.h"

/* ---- target: receiving data messages ------------------------------------------------- */

/* One rendezvous receive into a lease's blocks; alive until UCX calls back. */
typedef struct {
    skv_kvx_t *kvx;
    uint64_t request_id;
    uint64_t lease_token;
    uint32_t n_iov;
    ucp_dt_iov_t iov[];
} skv_kvx_am_recv_t;

static int skv_kvx_am_hdr_read(const void *header, size_t header_bytes, skv_kvx_am_hdr_t *h)
{
    const uint8_t *p = header;
    if (header_bytes < SKV_KVX_DATA_HEADER_BYTES || skv_kvx_get_u32(p) != SKV_KVX_DATA_MAGIC) {
        return -1;
    }
    uint32_t version = skv_kvx_get_u32(p + 4);
    if (version == 1 && header_bytes == SKV_KVX_DATA_HEADER_BYTES) {
        h->rank = 0;
    } else if (version == 2 && header_bytes == SKV_KVX_DATA_HEADER_BYTES_V2 &&
               skv_kvx_get_u32(p + 52) == 0) {
        h->rank = skv_kvx_get_u32(p + 48);
    } else {
        return -1;
    }
    h->request_id = skv_kvx_get_u64(p + 8);
    h->lease_token = skv_kvx_get_u64(p + 16);
    h->first = skv_kvx_get_u32(p + 24);
    h->n = skv_kvx_get_u32(p + 28);
    h->offset = skv_kvx_get_u64(p + 32);
    h->bytes = skv_kvx_get_u64(p + 40);
    return 0;
}

/* Checks a data message against its lease; returns the lease index or -1 (logged). */
static long skv_kvx_am_check(skv_kvx_t *kvx, const skv_kvx_am_hdr_t *h, size_t data_bytes)
{
    long i = skv_kvx_lease_find_token(kvx, h->request_id, h->lease_token);
    if (i < 0 || kvx->leases[i].end_status != SKV_STATUS_OK || kvx->leases[i].completed) {
        SKV_LOG_WARN("kvx: data for unknown, ended or completed request %llu refused",
                     (unsigned long long)h->request_id);
        return -1;
    }
    const skv_kvx_lease_t *l = &kvx->leases[i];
    uint64_t B = kvx->pool.block_bytes;
    uint64_t total = 0;
    if (h->rank >= kvx->n_mems || h->n == 0 || h->first >= l->n_blocks ||
        h->n > l->n_blocks - h->first || h->bytes == 0 || h->offset >= B ||
        h->bytes > B - h->offset || __builtin_mul_overflow(h->bytes, (uint64_t)h->n, &total) ||
        total != data_bytes) {
        SKV_LOG_WARN("kvx: request %llu: data for rank %u blocks [%u, +%u) bytes [%llu, +%llu) "
                     "with %zu payload bytes is outside its %u ranks of %u blocks of %llu "
                     "bytes: refused",
                     (unsigned long long)h->request_id, h->rank, h->first, h->n,
                     (unsigned long long)h->offset, (unsigned long long)h->bytes, data_bytes,
                     kvx->n_mems, l->n_blocks, (unsigned long long)B);
        kvx->leases[i].am_bad++;
        return -1;
    }
    return i;
}

uint8_t *skv_kvx_am_dst(const skv_kvx_t *kvx, const skv_kvx_lease_t *l,
                               const skv_kvx_am_hdr_t *h, uint32_t k)
{
    return (uint8_t *)kvx->mems[h->rank].base +
           (uint64_t)l->block_ids[h->first + k] * kvx->pool.block_bytes + h->offset;
}

void skv_kvx_am_recv_end(skv_kvx_t *kvx, uint64_t request_id, uint64_t token,
                                ucs_status_t status)
{
    long i = skv_kvx_lease_find_token(kvx, request_id, token);
    if (i < 0) {
        return; /* destroy ended the lease first */
    }
    skv_kvx_lease_t *l = &kvx->leases[i];
    l->am_pending--;
    if (status == UCS_OK) {
        l->am_done++;
    } else {
        SKV_LOG_WARN("kvx: request %llu: data receive failed: %s", (unsigned long long)request_id,
                     ucs_status_string(status));
        l->am_bad++;
    }
    skv_kvx_lease_settle(kvx, (uint32_t)i);
}

static void skv_kvx_am_recv_cb(void *request, ucs_status_t status, size_t length, void *user_data)
{
    skv_kvx_am_recv_t *r = user_data;
    ucp_request_free(request);
    skv_kvx_am_recv_end(r->kvx, r->request_id, r->lease_token, status);
    skv_free(r);
}

/* Starts the rendezvous receive of a checked message straight into the leased blocks. */
static ucs_status_t skv_kvx_am_recv_start(skv_kvx_t *kvx, long i, const skv_kvx_am_hdr_t *h,
                                          void *desc, size_t data_bytes)
{
    skv_kvx_lease_t *l = &kvx->leases[i];
    skv_kvx_am_recv_t *r = skv_malloc(sizeof(*r) + (size_t)h->n * sizeof(ucp_dt_iov_t));
    if (r == NULL) {
        l->am_bad++;
        return UCS_ERR_NO_MEMORY; /* the sender's message fails with it */
    }
    *r =
        (skv_kvx_am_recv_t){.kvx = kvx, .request_id = h->request_id, .lease_token = h->lease_token};
    for (uint32_t k = 0; k < h->n; k++) { /* adjacent pieces merge (whole consecutive blocks) */
        uint8_t *dst = skv_kvx_am_dst(kvx, l, h, k);
        ucp_dt_iov_t *last = r->n_iov ? &r->iov[r->n_iov - 1] : NULL;
        if (last != NULL && (uint8_t *)last->buffer + last->length == dst) {
            last->length += h->bytes;
        } else {
            r->iov[r->n_iov++] = (ucp_dt_iov_t){.buffer = dst, .length = h->bytes};
        }
    }
    int contig = r->n_iov == 1;
    ucp_request_param_t rp = {
        .op_attr_mask =
            UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_DATATYPE,
        .cb.recv_am = skv_kvx_am_recv_cb,
        .user_data = r,
        .datatype = contig ? ucp_dt_make_contig(1) : ucp_dt_make_iov(),
    };
    l->am_pending++;
    void *req = ucp_am_recv_data_nbx(kvx->worker, desc, contig ? r->iov[0].buffer : r->iov,
                                     contig ? data_bytes : r->n_iov, &rp);
    if (UCS_PTR_IS_PTR(req)) {
        return UCS_INPROGRESS; /* r is freed in the callback */
    }
    skv_kvx_am_recv_end(kvx, h->request_id, h->lease_token, UCS_PTR_STATUS(req));
    skv_free(r);
    return UCS_INPROGRESS; /* UCX owns desc once a receive was attempted */
}

ucs_status_t skv_kvx_am_data_cb(void *arg, const void *header, size_t header_bytes, void *data,
                                size_t data_bytes, const ucp_am_recv_param_t *param)
{
    skv_kvx_t *kvx = arg;
    int rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
    skv_kvx_am_hdr_t h;
    if (kvx->have_pool && kvx->pool.device_memory && kvx->cfg.device_ops == NULL) {
        SKV_LOG_WARN("kvx: data message for a device pool without device hooks: refused (only "
                     "same-host CUDA IPC pushes reach it)");
        return rndv ? UCS_ERR_UNSUPPORTED : UCS_OK;
    }
    if (!kvx->have_pool || skv_kvx_am_hdr_read(header, header_bytes, &h) != 0) {
        SKV_LOG_WARN("kvx: malformed data message (%zu header bytes) refused", header_bytes);
        return rndv ? UCS_ERR_INVALID_PARAM : UCS_OK;
    }
    long i = skv_kvx_am_check(kvx, &h, data_bytes);
    if (i < 0) {
        return rndv ? UCS_ERR_INVALID_PARAM : UCS_OK; /* a refused rendezvous fails the send */
    }
    if (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) {
        kvx->leases[i].data_ep = param->reply_ep; /* to fail stuck receives at expiry */
    }
    if (kvx->pool.device_memory) {
        return skv_kvx_bounce_take(kvx, i, &h, data, data_bytes, param);
    }
    if (rndv) {
        return skv_kvx_am_recv_start(kvx, i, &h, data, data_bytes);
    }
    skv_kvx_lease_t *l = &kvx->leases[i];
    for (uint32_t k = 0; k < h.n; k++) {
        memcpy(skv_kvx_am_dst(kvx, l, &h, k), (const uint8_t *)data + (uint64_t)k * h.bytes,
               h.bytes);
    }
    l->am_done++;
    skv_kvx_lease_settle(kvx, (uint32_t)i);
    return UCS_OK;
}

static void skv_kvx_am_close_cb(void *request, ucs_status_t status, void *user_data)
{
    ucp_request_free(request);
}

void skv_kvx_am_abort_ep(skv_kvx_t *kvx, ucp_ep_h ep)
{
    /* The peer overran a lease with receives still open (dead without UCX noticing, e.g.
     * over shared memory): closing its endpoint fails them, so the blocks can go back. */
    SKV_LOG_WARN("kvx: closing the endpoint of a peer whose data overran its lease");
    for (uint32_t i = 0; i < kvx->n_leases; i++) {
        if (kvx->leases[i].data_ep == ep) {
            kvx->leases[i].data_ep = NULL;
        }
    }
    ucp_request_param_t rp = {.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS | UCP_OP_ATTR_FIELD_CALLBACK,
                              .flags = UCP_EP_CLOSE_FLAG_FORCE,
                              .cb.send = skv_kvx_am_close_cb};
    (void)ucp_ep_close_nbx(ep, &rp); /* a request is freed by the callback */
}

/* ---- initiator: choosing the mode --------------------------------------------------------- */

/* Transports whose "RMA" needs the target's software (the put is emulated or bounced). */
static int skv_kvx_tl_is_software(const char *tl, size_t n)
{
    static const char *const soft[] = {"tcp", "posix", "sysv"};
    for (size_t i = 0; i < sizeof(soft) / sizeof(soft[0]); i++) {
        if (strlen(soft[i]) == n && strncmp(tl, soft[i], n) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Reads ucp_ep_print_info: "lane[i]:  r:tl/dev md[a] -> md[b]/..." and "put[i]: ..." lines.
 * Returns 1 when a put lane over a hardware-RMA transport reaches a memory domain in md_map. */
static int skv_kvx_ep_native_rma(ucp_ep_h ep, uint64_t md_map)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    if (f == NULL) {
        return 0;
    }
    ucp_ep_print_info(ep, f);
    fclose(f);
    enum { MAX_LANES = 64 };
    int lane_md[MAX_LANES];
    int lane_hw[MAX_LANES];
    int put_lane[MAX_LANES] = {0};
    for (int i = 0; i < MAX_LANES; i++) {
        lane_md[i] = -1;
        lane_hw[i] = 0;
    }
    for (char *line = text; line != NULL && *line != '\0';) {
        char *next = strchr(line, '\n');
        if (next != NULL) {
            *next++ = '\0';
        }
        int idx = -1, rsc = -1, md = -1;
        char *p = NULL;
        if ((p = strstr(line, "lane[")) != NULL && sscanf(p, "lane[%d]: %d:", &idx, &rsc) == 2 &&
            idx >= 0 && idx < MAX_LANES) {
            char *tl = strchr(p, ':');
            tl = tl != NULL ? strchr(tl + 1, ':') : NULL; /* after "r:" */
            char *arrow = strstr(p, "-> md[");
            if (tl != NULL && arrow != NULL && sscanf(arrow, "-> md[%d]", &md) == 1) {
                tl++;
                lane_md[idx] = md;
                lane_hw[idx] = !skv_kvx_tl_is_software(tl, strcspn(tl, "/ "));
            }
        } else if ((p = strstr(line, "put[")) != NULL && sscanf(p, "put[%d]:", &idx) == 1 &&
                   idx >= 0 && idx < MAX_LANES) {
            put_lane[idx] = 1;
        }
        line = next;
    }
    free(text);
    for (int i = 0; i < MAX_LANES; i++) {
        if (put_lane[i] && lane_hw[i] && lane_md[i] >= 0 && lane_md[i] < 64 &&
            (md_map & (1ULL << lane_md[i]))) {
            return 1;
        }
    }
    return 0;
}

skv_kvx_mode_t skv_kvx_peer_mode(skv_kvx_t *kvx, skv_kvx_peer_t *peer, const void *rkey,
                                 size_t rkey_bytes)
{
    if (kvx->cfg.data_mode != SKV_KVX_DATA_AUTO) {
        return kvx->cfg.data_mode == SKV_KVX_DATA_PUT ? SKV_KVX_MODE_PUT : SKV_KVX_MODE_AM;
    }
    /* rkey_bytes >= 9 by skv_kvx_rkey_check: the md_map leads the packed rkey. */
    uint64_t md_map = rkey_bytes >= 8 ? skv_kvx_get_u64(rkey) : 0;
    if (!peer->mode_known || peer->mode_md_map != md_map) {
        peer->mode = skv_kvx_ep_native_rma(peer->ep, md_map) ? SKV_KVX_MODE_PUT : SKV_KVX_MODE_AM;
        peer->mode_md_map = md_map;
        peer->mode_known = 1;
        SKV_LOG_DEBUG("kvx: peer uses %s for KV data",
                      peer->mode == SKV_KVX_MODE_PUT ? "puts" : "active messages");
    }
    return peer->mode;
}
