/*
 * kvx_desc.c: the transfer-target descriptor as bytes, and the packed-rkey pre-check.
 *
 * Wire format (version 1, little-endian, fixed 72-byte header):
 *   0 magic "SKVD" u32 | 4 version u16 | 6 flags u16 (0) | 8 request_id u64
 *  16 lease_token u64  | 24 fingerprint u64 | 32 remote_base u64 | 40 block_bytes u64
 *  48 pool_blocks u32  | 52 n_blocks u32 | 56 lease_ms_left u32 | 60 addr_bytes u32
 *  64 rkey_bytes u32   | 68 reserved u32 (0)
 *  72 block_ids u32[n_blocks] | worker address | packed rkey | CRC-32C u32 of all before.
 * Version 2 (flags bit 0 set) adds, before the CRC, the same-host CUDA IPC section:
 *     host id u8[16] | IPC memory handle u8[64] | offset of block 0 in the allocation u64.
 * Version 3 (flags exactly bit 1, no IPC section) adds, before the CRC, the tensor-parallel
 * section of a pool split by KV head over tp_size memories (ranks):
 *     tp_size u32 (2..SKV_KVX_MAX_RANKS) | kv_heads per rank u32 (>= 1) |
 *     for ranks 1..tp_size-1: remote_base u64, rkey_bytes u32, reserved u32 (0) |
 *     the packed rkeys of ranks 1..tp_size-1, in rank order.
 *   Rank 0's base and rkey are the header's; block_bytes is one rank's share of a block.
 * The oldest version that can say it is written (one rank without IPC: version 1), so older
 * decoders keep working with the pools they understand.
 * The lease travels as time left (ms) because monotonic clocks differ between hosts.
 * Decoding never trusts a length before checking it against the bytes actually present.
 */
#include <pthread.h>
#include <string.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "common/kvx/kvx_internal.h"
#include "base/log.h"

#define SKV_KVX_DESC_MAGIC        0x44564B53u /* "SKVD" */
#define SKV_KVX_DESC_VERSION      1u
#define SKV_KVX_DESC_VERSION_IPC  2u
#define SKV_KVX_DESC_VERSION_TP   3u
#define SKV_KVX_DESC_FLAG_IPC     1u
#define SKV_KVX_DESC_FLAG_TP      2u
#define SKV_KVX_DESC_TP_FIXED     8u  /* tp_size, kv_heads */
#define SKV_KVX_DESC_TP_ENTRY     16u /* remote_base, rkey_bytes, reserved (ranks 1..) */
#define SKV_KVX_DESC_HEADER       72u
#define SKV_KVX_DESC_IPC_BYTES    (16u + SKV_KVX_IPC_HANDLE_BYTES + 8u)
#define SKV_KVX_DESC_MAX_LEASE_MS 86400000LL /* one day: anything longer is garbage */

void skv_kvx_put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

void skv_kvx_put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

uint32_t skv_kvx_get_u32(const uint8_t *p)
{
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

uint64_t skv_kvx_get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) {
        v = (v << 8) | p[i];
    }
    return v;
}

/* ---- CRC-32C (Castagnoli), table-driven; catches truncation and bit flips ------------- */

static uint32_t skv_kvx_crc_table[256];
static pthread_once_t skv_kvx_crc_once = PTHREAD_ONCE_INIT;

static void skv_kvx_crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
        skv_kvx_crc_table[i] = c;
    }
}

static uint32_t skv_kvx_crc32c(const uint8_t *p, size_t n)
{
    pthread_once(&skv_kvx_crc_once, skv_kvx_crc_init);
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c = skv_kvx_crc_table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    }
    return c ^ 0xFFFFFFFFu;
}

/* ---- packed rkey pre-check --------------------------------------------------------------- */

