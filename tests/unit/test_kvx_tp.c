/*
 * test_kvx_tp.c: the KV transfer library with tensor-parallel targets (a pool split by KV head
 * over several rank memories): descriptor version 3 (round trip, truncation, bit flips, wrong
 * versions and flags, out-of-range rank counts, bad rank rkeys, encoder refusals), pool
 * registration checks, and loopback pushes into every rank's memory of the process's own
 * multi-rank pool (host and staged sources, data messages by default or puts under
 * SKV_KVX_DATA=put, test_kvx_tp_put). The completion callback checks that every rank's bytes
 * are in place when it runs: a lease never ends OK with one rank's data missing. A forged
 * descriptor naming a rank the target does not have gets nothing written.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "common/kvx/kvx.h"
#include "tests/common/skv_test_kvx.h"

#define POOL_BLOCKS 32
#define BLOCK_BYTES 512 /* one rank's share of a block */
#define N_RANKS     3
#define FP          0xBEEF0000CAFEULL

/* ---- descriptor codec ------------------------------------------------------------------- */

/* Structurally valid packed rkeys (md_map, host memory type, one part each) of distinct
 * lengths, so a decoder that mixes ranks up is caught. */
static const uint8_t k_rkey0[10] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 0};
static const uint8_t k_rkey1[12] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0xA1, 0xA2};
static const uint8_t k_rkey2[13] = {1, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0xB1, 0xB2, 0xB3};
static const uint8_t k_addr[20] = {9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

static skv_kvx_desc_rank_t k_ranks[N_RANKS] = {
    {0x10000, k_rkey0, sizeof(k_rkey0)},
    {0x900000, k_rkey1, sizeof(k_rkey1)},
    {0x7700000, k_rkey2, sizeof(k_rkey2)},
};

static void make_desc(skv_kvx_desc_t *d, const uint32_t *ids, uint32_t n)
{
    memset(d, 0, sizeof(*d));
    d->request_id = 5;
    d->lease_token = 0x1234;
    d->fingerprint = FP;
    d->remote_base = k_ranks[0].remote_base;
    d->block_bytes = BLOCK_BYTES;
    d->pool_blocks = POOL_BLOCKS;
    d->n_blocks = n;
    d->block_ids = ids;
    d->lease_deadline_ns = skv_clock_deadline_ms(5000);
    d->worker_addr = k_addr;
    d->worker_addr_bytes = sizeof(k_addr);
    d->rkey = k_rkey0;
    d->rkey_bytes = sizeof(k_rkey0);
    d->tp_size = N_RANKS;
    d->kv_heads = 2;
    d->ranks = k_ranks;
}

/* CRC-32C as the descriptor uses it (bitwise; the library's is table-driven). */
static uint32_t crc32c(const uint8_t *p, size_t n)
{
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        c ^= p[i];
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        }
    }
    return c ^ 0xFFFFFFFFu;
}

static void put_u32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

/* Rewrites the trailing CRC so only the edited field is wrong. */
static void fix_crc(uint8_t *buf, size_t n)
{
    put_u32(buf + n - 4, crc32c(buf, n - 4));
}

/* Encodes make_desc(ids, 2) as version 3; *tp_off_p is the tensor-parallel section. */
static uint8_t *encode_v3(size_t *n_p, size_t *tp_off_p)
{
    static const uint32_t ids[2] = {4, 31};
    skv_kvx_desc_t d;
    make_desc(&d, ids, 2);
    uint8_t *buf = NULL;
    assert_int_equal(skv_kvx_desc_encode(&d, (void **)&buf, n_p), SKV_STATUS_OK);
    *tp_off_p = 72 + 4 * 2 + sizeof(k_addr) + sizeof(k_rkey0);
    return buf;
}

