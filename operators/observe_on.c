/* operators/observe_on.c — rill_observe_on: deliver on a scheduler's worker.
 *
 * Upstream's items go into a single-producer single-consumer ring of
 * `prefetch` slots (rounded up to a power of two). The stage requests
 * `prefetch` upstream at the start, then `limit = prefetch - prefetch/4`
 * each time the consumer has taken that many from the ring (the 75% rule),
 * so upstream is never more than `prefetch` items ahead of the consumer.
 *
 * Threads and ownership:
 *  - the producer side (in.*) runs on whatever thread upstream signals on;
 *    it writes ring slots and `tail`, and never blocks;
 *  - the consumer side is the drain loop, run by the worker's task: it owns
 *    `head`, delivers every downstream signal, and replenishes upstream;
 *  - the queue-drain counter `wip` decides who may drain: whoever moves it
 *    from 0 schedules the task. It starts at 1, held by the subscribe phase,
 *    so nothing reaches downstream while its on_subscribe is still running.
 *
 * Lifetime: two references — upstream's (dropped in in.on_release) and the
 * drain's (dropped once downstream has been released). Calls into upstream
 * from the worker go through rundown protection (lib/upstream.c), since
 * upstream may release us on its own thread at any moment. Items still in
 * the ring when the stage is freed go to the discard hooks.
 *
 * Errors: by default an upstream error waits behind the queued items
 * (delay_error); with delay_error = 0 it cuts ahead and the queue is
 * discarded. Upstream sending more than requested ends the stream with
 * EOVERFLOW. A task refused by a shut-down scheduler ends it with ECANCELED.
 *
 * Speed. What limits a hop between two busy cores is cache lines moving
 * between them, not instructions; each choice below removes a transfer per
 * item or hides one:
 *  - the stage and its ring are one allocation aligned to RILL__SEPARATE,
 *    and the fields are grouped by writer, each group in its own 128-byte
 *    block (the prefetcher moves lines in pairs): the producer's per-item
 *    line (tail) never holds what the consumer writes per item (head);
 *  - the producer checks overflow against a private copy of up_requested
 *    (`allowed`), re-read only when tail reaches it: once per replenish;
 *  - a light producer skips the wip increment while a drainer runs (see
 *    stranded() and lib/barrier.c for why no item can be left behind);
 *  - the drainer does not chase the producer item by item (gather());
 *  - the producer takes ring lines back from the consumer's cache two lines
 *    ahead of its stores (rill__prefetch_write);
 *  - when the ring runs dry the drainer polls for a while before giving
 *    wip back (more_coming()), and subscribe_on's task does the same for
 *    requests, so a replenish costs an atomic add, not a trip through the
 *    scheduler and a wake-up. Both waits are bounded (~10 µs), yield the
 *    CPU every 2 µs, and stop when the thread has other work, so an idle
 *    pipeline parks and costs no CPU.
 * None of these changes who may touch what: the ring, wip and the demand
 * counters keep the protocol described above.
 */
#include "alloc-internal.h"
#include "atomic-internal.h"
#include "relay-internal.h"
#include "scheduler-internal.h"
#include "stage-internal.h"
#include "upstream-internal.h"

#include <rill/operators.h>
#include <rill/scheduler.h>

#include <errno.h>
#include <stdalign.h>
#include <stdint.h>

enum { RUNNING = 0, CANCELLED = 1, BAD_REQUEST = 2, SCHED_DEAD = 3 };

typedef struct observe_publisher {
    rill__operator op;
    rill_scheduler *sched;   /* reference */
    uint32_t prefetch;
    int delay_error;
} observe_publisher;

