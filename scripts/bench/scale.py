"""Scenario scale: the Ironic source at fleet size, with the service's default settings
(polls every 2 s, node UUIDs listed every 60 s, a full sweep every hour).

Most of it runs against a fake Ironic (examples/fake_ironic.rs) holding 100,000 deployed
nodes of the benchmark's shape: one port each, node.network_data, and a configdrive as
Ironic stores one (base64 of a gzipped ISO 9660 image). It counts every API request by kind
and has control endpoints to deploy and edit nodes. One run measures:

- time to ready: process start to /readyz ready, with 100,000 nodes in the fake and with
  10,000 in the real seeded Ironic of ironic_seed.py;
- Ironic requests per minute in steady state (nothing changing), counted at the fake over
  a window: one replica at 1,000 and at 100,000 nodes, three replicas (three processes on
  the same fake) at 100,000, and one replica at 100,000 while 1,000 distinct unknown
  addresses ask (spread over the window, and once all at once); on the real Ironic, one
  replica, counted in Ironic's own API log;
- a node made active (the fake's deploy endpoint, right after a periodic poll) asking for
  its user data at once: time from its first request to the answer with its data, and the
  Ironic requests made in between (the fake's request log);
- RSS per indexed node: RSS of the service at 100,000 nodes minus RSS with an empty fake,
  over the node count, both in steady state;
- 1,000 requests parked with wait_for_change (distinct nodes, each holding its document's
  ETag): RSS before and after parking, and the latency of other nodes' requests (p50/p99)
  without and with them parked; then a few of the parked nodes are edited and their
  requests must come back with the new data, the others must still be waiting.

Every answer is checked (status and, where known, the body): a fast error is not a result.
BENCH_SCALE shrinks node and client counts and the windows (at least 20 s each).
"""

import concurrent.futures
import json
import re
import select
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from common import (Service, client_address, get_request, log, median, percentile, run_clients, scaled,
                    split_response, write_policy)
import service  # noqa: E402  (scripts/lib, on sys.path through common)

NODE_BLOCK = 1  # node i of the fake claims client_address(1, i), as the seeded Ironic's
STRANGERS_BURST_BLOCK = 200  # 127.200.0.1 onwards: addresses no node claims
STRANGERS_TRICKLE_BLOCK = 202
USER_DATA = "/openstack/latest/user_data"
META_DATA = "/openstack/latest/meta_data.json"
API_LINE = re.compile(rb" ironic\.api .* - (GET|POST|PUT|PATCH|DELETE|HEAD) (\S+)")


def window_s():
    return max(20.0, 120.0 * scaled(1000) / 1000)


# -- the fake Ironic ----------------------------------------------------------------------

class FakeIronic:
    """examples/fake_ironic.rs with `nodes` deployed nodes, on a free port."""

    def __init__(self, binary, nodes, workdir):
        self.log_path = Path(workdir) / f"fake-ironic-{nodes}.log"
        self.proc = subprocess.Popen([str(binary), "--nodes", str(nodes)], stdout=subprocess.PIPE,
                                     stderr=open(self.log_path, "wb"), stdin=subprocess.DEVNULL)
        t0 = time.monotonic()
        ready, _, _ = select.select([self.proc.stdout], [], [], 900)
        line = self.proc.stdout.readline().decode() if ready else ""
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line)
        if not match:
            self.stop()
            raise SystemExit(f"the fake Ironic did not start: {line!r} {self.log_path.read_text()[-2000:]}")
        self.url = match.group(1)
        self.nodes = nodes
        log(f"fake Ironic with {nodes} nodes at {self.url} ({time.monotonic() - t0:.1f}s)")

    def call(self, method, path):
        req = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(req, timeout=60) as r:
            return json.loads(r.read())

    def stats(self):
        return self.call("GET", "/_fake/stats")

    def requests_since(self, seq):
        return self.call("GET", f"/_fake/requests?since={seq}")["requests"]

    def node(self, index):
        return self.call("GET", f"/_fake/node?index={index}")

    def stop(self):
        service.stop_process(self.proc)


def kinds_delta(before, after):
    """Requests and bytes per kind between two stats."""
    out = {}
    for kind, v in after["by_kind"].items():
        was = before["by_kind"].get(kind, {"requests": 0, "bytes": 0})
        n = v["requests"] - was["requests"]
        if n:
            out[kind] = {"requests": n, "bytes": v["bytes"] - was["bytes"]}
    return out


