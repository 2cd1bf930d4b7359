/* operators/interval.c — rill_interval and rill_timer: ticks on a
 * scheduler's clock.
 *
 * One subscription owns a worker of the scheduler and two intrusive tasks:
 *  - `timer`, a delayed task: each run is one tick falling due. It counts
 *    the tick in `fired` and, for an interval, queues itself again for the
 *    next intended due time (`due += period`, the delay computed against
 *    the clock at that moment), so late runs never accumulate drift;
 *  - `drain_task`, an immediate task that runs the drain on the worker.
 *
 * Every downstream signal after on_subscribe comes from the drain, and the
 * queue-drain counter `wip` makes one drainer at a time. The timer task runs
 * on the worker too, so it drains in place when it wins `wip`; requests and
 * cancels from other threads schedule `drain_task` instead. `wip` starts at
 * 1, held by the subscribe phase, so nothing reaches downstream while its
 * on_subscribe is running; the first drain arms the timer, never earlier,
 * so a scheduler that runs tasks on the caller's thread (rill_immediate)
 * cannot start ticking inside the subscribe phase.
 *
 * The drain delivers one item per fired tick while there is demand. A tick
 * with no demand ends an interval with on_error(EOVERFLOW) (the consumer
 * could not keep up; an interval has nowhere to keep ticks), whereas a
 * timer holds its single tick until a request arrives.
 *
 * Lifetime: `refs` counts the drain's reference (dropped after downstream
 * has been released) and one reference per queued timer. A queued timer's
 * reference passes to whoever removes it from the queue: rill_task_cancel
 * returning 0, or the scheduler running it. When the stream ends the drain
 * sets `ended` and cancels the timer; a timer run that is already under way
 * sees `ended` and does not queue itself again, or cancels the instance it
 * queued just before `ended` was set. Either way exactly one party drops
 * each reference, and the last one frees the subscription (on the worker,
 * from inside a task, as rill_worker_free allows).
 *
 * A running subscription holds a reference to its scheduler, so the
 * scheduler's threads keep running until the subscription ends. If the
 * scheduler refuses a task anyway (shut down), the stream ends with
 * on_error(ECANCELED).
 */
#include "alloc-internal.h"
#include "atomic-internal.h"
#include "scheduler-internal.h"
#include "stage-internal.h"

#include <rill/operators.h>
#include <rill/scheduler.h>

#include <errno.h>

enum { RUNNING = 0, CANCELLED = 1, BAD_REQUEST = 2, SCHED_DEAD = 3 };

typedef struct tick_publisher {
    rill_publisher base;
    rill_scheduler *sched;   /* reference */
    uint64_t period;         /* interval: the period; timer: the delay */
    int periodic;
} tick_publisher;

typedef struct ticker {
    rill_subscription out;
    rill_task drain_task;
    rill_task timer;
    rill_subscriber *down;
    rill_worker *worker;
    rill_scheduler *sched;         /* reference */
    uint64_t period;
    int periodic;
    uint64_t due;                  /* the next tick's intended time (worker only) */
    uint64_t emitted;              /* drainer only */
    int armed;                     /* drainer only: the first timer was queued */
    atomic_uint refs;
    _Atomic uint64_t fired;        /* ticks that fell due */
    _Atomic uint64_t requested;
    _Atomic uint32_t wip;
    atomic_int stop;               /* RUNNING, or why the stream stops */
    atomic_int ended;              /* the drain ended the stream: disarm */
} ticker;

static void ticker_ref(ticker *o)
{
    atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
}

static void ticker_unref(ticker *o)
{
    /* acq_rel: the last owner sees every other owner's writes */
    if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) != 1)
        return;
    rill_worker_free(o->worker);
    rill_scheduler_unref(o->sched);
    rill__free(o);
}

static void set_stop(ticker *o, int why)
{
    int expected = RUNNING;
    atomic_compare_exchange_strong(&o->stop, &expected, why);
}

/* ---------------------------------------------------------------- the timer */

