#!/usr/bin/env bash
# Runs every test of ironic-metadata: unit and integration tests (cargo test), each of which
# starts its own servers on free loopback ports. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
cargo test --all-targets
