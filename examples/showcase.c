/* examples/showcase.c — backpressure you can see.
 *
 * A telemetry-flavoured pipeline:
 *
 *   generate (1,000,000 sensor readings)
 *     -> map      (raw units to tenths of a degree)
 *     -> filter   (drop readings below a threshold)
 *     -> on_discard (count what the filter dropped)
 *     -> take     (the first 250,000 readings that pass)
 *     -> a consumer that asks for 64 readings at a time
 *
 * Nothing is pushed that was not asked for: the source produces a reading only
 * when the demand of the consumer, passed up through take and filter, reaches
 * it. So the source stops as soon as take has what it needs, and every reading
 * it produced is either delivered or reported to the discard hook.
 *
 * Part two is the case rill exists for: producers that are handed data (two
 * threads, as fast as they can) and a slow consumer on a thread of its own.
 *
 *   2 producer threads -> rill_emit -> emitter (a queue of 256, watermarks
 *     192 / 64) -> observe_on (the consumer's thread, prefetch 32)
 *     -> a consumer doing slow work per reading
 *
 * The producers pause when rill_emit says RILL_EMIT_PAUSED and resume on
 * on_writable, so nothing is dropped and the queue never holds more than its
 * capacity; then the same run with producers that never pause and a
 * drop-oldest queue: the excess is evicted and counted, never lost silently.
 * Each run ends with the emitter's metrics as Prometheus text.
 */
#include <rill.h>

#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    READINGS = 1000000,   /* what the source could produce */
    WANTED = 250000,      /* what take lets through */
    BATCH = 64,           /* what the consumer requests at a time */
    THRESHOLD = 2500,     /* filter: keep readings >= 250.0 */
    TRACED = 5            /* batches shown in the trace */
};

/* The source: a deterministic pseudo-random sensor (xorshift32). */
struct sensor {
    uint32_t seed;
    uint64_t generated;   /* readings pulled out of the source */
};

static int sensor_read(void *state, void **item)
{
    struct sensor *s = state;
    s->seed ^= s->seed << 13;
    s->seed ^= s->seed >> 17;
    s->seed ^= s->seed << 5;
    *item = (void *)(intptr_t)(s->seed % 1000);   /* raw units: 0..999 */
    return ++s->generated == READINGS ? RILL_GENERATE_LAST : RILL_GENERATE_NEXT;
}

static int scale(void *ctx, void *in, void **out)
{
    *out = (void *)((intptr_t)in * 10);           /* tenths of a degree */
    return 0;
}

static int above_threshold(void *ctx, void *item)
{
    return (intptr_t)item >= THRESHOLD;
}

static void count_discard(void *ctx, void *item)
{
    ++*(uint64_t *)ctx;
}

/* The consumer: requests BATCH readings, and the next BATCH only once the
 * previous batch has been consumed, from inside on_next. */
struct consumer {
    rill_subscription *sub;
    const struct sensor *sensor;      /* read-only, for the trace */
    const uint64_t *discarded;
    uint64_t requests, requested, delivered, in_batch, batches;
    uint64_t gen_mark, disc_mark;     /* counters when the batch was requested */
    intptr_t max;
    int completed, failed, released;
};

static void consumer_request(struct consumer *c)
{
    c->gen_mark = c->sensor->generated;
    c->disc_mark = *c->discarded;
    c->requests++;
    c->requested += BATCH;
    rill_request(c->sub, BATCH);
}

static void trace_batch(struct consumer *c)
{
    if (++c->batches > TRACED)
        return;
    printf("  request(%d) -> %" PRIu64 " delivered  (source pulled %" PRIu64
           ", filter dropped %" PRIu64 ")\n", BATCH, c->in_batch,
           c->sensor->generated - c->gen_mark, *c->discarded - c->disc_mark);
    if (c->batches == TRACED)
        printf("  ...\n");
}

static void on_subscribe(void *user, rill_subscription *s)
{
    struct consumer *c = user;
    c->sub = s;
    consumer_request(c);
}

