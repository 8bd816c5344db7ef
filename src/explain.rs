//! Why an address gets the answer it gets: its zone and the zone's rules, every claim on it
//! with its node and who wrote it, which claim decides and why (or why none does), the
//! node's provision state, and the status and refusal a request would get.
//!
//! The verdict is the request path's own: the zone from admission's [`zone_of`], the rules
//! from [`mac_rule`], the node from [`decide`] (what [`crate::identity::link::identify`]
//! asks), the status from [`Refusal::reply`]. Only the standing given to each claim is
//! worded here, and it is checked against the verdict. Nothing of a node's data is shown:
//! no user data, keys or passwords, only UUIDs, names, states, projects, addresses, MACs.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use macaddr::MacAddr6;
use serde::Serialize;

use crate::admit::{mac_rule, path_allowed, route_refusal, zone_of, Seen};
use crate::identity::link::{decide, is_link_local, Basis, Client, Rules};
use crate::identity::neighbour::{mac_text, Neighbours, L2};
use crate::identity::{Index, Source};
use crate::metadata::render::{self, TreeOptions};
use crate::metadata::route;
use crate::node::{ConfigDrive, NodeView};
use crate::policy::{Action, ActiveZone, Policy, TokenMode};
use crate::reply::{Denied, Refusal};

/// What is asked about: a client address, for an IPv6 link-local one the interface it asks
/// on, and the MAC it would ask with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Query {
    pub(crate) ip: IpAddr,
    pub(crate) interface: Option<String>,
    /// The interface's index on this host, `0` when not known (offline).
    pub(crate) scope: u32,
    pub(crate) mac: Option<MacAddr6>,
    /// The client asks directly, not through one of its zone's trusted proxies.
    pub(crate) direct: bool,
    /// The path the request asks for.
    pub(crate) path: String,
}

/// The path explained when none is given: the first cloud-init's OpenStack source reads.
pub(crate) const DEFAULT_PATH: &str = "/openstack/latest/meta_data.json";

impl Query {
    /// An address (`fe80::1%eth1` names its interface too), a MAC, an interface and a path
    /// as an operator writes them; what is wrong with them in one line.
    pub(crate) fn parse(
        address: &str,
        mac: Option<&str>,
        interface: Option<&str>,
        path: Option<&str>,
    ) -> Result<Query, String> {
        let address = address.trim();
        let (ip, scoped) = match address.split_once('%') {
            Some((ip, i)) => (ip, Some(i)),
            None => (address, None),
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{} is not an IP address", shown(address)))?;
        let mac = mac
            .map(|m| {
                m.trim()
                    .parse::<MacAddr6>()
                    .map_err(|_| format!("{} is not a MAC address", shown(m)))
            })
            .transpose()?;
        let interface = match (scoped, interface) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "{} names interface {a:?}, not {b:?}",
                    shown(address)
                ))
            }
            (a, b) => a.or(b).map(str::to_string),
        };
        if let Some(i) = &interface {
            if !is_link_local(ip) {
                return Err("an interface is given only with an IPv6 link-local address".into());
            }
            if i.is_empty() || i.len() > 15 || i.contains(['/', '%', ' ']) {
                return Err(format!("{} is not an interface name", shown(i)));
            }
        }
        let path = path.unwrap_or(DEFAULT_PATH);
        if !path.starts_with('/') || path.len() > 1024 || path.chars().any(char::is_control) {
            return Err(format!("{} is not a path (/...)", shown(path)));
        }
        Ok(Query {
            ip: ip.to_canonical(),
            interface,
            scope: 0,
            mac,
            direct: true,
            path: path.to_string(),
        })
    }
}

/// Operator input quoted in a message, cut short.
fn shown(s: &str) -> String {
    let cut: String = s.chars().take(64).collect();
    format!("{cut:?}")
}