typedef struct observe {
    /* Set at subscribe, then only read (by both sides). */
    rill_subscriber in;
    rill_subscription out;
    rill_subscriber *down;
    rill_worker *worker;
    rill_context *ctx;           /* reference */
    rill_publisher *owner;       /* reference */
    rill_scheduler *sched;       /* reference */
    void *block;                 /* what rill__calloc returned (see observe_alloc) */
    void **ring;
    uint64_t mask;
    uint32_t prefetch, limit;
    uint32_t batch;              /* ready items worth a delivery run (gather()) */
    int delay_error;
    int light;                   /* producer may skip the fence (lib/barrier.c) */

    /* Each group below sits in its own RILL__SEPARATE block, so that what
     * one thread writes often never shares a line with what another reads
     * often. */

    /* producer (upstream's thread): writes per item */
    alignas(RILL__SEPARATE) _Atomic uint64_t tail;
    uint64_t allowed;            /* cached up_requested: tail may grow to it */
    int producer_done;           /* upstream's signals only */
    rill_error *error;           /* written by the producer before up_done */

    /* the queue-drain counter: read per item by a light producer */
    alignas(RILL__SEPARATE) _Atomic uint32_t wip;

    /* consumer (the drainer): written per item or per batch */
    alignas(RILL__SEPARATE) uint64_t head;
    uint64_t seen_tail;          /* last tail read: items up to it are ready */
    uint32_t consumed;           /* since the last replenish */
    uint32_t item_ns;            /* recent cost of one delivery (see gather()) */
    uint64_t run_start;          /* when the current delivery run began; 0: unknown */
    uint64_t run_from;           /* head then */
    rill__upstream up;           /* calls: per replenish */
    rill_task task;              /* queued when the drain starts */
    atomic_uint refs;

    /* written by the consumer per batch, read by the producer per batch */
    alignas(RILL__SEPARATE) _Atomic uint64_t up_requested;   /* total requested upstream */

    /* downstream demand */
    alignas(RILL__SEPARATE) _Atomic uint64_t requested;

    /* rarely written: read per item by the consumer */
    alignas(RILL__SEPARATE) atomic_int stop;
    atomic_int up_done;
} observe;

static uint64_t ring_size(uint32_t prefetch)
{
    uint64_t n = 1;
    while (n < prefetch)
        n <<= 1;
    return n;
}

/* One block: the stage, then its ring, each starting on a RILL__SEPARATE
 * boundary (the groups above are only apart if the struct is aligned), and
 * a gap after the ring, so that no other heap object shares a line with
 * either. NULL with errno ENOMEM. */
static observe *observe_alloc(uint64_t slots)
{
    const size_t sep = RILL__SEPARATE;
    const size_t head = (sizeof(observe) + sep - 1) & ~(sep - 1);
    if (slots > (SIZE_MAX - head - 2 * sep) / sizeof(void *)) {
        errno = ENOMEM;
        return NULL;
    }
    void *block = rill__calloc(head + (size_t)slots * sizeof(void *) + 2 * sep);
    if (!block)
        return NULL;
    uintptr_t at = ((uintptr_t)block + sep - 1) & ~(uintptr_t)(sep - 1);
    observe *o = (observe *)at;
    o->block = block;
    o->ring = (void **)(at + head);
    o->mask = slots - 1;
    return o;
}

static void observe_free(observe *o)
{
    uint64_t tail = atomic_load_explicit(&o->tail, memory_order_acquire);
    for (uint64_t h = o->head; h != tail; h++)
        rill__discard(o->ctx, o->ring[h & o->mask]);
    rill_worker_free(o->worker);
    rill_scheduler_unref(o->sched);
    rill_error_unref(o->error);
    rill_context_unref(o->ctx);
    rill_publisher_unref(o->owner);
    rill__free(o->block);
}

static void observe_ref(observe *o)
{
    atomic_fetch_add_explicit(&o->refs, 1, memory_order_relaxed);
}

static void observe_unref(observe *o)
{
    /* acq_rel: the last owner sees every other owner's writes */
    if (atomic_fetch_sub_explicit(&o->refs, 1, memory_order_acq_rel) == 1)
        observe_free(o);
}

/* ---------------------------------------------------------------- drain */

static void clear(observe *o)
{
    uint64_t tail = atomic_load_explicit(&o->tail, memory_order_acquire);
    for (; o->head != tail; o->head++)
        rill__discard(o->ctx, o->ring[o->head & o->mask]);
    o->seen_tail = tail;
}

static void replenish(observe *o)
{
    /* Publish the new allowance before asking: a synchronous upstream
     * delivers inside the request, and the producer checks against it. */
    atomic_fetch_add_explicit(&o->up_requested, o->limit, memory_order_release);
    rill__upstream_request(&o->up, o->limit);
}

