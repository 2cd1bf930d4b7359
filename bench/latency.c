/* bench/latency.c — the latency of one observe_on hop, from timestamps
 * carried in the items.
 *
 *   generate(timestamp) -> subscribe_on(single thread A)
 *                       -> observe_on(single thread B, 256) -> sink
 *
 * The source stamps each item with CLOCK_MONOTONIC (ns) as it emits it on
 * A; the sink, on B, records now - stamp in a log-linear histogram (64
 * sub-buckets per power of two: <= 1.6% error, 21 KB, nothing allocated per
 * item). The latency thus covers the hop: the wait in observe_on's ring,
 * the hand-off between cores and any wake-up of B.
 *
 *   sat       the source emits as fast as demand allows (saturation): the
 *             latency is mostly the time an item waits behind the others
 *             in the 256-slot ring;
 *   rate100k  the source emits one item every 10 µs (100 k items/s),
 *             busy-waiting on A between items, so B drains faster than
 *             items come and may park: the latency includes wake-ups.
 *             A late emission is not made up for (no bursts), and the
 *             stamp is the actual emission time, so this measures the hop,
 *             not the source's pacing.
 *   rate<R>   the same at R items/s.
 *
 * Output: RESULT rill_latency_<case> <items/s> ... p50_ns= p99_ns=
 * p999_ns= max_ns= samples=
 *
 *   latency [--quick] [--n=N] [sat rate100k ...]     (no case: both)
 */
#include "bench.h"

#include <semaphore.h>

/* ------------------------------------------------------------------ histogram */

#define SUB_BITS 6
#define SUB (1u << SUB_BITS)
#define BUCKETS (64 * SUB)

typedef struct histogram {
    uint64_t count[BUCKETS];
    uint64_t total, max;
} histogram;

static unsigned bucket_of(uint64_t v)
{
    if (v < SUB)
        return (unsigned)v;                        /* exact below 64 ns */
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned sub = (unsigned)(v >> (msb - SUB_BITS)) & (SUB - 1);
    return (msb - SUB_BITS + 1) * SUB + sub;
}

/* The middle of bucket b's range. */
static double bucket_value(unsigned b)
{
    if (b < SUB)
        return b;
    unsigned msb = b / SUB + SUB_BITS - 1, sub = b % SUB;
    double width = (double)(UINT64_C(1) << (msb - SUB_BITS));
    return ((double)(UINT64_C(1) << msb) + sub * width) + width / 2;
}

static void hist_add(histogram *h, uint64_t v)
{
    h->count[bucket_of(v)]++;
    h->total++;
    if (v > h->max)
        h->max = v;
}

static double hist_percentile(const histogram *h, double p)
{
    uint64_t rank = (uint64_t)(p / 100.0 * (double)h->total + 0.5), seen = 0;
    if (rank < 1)
        rank = 1;
    for (unsigned b = 0; b < BUCKETS; b++) {
        seen += h->count[b];
        if (seen >= rank)
            return bucket_value(b);
    }
    return (double)h->max;
}

/* ------------------------------------------------------------------ pipeline */

typedef struct run {
    rill_scheduler *a, *b;
    /* the source (thread A) */
    uint64_t remaining, period_ns, next_due;
    /* the sink (thread B) */
    histogram hist;
    int error, completed;
    sem_t released;
} run;

static int stamp(void *state, void **item)
{
    run *r = state;
    uint64_t now = bench_now_ns();
    if (r->period_ns) {
        if (r->next_due == 0)
            r->next_due = now;
        while (now < r->next_due) {
            bench_cpu_relax();
            now = bench_now_ns();
        }
        r->next_due += r->period_ns;
        if (r->next_due < now)      /* late: do not burst to catch up */
            r->next_due = now;
    }
    *item = (void *)(uintptr_t)now;
    return --r->remaining == 0 ? RILL_GENERATE_LAST : RILL_GENERATE_NEXT;
}

static void sink_next(void *user, void *item)
{
    uint64_t now = bench_now_ns(), then = (uint64_t)(uintptr_t)item;
    hist_add(&((run *)user)->hist, now >= then ? now - then : 0);
}

static void sink_error(void *user, const rill_error *e)
{
    ((run *)user)->error = rill_error_code(e);
}

