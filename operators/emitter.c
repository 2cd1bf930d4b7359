/* operators/emitter.c — rill_emitter: a push source with a bounded queue,
 * overflow policies and high/low watermarks.
 *
 * Shape: producers (rill_emit, any thread, any number) put items into a ring
 * under `lock`; a queue-drain loop (the atomic `wip`, one drainer at a time)
 * delivers them as the subscriber's demand allows. The drain runs on
 * whichever thread gives it work: a producer whose item found demand, a
 * requester, the thread ending the stream, a canceller. Nothing user-visible
 * runs under the lock: no signal, no discard hook, no on_writable.
 *
 * Decisions worth their reasons:
 *  - No drain before a subscriber: `down` is set (under the lock) only after
 *    the subscribe path has claimed wip, and producers signal the drain only
 *    when they see `down` set, so on_subscribe always comes first and the
 *    wip counter is not bumped by emits nobody could drain.
 *  - EDEADLK: the drainer publishes a per-thread marker (the address of a
 *    thread-local) while it holds wip; a BLOCK emit about to wait compares
 *    it with its own. Only the drainer writes the marker, so a thread sees
 *    its own marker exactly while it is the drainer — relaxed loads suffice.
 *  - What rill_emit returns while paused: computed after its own drain, from
 *    `paused_now`, so a producer that drained the queue below low_watermark
 *    inside its own call (and so already got on_writable) is not told to
 *    pause. The drainer clears `paused_now` before calling on_writable, so a
 *    producer that reads 1 will see an on_writable afterwards.
 *  - Metrics move under the lock in self-balancing deltas (accepted:
 *    received+1 queued+1; delivered: emitted+1 queued-1; evicted:
 *    received+1 discarded+1), so every snapshot keeps
 *    received == emitted + discarded + queued, and depths cannot be
 *    applied out of order.
 *
 * Lifetime: `refs` counts three kinds of owner: the publisher handles (one,
 * dropped by the publisher's destroy op), the emitter handles (one, dropped
 * when `handles` reaches 0, which also completes an unended stream), and
 * the subscription (from subscribe until on_release has been delivered).
 */
#include "alloc-internal.h"
#include "atomic-internal.h"
#include "metrics-internal.h"
#include "stage-internal.h"

#include <rill/emitter.h>
#include <rill/stage.h>

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

enum { RUNNING = 0, CANCELLED = 1, BAD_REQUEST = 2 };

struct rill_emitter {
    rill_publisher pub;
    rill_subscription out;
    atomic_uint refs;
    atomic_uint handles;              /* rill_emitter references */
    _Atomic uint32_t wip;
    atomic_int subscribed;            /* the one subscription was claimed */
    atomic_int paused_now;            /* mirror of `paused`, for lock-free readers */
    atomic_uintptr_t drainer;         /* the draining thread's marker, or 0 */
    rill_emitter_options o;           /* o.metrics is a reference */
    size_t high, low;

    pthread_mutex_t lock;             /* guards every field below */
    pthread_cond_t room;              /* BLOCK waiters: a slot was freed or the stream ended */
    void **ring;
    size_t head, count;
    uint64_t demand;
    unsigned waiters;
    int done;                         /* no more items will be accepted; end after the queue */
    int stop;                         /* RUNNING / CANCELLED / BAD_REQUEST, from downstream */
    int closed;                       /* downstream's stream has ended */
    int err_code;                     /* ERROR overflow: EOVERFLOW */
    rill_error *error;                /* rill_emitter_fail's (reference) */
    int paused;
    rill_subscriber *down;            /* set once the subscribe path owns wip */
    rill_context *ctx;                /* downstream's discard hooks (reference) */
};

static _Thread_local char thread_marker;

static uintptr_t self_marker(void)
{
    return (uintptr_t)&thread_marker;
}

/* ---------------------------------------------------------------- lifetime */