/// The whole explanation, as `explain --json` prints it and `/explain` answers it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Explanation {
    pub(crate) address: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) interface: Option<String>,
    /// The client's policy zone; `None`: in no zone.
    pub(crate) zone: Option<ZoneRules>,
    /// What the link layer said, when the decision asked it.
    pub(crate) link: Option<LinkSeen>,
    pub(crate) claims: Vec<Claim>,
    pub(crate) decision: Decision,
    /// The node decided on, or the one the refusal concerns.
    pub(crate) node: Option<NodeState>,
    pub(crate) answer: Answer,
    pub(crate) notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ZoneRules {
    pub(crate) name: String,
    pub(crate) action: &'static str,
    /// The zone's rules in one line, as `policy check` prints them.
    pub(crate) summary: String,
    pub(crate) verify_mac: bool,
    pub(crate) identify_by_mac: bool,
    /// The claim sources that identify a client in this zone.
    pub(crate) identity_sources: Vec<&'static str>,
    pub(crate) tokens: &'static str,
    pub(crate) trusted_proxies: Vec<String>,
    pub(crate) paths: Vec<String>,
    pub(crate) deny_paths: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct LinkSeen {
    /// The client's MAC, when there was one.
    pub(crate) mac: Option<String>,
    /// `given` (by the question) or `neighbour_table` (this host's kernel).
    pub(crate) from: &'static str,
    /// What the link layer said, in words.
    pub(crate) says: String,
}

/// One claim that the address (or the client's MAC) is a node's.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Claim {
    pub(crate) node: String,
    pub(crate) name: Option<String>,
    /// `node` (its network_data), `configdrive` (its network_data) or `mac` (a port).
    pub(crate) source: &'static str,
    /// Who writes that source.
    pub(crate) written_by: &'static str,
    pub(crate) project: Option<String>,
    pub(crate) standing: Standing,
    pub(crate) why: String,
}

/// What became of a claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Standing {
    /// It decided: the client is this node.
    Wins,
    /// The client's MAC is a port of the node a claim on the address names.
    Verifies,
    /// Other nodes claim the same with the same weight: none of them wins.
    Contested,
    /// A configdrive claim on an address the operator's records give a node.
    Overruled,
    /// A configdrive claim outside the CIDRs the policy gives the node's project.
    OutOfProjectScope,
    /// The zone does not accept claims from this source.
    NotAccepted,
    /// The zone verifies MACs and the client's MAC is not a port of this node.
    MacMismatch,
    /// A configdrive claim that lost to the port of another node.
    LostToPort,
    /// The node is not in a served provision state.
    NotServed,
    /// Not needed for the decision (a MAC where the address decided, or a zone that does
    /// not read MACs).
    NotUsed,
    /// The claim stands, but the request is refused for another reason.
    Undecided,
    /// The request is refused before identity (no zone, a zone that denies).
    NotWeighed,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Decision {
    /// The node the client is; `None`: no node.
    pub(crate) node: Option<String>,
    /// What decided, when a node was found.
    pub(crate) basis: Option<&'static str>,
    pub(crate) why: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct NodeState {
    pub(crate) uuid: String,
    pub(crate) name: Option<String>,
    pub(crate) provision_state: Option<String>,
    pub(crate) served: bool,
    pub(crate) project: Option<String>,
    /// The MACs of its Ironic ports and portgroups.
    pub(crate) ports: Vec<String>,
    /// `readable`, `none`, or `unreadable: <why>` (its files then answer 404).
    pub(crate) configdrive: String,
}

/// What a request for the path gets.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Answer {
    pub(crate) path: String,
    pub(crate) status: u16,
    /// The refusal's reason label (audit lines, `metadata_requests_denied_total`).
    pub(crate) reason: Option<&'static str>,
    /// The body a refused client reads.
    pub(crate) body: Option<String>,
}

