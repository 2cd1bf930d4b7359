/* rill/metrics.h — counters a telemetry user can poll and export.
 *
 * A rill_metrics object is a named set of counters and gauges. A stage fed
 * one (through rill_probe, or the `metrics` field of a stage's options)
 * keeps it current; the user polls it with rill_metrics_snapshot or renders
 * several at once as Prometheus text with rill_metrics_format_prometheus.
 *
 * Consistency: every field of one snapshot is consistent with the others,
 * also while stages on other threads are updating the object. For a stage
 * with a queue, received == emitted + discarded_* + queued holds in every
 * snapshot; a snapshot never shows emitted > received.
 *
 * Ownership: a rill_metrics * passed to any rill function (rill_probe, an
 * options field) is borrowed: the library takes its own reference, so the
 * caller may unref its own at once. Several stages (or several
 * subscriptions of one probe) may share one object: their counts add up.
 *
 * Threading: every function here may be called from any thread. A stage's
 * update costs one atomic compare-and-swap and a few stores; a snapshot
 * reads without locking and retries when an update overlapped it (after
 * many retries in a row it briefly takes the writers' lock, so it always
 * finishes), so polling does not stall the stages.
 */
#ifndef RILL_METRICS_H
#define RILL_METRICS_H

#include "core.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rill_metrics rill_metrics;   /* opaque, refcounted */

#define RILL_METRICS_VALUES_VERSION 1

/* Filled in by rill_metrics_snapshot. Fields only grow at the end; a new
 * field comes with a new RILL_METRICS_VALUES_VERSION. A stage leaves the
 * fields it has no use for at 0 (a probe has no queue: queued, capacity,
 * paused are 0). */
typedef struct rill_metrics_values {
    uint32_t version;                 /* set by the caller to RILL_METRICS_VALUES_VERSION */
    uint64_t received, emitted;       /* items in from upstream / out downstream */
    uint64_t discarded_filtered, discarded_overflow, discarded_cancelled, discarded_expired;
    uint64_t refused;                 /* rill_emit calls that returned EAGAIN */
    uint64_t queued, queued_high_water, capacity;
    uint64_t demand_outstanding;      /* requested downstream, not yet emitted (RILL_UNBOUNDED: unbounded) */
    uint32_t paused;                  /* 1 while above the high watermark */
    uint64_t pauses;                  /* times it went from unpaused to paused */
} rill_metrics_values;

/* Returns a new reference to a metrics object with every field 0. `name`
 * (copied) labels its Prometheus series as stage="name"; any bytes are
 * allowed (they are escaped on output; Prometheus expects UTF-8).
 * Errors: name == NULL gives NULL with errno EINVAL; no memory gives NULL
 * with errno ENOMEM. */
RILL_EXPORT rill_metrics *rill_metrics_new(const char *name);
/* Returns m (a new reference to the same object); NULL gives NULL. */
RILL_EXPORT rill_metrics *rill_metrics_ref(rill_metrics *m);
/* Releases one reference; NULL is ignored. */
RILL_EXPORT void rill_metrics_unref(rill_metrics *m);

/* Copies a consistent view of m (borrowed) into *out. The caller sets
 * out->version first. Returns 0, or EINVAL when m or out is NULL or
 * out->version is 0 (then *out is untouched). A version newer than this
 * library knows is accepted: the library fills the fields of the version it
 * knows and sets out->version to that version, so a program built against a
 * newer header can tell which fields are valid. */
RILL_EXPORT int rill_metrics_snapshot(const rill_metrics *m, rill_metrics_values *out);

/* A pass-through stage that counts what passes through it into m
 * (borrowed; the probe takes its own reference). Every item it receives it
 * emits, so received == emitted; demand_outstanding is the demand its
 * downstream requested minus the items it emitted (RILL_UNBOUNDED once
 * downstream asked for unbounded demand). It counts what passes through
 * it, not what stages upstream of it drop: place it where you want to look.
 * Items that reach it after its stream has ended are discarded and counted
 * as received and discarded_cancelled. Counts of every subscription of the
 * returned publisher add up in m.
 * Consumes up. NULL up, or NULL m (up is still consumed), gives NULL with
 * errno EINVAL; no memory gives NULL with errno ENOMEM. */
RILL_EXPORT rill_publisher *rill_probe(rill_publisher *up, rill_metrics *m);

/* Writes the Prometheus text exposition (format 0.0.4) of the n metrics
 * objects in ms (borrowed; NULL entries are skipped) into buf, like
 * snprintf: at most len bytes including a terminating NUL (buf may be NULL
 * when len is 0). Returns the length of the whole text without the NUL;
 * a return value >= len means the text was truncated. Each metric family
 * has one # HELP and one # TYPE line, then one series per object, labelled
 * stage="<name>" (backslash, double quote and newline escaped):
 *   rill_items_received_total, rill_items_emitted_total      counters
 *   rill_items_discarded_total{reason="filtered|overflow|cancelled|expired"}
 *   rill_emit_refused_total, rill_pauses_total                counters
 *   rill_queue_items, rill_queue_high_water_items,
 *   rill_queue_capacity_items, rill_paused                    gauges
 *   rill_demand_outstanding                                   gauge (+Inf: unbounded)
 * Each object is snapshot once per call, so its series agree. The counters
 * keep moving between calls: when sizing a buffer with a first call, leave
 * room to grow, or check the second call's return value. No objects (n == 0,
 * ms == NULL, or all entries NULL) give the empty text and 0. No memory for
 * the snapshots gives the empty text and 0 with errno ENOMEM. */
RILL_EXPORT size_t rill_metrics_format_prometheus(rill_metrics *const *ms, size_t n, char *buf,
                                                  size_t len);

#ifdef __cplusplus
}
#endif

#endif /* RILL_METRICS_H */
