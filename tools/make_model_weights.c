/*
 * make_model_weights.c: the weights of skv_make_model: tensor list, deterministic values,
 * safetensors files and the sharded index.
 *
 * Invariants: the same options give the same bytes on any machine. Every weight element is a
 * pure function of (seed, tensor name, element index) through a counter-based RNG
 * (splitmix64) and exact IEEE arithmetic only (no libm; the target builds with
 * -ffp-contract=off), so tensors are generated in chunks, in parallel, and streamed to disk;
 * no tensor is ever held whole in memory. SwiftKV tensors follow the documented init (docs
 * SWIFTKV.md: norm_swiftkv <- input_layernorm of layer Lk, q_proj_swiftkv <- q_proj,
 * k/v_proj_swiftkv <- mean of the group's k/v_proj) plus a deterministic perturbation that
 * stands in for distillation, so the SwiftKV path differs measurably from the base path.
 */
#include <dirent.h>
#include <errno.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "base/alloc.h"
#include "base/log.h"
#include "kernels/ops.h"
#include "tools/make_model.h"

#define SKV_MM_NAME_MAX 128
/* Elements generated per chunk: 4M elements = 16 MB of f32 output at most. */
#define SKV_MM_CHUNK_ELEMS ((int64_t)1 << 22)
/* Norm weights are 1 + NORM_NOISE * N(0,1): near identity but not exactly 1. */
#define SKV_MM_NORM_NOISE 0.1
/* SwiftKV perturbation ("distillation" stand-in): this fraction of init_std on projections,
 * NORM_NOISE on norm_swiftkv. Large enough that the SwiftKV path differs measurably. */
#define SKV_MM_SWIFTKV_NOISE 0.25

/* How a tensor's elements are made. DERIVED = mean of source tensors + noise (SwiftKV). */
typedef enum {
    SKV_MM_INIT_NORMAL = 0, /* std * N(0,1) */
    SKV_MM_INIT_NORM,       /* 1 + NORM_NOISE * N(0,1) */
    SKV_MM_INIT_DERIVED,
} skv_mm_init_t;

/* One tensor of the checkpoint, in file order. */
typedef struct {
    char name[SKV_MM_NAME_MAX];
    int64_t shape[2];
    int ndim;
    int64_t n_elems;
    skv_mm_init_t init;
    uint64_t key;           /* this tensor's RNG stream */
    double std;             /* NORMAL: std; DERIVED: noise std */
    skv_mm_init_t src_init; /* DERIVED: how the sources are made */
    double src_std;         /* DERIVED: sources' std */
    uint64_t *src_keys;     /* DERIVED: n_src source streams (owned) */
    int n_src;
    int shard;       /* index of the file it lives in */
    uint64_t offset; /* byte offset in that file's data section */
} skv_mm_tensor_t;

typedef struct {
    skv_mm_tensor_t *tensors; /* owned */
    int n_tensors;
    int cap;
    int n_shards;
} skv_mm_plan_t;

/* ---------------------------------------------------------------------------------------- */
/* Deterministic RNG and number formats                                                     */
/* ---------------------------------------------------------------------------------------- */

/* splitmix64 finalizer: a bijective 64-bit mix (Steele et al.). */
static uint64_t skv_mm_mix64(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* The counter-th output of the splitmix64 stream seeded with key. */
static uint64_t skv_mm_rand64(uint64_t key, uint64_t counter)
{
    return skv_mm_mix64(key + (counter + 1) * 0x9E3779B97F4A7C15ULL);
}

/* Approximately N(0,1): the Irwin-Hall sum of four 32-bit uniforms, standardized. Uses only
 * exact integer sums and one double multiply, so it is bit-identical on every machine (libm's
 * log/sin, as Box-Muller needs, may differ by an ulp between CPUs). Range is +-3.46. */
static double skv_mm_normal(uint64_t key, uint64_t idx)
{
    uint64_t a = skv_mm_rand64(key, 2 * idx);
    uint64_t b = skv_mm_rand64(key, 2 * idx + 1);
    uint64_t sum = (a & 0xFFFFFFFFULL) + (a >> 32) + (b & 0xFFFFFFFFULL) + (b >> 32);
    /* sum/2^32 has mean 2 and variance 4/12; sqrt(3) = 1/sqrt(4/12). */
    return ((double)sum * (1.0 / 4294967296.0) - 2.0) * 1.7320508075688772;
}

/* FNV-1a over a string: turns a tensor name into a stream id. */
static uint64_t skv_mm_hash_str(const char *s)
{
    uint64_t h = 0xCBF29CE484222325ULL;
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 0x100000001B3ULL;
    }
    return h;
}

