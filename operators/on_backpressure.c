/* operators/on_backpressure.c — rill_on_backpressure_buffer / _latest / _drop
 * (and rill_on_backpressure_ex): absorb a producer faster than its consumer.
 *
 * The stage requests RILL_UNBOUNDED upstream and keeps what downstream has
 * not asked for yet in a ring preallocated at subscribe time (buffer: its
 * capacity; latest: one slot, where a new item evicts the held one; drop: a
 * small hand-off ring that only takes items downstream has demand for). It
 * is a queue-drain stage without a scheduler: the drain runs on whichever
 * thread gives it work — upstream's, inside on_next / on_complete, or a
 * requester's, inside request — and the atomic counter `wip` lets one
 * drainer at a time deliver, so downstream's signals never overlap and a
 * request made inside on_next only leaves a ticket for the running drainer.
 *
 * The ring is lock-free, because the whole point of the stage is a producer
 * hammering it while a consumer on another thread drains it: a mutex there
 * made the two threads queue behind each other (the consumer starved). It
 * is a bounded queue with a sequence number per slot (D. Vyukov's MPMC
 * design): one producer (upstream's on_next, serial by rule 1.3) puts;
 * several takers may take — the drainer, the producer itself when it
 * evicts the oldest item (DROP_OLDEST, LATEST), and the TTL task. A taker
 * claims a position with a CAS on `deq` and frees the slot by advancing its
 * sequence; the producer never overwrites a slot before that.
 *
 * Decisions worth their reasons:
 *  - Capacity is the logical bound `cap` (enq - deq < cap), the ring is the
 *    next power of two: indexing is a mask, and a slot whose taker has
 *    claimed but not yet freed it is waited for briefly (the taker is
 *    between two stores).
 *  - The producer signals the drain only when downstream has demand (or the
 *    stream ends): under overload most arrivals are dropped and cost no
 *    read-modify-write on a shared line. Its put is followed by a full
 *    fence before it reads the demand, and a request adds demand with an
 *    atomic RMW before it signals: one of the two sees the other's write.
 *  - Metrics: an arrival's delta (received, queued or discarded) is applied
 *    before its item becomes visible, and a delivery's or eviction's after
 *    the item left the ring, so the queued gauge never sees a -1 before its
 *    +1 and every snapshot keeps received == emitted + discarded + queued.
 *  - DROP accepts an item only while the demand not yet covered (requested
 *    - delivered - held) is positive; an item evicted by its TTL gives its
 *    demand back.
 *  - At cancel the drainer empties the ring to the discard hooks; an item
 *    the producer put just as the stream closed is found and discarded when
 *    the stage is freed (after upstream's release), so every item leaves
 *    exactly once.
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
#include <sched.h>
#include <stddef.h>
#include <string.h>

enum { RUNNING = 0, CANCELLED = 1, BAD_REQUEST = 2 };

typedef struct bp_publisher {
    rill__operator op;               /* op.ctx / op.ctx_free: the options' ctx */
    rill_backpressure_options o;     /* o.scheduler and o.metrics are references */
} bp_publisher;

typedef struct slot {
    _Atomic size_t seq;              /* pos: free for the put at pos; pos + 1: holds pos's item */
    _Atomic(void *) item;
    _Atomic uint64_t stamp;          /* TTL only: arrival time */
} slot;

