// Copied from peerbench (java/SubPub.java, the peer programs behind
// ../shared/research/perf-anchors.md) for rill's bench/compare. The workload is
// unchanged; only this comment was added.
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Flow;
import java.util.concurrent.SubmissionPublisher;

/**
 * Benchmark 4: JDK java.util.concurrent.SubmissionPublisher (JDK 9+ built-in Reactive Streams publisher).
 * Producer = main thread calling submit(i) (blocks when the per-subscriber buffer is full),
 * consumer = 1-thread executor; subscriber request(BATCH) up-front and again after every BATCH items.
 * Usage: java SubPub [N] [BATCH] [BUFFER]
 */
public final class SubPub {
    static final class BatchSubscriber implements Flow.Subscriber<Integer> {
        final int batch;
        final CountDownLatch done;
        Flow.Subscription s;
        long sum;
        int c;
        BatchSubscriber(int batch, CountDownLatch done) { this.batch = batch; this.done = done; }
        @Override public void onSubscribe(Flow.Subscription s) { this.s = s; s.request(batch); }
        @Override public void onNext(Integer x) {
            sum += x;
            if (++c == batch) { c = 0; s.request(batch); }
        }
        @Override public void onError(Throwable t) { t.printStackTrace(); done.countDown(); }
        @Override public void onComplete() { done.countDown(); }
    }

    public static void main(String[] args) throws Exception {
        final int n = args.length > 0 ? Integer.parseInt(args[0]) : 10_000_000;
        final int batch = args.length > 1 ? Integer.parseInt(args[1]) : 256;
        final int buffer = args.length > 2 ? Integer.parseInt(args[2]) : 256;
        final ExecutorService exec = Executors.newSingleThreadExecutor();
        final long expected = (long) n * (n - 1) / 2;
        Harness.bench("jdk_submissionpublisher_b" + batch + "_buf" + buffer, 3, 3_000_000_000L, 7, () -> {
            CountDownLatch done = new CountDownLatch(1);
            BatchSubscriber s = new BatchSubscriber(batch, done);
            long t0 = System.nanoTime();
            try (SubmissionPublisher<Integer> p = new SubmissionPublisher<>(exec, buffer)) {
                p.subscribe(s);
                for (int i = 0; i < n; i++) p.submit(i);
            } // close() -> onComplete after the buffered items
            done.await();
            long t1 = System.nanoTime();
            if (s.sum != expected) throw new IllegalStateException("bad sum " + s.sum);
            return new long[] {t1 - t0, n};
        });
        exec.shutdown();
        System.exit(0);
    }
}
