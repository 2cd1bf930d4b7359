/* tests/check_tck.c — the conformance kit (include/rill/tck.h), run on every
 * rill source and operator, and on deliberately broken publishers.
 *
 * Two halves:
 *  - every stage passes every required test: each case builds a factory
 *    (create(n) → exactly n items) around the stage, runs
 *    rill_tck_verify_publisher, asserts no test failed, and prints the
 *    report when one did (RILL_TCK_PRINT=1 prints every report: that is how
 *    docs/CONFORMANCE.md was made);
 *  - the kit catches what it should: small custom publishers written with
 *    rill/stage.h each break one rule, and the test asserts that the kit
 *    reports the matching TCK test as FAILED.
 *
 * The kit allocates with malloc (it is its own library), so live_allocations
 * counts only rill's stages: every case still checks that they all went.
 */
#include "recorder.h"
#include "suites.h"

#include <rill/backpressure.h>
#include <rill/metrics.h>
#include <rill/tck.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ITEM(v) ((void *)(intptr_t)(v))

static int quick(void)
{
    const char *q = getenv("RILL_TEST_QUICK");
    return q && *q && *q != '0';
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Stages may free their last pieces on scheduler threads just after
 * on_release: wait (bounded) for the count to come back, then assert. */
static void assert_no_leak(long base)
{
    uint64_t deadline = now_ns() + 5000000000u;
    while (live_allocations() != base && now_ns() < deadline)
        sched_yield();
    ck_assert_int_eq(live_allocations(), base);
}

static void opts_init(rill_tck_publisher_options *o, const char *name)
{
    rill_tck_publisher_options_init(o);
    o->name = name;
    o->timeout_ns = 2000000000u;    /* only failing waits take this long */
    o->stochastic_runs = quick() ? 10 : 100;
}

/* Runs the kit and prints the report when a test failed (or when
 * RILL_TCK_PRINT=1). */
static rill_tck_report *run_kit(const rill_tck_publisher_options *o)
{
    rill_tck_report *r = rill_tck_verify_publisher(o);
    ck_assert_ptr_nonnull(r);
    const char *print = getenv("RILL_TCK_PRINT");
    if (rill_tck_report_failed(r) != 0 || (print && *print == '1')) {
        rill_tck_report_print(r, stdout);
        fflush(stdout);
    }
    return r;
}

/* Every test must pass or be skipped for a stated reason. The report is
 * freed before asserting, so a failure leaks nothing. */
static void expect_conformant(const rill_tck_publisher_options *o)
{
    rill_tck_report *r = run_kit(o);
    size_t count = rill_tck_report_count(r), failed = rill_tck_report_failed(r);
    size_t passed = rill_tck_report_passed(r);
    rill_tck_report_free(r);
    ck_assert_uint_eq(count, 38);
    ck_assert_uint_eq(failed, 0);
    ck_assert_uint_gt(passed, 0);
}

/* For stages that can make any finite n and have a failed publisher: every
 * required test passes except the one C cannot express (request(-1)). */
static void expect_all_required(const rill_tck_publisher_options *o)
{
    rill_tck_report *r = run_kit(o);
    char bad[512] = "";
    for (size_t i = 0; i < rill_tck_report_count(r) && !bad[0]; i++) {
        const char *name = rill_tck_report_name(r, i);
        rill_tck_status want = strstr(name, "NegativeNumberMust") ? RILL_TCK_SKIPPED
                                                                  : RILL_TCK_PASSED;
        if (strncmp(name, "required_", 9) == 0 && rill_tck_report_status(r, i) != want)
            snprintf(bad, sizeof bad, "%s: %s (%s)", name,
                     rill_tck_status_name(rill_tck_report_status(r, i)),
                     rill_tck_report_reason(r, i));
    }
    size_t failed = rill_tck_report_failed(r);
    rill_tck_report_free(r);
    ck_assert_msg(bad[0] == '\0', "%s", bad);
    ck_assert_uint_eq(failed, 0);
}

/* ------------------------------------------------------------------------
 * Factories: create(ctx, n) → exactly n items */

static rill_publisher *make_failed(void *ctx)
{
    (void)ctx;
    return rill_fail(EIO, "the failed publisher");
}

static rill_publisher *make_range(void *ctx, uint64_t n)
{
    (void)ctx;
    return rill_range(0, n);
}

static rill_publisher *make_from_array(void *ctx, uint64_t n)
{
    (void)ctx;
    if (n == 0)
        return rill_empty();
    void **items = malloc(n * sizeof *items);
    ck_assert_ptr_nonnull(items);
    for (uint64_t i = 0; i < n; i++)
        items[i] = ITEM(i);
    rill_publisher *p = rill_from_array(items, (size_t)n);
    free(items);
    return p;
}

static rill_publisher *make_just(void *ctx, uint64_t n)
{
    (void)ctx;
    return n == 0 ? rill_empty() : rill_just(ITEM(42));
}

/* generate: per-subscription state counts up to n. */
typedef struct gen_state {
    uint64_t n, i;
} gen_state;

static int gen_init(void *ctx, void **state)
{
    gen_state *s = malloc(sizeof *s);
    if (!s)
        return ENOMEM;
    s->n = *(uint64_t *)ctx;
    s->i = 0;
    *state = s;
    return 0;
}

static int gen_next(void *state, void **item)
{
    gen_state *s = state;
    if (s->i >= s->n)
        return RILL_GENERATE_END;
    *item = ITEM(s->i);
    return ++s->i == s->n ? RILL_GENERATE_LAST : RILL_GENERATE_NEXT;
}

static rill_publisher *make_generate(void *ctx, uint64_t n)
{
    (void)ctx;
    uint64_t *limit = malloc(sizeof *limit);
    ck_assert_ptr_nonnull(limit);
    *limit = n;
    return rill_generate_ex(gen_init, gen_next, free, limit, free);
}

static int add_one(void *ctx, void *in, void **out)
{
    (void)ctx;
    *out = ITEM((intptr_t)in + 1);
    return 0;
}

static int keep_all(void *ctx, void *item)
{
    (void)ctx;
    (void)item;
    return 1;
}

static void count_discard(void *ctx, void *item)
{
    (void)item;
    atomic_fetch_add((atomic_long *)ctx, 1);
}

static rill_publisher *make_map(void *ctx, uint64_t n)
{
    return rill_map(rill_range(0, n), add_one, ctx);
}

static rill_publisher *make_filter(void *ctx, uint64_t n)
{
    return rill_filter(rill_range(0, n), keep_all, ctx);
}

static rill_publisher *make_take(void *ctx, uint64_t n)
{
    (void)ctx;
    return rill_take(rill_range(0, n + 10), n);
}

static rill_publisher *make_on_discard(void *ctx, uint64_t n)
{
    return rill_on_discard(rill_range(0, n), count_discard, ctx);
}

/* Stages on a scheduler: ctx is this. */
typedef struct sched_ctx {
    rill_scheduler *s;
    uint32_t prefetch;
} sched_ctx;

static rill_publisher *make_observe_on(void *ctx, uint64_t n)
{
    sched_ctx *c = ctx;
    return rill_observe_on(rill_range(0, n), c->s, c->prefetch);
}

static rill_publisher *make_subscribe_on(void *ctx, uint64_t n)
{
    sched_ctx *c = ctx;
    return rill_subscribe_on(rill_range(0, n), c->s);
}

static rill_publisher *make_delay(void *ctx, uint64_t n)
{
    sched_ctx *c = ctx;
    return rill_delay(rill_range(0, n), 0, c->s);
}

static rill_publisher *make_failed_on(void *ctx)
{
    sched_ctx *c = ctx;
    return rill_observe_on(rill_fail(EIO, "the failed publisher"), c->s, 4);
}

/* ------------------------------------------------------------------------
 * Every rill stage passes */

/* A synchronous stage: all required tests pass. */
static void verify_sync(const char *name, rill_publisher *(*create)(void *, uint64_t), void *ctx)
{
    long base = live_allocations();
    rill_tck_publisher_options o;
    opts_init(&o, name);
    o.create = create;
    o.ctx = ctx;
    o.create_failed = make_failed;
    expect_all_required(&o);
    assert_no_leak(base);
}

START_TEST(test_range)
{
    verify_sync("range", make_range, NULL);
}
END_TEST

START_TEST(test_generate)
{
    verify_sync("generate_ex", make_generate, NULL);
}
END_TEST

START_TEST(test_from_array)
{
    /* from_array copies its array: 2^31 items are out of reach, so the
     * kit's 317 test runs with max_elements items instead. */
    long base = live_allocations();
    rill_tck_publisher_options o;
    opts_init(&o, "from_array (empty for n = 0)");
    o.create = make_from_array;
    o.create_failed = make_failed;
    o.max_elements = 1024;
    expect_all_required(&o);
    assert_no_leak(base);
}
END_TEST

START_TEST(test_just)
{
    long base = live_allocations();
    rill_tck_publisher_options o;
    opts_init(&o, "just (empty for n = 0)");
    o.create = make_just;
    o.create_failed = make_failed;
    o.max_elements = 1;
    rill_tck_report *r = rill_tck_verify_publisher(&o);
    ck_assert_ptr_nonnull(r);
    if (rill_tck_report_failed(r) || getenv("RILL_TCK_PRINT"))
        rill_tck_report_print(r, stdout);
    ck_assert_uint_eq(rill_tck_report_failed(r), 0);
    /* Tests needing 3 items are skipped, with the reason. */
    long i = rill_tck_report_find(r, "required_createPublisher3MustProduceAStreamOfExactly3Elements");
    ck_assert_int_ge(i, 0);
    ck_assert_int_eq(rill_tck_report_status(r, (size_t)i), RILL_TCK_SKIPPED);
    ck_assert_str_eq(rill_tck_report_reason(r, (size_t)i),
                     "needs a publisher of 3 elements; max_elements is 1");
    i = rill_tck_report_find(r, "required_createPublisher1MustProduceAStreamOfExactly1Element");
    ck_assert_int_eq(rill_tck_report_status(r, (size_t)i), RILL_TCK_PASSED);
    i = rill_tck_report_find(r, "required_spec313_cancelMustMakeThePublisherEventuallyDropAllReferencesToTheSubscriber");
    ck_assert_int_eq(rill_tck_report_status(r, (size_t)i), RILL_TCK_SKIPPED);
    rill_tck_report_free(r);
    assert_no_leak(base);
}
END_TEST

START_TEST(test_map)
{
    verify_sync("map over range", make_map, NULL);
}
END_TEST

START_TEST(test_filter)
{
    verify_sync("filter (keep all) over range", make_filter, NULL);
}
END_TEST

START_TEST(test_take)
{
    verify_sync("take(n) over range(n + 10)", make_take, NULL);
}
END_TEST

START_TEST(test_on_discard)
{
    atomic_long discards = 0;
    verify_sync("on_discard over range", make_on_discard, &discards);
    ck_assert_int_eq(atomic_load(&discards), 0);   /* range drops nothing */
}
END_TEST

static void verify_on_scheduler(const char *name, rill_publisher *(*create)(void *, uint64_t),
                                uint32_t prefetch)
{
    long base = live_allocations();
    sched_ctx c = { rill_single_thread_new(), prefetch };
    ck_assert_ptr_nonnull(c.s);
    rill_tck_publisher_options o;
    opts_init(&o, name);
    o.create = create;
    o.ctx = &c;
    o.create_failed = make_failed_on;
    expect_all_required(&o);
    rill_scheduler_unref(c.s);
    assert_no_leak(base);
}

START_TEST(test_observe_on)
{
    static const uint32_t prefetch[] = { 1, 3, 16 };
    static const char *names[] = { "observe_on(single thread, prefetch 1) over range",
                                   "observe_on(single thread, prefetch 3) over range",
                                   "observe_on(single thread, prefetch 16) over range" };
    verify_on_scheduler(names[_i], make_observe_on, prefetch[_i]);
}
END_TEST

START_TEST(test_subscribe_on)
{
    verify_on_scheduler("subscribe_on(single thread) over range", make_subscribe_on, 0);
}
END_TEST

START_TEST(test_delay)
{
    verify_on_scheduler("delay(0, single thread) over range", make_delay, 0);
}
END_TEST

START_TEST(test_thread_pool_observe_on)
{
    /* Signals hop between threads of a pool: the kit's waits and its
     * lifetime guard are what is exercised here. */
    long base = live_allocations();
    sched_ctx c = { rill_thread_pool_new(2), 2 };
    ck_assert_ptr_nonnull(c.s);
    rill_tck_publisher_options o;
    opts_init(&o, "observe_on(pool of 2 threads, prefetch 2) over range");
    o.create = make_observe_on;
    o.ctx = &c;
    o.create_failed = make_failed_on;
    expect_all_required(&o);
    rill_scheduler_unref(c.s);
    assert_no_leak(base);
}
END_TEST

/* The backpressure stages request RILL_UNBOUNDED upstream, so a
 * synchronous source pours everything in at once: which stream of exactly n
 * items each can make decides its max_elements.
 *  - buffer(capacity 1024): any n <= 1024 arrives intact, whatever the policy;
 *  - latest: keeps one item, so just (n = 1) and empty (n = 0);
 *  - drop: every item that arrives before downstream's request is dropped,
 *    so only the empty stream is exact (max_elements 0). */
static rill_publisher *make_buffer(void *ctx, uint64_t n)
{
    return rill_on_backpressure_buffer(rill_range(0, n), 1024, *(rill_overflow *)ctx);
}

static rill_publisher *make_latest(void *ctx, uint64_t n)
{
    return rill_on_backpressure_latest(make_just(ctx, n));
}

static rill_publisher *make_drop(void *ctx, uint64_t n)
{
    (void)ctx;
    return rill_on_backpressure_drop(rill_range(0, n));
}

static rill_publisher *make_limit_rate(void *ctx, uint64_t n)
{
    (void)ctx;
    return rill_limit_rate(rill_range(0, n), 4, 2);
}

static rill_publisher *make_probe(void *ctx, uint64_t n)
{
    return rill_probe(rill_range(0, n), ctx);
}

static void verify_limited(const char *name, rill_publisher *(*create)(void *, uint64_t),
                           void *ctx, uint64_t max)
{
    long base = live_allocations();
    rill_tck_publisher_options o;
    opts_init(&o, name);
    o.create = create;
    o.ctx = ctx;
    o.create_failed = make_failed;
    o.max_elements = max;
    expect_conformant(&o);
    assert_no_leak(base);
}

START_TEST(test_on_backpressure_buffer)
{
    static const char *names[] = { "on_backpressure_buffer(1024, ERROR) over range",
                                   "on_backpressure_buffer(1024, DROP_OLDEST) over range",
                                   "on_backpressure_buffer(1024, DROP_LATEST) over range" };
    rill_overflow policy[] = { RILL_OVERFLOW_ERROR, RILL_OVERFLOW_DROP_OLDEST,
                               RILL_OVERFLOW_DROP_LATEST };
    verify_limited(names[_i], make_buffer, &policy[_i], 1024);
}
END_TEST

START_TEST(test_on_backpressure_latest)
{
    verify_limited("on_backpressure_latest over just (empty for n = 0)", make_latest, NULL, 1);
}
END_TEST

START_TEST(test_on_backpressure_drop)
{
    verify_limited("on_backpressure_drop over range (only n = 0 is exact)", make_drop, NULL, 0);
}
END_TEST

START_TEST(test_limit_rate)
{
    verify_sync("limit_rate(4, 2) over range", make_limit_rate, NULL);
}
END_TEST

START_TEST(test_probe)
{
    rill_metrics *m = rill_metrics_new("tck");
    ck_assert_ptr_nonnull(m);
    long base = live_allocations();
    verify_sync("probe over range", make_probe, m);
    ck_assert_int_eq(live_allocations(), base);
    rill_metrics_unref(m);
}
END_TEST

/* ------------------------------------------------------------------------
 * The kit's own API */

static rill_publisher *make_null(void *ctx, uint64_t n)
{
    (void)ctx;
    (void)n;
    errno = ENOMEM;
    return NULL;
}

START_TEST(test_api_arguments)
{
    rill_tck_publisher_options o;
    rill_tck_publisher_options_init(&o);
    ck_assert_uint_eq(o.version, RILL_TCK_PUBLISHER_OPTIONS_VERSION);
    errno = 0;
    ck_assert_ptr_null(rill_tck_verify_publisher(&o));   /* no create */
    ck_assert_int_eq(errno, EINVAL);
    o.create = make_range;
    o.version = 0;
    errno = 0;
    ck_assert_ptr_null(rill_tck_verify_publisher(&o));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(rill_tck_verify_publisher(NULL));
    ck_assert_uint_eq(rill_tck_report_count(NULL), 0);
    ck_assert_uint_eq(rill_tck_report_failed(NULL), 0);
    ck_assert_ptr_null(rill_tck_report_name(NULL, 0));
    ck_assert_int_eq(rill_tck_report_find(NULL, "x"), -1);
    ck_assert_str_eq(rill_tck_status_name(RILL_TCK_FAILED), "FAILED");
    rill_tck_report_print(NULL, stdout);
    rill_tck_report_free(NULL);
}
END_TEST

START_TEST(test_api_create_returns_null)
{
    rill_tck_publisher_options o;
    opts_init(&o, "a factory that always fails");
    o.create = make_null;
    o.quiet_ns = 1000000;
    rill_tck_report *r = rill_tck_verify_publisher(&o);
    ck_assert_ptr_nonnull(r);
    long i = rill_tck_report_find(r, "required_spec102_maySignalLessThanRequestedAndTerminateSubscription");
    ck_assert_int_ge(i, 0);
    ck_assert_int_eq(rill_tck_report_status(r, (size_t)i), RILL_TCK_FAILED);
    ck_assert_str_eq(rill_tck_report_reason(r, (size_t)i), "create(3) returned NULL (errno 12)");
    /* No failed publisher: those tests are skipped, with the reason. */
    i = rill_tck_report_find(r, "optional_spec104_mustSignalOnErrorWhenFails");
    ck_assert_int_eq(rill_tck_report_status(r, (size_t)i), RILL_TCK_SKIPPED);
    ck_assert_str_eq(rill_tck_report_reason(r, (size_t)i), "no create_failed given");
    /* Tests that create nothing still pass. */
    i = rill_tck_report_find(r, "required_validate_maxElementsFromPublisher");
    ck_assert_int_eq(rill_tck_report_status(r, (size_t)i), RILL_TCK_PASSED);
    ck_assert_uint_eq(rill_tck_report_failed(r) + rill_tck_report_passed(r)
                      + rill_tck_report_skipped(r), rill_tck_report_count(r));
    /* The table has a header, a separator and one row per test. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    rill_tck_report_print(r, f);
    fclose(f);
    int rows = 0;
    for (char *c = text; *c; c++)
        rows += *c == '\n' && c[1] == '|';
    ck_assert_int_eq(rows, 2 + (int)rill_tck_report_count(r));
    ck_assert_ptr_nonnull(strstr(text, "| FAILED | required_spec102_maySignalLessThanRequestedAndTerminateSubscription | create(3) returned NULL (errno 12) |"));
    free(text);
    rill_tck_report_free(r);
}
END_TEST

START_TEST(test_api_infinite_only)
{
    /* max_elements RILL_UNBOUNDED: every test needing on_complete is skipped. */
    rill_tck_publisher_options o;
    opts_init(&o, "range, declared infinite");
    o.create = make_range;
    o.max_elements = RILL_UNBOUNDED;
    o.skip_stochastic = 1;
    rill_tck_report *r = rill_tck_verify_publisher(&o);
    ck_assert_ptr_nonnull(r);
    long i = rill_tck_report_find(r, "required_spec102_maySignalLessThanRequestedAndTerminateSubscription");
    ck_assert_int_eq(rill_tck_report_status(r, (size_t)i), RILL_TCK_SKIPPED);
    ck_assert_str_eq(rill_tck_report_reason(r, (size_t)i),
                     "needs on_complete, and the publisher only makes infinite streams");
    i = rill_tck_report_find(r, "stochastic_spec103_mustSignalOnMethodsSequentially");
    ck_assert_str_eq(rill_tck_report_reason(r, (size_t)i), "skip_stochastic is set");
    i = rill_tck_report_find(r, "required_spec101_subscriptionRequestMustResultInTheCorrectNumberOfProducedElements");
    ck_assert_int_eq(rill_tck_report_status(r, (size_t)i), RILL_TCK_PASSED);
    ck_assert_uint_eq(rill_tck_report_failed(r), 0);
    rill_tck_report_free(r);
}
END_TEST

/* ------------------------------------------------------------------------
 * Broken publishers: each breaks one rule; the kit must say which.
 *
 * A synchronous publisher of n items (item i is i), written against
 * rill/stage.h, whose drain loop is correct except for the one fault its
 * mode switches on. It runs on the thread that requests (the kit's), so
 * plain ints suffice; `depth` counts drains on the stack, and release
 * happens when the outermost one unwinds (never nested in a signal). */

enum fault {
    IGNORES_DEMAND,        /* emits everything once anything was requested */
    SIGNALS_AFTER_CANCEL,  /* cancel sends one more item and on_complete */
    COMPLETES_TWICE,
    RECURSES,              /* request calls on_next directly: no drain guard */
    NEXT_AFTER_ERROR       /* the failed publisher: on_error, then on_next */
};

typedef struct broken_pub {
    rill_publisher base;
    enum fault fault;
    uint64_t n;
} broken_pub;

typedef struct broken_sub {
    rill_subscription base;
    rill_subscriber *down;
    enum fault fault;
    uint64_t n, emitted, demand;
    int depth, done, cancelled, released, requested;
} broken_sub;

static void broken_settle(broken_sub *b)
{
    if (b->depth == 0 && (b->done || b->cancelled) && !b->released) {
        b->released = 1;
        rill_deliver_release(b->down);
        free(b);
    }
}

static void broken_drain(broken_sub *b)
{
    if (b->depth > 0 && b->fault != RECURSES)
        return;   /* the drain on the stack will see the new demand */
    b->depth++;
    while (!b->done && !b->cancelled && b->emitted < b->n
           && (b->demand > 0 || (b->fault == IGNORES_DEMAND && b->requested))) {
        if (b->demand > 0 && b->demand != RILL_UNBOUNDED)
            b->demand--;
        rill_deliver_next(b->down, ITEM(b->emitted++));
    }
    if (!b->done && !b->cancelled && b->emitted == b->n) {
        b->done = 1;
        rill_deliver_complete(b->down);
        if (b->fault == COMPLETES_TWICE)
            rill_deliver_complete(b->down);
    }
    b->depth--;
}

static void broken_request(rill_subscription *self, uint64_t n)
{
    broken_sub *b = (broken_sub *)self;
    if (b->done || b->cancelled)
        return;
    if (n == 0) {
        b->done = 1;
        rill_deliver_error_code(b->down, EINVAL, "rule 3.9: request(0)");
    } else {
        b->demand = n >= RILL_UNBOUNDED - b->demand ? RILL_UNBOUNDED : b->demand + n;
        b->requested = 1;
        broken_drain(b);
    }
    broken_settle(b);
}

static void broken_cancel(rill_subscription *self)
{
    broken_sub *b = (broken_sub *)self;
    if (b->fault == SIGNALS_AFTER_CANCEL && !b->done) {
        b->done = 1;
        rill_deliver_next(b->down, ITEM(b->emitted++));
        rill_deliver_complete(b->down);
    }
    b->cancelled = 1;
    broken_settle(b);
}

static const struct rill_subscription_ops broken_sub_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = broken_request,
    .cancel = broken_cancel,
};

