/*
 * test_kvx_procs.c: KV transfer between real processes on loopback. The parent only forks and
 * supervises (it never touches UCX); a target (decode) child reserves blocks and ships the
 * descriptors over socketpairs, standing in for gRPC; initiator (prefill) children push.
 * Transports come from the environment (ctest sets UCX_TLS per test).
 *
 * Scenarios (argv[1]):
 *   transfer        32 concurrent requests, scattered blocks, two initiators, host pushes layer
 *                   by layer and staged pushes; every block byte-identical (checksum carried
 *                   as the first token, plus a full compare), every block accounted for.
 *   kill_initiator  the initiator is SIGKILLed mid-push: the target's leases expire, each
 *                   release runs exactly once, no block leaks.
 *   kill_target     the target is SIGKILLed mid-push: the initiator's finish fails with a
 *                   status within its deadline, and teardown is bounded.
 * Every process is bounded: children die with the parent (PR_SET_PDEATHSIG), the parent has
 * an alarm, and every UCX wait has a deadline.
 */
#include <errno.h>
#include <poll.h>
#include <sched.h>
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

#define POOL_BLOCKS 1024
#define BLOCK_BYTES (16 * 1024) /* 16 tokens x 1 KiB per token (all layers), small model */
#define N_LAYERS    4           /* a block is N_LAYERS slices: pushed layer by layer */
#define N_REQ       32
#define FP          0x5EEDF00DULL

/* ---- deterministic KV data ------------------------------------------------------------- */

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static void fill_block(uint8_t *p, uint64_t rid, uint32_t k)
{
    uint64_t s = rid * 1000003 + k;
    for (size_t i = 0; i < BLOCK_BYTES; i += 8) {
        uint64_t v = splitmix(&s);
        memcpy(p + i, &v, 8);
    }
}

static uint32_t fnv1a(uint32_t h, const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        h = (h ^ p[i]) * 16777619u;
    }
    return h;
}

/* ---- framing over a socketpair --------------------------------------------------------- */

static void send_frame(int fd, const void *p, uint32_t n)
{
    if (write(fd, &n, 4) != 4 || write(fd, p, n) != (ssize_t)n) {
        SKV_TEST_FAIL("send_frame: %s", strerror(errno));
    }
}

static uint8_t *recv_frame(int fd, uint32_t *n_p)
{
    uint32_t n = 0;
    if (skv_test_read_full(fd, &n, 4) != 0 || n > (1u << 24)) {
        return NULL;
    }
    uint8_t *p = malloc(n);
    if (skv_test_read_full(fd, p, n) != 0) {
        free(p);
        return NULL;
    }
    *n_p = n;
    return p;
}

/* ---- target ------------------------------------------------------------------------------ */

typedef struct {
    uint8_t *pool;
    int taken[POOL_BLOCKS];
    int n_taken;
    int n_release_calls[N_REQ];
    int n_ok;
    int n_err;
    uint32_t ids[N_REQ][64];
    uint32_t n_ids[N_REQ];
    int bad;
} target_t;

static void t_release(void *ctx, uint64_t rid, const uint32_t *ids, uint32_t n)
{
    target_t *t = ctx;
    t->n_release_calls[rid % N_REQ]++;
    int64_t twice = skv_test_blocks_release(t->taken, &t->n_taken, ids, n);
    if (twice >= 0) {
        SKV_TEST_FAIL("block %lld released twice", (long long)twice);
    }
}

/* On completion the decode owner checks the bytes, then frees the blocks itself. */
static void t_complete(void *ctx, uint64_t rid, int32_t tok, skv_status_t st)
{
    target_t *t = ctx;
    if (st != SKV_STATUS_OK) {
        t->n_err++;
        return;
    }
    uint32_t r = (uint32_t)(rid % N_REQ);
    uint32_t h = 2166136261u;
    uint8_t want[BLOCK_BYTES];
    for (uint32_t k = 0; k < t->n_ids[r]; k++) {
        const uint8_t *b = t->pool + (size_t)t->ids[r][k] * BLOCK_BYTES;
        h = fnv1a(h, b, BLOCK_BYTES);
        fill_block(want, rid, k);
        if (memcmp(b, want, BLOCK_BYTES) != 0) {
            fprintf(stderr, "request %llu block %u differs\n", (unsigned long long)rid, k);
            t->bad++;
        }
    }
    if ((int32_t)(h & 0x7fffffff) != tok) {
        fprintf(stderr, "request %llu checksum %08x != %08x\n", (unsigned long long)rid,
                h & 0x7fffffff, tok);
        t->bad++;
    }
    t->n_ok++;
    for (uint32_t k = 0; k < t->n_ids[r]; k++) {
        t->taken[t->ids[r][k]] = 0;
        t->n_taken--;
    }
}

