/*
 * test_kv_fp8.c: the fp8 E4M3 KV cache (SKV_DTYPE_F8E4M3) on the CPU backend, which is the
 * reference the other backends' fp8 KV ops are checked against, and the dtype's host
 * conversions:
 *   - conversions: every finite code decodes and encodes back to itself, encoding is monotonic
 *     and odd, values beyond 448 saturate, NaN stays NaN; with --f8-ref FILE (written by
 *     f8e4m3_ref.py from the ml_dtypes package) every decode and every listed encoding equal
 *     the independent reference;
 *   - kv_write, swiftkv_kv_write (the SwiftKV epilogue) and attention on an fp8 pool equal the
 *     same ops on an f32 pool whose K/V were rounded through fp8 first, over a table of shapes
 *     (prefill from position 0, chunked prefill, decode at long contexts, several sequences,
 *     GQA groups 1/2/4, head_dim 16/64/128, block sizes 1/5/16, shuffled block tables; K/V
 *     spanning subnormals to beyond the finite range), in both CPU modes;
 *   - the ops refuse a pool of a dtype outside kv_dtypes (UNSUPPORTED, memory untouched);
 *   - skv_kv_dtype_resolve's names, and the ops table's kv_dtypes.
 * usage: test_kv_fp8 [--f8-ref FILE]
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "kernels/cpu/cpu.h"
#include "tests/common/skv_test.h"

/* ---- conversions ------------------------------------------------------------------------ */

static uint32_t skv_bits(float f)
{
    uint32_t b;
    memcpy(&b, &f, 4);
    return b;
}

/* Properties that need no reference: exact round trips, order, symmetry, saturation, NaN. */
static void skv_check_conversion_properties(void)
{
    int bad = 0;
    for (int c = 0; c < 256; c++) {
        float f = skv_f8e4m3_to_f32((uint8_t)c);
        int nan_code = (c & 0x7f) == 0x7f;
        if (nan_code != (isnan(f) != 0) || (nan_code && (signbit(f) != 0) != (c >= 0x80))) {
            bad++;
        } else if (!nan_code && skv_f32_to_f8e4m3(f) != c) {
            bad++;
        }
    }
    SKV_EXPECT(bad == 0, "%d codes do not decode and encode back to themselves", bad);
    float prev = skv_f8e4m3_to_f32(0);
    for (int c = 1; c < 0x7f; c++) { /* positive codes in order are increasing values */
        float f = skv_f8e4m3_to_f32((uint8_t)c);
        SKV_EXPECT(f > prev, "code 0x%02x (%g) is not above the previous one (%g)", c, f, prev);
        prev = f;
    }
    SKV_EXPECT(prev == 448.0f, "the largest finite code decodes to %g, not 448", prev);
    const float big[] = {448.0f, 449.0f, 464.0f, 480.0f, 1e6f, 3.0e38f, INFINITY};
    for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++) {
        SKV_EXPECT(skv_f32_to_f8e4m3(big[i]) == 0x7e && skv_f32_to_f8e4m3(-big[i]) == 0xfe,
                   "%g saturates to +-448 (0x%02x, 0x%02x)", big[i], skv_f32_to_f8e4m3(big[i]),
                   skv_f32_to_f8e4m3(-big[i]));
    }
    SKV_EXPECT(skv_f32_to_f8e4m3(NAN) == 0x7f && skv_f32_to_f8e4m3(-NAN) == 0xff,
               "NaN encodes to the NaN code of its sign");
    SKV_EXPECT(skv_f32_to_f8e4m3(-0.0f) == 0x80 && skv_f32_to_f8e4m3(0.0f) == 0x00, "signed zeros");
    /* Monotonic and odd over a sweep of every 97th f32 bit pattern below 2^9. */
    uint8_t last = 0;
    int mono = 0, odd = 0;
    for (uint32_t b = 0; b <= 0x44000000u; b += 97) {
        float f;
        memcpy(&f, &b, 4);
        uint8_t e = skv_f32_to_f8e4m3(f);
        mono += e < last;
        odd += skv_f32_to_f8e4m3(-f) != (e | 0x80);
        last = e;
    }
    SKV_EXPECT(mono == 0 && odd == 0, "encoding: %d order violations, %d sign asymmetries", mono,
               odd);
}

