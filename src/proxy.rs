//! The pingora gateway: the only module that knows pingora. Requests are answered inside
//! `request_filter` from [`crate::gateway::handle`]; there is no upstream hop.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use pingora::services::listening::Service;
use tokio::sync::Notify;

use crate::conn::ConnLimits;
use crate::gateway::{self, Context, Outcome, Request};
use crate::inventory::{Catalog, OnDemand};
use crate::ironic::Refresher;
use crate::metadata::password::{self, PasswordStore};
use crate::metrics::Metrics;
use crate::neighbour::{ConnectionMemo, Netlink, Remembered};
use crate::policy::store::PolicyStore;
use crate::policy::token::TokenKey;
use crate::reply::{Refusal, Reply};
use crate::server::Prepared;

/// Answers metadata requests; holds only shared, read-mostly state.
pub struct MetadataGateway {
    catalog: Arc<Catalog>,
    metrics: Arc<Metrics>,
    on_demand: Option<Arc<dyn OnDemand>>,
    policy: Arc<PolicyStore>,
    tokens: Arc<TokenKey>,
    passwords: Arc<PasswordStore>,
    keepalive_seconds: u64,
    max_header_count: usize,
    max_header_bytes: usize,
    /// Also bounds how long a password POST may take to send its body.
    header_timeout: Duration,
}

/// Put on each request's session by [`Guarded`]: a flag set once the request's headers are
/// in, and the connection's link-layer answer (asked on its first request that needs it).
struct ConnectionState {
    headers_in: Arc<AtomicBool>,
    link_layer: Arc<ConnectionMemo>,
}

/// The request body if it is at most [`password::MAX_SIZE`] bytes; `None` when larger
/// (judged by Content-Length first, then by what arrives) or unreadable.
async fn read_small_body(session: &mut Session) -> Option<Vec<u8>> {
    let declared = session
        .req_header()
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    if declared.is_some_and(|n| n > password::MAX_SIZE) {
        return None;
    }
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > password::MAX_SIZE {
                    return None;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Some(body),
            Err(_) => return None,
        }
    }
}

/// All values of one request header, as text (values that are not text are skipped).
fn header_values<'a>(h: &'a pingora::http::RequestHeader, name: &str) -> Vec<&'a str> {
    h.headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

#[async_trait]
impl ProxyHttp for MetadataGateway {
    /// The connection's link-layer memo, handed over by [`Guarded`].
    type CTX = Option<Arc<ConnectionMemo>>;

    fn new_ctx(&self) -> Self::CTX {
        None
    }

