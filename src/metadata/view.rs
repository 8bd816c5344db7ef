//! The node view: what the metadata handler needs from one Ironic node, extracted once when
//! the index is built so that requests never re-parse Ironic's JSON.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use serde_json::{Map, Value};

use super::route::OPENSTACK_VERSIONS;
use crate::inventory::model::{Node, Raw};
use crate::reply::Refusal;

/// A JSON document kept as the bytes it is served as (Python's `json.dumps` layout, see
/// [`super::pyjson`]): a few hundred bytes where a parsed tree takes kilobytes. Files served
/// whole go out as these bytes; the rest is parsed back when a request needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doc(Bytes);

impl Default for Doc {
    /// `{}`.
    fn default() -> Doc {
        Doc(Bytes::from_static(b"{}"))
    }
}

impl Doc {
    pub fn new<T: serde::Serialize + ?Sized>(value: &T) -> Doc {
        Doc(Bytes::from(super::pyjson::to_vec(value)))
    }

    /// The document as served (a cheap, shared copy).
    pub fn body(&self) -> Bytes {
        self.0.clone()
    }

    pub fn value(&self) -> Value {
        // The bytes were written from a `Value` by this module: they always parse.
        serde_json::from_slice(&self.0).unwrap_or(Value::Null)
    }

    /// The document as an object (empty when it is not one).
    pub fn object(&self) -> Map<String, Value> {
        match self.value() {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Ironic replaces secrets it will not show with this literal (`node_sanitize`).
pub const MASKED: &str = "******";

/// The configdrive as stored in `instance_info.configdrive`.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigDrive {
    /// The node was deployed without one.
    Absent,
    /// Readable contents (the JSON dict form, or a decoded image).
    Contents(Arc<DriveContents>),
    /// Present but not usable; the reason is logged and the files it holds answer 404.
    Unreadable(String),
}

/// The four parts of a configdrive, as Ironic's `build_configdrive` takes them.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DriveContents {
    /// An object.
    pub meta_data: Doc,
    pub user_data: Option<Bytes>,
    /// An object.
    pub network_data: Option<Doc>,
    /// An object.
    pub vendor_data: Option<Doc>,
    /// The image's `ec2/latest/meta-data.json`, an object: Nova writes it, Ironic's builder
    /// does not (and its JSON dict form has no place for it).
    pub ec2_meta_data: Option<Doc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub uuid: String,
    pub name: Option<String>,
    pub provision_state: Option<String>,
    pub configdrive: ConfigDrive,
    /// `node.network_data` when it is an object with content.
    pub static_network_data: Option<Doc>,
    /// Network data generated from the node's ports and portgroups.
    pub generated_network_data: Option<Doc>,
    /// Every address the node's network data claims (configdrive and static), deduplicated.
    pub addresses: Vec<IpAddr>,
    /// The MACs of the node's Ironic ports and portgroups, sorted, deduplicated.
    pub macs: Vec<macaddr::MacAddr6>,
    /// `instance_info.project_id`, else the node's lessee, else its owner.
    pub project_id: Option<String>,
    /// `instance_info.flavor_name`, else the node's resource class.
    pub instance_type: Option<String>,
    /// `instance_info.image_source`.
    pub image_source: Option<String>,
    /// Identifies this deployment of the node (instance and provision time): state kept
    /// per deployment, like the password, is forgotten when the node is redeployed.
    pub deployment: String,
    /// Documents rendered on first request (empty until then).
    pub render_cache: RenderCache,
}

/// A rendered `meta_data.json` and where its `random_seed` value sits.
#[derive(Debug, Clone)]
pub struct MetaTemplate {
    pub body: Bytes,
    pub seed_at: Option<usize>,
}

type MetaSlots = Box<[OnceLock<Result<MetaTemplate, Refusal>>]>;

/// Per-node cache of rendered documents, one slot per OpenStack version, allocated when
/// the node is first asked. It never takes part in comparisons and is not cloned.
#[derive(Default)]
pub struct RenderCache(OnceLock<MetaSlots>);

impl RenderCache {
    /// The `meta_data.json` template of `version`, rendered by `render` the first time.
    pub fn meta_data(
        &self,
        version: &str,
        render: impl FnOnce() -> Result<MetaTemplate, Refusal>,
    ) -> Result<&MetaTemplate, Refusal> {
        let Some(i) = OPENSTACK_VERSIONS.iter().position(|v| *v == version) else {
            return Err(Refusal::NotFound);
        };
        let slots = self.0.get_or_init(|| {
            (0..OPENSTACK_VERSIONS.len())
                .map(|_| OnceLock::new())
                .collect()
        });
        slots[i].get_or_init(render).as_ref().map_err(|r| *r)
    }
}

impl std::fmt::Debug for RenderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RenderCache")
    }
}

