/*
 * test_model_golden.c: the engine against reference logits made by independent
 * implementations (HF transformers LlamaForCausalLM for plain Llama and SwiftKV teachers, the
 * PyTorch SwiftKV reference for SwiftKV; see tests/model/ref/). For every golden case and
 * both CPU modes (reference and fast):
 *   1. incremental: every position as a decode step; every logits row within 1e-4 (max abs
 *      difference over the row's max magnitude) of the reference;
 *   2. greedy: whole-prompt prefill then 32 greedy steps give the reference tokens;
 *   3. chunked prefill (chunks of 3) gives the last-row logits of a whole prefill;
 *   4. mixed batch: one step holding a prefill chunk, a decode token of another sequence and
 *      a non-final chunk of a third gives each sequence's logits as when alone
 *      (prefill(N) == prefill(N-1) + decode(1)).
 * usage: test_model_golden MAKE_MODEL_BINARY GOLDEN_DIR
 */
#include <dirent.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/alloc.h"
#include "common/model/generate.h"
#include "base/log.h"
#include "kernels/cpu/cpu.h"
#include "tests/common/skv_test.h"

#define SKV_TOL 1e-4

typedef struct {
    char name[256];
    json_t *json;
    int32_t *prompt;
    int32_t n_prompt;
    int32_t *greedy;
    int32_t n_greedy;
    float *logits; /* [rows, vocab] */
    int32_t rows;
    int32_t vocab;
    skv_model_mode_t mode;
} skv_golden_t;

static int32_t *skv_json_ints(json_t *a, int32_t *n_p)
{
    *n_p = (int32_t)json_array_size(a);
    int32_t *v = skv_mallocn((size_t)*n_p + 1, sizeof(int32_t));
    for (int32_t i = 0; i < *n_p; i++) {
        v[i] = (int32_t)json_integer_value(json_array_get(a, (size_t)i));
    }
    return v;
}

static int skv_golden_load(const char *dir, const char *file, skv_golden_t *g)
{
    char path[1024];
    memset(g, 0, sizeof(*g));
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    g->json = json_load_file(path, 0, NULL);
    if (g->json == NULL) {
        return -1;
    }
    snprintf(g->name, sizeof(g->name), "%s", file);
    g->prompt = skv_json_ints(json_object_get(g->json, "prompt"), &g->n_prompt);
    g->greedy = skv_json_ints(json_object_get(g->json, "greedy"), &g->n_greedy);
    json_t *shape = json_object_get(g->json, "logits_shape");
    g->rows = (int32_t)json_integer_value(json_array_get(shape, 0));
    g->vocab = (int32_t)json_integer_value(json_array_get(shape, 1));
    g->mode = strcmp(json_string_value(json_object_get(g->json, "mode")), "swiftkv") == 0
                  ? SKV_MODEL_MODE_SWIFTKV
                  : SKV_MODEL_MODE_BASE;
    snprintf(path, sizeof(path), "%s/%s", dir,
             json_string_value(json_object_get(g->json, "logits_file")));
    FILE *f = fopen(path, "rb");
    g->logits = skv_mallocn((size_t)g->rows * g->vocab, sizeof(float));
    size_t got = f ? fread(g->logits, sizeof(float), (size_t)g->rows * g->vocab, f) : 0;
    if (f) {
        fclose(f);
    }
    return got == (size_t)g->rows * g->vocab ? 0 : -1;
}

static void skv_golden_free(skv_golden_t *g)
{
    json_decref(g->json);
    skv_free(g->prompt);
    skv_free(g->greedy);
    skv_free(g->logits);
}

/* Runs the model maker with the golden's arguments into out_dir. */
static int skv_make_checkpoint(const char *tool, const skv_golden_t *g, const char *out_dir)
{
    json_t *args = json_object_get(g->json, "make_model_args");
    size_t n = json_array_size(args);
    const char **extra = skv_calloc(n + 1, sizeof(char *));
    for (size_t i = 0; i < n; i++) {
        extra[i] = json_string_value(json_array_get(args, i));
    }
    int rc = skv_test_make_model(tool, out_dir, extra);
    skv_free(extra);
    return rc;
}

/* max |a - b| / max |b| over one row. */
static double skv_rel_err(const float *a, const float *b, int32_t n)
{
    double md = 0, mb = 1e-30;
    for (int32_t i = 0; i < n; i++) {
        if (isnan(a[i])) {
            return INFINITY;
        }
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs((double)b[i]));
    }
    return md / mb;
}

