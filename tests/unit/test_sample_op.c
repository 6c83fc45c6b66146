/*
 * test_sample_op.c: the CPU backend's sample op (kernels/ops.h contract) against the host
 * sampler (common/model/sampler.c): for the same u, the same token, on random logits over a table of
 * vocabulary sizes and parameter sets (greedy, temperature alone, top-k, top-p, both, top-k at
 * and beyond the vocabulary, a tiny top-p), with ties (quantized logits, +0 and -0), V = 1,
 * many rows per call on two threads. u comes from skv_sampler_draw_row of one sampler and the
 * reference token from skv_sampler_next of a second sampler with the same seed, so the test
 * also checks that both consume the request's RNG identically. Hand-made cases check the tie
 * rule itself (ids tied with the top-k / top-p boundary are kept) and the draw order.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "common/model/sampler.h"
#include "kernels/cpu/cpu.h"

typedef struct {
    float temperature;
    int32_t top_k;
    float top_p;
} skv_case_t;

static const skv_case_t skv_cases[] = {
    {0.0f, 0, 1.0f},   {1.0f, 0, 1.0f},   {0.7f, 5, 1.0f},   {1.3f, 0, 0.8f},
    {0.9f, 40, 0.95f}, {1.0f, 1, 1.0f},   {2.0f, 0, 0.05f},  {0.5f, 100000, 0.9f},
    {1.0f, 3, 0.5f},   {0.01f, 0, 0.99f}, {100.0f, 0, 0.6f}, {1.0f, 2, 1.0f},
};
#define N_CASES ((int32_t)(sizeof(skv_cases) / sizeof(skv_cases[0])))

static uint64_t skv_rng = 12345;

static float skv_uniform(float lo, float hi)
{
    skv_rng = skv_rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return lo + (hi - lo) * (float)((skv_rng >> 40) * (1.0 / 16777216.0));
}

/* Runs the backend op on M rows of V logits with one parameter row each; returns tokens. */
static void skv_op(skv_backend_t *be, const float *logits, int32_t M, int32_t V,
                   const skv_sample_row_t *rows, int32_t *tokens)
{
    void *dl, *dp, *dt;
    assert_int_equal(be->ops->alloc(be, sizeof(float) * (size_t)M * V, &dl), SKV_STATUS_OK);
    assert_int_equal(be->ops->alloc(be, sizeof(float) * (size_t)M * 4, &dp), SKV_STATUS_OK);
    assert_int_equal(be->ops->alloc(be, sizeof(int32_t) * (size_t)M, &dt), SKV_STATUS_OK);
    float *pr = malloc(sizeof(float) * (size_t)M * 4);
    for (int32_t r = 0; r < M; r++) {
        pr[r * 4 + 0] = rows[r].temperature;
        pr[r * 4 + 1] = (float)rows[r].top_k;
        pr[r * 4 + 2] = rows[r].top_p;
        pr[r * 4 + 3] = rows[r].u;
    }
    be->ops->copy_h2d(be, dl, logits, sizeof(float) * (size_t)M * V);
    be->ops->copy_h2d(be, dp, pr, sizeof(float) * (size_t)M * 4);
    skv_tensor_t tl = skv_tensor_make(dl, SKV_DTYPE_F32, M, V);
    skv_tensor_t tp = skv_tensor_make(dp, SKV_DTYPE_F32, M, 4);
    skv_tensor_t tt = skv_tensor_make(dt, SKV_DTYPE_I32, 1, M);
    assert_int_equal(be->ops->sample(be, &tt, &tl, &tp), SKV_STATUS_OK);
    be->ops->copy_d2h(be, tokens, dt, sizeof(int32_t) * (size_t)M);
    be->ops->sync(be);
    be->ops->free(be, dl);
    be->ops->free(be, dp);
    be->ops->free(be, dt);
    free(pr);
}

/* Fills M rows of V logits: uniform in [-6, 6], or (quantized) a few values with many ties,
 * +0 and -0 among them. */
static void skv_fill(float *x, int64_t n, int quantized)
{
    static const float q[] = {-2.0f, -0.0f, 0.0f, 0.5f, 1.0f, 1.0f, 3.0f};
    for (int64_t i = 0; i < n; i++) {
        x[i] = quantized ? q[(int)skv_uniform(0.0f, 6.999f)] : skv_uniform(-6.0f, 6.0f);
    }
}

