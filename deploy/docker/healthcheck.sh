#!/bin/sh
# Container health check: GET /healthz on the admin listener named by ADMIN_ADDR
# (host:port, [v6]:port). A wildcard admin address is checked through loopback.
set -eu

addr="${ADMIN_ADDR:-127.0.0.1:9180}"
port="${addr##*:}"
host="${addr%:*}"
case "$host" in
  "" | 0.0.0.0) host=127.0.0.1 ;;
  "[::]") host="[::1]" ;;
esac

exec curl --fail --silent --show-error --globoff --max-time 3 --output /dev/null \
  "http://${host}:${port}/healthz"
