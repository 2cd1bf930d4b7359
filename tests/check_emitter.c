/* tests/check_emitter.c — rill_emitter: the push source.
 *
 * Synchronous cases drive one emitter from the test thread into the shared
 * recorder (with a discard hook below it that logs what it gets), so each
 * test states exactly what rill_emit returned, what was delivered, what was
 * discarded and what the metrics say.
 *
 * Threaded cases: several producer threads emitting tagged items under each
 * policy while a consumer requests random amounts (and sometimes cancels),
 * a metrics reader checks every snapshot, and the end state is checked for
 * conservation (every accepted item delivered or discarded exactly once,
 * every refused item still the producer's) and per-producer order. A
 * watermark case has producers that honour RILL_EMIT_PAUSED and proves the
 * pause/resume transitions cannot flap. No timing assertions.
 */
#include "recorder.h"
#include "suites.h"

#include <rill.h>
#include <rill/tck.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#define ITEM(v) ((void *)(intptr_t)(v))
#define MAXLOG 4096

static int quick(void)
{
    const char *q = getenv("RILL_TEST_QUICK");
    return q && *q && *q != '0';
}

static uint32_t xorshift(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* ------------------------------------------------------------------------
 * Helpers: a discard log, an on_writable counter, a metrics snapshot. */

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

static void log_free(void *ctx)
{
    atomic_fetch_add(&((dlog *)ctx)->frees, 1);
}

static rill_publisher *logged(rill_publisher *p, dlog *d)
{
    memset(d, 0, sizeof *d);
    return rill_on_discard_ex(p, log_discard, d, log_free);
}

typedef struct wctx {
    atomic_int writable, frees;
} wctx;

static void on_writable(void *ctx)
{
    atomic_fetch_add(&((wctx *)ctx)->writable, 1);
}

static void wctx_free(void *ctx)
{
    atomic_fetch_add(&((wctx *)ctx)->frees, 1);
}

static rill_emitter_options opts(size_t capacity, rill_emit_policy policy)
{
    rill_emitter_options o;
    rill_emitter_options_init(&o);
    o.capacity = capacity;
    o.policy = policy;
    return o;
}

static rill_metrics_values snap(rill_metrics *m)
{
    rill_metrics_values v = {.version = RILL_METRICS_VALUES_VERSION};
    ck_assert_int_eq(rill_metrics_snapshot(m, &v), 0);
    return v;
}

static void assert_conserved(const rill_metrics_values *v)
{
    ck_assert_uint_eq(v->received,
                      v->emitted + v->discarded_overflow + v->discarded_cancelled + v->queued);
}

static void assert_items(const recorder *r, const intptr_t *want, size_t n)
{
    ck_assert_uint_eq(r->nitems, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(rec_int(r, i), want[i]);
}

/* ------------------------------------------------------------------------
 * Construction and bad arguments. */

static atomic_int frees;

static void count_free(void *ctx)
{
    (void)ctx;
    atomic_fetch_add(&frees, 1);
}

static void expect_einval(rill_emitter_options o)
{
    o.ctx_free = count_free;
    int before = atomic_load(&frees);
    rill_emitter *e = (rill_emitter *)&e;   /* must be overwritten with NULL */
    errno = 0;
    ck_assert_ptr_null(rill_emitter_new(&o, &e));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(e);
    ck_assert_int_eq(atomic_load(&frees), before + 1);
}

START_TEST(test_bad_arguments)
{
    long base = live_allocations();
    rill_emitter *e;
    errno = 0;
    ck_assert_ptr_null(rill_emitter_new(NULL, &e));
    ck_assert_int_eq(errno, EINVAL);
    rill_emitter_options o = opts(4, RILL_EMIT_BLOCK);
    o.ctx_free = count_free;
    errno = 0;
    ck_assert_ptr_null(rill_emitter_new(&o, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(atomic_load(&frees), 1);

    expect_einval(opts(0, RILL_EMIT_BLOCK));                 /* capacity 0 */
    expect_einval(opts(4, (rill_emit_policy)17));            /* unknown policy */
    o = opts(4, RILL_EMIT_BLOCK);
    o.version = 0;
    expect_einval(o);
    o = opts(4, RILL_EMIT_BLOCK);
    o.high_watermark = 5;                                     /* above capacity */
    expect_einval(o);
    o = opts(4, RILL_EMIT_BLOCK);
    o.high_watermark = 3;
    o.low_watermark = 3;                                      /* low must be < high */
    expect_einval(o);
    o = opts(1, RILL_EMIT_BLOCK);
    o.low_watermark = 1;                                      /* high defaults to 1 */
    expect_einval(o);

    /* NULL emitters: errors or no-ops, never crashes. */
    ck_assert_int_eq(rill_emit(NULL, ITEM(1)), EINVAL);
    ck_assert_int_eq(rill_emit_timeout(NULL, ITEM(1), 10), EINVAL);
    ck_assert_int_eq(rill_emitter_paused(NULL), 0);
    ck_assert_ptr_null(rill_emitter_ref(NULL));
    rill_emitter_complete(NULL);
    rill_emitter_fail(NULL, EIO, NULL);
    rill_emitter_unref(NULL);
    rill_emitter_options_init(NULL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_alloc_failure)
{
    long base = live_allocations();
    rill_emitter_options o = opts(8, RILL_EMIT_BLOCK);
    o.ctx_free = count_free;
    for (long k = 1; k <= 2; k++) {
        int before = atomic_load(&frees);
        counting_allocator_fail_at(k);
        rill_emitter *e = NULL;
        errno = 0;
        ck_assert_ptr_null(rill_emitter_new(&o, &e));
        ck_assert_int_eq(errno, ENOMEM);
        ck_assert_ptr_null(e);
        ck_assert_int_eq(atomic_load(&frees), before + 1);
        ck_assert_int_eq(live_allocations(), base);
    }
    counting_allocator_fail_at(0);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Delivery: inline when there is demand, queued when not. */

START_TEST(test_inline_and_queued)
{
    long base = live_allocations();
    rill_emitter_options o = opts(8, RILL_EMIT_BLOCK);
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 2);
    ck_assert_int_eq(r->subscribes, 1);
    ck_assert_int_eq(rill_emit(e, ITEM(10)), 0);
    ck_assert_uint_eq(r->nitems, 1);          /* delivered inside rill_emit */
    ck_assert_int_eq(rill_emit(e, ITEM(11)), 0);
    ck_assert_int_eq(rill_emit(e, ITEM(12)), 0);
    ck_assert_uint_eq(r->nitems, 2);          /* no demand: queued */
    rec_request(r, 1);
    ck_assert_uint_eq(r->nitems, 3);          /* delivered inside rill_request */
    rill_emitter_complete(e);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_int_eq(rill_emit(e, ITEM(13)), EPIPE);
    intptr_t want[] = {10, 11, 12};
    assert_items(r, want, 3);
    ck_assert(rec_ok(r));
    rill_emitter_unref(e);
    rill_publisher_unref(p);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_before_subscribe)
{
    long base = live_allocations();
    rill_emitter_options o = opts(4, RILL_EMIT_DROP_NEWEST);
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    for (int i = 1; i <= 3; i++)
        ck_assert_int_eq(rill_emit(e, ITEM(i)), 0);
    rill_emitter_complete(e);
    rill_emitter_complete(e);                 /* the first end counts */
    rill_emitter_fail(e, EIO, "ignored");
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    intptr_t want[] = {1, 2, 3};
    assert_items(r, want, 3);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->errors, 0);
    ck_assert(rec_ok(r));
    rill_emitter_unref(e);
    rill_publisher_unref(p);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_complete_without_request)
{
    long base = live_allocations();
    rill_emitter_options o = opts(4, RILL_EMIT_BLOCK);
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    recorder *r = rec_run(p, 0);
    rill_emitter_complete(e);                 /* empty queue: on_complete needs no demand */
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_emitter_unref(e);
    rill_publisher_unref(p);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_fail_after_queue)
{
    long base = live_allocations();
    rill_emitter_options o = opts(4, RILL_EMIT_BLOCK);
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    recorder *r = rec_run(p, 0);
    ck_assert_int_eq(rill_emit(e, ITEM(1)), 0);
    ck_assert_int_eq(rill_emit(e, ITEM(2)), 0);
    rill_emitter_fail(e, ECONNRESET, "peer went away");
    ck_assert_int_eq(rill_emit(e, ITEM(3)), EPIPE);
    ck_assert_int_eq(r->errors, 0);           /* the error waits behind the queue */
    rec_request(r, 1);
    ck_assert_int_eq(r->errors, 0);
    rec_request(r, 1);
    intptr_t want[] = {1, 2};
    assert_items(r, want, 2);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, ECONNRESET);
    ck_assert_str_eq(r->error_message, "peer went away");
    ck_assert(rec_ok(r));
    rill_emitter_fail(e, 0, NULL);            /* ended already: ignored */
    rill_emitter_unref(e);
    rill_publisher_unref(p);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_unref_completes)
{
    long base = live_allocations();
    rill_emitter_options o = opts(4, RILL_EMIT_BLOCK);
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    recorder *r = rec_run(p, 0);
    ck_assert_ptr_eq(rill_emitter_ref(e), e);
    ck_assert_int_eq(rill_emit(e, ITEM(7)), 0);
    rill_emitter_unref(e);
    ck_assert_int_eq(r->completes, 0);        /* one handle is left */
    rill_emitter_unref(e);                    /* the write end is closed */
    ck_assert_int_eq(r->completes, 0);        /* behind the queued item */
    rec_request(r, 5);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_int_eq(r->completes, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Policies. */

START_TEST(test_drop_newest)
{
    long base = live_allocations();
    wctx w = {0};
    rill_emitter_options o = opts(2, RILL_EMIT_DROP_NEWEST);
    o.on_writable = on_writable;
    o.ctx = &w;
    o.ctx_free = wctx_free;
    o.metrics = rill_metrics_new("drop_newest");
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    recorder *r = rec_run(p, 0);
    ck_assert_int_eq(rill_emit(e, ITEM(1)), 0);
    ck_assert_int_eq(rill_emit(e, ITEM(2)), RILL_EMIT_PAUSED);   /* high = capacity = 2 */
    ck_assert_int_eq(rill_emitter_paused(e), 1);
    ck_assert_int_eq(rill_emit(e, ITEM(3)), EAGAIN);              /* stays ours */
    ck_assert_int_eq(rill_emit(e, ITEM(4)), EAGAIN);
    rec_request(r, 1);                                            /* 2 → 1 = low */
    ck_assert_int_eq(atomic_load(&w.writable), 1);
    ck_assert_int_eq(rill_emitter_paused(e), 0);
    ck_assert_int_eq(rill_emit(e, ITEM(5)), RILL_EMIT_PAUSED);
    rec_request(r, 10);
    ck_assert_int_eq(atomic_load(&w.writable), 2);
    intptr_t want[] = {1, 2, 5};
    assert_items(r, want, 3);
    rill_metrics_values v = snap(o.metrics);
    ck_assert_uint_eq(v.received, 3);
    ck_assert_uint_eq(v.refused, 2);
    ck_assert_uint_eq(v.emitted, 3);
    ck_assert_uint_eq(v.queued, 0);
    ck_assert_uint_eq(v.queued_high_water, 2);
    ck_assert_uint_eq(v.capacity, 2);
    ck_assert_uint_eq(v.pauses, 2);
    ck_assert_uint_eq(v.paused, 0);
    ck_assert_uint_eq(v.demand_outstanding, 8);
    assert_conserved(&v);
    rill_emitter_unref(e);
    rill_publisher_unref(p);
    ck_assert_int_eq(atomic_load(&w.frees), 1);
    rill_metrics_unref(o.metrics);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_drop_oldest)
{
    long base = live_allocations();
    rill_emitter_options o = opts(3, RILL_EMIT_DROP_OLDEST);
    o.metrics = rill_metrics_new("drop_oldest");
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    dlog d;
    p = logged(p, &d);
    recorder *r = rec_run(p, 0);
    for (int i = 1; i <= 5; i++)
        ck_assert_int_eq(rill_emit(e, ITEM(i)), i >= 3 ? RILL_EMIT_PAUSED : 0);
    ck_assert_int_eq(atomic_load(&d.n), 2);
    ck_assert_int_eq(d.v[0], 1);
    ck_assert_int_eq(d.v[1], 2);
    rec_request(r, RILL_UNBOUNDED);
    intptr_t want[] = {3, 4, 5};
    assert_items(r, want, 3);
    rill_metrics_values v = snap(o.metrics);
    ck_assert_uint_eq(v.received, 5);
    ck_assert_uint_eq(v.discarded_overflow, 2);
    ck_assert_uint_eq(v.refused, 0);
    ck_assert_uint_eq(v.emitted, 3);
    ck_assert_uint_eq(v.demand_outstanding, RILL_UNBOUNDED);
    assert_conserved(&v);
    rill_emitter_unref(e);                    /* completes */
    ck_assert_int_eq(r->completes, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_metrics_unref(o.metrics);
    rec_free(r);
    ck_assert_int_eq(atomic_load(&d.frees), 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_drop_oldest_before_subscribe)
{
    /* Evictions before a subscriber attached its hooks are counted but
     * reach no hook. */
    long base = live_allocations();
    rill_emitter_options o = opts(2, RILL_EMIT_DROP_OLDEST);
    o.metrics = rill_metrics_new("early");
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    for (int i = 1; i <= 4; i++)
        ck_assert_int_ge(rill_emit(e, ITEM(i)), 0);
    dlog d;
    p = logged(p, &d);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    intptr_t want[] = {3, 4};
    assert_items(r, want, 2);
    ck_assert_int_eq(atomic_load(&d.n), 0);
    rill_metrics_values v = snap(o.metrics);
    ck_assert_uint_eq(v.discarded_overflow, 2);
    assert_conserved(&v);
    rill_emitter_unref(e);
    rill_publisher_unref(p);
    rill_metrics_unref(o.metrics);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_error_policy)
{
    long base = live_allocations();
    rill_emitter_options o = opts(2, RILL_EMIT_ERROR);
    o.metrics = rill_metrics_new("error");
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    recorder *r = rec_run(p, 0);
    ck_assert_int_eq(rill_emit(e, ITEM(1)), 0);
    ck_assert_int_eq(rill_emit(e, ITEM(2)), RILL_EMIT_PAUSED);
    ck_assert_int_eq(rill_emit(e, ITEM(3)), EOVERFLOW);   /* stays ours; the stream ends */
    ck_assert_int_eq(rill_emit(e, ITEM(4)), EPIPE);
    ck_assert_int_eq(r->errors, 0);                       /* behind the queue */
    rec_request(r, 1);
    ck_assert_int_eq(r->errors, 0);
    rec_request(r, 1);
    intptr_t want[] = {1, 2};
    assert_items(r, want, 2);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EOVERFLOW);
    ck_assert(rec_ok(r));
    rill_metrics_values v = snap(o.metrics);
    ck_assert_uint_eq(v.received, 2);
    ck_assert_uint_eq(v.refused, 2);
    ck_assert_uint_eq(v.emitted, 2);
    assert_conserved(&v);
    rill_emitter_unref(e);
    rill_publisher_unref(p);
    rill_metrics_unref(o.metrics);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_block_timeout)
{
    long base = live_allocations();
    rill_emitter_options o = opts(1, RILL_EMIT_BLOCK);
    o.metrics = rill_metrics_new("block");
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    recorder *r = rec_run(p, 0);
    ck_assert_int_eq(rill_emit_timeout(e, ITEM(1), 0), RILL_EMIT_PAUSED);
    ck_assert_int_eq(rill_emit_timeout(e, ITEM(2), 0), ETIMEDOUT);        /* never waits */
    ck_assert_int_eq(rill_emit_timeout(e, ITEM(2), 1000000), ETIMEDOUT);  /* 1 ms */
    rec_request(r, 1);
    ck_assert_int_eq(rill_emit_timeout(e, ITEM(2), 1000000), RILL_EMIT_PAUSED);
    rill_metrics_values v = snap(o.metrics);
    ck_assert_uint_eq(v.refused, 2);
    ck_assert_uint_eq(v.received, 2);
    ck_assert_uint_eq(v.queued, 1);
    assert_conserved(&v);
    /* the other policies ignore the timeout */
    rill_emitter_options o2 = opts(1, RILL_EMIT_DROP_NEWEST);
    rill_emitter *e2;
    rill_publisher *p2 = rill_emitter_new(&o2, &e2);
    ck_assert_int_eq(rill_emit_timeout(e2, ITEM(1), 5), RILL_EMIT_PAUSED);
    ck_assert_int_eq(rill_emit_timeout(e2, ITEM(2), 1000000000), EAGAIN);
    rill_emitter_unref(e2);
    rill_publisher_unref(p2);
    rill_emitter_unref(e);                    /* completes behind the queued item */
    rec_request(r, 1);
    ck_assert_int_eq(r->completes, 1);
    rill_publisher_unref(p);
    rill_metrics_unref(o.metrics);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A BLOCK producer on its own thread waits for room that a request makes. */
typedef struct blocked {
    rill_emitter *e;
    int n;
    atomic_int done;
    int rcs[64];
} blocked;

static void *block_producer(void *arg)
{
    blocked *b = arg;
    for (int i = 0; i < b->n; i++)
        b->rcs[i] = rill_emit(b->e, ITEM(i));
    atomic_store(&b->done, 1);
    return NULL;
}

START_TEST(test_block_waits_for_room)
{
    long base = live_allocations();
    rill_emitter_options o = opts(2, RILL_EMIT_BLOCK);
    o.high_watermark = 2;
    o.low_watermark = 1;
    blocked b = {.n = 40};
    rill_publisher *p = rill_emitter_new(&o, &b.e);
    recorder *r = rec_run(p, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, block_producer, &b), 0);
    /* Each request frees one slot; the producer can only finish once 38
     * have been taken (2 stay queued). */
    for (int i = 0; i < 38; i++)
        rec_request(r, 1);
    while (!atomic_load(&b.done))
        sched_yield();
    pthread_join(t, NULL);
    for (int i = 0; i < b.n; i++)
        ck_assert_int_ge(b.rcs[i], 0);         /* every one accepted */
    rec_request(r, 2);
    ck_assert_uint_eq(r->nitems, 40);
    for (int i = 0; i < 40; i++)
        ck_assert_int_eq(rec_int(r, i), i);
    ck_assert(rec_ok(r));
    rill_emitter_unref(b.e);
    ck_assert_int_eq(r->completes, 1);
    rill_publisher_unref(p);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A BLOCK emit waiting for room returns EPIPE when the stream is cancelled. */
START_TEST(test_block_woken_by_cancel)
{
    long base = live_allocations();
    rill_emitter_options o = opts(1, RILL_EMIT_BLOCK);
    blocked b = {.n = 3};
    rill_publisher *p = rill_emitter_new(&o, &b.e);
    dlog d;
    p = logged(p, &d);
    recorder *r = rec_run(p, 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, block_producer, &b), 0);
    /* item 0 is queued; item 1 waits. Cancel once the producer is stuck. */
    while (rill_emitter_paused(b.e) == 0)
        sched_yield();
    rill_cancel(r->sub);
    pthread_join(t, NULL);
    ck_assert_int_eq(b.rcs[0], RILL_EMIT_PAUSED);
    ck_assert_int_eq(b.rcs[1], EPIPE);
    ck_assert_int_eq(b.rcs[2], EPIPE);
    ck_assert_int_eq(atomic_load(&d.n), 1);    /* the queued item */
    ck_assert_int_eq(d.v[0], 0);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_emitter_unref(b.e);
    rill_publisher_unref(p);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A BLOCK emit from inside on_next would wait for itself: EDEADLK. */
typedef struct reentrant {
    rill_emitter *e;
    int rc_first, rc_second;
} reentrant;

static void emit_inside(recorder *r, void *item)
{
    reentrant *x = r->user;
    if ((intptr_t)item != 1)
        return;
    x->rc_first = rill_emit(x->e, ITEM(2));    /* room: accepted */
    x->rc_second = rill_emit(x->e, ITEM(3));   /* full, and we are the drainer */
}

START_TEST(test_edeadlk)
{
    long base = live_allocations();
    rill_emitter_options o = opts(1, RILL_EMIT_BLOCK);
    reentrant x = {0};
    rill_publisher *p = rill_emitter_new(&o, &x.e);
    recorder *r = rec_new(1);
    r->on_next_hook = emit_inside;
    r->user = &x;
    rill_subscribe(p, rec_subscriber(r));
    /* item 1 is delivered inside this call, and item 2 (emitted from
     * on_next) fills the queue again: paused on return */
    ck_assert_int_eq(rill_emit(x.e, ITEM(1)), RILL_EMIT_PAUSED);
    ck_assert_int_eq(x.rc_first, RILL_EMIT_PAUSED);
    ck_assert_int_eq(x.rc_second, EDEADLK);
    rec_request(r, 5);
    intptr_t want[] = {1, 2};
    assert_items(r, want, 2);
    ck_assert(rec_ok(r));
    rill_emitter_unref(x.e);
    rill_publisher_unref(p);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * The subscription: unicast, cancel, request(0). */

START_TEST(test_second_subscriber)
{
    long base = live_allocations();
    rill_emitter_options o = opts(4, RILL_EMIT_BLOCK);
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    recorder *r1 = rec_run(p, RILL_UNBOUNDED);
    recorder *r2 = rec_run(p, RILL_UNBOUNDED);
    ck_assert_int_eq(r2->subscribes, 1);
    ck_assert_int_eq(r2->errors, 1);
    ck_assert_int_eq(r2->error_code, EBUSY);
    ck_assert_int_eq(r2->releases, 1);
    ck_assert_int_eq(rill_emit(e, ITEM(1)), 0);
    rill_emitter_complete(e);
    ck_assert_int_eq(r1->completes, 1);
    recorder *r3 = rec_run(p, RILL_UNBOUNDED);   /* even after the first ended */
    ck_assert_int_eq(r3->error_code, EBUSY);
    ck_assert_uint_eq(r3->nitems, 0);
    ck_assert(rec_ok(r1) && rec_ok(r2) && rec_ok(r3));
    rill_emitter_unref(e);
    rill_publisher_unref(p);
    rec_free(r1);
    rec_free(r2);
    rec_free(r3);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_cancel_discards_queue)
{
    long base = live_allocations();
    wctx w = {0};
    rill_emitter_options o = opts(4, RILL_EMIT_BLOCK);
    o.high_watermark = 2;
    o.on_writable = on_writable;
    o.ctx = &w;
    o.metrics = rill_metrics_new("cancel");
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    dlog d;
    p = logged(p, &d);
    recorder *r = rec_run(p, 0);
    for (int i = 1; i <= 3; i++)
        ck_assert_int_eq(rill_emit(e, ITEM(i)), i >= 2 ? RILL_EMIT_PAUSED : 0);
    rill_cancel(r->sub);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_int_eq(atomic_load(&d.n), 3);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(d.v[i], i + 1);
    ck_assert_int_eq(atomic_load(&w.writable), 1);   /* the paused producer hears of it */
    ck_assert_int_eq(rill_emitter_paused(e), 0);
    ck_assert_int_eq(rill_emit(e, ITEM(9)), EPIPE);
    rill_metrics_values v = snap(o.metrics);
    ck_assert_uint_eq(v.discarded_cancelled, 3);
    ck_assert_uint_eq(v.refused, 1);
    assert_conserved(&v);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert(rec_ok(r));
    rill_emitter_unref(e);
    rill_publisher_unref(p);
    rill_metrics_unref(o.metrics);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* cancel from inside on_next stops at once; the rest is discarded. */
START_TEST(test_cancel_inside_on_next)
{
    long base = live_allocations();
    rill_emitter_options o = opts(8, RILL_EMIT_BLOCK);
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    dlog d;
    recorder *r = rec_new(0);
    r->cancel_after = 2;
    p = logged(p, &d);
    rill_subscribe(p, rec_subscriber(r));
    for (int i = 1; i <= 5; i++)
        ck_assert_int_eq(rill_emit(e, ITEM(i)), 0);
    rec_request(r, RILL_UNBOUNDED);
    intptr_t want[] = {1, 2};
    assert_items(r, want, 2);
    ck_assert_int_eq(atomic_load(&d.n), 3);
    ck_assert_int_eq(d.v[0], 3);
    ck_assert_int_eq(r->releases, 1);
    ck_assert(rec_ok(r));
    rill_emitter_unref(e);
    rill_publisher_unref(p);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_request_zero)
{
    long base = live_allocations();
    rill_emitter_options o = opts(4, RILL_EMIT_BLOCK);
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    dlog d;
    p = logged(p, &d);
    recorder *r = rec_run(p, 0);
    ck_assert_int_eq(rill_emit(e, ITEM(1)), 0);
    rill_request(r->sub, 0);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EINVAL);
    ck_assert_int_eq(atomic_load(&d.n), 1);
    ck_assert_int_eq(rill_emit(e, ITEM(2)), EPIPE);
    ck_assert(rec_ok(r));
    rill_emitter_unref(e);
    rill_publisher_unref(p);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Unsubscribed and dropped: the queued items are counted, ctx freed once. */
START_TEST(test_never_subscribed)
{
    long base = live_allocations();
    wctx w = {0};
    rill_emitter_options o = opts(4, RILL_EMIT_BLOCK);
    o.ctx = &w;
    o.ctx_free = wctx_free;
    o.metrics = rill_metrics_new("orphan");
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    ck_assert_int_eq(rill_emit(e, ITEM(1)), 0);
    ck_assert_int_eq(rill_emit(e, ITEM(2)), 0);
    rill_publisher_unref(p);
    ck_assert_int_eq(rill_emit(e, ITEM(3)), 0);   /* the emitter handle still works */
    ck_assert_int_eq(atomic_load(&w.frees), 0);
    rill_emitter_unref(e);
    ck_assert_int_eq(atomic_load(&w.frees), 1);
    rill_metrics_values v = snap(o.metrics);
    ck_assert_uint_eq(v.received, 3);
    ck_assert_uint_eq(v.discarded_cancelled, 3);
    ck_assert_uint_eq(v.queued, 0);
    assert_conserved(&v);
    rill_metrics_unref(o.metrics);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Watermarks: pause at high, resume (once) at low. */

START_TEST(test_watermarks)
{
    long base = live_allocations();
    wctx w = {0};
    rill_emitter_options o = opts(10, RILL_EMIT_DROP_NEWEST);
    o.high_watermark = 8;
    o.low_watermark = 3;
    o.on_writable = on_writable;
    o.ctx = &w;
    o.metrics = rill_metrics_new("wm");
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    recorder *r = rec_run(p, 0);
    for (int i = 1; i <= 7; i++)
        ck_assert_int_eq(rill_emit(e, ITEM(i)), 0);
    ck_assert_int_eq(rill_emit(e, ITEM(8)), RILL_EMIT_PAUSED);   /* reaches high */
    ck_assert_int_eq(rill_emit(e, ITEM(9)), RILL_EMIT_PAUSED);   /* still accepted */
    ck_assert_int_eq(rill_emit(e, ITEM(10)), RILL_EMIT_PAUSED);
    ck_assert_int_eq(rill_emit(e, ITEM(11)), EAGAIN);            /* only full refuses */
    rec_request(r, 6);                                            /* 10 → 4: above low */
    ck_assert_int_eq(atomic_load(&w.writable), 0);
    ck_assert_int_eq(rill_emitter_paused(e), 1);
    ck_assert_int_eq(rill_emit(e, ITEM(12)), RILL_EMIT_PAUSED);  /* 5, still paused */
    rec_request(r, 2);                                            /* 5 → 3 = low */
    ck_assert_int_eq(atomic_load(&w.writable), 1);
    ck_assert_int_eq(rill_emitter_paused(e), 0);
    /* Hovering between 4 and 7 (above low, below high) never pauses. */
    for (int k = 0; k < 100; k++) {
        for (int j = 0; j < 4; j++)
            ck_assert_int_eq(rill_emit(e, ITEM(100 + k)), 0);
        rec_request(r, 4);
    }
    rill_metrics_values v = snap(o.metrics);
    ck_assert_uint_eq(v.pauses, 1);
    ck_assert_int_eq(atomic_load(&w.writable), 1);
    ck_assert_uint_eq(v.queued_high_water, 10);
    assert_conserved(&v);
    rill_emitter_unref(e);
    rec_request(r, RILL_UNBOUNDED);
    ck_assert_int_eq(r->completes, 1);
    ck_assert(rec_ok(r));
    rill_publisher_unref(p);
    rill_metrics_unref(o.metrics);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* An emitter's metrics render as Prometheus text like any other. */
START_TEST(test_metrics_prometheus)
{
    long base = live_allocations();
    rill_emitter_options o = opts(4, RILL_EMIT_DROP_NEWEST);
    o.metrics = rill_metrics_new("socket_in");
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    for (int i = 0; i < 6; i++)
        rill_emit(e, ITEM(i));
    char buf[8192];
    rill_metrics *ms[] = {o.metrics};
    size_t n = rill_metrics_format_prometheus(ms, 1, buf, sizeof buf);
    ck_assert_uint_lt(n, sizeof buf);
    ck_assert_ptr_nonnull(strstr(buf, "stage=\"socket_in\"} 4\n"));   /* received / queued */
    ck_assert_ptr_nonnull(strstr(buf, "refused"));
    rill_emitter_unref(e);
    rill_publisher_unref(p);
    rill_metrics_unref(o.metrics);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Conformance: the kit's publisher verification over emitters. */

static rill_publisher *make_prefilled(void *ctx, uint64_t n)
{
    (void)ctx;
    rill_emitter_options o = opts(n ? (size_t)n : 1, RILL_EMIT_ERROR);
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    for (uint64_t i = 0; i < n; i++)
        ck_assert_int_ge(rill_emit(e, ITEM(i)), 0);
    rill_emitter_unref(e);   /* completes behind the items */
    return p;
}

static atomic_int producers_running;

typedef struct feeder {
    rill_emitter *e;
    uint64_t n;
} feeder;

static void *feed(void *arg)
{
    feeder *f = arg;
    for (uint64_t i = 0; i < f->n; i++)
        if (rill_emit(f->e, ITEM(i)) == EPIPE)
            break;   /* cancelled */
    rill_emitter_unref(f->e);
    free(f);
    atomic_fetch_sub(&producers_running, 1);
    return NULL;
}

/* A producer thread feeding a BLOCK emitter of capacity 4. */
static rill_publisher *make_fed(void *ctx, uint64_t n)
{
    (void)ctx;
    rill_emitter_options o = opts(4, RILL_EMIT_BLOCK);
    feeder *f = malloc(sizeof *f);
    ck_assert_ptr_nonnull(f);
    f->n = n;
    rill_publisher *p = rill_emitter_new(&o, &f->e);
    atomic_fetch_add(&producers_running, 1);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, feed, f), 0);
    pthread_detach(t);
    return p;
}

static rill_publisher *make_failed(void *ctx)
{
    (void)ctx;
    rill_emitter_options o = opts(1, RILL_EMIT_BLOCK);
    rill_emitter *e;
    rill_publisher *p = rill_emitter_new(&o, &e);
    rill_emitter_fail(e, EIO, "failed emitter");
    rill_emitter_unref(e);
    return p;
}

static void verify(rill_publisher *(*create)(void *, uint64_t), const char *name)
{
    rill_tck_publisher_options o;
    rill_tck_publisher_options_init(&o);
    o.create = create;
    o.create_failed = make_failed;
    o.max_elements = 1024;
    o.name = name;
    o.stochastic_runs = quick() ? 5 : 20;
    o.quiet_ns = 5000000;
    rill_tck_report *rep = rill_tck_verify_publisher(&o);
    ck_assert_ptr_nonnull(rep);
    if (rill_tck_report_failed(rep))
        rill_tck_report_print(rep, stderr);
    ck_assert_uint_eq(rill_tck_report_failed(rep), 0);
    ck_assert_uint_gt(rill_tck_report_passed(rep), 20);
    rill_tck_report_free(rep);
}

START_TEST(test_tck_prefilled)
{
    long base = live_allocations();
    verify(make_prefilled, "emitter (prefilled, ERROR policy)");
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_tck_fed)
{
    long base = live_allocations();
    verify(make_fed, "emitter (fed by a BLOCK producer thread)");
    while (atomic_load(&producers_running) != 0)
        sched_yield();
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Threads: several producers, a consumer at random speed, a metrics reader. */

#define NPROD 4
#define TAG(p, seq) ((void *)(intptr_t)(((intptr_t)(p) << 40) | ((intptr_t)(seq) + 1)))
#define TAG_P(v) ((int)((intptr_t)(v) >> 40))
#define TAG_SEQ(v) (((intptr_t)(v) & (((intptr_t)1 << 40) - 1)) - 1)

typedef struct stress {
    rill_emitter *e;
    rill_metrics *m;
    rill_emit_policy policy;
    int items;                        /* per producer */
    atomic_long accepted[NPROD], refused[NPROD];
    atomic_long delivered, discarded;
    intptr_t last_seq[NPROD];         /* delivered order, per producer (consumer only) */
    atomic_long order_errors, overlaps, violations;
    atomic_int in_signal, terminal, released, error_code;
    atomic_int busy, stopping;        /* request guard */
    rill_subscription *sub;
    atomic_int stop_reading;
    atomic_long snapshots;
    uint32_t seed;
    size_t capacity;
} stress;

typedef struct prod_arg {
    stress *s;
    int id;
} prod_arg;

static void *producer(void *arg)
{
    prod_arg *a = arg;
    stress *s = a->s;
    uint32_t seed = s->seed * 31u + (uint32_t)a->id + 1;
    for (int i = 0; i < s->items; i++) {
        int rc = (xorshift(&seed) & 3) == 0 ? rill_emit_timeout(s->e, TAG(a->id, i), 200000)
                                             : rill_emit(s->e, TAG(a->id, i));
        if (rc == 0 || rc == RILL_EMIT_PAUSED)
            atomic_fetch_add(&s->accepted[a->id], 1);
        else if (rc == EAGAIN || rc == ETIMEDOUT || rc == EPIPE || rc == EOVERFLOW)
            atomic_fetch_add(&s->refused[a->id], 1);
        else
            atomic_fetch_add(&s->violations, 1);   /* EDEADLK etc: impossible here */
        if ((xorshift(&seed) & 63) == 0)
            sched_yield();
    }
    return NULL;
}

static void s_enter(stress *s)
{
    if (atomic_fetch_add(&s->in_signal, 1) != 0)
        atomic_fetch_add(&s->overlaps, 1);
}

static void s_leave(stress *s)
{
    atomic_fetch_sub(&s->in_signal, 1);
}

static void s_subscribe(void *user, rill_subscription *sub)
{
    ((stress *)user)->sub = sub;
}

static void s_next(void *user, void *item)
{
    stress *s = user;
    s_enter(s);
    int p = TAG_P(item);
    intptr_t seq = TAG_SEQ(item);
    if (p < 0 || p >= NPROD || seq <= s->last_seq[p])
        atomic_fetch_add(&s->order_errors, 1);
    else
        s->last_seq[p] = seq;
    atomic_fetch_add(&s->delivered, 1);
    s_leave(s);
}

static void s_error(void *user, const rill_error *e)
{
    stress *s = user;
    s_enter(s);
    atomic_store(&s->error_code, rill_error_code(e));
    atomic_fetch_add(&s->terminal, 1);
    s_leave(s);
}

static void s_complete(void *user)
{
    stress *s = user;
    s_enter(s);
    atomic_fetch_add(&s->terminal, 1);
    s_leave(s);
}

static _Thread_local stress *inside;

static void s_release(void *user)
{
    stress *s = user;
    int mine = inside == s;
    atomic_store(&s->stopping, 1);
    while (atomic_load(&s->busy) > mine)
        sched_yield();
    atomic_store(&s->released, 1);
}

static const rill_callbacks stress_cb = {
    .on_subscribe = s_subscribe,
    .on_next = s_next,
    .on_error = s_error,
    .on_complete = s_complete,
    .on_release = s_release,
};

static void s_call(stress *s, int cancel, uint64_t n)
{
    atomic_fetch_add(&s->busy, 1);
    inside = s;
    if (!atomic_load(&s->stopping)) {
        if (cancel)
            rill_cancel(s->sub);
        else
            rill_request(s->sub, n);
    }
    inside = NULL;
    atomic_fetch_sub(&s->busy, 1);
}

static void s_discard(void *ctx, void *item)
{
    (void)item;
    atomic_fetch_add(&((stress *)ctx)->discarded, 1);
}

/* Polls snapshots while the round runs: every one must conserve items and
 * stay within capacity. */
static void *reader(void *arg)
{
    stress *s = arg;
    while (!atomic_load(&s->stop_reading)) {
        rill_metrics_values v = {.version = RILL_METRICS_VALUES_VERSION};
        rill_metrics_snapshot(s->m, &v);
        if (v.received != v.emitted + v.discarded_overflow + v.discarded_cancelled + v.queued ||
            v.queued > s->capacity || v.queued_high_water > s->capacity)
            atomic_fetch_add(&s->violations, 1);
        atomic_fetch_add(&s->snapshots, 1);
        sched_yield();
    }
    return NULL;
}

static void stress_round(uint32_t seed)
{
    long base = live_allocations();
    stress *s = calloc(1, sizeof *s);
    ck_assert_ptr_nonnull(s);
    s->seed = seed;
    for (int i = 0; i < NPROD; i++)
        s->last_seq[i] = -1;
    static const rill_emit_policy policies[] = {RILL_EMIT_BLOCK, RILL_EMIT_DROP_NEWEST,
                                                RILL_EMIT_DROP_OLDEST, RILL_EMIT_ERROR};
    s->policy = policies[seed % 4];
    s->capacity = 1 + (seed >> 2) % 16;
    s->items = quick() ? 200 : 1000;
    s->m = rill_metrics_new("stress");
    rill_emitter_options o = opts(s->capacity, s->policy);
    o.metrics = s->m;
    rill_publisher *p = rill_emitter_new(&o, &s->e);
    ck_assert_ptr_nonnull(p);
    p = rill_on_discard(p, s_discard, s);
    rill_subscribe(p, rill_subscriber_new(&stress_cb, s));
    rill_publisher_unref(p);

    pthread_t prod[NPROD], rd;
    prod_arg args[NPROD];
    ck_assert_int_eq(pthread_create(&rd, NULL, reader, s), 0);
    for (int i = 0; i < NPROD; i++) {
        args[i] = (prod_arg){s, i};
        ck_assert_int_eq(pthread_create(&prod[i], NULL, producer, &args[i]), 0);
    }
    /* The consumer: random requests; sometimes cancels midway. */
    uint32_t r = seed | 1;
    int cancel_at = (seed % 5 == 0) ? (int)(xorshift(&r) % 200) : -1;
    for (int k = 0; !atomic_load(&s->released); k++) {
        if (k == cancel_at)
            s_call(s, 1, 0);
        else
            s_call(s, 0, 1 + xorshift(&r) % 8);
        if ((xorshift(&r) & 7) == 0)
            sched_yield();
        /* once every producer is done, end the stream */
        if (k % 64 == 0) {
            long done = 0;
            for (int i = 0; i < NPROD; i++)
                done += atomic_load(&s->accepted[i]) + atomic_load(&s->refused[i]);
            if (done == (long)NPROD * s->items)
                rill_emitter_complete(s->e);
        }
    }
    for (int i = 0; i < NPROD; i++)
        pthread_join(prod[i], NULL);
    atomic_store(&s->stop_reading, 1);
    pthread_join(rd, NULL);

    long accepted = 0, refused = 0;
    for (int i = 0; i < NPROD; i++) {
        accepted += atomic_load(&s->accepted[i]);
        refused += atomic_load(&s->refused[i]);
    }
    ck_assert_int_eq(accepted + refused, (long)NPROD * s->items);
    ck_assert_int_eq(atomic_load(&s->violations), 0);
    ck_assert_int_eq(atomic_load(&s->order_errors), 0);
    ck_assert_int_eq(atomic_load(&s->overlaps), 0);
    /* one terminal signal, unless the consumer cancelled first */
    ck_assert_int_le(atomic_load(&s->terminal), 1);
    ck_assert(atomic_load(&s->terminal) == 1 || cancel_at >= 0);
    /* Conservation: accepted items were delivered or discarded, once. */
    rill_emitter_unref(s->e);
    rill_metrics_values v = snap(s->m);
    ck_assert_int_eq(atomic_load(&s->delivered) + atomic_load(&s->discarded), accepted);
    ck_assert_uint_eq(v.received, (uint64_t)accepted);
    ck_assert_uint_eq(v.refused, (uint64_t)refused);
    ck_assert_uint_eq(v.emitted, (uint64_t)atomic_load(&s->delivered));
    ck_assert_uint_eq(v.discarded_overflow + v.discarded_cancelled,
                      (uint64_t)atomic_load(&s->discarded));
    ck_assert_uint_eq(v.queued, 0);
    ck_assert_uint_le(v.queued_high_water, s->capacity);
    if (s->policy == RILL_EMIT_BLOCK && cancel_at < 0)
        ck_assert_int_eq(accepted, (long)NPROD * s->items - refused);
    if (s->policy != RILL_EMIT_DROP_OLDEST)
        ck_assert_uint_eq(v.discarded_overflow, 0);
    if (s->policy == RILL_EMIT_ERROR && atomic_load(&s->error_code))
        ck_assert_int_eq(atomic_load(&s->error_code), EOVERFLOW);
    rill_metrics_unref(s->m);
    free(s);
    ck_assert_int_eq(live_allocations(), base);
}

START_TEST(test_multi_producer_stress)
{
    int rounds = quick() ? 12 : 200;
    for (int i = 0; i < rounds; i++)
        stress_round(0x9e3779b9u * (uint32_t)(i + 1) + (uint32_t)_i);
}
END_TEST

/* ------------------------------------------------------------------------
 * Watermarks under threads: producers that honour RILL_EMIT_PAUSED (they
 * wait for on_writable), a slow consumer. Every pause needs the queue to
 * climb from low to high again, so pauses <= resumes + 1, and the run
 * finishes (a lost on_writable would hang it: the test's timeout). */

typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int writable;
    rill_emitter *e;
    int items;
    atomic_long accepted;
} gate;

static void gate_writable(void *ctx)
{
    gate *g = ctx;
    pthread_mutex_lock(&g->mu);
    atomic_fetch_add(&g->writable, 1);
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void *polite_producer(void *arg)
{
    gate *g = arg;
    for (int i = 0; i < g->items; i++) {
        int rc = rill_emit(g->e, ITEM(i));
        if (rc < 0 || (rc != 0 && rc != RILL_EMIT_PAUSED))
            break;
        atomic_fetch_add(&g->accepted, 1);
        if (rc == RILL_EMIT_PAUSED) {
            /* The documented way to wait: re-check paused under the lock
             * on_writable takes, so its call cannot slip past. */
            pthread_mutex_lock(&g->mu);
            while (rill_emitter_paused(g->e))
                pthread_cond_wait(&g->cv, &g->mu);
            pthread_mutex_unlock(&g->mu);
        }
    }
    return NULL;
}

START_TEST(test_watermark_threads)
{
    long base = live_allocations();
    gate g = {.items = quick() ? 2000 : 20000};
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    rill_emitter_options o = opts(64, RILL_EMIT_BLOCK);
    o.high_watermark = 48;
    o.low_watermark = 16;
    o.on_writable = gate_writable;
    o.ctx = &g;
    o.metrics = rill_metrics_new("polite");
    rill_publisher *p = rill_emitter_new(&o, &g.e);
    stress *s = calloc(1, sizeof *s);
    for (int i = 0; i < NPROD; i++)
        s->last_seq[i] = -1;
    s->capacity = 64;
    rill_subscribe(p, rill_subscriber_new(&stress_cb, s));
    rill_publisher_unref(p);
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, polite_producer, &g), 0);
    uint32_t r = 7;
    long want = 2L * g.items;
    while (atomic_load(&s->delivered) < want) {
        s_call(s, 0, 1 + xorshift(&r) % 4);
        for (volatile int k = 0; k < 200; k++)
            ;
    }
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    rill_emitter_complete(g.e);
    ck_assert_int_eq(atomic_load(&s->terminal), 1);
    rill_metrics_values v = snap(o.metrics);
    ck_assert_uint_eq(v.received, (uint64_t)want);
    ck_assert_uint_eq(v.emitted, (uint64_t)want);
    ck_assert_uint_le(v.queued_high_water, 64);
    ck_assert_uint_le(v.pauses, (uint64_t)atomic_load(&g.writable) + 1);
    ck_assert_uint_ge((uint64_t)atomic_load(&g.writable), v.pauses - (v.paused ? 1 : 0));
    /* Hysteresis: each pause needs 32 more items queued than the last
     * resume left, so there are at most want / 32 of them. */
    ck_assert_uint_le(v.pauses, (uint64_t)want / 32 + 1);
    rill_emitter_unref(g.e);
    rill_metrics_unref(o.metrics);
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
    free(s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A producer 100x faster than its consumer for a long run: memory stays
 * where it was after set-up (the queue is the preallocated ring). */
typedef struct flood {
    rill_emitter *e;
    atomic_int stop;
    atomic_long accepted, refused;
} flood;

static void *flood_producer(void *arg)
{
    flood *f = arg;
    for (long i = 0; !atomic_load(&f->stop); i++) {
        int rc = rill_emit(f->e, ITEM(i));
        atomic_fetch_add(rc >= 0 && rc <= RILL_EMIT_PAUSED ? &f->accepted : &f->refused, 1);
    }
    return NULL;
}

START_TEST(test_memory_bounded)
{
    long base = live_allocations();
    rill_emitter_options o = opts(256, RILL_EMIT_DROP_OLDEST);
    o.metrics = rill_metrics_new("flood");
    flood f = {0};
    rill_publisher *p = rill_emitter_new(&o, &f.e);
    stress *s = calloc(1, sizeof *s);
    rill_publisher *q = rill_on_discard(p, s_discard, s);
    rill_subscribe(q, rill_subscriber_new(&stress_cb, s));
    rill_publisher_unref(q);
    long steady = live_allocations();
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, flood_producer, &f), 0);
    long max_live = steady, n = quick() ? 2000 : 50000;
    for (long i = 0; i < n; i++) {
        s_call(s, 0, 1);
        for (volatile int k = 0; k < 2000; k++)   /* the slow consumer */
            ;
        long live = live_allocations();
        if (live > max_live)
            max_live = live;
    }
    atomic_store(&f.stop, 1);
    pthread_join(t, NULL);
    rill_emitter_complete(f.e);
    s_call(s, 0, RILL_UNBOUNDED);
    ck_assert_int_eq(max_live, steady);
    rill_metrics_values v = snap(o.metrics);
    ck_assert_uint_le(v.queued_high_water, 256);
    ck_assert_uint_eq(v.received, (uint64_t)atomic_load(&f.accepted));
    ck_assert_uint_eq(v.emitted, (uint64_t)atomic_load(&s->delivered));
    ck_assert_uint_eq(v.discarded_overflow, (uint64_t)atomic_load(&s->discarded));
    ck_assert_int_eq(atomic_load(&s->delivered) + atomic_load(&s->discarded),
                     atomic_load(&f.accepted));
    ck_assert_int_eq(atomic_load(&s->terminal), 1);
    rill_emitter_unref(f.e);
    rill_metrics_unref(o.metrics);
    free(s);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

Suite *emitter_suite(void)
{
    Suite *s = suite_create("emitter");
    TCase *tc = tcase_create("sync");
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_alloc_failure);
    tcase_add_test(tc, test_inline_and_queued);
    tcase_add_test(tc, test_before_subscribe);
    tcase_add_test(tc, test_complete_without_request);
    tcase_add_test(tc, test_fail_after_queue);
    tcase_add_test(tc, test_unref_completes);
    tcase_add_test(tc, test_drop_newest);
    tcase_add_test(tc, test_drop_oldest);
    tcase_add_test(tc, test_drop_oldest_before_subscribe);
    tcase_add_test(tc, test_error_policy);
    tcase_add_test(tc, test_block_timeout);
    tcase_add_test(tc, test_edeadlk);
    tcase_add_test(tc, test_second_subscriber);
    tcase_add_test(tc, test_cancel_discards_queue);
    tcase_add_test(tc, test_cancel_inside_on_next);
    tcase_add_test(tc, test_request_zero);
    tcase_add_test(tc, test_never_subscribed);
    tcase_add_test(tc, test_watermarks);
    tcase_add_test(tc, test_metrics_prometheus);
    suite_add_tcase(s, tc);

    tc = tcase_create("threads");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, test_block_waits_for_room);
    tcase_add_test(tc, test_block_woken_by_cancel);
    tcase_add_loop_test(tc, test_multi_producer_stress, 0, 2);
    tcase_add_test(tc, test_watermark_threads);
    tcase_add_test(tc, test_memory_bounded);
    suite_add_tcase(s, tc);

    tc = tcase_create("conformance");
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    tcase_add_test(tc, test_tck_prefilled);
    tcase_add_test(tc, test_tck_fed);
    suite_add_tcase(s, tc);
    return s;
}
