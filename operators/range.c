/* operators/range.c — rill_range: count integers from start. */
#include "alloc-internal.h"
#include "pull-internal.h"

#include <rill/sources.h>

#include <errno.h>

typedef struct range_publisher {
    rill_publisher base;
    int64_t start;
    uint64_t count;
} range_publisher;

typedef struct range_state {
    int64_t next;
    uint64_t remaining;
} range_state;

static int range_start(void *state, rill_error **err)
{
    return ((range_state *)state)->remaining ? RILL__PULL_MORE : RILL__PULL_END;
}

static inline int range_next(void *state, void **item, rill_error **err)
{
    range_state *st = state;
    *item = (void *)(intptr_t)st->next;
    if (--st->remaining == 0)
        return RILL__PULL_LAST;
    st->next++;   /* only while more follow: a range may end at INT64_MAX */
    return RILL__PULL_ITEM;
}

static void range_init(rill_publisher *self, void *state)
{
    range_publisher *rp = (range_publisher *)self;
    range_state *st = state;
    st->next = rp->start;
    st->remaining = rp->count;
}

static void range_destroy(rill_publisher *self)
{
    rill__free(self);
}

/* The engine's loop with range_next inlined (see pull-internal.h). */
static int range_emit(rill__pull *p)
{
    range_state *st = (range_state *)(void *)p->state;
    range_state local = *st;   /* in registers while the loop runs */
    int rc = rill__pull_emit(p, range_next, &local);
    *st = local;
    return rc;
}

static const struct rill__source range_source = {
    .pub = {
        .version = RILL_PUBLISHER_OPS_VERSION,
        .subscribe = rill__pull_subscribe,
        .destroy = range_destroy,
    },
    .state_size = sizeof(range_state),
    .init = range_init,
    .pull = { .next = range_next, .start = range_start },
    .emit = range_emit,
};

rill_publisher *rill_range(int64_t start, uint64_t count)
{
    /* The last value, start + count - 1, must fit in int64_t. The unsigned
     * subtraction is exact: INT64_MAX - start lies in [0, 2^64 - 1]. */
    if (count > 0 && count - 1 > (uint64_t)INT64_MAX - (uint64_t)start) {
        errno = EINVAL;
        return NULL;
    }
    range_publisher *rp = rill__malloc(sizeof *rp);
    if (!rp)
        return NULL;
    rill_publisher_init(&rp->base, &range_source.pub);
    rp->start = start;
    rp->count = count;
    return &rp->base;
}
