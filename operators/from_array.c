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

static int array_next(void *state, void **item, rill_error **err)
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

static const struct rill__pull_ops array_pull_ops = {
    .next = array_next,
    .start = array_start,
    .finish = array_finish,
};

static void array_subscribe(rill_publisher *self, rill_subscriber *s)
{
    array_state *st = rill__pull_alloc(sizeof *st);
    if (!st) {
        rill_reject(s, ENOMEM, NULL);
        return;
    }
    st->pub = (array_publisher *)rill_publisher_ref(self);
    rill__pull_start(st, &array_pull_ops, s);
}

static void array_destroy(rill_publisher *self)
{
    rill__free(self);
}

static const struct rill_publisher_ops array_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = array_subscribe,
    .destroy = array_destroy,
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
    rill_publisher_init(&ap->base, &array_ops);
    ap->n = n;
    if (n)
        memcpy(ap->items, items, n * sizeof(void *));
    return &ap->base;
}
