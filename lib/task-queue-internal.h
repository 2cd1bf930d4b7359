/* lib/task-queue-internal.h — the two queues every scheduler keeps.
 *
 * A FIFO of ready tasks and a list of delayed tasks sorted by due time
 * (ties in scheduling order). Tasks are intrusive (rill_task's private
 * fields), so queueing never allocates; word_private records which list a
 * task is on, so cancel knows where to look. Not synchronised: each
 * scheduler guards its queue with its own lock (or thread).
 */
#ifndef RILL_TASK_QUEUE_INTERNAL_H
#define RILL_TASK_QUEUE_INTERNAL_H

#include <rill/scheduler.h>

#include <stddef.h>

enum { RILL__TASK_IDLE = 0, RILL__TASK_READY = 1, RILL__TASK_TIMED = 2 };

typedef struct rill__task_queue {
    rill_task *head, *tail;   /* ready, FIFO */
    rill_task *timers;        /* delayed, earliest first */
} rill__task_queue;

static inline void rill__tq_push(rill__task_queue *q, rill_task *t)
{
    t->next_private = NULL;
    t->word_private = RILL__TASK_READY;
    if (q->tail)
        q->tail->next_private = t;
    else
        q->head = t;
    q->tail = t;
}

static inline rill_task *rill__tq_pop(rill__task_queue *q)
{
    rill_task *t = q->head;
    if (t) {
        q->head = t->next_private;
        if (!q->head)
            q->tail = NULL;
        t->word_private = RILL__TASK_IDLE;
    }
    return t;
}

/* Inserts t by t->due_private, after the tasks due at the same time. */
static inline void rill__tq_add_timer(rill__task_queue *q, rill_task *t)
{
    rill_task **at = &q->timers;
    while (*at && (*at)->due_private <= t->due_private)
        at = &(*at)->next_private;
    t->next_private = *at;
    t->word_private = RILL__TASK_TIMED;
    *at = t;
}

/* Removes and returns the earliest delayed task, or NULL. */
static inline rill_task *rill__tq_pop_timer(rill__task_queue *q)
{
    rill_task *t = q->timers;
    if (t) {
        q->timers = t->next_private;
        t->word_private = RILL__TASK_IDLE;
    }
    return t;
}

/* Moves the delayed tasks due by `now` to the end of the FIFO; returns how
 * many moved. */
static inline size_t rill__tq_promote(rill__task_queue *q, uint64_t now)
{
    size_t n = 0;
    while (q->timers && q->timers->due_private <= now) {
        rill__tq_push(q, rill__tq_pop_timer(q));
        n++;
    }
    return n;
}

/* Removes t from whichever list holds it; returns 1, or 0 if not queued. */
static inline int rill__tq_remove(rill__task_queue *q, rill_task *t)
{
    int ready = t->word_private == RILL__TASK_READY;
    if (!ready && t->word_private != RILL__TASK_TIMED)
        return 0;
    rill_task *prev = NULL;
    for (rill_task **at = ready ? &q->head : &q->timers; *at;
         prev = *at, at = &(*at)->next_private) {
        if (*at != t)
            continue;
        *at = t->next_private;
        if (ready && q->tail == t)
            q->tail = prev;
        t->word_private = RILL__TASK_IDLE;
        return 1;
    }
    return 0;
}

#endif
