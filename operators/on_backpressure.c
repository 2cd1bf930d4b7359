/* operators/on_backpressure.c — rill_on_backpressure_buffer / _latest / _drop
 * (and rill_on_backpressure_ex): absorb a producer faster than its consumer.
 *
 * The stage requests RILL_UNBOUNDED upstream and keeps what downstream has
 * not asked for yet in a ring preallocated at subscribe time (buffer: its
 * capacity; latest: one slot; drop: a small hand-off ring that only takes
 * items downstream has demand for). It is a queue-drain stage without a
 * scheduler: the drain runs on whichever thread signals — upstream's, inside
 * on_next / on_complete / on_error, or a requester's, inside request — and
 * the atomic counter `wip` lets one drainer at a time deliver, so
 * downstream's signals never overlap and a request made inside on_next only
 * leaves a ticket for the running drainer.
 *
 * Invariants:
 *  - `lock` guards the ring, the demand, `done`, `closed` and `armed`. It is
 *    held only to move an item or a counter; no user code, no downstream
 *    signal, no discard hook and no call upstream runs under it;
 *  - every item taken from upstream leaves the ring exactly once, under the
 *    lock: delivered by the drainer, evicted by the TTL task or by the
 *    drainer (expired), or cleared at the end — so each reaches downstream
 *    or the discard hooks exactly once;
 *  - after `closed` (the stream ended downstream) arrivals go straight to the
 *    discard hooks.
 *
 * Lifetime: references from upstream (dropped in in.on_release), from the
 * drain (dropped once downstream has been released) and from the TTL task
 * while it is queued. Calls into upstream from other threads go through
 * rundown protection (lib/upstream.c).
 */
#include "alloc-internal.h"
#include "atomic-internal.h"
#include "metrics-internal.h"
#include "relay-internal.h"
#include "stage-internal.h"
#include "upstream-internal.h"

#include <rill/backpressure.h>
#include <rill/scheduler.h>

#include <errno.h>
#include <stddef.h>
#include <string.h>
#include <pthread.h>

enum { RUNNING = 0, CANCELLED = 1, BAD_REQUEST = 2 };

/* What take() found for the drainer. */
enum { T_WAIT, T_ITEM, T_EXPIRED, T_END };

typedef struct bp_publisher {
    rill__operator op;               /* op.ctx / op.ctx_free: the options' ctx */
    rill_backpressure_options o;     /* o.scheduler is a reference */
} bp_publisher;

typedef struct bp {
    rill_subscriber in;
    rill_subscription out;
    rill__upstream up;
    rill_task ttl_task;
    rill_subscriber *down;
    rill_context *ctx;               /* reference */
    rill_publisher *owner;           /* reference: keeps the options (ctx, scheduler) alive */
    const rill_backpressure_options *o;   /* the owner's */
    rill_metrics *m;                 /* the owner's o.metrics, or NULL */
    rill_worker *worker;             /* TTL only */
    atomic_uint refs;
    _Atomic uint32_t wip;
    atomic_int stop;

    pthread_mutex_t lock;            /* guards every field below */
    void **ring;
    uint64_t *stamps;                /* TTL only: arrival time of each slot */
    size_t cap, head, count;
    uint64_t demand;                 /* downstream's, not yet delivered */
    int done;                        /* no more items will arrive */
    int err_code;                    /* ERROR overflow: the code to end with */
    rill_error *error;               /* upstream's error (reference) */
    int closed;                      /* downstream's stream ended */
    int armed;                       /* the TTL task is queued (it holds a reference) */
} bp;

/* ---------------------------------------------------------------- lifetime */

static void bp_free(bp *b)
{
    for (; b->count; b->count--, b->head = (b->head + 1) % b->cap) {
        rill__metrics_update(b->m, &(rill__metrics_delta){
            .discarded[RILL__DISCARD_CANCELLED] = 1, .queued_change = -1 });
        rill__discard(b->ctx, b->ring[b->head]);
    }
    rill_worker_free(b->worker);
    pthread_mutex_destroy(&b->lock);
    rill_error_unref(b->error);
    rill_context_unref(b->ctx);
    rill_publisher_unref(b->owner);
    rill__free(b->stamps);
    rill__free(b->ring);
    rill__free(b);
}

static void bp_ref(bp *b)
{
    atomic_fetch_add_explicit(&b->refs, 1, memory_order_relaxed);
}

static void bp_unref(bp *b)
{
    /* acq_rel: the last owner sees every other owner's writes */
    if (atomic_fetch_sub_explicit(&b->refs, 1, memory_order_acq_rel) == 1)
        bp_free(b);
}

