/* tests/check_backpressure.c — rill_on_backpressure_buffer / _latest / _drop,
 * rill_on_backpressure_ex (on_overflow, TTL) and rill_limit_rate.
 *
 * Synchronous cases run range (or a hand-driven "spy" publisher) through the
 * stage into the shared recorder, with a discard hook below the stage that
 * logs every discarded item, so each test states exactly what is delivered
 * and what is discarded, in order.
 *
 * Threaded cases put the producer on its own thread (subscribe_on a single
 * thread) and request from the test thread, at randomised speeds, and check
 * conservation: every item the source emitted was delivered or discarded,
 * exactly once. A consumer whose requests come from another thread guards
 * them (the Dekker handshake of check_observe_on.c) so that no request runs
 * after its on_release has returned. No timing assertions.
 */
#include "recorder.h"
#include "suites.h"

#include <rill/backpressure.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#define ITEM(v) ((void *)(intptr_t)(v))
#define MAXLOG 4096

static int quick(void)
{
    static atomic_int cached = -1;   /* read once: spin() asks per item */
    int v = atomic_load_explicit(&cached, memory_order_relaxed);
    if (v < 0) {
        const char *q = getenv("RILL_TEST_QUICK");
        v = q && *q && *q != '0';
        atomic_store_explicit(&cached, v, memory_order_relaxed);
    }
    return v;
}

