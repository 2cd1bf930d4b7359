/* rill/operators.h — operators that transform a stream.
 *
 * Every operator CONSUMES its upstream reference and returns a new one.
 * NULL upstream gives NULL (errno EINVAL). A bad argument also consumes the
 * upstream reference and gives NULL with errno EINVAL; no memory gives NULL
 * with errno ENOMEM. Where an operator keeps a user ctx, its _ex variant
 * takes ctx_free, called exactly once when the library no longer references
 * ctx — also when the constructor fails.
 *
 * User functions run on the thread that delivers the upstream's signals,
 * never concurrently for one subscription; different subscriptions of one
 * publisher may call them concurrently from different threads.
 *
 * Every item is accounted for: delivered downstream, consumed by a mapper, or
 * handed to the discard hooks (rill_on_discard) downstream of the stage that
 * dropped it.
 */
#ifndef RILL_OPERATORS_H
#define RILL_OPERATORS_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A mapper stores the result in *out and returns 0, or returns a positive
 * error code: the stream then ends with on_error(code), upstream is
 * cancelled, and the input item goes to the discard hooks. On success the
 * mapper has consumed the input item. */
typedef int (*rill_map_fn)(void *ctx, void *in, void **out);

/* A predicate returns 1 (keep), 0 (drop: the item goes to the discard hooks)
 * or a negative errno value -code: the stream ends with on_error(code),
 * upstream is cancelled and the item goes to the discard hooks. Any other
 * positive value counts as keep. */
typedef int (*rill_pred_fn)(void *ctx, void *item);

/* Applies fn to every item. EINVAL if fn is NULL. */
RILL_EXPORT rill_publisher *rill_map(rill_publisher *up, rill_map_fn fn, void *ctx);
RILL_EXPORT rill_publisher *rill_map_ex(rill_publisher *up, rill_map_fn fn, void *ctx,
                                        void (*ctx_free)(void *ctx));

/* Keeps the items fn accepts. Dropped items cost no downstream demand: the
 * filter requests a replacement upstream. EINVAL if fn is NULL. */
RILL_EXPORT rill_publisher *rill_filter(rill_publisher *up, rill_pred_fn fn, void *ctx);
RILL_EXPORT rill_publisher *rill_filter_ex(rill_publisher *up, rill_pred_fn fn, void *ctx,
                                           void (*ctx_free)(void *ctx));

/* The first n items, then completion (upstream is cancelled). Never requests
 * more than n upstream. n == 0 completes right after on_subscribe and
 * cancels upstream. */
RILL_EXPORT rill_publisher *rill_take(rill_publisher *up, uint64_t n);

/* Every item that a stage upstream of this point does not deliver (filtered
 * out, dropped on overflow, left in a queue at cancel or error) is handed to
 * fn(ctx, item) exactly once, nearest hook first when several are chained.
 * fn may run on any thread that runs an upstream stage, and may still run
 * after the downstream subscriber's on_release (items in flight at cancel).
 * EINVAL if fn is NULL. */
RILL_EXPORT rill_publisher *rill_on_discard(rill_publisher *up,
                                            void (*fn)(void *ctx, void *item), void *ctx);
/* As rill_on_discard; ctx_free(ctx) runs once, after fn's last call. */
RILL_EXPORT rill_publisher *rill_on_discard_ex(rill_publisher *up,
                                               void (*fn)(void *ctx, void *item), void *ctx,
                                               void (*ctx_free)(void *ctx));

/* ------------------------------------------------------------------------
 * Crossing threads (see rill/scheduler.h)
 */

/* Delivers every signal after on_subscribe on a worker of s: on_next,
 * on_error, on_complete and on_release all run there, never on the thread
 * that subscribed. Upstream items wait in a ring of `prefetch` slots:
 * observe_on requests `prefetch` upstream, then `prefetch - prefetch/4` each
 * time the consumer has taken that many (the 75% rule), so upstream is never
 * more than `prefetch` items ahead. Order is preserved. An upstream error is
 * delivered after the items already queued (as demand allows). Upstream
 * sending more than requested ends the stream with on_error(EOVERFLOW); a
 * task refused by a shut-down scheduler ends it with on_error(ECANCELED).
 * At cancel, queued items go to the discard hooks. s is borrowed (the
 * publisher and its subscriptions take their own references).
 * EINVAL: s NULL or prefetch 0. */
RILL_EXPORT rill_publisher *rill_observe_on(rill_publisher *up, rill_scheduler *s,
                                            uint32_t prefetch);

