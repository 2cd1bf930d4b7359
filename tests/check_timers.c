/* tests/check_timers.c — rill_interval, rill_timer and rill_delay.
 *
 * Most cases run on a virtual-time scheduler, so every tick and every
 * delayed item is checked at its exact time: the recorder's on_next hook
 * writes the clock into a log. Two helpers stand in for real code:
 *  - a manual source, which the test drives by hand (push an item at a
 *    chosen virtual time, complete, fail, release);
 *  - a proxy scheduler around a virtual-time one, which can refuse tasks
 *    or workers (ECANCELED paths) and can shift its clock (a late tick,
 *    to check that interval does not drift).
 * A few smoke cases run on a real single-thread scheduler, with no timing
 * assertions.
 */
#include "recorder.h"
#include "suites.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int quick(void)
{
    return getenv("RILL_TEST_QUICK") != NULL;
}

/* ---------------------------------------------------------------- clock log */

#define LOG_MAX 2048

typedef struct clock_log {
    rill_scheduler *sched;     /* whose clock to read */
    uint64_t t[LOG_MAX];       /* the clock at each on_next */
    size_t n;
    pthread_t thread;          /* the thread of the last on_next */
    uint64_t skew_step;        /* proxy only: every on_next "takes" this long */
    uint64_t stall_once;       /* proxy only: the next on_next "takes" this long */
    void *proxy;               /* proxy whose clock on_next moves */
} clock_log;

static void proxy_add_skew(void *proxy, uint64_t ns);

static void log_hook(recorder *r, void *item)
{
    clock_log *log = r->user;
    if (log->n < LOG_MAX)
        log->t[log->n++] = rill_scheduler_now(log->sched);
    log->thread = pthread_self();
    if (log->proxy) {
        proxy_add_skew(log->proxy, log->skew_step + log->stall_once);
        log->stall_once = 0;
    }
}

static clock_log *log_new(rill_scheduler *s)
{
    clock_log *log = calloc(1, sizeof *log);
    ck_assert_ptr_nonnull(log);
    log->sched = s;
    return log;
}

/* A recorder that logs the clock of s at each on_next, set up but not yet
 * subscribed (so the test may adjust it first). */
static recorder *rec_timed(uint64_t initial_request, clock_log *log)
{
    recorder *r = rec_new(initial_request);
    r->user = log;
    r->on_next_hook = log_hook;
    return r;
}

static recorder *run_timed(rill_publisher *p, uint64_t initial_request, clock_log *log)
{
    recorder *r = rec_timed(initial_request, log);
    rill_subscribe(p, rec_subscriber(r));
    return r;
}

static void advance(rill_scheduler *vt, uint64_t ns)
{
    ck_assert_int_eq(rill_virtual_time_advance(vt, ns), 0);
}

/* ---------------------------------------------------------------- discard log */

typedef struct discards {
    void *items[LOG_MAX];
    size_t n;
} discards;

static void collect(void *ctx, void *item)
{
    discards *d = ctx;
    if (d->n < LOG_MAX)
        d->items[d->n++] = item;
}

/* ---------------------------------------------------------------- manual source */

/* A single-subscriber publisher the test drives by hand. Its memory is the
 * test's (plain malloc); the library only sees the publisher base. */
typedef struct manual {
    rill_publisher base;
    rill_subscription sub;
    rill_subscriber *down;
    uint64_t requested;        /* total requested by the stage under test */
    int cancels;
    int destroyed;
} manual;

static void manual_request(rill_subscription *s, uint64_t n)
{
    manual *m = (manual *)(void *)((char *)s - offsetof(manual, sub));
    m->requested += n;
}

static void manual_cancel(rill_subscription *s)
{
    manual *m = (manual *)(void *)((char *)s - offsetof(manual, sub));
    m->cancels++;
}

static const struct rill_subscription_ops manual_sub_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = manual_request,
    .cancel = manual_cancel,
};

static void manual_subscribe(rill_publisher *self, rill_subscriber *s)
{
    manual *m = (manual *)self;
    ck_assert_ptr_null(m->down);
    m->down = s;
    rill_deliver_subscribe(s, &m->sub);
}

static void manual_destroy(rill_publisher *self)
{
    ((manual *)self)->destroyed = 1;
}

static const struct rill_publisher_ops manual_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = manual_subscribe,
    .destroy = manual_destroy,
};

static manual *manual_new(void)
{
    manual *m = calloc(1, sizeof *m);
    ck_assert_ptr_nonnull(m);
    rill_publisher_init(&m->base, &manual_ops);
    m->sub.ops = &manual_sub_ops;
    return m;
}

static void manual_push(manual *m, intptr_t v)
{
    rill_deliver_next(m->down, (void *)v);
}

static void manual_release(manual *m)
{
    rill_deliver_release(m->down);
    m->down = NULL;
}

/* ---------------------------------------------------------------- proxy scheduler */

/* Forwards to an inner virtual-time scheduler. `refuse` makes schedule
 * return ECANCELED (as a shut-down scheduler does); `refuse_workers` makes
 * worker_new fail with ECANCELED; `skew` is added to the inner clock. */
typedef struct proxy {
    rill_scheduler base;
    rill_scheduler *inner;     /* reference */
    int refuse;
    int refuse_workers;
    uint64_t skew;
} proxy;

typedef struct proxy_worker {
    rill_worker base;
    rill_worker *inner;
} proxy_worker;

static rill_worker *proxy_worker_new(rill_scheduler *self)
{
    proxy *p = (proxy *)self;
    if (p->refuse_workers) {
        errno = ECANCELED;
        return NULL;
    }
    proxy_worker *w = calloc(1, sizeof *w);
    ck_assert_ptr_nonnull(w);
    w->inner = rill_worker_new(p->inner);
    ck_assert_ptr_nonnull(w->inner);
    return &w->base;
}

