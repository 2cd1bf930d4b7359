/* Copied from peerbench (c/bench.h, the C floors behind
 * ../shared/research/perf-anchors.md) for rill's bench/compare. The workload
 * is unchanged; only this comment was added. */
/* Shared mini-harness for the C anchor benchmarks (C11, gcc -O2 -pthread). */
#ifndef PEERBENCH_H
#define PEERBENCH_H
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static inline uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* One rep runs the whole workload once and returns elapsed ns; *items = items counted. */
typedef uint64_t (*rep_fn)(void *ctx, uint64_t *items);

/* First rep = "cold", then warm-up until min_warm reps AND warm_ns elapsed, then `reps` timed reps.
 * Prints: RESULT <name> <median items/s> min=.. max=.. cold=.. warm_reps=.. reps=.. */
static void bench(const char *name, int min_warm, uint64_t warm_ns, int reps, rep_fn fn, void *ctx) {
    uint64_t items = 0, ns = fn(ctx, &items);
    double cold = items * 1e9 / (double)ns;
    int w = 1;
    uint64_t start = now_ns();
    while (w < min_warm || now_ns() - start < warm_ns) {
        fn(ctx, &items);
        w++;
        if (now_ns() - start > 4 * warm_ns && w >= 2) break;
    }
    double *r = calloc((size_t)reps, sizeof *r);
    for (int i = 0; i < reps; i++) {
        ns = fn(ctx, &items);
        r[i] = items * 1e9 / (double)ns;
    }
    qsort(r, (size_t)reps, sizeof *r, cmp_double);
    double med = (reps & 1) ? r[reps / 2] : (r[reps / 2 - 1] + r[reps / 2]) / 2;
    printf("RESULT %s %.0f min=%.0f max=%.0f cold=%.0f warm_reps=%d reps=%d\n", name, med, r[0], r[reps - 1],
           cold, w, reps);
    fflush(stdout);
    free(r);
}

static inline int env_int(const char *k, int def) {
    const char *v = getenv(k);
    return v && *v ? atoi(v) : def;
}

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* Hide a value from the optimizer (prevents devirtualisation / constant folding). */
#define LAUNDER(x) __asm__ volatile("" : "+r"(x))

#endif