/* Picks n scattered free blocks (random, never adjacent in request order by construction). */
static void t_pick(target_t *t, uint64_t *rng, uint32_t r, uint32_t n)
{
    for (uint32_t k = 0; k < n;) {
        uint32_t id = (uint32_t)(splitmix(rng) % POOL_BLOCKS);
        if (!t->taken[id]) {
            t->taken[id] = 1;
            t->n_taken++;
            t->ids[r][k++] = id;
        }
    }
    t->n_ids[r] = n;
}

static skv_kvx_t *t_start(target_t *t)
{
    skv_kvx_t *kvx = NULL;
    if (skv_test_kvx_create(&kvx) != SKV_STATUS_OK) {
        SKV_TEST_FAIL("target create");
    }
    /* base NULL: UCX allocates the pool (shared memory maps it into the initiator). */
    skv_kvx_pool_config_t pc = {
        .base = NULL,
        .block_bytes = BLOCK_BYTES,
        .n_blocks = POOL_BLOCKS,
        .fingerprint = FP,
        .release = t_release,
        .release_ctx = t,
        .on_complete = t_complete,
        .complete_ctx = t,
    };
    if (skv_kvx_pool_register(kvx, &pc) != SKV_STATUS_OK) {
        SKV_TEST_FAIL("pool register");
    }
    t->pool = skv_kvx_pool_base(kvx);
    return kvx;
}

/* Reserves n_req requests and sends request r's descriptor to fds[r % n_fds]. */
static void t_reserve_all(skv_kvx_t *kvx, target_t *t, int n_req, const int *fds, int n_fds,
                          int64_t lease_ms)
{
    uint64_t rng = 77;
    for (int r = 0; r < n_req; r++) {
        uint32_t n = 1 + (uint32_t)(splitmix(&rng) % 40);
        t_pick(t, &rng, (uint32_t)r, n);
        void *desc = NULL;
        size_t len = 0;
        skv_status_t st = skv_kvx_target_reserve(kvx, (uint64_t)(N_REQ * 100 + r), FP, t->ids[r], n,
                                                 skv_clock_deadline_ms(lease_ms), &desc, &len);
        if (st != SKV_STATUS_OK) {
            SKV_TEST_FAIL("reserve %d: %s", r, skv_status_str(st));
        }
        send_frame(fds[r % n_fds], desc, (uint32_t)len);
        skv_free(desc);
    }
    for (int i = 0; i < n_fds; i++) {
        send_frame(fds[i], "", 0); /* end of descriptors */
    }
}

static void t_run_until_idle(skv_kvx_t *kvx, int64_t ms)
{
    int64_t deadline = skv_clock_deadline_ms(ms);
    while (!skv_test_kvx_no_leases(kvx) && !skv_clock_expired(deadline)) {
        if (skv_kvx_progress(kvx) == 0) {
            sched_yield();
        }
    }
}

static int target_transfer(const int *fds, int n_fds)
{
    target_t t = {0};
    skv_kvx_t *kvx = t_start(&t);
    t_reserve_all(kvx, &t, N_REQ, fds, n_fds, 20000);
    t_run_until_idle(kvx, 20000);
    if (t.n_ok != N_REQ || t.bad != 0 || t.n_taken != 0 || t.n_err != 0) {
        SKV_TEST_FAIL("transfer: %d ok, %d errors, %d bad, %d blocks held", t.n_ok, t.n_err, t.bad,
                      t.n_taken);
    }
    skv_kvx_destroy(kvx);
    fprintf(stderr, "target: %d requests byte-identical, all blocks accounted for\n", N_REQ);
    return 0;
}

static int target_expire(const int *fds, int n_fds, int n_req)
{
    target_t t = {0};
    skv_kvx_t *kvx = t_start(&t);
    t_reserve_all(kvx, &t, n_req, fds, n_fds, 3000); /* slack for a loaded machine */
    int64_t t0 = skv_clock_now_ns();
    t_run_until_idle(kvx, 6000);
    int64_t ms = (skv_clock_now_ns() - t0) / 1000000;
    for (int r = 0; r < n_req; r++) {
        if (t.n_release_calls[r] != 1) {
            SKV_TEST_FAIL("request %d released %d times", r, t.n_release_calls[r]);
        }
    }
    if (t.n_taken != 0 || t.n_err != n_req || t.n_ok != 0) {
        SKV_TEST_FAIL("expire: %d blocks held, %d errors, %d ok", t.n_taken, t.n_err, t.n_ok);
    }
    skv_kvx_destroy(kvx);
    fprintf(stderr, "target: %d leases expired after %lld ms, released once each\n", n_req,
            (long long)ms);
    return 0;
}

