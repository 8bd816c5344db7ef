//! The node as served: built once per index from Ironic's wire types, so requests never
//! re-parse Ironic's JSON. A view holds the decoded configdrive, the network data (the
//! node's own, or generated from its ports), its MACs and the documents rendered so far.

pub(crate) mod configdrive;
pub(crate) mod doc;
pub(crate) mod network;
pub(crate) mod view;

use std::collections::HashMap;
use std::net::IpAddr;

use macaddr::MacAddr6;

use crate::ironic::model::{Inventory, Node, Port, Portgroup};
pub(crate) use doc::Doc;
pub(crate) use view::{ConfigDrive, DriveCache, NodeView};

/// One view per node of `inventory`, with its ports' and portgroups' MACs and, for a node
/// without network data, network data generated from them. Decoded configdrive images are
/// taken from `cache` when the same image was decoded before; the images used are returned
/// as the cache for the next build.
pub(crate) fn build(
    inventory: Inventory,
    dns: &[IpAddr],
    cache: &mut DriveCache,
) -> (Vec<NodeView>, DriveCache) {
    let Inventory {
        nodes,
        ports,
        portgroups,
    } = inventory;
    let mut b = Builder::new(ports, portgroups, dns, std::mem::take(cache));
    b.add(nodes);
    b.finish()
}

/// Views built page by page: the links first, then each page of nodes as it arrives, so
/// that a sweep never holds more of Ironic's answer than one page (at 100,000 nodes the
/// whole answer is gigabytes of JSON, and what it leaves behind, scattered among the
/// views, would stay in the process's resident memory).
pub(crate) struct Builder {
    ports: HashMap<String, Vec<Port>>,
    groups: HashMap<String, Vec<Portgroup>>,
    dns: Vec<IpAddr>,
    old: DriveCache,
    used: DriveCache,
    views: Vec<NodeView>,
}

impl Builder {
    /// `old`: the decoded configdrive images of the previous build.
    pub(crate) fn new(
        ports: Vec<Port>,
        portgroups: Vec<Portgroup>,
        dns: &[IpAddr],
        old: DriveCache,
    ) -> Builder {
        let mut by_node: HashMap<String, Vec<Port>> = HashMap::new();
        for p in ports {
            if let Some(n) = p.node_uuid.clone() {
                by_node.entry(n).or_default().push(p);
            }
        }
        let mut groups: HashMap<String, Vec<Portgroup>> = HashMap::new();
        for g in portgroups {
            if let Some(n) = g.node_uuid.clone() {
                groups.entry(n).or_default().push(g);
            }
        }
        Builder {
            ports: by_node,
            groups,
            dns: dns.to_vec(),
            old,
            used: DriveCache::new(),
            views: Vec::new(),
        }
    }

    /// Views of these nodes; each node is dropped as soon as its view is built.
    pub(crate) fn add(&mut self, nodes: Vec<Node>) {
        self.views.reserve(nodes.len());
        for n in nodes {
            let p: Vec<&Port> = self
                .ports
                .get(&n.uuid)
                .map_or(Vec::new(), |v| v.iter().collect());
            let g: Vec<&Portgroup> = self
                .groups
                .get(&n.uuid)
                .map_or(Vec::new(), |v| v.iter().collect());
            let view = build_one(&n, &p, &g, &self.dns, &mut self.old, &mut self.used);
            self.views.push(view);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.views.len()
    }

    /// The views, and the decoded images they use (the cache of the next build).
    pub(crate) fn finish(self) -> (Vec<NodeView>, DriveCache) {
        (self.views, self.used)
    }
}

/// The view of one node with its ports and portgroups; decoded images are taken from
/// `old` and recorded in `new`.
pub(crate) fn build_one(
    n: &Node,
    ports: &[&Port],
    groups: &[&Portgroup],
    dns: &[IpAddr],
    old: &mut DriveCache,
    new: &mut DriveCache,
) -> NodeView {
    let mut view = NodeView::from_ironic_cached(n, old, new);
    view.macs = ports
        .iter()
        .map(|p| p.address.as_str())
        .chain(groups.iter().filter_map(|g| g.address.as_deref()))
        .filter_map(|m| m.trim().parse::<MacAddr6>().ok())
        .collect();
    view.macs.sort_unstable();
    view.macs.dedup();
    if view.network_data().is_none() {
        view.generated_network_data = network::generate(ports, groups, dns).map(|v| Doc::new(&v));
    }
    view
}
