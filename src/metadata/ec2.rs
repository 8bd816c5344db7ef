//! The EC2 tree: `[/ec2]/<version>/meta-data/...` and `user-data`, printed as Nova's
//! `ec2_md_print` does (sorted keys, sub-directories suffixed with `/`, lines joined with
//! `\n`, no final newline), each key from the version Nova gives it.

use std::net::IpAddr;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::facts::facts;
use crate::node::{Doc, NodeView};
use crate::reply::{Refusal, Reply, JSON, USER_DATA};
use crate::versions::ec2_has;

/// Settings that shape the trees, the same for every node (only the EC2 tree has any).
#[derive(Debug, Clone, Default)]
pub(crate) struct TreeOptions {
    /// The EC2 region (`placement/region`, the identity document's `region`); `None`:
    /// derived from the availability zone.
    pub(crate) ec2_region: Option<String>,
}

/// One EC2 tree entry.
enum Entry {
    Leaf(Bytes),
    Dir(Vec<(String, Entry)>),
    /// A directory listed under a label instead of `name/` (Nova's `_name`: `0=keyname`).
    Labelled(String, Vec<(String, Entry)>),
}

fn leaf(s: impl Into<String>) -> Entry {
    Entry::Leaf(Bytes::from(s.into()))
}

/// The EC2 version from which `dynamic/` is served (AWS's instance identity document is
/// not in Nova; the newest version Nova knows and `latest` have it).
const DYNAMIC_SINCE: &str = "2009-04-04";

pub(super) fn ec2(
    node: &NodeView,
    version: &str,
    path: &[String],
    client: IpAddr,
    options: &TreeOptions,
) -> Result<Reply, Refusal> {
    let user_data = node.drive().and_then(|d| d.user_data.clone());
    let dynamic = ec2_has(version, DYNAMIC_SINCE);
    let Some((first, rest)) = path.split_first() else {
        let mut names = vec![];
        if dynamic {
            names.push("dynamic/");
        }
        names.push("meta-data/");
        if user_data.is_some() {
            names.push("user-data");
        }
        return Ok(Reply::text(names.join("\n")));
    };
    match first.as_str() {
        "user-data" if rest.is_empty() => user_data
            .map(|b| Reply::ok(USER_DATA, b))
            .ok_or(Refusal::NotFound),
        "dynamic" if dynamic => match rest {
            [] => Ok(Reply::text("instance-identity/")),
            [d] if d == "instance-identity" => Ok(Reply::text("document")),
            [d, f] if d == "instance-identity" && f == "document" => {
                identity_document(node, client, options)
            }
            // `signature`, `pkcs7` and `rsa2048` would need a key AWS holds: not served.
            _ => Err(Refusal::NotFound),
        },
        "meta-data" => {
            let tree = ec2_meta_data(node, version, client, options)?;
            let mut entry = &tree;
            for seg in rest {
                entry = match entry {
                    Entry::Dir(children) | Entry::Labelled(_, children) => children
                        .iter()
                        .find(|(k, _)| k == seg)
                        .map(|(_, e)| e)
                        .ok_or(Refusal::NotFound)?,
                    Entry::Leaf(_) => return Err(Refusal::NotFound),
                };
            }
            Ok(match entry {
                Entry::Leaf(b) => Reply::text(b.clone()),
                Entry::Dir(children) | Entry::Labelled(_, children) => {
                    Reply::text(listing(children))
                }
            })
        }
        _ => Err(Refusal::NotFound),
    }
}

fn listing(children: &[(String, Entry)]) -> String {
    let mut lines: Vec<(&str, String)> = children
        .iter()
        .map(|(k, e)| {
            let line = match e {
                Entry::Leaf(_) => k.clone(),
                Entry::Dir(_) => format!("{k}/"),
                Entry::Labelled(label, _) => label.clone(),
            };
            (k.as_str(), line)
        })
        .collect();
    lines.sort_by(|a, b| a.0.cmp(b.0));
    lines
        .into_iter()
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n")
}

