#!/usr/bin/env bash
# Runs every test of ironic-metadata: unit and integration tests (cargo test, each starting
# its own servers on free loopback ports), then the end-to-end suite against a real
# OpenStack Ironic installed from PyPI (scripts/e2e.sh). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo test --all-targets
scripts/e2e.sh
