/*
 * test_kvx_ipc.c: KV pushes from device memory between two processes on one GPU.
 *
 * A target (decode) process owns two transports: A with a device pool (cudaMalloc, exported
 * for CUDA IPC) and B with a host pool. An initiator (prefill) process holds random KV in
 * device memory and pushes with skv_kvx_push_device:
 *   - to A: same host, exported pool -> device-to-device copies through CUDA IPC (whole blocks,
 *     then a second request layer by layer: the mapping is opened once for the peer);
 *   - to B: no IPC -> pinned staging buffers filled by asynchronous device-to-host copies,
 *     sent over UCX while the next buffer fills (small buffers: many rounds);
 *   - to C, a device pool, from a transport with IPC off (as between hosts): staged, sent
 *     as data messages over tcp, landed in C's pinned bounce buffers and copied to the GPU.
 * The target checks every block byte for byte (device pool read back with cudaMemcpy).
 * Exit 77 (skip) without a CUDA build or without a GPU. The parent never touches CUDA (a
 * CUDA context does not survive fork), children die with it, every wait is bounded.
 */
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "common/kvx/kvx.h"
#include "tests/common/skv_test_kvx.h"

#ifndef SKV_HAVE_CUDA_KVX
int main(void)
{
    fprintf(stderr, "test_kvx_ipc: built without the CUDA backend: skipped\n");
    return 77;
}
#else
#include "kernels/cuda/cuda_kvx.h"

#define POOL_BLOCKS 64
#define BLOCK_BYTES (256 * 1024)
#define N_LAYERS    4
#define N_BLOCKS    24 /* per request */
#define FP          0x1BCULL

