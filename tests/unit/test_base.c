/*
 * test_base.c: status names and gRPC mapping, allocation failure injection, JSON getters.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "base/alloc.h"
#include "base/clock.h"
#include "base/json.h"
#include "base/status.h"

static void test_status_names_are_total(void **state)
{
    for (int s = 0; s < SKV_STATUS_COUNT_; s++) {
        assert_non_null(skv_status_str((skv_status_t)s));
        assert_string_not_equal(skv_status_str((skv_status_t)s), "UNKNOWN_STATUS");
    }
    assert_string_equal(skv_status_str((skv_status_t)999), "UNKNOWN_STATUS");
    assert_int_equal(skv_status_grpc_code(SKV_STATUS_OK), 0);
    assert_int_equal(skv_status_grpc_code(SKV_STATUS_INVALID_ARGUMENT), 3);
    assert_int_equal(skv_status_grpc_code(SKV_STATUS_OUT_OF_RANGE), 11);
    assert_int_equal(skv_status_grpc_code(SKV_STATUS_BUSY), 8);
    assert_int_equal(skv_status_grpc_code(SKV_STATUS_TIMEOUT), 4);
    assert_int_equal(skv_status_grpc_code(SKV_STATUS_UNAVAILABLE), 14);
}

static void test_alloc_fail_injection(void **state)
{
    skv_alloc_fail_after(2);
    void *a = skv_malloc(16);
    void *b = skv_malloc(16);
    void *c = skv_malloc(16);
    assert_non_null(a);
    assert_null(b);
    assert_non_null(c);
    skv_free(a);
    skv_free(c);
    assert_null(skv_mallocn(SIZE_MAX / 2, 4)); /* overflow is refused, not wrapped */
}

static void test_clock_deadline(void **state)
{
    int64_t d = skv_clock_deadline_ms(50);
    assert_false(skv_clock_expired(d));
    assert_true(skv_clock_expired(skv_clock_now_ns() - 1));
}

static void test_json_getters(void **state)
{
    char path[] = "/tmp/skv_test_json_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    const char *text = "{\"a\": 3, \"b\": 2.5, \"c\": true, \"d\": \"x\", \"e\": null, \"f\": 4.0}";
    assert_int_equal(write(fd, text, strlen(text)), (int)strlen(text));
    close(fd);
    json_t *root = NULL;
    assert_int_equal(skv_json_load_file(path, &root), SKV_STATUS_OK);
    int64_t i = 0;
    double dv = 0;
    int bv = 0;
    const char *sv = NULL;
    assert_int_equal(skv_json_get_int(root, "a", "t", &i), SKV_STATUS_OK);
    assert_int_equal(i, 3);
    assert_int_equal(skv_json_get_int(root, "f", "t", &i), SKV_STATUS_OK);
    assert_int_equal(i, 4);
    assert_int_equal(skv_json_get_int(root, "b", "t", &i), SKV_STATUS_FORMAT);
    assert_int_equal(skv_json_get_double(root, "b", "t", &dv), SKV_STATUS_OK);
    assert_true(dv == 2.5);
    assert_int_equal(skv_json_get_bool(root, "c", "t", &bv), SKV_STATUS_OK);
    assert_int_equal(bv, 1);
    assert_int_equal(skv_json_get_str(root, "d", "t", &sv), SKV_STATUS_OK);
    assert_string_equal(sv, "x");
    assert_int_equal(skv_json_get_int(root, "e", "t", &i), SKV_STATUS_NOT_FOUND);
    assert_int_equal(skv_json_require_int(root, "zz", "t", &i), SKV_STATUS_NOT_FOUND);
    json_decref(root);
    unlink(path);

    /* Invalid JSON is FORMAT, a missing file NOT_FOUND. */
    char path2[] = "/tmp/skv_test_json_XXXXXX";
    fd = mkstemp(path2);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "{\"a\": ", 6), 6);
    close(fd);
    assert_int_equal(skv_json_load_file(path2, &root), SKV_STATUS_FORMAT);
    unlink(path2);
    assert_int_equal(skv_json_load_file(path2, &root), SKV_STATUS_NOT_FOUND);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_status_names_are_total),
        cmocka_unit_test(test_alloc_fail_injection),
        cmocka_unit_test(test_clock_deadline),
        cmocka_unit_test(test_json_getters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
