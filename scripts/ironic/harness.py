#!/usr/bin/env python3
"""Run a real OpenStack Ironic on 127.0.0.1 for end-to-end tests, and drive it.

Ironic runs as the all-in-one `ironic` process (API + conductor, rpc_transport
= none) with sqlite and fake-hardware, from the venv made by setup-venv.sh
(default .venv-ironic at the repository top; override with --venv or
$IRONIC_VENV). Uses only the Python standard library; only 127.0.0.1 is
ever contacted.

Server:
  harness.py start [--state-dir DIR] [--auth noauth|http_basic]
                   [--user U --password P] [--no-secrets] [--no-clean]
      Prints IRONIC_URL=..., IRONIC_PID=..., IRONIC_STATE_DIR=... (also
      written to DIR/env). --no-secrets leaves show_instance_secrets at its
      default, so instance_info.configdrive reads back as "******".
  harness.py stop --state-dir DIR [--keep]      (the state dir goes unless --keep)
  harness.py run [start options] -- CMD ARGS...
      start, run CMD with IRONIC_URL etc. in its environment, stop.

Client (--url defaults to $IRONIC_URL, --user/--password to
$IRONIC_USER/$IRONIC_PASSWORD; the API version used is the server's max):
  harness.py spec --count N [--prefix P] [--start I]   print node specs (JSON)
  harness.py enroll (--count N [--prefix P] [--start I] | --spec FILE)
                    [--concurrency K] [--timeout S]
      Create nodes (fake-hardware, network_data, portgroups, ports), move them
      enroll -> manageable -> available -> active with their configdrive dict,
      then power them on (fake deploy leaves power_state null). Generated
      node i is a single NIC (i % 3 == 0), an 802.3ad bond portgroup (1) or a
      VLAN on a NIC (2); MACs 52:54:II:II:II:NN derive from i.
  harness.py delete (NODE... | --all) [--undeploy-only]
      Undeploy (target "deleted") down to available, then DELETE the node.
  harness.py dump [--out FILE]   {"nodes": [...], "ports": [...], "portgroups": [...]}
  harness.py selftest            end-to-end check of all of the above
"""

import argparse
import base64
import concurrent.futures
import hashlib
import http.client
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

TOP = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(TOP / "scripts" / "lib"))
from service import Checks, free_port  # noqa: E402
LOCAL_HOSTS = ("127.0.0.1", "localhost")
FAILED_STATES = {"deploy failed", "clean failed", "error", "inspect failed",
                 "adopt failed", "rescue failed", "service failed"}


def log(msg):
    print(f"harness: {msg}", file=sys.stderr, flush=True)


def die(msg):
    log(f"ERROR: {msg}")
    sys.exit(1)


# --------------------------------------------------------------------------
# Server


def venv_dir(arg):
    venv = Path(arg or os.environ.get("IRONIC_VENV") or TOP / ".venv-ironic")
    if not (venv / "bin" / "ironic").is_file():
        die(f"no ironic in {venv}: run scripts/ironic/setup-venv.sh first")
    return venv


