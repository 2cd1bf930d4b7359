/* rill/emitter.h — push sources: the bridge from code that is handed data
 * (sockets, callbacks, other threads) into a stream with demand.
 *
 *   rill_emitter_options o;
 *   rill_emitter_options_init(&o);
 *   o.capacity = 1024;
 *   o.policy = RILL_EMIT_DROP_NEWEST;
 *   rill_emitter *em;
 *   rill_publisher *p = rill_emitter_new(&o, &em);
 *   rill_subscribe(p, sub);            // then, from any number of threads:
 *   int rc = rill_emit(em, item);      // 0, RILL_EMIT_PAUSED or an errno
 *
 * The emitter keeps a bounded queue of `capacity` items between the
 * producers (rill_emit, from any thread) and its one subscriber, and serves
 * the subscriber's demand from it. When the queue is full, `policy` decides:
 *  - RILL_EMIT_BLOCK: rill_emit waits until a slot is free (rill_emit_timeout:
 *    at most timeout_ns, then ETIMEDOUT);
 *  - RILL_EMIT_DROP_NEWEST: the new item is refused: EAGAIN, it stays the
 *    caller's;
 *  - RILL_EMIT_DROP_OLDEST: the oldest queued item is evicted to the discard
 *    hooks and the new one is accepted;
 *  - RILL_EMIT_ERROR: the new item is refused (EOVERFLOW, it stays the
 *    caller's) and the stream ends: what was queued is delivered (as demand
 *    allows), then on_error(EOVERFLOW). Later calls return EPIPE.
 *
 * Watermarks (flow control for producers that can pause, like Node's
 * 'drain' or asyncio's pause_reading/resume_reading): the emitter is
 * *paused* from the moment its queue holds high_watermark items until the
 * queue has fallen to low_watermark. While paused, every accepted rill_emit
 * returns RILL_EMIT_PAUSED instead of 0 (the item was taken); a producer
 * that can wait should stop and resume when on_writable is called — once
 * per pause, on the thread that drained the queue down to low_watermark.
 * Because pausing and resuming happen at two different depths, a queue
 * hovering around one depth cannot make them flap: each pause needs the
 * queue to climb from low_watermark to high_watermark again. Only a full
 * queue refuses (per policy). When the stream ends by cancel or request(0)
 * while paused, on_writable is still called once (the queue was emptied),
 * so a producer waiting for it wakes and finds EPIPE.
 *
 * Which thread delivers: whichever drains the queue — the producer, inside
 * rill_emit, when the subscriber has demand; the subscriber, inside
 * rill_request, when items are waiting; or the thread that calls
 * rill_emitter_complete / _fail. Signals never overlap, and a rill_emit or
 * rill_request made inside on_next never recurses (it leaves the work to the
 * running drain). A BLOCK rill_emit made on the thread that is draining this
 * emitter (from inside on_next, say) would wait for itself: it returns
 * EDEADLK at once instead.
 *
 * Unicast and single use: the first subscriber gets the stream; any later
 * subscriber, even after the first has ended, gets on_subscribe, then
 * on_error(EBUSY). Items may be emitted before anyone subscribes; they wait
 * in the queue (the policy applies). Items evicted before a subscriber has
 * attached its discard hooks are counted (discarded_overflow) but reach no
 * hook: emit owned pointers only after subscribing.
 *
 * The end: rill_emitter_complete and rill_emitter_fail end the stream after
 * what is queued has been delivered; after them (and after cancel or an
 * ERROR overflow) rill_emit returns EPIPE. At cancel (or request(0), which
 * ends the stream with on_error(EINVAL)), queued items go to the discard
 * hooks and BLOCK waiters return EPIPE. Dropping the last rill_emitter
 * reference without ending the stream completes it, like closing the write
 * end of a pipe: the subscriber never waits for items nobody can send.
 *
 * Metrics (options.metrics): received counts accepted items, refused every
 * rill_emit that did not accept its item (EAGAIN, EOVERFLOW, ETIMEDOUT,
 * EPIPE, EDEADLK); emitted, discarded_overflow (DROP_OLDEST evictions),
 * discarded_cancelled (queued at cancel, or left when the emitter is freed
 * without a subscriber), queued, queued_high_water, capacity,
 * demand_outstanding, paused and pauses are kept current. In every snapshot
 * received == emitted + discarded_overflow + discarded_cancelled + queued.
 *
 * Ownership and lifetime: rill_emitter_new returns two new references — the
 * publisher (release with rill_publisher_unref, or hand it to an operator,
 * which consumes it) and the emitter (rill_emitter_unref). They are
 * independent: producers may keep emitting after the publisher reference is
 * gone and vice versa. An accepted item belongs to the stream; a refused one
 * stays the caller's.
 */
#ifndef RILL_EMITTER_H
#define RILL_EMITTER_H

