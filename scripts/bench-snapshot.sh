#!/usr/bin/env bash
# Snapshot pause at 1M keys and upload throughput to file://, s3:// and
# hdfs:// (real servers started here, as for the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamstate/target}"
cargo bench -p streamstate-fs --bench snapshot_pause --no-run
# shellcheck source=scripts/test-servers.sh
source scripts/test-servers.sh
trap stop_test_servers EXIT
start_s3
start_hdfs
cargo bench -p streamstate-fs --bench snapshot_pause