static void test_desc_v3_roundtrip(void **state)
{
    uint32_t ids[4] = {3, 0, 31, 7};
    skv_kvx_desc_t d;
    make_desc(&d, ids, 4);
    uint8_t *buf = NULL;
    size_t n = 0;
    assert_int_equal(skv_kvx_desc_encode(&d, (void **)&buf, &n), SKV_STATUS_OK);
    assert_int_equal(buf[4], 3); /* version */
    assert_int_equal(buf[6], 2); /* flags: tensor-parallel section */
    skv_kvx_desc_t *o = NULL;
    assert_int_equal(skv_kvx_desc_decode(buf, n, &o), SKV_STATUS_OK);
    assert_int_equal(o->request_id, 5);
    assert_int_equal(o->fingerprint, FP);
    assert_int_equal(o->n_blocks, 4);
    assert_memory_equal(o->block_ids, ids, sizeof(ids));
    assert_memory_equal(o->worker_addr, k_addr, sizeof(k_addr));
    assert_int_equal(o->tp_size, N_RANKS);
    assert_int_equal(o->kv_heads, 2);
    assert_int_equal(o->ipc, 0);
    for (int r = 0; r < N_RANKS; r++) {
        assert_int_equal(o->ranks[r].remote_base, k_ranks[r].remote_base);
        assert_int_equal(o->ranks[r].rkey_bytes, k_ranks[r].rkey_bytes);
        assert_memory_equal(o->ranks[r].rkey, k_ranks[r].rkey, k_ranks[r].rkey_bytes);
    }
    assert_int_equal(o->remote_base, k_ranks[0].remote_base);
    assert_memory_equal(o->rkey, k_rkey0, sizeof(k_rkey0));
    skv_kvx_desc_destroy(o);
    skv_free(buf);
    /* One rank: still version 1, decoded as one rank with no stated head count. */
    d.tp_size = 1;
    assert_int_equal(skv_kvx_desc_encode(&d, (void **)&buf, &n), SKV_STATUS_OK);
    assert_int_equal(buf[4], 1);
    assert_int_equal(skv_kvx_desc_decode(buf, n, &o), SKV_STATUS_OK);
    assert_int_equal(o->tp_size, 1);
    assert_int_equal(o->kv_heads, 0);
    assert_int_equal(o->ranks[0].remote_base, k_ranks[0].remote_base);
    assert_memory_equal(o->ranks[0].rkey, k_rkey0, sizeof(k_rkey0));
    skv_kvx_desc_destroy(o);
    skv_free(buf);
}

static void test_desc_v3_truncated_and_flipped(void **state)
{
    size_t n = 0, tp_off = 0;
    uint8_t *buf = encode_v3(&n, &tp_off);
    assert_int_equal(skv_test_desc_truncations_refused(buf, n, 4), 0);
    assert_int_equal(skv_test_desc_flips_refused(buf, n), 0);
    skv_free(buf);
}

/* Decodes buf after edit() with a correct CRC: the decoder must still refuse it. */
static void expect_refused(const uint8_t *orig, size_t n, void (*edit)(uint8_t *, size_t, size_t),
                           size_t tp_off, const char *what)
{
    uint8_t *t = malloc(n);
    memcpy(t, orig, n);
    edit(t, n, tp_off);
    fix_crc(t, n);
    skv_kvx_desc_t *o = NULL;
    print_message("refused: %s\n", what);
    assert_int_equal(skv_kvx_desc_decode(t, n, &o), SKV_STATUS_FORMAT);
    free(t);
}

