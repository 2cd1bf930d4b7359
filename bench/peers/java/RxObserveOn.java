// Copied from peerbench (java/RxObserveOn.java, the peer programs behind
// ../shared/research/perf-anchors.md) for rill's bench/compare. The workload is
// unchanged; only this comment was added.
import io.reactivex.rxjava3.core.Flowable;
import io.reactivex.rxjava3.core.Scheduler;
import io.reactivex.rxjava3.schedulers.Schedulers;
import java.util.concurrent.CountDownLatch;

/**
 * Benchmark 2: RxJava 3 observeOn throughput, consumer on Schedulers.single().
 * modes:
 *   fused   : range(0,N).observeOn(single, false, P)            -- literal pipeline. NOTE: range supports
 *             SYNC queue-fusion, so observeOn polls range directly on the single() thread: NO per-item
 *             cross-thread hand-off happens.
 *   hide    : range(0,N).hide().observeOn(single, false, P)     -- fusion broken: items go through observeOn's
 *             SpscArrayQueue, but after the first batch range re-emits from inside request(), i.e. on the
 *             consumer thread (queue cost, little real thread crossing).
 *   xthread : range(0,N).subscribeOn(computation(), requestOn=true).observeOn(single, false, P)
 *             -- true two-thread pipeline: producer thread emits, every request(n) is scheduled back onto it.
 * Usage: java RxObserveOn <mode> <prefetch> [N]
 */
public final class RxObserveOn {
    public static void main(String[] args) throws Exception {
        final String mode = args[0];
        final int prefetch = Integer.parseInt(args[1]);
        final int n = args.length > 2 ? Integer.parseInt(args[2]) : 10_000_000;
        final Scheduler consumer = Schedulers.single();
        Flowable<Integer> src = Flowable.range(0, n);
        switch (mode) {
            case "fused": break;
            case "hide": src = src.hide(); break;
            case "xthread": src = src.subscribeOn(Schedulers.computation(), true); break;
            default: throw new IllegalArgumentException(mode);
        }
        final Flowable<Integer> f = src.observeOn(consumer, false, prefetch);
        final long expected = (long) n * (n - 1) / 2;
        Harness.bench("rx_observeOn_" + mode + "_p" + prefetch, 3, 3_000_000_000L, 7, () -> {
            final long[] acc = new long[1];
            final CountDownLatch done = new CountDownLatch(1);
            long t0 = System.nanoTime();
            f.subscribe(x -> acc[0] += x, e -> { e.printStackTrace(); done.countDown(); }, done::countDown);
            done.await();
            long t1 = System.nanoTime();
            if (acc[0] != expected) throw new IllegalStateException("bad sum " + acc[0]);
            return new long[] {t1 - t0, n};
        });
        System.exit(0);
    }
}
