//! The node view: what the metadata handler needs from one Ironic node, extracted once when
//! the index is built so that requests never re-parse Ironic's JSON.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use serde_json::{Map, Value};

use super::configdrive::DriveContents;
use super::doc::{self, Doc};
use crate::ironic::model::{Node, NodeExtra, Raw};
use crate::reply::Refusal;
use crate::versions;

/// Ironic replaces secrets it will not show with this literal (`node_sanitize`).
pub(crate) const MASKED: &str = "******";

/// The configdrive as stored in `instance_info.configdrive`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ConfigDrive {
    /// The node was deployed without one.
    Absent,
    /// Readable contents (the JSON dict form, or a decoded image).
    Contents(Arc<DriveContents>),
    /// Present but not usable; the reason is logged and the files it holds answer 404.
    Unreadable(String),
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NodeView {
    pub(crate) uuid: String,
    pub(crate) name: Option<String>,
    pub(crate) provision_state: Option<Arc<str>>,
    pub(crate) configdrive: ConfigDrive,
    /// `node.network_data` when it is an object with content.
    pub(crate) static_network_data: Option<Doc>,
    /// Network data generated from the node's ports and portgroups.
    pub(crate) generated_network_data: Option<Doc>,
    /// The static addresses of `node.network_data`, which the operator writes through
    /// Ironic's node API; sorted, deduplicated.
    pub(crate) node_addresses: Vec<IpAddr>,
    /// The static addresses of the configdrive's `network_data`, which whoever deploys the
    /// node writes (in multi-tenant Ironic a lessee or owner), and that the node's own data
    /// does not already claim; sorted, deduplicated.
    pub(crate) drive_addresses: Vec<IpAddr>,
    /// The Ironic project the node's deployments belong to: its lessee, else its owner.
    pub(crate) project: Option<Arc<str>>,
    /// The MACs of the node's Ironic ports and portgroups, sorted, deduplicated.
    pub(crate) macs: Vec<macaddr::MacAddr6>,
    /// `instance_info.project_id`, else the node's lessee, else its owner.
    pub(crate) project_id: Option<Arc<str>>,
    /// `instance_info.flavor_name`, else the node's resource class.
    pub(crate) instance_type: Option<Arc<str>>,
    /// `instance_info.image_source`.
    pub(crate) image_source: Option<Arc<str>>,
    /// What a signed identity token states about the node besides its UUID and name.
    pub(crate) facts: IdentityFacts,
    /// Ironic's `updated_at` of the node, in microseconds: tells a change from a repeat.
    pub(crate) updated_at: Option<i64>,
    /// `properties.cpu_arch`.
    pub(crate) cpu_arch: Option<Arc<str>>,
    /// `provision_updated_at`: for an active node, when its deployment finished.
    pub(crate) provisioned_at: Option<String>,
    /// What replicas of the service wrote back to the node's `extra` (used only when
    /// write-back is on).
    pub(crate) written_back: Option<Arc<NodeExtra>>,
    /// Documents rendered on first request (empty until then).
    pub(crate) render_cache: RenderCache,
}

/// Ironic's record of who holds the node and where it runs, as identity tokens state it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct IdentityFacts {
    pub(crate) instance_uuid: Option<String>,
    pub(crate) owner: Option<Arc<str>>,
    pub(crate) lessee: Option<Arc<str>>,
    pub(crate) conductor_group: Option<Arc<str>>,
    pub(crate) resource_class: Option<Arc<str>>,
}

/// A rendered `meta_data.json` and where its `random_seed` value sits.
#[derive(Debug, Clone)]
pub(crate) struct MetaTemplate {
    pub(crate) body: Bytes,
    pub(crate) seed_at: Option<usize>,
    /// Weak entity tag of the document without its seed.
    pub(crate) etag: std::sync::Arc<str>,
}

/// Entity tags kept per node at most: one per document path asked (versions times files).
const MAX_TAGS: usize = 160;

/// What a node's cache holds once it is first asked.
struct Slots {
    /// `meta_data.json` templates, one per OpenStack version.
    meta: Box<[OnceLock<Result<MetaTemplate, Refusal>>]>,
    /// Entity tags of documents that depend on the node alone, by path.
    tags: Mutex<Vec<(Box<str>, Arc<str>)>>,
}

/// Per-node cache of rendered documents and entity tags, allocated when the node is first
/// asked (a node never asked costs one pointer). A node's documents change only with a
/// new view, which starts with an empty cache. It never takes part in comparisons and is
/// not cloned.
#[derive(Default)]
pub(crate) struct RenderCache(OnceLock<Box<Slots>>);

impl RenderCache {
    fn slots(&self) -> &Slots {
        self.0.get_or_init(|| {
            Box::new(Slots {
                meta: (0..versions::OPENSTACK.len())
                    .map(|_| OnceLock::new())
                    .collect(),
                tags: Mutex::new(Vec::new()),
            })
        })
    }

