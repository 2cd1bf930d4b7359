/* tests/check_sched_vt_loop.c — the virtual-time and loop schedulers.
 *
 * Both run tasks only when asked (rill_virtual_time_advance,
 * rill_loop_run_pending), so most tests here are single-threaded and assert
 * exact run orders, clock readings and statuses. The threaded ones check
 * that tasks scheduled from other threads all run on the one thread that
 * drives the scheduler, each worker's tasks in order, with no lost wake-up.
 */
#include "recorder.h"
#include "suites.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/epoll.h>
#include <unistd.h>

#define SEC 1000000000ull
#define HOUR (3600 * SEC)

/* ------------------------------------------------------------------------
 * A journal of task runs, and probes (tasks) that write to it. */

#define JOURNAL_MAX 64

typedef struct journal {
    rill_scheduler *s;           /* the clock to read; borrowed */
    rill_worker *w;              /* for probes that schedule more */
    size_t n;
    int id[JOURNAL_MAX];
    int status[JOURNAL_MAX];
    uint64_t at[JOURNAL_MAX];    /* rill_scheduler_now during the run */
    pthread_t thread[JOURNAL_MAX];
    int depth, nested;           /* a run that started inside another */
} journal;

typedef struct probe probe;
struct probe {
    rill_task task;              /* first: a rill_task * is a probe * */
    int id;
    journal *j;
    void (*then)(probe *p, int status);   /* optional, after recording */
    probe *other;                /* for `then` hooks */
    uint64_t delay;              /* for `then` hooks */
    int result;                  /* for `then` hooks */
    int result_errno;
};

static void probe_run(rill_task *t, int status)
{
    probe *p = (probe *)t;
    journal *j = p->j;
    ck_assert_uint_lt(j->n, JOURNAL_MAX);
    j->id[j->n] = p->id;
    j->status[j->n] = status;
    j->at[j->n] = rill_scheduler_now(j->s);
    j->thread[j->n] = pthread_self();
    j->n++;
    if (j->depth++ > 0)
        j->nested++;
    if (p->then)
        p->then(p, status);
    j->depth--;
}

#define PROBE(journal_, id_) { .task = { .run = probe_run }, .id = (id_), .j = (journal_) }

static void expect_ids(const journal *j, const int *ids, size_t n)
{
    ck_assert_int_eq(j->nested, 0);   /* tasks never run inside tasks */
    ck_assert_uint_eq(j->n, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_msg(j->id[i] == ids[i], "run %zu: task %d, expected %d", i, j->id[i], ids[i]);
}

#define EXPECT_IDS(j, ...) do { \
    static const int ids_[] = { __VA_ARGS__ }; \
    expect_ids((j), ids_, sizeof ids_ / sizeof ids_[0]); \
} while (0)

static int quick(void)
{
    return getenv("RILL_TEST_QUICK") != NULL;
}

/* Hooks used by several tests. */
static void then_schedule_other(probe *p, int status)
{
    p->result = p->delay ? rill_schedule_after(p->j->w, &p->other->task, p->delay)
                         : rill_schedule(p->j->w, &p->other->task);
}

static void then_cancel_other(probe *p, int status)
{
    p->result = rill_task_cancel(p->j->w, &p->other->task);
}

static void then_drop_scheduler(probe *p, int status)
{
    rill_scheduler_unref(p->j->s);   /* the test's last reference */
}

/* ------------------------------------------------------------------------
 * Virtual time */

