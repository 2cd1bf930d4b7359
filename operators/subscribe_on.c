/* operators/subscribe_on.c — rill_subscribe_on: subscribe upstream, and make
 * every request, on a scheduler's worker.
 *
 * Downstream gets on_subscribe at once, on the subscribing thread; the
 * upstream subscription and every later request are then carried out by one
 * task on the worker, so a synchronous source emits on the worker's thread
 * only. Cancel goes straight upstream from the cancelling thread (see
 * out_cancel). Upstream's signals pass straight through.
 *
 * The task is driven by a queue-drain counter (`wip`): request and cancel
 * record their work (pending demand, flags) and schedule the task if it is
 * idle. `wip` starts at 1, held by the subscribe phase, so the task cannot
 * start before downstream's on_subscribe has returned.
 *
 * Lifetime: two references — upstream's side (dropped when upstream releases
 * us, after downstream has been released) and the task's (dropped once the
 * task has seen that release; from then on it keeps `wip` forever, so it is
 * never scheduled again). Calls into upstream go through rundown protection
 * (lib/upstream.c). If the scheduler refuses the task (shut down), upstream
 * is cancelled and downstream gets on_error(ECANCELED) before its release.
 *
 * Lingering. Before giving wip back, the task polls wip for a few
 * microseconds (linger()). It holds wip all the while, so the protocol is
 * the one above: a signal that arrives during the wait finds wip non-zero,
 * adds its ticket and returns, and the task sees the ticket (at the latest
 * in wip_leave) and runs another step. The wait only shortens the path of
 * that signal — no trip through the scheduler's queue, no wake-up.
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
#include <stdalign.h>
#include <stdint.h>

typedef struct subon_publisher {
    rill__operator op;
    rill_scheduler *sched;   /* reference */
} subon_publisher;

typedef struct subon {
    /* Set at subscribe, then only read. */
    rill_subscriber in;
    rill_subscription out;
    rill_subscriber *down;
    rill_worker *worker;
    rill_context *ctx;             /* reference */
    rill_publisher *owner;         /* reference */
    rill_scheduler *sched;         /* reference */
    rill_publisher *source;        /* borrowed from owner */
    void *block;                   /* what rill__calloc returned (see subon_alloc) */

    /* Written by the task (and the scheduler queueing it). */
    alignas(RILL__SEPARATE) rill_task task;
    rill__upstream up;
    atomic_uint refs;
    int subscribed, cancel_sent;   /* task only */
    int terminated;                /* upstream's signals only */

    /* Written by downstream's thread (request, cancel), polled by a
     * lingering task: kept apart from what the task writes. */
    alignas(RILL__SEPARATE) _Atomic uint64_t pending;   /* demand not yet passed upstream */
    _Atomic uint32_t wip;
    atomic_int cancelled, bad_request, dead, released;
    atomic_int up_set;             /* up.sub is set: cancel may go straight there */
} subon;

/* The groups above are only apart if the struct starts on a block boundary. */
static subon *subon_alloc(void)
{
    void *block = rill__calloc(sizeof(subon) + RILL__SEPARATE - 1);
    if (!block)
        return NULL;
    uintptr_t at = ((uintptr_t)block + RILL__SEPARATE - 1) & ~(uintptr_t)(RILL__SEPARATE - 1);
    subon *o = (subon *)at;
    o->block = block;
    return o;
}

static void subon_unref(subon *o)
{
    /* acq_rel: the last owner sees every other owner's writes */
    if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) != 1)
        return;
    rill_worker_free(o->worker);
    rill_scheduler_unref(o->sched);
    rill_context_unref(o->ctx);
    rill_publisher_unref(o->owner);
    rill__free(o->block);
}

/* ---------------------------------------------------------------- the task */

