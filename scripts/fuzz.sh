#!/usr/bin/env bash
# Fuzzing with cargo-fuzz (libFuzzer) on nightly Rust; targets in fuzz/.
#   scripts/fuzz.sh build            build every target (CI does this)
#   scripts/fuzz.sh run [SECONDS [TARGET...]]
#                                    run each target (or those named)
#                                    SECONDS (default 600), one after the
#                                    other, from its seeds in fuzz/corpus/<target>;
#                                    inputs it finds go to a working corpus
#                                    under ~/.cache/streamstate/fuzz-corpus,
#                                    a crash stops the run and is saved under
#                                    fuzz/artifacts/<target>/
# A crash becomes a regression test by copying its input into
# fuzz/corpus/<target>/: state-api/tests/fuzz_corpora.rs replays every
# corpus file through the same parsers on stable Rust in the normal tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
# Its own target dir: sanitizer flags would otherwise rebuild the main one.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/streamstate/fuzz-target}"
mode="${1:-build}"
if ! rustup toolchain list | grep -q '^nightly' || ! command -v cargo-fuzz > /dev/null 2>&1; then
    echo "error: fuzzing needs a nightly toolchain and cargo-fuzz: run scripts/install-deps.sh --test" >&2
    exit 1
fi
targets=$(cd fuzz && cargo +nightly fuzz list)
case "$mode" in
    build)
        (cd fuzz && cargo +nightly fuzz build)
        echo "built fuzz targets: $(echo "$targets" | tr '\n' ' ')"
        ;;
    run)
        seconds="${2:-600}"
        # Named targets only, when given (two invocations with different
        # targets use both cores).
        if [ $# -gt 2 ]; then
            for wanted in "${@:3}"; do
                echo "$targets" | grep -qx "$wanted" || { echo "error: no fuzz target $wanted" >&2; exit 2; }
            done
            targets="${*:3}"
        fi
        for target in $targets; do
            working="$HOME/.cache/streamstate/fuzz-corpus/$target"
            mkdir -p "$working"
            echo "== $target for ${seconds}s"
            (cd fuzz && cargo +nightly fuzz run "$target" "$working" "corpus/$target" -- \
                -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1) 2>&1 |
                grep -E '^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss|==|SUMMARY|Done )' || true
            if [ -n "$(ls -A "fuzz/artifacts/$target" 2>/dev/null)" ]; then
                echo "error: $target found a crash: fuzz/artifacts/$target" >&2
                exit 1
            fi
        done
        ;;
    *)
        echo "usage: scripts/fuzz.sh build | run [SECONDS [TARGET...]]" >&2
        exit 2
        ;;
esac
