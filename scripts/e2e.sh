#!/usr/bin/env bash
# End-to-end tests against a real OpenStack Ironic: installs Ironic from PyPI into a venv
# (# openstacksdk builds ISO configdrives with genisoimage (or mkisofs/xorrisofs).
if ! command -v genisoimage >/dev/null && ! command -v mkisofs >/dev/null && ! command -v xorrisofs >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq genisoimage >/dev/null
fi
scripts/ironic/setup-venv.sh), builds ironic-metadata, runs scripts/e2e/real_ironic.py.
# Everything listens on free 127.0.0.1 ports. Fails loudly when a prerequisite is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
# openstacksdk builds ISO configdrives with genisoimage (or mkisofs/xorrisofs).
if ! command -v genisoimage >/dev/null && ! command -v mkisofs >/dev/null && ! command -v xorrisofs >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq genisoimage >/dev/null
fi
scripts/ironic/setup-venv.sh
cargo build --bin ironic-metadata
bin="${CARGO_TARGET_DIR:-target}/debug/ironic-metadata"
[ -x "$bin" ] || { echo "e2e: $bin was not built" >&2; exit 1; }
exec .venv-ironic/bin/python scripts/e2e/real_ironic.py "$bin"
