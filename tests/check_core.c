/* tests/check_core.c — errors, subscribers made of callbacks, subscribe,
 * publisher references, the stage API (custom publishers and subscribers,
 * rill_reject, the demand helpers), contexts, and the allocator switch.
 *
 * Every test checks for leaks against the runner's counting allocator. The
 * custom stages written here allocate with plain malloc (they are "user"
 * code), so only the library's own allocations are counted.
 */
#include "recorder.h"
#include "suites.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * An event log: callbacks that write one letter per signal, so a test can
 * assert the exact order ("S" subscribe, "N" next, "E" error, "C" complete,
 * "R" release).
 */

typedef struct evlog {
    char ev[64];
    size_t n;
    intptr_t items[16];
    size_t nitems;
    int error_code;
    char message[128];
    int releases;
    rill_subscription *sub;
    int poke;   /* on_subscribe calls request(1), request(0) and cancel */
} evlog;

static void log_event(evlog *l, char c)
{
    if (l->n + 1 < sizeof l->ev)
        l->ev[l->n++] = c;
}

static void log_subscribe(void *user, rill_subscription *s)
{
    evlog *l = user;
    log_event(l, 'S');
    l->sub = s;
    if (l->poke) {
        /* The subscription of a refused subscriber does nothing: none of
         * these may add a signal (not even request(0)'s EINVAL). */
        rill_request(s, 1);
        rill_request(s, 0);
        rill_cancel(s);
        rill_cancel(s);
    }
}

static void log_next(void *user, void *item)
{
    evlog *l = user;
    log_event(l, 'N');
    if (l->nitems < sizeof l->items / sizeof l->items[0])
        l->items[l->nitems++] = (intptr_t)item;
}

static void log_error(void *user, const rill_error *e)
{
    evlog *l = user;
    log_event(l, 'E');
    l->error_code = rill_error_code(e);
    snprintf(l->message, sizeof l->message, "%s", rill_error_message(e));
}

static void log_complete(void *user)
{
    log_event(user, 'C');
}

static void log_release(void *user)
{
    evlog *l = user;
    log_event(l, 'R');
    l->releases++;
}

static const rill_callbacks log_callbacks = {
    .on_subscribe = log_subscribe,
    .on_next = log_next,
    .on_error = log_error,
    .on_complete = log_complete,
    .on_release = log_release,
};

/* strerror's buffer may be reused by the next call: copy it. */
static const char *strerror_text(int code, char *buf, size_t len)
{
    snprintf(buf, len, "%s", strerror(code));
    return buf;
}

/* ------------------------------------------------------------------------
 * Errors
 */

