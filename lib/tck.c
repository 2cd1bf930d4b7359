/* lib/tck.c — the conformance kit: the Reactive Streams TCK's
 * PublisherVerification, in C (include/rill/tck.h).
 *
 * Layout: the probe (the kit's checking subscriber, tck-internal.h), then
 * the run helpers every test uses (create a publisher or skip, attach a
 * probe, wait, stay quiet, fail), then one static function per TCK test, in
 * the TCK's order, then the table of tests and the report.
 *
 * Each test runs on the calling thread. A publisher may signal on any
 * thread: the probe records under its mutex and the test waits on its
 * condition variable, bounded by timeout_ns. Checks the TCK makes with
 * env.verifyNoAsyncErrors are the probe's "violations": any signal out of
 * order, beyond demand, after a terminal signal or release, or from two
 * threads at once fails whichever test is running.
 *
 * The kit only uses rill's public API (it is its own library). The probe
 * and the reports are shared with lib/tck-subscriber.c through the
 * rill__tck_* functions declared in tck-internal.h (not exported).
 */
#include "tck-internal.h"

#include <rill.h>
#include <rill/tck.h>

#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MS(ns) ((unsigned long long)((ns) / 1000000u))

/* ------------------------------------------------------------------------
 * Time */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = { (time_t)(ns / 1000000000u), (long)(ns % 1000000000u) };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Keeps a signal on the stack for a while. It yields rather than spins, so
 * that on a busy machine (or under valgrind, which runs one thread at a
 * time) a publisher's other threads get to run meanwhile. */
static void hold(uint64_t ns)
{
    uint64_t end = now_ns() + ns;
    while (now_ns() < end)
        sched_yield();
}

static uint64_t sat_add(uint64_t a, uint64_t b)
{
    return b >= RILL_UNBOUNDED - a ? RILL_UNBOUNDED : a + b;
}

/* ------------------------------------------------------------------------
 * The probe: thread identity and per-thread counters */

/* Its address names the thread (cheaper and more portable than comparing
 * pthread_t values). */
static _Thread_local char tls_self;
/* Rule 3.3's counter (the TCK's ThreadLocal): on_next calls on this
 * thread's stack right now. */
static _Thread_local int tls_next_depth;
/* The guarded calls on this thread's stack, and for which probe. */
static _Thread_local tck_probe *tls_probe;
static _Thread_local int tls_calls;

static uintptr_t self_id(void)
{
    return (uintptr_t)&tls_self;
}

static void probe_unref(tck_probe *p)
{
    if (atomic_fetch_sub(&p->refs, 1) != 1)
        return;
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Records the first breach; called with mu held. */
static void violate(tck_probe *p, const char *fmt, ...)
{
    if (p->violations++ != 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->violation, sizeof p->violation, fmt, ap);
    va_end(ap);
}

/* Rule 1.3: claims the probe for this thread. A same-thread nested signal is
 * allowed (that is rule 3.3's business); another thread inside is a breach.
 * Returns 1 when the caller must call leave. The CAS (seq_cst) and the
 * store in leave order successive signals from different threads. */
static int enter(tck_probe *p, const char *what)
{
    uintptr_t me = self_id(), seen = 0;
    if (atomic_compare_exchange_strong(&p->owner, &seen, me)) {
        p->owner_nest = 1;
        return 1;
    }
    if (seen == me) {
        p->owner_nest++;
        return 1;
    }
    pthread_mutex_lock(&p->mu);
    violate(p, "rule 1.3: %s on one thread while another thread was inside a signal", what);
    pthread_mutex_unlock(&p->mu);
    return 0;
}

static void leave(tck_probe *p, int owned)
{
    if (owned && --p->owner_nest == 0)
        atomic_store(&p->owner, 0);
}

/* Checks common to every signal after on_subscribe; mu held. */
static void check_order(tck_probe *p, const char *what)
{
    if (p->releases)
        violate(p, "%s after on_release", what);
    else if (p->subscribes == 0)
        violate(p, "rule 1.9: %s before on_subscribe", what);
    else if (p->completes)
        violate(p, "rule 1.7: %s after on_complete", what);
    else if (p->errors)
        violate(p, "rule 1.7: %s after on_error", what);
    if (p->cancelled)
        p->after_cancel++;
}

/* ------------------------------------------------------------------------
 * The probe: guarded calls into the subscription */

static void guarded(tck_probe *p, int cancel, uint64_t n)
{
    pthread_mutex_lock(&p->mu);
    rill_subscription *s = p->sub;
    if (cancel)
        p->cancelled = 1;
    else
        p->requested = sat_add(p->requested, n);
    pthread_mutex_unlock(&p->mu);
    if (!s)
        return;
    atomic_fetch_add(&p->busy, 1);   /* seq_cst: the Dekker handshake with on_release */
    if (!atomic_load(&p->stopping)) {
        tck_probe *saved = tls_probe;
        int saved_calls = tls_calls;
        if (saved != p) {
            tls_probe = p;
            tls_calls = 0;
        }
        tls_calls++;
        if (cancel)
            rill_cancel(s);
        else
            rill_request(s, n);
        tls_calls--;
        if (saved != p) {
            tls_probe = saved;
            tls_calls = saved_calls;
        }
    }
    atomic_fetch_sub(&p->busy, 1);
}

static void probe_request(tck_probe *p, uint64_t n)
{
    guarded(p, 0, n);
}

static void probe_cancel(tck_probe *p)
{
    guarded(p, 1, 0);
}

/* ------------------------------------------------------------------------
 * The probe: signals */

static void on_subscribe(rill_subscriber *self, rill_subscription *s)
{
    tck_probe *p = (tck_probe *)self;
    int own = enter(p, "on_subscribe");
    pthread_mutex_lock(&p->mu);
    if (p->subscribes++ != 0)
        violate(p, "rule 1.9/2.12: on_subscribe called twice");
    else if (p->nexts || p->errors || p->completes)
        violate(p, "rule 1.9: on_subscribe after another signal");
    p->sub = s;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->sub_requests; i++)
        probe_request(p, 1);
    leave(p, own);
}

