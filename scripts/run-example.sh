#!/usr/bin/env bash
# Starts ironic-metadata on 127.0.0.1:8080 with the example inventory (no Ironic needed).
# The example node web-0 claims 127.0.0.1, so from this machine:
#   curl http://127.0.0.1:8080/openstack/latest/meta_data.json
# Health and metrics: http://127.0.0.1:9180/readyz and /metrics. Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
exec cargo run --release -- serve --inventory examples/inventory.json \
  --bind 127.0.0.1 --port "${BIND_PORT:-8080}" --admin "${ADMIN_ADDR:-127.0.0.1:9180}" "$@"
