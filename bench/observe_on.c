/* bench/observe_on.c — one observe_on hop across a real thread boundary.
 *
 *   range(0, N) -> subscribe_on(single thread A) -> observe_on(single thread B,
 *   prefetch) -> sink (request RILL_UNBOUNDED)
 *
 * The source emits on thread A, the sink runs on thread B: every item crosses
 * between cores through observe_on's ring, as in RxJava's "xthread" case
 * (subscribeOn(computation) + observeOn(single)). The main thread waits on a
 * semaphore, so only the two pipeline threads compete for the two cores.
 *
 *   bench/observe_on [N] [prefetch...]     default: 2e7, prefetch 16 128 256 1024
 * prints: RESULT rill_observe_on_p<prefetch> <items/s> ...
 */
#include "bench.h"

#include <rill.h>

#include <semaphore.h>
#include <string.h>

typedef struct run {
    rill_scheduler *producer, *consumer;
    uint64_t n;
    uint32_t prefetch;
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

static uint64_t one_rep(void *ctx, uint64_t *items)
{
    run *r = ctx;
    r->received = r->sum = 0;
    uint64_t start = bench_now_ns();
    rill_publisher *p = rill_range(0, r->n);
    p = rill_subscribe_on(p, r->producer);
    p = rill_observe_on(p, r->consumer, r->prefetch);
    rill_subscribe(p, rill_subscriber_new(&sink, r));
    rill_publisher_unref(p);
    sem_wait(&r->released);
    uint64_t ns = bench_now_ns() - start;
    uint64_t want = r->n * (r->n - 1) / 2;
    if (r->failed || r->received != r->n || r->sum != want) {
        fprintf(stderr, "observe_on bench: wrong result (%llu items, error %d)\n",
                (unsigned long long)r->received, r->failed);
        exit(1);
    }
    *items = r->n;
    return ns;
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? (uint64_t)strtod(argv[1], NULL) : 20000000u;
    static const uint32_t defaults[] = { 16, 128, 256, 1024 };
    run r;
    memset(&r, 0, sizeof r);
    sem_init(&r.released, 0, 0);
    r.producer = rill_single_thread_new();
    r.consumer = rill_single_thread_new();
    r.n = n;
    int count = argc > 2 ? argc - 2 : (int)(sizeof defaults / sizeof *defaults);
    for (int i = 0; i < count; i++) {
        r.prefetch = argc > 2 ? (uint32_t)atoi(argv[i + 2]) : defaults[i];
        char name[64];
        snprintf(name, sizeof name, "rill_observe_on_p%u", r.prefetch);
        bench_run(name, one_rep, &r);
    }
    rill_scheduler_unref(r.producer);
    rill_scheduler_unref(r.consumer);
    sem_destroy(&r.released);
    return 0;
}
