#!/usr/bin/env python3
"""Runs the benchmark scenarios against an ironic-metadata binary and writes
results.json (machine-readable) and results.md (for people) into the output directory.

Usage: run.py --bin BINARY [--only hotpath,storm,...] [--out DIR] [--note TEXT]
              [--criterion-from DIR] [--build-seconds S] [--fake-ironic BINARY]

Scenarios, always run in this order (the Ironic-backed ones share one seeded Ironic,
grown from 1,000 to 10,000 nodes on the way):
  hotpath    nginx vs ironic-metadata on the same body, wrk, 1 and 2 threads
  storm      1,000 nodes of a real Ironic fetch cloud-init's 6 files at once
  coldstart  process start to ready with 1,000 and 10,000 nodes, vs curl of the same pages
  memory     RSS per indexed node; RSS around 100,000 rate-limited client addresses
  criterion  cargo bench --bench filters -- --quick, read back from target/criterion
  l2         the hot path with and without verify_mac, client and server in network
             namespaces on one veth (root)
  scale      100,000 nodes in a fake Ironic (examples/fake_ironic.rs, --fake-ironic) and
             10,000 in the real one: time to ready, steady-state Ironic requests per
             minute (fleet size, strangers, three replicas), a new node's first request,
             RSS per node, 1,000 parked wait_for_change requests

Results of scenarios not run this time are kept from the existing results.json. Run by
scripts/bench.sh, which installs the tools and builds the binary first; the Python is the
standard library only (the Ironic harness's venv provides Ironic itself).
"""

import argparse
import datetime
import json
import os
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import report  # noqa: E402

SCENARIOS = ("hotpath", "storm", "coldstart", "memory", "criterion", "l2", "scale")
NEEDS_IRONIC = {"storm", "coldstart", "memory", "scale"}


class Context:
    """What the scenarios share: the binary, a scratch directory, one seeded Ironic."""

    def __init__(self, binary, workdir, criterion_from, fake_ironic=None, hyper=None, pingora_floor=None):
        self.binary = binary
        self.fake_ironic = fake_ironic  # examples/fake_ironic.rs, built (scale)
        self.hyper = hyper  # examples/hyper_ceiling.rs, built (hotpath's ceiling)
        self.pingora_floor = pingora_floor  # examples/pingora_floor.rs, built (hotpath)
        self.workdir = workdir
        self.criterion_from = criterion_from
        self.results = {}  # this run's results so far, by scenario
        self.inventories = {}  # node count -> Ironic dump fetched by curl (coldstart)
        self._ironic = None

    def ironic(self, count):
        """The seeded Ironic, grown to `count` nodes (scenarios only ever ask for more)."""
        import ironic_seed
        if self._ironic is None:
            self._ironic = ironic_seed.SeededIronic(self.workdir)
        if self._ironic.count > count:
            raise SystemExit(f"Ironic already holds {self._ironic.count} nodes, {count} wanted")
        self._ironic.grow(count)
        return self._ironic

    def close(self):
        if self._ironic is not None:
            self._ironic.close()


def load_existing(path):
    try:
        doc = json.loads(path.read_text())
        return doc if isinstance(doc.get("scenarios"), dict) else None
    except (OSError, ValueError):
        return None


def terminated(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bin", required=True, help="ironic-metadata binary")
    parser.add_argument("--only", default=",".join(SCENARIOS), help="comma-separated scenarios")
    parser.add_argument("--out", default=str(common.TOP / "bench"), help="directory of results.json/.md")
    parser.add_argument("--note", default=os.environ.get("BENCH_NOTE", ""), help="remark printed in results.md")
    parser.add_argument("--binary-origin", default="built", help="how the binary was obtained (for results.md)")
    parser.add_argument("--criterion-from", help="read existing criterion results from DIR instead of running cargo")
    parser.add_argument("--build-seconds", type=float, help="time the release build took")
    parser.add_argument("--fake-ironic", help="the fake Ironic binary (examples/fake_ironic.rs) for scale")
    parser.add_argument("--hyper-ceiling", help="the bare hyper server (examples/hyper_ceiling.rs) for hotpath")
    parser.add_argument("--pingora-floor", help="the minimal pingora server (examples/pingora_floor.rs) for hotpath")
    args = parser.parse_args()

    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    chosen = [s for s in SCENARIOS if s in chosen]
    binary = Path(args.bin).resolve()
    if not os.access(binary, os.X_OK):
        raise SystemExit(f"{binary} is not an executable")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    # The storm holds 1,000 client sockets at once and the service as many: lift the soft
    # limit on open files (often 1024) to the hard one, for us and the servers we start.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    # SIGTERM unwinds like Ctrl-C, so every server started so far is stopped on the way out.
    signal.signal(signal.SIGTERM, terminated)

    started = time.time()
    script_started = float(os.environ.get("BENCH_T0") or started)
    doc = load_existing(out_dir / "results.json") or {"scenarios": {}}
    doc.update({
        "generated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": common.source_commit(),
        "binary": args.binary_origin,
        "machine": common.machine(),
        "tools": {"nginx": common.tool_version(["nginx", "-v"]), "wrk": common.tool_version(["wrk", "--version"]),
                  "curl": common.tool_version(["curl", "--version"])},
        "scale": common.scale(),
        "note": args.note,
        "last_run": {"scenarios": chosen, "build_s": args.build_seconds},
    })
    workdir = Path(tempfile.mkdtemp(prefix="ironic-metadata-bench-"))
    fake = Path(args.fake_ironic).resolve() if args.fake_ironic else None
    hyper = Path(args.hyper_ceiling).resolve() if args.hyper_ceiling else None
    floor = Path(args.pingora_floor).resolve() if args.pingora_floor else None
    ctx = Context(binary, workdir, args.criterion_from, fake, hyper, floor)
    failed = []
    try:
        for name in chosen:
            common.log(f"== {name}")
            module = __import__(name)
            load_before = os.getloadavg()
            t0 = time.monotonic()
            try:
                result = module.run(ctx)
            except (Exception, SystemExit) as e:  # noqa: BLE001 - record it, go on with the rest
                traceback.print_exc()
                result = {"error": str(e) or type(e).__name__}
                failed.append(name)
            result["meta"] = {
                "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "commit": doc["commit"], "binary": args.binary_origin, "scale": common.scale(),
                "seconds": time.monotonic() - t0,
                "load_average_before": load_before, "load_average_after": os.getloadavg(),
            }
            ctx.results[name] = result
            doc["scenarios"][name] = result
            common.log(f"== {name} took {result['meta']['seconds']:.0f}s")
    finally:
        ctx.close()
        shutil.rmtree(workdir, ignore_errors=True)
    doc["last_run"]["scenarios_s"] = time.time() - started
    doc["last_run"]["total_s"] = time.time() - script_started
    (out_dir / "results.json").write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    (out_dir / "results.md").write_text(report.render(doc))
    common.log(f"wrote {out_dir / 'results.json'} and {out_dir / 'results.md'} "
               f"({doc['last_run']['total_s']:.0f}s in all)")
    if failed:
        raise SystemExit(f"scenario(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
