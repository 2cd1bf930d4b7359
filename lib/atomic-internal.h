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

/* A spin-wait hint: lets the sibling hyperthread run and saves power. */
static inline void rill__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
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