/* The stream ends for a reason other than upstream's terminal signal. */
static int stopped(observe *o, int why)
{
    clear(o);
    if (why == CANCELLED)
        return 1;   /* cancel() already told upstream */
    rill__upstream_cancel(&o->up);
    if (why == BAD_REQUEST)
        rill_deliver_error_code(o->down, EINVAL,
                                "rule 3.9: non-positive subscription request (request(0))");
    else
        rill_deliver_error_code(o->down, ECANCELED, "observe_on: the scheduler shut down");
    return 1;
}

static int terminate(observe *o)
{
    if (o->error)
        rill__on_error(o->down, o->error);
    else
        rill__on_complete(o->down);
    return 1;
}

/* Gathering. A drainer that has caught up with a producer still at work
 * would otherwise take each item as soon as its tail store lands, chasing
 * the producer item by item: every read of `tail` (and of the ring line
 * being filled) pulls a line from the producer's core, whose next store to
 * it then waits for the line to come back, with every later store queued
 * behind it. On a 2-core VM that capped a hop at ~40 M items/s, against
 * over 100 M gathering. So when only a few items are ready, the drainer
 * waits for more, reading `tail` again every GATHER_POLL_NS at most
 * GATHER_POLLS times, and delivers at once when a read finds that the
 * producer has paused.
 *
 * How many are "a few" is measured in the consumer's own time: enough
 * items for about GATHER_WORK_NS of delivering (`item_ns` is what one
 * delivery has cost lately), at most `batch`. A consumer that does real
 * work per item chases little anyway and gathers few, so the queue in
 * front of it stays short (latency); a consumer that does almost nothing
 * gathers up to `batch`. An item thus waits at most GATHER_POLLS *
 * GATHER_POLL_NS more, and only while its producer keeps on producing.
 * Only on a thread that may spin (rill__worker_may_spin): elsewhere the
 * drain may be running on the producer's own thread. */
#define GATHER_POLL_NS 200u
#define GATHER_POLLS 2u
#define GATHER_WORK_NS 256u
#define GATHER_MAX 64u   /* batch = limit / 4, capped at this */

/* Called when the drainer has delivered everything it knew of and found t
 * (> head) published; returns the tail to deliver up to. Right after a
 * wait for the producer (run_start 0: the drain just started, or
 * more_coming() polled an empty ring) it delivers at once: the producer
 * was idle, and an item that ends a pause should not wait more. */
static uint64_t gather(observe *o, uint64_t t)
{
    uint64_t now = rill__monotonic_ns();
    if (o->run_start) {
        uint64_t run = o->head - o->run_from;
        if (run >= 8) {
            uint64_t per = (now - o->run_start) / run;
            per = per > 1000 ? 1000 : per;
            o->item_ns = (uint32_t)((3 * (uint64_t)o->item_ns + per + 3) / 4);
        }
        uint64_t want = GATHER_WORK_NS / (o->item_ns ? o->item_ns : 1);
        want = want < 1 ? 1 : want > o->batch ? o->batch : want;
        for (unsigned p = 0; p < GATHER_POLLS && t - o->head < want; p++) {
            uint64_t until = now + GATHER_POLL_NS;
            do {
                for (unsigned k = 0; k < 8; k++)
                    rill__cpu_relax();
                now = rill__monotonic_ns();
            } while (now < until);
            uint64_t now_tail = atomic_load_explicit(&o->tail, memory_order_acquire);
            if (now_tail == t)
                break;   /* the producer paused: deliver what is there */
            t = now_tail;
        }
    }
    o->run_start = now;
    o->run_from = o->head;
    return t;
}

/* Delivers what demand allows. Returns 1 once downstream got its last
 * signal (or cancelled). The shared `tail` and `up_done` are read once per
 * run of ready items, not per item; `stop` is checked per item so a cancel
 * from inside on_next takes effect at once. */