def group(kind):
    """What a request of the fake's kind is for."""
    if kind == "root":
        return "root"
    if kind.endswith(":sorted") or ":sorted:" in kind:
        return "polls"
    if kind in ("nodes:one", "ports:of_node", "portgroups:of_node"):
        return "node_reads"
    if kind == "nodes:fields":
        return "reconcile"
    return "full_sweeps"


def steady(fake, svcs, seconds, what, during=None):
    """Ironic requests per minute over `seconds`, counted at the fake (and by the services);
    `during` runs meanwhile (and its result is returned too)."""
    before, sent0 = fake.stats(), [s.metric("metadata_ironic_requests_total") for s in svcs]
    t0 = time.monotonic()
    extra = during() if during else None
    left = seconds - (time.monotonic() - t0)
    if left > 0:
        time.sleep(left)  # the measuring window itself
    took = time.monotonic() - t0
    after = fake.stats()
    sent = sum(s.metric("metadata_ironic_requests_total") - a for s, a in zip(svcs, sent0))
    kinds = kinds_delta(before, after)
    groups = {}
    for kind, v in kinds.items():
        g = groups.setdefault(group(kind), {"requests": 0, "bytes": 0})
        g["requests"] += v["requests"]
        g["bytes"] += v["bytes"]
    total = sum(v["requests"] for v in kinds.values())
    nbytes = sum(v["bytes"] for v in kinds.values())
    # A full poll probes node creations too; a poll asked for by an unknown address does not.
    full = kinds.get("nodes:sorted:created_at", {}).get("requests", 0)
    quick = kinds.get("nodes:sorted:updated_at", {}).get("requests", 0) - full
    out = {"what": what, "nodes": fake.nodes, "replicas": len(svcs), "seconds": took,
           "polls_full": full, "polls_quick": quick,
           "requests": total, "requests_per_minute": total * 60 / took, "bytes_per_minute": nbytes * 60 / took,
           "sent_by_services": sent, "by_kind": kinds, "by_purpose": groups}
    log(f"steady state, {what}: {out['requests_per_minute']:.0f} Ironic requests/min "
        f"({out['bytes_per_minute'] / 2**20:.1f} MiB/min) over {took:.0f}s: "
        + ", ".join(f"{g} {v['requests']}" for g, v in sorted(groups.items())) + f" ({full} full polls, {quick} quick)")
    return (out, extra) if during else out


# -- answers --------------------------------------------------------------------------------

def header(raw, name):
    head = raw.partition(b"\r\n\r\n")[0].decode(errors="replace")
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == name:
            return v.strip()
    return None


def check_answers(results, want, what):
    """results of run_clients, want(client, k) -> (status, body or None); raises on any
    other answer. Returns the latencies."""
    bad, latencies = [], []
    for c, answers in enumerate(results):
        for k, (took, raw) in enumerate(answers):
            latencies.append(took)
            status, body = want(c, k)
            if isinstance(raw, str):
                bad.append(f"client {c}: {raw}")
                continue
            got, got_body = split_response(raw)
            if got != status or (body is not None and got_body != body):
                bad.append(f"client {c}: HTTP {got} {got_body[:120]!r}, wanted {status}")
    expected = sum(len(a) for a in results)
    if bad or not expected:
        raise SystemExit(f"{what}: {len(bad)} of {expected} answers unexpected, e.g. {bad[:3]}")
    return latencies


