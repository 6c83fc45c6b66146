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
    SKV_CLI_INT,        /* value: int * */
    SKV_CLI_INT64,      /* value: int64_t * */
    SKV_CLI_SWITCH,     /* value: int *; the flag takes no argument and sets 1; its
                           variable is on unless empty or "0" */
} skv_cli_type_t;

typedef struct {
    const char *name; /* the flag without its dashes: "kv-mem-mb" */
    const char *env;  /* its variable ("SKV_KV_MEM_MB"), or NULL */
    skv_cli_type_t type;
    void *value;      /* holds the default on entry */
    int64_t min, max; /* numbers: the accepted range */
    const char *help; /* one line */
} skv_cli_opt_t;

#define SKV_CLI_OK    0 /* parsed; run */
#define SKV_CLI_HELP  1 /* --help was printed to stdout: exit 0 */
#define SKV_CLI_USAGE 2 /* a bad flag or value was reported on stderr: exit 2 */

/* Parses the environment, then argv[1..argc) (--name VALUE or --name=VALUE) into the table's
 * values. Positional arguments are refused unless positional_p is given, which then gets the
 * index of the first one (argv order is kept: flags must come first). summary is printed
 * under the usage line of --help. Returns SKV_CLI_OK, SKV_CLI_HELP or SKV_CLI_USAGE (the
 * message names the flag or variable and the value). */
int skv_cli_parse(const char *prog, const char *summary, const skv_cli_opt_t *opts, size_t n_opts,
                  int argc, char **argv, int *positional_p);

#endif /* SKV_BASE_CLI_H */
