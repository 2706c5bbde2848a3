#!/usr/bin/env bash
# Starts the real storage servers the tests use, on 127.0.0.1, and exports
# the variables the tests read. Source it; `stop_test_servers` (installed as
# an EXIT trap) stops them.
#
#   S3:   s3s-fs (cargo install s3s-fs@0.14.1 --features binary), port 9100
#   HDFS: Hadoop MiniDFSCluster (testing/hdfs, Maven + Java 17), port 9000
#
# A server that does not come up is a hard error: tests never skip.

STREAMSTATE_SERVERS_DIR="${STREAMSTATE_SERVERS_DIR:-$(mktemp -d -t streamstate-servers.XXXXXX)}"
S3_PORT="${STREAMSTATE_S3_PORT:-9100}"
HDFS_PORT="${STREAMSTATE_HDFS_PORT:-9000}"
# Line protocol to stop/restart the DataNode (storage fault tests).
HDFS_CONTROL_PORT="${STREAMSTATE_HDFS_CONTROL_PORT:-9010}"
STREAMSTATE_SERVER_PIDS=()

# Test credentials of the throwaway local S3 server (not secrets).
export AWS_ACCESS_KEY_ID=streamstate-test
export AWS_SECRET_ACCESS_KEY=streamstate-test-secret
export AWS_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:${S3_PORT}"
export STREAMSTATE_S3S_FS_BIN="${STREAMSTATE_S3S_FS_BIN:-$HOME/.cargo/bin/s3s-fs}"

stop_test_servers() {
    for pid in "${STREAMSTATE_SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${STREAMSTATE_SERVER_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    STREAMSTATE_SERVER_PIDS=()
}

wait_for_port() { # name port seconds
    local name=$1 port=$2 seconds=$3
    for _ in $(seq 1 "$((seconds * 5))"); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    echo "error: $name did not start listening on 127.0.0.1:$port within ${seconds}s" >&2
    return 1
}

start_s3() {
    if [ ! -x "$STREAMSTATE_S3S_FS_BIN" ]; then
        echo "error: s3s-fs not found at $STREAMSTATE_S3S_FS_BIN (.ci/run installs it)" >&2
        return 1
    fi
    local root="$STREAMSTATE_SERVERS_DIR/s3"
    mkdir -p "$root/streamstate"   # the bucket
    "$STREAMSTATE_S3S_FS_BIN" --host 127.0.0.1 --port "$S3_PORT" \
        --access-key "$AWS_ACCESS_KEY_ID" --secret-key "$AWS_SECRET_ACCESS_KEY" \
        "$root" >"$STREAMSTATE_SERVERS_DIR/s3.log" 2>&1 &
    STREAMSTATE_SERVER_PIDS+=($!)
    wait_for_port "S3 server (s3s-fs)" "$S3_PORT" 30 || { cat "$STREAMSTATE_SERVERS_DIR/s3.log" >&2; return 1; }
    export STREAMSTATE_TEST_S3_URI="s3://streamstate/tests"
    echo "S3 server (s3s-fs) on 127.0.0.1:$S3_PORT, bucket streamstate"
}

start_hdfs() {
    local dir
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../testing/hdfs" && pwd)"
    if [ ! -s "$dir/target/classpath.txt" ] || [ "$dir/pom.xml" -nt "$dir/target/classpath.txt" ]; then
        (cd "$dir" && mvn -B -q dependency:build-classpath -Dmdep.outputFile=target/classpath.txt) || return 1
    fi
    mkdir -p "$dir/target/classes"
    javac -d "$dir/target/classes" -cp "$(cat "$dir/target/classpath.txt")" \
        "$dir/src/main/java/streamstate/testing/MiniHdfs.java" || return 1
    local log="$STREAMSTATE_SERVERS_DIR/hdfs.log"
    mkfifo "$STREAMSTATE_SERVERS_DIR/hdfs.stdin"
    # The FIFO held open by `sleep` is the server's stdin; it stops when killed.
    sleep 100000 >"$STREAMSTATE_SERVERS_DIR/hdfs.stdin" &
    STREAMSTATE_SERVER_PIDS+=($!)
    java -Xmx1g -cp "$dir/target/classes:$(cat "$dir/target/classpath.txt")" streamstate.testing.MiniHdfs \
        "$HDFS_PORT" "$STREAMSTATE_SERVERS_DIR/hdfs" "$HDFS_CONTROL_PORT" \
        <"$STREAMSTATE_SERVERS_DIR/hdfs.stdin" >"$log" 2>&1 &
    STREAMSTATE_SERVER_PIDS+=($!)
    for _ in $(seq 1 600); do
        if grep -q "MINIHDFS READY" "$log"; then
            export STREAMSTATE_TEST_HDFS_URI="hdfs://127.0.0.1:${HDFS_PORT}/streamstate/tests"
            export STREAMSTATE_TEST_HDFS_CONTROL="127.0.0.1:${HDFS_CONTROL_PORT}"
            echo "HDFS (MiniDFSCluster: NameNode + DataNode) on 127.0.0.1:$HDFS_PORT"
            return 0
        fi
        if ! kill -0 "${STREAMSTATE_SERVER_PIDS[-1]}" 2>/dev/null; then
            break
        fi
        sleep 0.2
    done
    echo "error: HDFS MiniDFSCluster did not become ready; its log:" >&2
    tail -40 "$log" >&2
    return 1
}
