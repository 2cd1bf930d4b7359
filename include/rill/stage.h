/* rill/stage.h — for people writing their own stages (publishers, operators,
 * subscribers) and for bindings that implement the protocol directly.
 *
 * A stage is a struct whose first member is one of the three base structs
 * below; the base struct points to a const ops table. Ops tables start with
 * a version field and only ever grow at the end ("valid for version N"), so a
 * table compiled against an older header keeps working.
 *
 *   struct my_sub { rill_subscriber base; ...state... };
 *   static const struct rill_subscriber_ops my_ops = {
 *       .version = RILL_SUBSCRIBER_OPS_VERSION, .on_next = my_next, ... };
 *
 * Lifetime rules every stage keeps (they are what rill_callbacks users rely on):
 *  - a publisher's subscribe op receives a subscriber it now owns; it calls
 *    on_subscribe first, and eventually on_release exactly once, last, after
 *    every other signal to that subscriber has returned, never nested inside
 *    another signal of the same subscriber;
 *  - the rill_subscription * passed to on_subscribe stays valid until that
 *    on_release has returned;
 *  - after a terminal signal or cancel, request and cancel are no-ops;
 *  - request(0) ends the stream with on_error(EINVAL); demand saturates at
 *    RILL_UNBOUNDED; re-entrant request never recurses (queue-drain pattern:
 *    an atomic work-in-progress counter, one drainer at a time).
 *
 * Discards: every subscriber may expose a context (rill_subscriber_context),
 * the chain of discard hooks installed downstream of it by rill_on_discard.
 * A stage that does not deliver an item (filtered out, evicted, left in a
 * queue) hands it to rill_context_discard on the context of its downstream
 * subscriber, taken (with rill_context_ref) when the stage was subscribed —
 * so it may still discard after the downstream subscriber was released.
 */
#ifndef RILL_STAGE_H
#define RILL_STAGE_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rill_context rill_context;   /* refcounted chain of discard hooks */

/* ------------------------------------------------------------------------
 * Subscribers */

#define RILL_SUBSCRIBER_OPS_VERSION 1

struct rill_subscriber_ops {
    uint32_t version;   /* RILL_SUBSCRIBER_OPS_VERSION */
    /* --- valid for version 1 --- */
    /* Each slot except on_release may be NULL (the signal is then ignored).
     * Signals are serial: the caller guarantees no two overlap. */
    void (*on_subscribe)(rill_subscriber *self, rill_subscription *s);
    void (*on_next)(rill_subscriber *self, void *item);           /* item now owned */
    void (*on_error)(rill_subscriber *self, const rill_error *e); /* e borrowed */
    void (*on_complete)(rill_subscriber *self);
    /* Last call; the subscriber frees itself here. Required. */
    void (*on_release)(rill_subscriber *self);
    /* Returns the discard hooks downstream of this subscriber (borrowed; valid
     * until on_release), or NULL for none. May be NULL. */
    rill_context *(*context)(rill_subscriber *self);
};

struct rill_subscriber {
    const struct rill_subscriber_ops *ops;
};

/* Thin wrappers that call the ops (for bindings that cannot call through a
 * struct's function pointer). s must not be NULL. */
RILL_EXPORT void rill_deliver_subscribe(rill_subscriber *s, rill_subscription *sub);
RILL_EXPORT void rill_deliver_next(rill_subscriber *s, void *item);
RILL_EXPORT void rill_deliver_error(rill_subscriber *s, const rill_error *e);
RILL_EXPORT void rill_deliver_complete(rill_subscriber *s);
RILL_EXPORT void rill_deliver_release(rill_subscriber *s);
/* Borrowed; NULL when s has no context. */
RILL_EXPORT rill_context *rill_subscriber_context(rill_subscriber *s);

/* Refuses a subscriber: on_subscribe (with a subscription whose request and
 * cancel do nothing), then on_error(code, message), then on_release.
 * Consumes s. Use it when a subscribe op cannot start (ENOMEM, EBUSY, ...).
 * message NULL: strerror(code). */
