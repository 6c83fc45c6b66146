/*
 * worker_main.c: the command line shared by prefill_worker and decode_worker: parses flags
 * (with SKV_* environment fallbacks for container deployments), builds backend, model and
 * KV pool, starts the worker and serves until SIGTERM/SIGINT, then drains.
 *
 *   --model DIR          HF model folder (env SKV_MODEL)                          required
 *   --listen ADDR        gRPC address (env SKV_LISTEN)                  default 0.0.0.0:50052
 *   --advertise ADDR     address peers should use (env SKV_ADVERTISE)    default listen addr
 *   --role R             prefill | decode | both (env SKV_ROLE)        default per binary
 *   --backend B          cpu | cpu-ref | cuda (env SKV_BACKEND)                default cpu
 *   --device N --threads N --mode auto|base|swiftkv
 *   --tp N               tensor-parallel ranks (env SKV_TP): one thread per rank,         default 1
 *                        each with its own backend (--threads CPU threads each; CUDA:
 *                        GPUs device..device+N-1 with NCCL); see common/model/model_tp.md
 *   --block-size N       tokens per KV block                                    default 16
 *   --kv-mem-mb N        KV pool size per rank (env SKV_KV_MEM_MB)             default 256
 *   --kv-dtype D         KV cache dtype (env SKV_KV_DTYPE): auto (the backend's default),
 *                        fp8 (E4M3: half the bytes, twice the blocks of bf16), or the
 *                        default's name (f32, bf16); one the backend does not take fails
 *                        at startup                                           default auto
 *   --max-batch-tokens N --max-seqs N --max-waiting N --max-requests N
 *   --lease-ms N         default reservation lease                           default 10000
 *   --push-backlog-ms N  prefill: refuse (router decodes alone) a prompt whose KV push would
 *                        queue behind more than N ms of pushes (env SKV_PUSH_BACKLOG_MS) 2000
 *   --grace-ms N         drain grace at SIGTERM                              default 10000
 *   --port-file PATH     write the bound port there once serving (tests use port 0)
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "common/rpc/grpc_server.h"
#include "base/log.h"
#include "common/model/model_tp.h"
#include "common/serve/worker.h"
#include "common/serve/worker_main.h"

typedef struct {
    skv_worker_config_t wc;
    const char *model_dir, *backend, *mode, *port_file, *role, *kv_dtype;
    int device, threads, tp, block_size, kv_mem_mb, max_batch_tokens, max_seqs;
    int64_t grace_ms;
} skv_wmain_args_t;

static const char *skv_env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' ? v : fallback;
}

static void skv_wmain_usage(const char *prog)
{
    fprintf(
        stderr,
        "usage: %s --model DIR [--listen ADDR] [--advertise ADDR] [--role prefill|decode|both]\n"
        "       [--backend %s] [--device N] [--threads N] [--tp N] [--mode auto|base|swiftkv]\n"
        "       [--block-size N] [--kv-mem-mb N] [--max-batch-tokens N] [--max-seqs N]\n"
        "       [--max-waiting N] [--max-requests N] [--lease-ms N] [--grace-ms N] [--push-backlog-ms N]\n"
        "       [--kv-dtype auto|fp8|NAME] [--port-file PATH]\n"
        "env: SKV_MODEL SKV_LISTEN SKV_ADVERTISE SKV_ROLE SKV_BACKEND SKV_TP SKV_KV_MEM_MB "
        "SKV_KV_DTYPE SKV_KVX_DATA (auto|put|am) SKV_KVX_NO_IPC (1: no CUDA IPC); UCX_* "
        "choose the KV transports (see common/kvx/kvx.md)\n",
        prog, skv_backend_names());
}

static void skv_wmain_defaults(skv_wmain_args_t *a, skv_worker_role_t role)
{
    memset(a, 0, sizeof(*a));
    skv_worker_config_default(&a->wc);
    a->wc.role = role;
    a->model_dir = skv_env_or("SKV_MODEL", NULL);
    a->wc.listen = skv_env_or("SKV_LISTEN", "0.0.0.0:50052");
    a->wc.advertise = skv_env_or("SKV_ADVERTISE", NULL);
    a->wc.push_backlog_ms = atoll(skv_env_or("SKV_PUSH_BACKLOG_MS", "0"));
    a->wc.host_sampling = strcmp(skv_env_or("SKV_HOST_SAMPLING", "0"), "0") != 0;
    a->role = skv_env_or("SKV_ROLE", NULL);
    a->backend = skv_env_or("SKV_BACKEND", "cpu");
    a->tp = atoi(skv_env_or("SKV_TP", "1"));
    a->mode = "auto";
    a->block_size = 16;
    a->kv_mem_mb = atoi(skv_env_or("SKV_KV_MEM_MB", "256"));
    a->kv_dtype = skv_env_or("SKV_KV_DTYPE", "auto");
    a->max_batch_tokens = 2048;
    a->max_seqs = 64;
    a->grace_ms = 10000;
}

/* Returns 0, or 2 for bad usage. */
static int skv_wmain_parse(int argc, char **argv, skv_wmain_args_t *a)
{
    static const struct option opts[] = {
        {"model", 1, 0, 'm'},      {"listen", 1, 0, 'l'},      {"advertise", 1, 0, 'a'},
        {"role", 1, 0, 'r'},       {"backend", 1, 0, 'b'},     {"device", 1, 0, 'd'},
        {"threads", 1, 0, 'j'},    {"tp", 1, 0, 't'},          {"mode", 1, 0, 'M'},
        {"block-size", 1, 0, 'B'}, {"kv-mem-mb", 1, 0, 'k'},   {"max-batch-tokens", 1, 0, 'T'},
        {"max-seqs", 1, 0, 'S'},   {"max-waiting", 1, 0, 'W'}, {"max-requests", 1, 0, 'R'},
        {"lease-ms", 1, 0, 'L'},   {"push-backlog-ms", 1, 0, 'Q'},   {"grace-ms", 1, 0, 'g'},    {"port-file", 1, 0, 'p'},
        {"kv-dtype", 1, 0, 'K'},   {"help", 0, 0, 'h'},        {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm':
            a->model_dir = optarg;
            break;
        case 'l':
            a->wc.listen = optarg;
            break;
        case 'a':
            a->wc.advertise = optarg;
            break;
        case 'r':
            a->role = optarg;
            break;
        case 'b':
            a->backend = optarg;
            break;
        case 'd':
            a->device = atoi(optarg);
            break;
        case 'j':
            a->threads = atoi(optarg);
            break;
        case 't':
            a->tp = atoi(optarg);
            break;
        case 'M':
            a->mode = optarg;
            break;
        case 'B':
            a->block_size = atoi(optarg);
            break;
        case 'k':
            a->kv_mem_mb = atoi(optarg);
            break;
        case 'T':
            a->max_batch_tokens = atoi(optarg);
            break;
        case 'S':
            a->max_seqs = atoi(optarg);
            break;
        case 'W':
            a->wc.max_waiting = atoi(optarg);
            break;
        case 'R':
            a->wc.max_requests = atoi(optarg);
            break;
        case 'Q':
            a->wc.push_backlog_ms = atoll(optarg);
            break;
        case 'L':
            a->wc.lease_ms_default = (uint32_t)atoi(optarg);
            break;
        case 'g':
            a->grace_ms = atoll(optarg);
            break;
        case 'p':
            a->port_file = optarg;
            break;
        case 'K':
            a->kv_dtype = optarg;
            break;
        default:
            return 2;
        }
    }
    if (a->role != NULL) {
        a->wc.role = strcmp(a->role, "prefill") == 0  ? SKV_WORKER_ROLE_PREFILL
                     : strcmp(a->role, "decode") == 0 ? SKV_WORKER_ROLE_DECODE
                     : strcmp(a->role, "both") == 0   ? SKV_WORKER_ROLE_BOTH
                                                      : 0;
    }
    if (a->model_dir == NULL || a->wc.role == 0 || a->tp < 1 || a->block_size < 1 ||
        a->kv_mem_mb < 1 || a->max_batch_tokens < 1 || a->max_seqs < 1 || optind != argc) {
        return 2;
    }
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

static void skv_wmain_port_file(const char *path, int port)
{
    char tmp[4096];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL || fprintf(f, "%d\n", port) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
        SKV_LOG_ERROR("worker: cannot write the port file %s", path);
    }
}

int skv_worker_main(int argc, char **argv, skv_worker_role_t default_role,
                    const skv_worker_role_ops_t *prefill_ops,
                    const skv_worker_role_ops_t *decode_ops)
{
    skv_wmain_args_t a;
    skv_wmain_defaults(&a, default_role);
    if (skv_wmain_parse(argc, argv, &a) != 0) {
        skv_wmain_usage(argv[0]);
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
        skv_wmain_port_file(a.port_file, skv_worker_port(worker));
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
