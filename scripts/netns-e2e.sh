#!/usr/bin/env bash
# Network-path end-to-end test of the exposure options in docs/exposure.md, for real, in
# network namespaces this script creates (and always removes) on this machine, with the
# nodes served from a real OpenStack Ironic. Needs root.
#
#   scripts/netns-e2e.sh [BINARY]        (default: target/debug/ironic-metadata)
#
# Topology (every address lives only inside the namespaces made here; the clients have no
# default route; h, the host that setup-network.sh inspects, has one towards 10.77.0.1,
# which nobody holds):
#
#   same segment   c1, c2, c3 ──┐
#   (bridge in sw)    h ────────┼── sw:br0 ── srv eth0  169.254.169.254/24, as Docker's macvlan
#                               │                       gives it; the image's entrypoint adds
#                               │                       the on-link route to 10.77.0.0/24 and
#                               │                       runs S1 (:80) as uid 10001
#   routed + DNAT  rc ── rtr (nft DNAT 169.254.169.254:80 -> 10.77.100.1:8080) ── srv eth1
#   static route   rs ──┘ (rtr: 169.254.169.254/32 via srv, no translation; S1 answers)
#   reverse proxy  pc ── prx (nginx on 169.254.169.254:80, X-Forwarded-For) ───── srv eth2
#                        srv lo: 10.77.100.1 = S2, 10.77.100.2 = S3 (a replica sharing the
#                        token key, as behind BGP/anycast)
#
# The inventory: Ironic (scripts/ironic/harness.py: API and conductor in one process,
# sqlite, fake-hardware, noauth) listens on 127.0.0.1 inside srv, on a free port; S1, S2
# and S3 read it through IRONIC_URL. Before the servers start, these nodes are enrolled
# and deployed to "active" with a configdrive (hostname NAME.e2e.test, one public key):
#
#   c1  port 52:54:00:77:00:11  10.77.0.11              network_data in the configdrive
#   c2  port 52:54:00:77:00:12  10.77.0.12, fd77::12    node.network_data only
#   rc  port 52:54:00:78:00:02  10.78.0.2               network_data in the configdrive
#   pc  port 52:54:00:77:05:02  10.77.5.2               node.network_data only; no uuid in
#                                                       its configdrive, so meta_data.json
#                                                       carries the UUID Ironic assigned
#   rs  no port                 10.79.0.2               network_data in the configdrive
#   c4  port 52:54:00:77:00:14  DHCP only (no static address anywhere; node.network_data)
#   v6  port 52:54:00:77:00:16  IPv6 SLAAC only (node.network_data): asked from v6a, an
#                               IPv6-only namespace (fe80::16, no IPv4 at all) on the
#                               segment, at fe80::a9fe:a9fe%eth0, where S1 also listens; v6b
#                               borrows fe80::16 with a MAC Ironic does not know
#
# c3 (52:54:00:77:00:13, 10.77.0.13) is first refused as unknown, then enrolled and
# deployed while the servers run, and must be answered without a restart.
#
# Prints one line per assertion and finally "N passed, M failed"; exits non-zero on any
# failure. Installs what it needs (iproute2, nftables, nginx, curl, libcap2-bin,
# iputils-arping) with apt-get when missing, and creates or checks the Ironic venv with
# scripts/ironic/setup-venv.sh (IRONIC_VENV, default .venv-ironic). E2E_MAX_SECONDS
# (default 300) bounds the run after the venv is ready; E2E_KEEP_LOGS=1 keeps the logs
# (servers, nginx, Ironic) and says where.
set -euo pipefail

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}
case "${1:-}" in
  -h | --help) usage; exit 0 ;;
esac
[ "$#" -le 1 ] || { usage >&2; exit 2; }

repo=$(cd "$(dirname "$0")/.." && pwd)
bin_arg=${1:-$repo/target/debug/ironic-metadata}
max_seconds=${E2E_MAX_SECONDS:-300}
run_as=10001
venv=${IRONIC_VENV:-$repo/.venv-ironic}
harness=$repo/scripts/ironic/harness.py

[ "$(id -u)" -eq 0 ] || { echo "netns-e2e: must run as root (it creates network namespaces)" >&2; exit 2; }
[ -x "$bin_arg" ] || { echo "netns-e2e: binary not found or not executable: $bin_arg" >&2; exit 2; }

# ---------------------------------------------------------------------------------------
# Dependencies.

ensure_deps() {
  local need=()
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  command -v nft >/dev/null 2>&1 || command -v iptables >/dev/null 2>&1 || need+=(nftables)
  command -v nginx >/dev/null 2>&1 || need+=(nginx)
  command -v curl >/dev/null 2>&1 || need+=(curl)
  command -v setcap >/dev/null 2>&1 || need+=(libcap2-bin)
  command -v setpriv >/dev/null 2>&1 || need+=(util-linux)
  command -v arping >/dev/null 2>&1 || need+=(iputils-arping)
  # setup-venv.sh creates the Ironic venv with python3's venv module.
  if [ ! -x "$venv/bin/python" ]; then
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
  fi
  [ "${#need[@]}" -eq 0 ] && return 0
  echo "netns-e2e: installing ${need[*]}" >&2
  # Debian starts nginx on installation unless a policy-rc.d says no: it must not listen
  # in this machine's own namespace.
  local made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 0755 /usr/sbin/policy-rc.d
    made_policy=1
  fi
  local rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; } || rc=$?
  [ "$made_policy" -eq 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" -eq 0 ] || { echo "netns-e2e: apt-get install ${need[*]} failed" >&2; exit 2; }
}
ensure_deps

# The Ironic venv (created on first use; later runs only check the pins).
if ! venv_out=$("$repo/scripts/ironic/setup-venv.sh" "$venv" 2>&1); then
  echo "$venv_out" >&2
  echo "netns-e2e: scripts/ironic/setup-venv.sh failed" >&2
  exit 2
fi
py=$venv/bin/python

# The servers take their Ironic settings from the environment: only the ones set here.
for v in $(compgen -e); do
  case $v in OS_* | IRONIC_* | INVENTORY_FILE) unset "$v" ;; esac
done

# ---------------------------------------------------------------------------------------
# Bookkeeping: assertions, our namespaces and processes, cleanup on every exit.

pass=0
fail=0
summary_done=0
namespaces=()
pidfiles=()

ok() { pass=$((pass + 1)); echo "ok   - $*"; }
not_ok() { fail=$((fail + 1)); echo "FAIL - $*"; }

# Unique prefix: no namespace of ours may collide with an existing one.
while :; do
  P="imde2e$(printf '%04x' $((RANDOM % 65536)))"
  ip netns list | grep -q "^$P-" || break
