//! Check-ins as cloud-init sends them: `phone_home` (its SSH host keys, instance id,
//! hostname and FQDN, form-encoded) and webhook reporting (JSON events), POSTed by the node
//! itself, shown on the admin listener at `/nodes/<uuid>/checkin`, counted, kept across
//! restarts in `STATE_DIR` and forgotten when the node is redeployed. (cloud-init's own
//! phone_home module and webhook handler run against it in the real-Ironic e2e suite.)

mod common;

use common::{client_from, fixture, get, raw, status_line, Server};
use serde_json::{json, Value};

const ALPHA: &str = "127.0.0.11";
const ALPHA_ID: &str = "aaaaaaaa-0000-4000-8000-000000000011";
const BETA: &str = "127.0.0.12";
const BETA_ID: &str = "bbbbbbbb-0000-4000-8000-000000000012";

/// Host keys made by `ssh-keygen -t rsa|ecdsa|ed25519`, with what `ssh-keygen -lf` prints
/// for each.
const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDReux7BZ5d3hBwGKXrts3TBJjsSMO7fd5vsHxCwR6If7NBgP+brAjyyG0+V7ynJki6qAZO6pR9QpSEMe2lJuMVy7QTfkQacFrITJ+u/+TXqFW2Nz6WR6xYcdlIrCQQ38JvRar8NcPKhLTsMYanj/AAmBuz/ls/1mWb9WrNFBwgnOj7gQt7nG0TeioLUUSHK2EkiWHGqxET2GHvYSUwDKJbuAPKKbU1hindlU4DiO66B/2pQKIY60HVAYydd0h9eOt6RietmItvbEkMJmgMhBkvLitkVLhe7gJ84glf9z0MD/cQBUcargs25qZCeJyG6vuHRur4j7oF8Me1ggO/qVl5 root@alpha\n";
const RSA_FP: &str = "SHA256:FJos/erC99pvK+ca0mo+o1g9sn8qyIls8Z4KPm7swp0";
const ECDSA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBJJI/mjKonULrELhfKupiyNxkwG5WGhqMntrjNkC0EqyM2xdGuhySxggn7wt8j/uUEaxenUV+RN1+b5riWzutDs= root@alpha\n";
const ECDSA_FP: &str = "SHA256:TdVLNcN4GCXPElPxxwLY5pYJbfK7NSc892rWP2BG1ow";
const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIH2xeR5cb3AFJAfja8uGhdYsDweQTzEsSCwrGGTQ8i7 root@node\n";
const ED25519_FP: &str = "SHA256:zbwxxaB1LZGW3WaoWvjVE23DhgqxsZOGMA+Wqu02XH8";

/// The form cloud-init's phone_home posts with `post: all` on a node without a DSA key.
fn phone_home_form(instance_id: &str, hostname: &str) -> Vec<(&'static str, String)> {
    vec![
        ("pub_key_dsa", "N/A".into()),
        ("pub_key_rsa", RSA.into()),
        ("pub_key_ecdsa", ECDSA.into()),
        ("pub_key_ed25519", ED25519.into()),
        ("instance_id", instance_id.into()),
        ("hostname", hostname.into()),
        ("fqdn", format!("{hostname}.example.com")),
    ]
}

async fn post(
    s: &Server,
    from: &str,
    path: &str,
    body: reqwest::Body,
    form: bool,
) -> (u16, String) {
    let ct = if form {
        "application/x-www-form-urlencoded"
    } else {
        "application/json"
    };
    let r = client_from(from)
        .post(s.url(path))
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

async fn phone_home(s: &Server, from: &str, form: &[(&str, String)]) -> (u16, String) {
    // As cloud-init's phone_home sends it: a form, spaces as `+`.
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    post(s, from, "/openstack/latest/phone_home", body.into(), true).await
}

async fn report(s: &Server, from: &str, event: &Value) -> (u16, String) {
    let body = event.to_string();
    post(s, from, "/openstack/latest/reporting", body.into(), false).await
}

fn event(name: &str, event_type: &str, result: Option<&str>) -> Value {
    let mut e = json!({"name": name, "description": format!("running {name}"),
                       "event_type": event_type, "origin": "cloudinit", "timestamp": 1764500000.25});
    if let Some(r) = result {
        e["result"] = json!(r);
    }
    e
}

async fn checkin(s: &Server, uuid: &str) -> (u16, Option<Value>) {
    let (status, _, body) = get(
        &reqwest::Client::new(),
        &s.admin_url(&format!("/nodes/{uuid}/checkin")),
    )
    .await;
    (status, serde_json::from_str(&body).ok())
}

fn inventory(dir: &std::path::Path, provisioned: &str) -> std::path::PathBuf {
    let mut inv: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("nodes.json")).unwrap()).unwrap();
    inv["nodes"][0]["provision_updated_at"] = json!(provisioned);
    let path = dir.join(format!("inventory-{provisioned}.json"));
    std::fs::write(&path, inv.to_string()).unwrap();
    path
}

