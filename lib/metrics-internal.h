/* lib/metrics-internal.h — how stages keep a rill_metrics current.
 *
 * Every update goes through one rill__metrics_delta applied atomically with
 * respect to snapshots: a snapshot sees all of a delta or none of it. A
 * stage that must keep received == emitted + discarded + queued true in
 * every snapshot puts the matching changes into one delta (an accepted item:
 * received 1, queued_change +1; a delivered one: emitted 1, queued_change -1;
 * an eviction: discarded[OVERFLOW] 1, queued_change -1).
 *
 * Prefer changes (counts added, queued_change) to absolute values from a
 * stage whose updates may run on several threads: two deltas applied in
 * either order give the same result, two absolute depths computed under the
 * stage's lock but applied after it may land in the wrong order.
 *
 * NULL m is a no-op everywhere, decided inline: a stage without metrics
 * pays one branch. Updates never block for long, never allocate and never
 * call out, so stages may call them while holding their own locks.
 */
#ifndef RILL_METRICS_INTERNAL_H
#define RILL_METRICS_INTERNAL_H

#include <rill/metrics.h>

#include <stdint.h>

typedef enum rill__discard_reason {
    RILL__DISCARD_FILTERED,
    RILL__DISCARD_OVERFLOW,
    RILL__DISCARD_CANCELLED,
    RILL__DISCARD_EXPIRED,
    RILL__DISCARD_NREASONS
} rill__discard_reason;

/* Bits of rill__metrics_delta.set: the gauges the delta sets outright. */
#define RILL__METRICS_SET_QUEUED   0x1u
#define RILL__METRICS_SET_CAPACITY 0x2u
#define RILL__METRICS_SET_DEMAND   0x4u
#define RILL__METRICS_SET_PAUSED   0x8u

/* Applied in this order: the counts are added; `emitted` also consumes
 * demand_outstanding (saturating at 0; unbounded demand stays unbounded);
 * `requested` adds to demand_outstanding (saturating at RILL_UNBOUNDED);
 * queued_change moves the depth (clamped at 0: a negative depth is a stage
 * bug); then every gauge named in `set` is set, overriding the changes
 * above to the same gauge. Last, queued_high_water rises to the depth, and
 * a paused gauge that went from 0 to 1 counts one pause. */
typedef struct rill__metrics_delta {
    uint64_t received, emitted, refused;
    uint64_t discarded[RILL__DISCARD_NREASONS];
    int64_t queued_change;
    uint64_t requested;
    unsigned set;                /* RILL__METRICS_SET_* bits */
    uint64_t queued, capacity, demand;
    uint32_t paused;             /* any non-zero value means 1 */
} rill__metrics_delta;

void rill__metrics_apply(rill_metrics *m, const rill__metrics_delta *d);

static inline void rill__metrics_update(rill_metrics *m, const rill__metrics_delta *d)
{
    if (m)
        rill__metrics_apply(m, d);
}

/* Single-change shorthands. */
static inline void rill__metrics_received(rill_metrics *m, uint64_t n)
{
    if (m)
        rill__metrics_apply(m, &(rill__metrics_delta){ .received = n });
}

static inline void rill__metrics_emitted(rill_metrics *m, uint64_t n)
{
    if (m)
        rill__metrics_apply(m, &(rill__metrics_delta){ .emitted = n });
}

static inline void rill__metrics_discarded(rill_metrics *m, rill__discard_reason why, uint64_t n)
{
    if (m && (unsigned)why < RILL__DISCARD_NREASONS) {
        rill__metrics_delta d = { .received = 0 };
        d.discarded[why] = n;
        rill__metrics_apply(m, &d);
    }
}

static inline void rill__metrics_refused(rill_metrics *m, uint64_t n)
{
    if (m)
        rill__metrics_apply(m, &(rill__metrics_delta){ .refused = n });
}

/* Sets the depth (and raises the high water). */
static inline void rill__metrics_queued(rill_metrics *m, uint64_t depth)
{
    if (m)
        rill__metrics_apply(m, &(rill__metrics_delta){ .set = RILL__METRICS_SET_QUEUED,
                                                       .queued = depth });
}

static inline void rill__metrics_capacity(rill_metrics *m, uint64_t capacity)
{
    if (m)
        rill__metrics_apply(m, &(rill__metrics_delta){ .set = RILL__METRICS_SET_CAPACITY,
                                                       .capacity = capacity });
}

/* Adds downstream demand (saturating). */
static inline void rill__metrics_requested(rill_metrics *m, uint64_t n)
{
    if (m)
        rill__metrics_apply(m, &(rill__metrics_delta){ .requested = n });
}

/* Sets the outstanding demand outright. */
static inline void rill__metrics_demand(rill_metrics *m, uint64_t outstanding)
{
    if (m)
        rill__metrics_apply(m, &(rill__metrics_delta){ .set = RILL__METRICS_SET_DEMAND,
                                                       .demand = outstanding });
}

/* 1: paused (counts a pause when it was not), 0: resumed. */
static inline void rill__metrics_paused(rill_metrics *m, int paused)
{
    if (m)
        rill__metrics_apply(m, &(rill__metrics_delta){ .set = RILL__METRICS_SET_PAUSED,
                                                       .paused = paused != 0 });
}

#endif
