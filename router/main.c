/*
 * main.c: the skv_router process. Parses flags and environment, creates the router, serves
 * until SIGTERM/SIGINT, drains, exits. Everything else lives in router/router*.c.
 *
 *   skv_router --tokenizer DIR|tokenizer.json --decode HOST:PORT[,HOST:PORT...] [options]
 *
 * Flag (environment)                     default        meaning
 * --listen ADDR (SKV_ROUTER_LISTEN)        0.0.0.0:50051  public gRPC address; port 0: any
 * --tokenizer PATH (SKV_TOKENIZER)         required       model dir or tokenizer.json
 * --decode LIST (SKV_DECODE_ADDRS)         required       decode workers, comma-separated
 * --prefill LIST (SKV_PREFILL_ADDRS)       none           prefill workers; none: every
 *                                                         request runs Worker.Generate on D
 * --disagg-min-tokens N (SKV_DISAGG_MIN_TOKENS)  32       shorter prompts skip prefill workers
 * --max-inflight N (SKV_MAX_INFLIGHT)      256            Generate calls at once; beyond them
 *                                                         RESOURCE_EXHAUSTED
 * --threads N (SKV_ROUTER_THREADS)         4              server completion-queue threads
 * --resolve-ms N (SKV_RESOLVE_MS)          5000           DNS re-resolution period; -1: never
 * --backoff-ms N (SKV_BACKOFF_MS)          2000           skip a worker that was UNAVAILABLE
 * --rpc-timeout-ms N (SKV_RPC_TIMEOUT_MS)  5000           Reserve/Release/Stats/ModelInfo
 * --request-timeout-ms N (SKV_REQUEST_TIMEOUT_MS)  600000 bound of a request that has no
 *                                                         client deadline
 * --lease-ms N (SKV_LEASE_MS)              30000          KV reservation lease
 * --startup-timeout-ms N (SKV_STARTUP_TIMEOUT_MS)  60000  wait for a ModelInfo answer
 * --drain-ms N (SKV_DRAIN_MS)              30000          grace for in-flight calls on SIGTERM
 * --port-file PATH (SKV_PORT_FILE)         none           write the bound port there once
 *                                                         serving (tests listen on port 0)
 * --help
 * A worker address is HOST:PORT where HOST may be a DNS name resolving to several pods (each
 * address becomes an endpoint; names are re-resolved every --resolve-ms), or a gRPC target
 * with a scheme (unix:PATH, ipv4:..., ipv6:...). Flags override the environment.
 * Prints "PORT <n>" on stdout once serving. Exit: 0 after a clean drain, 1 on a startup
 * failure, 2 on bad usage, 3 when the drain had to cancel calls.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/log.h"
#include "router/router.h"

#define SKV_MAX_ADDRS 64

typedef struct {
    const char *flag;
    const char *env;
    char kind; /* 's' string, 'i' int, 'l' int64, 'u' uint32 */
    void *dst;
} skv_opt_t;

typedef struct {
    skv_router_config_t config;
    const char *decode;
    const char *prefill;
    const char *port_file;
    int64_t drain_ms;
    char *decode_copy, *prefill_copy;
    const char *decode_list[SKV_MAX_ADDRS];
    const char *prefill_list[SKV_MAX_ADDRS];
} skv_args_t;

static int skv_usage(FILE *f)
{
    fprintf(f, "usage: skv_router --tokenizer DIR|tokenizer.json --decode HOST:PORT[,...] "
               "[--prefill HOST:PORT[,...]] [--listen ADDR] [--disagg-min-tokens N]\n"
               "       [--max-inflight N] [--threads N] [--resolve-ms N] [--backoff-ms N] "
               "[--rpc-timeout-ms N]\n"
               "       [--request-timeout-ms N] [--lease-ms N] [--startup-timeout-ms N] "
               "[--drain-ms N] [--port-file PATH]\n"
               "Each flag also reads an environment variable (SKV_DECODE_ADDRS, "
               "SKV_PREFILL_ADDRS, SKV_TOKENIZER, ...):\nsee the header of router/main.c.\n");
    return 2;
}

/* Stores one value of kind into dst; returns -1 when it does not parse. */
static int skv_opt_store(const skv_opt_t *o, const char *v)
{
    char *end = NULL;
    if (o->kind == 's') {
        *(const char **)o->dst = v;
        return 0;
    }
    long long x = strtoll(v, &end, 10);
    if (end == v || *end != '\0') {
        fprintf(stderr, "skv_router: %s expects a number, got '%s'\n", o->flag, v);
        return -1;
    }
    if (o->kind == 'i') {
        *(int *)o->dst = (int)x;
    } else if (o->kind == 'l') {
        *(int64_t *)o->dst = x;
    } else if (x < 0 || x > UINT32_MAX) {
        fprintf(stderr, "skv_router: %s out of range: %s\n", o->flag, v);
        return -1;
    } else {
        *(uint32_t *)o->dst = (uint32_t)x;
    }
    return 0;
}

