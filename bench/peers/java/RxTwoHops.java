// Written for rill's bench/compare (not from peerbench): the two-hop
// counterpart of RxObserveOn's "xthread" mode, timed with the same Harness.
import io.reactivex.rxjava3.core.Flowable;
import io.reactivex.rxjava3.core.Scheduler;
import io.reactivex.rxjava3.schedulers.Schedulers;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;

/**
 * RxJava 3, two observeOn hops across three threads:
 *   range(0,N).subscribeOn(computation(), requestOn=true)
 *            .observeOn(single(), false, P)
 *            .observeOn(from(a one-thread executor), false, P)
 *            .subscribe(sum)
 * Same as rill's bench/observe_on "2hop_p<P>" case.
 * Usage: java RxTwoHops <prefetch> [N]
 */
public final class RxTwoHops {
    public static void main(String[] args) throws Exception {
        final int prefetch = Integer.parseInt(args[0]);
        final int n = args.length > 1 ? Integer.parseInt(args[1]) : 2_000_000;
        final ExecutorService third = Executors.newSingleThreadExecutor();
        final Scheduler last = Schedulers.from(third);
        final Flowable<Integer> f = Flowable.range(0, n)
                .subscribeOn(Schedulers.computation(), true)
                .observeOn(Schedulers.single(), false, prefetch)
                .observeOn(last, false, prefetch);
        final long expected = (long) n * (n - 1) / 2;
        Harness.bench("rx_observeOn_2hop_p" + prefetch, 3, 3_000_000_000L, 7, () -> {
            final long[] acc = new long[1];
            final CountDownLatch done = new CountDownLatch(1);
            long t0 = System.nanoTime();
            f.subscribe(x -> acc[0] += x, e -> { e.printStackTrace(); done.countDown(); }, done::countDown);
            done.await();
            long t1 = System.nanoTime();
            if (acc[0] != expected) throw new IllegalStateException("bad sum " + acc[0]);
            return new long[] {t1 - t0, n};
        });
        third.shutdown();
        System.exit(0);
    }
}
