/* bench/sync_chain.c — the synchronous pipeline against its C floor.
 *
 *   rill_sync_chain  range(0, N) -> map(+1) -> filter(even) -> sink (request RILL_UNBOUNDED)
 *   c_fnptr_loop     a plain loop calling the same map, predicate and sink
 *                    functions through function pointers
 *
 * The workload is RxSync.java's (bench/peers/java/RxSync.java):
 * Flowable.range(0, N).map(x -> x + 1).filter(x -> (x & 1) == 0) into a sum.
 * Both count SOURCE items per second (N per rep) and check the sum of what
 * reached the sink.
 *
 *   sync_chain [--quick] [--n=N] [rill] [floor]     (no case: both)
 */
#include "bench.h"

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

/* The sink receives the even numbers in 1..n: 2 + 4 + ... + 2k = k(k+1). */
static uint64_t expected_sum(uint64_t n)
{
    uint64_t k = n / 2;
    return k * (k + 1);
}

/* ------------------------------------------------------------------ rill */

struct rill_bench {
    rill_publisher *chain;   /* cold and reusable: one subscription per rep */
    uint64_t chain_n;        /* the n it was built for */
};

static rill_publisher *build_chain(uint64_t n)
{
    rill_publisher *p = rill_range(0, n);
    p = rill_map(p, map_inc, NULL);
    return rill_filter(p, pred_even, NULL);
}

static uint64_t rep_rill(void *ctx, uint64_t n, uint64_t *items)
{
    struct rill_bench *b = ctx;
    /* on_subscribe NULL: the subscriber requests RILL_UNBOUNDED at once. */
    static const rill_callbacks cb = {
        .on_next = sink_next, .on_complete = sink_complete, .on_release = sink_release,
    };
    if (b->chain_n != n) {   /* rebuilt only while the harness sizes n */
        rill_publisher_unref(b->chain);
        b->chain = build_chain(n);
        b->chain_n = n;
        if (b->chain == NULL)
            bench_fail("sync_chain: building the chain: errno %d", errno);
    }
    struct sink s = { 0 };
    uint64_t t0 = bench_now_ns();
    rill_subscribe(b->chain, rill_subscriber_new(&cb, &s));   /* runs to the end here */
    uint64_t t1 = bench_now_ns();
    if (s.sum != expected_sum(n) || !s.completed || !s.released)
        bench_fail("rill_sync_chain: sum %" PRIu64 ", expected %" PRIu64 " (completed %d)",
                   s.sum, expected_sum(n), s.completed);
    *items = n;
    return t1 - t0;
}

/* ------------------------------------------------------------------ floor */

static uint64_t rep_floor(void *ctx, uint64_t n, uint64_t *items)
{
    rill_map_fn map = map_inc;
    rill_pred_fn pred = pred_even;
    void (*next)(void *, void *) = sink_next;
    BENCH_LAUNDER(map);
    BENCH_LAUNDER(pred);
    BENCH_LAUNDER(next);
    struct sink s = { 0 };
    uint64_t t0 = bench_now_ns();
    for (uint64_t i = 0; i < n; i++) {
        void *v;
        if (map(NULL, (void *)(intptr_t)i, &v) == 0 && pred(NULL, v))
            next(&s, v);
    }
    uint64_t t1 = bench_now_ns();
    if (s.sum != expected_sum(n))
        bench_fail("c_fnptr_loop: sum %" PRIu64 ", expected %" PRIu64, s.sum, expected_sum(n));
    *items = n;
    return t1 - t0;
}

/* ------------------------------------------------------------------ main */

int main(int argc, char **argv)
{
    bench_init(&argc, argv);
    uint64_t n0 = bench_cfg.quick ? 1000000u : 10000000u;
    double rill_rate = 0, floor_rate = 0;

    if (bench_selected(argc, argv, "rill")) {
        struct rill_bench rb = { NULL, 0 };
        bench_stats st = bench_run(rep_rill, &rb, n0, UINT64_C(1) << 32);
        bench_report("rill_sync_chain", &st, NULL);
        rill_publisher_unref(rb.chain);
        rill_rate = st.median;
    }
    if (bench_selected(argc, argv, "floor")) {
        bench_stats st = bench_run(rep_floor, NULL, n0, UINT64_C(1) << 32);
        bench_report("c_fnptr_loop", &st, NULL);
        floor_rate = st.median;
    }
    if (rill_rate > 0 && floor_rate > 0)
        printf("RATIO rill_sync_chain/c_fnptr_loop %.3f\n", rill_rate / floor_rate);
    if (bench_live() != 0)
        bench_fail("sync_chain: %" PRId64 " bytes still allocated by rill", bench_live());
    return 0;
}
