/* lib/context.c — contexts: refcounted chains of discard hooks.
 *
 * A context node is immutable once made, so walking a chain needs no lock;
 * the refcount keeps each node (and so its hook's ctx) alive for as long as
 * any stage may still discard into it, which can outlive the subscriber that
 * installed it.
 */
#include "alloc-internal.h"
#include "atomic-internal.h"
#include "stage-internal.h"

#include <rill/stage.h>

#include <errno.h>

struct rill_context {
    uintptr_t refs;
    void (*fn)(void *ctx, void *item);
    void *ctx;
    void (*ctx_free)(void *ctx);
    rill_context *next;   /* reference */
};

rill_context *rill_context_new(void (*fn)(void *, void *), void *ctx, void (*ctx_free)(void *),
                               rill_context *next)
{
    if (!fn) {
        if (ctx_free)
            ctx_free(ctx);
        errno = EINVAL;
        return NULL;
    }
    rill_context *c = rill__malloc(sizeof *c);
    if (!c) {
        if (ctx_free)
            ctx_free(ctx);
        return NULL;
    }
    c->refs = 1;
    c->fn = fn;
    c->ctx = ctx;
    c->ctx_free = ctx_free;
    c->next = rill_context_ref(next);
    return c;
}

rill_context *rill_context_ref(rill_context *c)
{
    if (c)
        rill__plain_ref(&c->refs);
    return c;
}

void rill_context_unref(rill_context *c)
{
    /* Iterative, so a long chain cannot blow the stack. */
    while (c && rill__plain_unref(&c->refs) == 0) {
        rill_context *next = c->next;
        if (c->ctx_free)
            c->ctx_free(c->ctx);
        rill__free(c);
        c = next;
    }
}

void rill__context_discard_slow(rill_context *c, void *item)
{
    for (; c; c = c->next)
        c->fn(c->ctx, item);
}

void rill_context_discard(rill_context *c, void *item)
{
    rill__context_discard_slow(c, item);
}