done
T=$(mktemp -d "/tmp/$P.XXXXXX")
chmod 0755 "$T"

cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  local f pid ns
  for f in "${pidfiles[@]}"; do
    pid=$(cat "$f" 2>/dev/null) || continue
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
  done
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    local alive=0
    for f in "${pidfiles[@]}"; do
      pid=$(cat "$f" 2>/dev/null) || continue
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ "$alive" -eq 0 ] && break
    sleep 0.5
  done
  # Ironic runs in its own process group, which the harness stops (TERM, then KILL).
  # Anything still running inside our own namespaces is ours. Twice: a harness interrupted
  # while starting Ironic may have started it in between.
  for _ in 1 2; do
    if [ -e "$T/ironic/ironic.pid" ]; then
      "$py" "$harness" stop --state-dir "$T/ironic" --keep >>"$T/ironic-stop.log" 2>&1 ||
        { echo "netns-e2e: stopping Ironic failed:" >&2; cat "$T/ironic-stop.log" >&2; }
    fi
    for ns in "${namespaces[@]}"; do
      for pid in $(ip netns pids "$ns" 2>/dev/null); do
        kill -KILL "$pid" 2>/dev/null
      done
    done
  done
  for ns in "${namespaces[@]}"; do
    ip netns del "$ns" 2>/dev/null
  done
  if [ "${E2E_KEEP_LOGS:-0}" = 1 ]; then
    echo "logs kept in $T" >&2
  else
    rm -rf "$T"
  fi
  if [ "$summary_done" -eq 0 ]; then
    not_ok "run aborted before the end (exit status $rc)"
    echo "$pass passed, $fail failed"
    rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started=$SECONDS
deadline() { [ $((SECONDS - started)) -lt "$max_seconds" ]; }

# wait_until SECONDS CMD...: run CMD every 0.2 s until it succeeds; false after SECONDS.
wait_until() {
  local limit=$1 t0=$SECONDS
  shift
  until "$@" >/dev/null 2>&1; do
    if [ $((SECONDS - t0)) -ge "$limit" ] || ! deadline; then return 1; fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------
# Topology.

nsx() { local ns=$1; shift; ip netns exec "$P-$ns" "$@"; }

mkns() {
  local n
  for n in "$@"; do
    ip netns add "$P-$n"
    namespaces+=("$P-$n")
    ip -n "$P-$n" link set lo up
  done
}

# link NS_A IF_A NS_B IF_B: a veth pair created directly inside the two namespaces.
link() {
  ip link add name "$2" netns "$P-$1" type veth peer name "$4" netns "$P-$3"
  ip -n "$P-$1" link set "$2" up
  ip -n "$P-$3" link set "$4" up
}

mkns sw srv c1 c2 c3 c4 h rtr rc rs prx pc v6a v6b imp

# Same segment: a bridge in sw, one port per machine.
ip -n "$P-sw" link add br0 type bridge
ip -n "$P-sw" link set br0 up
seg_port() { # seg_port NS MAC PORT
  link "$1" eth0 sw "$3"
  ip -n "$P-sw" link set "$3" master br0
  [ -z "$2" ] || ip -n "$P-$1" link set eth0 address "$2"
}
seg_port srv "" psrv
seg_port c1 52:54:00:77:00:11 pc1
seg_port c2 52:54:00:77:00:12 pc2
seg_port c3 52:54:00:77:00:13 pc3
seg_port c4 52:54:00:77:00:14 pc4
seg_port h 52:54:00:77:00:50 ph
seg_port v6a 52:54:00:77:00:16 pv6a
seg_port v6b 52:54:00:77:00:17 pv6b
seg_port imp 52:54:00:77:00:66 pimp
ip -n "$P-imp" link set eth0 down

# The service's side of the segment is what Docker's macvlan network gives the container:
# 169.254.169.254 in 169.254.169.0/24, nothing in the nodes' network.
ip -n "$P-srv" addr add 169.254.169.254/24 dev eth0
for c in c1:11 c2:12 c3:13 c4:14; do
  ip -n "$P-${c%%:*}" addr add "10.77.0.${c##*:}/24" dev eth0
  ip -n "$P-${c%%:*}" route add 169.254.169.254/32 dev eth0
done
ip -n "$P-h" addr add 10.77.0.50/24 dev eth0
ip -n "$P-h" route add default via 10.77.0.1 dev eth0

# IPv6 on the segment: S4 listens on fd77::fe (no DAD: the spoofing check below gives one
# address to two namespaces on purpose).
ip -n "$P-srv" addr add fd77::fe/64 dev eth0 nodad
ip -n "$P-c2" addr add fd77::12/64 dev eth0 nodad
ip -n "$P-c3" addr add fd77::13/64 dev eth0 nodad
# IPv6-only clients: one link-local address each (the same one), nothing else. v6b's link
# stays down until it takes its turn (a link going down loses its IPv6 addresses: v6b's is
# added then).
ll_only() { # ll_only NS: no address but fe80::16
  ip -n "$P-$1" link set eth0 addrgenmode none
  ip -n "$P-$1" -6 addr flush dev eth0 scope link
  ip -n "$P-$1" addr add fe80::16/64 dev eth0 nodad
}
ll_only v6a
ip -n "$P-v6b" link set eth0 down

# Routed: rc -- rtr -- srv, 169.254.169.254 routed to rtr as a DHCP option 121 route would.
link rc eth0 rtr eth0
link rtr eth1 srv eth1
ip -n "$P-rc" addr add 10.78.0.2/24 dev eth0
ip -n "$P-rc" route add 169.254.169.254/32 via 10.78.0.1
ip -n "$P-rc" route add 10.77.100.0/24 via 10.78.0.1
ip -n "$P-rtr" addr add 10.78.0.1/24 dev eth0
ip -n "$P-rtr" addr add 10.77.1.1/30 dev eth1
ip -n "$P-rtr" route add 10.77.100.0/24 via 10.77.1.2
# Static route: rs's packets for 169.254.169.254 are forwarded untranslated to srv.
link rs eth0 rtr eth2
ip -n "$P-rs" addr add 10.79.0.2/24 dev eth0
ip -n "$P-rs" route add 169.254.169.254/32 via 10.79.0.1
ip -n "$P-rtr" addr add 10.79.0.1/24 dev eth2
ip -n "$P-rtr" route add 169.254.169.254/32 via 10.77.1.2
nsx rtr sysctl -qw net.ipv4.ip_forward=1
ip -n "$P-srv" addr add 10.77.1.2/30 dev eth1
ip -n "$P-srv" route add 10.78.0.0/24 via 10.77.1.1
ip -n "$P-srv" route add 10.79.0.0/24 via 10.77.1.1
ip -n "$P-srv" addr add 10.77.100.1/32 dev lo
ip -n "$P-srv" addr add 10.77.100.2/32 dev lo
ip -n "$P-srv" addr add 10.77.100.3/32 dev lo

if nsx rtr nft -f - <<'EOF' 2>/dev/null
table ip e2e_nat {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "eth0" ip daddr 169.254.169.254 tcp dport 80 dnat to 10.77.100.1:8080
  }
}
EOF
then
  dnat_tool=nftables
