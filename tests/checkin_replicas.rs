//! Check-ins shared by replicas through Ironic (`--checkin-write-back`): a replica writes
//! each node's check-in to the node's `extra` (one key, `ironic_metadata_checkin`, by a
//! JSON patch), every replica reads it back with its polls, so two replicas on one Ironic
//! show the same check-in. Ironic refusing the write never fails the node's POST: the
//! check-in stays stored where it arrived, the failure is counted and retried.

mod common;

use std::time::Duration;

use common::fake_ironic::{node, FakeIronic};
use common::{bin, client_from, eventually, fixture, get, run_to_exit, Server};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(20);
const KEY: &str = "/extra/ironic_metadata_checkin";

const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDReux7BZ5d3hBwGKXrts3TBJjsSMO7fd5vsHxCwR6If7NBgP+brAjyyG0+V7ynJki6qAZO6pR9QpSEMe2lJuMVy7QTfkQacFrITJ+u/+TXqFW2Nz6WR6xYcdlIrCQQ38JvRar8NcPKhLTsMYanj/AAmBuz/ls/1mWb9WrNFBwgnOj7gQt7nG0TeioLUUSHK2EkiWHGqxET2GHvYSUwDKJbuAPKKbU1hindlU4DiO66B/2pQKIY60HVAYydd0h9eOt6RietmItvbEkMJmgMhBkvLitkVLhe7gJ84glf9z0MD/cQBUcargs25qZCeJyG6vuHRur4j7oF8Me1ggO/qVl5 root@alpha\n";
const RSA_FP: &str = "SHA256:FJos/erC99pvK+ca0mo+o1g9sn8qyIls8Z4KPm7swp0";
const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIH2xeR5cb3AFJAfja8uGhdYsDweQTzEsSCwrGGTQ8i7 root@node\n";
const ED25519_FP: &str = "SHA256:zbwxxaB1LZGW3WaoWvjVE23DhgqxsZOGMA+Wqu02XH8";

fn uuid(n: u32) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// A deployed node at 127.0.1.`n` whose `extra` already holds an operator's key.
fn deploy(fake: &FakeIronic, n: u32) -> (String, String) {
    let (id, ip) = (uuid(n), format!("127.0.1.{n}"));
    let mut v = node(&id, &format!("n{n}"), &ip);
    v["instance_uuid"] = json!(format!("11111111-0000-4000-8000-{n:012}"));
    v["provision_updated_at"] = json!("2026-11-30T10:00:00.000000+00:00");
    v["extra"] = json!({"rack": "r12"});
    fake.deploy(v);
    (id, ip)
}

fn replica(fake: &FakeIronic) -> Server {
    replica_with(fake, "--checkin-write-back")
}

fn replica_with(fake: &FakeIronic, write_back: &str) -> Server {
    Server::start_ironic(
        &fake.url(),
        &[
            write_back,
            "--poll-interval",
            "1",
            "--reconcile-interval",
            "3600",
        ],
        &[],
    )
}

async fn ready(s: &Server) {
    eventually(WAIT, "first sweep", || async {
        s.readyz().await["ready"] == true
    })
    .await;
}

async fn phone_home(s: &Server, from: &str) -> u16 {
    // As cloud-init's phone_home sends it: a form, spaces as `+`.
    let form = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("pub_key_dsa", "N/A"),
            ("pub_key_rsa", RSA),
            ("pub_key_ed25519", ED25519),
            ("instance_id", "i-1"),
            ("hostname", "n1"),
        ])
        .finish();
    post(
        s,
        from,
        "phone_home",
        form,
        "application/x-www-form-urlencoded",
    )
    .await
}

async fn report(s: &Server, from: &str, name: &str, result: &str) -> u16 {
    let event = json!({"name": name, "event_type": "finish", "result": result,
                       "description": "x".repeat(1000), "origin": "cloudinit", "timestamp": 1.5});
    post(s, from, "reporting", event.to_string(), "application/json").await
}

