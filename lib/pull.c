/* lib/pull.c — the synchronous pull-source engine (see pull-internal.h),
 * which also runs fused chains (see fuse-internal.h).
 *
 * Invariants:
 *  - Only the thread that moved `wip` from 0 to 1 (the drainer) calls the
 *    source's functions, the steps' user functions, or signals the
 *    subscriber; everyone else adds their work (demand, a stop flag) and a
 *    wip ticket, and leaves. That gives serial signals (rule 1.3) and
 *    depth-1 re-entrancy (rule 3.3).
 *  - on_subscribe runs as the first drain: wip starts at 1, so requests made
 *    inside on_subscribe are served right after it returns.
 *  - The stream ends inside a drain (terminal signal or cancel seen); that
 *    same drainer then calls on_release and frees the subscription at once,
 *    without touching `wip` again. A thread that left a ticket has nothing
 *    left to do after its increment, so freeing under it is safe; callers
 *    must not call request/cancel after on_release has returned (core.h).
 *
 * Demand: the emit loop (pull-internal.h) reads the demand once per batch
 * and counts what it delivers in a local; the shared counter is settled
 * with one CAS when the batch is used up (never per item, and never while
 * the demand is RILL_UNBOUNDED). Items a filter step drops are not
 * delivered, so they cost no demand — the fused form of a filter's
 * replacement request(1).
 */
#include "alloc-internal.h"
#include "stage-internal.h"
#include "atomic-internal.h"
#include "error-internal.h"
#include "pull-internal.h"

#include <errno.h>
#include <stdalign.h>
#include <string.h>

static void finish(rill__pull *p)
{
    p->down->ops->on_release(p->down);
    if (p->src->pull.finish)
        p->src->pull.finish(p->state);
    rill_context_unref(p->ctx);
    rill_publisher_unref(p->owner);
    rill__free(p);
}

int rill__pull_end(rill__pull *p, int rc, rill_error *err)
{
    if (rc == RILL__PULL_ERROR) {
        rill__on_error(p->down, err);
        rill_error_unref(err);
    } else {
        rill__on_complete(p->down);
    }
    return 1;
}

int rill__pull_stopped(rill__pull *p, int stop)
{
    if (stop == RILL__PULL_BAD_REQUEST)
        rill_deliver_error_code(p->down, EINVAL,
                                "rule 3.9: non-positive subscription request (request(0))");
    return 1;
}

/* take has already cancelled its upstream when it delivers its last item,
 * so only a cancel from downstream (not a late request(0), which a finished
 * take ignores) keeps the completion from going out. */
int rill__pull_take_done(rill__pull *p)
{
    if (rill__load_relaxed(&p->stop) != RILL__PULL_CANCELLED)
        rill__on_complete(p->down);
    return RILL__STEP_OVER;
}

/* A failing stage discards the item, cancels upstream and signals the code
 * downstream, unless downstream has cancelled. */
static int step_failed(rill__pull *p, void *item, int code)
{
    rill__discard(p->ctx, item);
    if (rill__load_relaxed(&p->stop) != RILL__PULL_CANCELLED)
        rill_deliver_error_code(p->down, code, NULL);
    return RILL__STEP_OVER;
}

int rill__pull_map_failed(rill__pull *p, void *item, int rc)
{
    return step_failed(p, item, rc > 0 ? rc : -rc);
}

int rill__pull_pred_failed(rill__pull *p, void *item, int rc)
{
    return step_failed(p, item, -rc);
}

/* Runs the steps from st on *item. A take step that lets its last item
 * through does not stop the item: the later steps still see it, as they
 * would downstream of take; *take_hit then tells the caller to end the
 * stream after it. */
