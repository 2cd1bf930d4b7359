/* operators/map.c — rill_map: applies a function to every item.
 *
 * A relay (lib/relay-internal.h): upstream's signals are serial, so the
 * mapper runs from inside them with no further synchronisation. A mapper
 * failure ends the stream: the failed item goes to the discard hooks,
 * upstream is cancelled, and downstream gets on_error(code).
 *
 * Over a synchronous source (or a chain already fused) no relay is built:
 * the mapper becomes a step of a fused chain (lib/fuse.c).
 */
#include "fuse-internal.h"
#include "relay-internal.h"
#include "stage-internal.h"

#include <rill/operators.h>

#include <errno.h>

typedef struct map_publisher {
    rill__operator op;
    rill_map_fn fn;
} map_publisher;

typedef struct map_relay {
    rill__relay r;
    rill_map_fn fn;
    void *ctx;
} map_relay;

static void map_on_next(rill_subscriber *self, void *item)
{
    map_relay *m = (map_relay *)rill__relay_of_in(self);
    if (m->r.done) {
        rill__discard(m->r.ctx, item);
        return;
    }
    void *out = NULL;
    int rc = m->fn(m->ctx, item, &out);
    if (rc == 0) {
        rill__on_next(m->r.down, out);
        return;
    }
    rill__discard(m->r.ctx, item);
    rill__relay_end(&m->r, rc > 0 ? rc : -rc);
}

static const struct rill_subscriber_ops map_in_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = rill__relay_on_subscribe,
    .on_next = map_on_next,
    .on_error = rill__relay_on_error,
    .on_complete = rill__relay_on_complete,
    .on_release = rill__relay_on_release,
    .context = rill__relay_context,
};

static void map_subscribe(rill_publisher *self, rill_subscriber *s)
{
    map_publisher *mp = (map_publisher *)self;
    map_relay *m = rill__relay_new(sizeof *m, &map_in_ops, &rill__relay_out_ops, self, s);
    if (!m)
        return;
    m->fn = mp->fn;
    m->ctx = mp->op.ctx;
    rill__relay_subscribe(&m->r, mp->op.up);
}

static const struct rill_publisher_ops map_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = map_subscribe,
    .destroy = rill__operator_destroy,
};

rill_publisher *rill_map_ex(rill_publisher *up, rill_map_fn fn, void *ctx,
                            void (*ctx_free)(void *ctx))
{
    if (!fn)
        return rill__operator_fail(up, ctx, ctx_free, EINVAL);
    rill_publisher *fused;
    rill__step step = {
        .kind = RILL__STEP_MAP, .call = { .map = fn, .ctx = ctx }, .ctx_free = ctx_free,
    };
    if (rill__fuse(up, &step, &fused))
        return fused;
    map_publisher *mp = rill__operator_new(sizeof *mp, &map_ops, up, ctx, ctx_free);
    if (mp)
        mp->fn = fn;
    return mp ? &mp->op.base : NULL;
}

rill_publisher *rill_map(rill_publisher *up, rill_map_fn fn, void *ctx)
{
    return rill_map_ex(up, fn, ctx, NULL);
}