impl Explanation {
    /// The explanation for a person to read.
    pub(crate) fn text(&self) -> String {
        let mut out = String::new();
        let mut line = |label: &str, text: &str| {
            out.push_str(&format!("{label:<9} {text}\n"));
        };
        let address = match &self.interface {
            Some(i) => format!("{}%{i}", self.address),
            None => self.address.to_string(),
        };
        line("address", &address);
        let zone = self
            .zone
            .as_ref()
            .map_or("none: the address is in no zone".into(), |z| {
                format!("{} ({}): {}", z.name, z.action, z.summary)
            });
        line("zone", &zone);
        if let Some(l) = &self.link {
            let from = l.from.replace('_', " ");
            line("link", &format!("{} ({from})", l.says));
        }
        line("claims", if self.claims.is_empty() { "none" } else { "" });
        for c in &self.claims {
            let name = c
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let project = c
                .project
                .as_deref()
                .map(|p| format!(", project {p}"))
                .unwrap_or_default();
            let standing = serde_json::to_value(c.standing).unwrap_or_default();
            let standing = standing.as_str().unwrap_or("");
            out.push_str(&format!(
                "  {}{name}: {} claim, written by the {}{project}: {standing}\n      {}\n",
                c.node, c.source, c.written_by, c.why
            ));
        }
        let decision = match &self.decision.node {
            Some(n) => format!("node {n}: {}", self.decision.why),
            None => format!("no node: {}", self.decision.why),
        };
        let mut line = |label: &str, text: &str| {
            out.push_str(&format!("{label:<9} {text}\n"));
        };
        line("decision", &decision);
        if let Some(n) = &self.node {
            let name = n
                .name
                .as_deref()
                .map(|n| format!(" ({n})"))
                .unwrap_or_default();
            let state = n.provision_state.as_deref().unwrap_or("unknown");
            let served = if n.served { "served" } else { "not served" };
            let ports = if n.ports.is_empty() {
                "none".into()
            } else {
                n.ports.join(", ")
            };
            line(
                "node",
                &format!(
                    "{}{name}: provision state {state:?}, {served}; ports {ports}; configdrive {}",
                    n.uuid, n.configdrive
                ),
            );
        }
        let (a, path) = (&self.answer, &self.answer.path);
        let answer = match (&a.reason, &a.body) {
            (Some(r), Some(b)) => format!("{} {r} for {path}: {b:?}", a.status),
            _ => format!("{} for {path} (the node's document)", a.status),
        };
        line("answer", &answer);
        for n in &self.notes {
            line("note", n);
        }
        out
    }
}

/// Where the client's MAC comes from when the question gives none.
pub(crate) enum LinkLayer<'a> {
    /// This host's neighbour table (the running service).
    Live(&'a dyn Neighbours),
    /// Nowhere: the question is asked away from the nodes' segment.
    Offline,
}

/// The explanation of `query` under `policy`, over `index`; `ready`: an inventory has been
/// loaded.
pub(crate) fn explain(
    index: &Index,
    policy: &Policy,
    link: LinkLayer<'_>,
    query: &Query,
    ready: bool,
) -> Explanation {
    let ip = query.ip.to_canonical();
    let active = policy.zone_for(ip);
    let mut notes = active.map(zone_notes).unwrap_or_default();
    let asked = Asked {
        given: query.mac,
        offline: matches!(link, LinkLayer::Offline),
        named_interface: query.interface.is_some(),
        inner: match link {
            LinkLayer::Live(n) => Some(n),
            LinkLayer::Offline => None,
        },
        seen: Mutex::new(None),
    };
    let admitted = zone_of(policy, ip, &mut Seen::default()).and_then(|zone| {
        let route = route::parse(&query.path).map_err(route_refusal)?;
        if !path_allowed(&zone.zone, &route) {
            return Err(Refusal::PathDenied.into());
        }
        Ok((zone, route))
    });
    let weighed = match &admitted {
        Err(gate) => Err(gate.clone()),
        Ok((zone, _)) => {
            let rules = Rules {
                mac: mac_rule(&zone.zone, query.direct),
                sources: zone.zone.sources,
                scopes: policy,
            };
            let client = Client {
                ip,
                scope: query.scope,
            };
            let verdict = decide(index, &asked, client, &rules);
            let verdict = crate::handle::until_loaded(verdict, || ready);
            Ok((rules, verdict))
        }
    };
    let link = asked.seen();
    if link.as_ref().is_some_and(|l| l.mac.is_none()) && asked.offline && query.mac.is_none() {
        notes.push("the zone reads the client's MAC: give it (--mac) to see the answer".into());
    }
    let mac = query.mac.or(link
        .as_ref()
        .and_then(|l| l.mac.as_deref())
        .and_then(|m| m.parse().ok()));
    let claims = claims(index, ip, mac, &weighed, link.is_some());
    // The node's document, rendered as the request path renders it (and never shown).
    let rendered = match (&weighed, &admitted) {
        (Ok((_, Ok((node, _)))), Ok((_, route))) => {
            render::render(node, route, ip, &TreeOptions::default()).err()
        }
        _ => None,
    };
    let (decision, mut answer, node) = verdict(index, &weighed, rendered);
    answer.path = query.path.clone();
    Explanation {
        address: ip,
        interface: query.interface.clone(),
        zone: active.map(zone_rules),
        link,
        claims,
        decision,
        node: node.map(|n| node_state(index, &n)),
        answer,
        notes,
    }
}

