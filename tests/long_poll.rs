//! ETags on every document and `wait_for_change` long-polls, against the fake Ironic: a
//! parked request answers when an edit in Ironic reaches the index, when its wait is over,
//! when its node goes away or when the service stops; bad parameters are 400 and the
//! number of parked requests is bounded per client and in total.

mod common;

use std::time::{Duration, Instant};

use common::fake_ironic::{node, FakeIronic};
use common::{client_from, eventually, Server};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);
const NODE: &str = "00000000-0000-4000-8000-000000000001";
const OTHER: &str = "00000000-0000-4000-8000-000000000002";
const IP: &str = "127.0.1.1";
const OTHER_IP: &str = "127.0.1.2";
const THIRD: &str = "00000000-0000-4000-8000-000000000003";
const THIRD_IP: &str = "127.0.1.3";

async fn start(extra: &[&str]) -> (FakeIronic, Server) {
    let fake = FakeIronic::start().await;
    fake.with(|s| {
        s.nodes = vec![
            node(NODE, "one", IP),
            node(OTHER, "two", OTHER_IP),
            node(THIRD, "three", THIRD_IP),
        ];
        for n in &mut s.nodes {
            n["updated_at"] = json!("2026-01-01T00:00:00.000000+00:00");
        }
    });
    let mut args = vec!["--poll-interval", "1"];
    args.extend(extra);
    let s = Server::start_ironic(&fake.url(), &args, &[]);
    eventually(WAIT, "first sweep", || async {
        s.readyz().await["ready"] == true
    })
    .await;
    (fake, s)
}

/// Status, ETag and body of a GET from `from`.
async fn fetch(s: &Server, from: &str, path: &str) -> (u16, String, String) {
    let r = client_from(from)
        .get(s.url(path))
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get("etag")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, etag, r.text().await.unwrap())
}

async fn waiting(s: &Server) -> f64 {
    s.metric("metadata_waiting_requests").await
}