START_TEST(vt_clock_starts_at_zero_and_moves_only_in_advance)
{
    long base = live_allocations();
    rill_scheduler *s = rill_virtual_time_new();
    ck_assert_ptr_nonnull(s);
    ck_assert_uint_eq(rill_scheduler_now(s), 0);
    ck_assert_int_eq(rill_virtual_time_advance(s, 100), 0);
    ck_assert_uint_eq(rill_scheduler_now(s), 100);
    ck_assert_int_eq(rill_virtual_time_advance(s, 0), 0);
    ck_assert_uint_eq(rill_scheduler_now(s), 100);
    ck_assert_int_eq(rill_virtual_time_advance(s, 23), 0);
    ck_assert_uint_eq(rill_scheduler_now(s), 123);
    ck_assert_uint_eq(rill_virtual_time_pending(s), 0);
    rill_scheduler_unref(s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(vt_runs_in_due_order_ties_in_schedule_order)
{
    long base = live_allocations();
    journal j = { .s = rill_virtual_time_new() };
    rill_worker *w = rill_worker_new(j.s);
    ck_assert_ptr_nonnull(w);
    probe a = PROBE(&j, 1), b = PROBE(&j, 2), c = PROBE(&j, 3), d = PROBE(&j, 4);
    probe e = PROBE(&j, 5), f = PROBE(&j, 6);
    ck_assert_int_eq(rill_schedule_after(w, &a.task, 30), 0);
    ck_assert_int_eq(rill_schedule_after(w, &b.task, 10), 0);
    ck_assert_int_eq(rill_schedule_after(w, &c.task, 20), 0);
    ck_assert_int_eq(rill_schedule_after(w, &d.task, 10), 0);
    ck_assert_int_eq(rill_schedule(w, &e.task), 0);
    ck_assert_int_eq(rill_schedule(w, &f.task), 0);
    ck_assert_uint_eq(rill_virtual_time_pending(j.s), 6);
    ck_assert_uint_eq(j.n, 0);   /* nothing runs by itself */

    ck_assert_int_eq(rill_virtual_time_advance(j.s, 25), 0);
    EXPECT_IDS(&j, 5, 6, 2, 4, 3);
    static const uint64_t at[] = { 0, 0, 10, 10, 20 };
    for (size_t i = 0; i < 5; i++) {
        ck_assert_uint_eq(j.at[i], at[i]);
        ck_assert_int_eq(j.status[i], RILL_TASK_RUN);
        ck_assert(pthread_equal(j.thread[i], pthread_self()));
    }
    ck_assert_uint_eq(rill_scheduler_now(j.s), 25);
    ck_assert_uint_eq(rill_virtual_time_pending(j.s), 1);

    ck_assert_int_eq(rill_virtual_time_advance(j.s, 4), 0);
    ck_assert_uint_eq(j.n, 5);   /* a is due at 30, the clock is at 29 */
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 1), 0);
    EXPECT_IDS(&j, 5, 6, 2, 4, 3, 1);
    ck_assert_uint_eq(j.at[5], 30);
    ck_assert_uint_eq(rill_virtual_time_pending(j.s), 0);

    rill_worker_free(w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(vt_delay_counts_from_the_current_clock)
{
    long base = live_allocations();
    journal j = { .s = rill_virtual_time_new() };
    rill_worker *w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1), b = PROBE(&j, 2);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 1000), 0);
    ck_assert_int_eq(rill_schedule_after(w, &a.task, 5), 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 0), 0);
    ck_assert_uint_eq(j.n, 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 5), 0);
    EXPECT_IDS(&j, 1);
    ck_assert_uint_eq(j.at[0], 1005);
    /* A delay past the end of the clock saturates instead of wrapping. */
    ck_assert_int_eq(rill_schedule_after(w, &b.task, UINT64_MAX), 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, UINT64_MAX - 2000), 0);
    ck_assert_uint_eq(j.n, 1);
    ck_assert_uint_eq(rill_scheduler_now(j.s), UINT64_MAX - 995);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, UINT64_MAX), 0);
    EXPECT_IDS(&j, 1, 2);
    ck_assert_uint_eq(j.at[1], UINT64_MAX);
    ck_assert_uint_eq(rill_scheduler_now(j.s), UINT64_MAX);
    rill_worker_free(w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(vt_advance_zero_runs_only_what_is_due_now)
{
    long base = live_allocations();
    journal j = { .s = rill_virtual_time_new() };
    rill_worker *w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1), b = PROBE(&j, 2), c = PROBE(&j, 3);
    ck_assert_int_eq(rill_schedule_after(w, &a.task, 1), 0);
    ck_assert_int_eq(rill_schedule(w, &b.task), 0);
    ck_assert_int_eq(rill_schedule(w, &c.task), 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 0), 0);
    EXPECT_IDS(&j, 2, 3);
    ck_assert_uint_eq(rill_scheduler_now(j.s), 0);
    ck_assert_uint_eq(rill_virtual_time_pending(j.s), 1);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 1), 0);
    EXPECT_IDS(&j, 2, 3, 1);
    rill_worker_free(w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(vt_tasks_scheduled_within_the_window_run_in_the_same_call)
{
    long base = live_allocations();
    journal j = { .s = rill_virtual_time_new() };
    j.w = rill_worker_new(j.s);
    /* a (at 10) schedules b after 5 (at 15) and c immediately (at 10);
     * b schedules d after 20 (at 35): outside the window [0, 20]. */
    probe a = PROBE(&j, 1), b = PROBE(&j, 2), c = PROBE(&j, 3), d = PROBE(&j, 4);
    probe a2 = PROBE(&j, 5);
    a.then = then_schedule_other, a.other = &b, a.delay = 5;
    a2.then = then_schedule_other, a2.other = &c;
    b.then = then_schedule_other, b.other = &d, b.delay = 20;
    ck_assert_int_eq(rill_schedule_after(j.w, &a.task, 10), 0);
    ck_assert_int_eq(rill_schedule_after(j.w, &a2.task, 10), 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 20), 0);
    /* c is immediate: it runs before b (due 15), at the clock of a2. */
    EXPECT_IDS(&j, 1, 5, 3, 2);
    ck_assert_uint_eq(j.at[0], 10);
    ck_assert_uint_eq(j.at[1], 10);
    ck_assert_uint_eq(j.at[2], 10);
    ck_assert_uint_eq(j.at[3], 15);
    ck_assert_int_eq(a.result, 0);
    ck_assert_int_eq(b.result, 0);
    ck_assert_uint_eq(rill_scheduler_now(j.s), 20);
    ck_assert_uint_eq(rill_virtual_time_pending(j.s), 1);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 15), 0);
    EXPECT_IDS(&j, 1, 5, 3, 2, 4);
    ck_assert_uint_eq(j.at[4], 35);
    rill_worker_free(j.w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

typedef struct ticker {
    rill_task task;
    rill_worker *w;
    rill_scheduler *s;
    int runs, limit;
    uint64_t at[16];
} ticker;

static void ticker_run(rill_task *t, int status)
{
    ticker *k = (ticker *)t;
    k->at[k->runs++] = rill_scheduler_now(k->s);
    if (k->runs < k->limit)
        ck_assert_int_eq(rill_schedule_after(k->w, &k->task, 10), 0);
}

START_TEST(vt_task_reschedules_itself_from_its_own_run)
{
    long base = live_allocations();
    ticker k = { .task = { .run = ticker_run }, .limit = 5 };
    k.s = rill_virtual_time_new();
    k.w = rill_worker_new(k.s);
    ck_assert_int_eq(rill_schedule_after(k.w, &k.task, 10), 0);
    ck_assert_int_eq(rill_virtual_time_advance(k.s, 35), 0);
    ck_assert_int_eq(k.runs, 3);
    ck_assert_int_eq(rill_virtual_time_advance(k.s, 1000), 0);
    ck_assert_int_eq(k.runs, 5);
    for (int i = 0; i < 5; i++)
        ck_assert_uint_eq(k.at[i], 10u * (unsigned)(i + 1));
    ck_assert_uint_eq(rill_scheduler_now(k.s), 1035);
    ck_assert_uint_eq(rill_virtual_time_pending(k.s), 0);
    rill_worker_free(k.w);
    rill_scheduler_unref(k.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(vt_cancel_removes_queued_tasks_only)
{
    long base = live_allocations();
    journal j = { .s = rill_virtual_time_new() };
    j.w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1), b = PROBE(&j, 2), c = PROBE(&j, 3), d = PROBE(&j, 4);
    probe never = PROBE(&j, 5), e = PROBE(&j, 6), f = PROBE(&j, 7);
    ck_assert_int_eq(rill_schedule(j.w, &a.task), 0);
    ck_assert_int_eq(rill_schedule(j.w, &b.task), 0);
    ck_assert_int_eq(rill_schedule_after(j.w, &c.task, 10), 0);
    ck_assert_int_eq(rill_schedule_after(j.w, &d.task, 20), 0);
    ck_assert_uint_eq(rill_virtual_time_pending(j.s), 4);
    ck_assert_int_eq(rill_task_cancel(j.w, &b.task), 0);        /* immediate */
    ck_assert_int_eq(rill_task_cancel(j.w, &c.task), 0);        /* delayed */
    ck_assert_int_eq(rill_task_cancel(j.w, &c.task), ENOENT);   /* twice */
    ck_assert_int_eq(rill_task_cancel(j.w, &never.task), ENOENT);
    ck_assert_uint_eq(rill_virtual_time_pending(j.s), 2);
    /* e (at 5) cancels f (at 15); f then does not run in the window. */
    e.then = then_cancel_other, e.other = &f;
    ck_assert_int_eq(rill_schedule_after(j.w, &e.task, 5), 0);
    ck_assert_int_eq(rill_schedule_after(j.w, &f.task, 15), 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 30), 0);
    EXPECT_IDS(&j, 1, 6, 4);
    ck_assert_int_eq(e.result, 0);
    ck_assert_int_eq(rill_task_cancel(j.w, &a.task), ENOENT);   /* ran */
    ck_assert_int_eq(rill_task_cancel(j.w, &f.task), ENOENT);
    /* A cancelled task may be scheduled again. */
    ck_assert_int_eq(rill_schedule(j.w, &b.task), 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 0), 0);
    EXPECT_IDS(&j, 1, 6, 4, 2);
    ck_assert_uint_eq(rill_virtual_time_pending(j.s), 0);
    rill_worker_free(j.w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static void then_cancel_self(probe *p, int status)
{
    p->result = rill_task_cancel(p->j->w, &p->task);
}

START_TEST(vt_cancel_from_inside_the_running_task_is_enoent)
{
    long base = live_allocations();
    journal j = { .s = rill_virtual_time_new() };
    j.w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1);
    a.then = then_cancel_self;
    a.result = -1;
    ck_assert_int_eq(rill_schedule(j.w, &a.task), 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 0), 0);
    EXPECT_IDS(&j, 1);
    ck_assert_int_eq(a.result, ENOENT);
    rill_worker_free(j.w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static void then_advance(probe *p, int status)
{
    rill_scheduler *target = p->other ? p->other->j->s : p->j->s;
    p->result = rill_virtual_time_advance(target, p->delay);
}

START_TEST(vt_advance_from_inside_a_task_is_edeadlk)
{
    long base = live_allocations();
    journal j = { .s = rill_virtual_time_new() };
    journal k = { .s = rill_virtual_time_new() };
    j.w = rill_worker_new(j.s);
    k.w = rill_worker_new(k.s);
    probe a = PROBE(&j, 1), b = PROBE(&j, 2), other = PROBE(&k, 3), c = PROBE(&j, 4);
    a.then = then_advance, a.delay = 100;
    ck_assert_int_eq(rill_schedule_after(j.w, &a.task, 10), 0);
    ck_assert_int_eq(rill_schedule_after(j.w, &b.task, 50), 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 20), 0);
    ck_assert_int_eq(a.result, EDEADLK);
    EXPECT_IDS(&j, 1);   /* b, due at 50, did not run */
    ck_assert_uint_eq(rill_scheduler_now(j.s), 20);
    /* Advancing a different virtual-time scheduler from a task is fine. */
    c.then = then_advance, c.other = &other, c.delay = 7;
    ck_assert_int_eq(rill_schedule_after(k.w, &other.task, 5), 0);
    ck_assert_int_eq(rill_schedule(j.w, &c.task), 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 0), 0);
    ck_assert_int_eq(c.result, 0);
    EXPECT_IDS(&j, 1, 4);
    EXPECT_IDS(&k, 3);
    ck_assert_uint_eq(k.at[0], 5);
    ck_assert_uint_eq(rill_scheduler_now(k.s), 7);
    ck_assert_int_eq(rill_task_cancel(j.w, &b.task), 0);
    rill_worker_free(j.w);
    rill_worker_free(k.w);
    rill_scheduler_unref(j.s);
    rill_scheduler_unref(k.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A task that blocks its runner until the test lets it go. */
typedef struct gate {
    rill_task task;
    atomic_int entered, open;
    pthread_t ran_on;
} gate;

static void gate_run(rill_task *t, int status)
{
    gate *g = (gate *)t;
    g->ran_on = pthread_self();
    atomic_store(&g->entered, 1);
    while (!atomic_load(&g->open))
        sched_yield();
}

static void *vt_advance_thread(void *arg)
{
    ck_assert_int_eq(rill_virtual_time_advance(arg, 0), 0);
    return NULL;
}

START_TEST(vt_advance_while_another_thread_advances_is_ebusy)
{
    long base = live_allocations();
    rill_scheduler *s = rill_virtual_time_new();
    rill_worker *w = rill_worker_new(s);
    gate g = { .task = { .run = gate_run } };
    ck_assert_int_eq(rill_schedule(w, &g.task), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, vt_advance_thread, s), 0);
    while (!atomic_load(&g.entered))
        sched_yield();
    ck_assert_int_eq(rill_virtual_time_advance(s, 10), EBUSY);
    /* The lock is not held while the task runs: scheduling still works. */
    journal j = { .s = s };
    probe a = PROBE(&j, 1);
    ck_assert_int_eq(rill_schedule(w, &a.task), 0);
    ck_assert_uint_eq(rill_virtual_time_pending(s), 1);
    atomic_store(&g.open, 1);
    pthread_join(th, NULL);
    ck_assert(pthread_equal(g.ran_on, th));
    EXPECT_IDS(&j, 1);   /* queued during the other advance: it ran there */
    ck_assert(pthread_equal(j.thread[0], th));
    ck_assert_uint_eq(rill_scheduler_now(s), 0);
    rill_worker_free(w);
    rill_scheduler_unref(s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(vt_functions_reject_other_schedulers)
{
    long base = live_allocations();
    rill_scheduler *loop = rill_loop_scheduler_new();
    ck_assert_ptr_nonnull(loop);
    ck_assert_int_eq(rill_virtual_time_advance(NULL, 1), EINVAL);
    ck_assert_int_eq(rill_virtual_time_advance(rill_immediate(), 1), EINVAL);
    ck_assert_int_eq(rill_virtual_time_advance(loop, 1), EINVAL);
    errno = 0;
    ck_assert_uint_eq(rill_virtual_time_pending(loop), 0);
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_uint_eq(rill_virtual_time_pending(NULL), 0);
    ck_assert_int_eq(errno, EINVAL);
    rill_scheduler_unref(loop);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(vt_shutdown_runs_queued_tasks_on_the_unref_thread)
{
    long base = live_allocations();
    journal j = { .s = rill_virtual_time_new() };
    rill_worker *w = rill_worker_new(j.s);
    probe x = PROBE(&j, 1), y = PROBE(&j, 2), z = PROBE(&j, 3), v = PROBE(&j, 4);
    ck_assert_int_eq(rill_schedule_after(w, &y.task, 100), 0);
    ck_assert_int_eq(rill_schedule(w, &x.task), 0);
    ck_assert_int_eq(rill_schedule_after(w, &z.task, 50), 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 7), 0);
    EXPECT_IDS(&j, 1);
    ck_assert_int_eq(rill_schedule(w, &x.task), 0);
    rill_scheduler *s = rill_scheduler_ref(j.s);
    rill_scheduler_unref(s);   /* not the last: nothing happens */
    ck_assert_uint_eq(j.n, 1);

    rill_scheduler_unref(j.s);   /* the last user reference */
    EXPECT_IDS(&j, 1, 1, 3, 2);
    ck_assert_int_eq(j.status[1], RILL_TASK_RUN);
    ck_assert_int_eq(j.status[2], ECANCELED);
    ck_assert_int_eq(j.status[3], ECANCELED);
    for (size_t i = 1; i < 4; i++) {
        ck_assert_uint_eq(j.at[i], 7);   /* the clock does not move */
        ck_assert(pthread_equal(j.thread[i], pthread_self()));
    }
    /* The worker keeps the memory: everything now refuses. */
    ck_assert_int_eq(rill_schedule(w, &v.task), ECANCELED);
    ck_assert_int_eq(rill_schedule_after(w, &v.task, 1), ECANCELED);
    ck_assert_int_eq(rill_task_cancel(w, &v.task), ENOENT);
    ck_assert_uint_eq(rill_virtual_time_pending(j.s), 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 1), ECANCELED);
    errno = 0;
    ck_assert_ptr_null(rill_worker_new(j.s));
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_uint_eq(j.n, 4);
    rill_worker_free(w);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static void then_schedule_other_and_drop(probe *p, int status)
{
    then_schedule_other(p, status);
    then_drop_scheduler(p, status);
}

START_TEST(vt_last_unref_inside_advance_drains_before_advance_returns)
{
    long base = live_allocations();
    journal j = { .s = rill_virtual_time_new() };
    j.w = rill_worker_new(j.s);
    /* a (at 10) schedules b now and drops the last reference: b still runs
     * (RILL_TASK_RUN), its own attempt to schedule e is refused, and c (at
     * 15, inside the window) and d (at 500, outside) run with ECANCELED, all
     * before advance returns. */
    probe a = PROBE(&j, 1), b = PROBE(&j, 2), c = PROBE(&j, 3), d = PROBE(&j, 4);
    probe e = PROBE(&j, 5);
    a.then = then_schedule_other_and_drop, a.other = &b;
    b.then = then_schedule_other, b.other = &e;
    ck_assert_int_eq(rill_schedule_after(j.w, &d.task, 500), 0);
    ck_assert_int_eq(rill_schedule_after(j.w, &a.task, 10), 0);
    ck_assert_int_eq(rill_schedule_after(j.w, &c.task, 15), 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 20), 0);
    EXPECT_IDS(&j, 1, 2, 3, 4);
    static const int status[] = { RILL_TASK_RUN, RILL_TASK_RUN, ECANCELED, ECANCELED };
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(j.status[i], status[i]);
        ck_assert(pthread_equal(j.thread[i], pthread_self()));
        ck_assert_uint_eq(j.at[i], 10);   /* the clock stops at shutdown */
    }
    ck_assert_int_eq(a.result, 0);
    ck_assert_int_eq(b.result, ECANCELED);
    ck_assert_uint_eq(rill_virtual_time_pending(j.s), 0);
    rill_worker_free(j.w);   /* the last hold: frees the scheduler */
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static void then_free_worker_and_drop(probe *p, int status)
{
    rill_worker_free(p->j->w);
    p->j->w = NULL;
    rill_scheduler_unref(p->j->s);
}

START_TEST(vt_task_may_free_everything_from_inside_advance)
{
    /* The last worker and the last reference both go inside a task: the
     * scheduler's memory must outlive the advance that is running it. */
    long base = live_allocations();
    journal j = { .s = rill_virtual_time_new() };
    j.w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1);
    a.then = then_free_worker_and_drop;
    ck_assert_int_eq(rill_schedule_after(j.w, &a.task, 3), 0);
    ck_assert_int_eq(rill_virtual_time_advance(j.s, 5), 0);
    EXPECT_IDS(&j, 1);
    ck_assert_ptr_null(j.w);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(vt_allocation_failures)
{
    long base = live_allocations();
    counting_allocator_fail_at(1);
    errno = 0;
    ck_assert_ptr_null(rill_virtual_time_new());
    ck_assert_int_eq(errno, ENOMEM);
    rill_scheduler *s = rill_virtual_time_new();
    ck_assert_ptr_nonnull(s);
    counting_allocator_fail_at(1);
    errno = 0;
    ck_assert_ptr_null(rill_worker_new(s));
    ck_assert_int_eq(errno, ENOMEM);
    /* Scheduling never allocates. */
    rill_worker *w = rill_worker_new(s);
    journal j = { .s = s };
    probe a = PROBE(&j, 1);
    long calls = counting_allocator_calls();
    ck_assert_int_eq(rill_schedule_after(w, &a.task, 2), 0);
    ck_assert_int_eq(rill_virtual_time_advance(s, 2), 0);
    ck_assert_int_eq(counting_allocator_calls(), calls);
    EXPECT_IDS(&j, 1);
    rill_worker_free(w);
    rill_scheduler_unref(s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Producers on other threads, the advancer on the test's thread. */

typedef struct seq_task {
    rill_task task;
    struct producer *from;
    unsigned seq;
    int delayed;
} seq_task;

typedef struct producer {
    rill_scheduler *s;
    rill_worker *w;
    seq_task *tasks;
    unsigned n;
    atomic_uint scheduled;
    /* written by tasks, on the driving thread only */
    unsigned ran, last_immediate, wrong_thread, out_of_order, cancelled;
    pthread_t driver;
    atomic_uint *total_ran;
} producer;

static void seq_run(rill_task *t, int status)
{
    seq_task *k = (seq_task *)t;
    producer *p = k->from;
    if (!pthread_equal(pthread_self(), p->driver))
        p->wrong_thread++;
    if (status != RILL_TASK_RUN)
        p->cancelled++;
    if (!k->delayed) {
        /* A worker's immediate tasks run in scheduling order. */
        if (k->seq + 1 <= p->last_immediate)
            p->out_of_order++;
        p->last_immediate = k->seq + 1;
    }
    p->ran++;
    atomic_fetch_add(p->total_ran, 1);
}

static void *produce(void *arg)
{
    producer *p = arg;
    for (unsigned i = 0; i < p->n; i++) {
        seq_task *k = &p->tasks[i];
        int rc = k->delayed ? rill_schedule_after(p->w, &k->task, 1 + i % 7)
                            : rill_schedule(p->w, &k->task);
        ck_assert_int_eq(rc, 0);
        atomic_fetch_add(&p->scheduled, 1);
    }
    return NULL;
}

static void producer_init(producer *p, rill_scheduler *s, unsigned n, atomic_uint *total)
{
    p->s = s;
    p->w = rill_worker_new(s);
    ck_assert_ptr_nonnull(p->w);
    p->n = n;
    p->tasks = calloc(n, sizeof *p->tasks);
    ck_assert_ptr_nonnull(p->tasks);
    for (unsigned i = 0; i < n; i++) {
        p->tasks[i].task.run = seq_run;
        p->tasks[i].from = p;
        p->tasks[i].seq = i;
        p->tasks[i].delayed = i % 5 == 0;
    }
    p->driver = pthread_self();
    p->total_ran = total;
}

static void producer_check(producer *p)
{
    ck_assert_uint_eq(p->ran, p->n);
    ck_assert_uint_eq(p->wrong_thread, 0);
    ck_assert_uint_eq(p->out_of_order, 0);
    ck_assert_uint_eq(p->cancelled, 0);
    rill_worker_free(p->w);
    free(p->tasks);
}

START_TEST(vt_producer_threads_schedule_while_the_test_advances)
{
    long base = live_allocations();
    unsigned n = quick() ? 2000 : 20000;
    rill_scheduler *s = rill_virtual_time_new();
    atomic_uint total = 0;
    producer p[2] = { 0 };
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        producer_init(&p[i], s, n, &total);
        ck_assert_int_eq(pthread_create(&th[i], NULL, produce, &p[i]), 0);
    }
    while (atomic_load(&total) < 2 * n)
        ck_assert_int_eq(rill_virtual_time_advance(s, 1), 0);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        producer_check(&p[i]);
    }
    ck_assert_uint_eq(rill_virtual_time_pending(s), 0);
    rill_scheduler_unref(s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Loop scheduler */

static int readable(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    int n = poll(&p, 1, 0);
    ck_assert_int_ge(n, 0);
    return n == 1 && (p.revents & POLLIN);
}

/* Waits (without a deadline: the test's timeout is the limit) until the
 * loop's earliest delayed task is due. */
static void wait_until_due(rill_scheduler *s)
{
    while (rill_loop_next_timeout_ns(s) > 0)
        sched_yield();
}

START_TEST(loop_fd_is_readable_while_tasks_are_runnable)
{
    long base = live_allocations();
    journal j = { .s = rill_loop_scheduler_new() };
    ck_assert_ptr_nonnull(j.s);
    int fd = rill_loop_fd(j.s);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
    ck_assert_int_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, O_NONBLOCK);
    rill_worker *w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1), b = PROBE(&j, 2);
    ck_assert(!readable(fd));
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), -1);
    ck_assert_int_eq(rill_schedule(w, &a.task), 0);
    ck_assert(readable(fd));
    ck_assert_int_eq(rill_schedule(w, &b.task), 0);
    ck_assert(readable(fd));
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), 0);
    ck_assert_uint_eq(j.n, 0);   /* nothing runs by itself */
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 2);
    EXPECT_IDS(&j, 1, 2);
    ck_assert(pthread_equal(j.thread[0], pthread_self()));
    ck_assert_int_eq(j.status[0], RILL_TASK_RUN);
    ck_assert(!readable(fd));
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), -1);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 0);
    rill_worker_free(w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(loop_run_pending_respects_max_and_rearms)
{
    long base = live_allocations();
    journal j = { .s = rill_loop_scheduler_new() };
    int fd = rill_loop_fd(j.s);
    rill_worker *w = rill_worker_new(j.s);
    probe p[5] = { PROBE(&j, 1), PROBE(&j, 2), PROBE(&j, 3), PROBE(&j, 4), PROBE(&j, 5) };
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(rill_schedule(w, &p[i].task), 0);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, 0), 0);
    ck_assert(readable(fd));   /* re-armed: work is left */
    ck_assert_uint_eq(rill_loop_run_pending(j.s, 2), 2);
    EXPECT_IDS(&j, 1, 2);
    ck_assert(readable(fd));
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), 0);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, 2), 2);
    EXPECT_IDS(&j, 1, 2, 3, 4);
    ck_assert(readable(fd));
    ck_assert_uint_eq(rill_loop_run_pending(j.s, 2), 1);
    EXPECT_IDS(&j, 1, 2, 3, 4, 5);
    ck_assert(!readable(fd));
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), -1);
    rill_worker_free(w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(loop_tasks_scheduled_by_tasks_run_in_the_same_call)
{
    long base = live_allocations();
    journal j = { .s = rill_loop_scheduler_new() };
    int fd = rill_loop_fd(j.s);
    j.w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1), b = PROBE(&j, 2), c = PROBE(&j, 3), d = PROBE(&j, 4);
    a.then = then_schedule_other, a.other = &b;
    b.then = then_schedule_other, b.other = &c;
    ck_assert_int_eq(rill_schedule(j.w, &a.task), 0);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 3);
    EXPECT_IDS(&j, 1, 2, 3);
    ck_assert(!readable(fd));
    /* With a budget of 1, what a task queues is left, and the fd re-armed. */
    c.then = then_schedule_other, c.other = &d;
    ck_assert_int_eq(rill_schedule(j.w, &c.task), 0);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, 1), 1);
    EXPECT_IDS(&j, 1, 2, 3, 3);
    ck_assert(readable(fd));
    ck_assert_uint_eq(rill_loop_run_pending(j.s, 1), 1);
    EXPECT_IDS(&j, 1, 2, 3, 3, 4);
    ck_assert(!readable(fd));
    rill_worker_free(j.w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(loop_next_timeout_reports_the_earliest_deadline)
{
    long base = live_allocations();
    journal j = { .s = rill_loop_scheduler_new() };
    rill_worker *w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1), b = PROBE(&j, 2), c = PROBE(&j, 3), far = PROBE(&j, 4);
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), -1);
    uint64_t before = rill_scheduler_now(j.s);
    ck_assert_int_eq(rill_schedule_after(w, &a.task, 2 * HOUR), 0);
    ck_assert_int_eq(rill_schedule_after(w, &b.task, HOUR), 0);
    int64_t t = rill_loop_next_timeout_ns(j.s);
    uint64_t after = rill_scheduler_now(j.s);
    /* t = due - now, with due >= before + HOUR and now <= after. */
    ck_assert_int_le(t, (int64_t)HOUR);
    ck_assert_int_ge(t, (int64_t)(HOUR - (after - before)));
    /* Not due: run_pending runs nothing. */
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 0);
    ck_assert_uint_eq(j.n, 0);
    ck_assert_int_eq(rill_schedule(w, &c.task), 0);
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), 0);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 1);
    ck_assert_int_eq(rill_task_cancel(w, &a.task), 0);
    ck_assert_int_eq(rill_task_cancel(w, &b.task), 0);
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), -1);
    /* A deadline past INT64_MAX nanoseconds is clamped. */
    ck_assert_int_eq(rill_schedule_after(w, &far.task, UINT64_MAX), 0);
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), INT64_MAX);
    ck_assert_int_eq(rill_task_cancel(w, &far.task), 0);
    EXPECT_IDS(&j, 3);
    rill_worker_free(w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(loop_due_timers_join_after_the_queued_immediate_tasks)
{
    long base = live_allocations();
    journal j = { .s = rill_loop_scheduler_new() };
    int fd = rill_loop_fd(j.s);
    j.w = rill_worker_new(j.s);
    probe t1 = PROBE(&j, 1), t2 = PROBE(&j, 2), a = PROBE(&j, 3), b = PROBE(&j, 4);
    uint64_t start = rill_scheduler_now(j.s);
    ck_assert_int_eq(rill_schedule_after(j.w, &t1.task, 1000), 0);
    ck_assert_int_eq(rill_schedule_after(j.w, &t2.task, 2000), 0);
    uint64_t scheduled = rill_scheduler_now(j.s);
    while (rill_scheduler_now(j.s) < scheduled + 2000)
        sched_yield();     /* both are due */
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), 0);
    a.then = then_schedule_other, a.other = &b;
    ck_assert_int_eq(rill_schedule(j.w, &a.task), 0);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 4);
    /* a was queued first; t1, t2 join in due order; b, queued by a, last. */
    EXPECT_IDS(&j, 3, 1, 2, 4);
    for (size_t i = 0; i < 4; i++)
        ck_assert_int_eq(j.status[i], RILL_TASK_RUN);
    ck_assert_uint_ge(j.at[1], start + 1000);
    ck_assert(!readable(fd));
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), -1);
    rill_worker_free(j.w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(loop_new_earliest_deadline_wakes_the_loop)
{
    long base = live_allocations();
    journal j = { .s = rill_loop_scheduler_new() };
    int fd = rill_loop_fd(j.s);
    rill_worker *w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1), b = PROBE(&j, 2), c = PROBE(&j, 3);
    ck_assert_int_eq(rill_schedule_after(w, &a.task, 2 * HOUR), 0);
    ck_assert(readable(fd));   /* the host's wait must shrink */
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 0);
    ck_assert(!readable(fd));
    ck_assert_int_eq(rill_schedule_after(w, &b.task, 3 * HOUR), 0);
    ck_assert(!readable(fd));  /* not the earliest: the wait stands */
    ck_assert_int_eq(rill_schedule_after(w, &c.task, HOUR), 0);
    ck_assert(readable(fd));
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 0);
    ck_assert(!readable(fd));
    ck_assert_int_eq(rill_task_cancel(w, &a.task), 0);
    ck_assert_int_eq(rill_task_cancel(w, &b.task), 0);
    ck_assert_int_eq(rill_task_cancel(w, &c.task), 0);
    ck_assert_uint_eq(j.n, 0);
    rill_worker_free(w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(loop_delayed_task_runs_once_due)
{
    long base = live_allocations();
    journal j = { .s = rill_loop_scheduler_new() };
    int fd = rill_loop_fd(j.s);
    rill_worker *w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1);
    uint64_t start = rill_scheduler_now(j.s);
    ck_assert_int_eq(rill_schedule_after(w, &a.task, 2000000), 0);   /* 2 ms */
    while (j.n == 0) {
        int64_t ns = rill_loop_next_timeout_ns(j.s);
        ck_assert_int_ge(ns, 0);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        poll(&p, 1, (int)((ns + 999999) / 1000000));
        rill_loop_run_pending(j.s, 16);
    }
    EXPECT_IDS(&j, 1);
    ck_assert_int_eq(j.status[0], RILL_TASK_RUN);
    ck_assert_uint_ge(j.at[0], start + 2000000);
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), -1);
    rill_worker_free(w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(loop_cancel_removes_queued_tasks_only)
{
    long base = live_allocations();
    journal j = { .s = rill_loop_scheduler_new() };
    j.w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1), b = PROBE(&j, 2), c = PROBE(&j, 3), t = PROBE(&j, 4);
    probe never = PROBE(&j, 5), e = PROBE(&j, 6), f = PROBE(&j, 7);
    ck_assert_int_eq(rill_schedule(j.w, &a.task), 0);
    ck_assert_int_eq(rill_schedule(j.w, &b.task), 0);
    ck_assert_int_eq(rill_schedule_after(j.w, &c.task, HOUR), 0);
    ck_assert_int_eq(rill_task_cancel(j.w, &b.task), 0);
    ck_assert_int_eq(rill_task_cancel(j.w, &c.task), 0);
    ck_assert_int_eq(rill_task_cancel(j.w, &c.task), ENOENT);
    ck_assert_int_eq(rill_task_cancel(j.w, &never.task), ENOENT);
    /* e cancels f, queued behind it. */
    e.then = then_cancel_other, e.other = &f;
    ck_assert_int_eq(rill_schedule(j.w, &e.task), 0);
    ck_assert_int_eq(rill_schedule(j.w, &f.task), 0);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 2);
    EXPECT_IDS(&j, 1, 6);
    ck_assert_int_eq(e.result, 0);
    ck_assert_int_eq(rill_task_cancel(j.w, &a.task), ENOENT);
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), -1);
    /* A due timer moved to the run queue by run_pending(0) can still go. */
    ck_assert_int_eq(rill_schedule_after(j.w, &t.task, 1), 0);
    wait_until_due(j.s);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, 0), 0);
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), 0);
    ck_assert_int_eq(rill_task_cancel(j.w, &t.task), 0);
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), -1);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 0);
    EXPECT_IDS(&j, 1, 6);
    rill_worker_free(j.w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static void then_run_pending(probe *p, int status)
{
    errno = 0;
    p->result = (int)rill_loop_run_pending(p->j->s, SIZE_MAX);
    p->result_errno = errno;
}

START_TEST(loop_run_pending_from_inside_a_task_is_edeadlk)
{
    long base = live_allocations();
    journal j = { .s = rill_loop_scheduler_new() };
    j.w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1), b = PROBE(&j, 2);
    a.then = then_run_pending;
    a.result = -1;
    ck_assert_int_eq(rill_schedule(j.w, &a.task), 0);
    ck_assert_int_eq(rill_schedule(j.w, &b.task), 0);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, 1), 1);
    ck_assert_int_eq(a.result, 0);
    ck_assert_int_eq(a.result_errno, EDEADLK);
    EXPECT_IDS(&j, 1);   /* b did not run nested inside a */
    ck_assert_uint_eq(rill_loop_run_pending(j.s, 1), 1);
    EXPECT_IDS(&j, 1, 2);
    rill_worker_free(j.w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static void *loop_run_thread(void *arg)
{
    ck_assert_uint_eq(rill_loop_run_pending(arg, SIZE_MAX), 2);
    return NULL;
}

START_TEST(loop_run_pending_while_another_thread_runs_is_ebusy)
{
    long base = live_allocations();
    rill_scheduler *s = rill_loop_scheduler_new();
    rill_worker *w = rill_worker_new(s);
    gate g = { .task = { .run = gate_run } };
    ck_assert_int_eq(rill_schedule(w, &g.task), 0);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, loop_run_thread, s), 0);
    while (!atomic_load(&g.entered))
        sched_yield();
    errno = 0;
    ck_assert_uint_eq(rill_loop_run_pending(s, SIZE_MAX), 0);
    ck_assert_int_eq(errno, EBUSY);
    /* No lock is held while the task runs. */
    journal j = { .s = s };
    probe a = PROBE(&j, 1);
    ck_assert_int_eq(rill_schedule(w, &a.task), 0);
    ck_assert_int_eq(rill_loop_next_timeout_ns(s), 0);
    atomic_store(&g.open, 1);
    pthread_join(th, NULL);   /* it ran a too: 2 tasks */
    ck_assert(pthread_equal(g.ran_on, th));
    EXPECT_IDS(&j, 1);
    ck_assert(pthread_equal(j.thread[0], th));
    ck_assert_int_eq(rill_loop_next_timeout_ns(s), -1);
    rill_worker_free(w);
    rill_scheduler_unref(s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(loop_functions_reject_other_schedulers)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_scheduler *others[] = { NULL, rill_immediate(), vt };
    for (size_t i = 0; i < 3; i++) {
        errno = 0;
        ck_assert_int_eq(rill_loop_fd(others[i]), -1);
        ck_assert_int_eq(errno, EINVAL);
        errno = 0;
        ck_assert_uint_eq(rill_loop_run_pending(others[i], 5), 0);
        ck_assert_int_eq(errno, EINVAL);
        errno = 0;
        ck_assert_int_eq(rill_loop_next_timeout_ns(others[i]), -1);
        ck_assert_int_eq(errno, EINVAL);
        errno = 0;
        rill_loop_wakeup(others[i]);   /* ignored */
        ck_assert_int_eq(errno, 0);
    }
    rill_scheduler_unref(vt);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static rill_scheduler *signal_loop;

static void on_sigusr1(int sig)
{
    rill_loop_wakeup(signal_loop);
}

START_TEST(loop_wakeup_makes_the_fd_readable_even_from_a_signal_handler)
{
    long base = live_allocations();
    rill_scheduler *s = rill_loop_scheduler_new();
    int fd = rill_loop_fd(s);
    ck_assert(!readable(fd));
    errno = EXDEV;
    rill_loop_wakeup(s);
    ck_assert_int_eq(errno, EXDEV);   /* preserved */
    ck_assert(readable(fd));
    ck_assert_uint_eq(rill_loop_run_pending(s, SIZE_MAX), 0);
    ck_assert(!readable(fd));

    signal_loop = s;
    struct sigaction sa = { .sa_handler = on_sigusr1 };
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    ck_assert_int_eq(raise(SIGUSR1), 0);   /* delivered before raise returns */
    ck_assert(readable(fd));
    ck_assert_uint_eq(rill_loop_run_pending(s, SIZE_MAX), 0);
    ck_assert(!readable(fd));
    signal(SIGUSR1, SIG_DFL);
    rill_scheduler_unref(s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(loop_wakeup_does_not_hide_a_later_task)
{
    /* A wake-up sets the "write pending" flag; the next run_pending must
     * still leave the fd readable for tasks queued after it drained. */
    long base = live_allocations();
    journal j = { .s = rill_loop_scheduler_new() };
    int fd = rill_loop_fd(j.s);
    rill_worker *w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1);
    rill_loop_wakeup(j.s);
    rill_loop_wakeup(j.s);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 0);
    ck_assert(!readable(fd));
    ck_assert_int_eq(rill_schedule(w, &a.task), 0);
    ck_assert(readable(fd));
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 1);
    EXPECT_IDS(&j, 1);
    rill_worker_free(w);
    rill_scheduler_unref(j.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(loop_shutdown_runs_queued_tasks_on_the_unref_thread)
{
    long base = live_allocations();
    journal j = { .s = rill_loop_scheduler_new() };
    int fd = rill_loop_fd(j.s);
    rill_worker *w = rill_worker_new(j.s);
    probe x = PROBE(&j, 1), y = PROBE(&j, 2), z = PROBE(&j, 3), v = PROBE(&j, 4);
    ck_assert_int_eq(rill_schedule_after(w, &y.task, 2 * HOUR), 0);
    ck_assert_int_eq(rill_schedule(w, &x.task), 0);
    ck_assert_int_eq(rill_schedule_after(w, &z.task, HOUR), 0);
    rill_scheduler_unref(j.s);   /* the last user reference */
    EXPECT_IDS(&j, 1, 3, 2);
    ck_assert_int_eq(j.status[0], RILL_TASK_RUN);
    ck_assert_int_eq(j.status[1], ECANCELED);
    ck_assert_int_eq(j.status[2], ECANCELED);
    for (size_t i = 0; i < 3; i++)
        ck_assert(pthread_equal(j.thread[i], pthread_self()));
    ck_assert_int_eq(rill_schedule(w, &v.task), ECANCELED);
    ck_assert_int_eq(rill_schedule_after(w, &v.task, 1), ECANCELED);
    ck_assert_int_eq(rill_task_cancel(w, &v.task), ENOENT);
    ck_assert_int_eq(rill_loop_next_timeout_ns(j.s), -1);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 0);
    errno = 0;
    ck_assert_ptr_null(rill_worker_new(j.s));
    ck_assert_int_eq(errno, ECANCELED);
    /* The fd lives as long as the memory: until the last worker goes. */
    ck_assert_int_eq(rill_loop_fd(j.s), fd);
    ck_assert_int_ne(fcntl(fd, F_GETFD), -1);
    rill_worker_free(w);
    errno = 0;
    ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
    ck_assert_int_eq(errno, EBADF);
    ck_assert_uint_eq(j.n, 3);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(loop_last_unref_inside_run_pending_drains_past_the_budget)
{
    long base = live_allocations();
    journal j = { .s = rill_loop_scheduler_new() };
    j.w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1), b = PROBE(&j, 2), c = PROBE(&j, 3), d = PROBE(&j, 4);
    probe e = PROBE(&j, 5);
    a.then = then_drop_scheduler;
    b.then = then_schedule_other, b.other = &e;
    ck_assert_int_eq(rill_schedule(j.w, &a.task), 0);
    ck_assert_int_eq(rill_schedule(j.w, &b.task), 0);
    ck_assert_int_eq(rill_schedule_after(j.w, &d.task, HOUR), 0);
    ck_assert_int_eq(rill_schedule(j.w, &c.task), 0);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, 1), 4);
    EXPECT_IDS(&j, 1, 2, 3, 4);
    static const int status[] = { RILL_TASK_RUN, RILL_TASK_RUN, RILL_TASK_RUN, ECANCELED };
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(j.status[i], status[i]);
        ck_assert(pthread_equal(j.thread[i], pthread_self()));
    }
    ck_assert_int_eq(b.result, ECANCELED);
    int fd = rill_loop_fd(j.s);
    rill_worker_free(j.w);
    errno = 0;
    ck_assert_int_eq(fcntl(fd, F_GETFD), -1);
    ck_assert_int_eq(errno, EBADF);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(loop_task_may_free_everything_from_inside_run_pending)
{
    long base = live_allocations();
    journal j = { .s = rill_loop_scheduler_new() };
    j.w = rill_worker_new(j.s);
    probe a = PROBE(&j, 1);
    a.then = then_free_worker_and_drop;
    ck_assert_int_eq(rill_schedule(j.w, &a.task), 0);
    ck_assert_uint_eq(rill_loop_run_pending(j.s, SIZE_MAX), 1);
    EXPECT_IDS(&j, 1);
    ck_assert_ptr_null(j.w);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(loop_allocation_failures)
{
    long base = live_allocations();
    counting_allocator_fail_at(1);
    errno = 0;
    ck_assert_ptr_null(rill_loop_scheduler_new());
    ck_assert_int_eq(errno, ENOMEM);
    rill_scheduler *s = rill_loop_scheduler_new();
    ck_assert_ptr_nonnull(s);
    counting_allocator_fail_at(1);
    errno = 0;
    ck_assert_ptr_null(rill_worker_new(s));
    ck_assert_int_eq(errno, ENOMEM);
    rill_worker *w = rill_worker_new(s);
    journal j = { .s = s };
    probe a = PROBE(&j, 1);
    long calls = counting_allocator_calls();
    ck_assert_int_eq(rill_schedule(w, &a.task), 0);
    ck_assert_uint_eq(rill_loop_run_pending(s, SIZE_MAX), 1);
    ck_assert_int_eq(counting_allocator_calls(), calls);
    rill_worker_free(w);
    rill_scheduler_unref(s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The host's loop: epoll on the fd with the scheduler's timeout, until
 * done(arg) says so. */
static void epoll_loop(rill_scheduler *s, int (*done)(void *arg), void *arg)
{
    int ep = epoll_create1(EPOLL_CLOEXEC);
    ck_assert_int_ge(ep, 0);
    struct epoll_event ev = { .events = EPOLLIN };
    ck_assert_int_eq(epoll_ctl(ep, EPOLL_CTL_ADD, rill_loop_fd(s), &ev), 0);
    while (!done(arg)) {
        int64_t ns = rill_loop_next_timeout_ns(s);
        int ms = ns < 0 ? -1 : (int)((ns + 999999) / 1000000);
        struct epoll_event out;
        int n = epoll_wait(ep, &out, 1, ms);
        ck_assert(n >= 0 || errno == EINTR);
        rill_loop_run_pending(s, 64);
    }
    close(ep);
}

typedef struct count_target {
    atomic_uint *count;
    unsigned target;
} count_target;

static int count_reached(void *arg)
{
    count_target *c = arg;
    return atomic_load(c->count) >= c->target;
}

static void epoll_loop_until(rill_scheduler *s, atomic_uint *count, unsigned target)
{
    count_target c = { count, target };
    epoll_loop(s, count_reached, &c);
}

START_TEST(loop_producer_threads_feed_an_epoll_loop)
{
    long base = live_allocations();
    unsigned n = quick() ? 2000 : 20000;
    rill_scheduler *s = rill_loop_scheduler_new();
    atomic_uint total = 0;
    producer p[2] = { 0 };
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        producer_init(&p[i], s, n, &total);
        ck_assert_int_eq(pthread_create(&th[i], NULL, produce, &p[i]), 0);
    }
    epoll_loop_until(s, &total, 2 * n);
    for (int i = 0; i < 2; i++) {
        pthread_join(th[i], NULL);
        producer_check(&p[i]);
    }
    ck_assert_int_eq(rill_loop_next_timeout_ns(s), -1);
    ck_assert(!readable(rill_loop_fd(s)));
    rill_scheduler_unref(s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A ping-pong across threads: each task run on the loop wakes the producer,
 * which schedules the next one only then, so the loop is idle (blocked in
 * epoll_wait with no timeout) at every hand-off: a lost wake-up hangs. */
typedef struct pingpong {
    rill_task task;
    rill_scheduler *s;
    rill_worker *w;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    unsigned ran, rounds;
    atomic_uint done;
    pthread_t loop_thread;
    int wrong_thread;
} pingpong;

static void pong_run(rill_task *t, int status)
{
    pingpong *pp = (pingpong *)t;
    if (!pthread_equal(pthread_self(), pp->loop_thread))
        pp->wrong_thread = 1;
    pthread_mutex_lock(&pp->lock);
    pp->ran++;
    pthread_cond_signal(&pp->cond);
    pthread_mutex_unlock(&pp->lock);
    atomic_fetch_add(&pp->done, 1);
}

static void *ping(void *arg)
{
    pingpong *pp = arg;
    for (unsigned i = 0; i < pp->rounds; i++) {
        ck_assert_int_eq(rill_schedule(pp->w, &pp->task), 0);
        pthread_mutex_lock(&pp->lock);
        while (pp->ran <= i)
            pthread_cond_wait(&pp->cond, &pp->lock);
        pthread_mutex_unlock(&pp->lock);
    }
    return NULL;
}

START_TEST(loop_no_lost_wakeup_when_the_loop_is_idle)
{
    long base = live_allocations();
    pingpong pp = { .task = { .run = pong_run }, .rounds = quick() ? 500 : 5000 };
    pp.s = rill_loop_scheduler_new();
    pp.w = rill_worker_new(pp.s);
    pp.loop_thread = pthread_self();
    pthread_mutex_init(&pp.lock, NULL);
    pthread_cond_init(&pp.cond, NULL);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, ping, &pp), 0);
    epoll_loop_until(pp.s, &pp.done, pp.rounds);
    pthread_join(th, NULL);
    ck_assert_uint_eq(pp.ran, pp.rounds);
    ck_assert_int_eq(pp.wrong_thread, 0);
    pthread_mutex_destroy(&pp.lock);
    pthread_cond_destroy(&pp.cond);
    rill_worker_free(pp.w);
    rill_scheduler_unref(pp.s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Pipelines on these schedulers */

typedef struct where {
    pthread_t expect;            /* the thread every on_next must run on */
    int wrong;
    rill_scheduler *clock;       /* if set, the clock at each on_next */
    size_t n;
    uint64_t at[16];
} where;

static void hook_where(recorder *r, void *item)
{
    where *w = r->user;
    if (!pthread_equal(pthread_self(), w->expect))
        w->wrong++;
    if (w->clock && w->n < 16)
        w->at[w->n++] = rill_scheduler_now(w->clock);
}

static recorder *subscribe_where(rill_publisher *p, where *w)
{
    recorder *r = rec_new(RILL_UNBOUNDED);
    r->on_next_hook = hook_where;
    r->user = w;
    w->expect = pthread_self();
    rill_subscribe(p, rec_subscriber(r));
    return r;
}

static int released(void *arg)
{
    return atomic_load(&((recorder *)arg)->released_flag);
}

START_TEST(loop_observe_on_delivers_a_pool_source_on_the_loop_thread)
{
    long base = live_allocations();
    unsigned n = quick() ? 2000 : 50000;
    rill_scheduler *pool = rill_single_thread_new();
    rill_scheduler *loop = rill_loop_scheduler_new();
    rill_publisher *p = rill_observe_on(rill_subscribe_on(rill_range(0, n), pool), loop, 32);
    ck_assert_ptr_nonnull(p);
    where w = { 0 };
    recorder *r = subscribe_where(p, &w);
    epoll_loop(loop, released, r);
    ck_assert_msg(rec_ok(r), "%s", r->violation);
    ck_assert_uint_eq(r->nitems, n);
    for (unsigned i = 0; i < n; i++)
        ck_assert_int_eq(rec_int(r, i), i);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->errors, 0);
    ck_assert_int_eq(w.wrong, 0);
    rill_publisher_unref(p);
    rec_free(r);
    rill_scheduler_unref(pool);
    rill_scheduler_unref(loop);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(vt_interval_ticks_at_virtual_times)
{
    long base = live_allocations();
    rill_scheduler *s = rill_virtual_time_new();
    rill_publisher *p = rill_take(rill_interval(10, s), 5);
    ck_assert_ptr_nonnull(p);
    where w = { .clock = s };
    recorder *r = subscribe_where(p, &w);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(rill_virtual_time_advance(s, 25), 0);
    ck_assert_uint_eq(r->nitems, 2);
    ck_assert_int_eq(r->completes, 0);
    ck_assert_int_eq(rill_virtual_time_advance(s, 25), 0);
    ck_assert_uint_eq(r->nitems, 5);
    ck_assert_int_eq(r->completes, 1);
    for (unsigned i = 0; i < 5; i++) {
        ck_assert_int_eq(rec_int(r, i), i);
        ck_assert_uint_eq(w.at[i], 10u * (i + 1));
    }
    ck_assert_int_eq(w.wrong, 0);
    rill_publisher_unref(p);
    rill_scheduler_unref(s);   /* runs what is left, so everything ends */
    ck_assert(released(r));
    ck_assert_msg(rec_ok(r), "%s", r->violation);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(vt_delay_holds_items_until_the_clock_reaches_them)
{
    long base = live_allocations();
    rill_scheduler *s = rill_virtual_time_new();
    ck_assert_int_eq(rill_virtual_time_advance(s, 1000), 0);
    rill_publisher *p = rill_delay(rill_range(0, 3), 100, s);
    ck_assert_ptr_nonnull(p);
    where w = { .clock = s };
    recorder *r = subscribe_where(p, &w);
    ck_assert_int_eq(rill_virtual_time_advance(s, 99), 0);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(rill_virtual_time_advance(s, 1), 0);
    ck_assert_uint_eq(r->nitems, 3);
    ck_assert_int_eq(r->completes, 1);
    for (unsigned i = 0; i < 3; i++) {
        ck_assert_int_eq(rec_int(r, i), i);
        ck_assert_uint_eq(w.at[i], 1100);
    }
    rill_publisher_unref(p);
    rill_scheduler_unref(s);
    ck_assert(released(r));
    ck_assert_msg(rec_ok(r), "%s", r->violation);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------ */

Suite *vt_loop_suite(void)
{
    Suite *s = suite_create("vt_loop");
    TCase *tc = tcase_create("virtual_time");
    tcase_add_test(tc, vt_clock_starts_at_zero_and_moves_only_in_advance);
    tcase_add_test(tc, vt_runs_in_due_order_ties_in_schedule_order);
    tcase_add_test(tc, vt_delay_counts_from_the_current_clock);
    tcase_add_test(tc, vt_advance_zero_runs_only_what_is_due_now);
    tcase_add_test(tc, vt_tasks_scheduled_within_the_window_run_in_the_same_call);
    tcase_add_test(tc, vt_task_reschedules_itself_from_its_own_run);
    tcase_add_test(tc, vt_cancel_removes_queued_tasks_only);
    tcase_add_test(tc, vt_cancel_from_inside_the_running_task_is_enoent);
    tcase_add_test(tc, vt_advance_from_inside_a_task_is_edeadlk);
    tcase_add_test(tc, vt_functions_reject_other_schedulers);
    tcase_add_test(tc, vt_shutdown_runs_queued_tasks_on_the_unref_thread);
    tcase_add_test(tc, vt_last_unref_inside_advance_drains_before_advance_returns);
    tcase_add_test(tc, vt_task_may_free_everything_from_inside_advance);
    tcase_add_test(tc, vt_allocation_failures);
    suite_add_tcase(s, tc);

    tc = tcase_create("virtual_time_threads");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, vt_advance_while_another_thread_advances_is_ebusy);
    tcase_add_test(tc, vt_producer_threads_schedule_while_the_test_advances);
    suite_add_tcase(s, tc);

    tc = tcase_create("loop");
    tcase_add_test(tc, loop_fd_is_readable_while_tasks_are_runnable);
    tcase_add_test(tc, loop_run_pending_respects_max_and_rearms);
    tcase_add_test(tc, loop_tasks_scheduled_by_tasks_run_in_the_same_call);
    tcase_add_test(tc, loop_next_timeout_reports_the_earliest_deadline);
    tcase_add_test(tc, loop_due_timers_join_after_the_queued_immediate_tasks);
    tcase_add_test(tc, loop_new_earliest_deadline_wakes_the_loop);
    tcase_add_test(tc, loop_delayed_task_runs_once_due);
    tcase_add_test(tc, loop_cancel_removes_queued_tasks_only);
    tcase_add_test(tc, loop_run_pending_from_inside_a_task_is_edeadlk);
    tcase_add_test(tc, loop_functions_reject_other_schedulers);
    tcase_add_test(tc, loop_wakeup_makes_the_fd_readable_even_from_a_signal_handler);
    tcase_add_test(tc, loop_wakeup_does_not_hide_a_later_task);
    tcase_add_test(tc, loop_shutdown_runs_queued_tasks_on_the_unref_thread);
    tcase_add_test(tc, loop_last_unref_inside_run_pending_drains_past_the_budget);
    tcase_add_test(tc, loop_task_may_free_everything_from_inside_run_pending);
    tcase_add_test(tc, loop_allocation_failures);
    suite_add_tcase(s, tc);

    tc = tcase_create("loop_threads");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, loop_run_pending_while_another_thread_runs_is_ebusy);
    tcase_add_test(tc, loop_producer_threads_feed_an_epoll_loop);
    tcase_add_test(tc, loop_no_lost_wakeup_when_the_loop_is_idle);
    suite_add_tcase(s, tc);

    tc = tcase_create("pipelines");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, vt_interval_ticks_at_virtual_times);
    tcase_add_test(tc, vt_delay_holds_items_until_the_clock_reaches_them);
    tcase_add_test(tc, loop_observe_on_delivers_a_pool_source_on_the_loop_thread);
    suite_add_tcase(s, tc);
    return s;
}
