//! How the index follows Ironic after the first load, against the in-process fake Ironic
//! (which counts every request): polls for changes stay small whatever the fleet, edits
//! and deletions are served, and an Ironic whose answers cannot be trusted for polling
//! (sort ignored, timestamps gone back, too many changes, PostgreSQL's NULL ordering) is
//! detected and swept in full instead.

mod common;

use std::time::Duration;

use common::fake_ironic::{node, stamp, FakeIronic};
use common::{client_from, eventually, get, Server};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// 127.0.(n / 250 + 1).(n % 250 + 1): up to 64,000 distinct loopback addresses.
fn ip(n: u32) -> String {
    format!("127.0.{}.{}", n / 250 + 1, n % 250 + 1)
}

fn fleet(fake: &FakeIronic, count: u32) {
    fake.with(|s| {
        s.nodes = (1..=count)
            .map(|n| {
                let mut v = node(&uuid(n), &format!("n{n}"), &ip(n));
                v["created_at"] = json!("2025-12-01T00:00:00.000000+00:00");
                v["updated_at"] = json!("2026-01-01T00:00:00.000000+00:00");
                v
            })
            .collect();
        s.ports = (1..=count)
            .map(|n| json!({"uuid": uuid(100_000 + n), "address": format!("52:54:00:{:02x}:{:02x}:{:02x}", n >> 16, (n >> 8) & 255, n & 255), "node_uuid": uuid(n), "created_at": "2025-12-01T00:00:00.000000+00:00"}))
            .collect();
    });
}

async fn user_data(s: &Server, from: &str) -> (u16, String) {
    let (status, _, body) = get(&client_from(from), &s.url("/openstack/latest/user_data")).await;
    (status, body)
}

async fn polls(s: &Server) -> f64 {
    s.metric("metadata_inventory_polls_total{result=\"changed\"}")
        .await
        + s.metric("metadata_inventory_polls_total{result=\"unchanged\"}")
            .await
}

async fn resyncs(s: &Server, reason: &str) -> f64 {
    s.metric(&format!(
        "metadata_inventory_resyncs_total{{reason=\"{reason}\"}}"
    ))
    .await
}

