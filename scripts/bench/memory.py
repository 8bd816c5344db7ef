"""Scenario memory: resident memory (VmRSS) of ironic-metadata.

Indexed nodes: the same Ironic content (dumps of the seeded Ironic at 1,000 and 10,000
nodes, as curl fetched them in the coldstart scenario) served from inventory files, against
an empty inventory; RSS is read once /readyz says ready. The Ironic-backed processes of the
coldstart scenario give the same figure with the HTTP client and its buffers included.

Rate limiter: a service with an empty inventory and a zone whose rate limit (one request
per 10 s, burst 1) keeps every client's state for 2 / rate = 20 s after its request (a
sweep drops a client whose bucket has been full for one period; src/policy/store.rs sweeps
every 10 s, a constant without a flag; scaled quick checks use 12 s). After a warm-up of
1,000 addresses, 100,000 distinct addresses (127.100.0.1 onwards, one connection and one
request each) ask once; then the sweep that reports 0 tracked clients is awaited and a
second wave of 100,000 other addresses (127.102.0.1 onwards) follows, then a sweep and a
third wave. RSS is read before, after each wave and after each sweep: memory is flat when
later waves reuse what the sweeps freed instead of adding to it.
"""

import json
import time

from common import Service, client_address, get_request, log, run_clients, scaled, split_response, write_policy

LIMITER_POLICY = """\
[[zone]]
name = "bench"
cidrs = ["127.0.0.0/8"]
action = "allow"
rate_limit = {rate}
"""
SWEEP_EVERY_S = 10
TRACKED = "metadata_ratelimit_tracked_clients"
WAVES = 3


def node_memory(ctx, work):
    policy = write_policy(work / "policy")
    sizes = [0] + [c for c in sorted(ctx.inventories)]
    if len(sizes) < 3:
        # Not run after coldstart: fetch the dumps now.
        import coldstart
        for count in (scaled(1000, 10), scaled(10000, 20)):
            ironic = ctx.ironic(count)
            work_c = work / f"dump-{count}"
            work_c.mkdir()
            ctx.inventories[count] = coldstart.curl_pass(ironic, ironic.api_version(coldstart.MAX_MINOR), work_c)[2]
        sizes = [0] + sorted(ctx.inventories)
    rows = []
    for count in sizes:
        inv = ctx.inventories.get(count, {"nodes": [], "ports": [], "portgroups": []})
        path = work / f"inventory-{count}.json"
        path.write_text(json.dumps(inv))
        svc = Service(ctx.binary, ["--inventory", str(path)], work, policy)
        try:
            svc.wait_ready(300)
            rows.append({"nodes": count, "rss_bytes": svc.rss(), "inventory_file_bytes": path.stat().st_size})
        finally:
            svc.stop()
        path.unlink()
    base = rows[0]["rss_bytes"]
    for row in rows[1:]:
        row["bytes_per_node"] = (row["rss_bytes"] - base) / row["nodes"]
    if len(rows) >= 3:
        a, b = rows[-2], rows[-1]
        marginal = (b["rss_bytes"] - a["rss_bytes"]) / (b["nodes"] - a["nodes"])
    else:
        marginal = None
    for row in rows:
        log(f"memory: {row['nodes']} nodes from a file: RSS {row['rss_bytes'] / 2**20:.1f} MiB"
            + (f", {row['bytes_per_node']:.0f} bytes per node" if "bytes_per_node" in row else ""))
    out = {"file_backed": rows, "file_backed_marginal_bytes_per_node": marginal}
    cold = (ctx.results.get("coldstart") or {}).get("runs") or []
    if len(cold) >= 2:
        lo, hi = cold[0], cold[-1]
        rss_lo, rss_hi = min(lo["rss_bytes_at_ready"]), min(hi["rss_bytes_at_ready"])
        out["ironic_backed"] = [{"nodes": lo["nodes"], "rss_bytes": rss_lo},
                                {"nodes": hi["nodes"], "rss_bytes": rss_hi}]
        out["ironic_backed_marginal_bytes_per_node"] = (rss_hi - rss_lo) / (hi["nodes"] - lo["nodes"])
    return out