static int target_serve_forever(const int *fds, int n_fds, int n_req, int ready_fd)
{
    target_t t = {0};
    skv_kvx_t *kvx = t_start(&t);
    t_reserve_all(kvx, &t, n_req, fds, n_fds, 20000);
    for (;;) { /* until SIGKILL (the parent has a deadline) */
        if (skv_kvx_progress(kvx) == 0) {
            sched_yield();
        }
    }
    return 0;
}

/* ---- initiator --------------------------------------------------------------------------- */

typedef struct {
    skv_kvx_desc_t *d;
    skv_kvx_push_t *push;
    uint8_t *src;
    const void **srcs;
    uint32_t sum;
} req_t;

static skv_status_t i_copy(void *ctx, uint32_t index, uint64_t offset, void *dst, uint64_t bytes)
{
    const req_t *q = ctx; /* memcpy stands in for a device-to-host copy */
    memcpy(dst, q->src + (size_t)index * BLOCK_BYTES + offset, bytes);
    return SKV_STATUS_OK;
}

/* Reads descriptors until the empty frame; opens a push and makes the data for each. */
static int i_open(skv_kvx_t *kvx, int fd, req_t *q, int max, int64_t deadline_ms)
{
    int n = 0;
    for (;;) {
        uint32_t len = 0;
        uint8_t *bytes = recv_frame(fd, &len);
        if (bytes == NULL) {
            SKV_TEST_FAIL("descriptor channel closed");
        }
        if (len == 0 || n == max) {
            free(bytes);
            return n;
        }
        req_t *r = &q[n++];
        if (skv_kvx_desc_decode(bytes, len, &r->d) != SKV_STATUS_OK) {
            SKV_TEST_FAIL("decode");
        }
        free(bytes);
        skv_status_t st =
            skv_kvx_push_create(kvx, r->d, skv_clock_deadline_ms(deadline_ms), &r->push);
        if (st != SKV_STATUS_OK) {
            SKV_TEST_FAIL("push_create: %s", skv_status_str(st));
        }
        r->src = malloc((size_t)r->d->n_blocks * BLOCK_BYTES);
        r->srcs = malloc(r->d->n_blocks * sizeof(*r->srcs));
        r->sum = 2166136261u;
        for (uint32_t k = 0; k < r->d->n_blocks; k++) {
            fill_block(r->src + (size_t)k * BLOCK_BYTES, r->d->request_id, k);
            r->srcs[k] = r->src + (size_t)k * BLOCK_BYTES;
            r->sum = fnv1a(r->sum, r->srcs[k], BLOCK_BYTES);
        }
    }
}

/* Pushes one layer slice of every block of request r (host) or a block range (staged). */
static skv_status_t i_push_step(req_t *r, int idx, int layer)
{
    uint64_t slice = BLOCK_BYTES / N_LAYERS;
    if (idx % 2 == 0) {
        const void *s[64];
        for (uint32_t k = 0; k < r->d->n_blocks; k++) {
            s[k] = (const uint8_t *)r->srcs[k] + layer * slice;
        }
        return skv_kvx_push_host(r->push, 0, r->d->n_blocks, layer * slice, slice, s);
    }
    /* Staged: block ranges as "compute" finishes, whole blocks. */
    uint32_t n = r->d->n_blocks;
    uint32_t a = n * (uint32_t)layer / N_LAYERS;
    uint32_t b = n * (uint32_t)(layer + 1) / N_LAYERS;
    return b > a ? skv_kvx_push_staged(r->push, a, b - a, 0, BLOCK_BYTES, i_copy, r)
                 : SKV_STATUS_OK;
}

static void i_free(req_t *q, int n)
{
    for (int i = 0; i < n; i++) {
        skv_kvx_push_destroy(q[i].push);
        skv_kvx_desc_destroy(q[i].d);
        free(q[i].src);
        free(q[i].srcs);
    }
}

