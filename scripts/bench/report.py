"""results.md from results.json: the machine, the targets next to what was measured, then
each scenario's figures and how they were taken."""

from pathlib import Path

KIB = 1024
MIB = 1024 * 1024


def fmt(value, digits=2):
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def mib(n):
    return "—" if n is None else f"{n / MIB:,.1f} MiB"


def size(n):
    return f"{n:,} bytes" if n < MIB else mib(n)


def verdict(ok):
    return "—" if ok is None else ("met" if ok else "**missed**")


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def scenario_meta(s):
    m = s.get("meta", {})
    load = m.get("load_average_before")
    text = f"measured {m.get('measured_at', '?')}, {fmt(m.get('seconds'), 0)} s"
    if load:
        text += f", load average {load[0]:.2f} before"
    if m.get("scale", 1) != 1:
        text += f", **scaled run (BENCH_SCALE={m['scale']})**"
    return f"_{text}._"


def flat_limiter(lim):
    """Flat: the waves after the first (each after a sweep) add, together, under 10% of what
    the first wave added."""
    return lim["growth_after_first_wave_bytes"] <= 0.1 * lim["growth_first_wave_bytes"]


def targets(sc):
    rows = []
    hp = sc.get("hotpath", {})
    for n, d in sorted(hp.get("by_threads", {}).items()):
        r = d["ratio"]
        ref = f"nginx ({d['reference']})" if "reference" in d else "nginx"
        rows.append((f"hot path, {n} thread(s): req/s ≥ 1.0× {ref}", f"{r['rps']:.2f}×", verdict(r["rps"] >= 1.0)))
        rows.append((f"hot path, {n} thread(s): p99 ≤ 1.2× {ref}", f"{r['p99']:.2f}×", verdict(r["p99"] <= 1.2)))
        if "rps_of_ceiling" in r:
            rows.append((f"hot path, {n} thread(s): req/s of the hyper ceiling (reported)",
                         f"{r['rps_of_ceiling']:.2f}×", "—"))
        if "rps_of_floor" in r:
            rows.append((f"hot path, {n} thread(s): req/s of the pingora floor (reported); the floor itself",
                         f"{r['rps_of_floor']:.2f}×; floor {r['floor_rps']:.2f}× {ref}", "—"))
    st = sc.get("storm", {})
    if "errors" in st:
        rows.append(("boot storm: 0 errors", f"{st['errors']} of {fmt(st['requests'])}", verdict(st["errors"] == 0)))
        rows.append(("boot storm: 0 per-request Ironic calls",
                     f"{st['ironic_requests_sent']:.0f} sent "
                     f"({st['ironic_requests_logged_by_ironic']} in Ironic's log)",
                     verdict(st["ironic_requests_sent"] == 0 and st["ironic_requests_logged_by_ironic"] == 0)))
    nodes = sc.get("memory", {}).get("nodes", {})
    if nodes.get("file_backed"):
        per = [r["bytes_per_node"] for r in nodes["file_backed"] if "bytes_per_node" in r]
        if per:
            worst = max(per)
            rows.append(("≤ 2 KiB per indexed node (file inventory)",
                         f"{worst / KIB:.2f} KiB (largest of {', '.join(f'{p / KIB:.2f}' for p in per)})",
                         verdict(worst <= 2 * KIB)))
        if nodes.get("ironic_backed_marginal_bytes_per_node") is not None:
            m = nodes["ironic_backed_marginal_bytes_per_node"]
            rows.append(("≤ 2 KiB per indexed node (Ironic source, 1k→10k)", f"{m / KIB:.2f} KiB",
                         verdict(m <= 2 * KIB)))
    lim = sc.get("memory", {}).get("limiter")
    if lim:
        rss = [lim["rss_before_bytes"]] + [w["rss_after_wave_bytes"] for w in lim["waves"]]
        growth = ", ".join(f"wave {k} +{mib(b - a)}" for k, (a, b) in enumerate(zip(rss, rss[1:]), 1))
        rows.append(("limiter memory flat after the sweep (waves 2 on add < 10% of wave 1)", growth,
                     verdict(flat_limiter(lim))))
    rows += scale_targets(sc.get("scale", {}))
    return rows