/* The full token sequence the golden rows describe: prompt then greedy tokens. */
static int32_t skv_golden_token(const skv_golden_t *g, int32_t i)
{
    return i < g->n_prompt ? g->prompt[i] : g->greedy[i - g->n_prompt];
}

static void skv_check_incremental(skv_model_t *m, skv_kv_pool_t *pool, const skv_golden_t *g,
                                  float *logits, const char *tag)
{
    skv_kv_seq_t seq = {0};
    double worst = 0;
    for (int32_t i = 0; i < g->rows; i++) {
        skv_status_t s = skv_generate_decode(m, pool, &seq, skv_golden_token(g, i), i, logits);
        SKV_EXPECT(s == SKV_STATUS_OK, "%s %s: decode at %d: %s", g->name, tag, i,
                   skv_status_str(s));
        worst = fmax(worst, skv_rel_err(logits, g->logits + (size_t)i * g->vocab, g->vocab));
    }
    SKV_EXPECT(worst <= SKV_TOL, "%s %s: incremental max rel err %.3g > %.1g", g->name, tag, worst,
               SKV_TOL);
    printf("  %-40s %-8s incremental rows %3d  max rel err %.2e\n", g->name, tag, g->rows, worst);
    skv_kv_seq_release(pool, &seq);
}

static void skv_check_greedy(skv_model_t *m, skv_kv_pool_t *pool, const skv_golden_t *g,
                             const char *tag)
{
    skv_generate_opts_t opts;
    memset(&opts, 0, sizeof(opts));
    opts.max_new_tokens = g->n_greedy;
    opts.ignore_eos = 1;
    skv_sampling_params_default(&opts.sampling);
    int32_t out[256], n_out = 0;
    skv_status_t s = skv_generate(m, pool, g->prompt, g->n_prompt, &opts, NULL, NULL, out, &n_out);
    SKV_EXPECT(s == SKV_STATUS_OK && n_out == g->n_greedy, "%s %s: generate %s, %d tokens", g->name,
               tag, skv_status_str(s), n_out);
    for (int32_t i = 0; i < n_out && i < g->n_greedy; i++) {
        SKV_EXPECT(out[i] == g->greedy[i], "%s %s: greedy token %d is %d, reference %d", g->name,
                   tag, i, out[i], g->greedy[i]);
        if (out[i] != g->greedy[i]) {
            break;
        }
    }
}

static void skv_check_chunked(skv_model_t *m, skv_kv_pool_t *pool, const skv_golden_t *g,
                              float *logits, const char *tag)
{
    skv_kv_seq_t seq = {0};
    skv_status_t s = skv_generate_prefill(m, pool, &seq, g->prompt, g->n_prompt, 3, logits);
    SKV_EXPECT(s == SKV_STATUS_OK, "%s %s: chunked prefill %s", g->name, tag, skv_status_str(s));
    double e = skv_rel_err(logits, g->logits + (size_t)(g->n_prompt - 1) * g->vocab, g->vocab);
    SKV_EXPECT(e <= SKV_TOL, "%s %s: chunked prefill rel err %.3g", g->name, tag, e);
    skv_kv_seq_release(pool, &seq);
}

/* One step with: A = prefill of the first k tokens (logits), B = decode of token n-1 after a
 * prefill of n-1 tokens (logits), C = a non-final chunk (no logits). */
