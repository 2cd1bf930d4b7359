/* bench/backpressure.c — backpressure stages between a fast producer and a
 * slow consumer, with exact drop accounting.
 *
 * The workload is RxBackpressure.java's (bench/peers/java/): a producer
 * thread runs range(0, N) flat out; a consumer thread does WORK (32)
 * dependent 64-bit multiply-adds per item (h = h * K + x), requesting
 * BATCH (256) items up front and again after every 256 it received; a
 * 256-item observe_on hop between them:
 *
 *   range(0, N) -> subscribe_on(A) -> on_backpressure_X
 *               -> observe_on(B, 256) -> on_discard(count) -> slow sink
 *
 * subscribe_on sits above the backpressure stage, so that the consumer's
 * requests reach the stage directly from thread B while the source is busy
 * emitting on A (rill_subscribe_on runs every request through its
 * scheduler, which would queue them behind the whole emission). That is
 * what RxJava's subscribeOn(computation(), requestOn = false) does in the
 * peer program.
 *
 * Cases (X):
 *   buffer1024  on_backpressure_buffer(1024, RILL_OVERFLOW_DROP_OLDEST)
 *   drop        on_backpressure_drop
 *   latest      on_backpressure_latest
 *   error       on_backpressure_buffer(1024, RILL_OVERFLOW_ERROR), with a
 *               counting map after the source: the stream must end with
 *               on_error(EOVERFLOW), and every item the source emitted must
 *               have been delivered or discarded.
 *
 * Reported rate: items DELIVERED to the slow consumer per second. Extras,
 * from the timed rep with the median delivered count: delivered, dropped,
 * offered_per_sec (N / wall time),
 * work_only_per_sec (the consumer's own loop measured without rill: its
 * capacity), ratio = delivered / work_only (target >= 0.5), overload =
 * offered / work_only. Accounting, checked in every rep (exit 1 if not):
 * emitted == delivered + discarded, discarded counted by the discard hook.
 *
 * --work=W replaces the 32 multiply-adds by W (and names the results
 * rill_bp_<case>_w<W>): with W = 320 the consumer is ten times slower, so
 * that the producer's overload is about 10x whatever the producer's speed.
 *
 *   backpressure [--quick] [--n=N] [--work=W] [buffer1024 drop latest error]
 */
#include "bench.h"

#include <semaphore.h>

#define WORK 32
#define BATCH 256
#define PREFETCH 256
#define CAPACITY 1024
#define MAX_REPS 256

static const uint64_t K = UINT64_C(6364136223846793005);

typedef enum { BUFFER, DROP, LATEST, ERROR } strategy;

typedef struct run {
    strategy strat;
    rill_scheduler *a, *b;
    int work;
    /* the slow sink */
    rill_subscription *sub;
    uint64_t h, delivered;
    unsigned got;
    int error, completed;
    sem_t released;
    /* counted elsewhere */
    atomic_uint_fast64_t discarded;   /* the discard hook, any thread */
    uint64_t emitted;                 /* the counting map (error case), thread A */
    /* per rep, for medians; the last st.reps entries are the timed reps */
    int rep;                          /* reps run so far in this case */
    double offered[MAX_REPS], delivered_n[MAX_REPS], dropped_n[MAX_REPS];
} run;

/* ------------------------------------------------------------------ consumer */

static void slow_subscribe(void *user, rill_subscription *s)
{
    run *r = user;
    r->sub = s;
    rill_request(s, BATCH);
}

static void slow_next(void *user, void *item)
{
    run *r = user;
    uint64_t v = (uint64_t)(uintptr_t)item, h = r->h;
    for (int i = 0; i < r->work; i++)
        h = h * K + v;
    r->h = h;
    r->delivered++;
    if (++r->got == BATCH) {
        r->got = 0;
        rill_request(r->sub, BATCH);
    }
}

static void slow_error(void *user, const rill_error *e)
{
    ((run *)user)->error = rill_error_code(e);
}

static void slow_complete(void *user)
{
    ((run *)user)->completed = 1;
}

static void slow_release(void *user)
{
    sem_post(&((run *)user)->released);
}

static const rill_callbacks slow_sink = {
    .on_subscribe = slow_subscribe,
    .on_next = slow_next,
    .on_error = slow_error,
    .on_complete = slow_complete,
    .on_release = slow_release,
};

static void count_discard(void *ctx, void *item)
{
    atomic_fetch_add_explicit(&((run *)ctx)->discarded, 1, memory_order_relaxed);
}

