#!/usr/bin/env bash
# The benchmark command: word count throughput, checkpoint pauses and sizes,
# restore time, incremental checkpoint bytes against changed bytes
# (cli/examples/incremental_bytes.rs), the cluster executor's failover time
# on a real S3 server (scripts/bench_failover.py) and bytes sent between
# its processes, and a state-size sweep, all in one
# run against a bare
# single-thread baseline on the same input (ratios are what to compare: the
# machines are shared). Writes a dated section into docs/BENCHMARKS.md and
# the plot docs/bench/scaling.png.
#
# Usage: scripts/bench.sh [--no-sweep] [--no-docs]
#   BENCH_WORDS (default 10000000) and BENCH_VOCAB (default 1000000) size
#   the main corpus, made by ../shared/bench/gen_corpus.py.
#   BENCH_ROUNDS (default 5) is how many times the baseline and the fs runs
#   of the main corpus go, alternated: a round is the baseline, fs p1 and
#   fs p2 and fs on 2 processes (the cluster executor) one after the
#   other, and the report takes each round's ratios
#   (paired runs seconds apart) and their median, so one slow second of a
#   shared machine does not decide a target.
#
# Every run is the release `streamstate wordcount --input … --output …`
# process timed end to end under /usr/bin/time -v, checkpoints every 1 s to
# file://, its counts compared with the baseline's (a mismatch fails the
# bench). Checkpoint statistics come from the job's own `snapshot completed`
# log lines (RUST_LOG=streamstate_runtime=info), and RocksDB's waits for a
# checkpoint being made from state_rocksdb's (info).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
export PATH="$HOME/.cargo/bin:$PATH"
# The README's target directory: its first command (scripts/wordcount-demo.sh)
# already built the release dependencies there, and release artifacts never
# invalidate the tests' debug ones. STREAMSTATE_BENCH_TARGET picks another
# (a bench run while tests build there would wait on their lock).
export CARGO_TARGET_DIR="${STREAMSTATE_BENCH_TARGET:-${CARGO_TARGET_DIR:-$HOME/.cache/streamstate/target}}"
# What the build needs (libclang-dev, RocksDB's prebuilt library) and the
# failover run's S3 server (s3s-fs); quick when they are there already.
bash scripts/install-deps.sh --bench
sweep=1 docs=1
for arg in "$@"; do
    case "$arg" in
        --no-sweep) sweep=0 ;;
        --no-docs) docs=0 ;;
        *) echo "usage: scripts/bench.sh [--no-sweep] [--no-docs]" >&2; exit 2 ;;
    esac
done
words="${BENCH_WORDS:-10000000}"
vocab="${BENCH_VOCAB:-1000000}"
rounds="${BENCH_ROUNDS:-5}"
# The round the next run belongs to; runs outside the repeated rounds are 1.
round=1
started=$(date +%s)
cache="$HOME/.cache/streamstate"
generator="$repo/../shared/bench/gen_corpus.py"

# The plot needs matplotlib; a venv keeps it off the system Python.
venv="$cache/bench-venv"
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet 'matplotlib>=3.8,<4'
fi

# corpus WORDS VOCAB [SKEW]: prints the path of a cached corpus.
corpus() {
    local path="$cache/corpus/words-$1-vocab-$2${3:+-skew-$3}.txt"
    if [ ! -s "$path" ]; then
        mkdir -p "$cache/corpus"
        python3 "$generator" --words "$1" --vocab "$2" ${3:+--skew "$3"} > "$path.tmp"
        mv "$path.tmp" "$path"
    fi
    echo "$path"
}

# The corpora are generated (single-threaded Python) while the release
# build compiles, which leaves a core idle in its serial stretches.
# The state-size sweep: Zipf corpora of 10M words over growing
# vocabularies, and a uniform one (skew 0) for the largest state: 12.8M
# words drawn from 25M give ~10M distinct keys (25M × (1 − e^−0.512)), the
# size issue 7's RocksDB memory target names. (20M words from 12.5M give
# as many keys; the fewer words take a minute less of the bench's 15, and
# the generator needs ~3.7 GB for the larger vocabulary.) The main corpus
# is the sweep's middle point.
sweep_specs=("10000000 10000" "10000000 100000" "12800000 25000000 0")
corpus_specs=("$words $vocab")
if [ "$sweep" = 1 ]; then
    corpus_specs+=("${sweep_specs[@]}")
fi
(
    for spec in "${corpus_specs[@]}"; do
        # shellcheck disable=SC2086
        corpus $spec > /dev/null
    done
) &
corpora_made=$!
cargo build --release -p streamstate-cli --bin streamstate --example baseline_wordcount --example incremental_bytes \
    --example baseline_window_wordcount
if ! wait "$corpora_made"; then
    echo "error: generating the corpora with $generator failed" >&2
    exit 1
fi
echo "== built and corpora ready after $(($(date +%s) - started)) s" >&2
bin="$CARGO_TARGET_DIR/release/streamstate"
baseline_bin="$CARGO_TARGET_DIR/release/examples/baseline_wordcount"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
results="$work/results.jsonl"
: > "$results"

