//! The metadata app: every request is answered inside `request_filter` from
//! [`crate::handle`]; there is no upstream hop. Access log, audit line and counters are
//! written in the `logging` phase, which pingora runs for every request it handed to the
//! app, also when an earlier phase failed.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::http::ResponseHeader;
use pingora::prelude::*;

use crate::admit::{Context, Request};
use crate::audit::{AuditGate, RefusalBudget};
use crate::handle::{self, Outcome, Parked, Record, Step};
use crate::identity::neighbour::{ConnectionMemo, Netlink, Remembered};
use crate::identity_token::Issuer;
use crate::inventory::{Catalog, OnDemand};
use crate::longpoll::{ParkedUntil, Parking};
use crate::metadata::checkin::CheckinStore;
use crate::metadata::password::PasswordStore;
use crate::metadata::render::TreeOptions;
use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::policy::token::TokenKey;
use crate::reply::{Refusal, Reply};

/// Answers metadata requests; holds only shared, read-mostly state.
pub(crate) struct MetadataApp {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) on_demand: Option<Arc<dyn OnDemand>>,
    pub(crate) policy: Arc<PolicyStore>,
    pub(crate) tokens: Arc<TokenKey>,
    pub(crate) passwords: Arc<PasswordStore>,
    pub(crate) checkins: Arc<CheckinStore>,
    pub(crate) tree: TreeOptions,
    pub(crate) keepalive_seconds: u64,
    pub(crate) max_header_count: usize,
    pub(crate) max_header_bytes: usize,
    /// Also bounds how long a password POST may take to send its body.
    pub(crate) header_timeout: Duration,
    /// How long one write of an answer may wait for the client to read.
    pub(crate) write_timeout: Duration,
    pub(crate) audit: Arc<AuditGate>,
    pub(crate) refusals: Arc<RefusalBudget>,
    /// The listeners' addresses: a `Host` of theirs is accepted.
    pub(crate) own_addresses: Vec<IpAddr>,
    /// Requests waiting for their document to change.
    pub(crate) parking: Arc<Parking>,
    /// Signed identity tokens, when configured.
    pub(crate) identity: Option<Arc<Issuer>>,
}

/// Put on each request's session by the listener: a flag set once the request's headers are in, and the
/// connection's link-layer answer (asked on its first request that needs it).
pub(crate) struct ConnectionState {
    pub(crate) headers_in: Arc<AtomicBool>,
    pub(crate) link_layer: Arc<ConnectionMemo>,
    /// Until when this connection's request waits for a change (the listener's exchange
    /// deadline stretches to it).
    pub(crate) parked: Arc<ParkedUntil>,
}

/// One request's state between pingora's phases.
#[derive(Default)]
pub(crate) struct RequestState {
    /// The connection's link-layer answer, handed over by the listener.
    link: Option<Arc<ConnectionMemo>>,
    /// What the request path decided, for the `logging` phase.
    record: Option<Record>,
    /// The connection's parked flag, handed over by the listener.
    parked: Option<Arc<ParkedUntil>>,
}

/// The request body if it is at most `limit` bytes; `None` when larger (judged by
/// Content-Length first, then by what arrives) or unreadable.
async fn read_small_body(session: &mut Session, limit: usize) -> Option<Vec<u8>> {
    let declared = session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return None;
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > limit {
                    return None;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Some(body),
            Err(_) => return None,
        }
    }
}

/// The body of `pending` (at most its limit), within `timeout`: `Err` when it did not
/// arrive in time.
async fn body_of(
    session: &mut Session,
    pending: &handle::Pending,
    timeout: std::time::Duration,
) -> Result<Option<Vec<u8>>, tokio::time::error::Elapsed> {
    tokio::time::timeout(timeout, read_small_body(session, pending.body_limit())).await
}

/// Stands for a header value that is not text: present, and never valid.
const NOT_TEXT: &str = "\u{fffd}";