impl Clone for RenderCache {
    fn clone(&self) -> RenderCache {
        RenderCache::default()
    }
}

impl PartialEq for RenderCache {
    fn eq(&self, _: &RenderCache) -> bool {
        true
    }
}

/// Decoded configdrive images by (node, length, digest of the string): an image is decoded
/// once per node and version, not on every refresh.
pub type DriveCache = HashMap<(String, usize, u64), Result<Arc<DriveContents>, String>>;

fn decode_cached(
    node: &str,
    text: &str,
    old: &mut DriveCache,
    new: &mut DriveCache,
) -> ConfigDrive {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    let key = (node.to_string(), text.len(), h.finish());
    let decoded = match old.remove(&key) {
        Some(d) => d,
        None => super::configdrive::decode(text)
            .map(Arc::new)
            .map_err(|e| e.to_string()),
    };
    new.insert(key, decoded.clone());
    match decoded {
        Ok(c) => ConfigDrive::Contents(c),
        Err(why) => ConfigDrive::Unreadable(why),
    }
}

impl NodeView {
    pub fn from_ironic(node: &Node) -> NodeView {
        NodeView::from_ironic_cached(node, &mut DriveCache::new(), &mut DriveCache::new())
    }

    /// [`NodeView::from_ironic`], taking decoded images from `old` and recording the
    /// ones used in `new`.
    pub fn from_ironic_cached(node: &Node, old: &mut DriveCache, new: &mut DriveCache) -> NodeView {
        let configdrive_value = node.instance_info.get("configdrive").map(Raw::value);
        let configdrive = match configdrive_value.as_ref() {
            None | Some(Value::Null) => ConfigDrive::Absent,
            Some(Value::String(s)) if s.is_empty() => ConfigDrive::Absent,
            Some(Value::String(s)) if s == MASKED => ConfigDrive::Unreadable(
                "instance_info.configdrive is masked by Ironic; grant the service account \
                 Ironic's show_instance_secrets policy"
                    .into(),
            ),
            Some(Value::String(s)) if s.contains("://") => ConfigDrive::Unreadable(
                "configdrive URL could not be downloaded (or the source does not download URLs)"
                    .into(),
            ),
            Some(Value::String(s)) => decode_cached(&node.uuid, s, old, new),
            Some(Value::Object(dict)) => match drive_from_dict(dict) {
                Ok(c) => ConfigDrive::Contents(Arc::new(c)),
                Err(why) => ConfigDrive::Unreadable(why),
            },
            Some(other) => ConfigDrive::Unreadable(format!(
                "instance_info.configdrive is a JSON {}, expected an object or a string",
                json_kind(other)
            )),
        };
        let mut addresses = Vec::new();
        let drive_network = match &configdrive {
            ConfigDrive::Contents(c) => c.network_data.as_ref(),
            _ => None,
        };
        if let Some(nd) = drive_network {
            collect_addresses(&nd.value(), &mut addresses);
        }
        drop(configdrive_value);
        let static_value = node.network_data.as_ref().map(Raw::value);
        let static_network_data = match &static_value {
            Some(v @ Value::Object(m)) if !m.is_empty() => {
                collect_addresses(v, &mut addresses);
                let doc = Doc::new(v);
                // Often the very document the configdrive holds: keep one copy.
                Some(match drive_network {
                    Some(same) if *same == doc => same.clone(),
                    _ => doc,
                })
            }
            _ => None,
        };
        addresses.sort();
        addresses.dedup();
        let info = |k: &str| {
            node.instance_info
                .get(k)
                .and_then(Raw::string)
                .filter(|s| !s.is_empty() && *s != MASKED)
        };
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        NodeView {
            uuid: node.uuid.clone(),
            name: node.name.clone().filter(|n| !n.is_empty()),
            provision_state: node.provision_state.clone(),
            configdrive,
            static_network_data,
            generated_network_data: None,
            addresses,
            macs: Vec::new(),
            project_id: info("project_id")
                .or_else(|| nonempty(&node.lessee))
                .or_else(|| nonempty(&node.owner)),
            instance_type: info("flavor_name").or_else(|| nonempty(&node.resource_class)),
            image_source: info("image_source"),
            deployment: format!(
                "{}|{}",
                node.instance_uuid.as_deref().unwrap_or(""),
                node.provision_updated_at.as_deref().unwrap_or("")
            ),
            render_cache: RenderCache::default(),
        }
    }

