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

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t rill__monotonic_ns(void);

/* Saturating now + delay. */
static inline uint64_t rill__due(uint64_t now, uint64_t delay)
{
    return delay > UINT64_MAX - now ? UINT64_MAX : now + delay;
}

#endif