static void emitter_free(rill_emitter *e)
{
    /* Only a never-subscribed emitter can still hold items. */
    while (e->count) {
        void *item = e->ring[e->head];
        e->head = (e->head + 1) % e->o.capacity;
        e->count--;
        rill__metrics_update(e->o.metrics, &(rill__metrics_delta){
            .discarded[RILL__DISCARD_CANCELLED] = 1, .queued_change = -1 });
        rill__discard(e->ctx, item);
    }
    rill_error_unref(e->error);
    rill_context_unref(e->ctx);
    rill_metrics_unref(e->o.metrics);
    if (e->o.ctx_free)
        e->o.ctx_free(e->o.ctx);
    pthread_cond_destroy(&e->room);
    pthread_mutex_destroy(&e->lock);
    rill__free(e->ring);
    rill__free(e);
}

static void em_ref(rill_emitter *e)
{
    atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
}

static void em_unref(rill_emitter *e)
{
    /* acq_rel: the last owner sees every other owner's writes */
    if (atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) == 1)
        emitter_free(e);
}

/* ---------------------------------------------------------------- the ring (lock held) */

static void *ring_pop(rill_emitter *e)
{
    void *item = e->ring[e->head];
    e->head = (e->head + 1) % e->o.capacity;
    e->count--;
    return item;
}

static void ring_push(rill_emitter *e, void *item)
{
    e->ring[(e->head + e->count) % e->o.capacity] = item;
    e->count++;
}

static void set_paused(rill_emitter *e, int paused)
{
    e->paused = paused;
    atomic_store_explicit(&e->paused_now, paused, memory_order_release);
    rill__metrics_paused(e->o.metrics, paused);
}

/* After an item left the queue: resume at the low watermark (returns 1:
 * on_writable is due) and wake one BLOCK waiter for the freed slot. */
static int slot_freed(rill_emitter *e)
{
    if (e->waiters)
        pthread_cond_signal(&e->room);
    if (e->paused && e->count <= e->low) {
        set_paused(e, 0);
        return 1;
    }
    return 0;
}

static void writable(rill_emitter *e)
{
    if (e->o.on_writable)
        e->o.on_writable(e->o.ctx);
}

/* ---------------------------------------------------------------- drain */

/* Cancel or request(0): the queue goes to the discard hooks, waiters and a
 * paused producer are told, and (for request(0)) the stream ends with
 * EINVAL. Returns 1: the stream has ended. */
static int stopped(rill_emitter *e, int why)
{
    pthread_mutex_lock(&e->lock);
    e->closed = 1;
    while (e->count) {
        void *item = ring_pop(e);
        rill__metrics_update(e->o.metrics, &(rill__metrics_delta){
            .discarded[RILL__DISCARD_CANCELLED] = 1, .queued_change = -1 });
        pthread_mutex_unlock(&e->lock);
        rill__discard(e->ctx, item);
        pthread_mutex_lock(&e->lock);
    }
    int resume = e->paused;
    if (resume)
        set_paused(e, 0);
    pthread_cond_broadcast(&e->room);
    pthread_mutex_unlock(&e->lock);
    if (resume)
        writable(e);
    if (why == BAD_REQUEST)
        rill_deliver_error_code(e->down, EINVAL,
                                "rule 3.9: non-positive subscription request (request(0))");
    return 1;
}

static int terminate(rill_emitter *e)
{
    if (e->error)
        rill__on_error(e->down, e->error);
    else if (e->err_code)
        rill_deliver_error_code(e->down, e->err_code, "rill_emit: the emitter's queue overflowed");
    else
        rill__on_complete(e->down);
    return 1;
}

/* Delivers what demand allows. Returns 1 once the subscriber got its last
 * signal (or cancelled). The stop flag is read per item, so a cancel from
 * inside on_next takes effect at once. */
static int drain_once(rill_emitter *e)
{
    for (;;) {
        pthread_mutex_lock(&e->lock);
        if (e->stop) {
            int why = e->stop;
            pthread_mutex_unlock(&e->lock);
            return stopped(e, why);
        }
        if (e->count && e->demand) {
            void *item = ring_pop(e);
            if (e->demand != RILL_UNBOUNDED)
                e->demand--;
            rill__metrics_update(e->o.metrics, &(rill__metrics_delta){
                .emitted = 1, .queued_change = -1 });
            int resume = slot_freed(e);
            pthread_mutex_unlock(&e->lock);
            if (resume)
                writable(e);
            rill__on_next(e->down, item);
            continue;
        }
        int end = !e->count && e->done;
        if (end)
            e->closed = 1;
        pthread_mutex_unlock(&e->lock);
        return end ? terminate(e) : 0;
    }
}

