/* tests/check_threads.c — rill_request and rill_cancel from several threads.
 *
 * The subscriber here is a "probe": callbacks that check order, overlap
 * (an atomic "inside" counter: never two signals at once) and signals after
 * release, with counters that other threads may read.
 *
 * Lifetime rule (include/rill/core.h, "Subscriptions"): the subscription is
 * dead once on_release returns, and on_release may run inside any thread's
 * rill_request or rill_cancel. So the probe's on_release first raises `stop`
 * (threads that loop until told to stop leave their loops), then waits until
 * every requester thread other than the one it runs on has made its last
 * call. Each requester records itself in a thread-local, so on_release knows
 * which one (if any) it is running inside.
 *
 * No timing assertions: every wait is a spin bounded only by the
 * test case's timeout.
 */
#include "recorder.h"
#include "suites.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 64

static int quick(void)
{
    const char *q = getenv("RILL_TEST_QUICK");
    return q && *q && *q != '0';
}

static uint64_t big_n(void)
{
    return quick() ? 20000 : 200000;
}

typedef struct probe probe;

/* One thread calling rill_request / rill_cancel on the probe's subscription. */
typedef struct requester {
    pthread_t tid;
    probe *p;
    uint64_t calls;          /* requests to make (fixed plans) or made (loops) */
    _Atomic uint64_t made;   /* race test: requests made so far, for the canceller */
    uint32_t delay;          /* race test: how long to wait before acting */
    atomic_int finished;     /* 1 once this thread makes no more calls */
} requester;

struct probe {
    rill_subscription *sub;
    int64_t next_expected;           /* only touched inside signals */
    _Atomic uint64_t received;
    _Atomic uint64_t asked;          /* batch test: total requested so far */
    uint64_t total;                  /* batch test: items wanted */
    atomic_int inside, released, stop, ready;
    atomic_int overlaps, after_release, out_of_order;
    atomic_int completes, errors, releases, error_code;
    pthread_t subscriber;            /* the thread that called rill_subscribe */
    atomic_int next_on_subscriber;   /* on_next calls that ran on it */
    requester *threads;
    size_t nthreads;
};

/* The requester the current thread is, or NULL (the main thread). */
static _Thread_local requester *current;

static void probe_init(probe *p, int64_t first, requester *threads, size_t nthreads)
{
    memset(p, 0, sizeof *p);
    memset(threads, 0, nthreads * sizeof *threads);
    p->next_expected = first;
    p->subscriber = pthread_self();
    p->threads = threads;
    p->nthreads = nthreads;
    for (size_t i = 0; i < nthreads; i++)
        threads[i].p = p;
}

static void enter(probe *p)
{
    if (atomic_fetch_add(&p->inside, 1) != 0)
        atomic_fetch_add(&p->overlaps, 1);
    if (atomic_load(&p->released))
        atomic_fetch_add(&p->after_release, 1);
}

static void leave(probe *p)
{
    atomic_fetch_sub(&p->inside, 1);
}

static void probe_subscribe(void *user, rill_subscription *s)
{
    probe *p = user;
    enter(p);
    p->sub = s;   /* no request: the threads make every request */
    leave(p);
}

static void probe_next(void *user, void *item)
{
    probe *p = user;
    enter(p);
    if ((int64_t)(intptr_t)item != p->next_expected)
        atomic_fetch_add(&p->out_of_order, 1);
    p->next_expected++;
    if (pthread_equal(pthread_self(), p->subscriber))
        atomic_fetch_add(&p->next_on_subscriber, 1);
    atomic_fetch_add(&p->received, 1);
    leave(p);
}

static void probe_error(void *user, const rill_error *e)
{
    probe *p = user;
    enter(p);
    atomic_store(&p->error_code, rill_error_code(e));
    atomic_fetch_add(&p->errors, 1);
    leave(p);
}

static void probe_complete(void *user)
{
    probe *p = user;
    enter(p);
    atomic_fetch_add(&p->completes, 1);
    leave(p);
}

/* Calls from other threads must have returned before this returns. */
static void wait_for_other_requesters(probe *p)
{
    for (size_t i = 0; i < p->nthreads; i++) {
        requester *t = &p->threads[i];
        if (t == current)
            continue;
        while (!atomic_load(&t->finished))
            sched_yield();
    }
}

