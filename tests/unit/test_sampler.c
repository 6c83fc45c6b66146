/*
 * test_sampler.c: seeded reproducibility, greedy, and sampled frequencies against the
 * filtered distribution (top-k, top-p, min-p) on synthetic logits, penalties, validation.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/model/sampler.h"

#define V 8
static const float skv_logits[V] = {2.0f, 1.5f, 1.0f, 0.5f, 0.0f, -0.5f, -1.0f, -3.0f};

/* Expected probabilities of the filtered distribution, computed independently here. */
static void skv_expected(const skv_sampling_params_t *p, double *e)
{
    double z = 0, w[V];
    for (int i = 0; i < V; i++) {
        w[i] = exp(skv_logits[i] / p->temperature);
        z += w[i];
    }
    double cum = 0;
    int keep = V;
    for (int i = 0; i < V; i++) { /* logits are already sorted descending */
        double pi = w[i] / z;
        if (p->top_k > 0 && i >= p->top_k) {
            keep = i;
            break;
        }
        if (p->min_p > 0 && pi < p->min_p * (w[0] / z)) {
            keep = i;
            break;
        }
        cum += pi;
        if (p->top_p < 1.0f && cum >= p->top_p) {
            keep = i + 1;
            break;
        }
    }
    double zk = 0;
    for (int i = 0; i < V; i++) {
        zk += i < keep ? w[i] : 0;
    }
    for (int i = 0; i < V; i++) {
        e[i] = i < keep ? w[i] / zk : 0;
    }
}

static void skv_check_freqs(const skv_sampling_params_t *p)
{
    enum { DRAWS = 40000 };
    skv_sampler_t *s;
    double e[V];
    int counts[V] = {0};
    skv_expected(p, e);
    assert_int_equal(skv_sampler_create(p, V, &s), SKV_STATUS_OK);
    for (int i = 0; i < DRAWS; i++) {
        skv_sample_t out;
        assert_int_equal(skv_sampler_next(s, skv_logits, &out), SKV_STATUS_OK);
        counts[out.token]++;
    }
    skv_sampler_destroy(s);
    for (int i = 0; i < V; i++) {
        double f = (double)counts[i] / DRAWS;
        /* 5 standard deviations of a binomial proportion, plus zero for filtered tokens. */
        double tol = 5.0 * sqrt(e[i] * (1 - e[i]) / DRAWS) + 1e-9;
        if (e[i] == 0) {
            assert_int_equal(counts[i], 0);
        } else {
            assert_true(fabs(f - e[i]) <= tol);
        }
    }
}

static void test_filtered_frequencies(void **state)
{
    skv_sampling_params_t p;
    skv_sampling_params_default(&p);
    p.seed = 7;
    p.temperature = 1.0f;
    skv_check_freqs(&p);
    p.top_k = 3;
    skv_check_freqs(&p);
    p.top_k = 0;
    p.top_p = 0.8f;
    skv_check_freqs(&p);
    p.top_p = 1.0f;
    p.min_p = 0.2f;
    skv_check_freqs(&p);
    p.min_p = 0.0f;
    p.temperature = 0.5f;
    p.top_k = 5;
    p.top_p = 0.9f;
    skv_check_freqs(&p);
}

static void skv_draw_seq(const skv_sampling_params_t *p, int32_t *out, int n)
{
    skv_sampler_t *s;
    assert_int_equal(skv_sampler_create(p, V, &s), SKV_STATUS_OK);
    for (int i = 0; i < n; i++) {
        skv_sample_t o;
        assert_int_equal(skv_sampler_next(s, skv_logits, &o), SKV_STATUS_OK);
        out[i] = o.token;
    }
    skv_sampler_destroy(s);
}

static void test_seeded_reproducible(void **state)
{
    skv_sampling_params_t p;
    skv_sampling_params_default(&p);
    p.temperature = 1.0f;
    p.seed = 1234;
    int32_t a[64], b[64], c[64];
    skv_draw_seq(&p, a, 64);
    skv_draw_seq(&p, b, 64);
    p.seed = 1235;
    skv_draw_seq(&p, c, 64);
    assert_memory_equal(a, b, sizeof(a));
    assert_memory_not_equal(a, c, sizeof(a));
}

static void test_greedy_penalties_logprobs(void **state)
{
    skv_sampling_params_t p;
    skv_sampling_params_default(&p);
    p.n_logprobs = 3;
    skv_sampler_t *s;
    skv_sample_t o;
    assert_int_equal(skv_sampler_create(&p, V, &s), SKV_STATUS_OK);
    assert_int_equal(skv_sampler_next(s, skv_logits, &o), SKV_STATUS_OK);
    assert_int_equal(o.token, 0);
    assert_int_equal(o.n_top, 3);
    assert_int_equal(o.top_ids[0], 0);
    assert_int_equal(o.top_ids[1], 1);
    assert_int_equal(o.top_ids[2], 2);
    double z = 0;
    for (int i = 0; i < V; i++) {
        z += exp(skv_logits[i]);
    }
    assert_true(fabs(o.logprob - (2.0 - log(z))) < 1e-5);
    skv_sampler_destroy(s);

    /* A frequency penalty of 2 after one use moves greedy off token 0 (2.0 - 2 < 1.5). */
    p.frequency_penalty = 2.0f;
    assert_int_equal(skv_sampler_create(&p, V, &s), SKV_STATUS_OK);
    assert_int_equal(skv_sampler_next(s, skv_logits, &o), SKV_STATUS_OK);
    assert_int_equal(o.token, 0);
    assert_int_equal(skv_sampler_next(s, skv_logits, &o), SKV_STATUS_OK);
    assert_int_equal(o.token, 1);
    skv_sampler_destroy(s);

    /* Many distinct accepted tokens grow the count table without losing counts. */
    skv_sampling_params_default(&p);
    p.presence_penalty = 1.0f;
    assert_int_equal(skv_sampler_create(&p, V, &s), SKV_STATUS_OK);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(skv_sampler_accept(s, 0), SKV_STATUS_OK);
    }
    assert_int_equal(skv_sampler_next(s, skv_logits, &o), SKV_STATUS_OK);
    assert_int_equal(o.token, 1); /* 2.0 - 1 < 1.5 */
    skv_sampler_destroy(s);
}

static void test_validate(void **state)
{
    skv_sampling_params_t p;
    const char *why;
    skv_sampling_params_default(&p);
    assert_int_equal(skv_sampling_params_validate(&p, V, &why), SKV_STATUS_OK);
    p.temperature = -1;
    assert_int_equal(skv_sampling_params_validate(&p, V, &why), SKV_STATUS_INVALID_ARGUMENT);
    assert_non_null(why);
    skv_sampling_params_default(&p);
    p.top_p = 0;
    assert_int_equal(skv_sampling_params_validate(&p, V, &why), SKV_STATUS_INVALID_ARGUMENT);
    skv_sampling_params_default(&p);
    p.temperature = NAN;
    assert_int_equal(skv_sampling_params_validate(&p, V, &why), SKV_STATUS_INVALID_ARGUMENT);
    skv_sampling_params_default(&p);
    p.n_logprobs = 21;
    assert_int_equal(skv_sampling_params_validate(&p, V, &why), SKV_STATUS_INVALID_ARGUMENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_filtered_frequencies),
        cmocka_unit_test(test_seeded_reproducible),
        cmocka_unit_test(test_greedy_penalties_logprobs),
        cmocka_unit_test(test_validate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
