//! The decision: which node a client is, under its zone's rules. Claims are weighed by who
//! wrote them: an operator-written address (`node.network_data`) is the node's whatever a
//! configdrive says; a deployer-written one (the configdrive) counts only where nothing of
//! the operator's says otherwise, and in a fleet of several projects only inside its
//! project's CIDRs or when the client's MAC is a port of that node. A link-local IPv6
//! client is identified by its neighbour MAC on the interface it asked on.

use std::net::IpAddr;
use std::sync::Arc;

use macaddr::MacAddr6;

use super::neighbour::{mac_text, Neighbours, L2};
use super::{AddressClaims, Index, Lookup, ProjectScopes, Source, Sources};
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

/// The zone's identity rules for one request.
#[derive(Clone, Copy)]
pub(crate) struct Rules<'a> {
    pub(crate) mac: MacRule,
    /// The claim sources the zone accepts.
    pub(crate) sources: Sources,
    /// The projects' CIDRs, for deployer-written claims.
    pub(crate) scopes: &'a dyn ProjectScopes,
}

/// The client: its address and, for an IPv6 link-local one, the interface it asked on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Client {
    pub(crate) ip: IpAddr,
    /// Interface index (`0`: none).
    pub(crate) scope: u32,
}

/// An IPv6 link-local address names a host only together with its interface.
pub(crate) fn is_link_local(ip: IpAddr) -> bool {
    matches!(ip.to_canonical(), IpAddr::V6(v6) if v6.is_unicast_link_local())
}

/// What made a client its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Basis {
    /// The node's `network_data`, which the operator writes, claims the address.
    NodeClaim,
    /// The node's configdrive claims the address, and nothing of the operator's says
    /// otherwise.
    ConfigdriveClaim,
    /// The node's configdrive claims the address outside the CIDRs the policy gives its
    /// project, and the client's MAC is a port of the node.
    ConfigdriveVerifiedByMac,
    /// The configdrive of node `claimant` claims the address, and the client's MAC is a
    /// port of this node: the operator's record wins.
    PortOverConfigdrive { claimant: String, mac: MacAddr6 },
    /// The client's MAC is a port of the node: no claim on the address decided (an IPv6
    /// link-local client is always identified so).
    Port,
}

/// The node `client` is, or the refusal that says why there is none.
pub(crate) fn identify(
    index: &Index,
    neighbours: &dyn Neighbours,
    client: Client,
    rules: &Rules<'_>,
) -> Result<Arc<NodeView>, Denied> {
    let (node, basis) = decide(index, neighbours, client, rules)?;
    if let Basis::PortOverConfigdrive { claimant, mac } = &basis {
        tracing::info!(
            target: "audit",
            event = "claim_overridden",
            node = %claimant,
            owner = %node.uuid,
            mac = %mac_text(mac),
            "a configdrive claim lost to the port of another node"
        );
    }
    Ok(node)
}

/// [`identify`], with what decided: the request path and `explain` both ask this.
pub(crate) fn decide(
    index: &Index,
    neighbours: &dyn Neighbours,
    client: Client,
    rules: &Rules<'_>,
) -> Result<(Arc<NodeView>, Basis), Denied> {
    let mut link = Link {
        neighbours,
        client,
        direct: rules.mac.direct,
        seen: None,
    };
    if is_link_local(client.ip) {
        if !rules.sources.accepts(Source::Mac) {
            return Err(Denied::new(Refusal::UnknownAddress).detail(
                "a link-local client is identified by its MAC, and the zone does not accept mac claims",
            ));
        }
        let mac = link.mac()?;
        return settle(index.lookup_mac(mac), Some(mac)).map(|n| (n, Basis::Port));
    }
    match by_address(index, client.ip, rules) {
        ByAddress::Found(i, source) => verified(index, i, source, &mut link, rules),
        ByAddress::Contested(detail) => Err(Denied::new(Refusal::ContestedAddress).detail(detail)),
        ByAddress::Ignored(claimants, why) => {
            // A deployer-written claim the policy does not honour still counts when the
            // client's MAC is a port of the claiming node.
            if rules.mac.verify {
                let mac = link.mac()?;
                if let Some(i) = claimants
                    .iter()
                    .find(|i| index.node(**i).macs.contains(&mac))
                {
                    return served(index, *i).map(|n| (n, Basis::ConfigdriveVerifiedByMac));
                }
            }
            by_mac_or(index, &mut link, rules, why)
        }
        ByAddress::Unknown(why) => by_mac_or(index, &mut link, rules, why),
    }
}

