/*
 * log.c: the stderr logger. The level is read from SKV_LOG_LEVEL on first use; a
 * pthread_once makes that safe from any thread. Lines carry a monotonic timestamp so that
 * interleaved logs of the router and workers can be ordered.
 */
#include "base/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static skv_log_level_t skv_log_level = SKV_LOG_LEVEL_WARN;
static pthread_once_t skv_log_once = PTHREAD_ONCE_INIT;

static const char *const skv_log_names[] = {"ERROR", "WARN", "INFO", "DEBUG"};

static void skv_log_init_level(void)
{
    const char *env = getenv("SKV_LOG_LEVEL");
    if (env == NULL) {
        return;
    }
    for (int i = 0; i <= SKV_LOG_LEVEL_DEBUG; i++) {
        if (strcasecmp(env, skv_log_names[i]) == 0) {
            skv_log_level = (skv_log_level_t)i;
        }
    }
}

int skv_log_enabled(skv_log_level_t level)
{
    pthread_once(&skv_log_once, skv_log_init_level);
    return level <= skv_log_level;
}

void skv_log_set_level(skv_log_level_t level)
{
    pthread_once(&skv_log_once, skv_log_init_level);
    skv_log_level = level;
}

static const char *skv_log_basename(const char *file)
{
    const char *slash = strrchr(file, '/');
    return slash ? slash + 1 : file;
}

void skv_log_write(skv_log_level_t level, const char *file, int line, const char *fmt, ...)
{
    if (!skv_log_enabled(level)) {
        return;
    }
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* One fprintf per line: stdio locks the stream, so lines from threads never interleave. */
    fprintf(stderr, "[%ld.%03ld] %-5s %s:%d %s\n", (long)ts.tv_sec, ts.tv_nsec / 1000000L,
            skv_log_names[level], skv_log_basename(file), line, msg);
}

void skv_assert_fail(const char *cond, const char *file, int line)
{
    fprintf(stderr, "FATAL %s:%d assertion failed: %s\n", skv_log_basename(file), line, cond);
    fflush(stderr);
    abort();
}