/* Records an item; returns what the probe must do next (1 request, 2 cancel). */
static int record_next(tck_probe *p, void *item, int depth)
{
    int todo = 0;
    pthread_mutex_lock(&p->mu);
    check_order(p, "on_next");
    if (p->nexts < TCK_ITEMS)
        p->items[p->nexts] = item;
    p->nexts++;
    if (p->nexts > p->requested)
        violate(p, "rule 1.1: on_next #%llu with only %llu requested",
                (unsigned long long)p->nexts, (unsigned long long)p->requested);
    if (depth > p->max_depth)
        p->max_depth = depth;
    if (p->each_request && (p->each_limit < 0 || p->each_done < p->each_limit)) {
        p->each_done++;
        todo |= 1;
    }
    if (p->cancel_at && p->nexts >= p->cancel_at && !p->cancel_done) {
        p->cancel_done = 1;
        todo |= 2;
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return todo;
}

static void on_next(rill_subscriber *self, void *item)
{
    tck_probe *p = (tck_probe *)self;
    int own = enter(p, "on_next");
    int todo = record_next(p, item, ++tls_next_depth);
    if (todo & 1)
        probe_request(p, p->each_request);
    if (p->hold_ns)
        hold(p->hold_ns);
    if (todo & 2)
        probe_cancel(p);
    tls_next_depth--;
    leave(p, own);
}

static void on_error(rill_subscriber *self, const rill_error *e)
{
    tck_probe *p = (tck_probe *)self;
    int own = enter(p, "on_error");
    pthread_mutex_lock(&p->mu);
    check_order(p, "on_error");
    if (p->errors++ == 0) {
        p->error_code = rill_error_code(e);
        snprintf(p->error_msg, sizeof p->error_msg, "%s", rill_error_message(e));
    }
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    leave(p, own);
}

static void on_complete(rill_subscriber *self)
{
    tck_probe *p = (tck_probe *)self;
    int own = enter(p, "on_complete");
    pthread_mutex_lock(&p->mu);
    check_order(p, "on_complete");
    p->completes++;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    leave(p, own);
}

static void on_release(rill_subscriber *self)
{
    tck_probe *p = (tck_probe *)self;
    int own = enter(p, "on_release");
    pthread_mutex_lock(&p->mu);
    if (own && p->owner_nest > 1)
        violate(p, "on_release nested inside another signal of the same subscriber");
    if (p->releases++ != 0)
        violate(p, "on_release called twice");
    pthread_mutex_unlock(&p->mu);
    leave(p, own);
    /* The lifetime rule: no guarded call may still be running once we return,
     * except those on our own stack (a synchronous source releasing inside
     * the kit's request or cancel). */
    atomic_store(&p->stopping, 1);
    int mine = tls_probe == p ? tls_calls : 0;
    while (atomic_load(&p->busy) > mine)
        sched_yield();
    pthread_mutex_lock(&p->mu);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    probe_unref(p);
}

static const struct rill_subscriber_ops probe_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = on_subscribe,
    .on_next = on_next,
    .on_error = on_error,
    .on_complete = on_complete,
    .on_release = on_release,
};

static tck_probe *probe_new(void)
{
    tck_probe *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    if (pthread_cond_init(&p->cv, &ca) != 0) {
        pthread_condattr_destroy(&ca);
        free(p);
        return NULL;
    }
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p->mu, NULL);
    p->base.ops = &probe_ops;
    p->each_limit = -1;
    atomic_init(&p->refs, 2);
    return p;
}

/* ------------------------------------------------------------------------
 * Waiting */

typedef int (*probe_pred)(const tck_probe *p, uint64_t arg);

static int terminated(const tck_probe *p)
{
    return p->completes + p->errors > 0;
}

static int got_subscribe(const tck_probe *p, uint64_t arg)
{
    (void)arg;
    return p->subscribes > 0;
}

/* arg items, or a reason they will never come. */
static int got_items(const tck_probe *p, uint64_t arg)
{
    return p->nexts >= arg || terminated(p) || p->releases || p->violations;
}

static int got_terminal(const tck_probe *p, uint64_t arg)
{
    (void)arg;
    return terminated(p) || p->releases || p->violations;
}

static int got_release(const tck_probe *p, uint64_t arg)
{
    (void)arg;
    return p->releases > 0 && atomic_load(&p->stopping);
}

static int got_cancel_done(const tck_probe *p, uint64_t arg)
{
    (void)arg;
    return p->cancel_done || terminated(p) || p->releases || p->violations;
}

/* Waits until pred holds or timeout_ns passes; returns pred's last value. */
static int probe_wait(tck_probe *p, probe_pred pred, uint64_t arg, uint64_t timeout_ns)
{
    uint64_t deadline = now_ns() + timeout_ns;
    struct timespec ts = { (time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u) };
    pthread_mutex_lock(&p->mu);
    int ok;
    while (!(ok = pred(p, arg)))
        if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT) {
            ok = pred(p, arg);
            break;
        }
    pthread_mutex_unlock(&p->mu);
    return ok;
}

/* A consistent copy of the counters (for checks after a wait). */
typedef struct snap {
    int subscribes, completes, errors, releases, violations, error_code, max_depth;
    uint64_t nexts, after_cancel;
} snap;

static snap probe_snap(tck_probe *p)
{
    pthread_mutex_lock(&p->mu);
    snap s = { p->subscribes, p->completes, p->errors, p->releases, p->violations,
               p->error_code, p->max_depth, p->nexts, p->after_cancel };
    pthread_mutex_unlock(&p->mu);
    return s;
}

static uint64_t signals(const snap *s)
{
    return (uint64_t)s->subscribes + (uint64_t)s->completes + (uint64_t)s->errors + s->nexts;
}

