/* tests/check_alloc.c — allocator replacement and allocation failure.
 *
 * The chaos method (after jansson's test/suites/api/test_chaos.c): run an
 * operation once with no failure to count the allocations K it makes, then
 * again with allocation n made to fail, for n = 1, 2, ... until a run no
 * longer reaches allocation n. The operations are synchronous, so the runs
 * are deterministic and the loop must stop at exactly n = K + 1: every
 * allocation the operation makes has failed once.
 *
 * Each run must end in one of two ways, and leave live_allocations() where
 * it was:
 *   (a) a constructor returned NULL with errno ENOMEM (operators further down
 *       a chain then see a NULL upstream: NULL, errno EINVAL), and every
 *       ctx_free and on_release handed to those constructors ran once;
 *   (b) the subscription ran, and the recorder saw either the normal result
 *       or on_subscribe → on_error(ENOMEM) → on_release, with no protocol
 *       violation; the publisher then still serves a clean subscription.
 *
 * The recorder and Check allocate with plain malloc, so only rill's own
 * allocations are counted and failed. Between counting_allocator_fail_at(n)
 * and the end of the window this file calls nothing in rill but the
 * operation under test (and the recorder's subscriber, part of the run).
 */
#include "recorder.h"
#include "suites.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Reporting: every assertion names the case and the allocation that failed. */

static const char *chaos_name = "";
static long chaos_n;   /* the allocation made to fail in this run; 0: none */

