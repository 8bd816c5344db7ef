//! The request path in order, over plain types. Each step may end the request; the order is
//! a security property (see DESIGN.md):
//! 1. client address  — resolved before anything keys on it;
//! 2. zone            — allow/deny before the limiter, so only allowed clients create state;
//! 3. rate limit      — per client, before any parsing work is spent on a flood;
//! 4. request hygiene — method and path, and the zone's path rules;
//! 5. session token   — checked before any node data is looked at;
//! 6. identity, then render.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::identity::Lookup;
use crate::inventory::{Catalog, OnDemand};
use crate::metadata::password::{PasswordError, PasswordStore};
use crate::metadata::render;
use crate::metadata::route::{self, Route, RouteError};
use crate::metadata::view::NodeView;
use crate::neighbour::{self, Neighbours, L2};
use crate::policy::forwarded::{self, ForwardedError};
use crate::policy::token::{self, TokenKey};
use crate::policy::{Action, ForwardedHeader, Policy, TokenMode};
use crate::reply::{Refusal, Reply};

/// What the gateway needs of one HTTP request.
#[derive(Debug, Clone, Copy, Default)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target as sent (path and optional query).
    pub path: &'a str,
    /// The TCP peer, `None` when the transport has no IP address.
    pub peer: Option<IpAddr>,
    /// Every `X-Forwarded-For` header value, in order.
    pub x_forwarded_for: &'a [&'a str],
    /// Every `Forwarded` header value, in order.
    pub forwarded: &'a [&'a str],
    /// `X-aws-ec2-metadata-token`.
    pub token: Option<&'a str>,
    /// `X-aws-ec2-metadata-token-ttl-seconds`.
    pub token_ttl: Option<&'a str>,
    /// `If-None-Match`.
    pub if_none_match: Option<&'a str>,
    /// The request body (read only for a password POST); `None` when it was too large.
    pub body: Option<&'a [u8]>,
    /// The request announces a body (Content-Length above 0 or Transfer-Encoding).
    pub has_body: bool,
    /// The request's headers exceed the configured count or size.
    pub headers_too_large: bool,
}

/// Shared state a request is answered from; `policy` stays the same for the whole request.
pub struct Context<'a> {
    pub catalog: &'a Catalog,
    /// The link layer, for zones that verify or identify by MAC.
    pub neighbours: &'a dyn Neighbours,
    pub policy: &'a Policy,
    pub tokens: &'a TokenKey,
    pub passwords: &'a PasswordStore,
    pub now: SystemTime,
    pub today: &'a str,
}

/// The reply plus what the caller logs and counts about it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub reply: Reply,
    pub refusal: Option<Refusal>,
    /// The client address the request was answered for.
    pub client: Option<IpAddr>,
    /// The policy zone of the client.
    pub zone: Option<Arc<str>>,
    /// The node the request was answered for.
    pub node: Option<String>,
    /// Why the request was refused, for the log (never sent to the client).
    pub detail: Option<String>,
}

impl Outcome {
    pub fn refuse(
        refusal: Refusal,
        client: Option<IpAddr>,
        zone: Option<Arc<str>>,
        detail: Option<String>,
    ) -> Outcome {
        Outcome {
            reply: refusal.reply(),
            refusal: Some(refusal),
            client,
            zone,
            node: None,
            detail,
        }
    }

    fn answered(reply: Reply, client: IpAddr, zone: Arc<str>, node: Option<String>) -> Outcome {
        Outcome {
            reply,
            refusal: None,
            client: Some(client),
            zone: Some(zone),
            node,
            detail: None,
        }
    }
}

/// What the client's zone asks of the link layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MacRule {
    /// The neighbour MAC of the client must be a port of its node.
    pub verify: bool,
    /// An address no node claims is identified by the neighbour MAC's port.
    pub identify: bool,
    /// The TCP peer is the client itself (no proxy in between).
    pub direct: bool,
}

/// What steps 1 to 5 decided.
pub enum Admitted {
    /// Refused, or answered without node data (version lists, a token).
    Done(Outcome),
    /// Needs identity and rendering.
    Node {
        client: IpAddr,
        zone: Arc<str>,
        route: Route,
        mac: MacRule,
    },
}

