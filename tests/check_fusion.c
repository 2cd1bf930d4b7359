/* tests/check_fusion.c — fused synchronous chains (lib/fuse.c, lib/pull.c).
 *
 * rill_map, rill_filter and rill_take over a synchronous source (or over a
 * chain already fused) build one fused publisher instead of a chain of
 * relays. These tests hold the fused chain to everything the relays
 * guarantee:
 *  - exact values for each program shape the engine specialises (map,
 *    filter, map→filter, filter→map, takes only, anything else), over range,
 *    from_array, generate, just, empty and fail;
 *  - demand: only delivered items count; filtered items reach the discard
 *    hooks downstream, with counts; take stops the source at once;
 *  - mapper and predicate failures, cancel and request inside on_next,
 *    request(0), take(0), bounded recursion (rule 3.3);
 *  - item for item against the unfused chain: the same stages with rill_probe
 *    between them (a probe is not fuseable), under random programs, demand,
 *    cancels and request(0) — items, terminal, discards and source pulls;
 *  - the conformance kit on fused chains;
 *  - ownership: one allocation per subscription and none per item, a sole
 *    upstream reference reused, a shared one kept, ctx_free once and last;
 *  - allocation failure (every allocation fails in turn, as check_alloc.c);
 *  - threads: concurrent subscriptions of one fused publisher, and a cancel
 *    from another thread while the loop drops every item.
 *
 * Every test checks leaks through the runner's counting allocator.
 */
#include "recorder.h"
#include "suites.h"

#include <rill/metrics.h>
#include <rill/tck.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ITEM(v) ((void *)(intptr_t)(v))

static int quick(void)
{
    const char *q = getenv("RILL_TEST_QUICK");
    return q && *q && *q != '0';
}

/* A million items, or 20000 under RILL_TEST_QUICK (valgrind). */
static long big_count(void)
{
    return quick() ? 20000 : 1000000;
}

