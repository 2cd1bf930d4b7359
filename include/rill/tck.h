/* rill/tck.h — the conformance kit: the Reactive Streams TCK, in C.
 *
 * Link with librill-tck (pkg-config: rill-tck). The kit checks a publisher
 * against the rules of the Reactive Streams specification by running the
 * TCK's PublisherVerification tests under the TCK's own names
 * (required_spec101_..., stochastic_spec103_..., optional_spec111_...), so a
 * report reads like the JVM one. Each test subscribes the kit's own checking
 * subscriber, drives it, and waits (with timeouts) for what the rule demands.
 * Subscribers (blackbox and whitebox) and identity operators ("processors")
 * are verified the same way; see the second half of this file.
 *
 * Mechanisms the JVM TCK uses that C has not, and what replaces them:
 *   - 3.13 (a cancelled subscriber is eventually dropped; the JVM checks a
 *     WeakReference after a GC): the subscriber's on_release must arrive
 *     within the timeout after cancel;
 *   - 3.3 (bounded recursion; a ThreadLocal): a per-thread on_next depth
 *     counter in the kit's subscriber;
 *   - exception types (NPE, IAE): error codes. request(0) must end the
 *     stream with on_error(EINVAL); rill_subscribe(p, NULL) must return
 *     normally. C has no negative request (n is uint64_t), so the TCK's
 *     request(-1) tests are reported SKIPPED with that reason.
 *
 * Statuses follow the TCK: a required_ test passes or fails; an optional_
 * test that finds its rule unmet is SKIPPED (with the reason), as the TCK
 * does; untested_ tests are always SKIPPED; a test that needs more elements
 * than max_elements, completion from an infinite-only publisher, or a failed
 * publisher that was not given is SKIPPED.
 *
 * Every function here is thread-safe for different reports; a report is
 * immutable once returned. No function is variadic (bindings call them all).
 */
#ifndef RILL_TCK_H
#define RILL_TCK_H

#include <stdint.h>
#include <stdio.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RILL_TCK_PUBLISHER_OPTIONS_VERSION 1

typedef struct rill_tck_publisher_options {
    uint32_t version;   /* RILL_TCK_PUBLISHER_OPTIONS_VERSION; fields only grow at the end */
    /* --- valid for version 1 --- */
    /* Required. Returns a new reference to a publisher of exactly n items,
     * then on_complete; n == RILL_UNBOUNDED asks for an infinite stream. The
     * kit releases it. NULL fails the test that asked. */
    rill_publisher *(*create)(void *ctx, uint64_t n);
    /* Optional. Returns a new reference to a publisher that signals
     * on_subscribe, then on_error. NULL: the tests that need one are skipped. */
    rill_publisher *(*create_failed)(void *ctx);
    void *ctx;                  /* passed to create and create_failed; borrowed */
    /* The most items create may be asked for; tests needing more are
     * skipped. rill_tck_publisher_options_init sets RILL_UNBOUNDED - 1 (any
     * finite n); 0 means only empty streams. RILL_UNBOUNDED: the publisher
     * only makes infinite streams, so every test that needs on_complete is
     * skipped. */
    uint64_t max_elements;
    /* The bound on synchronous request→on_next recursion (rule 3.3); 0: 1. */
    uint32_t bounded_depth;
    /* How long to wait for a signal the rules demand; 0: one second. A
     * passing test never waits this long; a failing one does. */
    uint64_t timeout_ns;
    /* How long to watch for signals that must NOT arrive; 0: 20 ms. */
    uint64_t quiet_ns;
    /* Non-zero: stochastic_ tests are skipped. */
    int skip_stochastic;
    /* Runs of each stochastic_ test; 0: 100 (the TCK's number). */
    uint32_t stochastic_runs;
    /* A label for the report's title (copied); NULL: "publisher". */
    const char *name;
} rill_tck_publisher_options;

