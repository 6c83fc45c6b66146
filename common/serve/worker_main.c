/*
 * worker_main.c: the command line shared by prefill_worker and decode_worker: parses flags
 * and their SKV_* environment variables (one table, base/cli.h: `--help` lists every flag
 * with its default and variable), builds backend, model and KV pool, starts the worker and
 * serves until SIGTERM/SIGINT, then drains. Switches of lower layers read once here too:
 * SKV_KVX_DATA / SKV_KVX_NO_IPC (skv_kvx_config_env), SKV_NO_GRAPHS (skv_model_opts_env).
 * UCX picks the KV transports from its own UCX_* variables (common/kvx/kvx.md).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "base/log.h"
#include "common/model/model_tp.h"
#include "common/rpc/grpc_server.h"
#include "common/serve/worker.h"
#include "common/serve/worker_main.h"
#include "kernels/backend.h"

typedef struct {
    skv_worker_config_t wc;
    const char *model_dir, *backend, *mode, *port_file, *role, *kv_dtype, *listen, *advertise;
    int device, threads, tp, block_size, kv_mem_mb, max_batch_tokens, max_seqs;
    int max_waiting, max_requests, lease_ms, host_sampling;
    int64_t grace_ms, push_backlog_ms;
} skv_wmain_args_t;

static void skv_wmain_defaults(skv_wmain_args_t *a, skv_worker_role_t role)
{
    memset(a, 0, sizeof(*a));
    skv_worker_config_default(&a->wc);
    a->wc.role = role;
    a->listen = "0.0.0.0:50052";
    a->backend = "cpu";
    a->tp = 1;
    a->mode = "auto";
    a->block_size = 16;
    a->kv_mem_mb = 256;
    a->kv_dtype = "auto";
    a->max_batch_tokens = 2048;
    a->max_seqs = 64;
    a->max_waiting = 256;
    a->max_requests = 1024;
    a->lease_ms = 10000;
    a->push_backlog_ms = 2000;
    a->grace_ms = 10000;
}

#define SKV_WMAIN_I(name, env, field, lo, hi, help)                                                \
    {name, env, SKV_CLI_INT, &a->field, lo, hi, 0, 0, help}
#define SKV_WMAIN_S(name, env, field, help)                                                        \
    {name, env, SKV_CLI_STRING, &a->field, 0, 0, 0, 0, help}

/* Returns SKV_CLI_OK, SKV_CLI_HELP or SKV_CLI_USAGE. */
static int skv_wmain_parse(int argc, char **argv, skv_wmain_args_t *a)
{
    const skv_cli_opt_t opts[] = {
        SKV_WMAIN_S("model", "SKV_MODEL", model_dir, "HF model folder (required)"),
        SKV_WMAIN_S("listen", "SKV_LISTEN", listen, "gRPC address; port 0 picks one"),
        SKV_WMAIN_S("advertise", "SKV_ADVERTISE", advertise,
                    "address peers use to reach this worker (default: --listen)"),
        SKV_WMAIN_S("role", "SKV_ROLE", role, "prefill | decode | both (default: per binary)"),
        SKV_WMAIN_S("backend", "SKV_BACKEND", backend, "compute backend (cpu, cpu-ref, cuda)"),
        SKV_WMAIN_I("device", "SKV_DEVICE", device, 0, 1023, "GPU of a device backend"),
        SKV_WMAIN_I("threads", "SKV_THREADS", threads, 0, 4096, "CPU threads (0: all)"),
        SKV_WMAIN_I("tp", "SKV_TP", tp, 1, 16,
                    "tensor-parallel ranks (common/model/model_tp.md)"),
        SKV_WMAIN_S("mode", "SKV_MODE", mode, "auto | base | swiftkv"),
        SKV_WMAIN_I("block-size", "SKV_BLOCK_SIZE", block_size, 1, 4096, "tokens per KV block"),
        SKV_WMAIN_I("kv-mem-mb", "SKV_KV_MEM_MB", kv_mem_mb, 1, 16 << 20,
                    "KV pool per rank, MiB"),
        SKV_WMAIN_S("kv-dtype", "SKV_KV_DTYPE", kv_dtype,
                    "KV cache dtype: auto (the backend's), fp8 (E4M3), f32, bf16"),
        SKV_WMAIN_I("max-batch-tokens", "SKV_MAX_BATCH_TOKENS", max_batch_tokens, 1, 1 << 20,
                    "tokens of one engine step (prefill chunk budget)"),
        SKV_WMAIN_I("max-seqs", "SKV_MAX_SEQS", max_seqs, 1, 65536, "sequences of one step"),
        SKV_WMAIN_I("max-waiting", "SKV_MAX_WAITING", max_waiting, 1, 1 << 20,
                    "queued requests beyond which RESOURCE_EXHAUSTED"),
        SKV_WMAIN_I("max-requests", "SKV_MAX_REQUESTS", max_requests, 1, 1 << 20,
                    "live calls beyond which RESOURCE_EXHAUSTED"),
        SKV_WMAIN_I("lease-ms", "SKV_LEASE_MS", lease_ms, 1, 3600000,
                    "reservation lease without one in the request"),
        {"push-backlog-ms", "SKV_PUSH_BACKLOG_MS", SKV_CLI_INT64, &a->push_backlog_ms, 1, 3600000,
         0, 0,
         "prefill: refuse a prompt whose KV push would queue behind more (the router then "
         "decodes it alone)"},
        {"grace-ms", "SKV_GRACE_MS", SKV_CLI_INT64, &a->grace_ms, 0, 3600000, 0, 0,
         "drain grace at SIGTERM"},
        {"host-sampling", "SKV_HOST_SAMPLING", SKV_CLI_SWITCH, &a->host_sampling, 0, 1, 0, 0,
         "pick tokens on the host (A/B runs)"},
        SKV_WMAIN_S("port-file", "SKV_PORT_FILE", port_file,
                    "write the bound port there once serving"),
    };
    return skv_cli_parse(argv[0],
                         "A prefill or decode worker (common/serve/worker.h). SKV_KVX_DATA "
                         "(auto|put|am) and SKV_KVX_NO_IPC=1 steer the KV transfer, UCX_* its "
                         "transports (common/kvx/kvx.md), SKV_NO_GRAPHS=1 turns CUDA graphs off.",
                         opts, sizeof(opts) / sizeof(opts[0]), argc, argv, NULL);
}

