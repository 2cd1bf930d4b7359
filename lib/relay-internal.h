/* lib/relay-internal.h — the base of pass-through operators (map, filter,
 * take, on_discard, ...): one object that is both the subscriber upstream
 * signals and the subscription downstream holds.
 *
 * A relay has no queue and no drain loop of its own: upstream's signals are
 * already serial, so the relay's signal-side state (`done`, counters) is
 * plain, touched only from inside upstream's signals. Requests and cancels
 * go straight upstream (from any thread). Lifetime follows upstream: when
 * upstream releases the relay, the relay releases downstream, then frees
 * itself — so the subscription downstream holds stays valid until
 * downstream's on_release has returned, as the contract requires.
 */
#ifndef RILL_RELAY_INTERNAL_H
#define RILL_RELAY_INTERNAL_H

#include <rill/stage.h>

#include <stdatomic.h>

typedef struct rill__relay {
    rill_subscriber in;          /* upstream signals this */
    rill_subscription out;       /* downstream holds this */
    rill_subscriber *down;       /* owned until released */
    rill_subscription *up;       /* set by on_subscribe; valid until in.on_release */
    rill_context *ctx;           /* reference: the hooks downstream (what in.context returns) */
    rill_publisher *owner;       /* reference: the operator publisher (keeps user ctx alive) */
    int done;                    /* a terminal went downstream: drop later upstream signals */
    atomic_int down_cancelled;   /* downstream called cancel */
} rill__relay;

/* The base of an operator's publisher: the upstream it consumed and the user
 * ctx it keeps, released by rill__operator_destroy. */
typedef struct rill__operator {
    rill_publisher base;
    rill_publisher *up;             /* reference */
    void *ctx;
    void (*ctx_free)(void *ctx);
} rill__operator;

/* Allocates an operator publisher of `size` bytes. On NULL up (EINVAL) or
 * no memory (ENOMEM) it consumes up, calls ctx_free(ctx) and returns NULL. */
void *rill__operator_new(size_t size, const struct rill_publisher_ops *ops, rill_publisher *up,
                         void *ctx, void (*ctx_free)(void *));
/* Fails construction after rill__operator_new succeeded or before it ran:
 * consumes up, calls ctx_free, sets errno, returns NULL. */
void *rill__operator_fail(rill_publisher *up, void *ctx, void (*ctx_free)(void *), int code);
/* destroy op for operators whose state is only the rill__operator base. */
void rill__operator_destroy(rill_publisher *self);

/* Allocates a relay of `size` bytes for down, owned by publisher `owner`.
 * in_ops / out_ops may use the defaults below. On no memory it rejects down
 * with ENOMEM and returns NULL. */
void *rill__relay_new(size_t size, const struct rill_subscriber_ops *in_ops,
                      const struct rill_subscription_ops *out_ops, rill_publisher *owner,
                      rill_subscriber *down);
/* Gives up on a relay that was never subscribed upstream: rejects down with
 * code and frees the relay. */
void rill__relay_abort(rill__relay *r, int code);
/* Subscribes the relay to the operator's upstream. */
void rill__relay_subscribe(rill__relay *r, rill_publisher *up);

/* Ends the stream from inside an upstream signal: cancels upstream, then
 * signals on_error(code) (or on_complete for code 0) downstream, unless a
 * terminal already went or downstream cancelled. */
void rill__relay_end(rill__relay *r, int code);

/* on_subscribe's work: takes s as the upstream subscription and signals
 * on_subscribe downstream, returning 1 — or, when the relay already has one
 * (a misbehaving publisher subscribed it twice), cancels s and returns 0
 * (rule 2.5), so downstream never sees a second on_subscribe. */
int rill__relay_accept(rill__relay *r, rill_subscription *s);

/* Defaults. */
void rill__relay_on_subscribe(rill_subscriber *self, rill_subscription *s);   /* accept */
void rill__relay_on_next(rill_subscriber *self, void *item);   /* forwards; after done: discards */
void rill__relay_on_error(rill_subscriber *self, const rill_error *e);
void rill__relay_on_complete(rill_subscriber *self);
void rill__relay_on_release(rill_subscriber *self);
rill_context *rill__relay_context(rill_subscriber *self);
/* out ops: request forwards upstream; cancel records it and forwards. */
void rill__relay_request(rill_subscription *s, uint64_t n);
void rill__relay_cancel(rill_subscription *s);
extern const struct rill_subscription_ops rill__relay_out_ops;

static inline rill__relay *rill__relay_of_in(rill_subscriber *s)
{
    return (rill__relay *)(void *)((char *)s - offsetof(rill__relay, in));
}

static inline rill__relay *rill__relay_of_out(rill_subscription *s)
{
    return (rill__relay *)(void *)((char *)s - offsetof(rill__relay, out));
}

#endif
