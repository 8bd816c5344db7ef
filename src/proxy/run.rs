//! Assembly: the metadata and admin listeners and the background services in one pingora
//! server, run until SIGTERM, SIGINT or a stop request.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::prelude::*;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch, ShutdownWatch};
use pingora::services::background::BackgroundService;
use pingora::services::listening::Service;
use tokio::sync::Notify;

use super::admin::AdminApp;
use super::listener::Listener;
use super::metadata::MetadataApp;
use crate::audit::{AuditGate, RefusalBudget};
use crate::conn::ConnLimits;
use crate::identity_token::Issuer;
use crate::inventory::refresh::Refresher;
use crate::inventory::OnDemand;
use crate::longpoll::Parking;
use crate::metadata::render::TreeOptions;
use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::segment::{Claim, Guard};
use crate::server::Prepared;

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

/// Ends each audit interval with one line summing up the refusals it did not log, and
/// forgets refusal budgets that are full again.
struct AuditService {
    gate: Arc<AuditGate>,
    refusals: Arc<RefusalBudget>,
    every: Duration,
}

#[async_trait]
impl BackgroundService for AuditService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut tick = tokio::time::interval(self.every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            let (suppressed, clients) = self.gate.rotate();
            if suppressed > 0 {
                tracing::info!(
                    target: "audit",
                    event = "suppressed",
                    refusals = suppressed,
                    clients,
                    seconds = self.every.as_secs(),
                    "refusals counted without a line of their own"
                );
            }
            self.refusals.sweep();
        }
    }
}

/// Watches the segment for impostors until the server stops.
struct SegmentService {
    guard: Arc<Guard>,
    listen: Vec<std::net::IpAddr>,
    metrics: Arc<Metrics>,
    audit: Arc<AuditGate>,
}

#[async_trait]
impl BackgroundService for SegmentService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let (watches, own) = crate::segment::plan(&self.listen);
        let (metrics, audit) = (self.metrics.clone(), self.audit.clone());
        self.guard.start(
            watches,
            own,
            Arc::new(move |c: &Claim| {
                metrics
                    .conn
                    .impostor_frames
                    .with_label_values(&[c.kind])
                    .inc();
                if audit.admit(Some(c.address), c.kind) {
                    tracing::warn!(
                        target: "audit",
                        event = "impostor",
                        kind = c.kind,
                        address = %c.address,
                        mac = %crate::identity::neighbour::mac_text(&c.mac),
                        "another host claims a metadata address on the segment"
                    );
                }
            }),
        );
        let _ = shutdown.changed().await;
        self.guard.stop();
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

/// Watches the identity key directory and SIGHUP, and sweeps the per-node token limiter.
struct IdentityService(Arc<Issuer>);

#[async_trait]
impl BackgroundService for IdentityService {
    async fn start(&self, shutdown: ShutdownWatch) {
        self.0.run(shutdown).await;
    }
}

/// Answers every parked `wait_for_change` request when the service stops.
struct WaitingService(Arc<Parking>);

#[async_trait]
impl BackgroundService for WaitingService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let _ = shutdown.changed().await;
        self.0.stop();
    }
}

/// State the metadata listener and the background services share.
struct Shared {
    audit: Arc<AuditGate>,
    parking: Arc<Parking>,
    refusals: Arc<RefusalBudget>,
    segment: Arc<Guard>,
}

