#!/usr/bin/env bash
# Installs what streamstate needs on a Debian machine with Rust (rustup):
#   always:  libclang-dev (the rocksdb crate's bindgen), and on x86_64
#            glibc Linux RocksDB's own prebuilt library (scripts/
#            install-rocksdb.sh), which saves compiling librocksdb from C++
#            (12 to 32 minutes on 2 cores); .cargo/config.toml links it
#   --bench: also s3s-fs 0.14.1, the S3 server of the failover benchmark
#   --test:  also the servers the tests start: s3s-fs 0.14.1 (an S3 server
#            that checks signatures; newer releases need a newer rustc),
#            Java 17 and Maven (Hadoop's MiniDFSCluster), clippy and rustfmt,
#            and for the fuzz targets a nightly toolchain and cargo-fuzz
set -euo pipefail
export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found; install Rust with rustup (https://rustup.rs)" >&2
    exit 1
fi

apt_install() {
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    $sudo apt-get update -q
    $sudo apt-get install -y -q "$@"
}

if ! dpkg -s libclang-dev >/dev/null 2>&1; then
    apt_install libclang-dev
fi

bash "$(dirname "$0")/install-rocksdb.sh"

install_s3s_fs() {
    if ! command -v s3s-fs >/dev/null 2>&1; then
        cargo install s3s-fs@0.14.1 --locked --features binary
    fi
}

if [ "${1:-}" = "--bench" ]; then
    install_s3s_fs
fi

if [ "${1:-}" = "--test" ]; then
    rustup component add clippy rustfmt >/dev/null 2>&1 || true
    install_s3s_fs
    if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
        apt_install openjdk-17-jdk-headless maven
    fi
    if ! rustup toolchain list | grep -q '^nightly'; then
        rustup toolchain install nightly --profile minimal
    fi
    # Probe the binary, never `cargo fuzz`: on this toolchain an unknown
    # cargo subcommand run before `cargo install` makes that install fail
    # ("failed to run rustc to learn about target-specific information").
    if ! command -v cargo-fuzz >/dev/null 2>&1; then
        cargo install cargo-fuzz --version 0.13.1 --locked
    fi
fi
