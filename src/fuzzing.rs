//! One entry point per parser that meets untrusted input, for the fuzz targets in `fuzz/`
//! and for `tests/fuzz_corpus.rs`, which replays the checked-in seeds and every input that
//! once failed. Each function takes arbitrary bytes, must never panic, and asserts the
//! parser's invariants where it has any (a panic here is a finding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::time::{Duration, SystemTime};

use base64::Engine;
use ipnet::IpNet;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

use crate::identity::link::{identify, Client, MacRule, Rules};
use crate::identity::neighbour::{Neighbours, L2};
use crate::identity::{Index, Lookup, ProjectScopes, Sources};
use crate::ironic::model::{Inventory, Node};
use crate::metadata::render;
use crate::metadata::route::{self, Route};
use crate::node::configdrive;
use crate::policy::{file, forwarded, token, Policy};
use crate::reply::{Refusal, JSON};

/// Request path → route. The route never leaves the trees: no empty, `.` or `..`
/// segment, no `/` inside a segment, and normalising is idempotent.
pub fn route(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(segs) = route::normalise(path) else {
        return;
    };
    for s in &segs {
        assert!(
            !s.is_empty() && s != "." && s != ".." && !s.contains('/'),
            "segment {s:?} of {path:?}"
        );
    }
    // The normalised path, written back with every segment percent-encoded, normalises to
    // the same segments (no second decoding pass changes anything).
    let again: String = segs
        .iter()
        .map(|s| format!("/{}", utf8_percent_encode(s, NON_ALPHANUMERIC)))
        .collect();
    if let Ok(segs2) = route::normalise(&again) {
        assert_eq!(segs, segs2, "{path:?} → {again:?}");
    }
    match route::parse_normalised(segs) {
        Ok(Route::OpenStack {
            file: Some(file), ..
        }) => assert!(!file.contains('/') && file != ".."),
        Ok(Route::Ec2 { path, .. }) => assert!(path.iter().all(|s| s != ".." && !s.is_empty())),
        _ => {}
    }
}

/// Forwarded-header chain → client address. The first byte picks the header and the hop
/// limit, the rest is header lines. A parsed chain respects the hop limit, and the client
/// chosen is the peer or an address of the chain.
pub fn forwarded(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let values: Vec<&str> = text.split('\n').collect();
    let max_hops = usize::from(control & 0x0f) + 1;
    let parsed = if control & 0x80 == 0 {
        forwarded::parse_xff(&values, max_hops)
    } else {
        forwarded::parse_forwarded(&values, max_hops)
    };
    let Ok(chain) = parsed else {
        return;
    };
    assert!(chain.len() <= max_hops);
    let peer = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    // Trust the peer and, depending on the control byte, part of the chain.
    let mut trusted = vec![IpNet::from(peer)];
    if control & 0x40 != 0 {
        trusted.extend(chain.iter().take(chain.len() / 2).map(|&a| IpNet::from(a)));
    }
    let client = forwarded::client_from_chain(peer, &chain, &trusted);
    if chain.is_empty() {
        assert_eq!(client, peer);
        return;
    }
    // The client is a hop of the chain, and every hop to its right is a trusted proxy:
    // an address a client wrote into the header cannot jump over an untrusted hop.
    let at = chain
        .iter()
        .rposition(|&a| a == client)
        .unwrap_or_else(|| panic!("{client} is not in {chain:?}"));
    let is_trusted = |a: &IpAddr| trusted.iter().any(|n| n.contains(a));
    assert!(
        chain[at + 1..].iter().all(is_trusted),
        "{client} from {chain:?}"
    );
}

/// Policy file text → policy. A policy that parses re-validates: building it again from
/// the same text gives the same zones, and each zone owns the addresses of its CIDRs.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let Ok(set) = file::parse_files([(path, text)]) else {
        return;
    };
    let names: Vec<(String, Vec<IpNet>)> = set
        .zones
        .iter()
        .map(|z| (z.name.clone(), z.cidrs.clone()))
        .collect();
    let policy = Policy::build(set, None);
    for (name, cidrs) in &names {
        for net in cidrs {
            let zone = policy
                .zone_for(net.network())
                .expect("a CIDR's own address");
            // The most specific zone wins: it is this one or one at least as narrow.
            let owner = zone
                .zone
                .cidrs
                .iter()
                .filter(|c| c.contains(&net.network()))
                .map(|c| c.prefix_len())
                .max();
            assert!(
                zone.zone.name == *name || owner.is_some_and(|len| len >= net.prefix_len()),
                "{} owns {net} of zone {name}",
                zone.zone.name
            );
        }
    }
    let again = file::parse_files([(path, text)]).expect("the same text parses again");
    let rebuilt = Policy::build(again, Some(&policy));
    assert_eq!(policy.describe(), rebuilt.describe());
}

