/* tests/check_observe_on.c — rill_observe_on and rill_subscribe_on: handing
 * a stream from one thread to another.
 *
 * The subscriber here is a "probe" (like check_threads.c's): callbacks that
 * count what arrives and every breach they see — two signals at once, a
 * signal after release or after a terminal one, items out of order or beyond
 * demand, signals on the wrong thread, upstream too far ahead — in atomics
 * that the test thread reads once the probe has been released.
 *
 * Lifetime rule (include/rill/core.h, "Subscriptions"): rill_request and
 * rill_cancel made from threads other than the one receiving signals must
 * have returned before on_release returns. Those calls go through a guard
 * (probe_request, probe_cancel): the caller announces itself in `busy`, then
 * checks `stopping`; on_release sets `stopping`, then waits until no caller
 * on another thread is inside. (The same Dekker handshake as lib/upstream.c,
 * so all of it is sequentially consistent.)
 *
 * Settling: after on_release the library still frees its stages on pool
 * threads, discards items left in flight, and may drop the last reference
 * to a scheduler there (the threads then exit on their own). A test waits
 * for the discard hook's ctx_free (no discard follows it) and for the
 * allocation count to come back, with a generous bound, before asserting.
 *
 * No timing assertions: every wait is a spin bounded by the test timeout.
 */
#include "recorder.h"
#include "suites.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static int quick(void)
{
    const char *q = getenv("RILL_TEST_QUICK");
    return q && *q && *q != '0';
}

static uint64_t big_n(void)
{
    return quick() ? 20000 : 1000000;
}

static uint32_t xorshift(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *state = x;
}