static void broken_subscribe(rill_publisher *self, rill_subscriber *s)
{
    broken_pub *p = (broken_pub *)self;
    broken_sub *b = calloc(1, sizeof *b);
    ck_assert_ptr_nonnull(b);
    b->base.ops = &broken_sub_ops;
    b->down = s;
    b->fault = p->fault;
    b->n = p->n;
    b->depth = 1;   /* no release inside on_subscribe */
    rill_deliver_subscribe(s, &b->base);
    if (b->fault == NEXT_AFTER_ERROR && !b->cancelled) {
        b->done = 1;
        rill_deliver_error_code(s, EIO, "failed");
        rill_deliver_next(s, ITEM(0));
    }
    b->depth = 0;
    if (!b->done && !b->cancelled && b->n == 0) {   /* empty: completes at once */
        b->done = 1;
        rill_deliver_complete(s);
    }
    broken_drain(b);   /* serves requests made inside on_subscribe */
    broken_settle(b);
}

static void broken_destroy(rill_publisher *self)
{
    free(self);
}

static const struct rill_publisher_ops broken_pub_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = broken_subscribe,
    .destroy = broken_destroy,
};

static rill_publisher *broken_new(enum fault fault, uint64_t n)
{
    broken_pub *p = calloc(1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    rill_publisher_init(&p->base, &broken_pub_ops);
    p->fault = fault;
    p->n = n;
    return &p->base;
}

static rill_publisher *make_broken(void *ctx, uint64_t n)
{
    return broken_new(*(enum fault *)ctx, n);
}

static rill_publisher *make_broken_failed(void *ctx)
{
    (void)ctx;
    return broken_new(NEXT_AFTER_ERROR, 0);
}

/* Runs the kit on a broken publisher (quick timeouts: failing waits take
 * them in full) and returns the report. */
static rill_tck_report *verify_broken(rill_publisher *(*create)(void *, uint64_t), void *ctx,
                                      rill_publisher *(*failed)(void *))
{
    rill_tck_publisher_options o;
    opts_init(&o, "a broken publisher");
    o.create = create;
    o.create_failed = failed;
    o.ctx = ctx;
    o.max_elements = 1000;
    o.timeout_ns = 300000000u;
    o.quiet_ns = 10000000u;
    o.stochastic_runs = quick() ? 20 : 50;
    rill_tck_report *r = rill_tck_verify_publisher(&o);
    ck_assert_ptr_nonnull(r);
    if (getenv("RILL_TCK_PRINT"))
        rill_tck_report_print(r, stdout);
    return r;
}

/* Asserts that the test `name` FAILED and that its reason mentions `why`. */
static void assert_failed(const rill_tck_report *r, const char *name, const char *why)
{
    long i = rill_tck_report_find(r, name);
    ck_assert_msg(i >= 0, "no test %s", name);
    ck_assert_msg(rill_tck_report_status(r, (size_t)i) == RILL_TCK_FAILED, "%s: %s (%s)", name,
                  rill_tck_status_name(rill_tck_report_status(r, (size_t)i)),
                  rill_tck_report_reason(r, (size_t)i));
    ck_assert_msg(strstr(rill_tck_report_reason(r, (size_t)i), why) != NULL,
                  "%s: reason \"%s\" lacks \"%s\"", name, rill_tck_report_reason(r, (size_t)i),
                  why);
}

static void assert_passed(const rill_tck_report *r, const char *name)
{
    long i = rill_tck_report_find(r, name);
    ck_assert_int_ge(i, 0);
    ck_assert_msg(rill_tck_report_status(r, (size_t)i) == RILL_TCK_PASSED, "%s: %s", name,
                  rill_tck_report_reason(r, (size_t)i));
}

START_TEST(test_broken_ignores_demand)
{
    enum fault f = IGNORES_DEMAND;
    rill_tck_report *r = verify_broken(make_broken, &f, NULL);
    assert_failed(r, "required_spec101_subscriptionRequestMustResultInTheCorrectNumberOfProducedElements",
                  "rule 1.1: on_next #2 with only 1 requested");
    assert_failed(r, "required_createPublisher3MustProduceAStreamOfExactly3Elements", "rule 1.1");
    /* Everything that requests more than the stream holds still passes. */
    assert_passed(r, "required_spec102_maySignalLessThanRequestedAndTerminateSubscription");
    assert_passed(r, "required_spec317_mustSupportAPendingElementCountUpToLongMaxValue");
    rill_tck_report_free(r);
}
END_TEST

START_TEST(test_broken_signals_after_cancel)
{
    enum fault f = SIGNALS_AFTER_CANCEL;
    rill_tck_report *r = verify_broken(make_broken, &f, NULL);
    assert_failed(r, "required_spec306_afterSubscriptionIsCancelledRequestMustBeNops",
                  "rule 1.1: on_next #1 with only 0 requested");
    assert_failed(r, "required_spec307_afterSubscriptionIsCancelledAdditionalCancelationsMustBeNops",
                  "rule 1.1");
    assert_failed(r, "required_spec312_cancelMustMakeThePublisherToEventuallyStopSignaling",
                  "rule 3.12: 16 on_next for 15 requested");
    assert_passed(r, "required_spec102_maySignalLessThanRequestedAndTerminateSubscription");
    rill_tck_report_free(r);
}
END_TEST

START_TEST(test_broken_completes_twice)
{
    enum fault f = COMPLETES_TWICE;
    rill_tck_report *r = verify_broken(make_broken, &f, NULL);
    assert_failed(r, "required_spec105_mustSignalOnCompleteWhenFiniteStreamTerminates",
                  "rule 1.7: on_complete after on_complete");
    assert_failed(r, "required_spec107_mustNotEmitFurtherSignalsOnceOnCompleteHasBeenSignalled",
                  "rule 1.7: on_complete after on_complete");
    assert_passed(r, "required_spec101_subscriptionRequestMustResultInTheCorrectNumberOfProducedElements");
    rill_tck_report_free(r);
}
END_TEST

START_TEST(test_broken_next_after_error)
{
    /* a correct create, and a failed publisher that goes on after on_error */
    rill_tck_report *r = verify_broken(make_range, NULL, make_broken_failed);
    assert_failed(r, "required_spec109_mayRejectCallsToSubscribeIfPublisherIsUnableOrUnwillingToServeThemRejectionMustTriggerOnErrorAfterOnSubscribe",
                  "rule 1.7: on_next after on_error");
    /* optional: reported SKIPPED with the breach as its reason */
    long i = rill_tck_report_find(r, "optional_spec104_mustSignalOnErrorWhenFails");
    ck_assert_int_eq(rill_tck_report_status(r, (size_t)i), RILL_TCK_SKIPPED);
    ck_assert_str_eq(rill_tck_report_reason(r, (size_t)i),
                     "optional rule not met: rule 1.7: on_next after on_error");
    ck_assert_uint_eq(rill_tck_report_failed(r), 1);
    rill_tck_report_free(r);
}
END_TEST

START_TEST(test_broken_recursion)
{
    enum fault f = RECURSES;
    rill_tck_report *r = verify_broken(make_broken, &f, NULL);
    assert_failed(r, "required_spec303_mustNotAllowUnboundedRecursion",
                  "rule 3.3: on_next nested 2 deep on one thread (bounded_depth 1)");
    assert_passed(r, "required_spec102_maySignalLessThanRequestedAndTerminateSubscription");
    rill_tck_report_free(r);
}
END_TEST

START_TEST(test_broken_recursion_within_bound)
{
    /* The same publisher with bounded_depth 3: 303 asks for 4 items, which
     * nest 4 deep, so it still fails, reporting the depth it saw. */
    enum fault f = RECURSES;
    rill_tck_publisher_options o;
    opts_init(&o, "recursive");
    o.create = make_broken;
    o.ctx = &f;
    o.bounded_depth = 3;
    o.quiet_ns = 5000000u;
    o.timeout_ns = 300000000u;
    o.skip_stochastic = 1;
    rill_tck_report *r = rill_tck_verify_publisher(&o);
    ck_assert_ptr_nonnull(r);
    assert_failed(r, "required_spec303_mustNotAllowUnboundedRecursion",
                  "rule 3.3: on_next nested 4 deep on one thread (bounded_depth 3)");
    rill_tck_report_free(r);
}
END_TEST

/* ------------------------------------------------------------------------
 * A publisher that signals from two threads at once (rule 1.3).
 *
 * At the first request it starts two threads; each takes one unit of
 * demand at a time (CAS) and one item index, and delivers. Demand is kept;
 * only serialisation is broken. The last thread out completes (if all items
 * went) and releases. A cancel before any request releases at once. */

typedef struct twin_sub {
    rill_subscription base;
    rill_subscriber *down;
    uint64_t n;
    _Atomic uint64_t demand, next;
    atomic_int started;     /* 0 idle, 1 threads running, 2 released without them */
    atomic_int cancelled, threads;
    atomic_uint arrived;    /* the two threads meet before each item */
} twin_sub;

static void twin_end(twin_sub *t)
{
    if (!atomic_load(&t->cancelled) && atomic_load(&t->next) >= t->n)
        rill_deliver_complete(t->down);
    rill_deliver_release(t->down);
    free(t);
}

static int twin_take_demand(twin_sub *t)
{
    uint64_t d = atomic_load(&t->demand);
    while (d > 0)
        if (atomic_compare_exchange_weak(&t->demand, &d, d == RILL_UNBOUNDED ? d : d - 1))
            return 1;
    return 0;
}

/* Waits (briefly) for the other thread, so the two call on_next at the
 * same moment: on a loaded machine threads that merely run side by side
 * may never overlap inside a short on_next, and the kit could not see the
 * breach it is being tested for. */
static void twin_meet(twin_sub *t)
{
    unsigned want = (atomic_fetch_add(&t->arrived, 1) / 2 + 1) * 2;
    for (long spins = 0; atomic_load(&t->arrived) < want && spins < 20000; spins++)
        if (atomic_load(&t->threads) < 2 || atomic_load(&t->cancelled))
            break;
}

static void *twin_thread(void *arg)
{
    twin_sub *t = arg;
    while (!atomic_load(&t->cancelled) && atomic_load(&t->next) < t->n) {
        if (!twin_take_demand(t)) {
            sched_yield();
            continue;
        }
        twin_meet(t);
        uint64_t i = atomic_fetch_add(&t->next, 1);
        if (i >= t->n)
            break;
        rill_deliver_next(t->down, ITEM(i));
    }
    if (atomic_fetch_sub(&t->threads, 1) == 1)
        twin_end(t);
    return NULL;
}

static void twin_request(rill_subscription *self, uint64_t n)
{
    twin_sub *t = (twin_sub *)self;
    uint64_t d = atomic_load(&t->demand);
    while (!atomic_compare_exchange_weak(&t->demand, &d,
                                         n >= RILL_UNBOUNDED - d ? RILL_UNBOUNDED : d + n))
        ;
    int idle = 0;
    if (atomic_compare_exchange_strong(&t->started, &idle, 1)) {
        atomic_store(&t->threads, 2);
        for (int i = 0; i < 2; i++) {
            pthread_t th;
            ck_assert_int_eq(pthread_create(&th, NULL, twin_thread, t), 0);
            pthread_detach(th);
        }
    }
}

static void twin_cancel(rill_subscription *self)
{
    twin_sub *t = (twin_sub *)self;
    atomic_store(&t->cancelled, 1);
    int idle = 0;
    if (atomic_compare_exchange_strong(&t->started, &idle, 2))
        twin_end(t);
}

static const struct rill_subscription_ops twin_sub_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = twin_request,
    .cancel = twin_cancel,
};