/// Steps 1 to 5: who is asking, may they, is the request well-formed.
pub fn admit(ctx: &Context<'_>, req: &Request<'_>) -> Admitted {
    // 1. Client address: the TCP peer, unless the peer is a trusted proxy of its zone;
    //    then the forwarded chain, walked right to left past trusted hops.
    let Some(peer) = req.peer.map(|ip| ip.to_canonical()) else {
        return Admitted::Done(Outcome::refuse(Refusal::NoClientAddress, None, None, None));
    };
    let mut client = peer;
    if let Some(pz) = ctx.policy.zone_for(peer).filter(|z| z.zone.trusts(peer)) {
        let max = usize::from(pz.zone.max_hops);
        let chain = match pz.zone.forwarded_header {
            ForwardedHeader::XForwardedFor => forwarded::parse_xff(req.x_forwarded_for, max),
            ForwardedHeader::Forwarded => forwarded::parse_forwarded(req.forwarded, max),
        };
        match chain {
            Ok(chain) => {
                client = forwarded::client_from_chain(peer, &chain, &pz.zone.trusted_proxies)
            }
            Err(e) => {
                let detail = match &e {
                    ForwardedError::Malformed(_) | ForwardedError::TooManyHops(_) => e.to_string(),
                };
                return Admitted::Done(Outcome::refuse(
                    Refusal::BadForwardedHeader,
                    Some(peer),
                    Some(pz.label.clone()),
                    Some(detail),
                ));
            }
        }
    }
    // 2. Zone of the client: an address in no zone is denied.
    let Some(zone) = ctx.policy.zone_for(client) else {
        return Admitted::Done(Outcome::refuse(
            Refusal::NoZone,
            Some(client),
            None,
            Some("address in no zone".into()),
        ));
    };
    let label = zone.label.clone();
    if zone.zone.action == Action::Deny {
        return Admitted::Done(Outcome::refuse(
            Refusal::ZoneDenied,
            Some(client),
            Some(label),
            None,
        ));
    }
    // 3. Rate limit, per client (IPv6 per prefix).
    if let Err(wait) = zone.limiter.check(client) {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        return Admitted::Done(Outcome::refuse(
            Refusal::RateLimited(secs),
            Some(client),
            Some(label),
            None,
        ));
    }
    // 4. Request hygiene.
    let segments = match route::normalise(req.path) {
        Ok(s) => s,
        Err(e) => {
            return Admitted::Done(Outcome::refuse(
                route_refusal(e),
                Some(client),
                Some(label),
                None,
            ))
        }
    };
    if req.headers_too_large {
        return Admitted::Done(Outcome::refuse(
            Refusal::HeadersTooLarge,
            Some(client),
            Some(label),
            None,
        ));
    }
    if req.method == "PUT" {
        return Admitted::Done(put_token(ctx, req, client, label, &segments));
    }
    // Reads carry no body; a client sending one is refused before anything else is done.
    if req.has_body && (req.method == "GET" || req.method == "HEAD") {
        return Admitted::Done(Outcome::refuse(
            Refusal::BodyNotAccepted,
            Some(client),
            Some(label),
            None,
        ));
    }
    // POST only where an instance sets its password (cloudbase-init).
    let password_post = req.method == "POST"
        && segments.len() == 3
        && segments[0] == "openstack"
        && segments[2] == "password";
    if req.method != "GET" && req.method != "HEAD" && !password_post {
        return Admitted::Done(Outcome::refuse(
            Refusal::MethodNotAllowed,
            Some(client),
            Some(label),
            None,
        ));
    }
    if !zone.zone.serves_path(&segments) {
        return Admitted::Done(Outcome::refuse(
            Refusal::PathDenied,
            Some(client),
            Some(label),
            None,
        ));
    }
    let route = match route::parse_normalised(segments) {
        Ok(r) => r,
        Err(e) => {
            return Admitted::Done(Outcome::refuse(
                route_refusal(e),
                Some(client),
                Some(label),
                None,
            ))
        }
    };
    // 5. Session token: a present token must be valid everywhere; some zones require one.
    match req.token {
        Some(t) => {
            if let Err(e) = ctx.tokens.verify(t, client, ctx.now) {
                return Admitted::Done(Outcome::refuse(
                    Refusal::TokenInvalid,
                    Some(client),
                    Some(label),
                    Some(e.to_string()),
                ));
            }
        }
        None if zone.zone.tokens == TokenMode::Required => {
            return Admitted::Done(Outcome::refuse(
                Refusal::TokenRequired,
                Some(client),
                Some(label),
                None,
            ));
        }
        None => {}
    }
    // Version lists hold no node data: answered for anyone admitted, as Nova does.
    match route {
        Route::Ec2Versions => Admitted::Done(Outcome::answered(
            render::ec2_versions(),
            client,
            label,
            None,
        )),
        Route::OpenStackVersions => Admitted::Done(Outcome::answered(
            render::openstack_versions(ctx.today),
            client,
            label,
            None,
        )),
        route => Admitted::Node {
            client,
            zone: label,
            route,
            mac: MacRule {
                verify: zone.zone.verify_mac,
                identify: zone.zone.identify_by_mac,
                direct: client == peer,
            },
        },
    }
}

