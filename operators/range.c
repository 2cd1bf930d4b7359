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

static int range_next(void *state, void **item, rill_error **err)
{
    range_state *st = state;
    *item = (void *)(intptr_t)st->next;
    if (--st->remaining == 0)
        return RILL__PULL_LAST;
    st->next++;   /* only while more follow: a range may end at INT64_MAX */
    return RILL__PULL_ITEM;
}

static const struct rill__pull_ops range_pull_ops = {
    .next = range_next,
    .start = range_start,
};

static void range_subscribe(rill_publisher *self, rill_subscriber *s)
{
    range_publisher *rp = (range_publisher *)self;
    range_state *st = rill__pull_alloc(sizeof *st);
    if (!st) {
        rill_reject(s, ENOMEM, NULL);
        return;
    }
    st->next = rp->start;
    st->remaining = rp->count;
    rill__pull_start(st, &range_pull_ops, s);
}

static void range_destroy(rill_publisher *self)
{
    rill__free(self);
}

static const struct rill_publisher_ops range_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = range_subscribe,
    .destroy = range_destroy,
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
    rill_publisher_init(&rp->base, &range_ops);
    rp->start = start;
    rp->count = count;
    return &rp->base;
}
