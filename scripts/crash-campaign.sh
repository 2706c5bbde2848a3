#!/usr/bin/env bash
# The full crash campaign: for each backend (memory, fs, rocksdb) the
# file-input word count with checkpoints every 200 ms is killed with SIGKILL
# KILLS times (default 100) at random moments, restarted from `latest` each
# time, then left to finish; the final counts must equal a plain count.
# CI runs the same test with 12 kills per backend.
# Usage: scripts/crash-campaign.sh [KILLS] [WORDS]   (seed: STREAMSTATE_CRASH_SEED)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamstate/target}"
export STREAMSTATE_CRASH_KILLS="${1:-100}"
export STREAMSTATE_CRASH_WORDS="${2:-3000000}"
cargo test --release -p streamstate-cli --test crash_campaign -- --nocapture --test-threads 3 2>&1 \
    | grep -E "crash campaign|test result|panicked|FAILED"
