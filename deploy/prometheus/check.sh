#!/usr/bin/env bash
# Checks the Prometheus alert rules offline; exits non-zero on any problem.
#
#   deploy/prometheus/check.sh
#
# - every metric name in alerts.yaml and alerts.test.yaml is one src/metrics.rs registers,
#   and every label value the rules select on (reason="total_limit", ...) is a string the
#   source emits, so renaming a metric or a label value breaks this check, not the alerts;
# - `promtool check rules alerts.yaml`: syntax, PromQL, templates;
# - `promtool test rules alerts.test.yaml`: every alert fires on synthetic series when it
#   should and stays silent when it should not.
#
# promtool: the one on PATH, else $PROMTOOL, else Debian's (package prometheus) taken out
# of the .deb with `apt-get download` and `dpkg-deb -x` into $PROMTOOL_DIR (default
# /tmp/ironic-metadata-promtool): installing the package would also enable and start a
# Prometheus server where systemd runs. Needs root or sudo for `apt-get update` then.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
metrics_rs=$repo/src/metrics.rs
PROMTOOL_DIR=${PROMTOOL_DIR:-/tmp/ironic-metadata-promtool}

fail=0
ok() { echo "ok   - $*"; }
not_ok() { fail=1; echo "FAIL - $*"; }

# ---------------------------------------------------------------------------------------
# promtool

find_promtool() {
  if [ -n "${PROMTOOL:-}" ]; then
    echo "$PROMTOOL"
  elif command -v promtool >/dev/null 2>&1; then
    command -v promtool
  elif [ -x "$PROMTOOL_DIR/usr/bin/promtool" ]; then
    echo "$PROMTOOL_DIR/usr/bin/promtool"
  else
    return 1
  fi
}

if ! promtool=$(find_promtool); then
  echo "check: fetching promtool from Debian's prometheus package into $PROMTOOL_DIR" >&2
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "check: need root or sudo for apt-get update" >&2; exit 2; }
    sudo="sudo"
  fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  dl=$(mktemp -d)
  trap 'rm -rf "$dl"' EXIT
  (cd "$dl" && apt-get download -qq prometheus)
  mkdir -p "$PROMTOOL_DIR"
  dpkg-deb -x "$dl"/prometheus_*.deb "$dl/root"
  install -m 0755 "$dl/root/usr/bin/promtool" "$PROMTOOL_DIR/promtool.new"
  mkdir -p "$PROMTOOL_DIR/usr/bin"
  mv "$PROMTOOL_DIR/promtool.new" "$PROMTOOL_DIR/usr/bin/promtool"
  promtool=$PROMTOOL_DIR/usr/bin/promtool
fi
echo "# $("$promtool" --version 2>&1 | head -n 1)"

# ---------------------------------------------------------------------------------------
# Names against the source.

if [ ! -f "$metrics_rs" ]; then
  not_ok "src/metrics.rs not found at $metrics_rs"
else
  # metadata_* words, histogram suffixes folded onto the histogram's name.
  mapfile -t names < <(grep -ohE '\bmetadata_[a-z0-9_]*[a-z0-9]' "$here/alerts.yaml" "$here/alerts.test.yaml" | sort -u)
  missing=()
  for name in "${names[@]}"; do
    base=$name
    case "$name" in *_bucket | *_sum | *_count) grep -qF "\"$name\"" "$metrics_rs" || base=${name%_*} ;; esac
    grep -qF "\"$base\"" "$metrics_rs" || missing+=("$name")
  done
  if [ "${#names[@]}" -eq 0 ]; then
    not_ok "no metadata_* metric names found in alerts.yaml"
  elif [ "${#missing[@]}" -eq 0 ]; then
    ok "the ${#names[@]} metric names of the rules and tests are registered in src/metrics.rs"
  else
    not_ok "metric names not registered in src/metrics.rs: ${missing[*]}"
  fi

  # Label values the rules select on (reason="total_limit", result="rejected", ...).
  mapfile -t values < <(grep -ohE '\b(reason|result|kind|trigger|action)="[a-z0-9_]+"' "$here/alerts.yaml" |
    sed 's/^[a-z]*=//' | sort -u)
  missing=()
  for value in "${values[@]}"; do
    grep -rqF --include='*.rs' "$value" "$repo/src" || missing+=("$value")
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    ok "the label values the rules select on occur in src/: ${values[*]:-none}"
  else
    not_ok "label values no longer in src/: ${missing[*]}"
  fi
fi

# ---------------------------------------------------------------------------------------
# promtool

run() { # run DESC CMD...: the command's output is shown only when it fails
  local desc=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$desc"; else not_ok "$desc"; while IFS= read -r l; do echo "    $l"; done <<<"$out"; fi
}
# promtool resolves rule_files against the test file's directory.
run "promtool check rules alerts.yaml" "$promtool" check rules "$here/alerts.yaml"
run "promtool test rules alerts.test.yaml" "$promtool" test rules "$here/alerts.test.yaml"

exit "$fail"