def scale_targets(sc):
    if "steady" not in sc:
        return []
    st, rows = sc["steady"], []
    one, small = st["one_replica"], st["small_fleet"]
    rows.append((f"steady-state Ironic requests/min independent of fleet size ({fmt(small['nodes'])} → "
                 f"{fmt(one['nodes'])} nodes, within 10%)",
                 f"{small['requests_per_minute']:.0f} → {one['requests_per_minute']:.0f} ({sc['fleet_ratio']:.2f}×)",
                 verdict(sc["fleet_ratio"] <= 1.1)))
    strangers = st["strangers"]
    added = strangers["requests_per_minute"] - one["requests_per_minute"]
    rows.append((f"… and of strangers' addresses: {fmt(strangers['strangers'])} unknown addresses over the window "
                 "add at most one quick probe a second (60/min), as any number would",
                 f"{one['requests_per_minute']:.0f} → {strangers['requests_per_minute']:.0f} "
                 f"(+{added:.0f}/min, {sc['strangers_ratio']:.2f}×)", verdict(added <= 60)))
    nn = sc["new_node"]
    rows.append(("a node made active is served within 2 s of its first request, ≤ 3 Ironic calls",
                 f"{nn['served_after_s_max'] * 1000:.0f} ms, {nn['ironic_calls_max']} calls (worst of "
                 f"{len(nn['trials'])})", verdict(nn["served_after_s_max"] <= 2 and nn["ironic_calls_max"] <= 3)))
    mem = sc["memory"]
    rows.append((f"≤ 2 KiB RSS per indexed node at {fmt(mem['nodes'])} nodes (Ironic source)",
                 f"{mem['bytes_per_node'] / KIB:.2f} KiB", verdict(mem["bytes_per_node"] <= 2 * KIB)))
    pk = sc["parked"]
    rows.append((f"{fmt(pk['parked'])} parked long-polls: other clients' p99 unchanged (≤ 1.2×)",
                 f"{pk['latency_with_ms']['p99']:.1f} ms with, {pk['latency_without_ms']['p99']:.1f} / "
                 f"{pk['latency_without_again_ms']['p99']:.1f} ms without ({pk['p99_ratio']:.2f}×)",
                 verdict(pk["p99_ratio"] <= 1.2)))
    return rows


def wrk_table(what, runs, medians):
    """wrk runs one per row, then the median of each server (`medians`: name -> summary)."""
    rows = [(r["round"], r["server"], fmt(r["rps"], 0), fmt(r["p50_ms"], 3), fmt(r["p99_ms"], 3),
             fmt(r["p999_ms"], 3), r["errors"]) for r in runs]
    for s, m in medians.items():
        rows.append(("median", f"**{s}**", f"**{fmt(m['rps'], 0)}**", fmt(m["p50_ms"], 3),
                     f"**{fmt(m['p99_ms'], 3)}**", fmt(m["p999_ms"], 3), m["errors"]))
    return table(("round", what, "req/s", "p50 ms", "p99 ms", "p99.9 ms", "errors"), rows)


