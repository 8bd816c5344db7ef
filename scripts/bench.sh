#!/usr/bin/env bash
# Benchmarks of ironic-metadata: hot path against nginx, a boot storm and cold starts against
# a real Ironic, memory per node and per rate-limited client, the criterion micro-benchmark,
# and the Ironic source at 100,000 nodes (a fake Ironic) and 10,000 (a real one).
# Writes bench/results.md and bench/results.json. See --help.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/bench.sh [--only LIST] [--out DIR] [--note TEXT] [--criterion-from DIR]

Runs the benchmark scenarios and writes DIR/results.md and DIR/results.json (DIR defaults to
bench/). Results of scenarios not run this time are kept from DIR/results.json.

Scenarios (LIST is comma-separated; default: all, always in this order):
  hotpath    ironic-metadata vs nginx serving the same meta_data.json, wrk -c50, 1 and 2
             threads; nginx with `sendfile off` and with `sendfile on; tcp_nopush on;`, the
             faster is the reference; a bare hyper server (examples/hyper_ceiling.rs) is the
             ceiling, pingora's own lightest HTTP app (examples/pingora_floor.rs) the
             pingora floor. A run with any answer that is not 2xx fails (also in l2)
  storm      1,000 nodes of a real Ironic fetch cloud-init's 6 files at once
  coldstart  process start to ready with 1,000 and 10,000 nodes in Ironic, vs curl of the pages
  memory     RSS per indexed node; RSS around 100,000 rate-limited client addresses
  criterion  cargo bench --bench filters -- --quick (in-process request path)
  l2         wrk against a zone with and without verify_mac, client and server in two
             network namespaces on one veth (needs root; removes them afterwards)
  scale      the Ironic source at fleet size, default settings: a fake Ironic
             (examples/fake_ironic.rs) with 100,000 deployed nodes (configdrives as Ironic
             stores them) and the real seeded Ironic with 10,000. Time to ready (both);
             Ironic requests per minute in steady state, counted at the fake: 1,000 vs
             100,000 nodes, one vs three replicas, with 1,000 unknown addresses asking;
             a node made active served on its first request (time, Ironic calls); RSS
             per indexed node (100,000 nodes vs none); 1,000 parked wait_for_change
             requests (RSS, other clients' p50/p99 without and with them)

Options:
  --only LIST            run only these scenarios
  --out DIR              where results.md and results.json go (default: bench/)
  --note TEXT            a remark for results.md (e.g. that the machine was busy)
  --criterion-from DIR   read criterion results from DIR (a target/criterion) instead of
                         running cargo bench
  -h, --help             this text

Environment:
  IRONIC_METADATA_BIN      use this binary instead of `cargo build --release --locked`
  BENCH_SCALE              0 < S <= 1 scales durations, node and client counts (default 1)
  BENCH_ROUNDS             hot path rounds per server and thread count (default 3)
  BENCH_CRITERION_PROFILE  cargo profile for the criterion step (default release, which
                           reuses the release build; "bench" is plain `cargo bench`)
  FAKE_IRONIC_BIN          the fake Ironic for scale, instead of
                           `cargo build --release --locked --example fake_ironic`
  HYPER_CEILING_BIN        the bare hyper server for hotpath, instead of
                           `cargo build --release --locked --example hyper_ceiling`
  PINGORA_FLOOR_BIN        the minimal pingora server for hotpath, instead of
                           `cargo build --release --locked --example pingora_floor`
  BENCH_NOTE               same as --note

Installs what it needs first (as root or with sudo): nginx, wrk, curl, util-linux and
genisoimage from Debian, the Ironic venv through scripts/ironic/setup-venv.sh. Every server listens on a free
127.0.0.1 port and every client address is in 127.0.0.0/8, except in l2, whose two
addresses exist only in the namespaces it creates.
EOF
}

cd "$(dirname "$0")/.."
export BENCH_T0
BENCH_T0=$(date +%s)

only=""
out="bench"
note="${BENCH_NOTE:-}"
criterion_from=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --only) only=${2:?--only needs a list}; shift 2 ;;
    --only=*) only=${1#--only=}; shift ;;
    --out) out=${2:?--out needs a directory}; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    --note) note=${2?--note needs a text}; shift 2 ;;
    --note=*) note=${1#--note=}; shift ;;
    --criterion-from) criterion_from=${2:?--criterion-from needs a directory}; shift 2 ;;
    --criterion-from=*) criterion_from=${1#--criterion-from=}; shift ;;
    *) echo "bench: unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