/* The reference file: uint32 n, float inputs[n], uint8 codes[n], float decodes[256] (all
 * little-endian, as f8e4m3_ref.py writes them). */
static void skv_check_conversion_reference(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint32_t n = 0;
    SKV_EXPECT(f != NULL && fread(&n, 4, 1, f) == 1 && n > 0 && n < (1u << 26),
               "cannot read the reference %s", path);
    if (f == NULL || n == 0 || n >= (1u << 26)) {
        if (f != NULL) {
            fclose(f);
        }
        return;
    }
    float *in = skv_mallocn(n, sizeof(float));
    uint8_t *codes = skv_malloc(n);
    float dec[256];
    int ok = in && codes && fread(in, 4, n, f) == n && fread(codes, 1, n, f) == n &&
             fread(dec, 4, 256, f) == 256;
    fclose(f);
    SKV_EXPECT(ok, "the reference %s is short", path);
    int bad_dec = 0;
    for (int c = 0; ok && c < 256; c++) {
        float got = skv_f8e4m3_to_f32((uint8_t)c);
        int same = isnan(dec[c]) ? isnan(got) && signbit(got) == signbit(dec[c])
                                 : skv_bits(got) == skv_bits(dec[c]);
        if (!same && bad_dec++ < 5) {
            fprintf(stderr, "decode 0x%02x: %a, reference %a\n", c, got, dec[c]);
        }
    }
    int bad_enc = 0;
    for (uint32_t i = 0; ok && i < n; i++) {
        uint8_t got = skv_f32_to_f8e4m3(in[i]);
        if (got != codes[i] && bad_enc++ < 5) {
            fprintf(stderr, "encode %a (%g): 0x%02x, reference 0x%02x\n", in[i], in[i], got,
                    codes[i]);
        }
    }
    SKV_EXPECT(bad_dec == 0 && bad_enc == 0,
               "against ml_dtypes: %d of 256 decodes and %d of %u encodings differ", bad_dec,
               bad_enc, n);
    printf("conversions == ml_dtypes float8_e4m3fn: 256 decodes, %u encodings\n", n);
    skv_free(in);
    skv_free(codes);
}

/* ---- the KV ops -------------------------------------------------------------------------- */

static uint64_t skv_rng = 0x9E3779B97F4A7C15ULL;

static uint32_t skv_rand(void)
{
    skv_rng = skv_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(skv_rng >> 33);
}

/* A value of either sign with a magnitude from 2^-12 (subnormal in fp8) to ~2^9.3 (beyond
 * 448: saturates), log-uniform; 1 in 64 exactly zero. */
static float skv_rand_kv(void)
{
    uint32_t r = skv_rand();
    if (r % 64 == 0) {
        return 0.0f;
    }
    float mag = exp2f(-12.0f + 21.3f * (float)(skv_rand() % 100000) / 100000.0f);
    return r & 1u ? -mag : mag;
}

static float skv_round_f8(float f)
{
    return skv_f8e4m3_to_f32(skv_f32_to_f8e4m3(f));
}

/* One shape: n_seqs sequences, each with ctx0 positions already cached and n_new query rows
 * after them (decode: n_new 1; prefill: ctx0 0). */
typedef struct {
    int32_t kv_heads, group, head_dim, block_size, n_seqs, ctx0, n_new, shuffle;
} skv_case_t;

