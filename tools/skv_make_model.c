/*
 * skv_make_model.c: writes a deterministic random Hugging Face model folder (config.json,
 * generation_config.json, safetensors weights, optionally a tokenizer) for plain Llama-3 and
 * SwiftKV (LlamaSwiftKVForCausalLM) shapes, from tiny test models to Llama-3.1-70B.
 *
 * This file owns the command line (presets, overrides, validation), the two config files and
 * the tokenizer copy; make_model_weights.c owns the weights. The same flags give the same
 * bytes on any machine. `skv_make_model --help` lists every flag with its default and
 * SKV_MAKE_MODEL_* variable (one table, base/cli.h). Exit status: 0 done, 2 bad flags, 1 failure
 * (logged).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/cli.h"
#include "base/json.h"
#include "base/log.h"
#include "base/status.h"
#include "tools/make_model.h"

/* ---------------------------------------------------------------------------------------- */
/* Presets and flags                                                                        */
/* ---------------------------------------------------------------------------------------- */

static void skv_mm_preset_tiny(skv_mm_opts_t *o)
{
    o->hidden = 64;
    o->n_layers = 4;
    o->n_heads = 4;
    o->n_kv_heads = 2;
    o->head_dim = 16;
    o->intermediate = 192;
    o->vocab = 1024;
    o->max_pos = 2048;
    o->rope = SKV_MM_ROPE_LLAMA3;
    /* Small theta and original context so that, at head_dim 16, the llama3 rule keeps the
     * high frequencies, smooths one band and scales the low ones: all three branches. */
    o->rope_theta = 10000.0;
    o->rope_factor = 8.0;
    o->rope_orig_max = 256;
    o->dtype = SKV_MM_DTYPE_F32;
    /* Large for a random model on purpose: logits of std ~2-4, so next-token distributions
     * are peaky and greedy choices are not near ties (HF's 0.02 gives near-uniform logits). */
    o->init_std = 0.25;
    o->bos_id = 1000;
    o->n_eos = 3;
    o->eos_ids[0] = 1001;
    o->eos_ids[1] = 1008;
    o->eos_ids[2] = 1009;
}

static void skv_mm_preset_100m(skv_mm_opts_t *o)
{
    skv_mm_preset_tiny(o);
    /* ~98M parameters: 12 x 8.06M per layer + 2 x 0.79M embedding/lm_head. */
    o->hidden = 768;
    o->n_layers = 12;
    o->n_heads = 12;
    o->n_kv_heads = 4;
    o->head_dim = 64;
    o->intermediate = 2816;
    o->max_pos = 8192;
    o->rope_theta = 500000.0;
    o->rope_orig_max = 8192;
    o->dtype = SKV_MM_DTYPE_BF16;
    o->init_std = 0.05;
}

/* Llama-3.1-8B: the published config. */
static void skv_mm_preset_llama3_8b(skv_mm_opts_t *o)
{
    o->hidden = 4096;
    o->n_layers = 32;
    o->n_heads = 32;
    o->n_kv_heads = 8;
    o->head_dim = 128;
    o->intermediate = 14336;
    o->vocab = 128256;
    o->max_pos = 131072;
    o->rope = SKV_MM_ROPE_LLAMA3;
    o->rope_theta = 500000.0;
    o->rope_factor = 8.0;
    o->rope_orig_max = 8192;
    o->dtype = SKV_MM_DTYPE_BF16;
    o->init_std = 0.02;
    o->bos_id = 128000;
    o->n_eos = 3;
    o->eos_ids[0] = 128001;
    o->eos_ids[1] = 128008;
    o->eos_ids[2] = 128009;
}

static void skv_mm_preset_llama3_70b(skv_mm_opts_t *o)
{
    skv_mm_preset_llama3_8b(o);
    o->hidden = 8192;
    o->n_layers = 80;
    o->n_heads = 64;
    o->intermediate = 28672;
}

