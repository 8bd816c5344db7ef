"""Scenario storm: 1,000 nodes of a real Ironic boot at once.

Each client speaks from the address its node claims (127.1.x.y) and reads what cloud-init's
OpenStack datasource reads (cloudinit/sources/helpers/openstack.py, MetadataReader.read_v2
and _find_working_version), in its order, each on a fresh connection as its readurl does:

    /openstack                                   versions offered; cloud-init then picks the
                                                 newest it knows, 2018-08-27
    /openstack/2018-08-27/meta_data.json
    /openstack/2018-08-27/user_data
    /openstack/2018-08-27/vendor_data.json
    /openstack/2018-08-27/vendor_data2.json
    /openstack/2018-08-27/network_data.json

(cloud-init then crawls the EC2 tree too; that part is left out here.) All clients start at
once. Every answer must be 200, and meta_data.json must name the client's own node. The
service's refresh interval is an hour, so any request it sends to Ironic during the storm is
one a metadata request caused; Ironic's own access log is counted as well.
"""

import json
import re
import time

from common import Service, get_request, log, median, percentile, run_clients, scaled, split_response, write_policy
from ironic_seed import node_address, node_spec

VERSION = "2018-08-27"
PATHS = ["/openstack"] + [f"/openstack/{VERSION}/{name}" for name in
                          ("meta_data.json", "user_data", "vendor_data.json", "vendor_data2.json",
                           "network_data.json")]
API_LINE = re.compile(rb" ironic\.api .* - (GET|POST|PUT|PATCH|DELETE|HEAD) /")


def ironic_api_requests(ironic, offset):
    """Requests Ironic logged since byte `offset` of its log."""
    with open(ironic.state / "ironic.log", "rb") as f:
        f.seek(offset)
        return sum(1 for line in f if API_LINE.search(line))


def ironic_log_size(ironic):
    return (ironic.state / "ironic.log").stat().st_size


def run(ctx):
    count = scaled(1000, 10)
    ironic = ctx.ironic(count)
    work = ctx.workdir / "storm"
    work.mkdir()
    policy = write_policy(work / "policy")
    svc = Service(ctx.binary, ["--ironic-url", ironic.url, "--refresh-interval", "3600"], work, policy)
    try:
        ready_s = svc.wait_ready(600)
        before = svc.metrics()
        log_offset = ironic_log_size(ironic)
        clients = [(node_address(i), [get_request(p) for p in PATHS]) for i in range(count)]
        t0 = time.monotonic()
        results = run_clients(svc.port, clients, concurrency=len(clients), timeout=300)
        wall = time.monotonic() - t0
        after = svc.metrics()
        ironic_logged = ironic_api_requests(ironic, log_offset)
    finally:
        svc.stop()

    latencies, crawl, errors = [], [], []
    for i, answers in enumerate(results):
        want_uuid = node_spec(i)["configdrive"]["meta_data"]["uuid"]
        crawl.append(sum(t for t, _ in answers))
        if len(answers) != len(PATHS):
            errors.append(f"{node_address(i)}: {len(answers)} answers")
        for path, (took, raw) in zip(PATHS, answers):
            latencies.append(took)
            if isinstance(raw, str):
                errors.append(f"{node_address(i)} {path}: {raw}")
                continue
            status, body = split_response(raw)
            if status != 200:
                errors.append(f"{node_address(i)} {path}: HTTP {status}")
            elif path.endswith("meta_data.json") and json.loads(body).get("uuid") != want_uuid:
                errors.append(f"{node_address(i)} {path}: another node's metadata")
    for e in errors[:10]:
        log(f"storm error: {e}")

    def delta(name):
        return after.get(name, 0.0) - before.get(name, 0.0)
    sent = delta("metadata_ironic_requests_total")
    sweeps = {t: delta(f'metadata_inventory_sweeps_total{{trigger="{t}"}}') for t in ("periodic", "on_demand")}
    out = {
        "nodes": count, "clients": count, "paths": PATHS, "requests": count * len(PATHS),
        "answered_200": count * len(PATHS) - len(errors), "errors": len(errors), "error_samples": errors[:10],
        "wall_s": wall, "requests_per_s": count * len(PATHS) / wall,
        "latency_ms": {"p50": percentile(latencies, 50) * 1000, "p99": percentile(latencies, 99) * 1000,
                       "max": max(latencies) * 1000},
        "crawl_ms": {"p50": median(crawl) * 1000, "p99": percentile(crawl, 99) * 1000, "max": max(crawl) * 1000},
        "ironic_requests_sent": sent, "ironic_requests_logged_by_ironic": ironic_logged, "sweeps": sweeps,
        "service_ready_s": ready_s, "concurrency": "all clients at once, one connection per request",
    }
    log(f"storm: {out['requests']} requests from {count} addresses in {wall:.2f}s, errors {len(errors)}, "
        f"p50 {out['latency_ms']['p50']:.1f} ms, p99 {out['latency_ms']['p99']:.1f} ms; "
        f"Ironic requests during the storm: {sent:.0f} sent, {ironic_logged} logged by Ironic")
    return out
