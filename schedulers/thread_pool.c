/* schedulers/thread_pool.c — rill_thread_pool_new, rill_single_thread_new.
 *
 * Each pool thread owns a ready queue (FIFO, intrusive) and a timer list
 * (sorted by due time), both guarded by that thread's mutex. A worker is
 * pinned to one thread, so its tasks run in the order they were queued.
 *
 * Wait policy. A thread that runs out of work spins for SPIN_NS, polling an
 * atomic count of queued tasks, before it parks on its condition variable:
 * on this kind of VM a park/unpark round trip costs ~20 µs, so a producer
 * that comes back within the spin window pays no wake-up at all, while an
 * idle pool still parks (no CPU) once the window has passed. The spinner
 * yields its CPU every couple of microseconds (rill__spin_more), so that on
 * a machine with more busy threads than cores it does not hold the core
 * that the thread it waits for needs. Producers take the lock for each task
 * they queue (stages queue one task per drain, not per item) and signal
 * only a thread that is actually parked. rill__worker_may_spin tells a
 * running task whether it may wait on its thread a little longer: only
 * while nothing else is ready there.
 *
 * Shutdown (the last user reference): every thread is told to stop; it runs
 * its ready tasks, runs its timers with status ECANCELED, and exits. The
 * caller joins the threads, unless it is one of them: then all threads are
 * detached and each drops its own hold on the pool's memory as it exits.
 *
 * Lock order: only one thread's lock is ever held at a time; user code
 * (task run functions) never runs under a lock.
 */
#include "alloc-internal.h"
#include "atomic-internal.h"
#include "scheduler-internal.h"
#include "task-queue-internal.h"

#include <errno.h>
#include <pthread.h>
#include <time.h>

#define SPIN_NS 30000u

typedef struct pool pool;

typedef struct pool_thread {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    rill__task_queue q;          /* ready FIFO and sorted timers */
    atomic_uint queued;          /* ready tasks: the spinner polls this */
    int parked;                  /* under lock: waiting on `wake` */
    int stop;                    /* under lock: shut down */
    int detached;                /* under lock: release the pool's hold on exit */
    int started;                 /* pthread_create succeeded */
    pthread_t tid;
    pool *owner;
} pool_thread;

struct pool {
    rill_scheduler base;
    unsigned n;
    atomic_uint next;            /* round robin for workers */
    pool_thread threads[];
};

typedef struct pool_worker {
    rill_worker base;
    pool_thread *thread;
} pool_worker;

static const struct rill_scheduler_ops pool_ops;

/* The pool (to detect unref from inside) and the pool thread this thread
 * is, if any. */
static _Thread_local pool *current_pool;
static _Thread_local const pool_thread *current_thread;

/* The queue's ready count is mirrored in `queued` for the spinner. */
static void push_ready(pool_thread *t, rill_task *task)
{
    rill__tq_push(&t->q, task);
    atomic_fetch_add_explicit(&t->queued, 1, memory_order_relaxed);
}

static rill_task *pop_ready(pool_thread *t)
{
    rill_task *task = rill__tq_pop(&t->q);
    if (task)
        atomic_fetch_sub_explicit(&t->queued, 1, memory_order_relaxed);
    return task;
}

/* Moves due timers to the ready queue; returns the next due time or 0. */
static uint64_t promote_timers(pool_thread *t)
{
    if (!t->q.timers)
        return 0;
    size_t moved = rill__tq_promote(&t->q, rill__monotonic_ns());
    atomic_fetch_add_explicit(&t->queued, moved, memory_order_relaxed);
    return t->q.timers ? t->q.timers->due_private : 0;
}

/* Spins up to SPIN_NS for work to arrive; returns 1 if some did. */
static int spin_for_work(pool_thread *t)
{
    rill__spinner sp;
    rill__spin_start(&sp, SPIN_NS);
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&t->queued, memory_order_relaxed))
            return 1;
        rill__cpu_relax();
        if ((i & 31) == 0 && !rill__spin_more(&sp))
            return 0;
    }
}