else
  nsx rtr iptables -t nat -A PREROUTING -i eth0 -d 169.254.169.254/32 -p tcp --dport 80 \
    -j DNAT --to-destination 10.77.100.1:8080
  dnat_tool=iptables
fi

# Reverse proxy: pc -- prx (nginx holding 169.254.169.254) -- srv.
link pc eth0 prx eth0
link prx eth1 srv eth2
ip -n "$P-pc" addr add 10.77.5.2/24 dev eth0
ip -n "$P-pc" route add 169.254.169.254/32 dev eth0
ip -n "$P-prx" addr add 10.77.5.1/24 dev eth0
ip -n "$P-prx" addr add 169.254.169.254/32 dev eth0
ip -n "$P-prx" addr add 10.77.3.1/24 dev eth1
ip -n "$P-prx" route add 10.77.100.0/24 via 10.77.3.2
ip -n "$P-srv" addr add 10.77.3.2/24 dev eth2

# ---------------------------------------------------------------------------------------
# Files: binary with the image's file capability, node specs, policies, token key.

bin="$T/ironic-metadata"
cp "$bin_arg" "$bin"
chmod 0755 "$bin"
setcap cap_net_bind_service,cap_net_raw=+p "$bin"
install -m 0755 "$repo/deploy/docker/entrypoint.sh" "$T/entrypoint.sh"
install -m 0755 "$repo/deploy/docker/healthcheck.sh" "$T/healthcheck.sh"

(umask 077 && head -c 32 /dev/urandom | base64 >"$T/token.key")
chown "$run_as:$run_as" "$T/token.key"
chmod 0400 "$T/token.key"

# Instance UUIDs: each node's instance_uuid in Ironic and the uuid of its configdrive
# meta_data, which meta_data.json must carry. pc has none, so its meta_data.json carries
# the node UUID Ironic assigns at enrollment (read back after enrolling).
INST_C1=e2e00000-0000-4000-8000-000000000011
INST_C2=e2e00000-0000-4000-8000-000000000012
INST_C3=e2e00000-0000-4000-8000-000000000013
INST_C4=e2e00000-0000-4000-8000-000000000014
INST_V6=e2e00000-0000-4000-8000-000000000016
INST_RC=e2e00000-0000-4000-8000-000000000078
INST_RS=e2e00000-0000-4000-8000-000000000079
NET_ID=e2e00000-1111-4222-8333-444444444444

# Networks of network_data (Ironic validates it against Nova's schema), on link port-0.
v4() { echo "{\"id\": \"network0\", \"type\": \"ipv4\", \"link\": \"port-0\", \"network_id\": \"$NET_ID\", \"ip_address\": \"$1\", \"netmask\": \"255.255.255.0\", \"routes\": []}"; }
v6() { echo "{\"id\": \"network1\", \"type\": \"ipv6\", \"link\": \"port-0\", \"network_id\": \"$NET_ID\", \"ip_address\": \"$1\", \"netmask\": \"ffff:ffff:ffff:ffff::\", \"routes\": []}"; }
dhcp4() { echo "{\"id\": \"network0\", \"type\": \"ipv4_dhcp\", \"link\": \"port-0\", \"network_id\": \"$NET_ID\"}"; }
slaac6() { echo "{\"id\": \"network0\", \"type\": \"ipv6_slaac\", \"link\": \"port-0\", \"network_id\": \"$NET_ID\"}"; }

# spec NAME MAC PORT INSTANCE WHERE NETWORKS: one node for `harness.py enroll --spec` (the
# shape of node_spec() there). PORT: "port" (an Ironic port with that MAC) or "none";
# INSTANCE: instance UUID or ""; WHERE: "configdrive" (network_data in the configdrive the
# node is deployed with) or "node" (node.network_data); NETWORKS: comma-separated objects.
spec() {
  local name=$1 mac=$2 port=$3 inst=$4 where=$5 nets=$6
  local nd ports='[]' inst_uuid='' md_uuid='' node_nd='' cd_nd=''
  nd="{\"links\": [{\"id\": \"port-0\", \"type\": \"phy\", \"ethernet_mac_address\": \"$mac\", \"mtu\": 1500}], \"networks\": [$nets], \"services\": []}"
  [ "$port" = port ] && ports="[{\"address\": \"$mac\", \"name\": \"$name-eth0\", \"pxe_enabled\": true}]"
  [ -n "$inst" ] && inst_uuid="\"instance_uuid\": \"$inst\", " && md_uuid="\"uuid\": \"$inst\", "
  if [ "$where" = configdrive ]; then cd_nd=", \"network_data\": $nd"; else node_nd="\"network_data\": $nd, "; fi
  cat <<EOF
{"name": "$name", $inst_uuid$node_nd"properties": {}, "instance_info": {},
 "portgroups": [], "ports": $ports,
 "configdrive": {"meta_data": {$md_uuid"hostname": "$name.e2e.test",
   "public_keys": {"ops": "ssh-ed25519 AAAAe2e ops@$name"}}$cd_nd}}
EOF
}
{
  echo '['
  spec c1 52:54:00:77:00:11 port "$INST_C1" configdrive "$(v4 10.77.0.11)"; echo ','
  spec c2 52:54:00:77:00:12 port "$INST_C2" node "$(v4 10.77.0.12), $(v6 fd77::12)"; echo ','
  spec rc 52:54:00:78:00:02 port "$INST_RC" configdrive "$(v4 10.78.0.2)"; echo ','
  spec pc 52:54:00:77:05:02 port "" node "$(v4 10.77.5.2)"; echo ','
  spec rs 52:54:00:79:00:02 none "$INST_RS" configdrive "$(v4 10.79.0.2)"; echo ','
  spec c4 52:54:00:77:00:14 port "$INST_C4" node "$(dhcp4)"; echo ','
  spec v6 52:54:00:77:00:16 port "$INST_V6" node "$(slaac6)"
  echo ']'
} >"$T/nodes.json"
# Deployed while the servers run.
{ echo '['; spec c3 52:54:00:77:00:13 port "$INST_C3" configdrive "$(v4 10.77.0.13)"; echo ']'; } >"$T/late.json"

