/*
 * test_cli.c: the command-line table (base/cli.h): environment then flags, both flag forms,
 * strict whole numbers inside their range (the "2G" and "abc" that atoi took as 2 and 0),
 * switches, unknown flags, missing values, positional arguments, and --help on stdout.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/cli.h"

typedef struct {
    const char *name;
    int mb;
    int64_t ms;
    int on;
} args_t;

static int parse(args_t *a, int argc, char **argv, int *pos)
{
    a->name = "default";
    a->mb = 256;
    a->ms = 2000;
    a->on = 0;
    const skv_cli_opt_t opts[] = {
        {"name", "SKV_TEST_CLI_NAME", SKV_CLI_STRING, &a->name, 0, 0, "a name"},
        {"kv-mem-mb", "SKV_TEST_CLI_MB", SKV_CLI_INT, &a->mb, 1, 1 << 20, "MiB"},
        {"wait-ms", NULL, SKV_CLI_INT64, &a->ms, -1, 3600000, "ms"},
        {"on", "SKV_TEST_CLI_ON", SKV_CLI_SWITCH, &a->on, 0, 1, "a switch"},
    };
    return skv_cli_parse("test_cli", "a test", opts, sizeof(opts) / sizeof(opts[0]), argc, argv,
                         pos);
}

#define ARGV(...) (char *[]){"test_cli", __VA_ARGS__, NULL}
#define ARGC(...) ((int)(sizeof((char *[]){"test_cli", __VA_ARGS__}) / sizeof(char *)))
#define PARSE(a, ...) parse(a, ARGC(__VA_ARGS__), ARGV(__VA_ARGS__), NULL)

static void test_forms_and_defaults(void **state)
{
    args_t a;
    assert_int_equal(parse(&a, 1, (char *[]){"test_cli", NULL}, NULL), SKV_CLI_OK);
    assert_string_equal(a.name, "default");
    assert_int_equal(a.mb, 256);
    assert_int_equal(PARSE(&a, "--name", "x", "--kv-mem-mb=2048", "--wait-ms", "-1", "--on"),
                     SKV_CLI_OK);
    assert_string_equal(a.name, "x");
    assert_int_equal(a.mb, 2048);
    assert_int_equal(a.ms, -1);
    assert_int_equal(a.on, 1);
    assert_int_equal(PARSE(&a, "--on=0"), SKV_CLI_OK);
    assert_int_equal(a.on, 0);
}

static void test_strict_numbers(void **state)
{
    args_t a;
    assert_int_equal(PARSE(&a, "--kv-mem-mb", "2G"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--kv-mem-mb", "abc"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--kv-mem-mb", ""), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--kv-mem-mb", "0"), SKV_CLI_USAGE);        /* below the range */
    assert_int_equal(PARSE(&a, "--kv-mem-mb", "1048577"), SKV_CLI_USAGE);  /* above it */
    assert_int_equal(PARSE(&a, "--wait-ms", "99999999999999999999"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--kv-mem-mb", "1048576"), SKV_CLI_OK);
}

static void test_refusals(void **state)
{
    args_t a;
    assert_int_equal(PARSE(&a, "--nope", "1"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--kv-mem-mb"), SKV_CLI_USAGE); /* missing value */
    assert_int_equal(PARSE(&a, "stray"), SKV_CLI_USAGE);
    int pos = 0;
    assert_int_equal(parse(&a, ARGC("--on", "file.txt"), ARGV("--on", "file.txt"), &pos),
                     SKV_CLI_OK);
    assert_int_equal(pos, 2);
}

static void test_environment_then_flags(void **state)
{
    args_t a;
    setenv("SKV_TEST_CLI_MB", "512", 1);
    setenv("SKV_TEST_CLI_ON", "1", 1);
    assert_int_equal(parse(&a, 1, (char *[]){"test_cli", NULL}, NULL), SKV_CLI_OK);
    assert_int_equal(a.mb, 512);
    assert_int_equal(a.on, 1);
    assert_int_equal(PARSE(&a, "--kv-mem-mb", "64"), SKV_CLI_OK); /* the flag wins */
    assert_int_equal(a.mb, 64);
    setenv("SKV_TEST_CLI_MB", "2G", 1);
    assert_int_equal(parse(&a, 1, (char *[]){"test_cli", NULL}, NULL), SKV_CLI_USAGE);
    unsetenv("SKV_TEST_CLI_MB");
    unsetenv("SKV_TEST_CLI_ON");
}

static void test_help_on_stdout(void **state)
{
    args_t a;
    fflush(stdout);
    char path[] = "/tmp/skv_test_cli_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *saved = stdout;
    stdout = fdopen(fd, "w");
    int st = PARSE(&a, "--kv-mem-mb", "2G", "--help"); /* --help wins over a bad value */
    fclose(stdout);
    stdout = saved;
    assert_int_equal(st, SKV_CLI_HELP);
    FILE *f = fopen(path, "r");
    char text[4096] = {0};
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    remove(path);
    assert_true(n > 0);
    assert_non_null(strstr(text, "--kv-mem-mb V"));
    assert_non_null(strstr(text, "default 256, env SKV_TEST_CLI_MB"));
    assert_non_null(strstr(text, "--on "));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms_and_defaults), cmocka_unit_test(test_strict_numbers),
        cmocka_unit_test(test_refusals),           cmocka_unit_test(test_environment_then_flags),
        cmocka_unit_test(test_help_on_stdout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
