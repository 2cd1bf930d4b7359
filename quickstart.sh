#!/bin/sh
# quickstart.sh — set up, build and run rill's showcase on Debian 12.
#
#   sh ./quickstart.sh [--with-valgrind]
#
# 1. installs the Debian packages the build needs, if any are missing
#    (build-essential autoconf automake libtool check pkg-config; valgrind too
#    with --with-valgrind), with sudo when not run as root;
# 2. generates ./configure (only if missing or older than configure.ac),
#    configures (only if not configured yet) and builds with make;
# 3. runs ./examples/showcase.
#
# The output of each step goes to quickstart.log; it is shown if a step fails.
# Afterwards, `make check` runs the test suite.
set -eu

cd "$(dirname "$0")"
LOG=quickstart.log
: >"$LOG"

say() { printf 'rill: %s\n' "$*"; }
die() { printf 'rill: error: %s\n' "$*" >&2; exit 1; }

usage() {
    echo "usage: sh ./quickstart.sh [--with-valgrind]"
    echo "  --with-valgrind  also install valgrind (for 'make check-valgrind')"
}

PACKAGES="build-essential autoconf automake libtool check pkg-config"
for arg in "$@"; do
    case "$arg" in
        --with-valgrind) PACKAGES="$PACKAGES valgrind" ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $arg" ;;
    esac
done

# Runs a command with its output in the log; on failure shows the end of the
# log and stops with the given description.
run() {
    what=$1
    shift
    printf '\n$ %s\n' "$*" >>"$LOG"
    if ! "$@" >>"$LOG" 2>&1; then
        printf '%s\n' "---- last lines of $LOG ----" >&2
        tail -n 40 "$LOG" >&2
        die "$what failed (full output in $LOG)"
    fi
}

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

INSTALLED_SOMETHING=no
install_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        say "not a Debian system: make sure these are installed: $PACKAGES"
        return 0
    fi
    missing=
    for p in $PACKAGES; do
        installed "$p" || missing="$missing $p"
    done
    [ -z "$missing" ] && return 0

    if [ "$(id -u)" -eq 0 ]; then
        SUDO=
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=sudo
    else
        die "missing packages:$missing
  Install them as root, then run this script again:
    apt-get install$missing"
    fi
    say "installing$missing ${SUDO:+(with sudo) }..."
    run "apt-get update" $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -q
    run "installing$missing" $SUDO env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q $missing
    INSTALLED_SOMETHING=yes
}

configure_tree() {
    if [ ! -f configure ] || [ configure.ac -nt configure ]; then
        say "generating ./configure (autoreconf -fi) ..."
        run "autoreconf" autoreconf -fi
    fi
    if [ ! -f config.status ] || [ ! -f Makefile ]; then
        say "configuring ..."
        run "./configure" ./configure
    elif [ "$INSTALLED_SOMETHING" = yes ]; then
        # Packages arrived after the last configure (Check, say): look again.
        say "configuring again (new packages) ..."
        run "./configure" ./config.status --recheck
        run "./config.status" ./config.status
    fi
}

install_packages
configure_tree
JOBS=$(nproc 2>/dev/null || echo 2)
say "building (make -j$JOBS) ..."
run "make" make -j"$JOBS"
say "running the showcase (./examples/showcase) ..."
echo
if ! ./examples/showcase; then
    die "the showcase failed"
fi
echo
say "done. Next: 'make check' runs the test suite."
