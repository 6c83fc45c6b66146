/*
 * alloc.h: thin wrappers around the host allocator (SQLite style).
 *
 * All host allocations of our code go through these, which makes them the one place to
 * inject failures: skv_alloc_fail_after(n) makes the n-th following allocation return NULL,
 * so tests can prove every request-path allocation failure becomes a status, not a crash.
 * Sizes are checked for overflow (skv_calloc, skv_mallocn).
 */
#ifndef SKV_COMMON_ALLOC_H
#define SKV_COMMON_ALLOC_H

#include <stddef.h>

/* malloc/calloc/realloc/free equivalents; return NULL on failure (or injected failure). */
void *skv_malloc(size_t bytes);
void *skv_calloc(size_t n, size_t size);
void *skv_mallocn(size_t n, size_t size); /* malloc(n*size) with an overflow check */
void *skv_realloc(void *ptr, size_t bytes);
void skv_free(void *ptr);

/* Duplicates a NUL-terminated string; NULL on failure. */
char *skv_strdup(const char *s);
/* Duplicates n bytes of s and terminates them; NULL on failure. */
char *skv_strndup(const char *s, size_t n);

/* Test hook: the n-th allocation from now fails (n >= 1); n = 0 disables. Not thread-safe
 * with respect to which thread's allocation fails; meant for single-threaded tests. */
void skv_alloc_fail_after(long n);

#endif /* SKV_COMMON_ALLOC_H */