/* A busy wait: makes a consumer slow without giving up its thread. */
static void spin(uint32_t n)
{
    for (volatile uint32_t i = 0; i < n; i++)
        ;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Loads for assertions (Check prints the expression: keep it short). */
static uint64_t u64(_Atomic uint64_t *a)
{
    return atomic_load(a);
}

static int i32(atomic_int *a)
{
    return atomic_load(a);
}

static void wait_flag(atomic_int *flag)
{
    while (!atomic_load(flag))
        sched_yield();
}

/* Only a bound for a broken library: a working one frees within
 * microseconds of the release. */
#define SETTLE_NS (20ull * 1000000000u)

/* Waits until everything the library allocated since `base` is freed. */
static void settle(long base)
{
    uint64_t deadline = now_ns() + SETTLE_NS;
    while (live_allocations() != base && now_ns() < deadline)
        sched_yield();
    ck_assert_int_eq(live_allocations(), base);
}

/* ------------------------------------------------------------------------
 * A counting source: rill_generate_ex over a struct the test owns. It
 * produces 0, 1, ..., n-1, then completes (or fails with fail_code), and
 * counts what it produced and where it ran.
 */

typedef struct source {
    uint64_t n;                  /* items to produce */
    int fail_code;               /* after the n items: 0 completes, else fails */
    int use_last;                /* flag the last item RILL_GENERATE_LAST */
    int check_thread;            /* count calls made on a thread other than `thread` */
    pthread_t thread;
    _Atomic uint64_t pulled;     /* items produced so far */
    atomic_int wrong_thread;
    atomic_int inits;            /* per-subscription init calls */
    atomic_int freed;            /* ctx_free ran: the publisher and its subscriptions are gone */
} source;

static void source_init_struct(source *src, uint64_t n)
{
    memset(src, 0, sizeof *src);
    src->n = n;
}

static int source_init(void *ctx, void **state)
{
    source *src = ctx;
    atomic_fetch_add(&src->inits, 1);
    *state = src;
    return 0;
}

static int source_next(void *state, void **item)
{
    source *src = state;
    if (src->check_thread && !pthread_equal(pthread_self(), src->thread))
        atomic_fetch_add(&src->wrong_thread, 1);
    /* The library never calls this concurrently for one subscription, so a
     * plain read-then-write of the counter is enough (atomics for the test
     * thread's sake). */
    uint64_t i = atomic_load(&src->pulled);
    if (i >= src->n)
        return src->fail_code ? -src->fail_code : RILL_GENERATE_END;
    *item = (void *)(intptr_t)i;
    atomic_store(&src->pulled, i + 1);
    return src->use_last && i + 1 == src->n ? RILL_GENERATE_LAST : RILL_GENERATE_NEXT;
}

static void source_ctx_free(void *ctx)
{
    atomic_store(&((source *)ctx)->freed, 1);
}

static rill_publisher *source_publisher(source *src)
{
    rill_publisher *p = rill_generate_ex(source_init, source_next, NULL, src, source_ctx_free);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* ------------------------------------------------------------------------
 * A discard hook that counts (thread-safe: stages discard from any thread).
 */

typedef struct discards {
    _Atomic uint64_t count;
    atomic_int *per_item;        /* optional tallies, indexed by the item's value */
    size_t nitems;
    atomic_int out_of_range;
    atomic_int freed;            /* ctx_free ran: no discard follows */
} discards;

static void discard_hook(void *ctx, void *item)
{
    discards *d = ctx;
    atomic_fetch_add(&d->count, 1);
    if (d->per_item) {
        intptr_t i = (intptr_t)item;
        if (i >= 0 && (size_t)i < d->nitems)
            atomic_fetch_add(&d->per_item[i], 1);
        else
            atomic_fetch_add(&d->out_of_range, 1);
    }
}

static void discards_freed(void *ctx)
{
    atomic_store(&((discards *)ctx)->freed, 1);
}

/* Puts d's hook below up (consumes up). */
static rill_publisher *with_discards(rill_publisher *up, discards *d)
{
    rill_publisher *p = rill_on_discard_ex(up, discard_hook, d, discards_freed);
    ck_assert_ptr_nonnull(p);
    return p;
}

/* ------------------------------------------------------------------------
 * The probe.
 */

typedef struct probe {
    /* configuration, set before subscribing */
    uint64_t initial;            /* requested in on_subscribe; 0: none */
    uint64_t batch;              /* requested in on_next whenever all requested items came */
    int64_t cancel_at;           /* cancel in the on_next that brings this many items; <0 never */
    int64_t zero_at;             /* request(0) in the on_next that brings this many; <0 never */
    int cancel_in_subscribe;     /* cancel inside on_subscribe */
    int64_t first;               /* the value of the first item */
    uint32_t slow;               /* spin this long in each on_next */
    const _Atomic uint64_t *pulled;  /* when set: upstream may be at most prefetch ahead */
    uint32_t prefetch;
    uint64_t rule_n;             /* when set: pulled follows the 75% rule exactly (source of rule_n items) */
    int check_deliverer;         /* when set: every signal after on_subscribe runs on `deliverer` */
    pthread_t deliverer;
    uint32_t random_batch;       /* race: request 1..random_batch in on_next ... */
    uint64_t low_water;          /* ... when fewer than this many are outstanding */
    uint32_t rng;                /* race: only touched inside signals */

    /* state */
    pthread_t subscriber;
    rill_subscription *sub;
    int64_t next_expected;       /* only touched inside signals */
    int own_cancel;              /* only touched inside signals */
    _Atomic uint64_t received, requested, received_at_terminal;
    atomic_int inside, stopping, released;
    atomic_uint busy;            /* guarded calls in progress */

    /* findings */
    atomic_int overlaps, after_release, after_terminal, out_of_order, over_demand;
    atomic_int too_far_ahead, rule_mismatch, on_subscriber, wrong_thread;
    atomic_int terminal_after_own_cancel;
    atomic_int completes, errors, releases, error_code;
} probe;

/* Guarded calls in progress on this thread (a release running inside one of
 * them must not wait for it). */
static _Thread_local unsigned my_guarded;

static probe *probe_new(void)
{
    probe *p = calloc(1, sizeof *p);
    ck_assert_ptr_nonnull(p);
    p->cancel_at = -1;
    p->zero_at = -1;
    p->subscriber = pthread_self();
    return p;
}

/* Saturating, like demand. */
static void add_requested(probe *p, uint64_t n)
{
    uint64_t r = atomic_load(&p->requested), s;
    do {
        s = n > UINT64_MAX - r ? UINT64_MAX : r + n;
    } while (!atomic_compare_exchange_weak(&p->requested, &r, s));
}

static int guard_enter(probe *p)
{
    atomic_fetch_add(&p->busy, 1);
    if (atomic_load(&p->stopping)) {
        atomic_fetch_sub(&p->busy, 1);
        return 0;
    }
    my_guarded++;
    return 1;
}

static void guard_leave(probe *p)
{
    my_guarded--;
    atomic_fetch_sub(&p->busy, 1);
}

/* rill_request from outside the signals; returns 0 if the probe was already
 * being released (then nothing was called). */
static int probe_request(probe *p, uint64_t n)
{
    if (!guard_enter(p))
        return 0;
    add_requested(p, n);
    rill_request(p->sub, n);
    guard_leave(p);
    return 1;
}

static int probe_cancel(probe *p)
{
    if (!guard_enter(p))
        return 0;
    rill_cancel(p->sub);
    guard_leave(p);
    return 1;
}

static void enter(probe *p, int check_thread)
{
    if (atomic_fetch_add(&p->inside, 1) != 0)
        atomic_fetch_add(&p->overlaps, 1);
    if (atomic_load(&p->released))
        atomic_fetch_add(&p->after_release, 1);
    if (!check_thread)
        return;
    if (pthread_equal(pthread_self(), p->subscriber))
        atomic_fetch_add(&p->on_subscriber, 1);
    if (p->check_deliverer && !pthread_equal(pthread_self(), p->deliverer))
        atomic_fetch_add(&p->wrong_thread, 1);
}

static void leave(probe *p)
{
    atomic_fetch_sub(&p->inside, 1);
}

static void probe_on_subscribe(void *user, rill_subscription *s)
{
    probe *p = user;
    enter(p, 0);
    p->sub = s;
    p->next_expected = p->first;
    if (p->cancel_in_subscribe) {
        p->own_cancel = 1;
        rill_cancel(s);
    } else if (p->initial) {
        add_requested(p, p->initial);
        rill_request(s, p->initial);
    }
    leave(p);
}

/* Upstream's progress at the k-th item: never more than prefetch ahead of
 * the k-1 items the consumer has taken; with a synchronous source right
 * above observe_on, exactly what the 75% rule has requested so far. */
static void check_upstream(probe *p, uint64_t k)
{
    uint64_t pulled = atomic_load(p->pulled);
    if (pulled > p->prefetch + (k - 1))
        atomic_fetch_add(&p->too_far_ahead, 1);
    if (p->rule_n) {
        uint64_t limit = p->prefetch - p->prefetch / 4;
        uint64_t want = p->prefetch + limit * ((k - 1) / limit);
        if (pulled != (want < p->rule_n ? want : p->rule_n))
            atomic_fetch_add(&p->rule_mismatch, 1);
    }
}

static void request_inside(probe *p, uint64_t n)
{
    add_requested(p, n);
    rill_request(p->sub, n);
}

/* What the probe asks for after its k-th item. */
static void act_after_item(probe *p, uint64_t k)
{
    if (p->cancel_at >= 0 && (uint64_t)p->cancel_at == k) {
        p->own_cancel = 1;
        rill_cancel(p->sub);
        return;
    }
    if (p->zero_at >= 0 && (uint64_t)p->zero_at == k) {
        rill_request(p->sub, 0);
        return;
    }
    uint64_t r = atomic_load(&p->requested);
    if (p->batch && r == k)
        request_inside(p, p->batch);
    if (p->random_batch && r - k < p->low_water)
        request_inside(p, 1 + xorshift(&p->rng) % p->random_batch);
}

static void probe_on_next(void *user, void *item)
{
    probe *p = user;
    enter(p, 1);
    if (atomic_load(&p->completes) + atomic_load(&p->errors) != 0)
        atomic_fetch_add(&p->after_terminal, 1);
    uint64_t k = atomic_fetch_add(&p->received, 1) + 1;
    if ((int64_t)(intptr_t)item != p->next_expected)
        atomic_fetch_add(&p->out_of_order, 1);
    p->next_expected++;
    if (k > atomic_load(&p->requested))
        atomic_fetch_add(&p->over_demand, 1);
    if (p->pulled)
        check_upstream(p, k);
    if (p->slow) {
        spin(p->slow);
        if (p->pulled)
            check_upstream(p, k);   /* a producer on another thread had time to race ahead */
    }
    act_after_item(p, k);
    leave(p);
}

static void terminal(probe *p)
{
    if (atomic_load(&p->completes) + atomic_load(&p->errors) != 0)
        atomic_fetch_add(&p->after_terminal, 1);
    if (p->own_cancel)
        atomic_fetch_add(&p->terminal_after_own_cancel, 1);
    atomic_store(&p->received_at_terminal, atomic_load(&p->received));
}

static void probe_on_error(void *user, const rill_error *e)
{
    probe *p = user;
    enter(p, 1);
    terminal(p);
    atomic_store(&p->error_code, rill_error_code(e));
    atomic_fetch_add(&p->errors, 1);
    leave(p);
}

static void probe_on_complete(void *user)
{
    probe *p = user;
    enter(p, 1);
    terminal(p);
    atomic_fetch_add(&p->completes, 1);
    leave(p);
}

static void probe_on_release(void *user)
{
    probe *p = user;
    enter(p, 1);
    atomic_fetch_add(&p->releases, 1);
    atomic_store(&p->stopping, 1);
    /* Calls from other threads must have returned before we do. */
    while (atomic_load(&p->busy) > my_guarded)
        sched_yield();
    leave(p);
    atomic_store(&p->released, 1);   /* last: the test may free p after this */
}

static const rill_callbacks probe_callbacks = {
    .on_subscribe = probe_on_subscribe,
    .on_next = probe_on_next,
    .on_error = probe_on_error,
    .on_complete = probe_on_complete,
    .on_release = probe_on_release,
};

static void probe_subscribe(probe *p, rill_publisher *pub)
{
    rill_subscriber *s = rill_subscriber_new(&probe_callbacks, p);
    ck_assert_ptr_nonnull(s);
    rill_subscribe(pub, s);
    ck_assert_ptr_nonnull(p->sub);
}

static void wait_released(probe *p)
{
    wait_flag(&p->released);
}

/* The protocol held: serial signals, nothing after release or after the
 * terminal signal, order kept, demand respected, upstream within prefetch,
 * one release. */
static void assert_protocol(probe *p)
{
    ck_assert_int_eq(i32(&p->overlaps), 0);
    ck_assert_int_eq(i32(&p->after_release), 0);
    ck_assert_int_eq(i32(&p->after_terminal), 0);
    ck_assert_int_eq(i32(&p->out_of_order), 0);
    ck_assert_int_eq(i32(&p->over_demand), 0);
    ck_assert_int_eq(i32(&p->too_far_ahead), 0);
    ck_assert_int_eq(i32(&p->rule_mismatch), 0);
    ck_assert_int_eq(i32(&p->terminal_after_own_cancel), 0);
    ck_assert_int_eq(i32(&p->releases), 1);
    ck_assert_int_le(i32(&p->completes) + i32(&p->errors), 1);
}

/* ... and every signal after on_subscribe came on a pool thread. */
static void assert_handed_off(probe *p)
{
    assert_protocol(p);
    ck_assert_int_eq(i32(&p->on_subscriber), 0);
    ck_assert_int_eq(i32(&p->wrong_thread), 0);
}

static void assert_completed(probe *p, uint64_t n)
{
    ck_assert_uint_eq(u64(&p->received), n);
    ck_assert_int_eq(p->next_expected, p->first + (int64_t)n);
    ck_assert_int_eq(i32(&p->completes), 1);
    ck_assert_int_eq(i32(&p->errors), 0);
    ck_assert_uint_eq(u64(&p->received_at_terminal), n);
}

static void assert_failed(probe *p, int code)
{
    ck_assert_int_eq(i32(&p->completes), 0);
    ck_assert_int_eq(i32(&p->errors), 1);
    ck_assert_int_eq(i32(&p->error_code), code);
}

static void assert_no_terminal(probe *p)
{
    ck_assert_int_eq(i32(&p->completes), 0);
    ck_assert_int_eq(i32(&p->errors), 0);
}

/* ------------------------------------------------------------------------
 * Scheduler helpers.
 */

typedef struct marker {
    rill_task task;
    pthread_t thread;
    atomic_int ran;
} marker;

static void marker_run(rill_task *t, int status)
{
    marker *m = (marker *)((char *)t - offsetof(marker, task));
    m->thread = pthread_self();
    atomic_store(&m->ran, 1);   /* last touch of m */
}

/* Runs a task on s and waits for it; returns the thread it ran on. On a
 * single thread this is also a barrier: every task queued before it (a
 * drain, say) has run to completion. */
static pthread_t round_trip(rill_scheduler *s)
{
    marker m = { .task = { .run = marker_run } };
    rill_worker *w = rill_worker_new(s);
    ck_assert_ptr_nonnull(w);
    ck_assert_int_eq(rill_schedule(w, &m.task), 0);
    wait_flag(&m.ran);
    rill_worker_free(w);
    return m.thread;
}

static rill_scheduler *single_new(void)
{
    rill_scheduler *s = rill_single_thread_new();
    ck_assert_ptr_nonnull(s);
    return s;
}

static rill_scheduler *pool_new(void)
{
    rill_scheduler *s = rill_thread_pool_new(2);
    ck_assert_ptr_nonnull(s);
    return s;
}

/* A scheduler that can be told to refuse work, as one does after shutdown:
 * it forwards to a single thread until `closed` is set, then its schedule
 * returns ECANCELED. Its memory is the test's (freed once destroyed). */
typedef struct gate {
    rill_scheduler base;
    rill_scheduler *inner;       /* our reference, dropped at shutdown */
    atomic_int closed, refused, destroyed;
} gate;

typedef struct gate_worker {
    rill_worker base;
    rill_worker *inner;
} gate_worker;

static rill_worker *gate_worker_new(rill_scheduler *self)
{
    gate *g = (gate *)self;
    gate_worker *w = calloc(1, sizeof *w);
    if (!w) {
        errno = ENOMEM;
        return NULL;
    }
    w->inner = rill_worker_new(g->inner);
    if (!w->inner) {
        free(w);
        return NULL;
    }
    return &w->base;
}

static void gate_worker_free(rill_scheduler *self, rill_worker *w)
{
    rill_worker_free(((gate_worker *)w)->inner);
    free(w);
}

static int gate_schedule(rill_scheduler *self, rill_worker *w, rill_task *t, uint64_t due_ns)
{
    gate *g = (gate *)self;
    if (atomic_load(&g->closed)) {
        atomic_fetch_add(&g->refused, 1);
        return ECANCELED;
    }
    rill_worker *inner = ((gate_worker *)w)->inner;
    if (!due_ns)
        return rill_schedule(inner, t);
    uint64_t now = now_ns();
    return rill_schedule_after(inner, t, due_ns > now ? due_ns - now : 1);
}

static int gate_cancel(rill_scheduler *self, rill_worker *w, rill_task *t)
{
    return rill_task_cancel(((gate_worker *)w)->inner, t);
}

static uint64_t gate_now(rill_scheduler *self)
{
    return now_ns();
}

static void gate_shutdown(rill_scheduler *self)
{
    gate *g = (gate *)self;
    atomic_store(&g->closed, 1);
    rill_scheduler_unref(g->inner);   /* runs what is queued, joins */
}

static void gate_destroy(rill_scheduler *self)
{
    atomic_store(&((gate *)self)->destroyed, 1);
}

static const struct rill_scheduler_ops gate_ops = {
    .version = RILL_SCHEDULER_OPS_VERSION,
    .worker_new = gate_worker_new,
    .worker_free = gate_worker_free,
    .schedule = gate_schedule,
    .cancel = gate_cancel,
    .now = gate_now,
    .shutdown = gate_shutdown,
    .destroy = gate_destroy,
};

static gate *gate_new(void)
{
    gate *g = calloc(1, sizeof *g);
    ck_assert_ptr_nonnull(g);
    g->inner = single_new();
    rill_scheduler_init(&g->base, &gate_ops);
    return g;
}

/* Drops the test's reference and frees g once the library is done with it. */
static void gate_free(gate *g)
{
    rill_scheduler_unref(&g->base);
    wait_flag(&g->destroyed);
    free(g);
}

/* ------------------------------------------------------------------------
 * Hand-off: every item, in order, on the other thread, at every prefetch
 * and demand pattern.
 */

static const uint32_t handoff_prefetch[] = { 1, 2, 16, 128, 1024 };
static const uint64_t handoff_batch[] = { RILL_UNBOUNDED, 1, 7, 64 };

typedef struct handoff {
    uint32_t prefetch;
    uint64_t batch;              /* RILL_UNBOUNDED: one unbounded request */
    int array;                   /* from_array instead of range */
    int subscribe_on;            /* upstream subscribed on another single thread */
    int pool;                    /* observe_on a pool of two, else a single thread */
    uint64_t n;
} handoff;

/* Loop index -> case: each (prefetch, demand) pair runs twice (single
 * thread and pool), and the source and subscribe_on vary across pairs. */
static handoff handoff_case(int i)
{
    int pi = i / 8, bi = (i / 2) % 4, v = (pi + bi) % 4;
    handoff h = {
        .prefetch = handoff_prefetch[pi],
        .batch = handoff_batch[bi],
        .array = v & 1,
        .subscribe_on = (v >> 1) & 1,
        .pool = i % 2,
    };
    /* Small prefetches and batches hop threads every few items, and with
     * subscribe_on every upstream request hops too: fewer items there. */
    int small = h.prefetch < 16 || h.batch < 7;
    if (h.subscribe_on)
        h.n = big_n() / (small ? 100 : h.prefetch < 128 ? 10 : 1);
    else
        h.n = big_n() / (small ? 10 : 1);
    return h;
}

#define ARRAY_FIRST 1000

static rill_publisher *handoff_source(const handoff *h)
{
    if (!h->array)
        return rill_range(0, h->n);
    void **items = malloc((h->n ? h->n : 1) * sizeof *items);
    ck_assert_ptr_nonnull(items);
    for (uint64_t i = 0; i < h->n; i++)
        items[i] = (void *)(intptr_t)(ARRAY_FIRST + i);
    rill_publisher *p = rill_from_array(items, h->n);
    free(items);
    return p;
}

START_TEST(test_handoff)
{
    long base = live_allocations();
    handoff h = handoff_case(_i);
    rill_scheduler *a = single_new();
    rill_scheduler *b = h.pool ? pool_new() : single_new();
    rill_publisher *pub = handoff_source(&h);
    if (h.subscribe_on)
        pub = rill_subscribe_on(pub, a);
    pub = rill_observe_on(pub, b, h.prefetch);
    ck_assert_ptr_nonnull(pub);

    probe *p = probe_new();
    p->first = h.array ? ARRAY_FIRST : 0;
    p->initial = h.batch;
    p->batch = h.batch == RILL_UNBOUNDED ? 0 : h.batch;
    if (!h.pool) {
        p->check_deliverer = 1;
        p->deliverer = round_trip(b);
    }
    probe_subscribe(p, pub);
    wait_released(p);
    assert_handed_off(p);
    assert_completed(p, h.n);

    rill_publisher_unref(pub);
    rill_scheduler_unref(a);
    rill_scheduler_unref(b);
    settle(base);
    free(p);
}
END_TEST

/* Upstream is never more than prefetch items ahead of a slow consumer; with
 * the source right above observe_on, it is exactly where the 75% rule puts
 * it. (A synchronous source serves the request observe_on makes in its
 * on_subscribe once that returns, still inside rill_subscribe; after that
 * it emits inside observe_on's replenishing requests, on b's thread. The
 * consumer asks only once rill_subscribe has returned, so every on_next
 * sees the count settled.) */
static const uint32_t bound_prefetch[] = { 1, 2, 3, 5, 16, 64 };

START_TEST(test_prefetch_bound)
{
    long base = live_allocations();
    uint32_t prefetch = bound_prefetch[_i / 2];
    int subscribe_on = _i % 2;
    uint64_t n = quick() ? 1000 : 10000;
    rill_scheduler *a = single_new();
    rill_scheduler *b = single_new();
    source src;
    source_init_struct(&src, n);
    rill_publisher *pub = source_publisher(&src);
    if (subscribe_on)
        pub = rill_subscribe_on(pub, a);
    pub = rill_observe_on(pub, b, prefetch);
    ck_assert_ptr_nonnull(pub);

    probe *p = probe_new();
    p->slow = 2000;
    p->pulled = &src.pulled;
    p->prefetch = prefetch;
    p->rule_n = subscribe_on ? 0 : n;
    probe_subscribe(p, pub);
    ck_assert(probe_request(p, RILL_UNBOUNDED));
    wait_released(p);
    assert_handed_off(p);
    assert_completed(p, n);
    ck_assert_uint_eq(u64(&src.pulled), n);

    rill_publisher_unref(pub);
    wait_flag(&src.freed);
    rill_scheduler_unref(a);
    rill_scheduler_unref(b);
    settle(base);
    free(p);
}
END_TEST

/* request(3) of 10 gives 3 and no completion; 7 more give the rest. */
START_TEST(test_demand_exact)
{
    long base = live_allocations();
    uint32_t prefetch = _i ? 16 : 4;
    rill_scheduler *b = single_new();
    rill_publisher *pub = rill_observe_on(rill_range(0, 10), b, prefetch);
    ck_assert_ptr_nonnull(pub);

    probe *p = probe_new();
    p->initial = 3;
    probe_subscribe(p, pub);
    while (atomic_load(&p->received) < 3)
        sched_yield();
    /* The range emits on the test thread or on b's, so once b is idle
     * nothing more can come. */
    round_trip(b);
    round_trip(b);
    ck_assert_uint_eq(u64(&p->received), 3);
    ck_assert_int_eq(i32(&p->completes), 0);
    ck_assert_int_eq(i32(&p->releases), 0);

    ck_assert(probe_request(p, 7));
    wait_released(p);
    assert_handed_off(p);
    assert_completed(p, 10);

    rill_publisher_unref(pub);
    rill_scheduler_unref(b);
    settle(base);
    free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * request(0): on_error(EINVAL), and the queued items go to the hook.
 */

/* The source serves observe_on's first request inside rill_subscribe, so
 * once that returns exactly `prefetch` items wait in the queue (minus what
 * the consumer took). From inside on_next the request(0) may overtake the
 * source, which then stops early. */
static void run_request_zero(int64_t take_first, int inside)
{
    long base = live_allocations();
    const uint32_t prefetch = 16;
    rill_scheduler *b = single_new();
    source src;
    discards d = { 0 };
    source_init_struct(&src, 100);
    rill_publisher *pub = rill_observe_on(source_publisher(&src), b, prefetch);
    pub = with_discards(pub, &d);

    probe *p = probe_new();
    p->initial = (uint64_t)take_first;
    if (inside)
        p->zero_at = take_first;
    probe_subscribe(p, pub);
    if (!inside) {
        while (atomic_load(&p->received) < (uint64_t)take_first)
            sched_yield();
        ck_assert(probe_request(p, 0));
    }
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&d.freed);
    assert_handed_off(p);
    assert_failed(p, EINVAL);
    /* Nothing but the first items was asked for; the rest of the queue is
     * discarded, and nothing was lost. */
    ck_assert_uint_eq(u64(&p->received), (uint64_t)take_first);
    if (inside)
        ck_assert_uint_le(u64(&src.pulled), prefetch);
    else
        ck_assert_uint_eq(u64(&src.pulled), prefetch);
    ck_assert_uint_eq(u64(&d.count), u64(&src.pulled) - (uint64_t)take_first);
    wait_flag(&src.freed);
    rill_scheduler_unref(b);
    settle(base);
    free(p);
}

START_TEST(test_request_zero_before_any_item)
{
    run_request_zero(0, 0);
}
END_TEST

START_TEST(test_request_zero_after_some_items)
{
    run_request_zero(5, 0);
}
END_TEST

START_TEST(test_request_zero_inside_on_next)
{
    run_request_zero(3, 1);
}
END_TEST

/* The same through subscribe_on: upstream emits on its own thread, so how
 * much is queued varies, but every item is delivered or discarded. */
START_TEST(test_request_zero_subscribe_on)
{
    long base = live_allocations();
    rill_scheduler *a = single_new();
    rill_scheduler *b = pool_new();
    source src;
    discards d = { 0 };
    source_init_struct(&src, UINT64_MAX);
    rill_publisher *pub = rill_subscribe_on(source_publisher(&src), a);
    pub = with_discards(rill_observe_on(pub, b, 32), &d);

    probe *p = probe_new();
    p->initial = 10;
    p->zero_at = 7;
    probe_subscribe(p, pub);
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&d.freed);
    wait_flag(&src.freed);
    assert_handed_off(p);
    assert_failed(p, EINVAL);
    ck_assert_uint_eq(u64(&p->received), 7);
    ck_assert_uint_le(u64(&src.pulled), 32 + 7);
    ck_assert_uint_eq(u64(&p->received) + u64(&d.count), u64(&src.pulled));
    rill_scheduler_unref(a);
    rill_scheduler_unref(b);
    settle(base);
    free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Upstream errors.
 */

/* The default: the error waits behind the queued items. The consumer asks
 * for one item at a time, so items are still queued when the error comes. */
static void run_delayed_error(uint64_t n, uint32_t prefetch, int subscribe_on)
{
    long base = live_allocations();
    rill_scheduler *a = single_new();
    rill_scheduler *b = single_new();
    source src;
    discards d = { 0 };
    source_init_struct(&src, n);
    src.fail_code = EIO;
    rill_publisher *pub = source_publisher(&src);
    if (subscribe_on)
        pub = rill_subscribe_on(pub, a);
    pub = with_discards(rill_observe_on(pub, b, prefetch), &d);

    probe *p = probe_new();
    p->initial = 1;
    p->batch = 1;
    p->slow = 1000;
    probe_subscribe(p, pub);
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&d.freed);
    wait_flag(&src.freed);
    assert_handed_off(p);
    assert_failed(p, EIO);
    ck_assert_uint_eq(u64(&p->received), n);
    ck_assert_uint_eq(u64(&p->received_at_terminal), n);
    ck_assert_uint_eq(u64(&d.count), 0);
    rill_scheduler_unref(a);
    rill_scheduler_unref(b);
    settle(base);
    free(p);
}

START_TEST(test_error_after_queue)
{
    run_delayed_error(10, 16, 0);
}
END_TEST

START_TEST(test_error_after_queue_refilled)
{
    run_delayed_error(100, 8, 0);
}
END_TEST

START_TEST(test_error_after_queue_subscribe_on)
{
    run_delayed_error(100, 16, 1);
}
END_TEST

/* delay_error = 0: the error cuts ahead; skipped items go to the hook. */
static void run_error_cuts_ahead(int subscribe_on)
{
    long base = live_allocations();
    const uint64_t n = 10;
    rill_scheduler *a = single_new();
    rill_scheduler *b = single_new();
    source src;
    discards d = { 0 };
    source_init_struct(&src, n);
    src.fail_code = EIO;
    rill_publisher *pub = source_publisher(&src);
    if (subscribe_on)
        pub = rill_subscribe_on(pub, a);
    rill_observe_on_options o = {
        .version = RILL_OBSERVE_ON_OPTIONS_VERSION, .prefetch = 16, .delay_error = 0,
    };
    pub = with_discards(rill_observe_on_ex(pub, b, &o), &d);
    ck_assert_ptr_nonnull(pub);

    probe *p = probe_new();
    p->initial = subscribe_on ? 1 : 0;
    p->batch = subscribe_on ? 1 : 0;
    p->slow = subscribe_on ? 20000 : 0;
    probe_subscribe(p, pub);
    if (!subscribe_on)
        probe_request(p, RILL_UNBOUNDED);   /* skipped if the error already ended it */
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&d.freed);
    wait_flag(&src.freed);
    assert_handed_off(p);
    assert_failed(p, EIO);
    ck_assert_uint_eq(u64(&src.pulled), n);
    ck_assert_uint_eq(u64(&p->received) + u64(&d.count), n);
    if (!subscribe_on) {
        /* The items and the error were all queued inside rill_subscribe,
         * before the first request: the error went first. */
        ck_assert_uint_eq(u64(&p->received), 0);
    }
    rill_scheduler_unref(a);
    rill_scheduler_unref(b);
    settle(base);
    free(p);
}