def hotpath_section(hp):
    out = ["## 1. Hot path against nginx", "", scenario_meta(hp), ""]
    if "error" in hp:
        return out + [f"Failed: `{hp['error']}`", ""]
    out += [
        f"`GET {hp['path']}` ({fmt(hp.get('body_bytes'))} bytes) from 127.0.0.1: nginx serves the body as a "
        "static file (`worker_processes N`, `access_log off`), once with `sendfile off` "
        "(`nginx-sendfile-off`, nginx's compiled default) and once with `sendfile on; tcp_nopush on;` "
        "(`nginx-nopush`, Debian's nginx.conf); the faster of the two (median req/s) is the reference. "
        "`hyper` is a bare hyper 1.x server answering the same bytes (`examples/hyper_ceiling.rs`: no "
        "address check, zone, limit or rendering), the ceiling. `pingora-floor` is the least a pingora 0.9 "
        "HTTP service does per request (`examples/pingora_floor.rs`: pingora's own `ServeHttp` app answering the "
        "same bytes through the same 16 KiB write buffer, nothing else): what separates it from nginx is "
        "pingora's, what separates ironic-metadata from it is the service's. ironic-metadata serves it through its whole "
        "request path (zone 127.0.0.0/8 with a rate limit that never triggers, identity of node `web-0` of "
        "`examples/inventory.json`, render) with `--threads N`. The nginx file is what ironic-metadata "
        "answered (fetched with curl), byte for byte; ironic-metadata puts 512 fresh random bytes in "
        "`random_seed` on every answer, as Nova does, so its bodies differ from that file in those bytes "
        "only (same length).",
        "",
        f"wrk: {hp['connections']} keep-alive connections, 1 thread, {hp['warmup_s']} s warm-up then "
        f"{hp['duration_s']} s measured per run, servers alternating over {hp['rounds']} rounds; "
        "p50/p99/p99.9 are wrk's exact percentiles (Lua `done()` hook); a run with any answer that is not 2xx "
        "(wrk's \"Non-2xx or 3xx responses\" line) fails the scenario. "
        f"{hp.get('pinning', '')}. The load generator runs on the same two cores as the servers.",
        "",
    ]
    for n, d in sorted(hp["by_threads"].items()):
        out += [f"### {n} thread(s)", ""]
        out += [wrk_table("server", d["runs"], d["median"]), ""]
        r = d["ratio"]
        ref = d.get("reference", "nginx")
        line = f"ours/{ref}: req/s **{r['rps']:.2f}×**, p99 **{r['p99']:.2f}×**, p99.9 {r['p999']:.2f}×."
        if "rps_of_ceiling" in r:
            line += f" ours/hyper: req/s **{r['rps_of_ceiling']:.2f}×**, p99 {r['p99_of_ceiling']:.2f}×."
        if "rps_of_floor" in r:
            line += (f" pingora floor/{ref}: req/s **{r['floor_rps']:.2f}×**, p99 {r['floor_p99']:.2f}×;"
                     f" ours/pingora floor: req/s **{r['rps_of_floor']:.2f}×**, p99 {r['p99_of_floor']:.2f}×.")
        out += [line, ""]
    return out


def storm_section(st):
    out = ["## 2. Boot storm against a real Ironic", "", scenario_meta(st), ""]
    if "error" in st:
        return out + [f"Failed: `{st['error']}`", ""]
    out += [
        f"{fmt(st['nodes'])} deployed nodes in a real Ironic (sqlite, fake hardware; see \"Seeding Ironic\" "
        f"below); ironic-metadata reads it (refresh interval 1 h, so no periodic sweep falls in the storm). "
        f"{fmt(st['clients'])} clients, each from the address its node claims, all start at once and each "
        "fetch, one after another on a fresh connection each, the files cloud-init's OpenStack datasource "
        "reads (checked against cloud-init 22.4, Debian 12's: `MetadataReader.read_v2` after "
        "`_find_working_version`, which picks 2018-08-27, the newest version it knows):",
        "",
    ] + [f"- `{p}`" for p in st["paths"]] + [
        "",
        "(cloud-init then crawls the EC2 tree as well; not part of this storm.)",
        "",
        table(("", "value"), [
            ("requests", fmt(st["requests"])),
            ("answered 200 with the client's own node", fmt(st["answered_200"])),
            ("errors", f"**{st['errors']}**"),
            ("wall time", f"{st['wall_s']:.2f} s ({fmt(st['requests_per_s'], 0)} req/s)"),
            ("latency per request p50 / p99 / max", f"{st['latency_ms']['p50']:.1f} / {st['latency_ms']['p99']:.1f} / "
                                                    f"{st['latency_ms']['max']:.1f} ms"),
            ("one node's whole crawl p50 / p99 / max", f"{st['crawl_ms']['p50']:.1f} / {st['crawl_ms']['p99']:.1f} / "
                                                      f"{st['crawl_ms']['max']:.1f} ms"),
            ("requests to Ironic during the storm (`metadata_ironic_requests_total`)",
             f"**{st['ironic_requests_sent']:.0f}**"),
            ("requests in Ironic's API log during the storm", f"**{st['ironic_requests_logged_by_ironic']}**"),
            ("sweeps during the storm", ", ".join(f"{k} {v:.0f}" for k, v in st["sweeps"].items())),
        ]),
        "",
        "Latencies are taken by a single-threaded client (non-blocking sockets) that shares the two cores "
        "with the service: with 1,000 connections open at once they include the client's own queueing.",
        "",
    ]
    return out