/* Host metadata and pools of one case (the CPU backend's memory is host memory). */
typedef struct {
    const skv_case_t *c;
    int32_t n_layers; /* cache layers of the pools */
    int32_t bps;      /* blocks per sequence */
    int64_t n_blocks;
    int32_t *blocks; /* [n_seqs * bps] */
    int32_t *seq_rows, *row_pos, *row_slot;
    int32_t n_rows;
    skv_attn_meta_t meta;
    skv_kv_view_t kv8, kv32;
} skv_setup_t;

static void skv_meta_build(skv_setup_t *s, int32_t first, int32_t n_per_seq)
{
    const skv_case_t *c = s->c;
    int32_t r = 0;
    for (int32_t q = 0; q < c->n_seqs; q++) {
        s->seq_rows[q] = r;
        for (int32_t i = 0; i < n_per_seq; i++, r++) {
            int32_t p = first + i;
            s->row_pos[r] = p;
            s->row_slot[r] =
                s->blocks[q * s->bps + p / c->block_size] * c->block_size + p % c->block_size;
        }
    }
    s->seq_rows[c->n_seqs] = r;
    s->n_rows = r;
    skv_attn_meta_t m = {
        .n_seqs = c->n_seqs, .n_rows = r, .max_blocks = s->bps, .max_ctx = first + n_per_seq};
    m.seq_rows = skv_tensor_make(s->seq_rows, SKV_DTYPE_I32, 1, c->n_seqs + 1);
    m.row_pos = skv_tensor_make(s->row_pos, SKV_DTYPE_I32, 1, r);
    m.row_slot = skv_tensor_make(s->row_slot, SKV_DTYPE_I32, 1, r);
    m.block_table = skv_tensor_make(s->blocks, SKV_DTYPE_I32, c->n_seqs, s->bps);
    m.h_seq_rows = s->seq_rows;
    m.h_row_pos = s->row_pos;
    s->meta = m;
}

static void skv_setup_init(skv_setup_t *s, const skv_case_t *c, int32_t n_layers)
{
    memset(s, 0, sizeof(*s));
    s->c = c;
    s->n_layers = n_layers;
    int32_t ctx = c->ctx0 + c->n_new;
    s->bps = (ctx + c->block_size - 1) / c->block_size;
    s->n_blocks = (int64_t)c->n_seqs * s->bps + 3; /* a few never used */
    s->blocks = skv_mallocn((size_t)c->n_seqs * s->bps, sizeof(int32_t));
    for (int32_t i = 0; i < c->n_seqs * s->bps; i++) {
        s->blocks[i] = i + 2;
    }
    for (int32_t i = c->n_seqs * s->bps - 1; c->shuffle && i > 0; i--) {
        int32_t j = (int32_t)(skv_rand() % (uint32_t)(i + 1)), t = s->blocks[i];
        s->blocks[i] = s->blocks[j];
        s->blocks[j] = t;
    }
    int32_t max_rows = c->n_seqs * ctx;
    s->seq_rows = skv_mallocn((size_t)c->n_seqs + 1, sizeof(int32_t));
    s->row_pos = skv_mallocn((size_t)max_rows, sizeof(int32_t));
    s->row_slot = skv_mallocn((size_t)max_rows, sizeof(int32_t));
    size_t elems = (size_t)s->n_blocks * n_layers * 2 * c->kv_heads * c->block_size * c->head_dim;
    skv_kv_view_t v = {NULL,        SKV_DTYPE_F8E4M3, c->block_size, c->kv_heads,
                       c->head_dim, n_layers,         s->n_blocks};
    s->kv8 = v;
    s->kv8.base = skv_calloc(elems, 1);
    s->kv32 = v;
    s->kv32.dtype = SKV_DTYPE_F32;
    s->kv32.base = skv_calloc(elems, sizeof(float));
}

static void skv_setup_free(skv_setup_t *s)
{
    skv_free(s->blocks);
    skv_free(s->seq_rows);
    skv_free(s->row_pos);
    skv_free(s->row_slot);
    skv_free(s->kv8.base);
    skv_free(s->kv32.base);
}

