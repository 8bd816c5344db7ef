//! Ironic's own JSON shapes, as `GET /v1/nodes?detail=True`, `/v1/ports?detail=True` and
//! `/v1/portgroups?detail=True` return them. Only the fields the service reads are named;
//! everything else Ironic sends is ignored, so newer Ironic releases keep working.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// A JSON value kept as its text until it is needed. A sweep holds every node Ironic
/// returns at once: free-form fields (`instance_info` with a configdrive, `network_data`)
/// take a few bytes per byte of JSON this way, against tens for a parsed tree.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Raw(Box<RawValue>);

impl Raw {
    pub(crate) fn new(value: &Value) -> Raw {
        // Serialising a `Value` cannot fail.
        Raw(serde_json::value::to_raw_value(value).expect("a JSON value serialises"))
    }

    /// The parsed value (`Null` if the text is not JSON, which serde_json never produces).
    pub(crate) fn value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }

    /// The value when it is a JSON string.
    pub(crate) fn string(&self) -> Option<String> {
        serde_json::from_str::<String>(self.0.get()).ok()
    }
}

impl PartialEq for Raw {
    fn eq(&self, other: &Raw) -> bool {
        self.value() == other.value()
    }
}

/// `instance_info`: free-form; `configdrive` inside it is a dict, a base64 ISO or a URL.
pub(crate) type InstanceInfo = BTreeMap<String, Raw>;

/// One Ironic node. Fields that older microversions do not return are optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Node {
    pub(crate) uuid: String,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) provision_state: Option<String>,
    #[serde(default)]
    pub(crate) instance_uuid: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub(crate) instance_info: InstanceInfo,
    /// Static network configuration (API 1.66+), same schema as `network_data.json`.
    #[serde(default)]
    pub(crate) network_data: Option<Raw>,
    #[serde(default)]
    pub(crate) owner: Option<String>,
    #[serde(default)]
    pub(crate) lessee: Option<String>,
    #[serde(default)]
    pub(crate) resource_class: Option<String>,
    /// The conductor group the node belongs to (API 1.46+).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) conductor_group: Option<String>,
    /// Changes on every provision state change: tells one deployment from the next.
    #[serde(default)]
    pub(crate) provision_updated_at: Option<String>,
    /// When the node row last changed (any update, even a lock taken and released).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created_at: Option<String>,
    /// The `properties` the service reads (the EC2 identity document's architecture).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "NodeProperties::is_empty"
    )]
    pub(crate) properties: NodeProperties,
    /// The keys of `extra` the service writes back to Ironic, when told to.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "NodeExtra::is_empty"
    )]
    pub(crate) extra: NodeExtra,
}

impl Node {
    /// Identifies this deployment of the node (instance and provision time): state kept
    /// per deployment, like the password, is forgotten when the node is redeployed.
    pub(crate) fn deployment(&self) -> String {
        format!(
            "{}|{}",
            self.instance_uuid.as_deref().unwrap_or(""),
            self.provision_updated_at.as_deref().unwrap_or("")
        )
    }
}

/// The node `properties` the service reads; the others are ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeProperties {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cpu_arch: Option<Value>,
}

impl NodeProperties {
    fn is_empty(&self) -> bool {
        self.cpu_arch.is_none()
    }
}

/// The keys of a node's `extra` that replicas of the service share through Ironic (the
/// instance password and the check-in); any other key is ignored. Each is kept as its
/// JSON text, and only up to [`MAX_SHARED`] bytes: whoever may update the node in Ironic
/// writes them, and every replica holds them for every node.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct NodeExtra {
    #[serde(
        default,
        deserialize_with = "bounded",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) ironic_metadata_password: Option<Raw>,
    #[serde(
        default,
        deserialize_with = "bounded",
        skip_serializing_if = "Option::is_none"
    )]
    pub(crate) ironic_metadata_checkin: Option<Raw>,
}

/// Largest shared `extra` value kept, in bytes of JSON (replicas write at most 4 KiB).
pub(crate) const MAX_SHARED: usize = 8 * 1024;

/// A shared `extra` value as compact JSON text; a larger one than [`MAX_SHARED`] reads as
/// none. (Read through a `Value`: `extra` is read through `lenient`, whose buffering a
/// `RawValue` cannot be read from.)
fn bounded<'de, D>(d: D) -> Result<Option<Raw>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<Value>::deserialize(d)?
        .map(|v| Raw::new(&v))
        .filter(|r| r.0.get().len() <= MAX_SHARED))
}

impl NodeExtra {
    pub(crate) fn is_empty(&self) -> bool {
        self.ironic_metadata_password.is_none() && self.ironic_metadata_checkin.is_none()
    }
}

