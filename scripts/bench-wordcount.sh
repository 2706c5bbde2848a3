#!/usr/bin/env bash
# Word-count throughput of the release `streamstate` binary per state backend
# at parallelism 1 and 2, on the shared corpus (../shared/bench/gen_corpus.py,
# 10M words, 1M distinct by default), checkpoints every 1 s to file://.
# Each run is timed end to end (start, read, count, final checkpoint, exit)
# and checked against the counts of the baseline: a bare single-thread word
# count of the same file (std HashMap, no runtime, no state backend;
# cli/examples/baseline_wordcount.rs), run first; ratios are to its words/s.
# The memory backend is left out: like Flink's, it caps snapshots at 5 MiB,
# less than 1M words' counts.
# Usage: scripts/bench-wordcount.sh [WORDS] [VOCAB]
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamstate/target}"
words="${1:-10000000}"
vocab="${2:-1000000}"
corpus_dir="$HOME/.cache/streamstate/corpus"
corpus="$corpus_dir/words-$words-vocab-$vocab.txt"
generator="$(pwd)/../shared/bench/gen_corpus.py"
if [ ! -s "$corpus" ]; then
    mkdir -p "$corpus_dir"
    python3 "$generator" --words "$words" --vocab "$vocab" > "$corpus.tmp"
    mv "$corpus.tmp" "$corpus"
fi
cargo build --release -p streamstate-cli --bin streamstate --example baseline_wordcount
bin="$CARGO_TARGET_DIR/release/streamstate"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "corpus: $corpus ($(wc -c < "$corpus") bytes, $words words, $vocab distinct)"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB"
echo
echo "| backend | parallelism | seconds | words/s | ratio to baseline | peak RSS |"
echo "|---|---|---|---|---|---|"
# One timed run of the command "$@": leaves "seconds rss_mib" in $work/result.
timed() {
    local report="$work/time.txt" start end
    start=$(date +%s.%N)
    /usr/bin/time -v -o "$report" "$@" 2> "$work/stderr.txt" || { cat "$work/stderr.txt" >&2; return 1; }
    end=$(date +%s.%N)
    echo "$(echo "$end - $start" | bc -l) $(($(awk -F': ' '/Maximum resident set size/ {print $2}' "$report") / 1024))" \
        > "$work/result"
}
row() { # name parallelism (reads $work/result)
    local rate seconds rss
    read -r seconds rss < "$work/result"
    rate=$(echo "$words / $seconds" | bc -l)
    [ -z "$baseline" ] && baseline="$rate"
    printf '| %s | %s | %.2f | %.0f | %.2f | %d MiB |\n' "$1" "$2" "$seconds" "$rate" "$(echo "$rate / $baseline" | bc -l)" "$rss"
}
baseline=""
reference="$work/baseline.tsv"
timed "$CARGO_TARGET_DIR/release/examples/baseline_wordcount" "$corpus" "$reference"
row "baseline (std HashMap, 1 thread)" 1
for backend in fs rocksdb; do
    for parallelism in 1 2; do
        run="$work/$backend-$parallelism"
        mkdir -p "$run"
        timed "$bin" wordcount --input "$corpus" --state-backend "$backend" --parallelism "$parallelism" \
            --checkpoint-dir "file://$run/checkpoints" --checkpoint-interval 1s --output "$run/counts.tsv"
        row "$backend" "$parallelism"
        if ! cmp -s "$reference" "$run/counts.tsv"; then
            echo "error: $backend p$parallelism counted differently from the baseline" >&2
            exit 1
        fi
        rm -rf "$run"
    done
done
