"""Scenario hotpath: the same meta_data.json body served by nginx as a static file and by
ironic-metadata through its whole request path (client address, zone, rate limit, hygiene,
token, identity, render), at the same number of worker threads, under wrk.

nginx runs in the two configurations that serve a small file fastest: `sendfile off` (its
compiled default) and `sendfile on; tcp_nopush on;` (Debian's nginx.conf); the faster of the
two (median req/s) is the reference. `sendfile on` without `tcp_nopush` sends the header and
a small body in two segments and is not a fair reference. A bare hyper server answering the
same bytes (examples/hyper_ceiling.rs) is the ceiling, when its binary is given; the least a
pingora 0.9 HTTP service does per request (examples/pingora_floor.rs: pingora's own `ServeHttp`
app answering the same bytes) is the pingora floor, when its binary is given: what separates
it from nginx is pingora's, what separates ironic-metadata from it is the service's.

For each thread count N, all servers run side by side on free loopback ports and take turns
(nginx, nginx, ours, hyper, nginx, ...) for ROUNDS rounds; every measured run follows a
short warm-up run on the same server. wrk keeps 50 keep-alive connections open; a Lua done()
hook prints the exact p50/p99/p99.9 from wrk's histogram. A run with any answer that is not
2xx (wrk's "Non-2xx or 3xx responses" line) fails the scenario.

With N = 1 the server is pinned to CPU 0 and wrk to CPU 1; with N = 2 all share both CPUs.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

from common import TOP, Service, log, median, scaled, write_policy
from service import free_port, http_get, stop_process, wait_for  # scripts/lib, on sys.path through common

PATH = "/openstack/latest/meta_data.json"
CONNECTIONS = 50

WRK_LUA = r"""
-- Prints one JSON line with wrk's totals and exact percentiles (microseconds).
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
"""

NGINX_CONF = """\
# Static files on one loopback port, nothing outside this directory.
daemon off;
master_process on;
worker_processes {workers};
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/tmp/body;
    proxy_temp_path {dir}/tmp/proxy;
    fastcgi_temp_path {dir}/tmp/fastcgi;
    uwsgi_temp_path {dir}/tmp/uwsgi;
    scgi_temp_path {dir}/tmp/scgi;
    types {{ }}
    default_type application/json;
    {sendfile}
    keepalive_timeout 15s;
    keepalive_requests 100000000;
    server {{
        listen 127.0.0.1:{port};
        root {dir}/www;
    }}
}}
"""


# The nginx configurations measured; the faster one is the reference.
NGINX_VARIANTS = {
    "nginx-sendfile-off": "sendfile off;",
    "nginx-nopush": "sendfile on;\n    tcp_nopush on;",
}


class Nginx:
    def __init__(self, workdir, port, workers, body, cpus=None, sendfile=NGINX_VARIANTS["nginx-sendfile-off"]):
        self.dir, self.port = Path(workdir), port
        (self.dir / "tmp").mkdir(parents=True, exist_ok=True)
        target = self.dir / "www" / PATH.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(body)
        # Started as root, nginx's workers drop to nobody: the tree must be readable to them.
        for p in [self.dir, *self.dir.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        conf = self.dir / "nginx.conf"
        conf.write_text(NGINX_CONF.format(workers=workers, dir=self.dir, port=port, sendfile=sendfile))
        cmd = [shutil.which("nginx") or "/usr/sbin/nginx", "-p", str(self.dir), "-e", str(self.dir / "error.log"),
               "-c", str(conf)]
        if cpus is not None:
            cmd = ["taskset", "-c", cpus, *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "stderr.log", "wb"))

        def serving():
            if self.proc.poll() is not None:
                raise SystemExit("nginx exited:\n" + (self.dir / "stderr.log").read_text()
                                 + (self.dir / "error.log").read_text())
            try:
                return http_get(self.port, PATH)[0] == 200
            except OSError:
                return False
        try:
            wait_for(serving, "nginx", 30)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        stop_process(self.proc)


def wrk(port, seconds, threads, lua, cpus=None):
    cmd = ["wrk", "-t", str(threads), "-c", str(CONNECTIONS), "-d", f"{seconds}s", "--timeout", "5s",
           "-s", str(lua), f"http://127.0.0.1:{port}{PATH}"]
    if cpus is not None:
        cmd = ["taskset", "-c", cpus, *cmd]
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60))


class Fixed:
    """examples/hyper_ceiling.rs or examples/pingora_floor.rs: every request answered with
    `body`, nothing else."""

    def __init__(self, binary, workdir, port, threads, body, cpus=None):
        self.port = port
        name = Path(binary).name
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        body_file = workdir / "body"
        body_file.write_bytes(body)
        cmd = [str(binary), "--port", str(port), "--body", str(body_file), "--threads", str(threads)]
        if cpus is not None:
            cmd = ["taskset", "-c", cpus, *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(workdir / "stderr.log", "wb"))

        def serving():
            if self.proc.poll() is not None:
                raise SystemExit(f"{name} exited:\n" + (workdir / "stderr.log").read_text())
            try:
                return http_get(self.port, PATH)[0] == 200
            except OSError:
                return False
        try:
            wait_for(serving, name, 30)
        except BaseException:
            self.stop()
            raise

    def stop(self):
        stop_process(self.proc)


def parse_wrk(out):
    """The WRK_JSON line that WRK_LUA prints, from a finished wrk run. A run with any answer
    that is not 2xx (wrk's "Non-2xx or 3xx responses" line, its status error count) or with
    no answer at all fails."""
    for line in out.stdout.splitlines():
        if line.strip().startswith("Non-2xx"):
            raise SystemExit(f"wrk: not every answer was 2xx: {line.strip()}\n{out.stdout}")
    for line in out.stdout.splitlines():
        if line.startswith("WRK_JSON "):
            doc = json.loads(line[len("WRK_JSON "):])
            lat = doc["latency_us"]
            errors = sum(doc["errors"].values())
            if doc["errors"]["status"] or not doc["requests"]:
                raise SystemExit(f"wrk: {doc['requests']} answers, {doc['errors']['status']} not 2xx:\n{out.stdout}")
            return {
                "requests": doc["requests"],
                "rps": doc["requests"] / (doc["duration_us"] / 1e6),
                "p50_ms": lat["p50"] / 1000, "p90_ms": lat["p90"] / 1000,
                "p99_ms": lat["p99"] / 1000, "p999_ms": lat["p999"] / 1000,
                "mean_ms": lat["mean"] / 1000, "max_ms": lat["max"] / 1000,
                "errors": errors, "error_detail": doc["errors"],
            }
    raise SystemExit(f"wrk printed no summary (exit {out.returncode}):\n{out.stdout}\n{out.stderr}")


def summarize(runs):
    out = {}
    for key in ("rps", "p50_ms", "p99_ms", "p999_ms"):
        out[key] = median([r[key] for r in runs])
    out["errors"] = sum(r["errors"] for r in runs)
    return out


def run(ctx):
    if not shutil.which("wrk") or not shutil.which("nginx"):
        raise SystemExit("hotpath needs wrk and nginx (scripts/bench.sh installs them)")
    work = ctx.workdir / "hotpath"
    work.mkdir()
    # nginx's workers (nobody, when started as root) must reach the document root.
    ctx.workdir.chmod(0o711)
    work.chmod(0o755)
    lua = work / "report.lua"
    lua.write_text(WRK_LUA)
    policy = write_policy(work / "policy")
    inventory = TOP / "examples" / "inventory.json"
    duration = scaled(8, 2)
    warmup = 1
    rounds = int(os.environ.get("BENCH_ROUNDS", "3"))
    results = {
        "path": PATH, "inventory": "examples/inventory.json (node web-0 claims 127.0.0.1)",
        "connections": CONNECTIONS, "duration_s": duration, "warmup_s": warmup, "rounds": rounds,
        "wrk_threads": 1, "nginx_variants": NGINX_VARIANTS, "ceiling": bool(getattr(ctx, "hyper", None)),
        "floor": bool(getattr(ctx, "pingora_floor", None)),
        "by_threads": {},
    }
    for n in (1, 2):
        results["by_threads"][str(n)] = measure(ctx, work, policy, inventory, lua, n, duration, warmup, rounds, results)
    results["pinning"] = ("N=1: server on CPU 0, wrk on CPU 1; N=2: no pinning (servers and wrk share both CPUs)"
                          if results["by_threads"]["1"]["pinned"] else "no pinning")
    return results


def measure(ctx, work, policy, inventory, lua, n, duration, warmup, rounds, results):
    """All servers at N threads, taking turns; medians, the reference and the ratios."""
    # N = 1: server on CPU 0, wrk on CPU 1. N = 2: the servers' threads and wrk share
    # the two CPUs.
    server_cpus, wrk_cpus = ("0", "1") if n == 1 and (os.cpu_count() or 1) >= 2 else (None, None)
    # wrk's 50 connections all come from 127.0.0.1: above the default per-client cap
    # of 32 connections, which a metadata client never reaches.
    ours = Service(ctx.binary, ["--inventory", str(inventory)], work, policy,
                   extra=["--threads", str(n), "--max-connections-per-client", "1000"],
                   cpus=server_cpus)
    others = {}
    try:
        ours.wait_ready(30)
        status = http_get(ours.port, PATH)[0]
        if status != 200:
            raise SystemExit(f"ironic-metadata answered {status} for {PATH} from 127.0.0.1")
        # The body as ours serves it, fetched with curl as any client would.
        body_file = work / f"meta_data-{n}.json"
        subprocess.run(["curl", "-sf", "-o", str(body_file), f"http://127.0.0.1:{ours.port}{PATH}"], check=True)
        body = body_file.read_bytes()
        for name, sendfile in NGINX_VARIANTS.items():
            others[name] = Nginx(work / f"{name}-{n}", free_port(), n, body, cpus=server_cpus, sendfile=sendfile)
        if getattr(ctx, "hyper", None):
            others["hyper"] = Fixed(ctx.hyper, work / f"hyper-{n}", free_port(), n, body, cpus=server_cpus)
        if getattr(ctx, "pingora_floor", None):
            others["pingora-floor"] = Fixed(ctx.pingora_floor, work / f"pingora-floor-{n}", free_port(), n, body,
                                            cpus=server_cpus)
        for name, server in others.items():
            if http_get(server.port, PATH)[1] != body:
                raise SystemExit(f"{name} does not serve the body byte for byte")
        results["body_bytes"] = len(body)
        fixed = ("pingora-floor", "hyper")
        ports = {name: s.port for name, s in others.items() if name not in fixed}
        ports["ours"] = ours.port
        for name in fixed:
            if name in others:
                ports[name] = others[name].port
        runs = []
        for r in range(1, rounds + 1):
            for name, port in ports.items():
                wrk(port, warmup, 1, lua, wrk_cpus)
                res = wrk(port, duration, 1, lua, wrk_cpus)
                res.update(server=name, round=r)
                runs.append(res)
                log(f"hotpath N={n} round {r} {name:18}: {res['rps']:9.0f} req/s  p50 {res['p50_ms']:.3f} ms"
                    f"  p99 {res['p99_ms']:.3f} ms  p99.9 {res['p999_ms']:.3f} ms  errors {res['errors']}")
    finally:
        ours.stop()
        for server in others.values():
            server.stop()
    med = {s: summarize([r for r in runs if r["server"] == s]) for s in ports}
    reference = max(NGINX_VARIANTS, key=lambda v: med[v]["rps"])
    ref = med[reference]
    ratio = {
        "rps": med["ours"]["rps"] / ref["rps"],
        "p99": med["ours"]["p99_ms"] / ref["p99_ms"],
        "p999": med["ours"]["p999_ms"] / ref["p999_ms"],
    }
    if "hyper" in med:
        ratio["rps_of_ceiling"] = med["ours"]["rps"] / med["hyper"]["rps"]
        ratio["p99_of_ceiling"] = med["ours"]["p99_ms"] / med["hyper"]["p99_ms"]
    if "pingora-floor" in med:
        floor = med["pingora-floor"]
        ratio["rps_of_floor"] = med["ours"]["rps"] / floor["rps"]
        ratio["p99_of_floor"] = med["ours"]["p99_ms"] / floor["p99_ms"]
        ratio["floor_rps"] = floor["rps"] / ref["rps"]
        ratio["floor_p99"] = floor["p99_ms"] / ref["p99_ms"]
    log(f"hotpath N={n}: reference {reference}; ours/nginx req/s {ratio['rps']:.2f}, p99 {ratio['p99']:.2f}"
        + (f"; ours/hyper req/s {ratio['rps_of_ceiling']:.2f}" if "hyper" in med else "")
        + (f"; pingora floor/nginx req/s {ratio['floor_rps']:.2f}, ours/floor {ratio['rps_of_floor']:.2f}"
           if "pingora-floor" in med else ""))
    return {"pinned": server_cpus is not None, "runs": runs, "median": med, "reference": reference,
            "ratio": ratio}