static int count_emitted(void *ctx, void *in, void **out)
{
    ((run *)ctx)->emitted++;
    *out = in;
    return 0;
}

/* The consumer's capacity without rill: the same loop over n items, best
 * of 10 after 5 warm-up passes (as RxBackpressure.workOnly). */
static double work_only(int work, uint64_t n)
{
    uint64_t best = UINT64_MAX, h = 1;
    for (int pass = 0; pass < 15; pass++) {
        uint64_t t0 = bench_now_ns();
        for (uint64_t j = 0; j < n; j++)
            for (int i = 0; i < work; i++)
                h = h * K + j;
        uint64_t ns = bench_now_ns() - t0;
        BENCH_LAUNDER(h);
        if (pass >= 5 && ns < best)
            best = ns;
    }
    return bench_rate(n, best);
}

/* Waits until every task queued on the single-thread scheduler s so far
 * has run: the source's emission runs as one task on A, so after this the
 * counting map and any late discard on A are done. */
typedef struct barrier_task {
    rill_task task;
    sem_t done;
} barrier_task;

static void barrier_run(rill_task *t, int status)
{
    sem_post(&((barrier_task *)t)->done);
}

static void quiesce(rill_scheduler *s)
{
    /* static: the scheduler thread may still be returning from the task
     * (and from sem_post) when sem_wait returns here. */
    static barrier_task b = { .task = { .run = barrier_run } };
    static int ready;
    if (!ready) {
        sem_init(&b.done, 0, 0);
        ready = 1;
    }
    rill_worker *w = rill_worker_new(s);
    if (w == NULL || rill_schedule(w, &b.task) != 0)
        bench_fail("backpressure: cannot schedule on the producer thread");
    sem_wait(&b.done);
    rill_worker_free(w);
}

/* ------------------------------------------------------------------ one rep */

static rill_publisher *build(run *r, uint64_t n)
{
    rill_publisher *p = rill_range(0, n);
    if (r->strat == ERROR)
        p = rill_map(p, count_emitted, r);
    p = rill_subscribe_on(p, r->a);
    switch (r->strat) {
    case BUFFER: p = rill_on_backpressure_buffer(p, CAPACITY, RILL_OVERFLOW_DROP_OLDEST); break;
    case DROP:   p = rill_on_backpressure_drop(p); break;
    case LATEST: p = rill_on_backpressure_latest(p); break;
    case ERROR:  p = rill_on_backpressure_buffer(p, CAPACITY, RILL_OVERFLOW_ERROR); break;
    }
    p = rill_observe_on(p, r->b, PREFETCH);
    return rill_on_discard(p, count_discard, r);
}

static uint64_t one_rep(void *ctx, uint64_t n, uint64_t *items)
{
    run *r = ctx;
    r->sub = NULL;
    r->h = r->delivered = 0;
    r->got = 0;
    r->error = r->completed = 0;
    r->emitted = 0;
    atomic_store(&r->discarded, 0);
    rill_publisher *p = build(r, n);
    if (p == NULL)
        bench_fail("backpressure: building the pipeline: errno %d", errno);
    uint64_t t0 = bench_now_ns();
    rill_subscribe(p, rill_subscriber_new(&slow_sink, r));
    sem_wait(&r->released);
    uint64_t ns = bench_now_ns() - t0;
    rill_publisher_unref(p);

    /* Items in flight when a stage cancelled may still reach the discard
     * hook after the sink's release: wait for the producer thread to be
     * done with this rep before reading the counts. (Not timed.) */
    quiesce(r->a);
    uint64_t discarded = atomic_load(&r->discarded);
    uint64_t emitted = r->strat == ERROR ? r->emitted : n;
    if (r->strat == ERROR) {
        if (r->error != EOVERFLOW || r->completed)
            bench_fail("rill_bp_error: ended with error %d, completed %d; expected EOVERFLOW",
                       r->error, r->completed);
    } else if (r->error || !r->completed) {
        bench_fail("backpressure: ended with error %d, completed %d", r->error, r->completed);
    }
    if (emitted != r->delivered + discarded)
        bench_fail("backpressure: accounting: emitted %" PRIu64 " != delivered %" PRIu64
                   " + discarded %" PRIu64, emitted, r->delivered, discarded);
    int slot = r->rep++ % MAX_REPS;   /* a ring: the last MAX_REPS reps */
    r->offered[slot] = bench_rate(emitted, ns);
    r->delivered_n[slot] = (double)r->delivered;
    r->dropped_n[slot] = (double)discarded;
    *items = r->delivered;
    return ns;
}