/* Subscribes upstream on a worker of s, and makes every later request there
 * too, so a synchronous source emits on s's thread only. A cancel is passed
 * upstream at once, from the cancelling thread, so it takes effect even
 * while the source is busy emitting on s.
 * Downstream's on_subscribe runs at once, on the subscribing thread; the
 * other signals arrive on whichever thread upstream emits on. If s refuses
 * the work (shut down), upstream is cancelled and the stream ends with
 * on_error(ECANCELED). s is borrowed. EINVAL: s NULL. */
RILL_EXPORT rill_publisher *rill_subscribe_on(rill_publisher *up, rill_scheduler *s);

/* ------------------------------------------------------------------------
 * Time (see rill/scheduler.h). These run on a worker of a scheduler and read
 * its clock (rill_scheduler_now): on a virtual-time scheduler they move only
 * when the test advances the clock. s is borrowed: the publisher and each
 * running subscription take their own references, so s keeps running until
 * those subscriptions have ended (cancel an interval to let its scheduler
 * shut down). If s refuses a task all the same (a custom scheduler that shut
 * down), the stream ends with on_error(ECANCELED). request(0) ends a stream
 * with on_error(EINVAL). On rill_immediate the thread that schedules sleeps
 * through every delay, so an interval there blocks until it is cancelled.
 * A NULL scheduler gives NULL with errno EINVAL.
 */

/* A source that emits 0, 1, 2, ... (as (void *)(intptr_t)) every period_ns
 * nanoseconds on s's clock, the first one period after subscribing. It never
 * completes: cancel it (or take what you need). Every signal after
 * on_subscribe runs on a worker of s.
 *
 * Ticks are drift-free: each is scheduled relative to the previous tick's
 * intended time, not to when the previous tick actually ran, so a late tick
 * is followed by an earlier one (at once if several are overdue).
 *
 * Backpressure: a tick that falls due when the subscriber has no
 * outstanding demand ends the stream with on_error(EOVERFLOW) ("the
 * consumer could not keep up") — time cannot be paused and an interval keeps
 * no ticks, like RxJava's interval (MissingBackpressureException). Request
 * RILL_UNBOUNDED, keep demand ahead of the ticks, or put a backpressure
 * operator between. Returns a new reference; EINVAL: period_ns == 0 or s
 * NULL; ENOMEM. */
RILL_EXPORT rill_publisher *rill_interval(uint64_t period_ns, rill_scheduler *s);

/* A source that emits the single item (void *)0, delay_ns nanoseconds on s's
 * clock after subscribing, then completes at once; both on a worker of s.
 * delay_ns == 0 fires as soon as the worker runs. If the subscriber has no
 * outstanding demand when the timer fires, the tick is held (one value: the
 * wait is bounded) and delivered, with the completion, as soon as a request
 * arrives. Returns a new reference; EINVAL: s NULL; ENOMEM. */
RILL_EXPORT rill_publisher *rill_timer(uint64_t delay_ns, rill_scheduler *s);

/* Delivers every item delay_ns nanoseconds (on s's clock) after it arrived
 * from upstream, in order, on a worker of s; on_complete likewise arrives
 * delay_ns after upstream completed (so after the last item). An item whose
 * time has come waits for demand, so it may arrive later than that, never
 * earlier. on_error cuts ahead: it is delivered as soon as the worker runs,
 * and the items still waiting go to the discard hooks.
 *
 * Demand: rill_delay requests 256 items upstream, then 192 more each time
 * the consumer has taken 192 (the 75% rule, as rill_observe_on), so at most
 * 256 items wait and nothing is allocated per item. Upstream sending more
 * than requested ends the stream with on_error(EOVERFLOW), which cuts ahead
 * like any error. At cancel, waiting items (and any still in flight) go to
 * the discard hooks. delay_ns == 0 only moves delivery onto the worker.
 * Consumes up; returns a new reference; EINVAL: up or s NULL; ENOMEM. */
RILL_EXPORT rill_publisher *rill_delay(rill_publisher *up, uint64_t delay_ns, rill_scheduler *s);

#define RILL_OBSERVE_ON_OPTIONS_VERSION 1
typedef struct rill_observe_on_options {
    uint32_t version;      /* RILL_OBSERVE_ON_OPTIONS_VERSION; fields only grow at the end */
    uint32_t prefetch;     /* > 0 */
    int delay_error;       /* 1: an error waits behind queued items (rill_observe_on's
                              behaviour); 0: it cuts ahead, queued items go to the
                              discard hooks */
} rill_observe_on_options;
/* As rill_observe_on, with options (borrowed: copied). */
RILL_EXPORT rill_publisher *rill_observe_on_ex(rill_publisher *up, rill_scheduler *s,
                                               const rill_observe_on_options *o);

#ifdef __cplusplus
}
#endif

#endif /* RILL_OPERATORS_H */
