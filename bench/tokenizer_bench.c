/*
 * tokenizer_bench: load time and single-thread encode throughput of skv_tokenizer.
 * Compare with bench/tokenizer_bench.py (HF tokenizers on the same files).
 *
 *   tokenizer_bench [flags] TOKENIZER TEXT_FILE [REPEATS]
 * (`tokenizer_bench --help` lists the flags with their defaults and SKV_TOKENIZER_BENCH_*
 * variables: one table, base/cli.h; REPEATS stands for --repeats.) Prints load ms (best and median
 * of 5 loads) next to the floor set by jansson alone (parse and free the same tokenizer.json, best
 * of 5), encode MB/s (best and median of REPEATS whole- file encodes, no BOS, specials parsed), the
 * token count and a checksum of the ids so runs can be checked against the HF side; then the same
 * text encoded line by line (each "\n"-ended line its own request, the serving pattern), MB/s and
 * checksum. A benchmark, not a test: nothing here asserts a speed.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/alloc.h"
#include "base/cli.h"
#include "base/clock.h"
#include "common/tokenizer/tokenizer.h"

#include <sys/stat.h>

#define SKV_BENCH_LOADS 5

static int skv_bench_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Reads a whole file into a new buffer. */
static char *skv_bench_read(const char *path, size_t *len_p)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    *len_p = fread(buf, 1, (size_t)n, f);
    fclose(f);
    return buf;
}

/* Times SKV_BENCH_LOADS loads; fills ms[] sorted; returns the last tokenizer. */
static skv_tokenizer_t *skv_bench_load(const char *path, double *ms)
{
    skv_tokenizer_t *tok = NULL;
    for (int i = 0; i < SKV_BENCH_LOADS; i++) {
        skv_tokenizer_destroy(tok);
        tok = NULL;
        int64_t t0 = skv_clock_now_ns();
        if (skv_tokenizer_load(path, &tok) != SKV_STATUS_OK) {
            return NULL;
        }
        ms[i] = (double)(skv_clock_now_ns() - t0) / 1e6;
    }
    qsort(ms, SKV_BENCH_LOADS, sizeof(*ms), skv_bench_cmp);
    return tok;
}

/* Best of SKV_BENCH_LOADS jansson parse + free of the file: the part of load we do not own. */
static double skv_bench_json_floor(const char *path)
{
    char full[4096];
    size_t len;
    struct stat st;
    snprintf(full, sizeof(full), "%s%s", path,
             stat(path, &st) == 0 && S_ISDIR(st.st_mode) ? "/tokenizer.json" : "");
    char *buf = skv_bench_read(full, &len);
    double best = 1e9;
    for (int i = 0; buf != NULL && i < SKV_BENCH_LOADS; i++) {
        json_error_t err;
        int64_t t0 = skv_clock_now_ns();
        json_decref(json_loadb(buf, len, 0, &err));
        double ms = (double)(skv_clock_now_ns() - t0) / 1e6;
        best = ms < best ? ms : best;
    }
    free(buf);
    return best;
}

/* Encodes text line by line (each line keeps its "\n"); returns MB/s, fills count/checksum. */
static double skv_bench_lines(const skv_tokenizer_t *tok, const char *text, size_t len, size_t *n_p,
                              uint64_t *sum_p)
{
    int64_t t0 = skv_clock_now_ns();
    size_t n_all = 0;
    uint64_t sum = 0;
    for (size_t at = 0; at < len;) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t end = nl ? (size_t)(nl - text) + 1 : len, n;
        int32_t *ids;
        if (skv_tokenizer_encode(tok, text + at, end - at, SKV_TOKENIZER_ENCODE_PARSE_SPECIAL, &ids,
                                 &n) != SKV_STATUS_OK) {
            return 0;
        }
        for (size_t i = 0; i < n; i++) {
            sum = sum * 1000003u + (uint64_t)ids[i];
        }
        n_all += n;
        skv_free(ids);
        at = end;
    }
    *n_p = n_all;
    *sum_p = sum;
    return (double)len / 1e6 / ((double)(skv_clock_now_ns() - t0) / 1e9);
}