typedef struct bp {
    rill_subscriber in;
    rill_subscription out;
    rill__upstream up;
    rill_task ttl_task;
    rill_subscriber *down;
    rill_context *ctx;               /* reference */
    rill_publisher *owner;           /* reference: keeps the options (ctx, scheduler, metrics) alive */
    const rill_backpressure_options *o;   /* the owner's */
    rill_metrics *m;                 /* the owner's o.metrics, or NULL */
    rill_worker *worker;             /* TTL only */
    slot *ring;
    size_t cap, mask;
    atomic_uint refs;
    _Atomic uint32_t wip;
    atomic_int stop;                 /* RUNNING / CANCELLED / BAD_REQUEST, from downstream */
    atomic_int done;                 /* upstream ended (or ERROR overflowed); set after the last put */
    atomic_int closed;               /* downstream's stream ended */
    atomic_int armed;                /* the TTL task is queued or running (it holds a reference) */
    int err_code;                    /* ERROR overflow: set before `done` */
    rill_error *error;               /* upstream's error (reference), set before `done` */

    /* Padding, not _Alignas: the stage comes from rill__calloc (16-byte
     * alignment), and an over-aligned type there is undefined behaviour. */
    char pad0[64];
    size_t enq;                      /* the producer's next position (producer only) */
    char pad1[64];
    _Atomic size_t deq;              /* the next position to take (takers CAS it) */
    char pad2[64];
    _Atomic uint64_t requested;      /* downstream's demand so far (saturating) */
    _Atomic uint64_t delivered;      /* written by the drainer only */
    _Atomic uint64_t expired;        /* items the TTL evicted (they give their demand back) */
    _Atomic size_t count;            /* with metrics only: held items, as the gauge counts them */
    uint64_t accepted;               /* DROP: items the producer took against demand (producer only) */
} bp;

/* ---------------------------------------------------------------- lifetime */

static int ring_take(bp *b, void **item, int only_expired, uint64_t now);