/* ------------------------------------------------------------------------
 * The probe, as lib/tck-subscriber.c uses it (tck-internal.h) */

tck_probe *rill__tck_probe_new(void)
{
    return probe_new();
}

void rill__tck_probe_unref(tck_probe *p)
{
    probe_unref(p);
}

void rill__tck_probe_request(tck_probe *p, uint64_t n)
{
    probe_request(p, n);
}

void rill__tck_probe_cancel(tck_probe *p)
{
    probe_cancel(p);
}

int rill__tck_probe_wait(tck_probe *p, tck_probe_pred pred, uint64_t arg, uint64_t timeout_ns)
{
    return probe_wait(p, pred, arg, timeout_ns);
}

int rill__tck_probe_released(const tck_probe *p, uint64_t arg)
{
    return got_release(p, arg);
}

uint64_t rill__tck_now_ns(void)
{
    return now_ns();
}

void rill__tck_sleep_ns(uint64_t ns)
{
    sleep_ns(ns);
}

/* ------------------------------------------------------------------------
 * A test run: the publishers and probes of one test, and its verdict */

#define MAX_PROBES 8
#define MAX_PUBS 4
#define REASON TCK_REASON

typedef struct tck_run {
    const rill_tck_publisher_options *o;
    uint64_t timeout, quiet, max;
    uint32_t depth, runs;
    rill_tck_status status;
    char reason[REASON];
    tck_probe *probes[MAX_PROBES];
    int attached[MAX_PROBES];
    int nprobes;
    rill_publisher *pubs[MAX_PUBS];
    int npubs;
} tck_run;

static void set_verdict(tck_run *t, rill_tck_status st, const char *fmt, va_list ap)
{
    if (t->status != RILL_TCK_PASSED)
        return;   /* the first verdict stands */
    t->status = st;
    vsnprintf(t->reason, sizeof t->reason, fmt, ap);
}

/* Fails the test (unless it already has a verdict); returns 0 for `return fail(...)`. */
static int fail(tck_run *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_verdict(t, RILL_TCK_FAILED, fmt, ap);
    va_end(ap);
    return 0;
}

static int skip(tck_run *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    set_verdict(t, RILL_TCK_SKIPPED, fmt, ap);
    va_end(ap);
    return 0;
}

/* A remark on a test that passes (how the C version differs from the JVM one). */
static void note(tck_run *t, const char *text)
{
    if (t->status == RILL_TCK_PASSED && t->reason[0] == '\0')
        snprintf(t->reason, sizeof t->reason, "%s", text);
}

/* The TCK's activePublisherTest(n, completionRequired): the publisher, or
 * NULL after skipping or failing the test. */
static rill_publisher *need(tck_run *t, uint64_t n, int completion)
{
    if (t->status != RILL_TCK_PASSED)
        return NULL;
    if (n > t->max) {
        skip(t, "needs a publisher of %llu elements; max_elements is %llu",
             (unsigned long long)n, (unsigned long long)t->max);
        return NULL;
    }
    if (completion && t->max == RILL_UNBOUNDED) {
        skip(t, "needs on_complete, and the publisher only makes infinite streams");
        return NULL;
    }
    if (t->npubs == MAX_PUBS) {
        fail(t, "kit error: too many publishers in one test");
        return NULL;
    }
    errno = 0;
    rill_publisher *pub = t->o->create(t->o->ctx, n);
    if (!pub) {
        fail(t, "create(%llu) returned NULL (errno %d)", (unsigned long long)n, errno);
        return NULL;
    }
    return t->pubs[t->npubs++] = pub;
}

static rill_publisher *need_failed(tck_run *t)
{
    if (t->status != RILL_TCK_PASSED)
        return NULL;
    if (!t->o->create_failed) {
        skip(t, "no create_failed given");
        return NULL;
    }
    rill_publisher *pub = t->o->create_failed(t->o->ctx);
    if (!pub) {
        fail(t, "create_failed() returned NULL (errno %d)", errno);
        return NULL;
    }
    return t->pubs[t->npubs++] = pub;
}

/* A new probe for this test; configure it, then attach it. */
static tck_probe *new_probe(tck_run *t)
{
    if (t->status != RILL_TCK_PASSED)
        return NULL;
    tck_probe *p = t->nprobes < MAX_PROBES ? probe_new() : NULL;
    if (!p) {
        fail(t, "kit error: cannot make a subscriber");
        return NULL;
    }
    t->attached[t->nprobes] = 0;
    t->probes[t->nprobes++] = p;
    return p;
}

static void attach(tck_run *t, rill_publisher *pub, tck_probe *p)
{
    for (int i = 0; i < t->nprobes; i++)
        if (t->probes[i] == p)
            t->attached[i] = 1;
    rill_subscribe(pub, &p->base);
}

/* new_probe + attach, for tests that need no configuration. */
static tck_probe *subscribe_new(tck_run *t, rill_publisher *pub)
{
    tck_probe *p = new_probe(t);
    if (p)
        attach(t, pub, p);
    return p;
}

/* What the probe has seen, for failure messages. */
static const char *describe(tck_probe *p, char *buf, size_t len)
{
    pthread_mutex_lock(&p->mu);
    int n = snprintf(buf, len, "%llu on_next", (unsigned long long)p->nexts);
    if (n > 0 && (size_t)n < len) {
        if (p->completes)
            snprintf(buf + n, len - (size_t)n, ", on_complete");
        else if (p->errors)
            snprintf(buf + n, len - (size_t)n, ", on_error(%d: %s)", p->error_code, p->error_msg);
        else
            snprintf(buf + n, len - (size_t)n, ", no terminal signal");
    }
    pthread_mutex_unlock(&p->mu);
    return buf;
}

const char *rill__tck_probe_describe(tck_probe *p, char *buf, size_t len)
{
    return describe(p, buf, len);
}

