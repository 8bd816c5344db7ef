#!/bin/sh
# Container entrypoint: runs its arguments (the ironic-metadata command line).
#
# Started as the image's unprivileged user (the default), it simply runs them.
#
# Started as root (the compose macvlan variant), it first prepares the network namespace
# and then drops to uid/gid 10001 with NET_BIND_SERVICE as the only capability left:
#   METADATA_ONLINK_SUBNETS  CIDRs (comma or space separated) of the nodes' networks on
#                            the macvlan segment. Docker gives the container only
#                            169.254.169.254 on that side, so without these on-link routes
#                            replies to the nodes would leave by the default route.
set -eu

RUN_AS=10001

if [ "$(id -u)" != 0 ]; then
  exec "$@"
fi

if [ -n "${METADATA_ONLINK_SUBNETS:-}" ]; then
  bind="${BIND_ADDR:-169.254.169.254}"
  dev=$(ip -o -4 addr show | awk -v a="$bind" '{ split($4, p, "/"); if (p[1] == a) { print $2; exit } }')
  if [ -z "$dev" ]; then
    echo "entrypoint: $bind is not configured on any interface of this container" >&2
    exit 1
  fi
  for net in $(echo "$METADATA_ONLINK_SUBNETS" | tr ',' ' '); do
    if ! ip route replace "$net" dev "$dev" scope link; then
      echo "entrypoint: cannot add the on-link route $net dev $dev (NET_ADMIN missing?)" >&2
      exit 1
    fi
    echo "entrypoint: on-link route $net dev $dev" >&2
  done
else
  echo "entrypoint: METADATA_ONLINK_SUBNETS is empty: only clients on the container's own subnets can be answered" >&2
fi

exec setpriv --reuid="$RUN_AS" --regid="$RUN_AS" --clear-groups \
  --inh-caps=-all --bounding-set=-all,+net_bind_service -- "$@"