/// All values of one request header, in order; a value that is not text is [`NOT_TEXT`], so
/// that it is refused where it matters rather than taken as absent.
fn header_values<'a>(h: &'a pingora::http::RequestHeader, name: &str) -> Vec<&'a str> {
    h.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap_or(NOT_TEXT))
        .collect()
}

/// The peer's address and, for an IPv6 one, the index of the interface it is on (the scope
/// the kernel gives a link-local peer; `0` otherwise).
pub(crate) fn ip_and_scope(addr: std::net::SocketAddr) -> (IpAddr, u32) {
    match addr {
        std::net::SocketAddr::V6(a) if a.ip().is_unicast_link_local() => {
            (IpAddr::V6(*a.ip()), a.scope_id())
        }
        a => (a.ip(), 0),
    }
}

fn peer_of(session: &Session) -> Option<(IpAddr, u32)> {
    session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| ip_and_scope(*a))
}

impl MetadataApp {
    /// Parks a request until its document changes, the wait is over or the service stops;
    /// then answers it from the index as it is. Each index swap renders it again (no
    /// Ironic request, no rate-limit token).
    async fn wait_for_change(
        &self,
        session: &Session,
        context: &Context<'_>,
        peer: (Option<IpAddr>, u32),
        parked: &Parked,
        flag: &ParkedUntil,
    ) -> Outcome {
        let header = session.req_header();
        let (xff, fwd) = (
            header_values(header, "x-forwarded-for"),
            header_values(header, "forwarded"),
        );
        let req = self.request(header, peer, None, &xff, &fwd);
        let client = parked.client();
        let Some(_slot) = self.parking.park(client) else {
            return parked.refused();
        };
        let deadline = tokio::time::Instant::now() + parked.wait.timeout;
        flag.set(Some(deadline.into_std()));
        let mut swaps = self.catalog.subscribe();
        let mut stopping = self.parking.stopping();
        // A swap between the first answer and the subscription is not missed.
        let mut out = handle::again(context, &req, parked);
        let why = loop {
            if parked.changed(&out) {
                break "changed";
            }
            tokio::select! {
                () = tokio::time::sleep_until(deadline) => break "timeout",
                r = swaps.changed() => {
                    if r.is_err() {
                        break "shutdown";
                    }
                }
                _ = stopping.wait_for(|s| *s) => break "shutdown",
            }
            out = handle::again(context, &req, parked);
        };
        flag.set(None);
        self.parking.answered(why);
        if why == "changed" {
            out
        } else {
            handle::again(context, &req, parked)
        }
    }

    /// The request as the request path sees it.
    fn request<'a>(
        &self,
        header: &'a pingora::http::RequestHeader,
        (peer, scope): (Option<IpAddr>, u32),
        body: Option<&'a [u8]>,
        xff: &'a [&'a str],
        fwd: &'a [&'a str],
    ) -> Request<'a> {
        let first = |name: &str| {
            header
                .headers
                .get(name)
                .map(|v| v.to_str().unwrap_or(NOT_TEXT))
        };
        let header_bytes: usize = header
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        Request {
            method: header.method.as_str(),
            path: header
                .uri
                .path_and_query()
                .map_or_else(|| header.uri.path(), |p| p.as_str()),
            peer,
            scope,
            x_forwarded_for: xff,
            forwarded: fwd,
            token: first("x-aws-ec2-metadata-token"),
            token_ttl: first("x-aws-ec2-metadata-token-ttl-seconds"),
            if_none_match: first("if-none-match"),
            body,
            headers_too_large: header.headers.len() > self.max_header_count
                || header_bytes > self.max_header_bytes,
            has_body: header.headers.contains_key("transfer-encoding")
                || first("content-length")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0),
            host: first("host").or_else(|| header.uri.authority().map(|a| a.as_str())),
            headers: Some(&header.headers),
        }
    }
}

