/* rill/tck.h — the conformance kit: the Reactive Streams TCK, in C.
 *
 * Link with librill-tck (pkg-config: rill-tck). The kit checks a publisher
 * against the rules of the Reactive Streams specification by running the
 * TCK's PublisherVerification tests under the TCK's own names
 * (required_spec101_..., stochastic_spec103_..., optional_spec111_...), so a
 * report reads like the JVM one. Each test subscribes the kit's own checking
 * subscriber, drives it, and waits (with timeouts) for what the rule demands.
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
/* Prints the report as a table (one line per test: status, name, reason)
 * with a summary line. r NULL or out NULL is ignored. */
RILL_EXPORT void rill_tck_report_print(const rill_tck_report *r, FILE *out);
/* The text of a status: "PASSED", "FAILED" or "SKIPPED". */
RILL_EXPORT const char *rill_tck_status_name(rill_tck_status s);
/* Frees a report; NULL is ignored. */
RILL_EXPORT void rill_tck_report_free(rill_tck_report *r);

#ifdef __cplusplus
}
#endif

#endif /* RILL_TCK_H */
