#!/usr/bin/env bash
# Builds every libFuzzer target (tests/fuzz/fuzz_*.c) with clang, ASan and
# UBSan, then runs each for SECONDS (default 60) from its seed corpus
# tests/fuzz/corpus/<name>/ (if any). Exits non-zero if a build fails or a
# target crashes, leaks or times out; reproducers go to
# $BUILD/fuzz-artifacts/<target>/.
#   usage: tests/fuzz/run.sh [SECONDS]
#   env:   FUZZ_BUILD_DIR (default ${TMPDIR:-/tmp}/tandem-build-fuzz)
set -euo pipefail

secs=${1:-60}
case $secs in ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
src=$(cd "$(dirname "$0")/../.." && pwd)
build=${FUZZ_BUILD_DIR:-${TMPDIR:-/tmp}/tandem-build-fuzz}

if [ ! -f "$build/build.ninja" ]; then
    CC=clang meson setup "$build" "$src" -Dfuzz=true \
        -Db_sanitize=address,undefined -Db_lundef=false
else
    meson setup --reconfigure "$build" "$src" >/dev/null
fi

targets=()
for f in "$src"/tests/fuzz/fuzz_*.c; do
    [ -e "$f" ] || continue
    targets+=("$(basename "$f" .c)")
done
if [ ${#targets[@]} -eq 0 ]; then
    echo "run.sh: no tests/fuzz/fuzz_*.c targets" >&2
    exit 1
fi
# Only the fuzz targets: a half-written module elsewhere must not stop us.
meson compile -C "$build" "${targets[@]}"

failed=()
for t in "${targets[@]}"; do
    exe=$build/tests/fuzz/$t
    seeds=$src/tests/fuzz/corpus/${t#fuzz_}
    work=$build/fuzz-corpus/$t
    artifacts=$build/fuzz-artifacts/$t
    mkdir -p "$work" "$artifacts"
    dirs=("$work")
    [ -d "$seeds" ] && dirs+=("$seeds")
    echo "== $t: ${secs}s"
    # New inputs go to the first directory, so the seed corpus stays as is.
    if UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        "$exe" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
            -max_len=65536 -print_final_stats=1 \
            -artifact_prefix="$artifacts/" "${dirs[@]}" \
            > "$build/$t.log" 2>&1; then
        grep -E '^(stat::number_of_executed_units|stat::new_units_added)' \
            "$build/$t.log" || true
    else
        echo "!! $t failed; log $build/$t.log, reproducers in $artifacts/" >&2
        tail -n 40 "$build/$t.log" >&2
        failed+=("$t")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz failures: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} target(s) ran ${secs}s each without a crash"