static int run_from(rill__pull *p, rill__step *st, void **item, int *take_hit)
{
    for (;; st++) {
        int s = RILL__STEP_PASS;
        switch (st->kind) {
        case RILL__STEP_MAP:
            s = rill__pull_map(p, &st->call, item);
            break;
        case RILL__STEP_FILTER:
            s = rill__pull_filter(p, &st->call, *item);
            break;
        case RILL__STEP_TAKE:
            if (--st->remaining == 0)
                *take_hit = 1;
            break;
        default:
            return RILL__STEP_PASS;
        }
        if (s != RILL__STEP_PASS)
            return s;
    }
}

int rill__pull_run_steps(rill__pull *p, void **item)
{
    int take_hit = 0;
    int s = run_from(p, p->steps, item, &take_hit);
    if (!take_hit || s == RILL__STEP_OVER)
        return s;
    if (s == RILL__STEP_PASS)
        rill__on_next(p->down, *item);
    return rill__pull_take_done(p);
}

int rill__pull_after_take(rill__pull *p, rill__step *st, void *item)
{
    int take_hit = 0;   /* a later take ending here too changes nothing */
    int s = run_from(p, st, &item, &take_hit);
    if (s == RILL__STEP_OVER)
        return s;
    if (s == RILL__STEP_PASS)
        rill__on_next(p->down, item);
    return rill__pull_take_done(p);
}

/* Completion follows the source's last item at once — unless its on_next
 * cancelled or asked for request(0), which the stream still honours. */
int rill__pull_tail(rill__pull *p, int rc, void *item, rill_error *err, int take_hit)
{
    if (rc != RILL__PULL_LAST)
        return rill__pull_end(p, rc, err);
    int s = p->steps ? rill__pull_run_steps(p, &item) : RILL__STEP_PASS;
    if (s == RILL__STEP_OVER)
        return 1;
    if (s == RILL__STEP_DROP)
        return rill__pull_end(p, RILL__PULL_END, NULL);
    rill__on_next(p->down, item);
    if (take_hit) {
        rill__pull_take_done(p);
        return 1;
    }
    int stop = rill__load_relaxed(&p->stop);
    return stop ? rill__pull_stopped(p, stop) : rill__pull_end(p, RILL__PULL_END, NULL);
}

/* The loop for sources that do not instantiate their own. */
static int generic_emit(rill__pull *p)
{
    return rill__pull_emit(p, p->src->pull.next, p->state);
}

static int step(rill__pull *p)
{
    if (!p->started) {
        p->started = 1;
        int stop = rill__load_relaxed(&p->stop);
        /* take(0) completes right after on_subscribe, before its upstream
         * starts; only a cancel from downstream prevents it. */
        if (p->take_zero)
            return rill__pull_take_done(p);
        if (stop)
            return rill__pull_stopped(p, stop);   /* cancelled in on_subscribe: never start */
        if (p->src->pull.start) {
            rill_error *err = NULL;
            int rc = p->src->pull.start(p->state, &err);
            if (rc == RILL__PULL_END || rc == RILL__PULL_ERROR)
                return rill__pull_end(p, rc, err);
        }
    }
    return p->src->emit ? p->src->emit(p) : generic_emit(p);
}

static void drain(rill__pull *p)
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
    rill__pull *p = rill__container_of(s, rill__pull, sub);
    if (n == 0) {
        int expected = RILL__PULL_RUNNING;
        atomic_compare_exchange_strong(&p->stop, &expected, RILL__PULL_BAD_REQUEST);
    } else {
        rill__demand_add(&p->requested, n);
    }
    if (rill__wip_enter(&p->wip))
        drain(p);
}

static void pull_cancel(rill_subscription *s)
{
    rill__pull *p = rill__container_of(s, rill__pull, sub);
    /* Release: the drainer that reads the flag sees everything before it. */
    atomic_store_explicit(&p->stop, RILL__PULL_CANCELLED, memory_order_release);
    if (rill__wip_enter(&p->wip))
        drain(p);
}

static const struct rill_subscription_ops pull_subscription_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = pull_request,
    .cancel = pull_cancel,
};