/// The verdict of admission and identity, for the explanation.
type Weighed<'a> = Result<(Rules<'a>, Result<(Arc<NodeView>, Basis), Denied>), Denied>;

/// The answer of a refusal.
fn refused(refusal: Refusal) -> Answer {
    let reply = refusal.reply();
    Answer {
        path: String::new(),
        status: reply.status,
        reason: Some(refusal.reason()),
        body: Some(String::from_utf8_lossy(&reply.body).trim_end().to_string()),
    }
}

/// The decision, the answer and the node concerned; `rendered`: the refusal of the node's
/// document, if it has none to give.
fn verdict(
    index: &Index,
    weighed: &Weighed<'_>,
    rendered: Option<Refusal>,
) -> (Decision, Answer, Option<Arc<NodeView>>) {
    let denied = match weighed {
        Ok((_, Ok((node, basis)))) => {
            let decision = Decision {
                node: Some(node.uuid.clone()),
                basis: Some(basis_name(basis)),
                why: basis_why(node, basis),
            };
            let answer = rendered.map_or(
                Answer {
                    path: String::new(),
                    status: 200,
                    reason: None,
                    body: None,
                },
                refused,
            );
            return (decision, answer, Some(node.clone()));
        }
        Ok((_, Err(d))) | Err(d) => d,
    };
    let answer = refused(denied.refusal);
    let why = denied
        .detail
        .clone()
        .unwrap_or_else(|| refusal_words(denied.refusal).to_string());
    let why = match weighed {
        Err(_) => format!("refused before identity: {why}"),
        Ok(_) => why,
    };
    let node = denied.node.as_deref().and_then(|u| by_uuid(index, u));
    let decision = Decision {
        node: None,
        basis: None,
        why,
    };
    (decision, answer, node)
}

/// Why a refusal without a detail is made.
fn refusal_words(r: Refusal) -> &'static str {
    match r {
        Refusal::ZoneDenied => "the zone denies",
        Refusal::NoZone => "the address is in no zone of the policy",
        _ => r.reason(),
    }
}

fn by_uuid(index: &Index, uuid: &str) -> Option<Arc<NodeView>> {
    index.nodes().iter().find(|n| n.uuid == uuid).cloned()
}

fn basis_name(b: &Basis) -> &'static str {
    match b {
        Basis::NodeClaim => "node_claim",
        Basis::ConfigdriveClaim => "configdrive_claim",
        Basis::ConfigdriveVerifiedByMac => "configdrive_claim_verified_by_mac",
        Basis::PortOverConfigdrive { .. } => "port_over_configdrive",
        Basis::Port => "port",
    }
}

