/* tests/suites.h — every Check suite the runner (check_rill.c) combines. */
#ifndef RILL_TESTS_SUITES_H
#define RILL_TESTS_SUITES_H

#include <check.h>

Suite *core_suite(void);        /* check_core.c: errors, callbacks, subscribe, stage API */
Suite *sources_suite(void);     /* check_sources.c: range, from_array, just, empty, fail, generate */
Suite *operators_suite(void);   /* check_operators.c: map, filter, take, on_discard */
Suite *alloc_suite(void);       /* check_alloc.c: allocator replacement, allocation failure */
Suite *threads_suite(void);     /* check_threads.c: request/cancel from several threads */
Suite *schedulers_suite(void);  /* check_schedulers.c: immediate, thread pool */
Suite *vt_loop_suite(void);     /* check_sched_vt_loop.c: virtual time, loop scheduler */
Suite *observe_on_suite(void);  /* check_observe_on.c: observe_on, subscribe_on, hand-off races */
Suite *timers_suite(void);      /* check_timers.c: interval, timer, delay */
Suite *backpressure_suite(void); /* check_backpressure.c: buffer, latest, drop, limit_rate */
Suite *metrics_suite(void);     /* check_metrics.c: metrics, probe, Prometheus text */
Suite *tck_suite(void);         /* check_tck.c: the conformance kit, run on every stage */
Suite *tck_subscriber_suite(void); /* check_tck_subscriber.c: subscriber and processor verification */
Suite *emitter_suite(void);     /* check_emitter.c: push sources, watermarks, metrics */
Suite *fusion_suite(void);      /* check_fusion.c: fused synchronous chains */

/* Timeout scaled by CK_TIMEOUT_MULTIPLIER (Check does it) for concurrency cases. */
#define RILL_TEST_TIMEOUT 30

#endif