/// What the address claims say, before any MAC is looked at.
enum ByAddress {
    Found(u32, Source),
    Contested(String),
    /// Deployer-written claims the rules do not honour here, and why.
    Ignored(Vec<u32>, String),
    Unknown(String),
}

fn by_address(index: &Index, ip: IpAddr, rules: &Rules<'_>) -> ByAddress {
    let Some(claims) = index.claims(ip) else {
        return ByAddress::Unknown("no node claims this address".into());
    };
    let AddressClaims { node, configdrive } = claims;
    if !node.is_empty() {
        // The operator's records decide; configdrive claims of other nodes never count.
        return match node.as_slice() {
            _ if !rules.sources.accepts(Source::Node) => ByAddress::Unknown(format!(
                "claimed by the network_data of node {}, a source the zone does not accept",
                index.uuids(node).join(", ")
            )),
            [i] => ByAddress::Found(*i, Source::Node),
            many => ByAddress::Contested(format!(
                "address claimed by nodes {}",
                index.uuids(many).join(", ")
            )),
        };
    }
    if !rules.sources.accepts(Source::Configdrive) {
        return ByAddress::Unknown(format!(
            "claimed only by the configdrive of node {}, a source the zone does not accept",
            index.uuids(configdrive).join(", ")
        ));
    }
    let (honoured, ignored): (Vec<u32>, Vec<u32>) = configdrive
        .iter()
        .partition(|i| index.deployer_may_claim(**i, ip, rules.scopes));
    match honoured.as_slice() {
        [i] => ByAddress::Found(*i, Source::Configdrive),
        [] => ByAddress::Ignored(ignored.clone(), out_of_scope(index, &ignored)),
        many => ByAddress::Contested(format!(
            "address claimed by the configdrives of nodes {}",
            index.uuids(many).join(", ")
        )),
    }
}

fn out_of_scope(index: &Index, ignored: &[u32]) -> String {
    let named: Vec<String> = ignored
        .iter()
        .map(|i| {
            let node = index.node(*i);
            format!(
                "node {} (project {})",
                node.uuid,
                node.project.as_deref().unwrap_or("-")
            )
        })
        .collect();
    format!(
        "configdrive claim of {} ignored: the address is outside the CIDRs the policy gives its project",
        named.join(", ")
    )
}

/// The node an address claim names, checked against the client's MAC where the zone asks.
fn verified(
    index: &Index,
    i: u32,
    source: Source,
    link: &mut Link<'_>,
    rules: &Rules<'_>,
) -> Result<(Arc<NodeView>, Basis), Denied> {
    let node = served(index, i)?;
    let basis = match source {
        Source::Configdrive => Basis::ConfigdriveClaim,
        _ => Basis::NodeClaim,
    };
    if !rules.mac.verify {
        return Ok((node, basis));
    }
    let mac = link.mac()?;
    if node.macs.contains(&mac) {
        return Ok((node, basis));
    }
    // The MAC is a port of another node: the operator's record beats a deployer's claim.
    if source == Source::Configdrive && identifies_by_mac(rules) {
        if let Lookup::Found(owner) = index.lookup_mac(mac) {
            let claimant = node.uuid.clone();
            return Ok((owner, Basis::PortOverConfigdrive { claimant, mac }));
        }
    }
    Err(mismatch(&node, &mac))
}

fn identifies_by_mac(rules: &Rules<'_>) -> bool {
    rules.mac.verify && rules.mac.identify && rules.sources.accepts(Source::Mac)
}

/// Identification by the client's MAC where the zone allows it, else `why`.
fn by_mac_or(
    index: &Index,
    link: &mut Link<'_>,
    rules: &Rules<'_>,
    why: String,
) -> Result<(Arc<NodeView>, Basis), Denied> {
    if !identifies_by_mac(rules) {
        return Err(Denied::new(Refusal::UnknownAddress).detail(why));
    }
    let mac = link.mac()?;
    settle(index.lookup_mac(mac), Some(mac)).map(|n| (n, Basis::Port))
}

fn served(index: &Index, i: u32) -> Result<Arc<NodeView>, Denied> {
    settle(index.node_lookup(i), None)
}

/// The client's MAC from the neighbour table, asked at most once per decision; only a
/// direct client on a link of this host has one worth believing.
struct Link<'a> {
    neighbours: &'a dyn Neighbours,
    client: Client,
    direct: bool,
    seen: Option<MacAddr6>,
}