def bcrypt_hash(venv, password):
    code = ("import bcrypt, sys; print(bcrypt.hashpw(sys.stdin.read().encode(),"
            " bcrypt.gensalt(rounds=4)).decode())")  # low cost: checked per request
    out = subprocess.run([venv / "bin" / "python", "-c", code], input=password,
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def write_config(state, port, auth, clean=True):
    auth_lines = f"auth_strategy = {auth}\n"
    if auth == "http_basic":
        auth_lines += f"http_basic_auth_user_file = {state / 'htpasswd'}\n"
    (state / "ironic.conf").write_text(f"""\
[DEFAULT]
{auth_lines}rpc_transport = none
host = ironic-harness
state_path = {state}
log_file = {state / 'ironic.log'}
enabled_hardware_types = fake-hardware
enabled_boot_interfaces = fake
enabled_deploy_interfaces = fake
enabled_management_interfaces = fake
enabled_power_interfaces = fake
enabled_vendor_interfaces = fake
enabled_console_interfaces = no-console
enabled_network_interfaces = noop
default_network_interface = noop

[api]
host_ip = 127.0.0.1
port = {port}

[conductor]
automated_clean = {clean}
max_concurrent_deploy = 10000
max_concurrent_clean = 10000

[database]
connection = sqlite:///{state / 'ironic.sqlite'}
# throw-away test data: no fsync per commit
sqlite_synchronous = false

[nova]
send_power_notifications = false

[dhcp]
dhcp_provider = none

[oslo_policy]
policy_file = {state / 'policy.yaml'}
""")


def group_pids(pgid):
    """Live (non-zombie) processes of a process group, from /proc."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(entry))
    return pids


def listener_owned_by(port, pgid):
    """True if the socket listening on 127.0.0.1:port belongs to group pgid."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        addr, lport = f[1].split(":")
        if f[3] == "0A" and int(lport, 16) == port and addr in ("0100007F", "00000000"):
            inodes.add(f"socket:[{f[9]}]")
    for pid in group_pids(pgid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") in inodes:
                    return True
            except OSError:
                pass
    return False


def log_tail(state, lines=40):
    path = state / "ironic.log"
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def log_size(state):
    path = state / "ironic.log"
    return path.stat().st_size if path.exists() else 0


def wait_ready(proc, port, state, deadline, log_offset=None):
    """'ok' once Ironic answers GET / on port, 'port-in-use', or 'failed'.

    log_offset: size of ironic.log before proc started (only later lines are
    searched for a bind error); None searches the log's tail.
    """
    while time.monotonic() < deadline:
        if log_offset is None:
            recent = log_tail(state, 200)
        else:
            with open(state / "ironic.log", "rb") as f:
                f.seek(log_offset)
                recent = f.read().decode(errors="replace")
        if "Address already in use" in recent:
            return "port-in-use"
        if proc.poll() is not None:
            return "failed"
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/")
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            if resp.status == 200 and b"Ironic" in body:
                if listener_owned_by(port, proc.pid):
                    return "ok"
                return "port-in-use"  # someone else answers on our port
        except OSError:
            pass
        time.sleep(0.1)
    return "failed"


def launch(venv, state, port, timeout, extra_configs=()):
    """Start `ironic` on state/ironic.conf (which names `port`) and any further config files,
    in a process group of its own logging to state/ironic.log, its pid in state/ironic.pid;
    wait for it as wait_ready does. (Popen, 'ok' | 'port-in-use' | 'failed'); unless 'ok',
    the process is stopped again."""
    cmd = [venv / "bin" / "ironic", "--config-file", state / "ironic.conf"]
    for conf in extra_configs:
        cmd += ["--config-file", conf]
    offset = log_size(state)
    with open(state / "ironic.log", "ab") as logf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=state,
                                start_new_session=True)
    (state / "ironic.pid").write_text(f"{proc.pid}\n")
    result = "failed"
    try:
        result = wait_ready(proc, port, state, time.monotonic() + timeout, offset)
    finally:  # on Ctrl-C too: leave nothing running
        if result != "ok":
            stop_group(proc.pid)
            proc.wait()
            (state / "ironic.pid").unlink(missing_ok=True)
    return proc, result


def stop_group(pgid, timeout=30.0):
    """SIGTERM the process group we started, then SIGKILL after timeout."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        if not group_pids(pgid):
            return True
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return True
        end = time.monotonic() + wait
        while time.monotonic() < end:
            if not group_pids(pgid):
                return True
            time.sleep(0.1)
    return not group_pids(pgid)


def start_server(args):
    """Start Ironic; returns (state_dir, Popen, env dict)."""
    venv = venv_dir(args.venv)
    if args.auth == "http_basic" and not (args.user and args.password):
        die("--auth http_basic needs --user and --password")
    if args.user and (":" in args.user or "\n" in args.user):
        die("--user must not contain ':' or a newline")
    state = Path(args.state_dir or tempfile.mkdtemp(prefix="ironic-harness-")).resolve()
    state.mkdir(parents=True, exist_ok=True)
    if (state / "ironic.sqlite").exists():
        die(f"{state} already holds an Ironic database: use a fresh state dir")
    rule = '"!"' if args.no_secrets else '"@"'
    (state / "policy.yaml").write_text(f'"show_instance_secrets": {rule}\n')
    if args.auth == "http_basic":
        (state / "htpasswd").write_text(f"{args.user}:{bcrypt_hash(venv, args.password)}\n")
    clean = not getattr(args, "no_clean", False)
    write_config(state, 0, args.auth, clean)
    dbsync = subprocess.run([venv / "bin" / "ironic-dbsync", "--config-file", state / "ironic.conf",
                             "create_schema"], capture_output=True, text=True)
    if dbsync.returncode:
        die(f"ironic-dbsync create_schema failed:\n{dbsync.stdout}{dbsync.stderr}")
    t0 = time.monotonic()
    for attempt in range(1, 6):
        port = free_port()
        write_config(state, port, args.auth, clean)
        proc, result = launch(venv, state, port, args.start_timeout)
        if result == "ok":
            break
        if result == "failed":
            die(f"Ironic did not come up within {args.start_timeout}s; log tail:\n{log_tail(state)}")
        log(f"port {port} was taken (attempt {attempt}), retrying with another")
    else:
        die("could not get a free port after 5 attempts")
    env = {"IRONIC_URL": f"http://127.0.0.1:{port}", "IRONIC_PID": str(proc.pid),
           "IRONIC_STATE_DIR": str(state),
           "IRONIC_API_VERSION": Client(f"http://127.0.0.1:{port}", args.user, args.password).version}
    if args.auth == "http_basic":
        env.update(IRONIC_USER=args.user, IRONIC_PASSWORD=args.password)
    (state / "env").write_text(env_lines(env))
    log(f"Ironic ready in {time.monotonic() - t0:.1f}s ({args.auth}, "
        f"secrets {'masked' if args.no_secrets else 'shown'}); log: {state / 'ironic.log'}")
    return state, proc, env


def stop_server(state, keep=True):
    pidfile = state / "ironic.pid"
    if not pidfile.exists():
        die(f"no ironic.pid in {state}")
    pid = int(pidfile.read_text())
    if not stop_group(pid):
        die(f"processes of group {pid} survived SIGKILL: {group_pids(pid)}")
    pidfile.unlink()
    log(f"Ironic (pid {pid}) stopped")
    if not keep:
        remove_state(state)


def remove_state(state):
    for path in sorted(state.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    state.rmdir()


def env_lines(env):
    """KEY=VALUE lines that a shell can source."""
    return "".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items())


def cmd_start(args):
    _, _, env = start_server(args)
    sys.stdout.write(env_lines(env))


def cmd_stop(args):
    stop_server(Path(args.state_dir), keep=args.keep)


def cmd_run(args):
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        die("run needs a command after --")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    state, proc, env = start_server(args)
    try:
        rc = subprocess.call(cmd, env={**os.environ, **env})
    finally:
        stop_server(state, keep=args.keep)
        proc.wait()  # reap it: we are its parent
    sys.exit(rc)


# --------------------------------------------------------------------------
# Client


class IronicError(Exception):
    def __init__(self, status, what, body):
        message = body.decode(errors="replace")
        try:  # {"error_message": "<json string with faultstring>"}
            inner = json.loads(message)["error_message"]
            message = json.loads(inner).get("faultstring", inner)
        except (ValueError, KeyError, TypeError, AttributeError):
            pass
        super().__init__(f"{what} -> {status}: {message}")
        self.status = status


class Client:
    """Raw REST client: one keep-alive connection per thread, retries on busy."""

    def __init__(self, url, user=None, password=None):
        parsed = urllib.parse.urlsplit(url or "")
        if parsed.scheme != "http" or parsed.hostname not in LOCAL_HOSTS:
            die(f"refusing URL {url!r}: only http://127.0.0.1:PORT is allowed")
        self.host, self.port = "127.0.0.1", parsed.port or 80
        self.headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if user:
            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.local = threading.local()
        self.version = self.request("GET", "/")["default_version"]["version"]
        self.headers["X-OpenStack-Ironic-API-Version"] = self.version

    def raw(self, method, path, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        headers = {k: v for k, v in {**self.headers, **(headers or {})}.items() if v is not None}
        for attempt in (1, 2):
            conn = getattr(self.local, "conn", None)
            if conn is None:
                conn = self.local.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, OSError):
                conn.close()
                self.local.conn = None
                if attempt == 2:
                    raise

    def request(self, method, path, body=None, busy_timeout=120.0):
        if path.startswith("http"):  # `next` links are absolute
            parsed = urllib.parse.urlsplit(path)
            if parsed.hostname not in LOCAL_HOSTS:
                die(f"refusing to follow {path}")
            path = parsed.path + (f"?{parsed.query}" if parsed.query else "")
        end, delay = time.monotonic() + busy_timeout, 0.05
        while True:
            status, data = self.raw(method, path, body)
            if status < 300:
                return json.loads(data) if data else None
            err = IronicError(status, f"{method} {path}", data)
            busy = status == 503 or (status == 409 and "locked" in str(err).lower())
            if not busy or time.monotonic() > end:
                raise err
            time.sleep(delay)
            delay = min(delay * 2, 1.0)

    def list_all(self, path):
        items, key = [], path.split("?")[0].rsplit("/", 1)[1]
        while path:
            page = self.request("GET", path)
            items.extend(page[key])
            path = page.get("next")
        return items


def client_from(args):
    return Client(args.url or os.environ.get("IRONIC_URL"),
                  args.user or os.environ.get("IRONIC_USER"),
                  args.password or os.environ.get("IRONIC_PASSWORD"))


# --------------------------------------------------------------------------
# Node specs


def mac(index, nic):
    return "52:54:%02x:%02x:%02x:%02x" % ((index >> 16) & 255, (index >> 8) & 255, index & 255, nic)


def fake_ssh_key(name):
    blob = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20" + hashlib.sha256(name.encode()).digest()
    return f"ssh-ed25519 {base64.b64encode(blob).decode()} {name}@harness"


def node_spec(index, prefix="node-"):
    """Node number `index`: kind phy (index % 3 == 0), bond (1) or vlan (2)."""
    name = f"{prefix}{index:05d}"
    kind = ("phy", "bond", "vlan")[index % 3]
    host = index + 256  # 198.18.1.0 onwards: clear of the gateway and DNS addresses
    ip4 = ".".join(str(b) for b in (198, 18 + (host >> 16) % 2, (host >> 8) & 255, host & 255))
    dns = [{"type": "dns", "address": "198.18.0.53"}]
    route4 = [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": "198.18.0.1"}]
    v4 = {"id": "network0", "type": "ipv4", "network_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, "net0")),
          "ip_address": ip4, "netmask": "255.254.0.0", "routes": route4, "services": dns}
    links = [{"id": "iface0", "type": "phy", "ethernet_mac_address": mac(index, 0), "mtu": 1500}]
    ports = [{"address": mac(index, 0), "name": f"{name}-eth0", "pxe_enabled": True}]
    portgroups, networks = [], [dict(v4, link="iface0")]
    if kind == "bond":
        links = [
            {"id": "iface0", "type": "phy", "ethernet_mac_address": mac(index, 0), "mtu": 9000},
            {"id": "iface1", "type": "phy", "ethernet_mac_address": mac(index, 1), "mtu": 9000},
            {"id": "bond0", "type": "bond", "ethernet_mac_address": mac(index, 0), "mtu": 9000,
             "bond_mode": "802.3ad", "bond_links": ["iface0", "iface1"],
             "bond_miimon": 100, "bond_xmit_hash_policy": "layer3+4"},
        ]
        portgroups = [{"name": f"{name}-bond0", "address": mac(index, 0), "mode": "802.3ad",
                       "properties": {"miimon": "100", "xmit_hash_policy": "layer3+4"}}]
        ports = [{"address": mac(index, n), "name": f"{name}-eth{n}", "pxe_enabled": n == 0,
                  "portgroup": f"{name}-bond0"} for n in (0, 1)]
        networks = [dict(v4, link="bond0"),
                    {"id": "network1", "type": "ipv6", "link": "bond0",
                     "network_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, "net1")),
                     "ip_address": f"2001:db8:1::{host:x}", "netmask": "ffff:ffff:ffff:ffff::",
                     "routes": [{"network": "::", "netmask": "::", "gateway": "2001:db8:1::1"}]}]
    elif kind == "vlan":
        links.append({"id": "vlan120", "type": "vlan", "vlan_link": "iface0", "vlan_id": 120,
                      "vlan_mac_address": mac(index, 0), "mtu": 1500})
        networks = [dict(v4, link="vlan120"),
                    {"id": "network1", "type": "ipv4_dhcp", "link": "iface0",
                     "network_id": str(uuid.uuid5(uuid.NAMESPACE_DNS, "net2"))}]
    network_data = {"links": links, "networks": networks, "services": dns}
    instance_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{name}.instance"))
    return {
        "name": name,
        "properties": {"cpus": 8, "memory_mb": 16384, "local_gb": 100, "cpu_arch": "x86_64"},
        "instance_uuid": instance_uuid,
        "instance_info": {"display_name": f"vm-{name}", "image_source": str(uuid.uuid5(
            uuid.NAMESPACE_DNS, "image")), "root_gb": "10", "project_id": "demo"},
        "network_data": network_data,
        "portgroups": portgroups,
        "ports": ports,
        "configdrive": {
            "meta_data": {"uuid": instance_uuid, "name": f"vm-{name}", "hostname": name,
                          "availability_zone": "nova", "launch_index": 0,
                          "public_keys": {"default": fake_ssh_key(name)},
                          "meta": {"kind": kind}},
            "user_data": f"#cloud-config\nhostname: {name}\n",
            "network_data": network_data,
        },
    }


def with_ipv4(spec, address, netmask):
    """The spec with its static IPv4 network (in node.network_data and in the configdrive)
    moved to `address`, without routes: for clients that pose as nodes on loopback."""
    for nd in (spec["network_data"], spec["configdrive"]["network_data"]):
        for net in nd["networks"]:
            if net["type"] == "ipv4":
                net["ip_address"] = address
                net["netmask"] = netmask
                net["routes"] = []
    return spec


def cmd_spec(args):
    json.dump([node_spec(args.start + i, args.prefix) for i in range(args.count)], sys.stdout, indent=1)
    print()


# --------------------------------------------------------------------------
# Enrollment


def create_node(client, spec):
    body = {"driver": "fake-hardware", "name": spec["name"]}
    for key in ("properties", "network_data", "instance_uuid", "instance_info",
                "extra", "description", "resource_class", "owner", "lessee"):
        if key in spec:
            body[key] = spec[key]
    node = client.request("POST", "/v1/nodes", body)
    groups = {}
    for pg in spec.get("portgroups", []):
        created = client.request("POST", "/v1/portgroups", {**pg, "node_uuid": node["uuid"]})
        groups[pg["name"]] = created["uuid"]
    for port in spec.get("ports", []):
        port = dict(port, node_uuid=node["uuid"])
        if "portgroup" in port:
            port["portgroup_uuid"] = groups[port.pop("portgroup")]
        client.request("POST", "/v1/ports", port)
    return node["uuid"]


def provision(client, node, target, **extra):
    client.request("PUT", f"/v1/nodes/{node}/states/provision", {"target": target, **extra})


def wait_states(client, nodes, want, deadline, field="provision_state"):
    """Poll until every node has `field` == want; fail on error or at deadline."""
    pending, fields = set(nodes), f"uuid,name,{field},target_{field},last_error"
    while pending:
        polled = time.monotonic()
        if len(pending) <= 20:
            rows = [client.request("GET", f"/v1/nodes/{n}?fields={fields}") for n in pending]
        else:
            rows = client.list_all(f"/v1/nodes?fields={fields}&limit=1000")
        for row in rows:
            if row["uuid"] not in pending:
                continue
            state = row[field]
            if state == want:
                pending.discard(row["uuid"])
            elif state in FAILED_STATES or row[f"target_{field}"] is None:
                die(f"node {row['name'] or row['uuid']} is {state!r}, not {want!r}: {row['last_error']}")
        if pending and time.monotonic() > deadline:
            die(f"{len(pending)} node(s) not {want!r} by the deadline, e.g. {sorted(pending)[:3]}")
        if pending:  # keep polling to ~1/4 of the server's time
            time.sleep(min(5.0, max(0.1, 3 * (time.monotonic() - polled))))


def run_all(pool, fn, items):
    """fn over items in the pool; the first exception fails the whole run."""
    return [f.result() for f in [pool.submit(fn, item) for item in items]]


def cmd_enroll(args):
    if args.spec:
        specs = json.loads(Path(args.spec).read_text())
    else:
        specs = [node_spec(args.start + i, args.prefix) for i in range(args.count)]
    if not specs:
        die("no nodes to enroll")
    client = client_from(args)
    deadline = time.monotonic() + (args.timeout or 120 + len(specs))
    t0 = last = time.monotonic()

    def lap(what):
        nonlocal last
        now = time.monotonic()
        log(f"{what}: {now - last:.1f}s")
        last = now

    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        uuids = run_all(pool, lambda s: create_node(client, s), specs)
        lap(f"created {len(uuids)} node(s) with ports (API {client.version})")
        run_all(pool, lambda u: provision(client, u, "manage"), uuids)
        wait_states(client, uuids, "manageable", deadline)
        lap("manage -> manageable")
        run_all(pool, lambda u: provision(client, u, "provide"), uuids)
        wait_states(client, uuids, "available", deadline)
        lap("provide -> available")
        run_all(pool, lambda p: provision(client, p[0], "active", **(
            {"configdrive": p[1]["configdrive"]} if "configdrive" in p[1] else {})),
            list(zip(uuids, specs)))
        wait_states(client, uuids, "active", deadline)
        lap("deploy -> active")
        # The fake deploy interface leaves power_state null; a real deploy ends powered on.
        run_all(pool, lambda u: client.request("PUT", f"/v1/nodes/{u}/states/power",
                                               {"target": "power on"}), uuids)
        wait_states(client, uuids, "power on", deadline, field="power_state")
        lap("power on")
    log(f"enrolled and deployed {len(uuids)} node(s) in {time.monotonic() - t0:.1f}s")
    for name, node in zip((s["name"] for s in specs), uuids):
        print(f"{node} {name}")


def cmd_delete(args):
    client = client_from(args)
    if args.all:
        nodes = [n["uuid"] for n in client.list_all("/v1/nodes?fields=uuid&limit=1000")]
    elif args.nodes:
        nodes = [client.request("GET", f"/v1/nodes/{n}?fields=uuid")["uuid"] for n in args.nodes]
    else:
        die("delete needs NODE names/UUIDs or --all")
    deadline = time.monotonic() + (args.timeout or 120 + len(nodes))
    fields = "uuid,provision_state"
    with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
        rows = run_all(pool, lambda n: client.request("GET", f"/v1/nodes/{n}?fields={fields}"), nodes)
        deployed = [r["uuid"] for r in rows if r["provision_state"] in ("active", "deploy failed")]
        run_all(pool, lambda n: provision(client, n, "deleted"), deployed)
        wait_states(client, deployed, "available", deadline)
        log(f"undeployed {len(deployed)} node(s)")
        if not args.undeploy_only:
            run_all(pool, lambda n: client.request("DELETE", f"/v1/nodes/{n}"), nodes)
            log(f"deleted {len(nodes)} node(s)")


def dump(client):
    return {kind: client.list_all(f"/v1/{kind}?detail=True")
            for kind in ("nodes", "ports", "portgroups")}


def cmd_dump(args):
    text = json.dumps(dump(client_from(args)), indent=1, sort_keys=True) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)


# --------------------------------------------------------------------------
# Self-test


def cmd_selftest(args):
    harness = [sys.executable, __file__] + (["--venv", args.venv] if args.venv else [])

    def start(*opts):
        out = subprocess.run(harness + ["start", *opts], check=True, capture_output=True, text=True)
        sys.stderr.write(out.stderr)
        return dict(word.split("=", 1) for word in shlex.split(out.stdout))

    def client_cmd(env, *cmd):
        out = subprocess.run(harness + list(cmd), check=True, capture_output=True, text=True,
                             env={**os.environ, **env})
        sys.stderr.write(out.stderr)
        return out.stdout

    checks = Checks()

    def check(ok, what):  # each step needs the ones before
        if not checks.check(ok, what):
            raise SystemExit(1)

    started = []
    try:
        env = start()
        started.append(env)
        client_cmd(env, "enroll", "--count", "3")
        inv = json.loads(client_cmd(env, "dump"))
        nodes = {n["name"]: n for n in inv["nodes"]}
        check(sorted(nodes) == ["node-00000", "node-00001", "node-00002"], "3 nodes dumped")
        check(all(n["provision_state"] == "active" for n in nodes.values()), "all active")
        cd = nodes["node-00000"]["instance_info"].get("configdrive")
        check(isinstance(cd, dict) and "public_keys" in cd["meta_data"], "configdrive readable")
        check(len(inv["ports"]) == 4 and len(inv["portgroups"]) == 1, "4 ports, 1 portgroup")
        check(nodes["node-00002"]["network_data"]["links"][1]["type"] == "vlan", "vlan link kept")
        client_cmd(env, "delete", "node-00001")
        inv = json.loads(client_cmd(env, "dump"))
        check(len(inv["nodes"]) == 2 and len(inv["portgroups"]) == 0, "delete removed node + ports")
        subprocess.run(harness + ["stop", "--state-dir", env["IRONIC_STATE_DIR"]], check=True)
        started.pop()

        env = start("--no-secrets")
        started.append(env)
        client_cmd(env, "enroll", "--count", "1")
        node = json.loads(client_cmd(env, "dump"))["nodes"][0]
        check(node["instance_info"]["configdrive"] == "******", "configdrive masked without policy")
        subprocess.run(harness + ["stop", "--state-dir", env["IRONIC_STATE_DIR"]], check=True)
        started.pop()

        env = start("--auth", "http_basic", "--user", "tester", "--password", "s3cret")
        started.append(env)
        client = Client(env["IRONIC_URL"], "tester", "s3cret")  # GET / is public
        check(client.raw("GET", "/v1/nodes", headers={"Authorization": None})[0] == 401,
              "http_basic: 401 without credentials")
        check(Client(env["IRONIC_URL"], "tester", "wrong").raw("GET", "/v1/nodes")[0] == 401,
              "http_basic: 401 with a wrong password")
        check(client.raw("GET", "/v1/nodes")[0] == 200, "http_basic: 200 with credentials")
        subprocess.run(harness + ["stop", "--state-dir", env["IRONIC_STATE_DIR"]], check=True)
        started.pop()
    finally:
        for env in started:
            subprocess.run(harness + ["stop", "--state-dir", env["IRONIC_STATE_DIR"]])
    checks.summary()
    log("selftest passed")


# --------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", help="venv with ironic (default $IRONIC_VENV or .venv-ironic)")
    sub = parser.add_subparsers(dest="cmd", required=True)

    def server_opts(p):
        p.add_argument("--state-dir", help="fresh directory for config, db, log (default: a temp dir)")
        p.add_argument("--auth", choices=("noauth", "http_basic"), default="noauth")
        p.add_argument("--user")
        p.add_argument("--password")
        p.add_argument("--no-secrets", action="store_true", help="mask instance_info.configdrive")
        p.add_argument("--no-clean", action="store_true",
                       help="automated_clean = false: provide/undeploy skip cleaning (faster)")
        p.add_argument("--start-timeout", type=float, default=60.0)

    def client_opts(p):
        p.add_argument("--url", help="default $IRONIC_URL")
        p.add_argument("--user", help="default $IRONIC_USER")
        p.add_argument("--password", help="default $IRONIC_PASSWORD")
        p.add_argument("--concurrency", type=int, default=4)
        p.add_argument("--timeout", type=float, help="seconds (default 120 + 1 per node)")

    p = sub.add_parser("start")
    server_opts(p)
    p.set_defaults(fn=cmd_start)
    p = sub.add_parser("stop")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--keep", action="store_true", help="keep the state dir")
    p.set_defaults(fn=cmd_stop)
    p = sub.add_parser("run")
    server_opts(p)
    p.add_argument("--keep", action="store_true", help="keep the state dir")
    p.add_argument("command", nargs=argparse.REMAINDER)
    p.set_defaults(fn=cmd_run)
    for name, fn in (("spec", cmd_spec), ("enroll", cmd_enroll)):
        p = sub.add_parser(name)
        p.add_argument("--count", type=int, default=1)
        p.add_argument("--prefix", default="node-")
        p.add_argument("--start", type=int, default=0, help="first node index (MACs derive from it)")
        if name == "enroll":
            client_opts(p)
            p.add_argument("--spec", help="JSON list of node specs (see the spec command)")
        p.set_defaults(fn=fn)
    p = sub.add_parser("delete")
    client_opts(p)
    p.add_argument("nodes", nargs="*")
    p.add_argument("--all", action="store_true")
    p.add_argument("--undeploy-only", action="store_true")
    p.set_defaults(fn=cmd_delete)
    p = sub.add_parser("dump")
    client_opts(p)
    p.add_argument("--out")
    p.set_defaults(fn=cmd_dump)
    p = sub.add_parser("selftest")
    p.set_defaults(fn=cmd_selftest)
    args = parser.parse_args()
    try:
        args.fn(args)
    except IronicError as err:
        die(str(err))


if __name__ == "__main__":
    main()
