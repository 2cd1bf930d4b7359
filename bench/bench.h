/* bench/bench.h — the harness shared by rill's benchmark programs.
 *
 * A benchmark is a function that runs the whole workload once for n source
 * items and reports how many items it counted (items processed, or items
 * delivered for the backpressure benchmarks). bench_run():
 *   1. runs it once cold with the caller's first guess of n;
 *   2. warms up (at least BENCH_WARM_REPS reps and BENCH_WARM_MS ms),
 *      re-sizing n after every rep so that one rep takes about BENCH_REP_MS
 *      (rill's speed moves from commit to commit; a fixed n would make a
 *      slow path run for minutes or a fast one for microseconds);
 *   3. times BENCH_REPS reps at that fixed n and reports the median rate.
 * `--n=N` on the command line (or BENCH_N) fixes n instead.
 *
 * Every program prints one line per workload, which bench/compare parses:
 *
 *   RESULT <name> <median items/s> min=.. max=.. cold=.. reps=.. n=..
 *          allocs_per_item=.. allocs_per_rep=.. rss_kb=.. [k=v ...]
 *
 * allocs_*: heap allocations made by rill, counted by an allocator
 * installed with rill_set_allocator (bench_init must run before the
 * program's first rill call). allocs_per_rep: the mean over the timed reps,
 * building and subscribing included. allocs_per_item: the steady-state
 * figure, whose target is 0 — after the timed reps, one more rep runs at
 * n/4, and (fewest allocations in a timed rep - allocations at n/4) /
 * (n - n/4) is what the pipeline allocates per item once it runs; the
 * per-subscription allocations cancel out. rss_kb is the process's peak
 * RSS so far (getrusage ru_maxrss).
 *
 * Quick mode (`--quick` or BENCH_QUICK=1): a smoke run of a few seconds —
 * 3 reps of ~20 ms, one warm-up rep. The numbers mean little; the checks
 * (sums, drop accounting, error codes) still run, and a failed check exits
 * non-zero.
 *
 * Environment: BENCH_REPS (7; quick 3), BENCH_WARM_REPS (2; quick 1),
 * BENCH_WARM_MS (1000; quick 0), BENCH_REP_MS (250; quick 20), BENCH_N,
 * BENCH_QUICK.
 */
#ifndef RILL_BENCH_H
#define RILL_BENCH_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <rill.h>

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

/* Runs the workload once for n source items; stores the number of items
 * counted in *items and returns the elapsed time in nanoseconds. */
typedef uint64_t (*bench_rep_fn)(void *ctx, uint64_t n, uint64_t *items);

typedef struct bench_config {
    int quick;
    int reps, warm_reps;
    uint64_t warm_ns, rep_ns;
    uint64_t fixed_n;      /* 0: size n from the measured rate */
} bench_config;

typedef struct bench_stats {
    double median, min, max, cold;   /* items/s */
    uint64_t n;                      /* source items per timed rep */
    uint64_t items;                  /* items counted over the timed reps */
    uint64_t allocs;                 /* rill allocations during the timed reps */
    double steady_allocs_per_item;   /* allocations that grow with n, per source item */
    int reps;
} bench_stats;

static bench_config bench_cfg;

static inline uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline long bench_env(const char *name, long fallback)
{
    const char *v = getenv(name);
    long n = v != NULL ? atol(v) : 0;
    return n > 0 ? n : fallback;
}

/* Hides a value from the optimiser, so that a function pointer is really
 * called through rather than inlined. */
#define BENCH_LAUNDER(x) __asm__ volatile("" : "+r"(x))

#if defined(__x86_64__) || defined(__i386__)
#define bench_cpu_relax() __builtin_ia32_pause()
#else
#define bench_cpu_relax() ((void)0)
#endif

/* ------------------------------------------------------------------------
 * The counting allocator. Each block carries its size in a header, so the
 * live byte count is exact (for the memory-per-stage benchmark). The
 * counters are relaxed atomics: rill allocates from any thread, and a
 * steady-state pipeline allocates nothing, so they cost nothing per item. */

typedef union bench_block {
    size_t size;
    max_align_t align;
} bench_block;

static atomic_uint_fast64_t bench_alloc_count, bench_free_count;
static atomic_int_fast64_t bench_live_bytes;

static inline void *bench_malloc(size_t n)
{
    bench_block *b = malloc(sizeof *b + n);
    if (b == NULL)
        return NULL;
    b->size = n;
    atomic_fetch_add_explicit(&bench_alloc_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&bench_live_bytes, (int_fast64_t)n, memory_order_relaxed);
    return b + 1;
}

