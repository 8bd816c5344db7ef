//! Identity that no deployer can steer, through the server: node `evil`, deployed by
//! another project, writes a configdrive whose network_data lists the DHCP lease of node
//! `dhcp` (127.0.0.4) and the static address of node `b` (127.0.0.3). Neither address is
//! ever answered with evil's data, and `b` keeps its own.

mod common;

use common::{client_from, fixture, get, Server};

const EVIL: &str = "e0000000-0000-4000-8000-0000000000ee";
const B: &str = "b0000000-0000-4000-8000-000000000003";
const REFUSED: &str = "no metadata for this address\n";

fn tenants(policy: &str) -> Server {
    let dir = fixture(&format!("policies/{policy}"));
    Server::start_with(
        &fixture("nodes-tenants.json"),
        "127.0.0.1".parse().unwrap(),
        &["--policy-dir", dir.to_str().unwrap()],
    )
}

async fn ask(s: &Server, from: &str, path: &str) -> (u16, String) {
    let (status, _, body) = get(&client_from(from), &s.url(path)).await;
    (status, body)
}

#[tokio::test]
async fn a_deployer_cannot_take_another_projects_dhcp_lease() {
    let s = tenants("tenants");
    for path in [
        "/openstack/latest/user_data",
        "/openstack/latest/meta_data.json",
        "/latest/meta-data/public-keys/0/openssh-key",
        "/latest/user-data",
    ] {
        assert_eq!(
            ask(&s, "127.0.0.4", path).await,
            (404, REFUSED.into()),
            "{path}"
        );
    }
    // The refusal names the node whose claim was ignored, and why.
    let events = s
        .audit_until("the refusal logged", |ev| {
            ev.iter().any(|e| e["client"] == "127.0.0.4")
        })
        .await;
    let e = events.iter().find(|e| e["client"] == "127.0.0.4").unwrap();
    assert_eq!(e["reason"], "unknown_address");
    let detail = e["detail"].as_str().unwrap();
    assert!(
        detail.contains(EVIL) && detail.contains("tenant-evil"),
        "{detail}"
    );
    // evil is still served at the address its project may claim.
    let (status, body) = ask(&s, "127.0.5.5", "/latest/meta-data/instance-id").await;
    assert_eq!((status, body.as_str()), (200, EVIL));
}

#[tokio::test]
async fn a_deployer_cannot_switch_off_another_nodes_metadata() {
    let s = tenants("tenants");
    let (status, body) = ask(&s, "127.0.0.3", "/openstack/latest/user_data").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "#cloud-config\nhostname: b\n")
    );
    let (status, body) = ask(&s, "127.0.0.3", "/latest/meta-data/instance-id").await;
    assert_eq!((status, body.as_str()), (200, B));
    // The attempt is an audit line naming the claiming node, and a readiness warning.
    let ignored = s.audit_events();
    let e = ignored
        .iter()
        .find(|e| e["event"] == "claim_ignored")
        .expect("claim_ignored logged at start");
    assert_eq!(
        (
            e["node"].as_str(),
            e["address"].as_str(),
            e["owner"].as_str()
        ),
        (Some(EVIL), Some("127.0.0.3"), Some(B))
    );
    let warnings = s.readyz().await["warnings"].to_string();
    assert!(
        warnings.contains(&format!("node {EVIL}: its configdrive claims 127.0.0.3")),
        "{warnings}"
    );
    assert!(
        warnings.contains(&format!(
            "node {EVIL}: its configdrive claims 127.0.0.4, outside"
        )),
        "{warnings}"
    );
}

#[tokio::test]
async fn one_project_keeps_configdrive_claims_but_never_over_the_operator() {
    // The same fleet deployed by one project (Metal3, Bifrost, labs: the deployer is the
    // operator) with the shipped default policy's rules: the configdrive's addresses count...
    let text = std::fs::read_to_string(fixture("nodes-tenants.json"))
        .unwrap()
        .replace("tenant-evil", "tenant-a");
    let dir = tempfile::tempdir().unwrap();
    let inventory = dir.path().join("one-project.json");
    std::fs::write(&inventory, text).unwrap();
    let s = Server::start(&inventory);
    let (status, body) = ask(&s, "127.0.0.4", "/latest/meta-data/instance-id").await;
    assert_eq!((status, body.as_str()), (200, EVIL));
    // ... but an address the operator gave another node stays that node's.
    let (status, body) = ask(&s, "127.0.0.3", "/latest/meta-data/instance-id").await;
    assert_eq!((status, body.as_str()), (200, B));
}

#[test]
fn render_names_the_claims_identity_ignores() {
    // What an operator checks before the node boots: the answer, and on stderr each
    // configdrive claim of the node that identity ignores under the policy's projects.
    let out = common::bin()
        .args(["render", "--inventory"])
        .arg(fixture("nodes-tenants.json"))
        .arg("--policy-dir")
        .arg(fixture("policies/tenants"))
        .args(["--node", "evil", "/latest/meta-data/instance-id"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!((out.status.code(), &*stdout), (Some(0), EVIL), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        [
            format!("warning: the configdrive claims 127.0.0.3, which the network_data of node {B} holds: ignored"),
            "warning: the configdrive claims 127.0.0.4, outside the CIDRs the policy gives the node's project: ignored unless its MAC verifies it".to_string(),
        ],
    );
}
