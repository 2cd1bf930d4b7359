/* rill/core.h — the Reactive Streams protocol in C: errors, subscribers,
 * subscriptions, publishers, and the allocator.
 *
 * Ownership vocabulary used in every comment:
 *   "returns a new reference"  the caller owns one reference and must release it;
 *   "borrows"                  the callee does not keep the pointer past the call
 *                              (it takes its own reference if it needs one);
 *   "consumes"                 the caller's reference passes to the callee, also
 *                              when the call fails.
 *
 * Threading: every function here may be called from any thread, unless its
 * comment says otherwise. Signals to one subscriber never overlap (rule 1.3).
 */
#ifndef RILL_CORE_H
#define RILL_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#  define RILL_EXPORT __declspec(dllimport)
#elif defined(__GNUC__)
#  define RILL_EXPORT __attribute__((visibility("default")))
#else
#  define RILL_EXPORT
#endif

/* request(RILL_UNBOUNDED) means "no backpressure". Demand adds with
 * saturation: once it reaches RILL_UNBOUNDED it stays there. */
#define RILL_UNBOUNDED UINT64_MAX

/* The library's version, for bindings that check at run time. */
#define RILL_VERSION_MAJOR 0
#define RILL_VERSION_MINOR 1
#define RILL_VERSION_PATCH 0
/* Returns "MAJOR.MINOR.PATCH" of the library actually loaded. */
RILL_EXPORT const char *rill_version(void);

typedef struct rill_publisher    rill_publisher;     /* refcounted, cold, reusable */
typedef struct rill_subscriber   rill_subscriber;
typedef struct rill_subscription rill_subscription;
typedef struct rill_scheduler    rill_scheduler;     /* opaque, refcounted */
typedef struct rill_error        rill_error;         /* opaque, refcounted, immutable */

/* ------------------------------------------------------------------------
 * Errors
 *
 * An error carries a code — an errno value (EINVAL, ENOMEM, EOVERFLOW,
 * ETIMEDOUT, ECANCELED, ...) or a user's own positive number — and a message.
 * Errors are immutable and may be shared between threads.
 */

/* Returns a new reference to an error with `code` and a copy of `message`.
 * message == NULL uses the text of strerror(code). Returns NULL with errno
 * set to ENOMEM when memory runs out. */
RILL_EXPORT rill_error *rill_error_new(int code, const char *message);
/* Returns e (a new reference to the same error); NULL gives NULL. */
RILL_EXPORT rill_error *rill_error_ref(rill_error *e);
/* Releases one reference; NULL is ignored. */
RILL_EXPORT void rill_error_unref(rill_error *e);
/* The error's code; 0 for NULL. */
RILL_EXPORT int rill_error_code(const rill_error *e);
/* The error's message, never NULL: the message given, else strerror(code).
 * Borrowed: valid while the caller holds (or borrows) the error. */
RILL_EXPORT const char *rill_error_message(const rill_error *e);

/* ------------------------------------------------------------------------
 * Subscribers made of callbacks: the front door for users and bindings.
 *
 * Signal order for one subscription:
 *   on_subscribe  (exactly once, first)
 *   on_next*      (never more than requested in total)
 *   on_error | on_complete   (at most one; none if the subscriber cancelled)
 *   on_release    (exactly once, last; always called, also after cancel)
 *
 * Signals never overlap and each happens-before the next, but successive
 * signals may come from different threads (for example after observe_on).
 */
typedef struct rill_callbacks {
    /* NULL means: request(RILL_UNBOUNDED) at once. `s` stays valid until
     * on_release has returned (see rill_request). */
    void (*on_subscribe)(void *user, rill_subscription *s);
    /* The item now belongs to the subscriber. */
    void (*on_next)(void *user, void *item);
    /* `e` is borrowed for the call; take rill_error_ref to keep it. */
    void (*on_error)(void *user, const rill_error *e);
    void (*on_complete)(void *user);
    /* The last call ever for this subscriber: free user state here. It
     * runs after the last signal has returned, never nested inside another
     * callback of this subscriber. */
    void (*on_release)(void *user);
} rill_callbacks;

