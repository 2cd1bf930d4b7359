/* schedulers/immediate.c — rill_immediate: run on the caller's thread.
 *
 * Trampolined: each thread has a queue of immediate tasks and a flag saying
 * it is already draining it. A task scheduled from outside any task runs at
 * once (inside rill_schedule); one scheduled from inside a running task is
 * queued and runs after that task returns, so nothing ever recurses.
 * A delayed task makes the scheduling thread sleep until it is due, then
 * goes through the same queue. The scheduler is a process-wide immortal
 * singleton: references to it are free and it never shuts down.
 */
#include "alloc-internal.h"
#include "scheduler-internal.h"
#include "task-queue-internal.h"

#include <errno.h>
#include <time.h>

static _Thread_local rill__task_queue queue;   /* this thread's trampoline */
static _Thread_local int draining;

/* Workers carry no state (the queue is per thread), but each is its own
 * allocation so that rill_worker_new can fill in its base like any other. */
static rill_worker *immediate_worker_new(rill_scheduler *self)
{
    return rill__malloc(sizeof(rill_worker));
}

static void immediate_worker_free(rill_scheduler *self, rill_worker *w)
{
    rill__free(w);
}

static void sleep_until(uint64_t due)
{
    struct timespec ts = { (time_t)(due / 1000000000u), (long)(due % 1000000000u) };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
        ;
}

static void drain(void)
{
    draining = 1;
    for (rill_task *t; (t = rill__tq_pop(&queue));)
        t->run(t, RILL_TASK_RUN);
    draining = 0;
}

static int immediate_schedule(rill_scheduler *self, rill_worker *w, rill_task *t, uint64_t due)
{
    if (due)
        sleep_until(due);
    rill__tq_push(&queue, t);
    if (!draining)
        drain();
    return 0;
}

/* Only this thread's trampoline can be searched: a task queued on another
 * thread's is reported as not queued. */
static int immediate_cancel(rill_scheduler *self, rill_worker *w, rill_task *t)
{
    return rill__tq_remove(&queue, t) ? 0 : ENOENT;
}

static uint64_t immediate_now(rill_scheduler *self)
{
    return rill__monotonic_ns();
}

static void immediate_shutdown(rill_scheduler *self)
{
}

static void immediate_destroy(rill_scheduler *self)
{
}

static const struct rill_scheduler_ops immediate_ops = {
    .version = RILL_SCHEDULER_OPS_VERSION,
    .worker_new = immediate_worker_new,
    .worker_free = immediate_worker_free,
    .schedule = immediate_schedule,
    .cancel = immediate_cancel,
    .now = immediate_now,
    .shutdown = immediate_shutdown,
    .destroy = immediate_destroy,
};

static rill_scheduler the_scheduler = {
    &immediate_ops, RILL__SCHEDULER_IMMORTAL, RILL__SCHEDULER_IMMORTAL
};

rill_scheduler *rill_immediate(void)
{
    return &the_scheduler;
}