def coldstart_section(cs):
    out = ["## 3. Cold start against a real Ironic", "", scenario_meta(cs), ""]
    if "error" in cs:
        return out + [f"Failed: `{cs['error']}`", ""]
    out += [
        "From process start to the first `/readyz` that says `ready` (polled every 5 ms): microversion "
        "negotiation, every page of nodes, ports and portgroups with `detail=True`, the index and the "
        "listener. Against it: curl fetching the same pages (same microversion, one curl per page, following "
        "`next` by its marker), timed from the first page to the last. Runs alternate ours, curl.",
        "",
    ]
    rows = []
    for r in cs["runs"]:
        rows.append((fmt(r["nodes"]), fmt(r["ports"]), fmt(r["portgroups"]), r["pages"], r["rounds"],
                     ", ".join(f"{x:.2f}" for x in r["ready_s"]), ", ".join(f"{x:.2f}" for x in r["curl_s"]),
                     f"**{r['ratio']:.2f}×**"))
    out += [table(("nodes", "ports", "portgroups", "pages", "rounds", "ready, s", "curl, s", "ours / curl"), rows), ""]
    out += ["Ironic sets the pace: most of both columns is Ironic building its pages (its port listing "
            "looks up each port's portgroup one by one and manages a few hundred ports a second here).", ""]
    return out


def memory_section(mem):
    out = ["## 4. Memory", "", scenario_meta(mem), ""]
    if "error" in mem:
        return out + [f"Failed: `{mem['error']}`", ""]
    nodes = mem["nodes"]
    rows = [(fmt(r["nodes"]), mib(r["rss_bytes"]), size(r["inventory_file_bytes"]),
             f"{r['bytes_per_node']:,.0f} B ({r['bytes_per_node'] / KIB:.2f} KiB)" if "bytes_per_node" in r else "—")
            for r in nodes["file_backed"]]
    out += [
        "VmRSS once `/readyz` says ready, serving the dumps of the seeded Ironic (as curl fetched them in "
        "scenario 3) from inventory files; bytes per node against the empty inventory.",
        "",
        table(("nodes", "RSS", "inventory file", "per node"), rows), "",
    ]
    if nodes.get("file_backed_marginal_bytes_per_node") is not None:
        out += [f"Marginal cost between the two sizes: {nodes['file_backed_marginal_bytes_per_node']:,.0f} bytes "
                "per node.", ""]
    if nodes.get("ironic_backed"):
        ib = nodes["ironic_backed"]
        out += [f"Reading Ironic instead (the processes of scenario 3 at ready): {mib(ib[0]['rss_bytes'])} with "
                f"{fmt(ib[0]['nodes'])} nodes, {mib(ib[1]['rss_bytes'])} with {fmt(ib[1]['nodes'])}: "
                f"{nodes['ironic_backed_marginal_bytes_per_node']:,.0f} bytes per additional node.", ""]
    lim = mem.get("limiter")
    if lim:
        moments = [("before (after a warm-up of 1,000 addresses)", mib(lim["rss_before_bytes"]))]
        for k, w in enumerate(lim["waves"], 1):
            moments.append((f"after wave {k} ({w['seconds']:.1f} s, {w['errors']} errors)",
                            mib(w["rss_after_wave_bytes"])))
            if "rss_after_sweep_bytes" in w:
                moments.append((f"after the sweep (tracked clients seen: up to {w['tracked_peak']:,.0f}, "
                                f"then 0, {w['swept_after_s']:.0f} s after the wave)",
                                mib(w["rss_after_sweep_bytes"])))
        out += [
            "### Rate limiter",
            "",
            f"Empty inventory, a zone with `{lim['policy']}`: a client's state is kept until "
            f"{lim.get('state_lifetime_s', 20):g} s after its request. The limiter is swept every "
            f"{lim['sweep_interval_s']} s (a constant in `src/policy/store.rs`; no flag changes it). Each wave is "
            f"{fmt(lim['clients_per_wave'])} distinct addresses (one connection and one request each, 200 "
            "at a time); after each wave but the last, the sweep that reports 0 tracked clients is awaited.",
            "",
            table(("moment", "RSS"), moments),
            "",
            f"Wave 1 grew RSS by {lim['bytes_per_client_first_wave']:,.0f} bytes per address (limiter state, "
            "connection buffers and allocator arenas together). The sweep frees the limiter's table but the "
            "allocator keeps most of the pages, so RSS barely drops; flat means later waves reuse them: "
            f"waves 2 to {len(lim['waves'])} added {mib(lim['growth_after_first_wave_bytes'])} together "
            f"(target: under 10% of wave 1's {mib(lim['growth_first_wave_bytes'])}). RSS moves by a few MiB "
            "whenever the allocator opens or grows a per-thread arena, so small differences are noise.",
            "",
        ]
    return out


