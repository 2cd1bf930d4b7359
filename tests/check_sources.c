/* tests/check_sources.c — the synchronous sources of rill/sources.h:
 * rill_range, rill_from_array, rill_just, rill_empty, rill_fail,
 * rill_generate and rill_generate_ex.
 *
 * Most behaviour is common to every source that emits items (exact demand,
 * request(0), re-entrant request, saturation, cancel, replay), so those
 * tests are written once against a table of sources and registered as loop
 * tests: each source's TCase runs them with its own table index. The same
 * goes for the sources that signal without any item (empty, fail, range with
 * count 0, from_array of nothing). Tests peculiar to one source follow the
 * generic ones.
 *
 * Every test checks for leaks through the runner's counting allocator. Loops
 * over many items use plain `if` and ck_abort_msg rather than ck_assert:
 * every passing ck_assert records a mark point, which in fork mode is a
 * write to the runner, far too slow for a million items.
 */
#include "recorder.h"
#include "suites.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------
 * Helpers */

/* A million items normally; RILL_TEST_QUICK (valgrind) shrinks the loop. */
static size_t big_count(void)
{
    return getenv("RILL_TEST_QUICK") ? 20000 : 1000000;
}

#define check_ok(r) ck_assert_msg(rec_ok(r), "protocol violation: %s", (r)->violation)

/* The recorder holds exactly the n integers first, first + 1, ... */
static void check_items(const recorder *r, intptr_t first, size_t n)
{
    ck_assert_uint_eq(r->nitems, n);
    for (size_t i = 0; i < n; i++) {
        if (rec_int(r, i) != first + (intptr_t)i)
            ck_abort_msg("item %zu: expected %" PRIdPTR ", got %" PRIdPTR, i,
                         first + (intptr_t)i, rec_int(r, i));
    }
}

/* Exactly those items, then exactly one on_complete, then on_release. */
static void check_completed(const recorder *r, intptr_t first, size_t n)
{
    check_items(r, first, n);
    ck_assert_int_eq(r->subscribes, 1);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->errors, 0);
    ck_assert_int_eq(r->releases, 1);
    check_ok(r);
}

/* Exactly those items, and the stream is still open (not released). */
static void check_open(const recorder *r, intptr_t first, size_t n)
{
    check_items(r, first, n);
    ck_assert_int_eq(r->completes, 0);
    ck_assert_int_eq(r->errors, 0);
    ck_assert_int_eq(r->releases, 0);
    check_ok(r);
}

/* Ended by on_error(code) and released. */
static void check_failed(const recorder *r, int code)
{
    ck_assert_int_eq(r->subscribes, 1);
    ck_assert_int_eq(r->completes, 0);
    ck_assert_int_eq(r->errors, 1);
    ck_assert_int_eq(r->error_code, code);
    ck_assert_int_eq(r->releases, 1);
    check_ok(r);
}

/* Cancelled by the subscriber: no terminal signal, released once. */
static void check_cancelled(const recorder *r)
{
    ck_assert_int_eq(r->subscribes, 1);
    ck_assert_int_eq(r->completes, 0);
    ck_assert_int_eq(r->errors, 0);
    ck_assert_int_eq(r->releases, 1);
    check_ok(r);
}

/* ---- stack depth: request(1) from inside on_next must not recurse ---- */

typedef struct stack_span {
    uintptr_t lo, hi;
} stack_span;

static uintptr_t stack_position(void)
{
#if defined(__GNUC__)
    /* The frame address rather than a local's address: under ASan a local
     * may live on a heap "fake stack" that says nothing about depth. */
    return (uintptr_t)__builtin_frame_address(0);
#else
    volatile char here = 0;
    return (uintptr_t)&here;
#endif
}

static void record_depth(recorder *r, void *item)
{
    (void)item;
    stack_span *s = r->user;
    uintptr_t at = stack_position();
    if (s->lo == 0 || at < s->lo)
        s->lo = at;
    if (at > s->hi)
        s->hi = at;
}

/* Subscribes to p (borrowed) asking for one item at a time from inside
 * on_next; checks that all n items arrive, in order, then completion, and
 * that on_next always ran at (nearly) the same stack depth. */
static void check_flat_stack(rill_publisher *p, intptr_t first, size_t n)
{
    stack_span span = { 0, 0 };
    recorder *r = rec_new(1);
    r->request_each = 1;
    r->on_next_hook = record_depth;
    r->user = &span;
    rill_subscribe(p, rec_subscriber(r));
    check_completed(r, first, n);
    ck_assert_msg(span.hi - span.lo < 4096,
                  "on_next stack depth varied by %ju bytes over %zu items: request recursed",
                  (uintmax_t)(span.hi - span.lo), n);
    rec_free(r);
}

/* ---- a subscriber that cancels inside on_subscribe ---- */

typedef struct tally {
    int subscribes, nexts, completes, errors, releases;
    int released_inside_subscribe;
} tally;

static void tally_subscribe(void *user, rill_subscription *s)
{
    tally *t = user;
    t->subscribes++;
    rill_cancel(s);
    /* Everything after the cancel is a no-op; request(0) must not error. */
    rill_request(s, 5);
    rill_request(s, 0);
    rill_cancel(s);
    t->released_inside_subscribe = t->releases;
}

static void tally_next(void *user, void *item)
{
    (void)item;
    ((tally *)user)->nexts++;
}

static void tally_error(void *user, const rill_error *e)
{
    (void)e;
    ((tally *)user)->errors++;
}

static void tally_complete(void *user)
{
    ((tally *)user)->completes++;
}

static void tally_release(void *user)
{
    ((tally *)user)->releases++;
}

static const rill_callbacks cancel_in_subscribe_callbacks = {
    .on_subscribe = tally_subscribe,
    .on_next = tally_next,
    .on_error = tally_error,
    .on_complete = tally_complete,
    .on_release = tally_release,
};

/* Asks for RILL_UNBOUNDED - 1 twice, then 5, all before the first item:
 * modulo 2^64 that is 1, so a counter that wraps instead of saturating
 * delivers one item only. */
static void tally_subscribe_huge(void *user, rill_subscription *s)
{
    ((tally *)user)->subscribes++;
    rill_request(s, RILL_UNBOUNDED - 1);
    rill_request(s, RILL_UNBOUNDED - 1);
    rill_request(s, 5);
}

static const rill_callbacks huge_in_subscribe_callbacks = {
    .on_subscribe = tally_subscribe_huge,
    .on_next = tally_next,
    .on_error = tally_error,
    .on_complete = tally_complete,
    .on_release = tally_release,
};

/* Subscribes a subscriber that cancels inside on_subscribe: nothing but the
 * release may follow, and the release comes after on_subscribe returned. */