fn basis_why(node: &NodeView, b: &Basis) -> String {
    let n = &node.uuid;
    match b {
        Basis::NodeClaim => format!(
            "the network_data of node {n}, which the operator writes, claims the address"
        ),
        Basis::ConfigdriveClaim => format!(
            "the configdrive of node {n} claims the address, and nothing the operator wrote says otherwise"
        ),
        Basis::ConfigdriveVerifiedByMac => format!(
            "the configdrive of node {n} claims the address outside its project's CIDRs, and the client's MAC is a port of node {n}"
        ),
        Basis::PortOverConfigdrive { claimant, mac } => format!(
            "the configdrive of node {claimant} claims the address, but the client's MAC {} is a port of node {n}: the operator's record wins",
            mac_text(mac)
        ),
        Basis::Port => format!("the client's MAC is a port of node {n}"),
    }
}

fn node_state(index: &Index, node: &NodeView) -> NodeState {
    let served = index
        .nodes()
        .iter()
        .position(|n| n.uuid == node.uuid)
        .is_some_and(|i| {
            matches!(
                index.node_lookup(i as u32),
                crate::identity::Lookup::Found(_)
            )
        });
    NodeState {
        uuid: node.uuid.clone(),
        name: node.name.clone(),
        provision_state: node.provision_state.as_deref().map(str::to_string),
        served,
        project: node.project.as_deref().map(str::to_string),
        ports: node.macs.iter().map(mac_text).collect(),
        configdrive: match &node.configdrive {
            ConfigDrive::Absent => "none".into(),
            ConfigDrive::Contents(_) => "readable".into(),
            ConfigDrive::Unreadable(why) => format!("unreadable: {why}"),
        },
    }
}

fn zone_rules(z: &ActiveZone) -> ZoneRules {
    let zone = &z.zone;
    let list = |v: &[crate::policy::PathRule]| v.iter().map(|p| p.to_string()).collect();
    ZoneRules {
        name: zone.name.clone(),
        action: match zone.action {
            Action::Allow => "allow",
            Action::Deny => "deny",
        },
        summary: zone.summary(),
        verify_mac: zone.verify_mac,
        identify_by_mac: zone.identify_by_mac,
        identity_sources: zone.sources.names(),
        tokens: match zone.tokens {
            TokenMode::Optional => "optional",
            TokenMode::Required => "required",
        },
        trusted_proxies: zone.trusted_proxies.iter().map(|n| n.to_string()).collect(),
        paths: list(&zone.paths),
        deny_paths: list(&zone.deny_paths),
    }
}

/// What else a request from this zone meets before identity.
fn zone_notes(z: &ActiveZone) -> Vec<String> {
    let zone = &z.zone;
    let mut notes = Vec::new();
    if zone.action == Action::Allow && zone.tokens == TokenMode::Required {
        notes.push(
            "the zone requires a session token: a request without one is refused first (401 token_required)"
                .to_string(),
        );
    }
    let only_root = zone.paths.len() == 1 && zone.paths[0].to_string() == "/";
    if zone.action == Action::Allow && (!only_root || !zone.deny_paths.is_empty()) {
        notes.push(format!(
            "the zone serves only some paths ({}): others are refused (403 path_denied)",
            zone.summary()
        ));
    }
    notes
}

/// The link layer as the decision sees it: the given MAC, else the live table, else
/// nothing; what it answered is kept.
struct Asked<'a> {
    given: Option<MacAddr6>,
    offline: bool,
    named_interface: bool,
    inner: Option<&'a dyn Neighbours>,
    seen: Mutex<Option<LinkSeen>>,
}

