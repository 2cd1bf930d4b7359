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

#ifdef __cplusplus
}
#endif

#endif /* RILL_OPERATORS_H */