static uint32_t xorshift(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* A busy wait; shorter under RILL_TEST_QUICK (valgrind runs it ~30x slower). */
static void spin(uint32_t n)
{
    if (quick())
        n /= 16;
    for (volatile uint32_t i = 0; i < n; i++)
        ;
}

/* ------------------------------------------------------------------------
 * A discard log: the hook below the stage records what it gets, in order;
 * the optional on_overflow callback writes into the same log (negated), so
 * a test can see which came first. */

typedef struct dlog {
    intptr_t v[MAXLOG];
    atomic_int n;
    atomic_int frees;
} dlog;

static void log_discard(void *ctx, void *item)
{
    dlog *d = ctx;
    int i = atomic_fetch_add(&d->n, 1);
    if (i < MAXLOG)
        d->v[i] = (intptr_t)item;
}

static void log_overflow(void *ctx, void *item)
{
    dlog *d = ctx;
    int i = atomic_fetch_add(&d->n, 1);
    if (i < MAXLOG)
        d->v[i] = -(intptr_t)item;
}

static void log_free(void *ctx)
{
    atomic_fetch_add(&((dlog *)ctx)->frees, 1);
}

/* Puts the logging hook below p (consumes p). */
static rill_publisher *logged(rill_publisher *p, dlog *d)
{
    memset(d, 0, sizeof *d);
    return rill_on_discard_ex(p, log_discard, d, log_free);
}

static void assert_log(const dlog *d, const intptr_t *want, int n)
{
    ck_assert_int_eq(atomic_load(&d->n), n);
    for (int i = 0; i < n; i++)
        ck_assert_msg(d->v[i] == want[i], "discard %d: got %ld, want %ld", i, (long)d->v[i],
                      (long)want[i]);
}

static void assert_items(const recorder *r, const intptr_t *want, size_t n)
{
    ck_assert_uint_eq(r->nitems, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(rec_int(r, i), want[i]);
}

/* ------------------------------------------------------------------------
 * The spy (as in check_operators.c): a one-subscriber publisher the test
 * drives by hand; it logs every request and cancel. Lives on the stack. */

typedef struct spy {
    rill_publisher pub;
    rill_subscription sub;
    rill_subscriber *down;
    uint64_t reqs[64];
    int nreqs, cancels, emitted, depth, finished, released, destroyed;
    uint64_t requested;
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
    if (sp->nreqs < 64)
        sp->reqs[sp->nreqs] = n;
    sp->nreqs++;
    sp->requested = n >= RILL_UNBOUNDED - sp->requested ? RILL_UNBOUNDED : sp->requested + n;
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

static rill_publisher *spy_init(spy *sp)
{
    memset(sp, 0, sizeof *sp);
    sp->sub.ops = &spy_sub_ops;
    rill_publisher_init(&sp->pub, &spy_pub_ops);
    return &sp->pub;
}

static void spy_emit(spy *sp, intptr_t v)
{
    ck_assert_msg(sp->down && !sp->released && !sp->cancels && !sp->finished, "spy_emit late");
    ck_assert_msg(sp->requested == RILL_UNBOUNDED || (uint64_t)sp->emitted < sp->requested,
                  "the test emits beyond demand");
    sp->emitted++;
    sp->depth++;
    rill_deliver_next(sp->down, ITEM(v));
    sp->depth--;
    spy_settle(sp);
}

static void spy_end(spy *sp, int code)
{
    sp->finished = 1;
    sp->depth++;
    if (code)
        rill_deliver_error_code(sp->down, code, NULL);
    else
        rill_deliver_complete(sp->down);
    sp->depth--;
    spy_settle(sp);
}

/* ------------------------------------------------------------------------
 * Counting the source: range through a map that counts what it emitted. */

static int count_map(void *ctx, void *in, void **out)
{
    atomic_fetch_add((atomic_long *)ctx, 1);
    *out = in;
    return 0;
}

static rill_publisher *counted_range(int64_t start, uint64_t n, atomic_long *emitted)
{
    atomic_init(emitted, 0);
    return rill_map(rill_range(start, n), count_map, emitted);
}

/* ------------------------------------------------------------------------
 * Synchronous policies: range(1, 10), a recorder asking for 3 at subscribe,
 * the rest later. With no demand left, items 4.. meet a full store. */

typedef rill_publisher *(*stage_fn)(rill_publisher *up);

static recorder *run_sync(rill_publisher *stage, dlog *d, rill_publisher **out)
{
    rill_publisher *p = logged(stage, d);
    ck_assert_ptr_nonnull(p);
    *out = p;
    return rec_run(p, 3);
}

START_TEST(test_buffer_drop_latest)
{
    long base = live_allocations();
    atomic_long emitted;
    dlog d;
    rill_publisher *p;
    recorder *r = run_sync(rill_on_backpressure_buffer(counted_range(1, 10, &emitted), 2,
                                                       RILL_OVERFLOW_DROP_LATEST), &d, &p);
    assert_items(r, (intptr_t[]){1, 2, 3}, 3);
    assert_log(&d, (intptr_t[]){6, 7, 8, 9, 10}, 5);
    ck_assert_int_eq(r->completes, 0);   /* 4 and 5 are still held */
    rec_request(r, 1);
    assert_items(r, (intptr_t[]){1, 2, 3, 4}, 4);
    ck_assert_int_eq(r->completes, 0);
    rec_request(r, 5);
    assert_items(r, (intptr_t[]){1, 2, 3, 4, 5}, 5);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_int_eq(atomic_load(&emitted), 10);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(atomic_load(&d.frees), 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_buffer_drop_oldest)
{
    long base = live_allocations();
    atomic_long emitted;
    dlog d;
    rill_publisher *p;
    recorder *r = run_sync(rill_on_backpressure_buffer(counted_range(1, 10, &emitted), 2,
                                                       RILL_OVERFLOW_DROP_OLDEST), &d, &p);
    assert_items(r, (intptr_t[]){1, 2, 3}, 3);
    assert_log(&d, (intptr_t[]){4, 5, 6, 7, 8}, 5);
    ck_assert_int_eq(r->completes, 0);
    rec_request(r, 10);
    assert_items(r, (intptr_t[]){1, 2, 3, 9, 10}, 5);
    ck_assert_int_eq(r->completes, 1);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ERROR: item 6 does not fit: upstream is cancelled (nothing more is
 * emitted), 6 is discarded, 4 and 5 are delivered, then EOVERFLOW. */
START_TEST(test_buffer_error)
{
    long base = live_allocations();
    atomic_long emitted;
    dlog d;
    rill_publisher *p;
    recorder *r = run_sync(rill_on_backpressure_buffer(counted_range(1, 10, &emitted), 2,
                                                       RILL_OVERFLOW_ERROR), &d, &p);
    assert_items(r, (intptr_t[]){1, 2, 3}, 3);
    assert_log(&d, (intptr_t[]){6}, 1);
    ck_assert_int_eq(atomic_load(&emitted), 6);
    ck_assert_int_eq(r->errors, 0);   /* the error waits behind 4 and 5 */
    rec_request(r, 1);
    ck_assert_uint_eq(r->nitems, 4);
    ck_assert_int_eq(r->errors, 0);
    rec_request(r, 1);
    assert_items(r, (intptr_t[]){1, 2, 3, 4, 5}, 5);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EOVERFLOW);
    ck_assert_int_eq(r->completes, 0);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_latest)
{
    long base = live_allocations();
    atomic_long emitted;
    dlog d;
    rill_publisher *p;
    recorder *r = run_sync(rill_on_backpressure_latest(counted_range(1, 10, &emitted)), &d, &p);
    assert_items(r, (intptr_t[]){1, 2, 3}, 3);
    assert_log(&d, (intptr_t[]){4, 5, 6, 7, 8, 9}, 6);
    ck_assert_int_eq(r->completes, 0);   /* 10 is held: delivered before on_complete */
    rec_request(r, 1);
    assert_items(r, (intptr_t[]){1, 2, 3, 10}, 4);
    ck_assert_int_eq(r->completes, 1);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_drop)
{
    long base = live_allocations();
    atomic_long emitted;
    dlog d;
    rill_publisher *p;
    recorder *r = run_sync(rill_on_backpressure_drop(counted_range(1, 10, &emitted)), &d, &p);
    assert_items(r, (intptr_t[]){1, 2, 3}, 3);
    assert_log(&d, (intptr_t[]){4, 5, 6, 7, 8, 9, 10}, 7);
    ck_assert_int_eq(r->completes, 1);   /* nothing held */
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A consumer requesting one at a time from inside on_next gets everything,
 * in order, from every strategy (each request is served by the drain that
 * is running, without recursion). */
static rill_publisher *mk_buffer2(rill_publisher *up)
{
    return rill_on_backpressure_buffer(up, 2, RILL_OVERFLOW_ERROR);
}

static rill_publisher *mk_latest(rill_publisher *up)
{
    return rill_on_backpressure_latest(up);
}

static rill_publisher *mk_drop(rill_publisher *up)
{
    return rill_on_backpressure_drop(up);
}

static rill_publisher *mk_limit(rill_publisher *up)
{
    return rill_limit_rate(up, 4, 2);
}

static const stage_fn stages[] = {mk_buffer2, mk_latest, mk_drop, mk_limit};

START_TEST(test_request_each)
{
    long base = live_allocations();
    dlog d;
    rill_publisher *p = logged(stages[_i](rill_range(1, 100)), &d);
    recorder *r = rec_new(1);
    r->request_each = 1;
    rill_subscribe(p, rec_subscriber(r));
    ck_assert_uint_eq(r->nitems, 100);
    for (size_t i = 0; i < 100; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i + 1);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(atomic_load(&d.n), 0);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Small batches from outside: buffer(4, DROP_OLDEST) with demand 2 at a
 * time keeps the newest four after the first two. */
START_TEST(test_buffer_small_batches)
{
    long base = live_allocations();
    dlog d;
    rill_publisher *p = logged(rill_on_backpressure_buffer(rill_range(1, 20), 4,
                                                           RILL_OVERFLOW_DROP_OLDEST), &d);
    recorder *r = rec_run(p, 2);
    assert_items(r, (intptr_t[]){1, 2}, 2);
    assert_log(&d, (intptr_t[]){3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}, 14);
    for (int k = 0; k < 3; k++)
        rec_request(r, 2);
    assert_items(r, (intptr_t[]){1, 2, 17, 18, 19, 20}, 6);
    ck_assert_int_eq(r->completes, 1);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* request(0) ends every stage with EINVAL; held items go to the hook. */
START_TEST(test_request_zero)
{
    long base = live_allocations();
    dlog d;
    rill_publisher *p = logged(stages[_i](rill_range(1, 10)), &d);
    recorder *r = rec_run(p, 0);
    if (_i == 2) {
        /* drop dropped all ten and held nothing: the stream already ended */
        ck_assert_int_eq(r->completes, 1);
    } else {
        rill_request(r->sub, 0);
        ck_assert_int_eq(r->errors, 1);
        ck_assert_int_eq(r->error_code, EINVAL);
    }
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->releases, 1);
    /* buffer(2) held 1, 2 (3 overflowed); latest held 10 (1..9 replaced);
     * drop held nothing (all 10 had no demand); limit_rate never asked */
    static const int discards[] = {3, 10, 10, 0};
    ck_assert_int_eq(atomic_load(&d.n), discards[_i]);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* request(0) on a live stream, for each stage, upstream still open: upstream
 * is cancelled (limit_rate forwards the 0 to upstream instead). */
START_TEST(test_request_zero_live)
{
    long base = live_allocations();
    spy sp;
    dlog d;
    rill_publisher *p = logged(stages[_i](spy_init(&sp)), &d);
    recorder *r = rec_run(p, 1);
    spy_emit(&sp, 1);
    rill_request(r->sub, 0);
    if (_i == 3) {
        ck_assert_uint_eq(sp.reqs[sp.nreqs - 1], 0);
        spy_end(&sp, EINVAL);   /* what a conforming upstream does */
    } else {
        ck_assert_int_eq(sp.cancels, 1);
    }
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EINVAL);
    assert_items(r, (intptr_t[]){1}, 1);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Cancel in the middle: what is held goes to the hook, upstream is
 * cancelled, nothing more is delivered. */
START_TEST(test_cancel_midstream)
{
    long base = live_allocations();
    spy sp;
    dlog d;
    rill_publisher *p = logged(stages[_i](spy_init(&sp)), &d);
    recorder *r = rec_run(p, 2);
    uint64_t room = _i == 3 ? 2 : 6;   /* limit_rate only asks for what was requested */
    for (uint64_t k = 1; k <= room && !sp.cancels; k++)
        spy_emit(&sp, (intptr_t)k);
    ck_assert_uint_eq(r->nitems, 2);
    rill_cancel(r->sub);
    ck_assert_int_eq(sp.cancels, 1);
    ck_assert_int_eq(r->releases, 1);
    rill_request(r->sub, 1);
    ck_assert_uint_eq(r->nitems, 2);
    /* buffer(2, ERROR) held 3, 4 and failed at 5 (discarded; upstream
     * cancelled, so 6 never came); latest replaced 3, 4, 5 and held 6; drop
     * dropped 3..6. */
    static const int discards[] = {3, 4, 4, 0};
    ck_assert_int_eq(atomic_load(&d.n), discards[_i]);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(sp.destroyed, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Upstream's error waits behind the held items (buffer, latest). */
START_TEST(test_error_after_held)
{
    long base = live_allocations();
    spy sp;
    dlog d;
    rill_publisher *p = logged(_i == 0 ? rill_on_backpressure_buffer(spy_init(&sp), 4,
                                                                      RILL_OVERFLOW_ERROR)
                                       : rill_on_backpressure_latest(spy_init(&sp)),
                               &d);
    recorder *r = rec_run(p, 0);
    ck_assert_uint_eq(sp.reqs[0], RILL_UNBOUNDED);
    spy_emit(&sp, 1);
    spy_emit(&sp, 2);
    spy_end(&sp, EIO);
    ck_assert_int_eq(r->errors, 0);
    rec_request(r, 1);
    ck_assert_int_eq(rec_int(r, 0), _i == 0 ? 1 : 2);
    ck_assert_int_eq(r->errors, _i == 0 ? 0 : 1);
    rec_request(r, 1);
    ck_assert_uint_eq(r->nitems, _i == 0 ? 2 : 1);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EIO);
    ck_assert_int_eq(atomic_load(&d.n), _i == 0 ? 0 : 1);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_empty_and_fail_upstream)
{
    long base = live_allocations();
    rill_publisher *p = stages[_i](rill_empty());
    recorder *r = rec_run(p, 1);
    ck_assert_int_eq(r->completes, 1);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    p = stages[_i](rill_fail(EIO, "boom"));
    r = rec_run(p, 0);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EIO);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Bad arguments: upstream consumed, NULL, EINVAL; ctx_free exactly once. */

static atomic_int ctx_frees;

static void count_free(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&ctx_frees, 1);
}

static void expect_einval(rill_publisher *p, spy *sp)
{
    ck_assert_ptr_null(p);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(sp->destroyed, 1);
}

START_TEST(test_bad_arguments)
{
    long base = live_allocations();
    spy sp;
    expect_einval(rill_on_backpressure_buffer(spy_init(&sp), 0, RILL_OVERFLOW_ERROR), &sp);
    expect_einval(rill_on_backpressure_buffer(spy_init(&sp), 4, (rill_overflow)7), &sp);
    expect_einval(rill_limit_rate(spy_init(&sp), 0, 0), &sp);
    expect_einval(rill_limit_rate(spy_init(&sp), 5, 6), &sp);
    expect_einval(rill_on_backpressure_ex(spy_init(&sp), NULL), &sp);
    rill_backpressure_options o = {
        .version = RILL_BACKPRESSURE_OPTIONS_VERSION,
        .mode = RILL_BACKPRESSURE_BUFFER,
        .capacity = 4,
        .ttl_ns = 100,   /* no scheduler */
        .ctx_free = count_free,
    };
    atomic_store(&ctx_frees, 0);
    expect_einval(rill_on_backpressure_ex(spy_init(&sp), &o), &sp);
    ck_assert_int_eq(atomic_load(&ctx_frees), 1);
    o.ttl_ns = 0;
    o.version = 0;
    expect_einval(rill_on_backpressure_ex(spy_init(&sp), &o), &sp);
    o.version = RILL_BACKPRESSURE_OPTIONS_VERSION;
    o.mode = (rill_backpressure_mode)9;
    expect_einval(rill_on_backpressure_ex(spy_init(&sp), &o), &sp);
    o.mode = RILL_BACKPRESSURE_LATEST;
    o.capacity = 2;
    expect_einval(rill_on_backpressure_ex(spy_init(&sp), &o), &sp);
    ck_assert_int_eq(atomic_load(&ctx_frees), 4);
    errno = 0;
    ck_assert_ptr_null(rill_on_backpressure_latest(NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(rill_on_backpressure_drop(NULL));
    ck_assert_ptr_null(rill_limit_rate(NULL, 4, 2));
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * on_overflow: called with each dropped item, before the hooks. */

START_TEST(test_on_overflow)
{
    long base = live_allocations();
    dlog d;
    atomic_store(&ctx_frees, 0);
    rill_backpressure_options o = {
        .version = RILL_BACKPRESSURE_OPTIONS_VERSION,
        .mode = RILL_BACKPRESSURE_BUFFER,
        .capacity = 2,
        .policy = RILL_OVERFLOW_DROP_OLDEST,
        .on_overflow = log_overflow,
        .ctx = &d,
        .ctx_free = count_free,
    };
    rill_publisher *p = logged(rill_on_backpressure_ex(rill_range(1, 6), &o), &d);
    recorder *r = rec_run(p, 1);
    /* 1 delivered; 2, 3 held; 4 evicts 2, 5 evicts 3, 6 evicts 4 */
    assert_log(&d, (intptr_t[]){-2, 2, -3, 3, -4, 4}, 6);
    rill_cancel(r->sub);   /* 5 and 6 go to the hook only: no overflow */
    assert_log(&d, (intptr_t[]){-2, 2, -3, 3, -4, 4, 5, 6}, 8);
    ck_assert(rec_ok(r));
    rec_free(r);
    ck_assert_int_eq(atomic_load(&ctx_frees), 0);
    rill_publisher_unref(p);
    ck_assert_int_eq(atomic_load(&ctx_frees), 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The ctx is released once, after the last subscription is gone, however
 * many subscriptions used it. */
START_TEST(test_ctx_free_once)
{
    long base = live_allocations();
    dlog d;
    memset(&d, 0, sizeof d);
    atomic_store(&ctx_frees, 0);
    rill_backpressure_options o = {
        .version = RILL_BACKPRESSURE_OPTIONS_VERSION,
        .mode = (rill_backpressure_mode)_i,
        .capacity = _i == RILL_BACKPRESSURE_LATEST ? 0 : 1,
        .policy = RILL_OVERFLOW_DROP_LATEST,
        .on_overflow = log_overflow,
        .ctx = &d,
        .ctx_free = count_free,
    };
    rill_publisher *p = rill_on_backpressure_ex(rill_range(1, 3), &o);
    recorder *r1 = rec_run(p, 1);
    recorder *r2 = rec_run(p, 1);
    rill_publisher_unref(p);
    /* r1, r2 still hold the stage, except drop's, which held nothing */
    ck_assert_int_eq(atomic_load(&ctx_frees), _i == RILL_BACKPRESSURE_DROP);
    rec_request(r1, 5);
    if (!r2->releases)
        rill_cancel(r2->sub);
    ck_assert_int_eq(atomic_load(&ctx_frees), 1);
    ck_assert_int_eq(r1->completes, 1);
    /* buffer(1): 2 held, 3 refused; latest: 3 replaced 2; drop: 2, 3 dropped */
    ck_assert_int_eq(atomic_load(&d.n), _i == RILL_BACKPRESSURE_DROP ? 4 : 2);
    rec_free(r1);
    rec_free(r2);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * TTL with virtual time. */

static rill_publisher *ttl_stage(rill_publisher *up, rill_scheduler *vt, int mode)
{
    rill_backpressure_options o = {
        .version = RILL_BACKPRESSURE_OPTIONS_VERSION,
        .mode = (rill_backpressure_mode)mode,
        .capacity = mode == RILL_BACKPRESSURE_LATEST ? 0 : 4,
        .policy = RILL_OVERFLOW_DROP_LATEST,
        .ttl_ns = 100,
        .scheduler = vt,
    };
    return rill_on_backpressure_ex(up, &o);
}

START_TEST(test_ttl_buffer)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    spy sp;
    dlog d;
    rill_publisher *p = logged(ttl_stage(spy_init(&sp), vt, RILL_BACKPRESSURE_BUFFER), &d);
    recorder *r = rec_run(p, 0);
    spy_emit(&sp, 1);                        /* t = 0 */
    ck_assert_int_eq(rill_virtual_time_advance(vt, 50), 0);
    spy_emit(&sp, 2);                        /* t = 50 */
    ck_assert_int_eq(rill_virtual_time_advance(vt, 49), 0);
    ck_assert_int_eq(atomic_load(&d.n), 0);  /* t = 99: 1 is 99 ns old */
    ck_assert_int_eq(rill_virtual_time_advance(vt, 1), 0);
    assert_log(&d, (intptr_t[]){1}, 1);      /* t = 100: 1 expired */
    rec_request(r, 1);
    assert_items(r, (intptr_t[]){2}, 1);
    spy_emit(&sp, 3);                        /* t = 100 */
    spy_emit(&sp, 4);
    spy_end(&sp, 0);
    ck_assert_int_eq(r->completes, 0);       /* 3 and 4 held */
    ck_assert_int_eq(rill_virtual_time_advance(vt, 100), 0);
    assert_log(&d, (intptr_t[]){1, 3, 4}, 3);
    ck_assert_int_eq(r->completes, 1);       /* the eviction emptied an ended stage */
    ck_assert_int_eq(r->releases, 1);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* An item found expired at delivery time is discarded, even if the timer
 * has not run yet; cancel takes the queued timer back. */
START_TEST(test_ttl_latest_and_cancel)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    spy sp;
    dlog d;
    rill_publisher *p = logged(ttl_stage(spy_init(&sp), vt, RILL_BACKPRESSURE_LATEST), &d);
    recorder *r = rec_run(p, 0);
    spy_emit(&sp, 1);
    spy_emit(&sp, 2);                        /* replaces 1 */
    assert_log(&d, (intptr_t[]){1}, 1);
    ck_assert_int_eq(rill_virtual_time_advance(vt, 100), 0);
    assert_log(&d, (intptr_t[]){1, 2}, 2);
    spy_emit(&sp, 3);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 1);
    rill_cancel(r->sub);
    assert_log(&d, (intptr_t[]){1, 2, 3}, 3);
    ck_assert_uint_eq(rill_virtual_time_pending(vt), 0);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The stage keeps its scheduler: the caller's reference may go while a
 * timer is queued; the stream still ends cleanly and frees everything. */
START_TEST(test_ttl_scheduler_unref)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    spy sp;
    dlog d;
    rill_publisher *p = logged(ttl_stage(spy_init(&sp), vt, RILL_BACKPRESSURE_BUFFER), &d);
    recorder *r = rec_run(p, 0);
    rill_publisher_unref(p);   /* the subscription keeps the stage */
    spy_emit(&sp, 1);
    rill_scheduler_unref(vt);
    ck_assert_int_eq(atomic_load(&d.n), 0);
    spy_emit(&sp, 2);
    spy_end(&sp, 0);
    rec_request(r, 5);
    assert_items(r, (intptr_t[]){1, 2}, 2);
    ck_assert_int_eq(r->completes, 1);
    ck_assert(rec_ok(r));
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * limit_rate: the exact request pattern upstream sees. */

typedef struct limit_case {
    uint64_t high, low, down;      /* down: downstream's one request */
    int emit;
    uint64_t want[8];
    int nwant;
} limit_case;

static const limit_case limit_cases[] = {
    {10, 0, RILL_UNBOUNDED, 30, {10, 10, 10, 10}, 4},
    {10, 5, RILL_UNBOUNDED, 20, {10, 5, 5, 5, 5}, 5},
    {10, 10, RILL_UNBOUNDED, 20, {10, 10, 10}, 3},
    {10, 3, RILL_UNBOUNDED, 9, {10, 3, 3, 3}, 4},
    {RILL_UNBOUNDED, 0, RILL_UNBOUNDED, 50, {RILL_UNBOUNDED}, 1},
    {10, 5, 3, 3, {3}, 1},            /* never more than downstream asked for */
    {10, 5, 12, 12, {10, 2}, 2},
    {1, 1, RILL_UNBOUNDED, 3, {1, 1, 1, 1}, 4},
};

START_TEST(test_limit_rate_pattern)
{
    long base = live_allocations();
    const limit_case *c = &limit_cases[_i];
    spy sp;
    rill_publisher *p = rill_limit_rate(spy_init(&sp), c->high, c->low);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, c->down);
    for (int k = 1; k <= c->emit; k++)
        spy_emit(&sp, k);
    ck_assert_int_eq(sp.nreqs, c->nwant);
    for (int k = 0; k < c->nwant; k++)
        ck_assert_msg(sp.reqs[k] == c->want[k], "request %d: got %llu, want %llu", k,
                      (unsigned long long)sp.reqs[k], (unsigned long long)c->want[k]);
    ck_assert_uint_eq(r->nitems, (size_t)c->emit);
    spy_end(&sp, 0);
    ck_assert_int_eq(r->completes, 1);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(sp.destroyed, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Downstream's later requests wait for the batch to come in, then go up. */
START_TEST(test_limit_rate_split_requests)
{
    long base = live_allocations();
    spy sp;
    rill_publisher *p = rill_limit_rate(spy_init(&sp), 4, 2);
    recorder *r = rec_run(p, 3);
    rec_request(r, 3);               /* 3 outstanding, nothing arrived: wait */
    ck_assert_int_eq(sp.nreqs, 1);
    ck_assert_uint_eq(sp.reqs[0], 3);
    spy_emit(&sp, 1);
    spy_emit(&sp, 2);                /* 2 arrived: up to 4 - 1 outstanding */
    ck_assert_int_eq(sp.nreqs, 2);
    ck_assert_uint_eq(sp.reqs[1], 3);
    for (int k = 3; k <= 6; k++)
        spy_emit(&sp, k);
    ck_assert_int_eq(sp.nreqs, 2);
    ck_assert_uint_eq(sp.requested, 6);
    ck_assert_uint_eq(r->nitems, 6);
    rill_cancel(r->sub);
    ck_assert_int_eq(sp.cancels, 1);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_limit_rate_range)
{
    long base = live_allocations();
    rill_publisher *p = rill_limit_rate(rill_range(0, 1000), 16, 4);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_uint_eq(r->nitems, 1000);
    for (size_t i = 0; i < 1000; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i);
    ck_assert_int_eq(r->completes, 1);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Threads: a producer on its own thread, a consumer requesting from the
 * test thread. */

typedef struct consumer {
    rill_subscription *sub;
    atomic_long delivered, last, order_errors, overlaps;
    atomic_int in_signal, terminal, error_code, released;
    atomic_int busy, stopping;   /* the request guard */
    uint32_t slow;               /* spin per item: a slow consumer */
    uint32_t seed;
    int request_each;
    int sample;                  /* record live_allocations per item */
    long min_live, max_live;     /* allocations at item 100, and the most seen after */
} consumer;

static void c_enter(consumer *c)
{
    if (atomic_fetch_add(&c->in_signal, 1) != 0)
        atomic_fetch_add(&c->overlaps, 1);
}

static void c_leave(consumer *c)
{
    atomic_fetch_sub(&c->in_signal, 1);
}

static void c_subscribe(void *user, rill_subscription *s)
{
    consumer *c = user;
    c->sub = s;
    if (c->request_each)
        rill_request(s, 1);
}

static void c_next(void *user, void *item)
{
    consumer *c = user;
    c_enter(c);
    long v = (long)(intptr_t)item;
    if (v <= atomic_load(&c->last))
        atomic_fetch_add(&c->order_errors, 1);
    atomic_store(&c->last, v);
    long n = atomic_fetch_add(&c->delivered, 1) + 1;
    if (c->slow)
        spin(c->slow);
    if (c->sample && n >= 100) {   /* steady state: set-up is over */
        long live = live_allocations();
        if (n == 100)
            c->min_live = live;      /* the level to stay under */
        if (n == 100 || live > c->max_live)
            c->max_live = live;
    }
    if (c->request_each)
        rill_request(c->sub, 1);
    c_leave(c);
}

static void c_error(void *user, const rill_error *e)
{
    consumer *c = user;
    c_enter(c);
    atomic_store(&c->error_code, rill_error_code(e));
    atomic_fetch_add(&c->terminal, 1);
    c_leave(c);
}

static void c_complete(void *user)
{
    consumer *c = user;
    c_enter(c);
    atomic_fetch_add(&c->terminal, 1);
    c_leave(c);
}

/* The consumer whose request this thread is inside (a synchronous drain may
 * release the consumer inside that request: it must not wait for itself). */
static _Thread_local consumer *requesting;

static void c_release(void *user)
{
    consumer *c = user;
    int mine = requesting == c;
    atomic_store(&c->stopping, 1);
    while (atomic_load(&c->busy) > mine)
        sched_yield();
    atomic_store(&c->released, 1);
}

static const rill_callbacks consumer_cb = {
    .on_subscribe = c_subscribe,
    .on_next = c_next,
    .on_error = c_error,
    .on_complete = c_complete,
    .on_release = c_release,
};

/* A request from the test thread, guarded against a concurrent release. */
static void c_request(consumer *c, uint64_t n)
{
    atomic_fetch_add(&c->busy, 1);
    requesting = c;
    if (!atomic_load(&c->stopping))
        rill_request(c->sub, n);
    requesting = NULL;
    atomic_fetch_sub(&c->busy, 1);
}

static void c_cancel(consumer *c)
{
    atomic_fetch_add(&c->busy, 1);
    requesting = c;
    if (!atomic_load(&c->stopping))
        rill_cancel(c->sub);
    requesting = NULL;
    atomic_fetch_sub(&c->busy, 1);
}

static void consumer_init(consumer *c, uint32_t seed)
{
    memset(c, 0, sizeof *c);
    atomic_store(&c->last, -1);
    c->seed = seed ? seed : 1;
}

/* The producer: range(0, n) counted, slowed at random, on its own thread. */
typedef struct producer {
    atomic_long emitted;
    uint32_t slow;
} producer;

static int slow_map(void *ctx, void *in, void **out)
{
    producer *pr = ctx;
    long k = atomic_fetch_add(&pr->emitted, 1);
    if (pr->slow && (k & 7) == 0)
        spin(pr->slow);
    *out = in;
    return 0;
}

static rill_publisher *threaded_stage(int mode, producer *pr, uint64_t n, rill_scheduler *single)
{
    rill_publisher *src = rill_subscribe_on(rill_map(rill_range(0, n), slow_map, pr), single);
    switch (mode) {
    case 0: return rill_on_backpressure_buffer(src, 8, RILL_OVERFLOW_DROP_LATEST);
    case 1: return rill_on_backpressure_buffer(src, 8, RILL_OVERFLOW_DROP_OLDEST);
    case 2: return rill_on_backpressure_latest(src);
    case 3: return rill_on_backpressure_drop(src);
    default: return rill_limit_rate(src, 8, 2);
    }
}

/* Waits (bounded by the test timeout) for the discard hook's ctx_free and
 * for the allocation count to come back: stages are freed on the
 * producer's thread after the consumer's release. */
static void settle(const dlog *d, long base)
{
    while (atomic_load(&d->frees) == 0 || live_allocations() != base)
        sched_yield();
}

static void one_round(int mode, uint32_t seed)
{
    long base = live_allocations();
    rill_scheduler *single = rill_single_thread_new();
    producer pr = {.slow = seed % 3 == 0 ? 0 : seed % 400};
    atomic_init(&pr.emitted, 0);
    consumer c;
    consumer_init(&c, seed);
    c.slow = (seed >> 3) % 3 == 0 ? 0 : (seed >> 5) % 2000;
    uint64_t n = 500 + seed % 1500;
    dlog d;
    rill_publisher *p = logged(threaded_stage(mode, &pr, n, single), &d);
    rill_subscribe(p, rill_subscriber_new(&consumer_cb, &c));
    rill_publisher_unref(p);
    while (!atomic_load(&c.terminal)) {
        c_request(&c, 1 + xorshift(&c.seed) % 8);
        spin(xorshift(&c.seed) % 3000);
    }
    while (!atomic_load(&c.released))
        sched_yield();
    rill_scheduler_unref(single);
    settle(&d, base);
    ck_assert_int_eq(atomic_load(&c.terminal), 1);
    ck_assert_int_eq(atomic_load(&c.error_code), 0);
    ck_assert_int_eq(atomic_load(&c.overlaps), 0);
    ck_assert_int_eq(atomic_load(&c.order_errors), 0);
    ck_assert_int_eq(atomic_load(&pr.emitted), (long)n);
    ck_assert_int_eq(atomic_load(&pr.emitted), atomic_load(&c.delivered) + atomic_load(&d.n));
    if (mode == 4)
        ck_assert_int_eq(atomic_load(&d.n), 0);   /* limit_rate drops nothing */
}

START_TEST(test_conservation_threads)
{
    int rounds = quick() ? 20 : 200;
    uint32_t seed = 0x9e3779b9u ^ (uint32_t)_i * 7919u;
    for (int k = 0; k < rounds; k++)
        one_round(_i, xorshift(&seed));
}
END_TEST

/* ------------------------------------------------------------------------
 * Metrics: the options' metrics object counts every item exactly once. */

static rill_publisher *metered(rill_publisher *up, int mode, size_t capacity,
                               rill_overflow policy, rill_metrics *m)
{
    rill_backpressure_options o = {
        .version = RILL_BACKPRESSURE_OPTIONS_VERSION,
        .mode = (rill_backpressure_mode)mode,
        .capacity = capacity,
        .policy = policy,
        .metrics = m,
    };
    return rill_on_backpressure_ex(up, &o);
}

static rill_metrics_values snap(rill_metrics *m)
{
    rill_metrics_values v = {.version = RILL_METRICS_VALUES_VERSION};
    ck_assert_int_eq(rill_metrics_snapshot(m, &v), 0);
    ck_assert_uint_eq(v.received, v.emitted + v.discarded_filtered + v.discarded_overflow +
                                      v.discarded_cancelled + v.discarded_expired + v.queued);
    return v;
}

START_TEST(test_metrics_buffer)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("buffer");
    dlog d;
    /* range pushes all 10 at once: 0..6 are evicted, 7..9 held */
    rill_publisher *p = logged(metered(rill_range(0, 10), RILL_BACKPRESSURE_BUFFER, 3,
                                       RILL_OVERFLOW_DROP_OLDEST, m), &d);
    rill_metrics_unref(m);   /* the stage keeps its own reference */
    recorder *r = rec_run(p, 0);
    rill_metrics_values v = snap(m);
    ck_assert_uint_eq(v.received, 10);
    ck_assert_uint_eq(v.discarded_overflow, 7);
    ck_assert_uint_eq(v.queued, 3);
    ck_assert_uint_eq(v.queued_high_water, 3);
    ck_assert_uint_eq(v.capacity, 3);
    rec_request(r, 2);
    v = snap(m);
    ck_assert_uint_eq(v.emitted, 2);
    ck_assert_uint_eq(v.queued, 1);
    ck_assert_uint_eq(v.demand_outstanding, 0);
    rill_cancel(r->sub);
    v = snap(m);
    ck_assert_uint_eq(v.discarded_cancelled, 1);
    ck_assert_uint_eq(v.queued, 0);
    ck_assert_int_eq(atomic_load(&d.n), 8);
    assert_items(r, (intptr_t[]){7, 8}, 2);
    rec_free(r);
    rill_publisher_unref(p);   /* frees m too */
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_metrics_modes)
{
    /* _i: 0 buffer(DROP_LATEST, 2), 1 buffer(ERROR, 2), 2 latest, 3 drop */
    static const int modes[] = {RILL_BACKPRESSURE_BUFFER, RILL_BACKPRESSURE_BUFFER,
                                RILL_BACKPRESSURE_LATEST, RILL_BACKPRESSURE_DROP};
    static const rill_overflow policies[] = {RILL_OVERFLOW_DROP_LATEST, RILL_OVERFLOW_ERROR,
                                             RILL_OVERFLOW_ERROR, RILL_OVERFLOW_ERROR};
    static const uint64_t want_overflow[] = {2, 1, 3, 4};
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("mode");
    spy sp;
    rill_publisher *p = metered(spy_init(&sp), modes[_i], _i < 2 ? 2 : 0, policies[_i], m);
    recorder *r = rec_run(p, 1);
    for (int i = 1; i <= (_i == 1 ? 4 : 5); i++)   /* ERROR cancels upstream at 4 */
        spy_emit(&sp, i);
    rill_metrics_values v = snap(m);
    ck_assert_uint_eq(v.received, _i == 1 ? 4 : 5);
    ck_assert_uint_eq(v.emitted, 1);
    ck_assert_uint_eq(v.discarded_overflow, want_overflow[_i]);
    rec_request(r, RILL_UNBOUNDED);
    v = snap(m);
    ck_assert_uint_eq(v.queued, 0);
    if (_i != 1) {
        spy_end(&sp, 0);
        ck_assert_int_eq(r->completes, 1);
    } else {
        ck_assert_int_eq(r->error_code, EOVERFLOW);
    }
    ck_assert_uint_eq(snap(m).demand_outstanding, RILL_UNBOUNDED);
    ck_assert(rec_ok(r));
    rec_free(r);
    rill_publisher_unref(p);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_metrics_ttl)
{
    long base = live_allocations();
    rill_scheduler *vt = rill_virtual_time_new();
    rill_metrics *m = rill_metrics_new("ttl");
    rill_backpressure_options o = {
        .version = RILL_BACKPRESSURE_OPTIONS_VERSION,
        .mode = RILL_BACKPRESSURE_BUFFER,
        .capacity = 4,
        .policy = RILL_OVERFLOW_DROP_LATEST,
        .ttl_ns = 100,
        .scheduler = vt,
        .metrics = m,
    };
    spy sp;
    rill_publisher *p = rill_on_backpressure_ex(spy_init(&sp), &o);
    recorder *r = rec_run(p, 0);
    spy_emit(&sp, 1);
    spy_emit(&sp, 2);
    ck_assert_int_eq(rill_virtual_time_advance(vt, 100), 0);
    rill_metrics_values v = snap(m);
    ck_assert_uint_eq(v.discarded_expired, 2);
    ck_assert_uint_eq(v.queued, 0);
    spy_end(&sp, 0);
    ck_assert_int_eq(r->completes, 1);
    rec_free(r);
    rill_publisher_unref(p);
    rill_scheduler_unref(vt);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A version-1 options struct (no metrics field) still works. */
START_TEST(test_options_version1)
{
    long base = live_allocations();
    rill_backpressure_options o = {
        .version = 1,
        .mode = RILL_BACKPRESSURE_BUFFER,
        .capacity = 2,
        .policy = RILL_OVERFLOW_DROP_OLDEST,
        .metrics = (rill_metrics *)&o,   /* garbage beyond a v1 struct: must be ignored */
    };
    rill_publisher *p = rill_on_backpressure_ex(rill_range(0, 5), &o);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_int_eq(r->completes, 1);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

typedef struct mreader {
    rill_metrics *m;
    size_t capacity;
    atomic_int stop;
    atomic_long bad, reads;
} mreader;

static void *metrics_reader(void *arg)
{
    mreader *mr = arg;
    while (!atomic_load(&mr->stop)) {
        rill_metrics_values v = {.version = RILL_METRICS_VALUES_VERSION};
        rill_metrics_snapshot(mr->m, &v);
        if (v.received != v.emitted + v.discarded_overflow + v.discarded_cancelled +
                              v.discarded_expired + v.queued ||
            v.queued > mr->capacity || v.emitted > v.received)
            atomic_fetch_add(&mr->bad, 1);
        atomic_fetch_add(&mr->reads, 1);
        sched_yield();
    }
    return NULL;
}

/* Threads: producer, consumer and a reader polling snapshots; every
 * snapshot conserves items, and at the end the counts equal what the
 * consumer and the discard hook saw. */
static void metrics_round(int mode, uint32_t seed)
{
    long base = live_allocations();
    mreader mr = {.m = rill_metrics_new("threads"), .capacity = 8};
    long with_m = live_allocations();
    rill_scheduler *single = rill_single_thread_new();
    producer pr = {.slow = seed % 3 == 0 ? 0 : seed % 400};
    atomic_init(&pr.emitted, 0);
    consumer c;
    consumer_init(&c, seed);
    c.slow = (seed >> 3) % 3 == 0 ? 0 : (seed >> 5) % 2000;
    uint64_t n = 500 + seed % 1500;
    rill_publisher *src = rill_subscribe_on(rill_map(rill_range(0, n), slow_map, &pr), single);
    rill_publisher *stage = metered(src, mode == 3 ? RILL_BACKPRESSURE_LATEST
                                       : mode == 4 ? RILL_BACKPRESSURE_DROP
                                                   : RILL_BACKPRESSURE_BUFFER,
                                    mode >= 3 ? 0 : 8,
                                    mode == 1 ? RILL_OVERFLOW_DROP_OLDEST : RILL_OVERFLOW_DROP_LATEST,
                                    mr.m);
    if (mode == 4)
        mr.capacity = RILL_BACKPRESSURE_DROP_SLOTS;
    dlog d;
    rill_publisher *p = logged(stage, &d);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, metrics_reader, &mr), 0);
    rill_subscribe(p, rill_subscriber_new(&consumer_cb, &c));
    rill_publisher_unref(p);
    int cancel_at = seed % 4 == 0 ? (int)(seed % 50) : -1;
    for (int k = 0; !atomic_load(&c.terminal) && !atomic_load(&c.released); k++) {
        if (k == cancel_at)
            c_cancel(&c);
        else
            c_request(&c, 1 + xorshift(&c.seed) % 8);
        spin(xorshift(&c.seed) % 3000);
    }
    while (!atomic_load(&c.released))
        sched_yield();
    rill_scheduler_unref(single);
    settle(&d, with_m);   /* m is still ours */
    atomic_store(&mr.stop, 1);
    pthread_join(t, NULL);
    rill_metrics_values v = snap(mr.m);
    ck_assert_int_eq(atomic_load(&mr.bad), 0);
    ck_assert_uint_eq(v.received, (uint64_t)atomic_load(&pr.emitted));
    ck_assert_uint_eq(v.emitted, (uint64_t)atomic_load(&c.delivered));
    ck_assert_uint_eq(v.discarded_overflow + v.discarded_cancelled, (uint64_t)atomic_load(&d.n));
    ck_assert_uint_eq(v.queued, 0);
    ck_assert_uint_le(v.queued_high_water, mr.capacity);
    if (cancel_at < 0)
        ck_assert_uint_eq(v.received, n);
    rill_metrics_unref(mr.m);
    ck_assert_int_eq(live_allocations(), base);
}

/* TTL under threads: a real scheduler's task evicts while the producer
 * evicts (DROP_OLDEST / LATEST) and the drainer delivers: three takers on
 * one ring. Every item is delivered or discarded exactly once, in order. */
static void ttl_round(uint32_t seed)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("ttl_threads");
    long with_m = live_allocations();
    rill_scheduler *single = rill_single_thread_new();
    rill_scheduler *timers = rill_thread_pool_new(1);
    producer pr = {.slow = seed % 2 ? 0 : seed % 300};
    atomic_init(&pr.emitted, 0);
    consumer c;
    consumer_init(&c, seed);
    c.slow = (seed >> 4) % 2000;
    uint64_t n = 300 + seed % 1000;
    rill_backpressure_options o = {
        .version = RILL_BACKPRESSURE_OPTIONS_VERSION,
        .mode = seed % 3 == 0 ? RILL_BACKPRESSURE_LATEST : RILL_BACKPRESSURE_BUFFER,
        .capacity = seed % 3 == 0 ? 0 : 1 + seed % 8,
        .policy = RILL_OVERFLOW_DROP_OLDEST,
        .ttl_ns = 1000 + (seed >> 7) % 50000,
        .scheduler = timers,
        .metrics = m,
    };
    rill_publisher *src = rill_subscribe_on(rill_map(rill_range(0, n), slow_map, &pr), single);
    dlog d;
    rill_publisher *p = logged(rill_on_backpressure_ex(src, &o), &d);
    rill_subscribe(p, rill_subscriber_new(&consumer_cb, &c));
    rill_publisher_unref(p);
    while (!atomic_load(&c.terminal)) {
        c_request(&c, 1 + xorshift(&c.seed) % 4);
        spin(xorshift(&c.seed) % 4000);
    }
    while (!atomic_load(&c.released))
        sched_yield();
    rill_scheduler_unref(single);
    rill_scheduler_unref(timers);
    settle(&d, with_m);
    ck_assert_int_eq(atomic_load(&c.overlaps), 0);
    ck_assert_int_eq(atomic_load(&c.order_errors), 0);
    ck_assert_int_eq(atomic_load(&pr.emitted), (long)n);
    ck_assert_int_eq(atomic_load(&c.delivered) + atomic_load(&d.n), (long)n);
    rill_metrics_values v = snap(m);
    ck_assert_uint_eq(v.received, n);
    ck_assert_uint_eq(v.emitted, (uint64_t)atomic_load(&c.delivered));
    ck_assert_uint_eq(v.discarded_overflow + v.discarded_expired + v.discarded_cancelled,
                      (uint64_t)atomic_load(&d.n));
    ck_assert_uint_eq(v.queued, 0);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}

START_TEST(test_ttl_threads)
{
    int rounds = quick() ? 5 : 60;
    uint32_t seed = 0xc2b2ae35u ^ (uint32_t)_i * 65537u;
    for (int k = 0; k < rounds; k++)
        ttl_round(xorshift(&seed));
}
END_TEST

START_TEST(test_metrics_threads)
{
    int rounds = quick() ? 10 : 100;
    uint32_t seed = 0x85ebca6bu ^ (uint32_t)_i * 104729u;
    for (int k = 0; k < rounds; k++)
        metrics_round(_i, xorshift(&seed));
}
END_TEST

/* A producer far faster than the consumer, for a long run: the stage holds
 * at most its capacity, and no allocation happens per item. */
START_TEST(test_memory_bounded)
{
    long base = live_allocations();
    rill_scheduler *single = rill_single_thread_new();
    producer pr = {.slow = 0};
    atomic_init(&pr.emitted, 0);
    consumer c;
    consumer_init(&c, 7 + (uint32_t)_i);
    c.sample = 1;
    c.slow = 2000;   /* ~100x the producer's cost per item */
    uint64_t n = quick() ? 5000 : 300000;
    dlog d;
    rill_publisher *p = logged(threaded_stage(_i, &pr, n, single), &d);
    rill_subscribe(p, rill_subscriber_new(&consumer_cb, &c));
    rill_publisher_unref(p);
    /* One at a time from this thread: the delivery (and its spin) runs
     * here or on the producer's thread, whichever drains. */
    while (!atomic_load(&c.terminal)) {
        c_request(&c, 1);
        spin(xorshift(&c.seed) % 4000);
    }
    while (!atomic_load(&c.released))
        sched_yield();
    rill_scheduler_unref(single);
    settle(&d, base);
    ck_assert_int_eq(atomic_load(&c.terminal), 1);
    ck_assert_int_eq(atomic_load(&c.overlaps), 0);
    ck_assert_int_eq(atomic_load(&c.order_errors), 0);
    ck_assert_int_eq(atomic_load(&pr.emitted), (long)n);
    ck_assert_int_eq(atomic_load(&pr.emitted), atomic_load(&c.delivered) + atomic_load(&d.n));
    /* Never above the level of item 100 (it falls when upstream's stages
     * are freed at their end, while held items are still delivered). */
    ck_assert_msg(c.max_live == c.min_live, "allocations grew while items flowed: %ld -> %ld",
                  c.min_live, c.max_live);
}
END_TEST

/* ERROR across threads, deterministically: no demand until the producer
 * has overflowed the buffer of 8 with item 8 (0-based). */
START_TEST(test_error_threads)
{
    long base = live_allocations();
    rill_scheduler *single = rill_single_thread_new();
    producer pr = {.slow = 0};
    atomic_init(&pr.emitted, 0);
    consumer c;
    consumer_init(&c, 3);
    dlog d;
    rill_publisher *src = rill_subscribe_on(rill_map(rill_range(0, 100), slow_map, &pr), single);
    rill_publisher *p = logged(rill_on_backpressure_buffer(src, 8, RILL_OVERFLOW_ERROR), &d);
    rill_subscribe(p, rill_subscriber_new(&consumer_cb, &c));
    rill_publisher_unref(p);
    while (atomic_load(&d.n) == 0)
        sched_yield();
    ck_assert_int_eq(atomic_load(&c.terminal), 0);   /* the error waits behind 8 items */
    while (!atomic_load(&c.terminal))
        c_request(&c, 3);
    while (!atomic_load(&c.released))
        sched_yield();
    rill_scheduler_unref(single);
    settle(&d, base);
    ck_assert_int_eq(atomic_load(&c.error_code), EOVERFLOW);
    ck_assert_int_eq(atomic_load(&c.delivered), 8);
    ck_assert_int_eq(d.v[0], 8);   /* the item that did not fit */
    ck_assert_int_eq(atomic_load(&pr.emitted), atomic_load(&c.delivered) + atomic_load(&d.n));
    ck_assert_int_eq(atomic_load(&c.overlaps), 0);
}
END_TEST

/* Cancel from the test thread while the producer runs: everything emitted
 * is delivered or discarded. (subscribe_on carries the cancel through its
 * worker, which is busy in range's synchronous emission, so range stops only
 * at its end: the stage discards what arrives after the cancel. Hence a
 * finite range.) */
START_TEST(test_cancel_threads)
{
    long base = live_allocations();
    rill_scheduler *single = rill_single_thread_new();
    producer pr = {.slow = 100};
    atomic_init(&pr.emitted, 0);
    consumer c;
    consumer_init(&c, 11 + (uint32_t)_i);
    dlog d;
    rill_publisher *p = logged(threaded_stage(_i, &pr, quick() ? 20000 : 200000, single), &d);
    rill_subscribe(p, rill_subscriber_new(&consumer_cb, &c));
    rill_publisher_unref(p);
    /* latest and drop may see the whole range go by before 50 arrive */
    while (atomic_load(&c.delivered) < 50 && !atomic_load(&c.terminal))
        c_request(&c, 2);
    c_cancel(&c);
    while (!atomic_load(&c.released))
        sched_yield();
    rill_scheduler_unref(single);
    settle(&d, base);
    ck_assert_int_le(atomic_load(&c.terminal), 1);
    ck_assert_int_eq(atomic_load(&c.error_code), 0);
    ck_assert_int_eq(atomic_load(&pr.emitted), atomic_load(&c.delivered) + atomic_load(&d.n));
    ck_assert_int_eq(atomic_load(&c.overlaps), 0);
}
END_TEST

Suite *backpressure_suite(void)
{
    Suite *s = suite_create("backpressure");
    TCase *tc = tcase_create("sync");
    tcase_add_test(tc, test_buffer_drop_latest);
    tcase_add_test(tc, test_buffer_drop_oldest);
    tcase_add_test(tc, test_buffer_error);
    tcase_add_test(tc, test_latest);
    tcase_add_test(tc, test_drop);
    tcase_add_loop_test(tc, test_request_each, 0, 4);
    tcase_add_test(tc, test_buffer_small_batches);
    tcase_add_loop_test(tc, test_request_zero, 0, 4);
    tcase_add_loop_test(tc, test_request_zero_live, 0, 4);
    tcase_add_loop_test(tc, test_cancel_midstream, 0, 4);
    tcase_add_loop_test(tc, test_error_after_held, 0, 2);
    tcase_add_loop_test(tc, test_empty_and_fail_upstream, 0, 4);
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_on_overflow);
    tcase_add_loop_test(tc, test_ctx_free_once, 0, 3);
    suite_add_tcase(s, tc);

    tc = tcase_create("ttl");
    tcase_add_test(tc, test_ttl_buffer);
    tcase_add_test(tc, test_ttl_latest_and_cancel);
    tcase_add_test(tc, test_ttl_scheduler_unref);
    suite_add_tcase(s, tc);

    tc = tcase_create("metrics");
    tcase_add_test(tc, test_metrics_buffer);
    tcase_add_loop_test(tc, test_metrics_modes, 0, 4);
    tcase_add_test(tc, test_metrics_ttl);
    tcase_add_test(tc, test_options_version1);
    suite_add_tcase(s, tc);

    tc = tcase_create("limit_rate");
    tcase_add_loop_test(tc, test_limit_rate_pattern, 0,
                        (int)(sizeof limit_cases / sizeof limit_cases[0]));
    tcase_add_test(tc, test_limit_rate_split_requests);
    tcase_add_test(tc, test_limit_rate_range);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_loop_test(tc, test_conservation_threads, 0, 5);
    tcase_add_loop_test(tc, test_memory_bounded, 0, 4);
    tcase_add_test(tc, test_error_threads);
    tcase_add_loop_test(tc, test_cancel_threads, 0, 5);
    tcase_add_loop_test(tc, test_metrics_threads, 0, 5);
    tcase_add_loop_test(tc, test_ttl_threads, 0, 3);
    suite_add_tcase(s, tc);
    return s;
}
