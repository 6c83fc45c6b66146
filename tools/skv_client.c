/*
 * skv_client.c: command-line client of the public skv.v1.Generation API and of gRPC health.
 *
 *   skv_client --target HOST:PORT [--timeout-ms N] COMMAND [options]
 *     generate   --prompt TEXT | --token-ids 1,2,3  [--max-tokens N --temperature T --top-k K
 *                --top-p P --min-p P --seed S --presence-penalty X --frequency-penalty X
 *                --repetition-penalty X --stop STR (repeatable) --stop-token-id ID (repeatable)
 *                --ignore-eos --logprobs N --request-id ID --show-ids (ids, not text)]
 *                streams the text to stdout; finish reason, usage and timings to stderr
 *     tokenize   --text TEXT        token ids, space separated
 *     detokenize --ids 1,2,3        text
 *     model-info | stats            one "key: value" per line
 *     health     [--service NAME]   SERVING | NOT_SERVING ...; exit 0 only when SERVING
 * Exit codes: 0 ok, 1 the call failed (gRPC status on stderr), 2 bad usage.
 * Only parses flags and prints; calls go through common/grpc_client.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/rpc/grpc_client.h"
#include "grpc/health/v1/health.pb-c.h"
#include "skv/v1/generate.pb-c.h"

#define MAX_LIST 256

typedef struct {
    const char *target;
    int64_t timeout_ms;
    skv_grpc_channel_t *channel;
} client_t;

static int usage(void)
{
    fprintf(stderr, "usage: skv_client --target HOST:PORT [--timeout-ms N] "
                    "generate|tokenize|detokenize|model-info|stats|health [options]\n"
                    "  (see the header of tools/skv_client.c for each command's options)\n");
    return 2;
}

/* Parses "1,2,3" into ids (at most cap); returns the count or -1. */
static int parse_ids(const char *s, int32_t *ids, int cap)
{
    int n = 0;
    char *end;
    while (*s != '\0') {
        long v = strtol(s, &end, 10);
        if (end == s || n == cap || (*end != ',' && *end != '\0')) {
            return -1;
        }
        ids[n++] = (int32_t)v;
        s = *end == ',' ? end + 1 : end;
    }
    return n;
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

static int cmd_generate(client_t *cl, int argc, char **argv)
{
    static const struct option opts[] = {{"prompt", 1, 0, 'p'},
                                         {"token-ids", 1, 0, 'i'},
                                         {"max-tokens", 1, 0, 'm'},
                                         {"temperature", 1, 0, 't'},
                                         {"top-k", 1, 0, 'k'},
                                         {"top-p", 1, 0, 'P'},
                                         {"min-p", 1, 0, 'M'},
                                         {"seed", 1, 0, 's'},
                                         {"presence-penalty", 1, 0, 'r'},
                                         {"frequency-penalty", 1, 0, 'f'},
                                         {"repetition-penalty", 1, 0, 'R'},
                                         {"stop", 1, 0, 'S'},
                                         {"stop-token-id", 1, 0, 'T'},
                                         {"ignore-eos", 0, 0, 'e'},
                                         {"logprobs", 1, 0, 'l'},
                                         {"request-id", 1, 0, 'q'},
                                         {"show-ids", 0, 0, 'd'},
                                         {0, 0, 0, 0}};
    Skv__V1__GenerateRequest req = SKV__V1__GENERATE_REQUEST__INIT;
    Skv__V1__SamplingParams sp = SKV__V1__SAMPLING_PARAMS__INIT;
    Skv__V1__StopCriteria stop = SKV__V1__STOP_CRITERIA__INIT;
    Skv__V1__TokenIds tids = SKV__V1__TOKEN_IDS__INIT;
    int32_t *prompt_ids = NULL, stop_ids[MAX_LIST];
    char *stops[MAX_LIST];
    int show_ids = 0, c;
    size_t n_shown = 0;
    req.sampling = &sp;
    req.stop = &stop;
    stop.stop = stops;
    stop.stop_token_ids = stop_ids;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'p':
            req.input_case = SKV__V1__GENERATE_REQUEST__INPUT_TEXT;
            req.text = optarg;
            break;
        case 'i': /* a prompt of any length: one id per comma, plus one */
            free(prompt_ids);
            prompt_ids = malloc((strlen(optarg) / 2 + 1) * sizeof(*prompt_ids));
            if (prompt_ids == NULL ||
                (int)(tids.n_ids = (size_t)parse_ids(optarg, prompt_ids,
                                                     (int)(strlen(optarg) / 2 + 1))) < 0) {
                free(prompt_ids);
                return usage();
            }
            tids.ids = prompt_ids;
            req.input_case = SKV__V1__GENERATE_REQUEST__INPUT_TOKEN_IDS;
            req.token_ids = &tids;
            break;
        case 'm':
            stop.max_tokens = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 't':
            sp.temperature = strtof(optarg, NULL);
            break;
        case 'k':
            sp.top_k = atoi(optarg);
            break;
        case 'P':
            sp.top_p = strtof(optarg, NULL);
            break;
        case 'M':
            sp.min_p = strtof(optarg, NULL);
            break;
        case 's':
            sp.seed_present_case = SKV__V1__SAMPLING_PARAMS__SEED_PRESENT_SEED;
            sp.seed = strtoull(optarg, NULL, 10);
            break;
        case 'r':
            sp.presence_penalty = strtof(optarg, NULL);
            break;
        case 'f':
            sp.frequency_penalty = strtof(optarg, NULL);
            break;
        case 'R':
            sp.repetition_penalty = strtof(optarg, NULL);
            break;
        case 'S':
            if (stop.n_stop == MAX_LIST)
                return usage();
            stops[stop.n_stop++] = optarg;
            break;
        case 'T':
            if (stop.n_stop_token_ids == MAX_LIST)
                return usage();
            stop_ids[stop.n_stop_token_ids++] = atoi(optarg);
            break;
        case 'e':
            stop.ignore_eos = 1;
            break;
        case 'l':
            req.logprobs = (uint32_t)strtoul(optarg, NULL, 10);
            break;
        case 'q':
            req.request_id = optarg;
            break;
        case 'd':
            show_ids = 1;
            break;
        default:
            free(prompt_ids);
            return usage();
        }
    }
    if (req.input_case == SKV__V1__GENERATE_REQUEST__INPUT__NOT_SET) {
        fprintf(stderr, "skv_client: generate needs --prompt or --token-ids\n");
        free(prompt_ids);
        return usage();
    }
    skv_grpc_call_opts_t call_opts = {.timeout_ms = cl->timeout_ms};
    skv_grpc_stream_t *s = NULL;
    skv_grpc_error_t err = {0};
    skv_status_t st = skv_grpc_stream_open(cl->channel, "/skv.v1.Generation/Generate", &req.base,
                                           &skv__v1__generate_chunk__descriptor, &call_opts, &s);
    ProtobufCMessage *msg = NULL;
    while (st == SKV_STATUS_OK && (st = skv_grpc_stream_read(s, &msg, &err)) == SKV_STATUS_OK &&
           msg != NULL) {
        print_chunk((const Skv__V1__GenerateChunk *)msg, show_ids, &n_shown);
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

static int cmd_tokenize(client_t *cl, int argc, char **argv)
{
    static const struct option opts[] = {{"text", 1, 0, 't'}, {0, 0, 0, 0}};
    Skv__V1__TokenizeRequest req = SKV__V1__TOKENIZE_REQUEST__INIT;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c != 't')
            return usage();
        req.input_case = SKV__V1__TOKENIZE_REQUEST__INPUT_TEXT;
        req.text = optarg;
    }
    req.add_special_tokens = 1;
    ProtobufCMessage *m = NULL;
    if (unary(cl, "/skv.v1.Generation/Tokenize", &req.base, &skv__v1__tokenize_response__descriptor,
              &m)) {
        return 1;
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
    static const struct option opts[] = {{"ids", 1, 0, 'i'}, {0, 0, 0, 0}};
    Skv__V1__DetokenizeRequest req = SKV__V1__DETOKENIZE_REQUEST__INIT;
    int32_t ids[MAX_LIST];
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int n = c == 'i' ? parse_ids(optarg, ids, MAX_LIST) : -1;
        if (n < 0)
            return usage();
        req.ids = ids;
        req.n_ids = (size_t)n;
    }
    ProtobufCMessage *m = NULL;
    if (unary(cl, "/skv.v1.Generation/Detokenize", &req.base,
              &skv__v1__detokenize_response__descriptor, &m)) {
        return 1;
    }
    printf("%s\n", ((const Skv__V1__DetokenizeResponse *)m)->text);
    protobuf_c_message_free_unpacked(m, NULL);
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
    if (unary(cl, method, req, desc, &m)) {
        return 1;
    }
    print_fields(m, "");
    protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}