#[tokio::test]
async fn phone_home_and_reporting_are_shown_for_the_calling_node_only() {
    let s = Server::start(&fixture("nodes.json"));
    assert_eq!(checkin(&s, ALPHA_ID).await.0, 404);
    assert_eq!(
        phone_home(&s, ALPHA, &phone_home_form("i-alpha", "alpha")).await,
        (200, String::new())
    );
    for (name, t, r) in [
        ("init-local", "start", None),
        ("init-local", "finish", Some("SUCCESS")),
        ("init-network/config-ssh", "finish", Some("SUCCESS")),
        ("modules-final/config-phone_home", "start", None),
        ("modules-final", "finish", Some("FAIL")),
    ] {
        assert_eq!(
            report(&s, ALPHA, &event(name, t, r)).await,
            (200, String::new()),
            "{name}"
        );
    }
    let (status, view) = checkin(&s, ALPHA_ID).await;
    assert_eq!(status, 200);
    let view = view.unwrap();
    assert_eq!(view["node"], ALPHA_ID);
    let ph = &view["phone_home"];
    assert_eq!(
        ph["host_keys"],
        json!([{"type": "ssh-rsa", "fingerprint": RSA_FP},
               {"type": "ecdsa-sha2-nistp256", "fingerprint": ECDSA_FP},
               {"type": "ssh-ed25519", "fingerprint": ED25519_FP}])
    );
    assert_eq!(
        (&ph["instance_id"], &ph["hostname"], &ph["fqdn"]),
        (
            &json!("i-alpha"),
            &json!("alpha"),
            &json!("alpha.example.com")
        )
    );
    // The last event of each stage, with the node's own timestamp and when it arrived.
    let events = view["events"].as_object().unwrap();
    assert_eq!(
        events.keys().collect::<Vec<_>>(),
        ["init-local", "init-network", "modules-final"]
    );
    assert_eq!(events["init-local"]["event_type"], "finish");
    assert_eq!(events["init-local"]["result"], "SUCCESS");
    assert_eq!(events["modules-final"]["name"], "modules-final");
    assert_eq!(events["modules-final"]["result"], "FAIL");
    assert_eq!(events["modules-final"]["timestamp"], 1764500000.25);
    let at = events["modules-final"]["at"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.len() == 24, "{at}");
    assert_eq!(view["last_at"], events["modules-final"]["at"]);
    // Beta's view holds nothing of alpha's; a stranger cannot check in.
    assert_eq!(checkin(&s, BETA_ID).await.0, 404);
    assert_eq!(report(&s, BETA, &event("init", "start", None)).await.0, 200);
    let beta = checkin(&s, BETA_ID).await.1.unwrap();
    assert_eq!(beta["phone_home"], Value::Null);
    assert_eq!(beta["events"].as_object().unwrap().len(), 1);
    assert_eq!(
        report(&s, "127.0.0.99", &event("init", "start", None)).await,
        (404, "no metadata for this address\n".into())
    );
    assert_eq!(checkin(&s, "no-such-node").await.0, 404);
    assert_eq!(
        s.metric("metadata_checkins_total{kind=\"phone_home\",result=\"stored\"}")
            .await,
        1.0
    );
    assert_eq!(
        s.metric("metadata_checkins_total{kind=\"reporting\",result=\"stored\"}")
            .await,
        6.0
    );
}