/* Fails the test with the probe's first breach, if it saw one. */
static int check_violations(tck_run *t, tck_probe *p)
{
    pthread_mutex_lock(&p->mu);
    int bad = p->violations;
    char text[sizeof p->violation];
    memcpy(text, p->violation, sizeof text);
    pthread_mutex_unlock(&p->mu);
    return bad ? fail(t, "%s", text) : 1;
}

static int wait_subscribed(tck_run *t, tck_probe *p)
{
    if (!probe_wait(p, got_subscribe, 0, t->timeout))
        return fail(t, "rule 1.9: no on_subscribe within %llu ms of subscribe", MS(t->timeout));
    return check_violations(t, p);
}

static int wait_items(tck_run *t, tck_probe *p, uint64_t k)
{
    char d[256];
    probe_wait(p, got_items, k, t->timeout);
    if (!check_violations(t, p))
        return 0;
    if (probe_snap(p).nexts < k)
        return fail(t, "expected %llu on_next within %llu ms, got %s",
                    (unsigned long long)k, MS(t->timeout), describe(p, d, sizeof d));
    return 1;
}

/* Waits for on_complete and checks it followed exactly k items. */
static int wait_complete(tck_run *t, tck_probe *p, uint64_t k)
{
    char d[256];
    probe_wait(p, got_terminal, 0, t->timeout);
    if (!check_violations(t, p))
        return 0;
    snap s = probe_snap(p);
    if (s.completes != 1 || s.nexts != k)
        return fail(t, "expected %llu on_next then on_complete within %llu ms, got %s",
                    (unsigned long long)k, MS(t->timeout), describe(p, d, sizeof d));
    return 1;
}

/* Waits for on_error (which the test expects) and returns its code, or -1. */
static int wait_error(tck_run *t, tck_probe *p)
{
    char d[256];
    p->error_ok = 1;
    probe_wait(p, got_terminal, 0, t->timeout);
    if (!check_violations(t, p))
        return -1;
    snap s = probe_snap(p);
    if (s.errors != 1) {
        fail(t, "expected on_error within %llu ms, got %s", MS(t->timeout), describe(p, d, sizeof d));
        return -1;
    }
    return s.error_code;
}

/* Watches for quiet_ns and fails if any signal arrived meanwhile (the TCK's
 * expectNone). */
static int expect_none(tck_run *t, tck_probe *p, const char *after)
{
    char d[256];
    snap before = probe_snap(p);
    sleep_ns(t->quiet);
    if (!check_violations(t, p))
        return 0;
    snap s = probe_snap(p);
    if (signals(&s) != signals(&before))
        return fail(t, "%s, nothing may arrive, yet signals did: now %s", after,
                    describe(p, d, sizeof d));
    return 1;
}

/* Ends a test's subscriptions: cancel what is still running, wait (bounded)
 * for each release, collect breaches and unexpected errors, then drop the
 * kit's references. Runs after every test, and between stochastic runs. */
static void finish(tck_run *t)
{
    for (int i = 0; i < t->nprobes; i++) {
        tck_probe *p = t->probes[i];
        if (!t->attached[i]) {   /* never subscribed: both references are ours */
            probe_unref(p);
            probe_unref(p);
            continue;
        }
        if (!probe_wait(p, got_release, 0, 0)) {
            probe_cancel(p);
            if (!probe_wait(p, got_release, 0, t->timeout))
                fail(t, "rule 3.13 (checked after every test): no on_release within %llu ms "
                        "of the kit's cancel (%llu signals after it)", MS(t->timeout),
                     (unsigned long long)probe_snap(p).after_cancel);
        }
        check_violations(t, p);
        snap s = probe_snap(p);
        if (s.errors && !p->error_ok) {
            char d[256];
            fail(t, "unexpected on_error: %s", describe(p, d, sizeof d));
        }
        probe_unref(p);
    }
    t->nprobes = 0;
    for (int i = 0; i < t->npubs; i++)
        rill_publisher_unref(t->pubs[i]);
    t->npubs = 0;
}

/* ------------------------------------------------------------------------
 * The tests, in the TCK's order. Each starts with need() (which skips or
 * fails when the publisher cannot take part) and returns early on the first
 * failed check; finish() then cleans up. */

/* request(1) at a time: k items one by one, then on_complete. */
static void one_by_one(tck_run *t, uint64_t k)
{
    rill_publisher *pub = need(t, k, 1);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p)
        return;
    for (uint64_t i = 1; i <= k; i++) {
        probe_request(p, 1);
        if (!wait_items(t, p, i))
            return;
    }
    probe_request(p, 1);
    wait_complete(t, p, k);
}

static void t_create1(tck_run *t)
{
    one_by_one(t, 1);
}

static void t_create3(tck_run *t)
{
    one_by_one(t, 3);
}

static void t_validate_max(tck_run *t)
{
    char text[96];
    snprintf(text, sizeof text, "max_elements = %llu (every uint64_t value is valid in C)",
             (unsigned long long)t->max);
    note(t, text);
}

static void t_validate_depth(tck_run *t)
{
    char text[64];
    snprintf(text, sizeof text, "bounded_depth = %u", (unsigned)t->depth);
    note(t, text);
}

static void t_spec101(tck_run *t)
{
    rill_publisher *pub = need(t, 5, 0);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p || !wait_subscribed(t, p) || !expect_none(t, p, "rule 1.1: before any request"))
        return;
    probe_request(p, 1);
    if (!wait_items(t, p, 1) || !expect_none(t, p, "rule 1.1: after request(1) and its item"))
        return;
    probe_request(p, 1);
    probe_request(p, 2);
    if (!wait_items(t, p, 4))
        return;
    expect_none(t, p, "rule 1.1: after request(1)+request(2) and their 3 items");
}

static void t_spec102(tck_run *t)
{
    rill_publisher *pub = need(t, 3, 1);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p)
        return;
    probe_request(p, 10);
    wait_complete(t, p, 3);
}

