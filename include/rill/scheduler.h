/* rill/scheduler.h — schedulers: where and when stages run their work.
 *
 * A scheduler hands out *workers*: serial executors. Tasks scheduled on one
 * worker run one at a time, in the order they were scheduled (delayed tasks
 * in order of their due time), each happening-before the next. Different
 * workers may run in parallel.
 *
 * Tasks are intrusive: a stage embeds a rill_task in its own state and
 * schedules that, so scheduling never allocates. A task may be queued at most
 * once at a time; it may be scheduled again as soon as its run has started
 * (also from inside its own run).
 *
 * Lifetime. A scheduler has two kinds of reference:
 *  - the references users hold (rill_*_new, rill_scheduler_ref/unref). When
 *    the last one goes, the scheduler shuts down: it accepts no new task
 *    (rill_schedule returns ECANCELED), runs the tasks already queued (delayed
 *    ones at once, with status ECANCELED, so their owners can clean up), and
 *    joins its threads — unless the unref runs on one of those threads, which
 *    cannot join itself: then the threads exit once idle, without a join;
 *  - workers, which keep the scheduler's memory (not its threads) alive until
 *    rill_worker_free.
 * A stage whose task is refused after shutdown ends its stream with
 * on_error(ECANCELED) and releases everything.
 *
 * Every function here is thread-safe unless noted.
 */
#ifndef RILL_SCHEDULER_H
#define RILL_SCHEDULER_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rill_task rill_task;
typedef struct rill_worker rill_worker;

/* Status passed to a task's run function. */
#define RILL_TASK_RUN 0   /* ECANCELED instead: the scheduler shut down; clean up only */

struct rill_task {
    /* Runs the task on its worker's thread. status is RILL_TASK_RUN, or
     * ECANCELED when the scheduler is shutting down and runs the task only
     * so that its owner can end cleanly (a delayed task's delay may not
     * have passed). Set by the owner before scheduling. */
    void (*run)(rill_task *self, int status);
    /* Private to the scheduler that queues the task: zero them once
     * (designated initialisers do) and never touch them again. */
    rill_task *next_private;
    uint64_t due_private;
    uintptr_t word_private;
};

/* The base of a worker, for scheduler implementations. */
struct rill_worker {
    rill_scheduler *scheduler;   /* set by rill_worker_new */
};

/* ------------------------------------------------------------------------
 * Using a scheduler */

/* Returns a new worker of s (NULL with errno: ENOMEM, or ECANCELED after
 * shutdown). s is borrowed. */
RILL_EXPORT rill_worker *rill_worker_new(rill_scheduler *s);
/* Frees a worker. None of its tasks may still be queued (cancel delayed ones
 * first); it may be called from inside a task running on w, as that task's
 * last use of w. NULL is ignored. */
RILL_EXPORT void rill_worker_free(rill_worker *w);
/* Queues t to run on w as soon as possible. Returns 0, ECANCELED (the
 * scheduler shut down: t will not run), or EINVAL (NULL argument or no run
 * function). */
RILL_EXPORT int rill_schedule(rill_worker *w, rill_task *t);
/* Queues t to run on w once delay_ns nanoseconds have passed on the
 * scheduler's clock. Same results as rill_schedule. */
RILL_EXPORT int rill_schedule_after(rill_worker *w, rill_task *t, uint64_t delay_ns);
/* Removes a queued task. Returns 0 (removed: it will not run), or ENOENT
 * (not queued: it already ran, is running, or was never scheduled). */
RILL_EXPORT int rill_task_cancel(rill_worker *w, rill_task *t);
/* The scheduler's clock in nanoseconds: CLOCK_MONOTONIC for real schedulers,
 * the virtual clock for rill_virtual_time_new. */
RILL_EXPORT uint64_t rill_scheduler_now(rill_scheduler *s);

/* Returns s (a new reference); NULL gives NULL. */
RILL_EXPORT rill_scheduler *rill_scheduler_ref(rill_scheduler *s);
/* Releases a reference; the last one shuts the scheduler down (see above).
 * NULL is ignored. */
