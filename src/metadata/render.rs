//! (node view, route) → bytes, a pure function except for `random_seed`. Text output
//! follows Nova's `ec2_md_print`: sorted keys, sub-directories suffixed with `/`, lines
//! joined with `\n`, no final newline. JSON follows Nova's `json.dumps` key order.

use std::net::IpAddr;

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::pyjson;
use super::route::{Route, EC2_VERSIONS, OPENSTACK_VERSIONS};
use super::view::{ConfigDrive, Doc, MetaTemplate, NodeView};
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

/// OpenStack versions are dates, so string order is version order.
fn at_least(version: &str, since: &str) -> bool {
    version >= since
}

fn openstack(node: &NodeView, version: &str, file: Option<&str>) -> Result<Reply, Refusal> {
    let user_data = node.drive().and_then(|d| d.user_data.clone());
    let Some(file) = file else {
        // Nova's `_handle_version`, in its order.
        let mut names = vec!["meta_data.json"];
        if user_data.is_some() {
            names.push("user_data");
        }
        if at_least(version, "2013-04-04") {
            names.push("password");
        }
        if at_least(version, "2013-10-17") {
            names.push("vendor_data.json");
        }
        if at_least(version, "2015-10-15") {
            names.push("network_data.json");
        }
        if at_least(version, "2016-10-06") {
            names.push("vendor_data2.json");
        }
        return Ok(Reply::text(names.join("\n")));
    };
    match file {
        "meta_data.json" => Ok(Reply::ok(JSON, meta_data_json(node, version)?)),
        "user_data" => user_data
            .map(|b| Reply::ok(USER_DATA, b))
            .ok_or(Refusal::NotFound),
        // Not version-gated in Nova's handler either; `{}` when there is nothing, as Nova.
        "network_data.json" => Ok(Reply::ok(
            JSON,
            node.network_data()
                .map(Doc::body)
                .unwrap_or_else(|| Bytes::from_static(b"{}")),
        )),
        "vendor_data.json" if at_least(version, "2013-10-17") => {
            Ok(Reply::ok(JSON, vendor_data(node)?))
        }
        "vendor_data2.json" if at_least(version, "2016-10-06") => {
            // `{"static": <vendor data>}`, laid out as json.dumps lays it out.
            let v = vendor_data(node)?;
            let mut body = Vec::with_capacity(v.len() + 12);
            body.extend_from_slice(b"{\"static\": ");
            body.extend_from_slice(&v);
            body.push(b'}');
            Ok(Reply::ok(JSON, body))
        }
        _ => Err(Refusal::NotFound),
    }
}

/// Static vendor data as served: the configdrive's `vendor_data`, or `{}` as Nova serves
/// by default.
fn vendor_data(node: &NodeView) -> Result<Bytes, Refusal> {
    match &node.configdrive {
        ConfigDrive::Unreadable(_) => Err(Refusal::NotFound),
        _ => Ok(node
            .drive()
            .and_then(|d| d.vendor_data.as_ref())
            .map(Doc::body)
            .unwrap_or_else(|| Bytes::from_static(b"{}"))),
    }
}

fn str_of<'a>(md: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    md.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The values both trees share, from the configdrive's meta_data with Ironic's defaults.
struct Facts {
    uuid: String,
    name: String,
    hostname: String,
    launch_index: i64,
    availability_zone: Option<String>,
    /// (name, key) in document order.
    keys: Vec<(String, String)>,
}

fn facts(node: &NodeView, md: &Map<String, Value>) -> Facts {
    let uuid = str_of(md, "uuid").unwrap_or(&node.uuid).to_string();
    let name = str_of(md, "name")
        .map(str::to_string)
        .or_else(|| node.name.clone())
        .unwrap_or_else(|| uuid.clone());
    let hostname = str_of(md, "hostname")
        .map(str::to_string)
        .unwrap_or_else(|| name.clone());
    let keys = md
        .get("public_keys")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                .collect()
        })
        .unwrap_or_default();
    Facts {
        uuid,
        name,
        hostname,
        launch_index: md.get("launch_index").and_then(Value::as_i64).unwrap_or(0),
        availability_zone: str_of(md, "availability_zone").map(str::to_string),
        keys,
    }
}

/// Length of `random_seed`: base64 of 512 bytes.
const SEED_LEN: usize = 684;

