/*
 * clock.h: monotonic time in nanoseconds and deadline helpers. Every wait across processes
 * carries a deadline expressed in this clock (CLOCK_MONOTONIC, so it never jumps).
 */
#ifndef SKV_COMMON_CLOCK_H
#define SKV_COMMON_CLOCK_H

#include <stdint.h>

/* Returns CLOCK_MONOTONIC in nanoseconds. Any thread. */
int64_t skv_clock_now_ns(void);

/* Returns the deadline `ms` milliseconds from now. Any thread. */
int64_t skv_clock_deadline_ms(int64_t ms);

/* Returns non-zero when `deadline_ns` has passed. Any thread. */
int skv_clock_expired(int64_t deadline_ns);

#endif /* SKV_COMMON_CLOCK_H */
