/* operators/probe.c — rill_probe: counts what passes through into a
 * rill_metrics.
 *
 * A relay (lib/relay-internal.h): items pass unchanged. Each item is counted
 * (received and emitted in one update, which also consumes one unit of
 * demand_outstanding) *before* it goes downstream, so a snapshot taken
 * inside the downstream on_next already includes it. Downstream demand is
 * counted before it is forwarded upstream, for the same reason: a
 * synchronous source emits inside the request, and its items must find the
 * demand already recorded.
 *
 * The probe counts only what reaches it: drops by stages upstream are
 * theirs to count. An item that arrives after the stream ended (the relay's
 * `done`) is discarded and counted received + discarded_cancelled, so
 * received == emitted + discarded holds for a probe too.
 */
#include "metrics-internal.h"
#include "relay-internal.h"
#include "stage-internal.h"

#include <rill/metrics.h>

#include <errno.h>

typedef struct probe_relay {
    rill__relay r;
    rill_metrics *m;      /* borrowed from the publisher, which the relay references */
} probe_relay;

static void probe_on_next(rill_subscriber *self, void *item)
{
    probe_relay *p = (probe_relay *)rill__relay_of_in(self);
    if (p->r.done) {
        rill__metrics_delta d = { .received = 1 };
        d.discarded[RILL__DISCARD_CANCELLED] = 1;
        rill__metrics_update(p->m, &d);
        rill__discard(p->r.ctx, item);
        return;
    }
    rill__metrics_update(p->m, &(rill__metrics_delta){ .received = 1, .emitted = 1 });
    rill__on_next(p->r.down, item);
}

static const struct rill_subscriber_ops probe_in_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = rill__relay_on_subscribe,
    .on_next = probe_on_next,
    .on_error = rill__relay_on_error,
    .on_complete = rill__relay_on_complete,
    .on_release = rill__relay_on_release,
    .context = rill__relay_context,
};

static void probe_request(rill_subscription *s, uint64_t n)
{
    probe_relay *p = (probe_relay *)rill__relay_of_out(s);
    /* request(0) is not demand: upstream turns it into on_error(EINVAL). */
    if (n > 0)
        rill__metrics_requested(p->m, n);
    rill__request(p->r.up, n);
}

static const struct rill_subscription_ops probe_out_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = probe_request,
    .cancel = rill__relay_cancel,
};

static void probe_subscribe(rill_publisher *self, rill_subscriber *s)
{
    rill__operator *op = (rill__operator *)self;
    probe_relay *p = rill__relay_new(sizeof *p, &probe_in_ops, &probe_out_ops, self, s);
    if (!p)
        return;
    p->m = op->ctx;
    rill__relay_subscribe(&p->r, op->up);
}

static const struct rill_publisher_ops probe_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = probe_subscribe,
    .destroy = rill__operator_destroy,
};

static void probe_metrics_free(void *m)
{
    rill_metrics_unref(m);
}

rill_publisher *rill_probe(rill_publisher *up, rill_metrics *m)
{
    if (!m)
        return rill__operator_fail(up, NULL, NULL, EINVAL);
    /* The publisher keeps its own reference as the operator's ctx; the
     * relays borrow it (each references the publisher). */
    rill__operator *op = rill__operator_new(sizeof *op, &probe_ops, up, rill_metrics_ref(m),
                                            probe_metrics_free);
    return op ? &op->base : NULL;
}