impl Asked<'_> {
    fn answer(
        &self,
        live: impl FnOnce(&dyn Neighbours) -> std::io::Result<L2>,
        scoped: bool,
    ) -> std::io::Result<L2> {
        let (answer, from) = match (self.given, self.inner) {
            (Some(m), _) => (Ok(L2::Mac(m)), "given"),
            (None, Some(n)) => (live(n), "neighbour_table"),
            // Away from the segment a link-local address has no interface to look on.
            (None, None) if scoped && !self.named_interface => {
                (Ok(L2::LinkLocal), "neighbour_table")
            }
            (None, None) => (Ok(L2::NoEntry), "neighbour_table"),
        };
        let says = match &answer {
            Ok(l2) => l2.describe(),
            Err(e) => format!("neighbour lookup failed: {e}"),
        };
        let says = if self.offline && self.given.is_none() {
            "no MAC given".to_string()
        } else {
            says
        };
        let mac = match &answer {
            Ok(L2::Mac(m)) => Some(mac_text(m)),
            _ => None,
        };
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(LinkSeen { mac, from, says });
        answer
    }

    fn seen(&self) -> Option<LinkSeen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Neighbours for Asked<'_> {
    fn resolve(&self, ip: IpAddr) -> std::io::Result<L2> {
        self.answer(|n| n.resolve(ip), false)
    }

    fn resolve_scoped(&self, ip: std::net::Ipv6Addr, ifindex: u32) -> std::io::Result<L2> {
        self.answer(|n| n.resolve_scoped(ip, ifindex), true)
    }
}

/// Every claim on `ip` (and on `mac`, when known), with what became of it.
fn claims(
    index: &Index,
    ip: IpAddr,
    mac: Option<MacAddr6>,
    weighed: &Weighed<'_>,
    link_read: bool,
) -> Vec<Claim> {
    let mut out = Vec::new();
    if let Some(c) = index.claims(ip) {
        for i in &c.node {
            let (standing, why) = node_claim(index, *i, &c.node, weighed);
            out.push(claim(index.node(*i), Source::Node, standing, why));
        }
        for i in &c.configdrive {
            let (standing, why) = drive_claim(index, ip, *i, weighed);
            out.push(claim(index.node(*i), Source::Configdrive, standing, why));
        }
    }
    if let Some(mac) = mac {
        let owners = index.mac_claims(mac);
        for i in owners {
            let (standing, why) = mac_claim(index, *i, owners, weighed, link_read);
            out.push(claim(index.node(*i), Source::Mac, standing, why));
        }
    }
    out
}

fn claim(node: &NodeView, source: Source, standing: Standing, why: String) -> Claim {
    Claim {
        node: node.uuid.clone(),
        name: node.name.clone(),
        source: source.name(),
        written_by: match source {
            Source::Configdrive => "deployer",
            Source::Node | Source::Mac => "operator",
        },
        project: node.project.as_deref().map(str::to_string),
        standing,
        why,
    }
}

/// The winner of a decision and the refusal of a failed one.
fn outcome<'w>(weighed: &'w Weighed<'_>) -> (Option<(&'w str, &'w Basis)>, Option<&'w Denied>) {
    match weighed {
        Ok((_, Ok((node, basis)))) => (Some((node.uuid.as_str(), basis)), None),
        Ok((_, Err(d))) => (None, Some(d)),
        Err(_) => (None, None),
    }
}

/// A refusal about node `uuid` itself: its MAC, its provision state.
fn refused_for(denied: Option<&Denied>, uuid: &str) -> Option<(Standing, String)> {
    let d = denied.filter(|d| d.node.as_deref() == Some(uuid))?;
    let standing = match d.refusal {
        Refusal::MacMismatch => Standing::MacMismatch,
        Refusal::NodeNotServed => Standing::NotServed,
        _ => return None,
    };
    Some((standing, d.detail.clone().unwrap_or_default()))
}

/// The claim stands; the request is refused for `denied`'s reason.
fn undecided(denied: Option<&Denied>) -> (Standing, String) {
    let why = denied.map_or(String::new(), |d| {
        let detail = d.detail.as_deref().unwrap_or(d.refusal.reason());
        format!("the claim stands, but the request is refused: {detail}")
    });
    (Standing::Undecided, why)
}

fn not_weighed() -> (Standing, String) {
    (
        Standing::NotWeighed,
        "the request is refused before identity".into(),
    )
}

