/* tests/check_rill.c — the one test runner: every suite, fork mode on. */
#include "recorder.h"
#include "suites.h"

#include <stdlib.h>

int main(void)
{
    counting_allocator_install();
    SRunner *sr = srunner_create(core_suite());
    srunner_add_suite(sr, sources_suite());
    srunner_add_suite(sr, operators_suite());
    srunner_add_suite(sr, alloc_suite());
    srunner_add_suite(sr, threads_suite());
    srunner_add_suite(sr, schedulers_suite());
    srunner_add_suite(sr, vt_loop_suite());
    srunner_add_suite(sr, observe_on_suite());
    srunner_add_suite(sr, timers_suite());
    srunner_add_suite(sr, backpressure_suite());
    srunner_add_suite(sr, metrics_suite());
    srunner_add_suite(sr, tck_suite());
    srunner_add_suite(sr, tck_subscriber_suite());
    srunner_add_suite(sr, emitter_suite());
    srunner_add_suite(sr, fusion_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
