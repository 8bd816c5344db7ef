#!/usr/bin/env bash
# Prepares this host for `docker-compose up -d ironic-metadata` (the macvlan variant):
#   - finds the interface of the default route, the parent of the macvlan network, and the
#     IPv4 networks on it (the nodes' networks, routed on-link inside the container), and
#     writes METADATA_PARENT_IF and METADATA_ONLINK_SUBNETS into the compose .env file
#     (other lines are kept);
#   - refuses when 169.254.169.254 is already taken: configured on this host, or known in
#     the neighbour table of that interface (someone on the segment answered ARP for it);
#   - creates the session-token key the compose file mounts, when it does not exist;
#   - with --ipv6, also serves fe80::a9fe:a9fe (what cloud-init asks on IPv6-only networks)
#     next to 169.254.169.254: writes METADATA_LINK_LOCAL_ADDR, after the same checks.
# Passive by default: it sends nothing on the network unless --probe is given.
set -euo pipefail

METADATA_IP=169.254.169.254
METADATA_IP6=fe80::a9fe:a9fe
CONTAINER_UID=10001
repo=$(cd "$(dirname "$0")/.." && pwd)

usage() {
  cat <<EOF
Usage: $(basename "$0") [options]

Prepare this host for the macvlan variant of docker-compose.yml.

Options:
  -i, --interface IF     use IF as the macvlan parent instead of the default-route interface
  -s, --subnets CIDRS    the nodes' networks on that segment, comma-separated (default: the
                         IPv4 networks configured on the interface)
  -e, --env-file FILE    compose environment file to update (default: $repo/.env)
  -k, --token-key FILE   session-token key to create when missing
                         (default: /etc/ironic-metadata/token.key; the compose file's
                         TOKEN_KEY_HOST_FILE)
      --no-token-key     do not create the token key
      --ipv6             also serve $METADATA_IP6 on the segment (IPv6-only nodes); the
                         macvlan network needs IPv6 enabled (docs/exposure.md)
      --probe            also send ARP duplicate-address probes for $METADATA_IP on the
                         interface (needs arping from iputils-arping; sends traffic)
  -n, --dry-run          check and print what would change, change nothing
  -h, --help             show this help

Exit status: 0 ready, 1 refused or failed (one message on stderr), 2 bad usage.
EOF
}

die() {
  echo "setup-network: $*" >&2
  exit 1
}

iface=""
subnets=""
env_file="$repo/.env"
token_key=/etc/ironic-metadata/token.key
make_key=1
probe=0
ipv6=0
dry_run=0

while [ "$#" -gt 0 ]; do
  case "$1" in
    -i | --interface) [ "$#" -ge 2 ] || { usage >&2; exit 2; }; iface=$2; shift 2 ;;
    -s | --subnets) [ "$#" -ge 2 ] || { usage >&2; exit 2; }; subnets=$2; shift 2 ;;
    -e | --env-file) [ "$#" -ge 2 ] || { usage >&2; exit 2; }; env_file=$2; shift 2 ;;
    -k | --token-key) [ "$#" -ge 2 ] || { usage >&2; exit 2; }; token_key=$2; shift 2 ;;
    --no-token-key) make_key=0; shift ;;
    --probe) probe=1; shift ;;
    --ipv6) ipv6=1; shift ;;
    -n | --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "setup-network: unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

command -v ip >/dev/null 2>&1 || die "the ip command (iproute2) is required"

# 1. The parent interface: the one carrying the default route (the first, when several).
if [ -z "$iface" ]; then
  iface=$(ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") { print $(i + 1); exit }}')
  [ -n "$iface" ] || die "no IPv4 default route on this host; name the interface facing the nodes with --interface IF"
fi
ip link show dev "$iface" >/dev/null 2>&1 || die "interface $iface does not exist"

# The nodes' networks: what the interface is connected to, link-local excluded.
if [ -z "$subnets" ]; then
  subnets=$(ip -4 -o route show dev "$iface" proto kernel scope link | awk '$1 !~ /^169\.254\./ {print $1}' | sort -u | paste -sd, -)
  [ -n "$subnets" ] || die "no IPv4 network is configured on $iface; name the nodes' networks with --subnets CIDRS"
fi
case "$subnets" in
  *[!0-9./,]*) die "--subnets wants comma-separated IPv4 CIDRs, got: $subnets" ;;
esac