fn route_refusal(e: RouteError) -> Refusal {
    match e {
        RouteError::NotFound => Refusal::NotFound,
        RouteError::TooLong => Refusal::PathTooLong,
        RouteError::BadEncoding | RouteError::ControlCharacter => Refusal::BadPath,
    }
}

/// `PUT /latest/api/token`, as AWS IMDSv2 answers it.
fn put_token(
    ctx: &Context<'_>,
    req: &Request<'_>,
    client: IpAddr,
    zone: Arc<str>,
    segments: &[String],
) -> Outcome {
    let is_token_path = segments.len() == 3 && segments[1] == "api" && segments[2] == "token";
    if !is_token_path {
        return Outcome::refuse(Refusal::MethodNotAllowed, Some(client), Some(zone), None);
    }
    if segments[0] != "latest" {
        return Outcome::refuse(
            Refusal::TokenPutForbidden,
            Some(client),
            Some(zone),
            Some("token PUT to a versioned path".into()),
        );
    }
    // A PUT that went through a proxy must not yield a token (AWS's rule).
    if !req.x_forwarded_for.is_empty() {
        return Outcome::refuse(
            Refusal::TokenPutForbidden,
            Some(client),
            Some(zone),
            Some("token PUT with X-Forwarded-For".into()),
        );
    }
    let Some(ttl) = token::parse_ttl(req.token_ttl) else {
        return Outcome::refuse(Refusal::TokenBadTtl, Some(client), Some(zone), None);
    };
    let mut reply = Reply::text(ctx.tokens.issue(client, ctx.now, ttl));
    reply
        .headers
        .push(("X-aws-ec2-metadata-token-ttl-seconds", ttl.to_string()));
    Outcome::answered(reply, client, zone, None)
}

/// Step 6: identity, then render.
pub fn answer(
    ctx: &Context<'_>,
    req: &Request<'_>,
    client: IpAddr,
    zone: Arc<str>,
    route: &Route,
    mac: MacRule,
) -> Outcome {
    let node = match identify(ctx, client, &zone, mac) {
        Ok(node) => node,
        Err(out) => return *out,
    };
    if let Route::OpenStack {
        version,
        file: Some(f),
    } = route
    {
        if f == "password" && *version >= "2013-04-04" {
            return password(ctx, req, &node, client, zone);
        }
    }
    match render::render(&node, route, client) {
        Ok(reply) => Outcome::answered(reply, client, zone, Some(node.uuid.clone())),
        Err(refusal) => {
            let mut out = Outcome::refuse(refusal, Some(client), Some(zone), None);
            out.node = Some(node.uuid.clone());
            out
        }
    }
}