/* One run of 103: request 1 per signal, with a short stay inside on_next so
 * that a second thread signalling at the same time is caught. */
static int spec103_run(tck_run *t)
{
    rill_publisher *pub = need(t, 10, 1);
    tck_probe *p = pub ? new_probe(t) : NULL;
    if (!p)
        return 0;
    p->sub_requests = 1;
    p->each_request = 1;
    p->hold_ns = 20000;
    attach(t, pub, p);
    int ok = wait_complete(t, p, 10);
    finish(t);
    return ok && t->status == RILL_TCK_PASSED;
}

static void t_spec103(tck_run *t)
{
    if (t->o->skip_stochastic) {
        skip(t, "skip_stochastic is set");
        return;
    }
    for (uint32_t i = 0; i < t->runs; i++)
        if (!spec103_run(t)) {
            if (t->status == RILL_TCK_FAILED) {
                char r[REASON];
                snprintf(r, sizeof r, "run %u of %u: %.280s", (unsigned)i + 1, (unsigned)t->runs,
                         t->reason);
                memcpy(t->reason, r, sizeof r);
            }
            return;
        }
}

static void t_opt_spec104(tck_run *t)
{
    rill_publisher *pub = need_failed(t);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p || wait_error(t, p) < 0)
        return;
    expect_none(t, p, "after on_error");
}

static void t_spec105(tck_run *t)
{
    one_by_one(t, 3);
    if (t->status == RILL_TCK_PASSED)
        expect_none(t, t->probes[0], "rule 1.7: after on_complete");
}

static void t_opt_spec105(tck_run *t)
{
    rill_publisher *pub = need(t, 0, 1);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p)
        return;
    probe_request(p, 1);
    wait_complete(t, p, 0);
}

static void t_spec107(tck_run *t)
{
    rill_publisher *pub = need(t, 1, 1);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p)
        return;
    probe_request(p, 10);
    if (!wait_complete(t, p, 1))
        return;
    probe_request(p, 10);
    expect_none(t, p, "rule 1.7: after on_complete and a further request(10)");
}

static void t_spec109_subscribe(tck_run *t)
{
    rill_publisher *pub = need(t, 0, 0);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p || !wait_subscribed(t, p))
        return;
    /* The probe flags any signal that comes before on_subscribe or a second
     * on_subscribe; watch a little longer for the latter. */
    sleep_ns(t->quiet);
    check_violations(t, p);
}

static void t_spec109_null(tck_run *t)
{
    rill_publisher *pub = need(t, 0, 0);
    if (!pub)
        return;
    errno = 0;
    rill_subscribe(pub, NULL);
    if (errno != EINVAL) {
        fail(t, "rill_subscribe(p, NULL) returned with errno %d, expected EINVAL", errno);
        return;
    }
    note(t, "C has no NullPointerException: rill_subscribe(p, NULL) returned normally "
            "with errno EINVAL (rill checks before the publisher is called)");
}

static void t_spec109_reject(tck_run *t)
{
    rill_publisher *pub = need_failed(t);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (p)
        wait_error(t, p);
}

static void t_opt_spec111_multi(tck_run *t)
{
    rill_publisher *pub = need(t, 1, 0);
    tck_probe *a = pub ? subscribe_new(t, pub) : NULL;
    tck_probe *b = a ? subscribe_new(t, pub) : NULL;
    if (b && wait_subscribed(t, a))
        wait_subscribed(t, b);
}

static void t_opt_spec111_registered(tck_run *t)
{
    rill_publisher *pub = need(t, 1, 0);
    tck_probe *a = pub ? subscribe_new(t, pub) : NULL;
    tck_probe *b = a ? subscribe_new(t, pub) : NULL;
    if (!b || !wait_subscribed(t, a) || !wait_subscribed(t, b))
        return;
    probe_request(a, 1);
    probe_request(b, 1);
    if (wait_items(t, a, 1))
        wait_items(t, b, 1);
}

/* Three subscribers must see the same k items (the first TCK_ITEMS compared). */
static void same_sequence(tck_run *t, tck_probe **ps, uint64_t k)
{
    uint64_t m = k < TCK_ITEMS ? k : TCK_ITEMS;
    for (int j = 1; j < 3; j++)
        for (uint64_t i = 0; i < m; i++)
            if (ps[j]->items[i] != ps[0]->items[i]) {
                fail(t, "rule 1.11: subscriber %d got a different item #%llu", j + 1,
                     (unsigned long long)i + 1);
                return;
            }
}

static tck_probe **three(tck_run *t, rill_publisher *pub, tck_probe **ps)
{
    for (int j = 0; j < 3; j++)
        if (!(ps[j] = pub ? subscribe_new(t, pub) : NULL) || !wait_subscribed(t, ps[j]))
            return NULL;
    return ps;
}

static void t_opt_spec111_one_by_one(tck_run *t)
{
    tck_probe *ps[3];
    if (!three(t, need(t, 5, 0), ps))
        return;
    for (uint64_t i = 1; i <= 5; i++)
        for (int j = 0; j < 3; j++) {
            probe_request(ps[j], 1);
            if (!wait_items(t, ps[j], i))
                return;
        }
    same_sequence(t, ps, 5);
}

static void upfront(tck_run *t, int completion)
{
    tck_probe *ps[3];
    if (!three(t, need(t, 3, completion), ps))
        return;
    for (int j = 0; j < 3; j++)
        probe_request(ps[j], 4);
    for (int j = 0; j < 3; j++)
        if (!(completion ? wait_complete(t, ps[j], 3) : wait_items(t, ps[j], 3)))
            return;
    same_sequence(t, ps, 3);
}

static void t_opt_spec111_upfront(tck_run *t)
{
    upfront(t, 0);
}

static void t_opt_spec111_upfront_complete(tck_run *t)
{
    upfront(t, 1);
}

