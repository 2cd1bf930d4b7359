/* lib/scheduler-internal.h — scheduler plumbing shared by the schedulers. */
#ifndef RILL_SCHEDULER_INTERNAL_H
#define RILL_SCHEDULER_INTERNAL_H

#include <rill/scheduler.h>

/* The scheduler's memory stays while holds remain (workers, detached
 * threads); the last release calls ops->destroy. */
void rill__scheduler_hold(rill_scheduler *s);
void rill__scheduler_release(rill_scheduler *s);

/* A statically allocated scheduler sets refs_private and holds_private to
 * this value: references to it are free and it never shuts down. */
#define RILL__SCHEDULER_IMMORTAL UINTPTR_MAX

/* Whether a task of w may spin for a few microseconds waiting for another
 * thread's signal: 1 only when the caller is w's own thread of a thread
 * pool (which would spin before parking anyway) and nothing else is ready
 * to run there. 0 on every other scheduler — immediate, loop, virtual time
 * and user-provided ones — where the task may be running on the very
 * thread it would wait for, or on a host's thread that must not be held. */
int rill__worker_may_spin(const rill_worker *w);

/* A bounded spin-wait. Callers poll for what they wait on, and every few
 * polls ask rill__spin_more() whether to go on: it says 0 once `ns` have
 * passed since rill__spin_start(). Every RILL__SPIN_YIELD_NS of spinning it
 * yields the CPU, so that a spinner sharing its CPU with the very thread it
 * waits for (more threads than cores) lets that thread run, instead of
 * burning its whole time slice; alone on its CPU, the yield returns at once. */
#define RILL__SPIN_YIELD_NS 2000u

typedef struct rill__spinner {
    uint64_t deadline, yield_at;
} rill__spinner;

void rill__spin_start(rill__spinner *s, uint64_t ns);
int rill__spin_more(rill__spinner *s);

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t rill__monotonic_ns(void);

/* Saturating now + delay. */
static inline uint64_t rill__due(uint64_t now, uint64_t delay)
{
    return delay > UINT64_MAX - now ? UINT64_MAX : now + delay;
}

#endif