static void probe_release(void *user)
{
    probe *p = user;
    enter(p);
    atomic_fetch_add(&p->releases, 1);
    atomic_store(&p->stop, 1);
    wait_for_other_requesters(p);
    atomic_store(&p->released, 1);
    leave(p);
}

static const rill_callbacks probe_callbacks = {
    .on_subscribe = probe_subscribe,
    .on_next = probe_next,
    .on_error = probe_error,
    .on_complete = probe_complete,
    .on_release = probe_release,
};

static void probe_subscribe_to(probe *p, rill_publisher *pub)
{
    rill_subscriber *s = rill_subscriber_new(&probe_callbacks, p);
    ck_assert_ptr_nonnull(s);
    rill_subscribe(pub, s);
    ck_assert_ptr_nonnull(p->sub);
    ck_assert_uint_eq(atomic_load(&p->received), 0);
}

/* Every requester waits here until all have started, so they overlap. */
static void start_together(requester *t)
{
    current = t;
    atomic_fetch_add(&t->p->ready, 1);
    while ((size_t)atomic_load(&t->p->ready) < t->p->nthreads)
        sched_yield();
}

static void start_threads(probe *p, void *(*fn)(void *))
{
    for (size_t i = 0; i < p->nthreads; i++)
        ck_assert_int_eq(pthread_create(&p->threads[i].tid, NULL, fn, &p->threads[i]), 0);
}

static void join_threads(probe *p)
{
    for (size_t i = 0; i < p->nthreads; i++)
        ck_assert_int_eq(pthread_join(p->threads[i].tid, NULL), 0);
}

/* Release follows the end of the stream or the cancel promptly, but the
 * contract does not say on which thread: wait for it (the test timeout
 * bounds the wait). */
static void wait_released(probe *p)
{
    while (!atomic_load(&p->released))
        sched_yield();
}

static void assert_clean(probe *p)
{
    ck_assert_int_eq(atomic_load(&p->overlaps), 0);
    ck_assert_int_eq(atomic_load(&p->after_release), 0);
    ck_assert_int_eq(atomic_load(&p->out_of_order), 0);
    ck_assert_int_eq(atomic_load(&p->releases), 1);
}

/* ------------------------------------------------------------------------
 * Two threads, each calling rill_request(s, 1) n/2 times.
 */

static void *request_ones(void *arg)
{
    requester *t = arg;
    start_together(t);
    for (uint64_t i = 0; i < t->calls; i++)
        rill_request(t->p->sub, 1);
    atomic_store(&t->finished, 1);
    return NULL;
}

/* Subscribes to pub (borrowed), runs two requesters for n items in total,
 * and checks that items first .. first+n-1 arrived once each, in order,
 * followed by exactly one on_complete and one on_release. */
static void run_two_requesters(rill_publisher *pub, int64_t first, uint64_t n)
{
    probe p;
    requester t[2];
    probe_init(&p, first, t, 2);
    probe_subscribe_to(&p, pub);
    t[0].calls = n / 2 + n % 2;
    t[1].calls = n / 2;
    start_threads(&p, request_ones);
    join_threads(&p);
    wait_released(&p);
    assert_clean(&p);
    ck_assert_uint_eq(atomic_load(&p.received), n);
    ck_assert_int_eq(p.next_expected, first + (int64_t)n);
    ck_assert_int_eq(atomic_load(&p.completes), 1);
    ck_assert_int_eq(atomic_load(&p.errors), 0);
    ck_assert_int_eq(atomic_load(&p.next_on_subscriber), 0);
}

