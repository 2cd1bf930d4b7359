/* Copied from peerbench (c/spsc_ring.c, the C floors behind
 * ../shared/research/perf-anchors.md) for rill's bench/compare. The workload
 * is unchanged; only this comment was added. */
/* Benchmark 5b: cross-thread single-producer/single-consumer lock-free ring (C11 atomics).
 * Hands N uint64 items (default 100M) from a producer pthread to the consumer (main thread), which sums
 * them (checked). Capacity is a power of two (256 / 1024). Both sides cache the other side's index and
 * only re-read the shared atomic when the cached value says full/empty.
 * modes:
 *   item  : publish every item individually (1 release store of tail per item, 1 of head per item);
 *           waiting = busy spin with PAUSE, sched_yield() every 256 spins (never blocks)
 *   batch : producer writes up to all free slots then one release store; consumer drains everything
 *           available then one release store; same busy-spin waiting (the physical-limit anchor)
 *   park  : like batch, but a side that finds the ring full/empty spins (PAUSE) for at most SPIN_NS
 *           (env, default 0 = park at once), then parks on a condvar (Dekker-style flag + seq_cst fence;
 *           the other side signals only if the flag is set). This is what a scheduler that does not burn
 *           idle cores pays per hand-off episode.
 * Usage: [SPIN_NS=..] [REPS=..] spsc_ring <item|batch|park> <capacity> [N]                 */
#include "bench.h"
#include <pthread.h>
#include <sched.h>
#include <stdalign.h>
#include <stdatomic.h>

static uint64_t g_spin_ns = 0; /* park mode: how long to spin before parking */

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic int sleeping;
    uint64_t parks;
} parker_t;

typedef struct {
    alignas(64) _Atomic uint64_t tail; /* written by producer */
    uint64_t head_cache;               /* producer-private */
    alignas(64) _Atomic uint64_t head; /* written by consumer */
    uint64_t tail_cache;               /* consumer-private */
    alignas(64) uint64_t cap, mask, n;
    int batch, park;
    uint64_t *buf;
    parker_t prod_pk, cons_pk;
} ring_t;

/* Wake the other side if (and only if) it announced that it is going to sleep. */
static inline void unpark(parker_t *pk) {
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(&pk->sleeping, memory_order_relaxed)) {
        pthread_mutex_lock(&pk->mu);
        atomic_store_explicit(&pk->sleeping, 0, memory_order_relaxed);
        pthread_cond_signal(&pk->cv);
        pthread_mutex_unlock(&pk->mu);
    }
}

/* Park until *idx != seen (idx is the other side's published index). */
static void park_until_moved(parker_t *pk, _Atomic uint64_t *idx, uint64_t seen) {
    pk->parks++;
    atomic_store_explicit(&pk->sleeping, 1, memory_order_seq_cst);
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_load_explicit(idx, memory_order_acquire) == seen) {
        pthread_mutex_lock(&pk->mu);
        while (atomic_load_explicit(&pk->sleeping, memory_order_relaxed) &&
               atomic_load_explicit(idx, memory_order_acquire) == seen)
            pthread_cond_wait(&pk->cv, &pk->mu);
        pthread_mutex_unlock(&pk->mu);
    }
    atomic_store_explicit(&pk->sleeping, 0, memory_order_relaxed);
}

typedef struct { unsigned spins; uint64_t t0; } waiter_t;

/* One step of waiting for the other side to move `idx` away from `seen`. */
static inline void wait_step(const ring_t *r, waiter_t *w, parker_t *pk, _Atomic uint64_t *idx, uint64_t seen) {
    if (!r->park) {                       /* busy spin, occasionally yield */
        if (++w->spins < 256) cpu_relax();
        else { w->spins = 0; sched_yield(); }
        return;
    }
    if (w->spins++ == 0) w->t0 = g_spin_ns ? now_ns() : 0;
    if (g_spin_ns == 0 || ((w->spins & 15) == 0 && now_ns() - w->t0 >= g_spin_ns)) {
        park_until_moved(pk, idx, seen);
        w->spins = 0;
    } else {
        cpu_relax();
    }
}