/// The node `client` is, or the refusal that says why there is none. With `mac.verify` the
/// client's neighbour MAC must be a port of that node; with `mac.identify` an address no
/// node claims is identified by that MAC.
fn identify(
    ctx: &Context<'_>,
    client: IpAddr,
    zone: &Arc<str>,
    mac: MacRule,
) -> Result<Arc<NodeView>, Box<Outcome>> {
    let refuse = |r: Refusal, node: Option<&str>, detail: String| {
        let mut out = Outcome::refuse(r, Some(client), Some(zone.clone()), Some(detail));
        out.node = node.map(str::to_string);
        Box::new(out)
    };
    let index = ctx.catalog.index();
    let by_ip = index.lookup(client);
    let needs_l2 = mac.verify
        && (matches!(by_ip, Lookup::Found(_))
            || (mac.identify && matches!(by_ip, Lookup::Unknown)));
    if !needs_l2 {
        return settle(by_ip, None, &refuse);
    }
    if !mac.direct {
        return Err(refuse(
            Refusal::MacUnverifiable,
            None,
            "the zone verifies MACs, but the request came through a proxy".into(),
        ));
    }
    let seen = match ctx.neighbours.resolve(client) {
        Ok(L2::Mac(m)) => m,
        Ok(other) => {
            return Err(refuse(
                Refusal::MacUnverifiable,
                None,
                format!("the zone verifies MACs: {}", other.describe()),
            ))
        }
        Err(e) => {
            return Err(refuse(
                Refusal::NeighbourLookupFailed,
                None,
                format!("neighbour lookup failed: {e}"),
            ))
        }
    };
    match by_ip {
        Lookup::Found(node) if node.macs.contains(&seen) => Ok(node),
        Lookup::Found(node) => {
            let ports: Vec<String> = node.macs.iter().map(neighbour::mac_text).collect();
            Err(refuse(
                Refusal::MacMismatch,
                Some(&node.uuid),
                format!(
                    "neighbour MAC {} is not a port of node {} (its ports: {})",
                    neighbour::mac_text(&seen),
                    node.uuid,
                    if ports.is_empty() {
                        "none".into()
                    } else {
                        ports.join(", ")
                    }
                ),
            ))
        }
        _ => settle(
            index.lookup_mac(seen),
            Some(&neighbour::mac_text(&seen)),
            &refuse,
        ),
    }
}

/// Builds a refusal for the client being identified: reason, node named, detail.
type Refuser<'a> = dyn Fn(Refusal, Option<&str>, String) -> Box<Outcome> + 'a;

/// The node of a lookup, or the refusal that says why there is none; `mac` when the lookup
/// was by MAC.
fn settle(
    lookup: Lookup,
    mac: Option<&str>,
    refuse: &Refuser<'_>,
) -> Result<Arc<NodeView>, Box<Outcome>> {
    Err(match lookup {
        Lookup::Found(node) => return Ok(node),
        Lookup::Unknown => refuse(
            Refusal::UnknownAddress,
            None,
            match mac {
                Some(m) => format!("no node claims this address nor MAC {m}"),
                None => "no node claims this address".into(),
            },
        ),
        Lookup::Contested(uuids) => refuse(
            Refusal::ContestedAddress,
            None,
            match mac {
                Some(m) => format!("MAC {m} is a port of nodes {}", uuids.join(", ")),
                None => format!("address claimed by nodes {}", uuids.join(", ")),
            },
        ),
        Lookup::NotServed { uuid, state } => refuse(
            Refusal::NodeNotServed,
            Some(&uuid),
            format!("node {uuid} is in provision state {state:?}"),
        ),
    })
}

/// JSON documents carry an ETag; a matching `If-None-Match` gets 304 without a body.
fn conditional(mut out: Outcome, if_none_match: Option<&str>) -> Outcome {
    if out.reply.status != 200 || out.reply.content_type != crate::reply::JSON {
        return out;
    }
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(&out.reply.body);
    let tag: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    let etag = format!("\"{tag}\"");
    let matches = if_none_match.is_some_and(|h| {
        h.split(',').any(|t| {
            let t = t.trim();
            t == "*" || t.strip_prefix("W/").unwrap_or(t) == etag
        })
    });
    if matches {
        out.reply.status = 304;
        out.reply.body = bytes::Bytes::new();
    }
    out.reply.headers.push(("ETag", etag));
    out
}

/// `/openstack/<version>/password`: GET returns the stored value (empty when none), POST
/// stores it once per deployment (409 after that, 400 over 1020 bytes), as Nova does.
fn password(
    ctx: &Context<'_>,
    req: &Request<'_>,
    node: &crate::metadata::view::NodeView,
    client: IpAddr,
    zone: Arc<str>,
) -> Outcome {
    let uuid = Some(node.uuid.clone());
    let refuse = |r: Refusal, detail: Option<String>| {
        let mut out = Outcome::refuse(r, Some(client), Some(zone.clone()), detail);
        out.node = uuid.clone();
        out
    };
    if req.method != "POST" {
        let value = ctx
            .passwords
            .get(&node.uuid, &node.deployment)
            .unwrap_or_default();
        return Outcome::answered(Reply::text(value), client, zone, uuid);
    }
    let Some(body) = req.body else {
        return refuse(Refusal::PasswordTooLong, None);
    };
    let Ok(text) = std::str::from_utf8(body) else {
        return refuse(Refusal::BadPath, Some("password is not UTF-8".into()));
    };
    match ctx.passwords.set(&node.uuid, &node.deployment, text) {
        Ok(()) => Outcome::answered(Reply::text(""), client, zone, uuid),
        Err(PasswordError::Exists) => refuse(Refusal::PasswordExists, None),
        Err(PasswordError::TooLong) => refuse(Refusal::PasswordTooLong, None),
        Err(e @ PasswordError::Io(_)) => refuse(Refusal::PasswordNotStored, Some(e.to_string())),
    }
}

