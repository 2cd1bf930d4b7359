// Copied from peerbench (java/Harness.java, the peer programs behind
// ../shared/research/perf-anchors.md) for rill's bench/compare. The workload is
// unchanged; only this comment was added.
import java.util.Arrays;
import java.util.Locale;

/**
 * Tiny in-process benchmark harness shared by the Java peer benchmarks.
 * One "rep" = one full pipeline run; it returns {elapsedNs, itemsCounted, extra...}.
 * First rep is reported as "cold" (mostly interpreter/C1), then warm-up reps until both
 * minWarm reps and warmNs have elapsed, then `reps` timed reps; the median is reported.
 * Output: one line "RESULT <name> <median items/s> min=.. max=.. cold=.. warm_reps=.. reps=.. [extras]".
 */
public final class Harness {
    public interface Rep { long[] run() throws Exception; }

    private Harness() {}

    public static void bench(String name, int minWarm, long warmNs, int reps, Rep rep, String... extraNames)
            throws Exception {
        long[] r0 = rep.run();
        double cold = r0[1] * 1e9 / r0[0];
        int w = 1;
        long start = System.nanoTime();
        while (w < minWarm || System.nanoTime() - start < warmNs) {
            rep.run();
            w++;
            if (System.nanoTime() - start > 4 * warmNs && w >= 2) break; // safety cap
        }
        double[] rates = new double[reps];
        long[][] ex = new long[extraNames.length][reps];
        for (int i = 0; i < reps; i++) {
            long[] r = rep.run();
            rates[i] = r[1] * 1e9 / r[0];
            for (int k = 0; k < extraNames.length; k++) ex[k][i] = r[2 + k];
        }
        double[] sorted = rates.clone();
        Arrays.sort(sorted);
        StringBuilder sb = new StringBuilder();
        sb.append(String.format(Locale.ROOT, "RESULT %s %.0f min=%.0f max=%.0f cold=%.0f warm_reps=%d reps=%d",
                name, median(sorted), sorted[0], sorted[sorted.length - 1], cold, w, reps));
        for (int k = 0; k < extraNames.length; k++) {
            long[] e = ex[k].clone();
            Arrays.sort(e);
            sb.append(' ').append(extraNames[k]).append('=').append(e[e.length / 2]);
        }
        System.out.println(sb);
        System.out.flush();
    }

    static double median(double[] s) {
        int n = s.length;
        return (n % 2 == 1) ? s[n / 2] : (s[n / 2 - 1] + s[n / 2]) / 2.0;
    }

    public static long envLong(String key, long def) {
        String v = System.getenv(key);
        return v == null || v.isEmpty() ? def : Long.parseLong(v);
    }
}
