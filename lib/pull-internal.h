/* lib/pull-internal.h — the engine behind every synchronous source, fused
 * or not.
 *
 * A source is a publisher whose ops table is a `struct rill__source`: the
 * public publisher ops first (subscribe is always rill__pull_subscribe),
 * then the size of its per-subscription state, an init function, and the
 * pull ops that produce items from that state. The engine keeps the whole
 * protocol: demand (saturating), the queue-drain loop (request inside
 * on_next never recurses), cancel, request(0), exactly one terminal signal,
 * and on_release last and outside every other signal.
 *
 * Because every synchronous source has this one shape, operator fusion
 * (lib/fuse.c) runs any of them with a program of map / filter / take steps
 * applied inline: the same engine, the same subscription object, with the
 * steps appended to it (see fuse-internal.h).
 *
 * Why the emit loop lives in this header: a source that instantiates it with
 * its own `next` (rill__pull_emit(p, range_next) in a function of its own)
 * gets a loop in which producing an item is inlined instead of an indirect
 * call per item — on a synchronous chain that call and the memory round
 * trip of its out-parameters cost as much as a user function. Sources that
 * do not bother get the generic instantiation in pull.c.
 */
#ifndef RILL_PULL_INTERNAL_H
#define RILL_PULL_INTERNAL_H

#include <rill/stage.h>

#include "atomic-internal.h"
#include "fuse-internal.h"
#include "stage-internal.h"

#include <stddef.h>

enum {
    RILL__PULL_ITEM,    /* *item holds an item */
    RILL__PULL_LAST,    /* *item holds the last item: completion follows it */
    RILL__PULL_END,     /* no item: complete */
    RILL__PULL_ERROR,   /* no item: *err holds a new reference, signal it */
    RILL__PULL_MORE     /* (start only) nothing to signal yet */
};

typedef int (*rill__pull_next_fn)(void *state, void **item, rill_error **err);

struct rill__pull_ops {
    /* Called only by the drainer, one call at a time, with demand. */
    rill__pull_next_fn next;
    /* Called once before any demand: END or ERROR end the stream at once
     * (empty, fail, zero-length sources); MORE goes on. May be NULL. */
    int (*start)(void *state, rill_error **err);
    /* The subscription is over and the subscriber released: drop what the
     * state holds. May be NULL. */
    void (*finish)(void *state);
};

typedef struct rill__pull rill__pull;

/* The ops table of a synchronous source publisher. `pub` must come first:
 * the publisher's base points at it. */
struct rill__source {
    struct rill_publisher_ops pub;   /* .subscribe = rill__pull_subscribe */
    size_t state_size;               /* per-subscription state, zeroed before init */
    /* Fills the state of one new subscription of `self` (taking whatever
     * references it needs; finish drops them). Cannot fail. May be NULL. */
    void (*init)(rill_publisher *self, void *state);
    struct rill__pull_ops pull;
    /* Optional: rill__pull_emit(p, <this source's next>), so that the
     * source's next is inlined into the loop. NULL: the generic loop. */
    int (*emit)(rill__pull *p);
};

/* The subscribe op of every source: allocates the subscription (rejecting s
 * with ENOMEM when it cannot), inits the state and starts it. */
void rill__pull_subscribe(rill_publisher *self, rill_subscriber *s);

/* The source table behind p, or NULL when p is not a synchronous source. */
static inline const struct rill__source *rill__source_of(const rill_publisher *p)
{
    return p && p->ops->subscribe == rill__pull_subscribe ? (const struct rill__source *)p->ops
                                                           : NULL;
}

/* For lib/fuse.c: subscribes s to the source `src` (borrowed) with a
 * program of `nsteps` steps copied from `steps` (a take step's `remaining`
 * is its limit). `owner` (borrowed; the subscription takes a reference)
 * keeps the steps' user contexts alive until the subscription has ended.
 * No memory: s is rejected with ENOMEM. */
void rill__pull_subscribe_fused(rill_publisher *src, const rill__step *steps, uint32_t nsteps,
                                rill_publisher *owner, rill_subscriber *s);

/* ------------------------------------------------------------------------
 * The subscription and its emit loop (see the top of pull.c for the
 * drain's invariants). Everything below is the engine's; sources only
 * instantiate rill__pull_emit.
 *
 * A fused program is compiled at subscribe time: take steps at its end
 * become `limit`, a cap on deliveries that the loop folds into its demand
 * batches; what remains is classified into a shape, and the common shapes
 * (none, map, filter, map→filter, filter→map) get loops of their own, with
 * the steps' calls written out. Any other program runs through the
 * out-of-line interpreter, rill__pull_run_steps.
 */

enum { RILL__PULL_RUNNING = 0, RILL__PULL_CANCELLED = 1, RILL__PULL_BAD_REQUEST = 2 };