/* Queues the timer for o->due; the queued instance owns a new reference. */
static int arm(ticker *o)
{
    uint64_t now = rill_scheduler_now(o->sched);
    uint64_t delay = o->due > now ? o->due - now : 0;
    ticker_ref(o);
    int rc = rill_schedule_after(o->worker, &o->timer, delay);
    if (rc != 0)
        ticker_unref(o);   /* never the last: the caller holds one */
    return rc;
}

/* The drain ended the stream: no tick may be queued any more. The seq_cst
 * store pairs with the load in rearm(): either we find the instance it
 * queued, or it sees `ended` and removes the instance itself. */
static void disarm(ticker *o)
{
    atomic_store(&o->ended, 1);
    if (rill_task_cancel(o->worker, &o->timer) == 0)
        ticker_unref(o);   /* removed: it will not run */
}

/* ---------------------------------------------------------------- drain */

/* The stream ends for a reason other than the ticks. Returns 1. */
static int stopped(ticker *o, int why)
{
    if (why == BAD_REQUEST)
        rill_deliver_error_code(o->down, EINVAL,
                                "rule 3.9: non-positive subscription request (request(0))");
    else if (why == SCHED_DEAD)
        rill_deliver_error_code(o->down, ECANCELED,
                                o->periodic ? "interval: the scheduler shut down"
                                            : "timer: the scheduler shut down");
    return 1;
}

/* Delivers the ticks that fell due, as demand allows. Returns 1 once
 * downstream got its last signal (or cancelled). */
static int drain_once(ticker *o)
{
    int why = atomic_load_explicit(&o->stop, memory_order_acquire);
    if (why)
        return stopped(o, why);
    if (!o->armed) {
        o->armed = 1;
        if (arm(o) != 0)
            return stopped(o, SCHED_DEAD);
    }
    /* acquire: pairs with the timer's release increment */
    while (o->emitted < atomic_load_explicit(&o->fired, memory_order_acquire)) {
        if (rill__load_acquire(&o->requested) == 0) {
            if (!o->periodic)
                return 0;   /* a timer holds its tick until requested */
            rill_deliver_error_code(o->down, EOVERFLOW,
                                    "interval: a tick fell due with no outstanding demand "
                                    "(the consumer could not keep up)");
            return 1;
        }
        rill__demand_produced(&o->requested, 1);
        rill__on_next(o->down, (void *)(intptr_t)o->emitted++);
        why = atomic_load_explicit(&o->stop, memory_order_acquire);
        if (why)
            return stopped(o, why);   /* cancelled (or request(0)) inside on_next */
        if (!o->periodic) {
            rill__on_complete(o->down);
            return 1;
        }
    }
    return 0;
}

/* Runs as the drainer (wip held) until no work is left or the stream ended.
 * After the end, wip is never given back, so no drain runs again. */
static void drain(ticker *o)
{
    uint32_t missed = 1;
    for (;;) {
        if (drain_once(o)) {
            disarm(o);
            rill_deliver_release(o->down);
            ticker_unref(o);   /* the drain's reference */
            return;
        }
        missed = rill__wip_leave(&o->wip, missed);
        if (missed == 0)
            return;
    }
}

static void drain_run(rill_task *t, int status)
{
    ticker *o = rill__container_of(t, ticker, drain_task);
    if (status != RILL_TASK_RUN)
        set_stop(o, SCHED_DEAD);
    drain(o);
}

/* Called by whoever now holds wip: hands the drain to the worker, or runs it
 * here when the scheduler refuses (shut down), to end with ECANCELED. */
static void start_drain(ticker *o)
{
    if (rill_schedule(o->worker, &o->drain_task) != 0) {
        set_stop(o, SCHED_DEAD);
        drain(o);
    }
}

/* Queues the next tick of an interval, relative to the intended due time. */
static void rearm(ticker *o)
{
    o->due = rill__due(o->due, o->period);
    if (arm(o) != 0) {
        set_stop(o, SCHED_DEAD);
        if (rill__wip_enter(&o->wip))
            drain(o);
        return;
    }
    /* See disarm(): the drain may have ended (on another thread) after our
     * test of `ended` and missed the instance we just queued. */
    if (atomic_load(&o->ended) && rill_task_cancel(o->worker, &o->timer) == 0)
        ticker_unref(o);
}

