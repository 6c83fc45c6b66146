/*
 * cuda_profile.cu: an optional per-op GPU time breakdown (SKV_CUDA_PROFILE=1 in the
 * environment; SKV_CUDA_PROFILE=K > 1 drops what the first K - 1 syncs collected, i.e. startup
 * and warm-up steps, which include lazy module loading). It wraps the ops table: each op is bracketed by two events on the stream;
 * sync collects the elapsed times, and destroy prints the table to stderr. The times are
 * device time between the events, so idle gaps while the GPU waits for the host (launch-bound
 * steps) show up in the op that follows them. Development only: costs two event records per
 * op, never on in production.
 */
#include <stdio.h>
#include <string.h>

#include "kernels/cuda/cuda_internal.h"

#define SKV_PROF_SLOTS 8192 /* ops between two syncs before an early collect */
#define SKV_PROF_KEYS 32

typedef struct {
    const skv_ops_t *real;
    cudaEvent_t ev[2 * SKV_PROF_SLOTS];
    int key[SKV_PROF_SLOTS];
    int n;
    char names[SKV_PROF_KEYS][48];
    double ms[SKV_PROF_KEYS];
    long calls[SKV_PROF_KEYS];
    int n_keys;
    long syncs, skip_syncs;
} skv_prof_t;

static skv_prof_t *g_prof; /* one profiled backend per process (dev tool) */

static int skv_prof_key(const char *name)
{
    for (int i = 0; i < g_prof->n_keys; i++) {
        if (strcmp(g_prof->names[i], name) == 0) {
            return i;
        }
    }
    if (g_prof->n_keys == SKV_PROF_KEYS) {
        return SKV_PROF_KEYS - 1;
    }
    snprintf(g_prof->names[g_prof->n_keys], sizeof(g_prof->names[0]), "%s", name);
    return g_prof->n_keys++;
}

static void skv_prof_collect(skv_backend_t *be)
{
    cudaStreamSynchronize(skv_cuda(be)->stream);
    for (int i = 0; i < g_prof->n; i++) {
        float ms = 0;
        cudaEventElapsedTime(&ms, g_prof->ev[2 * i], g_prof->ev[2 * i + 1]);
        g_prof->ms[g_prof->key[i]] += ms;
        g_prof->calls[g_prof->key[i]]++;
    }
    g_prof->n = 0;
}

static void skv_prof_begin(skv_backend_t *be, const char *name)
{
    if (g_prof->n == SKV_PROF_SLOTS) {
        skv_prof_collect(be);
    }
    g_prof->key[g_prof->n] = skv_prof_key(name);
    cudaEventRecord(g_prof->ev[2 * g_prof->n], skv_cuda(be)->stream);
}

static void skv_prof_end(skv_backend_t *be)
{
    cudaEventRecord(g_prof->ev[2 * g_prof->n + 1], skv_cuda(be)->stream);
    g_prof->n++;
}

#define SKV_PROF_WRAP(NAME, CALL)        \
    do {                                 \
        skv_prof_begin(be, NAME);        \
        skv_status_t st_ = (CALL);       \
        skv_prof_end(be);                \
        return st_;                      \
    } while (0)