static void twin_subscribe(rill_publisher *self, rill_subscriber *s)
{
    twin_sub *t = calloc(1, sizeof *t);
    ck_assert_ptr_nonnull(t);
    t->base.ops = &twin_sub_ops;
    t->down = s;
    t->n = ((broken_pub *)self)->n;
    rill_deliver_subscribe(s, &t->base);
}

static const struct rill_publisher_ops twin_pub_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = twin_subscribe,
    .destroy = broken_destroy,
};

static rill_publisher *make_twin(void *ctx, uint64_t n)
{
    (void)ctx;
    broken_pub *p = calloc(1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    rill_publisher_init(&p->base, &twin_pub_ops);
    p->n = n;
    return &p->base;
}

START_TEST(test_broken_concurrent_on_next)
{
    rill_tck_report *r = verify_broken(make_twin, NULL, NULL);
    assert_failed(r, "stochastic_spec103_mustSignalOnMethodsSequentially",
                  "rule 1.3: on_next on one thread while another thread was inside a signal");
    rill_tck_report_free(r);
}
END_TEST

/* ------------------------------------------------------------------------ */

Suite *tck_suite(void)
{
    Suite *s = suite_create("tck");
    TCase *tc = tcase_create("rill stages");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, test_range);
    tcase_add_test(tc, test_from_array);
    tcase_add_test(tc, test_just);
    tcase_add_test(tc, test_generate);
    tcase_add_test(tc, test_map);
    tcase_add_test(tc, test_filter);
    tcase_add_test(tc, test_take);
    tcase_add_test(tc, test_on_discard);
    tcase_add_loop_test(tc, test_observe_on, 0, 3);
    tcase_add_test(tc, test_subscribe_on);
    tcase_add_test(tc, test_delay);
    tcase_add_test(tc, test_thread_pool_observe_on);
    tcase_add_loop_test(tc, test_on_backpressure_buffer, 0, 3);
    tcase_add_test(tc, test_on_backpressure_latest);
    tcase_add_test(tc, test_on_backpressure_drop);
    tcase_add_test(tc, test_limit_rate);
    tcase_add_test(tc, test_probe);
    suite_add_tcase(s, tc);

    tc = tcase_create("kit api");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, test_api_arguments);
    tcase_add_test(tc, test_api_create_returns_null);
    tcase_add_test(tc, test_api_infinite_only);
    suite_add_tcase(s, tc);

    tc = tcase_create("broken publishers");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, test_broken_ignores_demand);
    tcase_add_test(tc, test_broken_signals_after_cancel);
    tcase_add_test(tc, test_broken_completes_twice);
    tcase_add_test(tc, test_broken_next_after_error);
    tcase_add_test(tc, test_broken_recursion);
    tcase_add_test(tc, test_broken_recursion_within_bound);
    tcase_add_test(tc, test_broken_concurrent_on_next);
    suite_add_tcase(s, tc);
    return s;
}
