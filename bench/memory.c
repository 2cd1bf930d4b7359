/* bench/memory.c — memory per stage, and the CPU an idle pipeline burns.
 *
 * stages: for each stage S, through the counting allocator (bench.h):
 *   pub_bytes  what rill allocates to construct S on top of a source that
 *              stays quiet (interval(1 h));
 *   sub_bytes  what subscribing source -> S allocates beyond subscribing
 *              the source alone (the subscription state of S: its rings, its
 *              workers, its hooks), measured once the pipeline has settled
 *              (asynchronous stages allocate on their scheduler's thread);
 *   sub_allocs the number of allocations behind sub_bytes.
 * The subscriber requests nothing (observe_on still prefetches upstream).
 * After the cancel every byte must be freed (checked: exit 1 if not).
 *   RESULT rill_mem_<stage> <sub_bytes> unit=bytes pub_bytes= sub_allocs=
 *
 * idle: a subscribed pipeline that has nothing to do must cost ~0% CPU.
 *   stalled  range -> subscribe_on(A) -> observe_on(B, 256) -> sink that
 *            requested 100 000 items, took them and requests no more: the
 *            pipeline waits mid-stream with a full ring;
 *   timer    interval(1 h, A) -> observe_on(B, 256) -> sink (unbounded):
 *            waiting for a tick;
 *   emitter  rill_emitter -> observe_on(B, 256) -> sink (unbounded), with
 *            nothing emitted: a telemetry pipeline waiting for input.
 * After a 100 ms grace (a scheduler may spin briefly before it parks) the
 * process's CPU time (getrusage: user + system, all threads) is measured
 * over 1 s (quick: 0.2 s):
 *   RESULT rill_idle_cpu_<case> <percent of one core> unit=pct_cpu
 *
 *   memory [--quick] [stages] [idle]          (no case: both)
 */
#include "bench.h"

#include <semaphore.h>

/* ------------------------------------------------------------------ a holder */

typedef struct holder {
    rill_subscription *sub;
    uint64_t received, stop_after;   /* stop_after 0: never request */
    int terminated;
    sem_t released;
} holder;

static void hold_subscribe(void *user, rill_subscription *s)
{
    holder *h = user;
    h->sub = s;
    if (h->stop_after)
        rill_request(s, h->stop_after);
}

static void hold_next(void *user, void *item)
{
    /* atomic: the main thread polls it while the sink runs on B */
    __atomic_fetch_add(&((holder *)user)->received, 1, __ATOMIC_RELEASE);
}

static void hold_error(void *user, const rill_error *e)
{
    ((holder *)user)->terminated = rill_error_code(e);
}

static void hold_complete(void *user)
{
    ((holder *)user)->terminated = -1;
}

static void hold_release(void *user)
{
    sem_post(&((holder *)user)->released);
}

static const rill_callbacks hold_cb = {
    .on_subscribe = hold_subscribe,
    .on_next = hold_next,
    .on_error = hold_error,
    .on_complete = hold_complete,
    .on_release = hold_release,
};

static void sleep_ms(unsigned ms)
{
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) != 0)
        ;
}

/* Waits until the live byte count has stayed put for 20 ms (at most 2 s):
 * asynchronous stages allocate and free on their schedulers' threads. */
static int64_t settled_live(void)
{
    int64_t last = bench_live();
    for (int stable = 0, i = 0; stable < 4 && i < 400; i++) {
        sleep_ms(5);
        int64_t now = bench_live();
        stable = now == last ? stable + 1 : 0;
        last = now;
    }
    return last;
}

/* ------------------------------------------------------------------ stages */

typedef rill_publisher *(*stage_fn)(rill_publisher *up, void *arg);

static int map_id(void *ctx, void *in, void **out)
{
    *out = in;
    return 0;
}

static int pred_all(void *ctx, void *item)
{
    return 1;
}

static void discard_none(void *ctx, void *item)
{
}

static rill_scheduler *sched_a, *sched_b;

/* The source under every stage: subscribed, it emits nothing for an hour
 * (a range would run synchronously into stages that request unbounded). */
