//! `network_data.json` generated from Ironic ports and portgroups, for nodes deployed
//! without network data: a `phy` link per port, a `bond` link per portgroup, a `vlan` link
//! where the port or portgroup carries one (`extra.vlan_id`), and a DHCP network on every
//! top-level link. Link ids follow Ironic's own generator (`iface0`, ...); the document
//! satisfies the network_data schema Ironic and Nova enforce.

use std::net::IpAddr;

use serde_json::{json, Map, Value};

use crate::ironic::model::{Port, Portgroup};

/// Ironic's default portgroup mode (`[DEFAULT]default_portgroup_mode`).
const DEFAULT_BOND_MODE: &str = "active-backup";
const BOND_MODES: &[&str] = &[
    "802.3ad",
    "balance-rr",
    "active-backup",
    "balance-xor",
    "broadcast",
    "balance-tlb",
    "balance-alb",
];

fn vlan_of(extra: &Map<String, Value>) -> Option<u64> {
    let v = extra.get("vlan_id").or_else(|| extra.get("vlan"))?;
    let id = v
        .as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))?;
    (1..=4094).contains(&id).then_some(id)
}

fn mtu_of(extra: &Map<String, Value>) -> Option<u64> {
    let v = extra.get("mtu")?;
    let mtu = v
        .as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))?;
    (68..=65535).contains(&mtu).then_some(mtu)
}

/// The `bond` link of a portgroup over its member ports' links.
fn bond_link(
    id: &str,
    pg: &Portgroup,
    members: &[&Port],
    link_of: &dyn Fn(&str) -> Option<String>,
) -> Value {
    let mac = pg
        .address
        .clone()
        .unwrap_or_else(|| members[0].address.clone())
        .to_lowercase();
    let mode = pg
        .mode
        .clone()
        .filter(|m| BOND_MODES.contains(&m.as_str()))
        .unwrap_or_else(|| DEFAULT_BOND_MODE.into());
    let mut link = json!({
        "id": id, "type": "bond", "ethernet_mac_address": mac, "bond_mode": mode,
        "bond_links": members.iter().filter_map(|p| link_of(&p.uuid)).collect::<Vec<_>>(),
    });
    // Nova's Ironic driver passes portgroup properties as bond_<option>.
    for (k, v) in &pg.properties {
        let key = if k.starts_with("bond_") {
            k.clone()
        } else {
            format!("bond_{k}")
        };
        link[key] = v.clone();
    }
    if let Some(mtu) = mtu_of(&pg.extra) {
        link["mtu"] = json!(mtu);
    }
    link
}