RILL_EXPORT void rill_reject(rill_subscriber *s, int code, const char *message);

/* Signals on_error with a new error of `code` (or ENOMEM when that cannot be
 * allocated) and drops it. s must not be NULL. */
RILL_EXPORT void rill_deliver_error_code(rill_subscriber *s, int code, const char *message);

/* ------------------------------------------------------------------------
 * Subscriptions */

#define RILL_SUBSCRIPTION_OPS_VERSION 1

struct rill_subscription_ops {
    uint32_t version;   /* RILL_SUBSCRIPTION_OPS_VERSION */
    /* --- valid for version 1 --- */
    /* Both required; both may be called from any thread, concurrently with
     * each other and with the signals, and re-entrantly from inside them. */
    void (*request)(rill_subscription *self, uint64_t n);   /* n may be 0: see rill_request */
    void (*cancel)(rill_subscription *self);
};

struct rill_subscription {
    const struct rill_subscription_ops *ops;
};

/* Adds n to *demand (a plain uint64_t only ever updated through this call
 * and rill_demand_produced), saturating at RILL_UNBOUNDED; atomic. Returns
 * the demand before the call. */
RILL_EXPORT uint64_t rill_demand_add(uint64_t *demand, uint64_t n);
/* Subtracts n delivered items unless *demand is RILL_UNBOUNDED; atomic.
 * Returns the demand after the call. */
RILL_EXPORT uint64_t rill_demand_produced(uint64_t *demand, uint64_t n);

/* ------------------------------------------------------------------------
 * Publishers */

#define RILL_PUBLISHER_OPS_VERSION 1

struct rill_publisher_ops {
    uint32_t version;   /* RILL_PUBLISHER_OPS_VERSION */
    /* --- valid for version 1 --- */
    /* Starts a subscription for s (never NULL), which it now owns. self is
     * borrowed: take a reference (rill_publisher_ref) if the subscription
     * needs the publisher after this call returns. Called from any thread,
     * possibly concurrently for different subscribers. Required. */
    void (*subscribe)(rill_publisher *self, rill_subscriber *s);
    /* The last reference is gone: free everything. Required. */
    void (*destroy)(rill_publisher *self);
};

struct rill_publisher {
    const struct rill_publisher_ops *ops;
    uintptr_t refs_private;   /* managed by rill_publisher_ref/unref only */
};

/* Sets up the base of a publisher a stage author allocated: the reference
 * count starts at 1 (the reference the constructor returns). */
RILL_EXPORT void rill_publisher_init(rill_publisher *p, const struct rill_publisher_ops *ops);

/* ------------------------------------------------------------------------
 * Contexts: chains of discard hooks */

/* Returns c (a new reference); NULL gives NULL. */
RILL_EXPORT rill_context *rill_context_ref(rill_context *c);
/* Releases a reference; the last one releases each hook's ctx. NULL ignored. */
RILL_EXPORT void rill_context_unref(rill_context *c);
/* Hands item to every discard hook in c, nearest first. c may be NULL (then
 * nothing happens). May be called from any thread; hooks must be thread-safe
 * if their stages discard from several threads. */
RILL_EXPORT void rill_context_discard(rill_context *c, void *item);
/* Returns a new context: the hook fn(ctx, item) in front of `next` (borrowed;
 * the new context takes its own reference). ctx_free(ctx), if given, runs
 * once, after the hook's last call — also when this call fails (NULL, errno
 * ENOMEM) or fn is NULL (NULL, errno EINVAL). */
RILL_EXPORT rill_context *rill_context_new(void (*fn)(void *ctx, void *item), void *ctx,
                                           void (*ctx_free)(void *ctx), rill_context *next);

#ifdef __cplusplus
}
#endif

#endif /* RILL_STAGE_H */