/* Turns the parsed flags into the worker's configuration; 0, or 2 (reported) when a value is
 * not one of its choices. */
static int skv_wmain_config(skv_wmain_args_t *a)
{
    if (a->model_dir == NULL) {
        fprintf(stderr, "worker: --model (SKV_MODEL) is required\n");
        return 2;
    }
    if (a->role != NULL) {
        a->wc.role = strcmp(a->role, "prefill") == 0  ? SKV_WORKER_ROLE_PREFILL
                     : strcmp(a->role, "decode") == 0 ? SKV_WORKER_ROLE_DECODE
                     : strcmp(a->role, "both") == 0   ? SKV_WORKER_ROLE_BOTH
                                                      : 0;
        if (a->wc.role == 0) {
            fprintf(stderr, "worker: --role '%s': expected prefill, decode or both\n", a->role);
            return 2;
        }
    }
    a->wc.listen = a->listen;
    a->wc.advertise = a->advertise;
    a->wc.max_waiting = a->max_waiting;
    a->wc.max_requests = a->max_requests;
    a->wc.lease_ms_default = (uint32_t)a->lease_ms;
    a->wc.push_backlog_ms = a->push_backlog_ms;
    a->wc.host_sampling = a->host_sampling;
    a->wc.backend_name = a->backend;
    a->wc.device = a->device;
    a->wc.model_name = a->model_dir;
    return skv_kvx_config_env(&a->wc.kvx) == SKV_STATUS_OK ? 0 : 2;
}

static skv_status_t skv_wmain_mode(const char *name, skv_model_mode_t *mode)
{
    *mode = strcmp(name, "base") == 0      ? SKV_MODEL_MODE_BASE
            : strcmp(name, "swiftkv") == 0 ? SKV_MODEL_MODE_SWIFTKV
                                           : SKV_MODEL_MODE_AUTO;
    return strcmp(name, "auto") == 0 || *mode != SKV_MODEL_MODE_AUTO ? SKV_STATUS_OK
                                                                     : SKV_STATUS_INVALID_ARGUMENT;
}

/* Loads the model: on one backend (*be_p, owned by the caller), or split over --tp ranks that
 * each create their own backend (*be_p stays NULL). */
