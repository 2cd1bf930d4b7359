/* lib/relay.c — see relay-internal.h. */
#include "alloc-internal.h"
#include "stage-internal.h"
#include "relay-internal.h"

#include <errno.h>

/* ---------------------------------------------------------------- operators */

void *rill__operator_fail(rill_publisher *up, void *ctx, void (*ctx_free)(void *), int code)
{
    rill_publisher_unref(up);
    if (ctx_free)
        ctx_free(ctx);
    errno = code;
    return NULL;
}

void *rill__operator_new(size_t size, const struct rill_publisher_ops *ops, rill_publisher *up,
                         void *ctx, void (*ctx_free)(void *))
{
    if (!up)
        return rill__operator_fail(NULL, ctx, ctx_free, EINVAL);
    rill__operator *op = rill__calloc(size);
    if (!op)
        return rill__operator_fail(up, ctx, ctx_free, ENOMEM);
    rill_publisher_init(&op->base, ops);
    op->up = up;
    op->ctx = ctx;
    op->ctx_free = ctx_free;
    return op;
}

void rill__operator_destroy(rill_publisher *self)
{
    rill__operator *op = (rill__operator *)self;
    rill_publisher_unref(op->up);
    if (op->ctx_free)
        op->ctx_free(op->ctx);
    rill__free(op);
}

/* ---------------------------------------------------------------- relays */

void *rill__relay_new(size_t size, const struct rill_subscriber_ops *in_ops,
                      const struct rill_subscription_ops *out_ops, rill_publisher *owner,
                      rill_subscriber *down)
{
    rill__relay *r = rill__calloc(size);
    if (!r) {
        rill_reject(down, ENOMEM, NULL);
        return NULL;
    }
    r->in.ops = in_ops;
    r->out.ops = out_ops;
    r->down = down;
    r->ctx = rill_context_ref(rill_subscriber_context(down));
    r->owner = rill_publisher_ref(owner);
    return r;
}

static void relay_free(rill__relay *r)
{
    rill_context_unref(r->ctx);
    rill_publisher_unref(r->owner);
    rill__free(r);
}

void rill__relay_abort(rill__relay *r, int code)
{
    rill_reject(r->down, code, NULL);
    relay_free(r);
}

void rill__relay_subscribe(rill__relay *r, rill_publisher *up)
{
    rill_subscribe(up, &r->in);
}

void rill__relay_end(rill__relay *r, int code)
{
    if (r->done)
        return;
    r->done = 1;
    rill__cancel(r->up);
    if (atomic_load_explicit(&r->down_cancelled, memory_order_relaxed))
        return;
    if (code)
        rill_deliver_error_code(r->down, code, NULL);
    else
        rill__on_complete(r->down);
}

int rill__relay_accept(rill__relay *r, rill_subscription *s)
{
    if (r->up) {
        rill__cancel(s);   /* rule 2.5: the relay already has its subscription */
        return 0;
    }
    r->up = s;
    rill_deliver_subscribe(r->down, &r->out);
    return 1;
}

void rill__relay_on_subscribe(rill_subscriber *self, rill_subscription *s)
{
    rill__relay_accept(rill__relay_of_in(self), s);
}

void rill__relay_on_next(rill_subscriber *self, void *item)
{
    rill__relay *r = rill__relay_of_in(self);
    if (r->done)
        rill__discard(r->ctx, item);
    else
        rill__on_next(r->down, item);
}

void rill__relay_on_error(rill_subscriber *self, const rill_error *e)
{
    rill__relay *r = rill__relay_of_in(self);
    if (r->done)
        return;
    r->done = 1;
    rill__on_error(r->down, e);
}

void rill__relay_on_complete(rill_subscriber *self)
{
    rill__relay *r = rill__relay_of_in(self);
    if (r->done)
        return;
    r->done = 1;
    rill__on_complete(r->down);
}

void rill__relay_on_release(rill_subscriber *self)
{
    rill__relay *r = rill__relay_of_in(self);
    rill_deliver_release(r->down);
    relay_free(r);
}

rill_context *rill__relay_context(rill_subscriber *self)
{
    return rill__relay_of_in(self)->ctx;
}

void rill__relay_request(rill_subscription *s, uint64_t n)
{
    rill__request(rill__relay_of_out(s)->up, n);
}

void rill__relay_cancel(rill_subscription *s)
{
    rill__relay *r = rill__relay_of_out(s);
    atomic_store_explicit(&r->down_cancelled, 1, memory_order_relaxed);
    rill__cancel(r->up);
}

const struct rill_subscription_ops rill__relay_out_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = rill__relay_request,
    .cancel = rill__relay_cancel,
};