static size_t skv_pool_elems(const skv_kv_view_t *kv)
{
    return (size_t)kv->n_blocks * kv->n_cache_layers * 2 * kv->n_kv_heads * kv->block_size *
           kv->head_dim;
}

/* Every element of the fp8 pool decodes to the f32 pool's element, bit for bit (unwritten
 * slots are 0 in both). Returns the number that differ. */
static size_t skv_pools_differ(const skv_setup_t *s)
{
    const uint8_t *p8 = s->kv8.base;
    const float *p32 = s->kv32.base;
    size_t bad = 0;
    for (size_t i = 0; i < skv_pool_elems(&s->kv8); i++) {
        bad += skv_bits(skv_f8e4m3_to_f32(p8[i])) != skv_bits(p32[i]);
    }
    return bad;
}

static skv_tensor_t skv_rand_tensor(int64_t rows, int64_t cols, int rounded)
{
    float *d = skv_mallocn((size_t)(rows * cols), sizeof(float));
    for (int64_t i = 0; i < rows * cols; i++) {
        float v = skv_rand_kv();
        d[i] = rounded ? skv_round_f8(v) : v;
    }
    return skv_tensor_make(d, SKV_DTYPE_F32, rows, cols);
}

static skv_tensor_t skv_copy_rounded(const skv_tensor_t *t)
{
    float *d = skv_mallocn((size_t)(t->rows * t->cols), sizeof(float));
    for (int64_t i = 0; i < t->rows * t->cols; i++) {
        d[i] = skv_round_f8(((const float *)t->data)[i]);
    }
    return skv_tensor_make(d, SKV_DTYPE_F32, t->rows, t->cols);
}

/* Attention of the n_new query rows per sequence over cache layer `layer` of both pools:
 * the outputs must agree to float tolerance (they are computed from identical values). */
static void skv_compare_attention(skv_backend_t *be, skv_setup_t *s, int32_t layer,
                                  const char *what)
{
    const skv_case_t *c = s->c;
    int32_t n_heads = c->kv_heads * c->group;
    skv_meta_build(s, c->ctx0, c->n_new);
    int64_t width = (int64_t)n_heads * c->head_dim;
    skv_tensor_t q = skv_rand_tensor(s->n_rows, width, 0);
    for (int64_t i = 0; i < q.rows * q.cols; i++) { /* scores of a few units, not one-hot */
        ((float *)q.data)[i] = fmaxf(-4.0f, fminf(4.0f, ((float *)q.data)[i])) / 256.0f;
    }
    skv_tensor_t o8 = skv_tensor_make(skv_calloc((size_t)(s->n_rows * width), 4), SKV_DTYPE_F32,
                                      s->n_rows, width);
    skv_tensor_t o32 = skv_tensor_make(skv_calloc((size_t)(s->n_rows * width), 4), SKV_DTYPE_F32,
                                       s->n_rows, width);
    float scale = 1.0f / sqrtf((float)c->head_dim);
    skv_status_t st8 = be->ops->attention(be, &o8, &q, &s->kv8, layer, n_heads, scale, &s->meta);
    skv_status_t st32 = be->ops->attention(be, &o32, &q, &s->kv32, layer, n_heads, scale, &s->meta);
    SKV_EXPECT(st8 == SKV_STATUS_OK && st32 == SKV_STATUS_OK, "%s: attention %s / %s", what,
               skv_status_str(st8), skv_status_str(st32));
    float worst = 0.0f, amax = 0.0f;
    for (int64_t i = 0; i < s->n_rows * width; i++) {
        float a = ((float *)o8.data)[i], b = ((float *)o32.data)[i];
        float d = isnan(a) || isnan(b) ? INFINITY : fabsf(a - b);
        worst = d > worst ? d : worst;
        amax = fabsf(b) > amax ? fabsf(b) : amax;
    }
    /* Same inputs and the same f32 arithmetic: equal up to float rounding (in practice bit
     * for bit); the bound scales with the output's magnitude. */
    SKV_EXPECT(worst <= 1e-6f * (amax > 1.0f ? amax : 1.0f),
               "%s: fp8-pool attention differs from the rounded f32 pool by %g (max |out| %g)",
               what, worst, amax);
    skv_free(q.data);
    skv_free(o8.data);
    skv_free(o32.data);
}

