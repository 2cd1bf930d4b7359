// Copied from peerbench (java/RxSync.java, the peer programs behind
// ../shared/research/perf-anchors.md) for rill's bench/compare. The workload is
// unchanged; only this comment was added.
import io.reactivex.rxjava3.core.Flowable;

/**
 * Benchmark 1: RxJava 3 Flowable, fully synchronous on the calling thread.
 *   Flowable.range(0, N).map(x -> x + 1).filter(x -> (x & 1) == 0).subscribe(sum)
 * items/s counts SOURCE items (N per rep), i.e. items pushed through map+filter.
 * Usage: java RxSync [N]
 */
public final class RxSync {
    static long sum;

    public static void main(String[] args) throws Exception {
        final int n = args.length > 0 ? Integer.parseInt(args[0]) : 10_000_000;
        final Flowable<Integer> f = Flowable.range(0, n).map(x -> x + 1).filter(x -> (x & 1) == 0);
        final long k = n / 2;                 // evens in [1, n]: 2, 4, ..., 2k
        final long expected = k * (k + 1);
        Harness.bench("rx_sync_map_filter", 5, 3_000_000_000L, 9, () -> {
            sum = 0;
            long t0 = System.nanoTime();
            f.subscribe(x -> sum += x);
            long t1 = System.nanoTime();
            if (sum != expected) throw new IllegalStateException("bad sum " + sum + " != " + expected);
            return new long[] {t1 - t0, n};
        });
    }
}
