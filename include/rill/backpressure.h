/* rill/backpressure.h — stages that absorb a producer faster than its
 * consumer: bounded buffers with an overflow policy, "latest", "drop", and a
 * demand limiter (limit_rate).
 *
 * on_backpressure_buffer / _latest / _drop request RILL_UNBOUNDED upstream
 * and serve downstream's demand from a bounded store of their own:
 *  - buffer(capacity, policy): a ring of `capacity` items, preallocated at
 *    subscribe time (no allocation per item). When it is full, the policy
 *    decides: RILL_OVERFLOW_DROP_LATEST discards the arriving item,
 *    RILL_OVERFLOW_DROP_OLDEST evicts the oldest held item, and
 *    RILL_OVERFLOW_ERROR cancels upstream, discards the item that did not
 *    fit, delivers what it holds (as demand allows), then signals
 *    on_error(EOVERFLOW);
 *  - latest: one slot holding the newest item; the item it replaces is
 *    discarded. The held item is delivered before on_complete / on_error;
 *  - drop: an item that arrives while downstream has no outstanding demand
 *    is discarded. (Items handed between threads wait in a small ring of
 *    RILL_BACKPRESSURE_DROP_SLOTS slots unless the options say otherwise; an
 *    item that finds it full is discarded too.)
 *
 * Every item a stage does not deliver — dropped on overflow, evicted by its
 * time to live, held at cancel or at request(0) — goes to the discard hooks
 * (rill_on_discard) downstream of the stage, exactly once. Upstream's
 * on_complete and on_error wait behind the held items (the default of the
 * contract); request(0) cuts ahead: held items are discarded and the stream
 * ends with on_error(EINVAL).
 *
 * Threads: upstream may signal on any thread and downstream may request or
 * cancel from any other. Downstream's signals are never concurrent: they are
 * delivered by whichever thread is draining the stage — upstream's, inside
 * its on_next / on_complete, or the requester's, inside rill_request.
 * A request made inside on_next never recurses.
 *
 * Ownership: every constructor CONSUMES `up` and returns a new reference.
 * NULL up, or a bad argument: NULL with errno EINVAL (up is consumed);
 * no memory: NULL with errno ENOMEM.
 */
#ifndef RILL_BACKPRESSURE_H
#define RILL_BACKPRESSURE_H

#include "core.h"
#include "metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum rill_overflow {
    RILL_OVERFLOW_ERROR,        /* signal on_error(EOVERFLOW) and cancel upstream */
    RILL_OVERFLOW_DROP_OLDEST,  /* evict the oldest buffered item */
    RILL_OVERFLOW_DROP_LATEST   /* discard the arriving item */
} rill_overflow;

/* A ring of `capacity` items (capacity 0, or a policy outside the enum:
 * EINVAL). */
RILL_EXPORT rill_publisher *rill_on_backpressure_buffer(rill_publisher *up, size_t capacity,
                                                        rill_overflow policy);
/* Keeps only the newest undelivered item. */
RILL_EXPORT rill_publisher *rill_on_backpressure_latest(rill_publisher *up);
/* Discards what arrives without downstream demand. */
RILL_EXPORT rill_publisher *rill_on_backpressure_drop(rill_publisher *up);

/* Which strategy an options struct configures. */
typedef enum rill_backpressure_mode {
    RILL_BACKPRESSURE_BUFFER,
    RILL_BACKPRESSURE_LATEST,
    RILL_BACKPRESSURE_DROP
} rill_backpressure_mode;

#define RILL_BACKPRESSURE_OPTIONS_VERSION 2
#define RILL_BACKPRESSURE_DROP_SLOTS 16

typedef struct rill_backpressure_options {
    uint32_t version;              /* RILL_BACKPRESSURE_OPTIONS_VERSION; fields only grow at the end */
    /* --- valid for version 1 --- */
    rill_backpressure_mode mode;
    size_t capacity;               /* BUFFER: > 0. DROP: 0 → RILL_BACKPRESSURE_DROP_SLOTS.
                                      LATEST: must be 0 or 1 */
    rill_overflow policy;          /* BUFFER only; ignored otherwise */
    /* Called with every item dropped because the store was full or had no
     * demand for it (the item ERROR did not fit, an evicted oldest, a
     * replaced latest, a refused latest or dropped item), on the thread
     * that dropped it, BEFORE the item goes to the discard hooks (so the
     * item is still valid; do not free it here: the hooks own that). Not
     * called for items discarded at cancel, request(0) or by the TTL.
     * Calls for one subscription never overlap. May be NULL. */
    void (*on_overflow)(void *ctx, void *item);
    void *ctx;
    /* Called exactly once, when the library no longer references ctx:
     * after the last subscription's last on_overflow and the publisher's
     * last reference — also when the constructor fails. May be NULL. */
    void (*ctx_free)(void *ctx);
    /* Time to live of a held item, in nanoseconds of `scheduler`'s clock;
     * 0: forever. An item held for ttl_ns or longer is evicted to the
     * discard hooks (by a task on a worker of `scheduler`, and before any
     * delivery). ttl_ns > 0 needs a scheduler (else EINVAL). */
    uint64_t ttl_ns;
    rill_scheduler *scheduler;     /* borrowed: the publisher takes its own reference */
    /* --- valid for version 2 --- */
    /* Optional; borrowed (the publisher takes its own reference). Every
     * subscription keeps it current: received (items from upstream),
     * emitted, discarded_overflow (dropped by the policy),
     * discarded_expired (TTL), discarded_cancelled (held at cancel or
     * request(0), or arriving after the end), queued, queued_high_water,
     * capacity (the store's size) and demand_outstanding; in every snapshot
     * received == emitted + discarded_* + queued. */
    rill_metrics *metrics;
} rill_backpressure_options;

/* The stages above, configured by o (borrowed: copied). EINVAL for a NULL o,
 * a version below 1, an unknown mode or policy, or a bad capacity or TTL. */
RILL_EXPORT rill_publisher *rill_on_backpressure_ex(rill_publisher *up,
                                                    const rill_backpressure_options *o);

/* Limits the demand upstream sees: never more than `high` outstanding.
 * It forwards downstream's demand in batches: up to `high` at first, then,
 * each time `low` items have been delivered, up to `low` more (low == 0:
 * only once all outstanding items have arrived, up to `high` again). It
 * never requests more than downstream has asked for, so it holds no items.
 * With a downstream requesting RILL_UNBOUNDED, upstream sees request(high),
 * then request(low) every `low` items — Reactor's limitRate(high, low),
 * except that low == high means "after all high" (not Reactor's 75% rule).
 * high == RILL_UNBOUNDED: demand passes through unchanged. high == 0 or
 * low > high: NULL with EINVAL (up is consumed). Thread-safe like every
 * stage: downstream may request from any thread. */
RILL_EXPORT rill_publisher *rill_limit_rate(rill_publisher *up, uint64_t high, uint64_t low);

#ifdef __cplusplus
}
#endif

#endif /* RILL_BACKPRESSURE_H */
