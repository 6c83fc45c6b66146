/*
 * attn_bench: the attention op alone on any backend, over a paged KV pool shaped like the
 * engine's (every cache layer in one block), for prefill (B sequences of P new rows from
 * position 0, causal) and decode (B rows at context C).
 *
 *   attn_bench [flags]   (`attn_bench --help` lists them with their defaults and
 *                         SKV_ATTN_BENCH_* variables: one table, base/cli.h)
 *
 * Prints ms per call (median of reps after a warm-up), attention TFLOP/s for prefill (causal:
 * 4 * hd * heads * sum over rows of the keys attended) and KV GB/s for decode (each row's
 * K and V bytes read once). --shuffle gives each sequence randomly placed blocks (a pool
 * after churn) instead of consecutive ones. Pool values come from the backend's weight_fill
 * when the pool has the weight dtype; otherwise (e.g. --kv-dtype fp8, which the backend must
 * take: kernels/ops.h kv_dtypes) the pool stays zeroed, which costs the kernels the same.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"
#include "kernels/backend.h"
#include "base/clock.h"
#include "base/log.h"
#include "kernels/ops.h"

typedef struct {
    const char *backend, *kv_dtype;
    int heads, kv_heads, hd, bs, layers, seqs, prompt, ctx, reps, shuffle;
} skv_ab_args_t;

#define SKV_AB_I(name, env, field, lo, hi, help)                                                   \
    {name, env, SKV_CLI_INT, &a->field, lo, hi, 0, 0, help}

/* Parses the environment and argv into a; SKV_CLI_OK, SKV_CLI_HELP or SKV_CLI_USAGE
 * (reported). */
static int skv_ab_parse(int argc, char **argv, skv_ab_args_t *a)
{
    *a = (skv_ab_args_t){"cuda", "auto", 32, 8, 128, 16, 32, 8, 2048, 2048, 10, 0};
    char backends[128];
    snprintf(backends, sizeof(backends), "compute backend: %s", skv_backend_names());
    const skv_cli_opt_t opts[] = {
        {"backend", "SKV_ATTN_BENCH_BACKEND", SKV_CLI_STRING, &a->backend, 0, 0, 0, 0, backends},
        SKV_AB_I("heads", "SKV_ATTN_BENCH_HEADS", heads, 1, 4096, "query heads"),
        SKV_AB_I("kv-heads", "SKV_ATTN_BENCH_KV_HEADS", kv_heads, 1, 4096,
                 "K/V heads (dividing --heads)"),
        SKV_AB_I("head-dim", "SKV_ATTN_BENCH_HEAD_DIM", hd, 1, 4096, "head dimension"),
        SKV_AB_I("block-size", "SKV_ATTN_BENCH_BLOCK_SIZE", bs, 1, 4096, "tokens per KV block"),
        SKV_AB_I("layers", "SKV_ATTN_BENCH_LAYERS", layers, 1, 4096,
                 "cache layers in each block (the op reads the middle one)"),
        SKV_AB_I("seqs", "SKV_ATTN_BENCH_SEQS", seqs, 1, 65536, "sequences per call"),
        SKV_AB_I("prompt-len", "SKV_ATTN_BENCH_PROMPT_LEN", prompt, 0, 1 << 24,
                 "prefill: new rows per sequence from position 0 (0: no prefill case)"),
        SKV_AB_I("context", "SKV_ATTN_BENCH_CONTEXT", ctx, 0, 1 << 24,
                 "decode: context of each sequence's one row (0: no decode case)"),
        SKV_AB_I("reps", "SKV_ATTN_BENCH_REPS", reps, 1, 1 << 20,
                 "timed calls per case (the median is printed)"),
        {"shuffle", "SKV_ATTN_BENCH_SHUFFLE", SKV_CLI_SWITCH, &a->shuffle, 0, 1, 0, 0,
         "randomly placed blocks (a pool after churn) instead of consecutive ones"},
        {"kv-dtype", "SKV_ATTN_BENCH_KV_DTYPE", SKV_CLI_STRING, &a->kv_dtype, 0, 0, 0, 0,
         "KV pool dtype: auto (the backend's), fp8 (E4M3), or a dtype's name"},
    };
    int st = skv_cli_parse("attn_bench",
                           "The attention op alone over an engine-shaped paged KV pool: prefill "
                           "TFLOP/s and decode KV GB/s.",
                           opts, sizeof(opts) / sizeof(opts[0]), argc, argv, NULL);
    if (st == SKV_CLI_OK && a->heads % a->kv_heads != 0) {
        fprintf(stderr, "attn_bench: --heads %d is not a multiple of --kv-heads %d\n", a->heads,
                a->kv_heads);
        return SKV_CLI_USAGE;
    }
    return st;
}

