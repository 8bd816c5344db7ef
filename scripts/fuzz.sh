#!/usr/bin/env bash
# Fuzz the parsers with cargo-fuzz (libFuzzer), one target after the other.
#
#   scripts/fuzz.sh                      # every target for 60 s each (what CI runs)
#   scripts/fuzz.sh --time 600 node      # one target for 10 minutes
#   scripts/fuzz.sh --runs 10000000      # every target for 10 million executions
#
# Targets live in fuzz/fuzz_targets/ and call src/fuzzing.rs. Each run starts from the
# checked-in seeds (fuzz/seeds/<target>) and keeps what it finds in fuzz/corpus/<target>
# (not checked in). A failing input lands in fuzz/artifacts/<target>/; copy it to
# fuzz/regressions/<target>/ so `cargo test` replays it, then fix the parser.
#
# cargo-fuzz needs nightly-only compiler flags (sanitizers, coverage instrumentation);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail

usage() {
    sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
}

time_limit=60
runs=""
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --time) time_limit="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done

cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked --version 0.13.2
fi
export RUSTC_BOOTSTRAP=1

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cd fuzz && cargo fuzz list)
fi

# Build every target first, so a run's time is spent fuzzing.
(cd fuzz && cargo fuzz build)

summary=()
for t in "${targets[@]}"; do
    mkdir -p "fuzz/corpus/$t"
    limit=(-max_total_time="$time_limit")
    if [ -n "$runs" ]; then
        limit=(-runs="$runs")
    fi
    echo "== fuzzing $t (${limit[*]})"
    log="fuzz/artifacts/$t.log"
    mkdir -p fuzz/artifacts
    # Configdrive images are up to ~100 KB in the seeds; every other input is small.
    if (cd fuzz && cargo fuzz run "$t" "corpus/$t" "seeds/$t" -- \
            "${limit[@]}" -max_len=131072 -rss_limit_mb=4096 -print_final_stats=1) 2>&1 \
            | tee "$log" | grep -E '^(#[0-9]+.*(pulse|DONE)|==|SUMMARY|stat::number_of_executed_units)'; then
        :
    fi
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    if grep -qE 'ERROR: libFuzzer|panicked at|SUMMARY: AddressSanitizer' "$log"; then
        echo "FAILED: $t; the input is in fuzz/artifacts/$t/" >&2
        grep -E 'panicked at|SUMMARY' "$log" >&2 || true
        exit 1
    fi
    summary+=("$t: ${execs:-?} executions in ${secs:-?} s, no failure")
done
printf '%s\n' "${summary[@]}"
