#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, lints, a build
# without the rocksdb feature (which must compile no C++), and all tests,
# against real S3 and HDFS servers started here on 127.0.0.1 (the
# `remote-tests` feature; plain `cargo test` runs on memory:// and file://).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# A target dir outside the clone lets repeated CI runs on one machine reuse
# the build (a cold one of the test binaries takes minutes on 2 cores).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamstate/target}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== no module imports a module that imports it back"
python3 scripts/module_cycles.py state-api state-memory state-fs state-rocksdb runtime cli

echo "== cargo clippy -D warnings"
# With the remote suites on, so their code is linted too.
cargo clippy --workspace --all-targets --features remote-tests -- -D warnings

echo "== build without rocksdb: no C++ compiled"
cargo build -p streamstate-cli --no-default-features --features fs
if cargo tree -p streamstate-cli --no-default-features --features fs -e normal | grep -q librocksdb-sys; then
    echo "error: the fs-only build depends on librocksdb-sys" >&2
    exit 1
fi

echo "== every crate packages (what a user depends on)"
cargo package --workspace --no-verify --allow-dirty --quiet

echo "== fuzz targets build (nightly, cargo-fuzz); their corpora replay in the tests"
bash scripts/fuzz.sh build

echo "== embedding examples (each asserts what it reads back)"
for crate in streamstate-memory streamstate-fs streamstate-rocksdb; do
    cargo run --quiet -p "$crate" --example embed
done

echo "== starting test servers"
# shellcheck source=scripts/test-servers.sh
source scripts/test-servers.sh
trap stop_test_servers EXIT
start_s3
start_hdfs

echo "== cargo test"
# Tests against remote storage wait on round trips, not CPU: run more of them
# at once than there are cores.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-8}"
# `remote-tests` turns on the suites that need the servers started above:
# here they must run, and a server that is down fails them.
cargo test --workspace --features remote-tests