static inline void bench_free(void *p)
{
    if (p == NULL)
        return;
    bench_block *b = (bench_block *)p - 1;
    atomic_fetch_add_explicit(&bench_free_count, 1, memory_order_relaxed);
    atomic_fetch_sub_explicit(&bench_live_bytes, (int_fast64_t)b->size, memory_order_relaxed);
    free(b);
}

static inline void *bench_realloc(void *p, size_t n)
{
    if (p == NULL)
        return bench_malloc(n);
    bench_block *old = (bench_block *)p - 1;
    size_t old_size = old->size;
    bench_block *b = realloc(old, sizeof *b + n);
    if (b == NULL)
        return NULL;
    b->size = n;
    /* A realloc that moves is an allocation as far as the hot path goes. */
    atomic_fetch_add_explicit(&bench_alloc_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&bench_free_count, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&bench_live_bytes, (int_fast64_t)n - (int_fast64_t)old_size,
                              memory_order_relaxed);
    return b + 1;
}

static inline uint64_t bench_allocs(void)
{
    return atomic_load_explicit(&bench_alloc_count, memory_order_relaxed);
}

static inline int64_t bench_live(void)
{
    return atomic_load_explicit(&bench_live_bytes, memory_order_relaxed);
}

static inline long bench_rss_kb(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? ru.ru_maxrss : 0;
}

/* CPU time (user + system) of the whole process, in nanoseconds. */
static inline uint64_t bench_cpu_ns(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0;
    return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000u
           + ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000u;
}

/* ------------------------------------------------------------------------
 * Set-up */

/* Reads the knobs, strips --quick and --n=N from argv, and installs the
 * counting allocator. Call it first thing in main. */
static inline void bench_init(int *argc, char **argv)
{
    int quick = getenv("BENCH_QUICK") != NULL && atoi(getenv("BENCH_QUICK")) > 0;
    uint64_t fixed_n = (uint64_t)bench_env("BENCH_N", 0);
    int out = 1;
    for (int i = 1; i < *argc; i++) {
        if (strcmp(argv[i], "--quick") == 0)
            quick = 1;
        else if (strncmp(argv[i], "--n=", 4) == 0)
            fixed_n = (uint64_t)strtod(argv[i] + 4, NULL);
        else
            argv[out++] = argv[i];
    }
    *argc = out;
    argv[out] = NULL;
    bench_cfg.quick = quick;
    bench_cfg.reps = (int)bench_env("BENCH_REPS", quick ? 3 : 7);
    bench_cfg.warm_reps = (int)bench_env("BENCH_WARM_REPS", quick ? 1 : 2);
    bench_cfg.warm_ns = (uint64_t)bench_env("BENCH_WARM_MS", quick ? 0 : 1000) * 1000000u;
    bench_cfg.rep_ns = (uint64_t)bench_env("BENCH_REP_MS", quick ? 20 : 250) * 1000000u;
    bench_cfg.fixed_n = fixed_n;
    if (rill_set_allocator(bench_malloc, bench_realloc, bench_free) != 0) {
        fprintf(stderr, "bench: rill_set_allocator failed (called after rill allocated?)\n");
        exit(1);
    }
}

/* Does this program's case list select `name`? No arguments: every case. */
static inline int bench_selected(int argc, char **argv, const char *name)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], name) == 0 || strcmp(argv[i], "all") == 0)
            return 1;
    return 0;
}

/* ------------------------------------------------------------------------
 * Running */

static inline int bench_cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static inline double bench_rate(uint64_t items, uint64_t ns)
{
    return ns > 0 ? (double)items * 1e9 / (double)ns : 0.0;
}

/* n such that a rep of n source items takes about rep_ns, at the rate just
 * seen (n per ns, which for the backpressure runs differs from items/ns). */
static inline uint64_t bench_resize(uint64_t n, uint64_t ns, uint64_t n_min, uint64_t n_max)
{
    double want = ns > 0 ? (double)n * (double)bench_cfg.rep_ns / (double)ns : (double)n_max;
    /* At most x16 per step: one freak short rep (a preempted clock read)
     * must not size the next rep to run for minutes. */
    if (want > 16.0 * (double)n)
        want = 16.0 * (double)n;
    uint64_t m = want > (double)n_max ? n_max : (uint64_t)want;
    return m < n_min ? n_min : m;
}