# run NAME GROUP CORPUS COMMAND...: times COMMAND, appends one JSON line
# with its wall time, peak RSS and log to $results.
run() {
    local name="$1" group="$2" input="$3"
    shift 3
    local log="$work/log.txt" report="$work/time.txt" start end
    start=$(date +%s.%N)
    if ! RUST_LOG=streamstate_runtime=info,state_rocksdb=info /usr/bin/time -v -o "$report" "$@" 2> "$log"; then
        echo "error: $name failed:" >&2
        tail -20 "$log" >&2
        exit 1
    fi
    end=$(date +%s.%N)
    "$venv/bin/python" "$repo/scripts/bench_report.py" record \
        --name "$name" --group "$group" --corpus "$input" \
        --seconds "$(echo "$end - $start" | bc -l)" --round "$round" --time-report "$report" --log "$log" \
        --keys-file "$work/expected.tsv" >> "$results"
    echo "  $name: $(tail -1 "$results" | cut -c1-160)" >&2
}

# wordcount NAME GROUP CORPUS BACKEND PARALLELISM INCREMENTAL [EXTRA...]:
# one checked word count run, checkpoints every $CHECKPOINT_INTERVAL (1s).
wordcount() {
    local name="$1" group="$2" input="$3" backend="$4" parallelism="$5" incremental="$6"
    local interval="${CHECKPOINT_INTERVAL:-1s}"
    shift 6
    local dir="$work/run"
    rm -rf "$dir"
    mkdir -p "$dir"
    run "$name" "$group" "$input" "$bin" wordcount --input "$input" --state-backend "$backend" \
        --parallelism "$parallelism" "--$incremental" --checkpoint-dir "file://$dir/checkpoints" \
        --checkpoint-interval "$interval" --output "$dir/counts.tsv" "$@"
    if ! same_counts "$work/expected.tsv" "$dir/counts.tsv"; then
        echo "error: $name counted differently from the baseline" >&2
        exit 1
    fi
}

# cluster NAME GROUP CORPUS BACKEND PROCESSES: the same word count on
# PROCESSES processes of one worker each over loopback (the cluster
# executor, scripts/local-cluster.sh), timed from the start of the first to
# the end of the last; the union of their outputs is checked.
cluster() {
    local name="$1" group="$2" input="$3" backend="$4" processes="$5"
    local dir="$work/run"
    rm -rf "$dir"
    mkdir -p "$dir"
    run "$name" "$group" "$input" env STREAMSTATE="$bin" bash "$repo/scripts/local-cluster.sh" "$processes" -- \
        wordcount --input "$input" --state-backend "$backend" --no-incremental \
        --checkpoint-dir "file://$dir/checkpoints" --checkpoint-interval "${CHECKPOINT_INTERVAL:-1s}" \
        --output "$dir/counts.tsv"
    if ! same_counts "$work/expected.tsv" <(cat "$dir"/counts.tsv.*); then
        echo "error: $name counted differently from the baseline" >&2
        exit 1
    fi
}

# same_counts A B: whether two unsorted `WORD<TAB>COUNT` files hold the
# same lines (sorted after the runs, outside every measurement).
same_counts() {
    cmp -s <(LC_ALL=C sort "$1") <(LC_ALL=C sort "$2")
}

baseline() { # GROUP CORPUS
    run "baseline" "$1" "$2" "$baseline_bin" "$2" "$work/expected.tsv"
}

main=$(corpus "$words" "$vocab")
echo "== throughput, pauses and checkpoint sizes on $main" >&2
for round in $(seq "$rounds"); do
    baseline main "$main"
    wordcount "fs p1" main "$main" fs 1 no-incremental
    wordcount "fs p2" main "$main" fs 2 no-incremental
    cluster "fs 2 processes" main "$main" fs 2
done

echo "== failover: a process of 3 killed, all restarted from latest on s3://" >&2
# A real S3 server (s3s-fs, installed by scripts/install-deps.sh --test) on
# a free port, so a test run's server on the default port is no obstacle.
STREAMSTATE_S3_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export STREAMSTATE_S3_PORT
# shellcheck source=scripts/test-servers.sh
source scripts/test-servers.sh
trap 'stop_test_servers; rm -rf "$work"' EXIT
start_s3 >&2
python3 scripts/bench_failover.py --bin "$bin" --input "$main" --storage "$STREAMSTATE_TEST_S3_URI" \
    --expected "$work/expected.tsv" --processes 3 --backend rocksdb >> "$results"
echo "  failover: $(tail -1 "$results")" >&2
stop_test_servers

# The other runs go once, in the last round (their targets are far from
# the line, or not ratios).
wordcount "fs incremental p1" main "$main" fs 1 incremental
wordcount "fs incremental p2" main "$main" fs 2 incremental
wordcount "rocksdb p1" main "$main" rocksdb 1 incremental
wordcount "rocksdb p2" main "$main" rocksdb 2 incremental
wordcount "rocksdb changelog p1" main "$main" rocksdb 1 incremental --changelog
# On a fast CPU the heap backend counts the main corpus in about a second,
# before its first 1 s checkpoint: this run measures its snapshot pauses
# (and their cost) at the same state size.
CHECKPOINT_INTERVAL=100ms wordcount "fs p1, checkpoints every 100 ms" main "$main" fs 1 no-incremental

