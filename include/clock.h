/*
 * clock — the monotonic clock and the pauses every waiting loop of the
 * shim uses, in one place (header-only: each is a few instructions).
 *
 *   double start = clock_now();
 *   struct backoff b = BACKOFF_INIT;          -- 50 ms, doubling to 1 s
 *   while (!ready() && clock_now() - start < limit)
 *       backoff_pause(&b);
 */
#ifndef MIGSHIM_CLOCK_H
#define MIGSHIM_CLOCK_H

#include <stdbool.h>
#include <time.h>

/* Seconds on CLOCK_MONOTONIC (not the wall clock: an NTP step never makes
 * a wait longer or shorter). */
static inline double clock_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Sleep `ms` milliseconds (ms >= 0; a signal may end it early: every
 * caller loops on its own deadline). */
static inline void clock_pause_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* A pause that grows: 50 ms, doubling up to 1 s.  `paused` says whether
 * it paused at all (for a "waited" line). */
struct backoff {
    long ms;
};
#define BACKOFF_INIT {50}

static inline void backoff_pause(struct backoff *b)
{
    clock_pause_ms(b->ms);
    b->ms = b->ms * 2 > 1000 ? 1000 : b->ms * 2;
}

static inline bool backoff_paused(const struct backoff *b) { return b->ms > 50; }

#endif
