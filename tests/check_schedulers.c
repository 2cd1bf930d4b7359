/* tests/check_schedulers.c — the scheduler contract (include/rill/scheduler.h)
 * for the thread pool and the immediate scheduler.
 *
 * Tasks record what they see (order, thread, status, overlap, clock) into
 * plain fields or atomics; the assertions run on the test's own thread once
 * the tasks are known to have run: a counter the tasks raise last (a seq_cst
 * read-modify-write, so their plain writes happen-before the test's reads),
 * or the join inside the last rill_scheduler_unref. Nothing asserts on a pool
 * thread (Check's ck_assert belongs to the test's thread).
 *
 * Plain fields that only one worker's tasks touch are deliberately not
 * atomic: the header promises each task of a worker happens-before the next,
 * and the TSan build checks that promise through them.
 *
 * Determinism without timing: where a test needs tasks queued behind one
 * another, it first blocks the worker's thread with a *gate* task that waits
 * for the test to open it (or, for shutdown, until rill_schedule starts
 * refusing). Delays are only checked against the scheduler's own clock
 * (ran at >= scheduled at + delay); how long anything took is never asserted.
 * Waits spin with sched_yield, bounded by the test case's timeout.
 */
#include "recorder.h"
#include "suites.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MS 1000000ull
#define HOUR (3600ull * 1000000000ull)

/* The struct that embeds the rill_task member `task`. */
#define TASK_OF(ptr, type) ((type *)(void *)((char *)(ptr) - offsetof(type, task)))

static int quick(void)
{
    const char *q = getenv("RILL_TEST_QUICK");
    return q && *q && *q != '0';
}

static long scaled(long full, long small)
{
    return quick() ? small : full;
}

/* Loads for assertions (readable failure messages). */
static int load_int(atomic_int *a)
{
    return atomic_load(a);
}

static long load_long(atomic_long *a)
{
    return atomic_load(a);
}

static void wait_at_least(atomic_long *c, long n)
{
    while (atomic_load(c) < n)
        sched_yield();
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR)
        ;
}

/* Threads that exit detached free the pool's memory on their own time:
 * polls until the live allocations are back to base, for about 10 s (scaled
 * like Check's timeouts), and returns the last count. */
static long settle_allocations(long base)
{
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    long mult = m && atol(m) > 0 ? atol(m) : 1;
    for (long i = 0; i < 10000 * mult && live_allocations() != base; i++)
        sleep_ns(MS);
    return live_allocations();
}

/* ------------------------------------------------------------------------
 * flag: a task that notes how it ran */

typedef struct flag {
    rill_task task;
    rill_scheduler *clock;   /* read rill_scheduler_now at run, if set */
    pthread_t thread;        /* plain: published by `runs` */
    uint64_t ran_at;
    atomic_int status;
    atomic_long runs;        /* raised last */
} flag;

static void flag_run(rill_task *t, int status)
{
    flag *f = TASK_OF(t, flag);
    f->thread = pthread_self();
    if (f->clock)
        f->ran_at = rill_scheduler_now(f->clock);
    atomic_store(&f->status, status);
    atomic_fetch_add(&f->runs, 1);
}

static void flag_init(flag *f, rill_scheduler *clock)
{
    memset(f, 0, sizeof *f);
    f->task.run = flag_run;
    f->clock = clock;
    atomic_store(&f->status, -1);
}

/* ------------------------------------------------------------------------
 * gates: hold a worker's thread so that later tasks queue behind */

typedef struct gate {
    rill_task task;
    atomic_int entered, open;
} gate;

static void gate_run(rill_task *t, int status)
{
    gate *g = TASK_OF(t, gate);
    atomic_store(&g->entered, 1);
    while (!atomic_load(&g->open))
        sched_yield();
}

/* Schedules the gate on w and waits until it runs (so it is not queued). */
static void gate_close(gate *g, rill_worker *w)
{
    memset(g, 0, sizeof *g);
    g->task.run = gate_run;
    ck_assert_int_eq(rill_schedule(w, &g->task), 0);
    while (!atomic_load(&g->entered))
        sched_yield();
}

static void gate_open(gate *g)
{
    atomic_store(&g->open, 1);
}

/* Holds its thread until shutdown has begun: it keeps queuing and cancelling
 * a probe on its own worker until rill_schedule refuses with ECANCELED. Every
 * task queued behind it then runs during shutdown. */
typedef struct stop_gate {
    rill_task task, probe;
    rill_worker *w;
    atomic_int entered, bad, refused_with;
} stop_gate;

static void probe_run(rill_task *t, int status)
{
    stop_gate *g = (stop_gate *)(void *)((char *)t - offsetof(stop_gate, probe));
    atomic_fetch_add(&g->bad, 1);   /* the probe is always cancelled */
}

static void stop_gate_run(rill_task *t, int status)
{
    stop_gate *g = TASK_OF(t, stop_gate);
    atomic_store(&g->entered, 1);
    int rc;
    while ((rc = rill_schedule(g->w, &g->probe)) == 0) {
        if (rill_task_cancel(g->w, &g->probe) != 0)
            atomic_fetch_add(&g->bad, 1);
        sched_yield();
    }
    atomic_store(&g->refused_with, rc);
}

static void stop_gate_close(stop_gate *g, rill_worker *w)
{
    memset(g, 0, sizeof *g);
    g->task.run = stop_gate_run;
    g->probe.run = probe_run;
    g->w = w;
    ck_assert_int_eq(rill_schedule(w, &g->task), 0);
    while (!atomic_load(&g->entered))
        sched_yield();
}

/* ------------------------------------------------------------------------
 * lanes: what the tasks of one worker saw */

typedef struct lane {
    /* plain: touched only by the worker's tasks (one at a time) */
    long *order;             /* ids in run order, if set */
    long n;                  /* runs */
    long *last;              /* per producer: the last id seen, if set */
    long out_of_order, bad_status, moved, resched_failures;
    int last_resched_rc;
    pthread_t thread;
    int have_thread;
    /* atomics: read by the test while tasks run */
    atomic_int inside, overlaps;
    atomic_long done;
} lane;

static void lane_init(lane *l, long capacity, int producers)
{
    memset(l, 0, sizeof *l);
    if (capacity)
        l->order = calloc((size_t)capacity, sizeof *l->order);
    if (producers) {
        l->last = malloc((size_t)producers * sizeof *l->last);
        for (int i = 0; i < producers; i++)
            l->last[i] = -1;
    }
}

static void lane_fini(lane *l)
{
    free(l->order);
    free(l->last);
}

static void lane_enter(lane *l, int status)
{
    if (atomic_fetch_add(&l->inside, 1) != 0)
        atomic_fetch_add(&l->overlaps, 1);
    if (status != RILL_TASK_RUN)
        l->bad_status++;
    if (!l->have_thread) {
        l->thread = pthread_self();
        l->have_thread = 1;
    } else if (!pthread_equal(l->thread, pthread_self())) {
        l->moved++;
    }
}

static void lane_leave(lane *l)
{
    atomic_fetch_sub(&l->inside, 1);
    atomic_fetch_add(&l->done, 1);
}

