//! Warm restart: with a state directory, the index's inputs are kept in
//! `index.snapshot` and a restart serves from them before Ironic answers, then catches up
//! by polling from the stored watermark (no full sweep); a snapshot that is damaged, cut
//! short or of another Ironic is ignored with one log line naming it (a cold start).

mod common;

use std::path::Path;
use std::time::Duration;

use common::fake_ironic::{node, FakeIronic, Mode};
use common::{client_from, eventually, get, Server};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn ip(n: u32) -> String {
    format!("127.0.1.{}", n + 1)
}

fn fleet(fake: &FakeIronic, count: u32, tag: &str) {
    fake.with(|s| {
        s.nodes = (1..=count)
            .map(|n| {
                let mut v = node(&uuid(n), &format!("{tag}{n}"), &ip(n));
                v["created_at"] = json!("2025-12-01T00:00:00.000000+00:00");
                v["updated_at"] = json!("2026-01-01T00:00:00.000000+00:00");
                v
            })
            .collect();
    });
}

async fn user_data(s: &Server, from: &str) -> (u16, String) {
    let (status, _, body) = get(&client_from(from), &s.url("/openstack/latest/user_data")).await;
    (status, body)
}

async fn ready(s: &Server) {
    eventually(WAIT, "ready", || async {
        s.readyz().await["ready"] == true
    })
    .await;
}

fn start(fake: &FakeIronic, state: &Path) -> Server {
    Server::start_ironic(
        &fake.url(),
        &[
            "--state-dir",
            state.to_str().unwrap(),
            "--poll-interval",
            "1",
            "--reconcile-interval",
            "3600",
            "--ironic-timeout",
            "2",
        ],
        &[],
    )
}

