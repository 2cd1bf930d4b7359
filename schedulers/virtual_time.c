/* schedulers/virtual_time.c — rill_virtual_time_new: a clock moved by hand.
 *
 * Nothing runs by itself: tasks wait in an immediate FIFO and a timer list
 * (sorted by due time, ties in scheduling order) until a thread calls
 * rill_virtual_time_advance, which runs them on its own thread. The clock
 * starts at 0 and moves only there: to each timer's due time as that timer
 * runs, and to the end of the window once nothing in it is left. Immediate
 * tasks are due "now", so they always run before the next timer; that also
 * gives tasks scheduled by tasks the trampoline order of rill_immediate.
 *
 * Invariants. One mutex guards the queues, `stopped` and `running`. At most
 * one thread runs tasks at a time (`running`, set by advance and by the
 * shutdown drain), which keeps every worker serial; task run functions are
 * called with the lock released. A task that calls advance on its own
 * scheduler gets EDEADLK rather than a nested run; another thread that
 * advances meanwhile gets EBUSY.
 *
 * Shutdown (the last user reference) refuses new tasks and drains the queues:
 * immediate tasks with RILL_TASK_RUN, timers at once with ECANCELED. If a
 * thread is inside advance (the last unref came from one of its tasks, say),
 * that thread drains before advance returns instead, so tasks never overlap.
 * advance holds the scheduler's memory while it runs, so a task may drop the
 * last reference and free its worker without freeing the loop under it.
 */
#include "alloc-internal.h"
#include "atomic-internal.h"
#include "scheduler-internal.h"
#include "task-queue-internal.h"

#include <errno.h>
#include <pthread.h>

typedef struct vt {
    rill_scheduler base;
    pthread_mutex_t lock;
    _Atomic uint64_t now;        /* written under lock; read anywhere */
    rill__task_queue q;          /* ready FIFO and sorted timers */
    size_t pending;              /* tasks in both queues */
    int stopped;                 /* shut down: refuse new tasks */
    int running;                 /* a thread is running tasks (runner) */
    pthread_t runner;
} vt;

static const struct rill_scheduler_ops vt_ops;

static vt *as_vt(rill_scheduler *s)
{
    return s && s->ops == &vt_ops ? (vt *)s : NULL;
}

/* Under lock: the next task to run in a window ending at `until`, with the
 * status to run it with, or NULL. Once stopped, every timer is due (with
 * ECANCELED) and the clock no longer moves. */
static rill_task *next_task(vt *v, uint64_t until, int *status)
{
    rill_task *t = rill__tq_pop(&v->q);
    *status = RILL_TASK_RUN;
    if (!t && v->q.timers && (v->stopped || v->q.timers->due_private <= until)) {
        t = rill__tq_pop_timer(&v->q);
        if (v->stopped)
            *status = ECANCELED;
        else if (t->due_private > rill__load_relaxed(&v->now))
            rill__store_relaxed(&v->now, t->due_private);
    }
    if (t)
        v->pending--;
    return t;
}

/* Under lock, with `running` claimed: runs the window, unlocking around
 * each task. */
static void run_window(vt *v, uint64_t until)
{
    int status;
    rill_task *t;
    while ((t = next_task(v, until, &status))) {
        pthread_mutex_unlock(&v->lock);
        t->run(t, status);
        pthread_mutex_lock(&v->lock);
    }
}

/* Under lock: claims the right to run tasks, or says why not. */
static int claim(vt *v)
{
    if (v->running)
        return pthread_equal(v->runner, pthread_self()) ? EDEADLK : EBUSY;
    v->running = 1;
    v->runner = pthread_self();
    return 0;
}