/* Uploads n i32 values into fresh backend memory; *t_p is a [1, n] view. */
static skv_status_t skv_ab_ints(skv_backend_t *be, const int32_t *v, int64_t n, skv_tensor_t *t_p)
{
    void *p = NULL;
    SKV_CHECK(be->ops->alloc(be, (size_t)n * 4, &p));
    *t_p = skv_tensor_make(p, SKV_DTYPE_I32, 1, n);
    return be->ops->copy_h2d(be, p, v, (size_t)n * 4);
}

static int skv_ab_cmp(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return a < b ? -1 : a > b;
}

/* Runs one case: n_new rows per sequence ending at context ctx; prints one line. */
static skv_status_t skv_ab_case(skv_backend_t *be, const skv_ab_args_t *a, const skv_kv_view_t *kv,
                                int32_t n_new, int32_t ctx, const char *what)
{
    int32_t nb_seq = (ctx + a->bs - 1) / a->bs, R = a->seqs * n_new;
    int32_t *sr = malloc(sizeof(int32_t) * (size_t)(a->seqs + 1));
    int32_t *rp = malloc(sizeof(int32_t) * (size_t)R), *rs = malloc(sizeof(int32_t) * (size_t)R);
    int32_t *bt = malloc(sizeof(int32_t) * (size_t)a->seqs * nb_seq);
    for (int64_t i = 0; i < (int64_t)a->seqs * nb_seq; i++) {
        bt[i] = (int32_t)i;
    }
    for (int64_t i = (int64_t)a->seqs * nb_seq - 1; a->shuffle && i > 0; i--) {
        int64_t j = (int64_t)(((uint64_t)i * 2654435761u + 12345) % (uint64_t)(i + 1));
        int32_t t = bt[i];
        bt[i] = bt[j];
        bt[j] = t;
    }
    double flop = 0, bytes = 0;
    for (int32_t s = 0, r = 0; s < a->seqs; s++) {
        sr[s] = r;
        for (int32_t i = 0; i < n_new; i++, r++) {
            rp[r] = ctx - n_new + i;
            rs[r] = bt[s * nb_seq + rp[r] / a->bs] * a->bs + rp[r] % a->bs;
            flop += 4.0 * a->hd * a->heads * (rp[r] + 1);
        }
        bytes += 2.0 * ctx * a->kv_heads * a->hd * skv_dtype_size(kv->dtype);
    }
    sr[a->seqs] = R;
    skv_attn_meta_t m = {a->seqs, R, nb_seq, ctx, {0}, {0}, {0}, {0}, sr, rp};
    skv_tensor_t q, o;
    void *pq = NULL, *po = NULL;
    skv_status_t status = SKV_STATUS_OK;
    double *ms = NULL;
    SKV_CHECK_GOTO(skv_ab_ints(be, sr, a->seqs + 1, &m.seq_rows), done);
    SKV_CHECK_GOTO(skv_ab_ints(be, rp, R, &m.row_pos), done);
    SKV_CHECK_GOTO(skv_ab_ints(be, rs, R, &m.row_slot), done);
    SKV_CHECK_GOTO(skv_ab_ints(be, bt, (int64_t)a->seqs * nb_seq, &m.block_table), done);
    m.block_table.rows = a->seqs;
    m.block_table.cols = m.block_table.ld = nb_seq;
    size_t qbytes = (size_t)R * a->heads * a->hd * skv_dtype_size(be->ops->act_dtype);
    SKV_CHECK_GOTO(be->ops->alloc(be, qbytes, &pq), done);
    SKV_CHECK_GOTO(be->ops->alloc(be, qbytes, &po), done);
    q = skv_tensor_make(pq, be->ops->act_dtype, R, (int64_t)a->heads * a->hd);
    o = skv_tensor_make(po, be->ops->act_dtype, R, (int64_t)a->heads * a->hd);
    if (be->ops->weight_fill) {
        SKV_CHECK_GOTO(be->ops->weight_fill(be, &q, 7, 1.0f / 128, 0.0f), done);
    }
    float scale = 1.0f / 11.3137f;
    ms = malloc(sizeof(double) * (size_t)a->reps);
    for (int32_t it = -2; it < a->reps; it++) {
        SKV_CHECK_GOTO(be->ops->sync(be), done);
        int64_t t0 = skv_clock_now_ns();
        SKV_CHECK_GOTO(be->ops->attention(be, &o, &q, kv, a->layers / 2, a->heads, scale, &m),
                       done);
        SKV_CHECK_GOTO(be->ops->sync(be), done);
        if (it >= 0) {
            ms[it] = (double)(skv_clock_now_ns() - t0) / 1e6;
        }
    }
    qsort(ms, (size_t)a->reps, sizeof(double), skv_ab_cmp);
    double med = ms[a->reps / 2];
    printf("%-8s B %3d rows/seq %5d ctx %5d hd %3d heads %d/%d bs %3d layers %2d kv %s%s: "
           "%8.3f ms  %7.1f TFLOP/s  %7.1f GB/s KV\n",
           what, a->seqs, n_new, ctx, a->hd, a->heads, a->kv_heads, a->bs, a->layers,
           skv_dtype_name(kv->dtype), a->shuffle ? " shuffled" : "", med, flop / med / 1e9,
           bytes / med / 1e6);
done:
    free(ms);
    be->ops->free(be, pq);
    be->ops->free(be, po);
    be->ops->free(be, m.seq_rows.data);
    be->ops->free(be, m.row_pos.data);
    be->ops->free(be, m.row_slot.data);
    be->ops->free(be, m.block_table.data);
    free(sr), free(rp), free(rs), free(bt);
    return status;
}