def wave(svc, block, count):
    """`count` distinct addresses from 127.<block>.0.1 onwards, one GET /openstack each."""
    req = [get_request("/openstack")]
    clients = [(client_address(block, i), req) for i in range(count)]
    t0 = time.monotonic()
    results = run_clients(svc.port, clients, concurrency=200, timeout=600)
    took = time.monotonic() - t0
    bad = 0
    for answers in results:
        raw = answers[0][1] if answers else "no answer"
        if isinstance(raw, str) or split_response(raw)[0] != 200:
            bad += 1
    return took, bad


def state_lifetime():
    """Seconds a client's limiter state outlives its request: longer than a wave takes (20 s
    at full size), and longer than the sweep interval, so that a sweep after the wave still
    sees its clients."""
    return max(SWEEP_EVERY_S + 2.0, 20.0 * scaled(1000) / 1000)


def await_sweep(svc, since):
    """Poll the tracked-clients gauge (set by each sweep) until a sweep reports 0 after one
    reported the wave's clients; returns the largest count seen."""
    peak, deadline = 0.0, since + state_lifetime() + 3 * SWEEP_EVERY_S
    while True:
        tracked = svc.metric(TRACKED)
        peak = max(peak, tracked)
        if tracked == 0 and peak > 0:
            return peak
        if time.monotonic() > deadline:
            raise SystemExit(f"the limiter still tracks {tracked:.0f} clients {deadline - since:.0f}s after the wave")
        time.sleep(0.1)


def limiter_memory(ctx, work):
    # One request per `period` seconds, burst 1: a sweep drops a client's state 2 periods
    # after its request.
    rate = f"{{ per_second = {2 / state_lifetime():g}, burst = 1 }}"
    policy = write_policy(work / "limiter-policy", LIMITER_POLICY.format(rate=rate))
    count = scaled(100000, 1000)
    svc = Service(ctx.binary, ["--inventory", str(work / "empty.json")], work, policy)
    waves = []
    try:
        svc.wait_ready(60)
        wave(svc, 99, 1000)  # warm-up: connections, buffers and the limiter's first table
        rss_before = svc.rss()
        for k in range(WAVES):
            took, bad = wave(svc, 100 + 2 * k, count)  # 127.100.0.1, 127.102.0.1, 127.104.0.1 ...
            end = time.monotonic()
            row = {"seconds": took, "errors": bad, "rss_after_wave_bytes": svc.rss()}
            if k + 1 < WAVES:
                row["tracked_peak"] = await_sweep(svc, end)
                row["swept_after_s"] = time.monotonic() - end
                row["rss_after_sweep_bytes"] = svc.rss()
            waves.append(row)
            log(f"limiter wave {k + 1}: {count} addresses in {took:.1f}s, errors {bad}, RSS "
                f"{row['rss_after_wave_bytes'] / 2**20:.1f} MiB"
                + (f"; sweeps reported up to {row['tracked_peak']:.0f} clients, then 0 after "
                   f"{row['swept_after_s']:.0f}s: RSS {row['rss_after_sweep_bytes'] / 2**20:.1f} MiB"
                   if "tracked_peak" in row else ""))
    finally:
        svc.stop()
    first = waves[0]["rss_after_wave_bytes"] - rss_before
    later = waves[-1]["rss_after_wave_bytes"] - waves[0]["rss_after_wave_bytes"]
    return {
        "clients_per_wave": count, "policy": f"rate_limit = {rate}", "state_lifetime_s": state_lifetime(),
        "sweep_interval_s": SWEEP_EVERY_S, "rss_before_bytes": rss_before, "waves": waves,
        "errors": sum(w["errors"] for w in waves),
        "growth_first_wave_bytes": first, "growth_after_first_wave_bytes": later,
        "bytes_per_client_first_wave": first / count,
    }


def run(ctx):
    work = ctx.workdir / "memory"
    work.mkdir()
    (work / "empty.json").write_text('{"nodes": [], "ports": [], "portgroups": []}')
    out = {"nodes": node_memory(ctx, work)}
    out["limiter"] = limiter_memory(ctx, work)
    return out
