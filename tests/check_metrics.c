/* tests/check_metrics.c — rill_metrics, rill_probe, the Prometheus text.
 *
 * Two ways in:
 *  - the public API of the library under test: metrics objects, snapshots,
 *    probes in real pipelines, the Prometheus text they produce;
 *  - white box: the stage-side update API (lib/metrics-internal.h) is
 *    hidden in the shared library, so this file compiles its own private
 *    copy of lib/metrics.c with every external name prefixed wb_ (the
 *    block right below) and drives that copy through the internal API:
 *    each update kind, the batch form, and the seqlock under two writer
 *    threads and a reader thread checking the invariants on every snapshot.
 *    The copy is the same source; only its names differ, so it cannot be
 *    confused with the library's objects (wb_metrics is a distinct type).
 *
 * Every test checks leaks through the runner's counting allocator (the
 * white-box copy allocates through it too).
 */

/* ------------------------------------------------------------------------
 * The white-box copy. Must come before any rill header, because the copy
 * includes rill/metrics.h under the renamed names. */
#define rill_metrics wb_metrics
#define rill_metrics_values wb_metrics_values
#define rill_metrics_new wb_metrics_new
#define rill_metrics_ref wb_metrics_ref
#define rill_metrics_unref wb_metrics_unref
#define rill_metrics_snapshot wb_metrics_snapshot
#define rill_metrics_format_prometheus wb_metrics_format_prometheus
#define rill_probe wb_probe
#define rill__metrics_apply wb__metrics_apply
#define rill__malloc wb_malloc
#define rill__calloc wb_calloc
#define rill__free wb_free
#define rill__strdup wb_strdup
#include "../lib/metrics.c"
#undef rill_metrics
#undef rill_metrics_values
#undef rill_metrics_new
#undef rill_metrics_ref
#undef rill_metrics_unref
#undef rill_metrics_snapshot
#undef rill_metrics_format_prometheus
#undef rill_probe
#undef rill__metrics_apply
#undef rill__malloc
#undef rill__calloc
#undef rill__free
#undef rill__strdup
#undef RILL_METRICS_H   /* now the real declarations */

#include "recorder.h"
#include "suites.h"

#include <rill/metrics.h>

#include <pthread.h>
#include <stdlib.h>

/* The copy's allocator: plain malloc with its own live count (the
 * library's counting allocator sits behind hidden rill__ functions that
 * this copy cannot reach). Tests of the copy check wb_live returns to 0. */
static atomic_long wb_live;

void *wb_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p)
        atomic_fetch_add(&wb_live, 1);
    else
        errno = ENOMEM;
    return p;
}

void *wb_calloc(size_t n)
{
    void *p = wb_malloc(n);
    if (p)
        memset(p, 0, n);
    return p;
}

void wb_free(void *p)
{
    if (p) {
        atomic_fetch_sub(&wb_live, 1);
        free(p);
    }
}

char *wb_strdup(const char *s)
{
    if (!s)
        return NULL;
    char *d = wb_malloc(strlen(s) + 1);
    if (d)
        strcpy(d, s);
    return d;
}

/* ------------------------------------------------------------------------
 * Helpers */

#define ITEM(v) ((void *)(intptr_t)(v))

static int quick(void)
{
    const char *q = getenv("RILL_TEST_QUICK");
    return q && *q && *q != '0';
}

static rill_metrics_values snap(const rill_metrics *m)
{
    rill_metrics_values v = { .version = RILL_METRICS_VALUES_VERSION };
    ck_assert_int_eq(rill_metrics_snapshot(m, &v), 0);
    return v;
}

static wb_metrics_values wb_snap(const wb_metrics *m)
{
    wb_metrics_values v = { .version = RILL_METRICS_VALUES_VERSION };
    ck_assert_int_eq(wb_metrics_snapshot(m, &v), 0);
    return v;
}

static uint64_t discarded_sum(uint64_t f, uint64_t o, uint64_t c, uint64_t e)
{
    return f + o + c + e;
}

static void assert_counts(const rill_metrics_values *v, uint64_t received, uint64_t emitted,
                          uint64_t demand)
{
    ck_assert_uint_eq(v->version, RILL_METRICS_VALUES_VERSION);
    ck_assert_uint_eq(v->received, received);
    ck_assert_uint_eq(v->emitted, emitted);
    ck_assert_uint_eq(v->demand_outstanding, demand);
    ck_assert_uint_eq(discarded_sum(v->discarded_filtered, v->discarded_overflow,
                                    v->discarded_cancelled, v->discarded_expired), 0);
    ck_assert_uint_eq(v->refused, 0);
    ck_assert_uint_eq(v->queued, 0);
    ck_assert_uint_eq(v->queued_high_water, 0);
    ck_assert_uint_eq(v->capacity, 0);
    ck_assert_uint_eq(v->paused, 0);
    ck_assert_uint_eq(v->pauses, 0);
}

static void assert_completed(const recorder *r, size_t nitems)
{
    ck_assert_msg(rec_ok(r), "protocol violation: %s", r->violation);
    ck_assert_uint_eq(r->nitems, nitems);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->errors, 0);
    ck_assert_int_eq(r->releases, 1);
}

/* ------------------------------------------------------------------------
 * Metrics objects */

START_TEST(test_new_is_zero)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("stage");
    ck_assert_ptr_nonnull(m);
    rill_metrics_values v = snap(m);
    assert_counts(&v, 0, 0, 0);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_new_null_name)
{
    long base = live_allocations();
    errno = 0;
    ck_assert_ptr_null(rill_metrics_new(NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_new_out_of_memory)
{
    long base = live_allocations();
    /* The object, then its name: fail each in turn. */
    for (long k = 1; k <= 2; k++) {
        counting_allocator_fail_at(k);
        errno = 0;
        ck_assert_ptr_null(rill_metrics_new("x"));
        ck_assert_int_eq(errno, ENOMEM);
        counting_allocator_fail_at(0);
        ck_assert_int_eq(live_allocations(), base);
    }
}
END_TEST

START_TEST(test_ref_unref)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("x");
    long with_one = live_allocations();
    ck_assert_ptr_eq(rill_metrics_ref(m), m);
    rill_metrics_unref(m);
    /* Still alive: one reference left. */
    ck_assert_int_eq(live_allocations(), with_one);
    ck_assert_uint_eq(snap(m).received, 0);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
    ck_assert_ptr_null(rill_metrics_ref(NULL));
    rill_metrics_unref(NULL);
}
END_TEST

START_TEST(test_snapshot_bad_arguments)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("x");
    rill_metrics_values v = { .version = RILL_METRICS_VALUES_VERSION };
    ck_assert_int_eq(rill_metrics_snapshot(NULL, &v), EINVAL);
    ck_assert_int_eq(rill_metrics_snapshot(m, NULL), EINVAL);
    /* Version 0: refused, and *out untouched. */
    memset(&v, 0xa5, sizeof v);
    v.version = 0;
    ck_assert_int_eq(rill_metrics_snapshot(m, &v), EINVAL);
    ck_assert_uint_eq(v.version, 0);
    ck_assert_uint_eq(v.received, UINT64_C(0xa5a5a5a5a5a5a5a5));
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_snapshot_newer_version)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("x");
    rill_metrics_values v;
    memset(&v, 0xa5, sizeof v);
    v.version = RILL_METRICS_VALUES_VERSION + 1;
    ck_assert_int_eq(rill_metrics_snapshot(m, &v), 0);
    /* Filled what this library knows, and says so. */
    ck_assert_uint_eq(v.version, RILL_METRICS_VALUES_VERSION);
    ck_assert_uint_eq(v.received, 0);
    ck_assert_uint_eq(v.pauses, 0);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * rill_probe */