/* One pass of work; returns 1 when the task is finished for good. */
static int task_step(subon *o)
{
    if (atomic_load(&o->released))
        return 1;
    if (!o->subscribed) {
        o->subscribed = 1;
        if (atomic_load(&o->cancelled)) {
            /* Never subscribed upstream: end downstream ourselves, and drop
             * the reference upstream would have dropped. */
            if (atomic_load(&o->dead))
                rill_deliver_error_code(o->down, ECANCELED, "subscribe_on: the scheduler shut down");
            rill_deliver_release(o->down);
            subon_unref(o);
            return 1;
        }
        rill_subscribe(o->source, &o->in);
    }
    if (atomic_load(&o->cancelled)) {
        if (!o->cancel_sent) {
            o->cancel_sent = 1;
            rill__upstream_cancel(&o->up);
        }
        return 0;
    }
    /* Load before exchanging: the locked exchange is for when there is
     * something to take (wip's acquire made the flags visible). */
    if (atomic_load_explicit(&o->bad_request, memory_order_relaxed) &&
        atomic_exchange(&o->bad_request, 0))
        rill__upstream_request(&o->up, 0);   /* upstream turns it into on_error(EINVAL) */
    uint64_t n = atomic_load_explicit(&o->pending, memory_order_relaxed)
                 ? atomic_exchange(&o->pending, 0) : 0;
    if (n)
        rill__upstream_request(&o->up, n);
    return 0;
}

/* Before giving wip back, the task waits a moment on its own thread for
 * the next signal. A consumer that replenishes in batches (observe_on) asks
 * again a few microseconds after a synchronous source ran dry: a signal
 * that finds the task still holding wip costs its sender one atomic add,
 * where one that finds it idle costs a trip through the scheduler's queue
 * (a lock on each side and, once the thread has parked, a wake-up).
 * Bounded in time, and only while the thread has nothing else to run. */
#define LINGER_NS 10000u

static int linger(subon *o, uint32_t held)
{
    if (!rill__worker_may_spin(o->worker))
        return 0;
    rill__spinner sp;
    for (unsigned i = 1;; i++) {
        for (unsigned k = 0; k < 8; k++)
            rill__cpu_relax();
        if (atomic_load_explicit(&o->wip, memory_order_relaxed) != held)
            return 1;
        if (i == 4)
            rill__spin_start(&sp, LINGER_NS);
        if ((i & 3) == 0 &&
            (!rill__spin_more(&sp) || !rill__worker_may_spin(o->worker)))
            return 0;
    }
}

static void run(subon *o)
{
    uint32_t missed = 1;
    for (;;) {
        if (task_step(o)) {
            subon_unref(o);   /* the task's reference; wip stays held */
            return;
        }
        linger(o, missed);
        missed = rill__wip_leave(&o->wip, missed);
        if (missed == 0)
            return;
    }
}

static void task_run(rill_task *t, int status)
{
    subon *o = rill__container_of(t, subon, task);
    if (status != RILL_TASK_RUN)
        atomic_store(&o->dead, 1);
    run(o);
}

/* Called by whoever holds wip. A refused task means the scheduler is gone:
 * stop upstream from here and let the release path report ECANCELED. */
static void start_task(subon *o)
{
    if (rill_schedule(o->worker, &o->task) == 0)
        return;
    atomic_store(&o->dead, 1);
    atomic_store(&o->cancelled, 1);
    run(o);
}

static void signal_task(subon *o)
{
    if (rill__wip_enter(&o->wip))
        start_task(o);
}

/* ---------------------------------------------------------------- upstream side */

static subon *of_in(rill_subscriber *s)
{
    return rill__container_of(s, subon, in);
}

static void in_on_subscribe(rill_subscriber *self, rill_subscription *s)
{
    subon *o = of_in(self);
    if (o->up.sub) {
        rill__cancel(s);   /* rule 2.5: keep the first subscription */
        return;
    }
    o->up.sub = s;
    atomic_store_explicit(&o->up_set, 1, memory_order_release);   /* publishes up.sub */
}

static void in_on_next(rill_subscriber *self, void *item)
{
    rill__on_next(of_in(self)->down, item);
}

