/*
 * skv_test_kvx.h: helpers shared by the KV transfer tests: the block bookkeeping of a test's
 * own KV pool (one "taken" flag per block, so a block released twice or handed out twice is
 * seen), the target's "no lease left" probe, a full read of a pipe or socket between test
 * processes, and SKV_TEST_FAIL for tests without a framework. Header-only (static inline); the
 * checks return what they found, and each test fails in its own way (cmocka assert or
 * SKV_TEST_FAIL).
 */
#ifndef SKV_TESTS_COMMON_SKV_TEST_KVX_H
#define SKV_TESTS_COMMON_SKV_TEST_KVX_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#include "common/kvx.h"

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
static inline int skv_test_kvx_no_leases(const skv_kvx_t *kvx)
{
    uint32_t n_leases;
    uint64_t n_blocks;
    skv_kvx_target_stats(kvx, &n_leases, &n_blocks);
    return n_leases == 0;
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
