#!/usr/bin/env bash
# The README's first command: installs what the build needs, then runs the
# word count over the bundled text on the default backend (RocksDB), with
# checkpoints every 100 ms to file://$PWD/checkpoints. Extra arguments go to
# `streamstate wordcount` (e.g. `--state-backend fs`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamstate/target}"
exec cargo run --release -p streamstate-cli -- wordcount --input samples/hamlet.txt --checkpoint-interval 100ms "$@"