static void edit_version1(uint8_t *p, size_t n, size_t off)
{
    p[4] = 1;
    p[6] = 0;
}
static void edit_version2(uint8_t *p, size_t n, size_t off)
{
    p[4] = 2;
    p[6] = 1;
}
static void edit_version4(uint8_t *p, size_t n, size_t off)
{
    p[4] = 4;
}
static void edit_flags_both(uint8_t *p, size_t n, size_t off)
{
    p[6] = 3;
}
static void edit_flags_none(uint8_t *p, size_t n, size_t off)
{
    p[6] = 0;
}
static void edit_tp0(uint8_t *p, size_t n, size_t off)
{
    put_u32(p + off, 0);
}
static void edit_tp1(uint8_t *p, size_t n, size_t off)
{
    put_u32(p + off, 1);
}
static void edit_tp2(uint8_t *p, size_t n, size_t off)
{
    put_u32(p + off, 2);
}
static void edit_tp_huge(uint8_t *p, size_t n, size_t off)
{
    put_u32(p + off, 0xFFFFFFFFu);
}
static void edit_tp17(uint8_t *p, size_t n, size_t off)
{
    put_u32(p + off, SKV_KVX_MAX_RANKS + 1);
}
static void edit_kv_heads0(uint8_t *p, size_t n, size_t off)
{
    put_u32(p + off + 4, 0);
}
static void edit_reserved(uint8_t *p, size_t n, size_t off)
{
    put_u32(p + off + 8 + 12, 1); /* rank 1's reserved word */
}
static void edit_rkey_len(uint8_t *p, size_t n, size_t off)
{
    put_u32(p + off + 8 + 8, sizeof(k_rkey1) + 1); /* rank 1's rkey claims one byte more */
}
static void edit_rkey_body(uint8_t *p, size_t n, size_t off)
{
    /* rank 1's rkey: its one part now claims 200 bytes (the framing stays exact). */
    p[off + 8 + 2 * 16 + 9] = 200;
}
static void edit_rank_base(uint8_t *p, size_t n, size_t off)
{
    for (int i = 0; i < 8; i++) {
        p[off + 8 + 16 + i] = 0xFF; /* rank 2's base: the pool would wrap around */
    }
}

static void test_desc_v3_wrong_fields(void **state)
{
    size_t n = 0, tp_off = 0;
    uint8_t *buf = encode_v3(&n, &tp_off);
    skv_kvx_desc_t *o = NULL;
    assert_int_equal(skv_kvx_desc_decode(buf, n, &o), SKV_STATUS_OK); /* the baseline */
    skv_kvx_desc_destroy(o);
    expect_refused(buf, n, edit_version1, tp_off, "version 1 with a TP section");
    expect_refused(buf, n, edit_version2, tp_off, "version 2 with a TP section");
    expect_refused(buf, n, edit_version4, tp_off, "version 4");
    expect_refused(buf, n, edit_flags_both, tp_off, "version 3 with IPC and TP flags");
    expect_refused(buf, n, edit_flags_none, tp_off, "version 3 without the TP flag");
    expect_refused(buf, n, edit_tp0, tp_off, "tp_size 0");
    expect_refused(buf, n, edit_tp1, tp_off, "tp_size 1 in version 3");
    expect_refused(buf, n, edit_tp2, tp_off, "tp_size 2 for 3 ranks of entries");
    expect_refused(buf, n, edit_tp_huge, tp_off, "tp_size 2^32-1");
    expect_refused(buf, n, edit_tp17, tp_off, "tp_size above the limit");
    expect_refused(buf, n, edit_kv_heads0, tp_off, "0 KV heads per rank");
    expect_refused(buf, n, edit_reserved, tp_off, "reserved word set");
    expect_refused(buf, n, edit_rkey_len, tp_off, "rank rkey length past the section");
    expect_refused(buf, n, edit_rkey_body, tp_off, "rank rkey with a truncated part");
    expect_refused(buf, n, edit_rank_base, tp_off, "rank base that overflows");
    skv_free(buf);
}

static void test_desc_v3_random_garbage(void **state)
{
    srand(99);
    skv_kvx_desc_t *o = NULL;
    for (int iter = 0; iter < 3000; iter++) {
        size_t len = (size_t)(rand() % 300);
        uint8_t *t = malloc(len ? len : 1);
        for (size_t i = 0; i < len; i++) {
            t[i] = (uint8_t)rand();
        }
        if (len >= 8) { /* past the first check: magic, version 3, TP flag */
            memcpy(t, "SKVD\x03\0\x02\0", 8);
        }
        if (len >= 72 && (iter & 1)) { /* plausible small header lengths */
            memset(t + 52, 0, 4);
            t[52] = (uint8_t)(iter % 3);
            memset(t + 60, 0, 12);
            t[60] = 8;
            t[64] = 10;
        }
        if (len >= 4 && (iter % 4) == 1) {
            fix_crc(t, len); /* a valid checksum: the structure checks must refuse it */
        }
        assert_int_equal(skv_kvx_desc_decode(t, len, &o), SKV_STATUS_FORMAT);
        free(t);
    }
}

