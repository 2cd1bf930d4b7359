/* tests/check_tck_subscriber.c — the conformance kit's subscriber and
 * processor verification (include/rill/tck.h), run on rill's subscribers and
 * identity-capable operators, and on deliberately broken ones.
 *
 * Three parts:
 *  - rill's subscribers pass: rill_subscriber_new (blackbox: callbacks that
 *    request from on_subscribe and on_next; one that needs trigger_request;
 *    one whose items are real pointers) and a whitebox wrapper written here
 *    (the probe/puppet API as a binding would use it);
 *  - every identity-capable operator passes processor verification (both
 *    halves: as a publisher over rill_range, and as a subscriber of the kit's
 *    instrumented upstream);
 *  - the kit catches what it should: broken subscribers and operators, each
 *    reported as failing the matching rule.
 *
 * RILL_TCK_PRINT=1 prints every report (docs/CONFORMANCE.md was made so).
 * The kit allocates with malloc, so live_allocations counts rill's stages
 * only; every case still checks they all went.
 */
#include "recorder.h"
#include "suites.h"

#include <rill/backpressure.h>
#include <rill/metrics.h>
#include <rill/stage.h>
#include <rill/tck.h>

#include <errno.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ITEM(v) ((void *)(intptr_t)(v))

static const char *const N201 = "required_spec201_blackbox_mustSignalDemandViaSubscriptionRequest";
static const char *const N203C =
    "required_spec203_blackbox_mustNotCallMethodsOnSubscriptionOrPublisherInOnComplete";
static const char *const N203E =
    "required_spec203_blackbox_mustNotCallMethodsOnSubscriptionOrPublisherInOnError";
