/*
 * clock.c: CLOCK_MONOTONIC helpers.
 */
#include "base/clock.h"

#include <time.h>

int64_t skv_clock_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int64_t skv_clock_deadline_ms(int64_t ms)
{
    return skv_clock_now_ns() + ms * 1000000LL;
}

int skv_clock_expired(int64_t deadline_ns)
{
    return skv_clock_now_ns() >= deadline_ns;
}