round=1
echo "== restore of a checkpoint taken at ~8M words" >&2
prefix="$work/prefix.txt"
head -n $((words * 8 / 10 / 10)) "$main" > "$prefix"
baseline restore "$prefix"
# NAME BACKEND CHECKPOINT-FLAGS: full checkpoints, and RocksDB's changelog
# (a base and up to 10 segments to replay).
for spec in "fs fs --no-incremental" "rocksdb rocksdb --no-incremental" \
    "rocksdb-changelog rocksdb --incremental --changelog"; do
    read -r label backend flags <<< "$spec"
    dir="$work/restore-$label"
    mkdir -p "$dir"
    # shellcheck disable=SC2086
    "$bin" wordcount --input "$prefix" --state-backend "$backend" $flags \
        --checkpoint-dir "file://$dir" --checkpoint-interval 100ms --output "$dir/counts.tsv" 2> /dev/null
    same_counts "$work/expected.tsv" "$dir/counts.tsv" || { echo "error: $backend miscounted the prefix" >&2; exit 1; }
    # Checkpoints every 100 ms, not 1 s: the heap backends count the
    # prefix in about a second, and the last checkpoint should hold nearly
    # all of its keys. Restarting on the same input from `latest` restores
    # that checkpoint (full) and reads only what came after it; the job's
    # `restored … restore_ms` line is the measure.
    # shellcheck disable=SC2086
    run "${label/-/ } restore" restore "$prefix" "$bin" wordcount --input "$prefix" --state-backend "$backend" \
        $flags --checkpoint-dir "file://$dir" --from-checkpoint latest --checkpoint-interval 1h \
        --output "$dir/after.tsv"
done

echo "== event-time windows: 1 s tumbling windows over the main corpus with timestamps" >&2
# The same words as the main corpus, each line with an event time 1 ms
# after the line before, up to 2 s out of order (the generator's
# --timestamps keeps the words of the untimed corpus).
timed="$cache/corpus/words-$words-vocab-$vocab-timestamps-1-disorder-2000.txt"
if [ ! -s "$timed" ]; then
    python3 "$generator" --words "$words" --vocab "$vocab" --timestamps 1 --disorder 2000 > "$timed.tmp"
    mv "$timed.tmp" "$timed"
fi
window_baseline="$CARGO_TARGET_DIR/release/examples/baseline_window_wordcount"
round=1
run "baseline" windows "$timed" "$window_baseline" "$timed" "$work/expected-windows.tsv" 1000
# windows NAME BACKEND PARALLELISM: the window word count, checked against
# the baseline's windows.
windows() {
    local name="$1" backend="$2" parallelism="$3"
    local dir="$work/run"
    rm -rf "$dir"
    mkdir -p "$dir"
    run "$name" windows "$timed" "$bin" wordcount --input "$timed" --state-backend "$backend" \
        --parallelism "$parallelism" --checkpoint-dir "file://$dir/checkpoints" --checkpoint-interval 1s \
        --window 1s --event-time --out-of-orderness 2s --output "$dir/windows.tsv"
    if ! same_counts "$work/expected-windows.tsv" "$dir/windows.tsv"; then
        echo "error: $name counted windows differently from the baseline" >&2
        exit 1
    fi
}
windows "fs p1" fs 1
windows "fs p2" fs 2
windows "rocksdb p1" rocksdb 1
windows "rocksdb p2" rocksdb 2

echo "== incremental checkpoint bytes against changed bytes" >&2
# ~700k keys as in the restore, 1% of them changed before each of 11
# checkpoints: 10 incremental ones, then the full one that starts a new
# chain (fs, RocksDB changelog). One JSON line per checkpoint.
"$CARGO_TARGET_DIR/release/examples/incremental_bytes" --keys 700000 --rounds 11 --changed-percent 1 \
    | sed 's/^{/{"group": "incremental bytes", /' >> "$results"

if [ "$sweep" = 1 ]; then
    echo "== state-size sweep (fs and rocksdb at parallelism 1)" >&2
    for spec in "${sweep_specs[@]}"; do
        # shellcheck disable=SC2086
        input=$(corpus $spec)
        group="sweep $spec"
        baseline "$group" "$input"
        wordcount "fs p1" "$group" "$input" fs 1 no-incremental
        wordcount "rocksdb p1" "$group" "$input" rocksdb 1 incremental
    done
fi

elapsed=$(($(date +%s) - started))
report_args=(--results "$results" --elapsed "$elapsed" --commit "$(git rev-parse --short HEAD)"
    --command "scripts/bench.sh $*")
if [ "$docs" = 1 ]; then
    mkdir -p docs/bench
    "$venv/bin/python" scripts/bench_report.py report "${report_args[@]}" \
        --plot docs/bench/scaling.png --doc docs/BENCHMARKS.md
    cp "$results" docs/bench/results.jsonl
else
    "$venv/bin/python" scripts/bench_report.py report "${report_args[@]}"
fi
