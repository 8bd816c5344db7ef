"""A real Ironic (scripts/ironic/harness.py: all-in-one process, sqlite, noauth,
fake-hardware) holding thousands of deployed nodes without enrolling them one by one.

Enrolling and deploying through the API costs about 0.7 s per node, so only three template
nodes go through the API (one of each kind the harness makes: a plain NIC, an LACP bond, a
VLAN), deployed with their configdrives. Every further node is a copy of the template of its
kind written straight into Ironic's sqlite database while Ironic is stopped: the template's
row with a new id, uuid, name, instance uuid, network_data, configdrive and MACs, and copies
of its ports and portgroups. Ironic is then started again on the same database and the
result is checked through the API (GET /v1/nodes?detail=True: count and provision_state).

Node i claims the client address client_address(NODE_BLOCK, i) (127.1.x.y) in both its
node.network_data and its configdrive's network_data, so one machine can pose as it.
"""

import argparse
import datetime
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

from common import TOP, client_address, log
from service import free_port  # scripts/lib, on sys.path through common

sys.path.insert(0, str(TOP / "scripts" / "ironic"))
import harness  # noqa: E402

NODE_BLOCK = 1  # node addresses are 127.1.0.1 onwards
PREFIX = "bench-"

# Ironic's periodic power-state sync walks every node each minute; with 10,000 fake nodes it
# would compete with the API for the same two cores during the measurements. Nothing else
# changes: the API, the database and its pagination are as the harness configures them.
OVERRIDES = """\
[conductor]
sync_power_state_interval = -1
"""


def node_address(i):
    return client_address(NODE_BLOCK, i)


def node_spec(i):
    """The harness's node i, with its IPv4 address moved to node_address(i)."""
    return harness.with_ipv4(harness.node_spec(i, PREFIX), node_address(i), "255.255.0.0")


def node_uuid(i):
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{PREFIX}{i}.node"))


class SeededIronic:
    """Ironic with `count` deployed nodes: 0..count-1, node i as node_spec(i)."""

    def __init__(self, workdir):
        self.state = Path(workdir) / "ironic"
        args = argparse.Namespace(venv=None, state_dir=str(self.state), auth="noauth", user=None,
                                  password=None, no_secrets=False, no_clean=True, start_timeout=120.0)
        self.state, self.proc, env = harness.start_server(args)
        self.url = env["IRONIC_URL"]
        try:
            self.enroll_templates()
        except BaseException:
            self.close()
            raise

    def enroll_templates(self):
        """Nodes 0, 1 and 2 through the API (create, manage, provide, deploy, power on)."""
        (self.state / "bench.conf").write_text(OVERRIDES)
        t0 = time.monotonic()
        specs = [node_spec(i) for i in range(3)]
        spec_file = self.state / "templates.json"
        spec_file.write_text(json.dumps(specs))
        env = {k: v for k, v in os.environ.items() if not k.startswith("IRONIC_")}
        env["IRONIC_URL"] = self.url
        out = subprocess.run([sys.executable, str(TOP / "scripts" / "ironic" / "harness.py"), "enroll",
                              "--spec", str(spec_file)], env=env, capture_output=True, text=True)
        if out.returncode:
            raise SystemExit(f"enrolling the template nodes failed:\n{out.stderr}")
        self.count = 3
        log(f"Ironic at {self.url}: 3 template nodes enrolled and deployed in {time.monotonic() - t0:.1f}s")

    # -- the API -----------------------------------------------------------------------

    def client(self):
        return harness.Client(self.url)

    def api_version(self, cap_minor):
        """The microversion ironic-metadata asks for: the server's newest, at most 1.cap_minor."""
        server = self.client().version
        major, minor = (int(x) for x in server.split("."))
        return f"{major}.{min(minor, cap_minor)}"

    def verify(self, want):
        """Every node listed with detail=True, `want` of them, all active."""
        nodes = self.client().list_all("/v1/nodes?detail=True")
        active = sum(1 for n in nodes if n["provision_state"] == "active")
        if len(nodes) != want or active != want:
            raise SystemExit(f"Ironic lists {len(nodes)} nodes, {active} active; expected {want}")
        return nodes

    # -- growing the database ----------------------------------------------------------

    def stop(self):
        if self.proc is not None:
            harness.stop_server(self.state, keep=True)
            self.proc.wait()
            self.proc = None

    def start(self):
        """Start Ironic again on the same database, with OVERRIDES, on a new free port."""
        venv = harness.venv_dir(None)
        for _ in range(5):
            port = free_port()
            harness.write_config(self.state, port, "noauth", clean=False)
            proc, result = harness.launch(venv, self.state, port, 120, [self.state / "bench.conf"])
            if result == "ok":
                self.proc, self.url = proc, f"http://127.0.0.1:{port}"
                return
            if result == "failed":
                raise SystemExit("Ironic did not start again:\n" + harness.log_tail(self.state))
        raise SystemExit("no free port for Ironic after 5 attempts")

    def grow(self, want):
        """Make the database hold `want` deployed nodes (never fewer than it has)."""
        if want <= self.count:
            return
        t0 = time.monotonic()
        self.stop()
        insert_nodes(self.state / "ironic.sqlite", self.count, want)
        self.start()
        t1 = time.monotonic()
        self.verify(want)
        self.count = want
        log(f"Ironic holds {want} deployed nodes (written in {t1 - t0:.1f}s, "
            f"listed with detail=True in {time.monotonic() - t1:.1f}s)")

    def close(self):
        try:
            self.stop()
        finally:
            harness.remove_state(self.state)