/* Fills o with the defaults: version set, max_elements RILL_UNBOUNDED - 1,
 * everything else 0 or NULL (0 selects the default noted beside a field).
 * Start from it, then set create and what else you need. o NULL is ignored. */
RILL_EXPORT void rill_tck_publisher_options_init(rill_tck_publisher_options *o);

typedef struct rill_tck_report rill_tck_report;

typedef enum rill_tck_status {
    RILL_TCK_PASSED = 0,
    RILL_TCK_FAILED = 1,
    RILL_TCK_SKIPPED = 2
} rill_tck_status;

/* Runs every publisher test (o is borrowed) on the calling thread and
 * returns a new report (free it with rill_tck_report_free). It blocks for
 * as long as the tests take: mostly quiet_ns per test, timeout_ns for each
 * wait that fails. Returns NULL with errno: EINVAL (o NULL, a version
 * below 1, or create NULL), ENOMEM. A publisher that never releases a
 * subscriber leaks the kit's subscriber (a few hundred bytes): the kit
 * cannot free what the publisher may still call. */
RILL_EXPORT rill_tck_report *rill_tck_verify_publisher(const rill_tck_publisher_options *o);

/* The number of tests in the report; 0 for NULL. */
RILL_EXPORT size_t rill_tck_report_count(const rill_tck_report *r);
/* The i-th test's TCK name (borrowed from r); NULL when i is out of range. */
RILL_EXPORT const char *rill_tck_report_name(const rill_tck_report *r, size_t i);
/* The i-th test's status; RILL_TCK_SKIPPED when i is out of range. */
RILL_EXPORT rill_tck_status rill_tck_report_status(const rill_tck_report *r, size_t i);
/* Why the i-th test failed or was skipped (or a note on a pass, often ""):
 * borrowed from r; NULL when i is out of range. */
RILL_EXPORT const char *rill_tck_report_reason(const rill_tck_report *r, size_t i);
/* The index of the test named `name`, or -1 (r or name NULL, or no such test). */
RILL_EXPORT long rill_tck_report_find(const rill_tck_report *r, const char *name);
/* How many tests failed; 0 for NULL. Use it in a unit test:
 * ck_assert_int_eq(rill_tck_report_failed(r), 0). */
RILL_EXPORT size_t rill_tck_report_failed(const rill_tck_report *r);
/* How many passed / were skipped; 0 for NULL. */
RILL_EXPORT size_t rill_tck_report_passed(const rill_tck_report *r);
RILL_EXPORT size_t rill_tck_report_skipped(const rill_tck_report *r);
/* Prints the report as a Markdown table (one line per test: status, name,
 * reason) after a summary line naming the kind of verification. r NULL or
 * out NULL is ignored. */
RILL_EXPORT void rill_tck_report_print(const rill_tck_report *r, FILE *out);
/* The text of a status: "PASSED", "FAILED" or "SKIPPED". */
RILL_EXPORT const char *rill_tck_status_name(rill_tck_status s);
/* Frees a report; NULL is ignored. */
RILL_EXPORT void rill_tck_report_free(rill_tck_report *r);