wants() { # wants SCENARIO: true when SCENARIO is part of this run
  [ -z "$only" ] || [[ ",$only," == *",$1,"* ]]
}
IFS=, read -ra listed <<<"$only"
for s in "${listed[@]}"; do
  case "$s" in
    hotpath | storm | coldstart | memory | criterion | l2 | scale) ;;
    *) echo "bench: unknown scenario '$s' (see --help)" >&2; exit 2 ;;
  esac
done

# --- tools ---------------------------------------------------------------------------------
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "bench: need root or sudo to install packages" >&2; exit 1; }
  sudo="sudo"
fi
need=()
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v taskset >/dev/null 2>&1 || need+=(util-linux)
if wants hotpath; then
  command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need+=(nginx)
fi
if wants hotpath || wants l2; then
  command -v wrk >/dev/null 2>&1 || need+=(wrk)
fi
if wants l2; then
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
fi
if wants scale; then
  command -v genisoimage >/dev/null 2>&1 || need+=(genisoimage)
fi
if [ "${#need[@]}" -gt 0 ]; then
  echo "bench: installing ${need[*]}" >&2
  # Debian's nginx package would start a system-wide nginx on port 80: the benchmark runs
  # its own on a free loopback port, so service starts are refused during the install.
  ours=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee /usr/sbin/policy-rc.d >/dev/null
    $sudo chmod 755 /usr/sbin/policy-rc.d
    ours=1
    trap '$sudo rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  if [ -n "$ours" ]; then
    $sudo rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
fi
PATH=$PATH:/usr/sbin # nginx lives there; not every user's PATH has it

if wants storm || wants coldstart || wants memory || wants scale; then
  scripts/ironic/setup-venv.sh
  python=.venv-ironic/bin/python
else
  python=python3
fi

# --- the binary ----------------------------------------------------------------------------
build_seconds=""
if [ -n "${IRONIC_METADATA_BIN:-}" ]; then
  bin=$IRONIC_METADATA_BIN
  origin="prebuilt (IRONIC_METADATA_BIN); it may not match the commit"
else
  scripts/ensure-deps.sh
  start=$(date +%s)
  cargo build --release --locked
  build_seconds=$(($(date +%s) - start))
  bin="${CARGO_TARGET_DIR:-target}/release/ironic-metadata"
  origin="cargo build --release --locked"
  if [ -n "$(git --no-optional-locks status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    origin="$origin, with uncommitted changes"
  fi
fi
[ -x "$bin" ] || { echo "bench: $bin is not an executable" >&2; exit 1; }
# example_bin VAR NAME: the example NAME, from the environment variable VAR when it is set,
# else built in release mode.
example_bin() {
  local path=${!1:-}
  if [ -z "$path" ]; then
    scripts/ensure-deps.sh
    cargo build --release --locked --example "$2" >&2
    path="${CARGO_TARGET_DIR:-target}/release/examples/$2"
  fi
  [ -x "$path" ] || { echo "bench: $path is not an executable" >&2; exit 1; }
  printf '%s\n' "$path"
}
fake_ironic="" hyper_ceiling="" pingora_floor=""
if wants scale; then
  fake_ironic=$(example_bin FAKE_IRONIC_BIN fake_ironic) || exit 1
fi
if wants hotpath; then
  hyper_ceiling=$(example_bin HYPER_CEILING_BIN hyper_ceiling) || exit 1
  pingora_floor=$(example_bin PINGORA_FLOOR_BIN pingora_floor) || exit 1
fi
if wants criterion && [ -z "$criterion_from" ]; then
  command -v cargo >/dev/null 2>&1 || { echo "bench: the criterion scenario needs cargo" >&2; exit 1; }
fi

# --- run -----------------------------------------------------------------------------------
args=(--bin "$bin" --out "$out" --binary-origin "$origin" --note "$note")
[ -n "$only" ] && args+=(--only "$only")
[ -n "$criterion_from" ] && args+=(--criterion-from "$criterion_from")
[ -n "$build_seconds" ] && args+=(--build-seconds "$build_seconds")
[ -n "$fake_ironic" ] && args+=(--fake-ironic "$fake_ironic")
[ -n "$hyper_ceiling" ] && args+=(--hyper-ceiling "$hyper_ceiling")
[ -n "$pingora_floor" ] && args+=(--pingora-floor "$pingora_floor")
exec "$python" scripts/bench/run.py "${args[@]}"