def l2_section(l2):
    out = ["## 6. L2-verified identity on the hot path", "", scenario_meta(l2), ""]
    if "error" in l2:
        return out + [f"Failed: `{l2['error']}`", ""]
    out += [
        f"`GET {l2['path']}` from a node on the same segment: a client namespace (the node's MAC and "
        "address) and a server namespace joined by a veth pair. Two ironic-metadata processes "
        "(`--threads 1`) serve the same node; `plain` from a zone without MAC checks, `verify_mac` from "
        "one with `verify_mac = true`, where each answer asks the kernel for its route to the client and "
        "for the client's neighbour entry (rtnetlink), once per connection. "
        f"wrk: {l2['connections']} keep-alive connections, 1 thread, {l2['warmup_s']} s warm-up then "
        f"{l2['duration_s']} s per run, alternating over {l2['rounds']} rounds"
        + ("; server on CPU 0, wrk on CPU 1." if l2.get("pinned") else "."),
        "",
    ]
    for mode, d in l2["by_mode"].items():
        out += [f"### {'kept-alive connections' if mode == 'keep-alive' else 'a new connection per request'}", ""]
        out += [wrk_table("zone", [r for r in l2["runs"] if r["mode"] == mode], d["median"]), ""]
        r = d["ratio"]
        out += [f"verify_mac/plain: req/s **{r['rps']:.2f}×**, p99 **{r['p99']:.2f}×**.", ""]
    return out


def criterion_section(cr):
    out = ["## 5. Filter overhead (criterion)", "", scenario_meta(cr), ""]
    if "error" in cr:
        return out + [f"Failed: `{cr['error']}`", ""]
    cmd = cr.get("command") or "—"
    out += [
        "`benches/filters.rs`: one request through `gateway::handle` (client address, zone, rate limit, "
        "hygiene, token, identity, render) without the network, over `tests/fixtures/nodes.json`. "
        f"Command: `{cmd}`; figures from {cr.get('source')}.",
        "",
        table(("benchmark", "mean", "95% interval"), [
            (f"`{b['id']}`", f"{b['mean_ns'] / 1000:.2f} µs",
             f"{b['mean_ci95_ns'][0] / 1000:.2f} – {b['mean_ci95_ns'][1] / 1000:.2f} µs")
            for b in cr["benchmarks"]]),
        "",
    ]
    return out


def purposes(row):
    p = row.get("by_purpose", {})
    text = ", ".join(f"{k} {(v['requests'] if isinstance(v, dict) else v):,}" for k, v in sorted(p.items())) or "—"
    if "polls_full" in row:
        text += f" ({row['polls_full']} full polls, {row['polls_quick']} quick)"
    return text