/* ------------------------------------------------------------------------
 * Subscriber verification: the TCK's SubscriberBlackboxVerification and
 * SubscriberWhiteboxVerification.
 *
 * The kit plays the publisher. It takes the subscriber your factory returns
 * (owning it, as rill_subscribe would), hands it the kit's own instrumented
 * subscriptions, and signals it directly, serially, on the thread that
 * called the verification. It always ends the subscriber with on_release
 * (after on_complete, when the subscriber neither cancelled nor received a
 * terminal signal). Items are create_element(ctx, i) for i = 0, 1, ... in
 * each test (on_next hands them to the subscriber, which owns them from
 * then on); without create_element they are (void *)(uintptr_t)(i + 1).
 * The kit sends on_next only within the demand the subscriber signalled.
 * As in the TCK, the 205 tests then give the subscriber a second
 * on_subscribe, with a second kit subscription, which it must cancel
 * (blackbox: without requesting from it first).
 *
 * The kit's subscriptions are thread-safe (request and cancel may come
 * from any thread) and stay valid until the verification returns, longer
 * than rill/core.h promises, so that a subscriber breaking the lifetime rule
 * is reported instead of crashing. In every test they flag, as the TCK's
 * env.flop does:
 *   - rule 2.3: request or cancel called from inside on_complete or
 *     on_error. The JVM inspects the stack; the kit marks the thread that
 *     is inside the kit's on_complete/on_error call, so a call made on that
 *     thread before the signal returns is caught, and one a subscriber makes
 *     later from its own thread is not (rule 2.4, untested in the TCK too);
 *   - request(0): a subscriber must request n > 0 (rule 3.9 makes a
 *     publisher fail the stream);
 *   - request or cancel after on_release (the subscription is no longer
 *     valid: rill/core.h).
 *
 * Null arguments (rule 2.13): C has no NullPointerException, and rill never
 * hands a subscriber NULL — a publisher that cannot serve gives a do-nothing
 * subscription then on_error (rill_reject, also what rill_subscribe(NULL, s)
 * does), rill_deliver_error_code falls back to an ENOMEM error, and NULL is
 * a valid item (items are words: rill_range(0, n) emits (void *)0 first).
 * The three required_spec213_..._mustThrowNullPointerException tests are
 * therefore SKIPPED with that reason; the publisher side's counterpart is
 * required_spec109_subscribeThrowNPEOnNullSubscriber.
 */

#define RILL_TCK_BLACKBOX_OPTIONS_VERSION 1

typedef struct rill_tck_blackbox_options {
    uint32_t version;   /* RILL_TCK_BLACKBOX_OPTIONS_VERSION; fields only grow at the end */
    /* --- valid for version 1 --- */
    /* Required. Returns a new subscriber for one test; the kit owns it (and
     * releases it). NULL fails the test that asked. */
    rill_subscriber *(*create)(void *ctx);
    /* Optional (the TCK's triggerRequest): makes s, which has received
     * on_subscribe, signal demand, for subscribers that do not request by
     * themselves. s is borrowed and stays valid during the call. Called on
     * the verifying thread, never inside a signal. NULL: the subscriber
     * must request on its own (from on_subscribe, say). */
    void (*trigger_request)(void *ctx, rill_subscriber *s);
    /* Optional: the i-th item of a test (see above); called on the
     * verifying thread, just before the item is sent. */
    void *(*create_element)(void *ctx, uint64_t i);
    void *ctx;                  /* passed to the three; borrowed */
    /* How long to wait for what the rules demand; 0: one second. A passing
     * test never waits this long; a failing one does. */
    uint64_t timeout_ns;
    /* How long to watch for what must not happen; 0: 20 ms. */
    uint64_t quiet_ns;
    /* A label for the report's title (copied); NULL: "subscriber". */
    const char *name;
} rill_tck_blackbox_options;

/* Fills o with the defaults: version set, everything else 0 or NULL. o NULL
 * is ignored. */
RILL_EXPORT void rill_tck_blackbox_options_init(rill_tck_blackbox_options *o);

/* Runs every SubscriberBlackboxVerification test (o is borrowed) on the
 * calling thread and returns a new report (rill_tck_report_free). Returns
 * NULL with errno: EINVAL (o NULL, a version below 1, or create NULL),
 * ENOMEM. */
RILL_EXPORT rill_tck_report *rill_tck_verify_subscriber_blackbox(const rill_tck_blackbox_options *o);

/* The whitebox probe (the TCK's WhiteboxSubscriberProbe): the subscriber
 * under test reports what it receives to it, and registers a "puppet" the
 * kit drives (the TCK's SubscriberPuppet). The probe is the kit's: it stays
 * valid until the verification returns. Every function is thread-safe, may
 * be called from inside the subscriber's signals, and ignores p == NULL. */
typedef struct rill_tck_probe rill_tck_probe;