    /// `meta_data.json` contents with Ironic's defaults applied (`build_configdrive`:
    /// `uuid` defaults to the node UUID, `name` to the node name when it has one).
    /// `None` when the configdrive exists but cannot be read.
    pub fn meta_data(&self) -> Option<Map<String, Value>> {
        let mut md = match &self.configdrive {
            ConfigDrive::Absent => Map::new(),
            ConfigDrive::Contents(c) => c.meta_data.object(),
            ConfigDrive::Unreadable(_) => return None,
        };
        if !md.contains_key("uuid") {
            md.insert("uuid".into(), Value::String(self.uuid.clone()));
        }
        if let Some(name) = &self.name {
            if !md.contains_key("name") {
                md.insert("name".into(), Value::String(name.clone()));
            }
        }
        Some(md)
    }

    pub fn drive(&self) -> Option<&DriveContents> {
        match &self.configdrive {
            ConfigDrive::Contents(c) => Some(c),
            _ => None,
        }
    }

    /// The network configuration the instance should apply: the one it was deployed with,
    /// else Ironic's static one, else one generated from its ports.
    pub fn network_data(&self) -> Option<&Doc> {
        self.drive()
            .and_then(|c| c.network_data.as_ref())
            .or(self.static_network_data.as_ref())
            .or(self.generated_network_data.as_ref())
    }
}

fn drive_from_dict(dict: &Map<String, Value>) -> Result<DriveContents, String> {
    let meta_data = match dict.get("meta_data") {
        None | Some(Value::Null) => Doc::new(&Map::new()),
        Some(v @ Value::Object(_)) => Doc::new(v),
        Some(v) => return Err(not_object("meta_data", v)),
    };
    // Ironic's builder: a dict or list becomes its JSON text, a non-empty string its UTF-8
    // bytes, anything falsy means "no user data".
    let user_data = match dict.get("user_data") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) => Some(Bytes::from(s.clone().into_bytes())),
        Some(v @ (Value::Object(_) | Value::Array(_))) => {
            Some(Bytes::from(super::pyjson::to_vec(v)))
        }
        Some(v) => {
            return Err(format!(
                "configdrive user_data is a JSON {}, expected a string, object or array",
                json_kind(v)
            ))
        }
    };
    let network_data = match dict.get("network_data") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(Doc::new(v)),
        Some(v) => return Err(not_object("network_data", v)),
    };
    let vendor_data = match dict.get("vendor_data") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(Doc::new(v)),
        Some(v) => return Err(not_object("vendor_data", v)),
    };
    Ok(DriveContents {
        meta_data,
        user_data,
        network_data,
        vendor_data,
        ec2_meta_data: None,
    })
}

fn not_object(field: &str, v: &Value) -> String {
    format!(
        "configdrive {field} is a JSON {}, expected an object",
        json_kind(v)
    )
}