    /// pingora hands over the connection context [`Guarded`] attached once the request
    /// headers are read: tell it that this request is no longer a slow-header suspect.
    fn on_connection_reuse(
        &self,
        _session: &mut Session,
        ctx: &mut Self::CTX,
        prev_ctx: Box<dyn std::any::Any + Send + Sync>,
    ) {
        if let Ok(state) = prev_ctx.downcast::<ConnectionState>() {
            state.headers_in.store(true, Ordering::Release);
            *ctx = Some(state.link_layer.clone());
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Self::CTX) -> Result<bool> {
        // pingora keeps idle downstream connections forever unless told otherwise.
        session.set_keepalive(Some(self.keepalive_seconds));
        let peer: Option<IpAddr> = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // Only a password POST carries a body worth reading, and only a small one.
        let body = if session.req_header().method == http::Method::POST {
            match tokio::time::timeout(self.header_timeout, read_small_body(session)).await {
                Ok(body) => body,
                Err(_) => {
                    let outcome = Outcome::refuse(Refusal::BodyTimeout, None, None, None);
                    let path = session.req_header().uri.path().to_owned();
                    record(&self.metrics, &outcome, "POST", &path, peer);
                    session.set_keepalive(None);
                    write_reply(session, outcome.reply).await?;
                    return Ok(true);
                }
            }
        } else {
            Some(Vec::new())
        };
        let header = session.req_header();
        let method = header.method.as_str();
        let path = header
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_else(|| header.uri.path());
        let xff = header_values(header, "x-forwarded-for");
        let fwd = header_values(header, "forwarded");
        let first = |name: &str| header.headers.get(name).and_then(|v| v.to_str().ok());
        let req = Request {
            method,
            path,
            peer,
            x_forwarded_for: &xff,
            forwarded: &fwd,
            token: first("x-aws-ec2-metadata-token"),
            token_ttl: first("x-aws-ec2-metadata-token-ttl-seconds"),
            if_none_match: first("if-none-match"),
            body: body.as_deref(),
            headers_too_large: header.headers.len() > self.max_header_count
                || header
                    .headers
                    .iter()
                    .map(|(k, v)| k.as_str().len() + v.len() + 4)
                    .sum::<usize>()
                    > self.max_header_bytes,
            has_body: header.headers.contains_key("transfer-encoding")
                || first("content-length")
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .is_some_and(|n| n > 0),
        };
        let today = gateway::today_utc();
        let policy = self.policy.current();
        // A TCP connection cannot change hands between hosts: its peer's MAC is asked once.
        let memo = ctx.take().unwrap_or_default();
        let neighbours = Remembered {
            inner: &Netlink,
            memo: &memo,
        };
        let ctx = Context {
            catalog: &self.catalog,
            neighbours: &neighbours,
            policy: &policy,
            tokens: &self.tokens,
            passwords: &self.passwords,
            now: std::time::SystemTime::now(),
            today: &today,
        };
        let outcome = gateway::handle_with_refresh(&ctx, self.on_demand.as_deref(), &req).await;
        record(&self.metrics, &outcome, method, path, peer);
        write_reply(session, outcome.reply).await?;
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
}

fn record(metrics: &Metrics, outcome: &Outcome, method: &str, path: &str, peer: Option<IpAddr>) {
    let reason = outcome.refusal.map(|r| r.reason());
    metrics.observe(outcome.reply.status, reason, outcome.zone.as_deref());
    let (client, peer) = (Addr(outcome.client), Addr(peer));
    match outcome.refusal {
        Some(r) if r.is_denial() => tracing::info!(
            target: "audit",
            event = "denied",
            reason = r.reason(),
            status = outcome.reply.status,
            client = %client,
            peer = %peer,
            zone = outcome.zone.as_deref().unwrap_or("-"),
            node = outcome.node.as_deref().unwrap_or("-"),
            method,
            path = %truncate(path),
            detail = outcome.detail.as_deref().unwrap_or(""),
            "request refused"
        ),
        _ => tracing::debug!(
            target: "access",
            status = outcome.reply.status,
            client = %client,
            node = outcome.node.as_deref().unwrap_or("-"),
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
    h.insert_header("Content-Type", reply.content_type)?;
    if reply.status != 304 {
        h.insert_header("Content-Length", reply.body.len().to_string())?;
    }
    h.insert_header("Cache-Control", "no-store")?;
    for (k, v) in &reply.headers {
        h.insert_header(*k, v.as_str())?;
    }
    Ok(h)
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

/// The metadata listener's connection handling around pingora's HTTP/1 loop: caps open
/// connections (in total and per client) when they are accepted, and closes a connection
/// whose request headers do not arrive within the header timeout. pingora alone would wait
/// 60 s per `read()` with no overall deadline, so a client dripping bytes could hold a
/// connection forever.
struct Guarded {
    proxy: Arc<HttpProxy<MetadataGateway>>,
    conns: Arc<ConnLimits>,
    policy: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    header_timeout: Duration,
    keepalive: Duration,
}

impl Guarded {
    /// Tell a refused client why, then close. A fresh socket's send buffer takes these few
    /// bytes at once; a client that does not read them is not waited for.
    async fn refuse(&self, mut stream: Stream, refusal: crate::conn::ConnRefusal) {
        use tokio::io::AsyncWriteExt;
        self.metrics
            .connections_refused
            .with_label_values(&[refusal.reason()])
            .inc();
        let (status, text) = match refusal.status() {
            429 => (
                "429 Too Many Requests",
                "too many connections from this client\n",
            ),
            _ => ("503 Service Unavailable", "too many connections\n"),
        };
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nRetry-After: 1\r\n\r\n{text}",
            text.len()
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(reply.as_bytes()).await?;
            stream.shutdown().await
        })
        .await;
    }
}

#[async_trait]
impl ServerApp for Guarded {
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Fail closed: a connection without a peer address has nobody to answer for.
        let peer = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).map(|a| a.ip()))?;
        let key = self.policy.current().connection_key(peer);
        let slot = match self.conns.acquire(key) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracing::info!(
                    target: "audit",
                    event = "connection_refused",
                    reason = refusal.reason(),
                    peer = %peer,
                    "connection refused"
                );
                self.refuse(stream, refusal).await;
                return None;
            }
        };
        self.metrics.connections_open.inc();
        let mut persistent = None;
        // A new connection must complete its first request's headers within the header
        // timeout. A kept-alive one may first idle for the keep-alive time (pingora closes
        // it then), so its next headers are due within both. Nothing is read ahead here:
        // pingora's own read is the only one.
        let mut deadline = self.header_timeout;
        let link_layer = Arc::new(ConnectionMemo::default());
        loop {
            let mut session = ServerSession::new_http1(stream);
            session.set_keepalive(Some(self.keepalive.as_secs()));
            if let Some(settings) = persistent.take() {
                pingora::apps::HttpPersistentSettings::apply_to_session(settings, &mut session);
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            let headers_in = Arc::new(AtomicBool::new(false));
            session.set_connection_user_context(Some(Box::new(ConnectionState {
                headers_in: headers_in.clone(),
                link_layer: link_layer.clone(),
            })));
            let request = self.proxy.process_new_http(session, shutdown);
            tokio::pin!(request);
            let reused = tokio::select! {
                r = &mut request => r,
                _ = tokio::time::sleep(deadline) => {
                    if headers_in.load(Ordering::Acquire) {
                        // Headers are in: the answer is bounded by the handler's own timeouts.
                        request.await
                    } else {
                        self.metrics.header_timeouts.inc();
                        tracing::debug!(peer = %peer, "request headers not received in time; closing");
                        None
                    }
                }
            };
            let Some(reused) = reused else { break };
            let (next, settings) = reused.consume();
            stream = next;
            persistent = settings;
            deadline = self.keepalive + self.header_timeout;
        }
        drop(slot);
        self.metrics.connections_open.dec();
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}