    /// The `meta_data.json` template of `version`, rendered by `render` the first time.
    pub(crate) fn meta_data(
        &self,
        version: &str,
        render: impl FnOnce() -> Result<MetaTemplate, Refusal>,
    ) -> Result<&MetaTemplate, Refusal> {
        let Some(i) = versions::OPENSTACK.iter().position(|v| *v == version) else {
            return Err(Refusal::NotFound);
        };
        self.slots().meta[i]
            .get_or_init(render)
            .as_ref()
            .map_err(|r| *r)
    }

    /// The entity tag of the document at `path`, computed by `tag` the first time it is
    /// asked of this view (the document must depend on the node alone).
    pub(crate) fn entity_tag(&self, path: &str, tag: impl FnOnce() -> Arc<str>) -> Arc<str> {
        let mut tags = self
            .slots()
            .tags
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, t)) = tags.iter().find(|(p, _)| **p == *path) {
            return t.clone();
        }
        let t = tag();
        if tags.len() < MAX_TAGS {
            tags.push((path.into(), t.clone()));
        }
        t
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
pub(crate) type DriveCache = HashMap<(String, usize, u64), Result<Arc<DriveContents>, String>>;

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
    #[cfg(test)]
    fn from_ironic(node: &Node) -> NodeView {
        NodeView::from_ironic_cached(node, &mut DriveCache::new(), &mut DriveCache::new())
    }

    /// The view of `node`, taking decoded images from `old` and recording the ones used in
    /// `new`.
    pub(crate) fn from_ironic_cached(
        node: &Node,
        old: &mut DriveCache,
        new: &mut DriveCache,
    ) -> NodeView {
        let configdrive = configdrive_of(node, old, new);
        let (mut node_addresses, mut drive_addresses) = (Vec::new(), Vec::new());
        let drive_network = match &configdrive {
            ConfigDrive::Contents(c) => c.network_data.as_ref(),
            _ => None,
        };
        if let Some(nd) = drive_network {
            collect_addresses(&nd.value(), &mut drive_addresses);
        }
        let static_value = node.network_data.as_ref().map(Raw::value);
        let static_network_data = match &static_value {
            Some(v @ Value::Object(m)) if !m.is_empty() => {
                collect_addresses(v, &mut node_addresses);
                let doc = Doc::new(v);
                // Often the very document the configdrive holds: keep one copy.
                Some(match drive_network {
                    Some(same) if *same == doc => same.clone(),
                    _ => doc,
                })
            }
            _ => None,
        };
        node_addresses.sort();
        node_addresses.dedup();
        drive_addresses.sort();
        drive_addresses.dedup();
        drive_addresses.retain(|a| node_addresses.binary_search(a).is_err());
        let info = |k: &str| {
            node.instance_info
                .get(k)
                .and_then(Raw::string)
                .filter(|s| !s.is_empty() && *s != MASKED)
        };
        let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
        let common = |s: &Option<String>| s.as_deref().filter(|s| !s.is_empty()).map(shared);
        NodeView {
            uuid: node.uuid.clone(),
            name: node.name.clone().filter(|n| !n.is_empty()),
            provision_state: node.provision_state.as_deref().map(shared),
            configdrive,
            static_network_data,
            generated_network_data: None,
            node_addresses,
            drive_addresses,
            project: common(&node.lessee).or_else(|| common(&node.owner)),
            macs: Vec::new(),
            project_id: info("project_id")
                .map(|s| shared(&s))
                .or_else(|| common(&node.lessee))
                .or_else(|| common(&node.owner)),
            instance_type: info("flavor_name")
                .map(|s| shared(&s))
                .or_else(|| common(&node.resource_class)),
            image_source: info("image_source").map(|s| shared(&s)),
            facts: IdentityFacts {
                instance_uuid: nonempty(&node.instance_uuid),
                owner: common(&node.owner),
                lessee: common(&node.lessee),
                conductor_group: common(&node.conductor_group),
                resource_class: common(&node.resource_class),
            },
            updated_at: crate::ironic::model::micros(node.updated_at.as_deref()),
            cpu_arch: node
                .properties
                .cpu_arch
                .as_ref()
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(shared),
            provisioned_at: nonempty(&node.provision_updated_at),
            written_back: (!node.extra.is_empty()).then(|| Arc::new(node.extra.clone())),
            render_cache: RenderCache::default(),
        }
    }

    /// Identifies this deployment of the node (instance and provision time): state kept
    /// per deployment, like the password, is forgotten when the node is redeployed. The
    /// same as [`Node::deployment`] of the node it was built from; made when asked, not
    /// kept (a hundred bytes a node).
    pub(crate) fn deployment(&self) -> String {
        format!(
            "{}|{}",
            self.facts.instance_uuid.as_deref().unwrap_or(""),
            self.provisioned_at.as_deref().unwrap_or("")
        )
    }

    /// `meta_data.json` contents with Ironic's defaults applied (`build_configdrive`:
    /// `uuid` defaults to the node UUID, `name` to the node name when it has one).
    /// `None` when the configdrive exists but cannot be read.
    pub(crate) fn meta_data(&self) -> Option<Map<String, Value>> {
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

    pub(crate) fn drive(&self) -> Option<&DriveContents> {
        match &self.configdrive {
            ConfigDrive::Contents(c) => Some(c),
            _ => None,
        }
    }

    /// The network configuration the instance should apply: the one it was deployed with,
    /// else Ironic's static one, else one generated from its ports.
    pub(crate) fn network_data(&self) -> Option<&Doc> {
        self.drive()
            .and_then(|c| c.network_data.as_ref())
            .or(self.static_network_data.as_ref())
            .or(self.generated_network_data.as_ref())
    }
}

