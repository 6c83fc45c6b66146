/*
 * alloc.c: host allocation wrappers with a failure-injection countdown.
 */
#include "base/alloc.h"

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static atomic_long skv_alloc_countdown = 0;

void skv_alloc_fail_after(long n)
{
    atomic_store(&skv_alloc_countdown, n);
}

/* Returns non-zero when this allocation is the injected failure. */
static int skv_alloc_should_fail(void)
{
    if (atomic_load_explicit(&skv_alloc_countdown, memory_order_relaxed) == 0) {
        return 0;
    }
    return atomic_fetch_sub(&skv_alloc_countdown, 1) == 1;
}

void *skv_malloc(size_t bytes)
{
    if (skv_alloc_should_fail()) {
        return NULL;
    }
    return malloc(bytes == 0 ? 1 : bytes);
}

void *skv_calloc(size_t n, size_t size)
{
    if (skv_alloc_should_fail()) {
        return NULL;
    }
    return calloc(n == 0 ? 1 : n, size == 0 ? 1 : size);
}

void *skv_mallocn(size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size) {
        return NULL;
    }
    return skv_malloc(n * size);
}

void *skv_realloc(void *ptr, size_t bytes)
{
    if (skv_alloc_should_fail()) {
        return NULL;
    }
    return realloc(ptr, bytes == 0 ? 1 : bytes);
}

void skv_free(void *ptr)
{
    free(ptr);
}

char *skv_strndup(const char *s, size_t n)
{
    char *out = skv_malloc(n + 1);
    if (out == NULL) {
        return NULL;
    }
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

char *skv_strdup(const char *s)
{
    return skv_strndup(s, strlen(s));
}
