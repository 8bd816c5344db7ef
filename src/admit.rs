//! Steps 1 to 5 of the request path: who is asking, may they, is the request well-formed.
//! Each step is a function returning `Result<_, Denied>`; [`admit`] joins them in their
//! fixed order, which is a security property (see DESIGN.md):
//! 1. client address  — resolved before anything keys on it;
//! 2. zone            — allow/deny before the limiter, so only allowed clients create state;
//! 3. rate limit      — per client, before any parsing work is spent on a flood;
//! 4. request hygiene — method and path, and the zone's path rules;
//! 5. session token   — checked before any node data is looked at.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::identity::link::{Client, MacRule, Rules};
use crate::identity::neighbour::Neighbours;
use crate::identity::Sources;
use crate::identity_token::Issuer;
use crate::inventory::Catalog;
use crate::metadata::checkin::{self, CheckinStore};
use crate::metadata::password::{self, PasswordStore};
use crate::metadata::render::{self, TreeOptions};
use crate::metadata::route::{self, Route, RouteError};
use crate::policy::token::{self, TokenKey};
use crate::policy::{forwarded, limiter};
use crate::policy::{Action, ActiveZone, ForwardedHeader, Policy, TokenMode, Zone};
use crate::reply::{Denied, Refusal, Reply};

/// What the request path needs of one HTTP request.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Request<'a> {
    pub(crate) method: &'a str,
    /// The request target as sent (path and optional query).
    pub(crate) path: &'a str,
    /// The TCP peer, `None` when the transport has no IP address.
    pub(crate) peer: Option<IpAddr>,
    /// The index of the interface an IPv6 link-local peer is on (`0`: none).
    pub(crate) scope: u32,
    /// Every `X-Forwarded-For` header value, in order.
    pub(crate) x_forwarded_for: &'a [&'a str],
    /// Every `Forwarded` header value, in order.
    pub(crate) forwarded: &'a [&'a str],
    /// `X-aws-ec2-metadata-token`.
    pub(crate) token: Option<&'a str>,
    /// `X-aws-ec2-metadata-token-ttl-seconds`.
    pub(crate) token_ttl: Option<&'a str>,
    /// `If-None-Match`.
    pub(crate) if_none_match: Option<&'a str>,
    /// The request body (read only for a password or check-in POST); `None` when it was
    /// too large.
    pub(crate) body: Option<&'a [u8]>,
    /// The request announces a body (Content-Length above 0 or Transfer-Encoding).
    pub(crate) has_body: bool,
    /// The request's headers exceed the configured count or size.
    pub(crate) headers_too_large: bool,
    /// `Host`, as sent.
    pub(crate) host: Option<&'a str>,
    /// Every header, for the ones a zone may require.
    pub(crate) headers: Option<&'a http::HeaderMap>,
}

/// Shared state a request is answered from; `policy` stays the same for the whole request.
pub(crate) struct Context<'a> {
    pub(crate) catalog: &'a Catalog,
    /// The link layer, for zones that verify or identify by MAC.
    pub(crate) neighbours: &'a dyn Neighbours,
    pub(crate) policy: &'a Policy,
    pub(crate) tokens: &'a TokenKey,
    pub(crate) passwords: &'a PasswordStore,
    /// Check-ins of booted nodes (phone_home, reporting).
    pub(crate) checkins: &'a CheckinStore,
    /// Settings that shape the trees.
    pub(crate) tree: &'a TreeOptions,
    pub(crate) now: SystemTime,
    pub(crate) today: &'a str,
    /// The listeners' own addresses, accepted as `Host` like the metadata addresses.
    pub(crate) own_addresses: &'a [IpAddr],
    /// Signed identity tokens, when configured.
    pub(crate) identity: Option<&'a Issuer>,
}

