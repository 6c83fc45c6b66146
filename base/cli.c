/*
 * cli.c: the table-driven command line of cli.h. Values are applied in order (defaults in the
 * table's storage, then variables, then flags); a later flag overrides an earlier one.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/cli.h"

/* Parses text as a whole decimal integer in [min, max]; 0 on success, -1 otherwise. */
static int skv_cli_number(const char *text, int64_t min, int64_t max, int64_t *v_p)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (text[0] == '\0' || *end != '\0' || errno != 0 || v < min || v > max) {
        return -1;
    }
    *v_p = v;
    return 0;
}

/* Stores text into o's value; reports a bad one (from is "--name" or "SKV_NAME"). */
static int skv_cli_set(const char *prog, const skv_cli_opt_t *o, const char *from,
                       const char *text)
{
    int64_t v = 0;
    switch (o->type) {
    case SKV_CLI_STRING:
        *(const char **)o->value = text;
        return 0;
    case SKV_CLI_SWITCH:
        *(int *)o->value = text == NULL || (text[0] != '\0' && strcmp(text, "0") != 0);
        return 0;
    case SKV_CLI_INT:
    case SKV_CLI_INT64:
        if (skv_cli_number(text, o->min, o->max, &v) != 0) {
            fprintf(stderr,
                    "%s: %s '%s': expected a whole number in [%" PRId64 ", %" PRId64 "]\n",
                    prog, from, text, o->min, o->max);
            return -1;
        }
        if (o->type == SKV_CLI_INT) {
            *(int *)o->value = (int)v;
        } else {
            *(int64_t *)o->value = v;
        }
        return 0;
    }
    return -1;
}

/* The default as --help shows it. */
static void skv_cli_default(const skv_cli_opt_t *o, char *buf, size_t n)
{
    switch (o->type) {
    case SKV_CLI_STRING: {
        const char *s = *(const char *const *)o->value;
        snprintf(buf, n, "%s", s != NULL ? s : "-");
        return;
    }
    case SKV_CLI_SWITCH:
        snprintf(buf, n, "%s", *(const int *)o->value ? "on" : "off");
        return;
    case SKV_CLI_INT:
        snprintf(buf, n, "%d", *(const int *)o->value);
        return;
    case SKV_CLI_INT64:
        snprintf(buf, n, "%" PRId64, *(const int64_t *)o->value);
        return;
    }
}

static void skv_cli_help(const char *prog, const char *summary, const skv_cli_opt_t *opts,
                         size_t n_opts)
{
    printf("usage: %s [flags]\n%s\nflags (--name VALUE or --name=VALUE; the variable, when set, "
           "comes first):\n",
           prog, summary);
    for (size_t i = 0; i < n_opts; i++) {
        char def[64];
        skv_cli_default(&opts[i], def, sizeof(def));
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s%s", opts[i].name,
                 opts[i].type == SKV_CLI_SWITCH ? "" : " V");
        printf("  %-24s %s [default %s%s%s]\n", flag, opts[i].help, def,
               opts[i].env ? ", env " : "", opts[i].env ? opts[i].env : "");
    }
}

static const skv_cli_opt_t *skv_cli_find(const skv_cli_opt_t *opts, size_t n_opts,
                                         const char *name, size_t len)
{
    for (size_t i = 0; i < n_opts; i++) {
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) {
            return &opts[i];
        }
    }
    return NULL;
}

/* Applies the set variables; -1 when one is bad. */
static int skv_cli_env(const char *prog, const skv_cli_opt_t *opts, size_t n_opts)
{
    for (size_t i = 0; i < n_opts; i++) {
        const char *v = opts[i].env != NULL ? getenv(opts[i].env) : NULL;
        if (v != NULL && v[0] != '\0' && skv_cli_set(prog, &opts[i], opts[i].env, v) != 0) {
            return -1;
        }
    }
    return 0;
}

int skv_cli_parse(const char *prog, const char *summary, const skv_cli_opt_t *opts, size_t n_opts,
                  int argc, char **argv, int *positional_p)
{
    for (int i = 1; i < argc; i++) { /* --help wins, before any value is checked */
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            skv_cli_help(prog, summary, opts, n_opts);
            return SKV_CLI_HELP;
        }
    }
    if (skv_cli_env(prog, opts, n_opts) != 0) {
        return SKV_CLI_USAGE;
    }
    int i = 1;
    while (i < argc && strncmp(argv[i], "--", 2) == 0 && argv[i][2] != '\0') {
        const char *name = argv[i] + 2, *eq = strchr(name, '=');
        size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const skv_cli_opt_t *o = skv_cli_find(opts, n_opts, name, len);
        if (o == NULL) {
            fprintf(stderr, "%s: unknown flag --%.*s (--help lists them)\n", prog, (int)len, name);
            return SKV_CLI_USAGE;
        }
        const char *text = eq != NULL ? eq + 1 : NULL;
        if (o->type != SKV_CLI_SWITCH && text == NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: --%s needs a value\n", prog, o->name);
                return SKV_CLI_USAGE;
            }
            text = argv[++i];
        }
        char from[80];
        snprintf(from, sizeof(from), "--%s", o->name);
        if (skv_cli_set(prog, o, from, text) != 0) {
            return SKV_CLI_USAGE;
        }
        i++;
    }
    if (i < argc && positional_p == NULL) {
        fprintf(stderr, "%s: unexpected argument '%s' (--help lists the flags)\n", prog, argv[i]);
        return SKV_CLI_USAGE;
    }
    if (positional_p != NULL) {
        *positional_p = i;
    }
    return SKV_CLI_OK;
}