/* Applies a named preset over the defaults. INVALID_ARGUMENT for an unknown name. */
static skv_status_t skv_mm_preset_apply(const char *name, skv_mm_opts_t *o)
{
    static const struct {
        const char *name;
        void (*fn)(skv_mm_opts_t *);
        int swiftkv;
    } presets[] = {
        {"tiny", skv_mm_preset_tiny, 0},
        {"tiny-swiftkv", skv_mm_preset_tiny, 1},
        {"100m", skv_mm_preset_100m, 0},
        {"100m-swiftkv", skv_mm_preset_100m, 1},
        {"llama3-8b", skv_mm_preset_llama3_8b, 0},
        {"llama3-8b-swiftkv", skv_mm_preset_llama3_8b, 1},
        {"llama3-70b", skv_mm_preset_llama3_70b, 0},
        {"llama3-70b-swiftkv", skv_mm_preset_llama3_70b, 1},
    };
    for (size_t i = 0; i < sizeof(presets) / sizeof(presets[0]); i++) {
        if (strcmp(name, presets[i].name) == 0) {
            presets[i].fn(o);
            o->n_kv_layers = presets[i].swiftkv ? o->n_layers / 2 : 0;
            return SKV_STATUS_OK;
        }
    }
    SKV_LOG_ERROR("unknown --preset '%s' (tiny, tiny-swiftkv, 100m, 100m-swiftkv, llama3-8b, "
                  "llama3-8b-swiftkv, llama3-70b, llama3-70b-swiftkv)",
                  name);
    return SKV_STATUS_INVALID_ARGUMENT;
}

static void skv_mm_opts_defaults(skv_mm_opts_t *o)
{
    memset(o, 0, sizeof(*o));
    skv_mm_preset_tiny(o);
    o->group = 1;
    o->rope_low_freq = 1.0;
    o->rope_high_freq = 4.0;
    o->rms_eps = 1e-5;
    o->seed = 1;
    long n_cpu = sysconf(_SC_NPROCESSORS_ONLN);
    o->n_threads = n_cpu < 1 ? 1 : (n_cpu > 16 ? 16 : (int)n_cpu);
}

/* Parses one word flag (--rope, --dtype). */
static skv_status_t skv_mm_parse_enum(const char *flag, const char *s, const char *const *names,
                                      int n_names, int *out_p)
{
    for (int i = 0; i < n_names; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out_p = i;
            return SKV_STATUS_OK;
        }
    }
    SKV_LOG_ERROR("--%s: unknown value '%s'", flag, s);
    return SKV_STATUS_INVALID_ARGUMENT;
}

/* The flags not stored in skv_mm_opts_t as they are given. */
typedef struct {
    const char *preset, *rope, *dtype;
    int64_t seed;
} skv_mm_flags_t;

static const char *const skv_mm_rope_names[] = {"none", "llama3", "linear"};
static const char *const skv_mm_dtype_names[] = {"f32", "bf16", "f16"};

#define SKV_MM_I(name, env, field, lo, hi, help)                                                   \
    {name, env, SKV_CLI_INT64, &o->field, lo, hi, 0, 0, help}
#define SKV_MM_D(name, env, field, lo, hi, help)                                                   \
    {name, env, SKV_CLI_DOUBLE, &o->field, 0, 0, lo, hi, help}

/* Parses the environment and argv into o and f (defaults in them); SKV_CLI_OK, SKV_CLI_HELP or
 * SKV_CLI_USAGE (base/cli.h). */
