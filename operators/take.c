/* operators/take.c — rill_take: the first n items, then completion.
 *
 * Demand is clamped: the total requested upstream never exceeds n, so a
 * synchronous source is never asked for an item take would have to drop.
 * On the n-th item take cancels upstream *before* delivering it, so a source
 * stops at once even if downstream re-enters. take(0) completes right after
 * on_subscribe and cancels upstream without ever requesting.
 *
 * Over a synchronous source (or a chain already fused) no relay is built:
 * take becomes a step of a fused chain (lib/fuse.c) that stops the source's
 * loop after the n-th item.
 */
#include "fuse-internal.h"
#include "relay-internal.h"
#include "stage-internal.h"

#include <rill/operators.h>

#include <errno.h>

typedef struct take_publisher {
    rill__operator op;
    uint64_t n;
} take_publisher;

typedef struct take_relay {
    rill__relay r;
    uint64_t remaining;           /* signal-side: items still to deliver */
    uint64_t limit;
    _Atomic uint64_t requested;   /* total forwarded upstream, <= limit */
} take_relay;

static void take_on_subscribe(rill_subscriber *self, rill_subscription *s)
{
    take_relay *t = (take_relay *)rill__relay_of_in(self);
    if (rill__relay_accept(&t->r, s) && t->limit == 0)
        rill__relay_end(&t->r, 0);
}

static void take_on_next(rill_subscriber *self, void *item)
{
    take_relay *t = (take_relay *)rill__relay_of_in(self);
    if (t->r.done) {
        rill__discard(t->r.ctx, item);
        return;
    }
    if (--t->remaining > 0) {
        rill__on_next(t->r.down, item);
        return;
    }
    t->r.done = 1;
    rill__cancel(t->r.up);
    rill__on_next(t->r.down, item);
    if (!atomic_load_explicit(&t->r.down_cancelled, memory_order_relaxed))
        rill__on_complete(t->r.down);
}

static const struct rill_subscriber_ops take_in_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = take_on_subscribe,
    .on_next = take_on_next,
    .on_error = rill__relay_on_error,
    .on_complete = rill__relay_on_complete,
    .on_release = rill__relay_on_release,
    .context = rill__relay_context,
};

static void take_request(rill_subscription *s, uint64_t n)
{
    take_relay *t = (take_relay *)rill__relay_of_out(s);
    if (n == 0) {
        rill__request(t->r.up, 0);   /* upstream turns it into on_error(EINVAL) */
        return;
    }
    uint64_t cur = atomic_load_explicit(&t->requested, memory_order_relaxed);
    uint64_t next;
    do {
        if (cur >= t->limit)
            return;
        next = n >= t->limit - cur ? t->limit : cur + n;
    } while (!atomic_compare_exchange_weak_explicit(&t->requested, &cur, next,
                                                    memory_order_relaxed, memory_order_relaxed));
    rill__request(t->r.up, next - cur);
}

static const struct rill_subscription_ops take_out_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = take_request,
    .cancel = rill__relay_cancel,
};

static void take_subscribe(rill_publisher *self, rill_subscriber *s)
{
    take_publisher *tp = (take_publisher *)self;
    take_relay *t = rill__relay_new(sizeof *t, &take_in_ops, &take_out_ops, self, s);
    if (!t)
        return;
    t->remaining = t->limit = tp->n;
    rill__relay_subscribe(&t->r, tp->op.up);
}

static const struct rill_publisher_ops take_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = take_subscribe,
    .destroy = rill__operator_destroy,
};

rill_publisher *rill_take(rill_publisher *up, uint64_t n)
{
    rill_publisher *fused;
    rill__step step = { .kind = RILL__STEP_TAKE, .remaining = n };
    if (rill__fuse(up, &step, &fused))
        return fused;
    take_publisher *tp = rill__operator_new(sizeof *tp, &take_ops, up, NULL, NULL);
    if (tp)
        tp->n = n;
    return tp ? &tp->op.base : NULL;
}
