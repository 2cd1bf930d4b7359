/* lib/tck-internal.h — the conformance kit's checking subscriber (the
 * "probe") and the pieces its tests share: private to librill-tck (lib/tck.c
 * defines them; lib/tck-subscriber.c uses the probe as the downstream
 * subscriber of the operators it verifies, and shares the reports).
 *
 * The probe records every signal under a mutex and wakes waiters through a
 * condition variable, so the kit can wait (with a timeout) for publishers
 * that signal on other threads. It follows the subscription lifetime rule of
 * rill/core.h: every rill_request/rill_cancel the kit makes goes through a
 * guard (a Dekker handshake: callers announce themselves in `busy`, then
 * check `stopping`; on_release sets `stopping`, then waits until no call is
 * inside, except the ones on its own stack), so none is still running once
 * on_release has returned.
 *
 * The probe is shared by two owners (the kit and the publisher, through the
 * subscriber it was given): `refs` starts at 2 and each drops one.
 */
#ifndef RILL_TCK_INTERNAL_H
#define RILL_TCK_INTERNAL_H

#include <rill/stage.h>
#include <rill/tck.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#define TCK_ITEMS 64   /* items kept for comparing sequences (rule 1.11) */

typedef struct tck_probe {
    rill_subscriber base;
    atomic_int refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;

    /* behaviour, set before subscribing, read-only afterwards */
    int sub_requests;        /* request(1) this many times inside on_subscribe */
    uint64_t each_request;   /* requested inside each on_next; 0: none */
    int each_limit;          /* at most this many of those; < 0: no limit */
    uint64_t cancel_at;      /* cancel inside the on_next bringing this many items; 0: never */
    uint64_t hold_ns;        /* busy-wait inside on_next (widens races for rule 1.3) */
    int error_ok;            /* an on_error is what the test expects */

    /* what happened, under mu */
    rill_subscription *sub;
    int subscribes, completes, errors, releases;
    uint64_t nexts;
    uint64_t requested;      /* by the kit, saturating at RILL_UNBOUNDED */
    int cancelled;           /* the kit called rill_cancel */
    uint64_t after_cancel;   /* on_next/on_error/on_complete after that */
    int each_done, cancel_done;
    int error_code;
    char error_msg[160];
    int violations;
    char violation[240];     /* the first one */
    int max_depth;           /* deepest same-thread on_next nesting */
    void *items[TCK_ITEMS];

    /* the lifetime guard (see the top of this file) */
    atomic_int busy;
    atomic_int stopping;

    /* rule 1.3: the thread inside a signal (0: none); nest is owner-only */
    _Atomic uintptr_t owner;
    int owner_nest;
} tck_probe;

/* ------------------------------------------------------------------------
 * The probe's functions (lib/tck.c). */

/* A new probe with two references (the kit's and the subscriber's: its
 * on_release drops the second). Configure it, then rill_subscribe it. */
tck_probe *rill__tck_probe_new(void);
void rill__tck_probe_unref(tck_probe *p);
/* The kit's guarded rill_request / rill_cancel (see the top of this file). */
void rill__tck_probe_request(tck_probe *p, uint64_t n);
void rill__tck_probe_cancel(tck_probe *p);
/* Waits (under mu, on cv) until pred holds or timeout_ns passes; returns
 * pred's last value. */
typedef int (*tck_probe_pred)(const tck_probe *p, uint64_t arg);
int rill__tck_probe_wait(tck_probe *p, tck_probe_pred pred, uint64_t arg, uint64_t timeout_ns);
/* on_release has run and returned. */
int rill__tck_probe_released(const tck_probe *p, uint64_t arg);
/* "N on_next, <terminal>" for failure messages. */
const char *rill__tck_probe_describe(tck_probe *p, char *buf, size_t len);

uint64_t rill__tck_now_ns(void);
void rill__tck_sleep_ns(uint64_t ns);

/* ------------------------------------------------------------------------
 * Reports (lib/tck.c) */

#define TCK_REASON 320

typedef struct tck_entry {
    const char *name;   /* static */
    rill_tck_status status;
    char reason[TCK_REASON];
} tck_entry;

struct rill_tck_report {
    const char *kind;   /* static: "publisher", "subscriber blackbox", ... */
    char title[128];
    size_t count;
    tck_entry entries[];
};

/* A report of `count` entries (to be filled in), or NULL with errno ENOMEM. */
rill_tck_report *rill__tck_report_new(const char *kind, const char *title, size_t count);
/* Fills an entry with a test's verdict, applying the TCK's rule for
 * optional_ tests: an unmet optional rule is SKIPPED, not FAILED. */
void rill__tck_entry_set(tck_entry *e, const char *name, rill_tck_status st, const char *reason);
/* The publisher tests: how many, and running them all into out[0..count). */
size_t rill__tck_publisher_test_count(void);
void rill__tck_publisher_run(const rill_tck_publisher_options *o, tck_entry *out);

#endif /* RILL_TCK_INTERNAL_H */