/* Parses the flags, then TOKENIZER TEXT_FILE [REPEATS] (*pos_p: TOKENIZER's index); SKV_CLI_OK,
 * SKV_CLI_HELP or SKV_CLI_USAGE (reported). */
static int skv_bench_parse(int argc, char **argv, int *repeats_p, int *pos_p)
{
    const skv_cli_opt_t opts[] = {
        {"repeats", "SKV_TOKENIZER_BENCH_REPEATS", SKV_CLI_INT, repeats_p, 1, 1 << 20, 0, 0,
         "whole-file encodes (and per-line passes); REPEATS after TEXT_FILE stands for it"},
    };
    int st = skv_cli_parse("tokenizer_bench",
                           "tokenizer_bench [flags] TOKENIZER TEXT_FILE [REPEATS]: skv_tokenizer "
                           "load time and single-thread encode MB/s (TOKENIZER: a model folder or "
                           "a tokenizer.json).",
                           opts, 1, argc, argv, pos_p);
    int n = argc - *pos_p;
    if (st == SKV_CLI_OK && (n < 2 || n > 3)) {
        fprintf(stderr, "usage: tokenizer_bench [flags] TOKENIZER TEXT_FILE [REPEATS] (--help "
                        "lists the flags)\n");
        return SKV_CLI_USAGE;
    }
    return st == SKV_CLI_OK && n == 3
               ? skv_cli_value("tokenizer_bench", &opts[0], "REPEATS", argv[*pos_p + 2])
               : st;
}

int main(int argc, char **argv)
{
    int repeats = 5, pos = 0;
    int parsed = skv_bench_parse(argc, argv, &repeats, &pos);
    if (parsed != SKV_CLI_OK) {
        return parsed == SKV_CLI_HELP ? 0 : 2;
    }
    const char *tok_path = argv[pos], *text_path = argv[pos + 1];
    size_t len;
    char *text = skv_bench_read(text_path, &len);
    double load_ms[SKV_BENCH_LOADS], *mbs = calloc((size_t)repeats, sizeof(double));
    skv_tokenizer_t *tok = text ? skv_bench_load(tok_path, load_ms) : NULL;
    if (tok == NULL) {
        fprintf(stderr, "cannot read %s or load %s\n", text_path, tok_path);
        return 1;
    }
    size_t n = 0;
    uint64_t sum = 0;
    for (int r = 0; r < repeats; r++) {
        int32_t *ids;
        int64_t t0 = skv_clock_now_ns();
        if (skv_tokenizer_encode(tok, text, len, SKV_TOKENIZER_ENCODE_PARSE_SPECIAL, &ids, &n) !=
            SKV_STATUS_OK) {
            return 1;
        }
        mbs[r] = (double)len / 1e6 / ((double)(skv_clock_now_ns() - t0) / 1e9);
        sum = 0;
        for (size_t i = 0; i < n; i++) {
            sum = sum * 1000003u + (uint64_t)ids[i];
        }
        skv_free(ids);
    }
    qsort(mbs, (size_t)repeats, sizeof(*mbs), skv_bench_cmp);
    double floor_ms = skv_bench_json_floor(tok_path);
    printf("skv  vocab=%zu load_ms best=%.1f median=%.1f (jansson parse+free alone: %.1f) | encode "
           "%.2f MB text: MB/s best=%.2f "
           "median=%.2f | tokens=%zu checksum=%016llx\n",
           skv_tokenizer_n_vocab(tok), load_ms[0], load_ms[SKV_BENCH_LOADS / 2], floor_ms,
           (double)len / 1e6, mbs[repeats - 1], mbs[repeats / 2], n, (unsigned long long)sum);
    double line_mbs = 0;
    for (int r = 0; r < repeats; r++) {
        double m = skv_bench_lines(tok, text, len, &n, &sum);
        line_mbs = m > line_mbs ? m : line_mbs;
    }
    printf("skv  per-line encode: MB/s best=%.2f | tokens=%zu checksum=%016llx\n", line_mbs, n,
           (unsigned long long)sum);
    skv_tokenizer_destroy(tok);
    free(mbs);
    free(text);
    return 0;
}
