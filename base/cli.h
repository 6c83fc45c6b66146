/*
 * cli.h: one table-driven command line for every binary. A table row names a flag, its SKV_*
 * environment variable, its type and range, where its value goes and a one-line help; the
 * parser applies the environment first, then argv, strictly (a number is the whole argument
 * and inside its range, so "--kv-mem-mb 2G" is an error, not 2), and --help prints one line
 * per flag with its default and variable to stdout. Owns nothing; main thread.
 */
#ifndef SKV_BASE_CLI_H
#define SKV_BASE_CLI_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    SKV_CLI_STRING = 0, /* value: const char ** (points into argv or the environment) */
    SKV_CLI_INT,        /* value: int *; a whole number in [min, max] */
    SKV_CLI_INT64,      /* value: int64_t *; a whole number in [min, max] */
    SKV_CLI_SWITCH,     /* value: int *; the flag takes no argument and sets 1 (--name=0 sets
                           0); its variable is on unless empty or "0" */
    SKV_CLI_FLOAT,      /* value: float *; a decimal number (strtof over the whole argument) in
                           [fmin, fmax]; never NaN, infinite ("inf") only when the range
                           reaches it; out of float's range is an error, not a rounding */
    SKV_CLI_DOUBLE,     /* value: double *; as SKV_CLI_FLOAT, through strtod */
    SKV_CLI_LIST,       /* value: skv_cli_list_t * of int32_t items: whole numbers in [min, max]
                           (a range inside int32_t's), comma-separated ("1,4,16"); the flag may
                           be repeated */
    SKV_CLI_STRINGS,    /* value: skv_cli_list_t * of const char * items: each occurrence of the
                           flag adds its whole argument, commas included; the flag may be
                           repeated; the variable gives one item */
} skv_cli_type_t;

/* The value of an SKV_CLI_LIST or SKV_CLI_STRINGS row: the caller's array, its capacity and its
 * count (n holds the default's count on entry). Each source replaces what the one before gave
 * (the default, then the variable, then the command line), and on the command line every
 * occurrence of the flag appends; an empty argument adds nothing, so --name= alone empties the
 * list. More than cap items is an error. */
typedef struct {
    void *items; /* int32_t[cap] (SKV_CLI_LIST) or const char *[cap] (SKV_CLI_STRINGS) */
    size_t cap, n;
} skv_cli_list_t;

typedef struct {
    const char *name; /* the flag without its dashes: "kv-mem-mb" */
    const char *env;  /* its variable ("SKV_KV_MEM_MB"), or NULL */
    skv_cli_type_t type;
    void *value;       /* holds the default on entry */
    int64_t min, max;  /* SKV_CLI_INT, SKV_CLI_INT64, SKV_CLI_LIST: the accepted range */
    double fmin, fmax; /* SKV_CLI_FLOAT, SKV_CLI_DOUBLE: the accepted range */
    const char *help;  /* one line */
} skv_cli_opt_t;

#define SKV_CLI_OK    0 /* parsed; run */
#define SKV_CLI_HELP  1 /* --help was printed to stdout: exit 0 */
#define SKV_CLI_USAGE 2 /* a bad flag or value was reported on stderr: exit 2 */

/* Parses the environment, then argv[1..argc) (--name VALUE or --name=VALUE) into the table's
 * values. Positional arguments are refused unless positional_p is given, which then gets the
 * index of the first one (argv order is kept: flags must come first, and what follows the first
 * positional argument is left alone, so a command's own flags can be parsed with its own table
 * on argv + index). --help or -h among the flags (before the first positional argument) prints
 * the usage line, summary and table and returns SKV_CLI_HELP before any value is checked.
 * Returns SKV_CLI_OK, SKV_CLI_HELP or SKV_CLI_USAGE (the message names the flag or variable and
 * the value). */
int skv_cli_parse(const char *prog, const char *summary, const skv_cli_opt_t *opts, size_t n_opts,
                  int argc, char **argv, int *positional_p);

/* Stores text into opt's value with skv_cli_parse's rules, for an argument that stands for a
 * flag (a positional one: "tokenizer_bench TOKENIZER FILE 5"); from names it in the message. A
 * list is replaced by text's items. Returns SKV_CLI_OK or SKV_CLI_USAGE (reported on stderr). */
int skv_cli_value(const char *prog, const skv_cli_opt_t *opt, const char *from, const char *text);

#endif /* SKV_BASE_CLI_H */