static void t_spec302(tck_run *t)
{
    rill_publisher *pub = need(t, 6, 0);
    tck_probe *p = pub ? new_probe(t) : NULL;
    if (!p)
        return;
    p->sub_requests = 3;
    p->each_request = 1;
    attach(t, pub, p);
    if (wait_items(t, p, 6))
        check_violations(t, p);
}

static void t_spec303(tck_run *t)
{
    uint64_t n = (uint64_t)t->depth + 1;
    char d[256];
    rill_publisher *pub = need(t, n, 0);
    tck_probe *p = pub ? new_probe(t) : NULL;
    if (!p)
        return;
    p->each_request = 1;
    p->each_limit = (int)t->depth;
    p->cancel_at = n;
    attach(t, pub, p);
    probe_request(p, 1);
    probe_wait(p, got_cancel_done, 0, t->timeout);
    snap s = probe_snap(p);
    if (s.max_depth > (int)t->depth) {
        fail(t, "rule 3.3: on_next nested %d deep on one thread (bounded_depth %u): "
                "request() called on_next recursively", s.max_depth, (unsigned)t->depth);
        return;
    }
    if (check_violations(t, p) && s.nexts < n)
        fail(t, "expected %llu on_next (one request(1) per on_next) within %llu ms, got %s",
             (unsigned long long)n, MS(t->timeout), describe(p, d, sizeof d));
}

static void t_spec306(tck_run *t)
{
    rill_publisher *pub = need(t, 3, 0);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p || !wait_subscribed(t, p))
        return;
    probe_cancel(p);
    for (int i = 0; i < 3; i++)
        probe_request(p, 1);
    expect_none(t, p, "rule 3.6: after cancel and request(1) x3");
}

static void t_spec307(tck_run *t)
{
    rill_publisher *pub = need(t, 1, 0);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p || !wait_subscribed(t, p))
        return;
    for (int i = 0; i < 3; i++)
        probe_cancel(p);
    expect_none(t, p, "rule 3.7: after cancel x3");
}

/* request(0) must end the stream with on_error(EINVAL); returns the probe
 * (for the message check) or NULL. */
static tck_probe *request_zero(tck_run *t)
{
    rill_publisher *pub = need(t, 10, 0);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p || !wait_subscribed(t, p))
        return NULL;
    probe_request(p, 0);
    int code = wait_error(t, p);
    if (code < 0)
        return NULL;
    if (code != EINVAL) {
        fail(t, "rule 3.9: request(0) gave on_error(%d: %s), expected EINVAL (%d), "
                "C's IllegalArgumentException", code, p->error_msg, EINVAL);
        return NULL;
    }
    return p;
}

static void t_spec309_zero(tck_run *t)
{
    if (request_zero(t))
        note(t, "C: IllegalArgumentException is on_error(EINVAL)");
}

static void t_spec309_negative(tck_run *t)
{
    skip(t, "C has no negative request: n is uint64_t, and (uint64_t)-1 is RILL_UNBOUNDED "
            "(request(0) is required_spec309_requestZeroMustSignalIllegalArgumentException)");
}

static void t_opt_spec309_message(tck_run *t)
{
    tck_probe *p = request_zero(t);
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    int ok = strstr(p->error_msg, "3.9") || strstr(p->error_msg, "non-positive subscription request")
             || strstr(p->error_msg, "negative subscription request");
    pthread_mutex_unlock(&p->mu);
    if (!ok)
        fail(t, "request(0)'s message \"%s\" names neither rule 3.9 nor a non-positive request",
             p->error_msg);
    else
        note(t, "C: checked on request(0), C's only non-positive request");
}

static void t_spec312(tck_run *t)
{
    rill_publisher *pub = need(t, 20, 0);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p || !wait_subscribed(t, p))
        return;
    probe_request(p, 10);
    probe_request(p, 5);
    if (!wait_items(t, p, 1))
        return;
    probe_cancel(p);
    /* Items in flight may still come (rule 2.8); they must stop, within
     * the demand, before the timeout. */
    uint64_t end = now_ns() + t->timeout;
    snap s = probe_snap(p), prev;
    do {
        prev = s;
        sleep_ns(t->quiet);
        s = probe_snap(p);
    } while (signals(&s) != signals(&prev) && now_ns() < end);
    if (s.nexts > 15)
        fail(t, "rule 3.12: %llu on_next for 15 requested (cancel did not stop them)",
             (unsigned long long)s.nexts);
    else if (signals(&s) != signals(&prev))
        fail(t, "rule 3.12: signals still arriving %llu ms after cancel", MS(t->timeout));
    else if (s.completes + s.errors > 0 && s.after_cancel > 0)
        fail(t, "rule 3.12: a terminal signal after cancel");
}

static void t_spec313(tck_run *t)
{
    rill_publisher *pub = need(t, 3, 0);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p)
        return;
    probe_request(p, 1);
    if (!wait_items(t, p, 1))
        return;
    probe_cancel(p);
    if (!probe_wait(p, got_release, 0, t->timeout))
        fail(t, "rule 3.13: no on_release within %llu ms of cancel: the publisher still "
                "holds the subscriber", MS(t->timeout));
    else
        note(t, "C: the JVM's WeakReference + GC check is on_release after cancel");
}

static void t_spec317_max(tck_run *t)
{
    rill_publisher *pub = need(t, 3, 1);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p)
        return;
    probe_request(p, RILL_UNBOUNDED);
    wait_complete(t, p, 3);
}

static void t_spec317_cumulative(tck_run *t)
{
    rill_publisher *pub = need(t, 3, 1);
    tck_probe *p = pub ? subscribe_new(t, pub) : NULL;
    if (!p)
        return;
    probe_request(p, RILL_UNBOUNDED / 2);
    probe_request(p, RILL_UNBOUNDED / 2);
    probe_request(p, 1);
    wait_complete(t, p, 3);
}

