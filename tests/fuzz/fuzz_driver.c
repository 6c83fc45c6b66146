/*
 * fuzz_driver.c: a plain main() for LLVMFuzzerTestOneInput targets, so they run as ctest
 * smoke tests with gcc (no libFuzzer): replays every file of a seed directory, then N seeded
 * pseudo-random mutations of them (bit flips, byte edits, inserted tokens, splices).
 *
 *   fuzz_target SEED_DIR N [RNG_SEED]     smoke run (exit 0 when nothing crashed)
 *   fuzz_target FILE                      replay one input (e.g. a saved crash), logs on stderr
 * During a smoke run stderr (our error logs, sanitizer reports) goes to NAME.log in the current
 * directory and the input being run to NAME.last; both are removed when the run passes, so a
 * crash leaves its input and report behind.
 */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SKV_FUZZ_MAX_SEEDS 64
#define SKV_FUZZ_MAX_SIZE  (64 * 1024)

typedef struct {
    uint8_t *data;
    size_t size;
} skv_fuzz_buf_t;

static uint64_t skv_fuzz_rng;

static uint64_t skv_fuzz_next(void)
{
    skv_fuzz_rng ^= skv_fuzz_rng << 13;
    skv_fuzz_rng ^= skv_fuzz_rng >> 7;
    skv_fuzz_rng ^= skv_fuzz_rng << 17;
    return skv_fuzz_rng;
}

static size_t skv_fuzz_below(size_t n)
{
    return n == 0 ? 0 : (size_t)(skv_fuzz_next() % n);
}

/* Reads a whole file; returns 0 on failure. */
static int skv_fuzz_read(const char *path, skv_fuzz_buf_t *b)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        return 0;
    }
    b->data = malloc(SKV_FUZZ_MAX_SIZE);
    b->size = fread(b->data, 1, SKV_FUZZ_MAX_SIZE, f);
    fclose(f);
    return 1;
}

static int skv_fuzz_name_cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Loads up to SKV_FUZZ_MAX_SEEDS files of dir, in name order. Returns the count. */
static size_t skv_fuzz_load_seeds(const char *dir, skv_fuzz_buf_t *seeds)
{
    char *names[SKV_FUZZ_MAX_SEEDS];
    size_t n = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d != NULL && n < SKV_FUZZ_MAX_SEEDS && (e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            names[n++] = strdup(e->d_name);
        }
    }
    if (d != NULL) {
        closedir(d);
    }
    qsort(names, n, sizeof(*names), skv_fuzz_name_cmp);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        m += skv_fuzz_read(path, &seeds[m]);
        free(names[i]);
    }
    return m;
}

/* Applies one random edit to b (capacity SKV_FUZZ_MAX_SIZE). */
static void skv_fuzz_mutate(skv_fuzz_buf_t *b, const skv_fuzz_buf_t *seeds, size_t n_seeds)
{
    static const char *const tokens[] = {"<|eot_id|>",
                                         "<|begin_of_text|>",
                                         "\xf0\x9f\x98",
                                         "\xe4",
                                         "\"",
                                         "{",
                                         "}",
                                         "[",
                                         "]",
                                         ":",
                                         ",",
                                         "null",
                                         "-1",
                                         "1e999",
                                         "\\u0000",
                                         "\\ud800",
                                         "'s",
                                         "   ",
                                         "\n\n",
                                         "0"};
    size_t pos = skv_fuzz_below(b->size + 1);
    switch (skv_fuzz_below(6)) {
    case 0: /* flip a bit */
        if (b->size > 0) {
            b->data[pos % b->size] ^= (uint8_t)(1u << skv_fuzz_below(8));
        }
        break;
    case 1: /* set a byte */
        if (b->size > 0) {
            b->data[pos % b->size] = (uint8_t)skv_fuzz_next();
        }
        break;
    case 2: { /* delete a range */
        size_t len = skv_fuzz_below(b->size - pos + 1) % 16;
        memmove(b->data + pos, b->data + pos + len, b->size - pos - len);
        b->size -= len;
        break;
    }
    case 3:   /* copy a chunk of another seed in (splice) */
    case 4: { /* insert a token */
        const char *src;
        size_t len;
        const skv_fuzz_buf_t *s = &seeds[skv_fuzz_below(n_seeds)];
        if (skv_fuzz_below(2) && s->size > 0) {
            size_t from = skv_fuzz_below(s->size);
            src = (const char *)s->data + from;
            len = skv_fuzz_below(s->size - from) % 64 + 1;
        } else {
            src = tokens[skv_fuzz_below(sizeof(tokens) / sizeof(tokens[0]))];
            len = strlen(src);
        }
        if (b->size + len <= SKV_FUZZ_MAX_SIZE) {
            memmove(b->data + pos + len, b->data + pos, b->size - pos);
            memcpy(b->data + pos, src, len);
            b->size += len;
        }
        break;
    }
    default: /* truncate */
        b->size = pos;
        break;
    }
}

