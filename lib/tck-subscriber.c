/* placeholder */
#include "tck-internal.h"
