/*
 * skv_client.c: command-line client of the public skv.v1.Generation API and of gRPC health.
 *
 *   skv_client --target HOST:PORT [--timeout-ms N] COMMAND [its flags]
 *     generate   --prompt TEXT | --token-ids 1,2,3, sampling and stop flags: streams the text to
 *                stdout (the ids with --show-ids); finish reason, usage and timings to stderr
 *     tokenize   --text TEXT        token ids, space separated
 *     detokenize --ids 1,2,3        text
 *     model-info | stats            one "key: value" per line
 *     health     [--service NAME]   SERVING | NOT_SERVING ...; exit 0 only when SERVING
 * `skv_client --help` lists the global flags, `skv_client COMMAND --help` a command's, each with
 * its default and SKV_CLIENT_* variable (one table each, base/cli.h). Sampling values go to the
 * server unchecked (it names a bad one). Exit codes: 0 ok, 1 the call failed (gRPC status on
 * stderr), 2 bad usage. Only parses flags and prints; calls go through common/grpc_client.
 */
#include <float.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "common/rpc/grpc_client.h"
#include "grpc/health/v1/health.pb-c.h"
#include "skv/v1/generate.pb-c.h"

#define MAX_LIST 256

typedef struct {
    const char *target;
    int64_t timeout_ms;
    skv_grpc_channel_t *channel;
} client_t;

/* The exit status of a parse that does not run: 0 after --help, 2 on bad usage. */
static int skv_client_exit(int parsed)
{
    return parsed == SKV_CLI_HELP ? 0 : 2;
}

/* Opens the channel to --target; 0, or the exit status (2: no target, 1: a bad one). */
static int skv_client_connect(client_t *cl)
{
    if (cl->target == NULL) {
        fprintf(stderr, "skv_client: --target (or SKV_CLIENT_TARGET) is required\n");
        return 2;
    }
    return skv_grpc_channel_create(cl->target, NULL, &cl->channel) == SKV_STATUS_OK ? 0 : 1;
}

/* Parses "1,2,3" (the value of flag) into a new array *ids_p (free) as a list flag with room
 * for every id; returns the count, or -1 (reported). */
static int64_t skv_client_ids(const char *flag, const char *text, int32_t **ids_p)
{
    size_t cap = strlen(text) / 2 + 1; /* one id per two characters, plus one */
    *ids_p = malloc(cap * sizeof(int32_t));
    skv_cli_list_t list = {*ids_p, cap, 0};
    const skv_cli_opt_t row = {flag + 2, NULL, SKV_CLI_LIST, &list, 0, INT32_MAX, 0, 0, ""};
    if (list.items == NULL || skv_cli_value("skv_client", &row, flag, text) != SKV_CLI_OK) {
        return -1;
    }
    return (int64_t)list.n;
}

static int report(const char *what, skv_status_t st, const skv_grpc_error_t *err)
{
    fprintf(stderr, "skv_client: %s failed: %s (grpc %d: %s)\n", what, skv_status_str(st),
            err->grpc_code, err->message);
    return 1;
}

static const char *finish_name(int reason)
{
    static const char *names[] = {"unspecified",    "stop",      "length",
                                  "context_length", "cancelled", "error"};
    return reason >= 0 && reason < 6 ? names[reason] : "unknown";
}

/* Prints one chunk: text to stdout (or the token ids, comma-separated; *n_shown_p counts them),
 * the end summary to stderr. */
static void print_chunk(const Skv__V1__GenerateChunk *c, int show_ids, size_t *n_shown_p)
{
    if (show_ids) { /* the ids alone, comma-separated as skv_generate prints them */
        for (size_t i = 0; i < c->n_token_ids; i++) {
            printf("%s%d", *n_shown_p + i ? "," : "", c->token_ids[i]);
        }
        *n_shown_p += c->n_token_ids;
    } else {
        fputs(c->text, stdout);
    }
    fflush(stdout);
    if (c->finish_reason != SKV__V1__FINISH_REASON__FINISH_REASON_UNSPECIFIED) {
        fprintf(stderr, "\n[finish=%s%s%s", finish_name(c->finish_reason),
                c->finish_detail[0] ? " " : "", c->finish_detail);
        if (c->usage != NULL) {
            fprintf(stderr, " prompt_tokens=%u completion_tokens=%u", c->usage->prompt_tokens,
                    c->usage->completion_tokens);
        }
        if (c->timings != NULL) {
            fprintf(stderr,
                    " queue_us=%" PRIu64 " prefill_us=%" PRIu64 " transfer_us=%" PRIu64
                    " ttft_us=%" PRIu64 " total_us=%" PRIu64,
                    c->timings->queue_us, c->timings->prefill_us, c->timings->transfer_us,
                    c->timings->ttft_us, c->timings->total_us);
        }
        fprintf(stderr, "]\n");
    }
}