static void bp_free(bp *b)
{
    /* Items put as the stream closed (see the top of the file). */
    void *item;
    while (ring_take(b, &item, 0, 0)) {
        rill__metrics_update(b->m, &(rill__metrics_delta){
            .discarded[RILL__DISCARD_CANCELLED] = 1, .queued_change = -1 });
        rill__discard(b->ctx, item);
    }
    rill_worker_free(b->worker);
    rill_error_unref(b->error);
    rill_context_unref(b->ctx);
    rill_publisher_unref(b->owner);
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

/* ---------------------------------------------------------------- the ring */

/* Takes the oldest item (only if it has expired, with only_expired).
 * Returns 0 when there is none (or it has not expired). Any thread. */
static int ring_take(bp *b, void **item, int only_expired, uint64_t now)
{
    size_t pos = atomic_load_explicit(&b->deq, memory_order_relaxed);
    for (;;) {
        slot *s = &b->ring[pos & b->mask];
        size_t seq = atomic_load_explicit(&s->seq, memory_order_acquire);
        if (seq == pos + 1) {
            if (only_expired &&
                now - atomic_load_explicit(&s->stamp, memory_order_relaxed) < b->o->ttl_ns)
                return 0;   /* a stale read here only makes the CAS below fail */
            if (atomic_compare_exchange_weak_explicit(&b->deq, &pos, pos + 1,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                *item = atomic_load_explicit(&s->item, memory_order_relaxed);
                atomic_store_explicit(&s->seq, pos + b->mask + 1, memory_order_release);
                return 1;
            }
            /* pos now holds the current deq: retry there */
        } else if ((ptrdiff_t)(seq - (pos + 1)) < 0) {
            return 0;       /* empty at pos */
        } else {
            pos = atomic_load_explicit(&b->deq, memory_order_relaxed);
        }
    }
}

/* Whether the oldest item has expired, and how long until it does (0: no
 * item). Any thread. */
static int head_expired(bp *b, uint64_t now, uint64_t *wait)
{
    size_t pos = atomic_load_explicit(&b->deq, memory_order_acquire);
    slot *s = &b->ring[pos & b->mask];
    *wait = 0;
    if (atomic_load_explicit(&s->seq, memory_order_acquire) != pos + 1)
        return 0;
    uint64_t age = now - atomic_load_explicit(&s->stamp, memory_order_relaxed);
    if (age >= b->o->ttl_ns)
        return 1;
    *wait = b->o->ttl_ns - age;
    return 0;
}

/* Items held now, for the producer's room check. With metrics it is the
 * count the queued gauge moves with (a taker's -1 lands before its slot is
 * counted free, the producer's +1 before its put), so the gauge never reads
 * above the capacity; without, the positions (exact up to takes in
 * progress) spare the read-modify-write per item. */
static size_t held(const bp *b)
{
    if (b->m)
        return atomic_load_explicit(&((bp *)b)->count, memory_order_acquire);
    return b->enq - atomic_load_explicit(&((bp *)b)->deq, memory_order_acquire);
}

/* After a taker applied its metrics delta. */
static void count_taken(bp *b)
{
    if (b->m)
        atomic_fetch_sub_explicit(&b->count, 1, memory_order_release);
}

/* The producer's put: the caller checked there is room. */
static void ring_put(bp *b, void *item, uint64_t now)
{
    size_t pos = b->enq;
    slot *s = &b->ring[pos & b->mask];
    /* A taker that claimed this slot's previous item may not have freed it
     * yet: it is between its CAS and its store. */
    for (unsigned spins = 0; atomic_load_explicit(&s->seq, memory_order_acquire) != pos; spins++)
        if (spins < 64)
            rill__cpu_relax();
        else
            sched_yield();
    atomic_store_explicit(&s->item, item, memory_order_relaxed);
    atomic_store_explicit(&s->stamp, now, memory_order_relaxed);
    atomic_store_explicit(&s->seq, pos + 1, memory_order_release);
    b->enq = pos + 1;
}

static uint64_t now_of(const bp *b)
{
    return b->o->ttl_ns ? rill_scheduler_now(b->o->scheduler) : 0;
}

/* Demand not yet used by a delivery. */
static uint64_t outstanding(bp *b)
{
    uint64_t req = atomic_load_explicit(&b->requested, memory_order_acquire);
    if (req == RILL_UNBOUNDED)
        return RILL_UNBOUNDED;
    return req - atomic_load_explicit(&b->delivered, memory_order_relaxed);
}

static void discard_counted(bp *b, void *item, rill__discard_reason why)
{
    if (why == RILL__DISCARD_EXPIRED)
        atomic_fetch_add_explicit(&b->expired, 1, memory_order_release);
    rill__metrics_delta d = { .queued_change = -1 };
    d.discarded[why] = 1;
    rill__metrics_update(b->m, &d);
    count_taken(b);
    rill__discard(b->ctx, item);
}

/* ---------------------------------------------------------------- TTL */

static void signal_drain(bp *b);

static void ttl_evict(bp *b)
{
    void *item;
    int evicted = 0;
    while (ring_take(b, &item, 1, now_of(b))) {
        discard_counted(b, item, RILL__DISCARD_EXPIRED);
        evicted = 1;
    }
    if (evicted)
        signal_drain(b);   /* an ended upstream may have nothing held now */
}

/* Evicts expired items, then re-arms for the next one, or disarms. The
 * task holds a reference while `armed`. */
static void ttl_run(rill_task *t, int status)
{
    bp *b = rill__container_of(t, bp, ttl_task);
    for (;;) {
        if (status == RILL_TASK_RUN && !atomic_load_explicit(&b->closed, memory_order_acquire))
            ttl_evict(b);
        uint64_t wait = 0;
        if (status == RILL_TASK_RUN && !atomic_load_explicit(&b->closed, memory_order_acquire))
            head_expired(b, now_of(b), &wait);
        if (wait) {
            if (rill_schedule_after(b->worker, t, wait) == 0)
                return;   /* the queued task keeps the reference */
            /* Refused (shut down): expiry is still checked before each
             * delivery. */
            atomic_store(&b->armed, 0);
            break;
        }
        atomic_store_explicit(&b->armed, 0, memory_order_seq_cst);
        /* A put that saw `armed` set before we cleared it did not arm: look
         * again, and take the arming back if nobody else did. */
        uint64_t again;
        if (status != RILL_TASK_RUN || atomic_load_explicit(&b->closed, memory_order_acquire) ||
            (!head_expired(b, now_of(b), &again) && again == 0))
            break;
        int expected = 0;
        if (!atomic_compare_exchange_strong(&b->armed, &expected, 1))
            break;   /* a put re-armed: its task has its own reference */
    }
    bp_unref(b);
}

/* Called by the producer after a put. */
static void ttl_arm(bp *b)
{
    int expected = 0;
    if (atomic_load_explicit(&b->armed, memory_order_relaxed) ||
        !atomic_compare_exchange_strong(&b->armed, &expected, 1))
        return;
    bp_ref(b);
    if (rill_schedule_after(b->worker, &b->ttl_task, b->o->ttl_ns) == 0)
        return;
    /* Refused (shut down): expiry is still checked before each delivery. */
    atomic_store(&b->armed, 0);
    bp_unref(b);
}

/* At the end of the stream (`closed` is set): a queued TTL task is taken
 * back with its reference; one running sees `closed` and stops. */
static void ttl_disarm(bp *b)
{
    if (b->worker && atomic_load(&b->armed) && rill_task_cancel(b->worker, &b->ttl_task) == 0) {
        atomic_store(&b->armed, 0);
        bp_unref(b);
    }
}

/* ---------------------------------------------------------------- drain */

/* Closes the stream and hands every held item to the discard hooks. */
static void clear(bp *b)
{
    atomic_store_explicit(&b->closed, 1, memory_order_seq_cst);
    void *item;
    while (ring_take(b, &item, 0, 0))
        discard_counted(b, item, RILL__DISCARD_CANCELLED);
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
    atomic_store_explicit(&b->closed, 1, memory_order_release);
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
    uint64_t delivered = atomic_load_explicit(&b->delivered, memory_order_relaxed);
    for (;;) {
        int why = atomic_load_explicit(&b->stop, memory_order_acquire);
        if (why)
            return stopped(b, why);
        void *item;
        if (b->o->ttl_ns && ring_take(b, &item, 1, now_of(b))) {
            discard_counted(b, item, RILL__DISCARD_EXPIRED);
            continue;
        }
        uint64_t req = atomic_load_explicit(&b->requested, memory_order_acquire);
        if ((req == RILL_UNBOUNDED || req > delivered) && ring_take(b, &item, 0, 0)) {
            rill__metrics_update(b->m, &(rill__metrics_delta){ .emitted = 1, .queued_change = -1 });
            count_taken(b);
            atomic_store_explicit(&b->delivered, ++delivered, memory_order_relaxed);
            rill__on_next(b->down, item);
            continue;
        }
        /* Nothing to deliver now. `done` is set after the last put, so
         * once it is seen an empty ring stays empty. */
        if (!atomic_load_explicit(&b->done, memory_order_acquire))
            return 0;
        size_t pos = atomic_load_explicit(&b->deq, memory_order_acquire);
        if (atomic_load_explicit(&b->ring[pos & b->mask].seq, memory_order_acquire) == pos + 1)
            return 0;   /* items wait for demand */
        return terminate(b);
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
    if (b->up.sub) {
        rill__cancel(s);   /* rule 2.5: keep the first subscription */
        return;
    }
    b->up.sub = s;
    rill_deliver_subscribe(b->down, &b->out);
    bp_ref(b);   /* a synchronous upstream may release us inside the request */
    drain(b, 1); /* ends the subscribe phase, which held wip */
    rill__upstream_request(&b->up, RILL_UNBOUNDED);
    bp_unref(b);
}

/* What the producer decided for one arrival. */
typedef struct offer {
    void *dropped;          /* an item to discard (the arrival, or the evicted oldest) */
    int drop, overflow, failed;
} offer;

/* Decides the fate of an arrival and applies its metrics delta before the
 * item becomes visible (see the top of the file). Returns 1: put it. */
/* The arrival's metrics delta: received, and queued or discarded. A stage
 * without metrics builds nothing. */
static void count_arrival(bp *b, const offer *f, int put)
{
    if (!b->m)
        return;
    rill__metrics_delta d = { .received = 1, .queued_change = put && !f->drop };
    if (f->drop)
        d.discarded[f->overflow ? RILL__DISCARD_OVERFLOW : RILL__DISCARD_CANCELLED] = 1;
    rill__metrics_apply(b->m, &d);
    if (put && !f->drop)
        atomic_fetch_add_explicit(&b->count, 1, memory_order_relaxed);
}

static void drop_arrival(offer *f, void *item, int overflow)
{
    f->drop = 1;
    f->overflow = overflow;
    f->dropped = item;
}

/* Decides the fate of an arrival and counts it before the item becomes
 * visible (see the top of the file). Returns 1: put it. */
static int decide(bp *b, void *item, offer *f)
{
    const rill_backpressure_options *o = b->o;
    int put = 1;
    if (atomic_load_explicit(&b->closed, memory_order_acquire) ||
        atomic_load_explicit(&b->done, memory_order_relaxed)) {
        drop_arrival(f, item, 0);
        put = 0;
    } else if (o->mode == RILL_BACKPRESSURE_DROP) {
        /* Each accepted item is matched by a unit of demand (stale reads of
         * requested or expired only make this stricter). */
        uint64_t req = atomic_load_explicit(&b->requested, memory_order_acquire);
        uint64_t used = b->accepted - atomic_load_explicit(&b->expired, memory_order_acquire);
        if (held(b) >= b->cap || (req != RILL_UNBOUNDED && req <= used)) {
            drop_arrival(f, item, 1);
            put = 0;
        }
    } else if (held(b) >= b->cap) {
        void *victim;
        if (o->mode == RILL_BACKPRESSURE_BUFFER && o->policy != RILL_OVERFLOW_DROP_OLDEST) {
            drop_arrival(f, item, 1);
            f->failed = o->policy == RILL_OVERFLOW_ERROR;
            put = 0;
        } else if (ring_take(b, &victim, 0, 0)) {
            drop_arrival(f, victim, 1);   /* drop oldest; latest replaces its one slot */
        }   /* else the drainer took it meanwhile: there is room now */
    }
    count_arrival(b, f, put);
    return put;
}

static void in_on_next(rill_subscriber *self, void *item)
{
    bp *b = of_in(self);
    offer f = { 0 };
    int put = decide(b, item, &f);
    if (put) {
        b->accepted++;
        ring_put(b, item, now_of(b));
        if (b->o->ttl_ns)
            ttl_arm(b);
    }
    if (f.drop) {
        if (f.overflow && b->o->on_overflow)
            b->o->on_overflow(((bp_publisher *)b->owner)->op.ctx, f.dropped);
        rill__discard(b->ctx, f.dropped);
    }
    if (f.failed) {
        b->err_code = EOVERFLOW;
        atomic_store_explicit(&b->done, 1, memory_order_release);
        rill__upstream_cancel(&b->up);
        signal_drain(b);
        return;
    }
    if (put) {
        /* The put must be visible before the demand is read: a requester
         * adds demand, then drains (see the top of the file). */
        atomic_thread_fence(memory_order_seq_cst);
        if (outstanding(b) != 0)
            signal_drain(b);
    }
}

static void in_end(bp *b, const rill_error *e)
{
    if (atomic_load_explicit(&b->done, memory_order_relaxed))
        return;   /* ERROR overflowed first */
    if (e)
        b->error = rill_error_ref((rill_error *)e);
    atomic_store_explicit(&b->done, 1, memory_order_release);
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
        uint64_t cur = atomic_load_explicit(&b->requested, memory_order_relaxed);
        uint64_t next;
        do {
            if (cur == RILL_UNBOUNDED)
                break;
            next = n >= RILL_UNBOUNDED - cur ? RILL_UNBOUNDED : cur + n;
        } while (!atomic_compare_exchange_weak_explicit(&b->requested, &cur, next,
                                                        memory_order_seq_cst,
                                                        memory_order_relaxed));
        rill__metrics_requested(b->m, n);
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
    size_t cap = store_size(o), size = 2;   /* a ring of 1 cannot tell full from free */
    while (size < cap)
        size <<= 1;
    bp *b = rill__calloc(sizeof *b);
    if (!b)
        return NULL;
    b->cap = cap;
    b->mask = size - 1;
    b->ring = rill__malloc(size * sizeof(slot));
    b->worker = o->ttl_ns ? rill_worker_new(o->scheduler) : NULL;
    if (b->ring && (!o->ttl_ns || b->worker)) {
        for (size_t i = 0; i < size; i++)
            atomic_init(&b->ring[i].seq, i);
        return b;
    }
    rill_worker_free(b->worker);
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
    if (o->capacity > SIZE_MAX / (4 * sizeof(slot)))   /* the ring rounds up to a power of two */
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
