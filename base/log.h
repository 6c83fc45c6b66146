/*
 * log.h: leveled logging and the invariant assert.
 *
 * Log once, where an error is decided, with the actual values. Lines go to stderr as
 * "LEVEL file:line message"; the level comes from SKV_LOG_LEVEL (error|warn|info|debug),
 * read once. Thread-safe: each line is written with one locked stdio call.
 * SKV_ASSERT is for invariants of our own code only, never for request data.
 */
#ifndef SKV_COMMON_LOG_H
#define SKV_COMMON_LOG_H

typedef enum {
    SKV_LOG_LEVEL_ERROR = 0,
    SKV_LOG_LEVEL_WARN,
    SKV_LOG_LEVEL_INFO,
    SKV_LOG_LEVEL_DEBUG,
} skv_log_level_t;

/* Writes one formatted line at `level` if enabled. Any thread. */
void skv_log_write(skv_log_level_t level, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Returns non-zero when lines at `level` are written. Any thread. */
int skv_log_enabled(skv_log_level_t level);

/* Overrides the level from the environment (tests, CLI --verbose). Call before threads start. */
void skv_log_set_level(skv_log_level_t level);

/* Logs the failed condition and aborts. Never returns. */
void skv_assert_fail(const char *cond, const char *file, int line) __attribute__((noreturn));

#define SKV_LOG_ERROR(...) skv_log_write(SKV_LOG_LEVEL_ERROR, __FILE__, __LINE__, __VA_ARGS__)
#define SKV_LOG_WARN(...) skv_log_write(SKV_LOG_LEVEL_WARN, __FILE__, __LINE__, __VA_ARGS__)
#define SKV_LOG_INFO(...) skv_log_write(SKV_LOG_LEVEL_INFO, __FILE__, __LINE__, __VA_ARGS__)
#define SKV_LOG_DEBUG(...)                                                   \
    do {                                                                     \
        if (skv_log_enabled(SKV_LOG_LEVEL_DEBUG)) {                          \
            skv_log_write(SKV_LOG_LEVEL_DEBUG, __FILE__, __LINE__, __VA_ARGS__); \
        }                                                                    \
    } while (0)

#define SKV_ASSERT(cond)                                   \
    do {                                                   \
        if (__builtin_expect(!(cond), 0)) {                \
            skv_assert_fail(#cond, __FILE__, __LINE__);    \
        }                                                  \
    } while (0)

#endif /* SKV_COMMON_LOG_H */
