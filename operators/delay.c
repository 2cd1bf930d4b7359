/* operators/delay.c — rill_delay: shift every item (and completion) later
 * by a fixed time, delivering on a scheduler's worker.
 *
 * The shape is observe_on's, with a clock on the consumer side. Upstream's
 * items go into a single-producer single-consumer ring of PREFETCH slots,
 * each stamped with its due time (arrival on the scheduler's clock plus the
 * delay). The stage requests PREFETCH upstream at the start, then LIMIT =
 * PREFETCH - PREFETCH/4 each time the consumer has taken that many (the 75%
 * rule), so the ring never overflows and nothing is allocated per item.
 *
 * Threads and ownership:
 *  - the producer side (in.*) runs on whatever thread upstream signals on;
 *    it writes ring slots and `tail`, and never blocks;
 *  - the consumer side is the drain, which runs on the worker: it owns
 *    `head`, delivers every downstream signal, and replenishes upstream.
 *    It delivers the head item once it is due and demanded; when the head
 *    is not due yet it queues `timer` (a delayed task) for that moment.
 *    Due times only grow (upstream's signals are serial and the clock is
 *    monotonic), so one queued timer, for the earliest due time, suffices;
 *  - the queue-drain counter `wip` decides who may drain: whoever moves it
 *    from 0 schedules `drain_task` (or, being the timer on the worker,
 *    drains in place). It starts at 1, held by the subscribe phase.
 *
 * Terminal signals: completion waits behind the items and is itself
 * delayed (due `delay` after it arrived). An error cuts ahead: the drain
 * signals it as soon as it runs, and the items still queued go to the
 * discard hooks. Upstream sending more than requested ends the stream with
 * on_error(EOVERFLOW); a task refused by a shut-down scheduler ends it with
 * on_error(ECANCELED).
 *
 * Lifetime: references held by upstream (dropped in in.on_release), by the
 * drain (dropped once downstream has been released), and by the timer while
 * it is queued (passed to whoever dequeues it: rill_task_cancel returning 0,
 * or its run). Only the drain queues the timer, and the drain that ends the
 * stream cancels it, so no timer outlives the stream by more than a run that
 * is already under way. Calls into upstream from the worker go through
 * rundown protection (lib/upstream.c). Items still in the ring when the stage
 * is freed (in flight at cancel) go to the discard hooks.
 */
#include "alloc-internal.h"
#include "atomic-internal.h"
#include "relay-internal.h"
#include "scheduler-internal.h"
#include "stage-internal.h"
#include "upstream-internal.h"

#include <rill/operators.h>
#include <rill/scheduler.h>

#include <errno.h>

#define PREFETCH 256u                        /* a power of two: the ring's size */
#define LIMIT (PREFETCH - PREFETCH / 4)      /* the replenish batch */
#define MASK ((uint64_t)PREFETCH - 1)

enum { RUNNING = 0, CANCELLED = 1, BAD_REQUEST = 2, SCHED_DEAD = 3 };

typedef struct delay_publisher {
    rill__operator op;
    rill_scheduler *sched;   /* reference */
    uint64_t delay;
} delay_publisher;

typedef struct slot {
    void *item;
    uint64_t due;
} slot;

typedef struct delayer {
    rill_subscriber in;
    rill_subscription out;
    rill_task drain_task;
    rill_task timer;
    rill__upstream up;
    rill_subscriber *down;
    rill_worker *worker;
    rill_context *ctx;             /* reference */
    rill_scheduler *sched;         /* reference */
    uint64_t delay;
    atomic_uint refs;

    /* producer side; `error` and `complete_due` are written before up_done */
    _Atomic uint64_t tail;
    int producer_done;             /* upstream's signals only */
    rill_error *error;
    uint64_t complete_due;

    /* consumer side (the drainer) */
    uint64_t head;
    uint32_t consumed;             /* since the last replenish */
    int armed;                     /* the timer is queued (worker only) */
    _Atomic uint64_t up_requested; /* total requested upstream */

    /* control, written by anyone */
    _Atomic uint64_t requested;
    _Atomic uint32_t wip;
    atomic_int stop;
    atomic_int up_done;

    slot ring[PREFETCH];
} delayer;

