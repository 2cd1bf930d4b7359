/* lib/tck-subscriber.c — the conformance kit's subscriber and processor
 * verification: the TCK's SubscriberBlackboxVerification,
 * SubscriberWhiteboxVerification and IdentityProcessorVerification, in C
 * (include/rill/tck.h).
 *
 * The kit as publisher. Every test has a "stage" (tck_stage): the kit's side
 * of one subscription. The stage hands out the kit's instrumented
 * subscriptions (tck_sub: the first one, and a second one for rule 2.5),
 * records every request and cancel under its mutex, and signals the
 * subscriber under test from the verifying thread only, so the kit's
 * signals are serial by construction. In processor verification the
 * subscriber under test is the operator's upstream face: the kit's upstream
 * publisher (tck_upstream) hands the stage the subscriber the operator
 * subscribes with, and delivers on_subscribe on whatever thread the operator
 * subscribes from; every later signal waits until that on_subscribe has
 * returned (`subscribed`), so the signals stay serial and ordered.
 *
 * Lifetimes. A stage outlives its test: the run keeps every stage until the
 * verification returns, so a subscriber that calls request or cancel after
 * its on_release is reported instead of touching freed memory. The upstream
 * publisher holds its own reference to its stage, and once the test is over
 * (`closed`) it refuses late subscribers with rill_reject. The kit delivers
 * on_release once, last, on the verifying thread, and only after the
 * subscriber's on_subscribe has returned.
 *
 * Rule 2.3. While the kit is inside the subscriber's on_complete/on_error,
 * the stage holds the verifying thread's identity (`in_terminal`); a request
 * or cancel arriving on that thread meanwhile is a breach. That is the JVM's
 * stack inspection, minus calls a subscriber defers to its own threads
 * (rule 2.4, which the TCK leaves untested too).
 *
 * The whitebox tests run against two "faces": the user's subscriber with its
 * puppet and rill_tck_probe, or an operator with the kit's checking
 * subscriber (tck_probe, lib/tck.c) downstream acting as puppet and probe —
 * as the TCK's IdentityProcessorVerification does.
 */
#include "tck-internal.h"

#include <rill.h>
#include <rill/tck.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MS(ns) ((unsigned long long)((ns) / 1000000u))
#define ULL(v) ((unsigned long long)(v))

#define BLACKBOX_MAX_ITEMS 512   /* the TCK's cap on what 201 sends */
#define ORDER_ITEMS 40           /* items of the in-order test (two downstream requests of 20) */
#define FEED_CAP TCK_ITEMS       /* the most the demand test sends */
#define KIT_ERROR EIO
static const char kit_error_message[] = "rill tck: the kit's test error";

/* ------------------------------------------------------------------------
 * Thread identity and demand arithmetic */

static _Thread_local char tls_self;

static uintptr_t self_id(void)
{
    return (uintptr_t)&tls_self;
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return b >= RILL_UNBOUNDED - a ? RILL_UNBOUNDED : a + b;
}

/* ------------------------------------------------------------------------
 * The stage: the kit's side of one subscription */

typedef struct tck_stage tck_stage;

typedef struct tck_sub {
    rill_subscription base;
    tck_stage *st;
    int second;              /* the second subscription of rule 2.5 */
    /* under st->mu */
    uint64_t requested;      /* saturating */
    uint64_t calls;          /* request calls with n > 0 */
    int cancels;
} tck_sub;

struct rill_tck_probe {
    tck_stage *st;
};

struct tck_stage {
    atomic_int refs;         /* the run's, and the upstream publisher's (processor) */
    tck_stage *next;         /* the run's list */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    tck_sub subs[2];
    rill_tck_probe probe;
    /* Rule 2.3: the thread inside the kit's on_complete/on_error (0: none).
     * terminal_name is written before, and read only by, that thread. */
    _Atomic uintptr_t in_terminal;
    const char *terminal_name;

    /* under mu */
    rill_subscriber *sub;    /* the subscriber the kit signals */
    int subscribed;          /* its first on_subscribe has returned */
    int closed;              /* the test is over: refuse late subscribers */
    int terminated, released;
    int second_requests_breach;   /* blackbox 2.5: requesting from subs[1] is a breach */
    uint64_t sent;           /* on_next delivered */
    int violations;
    char violation[240];     /* the first */
    /* what the subscriber reported to its rill_tck_probe (whitebox) */
    void (*trigger)(void *puppet, uint64_t n);
    void (*cancel)(void *puppet);
    void *puppet;
    int registered;
    uint64_t nexts;
    void *items[TCK_ITEMS];
    int completes, errors, error_code;
    char error_msg[160];
};

/* Records the first breach; mu held. */
static void violate(tck_stage *st, const char *fmt, ...)
{
    if (st->violations++ != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->violation, sizeof st->violation, fmt, ap);
    va_end(ap);
}

static void sub_call(tck_sub *u, int cancel, uint64_t n)
{
    tck_stage *st = u->st;
    int inside = atomic_load(&st->in_terminal) == self_id();
    char what[48];
    if (cancel)
        snprintf(what, sizeof what, "cancel()");
    else
        snprintf(what, sizeof what, "request(%llu)", ULL(n));
    pthread_mutex_lock(&st->mu);
    if (inside)
        violate(st, "rule 2.3: %s called from inside %s", what, st->terminal_name);
    if (st->released)
        violate(st, "%s after on_release: the subscription was no longer valid (rill/core.h)", what);
    if (cancel) {
        u->cancels++;
    } else if (n == 0) {
        violate(st, "request(0): a subscriber must request n > 0 (rule 3.9 makes the publisher "
                    "fail the stream)");
    } else {
        u->calls++;
        u->requested = sat_add(u->requested, n);
        if (u->second && st->second_requests_breach)
            violate(st, "rule 2.5: %s on a second subscription, which it must cancel "
                        "without requesting", what);
    }
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

static void sub_request(rill_subscription *self, uint64_t n)
{
    sub_call((tck_sub *)self, 0, n);
}

static void sub_cancel(rill_subscription *self)
{
    sub_call((tck_sub *)self, 1, 0);
}

static const struct rill_subscription_ops sub_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = sub_request,
    .cancel = sub_cancel,
};