/* generate's flags beyond those stored in the request itself. */
typedef struct {
    const char *prompt, *token_ids, *request_id;
    int64_t max_tokens, logprobs, seed;
    int top_k, ignore_eos, show_ids;
    const char *stops[MAX_LIST];
    int32_t stop_ids[MAX_LIST];
    skv_cli_list_t stop_list, stop_id_list;
} gen_args_t;

#define SKV_CLIENT_F(name, env, field, help)                                                       \
    {name, env, SKV_CLI_FLOAT, &sp->field, 0, 0, -FLT_MAX, FLT_MAX, help}
#define SKV_CLIENT_L(name, env, field, lo, hi, help)                                               \
    {name, env, SKV_CLI_INT64, &g->field, lo, hi, 0, 0, help}
#define SKV_CLIENT_S(name, field, help)                                                            \
    {name, NULL, SKV_CLI_STRING, &g->field, 0, 0, 0, 0, help}
#define SKV_CLIENT_B(name, env, field, help)                                                       \
    {name, env, SKV_CLI_SWITCH, &g->field, 0, 1, 0, 0, help}

/* Parses generate's flags into g and sp; SKV_CLI_OK, SKV_CLI_HELP or SKV_CLI_USAGE. */
static int gen_parse(int argc, char **argv, gen_args_t *g, Skv__V1__SamplingParams *sp)
{
    g->seed = -1;
    g->stop_list = (skv_cli_list_t){g->stops, MAX_LIST, 0};
    g->stop_id_list = (skv_cli_list_t){g->stop_ids, MAX_LIST, 0};
    const skv_cli_opt_t opts[] = {
        SKV_CLIENT_S("prompt", prompt, "prompt text"),
        SKV_CLIENT_S("token-ids", token_ids, "prompt token ids, comma-separated"),
        SKV_CLIENT_L("max-tokens", "SKV_CLIENT_MAX_TOKENS", max_tokens, 0, UINT32_MAX,
                     "tokens to generate; 0: the server's limit"),
        SKV_CLIENT_F("temperature", "SKV_CLIENT_TEMPERATURE", temperature, "0: greedy"),
        {"top-k", "SKV_CLIENT_TOP_K", SKV_CLI_INT, &g->top_k, INT32_MIN, INT32_MAX, 0, 0, "0: off"},
        SKV_CLIENT_F("top-p", "SKV_CLIENT_TOP_P", top_p, "0: off"),
        SKV_CLIENT_F("min-p", "SKV_CLIENT_MIN_P", min_p, "0: off"),
        SKV_CLIENT_L("seed", "SKV_CLIENT_SEED", seed, -1, INT64_MAX,
                     "sampling seed; -1: none sent"),
        SKV_CLIENT_F("presence-penalty", "SKV_CLIENT_PRESENCE_PENALTY", presence_penalty, "0: off"),
        SKV_CLIENT_F("frequency-penalty", "SKV_CLIENT_FREQUENCY_PENALTY", frequency_penalty,
                     "0: off"),
        SKV_CLIENT_F("repetition-penalty", "SKV_CLIENT_REPETITION_PENALTY", repetition_penalty,
                     "0 or 1: off"),
        {"stop", NULL, SKV_CLI_STRINGS, &g->stop_list, 0, 0, 0, 0, "a stop string (repeatable)"},
        {"stop-token-id", NULL, SKV_CLI_LIST, &g->stop_id_list, 0, INT32_MAX, 0, 0,
         "stop token ids (repeatable, or comma-separated)"},
        SKV_CLIENT_B("ignore-eos", "SKV_CLIENT_IGNORE_EOS", ignore_eos,
                     "keep going past end-of-sequence ids"),
        SKV_CLIENT_L("logprobs", "SKV_CLIENT_LOGPROBS", logprobs, 0, UINT32_MAX,
                     "top log-probabilities per token"),
        SKV_CLIENT_S("request-id", request_id, "the request's id"),
        SKV_CLIENT_B("show-ids", "SKV_CLIENT_SHOW_IDS", show_ids,
                     "print the token ids (comma-separated), not the text"),
    };
    return skv_cli_parse("skv_client generate",
                         "Streams one generation (--prompt or --token-ids); sampling values go "
                         "to the server unchecked.",
                         opts, sizeof(opts) / sizeof(opts[0]), argc, argv, NULL);
}

