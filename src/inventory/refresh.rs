//! Keeps the published index current: a full sweep every interval, plus coalesced
//! on-demand sweeps when a request comes from an address the index does not know. Ironic
//! failures never empty the index: the last good one keeps serving.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{watch, Notify};

use super::{Catalog, OnDemand};
use crate::ironic::model::{Inventory, Raw};
use crate::ironic::IronicClient;
use crate::metrics::Metrics;

#[derive(Debug, Clone)]
pub(crate) struct RefreshConfig {
    /// Time between periodic full sweeps.
    pub(crate) interval: Duration,
    /// Longest a request waits for an on-demand sweep.
    pub(crate) on_demand_wait: Duration,
    /// An address that triggered a sweep does not trigger another for this long.
    pub(crate) negative_ttl: Duration,
    /// Least time between the end of one sweep and an on-demand one.
    pub(crate) min_gap: Duration,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            interval: Duration::from_secs(30),
            on_demand_wait: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(10),
            min_gap: Duration::from_secs(1),
        }
    }
}

/// Sweep counters: a waiter knows its sweep is done when `completed` reaches the `started`
/// number of the first sweep that began after it asked.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    started: u64,
    completed: u64,
}

/// Bound on remembered addresses; past it the map is pruned, then cleared.
const MAX_RECENT: usize = 100_000;

pub(crate) struct Refresher {
    client: IronicClient,
    catalog: Arc<Catalog>,
    metrics: Arc<Metrics>,
    config: RefreshConfig,
    trigger: Notify,
    progress: watch::Sender<Progress>,
    recent: Mutex<HashMap<IpAddr, Instant>>,
    /// Configdrives downloaded from URLs, by (node, URL).
    drives: Mutex<HashMap<(String, String), String>>,
}

impl Refresher {
    pub(crate) fn new(
        client: IronicClient,
        catalog: Arc<Catalog>,
        metrics: Arc<Metrics>,
        config: RefreshConfig,
    ) -> Refresher {
        Refresher {
            client,
            catalog,
            metrics,
            config,
            trigger: Notify::new(),
            progress: watch::channel(Progress::default()).0,
            recent: Mutex::new(HashMap::new()),
            drives: Mutex::new(HashMap::new()),
        }
    }

    /// Sweep until `shutdown` turns true. Failed sweeps are retried sooner than the
    /// interval (1 s, doubling) so a restart of Ironic is noticed quickly.
    pub(crate) async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let mut kind = "periodic";
        let mut backoff = Duration::from_secs(1);
        let mut last_end: Option<Instant>;
        loop {
            if *shutdown.borrow() {
                return;
            }
            let ok = self.sweep(kind).await;
            last_end = Some(Instant::now());
            let wait = if ok {
                backoff = Duration::from_secs(1);
                self.config.interval
            } else {
                let w = backoff.min(self.config.interval);
                backoff = (backoff * 2).min(self.config.interval);
                w
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => kind = "periodic",
                _ = self.trigger.notified() => {
                    kind = "on_demand";
                    if let Some(end) = last_end {
                        let gap = self.config.min_gap.saturating_sub(end.elapsed());
                        tokio::select! {
                            _ = tokio::time::sleep(gap) => {}
                            _ = shutdown.changed() => return,
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// One full sweep; publishes on success, records the failure otherwise.
    pub(crate) async fn sweep(&self, kind: &'static str) -> bool {
        self.progress.send_modify(|p| p.started += 1);
        let before = self.client.requests_sent();
        let t0 = Instant::now();
        let result = self.client.fetch_inventory().await;
        let elapsed = t0.elapsed();
        self.metrics
            .source
            .ironic_requests
            .inc_by(self.client.requests_sent().saturating_sub(before));
        self.metrics.source.sweeps.with_label_values(&[kind]).inc();
        self.metrics
            .source
            .sweep_seconds
            .observe(elapsed.as_secs_f64());
        let ok = match result {
            Ok(mut inventory) => {
                self.resolve_configdrive_urls(&mut inventory).await;
                let (nodes, ports, portgroups) = (
                    inventory.nodes.len(),
                    inventory.ports.len(),
                    inventory.portgroups.len(),
                );
                self.catalog.publish(inventory);
                tracing::debug!(
                    target: "ironic",
                    kind,
                    nodes,
                    ports,
                    portgroups,
                    seconds = elapsed.as_secs_f64(),
                    "sweep done"
                );
                true
            }
            Err(e) => {
                self.metrics
                    .source
                    .sweep_failures
                    .with_label_values(&[e.reason()])
                    .inc();
                tracing::warn!(target: "ironic", kind, reason = e.reason(), error = %e, "sweep failed; the last good index keeps serving");
                self.catalog.record_failure(e.to_string());
                false
            }
        };
        self.progress.send_modify(|p| p.completed = p.started);
        ok
    }

    /// Replace configdrives stored as URLs by their content, downloaded once per node and
    /// URL. A failed download leaves the URL, which the index reports as unreadable.
    async fn resolve_configdrive_urls(&self, inventory: &mut Inventory) {
        let mut cache = std::mem::take(&mut *self.drives.lock().unwrap_or_else(|e| e.into_inner()));
        let mut used = HashMap::new();
        for node in &mut inventory.nodes {
            let Some(url) = node.instance_info.get("configdrive").and_then(Raw::string) else {
                continue;
            };
            if !url.contains("://") {
                continue;
            }
            let key = (node.uuid.clone(), url.clone());
            let content = match cache.remove(&key) {
                Some(c) => c,
                None => match self.client.fetch_configdrive(&url).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(target: "ironic", node = %node.uuid, error = %e, "configdrive download failed");
                        continue;
                    }
                },
            };
            node.instance_info.insert(
                "configdrive".into(),
                Raw::new(&serde_json::Value::String(content.clone())),
            );
            used.insert(key, content);
        }
        *self.drives.lock().unwrap_or_else(|e| e.into_inner()) = used;
    }

    fn recently_refreshed_for(&self, ip: IpAddr) -> bool {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= MAX_RECENT {
            let ttl = self.config.negative_ttl;
            recent.retain(|_, t| t.elapsed() < ttl);
            if recent.len() >= MAX_RECENT {
                recent.clear();
            }
        }
        recent
            .get(&ip)
            .is_some_and(|t| t.elapsed() < self.config.negative_ttl)
    }

    fn remember(&self, ip: IpAddr) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.insert(ip, Instant::now());
    }
}

#[async_trait]
impl OnDemand for Refresher {
    /// Wait for a sweep that starts after this call (shared by every concurrent caller).
    /// Returns false at once for an address that triggered a sweep within the negative TTL.
    async fn refresh_for(&self, ip: IpAddr) -> bool {
        if self.recently_refreshed_for(ip) {
            return false;
        }
        self.remember(ip);
        let target = self.progress.borrow().started + 1;
        let mut rx = self.progress.subscribe();
        self.trigger.notify_one();
        tokio::time::timeout(
            self.config.on_demand_wait,
            rx.wait_for(|p| p.completed >= target),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }
}