/* Every case on M rows of V: the op's token == skv_sampler_next's for the same u. */
static void skv_check_vocab(skv_backend_t *be, int32_t V, int32_t draws, int quantized)
{
    int32_t M = N_CASES * draws;
    float *x = malloc(sizeof(float) * (size_t)M * V);
    skv_sample_row_t *rows = malloc(sizeof(*rows) * (size_t)M);
    int32_t *tok = malloc(sizeof(int32_t) * (size_t)M), *want = malloc(sizeof(int32_t) * (size_t)M);
    skv_fill(x, (int64_t)M * V, quantized);
    for (int32_t r = 0; r < M; r++) {
        const skv_case_t *c = &skv_cases[r % N_CASES];
        skv_sampling_params_t p;
        skv_sampling_params_default(&p);
        p.temperature = c->temperature;
        p.top_k = c->top_k;
        p.top_p = c->top_p;
        p.seed = 77 + (uint64_t)r;
        skv_sampler_t *a, *b;
        skv_sample_t out;
        assert_int_equal(skv_sampler_create(&p, V, &a), SKV_STATUS_OK);
        assert_int_equal(skv_sampler_create(&p, V, &b), SKV_STATUS_OK);
        assert_true(skv_sampler_row_ok(a));
        skv_sampler_draw_row(a, &rows[r]);
        assert_int_equal(skv_sampler_next(b, x + (size_t)r * V, &out), SKV_STATUS_OK);
        want[r] = out.token;
        if (c->temperature == 0.0f) {
            assert_true(rows[r].u == 0.0f);
        }
        skv_sampler_destroy(a);
        skv_sampler_destroy(b);
    }
    skv_op(be, x, M, V, rows, tok);
    void *scratch = malloc(skv_sample_row_scratch_bytes(V));
    for (int32_t r = 0; r < M; r++) {
        if (tok[r] != want[r]) {
            fail_msg("V %d row %d (T %g k %d p %g u %.8f): op %d, sampler %d", V, r,
                     rows[r].temperature, rows[r].top_k, rows[r].top_p, rows[r].u, tok[r], want[r]);
        }
        assert_int_equal(skv_sample_row_pick(x + (size_t)r * V, V, &rows[r], scratch), want[r]);
    }
    free(scratch);
    free(x), free(rows), free(tok), free(want);
}

static void test_random_logits(void **state)
{
    skv_backend_t *be = *state;
    static const int32_t vocabs[] = {2, 3, 17, 1000, 4099};
    for (int i = 0; i < 5; i++) {
        skv_check_vocab(be, vocabs[i], vocabs[i] > 1000 ? 8 : 40, 0);
        skv_check_vocab(be, vocabs[i], vocabs[i] > 1000 ? 8 : 40, 1);
    }
}

static void test_vocab_one(void **state)
{
    skv_backend_t *be = *state;
    float x[N_CASES] = {0};
    skv_sample_row_t rows[N_CASES];
    int32_t tok[N_CASES];
    for (int32_t r = 0; r < N_CASES; r++) {
        x[r] = skv_uniform(-3.0f, 3.0f);
        rows[r] = (skv_sample_row_t){skv_cases[r].temperature, skv_cases[r].top_k,
                                     skv_cases[r].top_p, r % 2 ? 0.999999f : 0.0f};
    }
    skv_op(be, x, N_CASES, 1, rows, tok);
    for (int32_t r = 0; r < N_CASES; r++) {
        assert_int_equal(tok[r], 0);
    }
    skv_check_vocab(be, 1, 20, 0);
}

/* The tie rule and the draw order, by hand. */
static void test_ties(void **state)
{
    skv_backend_t *be = *state;
    void *scratch = malloc(skv_sample_row_scratch_bytes(8));
    /* Greedy: the lowest id of the tied maximum. */
    float g[3] = {5.0f, 7.0f, 7.0f};
    skv_sample_row_t greedy = {0.0f, 0, 1.0f, 0.0f};
    int32_t t;
    skv_op(be, g, 1, 3, &greedy, &t);
    assert_int_equal(t, 1);
    assert_int_equal(skv_sample_row_pick(g, 3, &greedy, scratch), 1);
    /* top_k 2 over {1, 3, 2, 2, 2, 0}: the three 2s tie with the 2nd largest, all kept
     * (ids 1..4); the draw walks ids in order, so u near 1 lands on id 4, u = 0 on id 1, and
     * just past id 1's share (e^3 / (e^3 + 3 e^2)) on id 2. */
    float k[6] = {1.0f, 3.0f, 2.0f, 2.0f, 2.0f, 0.0f};
    double share = exp(3.0) / (exp(3.0) + 3.0 * exp(2.0));
    float us[4] = {0.0f, 0.99f, (float)(share + 0.01), (float)(share + 0.5 * (1 - share))};
    int32_t want_k[4] = {1, 4, 2, 3};
    for (int i = 0; i < 4; i++) {
        skv_sample_row_t row = {1.0f, 2, 1.0f, us[i]};
        skv_op(be, k, 1, 6, &row, &t);
        assert_int_equal(t, want_k[i]);
        assert_int_equal(skv_sample_row_pick(k, 6, &row, scratch), want_k[i]);
    }
    /* top_p 0.25 over {0, 1, 1, 1}: one id of value 1 already holds e / (1 + 3e) = 0.297,
     * and its two ties are kept with it: ids 1..3, u = 0.9 -> id 3; id 0 is never drawn. */
    float p[4] = {0.0f, 1.0f, 1.0f, 1.0f};
    skv_sample_row_t rp = {1.0f, 0, 0.25f, 0.9f};
    skv_op(be, p, 1, 4, &rp, &t);
    assert_int_equal(t, 3);
    assert_int_equal(skv_sample_row_pick(p, 4, &rp, scratch), 3);
    rp.u = 0.0f;
    skv_op(be, p, 1, 4, &rp, &t);
    assert_int_equal(t, 1);
    free(scratch);
}

