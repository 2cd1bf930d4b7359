/* schedulers/loop.c — rill_loop_scheduler_new: tasks run by a host's loop.
 *
 * The host owns the thread and the wait. It polls rill_loop_fd (an eventfd)
 * with the timeout rill_loop_next_timeout_ns gives, and calls
 * rill_loop_run_pending when the fd is readable or the timeout expires.
 * Tasks wait in an immediate FIFO and a timer list (sorted by due time on
 * CLOCK_MONOTONIC, ties in scheduling order); run_pending first moves the
 * timers due at its start to the end of the FIFO, then runs the FIFO in
 * order, tasks queued meanwhile included, up to its budget.
 *
 * The wake-up protocol. `armed` says "a write to the eventfd is made, or is
 * about to be, and no run_pending has consumed it yet". A producer that
 * queues an immediate task, or a timer that becomes the earliest (the host
 * must shorten its wait), sets `armed` under the lock and writes only if it
 * was clear, so a burst of schedules costs one write(2). run_pending reads
 * the eventfd to zero *before* it clears `armed` under the lock, and
 * inspects the queues after that; at its end, if runnable work is left, it
 * sets `armed` and writes again. Hence: if a task is runnable and no
 * run_pending is in progress, the counter is non-zero — a wake-up can be
 * spurious (run_pending then runs nothing) but is never lost. Producers
 * that queue while a run is in progress do not write at all: the run sees
 * their task, at the latest in its final check, which happens under the
 * lock together with clearing `running`, and re-arms for it.
 * rill_loop_wakeup stores `armed` and writes, with no lock, so that a signal
 * handler may call it.
 *
 * Invariants. One mutex guards the queues, `stopped` and `running`. At most
 * one thread runs tasks at a time (`running`: run_pending or the shutdown
 * drain), which keeps every worker serial; task run functions are called
 * with the lock released. run_pending from inside a task gives 0 and
 * EDEADLK; from another thread while one runs, 0 and EBUSY.
 *
 * Shutdown (the last user reference) refuses new tasks and drains the queues
 * on the unref-ing thread: immediate tasks with RILL_TASK_RUN, timers at once
 * with ECANCELED. If run_pending is in progress, it drains them (past its
 * budget) before it returns instead. The eventfd stays open until destroy,
 * when every worker is gone, so a host can still poll it meanwhile.
 */
#include "alloc-internal.h"
#include "atomic-internal.h"
#include "scheduler-internal.h"
#include "task-queue-internal.h"

#include <errno.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <unistd.h>

typedef struct loop {
    rill_scheduler base;
    pthread_mutex_t lock;
    rill__task_queue q;          /* ready FIFO and sorted timers */
    int stopped;                 /* shut down: refuse new tasks */
    int running;                 /* a thread is running tasks (runner) */
    pthread_t runner;
    atomic_int armed;            /* see the wake-up protocol above */
    int efd;
} loop;

static const struct rill_scheduler_ops loop_ops;

static loop *as_loop(rill_scheduler *s)
{
    return s && s->ops == &loop_ops ? (loop *)s : NULL;
}

/* Under lock: is anything runnable right now? */
static int runnable(loop *l)
{
    return l->q.head || (l->q.timers && l->q.timers->due_private <= rill__monotonic_ns());
}

static void write_fd(loop *l)
{
    uint64_t one = 1;
    /* Only EAGAIN (counter at its maximum) can fail here: still readable. */
    ssize_t n = write(l->efd, &one, sizeof one);
    (void)n;
}

static void drain_fd(loop *l)
{
    uint64_t count;
    /* Non-blocking: EAGAIN just means nothing was written. */
    ssize_t n = read(l->efd, &count, sizeof count);
    (void)n;
}

/* Under lock: claims the right to run tasks, or says why not. */
static int claim(loop *l)
{
    if (l->running)
        return pthread_equal(l->runner, pthread_self()) ? EDEADLK : EBUSY;
    l->running = 1;
    l->runner = pthread_self();
    return 0;
}

/* Under lock, with `running` claimed: runs up to max tasks, or everything
 * once stopped (timers then with ECANCELED). Unlocks around each task. */
static size_t run_tasks(loop *l, size_t max)
{
    size_t ran = 0;
    while (ran < max || l->stopped) {
        int status = RILL_TASK_RUN;
        rill_task *t = rill__tq_pop(&l->q);
        if (!t && l->stopped && (t = rill__tq_pop_timer(&l->q)))
            status = ECANCELED;
        if (!t)
            break;
        pthread_mutex_unlock(&l->lock);
        t->run(t, status);
        ran++;
        pthread_mutex_lock(&l->lock);
    }
    return ran;
}

size_t rill_loop_run_pending(rill_scheduler *s, size_t max)
{
    loop *l = as_loop(s);
    if (!l) {
        errno = EINVAL;
        return 0;
    }
    pthread_mutex_lock(&l->lock);
    int rc = claim(l);
    pthread_mutex_unlock(&l->lock);
    if (rc != 0) {
        errno = rc;
        return 0;
    }
    rill__scheduler_hold(s);   /* a task may drop the last reference */
    drain_fd(l);               /* before clearing `armed`: see the top */
    pthread_mutex_lock(&l->lock);
    atomic_store_explicit(&l->armed, 0, memory_order_relaxed);   /* lock orders it */
    rill__tq_promote(&l->q, rill__monotonic_ns());
    size_t ran = run_tasks(l, max);
    int rearm = !l->stopped && runnable(l);
    if (rearm)
        atomic_store_explicit(&l->armed, 1, memory_order_relaxed);
    l->running = 0;
    pthread_mutex_unlock(&l->lock);
    if (rearm)
        write_fd(l);
    rill__scheduler_release(s);   /* may free l: touch nothing after */
    return ran;
}