static void delayer_free(delayer *o)
{
    uint64_t tail = atomic_load_explicit(&o->tail, memory_order_acquire);
    for (uint64_t h = o->head; h != tail; h++)
        rill__discard(o->ctx, o->ring[h & MASK].item);
    rill_worker_free(o->worker);
    rill_scheduler_unref(o->sched);
    rill_error_unref(o->error);
    rill_context_unref(o->ctx);
    rill__free(o);
}

static void delayer_ref(delayer *o)
{
    atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
}

static void delayer_unref(delayer *o)
{
    /* acq_rel: the last owner sees every other owner's writes */
    if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
        delayer_free(o);
}

static void set_stop(delayer *o, int why)
{
    int expected = RUNNING;
    atomic_compare_exchange_strong(&o->stop, &expected, why);
}

/* ---------------------------------------------------------------- drain */

static void clear(delayer *o)
{
    uint64_t tail = atomic_load_explicit(&o->tail, memory_order_acquire);
    for (; o->head != tail; o->head++)
        rill__discard(o->ctx, o->ring[o->head & MASK].item);
}

static void replenish(delayer *o)
{
    /* Publish the new allowance before asking: a synchronous upstream
     * delivers inside the request, and the producer checks against it. */
    atomic_fetch_add_explicit(&o->up_requested, LIMIT, memory_order_release);
    rill__upstream_request(&o->up, LIMIT);
}

/* Makes sure a drain runs at `due`. Returns 0, or ECANCELED (refused). */
static int wake_at(delayer *o, uint64_t due, uint64_t now)
{
    if (o->armed)
        return 0;   /* queued for an earlier due time: its drain re-arms */
    delayer_ref(o);   /* the queued timer's */
    int rc = rill_schedule_after(o->worker, &o->timer, due - now);
    if (rc != 0) {
        delayer_unref(o);   /* never the last: the drain holds one */
        return rc;
    }
    o->armed = 1;
    return 0;
}

/* The stream ends for a reason other than upstream's terminal signal. */
static int stopped(delayer *o, int why)
{
    clear(o);
    if (why == CANCELLED)
        return 1;   /* cancel() already told upstream */
    rill__upstream_cancel(&o->up);
    if (why == BAD_REQUEST)
        rill_deliver_error_code(o->down, EINVAL,
                                "rule 3.9: non-positive subscription request (request(0))");
    else
        rill_deliver_error_code(o->down, ECANCELED, "delay: the scheduler shut down");
    return 1;
}

/* Upstream is done and the ring empty: complete once that is due. Returns
 * 1 when completed (or stopped), 0 when waiting. */
static int complete_when_due(delayer *o)
{
    uint64_t now = rill_scheduler_now(o->sched);
    if (now >= o->complete_due) {
        rill__on_complete(o->down);
        return 1;
    }
    if (wake_at(o, o->complete_due, now) != 0)
        return stopped(o, SCHED_DEAD);
    return 0;
}

/* Looks at the head: 1 if it may be delivered now, 0 if it is not due (a
 * timer is queued for it), -1 if that timer was refused. `now` is a cached
 * reading of the clock, refreshed only when the head looks early. */
static int head_due(delayer *o, uint64_t *now)
{
    uint64_t due = o->ring[o->head & MASK].due;
    if (due <= *now)
        return 1;
    *now = rill_scheduler_now(o->sched);
    if (due <= *now)
        return 1;
    return wake_at(o, due, *now) == 0 ? 0 : -1;
}

/* Delivers what is due and demanded. Returns 1 once downstream got its last
 * signal (or cancelled). */
