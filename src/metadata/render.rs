//! (node view, route) → bytes, a pure function. Text output follows Nova's `ec2_md_print`:
//! sorted keys, sub-directories suffixed with `/`, lines joined with `\n`, no final newline.

use std::net::IpAddr;

use bytes::Bytes;
use serde_json::{Map, Value};

use super::pyjson;
use super::route::{Route, EC2_VERSIONS, OPENSTACK_VERSIONS};
use super::view::NodeView;
use crate::reply::{Refusal, Reply, JSON, USER_DATA};

/// `/`: the EC2 versions and `latest`.
pub fn ec2_versions() -> Reply {
    let mut lines: Vec<&str> = EC2_VERSIONS.to_vec();
    lines.push("latest");
    Reply::text(lines.join("\n"))
}

/// `/openstack`: versions not dated in the future (UTC), then `latest`.
pub fn openstack_versions(today: &str) -> Reply {
    let mut lines: Vec<&str> = OPENSTACK_VERSIONS
        .iter()
        .copied()
        .filter(|v| *v <= today)
        .collect();
    lines.push("latest");
    Reply::text(lines.join("\n"))
}

/// A route that names data of one node.
pub fn render(node: &NodeView, route: &Route, client: IpAddr) -> Result<Reply, Refusal> {
    match route {
        Route::Ec2Versions => Ok(ec2_versions()),
        Route::OpenStackVersions => Err(Refusal::NotFound),
        Route::OpenStack { version, file } => openstack(node, version, file.as_deref()),
        Route::Ec2 { version, path } => ec2(node, version, path, client),
    }
}

fn at_least(version: &str, since: &str) -> bool {
    version >= since
}

fn openstack(node: &NodeView, version: &str, file: Option<&str>) -> Result<Reply, Refusal> {
    let drive = node.drive();
    let user_data = drive.and_then(|d| d.user_data.clone());
    let Some(file) = file else {
        let mut names = vec!["meta_data.json"];
        if user_data.is_some() {
            names.push("user_data");
        }
        if at_least(version, "2013-10-17") {
            names.push("vendor_data.json");
        }
        if at_least(version, "2015-10-15") && node.network_data().is_some() {
            names.push("network_data.json");
        }
        if at_least(version, "2016-10-06") {
            names.push("vendor_data2.json");
        }
        return Ok(Reply::text(names.join("\n")));
    };
    match file {
        "meta_data.json" => {
            let md = node.meta_data().ok_or(Refusal::NotFound)?;
            Ok(Reply::ok(JSON, pyjson::to_vec(&md)))
        }
        "user_data" => user_data
            .map(|b| Reply::ok(USER_DATA, b))
            .ok_or(Refusal::NotFound),
        "network_data.json" => node
            .network_data()
            .map(|nd| Reply::ok(JSON, pyjson::to_vec(nd)))
            .ok_or(Refusal::NotFound),
        "vendor_data.json" if at_least(version, "2013-10-17") => {
            Ok(Reply::ok(JSON, pyjson::to_vec(&vendor_data(node)?)))
        }
        "vendor_data2.json" if at_least(version, "2016-10-06") => {
            let mut v2 = Map::new();
            v2.insert("static".into(), vendor_data(node)?);
            Ok(Reply::ok(JSON, pyjson::to_vec(&v2)))
        }
        _ => Err(Refusal::NotFound),
    }
}

/// Static vendor data: the configdrive's `vendor_data`, or `{}` as Nova serves by default.
fn vendor_data(node: &NodeView) -> Result<Value, Refusal> {
    match &node.configdrive {
        super::view::ConfigDrive::Unreadable(_) => Err(Refusal::NotFound),
        _ => Ok(node
            .drive()
            .and_then(|d| d.vendor_data.clone())
            .unwrap_or_else(|| Value::Object(Map::new()))),
    }
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

fn ec2(node: &NodeView, version: &str, path: &[String], client: IpAddr) -> Result<Reply, Refusal> {
    let user_data = node.drive().and_then(|d| d.user_data.clone());
    let Some((first, rest)) = path.split_first() else {
        let mut names = vec!["meta-data/"];
        if user_data.is_some() {
            names.push("user-data");
        }
        return Ok(Reply::text(names.join("\n")));
    };
    match first.as_str() {
        "user-data" if rest.is_empty() => user_data
            .map(|b| Reply::ok(USER_DATA, b))
            .ok_or(Refusal::NotFound),
        "meta-data" => {
            let tree = ec2_meta_data(node, version, client)?;
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

fn ec2_meta_data(node: &NodeView, _version: &str, client: IpAddr) -> Result<Entry, Refusal> {
    let md = node.meta_data().ok_or(Refusal::NotFound)?;
    let mut out: Vec<(String, Entry)> = Vec::new();
    if let Some(id) = md.get("uuid").and_then(Value::as_str) {
        out.push(("instance-id".into(), leaf(id)));
    }
    let hostname = md
        .get("hostname")
        .and_then(Value::as_str)
        .or_else(|| md.get("name").and_then(Value::as_str));
    if let Some(h) = hostname {
        out.push(("hostname".into(), leaf(h)));
    }
    if let Some(ip) = local_ipv4(node, client) {
        out.push(("local-ipv4".into(), leaf(ip)));
    }
    let keys = public_keys(&md);
    if !keys.is_empty() {
        let children = keys
            .into_iter()
            .enumerate()
            .map(|(i, (name, key))| {
                (
                    i.to_string(),
                    Entry::Labelled(
                        format!("{i}={name}"),
                        vec![("openssh-key".into(), leaf(key))],
                    ),
                )
            })
            .collect();
        out.push(("public-keys".into(), Entry::Dir(children)));
    }
    Ok(Entry::Dir(out))
}

/// First static IPv4 address of the node's network data; else the client's own address, as
/// Nova falls back to the request address.
fn local_ipv4(node: &NodeView, client: IpAddr) -> Option<String> {
    let from_data = node
        .network_data()
        .and_then(|nd| nd.get("networks"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|n| n.get("ip_address").and_then(Value::as_str))
        .find_map(|s| {
            let s = s.split('/').next().unwrap_or(s);
            match s.parse::<IpAddr>() {
                Ok(IpAddr::V4(v4)) => Some(v4.to_string()),
                _ => None,
            }
        });
    from_data.or(match client.to_canonical() {
        IpAddr::V4(v4) => Some(v4.to_string()),
        IpAddr::V6(_) => None,
    })
}

/// `(name, key)` pairs from `public_keys` (name → key) in document order; key values that
/// are not strings are skipped.
fn public_keys(md: &Map<String, Value>) -> Vec<(String, String)> {
    md.get("public_keys")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default()
}