static int cmd_health(client_t *cl, int argc, char **argv)
{
    static const struct option opts[] = {{"service", 1, 0, 's'}, {0, 0, 0, 0}};
    static const char *names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        if (c != 's')
            return usage();
        req.service = optarg;
    }
    ProtobufCMessage *m = NULL;
    if (unary(cl, "/grpc.health.v1.Health/Check", &req.base,
              &grpc__health__v1__health_check_response__descriptor, &m)) {
        return 1;
    }
    int status = ((const Grpc__Health__V1__HealthCheckResponse *)m)->status;
    protobuf_c_message_free_unpacked(m, NULL);
    printf("%s\n", status >= 0 && status < 4 ? names[status] : "?");
    return status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING ? 0 : 1;
}

static int run_command(client_t *cl, const char *cmd, int argc, char **argv)
{
    Skv__V1__ModelInfoRequest mi = SKV__V1__MODEL_INFO_REQUEST__INIT;
    Skv__V1__StatsRequest sr = SKV__V1__STATS_REQUEST__INIT;
    if (strcmp(cmd, "generate") == 0)
        return cmd_generate(cl, argc, argv);
    if (strcmp(cmd, "tokenize") == 0)
        return cmd_tokenize(cl, argc, argv);
    if (strcmp(cmd, "detokenize") == 0)
        return cmd_detokenize(cl, argc, argv);
    if (strcmp(cmd, "health") == 0)
        return cmd_health(cl, argc, argv);
    if (strcmp(cmd, "model-info") == 0)
        return cmd_show(cl, "/skv.v1.Generation/ModelInfo", &mi.base,
                        &skv__v1__model_info_response__descriptor);
    if (strcmp(cmd, "stats") == 0)
        return cmd_show(cl, "/skv.v1.Generation/Stats", &sr.base,
                        &skv__v1__stats_response__descriptor);
    fprintf(stderr, "skv_client: unknown command '%s'\n", cmd);
    return usage();
}

int main(int argc, char **argv)
{
    client_t cl = {.target = NULL, .timeout_ms = 0};
    int i = 1;
    for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
        if (i + 1 >= argc)
            return usage();
        if (strcmp(argv[i], "--target") == 0)
            cl.target = argv[i + 1];
        else if (strcmp(argv[i], "--timeout-ms") == 0)
            cl.timeout_ms = strtoll(argv[i + 1], NULL, 10);
        else
            return usage();
    }
    if (cl.target == NULL || i >= argc) {
        return usage();
    }
    if (skv_grpc_channel_create(cl.target, NULL, &cl.channel) != SKV_STATUS_OK) {
        return 1;
    }
    optind = 1; /* getopt over the command's own arguments, argv[i] playing argv[0] */
    int rc = run_command(&cl, argv[i], argc - i, argv + i);
    skv_grpc_channel_destroy(cl.channel);
    return rc;
}
