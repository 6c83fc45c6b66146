/*
 * test_kv_pool.c: block allocation (all-or-nothing, BUSY when short, no leaks), sequence
 * growth, cache-layer mapping for AcrossKV, fingerprint sensitivity to every field, the
 * split-independent model fingerprint and the checked head split of tensor parallelism.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "common/model/kv_pool.h"
#include "kernels/cpu/cpu.h"

static skv_kv_layout_t skv_test_layout(void)
{
    skv_kv_layout_t l = {SKV_DTYPE_F32, 16, 2, 8, 8, 4, 2, 6, 0, 1};
    return l;
}

static void test_alloc_release(void **state)
{
    skv_backend_t *be;
    skv_kv_pool_t *pool;
    skv_kv_layout_t l = skv_test_layout();
    assert_int_equal(skv_cpu_backend_create(SKV_CPU_MODE_REFERENCE, 1, &be), SKV_STATUS_OK);
    assert_int_equal(skv_kv_pool_create(&l, 10, be, &pool), SKV_STATUS_OK);
    assert_int_equal(skv_kv_pool_bytes(pool), 10 * skv_kv_layout_block_bytes(&l));
    assert_int_equal(skv_kv_layout_block_bytes(&l), 6 * 2 * 2 * 16 * 8 * 4);
    int32_t ids[10];
    assert_int_equal(skv_kv_pool_alloc(pool, 4, ids), SKV_STATUS_OK);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(ids[i], i); /* fresh pool: contiguous run from 0 */
    }
    assert_int_equal(skv_kv_pool_alloc(pool, 7, ids + 4), SKV_STATUS_BUSY);
    assert_int_equal(skv_kv_pool_n_free(pool), 6); /* all or nothing */
    assert_int_equal(skv_kv_pool_alloc(pool, 6, ids + 4), SKV_STATUS_OK);
    assert_int_equal(skv_kv_pool_n_free(pool), 0);
    skv_kv_pool_release(pool, 10, ids);
    assert_int_equal(skv_kv_pool_n_free(pool), 10);
    skv_kv_pool_destroy(pool);
    be->ops->destroy(be);
}

static void test_seq_reserve(void **state)
{
    skv_backend_t *be;
    skv_kv_pool_t *pool;
    skv_kv_layout_t l = skv_test_layout();
    assert_int_equal(skv_cpu_backend_create(SKV_CPU_MODE_REFERENCE, 1, &be), SKV_STATUS_OK);
    assert_int_equal(skv_kv_pool_create(&l, 8, be, &pool), SKV_STATUS_OK);
    skv_kv_seq_t a = {0}, b = {0};
    assert_int_equal(skv_kv_seq_reserve(pool, &a, 1), SKV_STATUS_OK);
    assert_int_equal(a.n_blocks, 1);
    assert_int_equal(skv_kv_seq_reserve(pool, &a, 16), SKV_STATUS_OK);
    assert_int_equal(a.n_blocks, 1);
    assert_int_equal(skv_kv_seq_reserve(pool, &a, 17), SKV_STATUS_OK);
    assert_int_equal(a.n_blocks, 2);
    assert_int_equal(skv_kv_seq_reserve(pool, &b, 16 * 6), SKV_STATUS_OK);
    assert_int_equal(skv_kv_seq_reserve(pool, &a, 16 * 3), SKV_STATUS_BUSY);
    assert_int_equal(a.n_blocks, 2); /* unchanged on BUSY */
    assert_int_equal(skv_kv_seq_reserve(pool, &a, 16 * 1000), SKV_STATUS_BUSY);
    skv_kv_seq_release(pool, &a);
    skv_kv_seq_release(pool, &b);
    assert_int_equal(skv_kv_pool_n_free(pool), 8);
    skv_kv_pool_destroy(pool);
    be->ops->destroy(be);
}

static void test_layout_mapping_and_fingerprint(void **state)
{
    skv_kv_layout_t l = skv_test_layout(); /* L 8, Lk 4, G 2 -> 6 cache layers */
    assert_int_equal(skv_kv_layout_cache_layer(&l, 3), 3);
    assert_int_equal(skv_kv_layout_cache_layer(&l, 4), 4);
    assert_int_equal(skv_kv_layout_cache_layer(&l, 5), 4);
    assert_int_equal(skv_kv_layout_cache_layer(&l, 6), 5);
    assert_int_equal(skv_kv_layout_cache_layer(&l, 7), 5);
    uint64_t f = skv_kv_layout_fingerprint(&l);
    int32_t *fields[] = {&l.block_size, &l.n_kv_heads,     &l.head_dim, &l.n_layers, &l.n_kv_layers,
                         &l.kv_group,   &l.n_cache_layers, &l.tp_rank,  &l.tp_size};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        *fields[i] += 1;
        assert_true(skv_kv_layout_fingerprint(&l) != f);
        *fields[i] -= 1;
    }
    l.dtype = SKV_DTYPE_BF16;
    assert_true(skv_kv_layout_fingerprint(&l) != f);
}

/* The model fingerprint ignores the head split; the split of a model's heads is checked. */
static void test_model_fingerprint_and_split(void **state)
{
    skv_kv_layout_t whole = skv_test_layout();
    whole.n_kv_heads = 4;
    uint64_t f = skv_kv_layout_model_fingerprint(&whole);
    assert_true(f == skv_kv_layout_fingerprint(&whole)); /* unsplit: the ordinary one */
    skv_kv_layout_t r;
    for (int32_t tp = 1; tp <= 4; tp *= 2) {
        for (int32_t rank = 0; rank < tp; rank++) {
            assert_int_equal(skv_kv_layout_split(&whole, tp, 4 / tp, rank, &r), SKV_STATUS_OK);
            assert_int_equal(r.n_kv_heads, 4 / tp);
            assert_int_equal(r.tp_rank, rank);
            assert_int_equal(r.tp_size, tp);
            assert_true(skv_kv_layout_model_fingerprint(&r) == f);
            assert_true(tp == 1 || skv_kv_layout_fingerprint(&r) != f);
            skv_kv_layout_t back; /* from any rank of any split to any other */
            assert_int_equal(skv_kv_layout_split(&r, 1, 0, 0, &back), SKV_STATUS_OK);
            assert_memory_equal(&back, &whole, sizeof(back));
        }
    }
    assert_int_equal(skv_kv_layout_split(&whole, 3, 1, 0, &r), SKV_STATUS_MISMATCH);
    assert_int_equal(skv_kv_layout_split(&whole, 3, 2, 0, &r), SKV_STATUS_MISMATCH);
    assert_int_equal(skv_kv_layout_split(&whole, 2, 1, 0, &r), SKV_STATUS_MISMATCH);
    assert_int_equal(skv_kv_layout_split(&whole, 2, 0, 0, &r), SKV_STATUS_MISMATCH);
    assert_int_equal(skv_kv_layout_split(&whole, 0, 4, 0, &r), SKV_STATUS_MISMATCH);
    assert_int_equal(skv_kv_layout_split(&whole, 2, 2, 2, &r), SKV_STATUS_MISMATCH);
    assert_int_equal(skv_kv_layout_split(&whole, 2, 2, -1, &r), SKV_STATUS_MISMATCH);
    skv_kv_layout_t other = whole;
    other.head_dim *= 2; /* another model: another fingerprint, whatever the split */
    assert_true(skv_kv_layout_model_fingerprint(&other) != f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alloc_release),
        cmocka_unit_test(test_seq_reserve),
        cmocka_unit_test(test_layout_mapping_and_fingerprint),
        cmocka_unit_test(test_model_fingerprint_and_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
