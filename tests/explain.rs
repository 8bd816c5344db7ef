//! `ironic-metadata explain` and the admin listener's `/explain` say what the request path
//! does: for every identity case the other tests cover through the server, a request, the
//! endpoint and the command agree on the status, the node answered, or the refusal's reason,
//! body and detail (the audit line's). Bad questions exit 2 (400 at the endpoint) in one
//! line, and no answer carries a node's user data or keys.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::fake_ironic::{node, FakeIronic};
use common::{bin, client_from, fixture, get, Server};
use serde_json::Value;

/// The command, with no setting from the environment of the test run.
fn explain_cmd() -> Command {
    let mut cmd = bin();
    cmd.arg("explain");
    for var in [
        "INVENTORY_FILE",
        "IRONIC_URL",
        "OS_CLOUD",
        "OS_AUTH_URL",
        "POLICY_DIR",
        "SERVED_STATES",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("run explain");
    (
        status.code(),
        String::from_utf8(stdout).unwrap(),
        String::from_utf8(stderr).unwrap(),
    )
}

/// `explain --inventory INVENTORY --policy-dir POLICY ARGS...`.
fn cli(inventory: &Path, policy: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    run(explain_cmd()
        .arg("--inventory")
        .arg(inventory)
        .arg("--policy-dir")
        .arg(policy)
        .args(args))
}

/// A served inventory with its policy, asked three ways.
struct Case {
    server: Server,
    inventory: PathBuf,
    policy: PathBuf,
}

impl Case {
    fn start(inventory: PathBuf, policy: PathBuf) -> Case {
        let server = Server::start_with(
            &inventory,
            "127.0.0.1".parse().unwrap(),
            &["--policy-dir", policy.to_str().unwrap()],
        );
        Case {
            server,
            inventory,
            policy,
        }
    }

    async fn endpoint(&self, query: &str) -> (u16, String, String) {
        let url = self.server.admin_url(&format!("/explain?{query}"));
        get(&client_from("127.0.0.1"), &url).await
    }

    /// Asks for `from`'s instance-id from `from`, and explains `from` at the endpoint and
    /// with the command: all three say the same. Returns the explanation.
    async fn agree(&self, from: &str) -> Value {
        let url = self.server.url("/latest/meta-data/instance-id");
        let (status, _, body) = get(&client_from(from), &url).await;
        let path = "/latest/meta-data/instance-id";
        let (code, ct, answer) = self.endpoint(&format!("address={from}&path={path}")).await;
        assert_eq!((code, ct.as_str()), (200, "application/json"), "{answer}");
        let live: Value = serde_json::from_str(&answer).unwrap();
        let (exit, out, err) = cli(
            &self.inventory,
            &self.policy,
            &["--json", "--path", path, from],
        );
        assert_eq!(exit, Some(0), "{err}");
        let offline: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            live, offline,
            "/explain and explain --json differ for {from}"
        );
        assert_eq!(live["address"], from);
        assert_eq!(live["answer"]["status"], status, "{from}: {live:#}");
        // The request's own log line: the access line of an answer, the audit line of a
        // refusal, each naming the node.
        let e = self.logged(from).await;
        let node = match e["node"].as_str() {
            Some("-") | None => Value::Null,
            Some(uuid) => uuid.into(),
        };
        if status == 200 {
            assert_eq!(live["decision"]["node"], node, "{from}: {live:#}");
            assert_eq!(live["answer"]["reason"], Value::Null);
            let winners: Vec<&Value> = live["claims"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["standing"] == "wins")
                .collect();
            assert_eq!(winners.len(), 1, "{from}: {live:#}");
            assert_eq!(winners[0]["node"], node);
            return live;
        }
        assert_eq!(live["answer"]["body"], body.trim_end(), "{from}");
        if e["target"] == "access" {
            // Not a denial: the node has no such document (its configdrive unreadable).
            assert_eq!(
                (&e["status"], &live["decision"]["node"]),
                (&status.into(), &node)
            );
            return live;
        }
        assert_eq!(live["decision"]["node"], Value::Null, "{from}: {live:#}");
        assert_eq!(live["node"]["uuid"], node, "{from}: {live:#}");
        assert_eq!(live["answer"]["reason"], e["reason"], "{from}: {live:#}");
        if let Some(detail) = e["detail"].as_str() {
            let why = live["decision"]["why"].as_str().unwrap();
            assert!(why.ends_with(detail), "{from}: {why:?} vs {detail:?}");
        }
        live
    }

    /// The log line of the request from `from`.
    async fn logged(&self, from: &str) -> Value {
        let mut found = None;
        common::eventually(Duration::from_secs(10), "the request logged", || {
            let line = self
                .server
                .log()
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|v| {
                    v["client"] == from && (v["target"] == "audit" || v["target"] == "access")
                });
            let done = line.is_some();
            found = line;
            async move { done }
        })
        .await;
        found.unwrap()
    }
}

