#!/usr/bin/env bash
# Installs RocksDB's prebuilt shared library so the build links it instead
# of compiling librocksdb from C++ (343 sources: 12 to 32 minutes on 2
# cores, 62% of a cold release build; docs/BENCHMARKS.md).
#
# The library is the one RocksDB's project publishes on Maven Central for
# Java (org.rocksdb:rocksdbjni): besides the JNI glue it exports RocksDB's
# whole C API (db/c.cc), which is all the rocksdb crate calls. Its version
# must be the RocksDB version librocksdb-sys was generated from (the
# `+11.8.1` of its crate version in Cargo.lock): the crate's bindings come
# from that version's c.h. This script refuses to install another.
#
# Where: /usr/local/lib/streamstate-rocksdb-<version>/librocksdb.so, found
# at run time through /etc/ld.so.conf.d/streamstate-rocksdb.conf. The
# build finds it through ROCKSDB_LIB_DIR in .cargo/config.toml.
#
# Only on x86_64 Linux with glibc (the jar's linux64 build); elsewhere this
# does nothing and the build must compile librocksdb: set ROCKSDB_COMPILE=1
# (also the way to build from source here).
set -euo pipefail
cd "$(dirname "$0")/.."

version=11.8.1
# SHA-256 of rocksdbjni-11.8.1.jar (Maven Central's own .sha1 is
# 66f892cbf33f6c4d1425215eb47151138323dd00).
jar_sha256=628ed387887f4a431df480857954df2a28b4389bfe24858ccdec611cabf65dbf
url="https://repo1.maven.org/maven2/org/rocksdb/rocksdbjni/$version/rocksdbjni-$version.jar"
lib_dir="/usr/local/lib/streamstate-rocksdb-$version"
ld_conf=/etc/ld.so.conf.d/streamstate-rocksdb.conf

if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ] || ! ldd --version 2>&1 | grep -qi 'glibc\|gnu libc'; then
    echo "install-rocksdb: no prebuilt RocksDB for this platform; build with ROCKSDB_COMPILE=1" >&2
    exit 0
fi

locked=$(grep -A1 '^name = "librocksdb-sys"' Cargo.lock | sed -n 's/^version = ".*+\(.*\)"$/\1/p')
if [ "$locked" != "$version" ]; then
    echo "error: Cargo.lock's librocksdb-sys is RocksDB $locked, this script installs $version;" >&2
    echo "       update version and jar_sha256 in scripts/install-rocksdb.sh and" >&2
    echo "       ROCKSDB_LIB_DIR in .cargo/config.toml together" >&2
    exit 1
fi

sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"

if [ ! -f "$lib_dir/librocksdb.so" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    echo "install-rocksdb: downloading $url"
    curl -sSfL --retry 3 -o "$work/rocksdbjni.jar" "$url"
    if ! echo "$jar_sha256  $work/rocksdbjni.jar" | sha256sum -c --quiet -; then
        echo "error: $url does not have the expected SHA-256 $jar_sha256" >&2
        exit 1
    fi
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract("librocksdbjni-linux64.so", sys.argv[2])' \
        "$work/rocksdbjni.jar" "$work"
    $sudo mkdir -p "$lib_dir"
    $sudo install -m 0755 "$work/librocksdbjni-linux64.so" "$lib_dir/librocksdb.so"
    echo "install-rocksdb: installed RocksDB $version in $lib_dir"
fi

if [ "$(cat "$ld_conf" 2>/dev/null)" != "$lib_dir" ]; then
    echo "$lib_dir" | $sudo tee "$ld_conf" >/dev/null
fi
# ldconfig caches the library under its file name (it has no SONAME). It
# lives in /sbin, which a user's PATH may lack.
ldconfig=$(command -v ldconfig || echo /sbin/ldconfig)
if ! "$ldconfig" -p | grep -q "$lib_dir/librocksdb.so"; then
    $sudo "$ldconfig"
fi
