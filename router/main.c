/*
 * main.c: the skv_router process. Parses flags and environment, creates the router, serves
 * until SIGTERM/SIGINT, drains, exits. Everything else lives in router/router*.c.
 *
 *   skv_router --tokenizer DIR|tokenizer.json --decode HOST:PORT[,HOST:PORT...] [options]
 *
 * Flags and their SKV_* variables are one table (skv_parse; `skv_router --help` prints each
 * with its default): --listen, --tokenizer, --decode, --prefill, --disagg-min-tokens,
 * --max-inflight, --threads, --resolve-ms, --backoff-ms, --rpc-timeout-ms,
 * --request-timeout-ms, --lease-ms, --startup-timeout-ms, --drain-ms, --port-file.
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
#include "base/cli.h"
#include "base/log.h"
#include "router/router.h"

#define SKV_MAX_ADDRS 64

typedef struct {
    skv_router_config_t config;
    const char *decode;
    const char *prefill;
    const char *port_file;
    int64_t drain_ms, disagg_min_tokens, lease_ms;
    char *decode_copy, *prefill_copy;
    const char *decode_list[SKV_MAX_ADDRS];
    const char *prefill_list[SKV_MAX_ADDRS];
} skv_args_t;

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

#define SKV_OPT(name, env, type, field, lo, hi, help)                                              \
    {name, env, type, &field, lo, hi, 0, 0, help}

/* Returns SKV_CLI_OK, SKV_CLI_HELP or SKV_CLI_USAGE (base/cli.h). */
static int skv_parse(int argc, char **argv, skv_args_t *a)
{
    skv_router_config_t *c = &a->config;
    c->listen = "0.0.0.0:50051";
    c->max_inflight = 256;
    c->n_threads = 4;
    c->resolve_ms = 5000;
    c->backoff_ms = 2000;
    c->rpc_timeout_ms = 5000;
    c->request_timeout_ms = 600000;
    c->startup_timeout_ms = 60000;
    a->disagg_min_tokens = 32;
    a->lease_ms = 30000;
    a->drain_ms = 30000;
    const skv_cli_opt_t opts[] = {
        SKV_OPT("listen", "SKV_ROUTER_LISTEN", SKV_CLI_STRING, c->listen, 0, 0,
                "public gRPC address; port 0 picks one"),
        SKV_OPT("tokenizer", "SKV_TOKENIZER", SKV_CLI_STRING, c->tokenizer, 0, 0,
                "model folder or tokenizer.json (required)"),
        SKV_OPT("decode", "SKV_DECODE_ADDRS", SKV_CLI_STRING, a->decode, 0, 0,
                "decode workers, comma-separated (required)"),
        SKV_OPT("prefill", "SKV_PREFILL_ADDRS", SKV_CLI_STRING, a->prefill, 0, 0,
                "prefill workers, comma-separated; none: every request runs on a decode worker"),
        SKV_OPT("disagg-min-tokens", "SKV_DISAGG_MIN_TOKENS", SKV_CLI_INT64, a->disagg_min_tokens,
                1, UINT32_MAX, "shorter prompts skip the prefill workers"),
        SKV_OPT("max-inflight", "SKV_MAX_INFLIGHT", SKV_CLI_INT, c->max_inflight, 1, 1 << 20,
                "Generate calls at once; beyond them RESOURCE_EXHAUSTED"),
        SKV_OPT("threads", "SKV_ROUTER_THREADS", SKV_CLI_INT, c->n_threads, 1, 256,
                "server completion-queue threads"),
        SKV_OPT("resolve-ms", "SKV_RESOLVE_MS", SKV_CLI_INT, c->resolve_ms, -1, 86400000,
                "worker names re-resolved this often; -1: never"),
        SKV_OPT("backoff-ms", "SKV_BACKOFF_MS", SKV_CLI_INT, c->backoff_ms, 1, 3600000,
                "skip a worker that answered UNAVAILABLE this long"),
        SKV_OPT("rpc-timeout-ms", "SKV_RPC_TIMEOUT_MS", SKV_CLI_INT, c->rpc_timeout_ms, 1,
                3600000, "deadline of Reserve/Release/Stats/ModelInfo"),
        SKV_OPT("request-timeout-ms", "SKV_REQUEST_TIMEOUT_MS", SKV_CLI_INT64,
                c->request_timeout_ms, 1, 86400000, "bound of a request without a deadline"),
        SKV_OPT("lease-ms", "SKV_LEASE_MS", SKV_CLI_INT64, a->lease_ms, 1, 3600000,
                "KV reservation lease"),
        SKV_OPT("startup-timeout-ms", "SKV_STARTUP_TIMEOUT_MS", SKV_CLI_INT64,
                c->startup_timeout_ms, 1, 86400000, "wait for a decode worker's ModelInfo"),
        SKV_OPT("drain-ms", "SKV_DRAIN_MS", SKV_CLI_INT64, a->drain_ms, 0, 3600000,
                "grace for in-flight calls at SIGTERM"),
        SKV_OPT("port-file", "SKV_PORT_FILE", SKV_CLI_STRING, a->port_file, 0, 0,
                "write the bound port there once serving"),
    };
    int st = skv_cli_parse(argv[0],
                           "The public skv.v1.Generation API over prefill and decode workers "
                           "(router/router.h). A worker address is HOST:PORT (a DNS name may "
                           "resolve to several pods) or a gRPC target (unix:PATH, ipv4:...).",
                           opts, sizeof(opts) / sizeof(opts[0]), argc, argv, NULL);
    c->disagg_min_tokens = (uint32_t)a->disagg_min_tokens;
    c->lease_ms = (uint32_t)a->lease_ms;
    return st;
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

int main(int argc, char **argv)
{
    static skv_args_t args;
    int parsed = skv_parse(argc, argv, &args);
    if (parsed != SKV_CLI_OK) {
        return parsed == SKV_CLI_HELP ? 0 : 2;
    }
    if (skv_lists(&args) != 0) {
        return 2;
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
        (void)skv_grpc_port_file_write(args.port_file, skv_router_port(router));
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