/// Build and run the pingora server until it is stopped. Blocks the calling thread; must
/// not be called from inside a tokio runtime.
pub(crate) fn run(p: Prepared, stop: Arc<Notify>) {
    let s = &p.settings;
    announce(&p);
    let conf = ServerConf {
        threads: s.threads,
        grace_period_seconds: Some(s.shutdown_grace_seconds),
        graceful_shutdown_timeout_seconds: Some(s.shutdown_grace_seconds.max(1)),
        // Never write into shared /tmp paths: no pid file or upgrade socket is used.
        pid_file: String::new(),
        upgrade_sock: String::new(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let shared = Shared {
        audit: Arc::new(AuditGate::new()),
        refusals: Arc::new(RefusalBudget::new(s.refusals_per_minute)),
        segment: Arc::new(Guard::default()),
        parking: Arc::new(Parking::new(
            s.max_waiting,
            s.max_waiting_per_client,
            p.metrics.clone(),
        )),
    };
    let metadata = metadata_service(&server, &p, &shared);
    let mut admin = Service::new(
        "admin".to_string(),
        AdminApp {
            catalog: p.catalog.clone(),
            metrics: p.metrics.clone(),
            policy: p.policy.clone(),
            segment: shared.segment.clone(),
            listen: s.listen.clone(),
            listening: Default::default(),
            checkins: p.checkins.clone(),
            identity: p.identity.clone(),
        },
    );
    admin.add_tcp(&s.admin.to_string());
    admin.threads = Some(1);
    server.add_service(metadata);
    server.add_service(admin);
    add_background(&mut server, p, shared);
    server.run(RunArgs {
        shutdown_signal: Box::new(StopWatch { stop }),
    });
    tracing::info!("stopped");
}

/// The one start-up line: what is served where, from what, under which policy.
fn announce(p: &Prepared) {
    let s = &p.settings;
    let listen: Vec<String> = s.listen.iter().map(|a| a.to_string()).collect();
    let listen = listen.join(",");
    let (status, index) = (p.catalog.status(), p.catalog.index());
    let source = &status.source;
    let (dir, zones) = (s.policy_dir.display(), p.policy.current().zones().len());
    if p.refresher.is_some() {
        // The nodes come with the first sweep, after this line.
        tracing::info!(%listen, admin = %s.admin, %source, policy_dir = %dir, zones, "serving metadata");
    } else {
        let (nodes, served) = (index.nodes().len(), index.served_count());
        tracing::info!(%listen, admin = %s.admin, %source, nodes, served, policy_dir = %dir, zones, "serving metadata");
    }
}

/// The metadata listeners: the request path, behind the connection limits.
fn metadata_service(server: &Server, p: &Prepared, shared: &Shared) -> Service<Listener> {
    let s = &p.settings;
    let header_timeout = Duration::from_secs(s.header_timeout_seconds);
    let write_timeout = Duration::from_secs(s.write_timeout_seconds);
    let app = MetadataApp {
        catalog: p.catalog.clone(),
        metrics: p.metrics.clone(),
        on_demand: p.refresher.clone().map(|r| r as Arc<dyn OnDemand>),
        policy: p.policy.clone(),
        tokens: p.tokens.clone(),
        passwords: p.passwords.clone(),
        checkins: p.checkins.clone(),
        tree: TreeOptions {
            ec2_region: s.ec2_region.clone(),
        },
        keepalive_seconds: s.keepalive_seconds,
        max_header_count: s.max_header_count,
        max_header_bytes: s.max_header_bytes,
        header_timeout,
        write_timeout,
        audit: shared.audit.clone(),
        refusals: shared.refusals.clone(),
        own_addresses: s.listen.iter().map(|a| a.ip()).collect(),
        parking: shared.parking.clone(),
        identity: p.identity.clone(),
    };
    let listener = Listener {
        proxy: Arc::new(pingora::proxy::http_proxy(&server.configuration, app)),
        conns: ConnLimits::new(s.max_connections, s.max_connections_per_client),
        policy: p.policy.clone(),
        metrics: p.metrics.clone(),
        header_timeout,
        keepalive: Duration::from_secs(s.keepalive_seconds),
        exchange_limit: header_timeout + s.on_demand_wait + write_timeout,
        audit: shared.audit.clone(),
        refusals: shared.refusals.clone(),
    };
    let mut metadata = Service::new("metadata".to_string(), listener);
    for addr in &s.listen {
        metadata.add_listener(
            ListenerConfig::tcp(addr.to_string())
                .l4_buffer(L4BufferSettings::default().write(ANSWER_WRITE_BUFFER)),
        );
    }
    metadata
}

/// Bytes of an answer gathered before they are sent. pingora's default (1,460) sent the
/// header of any answer above about 1,250 bytes of body on its own, then the body: two
/// writes and two segments. Answers up to this size (meta_data.json, network_data.json,
/// vendor data, most user data) leave in one write; a larger body is written straight
/// after its header. Pages of the buffer are only touched as far as answers fill them.
const ANSWER_WRITE_BUFFER: usize = 16 * 1024;

/// The policy watch, the impostor watch, the audit interval and the Ironic refresher.
fn add_background(server: &mut Server, p: Prepared, shared: Shared) {
    let s = &p.settings;
    server.add_service(background_service(
        "policy",
        PolicyService(p.policy.clone()),
    ));
    if s.impostor_detection {
        server.add_service(background_service(
            "segment",
            SegmentService {
                guard: shared.segment,
                listen: s.listen.iter().map(|a| a.ip()).collect(),
                metrics: p.metrics.clone(),
                audit: shared.audit.clone(),
            },
        ));
    }
    if let Some(issuer) = &p.identity {
        server.add_service(background_service(
            "identity keys",
            IdentityService(issuer.clone()),
        ));
    }
    server.add_service(background_service(
        "waiting",
        WaitingService(shared.parking),
    ));
    server.add_service(background_service(
        "audit",
        AuditService {
            gate: shared.audit,
            refusals: shared.refusals,
            every: Duration::from_secs(s.audit_interval_seconds),
        },
    ));
    if let Some(r) = p.refresher {
        server.add_service(background_service("ironic refresher", RefreshService(r)));
    }
}
