//! Where node data comes from. A source produces an [`model::Inventory`]; the [`Catalog`]
//! turns it into an [`Index`] and publishes it with one atomic swap, so handlers never see
//! a half-built index and never know which source fed it.

pub(crate) mod file;
pub(crate) mod refresh;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use async_trait::async_trait;

use crate::identity::Index;
use crate::ironic::model::Inventory;
use crate::node::{ConfigDrive, DriveCache};

/// A source that can refresh on demand when a client address is unknown.
#[async_trait]
pub(crate) trait OnDemand: Send + Sync {
    /// Refresh (or join a refresh already asked for) and return true once it has finished;
    /// false when the source declines or the wait is over.
    async fn refresh_for(&self, ip: IpAddr) -> bool;
}

/// What `/readyz` reports about the source behind the index.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SourceStatus {
    /// Human-readable name of the source (`file:PATH`, `ironic:URL`).
    pub(crate) source: String,
    /// True once one inventory has been loaded successfully.
    pub(crate) ready: bool,
    pub(crate) last_success: Option<SystemTime>,
    /// Why the last attempt failed, when it did (never contains credentials).
    pub(crate) last_error: Option<String>,
    /// Problems found in the data that do not stop serving (masked configdrives, ...).
    pub(crate) warnings: Vec<String>,
}

/// The published index plus the status of its source.
pub(crate) struct Catalog {
    index: ArcSwap<Index>,
    status: ArcSwap<SourceStatus>,
    served_states: Vec<String>,
    dns: Vec<IpAddr>,
    /// Decoded configdrive images of the current index, reused by the next build.
    drives: std::sync::Mutex<DriveCache>,
}

impl Catalog {
    pub(crate) fn new(source: impl Into<String>, served_states: Vec<String>) -> Catalog {
        Catalog {
            index: ArcSwap::from_pointee(Index::default()),
            status: ArcSwap::from_pointee(SourceStatus {
                source: source.into(),
                ..SourceStatus::default()
            }),
            served_states,
            dns: Vec::new(),
            drives: Default::default(),
        }
    }

    /// DNS servers announced in network data generated from ports.
    pub(crate) fn with_dns(mut self, dns: Vec<IpAddr>) -> Catalog {
        self.dns = dns;
        self
    }

    /// The current index; cheap, lock-free, and consistent for as long as it is held.
    pub(crate) fn index(&self) -> Arc<Index> {
        self.index.load_full()
    }

    pub(crate) fn status(&self) -> Arc<SourceStatus> {
        self.status.load_full()
    }

    /// Index a fresh inventory and publish it. Returns the warnings found in it.
    pub(crate) fn publish(&self, inventory: Inventory) -> Vec<String> {
        let mut drives = self.drives.lock().unwrap_or_else(|e| e.into_inner());
        let (views, used) = crate::node::build(inventory, &self.dns, &mut drives);
        *drives = used;
        drop(drives);
        let index = Index::build(views, &self.served_states);
        let warnings = index_warnings(&index);
        let prev = self.status.load_full();
        // Each problem is logged once when it appears, not on every refresh.
        for w in warnings.iter().filter(|w| !prev.warnings.contains(w)) {
            tracing::warn!(target: "inventory", "{w}");
        }
        for o in index.overruled() {
            if !prev.warnings.contains(&overruled_warning(o)) {
                tracing::info!(
                    target: "audit",
                    event = "claim_ignored",
                    node = %o.claimant,
                    address = %o.ip,
                    owner = %o.owners.join(","),
                    "a configdrive claims an address another node's network_data holds"
                );
            }
        }
        self.index.store(Arc::new(index));
        self.status.store(Arc::new(SourceStatus {
            source: prev.source.clone(),
            ready: true,
            last_success: Some(SystemTime::now()),
            last_error: None,
            warnings: warnings.clone(),
        }));
        warnings
    }

    /// Record a failed refresh; the last good index keeps serving.
    pub(crate) fn record_failure(&self, error: impl Into<String>) {
        let prev = self.status.load_full();
        self.status.store(Arc::new(SourceStatus {
            last_error: Some(error.into()),
            ..(*prev).clone()
        }));
    }
}

fn index_warnings(index: &Index) -> Vec<String> {
    let mut out = Vec::new();
    for node in index.nodes() {
        if let ConfigDrive::Unreadable(why) = &node.configdrive {
            out.push(format!("node {}: {why}", node.uuid));
        }
    }
    let mut contested: Vec<String> = index
        .contested()
        .map(|(ip, uuids)| {
            format!(
                "address {ip} is claimed by nodes {}; it is refused",
                uuids.join(", ")
            )
        })
        .collect();
    contested.sort();
    out.extend(contested);
    out.extend(index.overruled().iter().map(overruled_warning));
    out
}

fn overruled_warning(o: &crate::identity::Overruled) -> String {
    format!(
        "node {}: its configdrive claims {}, which the network_data of node {} holds; the claim is ignored",
        o.claimant,
        o.ip,
        o.owners.join(", ")
    )
}
