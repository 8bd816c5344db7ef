//! Client → exactly one Ironic node, or a refusal. This is the part that must never be
//! wrong: exact matches only, an address two nodes claim belongs to neither, and every claim
//! remembers who wrote it, so that what a deployer writes never takes or contests what the
//! operator's records say about another node.

pub(crate) mod link;
pub(crate) mod neighbour;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use macaddr::MacAddr6;

use crate::node::NodeView;

/// Provision states whose nodes are answered for when the operator does not say otherwise:
/// a deployed instance and the states in which its first boot may already ask.
pub(crate) const DEFAULT_SERVED_STATES: &[&str] =
    &["active", "deploying", "wait call-back", "rescue"];

/// Who wrote a claim that an address or a MAC is a node's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Source {
    /// `node.network_data`: set through Ironic's node API, by the operator.
    Node,
    /// The configdrive's `network_data`: written by whoever deploys the node.
    Configdrive,
    /// The kernel's neighbour entry for the client, matched against the node's Ironic ports
    /// and portgroups (written by the operator or inspection).
    Mac,
}

impl Source {
    pub(crate) const ALL: [Source; 3] = [Source::Node, Source::Configdrive, Source::Mac];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Source::Node => "node",
            Source::Configdrive => "configdrive",
            Source::Mac => "mac",
        }
    }
}

/// The sources a zone accepts claims from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sources(u8);

impl Sources {
    pub(crate) const ALL: Sources = Sources(0b111);

    pub(crate) fn of(list: &[Source]) -> Sources {
        Sources(list.iter().fold(0, |bits, s| bits | (1 << *s as u8)))
    }

    pub(crate) fn accepts(self, s: Source) -> bool {
        self.0 & (1 << s as u8) != 0
    }

    pub(crate) fn names(self) -> Vec<&'static str> {
        Source::ALL
            .into_iter()
            .filter(|s| self.accepts(*s))
            .map(Source::name)
            .collect()
    }
}

impl Default for Sources {
    fn default() -> Sources {
        Sources::ALL
    }
}

/// Where each project's deployers may claim addresses in their configdrives (the policy's
/// `[[project]]` tables).
pub(crate) trait ProjectScopes: Sync {
    /// Whether a configdrive of a node of `project` may claim `ip`.
    fn allows(&self, project: Option<&str>, ip: IpAddr) -> bool;
}

/// Who claims one address: operator-written claims and deployer-written ones apart. Node
/// indices, sorted, each at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AddressClaims {
    pub(crate) node: Slots,
    pub(crate) configdrive: Slots,
}

/// Node positions: nearly always one, held inline (a heap block per address or MAC would
/// cost more than the position itself).
pub(crate) type Slots = smallvec::SmallVec<[u32; 2]>;

/// A configdrive claim the index ignores whatever the policy says: the address is another
/// node's by the operator's records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Overruled {
    pub(crate) ip: IpAddr,
    /// The node whose configdrive claims the address.
    pub(crate) claimant: String,
    /// The nodes whose `node.network_data` holds it.
    pub(crate) owners: Vec<String>,
}

/// Outcome of a lookup by MAC.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Lookup {
    Found(Arc<NodeView>),
    /// No node claims it.
    Unknown,
    /// Two or more nodes claim it; their UUIDs.
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
    by_ip: HashMap<IpAddr, AddressClaims>,
    by_mac: HashMap<MacAddr6, Slots>,
    served: Vec<bool>,
    /// The served nodes belong to more than one project: deployers are not the operator.
    multi_project: bool,
    overruled: Vec<Overruled>,
}

impl Index {
    /// Claims from every node count, served or not: a stale claim from an undeployed node
    /// makes the address contested rather than silently handing it to the other node.
    pub(crate) fn build(views: Vec<NodeView>, served_states: &[String]) -> Index {
        // Not collected in place: the views' buffer (hundreds of bytes per node) would be
        // kept as the buffer of the pointers.
        let mut shared = Vec::with_capacity(views.len());
        shared.extend(views.into_iter().map(Arc::new));
        Index::build_shared(shared, served_states)
    }