static int initiator_transfer(int fd)
{
    skv_kvx_t *kvx = NULL;
    if (skv_test_kvx_create(&kvx) != SKV_STATUS_OK) {
        SKV_TEST_FAIL("initiator create");
    }
    req_t q[N_REQ] = {0};
    int n = i_open(kvx, fd, q, N_REQ, 15000);
    for (int layer = 0; layer < N_LAYERS; layer++) { /* all requests interleaved */
        for (int i = 0; i < n; i++) {
            skv_status_t st = i_push_step(&q[i], i, layer);
            if (st != SKV_STATUS_OK) {
                SKV_TEST_FAIL("push: %s", skv_status_str(st));
            }
            skv_kvx_progress(kvx);
        }
    }
    for (int i = 0; i < n; i++) {
        if (skv_kvx_push_finish(q[i].push, (int32_t)(q[i].sum & 0x7fffffff), SKV_STATUS_OK)) {
            SKV_TEST_FAIL("finish");
        }
    }
    for (int i = 0; i < n; i++) {
        skv_status_t st = skv_kvx_push_wait(q[i].push);
        if (st != SKV_STATUS_OK) {
            SKV_TEST_FAIL("wait %d: %s", i, skv_status_str(st));
        }
    }
    i_free(q, n);
    skv_kvx_destroy(kvx);
    fprintf(stderr, "initiator: %d requests pushed\n", n);
    return 0;
}

/* Pushes half of every request, tells the parent, then either spins (to be killed) or, when
 * the target is the one killed, tries to finish and expects a bounded error. */
static int initiator_half(int fd, int ready_fd, int expect_dead_target)
{
    skv_kvx_t *kvx = NULL;
    if (skv_test_kvx_create(&kvx) != SKV_STATUS_OK) {
        SKV_TEST_FAIL("initiator create");
    }
    req_t q[N_REQ] = {0};
    /* 4 s: the whole push, the dead-target phase included, is bounded by this deadline. */
    int n = i_open(kvx, fd, q, N_REQ, 4000);
    for (int layer = 0; layer < N_LAYERS / 2; layer++) {
        for (int i = 0; i < n; i++) {
            if (i_push_step(&q[i], i, layer) != SKV_STATUS_OK) {
                SKV_TEST_FAIL("push");
            }
        }
    }
    if (write(ready_fd, "S", 1) != 1) {
        SKV_TEST_FAIL("ready");
    }
    if (!expect_dead_target) {
        for (;;) {
            skv_kvx_progress(kvx);
        }
    }
    char c;
    if (read(ready_fd, &c, 1) != 1) { /* the parent says the target is dead */
        SKV_TEST_FAIL("parent");
    }
    int64_t t0 = skv_clock_now_ns();
    int n_failed = 0;
    for (int i = 0; i < n; i++) {
        skv_status_t st = i_push_step(&q[i], i, N_LAYERS / 2);
        if (st == SKV_STATUS_OK) {
            st = skv_kvx_push_finish(q[i].push, 1, SKV_STATUS_OK);
        }
        if (st == SKV_STATUS_OK) {
            st = skv_kvx_push_wait(q[i].push);
        }
        fprintf(stderr, "initiator: request %d after target death: %s\n", i, skv_status_str(st));
        n_failed += st != SKV_STATUS_OK;
    }
    int64_t ms = (skv_clock_now_ns() - t0) / 1000000;
    i_free(q, n);
    skv_kvx_destroy(kvx);
    int64_t total = (skv_clock_now_ns() - t0) / 1000000;
    if (n_failed != n || total > 8000) {
        SKV_TEST_FAIL("dead target: %d of %d failed, %lld ms (teardown incl. %lld ms)", n_failed, n,
                      (long long)ms, (long long)total);
    }
    fprintf(stderr, "initiator: dead target -> %d pushes failed in %lld ms, teardown %lld ms\n",
            n_failed, (long long)ms, (long long)(total - ms));
    return 0;
}

/* ---- supervisor -------------------------------------------------------------------------- */

static pid_t spawn(int (*fn)(void *), void *arg)
{
    pid_t pid = fork();
    if (pid < 0) {
        SKV_TEST_FAIL("fork: %s", strerror(errno));
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        _exit(fn(arg));
    }
    return pid;
}

typedef struct {
    int fds[2];
    int n_fds;
    int ready_fd;
    int mode;
} child_arg_t;

static int run_target(void *p)
{
    child_arg_t *a = p;
    switch (a->mode) {
    case 0:
        return target_transfer(a->fds, a->n_fds);
    case 1:
        return target_expire(a->fds, a->n_fds, 4);
    default:
        return target_serve_forever(a->fds, a->n_fds, 4, a->ready_fd);
    }
}

static int run_initiator(void *p)
{
    child_arg_t *a = p;
    switch (a->mode) {
    case 0:
        return initiator_transfer(a->fds[0]);
    case 1:
        return initiator_half(a->fds[0], a->ready_fd, 0);
    default:
        return initiator_half(a->fds[0], a->ready_fd, 1);
    }
}