/* Runs as the drainer (wip held, `missed` tickets) until no work is left or
 * the stream ended. After the end wip is never given back, so nobody drains
 * again. */
static void drain(rill_emitter *e, uint32_t missed)
{
    for (;;) {
        atomic_store_explicit(&e->drainer, self_marker(), memory_order_relaxed);
        int ended = drain_once(e);
        atomic_store_explicit(&e->drainer, 0, memory_order_relaxed);
        if (ended) {
            rill_deliver_release(e->down);
            /* The hooks may hold what holds this emitter (a rill_on_discard
             * publisher downstream holds ours): let go of them now. Nothing
             * is discarded after the end — emits get EPIPE. */
            pthread_mutex_lock(&e->lock);
            rill_context *ctx = e->ctx;
            e->ctx = NULL;
            pthread_mutex_unlock(&e->lock);
            rill_context_unref(ctx);
            em_unref(e);   /* the subscription's reference */
            return;
        }
        missed = rill__wip_leave(&e->wip, missed);
        if (missed == 0)
            return;
    }
}

static void signal_drain(rill_emitter *e)
{
    if (rill__wip_enter(&e->wip))
        drain(e, 1);
}

/* ---------------------------------------------------------------- the subscription */

static rill_emitter *of_out(rill_subscription *s)
{
    return rill__container_of(s, rill_emitter, out);
}

static void out_request(rill_subscription *s, uint64_t n)
{
    rill_emitter *e = of_out(s);
    pthread_mutex_lock(&e->lock);
    if (n == 0) {
        if (!e->stop)
            e->stop = BAD_REQUEST;
    } else if (!e->closed) {
        e->demand = n >= RILL_UNBOUNDED - e->demand ? RILL_UNBOUNDED : e->demand + n;
        rill__metrics_requested(e->o.metrics, n);
    }
    pthread_mutex_unlock(&e->lock);
    signal_drain(e);
}

static void out_cancel(rill_subscription *s)
{
    rill_emitter *e = of_out(s);
    pthread_mutex_lock(&e->lock);
    int first = !e->stop && !e->closed;
    if (first)
        e->stop = CANCELLED;
    pthread_mutex_unlock(&e->lock);
    if (first)
        signal_drain(e);
}

static const struct rill_subscription_ops emitter_out_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = out_request,
    .cancel = out_cancel,
};

/* ---------------------------------------------------------------- the publisher */

static void emitter_subscribe(rill_publisher *self, rill_subscriber *s)
{
    rill_emitter *e = rill__container_of(self, rill_emitter, pub);
    int expected = 0;
    if (!atomic_compare_exchange_strong(&e->subscribed, &expected, 1)) {
        rill_reject(s, EBUSY, "rill_emitter: an emitter has only one subscriber");
        return;
    }
    em_ref(e);                              /* the subscription's */
    atomic_store_explicit(&e->wip, 1, memory_order_relaxed);   /* held by this phase */
    rill_context *ctx = rill_context_ref(rill_subscriber_context(s));
    pthread_mutex_lock(&e->lock);
    e->ctx = ctx;
    e->down = s;
    pthread_mutex_unlock(&e->lock);
    rill_deliver_subscribe(s, &e->out);
    drain(e, 1);   /* what arrived meanwhile, and a stream already ended */
}

static void emitter_destroy(rill_publisher *self)
{
    em_unref(rill__container_of(self, rill_emitter, pub));
}

static const struct rill_publisher_ops emitter_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = emitter_subscribe,
    .destroy = emitter_destroy,
};

/* ---------------------------------------------------------------- producers */

/* Waits for room until the deadline (NULL: forever). Returns 0, or
 * ETIMEDOUT. Lock held. */
static int wait_room(rill_emitter *e, const struct timespec *deadline)
{
    int rc = 0;
    e->waiters++;
    if (deadline)
        rc = pthread_cond_timedwait(&e->room, &e->lock, deadline);
    else
        pthread_cond_wait(&e->room, &e->lock);
    e->waiters--;
    return rc == ETIMEDOUT ? ETIMEDOUT : 0;
}

