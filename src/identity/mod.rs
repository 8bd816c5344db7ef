//! Client address → exactly one Ironic node, or a refusal. This is the part that must never
//! be wrong: exact matches only, and an address claimed by two nodes belongs to neither.

pub(crate) mod link;
pub(crate) mod neighbour;

use macaddr::MacAddr6;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use crate::node::NodeView;

/// Provision states whose nodes are answered for when the operator does not say otherwise:
/// a deployed instance and the states in which its first boot may already ask.
pub(crate) const DEFAULT_SERVED_STATES: &[&str] =
    &["active", "deploying", "wait call-back", "rescue"];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Claim {
    One(usize),
    /// Node UUIDs, sorted, that all claim this address.
    Contested(Vec<String>),
}

/// Outcome of an identity lookup.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lookup {
    Found(Arc<NodeView>),
    /// No node claims the address.
    Unknown,
    /// Two or more nodes claim the address; their UUIDs.
    Contested(Vec<String>),
    /// The node exists but its provision state is not served.
    NotServed {
        uuid: String,
        state: String,
    },
}

/// Immutable index built from one inventory snapshot; swapped whole on refresh.
#[derive(Debug, Default)]
pub(crate) struct Index {
    nodes: Vec<Arc<NodeView>>,
    by_ip: HashMap<IpAddr, Claim>,
    by_mac: HashMap<MacAddr6, Claim>,
    served: Vec<bool>,
}

impl Index {
    /// Claims from every node count, served or not: a stale claim from an undeployed node
    /// makes the address contested rather than silently handing it to the other node.
    pub(crate) fn build(views: Vec<NodeView>, served_states: &[String]) -> Index {
        let nodes: Vec<Arc<NodeView>> = views.into_iter().map(Arc::new).collect();
        let served = nodes
            .iter()
            .map(|n| {
                n.provision_state
                    .as_deref()
                    .is_some_and(|s| served_states.iter().any(|x| x == s))
            })
            .collect();
        let mut by_ip: HashMap<IpAddr, Claim> = HashMap::new();
        let mut by_mac: HashMap<MacAddr6, Claim> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            for ip in &node.addresses {
                claim(&mut by_ip, *ip, i, &nodes);
            }
            for mac in &node.macs {
                claim(&mut by_mac, *mac, i, &nodes);
            }
        }
        Index {
            nodes,
            by_ip,
            by_mac,
            served,
        }
    }

    pub(crate) fn lookup(&self, ip: IpAddr) -> Lookup {
        self.resolve(self.by_ip.get(&ip.to_canonical()))
    }

    /// The node one of whose Ironic ports (or portgroups) has this MAC; a MAC on two nodes
    /// belongs to neither.
    pub(crate) fn lookup_mac(&self, mac: MacAddr6) -> Lookup {
        self.resolve(self.by_mac.get(&mac))
    }

    fn resolve(&self, claim: Option<&Claim>) -> Lookup {
        match claim {
            None => Lookup::Unknown,
            Some(Claim::Contested(uuids)) => Lookup::Contested(uuids.clone()),
            Some(Claim::One(i)) if self.served[*i] => Lookup::Found(self.nodes[*i].clone()),
            Some(Claim::One(i)) => Lookup::NotServed {
                uuid: self.nodes[*i].uuid.clone(),
                state: self.nodes[*i]
                    .provision_state
                    .clone()
                    .unwrap_or_else(|| "unknown".into()),
            },
        }
    }

    pub(crate) fn nodes(&self) -> &[Arc<NodeView>] {
        &self.nodes
    }

    pub(crate) fn served_count(&self) -> usize {
        self.served.iter().filter(|s| **s).count()
    }

    /// Addresses that more than one node claims, with the claimants.
    pub(crate) fn contested(&self) -> impl Iterator<Item = (&IpAddr, &[String])> {
        self.by_ip.iter().filter_map(|(ip, c)| match c {
            Claim::Contested(u) => Some((ip, u.as_slice())),
            Claim::One(_) => None,
        })
    }
}

/// Records that node `i` claims `key`; a second claimant makes it contested.
fn claim<K: std::hash::Hash + Eq>(
    map: &mut HashMap<K, Claim>,
    key: K,
    i: usize,
    nodes: &[Arc<NodeView>],
) {
    match map.get_mut(&key) {
        None => {
            map.insert(key, Claim::One(i));
        }
        Some(Claim::One(j)) => {
            let mut uuids = vec![nodes[*j].uuid.clone(), nodes[i].uuid.clone()];
            uuids.sort();
            map.insert(key, Claim::Contested(uuids));
        }
        Some(Claim::Contested(uuids)) => {
            uuids.push(nodes[i].uuid.clone());
            uuids.sort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ironic::model::Inventory;
    use serde_json::json;

    fn inv(v: serde_json::Value) -> Vec<NodeView> {
        let inventory: Inventory = serde_json::from_str(&v.to_string()).unwrap();
        crate::node::build(inventory, &[], &mut Default::default()).0
    }

    fn nd(ip: &str) -> serde_json::Value {
        json!({"links": [], "services": [], "networks": [
            {"id": "n", "type": "ipv4", "link": "l", "network_id": "x", "ip_address": ip}]})
    }

    fn served() -> Vec<String> {
        DEFAULT_SERVED_STATES
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    #[test]
    fn exact_match_only() {
        let idx = Index::build(
            inv(
                json!({"nodes": [{"uuid": "a", "provision_state": "active", "network_data": nd("192.0.2.1")}]}),
            ),
            &served(),
        );
        assert!(
            matches!(idx.lookup("192.0.2.1".parse().unwrap()), Lookup::Found(n) if n.uuid == "a")
        );
        assert_eq!(idx.lookup("192.0.2.2".parse().unwrap()), Lookup::Unknown);
        // An IPv4-mapped IPv6 peer (dual-stack listener) is the same client.
        assert!(matches!(
            idx.lookup("::ffff:192.0.2.1".parse().unwrap()),
            Lookup::Found(_)
        ));
    }

    #[test]
    fn contested_address_belongs_to_nobody() {
        let idx = Index::build(
            inv(json!({"nodes": [
                {"uuid": "b", "provision_state": "active", "network_data": nd("192.0.2.1")},
                {"uuid": "a", "provision_state": "available", "network_data": nd("192.0.2.1")},
                {"uuid": "c", "provision_state": "active", "network_data": nd("192.0.2.1")}]})),
            &served(),
        );
        assert_eq!(
            idx.lookup("192.0.2.1".parse().unwrap()),
            Lookup::Contested(vec!["a".into(), "b".into(), "c".into()])
        );
        assert_eq!(idx.contested().count(), 1);
    }

    #[test]
    fn unserved_state_is_refused() {
        let idx = Index::build(
            inv(
                json!({"nodes": [{"uuid": "a", "provision_state": "available", "network_data": nd("192.0.2.1")}]}),
            ),
            &served(),
        );
        assert_eq!(
            idx.lookup("192.0.2.1".parse().unwrap()),
            Lookup::NotServed {
                uuid: "a".into(),
                state: "available".into()
            }
        );
        assert_eq!(idx.served_count(), 0);
    }
}
