/* rill — Reactive Streams for C.
 *
 * The umbrella header: include this one. The parts:
 *   rill/core.h       errors, subscribers made of callbacks, request/cancel,
 *                     subscribe, publisher references, the allocator
 *   rill/sources.h    range, from_array, just, empty, fail, generate
 *   rill/operators.h  map, filter, take, on_discard, observe_on, subscribe_on,
 *                     interval, timer, delay
 *   rill/scheduler.h  schedulers: thread pools, immediate, virtual time, loops
 *   rill/backpressure.h  on_backpressure_buffer/latest/drop, limit_rate
 *   rill/metrics.h    counters and gauges, rill_probe, Prometheus text
 *   rill/stage.h      ops tables for writing your own stages
 * The conformance kit has its own header, rill/tck.h, and library, librill-tck
 * (pkg-config rill-tck).
 */
#ifndef RILL_H
#define RILL_H

#include "rill/core.h"
#include "rill/stage.h"
#include "rill/sources.h"
#include "rill/operators.h"
#include "rill/scheduler.h"
#include "rill/backpressure.h"
#include "rill/metrics.h"
#include "rill/emitter.h"

#endif /* RILL_H */