static void deadline_after(struct timespec *ts, uint64_t ns)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    uint64_t sec = ns / 1000000000u, nsec = ns % 1000000000u + (uint64_t)ts->tv_nsec;
    sec += nsec / 1000000000u;
    nsec %= 1000000000u;
    /* A deadline beyond time_t is forever, near enough. */
    ts->tv_sec = sec > (uint64_t)(INT64_MAX - ts->tv_sec) ? INT64_MAX : ts->tv_sec + (time_t)sec;
    ts->tv_nsec = (long)nsec;
}

/* The outcome of one rill_emit, decided under the lock. */
typedef struct emit_outcome {
    int rc;               /* 0 accepted, else the errno */
    int drain;            /* the subscriber can take something now */
    int evicted;
    void *victim;
} emit_outcome;

static void accept_locked(rill_emitter *e, void *item, emit_outcome *out)
{
    ring_push(e, item);
    rill__metrics_delta d = { .received = 1, .queued_change = 1 };
    if (out->evicted) {
        d.discarded[RILL__DISCARD_OVERFLOW] = 1;
        d.queued_change = 0;
    }
    rill__metrics_update(e->o.metrics, &d);
    if (!e->paused && e->count >= e->high)
        set_paused(e, 1);
    out->drain = e->down && e->demand;
}

/* Decides the fate of item under the lock; may wait (BLOCK). */
static void offer_locked(rill_emitter *e, void *item, const struct timespec *deadline,
                         int may_wait, emit_outcome *out)
{
    for (;;) {
        if (e->done || e->closed) {
            out->rc = EPIPE;
            return;
        }
        if (e->count < e->o.capacity) {
            accept_locked(e, item, out);
            return;
        }
        switch (e->o.policy) {
        case RILL_EMIT_DROP_NEWEST:
            out->rc = EAGAIN;
            return;
        case RILL_EMIT_DROP_OLDEST:
            out->victim = ring_pop(e);
            out->evicted = 1;
            accept_locked(e, item, out);
            return;
        case RILL_EMIT_ERROR:
            e->done = 1;
            e->err_code = EOVERFLOW;
            pthread_cond_broadcast(&e->room);
            out->rc = EOVERFLOW;
            out->drain = e->down != NULL;   /* deliver the queue, then the error */
            return;
        default: /* RILL_EMIT_BLOCK */
            if (atomic_load_explicit(&e->drainer, memory_order_relaxed) == self_marker()) {
                out->rc = EDEADLK;
                return;
            }
            if (!may_wait || wait_room(e, deadline) == ETIMEDOUT) {
                /* A slot may have been freed just as the wait timed out. */
                if (e->count < e->o.capacity && !e->done && !e->closed)
                    continue;
                out->rc = ETIMEDOUT;
                return;
            }
        }
    }
}

static int emit(rill_emitter *e, void *item, int may_wait, const struct timespec *deadline)
{
    if (!e)
        return EINVAL;
    emit_outcome out = { 0 };
    pthread_mutex_lock(&e->lock);
    offer_locked(e, item, deadline, may_wait, &out);
    if (out.rc)
        rill__metrics_refused(e->o.metrics, 1);
    /* The subscription may end (and drop its hooks) as soon as we unlock. */
    rill_context *ctx = out.evicted ? rill_context_ref(e->ctx) : NULL;
    pthread_mutex_unlock(&e->lock);
    if (out.evicted) {
        rill__discard(ctx, out.victim);
        rill_context_unref(ctx);
    }
    if (out.drain)
        signal_drain(e);
    if (out.rc)
        return out.rc;
    return atomic_load_explicit(&e->paused_now, memory_order_acquire) ? RILL_EMIT_PAUSED : 0;
}

int rill_emit(rill_emitter *e, void *item)
{
    return emit(e, item, 1, NULL);
}

int rill_emit_timeout(rill_emitter *e, void *item, uint64_t timeout_ns)
{
    if (!e)
        return EINVAL;
    struct timespec deadline = { 0 };
    if (timeout_ns)
        deadline_after(&deadline, timeout_ns);
    return emit(e, item, timeout_ns != 0, &deadline);
}

