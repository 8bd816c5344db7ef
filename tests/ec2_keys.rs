//! The EC2 keys AWS clients read of any instance, beyond Nova's: `ami-id` and
//! `security-groups` always, `placement/region`, and the instance identity document under
//! `/latest/dynamic/` (unsigned: `signature` and `pkcs7` are 404).

mod common;

use common::{client_from, fixture, get, Server};
use serde_json::{json, Value};

const ALPHA: &str = "127.0.0.11";
const NOVA_ISO: &str = "127.0.0.19";
const BOND_VLAN: &str = "127.0.0.41";

async fn body(s: &Server, from: &str, path: &str) -> String {
    let (status, _, body) = get(&client_from(from), &s.url(path)).await;
    assert_eq!(status, 200, "{path}: {body}");
    body
}

async fn document(s: &Server, from: &str) -> Value {
    let (status, ct, text) = get(
        &client_from(from),
        &s.url("/latest/dynamic/instance-identity/document"),
    )
    .await;
    assert_eq!((status, ct.as_str()), (200, "application/json"), "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn a_node_without_image_or_groups_still_answers_every_key() {
    let s = Server::start(&fixture("nodes.json"));
    assert_eq!(
        body(&s, ALPHA, "/latest").await,
        "dynamic/\nmeta-data/\nuser-data"
    );
    let listing = body(&s, ALPHA, "/latest/meta-data/").await;
    assert!(
        listing.starts_with("ami-id\nami-launch-index\n") && listing.ends_with("\nsecurity-groups"),
        "{listing}"
    );
    assert_eq!(
        body(&s, ALPHA, "/latest/meta-data/ami-id").await,
        "ami-00000000"
    );
    // An empty body, as Nova answers an instance without groups.
    assert_eq!(
        body(&s, ALPHA, "/latest/meta-data/security-groups").await,
        ""
    );
    assert_eq!(
        body(&s, ALPHA, "/latest/meta-data/placement/").await,
        "availability-zone\nregion"
    );
    // `rack-1` is not an AWS zone name: it is its own region.
    assert_eq!(
        body(&s, ALPHA, "/latest/meta-data/placement/region").await,
        "rack-1"
    );
    assert_eq!(
        document(&s, ALPHA).await,
        json!({
            "accountId": null,
            "architecture": null,
            "availabilityZone": "rack-1",
            "billingProducts": null,
            "devpayProductCodes": null,
            "marketplaceProductCodes": null,
            "imageId": "ami-00000000",
            "instanceId": "aaaaaaaa-0000-4000-8000-000000000011",
            "instanceType": null,
            "kernelId": null,
            "pendingTime": null,
            "privateIp": "127.0.0.11",
            "ramdiskId": null,
            "region": "rack-1",
            "version": "2017-09-30"
        })
    );
    // The document's keys come in AWS's order.
    let (_, _, text) = get(
        &client_from(ALPHA),
        &s.url("/latest/dynamic/instance-identity/document"),
    )
    .await;
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix('"')?.split('"').next())
        .collect();
    assert_eq!(keys[..3], ["accountId", "architecture", "availabilityZone"]);
    assert_eq!(keys.last(), Some(&"version"));
    assert_eq!(
        body(&s, ALPHA, "/latest/dynamic").await,
        "instance-identity/"
    );
    assert_eq!(
        body(&s, ALPHA, "/latest/dynamic/instance-identity/").await,
        "document"
    );
    for p in [
        "/latest/dynamic/instance-identity/signature",
        "/latest/dynamic/instance-identity/pkcs7",
        "/latest/dynamic/instance-identity/rsa2048",
        "/latest/dynamic/fws",
        // Versions before 2009-04-04 have no dynamic data, as on AWS.
        "/2008-09-01/dynamic/instance-identity/document",
    ] {
        let (status, _, text) = get(&client_from(ALPHA), &s.url(p)).await;
        assert_eq!((status, text.as_str()), (404, "not found\n"), "{p}");
    }
    // Nova's keys of every version: 1.0 has ami-id and security-groups too.
    let old = body(&s, ALPHA, "/1.0/meta-data/").await;
    assert!(
        old.starts_with("ami-id\n") && old.ends_with("\nsecurity-groups"),
        "{old}"
    );
    assert_eq!(body(&s, ALPHA, "/1.0").await, "meta-data/\nuser-data");
}