def scale_section(sc):
    out = ["## 7. The Ironic source at scale", "", scenario_meta(sc), ""]
    if "error" in sc:
        return out + [f"Failed: `{sc['error']}`", ""]
    rd, real, st = sc["ready"], sc["real_ironic"], sc["steady"]
    out += [
        f"The service with its default settings (a poll for changes every 2 s, a page of 1,000 node UUIDs "
        f"every 15 s, a full sweep every hour, a quick poll for unknown clients at most once a second) "
        f"against a fake Ironic (`examples/fake_ironic.rs`) holding {fmt(rd['nodes'])} "
        "deployed nodes of the benchmark's shape (one port, `node.network_data`, a configdrive as Ironic stores "
        "one: base64 of a gzipped ISO 9660 image with Joliet and Rock Ridge, label `config-2`, each node's own) "
        f"and against the real seeded Ironic with {fmt(real['nodes'])}. The fake counts every request it "
        "answers, by kind; every answer the benchmark gets is checked (status, and the node's own data where "
        f"known: {fmt(sc.get('sample_checked'))} nodes spread over the fleet were asked for their user data).",
        "",
        "### Time to ready",
        "",
        table(("Ironic", "nodes", "ready after", "RSS at ready", "Ironic requests for the first load"), [
            ("fake", fmt(rd["nodes"]), f"**{rd['ready_s']:.1f} s**", mib(rd["rss_at_ready_bytes"]),
             f"{fmt(rd['ironic_requests'])} ({mib(rd['ironic_bytes'])})"),
            ("real (sqlite)", fmt(real["nodes"]), f"**{real['ready_s']:.1f} s**", mib(real["rss_bytes"]), "—"),
        ]),
        "",
        "### Ironic requests in steady state",
        "",
        f"Nothing changes in Ironic; requests counted at the fake over {sc['window_s']:.0f} s windows (the real "
        "Ironic: lines of its API log). By purpose: `polls` are the change probes (the newest ten rows by "
        "`updated_at`, and of nodes, ports and portgroups by `created_at`), `node_reads` a changed node read with its ports and portgroups, "
        "`reconcile` the pages of node UUIDs, `full_sweeps` every page of the three collections. A full poll is "
        "the four probes; a quick one, asked for by a request from an unknown address, the first probe alone.",
        "",
    ]
    rows = []
    for key, label in (("small_fleet", "small fleet"), ("one_replica", "one replica"),
                       ("strangers", "one replica, strangers asking"), ("three_replicas", "three replicas")):
        r = st[key]
        rows.append((label, fmt(r["nodes"]), r["replicas"], f"{r['seconds']:.0f} s",
                     f"**{r['requests_per_minute']:.0f}**", f"{r['requests_per_minute'] / r['replicas']:.0f}",
                     mib(r["bytes_per_minute"]), purposes(r)))
    rs = real["steady"]
    rows.append(("real Ironic, one replica", fmt(real["nodes"]), 1, f"{rs['seconds']:.0f} s",
                 f"**{rs['requests_per_minute']:.0f}**", f"{rs['requests_per_minute']:.0f}", "—", purposes(rs)))
    out += [table(("run", "nodes", "replicas", "window", "requests/min", "per replica", "per minute", "by purpose"),
                  rows), ""]
    sb = sc["strangers_burst"]
    burst_kinds = ", ".join(f"{k} {v['requests']}" for k, v in sb["by_kind"].items()) or "none"
    out += [f"Strangers: {fmt(st['strangers']['strangers'])} distinct unknown addresses (127.202.0.1 onwards) asked "
            "once each, spread evenly over the window above, each answered 404. Another "
            f"{fmt(sb['strangers'])} (127.200.0.1 onwards) asked all at once: answered 404 in {sb['seconds']:.2f} s "
            f"with {sb['ironic_requests']} Ironic requests meanwhile "
            f"({burst_kinds}).", ""]
    nn = sc["new_node"]
    out += [
        "### A node made active",
        "",
        "Right after the fake answered a periodic poll, a new active node is added to it (created and updated "
        "now) and asks for its user data at once, from its own address. Time from that first request to the "
        "answer with its data; the Ironic requests the fake answered from the deploy to that answer.",
        "",
        table(("node", "first answer", "its data after", "Ironic calls", "which"), [
            (t["node"], t["first_status"], f"{t['served_after_s'] * 1000:.0f} ms", t["ironic_calls"],
             ", ".join(t["calls"])) for t in nn["trials"]]),
        "",
    ]
    mem, pk = sc["memory"], sc["parked"]
    out += [
        "### Memory per indexed node",
        "",
        f"VmRSS in steady state (after the window above): {mib(mem['rss_bytes'])} with {fmt(mem['nodes'])} nodes, "
        f"{mib(mem['rss_empty_bytes'])} against an empty fake: **{mem['bytes_per_node']:,.0f} bytes "
        f"({mem['bytes_per_node'] / KIB:.2f} KiB) per node**.",
        "",
        "### Parked long-polls",
        "",
        f"{fmt(pk['parked'])} nodes each park `GET /openstack/latest/user_data?wait_for_change=true&last_etag=E"
        f"&timeout_sec={pk['timeout_sec']}` holding their document's ETag (parked in {pk['parked_in_s']:.1f} s). "
        f"Other clients: {pk['other_clients']} other nodes, {pk['requests_per_client']} requests each for "
        "`meta_data.json`, a new connection each, all at once (a single-threaded Python client on the same "
        "two cores: its own queueing is in the figures), without the parked requests, with them, and without "
        f"them again. Then {pk['edited']} of the parked nodes were edited in the fake: each parked request came "
        "back with the new user data; the others stayed parked and answered their unchanged document at their "
        "timeout.",
        "",
        table(("", "RSS", "p50", "p99"), [
            ("without", mib(pk["rss_before_bytes"]), f"{pk['latency_without_ms']['p50']:.1f} ms",
             f"{pk['latency_without_ms']['p99']:.1f} ms"),
            (f"{fmt(pk['parked'])} parked", mib(pk["rss_after_bytes"]), f"{pk['latency_with_ms']['p50']:.1f} ms",
             f"**{pk['latency_with_ms']['p99']:.1f} ms**"),
            ("without, again", "—", f"{pk['latency_without_again_ms']['p50']:.1f} ms",
             f"{pk['latency_without_again_ms']['p99']:.1f} ms"),
        ]),
        "",
        f"RSS grew by {pk['rss_per_parked_bytes']:,.0f} bytes per parked request. Ironic requests while the "
        f"requests were parked and the load ran: {pk['ironic_requests_while_measuring']} (periodic polls; a "
        "parked request makes none).",
        "",
    ]
    return out