static void test_desc_v3_encode_rejects(void **state)
{
    uint32_t ids[1] = {2};
    skv_kvx_desc_t d;
    void *buf = NULL;
    size_t n = 0;
    make_desc(&d, ids, 1);
    d.ipc = 1; /* IPC covers one memory */
    assert_int_equal(skv_kvx_desc_encode(&d, &buf, &n), SKV_STATUS_INVALID_ARGUMENT);
    make_desc(&d, ids, 1);
    d.tp_size = SKV_KVX_MAX_RANKS + 1;
    assert_int_equal(skv_kvx_desc_encode(&d, &buf, &n), SKV_STATUS_INVALID_ARGUMENT);
    make_desc(&d, ids, 1);
    d.ranks = NULL;
    assert_int_equal(skv_kvx_desc_encode(&d, &buf, &n), SKV_STATUS_INVALID_ARGUMENT);
    make_desc(&d, ids, 1);
    d.kv_heads = 0;
    assert_int_equal(skv_kvx_desc_encode(&d, &buf, &n), SKV_STATUS_INVALID_ARGUMENT);
    skv_kvx_desc_rank_t bad[N_RANKS];
    memcpy(bad, k_ranks, sizeof(bad));
    bad[2].remote_base = UINT64_MAX - 10;
    make_desc(&d, ids, 1);
    d.ranks = bad;
    assert_int_equal(skv_kvx_desc_encode(&d, &buf, &n), SKV_STATUS_INVALID_ARGUMENT);
    memcpy(bad, k_ranks, sizeof(bad));
    bad[1].rkey_bytes = 0;
    assert_int_equal(skv_kvx_desc_encode(&d, &buf, &n), SKV_STATUS_INVALID_ARGUMENT);
}

/* ---- a multi-rank target in this process ------------------------------------------------ */

typedef struct {
    skv_kvx_t *kvx;
    uint8_t *mem[N_RANKS];
    int taken[POOL_BLOCKS];
    int n_taken;
    int n_release;
    int n_ok;
    int n_err;
    /* what the completion of the current request must find in place */
    uint64_t expect_rid;
    const uint32_t *expect_ids;
    uint32_t expect_n;
    int complete_saw_all; /* the completion ran with every rank's bytes in place */
} fixture_t;

/* The byte of (request, rank, block index k, offset i). */
static uint8_t pattern(uint64_t rid, uint32_t rank, uint32_t k, uint32_t i)
{
    return (uint8_t)(rid * 29 + rank * 101 + k * 7 + i * 13 + (i >> 7) + 1);
}

static int blocks_hold(const fixture_t *f, uint64_t rid, const uint32_t *ids, uint32_t n)
{
    for (uint32_t r = 0; r < N_RANKS; r++) {
        for (uint32_t k = 0; k < n; k++) {
            const uint8_t *b = f->mem[r] + (size_t)ids[k] * BLOCK_BYTES;
            for (uint32_t i = 0; i < BLOCK_BYTES; i++) {
                if (b[i] != pattern(rid, r, k, i)) {
                    return 0;
                }
            }
        }
    }
    return 1;
}

static void on_release(void *ctx, uint64_t rid, const uint32_t *ids, uint32_t n)
{
    fixture_t *f = ctx;
    f->n_release++;
    assert_int_equal(skv_test_blocks_release(f->taken, &f->n_taken, ids, n), -1);
}

static void on_complete(void *ctx, uint64_t rid, int32_t tok, skv_status_t st)
{
    fixture_t *f = ctx;
    if (st != SKV_STATUS_OK) {
        f->n_err++;
        return;
    }
    f->n_ok++;
    if (rid == f->expect_rid) {
        f->complete_saw_all = blocks_hold(f, rid, f->expect_ids, f->expect_n);
    }
}

static skv_kvx_pool_config_t pool_config(fixture_t *f, void *const *bases)
{
    return (skv_kvx_pool_config_t){
        .block_bytes = BLOCK_BYTES,
        .n_blocks = POOL_BLOCKS,
        .fingerprint = FP,
        .release_grace_ms = 10,
        .release = on_release,
        .release_ctx = f,
        .on_complete = on_complete,
        .complete_ctx = f,
        .n_ranks = N_RANKS,
        .rank_bases = bases,
        .kv_heads = 2,
    };
}

