//! The fuzz targets' checked-in inputs as ordinary tests: every seed, and every input that
//! once made a target fail (`fuzz/regressions/<target>/`), must pass the target's checks.

use std::path::Path;

use ironic_metadata::fuzzing::TARGETS;

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

#[test]
fn every_seed_and_regression_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in TARGETS {
        let seeds = inputs(&root.join("seeds").join(name));
        assert!(!seeds.is_empty(), "target {name} has no seed corpus");
        let regressions = inputs(&root.join("regressions").join(name));
        for (file, data) in seeds.iter().chain(&regressions) {
            let run = std::panic::catch_unwind(|| target(data));
            assert!(run.is_ok(), "{name}: {file} fails");
        }
    }
}

/// Every fuzz target `fuzz/Cargo.toml` builds is a target of `TARGETS` (so its seeds and
/// regressions are replayed here), and the other way round.
#[test]
fn the_fuzz_crate_builds_every_target() {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml");
    let text = std::fs::read_to_string(manifest).unwrap();
    let mut built: Vec<&str> = text
        .split("[[bin]]")
        .skip(1)
        .filter_map(|bin| {
            let line = bin.lines().find(|l| l.trim_start().starts_with("name"))?;
            line.split('"').nth(1)
        })
        .collect();
    built.sort_unstable();
    let mut listed: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    listed.sort_unstable();
    assert_eq!(built, listed);
}
