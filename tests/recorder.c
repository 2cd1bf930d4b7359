/* tests/recorder.c — see recorder.h. */
#include "recorder.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define REC_VIOLATION(r, ...)                                                  \
    do {                                                                       \
        if ((r)->violations++ == 0)                                            \
            snprintf((r)->violation, sizeof (r)->violation, __VA_ARGS__);      \
    } while (0)

static void enter(recorder *r, const char *what)
{
    if (atomic_fetch_add(&r->in_signal, 1) != 0)
        REC_VIOLATION(r, "%s overlaps another signal", what);
    if (atomic_load(&r->released_flag))
        REC_VIOLATION(r, "%s after on_release", what);
}

static void leave(recorder *r)
{
    atomic_fetch_sub(&r->in_signal, 1);
}

static int terminated(const recorder *r)
{
    return r->completes + r->errors > 0;
}

recorder *rec_new(uint64_t initial_request)
{
    recorder *r = calloc(1, sizeof *r);
    if (!r)
        abort();
    r->initial_request = initial_request;
    r->cancel_after = -1;
    return r;
}

void rec_request(recorder *r, uint64_t n)
{
    if (r->requested != RILL_UNBOUNDED)
        r->requested = (n >= RILL_UNBOUNDED - r->requested) ? RILL_UNBOUNDED : r->requested + n;
    rill_request(r->sub, n);
}

static void cb_subscribe(void *user, rill_subscription *s)
{
    recorder *r = user;
    enter(r, "on_subscribe");
    if (r->subscribes++ != 0)
        REC_VIOLATION(r, "on_subscribe twice");
    r->sub = s;
    if (r->initial_request)
        rec_request(r, r->initial_request);
    leave(r);
}

static void push_item(recorder *r, void *item)
{
    if (r->nitems == r->cap) {
        r->cap = r->cap ? r->cap * 2 : 64;
        r->items = realloc(r->items, r->cap * sizeof *r->items);
        if (!r->items)
            abort();
    }
    r->items[r->nitems++] = item;
}

static void cb_next(void *user, void *item)
{
    recorder *r = user;
    enter(r, "on_next");
    if (r->subscribes == 0)
        REC_VIOLATION(r, "on_next before on_subscribe");
    if (terminated(r))
        REC_VIOLATION(r, "on_next after a terminal signal");
    push_item(r, item);
    if (r->requested != RILL_UNBOUNDED && r->nitems > r->requested)
        REC_VIOLATION(r, "on_next beyond demand: %zu items, %llu requested", r->nitems,
                      (unsigned long long)r->requested);
    if (r->on_next_hook)
        r->on_next_hook(r, item);
    if (r->cancel_after >= 0 && (int64_t)r->nitems == r->cancel_after)
        rill_cancel(r->sub);
    else if (r->request_each)
        rec_request(r, r->request_each);
    leave(r);
}

static void cb_error(void *user, const rill_error *e)
{
    recorder *r = user;
    enter(r, "on_error");
    if (r->subscribes == 0)
        REC_VIOLATION(r, "on_error before on_subscribe");
    if (terminated(r))
        REC_VIOLATION(r, "second terminal signal (on_error)");
    r->errors++;
    r->error_code = rill_error_code(e);
    snprintf(r->error_message, sizeof r->error_message, "%s", rill_error_message(e));
    leave(r);
}

static void cb_complete(void *user)
{
    recorder *r = user;
    enter(r, "on_complete");
    if (r->subscribes == 0)
        REC_VIOLATION(r, "on_complete before on_subscribe");
    if (terminated(r))
        REC_VIOLATION(r, "second terminal signal (on_complete)");
    r->completes++;
    leave(r);
}

static void cb_release(void *user)
{
    recorder *r = user;
    enter(r, "on_release");
    if (r->subscribes == 0)
        REC_VIOLATION(r, "on_release before on_subscribe");
    r->releases++;
    r->sub = NULL;
    leave(r);
    /* Last: a test may free the recorder as soon as it sees the flag. */
    atomic_store(&r->released_flag, 1);
}

static const rill_callbacks rec_callbacks = {
    .on_subscribe = cb_subscribe,
    .on_next = cb_next,
    .on_error = cb_error,
    .on_complete = cb_complete,
    .on_release = cb_release,
};

rill_subscriber *rec_subscriber(recorder *r)
{
    return rill_subscriber_new(&rec_callbacks, r);
}

recorder *rec_run(rill_publisher *p, uint64_t initial_request)
{
    recorder *r = rec_new(initial_request);
    rill_subscribe(p, rec_subscriber(r));
    return r;
}

int rec_ok(const recorder *r)
{
    return r->violations == 0;
}

intptr_t rec_int(const recorder *r, size_t i)
{
    return i < r->nitems ? (intptr_t)r->items[i] : INTPTR_MIN;
}

void rec_free(recorder *r)
{
    if (r) {
        free(r->items);
        free(r);
    }
}

/* ---- counting allocator ---- */

static atomic_long live;
static atomic_long calls;
static atomic_long fail_at_call;   /* 0: never */

static void *counting_malloc(size_t n)
{
    long c = atomic_fetch_add(&calls, 1) + 1;
    long f = atomic_load(&fail_at_call);
    if (f && c == f)
        return NULL;
    void *p = malloc(n);
    if (p)
        atomic_fetch_add(&live, 1);
    return p;
}

static void *counting_realloc(void *p, size_t n)
{
    long c = atomic_fetch_add(&calls, 1) + 1;
    long f = atomic_load(&fail_at_call);
    if (f && c == f)
        return NULL;
    void *q = realloc(p, n);
    if (q && !p)
        atomic_fetch_add(&live, 1);
    return q;
}

static void counting_free(void *p)
{
    if (p)
        atomic_fetch_sub(&live, 1);
    free(p);
}

void counting_allocator_install(void)
{
    if (rill_set_allocator(counting_malloc, counting_realloc, counting_free) != 0) {
        fprintf(stderr, "rill_set_allocator failed: the library allocated before the test\n");
        abort();
    }
}

void counting_allocator_fail_at(long n)
{
    atomic_store(&fail_at_call, n ? atomic_load(&calls) + n : 0);
}

long counting_allocator_calls(void)
{
    return atomic_load(&calls);
}

long live_allocations(void)
{
    return atomic_load(&live);
}