static int fixture_setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    skv_kvx_config_t cfg;
    skv_kvx_config_default(&cfg);
    assert_int_equal(skv_kvx_config_env(&cfg), SKV_STATUS_OK);
    cfg.staging_bytes = 700; /* not a multiple of the block: pieces straddle buffers */
    if (skv_kvx_create(&cfg, &f->kvx) != SKV_STATUS_OK) {
        return -1;
    }
    for (int r = 0; r < N_RANKS; r++) {
        f->mem[r] = calloc(POOL_BLOCKS, BLOCK_BYTES);
    }
    skv_kvx_pool_config_t pc = pool_config(f, (void *const *)f->mem);
    if (skv_kvx_pool_register(f->kvx, &pc) != SKV_STATUS_OK) {
        return -1;
    }
    *state = f;
    return 0;
}

static int fixture_teardown(void **state)
{
    fixture_t *f = *state;
    skv_kvx_destroy(f->kvx);
    assert_int_equal(f->n_taken, 0);
    for (int r = 0; r < N_RANKS; r++) {
        free(f->mem[r]);
    }
    free(f);
    return 0;
}

static void test_register_checks(void **state)
{
    fixture_t f = {0};
    skv_kvx_t *kvx = NULL;
    assert_int_equal(skv_test_kvx_create(&kvx), SKV_STATUS_OK);
    uint8_t *mem[SKV_KVX_MAX_RANKS + 1] = {0};
    for (unsigned r = 0; r <= SKV_KVX_MAX_RANKS; r++) {
        mem[r] = calloc(POOL_BLOCKS, BLOCK_BYTES);
    }
    skv_kvx_pool_config_t pc = pool_config(&f, (void *const *)mem);
    pc.n_ranks = SKV_KVX_MAX_RANKS + 1;
    assert_int_equal(skv_kvx_pool_register(kvx, &pc), SKV_STATUS_INVALID_ARGUMENT);
    pc = pool_config(&f, NULL);
    assert_int_equal(skv_kvx_pool_register(kvx, &pc), SKV_STATUS_INVALID_ARGUMENT);
    pc = pool_config(&f, (void *const *)mem);
    pc.kv_heads = 0;
    assert_int_equal(skv_kvx_pool_register(kvx, &pc), SKV_STATUS_INVALID_ARGUMENT);
    void *holes[N_RANKS] = {mem[0], NULL, mem[2]};
    pc = pool_config(&f, holes);
    assert_int_equal(skv_kvx_pool_register(kvx, &pc), SKV_STATUS_INVALID_ARGUMENT);
    assert_null(skv_kvx_pool_base(kvx));
    pc = pool_config(&f, (void *const *)mem);
    assert_int_equal(skv_kvx_pool_register(kvx, &pc), SKV_STATUS_OK);
    for (uint32_t r = 0; r < N_RANKS; r++) {
        assert_ptr_equal(skv_kvx_pool_rank_base(kvx, r), mem[r]);
    }
    assert_null(skv_kvx_pool_rank_base(kvx, N_RANKS));
    assert_ptr_equal(skv_kvx_pool_base(kvx), mem[0]);
    skv_kvx_destroy(kvx);
    for (unsigned r = 0; r <= SKV_KVX_MAX_RANKS; r++) {
        free(mem[r]);
    }
}

static int progress_until_idle(fixture_t *f)
{
    int64_t deadline = skv_clock_deadline_ms(3000);
    while (!skv_test_kvx_no_leases(f->kvx) && !skv_clock_expired(deadline)) {
        skv_kvx_progress(f->kvx);
    }
    return skv_test_kvx_no_leases(f->kvx);
}

static skv_kvx_desc_t *reserve_decode(fixture_t *f, uint64_t rid, const uint32_t *ids, uint32_t n,
                                      int64_t lease_ms)
{
    assert_int_equal(skv_test_blocks_take(f->taken, &f->n_taken, ids, n), -1);
    void *bytes = NULL;
    size_t len = 0;
    assert_int_equal(skv_kvx_target_reserve(f->kvx, rid, FP, ids, n,
                                            skv_clock_deadline_ms(lease_ms), &bytes, &len),
                     SKV_STATUS_OK);
    skv_kvx_desc_t *d = NULL;
    assert_int_equal(skv_kvx_desc_decode(bytes, len, &d), SKV_STATUS_OK);
    skv_free(bytes);
    return d;
}

