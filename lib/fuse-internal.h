/* lib/fuse-internal.h — operator fusion: map, filter and take folded into
 * the loop of a synchronous source.
 *
 * rill_map, rill_filter and rill_take, applied to a synchronous source
 * (range, from_array, generate, just, empty, fail) or to a chain already
 * fused, do not build a relay: they return a fused publisher, which is the
 * source plus a program of steps. Its subscriptions run on the one pull
 * engine (lib/pull.c), which applies the steps to each item before
 * delivering it. Every guarantee of the unfused chain holds item for item:
 * see the top of lib/fuse.c.
 */
#ifndef RILL_FUSE_INTERNAL_H
#define RILL_FUSE_INTERNAL_H

#include <rill/operators.h>
#include <rill/stage.h>

#include <stdint.h>

/* RILL__STEP_END terminates a subscription's program. */
enum { RILL__STEP_MAP, RILL__STEP_FILTER, RILL__STEP_TAKE, RILL__STEP_END };

/* What a map or filter step calls. */
typedef struct rill__call {
    rill_map_fn map;             /* MAP */
    rill_pred_fn pred;           /* FILTER */
    void *ctx;                   /* the user's ctx */
} rill__call;

typedef struct rill__step {
    int kind;                    /* RILL__STEP_* */
    rill__call call;             /* MAP, FILTER */
    void (*ctx_free)(void *ctx); /* in a publisher: owed by it (NULL: borrowed or none) */
    uint64_t remaining;          /* TAKE: the limit; in a subscription, what is left */
} rill__step;

/* Folds `step` (copied) into up, which it consumes, when up is a synchronous
 * source or a fused chain. Returns 0 when it is neither (or NULL): nothing
 * was consumed, and the caller builds its usual operator. Returns 1 when it
 * was folded: *out is the new fused publisher, or NULL with errno ENOMEM
 * (up released, step->ctx_free(step->call.ctx) called). */
int rill__fuse(rill_publisher *up, const rill__step *step, rill_publisher **out);

#endif
