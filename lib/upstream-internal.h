/* lib/upstream-internal.h — calling an upstream subscription safely from
 * threads other than the one upstream signals on.
 *
 * A stage with its own thread (observe_on's drain, subscribe_on's task) calls
 * request/cancel on its upstream subscription, which stays valid only until
 * the stage's on_release returns. Upstream may release the stage on another
 * thread at any moment, so those calls are guarded ("rundown protection"):
 * a caller announces itself, then checks that upstream has not released; the
 * release marks it and waits for callers on *other* threads to leave (the
 * calls are short: request and cancel return promptly). A caller on the
 * releasing thread's own stack (a synchronous upstream releasing us inside
 * our own request) is not waited for: it resumes after on_release returns
 * and touches only the stage, which the caller keeps alive.
 */
#ifndef RILL_UPSTREAM_INTERNAL_H
#define RILL_UPSTREAM_INTERNAL_H

#include <rill/stage.h>

#include <stdatomic.h>

typedef struct rill__upstream {
    rill_subscription *sub;   /* set once in on_subscribe, before any call */
    atomic_uint calls;        /* callers inside request/cancel right now */
    atomic_int gone;          /* upstream released us: no more calls */
} rill__upstream;

/* Forward to upstream unless it has released us. The caller must keep the
 * stage that holds `u` alive across the call. */
void rill__upstream_request(rill__upstream *u, uint64_t n);
void rill__upstream_cancel(rill__upstream *u);
/* From on_release: no call starts after this returns, and every call on
 * another thread has finished. */
void rill__upstream_gone(rill__upstream *u);

#endif