/* Runs fn as described at the top. n0: the cold rep's n (small enough to
 * finish quickly on the slowest path); n_max: a ceiling. */
static inline bench_stats bench_run(bench_rep_fn fn, void *ctx, uint64_t n0, uint64_t n_max)
{
    bench_stats st;
    memset(&st, 0, sizeof st);
    uint64_t n = bench_cfg.fixed_n ? bench_cfg.fixed_n : n0;
    uint64_t n_min = n0 / 10 ? n0 / 10 : 1;
    uint64_t items = 0, ns = fn(ctx, n, &items);
    st.cold = bench_rate(items, ns);

    uint64_t start = bench_now_ns();
    for (int w = 0; w < bench_cfg.warm_reps || bench_now_ns() - start < bench_cfg.warm_ns; w++) {
        if (!bench_cfg.fixed_n)
            n = bench_resize(n, ns, n_min, n_max);
        ns = fn(ctx, n, &items);
    }
    if (!bench_cfg.fixed_n)
        n = bench_resize(n, ns, n_min, n_max);

    int reps = bench_cfg.reps;
    double *rates = calloc((size_t)reps, sizeof *rates);
    if (rates == NULL) {
        perror("bench");
        exit(1);
    }
    uint64_t allocs0 = bench_allocs(), rep_allocs_min = UINT64_MAX;
    for (int i = 0; i < reps; i++) {
        uint64_t a0 = bench_allocs();
        ns = fn(ctx, n, &items);
        uint64_t a = bench_allocs() - a0;
        rep_allocs_min = a < rep_allocs_min ? a : rep_allocs_min;
        rates[i] = bench_rate(items, ns);
        st.items += items;
    }
    st.allocs = bench_allocs() - allocs0;
    /* Steady state: one more rep at n/4. Allocations made per subscription
     * cancel out of the difference; what is left grows with n. */
    if (n >= 8) {
        uint64_t a0 = bench_allocs();
        fn(ctx, n / 4, &items);
        uint64_t small = bench_allocs() - a0;
        st.steady_allocs_per_item =
            rep_allocs_min > small ? (double)(rep_allocs_min - small) / (double)(n - n / 4) : 0.0;
    } else {
        st.steady_allocs_per_item = (double)st.allocs / (double)(st.items ? st.items : 1);
    }
    qsort(rates, (size_t)reps, sizeof *rates, bench_cmp_double);
    st.median = reps % 2 ? rates[reps / 2] : (rates[reps / 2 - 1] + rates[reps / 2]) / 2;
    st.min = rates[0];
    st.max = rates[reps - 1];
    st.n = n;
    st.reps = reps;
    free(rates);
    return st;
}

/* Prints the RESULT line; extra_fmt (may be NULL) appends " k=v ..." fields. */
__attribute__((format(printf, 3, 4)))
static inline void bench_report(const char *name, const bench_stats *st, const char *extra_fmt, ...)
{
    double per_item = st->steady_allocs_per_item;
    printf("RESULT %s %.0f min=%.0f max=%.0f cold=%.0f reps=%d n=%" PRIu64
           " allocs_per_item=%.3g allocs_per_rep=%.1f rss_kb=%ld",
           name, st->median, st->min, st->max, st->cold, st->reps, st->n, per_item,
           st->reps ? (double)st->allocs / st->reps : 0.0, bench_rss_kb());
    if (extra_fmt != NULL) {
        va_list ap;
        va_start(ap, extra_fmt);
        putchar(' ');
        vprintf(extra_fmt, ap);
        va_end(ap);
    }
    putchar('\n');
    fflush(stdout);
}

/* For results that are not a rate (bytes, percent, nanoseconds): the value
 * goes where the rate would, and unit= says what it is. */
__attribute__((format(printf, 4, 5)))
static inline void bench_report_value(const char *name, double value, const char *unit,
                                      const char *extra_fmt, ...)
{
    printf("RESULT %s %.6g unit=%s rss_kb=%ld", name, value, unit, bench_rss_kb());
    if (extra_fmt != NULL) {
        va_list ap;
        va_start(ap, extra_fmt);
        putchar(' ');
        vprintf(extra_fmt, ap);
        va_end(ap);
    }
    putchar('\n');
    fflush(stdout);
}

/* A failed check: say what, and exit non-zero (the runner and
 * `make bench-smoke` treat it as a failure). */
__attribute__((format(printf, 1, 2), noreturn))
static inline void bench_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("bench: FAILED: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    fflush(stdout);
    exit(1);
}

#endif /* RILL_BENCH_H */
