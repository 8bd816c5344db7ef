//! What an attack on the release binary found, each as a test: path rules that a spelling
//! slipped past, a reader that never reads, HTTP/1.0 connections held open, proxy headers
//! and token headers with bytes that are not text, bodies read before the zone check, an
//! admin listener on every address.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{
    client_from, connect, eventually, fixture, get, raw, read_to_close, status_line, Server,
};
use tokio::io::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(30);
const ALPHA: &str = "127.0.0.11";
const ALPHA_ID: &str = "aaaaaaaa-0000-4000-8000-000000000011";

fn policy(text: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), text).unwrap();
    dir
}

fn serve(dir: &Path, extra: &[&str]) -> Server {
    let mut args = vec!["--policy-dir", dir.to_str().unwrap()];
    args.extend(extra);
    Server::start_with(&fixture("nodes.json"), "127.0.0.1".parse().unwrap(), &args)
}

const LAB: &str = "[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\nrate_limit = { per_second = 10000, burst = 10000 }\n";

async fn status(s: &Server, method: reqwest::Method, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut r = client_from(ALPHA).request(method, s.url(path));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn path_rules_cover_every_spelling_of_a_route() {
    let dir = policy(&format!(
        "{LAB}deny_paths = [\"/openstack/*/user_data\", \"/*/user-data\", \"/openstack/latest/vendor_data.json\"]\n"
    ));
    let s = serve(dir.path(), &[]);
    for p in [
        "/latest/user-data",
        "/ec2/latest/user-data",
        "/ec2/2009-04-04/user-data",
        "/ec2/1.0/user-data",
        "/openstack/latest/user_data",
        "/openstack/2012-08-10/user_data",
        // `latest` in a rule is the newest version by any of its names...
        "/openstack/latest/vendor_data.json",
        "/openstack/2025-04-04/vendor_data.json",
    ] {
        assert_eq!(status(&s, reqwest::Method::GET, p, &[]).await, 403, "{p}");
    }
    // ... and no other version.
    assert_eq!(
        status(
            &s,
            reqwest::Method::GET,
            "/openstack/2013-10-17/vendor_data.json",
            &[]
        )
        .await,
        200
    );
    assert_eq!(
        status(
            &s,
            reqwest::Method::GET,
            "/ec2/latest/meta-data/instance-id",
            &[]
        )
        .await,
        200
    );
}

#[tokio::test]
async fn token_puts_obey_path_rules() {
    let ttl = [("X-aws-ec2-metadata-token-ttl-seconds", "60")];
    let s = serve(
        policy(&format!("{LAB}paths = [\"/openstack\"]\n")).path(),
        &[],
    );
    assert_eq!(
        status(&s, reqwest::Method::PUT, "/latest/api/token", &ttl).await,
        403
    );
    let s = serve(
        policy(&format!("{LAB}deny_paths = [\"/latest/api\"]\n")).path(),
        &[],
    );
    assert_eq!(
        status(&s, reqwest::Method::PUT, "/latest/api/token", &ttl).await,
        403
    );
    let s = serve(policy(LAB).path(), &[]);
    assert_eq!(
        status(&s, reqwest::Method::PUT, "/latest/api/token", &ttl).await,
        200
    );
}

#[tokio::test]
async fn a_client_that_stops_reading_is_let_go() {
    // One node with 8 MiB of user data: more than the socket buffers hold.
    let mut inv: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("nodes.json")).unwrap()).unwrap();
    inv["nodes"][0]["instance_info"]["configdrive"]["user_data"] =
        serde_json::Value::String("#".repeat(8 << 20));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.json");
    std::fs::write(&file, inv.to_string()).unwrap();
    let pol = policy(LAB);
    let s = Server::start_with(
        &file,
        "127.0.0.1".parse().unwrap(),
        &[
            "--policy-dir",
            pol.path().to_str().unwrap(),
            "--write-timeout-seconds",
            "1",
            "--max-connections",
            "2",
        ],
    );
    let mut stalled = Vec::new();
    for _ in 0..2 {
        let mut c = connect(&s, ALPHA.parse().unwrap()).await;
        c.write_all(b"GET /openstack/latest/user_data HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n")
            .await
            .unwrap();
        stalled.push(c);
    }
    eventually(WAIT, "both readers held", || async {
        s.metric("metadata_connections_open").await == 2.0
    })
    .await;
    // Neither reads: the write deadline closes both and frees the slots.
    eventually(WAIT, "stalled readers let go", || async {
        s.metric("metadata_connections_open").await == 0.0
    })
    .await;
    assert!(
        s.metric("metadata_exchange_timeouts_total").await
            + s.metric("metadata_requests_total{status=\"200\"}").await
            >= 2.0
    );
    let (code, _, body) = get(&client_from(ALPHA), &s.url("/latest/meta-data/instance-id")).await;
    assert_eq!((code, body.as_str()), (200, ALPHA_ID));
    drop(stalled);
}

