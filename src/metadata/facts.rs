//! The values both trees share, read from the configdrive's `meta_data` with Ironic's
//! defaults applied.

use serde_json::{Map, Value};

use crate::node::NodeView;

pub(super) fn str_of<'a>(md: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    md.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// The values both trees share, from the configdrive's meta_data with Ironic's defaults.
pub(super) struct Facts {
    pub(super) uuid: String,
    pub(super) name: String,
    pub(super) hostname: String,
    pub(super) launch_index: i64,
    pub(super) availability_zone: Option<String>,
    /// (name, key) in document order.
    pub(super) keys: Vec<(String, String)>,
}

pub(super) fn facts(node: &NodeView, md: &Map<String, Value>) -> Facts {
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
