"""Scenario criterion: the in-process cost of the request path (benches/filters.rs), as
`cargo bench --bench filters -- --quick` measures it, read back from criterion's
target/criterion/<group>/<bench>/new/{benchmark,estimates}.json.

BENCH_CRITERION_PROFILE (default `release`) is passed as `cargo bench --profile`: the
release profile shares the dependencies the release build of the binary just compiled, where
the `bench` profile (plain `cargo bench`) would compile all of them again without LTO.
"""

import json
import os
import subprocess
import time
from pathlib import Path

from common import TOP, log


def target_dir():
    return Path(os.environ.get("CARGO_TARGET_DIR") or TOP / "target")


def parse(criterion_dir, since=0.0):
    """Every benchmark whose estimates were written at or after `since` (epoch seconds)."""
    out = []
    for est in sorted(Path(criterion_dir).glob("**/new/estimates.json")):
        if est.stat().st_mtime < since:
            continue
        meta_file = est.parent / "benchmark.json"
        meta = json.loads(meta_file.read_text()) if meta_file.exists() else {}
        doc = json.loads(est.read_text())
        mean, median = doc["mean"], doc["median"]
        out.append({
            "id": meta.get("full_id") or str(est.parent.parent.relative_to(criterion_dir)),
            "mean_ns": mean["point_estimate"],
            "mean_ci95_ns": [mean["confidence_interval"]["lower_bound"], mean["confidence_interval"]["upper_bound"]],
            "median_ns": median["point_estimate"],
            "std_dev_ns": doc.get("std_dev", {}).get("point_estimate"),
        })
    return out


def run(ctx):
    if ctx.criterion_from:
        directory = Path(ctx.criterion_from)
        benches = parse(directory)
        written = max((e.stat().st_mtime for e in directory.glob("**/new/estimates.json")), default=None)
        return {"command": None, "profile": None, "benchmarks": benches,
                "source": "existing criterion results (not re-run), written "
                          + (time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(written)) if written else "?")}
    profile = os.environ.get("BENCH_CRITERION_PROFILE", "release")
    cmd = ["cargo", "bench", "--locked", "--profile", profile, "--bench", "filters", "--", "--quick"]
    log("criterion: " + " ".join(cmd))
    since = time.time() - 1
    t0 = time.monotonic()
    out = subprocess.run(cmd, cwd=TOP, capture_output=True, text=True)
    took = time.monotonic() - t0
    (ctx.workdir / "criterion.log").write_text(out.stdout + out.stderr)
    if out.returncode:
        raise SystemExit(f"cargo bench failed ({out.returncode}):\n{out.stderr[-3000:]}")
    benches = parse(target_dir() / "criterion", since)
    if not benches:
        raise SystemExit("cargo bench wrote no criterion estimates")
    for b in benches:
        log(f"criterion {b['id']}: {b['mean_ns'] / 1000:.2f} µs")
    return {"command": " ".join(cmd), "profile": profile, "build_and_run_s": took,
            "source": "target/criterion/*/new/estimates.json", "benchmarks": benches}