/* kv_write every position of every sequence (fp8 pool: the raw K/V; f32 pool: K/V rounded
 * through fp8), then attention of the last n_new rows per sequence. */
static void skv_check_kv_write_case(skv_backend_t *be, const skv_case_t *c, const char *what)
{
    skv_setup_t s;
    skv_setup_init(&s, c, 2);
    skv_meta_build(&s, 0, c->ctx0 + c->n_new);
    int64_t width = (int64_t)c->kv_heads * c->head_dim;
    skv_tensor_t k = skv_rand_tensor(s.n_rows, width, 0), v = skv_rand_tensor(s.n_rows, width, 0);
    skv_tensor_t kr = skv_copy_rounded(&k), vr = skv_copy_rounded(&v);
    skv_status_t st8 = be->ops->kv_write(be, &s.kv8, 1, &k, &v, &s.meta);
    skv_status_t st32 = be->ops->kv_write(be, &s.kv32, 1, &kr, &vr, &s.meta);
    SKV_EXPECT(st8 == SKV_STATUS_OK && st32 == SKV_STATUS_OK, "%s: kv_write %s / %s", what,
               skv_status_str(st8), skv_status_str(st32));
    size_t bad = skv_pools_differ(&s);
    SKV_EXPECT(bad == 0, "%s: %zu pool elements of the fp8 pool differ from the rounded f32 pool",
               what, bad);
    skv_compare_attention(be, &s, 1, what);
    skv_free(k.data);
    skv_free(v.data);
    skv_free(kr.data);
    skv_free(vr.data);
    skv_setup_free(&s);
}

/* The SwiftKV epilogue: swiftkv_kv_write of n_groups cache layers from layer 1 into both
 * pools (RoPE in f32, then the fp8 pool quantizes), the f32 pool then rounded through fp8 in
 * place: the pools must agree; then attention over the last of those layers. */
static void skv_check_swiftkv_case(skv_backend_t *be, const skv_case_t *c, const char *what)
{
    const int32_t n_groups = 2;
    skv_setup_t s;
    skv_setup_init(&s, c, 1 + n_groups);
    skv_meta_build(&s, 0, c->ctx0 + c->n_new);
    int64_t width = (int64_t)c->kv_heads * c->head_dim;
    skv_tensor_t kvs = skv_rand_tensor(s.n_rows, n_groups * 2 * width, 0);
    float *inv = skv_mallocn((size_t)c->head_dim / 2, sizeof(float));
    for (int32_t d = 0; d < c->head_dim / 2; d++) {
        inv[d] = powf(10000.0f, -2.0f * (float)d / (float)c->head_dim);
    }
    skv_tensor_t inv_freq = skv_tensor_make(inv, SKV_DTYPE_F32, 1, c->head_dim / 2);
    skv_status_t st8 = be->ops->swiftkv_kv_write(be, &s.kv8, 1, n_groups, &kvs, &s.meta, &inv_freq);
    skv_status_t st32 =
        be->ops->swiftkv_kv_write(be, &s.kv32, 1, n_groups, &kvs, &s.meta, &inv_freq);
    SKV_EXPECT(st8 == SKV_STATUS_OK && st32 == SKV_STATUS_OK, "%s: swiftkv_kv_write %s / %s", what,
               skv_status_str(st8), skv_status_str(st32));
    float *p32 = s.kv32.base;
    for (size_t i = 0; i < skv_pool_elems(&s.kv32); i++) {
        p32[i] = skv_round_f8(p32[i]);
    }
    size_t bad = skv_pools_differ(&s);
    SKV_EXPECT(bad == 0, "%s: %zu elements of the fp8 pool differ from the rounded f32 pool", what,
               bad);
    skv_compare_attention(be, &s, n_groups, what);
    skv_free(kvs.data);
    skv_free(inv);
    skv_setup_free(&s);
}

