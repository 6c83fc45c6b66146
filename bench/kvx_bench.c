/*
 * kvx_bench.c: bandwidth of KV pushes between two processes on this host (skv_kvx), to be
 * compared with `ucx_perftest -t ucp_put_bw` on the same transport (bench/kvx_bench.sh).
 *
 * A forked target registers a pool of total_bytes, reserves iters+1 requests over all of its
 * blocks in a scattered order (so no two neighbours in a request are adjacent and nothing
 * coalesces), and ships the descriptors over a socketpair. The parent pushes each request in
 * pieces of piece_bytes per block (piece = block: one put per block; piece < block: layer by
 * layer), finishes (flush + completion message) and waits. The first request is warm-up; the
 * reported GB/s (1e9 bytes/s) covers the rest, completion round trips included.
 *
 * Usage: kvx_bench [flags]: `kvx_bench --help` lists them with their defaults and
 * SKV_KVX_BENCH_* variables (one table, base/cli.h). Transports come from UCX_TLS. This is a
 * benchmark, not a test; exit 2 on bad usage.
 */
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
#include "base/cli.h"
#include "base/clock.h"
#include "common/kvx/kvx.h"

#define FP 0xBE7CULL

typedef struct {
    uint64_t total_bytes;
    uint64_t block_bytes;
    uint64_t piece_bytes;
    int iters;
    int staged;
    int user_pool;
    uint64_t msg_bytes; /* largest data message (skv_kvx_config_t.am_message_bytes); 0 = default */
} opts_t;

static void die(const char *what)
{
    fprintf(stderr, "kvx_bench: %s\n", what);
    exit(1);
}

static int read_full(int fd, void *p, size_t n)
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

static void noop_release(void *ctx, uint64_t rid, const uint32_t *ids, uint32_t n)
{
}

static void count_complete(void *ctx, uint64_t rid, int32_t tok, skv_status_t st)
{
    (*(int *)ctx)++;
}

/* Scattered order: stride through the pool by a step coprime with n (and never 1 apart). */
static void scatter(uint32_t *ids, uint32_t n)
{
    uint32_t step = n > 4 ? n / 2 + 1 : 1;
    while (n > 4 && (n % step == 0 || step == n - 1)) {
        step++;
    }
    for (uint32_t k = 0; k < n; k++) {
        ids[k] = (uint32_t)(((uint64_t)k * step) % n);
    }
}

static int run_target(const opts_t *o, int fd)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    uint32_t n = (uint32_t)(o->total_bytes / o->block_bytes);
    /* Default: the caller's memory (what the engine does); --ucx-pool: UCX allocates it. */
    uint8_t *pool = o->user_pool ? aligned_alloc(4096, o->total_bytes) : NULL;
    uint32_t *ids = calloc(n, sizeof(*ids));
    int done = 0;
    skv_kvx_t *kvx = NULL;
    skv_kvx_config_t cfg;
    skv_kvx_config_default(&cfg);
    if ((o->user_pool && pool == NULL) || ids == NULL ||
        skv_kvx_config_env(&cfg) != SKV_STATUS_OK || skv_kvx_create(&cfg, &kvx) != SKV_STATUS_OK) {
        die("target setup");
    }
    skv_kvx_pool_config_t pc = {.base = pool,
                                .block_bytes = o->block_bytes,
                                .n_blocks = n,
                                .fingerprint = FP,
                                .release = noop_release,
                                .on_complete = count_complete,
                                .complete_ctx = &done};
    if (skv_kvx_pool_register(kvx, &pc) != SKV_STATUS_OK) {
        die("pool register");
    }
    memset(skv_kvx_pool_base(kvx), 0, o->total_bytes); /* fault the pages in */
    scatter(ids, n);
    for (int i = 0; i <= o->iters; i++) { /* benchmark only: leases share the blocks */
        void *d = NULL;
        size_t len = 0;
        if (skv_kvx_target_reserve(kvx, (uint64_t)i + 1, FP, ids, n, skv_clock_deadline_ms(600000),
                                   &d, &len) != SKV_STATUS_OK) {
            die("reserve");
        }
        uint32_t l32 = (uint32_t)len;
        if (write(fd, &l32, 4) != 4 || write(fd, d, len) != (ssize_t)len) {
            die("send descriptor");
        }
        skv_free(d);
    }
    while (done <= o->iters) {
        if (skv_kvx_progress(kvx) == 0) {
            sched_yield(); /* an engine loop would do other work here */
        }
    }
    /* Keep progressing until the initiator closed its endpoint (it needs our progress). */
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    while (poll(&pfd, 1, 0) == 0) {
        skv_kvx_progress(kvx);
    }
    skv_kvx_destroy(kvx);
    return 0;
}

