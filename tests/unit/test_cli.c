/*
 * test_cli.c: the command-line table (base/cli.h): environment then flags, both flag forms,
 * strict whole numbers inside their range (the "2G" and "abc" that atoi took as 2 and 0),
 * strict floats and doubles, repeatable lists, switches, unknown flags, missing values,
 * positional arguments (a command's flags after them), one positional value, and --help on
 * stdout.
 */
#include <math.h>
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
    float temp;
    double rate;
    int32_t ids[4];
    const char *stops[2];
    skv_cli_list_t id_list, stop_list;
} args_t;

#define N_ROWS 8

/* The test table over a (defaults set); rows[N_ROWS]. */
static void table(args_t *a, skv_cli_opt_t *rows)
{
    a->name = "default";
    a->mb = 256;
    a->ms = 2000;
    a->on = 0;
    a->temp = 0.5f;
    a->rate = INFINITY;
    a->ids[0] = 1;
    a->ids[1] = 4;
    a->id_list = (skv_cli_list_t){a->ids, 4, 2};
    a->stop_list = (skv_cli_list_t){a->stops, 2, 0};
    const skv_cli_opt_t opts[N_ROWS] = {
        {"name", "SKV_TEST_CLI_NAME", SKV_CLI_STRING, &a->name, 0, 0, 0, 0, "a name"},
        {"kv-mem-mb", "SKV_TEST_CLI_MB", SKV_CLI_INT, &a->mb, 1, 1 << 20, 0, 0, "MiB"},
        {"wait-ms", NULL, SKV_CLI_INT64, &a->ms, -1, 3600000, 0, 0, "ms"},
        {"on", "SKV_TEST_CLI_ON", SKV_CLI_SWITCH, &a->on, 0, 1, 0, 0, "a switch"},
        {"temperature", "SKV_TEST_CLI_TEMP", SKV_CLI_FLOAT, &a->temp, 0, 0, 0.0, 2.0, "T"},
        {"rate", NULL, SKV_CLI_DOUBLE, &a->rate, 0, 0, 1e-9, INFINITY, "req/s"},
        {"batch", "SKV_TEST_CLI_BATCH", SKV_CLI_LIST, &a->id_list, 1, 1000, 0, 0, "batches"},
        {"stop", NULL, SKV_CLI_STRINGS, &a->stop_list, 0, 0, 0, 0, "stop strings"},
    };
    memcpy(rows, opts, sizeof(opts));
}

