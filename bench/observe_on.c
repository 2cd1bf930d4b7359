/* bench/observe_on.c — observe_on hops across real thread boundaries.
 *
 *   p<P>       range(0, N) -> subscribe_on(single thread A)
 *                          -> observe_on(single thread B, P) -> sink
 *   2hop_p<P>  range(0, N) -> subscribe_on(A) -> observe_on(B, P)
 *                          -> observe_on(single thread C, P) -> sink
 *
 * The sink requests RILL_UNBOUNDED and sums the items (checked). The source
 * emits on thread A and the sink runs on B (or C): every item crosses
 * between cores through observe_on's ring, as in RxJava's "xthread" case,
 * range(0, N).subscribeOn(computation(), true).observeOn(single(), false, P)
 * (bench/peers/java/RxObserveOn.java), and in RxTwoHops.java for two hops.
 * The main thread waits on a semaphore, so only the pipeline's threads
 * compete for the cores.
 *
 *   observe_on [--quick] [--n=N] [p16 p128 p256 p1024 2hop_p256 ...]
 * (no case: p16 p128 p256 p1024 2hop_p256)
 * prints: RESULT rill_observe_on_p<P> ... / RESULT rill_observe_on_2hop_p<P> ...
 */
#include "bench.h"

#include <semaphore.h>

typedef struct run {
    rill_scheduler *a, *b, *c;
    uint32_t prefetch;
    int hops;
    uint64_t received, sum;
    int failed;
    sem_t released;
} run;

static void sink_next(void *user, void *item)
{
    run *r = user;
    r->received++;
    r->sum += (uint64_t)(uintptr_t)item;
}

static void sink_error(void *user, const rill_error *e)
{
    ((run *)user)->failed = rill_error_code(e);
}

static void sink_release(void *user)
{
    sem_post(&((run *)user)->released);
}

static const rill_callbacks sink = {
    .on_next = sink_next,   /* on_subscribe NULL: request(RILL_UNBOUNDED) */
    .on_error = sink_error,
    .on_release = sink_release,
};

static uint64_t one_rep(void *ctx, uint64_t n, uint64_t *items)
{
    run *r = ctx;
    r->received = r->sum = 0;
    r->failed = 0;
    uint64_t start = bench_now_ns();
    rill_publisher *p = rill_range(0, n);
    p = rill_subscribe_on(p, r->a);
    p = rill_observe_on(p, r->b, r->prefetch);
    if (r->hops == 2)
        p = rill_observe_on(p, r->c, r->prefetch);
    if (p == NULL)
        bench_fail("observe_on: building the pipeline: errno %d", errno);
    rill_subscribe(p, rill_subscriber_new(&sink, r));
    rill_publisher_unref(p);
    sem_wait(&r->released);
    uint64_t ns = bench_now_ns() - start;
    if (r->failed || r->received != n || r->sum != n * (n - 1) / 2)
        bench_fail("observe_on: %" PRIu64 " of %" PRIu64 " items, sum %" PRIu64 ", error %d",
                   r->received, n, r->sum, r->failed);
    *items = n;
    return ns;
}

static void run_case(run *r, const char *arg)
{
    unsigned prefetch;
    char name[64];
    if (sscanf(arg, "2hop_p%u", &prefetch) == 1) {
        r->hops = 2;
        snprintf(name, sizeof name, "rill_observe_on_2hop_p%u", prefetch);
    } else if (sscanf(arg, "p%u", &prefetch) == 1) {
        r->hops = 1;
        snprintf(name, sizeof name, "rill_observe_on_p%u", prefetch);
    } else {
        bench_fail("observe_on: unknown case '%s' (want p<prefetch> or 2hop_p<prefetch>)", arg);
    }
    if (prefetch == 0)
        bench_fail("observe_on: prefetch must be > 0");
    r->prefetch = prefetch;
    /* The cold rep must end quickly even at prefetch 16 (~0.3 M items/s
     * when every hand-off parks a thread). */
    uint64_t n0 = bench_cfg.quick ? 20000u : 100000u;
    bench_stats st = bench_run(one_rep, r, n0, UINT64_C(1) << 31);
    bench_report(name, &st, "hops=%d prefetch=%u", r->hops, prefetch);
}

int main(int argc, char **argv)
{
    bench_init(&argc, argv);
    static char *defaults[] = { "", "p16", "p128", "p256", "p1024", "2hop_p256", NULL };
    if (argc < 2) {
        argv = defaults;
        argc = 6;
    }
    run r;
    memset(&r, 0, sizeof r);
    sem_init(&r.released, 0, 0);
    r.a = rill_single_thread_new();
    r.b = rill_single_thread_new();
    r.c = rill_single_thread_new();
    if (r.a == NULL || r.b == NULL || r.c == NULL)
        bench_fail("observe_on: no scheduler: errno %d", errno);
    for (int i = 1; i < argc; i++)
        run_case(&r, argv[i]);
    rill_scheduler_unref(r.a);
    rill_scheduler_unref(r.b);
    rill_scheduler_unref(r.c);
    sem_destroy(&r.released);
    return 0;
}