static int drain_once(observe *o)
{
    uint64_t r = rill__load_acquire(&o->requested);
    uint64_t e = 0;
    for (;;) {
        int why = atomic_load_explicit(&o->stop, memory_order_acquire);
        if (why)
            return stopped(o, why);
        if (!o->delay_error && atomic_load_explicit(&o->up_done, memory_order_acquire) &&
            o->error) {
            clear(o);
            return terminate(o);
        }
        if (o->head == o->seen_tail) {
            /* Read up_done before tail: everything pushed before the
             * terminal signal is then visible. */
            int done = atomic_load_explicit(&o->up_done, memory_order_acquire);
            if (done && o->error && !o->delay_error) {
                clear(o);
                return terminate(o);
            }
            o->seen_tail = atomic_load_explicit(&o->tail, memory_order_acquire);
            if (o->head == o->seen_tail) {
                if (done)
                    return terminate(o);
                break;
            }
            if (!done && e != r && rill__worker_may_spin(o->worker))
                o->seen_tail = gather(o, o->seen_tail);
        }
        if (e == r) {
            r = e ? rill__demand_produced(&o->requested, e) : rill__load_acquire(&o->requested);
            e = 0;
            if (r == 0)
                break;
        }
        void *item = o->ring[o->head & o->mask];
        o->head++;
        rill__on_next(o->down, item);
        e++;
        if (++o->consumed == o->limit) {
            o->consumed = 0;
            replenish(o);
        }
    }
    if (e)
        rill__demand_produced(&o->requested, e);
    return 0;
}

/* Before giving up its turn, a drainer that caught up with a live producer
 * (demand outstanding, upstream not done) polls the ring for a short while:
 * handing the drain back to the scheduler costs a queue round trip (and, if
 * the worker's thread parks, a ~20 µs wake-up) for every item that arrives
 * just after. Bounded in time, so an idle pipeline still goes quiet. */
#define CATCH_UP_NS 10000u

static int more_coming(observe *o)
{
    rill__spinner sp;
    o->run_start = 0;   /* the wait is not delivery work (see gather()) */
    for (unsigned i = 1;; i++) {
        /* Poll sparsely: every read of `tail` while the producer writes it
         * moves the line between cores, and a consumer that polls flat out
         * makes the producer pay that per item. Between polls the producer
         * fills a few slots undisturbed. */
        for (unsigned k = 0; k < 8; k++)
            rill__cpu_relax();
        if (atomic_load_explicit(&o->tail, memory_order_relaxed) != o->seen_tail ||
            atomic_load_explicit(&o->up_done, memory_order_relaxed) ||
            atomic_load_explicit(&o->stop, memory_order_relaxed))
            return 1;
        if (i == 4)
            rill__spin_start(&sp, CATCH_UP_NS);
        if ((i & 3) == 0 &&
            (!rill__spin_more(&sp) || !rill__worker_may_spin(o->worker)))
            return 0;
    }
}

static int worth_waiting(observe *o)
{
    return !atomic_load_explicit(&o->up_done, memory_order_relaxed) &&
           rill__load_relaxed(&o->requested) != 0 && rill__worker_may_spin(o->worker) &&
           more_coming(o);
}

/* The drainer has given wip back. With light producers (which skip the
 * signal while wip is held), an item published just before may have seen
 * the old wip: after a process-wide barrier its tail store is visible, so
 * one re-check finds it. Items only need a drainer now if there is demand
 * for them: a later request signals through the full path (and re-checking
 * without demand would find the same undeliverable items forever). */
static int stranded(observe *o, uint64_t seen)
{
    if (rill__load_relaxed(&o->requested) == 0)
        return 0;
    rill__asym_heavy();
    return atomic_load_explicit(&o->tail, memory_order_acquire) != seen;
}

/* Runs as the drainer (wip held) until no work is left or the stream ended.
 * After the end, wip is never given back, so no drain is scheduled again. */
static void drain(observe *o)
{
    uint32_t missed = 1;
    o->run_start = 0;   /* we may have been idle since the last run (see gather()) */
    for (;;) {
        if (drain_once(o)) {
            rill_deliver_release(o->down);
            observe_unref(o);
            return;
        }
        if (worth_waiting(o))
            continue;
        if (!o->light) {
            missed = rill__wip_leave(&o->wip, missed);
            if (missed == 0)
                return;   /* o may be gone: touch nothing */
            continue;
        }
        /* Once wip is given back, another thread may become the drainer,
         * own the consumer fields, even finish the stream and drop the
         * drain's reference: read what the re-check needs first, and keep
         * the stage alive across it. */
        uint64_t seen = o->seen_tail;
        observe_ref(o);
        missed = rill__wip_leave(&o->wip, missed);
        if (missed == 0 && (!stranded(o, seen) || !rill__wip_enter(&o->wip))) {
            observe_unref(o);
            return;
        }
        missed = missed ? missed : 1;
        observe_unref(o);   /* we are the drainer again: the drain's reference holds */
    }
}