static int drain_once(delayer *o)
{
    uint64_t r = rill__load_acquire(&o->requested);
    uint64_t e = 0, now = 0;
    int rc = 0;
    for (;;) {
        int why = atomic_load_explicit(&o->stop, memory_order_acquire);
        if (why)
            return stopped(o, why);
        /* Read up_done before tail: everything pushed before the terminal
         * signal is then visible. */
        int done = atomic_load_explicit(&o->up_done, memory_order_acquire);
        if (done && o->error) {
            clear(o);   /* the error cuts ahead */
            rill__on_error(o->down, o->error);
            return 1;
        }
        if (o->head == atomic_load_explicit(&o->tail, memory_order_acquire)) {
            rc = done ? complete_when_due(o) : 0;
            break;
        }
        int due = head_due(o, &now);
        if (due <= 0) {
            rc = due < 0 ? stopped(o, SCHED_DEAD) : 0;
            break;
        }
        if (e == r) {
            r = e ? rill__demand_produced(&o->requested, e) : rill__load_acquire(&o->requested);
            e = 0;
            if (r == 0)
                break;
        }
        void *item = o->ring[o->head & MASK].item;
        o->head++;
        rill__on_next(o->down, item);
        e++;
        if (++o->consumed == LIMIT) {
            o->consumed = 0;
            replenish(o);
        }
    }
    if (e && !rc)
        rill__demand_produced(&o->requested, e);
    return rc;
}

/* Runs as the drainer (wip held) until no work is left or the stream ended.
 * After the end, wip is never given back, so no drain runs again. */
static void drain(delayer *o)
{
    uint32_t missed = 1;
    for (;;) {
        if (drain_once(o)) {
            if (rill_task_cancel(o->worker, &o->timer) == 0)
                delayer_unref(o);   /* removed: it will not run */
            rill_deliver_release(o->down);
            delayer_unref(o);       /* the drain's reference */
            return;
        }
        missed = rill__wip_leave(&o->wip, missed);
        if (missed == 0)
            return;
    }
}

static void drain_run(rill_task *t, int status)
{
    delayer *o = rill__container_of(t, delayer, drain_task);
    if (status != RILL_TASK_RUN)
        set_stop(o, SCHED_DEAD);
    drain(o);
}

/* The head (or the completion) fell due. The queued instance's reference
 * is this run's now. */
static void timer_run(rill_task *t, int status)
{
    delayer *o = rill__container_of(t, delayer, timer);
    o->armed = 0;
    if (status != RILL_TASK_RUN)
        set_stop(o, SCHED_DEAD);
    if (rill__wip_enter(&o->wip))
        drain(o);   /* we are on the worker: drain right here */
    delayer_unref(o);
}

/* Called by whoever now holds wip: hands the drain to the worker, or runs it
 * here when the scheduler refuses (shut down), to end with ECANCELED. */
static void start_drain(delayer *o)
{
    if (rill_schedule(o->worker, &o->drain_task) != 0) {
        set_stop(o, SCHED_DEAD);
        drain(o);
    }
}

static void signal_drain(delayer *o)
{
    if (rill__wip_enter(&o->wip))
        start_drain(o);
}

/* ---------------------------------------------------------------- upstream side */

static delayer *of_in(rill_subscriber *s)
{
    return rill__container_of(s, delayer, in);
}

static void in_on_subscribe(rill_subscriber *self, rill_subscription *s)
{
    delayer *o = of_in(self);
    if (o->up.sub) {
        rill__cancel(s);   /* rule 2.5: keep the first subscription */
        return;
    }
    o->up.sub = s;
    rill_deliver_subscribe(o->down, &o->out);
    atomic_store_explicit(&o->up_requested, PREFETCH, memory_order_release);
    delayer_ref(o);   /* a synchronous upstream may release us inside the request */
    rill__upstream_request(&o->up, PREFETCH);
    start_drain(o);   /* ends the subscribe phase, which held wip */
    delayer_unref(o);
}

static void producer_end(delayer *o, rill_error *err)
{
    o->producer_done = 1;
    o->error = err;
    if (!err)
        o->complete_due = rill__due(rill_scheduler_now(o->sched), o->delay);
    /* release: the error, complete_due and every pushed slot before up_done */
    atomic_store_explicit(&o->up_done, 1, memory_order_release);
    signal_drain(o);
}

