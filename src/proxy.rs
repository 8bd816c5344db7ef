//! The pingora gateway: the only module that knows pingora. Requests are answered inside
//! `request_filter` from [`crate::gateway::handle`]; there is no upstream hop.

use std::net::IpAddr;
use std::sync::Arc;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::http::ResponseHeader;
use pingora::prelude::*;
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use pingora::services::listening::Service;
use tokio::sync::Notify;

use crate::gateway::{self, Context, Outcome, Request};
use crate::inventory::{Catalog, OnDemand};
use crate::ironic::Refresher;
use crate::metadata::password::{self, PasswordStore};
use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::policy::token::TokenKey;
use crate::reply::Reply;
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
    type CTX = ();

    fn new_ctx(&self) -> Self::CTX {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut Self::CTX) -> Result<bool> {
        // pingora keeps idle downstream connections forever unless told otherwise.
        session.set_keepalive(Some(self.keepalive_seconds));
        let peer: Option<IpAddr> = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        // Only a password POST carries a body worth reading, and only a small one.
        let body = if session.req_header().method == http::Method::POST {
            read_small_body(session).await
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
        let ctx = Context {
            catalog: &self.catalog,
            policy: &policy,
            tokens: &self.tokens,
            passwords: &self.passwords,
            now: std::time::SystemTime::now(),
            today: &today,
        };
        let outcome = gateway::handle_with_refresh(&ctx, self.on_demand.as_deref(), &req).await;
        let (method, path) = (method.to_owned(), path.to_owned());
        record(&self.metrics, &outcome, &method, &path, peer);
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
    let client = outcome.client.map(|c| c.to_string());
    let peer = peer.map(|p| p.to_string());
    match outcome.refusal {
        Some(r) if r.is_denial() => tracing::info!(
            target: "audit",
            event = "denied",
            reason = r.reason(),
            status = outcome.reply.status,
            client = client.as_deref().unwrap_or("-"),
            peer = peer.as_deref().unwrap_or("-"),
            zone = outcome.zone.as_deref().unwrap_or("-"),
            method,
            path = %truncate(path),
            detail = outcome.detail.as_deref().unwrap_or(""),
            "request refused"
        ),
        _ => tracing::debug!(
            target: "access",
            status = outcome.reply.status,
            client = client.as_deref().unwrap_or("-"),
            node = outcome.node.as_deref().unwrap_or("-"),
            method,
            path = %truncate(path),
            "request answered"
        ),
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
    let mut gateway = pingora::proxy::http_proxy_service_with_name(
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
        },
        "metadata",
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