static void check_cancel_in_subscribe(rill_publisher *p)
{
    tally *t = calloc(1, sizeof *t);
    ck_assert_ptr_nonnull(t);
    rill_subscribe(p, rill_subscriber_new(&cancel_in_subscribe_callbacks, t));
    ck_assert_int_eq(t->subscribes, 1);
    ck_assert_int_eq(t->nexts, 0);
    ck_assert_int_eq(t->completes, 0);
    ck_assert_int_eq(t->errors, 0);
    ck_assert_int_eq(t->releases, 1);
    ck_assert_int_eq(t->released_inside_subscribe, 0);
    free(t);
}

/* ---- hooks that run inside on_next ---- */

typedef struct cancel_plan {
    size_t at;                  /* cancel inside the on_next that brings this many items */
    int released_inside;        /* releases seen inside that on_next, after the cancel */
    int cancelled;
} cancel_plan;

/* Cancels, then pokes the dead subscription (request, request(0), cancel),
 * all inside the same on_next: every poke must be a no-op. */
static void cancel_then_poke(recorder *r, void *item)
{
    (void)item;
    cancel_plan *c = r->user;
    if (r->nitems != c->at)
        return;
    rill_subscription *s = r->sub;
    rill_cancel(s);
    rill_request(s, 5);
    rill_cancel(s);
    rill_request(s, 0);
    rill_request(s, RILL_UNBOUNDED);
    c->released_inside = r->releases;
    c->cancelled = 1;
}

/* After the first item the outstanding demand is RILL_UNBOUNDED - 2 (the
 * recorder asked for RILL_UNBOUNDED - 1). Two more requests of
 * RILL_UNBOUNDED - 1 and one of 7 add up, modulo 2^64, to exactly 0: a
 * counter that wraps instead of saturating stalls after this item. */
static void request_huge(recorder *r, void *item)
{
    (void)item;
    if (r->nitems != 1)
        return;
    rec_request(r, RILL_UNBOUNDED - 1);
    rec_request(r, RILL_UNBOUNDED - 1);
    rec_request(r, 7);
}

static void request_zero_at_first(recorder *r, void *item)
{
    (void)item;
    if (r->nitems == 1)
        rill_request(r->sub, 0);
}

/* ------------------------------------------------------------------------
 * Generators for rill_generate and rill_generate_ex */

/* A counting generator. With rill_generate_ex, gen_init makes one gen_state
 * per subscription; with rill_generate (or init NULL), one gen_state is the
 * shared ctx. */
typedef struct gen_ctx {
    intptr_t first;
    size_t n;               /* items per state */
    int use_last;           /* 1: the n-th item comes with LAST; 0: END on the next call */
    int fail_code;          /* non-zero: return -fail_code once fail_after items were made */
    size_t fail_after;
    int init_error;         /* non-zero: gen_init fails with it */
    int init_calls, states, state_frees, ctx_frees;
    long calls;             /* calls of gen_next */
} gen_ctx;

typedef struct gen_state {
    gen_ctx *ctx;
    intptr_t next;
    size_t made;
} gen_state;

static int gen_init(void *ctx, void **state)
{
    gen_ctx *c = ctx;
    c->init_calls++;
    if (c->init_error)
        return c->init_error;
    gen_state *s = malloc(sizeof *s);
    if (!s)
        return ENOMEM;
    *s = (gen_state){ .ctx = c, .next = c->first, .made = 0 };
    c->states++;
    *state = s;
    return 0;
}

static int gen_next(void *state, void **item)
{
    gen_state *s = state;
    gen_ctx *c = s->ctx;
    c->calls++;
    if (c->fail_code && s->made == c->fail_after)
        return -c->fail_code;
    if (s->made == c->n)
        return RILL_GENERATE_END;
    *item = (void *)s->next++;
    s->made++;
    return c->use_last && s->made == c->n ? RILL_GENERATE_LAST : RILL_GENERATE_NEXT;
}

static void gen_state_free(void *state)
{
    gen_state *s = state;
    s->ctx->state_frees++;
    free(s);
}

static void gen_ctx_free(void *ctx)
{
    ((gen_ctx *)ctx)->ctx_frees++;
}

/* With init NULL the state is the ctx: a gen_state whose gen_ctx counts. */
static void gen_shared_ctx_free(void *ctx)
{
    ((gen_state *)ctx)->ctx->ctx_frees++;
}

static rill_publisher *gen_ex_new(gen_ctx *c)
{
    return rill_generate_ex(gen_init, gen_next, gen_state_free, c, gen_ctx_free);
}

/* A scripted generator: the i-th call returns codes[i] (END past the end).
 * It stores an item (10 * (i + 1)) on every call, even when it returns END or
 * an error, so that a source delivering an item it should not shows up. */
typedef struct script {
    const int *codes;
    size_t n;
    size_t calls;
} script;

static int script_next(void *state, void **item)
{
    script *s = state;
    size_t i = s->calls++;
    *item = (void *)(intptr_t)(10 * (i + 1));
    return i < s->n ? s->codes[i] : RILL_GENERATE_END;
}

/* The recorder holds the script's first n items: 10, 20, ... */
static void check_script_items(const recorder *r, size_t n)
{
    ck_assert_uint_eq(r->nitems, n);
    for (size_t i = 0; i < n; i++)
        ck_assert_int_eq(rec_int(r, i), 10 * (intptr_t)(i + 1));
}

#define SCRIPT(...)                                                            \
    ((script){ .codes = (const int[]){ __VA_ARGS__ },                          \
               .n = sizeof (int[]){ __VA_ARGS__ } / sizeof (int) })

/* ------------------------------------------------------------------------
 * Sources that emit items: the table the generic tests run against */

typedef struct item_source {
    const char *name;
    rill_publisher *(*make)(void);
    intptr_t first;        /* the stream is first, first + 1, ..., n items */
    size_t n;
    void (*verify)(void);  /* optional; runs after the publisher's last unref */
} item_source;

static rill_publisher *make_range(void)
{
    return rill_range(-3, 10);
}

static rill_publisher *make_from_array(void)
{
    void *items[10];
    for (int i = 0; i < 10; i++)
        items[i] = (void *)(intptr_t)(100 + i);
    return rill_from_array(items, 10);
}

static rill_publisher *make_just(void)
{
    return rill_just((void *)(intptr_t)42);
}

/* The generic tests' generate_ex counts here; make resets it. */
static gen_ctx table_gen;

static rill_publisher *make_generate_ex(void)
{
    table_gen = (gen_ctx){ .first = 1000, .n = 10, .use_last = 1 };
    return gen_ex_new(&table_gen);
}