/* Asserts a lane saw `runs` runs, serial, on one thread other than ours. */
static void assert_lane_clean(lane *l, long runs)
{
    ck_assert_int_eq(load_long(&l->done), runs);
    ck_assert_int_eq(l->n, runs);
    ck_assert_int_eq(load_int(&l->overlaps), 0);
    ck_assert_int_eq(l->moved, 0);
    ck_assert_int_eq(l->bad_status, 0);
    ck_assert_int_eq(l->out_of_order, 0);
    ck_assert_int_eq(l->resched_failures, 0);
    ck_assert(l->have_thread);
    ck_assert(!pthread_equal(l->thread, pthread_self()));
}

/* A task of a lane: records its id; reschedules itself `again` times. */
typedef struct seq_task {
    rill_task task;
    lane *lane;
    rill_worker *w;          /* for rescheduling */
    long id;
    long again;              /* plain: only its own runs touch it */
    int producer;
} seq_task;

static void seq_run(rill_task *t, int status)
{
    seq_task *q = TASK_OF(t, seq_task);
    lane *l = q->lane;
    lane_enter(l, status);
    if (l->order)
        l->order[l->n] = q->id;
    l->n++;
    if (l->last) {
        if (q->id <= l->last[q->producer])
            l->out_of_order++;
        l->last[q->producer] = q->id;
    }
    if (q->again > 0) {
        q->again--;
        /* Rescheduled before leaving: a second run that started now, on
         * another thread, would show up as an overlap. */
        int rc = rill_schedule(q->w, &q->task);
        if (rc != 0) {
            l->resched_failures++;
            l->last_resched_rc = rc;
        }
    }
    lane_leave(l);
}

static void seq_init(seq_task *q, lane *l, rill_worker *w, long id)
{
    memset(q, 0, sizeof *q);
    q->task.run = seq_run;
    q->lane = l;
    q->w = w;
    q->id = id;
}

/* ------------------------------------------------------------------------
 * thread pool: construction and references */

