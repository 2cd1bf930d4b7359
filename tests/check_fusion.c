#include "suites.h"
Suite *fusion_suite(void)
{
    return suite_create("fusion");
}
