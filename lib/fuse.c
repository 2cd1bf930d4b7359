/* lib/fuse.c — operator fusion (work in progress). */
#include "fuse-internal.h"