/// Paths every renderer is asked for by the node target.
const PATHS: &[&str] = &[
    "/",
    "/openstack",
    "/openstack/latest",
    "/openstack/latest/meta_data.json",
    "/openstack/latest/network_data.json",
    "/openstack/latest/vendor_data.json",
    "/openstack/latest/vendor_data2.json",
    "/openstack/latest/user_data",
    "/openstack/2012-08-10/meta_data.json",
    "/openstack/2013-04-04/password",
    "/latest/meta-data/",
    "/latest/meta-data/public-keys/",
    "/latest/meta-data/public-keys/0/openssh-key",
    "/latest/meta-data/block-device-mapping/",
    "/latest/meta-data/placement/availability-zone",
    "/latest/meta-data/local-ipv4",
    "/latest/meta-data/mac",
    "/latest/user-data",
    "/2009-04-04/meta-data/hostname",
];

/// Ironic answer (an inventory, or one node) → index → every file. No node is ever
/// answered for an address it does not claim, and every JSON file is valid JSON.
pub fn node(data: &[u8]) {
    let inventory = match serde_json::from_slice::<Inventory>(data) {
        Ok(inv) => inv,
        Err(_) => match serde_json::from_slice::<Node>(data) {
            Ok(node) => Inventory {
                nodes: vec![node],
                ports: Vec::new(),
                portgroups: Vec::new(),
            },
            Err(_) => return,
        },
    };
    let served: Vec<String> = ["active", "deploying", "wait call-back", "rescue"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let dns = [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53))];
    let (views, _) = crate::node::build(inventory, &dns, &mut Default::default());
    let index = Index::build(views, &served);
    let routes: Vec<Route> = PATHS.iter().filter_map(|p| route::parse(p).ok()).collect();
    for scopes in [&Everywhere as &dyn ProjectScopes, &Nowhere] {
        for view in index.nodes() {
            for &addr in view.node_addresses.iter().chain(&view.drive_addresses) {
                check_address(&index, scopes, addr, &routes);
            }
        }
    }
    // Each port MAC finds its own node, or is contested; never another node.
    for view in index.nodes() {
        for &mac in &view.macs {
            match index.lookup_mac(mac) {
                Lookup::Found(found) => assert!(std::sync::Arc::ptr_eq(&found, view), "{mac}"),
                Lookup::Contested(uuids) => {
                    assert!(uuids.len() >= 2 && uuids.contains(&view.uuid))
                }
                Lookup::NotServed { uuid, .. } => assert_eq!(uuid, view.uuid),
                Lookup::Unknown => panic!("{mac} of {} is not indexed", view.uuid),
            }
        }
    }
    // An address nobody claims finds nobody.
    let nobody = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xdead, 0, 0, 0, 0, 1));
    if index.claims(nobody).is_none() {
        let got = identify(&index, &NoLink, client(nobody), &rules(&Everywhere));
        assert_eq!(got.err().map(|d| d.refusal), Some(Refusal::UnknownAddress));
    }
}

/// Every project may claim every address.
struct Everywhere;
impl ProjectScopes for Everywhere {
    fn allows(&self, _: Option<&str>, _: IpAddr) -> bool {
        true
    }
}

/// No project may claim any address.
struct Nowhere;
impl ProjectScopes for Nowhere {
    fn allows(&self, _: Option<&str>, _: IpAddr) -> bool {
        false
    }
}

/// A neighbour table without entries.
struct NoLink;
impl Neighbours for NoLink {
    fn resolve(&self, _: IpAddr) -> std::io::Result<L2> {
        Ok(L2::NoEntry)
    }
    fn resolve_scoped(&self, _: Ipv6Addr, _: u32) -> std::io::Result<L2> {
        Ok(L2::NoEntry)
    }
}