/* Staged copies of request 21's rank-2 blocks (ctx = the request's source memory). */
static skv_status_t copy_rank2(void *ctx, uint32_t index, uint64_t offset, void *dst,
                               uint64_t bytes)
{
    const uint8_t *src = ctx;
    memcpy(dst, src + (size_t)index * BLOCK_BYTES + offset, bytes);
    return SKV_STATUS_OK;
}

static void test_push_every_rank(void **state)
{
    fixture_t *f = *state;
    enum { N = 5 };
    uint32_t ids[N] = {9, 10, 11, 2, 30};
    skv_kvx_desc_t *d = reserve_decode(f, 21, ids, N, 3000);
    assert_int_equal(d->tp_size, N_RANKS);
    assert_int_equal(d->kv_heads, 2);
    for (uint32_t r = 0; r < N_RANKS; r++) {
        assert_int_equal(d->ranks[r].remote_base, (uint64_t)(uintptr_t)f->mem[r]);
    }
    /* Each rank's source blocks in this process, contiguous per rank. */
    uint8_t *src[N_RANKS];
    const void *srcs[N_RANKS][N];
    for (uint32_t r = 0; r < N_RANKS; r++) {
        src[r] = malloc((size_t)N * BLOCK_BYTES);
        for (uint32_t k = 0; k < N; k++) {
            for (uint32_t i = 0; i < BLOCK_BYTES; i++) {
                src[r][(size_t)k * BLOCK_BYTES + i] = pattern(21, r, k, i);
            }
            srcs[r][k] = src[r] + (size_t)k * BLOCK_BYTES;
        }
    }
    f->expect_rid = 21;
    f->expect_ids = ids;
    f->expect_n = N;
    skv_kvx_push_t *push = NULL;
    assert_int_equal(skv_kvx_push_create(f->kvx, d, skv_clock_deadline_ms(3000), &push),
                     SKV_STATUS_OK);
    /* Rank 0 whole blocks; rank 1 in two ranges (as a head split would give); rank 2 staged. */
    assert_int_equal(skv_kvx_push_host_rank(push, 0, 0, N, 0, BLOCK_BYTES, srcs[0]), SKV_STATUS_OK);
    const void *tail[N];
    for (uint32_t k = 0; k < N; k++) {
        tail[k] = (const uint8_t *)srcs[1][k] + 200;
    }
    assert_int_equal(skv_kvx_push_host_rank(push, 1, 0, N, 200, BLOCK_BYTES - 200, tail),
                     SKV_STATUS_OK);
    assert_int_equal(skv_kvx_push_host_rank(push, 1, 0, N, 0, 200, srcs[1]), SKV_STATUS_OK);
    assert_int_equal(skv_kvx_push_staged_rank(push, 2, 0, N, 0, BLOCK_BYTES, copy_rank2, src[2]),
                     SKV_STATUS_OK);
    /* Out of range: a rank the target does not have, and bytes past a rank's block. */
    assert_int_equal(skv_kvx_push_host_rank(push, N_RANKS, 0, 1, 0, 16, srcs[0]),
                     SKV_STATUS_INVALID_ARGUMENT);
    assert_int_equal(skv_kvx_push_host_rank(push, 1, 0, 1, BLOCK_BYTES - 8, 16, srcs[0]),
                     SKV_STATUS_INVALID_ARGUMENT);
    assert_int_equal(skv_kvx_push_device(push, 0, 1, 0, 16, srcs[0]), SKV_STATUS_UNSUPPORTED);
    print_message("multi-rank push uses %s\n",
                  skv_kvx_push_uses_messages(push) ? "data messages" : "puts");
    assert_int_equal(skv_kvx_push_finish(push, 77, SKV_STATUS_OK), SKV_STATUS_OK);
    assert_int_equal(skv_kvx_push_wait(push), SKV_STATUS_OK);
    skv_kvx_push_destroy(push);
    skv_kvx_desc_destroy(d);
    assert_true(progress_until_idle(f));
    assert_int_equal(f->n_ok, 1);
    assert_int_equal(f->n_release, 0);
    assert_true(f->complete_saw_all); /* one completion, after every rank's bytes */
    assert_true(blocks_hold(f, 21, ids, N));
    on_release(f, 21, ids, N); /* the owner's blocks now: give them back by hand */
    for (uint32_t r = 0; r < N_RANKS; r++) {
        free(src[r]);
    }
}