/* Fills req (with its sampling and stop messages) from g; *ids_p gets the prompt ids to free.
 * 0, or 2 (reported) on bad usage. */
static int gen_request(gen_args_t *g, Skv__V1__GenerateRequest *req, Skv__V1__TokenIds *tids,
                       int32_t **ids_p)
{
    Skv__V1__SamplingParams *sp = req->sampling;
    Skv__V1__StopCriteria *stop = req->stop;
    if ((g->prompt != NULL) == (g->token_ids != NULL)) {
        fprintf(stderr, "skv_client: generate needs --prompt or --token-ids\n");
        return 2;
    }
    if (g->prompt != NULL) {
        req->input_case = SKV__V1__GENERATE_REQUEST__INPUT_TEXT;
        req->text = (char *)g->prompt;
    } else {
        int64_t n = skv_client_ids("--token-ids", g->token_ids, ids_p);
        if (n < 0) {
            return 2;
        }
        tids->ids = *ids_p;
        tids->n_ids = (size_t)n;
        req->input_case = SKV__V1__GENERATE_REQUEST__INPUT_TOKEN_IDS;
        req->token_ids = tids;
    }
    sp->top_k = g->top_k;
    if (g->seed >= 0) {
        sp->seed_present_case = SKV__V1__SAMPLING_PARAMS__SEED_PRESENT_SEED;
        sp->seed = (uint64_t)g->seed;
    }
    stop->max_tokens = (uint32_t)g->max_tokens;
    stop->stop = (char **)g->stops;
    stop->n_stop = g->stop_list.n;
    stop->stop_token_ids = g->stop_ids;
    stop->n_stop_token_ids = g->stop_id_list.n;
    stop->ignore_eos = g->ignore_eos;
    req->logprobs = (uint32_t)g->logprobs;
    if (g->request_id != NULL) {
        req->request_id = (char *)g->request_id;
    }
    return 0;
}

static int cmd_generate(client_t *cl, int argc, char **argv)
{
    Skv__V1__GenerateRequest req = SKV__V1__GENERATE_REQUEST__INIT;
    Skv__V1__SamplingParams sp = SKV__V1__SAMPLING_PARAMS__INIT;
    Skv__V1__StopCriteria stop = SKV__V1__STOP_CRITERIA__INIT;
    Skv__V1__TokenIds tids = SKV__V1__TOKEN_IDS__INIT;
    static gen_args_t g; /* the lists' arrays */
    int32_t *prompt_ids = NULL;
    size_t n_shown = 0;
    req.sampling = &sp;
    req.stop = &stop;
    int parsed = gen_parse(argc, argv, &g, &sp);
    if (parsed != SKV_CLI_OK) {
        return skv_client_exit(parsed);
    }
    int rc = gen_request(&g, &req, &tids, &prompt_ids);
    rc = rc == 0 ? skv_client_connect(cl) : rc;
    if (rc != 0) {
        free(prompt_ids);
        return rc;
    }
    skv_grpc_call_opts_t call_opts = {.timeout_ms = cl->timeout_ms};
    skv_grpc_stream_t *s = NULL;
    skv_grpc_error_t err = {0};
    skv_status_t st = skv_grpc_stream_open(cl->channel, "/skv.v1.Generation/Generate", &req.base,
                                           &skv__v1__generate_chunk__descriptor, &call_opts, &s);
    ProtobufCMessage *msg = NULL;
    while (st == SKV_STATUS_OK && (st = skv_grpc_stream_read(s, &msg, &err)) == SKV_STATUS_OK &&
           msg != NULL) {
        print_chunk((const Skv__V1__GenerateChunk *)msg, g.show_ids, &n_shown);
        protobuf_c_message_free_unpacked(msg, NULL);
    }
    skv_grpc_stream_destroy(s);
    free(prompt_ids);
    return st == SKV_STATUS_OK ? 0 : report("generate", st, &err);
}

/* Runs one unary call of the Generation service; *resp_p on success. */
static int unary(client_t *cl, const char *method, const ProtobufCMessage *req,
                 const ProtobufCMessageDescriptor *desc, ProtobufCMessage **resp_p)
{
    skv_grpc_call_opts_t opts = {.timeout_ms = cl->timeout_ms};
    skv_grpc_error_t err = {0};
    skv_status_t st = skv_grpc_unary(cl->channel, method, req, desc, &opts, resp_p, &err);
    return st == SKV_STATUS_OK ? 0 : report(method, st, &err);
}