/* Every state made was freed, and ctx_free ran once, now that the
 * publisher and its subscriptions are gone. */
static void verify_generate_ex(void)
{
    ck_assert_int_eq(table_gen.state_frees, table_gen.states);
    ck_assert_int_eq(table_gen.ctx_frees, 1);
}

enum { SRC_RANGE, SRC_FROM_ARRAY, SRC_JUST, SRC_GENERATE_EX, N_ITEM_SOURCES };

static const item_source item_sources[N_ITEM_SOURCES] = {
    [SRC_RANGE] = { "range", make_range, -3, 10, NULL },
    [SRC_FROM_ARRAY] = { "from_array", make_from_array, 100, 10, NULL },
    [SRC_JUST] = { "just", make_just, 42, 1, NULL },
    [SRC_GENERATE_EX] = { "generate_ex", make_generate_ex, 1000, 10, verify_generate_ex },
};

static rill_publisher *item_source_new(const item_source *src)
{
    rill_publisher *p = src->make();
    ck_assert_msg(p != NULL, "%s: constructor failed (errno %d)", src->name, errno);
    return p;
}

static void item_source_done(const item_source *src, rill_publisher *p, long base)
{
    rill_publisher_unref(p);
    if (src->verify)
        src->verify();
    ck_assert_int_eq(live_allocations(), base);
}

/* request(n): all n items, then completion at once, with no extra request. */
START_TEST(src_exact_demand)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    recorder *r = rec_run(p, src->n);
    check_completed(r, src->first, src->n);
    rec_free(r);
    item_source_done(src, p, base);
}
END_TEST

START_TEST(src_unbounded)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    check_completed(r, src->first, src->n);
    rec_free(r);
    item_source_done(src, p, base);
}
END_TEST

/* 3 of 10, then the other 7 (for just: nothing, then its one item). */
START_TEST(src_split_demand)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    size_t k = src->n * 3 / 10;
    recorder *r = rec_run(p, k);
    check_open(r, src->first, k);
    rec_request(r, src->n - k);
    check_completed(r, src->first, src->n);
    rec_free(r);
    item_source_done(src, p, base);
}
END_TEST

/* Without a request nothing arrives; a cancel then just releases. */
START_TEST(src_no_request)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    recorder *r = rec_run(p, 0);
    ck_assert_int_eq(r->subscribes, 1);
    check_open(r, src->first, 0);
    rill_cancel(r->sub);
    check_items(r, src->first, 0);
    check_cancelled(r);
    rec_free(r);
    item_source_done(src, p, base);
}
END_TEST

/* request(1) from outside, n times: each brings exactly one item, and the
 * last one brings the completion with it. */
START_TEST(src_one_at_a_time)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    recorder *r = rec_run(p, 0);
    for (size_t i = 0; i + 1 < src->n; i++) {
        rec_request(r, 1);
        check_open(r, src->first, i + 1);
    }
    rec_request(r, 1);
    check_completed(r, src->first, src->n);
    rec_free(r);
    item_source_done(src, p, base);
}
END_TEST

START_TEST(src_request_zero_first)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    recorder *r = rec_run(p, 0);
    rec_request(r, 0);
    check_items(r, src->first, 0);
    check_failed(r, EINVAL);
    rec_free(r);
    item_source_done(src, p, base);
}
END_TEST

/* request(0) after some items: no more items, on_error(EINVAL). */
START_TEST(src_request_zero_midway)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    size_t k = src->n / 2;
    recorder *r = rec_run(p, k);
    check_open(r, src->first, k);
    rec_request(r, 0);
    check_items(r, src->first, k);
    check_failed(r, EINVAL);
    rec_free(r);
    item_source_done(src, p, base);
}
END_TEST

/* request(0) inside the first on_next, with items still to come and more
 * demand asked right after it (the recorder's request_each): the error wins,
 * no item follows. Registered for sources of two items or more. */
START_TEST(src_request_zero_in_on_next)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    recorder *r = rec_new(1);
    r->request_each = 1;
    r->on_next_hook = request_zero_at_first;
    rill_subscribe(p, rec_subscriber(r));
    check_items(r, src->first, 1);
    check_failed(r, EINVAL);
    rec_free(r);
    item_source_done(src, p, base);
}
END_TEST

START_TEST(src_request_each_in_on_next)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    recorder *r = rec_new(1);
    r->request_each = 1;
    rill_subscribe(p, rec_subscriber(r));
    check_completed(r, src->first, src->n);
    rec_free(r);
    item_source_done(src, p, base);
}
END_TEST

/* Rule 3.17: demand saturates at RILL_UNBOUNDED and never errors. */
START_TEST(src_demand_saturates)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    recorder *r = rec_new(RILL_UNBOUNDED - 1);
    r->on_next_hook = request_huge;
    rill_subscribe(p, rec_subscriber(r));
    check_completed(r, src->first, src->n);
    rec_free(r);
    item_source_done(src, p, base);
}
END_TEST

/* Rule 3.17 before the first item: demand piled up inside on_subscribe. */
START_TEST(src_demand_saturates_in_subscribe)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    tally *t = calloc(1, sizeof *t);
    ck_assert_ptr_nonnull(t);
    rill_subscribe(p, rill_subscriber_new(&huge_in_subscribe_callbacks, t));
    ck_assert_int_eq(t->nexts, (int)src->n);
    ck_assert_int_eq(t->completes, 1);
    ck_assert_int_eq(t->errors, 0);
    ck_assert_int_eq(t->releases, 1);
    free(t);
    item_source_done(src, p, base);
}
END_TEST

/* Cancel mid-stream (for just: in its only on_next, before the completion
 * it would send): no more items, no terminal signal, one release, and not
 * before on_next returned. */
START_TEST(src_cancel_midway)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    cancel_plan plan = { .at = (src->n + 1) / 2 };
    recorder *r = rec_new(src->n);
    r->on_next_hook = cancel_then_poke;
    r->user = &plan;
    rill_subscribe(p, rec_subscriber(r));
    ck_assert_int_eq(plan.cancelled, 1);
    ck_assert_int_eq(plan.released_inside, 0);
    check_items(r, src->first, plan.at);
    check_cancelled(r);
    rec_free(r);
    item_source_done(src, p, base);
}
END_TEST

/* The recorder's own cancel_after path (cancel, then nothing else). */
START_TEST(src_cancel_after)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    recorder *r = rec_new(RILL_UNBOUNDED);
    r->cancel_after = (int64_t)((src->n + 1) / 2);
    rill_subscribe(p, rec_subscriber(r));
    check_items(r, src->first, (src->n + 1) / 2);
    check_cancelled(r);
    rec_free(r);
    item_source_done(src, p, base);
}
END_TEST