/* ---------------------------------------------------------------- the ring (lock held) */

static void *ring_pop(bp *b)
{
    void *item = b->ring[b->head];
    b->head = (b->head + 1) % b->cap;
    b->count--;
    return item;
}

/* Takes the head item out for a reason other than delivery, and counts it. */
static void *ring_drop(bp *b, rill__discard_reason why)
{
    rill__metrics_delta d = { .queued_change = -1 };
    d.discarded[why] = 1;
    rill__metrics_update(b->m, &d);
    return ring_pop(b);
}

static void ring_push(bp *b, void *item, uint64_t now)
{
    size_t slot = (b->head + b->count) % b->cap;
    b->ring[slot] = item;
    if (b->stamps)
        b->stamps[slot] = now;
    b->count++;
}

static int head_expired(const bp *b, uint64_t now)
{
    return b->count && b->o->ttl_ns && now - b->stamps[b->head] >= b->o->ttl_ns;
}

static uint64_t now_of(const bp *b)
{
    return b->o->ttl_ns ? rill_scheduler_now(b->o->scheduler) : 0;
}

/* ---------------------------------------------------------------- TTL */

static void signal_drain(bp *b);

/* Takes the head item if it has expired; otherwise says how long until it
 * does (0: nothing to wait for) and records whether the task stays armed. */
static int ttl_take(bp *b, int run, void **item, uint64_t *wait)
{
    uint64_t now = now_of(b);
    int got = 0;
    *wait = 0;
    pthread_mutex_lock(&b->lock);
    if (run && !b->closed && head_expired(b, now)) {
        *item = ring_drop(b, RILL__DISCARD_EXPIRED);
        got = 1;
    } else if (run && !b->closed && b->count) {
        *wait = b->o->ttl_ns - (now - b->stamps[b->head]);
    }
    if (!got)
        b->armed = *wait != 0;
    pthread_mutex_unlock(&b->lock);
    return got;
}

/* Evicts expired items, then re-arms for the next one. An eviction may
 * leave an ended upstream with nothing held: the drain then terminates. */
static void ttl_run(rill_task *t, int status)
{
    bp *b = rill__container_of(t, bp, ttl_task);
    void *item;
    uint64_t wait;
    int evicted = 0;
    while (ttl_take(b, status == RILL_TASK_RUN, &item, &wait)) {
        rill__discard(b->ctx, item);
        evicted = 1;
    }
    if (evicted) {
        signal_drain(b);   /* our reference keeps b alive across it */
        /* The drain may have ended the stream: then do not re-arm (its
         * disarm found this task running, not queued). */
        pthread_mutex_lock(&b->lock);
        if (b->closed)
            wait = b->armed = 0;
        pthread_mutex_unlock(&b->lock);
    }
    if (wait && rill_schedule_after(b->worker, t, wait) == 0)
        return;            /* the queued task keeps the reference */
    if (wait) {
        pthread_mutex_lock(&b->lock);
        b->armed = 0;
        pthread_mutex_unlock(&b->lock);
    }
    bp_unref(b);
}

static void ttl_arm(bp *b)
{
    bp_ref(b);
    if (rill_schedule_after(b->worker, &b->ttl_task, b->o->ttl_ns) == 0)
        return;
    /* Refused (shut down): expiry is still checked before each delivery. */
    pthread_mutex_lock(&b->lock);
    b->armed = 0;
    pthread_mutex_unlock(&b->lock);
    bp_unref(b);
}

/* At the end of the stream: a queued TTL task is taken back with its
 * reference. One already running sees `closed` and does not re-arm. */
static void ttl_disarm(bp *b)
{
    pthread_mutex_lock(&b->lock);
    int armed = b->armed;
    pthread_mutex_unlock(&b->lock);
    if (armed && rill_task_cancel(b->worker, &b->ttl_task) == 0) {
        pthread_mutex_lock(&b->lock);
        b->armed = 0;
        pthread_mutex_unlock(&b->lock);
        bp_unref(b);
    }
}

/* ---------------------------------------------------------------- drain */

