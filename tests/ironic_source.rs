//! The Ironic inventory source against an in-process fake Ironic, for what a real Ironic
//! cannot do on demand: pagination edge cases, 500s, garbage, hangs, auth failures and
//! Keystone token expiry. The real-Ironic suite is scripts/e2e.sh.

mod common;

use std::time::{Duration, Instant};

use common::fake_ironic::{node, Auth, FakeIronic, Mode, TestPki};
use common::{client_from, eventually, get, Server};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(20);

fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

fn ip(n: u32) -> String {
    format!("127.0.1.{n}")
}

async fn instance_id(s: &Server, from: &str) -> (u16, String) {
    let (status, _, body) = get(&client_from(from), &s.url("/latest/meta-data/instance-id")).await;
    (status, body)
}

async fn sweeps(s: &Server, trigger: &str) -> f64 {
    s.metric(&format!(
        "metadata_inventory_sweeps_total{{trigger=\"{trigger}\"}}"
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_follows_markers_not_the_public_host() {
    let fake = FakeIronic::start().await;
    fake.with(|s| {
        s.page_size = 2;
        s.nodes = (1..=5).map(|n| node(&uuid(n), &format!("n{n}"), &ip(n))).collect();
        s.ports = (1..=3).map(|n| json!({"uuid": uuid(100 + n), "address": format!("52:54:00:00:01:0{n}"), "node_uuid": uuid(n)})).collect();
    });
    let s = Server::start_ironic(&fake.url(), &["--refresh-interval", "3600"], &[]);
    eventually(WAIT, "first sweep", || async {
        s.readyz().await["ready"] == true
    })
    .await;
    for n in 1..=5 {
        assert_eq!(instance_id(&s, &ip(n)).await, (200, uuid(n)));
    }
    // 5 nodes at 2 a page: 3 pages (the last not full); 3 ports: 2 pages (the second
    // empty after a full first page); portgroups: 1 empty page.
    let paths: Vec<String> = fake.with(|s| s.requests.iter().map(|r| r.path.clone()).collect());
    let nodes: Vec<&String> = paths
        .iter()
        .filter(|p| p.starts_with("/v1/nodes"))
        .collect();
    assert_eq!(
        nodes,
        [
            &"/v1/nodes?detail=True".to_string(),
            &format!("/v1/nodes?detail=True&marker={}", uuid(2)),
            &format!("/v1/nodes?detail=True&marker={}", uuid(4)),
        ]
    );
    assert_eq!(
        paths.iter().filter(|p| p.starts_with("/v1/ports")).count(),
        2
    );
    assert_eq!(
        paths
            .iter()
            .filter(|p| p.starts_with("/v1/portgroups"))
            .count(),
        1
    );
    let ready = s.readyz().await;
    assert_eq!(
        (ready["ready"].as_bool(), ready["nodes"].as_u64()),
        (Some(true), Some(5))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn microversion_is_negotiated_and_old_ironic_still_works() {
    // An Ironic older than 1.66 has no node.network_data: identity still works from the
    // configdrive's network_data.
    let fake = FakeIronic::start().await;
    fake.with(|s| {
        s.max_minor = 60;
        let mut n = node(&uuid(1), "old", &ip(1));
        n["instance_info"]["configdrive"]["network_data"]["networks"][0]["ip_address"] = json!(ip(1));
        n["network_data"] = json!({"links": [], "networks": [{"id": "x", "type": "ipv4", "link": "l", "network_id": "n", "ip_address": ip(9)}], "services": []});
        s.nodes = vec![n];
    });
    let s = Server::start_ironic(&format!("{}/v1/", fake.url()), &[], &[]);
    assert_eq!(instance_id(&s, &ip(1)).await, (200, uuid(1)));
    // network_data is not returned below 1.66, so its address is unknown.
    assert_eq!(instance_id(&s, &ip(9)).await.0, 404);
    let versions: Vec<Option<String>> = fake.with(|s| {
        s.requests
            .iter()
            .filter(|r| r.path.starts_with("/v1/"))
            .map(|r| r.version.clone())
            .collect()
    });
    assert!(
        !versions.is_empty() && versions.iter().all(|v| v.as_deref() == Some("1.60")),
        "{versions:?}"
    );

    // A newer Ironic than this client is asked for the newest version the client knows.
    let fake2 = FakeIronic::start().await;
    fake2.with(|s| {
        s.max_minor = 130;
        s.nodes = vec![node(&uuid(2), "new", &ip(2))];
    });
    let s2 = Server::start_ironic(&fake2.url(), &[], &[]);
    assert_eq!(instance_id(&s2, &ip(2)).await, (200, uuid(2)));
    assert!(fake2.with(|s| s
        .requests
        .iter()
        .filter(|r| r.path.starts_with("/v1/"))
        .all(|r| r.version.as_deref() == Some("1.115"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_node_is_served_on_its_first_request_and_misses_coalesce() {
    let fake = FakeIronic::start().await;
    fake.with(|s| s.nodes = vec![node(&uuid(1), "first", &ip(1))]);
    // Polls far apart: only the miss itself can bring the new node in.
    let s = Server::start_ironic(
        &fake.url(),
        &["--poll-interval", "3600", "--reconcile-interval", "3600"],
        &[],
    );
    eventually(WAIT, "first sweep", || async {
        s.readyz().await["ready"] == true
    })
    .await;
    let sweeps_before = fake.full_node_listings();
    // Made active after start-up: answered on its first request, through one poll of the
    // newest changes and the read of its ports and portgroups: three Ironic requests.
    fake.deploy(node(&uuid(2), "second", &ip(2)));
    let calls = fake.request_count();
    assert_eq!(instance_id(&s, &ip(2)).await, (200, uuid(2)));
    let calls = fake.request_count() - calls;
    assert!(calls <= 3, "{calls} Ironic requests for one new node");
    assert_eq!(
        s.metric("metadata_inventory_polls_total{result=\"changed\"}")
            .await,
        1.0
    );

    // 300 concurrent requests from 100 unknown addresses: a handful of small polls, not 300,
    // and never a full sweep.
    let before = fake.request_count();
    let mut tasks = Vec::new();
    for i in 0..300u32 {
        let url = s.url("/latest/meta-data/instance-id");
        let from = format!("127.0.2.{}", i % 100 + 1);
        tasks.push(tokio::spawn(async move {
            get(&client_from(&from), &url).await.0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 404);
    }
    let polls = fake.request_count() - before;
    assert!(
        polls <= 3,
        "{polls} Ironic requests for 300 concurrent misses"
    );
    // The same unknown addresses again: remembered, nothing asked of Ironic.
    let before = fake.request_count();
    for i in 0..100u32 {
        assert_eq!(instance_id(&s, &format!("127.0.2.{}", i + 1)).await.0, 404);
    }
    assert_eq!(fake.request_count(), before);
    assert_eq!(fake.full_node_listings(), sweeps_before);
}

/// A node read with its ports when it first asks is not read again because the next full
/// poll sees its port among the newest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_read_with_its_ports_is_not_read_again() {
    let fake = FakeIronic::start().await;
    fake.with(|s| s.nodes = vec![node(&uuid(1), "first", &ip(1))]);
    let s = Server::start_ironic(
        &fake.url(),
        &["--poll-interval", "3", "--reconcile-interval", "3600"],
        &[],
    );
    eventually(WAIT, "first sweep", || async {
        s.readyz().await["ready"] == true
    })
    .await;
    let polls = || async {
        s.metric("metadata_inventory_polls_total{result=\"unchanged\"}")
            .await
            + s.metric("metadata_inventory_polls_total{result=\"changed\"}")
                .await
    };
    // Right after a full poll, a node's first request brings a quick poll (the newest
    // updates), which reads the node with its port.
    let p = polls().await;
    eventually(WAIT, "a full poll", || async { polls().await > p }).await;
    fake.deploy(node(&uuid(2), "second", &ip(2)));
    fake.with(|s| {
        s.ports
            .push(json!({"uuid": uuid(102), "address": "52:54:00:00:00:02",
            "node_uuid": uuid(2), "created_at": common::fake_ironic::stamp()}));
    });
    assert_eq!(instance_id(&s, &ip(2)).await, (200, uuid(2)));
    let link_reads = || {
        fake.with(|s| {
            s.requests
                .iter()
                .filter(|r| r.path.contains("node=") || r.path.contains("node_uuid="))
                .count()
        })
    };
    let (reads, p0) = (link_reads(), polls().await);
    // Two full polls later, inside the margin in which the port is among the newest.
    eventually(WAIT, "two polls", || async { polls().await >= p0 + 2.0 }).await;
    assert_eq!(
        link_reads(),
        reads,
        "the node's links read again: {}",
        s.log()
    );
}

/// Strangers asking without pause bring quick polls (the newest updates only), never in
/// place of the periodic full poll: a node enrolled and never updated since (found only by
/// its creation time) is still served within a poll or two, and their polls are bounded by
/// the gap between polls, whatever the number of addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_never_hold_back_the_full_polls() {
    let fake = FakeIronic::start().await;
    fake.with(|s| s.nodes = vec![node(&uuid(1), "first", &ip(1))]);
    let s = Server::start_ironic(
        &fake.url(),
        &["--poll-interval", "1", "--reconcile-interval", "3600"],
        &[],
    );
    eventually(WAIT, "first sweep", || async {
        s.readyz().await["ready"] == true
    })
    .await;
    let asking = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let strangers: Vec<_> = (0..4u32)
        .map(|k| {
            let (url, asking) = (s.url("/latest/meta-data/instance-id"), asking.clone());
            tokio::spawn(async move {
                let mut i = 0u32;
                while asking.load(std::sync::atomic::Ordering::Relaxed) {
                    let from = format!("127.3.{}.{}", k * 50 + i / 250 % 50, i % 250 + 1);
                    assert_eq!(get(&client_from(&from), &url).await.0, 404);
                    i += 1;
                }
                i
            })
        })
        .collect();
    let (t0, r0) = (Instant::now(), fake.request_count());
    // Enrolled now, never updated: no `updated_at`, so only a full poll's probe by
    // creation time finds it.
    let mut fresh = node(&uuid(2), "fresh", &ip(2));
    fresh["created_at"] = json!(common::fake_ironic::stamp());
    fresh["updated_at"] = json!(null);
    fake.with(|s| s.nodes.push(fresh));
    eventually(WAIT, "the node found by its creation time", || async {
        s.metric("metadata_inventory_changes_total").await >= 1.0
    })
    .await;
    asking.store(false, std::sync::atomic::Ordering::Relaxed);
    let mut asked = 0;
    for t in strangers {
        asked += t.await.unwrap();
    }
    let (secs, requests) = (t0.elapsed().as_secs_f64(), fake.request_count() - r0);
    assert_eq!(instance_id(&s, &ip(2)).await, (200, uuid(2)));
    // At most one quick poll a second besides the full polls (four requests a second
    // here), and the node's own reads.
    assert!(
        requests as f64 <= secs * 5.0 + 8.0,
        "{requests} Ironic requests in {secs:.1} s for {asked} strangers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_on_error_then_recovery() {
    let fake = FakeIronic::start().await;
    fake.with(|s| s.nodes = vec![node(&uuid(1), "a", &ip(1)), node(&uuid(2), "b", &ip(2))]);
    let s = Server::start_ironic(
        &fake.url(),
        &["--refresh-interval", "1", "--ironic-timeout", "2"],
        &[],
    );
    eventually(WAIT, "first sweep", || async {
        s.readyz().await["status"] == "ok"
    })
    .await;

    for (mode, reason, error) in [
        (Mode::Hang, "timeout", "did not answer within 2s"),
        (
            Mode::Fail500,
            "http_5xx",
            "answered HTTP 500: database is locked",
        ),
        (Mode::Garbage, "invalid_response", "not a JSON object"),
    ] {
        fake.set_mode(mode);
        let sample = format!("metadata_inventory_sweep_failures_total{{reason=\"{reason}\"}}");
        eventually(WAIT, reason, || async { s.metric(&sample).await >= 1.0 }).await;
        let ready = s.readyz().await;
        assert_eq!(ready["status"], "degraded", "{ready}");
        assert!(
            ready["last_error"].as_str().unwrap().contains(error),
            "{ready}"
        );
        // Cached nodes keep being served at once, however Ironic misbehaves.
        let t0 = Instant::now();
        assert_eq!(instance_id(&s, &ip(1)).await, (200, uuid(1)));
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "{mode:?}: {:?}",
            t0.elapsed()
        );
        // An address Ironic may have just learnt triggers a sweep, but its request waits
        // no longer than the Ironic timeout (2 s here), then gets its answer.
        let t0 = Instant::now();
        assert_eq!(instance_id(&s, &ip(50 + mode as u32)).await.0, 404);
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{mode:?}: {:?}",
            t0.elapsed()
        );
    }
    // Ironic comes back, without a node: the next sweep drops it and readiness recovers.
    fake.with(|s| {
        s.mode = Mode::Normal;
        s.nodes.remove(1);
    });
    eventually(WAIT, "recovery", || async {
        s.readyz().await["status"] == "ok"
    })
    .await;
    assert_eq!(instance_id(&s, &ip(1)).await, (200, uuid(1)));
    assert_eq!(instance_id(&s, &ip(2)).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_the_first_sweep() {
    let fake = FakeIronic::start().await;
    fake.set_mode(Mode::Fail500);
    let s = Server::start_ironic(&fake.url(), &["--refresh-interval", "1"], &[]);
    let (status, _, body) = get(&client_from("127.0.0.1"), &s.admin_url("/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        "starting"
    );
    let r = client_from(&ip(1))
        .get(s.url("/latest/meta-data/instance-id"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    assert_eq!(r.text().await.unwrap(), "metadata not available yet\n");
    fake.with(|s| {
        s.nodes = vec![node(&uuid(1), "a", &ip(1))];
        s.mode = Mode::Normal;
    });
    eventually(WAIT, "ready", || async {
        s.readyz().await["ready"] == true
    })
    .await;
    assert_eq!(instance_id(&s, &ip(1)).await, (200, uuid(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_basic_auth() {
    let fake = FakeIronic::start().await;
    fake.with(|s| {
        s.auth = Auth::Basic {
            user: "metadata".into(),
            password: "pa55".into(),
        };
        s.nodes = vec![node(&uuid(1), "a", &ip(1))];
    });
    let dir = tempfile::tempdir().unwrap();
    let pwfile = dir.path().join("password");
    std::fs::write(&pwfile, "pa55\n").unwrap();
    let s = Server::start_ironic(
        &fake.url(),
        &[],
        &[
            ("IRONIC_USERNAME", "metadata"),
            ("IRONIC_PASSWORD_FILE", pwfile.to_str().unwrap()),
        ],
    );
    assert_eq!(instance_id(&s, &ip(1)).await, (200, uuid(1)));

    let wrong = Server::start_ironic(
        &fake.url(),
        &["--refresh-interval", "1"],
        &[("IRONIC_USERNAME", "metadata"), ("IRONIC_PASSWORD", "nope")],
    );
    eventually(WAIT, "auth failure", || async {
        wrong
            .metric("metadata_inventory_sweep_failures_total{reason=\"auth\"}")
            .await
            >= 1.0
    })
    .await;
    let ready = wrong.readyz().await;
    assert_eq!(ready["status"], "starting");
    assert!(
        ready["last_error"]
            .as_str()
            .unwrap()
            .ends_with("answered 401 with http_basic credentials"),
        "{ready}"
    );
    // The password never reaches the log.
    assert!(!wrong.log().contains("nope") && !s.log().contains("pa55"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_token_is_reused_renewed_on_401_and_on_expiry() {
    let fake = FakeIronic::start().await;
    fake.with(|s| {
        s.auth = Auth::Keystone {
            lifetime_secs: 3600,
        };
        s.nodes = vec![node(&uuid(1), "a", &ip(1))];
    });
    let env = [
        ("OS_AUTH_URL", format!("{}/v3", fake.url())),
        ("OS_APPLICATION_CREDENTIAL_ID", "cred-1".into()),
        ("OS_APPLICATION_CREDENTIAL_SECRET", "s3cret".into()),
        ("OS_REGION_NAME", "RegionOne".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    // No IRONIC_URL: the baremetal endpoint comes from the token's catalog (public
    // interface, RegionOne).
    let s = Server::launch(
        &[],
        "127.0.0.1".parse().unwrap(),
        &["--refresh-interval", "1"],
        &env,
    );
    eventually(WAIT, "three sweeps", || async {
        s.metric("metadata_inventory_sweeps_total{trigger=\"periodic\"}")
            .await
            >= 3.0
    })
    .await;
    assert_eq!(instance_id(&s, &ip(1)).await, (200, uuid(1)));
    // One token served every sweep.
    assert_eq!(fake.with(|s| s.tokens_issued), 1);

    // Keystone revokes it: the next sweep gets 401, authenticates once more, succeeds.
    fake.with(|s| s.valid_tokens.clear());
    eventually(WAIT, "second token", || async {
        fake.with(|s| s.tokens_issued) == 2
    })
    .await;
    let before = s
        .metric("metadata_inventory_sweeps_total{trigger=\"periodic\"}")
        .await;
    eventually(WAIT, "sweep after re-auth", || async {
        s.metric("metadata_inventory_sweeps_total{trigger=\"periodic\"}")
            .await
            > before
    })
    .await;
    assert_eq!(
        s.metric("metadata_inventory_sweep_failures_total{reason=\"auth\"}")
            .await,
        0.0
    );
    assert_eq!(s.readyz().await["status"], "ok");

    // Tokens that expire within a minute are renewed before each use, never sent stale.
    fake.with(|s| {
        s.auth = Auth::Keystone { lifetime_secs: 30 };
        s.valid_tokens.clear();
    });
    eventually(WAIT, "first short-lived token", || async {
        fake.with(|s| s.tokens_issued) >= 3
    })
    .await;
    let (issued, unauthorized) = fake.with(|s| (s.tokens_issued, s.unauthorized));
    eventually(WAIT, "two more sweeps", || async {
        fake.with(|s| s.tokens_issued) >= issued + 2
    })
    .await;
    assert_eq!(
        fake.with(|s| s.unauthorized),
        unauthorized,
        "no request carried an expiring token"
    );
    assert_eq!(s.readyz().await["status"], "ok");
    assert!(!s.log().contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_custom_ca_and_a_client_certificate() {
    let pki = TestPki::new();
    let fake = FakeIronic::start_tls(&pki, false).await;
    fake.with(|s| s.nodes = vec![node(&uuid(1), "a", &ip(1))]);
    // Trusting the CA bundle: served.
    let ok = Server::start_ironic(
        &fake.https_url(),
        &["--ironic-cacert", &pki.path("ca.pem")],
        &[],
    );
    assert_eq!(instance_id(&ok, &ip(1)).await, (200, uuid(1)));
    // Without it the certificate is not trusted: the sweep fails, nothing is served.
    let untrusted = Server::start_ironic(&fake.https_url(), &["--refresh-interval", "1"], &[]);
    eventually(WAIT, "TLS failure", || async {
        untrusted
            .metric("metadata_inventory_sweep_failures_total{reason=\"connect\"}")
            .await
            >= 1.0
    })
    .await;
    assert_eq!(untrusted.readyz().await["ready"], false);

    // An Ironic that demands a client certificate.
    let mtls = FakeIronic::start_tls(&pki, true).await;
    mtls.with(|s| s.nodes = vec![node(&uuid(2), "b", &ip(2))]);
    let with_cert = Server::start_ironic(
        &mtls.https_url(),
        &[
            "--ironic-cacert",
            &pki.path("ca.pem"),
            "--ironic-client-cert",
            &pki.path("client.pem"),
            "--ironic-client-key",
            &pki.path("client.key"),
        ],
        &[],
    );
    assert_eq!(instance_id(&with_cert, &ip(2)).await, (200, uuid(2)));
    let without = Server::start_ironic(
        &mtls.https_url(),
        &[
            "--ironic-cacert",
            &pki.path("ca.pem"),
            "--refresh-interval",
            "1",
        ],
        &[],
    );
    eventually(WAIT, "client certificate refused", || async {
        without
            .metric("metadata_inventory_sweep_failures_total{reason=\"connect\"}")
            .await
            + without
                .metric("metadata_inventory_sweep_failures_total{reason=\"invalid_response\"}")
                .await
            >= 1.0
    })
    .await;
    assert_eq!(without.readyz().await["ready"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keystone_password_from_clouds_yaml() {
    let fake = FakeIronic::start().await;
    fake.with(|s| {
        s.auth = Auth::Keystone {
            lifetime_secs: 3600,
        };
        s.nodes = vec![node(&uuid(1), "a", &ip(1))];
    });
    let dir = tempfile::tempdir().unwrap();
    let clouds = dir.path().join("clouds.yaml");
    std::fs::write(
        &clouds,
        format!(
            "clouds:\n  metal:\n    auth:\n      auth_url: {}/v3\n      username: metadata\n      password: pw-from-yaml\n      user_domain_name: Default\n      project_name: service\n      project_domain_name: Default\n    region_name: RegionOne\n",
            fake.url()
        ),
    )
    .unwrap();
    let s = Server::launch(
        &[],
        "127.0.0.1".parse().unwrap(),
        &[],
        &[
            ("OS_CLOUD", "metal"),
            ("OS_CLIENT_CONFIG_FILE", clouds.to_str().unwrap()),
        ],
    );
    assert_eq!(instance_id(&s, &ip(1)).await, (200, uuid(1)));
    assert_eq!(fake.with(|s| s.tokens_issued), 1);
    assert!(!s.log().contains("pw-from-yaml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configdrive_from_a_url_is_downloaded_once() {
    let fake = FakeIronic::start().await;
    let iso = std::fs::read_to_string(common::fixture("configdrive-iso.b64")).unwrap();
    let mut n = node(&uuid(7), "url", "127.0.0.17");
    n["instance_info"]["configdrive"] =
        json!(format!("{}/configdrive/node7?temp_url_sig=abc", fake.url()));
    n["network_data"] = json!({"links": [], "services": [], "networks": [
        {"id": "n", "type": "ipv4", "link": "l", "network_id": "x", "ip_address": "127.0.0.17"}]});
    let mut missing = node(&uuid(8), "gone", &ip(8));
    missing["instance_info"]["configdrive"] = json!(format!("{}/configdrive/none", fake.url()));
    missing["network_data"] = json!({"links": [], "services": [], "networks": [
        {"id": "n", "type": "ipv4", "link": "l", "network_id": "x", "ip_address": ip(8)}]});
    fake.with(|s| {
        s.configdrives.insert("node7".into(), iso.into_bytes());
        s.nodes = vec![n, missing];
    });
    let s = Server::start_ironic(&fake.url(), &["--refresh-interval", "1"], &[]);
    eventually(WAIT, "three sweeps", || async {
        sweeps(&s, "periodic").await >= 3.0
    })
    .await;
    assert_eq!(
        instance_id(&s, "127.0.0.17").await,
        (200, "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f".into())
    );
    let (_, _, ud) = get(
        &client_from("127.0.0.17"),
        &s.url("/openstack/latest/user_data"),
    )
    .await;
    assert_eq!(ud, "#cloud-config\nhostname: iso-node\n");
    // Downloaded once however many sweeps ran; the missing one is retried and reported.
    let fetches = |name: &str| fake.configdrive_fetches(name);
    assert_eq!(fetches("node7"), 1);
    assert!(fetches("none") >= 2);
    assert_eq!(instance_id(&s, &ip(8)).await.0, 404);
    let ready = s.readyz().await;
    assert!(
        ready["warnings"].as_array().unwrap().iter().any(|w| w
            .as_str()
            .unwrap()
            .contains("configdrive URL could not be downloaded")),
        "{ready}"
    );
    // The URL's signature never reaches the log.
    assert!(!s.log().contains("temp_url_sig"));
}