#[async_trait]
impl ProxyHttp for MetadataApp {
    type CTX = RequestState;

    fn new_ctx(&self) -> Self::CTX {
        RequestState::default()
    }

    /// pingora hands over the connection context the listener attached once the request
    /// headers are read: tell it that this request is no longer a slow-header suspect.
    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
        prev_ctx: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(state) = prev_ctx.downcast::<ConnectionState>() {
            state.headers_in.store(true, Ordering::Release);
            ctx.link = Some(state.link_layer.clone());
            ctx.parked = Some(state.parked.clone());
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // pingora keeps idle downstream connections forever unless told otherwise; one the
        // client did not ask to keep (HTTP/1.0 without keep-alive, Connection: close) closes.
        if session.get_keepalive().is_some() {
            session.set_keepalive(Some(self.keepalive_seconds));
        }
        session.set_write_timeout(Some(self.write_timeout));
        let peer = peer_of(session).map_or((None, 0), |(ip, scope)| (Some(ip), scope));
        let today = handle::today_utc();
        let policy = self.policy.current();
        // A TCP connection cannot change hands between hosts: its peer's MAC is asked once.
        let memo = ctx.link.take().unwrap_or_default();
        let neighbours = Remembered {
            inner: &Netlink,
            memo: &memo,
        };
        let context = Context {
            catalog: &self.catalog,
            neighbours: &neighbours,
            policy: &policy,
            tokens: &self.tokens,
            passwords: &self.passwords,
            checkins: &self.checkins,
            tree: &self.tree,
            now: std::time::SystemTime::now(),
            today: &today,
            own_addresses: &self.own_addresses,
            identity: self.identity.as_deref(),
        };
        let on_demand = self.on_demand.as_deref();
        let step = {
            let header = session.req_header();
            let (xff, fwd) = (
                header_values(header, "x-forwarded-for"),
                header_values(header, "forwarded"),
            );
            let req = self.request(header, peer, None, &xff, &fwd);
            handle::handle(&context, on_demand, &req).await
        };
        let Outcome { reply, record } = match step {
            Step::Done(outcome) => outcome,
            // Admitted: only now is its (small) body read, within the header timeout.
            Step::NeedsBody(pending) => {
                let body = body_of(session, &pending, self.header_timeout).await;
                let header = session.req_header();
                let (xff, fwd) = (
                    header_values(header, "x-forwarded-for"),
                    header_values(header, "forwarded"),
                );
                let read = body.as_ref().ok().and_then(|b| b.as_deref());
                let req = self.request(header, peer, read, &xff, &fwd);
                handle::resume(&context, on_demand, &req, pending, body.is_err()).await
            }
            Step::Wait(parked) => {
                let flag = ctx.parked.clone().unwrap_or_default();
                self.wait_for_change(session, &context, peer, &parked, &flag)
                    .await
            }
        };
        if record.refusal == Some(Refusal::BodyTimeout) {
            session.set_keepalive(None);
        }
        // A client refused past its budget is let go after this answer.
        if let (Some(r), Some(who)) = (record.refusal, record.client.or(peer.0)) {
            if r.is_denial() && self.refusals.refused(who) {
                session.set_keepalive(None);
                self.metrics
                    .conn
                    .refusal_throttled
                    .with_label_values(&["closed"])
                    .inc();
            }
        }
        ctx.record = Some(record);
        if let Some(hops) = reply.hop_limit {
            // The TTL holds for the connection's packets from now on: it ends with this answer.
            session.set_keepalive(None);
            if let Err(e) = limit_hops(session, hops) {
                tracing::error!(error = %e, "cannot limit the hop count of a token answer; refusing it");
                let refused = Refusal::HopLimitUnavailable.reply();
                write_reply(session, refused).await?;
                return Ok(true);
            }
        }
        write_reply(session, reply).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut Self::CTX,
    ) -> Result<Box<HttpPeer>> {
        // request_filter answers every request; reaching here is a bug, never a proxy hop.
        Err(Error::explain(
            ErrorType::InternalError,
            "metadata requests are answered in request_filter",
        ))
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut Self::CTX) {
        let Some(record) = ctx.record.take() else {
            if let Some(e) = error {
                tracing::debug!(target: "access", error = %e, "request failed before an answer");
            }
            return;
        };
        let status = session.response_written().map_or(0, |h| h.status.as_u16());
        let header = session.req_header();
        let path = header
            .uri
            .path_and_query()
            .map_or_else(|| header.uri.path(), |p| p.as_str());
        log_request(
            &self.metrics,
            &self.audit,
            &record,
            status,
            header.method.as_str(),
            path,
            peer_of(session).map(|p| p.0),
        );
    }
}