/* A pool of a dtype the backend's KV ops do not take: UNSUPPORTED from each op, nothing read
 * into the output or written into the pool. */
static void skv_check_refusal(skv_backend_t *be)
{
    static const skv_case_t c = {2, 2, 16, 4, 1, 3, 2, 0};
    skv_setup_t s;
    skv_setup_init(&s, &c, 2);
    skv_meta_build(&s, 0, 5);
    skv_tensor_t k = skv_rand_tensor(5, 32, 0), q = skv_rand_tensor(5, 64, 0);
    skv_tensor_t kvs = skv_rand_tensor(5, 64, 0);
    skv_tensor_t o = skv_tensor_make(skv_calloc(5 * 64, 4), SKV_DTYPE_F32, 5, 64);
    float inv[8] = {1, 1, 1, 1, 1, 1, 1, 1};
    skv_tensor_t inv_freq = skv_tensor_make(inv, SKV_DTYPE_F32, 1, 8);
    size_t bytes = skv_pool_elems(&s.kv32) * 4;
    memset(s.kv32.base, 0x5a, bytes);
    const skv_dtype_t others[] = {SKV_DTYPE_BF16, SKV_DTYPE_F16, SKV_DTYPE_I32};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
        skv_kv_view_t kv = s.kv32;
        kv.dtype = others[i];
        const char *name = skv_dtype_name(others[i]);
        SKV_EXPECT(be->ops->kv_write(be, &kv, 1, &k, &k, &s.meta) == SKV_STATUS_UNSUPPORTED,
                   "kv_write into a %s pool is refused", name);
        SKV_EXPECT(be->ops->swiftkv_kv_write(be, &kv, 1, 1, &kvs, &s.meta, &inv_freq) ==
                       SKV_STATUS_UNSUPPORTED,
                   "swiftkv_kv_write into a %s pool is refused", name);
        SKV_EXPECT(be->ops->attention(be, &o, &q, &kv, 1, 4, 0.25f, &s.meta) ==
                       SKV_STATUS_UNSUPPORTED,
                   "attention over a %s pool is refused", name);
    }
    int touched = 0;
    for (size_t i = 0; i < bytes; i++) {
        touched += ((uint8_t *)s.kv32.base)[i] != 0x5a;
    }
    for (int64_t i = 0; i < 5 * 64; i++) {
        touched += ((float *)o.data)[i] != 0.0f;
    }
    SKV_EXPECT(touched == 0, "refused ops wrote %d bytes/elements", touched);
    skv_free(k.data);
    skv_free(q.data);
    skv_free(kvs.data);
    skv_free(o.data);
    skv_setup_free(&s);
}

