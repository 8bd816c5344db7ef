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
pub struct Raw(Box<RawValue>);

impl Raw {
    pub fn new(value: &Value) -> Raw {
        // Serialising a `Value` cannot fail.
        Raw(serde_json::value::to_raw_value(value).expect("a JSON value serialises"))
    }

    /// The parsed value (`Null` if the text is not JSON, which serde_json never produces).
    pub fn value(&self) -> Value {
        serde_json::from_str(self.0.get()).unwrap_or(Value::Null)
    }

    /// The value when it is a JSON string.
    pub fn string(&self) -> Option<String> {
        serde_json::from_str::<String>(self.0.get()).ok()
    }
}

impl PartialEq for Raw {
    fn eq(&self, other: &Raw) -> bool {
        self.value() == other.value()
    }
}

/// `instance_info`: free-form; `configdrive` inside it is a dict, a base64 ISO or a URL.
pub type InstanceInfo = BTreeMap<String, Raw>;

/// One Ironic node. Fields that older microversions do not return are optional.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub uuid: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub provision_state: Option<String>,
    #[serde(default)]
    pub instance_uuid: Option<String>,
    #[serde(default, deserialize_with = "null_as_default")]
    pub instance_info: InstanceInfo,
    /// Static network configuration (API 1.66+), same schema as `network_data.json`.
    #[serde(default)]
    pub network_data: Option<Raw>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub lessee: Option<String>,
    #[serde(default)]
    pub resource_class: Option<String>,
    /// Changes on every provision state change: tells one deployment from the next.
    #[serde(default)]
    pub provision_updated_at: Option<String>,
}

/// One Ironic port (a NIC of a node).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Port {
    pub uuid: String,
    pub address: String,
    #[serde(default)]
    pub node_uuid: Option<String>,
    #[serde(default)]
    pub portgroup_uuid: Option<String>,
    #[serde(default)]
    pub pxe_enabled: Option<bool>,
    #[serde(default)]
    pub physical_network: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty_map")]
    pub local_link_connection: Map<String, Value>,
    #[serde(default, deserialize_with = "null_as_empty_map")]
    pub extra: Map<String, Value>,
}

/// One Ironic portgroup (a bond of ports).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Portgroup {
    pub uuid: String,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub node_uuid: Option<String>,
    #[serde(default)]
    pub mode: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty_map")]
    pub properties: Map<String, Value>,
    #[serde(default, deserialize_with = "null_as_empty_map")]
    pub extra: Map<String, Value>,
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

/// A whole inventory: the three collections, each exactly as Ironic lists it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inventory {
    pub nodes: Vec<Node>,
    #[serde(default)]
    pub ports: Vec<Port>,
    #[serde(default)]
    pub portgroups: Vec<Portgroup>,
}
