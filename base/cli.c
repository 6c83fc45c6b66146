/*
 * cli.c: the table-driven command line of cli.h. Values are applied in order (defaults in the
 * table's storage, then variables, then flags); a later flag overrides an earlier one, and a
 * list flag's occurrences append to each other.
 */
#include <errno.h>
#include <float.h>
#include <inttypes.h>
#include <math.h>
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

/* Parses text as a whole decimal number in [min, max] (strtof when is_float, so that a value
 * past float's range is refused rather than rounded to infinity); 0 on success, -1 otherwise. */
static int skv_cli_real(const char *text, double min, double max, int is_float, double *v_p)
{
    char *end = NULL;
    errno = 0;
    double v = is_float ? (double)strtof(text, &end) : strtod(text, &end);
    if (text[0] == '\0' || *end != '\0' || errno != 0 || isnan(v) || v < min || v > max) {
        return -1;
    }
    *v_p = v;
    return 0;
}

/* Appends text's comma-separated whole numbers to o's list; -1 on a bad item, -2 when the list
 * is full. */
static int skv_cli_list_add(const skv_cli_opt_t *o, const char *text)
{
    skv_cli_list_t *l = o->value;
    for (const char *p = text; *p != '\0';) {
        const char *comma = strchr(p, ',');
        size_t len = comma != NULL ? (size_t)(comma - p) : strlen(p);
        char item[32];
        int64_t v = 0;
        if (len == 0 || len >= sizeof(item)) {
            return -1;
        }
        if (l->n == l->cap) {
            return -2;
        }
        memcpy(item, p, len);
        item[len] = '\0';
        if (skv_cli_number(item, o->min, o->max, &v) != 0) {
            return -1;
        }
        ((int32_t *)l->items)[l->n++] = (int32_t)v;
        p += len;
        if (*p == ',' && *++p == '\0') {
            return -1; /* a trailing comma */
        }
    }
    return 0;
}

/* Adds text to o's list (replacing what it held first when replace); reports a bad value. */
static int skv_cli_set_list(const char *prog, const skv_cli_opt_t *o, const char *from,
                            const char *text, int replace)
{
    skv_cli_list_t *l = o->value;
    if (replace) {
        l->n = 0;
    }
    if (o->type == SKV_CLI_STRINGS) {
        if (text[0] != '\0' && l->n == l->cap) {
            fprintf(stderr, "%s: %s '%s': at most %zu values\n", prog, from, text, l->cap);
            return -1;
        }
        if (text[0] != '\0') {
            ((const char **)l->items)[l->n++] = text;
        }
        return 0;
    }
    int bad = skv_cli_list_add(o, text);
    if (bad == -2) {
        fprintf(stderr, "%s: %s '%s': at most %zu values\n", prog, from, text, l->cap);
    } else if (bad != 0) {
        fprintf(stderr,
                "%s: %s '%s': expected whole numbers in [%" PRId64 ", %" PRId64
                "], comma-separated\n",
                prog, from, text, o->min, o->max);
    }
    return bad != 0 ? -1 : 0;
}

/* Stores a number into o's value; reports a bad one. */
static int skv_cli_set_number(const char *prog, const skv_cli_opt_t *o, const char *from,
                              const char *text)
{
    int64_t v = 0;
    double d = 0;
    if (o->type == SKV_CLI_FLOAT || o->type == SKV_CLI_DOUBLE) {
        if (skv_cli_real(text, o->fmin, o->fmax, o->type == SKV_CLI_FLOAT, &d) != 0) {
            if (o->fmin <= -FLT_MAX && o->fmax >= FLT_MAX) { /* any finite number */
                fprintf(stderr, "%s: %s '%s': expected a number\n", prog, from, text);
            } else {
                fprintf(stderr, "%s: %s '%s': expected a number in [%g, %g]\n", prog, from, text,
                        o->fmin, o->fmax);
            }
            return -1;
        }
        if (o->type == SKV_CLI_FLOAT) {
            *(float *)o->value = (float)d;
        } else {
            *(double *)o->value = d;
        }
        return 0;
    }
    if (skv_cli_number(text, o->min, o->max, &v) != 0) {
        fprintf(stderr, "%s: %s '%s': expected a whole number in [%" PRId64 ", %" PRId64 "]\n",
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

/* Stores text into o's value (from is "--name" or "SKV_NAME"; replace: a list starts over);
 * reports a bad one. */
static int skv_cli_set(const char *prog, const skv_cli_opt_t *o, const char *from, const char *text,
                       int replace)
{
    switch (o->type) {
    case SKV_CLI_STRING:
        *(const char **)o->value = text;
        return 0;
    case SKV_CLI_SWITCH:
        *(int *)o->value = text == NULL || (text[0] != '\0' && strcmp(text, "0") != 0);
        return 0;
    case SKV_CLI_INT:
    case SKV_CLI_INT64:
    case SKV_CLI_FLOAT:
    case SKV_CLI_DOUBLE:
        return skv_cli_set_number(prog, o, from, text);
    case SKV_CLI_LIST:
    case SKV_CLI_STRINGS:
        return skv_cli_set_list(prog, o, from, text, replace);
    }
    return -1;
}

/* A list's items as --help shows them: comma-separated, "-" when empty. */
static void skv_cli_list_text(const skv_cli_opt_t *o, char *buf, size_t n)
{
    const skv_cli_list_t *l = o->value;
    size_t at = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < l->n && at < n; i++) {
        const char *sep = i > 0 ? "," : "";
        int w = o->type == SKV_CLI_LIST
                    ? snprintf(buf + at, n - at, "%s%d", sep, ((const int32_t *)l->items)[i])
                    : snprintf(buf + at, n - at, "%s%s", sep, ((const char *const *)l->items)[i]);
        at += w > 0 ? (size_t)w : 0;
    }
    if (l->n == 0) {
        snprintf(buf, n, "-");
    }
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
    case SKV_CLI_FLOAT:
        snprintf(buf, n, "%g", (double)*(const float *)o->value);
        return;
    case SKV_CLI_DOUBLE:
        snprintf(buf, n, "%g", *(const double *)o->value);
        return;
    case SKV_CLI_LIST:
    case SKV_CLI_STRINGS:
        skv_cli_list_text(o, buf, n);
        return;
    }
}

static void skv_cli_help(const char *prog, const char *summary, const skv_cli_opt_t *opts,
                         size_t n_opts, int positional)
{
    printf("usage: %s [flags]%s\n%s\nflags (--name VALUE or --name=VALUE; the variable, when "
           "set, comes first):\n",
           prog, positional ? " [arguments]" : "", summary);
    for (size_t i = 0; i < n_opts; i++) {
        const skv_cli_type_t t = opts[i].type;
        char def[128];
        skv_cli_default(&opts[i], def, sizeof(def));
        char flag[64];
        snprintf(flag, sizeof(flag), "--%s%s", opts[i].name,
                 t == SKV_CLI_SWITCH                         ? ""
                 : t == SKV_CLI_LIST || t == SKV_CLI_STRINGS ? " V..."
                                                             : " V");
        printf("  %-24s %s [default %s%s%s]\n", flag, opts[i].help, def,
               opts[i].env ? ", env " : "", opts[i].env ? opts[i].env : "");
    }
}

static const skv_cli_opt_t *skv_cli_find(const skv_cli_opt_t *opts, size_t n_opts, const char *name,
                                         size_t len)
{
    for (size_t i = 0; i < n_opts; i++) {
        if (strlen(opts[i].name) == len && strncmp(opts[i].name, name, len) == 0) {
            return &opts[i];
        }
    }
    return NULL;
}

/* Whether argv asks for help among its flags: walks them as the parser does (a flag that takes
 * a value skips it) without checking anything, up to the first positional argument. */
static int skv_cli_wants_help(const skv_cli_opt_t *opts, size_t n_opts, int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            return 1;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            return 0;
        }
        const skv_cli_opt_t *o =
            strchr(a, '=') ? NULL : skv_cli_find(opts, n_opts, a + 2, strlen(a + 2));
        i += o != NULL && o->type != SKV_CLI_SWITCH;
    }
    return 0;
}

