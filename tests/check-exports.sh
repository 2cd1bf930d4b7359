#!/bin/sh
# Diffs the symbols librill.so exports against tests/exported-symbols.txt:
# only rill_* names, each one on purpose. A new public function means adding
# it to that list in the same commit.
set -eu
so="${top_builddir:-.}/.libs/librill.so"
want="${top_srcdir:-.}/tests/exported-symbols.txt"
if [ ! -f "$so" ]; then
    echo "check-exports: $so not built (static-only build?); skipping"
    exit 77
fi
got=$(nm -D --defined-only "$so" | awk '$2 ~ /^[TDBRW]$/ { print $3 }' | sort)
bad=$(printf '%s\n' "$got" | grep -v '^rill_' || true)
if [ -n "$bad" ]; then
    echo "check-exports: symbols without the rill_ prefix are exported:"
    printf '%s\n' "$bad"
    exit 1
fi
if ! printf '%s\n' "$got" | diff -u "$want" -; then
    echo "check-exports: exported symbols differ from $want (update it if the change is intended)"
    exit 1
fi
echo "check-exports: $(printf '%s\n' "$got" | wc -l) symbols, all expected"