/// An object of the shape `T` reads; anything else (null, another JSON type, a key of the
/// wrong type) reads as `T`'s default: one odd node must not fail a whole listing.
fn lenient<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Loose<T> {
        Read(T),
        Other(serde::de::IgnoredAny),
    }
    Ok(match Option::<Loose<T>>::deserialize(d)? {
        Some(Loose::Read(t)) => t,
        Some(Loose::Other(_)) | None => T::default(),
    })
}

/// One Ironic port (a NIC of a node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Port {
    pub(crate) uuid: String,
    pub(crate) address: String,
    #[serde(default)]
    pub(crate) node_uuid: Option<String>,
    #[serde(default)]
    pub(crate) portgroup_uuid: Option<String>,
    #[serde(default)]
    pub(crate) pxe_enabled: Option<bool>,
    #[serde(default)]
    pub(crate) physical_network: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty_map")]
    pub(crate) local_link_connection: Map<String, Value>,
    #[serde(default, deserialize_with = "null_as_empty_map")]
    pub(crate) extra: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created_at: Option<String>,
}

/// One Ironic portgroup (a bond of ports).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Portgroup {
    pub(crate) uuid: String,
    #[serde(default)]
    pub(crate) address: Option<String>,
    #[serde(default)]
    pub(crate) name: Option<String>,
    #[serde(default)]
    pub(crate) node_uuid: Option<String>,
    #[serde(default)]
    pub(crate) mode: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty_map")]
    pub(crate) properties: Map<String, Value>,
    #[serde(default, deserialize_with = "null_as_empty_map")]
    pub(crate) extra: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) created_at: Option<String>,
}

/// Ironic sends `null` for unset object fields on some releases; treat it as empty.
fn null_as_empty_map<'de, D>(d: D) -> Result<Map<String, Value>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    Ok(Option::<Map<String, Value>>::deserialize(d)?.unwrap_or_default())
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// An Ironic timestamp (`2026-11-30T10:19:50.799565+00:00`, the fraction left out when
/// zero, whole seconds on MySQL) in microseconds since the epoch.
pub(crate) fn micros(ts: Option<&str>) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(ts?.trim())
        .ok()
        .map(|t| t.timestamp_micros())
}

/// A whole inventory: the three collections, each exactly as Ironic lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Inventory {
    pub(crate) nodes: Vec<Node>,
    #[serde(default)]
    pub(crate) ports: Vec<Port>,
    #[serde(default)]
    pub(crate) portgroups: Vec<Portgroup>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node_with_checkin() -> Node {
        serde_json::from_str(
            r#"{"uuid": "u", "extra": {"ironic_metadata_checkin": {"deployment": "d", "last_at": "t"}}}"#,
        )
        .unwrap()
    }

    #[test]
    fn odd_properties_and_extra_never_fail_a_node() {
        let node: Node = serde_json::from_str(
            r#"{"uuid": "u", "properties": {"cpu_arch": "aarch64", "memory_mb": 1},
                "extra": {"ironic_metadata_checkin": {"deployment": "d"}, "other": [1]}}"#,
        )
        .unwrap();
        assert_eq!(
            node.properties.cpu_arch,
            Some(Value::String("aarch64".into()))
        );
        assert_eq!(
            node.extra.ironic_metadata_checkin.map(|r| r.value()),
            Some(serde_json::json!({"deployment": "d"}))
        );
        // Shared values are bounded: a larger one is not kept at all.
        let big = serde_json::json!({"uuid": "u", "extra": {
            "ironic_metadata_checkin": {"deployment": "x".repeat(MAX_SHARED)},
            "ironic_metadata_password": {"deployment": "d", "password": "p"}}});
        let node: Node = serde_json::from_value(big).unwrap();
        assert_eq!(node.extra.ironic_metadata_checkin, None);
        assert_eq!(
            node.extra.ironic_metadata_password.map(|r| r.value()),
            Some(serde_json::json!({"deployment": "d", "password": "p"}))
        );
        // Kept through a snapshot's round trip.
        let text = serde_json::to_string(&node_with_checkin()).unwrap();
        let back: Node = serde_json::from_str(&text).unwrap();
        assert_eq!(back, node_with_checkin());
        for odd in [
            r#"{"uuid": "u", "properties": null, "extra": "text"}"#,
            r#"{"uuid": "u", "properties": "x86_64", "extra": 5}"#,
        ] {
            let node: Node = serde_json::from_str(odd).unwrap();
            assert_eq!((node.properties, node.extra), Default::default(), "{odd}");
        }
    }
}