/// The standing given to `node`'s claim of `source`.
fn standing<'a>(e: &'a Value, node: &str, source: &str) -> &'a str {
    e["claims"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["node"] == node && c["source"] == source)
        .unwrap_or_else(|| panic!("no {source} claim of {node}: {e:#}"))["standing"]
        .as_str()
        .unwrap()
}

const ALPHA: &str = "aaaaaaaa-0000-4000-8000-000000000011";
const BRAVO: &str = "bbbbbbbb-0000-4000-8000-000000000012";
const CHARLIE: &str = "cccccccc-0000-4000-8000-000000000013";
const DELTA: &str = "dddddddd-0000-4000-8000-000000000013";
const ECHO: &str = "eeeeeeee-0000-4000-8000-000000000014";
const GOLF: &str = "99999999-0000-4000-8000-000000000016";

#[tokio::test]
async fn the_fixture_fleet_explained_as_it_is_answered() {
    let c = Case::start(fixture("nodes.json"), fixture("policies/open"));
    // A configdrive claim with nothing of the operator's against it.
    let e = c.agree("127.0.0.11").await;
    assert_eq!(e["decision"]["basis"], "configdrive_claim");
    assert_eq!(standing(&e, ALPHA, "configdrive"), "wins");
    assert_eq!(e["zone"]["name"], "loopback");
    assert_eq!(e["node"]["provision_state"], "active");
    // The operator's network_data.
    let e = c.agree("127.0.0.12").await;
    assert_eq!(e["decision"]["basis"], "node_claim");
    assert_eq!(standing(&e, BRAVO, "node"), "wins");
    // Two nodes' network_data: contested.
    let e = c.agree("127.0.0.13").await;
    assert_eq!(e["answer"]["reason"], "contested_address");
    assert_eq!(standing(&e, CHARLIE, "node"), "contested");
    assert_eq!(standing(&e, DELTA, "node"), "contested");
    // A node in a provision state not served.
    let e = c.agree("127.0.0.14").await;
    assert_eq!(e["answer"]["reason"], "node_not_served");
    assert_eq!(e["node"]["uuid"], ECHO);
    assert_eq!(e["node"]["provision_state"], "available");
    assert_eq!(standing(&e, ECHO, "node"), "not_served");
    c.agree("127.0.0.15").await;
    // The operator's claim decides, but Ironic masks the node's configdrive: no documents.
    let e = c.agree("127.0.0.16").await;
    assert_eq!(e["decision"]["node"], GOLF);
    assert_eq!(
        (&e["answer"]["status"], &e["answer"]["reason"]),
        (&404.into(), &"not_found".into())
    );
    let drive = e["node"]["configdrive"].as_str().unwrap();
    assert!(
        drive.starts_with("unreadable: instance_info.configdrive is masked"),
        "{drive}"
    );
    // Nobody's address.
    let e = c.agree("127.0.0.99").await;
    assert_eq!(e["answer"]["reason"], "unknown_address");
    assert_eq!(e["claims"], serde_json::json!([]));
}

const EVIL: &str = "e0000000-0000-4000-8000-0000000000ee";
const B: &str = "b0000000-0000-4000-8000-000000000003";

#[tokio::test]
async fn claims_of_other_projects_explained_as_they_are_answered() {
    // tests/identity.rs: evil's configdrive claims dhcp's lease and b's static address.
    let c = Case::start(fixture("nodes-tenants.json"), fixture("policies/tenants"));
    let e = c.agree("127.0.0.4").await;
    assert_eq!(e["answer"]["reason"], "unknown_address");
    assert_eq!(standing(&e, EVIL, "configdrive"), "out_of_project_scope");
    let e = c.agree("127.0.0.3").await;
    assert_eq!(e["decision"]["node"], B);
    assert_eq!(standing(&e, EVIL, "configdrive"), "overruled");
    assert_eq!(standing(&e, B, "node"), "wins");
    let e = c.agree("127.0.5.5").await;
    assert_eq!(e["decision"]["node"], EVIL);
    assert_eq!(e["node"]["project"], "tenant-evil");
}