static skv_status_t memcpy_copy(void *ctx, uint32_t index, uint64_t offset, void *dst,
                                uint64_t bytes)
{
    const opts_t *o = ((const void **)ctx)[0];
    const uint8_t *src = ((const void **)ctx)[1];
    memcpy(dst, src + (uint64_t)index * o->block_bytes + offset, bytes);
    return SKV_STATUS_OK;
}

/* Pushes one whole request piece by piece; returns the status of the wait. */
static skv_status_t push_one(skv_kvx_t *kvx, const opts_t *o, const skv_kvx_desc_t *d,
                             const uint8_t *src, const void **srcs)
{
    skv_kvx_push_t *push = NULL;
    skv_status_t st = skv_kvx_push_create(kvx, d, skv_clock_deadline_ms(600000), &push);
    const void *ctx[2] = {o, src};
    for (uint64_t off = 0; st == SKV_STATUS_OK && off < o->block_bytes; off += o->piece_bytes) {
        for (uint32_t k = 0; k < d->n_blocks; k++) {
            srcs[k] = src + (uint64_t)k * o->block_bytes + off;
        }
        st = o->staged
                 ? skv_kvx_push_staged(push, 0, d->n_blocks, off, o->piece_bytes, memcpy_copy, ctx)
                 : skv_kvx_push_host(push, 0, d->n_blocks, off, o->piece_bytes, srcs);
        skv_kvx_progress(kvx);
    }
    if (st == SKV_STATUS_OK) {
        st = skv_kvx_push_finish(push, 1, SKV_STATUS_OK);
    }
    if (st == SKV_STATUS_OK) {
        st = skv_kvx_push_wait(push);
    }
    skv_kvx_push_destroy(push);
    return st;
}

static skv_kvx_desc_t *recv_desc(int fd)
{
    uint32_t len = 0;
    if (read_full(fd, &len, 4) != 0) {
        die("descriptor channel");
    }
    uint8_t *b = malloc(len);
    skv_kvx_desc_t *d = NULL;
    if (b == NULL || read_full(fd, b, len) != 0 || skv_kvx_desc_decode(b, len, &d) != 0) {
        die("descriptor");
    }
    free(b);
    return d;
}

static double run_initiator(const opts_t *o, int fd)
{
    skv_kvx_config_t cfg;
    skv_kvx_config_default(&cfg);
    (void)skv_kvx_config_env(&cfg);
    if (o->msg_bytes != 0) {
        cfg.am_message_bytes = o->msg_bytes;
    }
    skv_kvx_t *kvx = NULL;
    uint8_t *src = aligned_alloc(4096, o->total_bytes);
    const void **srcs = calloc(o->total_bytes / o->block_bytes, sizeof(*srcs));
    if (src == NULL || srcs == NULL || skv_kvx_create(&cfg, &kvx) != SKV_STATUS_OK) {
        die("initiator setup");
    }
    for (uint64_t i = 0; i < o->total_bytes; i++) {
        src[i] = (uint8_t)(i * 131 + (i >> 12));
    }
    int64_t t0 = 0;
    for (int i = 0; i <= o->iters; i++) {
        skv_kvx_desc_t *d = recv_desc(fd);
        if (i == 1) {
            t0 = skv_clock_now_ns(); /* request 0 was warm-up (wireup, page faults) */
        }
        skv_status_t st = push_one(kvx, o, d, src, srcs);
        if (st != SKV_STATUS_OK) {
            fprintf(stderr, "kvx_bench: push %d: %s\n", i, skv_status_str(st));
            exit(1);
        }
        skv_kvx_desc_destroy(d);
    }
    double secs = (double)(skv_clock_now_ns() - t0) / 1e9;
    skv_kvx_destroy(kvx);
    if (write(fd, "x", 1) != 1) {
        die("signal target");
    }
    free(src);
    free(srcs);
    return (double)o->total_bytes * o->iters / secs / 1e9;
}