fn node_claim(index: &Index, i: u32, all: &[u32], weighed: &Weighed<'_>) -> (Standing, String) {
    let Ok((rules, _)) = weighed else {
        return not_weighed();
    };
    let (winner, denied) = outcome(weighed);
    let uuid = index.uuid(i);
    if !rules.sources.accepts(Source::Node) {
        return not_accepted(rules, Source::Node);
    }
    if winner.is_some_and(|(w, b)| w == uuid && *b == Basis::NodeClaim) {
        return (Standing::Wins, "written by the operator: it decides".into());
    }
    if all.len() > 1 {
        let others = index.uuids(all).join(", ");
        return (
            Standing::Contested,
            format!("the network_data of nodes {others} all claim the address: none is answered"),
        );
    }
    refused_for(denied, uuid).unwrap_or_else(|| undecided(denied))
}

fn not_accepted(rules: &Rules<'_>, source: Source) -> (Standing, String) {
    (
        Standing::NotAccepted,
        format!(
            "the zone does not accept {} claims: its identity_sources are {}",
            source.name(),
            rules.sources.names().join(", ")
        ),
    )
}

fn drive_claim(index: &Index, ip: IpAddr, i: u32, weighed: &Weighed<'_>) -> (Standing, String) {
    let Ok((rules, _)) = weighed else {
        return not_weighed();
    };
    let (winner, denied) = outcome(weighed);
    let uuid = index.uuid(i);
    let wins = |basis: &Basis| winner.is_some_and(|(w, b)| w == uuid && b == basis);
    let claims = index.claims(ip).cloned().unwrap_or_default();
    if !claims.node.is_empty() {
        let owners = index.uuids(&claims.node).join(", ");
        return (
            Standing::Overruled,
            format!(
                "the network_data of node {owners}, which the operator writes, holds the address"
            ),
        );
    }
    if !rules.sources.accepts(Source::Configdrive) {
        return not_accepted(rules, Source::Configdrive);
    }
    if !index.deployer_may_claim(i, ip, rules.scopes) {
        if wins(&Basis::ConfigdriveVerifiedByMac) {
            return (
                Standing::Wins,
                "outside its project's CIDRs, but the client's MAC is a port of this node".into(),
            );
        }
        let project = index.node(i).project.as_deref().unwrap_or("-");
        return (
            Standing::OutOfProjectScope,
            format!("the address is outside the CIDRs the policy gives project {project} (a MAC that is a port of this node would verify it)"),
        );
    }
    if wins(&Basis::ConfigdriveClaim) {
        return (
            Standing::Wins,
            "nothing the operator wrote names the address: the deployer's claim decides".into(),
        );
    }
    let honoured = claims
        .configdrive
        .iter()
        .filter(|j| index.deployer_may_claim(**j, ip, rules.scopes))
        .count();
    if honoured > 1 {
        return (
            Standing::Contested,
            "the configdrives of other nodes claim it too: none is answered".into(),
        );
    }
    if let Some((owner, Basis::PortOverConfigdrive { claimant, .. })) = winner {
        if claimant == uuid {
            return (
                Standing::LostToPort,
                format!("the client's MAC is a port of node {owner}"),
            );
        }
    }
    refused_for(denied, uuid).unwrap_or_else(|| undecided(denied))
}

