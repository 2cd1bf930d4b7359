/* lib/barrier.c — asymmetric memory barriers.
 *
 * A hand-off where one side acts per item (a producer publishing into a
 * ring) and the other rarely (a drainer going idle) needs a StoreLoad fence
 * on both sides to close the "publish, then check whether the drainer is
 * running" race. A fence per item costs as much as the hand-off itself, so
 * the rare side pays instead: membarrier(PRIVATE_EXPEDITED) makes every
 * thread of the process execute a full barrier before it returns, and the
 * per-item side only needs a compiler barrier. Where the kernel refuses
 * membarrier (old kernels, seccomp, valgrind), rill__asym_light_ok() is 0
 * and callers fall back to fencing on the per-item side.
 */
#include "atomic-internal.h"

#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__linux__) && defined(SYS_membarrier)
#include <linux/membarrier.h>
#define HAVE_MEMBARRIER 1
#endif

static pthread_once_t once = PTHREAD_ONCE_INIT;
static int light_ok;

static void setup(void)
{
#ifdef HAVE_MEMBARRIER
    long cmds = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
    if (cmds > 0 && (cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED) &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0)
        light_ok = 1;
#endif
}

int rill__asym_light_ok(void)
{
    pthread_once(&once, setup);
    return light_ok;
}

void rill__asym_heavy(void)
{
#ifdef HAVE_MEMBARRIER
    if (light_ok && syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
        return;
#endif
    atomic_thread_fence(memory_order_seq_cst);
}
