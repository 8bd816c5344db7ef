//! The NoCloud tree, `/nocloud/`: what cloud-init's NoCloud datasource reads from a URL
//! seed, the same node's data as the OpenStack tree, under the same identity and path
//! rules. (cloud-init's own reader and network renderer run against it in the real-Ironic
//! e2e suite: scripts/e2e/real_ironic.py, scenario clients.)

mod common;

use std::path::Path;

use common::{client_from, fixture, get, Server};
use serde_json::{json, Value};

const BOND_VLAN: &str = "127.0.0.41";
const PLAIN: &str = "127.0.0.42";

async fn answer(s: &Server, from: &str, path: &str) -> (u16, String, String) {
    get(&client_from(from), &s.url(path)).await
}

async fn yaml(s: &Server, from: &str, path: &str) -> Value {
    let (status, ct, text) = answer(s, from, path).await;
    assert_eq!(
        (status, ct.as_str()),
        (200, "application/yaml"),
        "{path}: {text}"
    );
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}\n{text}"))
}

async fn json_of(s: &Server, from: &str, path: &str) -> Value {
    let (status, _, text) = answer(s, from, path).await;
    assert_eq!(status, 200, "{path}: {text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn the_nocloud_tree_holds_the_nodes_openstack_data() {
    let s = Server::start(&fixture("golden.json"));
    assert_eq!(
        answer(&s, BOND_VLAN, "/nocloud/").await.2,
        "meta-data\nuser-data\nvendor-data\nnetwork-config"
    );
    // meta-data: the OpenStack tree's uuid, hostname and keys, as YAML.
    let md = json_of(&s, BOND_VLAN, "/openstack/latest/meta_data.json").await;
    let mut keys: Vec<Value> = md["public_keys"]
        .as_object()
        .unwrap()
        .values()
        .cloned()
        .collect();
    keys.sort_by_key(Value::to_string);
    let mut nc = yaml(&s, BOND_VLAN, "/nocloud/meta-data").await;
    nc["public-keys"]
        .as_array_mut()
        .unwrap()
        .sort_by_key(Value::to_string);
    assert_eq!(
        nc,
        json!({"instance-id": md["uuid"], "local-hostname": md["hostname"], "public-keys": keys})
    );
    assert_eq!(md["uuid"], "0b1c2d3e-4f50-4a61-8b72-93a4b5c6d741");
    // user-data byte for byte; vendor-data is the part cloud-init applies of vendor_data.json.
    let ud = answer(&s, BOND_VLAN, "/openstack/latest/user_data").await.2;
    assert_eq!(answer(&s, BOND_VLAN, "/nocloud/user-data").await.2, ud);
    let vd = json_of(&s, BOND_VLAN, "/openstack/latest/vendor_data.json").await;
    assert_eq!(
        answer(&s, BOND_VLAN, "/nocloud/vendor-data").await.2,
        vd["cloud-init"].as_str().unwrap()
    );
    // network-config: version 1, the bond over both NICs, the VLAN on the bond.
    let cfg = yaml(&s, BOND_VLAN, "/nocloud/network-config").await;
    assert_eq!(cfg["version"], 1);
    let devices: Vec<(&str, &str)> = cfg["config"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["type"].as_str().unwrap(),
                d["name"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        devices,
        [
            ("physical", "eth0"),
            ("physical", "eth1"),
            ("bond", "bond0"),
            ("vlan", "bond0.120"),
            ("nameserver", "")
        ]
    );
    assert_eq!(cfg["config"][2]["bond_interfaces"], json!(["eth0", "eth1"]));
    assert_eq!(cfg["config"][3]["subnets"][0]["address"], "127.0.0.41");
    // The MAC stays a string (YAML 1.1 would read 52:54:00:00:00:41 unquoted as a number).
    assert_eq!(cfg["config"][0]["mac_address"], "52:54:00:00:00:41");
    for p in [
        "/nocloud/meta_data.json",
        "/nocloud/user-data/x",
        "/nocloud/seedfrom",
    ] {
        assert_eq!(answer(&s, BOND_VLAN, p).await.0, 404, "{p}");
    }
}

#[tokio::test]
async fn a_node_without_user_or_vendor_data_has_both_files_empty() {
    // A 404 of user-data or meta-data makes cloud-init drop the whole seed.
    let s = Server::start(&fixture("golden.json"));
    for f in ["user-data", "vendor-data"] {
        assert_eq!(
            answer(&s, PLAIN, &format!("/nocloud/{f}")).await,
            (200, "text/plain".into(), String::new()),
            "{f}"
        );
    }
    let md = yaml(&s, PLAIN, "/nocloud/meta-data").await;
    assert_eq!(
        md,
        json!({"instance-id": "42424242-0000-4000-8000-000000000042",
               "local-hostname": "plain-static", "public-keys": []})
    );
    let cfg = yaml(&s, PLAIN, "/nocloud/network-config").await;
    assert_eq!(cfg["config"][0]["subnets"][0]["address"], "127.0.0.42");
    // An address no node holds has no NoCloud tree either.
    assert_eq!(answer(&s, "127.0.0.99", "/nocloud/meta-data").await.0, 404);
}

fn serve_with_policy(dir: &Path, rules: &str) -> Server {
    std::fs::write(
        dir.join("p.toml"),
        format!("[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\n{rules}"),
    )
    .unwrap();
    Server::start_with(
        &fixture("golden.json"),
        "127.0.0.1".parse().unwrap(),
        &["--policy-dir", dir.to_str().unwrap()],
    )
}

async fn statuses(s: &Server) -> Vec<u16> {
    let mut out = Vec::new();
    for f in [
        "",
        "meta-data",
        "user-data",
        "vendor-data",
        "network-config",
    ] {
        out.push(answer(s, PLAIN, &format!("/nocloud/{f}")).await.0);
    }
    out
}

#[tokio::test]
async fn path_rules_allow_or_deny_the_nocloud_tree() {
    let dir = tempfile::tempdir().unwrap();
    let s = serve_with_policy(dir.path(), "deny_paths = [\"/nocloud\"]\n");
    assert_eq!(statuses(&s).await, [403, 403, 403, 403, 403]);
    assert_eq!(
        answer(&s, PLAIN, "/openstack/latest/meta_data.json")
            .await
            .0,
        200
    );
    drop(s);
    let s = serve_with_policy(dir.path(), "deny_paths = [\"/nocloud/user-data\"]\n");
    assert_eq!(statuses(&s).await, [200, 200, 403, 200, 200]);
    drop(s);
    // An allow list that does not name the tree leaves it out.
    let s = serve_with_policy(dir.path(), "paths = [\"/openstack\"]\n");
    assert_eq!(statuses(&s).await, [403, 403, 403, 403, 403]);
    drop(s);
    let s = serve_with_policy(dir.path(), "paths = [\"/nocloud\"]\n");
    assert_eq!(statuses(&s).await, [200, 200, 200, 200, 200]);
}

#[tokio::test]
async fn a_rule_denying_a_file_in_the_other_trees_denies_its_nocloud_copy() {
    // Zones written before the NoCloud tree existed keep what they deny denied.
    let dir = tempfile::tempdir().unwrap();
    let s = serve_with_policy(dir.path(), "deny_paths = [\"/*/user-data\"]\n");
    assert_eq!(statuses(&s).await, [200, 200, 403, 200, 200]);
    drop(s);
    let s = serve_with_policy(
        dir.path(),
        "deny_paths = [\"/openstack/latest/vendor_data.json\", \"/openstack/*/network_data.json\"]\n",
    );
    assert_eq!(statuses(&s).await, [200, 200, 200, 403, 403]);
    drop(s);
    let s = serve_with_policy(dir.path(), "deny_paths = [\"/latest/meta-data\"]\n");
    assert_eq!(statuses(&s).await, [200, 403, 200, 200, 200]);
    drop(s);
    // A rule for one old version only is about that version: NoCloud's copy is the newest.
    let s = serve_with_policy(
        dir.path(),
        "deny_paths = [\"/openstack/2012-08-10/user_data\"]\n",
    );
    assert_eq!(statuses(&s).await, [200, 200, 200, 200, 200]);
}