#[tokio::test]
async fn http_1_0_without_keep_alive_is_closed() {
    let s = serve(policy(LAB).path(), &[]);
    let answer = raw(
        &s,
        ALPHA,
        b"GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n",
    )
    .await;
    assert_eq!(status_line(&answer), "HTTP/1.1 200 OK");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    // The server closes without waiting for the client's end: read_to_close returns.
    let mut c = connect(&s, ALPHA.parse().unwrap()).await;
    c.write_all(b"GET /latest/meta-data/instance-id HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let answer = read_to_close(&mut c).await;
    assert!(answer.ends_with(ALPHA_ID), "{answer}");
}

#[tokio::test]
async fn proxies_and_token_headers_that_are_not_text() {
    let dir = policy(&format!(
        "{LAB}\n[[zone]]\nname = \"proxy\"\ncidrs = [\"127.0.0.30/32\"]\naction = \"allow\"\ntrusted_proxies = [\"127.0.0.30/32\"]\nforwarded_header = \"forwarded\"\n\
         [[zone]]\nname = \"xff-proxy\"\ncidrs = [\"127.0.0.31/32\"]\naction = \"allow\"\ntrusted_proxies = [\"127.0.0.31/32\"]\n"
    ));
    let s = serve(dir.path(), &[]);
    // A token PUT through a trusted Forwarded proxy is refused, as with X-Forwarded-For.
    let put = |header: &str, value: &str| {
        format!("PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\nX-aws-ec2-metadata-token-ttl-seconds: 60\r\n{header}: {value}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .into_bytes()
    };
    assert_eq!(
        status_line(&raw(&s, "127.0.0.30", &put("Forwarded", "for=127.0.0.11")).await),
        "HTTP/1.1 403 Forbidden"
    );
    // A token that is not text is an invalid token (401), not an absent one.
    let mut req = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\nX-aws-ec2-metadata-token: ab\xffcd\r\n\r\n".to_vec();
    assert_eq!(
        status_line(&raw(&s, ALPHA, &req).await),
        "HTTP/1.1 401 Unauthorized"
    );
    // An X-Forwarded-For that is not text, from a trusted proxy, is a bad header (400),
    // never the proxy's own request.
    req = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\nX-Forwarded-For: 127.0.0.11\xff\r\n\r\n".to_vec();
    assert_eq!(
        status_line(&raw(&s, "127.0.0.31", &req).await),
        "HTTP/1.1 400 Bad Request"
    );
}

#[tokio::test]
async fn a_password_body_is_not_read_before_the_zone_check() {
    let dir = policy(&format!(
        "{LAB}\n[[zone]]\nname = \"quarantine\"\ncidrs = [\"127.0.0.50/32\"]\naction = \"deny\"\n"
    ));
    let s = serve(dir.path(), &["--header-timeout-seconds", "60"]);
    // The body is announced and never sent: a denied client gets its 403 at once, not a
    // 408 after the body's time is up.
    let mut c = connect(&s, "127.0.0.50".parse().unwrap()).await;
    c.write_all(
        b"POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut c).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 403 Forbidden", "{answer}");
}

#[test]
fn an_admin_listener_on_every_address_is_refused() {
    let inv = fixture("nodes.json");
    let port = common::free_port("127.0.0.1".parse().unwrap()).to_string();
    let (code, err) = common::run_to_exit(common::bin().args([
        "serve",
        "--inventory",
        inv.to_str().unwrap(),
        "--bind",
        "127.0.0.1",
        "--port",
        &port,
        "--admin",
        "0.0.0.0:9",
    ]));
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with(
            "error: the admin listener 0.0.0.0:9 would answer on the metadata address too"
        ),
        "{err}"
    );
}

const DENIED: &str = "127.0.0.50";

fn quarantine() -> tempfile::TempDir {
    policy(&format!(
        "{LAB}\n[[zone]]\nname = \"quarantine\"\ncidrs = [\"127.0.0.50/32\"]\naction = \"deny\"\n"
    ))
}

#[tokio::test]
async fn a_denied_client_can_drive_neither_the_log_nor_the_server() {
    let dir = quarantine();
    let s = serve(dir.path(), &["--refusals-per-minute", "60"]);
    let mut statuses = std::collections::BTreeMap::new();
    for _ in 0..1000 {
        let answer = raw(
            &s,
            DENIED,
            b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
        )
        .await;
        *statuses
            .entry(status_line(&answer).to_string())
            .or_insert(0) += 1;
    }
    // The budget's 60 refusals, then its connections are refused at once.
    assert_eq!(
        statuses.get("HTTP/1.1 403 Forbidden"),
        Some(&61),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.get("HTTP/1.1 429 Too Many Requests"),
        Some(&939),
        "{statuses:?}"
    );
    s.metric_reaches(
        "metadata_refusal_throttled_total{action=\"refused\"}",
        939.0,
    )
    .await;
    // One audit line per reason; everything else counted.
    s.metric_reaches("metadata_audit_suppressed_total", 998.0)
        .await;
    let lines: Vec<_> = s
        .audit_events()
        .into_iter()
        .filter(|e| e["client"] == DENIED || e["peer"] == DENIED)
        .map(|e| e["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(lines, ["zone_denied", "refusal_budget"]);
    // Everyone else is served meanwhile.
    let (code, _, body) = get(&client_from(ALPHA), &s.url("/latest/meta-data/instance-id")).await;
    assert_eq!((code, body.as_str()), (200, ALPHA_ID));
}

#[tokio::test]
async fn unlogged_refusals_are_summed_up_once_per_interval() {
    let dir = quarantine();
    let s = serve(dir.path(), &["--audit-interval-seconds", "1"]);
    for _ in 0..5 {
        let answer = raw(
            &s,
            DENIED,
            b"GET / HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n",
        )
        .await;
        assert_eq!(status_line(&answer), "HTTP/1.1 403 Forbidden");
    }
    let events = s
        .audit_until("the interval's summary", |ev| {
            ev.iter().any(|e| e["event"] == "suppressed")
        })
        .await;
    let summary = events.iter().find(|e| e["event"] == "suppressed").unwrap();
    assert_eq!(
        (summary["refusals"].as_u64(), summary["clients"].as_u64()),
        (Some(4), Some(1))
    );
}

/// The number of log lines whose message is `message`.
fn lines_saying(s: &Server, message: &str) -> usize {
    s.log()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == message)
        .count()
}

const DENY_50: &str =
    "[[zone]]\nname = \"quarantine\"\ncidrs = [\"127.0.0.50/32\"]\naction = \"deny\"\n";

#[tokio::test]
async fn a_broken_policy_file_is_rejected_once_and_nothing_reloads_itself() {
    let dir = policy(LAB);
    let s = serve(dir.path(), &[]);
    std::fs::write(dir.path().join("b.toml"), "[[zone]]\nname = \n").unwrap();
    s.metric_reaches("metadata_policy_reloads_total{result=\"rejected\"}", 1.0)
        .await;
    // A valid edit after it: applied once. Reading the files must not look like an edit.
    std::fs::write(dir.path().join("b.toml"), DENY_50).unwrap();
    s.metric_reaches("metadata_policy_reloads_total{result=\"applied\"}", 1.0)
        .await;
    assert_eq!(status_of(&s, "127.0.0.50").await, 403);
    assert_eq!(
        lines_saying(&s, "policy rejected; the previous policy stays in force"),
        1
    );
    assert_eq!(lines_saying(&s, "policy reloaded"), 1);
    assert_eq!(
        s.metric("metadata_policy_reloads_total{result=\"rejected\"}")
            .await,
        1.0
    );
    assert_eq!(
        s.metric("metadata_policy_reloads_total{result=\"applied\"}")
            .await,
        1.0
    );
}

async fn status_of(s: &Server, from: &str) -> u16 {
    get(&client_from(from), &s.url("/latest/meta-data/instance-id"))
        .await
        .0
}

#[tokio::test]
async fn an_emptied_policy_file_is_refused_and_the_old_policy_serves() {
    let dir = policy(&format!("{LAB}\n{DENY_50}"));
    let s = serve(dir.path(), &[]);
    assert_eq!(status_of(&s, "127.0.0.50").await, 403);
    // Truncated in place, as `> p.toml` or an editor without atomic saves does.
    std::fs::write(dir.path().join("p.toml"), "").unwrap();
    s.metric_reaches("metadata_policy_reloads_total{result=\"rejected\"}", 1.0)
        .await;
    assert_eq!(status_of(&s, ALPHA).await, 200);
    assert_eq!(status_of(&s, "127.0.0.50").await, 403);
    assert!(s.log().contains("no zone"), "{}", s.log());
}

#[tokio::test]
async fn a_replaced_policy_directory_keeps_being_watched() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("policies");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("p.toml"), LAB).unwrap();
    let s = serve(&dir, &[]);
    // Renamed into place: a new directory replaces the old one.
    let new = root.path().join("policies.new");
    std::fs::create_dir(&new).unwrap();
    std::fs::write(new.join("p.toml"), format!("{LAB}\n{DENY_50}")).unwrap();
    std::fs::rename(&dir, root.path().join("policies.old")).unwrap();
    std::fs::rename(&new, &dir).unwrap();
    s.metric_reaches("metadata_policy_reloads_total{result=\"applied\"}", 1.0)
        .await;
    assert_eq!(status_of(&s, "127.0.0.50").await, 403);
    // Deleted and made again.
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("p.toml"), LAB).unwrap();
    s.metric_reaches("metadata_policy_reloads_total{result=\"applied\"}", 2.0)
        .await;
    assert_eq!(status_of(&s, "127.0.0.50").await, 404);
}