#define SKV_KVXB_L(name, env, field, lo, hi, help)                                                 \
    {name, env, SKV_CLI_INT64, &field, lo, hi, 0, 0, help}

/* Parses the environment and argv into o (sizes in MiB / KiB there); SKV_CLI_OK, SKV_CLI_HELP
 * or SKV_CLI_USAGE (reported). */
static int parse(int argc, char **argv, opts_t *o)
{
    int64_t total_mib = 64, block_kib = 2 << 10, piece_kib = 0, msg_kib = 0;
    int ucx_pool = 0;
    *o = (opts_t){.iters = 5, .user_pool = 1};
    const skv_cli_opt_t opts[] = {
        SKV_KVXB_L("total", "SKV_KVX_BENCH_TOTAL", total_mib, 1, 1 << 20,
                   "pool size in MiB (a multiple of --block)"),
        SKV_KVXB_L("block", "SKV_KVX_BENCH_BLOCK", block_kib, 1, 1 << 30,
                   "KV block size in KiB (a multiple of --piece)"),
        SKV_KVXB_L("piece", "SKV_KVX_BENCH_PIECE", piece_kib, 0, 1 << 30,
                   "pushed per block at once, in KiB (0: the whole block)"),
        SKV_KVXB_L("msg", "SKV_KVX_BENCH_MSG", msg_kib, 0, 1 << 30,
                   "largest KV data message on transports without RMA, in KiB (0: kvx's)"),
        {"iters", "SKV_KVX_BENCH_ITERS", SKV_CLI_INT, &o->iters, 1, 1 << 20, 0, 0,
         "measured requests (after one warm-up)"},
        {"staged", "SKV_KVX_BENCH_STAGED", SKV_CLI_SWITCH, &o->staged, 0, 1, 0, 0,
         "push through staging copies (skv_kvx_push_staged)"},
        {"ucx-pool", "SKV_KVX_BENCH_UCX_POOL", SKV_CLI_SWITCH, &ucx_pool, 0, 1, 0, 0,
         "the pool allocated by UCX instead of the caller"},
    };
    int st = skv_cli_parse("kvx_bench",
                           "KV push bandwidth between two processes on this host (see "
                           "bench/kvx_bench.sh).",
                           opts, sizeof(opts) / sizeof(opts[0]), argc, argv, NULL);
    o->total_bytes = (uint64_t)total_mib << 20;
    o->block_bytes = (uint64_t)block_kib << 10;
    o->piece_bytes = (uint64_t)(piece_kib > 0 ? piece_kib : block_kib) << 10;
    o->msg_bytes = (uint64_t)msg_kib << 10;
    o->user_pool = !ucx_pool;
    if (st == SKV_CLI_OK &&
        (o->total_bytes % o->block_bytes != 0 || o->block_bytes % o->piece_bytes != 0)) {
        fprintf(stderr, "kvx_bench: --total must be a multiple of --block, --block of --piece\n");
        return SKV_CLI_USAGE;
    }
    return st;
}

int main(int argc, char **argv)
{
    opts_t o;
    int parsed = parse(argc, argv, &o);
    if (parsed != SKV_CLI_OK) {
        return parsed == SKV_CLI_HELP ? 0 : 2;
    }
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0) {
        die("socketpair");
    }
    pid_t pid = fork();
    if (pid == 0) {
        close(sp[1]);
        _exit(run_target(&o, sp[0]));
    }
    close(sp[0]);
    alarm(300);
    double gbs = run_initiator(&o, sp[1]);
    int ws = 0;
    waitpid(pid, &ws, 0);
    printf("kvx_bench tls=%s total_mib=%llu block_kib=%llu piece_kib=%llu staged=%d user_pool=%d "
           "iters=%d GB/s=%.3f\n",
           getenv("UCX_TLS") ? getenv("UCX_TLS") : "default",
           (unsigned long long)(o.total_bytes >> 20), (unsigned long long)(o.block_bytes >> 10),
           (unsigned long long)(o.piece_bytes >> 10), o.staged, o.user_pool, o.iters, gbs);
    return WIFEXITED(ws) && WEXITSTATUS(ws) == 0 ? 0 : 1;
}
