/* operators/from_array.c — rill_from_array: the items of a copied array. */
#include "alloc-internal.h"
#include "pull-internal.h"

#include <rill/sources.h>

#include <errno.h>
#include <string.h>

typedef struct array_publisher {
    rill_publisher base;
    size_t n;
    void *items[];
} array_publisher;

typedef struct array_state {
    array_publisher *pub;   /* reference: the items live in the publisher */
    size_t next;
} array_state;

static int array_start(void *state, rill_error **err)
{
    array_state *st = state;
    return st->pub->n ? RILL__PULL_MORE : RILL__PULL_END;
}

static inline int array_next(void *state, void **item, rill_error **err)
{
    array_state *st = state;
    *item = st->pub->items[st->next++];
    return st->next < st->pub->n ? RILL__PULL_ITEM : RILL__PULL_LAST;
}

static void array_finish(void *state)
{
    array_state *st = state;
    rill_publisher_unref(&st->pub->base);
}

static void array_init(rill_publisher *self, void *state)
{
    array_state *st = state;
    st->pub = (array_publisher *)rill_publisher_ref(self);
}

static void array_destroy(rill_publisher *self)
{
    rill__free(self);
}

/* The engine's loop with array_next inlined (see pull-internal.h). */
static int array_emit(rill__pull *p)
{
    array_state *st = (array_state *)(void *)p->state;
    array_state local = *st;   /* in registers while the loop runs */
    int rc = rill__pull_emit(p, array_next, &local);
    *st = local;
    return rc;
}

static const struct rill__source array_source = {
    .pub = {
        .version = RILL_PUBLISHER_OPS_VERSION,
        .subscribe = rill__pull_subscribe,
        .destroy = array_destroy,
    },
    .state_size = sizeof(array_state),
    .init = array_init,
    .pull = { .next = array_next, .start = array_start, .finish = array_finish },
    .emit = array_emit,
};

rill_publisher *rill_from_array(void *const *items, size_t n)
{
    if (n && !items) {
        errno = EINVAL;
        return NULL;
    }
    if (n > (SIZE_MAX - sizeof(array_publisher)) / sizeof(void *)) {
        errno = ENOMEM;
        return NULL;
    }
    array_publisher *ap = rill__malloc(sizeof *ap + n * sizeof(void *));
    if (!ap)
        return NULL;
    rill_publisher_init(&ap->base, &array_source.pub);
    ap->n = n;
    if (n)
        memcpy(ap->items, items, n * sizeof(void *));
    return &ap->base;
}