int64_t rill_loop_next_timeout_ns(rill_scheduler *s)
{
    loop *l = as_loop(s);
    if (!l) {
        errno = EINVAL;
        return -1;
    }
    int64_t timeout = -1;
    pthread_mutex_lock(&l->lock);
    if (l->q.head) {
        timeout = 0;
    } else if (l->q.timers) {
        uint64_t now = rill__monotonic_ns(), due = l->q.timers->due_private;
        uint64_t left = due > now ? due - now : 0;
        timeout = left > INT64_MAX ? INT64_MAX : (int64_t)left;
    }
    pthread_mutex_unlock(&l->lock);
    return timeout;
}

int rill_loop_fd(rill_scheduler *s)
{
    loop *l = as_loop(s);
    if (!l) {
        errno = EINVAL;
        return -1;
    }
    return l->efd;
}

void rill_loop_wakeup(rill_scheduler *s)
{
    /* Async-signal-safe: no lock, no allocation; errno is preserved. */
    loop *l = as_loop(s);
    if (!l)
        return;
    int saved = errno;
    /* Relaxed: a consumer that reads this write back from the eventfd sees
     * the store too (the kernel's eventfd lock orders the two), so its
     * reset of `armed` comes after it; a producer that sees the store
     * relies only on the write following it. */
    atomic_store_explicit(&l->armed, 1, memory_order_relaxed);
    write_fd(l);
    errno = saved;
}

static rill_worker *loop_worker_new(rill_scheduler *self)
{
    loop *l = (loop *)self;
    pthread_mutex_lock(&l->lock);
    int stopped = l->stopped;
    pthread_mutex_unlock(&l->lock);
    if (stopped) {
        errno = ECANCELED;
        return NULL;
    }
    /* The base is all a worker needs: every task runs on the loop thread. */
    rill_worker *w = rill__malloc(sizeof *w);
    if (w)
        w->scheduler = self;
    return w;
}

static void loop_worker_free(rill_scheduler *self, rill_worker *w)
{
    rill__free(w);
}

/* Under lock, t just queued: must the loop thread be woken? Yes for a
 * runnable task or a new earliest deadline, unless a wake-up is already
 * due, or a run is in progress: that run pops t, or sees it runnable at its
 * end (under this lock, as it clears `running`) and re-arms; and the host
 * recomputes its timeout after every run. */
static int must_wake(loop *l, rill_task *t)
{
    if (t->due_private && l->q.timers != t)
        return 0;
    if (l->running)
        return 0;
    return atomic_exchange_explicit(&l->armed, 1, memory_order_relaxed) == 0;
}

static int loop_schedule(rill_scheduler *self, rill_worker *w, rill_task *t, uint64_t due)
{
    loop *l = (loop *)self;
    pthread_mutex_lock(&l->lock);
    if (l->stopped) {
        pthread_mutex_unlock(&l->lock);
        return ECANCELED;
    }
    t->due_private = due;
    if (due)
        rill__tq_add_timer(&l->q, t);
    else
        rill__tq_push(&l->q, t);
    int wake = must_wake(l, t);
    pthread_mutex_unlock(&l->lock);
    if (wake)
        write_fd(l);
    return 0;
}

static int loop_cancel(rill_scheduler *self, rill_worker *w, rill_task *t)
{
    loop *l = (loop *)self;
    pthread_mutex_lock(&l->lock);
    int removed = rill__tq_remove(&l->q, t);
    pthread_mutex_unlock(&l->lock);
    return removed ? 0 : ENOENT;
}

static uint64_t loop_now(rill_scheduler *self)
{
    return rill__monotonic_ns();
}

static void loop_shutdown(rill_scheduler *self)
{
    loop *l = (loop *)self;
    pthread_mutex_lock(&l->lock);
    l->stopped = 1;
    /* A thread inside run_pending drains before it returns (see the top). */
    if (claim(l) == 0) {
        run_tasks(l, 0);
        l->running = 0;
    }
    pthread_mutex_unlock(&l->lock);
}

static void loop_destroy(rill_scheduler *self)
{
    loop *l = (loop *)self;
    close(l->efd);
    pthread_mutex_destroy(&l->lock);
    rill__free(l);
}

static const struct rill_scheduler_ops loop_ops = {
    .version = RILL_SCHEDULER_OPS_VERSION,
    .worker_new = loop_worker_new,
    .worker_free = loop_worker_free,
    .schedule = loop_schedule,
    .cancel = loop_cancel,
    .now = loop_now,
    .shutdown = loop_shutdown,
    .destroy = loop_destroy,
};

rill_scheduler *rill_loop_scheduler_new(void)
{
    loop *l = rill__calloc(sizeof *l);
    if (!l)
        return NULL;
    l->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (l->efd < 0) {
        int err = errno;   /* from eventfd: EMFILE, ENFILE, ENOMEM */
        rill__free(l);
        errno = err;
        return NULL;
    }
    int rc = pthread_mutex_init(&l->lock, NULL);
    if (rc != 0) {
        close(l->efd);
        rill__free(l);
        errno = rc == ENOMEM ? ENOMEM : EAGAIN;
        return NULL;
    }
    rill_scheduler_init(&l->base, &loop_ops);
    return &l->base;
}