static uint64_t skv_mm_tensor_key(uint64_t seed, const char *name)
{
    return skv_mm_mix64(seed ^ skv_mm_hash_str(name));
}

static size_t skv_mm_dtype_bytes(skv_mm_dtype_t dtype)
{
    return dtype == SKV_MM_DTYPE_F32 ? 4 : 2;
}

static const char *skv_mm_dtype_st_name(skv_mm_dtype_t dtype)
{
    static const char *const names[] = {"F32", "BF16", "F16"};
    return names[dtype];
}

const char *skv_mm_dtype_torch_name(skv_mm_dtype_t dtype)
{
    static const char *const names[] = {"float32", "bfloat16", "float16"};
    return names[dtype];
}

/* ---------------------------------------------------------------------------------------- */
/* Element values                                                                           */
/* ---------------------------------------------------------------------------------------- */

static double skv_mm_base_value(skv_mm_init_t init, uint64_t key, double std, uint64_t idx)
{
    if (init == SKV_MM_INIT_NORM) {
        return 1.0 + SKV_MM_NORM_NOISE * skv_mm_normal(key, idx);
    }
    return std * skv_mm_normal(key, idx);
}

/* The value of element idx of tensor t, in double before rounding to the stored dtype. */
static double skv_mm_value(const skv_mm_tensor_t *t, uint64_t idx)
{
    if (t->init != SKV_MM_INIT_DERIVED) {
        return skv_mm_base_value(t->init, t->key, t->std, idx);
    }
    double sum = 0.0;
    for (int s = 0; s < t->n_src; s++) {
        sum += skv_mm_base_value(t->src_init, t->src_keys[s], t->src_std, idx);
    }
    return sum / t->n_src + t->std * skv_mm_normal(t->key, idx);
}

