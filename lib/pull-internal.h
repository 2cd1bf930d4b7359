/* lib/pull-internal.h — the engine behind every synchronous source.
 *
 * A source supplies a per-subscription state and a `next` function; the
 * engine keeps the whole protocol: demand (saturating), the queue-drain loop
 * (request inside on_next never recurses), cancel, request(0), exactly one
 * terminal signal, and on_release last and outside every other signal.
 */
#ifndef RILL_PULL_INTERNAL_H
#define RILL_PULL_INTERNAL_H

#include <rill/stage.h>

enum {
    RILL__PULL_ITEM,    /* *item holds an item */
    RILL__PULL_LAST,    /* *item holds the last item: completion follows it */
    RILL__PULL_END,     /* no item: complete */
    RILL__PULL_ERROR,   /* no item: *err holds a new reference, signal it */
    RILL__PULL_MORE     /* (start only) nothing to signal yet */
};

struct rill__pull_ops {
    /* Called only by the drainer, one call at a time, with demand. */
    int (*next)(void *state, void **item, rill_error **err);
    /* Called once before any demand: END or ERROR end the stream at once
     * (empty, fail, zero-length sources); MORE goes on. May be NULL. */
    int (*start)(void *state, rill_error **err);
    /* The subscription is over and the subscriber released: drop what the
     * state holds. May be NULL. */
    void (*finish)(void *state);
};

/* Allocates a subscription with `state_size` bytes of state (max_align_t
 * aligned, zeroed) and returns the state, or NULL (ENOMEM). */
void *rill__pull_alloc(size_t state_size);
/* Starts the subscription: on_subscribe to down (owned from now on), then
 * emission as demand arrives. */
void rill__pull_start(void *state, const struct rill__pull_ops *ops, rill_subscriber *down);

#endif
