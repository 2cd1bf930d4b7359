// Copied from peerbench (java/RxBackpressure.java, the peer programs behind
// ../shared/research/perf-anchors.md) for rill's bench/compare. The workload is
// unchanged; only this comment was added.
import io.reactivex.rxjava3.core.BackpressureOverflowStrategy;
import io.reactivex.rxjava3.core.Flowable;
import io.reactivex.rxjava3.core.FlowableSubscriber;
import io.reactivex.rxjava3.schedulers.Schedulers;
import java.util.concurrent.CountDownLatch;
import org.reactivestreams.Subscription;

/**
 * Benchmark 3: onBackpressureX between a fast producer thread and a slow consumer thread.
 *   range(0,N).<strategy>.subscribeOn(computation(), requestOn=false).observeOn(single(), false, 256)
 *        .subscribe(SlowBatchSubscriber: request(BATCH) up-front and again after every BATCH items,
 *                   per item WORK dependent 64-bit multiply-adds: h = h*6364136223846793005 + x)
 * strategies: buffer1024 = onBackpressureBuffer(1024, onOverflow, DROP_OLDEST)
 *             buffer1024err = onBackpressureBuffer(1024) (RxJava default: MissingBackpressureException)
 *             drop = onBackpressureDrop(counter), latest = onBackpressureLatest(),
 *             unbounded = onBackpressureBuffer() (nothing dropped, memory grows)
 * Reported items/s = items DELIVERED to the slow subscriber / wall time from subscribe to terminal event.
 * Extras: delivered, dropped (= N - delivered), offered_per_sec (= N / wall), work_only_per_sec
 * (slow subscriber's own capacity measured in-process without Rx).
 * requestOn=false is deliberate: the producer is busy in range's loop, so requests must be applied
 * directly from the consumer thread (requestOn=true would queue them behind the whole emission).
 * Usage: java RxBackpressure <strategy> [N] [WORK] [BATCH]
 */
public final class RxBackpressure {
    static final long K = 6364136223846793005L;

    static final class SlowBatchSubscriber implements FlowableSubscriber<Integer> {
        final int batch, work;
        final CountDownLatch done;
        Subscription s;
        long h, delivered;
        int c;
        volatile Throwable error;

        SlowBatchSubscriber(int batch, int work, CountDownLatch done) {
            this.batch = batch; this.work = work; this.done = done;
        }
        @Override public void onSubscribe(Subscription s) { this.s = s; s.request(batch); }
        @Override public void onNext(Integer x) {
            long v = x, hh = h;
            for (int i = 0; i < work; i++) hh = hh * K + v;
            h = hh;
            delivered++;
            if (++c == batch) { c = 0; s.request(batch); }
        }
        @Override public void onError(Throwable t) { error = t; done.countDown(); }
        @Override public void onComplete() { done.countDown(); }
    }

    static long sink;

    static double workOnly(int n, int work) {
        long best = Long.MAX_VALUE;
        for (int r = 0; r < 15; r++) {
            long t0 = System.nanoTime();
            long hh = r;
            for (int j = 0; j < n; j++) { long v = j; for (int i = 0; i < work; i++) hh = hh * K + v; }
            long t1 = System.nanoTime();
            sink += hh;
            if (r >= 5) best = Math.min(best, t1 - t0); // best-of after warm-up
        }
        return n * 1e9 / best;
    }

    public static void main(String[] args) throws Exception {
        final String strategy = args[0];
        final int n = args.length > 1 ? Integer.parseInt(args[1]) : 10_000_000;
        final int work = args.length > 2 ? Integer.parseInt(args[2]) : 32;
        final int batch = args.length > 3 ? Integer.parseInt(args[3]) : 256;
        final long[] overflow = new long[1];
        Flowable<Integer> src = Flowable.range(0, n);
        switch (strategy) {
            case "buffer1024":
                src = src.onBackpressureBuffer(1024, () -> overflow[0]++, BackpressureOverflowStrategy.DROP_OLDEST);
                break;
            case "buffer1024err": src = src.onBackpressureBuffer(1024); break;
            case "drop": src = src.onBackpressureDrop(x -> overflow[0]++); break;
            case "latest": src = src.onBackpressureLatest(); break;
            case "unbounded": src = src.onBackpressureBuffer(); break;
            default: throw new IllegalArgumentException(strategy);
        }
        final Flowable<Integer> f = src.subscribeOn(Schedulers.computation(), false)
                .observeOn(Schedulers.single(), false, 256);
        final long workOnly = (long) workOnly(Math.min(n, 2_000_000), work);
        final long[] errors = new long[1];
        Harness.bench("rx_bp_" + strategy, 3, 2_000_000_000L, 7, () -> {
            overflow[0] = 0;
            CountDownLatch done = new CountDownLatch(1);
            SlowBatchSubscriber s = new SlowBatchSubscriber(batch, work, done);
            long t0 = System.nanoTime();
            f.subscribe(s);
            done.await();
            long t1 = System.nanoTime();
            if (s.error != null) errors[0]++;
            if (s.error != null && !strategy.equals("buffer1024err")) throw new RuntimeException(s.error);
            long dropped = n - s.delivered;
            if (!strategy.equals("buffer1024err") && !strategy.equals("latest") && overflow[0] != dropped)
                throw new IllegalStateException("drop accounting mismatch " + overflow[0] + " vs " + dropped);
            return new long[] {t1 - t0, s.delivered, s.delivered, dropped, (long) (n * 1e9 / (t1 - t0)),
                    workOnly, errors[0]};
        }, "delivered", "dropped", "offered_per_sec", "work_only_per_sec", "errored_reps");
        System.exit(0);
    }
}
