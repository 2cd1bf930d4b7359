/* rill — Reactive Streams for C.
 *
 * The umbrella header: include this one. The parts:
 *   rill/core.h       errors, subscribers made of callbacks, request/cancel,
 *                     subscribe, publisher references, the allocator
 *   rill/sources.h    range, from_array, just, empty, fail, generate
 *   rill/operators.h  map, filter, take, on_discard
 *   rill/scheduler.h  schedulers: thread pools, immediate, writing your own
 *   rill/stage.h      ops tables for writing your own stages
 */
#ifndef RILL_H
#define RILL_H

#include "rill/core.h"
#include "rill/stage.h"
#include "rill/sources.h"
#include "rill/operators.h"
#include "rill/scheduler.h"

#endif /* RILL_H */
