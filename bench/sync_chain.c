/* bench/sync_chain.c — the synchronous pipeline against its C floor.
 *
 *   rill_sync_chain  range(0, N) -> map(+1) -> filter(even) -> sink (request RILL_UNBOUNDED)
 *   c_fnptr_loop     a plain loop calling the same map, predicate and sink
 *                    functions through function pointers
 *
 * Both count SOURCE items per second (N per rep) and check the sum of what
 * reached the sink. Usage: sync_chain [N]   (default 100000000)
 */
#include "bench.h"

#include <rill.h>

#include <inttypes.h>

/* The user functions, shared by both contenders. noinline keeps the floor
 * honest: the loop pays one real call per function, as rill does. */
__attribute__((noinline)) static int map_inc(void *ctx, void *in, void **out)
{
    *out = (void *)((intptr_t)in + 1);
    return 0;
}

__attribute__((noinline)) static int pred_even(void *ctx, void *item)
{
    return ((intptr_t)item & 1) == 0;
}

struct sink {
    uint64_t sum;
    int completed, released;
};

__attribute__((noinline)) static void sink_next(void *user, void *item)
{
    ((struct sink *)user)->sum += (uint64_t)(intptr_t)item;
}

static void sink_complete(void *user)
{
    ((struct sink *)user)->completed = 1;
}

static void sink_release(void *user)
{
    ((struct sink *)user)->released = 1;
}

/* ------------------------------------------------------------------ rill */

struct rill_bench {
    rill_publisher *chain;   /* cold and reusable: one subscription per rep */
    uint64_t n;
    struct sink sink;
};

static uint64_t rep_rill(void *ctx, uint64_t *items)
{
    struct rill_bench *b = ctx;
    /* on_subscribe NULL: the subscriber requests RILL_UNBOUNDED at once. */
    static const rill_callbacks cb = {
        .on_next = sink_next, .on_complete = sink_complete, .on_release = sink_release,
    };
    b->sink = (struct sink){ 0 };
    uint64_t t0 = bench_now_ns();
    rill_subscriber *s = rill_subscriber_new(&cb, &b->sink);
    rill_subscribe(b->chain, s);   /* synchronous: runs to the end here */
    uint64_t t1 = bench_now_ns();
    *items = b->n;
    return t1 - t0;
}

static rill_publisher *build_chain(uint64_t n)
{
    rill_publisher *p = rill_range(0, n);
    p = rill_map(p, map_inc, NULL);
    return rill_filter(p, pred_even, NULL);
}

/* ------------------------------------------------------------------ floor */

struct floor_bench {
    uint64_t n;
    struct sink sink;
};

static uint64_t rep_floor(void *ctx, uint64_t *items)
{
    struct floor_bench *b = ctx;
    rill_map_fn map = map_inc;
    rill_pred_fn pred = pred_even;
    void (*next)(void *, void *) = sink_next;
    BENCH_LAUNDER(map);
    BENCH_LAUNDER(pred);
    BENCH_LAUNDER(next);
    b->sink = (struct sink){ 0 };
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < b->n; i++) {
        void *v;
        if (map(NULL, (void *)(intptr_t)i, &v) == 0 && pred(NULL, v))
            next(&b->sink, v);
    }
    uint64_t t1 = bench_now_ns();
    *items = b->n;
    return t1 - t0;
}

/* ------------------------------------------------------------------ main */

static int check_sum(const char *name, const struct sink *s, uint64_t want)
{
    if (s->sum == want)
        return 1;
    fprintf(stderr, "sync_chain: %s: sum %" PRIu64 ", expected %" PRIu64 "\n", name, s->sum, want);
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000000u;
    if (n == 0 || n > INT64_MAX / 2) {
        fprintf(stderr, "usage: sync_chain [N]   (1 <= N <= 2^62)\n");
        return 2;
    }
    /* The sink receives the even numbers in 1..n: 2 + 4 + ... + 2k = k(k+1). */
    uint64_t k = n / 2, want = k * (k + 1);

    struct rill_bench rb = { .chain = build_chain(n), .n = n };
    if (rb.chain == NULL) {
        perror("sync_chain: building the chain");
        return 1;
    }
    double rill_rate = bench_run("rill_sync_chain", rep_rill, &rb);
    rill_publisher_unref(rb.chain);
    int ok = check_sum("rill_sync_chain", &rb.sink, want)
             && rb.sink.completed && rb.sink.released;

    struct floor_bench fb = { .n = n };
    double floor_rate = bench_run("c_fnptr_loop", rep_floor, &fb);
    ok = check_sum("c_fnptr_loop", &fb.sink, want) && ok;

    if (floor_rate > 0)
        printf("RATIO rill_sync_chain/c_fnptr_loop %.3f\n", rill_rate / floor_rate);
    return ok ? 0 : 1;
}