START_TEST(test_probe_range_unbounded)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("probe");
    rill_publisher *p = rill_probe(rill_range(1, 10), m);
    ck_assert_ptr_nonnull(p);
    /* Borrowed: the probe holds its own reference. */
    rill_metrics_unref(m);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_completed(r, 10);
    for (size_t i = 0; i < 10; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i + 1);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_probe_counts_after_sink)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("probe");
    rill_publisher *p = rill_probe(rill_range(1, 10), m);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_completed(r, 10);
    rill_metrics_values v = snap(m);
    assert_counts(&v, 10, 10, RILL_UNBOUNDED);
    rec_free(r);
    rill_publisher_unref(p);
    /* The probe's reference is gone with the publisher; ours still reads. */
    v = snap(m);
    ck_assert_uint_eq(v.received, 10);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

typedef struct seen {
    rill_metrics *m;
    rill_metrics_values at[16];
    size_t n;
} seen;

static void snapshot_in_on_next(recorder *r, void *item)
{
    seen *s = r->user;
    if (s->n < 16)
        s->at[s->n++] = snap(s->m);
}

START_TEST(test_probe_demand_outstanding)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("probe");
    rill_publisher *p = rill_probe(rill_range(0, 10), m);
    seen s = { .m = m };
    recorder *r = rec_new(3);
    r->user = &s;
    r->on_next_hook = snapshot_in_on_next;
    rill_subscribe(p, rec_subscriber(r));
    ck_assert_uint_eq(r->nitems, 3);
    /* Inside the k-th on_next the item is already counted. */
    ck_assert_uint_eq(s.n, 3);
    for (size_t k = 0; k < 3; k++)
        assert_counts(&s.at[k], k + 1, k + 1, 3 - (k + 1));
    rill_metrics_values v = snap(m);
    assert_counts(&v, 3, 3, 0);
    rec_request(r, 4);
    v = snap(m);
    assert_counts(&v, 7, 7, 0);
    /* Ask for more than is left: the excess stays outstanding. */
    rec_request(r, 10);
    assert_completed(r, 10);
    v = snap(m);
    assert_counts(&v, 10, 10, 7);
    rec_free(r);
    rill_publisher_unref(p);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_probe_cancel_midway)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("probe");
    rill_publisher *p = rill_probe(rill_range(0, 100), m);
    recorder *r = rec_new(10);
    r->cancel_after = 4;
    rill_subscribe(p, rec_subscriber(r));
    ck_assert_msg(rec_ok(r), "protocol violation: %s", r->violation);
    ck_assert_uint_eq(r->nitems, 4);
    ck_assert_int_eq(r->releases, 1);
    rill_metrics_values v = snap(m);
    assert_counts(&v, 4, 4, 6);
    rec_free(r);
    rill_publisher_unref(p);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_probe_failing_upstream)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("probe");
    rill_publisher *p = rill_probe(rill_fail(EIO, "boom"), m);
    recorder *r = rec_run(p, 5);
    ck_assert_msg(rec_ok(r), "protocol violation: %s", r->violation);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EIO);
    ck_assert_int_eq(r->releases, 1);
    rill_metrics_values v = snap(m);
    assert_counts(&v, 0, 0, 5);
    rec_free(r);
    rill_publisher_unref(p);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_probe_empty_upstream)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("probe");
    rill_publisher *p = rill_probe(rill_empty(), m);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_completed(r, 0);
    rill_metrics_values v = snap(m);
    ck_assert_uint_eq(v.received, 0);
    ck_assert_uint_eq(v.emitted, 0);
    rec_free(r);
    rill_publisher_unref(p);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_probe_request_zero)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("probe");
    rill_publisher *p = rill_probe(rill_range(0, 10), m);
    recorder *r = rec_run(p, 0);
    rec_request(r, 0);
    ck_assert_msg(rec_ok(r), "protocol violation: %s", r->violation);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EINVAL);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->releases, 1);
    /* request(0) is not demand. */
    rill_metrics_values v = snap(m);
    assert_counts(&v, 0, 0, 0);
    rec_free(r);
    rill_publisher_unref(p);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static void request_one_more(recorder *r, void *item)
{
    if (r->nitems < 50)
        rec_request(r, 1);
}

START_TEST(test_probe_request_inside_on_next)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("probe");
    rill_publisher *p = rill_probe(rill_range(0, 100), m);
    recorder *r = rec_new(1);
    r->on_next_hook = request_one_more;
    rill_subscribe(p, rec_subscriber(r));
    ck_assert_msg(rec_ok(r), "protocol violation: %s", r->violation);
    ck_assert_uint_eq(r->nitems, 50);
    for (size_t i = 0; i < 50; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i);
    rill_metrics_values v = snap(m);
    assert_counts(&v, 50, 50, 0);
    rill_cancel(r->sub);
    ck_assert_int_eq(r->releases, 1);
    rec_free(r);
    rill_publisher_unref(p);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_probe_subscriptions_add_up)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("probe");
    rill_publisher *p = rill_probe(rill_range(0, 10), m);
    recorder *a = rec_run(p, RILL_UNBOUNDED);
    recorder *b = rec_run(p, 4);
    assert_completed(a, 10);
    ck_assert_uint_eq(b->nitems, 4);
    rill_metrics_values v = snap(m);
    /* Unbounded demand absorbs the bounded one. */
    assert_counts(&v, 14, 14, RILL_UNBOUNDED);
    rill_cancel(b->sub);
    rec_free(a);
    rec_free(b);
    rill_publisher_unref(p);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static int keep_even(void *ctx, void *item)
{
    return (intptr_t)item % 2 == 0;
}

