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
#include "scheduler-internal.h"

#include <errno.h>
#include <time.h>

enum { NOT_QUEUED = 0, QUEUED = 1 };

static _Thread_local rill_task *head, *tail;
static _Thread_local int draining;

static rill_scheduler the_scheduler;
static rill_worker the_worker = { &the_scheduler };

static rill_worker *immediate_worker_new(rill_scheduler *self)
{
    return &the_worker;
}

static void immediate_worker_free(rill_scheduler *self, rill_worker *w)
{
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
    while (head) {
        rill_task *t = head;
        head = t->next_private;
        if (!head)
            tail = NULL;
        t->word_private = NOT_QUEUED;
        t->run(t, RILL_TASK_RUN);
    }
    draining = 0;
}

static int immediate_schedule(rill_scheduler *self, rill_worker *w, rill_task *t, uint64_t due)
{
    if (due)
        sleep_until(due);
    t->next_private = NULL;
    t->word_private = QUEUED;
    if (tail)
        tail->next_private = t;
    else
        head = t;
    tail = t;
    if (!draining)
        drain();
    return 0;
}

static int immediate_cancel(rill_scheduler *self, rill_worker *w, rill_task *t)
{
    if (t->word_private != QUEUED)
        return ENOENT;
    rill_task *prev = NULL;
    for (rill_task *at = head; at; prev = at, at = at->next_private) {
        if (at != t)
            continue;
        if (prev)
            prev->next_private = t->next_private;
        else
            head = t->next_private;
        if (tail == t)
            tail = prev;
        t->word_private = NOT_QUEUED;
        return 0;
    }
    return ENOENT;   /* queued on another thread's trampoline */
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