static int take(bp *b, void **item)
{
    uint64_t now = now_of(b);
    int r = T_WAIT;
    pthread_mutex_lock(&b->lock);
    if (head_expired(b, now)) {
        *item = ring_drop(b, RILL__DISCARD_EXPIRED);
        r = T_EXPIRED;
    } else if (b->count && b->demand) {
        rill__metrics_update(b->m, &(rill__metrics_delta){ .emitted = 1, .queued_change = -1 });
        *item = ring_pop(b);
        if (b->demand != RILL_UNBOUNDED)
            b->demand--;
        r = T_ITEM;
    } else if (!b->count && b->done) {
        b->closed = 1;
        r = T_END;
    }
    pthread_mutex_unlock(&b->lock);
    return r;
}

/* Closes the stream and hands every held item to the discard hooks. */
static void clear(bp *b)
{
    pthread_mutex_lock(&b->lock);
    b->closed = 1;
    while (b->count) {
        void *item = ring_drop(b, RILL__DISCARD_CANCELLED);
        pthread_mutex_unlock(&b->lock);
        rill__discard(b->ctx, item);
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
}

static int stopped(bp *b, int why)
{
    clear(b);
    ttl_disarm(b);
    if (why == CANCELLED)
        return 1;   /* cancel() already told upstream */
    rill__upstream_cancel(&b->up);
    rill_deliver_error_code(b->down, EINVAL,
                            "rule 3.9: non-positive subscription request (request(0))");
    return 1;
}

static int terminate(bp *b)
{
    ttl_disarm(b);
    if (b->error)
        rill__on_error(b->down, b->error);
    else if (b->err_code)
        rill_deliver_error_code(b->down, b->err_code,
                                "on_backpressure_buffer: the buffer overflowed");
    else
        rill__on_complete(b->down);
    return 1;
}

/* Delivers what demand allows. Returns 1 once downstream got its last
 * signal (or cancelled); `stop` is checked per item so that a cancel from
 * inside on_next takes effect at once. */
static int drain_once(bp *b)
{
    for (;;) {
        int why = atomic_load_explicit(&b->stop, memory_order_acquire);
        if (why)
            return stopped(b, why);
        void *item;
        switch (take(b, &item)) {
        case T_ITEM:
            rill__on_next(b->down, item);
            break;
        case T_EXPIRED:
            rill__discard(b->ctx, item);
            break;
        case T_END:
            return terminate(b);
        default:
            return 0;
        }
    }
}

/* Runs as the drainer (wip held, `missed` tickets) until no work is left or
 * the stream ended. After the end wip is never given back, so nobody drains
 * again. */
static void drain(bp *b, uint32_t missed)
{
    for (;;) {
        if (drain_once(b)) {
            rill_deliver_release(b->down);
            bp_unref(b);
            return;
        }
        missed = rill__wip_leave(&b->wip, missed);
        if (missed == 0)
            return;   /* b may be gone: touch nothing */
    }
}

static void signal_drain(bp *b)
{
    if (rill__wip_enter(&b->wip))
        drain(b, 1);
}

/* ---------------------------------------------------------------- upstream side */

static bp *of_in(rill_subscriber *s)
{
    return rill__container_of(s, bp, in);
}

static void in_on_subscribe(rill_subscriber *self, rill_subscription *s)
{
    bp *b = of_in(self);
    b->up.sub = s;
    rill_deliver_subscribe(b->down, &b->out);
    bp_ref(b);   /* a synchronous upstream may release us inside the request */
    drain(b, 1); /* ends the subscribe phase, which held wip */
    rill__upstream_request(&b->up, RILL_UNBOUNDED);
    bp_unref(b);
}

/* The outcome of offering an item to the store. */
typedef struct offer {
    int victim_set, overflow, failed, arm;
    void *victim;
} offer;

static void drop_into(offer *f, void *item, int overflow)
{
    f->victim_set = 1;
    f->victim = item;
    f->overflow = overflow;
}

/* Under the lock: stores item, or picks what to drop, per the mode. Returns
 * the metrics delta for it: one delta per arrival, so a snapshot sees the
 * arrival and its outcome together. */
static rill__metrics_delta offer_locked(bp *b, void *item, uint64_t now, offer *f)
{
    const rill_backpressure_options *o = b->o;
    rill__metrics_delta d = { .received = 1 };
    if (b->closed || b->done) {
        d.discarded[RILL__DISCARD_CANCELLED] = 1;
        drop_into(f, item, 0);
        return d;
    }
    if (o->mode == RILL_BACKPRESSURE_DROP && (b->count >= b->demand || b->count == b->cap)) {
        d.discarded[RILL__DISCARD_OVERFLOW] = 1;
        drop_into(f, item, 1);
        return d;
    }
    d.queued_change = 1;
    if (b->count == b->cap) {
        d.discarded[RILL__DISCARD_OVERFLOW] = 1;
        if (o->mode == RILL_BACKPRESSURE_BUFFER && o->policy != RILL_OVERFLOW_DROP_OLDEST) {
            d.queued_change = 0;
            drop_into(f, item, 1);
            if (o->policy == RILL_OVERFLOW_ERROR) {
                f->failed = 1;
                b->done = 1;
                b->err_code = EOVERFLOW;
            }
            return d;
        }
        d.queued_change = 0;
        drop_into(f, ring_pop(b), 1);   /* drop oldest; latest replaces its slot */
    }
    ring_push(b, item, now);
    if (o->ttl_ns && !b->armed)
        f->arm = b->armed = 1;
    return d;
}

static void in_on_next(rill_subscriber *self, void *item)
{
    bp *b = of_in(self);
    uint64_t now = now_of(b);
    offer f = {0};
    pthread_mutex_lock(&b->lock);
    rill__metrics_delta d = offer_locked(b, item, now, &f);
    rill__metrics_update(b->m, &d);
    pthread_mutex_unlock(&b->lock);
    if (f.victim_set) {
        if (f.overflow && b->o->on_overflow)
            b->o->on_overflow(((bp_publisher *)b->owner)->op.ctx, f.victim);
        rill__discard(b->ctx, f.victim);
    }
    if (f.failed)
        rill__upstream_cancel(&b->up);
    if (f.arm)
        ttl_arm(b);
    signal_drain(b);
}

static void in_end(bp *b, const rill_error *e)
{
    pthread_mutex_lock(&b->lock);
    int first = !b->done;
    if (first) {
        b->done = 1;
        if (e)
            b->error = rill_error_ref((rill_error *)e);
    }
    pthread_mutex_unlock(&b->lock);
    if (first)
        signal_drain(b);
}

static void in_on_error(rill_subscriber *self, const rill_error *e)
{
    in_end(of_in(self), e);
}

static void in_on_complete(rill_subscriber *self)
{
    in_end(of_in(self), NULL);
}

static void in_on_release(rill_subscriber *self)
{
    bp *b = of_in(self);
    rill__upstream_gone(&b->up);
    bp_unref(b);
}

static rill_context *in_context(rill_subscriber *self)
{
    return of_in(self)->ctx;
}

static const struct rill_subscriber_ops bp_in_ops = {
    .version = RILL_SUBSCRIBER_OPS_VERSION,
    .on_subscribe = in_on_subscribe,
    .on_next = in_on_next,
    .on_error = in_on_error,
    .on_complete = in_on_complete,
    .on_release = in_on_release,
    .context = in_context,
};

/* ---------------------------------------------------------------- downstream side */

static void out_request(rill_subscription *s, uint64_t n)
{
    bp *b = rill__container_of(s, bp, out);
    if (n == 0) {
        int expected = RUNNING;
        atomic_compare_exchange_strong(&b->stop, &expected, BAD_REQUEST);
    } else {
        pthread_mutex_lock(&b->lock);
        b->demand = n >= RILL_UNBOUNDED - b->demand ? RILL_UNBOUNDED : b->demand + n;
        rill__metrics_requested(b->m, n);
        pthread_mutex_unlock(&b->lock);
    }
    signal_drain(b);
}

static void out_cancel(rill_subscription *s)
{
    bp *b = rill__container_of(s, bp, out);
    int expected = RUNNING;
    if (!atomic_compare_exchange_strong(&b->stop, &expected, CANCELLED))
        return;   /* already stopping */
    bp_ref(b);
    rill__upstream_cancel(&b->up);
    signal_drain(b);
    bp_unref(b);
}

static const struct rill_subscription_ops bp_out_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = out_request,
    .cancel = out_cancel,
};

