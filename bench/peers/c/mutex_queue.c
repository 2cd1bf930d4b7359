/* Copied from peerbench (c/mutex_queue.c, the C floors behind
 * ../shared/research/perf-anchors.md) for rill's bench/compare. The workload
 * is unchanged; only this comment was added. */
/* Benchmark 5c: naive bounded blocking queue (pthread mutex + 2 condvars), items handed over one by one.
 * Producer pthread: lock; while full wait(not_full); push; signal(not_empty); unlock   (per item)
 * Consumer (main):  lock; while empty wait(not_empty); pop; signal(not_full); unlock   (per item)
 * Usage: mutex_queue [capacity=256] [N=10000000]                                           */
#include "bench.h"
#include <pthread.h>

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t not_full, not_empty;
    uint64_t *buf, cap, head, tail, count, n;
} q_t;

static void *producer(void *arg) {
    q_t *q = arg;
    for (uint64_t i = 0; i < q->n; i++) {
        pthread_mutex_lock(&q->mu);
        while (q->count == q->cap) pthread_cond_wait(&q->not_full, &q->mu);
        q->buf[q->tail] = i;
        q->tail = (q->tail + 1) % q->cap;
        q->count++;
        pthread_cond_signal(&q->not_empty);
        pthread_mutex_unlock(&q->mu);
    }
    return NULL;
}

static uint64_t rep(void *ctx, uint64_t *items) {
    q_t *q = ctx;
    uint64_t sum = 0;
    pthread_t th;
    q->head = q->tail = q->count = 0;
    uint64_t t0 = now_ns();
    if (pthread_create(&th, NULL, producer, q)) { perror("pthread_create"); exit(1); }
    for (uint64_t got = 0; got < q->n; got++) {
        pthread_mutex_lock(&q->mu);
        while (q->count == 0) pthread_cond_wait(&q->not_empty, &q->mu);
        sum += q->buf[q->head];
        q->head = (q->head + 1) % q->cap;
        q->count--;
        pthread_cond_signal(&q->not_full);
        pthread_mutex_unlock(&q->mu);
    }
    pthread_join(th, NULL);
    uint64_t t1 = now_ns();
    if (sum != q->n * (q->n - 1) / 2) { fprintf(stderr, "bad sum\n"); exit(1); }
    *items = q->n;
    return t1 - t0;
}

int main(int argc, char **argv) {
    static q_t q;
    q.cap = argc > 1 ? strtoull(argv[1], 0, 10) : 256;
    q.n = argc > 2 ? strtoull(argv[2], 0, 10) : 10000000ull;
    q.buf = calloc(q.cap, sizeof(uint64_t));
    pthread_mutex_init(&q.mu, NULL);
    pthread_cond_init(&q.not_full, NULL);
    pthread_cond_init(&q.not_empty, NULL);
    char name[64];
    snprintf(name, sizeof name, "c_mutex_condvar_cap%lu", (unsigned long)q.cap);
    bench(name, 2, 1000000000ull, env_int("REPS", 7), rep, &q);
    return 0;
}