RILL_EXPORT void rill_scheduler_unref(rill_scheduler *s);

/* ------------------------------------------------------------------------
 * The schedulers rill provides. Each returns a new reference, or NULL with
 * errno set. */

/* A fixed pool of nthreads threads. Each worker is pinned to one thread
 * (round robin), so its tasks run in order. Idle threads spin briefly, then
 * park without using CPU. nthreads == 0 gives NULL with EINVAL. */
RILL_EXPORT rill_scheduler *rill_thread_pool_new(unsigned nthreads);
/* A pool of one thread. */
RILL_EXPORT rill_scheduler *rill_single_thread_new(void);
/* Runs tasks on the thread that schedules them, trampolined: a task
 * scheduled from inside a running task is queued and runs after it, so
 * nothing recurses. Delayed tasks make the scheduling thread sleep. */
RILL_EXPORT rill_scheduler *rill_immediate(void);

/* ------------------------------------------------------------------------
 * Virtual time: for tests of timed behaviour that never sleep.
 *
 * A virtual-time scheduler runs nothing by itself. Its clock
 * (rill_scheduler_now) starts at 0 and moves only in
 * rill_virtual_time_advance, which runs the due tasks on the calling
 * thread. Any thread may schedule and cancel. At shutdown (the last
 * unref) queued tasks run on the unref-ing thread — immediate ones with
 * RILL_TASK_RUN, delayed ones with ECANCELED — or, if an advance is in
 * progress, on its thread before it returns. */

/* A new virtual-time scheduler (a new reference), clock at 0; NULL with
 * errno ENOMEM. */
RILL_EXPORT rill_scheduler *rill_virtual_time_new(void);
/* Moves s's clock forward by ns (saturating), running on the calling thread
 * every task due by the end of that window: immediate tasks first (they are
 * due now, in scheduling order), then delayed ones in order of due time
 * (ties in scheduling order), the clock set to each one's due time as it
 * runs. Tasks that those tasks schedule run in the same call if they fall
 * due within the window. Then the clock is set to the window's end, so
 * advance(s, 0) runs just what is due now. Tasks run with no lock held.
 * Returns 0; EINVAL (s is not a virtual-time scheduler); EDEADLK (called
 * from a task that s is running: nothing recurses); EBUSY (another thread
 * is advancing s); ECANCELED (s was shut down). s is borrowed. */
RILL_EXPORT int rill_virtual_time_advance(rill_scheduler *s, uint64_t ns);
/* The number of tasks queued on s, immediate and delayed (for tests).
 * 0 with errno EINVAL if s is not a virtual-time scheduler. */
RILL_EXPORT size_t rill_virtual_time_pending(rill_scheduler *s);

/* ------------------------------------------------------------------------
 * Loop schedulers: for hosts with their own event loop.
 *
 * Tasks run only inside rill_loop_run_pending, on the thread that calls it
 * (the loop thread; one at a time). Any thread may schedule and cancel. The
 * host polls rill_loop_fd for reading, with the timeout that
 * rill_loop_next_timeout_ns gives, and calls rill_loop_run_pending when
 * the fd is readable or the timeout expires, then computes the timeout
 * again:
 *
 *     for (;;) {
 *         int64_t ns = rill_loop_next_timeout_ns(s);
 *         int ms = ns < 0 ? -1                  // round up, or poll spins
 *                : ns > 3600000000000 ? 3600000 : (int)((ns + 999999) / 1000000);
 *         poll(&(struct pollfd){ rill_loop_fd(s), POLLIN, 0 }, 1, ms);
 *         rill_loop_run_pending(s, 64);
 *     }
 *
 * The clock is CLOCK_MONOTONIC. At shutdown (the last unref) queued tasks
 * run on the unref-ing thread — immediate ones with RILL_TASK_RUN, delayed
 * ones with ECANCELED — or, if run_pending is in progress, on its thread
 * before it returns. The fd stays open until every worker has been freed. */

/* A new loop scheduler (a new reference); NULL with errno (ENOMEM, or
 * EMFILE/ENFILE from eventfd). */