static int parse(args_t *a, int argc, char **argv, int *pos)
{
    skv_cli_opt_t opts[N_ROWS];
    table(a, opts);
    return skv_cli_parse("test_cli", "a test", opts, N_ROWS, argc, argv, pos);
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

static void test_floats(void **state)
{
    args_t a;
    assert_int_equal(PARSE(&a, "--temperature", "0.7", "--rate=1e-9"), SKV_CLI_OK);
    assert_true(a.temp == 0.7f);
    assert_true(a.rate == 1e-9);
    assert_int_equal(PARSE(&a, "--rate", "inf"), SKV_CLI_OK); /* the range reaches infinity */
    assert_true(isinf(a.rate));
    assert_int_equal(PARSE(&a, "--temperature", "2x"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--temperature", ""), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--temperature", "nan"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--temperature", "inf"), SKV_CLI_USAGE); /* past fmax */
    assert_int_equal(PARSE(&a, "--temperature", "-0.1"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--temperature", "2.5"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--temperature", "1e39"), SKV_CLI_USAGE); /* past float */
    assert_int_equal(PARSE(&a, "--rate", "nan"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--rate", "0"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--rate", "1e400"), SKV_CLI_USAGE); /* past double */
    assert_int_equal(PARSE(&a, "--temperature", "2"), SKV_CLI_OK); /* fmax itself */
    assert_true(a.temp == 2.0f);
    setenv("SKV_TEST_CLI_TEMP", "1.5", 1);
    assert_int_equal(parse(&a, 1, (char *[]){"test_cli", NULL}, NULL), SKV_CLI_OK);
    assert_true(a.temp == 1.5f);
    assert_int_equal(PARSE(&a, "--temperature", "0"), SKV_CLI_OK); /* the flag wins */
    assert_true(a.temp == 0.0f);
    setenv("SKV_TEST_CLI_TEMP", "hot", 1);
    assert_int_equal(parse(&a, 1, (char *[]){"test_cli", NULL}, NULL), SKV_CLI_USAGE);
    unsetenv("SKV_TEST_CLI_TEMP");
}

static void test_lists(void **state)
{
    args_t a;
    assert_int_equal(parse(&a, 1, (char *[]){"test_cli", NULL}, NULL), SKV_CLI_OK);
    assert_int_equal(a.id_list.n, 2);                        /* the default */
    assert_int_equal(PARSE(&a, "--batch", "8"), SKV_CLI_OK); /* replaces the default */
    assert_int_equal(a.id_list.n, 1);
    assert_int_equal(a.ids[0], 8);
    assert_int_equal(PARSE(&a, "--batch", "2,3", "--on", "--batch=5"), SKV_CLI_OK); /* appends */
    assert_int_equal(a.id_list.n, 3);
    assert_int_equal(a.ids[0], 2);
    assert_int_equal(a.ids[1], 3);
    assert_int_equal(a.ids[2], 5);
    assert_int_equal(PARSE(&a, "--batch="), SKV_CLI_OK); /* empties it */
    assert_int_equal(a.id_list.n, 0);
    assert_int_equal(PARSE(&a, "--batch", "1,,2"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--batch", "1,"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--batch", ",1"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--batch", "2x"), SKV_CLI_USAGE);
    assert_int_equal(PARSE(&a, "--batch", "0"), SKV_CLI_USAGE);         /* below the range */
    assert_int_equal(PARSE(&a, "--batch", "1,2,3,4,5"), SKV_CLI_USAGE); /* past the capacity */
    assert_int_equal(PARSE(&a, "--batch", "1,2", "--batch", "3,4,5"), SKV_CLI_USAGE);
    setenv("SKV_TEST_CLI_BATCH", "7,9", 1);
    assert_int_equal(parse(&a, 1, (char *[]){"test_cli", NULL}, NULL), SKV_CLI_OK);
    assert_int_equal(a.id_list.n, 2);
    assert_int_equal(a.ids[0], 7);
    assert_int_equal(a.ids[1], 9);
    assert_int_equal(PARSE(&a, "--batch", "3"), SKV_CLI_OK); /* the command line replaces it */
    assert_int_equal(a.id_list.n, 1);
    assert_int_equal(a.ids[0], 3);
    unsetenv("SKV_TEST_CLI_BATCH");
    assert_int_equal(PARSE(&a, "--stop", "a,b", "--stop", "c"), SKV_CLI_OK);
    assert_int_equal(a.stop_list.n, 2);
    assert_string_equal(a.stops[0], "a,b"); /* a string item keeps its commas */
    assert_string_equal(a.stops[1], "c");
    assert_int_equal(PARSE(&a, "--stop", "a", "--stop", "b", "--stop", "c"), SKV_CLI_USAGE);
}

static void test_command_flags(void **state)
{
    args_t a;
    int pos = 0;
    /* --help after the first positional argument is the command's, not this table's */
    char **argv = ARGV("--wait-ms", "-1", "generate", "--help");
    assert_int_equal(parse(&a, ARGC("--wait-ms", "-1", "generate", "--help"), argv, &pos),
                     SKV_CLI_OK);
    assert_int_equal(pos, 3);
    assert_int_equal(a.ms, -1);
    char **cmd = ARGV("--on", "generate", "--name", "x", "--bogus");
    assert_int_equal(parse(&a, ARGC("--on", "generate", "--name", "x", "--bogus"), cmd, &pos),
                     SKV_CLI_OK);
    assert_int_equal(pos, 2);
    assert_int_equal(parse(&a, 3, cmd + pos, NULL), SKV_CLI_OK); /* "generate" plays argv[0] */
    assert_string_equal(a.name, "x");
    assert_int_equal(parse(&a, 4, cmd + pos, NULL), SKV_CLI_USAGE); /* --bogus */
    assert_int_equal(PARSE(&a, "-h"), SKV_CLI_HELP);
}

static void test_value(void **state)
{
    args_t a;
    skv_cli_opt_t opts[N_ROWS];
    table(&a, opts);
    assert_int_equal(skv_cli_value("test_cli", &opts[1], "MB", "64"), SKV_CLI_OK);
    assert_int_equal(a.mb, 64);
    assert_int_equal(skv_cli_value("test_cli", &opts[1], "MB", "64k"), SKV_CLI_USAGE);
    assert_int_equal(skv_cli_value("test_cli", &opts[4], "T", "1.25"), SKV_CLI_OK);
    assert_true(a.temp == 1.25f);
    assert_int_equal(skv_cli_value("test_cli", &opts[6], "BATCH", "9,10"), SKV_CLI_OK);
    assert_int_equal(a.id_list.n, 2);
    assert_int_equal(a.ids[0], 9);
    assert_int_equal(a.ids[1], 10);
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
    assert_non_null(strstr(text, "default 0.5, env SKV_TEST_CLI_TEMP"));
    assert_non_null(strstr(text, "--rate V"));
    assert_non_null(strstr(text, "default inf]"));
    assert_non_null(strstr(text, "--batch V..."));
    assert_non_null(strstr(text, "default 1,4, env SKV_TEST_CLI_BATCH"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forms_and_defaults),
        cmocka_unit_test(test_strict_numbers),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_environment_then_flags),
        cmocka_unit_test(test_floats),
        cmocka_unit_test(test_lists),
        cmocka_unit_test(test_command_flags),
        cmocka_unit_test(test_value),
        cmocka_unit_test(test_help_on_stdout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