START_TEST(test_two_threads_request_range)
{
    long base = live_allocations();
    uint64_t n = big_n();
    rill_publisher *pub = rill_range(0, n);
    ck_assert_ptr_nonnull(pub);
    run_two_requesters(pub, 0, n);
    rill_publisher_unref(pub);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static atomic_ulong map_calls, filter_calls;

static int add_one(void *ctx, void *in, void **out)
{
    atomic_fetch_add_explicit(&map_calls, 1, memory_order_relaxed);
    *out = (void *)((intptr_t)in + 1);
    return 0;
}

static int keep_all(void *ctx, void *item)
{
    atomic_fetch_add_explicit(&filter_calls, 1, memory_order_relaxed);
    return 1;
}

START_TEST(test_two_threads_request_chain)
{
    long base = live_allocations();
    uint64_t n = big_n();
    atomic_store(&map_calls, 0);
    atomic_store(&filter_calls, 0);
    /* The range is longer than take's n: take completes and cancels it. */
    rill_publisher *pub = rill_range(0, 2 * n);
    pub = rill_map(pub, add_one, NULL);
    pub = rill_filter(pub, keep_all, NULL);
    pub = rill_take(pub, n);
    ck_assert_ptr_nonnull(pub);
    run_two_requesters(pub, 1, n);
    /* take never asks upstream for more than n: exactly n went through. */
    ck_assert_uint_eq(atomic_load(&map_calls), n);
    ck_assert_uint_eq(atomic_load(&filter_calls), n);
    rill_publisher_unref(pub);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Cancel racing with request.
 */

/* Far more than a round can request: completion cannot win the race. */
#define RACE_COUNT ((uint64_t)1 << 40)

/* Bounds the canceller's wait when the requester makes no progress. */
#define RACE_MAX_SPINS 200000

/* A busy wait, not sched_yield: on a loaded machine each yield can cost a
 * whole scheduling round, and the canceller would starve while the
 * requester runs on. */
static void spin(uint32_t n)
{
    for (volatile uint32_t i = 0; i < n; i++)
        ;
}

static void *request_until_stopped(void *arg)
{
    requester *t = arg;
    start_together(t);
    spin(t->delay * 16);
    while (!atomic_load(&t->p->stop)) {
        rill_request(t->p->sub, 1);
        t->calls++;
        atomic_store_explicit(&t->made, t->calls, memory_order_relaxed);
    }
    atomic_store(&t->finished, 1);
    return NULL;
}

/* Cancels once the requester has made `delay` requests (or after a bounded
 * spin), so the cancel lands anywhere from before the first request to the
 * middle of a stream of them. */
static void *cancel_after_delay(void *arg)
{
    requester *t = arg;
    requester *a = &t->p->threads[0];
    start_together(t);
    for (uint32_t i = 0; i < RACE_MAX_SPINS; i++) {
        if (atomic_load_explicit(&a->made, memory_order_relaxed) >= t->delay)
            break;
        spin(8);
    }
    /* Only once: on_release may run inside this very call, and then the
     * subscription is gone when it returns. */
    rill_cancel(t->p->sub);
    atomic_store(&t->finished, 1);
    return NULL;
}

static void *dispatch_race(void *arg)
{
    requester *t = arg;
    return t == &t->p->threads[0] ? request_until_stopped(t) : cancel_after_delay(t);
}

static uint32_t xorshift(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

static void race_round(uint32_t *rng, int round)
{
    long base = live_allocations();
    probe p;
    requester t[2];
    probe_init(&p, 0, t, 2);
    rill_publisher *pub = rill_range(0, RACE_COUNT);
    ck_assert_ptr_nonnull(pub);
    probe_subscribe_to(&p, pub);
    /* Half the rounds drop the publisher at once: the running subscription
     * keeps what it needs alive. */
    if (round % 2)
        rill_publisher_unref(pub);
    t[0].delay = xorshift(rng) % 64;
    t[1].delay = (round % 8 == 0) ? 0 : xorshift(rng) % 256;
    start_threads(&p, dispatch_race);
    join_threads(&p);
    wait_released(&p);
    if (round % 2 == 0)
        rill_publisher_unref(pub);
    assert_clean(&p);
    ck_assert_int_eq(atomic_load(&p.completes), 0);
    ck_assert_int_eq(atomic_load(&p.errors), 0);
    ck_assert_uint_le(atomic_load(&p.received), t[0].calls);
    ck_assert_int_eq(p.next_expected, (int64_t)atomic_load(&p.received));
    ck_assert_int_eq(live_allocations(), base);
}

START_TEST(test_cancel_races_request)
{
    int rounds = quick() ? 100 : 1000;
    uint32_t rng = 0x9e3779b9u;
    for (int i = 0; i < rounds; i++)
        race_round(&rng, i);
}
END_TEST

/* The same race through a chain of operators. */
static void race_chain_round(uint32_t *rng, int round)
{
    long base = live_allocations();
    probe p;
    requester t[2];
    probe_init(&p, 1, t, 2);
    rill_publisher *pub = rill_range(0, RACE_COUNT);
    pub = rill_map(pub, add_one, NULL);
    pub = rill_filter(pub, keep_all, NULL);
    pub = rill_take(pub, RACE_COUNT);
    ck_assert_ptr_nonnull(pub);
    probe_subscribe_to(&p, pub);
    rill_publisher_unref(pub);
    t[0].delay = xorshift(rng) % 64;
    t[1].delay = (round % 8 == 0) ? 0 : xorshift(rng) % 256;
    start_threads(&p, dispatch_race);
    join_threads(&p);
    wait_released(&p);
    assert_clean(&p);
    ck_assert_int_eq(atomic_load(&p.completes), 0);
    ck_assert_int_eq(atomic_load(&p.errors), 0);
    ck_assert_uint_le(atomic_load(&p.received), t[0].calls);
    ck_assert_int_eq(p.next_expected, 1 + (int64_t)atomic_load(&p.received));
    ck_assert_int_eq(live_allocations(), base);
}

START_TEST(test_cancel_races_request_chain)
{
    int rounds = quick() ? 100 : 1000;
    uint32_t rng = 0x2545f491u;
    for (int i = 0; i < rounds; i++)
        race_chain_round(&rng, i);
}
END_TEST

/* ------------------------------------------------------------------------
 * Consumers requesting batches from threads other than the subscriber's.
 */

/* Keeps at most two batches outstanding; any consumer may take the next
 * batch, so on_next runs on whichever thread is draining. */
static void *consume_batches(void *arg)
{
    requester *t = arg;
    probe *p = t->p;
    start_together(t);
    uint64_t a;
    while ((a = atomic_load(&p->asked)) < p->total) {
        if (atomic_load(&p->received) + BATCH < a) {
            sched_yield();
            continue;
        }
        if (atomic_compare_exchange_weak(&p->asked, &a, a + BATCH)) {
            rill_request(p->sub, BATCH);
            t->calls++;
        }
    }
    atomic_store(&t->finished, 1);
    return NULL;
}

static void run_batch_consumers(size_t nthreads)
{
    long base = live_allocations();
    uint64_t n = big_n();
    probe p;
    requester t[2];
    probe_init(&p, 0, t, nthreads);
    p.total = n;
    rill_publisher *pub = rill_range(0, n);
    ck_assert_ptr_nonnull(pub);
    probe_subscribe_to(&p, pub);
    start_threads(&p, consume_batches);
    join_threads(&p);
    wait_released(&p);
    rill_publisher_unref(pub);
    assert_clean(&p);
    ck_assert_uint_eq(atomic_load(&p.received), n);
    ck_assert_int_eq(p.next_expected, (int64_t)n);
    ck_assert_int_eq(atomic_load(&p.completes), 1);
    ck_assert_int_eq(atomic_load(&p.errors), 0);
    /* A synchronous source emits on the requesting threads only. */
    ck_assert_int_eq(atomic_load(&p.next_on_subscriber), 0);
    ck_assert_int_eq(live_allocations(), base);
}

START_TEST(test_batch_consumer_other_thread)
{
    run_batch_consumers(1);
}
END_TEST

START_TEST(test_batch_consumers_two_threads)
{
    run_batch_consumers(2);
}
END_TEST

/* ------------------------------------------------------------------------ */

static TCase *timed_tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    return tc;
}

Suite *threads_suite(void)
{
    Suite *s = suite_create("threads");

    TCase *tc = timed_tcase("concurrent_request");
    tcase_add_test(tc, test_two_threads_request_range);
    tcase_add_test(tc, test_two_threads_request_chain);
    suite_add_tcase(s, tc);

    tc = timed_tcase("cancel_race");
    tcase_add_test(tc, test_cancel_races_request);
    tcase_add_test(tc, test_cancel_races_request_chain);
    suite_add_tcase(s, tc);

    tc = timed_tcase("batch_consumers");
    tcase_add_test(tc, test_batch_consumer_other_thread);
    tcase_add_test(tc, test_batch_consumers_two_threads);
    suite_add_tcase(s, tc);
    return s;
}