RILL_EXPORT rill_scheduler *rill_loop_scheduler_new(void);
/* The scheduler's eventfd (non-blocking, close-on-exec), owned by s: poll
 * it for reading, never read, write or close it. It becomes readable when
 * an immediate task is queued, when a delayed task becomes the earliest
 * (the host must shorten its wait), after rill_loop_wakeup, and after a
 * run_pending that left runnable work behind. (While a run_pending is in
 * progress, tasks queued from any thread do not touch the fd: that run
 * takes them, or re-arms the fd at its end.) Delayed tasks falling due do
 * not make it readable: that is what the timeout is for. A wake-up may be
 * spurious (run_pending then runs nothing). -1 with errno EINVAL if s is
 * not a loop scheduler. */
RILL_EXPORT int rill_loop_fd(rill_scheduler *s);
/* Runs up to max runnable tasks on the calling thread, in order: the
 * delayed tasks due when it starts join the immediate queue in due order,
 * and tasks queued while it runs join at the end. It first consumes the
 * fd's wake-up and, if runnable work is left at the end, makes the fd
 * readable again. Tasks run with no lock held. Returns how many ran; 0 with
 * errno EINVAL (not a loop scheduler), EDEADLK (called from inside one of
 * its own tasks: nothing recurses) or EBUSY (another thread is running
 * it). s is borrowed. */
RILL_EXPORT size_t rill_loop_run_pending(rill_scheduler *s, size_t max);
/* How long the host may wait: -1 if nothing is queued, 0 if a task is
 * runnable now, else the nanoseconds until the earliest delayed task is due
 * (at most INT64_MAX). -1 with errno EINVAL if s is not a loop scheduler. */
RILL_EXPORT int64_t rill_loop_next_timeout_ns(rill_scheduler *s);
/* Makes the fd readable, so the loop thread's wait returns. Async-signal-
 * safe: it only does an atomic store and a write(2) to the eventfd, and
 * preserves errno. A non-loop scheduler or NULL is ignored. */
RILL_EXPORT void rill_loop_wakeup(rill_scheduler *s);

/* ------------------------------------------------------------------------
 * Writing a scheduler (event loops, executors of a host runtime).
 * Fill the table, embed rill_scheduler first in your struct, call
 * rill_scheduler_init, and hand out the pointer as a new reference. */

#define RILL_SCHEDULER_OPS_VERSION 1

struct rill_scheduler_ops {
    uint32_t version;   /* RILL_SCHEDULER_OPS_VERSION */
    /* --- valid for version 1; all required --- */
    /* Returns a new worker (its base's `scheduler` is set by the library),
     * or NULL with errno. */
    rill_worker *(*worker_new)(rill_scheduler *self);
    /* Frees a worker with nothing queued; may run on the worker's thread. */
    void (*worker_free)(rill_scheduler *self, rill_worker *w);
    /* Queues t on w, due at due_ns on self's clock (0: now). Returns 0 or
     * ECANCELED once shut down. Must not run t before returning, unless
     * the scheduler runs work on the caller's thread (immediate). */
    int (*schedule)(rill_scheduler *self, rill_worker *w, rill_task *t, uint64_t due_ns);
    /* Removes t if queued: 0, else ENOENT. */
    int (*cancel)(rill_scheduler *self, rill_worker *w, rill_task *t);
    uint64_t (*now)(rill_scheduler *self);
    /* The last user reference is gone: stop accepting, run what is queued
     * (delayed tasks with status ECANCELED), join threads (unless called on
     * one of them). */
    void (*shutdown)(rill_scheduler *self);
    /* Shut down and every worker freed: free the scheduler's memory. */
    void (*destroy)(rill_scheduler *self);
};

struct rill_scheduler {
    const struct rill_scheduler_ops *ops;
    uintptr_t refs_private;      /* user references */
    uintptr_t holds_private;     /* 1 + live workers: keeps the memory */
};

/* Sets up the base of a scheduler: one user reference. */
RILL_EXPORT void rill_scheduler_init(rill_scheduler *s, const struct rill_scheduler_ops *ops);

#ifdef __cplusplus
}
#endif

#endif /* RILL_SCHEDULER_H */
