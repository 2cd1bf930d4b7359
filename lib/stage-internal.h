/* lib/stage-internal.h — inline signal delivery for the library's own stages.
 *
 * The exported rill_deliver_* / rill_request / rill_cancel wrappers exist for
 * bindings; inside the shared library every call to an exported function goes
 * through the PLT, which on a synchronous chain cost more than the stages'
 * own work. Library code uses these instead.
 */
#ifndef RILL_STAGE_INTERNAL_H
#define RILL_STAGE_INTERNAL_H

#include <rill/stage.h>

static inline void rill__on_next(rill_subscriber *s, void *item)
{
    if (s->ops->on_next)
        s->ops->on_next(s, item);
}

static inline void rill__on_complete(rill_subscriber *s)
{
    if (s->ops->on_complete)
        s->ops->on_complete(s);
}

static inline void rill__on_error(rill_subscriber *s, const rill_error *e)
{
    if (s->ops->on_error)
        s->ops->on_error(s, e);
}

static inline void rill__request(rill_subscription *s, uint64_t n)
{
    if (s)
        s->ops->request(s, n);
}

static inline void rill__cancel(rill_subscription *s)
{
    if (s)
        s->ops->cancel(s);
}

/* Discards into a context chain; the common case (no hooks) costs a test. */
void rill__context_discard_slow(rill_context *c, void *item);
static inline void rill__discard(rill_context *c, void *item)
{
    if (c)
        rill__context_discard_slow(c, item);
}

#endif