/// `None` when the node has no port.
pub(crate) fn generate(
    ports: &[&Port],
    portgroups: &[&Portgroup],
    dns: &[IpAddr],
) -> Option<Value> {
    if ports.is_empty() {
        return None;
    }
    let mut links: Vec<Value> = Vec::new();
    let mut networks: Vec<Value> = Vec::new();
    let mut port_ids: Vec<(String, String)> = Vec::new(); // port uuid -> link id
    for (i, p) in ports.iter().enumerate() {
        let id = format!("iface{i}");
        let mut link =
            json!({"id": id, "type": "phy", "ethernet_mac_address": p.address.to_lowercase()});
        if let Some(mtu) = mtu_of(&p.extra) {
            link["mtu"] = json!(mtu);
        }
        links.push(link);
        port_ids.push((p.uuid.clone(), id));
    }
    let link_of = |uuid: &str| {
        port_ids
            .iter()
            .find(|(u, _)| u == uuid)
            .map(|(_, id)| id.clone())
    };
    // Top-level links carry networks: standalone ports, bonds, and VLANs on top of either.
    let mut tops: Vec<(String, String, String, Option<u64>)> = Vec::new(); // (link id, mac, network id, vlan)
    let mut bonded: Vec<String> = Vec::new();
    for (b, pg) in portgroups.iter().enumerate() {
        let members: Vec<&Port> = ports
            .iter()
            .copied()
            .filter(|p| p.portgroup_uuid.as_deref() == Some(pg.uuid.as_str()))
            .collect();
        if members.is_empty() {
            continue;
        }
        let id = format!("bond{b}");
        let link = bond_link(&id, pg, &members, &link_of);
        let mac = link["ethernet_mac_address"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        links.push(link);
        bonded.extend(members.iter().map(|p| p.uuid.clone()));
        tops.push((id, mac, pg.uuid.clone(), vlan_of(&pg.extra)));
    }
    for p in ports.iter().filter(|p| !bonded.contains(&p.uuid)) {
        let id = link_of(&p.uuid).expect("every port has a link");
        tops.push((
            id,
            p.address.to_lowercase(),
            p.uuid.clone(),
            vlan_of(&p.extra),
        ));
    }
    for (n, (link, mac, network_id, vlan)) in tops.into_iter().enumerate() {
        let on = match vlan {
            Some(vid) => {
                let id = format!("vlan{vid}");
                links.push(json!({"id": id, "type": "vlan", "vlan_link": link, "vlan_id": vid, "vlan_mac_address": mac}));
                id
            }
            None => link,
        };
        networks.push(json!({"id": format!("network{n}"), "type": "ipv4_dhcp", "link": on, "network_id": network_id}));
    }
    let services: Vec<Value> = dns
        .iter()
        .map(|ip| json!({"type": "dns", "address": ip.to_string()}))
        .collect();
    Some(json!({"links": links, "networks": networks, "services": services}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(uuid: &str, mac: &str, pg: Option<&str>, extra: Value) -> Port {
        serde_json::from_value(json!({"uuid": uuid, "address": mac, "node_uuid": "n", "portgroup_uuid": pg, "extra": extra})).unwrap()
    }

    #[test]
    fn bond_vlan_and_plain_port() {
        let ports = [
            port("p1", "52:54:00:AA:00:01", Some("g1"), json!({"mtu": 9000})),
            port("p2", "52:54:00:aa:00:02", Some("g1"), json!({"mtu": 9000})),
            port("p3", "52:54:00:aa:00:03", None, json!({"vlan_id": "120"})),
        ];
        let pg: Portgroup = serde_json::from_value(
            json!({"uuid": "g1", "address": "52:54:00:aa:00:01", "node_uuid": "n",
            "mode": "802.3ad", "properties": {"miimon": "100", "xmit_hash_policy": "layer3+4"}}),
        )
        .unwrap();
        let doc = generate(
            &ports.iter().collect::<Vec<_>>(),
            &[&pg],
            &["192.0.2.53".parse().unwrap()],
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({
                "links": [
                    {"id": "iface0", "type": "phy", "ethernet_mac_address": "52:54:00:aa:00:01", "mtu": 9000},
                    {"id": "iface1", "type": "phy", "ethernet_mac_address": "52:54:00:aa:00:02", "mtu": 9000},
                    {"id": "iface2", "type": "phy", "ethernet_mac_address": "52:54:00:aa:00:03"},
                    {"id": "bond0", "type": "bond", "ethernet_mac_address": "52:54:00:aa:00:01", "bond_mode": "802.3ad",
                     "bond_links": ["iface0", "iface1"], "bond_miimon": "100", "bond_xmit_hash_policy": "layer3+4"},
                    {"id": "vlan120", "type": "vlan", "vlan_link": "iface2", "vlan_id": 120, "vlan_mac_address": "52:54:00:aa:00:03"}
                ],
                "networks": [
                    {"id": "network0", "type": "ipv4_dhcp", "link": "bond0", "network_id": "g1"},
                    {"id": "network1", "type": "ipv4_dhcp", "link": "vlan120", "network_id": "p3"}
                ],
                "services": [{"type": "dns", "address": "192.0.2.53"}]
            })
        );
    }

    #[test]
    fn no_ports_no_document() {
        assert_eq!(generate(&[], &[], &[]), None);
    }
}