/* Applies the set variables; -1 when one is bad. */
static int skv_cli_env(const char *prog, const skv_cli_opt_t *opts, size_t n_opts)
{
    for (size_t i = 0; i < n_opts; i++) {
        const char *v = opts[i].env != NULL ? getenv(opts[i].env) : NULL;
        if (v != NULL && v[0] != '\0' && skv_cli_set(prog, &opts[i], opts[i].env, v, 1) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Applies the flags of argv[1..argc) up to the first positional argument, whose index goes to
 * *end_p; seen (n_opts entries, zeroed) marks the lists the command line already started. */
static int skv_cli_flags(const char *prog, const skv_cli_opt_t *opts, size_t n_opts, int argc,
                         char **argv, unsigned char *seen, int *end_p)
{
    int i = 1;
    while (i < argc && strncmp(argv[i], "--", 2) == 0 && argv[i][2] != '\0') {
        const char *name = argv[i] + 2, *eq = strchr(name, '=');
        size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const skv_cli_opt_t *o = skv_cli_find(opts, n_opts, name, len);
        if (o == NULL) {
            fprintf(stderr, "%s: unknown flag --%.*s (--help lists them)\n", prog, (int)len, name);
            return -1;
        }
        const char *text = eq != NULL ? eq + 1 : NULL;
        if (o->type != SKV_CLI_SWITCH && text == NULL) {
            if (i + 1 >= argc) {
                fprintf(stderr, "%s: --%s needs a value\n", prog, o->name);
                return -1;
            }
            text = argv[++i];
        }
        char from[80];
        snprintf(from, sizeof(from), "--%s", o->name);
        if (skv_cli_set(prog, o, from, text, !seen[o - opts]) != 0) {
            return -1;
        }
        seen[o - opts] = 1;
        i++;
    }
    *end_p = i;
    return 0;
}

int skv_cli_parse(const char *prog, const char *summary, const skv_cli_opt_t *opts, size_t n_opts,
                  int argc, char **argv, int *positional_p)
{
    if (skv_cli_wants_help(opts, n_opts, argc, argv)) { /* before any value is checked */
        skv_cli_help(prog, summary, opts, n_opts, positional_p != NULL);
        return SKV_CLI_HELP;
    }
    if (skv_cli_env(prog, opts, n_opts) != 0) {
        return SKV_CLI_USAGE;
    }
    unsigned char *seen = calloc(n_opts + 1, 1);
    int end = argc;
    if (seen == NULL) {
        fprintf(stderr, "%s: out of memory\n", prog);
        return SKV_CLI_USAGE;
    }
    int bad = skv_cli_flags(prog, opts, n_opts, argc, argv, seen, &end);
    free(seen);
    if (bad != 0) {
        return SKV_CLI_USAGE;
    }
    if (end < argc && positional_p == NULL) {
        fprintf(stderr, "%s: unexpected argument '%s' (--help lists the flags)\n", prog, argv[end]);
        return SKV_CLI_USAGE;
    }
    if (positional_p != NULL) {
        *positional_p = end;
    }
    return SKV_CLI_OK;
}

int skv_cli_value(const char *prog, const skv_cli_opt_t *opt, const char *from, const char *text)
{
    return skv_cli_set(prog, opt, from, text, 1) == 0 ? SKV_CLI_OK : SKV_CLI_USAGE;
}