static rill_publisher *quiet_source(void)
{
    return rill_interval(UINT64_C(3600) * 1000000000u, sched_a);
}

static rill_publisher *st_none(rill_publisher *up, void *arg) { return up; }
static rill_publisher *st_map(rill_publisher *up, void *arg) { return rill_map(up, map_id, NULL); }
static rill_publisher *st_filter(rill_publisher *up, void *arg) { return rill_filter(up, pred_all, NULL); }
static rill_publisher *st_take(rill_publisher *up, void *arg) { return rill_take(up, UINT64_C(1) << 40); }
static rill_publisher *st_on_discard(rill_publisher *up, void *arg)
{
    return rill_on_discard(up, discard_none, NULL);
}
static rill_publisher *st_probe(rill_publisher *up, void *arg) { return rill_probe(up, arg); }
static rill_publisher *st_limit_rate(rill_publisher *up, void *arg)
{
    return rill_limit_rate(up, 256, 192);
}
static rill_publisher *st_subscribe_on(rill_publisher *up, void *arg)
{
    return rill_subscribe_on(up, sched_a);
}
static rill_publisher *st_observe_on(rill_publisher *up, void *arg)
{
    return rill_observe_on(up, sched_b, (uint32_t)(uintptr_t)arg);
}
static rill_publisher *st_buffer(rill_publisher *up, void *arg)
{
    return rill_on_backpressure_buffer(up, (size_t)(uintptr_t)arg, RILL_OVERFLOW_DROP_OLDEST);
}
static rill_publisher *st_latest(rill_publisher *up, void *arg) { return rill_on_backpressure_latest(up); }
static rill_publisher *st_drop(rill_publisher *up, void *arg) { return rill_on_backpressure_drop(up); }

typedef struct measure {
    int64_t pub_bytes, sub_bytes;
    uint64_t sub_allocs;
} measure;

/* Builds range -> stage, subscribes a holder, measures, cancels, and checks
 * that everything was freed. */
static measure measure_chain(stage_fn stage, void *arg)
{
    measure m;
    holder h;
    memset(&h, 0, sizeof h);
    sem_init(&h.released, 0, 0);
    int64_t live0 = settled_live();
    rill_publisher *p = quiet_source();
    int64_t live1 = bench_live();
    p = stage(p, arg);
    if (p == NULL)
        bench_fail("memory: building a stage: errno %d", errno);
    m.pub_bytes = bench_live() - live1;

    int64_t before = bench_live();
    uint64_t allocs = bench_allocs();
    rill_subscribe(p, rill_subscriber_new(&hold_cb, &h));
    m.sub_bytes = settled_live() - before;
    m.sub_allocs = bench_allocs() - allocs;

    if (h.sub == NULL)
        bench_fail("memory: no on_subscribe");
    rill_cancel(h.sub);
    sem_wait(&h.released);
    rill_publisher_unref(p);
    int64_t left = settled_live() - live0;
    if (left != 0)
        bench_fail("memory: %" PRId64 " bytes still allocated after cancel and unref", left);
    sem_destroy(&h.released);
    return m;
}

static void run_stages(void)
{
    rill_metrics *metrics = rill_metrics_new("bench");
    if (metrics == NULL)
        bench_fail("memory: rill_metrics_new: errno %d", errno);
    static const struct {
        const char *name;
        stage_fn fn;
        uintptr_t arg;
    } stages[] = {
        { "map", st_map, 0 },
        { "filter", st_filter, 0 },
        { "take", st_take, 0 },
        { "on_discard", st_on_discard, 0 },
        { "probe", st_probe, 0 },
        { "limit_rate", st_limit_rate, 0 },
        { "subscribe_on", st_subscribe_on, 0 },
        { "observe_on_p16", st_observe_on, 16 },
        { "observe_on_p256", st_observe_on, 256 },
        { "observe_on_p1024", st_observe_on, 1024 },
        { "bp_buffer1024", st_buffer, 1024 },
        { "bp_latest", st_latest, 0 },
        { "bp_drop", st_drop, 0 },
    };
    measure base = measure_chain(st_none, NULL);
    bench_report_value("rill_mem_interval", (double)base.sub_bytes, "bytes",
                       "pub_bytes=%" PRId64 " sub_allocs=%" PRIu64 " source=1",
                       base.pub_bytes, base.sub_allocs);
    for (size_t i = 0; i < sizeof stages / sizeof *stages; i++) {
        void *arg = stages[i].fn == st_probe ? (void *)metrics : (void *)stages[i].arg;
        measure m = measure_chain(stages[i].fn, arg);
        char name[64];
        snprintf(name, sizeof name, "rill_mem_%s", stages[i].name);
        bench_report_value(name, (double)(m.sub_bytes - base.sub_bytes), "bytes",
                           "pub_bytes=%" PRId64 " sub_allocs=%" PRIu64, m.pub_bytes,
                           m.sub_allocs > base.sub_allocs ? m.sub_allocs - base.sub_allocs : 0);
    }
    rill_metrics_unref(metrics);
}