static void sink_complete(void *user)
{
    ((run *)user)->completed = 1;
}

static void sink_release(void *user)
{
    sem_post(&((run *)user)->released);
}

static const rill_callbacks sink = {
    .on_next = sink_next,   /* on_subscribe NULL: request(RILL_UNBOUNDED) */
    .on_error = sink_error,
    .on_complete = sink_complete,
    .on_release = sink_release,
};

/* One run of n items; returns the elapsed ns. */
static uint64_t one_run(run *r, uint64_t n)
{
    memset(&r->hist, 0, sizeof r->hist);
    r->remaining = n;
    r->next_due = 0;
    r->error = r->completed = 0;
    rill_publisher *p = rill_generate(stamp, r);
    p = rill_subscribe_on(p, r->a);
    p = rill_observe_on(p, r->b, 256);
    if (p == NULL)
        bench_fail("latency: building the pipeline: errno %d", errno);
    uint64_t t0 = bench_now_ns();
    rill_subscribe(p, rill_subscriber_new(&sink, r));
    rill_publisher_unref(p);
    sem_wait(&r->released);
    uint64_t ns = bench_now_ns() - t0;
    if (r->error || !r->completed || r->hist.total != n)
        bench_fail("latency: %" PRIu64 " of %" PRIu64 " items, error %d",
                   r->hist.total, n, r->error);
    return ns;
}

static void run_case(run *r, const char *arg)
{
    unsigned long rate = 0;
    char name[64];
    if (strcmp(arg, "sat") == 0) {
        rate = 0;
    } else if (strcmp(arg, "rate100k") == 0) {
        rate = 100000;
    } else if (sscanf(arg, "rate%lu", &rate) != 1 || rate == 0 || rate > 1000000000) {
        bench_fail("latency: unknown case '%s' (want sat or rate<items/s>)", arg);
    }
    snprintf(name, sizeof name, "rill_latency_%s", arg);
    r->period_ns = rate ? 1000000000u / rate : 0;
    /* Saturated: enough items for a stable p99.9; paced: 2 s (quick 0.2 s). */
    uint64_t n = rate ? rate * (bench_cfg.quick ? 2 : 20) / 10
                      : (bench_cfg.quick ? 200000u : 4000000u);
    if (bench_cfg.fixed_n)
        n = bench_cfg.fixed_n;
    uint64_t warm_n = n / 10 ? n / 10 : 1;
    uint64_t a0 = bench_allocs();
    one_run(r, warm_n);                         /* warm-up */
    uint64_t warm_allocs = bench_allocs() - a0;
    a0 = bench_allocs();
    uint64_t ns = one_run(r, n);
    bench_stats st = {
        .n = n, .items = n, .reps = 1, .allocs = bench_allocs() - a0,
    };
    /* Steady state as in bench_run: what the n-item run allocated beyond
     * the warm-up's n/10 items (the per-subscription allocations cancel). */
    st.steady_allocs_per_item = st.allocs > warm_allocs && n > warm_n
                                ? (double)(st.allocs - warm_allocs) / (double)(n - warm_n) : 0.0;
    st.median = st.min = st.max = st.cold = bench_rate(n, ns);
    bench_report(name, &st, "p50_ns=%.0f p99_ns=%.0f p999_ns=%.0f max_ns=%" PRIu64
                 " samples=%" PRIu64 " target_rate=%lu",
                 hist_percentile(&r->hist, 50), hist_percentile(&r->hist, 99),
                 hist_percentile(&r->hist, 99.9), r->hist.max, r->hist.total, rate);
}

int main(int argc, char **argv)
{
    bench_init(&argc, argv);
    static char *defaults[] = { "", "sat", "rate100k", NULL };
    if (argc < 2) {
        argv = defaults;
        argc = 3;
    }
    static run r;   /* the histogram is 21 KB: not on the stack */
    sem_init(&r.released, 0, 0);
    r.a = rill_single_thread_new();
    r.b = rill_single_thread_new();
    if (r.a == NULL || r.b == NULL)
        bench_fail("latency: no scheduler: errno %d", errno);
    for (int i = 1; i < argc; i++)
        run_case(&r, argv[i]);
    rill_scheduler_unref(r.a);
    rill_scheduler_unref(r.b);
    sem_destroy(&r.released);
    return 0;
}