HOW = """\
## Running the benchmarks

```sh
scripts/bench.sh                    # everything: installs nginx, wrk, curl and the Ironic venv,
                                    # builds the release binary, writes bench/results.{md,json}
scripts/bench.sh --only hotpath     # one scenario (hotpath, storm, coldstart, memory, criterion, l2, scale)
BENCH_SCALE=0.2 scripts/bench.sh --out "$(mktemp -d)"   # shorter runs, fewer nodes and clients
IRONIC_METADATA_BIN=path/to/ironic-metadata scripts/bench.sh   # skip the build
```

`scripts/bench.sh --help` lists every option. Every server takes a free 127.0.0.1 port and
every client address is in 127.0.0.0/8; nothing else is contacted. On two cores the
scenarios take about 6 minutes; the release build (about 5 minutes there) and the criterion
step's build come on top.

### Seeding Ironic

Enrolling and deploying 1,000 nodes through Ironic's API takes about 11 minutes, so
`scripts/bench/ironic_seed.py` deploys three template nodes through the API (a plain NIC, an
LACP bond, a VLAN: the harness's node kinds, with configdrives) and writes every further node
straight into Ironic's sqlite database while Ironic is stopped: a copy of its kind's
template row with its own uuid, name, instance uuid, `network_data`, configdrive and MACs,
with copies of the template's ports and portgroups. Ironic is started again on that
database (with its periodic power-state sync turned off, which would otherwise walk every
node each minute on the same two cores) and `GET /v1/nodes?detail=True` must list every
node as `active`. Node *i* claims 127.1.x.y (its `network_data` and its configdrive's), so
the benchmark can speak as any node.

### The fake Ironic (scale)

`examples/fake_ironic.rs` (built by `scripts/bench.sh` with `cargo build --release --example
fake_ironic`, or taken from `FAKE_IRONIC_BIN`) makes N deployed nodes in seconds: node *i*
has one port, a `node.network_data` and a configdrive in the form Ironic stores one (base64
of a gzipped ISO 9660 image with Joliet and Rock Ridge, label `config-2`, the files of
openstacksdk's `configdrive.build`), both network_data documents claiming 127.1.x.y as the
seeded Ironic's node *i* does. `genisoimage` (openstacksdk's flags) builds one template image
per node kind whose files hold fixed-width placeholders (JSON allows spaces after a value);
only the stretch of the image holding them is deflated per node, the rest once, and the
members are joined at sync-flush boundaries. It answers what the service asks (pagination
with `marker`/`limit` and `next`, Ironic's default `max_limit` of 1,000, `sort_key`/`sort_dir`,
`fields`, the `node` filter, `/v1/nodes/{uuid}`, microversion headers), counts every request
by kind, and has control endpoints (`/_fake/stats`, `/_fake/requests`, `/_fake/node`,
`/_fake/deploy`, `/_fake/edit`, `/_fake/delete`).
"""