async fn ready(s: &Server) {
    eventually(WAIT, "first sweep", || async {
        s.readyz().await["ready"] == true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polls_stay_small_and_edits_are_served() {
    let fake = FakeIronic::start().await;
    fleet(&fake, 1_000);
    // Ironic's pages of 100: a full sweep is 10 node pages, 10 port pages, 1 portgroup page.
    fake.with(|s| s.page_size = 100);
    let s = Server::start_ironic(
        &fake.url(),
        &["--poll-interval", "1", "--reconcile-interval", "3600"],
        &[],
    );
    ready(&s).await;
    let sweeps = fake.full_node_listings();
    assert_eq!(
        user_data(&s, &ip(7)).await.1,
        "#cloud-config\nhostname: n7\n"
    );

    // With nothing changing, each poll is four one-page requests, whatever the fleet.
    let (r0, p0) = (fake.request_count(), polls(&s).await);
    eventually(WAIT, "three polls", || async {
        polls(&s).await >= p0 + 3.0
    })
    .await;
    let (r1, p1) = (fake.request_count(), polls(&s).await);
    let per_poll = (r1 - r0) as f64 / (p1 - p0);
    assert!(
        per_poll <= 4.0 + 4.0 / (p1 - p0),
        "{per_poll} requests per poll: {:?}\n{}",
        fake.with(|s| s.requests[r0..r1]
            .iter()
            .map(|r| r.path.clone())
            .collect::<Vec<_>>()),
        s.log()
    );
    // ... and each reads a few rows (nodes come with their configdrives: a page of a
    // hundred is megabytes), unless the newest rows are all changes.
    let limits: Vec<u32> = fake.with(|s| {
        s.requests[r0..r1]
            .iter()
            .filter_map(|r| {
                let (_, q) = r.path.split_once('?')?;
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "limit")
                    .and_then(|(_, v)| v.parse().ok())
            })
            .collect()
    });
    assert!(
        !limits.is_empty() && limits.iter().all(|l| *l <= 10),
        "rows asked per probe: {limits:?}"
    );
    assert_eq!(fake.full_node_listings(), sweeps);

    // An edit of an active node's user data and network data in Ironic is served without
    // a full sweep.
    fake.update_node(&uuid(7), |n| {
        n["instance_info"]["configdrive"]["user_data"] = json!("#cloud-config\nhostname: edited\n");
        n["network_data"] = json!({"links": [], "services": [], "networks": [
            {"id": "n", "type": "ipv4", "link": "l", "network_id": "x", "ip_address": "127.0.9.9"}]});
    });
    eventually(WAIT, "the edit", || async {
        user_data(&s, &ip(7)).await.1 == "#cloud-config\nhostname: edited\n"
    })
    .await;
    assert_eq!(user_data(&s, "127.0.9.9").await.0, 200);
    // Every other node keeps its data.
    assert_eq!(
        user_data(&s, &ip(8)).await.1,
        "#cloud-config\nhostname: n8\n"
    );
    assert_eq!(fake.full_node_listings(), sweeps);
    assert!(
        s.metric("metadata_inventory_changes_total").await >= 1.0,
        "{}",
        s.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_ports_and_deleted_nodes_are_followed() {
    let fake = FakeIronic::start().await;
    fleet(&fake, 20);
    let s = Server::start_ironic(
        &fake.url(),
        &["--poll-interval", "1", "--reconcile-interval", "1"],
        &[],
    );
    ready(&s).await;
    assert_eq!(user_data(&s, &ip(3)).await.0, 200);

    // A node enrolled after start-up and never updated since (no updated_at) is found by
    // its creation time.
    let mut fresh = node(&uuid(21), "fresh", &ip(21));
    fresh["created_at"] = json!(stamp());
    fake.with(|s| s.nodes.push(fresh));
    let sweeps = fake.full_node_listings();
    // (Waiting on the metric, not on answers: an address refused again and again would
    // spend its refusal budget.)
    eventually(WAIT, "the new node", || async {
        s.metric("metadata_inventory_changes_total").await >= 1.0
    })
    .await;
    assert_eq!(user_data(&s, &ip(21)).await.0, 200);

    // A new port of a known node is read (the node's view is rebuilt with it).
    fake.with(|s| {
        s.ports.push(
            json!({"uuid": uuid(100_100), "address": "52:54:00:aa:bb:cc",
            "node_uuid": uuid(4), "created_at": stamp()}),
        );
    });
    eventually(WAIT, "the new port", || async {
        s.metric("metadata_inventory_changes_total").await >= 2.0
    })
    .await;

    // A deleted node stops being served within the reconciliation period.
    fake.delete_node(&uuid(3));
    eventually(WAIT, "the deletion", || async {
        s.metric("metadata_inventory_changes_total").await >= 3.0
    })
    .await;
    assert_eq!(user_data(&s, &ip(3)).await.0, 404);
    assert_eq!(user_data(&s, &ip(4)).await.0, 200);
    assert_eq!(fake.full_node_listings(), sweeps);
}

/// Deleted nodes are found by listing node UUIDs one page at a time, a page every quarter
/// of the reconciliation interval: Ironic's load does not grow with the fleet, and a pass
/// over a large fleet takes longer than the interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_is_paced_whatever_the_fleet() {
    let fake = FakeIronic::start().await;
    fleet(&fake, 200);
    // 20 pages of UUIDs.
    fake.with(|s| s.page_size = 10);
    let s = Server::start_ironic(
        &fake.url(),
        &["--poll-interval", "1", "--reconcile-interval", "2"],
        &[],
    );
    ready(&s).await;
    let uuid_pages = |from: usize| {
        fake.with(|s| {
            s.requests[from..]
                .iter()
                .filter(|r| r.path.contains("fields=uuid"))
                .count()
        })
    };
    let (r0, t0, p0) = (
        fake.request_count(),
        std::time::Instant::now(),
        polls(&s).await,
    );
    eventually(WAIT, "four polls", || async { polls(&s).await >= p0 + 4.0 }).await;
    let (pages, secs) = (uuid_pages(r0), t0.elapsed().as_secs_f64());
    assert!(
        pages >= 1 && pages as f64 <= secs * 2.0 + 2.0,
        "{pages} pages of UUIDs in {secs:.1} s"
    );

    // A node deleted near the end of the listing is still found, and only it goes.
    fake.delete_node(&uuid(195));
    eventually(Duration::from_secs(40), "the deletion", || async {
        s.metric("metadata_inventory_changes_total").await >= 1.0
    })
    .await;
    assert_eq!(user_data(&s, &ip(195)).await.0, 404);
    assert_eq!(s.readyz().await["nodes"], 199);
    assert_eq!(user_data(&s, &ip(200)).await.0, 200);
}

/// An Ironic whose UUID pages do not come in UUID order (it ignores `sort_key`) is
/// reconciled by one whole listing: no page is read as a range it is not, so no node
/// Ironic still has is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_out_of_order_drops_only_deleted_nodes() {
    let fake = FakeIronic::start().await;
    fleet(&fake, 30);
    fake.with(|s| {
        s.page_size = 10;
        s.ignore_sort = true;
        s.nodes.reverse();
    });
    let s = Server::start_ironic(
        &fake.url(),
        &["--poll-interval", "1", "--reconcile-interval", "1"],
        &[],
    );
    ready(&s).await;
    let listings = |from: usize| {
        fake.with(|s| {
            s.requests[from..]
                .iter()
                .filter(|r| r.path.contains("fields=uuid"))
                .count()
        })
    };
    let r0 = fake.request_count();
    eventually(WAIT, "a few reconciliations", || async {
        listings(r0) >= 12
    })
    .await;
    assert_eq!(s.readyz().await["nodes"], 30, "{}", s.log());
    fake.delete_node(&uuid(2));
    eventually(WAIT, "the deletion", || async {
        s.readyz().await["nodes"] == 29
    })
    .await;
    assert_eq!(user_data(&s, &ip(2)).await.0, 404);
    assert_eq!(user_data(&s, &ip(29)).await.0, 200);
}

/// An Ironic that ignores `sort_key` cannot be polled: detected, reported, and changes
/// reach the index through full sweeps instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ironic_that_ignores_sorting_is_swept_instead() {
    let fake = FakeIronic::start().await;
    fleet(&fake, 5);
    fake.with(|s| {
        s.ignore_sort = true;
        // Insertion order is not newest first.
        s.nodes[0]["updated_at"] = json!("2025-01-01T00:00:00.000000+00:00");
    });
    let s = Server::start_ironic(
        &fake.url(),
        &["--poll-interval", "1", "--refresh-interval", "2"],
        &[],
    );
    ready(&s).await;
    eventually(WAIT, "the resync", || async {
        resyncs(&s, "unsorted").await >= 1.0
    })
    .await;
    assert!(s.log().contains("Ironic ignored sort_key"), "{}", s.log());
    fake.update_node(&uuid(2), |n| {
        n["instance_info"]["configdrive"]["user_data"] = json!("#cloud-config\nhostname: swept\n");
    });
    eventually(WAIT, "the edit, by a sweep", || async {
        user_data(&s, &ip(2)).await.1 == "#cloud-config\nhostname: swept\n"
    })
    .await;
}

/// A restored database: a node's `updated_at` is older than the one indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_gone_back_make_a_full_sweep() {
    let fake = FakeIronic::start().await;
    fleet(&fake, 5);
    let s = Server::start_ironic(&fake.url(), &["--poll-interval", "1"], &[]);
    ready(&s).await;
    let sweeps = fake.full_node_listings();
    fake.with(|s| {
        s.nodes[1]["updated_at"] = json!("2025-06-01T00:00:00.000000+00:00");
        s.nodes[1]["instance_info"]["configdrive"]["user_data"] =
            json!("#cloud-config\nhostname: restored\n");
    });
    eventually(WAIT, "the resync", || async {
        resyncs(&s, "time_went_back").await >= 1.0
    })
    .await;
    eventually(WAIT, "the restored data", || async {
        user_data(&s, &ip(2)).await.1 == "#cloud-config\nhostname: restored\n"
    })
    .await;
    assert!(fake.full_node_listings() > sweeps);
}

