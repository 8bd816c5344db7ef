//! The OpenStack tree: `/openstack/<version>/<file>`, each file with exactly the keys of
//! its version, in Nova's order.

use base64::Engine;
use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::facts::{facts, str_of};
use crate::node::doc::{self, Doc};
use crate::node::view::MetaTemplate;
use crate::node::{ConfigDrive, NodeView};
use crate::reply::{Refusal, Reply, JSON, USER_DATA};
use crate::versions::{self, GRIZZLY, HAVANA, LIBERTY, NEWTON_ONE, NEWTON_TWO, VICTORIA};

pub(super) fn openstack(
    node: &NodeView,
    version: &str,
    file: Option<&str>,
) -> Result<Reply, Refusal> {
    let user_data = node.drive().and_then(|d| d.user_data.clone());
    let Some(file) = file else {
        // Nova's `_handle_version`, in its order.
        let mut names = vec!["meta_data.json"];
        if user_data.is_some() {
            names.push("user_data");
        }
        if versions::has(version, GRIZZLY) {
            names.push("password");
        }
        if versions::has(version, HAVANA) {
            names.push("vendor_data.json");
        }
        if versions::has(version, LIBERTY) {
            names.push("network_data.json");
        }
        if versions::has(version, NEWTON_TWO) {
            names.push("vendor_data2.json");
        }
        return Ok(Reply::text(names.join("\n")));
    };
    match file {
        "meta_data.json" => meta_data_json(node, version),
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
        "vendor_data.json" if versions::has(version, HAVANA) => {
            Ok(Reply::ok(JSON, vendor_data(node)?))
        }
        "vendor_data2.json" if versions::has(version, NEWTON_TWO) => {
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

/// Length of `random_seed`: base64 of 512 bytes.
const SEED_LEN: usize = 684;

/// `meta_data.json` as served. Everything but `random_seed` depends on the node and the
/// version only, so the document is rendered once per node and version, and each answer
/// copies it with fresh seed bytes written over the seed's place.
/// Its entity tag is weak: the same for every answer of the same document but the seed.
fn meta_data_json(node: &NodeView, version: &str) -> Result<Reply, Refusal> {
    let template = node
        .render_cache
        .meta_data(version, || meta_data_template(node, version))?;
    let reply = |body: Bytes| Reply {
        etag: Some(template.etag.clone()),
        ..Reply::ok(JSON, body)
    };
    let Some(at) = template.seed_at else {
        return Ok(reply(template.body.clone()));
    };
    let mut body = template.body.to_vec();
    let mut seed = [0u8; 512];
    rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
    base64::engine::general_purpose::STANDARD
        .encode_slice(seed, &mut body[at..at + SEED_LEN])
        .map_err(|_| Refusal::NotFound)?;
    Ok(reply(Bytes::from(body)))
}

/// Render with two different seed placeholders: where the two documents differ is the
/// seed's place, whatever the node's own data holds.
fn meta_data_template(node: &NodeView, version: &str) -> Result<MetaTemplate, Refusal> {
    let a = doc::to_vec(&meta_data(node, version, &"A".repeat(SEED_LEN))?);
    let b = doc::to_vec(&meta_data(node, version, &"B".repeat(SEED_LEN))?);
    let seed_at = a.iter().zip(&b).position(|(x, y)| x != y);
    Ok(MetaTemplate {
        etag: crate::reply::entity_tag(&a, seed_at.is_some()).into(),
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
    if versions::has(version, GRIZZLY) {
        // New per answer, as Nova does (see `meta_data_json`); cloud-init base64-decodes it
        // to seed entropy.
        out.insert("random_seed".into(), json!(seed));
    }
    if versions::has(version, LIBERTY) {
        let project = str_of(&md, "project_id")
            .map(str::to_string)
            .or_else(|| node.project_id.as_deref().map(str::to_string));
        out.insert("project_id".into(), json!(project));
    }
    if versions::has(version, NEWTON_ONE) {
        out.insert(
            "devices".into(),
            md.get("devices")
                .filter(|d| d.is_array())
                .cloned()
                .unwrap_or_else(|| json!([])),
        );
    }
    if versions::has(version, VICTORIA) {
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