static void proxy_worker_free(rill_scheduler *self, rill_worker *w)
{
    rill_worker_free(((proxy_worker *)w)->inner);
    free(w);
}

static uint64_t proxy_now(rill_scheduler *self)
{
    proxy *p = (proxy *)self;
    return rill_scheduler_now(p->inner) + p->skew;
}

static int proxy_schedule(rill_scheduler *self, rill_worker *w, rill_task *t, uint64_t due)
{
    proxy *p = (proxy *)self;
    rill_worker *in = ((proxy_worker *)w)->inner;
    if (p->refuse)
        return ECANCELED;
    if (due == 0)
        return rill_schedule(in, t);
    uint64_t now = proxy_now(self);
    return rill_schedule_after(in, t, due > now ? due - now : 0);
}

static int proxy_cancel(rill_scheduler *self, rill_worker *w, rill_task *t)
{
    return rill_task_cancel(((proxy_worker *)w)->inner, t);
}

static void proxy_shutdown(rill_scheduler *self)
{
}

static void proxy_destroy(rill_scheduler *self)
{
    rill_scheduler_unref(((proxy *)self)->inner);
    free(self);
}

static const struct rill_scheduler_ops proxy_ops = {
    .version = RILL_SCHEDULER_OPS_VERSION,
    .worker_new = proxy_worker_new,
    .worker_free = proxy_worker_free,
    .schedule = proxy_schedule,
    .cancel = proxy_cancel,
    .now = proxy_now,
    .shutdown = proxy_shutdown,
    .destroy = proxy_destroy,
};