fn mac_claim(
    index: &Index,
    i: u32,
    owners: &[u32],
    weighed: &Weighed<'_>,
    link_read: bool,
) -> (Standing, String) {
    if weighed.is_err() {
        return not_weighed();
    }
    let (winner, denied) = outcome(weighed);
    let uuid = index.uuid(i);
    let by_port = winner.is_some_and(|(w, b)| {
        w == uuid && matches!(b, Basis::Port | Basis::PortOverConfigdrive { .. })
    });
    if by_port {
        return (
            Standing::Wins,
            "the client's MAC is a port of this node".into(),
        );
    }
    if owners.len() > 1 {
        let all = index.uuids(owners).join(", ");
        return (
            Standing::Contested,
            format!("the MAC is a port of nodes {all}: none is answered"),
        );
    }
    if !link_read {
        return (
            Standing::NotUsed,
            "the decision did not read the client's MAC (the zone neither verifies nor identifies by MAC, or the address decided first)".into(),
        );
    }
    if winner.is_some_and(|(w, _)| w == uuid) {
        return (
            Standing::Verifies,
            "the client's MAC is a port of the node the address names".into(),
        );
    }
    if let Some(found) = refused_for(denied, uuid) {
        return found;
    }
    (
        Standing::NotUsed,
        "a MAC identifies a client only when no claim on its address decides and the zone has identify_by_mac".into(),
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Checks that what `e` says of its claims agrees with its verdict: a node answered is
    /// the one claim that wins, a refusal has no winner.
    pub(crate) fn assert_consistent(e: &Explanation) {
        let winners: Vec<&Claim> = e
            .claims
            .iter()
            .filter(|c| c.standing == Standing::Wins)
            .collect();
        match &e.decision.node {
            Some(node) => {
                // The node's document, or the refusal of it (a configdrive unreadable).
                assert!(
                    e.answer.status == 200 || e.answer.reason.is_some(),
                    "{e:#?}"
                );
                assert_eq!(winners.len(), 1, "one winning claim: {e:#?}");
                assert_eq!(&winners[0].node, node, "{e:#?}");
            }
            None => {
                assert!(winners.is_empty(), "a winner without a node: {e:#?}");
                assert!(e.answer.reason.is_some(), "{e:#?}");
            }
        }
    }

    /// Checks that `e` tells what identity decided (`got`): the node, or the refusal with
    /// its reason, status, node and detail, as the request path's audit line has them.
    pub(crate) fn assert_agrees(e: &Explanation, got: &Result<Arc<NodeView>, Denied>) {
        assert_consistent(e);
        match got {
            Ok(node) => {
                assert_eq!(
                    e.decision.node.as_deref(),
                    Some(node.uuid.as_str()),
                    "{e:#?}"
                );
            }
            Err(d) => {
                assert_eq!(e.answer.reason, Some(d.refusal.reason()), "{e:#?}");
                assert_eq!(e.answer.status, d.refusal.reply().status, "{e:#?}");
                assert_eq!(
                    e.node.as_ref().map(|n| n.uuid.as_str()),
                    d.node.as_deref(),
                    "{e:#?}"
                );
                if let Some(detail) = &d.detail {
                    assert_eq!(&e.decision.why, detail, "{e:#?}");
                }
            }
        }
    }

    #[test]
    fn questions_are_parsed_or_refused_in_one_line() {
        let q = Query::parse("fe80::1%eth1", Some("52:54:00:00:00:0A"), None, None).unwrap();
        assert_eq!(q.path, DEFAULT_PATH);
        assert_eq!(q.interface.as_deref(), Some("eth1"));
        assert_eq!(q.mac, Some(MacAddr6::new(0x52, 0x54, 0, 0, 0, 0x0a)));
        let q = Query::parse("::ffff:10.0.0.1", None, None, Some("/latest")).unwrap();
        assert_eq!(q.path, "/latest");
        assert_eq!(q.ip, "10.0.0.1".parse::<IpAddr>().unwrap());
        for (address, mac, interface, error) in [
            ("10.0.0.x", None, None, "\"10.0.0.x\" is not an IP address"),
            (
                "10.0.0.1",
                Some("52:54:00"),
                None,
                "\"52:54:00\" is not a MAC address",
            ),
            (
                "10.0.0.1",
                None,
                Some("eth0"),
                "an interface is given only with an IPv6 link-local address",
            ),
            (
                "fe80::1%eth0",
                None,
                Some("eth1"),
                "\"fe80::1%eth0\" names interface \"eth0\", not \"eth1\"",
            ),
            (
                "fe80::1",
                None,
                Some("a/b"),
                "\"a/b\" is not an interface name",
            ),
        ] {
            let e = Query::parse(address, mac, interface, None).unwrap_err();
            assert_eq!(e, error);
            assert!(!e.contains('\n'));
        }
    }
}