/// The admin listener: health, readiness, metrics.
pub struct AdminApp {
    catalog: Arc<Catalog>,
    metrics: Arc<Metrics>,
    /// The metadata listener's address, checked until it first accepts a connection.
    listen: std::net::SocketAddr,
    listening: std::sync::atomic::AtomicBool,
}

impl AdminApp {
    /// pingora starts listeners without telling when they are bound: ask the metadata
    /// port itself (the loopback of its family when it listens on every address).
    async fn metadata_listening(&self) -> bool {
        use std::sync::atomic::Ordering;
        if self.listening.load(Ordering::Relaxed) {
            return true;
        }
        let mut target = self.listen;
        if target.ip().is_unspecified() {
            target.set_ip(match target {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let up = tokio::time::timeout(
            std::time::Duration::from_millis(500),
            tokio::net::TcpStream::connect(target),
        )
        .await
        .is_ok_and(|c| c.is_ok());
        if up {
            self.listening.store(true, Ordering::Relaxed);
        }
        up
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let listening = self.metadata_listening().await;
        let header = session.req_header();
        let path = header
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let reply = crate::admin::handle(
            header.method.as_str(),
            path,
            &self.catalog,
            &self.metrics,
            listening,
        );
        let mut builder = http::Response::builder()
            .status(reply.status)
            .header("Content-Type", reply.content_type)
            .header("Content-Length", reply.body.len())
            .header("Cache-Control", "no-store");
        for (k, v) in &reply.headers {
            builder = builder.header(*k, v.as_str());
        }
        builder
            .body(reply.body.to_vec())
            .unwrap_or_else(|_| http::Response::new(Vec::new()))
    }
}

/// Stops the server on SIGTERM, SIGINT or [`Notify::notify_one`], always gracefully: the
/// listeners close, in-flight requests get the grace period.
struct StopWatch {
    stop: Arc<Notify>,
}

#[async_trait]
impl ShutdownSignalWatch for StopWatch {
    async fn recv(&self) -> ShutdownSignal {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        let wait = |s: &mut Option<tokio::signal::unix::Signal>| {
            let s = s.take();
            async move {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
        };
        tokio::select! {
            _ = wait(&mut term) => tracing::info!("SIGTERM received, stopping"),
            _ = wait(&mut int) => tracing::info!("SIGINT received, stopping"),
            _ = self.stop.notified() => tracing::info!("stop requested, stopping"),
        }
        ShutdownSignal::GracefulTerminate
    }
}

/// Runs the Ironic refresher on its own runtime until the server stops.
struct RefreshService(Arc<Refresher>);

#[async_trait]
impl BackgroundService for RefreshService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run(shutdown).await;
    }
}

/// Watches the policy directory and SIGHUP, and sweeps rate-limiter state.
struct PolicyService(Arc<PolicyStore>);

#[async_trait]
impl BackgroundService for PolicyService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run(shutdown).await;
    }
}