static int skv_mm_table(int argc, char **argv, skv_mm_opts_t *o, skv_mm_flags_t *f)
{
    const int64_t big = (int64_t)1 << 40;
    const skv_cli_opt_t opts[] = {
        {"out", "SKV_MAKE_MODEL_OUT", SKV_CLI_STRING, &o->out_dir, 0, 0, 0, 0,
         "output folder, created (required)"},
        {"preset", "SKV_MAKE_MODEL_PRESET", SKV_CLI_STRING, &f->preset, 0, 0, 0, 0,
         "tiny | tiny-swiftkv | 100m | 100m-swiftkv | llama3-8b | llama3-8b-swiftkv | llama3-70b "
         "| llama3-70b-swiftkv (*-swiftkv: Lk = L/2); the defaults below are tiny's, the other "
         "flags override the preset"},
        SKV_MM_I("hidden", "SKV_MAKE_MODEL_HIDDEN", hidden, 1, big, "hidden size"),
        SKV_MM_I("layers", "SKV_MAKE_MODEL_LAYERS", n_layers, 1, 4096, "layers"),
        SKV_MM_I("heads", "SKV_MAKE_MODEL_HEADS", n_heads, 1, 4096, "attention heads"),
        SKV_MM_I("kv-heads", "SKV_MAKE_MODEL_KV_HEADS", n_kv_heads, 1, 4096, "K/V heads"),
        SKV_MM_I("head-dim", "SKV_MAKE_MODEL_HEAD_DIM", head_dim, 0, 4096,
                 "head dimension, even; 0: hidden / heads"),
        SKV_MM_I("intermediate", "SKV_MAKE_MODEL_INTERMEDIATE", intermediate, 1, big,
                 "MLP intermediate size"),
        SKV_MM_I("vocab", "SKV_MAKE_MODEL_VOCAB", vocab, 2, big, "vocabulary size"),
        SKV_MM_I("max-pos", "SKV_MAKE_MODEL_MAX_POS", max_pos, 1, big, "max_position_embeddings"),
        SKV_MM_I("swiftkv-layers", "SKV_MAKE_MODEL_SWIFTKV_LAYERS", n_kv_layers, 0, 4096,
                 "Lk: layers with their own K/V; 0: plain Llama"),
        SKV_MM_I("group", "SKV_MAKE_MODEL_GROUP", group, 1, 4096, "AcrossKV group size"),
        {"tie", "SKV_MAKE_MODEL_TIE", SKV_CLI_INT, &o->tie, 0, 1, 0, 0,
         "1: lm_head is the embedding"},
        {"rope", "SKV_MAKE_MODEL_ROPE", SKV_CLI_STRING, &f->rope, 0, 0, 0, 0,
         "none | llama3 | linear"},
        SKV_MM_D("rope-factor", "SKV_MAKE_MODEL_ROPE_FACTOR", rope_factor, 1.0, 1e6,
                 "rope_scaling factor"),
        SKV_MM_D("rope-theta", "SKV_MAKE_MODEL_ROPE_THETA", rope_theta, 1.0, 1e12, "rope_theta"),
        SKV_MM_I("rope-orig-max", "SKV_MAKE_MODEL_ROPE_ORIG_MAX", rope_orig_max, 1, big,
                 "llama3 rope: original_max_position_embeddings"),
        SKV_MM_D("rms-eps", "SKV_MAKE_MODEL_RMS_EPS", rms_eps, 0.0, 1.0, "rms_norm_eps"),
        {"dtype", "SKV_MAKE_MODEL_DTYPE", SKV_CLI_STRING, &f->dtype, 0, 0, 0, 0,
         "f32 | bf16 | f16"},
        SKV_MM_I("shard-mb", "SKV_MAKE_MODEL_SHARD_MB", shard_mb, 0, big,
                 "weight shard size; 0: one model.safetensors"),
        {"seed", "SKV_MAKE_MODEL_SEED", SKV_CLI_INT64, &f->seed, 0, INT64_MAX, 0, 0,
         "weights seed"},
        SKV_MM_D("init-std", "SKV_MAKE_MODEL_INIT_STD", init_std, 0.0, 100.0,
                 "weights standard deviation"),
        {"tokenizer", "SKV_MAKE_MODEL_TOKENIZER", SKV_CLI_STRING, &o->tokenizer_dir, 0, 0, 0, 0,
         "tokenizer folder to copy (default: the tiny one when the vocabulary is 1024)"},
        {"threads", "SKV_MAKE_MODEL_THREADS", SKV_CLI_INT, &o->n_threads, 1, SKV_MM_MAX_THREADS, 0,
         0, "writer threads"},
    };
    return skv_cli_parse("skv_make_model",
                         "Writes a deterministic random Hugging Face model folder (plain Llama-3 "
                         "or SwiftKV): a preset, then the flags that override it.",
                         opts, sizeof(opts) / sizeof(opts[0]), argc, argv, NULL);
}

/* The defaults of preset (tiny when NULL) in o and f; head_dim 0 (derived unless given). */
static skv_status_t skv_mm_flags_defaults(const char *preset, skv_mm_opts_t *o, skv_mm_flags_t *f)
{
    skv_mm_opts_defaults(o);
    if (preset != NULL) {
        SKV_CHECK(skv_mm_preset_apply(preset, o));
    }
    f->preset = preset != NULL ? preset : "tiny";
    f->rope = skv_mm_rope_names[o->rope];
    f->dtype = skv_mm_dtype_names[o->dtype];
    f->seed = (int64_t)o->seed;
    o->head_dim = 0;
    return SKV_STATUS_OK;
}