/* Returns a new subscriber that calls `cb` (copied) with `user`.
 * Any member may be NULL. The subscriber is consumed by rill_subscribe.
 * It keeps rule 2.5 for you: a second on_subscribe (a broken publisher's)
 * is cancelled at once and never reaches cb->on_subscribe.
 * Errors: cb == NULL gives NULL with errno EINVAL; no memory gives NULL with
 * errno ENOMEM. On either failure cb->on_release(user) has already been
 * called (when cb and cb->on_release are non-NULL), so `user` has exactly one
 * release path whatever happens. */
RILL_EXPORT rill_subscriber *rill_subscriber_new(const rill_callbacks *cb, void *user);

/* ------------------------------------------------------------------------
 * Subscriptions
 *
 * Validity: the rill_subscription * handed to on_subscribe is valid until
 * that subscriber's on_release has returned, and not after. on_release may
 * run inside your own rill_request or rill_cancel (synchronous sources emit,
 * complete and release on the requesting thread), so do not touch `s` once
 * on_release has run. If you call rill_request or rill_cancel from a thread
 * other than the one receiving signals, make sure those calls have returned
 * before on_release returns (for example: on_release waits for that thread).
 */

/* Adds n to the outstanding demand (saturating at RILL_UNBOUNDED).
 * Thread-safe and re-entrant: it may be called from inside on_next or
 * on_subscribe, where it never recurses into another on_next (rule 3.3:
 * the extra demand is served after the current on_next returns).
 * n == 0 cancels upstream and signals on_error(EINVAL) (rule 3.9).
 * After a terminal signal or cancel it is a no-op. s == NULL is ignored. */
RILL_EXPORT void rill_request(rill_subscription *s, uint64_t n);

/* Asks the publisher to stop and to release the subscriber. Thread-safe,
 * idempotent, returns promptly. Items already in flight may still arrive
 * (rule 2.8); no terminal signal follows a cancel; on_release always does.
 * A cancel inside on_next releases the subscriber only after on_next has
 * returned. s == NULL is ignored. */
RILL_EXPORT void rill_cancel(rill_subscription *s);

/* ------------------------------------------------------------------------
 * Publishers
 */

/* Subscribes s to p. Consumes s; borrows p (the subscription takes its own
 * reference to whatever it needs). s gets on_subscribe before anything else,
 * possibly inside this call; synchronous sources may deliver items, a
 * terminal signal and on_release before this call returns.
 * p == NULL: s gets on_subscribe (with a subscription whose request and
 * cancel do nothing), then on_error(EINVAL), then on_release.
 * s == NULL: nothing happens (errno is set to EINVAL). */
RILL_EXPORT void rill_subscribe(rill_publisher *p, rill_subscriber *s);

/* Returns p (a new reference); NULL gives NULL. */
RILL_EXPORT rill_publisher *rill_publisher_ref(rill_publisher *p);
/* Releases one reference; the last one frees the publisher (running
 * subscriptions keep what they need alive). NULL is ignored. */
RILL_EXPORT void rill_publisher_unref(rill_publisher *p);

/* ------------------------------------------------------------------------
 * Allocation
 *
 * All of rill's memory comes from one allocator, which a program may replace
 * before the library allocates anything (call it first, from one thread).
 * realloc_fn may be NULL. Returns 0, EINVAL (malloc_fn or free_fn NULL), or
 * EBUSY (the library has already allocated with the current allocator).
 * When an allocation fails, constructors return NULL with errno ENOMEM and
 * subscriptions end with on_error(ENOMEM); nothing crashes or leaks.
 */
RILL_EXPORT int rill_set_allocator(void *(*malloc_fn)(size_t),
                                   void *(*realloc_fn)(void *, size_t),
                                   void (*free_fn)(void *));

#ifdef __cplusplus
}
#endif

#endif /* RILL_CORE_H */
