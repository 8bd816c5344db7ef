//! Identity under the client zone's link-layer rules: with `verify_mac` the client's
//! neighbour MAC must be a port of the node its address names; with `identify_by_mac` an
//! address no node claims is identified by that MAC's port.

use std::net::IpAddr;
use std::sync::Arc;

use super::neighbour::{mac_text, Neighbours, L2};
use super::{Index, Lookup};
use crate::node::NodeView;
use crate::reply::{Denied, Refusal};

/// What the client's zone asks of the link layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct MacRule {
    /// The neighbour MAC of the client must be a port of its node.
    pub(crate) verify: bool,
    /// An address no node claims is identified by the neighbour MAC's port.
    pub(crate) identify: bool,
    /// The TCP peer is the client itself (no proxy in between).
    pub(crate) direct: bool,
}

/// The node `client` is, or the refusal that says why there is none.
pub(crate) fn identify(
    index: &Index,
    neighbours: &dyn Neighbours,
    client: IpAddr,
    rule: MacRule,
) -> Result<Arc<NodeView>, Denied> {
    let by_ip = index.lookup(client);
    let needs_l2 = rule.verify
        && (matches!(by_ip, Lookup::Found(_))
            || (rule.identify && matches!(by_ip, Lookup::Unknown)));
    if !needs_l2 {
        return settle(by_ip, None);
    }
    let seen = neighbour_mac(neighbours, client, rule)?;
    match by_ip {
        Lookup::Found(node) if node.macs.contains(&seen) => Ok(node),
        Lookup::Found(node) => Err(mismatch(&node, &seen)),
        _ => settle(index.lookup_mac(seen), Some(&mac_text(&seen))),
    }
}

/// The client's MAC from the neighbour table; only a direct client on a link of this host
/// has one worth believing.
fn neighbour_mac(
    neighbours: &dyn Neighbours,
    client: IpAddr,
    rule: MacRule,
) -> Result<macaddr::MacAddr6, Denied> {
    if !rule.direct {
        return Err(Denied::new(Refusal::MacUnverifiable)
            .detail("the zone verifies MACs, but the request came through a proxy"));
    }
    match neighbours.resolve(client) {
        Ok(L2::Mac(m)) => Ok(m),
        Ok(other) => Err(Denied::new(Refusal::MacUnverifiable)
            .detail(format!("the zone verifies MACs: {}", other.describe()))),
        Err(e) => Err(Denied::new(Refusal::NeighbourLookupFailed)
            .detail(format!("neighbour lookup failed: {e}"))),
    }
}

fn mismatch(node: &NodeView, seen: &macaddr::MacAddr6) -> Denied {
    let ports: Vec<String> = node.macs.iter().map(mac_text).collect();
    let ports = if ports.is_empty() {
        "none".into()
    } else {
        ports.join(", ")
    };
    Denied::new(Refusal::MacMismatch)
        .node(&node.uuid)
        .detail(format!(
            "neighbour MAC {} is not a port of node {} (its ports: {ports})",
            mac_text(seen),
            node.uuid
        ))
}

/// The node of a lookup, or the refusal that says why there is none; `mac` when the lookup
/// was by MAC.
fn settle(lookup: Lookup, mac: Option<&str>) -> Result<Arc<NodeView>, Denied> {
    Err(match lookup {
        Lookup::Found(node) => return Ok(node),
        Lookup::Unknown => Denied::new(Refusal::UnknownAddress).detail(match mac {
            Some(m) => format!("no node claims this address nor MAC {m}"),
            None => "no node claims this address".into(),
        }),
        Lookup::Contested(uuids) => Denied::new(Refusal::ContestedAddress).detail(match mac {
            Some(m) => format!("MAC {m} is a port of nodes {}", uuids.join(", ")),
            None => format!("address claimed by nodes {}", uuids.join(", ")),
        }),
        Lookup::NotServed { uuid, state } => Denied::new(Refusal::NodeNotServed)
            .node(&uuid)
            .detail(format!("node {uuid} is in provision state {state:?}")),
    })
}