static void on_next(void *user, void *item)
{
    struct consumer *c = user;
    intptr_t reading = (intptr_t)item;
    if (reading > c->max)
        c->max = reading;
    c->delivered++;
    if (++c->in_batch == BATCH) {
        trace_batch(c);
        c->in_batch = 0;
        consumer_request(c);    /* re-entrant: served after this on_next returns */
    }
}

static void on_error(void *user, const rill_error *e)
{
    struct consumer *c = user;
    fprintf(stderr, "showcase: stream failed: %s\n", rill_error_message(e));
    c->failed = 1;
}

static void on_complete(void *user)
{
    struct consumer *c = user;
    if (c->in_batch > 0)        /* the last, partial batch */
        printf("  request(%d) -> %" PRIu64 " delivered, then on_complete\n", BATCH, c->in_batch);
    c->completed = 1;
}

static void on_release(void *user)
{
    ((struct consumer *)user)->released = 1;
}

static int report(const struct sensor *sensor, uint64_t discarded, const struct consumer *c)
{
    int conserved = sensor->generated == c->delivered + discarded;
    int early = sensor->generated < READINGS;
    printf("\n  %-36s %10" PRIu64 "\n", "generated (pulled from the source)", sensor->generated);
    printf("  %-36s %10" PRIu64 "  in %" PRIu64 " request calls\n",
           "requested by the consumer", c->requested, c->requests);
    printf("  %-36s %10" PRIu64 "  (max reading %.1f)\n", "delivered to the consumer",
           c->delivered, c->max / 10.0);
    printf("  %-36s %10" PRIu64 "\n", "discarded by the filter (hook)", discarded);
    printf("  %-36s %10s  %" PRIu64 " = %" PRIu64 " + %" PRIu64 "\n",
           "generated = delivered + discarded", conserved ? "OK" : "MISMATCH",
           sensor->generated, c->delivered, discarded);
    printf("  %-36s %10s  %" PRIu64 " of %d readings pulled\n", "source stopped when take was done",
           early ? "OK" : "NO", sensor->generated, READINGS);
    return conserved && early && c->delivered == WANTED && c->completed && c->released
           && !c->failed;
}

/* ------------------------------------------------------------------------
 * Part two: push sources, a slow consumer on its own thread, watermarks. */

enum {
    PER_PRODUCER = 100000,   /* readings each producer thread emits */
    PRODUCERS = 2,
    QUEUE = 256,             /* the emitter's capacity */
    HIGH = 192, LOW = 64,    /* watermarks: pause at 192, resume at 64 */
    PREFETCH = 32,           /* observe_on's ring */
    WORK = 400               /* the consumer's slow work per reading */
};

/* The producers' side: a gate that on_writable opens. */
struct gate {
    rill_emitter *em;
    int polite;                  /* 1: wait while paused; 0: never wait */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t writable_calls;
    uint64_t accepted[PRODUCERS], refused[PRODUCERS];
};