/* Of the last k reps, the one whose delivered count is the median: its
 * delivered, dropped and offered figures go into the RESULT line together,
 * so that they add up. */
static int median_rep(const run *r, int k)
{
    int idx[MAX_REPS], n = 0;
    if (k > MAX_REPS)
        k = MAX_REPS;
    if (k > r->rep)
        k = r->rep;
    for (int i = r->rep - k; i < r->rep; i++)
        idx[n++] = i % MAX_REPS;
    for (int i = 1; i < n; i++)            /* insertion sort by delivered */
        for (int j = i; j > 0 && r->delivered_n[idx[j]] < r->delivered_n[idx[j - 1]]; j--) {
            int t = idx[j];
            idx[j] = idx[j - 1];
            idx[j - 1] = t;
        }
    return n ? idx[(n - 1) / 2] : 0;
}

static void run_case(run *r, const char *name, strategy strat, double capacity)
{
    r->strat = strat;
    r->rep = 0;
    uint64_t n0 = bench_cfg.quick ? 200000u : 5000000u;
    /* ERROR ends at the first overflow, whatever N: keep N fixed (as the
     * peer's 1e7) so that a producer that never overflows still ends. */
    uint64_t n_max = strat == ERROR ? (bench_cfg.quick ? 1000000u : 10000000u) : UINT64_C(1) << 32;
    if (strat == ERROR)
        n0 = n_max;
    bench_stats st = bench_run(one_rep, r, n0, n_max);
    /* bench_run ran one more (untimed) rep at n/4 after the timed ones. */
    r->rep--;
    int m = median_rep(r, st.reps);
    double offered = r->offered[m], delivered = r->delivered_n[m], dropped = r->dropped_n[m];
    if (strat == ERROR)
        bench_report(name, &st,
                     "delivered=%.0f discarded=%.0f eoverflow_reps=%d/%d accounting=exact "
                     "work_only_per_sec=%.0f",
                     delivered, dropped, st.reps, st.reps, capacity);
    else
        bench_report(name, &st,
                     "delivered=%.0f dropped=%.0f offered_per_sec=%.0f work_only_per_sec=%.0f "
                     "ratio=%.3f overload=%.2f accounting=exact",
                     delivered, dropped, offered, capacity, st.median / capacity, offered / capacity);
}

int main(int argc, char **argv)
{
    bench_init(&argc, argv);
    int work = WORK;
    int out = 1;
    for (int i = 1; i < argc; i++) {   /* --work=W: another consumer cost */
        if (strncmp(argv[i], "--work=", 7) == 0)
            work = atoi(argv[i] + 7);
        else
            argv[out++] = argv[i];
    }
    argc = out;
    argv[argc] = NULL;
    if (work < 1)
        bench_fail("backpressure: --work must be >= 1");
    run r;
    memset(&r, 0, sizeof r);
    sem_init(&r.released, 0, 0);
    r.work = work;
    BENCH_LAUNDER(r.work);   /* keep the consumer loop a real loop */
    r.a = rill_single_thread_new();
    r.b = rill_single_thread_new();
    if (r.a == NULL || r.b == NULL)
        bench_fail("backpressure: no scheduler: errno %d", errno);

    /* 2e6 items at 32 multiply-adds (~1 s in all); fewer for more work. */
    uint64_t wn = (bench_cfg.quick ? 200000u : 2000000u) * WORK / (uint64_t)work;
    double capacity = work_only(r.work, wn ? wn : 1);
    printf("RESULT c_work_only%s %.0f work=%d rss_kb=%ld\n", work == WORK ? "" : "_w", capacity,
           r.work, bench_rss_kb());

    static const struct { const char *arg, *name; strategy strat; } cases[] = {
        { "buffer1024", "rill_bp_buffer1024", BUFFER },
        { "drop", "rill_bp_drop", DROP },
        { "latest", "rill_bp_latest", LATEST },
        { "error", "rill_bp_error", ERROR },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        if (!bench_selected(argc, argv, cases[i].arg))
            continue;
        char name[64];
        if (work == WORK)
            snprintf(name, sizeof name, "%s", cases[i].name);
        else
            snprintf(name, sizeof name, "%s_w%d", cases[i].name, work);
        run_case(&r, name, cases[i].strat, capacity);
    }

    rill_scheduler_unref(r.a);
    rill_scheduler_unref(r.b);
    sem_destroy(&r.released);
    return 0;
}