#define EXPECT(cond)                                                           \
    ck_assert_msg((cond), "%s, allocation %ld failing: expected %s",           \
                  chaos_name, chaos_n, #cond)

#define EXPECT_EQ(a, b)                                                        \
    do {                                                                       \
        long long a_ = (long long)(a), b_ = (long long)(b);                    \
        ck_assert_msg(a_ == b_, "%s, allocation %ld failing: %s is %lld, expected %lld", \
                      chaos_name, chaos_n, #a, a_, b_);                        \
    } while (0)

/* ------------------------------------------------------------------------
 * The failure window. */

static long window_calls;

/* From here on, the n-th allocation fails (n == 0: none does). */
static void window_open(long n)
{
    chaos_n = n;
    window_calls = counting_allocator_calls();
    counting_allocator_fail_at(n);
}

/* Ends the window and returns how many allocations were attempted in it:
 * fewer than n means the failure was never reached. */
static long window_close(void)
{
    long used = counting_allocator_calls() - window_calls;
    counting_allocator_fail_at(0);
    return used;
}

/* ------------------------------------------------------------------------
 * Per-run bookkeeping: user contexts, constructor results, discards. */

#define MAX_SLOTS 4
#define MAX_STEPS 8
#define MAX_ORDER 16

typedef struct chaos_run chaos_run;

/* A user ctx handed to the library. `owned` slots were given a ctx_free,
 * which must run exactly once per run. */
typedef struct chaos_slot {
    chaos_run *run;
    int owned;
    int freed;
    int calls;
} chaos_slot;

struct chaos_run {
    chaos_slot slots[MAX_SLOTS];
    int nslots;
    int errs[MAX_STEPS];      /* errno of each constructor step; 0 when it succeeded */
    int nsteps;
    int discards;             /* hook calls, over all hooks */
    intptr_t discard_sum;
    int order[MAX_ORDER];     /* slot index of each hook call, in order */
    int norder;
    intptr_t gen_next;        /* rill_generate's shared state */
    intptr_t gen_last;        /* rill_generate_ex: the last item */
    int inits, state_frees;   /* rill_generate_ex per-subscription state */
};

static void run_init(chaos_run *cr, intptr_t gen_last)
{
    memset(cr, 0, sizeof *cr);
    cr->gen_last = gen_last;
}

static chaos_slot *slot_new(chaos_run *cr, int owned)
{
    ck_assert_int_lt(cr->nslots, MAX_SLOTS);
    chaos_slot *s = &cr->slots[cr->nslots++];
    s->run = cr;
    s->owned = owned;
    return s;
}

static void slot_free(void *ctx)
{
    ((chaos_slot *)ctx)->freed++;
}

static void expect_slots_freed(const chaos_run *cr, int times)
{
    for (int i = 0; i < cr->nslots; i++)
        if (cr->slots[i].owned)
            EXPECT_EQ(cr->slots[i].freed, times);
}

/* Records one constructor's result. STEP clears errno first, so a NULL
 * result is judged by the errno that constructor set. */
static rill_publisher *step_done(chaos_run *cr, rill_publisher *p)
{
    ck_assert_int_lt(cr->nsteps, MAX_STEPS);
    cr->errs[cr->nsteps++] = p ? 0 : errno;
    return p;
}

#define STEP(cr, expr) step_done((cr), (errno = 0, (expr)))

/* Outcome (a) for a chain: the first constructor that failed says ENOMEM;
 * every later one was handed a NULL upstream and says EINVAL. */
static void expect_chain_failed(const chaos_run *cr)
{
    int i = 0;
    while (i < cr->nsteps && cr->errs[i] == 0)
        i++;
    EXPECT(i < cr->nsteps);
    EXPECT_EQ(cr->errs[i], ENOMEM);
    for (i++; i < cr->nsteps; i++)
        EXPECT_EQ(cr->errs[i], EINVAL);
}

static void expect_chain_built(const chaos_run *cr)
{
    for (int i = 0; i < cr->nsteps; i++)
        EXPECT_EQ(cr->errs[i], 0);
}

/* ------------------------------------------------------------------------
 * User functions. */

static int times10(void *ctx, void *in, void **out)
{
    if (ctx)
        ((chaos_slot *)ctx)->calls++;
    *out = (void *)((intptr_t)in * 10);
    return 0;
}

static int keep_even(void *ctx, void *item)
{
    (void)ctx;
    return (intptr_t)item % 2 == 0;
}

static int keep_odd(void *ctx, void *item)
{
    (void)ctx;
    return (intptr_t)item % 2 != 0;
}

static int keep_mult20(void *ctx, void *item)
{
    (void)ctx;
    return (intptr_t)item % 20 == 0;
}

static void count_discard(void *ctx, void *item)
{
    chaos_slot *s = ctx;
    chaos_run *cr = s->run;
    s->calls++;
    cr->discards++;
    cr->discard_sum += (intptr_t)item;
    if (cr->norder < MAX_ORDER)
        cr->order[cr->norder++] = (int)(s - cr->slots);
}

/* rill_generate: 1, 2, 3, 4 from state shared by all subscriptions. */
static int gen_shared(void *state, void **item)
{
    chaos_run *cr = state;
    if (cr->gen_next >= 4)
        return RILL_GENERATE_END;
    *item = (void *)++cr->gen_next;
    return RILL_GENERATE_NEXT;
}

/* rill_generate_ex: 1 .. gen_last per subscription, the last one flagged.
 * The state comes from plain malloc, so it never fails here. */
typedef struct gen_state {
    chaos_run *run;
    intptr_t next, last;
} gen_state;

static int gen_init(void *ctx, void **state)
{
    chaos_run *cr = ((chaos_slot *)ctx)->run;
    gen_state *g = malloc(sizeof *g);
    if (!g)
        return ENOMEM;
    g->run = cr;
    g->next = 0;
    g->last = cr->gen_last;
    cr->inits++;
    *state = g;
    return 0;
}

static int gen_count(void *state, void **item)
{
    gen_state *g = state;
    *item = (void *)++g->next;
    return g->next == g->last ? RILL_GENERATE_LAST : RILL_GENERATE_NEXT;
}

static void gen_free(void *state)
{
    gen_state *g = state;
    g->run->state_frees++;
    free(g);
}

/* ------------------------------------------------------------------------
 * Publisher cases: a constructor or a chain of them, then a subscription. */

typedef struct pub_case {
    const char *name;
    /* Builds what the operation consumes, before the window (may be NULL). */
    rill_publisher *(*prepare)(chaos_run *cr);
    /* The operation under test, inside the window. */
    rill_publisher *(*build)(chaos_run *cr, rill_publisher *up);
    uint64_t initial_request, request_each;
    /* the normal result */
    intptr_t items[8];
    size_t nitems;
    int error_code;               /* 0: on_complete */
    const char *error_message;    /* checked when non-NULL */
    int discards;
    intptr_t discard_sum;
    intptr_t gen_last;
    /* against vacuous passes */
    long min_allocs;              /* the clean run makes at least this many */
    int needs_subscribe_enomem;   /* some run must end on_error(ENOMEM) */
} pub_case;

static void expect_normal(const pub_case *pc, const chaos_run *cr, const recorder *r)
{
    ck_assert_msg(rec_ok(r), "%s, allocation %ld failing: protocol violation: %s",
                  chaos_name, chaos_n, r->violation);
    EXPECT_EQ(r->subscribes, 1);
    EXPECT_EQ(r->releases, 1);
    EXPECT_EQ(r->nitems, pc->nitems);
    for (size_t i = 0; i < pc->nitems; i++)
        EXPECT_EQ(rec_int(r, i), pc->items[i]);
    if (pc->error_code) {
        EXPECT_EQ(r->errors, 1);
        EXPECT_EQ(r->completes, 0);
        EXPECT_EQ(r->error_code, pc->error_code);
        if (pc->error_message)
            EXPECT(strcmp(r->error_message, pc->error_message) == 0);
    } else {
        EXPECT_EQ(r->completes, 1);
        EXPECT_EQ(r->errors, 0);
    }
    EXPECT_EQ(cr->discards, pc->discards);
    EXPECT_EQ(cr->discard_sum, pc->discard_sum);
}

/* Outcome (b), failure at subscribe time: nothing but the error. */
static void expect_enomem_signals(const chaos_run *cr, const recorder *r)
{
    ck_assert_msg(rec_ok(r), "%s, allocation %ld failing: protocol violation: %s",
                  chaos_name, chaos_n, r->violation);
    EXPECT_EQ(r->subscribes, 1);
    EXPECT_EQ(r->nitems, 0);
    EXPECT_EQ(r->errors, 1);
    EXPECT_EQ(r->error_code, ENOMEM);
    EXPECT_EQ(r->completes, 0);
    EXPECT_EQ(r->releases, 1);
    EXPECT_EQ(cr->discards, 0);
}

/* The recorder's subscriber could not be made: on_release ran once, with
 * no on_subscribe (which the recorder counts as its one violation). */
static void expect_subscriber_refused(const recorder *r, int err)
{
    EXPECT_EQ(err, ENOMEM);
    EXPECT_EQ(r->subscribes, 0);
    EXPECT_EQ(r->releases, 1);
    EXPECT_EQ(r->violations, 1);
    EXPECT(strstr(r->violation, "on_release before on_subscribe") != NULL);
}

static recorder *pub_recorder(const pub_case *pc)
{
    recorder *r = rec_new(pc->initial_request);
    r->request_each = pc->request_each;
    return r;
}

/* After the chaos run, the publisher still serves a clean subscription. */
static void rerun_clean(const pub_case *pc, chaos_run *cr, rill_publisher *p)
{
    cr->discards = 0;
    cr->discard_sum = 0;
    cr->gen_next = 0;
    recorder *r = pub_recorder(pc);
    rill_subscribe(p, rec_subscriber(r));
    expect_normal(pc, cr, r);
    rec_free(r);
}

/* Sorts the run into outcome (a) or (b) and checks it. */
static void judge_pub_run(const pub_case *pc, chaos_run *cr, rill_publisher *p,
                          rill_subscriber *s, int sub_err, const recorder *r,
                          long n, long used, int *enomem)
{
    int failure_hit = n > 0 && used >= n;
    if (!p) {
        EXPECT(failure_hit);
        expect_chain_failed(cr);
        expect_slots_freed(cr, 1);      /* nothing references them any more */
        EXPECT_EQ(r->subscribes + r->releases, 0);
        EXPECT_EQ(cr->inits, 0);
        return;
    }
    expect_chain_built(cr);
    if (!s) {
        EXPECT(failure_hit);
        expect_subscriber_refused(r, sub_err);
    } else if (r->errors && r->error_code == ENOMEM && pc->error_code != ENOMEM) {
        EXPECT(failure_hit);
        expect_enomem_signals(cr, r);
        (*enomem)++;
    } else {
        expect_normal(pc, cr, r);
        if (pc->gen_last)
            EXPECT_EQ(cr->inits, 1);
    }
    EXPECT_EQ(cr->inits, cr->state_frees);   /* the subscription has ended */
    expect_slots_freed(cr, 0);               /* p still references them */
}

static long pub_iteration(const void *arg, long n, int *enomem)
{
    const pub_case *pc = arg;
    chaos_run cr;
    run_init(&cr, pc->gen_last);
    rill_publisher *up = NULL;
    if (pc->prepare) {
        up = pc->prepare(&cr);
        ck_assert_ptr_nonnull(up);
    }
    recorder *r = pub_recorder(pc);
    rill_subscriber *s = NULL;
    int sub_err = 0;

    window_open(n);
    rill_publisher *p = pc->build(&cr, up);
    if (p) {
        errno = 0;
        s = rec_subscriber(r);
        sub_err = errno;
        if (s)
            rill_subscribe(p, s);
    }
    long used = window_close();

    judge_pub_run(pc, &cr, p, s, sub_err, r, n, used, enomem);
    if (p) {
        rerun_clean(pc, &cr, p);
        rill_publisher_unref(p);
    }
    expect_slots_freed(&cr, 1);
    EXPECT_EQ(cr.inits, cr.state_frees);
    rec_free(r);
    return used;
}

/* ------------------------------------------------------------------------
 * The loop. */

typedef long (*chaos_iteration)(const void *arg, long n, int *enomem);

static void chaos_loop(const char *name, chaos_iteration iteration, const void *arg,
                       long min_allocs, int needs_enomem)
{
    int enomem = 0;
    chaos_name = name;
    long base = live_allocations();

    long clean = iteration(arg, 0, &enomem);
    EXPECT_EQ(live_allocations(), base);
    EXPECT_EQ(enomem, 0);
    ck_assert_msg(clean >= min_allocs, "%s: the clean run made %ld allocations, expected >= %ld",
                  name, clean, min_allocs);

    long n;
    for (n = 1; n <= clean + 1; n++) {
        long used = iteration(arg, n, &enomem);
        EXPECT_EQ(live_allocations(), base);
        if (used < n)
            break;   /* allocation n was never reached: every one has failed */
    }
    chaos_n = n;
    /* Deterministic runs: allocations 1..clean each failed once, and the run
     * that would fail allocation clean + 1 never got there. */
    EXPECT_EQ(n, clean + 1);
    if (needs_enomem)
        ck_assert_msg(enomem > 0, "%s: no run ended with on_error(ENOMEM)", name);
}

/* ------------------------------------------------------------------------
 * Constructor cases: sources built in the window; operators built in the
 * window on an upstream prepared before it. */

static void *const array_items[] = { (void *)10, (void *)20, (void *)30 };

static rill_publisher *build_range(chaos_run *cr, rill_publisher *up)
{
    (void)up;
    return STEP(cr, rill_range(1, 5));
}

static rill_publisher *build_from_array(chaos_run *cr, rill_publisher *up)
{
    (void)up;
    return STEP(cr, rill_from_array(array_items, 3));
}

static rill_publisher *build_just(chaos_run *cr, rill_publisher *up)
{
    (void)up;
    return STEP(cr, rill_just((void *)42));
}

static rill_publisher *build_empty(chaos_run *cr, rill_publisher *up)
{
    (void)up;
    return STEP(cr, rill_empty());
}

static rill_publisher *build_fail(chaos_run *cr, rill_publisher *up)
{
    (void)up;
    return STEP(cr, rill_fail(EIO, "chaos"));
}

static rill_publisher *build_generate(chaos_run *cr, rill_publisher *up)
{
    (void)up;
    return STEP(cr, rill_generate(gen_shared, cr));
}

static rill_publisher *build_generate_ex(chaos_run *cr, rill_publisher *up)
{
    (void)up;
    return STEP(cr, rill_generate_ex(gen_init, gen_count, gen_free, slot_new(cr, 1), slot_free));
}

static rill_publisher *prep_range4(chaos_run *cr)
{
    (void)cr;
    return rill_range(1, 4);
}

static rill_publisher *prep_range6(chaos_run *cr)
{
    (void)cr;
    return rill_range(1, 6);
}

static rill_publisher *prep_range10(chaos_run *cr)
{
    (void)cr;
    return rill_range(1, 10);
}

static rill_publisher *prep_evens(chaos_run *cr)
{
    (void)cr;
    return rill_filter(rill_range(1, 6), keep_even, NULL);
}

static rill_publisher *build_map(chaos_run *cr, rill_publisher *up)
{
    return STEP(cr, rill_map(up, times10, NULL));
}

static rill_publisher *build_map_ex(chaos_run *cr, rill_publisher *up)
{
    return STEP(cr, rill_map_ex(up, times10, slot_new(cr, 1), slot_free));
}

static rill_publisher *build_filter(chaos_run *cr, rill_publisher *up)
{
    return STEP(cr, rill_filter(up, keep_even, NULL));
}

static rill_publisher *build_filter_ex(chaos_run *cr, rill_publisher *up)
{
    return STEP(cr, rill_filter_ex(up, keep_even, slot_new(cr, 1), slot_free));
}

static rill_publisher *build_take(chaos_run *cr, rill_publisher *up)
{
    return STEP(cr, rill_take(up, 3));
}

static rill_publisher *build_on_discard(chaos_run *cr, rill_publisher *up)
{
    return STEP(cr, rill_on_discard(up, count_discard, slot_new(cr, 0)));
}

static rill_publisher *build_on_discard_ex(chaos_run *cr, rill_publisher *up)
{
    return STEP(cr, rill_on_discard_ex(up, count_discard, slot_new(cr, 1), slot_free));
}

/* min_allocs: a source makes its publisher, the run its subscriber; an
 * operator also allocates its per-subscription state. Every source that
 * waits for demand, and every operator, allocates at subscribe time, so some
 * run must end with on_error(ENOMEM); empty and fail need not. */
static const pub_case ctor_cases[] = {
    { .name = "rill_range", .build = build_range, .initial_request = RILL_UNBOUNDED,
      .items = { 1, 2, 3, 4, 5 }, .nitems = 5, .min_allocs = 2, .needs_subscribe_enomem = 1 },
    { .name = "rill_from_array", .build = build_from_array, .initial_request = 2,
      .request_each = 1, .items = { 10, 20, 30 }, .nitems = 3, .min_allocs = 2,
      .needs_subscribe_enomem = 1 },
    { .name = "rill_just", .build = build_just, .initial_request = 1,
      .items = { 42 }, .nitems = 1, .min_allocs = 2, .needs_subscribe_enomem = 1 },
    { .name = "rill_empty", .build = build_empty, .initial_request = 0,
      .nitems = 0, .min_allocs = 1 },
    { .name = "rill_fail", .build = build_fail, .initial_request = 0,
      .error_code = EIO, .error_message = "chaos", .min_allocs = 2 },
    { .name = "rill_generate", .build = build_generate, .initial_request = RILL_UNBOUNDED,
      .items = { 1, 2, 3, 4 }, .nitems = 4, .min_allocs = 2, .needs_subscribe_enomem = 1 },
    { .name = "rill_generate_ex", .build = build_generate_ex, .initial_request = 1,
      .request_each = 1, .items = { 1, 2, 3 }, .nitems = 3, .gen_last = 3, .min_allocs = 2,
      .needs_subscribe_enomem = 1 },
    { .name = "rill_map", .prepare = prep_range4, .build = build_map,
      .initial_request = RILL_UNBOUNDED, .items = { 10, 20, 30, 40 }, .nitems = 4,
      .min_allocs = 3, .needs_subscribe_enomem = 1 },
    { .name = "rill_map_ex", .prepare = prep_range4, .build = build_map_ex,
      .initial_request = 1, .request_each = 1, .items = { 10, 20, 30, 40 }, .nitems = 4,
      .min_allocs = 3, .needs_subscribe_enomem = 1 },
    { .name = "rill_filter", .prepare = prep_range6, .build = build_filter,
      .initial_request = RILL_UNBOUNDED, .items = { 2, 4, 6 }, .nitems = 3,
      .min_allocs = 3, .needs_subscribe_enomem = 1 },
    { .name = "rill_filter_ex", .prepare = prep_range6, .build = build_filter_ex,
      .initial_request = 1, .request_each = 1, .items = { 2, 4, 6 }, .nitems = 3,
      .min_allocs = 3, .needs_subscribe_enomem = 1 },
    { .name = "rill_take", .prepare = prep_range10, .build = build_take,
      .initial_request = RILL_UNBOUNDED, .items = { 1, 2, 3 }, .nitems = 3,
      .min_allocs = 3, .needs_subscribe_enomem = 1 },
    { .name = "rill_on_discard", .prepare = prep_evens, .build = build_on_discard,
      .initial_request = RILL_UNBOUNDED, .items = { 2, 4, 6 }, .nitems = 3,
      .discards = 3, .discard_sum = 1 + 3 + 5, .min_allocs = 3, .needs_subscribe_enomem = 1 },
    { .name = "rill_on_discard_ex", .prepare = prep_evens, .build = build_on_discard_ex,
      .initial_request = 1, .request_each = 1, .items = { 2, 4, 6 }, .nitems = 3,
      .discards = 3, .discard_sum = 1 + 3 + 5, .min_allocs = 3, .needs_subscribe_enomem = 1 },
};

#define N_CTOR_CASES ((int)(sizeof ctor_cases / sizeof ctor_cases[0]))

START_TEST(test_chaos_constructor)
{
    const pub_case *pc = &ctor_cases[_i];
    chaos_loop(pc->name, pub_iteration, pc, pc->min_allocs, pc->needs_subscribe_enomem);
}
END_TEST

/* ------------------------------------------------------------------------
 * Whole pipelines, every constructor inside the window. */

/* range → map_ex(×10) → filter_ex(multiples of 20) → take(3) → on_discard_ex */
static rill_publisher *build_long_chain(chaos_run *cr, rill_publisher *up)
{
    (void)up;
    rill_publisher *p = STEP(cr, rill_range(1, 20));
    p = STEP(cr, rill_map_ex(p, times10, slot_new(cr, 1), slot_free));
    p = STEP(cr, rill_filter_ex(p, keep_mult20, slot_new(cr, 1), slot_free));
    p = STEP(cr, rill_take(p, 3));
    return STEP(cr, rill_on_discard_ex(p, count_discard, slot_new(cr, 1), slot_free));
}

/* generate_ex(1..10) → filter(odd) → on_discard → on_discard_ex → take(3) */
static rill_publisher *build_generated_chain(chaos_run *cr, rill_publisher *up)
{
    (void)up;
    rill_publisher *p = STEP(cr, rill_generate_ex(gen_init, gen_count, gen_free,
                                                  slot_new(cr, 1), slot_free));
    p = STEP(cr, rill_filter(p, keep_odd, NULL));
    p = STEP(cr, rill_on_discard(p, count_discard, slot_new(cr, 0)));
    p = STEP(cr, rill_on_discard_ex(p, count_discard, slot_new(cr, 1), slot_free));
    return STEP(cr, rill_take(p, 3));
}

/* fail(EIO) → map → on_discard_ex: the normal result is an error. */
static rill_publisher *build_failing_chain(chaos_run *cr, rill_publisher *up)
{
    (void)up;
    rill_publisher *p = STEP(cr, rill_fail(EIO, "chaos"));
    p = STEP(cr, rill_map(p, times10, NULL));
    return STEP(cr, rill_on_discard_ex(p, count_discard, slot_new(cr, 1), slot_free));
}

/* from_array → map_ex → take(0): completes right after on_subscribe. */
static rill_publisher *build_take0_chain(chaos_run *cr, rill_publisher *up)
{
    (void)up;
    rill_publisher *p = STEP(cr, rill_from_array(array_items, 3));
    p = STEP(cr, rill_map_ex(p, times10, slot_new(cr, 1), slot_free));
    return STEP(cr, rill_take(p, 0));
}

/* min_allocs: the publishers, the subscriber, and at least one allocation
 * per stage at subscribe time (a conservative count). */
static const pub_case pipeline_cases[] = {
    { .name = "range-map_ex-filter_ex-take-on_discard_ex, unbounded",
      .build = build_long_chain, .initial_request = RILL_UNBOUNDED,
      .items = { 20, 40, 60 }, .nitems = 3, .discards = 3, .discard_sum = 10 + 30 + 50,
      .min_allocs = 8, .needs_subscribe_enomem = 1 },
    { .name = "range-map_ex-filter_ex-take-on_discard_ex, one at a time",
      .build = build_long_chain, .initial_request = 1, .request_each = 1,
      .items = { 20, 40, 60 }, .nitems = 3, .discards = 3, .discard_sum = 10 + 30 + 50,
      .min_allocs = 8, .needs_subscribe_enomem = 1 },
    /* each of 2 and 4 reaches both hooks */
    { .name = "generate_ex-filter-on_discard-on_discard_ex-take",
      .build = build_generated_chain, .initial_request = 2, .request_each = 1,
      .items = { 1, 3, 5 }, .nitems = 3, .discards = 4, .discard_sum = 2 * (2 + 4),
      .gen_last = 10, .min_allocs = 8, .needs_subscribe_enomem = 1 },
    { .name = "fail-map-on_discard_ex", .build = build_failing_chain,
      .initial_request = RILL_UNBOUNDED, .error_code = EIO, .error_message = "chaos",
      .min_allocs = 5, .needs_subscribe_enomem = 1 },
    { .name = "from_array-map_ex-take(0)", .build = build_take0_chain,
      .initial_request = RILL_UNBOUNDED, .min_allocs = 5, .needs_subscribe_enomem = 1 },
};

#define N_PIPELINE_CASES ((int)(sizeof pipeline_cases / sizeof pipeline_cases[0]))

START_TEST(test_chaos_pipeline)
{
    const pub_case *pc = &pipeline_cases[_i];
    chaos_loop(pc->name, pub_iteration, pc, pc->min_allocs, pc->needs_subscribe_enomem);
}
END_TEST

/* ------------------------------------------------------------------------
 * Constructors that make no publisher. */

/* arg: the message, or NULL for strerror's text. */
static long error_iteration(const void *arg, long n, int *enomem)
{
    const char *msg = arg;
    (void)enomem;
    window_open(n);
    errno = 0;
    rill_error *e = rill_error_new(ENOENT, msg);
    int err = errno;
    long used = window_close();

    if (!e) {
        EXPECT(n > 0 && used >= n);
        EXPECT_EQ(err, ENOMEM);
        return used;
    }
    EXPECT_EQ(rill_error_code(e), ENOENT);
    EXPECT(strcmp(rill_error_message(e), msg ? msg : strerror(ENOENT)) == 0);
    EXPECT(rill_error_ref(e) == e);
    rill_error_unref(e);
    rill_error_unref(e);
    return used;
}

START_TEST(test_chaos_error_new)
{
    chaos_loop("rill_error_new", error_iteration, "disk on fire", 1, 0);
}
END_TEST

START_TEST(test_chaos_error_new_strerror)
{
    chaos_loop("rill_error_new(message NULL)", error_iteration, NULL, 1, 0);
}
END_TEST

/* A subscriber of plain callbacks with no on_subscribe (so it requests
 * RILL_UNBOUNDED by itself), subscribed to rill_just(7). */
typedef struct plain_user {
    int nexts, errors, completes, releases;
    int error_code;
    intptr_t item;
} plain_user;

static void plain_next(void *user, void *item)
{
    plain_user *u = user;
    u->nexts++;
    u->item = (intptr_t)item;
}

static void plain_error(void *user, const rill_error *e)
{
    plain_user *u = user;
    u->errors++;
    u->error_code = rill_error_code(e);
}

static void plain_complete(void *user)
{
    ((plain_user *)user)->completes++;
}

static void plain_release(void *user)
{
    ((plain_user *)user)->releases++;
}

static const rill_callbacks plain_callbacks = {
    .on_next = plain_next,
    .on_error = plain_error,
    .on_complete = plain_complete,
    .on_release = plain_release,
};

static void judge_plain_run(const plain_user *u, rill_subscriber *s, int err, long n,
                            long used, int *enomem)
{
    EXPECT_EQ(u->releases, 1);
    if (!s) {
        EXPECT(n > 0 && used >= n);
        EXPECT_EQ(err, ENOMEM);
        EXPECT_EQ(u->nexts + u->errors + u->completes, 0);
    } else if (u->errors) {
        EXPECT(n > 0 && used >= n);
        EXPECT_EQ(u->error_code, ENOMEM);
        EXPECT_EQ(u->errors, 1);
        EXPECT_EQ(u->nexts + u->completes, 0);
        (*enomem)++;
    } else {
        EXPECT_EQ(u->nexts, 1);
        EXPECT_EQ(u->item, 7);
        EXPECT_EQ(u->completes, 1);
    }
}

static long subscriber_iteration(const void *arg, long n, int *enomem)
{
    (void)arg;
    plain_user u = { 0 };
    rill_publisher *p = rill_just((void *)7);
    ck_assert_ptr_nonnull(p);

    window_open(n);
    errno = 0;
    rill_subscriber *s = rill_subscriber_new(&plain_callbacks, &u);
    int err = errno;
    if (s)
        rill_subscribe(p, s);
    long used = window_close();

    judge_plain_run(&u, s, err, n, used, enomem);
    rill_publisher_unref(p);
    return used;
}

START_TEST(test_chaos_subscriber_new)
{
    chaos_loop("rill_subscriber_new", subscriber_iteration, NULL, 1, 0);
}
END_TEST

/* rill_context_new in front of a context made before the window. */
static void judge_context_run(chaos_run *cr, rill_context *c, int err, long n, long used)
{
    chaos_slot *near = &cr->slots[1], *far = &cr->slots[0];
    if (!c) {
        EXPECT(n > 0 && used >= n);
        EXPECT_EQ(err, ENOMEM);
        EXPECT_EQ(near->freed, 1);   /* at once: nothing references it */
        EXPECT_EQ(far->freed, 0);    /* still ours */
        return;
    }
    rill_context_discard(c, (void *)5);
    EXPECT_EQ(cr->norder, 2);
    EXPECT_EQ(cr->order[0], 1);      /* nearest first */
    EXPECT_EQ(cr->order[1], 0);
    EXPECT_EQ(cr->discard_sum, 10);
    EXPECT_EQ(near->freed + far->freed, 0);
    rill_context_unref(c);
    EXPECT_EQ(near->freed, 1);
    EXPECT_EQ(far->freed, 0);
}

static long context_iteration(const void *arg, long n, int *enomem)
{
    (void)arg;
    (void)enomem;
    chaos_run cr;
    run_init(&cr, 0);
    chaos_slot *far = slot_new(&cr, 1), *near = slot_new(&cr, 1);
    rill_context *next = rill_context_new(count_discard, far, slot_free, NULL);
    ck_assert_ptr_nonnull(next);

    window_open(n);
    errno = 0;
    rill_context *c = rill_context_new(count_discard, near, slot_free, next);
    int err = errno;
    long used = window_close();

    judge_context_run(&cr, c, err, n, used);
    rill_context_unref(next);
    expect_slots_freed(&cr, 1);
    return used;
}

START_TEST(test_chaos_context_new)
{
    chaos_loop("rill_context_new", context_iteration, NULL, 1, 0);
}
END_TEST

/* ------------------------------------------------------------------------
 * rill_set_allocator. The runner has installed the counting allocator; these
 * tests must leave it in place (except the fresh-process one, below). */

static long mine_calls, mine_live;

static void *mine_malloc(size_t n)
{
    mine_calls++;
    void *p = malloc(n);
    if (p)
        mine_live++;
    return p;
}

static void *mine_realloc(void *p, size_t n)
{
    mine_calls++;
    void *q = realloc(p, n);
    if (q && !p)
        mine_live++;
    return q;
}

static void mine_free(void *p)
{
    if (p)
        mine_live--;
    free(p);
}

/* The counting allocator serves rill, and mine is untouched. */
static void expect_counting_allocator_in_use(void)
{
    long base = live_allocations(), calls = counting_allocator_calls();
    recorder *r = rec_new(RILL_UNBOUNDED);
    rill_publisher *p = rill_range(0, 3);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_gt(live_allocations(), base);
    rill_subscribe(p, rec_subscriber(r));
    ck_assert_int_gt(counting_allocator_calls(), calls + 1);
    ck_assert(rec_ok(r));
    ck_assert_uint_eq(r->nitems, 3);
    ck_assert_int_eq(r->completes, 1);
    rill_publisher_unref(p);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
    ck_assert_int_eq(mine_calls, 0);
}

static void expect_einval_refusals(void)
{
    ck_assert_int_eq(rill_set_allocator(NULL, mine_realloc, mine_free), EINVAL);
    ck_assert_int_eq(rill_set_allocator(mine_malloc, mine_realloc, NULL), EINVAL);
    ck_assert_int_eq(rill_set_allocator(mine_malloc, NULL, NULL), EINVAL);
    ck_assert_int_eq(rill_set_allocator(NULL, NULL, NULL), EINVAL);
}

START_TEST(test_set_allocator_einval)
{
    long base = live_allocations();
    /* In fork mode the library may not have allocated yet: NULL functions
     * are refused then too, and do not replace the counting allocator. */
    expect_einval_refusals();
    expect_counting_allocator_in_use();
    /* ... and after it has allocated, argument errors still say EINVAL. */
    expect_einval_refusals();
    expect_counting_allocator_in_use();
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(test_set_allocator_ebusy)
{
    long base = live_allocations();
    rill_publisher *p = rill_just(NULL);
    ck_assert_ptr_nonnull(p);
    /* while memory from the current allocator is live ... */
    ck_assert_int_eq(rill_set_allocator(mine_malloc, mine_realloc, mine_free), EBUSY);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
    /* ... and after it has all been freed: the allocator has been used. */
    ck_assert_int_eq(rill_set_allocator(mine_malloc, mine_realloc, mine_free), EBUSY);
    ck_assert_int_eq(rill_set_allocator(mine_malloc, NULL, mine_free), EBUSY);
    expect_counting_allocator_in_use();
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Registered only in fork mode: it replaces the allocator for the rest of
 * its (child) process. Nothing has allocated through rill yet there, so a
 * new allocator — without realloc, which is optional — is accepted. */
START_TEST(test_set_allocator_fresh_process)
{
    ck_assert_msg(counting_allocator_calls() == 0,
                  "the library allocated before this test (%ld calls)",
                  counting_allocator_calls());
    ck_assert_int_eq(rill_set_allocator(mine_malloc, NULL, mine_free), 0);
    long counted = counting_allocator_calls();

    recorder *r = rec_new(RILL_UNBOUNDED);
    rill_publisher *p = rill_just((void *)5);
    ck_assert_ptr_nonnull(p);
    rill_subscribe(p, rec_subscriber(r));
    ck_assert(rec_ok(r));
    ck_assert_int_eq(rec_int(r, 0), 5);
    ck_assert_int_eq(r->completes, 1);
    rill_publisher_unref(p);
    rec_free(r);

    ck_assert_int_gt(mine_calls, 1);
    ck_assert_int_eq(mine_live, 0);
    ck_assert_int_eq(counting_allocator_calls(), counted);
    /* Now mine has been used: it can no longer be replaced. */
    ck_assert_int_eq(rill_set_allocator(mine_malloc, mine_realloc, mine_free), EBUSY);
}
END_TEST

static int fork_mode(void)
{
    const char *f = getenv("CK_FORK");
    return !(f && strcmp(f, "no") == 0);
}

Suite *alloc_suite(void)
{
    Suite *s = suite_create("alloc");

    TCase *tc = tcase_create("set_allocator");
    tcase_add_test(tc, test_set_allocator_einval);
    tcase_add_test(tc, test_set_allocator_ebusy);
    if (fork_mode())
        tcase_add_test(tc, test_set_allocator_fresh_process);
    suite_add_tcase(s, tc);

    tc = tcase_create("chaos_constructors");
    tcase_add_test(tc, test_chaos_error_new);
    tcase_add_test(tc, test_chaos_error_new_strerror);
    tcase_add_test(tc, test_chaos_subscriber_new);
    tcase_add_test(tc, test_chaos_context_new);
    tcase_add_loop_test(tc, test_chaos_constructor, 0, N_CTOR_CASES);
    suite_add_tcase(s, tc);

    tc = tcase_create("chaos_pipelines");
    tcase_add_loop_test(tc, test_chaos_pipeline, 0, N_PIPELINE_CASES);
    suite_add_tcase(s, tc);

    return s;
}