static void drain_task(rill_task *t, int status)
{
    observe *o = rill__container_of(t, observe, task);
    if (status != RILL_TASK_RUN) {
        int expected = RUNNING;
        atomic_compare_exchange_strong(&o->stop, &expected, SCHED_DEAD);
    }
    drain(o);
}

/* Called by whoever now holds wip: hands the drain to the worker, or runs it
 * here when the scheduler refuses (shut down), to end with ECANCELED. */
static void start_drain(observe *o)
{
    if (rill_schedule(o->worker, &o->task) != 0) {
        int expected = RUNNING;
        atomic_compare_exchange_strong(&o->stop, &expected, SCHED_DEAD);
        drain(o);
    }
}

static void signal_drain(observe *o)
{
    if (rill__wip_enter(&o->wip))
        start_drain(o);
}

/* ---------------------------------------------------------------- upstream side */

static observe *of_in(rill_subscriber *s)
{
    return rill__container_of(s, observe, in);
}

static void in_on_subscribe(rill_subscriber *self, rill_subscription *s)
{
    observe *o = of_in(self);
    if (o->up.sub) {
        rill__cancel(s);   /* rule 2.5: keep the first subscription */
        return;
    }
    o->up.sub = s;
    rill_deliver_subscribe(o->down, &o->out);
    atomic_store_explicit(&o->up_requested, o->prefetch, memory_order_release);
    observe_ref(o);   /* a synchronous upstream may release us inside the request */
    rill__upstream_request(&o->up, o->prefetch);
    start_drain(o);   /* ends the subscribe phase, which held wip */
    observe_unref(o);
}

static void producer_fail(observe *o, int code, const char *message)
{
    o->producer_done = 1;
    if (!o->error)
        o->error = rill_error_new(code, message);
    if (!o->error)
        o->error = rill_error_new(ENOMEM, NULL);
    rill__upstream_cancel(&o->up);
    atomic_store_explicit(&o->up_done, 1, memory_order_release);
    signal_drain(o);
}

#define PREFETCH_AHEAD 16u   /* slots: two 64-byte lines (rings of 64 slots and more) */

static void in_on_next(rill_subscriber *self, void *item)
{
    observe *o = of_in(self);
    if (o->producer_done) {
        rill__discard(o->ctx, item);
        return;
    }
    uint64_t t = atomic_load_explicit(&o->tail, memory_order_relaxed);
    if (t >= o->allowed &&
        t >= (o->allowed = atomic_load_explicit(&o->up_requested, memory_order_acquire))) {
        rill__discard(o->ctx, item);
        producer_fail(o, EOVERFLOW, "observe_on: upstream delivered more than requested");
        return;
    }
    /* Take the ring line two ahead back from the consumer's cache now (see
     * rill__prefetch_write), so the stores that reach it need not wait. */
    if ((t & 7) == 0 && o->mask >= 4 * PREFETCH_AHEAD - 1)
        rill__prefetch_write(&o->ring[(t + PREFETCH_AHEAD) & o->mask]);
    o->ring[t & o->mask] = item;
    /* release: the slot's contents before the new tail */
    atomic_store_explicit(&o->tail, t + 1, memory_order_release);
    if (o->light) {
        /* A running drainer will see the item (see stranded()): skip the
         * locked increment, which would stall on the store buffer per item.
         * The signal fence keeps the compiler from hoisting the load. */
        atomic_signal_fence(memory_order_seq_cst);
        if (atomic_load_explicit(&o->wip, memory_order_relaxed) != 0)
            return;
    }
    signal_drain(o);
}

static void in_on_error(rill_subscriber *self, const rill_error *e)
{
    observe *o = of_in(self);
    if (o->producer_done)
        return;
    o->producer_done = 1;
    o->error = rill_error_ref((rill_error *)e);
    atomic_store_explicit(&o->up_done, 1, memory_order_release);
    signal_drain(o);
}

