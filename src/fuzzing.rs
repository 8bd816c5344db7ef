//! One entry point per parser that meets untrusted input, for the fuzz targets in `fuzz/`
//! and for `tests/fuzz_corpus.rs`, which replays the checked-in seeds and every input that
//! once failed. Each function takes arbitrary bytes, must never panic, and asserts the
//! parser's invariants where it has any (a panic here is a finding).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;
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
use crate::node::{configdrive, NodeView};
use crate::policy::{file, forwarded, token, Policy};
use crate::reply::{Refusal, JSON};

/// Request path → route. The route never leaves the trees: no empty, `.` or `..`
/// segment, no `/` inside a segment, and normalising is idempotent.
pub fn route(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let normalised = route::normalise(path);
    assert_eq!(normalised, normalise_by_the_rules(path), "{path:?}");
    let Ok(segs) = normalised else {
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

/// [`route::normalise`] written again from its documented rules, as simply as possible: the
/// path ends at `?` or `#`; `%` and two hex digits is a byte, any other `%` itself; the
/// bytes must be UTF-8, at most [`route::MAX_PATH_LEN`] of them, without a control
/// character; segments split on `/`, `""` and `.` dropped, `..` removes the last one kept
/// (none at the root).
fn normalise_by_the_rules(path: &str) -> Result<Vec<String>, route::RouteError> {
    let path = path.as_bytes();
    let end = path
        .iter()
        .position(|&b| b == b'?' || b == b'#')
        .unwrap_or(path.len());
    let path = &path[..end];
    let hex = |b: u8| char::from(b).to_digit(16);
    let mut bytes = Vec::new();
    let mut i = 0;
    while i < path.len() {
        let pair = (path[i] == b'%')
            .then(|| Some((hex(*path.get(i + 1)?)?, hex(*path.get(i + 2)?)?)))
            .flatten();
        match pair {
            Some((hi, lo)) => {
                bytes.push((hi * 16 + lo) as u8);
                i += 3;
            }
            None => {
                bytes.push(path[i]);
                i += 1;
            }
        }
    }
    let text = String::from_utf8(bytes).map_err(|_| route::RouteError::BadEncoding)?;
    if text.len() > route::MAX_PATH_LEN {
        return Err(route::RouteError::TooLong);
    }
    if text.chars().any(char::is_control) {
        return Err(route::RouteError::ControlCharacter);
    }
    let mut segs: Vec<String> = Vec::new();
    for seg in text.split('/') {
        if seg == ".." {
            segs.pop();
        } else if !seg.is_empty() && seg != "." {
            segs.push(seg.to_string());
        }
    }
    Ok(segs)
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

/// Most nodes, ports and portgroups an input of the node target may hold: two nodes show
/// every rule between nodes (a contested address or MAC, two projects), and a small
/// inventory is a fast execution. Larger inputs are ignored.
const MAX_NODES: usize = 3;
const MAX_PORTS: usize = 6;

/// Ironic answer (an inventory of a few nodes, or one node) → index → every file. No node
/// is ever answered for an address it does not claim, and every JSON file is valid JSON.
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
    if inventory.nodes.len() > MAX_NODES
        || inventory.ports.len() > MAX_PORTS
        || inventory.portgroups.len() > MAX_PORTS
    {
        return;
    }
    let served: Vec<String> = ["active", "deploying", "wait call-back", "rescue"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let dns = [IpAddr::V4(Ipv4Addr::new(192, 0, 2, 53))];
    let (views, _) = crate::node::build(inventory, &dns, &mut Default::default());
    let index = Index::build(views, &served);
    let routes: Vec<Route> = PATHS.iter().filter_map(|p| route::parse(p).ok()).collect();
    // Every file of a node is rendered once, for the first address it is found by.
    let mut rendered: Vec<*const NodeView> = Vec::new();
    for scopes in [&Everywhere as &dyn ProjectScopes, &Nowhere] {
        for view in index.nodes() {
            for &addr in view.node_addresses.iter().chain(&view.drive_addresses) {
                check_address(&index, scopes, addr, &routes, &mut rendered);
            }
        }
    }
    // Each port MAC finds its own node, or is contested; never another node.
    for view in index.nodes() {
        for &mac in &view.macs {
            match index.lookup_mac(mac) {
                Lookup::Found(found) => assert!(Arc::ptr_eq(&found, view), "{mac}"),
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
/// its configdrive where no node's own data claims it and its deployer may (the rule of
/// `Index::deployer_may_claim`); then every file renders, and every JSON file is valid JSON.
fn check_address(
    index: &Index,
    scopes: &dyn ProjectScopes,
    addr: IpAddr,
    routes: &[Route],
    rendered: &mut Vec<*const NodeView>,
) {
    match identify(index, &NoLink, client(addr), &rules(scopes)) {
        Ok(found) => {
            let claims = index.claims(addr).expect("a found address has claims");
            let by_node = found.node_addresses.contains(&addr);
            // A deployer's claim counts in a fleet of one project, for a node of no project
            // (only the operator deploys those), or inside its project's CIDRs.
            let by_drive = found.drive_addresses.contains(&addr)
                && claims.node.is_empty()
                && (!index.multi_project()
                    || found.project.is_none()
                    || scopes.allows(found.project.as_deref(), addr));
            assert!(by_node || by_drive, "{addr} answered for {}", found.uuid);
            if rendered.contains(&Arc::as_ptr(&found)) {
                return;
            }
            rendered.push(Arc::as_ptr(&found));
            for r in routes {
                if let Ok(reply) = render::render(&found, r, addr, &Default::default()) {
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

/// Configdrive string → image → files: the wrappers around the image. The first byte picks
/// the form, the rest is the input: `form & 3` is 0 for the rest as the image bytes,
/// base64-encoded here as Ironic stores them (a gzip stream when they start with its
/// magic), 1 for the rest gzip-compressed here and then base64-encoded, 2 or 3 for the rest
/// as the stored text itself; `form & 4` wraps the base64 at 76 columns, `form & 8` with
/// CRLF. An image that went in comes out the same; images and files respect the limits.
pub fn configdrive(data: &[u8]) {
    let Some((&form, rest)) = data.split_first() else {
        return;
    };
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut text = match form & 3 {
        0 => b64(rest),
        1 => b64(&gzip(rest)),
        _ => String::from_utf8_lossy(rest).into_owned(),
    };
    if form & 4 != 0 {
        let eol = if form & 8 != 0 { "\r\n" } else { "\n" };
        text = text
            .as_bytes()
            .chunks(76)
            .map(|line| String::from_utf8_lossy(line).into_owned())
            .collect::<Vec<_>>()
            .join(eol);
    }
    let image = configdrive::image_of(&text);
    let gzipped = form & 3 == 1 || (form & 3 == 0 && rest.starts_with(&[0x1f, 0x8b]));
    match form & 3 {
        0 if !gzipped => assert_eq!(image.as_deref(), Ok(rest), "raw image"),
        1 if rest.len() <= configdrive::MAX_IMAGE => {
            assert_eq!(image.as_deref(), Ok(rest), "gzipped image")
        }
        1 => assert_eq!(image, Err(configdrive::DriveError::TooLarge)),
        _ => {}
    }
    let Ok(image) = image else {
        return;
    };
    let limit = if gzipped { 1 } else { 2 };
    assert!(image.len() <= configdrive::MAX_IMAGE * limit);
    if let Ok(drive) = configdrive::read_image(image) {
        check_drive(&drive);
    }
}

/// Raw ISO 9660 image → files. The input is the image from sector 16 (its volume
/// descriptors) on: the 32 KiB system area before it is not read, so it is added here
/// rather than carried in every input.
pub fn iso(data: &[u8]) {
    let mut image = vec![0u8; 16 * 2048];
    image.extend_from_slice(data);
    if let Ok(drive) = configdrive::read_image(image) {
        check_drive(&drive);
    }
}

/// The gzip stream of `data`, as a deployer's tools would write it.
fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing into a Vec has no I/O error.
    gz.write_all(data).expect("gzip into memory");
    gz.finish().expect("gzip into memory")
}

/// Decoded files respect the size limits, and the JSON ones are objects.
fn check_drive(drive: &configdrive::DriveContents) {
    if let Some(u) = &drive.user_data {
        assert!(!u.is_empty() && u.len() <= configdrive::MAX_FILE);
    }
    // A file of MAX_FILE bytes re-serialised: at most six bytes (`\u0000`) per byte.
    let docs = [
        &drive.network_data,
        &drive.vendor_data,
        &drive.ec2_meta_data,
    ];
    for doc in std::iter::once(&drive.meta_data).chain(docs.into_iter().flatten()) {
        assert!(doc.body().len() <= configdrive::MAX_FILE * 6);
        assert!(doc.value().is_object());
    }
}

/// JSON text → the Python-compatible printer ([`crate::node::doc::to_vec`]), checked
/// against serde_json's printer: both outputs parse back to the same value, keys in the
/// same order. Input that is not JSON is printed as one string. The output keeps Python's
/// byte rules: ASCII only, `", "` and `": "` between items and no other whitespace outside
/// strings, non-ASCII written as `\uXXXX` (a surrogate pair above U+FFFF).
pub fn json(data: &[u8]) {
    let value = serde_json::from_slice::<Value>(data)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(data).into_owned()));
    let ours = crate::node::doc::to_vec(&value);
    let theirs = serde_json::to_vec(&value).expect("a Value prints");
    let back = |b: &[u8]| -> Vec<u8> {
        let v: Value = serde_json::from_slice(b).expect("printed JSON parses");
        serde_json::to_vec(&v).expect("a Value prints")
    };
    assert_eq!(back(&ours), back(&theirs));
    check_python_bytes(&ours);
}

/// The byte rules of Python's `json.dumps` with its default separators and `ensure_ascii`.
fn check_python_bytes(out: &[u8]) {
    assert!(out.is_ascii(), "non-ASCII output");
    let hex4 = |at: usize| -> u32 {
        let digits = out.get(at..at + 4).expect("four hex digits");
        assert!(
            digits
                .iter()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
            "\\u escape {digits:?} is not four lowercase hex digits"
        );
        u32::from_str_radix(std::str::from_utf8(digits).unwrap_or("x"), 16).unwrap_or(0)
    };
    let (mut i, mut in_string) = (0, false);
    while i < out.len() {
        match (in_string, out[i]) {
            (false, b'"') | (true, b'"') => in_string = !in_string,
            (false, b',' | b':') => {
                assert_eq!(out.get(i + 1), Some(&b' '), "separator at {i}");
                i += 1;
            }
            (false, b) => assert!(!b.is_ascii_whitespace(), "whitespace at {i}"),
            (true, b'\\') => match out.get(i + 1) {
                Some(b'"' | b'\\' | b'n' | b'r' | b't' | b'b' | b'f') => i += 1,
                Some(b'u') => {
                    let unit = hex4(i + 2);
                    i += 5;
                    if (0xd800..0xdc00).contains(&unit) {
                        assert_eq!(
                            out.get(i + 1..i + 3),
                            Some(&b"\\u"[..]),
                            "lone high surrogate"
                        );
                        assert!((0xdc00..0xe000).contains(&hex4(i + 3)), "high surrogate");
                        i += 6;
                    } else {
                        assert!(!(0xdc00..0xe000).contains(&unit), "lone low surrogate");
                        // Python escapes control characters and non-ASCII, nothing else.
                        assert!(
                            !(0x20..=0x7e).contains(&unit),
                            "needless escape \\u{unit:04x}"
                        );
                    }
                }
                other => panic!("escape {other:?} Python does not write"),
            },
            (true, b) => assert!(b >= 0x20, "raw control byte {b:#04x} in a string"),
        }
        i += 1;
    }
    assert!(!in_string, "unterminated string");
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
    ("iso", iso),
    ("json", json),
    ("token", token),
];