fn log_request(
    metrics: &Metrics,
    audit: &AuditGate,
    record: &Record,
    status: u16,
    method: &str,
    path: &str,
    peer: Option<IpAddr>,
) {
    let reason = record.refusal.map(|r| r.reason());
    metrics.observe(status, reason, record.zone.as_deref());
    let asker = record.client.or(peer);
    let (client, peer) = (Addr(record.client), Addr(peer));
    match record.refusal {
        Some(r) if r.is_denial() && !audit.admit(asker, r.reason()) => {
            metrics.conn.audit_suppressed.inc();
        }
        Some(r) if r.is_denial() => tracing::info!(
            target: "audit",
            event = "denied",
            reason = r.reason(),
            status,
            client = %client,
            peer = %peer,
            zone = record.zone.as_deref().unwrap_or("-"),
            node = record.node.as_deref().unwrap_or("-"),
            method,
            path = %truncate(path),
            detail = record.detail.as_deref().unwrap_or(""),
            "request refused"
        ),
        _ => tracing::debug!(
            target: "access",
            status,
            client = %client,
            node = record.node.as_deref().unwrap_or("-"),
            method,
            path = %truncate(path),
            "request answered"
        ),
    }
}

/// An address for a log line, `-` when there is none; formatted only if the line is.
struct Addr(Option<IpAddr>);

impl std::fmt::Display for Addr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(ip) => ip.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// Paths are client-controlled: bound what a log line carries.
fn truncate(path: &str) -> &str {
    let mut end = path.len().min(256);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

fn response_header(reply: &Reply) -> Result<ResponseHeader> {
    let mut h = ResponseHeader::build(reply.status, Some(4 + reply.headers.len()))?;
    reply.fields(|k, v| h.insert_header(k, v).map(drop))?;
    Ok(h)
}

/// Sets the IP TTL (IPv6: unicast hop limit) of the session's socket.
fn limit_hops(session: &Session, hops: u8) -> std::io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    use std::os::fd::AsRawFd;
    let fd = session
        .stream()
        .and_then(|s| {
            s.as_any()
                .downcast_ref::<pingora::protocols::l4::stream::Stream>()
        })
        .map(|s| s.as_raw_fd())
        .ok_or_else(|| std::io::Error::other("not a TCP connection"))?;
    let hops = i32::from(hops);
    let v4 = match session.client_addr().and_then(|a| a.as_inet()) {
        Some(std::net::SocketAddr::V6(a)) => a.ip().to_ipv4_mapped().is_some(),
        _ => true,
    };
    // `session` holds the stream, so `fd` stays open for these calls.
    if v4 {
        setsockopt(fd, sockopt::Ipv4Ttl, &hops)?;
    } else {
        setsockopt(fd, sockopt::Ipv6Ttl, &hops)?;
    }
    Ok(())
}

async fn write_reply(session: &mut Session, reply: Reply) -> Result<()> {
    let header = response_header(&reply)?;
    session
        .write_response_header(Box::new(header), reply.body.is_empty())
        .await?;
    if !reply.body.is_empty() {
        session.write_response_body(Some(reply.body), true).await?;
    }
    Ok(())
}