# 2. 169.254.169.254 must not be configured here: the host would answer for it itself.
held=$(ip -o -4 addr show to "$METADATA_IP/32" | awk '{print $2}' | sort -u | tr '\n' ' ')
if [ -n "$held" ]; then
  die "$METADATA_IP is already configured on this host (interface: ${held% }); remove it or use the host-network profile instead"
fi

# 3. Someone on the segment already answered ARP for it (passive: the neighbour table).
neigh=$(ip -4 neigh show to "$METADATA_IP" dev "$iface" | grep -E 'lladdr' | grep -vE 'FAILED|INCOMPLETE' || true)
if [ -n "$neigh" ]; then
  mac=$(awk '{for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1)}' <<<"$neigh" | head -n 1)
  die "$METADATA_IP already answers ARP on $iface (MAC $mac); another metadata service is on this segment"
fi

# 3b. With --ipv6, the same for fe80::a9fe:a9fe on the segment (neighbour discovery).
if [ "$ipv6" -eq 1 ]; then
  if ip -o -6 addr show dev "$iface" | grep -q " inet6 $METADATA_IP6/"; then
    die "$METADATA_IP6 is already configured on $iface; remove it or use the host-network profile instead"
  fi
  neigh6=$(ip -6 neigh show to "$METADATA_IP6" dev "$iface" | grep -E 'lladdr' | grep -vE 'FAILED|INCOMPLETE' || true)
  if [ -n "$neigh6" ]; then
    mac=$(awk '{for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1)}' <<<"$neigh6" | head -n 1)
    die "$METADATA_IP6 already answers neighbour discovery on $iface (MAC $mac); another metadata service is on this segment"
  fi
fi

# 4. Optional active check: ARP duplicate-address detection on the segment.
if [ "$probe" -eq 1 ]; then
  command -v arping >/dev/null 2>&1 || die "--probe needs arping (apt-get install iputils-arping)"
  if ! arping -D -q -c 2 -w 3 -I "$iface" "$METADATA_IP" >/dev/null 2>&1; then
    die "$METADATA_IP answered an ARP probe on $iface; another host already uses it"
  fi
fi

# 5. The compose .env: set our variables, keep the rest.
lines=("METADATA_PARENT_IF=$iface" "METADATA_ONLINK_SUBNETS=$subnets")
[ "$ipv6" -eq 1 ] && lines+=("METADATA_LINK_LOCAL_ADDR=$METADATA_IP6")
[ "$make_key" -eq 1 ] && lines+=("TOKEN_KEY_HOST_FILE=$token_key")
if [ "$dry_run" -eq 1 ]; then
  echo "would set ${lines[*]} in $env_file"
else
  tmp=$(mktemp "${env_file}.XXXXXX")
  trap 'rm -f "$tmp"' EXIT
  if [ -f "$env_file" ]; then
    grep -vE '^(METADATA_PARENT_IF|METADATA_ONLINK_SUBNETS|METADATA_LINK_LOCAL_ADDR|TOKEN_KEY_HOST_FILE)=' "$env_file" >"$tmp" || true
    chmod --reference="$env_file" "$tmp"
  else
    chmod 0600 "$tmp"
  fi
  printf '%s\n' "${lines[@]}" >>"$tmp"
  mv -f "$tmp" "$env_file"
  trap - EXIT
  echo "set ${lines[*]} in $env_file"
fi

# 6. The session-token key, readable by the container's user only.
if [ "$make_key" -eq 1 ]; then
  if [ -f "$token_key" ]; then
    echo "token key $token_key exists, kept"
  elif [ "$dry_run" -eq 1 ]; then
    echo "would create token key $token_key (32 random bytes in base64, mode 0400, owner $CONTAINER_UID)"
  else
    [ "$(id -u)" -eq 0 ] || die "creating $token_key needs root (or pass --token-key FILE / --no-token-key)"
    install -d -m 0755 "$(dirname "$token_key")"
    (umask 077 && head -c 32 /dev/urandom | base64 >"$token_key.new")
    chown "$CONTAINER_UID:$CONTAINER_UID" "$token_key.new"
    chmod 0400 "$token_key.new"
    mv -f "$token_key.new" "$token_key"
    echo "created token key $token_key"
  fi
fi

if [ "$dry_run" -eq 1 ]; then
  echo "dry run: nothing changed; macvlan parent would be $iface, nodes' networks $subnets"
else
  echo "ready: macvlan parent $iface, nodes' networks $subnets; next: IRONIC_URL=... docker-compose up -d ironic-metadata"
fi