    /// [`Index::build`] over views already shared (an index rebuilt after a few changes
    /// keeps every other view as it was).
    pub(crate) fn build_shared(nodes: Vec<Arc<NodeView>>, served_states: &[String]) -> Index {
        let served: Vec<bool> = nodes
            .iter()
            .map(|n| {
                n.provision_state
                    .as_deref()
                    .is_some_and(|s| served_states.iter().any(|x| x == s))
            })
            .collect();
        let mut by_ip: HashMap<IpAddr, AddressClaims> = HashMap::new();
        let mut by_mac: HashMap<MacAddr6, Slots> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            let i = i as u32;
            for ip in &node.node_addresses {
                by_ip.entry(*ip).or_default().node.push(i);
            }
            for ip in &node.drive_addresses {
                by_ip.entry(*ip).or_default().configdrive.push(i);
            }
            for mac in &node.macs {
                by_mac.entry(*mac).or_default().push(i);
            }
        }
        let mut projects = nodes
            .iter()
            .zip(&served)
            .filter(|(_, s)| **s)
            .map(|(n, _)| n.project.as_deref());
        let first = projects.next();
        let multi_project = projects.any(|p| Some(p) != first);
        let mut index = Index {
            nodes,
            by_ip,
            by_mac,
            served,
            multi_project,
            overruled: Vec::new(),
        };
        index.overruled = index.find_overruled();
        index
    }

    /// Configdrive claims on addresses that other nodes' operator-written data holds.
    fn find_overruled(&self) -> Vec<Overruled> {
        let mut out: Vec<Overruled> = self
            .by_ip
            .iter()
            .filter(|(_, c)| !c.node.is_empty())
            .flat_map(|(ip, c)| {
                c.configdrive.iter().map(move |i| Overruled {
                    ip: *ip,
                    claimant: self.uuid(*i).to_string(),
                    owners: c.node.iter().map(|j| self.uuid(*j).to_string()).collect(),
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.claimant, a.ip).cmp(&(&b.claimant, b.ip)));
        out
    }

    /// Who claims `ip`, by source.
    pub(crate) fn claims(&self, ip: IpAddr) -> Option<&AddressClaims> {
        self.by_ip.get(&ip.to_canonical())
    }

    /// The node one of whose Ironic ports (or portgroups) has this MAC; a MAC on two nodes
    /// belongs to neither.
    pub(crate) fn lookup_mac(&self, mac: MacAddr6) -> Lookup {
        match self.by_mac.get(&mac).map(|s| s.as_slice()) {
            None | Some([]) => Lookup::Unknown,
            Some([i]) => self.node_lookup(*i),
            Some(many) => Lookup::Contested(self.uuids(many)),
        }
    }

    /// The nodes one of whose ports (or portgroups) has this MAC.
    pub(crate) fn mac_claims(&self, mac: MacAddr6) -> &[u32] {
        self.by_mac.get(&mac).map_or(&[], |s| s.as_slice())
    }

    /// The node at `i`, or why it is not served.
    pub(crate) fn node_lookup(&self, i: u32) -> Lookup {
        let node = &self.nodes[i as usize];
        if self.served[i as usize] {
            return Lookup::Found(node.clone());
        }
        Lookup::NotServed {
            uuid: node.uuid.clone(),
            state: node
                .provision_state
                .as_deref()
                .unwrap_or("unknown")
                .to_string(),
        }
    }

    pub(crate) fn node(&self, i: u32) -> &Arc<NodeView> {
        &self.nodes[i as usize]
    }

    pub(crate) fn uuid(&self, i: u32) -> &str {
        &self.nodes[i as usize].uuid
    }

    /// UUIDs of the nodes at `indices`, sorted.
    pub(crate) fn uuids(&self, indices: &[u32]) -> Vec<String> {
        let mut v: Vec<String> = indices.iter().map(|i| self.uuid(*i).to_string()).collect();
        v.sort();
        v
    }

    pub(crate) fn nodes(&self) -> &[Arc<NodeView>] {
        &self.nodes
    }

    pub(crate) fn served_count(&self) -> usize {
        self.served.iter().filter(|s| **s).count()
    }

    /// Whether the served nodes belong to more than one project (nodes of no project count
    /// as one more: the operator's).
    pub(crate) fn multi_project(&self) -> bool {
        self.multi_project
    }

    /// Whether the configdrive of node `i` may claim `ip`: in a fleet of one project (the
    /// deployer is the operator); for a node of no project (only the operator, system
    /// scoped, deploys those); else inside the CIDRs `scopes` give its project.
    pub(crate) fn deployer_may_claim(
        &self,
        i: u32,
        ip: IpAddr,
        scopes: &dyn ProjectScopes,
    ) -> bool {
        let project = self.node(i).project.as_deref();
        !self.multi_project || project.is_none() || scopes.allows(project, ip)
    }

    /// Configdrive claims on other nodes' addresses, ignored.
    pub(crate) fn overruled(&self) -> &[Overruled] {
        &self.overruled
    }

    /// Addresses that more than one node claims with the same weight, with the claimants:
    /// two operator-written claims, or (with none) two deployer-written ones.
    pub(crate) fn contested(&self) -> impl Iterator<Item = (&IpAddr, Vec<String>)> {
        self.by_ip.iter().filter_map(|(ip, c)| {
            let same = if c.node.is_empty() {
                &c.configdrive
            } else {
                &c.node
            };
            (same.len() > 1).then(|| (ip, self.uuids(same)))
        })
    }

    /// Configdrive claims outside the deployer's project CIDRs, in a fleet of several
    /// projects: what the policy in force ignores (a MAC may still verify them).
    pub(crate) fn out_of_scope(&self, scopes: &dyn ProjectScopes) -> Vec<(IpAddr, String)> {
        if !self.multi_project {
            return Vec::new();
        }
        let mut out: Vec<(IpAddr, String)> = self
            .by_ip
            .iter()
            .filter(|(_, c)| c.node.is_empty())
            .flat_map(|(ip, c)| c.configdrive.iter().map(move |i| (*ip, *i)))
            .filter(|(ip, i)| !self.deployer_may_claim(*i, *ip, scopes))
            .map(|(ip, i)| (ip, self.uuid(i).to_string()))
            .collect();
        out.sort();
        out
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn claims_are_indexed_by_who_wrote_them() {
        let idx = Index::build(
            inv(json!({"nodes": [
                {"uuid": "a", "provision_state": "active", "network_data": nd("192.0.2.1"),
                 "instance_info": {"configdrive": {"network_data": nd("192.0.2.9")}}}]})),
            &served(),
        );
        assert_eq!(
            idx.claims(ip("192.0.2.1")),
            Some(&AddressClaims {
                node: smallvec::smallvec![0],
                configdrive: smallvec::smallvec![]
            })
        );
        assert_eq!(
            idx.claims(ip("192.0.2.9")),
            Some(&AddressClaims {
                node: smallvec::smallvec![],
                configdrive: smallvec::smallvec![0]
            })
        );
        assert_eq!(idx.claims(ip("192.0.2.2")), None);
        // An IPv4-mapped IPv6 peer (dual-stack listener) is the same client.
        assert!(idx.claims(ip("::ffff:192.0.2.1")).is_some());
    }

    #[test]
    fn contested_addresses_are_listed() {
        let idx = Index::build(
            inv(json!({"nodes": [
                {"uuid": "b", "provision_state": "active", "network_data": nd("192.0.2.1")},
                {"uuid": "a", "provision_state": "available", "network_data": nd("192.0.2.1")},
                {"uuid": "c", "provision_state": "active", "network_data": nd("192.0.2.1")}]})),
            &served(),
        );
        let contested: Vec<_> = idx.contested().collect();
        assert_eq!(
            contested,
            vec![(
                &ip("192.0.2.1"),
                vec!["a".to_string(), "b".into(), "c".into()]
            )]
        );
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
            idx.node_lookup(0),
            Lookup::NotServed {
                uuid: "a".into(),
                state: "available".into()
            }
        );
        assert_eq!(idx.served_count(), 0);
    }

    #[test]
    fn projects_are_counted_over_served_nodes() {
        let one = Index::build(
            inv(json!({"nodes": [
                {"uuid": "a", "provision_state": "active", "owner": "p1"},
                {"uuid": "b", "provision_state": "active", "owner": "x", "lessee": "p1"},
                {"uuid": "c", "provision_state": "available", "owner": "p2"}]})),
            &served(),
        );
        assert!(!one.multi_project());
        let two = Index::build(
            inv(json!({"nodes": [
                {"uuid": "a", "provision_state": "active", "owner": "p1"},
                {"uuid": "b", "provision_state": "active"}]})),
            &served(),
        );
        assert!(two.multi_project());
    }
}
