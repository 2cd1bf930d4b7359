/* lib/core.c — the protocol's entry points: subscribe, request, cancel,
 * publisher references, delivery wrappers and demand arithmetic. */
#include "alloc-internal.h"
#include "atomic-internal.h"
#include "error-internal.h"

#include <rill/stage.h>

#include <errno.h>

const char *rill_version(void)
{
    return "0.1.0";
}

/* ---------------------------------------------------------------- demand */

/* Demand is added with a CAS loop so that it saturates at RILL_UNBOUNDED
 * instead of wrapping (rule 3.17). The successful exchange is a release: a
 * drainer that is already running sees new demand through its acquire load
 * of the counter, without passing through wip, and must then also see what
 * the requester wrote before requesting. */
uint64_t rill__demand_add(_Atomic uint64_t *demand, uint64_t n)
{
    uint64_t cur = atomic_load_explicit(demand, memory_order_relaxed);
    for (;;) {
        if (cur == RILL_UNBOUNDED)
            return cur;
        uint64_t next = n >= RILL_UNBOUNDED - cur ? RILL_UNBOUNDED : cur + n;
        if (atomic_compare_exchange_weak_explicit(demand, &cur, next, memory_order_release,
                                                  memory_order_relaxed))
            return cur;
    }
}

uint64_t rill__demand_produced(_Atomic uint64_t *demand, uint64_t n)
{
    uint64_t cur = atomic_load_explicit(demand, memory_order_relaxed);
    for (;;) {
        if (cur == RILL_UNBOUNDED)
            return cur;
        uint64_t next = cur - n;
        if (atomic_compare_exchange_weak_explicit(demand, &cur, next, memory_order_relaxed,
                                                  memory_order_relaxed))
            return next;
    }
}

/* The public variants work on a plain uint64_t (public structs hold no
 * _Atomic); the builtins give the same atomicity on it. */
uint64_t rill_demand_add(uint64_t *demand, uint64_t n)
{
    uint64_t cur = __atomic_load_n(demand, __ATOMIC_RELAXED);
    for (;;) {
        if (cur == RILL_UNBOUNDED)
            return cur;
        uint64_t next = n >= RILL_UNBOUNDED - cur ? RILL_UNBOUNDED : cur + n;
        if (__atomic_compare_exchange_n(demand, &cur, next, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            return cur;
    }
}

uint64_t rill_demand_produced(uint64_t *demand, uint64_t n)
{
    uint64_t cur = __atomic_load_n(demand, __ATOMIC_RELAXED);
    for (;;) {
        if (cur == RILL_UNBOUNDED)
            return cur;
        uint64_t next = cur - n;
        if (__atomic_compare_exchange_n(demand, &cur, next, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_RELAXED))
            return next;
    }
}

/* ---------------------------------------------------------------- subscriptions */

void rill_request(rill_subscription *s, uint64_t n)
{
    if (s)
        s->ops->request(s, n);
}

void rill_cancel(rill_subscription *s)
{
    if (s)
        s->ops->cancel(s);
}

static void noop_request(rill_subscription *self, uint64_t n)
{
}

static void noop_cancel(rill_subscription *self)
{
}

static const struct rill_subscription_ops noop_subscription_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = noop_request,
    .cancel = noop_cancel,
};

/* Shared by every rejected subscriber: it is stateless, so one suffices. */
static rill_subscription noop_subscription = { &noop_subscription_ops };

/* ---------------------------------------------------------------- delivery */

void rill_deliver_subscribe(rill_subscriber *s, rill_subscription *sub)
{
    if (s->ops->on_subscribe)
        s->ops->on_subscribe(s, sub);
}

void rill_deliver_next(rill_subscriber *s, void *item)
{
    if (s->ops->on_next)
        s->ops->on_next(s, item);
}

void rill_deliver_error(rill_subscriber *s, const rill_error *e)
{
    if (s->ops->on_error)
        s->ops->on_error(s, e);
}

void rill_deliver_complete(rill_subscriber *s)
{
    if (s->ops->on_complete)
        s->ops->on_complete(s);
}

void rill_deliver_release(rill_subscriber *s)
{
    s->ops->on_release(s);
}

rill_context *rill_subscriber_context(rill_subscriber *s)
{
    return s && s->ops->context ? s->ops->context(s) : NULL;
}

void rill_deliver_error_code(rill_subscriber *s, int code, const char *message)
{
    rill_error *e = rill__error_make(code, message);
    rill_deliver_error(s, e);
    rill_error_unref(e);
}

void rill_reject(rill_subscriber *s, int code, const char *message)
{
    if (!s)
        return;
    rill_deliver_subscribe(s, &noop_subscription);
    rill_deliver_error_code(s, code, message);
    rill_deliver_release(s);
}

/* ---------------------------------------------------------------- publishers */

void rill_subscribe(rill_publisher *p, rill_subscriber *s)
{
    if (!s) {
        errno = EINVAL;
        return;
    }
    if (!p) {
        rill_reject(s, EINVAL, "rill_subscribe: the publisher is NULL");
        return;
    }
    p->ops->subscribe(p, s);
}

void rill_publisher_init(rill_publisher *p, const struct rill_publisher_ops *ops)
{
    p->ops = ops;
    rill__plain_store_relaxed(&p->refs_private, 1);
}

rill_publisher *rill_publisher_ref(rill_publisher *p)
{
    if (p)
        rill__plain_ref(&p->refs_private);
    return p;
}

void rill_publisher_unref(rill_publisher *p)
{
    if (p && rill__plain_unref(&p->refs_private) == 0)
        p->ops->destroy(p);
}