static void skv_check_resolve(skv_backend_t *be)
{
    const skv_ops_t *ops = be->ops;
    uint32_t want = (1u << SKV_DTYPE_F32) | (1u << SKV_DTYPE_F8E4M3);
    SKV_EXPECT(ops->kv_dtypes == want && (ops->kv_dtypes & (1u << ops->kv_dtype)),
               "cpu kv_dtypes 0x%x (want 0x%x, holding the default)", ops->kv_dtypes, want);
    SKV_EXPECT(skv_dtype_size(SKV_DTYPE_F8E4M3) == 1 &&
                   strcmp(skv_dtype_name(SKV_DTYPE_F8E4M3), "f8e4m3") == 0,
               "f8e4m3: 1 byte, named f8e4m3");
    static const struct {
        const char *name;
        skv_status_t status;
        skv_dtype_t dtype;
    } cases[] = {
        {NULL, SKV_STATUS_OK, SKV_DTYPE_F32},
        {"", SKV_STATUS_OK, SKV_DTYPE_F32},
        {"auto", SKV_STATUS_OK, SKV_DTYPE_F32},
        {"f32", SKV_STATUS_OK, SKV_DTYPE_F32},
        {"fp8", SKV_STATUS_OK, SKV_DTYPE_F8E4M3},
        {"f8e4m3", SKV_STATUS_OK, SKV_DTYPE_F8E4M3},
        {"bf16", SKV_STATUS_UNSUPPORTED, SKV_DTYPE_I32},
        {"i32", SKV_STATUS_UNSUPPORTED, SKV_DTYPE_I32},
        {"fp16x", SKV_STATUS_INVALID_ARGUMENT, SKV_DTYPE_I32},
        {"FP8", SKV_STATUS_INVALID_ARGUMENT, SKV_DTYPE_I32},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        skv_dtype_t d = SKV_DTYPE_I32; /* unchanged on failure */
        skv_status_t st = skv_kv_dtype_resolve(ops, cases[i].name, &d);
        SKV_EXPECT(st == cases[i].status && d == cases[i].dtype,
                   "resolve '%s': %s %s, expected %s %s", cases[i].name ? cases[i].name : "(null)",
                   skv_status_str(st), skv_dtype_name(d), skv_status_str(cases[i].status),
                   skv_dtype_name(cases[i].dtype));
    }
}

int main(int argc, char **argv)
{
    const char *ref = argc == 3 && strcmp(argv[1], "--f8-ref") == 0 ? argv[2] : NULL;
    if (argc != 1 && ref == NULL) {
        fprintf(stderr, "usage: %s [--f8-ref FILE]\n", argv[0]);
        return 2;
    }
    skv_check_conversion_properties();
    if (ref != NULL) { /* the reference run checks only the conversions */
        skv_check_conversion_reference(ref);
        printf("%d failures\n", skv_failures);
        return skv_failures ? 1 : 0;
    }
    /* kv_heads, group, head_dim, block_size, n_seqs, ctx0, n_new, shuffle */
    static const skv_case_t cases[] = {
        {2, 2, 16, 16, 1, 0, 1, 0},    /* one token */
        {2, 2, 16, 5, 3, 0, 13, 1},    /* prefill from 0, 3 sequences, blocks not a divisor */
        {1, 4, 64, 16, 2, 9, 7, 1},    /* chunked prefill, GQA 4 */
        {4, 1, 16, 1, 2, 33, 1, 1},    /* decode, block size 1, no GQA */
        {2, 4, 128, 16, 3, 150, 1, 1}, /* decode at long context (tiles of 64 keys) */
        {8, 2, 64, 16, 1, 70, 70, 0},  /* prefill chunk of 70 rows after 70 */
    };
    skv_cpu_mode_t modes[2] = {SKV_CPU_MODE_REFERENCE, SKV_CPU_MODE_FAST};
    for (int mi = 0; mi < 2; mi++) {
        skv_backend_t *be = NULL;
        if (skv_cpu_backend_create(modes[mi], 2, &be) != SKV_STATUS_OK) {
            return 1;
        }
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            const skv_case_t *c = &cases[i];
            char what[160];
            snprintf(what, sizeof(what), "%s kvh %d group %d hd %d bs %d seqs %d ctx0 %d new %d%s",
                     mi ? "fast" : "ref", c->kv_heads, c->group, c->head_dim, c->block_size,
                     c->n_seqs, c->ctx0, c->n_new, c->shuffle ? " shuffled" : "");
            skv_check_kv_write_case(be, c, what);
            skv_check_swiftkv_case(be, c, what);
            printf("ok: %s\n", what);
        }
        skv_check_refusal(be);
        skv_check_resolve(be);
        be->ops->destroy(be);
    }
    printf("%d failures\n", skv_failures);
    return skv_failures ? 1 : 0;
}
