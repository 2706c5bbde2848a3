#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, lints, a build
# without the rocksdb feature (which must compile no C++), and all tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# A target dir outside the clone lets repeated CI runs on one machine reuse
# the build (librocksdb takes minutes to compile once it is a dependency).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/streamstate/target}"

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

echo "== build without rocksdb: no C++ compiled"
cargo build -p streamstate-cli --no-default-features --features fs
if cargo tree -p streamstate-cli --no-default-features --features fs -e normal | grep -q librocksdb-sys; then
    echo "error: the fs-only build depends on librocksdb-sys" >&2
    exit 1
fi

echo "== cargo test"
cargo test --workspace