START_TEST(test_error_cuts_ahead)
{
    run_error_cuts_ahead(0);
}
END_TEST

START_TEST(test_error_cuts_ahead_subscribe_on)
{
    run_error_cuts_ahead(1);
}
END_TEST

/* ------------------------------------------------------------------------
 * EOVERFLOW: a publisher (written against rill/stage.h) that ignores demand
 * and floods `count` items inside the first request.
 */

typedef struct flood {
    rill_publisher base;
    uint32_t count;
    _Atomic uint64_t emitted;
    atomic_int destroyed;
} flood;

typedef struct flood_sub {
    rill_subscription base;
    rill_subscriber *down;
    flood *f;
    atomic_int started;
} flood_sub;

/* Ignores n: floods every item on the first request. */
static void flood_request(rill_subscription *s, uint64_t n)
{
    flood_sub *fs = (flood_sub *)s;
    if (atomic_exchange(&fs->started, 1))
        return;
    for (uint32_t i = 0; i < fs->f->count; i++) {
        atomic_fetch_add(&fs->f->emitted, 1);
        rill_deliver_next(fs->down, (void *)(intptr_t)i);
    }
    rill_deliver_complete(fs->down);
}

static void flood_cancel(rill_subscription *s)
{
    /* ignored too: everything was sent inside the request */
}