skv_status_t skv_kvx_rkey_check(const void *rkey, size_t n)
{
    /* UCX 1.13-1.16 packed rkey: md_map u64, memory type u8, then for each bit of md_map a
     * size byte and that many bytes; newer versions may append more, which is allowed. */
    const uint8_t *p = rkey;
    if (rkey == NULL || n < 9 || n > SKV_KVX_MAX_BLOB_BYTES) {
        SKV_LOG_WARN("kvx: packed rkey of %zu bytes: too short or too long", n);
        return SKV_STATUS_FORMAT;
    }
    uint64_t md_map = skv_kvx_get_u64(p);
    /* md_map 0 is valid: no memory domain registered the region (shm transports cannot
     * register malloc'd memory), RMA then runs over active messages. */
    if (p[8] >= UCS_MEMORY_TYPE_LAST) {
        SKV_LOG_WARN("kvx: packed rkey: md_map 0x%llx, memory type %u: not a UCX rkey",
                     (unsigned long long)md_map, p[8]);
        return SKV_STATUS_FORMAT;
    }
    size_t off = 9;
    for (int bit = 0; bit < 64; bit++) {
        if (!(md_map & (1ULL << bit))) {
            continue;
        }
        if (off >= n || n - off - 1 < p[off]) {
            SKV_LOG_WARN("kvx: packed rkey truncated at memory domain %d (%zu of %zu bytes)", bit,
                         off, n);
            return SKV_STATUS_FORMAT;
        }
        off += 1 + (size_t)p[off];
    }
    return SKV_STATUS_OK;
}

/* ---- encode ------------------------------------------------------------------------------ */

/* Ranks of a descriptor: tp_size 0 means one. */
static uint32_t skv_kvx_desc_tp(const skv_kvx_desc_t *d)
{
    return d->tp_size > 1 ? d->tp_size : 1;
}

/* Checks ranks 1.. of a multi-rank descriptor: limits, no IPC, addresses without overflow,
 * packed rkeys' structure. Rank 0 is the header's (checked by the caller). */
static skv_status_t skv_kvx_desc_check_ranks(const skv_kvx_desc_t *d, uint64_t pool_bytes)
{
    uint32_t tp = skv_kvx_desc_tp(d);
    if (tp == 1) {
        return SKV_STATUS_OK;
    }
    if (tp > SKV_KVX_MAX_RANKS || d->ranks == NULL || d->kv_heads == 0 || d->ipc) {
        SKV_LOG_WARN("kvx: descriptor of %u ranks (limit %u) with %u KV heads each, IPC %d: "
                     "out of limits",
                     tp, SKV_KVX_MAX_RANKS, d->kv_heads, d->ipc);
        return SKV_STATUS_FORMAT;
    }
    for (uint32_t r = 1; r < tp; r++) {
        const skv_kvx_desc_rank_t *k = &d->ranks[r];
        uint64_t end = 0;
        if (k->rkey == NULL || k->rkey_bytes == 0 || k->rkey_bytes > SKV_KVX_MAX_BLOB_BYTES ||
            __builtin_add_overflow(k->remote_base, pool_bytes, &end)) {
            SKV_LOG_WARN("kvx: descriptor rank %u: base 0x%llx, rkey of %zu bytes: out of limits",
                         r, (unsigned long long)k->remote_base, k->rkey_bytes);
            return SKV_STATUS_FORMAT;
        }
        SKV_CHECK(skv_kvx_rkey_check(k->rkey, k->rkey_bytes));
    }
    return SKV_STATUS_OK;
}

/* Bytes of the tensor-parallel section (version 3), 0 for one rank. */
static size_t skv_kvx_desc_tp_bytes(const skv_kvx_desc_t *d)
{
    uint32_t tp = skv_kvx_desc_tp(d);
    size_t n = tp > 1 ? SKV_KVX_DESC_TP_FIXED + (size_t)(tp - 1) * SKV_KVX_DESC_TP_ENTRY : 0;
    for (uint32_t r = 1; r < tp; r++) {
        n += d->ranks[r].rkey_bytes;
    }
    return n;
}

/* Checks what encode and decode agree on; logs the first violated limit. */
static skv_status_t skv_kvx_desc_check_fields(const skv_kvx_desc_t *d)
{
    uint64_t pool_bytes = 0;
    uint64_t end = 0;
    if (d->n_blocks == 0 || d->n_blocks > SKV_KVX_MAX_BLOCKS || d->block_bytes == 0 ||
        d->pool_blocks == 0 || d->worker_addr_bytes == 0 ||
        d->worker_addr_bytes > SKV_KVX_MAX_BLOB_BYTES || d->rkey_bytes == 0 ||
        d->rkey_bytes > SKV_KVX_MAX_BLOB_BYTES) {
        SKV_LOG_WARN("kvx: descriptor out of limits: %u blocks of %llu bytes, pool %u, "
                     "address %zu bytes, rkey %zu bytes",
                     d->n_blocks, (unsigned long long)d->block_bytes, d->pool_blocks,
                     d->worker_addr_bytes, d->rkey_bytes);
        return SKV_STATUS_FORMAT;
    }
    if (__builtin_mul_overflow(d->block_bytes, (uint64_t)d->pool_blocks, &pool_bytes) ||
        __builtin_add_overflow(d->remote_base, pool_bytes, &end)) {
        SKV_LOG_WARN("kvx: descriptor pool (base 0x%llx, %u x %llu bytes) overflows",
                     (unsigned long long)d->remote_base, d->pool_blocks,
                     (unsigned long long)d->block_bytes);
        return SKV_STATUS_FORMAT;
    }
    for (uint32_t i = 0; i < d->n_blocks; i++) {
        if (d->block_ids[i] >= d->pool_blocks) {
            SKV_LOG_WARN("kvx: descriptor block id %u at %u is outside the pool of %u",
                         d->block_ids[i], i, d->pool_blocks);
            return SKV_STATUS_FORMAT;
        }
    }
    SKV_CHECK(skv_kvx_desc_check_ranks(d, pool_bytes));
    return skv_kvx_rkey_check(d->rkey, d->rkey_bytes);
}

