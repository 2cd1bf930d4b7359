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
 */
#include <rill.h>

#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

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
    return 0;
}