static const struct rill_subscription_ops flood_sub_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = flood_request,
    .cancel = flood_cancel,
};

/* observe_on requests inside its on_subscribe, so the flood has happened
 * (on this thread) when that returns; then the release. */
static void flood_subscribe(rill_publisher *self, rill_subscriber *s)
{
    flood_sub *fs = calloc(1, sizeof *fs);
    ck_assert_ptr_nonnull(fs);
    fs->base.ops = &flood_sub_ops;
    fs->down = s;
    fs->f = (flood *)self;
    rill_deliver_subscribe(s, &fs->base);
    if (!atomic_exchange(&fs->started, 1))
        rill_deliver_complete(s);
    rill_deliver_release(s);
    free(fs);
}

static void flood_destroy(rill_publisher *self)
{
    atomic_store(&((flood *)self)->destroyed, 1);
}

static const struct rill_publisher_ops flood_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = flood_subscribe,
    .destroy = flood_destroy,
};

static void run_overflow(int delay_error)
{
    long base = live_allocations();
    const uint32_t prefetch = 10, count = prefetch + 5;   /* the ring has 16 slots */
    atomic_int tally[15];
    for (size_t i = 0; i < count; i++)
        atomic_init(&tally[i], 0);
    flood f = { .count = count };
    rill_publisher_init(&f.base, &flood_ops);
    discards d = { .per_item = tally, .nitems = count };
    rill_scheduler *b = single_new();
    rill_observe_on_options o = {
        .version = RILL_OBSERVE_ON_OPTIONS_VERSION, .prefetch = prefetch, .delay_error = delay_error,
    };
    rill_publisher *pub = with_discards(rill_observe_on_ex(&f.base, b, &o), &d);

    probe *p = probe_new();
    p->initial = RILL_UNBOUNDED;
    probe_subscribe(p, pub);
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&d.freed);
    wait_flag(&f.destroyed);
    assert_handed_off(p);
    assert_failed(p, EOVERFLOW);
    ck_assert_uint_eq(u64(&f.emitted), count);
    /* The flood was over before the first delivery: with delay_error the
     * prefetch items that fit come first; without, the error cuts ahead. */
    uint64_t got = atomic_load(&p->received);
    ck_assert_uint_eq(got, delay_error ? prefetch : 0);
    for (uint32_t i = 0; i < count; i++)
        ck_assert_int_eq(i32(&tally[i]), i < got ? 0 : 1);
    ck_assert_int_eq(i32(&d.out_of_range), 0);
    rill_scheduler_unref(b);
    settle(base);
    free(p);
}

START_TEST(test_overflow)
{
    run_overflow(1);
}
END_TEST

START_TEST(test_overflow_error_cuts_ahead)
{
    run_overflow(0);
}
END_TEST

/* ------------------------------------------------------------------------
 * Cancel in the middle of the stream.
 */

typedef struct cancel_case {
    int subscribe_on, pool, inside;
} cancel_case;

static cancel_case cancel_case_of(int i)
{
    cancel_case c = { .subscribe_on = i & 1, .pool = (i >> 1) & 1, .inside = (i >> 2) & 1 };
    return c;
}