static proxy *proxy_new(rill_scheduler *inner)
{
    proxy *p = calloc(1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    rill_scheduler_init(&p->base, &proxy_ops);
    p->inner = rill_scheduler_ref(inner);
    return p;
}

static void proxy_add_skew(void *p, uint64_t ns)
{
    ((proxy *)p)->skew += ns;
}

/* ---------------------------------------------------------------- real threads */

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static void sleep_us(long us)
{
    struct timespec ts = { 0, us * 1000L };
    nanosleep(&ts, NULL);
}

/* Waits (within the case's timeout) for the recorder's release, and for
 * cb_release to have left the recorder: it sets released_flag before its
 * last touch of r (the in_signal decrement), so freeing r on released_flag
 * alone could race with that decrement. */
static void wait_released(recorder *r)
{
    while (!atomic_load(&r->released_flag) || atomic_load(&r->in_signal) != 0)
        sleep_ms(1);
}

/* After the last unref, a subscription may still be freeing itself (and a
 * detached pool thread its pool) on another thread: wait for the count. */
static void wait_allocations(long base)
{
    for (int i = 0; i < 10000 && live_allocations() != base; i++)
        sleep_ms(1);
    ck_assert_int_eq(live_allocations(), base);
}

/* ====================================================================== interval */

START_TEST(interval_ticks_every_period)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_interval(100, vt);
    ck_assert_ptr_nonnull(p);
    clock_log *log = log_new(vt);
    recorder *r = run_timed(p, RILL_UNBOUNDED, log);
    ck_assert_int_eq(r->subscribes, 1);
    advance(vt, 99);
    ck_assert_uint_eq(r->nitems, 0);                /* the first tick is one period away */
    advance(vt, 1);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_uint_eq(log->t[0], 100);
    advance(vt, 250);
    ck_assert_uint_eq(rill_scheduler_now(vt), 350);
    ck_assert_uint_eq(r->nitems, 3);
    advance(vt, 50);
    ck_assert_uint_eq(r->nitems, 4);
    for (size_t i = 0; i < 4; i++) {
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i);
        ck_assert_uint_eq(log->t[i], 100 * (i + 1));
    }
    ck_assert_int_eq(r->completes + r->errors + r->releases, 0);   /* never completes */
    rill_cancel(r->sub);
    advance(vt, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);   /* the timer was cancelled */
    advance(vt, 1000);
    ck_assert_uint_eq(r->nitems, 4);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(log);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(interval_overflow_when_consumer_stops_requesting)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_interval(100, vt);
    clock_log *log = log_new(vt);
    recorder *r = run_timed(p, 2, log);
    advance(vt, 299);
    ck_assert_uint_eq(r->nitems, 2);
    ck_assert_int_eq(r->errors, 0);
    advance(vt, 1);                                   /* the third tick finds no demand */
    ck_assert_uint_eq(r->nitems, 2);
    ck_assert_uint_eq(log->t[0], 100);
    ck_assert_uint_eq(log->t[1], 200);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EOVERFLOW);
    ck_assert_ptr_nonnull(strstr(r->error_message, "could not keep up"));
    ck_assert_int_eq(r->completes, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    advance(vt, 1000);
    ck_assert_uint_eq(r->nitems, 2);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(log);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(interval_late_request_before_tick_is_enough)
{
    /* Demand that arrives between ticks counts for the next tick. */
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_interval(100, vt);
    recorder *r = rec_run(p, 1);
    advance(vt, 150);
    ck_assert_uint_eq(r->nitems, 1);
    rec_request(r, 1);
    advance(vt, 100);
    ck_assert_uint_eq(r->nitems, 2);
    ck_assert_int_eq(r->errors, 0);
    advance(vt, 100);                                 /* t=300: no demand */
    ck_assert_int_eq(r->error_code, EOVERFLOW);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(interval_request_inside_on_next_keeps_up)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_interval(100, vt);
    clock_log *log = log_new(vt);
    recorder *r = rec_timed(1, log);
    r->request_each = 1;
    rill_subscribe(p, rec_subscriber(r));
    advance(vt, 1000);
    ck_assert_uint_eq(r->nitems, 10);
    for (size_t i = 0; i < 10; i++) {
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i);
        ck_assert_uint_eq(log->t[i], 100 * (i + 1));
    }
    ck_assert_int_eq(r->errors, 0);
    rill_cancel(r->sub);
    advance(vt, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(log);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(interval_cancel_inside_on_next)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_interval(100, vt);
    recorder *r = rec_new(RILL_UNBOUNDED);
    r->cancel_after = 3;
    rill_subscribe(p, rec_subscriber(r));
    advance(vt, 1000);
    ck_assert_uint_eq(r->nitems, 3);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(interval_cancel_before_first_tick)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_interval(100, vt);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    advance(vt, 50);
    rill_cancel(r->sub);
    rill_cancel(r->sub);                              /* idempotent */
    ck_assert_int_eq(r->releases, 0);                 /* released on the worker */
    advance(vt, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    advance(vt, 1000);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(interval_cancel_inside_on_subscribe)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_interval(100, vt);
    recorder *r = rec_new(0);
    rill_subscribe(p, rec_subscriber(r));
    rill_cancel(r->sub);                              /* before the first drain ran */
    advance(vt, 500);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(interval_request_zero)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_interval(100, vt);
    recorder *r = rec_run(p, 5);
    advance(vt, 200);
    ck_assert_uint_eq(r->nitems, 2);
    rill_request(r->sub, 0);
    advance(vt, 0);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EINVAL);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    advance(vt, 1000);
    ck_assert_uint_eq(r->nitems, 2);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(interval_does_not_drift)
{
    /* Each on_next "takes" 30 ns on the proxy's clock, so every tick after
     * the first starts 30 ns late. Ticks scheduled from the intended time
     * still fall at 100, 200, 300, 400; ticks scheduled a period after
     * each late run would fall at 100, 230, 360, 490. */
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    proxy *px = proxy_new(vt);
    rill_publisher *p = rill_interval(100, &px->base);
    clock_log *log = log_new(&px->base);
    log->proxy = px;
    log->skew_step = 30;
    recorder *r = run_timed(p, RILL_UNBOUNDED, log);
    advance(vt, 310);
    ck_assert_uint_eq(r->nitems, 4);
    for (size_t i = 0; i < 4; i++)
        ck_assert_uint_eq(log->t[i], 100 * (i + 1));
    rill_cancel(r->sub);
    advance(vt, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(&px->base);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(log);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(interval_catches_up_after_a_long_stall)
{
    /* The first on_next "takes" 350 ns: the ticks due meanwhile (200, 300,
     * 400) fire at once, then the schedule is back on the period (500,
     * 600), with no shift. */
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    proxy *px = proxy_new(vt);
    rill_publisher *p = rill_interval(100, &px->base);
    clock_log *log = log_new(&px->base);
    log->proxy = px;
    log->stall_once = 350;
    recorder *r = run_timed(p, RILL_UNBOUNDED, log);
    advance(vt, 100);
    ck_assert_uint_eq(r->nitems, 4);
    advance(vt, 150);
    ck_assert_uint_eq(r->nitems, 6);
    static const uint64_t want[6] = { 100, 450, 450, 450, 500, 600 };
    for (size_t i = 0; i < 6; i++) {
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i);
        ck_assert_uint_eq(log->t[i], want[i]);
    }
    rill_cancel(r->sub);
    advance(vt, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(&px->base);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(log);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(interval_each_subscription_has_its_own_clock)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_interval(100, vt);
    clock_log *l1 = log_new(vt), *l2 = log_new(vt);
    recorder *r1 = run_timed(p, RILL_UNBOUNDED, l1);
    advance(vt, 50);
    recorder *r2 = run_timed(p, RILL_UNBOUNDED, l2);
    advance(vt, 300);
    ck_assert_uint_eq(r1->nitems, 3);
    ck_assert_uint_eq(r2->nitems, 3);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(rec_int(r1, i), (intptr_t)i);
        ck_assert_int_eq(rec_int(r2, i), (intptr_t)i);
        ck_assert_uint_eq(l1->t[i], 100 * (i + 1));
        ck_assert_uint_eq(l2->t[i], 50 + 100 * (i + 1));
    }
    rill_cancel(r1->sub);
    rill_cancel(r2->sub);
    advance(vt, 0);
    ck_assert_int_eq(r1->releases + r2->releases, 2);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert(rec_ok(r1));
    ck_assert(rec_ok(r2));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r1);
    rec_free(r2);
    free(l1);
    free(l2);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(interval_refused_at_subscribe)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    proxy *px = proxy_new(vt);
    px->refuse = 1;
    rill_publisher *p = rill_interval(100, &px->base);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_int_eq(r->errors, 1);                   /* at once, inside subscribe */
    ck_assert_int_eq(r->error_code, ECANCELED);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(&px->base);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static void refuse_from_now(recorder *r, void *item)
{
    ((proxy *)r->user)->refuse = 1;
}

START_TEST(interval_refused_at_next_tick)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    proxy *px = proxy_new(vt);
    rill_publisher *p = rill_interval(100, &px->base);
    recorder *r = rec_new(RILL_UNBOUNDED);
    r->user = px;
    r->on_next_hook = refuse_from_now;
    rill_subscribe(p, rec_subscriber(r));
    advance(vt, 100);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, ECANCELED);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(&px->base);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(interval_worker_refused)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    proxy *px = proxy_new(vt);
    px->refuse_workers = 1;
    rill_publisher *p = rill_interval(100, &px->base);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_int_eq(r->subscribes, 1);
    ck_assert_int_eq(r->error_code, ECANCELED);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(&px->base);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(time_bad_arguments)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    errno = 0;
    ck_assert_ptr_null(rill_interval(0, vt));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(rill_interval(100, NULL));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(rill_timer(100, NULL));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(rill_delay(NULL, 100, vt));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(rill_delay(rill_range(1, 3), 100, NULL));   /* consumes the range */
    ck_assert_int_eq(errno, EINVAL);
    rill_scheduler_unref(vt);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(interval_thread_smoke)
{
    long base = live_allocations();
    rill_scheduler *st = rill_single_thread_new();
    rill_publisher *p = rill_interval(200000, st);   /* 0.2 ms */
    clock_log *log = log_new(st);
    recorder *r = rec_timed(1, log);
    r->request_each = 1;
    r->cancel_after = 5;
    rill_subscribe(p, rec_subscriber(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(st);   /* the subscription keeps the scheduler running */
    wait_released(r);
    ck_assert_uint_eq(r->nitems, 5);
    for (size_t i = 0; i < 5; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert(!pthread_equal(log->thread, pthread_self()));
    ck_assert(rec_ok(r));
    wait_allocations(base);
    rec_free(r);
    free(log);
}
END_TEST

START_TEST(interval_thread_cancel_from_outside)
{
    long base = live_allocations();
    rill_scheduler *st = rill_single_thread_new();
    rill_publisher *p = rill_interval(100000, st);   /* 0.1 ms */
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    sleep_ms(5);
    rill_cancel(r->sub);   /* races with ticks on the worker */
    wait_released(r);
    size_t n = r->nitems;
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(st);
    wait_allocations(base);
    rec_free(r);
}
END_TEST

/* ====================================================================== timer */

START_TEST(timer_emits_zero_then_completes)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_timer(100, vt);
    ck_assert_ptr_nonnull(p);
    clock_log *log = log_new(vt);
    recorder *r = run_timed(p, 1, log);
    advance(vt, 99);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->completes, 0);
    advance(vt, 1);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_int_eq(rec_int(r, 0), 0);
    ck_assert_uint_eq(log->t[0], 100);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->errors, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(log);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(timer_held_until_requested)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_timer(100, vt);
    clock_log *log = log_new(vt);
    recorder *r = run_timed(p, 0, log);
    advance(vt, 500);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->completes + r->errors + r->releases, 0);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);   /* fired: nothing queued */
    rec_request(r, 1);
    advance(vt, 0);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_int_eq(rec_int(r, 0), 0);
    ck_assert_uint_eq(log->t[0], 500);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(log);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(timer_zero_delay)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_timer(0, vt);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_uint_eq(r->nitems, 0);                  /* only on the worker */
    advance(vt, 0);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(timer_cancel_before_it_fires)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_timer(100, vt);
    recorder *r = rec_run(p, 1);
    advance(vt, 50);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 1);
    rill_cancel(r->sub);
    advance(vt, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    advance(vt, 1000);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(timer_cancel_while_held)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_timer(100, vt);
    recorder *r = rec_run(p, 0);
    advance(vt, 200);
    rill_cancel(r->sub);
    advance(vt, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(timer_cancel_inside_on_next)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_timer(100, vt);
    recorder *r = rec_new(1);
    r->cancel_after = 1;
    rill_subscribe(p, rec_subscriber(r));
    advance(vt, 100);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_int_eq(r->completes + r->errors, 0);    /* no terminal after a cancel */
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(timer_request_zero)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_timer(100, vt);
    recorder *r = rec_run(p, 0);
    advance(vt, 10);
    rill_request(r->sub, 0);
    advance(vt, 0);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EINVAL);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    advance(vt, 1000);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(timer_resubscribe_restarts_the_delay)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_timer(100, vt);
    clock_log *l1 = log_new(vt), *l2 = log_new(vt);
    recorder *r1 = run_timed(p, 1, l1);
    advance(vt, 70);
    recorder *r2 = run_timed(p, 1, l2);
    advance(vt, 200);
    ck_assert_uint_eq(l1->t[0], 100);
    ck_assert_uint_eq(l2->t[0], 170);
    ck_assert_int_eq(r1->completes + r2->completes, 2);
    ck_assert_int_eq(r1->releases + r2->releases, 2);
    ck_assert(rec_ok(r1));
    ck_assert(rec_ok(r2));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r1);
    rec_free(r2);
    free(l1);
    free(l2);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(timer_refused)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    proxy *px = proxy_new(vt);
    px->refuse = 1;
    rill_publisher *p = rill_timer(100, &px->base);
    recorder *r = rec_run(p, 1);
    ck_assert_int_eq(r->error_code, ECANCELED);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(&px->base);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(timer_thread_smoke)
{
    long base = live_allocations();
    rill_scheduler *st = rill_single_thread_new();
    rill_publisher *p = rill_timer(1000000, st);     /* 1 ms */
    clock_log *log = log_new(st);
    recorder *r = run_timed(p, 1, log);
    rill_publisher_unref(p);
    wait_released(r);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_int_eq(rec_int(r, 0), 0);
    ck_assert_int_eq(r->completes, 1);
    ck_assert(!pthread_equal(log->thread, pthread_self()));
    ck_assert(rec_ok(r));
    rill_scheduler_unref(st);
    wait_allocations(base);
    rec_free(r);
    free(log);
}
END_TEST

/* ====================================================================== delay */

START_TEST(delay_shifts_each_item_by_the_delay)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    manual *m = manual_new();
    rill_publisher *p = rill_delay(&m->base, 100, vt);
    ck_assert_ptr_nonnull(p);
    clock_log *log = log_new(vt);
    recorder *r = run_timed(p, RILL_UNBOUNDED, log);
    ck_assert_uint_eq(m->requested, 256);             /* the prefetch */
    manual_push(m, 1);                                /* arrives at 0 */
    advance(vt, 30);
    manual_push(m, 2);                                /* at 30 */
    advance(vt, 20);
    manual_push(m, 3);                                /* at 50 */
    advance(vt, 49);
    ck_assert_uint_eq(r->nitems, 0);
    advance(vt, 1);
    ck_assert_uint_eq(r->nitems, 1);
    advance(vt, 50);
    ck_assert_uint_eq(r->nitems, 3);
    ck_assert_uint_eq(log->t[0], 100);
    ck_assert_uint_eq(log->t[1], 130);
    ck_assert_uint_eq(log->t[2], 150);
    for (size_t i = 0; i < 3; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i + 1);
    advance(vt, 50);                                  /* t = 200 */
    rill_deliver_complete(m->down);
    advance(vt, 99);
    ck_assert_int_eq(r->completes, 0);                /* completion is delayed too */
    advance(vt, 1);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    manual_release(m);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    ck_assert(m->destroyed);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(log);
    free(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_of_an_interval)
{
    /* interval(100) → take(3) → delay(250): items arrive at 100, 200, 300
     * and go out at 350, 450, 550; take completes at 300, so completion
     * goes out at 550, right after the last item. */
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_delay(rill_take(rill_interval(100, vt), 3), 250, vt);
    clock_log *log = log_new(vt);
    recorder *r = run_timed(p, RILL_UNBOUNDED, log);
    advance(vt, 549);
    ck_assert_uint_eq(r->nitems, 2);
    ck_assert_int_eq(r->completes, 0);
    advance(vt, 1);
    ck_assert_uint_eq(r->nitems, 3);
    for (size_t i = 0; i < 3; i++) {
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i);
        ck_assert_uint_eq(log->t[i], 350 + 100 * i);
    }
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(log);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_completion_of_empty_upstream_is_delayed)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_delay(rill_empty(), 100, vt);
    recorder *r = rec_run(p, 1);
    advance(vt, 99);
    ck_assert_int_eq(r->completes, 0);
    advance(vt, 1);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_error_cuts_ahead)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    manual *m = manual_new();
    discards d = { .n = 0 };
    rill_publisher *p = rill_on_discard(rill_delay(&m->base, 100, vt), collect, &d);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    manual_push(m, 1);
    manual_push(m, 2);
    manual_push(m, 3);
    advance(vt, 50);
    rill_deliver_error_code(m->down, EIO, "disk on fire");
    advance(vt, 0);                                   /* at once, at t = 50 */
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EIO);
    ck_assert_str_eq(r->error_message, "disk on fire");
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(d.n, 3);
    for (size_t i = 0; i < 3; i++)
        ck_assert_ptr_eq(d.items[i], (void *)(intptr_t)(i + 1));
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);   /* the timer for 100 is gone */
    ck_assert_int_eq(m->cancels, 0);                  /* upstream ended by itself */
    manual_release(m);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_error_from_a_failed_source)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_delay(rill_fail(EIO, "boom"), 100, vt);
    recorder *r = rec_run(p, 1);
    advance(vt, 0);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EIO);
    ck_assert_str_eq(r->error_message, "boom");
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_error_overtakes_items_still_waiting)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    manual *m = manual_new();
    discards d = { .n = 0 };
    rill_publisher *p = rill_on_discard(rill_delay(&m->base, 100, vt), collect, &d);
    clock_log *log = log_new(vt);
    recorder *r = run_timed(p, RILL_UNBOUNDED, log);
    manual_push(m, 1);
    advance(vt, 80);
    manual_push(m, 2);                                /* due at 180 */
    advance(vt, 20);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_uint_eq(log->t[0], 100);
    rill_deliver_error_code(m->down, EPIPE, NULL);
    advance(vt, 0);
    ck_assert_int_eq(r->error_code, EPIPE);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_uint_eq(d.n, 1);
    ck_assert_ptr_eq(d.items[0], (void *)2);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    manual_release(m);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(log);
    free(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_waits_for_demand)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    manual *m = manual_new();
    rill_publisher *p = rill_delay(&m->base, 100, vt);
    clock_log *log = log_new(vt);
    recorder *r = run_timed(p, 1, log);
    manual_push(m, 1);
    manual_push(m, 2);
    manual_push(m, 3);
    rill_deliver_complete(m->down);
    advance(vt, 200);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_uint_eq(log->t[0], 100);
    ck_assert_int_eq(r->completes, 0);                /* behind the waiting items */
    rec_request(r, 2);
    advance(vt, 0);
    ck_assert_uint_eq(r->nitems, 3);
    ck_assert_uint_eq(log->t[1], 200);
    ck_assert_uint_eq(log->t[2], 200);
    for (size_t i = 0; i < 3; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i + 1);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    manual_release(m);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(log);
    free(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static uint64_t expected_range_time(intptr_t i)
{
    /* See delay_replenishes_by_75_percent. */
    return i <= 256 ? 10 : 20 + 10 * (uint64_t)((i - 257) / 192);
}

START_TEST(delay_replenishes_by_75_percent)
{
    /* range(1, 1000) → delay(10), one request per on_next. 256 items
     * arrive at 0 and go out at 10; at the 192nd the stage asks for 192
     * more, which arrive at 10 and go out at 20; and so on, so the times
     * show both the prefetch and the 75% rule. The range completes at 40,
     * so completion goes out at 50. */
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_delay(rill_range(1, 1000), 10, vt);
    clock_log *log = log_new(vt);
    recorder *r = rec_timed(1, log);
    r->request_each = 1;
    rill_subscribe(p, rec_subscriber(r));
    advance(vt, 49);
    ck_assert_uint_eq(r->nitems, 832);
    ck_assert_int_eq(r->completes, 0);
    advance(vt, 1);
    ck_assert_uint_eq(r->nitems, 1000);
    ck_assert_int_eq(r->completes, 1);
    for (size_t i = 0; i < 1000; i++) {
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i + 1);
        ck_assert_uint_eq(log->t[i], expected_range_time((intptr_t)i + 1));
    }
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(log);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_cancel_discards_waiting_items)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    manual *m = manual_new();
    discards d = { .n = 0 };
    rill_publisher *p = rill_on_discard(rill_delay(&m->base, 100, vt), collect, &d);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    manual_push(m, 1);
    manual_push(m, 2);
    manual_push(m, 3);
    advance(vt, 50);
    manual_push(m, 4);                                /* due at 150 */
    advance(vt, 50);
    ck_assert_uint_eq(r->nitems, 3);
    rill_cancel(r->sub);
    ck_assert_int_eq(m->cancels, 1);                  /* upstream hears at once */
    advance(vt, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(d.n, 1);
    ck_assert_ptr_eq(d.items[0], (void *)4);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    manual_push(m, 5);                                /* in flight after the cancel */
    advance(vt, 1000);
    ck_assert_uint_eq(r->nitems, 3);
    manual_release(m);
    ck_assert_uint_eq(d.n, 2);
    ck_assert_ptr_eq(d.items[1], (void *)5);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_cancel_inside_on_next)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    manual *m = manual_new();
    discards d = { .n = 0 };
    rill_publisher *p = rill_on_discard(rill_delay(&m->base, 100, vt), collect, &d);
    recorder *r = rec_new(RILL_UNBOUNDED);
    r->cancel_after = 2;
    rill_subscribe(p, rec_subscriber(r));
    for (intptr_t i = 1; i <= 5; i++)
        manual_push(m, i);
    advance(vt, 100);
    ck_assert_uint_eq(r->nitems, 2);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_int_eq(m->cancels, 1);
    ck_assert_uint_eq(d.n, 3);
    for (size_t i = 0; i < 3; i++)
        ck_assert_ptr_eq(d.items[i], (void *)(intptr_t)(i + 3));
    manual_release(m);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_cancel_inside_on_subscribe)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_delay(rill_range(1, 10), 100, vt);
    discards d = { .n = 0 };
    p = rill_on_discard(p, collect, &d);
    recorder *r = rec_new(0);
    rill_subscribe(p, rec_subscriber(r));
    rill_cancel(r->sub);
    advance(vt, 1000);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_request_zero)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    manual *m = manual_new();
    discards d = { .n = 0 };
    rill_publisher *p = rill_on_discard(rill_delay(&m->base, 100, vt), collect, &d);
    recorder *r = rec_run(p, 0);
    manual_push(m, 1);
    manual_push(m, 2);
    rill_request(r->sub, 0);
    advance(vt, 0);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EINVAL);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_int_eq(m->cancels, 1);
    ck_assert_uint_eq(d.n, 2);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    manual_release(m);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_upstream_overflow)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    manual *m = manual_new();
    discards d = { .n = 0 };
    rill_publisher *p = rill_on_discard(rill_delay(&m->base, 100, vt), collect, &d);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    for (intptr_t i = 1; i <= 257; i++)               /* one more than requested */
        manual_push(m, i);
    ck_assert_int_eq(m->cancels, 1);
    advance(vt, 0);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EOVERFLOW);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(d.n, 257);                      /* the intruder, then the queue */
    ck_assert_ptr_eq(d.items[0], (void *)257);
    for (size_t i = 1; i < 257; i++)
        ck_assert_ptr_eq(d.items[i], (void *)(intptr_t)i);
    manual_release(m);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_zero_only_moves_to_the_worker)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_publisher *p = rill_delay(rill_range(1, 5), 0, vt);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_uint_eq(r->nitems, 0);
    advance(vt, 0);
    ck_assert_uint_eq(r->nitems, 5);
    ck_assert_int_eq(rec_int(r, 4), 5);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_refused)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    proxy *px = proxy_new(vt);
    px->refuse = 1;
    discards d = { .n = 0 };
    rill_publisher *p = rill_on_discard(rill_delay(rill_range(1, 3), 100, &px->base), collect, &d);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, ECANCELED);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->releases, 1);
    /* range emits only after its on_subscribe returns, and by then the
     * refused drain has cancelled it: nothing was emitted to discard. */
    ck_assert_uint_eq(d.n, 0);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(&px->base);
    rill_scheduler_unref(vt);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_refused_while_waiting)
{
    /* The first drain runs; the timer for the head is then refused. */
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    proxy *px = proxy_new(vt);
    manual *m = manual_new();
    discards d = { .n = 0 };
    rill_publisher *p = rill_on_discard(rill_delay(&m->base, 100, &px->base), collect, &d);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    advance(vt, 0);                                   /* the subscribe-phase drain */
    px->refuse = 1;
    manual_push(m, 1);                                /* its drain task is refused */
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, ECANCELED);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_int_eq(m->cancels, 1);
    ck_assert_uint_eq(d.n, 1);
    manual_release(m);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(&px->base);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_worker_refused)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    proxy *px = proxy_new(vt);
    px->refuse_workers = 1;
    manual *m = manual_new();
    rill_publisher *p = rill_delay(&m->base, 100, &px->base);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_int_eq(r->error_code, ECANCELED);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_ptr_null(m->down);                      /* upstream never subscribed */
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(&px->base);
    rill_scheduler_unref(vt);
    rec_free(r);
    free(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_thread_smoke)
{
    long base = live_allocations();
    size_t n = quick() ? 300 : 3000;
    rill_scheduler *st = rill_single_thread_new();
    rill_publisher *p = rill_delay(rill_range(1, n), 100000, st);   /* 0.1 ms */
    clock_log *log = log_new(st);
    recorder *r = rec_timed(1, log);
    r->request_each = 1;
    rill_subscribe(p, rec_subscriber(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(st);
    wait_released(r);
    ck_assert_uint_eq(r->nitems, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i + 1);
    ck_assert_int_eq(r->completes, 1);
    ck_assert(!pthread_equal(log->thread, pthread_self()));
    ck_assert(rec_ok(r));
    wait_allocations(base);
    rec_free(r);
    free(log);
}
END_TEST

START_TEST(delay_thread_interval_chain)
{
    /* Two schedulers: ticks on one, delayed delivery on the other. */
    long base = live_allocations();
    rill_scheduler *a = rill_single_thread_new();
    rill_scheduler *b = rill_single_thread_new();
    rill_publisher *p = rill_delay(rill_take(rill_interval(200000, a), 5), 300000, b);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    rill_publisher_unref(p);
    wait_released(r);
    ck_assert_uint_eq(r->nitems, 5);
    for (size_t i = 0; i < 5; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i);
    ck_assert_int_eq(r->completes, 1);
    ck_assert(rec_ok(r));
    rill_scheduler_unref(a);
    rill_scheduler_unref(b);
    wait_allocations(base);
    rec_free(r);
}
END_TEST

START_TEST(delay_thread_cancel_from_outside)
{
    long base = live_allocations();
    rill_scheduler *st = rill_single_thread_new();
    discards d = { .n = 0 };
    rill_publisher *p = rill_on_discard(rill_delay(rill_range(1, 100), 2000000, st), collect, &d);
    recorder *r = rec_run(p, 50);   /* the completion waits behind 50 items forever */
    rill_cancel(r->sub);   /* probably before the 2 ms have passed; either way is right */
    wait_released(r);
    rill_publisher_unref(p);
    rill_scheduler_unref(st);
    wait_allocations(base);
    ck_assert_uint_eq(r->nitems + d.n, 100);          /* every item accounted for */
    for (size_t i = 0; i < r->nitems; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i + 1);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert(rec_ok(r));
    rec_free(r);
}
END_TEST

START_TEST(interval_thread_cancel_races_ticks)
{
    /* Cancel lands at every phase of a tick: before it, while it drains,
     * while it queues the next one. Each time the stream stops cleanly. */
    long base = live_allocations();
    int rounds = quick() ? 20 : 200;
    rill_scheduler *pool = rill_thread_pool_new(2);
    rill_publisher *p = rill_interval(20000, pool);   /* 20 us */
    for (int i = 0; i < rounds; i++) {
        recorder *r = rec_run(p, RILL_UNBOUNDED);
        sleep_us((i % 5) * 40);
        rill_cancel(r->sub);
        wait_released(r);
        for (size_t k = 0; k < r->nitems; k++)
            ck_assert_int_eq(rec_int(r, k), (intptr_t)k);
        ck_assert_int_eq(r->completes + r->errors, 0);
        ck_assert_msg(rec_ok(r), "%s", r->violation);
        rec_free(r);
    }
    rill_publisher_unref(p);
    rill_scheduler_unref(pool);
    wait_allocations(base);
}
END_TEST

/* A subscriber for requests made on another thread than the signals. The
 * contract asks that such a request has returned before on_release
 * returns: on_release waits for the requester's `request_returned`. */
typedef struct racer {
    rill_subscription *sub;          /* set in on_subscribe, before any race */
    atomic_int request_returned;
    atomic_int items, completes, other, released;
    atomic_intptr_t first;
} racer;

static void racer_subscribe(void *user, rill_subscription *s)
{
    ((racer *)user)->sub = s;
}

static void racer_next(void *user, void *item)
{
    racer *x = user;
    if (atomic_fetch_add(&x->items, 1) == 0)
        atomic_store(&x->first, (intptr_t)item);
}

static void racer_error(void *user, const rill_error *e)
{
    atomic_fetch_add(&((racer *)user)->other, 1);
}

static void racer_complete(void *user)
{
    atomic_fetch_add(&((racer *)user)->completes, 1);
}

static void racer_release(void *user)
{
    racer *x = user;
    while (!atomic_load(&x->request_returned))
        sleep_us(1);
    atomic_store(&x->released, 1);
}

static const rill_callbacks racer_callbacks = {
    .on_subscribe = racer_subscribe,
    .on_next = racer_next,
    .on_error = racer_error,
    .on_complete = racer_complete,
    .on_release = racer_release,
};

START_TEST(timer_thread_request_races_the_tick)
{
    long base = live_allocations();
    int rounds = quick() ? 20 : 200;
    rill_scheduler *pool = rill_thread_pool_new(2);
    long with_pool = live_allocations();
    for (int i = 0; i < rounds; i++) {
        racer x = { .sub = NULL };
        rill_publisher *p = rill_timer((uint64_t)(i % 4) * 25000, pool);
        rill_subscribe(p, rill_subscriber_new(&racer_callbacks, &x));
        rill_publisher_unref(p);
        sleep_us((i % 3) * 30);
        rill_request(x.sub, 1);   /* the stream cannot end before this */
        atomic_store(&x.request_returned, 1);
        while (!atomic_load(&x.released))
            sleep_us(10);
        ck_assert_int_eq(atomic_load(&x.items), 1);
        ck_assert_int_eq(atomic_load(&x.first), 0);
        ck_assert_int_eq(atomic_load(&x.completes), 1);
        ck_assert_int_eq(atomic_load(&x.other), 0);
        wait_allocations(with_pool);
    }
    rill_scheduler_unref(pool);
    wait_allocations(base);
}
END_TEST

START_TEST(delay_thread_cancel_races_delivery)
{
    /* Whatever the moment of the cancel, the items the range emitted are
     * delivered in order, then the rest reach the discard hook, in order,
     * with no gap and no duplicate. Downstream asks for 600 of 1000 items,
     * so the range (at most 256 ahead) never completes: the stream cannot
     * end before the cancel. */
    long base = live_allocations();
    int rounds = quick() ? 10 : 100;
    rill_scheduler *pool = rill_thread_pool_new(2);
    long with_pool = live_allocations();
    discards *d = calloc(1, sizeof *d);
    ck_assert_ptr_nonnull(d);
    for (int i = 0; i < rounds; i++) {
        d->n = 0;
        rill_publisher *p = rill_delay(rill_range(1, 1000), 10000, pool);   /* 10 us */
        p = rill_on_discard(p, collect, d);
        recorder *r = rec_new(600);
        rill_subscribe(p, rec_subscriber(r));
        rill_publisher_unref(p);
        sleep_us((i % 5) * 100);
        rill_cancel(r->sub);
        wait_released(r);
        wait_allocations(with_pool);   /* in-flight discards happen at the free */
        for (size_t k = 0; k < r->nitems; k++)
            ck_assert_int_eq(rec_int(r, k), (intptr_t)k + 1);
        for (size_t k = 0; k < d->n; k++)
            ck_assert_ptr_eq(d->items[k], (void *)(intptr_t)(r->nitems + k + 1));
        ck_assert_int_eq(r->errors, 0);
        ck_assert_msg(rec_ok(r), "%s", r->violation);
        rec_free(r);
    }
    rill_scheduler_unref(pool);
    wait_allocations(base);
    free(d);
}
END_TEST

/* ====================================================================== immediate */

/* On rill_immediate everything runs, sleeping through the delays, on the
 * subscribing thread: the streams end inside rill_subscribe. */

START_TEST(interval_on_immediate)
{
    long base = live_allocations();
    rill_scheduler *imm = rill_immediate();
    rill_publisher *p = rill_interval(1000, imm);
    recorder *r = rec_new(RILL_UNBOUNDED);
    r->cancel_after = 3;
    rill_subscribe(p, rec_subscriber(r));
    ck_assert_uint_eq(r->nitems, 3);
    for (size_t i = 0; i < 3; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(imm);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(timer_on_immediate)
{
    long base = live_allocations();
    rill_scheduler *imm = rill_immediate();
    rill_publisher *p = rill_timer(1000, imm);
    recorder *r = rec_run(p, 1);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(imm);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(delay_on_immediate)
{
    long base = live_allocations();
    rill_scheduler *imm = rill_immediate();
    rill_publisher *p = rill_delay(rill_range(1, 5), 1000, imm);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_uint_eq(r->nitems, 5);
    for (size_t i = 0; i < 5; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i + 1);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_scheduler_unref(imm);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ====================================================================== suite */

Suite *timers_suite(void)
{
    Suite *s = suite_create("timers");

    TCase *tc = tcase_create("interval");
    tcase_add_test(tc, interval_ticks_every_period);
    tcase_add_test(tc, interval_overflow_when_consumer_stops_requesting);
    tcase_add_test(tc, interval_late_request_before_tick_is_enough);
    tcase_add_test(tc, interval_request_inside_on_next_keeps_up);
    tcase_add_test(tc, interval_cancel_inside_on_next);
    tcase_add_test(tc, interval_cancel_before_first_tick);
    tcase_add_test(tc, interval_cancel_inside_on_subscribe);
    tcase_add_test(tc, interval_request_zero);
    tcase_add_test(tc, interval_does_not_drift);
    tcase_add_test(tc, interval_catches_up_after_a_long_stall);
    tcase_add_test(tc, interval_each_subscription_has_its_own_clock);
    tcase_add_test(tc, interval_refused_at_subscribe);
    tcase_add_test(tc, interval_refused_at_next_tick);
    tcase_add_test(tc, interval_worker_refused);
    tcase_add_test(tc, time_bad_arguments);
    suite_add_tcase(s, tc);

    tc = tcase_create("timer");
    tcase_add_test(tc, timer_emits_zero_then_completes);
    tcase_add_test(tc, timer_held_until_requested);
    tcase_add_test(tc, timer_zero_delay);
    tcase_add_test(tc, timer_cancel_before_it_fires);
    tcase_add_test(tc, timer_cancel_while_held);
    tcase_add_test(tc, timer_cancel_inside_on_next);
    tcase_add_test(tc, timer_request_zero);
    tcase_add_test(tc, timer_resubscribe_restarts_the_delay);
    tcase_add_test(tc, timer_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("delay");
    tcase_add_test(tc, delay_shifts_each_item_by_the_delay);
    tcase_add_test(tc, delay_of_an_interval);
    tcase_add_test(tc, delay_completion_of_empty_upstream_is_delayed);
    tcase_add_test(tc, delay_error_cuts_ahead);
    tcase_add_test(tc, delay_error_from_a_failed_source);
    tcase_add_test(tc, delay_error_overtakes_items_still_waiting);
    tcase_add_test(tc, delay_waits_for_demand);
    tcase_add_test(tc, delay_replenishes_by_75_percent);
    tcase_add_test(tc, delay_cancel_discards_waiting_items);
    tcase_add_test(tc, delay_cancel_inside_on_next);
    tcase_add_test(tc, delay_cancel_inside_on_subscribe);
    tcase_add_test(tc, delay_request_zero);
    tcase_add_test(tc, delay_upstream_overflow);
    tcase_add_test(tc, delay_zero_only_moves_to_the_worker);
    tcase_add_test(tc, delay_refused);
    tcase_add_test(tc, delay_refused_while_waiting);
    tcase_add_test(tc, delay_worker_refused);
    suite_add_tcase(s, tc);

    tc = tcase_create("immediate");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, interval_on_immediate);
    tcase_add_test(tc, timer_on_immediate);
    tcase_add_test(tc, delay_on_immediate);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, interval_thread_smoke);
    tcase_add_test(tc, interval_thread_cancel_from_outside);
    tcase_add_test(tc, timer_thread_smoke);
    tcase_add_test(tc, delay_thread_smoke);
    tcase_add_test(tc, delay_thread_interval_chain);
    tcase_add_test(tc, delay_thread_cancel_from_outside);
    tcase_add_test(tc, interval_thread_cancel_races_ticks);
    tcase_add_test(tc, timer_thread_request_races_the_tick);
    tcase_add_test(tc, delay_thread_cancel_races_delivery);
    suite_add_tcase(s, tc);
    return s;
}
