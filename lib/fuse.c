/* lib/fuse.c — operator fusion (see fuse-internal.h).
 *
 * A fused publisher is a synchronous source plus a program of steps (map,
 * filter, take), in chain order. Subscribing copies the program into the
 * subscription, where the pull engine (lib/pull.c) runs it on every item the
 * source produces, between the source and the real subscriber. Nothing is
 * allocated per item, and only delivered items count against demand.
 *
 * Why the fused chain behaves exactly like the relays it replaces:
 *  - every stage of a fused chain has the same downstream subscriber, so
 *    every step discards into the same hooks: that subscriber's context,
 *    taken when subscribing, as each relay would have taken it;
 *  - a mapper or predicate failure discards the failing item, stops pulling
 *    (the relay's cancel upstream) and signals on_error(code);
 *  - take counts the items that reach its position; when its count runs out
 *    the item still passes through the later steps, and the stream completes
 *    right after it without another pull (take cancels upstream first);
 *    take(0) completes right after on_subscribe without starting the source;
 *  - cancel, request(0) and re-entrant requests go to the engine, which
 *    keeps rules 1.3, 3.3 and 3.9 for the whole chain as it does for a
 *    source alone.
 *
 * Ownership. Operators consume their upstream. When that was the only
 * reference to a fused chain, nobody else can subscribe to it or see it
 * again, so the new publisher takes its definition over (the steps and the
 * ctx_free each owes) and frees the old shell. Otherwise the upstream stays
 * shared: the new publisher copies the steps, owes none of their ctx_free,
 * and keeps the upstream reference (`parent`) so those contexts outlive it.
 * Each subscription references its fused publisher, so a ctx_free runs only
 * after the publisher and all its subscriptions are gone.
 */
#include "alloc-internal.h"
#include "atomic-internal.h"
#include "fuse-internal.h"
#include "pull-internal.h"

#include <errno.h>
#include <string.h>

typedef struct fused {
    rill_publisher base;
    rill_publisher *source;   /* reference: a synchronous source */
    rill_publisher *parent;   /* reference to a shared upstream chain, or NULL */
    uint32_t nsteps;
    rill__step steps[];       /* chain order; ctx_free set where this publisher owes it */
} fused;

static void fused_subscribe(rill_publisher *self, rill_subscriber *s)
{
    fused *f = (fused *)self;
    rill__pull_subscribe_fused(f->source, f->steps, f->nsteps, self, s);
}

static void fused_destroy(rill_publisher *self)
{
    fused *f = (fused *)self;
    for (uint32_t i = 0; i < f->nsteps; i++)
        if (f->steps[i].ctx_free)
            f->steps[i].ctx_free(f->steps[i].call.ctx);
    rill_publisher_unref(f->parent);
    rill_publisher_unref(f->source);
    rill__free(f);
}

static const struct rill_publisher_ops fused_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = fused_subscribe,
    .destroy = fused_destroy,
};

/* 1 when the caller's reference to p is the only one. Acquire: whoever
 * dropped the other references (their subscriptions ended) did so before
 * the caller now reuses the definition. */
static int sole_owner(rill_publisher *p)
{
    return __atomic_load_n(&p->refs_private, __ATOMIC_ACQUIRE) == 1;
}

int rill__fuse(rill_publisher *up, const rill__step *step, rill_publisher **out)
{
    fused *parent = up && up->ops == &fused_ops ? (fused *)up : NULL;
    if (!parent && !rill__source_of(up))
        return 0;
    uint32_t n = parent ? parent->nsteps : 0;
    fused *f = rill__malloc(sizeof *f + ((size_t)n + 1) * sizeof(rill__step));
    if (!f) {
        rill_publisher_unref(up);
        if (step->ctx_free)
            step->ctx_free(step->call.ctx);
        errno = ENOMEM;
        *out = NULL;
        return 1;
    }
    rill_publisher_init(&f->base, &fused_ops);
    f->nsteps = n + 1;
    f->steps[n] = *step;
    if (!parent) {
        f->source = up;   /* the consumed reference */
        f->parent = NULL;
    } else if (sole_owner(up)) {
        memcpy(f->steps, parent->steps, (size_t)n * sizeof(rill__step));
        f->source = parent->source;   /* every reference and debt moves over */
        f->parent = parent->parent;
        rill__free(parent);
    } else {
        memcpy(f->steps, parent->steps, (size_t)n * sizeof(rill__step));
        for (uint32_t i = 0; i < n; i++)
            f->steps[i].ctx_free = NULL;   /* the parent still owes them */
        f->source = rill_publisher_ref(parent->source);
        f->parent = up;   /* the consumed reference keeps those contexts alive */
    }
    *out = &f->base;
    return 1;
}
