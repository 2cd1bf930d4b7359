/* tests/check_operators.c — map, map_ex, filter, filter_ex, take,
 * on_discard, on_discard_ex.
 *
 * Layout: a table of "generic" operator cases (each operator wrapped around a
 * source) drives the checks every stage must pass — normal path, empty and
 * failing upstream, exact demand, request(0), re-entrant request over many
 * items, cancel inside on_next, two independent subscriptions. Those run as
 * loop tests in each operator's TCase, indexed by the table. The TCases then
 * add the operator's own contract: callback results, discard hooks, take's
 * demand ceiling, ctx_free, bad arguments.
 *
 * Two helper sources are used besides the library's own:
 *  - a counting generator (rill_generate) that records how many items were
 *    pulled, to see that an operator cancelled upstream at once;
 *  - a "spy" publisher written against rill/stage.h that records every
 *    request and cancel and emits only when the test says so, to see exactly
 *    how much demand an operator passes upstream.
 *
 * Every test checks leaks through the runner's counting allocator.
 */
#include "recorder.h"
#include "suites.h"

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define ITEM(v) ((void *)(intptr_t)(v))

/* A million items, or 20000 when RILL_TEST_QUICK is set (valgrind runs). */
static long big_count(void)
{
    return getenv("RILL_TEST_QUICK") ? 20000 : 1000000;
}

/* Asserts that r saw the values first, first + step, ... (n of them). */
static void assert_items(const recorder *r, size_t n, intptr_t first, intptr_t step)
{
    ck_assert_uint_eq(r->nitems, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(rec_int(r, i), first + (intptr_t)i * step);
}

/* Asserts a finished, well-behaved subscription with the given terminal. */
static void assert_completed(const recorder *r)
{
    ck_assert_msg(rec_ok(r), "protocol violation: %s", r->violation);
    ck_assert_int_eq(r->subscribes, 1);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->errors, 0);
    ck_assert_int_eq(r->releases, 1);
}

static void assert_failed(const recorder *r, int code)
{
    ck_assert_msg(rec_ok(r), "protocol violation: %s", r->violation);
    ck_assert_int_eq(r->subscribes, 1);
    ck_assert_int_eq(r->completes, 0);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, code);
    ck_assert_int_eq(r->releases, 1);
}

/* Still running: subscribed, no terminal, not released. */
static void assert_open(const recorder *r)
{
    ck_assert_msg(rec_ok(r), "protocol violation: %s", r->violation);
    ck_assert_int_eq(r->subscribes, 1);
    ck_assert_int_eq(r->completes, 0);
    ck_assert_int_eq(r->errors, 0);
    ck_assert_int_eq(r->releases, 0);
    ck_assert_ptr_nonnull(r->sub);
}

/* ------------------------------------------------------------------------
 * User functions */

static int map_double(void *ctx, void *in, void **out)
{
    (void)ctx;
    *out = ITEM((intptr_t)in * 2);
    return 0;
}

static int map_triple(void *ctx, void *in, void **out)
{
    (void)ctx;
    *out = ITEM((intptr_t)in * 3);
    return 0;
}

static int pred_even(void *ctx, void *item)
{
    (void)ctx;
    return ((intptr_t)item % 2) == 0;
}

static int pred_mult3(void *ctx, void *item)
{
    (void)ctx;
    return ((intptr_t)item % 3) == 0;
}

/* Items seen by discard hooks: who saw what, in call order. */
#define LOG_CAP 64
typedef struct discard_log {
    int n;                       /* calls, all hooks together */
    int who[LOG_CAP];
    intptr_t item[LOG_CAP];
    long count;                  /* for hooks that only count and sum */
    long long sum;
} discard_log;

typedef struct hook_tag {
    discard_log *log;
    int id;
} hook_tag;

static void log_hook(void *ctx, void *item)
{
    hook_tag *t = ctx;
    discard_log *l = t->log;
    if (l->n < LOG_CAP) {
        l->who[l->n] = t->id;
        l->item[l->n] = (intptr_t)item;
    }
    l->n++;
    l->count++;
    l->sum += (intptr_t)item;
}

/* Asserts the log holds exactly these items, all seen by hook `id`. */
static void assert_log(const discard_log *l, int id, const intptr_t *items, int n)
{
    ck_assert_int_eq(l->n, n);
    for (int i = 0; i < n && i < LOG_CAP; i++) {
        ck_assert_int_eq(l->who[i], id);
        ck_assert_int_eq(l->item[i], items[i]);
    }
}

/* A discard hook for pipelines that must not discard anything. */
static void forbidden_hook(void *ctx, void *item)
{
    (void)ctx;
    ck_abort_msg("unexpected discard of %ld", (long)(intptr_t)item);
}

/* A context whose release is watched: counts uses after ctx_free. */
typedef struct watched_ctx {
    intptr_t offset;
    int calls;
    int frees;
    int calls_after_free;
    int calls_at_free;
} watched_ctx;

static void watched_free(void *ctx)
{
    watched_ctx *w = ctx;
    w->frees++;
    w->calls_at_free = w->calls;
}

static void watched_use(watched_ctx *w)
{
    w->calls++;
    if (w->frees)
        w->calls_after_free++;
}

static int map_watched(void *ctx, void *in, void **out)
{
    watched_ctx *w = ctx;
    watched_use(w);
    *out = ITEM((intptr_t)in + w->offset);
    return 0;
}

static int pred_watched_even(void *ctx, void *item)
{
    watched_use(ctx);
    return ((intptr_t)item % 2) == 0;
}

static void hook_watched(void *ctx, void *item)
{
    (void)item;
    watched_use(ctx);
}

/* ------------------------------------------------------------------------
 * A counting generator: item k is the integer k (1, 2, ...). It stops after
 * `limit` pulls so that a stage that fails to cancel shows up as a wrong
 * count instead of a test that never ends. */

typedef struct counter_src {
    long pulls;
    long limit;
} counter_src;

static int counting_gen(void *state, void **item)
{
    counter_src *c = state;
    if (c->pulls >= c->limit)
        return RILL_GENERATE_END;
    c->pulls++;
    *item = ITEM(c->pulls);
    return RILL_GENERATE_NEXT;
}