/// A short stable EC2-style id (`ami-1a2b3c4d`) derived from a value.
fn ec2_id(prefix: &str, seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(seed.as_bytes());
    format!("{prefix}-{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
}

/// Keys of Nova's `get_ec2_metadata` that exist only from an EC2 version on; the others
/// are in every version. `mac` is ours (Nova has no such key), from the version AWS
/// documents it in. Both builders below cut their tree with this one table.
const EC2_SINCE: &[(&str, &str)] = &[
    ("local-hostname", "2007-01-19"),
    ("public-hostname", "2007-01-19"),
    ("public-ipv4", "2007-01-19"),
    ("instance-type", "2007-08-29"),
    ("block-device-mapping", "2007-12-15"),
    ("kernel-id", "2007-12-15"),
    ("ramdisk-id", "2007-12-15"),
    ("placement", "2008-02-01"),
    ("instance-action", "2008-09-01"),
    ("mac", "2009-04-04"),
];

/// The keys of `tree` that `version` has.
fn cut(tree: Vec<(String, Entry)>, version: &str) -> Entry {
    Entry::Dir(
        tree.into_iter()
            .filter(|(k, _)| {
                EC2_SINCE
                    .iter()
                    .find(|(key, _)| key == k)
                    .is_none_or(|(_, since)| ec2_has(version, since))
            })
            .collect(),
    )
}

/// The EC2 tree an image carries (`ec2/latest/meta-data.json`, Nova's `get_ec2_metadata`
/// of `latest`), plus `mac`.
fn ec2_from_drive(
    md: &Map<String, Value>,
    node: &NodeView,
    client: IpAddr,
) -> Vec<(String, Entry)> {
    let mut out: Vec<(String, Entry)> = md
        .iter()
        .filter_map(|(k, v)| ec2_entry(v).map(|e| (k.clone(), e)))
        .collect();
    if !md.contains_key("mac") {
        if let (_, Some(mac)) = local_ipv4(node, client) {
            out.push(("mac".into(), leaf(mac)));
        }
    }
    out
}

/// A value of Nova's EC2 dict as `ec2_md_print` shows it (lists one item per line, a dict
/// with `_name` listed under that label); null and empty values are left out.
fn ec2_entry(v: &Value) -> Option<Entry> {
    Some(match v {
        Value::Null => return None,
        Value::String(s) if s.is_empty() => return None,
        Value::String(s) => leaf(s.clone()),
        Value::Bool(b) => leaf(if *b { "True" } else { "False" }),
        Value::Number(n) => leaf(n.to_string()),
        Value::Array(items) if items.is_empty() => return None,
        Value::Array(items) => leaf(
            items
                .iter()
                .map(|i| match i {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        Value::Object(m) => {
            let children = m
                .iter()
                .filter(|(k, _)| k.as_str() != "_name")
                .filter_map(|(k, v)| ec2_entry(v).map(|e| (k.clone(), e)))
                .collect();
            match m.get("_name").and_then(Value::as_str) {
                Some(label) => Entry::Labelled(label.to_string(), children),
                None => Entry::Dir(children),
            }
        }
    })
}

/// Nova's `get_ec2_metadata`, cut to `version`; keys with no value here are left out. An
/// image that carries Nova's own EC2 metadata is served as it is.
fn ec2_meta_data(
    node: &NodeView,
    version: &str,
    client: IpAddr,
    options: &TreeOptions,
) -> Result<Entry, Refusal> {
    Ok(cut(ec2_latest(node, client, options)?, version))
}

/// Every key of the EC2 tree, as in `latest`: Nova's, plus what AWS clients expect of any
/// instance (`ami-id` and `security-groups` always, `placement/region`).
fn ec2_latest(
    node: &NodeView,
    client: IpAddr,
    options: &TreeOptions,
) -> Result<Vec<(String, Entry)>, Refusal> {
    let mut tree = match node.drive().and_then(|d| d.ec2_meta_data.as_ref()) {
        Some(ec2) => ec2_from_drive(&ec2.object(), node, client),
        None => ec2_from_node(node, client)?,
    };
    if !tree.iter().any(|(k, _)| k == "ami-id") {
        tree.push(("ami-id".into(), leaf(ami_id(node))));
    }
    if !tree.iter().any(|(k, _)| k == "security-groups") {
        // Nova always answers it; AWS SDKs split it into a list.
        tree.push(("security-groups".into(), leaf("")));
    }
    add_region(&mut tree, options);
    Ok(tree)
}

/// `ami-id`: a stable id derived from the node's image, or `ami-00000000` without one.
fn ami_id(node: &NodeView) -> String {
    match &node.image_source {
        Some(image) => ec2_id("ami", image),
        None => "ami-00000000".into(),
    }
}

/// `placement/region`: the configured region, else the availability zone's.
fn add_region(tree: &mut Vec<(String, Entry)>, options: &TreeOptions) {
    let az = text_at(tree, &["placement", "availability-zone"]);
    let Some(region) = options
        .ec2_region
        .clone()
        .or_else(|| az.as_deref().map(region_of))
    else {
        return;
    };
    match tree.iter_mut().find(|(k, _)| k == "placement") {
        Some((_, Entry::Dir(children))) => {
            children.retain(|(k, _)| k != "region");
            children.push(("region".into(), leaf(region)));
        }
        Some(_) => {}
        None => tree.push((
            "placement".into(),
            Entry::Dir(vec![("region".into(), leaf(region))]),
        )),
    }
}

/// The region of an availability zone as AWS names them: `us-east-1a` is in `us-east-1`
/// (a letter after a digit is cut). Any other name (`nova`, `rack-1`) is its own region.
pub(super) fn region_of(az: &str) -> String {
    let b = az.as_bytes();
    match b {
        [.., digit, letter] if digit.is_ascii_digit() && letter.is_ascii_lowercase() => {
            az[..az.len() - 1].to_string()
        }
        _ => az.to_string(),
    }
}

/// The text of the leaf at `path` of `tree`.
fn text_at(tree: &[(String, Entry)], path: &[&str]) -> Option<String> {
    let (first, rest) = path.split_first()?;
    let (_, entry) = tree.iter().find(|(k, _)| k == first)?;
    match (entry, rest) {
        (Entry::Leaf(b), []) => Some(String::from_utf8_lossy(b).into_owned()),
        (Entry::Dir(children) | Entry::Labelled(_, children), rest) if !rest.is_empty() => {
            text_at(children, rest)
        }
        _ => None,
    }
}

/// `/latest/dynamic/instance-identity/document`: AWS's keys, in AWS's order, from the
/// same values as the meta-data tree. Unsigned: `signature` and `pkcs7` are not served.
fn identity_document(
    node: &NodeView,
    client: IpAddr,
    options: &TreeOptions,
) -> Result<Reply, Refusal> {
    let tree = ec2_latest(node, client, options)?;
    let text = |path: &[&str]| text_at(&tree, path).filter(|s| !s.is_empty());
    let pending = node
        .provisioned_at
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t.trim()).ok())
        .map(|t| {
            t.with_timezone(&chrono::Utc)
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        });
    let architecture = node.cpu_arch.as_deref().map(|a| match a {
        "x86_64" | "amd64" => "x86_64",
        "aarch64" | "arm64" => "arm64",
        "i386" | "i686" => "i386",
        other => other,
    });
    let doc = serde_json::json!({
        "accountId": node.project_id.as_deref(),
        "architecture": architecture,
        "availabilityZone": text(&["placement", "availability-zone"]),
        "billingProducts": null,
        "devpayProductCodes": null,
        "marketplaceProductCodes": null,
        "imageId": text(&["ami-id"]),
        "instanceId": text(&["instance-id"]),
        "instanceType": text(&["instance-type"]),
        "kernelId": null,
        "pendingTime": pending,
        "privateIp": text(&["local-ipv4"]),
        "ramdiskId": null,
        "region": text(&["placement", "region"]),
        "version": "2017-09-30",
    });
    let body = serde_json::to_string_pretty(&doc).map_err(|_| Refusal::NotFound)?;
    Ok(Reply::ok(JSON, body))
}

/// Every key of the EC2 tree Nova would build for this node, in `latest`.
fn ec2_from_node(node: &NodeView, client: IpAddr) -> Result<Vec<(String, Entry)>, Refusal> {
    let md = node.meta_data().ok_or(Refusal::NotFound)?;
    let f = facts(node, &md);
    let mut out: Vec<(String, Entry)> = vec![
        ("ami-launch-index".into(), leaf(f.launch_index.to_string())),
        // Nova serves this literal.
        ("ami-manifest-path".into(), leaf("FIXME")),
        ("instance-id".into(), leaf(f.uuid.clone())),
        ("hostname".into(), leaf(f.hostname.clone())),
        ("reservation-id".into(), leaf(ec2_id("r", &f.uuid))),
        ("local-hostname".into(), leaf(f.hostname.clone())),
        ("public-hostname".into(), leaf(f.hostname.clone())),
        // Nova's mapping for an instance without block device mappings (block_device.py).
        (
            "block-device-mapping".into(),
            Entry::Dir(vec![
                ("ami".into(), leaf("sda1")),
                ("ephemeral0".into(), leaf("sda2")),
                ("root".into(), leaf("/dev/sda1")),
                ("swap".into(), leaf("sda3")),
            ]),
        ),
        ("instance-action".into(), leaf("none")),
    ];
    let (ipv4, mac) = local_ipv4(node, client);
    if let Some(ip) = ipv4 {
        out.push(("local-ipv4".into(), leaf(ip)));
    }
    if !f.keys.is_empty() {
        let children = f
            .keys
            .iter()
            .enumerate()
            .map(|(i, (name, key))| {
                (
                    i.to_string(),
                    Entry::Labelled(
                        format!("{i}={name}"),
                        vec![("openssh-key".into(), leaf(key.clone()))],
                    ),
                )
            })
            .collect();
        out.push(("public-keys".into(), Entry::Dir(children)));
    }
    if let Some(t) = &node.instance_type {
        out.push(("instance-type".into(), leaf(t.to_string())));
    }
    if let Some(az) = &f.availability_zone {
        out.push((
            "placement".into(),
            Entry::Dir(vec![("availability-zone".into(), leaf(az.clone()))]),
        ));
    }
    if let Some(mac) = mac {
        out.push(("mac".into(), leaf(mac)));
    }
    Ok(out)
}

/// First static IPv4 address of the node's network data and the MAC of its link; else the
/// client's own address, as Nova falls back to the request address.
fn local_ipv4(node: &NodeView, client: IpAddr) -> (Option<String>, Option<String>) {
    let nd = node.network_data().map(Doc::value);
    let nd = nd.as_ref();
    let networks = nd
        .and_then(|nd| nd.get("networks"))
        .and_then(Value::as_array);
    let links = nd.and_then(|nd| nd.get("links")).and_then(Value::as_array);
    let mac_of = |link_id: &str| -> Option<String> {
        let link = links?
            .iter()
            .find(|l| l.get("id").and_then(Value::as_str) == Some(link_id))?;
        link.get("ethernet_mac_address")
            .or_else(|| link.get("vlan_mac_address"))
            .and_then(Value::as_str)
            .map(str::to_lowercase)
    };
    for n in networks.into_iter().flatten() {
        let Some(s) = n.get("ip_address").and_then(Value::as_str) else {
            continue;
        };
        let s = s.split('/').next().unwrap_or(s);
        if let Ok(IpAddr::V4(v4)) = s.parse::<IpAddr>() {
            let mac = n.get("link").and_then(Value::as_str).and_then(mac_of);
            return (Some(v4.to_string()), mac);
        }
    }
    let first_mac = links
        .and_then(|l| l.first())
        .and_then(|l| l.get("id"))
        .and_then(Value::as_str)
        .and_then(mac_of);
    match client.to_canonical() {
        IpAddr::V4(v4) => (Some(v4.to_string()), first_mac),
        IpAddr::V6(_) => (None, first_mac),
    }
}
