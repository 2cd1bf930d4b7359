/* operators/just.c — the trivial sources: rill_just, rill_empty, rill_fail. */
#include "alloc-internal.h"
#include "pull-internal.h"

#include <rill/sources.h>

#include <errno.h>

/* One publisher shape serves all three: `item` for just, `err` for fail,
 * neither for empty. Each has its own source table. */
typedef struct trivial_publisher {
    rill_publisher base;
    void *item;
    rill_error *err;   /* reference, fail only */
} trivial_publisher;

typedef struct trivial_state {
    void *item;
    rill_error *err;   /* reference until handed to the engine */
} trivial_state;

static void trivial_init(rill_publisher *self, void *state)
{
    trivial_publisher *tp = (trivial_publisher *)self;
    trivial_state *st = state;
    st->item = tp->item;
    st->err = rill_error_ref(tp->err);
}

static int just_next(void *state, void **item, rill_error **err)
{
    *item = ((trivial_state *)state)->item;
    return RILL__PULL_LAST;
}

static int empty_start(void *state, rill_error **err)
{
    return RILL__PULL_END;
}

static int empty_next(void *state, void **item, rill_error **err)
{
    return RILL__PULL_END;
}

static int fail_start(void *state, rill_error **err)
{
    trivial_state *st = state;
    *err = st->err;   /* the engine signals it and drops the reference */
    st->err = NULL;
    return RILL__PULL_ERROR;
}

static void fail_finish(void *state)
{
    rill_error_unref(((trivial_state *)state)->err);
}

static void trivial_destroy(rill_publisher *self)
{
    rill_error_unref(((trivial_publisher *)self)->err);
    rill__free(self);
}

#define TRIVIAL_PUB { .version = RILL_PUBLISHER_OPS_VERSION, \
                      .subscribe = rill__pull_subscribe, .destroy = trivial_destroy }

static const struct rill__source just_source = {
    .pub = TRIVIAL_PUB,
    .state_size = sizeof(trivial_state),
    .init = trivial_init,
    .pull = { .next = just_next },
};

static const struct rill__source empty_source = {
    .pub = TRIVIAL_PUB,
    .state_size = sizeof(trivial_state),
    .init = trivial_init,
    .pull = { .next = empty_next, .start = empty_start },
};

static const struct rill__source fail_source = {
    .pub = TRIVIAL_PUB,
    .state_size = sizeof(trivial_state),
    .init = trivial_init,
    .pull = { .next = empty_next, .start = fail_start, .finish = fail_finish },
};

static rill_publisher *trivial_new(const struct rill__source *src, void *item, rill_error *err)
{
    trivial_publisher *tp = rill__malloc(sizeof *tp);
    if (!tp) {
        rill_error_unref(err);
        return NULL;
    }
    rill_publisher_init(&tp->base, &src->pub);
    tp->item = item;
    tp->err = err;
    return &tp->base;
}

rill_publisher *rill_just(void *item)
{
    return trivial_new(&just_source, item, NULL);
}

rill_publisher *rill_empty(void)
{
    return trivial_new(&empty_source, NULL, NULL);
}

rill_publisher *rill_fail(int code, const char *message)
{
    if (code <= 0) {
        errno = EINVAL;
        return NULL;
    }
    rill_error *err = rill_error_new(code, message);
    return err ? trivial_new(&fail_source, NULL, err) : NULL;
}
