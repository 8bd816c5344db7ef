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

/// What steps 1 to 5 decided.
pub enum Admitted {
    /// Refused, or answered without node data (version lists, a token).
    Done(Outcome),
    /// Needs identity and rendering.
    Node {
        client: IpAddr,
        zone: Arc<str>,
        route: Route,
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
) -> Outcome {
    let index = ctx.catalog.index();
    let refuse = |r: Refusal, detail: String| {
        Outcome::refuse(r, Some(client), Some(zone.clone()), Some(detail))
    };
    let node = match index.lookup(client) {
        Lookup::Found(node) => node,
        Lookup::Unknown => {
            return refuse(
                Refusal::UnknownAddress,
                "no node claims this address".into(),
            )
        }
        Lookup::Contested(uuids) => {
            return refuse(
                Refusal::ContestedAddress,
                format!("address claimed by nodes {}", uuids.join(", ")),
            )
        }
        Lookup::NotServed { uuid, state } => {
            return refuse(
                Refusal::NodeNotServed,
                format!("node {uuid} is in provision state {state:?}"),
            )
        }
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
        } => answer(ctx, req, client, zone, &route),
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
    let (client, zone, route) = match admit(ctx, req) {
        Admitted::Done(out) => return out,
        Admitted::Node {
            client,
            zone,
            route,
        } => (client, zone, route),
    };
    let out = answer(ctx, req, client, zone.clone(), &route);
    if out.refusal != Some(Refusal::UnknownAddress) {
        return out;
    }
    let Some(source) = on_demand else {
        return out;
    };
    let out = if source.refresh_for(client).await {
        answer(ctx, req, client, zone.clone(), &route)
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
