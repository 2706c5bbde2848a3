#!/usr/bin/env bash
# Peak RSS with 10M keys in one keyed backend: RocksDB with default settings
# (shared 64 MiB block cache, 64 MiB write buffers charged to it) against the
# heap backend as the baseline, measured in the same run by /usr/bin/time -v.
# Usage: scripts/bench-rss.sh [KEYS]   (default 10000000)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamstate/target}"
keys="${1:-10000000}"
cargo build --release -p streamstate-rocksdb --example peak_rss
bin="$CARGO_TARGET_DIR/release/examples/peak_rss"
echo "| backend | keys | peak RSS | run |"
echo "|---|---|---|---|"
for backend in rocksdb heap; do
    report=$(mktemp)
    line=$(/usr/bin/time -v -o "$report" "$bin" "$backend" "$keys")
    rss_kib=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$report")
    rm -f "$report"
    echo "| $backend | $keys | $((rss_kib / 1024)) MiB | $line |"
done
