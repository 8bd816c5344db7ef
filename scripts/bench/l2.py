"""Scenario l2: what L2-verified identity costs on the hot path. A client namespace and a
server namespace joined by a veth pair, as a node and the service on one segment; two
ironic-metadata processes in the server namespace serve the same node, one from a zone
without MAC checks and one with `verify_mac = true` (each answer then asks the kernel for
its route to the client and the client's neighbour entry). wrk in the client namespace
alternates between them, first on kept-alive connections (the MAC is asked on a
connection's first request), then with `Connection: close` (asked on every request).
Every wrk run is read by hotpath's parse_wrk: an answer that is not 2xx (wrk's "Non-2xx or
3xx responses" line) fails the scenario.

Needs root (it creates the two namespaces and always removes them). The server is pinned
to CPU 0 and wrk to CPU 1.
"""

import json
import os
import random
import shutil
import subprocess

from common import Service, log, scaled, write_policy
from hotpath import CONNECTIONS, PATH, WRK_LUA, parse_wrk, summarize

CLIENT_MAC = "52:54:00:88:00:02"
SERVER_IP, CLIENT_IP = "10.88.0.1", "10.88.0.2"
NODE_UUID = "88888888-0000-4000-8000-000000000002"

MODES = ("keep-alive", "close")

POLICY = """\
[[zone]]
name = "segment"
cidrs = ["10.88.0.0/24"]
action = "allow"
rate_limit = {{ per_second = 100000, burst = 1000000 }}
{extra}
"""


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class Namespaces:
    """Two namespaces, srv and cli, joined by a veth pair."""

    def __init__(self):
        while True:
            self.prefix = f"imdbench{random.randrange(16**4):04x}"
            if self.prefix not in sh("ip", "netns", "list").stdout:
                break
        self.made = []
        for n in ("srv", "cli"):
            sh("ip", "netns", "add", self.name(n))
            self.made.append(self.name(n))
            sh("ip", "-n", self.name(n), "link", "set", "lo", "up")
        sh("ip", "link", "add", "eth0", "netns", self.name("srv"), "type", "veth",
           "peer", "name", "eth0", "netns", self.name("cli"))
        sh("ip", "-n", self.name("cli"), "link", "set", "eth0", "address", CLIENT_MAC)
        for n, ip in (("srv", SERVER_IP), ("cli", CLIENT_IP)):
            sh("ip", "-n", self.name(n), "addr", "add", f"{ip}/24", "dev", "eth0")
            sh("ip", "-n", self.name(n), "link", "set", "eth0", "up")

    def name(self, n):
        return f"{self.prefix}-{n}"

    def exec(self, n, cmd):
        return ["ip", "netns", "exec", self.name(n), *cmd]

    def close(self):
        for n in self.made:
            for pid in subprocess.run(["ip", "netns", "pids", n], capture_output=True, text=True).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except OSError:
                    pass
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def inventory(path):
    nd = {"links": [{"id": "eth0", "type": "phy", "ethernet_mac_address": CLIENT_MAC}],
          "networks": [{"id": "n0", "type": "ipv4", "link": "eth0", "network_id": "bench",
                        "ip_address": CLIENT_IP, "netmask": "255.255.255.0"}],
          "services": []}
    path.write_text(json.dumps({
        "nodes": [{"uuid": NODE_UUID, "name": "bench-l2", "provision_state": "active",
                   "instance_info": {"configdrive": {"meta_data": {"hostname": "bench-l2"}}},
                   "network_data": nd}],
        "ports": [{"uuid": "88888888-1111-4000-8000-000000000002", "address": CLIENT_MAC,
                   "node_uuid": NODE_UUID}],
        "portgroups": []}))
    return path


def run(ctx):
    if os.geteuid() != 0:
        raise SystemExit("l2 needs root (it creates network namespaces)")
    if not shutil.which("wrk"):
        raise SystemExit("l2 needs wrk (scripts/bench.sh installs it)")
    work = ctx.workdir / "l2"
    work.mkdir()
    lua = work / "report.lua"
    lua.write_text(WRK_LUA)
    inv = inventory(work / "inventory.json")
    policies = {"plain": write_policy(work / "plain", POLICY.format(extra="")),
                "verify_mac": write_policy(work / "verify", POLICY.format(extra="verify_mac = true"))}
    described = sh(str(ctx.binary), "policy", "check", str(policies["verify_mac"])).stdout
    if "MAC verified" not in described:
        raise SystemExit(f"the verify_mac policy does not verify MACs:\n{described}")
    duration, warmup = scaled(8, 2), 1
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    pin = (os.cpu_count() or 1) >= 2
    ns = Namespaces()
    servers = {}
    try:
        for name, pol in policies.items():
            servers[name] = Service(ctx.binary, ["--inventory", str(inv)], work, pol, bind=SERVER_IP,
                                    netns=ns.name("srv"), cpus="0" if pin else None,
                                    extra=["--threads", "1", "--max-connections-per-client", "1000"])
        for name, svc in servers.items():
            svc.wait_ready(30, interval=0.05)
            body = subprocess.run(ns.exec("cli", ["curl", "-sS", "-m", "5", "-w", "\n%{http_code}",
                                                  f"http://{SERVER_IP}:{svc.port}{PATH}"]),
                                  capture_output=True, text=True).stdout
            if not body.endswith("\n200") or NODE_UUID not in body:
                raise SystemExit(f"{name}: the client is not answered as its node: {body[-200:]}")
        runs = []
        for mode in MODES:
            for r in range(1, rounds + 1):
                for name, svc in servers.items():
                    url = f"http://{SERVER_IP}:{svc.port}{PATH}"
                    cmd = ["wrk", "-t", "1", "-c", str(CONNECTIONS), "--timeout", "5s", "-s", str(lua)]
                    if mode == "close":
                        cmd += ["-H", "Connection: close"]
                    if pin:
                        cmd = ["taskset", "-c", "1", *cmd]
                    subprocess.run(ns.exec("cli", [*cmd, "-d", f"{warmup}s", url]), capture_output=True,
                                   timeout=warmup + 60)
                    out = subprocess.run(ns.exec("cli", [*cmd, "-d", f"{duration}s", url]),
                                         capture_output=True, text=True, timeout=duration + 60)
                    res = parse_wrk(out)
                    res.update(server=name, round=r, mode=mode)
                    runs.append(res)
                    log(f"l2 {mode:10} round {r} {name:10}: {res['rps']:9.0f} req/s  p50 {res['p50_ms']:.3f} ms"
                        f"  p99 {res['p99_ms']:.3f} ms  errors {res['errors']}")
    finally:
        for svc in servers.values():
            svc.stop()
        ns.close()
    errors = sum(r["errors"] for r in runs)
    if errors:
        raise SystemExit(f"{errors} requests failed or were refused: the client was not served as its node")
    by_mode = {}
    for mode in MODES:
        med = {s: summarize([r for r in runs if r["server"] == s and r["mode"] == mode]) for s in policies}
        ratio = {"rps": med["verify_mac"]["rps"] / med["plain"]["rps"],
                 "p99": med["verify_mac"]["p99_ms"] / med["plain"]["p99_ms"]}
        log(f"l2 {mode}: verify_mac/plain req/s {ratio['rps']:.2f}, p99 {ratio['p99']:.2f}")
        by_mode[mode] = {"median": med, "ratio": ratio}
    return {"path": PATH, "connections": CONNECTIONS, "duration_s": duration, "warmup_s": warmup,
            "rounds": rounds, "pinned": pin, "runs": runs, "by_mode": by_mode}