/// A burst of changes larger than a probe page is read with one larger page; more nodes
/// changed than Ironic lists in one page (its `max_limit`) cannot be told apart, so the
/// whole inventory is read again. Every change is served either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bursts_of_changes_are_all_served() {
    let fake = FakeIronic::start().await;
    fleet(&fake, 300);
    let s = Server::start_ironic(&fake.url(), &["--poll-interval", "1"], &[]);
    ready(&s).await;
    let bulk = |s: &mut common::fake_ironic::FakeState, count: usize, name: &str| {
        for n in s.nodes.iter_mut().take(count) {
            n["instance_info"]["configdrive"]["user_data"] =
                json!(format!("#cloud-config\nhostname: {name}\n"));
            n["updated_at"] = json!(stamp());
        }
    };
    let sweeps = fake.full_node_listings();
    fake.with(|s| bulk(s, 250, "burst"));
    for n in [1, 125, 250] {
        eventually(WAIT, "the burst", || async {
            user_data(&s, &ip(n)).await.1 == "#cloud-config\nhostname: burst\n"
        })
        .await;
    }
    assert_eq!(fake.full_node_listings(), sweeps);
    assert_eq!(resyncs(&s, "more_than_a_page").await, 0.0);

    // An Ironic whose max_limit is 100 cannot list the 300 changes at once.
    fake.with(|s| {
        s.page_size = 100;
        bulk(s, 300, "bulk");
    });
    eventually(WAIT, "the resync", || async {
        resyncs(&s, "more_than_a_page").await >= 1.0
    })
    .await;
    for n in [1, 150, 300] {
        eventually(WAIT, "the bulk edit", || async {
            user_data(&s, &ip(n)).await.1 == "#cloud-config\nhostname: bulk\n"
        })
        .await;
    }
    assert!(fake.full_node_listings() > sweeps);
}

/// PostgreSQL sorts NULL first when descending: a page of never-updated nodes hides every
/// update, so polling gives way to full sweeps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_never_updated_nodes_falls_back_to_sweeps() {
    let fake = FakeIronic::start().await;
    fleet(&fake, 150);
    fake.with(|s| {
        s.nulls_first = true;
        for n in s.nodes.iter_mut().skip(1) {
            n.as_object_mut().unwrap().remove("updated_at");
        }
    });
    let s = Server::start_ironic(
        &fake.url(),
        &["--poll-interval", "1", "--refresh-interval", "2"],
        &[],
    );
    ready(&s).await;
    eventually(WAIT, "the fallback", || async {
        resyncs(&s, "null_timestamps").await >= 1.0
    })
    .await;
    fake.update_node(&uuid(1), |n| {
        n["instance_info"]["configdrive"]["user_data"] = json!("#cloud-config\nhostname: seen\n");
    });
    eventually(WAIT, "the edit, by a sweep", || async {
        user_data(&s, &ip(1)).await.1 == "#cloud-config\nhostname: seen\n"
    })
    .await;
}