/* Cancel from outside while paused between items. */
START_TEST(src_cancel_paused)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    size_t k = src->n / 2;
    recorder *r = rec_run(p, k);
    check_open(r, src->first, k);
    rill_subscription *s = r->sub;
    rill_cancel(s);
    check_items(r, src->first, k);
    check_cancelled(r);
    rec_free(r);
    item_source_done(src, p, base);
}
END_TEST

START_TEST(src_cancel_in_subscribe)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    check_cancel_in_subscribe(p);
    item_source_done(src, p, base);
}
END_TEST

/* Cold and reusable: a second subscription replays the whole stream. */
START_TEST(src_subscribe_twice)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    for (int round = 0; round < 2; round++) {
        recorder *r = rec_run(p, RILL_UNBOUNDED);
        check_completed(r, src->first, src->n);
        rec_free(r);
    }
    item_source_done(src, p, base);
}
END_TEST

/* A paused subscription A does not disturb B, nor B A. */
START_TEST(src_subscriptions_independent)
{
    const item_source *src = &item_sources[_i];
    long base = live_allocations();
    rill_publisher *p = item_source_new(src);
    size_t k = src->n > 2 ? 2 : src->n - 1;
    recorder *a = rec_run(p, k);
    check_open(a, src->first, k);
    recorder *b = rec_run(p, RILL_UNBOUNDED);
    check_completed(b, src->first, src->n);
    check_open(a, src->first, k);
    rec_request(a, src->n - k);
    check_completed(a, src->first, src->n);
    rec_free(a);
    rec_free(b);
    item_source_done(src, p, base);
}
END_TEST

static void add_item_source_tests(TCase *tc, int idx)
{
    tcase_add_loop_test(tc, src_exact_demand, idx, idx + 1);
    tcase_add_loop_test(tc, src_unbounded, idx, idx + 1);
    tcase_add_loop_test(tc, src_split_demand, idx, idx + 1);
    tcase_add_loop_test(tc, src_no_request, idx, idx + 1);
    tcase_add_loop_test(tc, src_one_at_a_time, idx, idx + 1);
    tcase_add_loop_test(tc, src_request_zero_first, idx, idx + 1);
    tcase_add_loop_test(tc, src_request_zero_midway, idx, idx + 1);
    if (item_sources[idx].n >= 2)
        tcase_add_loop_test(tc, src_request_zero_in_on_next, idx, idx + 1);
    tcase_add_loop_test(tc, src_request_each_in_on_next, idx, idx + 1);
    tcase_add_loop_test(tc, src_demand_saturates, idx, idx + 1);
    tcase_add_loop_test(tc, src_demand_saturates_in_subscribe, idx, idx + 1);
    tcase_add_loop_test(tc, src_cancel_midway, idx, idx + 1);
    tcase_add_loop_test(tc, src_cancel_after, idx, idx + 1);
    tcase_add_loop_test(tc, src_cancel_paused, idx, idx + 1);
    tcase_add_loop_test(tc, src_cancel_in_subscribe, idx, idx + 1);
    tcase_add_loop_test(tc, src_subscribe_twice, idx, idx + 1);
    tcase_add_loop_test(tc, src_subscriptions_independent, idx, idx + 1);
}

/* ------------------------------------------------------------------------
 * Sources that signal without any item or request */

typedef struct terminal_source {
    const char *name;
    rill_publisher *(*make)(void);
    int error_code;            /* 0: completes */
    const char *message;       /* expected error message, when error_code != 0 */
} terminal_source;

static rill_publisher *make_empty(void)
{
    return rill_empty();
}

static rill_publisher *make_fail(void)
{
    return rill_fail(ECONNRESET, "peer went away");
}

static rill_publisher *make_range_zero(void)
{
    return rill_range(7, 0);
}

static rill_publisher *make_from_array_none(void)
{
    return rill_from_array(NULL, 0);
}

enum { TSRC_EMPTY, TSRC_FAIL, TSRC_RANGE_ZERO, TSRC_FROM_ARRAY_NONE, N_TERMINAL_SOURCES };

static const terminal_source terminal_sources[N_TERMINAL_SOURCES] = {
    [TSRC_EMPTY] = { "empty", make_empty, 0, NULL },
    [TSRC_FAIL] = { "fail", make_fail, ECONNRESET, "peer went away" },
    [TSRC_RANGE_ZERO] = { "range(7, 0)", make_range_zero, 0, NULL },
    [TSRC_FROM_ARRAY_NONE] = { "from_array(NULL, 0)", make_from_array_none, 0, NULL },
};

static rill_publisher *terminal_source_new(const terminal_source *src)
{
    rill_publisher *p = src->make();
    ck_assert_msg(p != NULL, "%s: constructor failed (errno %d)", src->name, errno);
    return p;
}

static void check_terminal(const recorder *r, const terminal_source *src)
{
    check_items(r, 0, 0);
    if (src->error_code == 0) {
        check_completed(r, 0, 0);
        return;
    }
    check_failed(r, src->error_code);
    ck_assert_str_eq(r->error_message, src->message);
}

