/* lib/error-internal.h */
#ifndef RILL_ERROR_INTERNAL_H
#define RILL_ERROR_INTERNAL_H

#include <rill/core.h>

/* A new error of `code`, or the immortal ENOMEM error when memory is out:
 * never NULL, so signalling an error can never fail. */
rill_error *rill__error_make(int code, const char *message);

/* The immortal ENOMEM error (ref/unref are no-ops on it). */
rill_error *rill__error_nomem(void);

#endif