START_TEST(test_probe_counts_only_what_reaches_it)
{
    long base = live_allocations();
    rill_metrics *before = rill_metrics_new("before");
    rill_metrics *after = rill_metrics_new("after");
    rill_publisher *p = rill_probe(rill_range(0, 10), before);
    p = rill_filter(p, keep_even, NULL);
    p = rill_probe(p, after);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_completed(r, 5);
    rill_metrics_values v = snap(before);
    assert_counts(&v, 10, 10, RILL_UNBOUNDED);
    v = snap(after);
    assert_counts(&v, 5, 5, RILL_UNBOUNDED);
    rec_free(r);
    rill_publisher_unref(p);
    rill_metrics_unref(before);
    rill_metrics_unref(after);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_probe_bad_arguments)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("probe");
    errno = 0;
    ck_assert_ptr_null(rill_probe(NULL, m));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    /* NULL metrics: upstream is still consumed (the leak check sees it). */
    ck_assert_ptr_null(rill_probe(rill_range(0, 3), NULL));
    ck_assert_int_eq(errno, EINVAL);
    /* m took no extra reference: one unref frees it. */
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_probe_out_of_memory)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("probe");
    rill_publisher *up = rill_range(0, 3);
    counting_allocator_fail_at(1);
    errno = 0;
    ck_assert_ptr_null(rill_probe(up, m));
    ck_assert_int_eq(errno, ENOMEM);
    counting_allocator_fail_at(0);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A rogue publisher written against rill/stage.h: completes, then sends one
 * more item (a protocol breach the probe must survive and account for). */
static void rogue_request(rill_subscription *s, uint64_t n) {}
static void rogue_cancel(rill_subscription *s) {}
static const struct rill_subscription_ops rogue_sub_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = rogue_request,
    .cancel = rogue_cancel,
};
static rill_subscription rogue_sub = { &rogue_sub_ops };

static void rogue_subscribe(rill_publisher *self, rill_subscriber *s)
{
    rill_deliver_subscribe(s, &rogue_sub);
    rill_deliver_complete(s);
    rill_deliver_next(s, ITEM(42));
    rill_deliver_release(s);
}

static void rogue_destroy(rill_publisher *self)
{
    free(self);
}

static const struct rill_publisher_ops rogue_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = rogue_subscribe,
    .destroy = rogue_destroy,
};

static void count_discard(void *ctx, void *item)
{
    intptr_t *last = ctx;
    *last = (intptr_t)item;
}

START_TEST(test_probe_item_after_end_is_discarded)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("probe");
    rill_publisher *rogue = malloc(sizeof *rogue);
    rill_publisher_init(rogue, &rogue_ops);
    intptr_t discarded = 0;
    rill_publisher *p = rill_on_discard(rill_probe(rogue, m), count_discard, &discarded);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    assert_completed(r, 0);
    ck_assert_int_eq(discarded, 42);
    rill_metrics_values v = snap(m);
    ck_assert_uint_eq(v.received, 1);
    ck_assert_uint_eq(v.emitted, 0);
    ck_assert_uint_eq(v.discarded_cancelled, 1);
    ck_assert_uint_eq(v.discarded_filtered + v.discarded_overflow + v.discarded_expired, 0);
    rec_free(r);
    rill_publisher_unref(p);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Probe under concurrent requests: two threads request one item at a time;
 * range delivers on whichever thread drains, so the probe's updates come
 * from both. A reader thread checks every snapshot meanwhile. The source
 * holds more than is requested, so it never completes while the threads
 * run; the main thread cancels at the end (release happens there). */

typedef struct probe_race {
    rill_metrics *m;
    rill_subscription *sub;
    uint64_t per_thread;
    atomic_int stop, bad;
    char why[160];
} probe_race;

static void *race_requester(void *arg)
{
    probe_race *pr = arg;
    for (uint64_t i = 0; i < pr->per_thread; i++)
        rill_request(pr->sub, 1);
    return NULL;
}

static void race_flag(probe_race *pr, const char *why, const rill_metrics_values *v)
{
    if (atomic_fetch_add(&pr->bad, 1) == 0)
        snprintf(pr->why, sizeof pr->why, "%s: received %llu emitted %llu demand %llu", why,
                 (unsigned long long)v->received, (unsigned long long)v->emitted,
                 (unsigned long long)v->demand_outstanding);
}

static void *race_reader(void *arg)
{
    probe_race *pr = arg;
    uint64_t total = 2 * pr->per_thread, last = 0;
    while (!atomic_load(&pr->stop)) {
        rill_metrics_values v = { .version = RILL_METRICS_VALUES_VERSION };
        if (rill_metrics_snapshot(pr->m, &v) != 0)
            race_flag(pr, "snapshot failed", &v);
        else if (v.received != v.emitted)
            race_flag(pr, "received != emitted", &v);
        else if (v.emitted + v.demand_outstanding > total)
            race_flag(pr, "more demand than was requested", &v);
        else if (v.received < last)
            race_flag(pr, "received went back", &v);
        last = v.received;
    }
    return NULL;
}