/// The addresses cloud-init and the others ask: `Host` may always be one of them.
const METADATA_ADDRESSES: [IpAddr; 2] = [
    IpAddr::V4(std::net::Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V6(std::net::Ipv6Addr::new(
        0xfe80, 0, 0, 0, 0, 0, 0xa9fe, 0xa9fe,
    )),
];

/// What the request path has learned about the asker so far, for the audit line.
#[derive(Debug, Clone, Default)]
pub(crate) struct Seen {
    /// The client address the request is answered for.
    pub(crate) client: Option<IpAddr>,
    /// The policy zone of the client.
    pub(crate) zone: Option<Arc<str>>,
    /// The node the request concerns.
    pub(crate) node: Option<String>,
}

/// A request that passed steps 1 to 5.
pub(crate) enum Admitted {
    /// Answered without node data (version lists, a session token).
    Answered(Reply),
    /// Needs identity and rendering.
    Node(NodeRequest),
}

/// An admitted request for one node's data.
pub(crate) struct NodeRequest {
    pub(crate) client: Client,
    pub(crate) route: Route,
    pub(crate) mac: MacRule,
    /// The claim sources the client's zone accepts.
    pub(crate) sources: Sources,
}

impl NodeRequest {
    /// The zone's identity rules, with the policy's projects.
    pub(crate) fn rules<'a>(&self, ctx: &Context<'a>) -> Rules<'a> {
        Rules {
            mac: self.mac,
            sources: self.sources,
            scopes: ctx.policy,
        }
    }

    /// A POST of the password or of a check-in: the requests whose body is read.
    pub(crate) fn is_password_post(&self, req: &Request<'_>) -> bool {
        req.method == "POST"
            && matches!(&self.route, Route::OpenStack { file: Some(f), .. }
                if f == "password" || checkin::Kind::of_file(f).is_some())
    }

    /// The largest body read for this request.
    pub(crate) fn body_limit(&self) -> usize {
        match &self.route {
            Route::OpenStack { file: Some(f), .. } if checkin::Kind::of_file(f).is_some() => {
                checkin::MAX_BODY
            }
            _ => password::MAX_SIZE,
        }
    }
}

/// Steps 1 to 5, in order; `seen` records the client and zone as they are settled.
pub(crate) fn admit(
    ctx: &Context<'_>,
    req: &Request<'_>,
    seen: &mut Seen,
) -> Result<Admitted, Denied> {
    let peer = req.peer.map(|ip| ip.to_canonical());
    let peer = peer.ok_or(Refusal::NoClientAddress)?;
    seen.client = Some(peer);
    let client = client_address(ctx.policy, peer, req, seen)?;
    seen.client = Some(client);
    let zone = zone_of(ctx.policy, client, seen)?;
    // The interface matters only for the peer itself (a link-local client).
    let scope = if client == peer { req.scope } else { 0 };
    rate_limit(zone, limiter::scoped(client, scope))?;
    zone_request_rules(ctx, zone, req, client != peer || zone.zone.trusts(peer))?;
    let segments = hygiene(req)?;
    method_allowed(req, &segments)?;
    // The published identity keys hold no node data (with --identity-publish-on-metadata).
    if let Some(keys) = ctx.identity.and_then(|i| i.published_to_nodes(&segments)) {
        session_token(ctx, zone, client, req)?;
        return Ok(Admitted::Answered(keys));
    }
    // A token is issued at `latest` only, as AWS does.
    if req.method == "PUT" && segments[0] != "latest" {
        return Err(Denied::new(Refusal::TokenPutForbidden).detail("token PUT to a versioned path"));
    }
    let route = route::parse_normalised(segments).map_err(route_refusal)?;
    // The zone's path rules apply to the route, whichever way it was spelt, token PUTs too.
    if !path_allowed(&zone.zone, &route) {
        return Err(Refusal::PathDenied.into());
    }
    if req.method == "PUT" {
        let hop_limit = zone.zone.request.token_hop_limit;
        return put_token(ctx, req, client, hop_limit).map(Admitted::Answered);
    }
    session_token(ctx, zone, client, req)?;
    // Version lists hold no node data: answered for anyone admitted, as Nova does.
    Ok(match route {
        Route::Ec2Versions => Admitted::Answered(render::ec2_versions()),
        Route::OpenStackVersions => Admitted::Answered(render::openstack_versions(ctx.today)),
        route => Admitted::Node(NodeRequest {
            client: Client { ip: client, scope },
            route,
            mac: mac_rule(&zone.zone, client == peer),
            sources: zone.zone.sources,
        }),
    })
}