#[test]
fn a_policy_without_zones_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("p.toml"), "# nothing yet\n").unwrap();
    let inv = fixture("nodes.json");
    let port = common::free_port("127.0.0.1".parse().unwrap()).to_string();
    let (code, err) = common::run_to_exit(common::bin().args([
        "serve",
        "--inventory",
        inv.to_str().unwrap(),
        "--bind",
        "127.0.0.1",
        "--port",
        &port,
        "--policy-dir",
        dir.path().to_str().unwrap(),
    ]));
    assert_eq!(code, Some(1));
    assert!(err.contains("no zone"), "{err}");
}

#[tokio::test]
async fn zone_defences_of_the_metadata_address() {
    let dir = policy(&format!(
        "{LAB}allowed_hosts = [\"metadata.internal\"]\n\n\
         [[zone]]\nname = \"strict\"\ncidrs = [\"127.0.0.20/30\"]\naction = \"allow\"\nrequire_header = \"Metadata-Flavor: ironic\"\nforwarded_refuse = true\n"
    ));
    let s = serve(dir.path(), &[]);
    let ask = |from: &'static str, headers: Vec<(&'static str, &'static str)>| {
        let url = s.url("/latest/meta-data/");
        async move {
            let mut r = client_from(from).get(url);
            for (k, v) in headers {
                r = r.header(k, v);
            }
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    // DNS rebinding: a name resolving to the metadata address is not the metadata address.
    assert_eq!(
        ask(ALPHA, vec![("Host", "evil.example")]).await,
        (403, "host not allowed\n".into())
    );
    for host in [
        "169.254.169.254",
        "169.254.169.254:80",
        "[fe80::a9fe:a9fe]",
        "metadata.internal",
        "METADATA.internal.",
    ] {
        assert_eq!(ask(ALPHA, vec![("Host", host)]).await.0, 200, "{host}");
    }
    // The listener's own address is always fine (reqwest sends 127.0.0.1:PORT).
    assert_eq!(ask(ALPHA, vec![]).await.0, 200);
    // A required header, as GCE's Metadata-Flavor.
    assert_eq!(
        ask("127.0.0.21", vec![]).await,
        (403, "required header missing\n".into())
    );
    assert_eq!(
        ask("127.0.0.21", vec![("Metadata-Flavor", "Google")])
            .await
            .0,
        403
    );
    assert_eq!(
        ask("127.0.0.21", vec![("Metadata-Flavor", "ironic")])
            .await
            .0,
        404 // admitted; no node claims 127.0.0.21
    );
    // A forwarded header from a peer that is not a trusted proxy.
    assert_eq!(
        ask(
            "127.0.0.21",
            vec![
                ("Metadata-Flavor", "ironic"),
                ("X-Forwarded-For", "127.0.0.11")
            ]
        )
        .await,
        (403, "forwarded header refused\n".into())
    );
    // Elsewhere it is only ignored, as before.
    assert_eq!(
        ask(ALPHA, vec![("X-Forwarded-For", "127.0.0.12")]).await.0,
        200
    );
}