/// `meta_data.json` as served. Everything but `random_seed` depends on the node and the
/// version only, so the document is rendered once per node and version, and each answer
/// copies it with fresh seed bytes written over the seed's place.
fn meta_data_json(node: &NodeView, version: &str) -> Result<Bytes, Refusal> {
    let template = node
        .render_cache
        .meta_data(version, || meta_data_template(node, version))?;
    let Some(at) = template.seed_at else {
        return Ok(template.body.clone());
    };
    let mut body = template.body.to_vec();
    let mut seed = [0u8; 512];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
    base64::engine::general_purpose::STANDARD
        .encode_slice(seed, &mut body[at..at + SEED_LEN])
        .map_err(|_| Refusal::NotFound)?;
    Ok(Bytes::from(body))
}

/// Render with two different seed placeholders: where the two documents differ is the
/// seed's place, whatever the node's own data holds.
fn meta_data_template(node: &NodeView, version: &str) -> Result<MetaTemplate, Refusal> {
    let a = pyjson::to_vec(&meta_data(node, version, &"A".repeat(SEED_LEN))?);
    let b = pyjson::to_vec(&meta_data(node, version, &"B".repeat(SEED_LEN))?);
    let seed_at = a.iter().zip(&b).position(|(x, y)| x != y);
    Ok(MetaTemplate {
        body: Bytes::from(a),
        seed_at,
    })
}

/// `meta_data.json` with exactly the keys of `version`, in the order of Nova's
/// `_metadata_as_json`. Keys a configdrive adds beyond those (`admin_pass`, `files`
/// whose contents are not here) are not served, as Nova's metadata service does not.
fn meta_data(node: &NodeView, version: &str, seed: &str) -> Result<Map<String, Value>, Refusal> {
    let md = node.meta_data().ok_or(Refusal::NotFound)?;
    let f = facts(node, &md);
    let mut out = Map::new();
    out.insert("uuid".into(), json!(f.uuid));
    if let Some(meta) = md
        .get("meta")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
    {
        out.insert("meta".into(), Value::Object(meta.clone()));
    }
    if !f.keys.is_empty() {
        let pk: Map<String, Value> = f.keys.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        out.insert("public_keys".into(), Value::Object(pk));
        let keys = match md.get("keys").and_then(Value::as_array) {
            Some(given) => Value::Array(given.clone()),
            None => Value::Array(
                f.keys
                    .iter()
                    .map(|(k, v)| json!({"name": k, "type": "ssh", "data": v}))
                    .collect(),
            ),
        };
        out.insert("keys".into(), keys);
    }
    out.insert("hostname".into(), json!(f.hostname));
    out.insert("name".into(), json!(f.name));
    out.insert("launch_index".into(), json!(f.launch_index));
    out.insert("availability_zone".into(), json!(f.availability_zone));
    if at_least(version, "2013-04-04") {
        // New per answer, as Nova does (see `meta_data_json`); cloud-init base64-decodes it
        // to seed entropy.
        out.insert("random_seed".into(), json!(seed));
    }
    if at_least(version, "2015-10-15") {
        let project = str_of(&md, "project_id")
            .map(str::to_string)
            .or_else(|| node.project_id.clone());
        out.insert("project_id".into(), json!(project));
    }
    if at_least(version, "2016-06-30") {
        out.insert(
            "devices".into(),
            md.get("devices")
                .filter(|d| d.is_array())
                .cloned()
                .unwrap_or_else(|| json!([])),
        );
    }
    if at_least(version, "2020-10-14") {
        out.insert(
            "dedicated_cpus".into(),
            md.get("dedicated_cpus")
                .filter(|d| d.is_array())
                .cloned()
                .unwrap_or_else(|| json!([])),
        );
    }
    Ok(out)
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

/// EC2 versions are in chronological order in [`EC2_VERSIONS`] (`1.0` sorts first).
fn ec2_at_least(version: &str, since: &str) -> bool {
    let pos = |v: &str| EC2_VERSIONS.iter().position(|x| *x == v).unwrap_or(0);
    pos(version) >= pos(since)
}

/// A short stable EC2-style id (`ami-1a2b3c4d`) derived from a value.
fn ec2_id(prefix: &str, seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(seed.as_bytes());
    format!("{prefix}-{:02x}{:02x}{:02x}{:02x}", d[0], d[1], d[2], d[3])
}

/// Keys of Nova's `get_ec2_metadata` that exist only from an EC2 version on; the others
/// are in every version.
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
];