int rill_virtual_time_advance(rill_scheduler *s, uint64_t ns)
{
    vt *v = as_vt(s);
    if (!v)
        return EINVAL;
    pthread_mutex_lock(&v->lock);
    int rc = v->stopped ? ECANCELED : claim(v);
    if (rc != 0) {
        pthread_mutex_unlock(&v->lock);
        return rc;
    }
    rill__scheduler_hold(s);   /* a task may drop the last reference */
    uint64_t until = rill__due(rill__load_relaxed(&v->now), ns);
    run_window(v, until);
    if (!v->stopped && rill__load_relaxed(&v->now) < until)
        rill__store_relaxed(&v->now, until);
    v->running = 0;
    pthread_mutex_unlock(&v->lock);
    rill__scheduler_release(s);   /* may free v: touch nothing after */
    return 0;
}

size_t rill_virtual_time_pending(rill_scheduler *s)
{
    vt *v = as_vt(s);
    if (!v) {
        errno = EINVAL;
        return 0;
    }
    pthread_mutex_lock(&v->lock);
    size_t n = v->pending;
    pthread_mutex_unlock(&v->lock);
    return n;
}

static rill_worker *vt_worker_new(rill_scheduler *self)
{
    vt *v = (vt *)self;
    pthread_mutex_lock(&v->lock);
    int stopped = v->stopped;
    pthread_mutex_unlock(&v->lock);
    if (stopped) {
        errno = ECANCELED;
        return NULL;
    }
    /* The base is all a worker needs: every task runs on the advancer. */
    rill_worker *w = rill__malloc(sizeof *w);
    if (w)
        w->scheduler = self;
    return w;
}

static void vt_worker_free(rill_scheduler *self, rill_worker *w)
{
    rill__free(w);
}

static int vt_schedule(rill_scheduler *self, rill_worker *w, rill_task *t, uint64_t due)
{
    vt *v = (vt *)self;
    pthread_mutex_lock(&v->lock);
    if (v->stopped) {
        pthread_mutex_unlock(&v->lock);
        return ECANCELED;
    }
    t->due_private = due;
    if (due)
        rill__tq_add_timer(&v->q, t);
    else
        rill__tq_push(&v->q, t);
    v->pending++;
    pthread_mutex_unlock(&v->lock);
    return 0;
}

static int vt_cancel(rill_scheduler *self, rill_worker *w, rill_task *t)
{
    vt *v = (vt *)self;
    int removed = 0;
    pthread_mutex_lock(&v->lock);
    removed = rill__tq_remove(&v->q, t);
    if (removed)
        v->pending--;
    pthread_mutex_unlock(&v->lock);
    return removed ? 0 : ENOENT;
}

static uint64_t vt_now(rill_scheduler *self)
{
    /* Relaxed: the clock is one monotonic word, no data is published by it. */
    return rill__load_relaxed(&((vt *)self)->now);
}

static void vt_shutdown(rill_scheduler *self)
{
    vt *v = (vt *)self;
    pthread_mutex_lock(&v->lock);
    v->stopped = 1;
    /* A thread inside advance drains before it returns (see the top). */
    if (claim(v) == 0) {
        run_window(v, 0);
        v->running = 0;
    }
    pthread_mutex_unlock(&v->lock);
}

static void vt_destroy(rill_scheduler *self)
{
    vt *v = (vt *)self;
    pthread_mutex_destroy(&v->lock);
    rill__free(v);
}

static const struct rill_scheduler_ops vt_ops = {
    .version = RILL_SCHEDULER_OPS_VERSION,
    .worker_new = vt_worker_new,
    .worker_free = vt_worker_free,
    .schedule = vt_schedule,
    .cancel = vt_cancel,
    .now = vt_now,
    .shutdown = vt_shutdown,
    .destroy = vt_destroy,
};

rill_scheduler *rill_virtual_time_new(void)
{
    vt *v = rill__calloc(sizeof *v);
    if (!v)
        return NULL;
    int rc = pthread_mutex_init(&v->lock, NULL);
    if (rc != 0) {
        rill__free(v);
        errno = rc == ENOMEM ? ENOMEM : EAGAIN;
        return NULL;
    }
    rill_scheduler_init(&v->base, &vt_ops);
    return &v->base;
}