/* ---------------------------------------------------------------- publisher */

static size_t store_size(const rill_backpressure_options *o)
{
    if (o->mode == RILL_BACKPRESSURE_LATEST)
        return 1;
    if (o->mode == RILL_BACKPRESSURE_DROP && o->capacity == 0)
        return RILL_BACKPRESSURE_DROP_SLOTS;
    return o->capacity;
}

static bp *bp_alloc(const rill_backpressure_options *o)
{
    bp *b = rill__calloc(sizeof *b);
    if (!b)
        return NULL;
    b->cap = store_size(o);
    b->ring = rill__malloc(b->cap * sizeof(void *));
    b->stamps = o->ttl_ns ? rill__malloc(b->cap * sizeof(uint64_t)) : NULL;
    b->worker = o->ttl_ns ? rill_worker_new(o->scheduler) : NULL;
    if (b->ring && (!o->ttl_ns || (b->stamps && b->worker)) &&
        pthread_mutex_init(&b->lock, NULL) == 0)
        return b;
    rill_worker_free(b->worker);
    rill__free(b->stamps);
    rill__free(b->ring);
    rill__free(b);
    return NULL;
}

static void bp_subscribe(rill_publisher *self, rill_subscriber *s)
{
    bp_publisher *bpp = (bp_publisher *)self;
    bp *b = bp_alloc(&bpp->o);
    if (!b) {
        rill_reject(s, errno == ECANCELED ? ECANCELED : ENOMEM, NULL);
        return;
    }
    b->in.ops = &bp_in_ops;
    b->out.ops = &bp_out_ops;
    b->ttl_task.run = ttl_run;
    b->down = s;
    b->ctx = rill_context_ref(rill_subscriber_context(s));
    b->owner = rill_publisher_ref(self);
    b->o = &bpp->o;
    b->m = bpp->o.metrics;
    rill__metrics_capacity(b->m, b->cap);
    atomic_init(&b->refs, 2);   /* upstream's, and the drain's */
    atomic_init(&b->wip, 1);    /* held by the subscribe phase */
    rill_subscribe(bpp->op.up, &b->in);
}

