/* lib/pull.c — the synchronous pull-source engine (see pull-internal.h).
 *
 * Invariants:
 *  - Only the thread that moved `wip` from 0 to 1 (the drainer) calls the
 *    source's functions or signals the subscriber; everyone else adds their
 *    work (demand, a stop flag) and a wip ticket, and leaves. That gives
 *    serial signals (rule 1.3) and depth-1 re-entrancy (rule 3.3).
 *  - on_subscribe runs as the first drain: wip starts at 1, so requests made
 *    inside on_subscribe are served right after it returns.
 *  - The stream ends inside a drain (terminal signal or cancel seen); that
 *    same drainer then calls on_release and frees the subscription at once,
 *    without touching `wip` again. A thread that left a ticket has nothing
 *    left to do after its increment, so freeing under it is safe; callers
 *    must not call request/cancel after on_release has returned (core.h).
 */
#include "alloc-internal.h"
#include "stage-internal.h"
#include "atomic-internal.h"
#include "error-internal.h"
#include "pull-internal.h"

#include <errno.h>
#include <stdalign.h>

enum { RUNNING = 0, CANCELLED = 1, BAD_REQUEST = 2 };

typedef struct pull {
    rill_subscription sub;
    rill_subscriber *down;
    const struct rill__pull_ops *ops;
    _Atomic uint64_t requested;
    _Atomic uint32_t wip;
    atomic_int stop;          /* RUNNING, CANCELLED or BAD_REQUEST */
    int started;              /* drainer-only */
    max_align_t state[];
} pull;

static pull *from_state(void *state)
{
    return rill__container_of(state, pull, state);
}

void *rill__pull_alloc(size_t state_size)
{
    pull *p = rill__calloc(sizeof *p + state_size);
    return p ? p->state : NULL;
}

static void finish(pull *p)
{
    rill_deliver_release(p->down);
    if (p->ops->finish)
        p->ops->finish(p->state);
    rill__free(p);
}

/* Signals what ended the stream; returns 1 (the stream is over). */
static int end(pull *p, int rc, rill_error *err)
{
    if (rc == RILL__PULL_ERROR) {
        rill__on_error(p->down, err);
        rill_error_unref(err);
    } else {
        rill__on_complete(p->down);
    }
    return 1;
}

static int stopped(pull *p, int stop)
{
    if (stop == BAD_REQUEST)
        rill_deliver_error_code(p->down, EINVAL,
                                "rule 3.9: non-positive subscription request (request(0))");
    return 1;
}

/* Emits while there is demand. Returns 1 when the stream is over. */
static int emit(pull *p)
{
    uint64_t r = rill__load_acquire(&p->requested);
    uint64_t e = 0;
    for (;;) {
        while (e != r) {
            int stop = rill__load_relaxed(&p->stop);
            if (stop)
                return stopped(p, stop);
            void *item = NULL;
            rill_error *err = NULL;
            int rc = p->ops->next(p->state, &item, &err);
            if (rc == RILL__PULL_END || rc == RILL__PULL_ERROR)
                return end(p, rc, err);
            rill__on_next(p->down, item);
            e++;
            if (rc == RILL__PULL_LAST) {
                stop = rill__load_relaxed(&p->stop);
                return stop ? stopped(p, stop) : end(p, RILL__PULL_END, NULL);
            }
        }
        int stop = rill__load_relaxed(&p->stop);
        if (stop)
            return stopped(p, stop);
        r = rill__load_acquire(&p->requested);
        if (r == e) {
            r = rill__demand_produced(&p->requested, e);
            e = 0;
            if (r == 0)
                return 0;
        }
    }
}

static int step(pull *p)
{
    if (!p->started) {
        p->started = 1;
        int stop = rill__load_relaxed(&p->stop);
        if (stop)
            return stopped(p, stop);   /* cancelled in on_subscribe: never start */
        if (p->ops->start) {
            rill_error *err = NULL;
            int rc = p->ops->start(p->state, &err);
            if (rc == RILL__PULL_END || rc == RILL__PULL_ERROR)
                return end(p, rc, err);
        }
    }
    return emit(p);
}

static void drain(pull *p)
{
    uint32_t missed = 1;
    for (;;) {
        if (step(p)) {
            finish(p);
            return;
        }
        missed = rill__wip_leave(&p->wip, missed);
        if (missed == 0)
            return;
    }
}

static void pull_request(rill_subscription *s, uint64_t n)
{
    pull *p = rill__container_of(s, pull, sub);
    if (n == 0) {
        int expected = RUNNING;
        atomic_compare_exchange_strong(&p->stop, &expected, BAD_REQUEST);
    } else {
        rill__demand_add(&p->requested, n);
    }
    if (rill__wip_enter(&p->wip))
        drain(p);
}

static void pull_cancel(rill_subscription *s)
{
    pull *p = rill__container_of(s, pull, sub);
    /* Release: the drainer that reads the flag sees everything before it. */
    atomic_store_explicit(&p->stop, CANCELLED, memory_order_release);
    if (rill__wip_enter(&p->wip))
        drain(p);
}

static const struct rill_subscription_ops pull_subscription_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = pull_request,
    .cancel = pull_cancel,
};

void rill__pull_start(void *state, const struct rill__pull_ops *ops, rill_subscriber *down)
{
    pull *p = from_state(state);
    p->sub.ops = &pull_subscription_ops;
    p->down = down;
    p->ops = ops;
    atomic_store_explicit(&p->wip, 1, memory_order_relaxed);   /* on_subscribe is the first drain */
    rill_deliver_subscribe(down, &p->sub);
    drain(p);
}
