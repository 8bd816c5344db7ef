//! OpenStack `network_data.json` → cloud-init network config version 1, for the NoCloud
//! tree's `network-config`. It is what cloud-init's own OpenStack converter
//! (`cloudinit.sources.helpers.openstack.convert_net_json`) makes of the same document on
//! the node, with one difference: that converter names each NIC after the device the node
//! has with its MAC, which only the node knows. Here a NIC takes the link's `name` when it
//! has one, else `eth0`, `eth1`, … in the order of the links; cloud-init finds it by its
//! MAC and gives it that name. Bonds are `bond0`, `bond1`, … and a VLAN is
//! `<parent>.<vlan id>`, as that converter names them.

use std::collections::HashMap;

use serde_json::{json, Map, Value};

/// The network keys a v1 subnet takes over (`convert_net_json`'s `valid_keys["subnet"]`).
const SUBNET_KEYS: &[&str] = &[
    "type",
    "address",
    "netmask",
    "broadcast",
    "metric",
    "gateway",
    "pointopoint",
    "scope",
    "dns_nameservers",
    "dns_search",
    "routes",
];

/// The link keys a v1 device takes over (`valid_keys["physical"]`).
const DEVICE_KEYS: &[&str] = &["name", "type", "mac_address", "subnets", "params", "mtu"];

/// The v1 config of `network_data`; `None` when it names no link (cloud-init then uses
/// its own fallback rather than a config that configures nothing).
pub(super) fn v1(network_data: &Value) -> Option<Value> {
    let links: Vec<&Map<String, Value>> = network_data
        .get("links")?
        .as_array()?
        .iter()
        .filter_map(Value::as_object)
        .collect();
    if links.is_empty() {
        return None;
    }
    let networks: Vec<&Map<String, Value>> = list(network_data, "networks");
    let names = device_names(&links);
    let mut config: Vec<Value> = links
        .iter()
        .map(|link| Value::Object(device(link, &networks, &names)))
        .collect();
    for service in list(network_data, "services") {
        let mut s = service.clone();
        s.insert("type".into(), json!("nameserver"));
        config.push(Value::Object(s));
    }
    Some(json!({"version": 1, "config": config}))
}

fn list<'a>(doc: &'a Value, key: &str) -> Vec<&'a Map<String, Value>> {
    doc.get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_object).collect())
        .unwrap_or_default()
}

fn id_of(link: &Map<String, Value>) -> String {
    match link.get("id") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

fn kind(link: &Map<String, Value>) -> &str {
    link.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Each link's device name, by link id.
fn device_names(links: &[&Map<String, Value>]) -> HashMap<String, String> {
    let mut names = HashMap::new();
    let (mut nics, mut bonds) = (0, 0);
    for link in links {
        let name = match kind(link) {
            "bond" => {
                bonds += 1;
                format!("bond{}", bonds - 1)
            }
            "vlan" => continue,
            _ => {
                nics += 1;
                match link.get("name").and_then(Value::as_str) {
                    Some(n) if !n.is_empty() => n.to_string(),
                    _ => format!("eth{}", nics - 1),
                }
            }
        };
        names.insert(id_of(link), name);
    }
    // VLANs on VLANs name their parent first: resolve until nothing changes.
    for _ in 0..links.len() {
        for link in links.iter().filter(|l| kind(l) == "vlan") {
            let parent = link.get("vlan_link").map(scalar).unwrap_or_default();
            let parent = names.get(&parent).cloned().unwrap_or(parent);
            let vid = link.get("vlan_id").map(scalar).unwrap_or_default();
            names.insert(id_of(link), format!("{parent}.{vid}"));
        }
    }
    names
}

fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn mac_of(link: &Map<String, Value>, key: &str) -> Option<Value> {
    link.get(key)
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .map(|m| json!(m.to_lowercase()))
}

/// One link as a v1 device, with the subnets of the networks on it.
fn device(
    link: &Map<String, Value>,
    networks: &[&Map<String, Value>],
    names: &HashMap<String, String>,
) -> Map<String, Value> {
    let id = id_of(link);
    let mut cfg: Map<String, Value> = link
        .iter()
        .filter(|(k, _)| DEVICE_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let name = names.get(&id).cloned().unwrap_or_else(|| id.clone());
    let mut subnets = Vec::new();
    for net in networks
        .iter()
        .filter(|n| n.get("link").map(scalar) == Some(id.clone()))
    {
        subnets.push(Value::Object(subnet(net, &mut cfg)));
    }
    cfg.insert("subnets".into(), Value::Array(subnets));
    match kind(link) {
        "bond" => {
            let params: Map<String, Value> = link
                .iter()
                .filter(|(k, _)| k.starts_with("bond") && k.as_str() != "bond_links")
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            if let Some(mac) = mac_of(link, "ethernet_mac_address") {
                cfg.insert("mac_address".into(), mac);
            }
            cfg.insert("params".into(), Value::Object(params));
            let members: Vec<Value> = link
                .get("bond_links")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|m| json!(names.get(&scalar(m)).cloned().unwrap_or(scalar(m))))
                        .collect()
                })
                .unwrap_or_default();
            cfg.insert("bond_interfaces".into(), Value::Array(members));
        }
        "vlan" => {
            let parent = link.get("vlan_link").map(scalar).unwrap_or_default();
            cfg.insert(
                "vlan_id".into(),
                link.get("vlan_id").cloned().unwrap_or(Value::Null),
            );
            if let Some(mac) = mac_of(link, "vlan_mac_address") {
                cfg.insert("mac_address".into(), mac);
            }
            cfg.insert(
                "vlan_link".into(),
                json!(names.get(&parent).cloned().unwrap_or(parent)),
            );
        }
        _ => {
            cfg.insert("type".into(), json!("physical"));
            if let Some(mac) = mac_of(link, "ethernet_mac_address") {
                cfg.insert("mac_address".into(), mac);
            }
        }
    }
    cfg.insert("name".into(), json!(name));
    cfg
}