/* Splits a comma-separated list in place into list (at most SKV_MAX_ADDRS). */
static size_t skv_split(char *s, const char **list)
{
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(s, ",", &save); t != NULL && n < SKV_MAX_ADDRS;
         t = strtok_r(NULL, ",", &save)) {
        list[n++] = t;
    }
    return n;
}

static int skv_parse(int argc, char **argv, skv_args_t *a)
{
    skv_router_config_t *c = &a->config;
    const skv_opt_t opts[] = {
        {"--listen", "SKV_ROUTER_LISTEN", 's', &c->listen},
        {"--tokenizer", "SKV_TOKENIZER", 's', &c->tokenizer},
        {"--decode", "SKV_DECODE_ADDRS", 's', &a->decode},
        {"--prefill", "SKV_PREFILL_ADDRS", 's', &a->prefill},
        {"--disagg-min-tokens", "SKV_DISAGG_MIN_TOKENS", 'u', &c->disagg_min_tokens},
        {"--max-inflight", "SKV_MAX_INFLIGHT", 'i', &c->max_inflight},
        {"--threads", "SKV_ROUTER_THREADS", 'i', &c->n_threads},
        {"--resolve-ms", "SKV_RESOLVE_MS", 'i', &c->resolve_ms},
        {"--backoff-ms", "SKV_BACKOFF_MS", 'i', &c->backoff_ms},
        {"--rpc-timeout-ms", "SKV_RPC_TIMEOUT_MS", 'i', &c->rpc_timeout_ms},
        {"--request-timeout-ms", "SKV_REQUEST_TIMEOUT_MS", 'l', &c->request_timeout_ms},
        {"--lease-ms", "SKV_LEASE_MS", 'u', &c->lease_ms},
        {"--startup-timeout-ms", "SKV_STARTUP_TIMEOUT_MS", 'l', &c->startup_timeout_ms},
        {"--drain-ms", "SKV_DRAIN_MS", 'l', &a->drain_ms},
        {"--port-file", "SKV_PORT_FILE", 's', &a->port_file},
    };
    const size_t n_opts = sizeof(opts) / sizeof(opts[0]);
    c->listen = "0.0.0.0:50051";
    a->drain_ms = 30000;
    for (size_t k = 0; k < n_opts; k++) {
        const char *v = getenv(opts[k].env);
        if (v != NULL && v[0] != '\0' && skv_opt_store(&opts[k], v) != 0) {
            return -1;
        }
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            skv_usage(stdout);
            exit(0);
        }
        size_t k = 0;
        while (k < n_opts && strcmp(argv[i], opts[k].flag) != 0) {
            k++;
        }
        if (k == n_opts || i + 1 >= argc) {
            fprintf(stderr, "skv_router: unknown flag or missing value: %s\n", argv[i]);
            return -1;
        }
        if (skv_opt_store(&opts[k], argv[++i]) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Turns the address lists into the config's arrays. */
static int skv_lists(skv_args_t *a)
{
    if (a->decode == NULL || a->config.tokenizer == NULL) {
        fprintf(stderr, "skv_router: --decode (or SKV_DECODE_ADDRS) and --tokenizer are "
                        "required\n");
        return -1;
    }
    a->decode_copy = skv_strdup(a->decode);
    a->prefill_copy = skv_strdup(a->prefill != NULL ? a->prefill : "");
    if (a->decode_copy == NULL || a->prefill_copy == NULL) {
        return -1;
    }
    a->config.decode_targets = a->decode_list;
    a->config.n_decode = skv_split(a->decode_copy, a->decode_list);
    a->config.prefill_targets = a->prefill_list;
    a->config.n_prefill = skv_split(a->prefill_copy, a->prefill_list);
    return a->config.n_decode > 0 ? 0 : -1;
}

/* Writes the port to path through a rename, so readers never see a partial file. */
static void skv_write_port_file(const char *path, int port)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        SKV_LOG_ERROR("skv_router: cannot write the port file %s", path);
    }
}

int main(int argc, char **argv)
{
    static skv_args_t args;
    if (skv_parse(argc, argv, &args) != 0 || skv_lists(&args) != 0) {
        return skv_usage(stderr);
    }
    skv_grpc_signals_install();
    skv_router_t *router = NULL;
    skv_status_t st = skv_router_create(&args.config, &router);
    if (st != SKV_STATUS_OK) {
        SKV_LOG_ERROR("skv_router: startup failed: %s", skv_status_str(st));
        return 1;
    }
    printf("PORT %d\n", skv_router_port(router));
    fflush(stdout);
    if (args.port_file != NULL) {
        skv_write_port_file(args.port_file, skv_router_port(router));
    }
    SKV_LOG_INFO("skv_router: serving on port %d (%zu decode, %zu prefill names)",
                 skv_router_port(router), args.config.n_decode, args.config.n_prefill);
    st = skv_grpc_server_wait_signal(skv_router_server(router), args.drain_ms);
    skv_router_destroy(router);
    skv_free(args.decode_copy);
    skv_free(args.prefill_copy);
    SKV_LOG_INFO("skv_router: drained (%s)", skv_status_str(st));
    return st == SKV_STATUS_OK ? 0 : 3;
}