/* Call from on_subscribe, once the subscription is stored. The kit calls
 * trigger_request(puppet, n) to make the subscriber call
 * rill_request(its subscription, n), and signal_cancel(puppet) to make it
 * call rill_cancel — on the verifying thread, never inside a signal, and
 * never after it has delivered the subscriber's on_release (so `puppet` may
 * be the subscriber's own state). Only the first registration counts (a
 * subscriber must cancel a second subscription, rule 2.5, not register it);
 * both functions are required (NULL is reported as a breach). */
RILL_EXPORT void rill_tck_probe_register_on_subscribe(rill_tck_probe *p,
                                                      void (*trigger_request)(void *puppet,
                                                                              uint64_t n),
                                                      void (*signal_cancel)(void *puppet),
                                                      void *puppet);
/* Call from on_next with the item received (before giving it away: the kit
 * compares the pointer with the item it sent, and never dereferences it). */
RILL_EXPORT void rill_tck_probe_register_on_next(rill_tck_probe *p, void *item);
/* Call from on_error; e is borrowed (the kit copies its code and message). */
RILL_EXPORT void rill_tck_probe_register_on_error(rill_tck_probe *p, const rill_error *e);
/* Call from on_complete. */
RILL_EXPORT void rill_tck_probe_register_on_complete(rill_tck_probe *p);

#define RILL_TCK_WHITEBOX_OPTIONS_VERSION 1

typedef struct rill_tck_whitebox_options {
    uint32_t version;   /* RILL_TCK_WHITEBOX_OPTIONS_VERSION; fields only grow at the end */
    /* --- valid for version 1 --- */
    /* Required. Returns a new subscriber for one test that reports to
     * `probe` (borrowed; see rill_tck_probe); the kit owns the subscriber.
     * NULL fails the test that asked. */
    rill_subscriber *(*create)(void *ctx, rill_tck_probe *probe);
    /* Optional: the i-th item of a test, as for blackbox verification. */
    void *(*create_element)(void *ctx, uint64_t i);
    void *ctx;                  /* borrowed */
    uint64_t timeout_ns;        /* 0: one second */
    uint64_t quiet_ns;          /* 0: 20 ms */
    const char *name;           /* NULL: "subscriber" */
} rill_tck_whitebox_options;

/* Fills o with the defaults (version set, the rest 0 or NULL); NULL ignored. */
RILL_EXPORT void rill_tck_whitebox_options_init(rill_tck_whitebox_options *o);

/* Runs every SubscriberWhiteboxVerification test (o is borrowed) on the
 * calling thread and returns a new report. Returns NULL with errno: EINVAL
 * (o NULL, a version below 1, or create NULL), ENOMEM. */
RILL_EXPORT rill_tck_report *rill_tck_verify_subscriber_whitebox(const rill_tck_whitebox_options *o);