static void t_spec317_above(tck_run *t)
{
    /* The TCK asks for Integer.MAX_VALUE elements so the stream outlasts the
     * 11 it takes; any n >= 11 does (from_array-like publishers cannot
     * make 2^31 items). */
    uint64_t n = t->max >= INT32_MAX ? INT32_MAX : t->max;
    if (n < 11) {
        skip(t, "needs a publisher of at least 11 elements; max_elements is %llu",
             (unsigned long long)t->max);
        return;
    }
    rill_publisher *pub = need(t, n, 0);
    tck_probe *p = pub ? new_probe(t) : NULL;
    if (!p)
        return;
    p->each_request = RILL_UNBOUNDED - 1;
    p->each_limit = 10;
    p->cancel_at = 11;
    attach(t, pub, p);
    probe_request(p, 1);
    if (!wait_items(t, p, 11))
        return;
    sleep_ns(t->quiet);
    snap s = probe_snap(p);
    if (s.errors)
        fail(t, "rule 3.17: on_error(%d: %s) after demand went past 2^64-1: demand must "
                "saturate at RILL_UNBOUNDED", s.error_code, p->error_msg);
    else
        note(t, "C: demand is uint64_t; 10 x request(RILL_UNBOUNDED - 1) must saturate");
}

static void untested(tck_run *t)
{
    skip(t, "untested in the TCK too (no way to check it from outside)");
}

static void untested_after_error(tck_run *t)
{
    skip(t, "untested in the TCK; the kit's subscriber still flags any signal after "
            "on_error in every test");
}

/* ------------------------------------------------------------------------
 * The table of tests (names as in the TCK's PublisherVerification) */

typedef struct tck_test {
    const char *name;
    void (*run)(tck_run *t);
} tck_test;

static const tck_test publisher_tests[] = {
    { "required_createPublisher1MustProduceAStreamOfExactly1Element", t_create1 },
    { "required_createPublisher3MustProduceAStreamOfExactly3Elements", t_create3 },
    { "required_validate_maxElementsFromPublisher", t_validate_max },
    { "required_validate_boundedDepthOfOnNextAndRequestRecursion", t_validate_depth },
    { "required_spec101_subscriptionRequestMustResultInTheCorrectNumberOfProducedElements", t_spec101 },
    { "required_spec102_maySignalLessThanRequestedAndTerminateSubscription", t_spec102 },
    { "stochastic_spec103_mustSignalOnMethodsSequentially", t_spec103 },
    { "optional_spec104_mustSignalOnErrorWhenFails", t_opt_spec104 },
    { "required_spec105_mustSignalOnCompleteWhenFiniteStreamTerminates", t_spec105 },
    { "optional_spec105_emptyStreamMustTerminateBySignallingOnComplete", t_opt_spec105 },
    { "untested_spec106_mustConsiderSubscriptionCancelledAfterOnErrorOrOnCompleteHasBeenCalled", untested },
    { "required_spec107_mustNotEmitFurtherSignalsOnceOnCompleteHasBeenSignalled", t_spec107 },
    { "untested_spec107_mustNotEmitFurtherSignalsOnceOnErrorHasBeenSignalled", untested_after_error },
    { "untested_spec108_possiblyCanceledSubscriptionShouldNotReceiveOnErrorOrOnCompleteSignals", untested },
    { "required_spec109_mustIssueOnSubscribeForNonNullSubscriber", t_spec109_subscribe },
    { "untested_spec109_subscribeShouldNotThrowNonFatalThrowable", untested },
    { "required_spec109_subscribeThrowNPEOnNullSubscriber", t_spec109_null },
    { "required_spec109_mayRejectCallsToSubscribeIfPublisherIsUnableOrUnwillingToServeThemRejectionMustTriggerOnErrorAfterOnSubscribe",
      t_spec109_reject },
    { "untested_spec110_rejectASubscriptionRequestIfTheSameSubscriberSubscribesTwice", untested },
    { "optional_spec111_maySupportMultiSubscribe", t_opt_spec111_multi },
    { "optional_spec111_registeredSubscribersMustReceiveOnNextOrOnCompleteSignals", t_opt_spec111_registered },
    { "optional_spec111_multicast_mustProduceTheSameElementsInTheSameSequenceToAllOfItsSubscribersWhenRequestingOneByOne",
      t_opt_spec111_one_by_one },
    { "optional_spec111_multicast_mustProduceTheSameElementsInTheSameSequenceToAllOfItsSubscribersWhenRequestingManyUpfront",
      t_opt_spec111_upfront },
    { "optional_spec111_multicast_mustProduceTheSameElementsInTheSameSequenceToAllOfItsSubscribersWhenRequestingManyUpfrontAndCompleteAsExpected",
      t_opt_spec111_upfront_complete },
    { "required_spec302_mustAllowSynchronousRequestCallsFromOnNextAndOnSubscribe", t_spec302 },
    { "required_spec303_mustNotAllowUnboundedRecursion", t_spec303 },
    { "untested_spec304_requestShouldNotPerformHeavyComputations", untested },
    { "untested_spec305_cancelMustNotSynchronouslyPerformHeavyComputation", untested },
    { "required_spec306_afterSubscriptionIsCancelledRequestMustBeNops", t_spec306 },
    { "required_spec307_afterSubscriptionIsCancelledAdditionalCancelationsMustBeNops", t_spec307 },
    { "required_spec309_requestZeroMustSignalIllegalArgumentException", t_spec309_zero },
    { "required_spec309_requestNegativeNumberMustSignalIllegalArgumentException", t_spec309_negative },
    { "optional_spec309_requestNegativeNumberMaySignalIllegalArgumentExceptionWithSpecificMessage",
      t_opt_spec309_message },
    { "required_spec312_cancelMustMakeThePublisherToEventuallyStopSignaling", t_spec312 },
    { "required_spec313_cancelMustMakeThePublisherEventuallyDropAllReferencesToTheSubscriber", t_spec313 },
    { "required_spec317_mustSupportAPendingElementCountUpToLongMaxValue", t_spec317_max },
    { "required_spec317_mustSupportACumulativePendingElementCountUpToLongMaxValue", t_spec317_cumulative },
    { "required_spec317_mustNotSignalOnErrorWhenPendingAboveLongMaxValue", t_spec317_above },
};

