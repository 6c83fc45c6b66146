/*
 * skv_test.h: helpers shared by the plain-C model tests (no test framework): SKV_EXPECT, which
 * counts failures in skv_failures and goes on, skv_test_make_model(_or_exit), which runs
 * the skv_make_model tool in a child process, and skv_test_start / skv_test_finish
 * (arguments, scratch folder, exit status).
 * Header-only: every function is static inline, so each test executable gets its own copy and its
 * own failure count.
 */
#ifndef SKV_TESTS_COMMON_SKV_TEST_H
#define SKV_TESTS_COMMON_SKV_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* Failed SKV_EXPECTs of this test executable; main returns nonzero when it is not 0. */
static int skv_failures __attribute__((unused));

/* Checks cond; when false prints FAIL with the place and the printf-style message, counts the
 * failure in skv_failures and goes on. */
#define SKV_EXPECT(cond, ...)                                                                      \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            skv_failures++;                                                                        \
        }                                                                                          \
    } while (0)

/* Runs `tool --out out ARGS...` in a child process and waits for it. args: NULL-terminated
 * list of at most 60 further arguments (borrowed). Returns 0 when the tool exited 0, -1
 * otherwise (it could not start, failed, or was killed). Not thread-safe (fork). */
static inline int skv_test_make_model(const char *tool, const char *out, const char *const *args)
{
    const char *argv[64] = {tool, "--out", out};
    int n = 3;
    for (; args[n - 3] != NULL && n < 63; n++) {
        argv[n] = args[n - 3];
    }
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid < 0) {
        return -1;
    }
    if (pid == 0) {
        execv(tool, (char *const *)argv);
        _exit(127);
    }
    int st = 0;
    if (waitpid(pid, &st, 0) != pid) {
        return -1;
    }
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -1;
}

/* skv_test_make_model for a test that cannot go on without the model: on failure prints
 * "model maker failed" and exits the process with status 1. */
static inline void skv_test_make_model_or_exit(const char *tool, const char *out,
                                               const char *const *args)
{
    if (skv_test_make_model(tool, out, args) != 0) {
        fprintf(stderr, "model maker failed\n");
        exit(1);
    }
}

/* The start of a model test's main: exits 2 with "usage: PROG USAGE" unless argc is
 * n_args + 1, then creates the directory named by the mkdtemp template tmpl (rewritten in
 * place with the name made); exits 2 when it cannot. */
static inline void skv_test_start(int argc, char **argv, int n_args, const char *usage, char *tmpl)
{
    if (argc != n_args + 1) {
        fprintf(stderr, "usage: %s %s\n", argv[0], usage);
        exit(2);
    }
    if (mkdtemp(tmpl) == NULL) {
        perror("mkdtemp");
        exit(2);
    }
}

/* The end of a model test's main: removes the scratch folder dir (a warning when it cannot),
 * prints the failure count and returns the exit status (0 when no SKV_EXPECT failed). */
static inline int skv_test_finish(const char *dir)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "warning: cannot remove %s\n", dir);
    }
    printf("%d failures\n", skv_failures);
    return skv_failures ? 1 : 0;
}

#endif