/* Records the input about to run and empties the log of the previous one. */
static void skv_fuzz_record(const char *last_path, const skv_fuzz_buf_t *b)
{
    FILE *f = fopen(last_path, "wb");
    if (f != NULL) {
        fwrite(b->data, 1, b->size, f);
        fclose(f);
    }
    if (ftruncate(2, 0) == 0) {
        lseek(2, 0, SEEK_SET);
    }
}

int main(int argc, char **argv)
{
    skv_fuzz_buf_t seeds[SKV_FUZZ_MAX_SEEDS], cur = {0};
    if (argc == 2) { /* replay one file with logs visible */
        if (!skv_fuzz_read(argv[1], &cur)) {
            fprintf(stderr, "cannot read %s\n", argv[1]);
            return 2;
        }
        LLVMFuzzerTestOneInput(cur.data, cur.size);
        free(cur.data);
        return 0;
    }
    if (argc < 3) {
        fprintf(stderr, "usage: %s SEED_DIR N [RNG_SEED] | %s FILE\n", argv[0], argv[0]);
        return 2;
    }
    const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    char log_path[512], last_path[512];
    snprintf(log_path, sizeof(log_path), "%s.log", name);
    snprintf(last_path, sizeof(last_path), "%s.last", name);
    size_t n_seeds = skv_fuzz_load_seeds(argv[1], seeds);
    long n = atol(argv[2]);
    skv_fuzz_rng = argc > 3 ? strtoull(argv[3], NULL, 0) : 0x9E3779B97F4A7C15ull;
    if (n_seeds == 0) {
        fprintf(stderr, "no seeds in %s\n", argv[1]);
        return 2;
    }
    printf("%s: %zu seeds, %ld mutations; a crash leaves %s and %s\n", name, n_seeds, n, last_path,
           log_path);
    fflush(stdout);
    int log_fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (log_fd < 0 || dup2(log_fd, 2) < 0) {
        perror(log_path);
        return 2;
    }
    cur.data = malloc(SKV_FUZZ_MAX_SIZE);
    for (long i = 0; i < (long)n_seeds + n; i++) {
        const skv_fuzz_buf_t *s = &seeds[(size_t)i < n_seeds ? (size_t)i : skv_fuzz_below(n_seeds)];
        memcpy(cur.data, s->data, s->size);
        cur.size = s->size;
        for (size_t k = (size_t)i < n_seeds ? 0 : 1 + skv_fuzz_below(4); k > 0; k--) {
            skv_fuzz_mutate(&cur, seeds, n_seeds);
        }
        skv_fuzz_record(last_path, &cur);
        LLVMFuzzerTestOneInput(cur.data, cur.size);
    }
    unlink(log_path);
    unlink(last_path);
    printf("%s: passed\n", name);
    for (size_t i = 0; i < n_seeds; i++) {
        free(seeds[i].data);
    }
    free(cur.data);
    return 0;
}