/// Step 1: the TCP peer, unless the peer is a trusted proxy of its zone; then the
/// forwarded chain, walked right to left past trusted hops.
fn client_address(
    policy: &Policy,
    peer: IpAddr,
    req: &Request<'_>,
    seen: &mut Seen,
) -> Result<IpAddr, Denied> {
    let Some(pz) = policy.zone_for(peer).filter(|z| z.zone.trusts(peer)) else {
        return Ok(peer);
    };
    let max = usize::from(pz.zone.max_hops);
    let chain = match pz.zone.forwarded_header {
        ForwardedHeader::XForwardedFor => forwarded::parse_xff(req.x_forwarded_for, max),
        ForwardedHeader::Forwarded => forwarded::parse_forwarded(req.forwarded, max),
    };
    match chain {
        Ok(chain) => Ok(forwarded::client_from_chain(
            peer,
            &chain,
            &pz.zone.trusted_proxies,
        )),
        Err(e) => {
            seen.zone = Some(pz.label.clone());
            Err(Denied::new(Refusal::BadForwardedHeader).detail(e.to_string()))
        }
    }
}

/// What `zone` asks of the link layer for a client that asks directly (`direct`) or
/// through a trusted proxy.
pub(crate) fn mac_rule(zone: &Zone, direct: bool) -> MacRule {
    MacRule {
        verify: zone.verify_mac,
        identify: zone.identify_by_mac,
        direct,
    }
}

/// The zone's path rules let `route` through, and no deny rule names a file of another tree
/// holding the same data (see [`route::equivalents`]).
pub(crate) fn path_allowed(zone: &crate::policy::Zone, route: &Route) -> bool {
    zone.serves_route(&route::canonical(route))
        && !route::equivalents(route)
            .iter()
            .any(|e| zone.deny_paths.iter().any(|rule| rule.matches(e)))
}

/// Step 2: the client's zone; an address in no zone is denied.
pub(crate) fn zone_of<'p>(
    policy: &'p Policy,
    client: IpAddr,
    seen: &mut Seen,
) -> Result<&'p ActiveZone, Denied> {
    let zone = policy
        .zone_for(client)
        .ok_or_else(|| Denied::new(Refusal::NoZone).detail("address in no zone"))?;
    seen.zone = Some(zone.label.clone());
    match zone.zone.action {
        Action::Deny => Err(Refusal::ZoneDenied.into()),
        Action::Allow => Ok(zone),
    }
}

/// Step 3: the zone's rate, per client (IPv6 per prefix).
fn rate_limit(zone: &ActiveZone, client: IpAddr) -> Result<(), Denied> {
    zone.limiter.check(client).map_err(|wait| {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        Refusal::RateLimited(secs).into()
    })
}

/// Step 3b: what the zone asks of a request beyond its path: its `Host` (DNS rebinding),
/// a header SSRF payloads rarely carry, no forwarded header from an untrusted peer.
fn zone_request_rules(
    ctx: &Context<'_>,
    zone: &ActiveZone,
    req: &Request<'_>,
    via_trusted_proxy: bool,
) -> Result<(), Denied> {
    let rules = &zone.zone.request;
    if let Some(host) = req.host {
        if !host_allowed(host, &rules.hosts, ctx.own_addresses) {
            return Err(Denied::new(Refusal::HostNotAllowed).detail(format!("Host {host:?}")));
        }
    }
    if rules.forwarded_refuse
        && !via_trusted_proxy
        && !(req.x_forwarded_for.is_empty() && req.forwarded.is_empty())
    {
        return Err(Refusal::ForwardedRefused.into());
    }
    if let Some((name, value)) = &rules.required_header {
        let present = req
            .headers
            .and_then(|h| h.get(name))
            .is_some_and(|v| v.as_bytes() == value.as_bytes());
        if !present {
            return Err(Denied::new(Refusal::HeaderRequired).detail(format!("no {name}: {value}")));
        }
    }
    Ok(())
}

