/* tests/suites.h — every Check suite the runner (check_rill.c) combines. */
#ifndef RILL_TESTS_SUITES_H
#define RILL_TESTS_SUITES_H

#include <check.h>

Suite *core_suite(void);        /* check_core.c: errors, callbacks, subscribe, stage API */
Suite *sources_suite(void);     /* check_sources.c: range, from_array, just, empty, fail, generate */
Suite *operators_suite(void);   /* check_operators.c: map, filter, take, on_discard */
Suite *alloc_suite(void);       /* check_alloc.c: allocator replacement, allocation failure */
Suite *threads_suite(void);     /* check_threads.c: request/cancel from several threads */

/* Timeout scaled by CK_TIMEOUT_MULTIPLIER (Check does it) for concurrency cases. */
#define RILL_TEST_TIMEOUT 30

#endif
