/* bench/emit.c — rill_emit (the push source) from 1 and 4 producer threads.
 *
 *   t<T>         T producer threads call rill_emit in a loop (N items in all)
 *                into rill_emitter_new(capacity 1024, RILL_EMIT_BLOCK)
 *                -> observe_on(single thread B, 256) -> sink
 *   t<T>_direct  the same without observe_on: the sink runs inside
 *                rill_emit, on whichever producer drains the emitter
 *
 * The sink requests RILL_UNBOUNDED and counts and sums the items (checked).
 * t1 is the counterpart of SubPub.java (bench/peers/java): one thread
 * submitting into the JDK's SubmissionPublisher, a consumer on another
 * thread. Rate: items emitted per second, from the first emit to the sink's
 * release (after rill_emitter_complete).
 *
 *   emit [--quick] [--n=N] [t1 t4 t1_direct t4_direct ...]
 * (no case: t1 t4 t1_direct t4_direct)
 *
 * The emitter (include/rill/emitter.h, DESIGN.md "Contract, part 2") was
 * being written alongside this program: until its header declares the API,
 * this program prints a SKIP line and exits 0.
 */
#include "bench.h"

#ifdef RILL_EMITTER_OPTIONS_VERSION

#include <pthread.h>
#include <semaphore.h>

#define MAX_THREADS 64

typedef struct run {
    rill_scheduler *b;
    int threads, direct;
    rill_emitter *e;
    uint64_t per_thread;
    pthread_barrier_t start;
    atomic_int emit_failed;
    /* the sink: one signal at a time, any thread */
    uint64_t received, sum;
    int error, completed;
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

static void *producer(void *arg)
{
    run *r = arg;
    pthread_barrier_wait(&r->start);
    for (uint64_t i = 1; i <= r->per_thread; i++) {
        int rc = rill_emit(r->e, (void *)(uintptr_t)i);
        if (rc != 0 && rc != RILL_EMIT_PAUSED) {
            atomic_store(&r->emit_failed, rc);
            break;
        }
    }
    return NULL;
}

static uint64_t one_rep(void *ctx, uint64_t n, uint64_t *items)
{
    run *r = ctx;
    pthread_t th[MAX_THREADS];
    r->per_thread = n / (uint64_t)r->threads;
    r->received = r->sum = 0;
    r->error = r->completed = 0;
    atomic_store(&r->emit_failed, 0);

    rill_emitter_options o = {
        .version = RILL_EMITTER_OPTIONS_VERSION,
        .capacity = 1024,
        .policy = RILL_EMIT_BLOCK,
    };
    rill_publisher *p = rill_emitter_new(&o, &r->e);
    if (p != NULL && !r->direct)
        p = rill_observe_on(p, r->b, 256);
    if (p == NULL)
        bench_fail("emit: building the pipeline: errno %d", errno);
    rill_subscribe(p, rill_subscriber_new(&sink, r));
    rill_publisher_unref(p);

    pthread_barrier_init(&r->start, NULL, (unsigned)r->threads + 1);
    for (int i = 0; i < r->threads; i++)
        if (pthread_create(&th[i], NULL, producer, r) != 0)
            bench_fail("emit: pthread_create");
    /* The clock starts before main reaches the barrier: no producer can
     * start earlier, while main may be descheduled right after it. */
    uint64_t t0 = bench_now_ns();
    pthread_barrier_wait(&r->start);
    for (int i = 0; i < r->threads; i++)
        pthread_join(th[i], NULL);
    rill_emitter_complete(r->e);
    rill_emitter_unref(r->e);
    sem_wait(&r->released);
    uint64_t ns = bench_now_ns() - t0;
    pthread_barrier_destroy(&r->start);

    uint64_t total = r->per_thread * (uint64_t)r->threads;
    uint64_t want = (uint64_t)r->threads * (r->per_thread * (r->per_thread + 1) / 2);
    if (atomic_load(&r->emit_failed) || r->error || !r->completed || r->received != total
        || r->sum != want)
        bench_fail("emit: rill_emit returned %d; %" PRIu64 " of %" PRIu64
                   " items, sum %" PRIu64 " (want %" PRIu64 "), error %d",
                   atomic_load(&r->emit_failed), r->received, total, r->sum, want, r->error);
    *items = total;
    return ns;
}

static void run_case(run *r, const char *arg)
{
    int threads = 0, used = 0;
    if (sscanf(arg, "t%d%n", &threads, &used) != 1 || threads < 1 || threads > MAX_THREADS
        || (arg[used] != '\0' && strcmp(arg + used, "_direct") != 0))
        bench_fail("emit: unknown case '%s' (want t<threads> or t<threads>_direct)", arg);
    r->threads = threads;
    r->direct = arg[used] != '\0';
    char name[64];
    snprintf(name, sizeof name, "rill_emit_t%d%s", threads, r->direct ? "_direct" : "");
    bench_stats st = bench_run(one_rep, r, bench_cfg.quick ? 40000u : 200000u, UINT64_C(1) << 31);
    bench_report(name, &st, "threads=%d hop=%d", threads, !r->direct);
}

int main(int argc, char **argv)
{
    bench_init(&argc, argv);
    static char *defaults[] = { "", "t1", "t4", "t1_direct", "t4_direct", NULL };
    if (argc < 2) {
        argv = defaults;
        argc = 5;
    }
    run r;
    memset(&r, 0, sizeof r);
    sem_init(&r.released, 0, 0);
    r.b = rill_single_thread_new();
    if (r.b == NULL)
        bench_fail("emit: no scheduler: errno %d", errno);
    for (int i = 1; i < argc; i++)
        run_case(&r, argv[i]);
    rill_scheduler_unref(r.b);
    sem_destroy(&r.released);
    return 0;
}

#else /* no emitter API yet */

int main(int argc, char **argv)
{
    bench_init(&argc, argv);
    printf("SKIP rill_emit: include/rill/emitter.h does not declare the emitter yet\n");
    return 0;
}

#endif
