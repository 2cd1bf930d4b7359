/* bench/bench.h — a small harness for rill's benchmarks.
 *
 * A benchmark is a function that runs the whole workload once and reports how
 * many items it processed. bench_run() runs it once cold, then warms up (at
 * least BENCH_WARM_REPS reps and BENCH_WARM_MS milliseconds), then times
 * BENCH_REPS reps and prints the median:
 *
 *   RESULT <name> <median items/s> min=<items/s> max=<items/s> cold=<items/s> reps=<n>
 *
 * which is the line bench runners (such as ../shared/peerbench/run.sh) parse.
 * Environment: BENCH_REPS (default 7), BENCH_WARM_REPS (1), BENCH_WARM_MS (1000).
 */
#ifndef RILL_BENCH_H
#define RILL_BENCH_H

/* clock_gettime is POSIX, hidden by a strict -std=c11 unless asked for. */
#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

/* Runs the workload once; stores the number of items processed in *items and
 * returns the elapsed time in nanoseconds. */
typedef uint64_t (*bench_rep_fn)(void *ctx, uint64_t *items);

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline int bench_env(const char *name, int fallback)
{
    const char *v = getenv(name);
    int n = v != NULL ? atoi(v) : 0;
    return n > 0 ? n : fallback;
}

/* Hides a value from the optimiser, so that a function pointer is really
 * called through rather than inlined. */
#define BENCH_LAUNDER(x) __asm__ volatile("" : "+r"(x))

static int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline double bench_rate(uint64_t items, uint64_t ns)
{
    return ns > 0 ? (double)items * 1e9 / (double)ns : 0.0;
}

/* Returns the median rate in items per second (0 on allocation failure). */
static inline double bench_run(const char *name, bench_rep_fn fn, void *ctx)
{
    int reps = bench_env("BENCH_REPS", 7);
    int warm_reps = bench_env("BENCH_WARM_REPS", 1);
    uint64_t warm_ns = (uint64_t)bench_env("BENCH_WARM_MS", 1000) * 1000000u;
    uint64_t items = 0;
    uint64_t cold_ns = fn(ctx, &items);
    double cold = bench_rate(items, cold_ns);

    uint64_t start = bench_now_ns();
    for (int w = 0; w < warm_reps || bench_now_ns() - start < warm_ns; w++)
        fn(ctx, &items);

    double *rates = calloc((size_t)reps, sizeof *rates);
    if (rates == NULL)
        return 0.0;
    for (int i = 0; i < reps; i++) {
        uint64_t ns = fn(ctx, &items);
        rates[i] = bench_rate(items, ns);
    }
    qsort(rates, (size_t)reps, sizeof *rates, bench_cmp_double);
    double median = reps % 2 ? rates[reps / 2] : (rates[reps / 2 - 1] + rates[reps / 2]) / 2;
    printf("RESULT %s %.0f min=%.0f max=%.0f cold=%.0f reps=%d\n",
           name, median, rates[0], rates[reps - 1], cold, reps);
    fflush(stdout);
    free(rates);
    return median;
}

#endif /* RILL_BENCH_H */