/* A forged descriptor that claims a fourth rank: in message mode the target refuses the
 * rank it does not have, writes nothing, and the lease ends released. */
static void test_forged_rank_refused(void **state)
{
    fixture_t *f = *state;
    uint32_t ids[2] = {5, 6};
    skv_kvx_desc_t *d = reserve_decode(f, 22, ids, 2, 3000);
    skv_kvx_desc_rank_t ranks[N_RANKS + 1];
    memcpy(ranks, d->ranks, N_RANKS * sizeof(ranks[0]));
    ranks[N_RANKS] = ranks[1];
    skv_kvx_desc_t forged = *d;
    forged.tp_size = N_RANKS + 1;
    forged.ranks = ranks;
    uint8_t src[2][BLOCK_BYTES];
    memset(src, 0xAB, sizeof(src));
    const void *srcs[2] = {src[0], src[1]};
    skv_kvx_push_t *push = NULL;
    assert_int_equal(skv_kvx_push_create(f->kvx, &forged, skv_clock_deadline_ms(3000), &push),
                     SKV_STATUS_OK);
    assert_int_equal(skv_kvx_push_host_rank(push, N_RANKS, 0, 2, 0, BLOCK_BYTES, srcs),
                     SKV_STATUS_OK);
    if (!skv_kvx_push_uses_messages(push)) {
        skv_kvx_push_destroy(push); /* puts write where the descriptor says */
        skv_kvx_target_cancel(f->kvx, 22);
        skv_kvx_desc_destroy(d);
        skip();
    }
    assert_int_equal(skv_kvx_push_finish(push, 3, SKV_STATUS_OK), SKV_STATUS_OK);
    (void)skv_kvx_push_wait(push);
    skv_kvx_push_destroy(push);
    skv_kvx_desc_destroy(d);
    assert_true(progress_until_idle(f));
    assert_int_equal(f->n_ok, 0);
    assert_int_equal(f->n_release, 1);
    assert_int_equal(f->n_taken, 0);
    for (uint32_t r = 0; r < N_RANKS; r++) {
        for (size_t i = 0; i < (size_t)POOL_BLOCKS * BLOCK_BYTES; i++) {
            assert_int_equal(f->mem[r][i], 0);
        }
    }
}

/* A lease with no completion expires once for all ranks; cancel likewise. */
static void test_expiry_and_cancel(void **state)
{
    fixture_t *f = *state;
    uint32_t a[3] = {1, 2, 3}, b[2] = {20, 21};
    skv_kvx_desc_t *da = reserve_decode(f, 31, a, 3, 30);
    skv_kvx_desc_t *db = reserve_decode(f, 32, b, 2, 5000);
    assert_int_equal(skv_kvx_target_cancel(f->kvx, 32), SKV_STATUS_OK);
    assert_true(progress_until_idle(f));
    assert_int_equal(f->n_release, 2);
    assert_int_equal(f->n_err, 2);
    assert_int_equal(f->n_taken, 0);
    skv_kvx_desc_destroy(da);
    skv_kvx_desc_destroy(db);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_desc_v3_roundtrip),
        cmocka_unit_test(test_desc_v3_truncated_and_flipped),
        cmocka_unit_test(test_desc_v3_wrong_fields),
        cmocka_unit_test(test_desc_v3_random_garbage),
        cmocka_unit_test(test_desc_v3_encode_rejects),
        cmocka_unit_test(test_register_checks),
        cmocka_unit_test_setup_teardown(test_push_every_rank, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_forged_rank_refused, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_expiry_and_cancel, fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