/// The whole path without on-demand refresh (file inventories, tests).
pub fn handle(ctx: &Context<'_>, req: &Request<'_>) -> Outcome {
    conditional(handle_inner(ctx, req), req.if_none_match)
}

fn handle_inner(ctx: &Context<'_>, req: &Request<'_>) -> Outcome {
    match admit(ctx, req) {
        Admitted::Done(out) => out,
        Admitted::Node {
            client,
            zone,
            route,
            mac,
        } => answer(ctx, req, client, zone, &route, mac),
    }
}

/// [`handle`], plus one on-demand refresh when the address is unknown: a node deployed a
/// moment ago is answered on its first request. Before the first inventory has loaded an
/// unknown address gets 503 rather than a 404 that would read as "no such node".
pub async fn handle_with_refresh(
    ctx: &Context<'_>,
    on_demand: Option<&dyn OnDemand>,
    req: &Request<'_>,
) -> Outcome {
    conditional(refreshing(ctx, on_demand, req).await, req.if_none_match)
}

async fn refreshing(
    ctx: &Context<'_>,
    on_demand: Option<&dyn OnDemand>,
    req: &Request<'_>,
) -> Outcome {
    let (client, zone, route, mac) = match admit(ctx, req) {
        Admitted::Done(out) => return out,
        Admitted::Node {
            client,
            zone,
            route,
            mac,
        } => (client, zone, route, mac),
    };
    let out = answer(ctx, req, client, zone.clone(), &route, mac);
    if out.refusal != Some(Refusal::UnknownAddress) {
        return out;
    }
    let Some(source) = on_demand else {
        return out;
    };
    let out = if source.refresh_for(client).await {
        answer(ctx, req, client, zone.clone(), &route, mac)
    } else {
        out
    };
    if out.refusal == Some(Refusal::UnknownAddress) && !ctx.catalog.status().ready {
        return Outcome::refuse(
            Refusal::NotReady,
            Some(client),
            Some(zone),
            Some("no inventory loaded yet".into()),
        );
    }
    out
}