#include "core.h"
#include "metrics.h"

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum rill_emit_policy {
    RILL_EMIT_BLOCK,          /* rill_emit waits for room (rill_emit_timeout: up to a deadline) */
    RILL_EMIT_DROP_NEWEST,    /* a full queue refuses the new item: it stays the caller's */
    RILL_EMIT_DROP_OLDEST,    /* a full queue evicts its oldest item to the discard hook */
    RILL_EMIT_ERROR           /* a full queue ends the stream with on_error(EOVERFLOW) */
} rill_emit_policy;

#define RILL_EMITTER_OPTIONS_VERSION 1

typedef struct rill_emitter_options {
    uint32_t version;                 /* RILL_EMITTER_OPTIONS_VERSION; fields only grow at the end */
    /* --- valid for version 1 --- */
    size_t capacity;                  /* > 0 */
    rill_emit_policy policy;
    size_t high_watermark;            /* 0 → capacity; at most capacity */
    size_t low_watermark;             /* 0 → high_watermark / 2; must be < high_watermark */
    /* Called once per pause, when the queue has fallen to low_watermark (or
     * was emptied by cancel), on the thread that drained it, never twice at
     * once. It may call rill_emit (a BLOCK emit from there returns EDEADLK
     * instead of waiting when the queue is full). May be NULL. */
    void (*on_writable)(void *ctx);
    void *ctx;
    /* Called exactly once, when the library no longer references ctx (after
     * the last on_writable, when the emitter is freed) — also when
     * rill_emitter_new fails. May be NULL. */
    void (*ctx_free)(void *ctx);
    rill_metrics *metrics;            /* optional; borrowed (the emitter takes its own reference) */
} rill_emitter_options;

typedef struct rill_emitter rill_emitter;   /* opaque, refcounted */

#define RILL_EMIT_PAUSED 1   /* accepted, and the queue reached the high watermark: pause until on_writable */

/* Fills o with the defaults: version set, policy RILL_EMIT_BLOCK, every
 * other field 0 or NULL (capacity must then be set). o NULL is ignored. */
RILL_EXPORT void rill_emitter_options_init(rill_emitter_options *o);

/* Creates an emitter configured by o (borrowed: copied). Returns a new
 * publisher reference and stores a new emitter reference in *out. Errors:
 * NULL with errno EINVAL (o or out NULL, version 0, capacity 0, a policy
 * outside the enum, high_watermark > capacity, low_watermark >=
 * high_watermark after the defaults), or ENOMEM; *out is then NULL (when
 * out is not NULL) and ctx_free(ctx) has run. */
RILL_EXPORT rill_publisher *rill_emitter_new(const rill_emitter_options *o, rill_emitter **out);

/* Offers item to the stream, from any thread. Returns 0 (accepted),
 * RILL_EMIT_PAUSED (accepted; the emitter is paused), or, with the item
 * still the caller's: EAGAIN (DROP_NEWEST and the queue is full),
 * EOVERFLOW (ERROR and the queue is full: the stream is ending), EPIPE (the
 * stream ended: completed, failed, overflowed or cancelled), EDEADLK (BLOCK,
 * full, and called on the thread draining this emitter), EINVAL (e NULL).
 * Under BLOCK it waits as long as the queue is full. May deliver items (and
 * the terminal signal) to the subscriber on the calling thread. */
RILL_EXPORT int rill_emit(rill_emitter *e, void *item);

/* rill_emit that waits at most timeout_ns nanoseconds (CLOCK_MONOTONIC) for
 * room under the BLOCK policy, then returns ETIMEDOUT (the item stays the
 * caller's); timeout_ns 0 never waits. Under the other policies it is
 * rill_emit (they never wait). */
RILL_EXPORT int rill_emit_timeout(rill_emitter *e, void *item, uint64_t timeout_ns);

/* Ends the stream: queued items are still delivered, then on_complete. Any
 * thread; only the first of complete / fail (or an ERROR overflow) counts.
 * NULL is ignored. */
RILL_EXPORT void rill_emitter_complete(rill_emitter *e);

/* Ends the stream with an error: queued items are still delivered, then
 * on_error(code, message) (message copied; NULL: strerror(code); code <= 0
 * is taken as EINVAL). Any thread; only the first end counts. NULL is
 * ignored. */
RILL_EXPORT void rill_emitter_fail(rill_emitter *e, int code, const char *message);

/* 1 while paused (between reaching high_watermark and falling to
 * low_watermark), else 0; 0 for NULL. A hint: another thread may change it
 * right after. */
RILL_EXPORT int rill_emitter_paused(const rill_emitter *e);

/* Returns e (a new reference); NULL gives NULL. */
RILL_EXPORT rill_emitter *rill_emitter_ref(rill_emitter *e);
/* Releases one reference; the last one completes a stream that has not
 * ended (see above). NULL is ignored. */
RILL_EXPORT void rill_emitter_unref(rill_emitter *e);

#ifdef __cplusplus
}
#endif

#endif /* RILL_EMITTER_H */