/// `instance_info.configdrive` in whichever form Ironic holds it.
fn configdrive_of(node: &Node, old: &mut DriveCache, new: &mut DriveCache) -> ConfigDrive {
    let value = node.instance_info.get("configdrive").map(Raw::value);
    match value.as_ref() {
        None | Some(Value::Null) => ConfigDrive::Absent,
        Some(Value::String(s)) if s.is_empty() => ConfigDrive::Absent,
        Some(Value::String(s)) if s == MASKED => ConfigDrive::Unreadable(
            "instance_info.configdrive is masked by Ironic; grant the service account \
             Ironic's show_instance_secrets policy"
                .into(),
        ),
        Some(Value::String(s)) if s.contains("://") => ConfigDrive::Unreadable(
            "configdrive URL could not be downloaded (or the source does not download URLs)".into(),
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
        Some(v @ (Value::Object(_) | Value::Array(_))) => Some(Bytes::from(doc::to_vec(v))),
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

/// Most entries kept by [`shared`]; past it the table starts again (sharing is lost for a
/// while, never correctness).
const MAX_SHARED: usize = 4096;

/// One copy of a string many nodes hold (states, projects, architectures, image URLs,
/// resource classes): at 100,000 nodes each copy saved is a heap block per node.
fn shared(s: &str) -> Arc<str> {
    static TABLE: std::sync::LazyLock<std::sync::Mutex<std::collections::HashSet<Arc<str>>>> =
        std::sync::LazyLock::new(Default::default);
    let mut table = TABLE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(hit) = table.get(s) {
        return hit.clone();
    }
    if table.len() >= MAX_SHARED {
        table.clear();
    }
    let new: Arc<str> = Arc::from(s);
    table.insert(new.clone());
    new
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: Value) -> Node {
        serde_json::from_str(&v.to_string()).unwrap()
    }

    #[test]
    fn entity_tags_are_computed_once_per_view_and_path() {
        let cache = RenderCache::default();
        let computed = std::cell::Cell::new(0);
        let tag = |t: &str| {
            computed.set(computed.get() + 1);
            Arc::<str>::from(t)
        };
        let a = "openstack/latest/network_data.json";
        assert_eq!(&*cache.entity_tag(a, || tag("\"1\"")), "\"1\"");
        assert_eq!(&*cache.entity_tag(a, || tag("\"2\"")), "\"1\"");
        assert_eq!(
            &*cache.entity_tag("nocloud/meta-data", || tag("\"3\"")),
            "\"3\""
        );
        assert_eq!(computed.get(), 2);
        // A new view (its cache starts empty, also when cloned) computes its own.
        assert_eq!(&*cache.clone().entity_tag(a, || tag("\"4\"")), "\"4\"");
        // Past the bound, tags are computed on every ask and nothing more is kept.
        for i in 0..MAX_TAGS {
            cache.entity_tag(&format!("p{i}"), || tag("\"x\""));
        }
        let before = computed.get();
        cache.entity_tag("past/the/bound", || tag("\"5\""));
        cache.entity_tag("past/the/bound", || tag("\"5\""));
        assert_eq!(computed.get(), before + 2);
    }

    #[test]
    fn a_views_deployment_is_its_nodes() {
        for n in [
            json!({"uuid": "u1", "instance_uuid": "i1",
                   "provision_updated_at": "2026-01-01T00:00:00+00:00"}),
            json!({"uuid": "u1", "instance_uuid": "", "provision_updated_at": null}),
            json!({"uuid": "u1"}),
        ] {
            let n = node(n);
            assert_eq!(NodeView::from_ironic(&n).deployment(), n.deployment());
        }
        let a = node(json!({"uuid": "u1", "instance_uuid": "i1", "provision_updated_at": "t1"}));
        let b = node(json!({"uuid": "u1", "instance_uuid": "i1", "provision_updated_at": "t2"}));
        assert_ne!(
            NodeView::from_ironic(&a).deployment(),
            NodeView::from_ironic(&b).deployment()
        );
    }

    #[test]
    fn addresses_are_kept_by_who_wrote_them() {
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
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(v.node_addresses, vec![ip("192.0.2.5")]);
        // 192.0.2.5 is the node's own already: the configdrive adds only its other address.
        assert_eq!(v.drive_addresses, vec![ip("2001:db8::5")]);
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
