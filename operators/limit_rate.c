/* operators/limit_rate.c — rill_limit_rate: forward downstream's demand in
 * batches, never more than `high` outstanding upstream.
 *
 * A relay: items pass straight through (upstream's signals are already
 * serial), so the stage holds no items. It splits downstream's demand:
 * `pending` is what downstream asked for and upstream has not been asked
 * for yet, `outstanding` what upstream was asked for and has not delivered.
 * A batch of up to `high - outstanding` goes upstream when nothing is
 * outstanding, or once `limit` items (low, or high when low is 0) have
 * arrived since the last batch.
 *
 * Threads: downstream requests from any thread while items arrive on
 * upstream's; `lock` (a spinlock) guards the three counters. It is never held across a
 * call upstream or downstream. Batches are computed under the lock and sent
 * after it, so two threads may send their batches in either order; upstream
 * only adds them up.
 */
#include "alloc-internal.h"
#include "relay-internal.h"
#include "stage-internal.h"

#include <rill/backpressure.h>

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>

typedef struct limit_publisher {
    rill__operator op;
    uint64_t high, limit;
} limit_publisher;

typedef struct limit {
    rill__relay r;
    uint64_t high, limit;
    atomic_flag lock;       /* a spinlock: held for a few instructions only */
    uint64_t pending;       /* downstream's demand not yet sent upstream */
    uint64_t outstanding;   /* sent upstream, not yet delivered */
    uint64_t since;         /* delivered since the last batch */
} limit;

/* acquire / release: the counters move with the lock. The relay has no
 * destroy hook of its own after downstream's release, so a lock that needs
 * no destruction keeps requests racing with that release safe. */
static void lock(limit *l)
{
    while (atomic_flag_test_and_set_explicit(&l->lock, memory_order_acquire))
        sched_yield();
}

static void unlock(limit *l)
{
    atomic_flag_clear_explicit(&l->lock, memory_order_release);
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return b >= RILL_UNBOUNDED - a ? RILL_UNBOUNDED : a + b;
}

/* Under the lock: the batch to send now (0: none). */
static uint64_t next_batch(limit *l)
{
    if (l->pending == 0 || (l->outstanding != 0 && l->since < l->limit))
        return 0;
    uint64_t room = l->high == RILL_UNBOUNDED ? RILL_UNBOUNDED : l->high - l->outstanding;
    uint64_t n = l->pending < room ? l->pending : room;
    if (n == 0)
        return 0;
    if (l->pending != RILL_UNBOUNDED)
        l->pending -= n;
    l->outstanding = sat_add(l->outstanding, n);
    l->since = 0;
    return n;
}

static void send_batch(limit *l, uint64_t n)
{
    if (n)
        rill__request(l->r.up, n);
}

static void limit_on_next(rill_subscriber *self, void *item)
{
    limit *l = (limit *)rill__relay_of_in(self);
    lock(l);
    if (l->outstanding != RILL_UNBOUNDED && l->outstanding)
        l->outstanding--;
    l->since++;
    unlock(l);
    /* Deliver first: downstream's request inside on_next then finds the
     * counters current, and the batch follows the item it replaces. */
    rill__relay_on_next(self, item);
    lock(l);
    uint64_t n = next_batch(l);
    unlock(l);
    send_batch(l, n);
}

static void limit_request(rill_subscription *s, uint64_t n)
{
    limit *l = (limit *)rill__relay_of_out(s);
    if (n == 0) {
        rill__request(l->r.up, 0);   /* upstream ends the stream with EINVAL */
        return;
    }
    lock(l);
    l->pending = sat_add(l->pending, n);
    uint64_t batch = next_batch(l);
    unlock(l);
    send_batch(l, batch);
}

static const struct rill_subscriber_ops limit_in_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = rill__relay_on_subscribe,
    .on_next = limit_on_next,
    .on_error = rill__relay_on_error,
    .on_complete = rill__relay_on_complete,
    .on_release = rill__relay_on_release,
    .context = rill__relay_context,
};

static const struct rill_subscription_ops limit_out_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = limit_request,
    .cancel = rill__relay_cancel,
};

static void limit_subscribe(rill_publisher *self, rill_subscriber *s)
{
    limit_publisher *lp = (limit_publisher *)self;
    limit *l = rill__relay_new(sizeof *l, &limit_in_ops, &limit_out_ops, self, s);
    if (!l)
        return;
    atomic_flag_clear(&l->lock);
    l->high = lp->high;
    l->limit = lp->limit;
    rill__relay_subscribe(&l->r, lp->op.up);
}

static const struct rill_publisher_ops limit_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = limit_subscribe,
    .destroy = rill__operator_destroy,
};

rill_publisher *rill_limit_rate(rill_publisher *up, uint64_t high, uint64_t low)
{
    if (high == 0 || low > high)
        return rill__operator_fail(up, NULL, NULL, EINVAL);
    limit_publisher *lp = rill__operator_new(sizeof *lp, &limit_ops, up, NULL, NULL);
    if (!lp)
        return NULL;
    lp->high = high;
    lp->limit = low ? low : high;
    return &lp->op.base;
}