async fn post(s: &Server, from: &str, file: &str, body: String, ct: &str) -> u16 {
    client_from(from)
        .post(s.url(&format!("/openstack/latest/{file}")))
        .header("Content-Type", ct)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn checkin(s: &Server, id: &str) -> (u16, Value) {
    let url = s.admin_url(&format!("/nodes/{id}/checkin"));
    let (status, _, body) = get(&reqwest::Client::new(), &url).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn fingerprints(v: &Value) -> Vec<String> {
    v["phone_home"]["host_keys"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| format!("{} {}", k["type"].as_str().unwrap(), k["fingerprint"]))
        .collect()
}

fn expected_fingerprints() -> Vec<String> {
    vec![
        format!("ssh-rsa \"{RSA_FP}\""),
        format!("ssh-ed25519 \"{ED25519_FP}\""),
    ]
}

/// The value written to the node's `extra`, as the fake Ironic now holds it.
fn written(fake: &FakeIronic, id: &str) -> Value {
    fake.with(|s| {
        s.nodes.iter().find(|n| n["uuid"] == id).unwrap()["extra"]["ironic_metadata_checkin"]
            .clone()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_posted_to_one_replica_is_shown_by_the_other() {
    let fake = FakeIronic::start().await;
    let (id, ip) = deploy(&fake, 1);
    let (a, b) = (replica(&fake), replica(&fake));
    ready(&a).await;
    ready(&b).await;
    assert_eq!(checkin(&b, &id).await.0, 404);

    assert_eq!(phone_home(&a, &ip).await, 200);
    a.metric_reaches(
        "metadata_ironic_write_backs_total{kind=\"checkin\",result=\"written\"}",
        1.0,
    )
    .await;
    // One JSON patch of one key of `extra`, holding the fingerprints and no key itself.
    let (node, patch) = fake.with(|s| s.patches[0].clone());
    assert_eq!(node, id);
    let ops = patch.as_array().unwrap();
    assert_eq!(ops.len(), 1, "{patch}");
    assert_eq!(
        (&ops[0]["op"], &ops[0]["path"]),
        (&json!("add"), &json!(KEY))
    );
    let value = &ops[0]["value"];
    assert_eq!(fingerprints(value), expected_fingerprints(), "{value}");
    assert!(!patch.to_string().contains("AAAA"), "{patch}");
    assert!(value["phone_home"]["at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(value["last_at"], value["phone_home"]["at"]);

    // Replica B reads it from Ironic with its next poll.
    eventually(WAIT, "replica B shows A's check-in", || async {
        fingerprints(&checkin(&b, &id).await.1) == expected_fingerprints()
    })
    .await;
    let at_b = checkin(&b, &id).await.1;
    assert_eq!(at_b["node"], json!(id));
    assert_eq!(at_b["phone_home"]["hostname"], "n1");

    // Boot reports POSTed to B join what A wrote (B's write holds both), and A shows both.
    assert_eq!(report(&b, &ip, "modules-final", "SUCCESS").await, 200);
    eventually(
        WAIT,
        "replica A shows B's report beside its own check-in",
        || async {
            let v = checkin(&a, &id).await.1;
            v["events"]["modules-final"]["result"] == "SUCCESS"
                && fingerprints(&v) == expected_fingerprints()
        },
    )
    .await;
    let stored = written(&fake, &id);
    assert_eq!(fingerprints(&stored), expected_fingerprints());
    assert_eq!(stored["events"]["modules-final"]["result"], "SUCCESS");
    // Bounded: the event's long description stays with the replica it reached.
    assert_eq!(
        stored["events"]["modules-final"]["description"],
        Value::Null
    );
    assert!(
        checkin(&b, &id).await.1["events"]["modules-final"]["description"]
            .as_str()
            .is_some_and(|d| d.len() == 1000)
    );
    // The node's other `extra` keys are left as they were.
    assert_eq!(
        fake.with(|s| s.nodes[0]["extra"]["rack"].clone()),
        json!("r12")
    );
    let (sa, sb) = (checkin(&a, &id).await.1, checkin(&b, &id).await.1);
    assert_eq!(
        (&sa["phone_home"], &sa["last_at"]),
        (&sb["phone_home"], &sb["last_at"])
    );
}

/// What a node behind a load balancer does: its check-ins reach both replicas at once,
/// before either has read the other's write. Both end up showing every part, and Ironic
/// holds them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_ins_reaching_both_replicas_at_once_end_up_in_both() {
    let fake = FakeIronic::start().await;
    let (id, ip) = deploy(&fake, 3);
    let (a, b) = (replica(&fake), replica(&fake));
    ready(&a).await;
    ready(&b).await;
    assert_eq!(report(&a, &ip, "init-local", "SUCCESS").await, 200);
    assert_eq!(report(&b, &ip, "init", "SUCCESS").await, 200);
    assert_eq!(phone_home(&a, &ip).await, 200);
    assert_eq!(report(&b, &ip, "modules-final", "FAIL").await, 200);
    let complete = |v: &Value| {
        let stages: Vec<(&String, &Value)> = v["events"]
            .as_object()
            .map(|o| o.iter().map(|(k, e)| (k, &e["result"])).collect())
            .unwrap_or_default();
        fingerprints(v) == expected_fingerprints()
            && stages
                == [
                    (&"init".to_string(), &json!("SUCCESS")),
                    (&"init-local".to_string(), &json!("SUCCESS")),
                    (&"modules-final".to_string(), &json!("FAIL")),
                ]
    };
    eventually(WAIT, "Ironic holds every part", || async {
        complete(&written(&fake, &id))
    })
    .await;
    for (s, which) in [(&a, "A"), (&b, "B")] {
        eventually(
            WAIT,
            &format!("replica {which} shows every part"),
            || async { complete(&checkin(s, &id).await.1) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ironic_refusing_the_write_leaves_the_check_in_stored_and_counts_it() {
    let fake = FakeIronic::start().await;
    let (id, ip) = deploy(&fake, 2);
    fake.with(|s| s.patch_status = Some(403));
    let a = replica(&fake);
    ready(&a).await;

    assert_eq!(phone_home(&a, &ip).await, 200);
    assert_eq!(
        fingerprints(&checkin(&a, &id).await.1),
        expected_fingerprints()
    );
    // Refused, counted, and tried again after a pause.
    a.metric_reaches(
        "metadata_ironic_write_backs_total{kind=\"checkin\",result=\"http_4xx\"}",
        2.0,
    )
    .await;
    assert!(fake.with(|s| s.patches.len()) >= 2);
    assert!(
        a.log()
            .contains("cannot write to the node's extra in Ironic"),
        "{}",
        a.log()
    );
    assert_eq!(written(&fake, &id), Value::Null);
    assert_eq!(checkin(&a, &id).await.0, 200);

    // Once Ironic accepts, the retry writes it.
    fake.with(|s| s.patch_status = None);
    a.metric_reaches(
        "metadata_ironic_write_backs_total{kind=\"checkin\",result=\"written\"}",
        1.0,
    )
    .await;
    assert_eq!(fingerprints(&written(&fake, &id)), expected_fingerprints());
}

/// A node redeployed between its check-in and the write: what the old deployment sent is
/// not written over the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_in_of_a_deployment_gone_is_not_written() {
    let fake = FakeIronic::start().await;
    let (id, ip) = deploy(&fake, 5);
    let a = replica(&fake);
    ready(&a).await;
    assert_eq!(phone_home(&a, &ip).await, 200);
    fake.update_node(&id, |n| {
        n["provision_updated_at"] = json!("2026-11-30T11:00:00.000000+00:00");
    });
    a.metric_reaches(
        "metadata_ironic_write_backs_total{kind=\"checkin\",result=\"stale\"}",
        1.0,
    )
    .await;
    assert!(fake.with(|s| s.patches.is_empty()));
    assert_eq!(written(&fake, &id), Value::Null);
}

/// cloudbase-init's password, with `--password-write-back`: set once per deployment
/// whichever replica it reaches, answered by both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_posted_to_one_replica_is_answered_by_the_other() {
    let fake = FakeIronic::start().await;
    let (id, ip) = deploy(&fake, 4);
    let (a, b) = (
        replica_with(&fake, "--password-write-back"),
        replica_with(&fake, "--password-write-back"),
    );
    ready(&a).await;
    ready(&b).await;
    let url = "/openstack/latest/password";
    let password = |s: &Server| {
        let url = s.url(url);
        let ip = ip.clone();
        async move { get(&client_from(&ip), &url).await.2 }
    };
    assert_eq!(password(&b).await, "");
    assert_eq!(
        post(&a, &ip, "password", "c2VjcmV0".into(), "text/plain").await,
        200
    );
    eventually(WAIT, "replica B answers the password set at A", || async {
        password(&b).await == "c2VjcmV0"
    })
    .await;
    assert_eq!(
        post(&b, &ip, "password", "other".into(), "text/plain").await,
        409
    );
    assert_eq!(password(&a).await, "c2VjcmV0");
    let held = fake.with(|s| {
        s.nodes.iter().find(|n| n["uuid"] == id.as_str()).unwrap()["extra"]
            ["ironic_metadata_password"]
            .clone()
    });
    assert_eq!(held["password"], "c2VjcmV0");
    assert_eq!(
        held["deployment"],
        json!("11111111-0000-4000-8000-000000000004|2026-11-30T10:00:00.000000+00:00")
    );
    a.metric_reaches(
        "metadata_ironic_write_backs_total{kind=\"password\",result=\"written\"}",
        1.0,
    )
    .await;
    // Check-ins are not written without their own flag.
    assert_eq!(phone_home(&a, &ip).await, 200);
    assert_eq!(checkin(&a, &id).await.0, 200);
    assert_eq!(written(&fake, &id), Value::Null);
}

#[test]
fn write_back_needs_ironic_as_the_source() {
    let (code, log) = run_to_exit(bin().args([
        "serve",
        "--inventory",
        fixture("nodes.json").to_str().unwrap(),
        "--policy-dir",
        fixture("policies/open").to_str().unwrap(),
        "--checkin-write-back",
    ]));
    assert_ne!(code, Some(0));
    assert!(log.contains("--checkin-write-back needs Ironic"), "{log}");
}
