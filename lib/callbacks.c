/* lib/callbacks.c — rill_subscriber_new: a subscriber made of callbacks. */
#include "alloc-internal.h"
#include "stage-internal.h"

#include <rill/stage.h>

#include <errno.h>

typedef struct callbacks_subscriber {
    rill_subscriber base;
    rill_callbacks cb;
    void *user;
    int subscribed;     /* signals are serial (rule 1.3): a plain flag */
} callbacks_subscriber;

static callbacks_subscriber *from_base(rill_subscriber *s)
{
    return rill__container_of(s, callbacks_subscriber, base);
}

static void cb_on_subscribe(rill_subscriber *self, rill_subscription *sub)
{
    callbacks_subscriber *c = from_base(self);
    if (c->subscribed) {
        /* Rule 2.5: a second subscription is cancelled, and the user's
         * callbacks never see it (they keep the first). */
        rill__cancel(sub);
        return;
    }
    c->subscribed = 1;
    if (c->cb.on_subscribe)
        c->cb.on_subscribe(c->user, sub);
    else
        rill_request(sub, RILL_UNBOUNDED);
}

static void cb_on_next(rill_subscriber *self, void *item)
{
    callbacks_subscriber *c = from_base(self);
    if (c->cb.on_next)
        c->cb.on_next(c->user, item);
}

static void cb_on_error(rill_subscriber *self, const rill_error *e)
{
    callbacks_subscriber *c = from_base(self);
    if (c->cb.on_error)
        c->cb.on_error(c->user, e);
}

static void cb_on_complete(rill_subscriber *self)
{
    callbacks_subscriber *c = from_base(self);
    if (c->cb.on_complete)
        c->cb.on_complete(c->user);
}

static void cb_on_release(rill_subscriber *self)
{
    callbacks_subscriber *c = from_base(self);
    if (c->cb.on_release)
        c->cb.on_release(c->user);
    rill__free(c);
}

static const struct rill_subscriber_ops callbacks_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = cb_on_subscribe,
    .on_next = cb_on_next,
    .on_error = cb_on_error,
    .on_complete = cb_on_complete,
    .on_release = cb_on_release,
};

rill_subscriber *rill_subscriber_new(const rill_callbacks *cb, void *user)
{
    if (!cb) {
        errno = EINVAL;
        return NULL;
    }
    callbacks_subscriber *c = rill__malloc(sizeof *c);
    if (!c) {
        if (cb->on_release)
            cb->on_release(user);
        errno = ENOMEM;
        return NULL;
    }
    c->base.ops = &callbacks_ops;
    c->cb = *cb;
    c->user = user;
    c->subscribed = 0;
    return &c->base;
}