/* ---------------------------------------------------------------- subscribing */

static void ignore_next(rill_subscriber *self, void *item)
{
}

/* Allocates a subscription of source `self` with room for a program of
 * nsteps steps and inits the source's state; on no memory rejects s and
 * returns NULL. */
static rill__pull *pull_new(rill_publisher *self, uint32_t nsteps, rill_subscriber *s)
{
    const struct rill__source *src = rill__source_of(self);
    size_t a = alignof(max_align_t);
    size_t state_size = (src->state_size + a - 1) / a * a;
    /* A fused program gets one more step: the RILL__STEP_END terminator. */
    size_t steps_size = nsteps ? ((size_t)nsteps + 1) * sizeof(rill__step) : 0;
    rill__pull *p = rill__calloc(sizeof *p + state_size + steps_size);
    if (!p) {
        rill_reject(s, ENOMEM, NULL);
        return NULL;
    }
    p->sub.ops = &pull_subscription_ops;
    p->down = s;
    p->on_next = s->ops->on_next ? s->ops->on_next : ignore_next;
    p->src = src;
    p->limit = RILL__PULL_NO_LIMIT;
    if (src->init)
        src->init(self, p->state);
    if (nsteps)
        p->steps = (rill__step *)(void *)((char *)p->state + state_size);
    return p;
}

static void pull_start(rill__pull *p)
{
    atomic_store_explicit(&p->wip, 1, memory_order_relaxed);   /* on_subscribe is the first drain */
    rill_deliver_subscribe(p->down, &p->sub);
    drain(p);
}

void rill__pull_subscribe(rill_publisher *self, rill_subscriber *s)
{
    rill__pull *p = pull_new(self, 0, s);
    if (p)
        pull_start(p);
}

/* The shape of a program of n steps (takes already stripped from its end). */
static int shape_of(const rill__step *st, uint32_t n)
{
    if (n == 0)
        return RILL__SHAPE_NONE;
    if (n == 1 && st[0].kind != RILL__STEP_TAKE)
        return st[0].kind == RILL__STEP_MAP ? RILL__SHAPE_M : RILL__SHAPE_F;
    if (n == 2 && st[0].kind == RILL__STEP_MAP && st[1].kind == RILL__STEP_FILTER)
        return RILL__SHAPE_MF;
    if (n == 2 && st[0].kind == RILL__STEP_FILTER && st[1].kind == RILL__STEP_MAP)
        return RILL__SHAPE_FM;
    return RILL__SHAPE_ANY;
}

/* Compiles the program: the takes at its end only cap how many items are
 * delivered, so they become `limit`; a take(0) anywhere ends the stream
 * before it starts. */
void rill__pull_subscribe_fused(rill_publisher *src, const rill__step *steps, uint32_t nsteps,
                                rill_publisher *owner, rill_subscriber *s)
{
    rill__pull *p = pull_new(src, nsteps, s);
    if (!p)
        return;
    uint32_t n = nsteps;
    while (n > 0 && steps[n - 1].kind == RILL__STEP_TAKE) {
        n--;
        if (steps[n].remaining < p->limit)
            p->limit = steps[n].remaining;
    }
    for (uint32_t i = 0; i < nsteps; i++)
        if (steps[i].kind == RILL__STEP_TAKE && steps[i].remaining == 0)
            p->take_zero = 1;
    memcpy(p->steps, steps, (size_t)n * sizeof *steps);
    for (uint32_t i = 0; i < n; i++)
        p->steps[i].ctx_free = NULL;   /* the owner keeps every ctx */
    p->steps[n].kind = RILL__STEP_END;
    p->shape = shape_of(p->steps, n);
    for (uint32_t i = 0; i < n && i < 2; i++)
        p->head[i] = p->steps[i].call;
    p->ctx = rill_context_ref(s->ops->context ? s->ops->context(s) : NULL);
    p->owner = rill_publisher_ref(owner);
    pull_start(p);
}