# S1's policy: the segment, where each client's MAC must be a port of its node and a
# client with an address Ironic does not know is found by its MAC; and the network routed
# to S1 by a static route.
mkdir -p "$T/pol1"
cat >"$T/pol1/segment.toml" <<'EOF'
[[zone]]
name = "segment"
cidrs = ["10.77.0.0/24", "fd77::/64"]
action = "allow"
verify_mac = true
identify_by_mac = true

[[zone]]
name = "static-routed"
cidrs = ["10.79.0.0/24"]
action = "allow"

# IPv6 link-local clients: always identified by their MAC on the interface they ask on.
[[zone]]
name = "link-local"
cidrs = ["fe80::/10"]
action = "allow"
EOF

# S2/S3's policy, laid out as Kubernetes mounts a ConfigMap (..data symlink swap).
# $1: "trusted" or "untrusted" (the proxy's address in trusted_proxies or not).
policy2() {
  local trust=""
  [ "$1" = trusted ] && trust='trusted_proxies = ["10.77.3.1/32"]'
  cat <<EOF
# Routed nodes: session tokens required, a small burst; a token answer may cross the
# router (one hop) and no more.
[[zone]]
name = "routed"
cidrs = ["10.78.0.0/24"]
action = "allow"
tokens = "required"
rate_limit = { per_second = 1, burst = 6 }
token_hop_limit = 2

# The reverse proxy's side.
[[zone]]
name = "proxies"
cidrs = ["10.77.3.0/24"]
action = "allow"
$trust

# Clients behind the proxy.
[[zone]]
name = "behind-proxy"
cidrs = ["10.77.5.0/24"]
action = "allow"

# The same-segment nodes, so that a believed forgery would be answered.
[[zone]]
name = "segment"
cidrs = ["10.77.0.0/24"]
action = "allow"
EOF
}
mkdir -p "$T/pol2/..v1"
policy2 trusted >"$T/pol2/..v1/policy.toml"
ln -s ..v1 "$T/pol2/..data"
ln -s ..data/policy.toml "$T/pol2/policy.toml"
chmod -R a+rX "$T/pol1" "$T/pol2"

# S5's policy: a token answer that dies at the first router.
mkdir -p "$T/pol5"
cat >"$T/pol5/hops.toml" <<'EOF'
[[zone]]
name = "routed"
cidrs = ["10.78.0.0/24"]
action = "allow"
token_hop_limit = 1
EOF
chmod -R a+rX "$T/pol5"

"$bin" policy check "$T/pol1" >/dev/null
"$bin" policy check "$T/pol2" >/dev/null
"$bin" policy check "$T/pol5" >/dev/null

# ---------------------------------------------------------------------------------------
# Processes.

# daemon NS NAME CMD...: run CMD in the namespace in the background, bounded in time; its
# PID (the same through every exec) lands in $T/NAME.pid, its output in $T/NAME.log.
daemon() {
  local ns=$1 name=$2
  shift 2
  pidfiles+=("$T/$name.pid")
  # shellcheck disable=SC2016 # $$, $0 and $@ belong to the inner shell
  ip netns exec "$P-$ns" timeout -k 5 "$((max_seconds + 30))" \
    sh -c 'echo $$ >"$0"; exec "$@"' "$T/$name.pid" "$@" >"$T/$name.log" 2>&1 &
}
pid_of() { cat "$T/$1.pid" 2>/dev/null; }

# Ironic in srv, on 127.0.0.1 and a port free in that namespace (the harness picks it).
# ironic OUT ERR ARGS...: the harness in srv, waited for in the background so that a signal
# is acted on at once (and the cleanup's output does not land in these files).
ironic() {
  local out=$1 err=$2
  shift 2
  nsx srv "$py" "$harness" --venv "$venv" "$@" >>"$out" 2>>"$err" &
  wait "$!"
}
ironic_failed() { # ironic_failed WHAT LOG: show the harness's and Ironic's last words, fail
  tail -n 20 "$2" >&2
  echo "--- Ironic log:" >&2
  tail -n 20 "$T/ironic/ironic.log" >&2 2>/dev/null
  not_ok "$1"
  exit 1
}
ironic "$T/ironic.env" "$T/ironic-start.log" start --state-dir "$T/ironic" --no-clean \
  --start-timeout 120 || ironic_failed "Ironic started in srv" "$T/ironic-start.log"
ironic_url=$(sed -n 's/^IRONIC_URL=//p' "$T/ironic.env")
[ -n "$ironic_url" ] || ironic_failed "the harness printed IRONIC_URL" "$T/ironic-start.log"
# enroll SPEC_FILE: create the nodes with their ports, deploy them to active with their
# configdrive and power them on; appends "<node uuid> <name>" lines to $T/enrolled.
enroll() { ironic "$T/enrolled" "$T/enroll.log" enroll --url "$ironic_url" --spec "$1" --concurrency 8; }
node_uuid() { awk -v n="$1" '$2 == n { print $1 }' "$T/enrolled"; }
enroll "$T/nodes.json" || ironic_failed "the nodes were enrolled and deployed in Ironic" "$T/enroll.log"
UUID_PC=$(node_uuid pc)
[ -n "$UUID_PC" ] || ironic_failed "Ironic named pc's node UUID" "$T/enroll.log"
n_nodes=$(wc -l <"$T/enrolled")

common_env=(IRONIC_URL="$ironic_url" TOKEN_KEY_FILE="$T/token.key" LOG_FORMAT=json LOG_LEVEL=info THREADS=1)

# S1: as the compose macvlan variant runs it: the entrypoint starts as root, adds the
# on-link route and fe80::a9fe:a9fe next to 169.254.169.254, and drops to uid 10001; the
# file capability binds port 80 on both metadata addresses.
daemon srv s1 env "${common_env[@]}" POLICY_DIR="$T/pol1" METADATA_LINK_LOCAL_ADDR=fe80::a9fe:a9fe \
  BIND_ADDR=169.254.169.254 BIND_PORT=80 ADMIN_ADDR=127.0.0.1:9180 \
  METADATA_ONLINK_SUBNETS=10.77.0.0/24 "$T/entrypoint.sh" "$bin" serve
# S2 and S3: two replicas sharing the token key, as uid 10001 from the start.
for s in s2:10.77.100.1:9181 s3:10.77.100.2:9182; do
  IFS=: read -r name addr admin <<<"$s"
  daemon srv "$name" setpriv --reuid="$run_as" --regid="$run_as" --clear-groups \
    env "${common_env[@]}" POLICY_DIR="$T/pol2" BIND_ADDR="$addr" BIND_PORT=8080 \
    ADMIN_ADDR="127.0.0.1:$admin" "$T/entrypoint.sh" "$bin" serve