impl Link<'_> {
    fn mac(&mut self) -> Result<MacAddr6, Denied> {
        if let Some(m) = self.seen {
            return Ok(m);
        }
        if !self.direct {
            return Err(Denied::new(Refusal::MacUnverifiable)
                .detail("the zone verifies MACs, but the request came through a proxy"));
        }
        let answer = match self.client.ip.to_canonical() {
            IpAddr::V6(v6) if v6.is_unicast_link_local() => {
                self.neighbours.resolve_scoped(v6, self.client.scope)
            }
            ip => self.neighbours.resolve(ip),
        };
        match answer {
            Ok(L2::Mac(m)) => {
                self.seen = Some(m);
                Ok(m)
            }
            Ok(other) => Err(Denied::new(Refusal::MacUnverifiable)
                .detail(format!("the zone verifies MACs: {}", other.describe()))),
            Err(e) => Err(Denied::new(Refusal::NeighbourLookupFailed)
                .detail(format!("neighbour lookup failed: {e}"))),
        }
    }
}

fn mismatch(node: &NodeView, seen: &MacAddr6) -> Denied {
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
fn settle(lookup: Lookup, mac: Option<MacAddr6>) -> Result<Arc<NodeView>, Denied> {
    let mac = mac.as_ref().map(mac_text);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::neighbour::Fixed;
    use crate::identity::DEFAULT_SERVED_STATES;
    use crate::ironic::model::Inventory;
    use serde_json::{json, Value};

    fn nd(ips: &[&str]) -> Value {
        let nets: Vec<Value> = ips
            .iter()
            .map(|ip| json!({"id": ip, "type": "ipv4", "link": "l", "network_id": "x", "ip_address": ip}))
            .collect();
        json!({"links": [{"id": "l", "type": "phy"}], "networks": nets, "services": []})
    }

    /// A node: its own network data (`own`), its configdrive's (`drive`), its project
    /// (lessee) and the last byte of its one port's MAC.
    fn node(uuid: &str, own: &[&str], drive: &[&str], project: &str, mac: u8) -> (Value, Value) {
        let mut n = json!({"uuid": uuid, "provision_state": "active", "lessee": project});
        if !own.is_empty() {
            n["network_data"] = nd(own);
        }
        if !drive.is_empty() {
            n["instance_info"] = json!({"configdrive": {"network_data": nd(drive)}});
        }
        let port = json!({"uuid": format!("p-{uuid}"), "node_uuid": uuid,
                          "address": format!("52:54:00:00:00:{mac:02x}")});
        (n, port)
    }

    fn index(nodes: &[(Value, Value)]) -> Index {
        let inv: Inventory = serde_json::from_value(json!({
            "nodes": nodes.iter().map(|n| n.0.clone()).collect::<Vec<_>>(),
            "ports": nodes.iter().map(|n| n.1.clone()).collect::<Vec<_>>(),
        }))
        .unwrap();
        let served: Vec<String> = DEFAULT_SERVED_STATES
            .iter()
            .map(|s| s.to_string())
            .collect();
        Index::build(
            crate::node::build(inv, &[], &mut Default::default()).0,
            &served,
        )
    }

    /// Project `p1` may claim 10.1.0.0/16, `p2` 10.2.0.0/16.
    struct Cidrs;
    impl ProjectScopes for Cidrs {
        fn allows(&self, project: Option<&str>, ip: IpAddr) -> bool {
            let net = |s: &str| s.parse::<ipnet::IpNet>().unwrap();
            match project {
                Some("p1") => net("10.1.0.0/16").contains(&ip),
                Some("p2") => net("10.2.0.0/16").contains(&ip),
                _ => false,
            }
        }
    }

    fn mac(last: u8) -> L2 {
        L2::Mac(MacAddr6::new(0x52, 0x54, 0, 0, 0, last))
    }

    /// Who `ip` is (`scope` for a link-local one) under a zone with these sources and MAC
    /// rules, the neighbour table saying `seen`: the node, or the refusal's reason.
    fn who(
        idx: &Index,
        ip: &str,
        sources: &[Source],
        rule: (bool, bool),
        seen: Option<L2>,
    ) -> String {
        let ip: IpAddr = ip.parse().unwrap();
        let table = Fixed(seen.into_iter().map(|l2| (ip, l2)).collect());
        let rules = Rules {
            mac: MacRule {
                verify: rule.0,
                identify: rule.1,
                direct: true,
            },
            sources: Sources::of(sources),
            scopes: &Cidrs,
        };
        let got = identify(idx, &table, Client { ip, scope: 3 }, &rules);
        // `explain` says the same of this client under a policy with these rules.
        let policy = policy_of(sources, rule);
        let query = crate::explain::Query {
            ip,
            interface: None,
            scope: 3,
            mac: None,
            direct: true,
            path: crate::explain::DEFAULT_PATH.into(),
        };
        let live = crate::explain::LinkLayer::Live(&table);
        let told = crate::explain::explain(idx, &policy, live, &query, true);
        crate::explain::tests::assert_agrees(&told, &got);
        match got {
            Ok(n) => n.uuid.clone(),
            Err(d) => d.refusal.reason().to_string(),
        }
    }

    /// A policy of one zone over every address the tests ask from, with these sources and
    /// MAC rules, and the projects of [`Cidrs`].
    fn policy_of(sources: &[Source], rule: (bool, bool)) -> crate::policy::Policy {
        let names: Vec<String> = sources.iter().map(|s| format!("{:?}", s.name())).collect();
        let text = format!(
            "[[zone]]\nname = \"all\"\ncidrs = [\"0.0.0.0/0\", \"::/0\"]\naction = \"allow\"\n\
             identity_sources = [{}]\nverify_mac = {}\nidentify_by_mac = {}\n\
             [[project]]\nid = \"p1\"\ncidrs = [\"10.1.0.0/16\"]\n\
             [[project]]\nid = \"p2\"\ncidrs = [\"10.2.0.0/16\"]\n",
            names.join(", "),
            rule.0,
            rule.1
        );
        let set =
            crate::policy::file::parse_files([(std::path::Path::new("t.toml"), text.as_str())]);
        crate::policy::Policy::build(set.unwrap(), None)
    }

    const ALL: &[Source] = &Source::ALL;
    const NO_MAC: (bool, bool) = (false, false);

    #[test]
    fn an_operator_claim_beats_any_configdrive_claim() {
        for evil_project in ["p1", "p2"] {
            let idx = index(&[
                node("b", &["10.1.0.3"], &[], "p1", 2),
                node("evil", &[], &["10.1.0.3"], evil_project, 9),
            ]);
            assert_eq!(
                who(&idx, "10.1.0.3", ALL, NO_MAC, None),
                "b",
                "{evil_project}"
            );
            assert_eq!(idx.overruled().len(), 1);
            assert_eq!(idx.overruled()[0].claimant, "evil");
        }
        // Two operator claims still contest each other.
        let idx = index(&[
            node("a", &["10.1.0.3"], &[], "p1", 1),
            node("b", &["10.1.0.3"], &[], "p1", 2),
        ]);
        assert_eq!(
            who(&idx, "10.1.0.3", ALL, NO_MAC, None),
            "contested_address"
        );
    }

    #[test]
    fn configdrive_claims_in_one_project_fleet_count_as_written() {
        // One project: the deployer is the operator, whatever the CIDRs say.
        let idx = index(&[
            node("a", &[], &["192.0.2.1"], "p1", 1),
            node("b", &[], &["192.0.2.2"], "p1", 2),
        ]);
        assert!(!idx.multi_project());
        assert_eq!(who(&idx, "192.0.2.1", ALL, NO_MAC, None), "a");
        // Two configdrives of the one project contest an address.
        let idx = index(&[
            node("a", &[], &["192.0.2.1"], "p1", 1),
            node("b", &[], &["192.0.2.1"], "p1", 2),
        ]);
        assert_eq!(
            who(&idx, "192.0.2.1", ALL, NO_MAC, None),
            "contested_address"
        );
    }

    #[test]
    fn configdrive_claims_of_several_projects_count_inside_their_cidrs() {
        let idx = index(&[
            node("a", &[], &["10.1.0.5", "10.2.0.5"], "p1", 1),
            node("b", &[], &["10.2.0.6", "10.2.0.5"], "p2", 2),
            node("c", &[], &["10.2.0.7"], "p1", 3),
            node("d", &[], &["10.1.0.8", "10.2.0.8"], "p1", 4),
            node("e", &[], &["10.1.0.8"], "p1", 5),
        ]);
        assert!(idx.multi_project());
        // Inside its project's CIDRs.
        assert_eq!(who(&idx, "10.1.0.5", ALL, NO_MAC, None), "a");
        assert_eq!(who(&idx, "10.2.0.6", ALL, NO_MAC, None), "b");
        // Two projects claim 10.2.0.5: only p2's claim is inside its CIDRs.
        assert_eq!(who(&idx, "10.2.0.5", ALL, NO_MAC, None), "b");
        // Outside: ignored.
        assert_eq!(who(&idx, "10.2.0.7", ALL, NO_MAC, None), "unknown_address");
        // Two configdrives of one project inside its CIDRs contest.
        assert_eq!(
            who(&idx, "10.1.0.8", ALL, NO_MAC, None),
            "contested_address"
        );
        assert_eq!(
            idx.out_of_scope(&Cidrs),
            [("10.2.0.5", "a"), ("10.2.0.7", "c"), ("10.2.0.8", "d")]
                .map(|(ip, n)| (ip.parse().unwrap(), n.to_string()))
                .to_vec()
        );
    }

    #[test]
    fn a_mac_verifies_a_claim_outside_the_cidrs() {
        let idx = index(&[
            node("c", &[], &["10.2.0.7"], "p1", 3),
            node("x", &["10.2.0.9"], &[], "p2", 4),
        ]);
        assert_eq!(who(&idx, "10.2.0.7", ALL, (true, false), Some(mac(3))), "c");
        // Another MAC does not.
        assert_eq!(
            who(&idx, "10.2.0.7", ALL, (true, false), Some(mac(4))),
            "unknown_address"
        );
        // A zone that does not read MACs ignores the claim.
        assert_eq!(
            who(&idx, "10.2.0.7", ALL, NO_MAC, Some(mac(3))),
            "unknown_address"
        );
    }

    #[test]
    fn a_configdrive_claim_loses_to_another_nodes_port() {
        // evil's configdrive claims the DHCP lease of `dhcp`, whose port has MAC :07.
        let idx = index(&[
            node("dhcp", &[], &[], "p1", 7),
            node("evil", &[], &["10.1.0.4"], "p1", 9),
        ]);
        // A zone that identifies by MAC serves the port's owner.
        assert_eq!(
            who(&idx, "10.1.0.4", ALL, (true, true), Some(mac(7))),
            "dhcp"
        );
        // One that only verifies refuses.
        assert_eq!(
            who(&idx, "10.1.0.4", ALL, (true, false), Some(mac(7))),
            "mac_mismatch"
        );
        // Without MAC rules the single-project fleet's claim stands: the operator deployed it.
        assert_eq!(who(&idx, "10.1.0.4", ALL, NO_MAC, None), "evil");
    }

    #[test]
    fn a_zone_narrows_the_sources_it_accepts() {
        let idx = index(&[
            node("a", &["10.1.0.1"], &[], "p1", 1),
            node("b", &[], &["10.1.0.2"], "p1", 2),
        ]);
        let node_mac = &[Source::Node, Source::Mac];
        assert_eq!(who(&idx, "10.1.0.1", node_mac, NO_MAC, None), "a");
        assert_eq!(
            who(&idx, "10.1.0.2", node_mac, NO_MAC, None),
            "unknown_address"
        );
        // ... and b is still found by its MAC where the zone identifies by MAC.
        assert_eq!(
            who(&idx, "10.1.0.2", node_mac, (true, true), Some(mac(2))),
            "b"
        );
        let drive = &[Source::Configdrive];
        assert_eq!(
            who(&idx, "10.1.0.1", drive, NO_MAC, None),
            "unknown_address"
        );
        assert_eq!(who(&idx, "10.1.0.2", drive, NO_MAC, None), "b");
    }

    #[test]
    fn a_link_local_client_is_its_mac_on_its_interface() {
        let idx = index(&[node("a", &["10.1.0.1"], &[], "p1", 1)]);
        assert_eq!(who(&idx, "fe80::1", ALL, NO_MAC, Some(mac(1))), "a");
        assert_eq!(
            who(&idx, "fe80::1", ALL, NO_MAC, Some(mac(8))),
            "unknown_address"
        );
        assert_eq!(who(&idx, "fe80::1", ALL, NO_MAC, None), "mac_unverifiable");
        let no_mac = &[Source::Node, Source::Configdrive];
        assert_eq!(
            who(&idx, "fe80::1", no_mac, NO_MAC, Some(mac(1))),
            "unknown_address"
        );
    }
}
