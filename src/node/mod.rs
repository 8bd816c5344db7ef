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
    let mut used = DriveCache::new();
    let mut by_node: HashMap<&str, Vec<&Port>> = HashMap::new();
    for p in &ports {
        if let Some(n) = p.node_uuid.as_deref() {
            by_node.entry(n).or_default().push(p);
        }
    }
    let mut groups: HashMap<&str, Vec<&Portgroup>> = HashMap::new();
    for g in &portgroups {
        if let Some(n) = g.node_uuid.as_deref() {
            groups.entry(n).or_default().push(g);
        }
    }
    // Each node is dropped as soon as its view is built, so the memory of Ironic's answer
    // is reused for the views instead of adding to it.
    let views = nodes
        .into_iter()
        .map(|n| {
            let p = by_node.get(n.uuid.as_str()).map_or(&[][..], Vec::as_slice);
            let g = groups.get(n.uuid.as_str()).map_or(&[][..], Vec::as_slice);
            build_one(&n, p, g, dns, cache, &mut used)
        })
        .collect();
    (views, used)
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
