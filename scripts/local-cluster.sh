#!/usr/bin/env bash
# Runs one job as N processes on this machine (the cluster executor over
# loopback): picks N free ports, writes the hostfile, starts
# `streamstate ARGS... --processes N --process I --hosts FILE` for each I,
# and waits for all of them. An `--output FILE` argument becomes
# `FILE.I` for process I (each process writes the counts of the key groups
# it owns; their union is the job's result). When one process fails, the
# others stop by themselves (a lost peer); this script reports each exit.
#
# Usage: scripts/local-cluster.sh N -- wordcount --input FILE [ARGS...]
#   STREAMSTATE: the binary (default: build the release one)
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ $# -lt 3 ] || [ "$2" != "--" ]; then
    echo "usage: scripts/local-cluster.sh N -- wordcount --input FILE [ARGS...]" >&2
    exit 2
fi
processes=$1
shift 2
target="${CARGO_TARGET_DIR:-$HOME/.cache/streamstate/target}"
if [ -z "${STREAMSTATE:-}" ]; then
    (cd "$repo" && CARGO_TARGET_DIR="$target" cargo build --release -q -p streamstate-cli --bin streamstate)
    STREAMSTATE="$target/release/streamstate"
fi
work=$(mktemp -d -t streamstate-cluster.XXXXXX)
trap 'rm -rf "$work"' EXIT
# Free ports: bound to port 0 by the kernel, released just before use.
python3 - "$processes" > "$work/hosts" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
for s in socks:
    print(f"127.0.0.1:{s.getsockname()[1]}")
PY
pids=()
for ((i = 0; i < processes; i++)); do
    args=()
    prev=""
    for arg in "$@"; do
        if [ "$prev" = "--output" ]; then arg="$arg.$i"; fi
        args+=("$arg")
        prev=$arg
    done
    "$STREAMSTATE" "${args[@]}" --processes "$processes" --process "$i" --hosts "$work/hosts" &
    pids+=($!)
done
status=0
for ((i = 0; i < processes; i++)); do
    if wait "${pids[$i]}"; then
        echo "local-cluster: process $i finished" >&2
    else
        code=$?
        echo "local-cluster: process $i exited with status $code" >&2
        status=1
    fi
done
exit "$status"