START_TEST(test_pool_zero_threads)
{
    long base = live_allocations();
    errno = 0;
    ck_assert_ptr_null(rill_thread_pool_new(0));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_pool_ref_unref)
{
    long base = live_allocations();
    rill_scheduler *s = rill_thread_pool_new(3);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_eq(rill_scheduler_ref(s), s);
    ck_assert_ptr_eq(rill_scheduler_ref(s), s);
    rill_scheduler_unref(s);
    rill_scheduler_unref(s);

    /* One reference left: the pool still runs tasks. */
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    ck_assert_ptr_eq(w->scheduler, s);
    flag f;
    flag_init(&f, NULL);
    ck_assert_int_eq(rill_schedule(w, &f.task), 0);
    wait_at_least(&f.runs, 1);
    ck_assert_int_eq(load_int(&f.status), RILL_TASK_RUN);
    rill_worker_free(w);
    rill_scheduler_unref(s);

    ck_assert_ptr_null(rill_scheduler_ref(NULL));
    rill_scheduler_unref(NULL);
    rill_worker_free(NULL);
    ck_assert_int_eq(load_long(&f.runs), 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_pool_unused)
{
    /* Created and released without a worker or a task: threads join. */
    long base = live_allocations();
    for (int i = 0; i < 20; i++) {
        rill_scheduler *s = rill_thread_pool_new(1 + i % 4);
        ck_assert_ptr_nonnull(s);
        rill_scheduler_unref(s);
    }
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_single_thread)
{
    long base = live_allocations();
    rill_scheduler *s = rill_single_thread_new();
    ck_assert_ptr_nonnull(s);
    rill_worker *w1 = rill_worker_new(s), *w2 = rill_worker_new(s);
    ck_assert_ptr_nonnull(w1);
    ck_assert_ptr_nonnull(w2);
    flag a, b;
    flag_init(&a, NULL);
    flag_init(&b, NULL);
    ck_assert_int_eq(rill_schedule(w1, &a.task), 0);
    ck_assert_int_eq(rill_schedule(w2, &b.task), 0);
    wait_at_least(&a.runs, 1);
    wait_at_least(&b.runs, 1);
    /* One thread for every worker, and not ours. */
    ck_assert(pthread_equal(a.thread, b.thread));
    ck_assert(!pthread_equal(a.thread, pthread_self()));
    rill_worker_free(w1);
    rill_worker_free(w2);
    rill_scheduler_unref(s);
    ck_assert_int_eq(load_long(&a.runs), 1);
    ck_assert_int_eq(load_long(&b.runs), 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * thread pool: order, seriality, pinning */

START_TEST(test_worker_runs_in_schedule_order)
{
    long base = live_allocations();
    long n = scaled(100000, 20000);
    rill_scheduler *s = rill_single_thread_new();
    ck_assert_ptr_nonnull(s);
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    lane l;
    lane_init(&l, n, 0);
    seq_task *tasks = calloc((size_t)n, sizeof *tasks);
    for (long i = 0; i < n; i++) {
        seq_init(&tasks[i], &l, w, i);
        ck_assert_int_eq(rill_schedule(w, &tasks[i].task), 0);
    }
    wait_at_least(&l.done, n);
    assert_lane_clean(&l, n);
    for (long i = 0; i < n; i++)
        ck_assert_int_eq(l.order[i], i);
    rill_worker_free(w);
    rill_scheduler_unref(s);
    ck_assert_int_eq(l.n, n);   /* nothing ran twice */
    free(tasks);
    lane_fini(&l);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_tasks_reschedule_themselves)
{
    /* 4 workers on 2 threads, each with one task that reschedules itself
     * from inside its run until 100000 runs have happened in all. */
    enum { W = 4 };
    long base = live_allocations();
    long per = scaled(100000, 20000) / W;
    rill_scheduler *s = rill_thread_pool_new(2);
    ck_assert_ptr_nonnull(s);
    rill_worker *w[W];
    lane l[W];
    seq_task q[W];
    for (int i = 0; i < W; i++) {
        w[i] = rill_worker_new(s);
        ck_assert_ptr_nonnull(w[i]);
        lane_init(&l[i], 0, 0);
        seq_init(&q[i], &l[i], w[i], i);
        q[i].again = per - 1;
    }
    for (int i = 0; i < W; i++)
        ck_assert_int_eq(rill_schedule(w[i], &q[i].task), 0);
    for (int i = 0; i < W; i++) {
        wait_at_least(&l[i].done, per);
        assert_lane_clean(&l[i], per);
        ck_assert_int_eq(q[i].again, 0);
        ck_assert_int_eq(rill_task_cancel(w[i], &q[i].task), ENOENT);
        rill_worker_free(w[i]);
    }
    rill_scheduler_unref(s);
    for (int i = 0; i < W; i++) {
        ck_assert_int_eq(l[i].n, per);
        lane_fini(&l[i]);
    }
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_rescheduled_task_queues_behind)
{
    /* Gate, then A B C queued behind it; A reschedules itself on its first
     * run, so it goes behind C: A B C A. */
    long base = live_allocations();
    rill_scheduler *s = rill_single_thread_new();
    ck_assert_ptr_nonnull(s);
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    lane l;
    lane_init(&l, 4, 0);
    seq_task q[3];
    for (int i = 0; i < 3; i++)
        seq_init(&q[i], &l, w, i);
    q[0].again = 1;
    gate g;
    gate_close(&g, w);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(rill_schedule(w, &q[i].task), 0);
    gate_open(&g);
    wait_at_least(&l.done, 4);
    assert_lane_clean(&l, 4);
    ck_assert_int_eq(l.order[0], 0);
    ck_assert_int_eq(l.order[1], 1);
    ck_assert_int_eq(l.order[2], 2);
    ck_assert_int_eq(l.order[3], 0);
    rill_scheduler_unref(s);
    rill_worker_free(w);
    ck_assert_int_eq(l.n, 4);
    lane_fini(&l);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A task that, on its first run, waits until the test has rescheduled it
 * from outside (the header: it may be scheduled again once its run started). */
typedef struct held {
    rill_task task;
    atomic_int inside, overlaps, started, released;
    atomic_long runs;
} held;

static void held_run(rill_task *t, int status)
{
    held *h = TASK_OF(t, held);
    if (atomic_fetch_add(&h->inside, 1) != 0)
        atomic_fetch_add(&h->overlaps, 1);
    if (atomic_fetch_add(&h->started, 1) == 0) {
        while (!atomic_load(&h->released))
            sched_yield();
    }
    atomic_fetch_sub(&h->inside, 1);
    atomic_fetch_add(&h->runs, 1);
}

START_TEST(test_reschedule_while_running)
{
    long base = live_allocations();
    rill_scheduler *s = rill_thread_pool_new(2);
    ck_assert_ptr_nonnull(s);
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    held h;
    memset(&h, 0, sizeof h);
    h.task.run = held_run;
    ck_assert_int_eq(rill_schedule(w, &h.task), 0);
    while (atomic_load(&h.started) == 0)
        sched_yield();
    /* Running, so not queued: it may be queued again, and cancelled. */
    ck_assert_int_eq(rill_task_cancel(w, &h.task), ENOENT);
    ck_assert_int_eq(rill_schedule(w, &h.task), 0);
    atomic_store(&h.released, 1);
    wait_at_least(&h.runs, 2);
    ck_assert_int_eq(load_int(&h.started), 2);
    ck_assert_int_eq(load_int(&h.overlaps), 0);
    rill_worker_free(w);
    rill_scheduler_unref(s);
    ck_assert_int_eq(load_long(&h.runs), 2);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Producers: NPROD threads scheduling onto NSHARED shared workers; each
 * task is tagged (producer, sequence number), so every worker can check
 * that each producer's tasks reach it in that producer's order. */
enum { NPROD = 4, NSHARED = 3 };

typedef struct producer {
    pthread_t tid;
    int index;
    long n;
    seq_task *tasks;
    rill_worker **workers;
    lane *lanes;
    atomic_int failures;
} producer;

static void *producer_main(void *arg)
{
    producer *p = arg;
    for (long i = 0; i < p->n; i++) {
        seq_task *q = &p->tasks[i];
        seq_init(q, &p->lanes[i % NSHARED], p->workers[i % NSHARED], i);
        q->producer = p->index;
        if (rill_schedule(p->workers[i % NSHARED], &q->task) != 0)
            atomic_fetch_add(&p->failures, 1);
    }
    return NULL;
}

static long expected_on(int worker, long per_producer)
{
    /* ids i < per_producer with i % NSHARED == worker, from each producer */
    return NPROD * ((per_producer - worker + NSHARED - 1) / NSHARED);
}

START_TEST(test_producers_to_workers)
{
    long base = live_allocations();
    long per = scaled(100000, 20000) / NPROD;
    rill_scheduler *s = rill_thread_pool_new(2);
    ck_assert_ptr_nonnull(s);
    rill_worker *w[NSHARED];
    lane l[NSHARED];
    for (int i = 0; i < NSHARED; i++) {
        w[i] = rill_worker_new(s);
        ck_assert_ptr_nonnull(w[i]);
        lane_init(&l[i], 0, NPROD);
    }
    producer p[NPROD];
    for (int i = 0; i < NPROD; i++) {
        p[i] = (producer){ .index = i, .n = per, .workers = w, .lanes = l };
        p[i].tasks = calloc((size_t)per, sizeof *p[i].tasks);
        ck_assert_int_eq(pthread_create(&p[i].tid, NULL, producer_main, &p[i]), 0);
    }
    for (int i = 0; i < NPROD; i++) {
        ck_assert_int_eq(pthread_join(p[i].tid, NULL), 0);
        ck_assert_int_eq(load_int(&p[i].failures), 0);
    }
    for (int i = 0; i < NSHARED; i++) {
        wait_at_least(&l[i].done, expected_on(i, per));
        assert_lane_clean(&l[i], expected_on(i, per));
        for (int j = 0; j < NPROD; j++)   /* each producer's last id reached it */
            ck_assert_int_eq(l[i].last[j], per - 1 - (per - 1 - i) % NSHARED);
    }
    for (int i = 0; i < NSHARED; i++)
        rill_worker_free(w[i]);
    rill_scheduler_unref(s);
    for (int i = 0; i < NPROD; i++)
        free(p[i].tasks);
    for (int i = 0; i < NSHARED; i++)
        lane_fini(&l[i]);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Parallelism: a task per worker that waits until all of them have
 * started. Only threads that really run side by side can meet; serial
 * workers would never leave the loop (the timeout would fail the test). */
typedef struct meet {
    rill_task task;
    atomic_int *arrived;
    int parties;
    pthread_t thread;
    atomic_long done;
} meet;

static void meet_run(rill_task *t, int status)
{
    meet *m = TASK_OF(t, meet);
    m->thread = pthread_self();
    atomic_fetch_add(m->arrived, 1);
    while (atomic_load(m->arrived) < m->parties)
        sched_yield();
    atomic_fetch_add(&m->done, 1);
}

START_TEST(test_workers_run_in_parallel)
{
    enum { N = 4 };
    long base = live_allocations();
    rill_scheduler *s = rill_thread_pool_new(N);
    ck_assert_ptr_nonnull(s);
    rill_worker *w[2 * N];
    for (int i = 0; i < 2 * N; i++) {
        w[i] = rill_worker_new(s);
        ck_assert_ptr_nonnull(w[i]);
    }
    atomic_int arrived = 0;
    meet m[N];
    for (int i = 0; i < N; i++) {
        memset(&m[i], 0, sizeof m[i]);
        m[i].task.run = meet_run;
        m[i].arrived = &arrived;
        m[i].parties = N;
        ck_assert_int_eq(rill_schedule(w[i], &m[i].task), 0);
    }
    for (int i = 0; i < N; i++)
        wait_at_least(&m[i].done, 1);
    for (int i = 0; i < N; i++) {
        ck_assert(!pthread_equal(m[i].thread, pthread_self()));
        for (int j = 0; j < i; j++)
            ck_assert(!pthread_equal(m[i].thread, m[j].thread));
    }
    /* Round robin: worker N + i shares worker i's thread. */
    flag f[N];
    for (int i = 0; i < N; i++) {
        flag_init(&f[i], NULL);
        ck_assert_int_eq(rill_schedule(w[N + i], &f[i].task), 0);
    }
    for (int i = 0; i < N; i++) {
        wait_at_least(&f[i].runs, 1);
        ck_assert(pthread_equal(f[i].thread, m[i].thread));
    }
    for (int i = 0; i < 2 * N; i++)
        rill_worker_free(w[i]);
    rill_scheduler_unref(s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_workers_pinned_across_idle)
{
    /* 6 workers on 3 threads, tasks interleaved across workers, in rounds
     * separated by idle time (the threads park in between): every worker's
     * tasks run in order, on one thread, always the same. */
    enum { WK = 6, ROUNDS = 5 };
    long base = live_allocations();
    long k = scaled(2000, 400);
    rill_scheduler *s = rill_thread_pool_new(3);
    ck_assert_ptr_nonnull(s);
    rill_worker *w[WK];
    lane l[WK];
    seq_task *tasks = calloc((size_t)(WK * k), sizeof *tasks);
    for (int i = 0; i < WK; i++) {
        w[i] = rill_worker_new(s);
        ck_assert_ptr_nonnull(w[i]);
        lane_init(&l[i], ROUNDS * k, 0);
    }
    for (int r = 0; r < ROUNDS; r++) {
        for (long j = 0; j < k; j++) {
            for (int i = 0; i < WK; i++) {
                seq_task *q = &tasks[i * k + j];
                seq_init(q, &l[i], w[i], r * k + j);
                ck_assert_int_eq(rill_schedule(w[i], &q->task), 0);
            }
        }
        for (int i = 0; i < WK; i++)
            wait_at_least(&l[i].done, (r + 1) * k);
        sleep_ns(2 * MS);
    }
    for (int i = 0; i < WK; i++) {
        assert_lane_clean(&l[i], ROUNDS * k);
        for (long j = 0; j < ROUNDS * k; j++)
            ck_assert_int_eq(l[i].order[j], j);
        rill_worker_free(w[i]);
    }
    rill_scheduler_unref(s);
    free(tasks);
    for (int i = 0; i < WK; i++)
        lane_fini(&l[i]);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * thread pool: delayed tasks and cancel */

START_TEST(test_delay_runs_no_earlier)
{
    static const uint64_t delays[] = { 0, 1 * MS, 3 * MS, 10 * MS };
    long base = live_allocations();
    rill_scheduler *s = rill_thread_pool_new(2);
    ck_assert_ptr_nonnull(s);
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    for (size_t i = 0; i < sizeof delays / sizeof *delays; i++) {
        flag f;
        flag_init(&f, s);
        uint64_t before = rill_scheduler_now(s);
        ck_assert_int_eq(rill_schedule_after(w, &f.task, delays[i]), 0);
        wait_at_least(&f.runs, 1);
        ck_assert_int_eq(load_int(&f.status), RILL_TASK_RUN);
        ck_assert_uint_ge(f.ran_at, before + delays[i]);
        ck_assert(!pthread_equal(f.thread, pthread_self()));
        ck_assert_int_eq(rill_task_cancel(w, &f.task), ENOENT);   /* it ran */
    }
    rill_worker_free(w);
    rill_scheduler_unref(s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_delays_run_in_due_order)
{
    /* Delays out of order, then one immediate task. Each task's due time is
     * known to lie in [before + d, after + d] (clock read around the call);
     * wherever two such intervals do not overlap, their order is fixed. */
    static const uint64_t delays[] = { 50 * MS, 10 * MS, 40 * MS, 20 * MS, 30 * MS, 0 };
    enum { N = sizeof delays / sizeof *delays };
    long base = live_allocations();
    rill_scheduler *s = rill_single_thread_new();
    ck_assert_ptr_nonnull(s);
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    lane l;
    lane_init(&l, N, 0);
    seq_task q[N];
    uint64_t lo[N], hi[N];
    for (int i = 0; i < N; i++) {
        seq_init(&q[i], &l, w, i);
        lo[i] = rill_scheduler_now(s) + delays[i];
        ck_assert_int_eq(rill_schedule_after(w, &q[i].task, delays[i]), 0);
        hi[i] = rill_scheduler_now(s) + delays[i];
    }
    wait_at_least(&l.done, N);
    assert_lane_clean(&l, N);
    int pos[N];
    for (int i = 0; i < N; i++)
        pos[i] = -1;
    for (int i = 0; i < N; i++) {
        ck_assert(l.order[i] >= 0 && l.order[i] < N);
        ck_assert_int_eq(pos[l.order[i]], -1);
        pos[l.order[i]] = i;
    }
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            if (hi[i] < lo[j])
                ck_assert_int_lt(pos[i], pos[j]);
    rill_worker_free(w);
    rill_scheduler_unref(s);
    lane_fini(&l);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_cancel_delayed)
{
    long base = live_allocations();
    rill_scheduler *s = rill_single_thread_new();
    ck_assert_ptr_nonnull(s);
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    flag never, later, unused;
    flag_init(&never, s);
    flag_init(&later, s);
    flag_init(&unused, s);

    ck_assert_int_eq(rill_task_cancel(w, &unused.task), ENOENT);   /* never scheduled */
    ck_assert_int_eq(rill_schedule_after(w, &never.task, HOUR), 0);
    ck_assert_int_eq(rill_task_cancel(w, &never.task), 0);
    ck_assert_int_eq(rill_task_cancel(w, &never.task), ENOENT);   /* no longer queued */

    /* A later delayed task runs; the cancelled one did not. */
    ck_assert_int_eq(rill_schedule_after(w, &later.task, 5 * MS), 0);
    wait_at_least(&later.runs, 1);
    ck_assert_int_eq(rill_task_cancel(w, &later.task), ENOENT);   /* it ran */
    ck_assert_int_eq(load_long(&never.runs), 0);

    /* A cancelled task can be scheduled again; it then runs once. */
    ck_assert_int_eq(rill_schedule_after(w, &never.task, 1 * MS), 0);
    wait_at_least(&never.runs, 1);
    ck_assert_int_eq(load_int(&never.status), RILL_TASK_RUN);

    /* A task cancelled before shutdown is not run by it either. */
    ck_assert_int_eq(rill_schedule_after(w, &unused.task, HOUR), 0);
    ck_assert_int_eq(rill_task_cancel(w, &unused.task), 0);
    rill_scheduler_unref(s);
    ck_assert_int_eq(load_long(&unused.runs), 0);
    ck_assert_int_eq(load_long(&never.runs), 1);
    ck_assert_int_eq(load_long(&later.runs), 1);
    rill_worker_free(w);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A task that tries to cancel itself while it runs. */
typedef struct self_cancel {
    rill_task task;
    rill_worker *w;
    atomic_int rc;
    atomic_long runs;
} self_cancel;

static void self_cancel_run(rill_task *t, int status)
{
    self_cancel *c = TASK_OF(t, self_cancel);
    atomic_store(&c->rc, rill_task_cancel(c->w, &c->task));
    atomic_fetch_add(&c->runs, 1);
}

START_TEST(test_cancel_ready_task)
{
    long base = live_allocations();
    rill_scheduler *s = rill_single_thread_new();
    ck_assert_ptr_nonnull(s);
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    flag a, b, c;
    flag_init(&a, NULL);
    flag_init(&b, NULL);
    flag_init(&c, NULL);
    self_cancel sc = { .task.run = self_cancel_run, .w = w };
    atomic_store(&sc.rc, -1);

    gate g;
    gate_close(&g, w);
    ck_assert_int_eq(rill_schedule(w, &a.task), 0);
    ck_assert_int_eq(rill_schedule(w, &b.task), 0);
    ck_assert_int_eq(rill_schedule(w, &c.task), 0);
    ck_assert_int_eq(rill_schedule(w, &sc.task), 0);
    /* Queue: a b c sc. Remove from the middle, then the head. */
    ck_assert_int_eq(rill_task_cancel(w, &b.task), 0);
    ck_assert_int_eq(rill_task_cancel(w, &a.task), 0);
    ck_assert_int_eq(rill_task_cancel(w, &b.task), ENOENT);
    gate_open(&g);
    wait_at_least(&sc.runs, 1);
    ck_assert_int_eq(load_int(&sc.rc), ENOENT);   /* running: not queued */
    ck_assert_int_eq(load_long(&c.runs), 1);

    /* The queue still works after removals (its tail stayed right). */
    ck_assert_int_eq(rill_schedule(w, &a.task), 0);
    wait_at_least(&a.runs, 1);
    rill_worker_free(w);
    rill_scheduler_unref(s);
    ck_assert_int_eq(load_long(&a.runs), 1);
    ck_assert_int_eq(load_long(&b.runs), 0);
    ck_assert_int_eq(load_long(&c.runs), 1);
    ck_assert_int_eq(load_long(&sc.runs), 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_cancel_tail_then_schedule)
{
    /* Removing the last queued task must leave the queue's tail right:
     * tasks queued afterwards still run, in order. */
    long base = live_allocations();
    rill_scheduler *s = rill_single_thread_new();
    ck_assert_ptr_nonnull(s);
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    lane l;
    lane_init(&l, 4, 0);
    seq_task q[4];
    for (int i = 0; i < 4; i++)
        seq_init(&q[i], &l, w, i);
    gate g;
    gate_close(&g, w);
    ck_assert_int_eq(rill_schedule(w, &q[0].task), 0);
    ck_assert_int_eq(rill_schedule(w, &q[1].task), 0);
    ck_assert_int_eq(rill_task_cancel(w, &q[1].task), 0);   /* the tail */
    ck_assert_int_eq(rill_schedule(w, &q[2].task), 0);
    ck_assert_int_eq(rill_task_cancel(w, &q[0].task), 0);   /* the head */
    ck_assert_int_eq(rill_task_cancel(w, &q[2].task), 0);   /* the only one */
    ck_assert_int_eq(rill_schedule(w, &q[3].task), 0);
    ck_assert_int_eq(rill_schedule(w, &q[1].task), 0);
    gate_open(&g);
    wait_at_least(&l.done, 2);
    rill_scheduler_unref(s);
    assert_lane_clean(&l, 2);
    ck_assert_int_eq(l.order[0], 3);
    ck_assert_int_eq(l.order[1], 1);
    rill_worker_free(w);
    lane_fini(&l);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_invalid_arguments)
{
    long base = live_allocations();
    rill_scheduler *s = rill_single_thread_new();
    ck_assert_ptr_nonnull(s);
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    flag good;
    flag_init(&good, NULL);
    rill_task norun = { 0 };

    ck_assert_int_eq(rill_schedule(NULL, &good.task), EINVAL);
    ck_assert_int_eq(rill_schedule(w, NULL), EINVAL);
    ck_assert_int_eq(rill_schedule(w, &norun), EINVAL);
    ck_assert_int_eq(rill_schedule_after(NULL, &good.task, MS), EINVAL);
    ck_assert_int_eq(rill_schedule_after(w, NULL, MS), EINVAL);
    ck_assert_int_eq(rill_schedule_after(w, &norun, MS), EINVAL);
    ck_assert_ptr_null(rill_worker_new(NULL));

    rill_worker *iw = rill_worker_new(rill_immediate());
    ck_assert_ptr_nonnull(iw);
    ck_assert_int_eq(rill_schedule(iw, &norun), EINVAL);
    ck_assert_int_eq(rill_schedule(iw, NULL), EINVAL);
    ck_assert_int_eq(rill_schedule_after(iw, &norun, MS), EINVAL);
    rill_worker_free(iw);

    /* Nothing was queued: shutdown (which runs what is queued) runs nothing. */
    rill_scheduler_unref(s);
    ck_assert_int_eq(load_long(&good.runs), 0);
    ck_assert_int_eq(rill_task_cancel(w, &norun), ENOENT);
    rill_worker_free(w);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * thread pool: shutdown */

/* What one worker has queued when its pool shuts down: behind a stop gate,
 * SK immediate tasks, a task that tries to reschedule itself, and two
 * delayed tasks an hour away. */
enum { SK = 5 };

typedef struct queued_at_stop {
    rill_worker *w;
    stop_gate gate;
    lane l, rl;
    seq_task q[SK], resched;
    flag d1, d2;
} queued_at_stop;

static void queue_for_stop(queued_at_stop *x, rill_scheduler *s)
{
    x->w = rill_worker_new(s);
    ck_assert_ptr_nonnull(x->w);
    stop_gate_close(&x->gate, x->w);
    lane_init(&x->l, SK, 0);
    lane_init(&x->rl, 0, 0);
    for (int j = 0; j < SK; j++) {
        seq_init(&x->q[j], &x->l, x->w, j);
        ck_assert_int_eq(rill_schedule(x->w, &x->q[j].task), 0);
    }
    seq_init(&x->resched, &x->rl, x->w, 0);
    x->resched.again = 1;
    ck_assert_int_eq(rill_schedule(x->w, &x->resched.task), 0);
    flag_init(&x->d1, NULL);
    flag_init(&x->d2, NULL);
    ck_assert_int_eq(rill_schedule_after(x->w, &x->d2.task, 2 * HOUR), 0);
    ck_assert_int_eq(rill_schedule_after(x->w, &x->d1.task, HOUR), 0);
}

/* Checks what shutdown did with it, then frees the worker. */
static void check_ran_at_stop(queued_at_stop *x)
{
    ck_assert_int_eq(load_int(&x->gate.refused_with), ECANCELED);
    ck_assert_int_eq(load_int(&x->gate.bad), 0);
    assert_lane_clean(&x->l, SK);
    for (int j = 0; j < SK; j++)
        ck_assert_int_eq(x->l.order[j], j);
    ck_assert_int_eq(x->rl.n, 1);
    ck_assert_int_eq(x->rl.bad_status, 0);
    ck_assert_int_eq(x->rl.resched_failures, 1);
    ck_assert_int_eq(x->rl.last_resched_rc, ECANCELED);
    ck_assert_int_eq(load_long(&x->d1.runs), 1);
    ck_assert_int_eq(load_long(&x->d2.runs), 1);
    ck_assert_int_eq(load_int(&x->d1.status), ECANCELED);
    ck_assert_int_eq(load_int(&x->d2.status), ECANCELED);
    rill_worker_free(x->w);
    lane_fini(&x->l);
    lane_fini(&x->rl);
}

START_TEST(test_shutdown_runs_queued_tasks)
{
    /* Two workers on two threads, each held by a stop gate until shutdown
     * has begun. The last unref must run the immediate tasks
     * (RILL_TASK_RUN, in order), the delayed ones at once (ECANCELED),
     * refuse the reschedule, and join: all of it done when it returns. */
    enum { WK = 2 };
    long base = live_allocations();
    rill_scheduler *s = rill_thread_pool_new(2);
    ck_assert_ptr_nonnull(s);
    queued_at_stop x[WK];
    for (int i = 0; i < WK; i++)
        queue_for_stop(&x[i], s);
    rill_scheduler_unref(s);
    for (int i = 0; i < WK; i++)
        check_ran_at_stop(&x[i]);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_held_worker_after_shutdown)
{
    long base = live_allocations();
    rill_scheduler *s = rill_thread_pool_new(2);
    ck_assert_ptr_nonnull(s);
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    flag before, after;
    flag_init(&before, NULL);
    flag_init(&after, NULL);
    ck_assert_int_eq(rill_schedule(w, &before.task), 0);
    rill_scheduler_unref(s);
    ck_assert_int_eq(load_long(&before.runs), 1);   /* joined: it ran */
    ck_assert_int_eq(load_int(&before.status), RILL_TASK_RUN);

    /* The worker still holds the pool's memory, but nothing is accepted. */
    ck_assert_int_eq(rill_schedule(w, &after.task), ECANCELED);
    ck_assert_int_eq(rill_schedule_after(w, &after.task, MS), ECANCELED);
    ck_assert_int_eq(rill_schedule_after(w, &after.task, 0), ECANCELED);
    ck_assert_int_eq(rill_task_cancel(w, &after.task), ENOENT);
    ck_assert_int_eq(rill_schedule(w, NULL), EINVAL);
    ck_assert_int_gt(live_allocations(), base);
    sleep_ns(MS);
    ck_assert_int_eq(load_long(&after.runs), 0);
    rill_worker_free(w);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A task that drops the last user reference from a pool thread, then frees
 * its own worker if asked (as its last use of it). */
typedef struct unref_task {
    rill_task task;
    rill_scheduler *s;
    rill_worker *w;          /* freed by the task, if set */
    atomic_int status;
    atomic_long runs;
} unref_task;

static void unref_run(rill_task *t, int status)
{
    unref_task *u = TASK_OF(t, unref_task);
    atomic_store(&u->status, status);
    rill_scheduler_unref(u->s);
    if (u->w)
        rill_worker_free(u->w);
    atomic_fetch_add(&u->runs, 1);
}

START_TEST(test_unref_inside_task)
{
    long base = live_allocations();
    rill_scheduler *s = rill_thread_pool_new(2);
    ck_assert_ptr_nonnull(s);
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    unref_task u = { .task.run = unref_run, .s = s, .w = w };
    /* Queued behind a gate, so this thread's rill_schedule has returned
     * before the task runs (test_task_frees_pool_during_schedule covers
     * the case where it has not). */
    gate g;
    gate_close(&g, w);
    ck_assert_int_eq(rill_schedule(w, &u.task), 0);
    gate_open(&g);
    wait_at_least(&u.runs, 1);
    ck_assert_int_eq(load_int(&u.status), RILL_TASK_RUN);
    /* No deadlock; the threads exit and release the memory by themselves. */
    ck_assert_int_eq(settle_allocations(base), base);
}
END_TEST

START_TEST(test_task_frees_pool_during_schedule)
{
    /* The task gives up the last reference and frees its worker, its last
     * use of it, while the rill_schedule that queued it may not have
     * returned yet: a stage's drain task ending its stream does this while
     * the upstream thread is still inside rill_schedule. rill_schedule must
     * not touch the pool once the task can run (the TSan and ASan builds
     * see it if it does). Repeated, as the window is small. */
    long base = live_allocations();
    int rounds = (int)scaled(200, 20);
    for (int i = 0; i < rounds; i++) {
        rill_scheduler *s = rill_thread_pool_new(1);
        ck_assert_ptr_nonnull(s);
        rill_worker *w = rill_worker_new(s);
        ck_assert_ptr_nonnull(w);
        unref_task u = { .task.run = unref_run, .s = s, .w = w };
        sleep_ns(MS / 10);   /* let the thread park: the path that signals */
        ck_assert_int_eq(rill_schedule(w, &u.task), 0);
        wait_at_least(&u.runs, 1);
        ck_assert_int_eq(settle_allocations(base), base);
    }
}
END_TEST

/* Behind the unref on the same worker: queued before it, it must still run
 * normally, and be refused when it tries to queue more. */
typedef struct late_task {
    rill_task task, extra;
    rill_worker *w;
    atomic_int status, rc;
    atomic_long runs, extra_runs;
} late_task;

static void late_extra_run(rill_task *t, int status)
{
    late_task *k = (late_task *)(void *)((char *)t - offsetof(late_task, extra));
    atomic_fetch_add(&k->extra_runs, 1);
}

static void late_run(rill_task *t, int status)
{
    late_task *k = TASK_OF(t, late_task);
    atomic_store(&k->status, status);
    atomic_store(&k->rc, rill_schedule(k->w, &k->extra));
    atomic_fetch_add(&k->runs, 1);
}

START_TEST(test_unref_inside_task_drains)
{
    long base = live_allocations();
    rill_scheduler *s = rill_thread_pool_new(2);
    ck_assert_ptr_nonnull(s);
    rill_worker *w1 = rill_worker_new(s), *w2 = rill_worker_new(s);
    ck_assert_ptr_nonnull(w1);
    ck_assert_ptr_nonnull(w2);
    unref_task u = { .task.run = unref_run, .s = s };
    late_task k = { .task.run = late_run, .extra.run = late_extra_run, .w = w1 };
    flag d;
    flag_init(&d, NULL);
    atomic_store(&k.rc, -1);

    gate g;
    gate_close(&g, w1);
    ck_assert_int_eq(rill_schedule(w1, &u.task), 0);
    ck_assert_int_eq(rill_schedule(w1, &k.task), 0);
    ck_assert_int_eq(rill_schedule_after(w2, &d.task, HOUR), 0);
    gate_open(&g);

    wait_at_least(&u.runs, 1);
    wait_at_least(&k.runs, 1);
    wait_at_least(&d.runs, 1);   /* an hour early: shutdown ran it */
    ck_assert_int_eq(load_int(&u.status), RILL_TASK_RUN);
    ck_assert_int_eq(load_int(&k.status), RILL_TASK_RUN);
    ck_assert_int_eq(load_int(&k.rc), ECANCELED);
    ck_assert_int_eq(load_int(&d.status), ECANCELED);
    ck_assert_int_eq(rill_schedule(w2, &d.task), ECANCELED);
    rill_worker_free(w1);
    rill_worker_free(w2);
    ck_assert_int_eq(settle_allocations(base), base);
    ck_assert_int_eq(load_long(&k.extra_runs), 0);
    ck_assert_int_eq(load_long(&d.runs), 1);
}
END_TEST

/* ------------------------------------------------------------------------
 * immediate */

/* A task on the immediate scheduler that notes its nesting depth and the
 * order of events, and may schedule or cancel other tasks. */
static _Thread_local int depth;

typedef struct itask {
    rill_task task;
    rill_worker *w;
    char name;
    char *log;               /* events, appended: name on entry, '-' on exit */
    size_t *len;
    struct itask *spawn[2];  /* scheduled from inside, in order */
    struct itask *cancel;    /* scheduled from inside, then cancelled */
    int max_depth, spawned_ran_inside, rc_sum;
    long runs;
} itask;

static void itask_log(itask *t, char c)
{
    t->log[(*t->len)++] = c;
    t->log[*t->len] = '\0';
}

static void itask_run(rill_task *rt, int status)
{
    itask *t = TASK_OF(rt, itask);
    if (++depth > t->max_depth)
        t->max_depth = depth;
    t->runs++;
    itask_log(t, t->name);
    for (int i = 0; i < 2 && t->spawn[i]; i++) {
        t->rc_sum += rill_schedule(t->w, &t->spawn[i]->task);
        t->spawned_ran_inside += t->spawn[i]->runs != 0;
    }
    if (t->cancel) {
        t->rc_sum += rill_schedule(t->w, &t->cancel->task);
        t->rc_sum += rill_task_cancel(t->w, &t->cancel->task);
        t->rc_sum += rill_task_cancel(t->w, &t->cancel->task) == ENOENT ? 0 : 1000;
    }
    itask_log(t, '-');
    depth--;
}

static void itask_init(itask *t, rill_worker *w, char name, char *log, size_t *len)
{
    memset(t, 0, sizeof *t);
    t->task.run = itask_run;
    t->w = w;
    t->name = name;
    t->log = log;
    t->len = len;
}

START_TEST(test_immediate_runs_inline)
{
    long base = live_allocations();
    rill_scheduler *s = rill_immediate();
    ck_assert_ptr_nonnull(s);
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    ck_assert_ptr_eq(w->scheduler, s);
    flag f;
    flag_init(&f, NULL);
    ck_assert_int_eq(rill_task_cancel(w, &f.task), ENOENT);   /* never scheduled */
    ck_assert_int_eq(rill_schedule(w, &f.task), 0);
    /* It already ran, inside rill_schedule, on this thread. */
    ck_assert_int_eq(load_long(&f.runs), 1);
    ck_assert(pthread_equal(f.thread, pthread_self()));
    ck_assert_int_eq(load_int(&f.status), RILL_TASK_RUN);
    ck_assert_int_eq(rill_task_cancel(w, &f.task), ENOENT);   /* it ran */
    ck_assert_int_eq(rill_schedule(w, &f.task), 0);
    ck_assert_int_eq(load_long(&f.runs), 2);
    rill_worker_free(w);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_immediate_trampoline)
{
    /* A spawns B and C; C spawns D. None may run inside its parent: the
     * log must read A- B- C- D-, every run at depth 1. */
    long base = live_allocations();
    rill_worker *w = rill_worker_new(rill_immediate());
    ck_assert_ptr_nonnull(w);
    char log[32];
    size_t len = 0;
    itask a, b, c, d;
    itask_init(&a, w, 'A', log, &len);
    itask_init(&b, w, 'B', log, &len);
    itask_init(&c, w, 'C', log, &len);
    itask_init(&d, w, 'D', log, &len);
    a.spawn[0] = &b;
    a.spawn[1] = &c;
    c.spawn[0] = &d;
    ck_assert_int_eq(rill_schedule(w, &a.task), 0);
    ck_assert_str_eq(log, "A-B-C-D-");
    ck_assert_int_eq(a.spawned_ran_inside + c.spawned_ran_inside, 0);
    ck_assert_int_eq(a.rc_sum + c.rc_sum, 0);
    ck_assert_int_eq(a.max_depth, 1);
    ck_assert_int_eq(b.max_depth, 1);
    ck_assert_int_eq(c.max_depth, 1);
    ck_assert_int_eq(d.max_depth, 1);
    ck_assert_int_eq(a.runs + b.runs + c.runs + d.runs, 4);
    ck_assert_int_eq(depth, 0);
    rill_worker_free(w);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_immediate_cancel_queued)
{
    /* From inside A: queue B, cancel it (0), cancel again (ENOENT). B never
     * runs; C, spawned after, still does. */
    long base = live_allocations();
    rill_worker *w = rill_worker_new(rill_immediate());
    ck_assert_ptr_nonnull(w);
    char log[32];
    size_t len = 0;
    itask a, b, c;
    itask_init(&a, w, 'A', log, &len);
    itask_init(&b, w, 'B', log, &len);
    itask_init(&c, w, 'C', log, &len);
    a.cancel = &b;
    a.spawn[0] = &c;
    ck_assert_int_eq(rill_schedule(w, &a.task), 0);
    ck_assert_int_eq(a.rc_sum, 0);
    ck_assert_int_eq(b.runs, 0);
    ck_assert_str_eq(log, "A-C-");
    ck_assert_int_eq(rill_task_cancel(w, &b.task), ENOENT);
    rill_worker_free(w);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Reschedules itself `left` times; notes nesting depth and how far the
 * stack moved between runs (a recursion would move it on every run). */
typedef struct spinner {
    rill_task task;
    rill_worker *w;
    long left, runs;
    int max_depth, failures;
    uintptr_t lo, hi;        /* frame addresses seen */
} spinner;

static void spinner_run(rill_task *t, int status)
{
    spinner *p = TASK_OF(t, spinner);
    uintptr_t frame = (uintptr_t)__builtin_frame_address(0);
    if (++depth > p->max_depth)
        p->max_depth = depth;
    if (p->runs++ == 0 || frame < p->lo)
        p->lo = frame;
    if (frame > p->hi)
        p->hi = frame;
    if (status != RILL_TASK_RUN)
        p->failures++;
    if (p->left > 0) {
        p->left--;
        if (rill_schedule(p->w, &p->task) != 0)
            p->failures++;
    }
    depth--;
}

static void spinner_init(spinner *p, rill_worker *w, long runs)
{
    memset(p, 0, sizeof *p);
    p->task.run = spinner_run;
    p->w = w;
    p->left = runs - 1;
}

START_TEST(test_immediate_million_reschedules)
{
    long base = live_allocations();
    long n = scaled(1000000, 20000);
    rill_worker *w = rill_worker_new(rill_immediate());
    ck_assert_ptr_nonnull(w);
    spinner p;
    spinner_init(&p, w, n);
    ck_assert_int_eq(rill_schedule(w, &p.task), 0);
    /* All of them ran inside that one call, one after another. */
    ck_assert_int_eq(p.runs, n);
    ck_assert_int_eq(p.left, 0);
    ck_assert_int_eq(p.failures, 0);
    ck_assert_int_eq(p.max_depth, 1);
    ck_assert_uint_le(p.hi - p.lo, 512);
    rill_worker_free(w);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static void *immediate_spinner_main(void *arg)
{
    spinner *p = arg;
    rill_worker *w = rill_worker_new(rill_immediate());
    p->w = w;
    if (!w || rill_schedule(w, &p->task) != 0)
        p->failures++;
    rill_worker_free(w);
    return NULL;
}

START_TEST(test_immediate_per_thread)
{
    /* Each thread has its own trampoline: tasks of two threads scheduled at
     * the same time each run to the end on their own thread. */
    enum { T = 3 };
    long base = live_allocations();
    long n = scaled(100000, 10000);
    spinner p[T];
    pthread_t tid[T];
    for (int i = 0; i < T; i++) {
        spinner_init(&p[i], NULL, n);
        ck_assert_int_eq(pthread_create(&tid[i], NULL, immediate_spinner_main, &p[i]), 0);
    }
    for (int i = 0; i < T; i++) {
        ck_assert_int_eq(pthread_join(tid[i], NULL), 0);
        ck_assert_int_eq(p[i].runs, n);
        ck_assert_int_eq(p[i].failures, 0);
        ck_assert_int_eq(p[i].max_depth, 1);
    }
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_immediate_ref_unref)
{
    long base = live_allocations();
    rill_scheduler *s = rill_immediate();
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_eq(rill_immediate(), s);
    ck_assert_ptr_eq(rill_scheduler_ref(s), s);
    for (int i = 0; i < 5; i++)
        rill_scheduler_unref(s);   /* more unrefs than refs: harmless */
    ck_assert_ptr_eq(rill_immediate(), s);
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    flag f;
    flag_init(&f, NULL);
    ck_assert_int_eq(rill_schedule(w, &f.task), 0);   /* never shut down */
    ck_assert_int_eq(load_long(&f.runs), 1);
    rill_worker_free(w);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Schedules `child` after a delay from inside its run. */
typedef struct delayer {
    rill_task task;
    rill_worker *w;
    flag *child;
    uint64_t delay, before;
    int rc, child_ran_inside;
} delayer;

static void delayer_run(rill_task *t, int status)
{
    delayer *d = TASK_OF(t, delayer);
    d->before = rill_scheduler_now(d->w->scheduler);
    d->rc = rill_schedule_after(d->w, &d->child->task, d->delay);
    d->child_ran_inside = atomic_load(&d->child->runs) != 0;
}

START_TEST(test_immediate_delay)
{
    long base = live_allocations();
    rill_scheduler *s = rill_immediate();
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    flag f;
    flag_init(&f, s);
    uint64_t before = rill_scheduler_now(s);
    ck_assert_int_eq(rill_schedule_after(w, &f.task, 3 * MS), 0);
    /* The call slept, then ran it. */
    ck_assert_int_eq(load_long(&f.runs), 1);
    ck_assert_uint_ge(f.ran_at, before + 3 * MS);
    ck_assert_uint_ge(rill_scheduler_now(s), f.ran_at);
    ck_assert_int_eq(rill_task_cancel(w, &f.task), ENOENT);

    /* From inside a task: queued behind it, still no earlier than due. */
    flag g;
    flag_init(&g, s);
    delayer d = { .task.run = delayer_run, .w = w, .child = &g, .delay = 2 * MS };
    ck_assert_int_eq(rill_schedule(w, &d.task), 0);
    ck_assert_int_eq(d.rc, 0);
    ck_assert_int_eq(d.child_ran_inside, 0);
    ck_assert_int_eq(load_long(&g.runs), 1);
    ck_assert_uint_ge(g.ran_at, d.before + 2 * MS);
    rill_worker_free(w);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * clocks */

static void assert_monotonic(rill_scheduler *s, long n)
{
    uint64_t prev = rill_scheduler_now(s);
    ck_assert_uint_gt(prev, 0);
    for (long i = 0; i < n; i++) {
        uint64_t now = rill_scheduler_now(s);
        ck_assert_uint_ge(now, prev);
        prev = now;
    }
}

START_TEST(test_now_monotonic)
{
    long base = live_allocations();
    long n = scaled(100000, 10000);
    rill_scheduler *s = rill_thread_pool_new(1);
    ck_assert_ptr_nonnull(s);
    assert_monotonic(s, n);
    assert_monotonic(rill_immediate(), n);
    /* Both read CLOCK_MONOTONIC: a pool's reading is never behind an
     * earlier immediate one, and vice versa. */
    uint64_t a = rill_scheduler_now(rill_immediate());
    uint64_t b = rill_scheduler_now(s);
    uint64_t c = rill_scheduler_now(rill_immediate());
    ck_assert_uint_ge(b, a);
    ck_assert_uint_ge(c, b);
    /* Real time passes on it: a 2 ms sleep shows at least 2 ms. */
    uint64_t t0 = rill_scheduler_now(s);
    sleep_ns(2 * MS);
    ck_assert_uint_ge(rill_scheduler_now(s), t0 + 2 * MS);
    rill_scheduler_unref(s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------ */

static TCase *timed_case(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    return tc;
}

Suite *schedulers_suite(void)
{
    Suite *s = suite_create("schedulers");

    TCase *tc = timed_case("pool");
    tcase_add_test(tc, test_pool_zero_threads);
    tcase_add_test(tc, test_pool_ref_unref);
    tcase_add_test(tc, test_pool_unused);
    tcase_add_test(tc, test_single_thread);
    tcase_add_test(tc, test_worker_runs_in_schedule_order);
    tcase_add_test(tc, test_tasks_reschedule_themselves);
    tcase_add_test(tc, test_rescheduled_task_queues_behind);
    tcase_add_test(tc, test_reschedule_while_running);
    tcase_add_test(tc, test_producers_to_workers);
    tcase_add_test(tc, test_workers_run_in_parallel);
    tcase_add_test(tc, test_workers_pinned_across_idle);
    suite_add_tcase(s, tc);

    tc = timed_case("pool_delay_cancel");
    tcase_add_test(tc, test_delay_runs_no_earlier);
    tcase_add_test(tc, test_delays_run_in_due_order);
    tcase_add_test(tc, test_cancel_delayed);
    tcase_add_test(tc, test_cancel_ready_task);
    tcase_add_test(tc, test_cancel_tail_then_schedule);
    tcase_add_test(tc, test_invalid_arguments);
    suite_add_tcase(s, tc);

    tc = timed_case("pool_shutdown");
    tcase_add_test(tc, test_shutdown_runs_queued_tasks);
    tcase_add_test(tc, test_held_worker_after_shutdown);
    tcase_add_test(tc, test_unref_inside_task);
    tcase_add_test(tc, test_unref_inside_task_drains);
    tcase_add_test(tc, test_task_frees_pool_during_schedule);
    suite_add_tcase(s, tc);

    tc = timed_case("immediate");
    tcase_add_test(tc, test_immediate_runs_inline);
    tcase_add_test(tc, test_immediate_trampoline);
    tcase_add_test(tc, test_immediate_cancel_queued);
    tcase_add_test(tc, test_immediate_million_reschedules);
    tcase_add_test(tc, test_immediate_per_thread);
    tcase_add_test(tc, test_immediate_ref_unref);
    tcase_add_test(tc, test_immediate_delay);
    suite_add_tcase(s, tc);

    tc = timed_case("clock");
    tcase_add_test(tc, test_now_monotonic);
    suite_add_tcase(s, tc);
    return s;
}