static const char *const N205 = "required_spec205_blackbox_mustCallSubscriptionCancelIfItAlreadyHasAnSubscriptionAndReceivesAnotherOnSubscribeSignal";
static const char *const W205 = "required_spec205_mustCallSubscriptionCancelIfItAlreadyHasAnSubscriptionAndReceivesAnotherOnSubscribeSignal";
static const char *const WHAPPY = "required_exerciseWhiteboxHappyPath";

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int quick(void)
{
    const char *q = getenv("RILL_TEST_QUICK");
    return q && *q && *q != '0';
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

/* Prints the report when a test failed, or always with RILL_TCK_PRINT=1. */
static void maybe_print(const rill_tck_report *r)
{
    const char *print = getenv("RILL_TCK_PRINT");
    if (rill_tck_report_failed(r) != 0 || (print && *print == '1')) {
        rill_tck_report_print(r, stdout);
        fflush(stdout);
    }
}

/* Why a required test may be skipped in C, whatever the stage. */
static int known_skip(const char *reason)
{
    static const char *const ok[] = {
        "NullPointerException", "NULL is a valid item", "C has no negative request",
        "multicast processor", "needs a publisher of", "prefetch is RILL_UNBOUNDED",
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (strstr(reason, ok[i]))
            return 1;
    return 0;
}

/* Every required test passed, or was skipped for a reason C or the stage's
 * declared limits give; no test failed; `count` tests; and the tests named
 * in must_pass (NULL-terminated) passed. The report is freed before the
 * assertions, so a failure leaks nothing. */
static void expect_conformant(rill_tck_report *r, size_t count, const char *const *must_pass)
{
    char bad[600] = "";
    for (size_t i = 0; i < rill_tck_report_count(r) && !bad[0]; i++) {
        const char *name = rill_tck_report_name(r, i), *why = rill_tck_report_reason(r, i);
        rill_tck_status st = rill_tck_report_status(r, i);
        if (strncmp(name, "required_", 9) == 0 && st != RILL_TCK_PASSED
            && !(st == RILL_TCK_SKIPPED && known_skip(why)))
            snprintf(bad, sizeof bad, "%s: %s (%s)", name, rill_tck_status_name(st), why);
    }
    for (size_t j = 0; must_pass && must_pass[j] && !bad[0]; j++) {
        long i = rill_tck_report_find(r, must_pass[j]);
        if (i < 0 || rill_tck_report_status(r, (size_t)i) != RILL_TCK_PASSED)
            snprintf(bad, sizeof bad, "%s: not passed (%s)", must_pass[j],
                     i < 0 ? "missing" : rill_tck_report_reason(r, (size_t)i));
    }
    size_t failed = rill_tck_report_failed(r), n = rill_tck_report_count(r);
    rill_tck_report_free(r);
    ck_assert_msg(bad[0] == '\0', "%s", bad);
    ck_assert_uint_eq(failed, 0);
    ck_assert_uint_eq(n, count);
}

/* Asserts that test `name` has status `want` and that its reason mentions `why`. */
static void assert_status(const rill_tck_report *r, const char *name, rill_tck_status want,
                          const char *why)
{
    long i = rill_tck_report_find(r, name);
    ck_assert_msg(i >= 0, "no test %s", name);
    rill_tck_status st = rill_tck_report_status(r, (size_t)i);
    const char *reason = rill_tck_report_reason(r, (size_t)i);
    ck_assert_msg(st == want, "%s: %s, expected %s (%s)", name, rill_tck_status_name(st),
                  rill_tck_status_name(want), reason);
    ck_assert_msg(!why || strstr(reason, why), "%s: reason \"%s\" lacks \"%s\"", name, reason, why);
}

#define NBLACKBOX 26
#define NWHITEBOX 27
#define NPROCESSOR 70

/* ------------------------------------------------------------------------
 * Callback subscribers (rill_subscriber_new), configured by `cb_mode` */

/* A subscriber of callbacks without the library's own rule-2.5 guard
 * (rill_subscriber_new cancels a second subscription before the callbacks
 * see it): the broken cases below need to get the second one. */
typedef struct raw_sub {
    rill_subscriber base;
    rill_callbacks cb;
    void *user;
} raw_sub;

static raw_sub *raw_of(rill_subscriber *s)
{
    return (raw_sub *)s;
}

static void raw_subscribe(rill_subscriber *s, rill_subscription *sub)
{
    raw_of(s)->cb.on_subscribe(raw_of(s)->user, sub);
}

static void raw_next(rill_subscriber *s, void *item)
{
    if (raw_of(s)->cb.on_next)
        raw_of(s)->cb.on_next(raw_of(s)->user, item);
}

static void raw_error(rill_subscriber *s, const rill_error *e)
{
    if (raw_of(s)->cb.on_error)
        raw_of(s)->cb.on_error(raw_of(s)->user, e);
}

static void raw_complete(rill_subscriber *s)
{
    if (raw_of(s)->cb.on_complete)
        raw_of(s)->cb.on_complete(raw_of(s)->user);
}

static void raw_release(rill_subscriber *s)
{
    raw_of(s)->cb.on_release(raw_of(s)->user);
    free(s);
}

static const struct rill_subscriber_ops raw_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = raw_subscribe,
    .on_next = raw_next,
    .on_error = raw_error,
    .on_complete = raw_complete,
    .on_release = raw_release,
};

static rill_subscriber *raw_subscriber_new(const rill_callbacks *cb, void *user)
{
    raw_sub *r = calloc(1, sizeof *r);
    ck_assert_ptr_nonnull(r);
    r->base.ops = &raw_ops;
    r->cb = *cb;
    r->user = user;
    return &r->base;
}

typedef struct cb_user cb_user;

typedef struct cb_stats {
    atomic_int created, released;
    atomic_long items, freed_items;
    cb_user *last;      /* the newest one (tests run one at a time) */
    int real_items;     /* items are malloc'd ints: free them in on_next */
} cb_stats;

enum cb_mode {
    CB_GOOD,            /* request(1) in on_subscribe and in each on_next; cancels a second subscription */
    CB_LAZY,            /* requests only when the kit's trigger_request asks */
    CB_NEVER,           /* broken: never requests (rule 2.1) */
    CB_REQUEST_IN_COMPLETE, /* broken: request(1) from on_complete (rule 2.3) */
    CB_NO_SECOND_CANCEL /* broken: requests from every subscription it gets (rule 2.5) */
};

struct cb_user {
    enum cb_mode mode;
    cb_stats *stats;
    rill_subscription *sub;
};

static void cb_subscribe(void *user, rill_subscription *s)
{
    cb_user *u = user;
    if (u->sub && u->mode != CB_NO_SECOND_CANCEL) {   /* rule 2.5 */
        rill_cancel(s);
        return;
    }
    u->sub = s;
    if (u->mode == CB_GOOD || u->mode == CB_REQUEST_IN_COMPLETE || u->mode == CB_NO_SECOND_CANCEL)
        rill_request(s, 1);
}

static void cb_next(void *user, void *item)
{
    cb_user *u = user;
    atomic_fetch_add(&u->stats->items, 1);
    if (u->stats->real_items) {
        free(item);
        atomic_fetch_add(&u->stats->freed_items, 1);
    }
    if (u->mode == CB_GOOD)
        rill_request(u->sub, 1);
}

static void cb_complete(void *user)
{
    cb_user *u = user;
    if (u->mode == CB_REQUEST_IN_COMPLETE)
        rill_request(u->sub, 1);
}

static void cb_release(void *user)
{
    cb_user *u = user;
    atomic_fetch_add(&u->stats->released, 1);
    if (u->stats->last == u)
        u->stats->last = NULL;
    free(u);
}

typedef struct cb_ctx {
    enum cb_mode mode;
    cb_stats stats;
    int default_on_subscribe;   /* rill_callbacks.on_subscribe NULL: the library's default */
} cb_ctx;

static rill_subscriber *cb_create(void *ctx)
{
    cb_ctx *c = ctx;
    cb_user *u = calloc(1, sizeof *u);
    ck_assert_ptr_nonnull(u);
    u->mode = c->mode;
    u->stats = &c->stats;
    rill_callbacks cb = {
        .on_subscribe = c->default_on_subscribe ? NULL : cb_subscribe,
        .on_next = cb_next,
        .on_complete = cb_complete,
        .on_release = cb_release,
    };
    atomic_fetch_add(&c->stats.created, 1);
    c->stats.last = u;
    if (c->mode == CB_NO_SECOND_CANCEL)
        return raw_subscriber_new(&cb, u);
    return rill_subscriber_new(&cb, u);
}

static void cb_trigger(void *ctx, rill_subscriber *s)
{
    (void)s;   /* the newest user state is the subscriber's (one test at a time) */
    cb_ctx *c = ctx;
    ck_assert_ptr_nonnull(c->stats.last);
    rill_request(c->stats.last->sub, 8);
}

static void *malloc_element(void *ctx, uint64_t i)
{
    (void)ctx;
    long *v = malloc(sizeof *v);
    ck_assert_ptr_nonnull(v);
    *v = (long)i;
    return v;
}

static void blackbox_init(rill_tck_blackbox_options *o, cb_ctx *c, const char *name)
{
    rill_tck_blackbox_options_init(o);
    o->create = cb_create;
    o->ctx = c;
    o->name = name;
    o->timeout_ns = 2000000000u;   /* only failing waits take this long */
    o->quiet_ns = 5000000u;
}

static rill_tck_report *run_blackbox(const rill_tck_blackbox_options *o)
{
    rill_tck_report *r = rill_tck_verify_subscriber_blackbox(o);
    ck_assert_ptr_nonnull(r);
    maybe_print(r);
    return r;
}

static const char *const blackbox_must_pass[] = {
    "required_spec201_blackbox_mustSignalDemandViaSubscriptionRequest",
    "required_spec203_blackbox_mustNotCallMethodsOnSubscriptionOrPublisherInOnComplete",
    "required_spec203_blackbox_mustNotCallMethodsOnSubscriptionOrPublisherInOnError",
    "required_spec205_blackbox_mustCallSubscriptionCancelIfItAlreadyHasAnSubscriptionAndReceivesAnotherOnSubscribeSignal",
    "required_spec209_blackbox_mustBePreparedToReceiveAnOnCompleteSignalWithPrecedingRequestCall",
    "required_spec209_blackbox_mustBePreparedToReceiveAnOnCompleteSignalWithoutPrecedingRequestCall",
    "required_spec210_blackbox_mustBePreparedToReceiveAnOnErrorSignalWithPrecedingRequestCall",
    "required_spec210_blackbox_mustBePreparedToReceiveAnOnErrorSignalWithoutPrecedingRequestCall",
    NULL
};

START_TEST(test_callbacks_blackbox)
{
    long base = live_allocations();
    cb_ctx c = { .mode = CB_GOOD };
    rill_tck_blackbox_options o;
    blackbox_init(&o, &c, "rill_subscriber_new: request(1) in on_subscribe and each on_next");
    rill_tck_report *r = run_blackbox(&o);
    /* 201 sends as many items as requested, up to 512: one request(1) per
     * on_next makes that 512 exactly. */
    long i = rill_tck_report_find(r, N201);
    ck_assert_int_eq(rill_tck_report_status(r, (size_t)i), RILL_TCK_PASSED);
    ck_assert_int_eq(atomic_load(&c.stats.items), 512);
    expect_conformant(r, NBLACKBOX, blackbox_must_pass);
    /* one subscriber per test that runs (8), each released */
    ck_assert_int_eq(atomic_load(&c.stats.created), 8);
    ck_assert_int_eq(atomic_load(&c.stats.released), 8);
    assert_no_leak(base);
}
END_TEST

START_TEST(test_callbacks_blackbox_trigger_request)
{
    /* A subscriber that requests only when told: the TCK's triggerRequest. */
    long base = live_allocations();
    cb_ctx c = { .mode = CB_LAZY };
    rill_tck_blackbox_options o;
    blackbox_init(&o, &c, "rill_subscriber_new: requests on trigger_request");
    o.trigger_request = cb_trigger;
    rill_tck_report *r = run_blackbox(&o);
    ck_assert_int_eq(atomic_load(&c.stats.items), 8);   /* 201: what request(8) asked for */
    expect_conformant(r, NBLACKBOX, blackbox_must_pass);
    ck_assert_int_eq(atomic_load(&c.stats.released), atomic_load(&c.stats.created));
    assert_no_leak(base);
}
END_TEST

START_TEST(test_callbacks_blackbox_real_items)
{
    /* Items are malloc'd: each reaches on_next exactly once, which frees it. */
    long base = live_allocations();
    cb_ctx c = { .mode = CB_GOOD };
    c.stats.real_items = 1;
    rill_tck_blackbox_options o;
    blackbox_init(&o, &c, "rill_subscriber_new: malloc'd items");
    o.create_element = malloc_element;
    expect_conformant(run_blackbox(&o), NBLACKBOX, blackbox_must_pass);
    ck_assert_int_eq(atomic_load(&c.stats.freed_items), 512);
    assert_no_leak(base);
}
END_TEST

START_TEST(test_callbacks_blackbox_default_on_subscribe)
{
    /* on_subscribe NULL: rill_subscriber_new's own default, request(RILL_UNBOUNDED). */
    long base = live_allocations();
    cb_ctx c = { .mode = CB_GOOD, .default_on_subscribe = 1 };
    rill_tck_blackbox_options o;
    blackbox_init(&o, &c, "rill_subscriber_new: on_subscribe NULL (request(RILL_UNBOUNDED))");
    o.timeout_ns = 300000000u;
    rill_tck_report *r = run_blackbox(&o);
    ck_assert_int_eq(atomic_load(&c.stats.items), 512);   /* the TCK's cap */
    expect_conformant(r, NBLACKBOX, blackbox_must_pass);
    assert_no_leak(base);
}
END_TEST

/* ------------------------------------------------------------------------
 * A whitebox wrapper: a callbacks subscriber that reports to the kit's
 * probe and lets the kit pull its strings (as a binding would write one). */

typedef struct wb_user {
    rill_tck_probe *probe;
    rill_subscription *sub;
    int no_second_cancel;   /* broken: requests from a second subscription (rule 2.5) */
    atomic_int *released;
} wb_user;

static void wb_trigger(void *puppet, uint64_t n)
{
    rill_request(((wb_user *)puppet)->sub, n);
}

static void wb_cancel(void *puppet)
{
    rill_cancel(((wb_user *)puppet)->sub);
}

static void wb_subscribe(void *user, rill_subscription *s)
{
    wb_user *u = user;
    if (u->sub) {
        if (u->no_second_cancel)
            rill_request(s, 1);
        else
            rill_cancel(s);   /* rule 2.5 */
        return;
    }
    u->sub = s;
    rill_tck_probe_register_on_subscribe(u->probe, wb_trigger, wb_cancel, u);
}

static void wb_next(void *user, void *item)
{
    rill_tck_probe_register_on_next(((wb_user *)user)->probe, item);
}

static void wb_error(void *user, const rill_error *e)
{
    rill_tck_probe_register_on_error(((wb_user *)user)->probe, e);
}

static void wb_complete(void *user)
{
    rill_tck_probe_register_on_complete(((wb_user *)user)->probe);
}

static void wb_release(void *user)
{
    wb_user *u = user;
    atomic_fetch_add(u->released, 1);
    free(u);
}

typedef struct wb_ctx {
    int no_second_cancel;
    atomic_int created, released;
} wb_ctx;

static rill_subscriber *wb_create(void *ctx, rill_tck_probe *probe)
{
    wb_ctx *c = ctx;
    wb_user *u = calloc(1, sizeof *u);
    ck_assert_ptr_nonnull(u);
    u->probe = probe;
    u->no_second_cancel = c->no_second_cancel;
    u->released = &c->released;
    atomic_fetch_add(&c->created, 1);
    static const rill_callbacks cb = {
        .on_subscribe = wb_subscribe, .on_next = wb_next, .on_error = wb_error,
        .on_complete = wb_complete, .on_release = wb_release,
    };
    return u->no_second_cancel ? raw_subscriber_new(&cb, u) : rill_subscriber_new(&cb, u);
}

static const char *const whitebox_must_pass[] = {
    "required_exerciseWhiteboxHappyPath",
    "required_spec201_mustSignalDemandViaSubscriptionRequest",
    "required_spec203_mustNotCallMethodsOnSubscriptionOrPublisherInOnComplete",
    "required_spec203_mustNotCallMethodsOnSubscriptionOrPublisherInOnError",
    "required_spec205_mustCallSubscriptionCancelIfItAlreadyHasAnSubscriptionAndReceivesAnotherOnSubscribeSignal",
    "required_spec208_mustBePreparedToReceiveOnNextSignalsAfterHavingCalledSubscriptionCancel",
    "required_spec209_mustBePreparedToReceiveAnOnCompleteSignalWithPrecedingRequestCall",
    "required_spec209_mustBePreparedToReceiveAnOnCompleteSignalWithoutPrecedingRequestCall",
    "required_spec210_mustBePreparedToReceiveAnOnErrorSignalWithPrecedingRequestCall",
    "required_spec210_mustBePreparedToReceiveAnOnErrorSignalWithoutPrecedingRequestCall",
    "required_spec308_requestMustRegisterGivenNumberElementsToBeProduced",
    NULL
};

static rill_tck_report *run_whitebox(wb_ctx *c, const char *name, uint64_t timeout_ns)
{
    rill_tck_whitebox_options o;
    rill_tck_whitebox_options_init(&o);
    o.create = wb_create;
    o.ctx = c;
    o.name = name;
    o.timeout_ns = timeout_ns;
    o.quiet_ns = 5000000u;
    rill_tck_report *r = rill_tck_verify_subscriber_whitebox(&o);
    ck_assert_ptr_nonnull(r);
    maybe_print(r);
    return r;
}

START_TEST(test_whitebox_wrapper)
{
    long base = live_allocations();
    wb_ctx c = { 0 };
    rill_tck_report *r = run_whitebox(&c, "a rill_subscriber_new wrapper", 2000000000u);
    /* 208: the request reached the kit before the cancel, so an item followed it */
    long i = rill_tck_report_find(r, "required_spec208_mustBePreparedToReceiveOnNextSignalsAfterHavingCalledSubscriptionCancel");
    ck_assert_str_eq(rill_tck_report_reason(r, (size_t)i), "");
    expect_conformant(r, NWHITEBOX, whitebox_must_pass);
    ck_assert_int_eq(atomic_load(&c.created), 11);   /* one per test that runs */
    ck_assert_int_eq(atomic_load(&c.released), 11);
    assert_no_leak(base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Every identity-capable operator passes processor verification */

typedef struct op_case {
    const char *name;
    rill_publisher *(*apply)(void *ctx, rill_publisher *up);
    uint64_t max_elements;   /* 0 here: the default */
    uint64_t prefetch;       /* the documented bound; RILL_UNBOUNDED: none */
    int sched;               /* 0 none, 1 single thread, 2 pool of 2 */
    uint32_t arg;            /* prefetch of observe_on; capacity of buffer */
    int only_empty;          /* max_elements 0 */
} op_case;

typedef struct op_ctx {
    const op_case *c;
    rill_scheduler *s;
    rill_metrics *m;
    atomic_long discards;
} op_ctx;

static int identity(void *ctx, void *in, void **out)
{
    (void)ctx;
    *out = in;
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
    atomic_fetch_add(&((op_ctx *)ctx)->discards, 1);
}

static rill_publisher *ap_map(void *ctx, rill_publisher *up)
{
    return rill_map(up, identity, ctx);
}

static rill_publisher *ap_filter(void *ctx, rill_publisher *up)
{
    return rill_filter(up, keep_all, ctx);
}

static rill_publisher *ap_take(void *ctx, rill_publisher *up)
{
    (void)ctx;
    return rill_take(up, UINT64_C(1) << 40);
}

static rill_publisher *ap_on_discard(void *ctx, rill_publisher *up)
{
    return rill_on_discard(up, count_discard, ctx);
}

static rill_publisher *ap_observe_on(void *ctx, rill_publisher *up)
{
    op_ctx *o = ctx;
    return rill_observe_on(up, o->s, o->c->arg);
}

static rill_publisher *ap_subscribe_on(void *ctx, rill_publisher *up)
{
    return rill_subscribe_on(up, ((op_ctx *)ctx)->s);
}

static rill_publisher *ap_delay(void *ctx, rill_publisher *up)
{
    return rill_delay(up, 0, ((op_ctx *)ctx)->s);
}

static rill_publisher *ap_buffer(void *ctx, rill_publisher *up)
{
    static const rill_overflow policy[] = { RILL_OVERFLOW_ERROR, RILL_OVERFLOW_DROP_OLDEST,
                                            RILL_OVERFLOW_DROP_LATEST };
    op_ctx *o = ctx;
    return rill_on_backpressure_buffer(up, 1024, policy[o->c->arg]);
}

static rill_publisher *ap_latest(void *ctx, rill_publisher *up)
{
    (void)ctx;
    return rill_on_backpressure_latest(up);
}

static rill_publisher *ap_drop(void *ctx, rill_publisher *up)
{
    (void)ctx;
    return rill_on_backpressure_drop(up);
}

static rill_publisher *ap_limit_rate(void *ctx, rill_publisher *up)
{
    (void)ctx;
    return rill_limit_rate(up, 4, 2);
}

static rill_publisher *ap_probe(void *ctx, rill_publisher *up)
{
    return rill_probe(up, ((op_ctx *)ctx)->m);
}

/* The backpressure stages request RILL_UNBOUNDED upstream by design, so a
 * synchronous rill_range pours a whole stream in at once: which streams of
 * exactly n items survive decides max_elements (as in check_tck.c):
 * buffer(1024) any n <= 1024; latest (one slot) n <= 1; drop n = 0. The
 * publisher half also runs with the observe_on / subscribe_on / delay
 * failed publisher apply(rill_fail), as the kit builds it. */
static const op_case op_cases[] = {
    { "map (identity)", ap_map, 0, 0, 0, 0, 0 },
    { "filter (keep all)", ap_filter, 0, 0, 0, 0, 0 },
    { "take(2^40)", ap_take, 0, 0, 0, 0, 0 },
    { "on_discard", ap_on_discard, 0, 0, 0, 0, 0 },
    { "observe_on(single thread, prefetch 16)", ap_observe_on, 0, 16, 1, 16, 0 },
    { "observe_on(single thread, prefetch 256)", ap_observe_on, 0, 256, 1, 256, 0 },
    { "observe_on(pool of 2, prefetch 16)", ap_observe_on, 0, 16, 2, 16, 0 },
    { "observe_on(pool of 2, prefetch 256)", ap_observe_on, 0, 256, 2, 256, 0 },
    { "subscribe_on(single thread)", ap_subscribe_on, 0, 0, 1, 0, 0 },
    { "subscribe_on(pool of 2)", ap_subscribe_on, 0, 0, 2, 0, 0 },
    { "delay(0, single thread)", ap_delay, 0, 256, 1, 0, 0 },
    { "on_backpressure_buffer(1024, ERROR)", ap_buffer, 1024, RILL_UNBOUNDED, 0, 0, 0 },
    { "on_backpressure_buffer(1024, DROP_OLDEST)", ap_buffer, 1024, RILL_UNBOUNDED, 0, 1, 0 },
    { "on_backpressure_buffer(1024, DROP_LATEST)", ap_buffer, 1024, RILL_UNBOUNDED, 0, 2, 0 },
    { "on_backpressure_latest", ap_latest, 1, RILL_UNBOUNDED, 0, 0, 0 },
    { "on_backpressure_drop", ap_drop, 0, RILL_UNBOUNDED, 0, 0, 1 },
    { "limit_rate(4, 2)", ap_limit_rate, 0, 0, 0, 0, 0 },
    { "probe", ap_probe, 0, 0, 0, 0, 0 },
};

#define NOPS (sizeof op_cases / sizeof op_cases[0])

static const char *const processor_must_pass[] = {
    "required_exerciseWhiteboxHappyPath",
    "required_spec201_mustSignalDemandViaSubscriptionRequest",
    "required_spec203_mustNotCallMethodsOnSubscriptionOrPublisherInOnComplete",
    "required_spec203_mustNotCallMethodsOnSubscriptionOrPublisherInOnError",
    "required_spec205_mustCallSubscriptionCancelIfItAlreadyHasAnSubscriptionAndReceivesAnotherOnSubscribeSignal",
    "required_spec208_mustBePreparedToReceiveOnNextSignalsAfterHavingCalledSubscriptionCancel",
    "required_spec209_mustBePreparedToReceiveAnOnCompleteSignalWithPrecedingRequestCall",
    "required_spec209_mustBePreparedToReceiveAnOnCompleteSignalWithoutPrecedingRequestCall",
    "required_spec210_mustBePreparedToReceiveAnOnErrorSignalWithPrecedingRequestCall",
    "required_spec210_mustBePreparedToReceiveAnOnErrorSignalWithoutPrecedingRequestCall",
    "required_spec308_requestMustRegisterGivenNumberElementsToBeProduced",
    "mustImmediatelyPassOnOnErrorEventsReceivedFromItsUpstreamToItsDownstream",
    "required_rill_identityMustForwardEveryItemUnchangedAndInOrder",
    "required_spec109_mustIssueOnSubscribeForNonNullSubscriber",
    "required_spec109_mayRejectCallsToSubscribeIfPublisherIsUnableOrUnwillingToServeThemRejectionMustTriggerOnErrorAfterOnSubscribe",
    NULL
};

static void proc_init(rill_tck_processor_options *o, const char *name)
{
    rill_tck_processor_options_init(o);
    o->name = name;
    o->timeout_ns = 2000000000u;
    o->quiet_ns = 10000000u;
    o->stochastic_runs = quick() ? 10 : 100;
}

static rill_tck_report *run_processor(const rill_tck_processor_options *o)
{
    rill_tck_report *r = rill_tck_verify_processor(o);
    ck_assert_ptr_nonnull(r);
    maybe_print(r);
    return r;
}

/* Every operator must pass every required test. When this suite was
 * written, test 205 (rule 2.5: cancel a second subscription) failed for
 * several stages, and observe_on and delay corrupt memory there: see
 * docs/CONFORMANCE.md, "Known failures". These cases stay red until the
 * stages are fixed; the kit is right to fail them. */
START_TEST(test_operator)
{
    const op_case *c = &op_cases[_i];
    op_ctx x = { .c = c };
    if (c->sched)
        x.s = c->sched == 1 ? rill_single_thread_new() : rill_thread_pool_new(2);
    x.m = rill_metrics_new("tck");
    ck_assert_ptr_nonnull(x.m);
    long base = live_allocations();
    rill_tck_processor_options o;
    proc_init(&o, c->name);
    o.apply = c->apply;
    o.ctx = &x;
    o.prefetch = c->prefetch;
    if (c->max_elements)
        o.max_elements = c->max_elements;
    if (c->only_empty)
        o.max_elements = 0;
    rill_tck_report *r = run_processor(&o);
    /* A declared bound is checked; RILL_UNBOUNDED skips the check. */
    long i = rill_tck_report_find(r, "required_rill_upstreamDemandMustStayWithinDownstreamDemandPlusPrefetch");
    ck_assert_int_eq(rill_tck_report_status(r, (size_t)i),
                     c->prefetch == RILL_UNBOUNDED ? RILL_TCK_SKIPPED : RILL_TCK_PASSED);
    expect_conformant(r, NPROCESSOR, processor_must_pass);
    assert_no_leak(base);
    ck_assert_int_eq(atomic_load(&x.discards), 0);   /* an identity drops nothing */
    rill_metrics_unref(x.m);
    rill_scheduler_unref(x.s);
}
END_TEST

/* ------------------------------------------------------------------------
 * Broken subscribers: each breaks one rule, and the kit says which */

static rill_tck_report *run_broken_blackbox(enum cb_mode mode, cb_ctx *c)
{
    c->mode = mode;
    rill_tck_blackbox_options o;
    blackbox_init(&o, c, "a broken subscriber");
    o.timeout_ns = 200000000u;   /* failing waits take it in full */
    return run_blackbox(&o);
}

START_TEST(test_broken_never_requests)
{
    long base = live_allocations();
    cb_ctx c = { 0 };
    rill_tck_report *r = run_broken_blackbox(CB_NEVER, &c);
    assert_status(r, N201, RILL_TCK_FAILED,
                  "rule 2.1: no request within 200 ms of on_subscribe (no trigger_request given)");
    assert_status(r, "required_spec209_blackbox_mustBePreparedToReceiveAnOnCompleteSignalWithPrecedingRequestCall",
                  RILL_TCK_FAILED, "rule 2.1");
    /* what needs no request still passes */
    assert_status(r, "required_spec209_blackbox_mustBePreparedToReceiveAnOnCompleteSignalWithoutPrecedingRequestCall",
                  RILL_TCK_PASSED, NULL);
    assert_status(r, N203C, RILL_TCK_PASSED, NULL);
    ck_assert_uint_eq(rill_tck_report_failed(r), 3);   /* 201, 209 and 210 with a request */
    rill_tck_report_free(r);
    ck_assert_int_eq(atomic_load(&c.stats.released), atomic_load(&c.stats.created));
    assert_no_leak(base);
}
END_TEST

START_TEST(test_broken_request_in_on_complete)
{
    long base = live_allocations();
    cb_ctx c = { 0 };
    rill_tck_report *r = run_broken_blackbox(CB_REQUEST_IN_COMPLETE, &c);
    assert_status(r, N203C, RILL_TCK_FAILED, "rule 2.3: request(1) called from inside on_complete");
    assert_status(r, N203E, RILL_TCK_PASSED, NULL);   /* its on_error is fine */
    assert_status(r, "required_spec210_blackbox_mustBePreparedToReceiveAnOnErrorSignalWithoutPrecedingRequestCall",
                  RILL_TCK_PASSED, NULL);
    rill_tck_report_free(r);
    assert_no_leak(base);
}
END_TEST

START_TEST(test_broken_keeps_second_subscription)
{
    long base = live_allocations();
    cb_ctx c = { 0 };
    rill_tck_report *r = run_broken_blackbox(CB_NO_SECOND_CANCEL, &c);
    assert_status(r, N205, RILL_TCK_FAILED, "rule 2.5: request(1) on a second subscription");
    assert_status(r, N201, RILL_TCK_PASSED, NULL);
    ck_assert_uint_eq(rill_tck_report_failed(r), 1);
    rill_tck_report_free(r);
    assert_no_leak(base);
}
END_TEST

START_TEST(test_broken_whitebox_keeps_second_subscription)
{
    long base = live_allocations();
    wb_ctx c = { .no_second_cancel = 1 };
    rill_tck_report *r = run_whitebox(&c, "a broken whitebox subscriber", 200000000u);
    assert_status(r, W205, RILL_TCK_FAILED,
                  "rule 2.5: a second on_subscribe, and its subscription was not cancelled within 200 ms");
    assert_status(r, WHAPPY, RILL_TCK_PASSED, NULL);
    ck_assert_uint_eq(rill_tck_report_failed(r), 1);
    rill_tck_report_free(r);
    assert_no_leak(base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Broken operators, written against rill/stage.h: a pass-through whose
 * fault is switched on by `fault`. Upstream's signals are serial, so the
 * link's signal-side state is plain; downstream's cancel may come from any
 * thread (atomic). The link releases downstream when upstream releases it. */

enum op_fault {
    NO_CANCEL_UPSTREAM,   /* downstream cancel stops the stream here, never upstream */
    IGNORES_DEMAND        /* requests RILL_UNBOUNDED upstream and forwards it all */
};

typedef struct brk_op {
    rill_publisher base;
    rill_publisher *up;
    enum op_fault fault;
} brk_op;

typedef struct brk_link {
    rill_subscriber in;      /* upstream signals this */
    rill_subscription out;   /* downstream holds this */
    rill_subscriber *down;
    rill_subscription *up;
    enum op_fault fault;
    atomic_int cancelled;
} brk_link;

#define LINK_OF_IN(s) ((brk_link *)(void *)((char *)(s) - offsetof(brk_link, in)))
#define LINK_OF_OUT(s) ((brk_link *)(void *)((char *)(s) - offsetof(brk_link, out)))

static void link_subscribe(rill_subscriber *self, rill_subscription *s)
{
    brk_link *l = LINK_OF_IN(self);
    if (l->up) {   /* rule 2.5: it breaks one rule only */
        rill_cancel(s);
        return;
    }
    l->up = s;
    rill_deliver_subscribe(l->down, &l->out);
    if (l->fault == IGNORES_DEMAND)
        rill_request(s, RILL_UNBOUNDED);
}

static void link_next(rill_subscriber *self, void *item)
{
    brk_link *l = LINK_OF_IN(self);
    if (!atomic_load(&l->cancelled))
        rill_deliver_next(l->down, item);
}

static void link_error(rill_subscriber *self, const rill_error *e)
{
    brk_link *l = LINK_OF_IN(self);
    if (!atomic_load(&l->cancelled))
        rill_deliver_error(l->down, e);
}

static void link_complete(rill_subscriber *self)
{
    brk_link *l = LINK_OF_IN(self);
    if (!atomic_load(&l->cancelled))
        rill_deliver_complete(l->down);
}

static void link_release(rill_subscriber *self)
{
    brk_link *l = LINK_OF_IN(self);
    rill_deliver_release(l->down);
    free(l);
}

static const struct rill_subscriber_ops link_in_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = link_subscribe,
    .on_next = link_next,
    .on_error = link_error,
    .on_complete = link_complete,
    .on_release = link_release,
};

static void link_request(rill_subscription *self, uint64_t n)
{
    brk_link *l = LINK_OF_OUT(self);
    if (l->fault != IGNORES_DEMAND)
        rill_request(l->up, n);
}

static void link_cancel(rill_subscription *self)
{
    brk_link *l = LINK_OF_OUT(self);
    atomic_store(&l->cancelled, 1);
    if (l->fault != NO_CANCEL_UPSTREAM)
        rill_cancel(l->up);
}

static const struct rill_subscription_ops link_out_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = link_request,
    .cancel = link_cancel,
};

static void brk_subscribe(rill_publisher *self, rill_subscriber *s)
{
    brk_op *op = (brk_op *)self;
    brk_link *l = calloc(1, sizeof *l);
    ck_assert_ptr_nonnull(l);
    l->in.ops = &link_in_ops;
    l->out.ops = &link_out_ops;
    l->down = s;
    l->fault = op->fault;
    rill_subscribe(op->up, &l->in);
}

static void brk_destroy(rill_publisher *self)
{
    rill_publisher_unref(((brk_op *)self)->up);
    free(self);
}

static const struct rill_publisher_ops brk_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = brk_subscribe,
    .destroy = brk_destroy,
};

static rill_publisher *ap_broken(void *ctx, rill_publisher *up)
{
    brk_op *op = calloc(1, sizeof *op);
    ck_assert_ptr_nonnull(op);
    rill_publisher_init(&op->base, &brk_ops);
    op->up = up;
    op->fault = *(enum op_fault *)ctx;
    return &op->base;
}

static rill_tck_report *run_broken_processor(enum op_fault *fault, uint64_t max_elements)
{
    rill_tck_processor_options o;
    proc_init(&o, "a broken operator");
    o.apply = ap_broken;
    o.ctx = fault;
    o.max_elements = max_elements;
    o.prefetch = 0;   /* it claims to pass demand through */
    o.timeout_ns = 200000000u;
    o.quiet_ns = 5000000u;
    o.skip_stochastic = 1;
    return run_processor(&o);
}

START_TEST(test_broken_no_cancel_upstream)
{
    /* max_elements 0: over rill_range an uncancelled subscription would never
     * end, so the publisher half runs only on empty streams. */
    long base = live_allocations();
    enum op_fault f = NO_CANCEL_UPSTREAM;
    rill_tck_report *r = run_broken_processor(&f, 0);
    assert_status(r, WHAPPY, RILL_TCK_FAILED,
                  "rule 2.6: downstream cancelled, and the operator did not cancel its upstream "
                  "subscription within 200 ms");
    assert_status(r, "required_spec201_mustSignalDemandViaSubscriptionRequest", RILL_TCK_PASSED, NULL);
    assert_status(r, "required_rill_identityMustForwardEveryItemUnchangedAndInOrder", RILL_TCK_PASSED, NULL);
    ck_assert_uint_eq(rill_tck_report_failed(r), 1);
    rill_tck_report_free(r);
    assert_no_leak(base);
}
END_TEST

START_TEST(test_broken_ignores_demand)
{
    long base = live_allocations();
    enum op_fault f = IGNORES_DEMAND;
    rill_tck_report *r = run_broken_processor(&f, 20);
    assert_status(r, "required_spec101_subscriptionRequestMustResultInTheCorrectNumberOfProducedElements",
                  RILL_TCK_FAILED, "rule 1.1: on_next #1 with only 0 requested");
    assert_status(r, "required_rill_upstreamDemandMustStayWithinDownstreamDemandPlusPrefetch",
                  RILL_TCK_FAILED,
                  "before any request downstream: 18446744073709551615 requested upstream for 0 "
                  "requested downstream, more than the declared prefetch (0) allows");
    /* the subscriber face alone cannot tell: the kit sends only what
     * downstream asked for there */
    assert_status(r, WHAPPY, RILL_TCK_PASSED, NULL);
    rill_tck_report_free(r);
    assert_no_leak(base);
}
END_TEST

/* ------------------------------------------------------------------------
 * The API */

static rill_subscriber *null_create(void *ctx)
{
    (void)ctx;
    errno = ENOMEM;
    return NULL;
}

START_TEST(test_api)
{
    rill_tck_blackbox_options b;
    rill_tck_blackbox_options_init(&b);
    ck_assert_uint_eq(b.version, RILL_TCK_BLACKBOX_OPTIONS_VERSION);
    errno = 0;
    ck_assert_ptr_null(rill_tck_verify_subscriber_blackbox(&b));   /* no create */
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(rill_tck_verify_subscriber_blackbox(NULL));
    rill_tck_whitebox_options w;
    rill_tck_whitebox_options_init(&w);
    ck_assert_uint_eq(w.version, RILL_TCK_WHITEBOX_OPTIONS_VERSION);
    w.create = wb_create;
    w.version = 0;
    errno = 0;
    ck_assert_ptr_null(rill_tck_verify_subscriber_whitebox(&w));
    ck_assert_int_eq(errno, EINVAL);
    rill_tck_processor_options p;
    rill_tck_processor_options_init(&p);
    ck_assert_uint_eq(p.version, RILL_TCK_PROCESSOR_OPTIONS_VERSION);
    ck_assert_uint_eq(p.max_elements, RILL_UNBOUNDED - 1);
    ck_assert_uint_eq(p.prefetch, RILL_UNBOUNDED);
    errno = 0;
    ck_assert_ptr_null(rill_tck_verify_processor(&p));   /* no apply */
    ck_assert_int_eq(errno, EINVAL);
    rill_tck_blackbox_options_init(NULL);
    rill_tck_whitebox_options_init(NULL);
    rill_tck_processor_options_init(NULL);
    /* the probe ignores NULL */
    rill_tck_probe_register_on_subscribe(NULL, wb_trigger, wb_cancel, NULL);
    rill_tck_probe_register_on_next(NULL, NULL);
    rill_tck_probe_register_on_error(NULL, NULL);
    rill_tck_probe_register_on_complete(NULL);
}
END_TEST

START_TEST(test_api_create_returns_null)
{
    rill_tck_blackbox_options o;
    rill_tck_blackbox_options_init(&o);
    o.create = null_create;
    o.quiet_ns = 1000000;
    rill_tck_report *r = rill_tck_verify_subscriber_blackbox(&o);
    ck_assert_ptr_nonnull(r);
    assert_status(r, N201, RILL_TCK_FAILED, "create() returned NULL (errno 12)");
    assert_status(r, "required_spec213_blackbox_onNext_mustThrowNullPointerExceptionWhenParametersAreNull",
                  RILL_TCK_SKIPPED, "NULL is a valid item");
    ck_assert_uint_eq(rill_tck_report_failed(r), 8);   /* every test that runs */
    ck_assert_uint_eq(rill_tck_report_skipped(r), NBLACKBOX - 8);
    /* The summary names the kind of verification. */
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    ck_assert_ptr_nonnull(f);
    rill_tck_report_print(r, f);
    fclose(f);
    ck_assert_ptr_nonnull(strstr(text, "rill TCK subscriber blackbox verification: subscriber: "
                                       "26 tests, 0 passed, 8 failed, 18 skipped"));
    free(text);
    rill_tck_report_free(r);
}
END_TEST

/* ------------------------------------------------------------------------ */

Suite *tck_subscriber_suite(void)
{
    Suite *s = suite_create("tck_subscriber");
    TCase *tc = tcase_create("rill subscribers");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, test_callbacks_blackbox);
    tcase_add_test(tc, test_callbacks_blackbox_trigger_request);
    tcase_add_test(tc, test_callbacks_blackbox_real_items);
    tcase_add_test(tc, test_callbacks_blackbox_default_on_subscribe);
    tcase_add_test(tc, test_whitebox_wrapper);
    suite_add_tcase(s, tc);

    tc = tcase_create("rill operators");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_loop_test(tc, test_operator, 0, (int)NOPS);
    suite_add_tcase(s, tc);

    tc = tcase_create("broken subscribers and operators");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, test_broken_never_requests);
    tcase_add_test(tc, test_broken_request_in_on_complete);
    tcase_add_test(tc, test_broken_keeps_second_subscription);
    tcase_add_test(tc, test_broken_whitebox_keeps_second_subscription);
    tcase_add_test(tc, test_broken_no_cancel_upstream);
    tcase_add_test(tc, test_broken_ignores_demand);
    suite_add_tcase(s, tc);

    tc = tcase_create("kit api");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, test_api);
    tcase_add_test(tc, test_api_create_returns_null);
    suite_add_tcase(s, tc);
    return s;
}
