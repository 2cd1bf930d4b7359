/* operators/on_discard.c — rill_on_discard: a discard hook for everything
 * upstream of this point.
 *
 * The stage itself only relays signals; its work happens at subscribe time,
 * when it puts its hook in front of the downstream subscriber's context and
 * exposes that chain upstream (in.context). Each context node holds a
 * reference to this publisher, so the user's ctx stays alive — and ctx_free
 * waits — until the last stage that may discard into the chain is gone,
 * which can be after the downstream subscriber was released.
 */
#include "relay-internal.h"

#include <rill/operators.h>

#include <errno.h>

typedef struct discard_publisher {
    rill__operator op;
    void (*fn)(void *ctx, void *item);
} discard_publisher;

static void hook_call(void *pub, void *item)
{
    discard_publisher *dp = pub;
    dp->fn(dp->op.ctx, item);
}

static void hook_release(void *pub)
{
    rill_publisher_unref(pub);
}

static const struct rill_subscriber_ops discard_in_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = rill__relay_on_subscribe,
    .on_next = rill__relay_on_next,
    .on_error = rill__relay_on_error,
    .on_complete = rill__relay_on_complete,
    .on_release = rill__relay_on_release,
    .context = rill__relay_context,
};

static void discard_subscribe(rill_publisher *self, rill_subscriber *s)
{
    discard_publisher *dp = (discard_publisher *)self;
    rill__relay *r = rill__relay_new(sizeof *r, &discard_in_ops, &rill__relay_out_ops, self, s);
    if (!r)
        return;
    /* The relay holds downstream's chain; put this hook in front of it. */
    rill_context *chain = rill_context_new(hook_call, rill_publisher_ref(self), hook_release,
                                           r->ctx);
    if (!chain) {
        rill__relay_abort(r, ENOMEM);
        return;
    }
    rill_context_unref(r->ctx);
    r->ctx = chain;
    rill__relay_subscribe(r, dp->op.up);
}

static const struct rill_publisher_ops discard_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = discard_subscribe,
    .destroy = rill__operator_destroy,
};

rill_publisher *rill_on_discard_ex(rill_publisher *up, void (*fn)(void *ctx, void *item),
                                   void *ctx, void (*ctx_free)(void *ctx))
{
    if (!fn)
        return rill__operator_fail(up, ctx, ctx_free, EINVAL);
    discard_publisher *dp = rill__operator_new(sizeof *dp, &discard_ops, up, ctx, ctx_free);
    if (dp)
        dp->fn = fn;
    return dp ? &dp->op.base : NULL;
}

rill_publisher *rill_on_discard(rill_publisher *up, void (*fn)(void *ctx, void *item), void *ctx)
{
    return rill_on_discard_ex(up, fn, ctx, NULL);
}