/* Fills out[0..n) (stored dtype) with elements first..first+n of tensor t. */
static void skv_mm_fill(const skv_mm_tensor_t *t, skv_mm_dtype_t dtype, int64_t first, int64_t n,
                        uint8_t *out)
{
    for (int64_t i = 0; i < n; i++) {
        float v = (float)skv_mm_value(t, (uint64_t)(first + i));
        if (dtype == SKV_MM_DTYPE_F32) {
            memcpy(out + 4 * i, &v, 4);
        } else {
            uint16_t h = dtype == SKV_MM_DTYPE_BF16 ? skv_f32_to_bf16(v) : skv_f32_to_f16(v);
            out[2 * i] = (uint8_t)(h & 0xFF); /* little-endian, as safetensors requires */
            out[2 * i + 1] = (uint8_t)(h >> 8);
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Parallel chunk generation                                                                */
/* ---------------------------------------------------------------------------------------- */

typedef struct {
    const skv_mm_tensor_t *t;
    skv_mm_dtype_t dtype;
    int64_t first, n;
    uint8_t *out;
} skv_mm_job_t;

static void *skv_mm_job_run(void *arg)
{
    skv_mm_job_t *job = arg;
    skv_mm_fill(job->t, job->dtype, job->first, job->n, job->out);
    return NULL;
}

/* Generates n elements starting at first into out, split over n_threads threads. Output is
 * independent of the thread count (each element depends only on its index). */
static skv_status_t skv_mm_fill_parallel(const skv_mm_tensor_t *t, skv_mm_dtype_t dtype,
                                         int64_t first, int64_t n, int n_threads, uint8_t *out)
{
    skv_mm_job_t jobs[SKV_MM_MAX_THREADS];
    pthread_t tids[SKV_MM_MAX_THREADS];
    size_t esz = skv_mm_dtype_bytes(dtype);
    int n_jobs = n < 65536 ? 1 : n_threads;
    int64_t per = (n + n_jobs - 1) / n_jobs;
    int started = 0;
    for (int j = 0; j < n_jobs; j++) {
        int64_t lo = j * per, hi = lo + per < n ? lo + per : n;
        jobs[j] = (skv_mm_job_t){t, dtype, first + lo, hi > lo ? hi - lo : 0, out + lo * esz};
    }
    for (int j = 1; j < n_jobs; j++, started++) {
        if (pthread_create(&tids[j], NULL, skv_mm_job_run, &jobs[j]) != 0) {
            break; /* fall back: run the rest on this thread */
        }
    }
    skv_mm_job_run(&jobs[0]);
    for (int j = 1 + started; j < n_jobs; j++) {
        skv_mm_job_run(&jobs[j]);
    }
    for (int j = 1; j <= started; j++) {
        pthread_join(tids[j], NULL);
    }
    return SKV_STATUS_OK;
}
/* ---------------------------------------------------------------------------------------- */
/* Tensor plan                                                                              */
/* ---------------------------------------------------------------------------------------- */

static skv_status_t skv_mm_plan_add(skv_mm_plan_t *p, const skv_mm_opts_t *o, const char *name,
                                    int64_t rows, int64_t cols, skv_mm_init_t init,
                                    skv_mm_tensor_t **t_p)
{
    if (p->n_tensors == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        void *n = skv_realloc(p->tensors, (size_t)cap * sizeof(*p->tensors));
        if (n == NULL) {
            SKV_LOG_ERROR("out of memory planning %d tensors", cap);
            return SKV_STATUS_NO_MEMORY;
        }
        p->tensors = n;
        p->cap = cap;
    }
    skv_mm_tensor_t *t = &p->tensors[p->n_tensors++];
    memset(t, 0, sizeof(*t));
    snprintf(t->name, sizeof(t->name), "%s", name);
    t->ndim = cols > 0 ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->n_elems = rows * (cols > 0 ? cols : 1);
    t->init = init;
    t->key = skv_mm_tensor_key(o->seed, name);
    t->std = o->init_std;
    if (t_p != NULL) {
        *t_p = t;
    }
    return SKV_STATUS_OK;
}

/* Adds a SwiftKV tensor = mean of n_src tensors (names from fmt with layers first..) + noise. */
static skv_status_t skv_mm_plan_add_derived(skv_mm_plan_t *p, const skv_mm_opts_t *o,
                                            const char *name, int64_t rows, int64_t cols,
                                            const char *src_fmt, int64_t first, int n_src,
                                            skv_mm_init_t src_init)
{
    skv_mm_tensor_t *t = NULL;
    SKV_CHECK(skv_mm_plan_add(p, o, name, rows, cols, SKV_MM_INIT_DERIVED, &t));
    t->src_keys = skv_mallocn((size_t)n_src, sizeof(uint64_t));
    if (t->src_keys == NULL) {
        SKV_LOG_ERROR("out of memory for %d source keys of %s", n_src, name);
        return SKV_STATUS_NO_MEMORY;
    }
    char src[SKV_MM_NAME_MAX];
    for (int s = 0; s < n_src; s++) {
        snprintf(src, sizeof(src), src_fmt, first + s);
        t->src_keys[s] = skv_mm_tensor_key(o->seed, src);
    }
    t->n_src = n_src;
    t->src_init = src_init;
    t->src_std = o->init_std;
    t->std = src_init == SKV_MM_INIT_NORM ? SKV_MM_NORM_NOISE : SKV_MM_SWIFTKV_NOISE * o->init_std;
    return SKV_STATUS_OK;
}

/* The SwiftKV q/k/v of layer j (j >= Lk); k/v only on the first layer of its group. */
static skv_status_t skv_mm_plan_layer_swiftkv(skv_mm_plan_t *p, const skv_mm_opts_t *o, int64_t j)
{
    int64_t q_out = o->n_heads * o->head_dim, kv_out = o->n_kv_heads * o->head_dim;
    char name[SKV_MM_NAME_MAX];
    snprintf(name, sizeof(name), "model.layers.%" PRId64 ".self_attn.q_proj_swiftkv.weight", j);
    SKV_CHECK(skv_mm_plan_add_derived(p, o, name, q_out, o->hidden,
                                      "model.layers.%" PRId64 ".self_attn.q_proj.weight", j, 1,
                                      SKV_MM_INIT_NORMAL));
    if ((j - o->n_kv_layers) % o->group != 0) {
        return SKV_STATUS_OK;
    }
    static const char *const kv[] = {"k", "v"};
    for (int w = 0; w < 2; w++) {
        char src_fmt[SKV_MM_NAME_MAX];
        snprintf(name, sizeof(name), "model.layers.%" PRId64 ".self_attn.%s_proj_swiftkv.weight", j,
                 kv[w]);
        snprintf(src_fmt, sizeof(src_fmt), "model.layers.%%" PRId64 ".self_attn.%s_proj.weight",
                 kv[w]);
        SKV_CHECK(skv_mm_plan_add_derived(p, o, name, kv_out, o->hidden, src_fmt, j, (int)o->group,
                                          SKV_MM_INIT_NORMAL));
    }
    return SKV_STATUS_OK;
}

static skv_status_t skv_mm_plan_layer(skv_mm_plan_t *p, const skv_mm_opts_t *o, int64_t i)
{
    int64_t q_out = o->n_heads * o->head_dim, kv_out = o->n_kv_heads * o->head_dim;
    char name[SKV_MM_NAME_MAX];
#define SKV_MM_LAYER_TENSOR(suffix, rows, cols, init)                                              \
    do {                                                                                           \
        snprintf(name, sizeof(name), "model.layers.%" PRId64 ".%s", i, suffix);                    \
        SKV_CHECK(skv_mm_plan_add(p, o, name, rows, cols, init, NULL));                            \
    } while (0)
    SKV_MM_LAYER_TENSOR("input_layernorm.weight", o->hidden, 0, SKV_MM_INIT_NORM);
    SKV_MM_LAYER_TENSOR("self_attn.q_proj.weight", q_out, o->hidden, SKV_MM_INIT_NORMAL);
    SKV_MM_LAYER_TENSOR("self_attn.k_proj.weight", kv_out, o->hidden, SKV_MM_INIT_NORMAL);
    SKV_MM_LAYER_TENSOR("self_attn.v_proj.weight", kv_out, o->hidden, SKV_MM_INIT_NORMAL);
    SKV_MM_LAYER_TENSOR("self_attn.o_proj.weight", o->hidden, q_out, SKV_MM_INIT_NORMAL);
    if (o->n_kv_layers > 0 && i >= o->n_kv_layers) {
        SKV_CHECK(skv_mm_plan_layer_swiftkv(p, o, i));
    }
    SKV_MM_LAYER_TENSOR("post_attention_layernorm.weight", o->hidden, 0, SKV_MM_INIT_NORM);
    SKV_MM_LAYER_TENSOR("mlp.gate_proj.weight", o->intermediate, o->hidden, SKV_MM_INIT_NORMAL);
    SKV_MM_LAYER_TENSOR("mlp.up_proj.weight", o->intermediate, o->hidden, SKV_MM_INIT_NORMAL);
    SKV_MM_LAYER_TENSOR("mlp.down_proj.weight", o->hidden, o->intermediate, SKV_MM_INIT_NORMAL);
#undef SKV_MM_LAYER_TENSOR
    return SKV_STATUS_OK;
}

/* Assigns tensors to files (greedy, in order) and byte offsets within each file. */
static void skv_mm_plan_shard(skv_mm_plan_t *p, const skv_mm_opts_t *o)
{
    uint64_t limit = (uint64_t)o->shard_mb << 20;
    uint64_t off = 0;
    int shard = 0;
    for (int k = 0; k < p->n_tensors; k++) {
        skv_mm_tensor_t *t = &p->tensors[k];
        uint64_t bytes = (uint64_t)t->n_elems * skv_mm_dtype_bytes(o->dtype);
        if (limit > 0 && off > 0 && off + bytes > limit) {
            shard++;
            off = 0;
        }
        t->shard = shard;
        t->offset = off;
        off += (bytes + 7) & ~(uint64_t)7; /* keep every tensor 8-byte aligned */
    }
    p->n_shards = shard + 1;
}

static void skv_mm_plan_cleanup(skv_mm_plan_t *p)
{
    for (int k = 0; k < p->n_tensors; k++) {
        skv_free(p->tensors[k].src_keys);
    }
    skv_free(p->tensors);
    memset(p, 0, sizeof(*p));
}

/* Builds the full tensor list in checkpoint order. */
static skv_status_t skv_mm_plan_build(const skv_mm_opts_t *o, skv_mm_plan_t *p)
{
    skv_status_t status = SKV_STATUS_OK;
    memset(p, 0, sizeof(*p));
    SKV_CHECK_GOTO(skv_mm_plan_add(p, o, "model.embed_tokens.weight", o->vocab, o->hidden,
                                   SKV_MM_INIT_NORMAL, NULL),
                   fail);
    for (int64_t i = 0; i < o->n_layers; i++) {
        SKV_CHECK_GOTO(skv_mm_plan_layer(p, o, i), fail);
    }
    SKV_CHECK_GOTO(skv_mm_plan_add(p, o, "model.norm.weight", o->hidden, 0, SKV_MM_INIT_NORM, NULL),
                   fail);
    if (o->n_kv_layers > 0) {
        SKV_CHECK_GOTO(
            skv_mm_plan_add_derived(p, o, "model.norm_swiftkv.weight", o->hidden, 0,
                                    "model.layers.%" PRId64 ".input_layernorm.weight",
                                    o->n_kv_layers < o->n_layers ? o->n_kv_layers : o->n_layers - 1,
                                    1, SKV_MM_INIT_NORM),
            fail);
    }
    if (!o->tie) {
        SKV_CHECK_GOTO(
            skv_mm_plan_add(p, o, "lm_head.weight", o->vocab, o->hidden, SKV_MM_INIT_NORMAL, NULL),
            fail);
    }
    skv_mm_plan_shard(p, o);
    return SKV_STATUS_OK;
fail:
    skv_mm_plan_cleanup(p);
    return status;
}

/* ---------------------------------------------------------------------------------------- */
/* Files                                                                                    */
/* ---------------------------------------------------------------------------------------- */

/* Removes weight files of an earlier run in dir (a different shard count would leave stale
 * shards that a loader globbing *.safetensors would pick up), as HF's save_pretrained does. */
static skv_status_t skv_mm_remove_stale(const char *dir)
{
    DIR *d = opendir(dir);
    if (d == NULL) {
        SKV_LOG_ERROR("cannot list %s: %s", dir, strerror(errno));
        return SKV_STATUS_IO;
    }
    skv_status_t status = SKV_STATUS_OK;
    struct dirent *e;
    char path[SKV_MM_PATH_MAX];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, "model.safetensors") != 0 &&
            strcmp(e->d_name, "model.safetensors.index.json") != 0 &&
            fnmatch("model-*-of-*.safetensors", e->d_name, 0) != 0) {
            continue;
        }
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        if (unlink(path) != 0) {
            SKV_LOG_ERROR("cannot remove stale %s: %s", path, strerror(errno));
            status = SKV_STATUS_IO;
        }
    }
    closedir(d);
    return status;
}