/* Stores the flags not kept as given (rope, dtype, seed, a derived head_dim) into o. */
static skv_status_t skv_mm_flags_apply(const skv_mm_flags_t *f, skv_mm_opts_t *o)
{
    int rope = 0, dtype = 0;
    SKV_CHECK(skv_mm_parse_enum("rope", f->rope, skv_mm_rope_names, 3, &rope));
    SKV_CHECK(skv_mm_parse_enum("dtype", f->dtype, skv_mm_dtype_names, 3, &dtype));
    o->rope = (skv_mm_rope_t)rope;
    o->dtype = (skv_mm_dtype_t)dtype;
    o->seed = (uint64_t)f->seed;
    if (o->head_dim == 0) { /* head_dim follows hidden/heads unless given */
        if (o->hidden % o->n_heads != 0) {
            SKV_LOG_ERROR("--hidden %" PRId64 " is not a multiple of --heads %" PRId64
                          "; give --head-dim",
                          o->hidden, o->n_heads);
            return SKV_STATUS_INVALID_ARGUMENT;
        }
        o->head_dim = o->hidden / o->n_heads;
    }
    return SKV_STATUS_OK;
}

/* Checks the shape relations a Llama/SwiftKV config must satisfy. */
static skv_status_t skv_mm_opts_validate(const skv_mm_opts_t *o)
{
    if (o->out_dir == NULL || o->out_dir[0] == '\0') {
        SKV_LOG_ERROR("--out DIR is required");
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    if (o->n_heads % o->n_kv_heads != 0) {
        SKV_LOG_ERROR("--heads %" PRId64 " is not a multiple of --kv-heads %" PRId64, o->n_heads,
                      o->n_kv_heads);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    if (o->head_dim % 2 != 0) {
        SKV_LOG_ERROR("--head-dim %" PRId64 " must be even (RoPE rotates pairs)", o->head_dim);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    if (o->n_kv_layers > o->n_layers) {
        SKV_LOG_ERROR("--swiftkv-layers %" PRId64 " exceeds --layers %" PRId64, o->n_kv_layers,
                      o->n_layers);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    if (o->n_kv_layers > 0 && (o->n_layers - o->n_kv_layers) % o->group != 0) {
        SKV_LOG_ERROR("(layers %" PRId64 " - swiftkv-layers %" PRId64 ") %% group %" PRId64
                      " must be 0",
                      o->n_layers, o->n_kv_layers, o->group);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    if (o->n_kv_layers == 0 && o->group != 1) {
        SKV_LOG_ERROR("--group %" PRId64 " needs --swiftkv-layers > 0", o->group);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    return SKV_STATUS_OK;
}

/* Parses the environment and argv into *o: the preset first (wherever it appears), then the
 * other flags over it. SKV_CLI_OK, SKV_CLI_HELP or SKV_CLI_USAGE (reported). */
static int skv_mm_opts_parse(int argc, char **argv, skv_mm_opts_t *o)
{
    skv_mm_flags_t f;
    skv_mm_flags_defaults(NULL, o, &f);
    int st = skv_mm_table(argc, argv, o, &f); /* finds the preset; reports bad flags */
    if (st != SKV_CLI_OK) {
        return st;
    }
    const char *preset = f.preset;
    if (skv_mm_flags_defaults(preset, o, &f) != SKV_STATUS_OK ||
        skv_mm_table(argc, argv, o, &f) != SKV_CLI_OK) { /* the flags over the preset */
        return SKV_CLI_USAGE;
    }
    f.preset = preset;
    if (skv_mm_flags_apply(&f, o) != SKV_STATUS_OK || skv_mm_opts_validate(o) != SKV_STATUS_OK) {
        return SKV_CLI_USAGE;
    }
    return SKV_CLI_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Output folder and config files                                                           */
/* ---------------------------------------------------------------------------------------- */

/* Creates dir and its parents (mkdir -p). */
static skv_status_t skv_mm_mkdir_p(const char *dir)
{
    char path[SKV_MM_PATH_MAX];
    if (dir[0] == '\0') {
        SKV_LOG_ERROR("--out is empty");
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path)) {
        SKV_LOG_ERROR("path too long: %s", dir);
        return SKV_STATUS_INVALID_ARGUMENT;
    }
    for (char *c = path + 1;; c++) {
        if (*c == '/' || *c == '\0') {
            char save = *c;
            *c = '\0';
            if (mkdir(path, 0755) != 0 && errno != EEXIST) {
                SKV_LOG_ERROR("cannot create %s: %s", path, strerror(errno));
                return SKV_STATUS_IO;
            }
            *c = save;
            if (save == '\0') {
                break;
            }
        }
    }
    return SKV_STATUS_OK;
}

static json_t *skv_mm_eos_json(const skv_mm_opts_t *o)
{
    json_t *eos = json_array();
    for (int i = 0; i < o->n_eos; i++) {
        json_array_append_new(eos, json_integer(o->eos_ids[i]));
    }
    return eos;
}

static json_t *skv_mm_rope_scaling_json(const skv_mm_opts_t *o)
{
    if (o->rope == SKV_MM_ROPE_NONE) {
        return json_null();
    }
    json_t *r = json_object();
    json_object_set_new(r, "factor", json_real(o->rope_factor));
    if (o->rope == SKV_MM_ROPE_LLAMA3) {
        json_object_set_new(r, "high_freq_factor", json_real(o->rope_high_freq));
        json_object_set_new(r, "low_freq_factor", json_real(o->rope_low_freq));
        json_object_set_new(r, "original_max_position_embeddings", json_integer(o->rope_orig_max));
    }
    json_object_set_new(r, "rope_type",
                        json_string(o->rope == SKV_MM_ROPE_LLAMA3 ? "llama3" : "linear"));
    return r;
}

/* Writes config.json in the Hugging Face form (keys sorted, as HF writes them). */
static skv_status_t skv_mm_config_write(const skv_mm_opts_t *o)
{
    int swiftkv = o->n_kv_layers > 0;
    json_t *c = json_object();
    json_t *arch = json_array();
    json_array_append_new(arch,
                          json_string(swiftkv ? "LlamaSwiftKVForCausalLM" : "LlamaForCausalLM"));
    json_object_set_new(c, "architectures", arch);
    json_object_set_new(c, "attention_bias", json_false());
    json_object_set_new(c, "attention_dropout", json_real(0.0));
    json_object_set_new(c, "bos_token_id", json_integer(o->bos_id));
    json_object_set_new(c, "eos_token_id", skv_mm_eos_json(o));
    json_object_set_new(c, "head_dim", json_integer(o->head_dim));
    json_object_set_new(c, "hidden_act", json_string("silu"));
    json_object_set_new(c, "hidden_size", json_integer(o->hidden));
    json_object_set_new(c, "initializer_range", json_real(o->init_std));
    json_object_set_new(c, "intermediate_size", json_integer(o->intermediate));
    if (swiftkv) {
        json_object_set_new(c, "key_value_group_size", json_integer(o->group));
    }
    json_object_set_new(c, "max_position_embeddings", json_integer(o->max_pos));
    json_object_set_new(c, "mlp_bias", json_false());
    json_object_set_new(c, "model_type", json_string(swiftkv ? "llama_swiftkv" : "llama"));
    json_object_set_new(c, "num_attention_heads", json_integer(o->n_heads));
    json_object_set_new(c, "num_hidden_layers", json_integer(o->n_layers));
    if (swiftkv) {
        json_object_set_new(c, "num_key_value_heads", json_integer(o->n_kv_heads));
        json_object_set_new(c, "num_key_value_layers", json_integer(o->n_kv_layers));
    } else {
        json_object_set_new(c, "num_key_value_heads", json_integer(o->n_kv_heads));
    }
    json_object_set_new(c, "pretraining_tp", json_integer(1));
    json_object_set_new(c, "rms_norm_eps", json_real(o->rms_eps));
    json_object_set_new(c, "rope_scaling", skv_mm_rope_scaling_json(o));
    json_object_set_new(c, "rope_theta", json_real(o->rope_theta));
    if (swiftkv) {
        json_object_set_new(c, "swiftkv", json_true());
    }
    json_object_set_new(c, "tie_word_embeddings", json_boolean(o->tie));
    json_object_set_new(c, "torch_dtype", json_string(skv_mm_dtype_torch_name(o->dtype)));
    json_object_set_new(c, "use_cache", json_true());
    json_object_set_new(c, "vocab_size", json_integer(o->vocab));
    skv_status_t status = skv_mm_json_write(o->out_dir, "config.json", c);
    json_decref(c);
    return status;
}

/* generation_config.json as Llama-3.1 ships it (sampling defaults 0.6 / 0.9). */
static skv_status_t skv_mm_generation_config_write(const skv_mm_opts_t *o)
{
    json_t *g = json_object();
    json_object_set_new(g, "bos_token_id", json_integer(o->bos_id));
    json_object_set_new(g, "do_sample", json_true());
    json_object_set_new(g, "eos_token_id", skv_mm_eos_json(o));
    json_object_set_new(g, "temperature", json_real(0.6));
    json_object_set_new(g, "top_p", json_real(0.9));
    skv_status_t status = skv_mm_json_write(o->out_dir, "generation_config.json", g);
    json_decref(g);
    return status;
}

/* ---------------------------------------------------------------------------------------- */
/* Tokenizer                                                                                */
/* ---------------------------------------------------------------------------------------- */

static skv_status_t skv_mm_copy_file(const char *src_dir, const char *dst_dir, const char *name)
{
    char src[SKV_MM_PATH_MAX], dst[SKV_MM_PATH_MAX], buf[1 << 16];
    skv_status_t status = SKV_STATUS_OK;
    snprintf(src, sizeof(src), "%s/%s", src_dir, name);
    snprintf(dst, sizeof(dst), "%s/%s", dst_dir, name);
    FILE *in = fopen(src, "rb");
    if (in == NULL) {
        SKV_LOG_ERROR("cannot read %s: %s", src, strerror(errno));
        return SKV_STATUS_NOT_FOUND;
    }
    FILE *out = fopen(dst, "wb");
    if (out == NULL) {
        SKV_LOG_ERROR("cannot create %s: %s", dst, strerror(errno));
        fclose(in);
        return SKV_STATUS_IO;
    }
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), in)) > 0) {
        if (fwrite(buf, 1, n, out) != n) {
            SKV_LOG_ERROR("write failed on %s: %s", dst, strerror(errno));
            status = SKV_STATUS_IO;
            break;
        }
    }
    fclose(in);
    if (fclose(out) != 0 && status == SKV_STATUS_OK) {
        status = SKV_STATUS_IO;
    }
    return status;
}

/* Id of an added (special) token by its text, or -1. */
static int64_t skv_mm_added_token_id(const json_t *tok, const char *content)
{
    const json_t *added = json_object_get(tok, "added_tokens");
    size_t i;
    const json_t *entry;
    json_array_foreach(added, i, entry)
    {
        const char *c = json_string_value(json_object_get(entry, "content"));
        if (c != NULL && strcmp(c, content) == 0) {
            return json_integer_value(json_object_get(entry, "id"));
        }
    }
    return -1;
}

/* Largest token id the tokenizer can produce, plus one. */
static int64_t skv_mm_tokenizer_size(const json_t *tok)
{
    int64_t max_id = -1;
    const json_t *vocab = json_object_get(json_object_get(tok, "model"), "vocab");
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)vocab, key, v)
    {
        max_id = json_integer_value(v) > max_id ? json_integer_value(v) : max_id;
    }
    size_t i;
    json_array_foreach(json_object_get(tok, "added_tokens"), i, v)
    {
        int64_t id = json_integer_value(json_object_get(v, "id"));
        max_id = id > max_id ? id : max_id;
    }
    return max_id + 1;
}