static void in_on_complete(rill_subscriber *self)
{
    observe *o = of_in(self);
    if (o->producer_done)
        return;
    o->producer_done = 1;
    atomic_store_explicit(&o->up_done, 1, memory_order_release);
    signal_drain(o);
}

static void in_on_release(rill_subscriber *self)
{
    observe *o = of_in(self);
    rill__upstream_gone(&o->up);
    observe_unref(o);
}

static rill_context *in_context(rill_subscriber *self)
{
    return of_in(self)->ctx;
}

static const struct rill_subscriber_ops observe_in_ops = {
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
    observe *o = rill__container_of(s, observe, out);
    if (n == 0) {
        int expected = RUNNING;
        atomic_compare_exchange_strong(&o->stop, &expected, BAD_REQUEST);
    } else {
        rill__demand_add(&o->requested, n);
    }
    signal_drain(o);
}

static void out_cancel(rill_subscription *s)
{
    observe *o = rill__container_of(s, observe, out);
    int expected = RUNNING;
    if (!atomic_compare_exchange_strong(&o->stop, &expected, CANCELLED))
        return;   /* already stopping */
    observe_ref(o);
    rill__upstream_cancel(&o->up);
    signal_drain(o);
    observe_unref(o);
}

static const struct rill_subscription_ops observe_out_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = out_request,
    .cancel = out_cancel,
};

/* ---------------------------------------------------------------- publisher */

static void observe_subscribe(rill_publisher *self, rill_subscriber *s)
{
    observe_publisher *op = (observe_publisher *)self;
    observe *o = observe_alloc(ring_size(op->prefetch));
    rill_worker *w = o ? rill_worker_new(op->sched) : NULL;
    if (!w) {
        int code = errno == ECANCELED ? ECANCELED : ENOMEM;
        rill__free(o ? o->block : NULL);
        rill_reject(s, code, NULL);
        return;
    }
    o->in.ops = &observe_in_ops;
    o->out.ops = &observe_out_ops;
    o->task.run = drain_task;
    o->down = s;
    o->worker = w;
    o->ctx = rill_context_ref(rill_subscriber_context(s));
    o->owner = rill_publisher_ref(self);
    o->sched = rill_scheduler_ref(op->sched);
    o->prefetch = op->prefetch;
    o->limit = op->prefetch - op->prefetch / 4;
    o->batch = o->limit / 4 < GATHER_MAX ? o->limit / 4 : GATHER_MAX;
    o->item_ns = 4;
    if (o->batch == 0)
        o->batch = 1;
    o->delay_error = op->delay_error;
    o->light = rill__asym_light_ok();
    atomic_init(&o->refs, 2);   /* upstream's, and the drain's */
    atomic_init(&o->wip, 1);    /* held by the subscribe phase */
    rill_subscribe(op->op.up, &o->in);
}

static void observe_destroy(rill_publisher *self)
{
    rill_scheduler_unref(((observe_publisher *)self)->sched);
    rill__operator_destroy(self);
}

static const struct rill_publisher_ops observe_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = observe_subscribe,
    .destroy = observe_destroy,
};

rill_publisher *rill_observe_on_ex(rill_publisher *up, rill_scheduler *s,
                                   const rill_observe_on_options *o)
{
    if (!s || !o || o->version < 1 || o->prefetch == 0)
        return rill__operator_fail(up, NULL, NULL, EINVAL);
    observe_publisher *op = rill__operator_new(sizeof *op, &observe_ops, up, NULL, NULL);
    if (!op)
        return NULL;
    op->sched = rill_scheduler_ref(s);
    op->prefetch = o->prefetch;
    op->delay_error = o->delay_error;
    return &op->op.base;
}

rill_publisher *rill_observe_on(rill_publisher *up, rill_scheduler *s, uint32_t prefetch)
{
    rill_observe_on_options o = {
        .version = RILL_OBSERVE_ON_OPTIONS_VERSION,
        .prefetch = prefetch,
        .delay_error = 1,
    };
    return rill_observe_on_ex(up, s, &o);
}