static void fill_block(uint8_t *p, uint64_t rid, uint32_t k)
{
    uint64_t s = rid * 1000003 + k;
    for (size_t i = 0; i < BLOCK_BYTES; i += 8) {
        uint64_t z = (s += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        memcpy(p + i, &z, 8);
    }
}

static void send_all(int fd, const void *p, size_t n)
{
    if (write(fd, p, n) != (ssize_t)n) {
        SKV_TEST_FAIL("write");
    }
}

/* ---- target -------------------------------------------------------------------------- */

typedef struct {
    const char *name;
    uint8_t *pool; /* device (A) or host (B) */
    int device;
    uint32_t ids[4][N_BLOCKS];
    int n_ok;
    int n_bad;
    int n_err;
} tgt_t;

static void t_release(void *ctx, uint64_t rid, const uint32_t *ids, uint32_t n)
{
}

static void t_complete(void *ctx, uint64_t rid, int32_t tok, skv_status_t st)
{
    tgt_t *t = ctx;
    if (st != SKV_STATUS_OK) {
        fprintf(stderr, "target %s: request %llu ended %s\n", t->name, (unsigned long long)rid,
                skv_status_str(st));
        t->n_err++;
        return;
    }
    uint8_t *got = malloc(BLOCK_BYTES), *want = malloc(BLOCK_BYTES);
    for (uint32_t k = 0; k < N_BLOCKS; k++) {
        const uint8_t *b = t->pool + (size_t)t->ids[rid % 4][k] * BLOCK_BYTES;
        if (t->device) {
            if (skv_cuda_kvx_copy(got, b, BLOCK_BYTES) != SKV_STATUS_OK) {
                SKV_TEST_FAIL("read back");
            }
            b = got;
        }
        fill_block(want, rid, k);
        if (memcmp(b, want, BLOCK_BYTES) != 0) {
            fprintf(stderr, "target %s: request %llu block %u differs\n", t->name,
                    (unsigned long long)rid, k);
            t->n_bad++;
        }
    }
    free(got);
    free(want);
    t->n_ok++;
}

static skv_kvx_t *t_start(tgt_t *t, const skv_kvx_device_ops_t *ops)
{
    skv_kvx_config_t cfg;
    skv_kvx_config_default(&cfg);
    (void)skv_kvx_config_env(&cfg);
    cfg.device_ops = ops;
    skv_kvx_t *kvx = NULL;
    if (skv_kvx_create(&cfg, &kvx) != SKV_STATUS_OK) {
        SKV_TEST_FAIL("target create");
    }
    skv_kvx_pool_config_t pc = {
        .base = t->pool,
        .block_bytes = BLOCK_BYTES,
        .n_blocks = POOL_BLOCKS,
        .fingerprint = FP,
        .release = t_release,
        .on_complete = t_complete,
        .complete_ctx = t,
        .device_memory = t->device,
    };
    if (skv_kvx_pool_register(kvx, &pc) != SKV_STATUS_OK) {
        SKV_TEST_FAIL("pool register %s", t->name);
    }
    return kvx;
}

/* Reserves requests rid0, rid0+1 on kvx (scattered blocks) and sends the descriptors. */
static void t_reserve(skv_kvx_t *kvx, tgt_t *t, uint64_t rid0, int fd)
{
    for (uint64_t r = rid0; r < rid0 + 2; r++) {
        for (uint32_t k = 0; k < N_BLOCKS; k++) { /* disjoint, never adjacent in order */
            t->ids[r % 4][k] = (uint32_t)((k * 5 + (r % 2) * 2) % POOL_BLOCKS);
        }
        void *d = NULL;
        size_t len = 0;
        if (skv_kvx_target_reserve(kvx, r, FP, t->ids[r % 4], N_BLOCKS,
                                   skv_clock_deadline_ms(30000), &d, &len) != SKV_STATUS_OK) {
            SKV_TEST_FAIL("reserve");
        }
        uint32_t l32 = (uint32_t)len;
        send_all(fd, &l32, 4);
        send_all(fd, d, len);
        skv_free(d);
    }
}

static int run_target(int fd)
{
    if (skv_cuda_kvx_device_count() == 0) {
        fprintf(stderr, "test_kvx_ipc: no GPU: skipped\n");
        return 77;
    }
    skv_cuda_kvx_t *ck = NULL;
    if (skv_cuda_kvx_create(0, &ck) != SKV_STATUS_OK) {
        SKV_TEST_FAIL("cuda hooks");
    }
    tgt_t a = {.name = "A (device pool, IPC)", .device = 1};
    tgt_t b = {.name = "B (host pool, staged)", .device = 0};
    tgt_t c = {.name = "C (device pool, no IPC: staged and bounced)", .device = 1};
    if (skv_cuda_kvx_malloc((size_t)POOL_BLOCKS * BLOCK_BYTES + 4096, (void **)&a.pool) != 0 ||
        skv_cuda_kvx_malloc((size_t)POOL_BLOCKS * BLOCK_BYTES, (void **)&c.pool) != 0) {
        SKV_TEST_FAIL("device pool");
    }
    a.pool += 4096; /* the pool starts inside its allocation: the export carries the offset */
    b.pool = calloc(POOL_BLOCKS, BLOCK_BYTES);
    skv_kvx_t *ka = t_start(&a, skv_cuda_kvx_ops(ck));
    skv_kvx_t *kb = t_start(&b, NULL);
    skv_kvx_t *kc = t_start(&c, skv_cuda_kvx_ops(ck));
    t_reserve(ka, &a, 0, fd);
    t_reserve(kb, &b, 2, fd);
    t_reserve(kc, &c, 4, fd);
    int64_t deadline = skv_clock_deadline_ms(60000);
    while (a.n_ok + a.n_err + b.n_ok + b.n_err + c.n_ok + c.n_err < 6 &&
           !skv_clock_expired(deadline)) {
        skv_kvx_progress(ka);
        skv_kvx_progress(kb);
        skv_kvx_progress(kc);
    }
    send_all(fd, "d", 1); /* the initiator may tear down now (it needs our progress) */
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    deadline = skv_clock_deadline_ms(10000);
    while (poll(&pfd, 1, 0) == 0 && !skv_clock_expired(deadline)) {
        skv_kvx_progress(ka);
        skv_kvx_progress(kb);
        skv_kvx_progress(kc);
    }
    skv_kvx_destroy(ka);
    skv_kvx_destroy(kb);
    skv_kvx_destroy(kc);
    if (a.n_ok != 2 || b.n_ok != 2 || c.n_ok != 2 || a.n_bad || b.n_bad || c.n_bad || a.n_err ||
        b.n_err || c.n_err) {
        SKV_TEST_FAIL("A: %d ok %d bad %d err; B: %d ok %d bad %d err; C: %d ok %d bad %d err",
                      a.n_ok, a.n_bad, a.n_err, b.n_ok, b.n_bad, b.n_err, c.n_ok, c.n_bad,
                      c.n_err);
    }
    skv_cuda_kvx_free(a.pool - 4096);
    skv_cuda_kvx_free(c.pool);
    free(b.pool);
    skv_cuda_kvx_destroy(ck);
    fprintf(stderr, "target: 2 IPC, 2 staged and 2 bounced requests byte-identical\n");
    return 0;
}

/* ---- initiator ----------------------------------------------------------------------------- */

/* Pushes request d from device memory src (N_BLOCKS blocks); layered: one layer slice of every
 * block per call. Returns whether IPC moved the bytes. */
static int i_push(skv_kvx_t *kvx, const skv_kvx_desc_t *d, const uint8_t *src, int layered)
{
    skv_kvx_push_t *push = NULL;
    if (skv_kvx_push_create(kvx, d, skv_clock_deadline_ms(30000), &push) != SKV_STATUS_OK) {
        SKV_TEST_FAIL("push create");
    }
    const void *srcs[N_BLOCKS];
    int n_calls = layered ? N_LAYERS : 1;
    uint64_t slice = BLOCK_BYTES / (uint64_t)n_calls;
    for (int l = 0; l < n_calls; l++) {
        for (uint32_t k = 0; k < N_BLOCKS; k++) {
            srcs[k] = src + (size_t)k * BLOCK_BYTES + l * slice;
        }
        skv_status_t st = skv_kvx_push_device(push, 0, N_BLOCKS, l * slice, slice, srcs);
        if (st != SKV_STATUS_OK) {
            SKV_TEST_FAIL("push_device: %s", skv_status_str(st));
        }
    }
    if (skv_kvx_push_finish(push, 1, SKV_STATUS_OK) != SKV_STATUS_OK) {
        SKV_TEST_FAIL("finish");
    }
    skv_status_t st = skv_kvx_push_wait(push);
    if (st != SKV_STATUS_OK) {
        SKV_TEST_FAIL("wait: %s", skv_status_str(st));
    }
    int ipc = skv_kvx_push_uses_ipc(push);
    fprintf(stderr, "initiator: request %llu (%s) via %s, %llu copies/sends\n",
            (unsigned long long)d->request_id, layered ? "layer by layer" : "whole blocks",
            ipc ? "CUDA IPC" : "staging", (unsigned long long)skv_kvx_push_n_puts(push));
    skv_kvx_push_destroy(push);
    return ipc;
}

static int run_initiator(int fd)
{
    if (skv_cuda_kvx_device_count() == 0) {
        return 77;
    }
    skv_cuda_kvx_t *ck = NULL;
    if (skv_cuda_kvx_create(0, &ck) != SKV_STATUS_OK) {
        SKV_TEST_FAIL("cuda hooks");
    }
    skv_kvx_config_t cfg;
    skv_kvx_config_default(&cfg);
    (void)skv_kvx_config_env(&cfg);
    cfg.device_ops = skv_cuda_kvx_ops(ck);
    cfg.staging_alloc = skv_cuda_kvx_host_alloc;
    cfg.staging_free = skv_cuda_kvx_host_free;
    cfg.staging_bytes = 3 * BLOCK_BYTES / 2; /* pieces straddle buffers */
    cfg.n_staging = 3;
    skv_kvx_t *kvx = NULL, *kvx_no_ipc = NULL;
    if (skv_kvx_create(&cfg, &kvx) != SKV_STATUS_OK) {
        SKV_TEST_FAIL("initiator create");
    }
    cfg.no_ipc = 1; /* as between hosts: C's device pool takes data messages, bounced */
    if (skv_kvx_create(&cfg, &kvx_no_ipc) != SKV_STATUS_OK) {
        SKV_TEST_FAIL("initiator create (no IPC)");
    }
    uint8_t *host = malloc((size_t)N_BLOCKS * BLOCK_BYTES);
    uint8_t *dev[6];
    for (uint64_t r = 0; r < 6; r++) {
        for (uint32_t k = 0; k < N_BLOCKS; k++) {
            fill_block(host + (size_t)k * BLOCK_BYTES, r, k);
        }
        if (skv_cuda_kvx_malloc((size_t)N_BLOCKS * BLOCK_BYTES, (void **)&dev[r]) != 0 ||
            skv_cuda_kvx_copy(dev[r], host, (size_t)N_BLOCKS * BLOCK_BYTES) != 0) {
            SKV_TEST_FAIL("device source");
        }
    }
    for (uint64_t r = 0; r < 6; r++) {
        uint32_t len = 0;
        if (skv_test_read_full(fd, &len, 4) != 0) {
            SKV_TEST_FAIL("descriptor channel");
        }
        uint8_t *b = malloc(len);
        skv_kvx_desc_t *d = NULL;
        if (skv_test_read_full(fd, b, len) != 0 ||
            skv_kvx_desc_decode(b, len, &d) != SKV_STATUS_OK) {
            SKV_TEST_FAIL("descriptor");
        }
        free(b);
        int ipc = i_push(r < 4 ? kvx : kvx_no_ipc, d, dev[r], (int)(r % 2));
        if (ipc != (r < 2)) {
            SKV_TEST_FAIL("request %llu: expected %s", (unsigned long long)r,
                          r < 2 ? "IPC" : "staging");
        }
        skv_kvx_desc_destroy(d);
    }
    char c;
    while (read(fd, &c, 1) != 1) { /* the target checked everything */
        skv_kvx_progress(kvx);
        skv_kvx_progress(kvx_no_ipc);
    }
    skv_kvx_destroy(kvx);
    skv_kvx_destroy(kvx_no_ipc);
    send_all(fd, "x", 1);
    for (int r = 0; r < 6; r++) {
        skv_cuda_kvx_free(dev[r]);
    }
    free(host);
    skv_cuda_kvx_destroy(ck);
    return 0;
}

static pid_t spawn(int (*fn)(int), int fd)
{
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        _exit(fn(fd));
    }
    return pid;
}

int main(void)
{
    alarm(120);
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0) {
        return 1;
    }
    pid_t t = spawn(run_target, sp[0]);
    pid_t i = spawn(run_initiator, sp[1]);
    int st_t = 0, st_i = 0;
    waitpid(t, &st_t, 0);
    if (WIFEXITED(st_t) && WEXITSTATUS(st_t) == 77) {
        kill(i, SIGKILL);
        waitpid(i, NULL, 0);
        return 77;
    }
    if (!WIFEXITED(st_t) || WEXITSTATUS(st_t) != 0) {
        kill(i, SIGKILL);
    }
    waitpid(i, &st_i, 0);
    int ok = WIFEXITED(st_t) && WEXITSTATUS(st_t) == 0 && WIFEXITED(st_i) && WEXITSTATUS(st_i) == 0;
    fprintf(stderr, "test_kvx_ipc: %s\n", ok ? "passed" : "FAILED");
    return ok ? 0 : 1;
}
#endif