/// A first run that leaves a snapshot of `fake` in `state`.
async fn first_run(fake: &FakeIronic, state: &Path) {
    let s = start(fake, state);
    ready(&s).await;
    s.metric_reaches(
        "metadata_inventory_snapshot_writes_total{result=\"ok\"}",
        1.0,
    )
    .await;
    s.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_serves_from_the_snapshot_then_catches_up_by_polling() {
    let fake = FakeIronic::start().await;
    fleet(&fake, 3, "n");
    let state = tempfile::tempdir().unwrap();
    first_run(&fake, state.path()).await;
    let file = state.path().join("index.snapshot");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the snapshot holds user data and keys");

    // Ironic does not answer at all while the service comes back; node 3 is deleted.
    fake.set_mode(Mode::Hang);
    fake.delete_node(&uuid(3));
    let sweeps = fake.full_node_listings();
    let s = start(&fake, state.path());
    ready(&s).await;
    assert_eq!(
        user_data(&s, &ip(1)).await,
        (200, "#cloud-config\nhostname: n1\n".to_string())
    );
    let r = s.readyz().await;
    assert_eq!(r["ready"], true, "{r}");
    assert_eq!(r["nodes"], 3, "{r}");
    let index = r["index"].as_str().unwrap();
    assert!(index.starts_with("snapshot (age "), "{r}");
    assert!(r["snapshot_age_seconds"].as_i64().is_some(), "{r}");
    assert_eq!(
        s.metric("metadata_inventory_snapshot_loads_total{result=\"loaded\"}")
            .await,
        1.0
    );

    // Once Ironic answers: the deletion and an edit arrive by reconciliation and polls.
    fake.set_mode(Mode::Normal);
    fake.update_node(&uuid(2), |n| {
        n["instance_info"]["configdrive"]["user_data"] = json!("#cloud-config\nedited\n");
    });
    eventually(WAIT, "the edit is served", || async {
        user_data(&s, &ip(2)).await == (200, "#cloud-config\nedited\n".to_string())
    })
    .await;
    eventually(WAIT, "the deleted node is gone", || async {
        user_data(&s, &ip(3)).await.0 == 404
    })
    .await;
    eventually(WAIT, "caught up", || async {
        s.readyz().await["index"] == "live"
    })
    .await;
    assert_eq!(
        fake.full_node_listings(),
        sweeps,
        "a warm start catches up without a full sweep"
    );

    // A second edit, within the 30 s in which no snapshot is written for polls: it reaches
    // the snapshot at shutdown, and the next start has both.
    fake.update_node(&uuid(1), |n| {
        n["instance_info"]["configdrive"]["user_data"] = json!("#cloud-config\nagain\n");
    });
    eventually(WAIT, "the second edit is served", || async {
        user_data(&s, &ip(1)).await == (200, "#cloud-config\nagain\n".to_string())
    })
    .await;
    s.terminate();
    fake.set_mode(Mode::Hang);
    let s = start(&fake, state.path());
    ready(&s).await;
    assert_eq!(
        user_data(&s, &ip(2)).await,
        (200, "#cloud-config\nedited\n".to_string())
    );
    assert_eq!(
        user_data(&s, &ip(1)).await,
        (200, "#cloud-config\nagain\n".to_string())
    );
    assert_eq!(s.readyz().await["nodes"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_cut_snapshots_are_ignored_and_named() {
    let fake = FakeIronic::start().await;
    fleet(&fake, 2, "n");
    let state = tempfile::tempdir().unwrap();
    first_run(&fake, state.path()).await;
    let file = state.path().join("index.snapshot");
    let good = std::fs::read(&file).unwrap();
    let mut flipped = good.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x55;
    for bytes in [
        good[..good.len() / 2].to_vec(),
        good[..good.len() - 4].to_vec(),
        flipped,
        b"garbage".to_vec(),
    ] {
        std::fs::write(&file, &bytes).unwrap();
        let sweeps = fake.full_node_listings();
        let s = start(&fake, state.path());
        ready(&s).await;
        let log = s.log();
        let line = log
            .lines()
            .find(|l| l.contains("ignored (corrupt)"))
            .unwrap_or_else(|| panic!("no line about the snapshot:\n{log}"));
        assert!(line.contains(file.to_str().unwrap()), "{line}");
        assert!(fake.full_node_listings() > sweeps, "a cold start sweeps");
        assert_eq!(
            user_data(&s, &ip(1)).await,
            (200, "#cloud-config\nhostname: n1\n".to_string())
        );
        // The cold start writes a whole snapshot again.
        s.metric_reaches(
            "metadata_inventory_snapshot_writes_total{result=\"ok\"}",
            1.0,
        )
        .await;
        s.terminate();
        assert_ne!(std::fs::read(&file).unwrap(), bytes);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_another_ironic_is_never_served() {
    let one = FakeIronic::start().await;
    fleet(&one, 2, "one");
    let state = tempfile::tempdir().unwrap();
    first_run(&one, state.path()).await;
    // Another Ironic with the same addresses, not answering yet.
    let other = FakeIronic::start().await;
    fleet(&other, 2, "other");
    other.set_mode(Mode::Hang);
    let s = start(&other, state.path());
    // The snapshot is looked at first: once its line is logged, nothing else can make
    // the index ready while the other Ironic hangs.
    eventually(WAIT, "the snapshot's line", || async {
        s.log().contains("index snapshot")
    })
    .await;
    let r = s.readyz().await;
    assert_eq!(
        (r["ready"].clone(), r["nodes"].clone()),
        (json!(false), json!(0)),
        "{r}"
    );
    let log = s.log();
    let file = state.path().join("index.snapshot");
    assert!(
        log.lines().any(|l| l.contains("ignored (other_source)")
            && l.contains(file.to_str().unwrap())
            && l.contains(&one.url())),
        "{log}"
    );
    other.set_mode(Mode::Normal);
    ready(&s).await;
    assert_eq!(
        user_data(&s, &ip(1)).await,
        (200, "#cloud-config\nhostname: other1\n".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloaded_configdrives_are_kept_and_missing_ones_fetched_at_start() {
    let fake = FakeIronic::start().await;
    let iso = std::fs::read_to_string(common::fixture("configdrive-iso.b64")).unwrap();
    let with_url = |n: u32, name: &str| {
        let mut v = node(&uuid(n), name, &ip(n));
        v["instance_info"]["configdrive"] =
            json!(format!("{}/configdrive/{name}?temp_url_sig=x", fake.url()));
        v["network_data"] = json!({"links": [], "services": [], "networks": [
            {"id": "n", "type": "ipv4", "link": "l", "network_id": "x", "ip_address": ip(n)}]});
        v["updated_at"] = json!("2026-01-01T00:00:00.000000+00:00");
        v
    };
    fake.with(|s| {
        s.configdrives
            .insert("here".into(), iso.clone().into_bytes());
        s.nodes = vec![with_url(1, "here"), with_url(2, "later")];
    });
    let fetches = |name: &str| fake.configdrive_fetches(name);
    let state = tempfile::tempdir().unwrap();
    let s = start(&fake, state.path());
    let iso_user_data = (200, "#cloud-config\nhostname: iso-node\n".to_string());
    eventually(WAIT, "the downloaded configdrive is served", || async {
        user_data(&s, &ip(1)).await == iso_user_data
    })
    .await;
    assert_eq!(user_data(&s, &ip(2)).await.0, 404);
    s.terminate();

    // The second URL answers now; Ironic hangs.
    fake.with(|st| st.configdrives.insert("later".into(), iso.into_bytes()));
    fake.set_mode(Mode::Hang);
    let s = start(&fake, state.path());
    ready(&s).await;
    assert_eq!(user_data(&s, &ip(1)).await, iso_user_data);
    assert_eq!(
        fetches("here"),
        1,
        "a configdrive in the snapshot is not downloaded again"
    );
    eventually(
        WAIT,
        "the missing configdrive is downloaded at start",
        || async { fetches("later") >= 2 },
    )
    .await;
    // Its node is read again once Ironic answers.
    fake.set_mode(Mode::Normal);
    eventually(WAIT, "the second configdrive is served", || async {
        user_data(&s, &ip(2)).await == iso_user_data
    })
    .await;
}