/// A `Host` (name or address, with or without a port) the zone accepts.
fn host_allowed(host: &str, names: &[String], own: &[IpAddr]) -> bool {
    let host = host.trim();
    let bare = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                host
            }
        }),
    };
    let bare = bare.trim_end_matches('.');
    if let Ok(ip) = bare.split('%').next().unwrap_or(bare).parse::<IpAddr>() {
        let ip = ip.to_canonical();
        if METADATA_ADDRESSES.contains(&ip) || own.contains(&ip) {
            return true;
        }
    }
    names
        .iter()
        .any(|n| n == "*" || n.eq_ignore_ascii_case(bare))
}

/// Step 4: the path decoded and normalised, and headers within their limits.
fn hygiene(req: &Request<'_>) -> Result<Vec<String>, Denied> {
    let segments = route::normalise(req.path).map_err(route_refusal)?;
    if req.headers_too_large {
        return Err(Refusal::HeadersTooLarge.into());
    }
    Ok(segments)
}

/// Reads carry no body; the writes are the token PUT (AWS IMDSv2), the password POST
/// (cloudbase-init) and the check-in POSTs (cloud-init's phone_home and reporting).
fn method_allowed(req: &Request<'_>, segments: &[String]) -> Result<(), Denied> {
    let read = req.method == "GET" || req.method == "HEAD";
    if req.has_body && read {
        return Err(Refusal::BodyNotAccepted.into());
    }
    let allowed = match req.method {
        "GET" | "HEAD" => true,
        "PUT" => segments.len() == 3 && segments[1] == "api" && segments[2] == "token",
        "POST" => {
            segments.len() == 3
                && segments[0] == "openstack"
                && (segments[2] == "password" || checkin::Kind::of_file(&segments[2]).is_some())
        }
        _ => false,
    };
    if allowed {
        Ok(())
    } else {
        Err(Refusal::MethodNotAllowed.into())
    }
}

pub(crate) fn route_refusal(e: RouteError) -> Denied {
    Denied::new(match e {
        RouteError::NotFound => Refusal::NotFound,
        RouteError::TooLong => Refusal::PathTooLong,
        RouteError::BadEncoding | RouteError::ControlCharacter => Refusal::BadPath,
    })
}

/// Step 5: a present token must be valid everywhere; some zones require one.
fn session_token(
    ctx: &Context<'_>,
    zone: &ActiveZone,
    client: IpAddr,
    req: &Request<'_>,
) -> Result<(), Denied> {
    match req.token {
        Some(t) => ctx
            .tokens
            .verify(t, client, ctx.now)
            .map_err(|e| Denied::new(Refusal::TokenInvalid).detail(e.to_string())),
        None if zone.zone.tokens == TokenMode::Required => Err(Refusal::TokenRequired.into()),
        None => Ok(()),
    }
}

/// `PUT /latest/api/token`, as AWS IMDSv2 answers it.
fn put_token(
    ctx: &Context<'_>,
    req: &Request<'_>,
    client: IpAddr,
    hop_limit: Option<u8>,
) -> Result<Reply, Denied> {
    // A PUT that went through a proxy must not yield a token (AWS's rule), whichever header
    // the proxy wrote.
    if !req.x_forwarded_for.is_empty() || !req.forwarded.is_empty() {
        return Err(Denied::new(Refusal::TokenPutForbidden).detail("token PUT through a proxy"));
    }
    let ttl = token::parse_ttl(req.token_ttl).ok_or(Refusal::TokenBadTtl)?;
    let mut reply = Reply::text(ctx.tokens.issue(client, ctx.now, ttl));
    reply
        .headers
        .push(("X-aws-ec2-metadata-token-ttl-seconds", ttl.to_string()));
    reply.hop_limit = hop_limit;
    Ok(reply)
}
