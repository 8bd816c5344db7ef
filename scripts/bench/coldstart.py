"""Scenario coldstart: time from process start until /readyz says ready, with 1,000 and
10,000 nodes in a real Ironic, against the time curl takes to fetch the same pages.

Readiness needs the first full sweep (GET / to negotiate the microversion, then every page
of nodes, ports and portgroups with detail=True, one after another), the index built and
the metadata listener accepting. The curl side fetches the same pages with the same
microversion, one curl process per page, following each `next` by its marker as the service
does, and is timed from the first page to the last. Runs alternate (ours, curl, ours, curl).
The pages curl fetched are kept: the memory scenario serves them as inventory files.
"""

import json
import subprocess
import time

from common import Service, log, median, scaled, write_policy

# The newest microversion ironic-metadata asks for (src/ironic/client.rs MAX_MINOR).
MAX_MINOR = 115
KINDS = ("nodes", "ports", "portgroups")


def curl_pass(ironic, version, keep_dir):
    """Seconds to fetch every page of the three collections; their items go to keep_dir."""
    inventory = {kind: [] for kind in KINDS}
    took = 0.0
    pages = 0
    for kind in KINDS:
        base = f"{ironic.url}/v1/{kind}?detail=True"
        url = base
        while url:
            page = keep_dir / "page.json"
            t0 = time.monotonic()
            subprocess.run(["curl", "-sf", "-o", str(page), "-H", f"X-OpenStack-Ironic-API-Version: {version}", url],
                           check=True)
            took += time.monotonic() - t0
            pages += 1
            doc = json.loads(page.read_text())
            inventory[kind].extend(doc[kind])
            marker = None
            if doc.get("next") and doc[kind]:
                marker = dict(p.split("=", 1) for p in doc["next"].split("?", 1)[1].split("&")).get("marker")
            url = f"{base}&marker={marker}" if marker else None
    (keep_dir / "page.json").unlink()
    return took, pages, inventory


def measure(ctx, count, rounds):
    ironic = ctx.ironic(count)
    version = ironic.api_version(MAX_MINOR)
    work = ctx.workdir / f"coldstart-{count}"
    work.mkdir()
    policy = write_policy(work / "policy")
    ours, curl, rss, sweep = [], [], [], []
    inventory = pages = None
    for r in range(1, rounds + 1):
        svc = Service(ctx.binary, ["--ironic-url", ironic.url, "--refresh-interval", "3600"], work, policy)
        try:
            ready = svc.wait_ready(900, interval=0.005)
            ours.append(ready)
            rss.append(svc.rss())
            sweep.append(svc.metric("metadata_inventory_sweep_duration_seconds_sum"))
            nodes = svc.readyz()["nodes"]
            if nodes != count:
                raise SystemExit(f"the service indexed {nodes} nodes, Ironic holds {count}")
        finally:
            svc.stop()
        took, pages, inventory = curl_pass(ironic, version, work)
        curl.append(took)
        log(f"coldstart {count} nodes round {r}: ready after {ready:.2f}s (sweep {sweep[-1]:.2f}s), "
            f"curl of the same {pages} pages {took:.2f}s")
    ctx.inventories[count] = inventory
    out = {
        "nodes": count, "ports": len(inventory["ports"]), "portgroups": len(inventory["portgroups"]),
        "pages": pages, "api_version": version, "rounds": rounds,
        "ready_s": ours, "curl_s": curl, "sweep_s": sweep,
        "ready_median_s": median(ours), "curl_median_s": median(curl),
        "ratio": median(ours) / median(curl),
        "rss_bytes_at_ready": rss,
    }
    log(f"coldstart {count} nodes: ready {out['ready_median_s']:.2f}s vs curl {out['curl_median_s']:.2f}s, "
        f"ratio {out['ratio']:.2f}")
    return out


def run(ctx):
    # Ironic lists a few hundred ports a second here, so one pass over 10,000 nodes takes most of a
    # minute: that size gets one round (ours, then curl).
    return {"runs": [measure(ctx, scaled(1000, 10), 3), measure(ctx, scaled(10000, 20), 1)]}