fn edit_user_data(fake: &FakeIronic, uuid: &str, text: &str) {
    fake.update_node(uuid, |n| {
        n["instance_info"]["configdrive"]["user_data"] = json!(text);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_document_has_an_etag_and_meta_data_a_weak_one() {
    let (_fake, s) = start(&[]).await;
    for path in [
        "/openstack/latest/user_data",
        "/openstack/latest/network_data.json",
        "/openstack/latest/vendor_data2.json",
        "/latest/meta-data/instance-id",
        "/latest/meta-data/",
        "/latest/user-data",
    ] {
        let (status, etag, _) = fetch(&s, IP, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() == 26,
            "{path}: {etag:?}"
        );
    }
    // meta_data.json differs on every answer (random_seed), its weak ETag does not.
    let (_, tag1, body1) = fetch(&s, IP, "/openstack/latest/meta_data.json").await;
    let (_, tag2, body2) = fetch(&s, IP, "/openstack/latest/meta_data.json").await;
    assert_ne!(body1, body2);
    assert_eq!(tag1, tag2);
    assert!(tag1.starts_with("W/\""), "{tag1}");
    // Another node's document has another tag.
    let (_, other, _) = fetch(&s, OTHER_IP, "/openstack/latest/meta_data.json").await;
    assert_ne!(other, tag1);
    // If-None-Match with the weak tag: 304, no body.
    let r = client_from(IP)
        .get(s.url("/openstack/latest/meta_data.json"))
        .header("If-None-Match", &tag1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 304);
    assert_eq!(r.text().await.unwrap(), "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_request_answers_when_the_edit_reaches_the_index() {
    let (fake, s) = start(&[]).await;
    let (_, etag, body) = fetch(&s, IP, "/openstack/latest/user_data").await;
    assert_eq!(body, "#cloud-config\nhostname: one\n");

    // With the ETag it holds, the client waits.
    let url = format!(
        "/openstack/latest/user_data?wait_for_change=true&last_etag={}&timeout_sec=120",
        etag.trim_matches('"')
    );
    let parked = {
        let s_url = s.url(&url);
        tokio::spawn(async move {
            let r = client_from(IP)
                .get(s_url)
                .timeout(Duration::from_secs(150))
                .send()
                .await
                .unwrap();
            let etag = r.headers()["etag"].to_str().unwrap().to_string();
            (
                r.status().as_u16(),
                etag,
                r.text().await.unwrap(),
                Instant::now(),
            )
        })
    };
    eventually(WAIT, "the request to park", || async {
        waiting(&s).await == 1.0
    })
    .await;
    // Another node's edit does not wake it with the same answer.
    edit_user_data(&fake, OTHER, "#cloud-config\nhostname: two-edited\n");
    eventually(WAIT, "the other edit", || async {
        fetch(&s, OTHER_IP, "/openstack/latest/user_data").await.2
            == "#cloud-config\nhostname: two-edited\n"
    })
    .await;
    assert_eq!(waiting(&s).await, 1.0);
    assert!(!parked.is_finished());

    edit_user_data(&fake, NODE, "#cloud-config\nhostname: edited\n");
    let (status, new_etag, body, _) = parked.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(body, "#cloud-config\nhostname: edited\n");
    assert_ne!(new_etag, etag);
    assert_eq!(waiting(&s).await, 0.0);
    assert_eq!(
        s.metric("metadata_waits_total{result=\"changed\"}").await,
        1.0
    );

    // A stale ETag answers at once, without parking.
    let (status, tag, body) = fetch(&s, IP, &url).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "#cloud-config\nhostname: edited\n")
    );
    assert_eq!(tag, new_etag);
    assert_eq!(
        s.metric("metadata_waits_total{result=\"changed\"}").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_ends_with_its_timeout_even_past_the_exchange_deadline() {
    // The exchange deadline is header 1 s + on-demand 1 s + write 1 s: a 5 s wait outlasts it.
    let (_fake, s) = start(&[
        "--header-timeout-seconds",
        "1",
        "--write-timeout-seconds",
        "1",
        "--ironic-timeout",
        "1",
    ])
    .await;
    let t0 = Instant::now();
    let (status, _, body) = fetch(
        &s,
        IP,
        "/latest/meta-data/hostname?wait_for_change=true&timeout_sec=5",
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "one"));
    assert!(t0.elapsed() >= Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(
        s.metric("metadata_waits_total{result=\"timeout\"}").await,
        1.0
    );
    assert_eq!(s.metric("metadata_header_timeouts_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_wait_parameters_are_400() {
    let (_fake, s) = start(&[]).await;
    for q in [
        "wait_for_change=maybe",
        "wait_for_change=true&timeout_sec=0",
        "wait_for_change=true&timeout_sec=301",
        "wait_for_change=true&timeout_sec=ten",
        "wait_for_change=true&wait_for_change=true",
        "wait_for_change=true&last_etag=%00",
    ] {
        let (status, _, body) = fetch(&s, IP, &format!("/openstack/latest/user_data?{q}")).await;
        assert_eq!(status, 400, "{q}");
        assert!(body.contains("timeout_sec"), "{q}: {body}");
    }
    assert_eq!(waiting(&s).await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parked_requests_are_bounded_and_answer_on_deletion_and_shutdown() {
    let (fake, s) = start(&[
        "--max-waiting",
        "2",
        "--max-waiting-per-client",
        "1",
        "--reconcile-interval",
        "1",
    ])
    .await;
    let park = |from: &'static str| {
        let url = s.url("/openstack/latest/user_data?wait_for_change=true&timeout_sec=300");
        tokio::spawn(async move {
            let r = client_from(from)
                .get(url)
                .timeout(Duration::from_secs(60))
                .send()
                .await;
            match r {
                Ok(r) => (r.status().as_u16(), r.text().await.unwrap()),
                Err(e) => (0, e.to_string()),
            }
        })
    };
    let first = park(IP);
    eventually(WAIT, "one parked", || async { waiting(&s).await == 1.0 }).await;
    // The same client again: over its bound.
    let (status, _, body) = fetch(&s, IP, "/openstack/latest/user_data?wait_for_change=true").await;
    assert_eq!(
        (status, body.as_str()),
        (429, "too many waiting requests\n")
    );
    let second = park(OTHER_IP);
    eventually(WAIT, "two parked", || async { waiting(&s).await == 2.0 }).await;
    // A third client: over the total.
    let (status, _, _) = fetch(
        &s,
        THIRD_IP,
        "/openstack/latest/user_data?wait_for_change=true",
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(
        s.metric("metadata_waits_total{result=\"refused\"}").await,
        2.0
    );
    // Parked requests hold no rate-limit slot or anything else a plain request needs.
    assert_eq!(fetch(&s, IP, "/openstack/latest/user_data").await.0, 200);

    // The node is deleted: its parked request is told at once.
    fake.delete_node(NODE);
    let (status, _) = first.await.unwrap();
    assert_eq!(status, 404);

    // The service stops: the other parked request is answered, not cut off.
    s.signal("TERM");
    let (status, body) = second.await.unwrap();
    assert_eq!(
        (status, body.as_str()),
        (200, "#cloud-config\nhostname: two\n")
    );
}