/// Build and run the pingora server until it is stopped. Blocks the calling thread; must
/// not be called from inside a tokio runtime.
pub fn run(prepared: Prepared, stop: Arc<Notify>) {
    let Prepared {
        settings,
        catalog,
        metrics,
        refresher,
        policy,
        tokens,
        passwords,
    } = prepared;
    let conf = ServerConf {
        threads: settings.threads,
        grace_period_seconds: Some(settings.shutdown_grace_seconds),
        graceful_shutdown_timeout_seconds: Some(settings.shutdown_grace_seconds.max(1)),
        // Never write into shared /tmp paths: no pid file or upgrade socket is used.
        pid_file: String::new(),
        upgrade_sock: String::new(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let header_timeout = Duration::from_secs(settings.header_timeout_seconds);
    let proxy = pingora::proxy::http_proxy(
        &server.configuration,
        MetadataGateway {
            catalog: catalog.clone(),
            metrics: metrics.clone(),
            on_demand: refresher.clone().map(|r| r as Arc<dyn OnDemand>),
            policy: policy.clone(),
            tokens,
            passwords,
            keepalive_seconds: settings.keepalive_seconds,
            max_header_count: settings.max_header_count,
            max_header_bytes: settings.max_header_bytes,
            header_timeout,
        },
    );
    let mut gateway = Service::new(
        "metadata".to_string(),
        Guarded {
            proxy: Arc::new(proxy),
            conns: ConnLimits::new(
                settings.max_connections,
                settings.max_connections_per_client,
            ),
            policy: policy.clone(),
            metrics: metrics.clone(),
            header_timeout,
            keepalive: Duration::from_secs(settings.keepalive_seconds),
        },
    );
    gateway.add_tcp(&settings.listen.to_string());
    let mut admin = Service::new(
        "admin".to_string(),
        AdminApp {
            catalog,
            metrics,
            listen: settings.listen,
            listening: Default::default(),
        },
    );
    admin.add_tcp(&settings.admin.to_string());
    admin.threads = Some(1);
    server.add_service(gateway);
    server.add_service(admin);
    server.add_service(background_service("policy", PolicyService(policy)));
    if let Some(r) = refresher {
        server.add_service(background_service("ironic refresher", RefreshService(r)));
    }
    server.run(RunArgs {
        shutdown_signal: Box::new(StopWatch { stop }),
    });
}