static void *producer(void *arg) {
    ring_t *r = arg;
    const uint64_t cap = r->cap, mask = r->mask, n = r->n;
    uint64_t *buf = r->buf;
    uint64_t t = atomic_load_explicit(&r->tail, memory_order_relaxed);
    uint64_t hc = r->head_cache, i = 0;
    waiter_t w = {0, 0};
    while (i < n) {
        uint64_t free_ = cap - (t - hc);
        if (free_ == 0) {
            hc = atomic_load_explicit(&r->head, memory_order_acquire);
            free_ = cap - (t - hc);
            if (free_ == 0) { wait_step(r, &w, &r->prod_pk, &r->head, hc); continue; }
        }
        w.spins = 0;
        if (r->batch) {
            uint64_t k = n - i < free_ ? n - i : free_;
            for (uint64_t j = 0; j < k; j++) buf[(t + j) & mask] = i + j;
            t += k; i += k;
        } else {
            buf[t & mask] = i++;
            t++;
        }
        atomic_store_explicit(&r->tail, t, memory_order_release);
        if (r->park) unpark(&r->cons_pk);
    }
    r->head_cache = hc;
    return NULL;
}

static uint64_t consume(ring_t *r, uint64_t *sum_out) {
    const uint64_t mask = r->mask, n = r->n;
    const uint64_t *buf = r->buf;
    uint64_t h = atomic_load_explicit(&r->head, memory_order_relaxed);
    uint64_t tc = r->tail_cache, got = 0, sum = 0;
    waiter_t w = {0, 0};
    while (got < n) {
        if (h == tc) {
            tc = atomic_load_explicit(&r->tail, memory_order_acquire);
            if (h == tc) { wait_step(r, &w, &r->cons_pk, &r->tail, h); continue; }
        }
        w.spins = 0;
        if (r->batch) {
            uint64_t k = tc - h;
            for (uint64_t j = 0; j < k; j++) sum += buf[(h + j) & mask];
            h += k; got += k;
        } else {
            sum += buf[h & mask];
            got++; h++;
        }
        atomic_store_explicit(&r->head, h, memory_order_release);
        if (r->park) unpark(&r->prod_pk);
    }
    r->tail_cache = tc;
    *sum_out = sum;
    return got;
}

static uint64_t rep(void *ctx, uint64_t *items) {
    ring_t *r = ctx;
    uint64_t sum = 0;
    pthread_t th;
    uint64_t t0 = now_ns();
    if (pthread_create(&th, NULL, producer, r)) { perror("pthread_create"); exit(1); }
    uint64_t got = consume(r, &sum);
    pthread_join(th, NULL);
    uint64_t t1 = now_ns();
    if (sum != r->n * (r->n - 1) / 2) { fprintf(stderr, "bad sum\n"); exit(1); }
    *items = got;
    return t1 - t0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "batch";
    uint64_t cap = argc > 2 ? strtoull(argv[2], 0, 10) : 256;
    uint64_t n = argc > 3 ? strtoull(argv[3], 0, 10) : 100000000ull;
    if (!cap || (cap & (cap - 1))) { fprintf(stderr, "capacity must be a power of two\n"); return 2; }
    static ring_t r;
    r.cap = cap; r.mask = cap - 1; r.n = n;
    r.park = !strcmp(mode, "park");
    r.batch = r.park || !strcmp(mode, "batch");
    if (!r.park && !r.batch && strcmp(mode, "item")) { fprintf(stderr, "bad mode\n"); return 2; }
    g_spin_ns = (uint64_t)env_int("SPIN_NS", 0);
    pthread_mutex_init(&r.prod_pk.mu, NULL); pthread_cond_init(&r.prod_pk.cv, NULL);
    pthread_mutex_init(&r.cons_pk.mu, NULL); pthread_cond_init(&r.cons_pk.cv, NULL);
    r.buf = aligned_alloc(64, cap * sizeof(uint64_t));
    memset(r.buf, 0, cap * sizeof(uint64_t));
    char name[80];
    if (r.park)
        snprintf(name, sizeof name, "c_spsc_park_spin%luns_cap%lu", (unsigned long)g_spin_ns, (unsigned long)cap);
    else
        snprintf(name, sizeof name, "c_spsc_%s_cap%lu", mode, (unsigned long)cap);
    bench(name, 2, 1000000000ull, env_int("REPS", 7), rep, &r);
    if (r.park)
        printf("# parks(all reps): producer=%lu consumer=%lu\n", (unsigned long)r.prod_pk.parks,
               (unsigned long)r.cons_pk.parks);
    return 0;
}