/* The seeded stream: picking every token through draw_row + pick + accept gives the tokens
 * skv_sampler_next gives; a resumed sampler continues both ways alike. */
static void test_stream(void **state)
{
    (void)state;
    enum { V = 50, N = 64 };
    float x[N][V];
    skv_fill(&x[0][0], (int64_t)N * V, 0);
    skv_sampling_params_t p;
    skv_sampling_params_default(&p);
    p.temperature = 0.8f;
    p.top_k = 10;
    p.top_p = 0.9f;
    p.seed = 4242;
    skv_sampler_t *a, *b;
    void *scratch = malloc(skv_sample_row_scratch_bytes(V));
    assert_int_equal(skv_sampler_create(&p, V, &a), SKV_STATUS_OK);
    assert_int_equal(skv_sampler_create(&p, V, &b), SKV_STATUS_OK);
    assert_int_equal(skv_sampler_resume(a, 3), SKV_STATUS_OK);
    assert_int_equal(skv_sampler_resume(b, 3), SKV_STATUS_OK);
    for (int i = 0; i < N; i++) {
        skv_sample_row_t row;
        skv_sample_t out;
        skv_sampler_draw_row(a, &row);
        int32_t t = skv_sample_row_pick(x[i], V, &row, scratch);
        assert_int_equal(skv_sampler_accept(a, t), SKV_STATUS_OK);
        assert_int_equal(skv_sampler_next(b, x[i], &out), SKV_STATUS_OK);
        assert_int_equal(t, out.token);
    }
    skv_sampler_destroy(a);
    skv_sampler_destroy(b);
    /* Requests that need the host sampler say so. */
    p.presence_penalty = 0.5f;
    assert_int_equal(skv_sampler_create(&p, V, &a), SKV_STATUS_OK);
    assert_false(skv_sampler_row_ok(a));
    skv_sampler_destroy(a);
    skv_sampling_params_default(&p);
    p.n_logprobs = 1;
    assert_int_equal(skv_sampler_create(&p, V, &a), SKV_STATUS_OK);
    assert_false(skv_sampler_row_ok(a));
    skv_sampler_destroy(a);
    free(scratch);
}

static void test_row_check(void **state)
{
    (void)state;
    const char *why;
    skv_sample_row_t ok = {0.7f, 5, 0.9f, 0.5f};
    assert_int_equal(skv_sample_row_check(&ok, &why), SKV_STATUS_OK);
    skv_sample_row_t bad[] = {{-1.0f, 0, 1.0f, 0.0f}, {NAN, 0, 1.0f, 0.0f},
                              {1.0f, -2, 1.0f, 0.0f}, {1.0f, 0, 0.0f, 0.0f},
                              {1.0f, 0, 1.0f, 1.0f},  {1.0f, 0, 1.0f, -0.5f}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(skv_sample_row_check(&bad[i], &why), SKV_STATUS_INVALID_ARGUMENT);
        assert_non_null(why);
    }
}

static int skv_setup(void **state)
{
    skv_backend_t *be = NULL;
    if (skv_cpu_backend_create(SKV_CPU_MODE_FAST, 2, &be) != SKV_STATUS_OK) {
        return -1;
    }
    *state = be;
    return 0;
}

static int skv_teardown(void **state)
{
    skv_backend_t *be = *state;
    be->ops->destroy(be);
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_random_logits), cmocka_unit_test(test_vocab_one),
        cmocka_unit_test(test_ties),          cmocka_unit_test(test_stream),
        cmocka_unit_test(test_row_check),
    };
    return cmocka_run_group_tests(tests, skv_setup, skv_teardown);
}