#[tokio::test]
async fn bad_check_ins_are_refused_and_store_nothing() {
    let s = Server::start(&fixture("nodes.json"));
    let c = client_from(ALPHA);
    let big = format!(
        "{{\"name\": \"init\", \"event_type\": \"start\", \"description\": \"{}\"}}",
        "x".repeat(16 * 1024)
    );
    assert_eq!(
        post(&s, ALPHA, "/openstack/latest/reporting", big.into(), false).await,
        (413, "check-in over 16384 bytes\n".into())
    );
    // Without a Content-Length (chunked), the limit holds as the body arrives.
    let mut chunked = b"POST /openstack/latest/phone_home HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..17 {
        chunked.extend_from_slice(b"400\r\n");
        chunked.extend_from_slice(&[b'a'; 1024]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        status_line(&raw(&s, ALPHA, &chunked).await),
        "HTTP/1.1 413 Payload Too Large"
    );
    for body in [
        "{",
        "[]",
        "{\"name\": \"init\"}",
        "{\"name\": \"init\", \"event_type\": \"stop\"}",
    ] {
        assert_eq!(
            post(
                &s,
                ALPHA,
                "/openstack/latest/reporting",
                body.to_string().into(),
                false
            )
            .await,
            (400, "malformed check-in\n".into()),
            "{body}"
        );
    }
    let mut bad_key = phone_home_form("i", "alpha");
    bad_key[3].1 = "ssh-ed25519 AAAAB3NzaC1yc2EAAAADAQAB".into();
    assert_eq!(phone_home(&s, ALPHA, &bad_key).await.0, 400);
    assert_eq!(
        phone_home(&s, ALPHA, &[("colour", "blue".into())]).await.0,
        400
    );
    assert_eq!(checkin(&s, ALPHA_ID).await.0, 404, "nothing was stored");
    assert_eq!(
        s.metric("metadata_checkins_total{kind=\"reporting\",result=\"malformed\"}")
            .await,
        4.0
    );
    assert_eq!(
        s.metric("metadata_checkins_total{kind=\"reporting\",result=\"too_large\"}")
            .await,
        1.0
    );
    // Read with GET, or POSTed anywhere else in the tree: 405.
    assert_eq!(get(&c, &s.url("/openstack/latest/phone_home")).await.0, 405);
    assert_eq!(
        post(
            &s,
            ALPHA,
            "/latest/phone_home",
            "x".to_string().into(),
            true
        )
        .await
        .0,
        405
    );
    // A node sending more than its allowance is refused until it refills.
    let mut codes = Vec::new();
    for _ in 0..500 {
        let code = report(&s, ALPHA, &event("init", "start", None)).await.0;
        codes.push(code);
        if code == 429 {
            break;
        }
    }
    assert_eq!(
        codes.last(),
        Some(&429),
        "{} check-ins and never limited",
        codes.len()
    );
    assert!(codes.len() > 300, "limited after {}", codes.len());
}

#[tokio::test]
async fn check_ins_survive_a_restart_and_a_redeployed_node_starts_clean() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let args = ["--state-dir", state.to_str().unwrap()];
    let first = inventory(dir.path(), "2026-11-01T10:00:00+00:00");
    let s = Server::start_with(&first, "127.0.0.1".parse().unwrap(), &args);
    assert_eq!(
        phone_home(&s, ALPHA, &phone_home_form("i-alpha", "alpha"))
            .await
            .0,
        200
    );
    let before = checkin(&s, ALPHA_ID).await.1.unwrap();
    drop(s);
    let s = Server::start_with(&first, "127.0.0.1".parse().unwrap(), &args);
    assert_eq!(checkin(&s, ALPHA_ID).await, (200, Some(before)));
    drop(s);
    // Provisioned again: the same node, a new deployment.
    let again = inventory(dir.path(), "2026-11-02T10:00:00+00:00");
    let s = Server::start_with(&again, "127.0.0.1".parse().unwrap(), &args);
    assert_eq!(checkin(&s, ALPHA_ID).await.0, 404);
    assert_eq!(
        report(&s, ALPHA, &event("init", "start", None)).await.0,
        200
    );
    let after = checkin(&s, ALPHA_ID).await.1.unwrap();
    assert_eq!(after["phone_home"], Value::Null);
}
