#!/usr/bin/env bash
# Rehearses a newcomer's fresh machine: removes what the README's two
# commands install by themselves, clones this repository's main into a
# temporary directory (with ../shared beside it, as CI has), and runs both
# commands there, timing each:
#
#   1. scripts/wordcount-demo.sh   (install, build, run the word count)
#   2. .ci/run                     (install the test servers, run all tests)
#
# Removed first (each is reinstalled by the commands, which is the point):
#   cargo-fuzz and s3s-fs (~/.cargo/bin), the nightly toolchain,
#   ~/.cache/streamstate (target dirs, fuzz corpora, bench venv), the
#   prebuilt RocksDB (/usr/local/lib/streamstate-rocksdb-* and its ld.so
#   entry), Hadoop's artifacts in the Maven repository (~/.m2), and the
#   MiniDFSCluster classpath of the clone (a new clone has none).
# With --apt also libclang-dev, Java 17 and Maven (apt), which take longest
# to download; Rust itself (rustup's stable toolchain) stays, as the README
# asks a newcomer to have it.
#
# Usage: scripts/fresh-machine.sh --yes [--apt] [--keep]
#   --yes   required: this deletes the caches above on this machine
#   --keep  keep the temporary clone (its path is printed)
# Exit status: 0 when both commands pass; the times are printed at the end
# and in $work/times.txt.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
export PATH="$HOME/.cargo/bin:$PATH"

yes=0 apt=0 keep=0
for arg in "$@"; do
    case "$arg" in
        --yes) yes=1 ;;
        --apt) apt=1 ;;
        --keep) keep=1 ;;
        *) echo "usage: scripts/fresh-machine.sh --yes [--apt] [--keep]" >&2; exit 2 ;;
    esac
done
if [ "$yes" -ne 1 ]; then
    echo "scripts/fresh-machine.sh deletes cargo-fuzz, s3s-fs, the nightly toolchain," >&2
    echo "~/.cache/streamstate, the prebuilt RocksDB and ~/.m2's Hadoop artifacts;" >&2
    echo "run it with --yes to go ahead" >&2
    exit 2
fi
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
    echo "note: uncommitted changes in $repo are not part of the rehearsal (it clones main)" >&2
fi

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

echo "== removing what the README's commands install"
for tool in cargo-fuzz s3s-fs; do
    if command -v "$tool" >/dev/null 2>&1; then
        cargo uninstall "$tool" || rm -f "$(command -v "$tool")"
    fi
done
if rustup toolchain list | grep -q '^nightly'; then
    rustup toolchain uninstall nightly
fi
rm -rf "$HOME/.cache/streamstate" "$HOME/.m2/repository/org/apache/hadoop"
$sudo rm -rf /usr/local/lib/streamstate-rocksdb-* /etc/ld.so.conf.d/streamstate-rocksdb.conf
$sudo /sbin/ldconfig 2>/dev/null || $sudo ldconfig || true
if [ "$apt" -eq 1 ]; then
    $sudo apt-get purge -y -q libclang-dev openjdk-17-jdk-headless maven
    $sudo apt-get autoremove -y -q
fi

work="$(mktemp -d -t streamstate-fresh.XXXXXX)"
if [ "$keep" -eq 0 ]; then
    trap 'rm -rf "$work"' EXIT
fi
echo "== cloning main into $work/streamstate"
git clone -q --no-local --branch main "$repo" "$work/streamstate"
if [ -d "$repo/../shared" ]; then
    cp -r "$repo/../shared" "$work/shared"
fi

run_timed() { # label command...
    local label=$1 start end status=0
    shift
    echo "== $label: $*"
    start=$(date +%s)
    (cd "$work/streamstate" && "$@") || status=$?
    end=$(date +%s)
    printf '%s: %d min %02d s (exit %d)\n' "$label" $(((end - start) / 60)) $(((end - start) % 60)) "$status" |
        tee -a "$work/times.txt"
    return "$status"
}

status=0
run_timed "scripts/wordcount-demo.sh" bash scripts/wordcount-demo.sh >"$work/demo.log" 2>&1 || status=1
tail -5 "$work/demo.log"
run_timed ".ci/run" env CI=true bash .ci/run </dev/null >"$work/ci.log" 2>&1 || status=1
grep -E '^test result:' "$work/ci.log" | awk '{p+=$4; f+=$6} END {print p " passed, " f " failed"}'
tail -5 "$work/ci.log"

echo "== times (machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
cat "$work/times.txt"
if [ "$status" -ne 0 ]; then
    echo "error: a README command failed; logs: $work/demo.log, $work/ci.log" >&2
    trap - EXIT
    exit 1
fi
