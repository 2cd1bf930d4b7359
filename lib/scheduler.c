/* lib/scheduler.c — the scheduler API over any implementation's ops table.
 *
 * Two counts per scheduler (see rill/scheduler.h): user references, whose
 * end means shutdown, and holds, whose end means the memory can go. The
 * base holds one until shutdown has finished; each worker holds one.
 */
#include "atomic-internal.h"
#include "scheduler-internal.h"

#include <errno.h>
#include <sched.h>
#include <time.h>

#define IMMORTAL RILL__SCHEDULER_IMMORTAL

/* Immortal (static) schedulers never change their counts; the test is an
 * atomic load because other threads may be changing a mortal one's. */
static int immortal(uintptr_t *count)
{
    return __atomic_load_n(count, __ATOMIC_RELAXED) == IMMORTAL;
}

uint64_t rill__monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void rill__spin_start(rill__spinner *s, uint64_t ns)
{
    uint64_t now = rill__monotonic_ns();
    s->deadline = now + ns;
    s->yield_at = now + RILL__SPIN_YIELD_NS;
}

int rill__spin_more(rill__spinner *s)
{
    uint64_t now = rill__monotonic_ns();
    if (now >= s->deadline)
        return 0;
    if (now >= s->yield_at) {
        sched_yield();
        s->yield_at = rill__monotonic_ns() + RILL__SPIN_YIELD_NS;
    }
    return 1;
}

void rill_scheduler_init(rill_scheduler *s, const struct rill_scheduler_ops *ops)
{
    s->ops = ops;
    rill__plain_store_relaxed(&s->refs_private, 1);
    rill__plain_store_relaxed(&s->holds_private, 1);
}

void rill__scheduler_hold(rill_scheduler *s)
{
    if (!immortal(&s->holds_private))
        rill__plain_ref(&s->holds_private);
}

void rill__scheduler_release(rill_scheduler *s)
{
    if (!immortal(&s->holds_private) && rill__plain_unref(&s->holds_private) == 0)
        s->ops->destroy(s);
}

rill_scheduler *rill_scheduler_ref(rill_scheduler *s)
{
    if (s && !immortal(&s->refs_private))
        rill__plain_ref(&s->refs_private);
    return s;
}

void rill_scheduler_unref(rill_scheduler *s)
{
    if (!s || immortal(&s->refs_private))
        return;
    if (rill__plain_unref(&s->refs_private) == 0) {
        s->ops->shutdown(s);
        rill__scheduler_release(s);
    }
}

rill_worker *rill_worker_new(rill_scheduler *s)
{
    if (!s) {
        errno = EINVAL;
        return NULL;
    }
    rill_worker *w = s->ops->worker_new(s);
    if (!w)
        return NULL;
    w->scheduler = s;
    rill__scheduler_hold(s);
    return w;
}

void rill_worker_free(rill_worker *w)
{
    if (!w)
        return;
    rill_scheduler *s = w->scheduler;
    s->ops->worker_free(s, w);
    rill__scheduler_release(s);
}

int rill_schedule(rill_worker *w, rill_task *t)
{
    if (!w || !t || !t->run)
        return EINVAL;
    return w->scheduler->ops->schedule(w->scheduler, w, t, 0);
}

int rill_schedule_after(rill_worker *w, rill_task *t, uint64_t delay_ns)
{
    if (!w || !t || !t->run)
        return EINVAL;
    rill_scheduler *s = w->scheduler;
    uint64_t due = delay_ns ? rill__due(s->ops->now(s), delay_ns) : 0;
    return s->ops->schedule(s, w, t, due);
}

int rill_task_cancel(rill_worker *w, rill_task *t)
{
    if (!w || !t)
        return ENOENT;
    return w->scheduler->ops->cancel(w->scheduler, w, t);
}

uint64_t rill_scheduler_now(rill_scheduler *s)
{
    return s ? s->ops->now(s) : rill__monotonic_ns();
}