static void skv_kvx_desc_write_header(const skv_kvx_desc_t *d, uint32_t lease_ms, uint8_t *p)
{
    int tp = skv_kvx_desc_tp(d) > 1;
    skv_kvx_put_u32(p + 0, SKV_KVX_DESC_MAGIC);
    p[4] = tp ? SKV_KVX_DESC_VERSION_TP : d->ipc ? SKV_KVX_DESC_VERSION_IPC : SKV_KVX_DESC_VERSION;
    p[5] = 0;
    p[6] = tp ? SKV_KVX_DESC_FLAG_TP : d->ipc ? SKV_KVX_DESC_FLAG_IPC : 0;
    p[7] = 0;
    skv_kvx_put_u64(p + 8, d->request_id);
    skv_kvx_put_u64(p + 16, d->lease_token);
    skv_kvx_put_u64(p + 24, d->fingerprint);
    skv_kvx_put_u64(p + 32, d->remote_base);
    skv_kvx_put_u64(p + 40, d->block_bytes);
    skv_kvx_put_u32(p + 48, d->pool_blocks);
    skv_kvx_put_u32(p + 52, d->n_blocks);
    skv_kvx_put_u32(p + 56, lease_ms);
    skv_kvx_put_u32(p + 60, (uint32_t)d->worker_addr_bytes);
    skv_kvx_put_u32(p + 64, (uint32_t)d->rkey_bytes);
    skv_kvx_put_u32(p + 68, 0);
}

/* Writes the tensor-parallel section at p; returns its length. */
static size_t skv_kvx_desc_write_tp(const skv_kvx_desc_t *d, uint8_t *p)
{
    uint32_t tp = skv_kvx_desc_tp(d);
    skv_kvx_put_u32(p, tp);
    skv_kvx_put_u32(p + 4, d->kv_heads);
    size_t off = SKV_KVX_DESC_TP_FIXED;
    for (uint32_t r = 1; r < tp; r++, off += SKV_KVX_DESC_TP_ENTRY) {
        skv_kvx_put_u64(p + off, d->ranks[r].remote_base);
        skv_kvx_put_u32(p + off + 8, (uint32_t)d->ranks[r].rkey_bytes);
        skv_kvx_put_u32(p + off + 12, 0);
    }
    for (uint32_t r = 1; r < tp; r++) {
        memcpy(p + off, d->ranks[r].rkey, d->ranks[r].rkey_bytes);
        off += d->ranks[r].rkey_bytes;
    }
    return off;
}

