/* operators/generate.c — rill_generate: a pull source driven by a user
 * function, with optional per-subscription state. */
#include "alloc-internal.h"
#include "error-internal.h"
#include "pull-internal.h"

#include <rill/sources.h>

#include <errno.h>
#include <stdio.h>

typedef struct generate_publisher {
    rill_publisher base;
    int (*init)(void *ctx, void **state);
    rill_generate_fn fn;
    void (*state_free)(void *state);
    void *ctx;
    void (*ctx_free)(void *ctx);
} generate_publisher;

typedef struct generate_state {
    generate_publisher *pub;   /* reference: keeps ctx alive */
    void *user;                /* the user's state */
    int has_user;              /* init succeeded: state_free owes a call */
} generate_state;

static int generate_start(void *state, rill_error **err)
{
    generate_state *st = state;
    if (!st->pub->init) {
        st->user = st->pub->ctx;
        return RILL__PULL_MORE;
    }
    int rc = st->pub->init(st->pub->ctx, &st->user);
    if (rc != 0) {
        *err = rill__error_make(rc > 0 ? rc : -rc, NULL);
        return RILL__PULL_ERROR;
    }
    st->has_user = 1;
    return RILL__PULL_MORE;
}

static inline int generate_next(void *state, void **item, rill_error **err)
{
    generate_state *st = state;
    int rc = st->pub->fn(st->user, item);
    switch (rc) {
    case RILL_GENERATE_NEXT:
        return RILL__PULL_ITEM;
    case RILL_GENERATE_LAST:
        return RILL__PULL_LAST;
    case RILL_GENERATE_END:
        return RILL__PULL_END;
    }
    if (rc < 0) {
        *err = rill__error_make(-rc, NULL);
    } else {
        char msg[96];
        snprintf(msg, sizeof msg, "rill_generate: the function returned %d, not a RILL_GENERATE_* value", rc);
        *err = rill__error_make(EPROTO, msg);
    }
    return RILL__PULL_ERROR;
}

static void generate_finish(void *state)
{
    generate_state *st = state;
    if (st->has_user && st->pub->state_free)
        st->pub->state_free(st->user);
    rill_publisher_unref(&st->pub->base);
}

static void generate_init(rill_publisher *self, void *state)
{
    generate_state *st = state;
    st->pub = (generate_publisher *)rill_publisher_ref(self);
}

static void generate_destroy(rill_publisher *self)
{
    generate_publisher *gp = (generate_publisher *)self;
    if (gp->ctx_free)
        gp->ctx_free(gp->ctx);
    rill__free(gp);
}

/* The engine's loop with generate_next inlined (see pull-internal.h). */
static int generate_emit(rill__pull *p)
{
    generate_state *st = (generate_state *)(void *)p->state;
    generate_state local = *st;   /* in registers while the loop runs */
    int rc = rill__pull_emit(p, generate_next, &local);
    *st = local;
    return rc;
}

static const struct rill__source generate_source = {
    .pub = {
        .version = RILL_PUBLISHER_OPS_VERSION,
        .subscribe = rill__pull_subscribe,
        .destroy = generate_destroy,
    },
    .state_size = sizeof(generate_state),
    .init = generate_init,
    .pull = { .next = generate_next, .start = generate_start, .finish = generate_finish },
    .emit = generate_emit,
};

rill_publisher *rill_generate_ex(int (*init)(void *ctx, void **state), rill_generate_fn fn,
                                 void (*state_free)(void *state), void *ctx,
                                 void (*ctx_free)(void *ctx))
{
    int code = fn ? 0 : EINVAL;
    generate_publisher *gp = code ? NULL : rill__malloc(sizeof *gp);
    if (!gp) {
        if (ctx_free)
            ctx_free(ctx);
        errno = code ? code : ENOMEM;
        return NULL;
    }
    rill_publisher_init(&gp->base, &generate_source.pub);
    gp->init = init;
    gp->fn = fn;
    gp->state_free = state_free;
    gp->ctx = ctx;
    gp->ctx_free = ctx_free;
    return &gp->base;
}

rill_publisher *rill_generate(rill_generate_fn fn, void *ctx)
{
    return rill_generate_ex(NULL, fn, NULL, ctx, NULL);
}