static skv_status_t skv_wmain_model(const skv_wmain_args_t *a, const skv_model_opts_t *mo,
                                    skv_backend_t **be_p, skv_model_t **model_p)
{
    if (a->tp > 1) {
        skv_model_tp_opts_t tp = {a->tp, a->backend, a->threads, a->device};
        return skv_model_load_tp(a->model_dir, &tp, mo, model_p);
    }
    SKV_CHECK(skv_backend_create(a->backend, a->threads, a->device, be_p));
    return skv_model_load(a->model_dir, *be_p, mo, model_p);
}

/* Builds the KV pool of kv_mem_mb megabytes per rank (a rank holds its heads' share of every
 * block: at TP N the same megabytes hold N times the blocks, on N devices). */
static skv_status_t skv_wmain_pool(const skv_wmain_args_t *a, skv_model_t *model,
                                   skv_kv_pool_t **pool_p)
{
    skv_kv_layout_t layout;
    skv_model_kv_layout(model, a->block_size, &layout);
    int64_t n_blocks = ((int64_t)a->kv_mem_mb << 20) / (int64_t)skv_kv_layout_block_bytes(&layout);
    n_blocks = n_blocks < 65536 ? n_blocks : 65536; /* the transfer descriptor's block limit */
    if (n_blocks < 1) {
        SKV_LOG_ERROR("worker: --kv-mem-mb %d holds no KV block of %zu bytes", a->kv_mem_mb,
                      skv_kv_layout_block_bytes(&layout));
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    return skv_model_kv_pool_create(model, a->block_size, n_blocks, pool_p);
}

int skv_worker_main(int argc, char **argv, skv_worker_role_t default_role,
                    const skv_worker_role_ops_t *prefill_ops,
                    const skv_worker_role_ops_t *decode_ops)
{
    skv_wmain_args_t a;
    skv_wmain_defaults(&a, default_role);
    int parsed = skv_wmain_parse(argc, argv, &a);
    if (parsed != SKV_CLI_OK) {
        return parsed == SKV_CLI_HELP ? 0 : 2;
    }
    if (skv_wmain_config(&a) != 0) {
        return 2;
    }
    a.wc.prefill_ops = prefill_ops;
    a.wc.decode_ops = decode_ops;
    if (((a.wc.role & SKV_WORKER_ROLE_PREFILL) && prefill_ops == NULL) ||
        ((a.wc.role & SKV_WORKER_ROLE_DECODE) && decode_ops == NULL)) {
        fprintf(stderr, "%s: this binary does not have the %s role (skv_decode_worker serves "
                        "both)\n",
                argv[0], prefill_ops == NULL ? "prefill" : "decode");
        return 2;
    }
    skv_backend_t *be = NULL;
    skv_model_t *model = NULL;
    skv_kv_pool_t *pool = NULL;
    skv_worker_t *worker = NULL;
    skv_model_opts_t mo = {
        .max_batch_tokens = a.max_batch_tokens, .max_seqs = a.max_seqs, .kv_dtype = a.kv_dtype};
    skv_model_opts_env(&mo);
    skv_status_t status = skv_wmain_mode(a.mode, &mo.mode);
    skv_grpc_signals_install();
    SKV_CHECK_GOTO(status, out);
    SKV_CHECK_GOTO(skv_wmain_model(&a, &mo, &be, &model), out);
    SKV_CHECK_GOTO(skv_wmain_pool(&a, model, &pool), out);
    SKV_CHECK_GOTO(skv_worker_create(&a.wc, model, pool, be, &worker), out);
    SKV_LOG_INFO("worker: serving %s on port %d (%s, tp %d, %lld KV blocks of %s)", a.model_dir,
                 skv_worker_port(worker), a.backend, a.tp, (long long)skv_kv_pool_n_blocks(pool),
                 skv_dtype_name(skv_kv_pool_layout(pool)->dtype));
    if (a.port_file != NULL) {
        (void)skv_grpc_port_file_write(a.port_file, skv_worker_port(worker));
    }
    status = skv_worker_wait_signal(worker, a.grace_ms);
    status = status == SKV_STATUS_TIMEOUT ? SKV_STATUS_OK : status;
out:
    skv_worker_destroy(worker);
    skv_kv_pool_destroy(pool);
    skv_model_destroy(model);
    if (be != NULL) {
        be->ops->destroy(be);
    }
    if (status != SKV_STATUS_OK) {
        fprintf(stderr, "%s: %s\n", argv[0], skv_status_str(status));
    }
    return status == SKV_STATUS_OK ? 0 : 1;
}
