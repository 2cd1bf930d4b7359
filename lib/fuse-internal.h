/* lib/fuse-internal.h */
#ifndef RILL_FUSE_INTERNAL_H
#define RILL_FUSE_INTERNAL_H
#endif