static void skv_mm_shard_name(const skv_mm_plan_t *p, int shard, char *buf, size_t n)
{
    if (p->n_shards == 1) {
        snprintf(buf, n, "model.safetensors");
    } else {
        snprintf(buf, n, "model-%05d-of-%05d.safetensors", shard + 1, p->n_shards);
    }
}

/* Writes a JSON value to dir/name (2-space indent, insertion order). */
skv_status_t skv_mm_json_write(const char *dir, const char *name, const json_t *root)
{
    char path[SKV_MM_PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    if (json_dump_file(root, path,
                       JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15)) != 0) {
        SKV_LOG_ERROR("cannot write %s: %s", path, strerror(errno));
        return SKV_STATUS_IO;
    }
    FILE *f = fopen(path, "a"); /* trailing newline, as HF writes */
    if (f != NULL) {
        fputc('\n', f);
        fclose(f);
    }
    return SKV_STATUS_OK;
}

/* Builds the safetensors JSON header text of one shard (padded so data is 8-byte aligned). */
static skv_status_t skv_mm_header_build(const skv_mm_plan_t *p, const skv_mm_opts_t *o, int shard,
                                        char **text_p, uint64_t *len_p)
{
    size_t cap = 256 + (size_t)p->n_tensors * (SKV_MM_NAME_MAX + 128);
    char *buf = skv_malloc(cap);
    if (buf == NULL) {
        SKV_LOG_ERROR("out of memory for a %zu-byte header", cap);
        return SKV_STATUS_NO_MEMORY;
    }
    size_t len = (size_t)snprintf(buf, cap, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int k = 0; k < p->n_tensors; k++) {
        const skv_mm_tensor_t *t = &p->tensors[k];
        if (t->shard != shard) {
            continue;
        }
        uint64_t end = t->offset + (uint64_t)t->n_elems * skv_mm_dtype_bytes(o->dtype);
        len +=
            (size_t)snprintf(buf + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[%" PRId64,
                             t->name, skv_mm_dtype_st_name(o->dtype), t->shape[0]);
        if (t->ndim == 2) {
            len += (size_t)snprintf(buf + len, cap - len, ",%" PRId64, t->shape[1]);
        }
        len += (size_t)snprintf(buf + len, cap - len,
                                "],\"data_offsets\":[%" PRIu64 ",%" PRIu64 "]}", t->offset, end);
    }
    len += (size_t)snprintf(buf + len, cap - len, "}");
    while ((8 + len) % 8 != 0) { /* spaces are valid JSON padding (safetensors does this) */
        buf[len++] = ' ';
    }
    buf[len] = '\0';
    *text_p = buf;
    *len_p = len;
    return SKV_STATUS_OK;
}

/* Streams one tensor's bytes (plus alignment padding) to f in chunks. */
static skv_status_t skv_mm_tensor_write(const skv_mm_tensor_t *t, const skv_mm_opts_t *o,
                                        uint8_t *chunk, FILE *f, const char *path)
{
    size_t esz = skv_mm_dtype_bytes(o->dtype);
    for (int64_t first = 0; first < t->n_elems; first += SKV_MM_CHUNK_ELEMS) {
        int64_t n =
            t->n_elems - first < SKV_MM_CHUNK_ELEMS ? t->n_elems - first : SKV_MM_CHUNK_ELEMS;
        SKV_CHECK(skv_mm_fill_parallel(t, o->dtype, first, n, o->n_threads, chunk));
        if (fwrite(chunk, esz, (size_t)n, f) != (size_t)n) {
            SKV_LOG_ERROR("write failed on %s (%s): %s", path, t->name, strerror(errno));
            return SKV_STATUS_IO;
        }
    }
    static const uint8_t zeros[8];
    size_t pad = (8 - ((size_t)t->n_elems * esz) % 8) % 8;
    if (pad > 0 && fwrite(zeros, 1, pad, f) != pad) {
        SKV_LOG_ERROR("write failed on %s: %s", path, strerror(errno));
        return SKV_STATUS_IO;
    }
    return SKV_STATUS_OK;
}

/* Writes one safetensors file: 8-byte little-endian header length, header, tensor data. */
static skv_status_t skv_mm_shard_write(const skv_mm_plan_t *p, const skv_mm_opts_t *o, int shard,
                                       uint8_t *chunk)
{
    skv_status_t status = SKV_STATUS_OK;
    char name[64], path[SKV_MM_PATH_MAX];
    char *header = NULL;
    uint64_t hlen = 0;
    uint8_t lenbuf[8];
    skv_mm_shard_name(p, shard, name, sizeof(name));
    snprintf(path, sizeof(path), "%s/%s", o->out_dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        SKV_LOG_ERROR("cannot create %s: %s", path, strerror(errno));
        return SKV_STATUS_IO;
    }
    SKV_CHECK_GOTO(skv_mm_header_build(p, o, shard, &header, &hlen), done);
    for (int b = 0; b < 8; b++) {
        lenbuf[b] = (uint8_t)(hlen >> (8 * b));
    }
    if (fwrite(lenbuf, 1, 8, f) != 8 || fwrite(header, 1, hlen, f) != hlen) {
        SKV_LOG_ERROR("write failed on %s: %s", path, strerror(errno));
        status = SKV_STATUS_IO;
        goto done;
    }
    for (int k = 0; k < p->n_tensors; k++) {
        if (p->tensors[k].shard == shard) {
            SKV_CHECK_GOTO(skv_mm_tensor_write(&p->tensors[k], o, chunk, f, path), done);
        }
    }
done:
    skv_free(header);
    if (fclose(f) != 0 && status == SKV_STATUS_OK) {
        SKV_LOG_ERROR("close failed on %s: %s", path, strerror(errno));
        status = SKV_STATUS_IO;
    }
    return status;
}

/* Writes model.safetensors.index.json for a sharded checkpoint. */
static skv_status_t skv_mm_index_write(const skv_mm_plan_t *p, const skv_mm_opts_t *o)
{
    uint64_t total = 0;
    json_t *root = json_object(), *meta = json_object(), *map = json_object();
    char name[64];
    for (int k = 0; k < p->n_tensors; k++) {
        total += (uint64_t)p->tensors[k].n_elems * skv_mm_dtype_bytes(o->dtype);
        skv_mm_shard_name(p, p->tensors[k].shard, name, sizeof(name));
        json_object_set_new(map, p->tensors[k].name, json_string(name));
    }
    json_object_set_new(meta, "total_size", json_integer((json_int_t)total));
    json_object_set_new(root, "metadata", meta);
    json_object_set_new(root, "weight_map", map);
    skv_status_t status = skv_mm_json_write(o->out_dir, "model.safetensors.index.json", root);
    json_decref(root);
    return status;
}

skv_status_t skv_mm_weights_write(const skv_mm_opts_t *o)
{
    skv_status_t status = SKV_STATUS_OK;
    skv_mm_plan_t plan = {0};
    uint8_t *chunk = NULL;
    SKV_CHECK(skv_mm_remove_stale(o->out_dir));
    SKV_CHECK(skv_mm_plan_build(o, &plan));
    chunk = skv_malloc((size_t)SKV_MM_CHUNK_ELEMS * 4);
    if (chunk == NULL) {
        SKV_LOG_ERROR("out of memory for the %lld-element chunk buffer",
                      (long long)SKV_MM_CHUNK_ELEMS);
        status = SKV_STATUS_NO_MEMORY;
        goto done;
    }
    for (int s = 0; s < plan.n_shards; s++) {
        SKV_CHECK_GOTO(skv_mm_shard_write(&plan, o, s, chunk), done);
    }
    if (plan.n_shards > 1) {
        SKV_CHECK_GOTO(skv_mm_index_write(&plan, o), done);
    }
done:
    skv_free(chunk);
    skv_mm_plan_cleanup(&plan);
    return status;
}
