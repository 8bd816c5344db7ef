//! The NoCloud tree, `/nocloud/<file>`: what cloud-init's NoCloud datasource reads from a
//! URL seed (`ds=nocloud;s=http://169.254.169.254/nocloud/`), for images that do not pick
//! the OpenStack datasource. cloud-init reads `meta-data`, `user-data` and `vendor-data`
//! and gives up on the seed if one of the first two fails, so both are always there;
//! `network-config` is read from 24.3 on.

use bytes::Bytes;
use serde_json::{json, Value};

use super::facts::facts;
use super::netconfig;
use super::yaml::to_yaml;
use crate::node::{Doc, NodeView};
use crate::reply::{Refusal, Reply, USER_DATA};

/// YAML documents (RFC 9512).
const YAML: &str = "application/yaml";

pub(super) fn nocloud(node: &NodeView, file: Option<&str>) -> Result<Reply, Refusal> {
    // A configdrive that cannot be read answers nothing, as in the other trees.
    let md = node.meta_data().ok_or(Refusal::NotFound)?;
    let network = || {
        node.network_data()
            .map(Doc::value)
            .as_ref()
            .and_then(netconfig::v1)
    };
    match file {
        None => {
            let mut names = vec!["meta-data", "user-data", "vendor-data"];
            if network().is_some() {
                names.push("network-config");
            }
            Ok(Reply::text(names.join("\n")))
        }
        Some("meta-data") => {
            let f = facts(node, &md);
            let keys: Vec<&str> = f.keys.iter().map(|(_, k)| k.as_str()).collect();
            let doc = json!({
                "instance-id": f.uuid,
                "local-hostname": f.hostname,
                "public-keys": keys,
            });
            Ok(Reply::ok(YAML, to_yaml(&doc)))
        }
        // Empty when there is none: a 404 would make cloud-init drop the whole seed.
        Some("user-data") => Ok(Reply::ok(
            USER_DATA,
            node.drive()
                .and_then(|d| d.user_data.clone())
                .unwrap_or_default(),
        )),
        Some("vendor-data") => Ok(Reply::ok(USER_DATA, vendor_data(node))),
        Some("network-config") => network()
            .map(|cfg| Reply::ok(YAML, to_yaml(&cfg)))
            .ok_or(Refusal::NotFound),
        Some(_) => Err(Refusal::NotFound),
    }
}

/// The part of the OpenStack vendor data cloud-init applies (`convert_vendordata`): the
/// text under `cloud-init`; empty otherwise.
fn vendor_data(node: &NodeView) -> Bytes {
    let vd = node
        .drive()
        .and_then(|d| d.vendor_data.as_ref())
        .map(Doc::value);
    match vd.as_ref().and_then(|v| v.get("cloud-init")) {
        Some(Value::String(s)) => Bytes::from(s.clone()),
        _ => Bytes::new(),
    }
}
