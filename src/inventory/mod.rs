//! Where node data comes from. A source produces an [`model::Inventory`]; the [`Catalog`]
//! turns it into an [`Index`] and publishes it with one atomic swap, so handlers never see
//! a half-built index and never know which source fed it.

pub(crate) mod file;
pub(crate) mod refresh;
pub(crate) mod snapshot;

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use tokio::sync::watch;

use crate::identity::Index;
use crate::ironic::model::{Inventory, Node, Port, Portgroup};
use crate::node::{build_one, Builder, ConfigDrive, DriveCache, NodeView};

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
    /// When the snapshot the index was loaded from at start was written, until the source
    /// has been caught up with.
    pub(crate) snapshot: Option<SystemTime>,
}

/// The published index plus the status of its source.
pub(crate) struct Catalog {
    index: ArcSwap<Index>,
    status: ArcSwap<SourceStatus>,
    served_states: Vec<String>,
    dns: Vec<IpAddr>,
    /// Decoded configdrive images of the current index, reused by the next build.
    drives: std::sync::Mutex<DriveCache>,
    /// Counts the indexes published.
    generation: watch::Sender<u64>,
}

/// What Ironic says of one node now: the node, its ports and its portgroups.
pub(crate) struct Update {
    pub(crate) node: Node,
    pub(crate) ports: Vec<Port>,
    pub(crate) portgroups: Vec<Portgroup>,
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
            generation: watch::channel(0).0,
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
        let Inventory {
            nodes,
            ports,
            portgroups,
        } = inventory;
        let mut b = self.builder(ports, portgroups);
        b.add(nodes);
        self.publish_built(b)
    }

    /// A build of a whole fleet from its links, fed page by page of nodes, then published
    /// with [`Catalog::publish_built`]. It reuses the decoded images of the current index.
    pub(crate) fn builder(&self, ports: Vec<Port>, portgroups: Vec<Portgroup>) -> Builder {
        let old = self
            .drives
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Builder::new(ports, portgroups, &self.dns, old)
    }

    /// Index what `b` built and publish it. Returns the warnings found in it.
    pub(crate) fn publish_built(&self, b: Builder) -> Vec<String> {
        let (views, used) = b.finish();
        *self.drives.lock().unwrap_or_else(|e| e.into_inner()) = used;
        self.install(Index::build(views, &self.served_states))
    }

    /// Replaces the views of the nodes in `updates` (built anew from what Ironic says of
    /// them now), drops the `deleted` ones, keeps every other view as it is, and publishes
    /// the index they make. Returns the warnings found in it.
    pub(crate) fn apply(&self, updates: Vec<Update>, deleted: &[String]) -> Vec<String> {
        let current = self.index.load_full();
        let gone: HashSet<&str> = updates
            .iter()
            .map(|u| u.node.uuid.as_str())
            .chain(deleted.iter().map(String::as_str))
            .collect();
        let mut views: Vec<Arc<NodeView>> = current
            .nodes()
            .iter()
            .filter(|n| !gone.contains(n.uuid.as_str()))
            .cloned()
            .collect();
        let mut drives = self.drives.lock().unwrap_or_else(|e| e.into_inner());
        // The changed nodes' decoded images, reused when their configdrive did not change.
        let mut old: DriveCache = DriveCache::new();
        drives.retain(|k, v| {
            if gone.contains(k.0.as_str()) {
                old.insert(k.clone(), v.clone());
                return false;
            }
            true
        });
        for u in &updates {
            let ports: Vec<&Port> = u.ports.iter().collect();
            let groups: Vec<&Portgroup> = u.portgroups.iter().collect();
            let mut used = DriveCache::new();
            let view = build_one(&u.node, &ports, &groups, &self.dns, &mut old, &mut used);
            drives.extend(used);
            views.push(Arc::new(view));
        }
        drop(drives);
        self.install(Index::build_shared(views, &self.served_states))
    }

    /// A receiver told of every index published from now on (long-polls park on it).
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    fn install(&self, index: Index) -> Vec<String> {
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
            snapshot: prev.snapshot,
        }));
        self.generation.send_modify(|g| *g += 1);
        tracing::debug!(target: "inventory", generation = *self.generation.borrow(), "index published");
        warnings
    }

    /// Says the source answered and nothing changed: the index is current as of now.
    pub(crate) fn confirm(&self) {
        let prev = self.status.load_full();
        if prev.ready {
            self.status.store(Arc::new(SourceStatus {
                last_success: Some(SystemTime::now()),
                last_error: None,
                ..(*prev).clone()
            }));
        }
    }

    /// Says the index just published was loaded from a snapshot written at `written`: its
    /// age is the snapshot's until [`Catalog::caught_up`].
    pub(crate) fn warmed(&self, written: SystemTime) {
        let prev = self.status.load_full();
        self.status.store(Arc::new(SourceStatus {
            last_success: Some(written),
            snapshot: Some(written),
            ..(*prev).clone()
        }));
    }

    /// Says the source has been read since the index was loaded from a snapshot.
    pub(crate) fn caught_up(&self) {
        let prev = self.status.load_full();
        if prev.snapshot.is_some() {
            self.status.store(Arc::new(SourceStatus {
                snapshot: None,
                ..(*prev).clone()
            }));
        }
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