/* ------------------------------------------------------------------------
 * The spy: a publisher for one subscriber that records demand and cancel and
 * emits only through spy_emit / spy_complete. It never releases its
 * subscriber while signalling it (a cancel inside on_next or on_subscribe is
 * honoured once that signal returns), as every stage must. The struct lives
 * on the test's stack; `destroyed` tells the test the last reference went. */

typedef struct spy {
    rill_publisher pub;          /* first: the publisher handed to operators */
    rill_subscription sub;
    rill_subscriber *down;
    uint64_t requested;          /* total, saturating */
    int requests, zero_requests, cancels, emitted;
    int depth;                   /* > 0 while signalling */
    int finished, released, destroyed, subscribes;
} spy;

static spy *spy_of_sub(rill_subscription *s)
{
    return (spy *)((char *)s - offsetof(spy, sub));
}

static void spy_settle(spy *sp)
{
    if (sp->depth == 0 && sp->down && !sp->released && (sp->cancels || sp->finished)) {
        sp->released = 1;
        rill_deliver_release(sp->down);
    }
}

static void spy_request(rill_subscription *s, uint64_t n)
{
    spy *sp = spy_of_sub(s);
    ck_assert_msg(!sp->released, "request after release");
    sp->requests++;
    if (n == 0)
        sp->zero_requests++;
    else
        sp->requested = (n >= RILL_UNBOUNDED - sp->requested) ? RILL_UNBOUNDED : sp->requested + n;
}

static void spy_cancel(rill_subscription *s)
{
    spy *sp = spy_of_sub(s);
    ck_assert_msg(!sp->released, "cancel after release");
    sp->cancels++;
    spy_settle(sp);
}

static const struct rill_subscription_ops spy_sub_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = spy_request,
    .cancel = spy_cancel,
};

static void spy_subscribe(rill_publisher *self, rill_subscriber *s)
{
    spy *sp = (spy *)self;
    if (sp->subscribes++) {
        rill_reject(s, EBUSY, NULL);
        return;
    }
    sp->down = s;
    sp->depth++;
    rill_deliver_subscribe(s, &sp->sub);
    sp->depth--;
    spy_settle(sp);
}

static void spy_destroy(rill_publisher *self)
{
    ((spy *)self)->destroyed++;
}

static const struct rill_publisher_ops spy_pub_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = spy_subscribe,
    .destroy = spy_destroy,
};

/* Returns the spy's publisher reference (for an operator to consume). */
static rill_publisher *spy_init(spy *sp)
{
    memset(sp, 0, sizeof *sp);
    sp->sub.ops = &spy_sub_ops;
    rill_publisher_init(&sp->pub, &spy_pub_ops);
    return &sp->pub;
}

/* Emits one item; the spy itself checks that it was requested. */
static void spy_emit(spy *sp, intptr_t v)
{
    ck_assert_msg(sp->down && !sp->released && !sp->cancels && !sp->finished,
                  "spy_emit on an ended subscription");
    ck_assert_msg(sp->requested == RILL_UNBOUNDED || (uint64_t)sp->emitted < sp->requested,
                  "the test emits beyond the demand the operator requested");
    sp->emitted++;
    sp->depth++;
    rill_deliver_next(sp->down, ITEM(v));
    sp->depth--;
    spy_settle(sp);
}

static void spy_complete(spy *sp)
{
    ck_assert_msg(sp->down && !sp->released && !sp->finished, "spy_complete twice");
    sp->finished = 1;
    sp->depth++;
    rill_deliver_complete(sp->down);
    sp->depth--;
    spy_settle(sp);
}

/* ------------------------------------------------------------------------
 * Generic cases: every operator, wrapped so that from range(1, ...) the i-th
 * output item (from 0) is mult * (i + 1), and `per` input items make one
 * output item. */

typedef struct op_case {
    const char *name;
    rill_publisher *(*wrap)(rill_publisher *up);
    intptr_t mult;
    long per;
} op_case;

static rill_publisher *wrap_map(rill_publisher *up)
{
    return rill_map(up, map_double, NULL);
}

static rill_publisher *wrap_filter(rill_publisher *up)
{
    return rill_filter(up, pred_even, NULL);
}

/* Large enough never to be the limit: take then behaves as a pass-through. */
static rill_publisher *wrap_take(rill_publisher *up)
{
    return rill_take(up, (uint64_t)1 << 40);
}

static rill_publisher *wrap_on_discard(rill_publisher *up)
{
    return rill_on_discard(up, forbidden_hook, NULL);
}

enum { OP_MAP, OP_FILTER, OP_TAKE, OP_ON_DISCARD, OP_COUNT };

static const op_case op_cases[OP_COUNT] = {
    [OP_MAP] = { "map", wrap_map, 2, 1 },
    [OP_FILTER] = { "filter", wrap_filter, 2, 2 },
    [OP_TAKE] = { "take", wrap_take, 1, 1 },
    [OP_ON_DISCARD] = { "on_discard", wrap_on_discard, 1, 1 },
};

/* The operator over range(1, outputs * per): `outputs` items come out. */
static rill_publisher *op_over_range(const op_case *oc, long outputs)
{
    rill_publisher *p = oc->wrap(rill_range(1, (uint64_t)(outputs * oc->per)));
    ck_assert_ptr_nonnull(p);
    return p;
}