/* A special token's text from tokenizer_config.json (string or {"content": ...}). */
static const char *skv_mm_config_token(const json_t *cfg, const char *key)
{
    const json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) {
        v = json_object_get(v, "content");
    }
    return json_string_value(v);
}

/* Sets bos/eos ids from the tokenizer: eos = Llama-3.1's three stop tokens when present
 * (end_of_text, eom_id, eot_id, in that order) plus eos_token if not among them. */
static skv_status_t skv_mm_tokenizer_ids(const json_t *tok, const json_t *cfg, const char *dir,
                                         skv_mm_opts_t *o)
{
    static const char *const stops[] = {"<|end_of_text|>", "<|eom_id|>", "<|eot_id|>"};
    const char *bos = skv_mm_config_token(cfg, "bos_token");
    const char *eos = skv_mm_config_token(cfg, "eos_token");
    int64_t bos_id = bos ? skv_mm_added_token_id(tok, bos) : -1;
    int64_t eos_id = eos ? skv_mm_added_token_id(tok, eos) : -1;
    if (bos_id < 0 || eos_id < 0) {
        SKV_LOG_ERROR("%s: bos_token/eos_token missing or not an added token", dir);
        return SKV_STATUS_FORMAT;
    }
    o->bos_id = bos_id;
    o->n_eos = 0;
    for (int s = 0; s < 3; s++) {
        int64_t id = skv_mm_added_token_id(tok, stops[s]);
        if (id >= 0) {
            o->eos_ids[o->n_eos++] = id;
        }
    }
    int have = 0;
    for (int i = 0; i < o->n_eos; i++) {
        have |= o->eos_ids[i] == eos_id;
    }
    if (!have) {
        o->eos_ids[o->n_eos++] = eos_id;
    }
    return SKV_STATUS_OK;
}

