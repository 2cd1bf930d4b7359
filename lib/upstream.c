/* lib/upstream.c — see upstream-internal.h.
 *
 * The announce/check pair is a Dekker-style handshake, so both sides use
 * sequentially consistent operations: a caller increments `calls` then reads
 * `gone`; the releaser sets `gone` then reads `calls`. At least one of them
 * sees the other's write, so either the caller backs out or the releaser
 * waits for it.
 */
#include "stage-internal.h"
#include "upstream-internal.h"

#include <sched.h>

/* The calls in progress on this thread, innermost first, so that a release
 * can tell its own thread's callers (not waited for) from others'. */
typedef struct frame {
    const rill__upstream *u;
    struct frame *prev;
} frame;

static _Thread_local frame *frames;

static int enter(rill__upstream *u, frame *f)
{
    atomic_fetch_add(&u->calls, 1);
    if (atomic_load(&u->gone)) {
        atomic_fetch_sub_explicit(&u->calls, 1, memory_order_release);
        return 0;
    }
    f->u = u;
    f->prev = frames;
    frames = f;
    return 1;
}

static void leave(rill__upstream *u, frame *f)
{
    frames = f->prev;
    atomic_fetch_sub_explicit(&u->calls, 1, memory_order_release);
}

void rill__upstream_request(rill__upstream *u, uint64_t n)
{
    frame f;
    if (enter(u, &f)) {
        rill__request(u->sub, n);
        leave(u, &f);
    }
}

void rill__upstream_cancel(rill__upstream *u)
{
    frame f;
    if (enter(u, &f)) {
        rill__cancel(u->sub);
        leave(u, &f);
    }
}

void rill__upstream_gone(rill__upstream *u)
{
    atomic_store(&u->gone, 1);
    unsigned mine = 0;
    for (const frame *f = frames; f; f = f->prev)
        mine += f->u == u;
    /* acquire: the other callers' use of the subscription happens-before
     * upstream frees it after we return. */
    while (atomic_load_explicit(&u->calls, memory_order_acquire) > mine)
        sched_yield();
}