/* Ends the stream behind what is queued; the first end wins. */
static void end(rill_emitter *e, rill_error *error)
{
    pthread_mutex_lock(&e->lock);
    int first = !e->done && !e->closed;
    if (first) {
        e->done = 1;
        e->error = error;
        pthread_cond_broadcast(&e->room);
    }
    int drain_now = first && e->down;
    pthread_mutex_unlock(&e->lock);
    if (!first)
        rill_error_unref(error);
    if (drain_now)
        signal_drain(e);
}

void rill_emitter_complete(rill_emitter *e)
{
    if (e)
        end(e, NULL);
}

void rill_emitter_fail(rill_emitter *e, int code, const char *message)
{
    if (!e)
        return;
    /* rill_error_new never fails: out of memory it returns the immortal
     * ENOMEM error, which still ends the stream as a failure. */
    end(e, rill_error_new(code > 0 ? code : EINVAL, message));
}

int rill_emitter_paused(const rill_emitter *e)
{
    return e ? atomic_load_explicit(&e->paused_now, memory_order_acquire) : 0;
}

rill_emitter *rill_emitter_ref(rill_emitter *e)
{
    if (e)
        atomic_fetch_add_explicit(&e->handles, 1, memory_order_relaxed);
    return e;
}

void rill_emitter_unref(rill_emitter *e)
{
    if (!e || atomic_fetch_sub_explicit(&e->handles, 1, memory_order_acq_rel) != 1)
        return;
    end(e, NULL);   /* nobody can emit any more: the write end is closed */
    em_unref(e);
}

/* ---------------------------------------------------------------- construction */

void rill_emitter_options_init(rill_emitter_options *o)
{
    if (!o)
        return;
    *o = (rill_emitter_options){ .version = RILL_EMITTER_OPTIONS_VERSION,
                                 .policy = RILL_EMIT_BLOCK };
}

static int options_valid(const rill_emitter_options *o, size_t *high, size_t *low)
{
    if (o->version < 1 || o->capacity == 0 || o->capacity > SIZE_MAX / sizeof(void *))
        return 0;
    if ((unsigned)o->policy > RILL_EMIT_ERROR)
        return 0;
    *high = o->high_watermark ? o->high_watermark : o->capacity;
    *low = o->low_watermark ? o->low_watermark : *high / 2;
    return *high <= o->capacity && *low < *high;
}

static rill_publisher *fail_new(const rill_emitter_options *o, rill_emitter **out, int code)
{
    if (out)
        *out = NULL;
    if (o && o->ctx_free)
        o->ctx_free(o->ctx);
    errno = code;
    return NULL;
}

static int init_sync(rill_emitter *e)
{
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0)
        return -1;
    int ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
             pthread_cond_init(&e->room, &ca) == 0;
    pthread_condattr_destroy(&ca);
    if (!ok)
        return -1;
    if (pthread_mutex_init(&e->lock, NULL) != 0) {
        pthread_cond_destroy(&e->room);
        return -1;
    }
    return 0;
}

rill_publisher *rill_emitter_new(const rill_emitter_options *o, rill_emitter **out)
{
    size_t high, low;
    if (!o || !out || !options_valid(o, &high, &low))
        return fail_new(o, out, EINVAL);
    rill_emitter *e = rill__calloc(sizeof *e);
    void **ring = rill__malloc(o->capacity * sizeof(void *));
    if (!e || !ring || init_sync(e) != 0) {
        rill__free(ring);
        rill__free(e);
        return fail_new(o, out, ENOMEM);
    }
    rill_publisher_init(&e->pub, &emitter_ops);
    e->out.ops = &emitter_out_ops;
    e->ring = ring;
    e->o = *o;
    e->o.version = RILL_EMITTER_OPTIONS_VERSION;
    e->o.metrics = rill_metrics_ref(o->metrics);
    e->high = high;
    e->low = low;
    atomic_init(&e->refs, 2);     /* the publisher handles', the emitter handles' */
    atomic_init(&e->handles, 1);
    rill__metrics_capacity(e->o.metrics, o->capacity);
    *out = e;
    return &e->pub;
}
