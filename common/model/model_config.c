/*
 * model_config.c: config.json / generation_config.json parsing and validation, and RoPE
 * frequencies (llama3 and linear scaling) computed exactly as the HF reference does.
 */
#include "common/model/model_config.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base/json.h"
#include "base/log.h"

/* Reads an int field into *out within [lo, hi]; absent -> def (or an error if def < lo). */
static skv_status_t skv_cfg_int(const json_t *o, const char *key, const char *what, int64_t def,
                                int64_t lo, int64_t hi, int32_t *out)
{
    int64_t v = def;
    skv_status_t status = skv_json_get_int(o, key, what, &v);
    if (status == SKV_STATUS_NOT_FOUND && def < lo) {
        SKV_LOG_ERROR("%s: required field '%s' is missing", what, key);
        return SKV_STATUS_FORMAT;
    }
    if (status != SKV_STATUS_OK && status != SKV_STATUS_NOT_FOUND) {
        return status;
    }
    if (v < lo || v > hi) {
        SKV_LOG_ERROR("%s: field '%s' = %lld is outside [%lld, %lld]", what, key, (long long)v,
                      (long long)lo, (long long)hi);
        return SKV_STATUS_FORMAT;
    }
    *out = (int32_t)v;
    return SKV_STATUS_OK;
}

/* Reads a number field; absent -> def. */
static skv_status_t skv_cfg_num(const json_t *o, const char *key, const char *what, double def,
                                double *out)
{
    double v = def;
    skv_status_t status = skv_json_get_double(o, key, what, &v);
    if (status != SKV_STATUS_OK && status != SKV_STATUS_NOT_FOUND) {
        return status;
    }
    *out = v;
    return SKV_STATUS_OK;
}

