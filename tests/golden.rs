//! Golden answers: every route of both trees, crawled from the listings the way a client
//! walks them, for the nodes of `tests/fixtures/golden.json`, compared byte for byte with
//! the checked-in `tests/golden/<node>.txt`:
//! - `bond-vlan`: a configdrive dict with three SSH keys, `meta`, `devices`, JSON user data
//!   (a dict), vendor data, and network data with an LACP bond, a VLAN on it, IPv4 and IPv6;
//! - `plain-static`: no configdrive, Ironic's static `node.network_data`, no user data;
//! - `iso`: a base64 gzipped ISO 9660 configdrive as Nova and Ironic build it;
//! - the same `iso` node read from an Ironic API whose `instance_info.configdrive` is a URL
//!   (as Ironic stores it when the image went to Swift or a web server): every answer must be
//!   byte for byte those of `iso`.
//!
//! Every crawled path must match a rule of [`WHY`], which names the Nova or Ironic code the
//! answer follows (sections of the project's metadata-format digest in parentheses).
//! `random_seed` is new in every answer and is written `<seed>` (its form is checked in
//! `tests/routes.rs`). To regenerate after a deliberate change: `GOLDEN_UPDATE=1 cargo test
//! --test golden`, then review the diff.

mod common;

use std::path::PathBuf;

use common::fake_ironic::FakeIronic;
use common::{client_from, eventually, fixture, Server};

/// (path pattern, what the answer follows). `*` is one path segment.
const WHY: &[(&str, &str)] = &[
    ("/", "nova/api/metadata/base.py InstanceMetadata.lookup: the EC2 VERSIONS and `latest`, one per line (A.9)"),
    ("/openstack", "base.py lookup: OPENSTACK_VERSIONS dated up to today, then `latest`, one per line (A.2)"),
    ("/openstack/*", "base.py _handle_version: meta_data.json, user_data when there is one, password from 2013-04-04, vendor_data.json from 2013-10-17, network_data.json from 2015-10-15, vendor_data2.json from 2016-10-06 (A.3)"),
    ("/openstack/*/meta_data.json", "base.py _metadata_as_json: each version's keys in json.dumps order; values from the configdrive's meta_data with ironic/conductor/configdrive_utils.py build_configdrive's defaults (uuid, name) (A.5)"),
    ("/openstack/*/user_data", "base.py _user_data: the bytes as stored; configdrive_utils writes a dict or list user_data as its JSON text (A.4, E.4)"),
    ("/openstack/*/network_data.json", "json.dumps of the configdrive's network_data, else node.network_data, else one generated from ports and portgroups (B)"),
    ("/openstack/*/vendor_data.json", "nova/api/metadata/vendordata_json.py JsonFileVendorData: the static document, `{}` without one (A.4, A.7)"),
    ("/openstack/*/vendor_data2.json", "base.py _vendor_data2: `{\"static\": <static vendor data>}` (A.7)"),
    ("/openstack/*/password", "nova/api/metadata/password.py handle_password: GET answers the stored password or an empty body (A.6)"),
    ("/*", "base.py lookup of an EC2 version: `meta-data/` and, with user data, `user-data` (A.9); `dynamic/` first from 2009-04-04, as on AWS"),
    ("/*/user-data", "base.py get_ec2_metadata: the user data as stored (A.9)"),
    ("/*/meta-data/ami-id", "base.py get_ec2_metadata: in every version; a stable id from instance_info.image_source, ami-00000000 without one (AWS clients read it of every instance)"),
    ("/*/meta-data/security-groups", "base.py get_ec2_metadata: in every version, one group per line; Nova's EC2 data where the image carries it, else empty"),
    ("/*/meta-data/placement/region", "AWS IMDS (not in Nova): EC2_REGION, else the zone as AWS names regions (us-east-1a is in us-east-1; any other name is its own region)"),
    ("/*/meta-data/**", "base.py get_ec2_metadata and ec2_md_print: each version's keys, sorted, sub-directories with `/`, public keys listed as `N=name` (A.9)"),
    ("/*/dynamic/**", "AWS IMDS dynamic data (not in Nova): instance-identity/document with AWS's keys in AWS's order, from the values of the meta-data tree; unsigned, so no signature or pkcs7"),
];

fn matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.trim_matches('/').split('/').collect();
    let s: Vec<&str> = path.trim_matches('/').split('/').collect();
    if p.last() == Some(&"**") {
        let head = &p[..p.len() - 1];
        return s.len() >= head.len()
            && head.iter().zip(&s).all(|(p, s)| *p == "*" || p == s)
            && (s.len() > head.len() || path.ends_with('/'));
    }
    p.len() == s.len() && p.iter().zip(&s).all(|(p, s)| *p == "*" || p == s)
}