static void skv_check_mixed(skv_model_t *m, skv_kv_pool_t *pool, const skv_golden_t *g,
                            float *logits, const char *tag)
{
    int32_t n = g->rows, k = n / 2 > 0 ? n / 2 : 1;
    int32_t *seqtok = skv_mallocn((size_t)n, sizeof(int32_t));
    for (int32_t i = 0; i < n; i++) {
        seqtok[i] = skv_golden_token(g, i);
    }
    skv_kv_seq_t a = {0}, b = {0}, c = {0};
    skv_status_t s = skv_generate_prefill(m, pool, &b, seqtok, n - 1, 0, logits);
    s = s == SKV_STATUS_OK ? skv_kv_seq_reserve(pool, &b, n) : s;
    s = s == SKV_STATUS_OK ? skv_kv_seq_reserve(pool, &a, k) : s;
    s = s == SKV_STATUS_OK ? skv_kv_seq_reserve(pool, &c, k) : s;
    SKV_EXPECT(s == SKV_STATUS_OK, "%s %s: mixed setup %s", g->name, tag, skv_status_str(s));
    skv_seq_step_t steps[3] = {
        {seqtok, k, 0, a.blocks, a.n_blocks, 1},
        {seqtok, k, 0, c.blocks, c.n_blocks, 0},
        {seqtok + n - 1, 1, n - 1, b.blocks, b.n_blocks, 1},
    };
    float *two = skv_mallocn(2 * (size_t)g->vocab, sizeof(float));
    s = skv_model_forward(m, pool, steps, 3, two);
    SKV_EXPECT(s == SKV_STATUS_OK, "%s %s: mixed step %s", g->name, tag, skv_status_str(s));
    double ea = skv_rel_err(two, g->logits + (size_t)(k - 1) * g->vocab, g->vocab);
    double eb = skv_rel_err(two + g->vocab, g->logits + (size_t)(n - 1) * g->vocab, g->vocab);
    SKV_EXPECT(ea <= SKV_TOL && eb <= SKV_TOL, "%s %s: mixed batch rel err %.3g / %.3g", g->name,
               tag, ea, eb);
    skv_kv_seq_release(pool, &a);
    skv_kv_seq_release(pool, &b);
    skv_kv_seq_release(pool, &c);
    skv_free(two);
    skv_free(seqtok);
}

static void skv_check_case(const char *tool, const char *tmp, const skv_golden_t *g)
{
    char dir[1024];
    snprintf(dir, sizeof(dir), "%s/%s.model", tmp, g->name);
    SKV_EXPECT(skv_make_checkpoint(tool, g, dir) == 0, "%s: model maker failed", g->name);
    const skv_cpu_mode_t modes[2] = {SKV_CPU_MODE_REFERENCE, SKV_CPU_MODE_FAST};
    const char *tags[2] = {"cpu-ref", "cpu"};
    for (int b = 0; b < 2; b++) {
        skv_backend_t *be = NULL;
        skv_model_t *m = NULL;
        skv_kv_pool_t *pool = NULL;
        skv_model_opts_t mo = {g->mode, 128, 4, 0, NULL, 0};
        skv_kv_layout_t layout;
        skv_cpu_backend_create(modes[b], 2, &be);
        skv_status_t s = skv_model_load(dir, be, &mo, &m);
        SKV_EXPECT(s == SKV_STATUS_OK, "%s: load %s", g->name, skv_status_str(s));
        if (s == SKV_STATUS_OK) {
            float *logits = skv_mallocn((size_t)g->vocab, sizeof(float));
            skv_model_kv_layout(m, b == 0 ? 16 : 5, &layout); /* odd block size too */
            skv_kv_pool_create(&layout, 256, be, &pool);
            skv_check_incremental(m, pool, g, logits, tags[b]);
            skv_check_greedy(m, pool, g, tags[b]);
            skv_check_chunked(m, pool, g, logits, tags[b]);
            skv_check_mixed(m, pool, g, logits, tags[b]);
            SKV_EXPECT(skv_kv_pool_n_free(pool) == 256, "%s: leaked KV blocks", g->name);
            skv_kv_pool_destroy(pool);
            skv_free(logits);
        }
        skv_model_destroy(m);
        be->ops->destroy(be);
    }
}

int main(int argc, char **argv)
{
    char tmp[] = "/tmp/skv_golden_XXXXXX";
    skv_test_start(argc, argv, 2, "MAKE_MODEL GOLDEN_DIR", tmp);
    DIR *d = opendir(argv[2]);
    int n_cases = 0;
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len < 6 || strcmp(e->d_name + len - 5, ".json") != 0) {
            continue;
        }
        skv_golden_t g;
        if (skv_golden_load(argv[2], e->d_name, &g) != 0) {
            SKV_EXPECT(0, "cannot load golden %s", e->d_name);
            continue;
        }
        skv_check_case(argv[1], tmp, &g);
        skv_golden_free(&g);
        n_cases++;
    }
    if (d) {
        closedir(d);
    }
    char cmd[1100];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmp);
    if (system(cmd) != 0) {
        fprintf(stderr, "warning: could not remove %s\n", tmp);
    }
    SKV_EXPECT(n_cases >= 10, "only %d golden cases found in %s", n_cases, argv[2]);
    printf("%d golden cases, %d failures\n", n_cases, skv_failures);
    return skv_failures ? 1 : 0;
}
