#include "suites.h"
Suite *tck_subscriber_suite(void)
{
    return suite_create("tck_subscriber");
}