static skv_status_t skv_cfg_arch(const json_t *root, const char *what, skv_model_config_t *cfg)
{
    const char *mt = NULL;
    if (skv_json_get_str(root, "model_type", what, &mt) != SKV_STATUS_OK) {
        SKV_LOG_ERROR("%s: field 'model_type' is missing", what);
        return SKV_STATUS_FORMAT;
    }
    if (strcmp(mt, "llama") == 0) {
        cfg->swiftkv = 0;
    } else if (strcmp(mt, "llama_swiftkv") == 0) {
        cfg->swiftkv = 1;
    } else {
        SKV_LOG_ERROR("%s: model_type '%s' is not supported (llama, llama_swiftkv)", what, mt);
        return SKV_STATUS_UNSUPPORTED;
    }
    const char *act = "silu";
    int bias = 0;
    skv_json_get_str(root, "hidden_act", what, &act);
    if (strcmp(act, "silu") != 0) {
        SKV_LOG_ERROR("%s: hidden_act '%s' is not supported (silu)", what, act);
        return SKV_STATUS_UNSUPPORTED;
    }
    skv_json_get_bool(root, "attention_bias", what, &bias);
    int mlp_bias = 0;
    skv_json_get_bool(root, "mlp_bias", what, &mlp_bias);
    if (bias || mlp_bias) {
        SKV_LOG_ERROR("%s: attention_bias/mlp_bias = true is not supported", what);
        return SKV_STATUS_UNSUPPORTED;
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_cfg_shapes(const json_t *root, const char *what, skv_model_config_t *cfg)
{
    SKV_CHECK(skv_cfg_int(root, "vocab_size", what, -1, 1, 1 << 24, &cfg->vocab_size));
    SKV_CHECK(skv_cfg_int(root, "hidden_size", what, -1, 1, 1 << 20, &cfg->hidden_size));
    SKV_CHECK(skv_cfg_int(root, "intermediate_size", what, -1, 1, 1 << 22,
                          &cfg->intermediate_size));
    SKV_CHECK(skv_cfg_int(root, "num_hidden_layers", what, -1, 1, 4096, &cfg->n_layers));
    SKV_CHECK(skv_cfg_int(root, "num_attention_heads", what, -1, 1, 4096, &cfg->n_heads));
    SKV_CHECK(skv_cfg_int(root, "num_key_value_heads", what, cfg->n_heads, 1, 4096,
                          &cfg->n_kv_heads));
    int32_t def_hd = cfg->hidden_size / cfg->n_heads;
    SKV_CHECK(skv_cfg_int(root, "head_dim", what, def_hd, 2, 512, &cfg->head_dim));
    SKV_CHECK(skv_cfg_int(root, "max_position_embeddings", what, 2048, 1, 1 << 24, &cfg->max_pos));
    double eps = 1e-6;
    SKV_CHECK(skv_cfg_num(root, "rms_norm_eps", what, 1e-6, &eps));
    cfg->rms_eps = (float)eps;
    if (cfg->n_heads % cfg->n_kv_heads != 0 || cfg->head_dim % 2 != 0) {
        SKV_LOG_ERROR("%s: num_attention_heads %d must be a multiple of num_key_value_heads %d "
                      "and head_dim %d even",
                      what, cfg->n_heads, cfg->n_kv_heads, cfg->head_dim);
        return SKV_STATUS_FORMAT;
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_cfg_rope_type(const json_t *rs, const char *what, skv_model_config_t *cfg)
{
    const char *type = NULL;
    if (skv_json_get_str(rs, "rope_type", what, &type) != SKV_STATUS_OK &&
        skv_json_get_str(rs, "type", what, &type) != SKV_STATUS_OK) {
        SKV_LOG_ERROR("%s: rope_scaling has no 'rope_type'", what);
        return SKV_STATUS_FORMAT;
    }
    if (strcmp(type, "default") == 0) {
        cfg->rope_type = SKV_ROPE_DEFAULT;
    } else if (strcmp(type, "linear") == 0) {
        cfg->rope_type = SKV_ROPE_LINEAR;
    } else if (strcmp(type, "llama3") == 0) {
        cfg->rope_type = SKV_ROPE_LLAMA3;
    } else {
        SKV_LOG_ERROR("%s: rope_type '%s' is not supported (default, linear, llama3)", what, type);
        return SKV_STATUS_UNSUPPORTED;
    }
    return SKV_STATUS_OK;
}

/* rope_scaling (transformers 4.x) or rope_parameters (5.x) plus rope_theta. */
static skv_status_t skv_cfg_rope(const json_t *root, const char *what, skv_model_config_t *cfg)
{
    SKV_CHECK(skv_cfg_num(root, "rope_theta", what, 10000.0, &cfg->rope_theta));
    const json_t *rs = json_object_get(root, "rope_scaling");
    if (rs == NULL || json_is_null(rs)) {
        rs = json_object_get(root, "rope_parameters");
        if (json_is_object(rs)) {
            SKV_CHECK(skv_cfg_num(rs, "rope_theta", what, cfg->rope_theta, &cfg->rope_theta));
        }
    }
    cfg->rope_type = SKV_ROPE_DEFAULT;
    if (rs == NULL || json_is_null(rs)) {
        return SKV_STATUS_OK;
    }
    if (!json_is_object(rs)) {
        SKV_LOG_ERROR("%s: rope_scaling must be an object", what);
        return SKV_STATUS_FORMAT;
    }
    SKV_CHECK(skv_cfg_rope_type(rs, what, cfg));
    SKV_CHECK(skv_cfg_num(rs, "factor", what, 1.0, &cfg->rope_factor));
    SKV_CHECK(skv_cfg_num(rs, "low_freq_factor", what, 1.0, &cfg->rope_low_freq_factor));
    SKV_CHECK(skv_cfg_num(rs, "high_freq_factor", what, 4.0, &cfg->rope_high_freq_factor));
    SKV_CHECK(skv_cfg_int(rs, "original_max_position_embeddings", what, 8192, 1, 1 << 24,
                          &cfg->rope_orig_max_pos));
    if (cfg->rope_factor <= 0 || cfg->rope_high_freq_factor <= cfg->rope_low_freq_factor) {
        SKV_LOG_ERROR("%s: rope_scaling factors are invalid (factor %g, low %g, high %g)", what,
                      cfg->rope_factor, cfg->rope_low_freq_factor, cfg->rope_high_freq_factor);
        return SKV_STATUS_FORMAT;
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_cfg_swiftkv(const json_t *root, const char *what, skv_model_config_t *cfg)
{
    cfg->n_kv_layers = cfg->n_layers;
    cfg->kv_group = 1;
    if (!cfg->swiftkv) {
        return SKV_STATUS_OK;
    }
    SKV_CHECK(skv_cfg_int(root, "num_key_value_layers", what, -1, 1, cfg->n_layers,
                          &cfg->n_kv_layers));
    SKV_CHECK(skv_cfg_int(root, "key_value_group_size", what, 1, 1, cfg->n_layers,
                          &cfg->kv_group));
    if (cfg->n_kv_layers >= cfg->n_layers || (cfg->n_layers - cfg->n_kv_layers) % cfg->kv_group) {
        SKV_LOG_ERROR("%s: num_key_value_layers %d must be < num_hidden_layers %d and "
                      "(L - Lk) %% key_value_group_size %d == 0",
                      what, cfg->n_kv_layers, cfg->n_layers, cfg->kv_group);
        return SKV_STATUS_FORMAT;
    }
    return SKV_STATUS_OK;
}

/* eos_token_id: an int or a list of ints. */
static skv_status_t skv_cfg_eos(const json_t *root, const char *what, skv_model_config_t *cfg)
{
    const json_t *e = json_object_get(root, "eos_token_id");
    if (e == NULL || json_is_null(e)) {
        return SKV_STATUS_OK;
    }
    if (json_is_integer(e)) {
        cfg->eos_ids[0] = (int32_t)json_integer_value(e);
        cfg->n_eos = 1;
        return SKV_STATUS_OK;
    }
    if (!json_is_array(e) || json_array_size(e) > SKV_MAX_EOS_IDS) {
        SKV_LOG_ERROR("%s: eos_token_id must be an int or a list of at most %d ints", what,
                      SKV_MAX_EOS_IDS);
        return SKV_STATUS_FORMAT;
    }
    cfg->n_eos = 0;
    for (size_t i = 0; i < json_array_size(e); i++) {
        if (!json_is_integer(json_array_get(e, i))) {
            SKV_LOG_ERROR("%s: eos_token_id[%zu] is not an integer", what, i);
            return SKV_STATUS_FORMAT;
        }
        cfg->eos_ids[cfg->n_eos++] = (int32_t)json_integer_value(json_array_get(e, i));
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_cfg_parse(const json_t *root, const char *what, skv_model_config_t *cfg)
{
    if (!json_is_object(root)) {
        SKV_LOG_ERROR("%s: top level is not an object", what);
        return SKV_STATUS_FORMAT;
    }
    SKV_CHECK(skv_cfg_arch(root, what, cfg));
    SKV_CHECK(skv_cfg_shapes(root, what, cfg));
    SKV_CHECK(skv_cfg_rope(root, what, cfg));
    SKV_CHECK(skv_cfg_swiftkv(root, what, cfg));
    cfg->tie_embeddings = 0;
    skv_status_t status = skv_json_get_bool(root, "tie_word_embeddings", what,
                                            &cfg->tie_embeddings);
    if (status == SKV_STATUS_FORMAT) {
        return status;
    }
    SKV_CHECK(skv_cfg_int(root, "bos_token_id", what, -1, -1, cfg->vocab_size - 1, &cfg->bos_id));
    return skv_cfg_eos(root, what, cfg);
}

/* generation_config.json: optional; bad content is an error, absence is not. */
static skv_status_t skv_cfg_generation(const char *dir, skv_model_config_t *cfg)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/generation_config.json", dir);
    json_t *root = json_load_file(path, 0, NULL);
    if (root == NULL) {
        FILE *f = fopen(path, "r");
        if (f != NULL) {
            fclose(f);
            return skv_json_load_file(path, &root); /* re-parse to log the JSON error */
        }
        return SKV_STATUS_OK;
    }
    double t = 0.0, p = 0.0;
    int64_t k = -1;
    skv_status_t status = SKV_STATUS_OK;
    if (skv_json_get_double(root, "temperature", path, &t) == SKV_STATUS_FORMAT ||
        skv_json_get_double(root, "top_p", path, &p) == SKV_STATUS_FORMAT ||
        skv_json_get_int(root, "top_k", path, &k) == SKV_STATUS_FORMAT) {
        status = SKV_STATUS_FORMAT;
    }
    if (status == SKV_STATUS_OK && json_object_get(root, "eos_token_id") != NULL) {
        status = skv_cfg_eos(root, path, cfg);
    }
    cfg->gen_temperature = (float)t;
    cfg->gen_top_p = (float)p;
    cfg->gen_top_k = (int32_t)k;
    json_decref(root);
    return status;
}

skv_status_t skv_model_config_load(const char *dir, skv_model_config_t *cfg)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/config.json", dir);
    json_t *root = NULL;
    SKV_CHECK(skv_json_load_file(path, &root));
    skv_model_config_t c;
    memset(&c, 0, sizeof(c));
    c.bos_id = -1;
    skv_status_t status = skv_cfg_parse(root, path, &c);
    json_decref(root);
    if (status != SKV_STATUS_OK) {
        return status;
    }
    SKV_CHECK(skv_cfg_generation(dir, &c));
    *cfg = c;
    return SKV_STATUS_OK;
}

skv_status_t skv_model_config_preset(const char *name, skv_model_config_t *cfg)
{
    int tiny = strncmp(name, "tiny", 4) == 0;
    if (strcmp(name, "llama3-8b") != 0 && strcmp(name, "llama3-8b-swiftkv") != 0 &&
        strcmp(name, "tiny") != 0 && strcmp(name, "tiny-swiftkv") != 0) {
        SKV_LOG_ERROR("unknown model preset '%s' (llama3-8b, llama3-8b-swiftkv, tiny, "
                      "tiny-swiftkv)", name);
        return SKV_STATUS_NOT_FOUND;
    }
    memset(cfg, 0, sizeof(*cfg));
    cfg->vocab_size = tiny ? 1024 : 128256;
    cfg->hidden_size = tiny ? 512 : 4096;
    cfg->intermediate_size = tiny ? 1024 : 14336;
    cfg->n_layers = tiny ? 4 : 32;
    cfg->n_heads = tiny ? 8 : 32;
    cfg->n_kv_heads = tiny ? 2 : 8;
    cfg->head_dim = tiny ? 64 : 128;
    cfg->max_pos = tiny ? 4096 : 131072;
    cfg->rms_eps = 1e-5f;
    cfg->rope_theta = tiny ? 10000.0 : 500000.0;
    cfg->rope_type = tiny ? SKV_ROPE_DEFAULT : SKV_ROPE_LLAMA3;
    cfg->rope_factor = 8.0;
    cfg->rope_low_freq_factor = 1.0;
    cfg->rope_high_freq_factor = 4.0;
    cfg->rope_orig_max_pos = 8192;
    cfg->swiftkv = strstr(name, "swiftkv") != NULL;
    cfg->n_kv_layers = cfg->swiftkv ? cfg->n_layers / 2 : cfg->n_layers;
    cfg->kv_group = 1;
    cfg->bos_id = tiny ? 1 : 128000;
    cfg->eos_ids[0] = tiny ? 2 : 128001;
    cfg->n_eos = 1;
    return SKV_STATUS_OK;
}

void skv_model_config_inv_freq(const skv_model_config_t *cfg, float *inv_freq)
{
    int32_t half = cfg->head_dim / 2;
    for (int32_t i = 0; i < half; i++) {
        /* HF: 1 / theta^(2i/d) evaluated in f32; double then one rounding is within 1 ulp. */
        double f = 1.0 / pow(cfg->rope_theta, (double)(2 * i) / cfg->head_dim);
        if (cfg->rope_type == SKV_ROPE_LINEAR) {
            f /= cfg->rope_factor;
        } else if (cfg->rope_type == SKV_ROPE_LLAMA3) {
            double low_wavelen = cfg->rope_orig_max_pos / cfg->rope_low_freq_factor;
            double high_wavelen = cfg->rope_orig_max_pos / cfg->rope_high_freq_factor;
            double wavelen = 2.0 * M_PI / f;
            if (wavelen > low_wavelen) {
                f /= cfg->rope_factor;
            } else if (wavelen >= high_wavelen) {
                double smooth = (cfg->rope_orig_max_pos / wavelen - cfg->rope_low_freq_factor) /
                                (cfg->rope_high_freq_factor - cfg->rope_low_freq_factor);
                f = (1.0 - smooth) * f / cfg->rope_factor + smooth * f;
            }
        }
        inv_freq[i] = (float)f;
    }
}

int skv_model_config_is_eos(const skv_model_config_t *cfg, int32_t token)
{
    for (int32_t i = 0; i < cfg->n_eos; i++) {
        if (cfg->eos_ids[i] == token) {
            return 1;
        }
    }
    return 0;
}
