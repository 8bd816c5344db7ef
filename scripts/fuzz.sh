#!/usr/bin/env bash
# Fuzz the parsers with cargo-fuzz (libFuzzer), one target after the other.
#
#   scripts/fuzz.sh                      # every target for 60 s each (what CI runs)
#   scripts/fuzz.sh --time 600 node      # one target for 10 minutes
#   scripts/fuzz.sh --runs 10000000      # every target for 10 million executions
#   scripts/fuzz.sh --runs 10000000 --time 600   # 10 million, or 10 minutes if sooner
#   scripts/fuzz.sh --runs 10000000 --summary run.md   # and a table of the runs, as in bench/fuzz.md
#   scripts/fuzz.sh --build-only         # build every target, run none
#   scripts/fuzz.sh --no-build ...       # run the targets as last built (no cargo at all)
#   scripts/fuzz.sh --sanitizer address  # build with AddressSanitizer (5 times slower)
#
# Targets live in fuzz/fuzz_targets/ and call src/fuzzing.rs. Each run starts from the
# checked-in seeds (fuzz/seeds/<target>) and keeps what it finds in fuzz/corpus/<target>
# (not checked in), with fuzz/dicts/<target>.dict as its dictionary when there is one. A
# failing input (a panic, a crash, an input slower than 10 s or over 2 GiB) lands in
# fuzz/artifacts/<target>/ and fails the script; copy it to fuzz/regressions/<target>/ so
# `cargo test` replays it, then fix the parser.
#
# The targets are built without a sanitizer by default: the crate forbids unsafe code, and
# AddressSanitizer, which finds memory errors only where there is unsafe code (in a few
# dependencies), makes every target about five times slower.
#
# cargo-fuzz needs nightly-only compiler flags (sanitizers, coverage instrumentation);
# RUSTC_BOOTSTRAP=1 lets the stable toolchain accept them.
set -euo pipefail

usage() {
    sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//'
}

time_limit=""
runs=""
summary_file=""
build=1
sanitizer=none
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --time) time_limit="$2"; shift 2 ;;
        --runs) runs="$2"; shift 2 ;;
        --summary) summary_file="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --build-only) build=2; shift ;;
        --sanitizer) sanitizer="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "unknown option: $1" >&2; usage >&2; exit 2 ;;
        *) targets+=("$1"); shift ;;
    esac
done

cd "$(dirname "$0")/.."
root=$(pwd)
export RUSTC_BOOTSTRAP=1
if [ "$build" != 0 ]; then
    scripts/ensure-deps.sh
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "installing cargo-fuzz"
        cargo install cargo-fuzz --locked --version 0.13.2
    fi
fi

if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' fuzz/Cargo.toml | grep -vx ironic-metadata-fuzz)
fi

# Build every target first, so a run's time is spent fuzzing.
if [ "$build" != 0 ]; then
    (cd fuzz && cargo fuzz build --sanitizer "$sanitizer")
    if [ "$build" = 2 ]; then
        exit 0
    fi
fi
bin_dir="$root/fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

# Largest input per target: whole ISO images for the two configdrive targets, a few nodes
# for node; every other input is a line or a small file.
max_len() {
    case "$1" in
        iso|configdrive) echo 131072 ;;
        node|policy) echo 16384 ;;
        *) echo 4096 ;;
    esac
}

rows=()
for t in "${targets[@]}"; do
    [ -x "$bin_dir/$t" ] || { echo "no built target $t in $bin_dir" >&2; exit 1; }
    mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
    limit=()
    if [ -n "$runs" ]; then
        limit+=(-runs="$runs")
    fi
    if [ -n "$time_limit" ] || [ -z "$runs" ]; then
        limit+=(-max_total_time="${time_limit:-60}")
    fi
    dict=()
    if [ -f "fuzz/dicts/$t.dict" ]; then
        dict=(-dict="fuzz/dicts/$t.dict")
    fi
    echo "== fuzzing $t (${limit[*]})"
    log="fuzz/artifacts/$t.log"
    started=$(date +%s)
    status=0
    "$bin_dir/$t" "fuzz/corpus/$t" "fuzz/seeds/$t" "${dict[@]}" "${limit[@]}" \
        -max_len="$(max_len "$t")" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="fuzz/artifacts/$t/" >"$log" 2>&1 || status=$?
    secs=$(( $(date +%s) - started ))
    grep -E '^(#[0-9]+.*(pulse|DONE)|==[0-9]+==|SUMMARY|stat::number_of_executed_units)' "$log" || true
    if [ "$status" -ne 0 ] || grep -qE 'ERROR: libFuzzer|panicked at|SUMMARY: AddressSanitizer' "$log"; then
        echo "FAILED: $t (exit $status); the input is in fuzz/artifacts/$t/, the log in $log" >&2
        grep -E 'panicked at|SUMMARY|ERROR' "$log" >&2 || true
        exit 1
    fi
    # The last status line: "#N DONE cov: C ft: F corp: U/SIZE lim: L exec/s: E rss: R".
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    field() { sed -n "s/.* $1: \([^ ]*\).*/\1/p" <<<"$last"; }
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    rows+=("| $t | ${execs:-?} | $secs | ${rate:-?} | $(field cov) | $(field ft) | $(field corp) | $(field rss) |")
    echo "$t: ${execs:-?} executions in $secs s (${rate:-?} exec/s), cov $(field cov), ft $(field ft), corpus $(field corp), no failure"
done

table() {
    echo "| target | executions | seconds | exec/s | cov | ft | corpus (inputs/size) | peak RSS |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    printf '%s\n' "${rows[@]}"
}
table
if [ -n "$summary_file" ]; then
    {
        commit=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
        if [ -n "$(git status --porcelain --untracked-files=no -- src Cargo.toml 2>/dev/null)" ]; then
            commit="$commit with uncommitted changes in src/"
        fi
        echo "Run of $(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit,"
        echo "$(nproc) cores ($(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)), one core per target:"
        how=""
        if [ -n "$runs" ]; then how="--runs $runs"; fi
        if [ -n "$time_limit" ] || [ -z "$runs" ]; then how="$how --time ${time_limit:-60}"; fi
        echo "\`scripts/fuzz.sh ${how# } ${targets[*]}\`"
        echo
        table
    } >"$summary_file"
    echo "summary written to $summary_file"
fi