def insert_nodes(db_path, start, stop):
    """Copy the template of each kind into nodes start..stop-1, with their ports and portgroups."""
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None).isoformat(sep=" ")
    with db:
        templates = {}
        for kind in range(3):
            node = db.execute("SELECT * FROM nodes WHERE name = ?", (f"{PREFIX}{kind:05d}",)).fetchone()
            if node is None:
                raise SystemExit(f"template node {PREFIX}{kind:05d} is missing")
            groups = db.execute("SELECT * FROM portgroups WHERE node_id = ? ORDER BY id", (node["id"],)).fetchall()
            ports = db.execute("SELECT * FROM ports WHERE node_id = ? ORDER BY id", (node["id"],)).fetchall()
            templates[kind] = (dict(node), [dict(g) for g in groups], [dict(p) for p in ports])
        for i in range(start, stop):
            spec = node_spec(i)
            node, groups, ports = templates[i % 3]
            if len(ports) != len(spec["ports"]) or len(groups) != len(spec["portgroups"]):
                raise SystemExit(f"template of kind {i % 3} does not match node {i}'s spec")
            info = json.loads(node["instance_info"])
            info.update(spec["instance_info"])
            info["configdrive"] = spec["configdrive"]
            row = dict(node, uuid=node_uuid(i), name=spec["name"], instance_uuid=spec["instance_uuid"],
                       instance_info=json.dumps(info), network_data=json.dumps(spec["network_data"]),
                       properties=json.dumps(spec["properties"]), created_at=now, updated_at=now,
                       provision_updated_at=now, reservation=None)
            del row["id"]
            node_id = insert(db, "nodes", row)
            group_ids = {}
            for g, gspec in zip(groups, spec["portgroups"]):
                grow_ = dict(g, uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{gspec['name']}.pg")),
                             name=gspec["name"], address=gspec["address"], node_id=node_id,
                             created_at=now, updated_at=None)
                del grow_["id"]
                group_ids[g["id"]] = insert(db, "portgroups", grow_)
            for p, pspec in zip(ports, spec["ports"]):
                prow = dict(p, uuid=str(uuid.uuid5(uuid.NAMESPACE_DNS, f"{pspec['name']}.port")),
                            name=pspec["name"], address=pspec["address"], node_id=node_id,
                            portgroup_id=group_ids.get(p["portgroup_id"]), created_at=now, updated_at=None)
                del prow["id"]
                insert(db, "ports", prow)
    db.close()


def insert(db, table, row):
    cols = list(row)
    cur = db.execute(f"INSERT INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                     [row[c] for c in cols])
    return cur.lastrowid
