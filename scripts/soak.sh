#!/usr/bin/env bash
# Soak test (not CI): the socket word count for a long time with checkpoints
# every 500 ms, fed over TCP at a steady rate from a looped Zipf corpus
# (../shared/bench/gen_corpus.py, 1M words over 100k distinct). Every 10 s
# it samples the process's RSS, the checkpoint directory's size and the
# checkpoints completed; at the end, leaving out the first minute (caches
# and memtables filling up), it compares the first and last fifth of the
# rest and fails when retention or memory leaks show:
#   RSS grows by more than 25%, the checkpoint directory by more than 2x,
#   or the median checkpoint duration by more than 2x (and 50 ms).
# Samples go to docs/bench/soak-<backend>.csv, checkpoint durations to
# docs/bench/soak-<backend>-checkpoints.csv.
# Usage: scripts/soak.sh [MINUTES] [BACKEND]   (default 30, rocksdb)
#   SOAK_RATE lines/s fed (default 20000, i.e. 200k words/s).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# Release builds share scripts/bench.sh's target directory.
export CARGO_TARGET_DIR="${STREAMSTATE_BENCH_TARGET:-${CARGO_TARGET_DIR:-$HOME/.cache/streamstate/target}}"
minutes="${1:-30}"
backend="${2:-rocksdb}"
rate="${SOAK_RATE:-20000}"
cargo build --release -p streamstate-cli --bin streamstate
bin="$CARGO_TARGET_DIR/release/streamstate"
corpus_dir="$HOME/.cache/streamstate/corpus"
corpus="$corpus_dir/words-1000000-vocab-100000.txt"
if [ ! -s "$corpus" ]; then
    mkdir -p "$corpus_dir"
    python3 ../shared/bench/gen_corpus.py --words 1000000 --vocab 100000 > "$corpus.tmp"
    mv "$corpus.tmp" "$corpus"
fi
work=$(mktemp -d)
feeder_pid="" job_pid=""
cleanup() {
    [ -n "$job_pid" ] && kill -INT "$job_pid" 2> /dev/null && wait "$job_pid" 2> /dev/null || true
    [ -n "$feeder_pid" ] && kill "$feeder_pid" 2> /dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# The feeder: a TCP server on a free port sending the corpus in a loop at
# $rate lines per second to whoever connects (like `nc -lk`, paced).
python3 - "$corpus" "$rate" "$work/port" <<'EOF' &
import socket, sys, time
corpus, rate, port_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]
lines = open(corpus, "rb").read().splitlines(keepends=True)
server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen(1)
open(port_file, "w").write(str(server.getsockname()[1]))
conn, _ = server.accept()
chunk, start, sent, i = 1000, time.monotonic(), 0, 0
while True:
    try:
        conn.sendall(b"".join(lines[(i + k) % len(lines)] for k in range(chunk)))
    except OSError:
        break  # the job stopped

    i, sent = (i + chunk) % len(lines), sent + chunk
    ahead = sent / rate - (time.monotonic() - start)
    if ahead > 0:
        time.sleep(ahead)
EOF
feeder_pid=$!
while [ ! -s "$work/port" ]; do sleep 0.1; done
RUST_LOG=streamstate_runtime=info "$bin" wordcount --socket "127.0.0.1:$(cat "$work/port")" \
    --state-backend "$backend" --checkpoint-dir "file://$work/checkpoints" --checkpoint-interval 500ms \
    > /dev/null 2> "$work/log.txt" &
job_pid=$!
echo "soak: $backend, $minutes min, $rate lines/s, checkpoints every 500 ms"
echo "seconds,rss_kib,checkpoint_dir_bytes,checkpoints" > "$work/samples.csv"
end=$(($(date +%s) + minutes * 60))
start=$(date +%s)
while [ "$(date +%s)" -lt "$end" ]; do
    sleep 10
    if ! kill -0 "$job_pid" 2> /dev/null; then
        echo "error: the job died:" >&2
        tail -20 "$work/log.txt" >&2
        exit 1
    fi
    rss=$(awk '/VmRSS/ {print $2}' "/proc/$job_pid/status")
    size=$(du -sb "$work/checkpoints" | cut -f1)
    done_count=$(grep -c "snapshot completed" "$work/log.txt" || true)
    echo "$(($(date +%s) - start)),$rss,$size,$done_count" >> "$work/samples.csv"
done
kill -INT "$job_pid"
wait "$job_pid" || true
job_pid=""
mkdir -p docs/bench
cp "$work/samples.csv" "docs/bench/soak-$backend.csv"
{
    echo "checkpoint,duration_ms,sync_us,async_ms,uploaded_bytes"
    grep "snapshot completed" "$work/log.txt" |
        sed -E 's/.* id=([0-9]+).*duration_ms=([0-9]+) sync_us=([0-9]+) async_ms=([0-9]+).*uploaded_bytes=([0-9]+).*/\1,\2,\3,\4,\5/'
} > "docs/bench/soak-$backend-checkpoints.csv"
python3 - "$work/samples.csv" "$work/log.txt" <<'EOF'
import re, statistics, sys
WARM_UP_S = 60
rows = [list(map(int, l.split(","))) for l in open(sys.argv[1]).read().splitlines()[1:]]
rows = [r for r in rows if r[0] > WARM_UP_S] or rows
durations = [int(m.group(1)) for m in re.finditer(r"duration_ms=(\d+)", open(sys.argv[2]).read())]
# Checkpoints every 500 ms: the first minute holds about 120 of them.
durations = durations[120:] or durations
fifth = max(1, len(rows) // 5)
first, last = rows[:fifth], rows[-fifth:]
def median(xs):
    return statistics.median(xs) if xs else 0
rss = (median([r[1] for r in first]) / 1024, median([r[1] for r in last]) / 1024)
size = (median([r[2] for r in first]) / 2**20, median([r[2] for r in last]) / 2**20)
d5 = max(1, len(durations) // 5)
dur = (median(durations[:d5]), median(durations[-d5:]))
print(f"samples {len(rows)}, checkpoints completed {rows[-1][3] if rows else 0}")
print(f"RSS MiB, first fifth -> last fifth: {rss[0]:.0f} -> {rss[1]:.0f}")
print(f"checkpoint dir MiB: {size[0]:.1f} -> {size[1]:.1f}")
print(f"checkpoint duration ms (median): {dur[0]} -> {dur[1]}")
failures = []
if rss[1] > rss[0] * 1.25:
    failures.append("RSS grew by more than 25%")
if size[1] > size[0] * 2:
    failures.append("the checkpoint directory more than doubled")
if dur[1] > max(dur[0] * 2, dur[0] + 50):
    failures.append("checkpoint durations drifted upward")
if not durations:
    failures.append("no checkpoint completed")
for f in failures:
    print("error:", f, file=sys.stderr)
sys.exit(1 if failures else 0)
EOF
