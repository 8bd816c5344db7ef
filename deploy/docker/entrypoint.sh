#!/bin/sh
# Container entrypoint: runs its arguments (the ironic-metadata command line).
#
# Started as the image's unprivileged user (the default), it simply runs them.
#
# Started as root (the compose macvlan variant), it first prepares the network namespace
# and then drops to uid/gid 10001 with NET_BIND_SERVICE and NET_RAW (the impostor watch's
# packet socket) as the only capabilities left:
#   METADATA_ONLINK_SUBNETS  CIDRs (comma or space separated) of the nodes' networks on
#                            the macvlan segment. Docker gives the container only
#                            169.254.169.254 on that side, so without these on-link routes
#                            replies to the nodes would leave by the default route.
#   METADATA_LINK_LOCAL_ADDR an IPv6 link-local address (fe80::a9fe:a9fe, which cloud-init
#                            asks on IPv6-only networks) to serve too: added to the
#                            interface holding the IPv4 metadata address, and appended to
#                            BIND_ADDR with that interface.
#   BIND_ADDR                its link-local entries (fe80::a9fe:a9fe%eth0) are added to
#                            their interface when missing.
set -eu

RUN_AS=10001

if [ "$(id -u)" != 0 ]; then
  exec "$@"
fi

bind="${BIND_ADDR:-169.254.169.254}"
# The IPv4 metadata address: the first entry of BIND_ADDR without a ':', and its interface.
v4=$(echo "$bind" | tr ',' '\n' | grep -v ':' | head -n 1 || true)
dev=$(ip -o -4 addr show | awk -v a="$v4" '{ split($4, p, "/"); if (p[1] == a) { print $2; exit } }')

if [ -n "${METADATA_LINK_LOCAL_ADDR:-}" ]; then
  if [ -z "$dev" ]; then
    echo "entrypoint: ${v4:-no IPv4 address of BIND_ADDR} is not configured on any interface: nowhere to add $METADATA_LINK_LOCAL_ADDR" >&2
    exit 1
  fi
  bind="$bind,$METADATA_LINK_LOCAL_ADDR%$dev"
  export BIND_ADDR="$bind"
fi

# IPv6 link-local metadata addresses (fe80::a9fe:a9fe%eth0 in BIND_ADDR, as cloud-init's
# OpenStack datasource asks on IPv6-only networks) are added to their interface when the
# container does not have them yet.
for entry in $(echo "$bind" | tr ',' ' '); do
  case "$entry" in
    fe80:*%*)
      addr="${entry%%%*}"
      dev6="${entry##*%}"
      if ! ip -6 -o addr show dev "$dev6" 2>/dev/null | grep -q " inet6 $addr/"; then
        if ! ip -6 addr add "$addr/64" dev "$dev6" nodad; then
          echo "entrypoint: cannot add $addr to $dev6 (NET_ADMIN missing, or IPv6 disabled?)" >&2
          exit 1
        fi
        echo "entrypoint: $addr on $dev6" >&2
      fi
      ;;
  esac
done

if [ -n "${METADATA_ONLINK_SUBNETS:-}" ]; then
  if [ -z "$dev" ]; then
    echo "entrypoint: ${v4:-no IPv4 address of BIND_ADDR} is not configured on any interface of this container" >&2
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
  --inh-caps=-all --bounding-set=-all,+net_bind_service,+net_raw -- "$@"