START_TEST(generic_normal)
{
    const op_case *oc = &op_cases[_i];
    long base = live_allocations();
    rill_publisher *p = op_over_range(oc, 10);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_items(r, 10, oc->mult, oc->mult);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* rill_empty completes without any request, through the operator too. */
START_TEST(generic_empty_upstream)
{
    const op_case *oc = &op_cases[_i];
    long base = live_allocations();
    rill_publisher *p = oc->wrap(rill_empty());
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 0);
    ck_assert_uint_eq(r->nitems, 0);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(generic_failing_upstream)
{
    const op_case *oc = &op_cases[_i];
    long base = live_allocations();
    rill_publisher *p = oc->wrap(rill_fail(EIO, "disk on fire"));
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 0);
    ck_assert_uint_eq(r->nitems, 0);
    assert_failed(r, EIO);
    ck_assert_str_eq(r->error_message, "disk on fire");
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* request(3) of 10 gives exactly 3 and no completion; the rest follows a
 * second request, with completion right after the last item. */
START_TEST(generic_demand_exact)
{
    const op_case *oc = &op_cases[_i];
    long base = live_allocations();
    rill_publisher *p = op_over_range(oc, 10);
    recorder *r = rec_run(p, 3);
    assert_items(r, 3, oc->mult, oc->mult);
    assert_open(r);
    rec_request(r, 7);
    assert_items(r, 10, oc->mult, oc->mult);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(generic_request_zero)
{
    const op_case *oc = &op_cases[_i];
    long base = live_allocations();
    rill_publisher *p = op_over_range(oc, 10);
    recorder *r = rec_run(p, 0);
    rec_request(r, 0);
    ck_assert_uint_eq(r->nitems, 0);
    assert_failed(r, EINVAL);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* request(0) in the middle of a stream also ends it with EINVAL. */
START_TEST(generic_request_zero_midstream)
{
    const op_case *oc = &op_cases[_i];
    long base = live_allocations();
    rill_publisher *p = op_over_range(oc, 10);
    recorder *r = rec_run(p, 2);
    assert_items(r, 2, oc->mult, oc->mult);
    rec_request(r, 0);
    assert_items(r, 2, oc->mult, oc->mult);
    assert_failed(r, EINVAL);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The extent of the stack seen from inside on_next. */
typedef struct stack_span {
    uintptr_t lo, hi;
} stack_span;

/* The frame address rather than &local: under ASan, address-taken locals may
 * live on a heap "fake stack", which would make the spread meaningless. */
static void stack_hook(recorder *r, void *item)
{
    (void)item;
    stack_span *sp = r->user;
#if defined(__GNUC__)
    uintptr_t a = (uintptr_t)__builtin_frame_address(0);
#else
    volatile char local;
    uintptr_t a = (uintptr_t)&local;
#endif
    if (a < sp->lo)
        sp->lo = a;
    if (a > sp->hi)
        sp->hi = a;
}

/* request(1) from inside each on_next, over a million inputs: every item
 * arrives, in order, and the stack does not grow (rule 3.3). */
static void check_reentrant(rill_publisher *p, size_t expect_n, intptr_t mult)
{
    stack_span span = { UINTPTR_MAX, 0 };
    recorder *r = rec_new(1);
    r->request_each = 1;
    r->on_next_hook = stack_hook;
    r->user = &span;
    rill_subscribe(p, rec_subscriber(r));
    ck_assert_uint_eq(r->nitems, expect_n);
    ck_assert_int_eq(rec_int(r, 0), mult);
    ck_assert_int_eq(rec_int(r, expect_n / 2), mult * (intptr_t)(expect_n / 2 + 1));
    ck_assert_int_eq(rec_int(r, expect_n - 1), mult * (intptr_t)expect_n);
    assert_completed(r);
    ck_assert_msg(span.hi - span.lo < 4096, "stack spread %lu bytes over %zu items",
                  (unsigned long)(span.hi - span.lo), expect_n);
    rec_free(r);
}

START_TEST(generic_reentrant_request)
{
    const op_case *oc = &op_cases[_i];
    long base = live_allocations();
    long n = big_count();
    rill_publisher *p = oc->wrap(rill_range(1, (uint64_t)n));
    ck_assert_ptr_nonnull(p);
    check_reentrant(p, (size_t)(n / oc->per), oc->mult);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* At the third item: cancel, then request and cancel again, all inside the
 * same on_next. The later calls are no-ops: nothing more arrives, no
 * terminal signal, one release (after on_next has returned — the recorder
 * flags a nested release as an overlap). */
static void cancel_twice_hook(recorder *r, void *item)
{
    (void)item;
    if (r->nitems == 3) {
        rill_cancel(r->sub);
        rill_request(r->sub, 5);
        rill_cancel(r->sub);
    }
}

START_TEST(generic_cancel_inside_on_next)
{
    const op_case *oc = &op_cases[_i];
    long base = live_allocations();
    rill_publisher *p = op_over_range(oc, 20);
    recorder *r = rec_new(10);
    r->on_next_hook = cancel_twice_hook;
    rill_subscribe(p, rec_subscriber(r));
    ck_assert_msg(rec_ok(r), "protocol violation: %s", r->violation);
    assert_items(r, 3, oc->mult, oc->mult);
    ck_assert_int_eq(r->completes, 0);
    ck_assert_int_eq(r->errors, 0);
    ck_assert_int_eq(r->releases, 1);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Cancel before any request: nothing arrives, no terminal, one release. */
START_TEST(generic_cancel_before_request)
{
    const op_case *oc = &op_cases[_i];
    long base = live_allocations();
    rill_publisher *p = op_over_range(oc, 5);
    recorder *r = rec_run(p, 0);
    assert_open(r);
    rill_cancel(r->sub);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A publisher is cold and reusable: two subscriptions, interleaved, each get
 * the whole stream. */
START_TEST(generic_subscribe_twice)
{
    const op_case *oc = &op_cases[_i];
    long base = live_allocations();
    rill_publisher *p = op_over_range(oc, 4);
    recorder *r1 = rec_run(p, 0);
    recorder *r2 = rec_run(p, 2);
    assert_items(r2, 2, oc->mult, oc->mult);
    rec_request(r1, 1);
    assert_items(r1, 1, oc->mult, oc->mult);
    rec_request(r2, 10);
    assert_items(r2, 4, oc->mult, oc->mult);
    assert_completed(r2);
    assert_open(r1);
    rec_request(r1, 10);
    assert_items(r1, 4, oc->mult, oc->mult);
    assert_completed(r1);
    rec_free(r1);
    rec_free(r2);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Runs every generic test for operator `op` inside tc. */
static void add_generic_tests(TCase *tc, int op)
{
    tcase_add_loop_test(tc, generic_normal, op, op + 1);
    tcase_add_loop_test(tc, generic_empty_upstream, op, op + 1);
    tcase_add_loop_test(tc, generic_failing_upstream, op, op + 1);
    tcase_add_loop_test(tc, generic_demand_exact, op, op + 1);
    tcase_add_loop_test(tc, generic_request_zero, op, op + 1);
    tcase_add_loop_test(tc, generic_request_zero_midstream, op, op + 1);
    tcase_add_loop_test(tc, generic_reentrant_request, op, op + 1);
    tcase_add_loop_test(tc, generic_cancel_inside_on_next, op, op + 1);
    tcase_add_loop_test(tc, generic_cancel_before_request, op, op + 1);
    tcase_add_loop_test(tc, generic_subscribe_twice, op, op + 1);
}

/* ------------------------------------------------------------------------
 * map */

START_TEST(map_uses_ctx)
{
    long base = live_allocations();
    watched_ctx w = { .offset = 100 };
    void *arr[] = { ITEM(1), ITEM(5), ITEM(-7), ITEM(0) };
    rill_publisher *p = rill_map(rill_from_array(arr, 4), map_watched, &w);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_uint_eq(r->nitems, 4);
    ck_assert_int_eq(rec_int(r, 0), 101);
    ck_assert_int_eq(rec_int(r, 1), 105);
    ck_assert_int_eq(rec_int(r, 2), 93);
    ck_assert_int_eq(rec_int(r, 3), 100);
    assert_completed(r);
    ck_assert_int_eq(w.calls, 4);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The mapper is never called for an empty stream. */
START_TEST(map_empty_never_calls_mapper)
{
    long base = live_allocations();
    watched_ctx w = { 0 };
    rill_publisher *p = rill_map(rill_empty(), map_watched, &w);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_completed(r);
    ck_assert_int_eq(w.calls, 0);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* range → map → filter → take → sink, with exact values. */
static rill_publisher *sample_chain(void)
{
    rill_publisher *p = rill_range(1, 20);
    p = rill_map(p, map_triple, NULL);   /* 3, 6, 9, 12, ... */
    p = rill_filter(p, pred_even, NULL); /* 6, 12, 18, 24, ... */
    p = rill_take(p, 3);                 /* 6, 12, 18 */
    ck_assert_ptr_nonnull(p);
    return p;
}

START_TEST(map_chain_unbounded)
{
    long base = live_allocations();
    rill_publisher *p = sample_chain();
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_items(r, 3, 6, 6);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(map_chain_one_by_one)
{
    long base = live_allocations();
    rill_publisher *p = sample_chain();
    recorder *r = rec_new(1);
    r->request_each = 1;
    rill_subscribe(p, rec_subscriber(r));
    assert_items(r, 3, 6, 6);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(map_chain_reentrant_deep)
{
    long base = live_allocations();
    long n = big_count();
    rill_publisher *p = rill_range(1, (uint64_t)n * 2);
    p = rill_on_discard(p, forbidden_hook, NULL);   /* upstream of every drop */
    p = rill_filter(p, pred_even, NULL);            /* 2, 4, 6, ... */
    p = rill_map(p, map_triple, NULL);              /* 6, 12, ... */
    p = rill_take(p, (uint64_t)n);
    ck_assert_ptr_nonnull(p);
    check_reentrant(p, (size_t)n, 6);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Fails with EDOM at the input `fail_at`; else multiplies by 10. */
static int map_fail_at(void *ctx, void *in, void **out)
{
    if ((intptr_t)in == *(intptr_t *)ctx)
        return EDOM;
    *out = ITEM((intptr_t)in * 10);
    return 0;
}

/* generate → on_discard(B) → map(fails at 4) → on_discard(A) → sink:
 * on_error(EDOM), upstream cancelled at once (4 pulls), item 4 reaches A and
 * only A; nothing else is discarded. */
START_TEST(map_fn_failure)
{
    long base = live_allocations();
    counter_src src = { 0, 1000 };
    intptr_t fail_at = 4;
    discard_log log = { 0 };
    hook_tag a = { &log, 1 }, b = { &log, 2 };
    rill_publisher *p = rill_generate(counting_gen, &src);
    p = rill_on_discard(p, log_hook, &b);
    p = rill_map(p, map_fail_at, &fail_at);
    p = rill_on_discard(p, log_hook, &a);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_items(r, 3, 10, 10);
    assert_failed(r, EDOM);
    ck_assert_int_eq(src.pulls, 4);
    const intptr_t want[] = { 4 };
    assert_log(&log, 1, want, 1);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(log.n, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The same with request(1) per item: the failure still cancels upstream. */
START_TEST(map_fn_failure_one_by_one)
{
    long base = live_allocations();
    counter_src src = { 0, 1000 };
    intptr_t fail_at = 2;
    discard_log log = { 0 };
    hook_tag a = { &log, 1 };
    rill_publisher *p = rill_map(rill_generate(counting_gen, &src), map_fail_at, &fail_at);
    p = rill_on_discard(p, log_hook, &a);
    recorder *r = rec_new(1);
    r->request_each = 1;
    rill_subscribe(p, rec_subscriber(r));
    assert_items(r, 1, 10, 10);
    assert_failed(r, EDOM);
    ck_assert_int_eq(src.pulls, 2);
    const intptr_t want[] = { 2 };
    assert_log(&log, 1, want, 1);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* map_ex: ctx_free runs once, only when the publisher and its subscriptions
 * are gone — the publisher is unreferenced while a subscription runs. */
START_TEST(map_ex_ctx_free_after_last_subscription)
{
    long base = live_allocations();
    watched_ctx w = { .offset = 1000 };
    rill_publisher *p = rill_map_ex(rill_range(1, 10), map_watched, &w, watched_free);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 3);
    assert_items(r, 3, 1001, 1);
    rill_publisher_unref(p);
    ck_assert_int_eq(w.frees, 0);
    rec_request(r, RILL_UNBOUNDED);
    assert_items(r, 10, 1001, 1);
    assert_completed(r);
    ck_assert_int_eq(w.frees, 1);
    ck_assert_int_eq(w.calls_after_free, 0);
    ck_assert_int_eq(w.calls_at_free, 10);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A publisher never subscribed frees ctx at its last unref. */
START_TEST(map_ex_ctx_free_unsubscribed)
{
    long base = live_allocations();
    watched_ctx w = { 0 };
    rill_publisher *p = rill_map_ex(rill_range(1, 10), map_watched, &w, watched_free);
    ck_assert_ptr_nonnull(p);
    rill_publisher *p2 = rill_publisher_ref(p);
    rill_publisher_unref(p);
    ck_assert_int_eq(w.frees, 0);
    rill_publisher_unref(p2);
    ck_assert_int_eq(w.frees, 1);
    ck_assert_int_eq(w.calls, 0);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(map_bad_arguments)
{
    long base = live_allocations();
    errno = 0;
    ck_assert_ptr_null(rill_map(NULL, map_double, NULL));
    ck_assert_int_eq(errno, EINVAL);

    /* fn NULL: NULL, EINVAL, and the upstream reference is consumed. */
    errno = 0;
    ck_assert_ptr_null(rill_map(rill_range(1, 10), NULL, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* _ex failures still call ctx_free exactly once. */
START_TEST(map_ex_bad_arguments)
{
    long base = live_allocations();
    watched_ctx w = { 0 };
    errno = 0;
    ck_assert_ptr_null(rill_map_ex(rill_range(1, 10), NULL, &w, watched_free));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(w.frees, 1);
    ck_assert_int_eq(live_allocations(), base);

    watched_ctx w2 = { 0 };
    errno = 0;
    ck_assert_ptr_null(rill_map_ex(NULL, map_watched, &w2, watched_free));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(w2.frees, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * filter */

/* range(1,10) → filter(even), request(3): 2, 4, 6 and no completion — the
 * three odd items cost no downstream demand, and reach the discard hook. */
START_TEST(filter_drops_cost_no_demand)
{
    long base = live_allocations();
    discard_log log = { 0 };
    hook_tag a = { &log, 1 };
    rill_publisher *p = rill_filter(rill_range(1, 10), pred_even, NULL);
    p = rill_on_discard(p, log_hook, &a);
    recorder *r = rec_run(p, 3);
    assert_items(r, 3, 2, 2);
    assert_open(r);
    const intptr_t first[] = { 1, 3, 5 };
    assert_log(&log, 1, first, 3);
    rec_request(r, 10);
    assert_items(r, 5, 2, 2);
    assert_completed(r);
    const intptr_t all[] = { 1, 3, 5, 7, 9 };
    assert_log(&log, 1, all, 5);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Against the spy: the filter passes demand through exactly, and asks for
 * one replacement per dropped item. */
START_TEST(filter_requests_replacement_upstream)
{
    long base = live_allocations();
    spy sp;
    rill_publisher *p = rill_filter(spy_init(&sp), pred_even, NULL);
    recorder *r = rec_run(p, 2);
    ck_assert_uint_eq(sp.requested, 2);
    spy_emit(&sp, 1);   /* dropped: one more */
    ck_assert_uint_eq(sp.requested, 3);
    ck_assert_uint_eq(r->nitems, 0);
    spy_emit(&sp, 2);
    spy_emit(&sp, 3);   /* dropped: one more */
    ck_assert_uint_eq(sp.requested, 4);
    spy_emit(&sp, 4);
    ck_assert_uint_eq(sp.requested, 4);
    assert_items(r, 2, 2, 2);
    assert_open(r);
    spy_complete(&sp);
    assert_completed(r);
    ck_assert_int_eq(sp.zero_requests, 0);
    ck_assert_int_eq(sp.released, 1);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(sp.destroyed, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Any positive predicate result counts as keep. */
static int pred_seven_or_zero(void *ctx, void *item)
{
    (void)ctx;
    return (intptr_t)item > 2 ? 7 : 0;
}

START_TEST(filter_positive_result_keeps)
{
    long base = live_allocations();
    discard_log log = { 0 };
    hook_tag a = { &log, 1 };
    rill_publisher *p = rill_filter(rill_range(1, 5), pred_seven_or_zero, NULL);
    p = rill_on_discard(p, log_hook, &a);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_items(r, 3, 3, 1);
    assert_completed(r);
    const intptr_t want[] = { 1, 2 };
    assert_log(&log, 1, want, 2);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Keeps even items, drops odd ones, fails with -EDOM at `fail_at`. */
static int pred_fail_at(void *ctx, void *item)
{
    if ((intptr_t)item == *(intptr_t *)ctx)
        return -EDOM;
    return ((intptr_t)item % 2) == 0;
}

/* generate → on_discard(B) → filter(fails at 5) → on_discard(A): on_error
 * (EDOM), 5 pulls, A sees the dropped 1, 3 and the failing 5; B sees none. */
START_TEST(filter_pred_failure)
{
    long base = live_allocations();
    counter_src src = { 0, 1000 };
    intptr_t fail_at = 5;
    discard_log log = { 0 };
    hook_tag a = { &log, 1 }, b = { &log, 2 };
    rill_publisher *p = rill_generate(counting_gen, &src);
    p = rill_on_discard(p, log_hook, &b);
    p = rill_filter(p, pred_fail_at, &fail_at);
    p = rill_on_discard(p, log_hook, &a);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_items(r, 2, 2, 2);
    assert_failed(r, EDOM);
    ck_assert_int_eq(src.pulls, 5);
    const intptr_t want[] = { 1, 3, 5 };
    assert_log(&log, 1, want, 3);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(log.n, 3);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A predicate failure on a kept-looking (even) item, with bounded demand. */
START_TEST(filter_pred_failure_bounded_demand)
{
    long base = live_allocations();
    counter_src src = { 0, 1000 };
    intptr_t fail_at = 4;
    discard_log log = { 0 };
    hook_tag a = { &log, 1 };
    rill_publisher *p = rill_filter(rill_generate(counting_gen, &src), pred_fail_at, &fail_at);
    p = rill_on_discard(p, log_hook, &a);
    recorder *r = rec_run(p, 1);
    assert_items(r, 1, 2, 2);
    ck_assert_int_eq(src.pulls, 2);
    rec_request(r, 5);
    assert_items(r, 1, 2, 2);
    assert_failed(r, EDOM);
    ck_assert_int_eq(src.pulls, 4);
    const intptr_t want[] = { 1, 3, 4 };
    assert_log(&log, 1, want, 3);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* filter_ex: ctx_free once, after the last subscription has gone (here by
 * cancel, after the publisher was unreferenced). */
START_TEST(filter_ex_ctx_free_after_last_subscription)
{
    long base = live_allocations();
    watched_ctx w = { 0 };
    rill_publisher *p = rill_filter_ex(rill_range(1, 10), pred_watched_even, &w, watched_free);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 2);
    assert_items(r, 2, 2, 2);
    rill_publisher_unref(p);
    ck_assert_int_eq(w.frees, 0);
    rec_request(r, 1);
    assert_items(r, 3, 2, 2);
    ck_assert_int_eq(w.frees, 0);
    rill_cancel(r->sub);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert(rec_ok(r));
    ck_assert_int_eq(w.frees, 1);
    ck_assert_int_eq(w.calls_at_free, 6);
    ck_assert_int_eq(w.calls_after_free, 0);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(filter_bad_arguments)
{
    long base = live_allocations();
    errno = 0;
    ck_assert_ptr_null(rill_filter(NULL, pred_even, NULL));
    ck_assert_int_eq(errno, EINVAL);

    errno = 0;
    ck_assert_ptr_null(rill_filter(rill_range(1, 10), NULL, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(filter_ex_bad_arguments)
{
    long base = live_allocations();
    watched_ctx w = { 0 };
    errno = 0;
    ck_assert_ptr_null(rill_filter_ex(rill_range(1, 10), NULL, &w, watched_free));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(w.frees, 1);
    ck_assert_int_eq(live_allocations(), base);

    watched_ctx w2 = { 0 };
    errno = 0;
    ck_assert_ptr_null(rill_filter_ex(NULL, pred_watched_even, &w2, watched_free));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(w2.frees, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * take */

START_TEST(take_three_of_ten)
{
    long base = live_allocations();
    rill_publisher *p = rill_take(rill_range(1, 10), 3);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_items(r, 3, 1, 1);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Completion comes with the third item, not after a further request. */
START_TEST(take_completes_with_last_item)
{
    long base = live_allocations();
    rill_publisher *p = rill_take(rill_range(1, 10), 3);
    recorder *r = rec_run(p, 3);
    assert_items(r, 3, 1, 1);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A counting generator shows exactly 3 pulls, also under unbounded demand. */
START_TEST(take_pulls_exactly_n)
{
    long base = live_allocations();
    uint64_t demands[] = { RILL_UNBOUNDED, 3, 100 };
    for (size_t i = 0; i < sizeof demands / sizeof demands[0]; i++) {
        counter_src src = { 0, 1000 };
        rill_publisher *p = rill_take(rill_generate(counting_gen, &src), 3);
        recorder *r = rec_run(p, demands[i]);
        assert_items(r, 3, 1, 1);
        assert_completed(r);
        ck_assert_int_eq(src.pulls, 3);
        rec_free(r);
        rill_publisher_unref(p);
    }
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The spy sees the demand take passes upstream: never more than n, even
 * when downstream asks for RILL_UNBOUNDED; upstream is cancelled after the
 * n-th item. */
START_TEST(take_requests_at_most_n)
{
    long base = live_allocations();
    spy sp;
    rill_publisher *p = rill_take(spy_init(&sp), 3);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_uint_eq(sp.requested, 3);
    spy_emit(&sp, 10);
    spy_emit(&sp, 11);
    assert_open(r);
    ck_assert_int_eq(sp.cancels, 0);
    spy_emit(&sp, 12);
    assert_items(r, 3, 10, 1);
    assert_completed(r);
    ck_assert_int_eq(sp.cancels, 1);
    ck_assert_int_eq(sp.released, 1);
    ck_assert_uint_eq(sp.requested, 3);
    ck_assert_int_eq(sp.zero_requests, 0);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(sp.destroyed, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* request 2, then 5, on take(4): 4 items then completion; upstream sees
 * 2 then 4 in total. */
START_TEST(take_split_requests)
{
    long base = live_allocations();
    rill_publisher *p = rill_take(rill_range(1, 10), 4);
    recorder *r = rec_run(p, 2);
    assert_items(r, 2, 1, 1);
    assert_open(r);
    rec_request(r, 5);
    assert_items(r, 4, 1, 1);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(take_split_requests_spy)
{
    long base = live_allocations();
    spy sp;
    rill_publisher *p = rill_take(spy_init(&sp), 4);
    recorder *r = rec_run(p, 2);
    ck_assert_uint_eq(sp.requested, 2);
    spy_emit(&sp, 1);
    spy_emit(&sp, 2);
    rec_request(r, 5);
    ck_assert_uint_eq(sp.requested, 4);
    spy_emit(&sp, 3);
    spy_emit(&sp, 4);
    assert_items(r, 4, 1, 1);
    assert_completed(r);
    ck_assert_int_eq(sp.cancels, 1);
    ck_assert_int_eq(sp.released, 1);
    ck_assert_uint_eq(sp.requested, 4);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(sp.destroyed, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* take(0): completion right after on_subscribe, without any request, and
 * upstream is cancelled (a generator is never pulled). */
START_TEST(take_zero)
{
    long base = live_allocations();
    counter_src src = { 0, 1000 };
    rill_publisher *p = rill_take(rill_generate(counting_gen, &src), 0);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 0);
    ck_assert_uint_eq(r->nitems, 0);
    assert_completed(r);
    ck_assert_int_eq(src.pulls, 0);
    rec_free(r);

    /* Requesting from on_subscribe changes nothing. */
    r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_uint_eq(r->nitems, 0);
    assert_completed(r);
    ck_assert_int_eq(src.pulls, 0);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* take(0) over the spy: never a request upstream; if it subscribed upstream
 * at all, it cancelled and was released. */
START_TEST(take_zero_spy)
{
    long base = live_allocations();
    spy sp;
    rill_publisher *p = rill_take(spy_init(&sp), 0);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_completed(r);
    ck_assert_int_eq(sp.requests, 0);
    ck_assert_int_eq(sp.emitted, 0);
    if (sp.subscribes) {
        ck_assert_int_eq(sp.cancels, 1);
        ck_assert_int_eq(sp.released, 1);
    }
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(sp.destroyed, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(take_more_than_source)
{
    long base = live_allocations();
    rill_publisher *p = rill_take(rill_range(1, 5), 20);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_items(r, 5, 1, 1);
    assert_completed(r);
    rec_free(r);

    /* Bounded demand: completion still follows the source's last item. */
    r = rec_run(p, 5);
    assert_items(r, 5, 1, 1);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(take_one_per_request)
{
    long base = live_allocations();
    counter_src src = { 0, 1000 };
    rill_publisher *p = rill_take(rill_generate(counting_gen, &src), 5);
    recorder *r = rec_new(1);
    r->request_each = 1;
    rill_subscribe(p, rec_subscriber(r));
    assert_items(r, 5, 1, 1);
    assert_completed(r);
    ck_assert_int_eq(src.pulls, 5);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* take(n) itself ending a long stream that is requested one by one. */
START_TEST(take_reentrant_exact)
{
    long base = live_allocations();
    long n = big_count();
    rill_publisher *p = rill_take(rill_range(1, (uint64_t)n * 2), (uint64_t)n);
    check_reentrant(p, (size_t)n, 1);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Each subscription counts its own n. */
START_TEST(take_subscribe_twice_counts_separately)
{
    long base = live_allocations();
    rill_publisher *p = rill_take(rill_range(1, 10), 3);
    recorder *r1 = rec_run(p, 2);
    recorder *r2 = rec_run(p, RILL_UNBOUNDED);
    assert_items(r2, 3, 1, 1);
    assert_completed(r2);
    assert_items(r1, 2, 1, 1);
    assert_open(r1);
    rec_request(r1, 10);
    assert_items(r1, 3, 1, 1);
    assert_completed(r1);
    rec_free(r1);
    rec_free(r2);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(take_bad_arguments)
{
    long base = live_allocations();
    errno = 0;
    ck_assert_ptr_null(rill_take(NULL, 3));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * on_discard */

/* range(1,1000) → filter(multiples of 3) → on_discard(count + sum): every
 * item is delivered or discarded, exactly once. */
START_TEST(on_discard_accounting)
{
    long base = live_allocations();
    discard_log log = { 0 };
    hook_tag a = { &log, 1 };
    rill_publisher *p = rill_filter(rill_range(1, 1000), pred_mult3, NULL);
    p = rill_on_discard(p, log_hook, &a);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_completed(r);
    long long delivered_sum = 0;
    for (size_t i = 0; i < r->nitems; i++)
        delivered_sum += rec_int(r, i);
    ck_assert_uint_eq(r->nitems, 333);
    ck_assert_int_eq(log.count, 667);
    ck_assert_int_eq((long)r->nitems + log.count, 1000);
    ck_assert(delivered_sum + log.sum == 500500LL);
    ck_assert(delivered_sum == 3LL * 333 * 334 / 2);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* filter → on_discard(A) → on_discard(B): each dropped item reaches A, then
 * B, once each. */
START_TEST(on_discard_chained_nearest_first)
{
    long base = live_allocations();
    discard_log log = { 0 };
    hook_tag a = { &log, 1 }, b = { &log, 2 };
    rill_publisher *p = rill_filter(rill_range(1, 6), pred_mult3, NULL);
    p = rill_on_discard(p, log_hook, &a);
    p = rill_on_discard(p, log_hook, &b);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_items(r, 2, 3, 3);
    assert_completed(r);
    const int who[] = { 1, 2, 1, 2, 1, 2, 1, 2 };
    const intptr_t item[] = { 1, 1, 2, 2, 4, 4, 5, 5 };
    ck_assert_int_eq(log.n, 8);
    for (int i = 0; i < 8; i++) {
        ck_assert_int_eq(log.who[i], who[i]);
        ck_assert_int_eq(log.item[i], item[i]);
    }
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* on_discard(B) → filter → on_discard(A): only A sees the filter's drops. */
START_TEST(on_discard_upstream_hook_not_called)
{
    long base = live_allocations();
    discard_log log = { 0 };
    hook_tag a = { &log, 1 }, b = { &log, 2 };
    rill_publisher *p = rill_on_discard(rill_range(1, 6), log_hook, &b);
    p = rill_filter(p, pred_even, NULL);
    p = rill_on_discard(p, log_hook, &a);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_items(r, 3, 2, 2);
    assert_completed(r);
    const intptr_t want[] = { 1, 3, 5 };
    assert_log(&log, 1, want, 3);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Delivered items never reach the hook (map and take in between). */
START_TEST(on_discard_not_called_for_delivered)
{
    long base = live_allocations();
    discard_log log = { 0 };
    hook_tag a = { &log, 1 };
    rill_publisher *p = rill_map(rill_range(1, 100), map_double, NULL);
    p = rill_on_discard(p, log_hook, &a);
    p = rill_take(p, 50);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_items(r, 50, 2, 2);
    assert_completed(r);
    ck_assert_int_eq(log.n, 0);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Each subscription's drops reach the hook; two runs, twice the count. */
START_TEST(on_discard_per_subscription)
{
    long base = live_allocations();
    discard_log log = { 0 };
    hook_tag a = { &log, 1 };
    rill_publisher *p = rill_on_discard(rill_filter(rill_range(1, 10), pred_even, NULL),
                                        log_hook, &a);
    recorder *r1 = rec_run(p, RILL_UNBOUNDED);
    recorder *r2 = rec_run(p, RILL_UNBOUNDED);
    assert_items(r1, 5, 2, 2);
    assert_items(r2, 5, 2, 2);
    assert_completed(r1);
    assert_completed(r2);
    ck_assert_int_eq(log.count, 10);
    ck_assert_int_eq(log.sum, 2 * 25);
    rec_free(r1);
    rec_free(r2);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* on_discard_ex: ctx_free once, after the hook's last call, when the
 * publisher and its subscriptions are gone. */
START_TEST(on_discard_ex_ctx_free_after_last_call)
{
    long base = live_allocations();
    watched_ctx w = { 0 };
    rill_publisher *p = rill_filter(rill_range(1, 10), pred_even, NULL);
    p = rill_on_discard_ex(p, hook_watched, &w, watched_free);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 2);
    assert_items(r, 2, 2, 2);
    ck_assert_int_eq(w.calls, 2);
    rill_publisher_unref(p);
    ck_assert_int_eq(w.frees, 0);
    rec_request(r, RILL_UNBOUNDED);
    assert_items(r, 5, 2, 2);
    assert_completed(r);
    ck_assert_int_eq(w.frees, 1);
    ck_assert_int_eq(w.calls_at_free, 5);
    ck_assert_int_eq(w.calls_after_free, 0);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The same when the subscription ends by cancel, and when it is never
 * subscribed at all. */
START_TEST(on_discard_ex_ctx_free_cancel_and_unused)
{
    long base = live_allocations();
    watched_ctx w = { 0 };
    rill_publisher *p = rill_on_discard_ex(rill_filter(rill_range(1, 10), pred_even, NULL),
                                           hook_watched, &w, watched_free);
    recorder *r = rec_run(p, 1);
    rill_publisher_unref(p);
    ck_assert_int_eq(w.frees, 0);
    rill_cancel(r->sub);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_int_eq(w.frees, 1);
    ck_assert_int_eq(w.calls_at_free, 1);
    ck_assert_int_eq(w.calls_after_free, 0);
    rec_free(r);

    watched_ctx w2 = { 0 };
    p = rill_on_discard_ex(rill_range(1, 3), hook_watched, &w2, watched_free);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(w2.frees, 0);
    rill_publisher_unref(p);
    ck_assert_int_eq(w2.frees, 1);
    ck_assert_int_eq(w2.calls, 0);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A mapper failure's item, with two hooks below: each once, nearest first. */
START_TEST(on_discard_chained_on_error)
{
    long base = live_allocations();
    discard_log log = { 0 };
    hook_tag a = { &log, 1 }, b = { &log, 2 };
    intptr_t fail_at = 3;
    rill_publisher *p = rill_map(rill_range(1, 10), map_fail_at, &fail_at);
    p = rill_on_discard(p, log_hook, &a);
    p = rill_on_discard(p, log_hook, &b);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_items(r, 2, 10, 10);
    assert_failed(r, EDOM);
    ck_assert_int_eq(log.n, 2);
    ck_assert_int_eq(log.who[0], 1);
    ck_assert_int_eq(log.who[1], 2);
    ck_assert_int_eq(log.item[0], 3);
    ck_assert_int_eq(log.item[1], 3);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(on_discard_bad_arguments)
{
    long base = live_allocations();
    discard_log log = { 0 };
    hook_tag a = { &log, 1 };
    errno = 0;
    ck_assert_ptr_null(rill_on_discard(NULL, log_hook, &a));
    ck_assert_int_eq(errno, EINVAL);

    errno = 0;
    ck_assert_ptr_null(rill_on_discard(rill_range(1, 10), NULL, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(live_allocations(), base);
    ck_assert_int_eq(log.n, 0);
}
END_TEST

START_TEST(on_discard_ex_bad_arguments)
{
    long base = live_allocations();
    watched_ctx w = { 0 };
    errno = 0;
    ck_assert_ptr_null(rill_on_discard_ex(rill_range(1, 10), NULL, &w, watched_free));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(w.frees, 1);
    ck_assert_int_eq(live_allocations(), base);

    watched_ctx w2 = { 0 };
    errno = 0;
    ck_assert_ptr_null(rill_on_discard_ex(NULL, hook_watched, &w2, watched_free));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(w2.frees, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * The suite */

/* The million-item cases can take a while under sanitizers. */
static TCase *operator_tcase(const char *name, int op)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    add_generic_tests(tc, op);
    return tc;
}

static TCase *map_tcase(void)
{
    TCase *tc = operator_tcase("map", OP_MAP);
    tcase_add_test(tc, map_uses_ctx);
    tcase_add_test(tc, map_empty_never_calls_mapper);
    tcase_add_test(tc, map_chain_unbounded);
    tcase_add_test(tc, map_chain_one_by_one);
    tcase_add_test(tc, map_chain_reentrant_deep);
    tcase_add_test(tc, map_fn_failure);
    tcase_add_test(tc, map_fn_failure_one_by_one);
    tcase_add_test(tc, map_ex_ctx_free_after_last_subscription);
    tcase_add_test(tc, map_ex_ctx_free_unsubscribed);
    tcase_add_test(tc, map_bad_arguments);
    tcase_add_test(tc, map_ex_bad_arguments);
    return tc;
}

static TCase *filter_tcase(void)
{
    TCase *tc = operator_tcase("filter", OP_FILTER);
    tcase_add_test(tc, filter_drops_cost_no_demand);
    tcase_add_test(tc, filter_requests_replacement_upstream);
    tcase_add_test(tc, filter_positive_result_keeps);
    tcase_add_test(tc, filter_pred_failure);
    tcase_add_test(tc, filter_pred_failure_bounded_demand);
    tcase_add_test(tc, filter_ex_ctx_free_after_last_subscription);
    tcase_add_test(tc, filter_bad_arguments);
    tcase_add_test(tc, filter_ex_bad_arguments);
    return tc;
}

static TCase *take_tcase(void)
{
    TCase *tc = operator_tcase("take", OP_TAKE);
    tcase_add_test(tc, take_three_of_ten);
    tcase_add_test(tc, take_completes_with_last_item);
    tcase_add_test(tc, take_pulls_exactly_n);
    tcase_add_test(tc, take_requests_at_most_n);
    tcase_add_test(tc, take_split_requests);
    tcase_add_test(tc, take_split_requests_spy);
    tcase_add_test(tc, take_zero);
    tcase_add_test(tc, take_zero_spy);
    tcase_add_test(tc, take_more_than_source);
    tcase_add_test(tc, take_one_per_request);
    tcase_add_test(tc, take_reentrant_exact);
    tcase_add_test(tc, take_subscribe_twice_counts_separately);
    tcase_add_test(tc, take_bad_arguments);
    return tc;
}

static TCase *on_discard_tcase(void)
{
    TCase *tc = operator_tcase("on_discard", OP_ON_DISCARD);
    tcase_add_test(tc, on_discard_accounting);
    tcase_add_test(tc, on_discard_chained_nearest_first);
    tcase_add_test(tc, on_discard_upstream_hook_not_called);
    tcase_add_test(tc, on_discard_not_called_for_delivered);
    tcase_add_test(tc, on_discard_per_subscription);
    tcase_add_test(tc, on_discard_ex_ctx_free_after_last_call);
    tcase_add_test(tc, on_discard_ex_ctx_free_cancel_and_unused);
    tcase_add_test(tc, on_discard_chained_on_error);
    tcase_add_test(tc, on_discard_bad_arguments);
    tcase_add_test(tc, on_discard_ex_bad_arguments);
    return tc;
}

Suite *operators_suite(void)
{
    Suite *s = suite_create("operators");
    suite_add_tcase(s, map_tcase());
    suite_add_tcase(s, filter_tcase());
    suite_add_tcase(s, take_tcase());
    suite_add_tcase(s, on_discard_tcase());
    return s;
}