/* Cancels once `at` items have arrived: from on_next, or from this thread. */
START_TEST(test_cancel_midstream)
{
    long base = live_allocations();
    cancel_case c = cancel_case_of(_i);
    const int64_t at = 1000;
    rill_scheduler *a = single_new();
    rill_scheduler *b = c.pool ? pool_new() : single_new();
    source src;
    discards d = { 0 };
    source_init_struct(&src, UINT64_MAX);
    rill_publisher *pub = source_publisher(&src);
    if (c.subscribe_on)
        pub = rill_subscribe_on(pub, a);
    pub = with_discards(rill_observe_on(pub, b, 64), &d);

    probe *p = probe_new();
    p->initial = RILL_UNBOUNDED;
    if (c.inside)
        p->cancel_at = at;
    probe_subscribe(p, pub);
    if (!c.inside) {
        while (atomic_load(&p->received) < (uint64_t)at)
            sched_yield();
        ck_assert(probe_cancel(p));
    }
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&d.freed);
    wait_flag(&src.freed);
    assert_handed_off(p);
    assert_no_terminal(p);
    if (c.inside)
        ck_assert_uint_eq(u64(&p->received), (uint64_t)at);
    else
        ck_assert_uint_ge(u64(&p->received), (uint64_t)at);
    ck_assert_uint_eq(u64(&p->received) + u64(&d.count), u64(&src.pulled));
    rill_scheduler_unref(a);
    rill_scheduler_unref(b);
    settle(base);
    free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * subscribe_on.
 */

typedef struct requester {
    pthread_t tid;
    probe *p;
    uint64_t calls;              /* rill_request(1) calls to make */
    atomic_int *ready;
} requester;

static void *request_ones(void *arg)
{
    requester *t = arg;
    atomic_fetch_add(t->ready, 1);
    while (atomic_load(t->ready) < 2)
        sched_yield();
    for (uint64_t i = 0; i < t->calls; i++)
        probe_request(t->p, 1);
    return NULL;
}

/* The source runs only on the scheduler's thread, whoever requests: the
 * subscriber from on_next (on that thread), or two other threads. */
static void run_subscribe_on_thread(int from_threads)
{
    long base = live_allocations();
    uint64_t n = quick() ? 2000 : 20000;
    rill_scheduler *a = single_new();
    source src;
    source_init_struct(&src, n);
    src.check_thread = 1;
    src.thread = round_trip(a);
    src.use_last = from_threads;
    rill_publisher *pub = rill_subscribe_on(source_publisher(&src), a);
    ck_assert_ptr_nonnull(pub);

    probe *p = probe_new();
    p->check_deliverer = 1;
    p->deliverer = src.thread;
    if (!from_threads) {
        p->initial = 3;
        p->batch = 3;
    }
    probe_subscribe(p, pub);
    if (from_threads) {
        atomic_int ready = 0;
        requester t[2] = {
            { .p = p, .calls = n / 2 + n % 2, .ready = &ready },
            { .p = p, .calls = n / 2, .ready = &ready },
        };
        for (int i = 0; i < 2; i++)
            ck_assert_int_eq(pthread_create(&t[i].tid, NULL, request_ones, &t[i]), 0);
        for (int i = 0; i < 2; i++)
            ck_assert_int_eq(pthread_join(t[i].tid, NULL), 0);
    }
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&src.freed);
    assert_handed_off(p);
    assert_completed(p, n);
    ck_assert_int_eq(i32(&src.wrong_thread), 0);
    ck_assert_int_eq(i32(&src.inits), 1);
    rill_scheduler_unref(a);
    settle(base);
    free(p);
}

START_TEST(test_subscribe_on_requests_from_on_next)
{
    run_subscribe_on_thread(0);
}
END_TEST

START_TEST(test_subscribe_on_requests_from_threads)
{
    run_subscribe_on_thread(1);
}
END_TEST

/* With observe_on below: the source still runs on a's thread only. */
START_TEST(test_subscribe_on_then_observe_on)
{
    long base = live_allocations();
    uint64_t n = quick() ? 5000 : 100000;
    rill_scheduler *a = single_new();
    rill_scheduler *b = single_new();
    source src;
    source_init_struct(&src, n);
    src.check_thread = 1;
    src.thread = round_trip(a);
    rill_publisher *pub = rill_observe_on(rill_subscribe_on(source_publisher(&src), a), b, 32);
    ck_assert_ptr_nonnull(pub);

    probe *p = probe_new();
    p->initial = 7;
    p->batch = 7;
    p->check_deliverer = 1;
    p->deliverer = round_trip(b);
    probe_subscribe(p, pub);
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&src.freed);
    assert_handed_off(p);
    assert_completed(p, n);
    ck_assert_int_eq(i32(&src.wrong_thread), 0);
    rill_scheduler_unref(a);
    rill_scheduler_unref(b);
    settle(base);
    free(p);
}
END_TEST

/* A cancel inside on_subscribe comes before the upstream subscription,
 * which then never happens. */
START_TEST(test_subscribe_on_cancel_in_on_subscribe)
{
    long base = live_allocations();
    rill_scheduler *a = single_new();
    source src;
    source_init_struct(&src, 100);
    rill_publisher *pub = rill_subscribe_on(source_publisher(&src), a);
    ck_assert_ptr_nonnull(pub);

    probe *p = probe_new();
    p->cancel_in_subscribe = 1;
    probe_subscribe(p, pub);
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&src.freed);
    /* The release may come from a's thread or this one: not checked. */
    assert_protocol(p);
    assert_no_terminal(p);
    ck_assert_uint_eq(u64(&p->received), 0);
    ck_assert_int_eq(i32(&src.inits), 0);
    ck_assert_uint_eq(u64(&src.pulled), 0);
    rill_scheduler_unref(a);
    settle(base);
    free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * A scheduler that refuses work: on_error(ECANCELED), everything released.
 */

/* Closed before subscribing: the first drain is refused, inside
 * rill_subscribe. Whatever the source emitted goes to the hook. */
START_TEST(test_refused_observe_on_at_subscribe)
{
    long base = live_allocations();
    gate *g = gate_new();
    source src;
    discards d = { 0 };
    source_init_struct(&src, 100);
    rill_publisher *pub = with_discards(rill_observe_on(source_publisher(&src), &g->base, 16), &d);
    atomic_store(&g->closed, 1);

    probe *p = probe_new();
    p->initial = RILL_UNBOUNDED;
    probe_subscribe(p, pub);
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&d.freed);
    wait_flag(&src.freed);
    assert_protocol(p);
    assert_failed(p, ECANCELED);
    ck_assert_int_ge(i32(&g->refused), 1);
    ck_assert_uint_eq(u64(&p->received), 0);
    ck_assert_uint_le(u64(&src.pulled), 16);
    ck_assert_uint_eq(u64(&d.count), u64(&src.pulled));
    gate_free(g);
    settle(base);
    free(p);
}
END_TEST

/* Closed in the middle: the next drain is refused. */
START_TEST(test_refused_observe_on_midstream)
{
    long base = live_allocations();
    gate *g = gate_new();
    source src;
    discards d = { 0 };
    source_init_struct(&src, 100);
    rill_publisher *pub = with_discards(rill_observe_on(source_publisher(&src), &g->base, 16), &d);

    probe *p = probe_new();
    p->initial = 5;
    probe_subscribe(p, pub);
    while (atomic_load(&p->received) < 5)
        sched_yield();
    round_trip(g->inner);   /* the drain has run out of demand and left */
    atomic_store(&g->closed, 1);
    ck_assert(probe_request(p, 3));
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&d.freed);
    wait_flag(&src.freed);
    assert_protocol(p);
    assert_failed(p, ECANCELED);
    ck_assert_int_ge(i32(&g->refused), 1);
    ck_assert_uint_ge(u64(&p->received), 5);
    ck_assert_uint_eq(u64(&p->received) + u64(&d.count), u64(&src.pulled));
    gate_free(g);
    settle(base);
    free(p);
}
END_TEST

START_TEST(test_refused_subscribe_on_at_subscribe)
{
    long base = live_allocations();
    gate *g = gate_new();
    source src;
    source_init_struct(&src, 100);
    rill_publisher *pub = rill_subscribe_on(source_publisher(&src), &g->base);
    ck_assert_ptr_nonnull(pub);
    atomic_store(&g->closed, 1);

    probe *p = probe_new();
    p->initial = RILL_UNBOUNDED;
    probe_subscribe(p, pub);
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&src.freed);
    assert_protocol(p);
    assert_failed(p, ECANCELED);
    ck_assert_uint_eq(u64(&p->received), 0);
    ck_assert_uint_eq(u64(&src.pulled), 0);
    gate_free(g);
    settle(base);
    free(p);
}
END_TEST