/* A tick falls due. The queued instance's reference is this run's now. */
static void timer_run(rill_task *t, int status)
{
    ticker *o = rill__container_of(t, ticker, timer);
    if (status != RILL_TASK_RUN)
        set_stop(o, SCHED_DEAD);
    else
        atomic_fetch_add_explicit(&o->fired, 1, memory_order_release);
    if (rill__wip_enter(&o->wip))
        drain(o);   /* we are on the worker: drain right here */
    if (o->periodic && status == RILL_TASK_RUN && !atomic_load(&o->ended))
        rearm(o);
    ticker_unref(o);
}

/* ---------------------------------------------------------------- downstream side */

static void out_request(rill_subscription *s, uint64_t n)
{
    ticker *o = rill__container_of(s, ticker, out);
    ticker_ref(o);   /* a drain on the worker may end the stream meanwhile */
    if (n == 0)
        set_stop(o, BAD_REQUEST);
    else
        rill__demand_add(&o->requested, n);
    if (rill__wip_enter(&o->wip))
        start_drain(o);
    ticker_unref(o);
}

static void out_cancel(rill_subscription *s)
{
    ticker *o = rill__container_of(s, ticker, out);
    ticker_ref(o);
    set_stop(o, CANCELLED);
    if (rill__wip_enter(&o->wip))
        start_drain(o);
    ticker_unref(o);
}

static const struct rill_subscription_ops ticker_out_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = out_request,
    .cancel = out_cancel,
};

/* ---------------------------------------------------------------- publisher */

static void ticker_subscribe(rill_publisher *self, rill_subscriber *s)
{
    tick_publisher *tp = (tick_publisher *)self;
    ticker *o = rill__calloc(sizeof *o);
    rill_worker *w = o ? rill_worker_new(tp->sched) : NULL;
    if (!w) {
        int code = errno == ECANCELED ? ECANCELED : ENOMEM;
        rill__free(o);
        rill_reject(s, code, NULL);
        return;
    }
    o->out.ops = &ticker_out_ops;
    o->drain_task.run = drain_run;
    o->timer.run = timer_run;
    o->down = s;
    o->worker = w;
    o->sched = rill_scheduler_ref(tp->sched);
    o->period = tp->period;
    o->periodic = tp->periodic;
    o->due = rill__due(rill_scheduler_now(tp->sched), tp->period);
    atomic_init(&o->refs, 1);   /* the drain's */
    atomic_init(&o->wip, 1);    /* held by the subscribe phase */
    rill_deliver_subscribe(s, &o->out);
    start_drain(o);             /* ends the subscribe phase; the drain arms the timer */
}

static void tick_destroy(rill_publisher *self)
{
    rill_scheduler_unref(((tick_publisher *)self)->sched);
    rill__free(self);
}

static const struct rill_publisher_ops tick_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = ticker_subscribe,
    .destroy = tick_destroy,
};

static rill_publisher *tick_new(uint64_t period, int periodic, rill_scheduler *s)
{
    if (!s) {
        errno = EINVAL;
        return NULL;
    }
    tick_publisher *tp = rill__malloc(sizeof *tp);
    if (!tp)
        return NULL;
    rill_publisher_init(&tp->base, &tick_ops);
    tp->sched = rill_scheduler_ref(s);
    tp->period = period;
    tp->periodic = periodic;
    return &tp->base;
}

rill_publisher *rill_interval(uint64_t period_ns, rill_scheduler *s)
{
    if (period_ns == 0) {
        errno = EINVAL;
        return NULL;
    }
    return tick_new(period_ns, 1, s);
}

rill_publisher *rill_timer(uint64_t delay_ns, rill_scheduler *s)
{
    return tick_new(delay_ns, 0, s);
}