enum {
    RILL__SHAPE_NONE,   /* no step (a plain source, or takes only) */
    RILL__SHAPE_M,      /* map */
    RILL__SHAPE_F,      /* filter */
    RILL__SHAPE_MF,     /* map, filter */
    RILL__SHAPE_FM,     /* filter, map */
    RILL__SHAPE_ANY     /* anything else: the interpreter */
};

#define RILL__PULL_NO_LIMIT UINT64_MAX

struct rill__pull {
    /* Read per item by the drainer, together at the front. */
    rill_subscription sub;
    rill_subscriber *down;
    void (*on_next)(rill_subscriber *, void *);   /* down's, never NULL */
    rill__call head[2];         /* the first two steps' calls, at a fixed offset:
                                   what the shaped loops make */
    rill_context *ctx;          /* reference: the hooks downstream (fused only) */
    atomic_int stop;            /* RILL__PULL_RUNNING, _CANCELLED or _BAD_REQUEST */
    int shape;                  /* RILL__SHAPE_* */
    /* Written by requesting threads. */
    _Atomic uint64_t requested;
    _Atomic uint32_t wip;
    /* The rest: per batch or once. */
    int take_zero;              /* a take(0) step: complete before starting */
    int started;                /* drainer-only */
    uint64_t limit;             /* deliveries the trailing takes still allow (drainer-only) */
    const struct rill__source *src;
    rill__step *steps;          /* the program less its trailing takes, ended by
                                   RILL__STEP_END (drainer-only); NULL when plain */
    rill_publisher *owner;      /* reference: the fused publisher (fused only) */
    max_align_t state[];
};

#define RILL__ALWAYS_INLINE inline __attribute__((always_inline))
#define RILL__UNLIKELY(x) __builtin_expect(!!(x), 0)

/* What the steps make of an item. */
enum {
    RILL__STEP_PASS = 0,   /* deliver it */
    RILL__STEP_DROP = 1,   /* it went to the discard hooks: next item, no demand used */
    RILL__STEP_OVER = 2    /* the stream ended (signalled) while running the steps */
};

/* Out of line (pull.c): the rare ends, each returning 1 or RILL__STEP_OVER. */
int rill__pull_end(rill__pull *p, int rc, rill_error *err);   /* END: complete; ERROR: signal err */
int rill__pull_stopped(rill__pull *p, int stop);              /* cancel: nothing; request(0): EINVAL */
int rill__pull_take_done(rill__pull *p);                      /* a take's last item went out */
int rill__pull_map_failed(rill__pull *p, void *item, int rc);
int rill__pull_pred_failed(rill__pull *p, void *item, int rc);
/* The source returned something but a plain item (LAST, END, ERROR). When
 * it returned LAST, `take_hit` says the item, if delivered, is the last one
 * the trailing takes allow. Returns 1. */
int rill__pull_tail(rill__pull *p, int rc, void *item, rill_error *err, int take_hit);
/* The whole program on *item, out of line (the rare paths of every
 * shape). Returns a RILL__STEP_*. */
int rill__pull_run_steps(rill__pull *p, void **item);
/* A take step at st - 1 let item through as its last: runs the steps from
 * st, delivers the item if they keep it, and completes. RILL__STEP_OVER. */
int rill__pull_after_take(rill__pull *p, rill__step *st, void *item);

static RILL__ALWAYS_INLINE int rill__pull_map(rill__pull *p, const rill__call *c, void **item)
{
    void *out = NULL;
    int rc = c->map(c->ctx, *item, &out);
    if (RILL__UNLIKELY(rc != 0))
        return rill__pull_map_failed(p, *item, rc);
    *item = out;
    return RILL__STEP_PASS;
}

static RILL__ALWAYS_INLINE int rill__pull_filter(rill__pull *p, const rill__call *c, void *item)
{
    int rc = c->pred(c->ctx, item);
    if (rc > 0)
        return RILL__STEP_PASS;
    if (RILL__UNLIKELY(rc < 0))
        return rill__pull_pred_failed(p, item, rc);
    rill__discard(p->ctx, item);
    return RILL__STEP_DROP;
}

/* The interpreter, for programs of RILL__SHAPE_ANY: map and filter steps
 * inline, the end of a take out of line. */
static RILL__ALWAYS_INLINE int rill__pull_interpret(rill__pull *p, void **item)
{
    for (rill__step *st = p->steps;; st++) {
        int s;
        if (st->kind == RILL__STEP_MAP)
            s = rill__pull_map(p, &st->call, item);
        else if (st->kind == RILL__STEP_FILTER)
            s = rill__pull_filter(p, &st->call, *item);
        else if (st->kind == RILL__STEP_END)
            return RILL__STEP_PASS;
        else if (--st->remaining != 0)
            continue;
        else
            return rill__pull_after_take(p, st + 1, *item);
        if (s != RILL__STEP_PASS)
            return s;
    }
}

