//! The metadata listener's connection handling around pingora's HTTP/1 loop: caps open
//! connections (in total and per client) when they are accepted, and closes a connection
//! whose request headers do not arrive within the header timeout. pingora alone would wait
//! 60 s per `read()` with no overall deadline, so a client dripping bytes could hold a
//! connection forever.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::{HttpServerApp, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::Stream;
use pingora::proxy::HttpProxy;
use pingora::server::ShutdownWatch;

use super::metadata::{ConnectionState, MetadataApp};
use crate::audit::{AuditGate, RefusalBudget};
use crate::conn::ConnLimits;
use crate::identity::neighbour::ConnectionMemo;
use crate::longpoll::ParkedUntil;
use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::reply::Refusal;

pub(crate) struct Listener {
    pub(crate) proxy: Arc<HttpProxy<MetadataApp>>,
    pub(crate) conns: Arc<ConnLimits>,
    pub(crate) policy: Arc<PolicyStore>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) header_timeout: Duration,
    pub(crate) keepalive: Duration,
    /// Longest an exchange may last once its headers are in (body, identity with an
    /// on-demand refresh, the answer's writes): a client that stops reading is let go.
    pub(crate) exchange_limit: Duration,
    pub(crate) audit: Arc<AuditGate>,
    pub(crate) refusals: Arc<RefusalBudget>,
}

impl Listener {
    /// Tell a refused client why, then close. A fresh socket's send buffer takes these few
    /// bytes at once; a client that does not read them is not waited for.
    async fn refuse(&self, mut stream: Stream, refusal: Refusal, peer: std::net::IpAddr) {
        use tokio::io::AsyncWriteExt;
        self.metrics
            .conn
            .refused
            .with_label_values(&[refusal.reason()])
            .inc();
        if self.audit.admit(Some(peer), refusal.reason()) {
            tracing::info!(
                target: "audit",
                event = "connection_refused",
                reason = refusal.reason(),
                peer = %peer,
                "connection refused"
            );
        } else {
            self.metrics.conn.audit_suppressed.inc();
        }
        let bytes = refusal.reply().to_http1_closing();
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            stream.write_all(&bytes).await?;
            stream.shutdown().await
        })
        .await;
    }

    /// Serves the connection's requests one after the other until it closes or stalls.
    async fn serve(&self, mut stream: Stream, peer: std::net::IpAddr, shutdown: &ShutdownWatch) {
        let mut persistent = None;
        // A new connection must complete its first request's headers within the header
        // timeout. A kept-alive one may first idle for the keep-alive time (pingora closes
        // it then), so its next headers are due within both. Nothing is read ahead here:
        // pingora's own read is the only one.
        let mut deadline = self.header_timeout;
        let link_layer = Arc::new(ConnectionMemo::default());
        let parked = Arc::new(ParkedUntil::default());
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
                parked: parked.clone(),
            })));
            let request = self.proxy.process_new_http(session, shutdown);
            tokio::pin!(request);
            let reused = tokio::select! {
                r = &mut request => r,
                _ = tokio::time::sleep(deadline) => {
                    if headers_in.load(Ordering::Acquire) {
                        // Headers are in: the rest of the exchange gets its own bound,
                        // stretched by the time a parked request may still wait.
                        let mut limit = self.exchange_limit;
                        loop {
                            match tokio::time::timeout(limit, &mut request).await {
                                Ok(reused) => break reused,
                                Err(_) => match parked.remaining() {
                                    Some(more) => limit = more + self.exchange_limit,
                                    None => {
                                        self.metrics.conn.exchange_timeouts.inc();
                                        tracing::debug!(peer = %peer, "exchange not finished in time; closing");
                                        break None;
                                    }
                                },
                            }
                        }
                    } else {
                        self.metrics.conn.header_timeouts.inc();
                        tracing::debug!(peer = %peer, "request headers not received in time; closing");
                        None
                    }
                }
            };
            let Some(reused) = reused else { return };
            let (next, settings) = reused.consume();
            stream = next;
            persistent = settings;
            deadline = self.keepalive + self.header_timeout;
        }
    }
}

#[async_trait]
impl ServerApp for Listener {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Fail closed: a connection without a peer address has nobody to answer for.
        let addr = stream
            .get_socket_digest()
            .and_then(|d| d.peer_addr().and_then(|a| a.as_inet()).copied())?;
        let (peer, scope) = super::metadata::ip_and_scope(addr);
        // A client over its refusal budget costs a handshake per try, nothing more.
        if self.refusals.blocked(peer) {
            self.metrics
                .conn
                .refusal_throttled
                .with_label_values(&["refused"])
                .inc();
            self.refuse(stream, Refusal::TooManyRefusals, peer).await;
            return None;
        }
        let key = self.policy.current().connection_key(peer, scope);
        let slot = match self.conns.acquire(key) {
            Ok(slot) => slot,
            Err(refusal) => {
                self.refuse(stream, refusal, peer).await;
                return None;
            }
        };
        self.metrics.conn.open.inc();
        self.serve(stream, peer, shutdown).await;
        drop(slot);
        self.metrics.conn.open.dec();
        None
    }

    async fn cleanup(&self) {
        self.proxy.http_cleanup().await;
    }
}