START_TEST(test_refused_subscribe_on_midstream)
{
    long base = live_allocations();
    gate *g = gate_new();
    source src;
    source_init_struct(&src, 100);
    rill_publisher *pub = rill_subscribe_on(source_publisher(&src), &g->base);
    ck_assert_ptr_nonnull(pub);

    probe *p = probe_new();
    p->initial = 5;
    probe_subscribe(p, pub);
    while (atomic_load(&p->received) < 5)
        sched_yield();
    round_trip(g->inner);   /* the task has passed the 5 on and left */
    atomic_store(&g->closed, 1);
    ck_assert(probe_request(p, 3));
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&src.freed);
    assert_protocol(p);
    assert_failed(p, ECANCELED);
    ck_assert_int_ge(i32(&g->refused), 1);
    ck_assert_uint_eq(u64(&p->received), 5);
    ck_assert_uint_eq(u64(&src.pulled), 5);
    gate_free(g);
    settle(base);
    free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Bad arguments: NULL and EINVAL, with the upstream consumed.
 */

static void expect_einval(rill_publisher *got, source *src)
{
    ck_assert_ptr_null(got);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(i32(&src->freed), 1);
}

START_TEST(test_bad_arguments)
{
    long base = live_allocations();
    rill_scheduler *b = single_new();
    source src;

    source_init_struct(&src, 1);
    errno = 0;
    expect_einval(rill_observe_on(source_publisher(&src), NULL, 16), &src);
    source_init_struct(&src, 1);
    errno = 0;
    expect_einval(rill_observe_on(source_publisher(&src), b, 0), &src);

    rill_observe_on_options o = { .version = 0, .prefetch = 16, .delay_error = 1 };
    source_init_struct(&src, 1);
    errno = 0;
    expect_einval(rill_observe_on_ex(source_publisher(&src), b, &o), &src);
    o.version = RILL_OBSERVE_ON_OPTIONS_VERSION;
    o.prefetch = 0;
    source_init_struct(&src, 1);
    errno = 0;
    expect_einval(rill_observe_on_ex(source_publisher(&src), b, &o), &src);

    source_init_struct(&src, 1);
    errno = 0;
    expect_einval(rill_subscribe_on(source_publisher(&src), NULL), &src);

    errno = 0;
    ck_assert_ptr_null(rill_observe_on(NULL, b, 16));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(rill_subscribe_on(NULL, b));
    ck_assert_int_eq(errno, EINVAL);

    rill_scheduler_unref(b);
    settle(base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Publishers: reusable, and kept alive by their subscriptions.
 */

typedef struct replay_thread {
    pthread_t tid;
    rill_publisher *pub;
    probe *p;
    atomic_int *ready;
} replay_thread;

static void *subscribe_and_wait(void *arg)
{
    replay_thread *t = arg;
    t->p->subscriber = pthread_self();
    atomic_fetch_add(t->ready, 1);
    while (atomic_load(t->ready) < 2)
        sched_yield();
    rill_subscriber *s = rill_subscriber_new(&probe_callbacks, t->p);
    if (s)
        rill_subscribe(t->pub, s);
    return NULL;
}

/* Two threads subscribe to one publisher at once: each gets the whole
 * stream, independently. */
START_TEST(test_concurrent_subscriptions_replay)
{
    long base = live_allocations();
    uint64_t n = quick() ? 5000 : 100000;
    rill_scheduler *a = single_new();
    rill_scheduler *b = pool_new();
    rill_publisher *pub = rill_observe_on(rill_subscribe_on(rill_range(0, n), a), b, 32);
    ck_assert_ptr_nonnull(pub);

    atomic_int ready = 0;
    replay_thread t[2];
    for (int i = 0; i < 2; i++) {
        t[i] = (replay_thread){ .pub = pub, .p = probe_new(), .ready = &ready };
        t[i].p->initial = 64;
        t[i].p->batch = 64;
        ck_assert_int_eq(pthread_create(&t[i].tid, NULL, subscribe_and_wait, &t[i]), 0);
    }
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(pthread_join(t[i].tid, NULL), 0);
        wait_released(t[i].p);
    }
    for (int i = 0; i < 2; i++) {
        assert_handed_off(t[i].p);
        assert_completed(t[i].p, n);
        free(t[i].p);
    }
    rill_publisher_unref(pub);
    rill_scheduler_unref(a);
    rill_scheduler_unref(b);
    settle(base);
}
END_TEST

/* The publisher and the schedulers are dropped right after subscribing:
 * the subscription keeps what it needs and still completes. */
START_TEST(test_unref_right_after_subscribe)
{
    long base = live_allocations();
    uint64_t n = quick() ? 5000 : 100000;
    int subscribe_on = _i;
    rill_scheduler *a = single_new();
    rill_scheduler *b = pool_new();
    rill_publisher *pub = rill_range(0, n);
    if (subscribe_on)
        pub = rill_subscribe_on(pub, a);
    pub = rill_observe_on(pub, b, 16);
    ck_assert_ptr_nonnull(pub);

    probe *p = probe_new();
    p->initial = 7;
    p->batch = 7;
    probe_subscribe(p, pub);
    rill_publisher_unref(pub);
    rill_scheduler_unref(a);
    rill_scheduler_unref(b);
    wait_released(p);
    assert_handed_off(p);
    assert_completed(p, n);
    settle(base);
    free(p);
}
END_TEST

/* ------------------------------------------------------------------------
 * Races: many short runs of a fresh pipeline
 *   generate(0..n) -> [subscribe_on(a)] -> observe_on(b, prefetch) -> on_discard -> probe
 * with demand from on_next and/or a requester thread, and a cancel from
 * on_next, from a canceller thread, or never.
 */

typedef struct race {
    probe *p;
    source src;
    discards d;
    uint64_t n;
    int requester, canceller;    /* which threads run */
    uint64_t cancel_after;       /* the canceller waits for this many items */
    uint32_t cancel_spin;        /* then spins this long */
    uint32_t rng;                /* the requester's */
    atomic_int ready;
    atomic_int cancel_sent;      /* the canceller's rill_cancel ran */
    pthread_t req_tid, can_tid;
} race;

static void race_start(race *r)
{
    atomic_fetch_add(&r->ready, 1);
    while (atomic_load(&r->ready) < r->requester + r->canceller)
        sched_yield();
}

/* Keeps a few batches outstanding until n items are requested. */
static void *race_requester(void *arg)
{
    race *r = arg;
    probe *p = r->p;
    race_start(r);
    while (!atomic_load(&p->stopping)) {
        uint64_t asked = atomic_load(&p->requested);
        if (asked >= r->n)
            break;
        if (asked - atomic_load(&p->received) > 256) {
            sched_yield();
            continue;
        }
        probe_request(p, 1 + xorshift(&r->rng) % 64);
    }
    return NULL;
}

static void *race_canceller(void *arg)
{
    race *r = arg;
    probe *p = r->p;
    race_start(r);
    while (!atomic_load(&p->stopping) && atomic_load(&p->received) < r->cancel_after)
        sched_yield();
    spin(r->cancel_spin);
    if (probe_cancel(p))
        atomic_store(&r->cancel_sent, 1);
    return NULL;
}

typedef struct race_scheds {
    rill_scheduler *a, *single, *pool;
} race_scheds;

/* Draws one round's pipeline and subscriber. */
static rill_publisher *race_setup(race *r, const race_scheds *s, uint32_t *rng,
                                  rill_scheduler **own_a, rill_scheduler **own_b)
{
    uint32_t bits = xorshift(rng);
    r->n = xorshift(rng) % 5001;
    source_init_struct(&r->src, r->n);
    r->src.use_last = bits & 1;
    rill_publisher *pub = source_publisher(&r->src);
    /* One round in 16 brings its own schedulers, dropped at once. */
    int own = (bits >> 1) % 16 == 0;
    rill_scheduler *a = own ? (*own_a = single_new()) : s->a;
    rill_scheduler *b;
    if ((bits >> 5) & 1)
        b = own ? (*own_b = pool_new()) : s->pool;
    else
        b = own ? (*own_b = single_new()) : s->single;
    if ((bits >> 6) & 1)
        pub = rill_subscribe_on(pub, a);
    pub = with_discards(rill_observe_on(pub, b, 1 + xorshift(rng) % 64), &r->d);

    probe *p = r->p;
    int demand = 1 + (bits >> 7) % 3;   /* 1: on_next, 2: requester, 3: both */
    r->requester = demand >= 2;
    if (demand != 2) {
        p->random_batch = 64;
        p->low_water = 1 + (bits >> 9) % 32;
        p->rng = xorshift(rng) | 1;
        p->initial = 1 + xorshift(rng) % 64;
    }
    int cancel = (bits >> 11) % 4;      /* 0: never, 1: on_next, 2-3: canceller */
    if (cancel == 1 && r->n > 0)
        p->cancel_at = 1 + xorshift(rng) % r->n;
    r->canceller = cancel >= 2;
    r->cancel_after = r->n ? xorshift(rng) % (r->n + 1) : 0;
    r->cancel_spin = xorshift(rng) % 4096;
    r->rng = xorshift(rng) | 1;
    return pub;
}

static void race_check(race *r)
{
    probe *p = r->p;
    assert_handed_off(p);
    ck_assert_int_eq(i32(&p->errors), 0);
    uint64_t got = atomic_load(&p->received);
    uint64_t dropped = atomic_load(&r->d.count);
    uint64_t made = atomic_load(&r->src.pulled);
    ck_assert_int_eq(p->next_expected, (int64_t)got);
    ck_assert_uint_le(made, r->n);
    ck_assert_uint_eq(got + dropped, made);
    if (p->cancel_at >= 0) {
        /* Our own cancel inside on_next: nothing after it. */
        ck_assert_int_eq(i32(&p->completes), 0);
        ck_assert_uint_eq(got, (uint64_t)p->cancel_at);
    } else if (atomic_load(&p->completes)) {
        /* Completion won any race with the canceller: the whole stream. */
        ck_assert_uint_eq(got, r->n);
        ck_assert_uint_eq(dropped, 0);
    } else {
        ck_assert_int_eq(r->canceller, 1);
        ck_assert_int_eq(i32(&r->cancel_sent), 1);
    }
}

static void race_round(const race_scheds *s, uint32_t *rng)
{
    long base = live_allocations();
    rill_scheduler *own_a = NULL, *own_b = NULL;
    race *r = calloc(1, sizeof *r);
    ck_assert_ptr_nonnull(r);
    r->p = probe_new();
    rill_publisher *pub = race_setup(r, s, rng, &own_a, &own_b);
    probe_subscribe(r->p, pub);
    int keep_pub = xorshift(rng) & 1;
    if (!keep_pub)
        rill_publisher_unref(pub);
    rill_scheduler_unref(own_a);
    rill_scheduler_unref(own_b);
    if (r->requester)
        ck_assert_int_eq(pthread_create(&r->req_tid, NULL, race_requester, r), 0);
    if (r->canceller)
        ck_assert_int_eq(pthread_create(&r->can_tid, NULL, race_canceller, r), 0);
    if (r->requester)
        ck_assert_int_eq(pthread_join(r->req_tid, NULL), 0);
    if (r->canceller)
        ck_assert_int_eq(pthread_join(r->can_tid, NULL), 0);
    wait_released(r->p);
    if (keep_pub)
        rill_publisher_unref(pub);
    wait_flag(&r->d.freed);
    wait_flag(&r->src.freed);
    race_check(r);
    settle(base);
    free(r->p);
    free(r);
}

START_TEST(test_races)
{
    long base = live_allocations();
    int rounds = quick() ? 50 : 500;   /* four runs of this loop test */
    uint32_t rng = 0x9e3779b9u + 0x1000193u * (uint32_t)_i;
    race_scheds s = { single_new(), single_new(), pool_new() };
    for (int i = 0; i < rounds; i++)
        race_round(&s, &rng);
    rill_scheduler_unref(s.a);
    rill_scheduler_unref(s.single);
    rill_scheduler_unref(s.pool);
    settle(base);
}
END_TEST

/* ------------------------------------------------------------------------
 * Waits at the hand-off. Three places wait a little before they let go,
 * and each has a window where a signal can arrive just as the wait ends:
 *  - subscribe_on's task polls wip for ~10 µs before giving it back (a
 *    request landing before, during and after that wait, and while the
 *    pool thread spins or parks afterwards);
 *  - observe_on's drainer, finding a few items, waits up to ~1 µs for more
 *    before delivering, and delivers at once if the producer paused; when
 *    the ring runs dry it polls ~10 µs, then gives wip back, re-checking
 *    for an item a light producer published meanwhile;
 *  - the producer checks overflow against a copy of the allowance that it
 *    re-reads only when the copy runs out.
 * The tests below pace requests and items with random gaps around those
 * windows (busy waits from 0 to a few tens of µs) and check that every item
 * arrives, once, in order, with the protocol intact — a lost wake-up would
 * hang the test.
 */

/* Busy-waits about ns nanoseconds (a sleep would be far coarser). */
static void pause_ns(uint64_t ns)
{
    uint64_t until = now_ns() + ns;
    while (now_ns() < until)
        ;
}

/* A random gap for pacing: mostly none, else up to 40 µs, weighted
 * towards the few-µs range where the waits end. */
static uint64_t random_gap(uint32_t *rng)
{
    uint32_t x = xorshift(rng);
    switch (x % 8) {
    case 0:
    case 1:
    case 2:
        return 0;
    case 3:
        return (x >> 8) % 2000;            /* inside a gather */
    case 4:
    case 5:
        return 8000 + (x >> 8) % 4000;     /* around the 10 µs waits */
    case 6:
        return (x >> 8) % 40000;           /* past the pool's spin, into parking */
    default:
        sched_yield();
        return 0;
    }
}

typedef struct pacer_req {
    probe *p;
    uint64_t n;
    uint32_t rng;
    uint32_t max_batch;
    int64_t cancel_after;        /* cancel once this many arrived; <0 never */
    atomic_int cancel_sent;
} pacer_req;

/* Requests n items in random batches with random gaps between them. */
static void *paced_requester(void *arg)
{
    pacer_req *r = arg;
    probe *p = r->p;
    while (!atomic_load(&p->stopping) && atomic_load(&p->requested) < r->n) {
        if (r->cancel_after >= 0 && atomic_load(&p->received) >= (uint64_t)r->cancel_after) {
            if (probe_cancel(p))
                atomic_store(&r->cancel_sent, 1);
            break;
        }
        uint64_t left = r->n - atomic_load(&p->requested);
        uint64_t k = 1 + xorshift(&r->rng) % r->max_batch;
        if (!probe_request(p, k < left ? k : left))
            break;
        pause_ns(random_gap(&r->rng));
    }
    return NULL;
}

/* source -> subscribe_on(a) -> observe_on(b, prefetch) -> probe, demand
 * from another thread in paced batches; one round in four cancels midway. */
static void paced_requests_round(rill_scheduler *a, rill_scheduler *b, uint32_t *rng)
{
    long base = live_allocations();
    static const uint32_t prefetches[] = { 1, 4, 16, 128, 256 };
    uint32_t prefetch = prefetches[xorshift(rng) % 5];
    uint64_t n = 1 + xorshift(rng) % (quick() ? 300 : 3000);
    source src;
    source_init_struct(&src, n);
    discards d = { 0 };
    rill_publisher *pub = rill_subscribe_on(source_publisher(&src), a);
    pub = with_discards(rill_observe_on(pub, b, prefetch), &d);

    probe *p = probe_new();
    p->pulled = &src.pulled;
    p->prefetch = prefetch;
    probe_subscribe(p, pub);
    rill_publisher_unref(pub);
    pacer_req r = {
        .p = p, .n = n, .rng = xorshift(rng) | 1, .max_batch = 1 + xorshift(rng) % 300,
        .cancel_after = xorshift(rng) % 4 == 0 ? (int64_t)(xorshift(rng) % n) : -1,
    };
    pthread_t tid;
    ck_assert_int_eq(pthread_create(&tid, NULL, paced_requester, &r), 0);
    ck_assert_int_eq(pthread_join(tid, NULL), 0);
    wait_released(p);
    wait_flag(&d.freed);
    wait_flag(&src.freed);
    assert_handed_off(p);
    uint64_t got = atomic_load(&p->received);
    ck_assert_uint_eq(got + atomic_load(&d.count), u64(&src.pulled));
    if (atomic_load(&r.cancel_sent)) {
        assert_no_terminal(p);
    } else {
        assert_completed(p, n);
        ck_assert_uint_eq(atomic_load(&d.count), 0);
    }
    settle(base);
    free(p);
}

START_TEST(test_paced_requests)
{
    long base = live_allocations();
    uint32_t rng = 0x2545f491u + 0x9e3779b9u * (uint32_t)_i;
    rill_scheduler *a = single_new();
    rill_scheduler *b = _i % 2 ? pool_new() : single_new();
    int rounds = quick() ? 10 : 60;
    for (int i = 0; i < rounds; i++)
        paced_requests_round(a, b, &rng);
    rill_scheduler_unref(a);
    rill_scheduler_unref(b);
    settle(base);
}
END_TEST

/* A publisher (against rill/stage.h) whose items come from a thread of its
 * own, as demand allows, in bursts with random gaps: the producer pauses
 * while observe_on's drainer gathers, catches up, polls, or gives wip back. */
typedef struct paced {
    rill_publisher base;
    uint64_t n;
    uint32_t seed;
    pthread_t tid;
    atomic_int started, destroyed;
} paced;

typedef struct paced_sub {
    rill_subscription base;
    rill_subscriber *down;
    paced *src;
    _Atomic uint64_t requested;
    atomic_int cancelled, bad_request;
} paced_sub;

static void paced_request(rill_subscription *s, uint64_t n)
{
    paced_sub *ps = (paced_sub *)s;
    if (n == 0)
        atomic_store(&ps->bad_request, 1);
    uint64_t r = atomic_load(&ps->requested), next;
    do {
        next = n > UINT64_MAX - r ? UINT64_MAX : r + n;
    } while (!atomic_compare_exchange_weak(&ps->requested, &r, next));
}

static void paced_cancel(rill_subscription *s)
{
    atomic_store(&((paced_sub *)s)->cancelled, 1);
}

static const struct rill_subscription_ops paced_sub_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = paced_request,
    .cancel = paced_cancel,
};