done

# S5: token answers with a TTL of 1.
daemon srv s5 setpriv --reuid="$run_as" --regid="$run_as" --clear-groups \
  env "${common_env[@]}" POLICY_DIR="$T/pol5" BIND_ADDR=10.77.100.3 BIND_PORT=8080 \
  ADMIN_ADDR=127.0.0.1:9184 "$T/entrypoint.sh" "$bin" serve

# S4: S1's policy on the segment's IPv6 address.
daemon srv s4 setpriv --reuid="$run_as" --regid="$run_as" --clear-groups \
  env "${common_env[@]}" POLICY_DIR="$T/pol1" BIND_ADDR=fd77::fe BIND_PORT=8080 \
  ADMIN_ADDR=127.0.0.1:9183 "$T/entrypoint.sh" "$bin" serve

mkdir -p "$T/nginx"
cat >"$T/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
user nobody nogroup;
pid $T/nginx/nginx.pid;
error_log $T/nginx/error.log warn;
events { worker_connections 64; }
http {
  access_log $T/nginx/access.log;
  client_body_temp_path $T/nginx/body;
  proxy_temp_path $T/nginx/proxy;
  fastcgi_temp_path $T/nginx/fastcgi;
  uwsgi_temp_path $T/nginx/uwsgi;
  scgi_temp_path $T/nginx/scgi;
  server {
    listen 169.254.169.254:80;
    location / {
      proxy_pass http://10.77.100.1:8080;
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_connect_timeout 3s;
      proxy_read_timeout 5s;
    }
  }
}
EOF
daemon prx nginx nginx -e "$T/nginx/error.log" -p "$T/nginx" -c "$T/nginx/nginx.conf"