/* Reads the tokenizer in dir, checks it fits the vocab, takes bos/eos ids, copies its files. */
static skv_status_t skv_mm_tokenizer_use(const char *dir, skv_mm_opts_t *o)
{
    skv_status_t status = SKV_STATUS_OK;
    json_t *tok = NULL, *cfg = NULL;
    char path[SKV_MM_PATH_MAX];
    snprintf(path, sizeof(path), "%s/tokenizer.json", dir);
    SKV_CHECK_GOTO(skv_json_load_file(path, &tok), done);
    snprintf(path, sizeof(path), "%s/tokenizer_config.json", dir);
    SKV_CHECK_GOTO(skv_json_load_file(path, &cfg), done);
    int64_t n_tok = skv_mm_tokenizer_size(tok);
    if (n_tok > o->vocab) {
        SKV_LOG_ERROR("tokenizer %s has %" PRId64 " tokens, more than --vocab %" PRId64, dir, n_tok,
                      o->vocab);
        status = SKV_STATUS_INVALID_ARGUMENT;
        goto done;
    }
    SKV_CHECK_GOTO(skv_mm_tokenizer_ids(tok, cfg, dir, o), done);
    SKV_CHECK_GOTO(skv_mm_copy_file(dir, o->out_dir, "tokenizer.json"), done);
    SKV_CHECK_GOTO(skv_mm_copy_file(dir, o->out_dir, "tokenizer_config.json"), done);
done:
    json_decref(cfg);
    json_decref(tok);
    return status;
}