static void in_on_error(rill_subscriber *self, const rill_error *e)
{
    subon *o = of_in(self);
    o->terminated = 1;
    rill__on_error(o->down, e);
}

static void in_on_complete(rill_subscriber *self)
{
    subon *o = of_in(self);
    o->terminated = 1;
    rill__on_complete(o->down);
}

static void in_on_release(rill_subscriber *self)
{
    subon *o = of_in(self);
    rill__upstream_gone(&o->up);
    if (atomic_load(&o->dead) && !o->terminated)
        rill_deliver_error_code(o->down, ECANCELED, "subscribe_on: the scheduler shut down");
    rill_deliver_release(o->down);
    atomic_store(&o->released, 1);
    /* The task must learn it may finish; keep ourselves alive meanwhile. */
    atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
    signal_task(o);
    subon_unref(o);   /* the extra one */
    subon_unref(o);   /* upstream's */
}

static rill_context *in_context(rill_subscriber *self)
{
    return of_in(self)->ctx;
}

static const struct rill_subscriber_ops subon_in_ops = {
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
    subon *o = rill__container_of(s, subon, out);
    if (n == 0)
        atomic_store(&o->bad_request, 1);
    else
        rill__demand_add(&o->pending, n);
    signal_task(o);
}

/* Cancel does not wait for the task: the worker may be busy inside a long
 * synchronous emission (the very thing being cancelled), so it goes
 * straight upstream from here — subscription cancel is thread-safe, and
 * the rundown guard covers upstream releasing us meanwhile. The task still
 * sees the flag, for the case where upstream is not subscribed yet. */
static void out_cancel(rill_subscription *s)
{
    subon *o = rill__container_of(s, subon, out);
    atomic_store(&o->cancelled, 1);
    atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);   /* upstream may release us inside */
    if (atomic_load_explicit(&o->up_set, memory_order_acquire))
        rill__upstream_cancel(&o->up);
    signal_task(o);
    subon_unref(o);
}

static const struct rill_subscription_ops subon_out_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = out_request,
    .cancel = out_cancel,
};

/* ---------------------------------------------------------------- publisher */

static void subon_subscribe(rill_publisher *self, rill_subscriber *s)
{
    subon_publisher *sp = (subon_publisher *)self;
    subon *o = subon_alloc();
    rill_worker *w = o ? rill_worker_new(sp->sched) : NULL;
    if (!w) {
        int code = errno == ECANCELED ? ECANCELED : ENOMEM;
        rill__free(o ? o->block : NULL);
        rill_reject(s, code, NULL);
        return;
    }
    o->in.ops = &subon_in_ops;
    o->out.ops = &subon_out_ops;
    o->task.run = task_run;
    o->down = s;
    o->worker = w;
    o->ctx = rill_context_ref(rill_subscriber_context(s));
    o->owner = rill_publisher_ref(self);
    o->sched = rill_scheduler_ref(sp->sched);
    o->source = sp->op.up;
    atomic_init(&o->refs, 2);   /* upstream's side, and the task's */
    atomic_init(&o->wip, 1);    /* held by the subscribe phase */
    rill_deliver_subscribe(s, &o->out);
    start_task(o);
}

static void subon_destroy(rill_publisher *self)
{
    rill_scheduler_unref(((subon_publisher *)self)->sched);
    rill__operator_destroy(self);
}

static const struct rill_publisher_ops subon_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = subon_subscribe,
    .destroy = subon_destroy,
};

rill_publisher *rill_subscribe_on(rill_publisher *up, rill_scheduler *s)
{
    if (!s)
        return rill__operator_fail(up, NULL, NULL, EINVAL);
    subon_publisher *sp = rill__operator_new(sizeof *sp, &subon_ops, up, NULL, NULL);
    if (!sp)
        return NULL;
    sp->sched = rill_scheduler_ref(s);
    return &sp->op.base;
}
