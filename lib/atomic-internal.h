/* lib/atomic-internal.h — the one place rill touches atomics.
 *
 * Internal state uses C11 <stdatomic.h> types directly. Public structs hold
 * no _Atomic (bindings must be able to lay them out), so the few counters
 * that live in public structs (rill_publisher's refcount, demand words given
 * to rill_demand_add) go through the __atomic builtins below, which GCC and
 * Clang provide for plain integer objects.
 */
#ifndef RILL_ATOMIC_INTERNAL_H
#define RILL_ATOMIC_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#define rill__load_relaxed(p) atomic_load_explicit((p), memory_order_relaxed)
#define rill__load_acquire(p) atomic_load_explicit((p), memory_order_acquire)
#define rill__store_relaxed(p, v) atomic_store_explicit((p), (v), memory_order_relaxed)

/* Plain-object atomics for fields of public structs. */
#define rill__plain_store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
/* Increment needs no ordering: the caller already holds a reference. */
#define rill__plain_ref(p) ((void)__atomic_fetch_add((p), 1, __ATOMIC_RELAXED))
/* Decrement is acq_rel: the last owner must see every other owner's writes
 * before it frees the object. Returns the count after the decrement. */
#define rill__plain_unref(p) (__atomic_sub_fetch((p), 1, __ATOMIC_ACQ_REL))

/* How far apart to keep data that different threads write: a cache line
 * is 64 bytes, but x86's spatial prefetcher fetches lines in aligned
 * 128-byte pairs, so two lines of one pair still ping-pong between cores.
 * Heap objects with such groups must be allocated at this alignment
 * (rill__calloc gives 16). */
#define RILL__SEPARATE 128

/* A spin-wait hint: lets the sibling hyperthread run and saves power. */
static inline void rill__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

/* Asks for the line holding p in a state ready for writing. A producer
 * that fills a ring the consumer reads from calls it a little ahead: the
 * consumer's core holds a copy of each line it has read, and taking the
 * line back costs a cross-core round trip that a plain store would wait
 * for, with every later store queued behind it (x86 commits stores in
 * order). x86: PREFETCHW, which older CPUs execute as a NOP. */
static inline void rill__prefetch_write(const void *p)
{
#if defined(__x86_64__) || defined(__i386__)
    __asm__ volatile("prefetchw %0" : : "m"(*(const char *)p));
#else
    __builtin_prefetch(p, 1);
#endif
}

/* Saturating demand arithmetic on an _Atomic uint64_t (see core.c). */
uint64_t rill__demand_add(_Atomic uint64_t *demand, uint64_t n);
uint64_t rill__demand_produced(_Atomic uint64_t *demand, uint64_t n);

/* Queue-drain entry: returns 1 when the caller became the drainer (the
 * counter went from 0 to 1), else 0 (the running drainer will see the extra
 * work). acq_rel: the new drainer must see what earlier drainers published,
 * and a missed ticket must publish the work it stands for. */
static inline int rill__wip_enter(_Atomic uint32_t *wip)
{
    return atomic_fetch_add_explicit(wip, 1, memory_order_acq_rel) == 0;
}

/* Drainer's exit test: gives back the `missed` tickets it has served and
 * returns how many arrived meanwhile (0: the drainer may stop). */
static inline uint32_t rill__wip_leave(_Atomic uint32_t *wip, uint32_t missed)
{
    return atomic_fetch_sub_explicit(wip, missed, memory_order_acq_rel) - missed;
}

/* Asymmetric barriers (lib/barrier.c). rill__asym_light_ok() says whether
 * the per-item side may skip its fence (1), given that the rare side calls
 * rill__asym_heavy() before re-checking; it is decided once per process. */
int rill__asym_light_ok(void);
void rill__asym_heavy(void);

#endif