#define NTESTS (sizeof publisher_tests / sizeof publisher_tests[0])

/* ------------------------------------------------------------------------
 * Reports (the struct is in tck-internal.h, shared with tck-subscriber.c) */

static const char *prefix_optional = "optional_";

void rill__tck_entry_set(tck_entry *e, const char *name, rill_tck_status st, const char *reason)
{
    e->name = name;
    e->status = st;
    if (st == RILL_TCK_FAILED && strncmp(name, prefix_optional, strlen(prefix_optional)) == 0) {
        e->status = RILL_TCK_SKIPPED;
        snprintf(e->reason, sizeof e->reason, "optional rule not met: %.290s", reason);
    } else {
        snprintf(e->reason, sizeof e->reason, "%s", reason);
    }
}

rill_tck_report *rill__tck_report_new(const char *kind, const char *title, size_t count)
{
    rill_tck_report *r = calloc(1, sizeof *r + count * sizeof r->entries[0]);
    if (!r) {
        errno = ENOMEM;
        return NULL;
    }
    r->kind = kind;
    snprintf(r->title, sizeof r->title, "%s", title);
    r->count = count;
    return r;
}

/* Runs one test: its verdict, with the TCK's rule for optional tests (an
 * unmet optional rule is a skip, not a failure). */
static void run_one(tck_run *t, const tck_test *test, tck_entry *e)
{
    t->status = RILL_TCK_PASSED;
    t->reason[0] = '\0';
    test->run(t);
    finish(t);
    rill__tck_entry_set(e, test->name, t->status, t->reason);
}

void rill_tck_publisher_options_init(rill_tck_publisher_options *o)
{
    if (!o)
        return;
    memset(o, 0, sizeof *o);
    o->version = RILL_TCK_PUBLISHER_OPTIONS_VERSION;
    o->max_elements = RILL_UNBOUNDED - 1;   /* the TCK's Long.MAX_VALUE - 1 */
}

size_t rill__tck_publisher_test_count(void)
{
    return NTESTS;
}

void rill__tck_publisher_run(const rill_tck_publisher_options *o, tck_entry *out)
{
    tck_run t = {
        .o = o,
        .timeout = o->timeout_ns ? o->timeout_ns : 1000000000u,
        .quiet = o->quiet_ns ? o->quiet_ns : 20000000u,
        .max = o->max_elements,
        .depth = o->bounded_depth ? o->bounded_depth : 1,
        .runs = o->stochastic_runs ? o->stochastic_runs : 100,
    };
    for (size_t i = 0; i < NTESTS; i++)
        run_one(&t, &publisher_tests[i], &out[i]);
}

rill_tck_report *rill_tck_verify_publisher(const rill_tck_publisher_options *o)
{
    if (!o || o->version < 1 || !o->create) {   /* a newer version: its v1 fields are read */
        errno = EINVAL;
        return NULL;
    }
    rill_tck_report *r = rill__tck_report_new("publisher", o->name ? o->name : "publisher",
                                              NTESTS);
    if (r)
        rill__tck_publisher_run(o, r->entries);
    return r;
}

size_t rill_tck_report_count(const rill_tck_report *r)
{
    return r ? r->count : 0;
}

const char *rill_tck_report_name(const rill_tck_report *r, size_t i)
{
    return r && i < r->count ? r->entries[i].name : NULL;
}

rill_tck_status rill_tck_report_status(const rill_tck_report *r, size_t i)
{
    return r && i < r->count ? r->entries[i].status : RILL_TCK_SKIPPED;
}

const char *rill_tck_report_reason(const rill_tck_report *r, size_t i)
{
    return r && i < r->count ? r->entries[i].reason : NULL;
}

long rill_tck_report_find(const rill_tck_report *r, const char *name)
{
    if (!r || !name)
        return -1;
    for (size_t i = 0; i < r->count; i++)
        if (strcmp(r->entries[i].name, name) == 0)
            return (long)i;
    return -1;
}

static size_t count_status(const rill_tck_report *r, rill_tck_status st)
{
    size_t n = 0;
    for (size_t i = 0; r && i < r->count; i++)
        n += r->entries[i].status == st;
    return n;
}

size_t rill_tck_report_failed(const rill_tck_report *r)
{
    return count_status(r, RILL_TCK_FAILED);
}

size_t rill_tck_report_passed(const rill_tck_report *r)
{
    return count_status(r, RILL_TCK_PASSED);
}

size_t rill_tck_report_skipped(const rill_tck_report *r)
{
    return count_status(r, RILL_TCK_SKIPPED);
}

const char *rill_tck_status_name(rill_tck_status s)
{
    switch (s) {
    case RILL_TCK_PASSED: return "PASSED";
    case RILL_TCK_FAILED: return "FAILED";
    default: return "SKIPPED";
    }
}

/* A Markdown table, so that it pastes into documentation as it is. */
void rill_tck_report_print(const rill_tck_report *r, FILE *out)
{
    if (!r || !out)
        return;
    fprintf(out, "rill TCK %s verification: %s: %zu tests, %zu passed, %zu failed, "
                 "%zu skipped\n\n", r->kind, r->title, r->count, rill_tck_report_passed(r),
            rill_tck_report_failed(r), rill_tck_report_skipped(r));
    fprintf(out, "| status | test | reason |\n|---|---|---|\n");
    for (size_t i = 0; i < r->count; i++)
        fprintf(out, "| %s | %s | %s |\n", rill_tck_status_name(r->entries[i].status),
                r->entries[i].name, r->entries[i].reason);
}

void rill_tck_report_free(rill_tck_report *r)
{
    free(r);
}