/// A node with an image, a flavor, a project, its architecture and an AWS-style zone.
fn deployed_node(dir: &std::path::Path) -> std::path::PathBuf {
    let mut inv: Value =
        serde_json::from_slice(&std::fs::read(fixture("golden.json")).unwrap()).unwrap();
    let node = &mut inv["nodes"][0];
    assert_eq!(node["name"], "bond-vlan");
    node["properties"] = json!({"cpu_arch": "aarch64", "memory_mb": 65536});
    node["instance_info"]["configdrive"]["meta_data"]["availability_zone"] = json!("eu-west-2b");
    let path = dir.join("inventory.json");
    std::fs::write(&path, inv.to_string()).unwrap();
    path
}

#[tokio::test]
async fn the_identity_document_names_image_flavor_zone_and_deployment_time() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&deployed_node(dir.path()));
    let ami = body(&s, BOND_VLAN, "/latest/meta-data/ami-id").await;
    assert!(
        ami.starts_with("ami-") && ami.len() == 12 && ami != "ami-00000000",
        "{ami}"
    );
    assert_eq!(
        body(&s, BOND_VLAN, "/latest/meta-data/placement/region").await,
        "eu-west-2"
    );
    let doc = document(&s, BOND_VLAN).await;
    assert_eq!(doc["imageId"], json!(ami));
    assert_eq!(doc["instanceId"], "0b1c2d3e-4f50-4a61-8b72-93a4b5c6d741");
    assert_eq!(doc["instanceType"], "bm.large");
    assert_eq!(doc["availabilityZone"], "eu-west-2b");
    assert_eq!(doc["region"], "eu-west-2");
    assert_eq!(doc["architecture"], "arm64");
    assert_eq!(doc["privateIp"], "127.0.0.41");
    assert_eq!(doc["accountId"], "c0ffee00c0ffee00c0ffee00c0ffee00");
    assert_eq!(doc["pendingTime"], "2026-11-01T10:00:00Z");
    // The same image always gives the same id, on every replica and after restarts.
    drop(s);
    let s = Server::start(&deployed_node(dir.path()));
    assert_eq!(body(&s, BOND_VLAN, "/latest/meta-data/ami-id").await, ami);
}

#[tokio::test]
async fn a_configured_region_wins() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_with(
        &deployed_node(dir.path()),
        "127.0.0.1".parse().unwrap(),
        &["--ec2-region", "lab-north"],
    );
    assert_eq!(
        body(&s, BOND_VLAN, "/latest/meta-data/placement/region").await,
        "lab-north"
    );
    assert_eq!(document(&s, BOND_VLAN).await["region"], "lab-north");
    assert_eq!(
        body(
            &s,
            BOND_VLAN,
            "/latest/meta-data/placement/availability-zone"
        )
        .await,
        "eu-west-2b"
    );
}

/// An image Nova built carries its own EC2 data: its security groups, `i-` id and image
/// are served, and the identity document says the same.
#[tokio::test]
async fn a_nova_image_keeps_its_own_groups_and_ids() {
    let s = Server::start(&fixture("nodes-iso.json"));
    assert_eq!(
        body(&s, NOVA_ISO, "/latest/meta-data/security-groups").await,
        "default\nweb"
    );
    let doc = document(&s, NOVA_ISO).await;
    assert_eq!(doc["instanceId"], "i-00000013");
    assert_eq!(
        doc["imageId"],
        json!(body(&s, NOVA_ISO, "/latest/meta-data/ami-id").await)
    );
    assert_eq!(
        doc["availabilityZone"],
        json!(
            body(
                &s,
                NOVA_ISO,
                "/latest/meta-data/placement/availability-zone"
            )
            .await
        )
    );
    assert_eq!(
        doc["region"],
        json!(body(&s, NOVA_ISO, "/latest/meta-data/placement/region").await)
    );
}