/* Waits for all n children until deadline. A child that fails or overstays gets the others
 * killed at once. Returns 0 when every child exited 0. */
static int wait_all(pid_t *pids, int n, int64_t deadline)
{
    int left = n, rc = 0;
    while (left > 0 && !skv_clock_expired(deadline)) {
        int wstatus = 0;
        pid_t r = waitpid(-1, &wstatus, WNOHANG);
        if (r <= 0) {
            usleep(5000);
            continue;
        }
        for (int i = 0; i < n; i++) {
            if (pids[i] == r) {
                pids[i] = 0;
                left--;
                rc |= !WIFEXITED(wstatus) || WEXITSTATUS(wstatus) != 0;
            }
        }
        if (rc != 0) {
            break;
        }
    }
    for (int i = 0; i < n; i++) {
        if (pids[i] > 0) {
            fprintf(stderr, "child %d killed (%s)\n", pids[i], rc ? "a sibling failed" : "timeout");
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
            rc = 1;
        }
    }
    return rc;
}

/* Waits for one child; returns 0 when it exited 0. */
static int wait_child(pid_t pid, int64_t deadline)
{
    return wait_all(&pid, 1, deadline);
}

static char wait_byte(int fd, int ms)
{
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    char c = 0;
    if (poll(&pfd, 1, ms) != 1 || read(fd, &c, 1) != 1) {
        SKV_TEST_FAIL("no signal from child within %d ms", ms);
    }
    return c;
}

static int scenario_transfer(void)
{
    int sp[2][2];
    for (int i = 0; i < 2; i++) {
        socketpair(AF_UNIX, SOCK_STREAM, 0, sp[i]);
    }
    child_arg_t ta = {.fds = {sp[0][0], sp[1][0]}, .n_fds = 2, .mode = 0};
    pid_t t = spawn(run_target, &ta);
    child_arg_t i0 = {.fds = {sp[0][1]}, .mode = 0}, i1 = {.fds = {sp[1][1]}, .mode = 0};
    pid_t p0 = spawn(run_initiator, &i0);
    pid_t p1 = spawn(run_initiator, &i1);
    pid_t pids[3] = {t, p0, p1};
    return wait_all(pids, 3, skv_clock_deadline_ms(40000));
}

static int scenario_kill_initiator(void)
{
    int sp[2], rp[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
    socketpair(AF_UNIX, SOCK_STREAM, 0, rp);
    child_arg_t ta = {.fds = {sp[0]}, .n_fds = 1, .mode = 1};
    pid_t t = spawn(run_target, &ta);
    child_arg_t ia = {.fds = {sp[1]}, .ready_fd = rp[1], .mode = 1};
    pid_t p = spawn(run_initiator, &ia);
    wait_byte(rp[0], 10000);
    kill(p, SIGKILL); /* mid-transfer: half the layers written, no completion */
    waitpid(p, NULL, 0);
    return wait_child(t, skv_clock_deadline_ms(15000));
}

static int scenario_kill_target(void)
{
    int sp[2], rp[2];
    socketpair(AF_UNIX, SOCK_STREAM, 0, sp);
    socketpair(AF_UNIX, SOCK_STREAM, 0, rp);
    child_arg_t ta = {.fds = {sp[0]}, .n_fds = 1, .mode = 2};
    pid_t t = spawn(run_target, &ta);
    child_arg_t ia = {.fds = {sp[1]}, .ready_fd = rp[1], .mode = 2};
    pid_t p = spawn(run_initiator, &ia);
    wait_byte(rp[0], 10000);
    kill(t, SIGKILL);
    waitpid(t, NULL, 0);
    if (write(rp[0], "K", 1) != 1) {
        SKV_TEST_FAIL("signal initiator");
    }
    return wait_child(p, skv_clock_deadline_ms(20000));
}

int main(int argc, char **argv)
{
    alarm(60); /* the parent itself is bounded; children die with it */
    signal(SIGPIPE, SIG_IGN);
    const char *s = argc > 1 ? argv[1] : "transfer";
    if (strcmp(s, "transfer") == 0) {
        return scenario_transfer();
    }
    if (strcmp(s, "kill_initiator") == 0) {
        return scenario_kill_initiator();
    }
    if (strcmp(s, "kill_target") == 0) {
        return scenario_kill_target();
    }
    fprintf(stderr, "usage: %s transfer|kill_initiator|kill_target\n", argv[0]);
    return 2;
}