/* The steps of a program of `shape` (a constant at each call site). */
static RILL__ALWAYS_INLINE int rill__pull_steps(rill__pull *p, void **item, int shape)
{
    int s;
    switch (shape) {
    case RILL__SHAPE_NONE:
        return RILL__STEP_PASS;
    case RILL__SHAPE_M:
        return rill__pull_map(p, &p->head[0], item);
    case RILL__SHAPE_F:
        return rill__pull_filter(p, &p->head[0], *item);
    case RILL__SHAPE_MF:
        s = rill__pull_map(p, &p->head[0], item);
        return s != RILL__STEP_PASS ? s : rill__pull_filter(p, &p->head[1], *item);
    case RILL__SHAPE_FM:
        s = rill__pull_filter(p, &p->head[0], *item);
        return s != RILL__STEP_PASS ? s : rill__pull_map(p, &p->head[1], item);
    default:
        return rill__pull_interpret(p, item);
    }
}

/* Emits while there is demand; returns 1 when the stream is over.
 *
 * Demand is taken in batches: `left` is what the loop may still deliver in
 * this batch (the demand not yet used, capped by the trailing takes'
 * limit), and `e` counts what was delivered since the shared counter was
 * last settled, including the batch in progress. Per item the loop pays one
 * relaxed load of the stop flag (a cancel from inside on_next stops it at
 * once), the source's next, the steps, on_next, and a register decrement;
 * everything unusual leaves the loop through an out-of-line function. */
static RILL__ALWAYS_INLINE int rill__pull_emit_loop(rill__pull *p, rill__pull_next_fn next,
                                                    void *state, int shape)
{
    /* p->down and p->on_next are read per item rather than kept in
     * registers: the loads are as cheap as the moves, and the registers go
     * to the source's state. */
    uint64_t now = rill__load_acquire(&p->requested);
    uint64_t e = 0;
    for (;;) {
        uint64_t left = now - e;
        if (p->limit != RILL__PULL_NO_LIMIT) {
            if (left > p->limit)
                left = p->limit;
            p->limit -= left;   /* reserved for this batch */
        }
        e += left;
        while (left != 0) {
            int stop = rill__load_relaxed(&p->stop);
            if (RILL__UNLIKELY(stop != 0))
                return rill__pull_stopped(p, stop);
            void *item = NULL;
            rill_error *err = NULL;
            int rc = next(state, &item, &err);
            if (RILL__UNLIKELY(rc != RILL__PULL_ITEM))
                return rill__pull_tail(p, rc, item, err, left == 1 && p->limit == 0);
            int s = rill__pull_steps(p, &item, shape);
            if (s != RILL__STEP_PASS) {
                if (s == RILL__STEP_DROP)
                    continue;   /* a dropped item costs no demand */
                return 1;
            }
            p->on_next(p->down, item);
            left--;
        }
        /* The batch is used up. The takes' limit first: take completes
         * right after its last item, before anything else. */
        if (p->limit == 0)
            return rill__pull_take_done(p);
        int stop = rill__load_relaxed(&p->stop);
        if (stop)
            return rill__pull_stopped(p, stop);
        /* More may have been requested meanwhile (requests only add while
         * we drain); if not, settle what was delivered. */
        now = rill__load_acquire(&p->requested);
        if (now == e) {
            now = rill__demand_produced(&p->requested, e);
            e = 0;
            if (now == 0)
                return 0;
        }
    }
}

/* The emit loop for a source whose next is `next`; a source instantiates it
 * in a function of its own, named in its table's `emit`. `state` is the
 * one `next` works on: p->state, or a local copy of it that the source
 * writes back afterwards — only the drainer ever touches the state, and a
 * copy whose address goes nowhere else can live in registers. */
static RILL__ALWAYS_INLINE int rill__pull_emit(rill__pull *p, rill__pull_next_fn next, void *state)
{
    switch (p->shape) {
    case RILL__SHAPE_NONE:
        return rill__pull_emit_loop(p, next, state, RILL__SHAPE_NONE);
    case RILL__SHAPE_M:
        return rill__pull_emit_loop(p, next, state, RILL__SHAPE_M);
    case RILL__SHAPE_F:
        return rill__pull_emit_loop(p, next, state, RILL__SHAPE_F);
    case RILL__SHAPE_MF:
        return rill__pull_emit_loop(p, next, state, RILL__SHAPE_MF);
    case RILL__SHAPE_FM:
        return rill__pull_emit_loop(p, next, state, RILL__SHAPE_FM);
    default:
        return rill__pull_emit_loop(p, next, state, RILL__SHAPE_ANY);
    }
}

#endif