static void bp_destroy(rill_publisher *self)
{
    rill_scheduler_unref(((bp_publisher *)self)->o.scheduler);
    rill_metrics_unref(((bp_publisher *)self)->o.metrics);
    rill__operator_destroy(self);
}

static const struct rill_publisher_ops bp_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = bp_subscribe,
    .destroy = bp_destroy,
};

static int options_valid(const rill_backpressure_options *o)
{
    if (o->version < 1)
        return 0;
    if (o->ttl_ns && !o->scheduler)
        return 0;
    if (o->capacity > SIZE_MAX / sizeof(uint64_t))
        return 0;
    switch (o->mode) {
    case RILL_BACKPRESSURE_BUFFER:
        return o->capacity > 0 && (o->policy == RILL_OVERFLOW_ERROR ||
                                   o->policy == RILL_OVERFLOW_DROP_OLDEST ||
                                   o->policy == RILL_OVERFLOW_DROP_LATEST);
    case RILL_BACKPRESSURE_LATEST:
        return o->capacity <= 1;
    case RILL_BACKPRESSURE_DROP:
        return 1;
    default:
        return 0;
    }
}

rill_publisher *rill_on_backpressure_ex(rill_publisher *up, const rill_backpressure_options *o)
{
    if (!o)
        return rill__operator_fail(up, NULL, NULL, EINVAL);
    if (!options_valid(o))
        return rill__operator_fail(up, o->ctx, o->ctx_free, EINVAL);
    bp_publisher *bpp = rill__operator_new(sizeof *bpp, &bp_ops, up, o->ctx, o->ctx_free);
    if (!bpp)
        return NULL;
    /* Copy only the fields the caller's version has. */
    size_t known = o->version >= 2 ? sizeof *o : offsetof(rill_backpressure_options, metrics);
    memcpy(&bpp->o, o, known);
    bpp->o.version = RILL_BACKPRESSURE_OPTIONS_VERSION;
    bpp->o.scheduler = rill_scheduler_ref(o->scheduler);
    bpp->o.metrics = o->version >= 2 ? rill_metrics_ref(o->metrics) : NULL;
    return &bpp->op.base;
}

rill_publisher *rill_on_backpressure_buffer(rill_publisher *up, size_t capacity,
                                            rill_overflow policy)
{
    rill_backpressure_options o = {
        .version = RILL_BACKPRESSURE_OPTIONS_VERSION,
        .mode = RILL_BACKPRESSURE_BUFFER,
        .capacity = capacity,
        .policy = policy,
    };
    return rill_on_backpressure_ex(up, &o);
}

rill_publisher *rill_on_backpressure_latest(rill_publisher *up)
{
    rill_backpressure_options o = {
        .version = RILL_BACKPRESSURE_OPTIONS_VERSION,
        .mode = RILL_BACKPRESSURE_LATEST,
    };
    return rill_on_backpressure_ex(up, &o);
}

rill_publisher *rill_on_backpressure_drop(rill_publisher *up)
{
    rill_backpressure_options o = {
        .version = RILL_BACKPRESSURE_OPTIONS_VERSION,
        .mode = RILL_BACKPRESSURE_DROP,
    };
    return rill_on_backpressure_ex(up, &o);
}