#[tokio::test]
async fn one_projects_claims_explained_as_they_are_answered() {
    let text = std::fs::read_to_string(fixture("nodes-tenants.json"))
        .unwrap()
        .replace("tenant-evil", "tenant-a");
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("one-project.json");
    std::fs::write(&inventory, text).unwrap();
    let c = Case::start(inventory, fixture("policies/open"));
    let e = c.agree("127.0.0.4").await;
    assert_eq!(e["decision"]["node"], EVIL);
    assert_eq!(standing(&e, EVIL, "configdrive"), "wins");
    let e = c.agree("127.0.0.3").await;
    assert_eq!(e["decision"]["node"], B);
    assert_eq!(standing(&e, EVIL, "configdrive"), "overruled");
}

const ZONES: &str = r#"
[[zone]]
name = "quarantine"
cidrs = ["127.0.0.0/24"]
action = "deny"

[[zone]]
name = "bravo-host"
cidrs = ["127.0.0.12"]
action = "allow"
paths = ["/latest"]
"#;

#[tokio::test]
async fn zones_explained_as_they_are_answered() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("zones.toml"), ZONES).unwrap();
    let c = Case::start(fixture("nodes.json"), dir.path().to_path_buf());
    let e = c.agree("127.0.0.12").await;
    assert_eq!(e["zone"]["name"], "bravo-host");
    let notes = e["notes"].to_string();
    assert!(notes.contains("403 path_denied"), "{notes}");
    let e = c.agree("127.0.0.11").await;
    assert_eq!(
        (&e["answer"]["reason"], &e["answer"]["status"]),
        (&"zone_denied".into(), &403.into())
    );
    assert_eq!(e["zone"]["action"], "deny");
    assert_eq!(standing(&e, ALPHA, "configdrive"), "not_weighed");
    let e = c.agree("127.0.1.1").await;
    assert_eq!(e["answer"]["reason"], "no_zone");
    assert_eq!(e["zone"], Value::Null);
}

#[tokio::test]
async fn text_for_a_person() {
    let (exit, out, err) = cli(
        &fixture("nodes.json"),
        &fixture("policies/open"),
        &["127.0.0.13"],
    );
    assert_eq!(exit, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    let line = |label: &str| {
        *lines
            .iter()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no {label} line:\n{out}"))
    };
    assert_eq!(line("address"), "address   127.0.0.13");
    assert!(
        line("zone").starts_with("zone      loopback (allow): "),
        "{out}"
    );
    assert!(
        line("decision").starts_with("decision  no node: ")
            && line("decision").contains(CHARLIE)
            && line("decision").contains(DELTA),
        "{out}"
    );
    assert_eq!(
        line("answer"),
        "answer    404 contested_address for /openstack/latest/meta_data.json: \
         \"no metadata for this address\""
    );
    for node in [CHARLIE, DELTA] {
        assert!(
            out.contains(&format!(
                "  {node} ({}): node claim, written by the operator: contested",
                if node == CHARLIE { "charlie" } else { "delta" }
            )),
            "{out}"
        );
    }
    let (_, out, _) = cli(
        &fixture("nodes.json"),
        &fixture("policies/open"),
        &["127.0.0.12"],
    );
    assert!(
        out.contains("answer    200 for /openstack/latest/meta_data.json (the node's document)"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "node      {BRAVO} (bravo): provision state \"active\", served"
        )),
        "{out}"
    );
}

#[tokio::test]
async fn no_user_data_or_keys_in_any_answer() {
    let c = Case::start(fixture("nodes.json"), fixture("policies/open"));
    let inventory = std::fs::read_to_string(fixture("nodes.json")).unwrap();
    assert!(inventory.contains("hostname: alpha") && inventory.contains("ssh-rsa"));
    for from in ["127.0.0.11", "127.0.0.16"] {
        let (_, _, live) = c.endpoint(&format!("address={from}")).await;
        let (_, json, _) = cli(&c.inventory, &c.policy, &["--json", from]);
        let (_, text, _) = cli(&c.inventory, &c.policy, &[from]);
        for out in [live, json, text] {
            assert!(
                out.contains("aaaaaaaa") || out.contains("99999999"),
                "{out}"
            );
            for secret in ["hostname:", "cloud-config", "ssh-", "AAAA", "password"] {
                assert!(!out.contains(secret), "{secret} in:\n{out}");
            }
        }
    }
}