START_TEST(test_probe_concurrent_requests)
{
    long base = live_allocations();
    probe_race pr = { .per_thread = quick() ? 5000 : 50000 };
    pr.m = rill_metrics_new("race");
    rill_publisher *p = rill_probe(rill_range(0, 4 * pr.per_thread), pr.m);
    recorder *r = rec_run(p, 0);
    /* The threads call rill_request directly: tell the recorder's demand
     * check the total up front. */
    r->requested = 2 * pr.per_thread;
    pr.sub = r->sub;
    pthread_t a, b, rd;
    ck_assert_int_eq(pthread_create(&rd, NULL, race_reader, &pr), 0);
    ck_assert_int_eq(pthread_create(&a, NULL, race_requester, &pr), 0);
    ck_assert_int_eq(pthread_create(&b, NULL, race_requester, &pr), 0);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    atomic_store(&pr.stop, 1);
    pthread_join(rd, NULL);
    ck_assert_msg(atomic_load(&pr.bad) == 0, "%d bad snapshots; first: %s",
                  atomic_load(&pr.bad), pr.why);
    ck_assert_msg(rec_ok(r), "protocol violation: %s", r->violation);
    ck_assert_uint_eq(r->nitems, 2 * pr.per_thread);
    for (size_t i = 0; i < r->nitems; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i);
    rill_metrics_values v = snap(pr.m);
    assert_counts(&v, 2 * pr.per_thread, 2 * pr.per_thread, 0);
    rill_cancel(r->sub);
    ck_assert_int_eq(r->releases, 1);
    rec_free(r);
    rill_publisher_unref(p);
    rill_metrics_unref(pr.m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Prometheus text, from the library's own probes */

static const char golden_two_probes[] =
    "# HELP rill_items_received_total Items received from upstream.\n"
    "# TYPE rill_items_received_total counter\n"
    "rill_items_received_total{stage=\"src\"} 5\n"
    "rill_items_received_total{stage=\"sink\"} 3\n"
    "# HELP rill_items_emitted_total Items emitted downstream.\n"
    "# TYPE rill_items_emitted_total counter\n"
    "rill_items_emitted_total{stage=\"src\"} 5\n"
    "rill_items_emitted_total{stage=\"sink\"} 3\n"
    "# HELP rill_items_discarded_total Items discarded instead of delivered, by reason.\n"
    "# TYPE rill_items_discarded_total counter\n"
    "rill_items_discarded_total{stage=\"src\",reason=\"filtered\"} 0\n"
    "rill_items_discarded_total{stage=\"src\",reason=\"overflow\"} 0\n"
    "rill_items_discarded_total{stage=\"src\",reason=\"cancelled\"} 0\n"
    "rill_items_discarded_total{stage=\"src\",reason=\"expired\"} 0\n"
    "rill_items_discarded_total{stage=\"sink\",reason=\"filtered\"} 0\n"
    "rill_items_discarded_total{stage=\"sink\",reason=\"overflow\"} 0\n"
    "rill_items_discarded_total{stage=\"sink\",reason=\"cancelled\"} 0\n"
    "rill_items_discarded_total{stage=\"sink\",reason=\"expired\"} 0\n"
    "# HELP rill_emit_refused_total Emit calls that did not accept their item.\n"
    "# TYPE rill_emit_refused_total counter\n"
    "rill_emit_refused_total{stage=\"src\"} 0\n"
    "rill_emit_refused_total{stage=\"sink\"} 0\n"
    "# HELP rill_queue_items Items queued now.\n"
    "# TYPE rill_queue_items gauge\n"
    "rill_queue_items{stage=\"src\"} 0\n"
    "rill_queue_items{stage=\"sink\"} 0\n"
    "# HELP rill_queue_high_water_items Most items ever queued at once.\n"
    "# TYPE rill_queue_high_water_items gauge\n"
    "rill_queue_high_water_items{stage=\"src\"} 0\n"
    "rill_queue_high_water_items{stage=\"sink\"} 0\n"
    "# HELP rill_queue_capacity_items Capacity of the queue in items.\n"
    "# TYPE rill_queue_capacity_items gauge\n"
    "rill_queue_capacity_items{stage=\"src\"} 0\n"
    "rill_queue_capacity_items{stage=\"sink\"} 0\n"
    "# HELP rill_demand_outstanding Items requested downstream and not yet emitted "
    "(+Inf: unbounded).\n"
    "# TYPE rill_demand_outstanding gauge\n"
    "rill_demand_outstanding{stage=\"src\"} 2\n"
    "rill_demand_outstanding{stage=\"sink\"} +Inf\n"
    "# HELP rill_paused 1 while the stage is paused above its high watermark.\n"
    "# TYPE rill_paused gauge\n"
    "rill_paused{stage=\"src\"} 0\n"
    "rill_paused{stage=\"sink\"} 0\n"
    "# HELP rill_pauses_total Times the stage went from unpaused to paused.\n"
    "# TYPE rill_pauses_total counter\n"
    "rill_pauses_total{stage=\"src\"} 0\n"
    "rill_pauses_total{stage=\"sink\"} 0\n";

/* Runs range(0, count) through a probe into m with the given demand. */
static void run_probe(rill_metrics *m, uint64_t count, uint64_t demand)
{
    rill_publisher *p = rill_probe(rill_range(0, count), m);
    recorder *r = rec_run(p, demand);
    assert_completed(r, count < demand ? count : demand);
    rec_free(r);
    rill_publisher_unref(p);
}

START_TEST(test_prometheus_golden)
{
    long base = live_allocations();
    rill_metrics *ms[2] = { rill_metrics_new("src"), rill_metrics_new("sink") };
    run_probe(ms[0], 5, 7);
    run_probe(ms[1], 3, RILL_UNBOUNDED);
    char buf[8192];
    size_t n = rill_metrics_format_prometheus(ms, 2, buf, sizeof buf);
    ck_assert_str_eq(buf, golden_two_probes);
    ck_assert_uint_eq(n, strlen(golden_two_probes));
    rill_metrics_unref(ms[0]);
    rill_metrics_unref(ms[1]);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_prometheus_truncation)
{
    long base = live_allocations();
    rill_metrics *ms[2] = { rill_metrics_new("src"), rill_metrics_new("sink") };
    run_probe(ms[0], 5, 7);
    run_probe(ms[1], 3, RILL_UNBOUNDED);
    size_t want = strlen(golden_two_probes);
    /* Sizing call. */
    ck_assert_uint_eq(rill_metrics_format_prometheus(ms, 2, NULL, 0), want);
    /* len 0 with a buffer: nothing written. */
    char buf[8192];
    memset(buf, 'x', sizeof buf);
    ck_assert_uint_eq(rill_metrics_format_prometheus(ms, 2, buf, 0), want);
    ck_assert_int_eq(buf[0], 'x');
    /* len 1: only the NUL. */
    ck_assert_uint_eq(rill_metrics_format_prometheus(ms, 2, buf, 1), want);
    ck_assert_int_eq(buf[0], '\0');
    ck_assert_int_eq(buf[1], 'x');
    /* A short buffer gets a NUL-terminated prefix, and nothing past len. */
    memset(buf, 'x', sizeof buf);
    ck_assert_uint_eq(rill_metrics_format_prometheus(ms, 2, buf, 100), want);
    ck_assert_uint_eq(strlen(buf), 99);
    ck_assert_int_eq(memcmp(buf, golden_two_probes, 99), 0);
    ck_assert_int_eq(buf[100], 'x');
    /* Exactly the length: one byte short of the NUL, so truncated by one. */
    memset(buf, 'x', sizeof buf);
    ck_assert_uint_eq(rill_metrics_format_prometheus(ms, 2, buf, want), want);
    ck_assert_uint_eq(strlen(buf), want - 1);
    ck_assert_int_eq(buf[want], 'x');
    /* want + 1 fits. */
    ck_assert_uint_eq(rill_metrics_format_prometheus(ms, 2, buf, want + 1), want);
    ck_assert_str_eq(buf, golden_two_probes);
    rill_metrics_unref(ms[0]);
    rill_metrics_unref(ms[1]);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_prometheus_escapes_labels)
{
    long base = live_allocations();
    rill_metrics *m = rill_metrics_new("a\"b\\c\nd");
    char buf[8192];
    size_t n = rill_metrics_format_prometheus(&m, 1, buf, sizeof buf);
    ck_assert_uint_eq(n, strlen(buf));
    ck_assert_ptr_nonnull(strstr(buf, "rill_items_received_total{stage=\"a\\\"b\\\\c\\nd\"} 0\n"));
    ck_assert_ptr_nonnull(
        strstr(buf, "rill_items_discarded_total{stage=\"a\\\"b\\\\c\\nd\",reason=\"expired\"} 0\n"));
    /* No raw newline inside any label: every line starts with '#' or "rill_". */
    for (const char *line = buf; *line; line = strchr(line, '\n') + 1)
        ck_assert_msg(line[0] == '#' || strncmp(line, "rill_", 5) == 0, "bad line: %.40s", line);
    rill_metrics_unref(m);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_prometheus_no_objects)
{
    long base = live_allocations();
    char buf[16] = "junk";
    ck_assert_uint_eq(rill_metrics_format_prometheus(NULL, 0, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "");
    rill_metrics *none[2] = { NULL, NULL };
    strcpy(buf, "junk");
    ck_assert_uint_eq(rill_metrics_format_prometheus(none, 2, buf, sizeof buf), 0);
    ck_assert_str_eq(buf, "");
    ck_assert_uint_eq(rill_metrics_format_prometheus(NULL, 3, NULL, 0), 0);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_prometheus_skips_null_entries)
{
    long base = live_allocations();
    rill_metrics *src = rill_metrics_new("src"), *sink = rill_metrics_new("sink");
    run_probe(src, 5, 7);
    run_probe(sink, 3, RILL_UNBOUNDED);
    rill_metrics *ms[4] = { NULL, src, NULL, sink };
    char buf[8192];
    ck_assert_uint_eq(rill_metrics_format_prometheus(ms, 4, buf, sizeof buf),
                      strlen(golden_two_probes));
    ck_assert_str_eq(buf, golden_two_probes);
    rill_metrics_unref(src);
    rill_metrics_unref(sink);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_prometheus_many_objects)
{
    long base = live_allocations();
    enum { N = 40 };
    rill_metrics *ms[N];
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%02d", i);
        ms[i] = rill_metrics_new(name);
        run_probe(ms[i], (uint64_t)i, RILL_UNBOUNDED);
    }
    size_t need = rill_metrics_format_prometheus(ms, N, NULL, 0);
    char *buf = malloc(need + 1);
    ck_assert_uint_eq(rill_metrics_format_prometheus(ms, N, buf, need + 1), need);
    ck_assert_uint_eq(strlen(buf), need);
    /* 10 families x (HELP + TYPE) + one series per object per family, four
     * for the discarded family. */
    size_t lines = 0;
    for (const char *c = buf; *c; c++)
        lines += *c == '\n';
    ck_assert_uint_eq(lines, 10 * 2 + N * (9 + 4));
    ck_assert_ptr_nonnull(strstr(buf, "rill_items_received_total{stage=\"s39\"} 39\n"
                                      "# HELP rill_items_emitted_total"));
    ck_assert_ptr_nonnull(strstr(buf, "rill_items_emitted_total{stage=\"s07\"} 7\n"));
    free(buf);
    for (int i = 0; i < N; i++)
        rill_metrics_unref(ms[i]);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * White box: the stage-side update API */

START_TEST(test_internal_null_is_noop)
{
    rill__metrics_received(NULL, 1);
    rill__metrics_emitted(NULL, 1);
    rill__metrics_discarded(NULL, RILL__DISCARD_OVERFLOW, 1);
    rill__metrics_refused(NULL, 1);
    rill__metrics_queued(NULL, 1);
    rill__metrics_capacity(NULL, 1);
    rill__metrics_requested(NULL, 1);
    rill__metrics_demand(NULL, 1);
    rill__metrics_paused(NULL, 1);
    rill__metrics_update(NULL, &(rill__metrics_delta){ .received = 1 });
    ck_assert_int_eq(atomic_load(&wb_live), 0);
}
END_TEST

START_TEST(test_internal_counters)
{
    wb_metrics *m = wb_metrics_new("q");
    rill__metrics_received(m, 5);
    rill__metrics_emitted(m, 2);
    rill__metrics_discarded(m, RILL__DISCARD_FILTERED, 1);
    rill__metrics_discarded(m, RILL__DISCARD_OVERFLOW, 2);
    rill__metrics_discarded(m, RILL__DISCARD_CANCELLED, 3);
    rill__metrics_discarded(m, RILL__DISCARD_EXPIRED, 4);
    rill__metrics_refused(m, 6);
    wb_metrics_values v = wb_snap(m);
    ck_assert_uint_eq(v.received, 5);
    ck_assert_uint_eq(v.emitted, 2);
    ck_assert_uint_eq(v.discarded_filtered, 1);
    ck_assert_uint_eq(v.discarded_overflow, 2);
    ck_assert_uint_eq(v.discarded_cancelled, 3);
    ck_assert_uint_eq(v.discarded_expired, 4);
    ck_assert_uint_eq(v.refused, 6);
    ck_assert_uint_eq(v.demand_outstanding, 0);   /* emitted never drives it below 0 */
    wb_metrics_unref(m);
    ck_assert_int_eq(atomic_load(&wb_live), 0);
}
END_TEST

START_TEST(test_internal_queue_gauges)
{
    wb_metrics *m = wb_metrics_new("q");
    rill__metrics_capacity(m, 8);
    rill__metrics_queued(m, 3);
    rill__metrics_queued(m, 6);
    rill__metrics_queued(m, 2);
    wb_metrics_values v = wb_snap(m);
    ck_assert_uint_eq(v.capacity, 8);
    ck_assert_uint_eq(v.queued, 2);
    ck_assert_uint_eq(v.queued_high_water, 6);
    /* Changes move the depth; below zero clamps. */
    rill__metrics_update(m, &(rill__metrics_delta){ .queued_change = 5 });
    v = wb_snap(m);
    ck_assert_uint_eq(v.queued, 7);
    ck_assert_uint_eq(v.queued_high_water, 7);
    rill__metrics_update(m, &(rill__metrics_delta){ .queued_change = -9 });
    v = wb_snap(m);
    ck_assert_uint_eq(v.queued, 0);
    ck_assert_uint_eq(v.queued_high_water, 7);
    wb_metrics_unref(m);
    ck_assert_int_eq(atomic_load(&wb_live), 0);
}
END_TEST

START_TEST(test_internal_pauses)
{
    wb_metrics *m = wb_metrics_new("q");
    static const int seq[] = { 1, 1, 0, 0, 1, 0, 2 };
    static const uint32_t paused[] = { 1, 1, 0, 0, 1, 0, 1 };
    static const uint64_t pauses[] = { 1, 1, 1, 1, 2, 2, 3 };
    for (size_t i = 0; i < sizeof seq / sizeof seq[0]; i++) {
        rill__metrics_paused(m, seq[i]);
        wb_metrics_values v = wb_snap(m);
        ck_assert_uint_eq(v.paused, paused[i]);
        ck_assert_uint_eq(v.pauses, pauses[i]);
    }
    wb_metrics_unref(m);
    ck_assert_int_eq(atomic_load(&wb_live), 0);
}
END_TEST

START_TEST(test_internal_demand)
{
    wb_metrics *m = wb_metrics_new("q");
    rill__metrics_requested(m, 10);
    rill__metrics_emitted(m, 4);
    ck_assert_uint_eq(wb_snap(m).demand_outstanding, 6);
    rill__metrics_emitted(m, 9);   /* more than outstanding: stops at 0 */
    ck_assert_uint_eq(wb_snap(m).demand_outstanding, 0);
    rill__metrics_requested(m, UINT64_MAX - 1);
    rill__metrics_requested(m, 5);   /* saturates */
    ck_assert_uint_eq(wb_snap(m).demand_outstanding, RILL_UNBOUNDED);
    rill__metrics_emitted(m, 100);   /* unbounded stays unbounded */
    ck_assert_uint_eq(wb_snap(m).demand_outstanding, RILL_UNBOUNDED);
    rill__metrics_demand(m, 3);
    ck_assert_uint_eq(wb_snap(m).demand_outstanding, 3);
    /* In one delta, a set overrides the change. */
    rill__metrics_update(m, &(rill__metrics_delta){ .emitted = 1, .requested = 7,
                                                    .set = RILL__METRICS_SET_DEMAND,
                                                    .demand = 11 });
    wb_metrics_values v = wb_snap(m);
    ck_assert_uint_eq(v.demand_outstanding, 11);
    ck_assert_uint_eq(v.emitted, 114);
    wb_metrics_unref(m);
    ck_assert_int_eq(atomic_load(&wb_live), 0);
}
END_TEST

START_TEST(test_internal_batch)
{
    wb_metrics *m = wb_metrics_new("q");
    rill__metrics_delta d = {
        .received = 10, .emitted = 3, .refused = 2, .queued_change = 4, .requested = 5,
        .set = RILL__METRICS_SET_CAPACITY | RILL__METRICS_SET_PAUSED, .capacity = 4, .paused = 1,
    };
    d.discarded[RILL__DISCARD_OVERFLOW] = 2;
    d.discarded[RILL__DISCARD_EXPIRED] = 1;
    rill__metrics_update(m, &d);
    wb_metrics_values v = wb_snap(m);
    ck_assert_uint_eq(v.received, 10);
    ck_assert_uint_eq(v.emitted, 3);
    ck_assert_uint_eq(v.refused, 2);
    ck_assert_uint_eq(v.discarded_overflow, 2);
    ck_assert_uint_eq(v.discarded_expired, 1);
    ck_assert_uint_eq(v.discarded_filtered + v.discarded_cancelled, 0);
    ck_assert_uint_eq(v.queued, 4);
    ck_assert_uint_eq(v.queued_high_water, 4);
    ck_assert_uint_eq(v.capacity, 4);
    ck_assert_uint_eq(v.demand_outstanding, 5);   /* 0 - 3 (stops at 0) + 5 */
    ck_assert_uint_eq(v.paused, 1);
    ck_assert_uint_eq(v.pauses, 1);
    /* The queue invariant holds after one batch. */
    ck_assert_uint_eq(v.received, v.emitted + v.discarded_overflow + v.discarded_expired + v.queued);
    wb_metrics_unref(m);
    ck_assert_int_eq(atomic_load(&wb_live), 0);
}
END_TEST

static const char golden_queue[] =
    "# HELP rill_items_received_total Items received from upstream.\n"
    "# TYPE rill_items_received_total counter\n"
    "rill_items_received_total{stage=\"buf\"} 12\n"
    "# HELP rill_items_emitted_total Items emitted downstream.\n"
    "# TYPE rill_items_emitted_total counter\n"
    "rill_items_emitted_total{stage=\"buf\"} 5\n"
    "# HELP rill_items_discarded_total Items discarded instead of delivered, by reason.\n"
    "# TYPE rill_items_discarded_total counter\n"
    "rill_items_discarded_total{stage=\"buf\",reason=\"filtered\"} 1\n"
    "rill_items_discarded_total{stage=\"buf\",reason=\"overflow\"} 2\n"
    "rill_items_discarded_total{stage=\"buf\",reason=\"cancelled\"} 0\n"
    "rill_items_discarded_total{stage=\"buf\",reason=\"expired\"} 1\n"
    "# HELP rill_emit_refused_total Emit calls that did not accept their item.\n"
    "# TYPE rill_emit_refused_total counter\n"
    "rill_emit_refused_total{stage=\"buf\"} 7\n"
    "# HELP rill_queue_items Items queued now.\n"
    "# TYPE rill_queue_items gauge\n"
    "rill_queue_items{stage=\"buf\"} 3\n"
    "# HELP rill_queue_high_water_items Most items ever queued at once.\n"
    "# TYPE rill_queue_high_water_items gauge\n"
    "rill_queue_high_water_items{stage=\"buf\"} 6\n"
    "# HELP rill_queue_capacity_items Capacity of the queue in items.\n"
    "# TYPE rill_queue_capacity_items gauge\n"
    "rill_queue_capacity_items{stage=\"buf\"} 8\n"
    "# HELP rill_demand_outstanding Items requested downstream and not yet emitted "
    "(+Inf: unbounded).\n"
    "# TYPE rill_demand_outstanding gauge\n"
    "rill_demand_outstanding{stage=\"buf\"} 18446744073709551614\n"
    "# HELP rill_paused 1 while the stage is paused above its high watermark.\n"
    "# TYPE rill_paused gauge\n"
    "rill_paused{stage=\"buf\"} 1\n"
    "# HELP rill_pauses_total Times the stage went from unpaused to paused.\n"
    "# TYPE rill_pauses_total counter\n"
    "rill_pauses_total{stage=\"buf\"} 2\n";

START_TEST(test_internal_prometheus_golden)
{
    wb_metrics *m = wb_metrics_new("buf");
    rill__metrics_capacity(m, 8);
    rill__metrics_update(m, &(rill__metrics_delta){ .received = 6, .queued_change = 6 });
    rill__metrics_paused(m, 1);
    rill__metrics_update(m, &(rill__metrics_delta){ .emitted = 5, .queued_change = -5 });
    rill__metrics_paused(m, 0);
    rill__metrics_delta d = { .received = 6, .queued_change = 2 };
    d.discarded[RILL__DISCARD_FILTERED] = 1;
    d.discarded[RILL__DISCARD_OVERFLOW] = 2;
    d.discarded[RILL__DISCARD_EXPIRED] = 1;
    rill__metrics_update(m, &d);
    rill__metrics_paused(m, 1);
    rill__metrics_refused(m, 7);
    /* Large but bounded demand is a number, not +Inf. */
    rill__metrics_demand(m, UINT64_MAX - 1);
    char buf[4096];
    size_t n = wb_metrics_format_prometheus(&m, 1, buf, sizeof buf);
    ck_assert_str_eq(buf, golden_queue);
    ck_assert_uint_eq(n, strlen(golden_queue));
    wb_metrics_unref(m);
    ck_assert_int_eq(atomic_load(&wb_live), 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * White box: two writers through the internal API, one reader checking
 * every snapshot. Each writer plays a queue stage with its own depth; every
 * update is one delta that keeps
 *     received == emitted + discarded (all reasons) + queued
 * so a torn snapshot (part of a delta) breaks it. */

typedef struct wb_race {
    wb_metrics *m;
    atomic_int started, stop, bad;
    char why[200];
} wb_race;

typedef struct wb_writer {
    pthread_t tid;
    wb_race *race;
    unsigned seed;
    uint64_t ops;
    /* the writer's own totals, to check the final snapshot */
    uint64_t received, emitted, discarded, requested, refused;
} wb_writer;

/* One random step of a writer with local depth *q; returns the delta. */
static rill__metrics_delta writer_step(wb_writer *w, uint64_t *q)
{
    rill__metrics_delta d = { .received = 0 };
    unsigned op = (unsigned)rand_r(&w->seed) % 6;
    if (*q >= 16)
        op = 1;   /* keep the queue bounded */
    if (*q == 0 && (op == 1 || op == 2))
        op = 0;
    switch (op) {
    case 0:   /* accepted */
        d.received = 1, d.queued_change = 1, (*q)++;
        break;
    case 1:   /* delivered */
        d.emitted = 1, d.queued_change = -1, (*q)--;
        break;
    case 2:   /* evicted */
        d.discarded[RILL__DISCARD_OVERFLOW] = 1, d.queued_change = -1, (*q)--;
        break;
    case 3:   /* dropped on arrival, any reason */
        d.received = 1, d.discarded[rand_r(&w->seed) % RILL__DISCARD_NREASONS] = 1;
        break;
    case 4:   /* a batch passing straight through, with new demand */
        d.received = 3, d.emitted = 2, d.discarded[RILL__DISCARD_EXPIRED] = 1, d.requested = 2;
        break;
    default: /* refused, and the pause gauge follows the depth */
        d.refused = 1, d.set = RILL__METRICS_SET_PAUSED, d.paused = *q >= 8;
        break;
    }
    return d;
}

static void writer_account(wb_writer *w, const rill__metrics_delta *d)
{
    w->received += d->received;
    w->emitted += d->emitted;
    w->requested += d->requested;
    w->refused += d->refused;
    for (int i = 0; i < RILL__DISCARD_NREASONS; i++)
        w->discarded += d->discarded[i];
}

static void *wb_writer_main(void *arg)
{
    wb_writer *w = arg;
    uint64_t q = 0;
    atomic_fetch_add(&w->race->started, 1);
    /* At least a few thousand steps, then on until the reader is done. */
    while (w->ops < 5000 || !atomic_load(&w->race->stop)) {
        rill__metrics_delta d = writer_step(w, &q);
        rill__metrics_update(w->race->m, &d);
        writer_account(w, &d);
        w->ops++;
    }
    /* Deliver what is left, in one batch. */
    rill__metrics_delta d = { .emitted = q, .queued_change = -(int64_t)q };
    rill__metrics_update(w->race->m, &d);
    writer_account(w, &d);
    return NULL;
}

static void wb_race_flag(wb_race *r, const char *why, const wb_metrics_values *v)
{
    if (atomic_fetch_add(&r->bad, 1) == 0)
        snprintf(r->why, sizeof r->why,
                 "%s: received %llu emitted %llu discarded %llu queued %llu high %llu "
                 "paused %u pauses %llu",
                 why, (unsigned long long)v->received, (unsigned long long)v->emitted,
                 (unsigned long long)discarded_sum(v->discarded_filtered, v->discarded_overflow,
                                                   v->discarded_cancelled, v->discarded_expired),
                 (unsigned long long)v->queued, (unsigned long long)v->queued_high_water,
                 v->paused, (unsigned long long)v->pauses);
}

/* Checks one snapshot against the invariants and the previous one. */
static void wb_check(wb_race *r, const wb_metrics_values *v, const wb_metrics_values *prev)
{
    uint64_t gone = v->emitted + discarded_sum(v->discarded_filtered, v->discarded_overflow,
                                               v->discarded_cancelled, v->discarded_expired);
    if (v->received != gone + v->queued)
        wb_race_flag(r, "received != emitted + discarded + queued", v);
    else if (v->emitted > v->received)
        wb_race_flag(r, "emitted > received", v);
    else if (v->queued > v->queued_high_water || v->queued > 32)
        wb_race_flag(r, "queued beyond high water or the writers' bound", v);
    else if (v->paused > 1 || v->pauses < v->paused)
        wb_race_flag(r, "paused/pauses inconsistent", v);
    else if (v->received < prev->received || v->emitted < prev->emitted ||
             v->refused < prev->refused || v->pauses < prev->pauses ||
             v->queued_high_water < prev->queued_high_water)
        wb_race_flag(r, "a counter went back", v);
}

START_TEST(test_internal_concurrent_snapshots)
{
    wb_race race = { .m = wb_metrics_new("race") };
    wb_writer w[2] = { { .race = &race, .seed = 1 }, { .race = &race, .seed = 2 } };
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&w[i].tid, NULL, wb_writer_main, &w[i]), 0);
    while (atomic_load(&race.started) < 2)
        sched_yield();
    long reads = quick() ? 10000 : 100000;
    wb_metrics_values prev = { .version = RILL_METRICS_VALUES_VERSION };
    for (long i = 0; i < reads; i++) {
        wb_metrics_values v = { .version = RILL_METRICS_VALUES_VERSION };
        if (wb_metrics_snapshot(race.m, &v) != 0)
            wb_race_flag(&race, "snapshot failed", &v);
        wb_check(&race, &v, &prev);
        prev = v;
    }
    atomic_store(&race.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(w[i].tid, NULL);
    ck_assert_msg(atomic_load(&race.bad) == 0, "%d bad snapshots; first: %s",
                  atomic_load(&race.bad), race.why);
    wb_metrics_values v = wb_snap(race.m);
    ck_assert_uint_eq(v.received, w[0].received + w[1].received);
    ck_assert_uint_eq(v.emitted, w[0].emitted + w[1].emitted);
    ck_assert_uint_eq(discarded_sum(v.discarded_filtered, v.discarded_overflow,
                                    v.discarded_cancelled, v.discarded_expired),
                      w[0].discarded + w[1].discarded);
    ck_assert_uint_eq(v.refused, w[0].refused + w[1].refused);
    ck_assert_uint_eq(v.queued, 0);
    ck_assert_uint_le(v.queued_high_water, 32);
    wb_metrics_unref(race.m);
    ck_assert_int_eq(atomic_load(&wb_live), 0);
}
END_TEST

/* The reader runs in a thread too, and also renders Prometheus text while
 * the writers run: the text's received/emitted/queued lines of one object
 * agree with each other. */
static uint64_t series_value(const char *body, const char *series)
{
    const char *p = strstr(body, series);
    ck_assert_ptr_nonnull(p);
    return strtoull(p + strlen(series), NULL, 10);
}

START_TEST(test_internal_concurrent_prometheus)
{
    wb_race race = { .m = wb_metrics_new("race") };
    wb_writer w[2] = { { .race = &race, .seed = 3 }, { .race = &race, .seed = 4 } };
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&w[i].tid, NULL, wb_writer_main, &w[i]), 0);
    while (atomic_load(&race.started) < 2)
        sched_yield();
    char buf[4096];
    long reads = quick() ? 500 : 5000;
    for (long i = 0; i < reads; i++) {
        size_t n = wb_metrics_format_prometheus(&race.m, 1, buf, sizeof buf);
        ck_assert_uint_lt(n, sizeof buf);
        uint64_t rx = series_value(buf, "rill_items_received_total{stage=\"race\"} ");
        uint64_t tx = series_value(buf, "rill_items_emitted_total{stage=\"race\"} ");
        uint64_t q = series_value(buf, "rill_queue_items{stage=\"race\"} ");
        uint64_t gone = 0;
        static const char *const why[] = { "filtered", "overflow", "cancelled", "expired" };
        for (int k = 0; k < 4; k++) {
            char series[128];
            snprintf(series, sizeof series,
                     "rill_items_discarded_total{stage=\"race\",reason=\"%s\"} ", why[k]);
            gone += series_value(buf, series);
        }
        ck_assert_uint_eq(rx, tx + gone + q);
    }
    atomic_store(&race.stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(w[i].tid, NULL);
    wb_metrics_unref(race.m);
    ck_assert_int_eq(atomic_load(&wb_live), 0);
}
END_TEST

/* ------------------------------------------------------------------------ */

static TCase *timed_tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    return tc;
}

Suite *metrics_suite(void)
{
    Suite *s = suite_create("metrics");

    TCase *tc = tcase_create("objects");
    tcase_add_test(tc, test_new_is_zero);
    tcase_add_test(tc, test_new_null_name);
    tcase_add_test(tc, test_new_out_of_memory);
    tcase_add_test(tc, test_ref_unref);
    tcase_add_test(tc, test_snapshot_bad_arguments);
    tcase_add_test(tc, test_snapshot_newer_version);
    suite_add_tcase(s, tc);

    tc = tcase_create("probe");
    tcase_add_test(tc, test_probe_range_unbounded);
    tcase_add_test(tc, test_probe_counts_after_sink);
    tcase_add_test(tc, test_probe_demand_outstanding);
    tcase_add_test(tc, test_probe_cancel_midway);
    tcase_add_test(tc, test_probe_failing_upstream);
    tcase_add_test(tc, test_probe_empty_upstream);
    tcase_add_test(tc, test_probe_request_zero);
    tcase_add_test(tc, test_probe_request_inside_on_next);
    tcase_add_test(tc, test_probe_subscriptions_add_up);
    tcase_add_test(tc, test_probe_counts_only_what_reaches_it);
    tcase_add_test(tc, test_probe_bad_arguments);
    tcase_add_test(tc, test_probe_out_of_memory);
    tcase_add_test(tc, test_probe_item_after_end_is_discarded);
    suite_add_tcase(s, tc);

    tc = timed_tcase("probe_threads");
    tcase_add_test(tc, test_probe_concurrent_requests);
    suite_add_tcase(s, tc);

    tc = tcase_create("prometheus");
    tcase_add_test(tc, test_prometheus_golden);
    tcase_add_test(tc, test_prometheus_truncation);
    tcase_add_test(tc, test_prometheus_escapes_labels);
    tcase_add_test(tc, test_prometheus_no_objects);
    tcase_add_test(tc, test_prometheus_skips_null_entries);
    tcase_add_test(tc, test_prometheus_many_objects);
    suite_add_tcase(s, tc);

    tc = tcase_create("internal");
    tcase_add_test(tc, test_internal_null_is_noop);
    tcase_add_test(tc, test_internal_counters);
    tcase_add_test(tc, test_internal_queue_gauges);
    tcase_add_test(tc, test_internal_pauses);
    tcase_add_test(tc, test_internal_demand);
    tcase_add_test(tc, test_internal_batch);
    tcase_add_test(tc, test_internal_prometheus_golden);
    suite_add_tcase(s, tc);

    tc = timed_tcase("internal_threads");
    tcase_add_test(tc, test_internal_concurrent_snapshots);
    tcase_add_test(tc, test_internal_concurrent_prometheus);
    suite_add_tcase(s, tc);
    return s;
}