/* The producer thread: emits 0..n-1 within demand, then completes and
 * releases (observe_on's release waits for its own calls into us). */
static void *paced_main(void *arg)
{
    paced_sub *ps = arg;
    uint32_t rng = ps->src->seed | 1;
    uint64_t i = 0, burst = 0;
    while (i < ps->src->n && !atomic_load(&ps->cancelled) && !atomic_load(&ps->bad_request)) {
        if (i >= atomic_load(&ps->requested)) {
            sched_yield();
            continue;
        }
        rill_deliver_next(ps->down, (void *)(intptr_t)i++);
        if (burst) {
            burst--;
            continue;
        }
        burst = xorshift(&rng) % 64;
        pause_ns(random_gap(&rng));
    }
    if (atomic_load(&ps->bad_request))
        rill_deliver_error_code(ps->down, EINVAL, NULL);
    else if (!atomic_load(&ps->cancelled))
        rill_deliver_complete(ps->down);
    rill_deliver_release(ps->down);
    free(ps);
    return NULL;
}

static void paced_subscribe(rill_publisher *self, rill_subscriber *s)
{
    paced *src = (paced *)self;
    paced_sub *ps = calloc(1, sizeof *ps);
    ck_assert_ptr_nonnull(ps);
    ps->base.ops = &paced_sub_ops;
    ps->down = s;
    ps->src = src;
    rill_deliver_subscribe(s, &ps->base);
    ck_assert_int_eq(atomic_exchange(&src->started, 1), 0);
    ck_assert_int_eq(pthread_create(&src->tid, NULL, paced_main, ps), 0);
}

