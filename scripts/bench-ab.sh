#!/usr/bin/env bash
# Alternated A/B of two builds: runs the baseline and the word count of
# binary A and binary B on the main bench corpus, one after the other,
# ROUNDS times (default 5), and prints the wall seconds of each run, so two
# builds are compared seconds apart on a shared machine.
#
# Usage: scripts/bench-ab.sh A_STREAMSTATE B_STREAMSTATE [BACKEND]
#   BACKEND (default fs): the word count's --state-backend.
#   BASELINE_A / BASELINE_B: baseline binaries to time beside them
#   (default: this checkout's release baseline for both).
# Build an older commit's binary with, e.g.:
#   git worktree add /tmp/old <commit>
#   (cd /tmp/old && CARGO_TARGET_DIR=/tmp/oldtarget cargo build --release -p streamstate-cli --bin streamstate)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then
    echo "usage: scripts/bench-ab.sh A_STREAMSTATE B_STREAMSTATE [BACKEND]" >&2
    exit 2
fi
a=$1 b=$2 backend=${3:-fs}
target="${CARGO_TARGET_DIR:-$HOME/.cache/streamstate/target}"
corpus="$HOME/.cache/streamstate/corpus/words-10000000-vocab-1000000.txt"
[ -f "$corpus" ] || { echo "error: no $corpus: run scripts/bench.sh once first" >&2; exit 1; }
base_a="${BASELINE_A:-$target/release/examples/baseline_wordcount}"
base_b="${BASELINE_B:-$base_a}"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
seconds() { # COMMAND...: wall seconds of COMMAND (which must succeed)
    local start end
    start=$(date +%s.%N)
    "$@" > /dev/null 2> "$work/log" || { tail -5 "$work/log" >&2; exit 1; }
    end=$(date +%s.%N)
    echo "$end - $start" | bc -l | xargs printf '%.2f'
}
count() { # BINARY
    rm -rf "$work/run"
    seconds "$1" wordcount --input "$corpus" --state-backend "$backend" --parallelism 1 \
        --checkpoint-dir "file://$work/run/checkpoints" --checkpoint-interval 1s --output "$work/out.tsv"
}
echo "| round | baseline A | baseline B | $backend p1 A | $backend p1 B |"
echo "|---|---|---|---|---|"
for round in $(seq 1 "${ROUNDS:-5}"); do
    echo "| $round | $(seconds "$base_a" "$corpus" "$work/a.tsv") | $(seconds "$base_b" "$corpus" "$work/b.tsv") | $(count "$a") | $(count "$b") |"
done
