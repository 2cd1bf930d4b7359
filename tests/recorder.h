/* tests/recorder.h — a recording subscriber that checks the protocol.
 *
 * Every suite uses it: it records what arrives, enforces the signal order
 * (on_subscribe first and once; nothing after a terminal signal except
 * on_release; on_release once and last; never two signals at once; never
 * more on_next than requested) and counts violations instead of crashing, so
 * a test asserts rec_ok(r) at the end.
 */
#ifndef RILL_TESTS_RECORDER_H
#define RILL_TESTS_RECORDER_H

#include <rill.h>
#include <stdatomic.h>
#include <stdint.h>

typedef struct recorder recorder;

typedef void (*rec_hook)(recorder *r, void *item);

struct recorder {
    /* configuration, set before subscribing */
    uint64_t initial_request;    /* requested in on_subscribe; 0: none */
    uint64_t request_each;       /* requested again inside each on_next; 0: none */
    int64_t cancel_after;        /* cancel inside the on_next that brings this many items; <0 never */
    rec_hook on_next_hook;       /* optional, runs inside on_next after recording */
    void *user;                  /* free for tests */

    /* what happened */
    rill_subscription *sub;      /* valid until released */
    void **items;
    size_t nitems, cap;
    int subscribes, completes, errors, releases;
    int error_code;
    char error_message[256];
    int violations;              /* protocol breaches seen */
    char violation[256];         /* the first one */
    _Atomic uint64_t requested;  /* total requested by the recorder (saturating; atomic: a test may
                                    request from one thread while items arrive on another) */
    atomic_int in_signal;        /* overlapping-signal detector */
    atomic_int released_flag;    /* 1 once on_release ran (readable from other threads) */
};

/* Returns a zeroed recorder with cancel_after = -1 (allocated with malloc). */
recorder *rec_new(uint64_t initial_request);
/* Returns a new subscriber that reports into r; r must outlive it. */
rill_subscriber *rec_subscriber(recorder *r);
/* Subscribes a recorder to p (borrowed) and returns it. */
recorder *rec_run(rill_publisher *p, uint64_t initial_request);
/* rill_request through the recorder (keeps `requested` right). */
void rec_request(recorder *r, uint64_t n);
int rec_ok(const recorder *r);
/* The i-th item as an integer. */
intptr_t rec_int(const recorder *r, size_t i);
void rec_free(recorder *r);

/* The runner (check_rill.c) installs a counting allocator through
 * rill_set_allocator before anything else, so every test can check for
 * leaks: take live_allocations() before, compare after (counts are per
 * process; in fork mode each test starts from the runner's count).
 * counting_allocator_fail_at(n), n > 0, makes the n-th allocation from now
 * fail (once); 0 turns failures off. */
long live_allocations(void);
void counting_allocator_install(void);
void counting_allocator_fail_at(long fail_at);
long counting_allocator_calls(void);

#endif
