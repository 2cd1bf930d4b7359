/* lib/alloc-internal.h — the library's one allocator (see rill_set_allocator). */
#ifndef RILL_ALLOC_INTERNAL_H
#define RILL_ALLOC_INTERNAL_H

#include <stddef.h>

/* Return NULL with errno = ENOMEM on failure. */
void *rill__malloc(size_t n);
void *rill__calloc(size_t n);
void rill__free(void *p);
/* A copy of s (NULL gives NULL with errno unchanged). */
char *rill__strdup(const char *s);

/* container_of: from a pointer to a member back to the enclosing struct. */
#define rill__container_of(ptr, type, member) \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

#endif