/// One network as a v1 subnet (`accept-ra` goes on the device, as cloud-init puts it).
fn subnet(net: &Map<String, Value>, cfg: &mut Map<String, Value>) -> Map<String, Value> {
    let mut s: Map<String, Value> = net
        .iter()
        .filter(|(k, _)| SUBNET_KEYS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let address = || net.get("ip_address").cloned().unwrap_or(Value::Null);
    let kind = net.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "ipv4_dhcp" => {
            s.insert("type".into(), json!("dhcp4"));
        }
        "ipv6_dhcp" => {
            s.insert("type".into(), json!("dhcp6"));
        }
        "ipv6_slaac" | "ipv6_dhcpv6-stateless" | "ipv6_dhcpv6-stateful" => {
            s.insert("type".into(), json!(kind));
        }
        "ipv4" | "static" => {
            s.insert("type".into(), json!("static"));
            s.insert("address".into(), address());
        }
        "ipv6" | "static6" => {
            cfg.insert("accept-ra".into(), json!(false));
            s.insert("type".into(), json!("static6"));
            s.insert("address".into(), address());
        }
        _ => {}
    }
    if matches!(kind, "ipv6_dhcpv6-stateful" | "ipv6_dhcp") {
        cfg.insert("accept-ra".into(), json!(true));
    }
    if kind == "ipv4" {
        s.insert("ipv4".into(), json!(true));
    }
    if kind == "ipv6" {
        s.insert("ipv6".into(), json!(true));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bond_and_vlan_are_named_as_cloud_init_names_them() {
        let nd = json!({
            "links": [
                {"id": "p0", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:AA", "mtu": 9000},
                {"id": "p1", "type": "phy", "ethernet_mac_address": "52:54:00:00:00:bb"},
                {"id": "b", "type": "bond", "bond_links": ["p0", "p1"], "bond_mode": "802.3ad",
                 "bond_miimon": 100, "ethernet_mac_address": "52:54:00:00:00:aa"},
                {"id": "v", "type": "vlan", "vlan_link": "b", "vlan_id": 120,
                 "vlan_mac_address": "52:54:00:00:00:aa"},
            ],
            "networks": [
                {"id": "n0", "type": "ipv4", "link": "v", "ip_address": "192.0.2.10",
                 "netmask": "255.255.255.0", "routes": [], "network_id": "x"},
                {"id": "n1", "type": "ipv6", "link": "b", "ip_address": "2001:db8::1",
                 "netmask": "ffff:ffff:ffff:ffff::"},
                {"id": "n2", "type": "ipv4_dhcp", "link": "p1"},
            ],
            "services": [{"type": "dns", "address": "192.0.2.53"}],
        });
        let cfg = v1(&nd).unwrap();
        assert_eq!(
            cfg,
            json!({"version": 1, "config": [
                {"type": "physical", "mtu": 9000, "subnets": [], "mac_address": "52:54:00:00:00:aa", "name": "eth0"},
                {"type": "physical", "subnets": [{"type": "dhcp4"}], "mac_address": "52:54:00:00:00:bb", "name": "eth1"},
                {"type": "bond", "accept-ra": false,
                 "subnets": [{"type": "static6", "netmask": "ffff:ffff:ffff:ffff::", "address": "2001:db8::1", "ipv6": true}],
                 "mac_address": "52:54:00:00:00:aa", "params": {"bond_mode": "802.3ad", "bond_miimon": 100},
                 "bond_interfaces": ["eth0", "eth1"], "name": "bond0"},
                {"type": "vlan",
                 "subnets": [{"type": "static", "netmask": "255.255.255.0", "routes": [], "address": "192.0.2.10", "ipv4": true}],
                 "vlan_id": 120, "mac_address": "52:54:00:00:00:aa", "vlan_link": "bond0", "name": "bond0.120"},
                {"type": "nameserver", "address": "192.0.2.53"},
            ]})
        );
    }

    #[test]
    fn a_named_link_keeps_its_name_and_nothing_to_configure_is_none() {
        let nd = json!({"links": [{"id": "x", "type": "ethernet", "name": "eno1",
                                   "ethernet_mac_address": "52:54:00:00:00:01"}]});
        assert_eq!(v1(&nd).unwrap()["config"][0]["name"], "eno1");
        assert_eq!(v1(&json!({"links": [], "networks": []})), None);
        assert_eq!(v1(&json!({})), None);
        assert_eq!(v1(&json!({"links": "x"})), None);
    }
}
