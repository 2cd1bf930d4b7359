/* Copied from peerbench (c/sync_vtable.c, the C floors behind
 * ../shared/research/perf-anchors.md) for rill's bench/compare. The workload
 * is unchanged; only this comment was added. */
/* Benchmark 5a: synchronous map/filter through function pointers per item ("vtable call" floor).
 * Pipeline: source 0..N-1 -> map(x+1) -> filter((x&1)==0) -> sum. items/s counts SOURCE items.
 * modes:
 *   flat      : one loop, user map/filter/sink called through function pointers (3 indirect calls/item)
 *   chain     : Reactive-Streams-like subscriber chain: every stage has an on_next function pointer and
 *               calls the user function through a pointer (~5-6 indirect calls/item), no demand tracking
 *   chain_req : chain + request(n) protocol: the sink requests 256 up-front and 256 after every 256 items
 *               it receives (re-entrantly, from inside on_next); source keeps an _Atomic requested counter
 *               and an emission loop with the usual "add; if previous==0 then drain" pattern, checks an
 *               _Atomic cancelled flag per item, and (like RxJava's ConditionalSubscriber.tryOnNext) only
 *               counts items that were not filtered out against demand.
 * Usage: sync_vtable <mode> [N]                                                       */
#include "bench.h"
#include <stdatomic.h>

typedef uint64_t (*map_fn)(uint64_t);
typedef int (*pred_fn)(uint64_t);

__attribute__((noinline)) static uint64_t map_inc(uint64_t x) { return x + 1; }
__attribute__((noinline)) static int pred_even(uint64_t x) { return (x & 1) == 0; }

/* ---- flat ---- */
typedef struct { map_fn map; pred_fn pred; void (*sink)(void *, uint64_t); uint64_t sum; uint64_t n; } flat_t;
__attribute__((noinline)) static void sink_add(void *c, uint64_t v) { ((flat_t *)c)->sum += v; }

static uint64_t rep_flat(void *ctx, uint64_t *items) {
    flat_t *f = ctx;
    map_fn map = f->map; pred_fn pred = f->pred; void (*sink)(void *, uint64_t) = f->sink;
    LAUNDER(map); LAUNDER(pred); LAUNDER(sink);
    f->sum = 0;
    uint64_t t0 = now_ns();
    for (uint64_t i = 0; i < f->n; i++) {
        uint64_t v = map(i);
        if (pred(v)) sink(f, v);
    }
    uint64_t t1 = now_ns();
    *items = f->n;
    return t1 - t0;
}

/* ---- chain ---- */
typedef struct stage stage;
struct stage {
    int (*on_next)(stage *, uint64_t); /* returns 1 if the item was consumed (tryOnNext semantics) */
    stage *next;
    void *fn;
    uint64_t acc;
    /* chain_req sink state */
    uint64_t got;
    struct source *src;
};
typedef struct source {
    _Atomic uint64_t requested;
    _Atomic int cancelled;
    uint64_t i, n;
    stage *head;
    int done;
} source;

static int map_on_next(stage *s, uint64_t v) { return s->next->on_next(s->next, ((map_fn)s->fn)(v)); }
static int filter_on_next(stage *s, uint64_t v) {
    return ((pred_fn)s->fn)(v) ? s->next->on_next(s->next, v) : 0;
}
static int sink_on_next(stage *s, uint64_t v) { s->acc += v; return 1; }

static void source_request(source *src, uint64_t n);
static int sink_req_on_next(stage *s, uint64_t v) {
    s->acc += v;
    if (++s->got == 256) { s->got = 0; source_request(s->src, 256); }
    return 1;
}

/* classic Reactive Streams emission loop: only the caller that moved requested from 0 drains */
static void source_request(source *src, uint64_t n) {
    if (atomic_fetch_add_explicit(&src->requested, n, memory_order_acq_rel) != 0) return;
    uint64_t r = n;
    for (;;) {
        uint64_t e = 0;
        stage *h = src->head;
        while (e != r) {
            if (atomic_load_explicit(&src->cancelled, memory_order_relaxed)) return;
            if (src->i == src->n) { src->done = 1; return; }
            e += (uint64_t)h->on_next(h, src->i++);
        }
        r = atomic_fetch_sub_explicit(&src->requested, e, memory_order_acq_rel) - e;
        if (r == 0) return;
    }
}

typedef struct { stage m, f, s; source src; uint64_t n; int with_req; } chain_t;

static uint64_t rep_chain(void *ctx, uint64_t *items) {
    chain_t *c = ctx;
    c->s.acc = 0; c->s.got = 0;
    c->src.i = 0; c->src.done = 0;
    atomic_store(&c->src.requested, 0);
    stage *head = &c->m;
    LAUNDER(head);
    uint64_t t0 = now_ns();
    if (c->with_req) {
        source_request(&c->src, 256);
    } else {
        for (uint64_t i = 0; i < c->n; i++) head->on_next(head, i);
    }
    uint64_t t1 = now_ns();
    *items = c->n;
    return t1 - t0;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "flat";
    uint64_t n = argc > 2 ? strtoull(argv[2], 0, 10) : 100000000ull;
    uint64_t k = n / 2, expected = k * (k + 1); /* evens in [1, n] */
    char name[64];
    snprintf(name, sizeof name, "c_sync_%s", mode);
    if (!strcmp(mode, "flat")) {
        flat_t f = {map_inc, pred_even, sink_add, 0, n};
        bench(name, 3, 1000000000ull, 9, rep_flat, &f);
        if (f.sum != expected) { fprintf(stderr, "bad sum\n"); return 1; }
    } else {
        chain_t c;
        memset(&c, 0, sizeof c);
        c.n = n;
        c.with_req = !strcmp(mode, "chain_req");
        c.m = (stage){map_on_next, &c.f, (void *)map_inc, 0, 0, 0};
        c.f = (stage){filter_on_next, &c.s, (void *)pred_even, 0, 0, 0};
        c.s = (stage){c.with_req ? sink_req_on_next : sink_on_next, 0, 0, 0, 0, &c.src};
        c.src.n = n;
        c.src.head = &c.m;
        bench(name, 3, 1000000000ull, 9, rep_chain, &c);
        if (c.s.acc != expected) { fprintf(stderr, "bad sum %lu\n", (unsigned long)c.s.acc); return 1; }
    }
    return 0;
}
