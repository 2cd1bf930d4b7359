#!/bin/sh
# Diffs the symbols each shared library exports against its checked-in list:
# librill.so against tests/exported-symbols.txt (only rill_* names) and
# librill-tck.so against tests/exported-symbols-tck.txt (only rill_tck_*).
# A new public function means adding it to the list in the same commit.
set -eu
check() {
    so="${top_builddir:-.}/.libs/$1"
    want="${top_srcdir:-.}/tests/$2"
    prefix=$3
    if [ ! -f "$so" ]; then
        echo "check-exports: $so not built (static-only build?); skipping"
        exit 77
    fi
    got=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBRW]$/ { print $3 }' | sort)
    bad=$(printf '%s\n' "$got" | grep -v "^$prefix" || true)
    if [ -n "$bad" ]; then
        echo "check-exports: $1 exports symbols without the $prefix prefix:"
        printf '%s\n' "$bad"
        exit 1
    fi
    if ! printf '%s\n' "$got" | diff -u "$want" -; then
        echo "check-exports: $1's exported symbols differ from $want (update it if the change is intended)"
        exit 1
    fi
    echo "check-exports: $1: $(printf '%s\n' "$got" | wc -l) symbols, all expected"
}
check librill.so exported-symbols.txt rill_
check librill-tck.so exported-symbols-tck.txt rill_tck_