static void park(pool_thread *t, uint64_t due)
{
    t->parked = 1;
    if (due) {
        struct timespec ts = { (time_t)(due / 1000000000u), (long)(due % 1000000000u) };
        pthread_cond_timedwait(&t->wake, &t->lock, &ts);
    } else {
        pthread_cond_wait(&t->wake, &t->lock);
    }
    t->parked = 0;
}

/* At stop: ready tasks run normally, timers run with ECANCELED. */
static void drain_at_stop(pool_thread *t)
{
    for (;;) {
        rill_task *task = pop_ready(t);
        int status = RILL_TASK_RUN;
        if (!task && (task = rill__tq_pop_timer(&t->q)))
            status = ECANCELED;
        if (!task)
            return;
        pthread_mutex_unlock(&t->lock);
        task->run(task, status);
        pthread_mutex_lock(&t->lock);
    }
}

static void *thread_main(void *arg)
{
    pool_thread *t = arg;
    current_pool = t->owner;
    current_thread = t;
    int spun = 0;
    pthread_mutex_lock(&t->lock);
    for (;;) {
        uint64_t due = promote_timers(t);
        rill_task *task = pop_ready(t);
        if (task) {
            pthread_mutex_unlock(&t->lock);
            task->run(task, RILL_TASK_RUN);
            spun = 0;
            pthread_mutex_lock(&t->lock);
            continue;
        }
        if (t->stop)
            break;
        if (!spun) {
            /* Work ran since the last spin: give producers a window. */
            spun = 1;
            pthread_mutex_unlock(&t->lock);
            spin_for_work(t);
            pthread_mutex_lock(&t->lock);
            continue;
        }
        park(t, due);
    }
    drain_at_stop(t);
    int detached = t->detached;
    rill_scheduler *s = &t->owner->base;
    pthread_mutex_unlock(&t->lock);
    if (detached)
        rill__scheduler_release(s);   /* may free the pool: touch nothing after */
    return NULL;
}

static rill_worker *pool_worker_new(rill_scheduler *self)
{
    pool *p = (pool *)self;
    pool_worker *w = rill__malloc(sizeof *w);
    if (!w)
        return NULL;
    unsigned i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed) % p->n;
    w->base.scheduler = self;
    w->thread = &p->threads[i];
    return &w->base;
}

static void pool_worker_free(rill_scheduler *self, rill_worker *w)
{
    rill__free(w);
}

static int pool_schedule(rill_scheduler *self, rill_worker *w, rill_task *task, uint64_t due)
{
    pool_thread *t = ((pool_worker *)w)->thread;
    pthread_mutex_lock(&t->lock);
    if (t->stop) {
        pthread_mutex_unlock(&t->lock);
        return ECANCELED;
    }
    task->due_private = due;
    if (due)
        rill__tq_add_timer(&t->q, task);
    else
        push_ready(t, task);
    /* A timer that became the earliest must shorten a timed park. Signal
     * before unlocking: once the lock is released the thread may run the
     * task, which may free the pool (its last reference) — the condition
     * variable must not be touched after that. */
    if (t->parked && (!due || t->q.timers == task))
        pthread_cond_signal(&t->wake);
    pthread_mutex_unlock(&t->lock);
    return 0;
}

static int pool_cancel(rill_scheduler *self, rill_worker *w, rill_task *task)
{
    pool_thread *t = ((pool_worker *)w)->thread;
    pthread_mutex_lock(&t->lock);
    int ready = task->word_private == RILL__TASK_READY;
    int removed = rill__tq_remove(&t->q, task);
    if (removed && ready)
        atomic_fetch_sub_explicit(&t->queued, 1, memory_order_relaxed);
    pthread_mutex_unlock(&t->lock);
    return removed ? 0 : ENOENT;
}