int main(int argc, char **argv)
{
    skv_ab_args_t a;
    int parsed = skv_ab_parse(argc, argv, &a);
    if (parsed != SKV_CLI_OK) {
        return parsed == SKV_CLI_HELP ? 0 : 2;
    }
    skv_backend_t *be = NULL;
    skv_dtype_t kvd;
    if (skv_backend_create(a.backend, 0, 0, &be) != SKV_STATUS_OK) {
        return 1;
    }
    if (skv_kv_dtype_resolve(be->ops, a.kv_dtype, &kvd) != SKV_STATUS_OK) {
        be->ops->destroy(be);
        return 1;
    }
    int32_t max_ctx = a.prompt > a.ctx ? a.prompt : a.ctx;
    int64_t n_blocks = (int64_t)a.seqs * ((max_ctx + a.bs - 1) / a.bs);
    int64_t vecs = n_blocks * a.layers * 2 * a.kv_heads * a.bs;
    void *pool = NULL;
    skv_status_t st = be->ops->alloc(be, (size_t)vecs * a.hd * skv_dtype_size(kvd), &pool);
    if (st == SKV_STATUS_OK && be->ops->weight_fill && kvd == be->ops->weight_dtype) {
        skv_tensor_t pt = skv_tensor_make(pool, kvd, vecs, a.hd);
        st = be->ops->weight_fill(be, &pt, 3, 1.0f / 128, 0.0f);
    }
    skv_kv_view_t kv = {pool, kvd, a.bs, a.kv_heads, a.hd, a.layers, n_blocks};
    if (st == SKV_STATUS_OK && a.prompt > 0) {
        st = skv_ab_case(be, &a, &kv, a.prompt, a.prompt, "prefill");
    }
    if (st == SKV_STATUS_OK && a.ctx > 0) {
        st = skv_ab_case(be, &a, &kv, 1, a.ctx, "decode");
    }
    be->ops->free(be, pool);
    be->ops->destroy(be);
    return st == SKV_STATUS_OK ? 0 : 1;
}
