## bench/local.mk — the benchmark programs (included by Makefile.am).
noinst_PROGRAMS += bench/sync_chain bench/observe_on
bench_sync_chain_SOURCES = bench/sync_chain.c bench/bench.h
bench_sync_chain_LDADD = librill.la
bench_observe_on_SOURCES = bench/observe_on.c bench/bench.h
bench_observe_on_LDADD = librill.la -lpthread