# /readyz answers 200 once the first inventory has been read from Ironic.
admin_ok() { nsx srv curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$1/readyz"; }
for a in s1:9180 s2:9181 s3:9182 s4:9183 s5:9184; do
  if ! wait_until 20 admin_ok "${a##*:}"; then
    echo "--- ${a%%:*} log:" >&2
    tail -n 20 "$T/${a%%:*}.log" >&2
    not_ok "${a%%:*} became ready"
    exit 1
  fi
done
nginx_up() { nsx prx curl -sS -m 2 -o /dev/null http://169.254.169.254/; }
wait_until 10 nginx_up || { cat "$T/nginx/error.log" >&2; not_ok "nginx started"; exit 1; }

# ---------------------------------------------------------------------------------------
# Requests.

# get NS URL [curl args...]: sets $status, $body and $headers.
get() {
  local ns=$1 url=$2
  shift 2
  status=$(nsx "$ns" curl -sS -m 5 --connect-timeout 3 -o "$T/body" -D "$T/headers" \
    -w '%{http_code}' "$@" "$url" 2>/dev/null) || true
  body=$(cat "$T/body" 2>/dev/null || true)
  headers=$(cat "$T/headers" 2>/dev/null || true)
  rm -f "$T/body" "$T/headers"
}
MD=http://169.254.169.254/openstack/latest/meta_data.json

# expect_node DESC UUID: the last answer was 200 with that node's meta_data.json.
expect_node() {
  if [ "$status" = 200 ] && grep -qF "\"uuid\": \"$2\"" <<<"$body"; then
    ok "$1"
  else
    not_ok "$1 (status $status, body ${body:0:120})"
  fi
}
expect_status() {
  if [ "$status" = "$2" ]; then ok "$1"; else not_ok "$1 (status $status, want $2, body ${body:0:120})"; fi
}
# audit_has NAME PATTERN...: some audit line of that server's log has every pattern. A
# request is audited just after its answer is written (pingora's logging phase): after a
# request, wait for its line with `wait_until 5 audit_has ...`.
audit_has() {
  local name=$1 line
  shift
  while IFS= read -r line; do
    local p all=1
    for p in "$@"; do grep -qF -- "$p" <<<"$line" || { all=0; break; }; done
    [ "$all" -eq 1 ] && return 0
  done < <(grep -F '"target":"audit"' "$T/$name.log")
  return 1
}
reloads() { # reloads ADMIN_PORT: the applied-reload counter (0 when absent)
  nsx srv curl -fsS -m 2 "http://127.0.0.1:$1/metrics" |
    awk '/^metadata_policy_reloads_total\{result="applied"\}/ {print $2; found=1} END {if (!found) print 0}'
}

echo "# DNAT by $dnat_tool; namespaces $P-*; Ironic at $ironic_url in $P-srv"

echo "# the servers' inventory is Ironic"
indexed=0
for a in s1:9180 s2:9181 s3:9182; do
  r=$(nsx srv curl -fsS -m 2 "http://127.0.0.1:${a##*:}/readyz" || true)
  if grep -qF "\"source\":\"ironic:$ironic_url" <<<"$r" && grep -qE "\"served_nodes\":${n_nodes}[,}]" <<<"$r"; then
    indexed=$((indexed + 1))
  else
    echo "# ${a%%:*} /readyz: $r"
  fi
done
if [ "$indexed" -eq 3 ]; then
  ok "S1, S2 and S3 read Ironic ($ironic_url) and serve the $n_nodes nodes deployed there"
else
  not_ok "S1, S2 and S3 read Ironic and serve its $n_nodes nodes (only $indexed do)"
fi

echo "# a. same segment (macvlan-style 169.254.169.254, on-link route from the entrypoint)"
s1_pid=$(pid_of s1)
if grep -q "^Uid:[[:space:]]*${run_as}[[:space:]]" "/proc/$s1_pid/status" &&
  grep -q '^CapBnd:[[:space:]]*0000000000002400$' "/proc/$s1_pid/status"; then
  ok "S1 runs as uid $run_as with only CAP_NET_BIND_SERVICE and CAP_NET_RAW in its bounding set, on port 80"
else
  not_ok "S1 runs as uid $run_as with only CAP_NET_BIND_SERVICE and CAP_NET_RAW ($(grep -E '^(Uid|CapBnd)' "/proc/$s1_pid/status" | tr '\n' ' '))"
fi
if nsx srv ip route show 10.77.0.0/24 | grep -q 'dev eth0 scope link'; then
  ok "the entrypoint added the on-link route to the nodes' network"
else
  not_ok "the entrypoint added the on-link route to the nodes' network"
fi
get c1 "$MD"; expect_node "c1 (52:54:00:77:00:11, 10.77.0.11) gets its own meta_data.json" "$INST_C1"
get c2 "$MD"; expect_node "c2 (52:54:00:77:00:12, 10.77.0.12) gets its own meta_data.json" "$INST_C2"
get c2 http://169.254.169.254/openstack/latest/network_data.json
if [ "$status" = 200 ] && grep -qF '"ip_address": "10.77.0.12"' <<<"$body" &&
  grep -qF '"ip_address": "fd77::12"' <<<"$body"; then
  ok "c2's network_data.json is its node.network_data in Ironic (10.77.0.12 and fd77::12)"
else
  not_ok "c2's network_data.json carries 10.77.0.12 and fd77::12 (status $status, body ${body:0:200})"
fi
get c1 http://169.254.169.254/latest/meta-data/hostname
if [ "$status" = 200 ] && [ "$body" = "c1.e2e.test" ]; then ok "c1's EC2 hostname is its own"; else not_ok "c1's EC2 hostname (status $status, body $body)"; fi
get c3 "$MD"; expect_status "c3 (an address no node claims) is refused with 404" 404
get c1 "$MD" -H 'X-Forwarded-For: 10.77.0.12'
expect_node "c1 forging X-Forwarded-For (no trusted proxy) still gets c1's data" "$INST_C1"
get c1 http://169.254.169.254:9180/healthz
if [ "$status" = 000 ]; then ok "the admin listener is not reachable from the segment"; else not_ok "the admin listener is not reachable from the segment (status $status)"; fi
c1_mac=$(nsx srv ip neigh show 10.77.0.11 dev eth0 | awk '{for (i = 1; i < NF; i++) if ($i == "lladdr") print $(i + 1)}')
if [ "$c1_mac" = 52:54:00:77:00:11 ]; then ok "on the same segment the server's neighbour table holds c1's own MAC"; else not_ok "neighbour entry for c1 (got '$c1_mac')"; fi
if nsx srv env ADMIN_ADDR=127.0.0.1:9180 "$T/healthcheck.sh" && nsx srv env ADMIN_ADDR=0.0.0.0:9180 "$T/healthcheck.sh"; then
  ok "the image's health check passes against the admin listener"
else
  not_ok "the image's health check passes against the admin listener"
fi
if ! nsx srv env ADMIN_ADDR=127.0.0.1:9 "$T/healthcheck.sh" 2>/dev/null; then
  ok "the health check fails when nothing answers"
else
  not_ok "the health check fails when nothing answers"
fi
# An unchanged policy is not swapped (nor counted) again, so the log is the witness.
kill -HUP "$s1_pid"
s1_hup() { grep -qF 'SIGHUP received, reloading the policy' "$T/s1.log"; }
if wait_until 10 s1_hup && kill -0 "$s1_pid" && get c1 "$MD" && [ "$status" = 200 ]; then
  ok "SIGHUP (the systemd unit's ExecReload) re-reads the policy; the server keeps serving"
else
  not_ok "SIGHUP re-reads the policy and the server keeps serving (status $status)"
fi

echo "# a2. L2-verified identity (S1 and S4: verify_mac and identify_by_mac on the segment)"
UUID_C2=$(node_uuid c2)
get c4 "$MD"
expect_node "c4 (52:54:00:77:00:14, a DHCP address Ironic does not know) is found by its port's MAC" "$INST_C4"
get c4 http://169.254.169.254/latest/meta-data/local-ipv4
if [ "$status" = 200 ] && [ "$body" = 10.77.0.14 ]; then ok "c4's EC2 local-ipv4 is the address it asked from"; else not_ok "c4's EC2 local-ipv4 (status $status, body $body)"; fi
v6md="http://[fd77::fe]:8080/openstack/latest/meta_data.json"
get c2 "$v6md" -g
expect_node "over IPv6 c2 (fd77::12) is verified by its neighbour-discovery MAC and gets its node" "$INST_C2"
# c3 takes c2's addresses with its own MAC. Its neighbour caches are flushed, so its first
# packet from the borrowed address is an ARP request / neighbour solicitation that makes the
# service's kernel map the address to c3's MAC, as a real impostor's would.
spoof_refused() { # spoof_refused SERVER ADDRESS URL DESC
  local server=$1 addr=$2 url=$3 desc=$4
  nsx c3 ip neigh flush dev eth0
  get c3 "$url" -g --interface "$addr"
  if [ "$status" = 404 ] && [ "$body" = "no metadata for this address" ] &&
    wait_until 5 audit_has "$server" '"reason":"mac_mismatch"' "\"client\":\"$addr\"" "\"node\":\"$UUID_C2\"" 'neighbour MAC 52:54:00:77:00:13 is not a port of node'; then
    ok "$desc: 404, audited as mac_mismatch naming c3's MAC and c2's node"
  else
    not_ok "$desc (status $status, body $body; audit: $(grep -F '"target":"audit"' "$T/$server.log" | tail -n 1))"
  fi
}
nsx c3 ip addr add 10.77.0.12/32 dev eth0
spoof_refused s1 10.77.0.12 "$MD" "c3 sending from c2's 10.77.0.12 with its own MAC is refused"
nsx c3 ip addr del 10.77.0.12/32 dev eth0
nsx c3 ip addr add fd77::12/128 dev eth0 nodad
spoof_refused s4 fd77::12 "$v6md" "c3 sending from c2's fd77::12 with its own MAC is refused"
nsx c3 ip addr del fd77::12/128 dev eth0
# The service's kernel forgets the impostor; c2 is answered again.
nsx srv ip neigh del 10.77.0.12 dev eth0 2>/dev/null || true
nsx srv ip neigh del fd77::12 dev eth0 2>/dev/null || true
get c2 "$MD"; expect_node "after the impostor left, c2 gets its own node again" "$INST_C2"

echo "# a3. IPv6-only clients on the segment, at fe80::a9fe:a9fe (S1's second listener)"
ll_md='http://[fe80::a9fe:a9fe%eth0]/openstack/latest/meta_data.json'
if nsx srv ip -6 -o addr show dev eth0 | grep -q ' inet6 fe80::a9fe:a9fe/64'; then
  ok "the entrypoint put fe80::a9fe:a9fe on the segment next to 169.254.169.254"
else
  not_ok "the entrypoint put fe80::a9fe:a9fe on the segment ($(nsx srv ip -6 -o addr show dev eth0 | tr '\n' ' '))"
fi
if [ -z "$(nsx v6a ip -4 -o addr show dev eth0)" ]; then ok "v6a has no IPv4 address"; else not_ok "v6a has no IPv4 address"; fi
get v6a "$ll_md" -g
expect_node "v6a (fe80::16, 52:54:00:77:00:16) is found by its port's MAC in Ironic and gets its node" "$INST_V6"
get v6a "http://[fe80::a9fe:a9fe%eth0]/latest/meta-data/instance-id" -g
if [ "$status" = 200 ] && [ "$body" = "$INST_V6" ]; then ok "v6a's EC2 instance-id is its own"; else not_ok "v6a's EC2 instance-id (status $status, body $body)"; fi
# v6b takes v6a's place on the link with the same link-local address and its own MAC.
ip -n "$P-v6a" link set eth0 down
nsx srv ip -6 neigh del fe80::16 dev eth0 2>/dev/null || true
ip -n "$P-v6b" link set eth0 up
ll_only v6b
get v6b "$ll_md" -g
if [ "$status" = 404 ] && [ "$body" = "no metadata for this address" ] &&
  wait_until 5 audit_has s1 '"client":"fe80::16"' '"reason":"unknown_address"' 'nor MAC 52:54:00:77:00:17'; then
  ok "v6b with v6a's link-local address and another MAC gets 404, audited with its MAC"
else
  not_ok "v6b with v6a's link-local address is refused (status $status, body $body; audit: $(grep -F '"target":"audit"' "$T/s1.log" | tail -n 1))"
fi
ip -n "$P-v6b" link set eth0 down

echo "# a4. defences of the segment (S1)"
get c1 "$MD" -H 'Host: evil.example'
if [ "$status" = 403 ] && [ "$body" = "host not allowed" ]; then
  ok "a request naming another host (DNS rebinding) is refused with 403"
else
  not_ok "a request naming another host is refused (status $status, body $body)"
fi
# An impostor joins the segment and claims 169.254.169.254 with gratuitous ARP.
ip -n "$P-imp" link set eth0 up
nsx imp sysctl -qw net.ipv4.ip_nonlocal_bind=1
t0=$(date +%s.%N)
nsx imp arping -q -U -c 2 -s 169.254.169.254 -I eth0 169.254.169.254 || true
impostor_seen() { audit_has s1 '"event":"impostor"' '"mac":"52:54:00:77:00:66"' '"kind":"gratuitous_arp"'; }
if wait_until 5 impostor_seen; then
  t1=$(grep -F '"event":"impostor"' "$T/s1.log" | grep -F '"kind":"gratuitous_arp"' | head -n 1 |
    sed -n 's/.*"timestamp":"\([^"]*\)".*/\1/p')
  lag=$(python3 -c "import datetime,sys; t=datetime.datetime.fromisoformat(sys.argv[1].replace('Z','+00:00')).timestamp(); print(f'{t - float(sys.argv[2]):.3f}')" "$t1" "$t0")
  if python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 1.0 else 1)" "$lag"; then
    ok "arping -U -s 169.254.169.254 from another MAC is reported within 1 s ($lag s), naming the MAC"
  else
    not_ok "arping -U from an impostor is reported within 1 s (took $lag s)"
  fi
else
  not_ok "arping -U from an impostor is reported (audit: $(grep -F '"target":"audit"' "$T/s1.log" | tail -n 1))"
fi
r=$(nsx srv curl -fsS -m 2 http://127.0.0.1:9180/readyz || true)
if grep -qF 'impostor: MAC 52:54:00:77:00:66 claims 169.254.169.254' <<<"$r"; then
  ok "/readyz warns of the impostor's MAC"
else
  not_ok "/readyz warns of the impostor ($r)"
fi
# The same for fe80::a9fe:a9fe: its duplicate-address detection is a claim too.
ip -n "$P-imp" addr add fe80::a9fe:a9fe/64 dev eth0
impostor6_seen() { audit_has s1 '"event":"impostor"' '"mac":"52:54:00:77:00:66"' '"address":"fe80::a9fe:a9fe"'; }
if wait_until 5 impostor6_seen; then
  ok "an impostor claiming fe80::a9fe:a9fe (neighbour discovery) is reported"
else
  not_ok "an impostor claiming fe80::a9fe:a9fe is reported (audit: $(grep -F '"event":"impostor"' "$T/s1.log" | tail -n 1))"
fi
ip -n "$P-imp" link set eth0 down
impostors=$(nsx srv curl -fsS -m 2 http://127.0.0.1:9180/metrics | awk '/^metadata_impostor_frames_total/ {n += $2} END {print n + 0}')
if [ "${impostors:-0}" -ge 2 ]; then ok "metadata_impostor_frames_total counts them ($impostors)"; else not_ok "metadata_impostor_frames_total counts them ($impostors)"; fi

echo "# b. routed + DNAT (rtr: 169.254.169.254:80 -> 10.77.100.1:8080, no SNAT)"
get rc "$MD"; expect_status "rc without a session token is refused with 401 (zone routed: tokens required)" 401
if wait_until 5 audit_has s2 '"client":"10.78.0.2"' '"zone":"routed"' '"peer":"10.78.0.2"'; then
  ok "the service saw rc's own address 10.78.0.2 through the router (audit line)"
else
  not_ok "the service saw rc's own address through the router (audit: $(grep -F '"target":"audit"' "$T/s2.log" | tail -n 1))"
fi
get rc http://169.254.169.254/latest/api/token -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300'
token=$body
expect_status "rc gets a session token through the DNAT" 200
get rc "$MD" -H "X-aws-ec2-metadata-token: $token"
expect_node "rc with its token gets its own node's meta_data.json" "$INST_RC"
get rc http://10.77.100.3:8080/latest/api/token -X PUT -H 'X-aws-ec2-metadata-token-ttl-seconds: 300' -m 3
if [ "$status" = 000 ] && [ -z "$body" ]; then
  ok "with token_hop_limit = 1 the token answer dies at the router: rc gets nothing (the zone above, = 2, gave one)"
else
  not_ok "with token_hop_limit = 1 rc gets no token (status $status, body ${body:0:40})"
fi
get rc http://10.77.100.2:8080/openstack/latest/meta_data.json -H "X-aws-ec2-metadata-token: $token"
expect_node "a second replica sharing TOKEN_KEY_FILE accepts that token" "$INST_RC"
get rc http://10.77.100.2:8080/openstack/latest/meta_data.json -H "X-aws-ec2-metadata-token: ${token}x"
expect_status "a tampered token is refused with 401" 401
n429=0
sent=0
for _ in 1 2 3 4 5 6 7 8 9 10; do
  sent=$((sent + 1))
  get rc "$MD" -H "X-aws-ec2-metadata-token: $token"
  if [ "$status" = 429 ]; then n429=$sent; break; fi
done
if [ "$n429" -gt 0 ] && grep -qi '^retry-after:' <<<"$headers"; then
  ok "the routed zone's burst of 6 runs out: request $((n429 + 3)) gets 429 with Retry-After"
else
  not_ok "the routed zone's rate limit (no 429 in $sent more requests)"
fi

echo "# b2. static route (rtr forwards 169.254.169.254 to srv untranslated)"
get rs "$MD"; expect_node "rs (10.79.0.2), routed to the service host, gets its own node" "$INST_RS"

echo "# c. reverse proxy (nginx in prx, X-Forwarded-For \$proxy_add_x_forwarded_for)"
get pc "$MD"
expect_node "behind the trusted proxy pc gets its own node (uuid: the node UUID Ironic assigned)" "$UUID_PC"
get pc "$MD" -H 'X-Forwarded-For: 10.77.0.11'
expect_node "pc forging X-Forwarded-For: 10.77.0.11 through the proxy still gets pc's node" "$UUID_PC"
get pc "$MD" -H 'X-Forwarded-For: 10.77.0.11, 10.77.3.1'
expect_node "pc forging a chain that ends in the proxy's address still gets pc's node" "$UUID_PC"

# Take the proxy out of trusted_proxies the way Kubernetes updates a ConfigMap volume: a
# new ..vN directory and an atomic rename of the ..data symlink. No signal is sent.
before=$(reloads 9181)
mkdir "$T/pol2/..v2"
policy2 untrusted >"$T/pol2/..v2/policy.toml"
chmod -R a+rX "$T/pol2/..v2"
ln -s ..v2 "$T/pol2/..data_tmp"
mv -T "$T/pol2/..data_tmp" "$T/pol2/..data"
rm -rf "$T/pol2/..v1"
s2_reloaded() { [ "$(reloads 9181)" -gt "$before" ]; }
if wait_until 15 s2_reloaded; then
  ok "the ConfigMap-style ..data symlink swap is picked up without a signal"
else
  not_ok "the ConfigMap-style ..data symlink swap is picked up without a signal"
fi
get pc "$MD"; expect_status "with the proxy no longer trusted its own address is used: 404" 404
if wait_until 5 audit_has s2 '"client":"10.77.3.1"' '"zone":"proxies"'; then
  ok "the refusal names the proxy 10.77.3.1 as the client (the header was not read)"
else
  not_ok "the refusal names the proxy as the client (audit: $(grep -F '"target":"audit"' "$T/s2.log" | tail -n 1))"
fi
get pc "$MD" -H 'X-Forwarded-For: 10.77.0.11'
expect_status "a forged X-Forwarded-For through the untrusted proxy does not become c1: 404" 404

echo "# d. scripts/setup-network.sh on a host of the segment (h)"
setup() { nsx h "$repo/scripts/setup-network.sh" --env-file "$T/h.env" --no-token-key "$@"; }
if out=$(setup 2>&1) && grep -qx 'METADATA_PARENT_IF=eth0' "$T/h.env" &&
  grep -qx 'METADATA_ONLINK_SUBNETS=10.77.0.0/24' "$T/h.env"; then
  ok "it finds the default-route interface and its network and writes them to the env file"
else
  not_ok "setup-network.sh writes the env file ($out; $(tr '\n' ' ' <"$T/h.env" 2>/dev/null))"
fi
nsx h ip route add 169.254.169.254/32 dev eth0
get h "$MD" # fills h's neighbour table the way any earlier contact would
if out=$(setup --dry-run 2>&1); then
  not_ok "it refuses when 169.254.169.254 answers ARP on the segment (passed: $out)"
elif [ "$(wc -l <<<"$out")" -eq 1 ] && grep -q 'already answers ARP' <<<"$out"; then
  ok "it refuses, with one message, when 169.254.169.254 is in the neighbour table: $out"
else
  not_ok "it refuses when 169.254.169.254 answers ARP ($out)"
fi
nsx h ip neigh flush dev eth0
if setup --dry-run >/dev/null 2>&1 && ! out=$(setup --dry-run --probe 2>&1) && grep -q 'answered an ARP probe' <<<"$out"; then
  ok "with --probe it refuses when an ARP probe is answered: $out"
else
  not_ok "with --probe it refuses when an ARP probe is answered ($out)"
fi
if out=$(setup --dry-run --ipv6 2>&1) && grep -qF 'METADATA_LINK_LOCAL_ADDR=fe80::a9fe:a9fe' <<<"$out"; then
  ok "with --ipv6 it would also serve fe80::a9fe:a9fe (METADATA_LINK_LOCAL_ADDR)"
else
  not_ok "with --ipv6 it would also serve fe80::a9fe:a9fe ($out)"
fi
get h 'http://[fe80::a9fe:a9fe%eth0]/' -g # h learns S1's fe80::a9fe:a9fe by neighbour discovery
if ! out=$(setup --dry-run --ipv6 2>&1) && grep -q 'already answers neighbour discovery' <<<"$out"; then
  ok "with --ipv6 it refuses when fe80::a9fe:a9fe answers on the segment: $out"
else
  not_ok "with --ipv6 it refuses when fe80::a9fe:a9fe answers on the segment ($out)"
fi
nsx h ip neigh flush dev eth0
nsx h ip addr add 169.254.169.254/32 dev eth0
if ! out=$(setup --dry-run 2>&1) && grep -q 'already configured on this host' <<<"$out"; then
  ok "it refuses when 169.254.169.254 is configured on this host: $out"
else
  not_ok "it refuses when 169.254.169.254 is configured on this host ($out)"
fi
# h gives the address back: on the segment only srv may answer for it.
nsx h ip addr del 169.254.169.254/32 dev eth0

echo "# e. a node deployed in Ironic while the servers run"
# c3 was refused above. A request from an unknown address makes the server sweep Ironic
# again (at most once per address in 10 s), so c3 is answered soon after its deployment.
c3_answered() { get c3 "$MD"; [ "$status" = 200 ] && grep -qF "\"uuid\": \"$INST_C3\"" <<<"$body"; }
if ! enroll "$T/late.json"; then
  tail -n 20 "$T/enroll.log" >&2
  not_ok "c3 was enrolled and deployed in Ironic"
elif wait_until 30 c3_answered; then
  ok "c3, deployed in Ironic after the servers started, gets its own meta_data.json"
else
  not_ok "c3, deployed in Ironic after the servers started, gets its own meta_data.json (status $status, body ${body:0:120})"
fi

# ---------------------------------------------------------------------------------------
for name in s1 s2 s3 s4; do
  if ! kill -0 "$(pid_of "$name")" 2>/dev/null; then not_ok "$name still running at the end"; fi
done
echo "# $((SECONDS - started)) s"
summary_done=1
echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
