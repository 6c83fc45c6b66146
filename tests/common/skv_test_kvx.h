/*
 * skv_test_kvx.h: helpers shared by the KV transfer tests: the block bookkeeping of a test's
 * own KV pool (one "taken" flag per block, so a block released twice or handed out twice is
 * seen), the target's "no lease left" probe, a full read of a pipe or socket between test
 * processes, the refusal checks of damaged transfer descriptors, and SKV_TEST_FAIL for tests
 * without a framework. Header-only (static inline); the
 * checks return what they found, and each test fails in its own way (cmocka assert or
 * SKV_TEST_FAIL).
 */
#ifndef SKV_TESTS_COMMON_SKV_TEST_KVX_H
#define SKV_TESTS_COMMON_SKV_TEST_KVX_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/kvx/kvx.h"

/* For the multi-process tests: prints FAIL with the process id, the place and the printf-style
 * message, and ends this process at once with exit status 1 (_exit: no atexit handlers, no
 * flushing of the parent's stdio buffers in a forked child). */
#define SKV_TEST_FAIL(...)                                                                         \
    do {                                                                                           \
        fprintf(stderr, "[%d] FAIL %s:%d: ", getpid(), __FILE__, __LINE__);                        \
        fprintf(stderr, __VA_ARGS__);                                                              \
        fprintf(stderr, "\n");                                                                     \
        _exit(1);                                                                                  \
    } while (0)

/* Marks blocks ids[0..n) taken in taken[] (one flag per pool block) and adds them to
 * *n_taken_p. Returns -1 when every block was free, else the first id that was already taken
 * (it is counted again). */
static inline int64_t skv_test_blocks_take(int *taken, int *n_taken_p, const uint32_t *ids,
                                           uint32_t n)
{
    int64_t bad = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (taken[ids[i]] && bad < 0) {
            bad = ids[i];
        }
        taken[ids[i]] = 1;
        (*n_taken_p)++;
    }
    return bad;
}

/* Marks blocks ids[0..n) free in taken[] and subtracts them from *n_taken_p. Returns -1 when
 * every block was taken, else the first id that was not (a double release). */
static inline int64_t skv_test_blocks_release(int *taken, int *n_taken_p, const uint32_t *ids,
                                              uint32_t n)
{
    int64_t bad = -1;
    for (uint32_t i = 0; i < n; i++) {
        if (!taken[ids[i]] && bad < 0) {
            bad = ids[i];
        }
        taken[ids[i]] = 0;
        (*n_taken_p)--;
    }
    return bad;
}

/* 1 when the target side of kvx holds no lease, else 0. Same thread as skv_kvx_progress. */
/* Creates a transport with the defaults and the environment's transfer switches
 * (skv_kvx_config_env: SKV_KVX_DATA, SKV_KVX_NO_IPC), as a process's main would. */
static inline skv_status_t skv_test_kvx_create(skv_kvx_t **kvx_p)
{
    skv_kvx_config_t cfg;
    skv_kvx_config_default(&cfg);
    skv_status_t st = skv_kvx_config_env(&cfg);
    return st == SKV_STATUS_OK ? skv_kvx_create(&cfg, kvx_p) : st;
}

static inline int skv_test_kvx_no_leases(const skv_kvx_t *kvx)
{
    uint32_t n_leases;
    uint64_t n_blocks;
    skv_kvx_target_stats(kvx, &n_leases, &n_blocks);
    return n_leases == 0;
}

/* Decodes a fresh heap block of exactly len bytes (so ASan sees any read past its end): the
 * first min(len, n) bytes of buf, then zeros. Returns 1 when the decoder did not refuse it
 * with SKV_STATUS_FORMAT, else 0. */
static inline int skv_test_desc_copy_accepted(const uint8_t *buf, size_t n, size_t len)
{
    uint8_t *t = calloc(len ? len : 1, 1);
    memcpy(t, buf, len < n ? len : n);
    skv_kvx_desc_t *o = NULL;
    int accepted = skv_kvx_desc_decode(t, len, &o) != SKV_STATUS_FORMAT;
    if (o != NULL) {
        skv_kvx_desc_destroy(o);
    }
    free(t);
    return accepted;
}

/* Decodes each proper prefix of the encoded descriptor buf[0..n) and, when extra > 0, buf
 * followed by extra zero bytes. Returns how many of those the decoder did not refuse with
 * SKV_STATUS_FORMAT (0 when it refused them all). */
static inline int skv_test_desc_truncations_refused(const uint8_t *buf, size_t n, size_t extra)
{
    int n_bad = 0;
    for (size_t len = 0; len < n; len++) {
        n_bad += skv_test_desc_copy_accepted(buf, n, len);
    }
    if (extra > 0) {
        n_bad += skv_test_desc_copy_accepted(buf, n, n + extra);
    }
    return n_bad;
}

/* Flips each bit of the encoded descriptor buf[0..n) in turn (and back) and decodes it.
 * Returns how many flipped copies the decoder accepted (0 when it refused every one). */
static inline int skv_test_desc_flips_refused(uint8_t *buf, size_t n)
{
    int n_bad = 0;
    for (size_t bit = 0; bit < n * 8; bit++) {
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        skv_kvx_desc_t *o = NULL;
        if (skv_kvx_desc_decode(buf, n, &o) == SKV_STATUS_OK) {
            n_bad++;
        }
        if (o != NULL) {
            skv_kvx_desc_destroy(o);
        }
        buf[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    return n_bad;
}

/* Reads exactly n bytes from fd into p. Returns 0, or -1 on end of file or an error. */
static inline int skv_test_read_full(int fd, void *p, size_t n)
{
    for (size_t got = 0; got < n;) {
        ssize_t r = read(fd, (uint8_t *)p + got, n - got);
        if (r <= 0) {
            return -1;
        }
        got += (size_t)r;
    }
    return 0;
}

#endif
