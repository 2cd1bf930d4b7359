## bench/local.mk — the benchmark programs and their make targets (included
## by Makefile.am). See docs/BENCHMARKS.md.
##
##   make bench-smoke     every program with --quick; fails if one fails (< 30 s)
##   make bench-compare   rill side by side with RxJava 3, the JDK's
##                        SubmissionPublisher and C floors (bench/compare);
##                        env: RUNS=3 ONLY=<egrep> SKIP_INSTALL=1 RESULTS=dir
##   make bench-plot      throughput vs prefetch (gnuplot PNG) from the
##                        latest bench-compare results

BENCH_PROGS = bench/sync_chain bench/observe_on bench/backpressure bench/emit \
	bench/latency bench/memory
noinst_PROGRAMS += $(BENCH_PROGS)

# -no-install: the programs run straight from .libs, without libtool's
# wrapper script (so /usr/bin/time measures the benchmark, not a shell).
BENCH_LIBS = librill.la -lpthread
BENCH_LINKFLAGS = -no-install
bench_sync_chain_SOURCES = bench/sync_chain.c bench/bench.h
bench_sync_chain_LDADD = $(BENCH_LIBS)
bench_sync_chain_LDFLAGS = $(BENCH_LINKFLAGS)
bench_observe_on_SOURCES = bench/observe_on.c bench/bench.h
bench_observe_on_LDADD = $(BENCH_LIBS)
bench_observe_on_LDFLAGS = $(BENCH_LINKFLAGS)
bench_backpressure_SOURCES = bench/backpressure.c bench/bench.h
bench_backpressure_LDADD = $(BENCH_LIBS)
bench_backpressure_LDFLAGS = $(BENCH_LINKFLAGS)
bench_emit_SOURCES = bench/emit.c bench/bench.h
bench_emit_LDADD = $(BENCH_LIBS)
bench_emit_LDFLAGS = $(BENCH_LINKFLAGS)
bench_latency_SOURCES = bench/latency.c bench/bench.h
bench_latency_LDADD = $(BENCH_LIBS)
bench_latency_LDFLAGS = $(BENCH_LINKFLAGS)
bench_memory_SOURCES = bench/memory.c bench/bench.h
bench_memory_LDADD = $(BENCH_LIBS)
bench_memory_LDFLAGS = $(BENCH_LINKFLAGS)

# The runner, the plot script, the peer programs (copied from peerbench,
# workloads unchanged) and the documentation go into the tarball. dist_
# rather than EXTRA_DIST +=, because Makefile.am assigns EXTRA_DIST after
# including this file.
dist_noinst_SCRIPTS = bench/compare bench/smoke
dist_noinst_DATA = bench/plot.gp bench/peers/README \
	bench/peers/java/Harness.java bench/peers/java/RxSync.java \
	bench/peers/java/RxObserveOn.java bench/peers/java/RxTwoHops.java \
	bench/peers/java/RxBackpressure.java bench/peers/java/SubPub.java \
	bench/peers/c/bench.h bench/peers/c/sync_vtable.c bench/peers/c/spsc_ring.c \
	bench/peers/c/mutex_queue.c \
	docs/BENCHMARKS.md docs/bench-prefetch.png

BENCH_RESULTS = $(abs_builddir)/bench-results

bench-smoke: $(BENCH_PROGS)
	$(SHELL) $(srcdir)/bench/smoke $(BENCH_PROGS)

bench-compare: $(BENCH_PROGS)
	BENCH_BUILDDIR='$(abs_builddir)' RESULTS="$${RESULTS:-$(BENCH_RESULTS)}" \
	  bash $(srcdir)/bench/compare

bench-plot:
	RESULTS="$${RESULTS:-$(BENCH_RESULTS)}" bash $(srcdir)/bench/compare --plot-only

.PHONY: bench-smoke bench-compare bench-plot