skv_status_t skv_kvx_desc_encode(const skv_kvx_desc_t *d, void **bytes_p, size_t *n_p)
{
    if (skv_kvx_desc_check_fields(d) != SKV_STATUS_OK) {
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    int64_t left_ms = (d->lease_deadline_ns - skv_clock_now_ns()) / 1000000;
    left_ms = left_ms < 0                           ? 0
              : left_ms > SKV_KVX_DESC_MAX_LEASE_MS ? SKV_KVX_DESC_MAX_LEASE_MS
                                                    : left_ms;
    size_t n = SKV_KVX_DESC_HEADER + 4 * (size_t)d->n_blocks + d->worker_addr_bytes +
               d->rkey_bytes + (d->ipc ? SKV_KVX_DESC_IPC_BYTES : 0) + skv_kvx_desc_tp_bytes(d) + 4;
    uint8_t *p = skv_malloc(n);
    if (p == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    skv_kvx_desc_write_header(d, (uint32_t)left_ms, p);
    size_t off = SKV_KVX_DESC_HEADER;
    for (uint32_t i = 0; i < d->n_blocks; i++, off += 4) {
        skv_kvx_put_u32(p + off, d->block_ids[i]);
    }
    memcpy(p + off, d->worker_addr, d->worker_addr_bytes);
    off += d->worker_addr_bytes;
    memcpy(p + off, d->rkey, d->rkey_bytes);
    off += d->rkey_bytes;
    if (d->ipc) {
        memcpy(p + off, d->ipc_host, 16);
        memcpy(p + off + 16, d->ipc_handle, SKV_KVX_IPC_HANDLE_BYTES);
        skv_kvx_put_u64(p + off + 16 + SKV_KVX_IPC_HANDLE_BYTES, d->ipc_offset);
        off += SKV_KVX_DESC_IPC_BYTES;
    }
    if (skv_kvx_desc_tp(d) > 1) {
        off += skv_kvx_desc_write_tp(d, p + off);
    }
    skv_kvx_put_u32(p + off, skv_kvx_crc32c(p, off));
    *bytes_p = p;
    *n_p = n;
    return SKV_STATUS_OK;
}

/* ---- decode ------------------------------------------------------------------------------ */

/* What the frame check learned about the variable parts of a descriptor. */
typedef struct {
    int ipc;             /* version 2: IPC section present */
    uint32_t tp_size;    /* 1, or version 3's tp_size */
    size_t tp_off;       /* version 3: offset of the tensor-parallel section */
    uint64_t tp_rkeys;   /* version 3: bytes of the rkeys of ranks 1.. */
    uint64_t tp_section; /* version 3: bytes of the whole section */
} skv_kvx_frame_t;

/* Reads the lengths of the tensor-parallel section at off (the CRC follows it), touching
 * only bytes that are present: tp_size in range, reserved fields zero. */
static skv_status_t skv_kvx_desc_frame_tp(const uint8_t *p, size_t n, uint64_t off,
                                          skv_kvx_frame_t *f)
{
    if (off + SKV_KVX_DESC_TP_FIXED + 4 > n) {
        SKV_LOG_WARN("kvx: descriptor of %zu bytes: tensor-parallel section truncated", n);
        return SKV_STATUS_FORMAT;
    }
    uint32_t tp = skv_kvx_get_u32(p + off);
    uint64_t entries = off + SKV_KVX_DESC_TP_FIXED + (uint64_t)(tp - 1) * SKV_KVX_DESC_TP_ENTRY;
    if (tp < 2 || tp > SKV_KVX_MAX_RANKS || entries + 4 > n) {
        SKV_LOG_WARN("kvx: descriptor of %zu bytes: %u ranks (2..%u) do not fit", n, tp,
                     SKV_KVX_MAX_RANKS);
        return SKV_STATUS_FORMAT;
    }
    uint64_t rkeys = 0;
    for (uint32_t r = 1; r < tp; r++) {
        const uint8_t *e =
            p + off + SKV_KVX_DESC_TP_FIXED + (size_t)(r - 1) * SKV_KVX_DESC_TP_ENTRY;
        if (skv_kvx_get_u32(e + 12) != 0) {
            SKV_LOG_WARN("kvx: descriptor rank %u: reserved field set", r);
            return SKV_STATUS_FORMAT;
        }
        rkeys += skv_kvx_get_u32(e + 8);
    }
    f->tp_size = tp;
    f->tp_off = (size_t)off;
    f->tp_rkeys = rkeys;
    f->tp_section = entries - off + rkeys;
    return SKV_STATUS_OK;
}

/* Validates the frame: header constants, exact total length, CRC. */
static skv_status_t skv_kvx_desc_check_frame(const uint8_t *p, size_t n, skv_kvx_frame_t *f)
{
    if (p == NULL || n < SKV_KVX_DESC_HEADER + 4) {
        SKV_LOG_WARN("kvx: descriptor of %zu bytes is shorter than its header", n);
        return SKV_STATUS_FORMAT;
    }
    /* Version 1: flags 0. Version 2: flags exactly "IPC section present". Version 3: flags
     * exactly "tensor-parallel section present". */
    int v1 = p[4] == SKV_KVX_DESC_VERSION && p[6] == 0;
    int v2 = p[4] == SKV_KVX_DESC_VERSION_IPC && p[6] == SKV_KVX_DESC_FLAG_IPC;
    int v3 = p[4] == SKV_KVX_DESC_VERSION_TP && p[6] == SKV_KVX_DESC_FLAG_TP;
    if (skv_kvx_get_u32(p) != SKV_KVX_DESC_MAGIC || !(v1 || v2 || v3) || p[5] != 0 || p[7] != 0 ||
        skv_kvx_get_u32(p + 68) != 0) {
        SKV_LOG_WARN("kvx: descriptor: bad magic 0x%08x or version %u", skv_kvx_get_u32(p), p[4]);
        return SKV_STATUS_FORMAT;
    }
    uint64_t n_blocks = skv_kvx_get_u32(p + 52);
    uint64_t addr_bytes = skv_kvx_get_u32(p + 60);
    uint64_t rkey_bytes = skv_kvx_get_u32(p + 64);
    /* u64 arithmetic on u32 fields cannot overflow. */
    uint64_t fixed = SKV_KVX_DESC_HEADER + 4 * n_blocks + addr_bytes + rkey_bytes +
                     (v2 ? SKV_KVX_DESC_IPC_BYTES : 0);
    *f = (skv_kvx_frame_t){.ipc = v2, .tp_size = 1};
    if (v3) {
        SKV_CHECK(skv_kvx_desc_frame_tp(p, n, fixed, f));
    }
    uint64_t want = fixed + f->tp_section + 4;
    if (want != n) {
        SKV_LOG_WARN("kvx: descriptor is %zu bytes, its fields say %llu", n,
                     (unsigned long long)want);
        return SKV_STATUS_FORMAT;
    }
    if (skv_kvx_crc32c(p, n - 4) != skv_kvx_get_u32(p + n - 4)) {
        SKV_LOG_WARN("kvx: descriptor of %zu bytes: checksum mismatch", n);
        return SKV_STATUS_FORMAT;
    }
    return SKV_STATUS_OK;
}

/* Reads the tensor-parallel section into ranks[1..] (ranks[0] is set); rkeys go to blobs. */
static void skv_kvx_desc_read_tp(const uint8_t *p, const skv_kvx_frame_t *f, skv_kvx_desc_t *d,
                                 skv_kvx_desc_rank_t *ranks, uint8_t *blobs)
{
    const uint8_t *s = p + f->tp_off;
    d->kv_heads = skv_kvx_get_u32(s + 4);
    size_t off = SKV_KVX_DESC_TP_FIXED + (size_t)(f->tp_size - 1) * SKV_KVX_DESC_TP_ENTRY;
    for (uint32_t r = 1; r < f->tp_size; r++) {
        const uint8_t *e = s + SKV_KVX_DESC_TP_FIXED + (size_t)(r - 1) * SKV_KVX_DESC_TP_ENTRY;
        ranks[r].remote_base = skv_kvx_get_u64(e);
        ranks[r].rkey_bytes = skv_kvx_get_u32(e + 8);
        memcpy(blobs, s + off, ranks[r].rkey_bytes);
        ranks[r].rkey = blobs;
        blobs += ranks[r].rkey_bytes;
        off += ranks[r].rkey_bytes;
    }
}

/* Fills d from a checked frame; ranks, ids and blobs are laid out in mem (sized by the
 * caller: ranks, then block ids, then address and rkeys). */
static void skv_kvx_desc_read(const uint8_t *p, const skv_kvx_frame_t *f, skv_kvx_desc_t *d,
                              uint8_t *mem)
{
    d->request_id = skv_kvx_get_u64(p + 8);
    d->lease_token = skv_kvx_get_u64(p + 16);
    d->fingerprint = skv_kvx_get_u64(p + 24);
    d->remote_base = skv_kvx_get_u64(p + 32);
    d->block_bytes = skv_kvx_get_u64(p + 40);
    d->pool_blocks = skv_kvx_get_u32(p + 48);
    d->n_blocks = skv_kvx_get_u32(p + 52);
    int64_t left_ms = skv_kvx_get_u32(p + 56);
    d->lease_deadline_ns = skv_clock_now_ns() + left_ms * 1000000LL;
    d->worker_addr_bytes = skv_kvx_get_u32(p + 60);
    d->rkey_bytes = skv_kvx_get_u32(p + 64);
    skv_kvx_desc_rank_t *ranks = (skv_kvx_desc_rank_t *)mem;
    uint32_t *ids = (uint32_t *)(mem + f->tp_size * sizeof(*ranks));
    size_t off = SKV_KVX_DESC_HEADER;
    for (uint32_t i = 0; i < d->n_blocks; i++, off += 4) {
        ids[i] = skv_kvx_get_u32(p + off);
    }
    d->block_ids = ids;
    uint8_t *blobs = (uint8_t *)(ids + d->n_blocks);
    memcpy(blobs, p + off, d->worker_addr_bytes + d->rkey_bytes);
    d->worker_addr = blobs;
    d->rkey = blobs + d->worker_addr_bytes;
    off += d->worker_addr_bytes + d->rkey_bytes;
    d->ipc = f->ipc;
    memset(d->ipc_host, 0, sizeof(d->ipc_host));
    memset(d->ipc_handle, 0, sizeof(d->ipc_handle));
    d->ipc_offset = 0;
    if (d->ipc) {
        memcpy(d->ipc_host, p + off, 16);
        memcpy(d->ipc_handle, p + off + 16, SKV_KVX_IPC_HANDLE_BYTES);
        d->ipc_offset = skv_kvx_get_u64(p + off + 16 + SKV_KVX_IPC_HANDLE_BYTES);
    }
    ranks[0] = (skv_kvx_desc_rank_t){d->remote_base, d->rkey, d->rkey_bytes};
    d->tp_size = f->tp_size;
    d->kv_heads = 0;
    d->ranks = ranks;
    if (f->tp_size > 1) {
        skv_kvx_desc_read_tp(p, f, d, ranks, blobs + d->worker_addr_bytes + d->rkey_bytes);
    }
}

skv_status_t skv_kvx_desc_decode(const void *bytes, size_t n, skv_kvx_desc_t **desc_p)
{
    const uint8_t *p = bytes;
    skv_kvx_frame_t f;
    SKV_CHECK(skv_kvx_desc_check_frame(p, n, &f));
    /* One allocation: the struct, the ranks, block ids (4-aligned: the two before are
     * multiples of 8), then the blobs (the IPC section and the TP section's fixed parts are
     * read into the struct and the ranks, so this is a little more than needed). */
    size_t payload = n - SKV_KVX_DESC_HEADER - 4;
    skv_kvx_desc_t *d = skv_malloc(sizeof(*d) + f.tp_size * sizeof(skv_kvx_desc_rank_t) + payload);
    if (d == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    skv_kvx_desc_read(p, &f, d, (uint8_t *)(d + 1));
    if (skv_kvx_desc_check_fields(d) != SKV_STATUS_OK) {
        skv_free(d);
        return SKV_STATUS_FORMAT;
    }
    *desc_p = d;
    return SKV_STATUS_OK;
}

skv_status_t skv_kvx_desc_clone(const skv_kvx_desc_t *d, skv_kvx_desc_t **out_p)
{
    uint32_t tp = skv_kvx_desc_tp(d);
    size_t ids = 4 * (size_t)d->n_blocks;
    size_t bytes =
        sizeof(*d) + tp * sizeof(skv_kvx_desc_rank_t) + ids + d->worker_addr_bytes + d->rkey_bytes;
    for (uint32_t r = 1; r < tp; r++) {
        bytes += d->ranks[r].rkey_bytes;
    }
    skv_kvx_desc_t *c = skv_malloc(bytes);
    if (c == NULL) {
        return SKV_STATUS_NO_MEMORY;
    }
    *c = *d;
    skv_kvx_desc_rank_t *ranks = (skv_kvx_desc_rank_t *)(c + 1);
    uint8_t *mem = (uint8_t *)(ranks + tp);
    memcpy(mem, d->block_ids, ids);
    c->block_ids = (const uint32_t *)mem;
    mem += ids;
    memcpy(mem, d->worker_addr, d->worker_addr_bytes);
    c->worker_addr = mem;
    mem += d->worker_addr_bytes;
    memcpy(mem, d->rkey, d->rkey_bytes);
    c->rkey = mem;
    mem += d->rkey_bytes;
    ranks[0] = (skv_kvx_desc_rank_t){c->remote_base, c->rkey, c->rkey_bytes};
    for (uint32_t r = 1; r < tp; r++) {
        ranks[r] = d->ranks[r];
        memcpy(mem, d->ranks[r].rkey, d->ranks[r].rkey_bytes);
        ranks[r].rkey = mem;
        mem += d->ranks[r].rkey_bytes;
    }
    c->tp_size = tp;
    c->ranks = ranks;
    *out_p = c;
    return SKV_STATUS_OK;
}

void skv_kvx_desc_destroy(skv_kvx_desc_t *desc)
{
    skv_free(desc);
}