/// Today's date in UTC as `YYYY-MM-DD`, for hiding future-dated versions.
pub fn today_utc() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::DEFAULT_SERVED_STATES;
    use crate::neighbour::Fixed;
    use crate::policy::file::parse_files;
    use macaddr::MacAddr6;
    use serde_json::json;
    use std::collections::HashMap;
    use std::path::Path;

    fn nd(ip: Option<&str>) -> serde_json::Value {
        let net = match ip {
            Some(ip) => json!({"id": "n", "type": "ipv4", "link": "l", "network_id": "x",
                               "ip_address": ip, "netmask": "255.255.255.0"}),
            None => json!({"id": "n", "type": "ipv4_dhcp", "link": "l", "network_id": "x"}),
        };
        json!({"links": [{"id": "l", "type": "phy"}], "networks": [net], "services": []})
    }

    fn catalog() -> Catalog {
        let node = |uuid: &str, ip: Option<&str>, state: &str| json!({"uuid": uuid, "name": uuid, "provision_state": state, "network_data": nd(ip)});
        let port = |uuid: &str, mac: &str, node: &str| json!({"uuid": uuid, "address": mac, "node_uuid": node});
        let inv = json!({
            "nodes": [
                node("a", Some("10.0.0.1"), "active"),
                node("b", Some("10.0.0.2"), "active"),
                node("c", None, "active"),
                node("d", None, "active"),
                node("e", None, "active"),
                node("f", None, "available"),
                node("g", Some("10.0.1.7"), "active"),
                node("h", Some("10.0.2.1"), "active"),
            ],
            "ports": [
                port("pa", "52:54:00:00:00:01", "a"),
                port("pb", "52:54:00:00:00:02", "b"),
                port("pc", "52:54:00:00:00:03", "c"),
                port("pd", "52:54:00:00:00:DD", "d"),
                port("pe", "52:54:00:00:00:dd", "e"),
                port("pf", "52:54:00:00:00:0f", "f"),
                port("pg", "52:54:00:00:00:07", "g"),
            ],
            "portgroups": [{"uuid": "gb", "address": "52:54:00:00:00:0b", "node_uuid": "b"}],
        });
        let served = DEFAULT_SERVED_STATES
            .iter()
            .map(|s| s.to_string())
            .collect();
        let catalog = Catalog::new("test", served);
        catalog.publish(serde_json::from_value(inv).unwrap());
        catalog
    }

    fn policy() -> Policy {
        let text = r#"
[[zone]]
name = "l2"
cidrs = ["10.0.0.0/24"]
action = "allow"
verify_mac = true
identify_by_mac = true

[[zone]]
name = "verify"
cidrs = ["10.0.1.0/24"]
action = "allow"
verify_mac = true

[[zone]]
name = "plain"
cidrs = ["10.0.2.0/24"]
action = "allow"

[[zone]]
name = "proxy"
cidrs = ["10.0.3.0/24"]
action = "allow"
trusted_proxies = ["10.0.3.1"]
"#;
        Policy::build(parse_files([(Path::new("p.toml"), text)]).unwrap(), None)
    }

    fn mac(last: u8) -> L2 {
        L2::Mac(MacAddr6::new(0x52, 0x54, 0, 0, 0, last))
    }

    struct Broken;
    impl Neighbours for Broken {
        fn resolve(&self, _: IpAddr) -> std::io::Result<L2> {
            Err(std::io::Error::other("netlink socket refused"))
        }
    }

    /// Asks `path` from `peer` (forwarding `xff` when given) with this neighbour table.
    fn ask(neighbours: &dyn Neighbours, peer: &str, xff: &[&str], path: &str) -> Outcome {
        let catalog = catalog();
        let policy = policy();
        let tokens = TokenKey::random();
        let passwords = PasswordStore::new(None).unwrap();
        let ctx = Context {
            catalog: &catalog,
            neighbours,
            policy: &policy,
            tokens: &tokens,
            passwords: &passwords,
            now: SystemTime::now(),
            today: "2026-11-27",
        };
        let req = Request {
            method: "GET",
            path,
            peer: Some(peer.parse().unwrap()),
            x_forwarded_for: xff,
            ..Default::default()
        };
        handle(&ctx, &req)
    }

    fn table(entries: &[(&str, L2)]) -> Fixed {
        Fixed(
            entries
                .iter()
                .map(|(ip, l2)| (ip.parse().unwrap(), l2.clone()))
                .collect::<HashMap<_, _>>(),
        )
    }

    const MD: &str = "/openstack/latest/meta_data.json";

    fn served(out: &Outcome) -> (u16, Option<&str>) {
        (out.reply.status, out.node.as_deref())
    }

    fn refused(out: &Outcome) -> (u16, &[u8], Option<Refusal>) {
        (out.reply.status, &out.reply.body[..], out.refusal)
    }

    #[test]
    fn a_node_is_served_to_its_own_mac() {
        let t = table(&[("10.0.0.1", mac(1)), ("10.0.0.2", mac(0x0b))]);
        let out = ask(&t, "10.0.0.1", &[], MD);
        assert_eq!(served(&out), (200, Some("a")));
        assert!(std::str::from_utf8(&out.reply.body)
            .unwrap()
            .contains("\"uuid\": \"a\""));
        // A portgroup's (bond's) MAC is the node's too.
        assert_eq!(served(&ask(&t, "10.0.0.2", &[], MD)), (200, Some("b")));
    }

    #[test]
    fn another_nodes_address_with_a_foreign_mac_is_refused_and_named() {
        // 10.0.0.2 is b's; the neighbour table says the sender has a's MAC.
        let out = ask(&table(&[("10.0.0.2", mac(1))]), "10.0.0.2", &[], MD);
        assert_eq!(
            refused(&out),
            (
                404,
                &b"no metadata for this address\n"[..],
                Some(Refusal::MacMismatch)
            )
        );
        assert_eq!(out.node.as_deref(), Some("b"));
        assert_eq!(
            out.detail.as_deref(),
            Some("neighbour MAC 52:54:00:00:00:01 is not a port of node b (its ports: 52:54:00:00:00:02, 52:54:00:00:00:0b)")
        );
        // The same refusal on the EC2 tree: no route around the check.
        let ec2 = ask(
            &table(&[("10.0.0.2", mac(1))]),
            "10.0.0.2",
            &[],
            "/latest/meta-data/instance-id",
        );
        assert_eq!(ec2.refusal, Some(Refusal::MacMismatch));
    }

    #[test]
    fn an_unclaimed_address_is_identified_by_its_mac() {
        let t = table(&[
            ("10.0.0.50", mac(3)),
            ("10.0.0.51", mac(0xdd)),
            ("10.0.0.52", mac(0xee)),
            ("10.0.0.55", mac(0x0f)),
        ]);
        let out = ask(&t, "10.0.0.50", &[], "/latest/meta-data/local-ipv4");
        assert_eq!(served(&out), (200, Some("c")));
        assert_eq!(&out.reply.body[..], b"10.0.0.50");
        let out = ask(&t, "10.0.0.51", &[], MD);
        assert_eq!(out.refusal, Some(Refusal::ContestedAddress));
        assert_eq!(
            out.detail.as_deref(),
            Some("MAC 52:54:00:00:00:dd is a port of nodes d, e")
        );
        let out = ask(&t, "10.0.0.52", &[], MD);
        assert_eq!(out.refusal, Some(Refusal::UnknownAddress));
        assert_eq!(
            out.detail.as_deref(),
            Some("no node claims this address nor MAC 52:54:00:00:00:ee")
        );
        assert_eq!(
            ask(&t, "10.0.0.55", &[], MD).refusal,
            Some(Refusal::NodeNotServed)
        );
    }

    #[test]
    fn without_identify_by_mac_an_unclaimed_address_stays_unknown() {
        let out = ask(&table(&[("10.0.1.50", mac(3))]), "10.0.1.50", &[], MD);
        assert_eq!(out.refusal, Some(Refusal::UnknownAddress));
        // ... while the zone still verifies the nodes it knows by address.
        let out = ask(&table(&[("10.0.1.7", mac(3))]), "10.0.1.7", &[], MD);
        assert_eq!(out.refusal, Some(Refusal::MacMismatch));
        let out = ask(&table(&[("10.0.1.7", mac(7))]), "10.0.1.7", &[], MD);
        assert_eq!(served(&out), (200, Some("g")));
    }

    #[test]
    fn no_mac_to_verify_is_refused() {
        let t = table(&[
            ("10.0.0.1", L2::Routed("10.0.0.254".parse().unwrap())),
            ("10.0.0.50", L2::Local),
        ]);
        for (peer, detail) in [
            (
                "10.0.0.1",
                "the zone verifies MACs: routed via 10.0.0.254, not on a link of this host",
            ),
            (
                "10.0.0.50",
                "the zone verifies MACs: an address of this host",
            ),
            (
                "10.0.0.2",
                "the zone verifies MACs: no neighbour entry with a link-layer address",
            ),
        ] {
            let out = ask(&t, peer, &[], MD);
            assert_eq!(
                refused(&out),
                (
                    404,
                    &b"no metadata for this address\n"[..],
                    Some(Refusal::MacUnverifiable)
                ),
                "{peer}"
            );
            assert_eq!(out.detail.as_deref(), Some(detail), "{peer}");
        }
        // Through a trusted proxy the neighbour is the proxy, whatever the table says.
        let out = ask(
            &table(&[("10.0.0.1", mac(1))]),
            "10.0.3.1",
            &["10.0.0.1"],
            MD,
        );
        assert_eq!(out.refusal, Some(Refusal::MacUnverifiable));
        assert_eq!(
            out.detail.as_deref(),
            Some("the zone verifies MACs, but the request came through a proxy")
        );
    }

    #[test]
    fn a_broken_neighbour_table_refuses_with_503() {
        let out = ask(&Broken, "10.0.0.1", &[], MD);
        assert_eq!(
            refused(&out),
            (
                503,
                &b"metadata not available\n"[..],
                Some(Refusal::NeighbourLookupFailed)
            )
        );
        assert!(out
            .reply
            .headers
            .iter()
            .any(|(k, v)| *k == "Retry-After" && v == "5"));
    }

    #[test]
    fn zones_without_verify_mac_never_ask_the_link_layer() {
        // h's address with a MAC that is no port of h: not checked in a plain zone, and the
        // broken table is never touched.
        let out = ask(&Broken, "10.0.2.1", &[], MD);
        assert_eq!(served(&out), (200, Some("h")));
        // Version lists hold no node data and need no MAC.
        let out = ask(&Broken, "10.0.0.99", &[], "/openstack");
        assert_eq!(out.reply.status, 200);
    }
}