def render(doc):
    sc = doc.get("scenarios", {})
    m = doc.get("machine", {})
    out = ["# Benchmarks", "",
           "Written by `scripts/bench.sh` (see \"Running the benchmarks\" at the end); "
           "`bench/results.json` holds the same figures and every run.", ""]
    out += [table(("", ""), [
        ("commit", f"`{doc.get('commit', '?')}`"),
        ("binary", doc.get("binary", "?")),
        ("generated", doc.get("generated_at", "?")),
        ("CPU", f"{m.get('cpu_model', '?')}"),
        ("cores", m.get("cores", "?")),
        ("memory", f"{m.get('memory_bytes', 0) / 2**30:.1f} GiB"),
        ("kernel", m.get("kernel", "?")),
        ("OS", m.get("os", "?")),
        ("tools", ", ".join(v for v in (doc.get("tools") or {}).values() if v)),
        ("load average at start", ", ".join(f"{x:.2f}" for x in m.get("load_average_at_start", []))),
        ("last run", f"{', '.join(doc.get('last_run', {}).get('scenarios', []))} in "
                     f"{fmt(doc.get('last_run', {}).get('total_s'), 0)} s"
                     + (f" (release build {fmt(doc['last_run']['build_s'], 0)} s)"
                        if doc.get("last_run", {}).get("build_s") else "")),
    ]), ""]
    out += ["Load generators (wrk, the Python clients, curl) run on the same machine and share its cores "
            "with the servers under test.", ""]
    if doc.get("note"):
        out += [f"**Note:** {doc['note']}", ""]
    rows = targets(sc)
    if rows:
        out += ["## Targets", "", table(("target", "measured", ""), rows), ""]
    # Profiles of missed targets and what was fixed, written by hand next to the results.
    notes = Path(__file__).resolve().parents[2] / "bench" / "profiling.md"
    if notes.exists():
        out += [notes.read_text().rstrip(), ""]
    for name, section in (("hotpath", hotpath_section), ("storm", storm_section),
                          ("coldstart", coldstart_section), ("memory", memory_section),
                          ("criterion", criterion_section), ("l2", l2_section), ("scale", scale_section)):
        if name in sc:
            out += section(sc[name])
        else:
            out += [f"## {name}", "", "Not measured yet.", ""]
    out += [HOW]
    return "\n".join(out)