fn client(ip: IpAddr) -> Client {
    Client { ip, scope: 0 }
}

fn rules(scopes: &dyn ProjectScopes) -> Rules<'_> {
    Rules {
        mac: MacRule {
            direct: true,
            ..MacRule::default()
        },
        sources: Sources::ALL,
        scopes,
    }
}

/// A node is answered for `addr` only when it claims it: in its own network data, or in
/// its configdrive where no node's own data claims it and the project may; then every file
/// renders, and every JSON file is valid JSON.
fn check_address(index: &Index, scopes: &dyn ProjectScopes, addr: IpAddr, routes: &[Route]) {
    match identify(index, &NoLink, client(addr), &rules(scopes)) {
        Ok(found) => {
            let claims = index.claims(addr).expect("a found address has claims");
            let by_node = found.node_addresses.contains(&addr);
            let by_drive = found.drive_addresses.contains(&addr)
                && claims.node.is_empty()
                && (!index.multi_project() || scopes.allows(found.project.as_deref(), addr));
            assert!(by_node || by_drive, "{addr} answered for {}", found.uuid);
            for r in routes {
                if let Ok(reply) = render::render(&found, r, addr) {
                    if reply.content_type == JSON && reply.status == 200 {
                        serde_json::from_slice::<Value>(&reply.body)
                            .expect("a JSON file is valid JSON");
                    }
                }
            }
        }
        Err(d) => {
            let ok = match d.refusal {
                Refusal::ContestedAddress | Refusal::NodeNotServed => true,
                // Deployer-written claims a multi-project policy does not honour.
                Refusal::UnknownAddress => index.multi_project(),
                // A link-local address names a host only with its interface and MAC.
                Refusal::MacUnverifiable => crate::identity::link::is_link_local(addr),
                _ => false,
            };
            assert!(ok, "{addr}: {:?} {:?}", d.refusal, d.detail);
        }
    }
}

/// Configdrive string → files. The first byte picks the form: 0 takes the rest as the
/// image bytes (raw or gzip, base64-encoded here as Ironic stores them), anything else as
/// the stored text itself. Decoded files respect the size limits.
pub fn configdrive(data: &[u8]) {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let text = if form == 0 {
        base64::engine::general_purpose::STANDARD.encode(rest)
    } else {
        String::from_utf8_lossy(rest).into_owned()
    };
    if let Ok(drive) = configdrive::decode(&text) {
        if let Some(u) = &drive.user_data {
            assert!(u.len() <= configdrive::MAX_FILE);
        }
        assert!(drive.meta_data.body().len() <= configdrive::MAX_IMAGE * 6);
    }
}

/// Session token text → claims. Nothing but a token this key issued for this address and
/// not yet expired verifies; issued tokens verify for their address only until expiry.
pub fn token(data: &[u8]) {
    let key = token::TokenKey::from_bytes([7u8; 32]);
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let client = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(
            key.verify(text, client, now).is_err(),
            "a token nobody issued verified: {text:?}"
        );
    }
    // Round trip with an address and TTL taken from the input.
    if data.len() >= 6 {
        let addr = IpAddr::V4(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        let ttl = u32::from(u16::from_be_bytes([data[4], data[5]])) % 21600 + 1;
        let issued = key.issue(addr, now, ttl);
        assert!(key.verify(&issued, addr, now).is_ok());
        let other = IpAddr::V4(Ipv4Addr::new(data[0] ^ 1, data[1], data[2], data[3]));
        assert!(key.verify(&issued, other, now).is_err());
        let later = now + Duration::from_secs(u64::from(ttl));
        assert!(key.verify(&issued, addr, later).is_err());
        assert!(token::TokenKey::from_bytes([8u8; 32])
            .verify(&issued, addr, now)
            .is_err());
    }
}

/// A fuzz target: arbitrary bytes in, a panic on any broken invariant.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/` and the corpus test know them.
pub const TARGETS: &[(&str, Target)] = &[
    ("route", route),
    ("forwarded", forwarded),
    ("policy", policy),
    ("node", node),
    ("configdrive", configdrive),
    ("token", token),
];