/* Only on w's own thread: a task run elsewhere (by a caller whose
 * schedule was refused at shutdown) must not hold that caller. */
int rill__worker_may_spin(const rill_worker *w)
{
    if (w->scheduler->ops != &pool_ops)
        return 0;
    const pool_thread *t = ((const pool_worker *)w)->thread;
    return t == current_thread && atomic_load_explicit(&t->queued, memory_order_relaxed) == 0;
}

static uint64_t pool_now(rill_scheduler *self)
{
    return rill__monotonic_ns();
}

static void pool_shutdown(rill_scheduler *self)
{
    pool *p = (pool *)self;
    int join = current_pool != p;
    for (unsigned i = 0; i < p->n; i++) {
        pool_thread *t = &p->threads[i];
        pthread_mutex_lock(&t->lock);
        t->stop = 1;
        if (!join) {
            t->detached = 1;
            rill__scheduler_hold(self);   /* dropped by the thread as it exits */
        }
        pthread_mutex_unlock(&t->lock);
        pthread_cond_signal(&t->wake);
    }
    for (unsigned i = 0; i < p->n; i++) {
        if (join)
            pthread_join(p->threads[i].tid, NULL);
        else
            pthread_detach(p->threads[i].tid);
    }
}

static void pool_destroy(rill_scheduler *self)
{
    pool *p = (pool *)self;
    for (unsigned i = 0; i < p->n; i++) {
        pthread_mutex_destroy(&p->threads[i].lock);
        pthread_cond_destroy(&p->threads[i].wake);
    }
    rill__free(p);
}

static const struct rill_scheduler_ops pool_ops = {
    .version = RILL_SCHEDULER_OPS_VERSION,
    .worker_new = pool_worker_new,
    .worker_free = pool_worker_free,
    .schedule = pool_schedule,
    .cancel = pool_cancel,
    .now = pool_now,
    .shutdown = pool_shutdown,
    .destroy = pool_destroy,
};

static int thread_init(pool *p, pool_thread *t)
{
    pthread_condattr_t attr;
    t->owner = p;
    if (pthread_condattr_init(&attr) != 0)
        return ENOMEM;
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&t->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0)
        return rc;
    rc = pthread_mutex_init(&t->lock, NULL);
    if (rc != 0)
        pthread_cond_destroy(&t->wake);
    return rc;
}

/* Stops and joins the first `started` threads and frees a half-built pool. */
static rill_scheduler *abandon(pool *p, unsigned inited, unsigned started, int code)
{
    for (unsigned i = 0; i < started; i++) {
        pthread_mutex_lock(&p->threads[i].lock);
        p->threads[i].stop = 1;
        pthread_mutex_unlock(&p->threads[i].lock);
        pthread_cond_signal(&p->threads[i].wake);
        pthread_join(p->threads[i].tid, NULL);
    }
    p->n = inited;
    pool_destroy(&p->base);
    errno = code;
    return NULL;
}

rill_scheduler *rill_thread_pool_new(unsigned nthreads)
{
    if (nthreads == 0 || nthreads > 4096) {
        errno = EINVAL;
        return NULL;
    }
    pool *p = rill__calloc(sizeof *p + nthreads * sizeof(pool_thread));
    if (!p)
        return NULL;
    rill_scheduler_init(&p->base, &pool_ops);
    p->n = nthreads;
    for (unsigned i = 0; i < nthreads; i++) {
        int rc = thread_init(p, &p->threads[i]);
        if (rc != 0)
            return abandon(p, i, i, rc == ENOMEM ? ENOMEM : EAGAIN);
    }
    for (unsigned i = 0; i < nthreads; i++) {
        int rc = pthread_create(&p->threads[i].tid, NULL, thread_main, &p->threads[i]);
        if (rc != 0)
            return abandon(p, nthreads, i, EAGAIN);
    }
    return &p->base;
}

rill_scheduler *rill_single_thread_new(void)
{
    return rill_thread_pool_new(1);
}