/* The terminal signal arrives without any request (initial_request 0). */
START_TEST(term_without_request)
{
    const terminal_source *src = &terminal_sources[_i];
    long base = live_allocations();
    rill_publisher *p = terminal_source_new(src);
    recorder *r = rec_run(p, 0);
    check_terminal(r, src);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A request made in on_subscribe changes nothing. */
START_TEST(term_with_request)
{
    const terminal_source *src = &terminal_sources[_i];
    long base = live_allocations();
    rill_publisher *p = terminal_source_new(src);
    recorder *r = rec_run(p, 5);
    check_terminal(r, src);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(term_cancel_in_subscribe)
{
    const terminal_source *src = &terminal_sources[_i];
    long base = live_allocations();
    rill_publisher *p = terminal_source_new(src);
    check_cancel_in_subscribe(p);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(term_subscribe_twice)
{
    const terminal_source *src = &terminal_sources[_i];
    long base = live_allocations();
    rill_publisher *p = terminal_source_new(src);
    for (int round = 0; round < 2; round++) {
        recorder *r = rec_run(p, round ? RILL_UNBOUNDED : 0);
        check_terminal(r, src);
        rec_free(r);
    }
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

static void add_terminal_source_tests(TCase *tc, int idx)
{
    tcase_add_loop_test(tc, term_without_request, idx, idx + 1);
    tcase_add_loop_test(tc, term_with_request, idx, idx + 1);
    tcase_add_loop_test(tc, term_cancel_in_subscribe, idx, idx + 1);
    tcase_add_loop_test(tc, term_subscribe_twice, idx, idx + 1);
}

/* ------------------------------------------------------------------------
 * rill_range */

START_TEST(range_negative_start)
{
    long base = live_allocations();
    rill_publisher *p = rill_range(-5, 4);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    check_completed(r, -5, 4);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

#if INTPTR_MAX >= INT64_MAX
/* Items travel as intptr_t: the extremes of int64_t need 64-bit words. */

START_TEST(range_near_int64_max)
{
    long base = live_allocations();
    rill_publisher *p = rill_range(INT64_MAX - 2, 3);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 3);
    check_completed(r, INT64_MAX - 2, 3);
    ck_assert(rec_int(r, 2) == INT64_MAX);
    rec_free(r);
    rill_publisher_unref(p);

    p = rill_range(INT64_MAX, 1);
    ck_assert_ptr_nonnull(p);
    r = rec_run(p, RILL_UNBOUNDED);
    check_completed(r, INT64_MAX, 1);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(range_from_int64_min)
{
    long base = live_allocations();
    rill_publisher *p = rill_range(INT64_MIN, 3);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    check_completed(r, INT64_MIN, 3);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The widest ranges that fit: the last item is INT64_MAX - 1 and INT64_MAX.
 * Only the first items are taken, then the subscription is cancelled. */
START_TEST(range_widest_fits)
{
    long base = live_allocations();
    rill_publisher *p = rill_range(INT64_MIN, UINT64_MAX);
    ck_assert_msg(p != NULL, "range(INT64_MIN, UINT64_MAX) ends at INT64_MAX - 1: it fits");
    recorder *r = rec_run(p, 3);
    check_open(r, INT64_MIN, 3);
    rill_cancel(r->sub);
    check_cancelled(r);
    rec_free(r);
    rill_publisher_unref(p);

    p = rill_range(-1, (uint64_t)INT64_MAX + 2);
    ck_assert_msg(p != NULL, "range(-1, INT64_MAX + 2) ends at INT64_MAX: it fits");
    r = rec_run(p, 3);
    check_open(r, -1, 3);
    rill_cancel(r->sub);
    check_cancelled(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST
#endif

static void check_range_refused(int64_t start, uint64_t count)
{
    errno = 0;
    rill_publisher *p = rill_range(start, count);
    ck_assert_msg(p == NULL, "range(%" PRId64 ", %" PRIu64 ") overflows but was accepted",
                  start, count);
    ck_assert_int_eq(errno, EINVAL);
}

/* start + count - 1 > INT64_MAX is EINVAL, computed without overflowing. */
START_TEST(range_overflow)
{
    long base = live_allocations();
    check_range_refused(INT64_MAX, 2);
    check_range_refused(INT64_MAX - 2, 4);
    check_range_refused(0, UINT64_MAX);
    check_range_refused(1, (uint64_t)INT64_MAX + 1);
    check_range_refused(INT64_MIN + 2, UINT64_MAX);
    check_range_refused(-1, (uint64_t)INT64_MAX + 3);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(range_flat_stack)
{
    long base = live_allocations();
    size_t n = big_count();
    rill_publisher *p = rill_range(5, n);
    ck_assert_ptr_nonnull(p);
    check_flat_stack(p, 5, n);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * rill_from_array */

/* The array is copied: changing it after construction changes nothing. */
START_TEST(from_array_copies)
{
    long base = live_allocations();
    void *items[5];
    for (int i = 0; i < 5; i++)
        items[i] = (void *)(intptr_t)(i + 1);
    rill_publisher *p = rill_from_array(items, 5);
    ck_assert_ptr_nonnull(p);
    for (int i = 0; i < 5; i++)
        items[i] = (void *)(intptr_t)-1;
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    check_completed(r, 1, 5);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Items are opaque words: NULL is an item like any other. */
START_TEST(from_array_null_items)
{
    long base = live_allocations();
    int x;
    void *items[3] = { NULL, &x, NULL };
    rill_publisher *p = rill_from_array(items, 3);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 3);
    ck_assert_uint_eq(r->nitems, 3);
    ck_assert_ptr_null(r->items[0]);
    ck_assert_ptr_eq(r->items[1], &x);
    ck_assert_ptr_null(r->items[2]);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    check_ok(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* items may be NULL only when n == 0. */
START_TEST(from_array_null_with_count)
{
    long base = live_allocations();
    errno = 0;
    ck_assert_ptr_null(rill_from_array(NULL, 3));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(from_array_flat_stack)
{
    long base = live_allocations();
    size_t n = big_count();
    void **items = malloc(n * sizeof *items);
    ck_assert_ptr_nonnull(items);
    for (size_t i = 0; i < n; i++)
        items[i] = (void *)(intptr_t)(i + 7);
    rill_publisher *p = rill_from_array(items, n);
    free(items);
    ck_assert_ptr_nonnull(p);
    check_flat_stack(p, 7, n);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * rill_just */

START_TEST(just_null_item)
{
    long base = live_allocations();
    rill_publisher *p = rill_just(NULL);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 1);
    ck_assert_uint_eq(r->nitems, 1);
    ck_assert_ptr_null(r->items[0]);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    check_ok(r);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * rill_fail */

START_TEST(fail_null_message_is_strerror)
{
    long base = live_allocations();
    char expected[256];
    snprintf(expected, sizeof expected, "%s", strerror(ETIMEDOUT));
    rill_publisher *p = rill_fail(ETIMEDOUT, NULL);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 0);
    check_failed(r, ETIMEDOUT);
    ck_assert_str_eq(r->error_message, expected);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A user's own code, and a message buffer the caller reuses at once. */
START_TEST(fail_user_code_copies_message)
{
    long base = live_allocations();
    char message[32];
    snprintf(message, sizeof message, "quota exceeded");
    rill_publisher *p = rill_fail(12345, message);
    ck_assert_ptr_nonnull(p);
    memset(message, 'x', sizeof message - 1);
    recorder *r = rec_run(p, 0);
    check_failed(r, 12345);
    ck_assert_str_eq(r->error_message, "quota exceeded");
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(fail_bad_code)
{
    long base = live_allocations();
    errno = 0;
    ck_assert_ptr_null(rill_fail(0, "zero"));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(rill_fail(-EIO, NULL));
    ck_assert_int_eq(errno, EINVAL);
    errno = 0;
    ck_assert_ptr_null(rill_fail(INT_MIN, "min"));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * rill_generate: one state shared by every subscription */

/* Subscribes a recorder to a fresh rill_generate over s; the publisher's
 * reference is dropped at once (the subscription keeps what it needs). */
static recorder *run_script(script *s, uint64_t initial_request)
{
    rill_publisher *p = rill_generate(script_next, s);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, initial_request);
    rill_publisher_unref(p);
    return r;
}

/* LAST completes right after its item, with no further request, and the
 * function is not called again. */
START_TEST(generate_last_completes)
{
    long base = live_allocations();
    script s = SCRIPT(RILL_GENERATE_NEXT, RILL_GENERATE_NEXT, RILL_GENERATE_LAST,
                      RILL_GENERATE_NEXT);
    recorder *r = run_script(&s, 1);
    check_script_items(r, 1);
    ck_assert_int_eq(r->completes, 0);
    ck_assert_int_eq(r->releases, 0);
    rec_request(r, 2);
    check_script_items(r, 3);
    ck_assert_int_eq(r->errors, 0);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    check_ok(r);
    ck_assert_uint_eq(s.calls, 3);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Surplus demand: LAST still ends it, no call after LAST. */
START_TEST(generate_last_with_surplus_demand)
{
    long base = live_allocations();
    script s = SCRIPT(RILL_GENERATE_NEXT, RILL_GENERATE_LAST, RILL_GENERATE_NEXT);
    recorder *r = run_script(&s, 10);
    check_script_items(r, 2);
    ck_assert_int_eq(r->errors, 0);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    check_ok(r);
    ck_assert_uint_eq(s.calls, 2);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* END carries no item; the function is called once per requested item, so
 * END is found only when demand asks for one more. */
START_TEST(generate_end_needs_demand)
{
    long base = live_allocations();
    script s = SCRIPT(RILL_GENERATE_NEXT, RILL_GENERATE_NEXT, RILL_GENERATE_END);
    recorder *r = run_script(&s, 2);
    check_script_items(r, 2);
    ck_assert_int_eq(r->completes, 0);
    ck_assert_int_eq(r->releases, 0);
    ck_assert_uint_eq(s.calls, 2);
    rec_request(r, 1);
    check_script_items(r, 2);
    ck_assert_int_eq(r->errors, 0);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    check_ok(r);
    ck_assert_uint_eq(s.calls, 3);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(generate_end_at_once)
{
    long base = live_allocations();
    script s = SCRIPT(RILL_GENERATE_END);
    recorder *r = run_script(&s, RILL_UNBOUNDED);
    ck_assert_uint_eq(r->nitems, 0);
    ck_assert_int_eq(r->completes, 1);
    ck_assert_int_eq(r->releases, 1);
    check_ok(r);
    ck_assert_uint_eq(s.calls, 1);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(generate_error)
{
    long base = live_allocations();
    script s = SCRIPT(RILL_GENERATE_NEXT, -EIO, RILL_GENERATE_NEXT);
    recorder *r = run_script(&s, 5);
    check_script_items(r, 1);
    check_failed(r, EIO);
    ck_assert_uint_eq(s.calls, 2);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(generate_error_first)
{
    long base = live_allocations();
    script s = SCRIPT(-ECONNREFUSED);
    recorder *r = run_script(&s, 1);
    ck_assert_uint_eq(r->nitems, 0);
    check_failed(r, ECONNREFUSED);
    ck_assert_uint_eq(s.calls, 1);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Any return value other than NEXT, LAST, END or -errno is EPROTO. */
static const int bad_returns[] = { 7, 3, INT_MAX };

START_TEST(generate_bad_return)
{
    long base = live_allocations();
    script s = SCRIPT(RILL_GENERATE_NEXT, bad_returns[_i], RILL_GENERATE_NEXT);
    recorder *r = run_script(&s, 5);
    check_script_items(r, 1);
    check_failed(r, EPROTO);
    ck_assert_uint_eq(s.calls, 2);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(generate_fn_null)
{
    long base = live_allocations();
    int ctx;
    errno = 0;
    ck_assert_ptr_null(rill_generate(NULL, &ctx));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* rill_generate shares its state: a second subscription continues where the
 * first left off, and the first then finds the generator exhausted. */
START_TEST(generate_shared_state)
{
    long base = live_allocations();
    gen_ctx c = { .first = 0, .n = 4, .use_last = 1 };
    gen_state st = { .ctx = &c, .next = 0, .made = 0 };
    rill_publisher *p = rill_generate(gen_next, &st);
    ck_assert_ptr_nonnull(p);
    recorder *a = rec_run(p, 2);
    check_open(a, 0, 2);
    recorder *b = rec_run(p, 2);
    check_completed(b, 2, 2);
    rec_request(a, 5);
    check_completed(a, 0, 2);
    ck_assert_int_eq(c.calls, 5);
    rec_free(a);
    rec_free(b);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(generate_request_zero)
{
    long base = live_allocations();
    script s = SCRIPT(RILL_GENERATE_NEXT, RILL_GENERATE_NEXT, RILL_GENERATE_LAST);
    recorder *r = run_script(&s, 0);
    rec_request(r, 0);
    ck_assert_uint_eq(r->nitems, 0);
    check_failed(r, EINVAL);
    ck_assert_uint_eq(s.calls, 0);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* After a cancel inside on_next the function is not called again: an item
 * it made would have nowhere to go. */
START_TEST(generate_cancel_midway)
{
    long base = live_allocations();
    gen_ctx c = { .first = 0, .n = 10, .use_last = 1 };
    gen_state st = { .ctx = &c, .next = 0, .made = 0 };
    rill_publisher *p = rill_generate(gen_next, &st);
    ck_assert_ptr_nonnull(p);
    cancel_plan plan = { .at = 3 };
    recorder *r = rec_new(RILL_UNBOUNDED);
    r->on_next_hook = cancel_then_poke;
    r->user = &plan;
    rill_subscribe(p, rec_subscriber(r));
    check_items(r, 0, 3);
    check_cancelled(r);
    ck_assert_int_eq(plan.released_inside, 0);
    ck_assert_int_eq(c.calls, 3);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(generate_cancel_in_subscribe)
{
    long base = live_allocations();
    script s = SCRIPT(RILL_GENERATE_NEXT, RILL_GENERATE_LAST);
    rill_publisher *p = rill_generate(script_next, &s);
    ck_assert_ptr_nonnull(p);
    check_cancel_in_subscribe(p);
    ck_assert_uint_eq(s.calls, 0);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(generate_flat_stack)
{
    long base = live_allocations();
    size_t n = big_count();
    gen_ctx c = { .first = 3, .n = n, .use_last = 1 };
    gen_state st = { .ctx = &c, .next = 3, .made = 0 };
    rill_publisher *p = rill_generate(gen_next, &st);
    ck_assert_ptr_nonnull(p);
    check_flat_stack(p, 3, n);
    ck_assert_int_eq(c.calls, (long)n);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * rill_generate_ex: per-subscription state, state_free, ctx_free */

/* Each subscription counts from the start in its own state. */
START_TEST(generate_ex_state_per_subscription)
{
    long base = live_allocations();
    gen_ctx c = { .first = 0, .n = 5, .use_last = 1 };
    rill_publisher *p = gen_ex_new(&c);
    ck_assert_ptr_nonnull(p);
    recorder *a = rec_run(p, 2);
    recorder *b = rec_run(p, 2);
    check_open(a, 0, 2);
    check_open(b, 0, 2);
    ck_assert_int_eq(c.states, 2);
    rec_request(a, 3);
    check_completed(a, 0, 5);
    ck_assert_int_eq(c.state_frees, 1);
    rec_request(b, RILL_UNBOUNDED);
    check_completed(b, 0, 5);
    ck_assert_int_eq(c.state_frees, 2);
    ck_assert_int_eq(c.ctx_frees, 0);
    rec_free(a);
    rec_free(b);
    rill_publisher_unref(p);
    ck_assert_int_eq(c.ctx_frees, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* END (no LAST): completion once demand asks for the item after the last. */
START_TEST(generate_ex_end)
{
    long base = live_allocations();
    gen_ctx c = { .first = 1, .n = 3, .use_last = 0 };
    rill_publisher *p = gen_ex_new(&c);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 3);
    check_open(r, 1, 3);
    rec_request(r, 1);
    check_completed(r, 1, 3);
    ck_assert_int_eq(c.calls, 4);
    ck_assert_int_eq(c.state_frees, 1);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(c.ctx_frees, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* state_free runs once per subscription whatever ends it: cancel from
 * outside, cancel inside on_next, cancel in on_subscribe. */
START_TEST(generate_ex_state_free_on_cancel)
{
    long base = live_allocations();
    gen_ctx c = { .first = 0, .n = 10, .use_last = 1 };
    rill_publisher *p = gen_ex_new(&c);
    ck_assert_ptr_nonnull(p);

    recorder *r = rec_run(p, 2);
    rill_cancel(r->sub);
    check_cancelled(r);
    ck_assert_int_eq(c.state_frees, 1);
    rec_free(r);

    r = rec_new(RILL_UNBOUNDED);
    r->cancel_after = 4;
    rill_subscribe(p, rec_subscriber(r));
    check_items(r, 0, 4);
    check_cancelled(r);
    ck_assert_int_eq(c.state_frees, 2);
    rec_free(r);

    check_cancel_in_subscribe(p);
    ck_assert_int_eq(c.state_frees, c.states);
    ck_assert_int_eq(c.ctx_frees, 0);
    rill_publisher_unref(p);
    ck_assert_int_eq(c.ctx_frees, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ... and on error: the generator's own, and request(0). */
START_TEST(generate_ex_state_free_on_error)
{
    long base = live_allocations();
    gen_ctx c = { .first = 0, .n = 10, .use_last = 1, .fail_code = EIO, .fail_after = 2 };
    rill_publisher *p = gen_ex_new(&c);
    ck_assert_ptr_nonnull(p);

    recorder *r = rec_run(p, RILL_UNBOUNDED);
    check_items(r, 0, 2);
    check_failed(r, EIO);
    ck_assert_int_eq(c.state_frees, 1);
    rec_free(r);

    r = rec_run(p, 1);
    rec_request(r, 0);
    check_items(r, 0, 1);
    check_failed(r, EINVAL);
    ck_assert_int_eq(c.states, 2);
    ck_assert_int_eq(c.state_frees, 2);
    rec_free(r);

    rill_publisher_unref(p);
    ck_assert_int_eq(c.ctx_frees, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* The publisher's last reference goes while a subscription is paused: ctx
 * stays alive until that subscription has ended too. */
START_TEST(generate_ex_ctx_free_after_last_subscription)
{
    long base = live_allocations();
    gen_ctx c = { .first = 0, .n = 5, .use_last = 1 };
    rill_publisher *p = gen_ex_new(&c);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 1);
    check_open(r, 0, 1);
    rill_publisher_unref(p);
    ck_assert_int_eq(c.ctx_frees, 0);
    rec_request(r, 4);
    check_completed(r, 0, 5);
    ck_assert_int_eq(c.state_frees, 1);
    ck_assert_int_eq(c.ctx_frees, 1);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* Same, ending the orphaned subscription with a cancel. */
START_TEST(generate_ex_ctx_free_after_cancel)
{
    long base = live_allocations();
    gen_ctx c = { .first = 0, .n = 5, .use_last = 1 };
    rill_publisher *p = gen_ex_new(&c);
    ck_assert_ptr_nonnull(p);
    recorder *r = rec_run(p, 1);
    rill_publisher_unref(p);
    ck_assert_int_eq(c.ctx_frees, 0);
    rill_cancel(r->sub);
    check_cancelled(r);
    ck_assert_int_eq(c.state_frees, 1);
    ck_assert_int_eq(c.ctx_frees, 1);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* init failing ends that subscription with on_error(code); there is no
 * state, so no state_free; ctx_free still runs, once, at the end. */
START_TEST(generate_ex_init_error)
{
    long base = live_allocations();
    gen_ctx c = { .first = 0, .n = 5, .use_last = 1, .init_error = EACCES };
    rill_publisher *p = gen_ex_new(&c);
    ck_assert_ptr_nonnull(p);
    for (int round = 0; round < 2; round++) {
        recorder *r = rec_run(p, 5);
        check_items(r, 0, 0);
        check_failed(r, EACCES);
        rec_free(r);
    }
    ck_assert_int_eq(c.init_calls, 2);
    ck_assert_int_eq(c.calls, 0);
    ck_assert_int_eq(c.state_frees, 0);
    ck_assert_int_eq(c.ctx_frees, 0);
    rill_publisher_unref(p);
    ck_assert_int_eq(c.ctx_frees, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* A failing constructor still calls ctx_free, exactly once. */
START_TEST(generate_ex_ctor_fails)
{
    long base = live_allocations();
    gen_ctx c = { .first = 0, .n = 5 };
    errno = 0;
    ck_assert_ptr_null(rill_generate_ex(gen_init, NULL, gen_state_free, &c, gen_ctx_free));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(c.ctx_frees, 1);
    ck_assert_int_eq(c.init_calls, 0);
    errno = 0;
    ck_assert_ptr_null(rill_generate_ex(NULL, NULL, NULL, NULL, NULL));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* init NULL: the state is ctx itself, shared; state_free may be NULL. */
START_TEST(generate_ex_init_null)
{
    long base = live_allocations();
    gen_ctx c = { .first = 0, .n = 4, .use_last = 1 };
    gen_state st = { .ctx = &c, .next = 0, .made = 0 };
    rill_publisher *p = rill_generate_ex(NULL, gen_next, NULL, &st, gen_shared_ctx_free);
    ck_assert_ptr_nonnull(p);
    recorder *a = rec_run(p, 3);
    check_open(a, 0, 3);
    recorder *b = rec_run(p, 1);
    check_completed(b, 3, 1);
    rill_publisher_unref(p);
    ck_assert_int_eq(c.ctx_frees, 0);
    rill_cancel(a->sub);
    check_cancelled(a);
    ck_assert_int_eq(c.ctx_frees, 1);
    rec_free(a);
    rec_free(b);

    /* No callbacks at all besides fn. */
    st = (gen_state){ .ctx = &c, .next = 0, .made = 0 };
    p = rill_generate_ex(NULL, gen_next, NULL, &st, NULL);
    ck_assert_ptr_nonnull(p);
    a = rec_run(p, RILL_UNBOUNDED);
    check_completed(a, 0, 4);
    rec_free(a);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(generate_ex_flat_stack)
{
    long base = live_allocations();
    size_t n = big_count();
    gen_ctx c = { .first = -50, .n = n, .use_last = 1 };
    rill_publisher *p = gen_ex_new(&c);
    ck_assert_ptr_nonnull(p);
    check_flat_stack(p, -50, n);
    rill_publisher_unref(p);
    ck_assert_int_eq(c.state_frees, 1);
    ck_assert_int_eq(c.ctx_frees, 1);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * rill_subscribe's NULL arguments */

START_TEST(subscribe_null_publisher)
{
    long base = live_allocations();
    recorder *r = rec_run(NULL, 5);
    check_items(r, 0, 0);
    check_failed(r, EINVAL);
    rec_free(r);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

START_TEST(subscribe_null_subscriber)
{
    long base = live_allocations();
    rill_publisher *p = rill_range(0, 3);
    ck_assert_ptr_nonnull(p);
    errno = 0;
    rill_subscribe(p, NULL);
    ck_assert_int_eq(errno, EINVAL);
    /* The publisher is untouched and still works. */
    recorder *r = rec_run(p, RILL_UNBOUNDED);
    check_completed(r, 0, 3);
    rec_free(r);
    rill_publisher_unref(p);
    ck_assert_int_eq(live_allocations(), base);
}
END_TEST

/* ------------------------------------------------------------------------
 * The suite */

static TCase *range_tcase(void)
{
    TCase *tc = tcase_create("range");
    add_item_source_tests(tc, SRC_RANGE);
    add_terminal_source_tests(tc, TSRC_RANGE_ZERO);
    tcase_add_test(tc, range_negative_start);
#if INTPTR_MAX >= INT64_MAX
    tcase_add_test(tc, range_near_int64_max);
    tcase_add_test(tc, range_from_int64_min);
    tcase_add_test(tc, range_widest_fits);
#endif
    tcase_add_test(tc, range_overflow);
    tcase_add_test(tc, range_flat_stack);
    return tc;
}

static TCase *from_array_tcase(void)
{
    TCase *tc = tcase_create("from_array");
    add_item_source_tests(tc, SRC_FROM_ARRAY);
    add_terminal_source_tests(tc, TSRC_FROM_ARRAY_NONE);
    tcase_add_test(tc, from_array_copies);
    tcase_add_test(tc, from_array_null_items);
    tcase_add_test(tc, from_array_null_with_count);
    tcase_add_test(tc, from_array_flat_stack);
    return tc;
}

static TCase *just_tcase(void)
{
    TCase *tc = tcase_create("just");
    add_item_source_tests(tc, SRC_JUST);
    tcase_add_test(tc, just_null_item);
    return tc;
}

static TCase *empty_tcase(void)
{
    TCase *tc = tcase_create("empty");
    add_terminal_source_tests(tc, TSRC_EMPTY);
    return tc;
}

static TCase *fail_tcase(void)
{
    TCase *tc = tcase_create("fail");
    add_terminal_source_tests(tc, TSRC_FAIL);
    tcase_add_test(tc, fail_null_message_is_strerror);
    tcase_add_test(tc, fail_user_code_copies_message);
    tcase_add_test(tc, fail_bad_code);
    return tc;
}

static TCase *generate_tcase(void)
{
    TCase *tc = tcase_create("generate");
    tcase_add_test(tc, generate_last_completes);
    tcase_add_test(tc, generate_last_with_surplus_demand);
    tcase_add_test(tc, generate_end_needs_demand);
    tcase_add_test(tc, generate_end_at_once);
    tcase_add_test(tc, generate_error);
    tcase_add_test(tc, generate_error_first);
    tcase_add_loop_test(tc, generate_bad_return, 0,
                        (int)(sizeof bad_returns / sizeof bad_returns[0]));
    tcase_add_test(tc, generate_fn_null);
    tcase_add_test(tc, generate_shared_state);
    tcase_add_test(tc, generate_request_zero);
    tcase_add_test(tc, generate_cancel_midway);
    tcase_add_test(tc, generate_cancel_in_subscribe);
    tcase_add_test(tc, generate_flat_stack);
    return tc;
}

static TCase *generate_ex_tcase(void)
{
    TCase *tc = tcase_create("generate_ex");
    add_item_source_tests(tc, SRC_GENERATE_EX);
    tcase_add_test(tc, generate_ex_state_per_subscription);
    tcase_add_test(tc, generate_ex_end);
    tcase_add_test(tc, generate_ex_state_free_on_cancel);
    tcase_add_test(tc, generate_ex_state_free_on_error);
    tcase_add_test(tc, generate_ex_ctx_free_after_last_subscription);
    tcase_add_test(tc, generate_ex_ctx_free_after_cancel);
    tcase_add_test(tc, generate_ex_init_error);
    tcase_add_test(tc, generate_ex_ctor_fails);
    tcase_add_test(tc, generate_ex_init_null);
    tcase_add_test(tc, generate_ex_flat_stack);
    return tc;
}

static TCase *subscribe_tcase(void)
{
    TCase *tc = tcase_create("subscribe");
    tcase_add_test(tc, subscribe_null_publisher);
    tcase_add_test(tc, subscribe_null_subscriber);
    return tc;
}

Suite *sources_suite(void)
{
    Suite *s = suite_create("sources");
    suite_add_tcase(s, range_tcase());
    suite_add_tcase(s, from_array_tcase());
    suite_add_tcase(s, just_tcase());
    suite_add_tcase(s, empty_tcase());
    suite_add_tcase(s, fail_tcase());
    suite_add_tcase(s, generate_tcase());
    suite_add_tcase(s, generate_ex_tcase());
    suite_add_tcase(s, subscribe_tcase());
    return s;
}