/* Parses a command with one string flag (or none: name NULL) into *value_p; SKV_CLI_OK,
 * SKV_CLI_HELP or SKV_CLI_USAGE. */
static int skv_client_parse_one(const char *prog, const char *summary, const char *name,
                                const char *env, const char *help, const char **value_p, int argc,
                                char **argv)
{
    const skv_cli_opt_t opt = {name, env, SKV_CLI_STRING, value_p, 0, 0, 0, 0, help};
    return skv_cli_parse(prog, summary, &opt, name != NULL, argc, argv, NULL);
}

static int cmd_tokenize(client_t *cl, int argc, char **argv)
{
    Skv__V1__TokenizeRequest req = SKV__V1__TOKENIZE_REQUEST__INIT;
    const char *text = NULL;
    int parsed = skv_client_parse_one("skv_client tokenize", "Prints the token ids of a text.",
                                      "text", NULL, "the text", &text, argc, argv);
    if (parsed != SKV_CLI_OK) {
        return skv_client_exit(parsed);
    }
    if (text != NULL) {
        req.input_case = SKV__V1__TOKENIZE_REQUEST__INPUT_TEXT;
        req.text = (char *)text;
    }
    req.add_special_tokens = 1;
    ProtobufCMessage *m = NULL;
    int rc = skv_client_connect(cl);
    if (rc != 0 || unary(cl, "/skv.v1.Generation/Tokenize", &req.base,
                         &skv__v1__tokenize_response__descriptor, &m)) {
        return rc != 0 ? rc : 1;
    }
    const Skv__V1__TokenizeResponse *r = (const Skv__V1__TokenizeResponse *)m;
    for (size_t i = 0; i < r->n_ids; i++) {
        printf("%s%d", i ? " " : "", r->ids[i]);
    }
    printf("\n");
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

static int cmd_detokenize(client_t *cl, int argc, char **argv)
{
    Skv__V1__DetokenizeRequest req = SKV__V1__DETOKENIZE_REQUEST__INIT;
    const char *text = NULL;
    int32_t *ids = NULL;
    int parsed = skv_client_parse_one("skv_client detokenize", "Prints the text of token ids.",
                                      "ids", NULL, "token ids, comma-separated", &text, argc, argv);
    if (parsed != SKV_CLI_OK) {
        return skv_client_exit(parsed);
    }
    int64_t n = text != NULL ? skv_client_ids("--ids", text, &ids) : 0;
    int rc = n < 0 ? 2 : skv_client_connect(cl);
    req.ids = ids;
    req.n_ids = n > 0 ? (size_t)n : 0;
    ProtobufCMessage *m = NULL;
    if (rc != 0 || unary(cl, "/skv.v1.Generation/Detokenize", &req.base,
                         &skv__v1__detokenize_response__descriptor, &m)) {
        free(ids);
        return rc != 0 ? rc : 1;
    }
    printf("%s\n", ((const Skv__V1__DetokenizeResponse *)m)->text);
    protobuf_c_message_free_unpacked(m, NULL);
    free(ids);
    return 0;
}

/* Prints every scalar field of a message as "name: value" (model-info, stats). */
static void print_fields(const ProtobufCMessage *m, const char *indent)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *p = (const char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)((const char *)m + f->quantifier_offset);
            printf("%s%s: [%zu items]", indent, f->name, n);
            if (f->type == PROTOBUF_C_TYPE_INT32) {
                for (size_t k = 0; k < n; k++)
                    printf(" %d", (*(int32_t *const *)p)[k]);
            }
            printf("\n");
            continue;
        }
        switch (f->type) {
        case PROTOBUF_C_TYPE_STRING:
            printf("%s%s: %s\n", indent, f->name, *(char *const *)p);
            break;
        case PROTOBUF_C_TYPE_UINT32:
            printf("%s%s: %u\n", indent, f->name, *(const uint32_t *)p);
            break;
        case PROTOBUF_C_TYPE_INT32:
            printf("%s%s: %d\n", indent, f->name, *(const int32_t *)p);
            break;
        case PROTOBUF_C_TYPE_UINT64:
            printf("%s%s: %" PRIu64 "\n", indent, f->name, *(const uint64_t *)p);
            break;
        default:
            break;
        }
    }
}