fn why(path: &str) -> Option<&'static str> {
    if path == "/" {
        return Some(WHY[0].1);
    }
    WHY[1..]
        .iter()
        .find(|(pattern, _)| matches(pattern, path))
        .map(|(_, why)| *why)
}

fn mask_seed(body: &str) -> String {
    let key = "\"random_seed\": \"";
    match body.find(key) {
        Some(i) => {
            let start = i + key.len();
            let end = start + body[start..].find('"').unwrap_or(0);
            format!("{}<seed>{}", &body[..start], &body[end..])
        }
        None => body.to_string(),
    }
}

/// Crawl both trees as clients do, recording every answer.
async fn crawl(s: &Server, from: &str) -> String {
    let client = client_from(from);
    let mut out = String::new();
    let mut queue: Vec<String> = vec!["/".into(), "/openstack".into()];
    let mut seen = std::collections::BTreeSet::new();
    while let Some(path) = queue.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let r = client.get(s.url(&path)).send().await.unwrap();
        let status = r.status().as_u16();
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        let body = r.text().await.unwrap();
        let rule = why(&path).unwrap_or_else(|| panic!("no rule justifies {path}"));
        out.push_str(&format!(
            "== GET {path}\n-- {status} {ct}\n-- follows: {rule}\n{}\n",
            mask_seed(&body)
        ));
        // Listings are the roots, the version directories and paths ending in `/`.
        let listing = path == "/"
            || path.ends_with('/')
            || matches("/*", &path)
            || matches("/openstack/*", &path);
        if status != 200 || !listing {
            continue;
        }
        // A listing: follow each entry, as cloud-init's and Nova's own crawlers do.
        let mut next: Vec<String> = Vec::new();
        for line in body.lines().filter(|l| !l.is_empty()) {
            let base = if path.ends_with('/') {
                path.clone()
            } else {
                format!("{path}/")
            };
            if path == "/" {
                // EC2 versions: the newest and the oldest are crawled whole.
                if line == "latest" || line == "1.0" || line == "2009-04-04" {
                    next.push(format!("/{line}"));
                }
            } else if path == "/openstack" {
                next.push(format!("/openstack/{line}"));
            } else if let Some((index, _)) = line.split_once('=') {
                next.push(format!("{base}{index}/"));
            } else {
                next.push(format!("{base}{line}"));
            }
        }
        // Depth-first in listing order.
        queue.extend(next.into_iter().rev());
    }
    out
}

async fn golden(node: &str, from: &str) {
    let s = Server::start(&fixture("golden.json"));
    compare(node, crawl(&s, from).await);
}

fn compare(node: &str, got: String) {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(format!("{node}.txt"));
    if std::env::var_os("GOLDEN_UPDATE").is_some() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("{}: {e} (GOLDEN_UPDATE=1 writes it)", file.display()));
    if got != want {
        let at = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "{node}: answers differ from {} at line {}:\n got: {:?}\nwant: {:?}",
            file.display(),
            at + 1,
            got.lines().nth(at),
            want.lines().nth(at)
        );
    }
}

#[tokio::test]
async fn bond_vlan_node_with_a_configdrive_dict() {
    golden("bond-vlan", "127.0.0.41").await;
}

#[tokio::test]
async fn node_with_static_network_data_and_no_configdrive() {
    golden("plain-static", "127.0.0.42").await;
}

#[tokio::test]
async fn node_with_an_iso_configdrive() {
    golden("iso", "127.0.0.17").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_with_a_configdrive_url() {
    let inventory: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fixture("golden.json")).unwrap()).unwrap();
    let fake = FakeIronic::start().await;
    let mut nodes = inventory["nodes"].as_array().unwrap().clone();
    let iso = nodes.iter_mut().find(|n| n["name"] == "iso").unwrap();
    let image = iso["instance_info"]["configdrive"]
        .as_str()
        .unwrap()
        .to_string();
    iso["instance_info"]["configdrive"] =
        serde_json::json!(format!("{}/configdrive/iso?temp_url_sig=x", fake.url()));
    fake.with(|st| {
        st.configdrives.insert("iso".into(), image.into_bytes());
        st.nodes = nodes;
        st.ports = inventory["ports"].as_array().unwrap().clone();
        st.portgroups = inventory["portgroups"].as_array().unwrap().clone();
    });
    let s = Server::start_ironic(&fake.url(), &[], &[]);
    eventually(
        std::time::Duration::from_secs(30),
        "the inventory is loaded",
        || async { s.readyz().await["ready"] == true },
    )
    .await;
    compare("iso", crawl(&s, "127.0.0.17").await);
    let fetched = fake.with(|st| {
        st.requests
            .iter()
            .filter(|r| r.path == "/configdrive/iso")
            .count()
    });
    assert_eq!(
        fetched, 1,
        "the image is downloaded once, however many answers use it"
    );
}