pub(crate) fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Static addresses of `networks[].ip_address`. A value with a prefix (`192.0.2.10/24`) is
/// read as its address; anything unparsable is skipped (it cannot match a client anyway).
fn collect_addresses(network_data: &Value, out: &mut Vec<IpAddr>) {
    let Some(networks) = network_data.get("networks").and_then(Value::as_array) else {
        return;
    };
    for net in networks {
        let Some(raw) = net.get("ip_address").and_then(Value::as_str) else {
            continue;
        };
        let raw = raw.trim();
        let parsed = raw
            .parse::<IpAddr>()
            .ok()
            .or_else(|| raw.parse::<ipnet::IpNet>().ok().map(|n| n.addr()));
        if let Some(ip) = parsed {
            out.push(ip.to_canonical());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: Value) -> Node {
        serde_json::from_str(&v.to_string()).unwrap()
    }

    #[test]
    fn addresses_come_from_configdrive_and_static_network_data() {
        let n = node(json!({
            "uuid": "u1", "name": "n1", "provision_state": "active",
            "network_data": {"links": [], "services": [], "networks": [
                {"id": "a", "type": "ipv4", "link": "l", "network_id": "x", "ip_address": "192.0.2.5"}]},
            "instance_info": {"configdrive": {"network_data": {"links": [], "services": [], "networks": [
                {"id": "b", "type": "ipv6", "link": "l", "network_id": "x", "ip_address": "2001:db8::5"},
                {"id": "c", "type": "ipv4", "link": "l", "network_id": "x", "ip_address": "192.0.2.5/24"},
                {"id": "d", "type": "ipv4_dhcp", "link": "l", "network_id": "x"}]}}}
        }));
        let v = NodeView::from_ironic(&n);
        let want: Vec<IpAddr> = vec!["192.0.2.5".parse().unwrap(), "2001:db8::5".parse().unwrap()];
        assert_eq!(v.addresses, want);
    }

    #[test]
    fn meta_data_defaults_follow_ironic_builder() {
        let v = NodeView::from_ironic(&node(json!({"uuid": "u1", "name": "n1"})));
        assert_eq!(
            Value::Object(v.meta_data().unwrap()),
            json!({"uuid": "u1", "name": "n1"})
        );
        let v = NodeView::from_ironic(&node(json!({"uuid": "u1", "name": "n1",
            "instance_info": {"configdrive": {"meta_data": {"uuid": "inst", "name": "web"}}}})));
        assert_eq!(
            Value::Object(v.meta_data().unwrap()),
            json!({"uuid": "inst", "name": "web"})
        );
        let v = NodeView::from_ironic(&node(json!({"uuid": "u1", "name": null})));
        assert_eq!(Value::Object(v.meta_data().unwrap()), json!({"uuid": "u1"}));
    }

    #[test]
    fn masked_and_malformed_configdrives_are_unreadable() {
        let v = NodeView::from_ironic(&node(json!({"uuid": "u1",
            "instance_info": {"configdrive": "******"}})));
        assert!(
            matches!(v.configdrive, ConfigDrive::Unreadable(ref r) if r.contains("show_instance_secrets"))
        );
        assert_eq!(v.meta_data(), None);
        let v = NodeView::from_ironic(&node(json!({"uuid": "u1",
            "instance_info": {"configdrive": {"meta_data": [1]}}})));
        assert!(
            matches!(v.configdrive, ConfigDrive::Unreadable(ref r) if r.contains("meta_data is a JSON array"))
        );
    }

    #[test]
    fn user_data_forms() {
        let ud = |x: Value| {
            NodeView::from_ironic(&node(
                json!({"uuid": "u", "instance_info": {"configdrive": {"user_data": x}}}),
            ))
            .drive()
            .and_then(|d| d.user_data.clone())
        };
        assert_eq!(
            ud(json!("#cloud-config\n")),
            Some(Bytes::from_static(b"#cloud-config\n"))
        );
        assert_eq!(ud(json!("")), None);
        assert_eq!(ud(json!(null)), None);
        assert_eq!(
            ud(json!({"b": 1, "a": [1, "x"]})),
            Some(Bytes::from_static(b"{\"b\": 1, \"a\": [1, \"x\"]}"))
        );
    }
}