/* Picks the tokenizer: --tokenizer DIR, else the tiny one from the source tree when the vocab
 * is 1024, else none. Without one, ids that do not fit the vocab become vocab-2 / vocab-1. */
static skv_status_t skv_mm_tokenizer_setup(skv_mm_opts_t *o)
{
    if (o->tokenizer_dir != NULL) {
        return skv_mm_tokenizer_use(o->tokenizer_dir, o);
    }
    if (o->vocab == 1024) {
        const char *src = getenv("SKV_SOURCE_DIR");
        char dir[SKV_MM_PATH_MAX];
        snprintf(dir, sizeof(dir), "%s/tools/data/tiny-tokenizer", src ? src : SKV_MM_SOURCE_DIR);
        if (access(dir, R_OK) == 0) {
            return skv_mm_tokenizer_use(dir, o);
        }
        SKV_LOG_WARN("tiny tokenizer not found at %s; writing no tokenizer", dir);
    }
    int fits = o->bos_id < o->vocab;
    for (int i = 0; i < o->n_eos; i++) {
        fits &= o->eos_ids[i] < o->vocab;
    }
    if (!fits) {
        o->bos_id = o->vocab - 2;
        o->n_eos = 1;
        o->eos_ids[0] = o->vocab - 1;
    }
    return SKV_STATUS_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Main                                                                                     */
/* ---------------------------------------------------------------------------------------- */

static skv_status_t skv_mm_run(skv_mm_opts_t *o)
{
    SKV_CHECK(skv_mm_mkdir_p(o->out_dir));
    SKV_CHECK(skv_mm_tokenizer_setup(o));
    SKV_CHECK(skv_mm_config_write(o));
    SKV_CHECK(skv_mm_generation_config_write(o));
    return skv_mm_weights_write(o);
}

int main(int argc, char **argv)
{
    skv_mm_opts_t opts;
    int parsed = skv_mm_opts_parse(argc, argv, &opts);
    if (parsed != SKV_CLI_OK) {
        return parsed == SKV_CLI_HELP ? 0 : 2;
    }
    skv_status_t status = skv_mm_run(&opts);
    if (status != SKV_STATUS_OK) {
        fprintf(stderr, "skv_make_model: failed: %s\n", skv_status_str(status));
        return 1;
    }
    return 0;
}