static void on_writable(void *ctx)
{
    struct gate *g = ctx;
    pthread_mutex_lock(&g->mu);
    g->writable_calls++;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

struct producer {
    struct gate *g;
    int id;
};

static void *produce(void *arg)
{
    struct producer *p = arg;
    struct gate *g = p->g;
    for (intptr_t i = 0; i < PER_PRODUCER; i++) {
        int rc = rill_emit(g->em, (void *)(i * PRODUCERS + p->id));
        if (rc == 0 || rc == RILL_EMIT_PAUSED)
            g->accepted[p->id]++;
        else
            g->refused[p->id]++;
        if (rc == RILL_EMIT_PAUSED && g->polite) {
            /* The documented way to wait: re-check under the lock that
             * on_writable takes, so its call cannot slip past. */
            pthread_mutex_lock(&g->mu);
            while (rill_emitter_paused(g->em))
                pthread_cond_wait(&g->cv, &g->mu);
            pthread_mutex_unlock(&g->mu);
        }
    }
    return NULL;
}

/* The consumer, on the observe_on thread: slow work, PREFETCH at a time. */
struct slow {
    rill_subscription *sub;
    uint64_t delivered, hash, discarded;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int ended;
};

static void slow_subscribe(void *user, rill_subscription *s)
{
    ((struct slow *)user)->sub = s;
    rill_request(s, RILL_UNBOUNDED);   /* observe_on turns this into batches of its prefetch */
}

static void slow_next(void *user, void *item)
{
    struct slow *c = user;
    uint64_t h = c->hash;
    for (int i = 0; i < WORK; i++)
        h = h * 6364136223846793005u + (uint64_t)(intptr_t)item;
    c->hash = h;
    c->delivered++;
}

static void slow_end(void *user)
{
    struct slow *c = user;
    pthread_mutex_lock(&c->mu);
    c->ended = 1;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void slow_error(void *user, const rill_error *e)
{
    fprintf(stderr, "showcase: stream failed: %s\n", rill_error_message(e));
    slow_end(user);
}

static void count_evicted(void *ctx, void *item)
{
    __atomic_fetch_add((uint64_t *)ctx, 1, __ATOMIC_RELAXED);
}

static void print_prometheus(rill_metrics *m)
{
    char buf[4096];
    size_t n = rill_metrics_format_prometheus(&m, 1, buf, sizeof buf);
    if (n >= sizeof buf)
        return;
    /* The counters a reader looks at first; the full text has every series. */
    for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
        if (line[0] != '#' && (strstr(line, "received") || strstr(line, "emitted") ||
                               strstr(line, "discarded_total") || strstr(line, "refused") ||
                               strstr(line, "high_water") || strstr(line, "pauses")))
            printf("    %s\n", line);
}

static int push_run(const char *title, int polite, rill_emit_policy policy, rill_scheduler *sched)
{
    struct gate g = { .polite = polite };
    struct slow c = { 0 };
    pthread_mutex_init(&g.mu, NULL);
    pthread_cond_init(&g.cv, NULL);
    pthread_mutex_init(&c.mu, NULL);
    pthread_cond_init(&c.cv, NULL);

    rill_emitter_options o;
    rill_emitter_options_init(&o);
    o.capacity = QUEUE;
    o.policy = policy;
    o.high_watermark = HIGH;
    o.low_watermark = LOW;
    o.on_writable = on_writable;
    o.ctx = &g;
    o.metrics = rill_metrics_new(polite ? "sensor_in_paced" : "sensor_in_flooded");
    rill_publisher *p = rill_emitter_new(&o, &g.em);
    p = rill_on_discard(p, count_evicted, &c.discarded);
    p = rill_observe_on(p, sched, PREFETCH);
    if (p == NULL || o.metrics == NULL) {
        perror("showcase: building the push pipeline");
        return 0;
    }
    static const rill_callbacks cb = {
        .on_subscribe = slow_subscribe, .on_next = slow_next,
        .on_error = slow_error, .on_complete = slow_end,
    };
    rill_subscribe(p, rill_subscriber_new(&cb, &c));
    rill_publisher_unref(p);

    printf("\n%s\n", title);
    pthread_t t[PRODUCERS];
    struct producer pr[PRODUCERS];
    for (int i = 0; i < PRODUCERS; i++) {
        pr[i] = (struct producer){ &g, i };
        pthread_create(&t[i], NULL, produce, &pr[i]);
    }
    for (int i = 0; i < PRODUCERS; i++)
        pthread_join(t[i], NULL);
    rill_emitter_complete(g.em);    /* queued readings are still delivered */
    pthread_mutex_lock(&c.mu);
    while (!c.ended)
        pthread_cond_wait(&c.cv, &c.mu);
    pthread_mutex_unlock(&c.mu);

    rill_metrics_values v = { .version = RILL_METRICS_VALUES_VERSION };
    rill_metrics_snapshot(o.metrics, &v);
    uint64_t accepted = 0, refused = 0;
    for (int i = 0; i < PRODUCERS; i++) {
        accepted += g.accepted[i];
        refused += g.refused[i];
    }
    uint64_t offered = (uint64_t)PRODUCERS * PER_PRODUCER;
    int conserved = accepted == c.delivered + c.discarded && accepted + refused == offered &&
                    v.received == accepted && v.emitted == c.delivered;
    int bounded = v.queued_high_water <= QUEUE;
    printf("  %-36s %10" PRIu64 "\n", "offered by the producers", offered);
    printf("  %-36s %10" PRIu64 "  (%" PRIu64 " pauses, on_writable %" PRIu64 " times)\n",
           "accepted by rill_emit", accepted, v.pauses, g.writable_calls);
    printf("  %-36s %10" PRIu64 "\n", "delivered to the slow consumer", c.delivered);
    printf("  %-36s %10" PRIu64 "\n", "evicted to the discard hook", c.discarded);
    printf("  %-36s %10s  %" PRIu64 " = %" PRIu64 " + %" PRIu64 "\n",
           "accepted = delivered + evicted", conserved ? "OK" : "MISMATCH",
           accepted, c.delivered, c.discarded);
    printf("  %-36s %10s  high water %" PRIu64 " of %d\n", "queue stayed within its capacity",
           bounded ? "OK" : "NO", v.queued_high_water, QUEUE);
    printf("  Prometheus text (excerpt):\n");
    print_prometheus(o.metrics);

    rill_emitter_unref(g.em);
    rill_metrics_unref(o.metrics);
    int ok = conserved && bounded && (!polite || c.discarded == 0);
    pthread_mutex_destroy(&g.mu);
    pthread_cond_destroy(&g.cv);
    pthread_mutex_destroy(&c.mu);
    pthread_cond_destroy(&c.cv);
    return ok;
}

static int part_two(void)
{
    rill_scheduler *consumer_thread = rill_single_thread_new();
    if (consumer_thread == NULL) {
        perror("showcase: starting the consumer thread");
        return 0;
    }
    printf("\nPart two: %d producer threads push %d readings each into an emitter\n"
           "(queue %d, pause at %d, resume at %d); a slow consumer takes them on its own thread.\n",
           PRODUCERS, PER_PRODUCER, QUEUE, HIGH, LOW);
    int ok = push_run("Producers that pause on RILL_EMIT_PAUSED and resume on on_writable:",
                      1, RILL_EMIT_BLOCK, consumer_thread);
    ok &= push_run("Producers that never pause, into a drop-oldest queue:",
                   0, RILL_EMIT_DROP_OLDEST, consumer_thread);
    rill_scheduler_unref(consumer_thread);
    return ok;
}

int main(void)
{
    struct sensor sensor = { .seed = 2463534242u };
    uint64_t discarded = 0;
    struct consumer c = { .sensor = &sensor, .discarded = &discarded };

    /* Each operator consumes its upstream reference: only the last one is ours. */
    rill_publisher *p = rill_generate(sensor_read, &sensor);
    p = rill_map(p, scale, NULL);
    p = rill_filter(p, above_threshold, NULL);
    p = rill_on_discard(p, count_discard, &discarded);
    p = rill_take(p, WANTED);
    if (p == NULL) {
        perror("showcase: building the pipeline");
        return 1;
    }

    static const rill_callbacks cb = {
        .on_subscribe = on_subscribe, .on_next = on_next, .on_error = on_error,
        .on_complete = on_complete, .on_release = on_release,
    };
    rill_subscriber *sink = rill_subscriber_new(&cb, &c);
    if (sink == NULL) {
        perror("showcase: creating the consumer");
        rill_publisher_unref(p);
        return 1;
    }

    printf("rill showcase: %d sensor readings -> map -> filter(>= %.1f) -> take(%d),\n"
           "consumed %d at a time. The source only produces what is requested.\n\n"
           "The consumer's requests and what each one set in motion:\n",
           READINGS, THRESHOLD / 10.0, WANTED, BATCH);
    /* A synchronous pipeline runs to the end inside this call: every later
     * request comes from the consumer's own on_next. */
    rill_subscribe(p, sink);
    rill_publisher_unref(p);

    if (!report(&sensor, discarded, &c)) {
        fprintf(stderr, "showcase: FAILED (see the table above)\n");
        return 1;
    }
    if (!part_two()) {
        fprintf(stderr, "showcase: part two FAILED (see the tables above)\n");
        return 1;
    }
    return 0;
}