static void assert_items(const recorder *r, const intptr_t *want, size_t n)
{
    ck_assert_uint_eq(r->nitems, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(rec_int(r, i), want[i]);
}

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

static void assert_open(const recorder *r)
{
    ck_assert_msg(rec_ok(r), "protocol violation: %s", r->violation);
    ck_assert_int_eq(r->subscribes, 1);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert_int_eq(r->releases, 0);
}

/* ------------------------------------------------------------------------
 * User functions. Parameters travel in ctx, so the same function serves
 * many steps. */

typedef struct affine {
    intptr_t mul, add;
    intptr_t fail_at;   /* the input that fails with EDOM; INTPTR_MIN: none */
    long calls;
} affine;

static int map_affine(void *ctx, void *in, void **out)
{
    affine *a = ctx;
    a->calls++;
    if ((intptr_t)in == a->fail_at)
        return EDOM;
    *out = ITEM((intptr_t)in * a->mul + a->add);
    return 0;
}

typedef struct modulo {
    intptr_t m, r;      /* keep items with item mod m == r */
    intptr_t fail_at;   /* the item that fails with -ERANGE; INTPTR_MIN: none */
    long calls;
} modulo;

static intptr_t mod_of(intptr_t v, intptr_t m)
{
    intptr_t x = v % m;
    return x < 0 ? x + m : x;
}

static int pred_modulo(void *ctx, void *item)
{
    modulo *f = ctx;
    f->calls++;
    if ((intptr_t)item == f->fail_at)
        return -ERANGE;
    return mod_of((intptr_t)item, f->m) == f->r;
}

static affine A(intptr_t mul, intptr_t add)
{
    return (affine){ mul, add, INTPTR_MIN, 0 };
}

static modulo M(intptr_t m, intptr_t r)
{
    return (modulo){ m, r, INTPTR_MIN, 0 };
}

/* Discard hooks record what they see, in order. */
#define LOG_CAP 256
typedef struct discard_log {
    long n;
    int who[LOG_CAP];
    intptr_t item[LOG_CAP];
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
    l->sum += (intptr_t)item;
}

static void assert_log(const discard_log *l, int id, const intptr_t *items, long n)
{
    ck_assert_int_eq(l->n, n);
    for (long i = 0; i < n && i < LOG_CAP; i++) {
        ck_assert_int_eq(l->who[i], id);
        ck_assert_int_eq(l->item[i], items[i]);
    }
}

/* A generator counting its pulls: item k is k (1, 2, ...), up to `limit`
 * (0: endless). The counter is atomic for the threaded tests. */
typedef struct counter_src {
    atomic_long pulls;
    long limit;
} counter_src;

static int counting_gen(void *state, void **item)
{
    counter_src *c = state;
    long k = atomic_load_explicit(&c->pulls, memory_order_relaxed);
    if (c->limit && k >= c->limit)
        return RILL_GENERATE_END;
    atomic_store_explicit(&c->pulls, k + 1, memory_order_relaxed);
    *item = ITEM(k + 1);
    return RILL_GENERATE_NEXT;
}

/* ------------------------------------------------------------------------
 * Exact values, one test per shape the engine specialises */

/* range(1, 10) → map(×3) → subscriber: shape "map". */
START_TEST(shape_map)
{
    long base = live_allocations();
    affine a = A(3, 0);
    rill_publisher *p = rill_map(rill_range(1, 10), map_affine, &a);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    const intptr_t want[] = { 3, 6, 9, 12, 15, 18, 21, 24, 27, 30 };
    assert_items(r, want, 10);
    assert_completed(r);
    ck_assert_int_eq(a.calls, 10);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* from_array → filter(odd) with a hook: shape "filter"; the dropped items
 * reach the hook, in order, and cost no demand. */
START_TEST(shape_filter)
{
    long base = live_allocations();
    void *arr[] = { ITEM(4), ITEM(7), ITEM(-3), ITEM(10), ITEM(11), ITEM(0), ITEM(9) };
    modulo f = M(2, 1);
    discard_log log = { 0 };
    hook_tag t = { &log, 1 };
    rill_publisher *p = rill_filter(rill_from_array(arr, 7), pred_modulo, &f);
    p = rill_on_discard(p, log_hook, &t);
    recorder *r = rec_run(p, 2);
    const intptr_t want[] = { 7, -3, 11, 9 };
    assert_items(r, want, 2);
    assert_open(r);
    const intptr_t first[] = { 4 };
    assert_log(&log, 1, first, 1);
    rec_request(r, 2);
    assert_items(r, want, 4);
    assert_completed(r);
    const intptr_t dropped[] = { 4, 10, 0 };
    assert_log(&log, 1, dropped, 3);
    ck_assert_int_eq(f.calls, 7);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* range(0, 20) → map(+1) → filter(even): shape "map, filter" (the benchmark's
 * chain); the hook sees the mapped odd values. */
START_TEST(shape_map_filter)
{
    long base = live_allocations();
    affine a = A(1, 1);
    modulo f = M(2, 0);
    discard_log log = { 0 };
    hook_tag t = { &log, 7 };
    rill_publisher *p = rill_filter(rill_map(rill_range(0, 20), map_affine, &a), pred_modulo, &f);
    p = rill_on_discard(p, log_hook, &t);
    recorder *r = rec_run(p, 4);
    const intptr_t want[] = { 2, 4, 6, 8, 10, 12, 14, 16, 18, 20 };
    assert_items(r, want, 4);
    assert_open(r);
    ck_assert_int_eq(a.calls, 8);   /* no further item was pulled */
    rec_request(r, RILL_UNBOUNDED);
    assert_items(r, want, 10);
    assert_completed(r);
    const intptr_t odd[] = { 1, 3, 5, 7, 9, 11, 13, 15, 17, 19 };
    assert_log(&log, 7, odd, 10);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* generate → filter(multiples of 3) → map(×10 − 1): shape "filter, map". */
START_TEST(shape_filter_map)
{
    long base = live_allocations();
    counter_src src = { 0, 12 };
    modulo f = M(3, 0);
    affine a = A(10, -1);
    rill_publisher *p = rill_map(rill_filter(rill_generate(counting_gen, &src), pred_modulo, &f),
                                 map_affine, &a);
    recorder *r = rec_new(1);
    r->request_each = 1;
    rill_subscribe(p, rec_subscriber(r));
    const intptr_t want[] = { 29, 59, 89, 119 };
    assert_items(r, want, 4);
    assert_completed(r);
    ck_assert_int_eq(atomic_load(&src.pulls), 12);
    ck_assert_int_eq(a.calls, 4);   /* the mapper sees only what passed */
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Takes only: range → take(5) → take(3) is a plain source capped at 3, and
 * completes with the third item under exactly that demand. */
START_TEST(shape_takes_only)
{
    long base = live_allocations();
    rill_publisher *p = rill_take(rill_take(rill_range(100, 50), 5), 3);
    recorder *r = rec_run(p, 3);
    const intptr_t want[] = { 100, 101, 102 };
    assert_items(r, want, 3);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Anything else runs through the interpreter: map, filter, map, take
 * in the middle, filter, take at the end. */
START_TEST(shape_interpreted)
{
    long base = live_allocations();
    affine a1 = A(2, 0), a2 = A(1, 1);
    modulo f1 = M(3, 0), f2 = M(2, 1);
    discard_log log = { 0 };
    hook_tag t = { &log, 1 };
    rill_publisher *p = rill_range(1, 100);
    p = rill_map(p, map_affine, &a1);       /* 2, 4, 6, 8, 10, 12, ... */
    p = rill_filter(p, pred_modulo, &f1);   /* 6, 12, 18, 24, 30, ... */
    p = rill_map(p, map_affine, &a2);       /* 7, 13, 19, 25, 31, ... */
    p = rill_take(p, 6);                    /* 7, 13, 19, 25, 31, 37 */
    p = rill_filter(p, pred_modulo, &f2);   /* all odd: all pass */
    p = rill_take(p, 4);                    /* 7, 13, 19, 25 */
    p = rill_on_discard(p, log_hook, &t);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    const intptr_t want[] = { 7, 13, 19, 25 };
    assert_items(r, want, 4);
    assert_completed(r);
    ck_assert_int_eq(a1.calls, 12);         /* 12 inputs: the 4th kept one is input 12 */
    const intptr_t dropped[] = { 2, 4, 8, 10, 14, 16, 20, 22 };
    assert_log(&log, 1, dropped, 8);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A take in the middle whose last item a later filter drops: the stream
 * still ends there, with completion and no further pull. */
START_TEST(take_mid_last_item_dropped)
{
    long base = live_allocations();
    counter_src src = { 0, 100 };
    modulo f = M(2, 0);
    discard_log log = { 0 };
    hook_tag t = { &log, 1 };
    rill_publisher *p = rill_take(rill_generate(counting_gen, &src), 5);
    p = rill_filter(p, pred_modulo, &f);
    p = rill_on_discard(p, log_hook, &t);
    recorder *r = rec_run(p, 10);
    const intptr_t want[] = { 2, 4 };
    assert_items(r, want, 2);
    assert_completed(r);
    ck_assert_int_eq(atomic_load(&src.pulls), 5);
    const intptr_t dropped[] = { 1, 3, 5 };
    assert_log(&log, 1, dropped, 3);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The source's last item is also take's last: one completion. */
START_TEST(take_and_source_end_together)
{
    long base = live_allocations();
    uint64_t demands[] = { 3, 4, RILL_UNBOUNDED };
    for (size_t i = 0; i < 3; i++) {
        rill_publisher *p = rill_take(rill_map(rill_range(1, 3), map_affine, &(affine){ 1, 0, INTPTR_MIN, 0 }), 3);
        recorder *r = rec_run(p, demands[i]);
        const intptr_t want[] = { 1, 2, 3 };
        assert_items(r, want, 3);
        assert_completed(r);
        rec_free(r);
        rill_publisher_unref(p);
    }
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* just, empty and fail fuse too. */
START_TEST(trivial_sources)
{
    long base = live_allocations();
    affine a = A(5, 0);
    rill_publisher *p = rill_map(rill_just(ITEM(7)), map_affine, &a);
    recorder *r = rec_run(p, 1);
    const intptr_t want[] = { 35 };
    assert_items(r, want, 1);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);

    modulo f = M(2, 0);
    p = rill_filter(rill_just(ITEM(7)), pred_modulo, &f);   /* the only item dropped */
    r = rec_run(p, 1);
    ck_assert_uint_eq(r->nitems, 0);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);

    a.calls = 0;
    p = rill_take(rill_map(rill_empty(), map_affine, &a), 4);
    r = rec_run(p, 0);   /* empty completes without any request */
    assert_completed(r);
    ck_assert_int_eq(a.calls, 0);
    rec_free(r);
    rill_publisher_unref(p);

    p = rill_filter(rill_map(rill_fail(EIO, "disk on fire"), map_affine, &a), pred_modulo, &f);
    r = rec_run(p, 0);
    assert_failed(r, EIO);
    ck_assert_str_eq(r->error_message, "disk on fire");
    ck_assert_int_eq(a.calls, 0);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Failures, cancel, request(0), take(0), recursion */

/* generate → map(fails at 4) → filter(keep all) → hooks A, B downstream:
 * on_error(EDOM), 4 pulls, item 4 reaches A then B (nearest first). */
START_TEST(mapper_failure)
{
    long base = live_allocations();
    counter_src src = { 0, 1000 };
    affine a = { 10, 0, 4, 0 };
    modulo f = M(1, 0);
    discard_log log = { 0 };
    hook_tag ta = { &log, 1 }, tb = { &log, 2 };
    rill_publisher *p = rill_map(rill_generate(counting_gen, &src), map_affine, &a);
    p = rill_filter(p, pred_modulo, &f);
    p = rill_on_discard(p, log_hook, &ta);
    p = rill_on_discard(p, log_hook, &tb);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    const intptr_t want[] = { 10, 20, 30 };
    assert_items(r, want, 3);
    assert_failed(r, EDOM);
    ck_assert_int_eq(atomic_load(&src.pulls), 4);
    ck_assert_int_eq(log.n, 2);
    ck_assert_int_eq(log.who[0], 1);
    ck_assert_int_eq(log.who[1], 2);
    ck_assert_int_eq(log.item[0], 4);
    ck_assert_int_eq(log.item[1], 4);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* range → filter(even; fails at 7) → map, requested one by one: 2, 4, 6,
 * then on_error(ERANGE); the hook sees 1, 3, 5 and the failing 7. */
START_TEST(predicate_failure)
{
    long base = live_allocations();
    modulo f = { 2, 0, 7, 0 };
    affine a = A(1, 0);
    discard_log log = { 0 };
    hook_tag t = { &log, 1 };
    rill_publisher *p = rill_map(rill_filter(rill_range(1, 100), pred_modulo, &f), map_affine, &a);
    p = rill_on_discard(p, log_hook, &t);
    recorder *r = rec_new(1);
    r->request_each = 1;
    rill_subscribe(p, rec_subscriber(r));
    const intptr_t want[] = { 2, 4, 6 };
    assert_items(r, want, 3);
    assert_failed(r, ERANGE);
    const intptr_t dropped[] = { 1, 3, 5, 7 };
    assert_log(&log, 1, dropped, 4);
    ck_assert_int_eq(f.calls, 7);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A mapper's negative return is an error too (its code made positive). */
static int map_negative(void *ctx, void *in, void **out)
{
    (void)ctx;
    if ((intptr_t)in == 2)
        return -ENOSPC;
    *out = in;
    return 0;
}

START_TEST(mapper_negative_code)
{
    long base = live_allocations();
    rill_publisher *p = rill_map(rill_range(1, 5), map_negative, NULL);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    const intptr_t want[] = { 1 };
    assert_items(r, want, 1);
    assert_failed(r, ENOSPC);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* At the third delivered item: cancel, request, cancel — all inside on_next.
 * The source is not pulled again, nothing more arrives, one release. */
static void cancel_twice_hook(recorder *r, void *item)
{
    (void)item;
    if (r->nitems == 3) {
        rill_cancel(r->sub);
        rill_request(r->sub, 5);
        rill_cancel(r->sub);
    }
}

START_TEST(cancel_inside_on_next)
{
    long base = live_allocations();
    counter_src src = { 0, 1000 };
    modulo f = M(2, 0);
    affine a = A(1, 0);
    rill_publisher *p = rill_take(rill_map(rill_filter(rill_generate(counting_gen, &src),
                                                       pred_modulo, &f), map_affine, &a), 100);
    recorder *r = rec_new(10);
    r->on_next_hook = cancel_twice_hook;
    rill_subscribe(p, rec_subscriber(r));
    const intptr_t want[] = { 2, 4, 6 };
    assert_items(r, want, 3);
    ck_assert_msg(rec_ok(r), "protocol violation: %s", r->violation);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_int_eq(atomic_load(&src.pulls), 6);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Cancel inside on_subscribe: the source never starts (generate_ex's init
 * is never called), no terminal, one release. */
static int init_count(void *ctx, void **state)
{
    ++*(int *)ctx;
    *state = ctx;
    return 0;
}

static int gen_ones(void *state, void **item)
{
    (void)state;
    *item = ITEM(1);
    return RILL_GENERATE_NEXT;
}

static void cancel_on_subscribe(void *user, rill_subscription *s)
{
    ++*(int *)user;
    rill_cancel(s);
}

static void count_release(void *user)
{
    *((int *)user + 1) += 1;
}

START_TEST(cancel_in_on_subscribe)
{
    long base = live_allocations();
    int inits = 0;
    affine a = A(1, 0);
    rill_publisher *p = rill_map(rill_generate_ex(init_count, gen_ones, NULL, &inits, NULL),
                                 map_affine, &a);
    int counts[2] = { 0, 0 };   /* subscribes, releases */
    const rill_callbacks cb = { .on_subscribe = cancel_on_subscribe, .on_release = count_release };
    rill_subscribe(p, rill_subscriber_new(&cb, counts));
    ck_assert_int_eq(counts[0], 1);
    ck_assert_int_eq(counts[1], 1);
    ck_assert_int_eq(inits, 0);
    ck_assert_int_eq(a.calls, 0);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* request(0) before and in the middle of a fused stream: on_error(EINVAL). */
START_TEST(request_zero)
{
    long base = live_allocations();
    affine a = A(2, 0);
    modulo f = M(2, 0);
    rill_publisher *p = rill_filter(rill_map(rill_range(1, 10), map_affine, &a), pred_modulo, &f);
    recorder *r = rec_run(p, 0);
    rec_request(r, 0);
    ck_assert_uint_eq(r->nitems, 0);
    assert_failed(r, EINVAL);
    rec_free(r);

    r = rec_run(p, 2);
    rec_request(r, 0);
    const intptr_t want[] = { 2, 4 };
    assert_items(r, want, 2);
    assert_failed(r, EINVAL);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* request(0) inside the on_next of take's last item: take has finished, so
 * the stream completes (as the relay does), also when that item is the
 * source's last; inside the source's last item with no take it is honoured
 * with EINVAL. */
static void zero_on_third(recorder *r, void *item)
{
    (void)item;
    if (r->nitems == 3)
        rill_request(r->sub, 0);
}

START_TEST(request_zero_inside_last_item)
{
    long base = live_allocations();
    affine a = A(1, 0);
    rill_publisher *p = rill_take(rill_map(rill_range(1, 10), map_affine, &a), 3);
    recorder *r = rec_new(RILL_UNBOUNDED);
    r->on_next_hook = zero_on_third;
    rill_subscribe(p, rec_subscriber(r));
    const intptr_t want[] = { 1, 2, 3 };
    assert_items(r, want, 3);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);

    /* the source's last item is take's last too: take decides */
    p = rill_take(rill_map(rill_range(1, 3), map_affine, &a), 3);
    r = rec_new(RILL_UNBOUNDED);
    r->on_next_hook = zero_on_third;
    rill_subscribe(p, rec_subscriber(r));
    assert_items(r, want, 3);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);

    p = rill_map(rill_range(1, 3), map_affine, &a);
    r = rec_new(RILL_UNBOUNDED);
    r->on_next_hook = zero_on_third;
    rill_subscribe(p, rec_subscriber(r));
    assert_items(r, want, 3);
    assert_failed(r, EINVAL);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* take(0) anywhere in a fused chain completes right after on_subscribe,
 * without a request and without starting the source. */
START_TEST(take_zero)
{
    long base = live_allocations();
    int inits = 0;
    affine a = A(1, 0);
    modulo f = M(2, 0);
    rill_publisher *p = rill_generate_ex(init_count, gen_ones, NULL, &inits, NULL);
    p = rill_map(rill_take(rill_filter(p, pred_modulo, &f), 0), map_affine, &a);
    recorder *r = rec_run(p, 0);
    ck_assert_uint_eq(r->nitems, 0);
    assert_completed(r);
    ck_assert_int_eq(inits, 0);
    rec_free(r);
    r = rec_run(p, RILL_UNBOUNDED);
    assert_completed(r);
    rec_free(r);

    /* ... but not after a cancel in on_subscribe */
    int counts[2] = { 0, 0 };
    const rill_callbacks cb = { .on_subscribe = cancel_on_subscribe, .on_release = count_release };
    rill_subscribe(p, rill_subscriber_new(&cb, counts));
    ck_assert_int_eq(counts[1], 1);
    ck_assert_int_eq(inits, 0);
    rill_publisher_unref(p);

    /* over fail, take(0) still completes */
    p = rill_take(rill_fail(EIO, NULL), 0);
    r = rec_run(p, 0);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The stack seen from inside on_next. */
typedef struct stack_span {
    uintptr_t lo, hi;
} stack_span;

static void stack_hook(recorder *r, void *item)
{
    (void)item;
    stack_span *sp = r->user;
    uintptr_t a = (uintptr_t)__builtin_frame_address(0);
    if (a < sp->lo)
        sp->lo = a;
    if (a > sp->hi)
        sp->hi = a;
}

/* request(1) inside each on_next over a million inputs, in every shape:
 * every item arrives and the stack does not grow (rule 3.3). */
START_TEST(reentrant_request_every_shape)
{
    long base = live_allocations();
    long n = big_count();
    for (int shape = 0; shape < 5; shape++) {
        affine a = A(1, 0);
        modulo f = M(2, 0), all = M(1, 0);
        rill_publisher *p = rill_range(1, (uint64_t)n);
        if (shape == 0 || shape == 2)
            p = rill_map(p, map_affine, &a);
        if (shape == 1 || shape == 2 || shape == 3)
            p = rill_filter(p, pred_modulo, &f);
        if (shape == 3 || shape == 4) {
            p = rill_map(p, map_affine, &a);
            p = rill_take(rill_map(p, map_affine, &a), (uint64_t)n);
            p = rill_filter(p, pred_modulo, &all);
        }
        size_t expect = (shape == 1 || shape == 2 || shape == 3) ? (size_t)(n / 2) : (size_t)n;
        stack_span span = { UINTPTR_MAX, 0 };
        recorder *r = rec_new(1);
        r->request_each = 1;
        r->on_next_hook = stack_hook;
        r->user = &span;
        rill_subscribe(p, rec_subscriber(r));
        ck_assert_uint_eq(r->nitems, expect);
        ck_assert_int_eq(rec_int(r, expect - 1), n);
        assert_completed(r);
        ck_assert_msg(span.hi - span.lo < 4096, "shape %d: stack spread %lu bytes", shape,
                      (unsigned long)(span.hi - span.lo));
        rec_free(r);
        rill_publisher_unref(p);
    }
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Item for item against the unfused chain */

enum { SRC_RANGE, SRC_ARRAY, SRC_GENERATE, SRC_JUST, SRC_EMPTY, SRC_FAIL, SRC_COUNT };
enum { ST_MAP, ST_FILTER, ST_TAKE };

#define MAX_STEPS 6

typedef struct chain_spec {
    int src;
    intptr_t start;
    uint64_t count;
    int nsteps;
    int kind[MAX_STEPS];
    affine map[MAX_STEPS];
    modulo filter[MAX_STEPS];
    uint64_t take[MAX_STEPS];
} chain_spec;

/* One built chain: the publisher and what its source and hooks record. */
typedef struct built {
    rill_publisher *p;
    counter_src gen;
    discard_log log;
    hook_tag tag;
} built;

static void *array_items[40];

/* Builds spec; probes: a rill_probe after the source and after every step,
 * which keeps every stage a relay. The chain ends in a discard hook. */
static void build_chain(built *b, const chain_spec *spec, int probes, rill_metrics *m)
{
    memset(&b->log, 0, sizeof b->log);
    atomic_store(&b->gen.pulls, 0);
    b->gen.limit = (long)spec->count + 1;   /* 0 would be endless */
    b->tag = (hook_tag){ &b->log, 1 };
    rill_publisher *p = NULL;
    switch (spec->src) {
    case SRC_RANGE:
        p = rill_range(spec->start, spec->count);
        break;
    case SRC_ARRAY:
        for (size_t i = 0; i < 40; i++)
            array_items[i] = ITEM(spec->start + (intptr_t)(i * i % 17));
        p = rill_from_array(array_items, spec->count);
        break;
    case SRC_GENERATE:
        p = rill_generate(counting_gen, &b->gen);
        break;
    case SRC_JUST:
        p = rill_just(ITEM(spec->start));
        break;
    case SRC_EMPTY:
        p = rill_empty();
        break;
    default:
        p = rill_fail(EPIPE, NULL);
    }
    if (probes)
        p = rill_probe(p, m);
    for (int i = 0; i < spec->nsteps; i++) {
        /* The ctx is the spec's own (copied per chain by the caller). */
        if (spec->kind[i] == ST_MAP)
            p = rill_map(p, map_affine, (void *)&spec->map[i]);
        else if (spec->kind[i] == ST_FILTER)
            p = rill_filter(p, pred_modulo, (void *)&spec->filter[i]);
        else
            p = rill_take(p, spec->take[i]);
        if (probes)
            p = rill_probe(p, m);
    }
    b->p = rill_on_discard(p, log_hook, &b->tag);
    ck_assert_ptr_nonnull(b->p);
}

/* A deterministic random number generator (xorshift64*). */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

static void random_spec(chain_spec *spec, uint64_t *seed)
{
    memset(spec, 0, sizeof *spec);
    spec->src = (int)(rnd(seed) % 8);
    if (spec->src >= SRC_COUNT)
        spec->src = SRC_RANGE;   /* weight the common sources */
    spec->start = (intptr_t)(rnd(seed) % 21) - 10;
    spec->count = rnd(seed) % 31;
    spec->nsteps = (int)(rnd(seed) % (MAX_STEPS + 1));
    for (int i = 0; i < spec->nsteps; i++) {
        spec->kind[i] = (int)(rnd(seed) % 3);
        spec->map[i] = A((intptr_t)(rnd(seed) % 5) - 2, (intptr_t)(rnd(seed) % 7) - 3);
        spec->filter[i] = M((intptr_t)(rnd(seed) % 3) + 2, (intptr_t)(rnd(seed) % 2));
        if (rnd(seed) % 6 == 0)
            spec->map[i].fail_at = (intptr_t)(rnd(seed) % 21) - 10;
        if (rnd(seed) % 6 == 0)
            spec->filter[i].fail_at = (intptr_t)(rnd(seed) % 21) - 10;
        spec->take[i] = rnd(seed) % 13;
    }
}

/* The actions a subscriber takes, from a seed both runs share. */
typedef struct script {
    uint64_t seed;
} script;

static void script_hook(recorder *r, void *item)
{
    (void)item;
    script *sc = r->user;
    uint64_t x = rnd(&sc->seed) % 64;
    if (x < 12)
        rec_request(r, 1 + rnd(&sc->seed) % 4);
    else if (x == 12)
        rill_cancel(r->sub);
    else if (x == 13)
        rill_request(r->sub, 0);
    else if (x == 14)
        rec_request(r, RILL_UNBOUNDED);
}

/* Subscribes to b->p and drives the script until the stream is released. */
static recorder *drive(built *b, uint64_t seed)
{
    script sc = { seed };
    uint64_t first = rnd(&sc.seed) % 4;
    recorder *r = rec_new(first);
    r->user = &sc;
    r->on_next_hook = script_hook;
    rill_subscribe(b->p, rec_subscriber(r));
    for (int i = 0; i < 200 && !r->releases; i++) {
        uint64_t x = rnd(&sc.seed) % 32;
        if (x == 0)
            rill_cancel(r->sub);
        else if (x == 1)
            rill_request(r->sub, 0);
        else
            rec_request(r, 1 + rnd(&sc.seed) % 5);
    }
    if (!r->releases)
        rill_cancel(r->sub);
    r->user = NULL;
    return r;
}

static const char *src_name(int src)
{
    static const char *names[] = { "range", "from_array", "generate", "just", "empty", "fail" };
    return names[src];
}

/* Describes spec for failure messages. */
static void describe(const chain_spec *spec, char *buf, size_t len)
{
    size_t at = (size_t)snprintf(buf, len, "%s(%ld, %lu)", src_name(spec->src),
                                 (long)spec->start, (unsigned long)spec->count);
    for (int i = 0; i < spec->nsteps && at < len; i++) {
        if (spec->kind[i] == ST_MAP)
            at += (size_t)snprintf(buf + at, len - at, " map(*%ld+%ld fail@%ld)", (long)spec->map[i].mul,
                                   (long)spec->map[i].add, (long)spec->map[i].fail_at);
        else if (spec->kind[i] == ST_FILTER)
            at += (size_t)snprintf(buf + at, len - at, " filter(%%%ld==%ld fail@%ld)",
                                   (long)spec->filter[i].m, (long)spec->filter[i].r,
                                   (long)spec->filter[i].fail_at);
        else
            at += (size_t)snprintf(buf + at, len - at, " take(%lu)", (unsigned long)spec->take[i]);
    }
}

static void compare_runs(const chain_spec *spec, uint64_t seed, const recorder *f,
                         const recorder *u, const built *bf, const built *bu)
{
    char what[512];
    describe(spec, what, sizeof what);
    ck_assert_msg(rec_ok(f), "fused %s seed %llu: %s", what, (unsigned long long)seed, f->violation);
    ck_assert_msg(rec_ok(u), "unfused %s seed %llu: %s", what, (unsigned long long)seed, u->violation);
    ck_assert_msg(f->nitems == u->nitems, "%s seed %llu: %zu items fused, %zu unfused", what,
                  (unsigned long long)seed, f->nitems, u->nitems);
    for (size_t i = 0; i < f->nitems; i++)
        ck_assert_msg(f->items[i] == u->items[i], "%s seed %llu: item %zu", what,
                      (unsigned long long)seed, i);
    ck_assert_msg(f->completes == u->completes && f->errors == u->errors &&
                      f->error_code == u->error_code,
                  "%s seed %llu: terminal fused %d/%d(%d), unfused %d/%d(%d)", what,
                  (unsigned long long)seed, f->completes, f->errors, f->error_code, u->completes,
                  u->errors, u->error_code);
    ck_assert_int_eq(f->releases, 1);
    ck_assert_int_eq(u->releases, 1);
    ck_assert_msg(bf->log.n == bu->log.n && bf->log.sum == bu->log.sum,
                  "%s seed %llu: discards fused %ld (sum %lld), unfused %ld (sum %lld)", what,
                  (unsigned long long)seed, bf->log.n, bf->log.sum, bu->log.n, bu->log.sum);
    for (long i = 0; i < bf->log.n && i < LOG_CAP; i++)
        ck_assert_int_eq(bf->log.item[i], bu->log.item[i]);
    ck_assert_msg(atomic_load(&bf->gen.pulls) == atomic_load(&bu->gen.pulls),
                  "%s seed %llu: generator pulled %ld fused, %ld unfused", what,
                  (unsigned long long)seed, atomic_load(&bf->gen.pulls),
                  atomic_load(&bu->gen.pulls));
}

/* Random programs, random demand, cancels and request(0): the fused chain
 * and the relay chain do exactly the same. */
START_TEST(random_against_unfused)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("reference");
    ck_assert_ptr_nonnull(m);
    uint64_t seed = 0x9E3779B97F4A7C15ull + (uint64_t)_i;
    int runs = quick() ? 150 : 1500;
    /* what the runs covered: against a vacuous pass */
    int seen_items = 0, seen_complete = 0, seen_cancel = 0, seen_discards = 0;
    int seen_error[4] = { 0 };   /* EDOM, ERANGE, EINVAL, EPIPE */
    for (int run = 0; run < runs; run++) {
        chain_spec spec, spec_u;
        random_spec(&spec, &seed);
        spec_u = spec;   /* each chain counts its own user-function calls */
        uint64_t drive_seed = rnd(&seed) | 1;
        built bf, bu;
        build_chain(&bf, &spec, 0, m);
        build_chain(&bu, &spec_u, 1, m);
        recorder *f = drive(&bf, drive_seed);
        recorder *u = drive(&bu, drive_seed);
        compare_runs(&spec, drive_seed, f, u, &bf, &bu);
        seen_items += f->nitems > 0;
        seen_complete += f->completes;
        seen_cancel += f->completes + f->errors == 0;
        seen_discards += bf.log.n > 0;
        seen_error[0] += f->error_code == EDOM;
        seen_error[1] += f->error_code == ERANGE;
        seen_error[2] += f->error_code == EINVAL;
        seen_error[3] += f->error_code == EPIPE;
        for (int i = 0; i < spec.nsteps; i++) {
            ck_assert_int_eq(spec.map[i].calls, spec_u.map[i].calls);
            ck_assert_int_eq(spec.filter[i].calls, spec_u.filter[i].calls);
        }
        rec_free(f);
        rec_free(u);
        rill_publisher_unref(bf.p);
        rill_publisher_unref(bu.p);
    }
    ck_assert_int_gt(seen_items, runs / 4);
    ck_assert_int_gt(seen_complete, runs / 10);
    ck_assert_int_gt(seen_cancel, runs / 100);
    ck_assert_int_gt(seen_discards, runs / 20);
    for (int i = 0; i < 4; i++)
        ck_assert_int_gt(seen_error[i], 0);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Ownership and allocation */

/* One allocation per subscription however long the chain, and none per
 * item: the fused chain's whole cost at subscribe time is its subscription
 * (the subscriber was made before). */
START_TEST(one_allocation_per_subscription)
{
    long base = live_allocations();
    affine a = A(1, 1);
    modulo f = M(2, 0);
    rill_publisher *p = rill_range(0, (uint64_t)big_count());
    p = rill_map(p, map_affine, &a);
    p = rill_filter(p, pred_modulo, &f);
    p = rill_map(p, map_affine, &a);
    p = rill_take(p, (uint64_t)big_count());
    ck_assert_int_eq(live_allocations(), base + 2);   /* the range and the fused chain */
    for (int i = 0; i < 2; i++) {
        recorder *r = rec_new(i ? RILL_UNBOUNDED : 1);
        r->request_each = i ? 0 : 1;
        rill_subscriber *s = rec_subscriber(r);
        long calls = counting_allocator_calls();
        rill_subscribe(p, s);
        ck_assert_int_eq(counting_allocator_calls() - calls, 1);
        ck_assert_uint_eq(r->nitems, (size_t)big_count() / 2);
        assert_completed(r);
        rec_free(r);
    }
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Contexts whose release is counted: the user function's parameters
 * first, so the same functions take them. */
typedef struct freed_map {
    affine a;
    int frees;
} freed_map;

typedef struct freed_filter {
    modulo f;
    int frees;
} freed_filter;

static void freed_map_free(void *ctx)
{
    ((freed_map *)ctx)->frees++;
}

static void freed_filter_free(void *ctx)
{
    ((freed_filter *)ctx)->frees++;
}

/* The sole reference to a fused chain is reused: no new publisher stays
 * alive, and ctx_free waits for the last publisher and subscription. */
START_TEST(sole_owner_reused)
{
    long base = live_allocations();
    freed_map fm = { A(2, 0), 0 };
    freed_filter ff = { M(4, 0), 0 };
    rill_publisher *p = rill_map_ex(rill_range(1, 10), map_affine, &fm, freed_map_free);
    ck_assert_int_eq(live_allocations(), base + 2);
    p = rill_filter_ex(p, pred_modulo, &ff, freed_filter_free);
    ck_assert_int_eq(live_allocations(), base + 2);   /* the old shell was freed */
    p = rill_take(p, 3);
    ck_assert_int_eq(live_allocations(), base + 2);
    ck_assert_int_eq(fm.frees + ff.frees, 0);
    recorder *r = rec_run(p, 1);
    rill_publisher_unref(p);                          /* the subscription keeps it */
    ck_assert_int_eq(fm.frees + ff.frees, 0);
    rec_request(r, 10);
    const intptr_t want[] = { 4, 8, 12 };
    assert_items(r, want, 3);
    assert_completed(r);
    ck_assert_int_eq(fm.frees, 1);
    ck_assert_int_eq(ff.frees, 1);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A shared fused chain stays what it was: children copy its program and
 * keep it alive; every ctx_free runs once, after its last user. */
START_TEST(shared_parent_kept)
{
    long base = live_allocations();
    freed_map fm = { A(3, 0), 0 };
    freed_filter ff = { M(2, 0), 0 };
    rill_publisher *parent = rill_map_ex(rill_range(1, 6), map_affine, &fm, freed_map_free);
    rill_publisher *even = rill_filter_ex(rill_publisher_ref(parent), pred_modulo, &ff,
                                          freed_filter_free);
    rill_publisher *two = rill_take(rill_publisher_ref(parent), 2);
    ck_assert_ptr_nonnull(even);
    ck_assert_ptr_nonnull(two);
    /* the parent still works, unchanged */
    recorder *r = rec_run(parent, RILL_UNBOUNDED);
    const intptr_t all[] = { 3, 6, 9, 12, 15, 18 };
    assert_items(r, all, 6);
    assert_completed(r);
    rec_free(r);
    rill_publisher_unref(parent);
    ck_assert_int_eq(fm.frees, 0);

    r = rec_run(even, RILL_UNBOUNDED);
    const intptr_t evens[] = { 6, 12, 18 };
    assert_items(r, evens, 3);
    assert_completed(r);
    rec_free(r);
    recorder *open = rec_run(two, 1);
    rill_publisher_unref(even);
    ck_assert_int_eq(ff.frees, 1);
    ck_assert_int_eq(fm.frees, 0);   /* `two` and its subscription still use it */
    rill_publisher_unref(two);
    ck_assert_int_eq(fm.frees, 0);
    rec_request(open, 5);
    const intptr_t first2[] = { 3, 6 };
    assert_items(open, first2, 2);
    assert_completed(open);
    ck_assert_int_eq(fm.frees, 1);
    rec_free(open);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Bad arguments keep their meaning over fusable upstreams. */
START_TEST(bad_arguments)
{
    long base = live_allocations();
    freed_map fm = { A(1, 0), 0 };
    freed_filter ff = { M(2, 0), 0 };
    errno = 0;
    ck_assert_ptr_null(rill_map_ex(rill_range(1, 3), NULL, &fm, freed_map_free));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(fm.frees, 1);
    errno = 0;
    ck_assert_ptr_null(rill_filter_ex(rill_map(rill_range(1, 3), map_negative, NULL), NULL,
                                      &ff, freed_filter_free));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(ff.frees, 1);
    errno = 0;
    ck_assert_ptr_null(rill_take(NULL, 3));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(rill_map(NULL, map_affine, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Every allocation fails in turn (the chaos method of check_alloc.c) while
 * building source → map_ex → filter_ex → take(3) and subscribing to it. The
 * source is a new range (so the chain reuses its sole reference) or a
 * reference to a fused chain kept outside (so it copies). Each run ends
 * either with a constructor saying ENOMEM (later ones EINVAL) or with the
 * normal result or on_subscribe → on_error(ENOMEM) → on_release; every
 * ctx_free runs once, and nothing leaks. */
typedef struct chaos_run {
    freed_map fm;
    freed_filter ff;
    int errs[4];
} chaos_run;

static rill_publisher *chaos_step(chaos_run *c, int i, rill_publisher *p)
{
    c->errs[i] = p ? 0 : errno;
    errno = 0;
    return p;
}

static rill_publisher *chaos_build(chaos_run *c, rill_publisher *shared)
{
    errno = 0;
    rill_publisher *p = chaos_step(c, 0, shared ? rill_publisher_ref(shared) : rill_range(1, 10));
    p = chaos_step(c, 1, rill_map_ex(p, map_affine, &c->fm, freed_map_free));
    p = chaos_step(c, 2, rill_filter_ex(p, pred_modulo, &c->ff, freed_filter_free));
    return chaos_step(c, 3, rill_take(p, 3));
}

static void chaos_judge(const chaos_run *c, rill_publisher *p, rill_subscriber *s,
                        const recorder *r, int *enomem)
{
    if (!p) {
        int i = 0;
        while (i < 4 && c->errs[i] == 0)
            i++;
        ck_assert_int_lt(i, 4);
        ck_assert_int_eq(c->errs[i], ENOMEM);
        for (i++; i < 4; i++)
            ck_assert_int_eq(c->errs[i], EINVAL);
        ck_assert_int_eq(c->fm.frees, 1);
        ck_assert_int_eq(c->ff.frees, 1);
        return;
    }
    if (!s) {
        ck_assert_int_eq(r->releases, 1);   /* the recorder's subscriber was refused */
        return;
    }
    ck_assert_msg(rec_ok(r), "protocol violation: %s", r->violation);
    if (r->errors) {
        assert_failed(r, ENOMEM);
        ck_assert_uint_eq(r->nitems, 0);
        (*enomem)++;
        return;
    }
    const intptr_t want[] = { 4, 8, 12 };   /* (1..10) × 2, multiples of 4, three of them */
    assert_items(r, want, 3);
    assert_completed(r);
}

START_TEST(allocation_failure)
{
    long base = live_allocations();
    static affine identity = { 1, 0, INTPTR_MIN, 0 };
    rill_publisher *shared = _i ? rill_map(rill_range(1, 10), map_affine, &identity) : NULL;
    if (shared) {
        /* a second reference makes the chain shared */
        rill_publisher_ref(shared);
        rill_publisher_unref(shared);
    }
    long outside = live_allocations();
    long clean = 0, n;
    int enomem = 0;
    for (n = 0;; n++) {
        chaos_run c;
        memset(&c, 0, sizeof c);
        c.fm.a = A(2, 0);
        c.ff.f = M(4, 0);
        recorder *r = rec_new(RILL_UNBOUNDED);
        rill_publisher *keep = shared ? rill_publisher_ref(shared) : NULL;   /* shared: 2 refs */
        long calls = counting_allocator_calls();
        counting_allocator_fail_at(n);
        rill_publisher *p = chaos_build(&c, shared);
        rill_subscriber *s = p ? rec_subscriber(r) : NULL;
        if (s)
            rill_subscribe(p, s);
        long used = counting_allocator_calls() - calls;
        counting_allocator_fail_at(0);
        chaos_judge(&c, p, s, r, &enomem);
        rill_publisher_unref(p);
        rill_publisher_unref(keep);
        ck_assert_int_eq(c.fm.frees, 1);
        ck_assert_int_eq(c.ff.frees, 1);
        rec_free(r);
        ck_assert_int_eq(live_allocations(), outside);
        if (n == 0)
            clean = used;
        else if (used < n)
            break;   /* allocation n was never reached: every one has failed once */
    }
    ck_assert_int_eq(n, clean + 1);
    ck_assert_int_gt(enomem, 0);
    rill_publisher_unref(shared);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* No allocation per item: a run of a million items allocates what a run
 * of ten does. */
START_TEST(no_allocation_per_item)
{
    long base = live_allocations();
    affine a = A(1, 1);
    modulo f = M(2, 0);
    long made[2];
    long counts[2] = { 10, big_count() };
    for (int i = 0; i < 2; i++) {
        long calls = counting_allocator_calls();
        rill_publisher *p = rill_filter(rill_map(rill_range(0, (uint64_t)counts[i]), map_affine, &a),
                                        pred_modulo, &f);
        recorder *r = rec_new(3);
        r->request_each = 3;
        rill_subscribe(p, rec_subscriber(r));
        ck_assert_uint_eq(r->nitems, (size_t)counts[i] / 2);
        assert_completed(r);
        rill_publisher_unref(p);
        made[i] = counting_allocator_calls() - calls;
        rec_free(r);
    }
    ck_assert_int_eq(made[0], made[1]);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * The conformance kit on fused chains */

static rill_publisher *make_failed(void *ctx)
{
    (void)ctx;
    return rill_map(rill_fail(EIO, "the failed publisher"), map_negative, NULL);
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

/* shape map, filter */
static rill_publisher *tck_range_map_filter(void *ctx, uint64_t n)
{
    (void)ctx;
    return rill_filter(rill_map(rill_range(0, n), add_one, NULL), keep_all, NULL);
}

/* takes only, with the cap below the source */
static rill_publisher *tck_range_take(void *ctx, uint64_t n)
{
    (void)ctx;
    return rill_take(rill_range(0, n + 10), n);
}

/* generate with per-subscription state: filter, map, then a take in the
 * middle and a map (the interpreter) */
typedef struct tck_gen {
    uint64_t n, i;
} tck_gen;

static int tck_gen_init(void *ctx, void **state)
{
    tck_gen *g = malloc(sizeof *g);
    if (!g)
        return ENOMEM;
    g->n = *(uint64_t *)ctx;
    g->i = 0;
    *state = g;
    return 0;
}

static int tck_gen_next(void *state, void **item)
{
    tck_gen *g = state;
    if (g->i >= g->n)
        return RILL_GENERATE_END;
    *item = ITEM(g->i++);
    return RILL_GENERATE_NEXT;
}

static rill_publisher *tck_generate_chain(void *ctx, uint64_t n)
{
    (void)ctx;
    uint64_t *limit = malloc(sizeof *limit);
    ck_assert_ptr_nonnull(limit);
    *limit = n + 3;
    rill_publisher *p = rill_generate_ex(tck_gen_init, tck_gen_next, free, limit, free);
    p = rill_map(rill_filter(p, keep_all, NULL), add_one, NULL);
    return rill_map(rill_take(p, n), add_one, NULL);
}

/* from_array → filter → map (shape filter, map) */
static rill_publisher *tck_array_filter_map(void *ctx, uint64_t n)
{
    (void)ctx;
    if (n == 0)
        return rill_map(rill_empty(), add_one, NULL);
    void **items = malloc(n * sizeof *items);
    ck_assert_ptr_nonnull(items);
    for (uint64_t i = 0; i < n; i++)
        items[i] = ITEM(i);
    rill_publisher *p = rill_map(rill_filter(rill_from_array(items, (size_t)n), keep_all, NULL),
                                 add_one, NULL);
    free(items);
    return p;
}

static const struct tck_case {
    const char *name;
    rill_publisher *(*create)(void *, uint64_t);
    uint64_t max_elements;   /* 0: the default */
} tck_cases[] = {
    { "fused range → map → filter", tck_range_map_filter, 0 },
    { "fused range(n + 10) → take(n)", tck_range_take, 0 },
    { "fused generate_ex → filter → map → take(n) → map", tck_generate_chain, 0 },
    { "fused from_array → filter → map", tck_array_filter_map, 1024 },
};

/* Every required test passes, except the one C cannot express (request(-1)). */
START_TEST(conformance)
{
    const struct tck_case *tc = &tck_cases[_i];
    long base = live_allocations();
    rill_tck_publisher_options o;
    rill_tck_publisher_options_init(&o);
    o.name = tc->name;
    o.create = tc->create;
    o.create_failed = make_failed;
    o.timeout_ns = 2000000000u;
    o.stochastic_runs = quick() ? 10 : 100;
    if (tc->max_elements)
        o.max_elements = tc->max_elements;
    rill_tck_report *r = rill_tck_verify_publisher(&o);
    ck_assert_ptr_nonnull(r);
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
    if (failed || getenv("RILL_TCK_PRINT"))
        rill_tck_report_print(r, stdout);
    rill_tck_report_free(r);
    ck_assert_msg(bad[0] == '\0', "%s", bad);
    ck_assert_uint_eq(failed, 0);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Threads */

typedef struct sum_job {
    rill_publisher *p;
    uint64_t sum;
    int completes, releases;
} sum_job;

static void sum_next(void *user, void *item)
{
    ((sum_job *)user)->sum += (uint64_t)(intptr_t)item;
}

static void sum_complete(void *user)
{
    ((sum_job *)user)->completes++;
}

static void sum_release(void *user)
{
    ((sum_job *)user)->releases++;
}

static int pred_even(void *ctx, void *item)
{
    (void)ctx;
    return ((intptr_t)item & 1) == 0;
}

static void *sum_thread(void *arg)
{
    static const rill_callbacks cb = {
        .on_next = sum_next, .on_complete = sum_complete, .on_release = sum_release,
    };
    sum_job *j = arg;
    for (int k = 0; k < 5; k++)
        rill_subscribe(j->p, rill_subscriber_new(&cb, j));
    return NULL;
}

/* Four threads subscribe to one fused publisher at once, five times each:
 * each subscription has its own program state (take counts separately). */
START_TEST(concurrent_subscriptions)
{
    long base = live_allocations();
    uint64_t n = quick() ? 5000 : 100000;
    rill_publisher *p = rill_range(0, n * 4);
    p = rill_map(p, add_one, NULL);                          /* 1 .. 4n */
    p = rill_filter(p, pred_even, NULL);                     /* 2, 4, ... */
    p = rill_take(p, n);                                     /* 2 .. 2n */
    sum_job jobs[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        jobs[i] = (sum_job){ p, 0, 0, 0 };
        ck_assert_int_eq(pthread_create(&th[i], NULL, sum_thread, &jobs[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_uint_eq(jobs[i].sum, 5 * n * (n + 1));
        ck_assert_int_eq(jobs[i].completes, 5);
        ck_assert_int_eq(jobs[i].releases, 5);
    }
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* An endless generator whose every item a filter drops, so the loop never
 * calls downstream: a cancel from another thread still stops it. */
typedef struct cancel_job {
    rill_publisher *p;
    _Atomic(rill_subscription *) sub;
    atomic_int released;
    atomic_int cancel_returned;   /* the other thread's rill_cancel has returned */
} cancel_job;

static void cj_subscribe(void *user, rill_subscription *s)
{
    atomic_store(&((cancel_job *)user)->sub, s);
    rill_request(s, RILL_UNBOUNDED);
}

/* core.h: a rill_cancel from another thread must have returned before
 * on_release returns (the subscription is freed right after). */
static void cj_release(void *user)
{
    cancel_job *j = user;
    while (!atomic_load(&j->cancel_returned))
        sched_yield();
    atomic_store(&j->released, 1);
}

static void *cancel_thread_run(void *arg)
{
    static const rill_callbacks cb = { .on_subscribe = cj_subscribe, .on_release = cj_release };
    cancel_job *j = arg;
    rill_subscribe(j->p, rill_subscriber_new(&cb, j));   /* returns once cancelled */
    return NULL;
}

static int drop_all(void *ctx, void *item)
{
    (void)ctx;
    (void)item;
    return 0;
}

START_TEST(cancel_from_another_thread)
{
    long base = live_allocations();
    counter_src src = { 0, 0 };   /* endless */
    cancel_job j = { NULL, NULL, 0, 0 };
    j.p = rill_filter(rill_map(rill_generate(counting_gen, &src), add_one, NULL), drop_all, NULL);
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, cancel_thread_run, &j), 0);
    while (atomic_load(&src.pulls) < 10000)
        sched_yield();
    /* The subscription stays valid until on_release, which waits for this
     * cancel: the loop is still running, so release cannot have happened. */
    rill_subscription *s = atomic_load(&j.sub);
    ck_assert_ptr_nonnull(s);
    ck_assert_int_eq(atomic_load(&j.released), 0);
    rill_cancel(s);
    atomic_store(&j.cancel_returned, 1);
    pthread_join(th, NULL);
    ck_assert_int_eq(atomic_load(&j.released), 1);
    rill_publisher_unref(j.p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * The suite */

Suite *fusion_suite(void)
{
    Suite *s = suite_create("fusion");

    TCase *tc = tcase_create("shapes");
    tcase_add_test(tc, shape_map);
    tcase_add_test(tc, shape_filter);
    tcase_add_test(tc, shape_map_filter);
    tcase_add_test(tc, shape_filter_map);
    tcase_add_test(tc, shape_takes_only);
    tcase_add_test(tc, shape_interpreted);
    tcase_add_test(tc, take_mid_last_item_dropped);
    tcase_add_test(tc, take_and_source_end_together);
    tcase_add_test(tc, trivial_sources);
    suite_add_tcase(s, tc);

    tc = tcase_create("protocol");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, mapper_failure);
    tcase_add_test(tc, predicate_failure);
    tcase_add_test(tc, mapper_negative_code);
    tcase_add_test(tc, cancel_inside_on_next);
    tcase_add_test(tc, cancel_in_on_subscribe);
    tcase_add_test(tc, request_zero);
    tcase_add_test(tc, request_zero_inside_last_item);
    tcase_add_test(tc, take_zero);
    tcase_add_test(tc, reentrant_request_every_shape);
    suite_add_tcase(s, tc);

    tc = tcase_create("against_unfused");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_loop_test(tc, random_against_unfused, 0, 4);
    suite_add_tcase(s, tc);

    tc = tcase_create("ownership");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, one_allocation_per_subscription);
    tcase_add_test(tc, sole_owner_reused);
    tcase_add_test(tc, shared_parent_kept);
    tcase_add_test(tc, bad_arguments);
    tcase_add_loop_test(tc, allocation_failure, 0, 2);
    tcase_add_test(tc, no_allocation_per_item);
    suite_add_tcase(s, tc);

    tc = tcase_create("conformance");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_loop_test(tc, conformance, 0, (int)(sizeof tck_cases / sizeof tck_cases[0]));
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, concurrent_subscriptions);
    tcase_add_test(tc, cancel_from_another_thread);
    suite_add_tcase(s, tc);
    return s;
}