/* ------------------------------------------------------------------------
 * Processor verification: the TCK's IdentityProcessorVerification.
 *
 * rill has no Processor type: an operator is a function that consumes an
 * upstream publisher and returns a publisher. The kit verifies an identity
 * operator `apply` (one that forwards every item unchanged, in order) both
 * ways, in one report:
 *   - as a publisher: every publisher test (the names of
 *     rill_tck_verify_publisher) runs on apply(a source of exactly n items);
 *     the source is rill_range(1, n), or create_element(ctx, i) for
 *     i = 0..n-1 when that is given. The failed publisher is
 *     create_failed(ctx), or apply(rill_fail(EIO, ...)) without it;
 *   - as a subscriber (the TCK's whitebox tests with a downstream subscriber
 *     as the puppet): the kit subscribes its checking subscriber to
 *     apply(the kit's instrumented upstream), drives the downstream side
 *     (request, cancel) and the upstream side (items within the demand the
 *     operator signalled upstream, on_complete, on_error, a second
 *     on_subscribe), and checks the operator's upstream face: it signals
 *     demand upstream when asked downstream (2.1), cancels upstream when
 *     downstream cancels (2.6, in the happy-path test), cancels a second
 *     subscription (2.5), passes on_complete and on_error on with or
 *     without requests (2.9, 2.10, 4.2), never calls into the upstream
 *     subscription from inside on_complete/on_error (2.3) or after the
 *     kit released it, forwards items unchanged and in order, and releases
 *     its downstream subscriber once the kit has released it.
 * The kit's upstream is single-use and unicast, signals on the verifying
 * thread (on_subscribe on whichever thread the operator subscribes from),
 * and never sends more than the operator requested. Like the TCK, test 205
 * hands the operator's upstream face a second on_subscribe — the one signal
 * the kit sends that rill's own publishers never do — so an operator that
 * does not guard against it may misbehave badly (a crash ends the whole
 * verification: C cannot catch it the way TestNG catches an exception).
 *
 * Demand upstream: the Reactive Streams rules set no upper bound on what a
 * processor requests upstream (it may prefetch, or request RILL_UNBOUNDED
 * and keep a bounded store, as rill's on_backpressure_* do). When you
 * declare a bound in `prefetch`, the kit checks it (a rill test, not a TCK
 * one): total requested upstream <= total requested downstream + prefetch,
 * at every point it looks.
 *
 * TCK tests that need several subscribers sharing one upstream (a
 * multicast processor) are SKIPPED: a rill operator is cold, and each
 * downstream subscription subscribes upstream anew.
 */

#define RILL_TCK_PROCESSOR_OPTIONS_VERSION 1

typedef struct rill_tck_processor_options {
    uint32_t version;   /* RILL_TCK_PROCESSOR_OPTIONS_VERSION; fields only grow at the end */
    /* --- valid for version 1 --- */
    /* Required. Consumes `up` and returns a new reference to the identity
     * operator applied to it (NULL fails the test that asked). */
    rill_publisher *(*apply)(void *ctx, rill_publisher *up);
    /* Optional: a failed publisher for the publisher tests (signals
     * on_subscribe, then on_error); NULL: apply(rill_fail(EIO, ...)). */
    rill_publisher *(*create_failed)(void *ctx);
    /* Optional: the i-th item (see above). The kit's own subscriber keeps
     * the items it receives without freeing them, and items the operator
     * does not deliver go to its discard hooks, as always: return pointers
     * that need no freeing (into an array you own, say). */
    void *(*create_element)(void *ctx, uint64_t i);
    void *ctx;                  /* passed to the three; borrowed */
    /* As rill_tck_publisher_options (init sets RILL_UNBOUNDED - 1). */
    uint64_t max_elements;
    uint32_t bounded_depth;     /* 0: 1 */
    /* The most the operator may request upstream beyond what downstream
     * has requested (its documented prefetch or buffer). init sets
     * RILL_UNBOUNDED: no bound, and the kit's demand test is SKIPPED. */
    uint64_t prefetch;
    uint64_t timeout_ns;        /* 0: one second */
    uint64_t quiet_ns;          /* 0: 20 ms */
    int skip_stochastic;
    uint32_t stochastic_runs;   /* 0: 100 */
    const char *name;           /* NULL: "processor" */
} rill_tck_processor_options;

/* Fills o with the defaults: version set, max_elements RILL_UNBOUNDED - 1,
 * prefetch RILL_UNBOUNDED, everything else 0 or NULL. o NULL is ignored. */
RILL_EXPORT void rill_tck_processor_options_init(rill_tck_processor_options *o);

/* Runs every IdentityProcessorVerification test (o is borrowed) on the
 * calling thread and returns a new report. Returns NULL with errno: EINVAL
 * (o NULL, a version below 1, or apply NULL), ENOMEM. */
RILL_EXPORT rill_tck_report *rill_tck_verify_processor(const rill_tck_processor_options *o);

#ifdef __cplusplus
}
#endif

#endif /* RILL_TCK_H */
