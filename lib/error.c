/* lib/error.c — immutable, refcounted errors.
 *
 * The message lives in the same block as the error. An immortal ENOMEM error
 * (refcount pinned) lets every stage signal out-of-memory without allocating.
 */
#include "alloc-internal.h"
#include "atomic-internal.h"
#include "error-internal.h"

#include <errno.h>
#include <string.h>

#define IMMORTAL UINTPTR_MAX


struct rill_error {
    uintptr_t refs;   /* IMMORTAL for static errors */
    int code;
    char message[];
};

/* The immortal test is an atomic load: other threads may be changing a
 * shared error's count at the same time. */
static int immortal(rill_error *e)
{
    return __atomic_load_n(&e->refs, __ATOMIC_RELAXED) == IMMORTAL;
}

static struct {
    struct rill_error e;
    char text[32];
} nomem = { { IMMORTAL, ENOMEM }, "Cannot allocate memory" };

rill_error *rill__error_nomem(void)
{
    return &nomem.e;
}

rill_error *rill_error_new(int code, const char *message)
{
    char buf[128];
    if (!message)
        message = strerror_r(code, buf, sizeof buf);   /* GNU strerror_r: returns the text */
    size_t n = strlen(message) + 1;
    rill_error *e = rill__malloc(sizeof *e + n);
    if (!e)
        return NULL;
    e->refs = 1;
    e->code = code;
    memcpy(e->message, message, n);
    return e;
}

rill_error *rill__error_make(int code, const char *message)
{
    rill_error *e = rill_error_new(code, message);
    return e ? e : rill__error_nomem();
}

rill_error *rill_error_ref(rill_error *e)
{
    if (e && !immortal(e))
        rill__plain_ref(&e->refs);
    return e;
}

void rill_error_unref(rill_error *e)
{
    if (e && !immortal(e) && rill__plain_unref(&e->refs) == 0)
        rill__free(e);
}

int rill_error_code(const rill_error *e)
{
    return e ? e->code : 0;
}

const char *rill_error_message(const rill_error *e)
{
    return e ? e->message : "no error";
}