static skv_status_t p_sync(skv_backend_t *be)
{
    skv_status_t st = g_prof->real->sync(be);
    skv_prof_collect(be);
    if (++g_prof->syncs < g_prof->skip_syncs) {
        memset(g_prof->ms, 0, sizeof(g_prof->ms));
        memset(g_prof->calls, 0, sizeof(g_prof->calls));
    }
    return st;
}
static skv_status_t p_embed(skv_backend_t *be, const skv_tensor_t *o, const skv_tensor_t *t,
                            const skv_tensor_t *k)
{
    SKV_PROF_WRAP("embed", g_prof->real->embed(be, o, t, k));
}
static skv_status_t p_rmsnorm(skv_backend_t *be, const skv_tensor_t *o, const skv_tensor_t *x,
                              const skv_tensor_t *w, float eps)
{
    SKV_PROF_WRAP("rmsnorm", g_prof->real->rmsnorm(be, o, x, w, eps));
}
static skv_status_t p_add_rmsnorm(skv_backend_t *be, const skv_tensor_t *x, const skv_tensor_t *d,
                                  const skv_tensor_t *o, const skv_tensor_t *w, float eps)
{
    SKV_PROF_WRAP("add_rmsnorm", g_prof->real->add_rmsnorm(be, x, d, o, w, eps));
}
static skv_status_t p_matmul(skv_backend_t *be, const skv_tensor_t *o, const skv_tensor_t *x,
                             const skv_tensor_t *w)
{
    char name[48];
    snprintf(name, sizeof(name), "matmul [%s] x %lldx%lld", x->rows > 64 ? "N>64" : "N<=64",
             (long long)w->rows, (long long)w->cols);
    SKV_PROF_WRAP(name, g_prof->real->matmul(be, o, x, w));
}
static skv_status_t p_rope(skv_backend_t *be, const skv_tensor_t *x, int32_t nh, int32_t hd,
                           const skv_tensor_t *pos, const skv_tensor_t *f)
{
    SKV_PROF_WRAP("rope", g_prof->real->rope(be, x, nh, hd, pos, f));
}
static skv_status_t p_kv_write(skv_backend_t *be, const skv_kv_view_t *kv, int32_t l,
                               const skv_tensor_t *k, const skv_tensor_t *v,
                               const skv_attn_meta_t *m)
{
    SKV_PROF_WRAP("kv_write", g_prof->real->kv_write(be, kv, l, k, v, m));
}
static skv_status_t p_swiftkv_kv_write(skv_backend_t *be, const skv_kv_view_t *kv, int32_t f,
                                       int32_t n, const skv_tensor_t *kvs,
                                       const skv_attn_meta_t *m, const skv_tensor_t *inv)
{
    SKV_PROF_WRAP("swiftkv_kv_write", g_prof->real->swiftkv_kv_write(be, kv, f, n, kvs, m, inv));
}
static skv_status_t p_attention(skv_backend_t *be, const skv_tensor_t *o, const skv_tensor_t *q,
                                const skv_kv_view_t *kv, int32_t l, int32_t nh, float scale,
                                const skv_attn_meta_t *m)
{
    SKV_PROF_WRAP(m->n_rows > m->n_seqs * 16 ? "attention (prefill)" : "attention (rows)",
                  g_prof->real->attention(be, o, q, kv, l, nh, scale, m));
}
static skv_status_t p_swiglu(skv_backend_t *be, const skv_tensor_t *o, const skv_tensor_t *g)
{
    SKV_PROF_WRAP("swiglu", g_prof->real->swiglu(be, o, g));
}
static skv_status_t p_gather_rows(skv_backend_t *be, const skv_tensor_t *o, const skv_tensor_t *x,
                                  const skv_tensor_t *i)
{
    SKV_PROF_WRAP("gather_rows", g_prof->real->gather_rows(be, o, x, i));
}
static skv_status_t p_matmul_swiglu(skv_backend_t *be, const skv_tensor_t *o,
                                    const skv_tensor_t *x, const skv_tensor_t *w)
{
    char name[48];
    snprintf(name, sizeof(name), "matmul_swiglu [%s] x %lldx%lld", x->rows > 64 ? "N>64" : "N<=64",
             (long long)w->rows, (long long)w->cols);
    SKV_PROF_WRAP(name, g_prof->real->matmul_swiglu(be, o, x, w));
}
static skv_status_t p_rope_kv_write(skv_backend_t *be, const skv_tensor_t *qk, int32_t nh,
                                    const skv_tensor_t *v, const skv_kv_view_t *kv, int32_t l,
                                    const skv_tensor_t *pos, const skv_tensor_t *f,
                                    const skv_attn_meta_t *m)
{
    SKV_PROF_WRAP("rope_kv_write", g_prof->real->rope_kv_write(be, qk, nh, v, kv, l, pos, f, m));
}

static void p_destroy(skv_backend_t *be)
{
    skv_prof_collect(be);
    double total = 0;
    for (int i = 0; i < g_prof->n_keys; i++) {
        total += g_prof->ms[i];
    }
    fprintf(stderr, "cuda op profile (device ms between events; first %ld syncs dropped):\n",
            g_prof->skip_syncs > 0 ? g_prof->skip_syncs - 1 : 0);
    for (int i = 0; i < g_prof->n_keys; i++) {
        if (g_prof->calls[i] == 0) {
            continue;
        }
        fprintf(stderr, "  %-34s %6ld calls %9.2f ms %8.3f ms/call %5.1f%%\n", g_prof->names[i],
                g_prof->calls[i], g_prof->ms[i], g_prof->ms[i] / g_prof->calls[i],
                100.0 * g_prof->ms[i] / (total > 0 ? total : 1));
    }
    for (int i = 0; i < 2 * SKV_PROF_SLOTS; i++) {
        cudaEventDestroy(g_prof->ev[i]);
    }
    const skv_ops_t *real = g_prof->real;
    delete g_prof;
    g_prof = NULL;
    real->destroy(be);
}

/* Replaces *ops with a profiling wrapper when SKV_CUDA_PROFILE is set; the wrapper table is
 * static, so only one backend per process can be profiled. */
void skv_cuda_profile_maybe_wrap(const skv_ops_t **ops)
{
    static skv_ops_t wrapped;
    const char *env = getenv("SKV_CUDA_PROFILE");
    if (env == NULL || env[0] == '0' || g_prof != NULL) {
        return;
    }
    g_prof = new skv_prof_t();
    g_prof->real = *ops;
    g_prof->skip_syncs = atol(env);
    for (int i = 0; i < 2 * SKV_PROF_SLOTS; i++) {
        cudaEventCreate(&g_prof->ev[i]);
    }
    wrapped = **ops;
    wrapped.destroy = p_destroy;
    wrapped.sync = p_sync;
    wrapped.embed = p_embed;
    wrapped.rmsnorm = p_rmsnorm;
    wrapped.add_rmsnorm = p_add_rmsnorm;
    wrapped.matmul = p_matmul;
    wrapped.rope = p_rope;
    wrapped.kv_write = p_kv_write;
    wrapped.swiftkv_kv_write = p_swiftkv_kv_write;
    wrapped.attention = p_attention;
    wrapped.swiglu = p_swiglu;
    wrapped.gather_rows = p_gather_rows;
    wrapped.matmul_swiglu = p_matmul_swiglu;
    wrapped.rope_kv_write = p_rope_kv_write;
    wrapped.graph_launch = NULL; /* replays would bypass the wrappers: profile eagerly */
    wrapped.graph_capture_begin = NULL;
    wrapped.graph_capture_end = NULL;
    *ops = &wrapped;
}