static void in_on_next(rill_subscriber *self, void *item)
{
    delayer *o = of_in(self);
    if (o->producer_done) {
        rill__discard(o->ctx, item);
        return;
    }
    uint64_t t = atomic_load_explicit(&o->tail, memory_order_relaxed);
    if (t >= atomic_load_explicit(&o->up_requested, memory_order_acquire)) {
        rill__discard(o->ctx, item);
        rill_error *err = rill_error_new(EOVERFLOW, "delay: upstream delivered more than requested");
        rill__upstream_cancel(&o->up);
        producer_end(o, err ? err : rill_error_new(ENOMEM, NULL));
        return;
    }
    slot *sl = &o->ring[t & MASK];
    sl->item = item;
    sl->due = rill__due(rill_scheduler_now(o->sched), o->delay);
    /* release: the slot's contents before the new tail */
    atomic_store_explicit(&o->tail, t + 1, memory_order_release);
    signal_drain(o);
}

static void in_on_error(rill_subscriber *self, const rill_error *e)
{
    delayer *o = of_in(self);
    if (!o->producer_done)
        producer_end(o, rill_error_ref((rill_error *)e));
}

static void in_on_complete(rill_subscriber *self)
{
    delayer *o = of_in(self);
    if (!o->producer_done)
        producer_end(o, NULL);
}

static void in_on_release(rill_subscriber *self)
{
    delayer *o = of_in(self);
    rill__upstream_gone(&o->up);
    delayer_unref(o);
}

static rill_context *in_context(rill_subscriber *self)
{
    return of_in(self)->ctx;
}

static const struct rill_subscriber_ops delay_in_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = in_on_subscribe,
    .on_next = in_on_next,
    .on_error = in_on_error,
    .on_complete = in_on_complete,
    .on_release = in_on_release,
    .context = in_context,
};

/* ---------------------------------------------------------------- downstream side */

static void out_request(rill_subscription *s, uint64_t n)
{
    delayer *o = rill__container_of(s, delayer, out);
    delayer_ref(o);   /* a drain on the worker may end the stream meanwhile */
    if (n == 0)
        set_stop(o, BAD_REQUEST);
    else
        rill__demand_add(&o->requested, n);
    signal_drain(o);
    delayer_unref(o);
}

static void out_cancel(rill_subscription *s)
{
    delayer *o = rill__container_of(s, delayer, out);
    int expected = RUNNING;
    if (!atomic_compare_exchange_strong(&o->stop, &expected, CANCELLED))
        return;   /* already stopping */
    delayer_ref(o);
    rill__upstream_cancel(&o->up);
    signal_drain(o);
    delayer_unref(o);
}

static const struct rill_subscription_ops delay_out_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = out_request,
    .cancel = out_cancel,
};

/* ---------------------------------------------------------------- publisher */

static void delay_subscribe(rill_publisher *self, rill_subscriber *s)
{
    delay_publisher *dp = (delay_publisher *)self;
    delayer *o = rill__calloc(sizeof *o);
    rill_worker *w = o ? rill_worker_new(dp->sched) : NULL;
    if (!w) {
        int code = errno == ECANCELED ? ECANCELED : ENOMEM;
        rill__free(o);
        rill_reject(s, code, NULL);
        return;
    }
    o->in.ops = &delay_in_ops;
    o->out.ops = &delay_out_ops;
    o->drain_task.run = drain_run;
    o->timer.run = timer_run;
    o->down = s;
    o->worker = w;
    o->ctx = rill_context_ref(rill_subscriber_context(s));
    o->sched = rill_scheduler_ref(dp->sched);
    o->delay = dp->delay;
    atomic_init(&o->refs, 2);   /* upstream's, and the drain's */
    atomic_init(&o->wip, 1);    /* held by the subscribe phase */
    rill_subscribe(dp->op.up, &o->in);
}

static void delay_destroy(rill_publisher *self)
{
    rill_scheduler_unref(((delay_publisher *)self)->sched);
    rill__operator_destroy(self);
}

static const struct rill_publisher_ops delay_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = delay_subscribe,
    .destroy = delay_destroy,
};

rill_publisher *rill_delay(rill_publisher *up, uint64_t delay_ns, rill_scheduler *s)
{
    if (!s)
        return rill__operator_fail(up, NULL, NULL, EINVAL);
    delay_publisher *dp = rill__operator_new(sizeof *dp, &delay_ops, up, NULL, NULL);
    if (!dp)
        return NULL;
    dp->sched = rill_scheduler_ref(s);
    dp->delay = delay_ns;
    return &dp->op.base;
}
