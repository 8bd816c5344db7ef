//! The admin listener: health, readiness and metrics, answered by [`crate::admin`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::identity_token::Issuer;
use crate::inventory::Catalog;
use crate::metadata::checkin::CheckinStore;
use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::segment::Guard;

pub(crate) struct AdminApp {
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) policy: Arc<PolicyStore>,
    pub(crate) segment: Arc<Guard>,
    /// The metadata listeners' addresses, checked until each has accepted a connection.
    pub(crate) listen: Vec<SocketAddr>,
    pub(crate) listening: AtomicBool,
    /// Check-ins of booted nodes, shown at `/nodes/<uuid>/checkin`.
    pub(crate) checkins: Arc<CheckinStore>,
    /// Signed identity tokens, when configured: their keys are published here.
    pub(crate) identity: Option<Arc<Issuer>>,
}

impl AdminApp {
    /// pingora starts listeners without telling when they are bound: ask each metadata
    /// port itself (the loopback of its family when it listens on every address).
    async fn metadata_listening(&self) -> bool {
        if self.listening.load(Ordering::Relaxed) {
            return true;
        }
        for addr in &self.listen {
            let mut target = *addr;
            if target.ip().is_unspecified() {
                target.set_ip(match target {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            let up = tokio::time::timeout(
                Duration::from_millis(500),
                tokio::net::TcpStream::connect(target),
            )
            .await
            .is_ok_and(|c| c.is_ok());
            if !up {
                return false;
            }
        }
        self.listening.store(true, Ordering::Relaxed);
        true
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> http::Response<Vec<u8>> {
        let listening = self.metadata_listening().await;
        let header = session.req_header();
        let path = header.uri.path_and_query().map_or("/", |p| p.as_str());
        if let Some(reply) =
            crate::admin::checkin(header.method.as_str(), path, &self.catalog, &self.checkins)
        {
            return to_response(reply);
        }
        let mut warnings = self.segment.warnings();
        let identity = self.identity.as_deref();
        warnings.extend(identity.map(Issuer::warnings).unwrap_or_default());
        let published = identity
            .filter(|_| matches!(header.method.as_str(), "GET" | "HEAD"))
            .and_then(|i| i.published(path));
        let reply = published.unwrap_or_else(|| {
            crate::admin::handle(
                header.method.as_str(),
                path,
                &self.catalog,
                &self.metrics,
                self.policy.current().as_ref(),
                &warnings,
                listening,
            )
        });
        to_response(reply)
    }
}

/// A reply as the HTTP response the admin listener sends.
fn to_response(reply: crate::reply::Reply) -> http::Response<Vec<u8>> {
    let mut builder = http::Response::builder().status(reply.status);
    let _ = reply.fields(|k, v| {
        builder = std::mem::take(&mut builder).header(k, v);
        Ok::<(), ()>(())
    });
    builder
        .body(reply.body.to_vec())
        .unwrap_or_else(|_| http::Response::new(Vec::new()))
}