static tck_stage *stage_new(int refs)
{
    tck_stage *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int bad = pthread_cond_init(&st->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (bad) {
        free(st);
        return NULL;
    }
    pthread_mutex_init(&st->mu, NULL);
    for (int i = 0; i < 2; i++) {
        st->subs[i].base.ops = &sub_ops;
        st->subs[i].st = st;
        st->subs[i].second = i;
    }
    st->probe.st = st;
    atomic_init(&st->refs, refs);
    return st;
}

static void stage_unref(tck_stage *st)
{
    if (atomic_fetch_sub(&st->refs, 1) != 1)
        return;
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

typedef int (*stage_pred)(const tck_stage *st, uint64_t arg);

/* Waits until pred holds or timeout_ns passes; returns pred's last value. */
static int stage_wait(tck_stage *st, stage_pred pred, uint64_t arg, uint64_t timeout_ns)
{
    uint64_t deadline = rill__tck_now_ns() + timeout_ns;
    struct timespec ts = { (time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u) };
    pthread_mutex_lock(&st->mu);
    int ok;
    while (!(ok = pred(st, arg)))
        if (pthread_cond_timedwait(&st->cv, &st->mu, &ts) == ETIMEDOUT) {
            ok = pred(st, arg);
            break;
        }
    pthread_mutex_unlock(&st->mu);
    return ok;
}

/* The predicates stop early on a breach: the caller checks breaches first. */
static int st_subscribed(const tck_stage *st, uint64_t arg)
{
    (void)arg;
    return st->subscribed;
}

static int st_registered(const tck_stage *st, uint64_t arg)
{
    (void)arg;
    return st->registered || st->violations;
}

static int st_demand(const tck_stage *st, uint64_t arg)
{
    return st->subs[0].requested >= arg || st->violations;
}

static int st_first_request(const tck_stage *st, uint64_t arg)
{
    (void)arg;
    return st->subs[0].calls > 0 || st->violations;
}

static int st_cancelled(const tck_stage *st, uint64_t arg)
{
    return st->subs[arg].cancels > 0;
}

static int st_items(const tck_stage *st, uint64_t arg)
{
    return st->nexts >= arg || st->completes || st->errors || st->violations;
}

static int st_terminal(const tck_stage *st, uint64_t arg)
{
    (void)arg;
    return st->completes || st->errors || st->violations;
}

/* ------------------------------------------------------------------------
 * The whitebox probe (public) */

void rill_tck_probe_register_on_subscribe(rill_tck_probe *p,
                                          void (*trigger_request)(void *puppet, uint64_t n),
                                          void (*signal_cancel)(void *puppet), void *puppet)
{
    if (!p)
        return;
    tck_stage *st = p->st;
    pthread_mutex_lock(&st->mu);
    if (!trigger_request || !signal_cancel) {
        violate(st, "rill_tck_probe_register_on_subscribe without trigger_request or signal_cancel");
    } else if (!st->registered) {
        st->trigger = trigger_request;
        st->cancel = signal_cancel;
        st->puppet = puppet;
        st->registered = 1;
    }
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

void rill_tck_probe_register_on_next(rill_tck_probe *p, void *item)
{
    if (!p)
        return;
    tck_stage *st = p->st;
    pthread_mutex_lock(&st->mu);
    if (st->completes || st->errors)
        violate(st, "rule 1.7: the probe was told of on_next after a terminal signal");
    if (st->nexts < TCK_ITEMS)
        st->items[st->nexts] = item;
    st->nexts++;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

void rill_tck_probe_register_on_error(rill_tck_probe *p, const rill_error *e)
{
    if (!p)
        return;
    tck_stage *st = p->st;
    pthread_mutex_lock(&st->mu);
    if (st->completes || st->errors)
        violate(st, "rule 1.7: the probe was told of a second terminal signal (on_error)");
    if (st->errors++ == 0) {
        st->error_code = rill_error_code(e);
        snprintf(st->error_msg, sizeof st->error_msg, "%s", e ? rill_error_message(e) : "(NULL)");
    }
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

void rill_tck_probe_register_on_complete(rill_tck_probe *p)
{
    if (!p)
        return;
    tck_stage *st = p->st;
    pthread_mutex_lock(&st->mu);
    if (st->completes || st->errors)
        violate(st, "rule 1.7: the probe was told of a second terminal signal (on_complete)");
    st->completes++;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

/* ------------------------------------------------------------------------
 * The kit's upstream (processor verification): single-use, unicast */

typedef struct tck_upstream {
    rill_publisher base;
    tck_stage *st;           /* reference */
} tck_upstream;

static void upstream_subscribe(rill_publisher *self, rill_subscriber *s)
{
    tck_stage *st = ((tck_upstream *)self)->st;
    pthread_mutex_lock(&st->mu);
    int take = !st->sub && !st->closed;
    if (take)
        st->sub = s;
    pthread_mutex_unlock(&st->mu);
    if (!take) {
        rill_reject(s, EBUSY, "rill tck: the kit's upstream takes one subscriber, during its test");
        return;
    }
    rill_deliver_subscribe(s, &st->subs[0].base);
    pthread_mutex_lock(&st->mu);
    st->subscribed = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

static void upstream_destroy(rill_publisher *self)
{
    tck_upstream *up = (tck_upstream *)self;
    stage_unref(up->st);
    free(up);
}

static const struct rill_publisher_ops upstream_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = upstream_subscribe,
    .destroy = upstream_destroy,
};

/* ------------------------------------------------------------------------
 * A run: one verification, test after test, and each test's verdict */

enum mode { BLACKBOX, WHITEBOX, PROCESSOR };

typedef struct tck_srun {
    enum mode mode;
    const rill_tck_blackbox_options *bo;
    const rill_tck_whitebox_options *wo;
    const rill_tck_processor_options *po;
    void *ctx;
    void *(*create_element)(void *ctx, uint64_t i);
    uint64_t timeout, quiet;
    rill_tck_status status;
    char reason[TCK_REASON];
    tck_stage *st;           /* this test's stage */
    tck_stage *stages;       /* every stage of the run, freed at its end */
    uint64_t element;        /* the next item's index */
    tck_probe *down;         /* processor: the kit's downstream subscriber */
    int down_attached;
    rill_publisher *op;      /* processor: apply(the kit's upstream) */
} tck_srun;

static void set_verdict(tck_srun *t, rill_tck_status st, const char *fmt, va_list ap)
{
    if (t->status != RILL_TCK_PASSED)
        return;   /* the first verdict stands */
    t->status = st;
    vsnprintf(t->reason, sizeof t->reason, fmt, ap);
}

/* Fails the test (unless it already has a verdict); returns 0. */
static int fail(tck_srun *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_verdict(t, RILL_TCK_FAILED, fmt, ap);
    va_end(ap);
    return 0;
}

static void skip(tck_srun *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_verdict(t, RILL_TCK_SKIPPED, fmt, ap);
    va_end(ap);
}

/* A remark on a passing test (how the C version differs from the JVM one). */
static void note(tck_srun *t, const char *text)
{
    if (t->status == RILL_TCK_PASSED && t->reason[0] == '\0')
        snprintf(t->reason, sizeof t->reason, "%s", text);
}

static const char *subject(const tck_srun *t)
{
    return t->mode == PROCESSOR ? "the operator" : "the subscriber";
}

/* Fails the test with the stage's first breach, if it saw one. */
static int check_stage(tck_srun *t)
{
    tck_stage *st = t->st;
    if (!st)
        return 1;
    pthread_mutex_lock(&st->mu);
    int bad = st->violations;
    char text[sizeof st->violation];
    memcpy(text, st->violation, sizeof text);
    pthread_mutex_unlock(&st->mu);
    return bad ? fail(t, "%s", text) : 1;
}

/* The same for the kit's downstream subscriber (processor). */
static int check_down(tck_srun *t)
{
    tck_probe *p = t->down;
    if (!p)
        return 1;
    pthread_mutex_lock(&p->mu);
    int bad = p->violations;
    char text[sizeof p->violation];
    memcpy(text, p->violation, sizeof text);
    pthread_mutex_unlock(&p->mu);
    return bad ? fail(t, "downstream: %s", text) : 1;
}

static int check_all(tck_srun *t)
{
    return check_stage(t) && check_down(t);
}

static tck_stage *new_stage(tck_srun *t, int refs)
{
    tck_stage *st = stage_new(refs);
    if (!st) {
        fail(t, "kit error: out of memory");
        return NULL;
    }
    st->next = t->stages;   /* the run's reference */
    t->stages = st;
    return t->st = st;
}

static rill_subscriber *stage_subscriber(tck_stage *st)
{
    pthread_mutex_lock(&st->mu);
    rill_subscriber *s = st->sub;
    pthread_mutex_unlock(&st->mu);
    return s;
}

static uint64_t stage_requested(tck_stage *st, int i)
{
    pthread_mutex_lock(&st->mu);
    uint64_t n = st->subs[i].requested;
    pthread_mutex_unlock(&st->mu);
    return n;
}

static int stage_cancelled(tck_stage *st, int i)
{
    pthread_mutex_lock(&st->mu);
    int c = st->subs[i].cancels;
    pthread_mutex_unlock(&st->mu);
    return c;
}

/* ------------------------------------------------------------------------
 * The kit's signals, all on the verifying thread */

static void *next_element(tck_srun *t)
{
    uint64_t i = t->element++;
    return t->create_element ? t->create_element(t->ctx, i) : (void *)(uintptr_t)(i + 1);
}

/* on_subscribe with the first (second = 0) or second subscription. */
static void kit_subscribe(tck_srun *t, int second)
{
    tck_stage *st = t->st;
    rill_deliver_subscribe(stage_subscriber(st), &st->subs[second].base);
    pthread_mutex_lock(&st->mu);
    st->subscribed = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

/* One item; the caller has checked that the subscriber asked for it. */
static void *kit_next(tck_srun *t)
{
    tck_stage *st = t->st;
    void *item = next_element(t);
    pthread_mutex_lock(&st->mu);
    rill_subscriber *s = st->sub;
    st->sent++;   /* before the call: a request from inside on_next sees it */
    pthread_mutex_unlock(&st->mu);
    rill_deliver_next(s, item);
    return item;
}

static void kit_terminal(tck_srun *t, int error)
{
    tck_stage *st = t->st;
    pthread_mutex_lock(&st->mu);
    rill_subscriber *s = st->sub;
    st->terminated = 1;
    pthread_mutex_unlock(&st->mu);
    st->terminal_name = error ? "on_error" : "on_complete";
    atomic_store(&st->in_terminal, self_id());   /* seq_cst: seen by our own calls only */
    if (error)
        rill_deliver_error_code(s, KIT_ERROR, kit_error_message);
    else
        rill_deliver_complete(s);
    atomic_store(&st->in_terminal, 0);
}

static void kit_release(tck_srun *t)
{
    tck_stage *st = t->st;
    rill_deliver_release(stage_subscriber(st));
    pthread_mutex_lock(&st->mu);
    st->released = 1;   /* after it returned: calls made during on_release are valid */
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

/* on_complete, unless the subscriber cancelled (then nothing may follow). */
static void kit_complete_unless_cancelled(tck_srun *t)
{
    if (!stage_cancelled(t->st, 0))
        kit_terminal(t, 0);
}

/* Ends the kit's side of the test: on_complete if the subscriber neither
 * cancelled nor got a terminal signal, then on_release. Nothing is released
 * while an on_subscribe (on another thread, processor) has not returned. */
static void end_stage(tck_srun *t)
{
    tck_stage *st = t->st;
    if (!st)
        return;
    pthread_mutex_lock(&st->mu);
    st->closed = 1;   /* from now on the upstream refuses newcomers */
    int has = st->sub != NULL;
    pthread_mutex_unlock(&st->mu);
    if (has)
        stage_wait(st, st_subscribed, 0, t->timeout);
    pthread_mutex_lock(&st->mu);
    int pending = st->sub && !st->subscribed;
    int live = st->sub && st->subscribed && !st->released;
    int ended = st->subs[0].cancels || st->terminated;
    pthread_mutex_unlock(&st->mu);
    if (pending) {
        fail(t, "on_subscribe did not return within %llu ms: the kit cannot release %s",
             MS(t->timeout), subject(t));
        return;
    }
    if (!live)
        return;
    if (!ended)
        kit_terminal(t, 0);
    kit_release(t);
}

/* ------------------------------------------------------------------------
 * Setting a test up */

/* Blackbox and whitebox: a fresh subscriber from the factory, and (when
 * `subscribe`) on_subscribe with the kit's subscription. */
static int sub_setup(tck_srun *t, int subscribe)
{
    tck_stage *st = new_stage(t, 1);
    if (!st)
        return 0;
    errno = 0;
    rill_subscriber *s = t->mode == BLACKBOX ? t->bo->create(t->ctx)
                                             : t->wo->create(t->ctx, &st->probe);
    if (!s)
        return fail(t, "create() returned NULL (errno %d)", errno);
    pthread_mutex_lock(&st->mu);
    st->sub = s;
    pthread_mutex_unlock(&st->mu);
    if (subscribe)
        kit_subscribe(t, 0);
    return 1;
}

static int down_subscribed(const tck_probe *p, uint64_t arg)
{
    (void)arg;
    return p->subscribes > 0 || p->violations;
}

/* Processor: the kit's subscriber downstream of apply(the kit's upstream);
 * returns once both sides have seen on_subscribe. */
static int proc_setup(tck_srun *t)
{
    tck_stage *st = new_stage(t, 2);   /* the run's reference, and the upstream's */
    if (!st)
        return 0;
    tck_upstream *up = calloc(1, sizeof *up);
    if (!up) {
        stage_unref(st);
        return fail(t, "kit error: out of memory");
    }
    rill_publisher_init(&up->base, &upstream_ops);
    up->st = st;
    errno = 0;
    t->op = t->po->apply(t->ctx, &up->base);
    if (!t->op)
        return fail(t, "apply() returned NULL (errno %d)", errno);
    t->down = rill__tck_probe_new();
    if (!t->down)
        return fail(t, "kit error: out of memory");
    t->down_attached = 1;
    rill_subscribe(t->op, &t->down->base);
    if (!stage_wait(st, st_subscribed, 0, t->timeout))
        return fail(t, "the operator did not subscribe to its upstream within %llu ms",
                    MS(t->timeout));
    if (!rill__tck_probe_wait(t->down, down_subscribed, 0, t->timeout))
        return fail(t, "rule 1.9: no on_subscribe downstream within %llu ms", MS(t->timeout));
    return check_all(t);
}

/* The TCK's subscriberTest: set up, and (whitebox) wait for the puppet. */
static int wb_setup(tck_srun *t)
{
    if (t->mode == PROCESSOR)
        return proc_setup(t);
    if (!sub_setup(t, 1))
        return 0;
    if (!stage_wait(t->st, st_registered, 0, t->timeout))
        return fail(t, "the subscriber did not call rill_tck_probe_register_on_subscribe "
                       "within %llu ms of on_subscribe", MS(t->timeout));
    return check_stage(t);
}

/* ------------------------------------------------------------------------
 * The face: the puppet the kit drives and the probe it reads (the user's
 * subscriber and its rill_tck_probe, or the kit's downstream subscriber) */

static void face_request(tck_srun *t, uint64_t n)
{
    if (t->mode == PROCESSOR) {
        rill__tck_probe_request(t->down, n);
        return;
    }
    tck_stage *st = t->st;
    pthread_mutex_lock(&st->mu);
    void (*fn)(void *, uint64_t) = st->trigger;
    void *puppet = st->puppet;
    pthread_mutex_unlock(&st->mu);
    if (fn)
        fn(puppet, n);
}

static void face_cancel(tck_srun *t)
{
    if (t->mode == PROCESSOR) {
        rill__tck_probe_cancel(t->down);
        return;
    }
    tck_stage *st = t->st;
    pthread_mutex_lock(&st->mu);
    void (*fn)(void *) = st->cancel;
    void *puppet = st->puppet;
    pthread_mutex_unlock(&st->mu);
    if (fn)
        fn(puppet);
}

/* What the face has seen. */
typedef struct seen {
    uint64_t nexts;
    int completes, errors, error_code;
    char error_msg[160];
} seen;

static int down_items(const tck_probe *p, uint64_t arg)
{
    return p->nexts >= arg || p->completes || p->errors || p->releases || p->violations;
}

static int down_terminal(const tck_probe *p, uint64_t arg)
{
    (void)arg;
    return p->completes || p->errors || p->releases || p->violations;
}

/* Waits (up to timeout_ns) for `items` items, or with items == 0 for a
 * terminal signal, then returns a snapshot; timeout_ns == 0 only looks. */
static seen face_wait(tck_srun *t, uint64_t items, uint64_t timeout_ns)
{
    seen s;
    if (t->mode == PROCESSOR) {
        tck_probe *p = t->down;
        rill__tck_probe_wait(p, items ? down_items : down_terminal, items, timeout_ns);
        pthread_mutex_lock(&p->mu);
        s = (seen){ p->nexts, p->completes, p->errors, p->error_code, "" };
        memcpy(s.error_msg, p->error_msg, sizeof s.error_msg);
        pthread_mutex_unlock(&p->mu);
    } else {
        tck_stage *st = t->st;
        stage_wait(st, items ? st_items : st_terminal, items, timeout_ns);
        pthread_mutex_lock(&st->mu);
        s = (seen){ st->nexts, st->completes, st->errors, st->error_code, "" };
        memcpy(s.error_msg, st->error_msg, sizeof s.error_msg);
        pthread_mutex_unlock(&st->mu);
    }
    return s;
}

/* The i-th item the face saw (i < TCK_ITEMS, and seen). */
static void *face_item(tck_srun *t, uint64_t i)
{
    pthread_mutex_t *mu = t->mode == PROCESSOR ? &t->down->mu : &t->st->mu;
    pthread_mutex_lock(mu);
    void *item = t->mode == PROCESSOR ? t->down->items[i] : t->st->items[i];
    pthread_mutex_unlock(mu);
    return item;
}

static const char *where(const tck_srun *t)
{
    return t->mode == PROCESSOR ? "downstream" : "at the probe";
}

/* ------------------------------------------------------------------------
 * Expectations */

/* Waits until the kit's subscription has been asked for k items in all. */
static int expect_demand(tck_srun *t, uint64_t k, const char *after)
{
    stage_wait(t->st, st_demand, k, t->timeout);
    if (!check_all(t))
        return 0;
    uint64_t got = stage_requested(t->st, 0);
    if (got < k)
        return fail(t, "rule 2.1: %s, %s requested %llu item(s) from the kit's subscription "
                       "within %llu ms; %llu needed", after, subject(t), ULL(got),
                    MS(t->timeout), ULL(k));
    return 1;
}

/* Waits until the face has seen item #k (from 1), and checks it is `item`. */
static int expect_next(tck_srun *t, uint64_t k, void *item)
{
    seen s = face_wait(t, k, t->timeout);
    if (!check_all(t))
        return 0;
    if (s.nexts < k)
        return fail(t, "expected on_next #%llu (the item the kit sent) %s within %llu ms; "
                       "saw %llu", ULL(k), where(t), MS(t->timeout), ULL(s.nexts));
    void *got = k <= TCK_ITEMS ? face_item(t, k - 1) : item;
    if (got != item)
        return fail(t, "on_next #%llu %s carried %p, not the item the kit sent (%p): items must "
                       "pass unchanged and in order", ULL(k), where(t), got, item);
    return 1;
}

/* Sends the next item (the caller has checked the demand) and expects it. */
static int send_expect(tck_srun *t, uint64_t k)
{
    return expect_next(t, k, kit_next(t));
}

/* Waits for the terminal signal the kit sent to show at the face. */
static int expect_terminal(tck_srun *t, int error)
{
    seen s = face_wait(t, 0, t->timeout);
    if (!check_all(t))
        return 0;
    if (!error && s.completes != 1)
        return fail(t, "rule 2.9: the kit signalled on_complete; expected it %s within %llu ms, "
                       "saw %d on_complete, %d on_error", where(t), MS(t->timeout), s.completes,
                    s.errors);
    if (error && s.errors != 1)
        return fail(t, "rule 2.10: the kit signalled on_error; expected it %s within %llu ms, "
                       "saw %d on_error, %d on_complete", where(t), MS(t->timeout), s.errors,
                    s.completes);
    if (error && s.error_code != KIT_ERROR)
        return fail(t, "on_error(%d: %s) %s, not the kit's error (%d: %s)", s.error_code,
                    s.error_msg, where(t), KIT_ERROR, kit_error_message);
    return 1;
}

/* Watches for quiet_ns: the face must see no new signal (the TCK's expectNone). */
static int expect_none(tck_srun *t, const char *after)
{
    seen a = face_wait(t, 0, 0);
    rill__tck_sleep_ns(t->quiet);
    seen b = face_wait(t, 0, 0);
    if (!check_all(t))
        return 0;
    if (b.nexts != a.nexts || b.completes + b.errors != a.completes + a.errors)
        return fail(t, "%s, nothing may arrive %s, yet %llu on_next and %d terminal signal(s) did",
                    after, where(t), ULL(b.nexts - a.nexts),
                    b.completes + b.errors - a.completes - a.errors);
    return 1;
}

/* The TCK's verifyNoAsyncErrors: give stray signals quiet_ns to show. */
static void settle(tck_srun *t)
{
    rill__tck_sleep_ns(t->quiet);
    check_all(t);
}

static int expect_cancel(tck_srun *t, int i, const char *fmt)
{
    if (stage_wait(t->st, st_cancelled, (uint64_t)i, t->timeout))
        return 1;
    check_all(t);
    return fail(t, fmt, MS(t->timeout));
}

static int down_breached(tck_srun *t)
{
    if (!t->down)
        return 0;
    pthread_mutex_lock(&t->down->mu);
    int bad = t->down->violations;
    pthread_mutex_unlock(&t->down->mu);
    return bad;
}

/* Rule 2.5: the second subscription must be cancelled. A breach seen
 * meanwhile ends the wait: requesting from the second subscription
 * (blackbox), or passing the second on_subscribe downstream (an operator:
 * that breaks rule 1.9 on its publisher face) has failed the test already. */
static int st_second_cancelled(const tck_stage *st, uint64_t arg)
{
    (void)arg;
    return st->subs[1].cancels > 0 || st->violations;
}

static void expect_second_cancelled(tck_srun *t)
{
    uint64_t deadline = rill__tck_now_ns() + t->timeout, slice = t->quiet / 4 + 1;
    while (!stage_wait(t->st, st_second_cancelled, 0, slice) && !down_breached(t)
           && rill__tck_now_ns() < deadline)
        ;
    if (stage_cancelled(t->st, 1) || !check_stage(t))
        return;
    if (down_breached(t)) {
        pthread_mutex_lock(&t->down->mu);
        fail(t, "rule 2.5: a second on_subscribe was not cancelled; downstream: %s",
             t->down->violation);
        pthread_mutex_unlock(&t->down->mu);
        return;
    }
    fail(t, "rule 2.5: a second on_subscribe, and its subscription was not cancelled within "
            "%llu ms", MS(t->timeout));
}

/* ------------------------------------------------------------------------
 * Tests every verification shares */

static void untested(tck_srun *t)
{
    skip(t, "untested in the TCK too (no way to check it from outside)");
}

static void null_subscription(tck_srun *t)
{
    skip(t, "C has no NullPointerException, and rill never hands a subscriber a NULL "
            "subscription: a publisher that cannot serve gives a do-nothing subscription, then "
            "on_error (rill_reject; rill_subscribe(NULL, s) does the same). Publisher side: "
            "required_spec109_subscribeThrowNPEOnNullSubscriber");
}

static void null_item(tck_srun *t)
{
    skip(t, "NULL is a valid item in rill (items are words: rill_range(0, n) emits (void *)0 "
            "first), so on_next(NULL) is an ordinary item, not an error");
}

static void null_error(tck_srun *t)
{
    skip(t, "C has no NullPointerException, and rill never signals on_error with NULL: "
            "rill_deliver_error_code falls back to an ENOMEM error when it cannot make one");
}

/* ------------------------------------------------------------------------
 * Blackbox tests */

static void bb_trigger(tck_srun *t)
{
    if (t->bo->trigger_request)
        t->bo->trigger_request(t->ctx, stage_subscriber(t->st));
}

static int bb_wait_request(tck_srun *t)
{
    stage_wait(t->st, st_first_request, 0, t->timeout);
    if (!check_stage(t))
        return 0;
    pthread_mutex_lock(&t->st->mu);
    uint64_t calls = t->st->subs[0].calls;
    pthread_mutex_unlock(&t->st->mu);
    if (calls == 0)
        return fail(t, "rule 2.1: no request within %llu ms of on_subscribe%s", MS(t->timeout),
                    t->bo->trigger_request ? " and trigger_request" : " (no trigger_request given)");
    return 1;
}

static void bb_spec201(tck_srun *t)
{
    if (!sub_setup(t, 1))
        return;
    bb_trigger(t);
    if (!bb_wait_request(t))
        return;
    /* As many items as it asks for (also from inside on_next), up to 512,
     * then on_complete (rule 1.2 allows ending early). */
    for (;;) {
        tck_stage *st = t->st;
        pthread_mutex_lock(&st->mu);
        int more = !st->subs[0].cancels && st->sent < st->subs[0].requested
                   && st->sent < BLACKBOX_MAX_ITEMS;
        pthread_mutex_unlock(&st->mu);
        if (!more)
            break;
        kit_next(t);
    }
    kit_complete_unless_cancelled(t);
    check_stage(t);
}

static void bb_spec203(tck_srun *t, int error)
{
    if (!sub_setup(t, 1))
        return;
    kit_terminal(t, error);
    if (check_stage(t))
        note(t, error ? "C: calls on the thread inside on_error are caught (the JVM reads the stack)"
                      : "C: calls on the thread inside on_complete are caught (the JVM reads the "
                        "stack)");
}

static void bb_spec203_complete(tck_srun *t)
{
    bb_spec203(t, 0);
}

static void bb_spec203_error(tck_srun *t)
{
    bb_spec203(t, 1);
}

static void bb_spec205(tck_srun *t)
{
    if (!sub_setup(t, 1))
        return;
    pthread_mutex_lock(&t->st->mu);
    t->st->second_requests_breach = 1;
    pthread_mutex_unlock(&t->st->mu);
    kit_subscribe(t, 1);
    expect_second_cancelled(t);
    kit_complete_unless_cancelled(t);
}

static void bb_terminal(tck_srun *t, int error, int request_first)
{
    if (!sub_setup(t, 1))
        return;
    if (request_first) {
        bb_trigger(t);
        if (!bb_wait_request(t))
            return;
    }
    kit_terminal(t, error);
    check_stage(t);
}

static void bb_spec209_with(tck_srun *t)
{
    bb_terminal(t, 0, 1);
}

static void bb_spec209_without(tck_srun *t)
{
    bb_terminal(t, 0, 0);
}

static void bb_spec210_with(tck_srun *t)
{
    bb_terminal(t, 1, 1);
}

static void bb_spec210_without(tck_srun *t)
{
    bb_terminal(t, 1, 0);
}

static void bb_untested_208(tck_srun *t)
{
    skip(t, "untested in the blackbox TCK: it needs the subscriber to cancel on demand "
            "(the whitebox verification tests it)");
}

static void bb_untested_308(tck_srun *t)
{
    skip(t, "untested in the blackbox TCK: producing the requested items is the publisher's "
            "part (the whitebox verification tests it)");
}

/* ------------------------------------------------------------------------
 * Whitebox tests: the user's subscriber, or an operator with the kit's
 * subscriber downstream as puppet and probe */

static void wb_happy_path(tck_srun *t)
{
    if (!wb_setup(t))
        return;
    face_request(t, 1);
    face_request(t, 1);
    if (!expect_demand(t, 1, "after request(1) twice") || !send_expect(t, 1))
        return;
    face_request(t, 1);
    if (!expect_demand(t, 2, "after a third request(1)") || !send_expect(t, 2))
        return;
    face_cancel(t);
    if (!expect_cancel(t, 0, t->mode == PROCESSOR
                                 ? "rule 2.6: downstream cancelled, and the operator did not "
                                   "cancel its upstream subscription within %llu ms"
                                 : "signal_cancel made no cancel at the kit's subscription "
                                   "within %llu ms"))
        return;
    settle(t);
}

static void wb_spec201(tck_srun *t)
{
    if (!wb_setup(t))
        return;
    face_request(t, 1);
    if (expect_demand(t, 1, "after request(1)"))
        kit_next(t);
}

/* The TCK's "without setup": on_subscribe, then at once the terminal signal. */
static void wb_spec203(tck_srun *t, int error)
{
    if (t->mode == PROCESSOR) {
        if (!proc_setup(t))
            return;
        t->down->error_ok = error;
    } else if (!sub_setup(t, 1)) {
        return;
    }
    kit_terminal(t, error);
    if (check_all(t))
        note(t, error ? "C: calls on the thread inside on_error are caught (the JVM reads the stack)"
                      : "C: calls on the thread inside on_complete are caught (the JVM reads the "
                        "stack)");
}

static void wb_spec203_complete(tck_srun *t)
{
    wb_spec203(t, 0);
}

static void wb_spec203_error(tck_srun *t)
{
    wb_spec203(t, 1);
}

static void wb_spec205(tck_srun *t)
{
    if (!wb_setup(t))
        return;
    kit_subscribe(t, 1);
    expect_second_cancelled(t);
    settle(t);
}

static void wb_spec208(tck_srun *t)
{
    if (!wb_setup(t))
        return;
    face_request(t, 1);
    face_cancel(t);
    /* An item may still be in flight after cancel (rule 2.8), as long as it
     * was requested: send one if the request reached the kit. */
    if (stage_wait(t->st, st_demand, 1, t->quiet) && check_all(t))
        kit_next(t);
    else
        note(t, "no request was pending when the cancel came, so no on_next could follow it");
    face_request(t, 1);
    face_request(t, 1);
    settle(t);
}

static void wb_terminal(tck_srun *t, int error, int requests)
{
    if (!wb_setup(t))
        return;
    for (int i = 0; i < requests; i++)
        face_request(t, 1);
    if (t->mode == PROCESSOR)
        t->down->error_ok = error;
    kit_terminal(t, error);
    if (expect_terminal(t, error) && !error)
        settle(t);
}

static void wb_spec209_with(tck_srun *t)
{
    wb_terminal(t, 0, 1);
}

static void wb_spec209_without(tck_srun *t)
{
    wb_terminal(t, 0, 0);
}

static void wb_spec210_with(tck_srun *t)
{
    wb_terminal(t, 1, 2);
}

static void wb_spec210_without(tck_srun *t)
{
    wb_terminal(t, 1, 0);
}

static void wb_spec308(tck_srun *t)
{
    if (!wb_setup(t))
        return;
    face_request(t, 2);
    if (!expect_demand(t, 1, "after request(2)") || !send_expect(t, 1)
        || !expect_demand(t, 2, "after request(2)") || !send_expect(t, 2)
        || !expect_none(t, "rule 3.8: after request(2) and its two items"))
        return;
    face_request(t, 3);
    settle(t);
}

/* ------------------------------------------------------------------------
 * Processor-only tests */

static void multicast_only(tck_srun *t)
{
    skip(t, "needs two subscribers sharing one upstream (a multicast processor): a rill "
            "operator is cold, and each subscription subscribes upstream anew (the TCK skips "
            "it too when maxSupportedSubscribers is 1)");
}

static void p_immediate_error(tck_srun *t)
{
    if (!proc_setup(t))
        return;
    t->down->error_ok = 1;
    kit_terminal(t, 1);   /* no request downstream: it must pass on at once (rule 4.2) */
    expect_terminal(t, 1);
}

/* Forty items, within the demand the operator signals upstream, while
 * downstream asks for twenty at a time: all must arrive downstream,
 * unchanged and in order, then on_complete. */
static void p_in_order(tck_srun *t)
{
    void *sent[ORDER_ITEMS];
    if (!proc_setup(t))
        return;
    face_request(t, ORDER_ITEMS / 2);
    for (uint64_t i = 0; i < ORDER_ITEMS; i++) {
        if (i == ORDER_ITEMS / 2)
            face_request(t, ORDER_ITEMS / 2);
        if (!expect_demand(t, i + 1, "with items requested downstream"))
            return;
        sent[i] = kit_next(t);
    }
    for (uint64_t i = 0; i < ORDER_ITEMS; i++)
        if (!expect_next(t, i + 1, sent[i]))
            return;
    kit_terminal(t, 0);
    expect_terminal(t, 0);
}

static uint64_t down_requested(tck_srun *t)
{
    pthread_mutex_lock(&t->down->mu);
    uint64_t n = t->down->requested;
    pthread_mutex_unlock(&t->down->mu);
    return n;
}

/* Total requested upstream <= total requested downstream + prefetch. */
static int check_bound(tck_srun *t, const char *when)
{
    if (!check_all(t))
        return 0;
    uint64_t up = stage_requested(t->st, 0), down = down_requested(t);
    if (up > sat_add(down, t->po->prefetch))
        return fail(t, "%s: %llu requested upstream for %llu requested downstream, more than the "
                       "declared prefetch (%llu) allows", when, ULL(up), ULL(down),
                    ULL(t->po->prefetch));
    return 1;
}

/* Sends what the operator asks for upstream (up to FEED_CAP items in all),
 * waiting quiet_ns for each further request. */
static void feed(tck_srun *t)
{
    for (;;) {
        pthread_mutex_lock(&t->st->mu);
        uint64_t sent = t->st->sent;
        pthread_mutex_unlock(&t->st->mu);
        if (sent >= FEED_CAP)
            return;
        stage_wait(t->st, st_demand, sent + 1, t->quiet);
        if (stage_requested(t->st, 0) <= sent)
            return;   /* no further request (or a breach: the caller checks) */
        kit_next(t);
    }
}

static void p_demand_bound(tck_srun *t)
{
    if (t->po->prefetch == RILL_UNBOUNDED) {
        skip(t, "prefetch is RILL_UNBOUNDED: no bound declared (the rules set none: a processor "
                "may request more upstream than its downstream asked for)");
        return;
    }
    if (!proc_setup(t))
        return;
    rill__tck_sleep_ns(t->quiet);
    if (!check_bound(t, "before any request downstream"))
        return;
    face_request(t, 3);
    feed(t);
    if (!check_bound(t, "after request(3) downstream"))
        return;
    face_request(t, 20);
    feed(t);
    check_bound(t, "after request(3) and request(20) downstream");
}

/* ------------------------------------------------------------------------
 * Ending a test */

static void finish_processor(tck_srun *t)
{
    tck_probe *p = t->down;
    if (p && t->down_attached && !rill__tck_probe_wait(p, rill__tck_probe_released, 0, 0))
        rill__tck_probe_cancel(p);
    end_stage(t);
    if (p && t->down_attached) {
        if (!rill__tck_probe_wait(p, rill__tck_probe_released, 0, t->timeout))
            fail(t, "the operator did not release its downstream subscriber within %llu ms of "
                    "the kit's cancel and release", MS(t->timeout));
        check_down(t);
        pthread_mutex_lock(&p->mu);
        int unexpected = p->errors && !p->error_ok;
        pthread_mutex_unlock(&p->mu);
        char d[256];
        if (unexpected)
            fail(t, "unexpected on_error downstream: %s", rill__tck_probe_describe(p, d, sizeof d));
        rill__tck_probe_unref(p);
    } else if (p) {   /* never subscribed: both references are the kit's */
        rill__tck_probe_unref(p);
        rill__tck_probe_unref(p);
    }
    check_stage(t);
    rill_publisher_unref(t->op);
    t->down = NULL;
    t->down_attached = 0;
    t->op = NULL;
}

static void finish(tck_srun *t)
{
    if (t->mode == PROCESSOR) {
        finish_processor(t);
    } else {
        end_stage(t);
        check_stage(t);
    }
    t->st = NULL;
    t->element = 0;
}

/* ------------------------------------------------------------------------
 * The tables of tests (names as in the TCK) */

typedef struct stest {
    const char *name;
    void (*run)(tck_srun *t);
} stest;

#define COUNT(a) (sizeof (a) / sizeof (a)[0])

static const stest blackbox_tests[] = {
    { "required_spec201_blackbox_mustSignalDemandViaSubscriptionRequest", bb_spec201 },
    { "untested_spec202_blackbox_shouldAsynchronouslyDispatch", untested },
    { "required_spec203_blackbox_mustNotCallMethodsOnSubscriptionOrPublisherInOnComplete",
      bb_spec203_complete },
    { "required_spec203_blackbox_mustNotCallMethodsOnSubscriptionOrPublisherInOnError",
      bb_spec203_error },
    { "untested_spec204_blackbox_mustConsiderTheSubscriptionAsCancelledInAfterRecievingOnCompleteOrOnError",
      untested },
    { "required_spec205_blackbox_mustCallSubscriptionCancelIfItAlreadyHasAnSubscriptionAndReceivesAnotherOnSubscribeSignal",
      bb_spec205 },
    { "untested_spec206_blackbox_mustCallSubscriptionCancelIfItIsNoLongerValid", untested },
    { "untested_spec207_blackbox_mustEnsureAllCallsOnItsSubscriptionTakePlaceFromTheSameThreadOrTakeCareOfSynchronization",
      untested },
    { "untested_spec208_blackbox_mustBePreparedToReceiveOnNextSignalsAfterHavingCalledSubscriptionCancel",
      bb_untested_208 },
    { "required_spec209_blackbox_mustBePreparedToReceiveAnOnCompleteSignalWithPrecedingRequestCall",
      bb_spec209_with },
    { "required_spec209_blackbox_mustBePreparedToReceiveAnOnCompleteSignalWithoutPrecedingRequestCall",
      bb_spec209_without },
    { "required_spec210_blackbox_mustBePreparedToReceiveAnOnErrorSignalWithPrecedingRequestCall",
      bb_spec210_with },
    { "required_spec210_blackbox_mustBePreparedToReceiveAnOnErrorSignalWithoutPrecedingRequestCall",
      bb_spec210_without },
    { "untested_spec211_blackbox_mustMakeSureThatAllCallsOnItsMethodsHappenBeforeTheProcessingOfTheRespectiveEvents",
      untested },
    { "untested_spec212_blackbox_mustNotCallOnSubscribeMoreThanOnceBasedOnObjectEquality",
      untested },
    { "untested_spec213_blackbox_failingOnSignalInvocation", untested },
    { "required_spec213_blackbox_onSubscribe_mustThrowNullPointerExceptionWhenParametersAreNull",
      null_subscription },
    { "required_spec213_blackbox_onNext_mustThrowNullPointerExceptionWhenParametersAreNull",
      null_item },
    { "required_spec213_blackbox_onError_mustThrowNullPointerExceptionWhenParametersAreNull",
      null_error },
    { "untested_spec301_blackbox_mustNotBeCalledOutsideSubscriberContext", untested },
    { "untested_spec308_blackbox_requestMustRegisterGivenNumberElementsToBeProduced",
      bb_untested_308 },
    { "untested_spec310_blackbox_requestMaySynchronouslyCallOnNextOnSubscriber", untested },
    { "untested_spec311_blackbox_requestMaySynchronouslyCallOnCompleteOrOnError", untested },
    { "untested_spec314_blackbox_cancelMayCauseThePublisherToShutdownIfNoOtherSubscriptionExists",
      untested },
    { "untested_spec315_blackbox_cancelMustNotThrowExceptionAndMustSignalOnError", untested },
    { "untested_spec316_blackbox_requestMustNotThrowExceptionAndMustOnErrorTheSubscriber",
      untested },
};

/* Also the subscriber half of processor verification (IdentityProcessorVerification
 * delegates to these, under the same names). */
static const stest whitebox_tests[] = {
    { "required_exerciseWhiteboxHappyPath", wb_happy_path },
    { "required_spec201_mustSignalDemandViaSubscriptionRequest", wb_spec201 },
    { "untested_spec202_shouldAsynchronouslyDispatch", untested },
    { "required_spec203_mustNotCallMethodsOnSubscriptionOrPublisherInOnComplete",
      wb_spec203_complete },
    { "required_spec203_mustNotCallMethodsOnSubscriptionOrPublisherInOnError", wb_spec203_error },
    { "untested_spec204_mustConsiderTheSubscriptionAsCancelledInAfterRecievingOnCompleteOrOnError",
      untested },
    { "required_spec205_mustCallSubscriptionCancelIfItAlreadyHasAnSubscriptionAndReceivesAnotherOnSubscribeSignal",
      wb_spec205 },
    { "untested_spec206_mustCallSubscriptionCancelIfItIsNoLongerValid", untested },
    { "untested_spec207_mustEnsureAllCallsOnItsSubscriptionTakePlaceFromTheSameThreadOrTakeCareOfSynchronization",
      untested },
    { "required_spec208_mustBePreparedToReceiveOnNextSignalsAfterHavingCalledSubscriptionCancel",
      wb_spec208 },
    { "required_spec209_mustBePreparedToReceiveAnOnCompleteSignalWithPrecedingRequestCall",
      wb_spec209_with },
    { "required_spec209_mustBePreparedToReceiveAnOnCompleteSignalWithoutPrecedingRequestCall",
      wb_spec209_without },
    { "required_spec210_mustBePreparedToReceiveAnOnErrorSignalWithPrecedingRequestCall",
      wb_spec210_with },
    { "required_spec210_mustBePreparedToReceiveAnOnErrorSignalWithoutPrecedingRequestCall",
      wb_spec210_without },
    { "untested_spec211_mustMakeSureThatAllCallsOnItsMethodsHappenBeforeTheProcessingOfTheRespectiveEvents",
      untested },
    { "untested_spec212_mustNotCallOnSubscribeMoreThanOnceBasedOnObjectEquality_specViolation",
      untested },
    { "untested_spec213_failingOnSignalInvocation", untested },
    { "required_spec213_onSubscribe_mustThrowNullPointerExceptionWhenParametersAreNull",
      null_subscription },
    { "required_spec213_onNext_mustThrowNullPointerExceptionWhenParametersAreNull", null_item },
    { "required_spec213_onError_mustThrowNullPointerExceptionWhenParametersAreNull", null_error },
    { "untested_spec301_mustNotBeCalledOutsideSubscriberContext", untested },
    { "required_spec308_requestMustRegisterGivenNumberElementsToBeProduced", wb_spec308 },
    { "untested_spec310_requestMaySynchronouslyCallOnNextOnSubscriber", untested },
    { "untested_spec311_requestMaySynchronouslyCallOnCompleteOrOnError", untested },
    { "untested_spec314_cancelMayCauseThePublisherToShutdownIfNoOtherSubscriptionExists",
      untested },
    { "untested_spec315_cancelMustNotThrowExceptionAndMustSignalOnError", untested },
    { "untested_spec316_requestMustNotThrowExceptionAndMustOnErrorTheSubscriber", untested },
};

/* Processor verification: the publisher tests, then these, the whitebox
 * tests, and the tail (the last two are rill's own, not the TCK's). */
static const stest processor_head[] = {
    { "required_spec104_mustCallOnErrorOnAllItsSubscribersIfItEncountersANonRecoverableError",
      multicast_only },
    { "mustImmediatelyPassOnOnErrorEventsReceivedFromItsUpstreamToItsDownstream",
      p_immediate_error },
};

static const stest processor_tail[] = {
    { "required_mustRequestFromUpstreamForElementsThatHaveBeenRequestedLongAgo", multicast_only },
    { "required_rill_identityMustForwardEveryItemUnchangedAndInOrder", p_in_order },
    { "required_rill_upstreamDemandMustStayWithinDownstreamDemandPlusPrefetch", p_demand_bound },
};

static void run_tests(tck_srun *t, const stest *tests, size_t n, tck_entry *out)
{
    for (size_t i = 0; i < n; i++) {
        t->status = RILL_TCK_PASSED;
        t->reason[0] = '\0';
        tests[i].run(t);
        finish(t);
        rill__tck_entry_set(&out[i], tests[i].name, t->status, t->reason);
    }
}

static void free_stages(tck_srun *t)
{
    while (t->stages) {
        tck_stage *next = t->stages->next;
        stage_unref(t->stages);
        t->stages = next;
    }
}

static uint64_t or_default(uint64_t v, uint64_t d)
{
    return v ? v : d;
}

/* ------------------------------------------------------------------------
 * Blackbox and whitebox verification */

void rill_tck_blackbox_options_init(rill_tck_blackbox_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->version = RILL_TCK_BLACKBOX_OPTIONS_VERSION;
}

rill_tck_report *rill_tck_verify_subscriber_blackbox(const rill_tck_blackbox_options *o)
{
    if (!o || o->version < 1 || !o->create) {   /* a newer version: its v1 fields are read */
        errno = EINVAL;
        return NULL;
    }
    rill_tck_report *r = rill__tck_report_new("subscriber blackbox",
                                              o->name ? o->name : "subscriber",
                                              COUNT(blackbox_tests));
    if (!r)
        return NULL;
    tck_srun t = {
        .mode = BLACKBOX,
        .bo = o,
        .ctx = o->ctx,
        .create_element = o->create_element,
        .timeout = or_default(o->timeout_ns, 1000000000u),
        .quiet = or_default(o->quiet_ns, 20000000u),
    };
    run_tests(&t, blackbox_tests, COUNT(blackbox_tests), r->entries);
    free_stages(&t);
    return r;
}

void rill_tck_whitebox_options_init(rill_tck_whitebox_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->version = RILL_TCK_WHITEBOX_OPTIONS_VERSION;
}

rill_tck_report *rill_tck_verify_subscriber_whitebox(const rill_tck_whitebox_options *o)
{
    if (!o || o->version < 1 || !o->create) {
        errno = EINVAL;
        return NULL;
    }
    rill_tck_report *r = rill__tck_report_new("subscriber whitebox",
                                              o->name ? o->name : "subscriber",
                                              COUNT(whitebox_tests));
    if (!r)
        return NULL;
    tck_srun t = {
        .mode = WHITEBOX,
        .wo = o,
        .ctx = o->ctx,
        .create_element = o->create_element,
        .timeout = or_default(o->timeout_ns, 1000000000u),
        .quiet = or_default(o->quiet_ns, 20000000u),
    };
    run_tests(&t, whitebox_tests, COUNT(whitebox_tests), r->entries);
    free_stages(&t);
    return r;
}

/* ------------------------------------------------------------------------
 * Processor verification */

/* The publisher half's factories: apply(a source of exactly n items). */
typedef struct proc_ctx {
    const rill_tck_processor_options *o;
} proc_ctx;

static int element_of_index(void *ctx, void *in, void **out)
{
    const rill_tck_processor_options *o = ((proc_ctx *)ctx)->o;
    *out = o->create_element(o->ctx, (uint64_t)(intptr_t)in);
    return 0;
}

static rill_publisher *proc_create(void *ctx, uint64_t n)
{
    proc_ctx *c = ctx;
    uint64_t count = n > INT64_MAX ? INT64_MAX : n;   /* "infinite" is plenty */
    rill_publisher *src = c->o->create_element
                              ? rill_map(rill_range(0, count), element_of_index, c)
                              : rill_range(1, count);
    return src ? c->o->apply(c->o->ctx, src) : NULL;
}

static rill_publisher *proc_create_failed(void *ctx)
{
    proc_ctx *c = ctx;
    if (c->o->create_failed)
        return c->o->create_failed(c->o->ctx);
    rill_publisher *src = rill_fail(EIO, "rill tck: the failed upstream");
    return src ? c->o->apply(c->o->ctx, src) : NULL;
}

void rill_tck_processor_options_init(rill_tck_processor_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->version = RILL_TCK_PROCESSOR_OPTIONS_VERSION;
    o->max_elements = RILL_UNBOUNDED - 1;
    o->prefetch = RILL_UNBOUNDED;
}

rill_tck_report *rill_tck_verify_processor(const rill_tck_processor_options *o)
{
    if (!o || o->version < 1 || !o->apply) {
        errno = EINVAL;
        return NULL;
    }
    size_t np = rill__tck_publisher_test_count();
    size_t nh = COUNT(processor_head), nw = COUNT(whitebox_tests), nt = COUNT(processor_tail);
    rill_tck_report *r = rill__tck_report_new("identity processor",
                                              o->name ? o->name : "processor",
                                              np + nh + nw + nt);
    if (!r)
        return NULL;
    proc_ctx c = { o };
    rill_tck_publisher_options po;
    rill_tck_publisher_options_init(&po);
    po.create = proc_create;
    po.create_failed = proc_create_failed;
    po.ctx = &c;
    po.max_elements = o->max_elements;
    po.bounded_depth = o->bounded_depth;
    po.timeout_ns = o->timeout_ns;
    po.quiet_ns = o->quiet_ns;
    po.skip_stochastic = o->skip_stochastic;
    po.stochastic_runs = o->stochastic_runs;
    rill__tck_publisher_run(&po, r->entries);
    tck_srun t = {
        .mode = PROCESSOR,
        .po = o,
        .ctx = o->ctx,
        .create_element = o->create_element,
        .timeout = or_default(o->timeout_ns, 1000000000u),
        .quiet = or_default(o->quiet_ns, 20000000u),
    };
    run_tests(&t, processor_head, nh, r->entries + np);
    run_tests(&t, whitebox_tests, nw, r->entries + np + nh);
    run_tests(&t, processor_tail, nt, r->entries + np + nh + nw);
    free_stages(&t);
    return r;
}