#[tokio::test]
async fn a_question_that_is_not_one_exits_2_in_one_line() {
    let (inv, pol) = (fixture("nodes.json"), fixture("policies/open"));
    for (args, message) in [
        (
            vec!["10.0.0.x"],
            "error: \"10.0.0.x\" is not an IP address\n",
        ),
        (
            vec!["--mac", "52:54:00", "10.0.0.1"],
            "error: \"52:54:00\" is not a MAC address\n",
        ),
        (
            vec!["--interface", "eth0", "10.0.0.1"],
            "error: an interface is given only with an IPv6 link-local address\n",
        ),
    ] {
        let (exit, out, err) = cli(&inv, &pol, &args);
        assert_eq!((exit, out.as_str(), err.as_str()), (Some(2), "", message));
    }
    // A question the command cannot answer: exit 1, one line naming the file.
    let (exit, _, err) = cli(Path::new("/nonexistent/nodes.json"), &pol, &["10.0.0.1"]);
    assert_eq!(exit, Some(1));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/nonexistent/nodes.json"), "{err}");
}

#[tokio::test]
async fn the_endpoint_refuses_a_bad_question_with_400() {
    let c = Case::start(fixture("nodes.json"), fixture("policies/open"));
    for (query, body) in [
        ("address=10.0.0.x", "\"10.0.0.x\" is not an IP address\n"),
        ("address=10.0.0.1&mac=zz", "\"zz\" is not a MAC address\n"),
        ("", "address=ADDRESS is required\n"),
        (
            "address=10.0.0.1&address=10.0.0.2",
            "address is given twice\n",
        ),
        (
            "address=10.0.0.1&user_data=1",
            "parameters: address, mac, interface, path\n",
        ),
        (
            "address=10.0.0.1&path=latest",
            "\"latest\" is not a path (/...)\n",
        ),
        (
            "address=fe80::1&interface=no-such-if0",
            "no network interface named \"no-such-if0\" on this host\n",
        ),
    ] {
        let (status, _, answer) = c.endpoint(query).await;
        assert_eq!((status, answer.as_str()), (400, body), "{query}");
    }
}

#[tokio::test]
async fn a_mac_given_is_what_the_zone_reads() {
    // A zone that identifies by MAC: the MAC given decides an address nobody claims.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("zone.toml"),
        "[[zone]]\nname = \"l2\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\n\
         identity_sources = [\"node\", \"configdrive\", \"mac\"]\n\
         verify_mac = true\nidentify_by_mac = true\n",
    )
    .unwrap();
    let inv = fixture("nodes-tenants.json");
    let (exit, out, err) = cli(
        &inv,
        dir.path(),
        &["--json", "--mac", "52:54:00:00:00:03", "127.0.9.9"],
    );
    assert_eq!(exit, Some(0), "{err}");
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["decision"]["node"], B, "{e:#}");
    assert_eq!(e["decision"]["basis"], "port");
    assert_eq!(e["link"]["from"], "given");
    assert_eq!(standing(&e, B, "mac"), "wins");
    // Without one, the command says it must be given.
    let (_, out, _) = cli(&inv, dir.path(), &["--json", "127.0.9.9"]);
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["decision"]["node"], Value::Null);
    assert!(e["notes"].to_string().contains("--mac"), "{e:#}");
    // The MAC of another node than the one the address names: a mismatch.
    let (_, out, _) = cli(
        &inv,
        dir.path(),
        &["--json", "--mac", "52:54:00:00:00:04", "127.0.0.3"],
    );
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["answer"]["reason"], "mac_mismatch", "{e:#}");
    assert_eq!(standing(&e, B, "node"), "mac_mismatch");
}

#[tokio::test]
async fn explained_from_ironic() {
    let fake = FakeIronic::start().await;
    let uuid = "11111111-0000-4000-8000-000000000001";
    fake.with(|s| s.nodes = vec![node(uuid, "one", "127.0.7.1")]);
    let (exit, out, err) = run(explain_cmd()
        .args(["--ironic-url", &fake.url()])
        .arg("--policy-dir")
        .arg(fixture("policies/open"))
        .args(["--json", "127.0.7.1"]));
    assert_eq!(exit, Some(0), "{err}");
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["decision"]["node"], uuid, "{e:#}");
    assert_eq!(standing(&e, uuid, "configdrive"), "wins");
    assert!(fake.list_requests() > 0);
}