/// The EC2 tree an image carries (`ec2/latest/meta-data.json`, Nova's `get_ec2_metadata`
/// of `latest`), cut down to `version` by Nova's own version rules, plus `mac`.
fn ec2_from_drive(
    md: &Map<String, Value>,
    node: &NodeView,
    version: &str,
    client: IpAddr,
) -> Entry {
    let mut out: Vec<(String, Entry)> = md
        .iter()
        .filter(|(k, _)| {
            EC2_SINCE
                .iter()
                .find(|(key, _)| key == k)
                .is_none_or(|(_, since)| ec2_at_least(version, since))
        })
        .filter_map(|(k, v)| ec2_entry(v).map(|e| (k.clone(), e)))
        .collect();
    if ec2_at_least(version, "2009-04-04") && !md.contains_key("mac") {
        if let (_, Some(mac)) = local_ipv4(node, client) {
            out.push(("mac".into(), leaf(mac)));
        }
    }
    Entry::Dir(out)
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

/// Nova's `get_ec2_metadata`: keys by version; keys with no value here are left out. An
/// image that carries Nova's own EC2 metadata is served as it is.
fn ec2_meta_data(node: &NodeView, version: &str, client: IpAddr) -> Result<Entry, Refusal> {
    if let Some(ec2) = node.drive().and_then(|d| d.ec2_meta_data.as_ref()) {
        return Ok(ec2_from_drive(&ec2.object(), node, version, client));
    }
    let md = node.meta_data().ok_or(Refusal::NotFound)?;
    let f = facts(node, &md);
    let mut out: Vec<(String, Entry)> = vec![
        ("ami-launch-index".into(), leaf(f.launch_index.to_string())),
        // Nova serves this literal.
        ("ami-manifest-path".into(), leaf("FIXME")),
        ("instance-id".into(), leaf(f.uuid.clone())),
        ("hostname".into(), leaf(f.hostname.clone())),
        ("reservation-id".into(), leaf(ec2_id("r", &f.uuid))),
    ];
    if let Some(image) = &node.image_source {
        out.push(("ami-id".into(), leaf(ec2_id("ami", image))));
    }
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
    if ec2_at_least(version, "2007-01-19") {
        out.push(("local-hostname".into(), leaf(f.hostname.clone())));
        out.push(("public-hostname".into(), leaf(f.hostname.clone())));
    }
    if ec2_at_least(version, "2007-08-29") {
        if let Some(t) = &node.instance_type {
            out.push(("instance-type".into(), leaf(t.clone())));
        }
    }
    if ec2_at_least(version, "2007-12-15") {
        // Nova's mapping for an instance without block device mappings (block_device.py).
        out.push((
            "block-device-mapping".into(),
            Entry::Dir(vec![
                ("ami".into(), leaf("sda1")),
                ("ephemeral0".into(), leaf("sda2")),
                ("root".into(), leaf("/dev/sda1")),
                ("swap".into(), leaf("sda3")),
            ]),
        ));
    }
    if ec2_at_least(version, "2008-02-01") {
        if let Some(az) = &f.availability_zone {
            out.push((
                "placement".into(),
                Entry::Dir(vec![("availability-zone".into(), leaf(az.clone()))]),
            ));
        }
    }
    if ec2_at_least(version, "2008-09-01") {
        out.push(("instance-action".into(), leaf("none")));
    }
    if ec2_at_least(version, "2009-04-04") {
        if let Some(mac) = mac {
            out.push(("mac".into(), leaf(mac)));
        }
    }
    Ok(Entry::Dir(out))
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

/// What `node` (a UUID or name in `inventory`) is served for `path`, whatever its
/// provision state, as if it asked from its first address: the `render` command, for
/// operators checking a node's documents before it boots.
pub fn render_offline(
    inventory: crate::inventory::model::Inventory,
    node: &str,
    path: &str,
    dns: &[IpAddr],
    today: &str,
) -> Result<Reply, String> {
    let index = crate::identity::Index::build_with(inventory, &[], dns);
    let view = index
        .nodes()
        .iter()
        .find(|n| n.uuid == node || n.name.as_deref() == Some(node))
        .ok_or_else(|| format!("no node {node:?} in the inventory"))?;
    let route = super::route::parse(path).map_err(|e| format!("{path}: {e}"))?;
    let client = view
        .addresses
        .first()
        .copied()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    match route {
        Route::OpenStackVersions => Ok(openstack_versions(today)),
        route => render(view, &route, client).map_err(|r| {
            let reply = r.reply();
            format!(
                "{path}: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body).trim_end()
            )
        }),
    }
}
