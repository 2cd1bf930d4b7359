/* lib/alloc.c — the replaceable allocator.
 *
 * The functions are swapped only before first use (rill_set_allocator
 * refuses with EBUSY afterwards), so reads need no ordering beyond the
 * program's own happens-before between configuring and using the library.
 */
#include "alloc-internal.h"

#include <rill/core.h>

#include <errno.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static void *(*malloc_fn)(size_t) = malloc;
static void *(*realloc_fn)(void *, size_t) = realloc;
static void (*free_fn)(void *) = free;
static atomic_int used;

int rill_set_allocator(void *(*m)(size_t), void *(*r)(void *, size_t), void (*f)(void *))
{
    if (!m || !f)
        return EINVAL;
    if (atomic_load_explicit(&used, memory_order_relaxed))
        return EBUSY;
    malloc_fn = m;
    realloc_fn = r;
    free_fn = f;
    return 0;
}

void *rill__malloc(size_t n)
{
    if (!atomic_load_explicit(&used, memory_order_relaxed))
        atomic_store_explicit(&used, 1, memory_order_relaxed);
    void *p = malloc_fn(n ? n : 1);
    if (!p)
        errno = ENOMEM;
    return p;
}

void *rill__calloc(size_t n)
{
    void *p = rill__malloc(n);
    if (p)
        memset(p, 0, n);
    return p;
}

void rill__free(void *p)
{
    if (p)
        free_fn(p);
}

char *rill__strdup(const char *s)
{
    if (!s)
        return NULL;
    size_t n = strlen(s) + 1;
    char *d = rill__malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}
