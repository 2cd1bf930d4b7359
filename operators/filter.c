/* operators/filter.c — rill_filter: keeps the items a predicate accepts.
 *
 * A dropped item costs downstream no demand: the filter asks upstream for a
 * replacement (request(1) from inside on_next, which the upstream's drain
 * loop serves without recursion). Once downstream has asked for
 * RILL_UNBOUNDED the replacement request is pointless and skipped.
 *
 * Over a synchronous source (or a chain already fused) no relay is built:
 * the predicate becomes a step of a fused chain (lib/fuse.c), where a
 * dropped item simply is not counted against demand.
 */
#include "fuse-internal.h"
#include "relay-internal.h"
#include "stage-internal.h"

#include <rill/operators.h>

#include <errno.h>

typedef struct filter_publisher {
    rill__operator op;
    rill_pred_fn fn;
} filter_publisher;

typedef struct filter_relay {
    rill__relay r;
    rill_pred_fn fn;
    void *ctx;
    atomic_int unbounded;   /* downstream requested RILL_UNBOUNDED */
} filter_relay;

static void filter_on_next(rill_subscriber *self, void *item)
{
    filter_relay *f = (filter_relay *)rill__relay_of_in(self);
    if (f->r.done) {
        rill__discard(f->r.ctx, item);
        return;
    }
    int rc = f->fn(f->ctx, item);
    if (rc > 0) {
        rill__on_next(f->r.down, item);
        return;
    }
    rill__discard(f->r.ctx, item);
    if (rc < 0)
        rill__relay_end(&f->r, -rc);
    else if (!atomic_load_explicit(&f->unbounded, memory_order_relaxed))
        rill__request(f->r.up, 1);
}

static const struct rill_subscriber_ops filter_in_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = rill__relay_on_subscribe,
    .on_next = filter_on_next,
    .on_error = rill__relay_on_error,
    .on_complete = rill__relay_on_complete,
    .on_release = rill__relay_on_release,
    .context = rill__relay_context,
};

static void filter_request(rill_subscription *s, uint64_t n)
{
    filter_relay *f = (filter_relay *)rill__relay_of_out(s);
    if (n == RILL_UNBOUNDED)
        atomic_store_explicit(&f->unbounded, 1, memory_order_relaxed);
    rill__request(f->r.up, n);
}

static const struct rill_subscription_ops filter_out_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = filter_request,
    .cancel = rill__relay_cancel,
};

static void filter_subscribe(rill_publisher *self, rill_subscriber *s)
{
    filter_publisher *fp = (filter_publisher *)self;
    filter_relay *f = rill__relay_new(sizeof *f, &filter_in_ops, &filter_out_ops, self, s);
    if (!f)
        return;
    f->fn = fp->fn;
    f->ctx = fp->op.ctx;
    rill__relay_subscribe(&f->r, fp->op.up);
}

static const struct rill_publisher_ops filter_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = filter_subscribe,
    .destroy = rill__operator_destroy,
};

rill_publisher *rill_filter_ex(rill_publisher *up, rill_pred_fn fn, void *ctx,
                               void (*ctx_free)(void *ctx))
{
    if (!fn)
        return rill__operator_fail(up, ctx, ctx_free, EINVAL);
    rill_publisher *fused;
    rill__step step = {
        .kind = RILL__STEP_FILTER, .call = { .pred = fn, .ctx = ctx }, .ctx_free = ctx_free,
    };
    if (rill__fuse(up, &step, &fused))
        return fused;
    filter_publisher *fp = rill__operator_new(sizeof *fp, &filter_ops, up, ctx, ctx_free);
    if (fp)
        fp->fn = fn;
    return fp ? &fp->op.base : NULL;
}

rill_publisher *rill_filter(rill_publisher *up, rill_pred_fn fn, void *ctx)
{
    return rill_filter_ex(up, fn, ctx, NULL);
}