static int cmd_show(client_t *cl, const char *method, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *desc)
{
    ProtobufCMessage *m = NULL;
    int rc = skv_client_connect(cl);
    if (rc != 0 || unary(cl, method, req, desc, &m)) {
        return rc != 0 ? rc : 1;
    }
    print_fields(m, "");
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

/* model-info and stats: no flags of their own. */
static int cmd_info(client_t *cl, const char *cmd, int argc, char **argv)
{
    Skv__V1__ModelInfoRequest mi = SKV__V1__MODEL_INFO_REQUEST__INIT;
    Skv__V1__StatsRequest sr = SKV__V1__STATS_REQUEST__INIT;
    int info = strcmp(cmd, "model-info") == 0;
    char prog[64];
    snprintf(prog, sizeof(prog), "skv_client %s", cmd);
    int parsed = skv_client_parse_one(prog,
                                      info ? "Prints the model's description, one key: value per "
                                             "line."
                                           : "Prints the server's counters, one key: value per "
                                             "line.",
                                      NULL, NULL, NULL, NULL, argc, argv);
    if (parsed != SKV_CLI_OK) {
        return skv_client_exit(parsed);
    }
    if (info) {
        return cmd_show(cl, "/skv.v1.Generation/ModelInfo", &mi.base,
                        &skv__v1__model_info_response__descriptor);
    }
    return cmd_show(cl, "/skv.v1.Generation/Stats", &sr.base, &skv__v1__stats_response__descriptor);
}

static int cmd_health(client_t *cl, int argc, char **argv)
{
    static const char *names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    const char *service = NULL;
    int parsed = skv_client_parse_one(
        "skv_client health", "Prints the gRPC health status; exit 0 only when SERVING.", "service",
        "SKV_CLIENT_SERVICE", "the service to check (empty: the server)", &service, argc, argv);
    if (parsed != SKV_CLI_OK) {
        return skv_client_exit(parsed);
    }
    if (service != NULL) {
        req.service = (char *)service;
    }
    ProtobufCMessage *m = NULL;
    int rc = skv_client_connect(cl);
    if (rc != 0 || unary(cl, "/grpc.health.v1.Health/Check", &req.base,
                         &grpc__health__v1__health_check_response__descriptor, &m)) {
        return rc != 0 ? rc : 1;
    }
    int status = ((const Grpc__Health__V1__HealthCheckResponse *)m)->status;
    protobuf_c_message_free_unpacked(m, NULL);
    printf("%s\n", status >= 0 && status < 4 ? names[status] : "?");
    return status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? 0 : 1;
}

/* Runs the command argv[0] with its flags; returns the exit status. */
static int run_command(client_t *cl, int argc, char **argv)
{
    const char *cmd = argv[0];
    if (strcmp(cmd, "generate") == 0)
        return cmd_generate(cl, argc, argv);
    if (strcmp(cmd, "tokenize") == 0)
        return cmd_tokenize(cl, argc, argv);
    if (strcmp(cmd, "detokenize") == 0)
        return cmd_detokenize(cl, argc, argv);
    if (strcmp(cmd, "health") == 0)
        return cmd_health(cl, argc, argv);
    if (strcmp(cmd, "model-info") == 0 || strcmp(cmd, "stats") == 0)
        return cmd_info(cl, cmd, argc, argv);
    fprintf(stderr, "skv_client: unknown command '%s' (--help lists them)\n", cmd);
    return 2;
}

int main(int argc, char **argv)
{
    client_t cl = {.target = NULL, .timeout_ms = 0};
    const skv_cli_opt_t opts[] = {
        {"target", "SKV_CLIENT_TARGET", SKV_CLI_STRING, &cl.target, 0, 0, 0, 0,
         "HOST:PORT or a gRPC target (unix:PATH, ...) of the router or a worker (required)"},
        {"timeout-ms", "SKV_CLIENT_TIMEOUT_MS", SKV_CLI_INT64, &cl.timeout_ms, 0, 86400000, 0, 0,
         "deadline of the call; 0: none"},
    };
    int pos = 0;
    int parsed = skv_cli_parse("skv_client",
                               "skv_client [flags] COMMAND [its flags]: COMMAND is generate, "
                               "tokenize, detokenize, model-info, stats or health; `skv_client "
                               "COMMAND --help` lists a command's flags.",
                               opts, sizeof(opts) / sizeof(opts[0]), argc, argv, &pos);
    if (parsed != SKV_CLI_OK) {
        return skv_client_exit(parsed);
    }
    if (pos >= argc) {
        fprintf(stderr, "skv_client: a command is required (--help lists them)\n");
        return 2;
    }
    int rc = run_command(&cl, argc - pos, argv + pos); /* the command word plays argv[0] */
    skv_grpc_channel_destroy(cl.channel);
    return rc;
}
