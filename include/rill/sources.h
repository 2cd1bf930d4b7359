/* rill/sources.h — synchronous sources.
 *
 * Every source here is cold and reusable: each subscription replays the
 * stream independently. They emit on the thread that requests: items are
 * delivered inside rill_request (or inside rill_subscribe when on_subscribe
 * requests), and the terminal signal follows the last item at once, with no
 * further request needed. rill_empty and rill_fail signal without any
 * request. Items are words (void *); integers travel as (void *)(intptr_t)v.
 *
 * Every constructor returns a new reference, or NULL with errno set (ENOMEM;
 * EINVAL for bad arguments).
 */
#ifndef RILL_SOURCES_H
#define RILL_SOURCES_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* count integers start, start+1, ... as (void *)(intptr_t). count == 0
 * completes at once. EINVAL if start + count - 1 overflows int64_t. */
RILL_EXPORT rill_publisher *rill_range(int64_t start, uint64_t count);

/* The n items of `items` (the array is copied; the items themselves are
 * words the library never dereferences). items may be NULL when n == 0. */
RILL_EXPORT rill_publisher *rill_from_array(void *const *items, size_t n);

/* One item, then completion. */
RILL_EXPORT rill_publisher *rill_just(void *item);

/* Completes at once, without any request. */
RILL_EXPORT rill_publisher *rill_empty(void);

/* Signals on_error(code, message) at once, without any request. message is
 * copied; NULL uses strerror(code). code must be > 0 (else EINVAL). */
RILL_EXPORT rill_publisher *rill_fail(int code, const char *message);

/* ------------------------------------------------------------------------
 * rill_generate: a pull source driven by a user function.
 *
 * The function is called once per requested item, on the requesting thread,
 * never concurrently for one subscription. It returns:
 *   RILL_GENERATE_NEXT  an item was stored in *item;
 *   RILL_GENERATE_LAST  an item was stored in *item and it is the last one
 *                       (completion follows it at once);
 *   RILL_GENERATE_END   no item; the stream completes;
 *   a negative errno value -code: the stream ends with on_error(code).
 * Any other return value ends the stream with on_error(EPROTO).
 */
#define RILL_GENERATE_END  0
#define RILL_GENERATE_NEXT 1
#define RILL_GENERATE_LAST 2
typedef int (*rill_generate_fn)(void *state, void **item);

/* All subscriptions share `state` (== ctx): fine for stateless generators or
 * generators that synchronise themselves. ctx is borrowed for the life of the
 * publisher; see rill_generate_ex for a release path. EINVAL if fn is NULL. */
RILL_EXPORT rill_publisher *rill_generate(rill_generate_fn fn, void *ctx);

/* Per-subscription state. For each subscription, init(ctx, &state) makes the
 * state (return 0, or an errno value to end that subscription with
 * on_error(code)); fn(state, &item) produces items; state_free(state) runs
 * when the subscription ends. init may be NULL (state = ctx) and state_free
 * may be NULL. ctx_free(ctx) runs once when the publisher and all its
 * subscriptions are gone — also when this constructor fails. */
RILL_EXPORT rill_publisher *rill_generate_ex(int (*init)(void *ctx, void **state),
                                             rill_generate_fn fn,
                                             void (*state_free)(void *state),
                                             void *ctx, void (*ctx_free)(void *ctx));

#ifdef __cplusplus
}
#endif

#endif /* RILL_SOURCES_H */