def check_sample(svc, fake, count, what):
    """`count` nodes spread over the fleet get their own user data."""
    n = fake.nodes
    indices = sorted({i * n // count for i in range(count)})
    want = {i: fake.node(i)["user_data"].encode() for i in indices}
    clients = [(client_address(NODE_BLOCK, i), [get_request(USER_DATA)]) for i in indices]
    results = run_clients(svc.port, clients, concurrency=100, timeout=120)
    check_answers(results, lambda c, k: (200, want[indices[c]]), what)
    return len(indices)


# -- phases ---------------------------------------------------------------------------------

def start_service(ctx, url, work, policy):
    return Service(ctx.binary, ["--ironic-url", url], work, policy)


def time_to_ready(svc, nodes, what):
    took = svc.wait_ready(3600, interval=0.05)
    got = svc.readyz().get("nodes")
    if got != nodes:
        raise SystemExit(f"{what}: the service indexed {got} nodes, {nodes} expected")
    log(f"ready after {took:.1f}s with {nodes} nodes ({what}), RSS {svc.rss() / 2**20:.0f} MiB")
    return took


def polls(svc):
    return sum(v for k, v in svc.metrics().items() if k.startswith("metadata_inventory_polls_total"))


def settle(svc, count=2):
    """Wait for `count` polls after the first load, before measuring."""
    target = polls(svc) + count
    service.wait_for(lambda: polls(svc) >= target, f"{count} polls", 120, 0.1)


def strangers_trickle(svc, count, seconds):
    """`count` distinct addresses no node claims, one request each, spread evenly over
    `seconds`; each must be refused with 404. Returns a function for steady(during=)."""
    def run():
        t0 = time.monotonic()

        def ask(k):
            at = t0 + k * seconds / count
            time.sleep(max(0.0, at - time.monotonic()))  # pacing the load
            status, _ = service_get(svc, META_DATA, client_address(STRANGERS_TRICKLE_BLOCK, k))
            return status
        with concurrent.futures.ThreadPoolExecutor(64) as pool:
            statuses = list(pool.map(ask, range(count)))
        bad = [s for s in statuses if s != 404]
        if bad:
            raise SystemExit(f"strangers: {len(bad)} of {count} answers were not 404: {bad[:5]}")
        return {"strangers": count, "answered_404": count}
    return run


def service_get(svc, path, source):
    return service.http_get(svc.port, path, source, timeout=30)


def strangers_burst(fake, svc, count):
    """`count` other unknown addresses all at once; the Ironic requests they cost."""
    before = fake.stats()
    t0 = time.monotonic()
    clients = [(client_address(STRANGERS_BURST_BLOCK, k), [get_request(META_DATA)]) for k in range(count)]
    results = run_clients(svc.port, clients, concurrency=min(count, 500), timeout=120)
    took = time.monotonic() - t0
    check_answers(results, lambda c, k: (404, None), "strangers at once")
    kinds = kinds_delta(before, fake.stats())
    out = {"strangers": count, "seconds": took, "ironic_requests": sum(v["requests"] for v in kinds.values()),
           "by_kind": kinds}
    log(f"{count} strangers at once: answered 404 in {took:.2f}s, {out['ironic_requests']} Ironic requests "
        f"meanwhile ({', '.join(k + ' ' + str(v['requests']) for k, v in kinds.items())})")
    return out


def after_periodic_poll(fake, timeout=15.0):
    """Wait until the fake has just answered a periodic poll (its last probe lists
    portgroups by created_at); returns the fake's sequence number then."""
    seq = fake.stats()["seq"]
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        reqs = fake.requests_since(seq)
        if any(r["kind"] == "portgroups:sorted" for r in reqs):
            return reqs[-1]["seq"]
        if reqs:
            seq = reqs[-1]["seq"]
        time.sleep(0.02)
    raise SystemExit("no periodic poll reached the fake")


def new_node(fake, svc, trials):
    """Nodes made active and asking at once: time from the first request to the answer
    with their own user data, and the Ironic requests in between."""
    rows = []
    for _ in range(trials):
        seq = after_periodic_poll(fake)
        node = fake.call("POST", "/_fake/deploy?count=1")[0]
        first = time.monotonic()
        first_status, tries = None, 0
        while True:
            status, body = service_get(svc, USER_DATA, node["address"])
            tries += 1
            first_status = first_status or status
            if status == 200:
                served = time.time()
                took = time.monotonic() - first
                if body.decode() != node["user_data"]:
                    raise SystemExit(f"new node {node['name']}: another user data {body[:100]!r}")
                break
            if status != 404 or time.monotonic() - first > 30:
                raise SystemExit(f"new node {node['name']}: HTTP {status} after {time.monotonic() - first:.1f}s")
            time.sleep(0.05)
        calls = [r for r in fake.requests_since(seq) if r["t"] <= served]
        rows.append({"node": node["name"], "first_status": first_status, "requests": tries, "served_after_s": took,
                     "ironic_calls": len(calls), "calls": [r["kind"] for r in calls],
                     "periodic_poll_overlapped": any(r["kind"] == "nodes:sorted:created_at" for r in calls)})
        log(f"new node {node['name']}: first answer {first_status}, its data after {took * 1000:.0f} ms, "
            f"{len(calls)} Ironic calls ({', '.join(r['kind'] for r in calls)})")
    return {"trials": rows, "served_after_s_max": max(r["served_after_s"] for r in rows),
            "ironic_calls_max": max(r["ironic_calls"] for r in rows),
            "first_request_answered_200": sum(r["first_status"] == 200 for r in rows)}


def latency_load(svc, fake, first, clients, per_client):
    """`clients` nodes from index `first` each GET meta_data.json `per_client` times, one
    connection each, all at once; every answer 200 with the node's own uuid. Latencies (s)."""
    uuids = [fake.node(first + c)["instance_uuid"] for c in range(clients)]
    load = [(client_address(NODE_BLOCK, first + c), [get_request(META_DATA)] * per_client) for c in range(clients)]
    results = run_clients(svc.port, load, concurrency=clients, timeout=300)
    bad = []
    for c, answers in enumerate(results):
        for _, raw in answers:
            if isinstance(raw, str):
                bad.append(raw)
                continue
            status, body = split_response(raw)
            if status != 200 or json.loads(body).get("uuid") != uuids[c]:
                bad.append(f"HTTP {status}")
    if bad or sum(len(a) for a in results) != clients * per_client:
        raise SystemExit(f"other clients: {len(bad)} unexpected answers, e.g. {bad[:3]}")
    return [t for answers in results for t, _ in answers]


def park(svc, fake, count, timeout):
    """`count` nodes (0..count-1) each park a wait_for_change request on their user data,
    holding its current ETag. Returns the open sockets and the documents, in node order."""
    clients = [(client_address(NODE_BLOCK, i), [get_request(USER_DATA)]) for i in range(count)]
    results = run_clients(svc.port, clients, concurrency=200, timeout=300)
    etags, bodies = [], []
    for i, answers in enumerate(results):
        raw = answers[0][1] if answers else "no answer"
        if isinstance(raw, str) or split_response(raw)[0] != 200 or not header(raw, "etag"):
            raise SystemExit(f"parking: node {i} did not answer 200 with an ETag: {str(raw)[:200]}")
        etags.append(header(raw, "etag").strip('"'))
        bodies.append(split_response(raw)[1])
    socks = []
    for i, etag in enumerate(etags):
        s = socket.socket()
        s.bind((client_address(NODE_BLOCK, i), 0))
        s.connect(("127.0.0.1", svc.port))
        s.sendall(get_request(f"{USER_DATA}?wait_for_change=true&last_etag={etag}&timeout_sec={timeout}"))
        socks.append(s)
    return socks, bodies


def read_answer(s, timeout):
    s.settimeout(timeout)
    buf = b""
    while True:
        data = s.recv(65536)
        if not data:
            return buf
        buf += data


def parked_timeout_s():
    """timeout_sec of the parked requests: longer than parking them and measuring takes."""
    return max(30, round(60 * scaled(1000) / 1000))


def wait_parked(svc, count, deadline):
    while svc.metric("metadata_waiting_requests") < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {svc.metric('metadata_waiting_requests'):.0f} of {count} requests parked")
        time.sleep(0.1)


def parked_longpolls(svc, fake, count):
    """RSS and other clients' latency around `count` parked wait_for_change requests: the
    latency without them, with them, and without them again (after they timed out)."""
    others, per_client = 20, scaled(100, 20)
    first_other = count + 10
    timeout = parked_timeout_s()
    latency_load(svc, fake, first_other, others, 2)  # warm-up
    without = latency_load(svc, fake, first_other, others, per_client)
    rss_before = svc.rss()
    t0 = time.monotonic()
    socks, bodies = park(svc, fake, count, timeout)
    try:
        wait_parked(svc, count, t0 + timeout / 2)
        parked_s = time.monotonic() - t0
        rss_after = svc.rss()
        before = fake.stats()
        with_parked = latency_load(svc, fake, first_other, others, per_client)
        ironic = kinds_delta(before, fake.stats())
        measured_s = time.monotonic() - t0
        if measured_s > timeout - 5:
            raise SystemExit(f"measuring took {measured_s:.0f}s, the parked requests time out after {timeout}s")
        # A few parked nodes change: their requests come back with the new data.
        edited = list(range(0, count, max(1, count // 10)))[:10]
        new = {i: fake.call("POST", f"/_fake/edit?index={i}")["user_data"].encode() for i in edited}
        for i in edited:
            raw = read_answer(socks[i], 30)
            status, body = split_response(raw) if raw else (None, b"")
            if status != 200 or body != new[i]:
                raise SystemExit(f"parked node {i}: answered {status} {body[:100]!r} after its edit")
        rest = [k for k in range(count) if k not in new]
        early = select.select([socks[k] for k in rest], [], [], 0)[0]
        if early:
            raise SystemExit(f"{len(early)} parked requests answered without a change of their document")
        still = svc.metric("metadata_waiting_requests")
        # The others answer when their timeout_sec is over, with their unchanged document.
        for k in rest:
            raw = read_answer(socks[k], timeout + 30)
            status, body = split_response(raw) if raw else (None, b"")
            if status != 200 or body != bodies[k]:
                raise SystemExit(f"parked node {k}: answered {status} {body[:100]!r} at its timeout")
    finally:
        for s in socks:
            s.close()
    again = latency_load(svc, fake, first_other, others, per_client)
    out = {
        "parked": count, "timeout_sec": timeout, "parked_in_s": parked_s, "still_parked_after_edits": still,
        "rss_before_bytes": rss_before, "rss_after_bytes": rss_after,
        "rss_per_parked_bytes": (rss_after - rss_before) / count,
        "other_clients": others, "requests_per_client": per_client,
        "latency_without_ms": {"p50": median(without) * 1000, "p99": percentile(without, 99) * 1000},
        "latency_with_ms": {"p50": median(with_parked) * 1000, "p99": percentile(with_parked, 99) * 1000},
        "latency_without_again_ms": {"p50": median(again) * 1000, "p99": percentile(again, 99) * 1000},
        "edited": len(edited), "ironic_requests_while_measuring": sum(v["requests"] for v in ironic.values()),
        "ironic_while_measuring_by_kind": ironic,
    }
    # Against the worse of the runs without: the same load twice differs by this much already.
    base = max(out["latency_without_ms"]["p99"], out["latency_without_again_ms"]["p99"])
    out["p99_ratio"] = out["latency_with_ms"]["p99"] / base
    log(f"{count} parked: RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB "
        f"({out['rss_per_parked_bytes']:.0f} B each); other clients p99 {out['latency_without_ms']['p99']:.1f} "
        f"without, {out['latency_with_ms']['p99']:.1f} with, {out['latency_without_again_ms']['p99']:.1f} without "
        f"again (ms); {len(edited)} edited nodes answered, the other {len(rest)} at their timeout")
    return out


# -- the real Ironic ------------------------------------------------------------------------

def real_ironic(ctx, work, policy, seconds):
    count = scaled(10000, 20)
    ironic = ctx.ironic(count)
    svc = start_service(ctx, ironic.url, work, policy)
    try:
        ready = time_to_ready(svc, count, "real Ironic")
        settle(svc)
        logf = ironic.state / "ironic.log"
        offset = logf.stat().st_size
        sent0 = svc.metric("metadata_ironic_requests_total")
        t0 = time.monotonic()
        time.sleep(seconds)  # the measuring window
        took = time.monotonic() - t0
        sent = svc.metric("metadata_ironic_requests_total") - sent0
        paths = []
        with open(logf, "rb") as f:
            f.seek(offset)
            for line in f:
                m = API_LINE.search(line)
                if m:
                    paths.append(m.group(2).decode(errors="replace"))
        rss = svc.rss()
    finally:
        svc.stop()
    purposes = {}
    for p in paths:
        g = ("reconcile" if "fields=uuid" in p else "polls" if "sort_key" in p else
             "node_reads" if "node=" in p or p.startswith("/v1/nodes/") else "root" if p == "/" else "full_sweeps")
        purposes[g] = purposes.get(g, 0) + 1
    full = sum(1 for p in paths if p.startswith("/v1/nodes?") and "sort_key=created_at" in p)
    quick = sum(1 for p in paths if p.startswith("/v1/nodes?") and "sort_key=updated_at" in p) - full
    out = {"nodes": count, "ready_s": ready, "rss_bytes": rss, "steady": {
        "polls_full": full, "polls_quick": quick,
        "seconds": took, "requests_logged_by_ironic": len(paths), "requests_per_minute": len(paths) * 60 / took,
        "sent_by_service": sent, "by_purpose": purposes}}
    log(f"real Ironic, {count} nodes: ready after {ready:.1f}s; steady state {len(paths) * 60 / took:.0f} "
        f"requests/min in Ironic's log ({sent:.0f} sent in {took:.0f}s)")
    return out


# -- the scenario ---------------------------------------------------------------------------

def run(ctx):
    if not ctx.fake_ironic:
        raise SystemExit("the scale scenario needs the fake Ironic (scripts/bench.sh builds it)")
    work = ctx.workdir / "scale"
    work.mkdir()
    policy = write_policy(work / "policy")
    big, small = scaled(100000, 200), scaled(1000, 20)
    seconds = window_s()
    out = {"nodes": big, "small_fleet": small, "window_s": seconds, "steady": {}}
    procs = []

    def fake(n):
        f = FakeIronic(ctx.fake_ironic, n, work)
        procs.append(f)
        return f

    def metadata(url):
        s = start_service(ctx, url, work, policy)
        procs.append(s)
        return s

    def stop(*ps):
        for p in ps:
            p.stop()
            procs.remove(p)

    try:
        # An empty fleet: the RSS every node's share is counted from.
        f0 = fake(0)
        s0 = metadata(f0.url)
        time_to_ready(s0, 0, "empty fake")
        settle(s0)
        rss_empty = s0.rss()
        stop(s0, f0)

        # A small fleet's steady state.
        fs = fake(small)
        ss = metadata(fs.url)
        time_to_ready(ss, small, "small fake")
        check_sample(ss, fs, min(small, 100), "small fleet")
        settle(ss)
        out["steady"]["small_fleet"] = steady(fs, [ss], seconds, f"{small} nodes, one replica")
        stop(ss, fs)

        # The big fleet.
        made = time.monotonic()
        fb = fake(big)
        t0 = time.monotonic()
        s1 = metadata(fb.url)
        ready = time_to_ready(s1, big, "big fake")
        first_load = fb.stats()
        out["ready"] = {"nodes": big, "ready_s": ready, "rss_at_ready_bytes": s1.rss(),
                        "ironic_requests": first_load["requests"], "ironic_bytes": first_load["bytes"],
                        "fake_made_s": t0 - made}
        out["sample_checked"] = check_sample(s1, fb, min(big, 500), "big fleet")
        settle(s1)
        out["steady"]["one_replica"] = steady(fb, [s1], seconds, f"{big} nodes, one replica")
        rss_big = s1.rss()
        out["memory"] = {"rss_empty_bytes": rss_empty, "rss_bytes": rss_big, "nodes": big,
                         "bytes_per_node": (rss_big - rss_empty) / big}
        log(f"RSS: {rss_empty / 2**20:.1f} MiB empty, {rss_big / 2**20:.1f} MiB with {big} nodes: "
            f"{out['memory']['bytes_per_node']:.0f} bytes per node")

        strangers = scaled(1000, 20)
        out["strangers_burst"] = strangers_burst(fb, s1, strangers)
        rate, asked = steady(fb, [s1], seconds, f"{big} nodes, {strangers} strangers over the window",
                             during=strangers_trickle(s1, strangers, seconds * 0.9))
        rate.update(asked)
        out["steady"]["strangers"] = rate

        out["new_node"] = new_node(fb, s1, scaled(10, 3))
        out["parked"] = parked_longpolls(s1, fb, scaled(1000, 20))

        # Three replicas on the same Ironic.
        s2, s3 = metadata(fb.url), metadata(fb.url)
        for s in (s2, s3):
            time_to_ready(s, fb.stats()["nodes"], "replica")  # the fleet grew by the new nodes
        settle(s3)
        out["steady"]["three_replicas"] = steady(fb, [s1, s2, s3], seconds, f"{big} nodes, three replicas")
        stop(s2, s3, s1, fb)
    finally:
        for p in reversed(procs):
            p.stop()

    out["real_ironic"] = real_ironic(ctx, work, policy, seconds)
    st = out["steady"]
    out["fleet_ratio"] = st["one_replica"]["requests_per_minute"] / st["small_fleet"]["requests_per_minute"]
    out["strangers_ratio"] = st["strangers"]["requests_per_minute"] / st["one_replica"]["requests_per_minute"]
    out["replicas_ratio"] = st["three_replicas"]["requests_per_minute"] / st["one_replica"]["requests_per_minute"]
    return out