START_TEST(test_error_new_ref_unref)
{
    long base = live_allocations();
    char buf[32] = "queue overflowed";
    rill_error *e = rill_error_new(EOVERFLOW, buf);
    ck_assert_ptr_nonnull(e);
    /* The message is copied: changing the caller's buffer changes nothing. */
    memset(buf, 'x', sizeof buf - 1);
    ck_assert_int_eq(rill_error_code(e), EOVERFLOW);
    ck_assert_str_eq(rill_error_message(e), "queue overflowed");

    ck_assert_ptr_eq(rill_error_ref(e), e);
    rill_error_unref(e);
    /* Still alive: one reference left. */
    ck_assert_int_eq(rill_error_code(e), EOVERFLOW);
    ck_assert_str_eq(rill_error_message(e), "queue overflowed");
    rill_error_unref(e);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_error_null_message_uses_strerror)
{
    long base = live_allocations();
    char want[256];
    rill_error *e = rill_error_new(ETIMEDOUT, NULL);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(rill_error_code(e), ETIMEDOUT);
    ck_assert_ptr_nonnull(rill_error_message(e));
    ck_assert_str_eq(rill_error_message(e), strerror_text(ETIMEDOUT, want, sizeof want));
    rill_error_unref(e);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_error_null_handle)
{
    long base = live_allocations();
    ck_assert_int_eq(rill_error_code(NULL), 0);
    ck_assert_ptr_nonnull(rill_error_message(NULL));
    ck_assert_ptr_null(rill_error_ref(NULL));
    rill_error_unref(NULL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_error_user_code)
{
    long base = live_allocations();
    char want[256];
    rill_error *e = rill_error_new(1000, "my own failure");
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(rill_error_code(e), 1000);
    ck_assert_str_eq(rill_error_message(e), "my own failure");
    rill_error_unref(e);

    /* A user code without a message still has text: strerror's. */
    e = rill_error_new(1000, NULL);
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(rill_error_code(e), 1000);
    ck_assert_str_eq(rill_error_message(e), strerror_text(1000, want, sizeof want));
    rill_error_unref(e);

    /* An empty message is a message, not "no message". */
    e = rill_error_new(EIO, "");
    ck_assert_ptr_nonnull(e);
    ck_assert_str_eq(rill_error_message(e), "");
    rill_error_unref(e);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_version)
{
    char want[64];
    unsigned major, minor, patch;
    char tail;
    const char *v = rill_version();
    ck_assert_ptr_nonnull(v);
    snprintf(want, sizeof want, "%d.%d.%d", RILL_VERSION_MAJOR, RILL_VERSION_MINOR,
             RILL_VERSION_PATCH);
    ck_assert_str_eq(v, want);
    /* Exactly three dot-separated numbers, nothing after them. */
    ck_assert_int_eq(sscanf(v, "%u.%u.%u%c", &major, &minor, &patch, &tail), 3);
    ck_assert_uint_eq(major, RILL_VERSION_MAJOR);
    ck_assert_uint_eq(minor, RILL_VERSION_MINOR);
    ck_assert_uint_eq(patch, RILL_VERSION_PATCH);
}
END_TEST

/* ------------------------------------------------------------------------
 * Subscribers made of callbacks
 */

START_TEST(test_subscriber_new_null_callbacks)
{
    long base = live_allocations();
    evlog l = {0};
    errno = 0;
    ck_assert_ptr_null(rill_subscriber_new(NULL, &l));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_subscriber_new_out_of_memory_releases)
{
    long base = live_allocations();
    evlog l = {0};
    counting_allocator_fail_at(1);
    errno = 0;
    rill_subscriber *s = rill_subscriber_new(&log_callbacks, &l);
    counting_allocator_fail_at(0);
    ck_assert_ptr_null(s);
    ck_assert_int_eq(errno, ENOMEM);
    /* user has exactly one release path, also on failure. */
    ck_assert_int_eq(l.releases, 1);
    ck_assert_str_eq(l.ev, "R");
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_subscriber_null_on_subscribe_requests_unbounded)
{
    long base = live_allocations();
    evlog l = {0};
    rill_callbacks cb = log_callbacks;
    cb.on_subscribe = NULL;
    rill_publisher *p = rill_range(1, 5);
    ck_assert_ptr_nonnull(p);
    rill_subscriber *s = rill_subscriber_new(&cb, &l);
    ck_assert_ptr_nonnull(s);
    rill_subscribe(p, s);
    ck_assert_str_eq(l.ev, "NNNNNCR");
    ck_assert_uint_eq(l.nitems, 5);
    for (size_t i = 0; i < 5; i++)
        ck_assert_int_eq(l.items[i], (intptr_t)i + 1);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The callbacks are copied: changing the caller's struct after
 * rill_subscriber_new must not change what gets called. */
START_TEST(test_subscriber_callbacks_copied)
{
    long base = live_allocations();
    evlog l = {0};
    rill_callbacks cb = log_callbacks;
    cb.on_subscribe = NULL;
    rill_publisher *p = rill_range(7, 2);
    rill_subscriber *s = rill_subscriber_new(&cb, &l);
    ck_assert_ptr_nonnull(s);
    memset(&cb, 0, sizeof cb);
    rill_subscribe(p, s);
    ck_assert_str_eq(l.ev, "NNCR");
    ck_assert_int_eq(l.items[0], 7);
    ck_assert_int_eq(l.items[1], 8);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_subscriber_only_on_release)
{
    long base = live_allocations();
    const rill_callbacks cb = { .on_release = log_release };
    rill_publisher *pubs[3] = { rill_range(1, 5), rill_empty(), rill_fail(EIO, "broken") };
    for (size_t i = 0; i < 3; i++) {
        evlog l = {0};
        ck_assert_ptr_nonnull(pubs[i]);
        rill_subscriber *s = rill_subscriber_new(&cb, &l);
        ck_assert_ptr_nonnull(s);
        /* on_subscribe NULL requests everything, so each stream ends and
         * the subscriber is released inside rill_subscribe. */
        rill_subscribe(pubs[i], s);
        ck_assert_int_eq(l.releases, 1);
        ck_assert_str_eq(l.ev, "R");
        rill_publisher_unref(pubs[i]);
    }
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_subscriber_release_once_after_cancel)
{
    long base = live_allocations();
    rill_publisher *p = rill_range(1, 5);
    recorder *r = rec_new(5);
    r->cancel_after = 2;
    rill_subscribe(p, rec_subscriber(r));
    ck_assert_msg(rec_ok(r), "%s", r->violation);
    ck_assert_uint_eq(r->nitems, 2);
    ck_assert_int_eq(rec_int(r, 0), 1);
    ck_assert_int_eq(rec_int(r, 1), 2);
    ck_assert_int_eq(r->completes + r->errors, 0);
    ck_assert_int_eq(r->releases, 1);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_subscribe_null_subscriber)
{
    long base = live_allocations();
    rill_publisher *p = rill_range(1, 3);
    ck_assert_ptr_nonnull(p);
    errno = 0;
    rill_subscribe(p, NULL);
    ck_assert_int_eq(errno, EINVAL);
    /* The publisher is untouched and still works. */
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_msg(rec_ok(r), "%s", r->violation);
    ck_assert_uint_eq(r->nitems, 3);
    ck_assert_int_eq(r->completes, 1);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_subscribe_null_publisher)
{
    long base = live_allocations();
    evlog l = {0};
    l.poke = 1;
    rill_subscriber *s = rill_subscriber_new(&log_callbacks, &l);
    ck_assert_ptr_nonnull(s);
    rill_subscribe(NULL, s);
    ck_assert_str_eq(l.ev, "SER");
    ck_assert_int_eq(l.error_code, EINVAL);
    ck_assert_int_eq(l.releases, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_subscribe_null_publisher_recorder)
{
    long base = live_allocations();
    recorder *r = rec_run(NULL, 3);
    ck_assert_msg(rec_ok(r), "%s", r->violation);
    ck_assert_int_eq(r->subscribes, 1);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, EINVAL);
    ck_assert_int_eq(r->completes, 0);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->releases, 1);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Publisher references
 */

static void expect_range_1_to_3(rill_publisher *p)
{
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    ck_assert_msg(rec_ok(r), "%s", r->violation);
    ck_assert_uint_eq(r->nitems, 3);
    for (size_t i = 0; i < 3; i++)
        ck_assert_int_eq(rec_int(r, i), (intptr_t)i + 1);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    rec_free(r);
}

START_TEST(test_publisher_ref_unref)
{
    long base = live_allocations();
    rill_publisher *p = rill_range(1, 3);
    ck_assert_ptr_nonnull(p);
    ck_assert_ptr_eq(rill_publisher_ref(p), p);
    ck_assert_ptr_eq(rill_publisher_ref(p), p);
    rill_publisher_unref(p);
    expect_range_1_to_3(p);      /* two references left */
    rill_publisher_unref(p);
    expect_range_1_to_3(p);      /* one left */
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_publisher_ref_null)
{
    long base = live_allocations();
    ck_assert_ptr_null(rill_publisher_ref(NULL));
    rill_publisher_unref(NULL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Stage API: a custom publisher.
 *
 * once_pub serves its first subscriber one fixed item (with its own
 * subscription, a small single-threaded state machine) and refuses every
 * later subscriber with rill_reject(EBUSY, "busy"). Its subscription keeps a
 * reference to the publisher, so destroy counts show the refcount at work.
 */

typedef struct once_pub {
    rill_publisher base;
    void *item;
    int subscribers;
    int *destroyed;
} once_pub;

typedef struct once_sub {
    rill_subscription base;
    rill_subscriber *down;
    once_pub *pub;
    void *item;
    uint64_t demand;
    int busy;        /* inside a signal we delivered: defer, do not recurse */
    int bad;         /* request(0) seen */
    int sent, done, cancelled;
} once_sub;

/* The one drain loop: runs with busy == 0 and releases the subscriber last,
 * after every other signal has returned. */
static void once_run(once_sub *o)
{
    o->busy = 1;
    while (!o->cancelled && !o->done) {
        if (o->bad) {
            o->done = 1;
            rill_deliver_error_code(o->down, EINVAL, "request(0)");
        } else if (!o->sent && o->demand > 0) {
            o->sent = 1;
            rill_demand_produced(&o->demand, 1);
            rill_deliver_next(o->down, o->item);
        } else if (o->sent) {
            o->done = 1;
            rill_deliver_complete(o->down);
        } else {
            break;   /* waiting for demand */
        }
    }
    o->busy = 0;
    if (o->cancelled || o->done) {
        rill_deliver_release(o->down);
        rill_publisher_unref(&o->pub->base);
        free(o);
    }
}

static void once_request(rill_subscription *self, uint64_t n)
{
    once_sub *o = (once_sub *)self;
    if (o->done || o->cancelled)
        return;
    if (n == 0)
        o->bad = 1;
    else
        rill_demand_add(&o->demand, n);
    if (!o->busy)
        once_run(o);
}

static void once_cancel(rill_subscription *self)
{
    once_sub *o = (once_sub *)self;
    if (o->done || o->cancelled)
        return;
    o->cancelled = 1;
    if (!o->busy)
        once_run(o);
}

static const struct rill_subscription_ops once_sub_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = once_request,
    .cancel = once_cancel,
};

static void once_subscribe(rill_publisher *self, rill_subscriber *s)
{
    once_pub *p = (once_pub *)self;
    if (++p->subscribers > 1) {
        rill_reject(s, EBUSY, "busy");
        return;
    }
    once_sub *o = calloc(1, sizeof *o);
    ck_assert_ptr_nonnull(o);
    o->base.ops = &once_sub_ops;
    o->down = s;
    o->item = p->item;
    o->pub = (once_pub *)rill_publisher_ref(self);
    o->busy = 1;   /* requests inside on_subscribe are served after it returns */
    rill_deliver_subscribe(s, &o->base);
    o->busy = 0;
    once_run(o);
}

static void once_destroy(rill_publisher *self)
{
    once_pub *p = (once_pub *)self;
    (*p->destroyed)++;
    free(p);
}

static const struct rill_publisher_ops once_pub_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = once_subscribe,
    .destroy = once_destroy,
};

static rill_publisher *once_new(void *item, int *destroyed)
{
    once_pub *p = calloc(1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    rill_publisher_init(&p->base, &once_pub_ops);
    p->item = item;
    p->destroyed = destroyed;
    return &p->base;
}

START_TEST(test_stage_custom_publisher_delivers)
{
    long base = live_allocations();
    int destroyed = 0;
    rill_publisher *p = once_new((void *)(intptr_t)42, &destroyed);
    recorder *r = rec_run(p, 0);
    ck_assert_int_eq(r->subscribes, 1);
    ck_assert_uint_eq(r->nitems, 0);
    /* The subscription holds its own reference: dropping ours frees nothing. */
    rill_publisher_unref(p);
    ck_assert_int_eq(destroyed, 0);
    rec_request(r, 1);
    ck_assert_msg(rec_ok(r), "%s", r->violation);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_int_eq(rec_int(r, 0), 42);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    ck_assert_int_eq(destroyed, 1);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The library's callback subscriber drives a custom subscription: request
 * from on_subscribe (NULL slot: unbounded) goes through the ops table. */
START_TEST(test_stage_custom_publisher_callbacks)
{
    long base = live_allocations();
    int destroyed = 0;
    evlog l = {0};
    rill_callbacks cb = log_callbacks;
    cb.on_subscribe = NULL;
    rill_publisher *p = once_new((void *)(intptr_t)9, &destroyed);
    rill_subscribe(p, rill_subscriber_new(&cb, &l));
    ck_assert_str_eq(l.ev, "NCR");
    ck_assert_int_eq(l.items[0], 9);
    rill_publisher_unref(p);
    ck_assert_int_eq(destroyed, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_stage_reject)
{
    long base = live_allocations();
    int destroyed = 0;
    rill_publisher *p = once_new((void *)(intptr_t)1, &destroyed);
    recorder *first = rec_run(p, 1);
    ck_assert_int_eq(first->completes, 1);

    evlog l = {0};
    l.poke = 1;   /* request/cancel on the refused subscription: no-ops */
    rill_subscribe(p, rill_subscriber_new(&log_callbacks, &l));
    ck_assert_str_eq(l.ev, "SER");
    ck_assert_int_eq(l.error_code, EBUSY);
    ck_assert_str_eq(l.message, "busy");
    ck_assert_int_eq(l.releases, 1);

    recorder *third = rec_run(p, 4);
    ck_assert_msg(rec_ok(third), "%s", third->violation);
    ck_assert_int_eq(third->errors, 1);
    ck_assert_int_eq(third->error_code, EBUSY);
    ck_assert_str_eq(third->error_message, "busy");
    ck_assert_int_eq(third->releases, 1);
    rec_free(first);
    rec_free(third);
    rill_publisher_unref(p);
    ck_assert_int_eq(destroyed, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* fail_pub: subscribe → on_subscribe (a do-nothing subscription),
 * rill_deliver_error_code, on_release. */
typedef struct fail_pub {
    rill_publisher base;
    int code;
    const char *message;
} fail_pub;

static void noop_request(rill_subscription *self, uint64_t n)
{
}

static void noop_cancel(rill_subscription *self)
{
}

static const struct rill_subscription_ops noop_sub_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = noop_request,
    .cancel = noop_cancel,
};

static rill_subscription noop_sub = { &noop_sub_ops };

static void fail_subscribe(rill_publisher *self, rill_subscriber *s)
{
    fail_pub *p = (fail_pub *)self;
    rill_deliver_subscribe(s, &noop_sub);
    rill_deliver_error_code(s, p->code, p->message);
    rill_deliver_release(s);
}

static void fail_destroy(rill_publisher *self)
{
    free(self);
}

static const struct rill_publisher_ops fail_pub_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = fail_subscribe,
    .destroy = fail_destroy,
};

static rill_publisher *fail_pub_new(int code, const char *message)
{
    fail_pub *p = calloc(1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    rill_publisher_init(&p->base, &fail_pub_ops);
    p->code = code;
    p->message = message;
    return &p->base;
}

START_TEST(test_stage_deliver_error_code)
{
    long base = live_allocations();
    char want[256];
    rill_publisher *p = fail_pub_new(1234, "custom");
    recorder *r = rec_run(p, 1);
    ck_assert_msg(rec_ok(r), "%s", r->violation);
    ck_assert_int_eq(r->subscribes, 1);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, 1234);
    ck_assert_str_eq(r->error_message, "custom");
    ck_assert_int_eq(r->releases, 1);
    rec_free(r);
    rill_publisher_unref(p);

    p = fail_pub_new(ENOSPC, NULL);
    r = rec_run(p, 1);
    ck_assert_msg(rec_ok(r), "%s", r->violation);
    ck_assert_int_eq(r->error_code, ENOSPC);
    ck_assert_str_eq(r->error_message, strerror_text(ENOSPC, want, sizeof want));
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A reject with no message uses strerror(code). */
typedef struct reject_pub {
    rill_publisher base;
} reject_pub;

static void reject_subscribe(rill_publisher *self, rill_subscriber *s)
{
    rill_reject(s, ENOMEM, NULL);
}

static const struct rill_publisher_ops reject_pub_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = reject_subscribe,
    .destroy = fail_destroy,
};

START_TEST(test_stage_reject_null_message)
{
    long base = live_allocations();
    char want[256];
    reject_pub *rp = calloc(1, sizeof *rp);
    ck_assert_ptr_nonnull(rp);
    rill_publisher_init(&rp->base, &reject_pub_ops);
    evlog l = {0};
    rill_subscribe(&rp->base, rill_subscriber_new(&log_callbacks, &l));
    ck_assert_str_eq(l.ev, "SER");
    ck_assert_int_eq(l.error_code, ENOMEM);
    ck_assert_str_eq(l.message, strerror_text(ENOMEM, want, sizeof want));
    rill_publisher_unref(&rp->base);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Refcounting on a custom publisher: destroy runs at the last unref only. */
START_TEST(test_stage_publisher_destroy_at_last_unref)
{
    long base = live_allocations();
    int destroyed = 0;
    rill_publisher *p = once_new(NULL, &destroyed);
    ck_assert_ptr_eq(rill_publisher_ref(p), p);
    ck_assert_ptr_eq(rill_publisher_ref(p), p);
    rill_publisher_unref(p);
    rill_publisher_unref(p);
    ck_assert_int_eq(destroyed, 0);
    rill_publisher_unref(p);
    ck_assert_int_eq(destroyed, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Stage API: a custom subscriber (rill_subscriber base with ops).
 */

typedef struct my_sub {
    rill_subscriber base;
    evlog log;
    uint64_t first_request;
    rill_context *ctx;   /* returned by context(); released in on_release */
} my_sub;

static void my_on_subscribe(rill_subscriber *self, rill_subscription *s)
{
    my_sub *m = (my_sub *)self;
    log_event(&m->log, 'S');
    m->log.sub = s;
    if (m->first_request)
        rill_request(s, m->first_request);
}

static void my_on_next(rill_subscriber *self, void *item)
{
    log_next(&((my_sub *)self)->log, item);
}

static void my_on_error(rill_subscriber *self, const rill_error *e)
{
    log_error(&((my_sub *)self)->log, e);
}

static void my_on_complete(rill_subscriber *self)
{
    log_event(&((my_sub *)self)->log, 'C');
}

static void my_on_release(rill_subscriber *self)
{
    my_sub *m = (my_sub *)self;
    log_release(&m->log);
    rill_context_unref(m->ctx);
    m->ctx = NULL;
}

static rill_context *my_context(rill_subscriber *self)
{
    return ((my_sub *)self)->ctx;
}

static const struct rill_subscriber_ops my_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = my_on_subscribe,
    .on_next = my_on_next,
    .on_error = my_on_error,
    .on_complete = my_on_complete,
    .on_release = my_on_release,
    .context = my_context,
};

/* The same without a context slot. */
static const struct rill_subscriber_ops my_ops_no_context = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = my_on_subscribe,
    .on_next = my_on_next,
    .on_error = my_on_error,
    .on_complete = my_on_complete,
    .on_release = my_on_release,
};

static void check_custom_subscriber_on_range(const struct rill_subscriber_ops *ops)
{
    long base = live_allocations();
    my_sub m = { .base = { ops }, .first_request = 2 };
    ck_assert_ptr_null(rill_subscriber_context(&m.base));
    rill_publisher *p = rill_range(10, 5);
    ck_assert_ptr_nonnull(p);
    rill_subscribe(p, &m.base);
    ck_assert_str_eq(m.log.ev, "SNN");
    ck_assert_ptr_nonnull(m.log.sub);
    rill_request(m.log.sub, 10);
    ck_assert_str_eq(m.log.ev, "SNNNNNCR");
    for (size_t i = 0; i < 5; i++)
        ck_assert_int_eq(m.log.items[i], 10 + (intptr_t)i);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}

START_TEST(test_stage_custom_subscriber_null_context)
{
    check_custom_subscriber_on_range(&my_ops);
}
END_TEST

START_TEST(test_stage_custom_subscriber_no_context_slot)
{
    check_custom_subscriber_on_range(&my_ops_no_context);
}
END_TEST

/* Only on_release is required: the other signals are ignored. */
static const struct rill_subscriber_ops release_only_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_release = my_on_release,
};

START_TEST(test_stage_custom_subscriber_release_only)
{
    long base = live_allocations();
    rill_publisher *pubs[2] = { rill_empty(), rill_fail(EPIPE, NULL) };
    for (size_t i = 0; i < 2; i++) {
        my_sub m = { .base = { &release_only_ops } };
        ck_assert_ptr_nonnull(pubs[i]);
        rill_subscribe(pubs[i], &m.base);
        ck_assert_str_eq(m.log.ev, "R");
        rill_publisher_unref(pubs[i]);
    }
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_stage_custom_subscriber_error)
{
    long base = live_allocations();
    my_sub m = { .base = { &my_ops }, .first_request = 1 };
    rill_publisher *p = rill_fail(1001, "user failure");
    rill_subscribe(p, &m.base);
    ck_assert_str_eq(m.log.ev, "SER");
    ck_assert_int_eq(m.log.error_code, 1001);
    ck_assert_str_eq(m.log.message, "user failure");
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The deliver wrappers call through the ops table. */
START_TEST(test_stage_deliver_wrappers)
{
    long base = live_allocations();
    my_sub m = { .base = { &my_ops } };
    rill_error *e = rill_error_new(EAGAIN, "again");
    rill_deliver_subscribe(&m.base, &noop_sub);
    ck_assert_ptr_eq(m.log.sub, &noop_sub);
    rill_deliver_next(&m.base, (void *)(intptr_t)5);
    rill_deliver_error(&m.base, e);
    rill_deliver_release(&m.base);
    ck_assert_str_eq(m.log.ev, "SNER");
    ck_assert_int_eq(m.log.items[0], 5);
    ck_assert_int_eq(m.log.error_code, EAGAIN);
    ck_assert_str_eq(m.log.message, "again");
    rill_error_unref(e);

    my_sub c = { .base = { &my_ops } };
    rill_deliver_subscribe(&c.base, &noop_sub);
    rill_deliver_complete(&c.base);
    rill_deliver_release(&c.base);
    ck_assert_str_eq(c.log.ev, "SCR");
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A custom subscriber's context receives what a stage upstream drops:
 * filter (keep evens) over range(0, 6) discards 1, 3, 5 into it. */
typedef struct hook_log {
    intptr_t items[16];
    size_t n;
    int freed;
    char tag;
    char *order;   /* shared order string, may be NULL */
    size_t *order_n;
} hook_log;

static void hook_fn(void *ctx, void *item)
{
    hook_log *h = ctx;
    if (h->n < sizeof h->items / sizeof h->items[0])
        h->items[h->n++] = (intptr_t)item;
    if (h->order)
        h->order[(*h->order_n)++] = h->tag;
}

static void hook_free(void *ctx)
{
    ((hook_log *)ctx)->freed++;
}

static int keep_even(void *ctx, void *item)
{
    return ((intptr_t)item % 2) == 0;
}

START_TEST(test_stage_custom_subscriber_context_gets_discards)
{
    long base = live_allocations();
    hook_log h = {0};
    my_sub m = { .base = { &my_ops }, .first_request = RILL_UNBOUNDED };
    m.ctx = rill_context_new(hook_fn, &h, hook_free, NULL);
    ck_assert_ptr_nonnull(m.ctx);
    ck_assert_ptr_eq(rill_subscriber_context(&m.base), m.ctx);
    rill_publisher *p = rill_filter(rill_range(0, 6), keep_even, NULL);
    ck_assert_ptr_nonnull(p);
    rill_subscribe(p, &m.base);
    ck_assert_str_eq(m.log.ev, "SNNNCR");
    ck_assert_int_eq(m.log.items[0], 0);
    ck_assert_int_eq(m.log.items[1], 2);
    ck_assert_int_eq(m.log.items[2], 4);
    ck_assert_uint_eq(h.n, 3);
    ck_assert_int_eq(h.items[0], 1);
    ck_assert_int_eq(h.items[1], 3);
    ck_assert_int_eq(h.items[2], 5);
    rill_publisher_unref(p);
    /* The subscriber dropped its reference in on_release; the filter's
     * subscription is gone, so the hook's ctx has been released. */
    ck_assert_int_eq(h.freed, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Stage API: demand helpers.
 */

START_TEST(test_demand_add_saturates)
{
    uint64_t d = 0;
    ck_assert_uint_eq(rill_demand_add(&d, 5), 0);
    ck_assert_uint_eq(d, 5);
    ck_assert_uint_eq(rill_demand_add(&d, 0), 5);
    ck_assert_uint_eq(d, 5);

    d = UINT64_MAX - 1;
    ck_assert_uint_eq(rill_demand_add(&d, 5), UINT64_MAX - 1);
    ck_assert_uint_eq(d, RILL_UNBOUNDED);
    ck_assert_uint_eq(rill_demand_add(&d, 1), RILL_UNBOUNDED);
    ck_assert_uint_eq(d, RILL_UNBOUNDED);

    d = 7;
    ck_assert_uint_eq(rill_demand_add(&d, RILL_UNBOUNDED), 7);
    ck_assert_uint_eq(d, RILL_UNBOUNDED);

    /* Exactly reaching UINT64_MAX is unbounded too. */
    d = UINT64_MAX - 3;
    ck_assert_uint_eq(rill_demand_add(&d, 3), UINT64_MAX - 3);
    ck_assert_uint_eq(d, RILL_UNBOUNDED);
}
END_TEST

START_TEST(test_demand_produced)
{
    uint64_t d = 10;
    ck_assert_uint_eq(rill_demand_produced(&d, 3), 7);
    ck_assert_uint_eq(d, 7);
    ck_assert_uint_eq(rill_demand_produced(&d, 7), 0);
    ck_assert_uint_eq(d, 0);

    d = RILL_UNBOUNDED;
    ck_assert_uint_eq(rill_demand_produced(&d, 3), RILL_UNBOUNDED);
    ck_assert_uint_eq(d, RILL_UNBOUNDED);
    ck_assert_uint_eq(rill_demand_produced(&d, 1000000), RILL_UNBOUNDED);
    ck_assert_uint_eq(d, RILL_UNBOUNDED);
}
END_TEST

/* ------------------------------------------------------------------------
 * Contexts
 */

START_TEST(test_context_null_fn)
{
    long base = live_allocations();
    hook_log h = {0};
    errno = 0;
    ck_assert_ptr_null(rill_context_new(NULL, &h, hook_free, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(h.freed, 1);
    /* Without ctx_free, nothing to call; still EINVAL. */
    errno = 0;
    ck_assert_ptr_null(rill_context_new(NULL, &h, NULL, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(h.freed, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_context_out_of_memory)
{
    long base = live_allocations();
    hook_log h = {0};
    counting_allocator_fail_at(1);
    errno = 0;
    rill_context *c = rill_context_new(hook_fn, &h, hook_free, NULL);
    counting_allocator_fail_at(0);
    ck_assert_ptr_null(c);
    ck_assert_int_eq(errno, ENOMEM);
    ck_assert_int_eq(h.freed, 1);
    ck_assert_uint_eq(h.n, 0);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_context_chain_nearest_first)
{
    long base = live_allocations();
    char order[16] = {0};
    size_t order_n = 0;
    hook_log inner_h = { .tag = 'i', .order = order, .order_n = &order_n };
    hook_log outer_h = { .tag = 'o', .order = order, .order_n = &order_n };
    rill_context *inner = rill_context_new(hook_fn, &inner_h, hook_free, NULL);
    ck_assert_ptr_nonnull(inner);
    rill_context *outer = rill_context_new(hook_fn, &outer_h, hook_free, inner);
    ck_assert_ptr_nonnull(outer);

    rill_context_discard(outer, (void *)(intptr_t)7);
    rill_context_discard(outer, (void *)(intptr_t)8);
    ck_assert_str_eq(order, "oioi");
    ck_assert_uint_eq(outer_h.n, 2);
    ck_assert_uint_eq(inner_h.n, 2);
    ck_assert_int_eq(outer_h.items[0], 7);
    ck_assert_int_eq(inner_h.items[0], 7);
    ck_assert_int_eq(outer_h.items[1], 8);
    ck_assert_int_eq(inner_h.items[1], 8);

    /* Discarding on the inner context reaches only the inner hook. */
    rill_context_discard(inner, (void *)(intptr_t)9);
    ck_assert_str_eq(order, "oioii");

    /* The outer context holds the inner one: dropping ours frees nothing. */
    rill_context_unref(inner);
    ck_assert_int_eq(inner_h.freed, 0);
    ck_assert_int_eq(outer_h.freed, 0);
    rill_context_discard(outer, (void *)(intptr_t)10);
    ck_assert_str_eq(order, "oioiioi");
    rill_context_unref(outer);
    ck_assert_int_eq(outer_h.freed, 1);
    ck_assert_int_eq(inner_h.freed, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_context_ref_unref)
{
    long base = live_allocations();
    hook_log inner_h = {0}, outer_h = {0};
    rill_context *inner = rill_context_new(hook_fn, &inner_h, hook_free, NULL);
    rill_context *outer = rill_context_new(hook_fn, &outer_h, hook_free, inner);
    ck_assert_ptr_nonnull(inner);
    ck_assert_ptr_nonnull(outer);
    ck_assert_ptr_eq(rill_context_ref(outer), outer);
    rill_context_unref(outer);
    ck_assert_int_eq(outer_h.freed, 0);

    /* We still hold inner: freeing outer releases outer's ctx only. */
    rill_context_unref(outer);
    ck_assert_int_eq(outer_h.freed, 1);
    ck_assert_int_eq(inner_h.freed, 0);
    rill_context_discard(inner, (void *)(intptr_t)3);
    ck_assert_uint_eq(inner_h.n, 1);
    ck_assert_uint_eq(outer_h.n, 0);
    rill_context_unref(inner);
    ck_assert_int_eq(inner_h.freed, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_context_null_handles)
{
    long base = live_allocations();
    ck_assert_ptr_null(rill_context_ref(NULL));
    rill_context_unref(NULL);
    rill_context_discard(NULL, (void *)(intptr_t)1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Allocator
 */

START_TEST(test_set_allocator_einval)
{
    long base = live_allocations();
    /* Argument checks come first: a missing function is EINVAL whether or
     * not the library has allocated yet. */
    ck_assert_int_eq(rill_set_allocator(NULL, realloc, free), EINVAL);
    ck_assert_int_eq(rill_set_allocator(malloc, realloc, NULL), EINVAL);
    ck_assert_int_eq(rill_set_allocator(NULL, NULL, NULL), EINVAL);
    /* The counting allocator is still the one in use. */
    rill_error *e = rill_error_new(EIO, "counted");
    ck_assert_ptr_nonnull(e);
    ck_assert_int_gt(live_allocations(), base);
    rill_error_unref(e);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_set_allocator_ebusy)
{
    long base = live_allocations();
    /* Make sure the library has allocated with the runner's allocator (in
     * fork mode this child may not have yet), and hold the memory. */
    rill_error *e = rill_error_new(EIO, "held");
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(rill_set_allocator(malloc, realloc, free), EBUSY);
    ck_assert_int_eq(rill_set_allocator(malloc, NULL, free), EBUSY);
    rill_error_unref(e);
    ck_assert_int_eq(live_allocations(), base);
    /* Even with nothing live, the library has allocated: still EBUSY, and
     * the counting allocator stays in place. */
    ck_assert_int_eq(rill_set_allocator(malloc, realloc, free), EBUSY);
    e = rill_error_new(EIO, "counted");
    ck_assert_int_eq(live_allocations(), base + 1);
    rill_error_unref(e);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------ */

Suite *core_suite(void)
{
    Suite *s = suite_create("core");

    TCase *tc = tcase_create("errors");
    tcase_add_test(tc, test_error_new_ref_unref);
    tcase_add_test(tc, test_error_null_message_uses_strerror);
    tcase_add_test(tc, test_error_null_handle);
    tcase_add_test(tc, test_error_user_code);
    tcase_add_test(tc, test_version);
    suite_add_tcase(s, tc);

    tc = tcase_create("subscribers");
    tcase_add_test(tc, test_subscriber_new_null_callbacks);
    tcase_add_test(tc, test_subscriber_new_out_of_memory_releases);
    tcase_add_test(tc, test_subscriber_null_on_subscribe_requests_unbounded);
    tcase_add_test(tc, test_subscriber_callbacks_copied);
    tcase_add_test(tc, test_subscriber_only_on_release);
    tcase_add_test(tc, test_subscriber_release_once_after_cancel);
    tcase_add_test(tc, test_subscribe_null_subscriber);
    tcase_add_test(tc, test_subscribe_null_publisher);
    tcase_add_test(tc, test_subscribe_null_publisher_recorder);
    suite_add_tcase(s, tc);

    tc = tcase_create("publishers");
    tcase_add_test(tc, test_publisher_ref_unref);
    tcase_add_test(tc, test_publisher_ref_null);
    suite_add_tcase(s, tc);

    tc = tcase_create("stage");
    tcase_add_test(tc, test_stage_custom_publisher_delivers);
    tcase_add_test(tc, test_stage_custom_publisher_callbacks);
    tcase_add_test(tc, test_stage_reject);
    tcase_add_test(tc, test_stage_reject_null_message);
    tcase_add_test(tc, test_stage_deliver_error_code);
    tcase_add_test(tc, test_stage_publisher_destroy_at_last_unref);
    tcase_add_test(tc, test_stage_custom_subscriber_null_context);
    tcase_add_test(tc, test_stage_custom_subscriber_no_context_slot);
    tcase_add_test(tc, test_stage_custom_subscriber_release_only);
    tcase_add_test(tc, test_stage_custom_subscriber_error);
    tcase_add_test(tc, test_stage_deliver_wrappers);
    tcase_add_test(tc, test_stage_custom_subscriber_context_gets_discards);
    tcase_add_test(tc, test_demand_add_saturates);
    tcase_add_test(tc, test_demand_produced);
    suite_add_tcase(s, tc);

    tc = tcase_create("contexts");
    tcase_add_test(tc, test_context_null_fn);
    tcase_add_test(tc, test_context_out_of_memory);
    tcase_add_test(tc, test_context_chain_nearest_first);
    tcase_add_test(tc, test_context_ref_unref);
    tcase_add_test(tc, test_context_null_handles);
    suite_add_tcase(s, tc);

    tc = tcase_create("allocator");
    tcase_add_test(tc, test_set_allocator_einval);
    tcase_add_test(tc, test_set_allocator_ebusy);
    suite_add_tcase(s, tc);
    return s;
}