static void paced_destroy(rill_publisher *self)
{
    atomic_store(&((paced *)self)->destroyed, 1);
}

static const struct rill_publisher_ops paced_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = paced_subscribe,
    .destroy = paced_destroy,
};

START_TEST(test_paced_producer)
{
    long base = live_allocations();
    uint32_t rng = 0x6c078965u + 0x01000193u * (uint32_t)_i;
    static const uint32_t prefetches[] = { 1, 3, 16, 64, 256, 1024 };
    rill_scheduler *b = single_new();
    int rounds = quick() ? 6 : 30;
    long round_base = live_allocations();
    for (int round = 0; round < rounds; round++) {
        paced src = { .n = 1 + xorshift(&rng) % (quick() ? 400 : 4000), .seed = xorshift(&rng) };
        rill_publisher_init(&src.base, &paced_ops);
        uint32_t prefetch = prefetches[xorshift(&rng) % 6];
        rill_publisher *pub = rill_observe_on(&src.base, b, prefetch);
        ck_assert_ptr_nonnull(pub);

        probe *p = probe_new();
        if (xorshift(&rng) % 2) {
            p->initial = RILL_UNBOUNDED;
        } else {
            p->random_batch = 1 + xorshift(&rng) % 128;
            p->low_water = 1 + xorshift(&rng) % 32;
            p->rng = xorshift(&rng) | 1;
            p->initial = 1 + xorshift(&rng) % 64;
        }
        probe_subscribe(p, pub);
        rill_publisher_unref(pub);
        wait_released(p);
        ck_assert_int_eq(pthread_join(src.tid, NULL), 0);
        wait_flag(&src.destroyed);
        assert_handed_off(p);
        assert_completed(p, src.n);
        settle(round_base);
        free(p);
    }
    rill_scheduler_unref(b);
    settle(base);
}
END_TEST

/* A publisher that behaves for its first requests, then, inside its third,
 * sends one item more than asked: observe_on must catch the excess after
 * its allowance has been refreshed twice (the producer's copy of it ran out
 * and was re-read), deliver every item that fitted, then EOVERFLOW. */
typedef struct cheat {
    rill_publisher base;
    rill_subscription sub;
    rill_subscriber *down;
    uint64_t next;
    int requests, cancelled, released;
    atomic_int destroyed;
} cheat;

static void cheat_request(rill_subscription *s, uint64_t n)
{
    /* Only ever called on one thread at a time here: observe_on requests
     * inside its on_subscribe, then from its drain. */
    cheat *c = (cheat *)((char *)s - offsetof(cheat, sub));
    if (c->released)
        return;
    uint64_t send = ++c->requests == 3 ? n + 1 : n;
    for (uint64_t i = 0; i < send && !c->cancelled; i++)
        rill_deliver_next(c->down, (void *)(intptr_t)c->next++);
    if (c->cancelled) {
        c->released = 1;
        rill_deliver_release(c->down);
    }
}

static void cheat_cancel(rill_subscription *s)
{
    ((cheat *)((char *)s - offsetof(cheat, sub)))->cancelled = 1;
}

static const struct rill_subscription_ops cheat_sub_ops = {
    .version = RILL_SUBSCRIPTION_OPS_VERSION,
    .request = cheat_request,
    .cancel = cheat_cancel,
};

static void cheat_subscribe(rill_publisher *self, rill_subscriber *s)
{
    cheat *c = (cheat *)self;
    c->sub.ops = &cheat_sub_ops;
    c->down = s;
    rill_deliver_subscribe(s, &c->sub);
}

static void cheat_destroy(rill_publisher *self)
{
    atomic_store(&((cheat *)self)->destroyed, 1);
}

static const struct rill_publisher_ops cheat_ops = {
    .version = RILL_PUBLISHER_OPS_VERSION,
    .subscribe = cheat_subscribe,
    .destroy = cheat_destroy,
};

START_TEST(test_overflow_after_replenish)
{
    long base = live_allocations();
    static const uint32_t prefetches[] = { 4, 16, 256 };
    uint32_t prefetch = prefetches[_i];
    uint64_t limit = prefetch - prefetch / 4, fits = prefetch + 2 * limit;
    cheat c = { .next = 0 };
    rill_publisher_init(&c.base, &cheat_ops);
    discards d = { 0 };
    rill_scheduler *b = single_new();
    rill_publisher *pub = with_discards(rill_observe_on(&c.base, b, prefetch), &d);
    ck_assert_ptr_nonnull(pub);

    probe *p = probe_new();
    p->initial = RILL_UNBOUNDED;
    probe_subscribe(p, pub);
    wait_released(p);
    rill_publisher_unref(pub);
    wait_flag(&d.freed);
    wait_flag(&c.destroyed);
    assert_handed_off(p);
    assert_failed(p, EOVERFLOW);
    ck_assert_int_eq(c.requests, 3);
    ck_assert_uint_eq(c.next, fits + 1);
    ck_assert_uint_eq(u64(&p->received), fits);
    ck_assert_uint_eq(u64(&d.count), 1);
    ck_assert_int_eq(p->next_expected, (int64_t)fits);
    rill_scheduler_unref(b);
    settle(base);
    free(p);
}
END_TEST

/* ------------------------------------------------------------------------ */

static TCase *timed_tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, RILL_TEST_TIMEOUT);
    return tc;
}

Suite *observe_on_suite(void)
{
    Suite *s = suite_create("observe_on");

    TCase *tc = timed_tcase("handoff");
    tcase_add_loop_test(tc, test_handoff, 0, 40);
    tcase_add_loop_test(tc, test_prefetch_bound, 0, 12);
    tcase_add_loop_test(tc, test_demand_exact, 0, 2);
    suite_add_tcase(s, tc);

    tc = timed_tcase("request_zero");
    tcase_add_test(tc, test_request_zero_before_any_item);
    tcase_add_test(tc, test_request_zero_after_some_items);
    tcase_add_test(tc, test_request_zero_inside_on_next);
    tcase_add_test(tc, test_request_zero_subscribe_on);
    suite_add_tcase(s, tc);

    tc = timed_tcase("errors");
    tcase_add_test(tc, test_error_after_queue);
    tcase_add_test(tc, test_error_after_queue_refilled);
    tcase_add_test(tc, test_error_after_queue_subscribe_on);
    tcase_add_test(tc, test_error_cuts_ahead);
    tcase_add_test(tc, test_error_cuts_ahead_subscribe_on);
    tcase_add_test(tc, test_overflow);
    tcase_add_test(tc, test_overflow_error_cuts_ahead);
    suite_add_tcase(s, tc);

    tc = timed_tcase("cancel");
    tcase_add_loop_test(tc, test_cancel_midstream, 0, 8);
    suite_add_tcase(s, tc);

    tc = timed_tcase("subscribe_on");
    tcase_add_test(tc, test_subscribe_on_requests_from_on_next);
    tcase_add_test(tc, test_subscribe_on_requests_from_threads);
    tcase_add_test(tc, test_subscribe_on_then_observe_on);
    tcase_add_test(tc, test_subscribe_on_cancel_in_on_subscribe);
    suite_add_tcase(s, tc);

    tc = timed_tcase("refused");
    tcase_add_test(tc, test_refused_observe_on_at_subscribe);
    tcase_add_test(tc, test_refused_observe_on_midstream);
    tcase_add_test(tc, test_refused_subscribe_on_at_subscribe);
    tcase_add_test(tc, test_refused_subscribe_on_midstream);
    suite_add_tcase(s, tc);

    tc = timed_tcase("arguments_lifetime");
    tcase_add_test(tc, test_bad_arguments);
    tcase_add_test(tc, test_concurrent_subscriptions_replay);
    tcase_add_loop_test(tc, test_unref_right_after_subscribe, 0, 2);
    suite_add_tcase(s, tc);

    tc = timed_tcase("races");
    tcase_add_loop_test(tc, test_races, 0, 4);
    suite_add_tcase(s, tc);

    tc = timed_tcase("paced");
    tcase_add_loop_test(tc, test_paced_requests, 0, 4);
    tcase_add_loop_test(tc, test_paced_producer, 0, 2);
    tcase_add_loop_test(tc, test_overflow_after_replenish, 0, 3);
    suite_add_tcase(s, tc);
    return s;
}