/* ------------------------------------------------------------------ idle */

static void idle_measure(const char *name, rill_publisher *p, uint64_t stop_after)
{
    holder h;
    memset(&h, 0, sizeof h);
    h.stop_after = stop_after;
    sem_init(&h.released, 0, 0);
    if (p == NULL)
        bench_fail("memory: building the idle pipeline: errno %d", errno);
    rill_subscribe(p, rill_subscriber_new(&hold_cb, &h));
    /* Wait for the requested items (stalled): polled, the sink runs on B. */
    int bounded = stop_after != 0 && stop_after != RILL_UNBOUNDED;
    for (int i = 0; i < 2000 && bounded
                    && __atomic_load_n(&h.received, __ATOMIC_ACQUIRE) < stop_after; i++)
        sleep_ms(5);
    sleep_ms(100);
    unsigned ms = bench_cfg.quick ? 200 : 1000;
    uint64_t cpu0 = bench_cpu_ns(), t0 = bench_now_ns();
    sleep_ms(ms);
    uint64_t cpu = bench_cpu_ns() - cpu0, wall = bench_now_ns() - t0;
    rill_cancel(h.sub);
    sem_wait(&h.released);
    rill_publisher_unref(p);
    if (bounded && h.received != stop_after)
        bench_fail("memory: %s: received %" PRIu64 " of %" PRIu64, name, h.received, stop_after);
    bench_report_value(name, 100.0 * (double)cpu / (double)wall, "pct_cpu",
                       "cpu_ns=%" PRIu64 " wall_ns=%" PRIu64, cpu, wall);
    sem_destroy(&h.released);
}

static void run_idle(void)
{
    rill_publisher *p = rill_range(0, UINT64_C(1) << 40);
    p = rill_subscribe_on(p, sched_a);
    p = rill_observe_on(p, sched_b, 256);
    idle_measure("rill_idle_cpu_stalled", p, 100000);

    p = quiet_source();
    p = rill_observe_on(p, sched_b, 256);
    idle_measure("rill_idle_cpu_timer", p, RILL_UNBOUNDED);

#ifdef RILL_EMITTER_OPTIONS_VERSION
    rill_emitter_options o = {
        .version = RILL_EMITTER_OPTIONS_VERSION, .capacity = 1024, .policy = RILL_EMIT_BLOCK,
    };
    rill_emitter *e = NULL;
    p = rill_emitter_new(&o, &e);
    p = rill_observe_on(p, sched_b, 256);
    idle_measure("rill_idle_cpu_emitter", p, RILL_UNBOUNDED);
    rill_emitter_unref(e);
#endif
}

int main(int argc, char **argv)
{
    bench_init(&argc, argv);
    sched_a = rill_single_thread_new();
    sched_b = rill_single_thread_new();
    if (sched_a == NULL || sched_b == NULL)
        bench_fail("memory: no scheduler: errno %d", errno);
    if (bench_selected(argc, argv, "stages"))
        run_stages();
    if (bench_selected(argc, argv, "idle"))
        run_idle();
    rill_scheduler_unref(sched_a);
    rill_scheduler_unref(sched_b);
    return 0;
}
