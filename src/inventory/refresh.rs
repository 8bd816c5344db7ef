//! Keeps the published index current at any fleet size. A full sweep loads everything once;
//! after it, each poll asks Ironic only for what changed: one page of nodes sorted by
//! `updated_at`, newest first, cut at the newest timestamp already seen (less a margin for
//! clocks and commits), and one page each of nodes, ports and portgroups by `created_at`.
//! A changed node is read again with its ports and portgroups (a port or portgroup update
//! or delete bumps its node), and only its view is rebuilt. With nothing changing a poll is
//! four small requests, whatever the fleet. A listing of every node's UUID finds deleted
//! nodes, and a full sweep now and then is the safety net. A request from an unknown
//! address asks for one poll, never a sweep. Ironic failures never empty the index: the
//! last good one keeps serving.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use tokio::sync::{watch, Notify, Semaphore};

use super::snapshot::{self, MergeError, NodeRecords};
use super::{Catalog, OnDemand, Update};
use crate::ironic::client::FleetSink;
use crate::ironic::model::{micros, Node, Port, Portgroup, Raw};
use crate::ironic::{ClientError, IronicClient};
use crate::metrics::Metrics;
use crate::node::Builder;
use crate::policy::limiter::client_key;

#[derive(Debug, Clone)]
pub(crate) struct RefreshConfig {
    /// Time between polls for changes.
    pub(crate) poll_interval: Duration,
    /// Time between full sweeps (the first load is one).
    pub(crate) full_interval: Duration,
    /// Time between listings of every node's UUID, which find deleted nodes.
    pub(crate) reconcile_interval: Duration,
    /// Longest a request waits for an on-demand poll.
    pub(crate) on_demand_wait: Duration,
    /// A client (IPv6: its /64) that asked for a poll does not ask again for this long.
    pub(crate) negative_ttl: Duration,
    /// Least time between the end of one poll and an on-demand one: strangers, however
    /// many, bring at most one quick poll (one request) per gap.
    pub(crate) min_gap: Duration,
    /// Items per probe page.
    pub(crate) page: u32,
    /// How far behind the newest timestamp seen a poll looks again: clocks of Ironic's
    /// processes, rows committed after their timestamp, whole seconds on MySQL.
    pub(crate) skew: Duration,
    /// Configdrive URLs downloaded at once.
    pub(crate) downloads: usize,
    /// Where the last good index is kept for a warm restart (`STATE_DIR/index.snapshot`).
    pub(crate) snapshot: Option<PathBuf>,
    /// Least time between two snapshots written for polls' changes (a full sweep always
    /// writes one).
    pub(crate) snapshot_every: Duration,
}

impl Default for RefreshConfig {
    fn default() -> Self {
        RefreshConfig {
            poll_interval: Duration::from_secs(2),
            full_interval: Duration::from_secs(3600),
            reconcile_interval: Duration::from_secs(60),
            on_demand_wait: Duration::from_secs(5),
            negative_ttl: Duration::from_secs(10),
            min_gap: Duration::from_secs(1),
            page: 100,
            skew: Duration::from_secs(10),
            downloads: 4,
            snapshot: None,
            snapshot_every: Duration::from_secs(30),
        }
    }
}

/// Job counters: a waiter knows its job is done when `completed` reaches the `started`
/// number of the first job that began after it asked.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    started: u64,
    completed: u64,
}

/// Time between full sweeps when Ironic cannot be polled for changes.
const SWEEPS_ONLY_EVERY: Duration = Duration::from_secs(60);

/// Rows a probe asks for first: with nothing changed, the newest few rows show it (nodes
/// come with their configdrives: a page of a hundred is megabytes). Ten rows in the wrong
/// order still show an Ironic that ignores `sort_key`.
const PROBE_FIRST: u32 = 10;

/// Rows asked for when a probe page is full of changes (Ironic's default `max_limit`).
const BURST_PAGE: u32 = 1000;

/// Node UUIDs per reconciliation page (Ironic's default `max_limit`; it may cap it lower).
const RECONCILE_PAGE: u32 = 1000;

/// Reconciliation pages per reconciliation interval: a fleet of up to this many pages is
/// listed within the interval, a larger one over several, at the same rate.
const RECONCILE_TICKS: u32 = 4;

/// Bound on remembered client addresses; past it the map is pruned, then cleared.
const MAX_RECENT: usize = 100_000;

/// What a poll keeps between runs.
#[derive(Default)]
struct PollState {
    /// When (this host's clock, microseconds) the last successful poll or sweep began:
    /// every change committed since has a timestamp after it, less the margin.
    covered: i64,
    /// Ports and portgroups seen inside the margin, so a repeat is not a change.
    recent: HashMap<String, i64>,
    /// Nodes to read again on the next poll (their configdrive URL was downloaded).
    pending: HashSet<String>,
    /// A full sweep is due (first load, lost watermark, more changes than a page).
    resync: Option<&'static str>,
    /// Since when Ironic cannot be polled for changes (too old, it ignores sorting, its
    /// database sorts never-updated nodes first): full sweeps every [`SWEEPS_ONLY_EVERY`]
    /// instead, and polling is tried again after the full interval.
    sweeps_only: Option<Instant>,
    /// Nodes changed since the snapshot was written: their new records, none when gone.
    dirty: HashMap<String, Option<NodeRecords>>,
    /// When the snapshot was last written (or a write failed).
    snapshot_tried: Option<Instant>,
    /// Where the reconciliation's listing of node UUIDs goes on: after this UUID, or from
    /// the first.
    reconcile_after: Option<String>,
}

/// A full sweep as it arrives: views built from each page of nodes.
struct Sweep<'a> {
    refresher: &'a Arc<Refresher>,
    build: Option<Builder>,
    /// Links created after this (microseconds) are remembered in `recent`.
    since: i64,
    /// Ports and portgroups the next polls' margin still shows, with their creation time.
    recent: HashMap<String, i64>,
    /// The snapshot written as the sweep arrives.
    snapshot: Option<snapshot::Writer>,
    /// Why the snapshot could not be written.
    snapshot_error: Option<String>,
}

impl Sweep<'_> {
    /// Runs one step of the snapshot; on failure it is given up for this sweep.
    fn write(&mut self, step: impl FnOnce(&mut snapshot::Writer) -> std::io::Result<()>) {
        if let Some(w) = self.snapshot.as_mut() {
            if let Err(e) = step(w) {
                self.snapshot_error = Some(e.to_string());
                self.snapshot = None;
            }
        }
    }
}

impl FleetSink for Sweep<'_> {
    fn links(&mut self, ports: Vec<Port>, portgroups: Vec<Portgroup>) {
        self.recent = ports
            .iter()
            .map(|p| (&p.uuid, &p.created_at))
            .chain(portgroups.iter().map(|g| (&g.uuid, &g.created_at)))
            .filter_map(|(u, c)| micros(c.as_deref()).map(|t| (u, t)))
            .filter(|(_, t)| *t >= self.since)
            .map(|(u, t)| (u.clone(), t))
            .collect();
        self.write(|w| w.links(&ports, &portgroups));
        self.build = Some(self.refresher.catalog.builder(ports, portgroups));
    }

    fn nodes(&mut self, mut nodes: Vec<Node>) {
        self.refresher.resolve_urls(&mut nodes);
        self.write(|w| w.nodes(&nodes));
        if let Some(b) = self.build.as_mut() {
            b.add(nodes);
        }
    }
}

/// Why a poll gave up on polling.
enum PollError {
    Ironic(ClientError),
    /// A full sweep must find what the poll cannot (with the reason, a metric label).
    Resync(&'static str),
}

impl From<ClientError> for PollError {
    fn from(e: ClientError) -> PollError {
        PollError::Ironic(e)
    }
}

pub(crate) struct Refresher {
    client: Arc<IronicClient>,
    /// The Ironic a snapshot must come from to be used.
    origin: String,
    catalog: Arc<Catalog>,
    metrics: Arc<Metrics>,
    config: RefreshConfig,
    trigger: Notify,
    progress: watch::Sender<Progress>,
    recent: Mutex<HashMap<IpAddr, Instant>>,
    /// An unknown client asked for the next poll.
    asked: Mutex<bool>,
    state: tokio::sync::Mutex<PollState>,
    downloads: Arc<Downloads>,
}

impl Refresher {
    pub(crate) fn new(
        client: IronicClient,
        catalog: Arc<Catalog>,
        metrics: Arc<Metrics>,
        config: RefreshConfig,
    ) -> Refresher {
        let downloads = Arc::new(Downloads::new(config.downloads));
        Refresher {
            origin: client.origin(),
            client: Arc::new(client),
            catalog,
            metrics,
            config,
            trigger: Notify::new(),
            progress: watch::channel(Progress::default()).0,
            recent: Mutex::new(HashMap::new()),
            asked: Mutex::new(false),
            state: tokio::sync::Mutex::new(PollState {
                resync: Some("first_load"),
                ..PollState::default()
            }),
            downloads,
        }
    }

    /// Load the snapshot (if any), then sweep, then poll, until `shutdown` turns true; the
    /// changes the snapshot lacks are written on the way out.
    pub(crate) async fn run(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        let warm = self.warm_start().await;
        self.follow(shutdown, warm).await;
        self.write_snapshot(true).await;
    }

    /// Sweep (unless `warm`), then poll, until `shutdown` turns true. A failed job is
    /// retried sooner than the full interval (1 s, doubling) so a restart of Ironic is
    /// noticed quickly. A warm start reconciles first: nodes deleted while the service was
    /// down go at once.
    async fn follow(self: &Arc<Self>, mut shutdown: watch::Receiver<bool>, warm: bool) {
        let mut next_full = Instant::now() + self.config.full_interval;
        let mut last_full = Instant::now();
        let tick = self.config.reconcile_interval / RECONCILE_TICKS;
        let mut next_reconcile = Instant::now();
        if !warm {
            next_reconcile += tick;
        }
        // A warm start lists every UUID at once: nodes deleted while the service was down
        // go before anything else.
        let mut whole = warm;
        // Strangers' asks bring quick polls between full ones, never in their place.
        let mut last_full_poll = Instant::now();
        let mut backoff = Duration::from_secs(1);
        loop {
            if *shutdown.borrow() {
                return;
            }
            let now = Instant::now();
            let asked = std::mem::take(&mut *self.asked.lock().unwrap_or_else(|e| e.into_inner()));
            let (resync, sweeps_only) = {
                let state = self.state.lock().await;
                (state.resync.is_some(), state.sweeps_only.is_some())
            };
            let every = if sweeps_only {
                self.config.full_interval.min(SWEEPS_ONLY_EVERY)
            } else {
                self.config.full_interval
            };
            let ok = if now >= next_full.min(last_full + every) || resync {
                let ok = self
                    .sweep(if now >= next_full {
                        "periodic"
                    } else {
                        "resync"
                    })
                    .await;
                if ok {
                    last_full = Instant::now();
                    next_full = Instant::now() + self.config.full_interval;
                    next_reconcile = Instant::now() + tick;
                    // The sweep saw every node: the listing starts over.
                    self.state.lock().await.reconcile_after = None;
                    whole = false;
                }
                ok
            } else {
                let quick = asked && last_full_poll.elapsed() < self.config.poll_interval;
                if !quick {
                    last_full_poll = Instant::now();
                }
                let ok = self
                    .reconcile_and_poll(&mut next_reconcile, tick, quick, whole)
                    .await;
                whole &= !ok;
                ok
            };
            self.write_snapshot(false).await;
            let wait = if ok {
                backoff = Duration::from_secs(1);
                self.config.poll_interval
            } else {
                let cap = self.config.full_interval.min(Duration::from_secs(30));
                let w = backoff.min(cap);
                backoff = (backoff * 2).min(cap);
                w
            };
            if !self.until_next_job(wait, &mut shutdown).await {
                return;
            }
        }
    }

    /// Waits `wait`, or less when a request asks for a poll (at least
    /// [`RefreshConfig::min_gap`] after now); false when the service stops meanwhile.
    async fn until_next_job(&self, wait: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
        let last_end = Instant::now();
        let next = tokio::time::Instant::from_std(last_end + wait);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next) => return true,
                _ = self.trigger.notified() => {
                    // A wake-up left over from requests the last job already served
                    // is not a new ask.
                    if !*self.asked.lock().unwrap_or_else(|e| e.into_inner())
                        && self.state.lock().await.pending.is_empty()
                    {
                        continue;
                    }
                    let gap = self.config.min_gap.saturating_sub(last_end.elapsed());
                    tokio::select! {
                        _ = tokio::time::sleep(gap) => return true,
                        _ = shutdown.changed() => return false,
                    }
                }
                _ = shutdown.changed() => return false,
            }
        }
    }

    /// A page of the reconciliation when it is due (every page at once when `whole`), then
    /// a poll: `quick` (the newest updates alone, where a node just deployed shows) when
    /// only unknown clients asked for it since the last full poll, less than a poll
    /// interval ago.
    async fn reconcile_and_poll(
        self: &Arc<Self>,
        next: &mut Instant,
        tick: Duration,
        quick: bool,
        whole: bool,
    ) -> bool {
        let now = Instant::now();
        // A reconciliation's findings (nodes to read) are read by the poll after it. One
        // that failed is tried again with the next job (a warm start's first one must not
        // wait a whole interval to drop nodes deleted meanwhile).
        let reconciled = if now >= *next {
            let ok = self.reconcile(whole).await;
            if ok {
                *next = now + tick;
            }
            ok
        } else {
            true
        };
        reconciled && self.poll(quick).await
    }

    /// Runs one job between the progress counters on-demand waiters watch.
    async fn job<F: std::future::Future<Output = bool>>(&self, f: F) -> bool {
        self.progress.send_modify(|p| p.started += 1);
        let before = self.client.requests_sent();
        let ok = f.await;
        self.metrics
            .source
            .ironic_requests
            .inc_by(self.client.requests_sent().saturating_sub(before));
        self.progress.send_modify(|p| p.completed = p.started);
        ok
    }

    /// One full sweep; publishes on success, records the failure otherwise.
    pub(crate) async fn sweep(self: &Arc<Self>, kind: &'static str) -> bool {
        self.job(async {
            let t0 = Instant::now();
            let started = now_micros();
            let (snapshot, snapshot_error) = match &self.config.snapshot {
                Some(path) => match snapshot::Writer::create(path, &self.origin) {
                    Ok(w) => (Some(w), None),
                    Err(e) => (None, Some(e.to_string())),
                },
                None => (None, None),
            };
            // Views are built page by page as the nodes arrive (ports and portgroups
            // first): a sweep holds one page of Ironic's answer at a time.
            let mut sink = Sweep {
                snapshot,
                snapshot_error,
                refresher: self,
                build: None,
                // Links this sweep reads that the next polls' margin still shows are
                // known, not changes.
                since: started.saturating_sub(self.skew()),
                recent: HashMap::new(),
            };
            let result = self.client.fetch_paged(&mut sink).await;
            let elapsed = t0.elapsed();
            self.metrics.source.sweeps.with_label_values(&[kind]).inc();
            self.metrics.source.sweep_seconds.observe(elapsed.as_secs_f64());
            match result {
                Ok(()) => {
                    let Sweep {
                        recent,
                        build,
                        snapshot,
                        snapshot_error,
                        ..
                    } = sink;
                    let build =
                        build.unwrap_or_else(|| self.catalog.builder(Vec::new(), Vec::new()));
                    let nodes = build.len();
                    self.catalog.publish_built(build);
                    self.catalog.caught_up();
                    let mut state = self.state.lock().await;
                    state.covered = started;
                    state.recent = recent;
                    state.resync = None;
                    self.sweep_snapshot(&mut state, snapshot, snapshot_error, started);
                    tracing::debug!(target: "ironic", kind, nodes, seconds = elapsed.as_secs_f64(), "sweep done");
                    true
                }
                Err(e) => {
                    self.failed(&e, kind);
                    false
                }
            }
        })
        .await
    }

    /// Loads the snapshot when there is a usable one, before any request to Ironic: the
    /// index serves from it as soon as it is read, and polls go on from its watermark
    /// instead of a sweep. False for a cold start (no snapshot, or one that cannot be
    /// trusted, which is said in one log line). The listeners answer meanwhile (503 until
    /// the index is ready, as on a cold start), so `/healthz` never waits for a large
    /// snapshot.
    async fn warm_start(self: &Arc<Self>) -> bool {
        let Some(path) = self.config.snapshot.clone() else {
            return false;
        };
        let t0 = Instant::now();
        let (catalog, origin, max_age) = (
            self.catalog.clone(),
            self.origin.clone(),
            // Older than a full refresh interval, a sweep would be due anyway.
            self.config.full_interval,
        );
        let file = path.clone();
        // Off the refresher's thread; a panic while building is a snapshot not used.
        let loaded = tokio::task::spawn_blocking(move || {
            snapshot::load(
                &file,
                &origin,
                max_age,
                SystemTime::now(),
                |ports, groups| catalog.builder(ports, groups),
            )
        })
        .await
        .unwrap_or_else(|e| {
            Err(snapshot::Ignored {
                reason: "corrupt",
                message: format!("reading it failed: {e}"),
            })
        });
        let file = path.display();
        let loaded = match loaded {
            Ok(l) => l,
            Err(why) => {
                let reason = why.reason;
                self.metrics
                    .source
                    .snapshot_loads
                    .with_label_values(&[reason])
                    .inc();
                if reason == "absent" {
                    tracing::info!(target: "inventory", file = %file, "no index snapshot at {file}: cold start");
                } else {
                    tracing::warn!(target: "inventory", file = %file, reason, "index snapshot {file} ignored ({reason}): {why}; cold start");
                }
                return false;
            }
        };
        self.metrics
            .source
            .snapshot_loads
            .with_label_values(&["loaded"])
            .inc();
        self.catalog.publish_built(loaded.builder);
        self.catalog.warmed(loaded.written);
        {
            let mut state = self.state.lock().await;
            state.covered = loaded.covered;
            state.resync = None;
        }
        // Configdrive URLs not downloaded yet: downloaded now, their nodes read again once
        // they are in, as after a sweep.
        for (node, url) in loaded.url_nodes {
            self.download(node, url);
        }
        let age = SystemTime::now()
            .duration_since(loaded.written)
            .unwrap_or_default();
        tracing::info!(
            target: "inventory",
            file = %file,
            nodes = loaded.nodes,
            age_seconds = age.as_secs(),
            seconds = t0.elapsed().as_secs_f64(),
            "index loaded from the snapshot {file}; catching up with Ironic from its watermark"
        );
        true
    }

    /// Keeps what a poll or reconciliation changed for the next snapshot.
    fn remember(&self, state: &mut PollState, updates: &[Update], deleted: &[String]) {
        if self.config.snapshot.is_none() {
            return;
        }
        for u in updates {
            let r = snapshot::records(&u.node, &u.ports, &u.portgroups);
            state.dirty.insert(u.node.uuid.clone(), Some(r));
        }
        for d in deleted {
            state.dirty.insert(d.clone(), None);
        }
    }

    /// Finishes the snapshot a sweep wrote as it arrived. One that failed takes the old
    /// one with it: that one lacks this sweep's changes, and later ones would be merged
    /// into it.
    fn sweep_snapshot(
        &self,
        state: &mut PollState,
        writer: Option<snapshot::Writer>,
        error: Option<String>,
        covered: i64,
    ) {
        let Some(path) = &self.config.snapshot else {
            return;
        };
        state.dirty.clear();
        state.snapshot_tried = Some(Instant::now());
        let result = match (writer, error) {
            (Some(w), None) => w.finish(covered).map_err(|e| e.to_string()),
            (_, Some(e)) => Err(e),
            (None, None) => Err("no snapshot was started".into()),
        };
        if result.is_err() {
            let _ = std::fs::remove_file(path);
        }
        self.snapshot_written(result);
    }

    /// Writes the changes the snapshot lacks, at most once per `snapshot_every` unless
    /// `now`.
    async fn write_snapshot(&self, now: bool) {
        let Some(path) = &self.config.snapshot else {
            return;
        };
        let mut state = self.state.lock().await;
        let recent = state
            .snapshot_tried
            .is_some_and(|t| t.elapsed() < self.config.snapshot_every);
        if state.dirty.is_empty() || (recent && !now) {
            return;
        }
        state.snapshot_tried = Some(Instant::now());
        let result = snapshot::merge(path, &self.origin, &state.dirty, state.covered);
        let result = match result {
            Ok(n) => {
                state.dirty.clear();
                Ok(n)
            }
            // Without a whole snapshot to update none is better than a wrong one; the
            // next full sweep writes one.
            Err(e @ MergeError::Base(_)) => {
                state.dirty.clear();
                let _ = std::fs::remove_file(path);
                Err(e.to_string())
            }
            // Kept for the next try; the old snapshot is as it was.
            Err(e @ MergeError::Io(_)) => Err(e.to_string()),
        };
        self.snapshot_written(result);
    }

    fn snapshot_written(&self, result: Result<u64, String>) {
        let file = self
            .config
            .snapshot
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let label = if result.is_ok() { "ok" } else { "failed" };
        self.metrics
            .source
            .snapshot_writes
            .with_label_values(&[label])
            .inc();
        match result {
            Ok(nodes) => {
                let now = chrono::Utc::now().timestamp();
                self.metrics.source.snapshot_written.set(now);
                tracing::debug!(target: "inventory", file = %file, nodes, "index snapshot written");
            }
            Err(e) => {
                tracing::warn!(target: "inventory", file = %file, error = %e, "index snapshot {file} not written: {e}");
            }
        }
    }

    fn failed(&self, e: &ClientError, kind: &str) {
        self.metrics
            .source
            .sweep_failures
            .with_label_values(&[e.reason()])
            .inc();
        tracing::warn!(target: "ironic", kind, reason = e.reason(), error = %e, "Ironic failed; the last good index keeps serving");
        self.catalog.record_failure(e.to_string());
    }

    /// One poll for changes; applies them. A poll that cannot tell what changed asks for
    /// a full sweep.
    async fn poll(self: &Arc<Self>, quick: bool) -> bool {
        self.job(async {
            let mut state = self.state.lock().await;
            match state.sweeps_only {
                Some(t) if t.elapsed() < self.config.full_interval => return true,
                Some(_) => state.sweeps_only = None,
                None => {}
            }
            let started = now_micros();
            match self.changes(&mut state, quick).await {
                Ok((updates, deleted)) => {
                    // A quick poll skipped the creation probes: it covers nothing.
                    if !quick {
                        let next_since = started.saturating_sub(self.skew());
                        state.recent.retain(|_, t| *t >= next_since);
                        state.covered = started;
                    }
                    let changed = updates.len() + deleted.len();
                    self.metrics
                        .source
                        .polls
                        .with_label_values(&[if changed > 0 { "changed" } else { "unchanged" }])
                        .inc();
                    if changed > 0 {
                        self.metrics.source.changes.inc_by(changed as u64);
                        self.remember(&mut state, &updates, &deleted);
                        self.catalog.apply(updates, &deleted);
                    } else {
                        self.catalog.confirm();
                    }
                    if !quick {
                        self.catalog.caught_up();
                    }
                    true
                }
                Err(PollError::Resync(reason)) => {
                    self.resync(&mut state, reason);
                    true
                }
                Err(PollError::Ironic(ClientError::Config(why))) => {
                    tracing::warn!(target: "ironic", reason = %why, "Ironic cannot be polled for changes: full sweeps only");
                    state.sweeps_only = Some(Instant::now());
                    true
                }
                Err(PollError::Ironic(e)) => {
                    self.failed(&e, "poll");
                    false
                }
            }
        })
        .await
    }

    /// The newest rows of `kind` by `key`, down to `since` at least: [`PROBE_FIRST`] rows,
    /// or when they are all changes a page, then [`BURST_PAGE`] rows; more than that is a
    /// resync.
    async fn probe<T: serde::de::DeserializeOwned + Send>(
        &self,
        kind: &str,
        key: &str,
        since: i64,
        stamp: impl Fn(&T) -> Option<&str> + Copy,
    ) -> Result<Vec<(i64, T)>, PollError> {
        let mut sizes = [PROBE_FIRST, self.config.page, BURST_PAGE].into_iter();
        let mut limit = sizes.next().unwrap_or(BURST_PAGE);
        loop {
            let page = self.client.newest(kind, key, limit).await?;
            match window(page, stamp, since) {
                Err(PollError::Resync("more_than_a_page")) => match sizes.find(|l| *l > limit) {
                    Some(l) => limit = l,
                    None => return Err(PollError::Resync("more_than_a_page")),
                },
                r => return r,
            }
        }
    }

    /// The margin, in microseconds.
    fn skew(&self) -> i64 {
        i64::try_from(self.config.skew.as_micros()).unwrap_or(i64::MAX)
    }

    fn resync(&self, state: &mut PollState, reason: &'static str) {
        self.metrics
            .source
            .resyncs
            .with_label_values(&[reason])
            .inc();
        tracing::info!(target: "ironic", reason, "a full sweep is due");
        state.resync = Some(reason);
        // Polls cannot see changes on this Ironic until the next periodic sweep, which
        // tries again.
        match reason {
            "unsorted" => {
                tracing::warn!(target: "ironic", "Ironic ignored sort_key: changes cannot be polled; full sweeps only");
                state.sweeps_only = Some(Instant::now());
            }
            "null_timestamps" => {
                tracing::warn!(target: "ironic", page = self.config.page, "a page of never-updated nodes sorts before the updated ones (PostgreSQL): changes cannot be polled; full sweeps only");
                state.sweeps_only = Some(Instant::now());
            }
            _ => {}
        }
    }

    /// What changed since the last poll: nodes to rebuild (read again with their links)
    /// and nodes gone.
    async fn changes(
        self: &Arc<Self>,
        state: &mut PollState,
        quick: bool,
    ) -> Result<(Vec<Update>, Vec<String>), PollError> {
        let index = self.catalog.index();
        let known: HashMap<&str, Option<i64>> = index
            .nodes()
            .iter()
            .map(|n| (n.uuid.as_str(), n.updated_at))
            .collect();
        let skew = self.skew();
        let mut changed: HashMap<String, Option<Node>> =
            state.pending.drain().map(|u| (u, None)).collect();
        // Nodes updated: one page, newest first; a row already known with this timestamp is
        // a repeat.
        let since = state.covered.saturating_sub(skew);
        let rows = self
            .probe("nodes", "updated_at", since, |n: &Node| {
                n.updated_at.as_deref()
            })
            .await?;
        for (t, n) in rows {
            // Any row whose time differs from the one indexed is a change, above the mark
            // or not (Ironic's clock may have gone back less than a page); a row older
            // than the one indexed means Ironic lost updates (a restored database).
            match known.get(n.uuid.as_str()) {
                Some(Some(k)) if *k == t => {}
                Some(Some(k)) if *k > t => return Err(PollError::Resync("time_went_back")),
                _ => {
                    changed.insert(n.uuid.clone(), Some(n));
                }
            }
        }
        if !quick {
            self.created(state, &known, &mut changed, skew).await?;
        }
        let (updates, deleted) = self.read_changed(changed).await?;
        // Links read with their node now are no news to the next probes of new links.
        let since = state.covered.saturating_sub(skew);
        for u in &updates {
            let ports = u.ports.iter().map(|p| (&p.uuid, &p.created_at));
            let groups = u.portgroups.iter().map(|g| (&g.uuid, &g.created_at));
            for (uuid, created) in ports.chain(groups) {
                if let Some(t) = micros(created.as_deref()).filter(|t| *t >= since) {
                    state.recent.entry(uuid.clone()).or_insert(t);
                }
            }
        }
        Ok((updates, deleted))
    }

    /// Nodes, ports and portgroups created since the last poll (a node never updated has
    /// no `updated_at`; creating a port or portgroup does not touch its node).
    async fn created(
        &self,
        state: &mut PollState,
        known: &HashMap<&str, Option<i64>>,
        changed: &mut HashMap<String, Option<Node>>,
        skew: i64,
    ) -> Result<(), PollError> {
        let since = state.covered.saturating_sub(skew);
        let rows = self
            .probe("nodes", "created_at", since, |n: &Node| {
                n.created_at.as_deref()
            })
            .await?;
        for (_, n) in rows {
            if !known.contains_key(n.uuid.as_str()) {
                changed.entry(n.uuid.clone()).or_insert(Some(n));
            }
        }
        for kind in ["ports", "portgroups"] {
            let links = self.new_links(state, kind, skew).await?;
            for node in links {
                changed.entry(node).or_insert(None);
            }
        }
        Ok(())
    }

    /// Reads each changed node (when the probe did not bring it) with its links.
    async fn read_changed(
        self: &Arc<Self>,
        changed: HashMap<String, Option<Node>>,
    ) -> Result<(Vec<Update>, Vec<String>), PollError> {
        let mut updates = Vec::new();
        let mut deleted = Vec::new();
        for (uuid, node) in changed {
            let node = match node {
                Some(n) => Some(n),
                None => self.client.node(&uuid).await?,
            };
            let Some(mut node) = node else {
                deleted.push(uuid);
                continue;
            };
            let (ports, portgroups) = self.client.node_links(&uuid).await?;
            self.resolve_urls(std::slice::from_mut(&mut node));
            updates.push(Update {
                node,
                ports,
                portgroups,
            });
        }
        Ok((updates, deleted))
    }

    /// The nodes of ports (or portgroups) created since the last poll.
    async fn new_links(
        &self,
        state: &mut PollState,
        kind: &'static str,
        skew: i64,
    ) -> Result<Vec<String>, PollError> {
        #[derive(serde::Deserialize)]
        struct Link {
            uuid: String,
            #[serde(default)]
            node_uuid: Option<String>,
            #[serde(default)]
            created_at: Option<String>,
        }
        let since = state.covered.saturating_sub(skew);
        let rows = self
            .probe(kind, "created_at", since, |l: &Link| {
                l.created_at.as_deref()
            })
            .await?;
        let mut nodes = Vec::new();
        for (t, l) in rows {
            if t >= since && state.recent.insert(l.uuid, t).is_none() {
                nodes.extend(l.node_uuid);
            }
        }
        Ok(nodes)
    }

    /// Lists node UUIDs in UUID order, one page (every page when `whole`), and compares
    /// each page with the indexed nodes of the same UUID range: drops nodes Ironic no
    /// longer has, and has the next poll read those the index lacks (past a page of them,
    /// changes were missed: a resync). The next call goes on after the page.
    async fn reconcile(self: &Arc<Self>, whole: bool) -> bool {
        self.job(async {
            loop {
                let after = self.state.lock().await.reconcile_after.clone();
                let page = self
                    .client
                    .node_uuid_page(after.as_deref(), RECONCILE_PAGE)
                    .await;
                let (uuids, more) = match page {
                    Ok(p) => p,
                    Err(ClientError::Config(_)) => return true,
                    // The node the listing went on from is gone: start over.
                    Err(ClientError::Status {
                        status: 400 | 404, ..
                    }) if after.is_some() => {
                        self.state.lock().await.reconcile_after = None;
                        continue;
                    }
                    // An Ironic that cannot sort nodes by UUID is listed whole.
                    Err(ClientError::Status { status: 400, .. }) => {
                        return self.reconcile_all().await;
                    }
                    Err(e) => {
                        self.failed(&e, "reconcile");
                        return false;
                    }
                };
                let ordered = uuids.windows(2).all(|w| w[0] < w[1])
                    && uuids
                        .first()
                        .is_none_or(|f| after.as_ref().is_none_or(|a| f > a));
                if !ordered {
                    // Ranges mean nothing in another order: every UUID at once instead.
                    return self.reconcile_all().await;
                }
                let last = if more { uuids.last().cloned() } else { None };
                let range = (after.as_deref(), last.as_deref());
                let mut state = self.state.lock().await;
                self.compare(&mut state, range, &uuids);
                state.reconcile_after = last;
                if !whole || !more {
                    return true;
                }
            }
        })
        .await
    }

    /// Every node UUID in one listing, compared with the whole index: for an Ironic whose
    /// UUID pages do not come in UUID order.
    async fn reconcile_all(self: &Arc<Self>) -> bool {
        let uuids = match self.client.node_uuids().await {
            Ok(u) => u,
            Err(ClientError::Config(_)) => return true,
            Err(e) => {
                self.failed(&e, "reconcile");
                return false;
            }
        };
        let mut state = self.state.lock().await;
        state.reconcile_after = None;
        self.compare(&mut state, (None, None), &uuids);
        true
    }

    /// Compares the UUIDs Ironic listed for the range `(after, up_to]` (open where `None`)
    /// with the indexed nodes of that range.
    fn compare(
        &self,
        state: &mut PollState,
        (after, up_to): (Option<&str>, Option<&str>),
        uuids: &[String],
    ) {
        let in_range = |u: &str| after.is_none_or(|a| u > a) && up_to.is_none_or(|b| u <= b);
        let index = self.catalog.index();
        let present: HashSet<&str> = uuids.iter().map(String::as_str).collect();
        let indexed: HashSet<&str> = index
            .nodes()
            .iter()
            .map(|n| n.uuid.as_str())
            .filter(|u| in_range(u))
            .collect();
        // Nodes the polls have not brought in yet (created a moment ago, or missed):
        // read on the next poll; more than a page of them is a resync.
        let missing: Vec<&String> = uuids
            .iter()
            .filter(|u| !indexed.contains(u.as_str()))
            .collect();
        if missing.len() > self.config.page as usize {
            self.resync(state, "missed_nodes");
            return;
        }
        state.pending.extend(missing.into_iter().cloned());
        let gone: Vec<String> = indexed
            .iter()
            .filter(|u| !present.contains(*u))
            .map(|u| u.to_string())
            .collect();
        if !gone.is_empty() {
            self.metrics.source.changes.inc_by(gone.len() as u64);
            self.remember(state, &[], &gone);
            self.catalog.apply(Vec::new(), &gone);
        }
    }

    /// Replaces configdrives stored as URLs by their content when it has been downloaded;
    /// others start downloading (in the background, never holding the index back) and
    /// are read again once they are in.
    fn resolve_urls(self: &Arc<Self>, nodes: &mut [Node]) {
        for node in nodes {
            let Some(url) = node.instance_info.get("configdrive").and_then(Raw::string) else {
                continue;
            };
            if !url.contains("://") {
                continue;
            }
            match self.downloads.get(&node.uuid, &url) {
                Some(content) => {
                    node.instance_info.insert(
                        "configdrive".into(),
                        Raw::new(&serde_json::Value::String(content)),
                    );
                }
                None => self.download(node.uuid.clone(), url),
            }
        }
    }

    fn download(self: &Arc<Self>, node: String, url: String) {
        if !self.downloads.start(&node, &url) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let _permit = this.downloads.slots.acquire().await;
            let result = this.client.fetch_configdrive(&url).await;
            this.metrics.source.ironic_requests.inc_by(1);
            match result {
                Ok(content) => {
                    this.downloads.done(&node, &url, content);
                    this.state.lock().await.pending.insert(node);
                    this.trigger.notify_one();
                }
                Err(e) => {
                    let retry = this.downloads.failed(&node, &url);
                    tracing::warn!(target: "ironic", node = %node, error = %e, retry_in_seconds = retry.as_secs(), "configdrive download failed");
                }
            }
        });
    }

    fn recently_refreshed_for(&self, ip: IpAddr) -> bool {
        let key = client_key(ip, 64);
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= MAX_RECENT {
            let ttl = self.config.negative_ttl;
            recent.retain(|_, t| t.elapsed() < ttl);
            if recent.len() >= MAX_RECENT {
                recent.clear();
            }
        }
        if recent
            .get(&key)
            .is_some_and(|t| t.elapsed() < self.config.negative_ttl)
        {
            return true;
        }
        recent.insert(key, Instant::now());
        false
    }
}

/// The rows of a probe page with their timestamps. The page must be sorted newest first,
/// and must not be full (Ironic has a next page) of rows newer than the margin: then more
/// changed than one page shows. Rows without a timestamp (never updated) sort last on sqlite and MySQL and first
/// on PostgreSQL; a page holding nothing else hides every change.
fn window<T>(
    (items, full): (Vec<T>, bool),
    stamp: impl Fn(&T) -> Option<&str>,
    since: i64,
) -> Result<Vec<(i64, T)>, PollError> {
    let last = items.last().map(|i| micros(stamp(i)));
    let rows: Vec<(i64, T)> = items
        .into_iter()
        .filter_map(|i| micros(stamp(&i)).map(|t| (t, i)))
        .collect();
    if rows.windows(2).any(|w| w[0].0 < w[1].0) {
        return Err(PollError::Resync("unsorted"));
    }
    if full && rows.is_empty() {
        return Err(PollError::Resync("null_timestamps"));
    }
    if since > 0 && full && last.is_some_and(|t| t.is_some_and(|t| t >= since)) {
        return Err(PollError::Resync("more_than_a_page"));
    }
    Ok(rows)
}

/// Now, in microseconds since the epoch, as Ironic writes timestamps.
fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Configdrives downloaded from URLs, by node and URL; failures are retried after a
/// delay that doubles, up to ten minutes.
struct Downloads {
    slots: Semaphore,
    state: Mutex<HashMap<(String, String), Download>>,
}

enum Download {
    /// Under way, after this many failures of the same node and URL.
    Running {
        failures: u32,
    },
    Done(String),
    Failed {
        failures: u32,
        retry: Instant,
    },
}

impl Downloads {
    fn new(at_once: usize) -> Downloads {
        Downloads {
            slots: Semaphore::new(at_once.max(1)),
            state: Mutex::new(HashMap::new()),
        }
    }

    fn get(&self, node: &str, url: &str) -> Option<String> {
        match self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(node.to_string(), url.to_string()))
        {
            Some(Download::Done(c)) => Some(c.clone()),
            _ => None,
        }
    }

    /// Marks a download as started; false when one runs or a failure's delay is not over.
    fn start(&self, node: &str, url: &str) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // A node's older URLs are of no use once it has a new one.
        state.retain(|(n, u), _| n != node || u == url);
        let key = (node.to_string(), url.to_string());
        match state.get(&key) {
            Some(Download::Running { .. } | Download::Done(_)) => false,
            Some(Download::Failed { retry, .. }) if Instant::now() < *retry => false,
            _ => {
                // The failures so far, for the next delay to grow from.
                let failures = match state.get(&key) {
                    Some(Download::Failed { failures, .. }) => *failures,
                    _ => 0,
                };
                state.insert(key, Download::Running { failures });
                true
            }
        }
    }

    fn done(&self, node: &str, url: &str, content: String) {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((node.to_string(), url.to_string()), Download::Done(content));
    }

    /// Records a failure; returns the delay before the next try.
    fn failed(&self, node: &str, url: &str) -> Duration {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let key = (node.to_string(), url.to_string());
        let failures = match state.get(&key) {
            Some(Download::Failed { failures, .. } | Download::Running { failures }) => {
                failures + 1
            }
            _ => 1,
        };
        let delay = Duration::from_secs(1u64 << failures.min(10)).min(Duration::from_secs(600));
        state.insert(
            key,
            Download::Failed {
                failures,
                retry: Instant::now() + delay,
            },
        );
        delay
    }
}

#[async_trait]
impl OnDemand for Refresher {
    /// Wait for a poll that starts after this call (shared by every concurrent caller).
    /// Returns false at once for a client that asked within the negative TTL.
    async fn refresh_for(&self, ip: IpAddr) -> bool {
        if self.recently_refreshed_for(ip) {
            return false;
        }
        let target = self.progress.borrow().started + 1;
        let mut rx = self.progress.subscribe();
        *self.asked.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.trigger.notify_one();
        tokio::time::timeout(
            self.config.on_demand_wait,
            rx.wait_for(|p| p.completed >= target),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_download_waits_longer_each_time() {
        let d = Downloads::new(1);
        let mut delays = Vec::new();
        for _ in 0..12 {
            assert!(d.start("n", "u"), "the previous delay is over");
            delays.push(d.failed("n", "u").as_secs());
            // As if the delay had passed.
            if let Some(Download::Failed { retry, .. }) = d
                .state
                .lock()
                .unwrap()
                .get_mut(&("n".to_string(), "u".to_string()))
            {
                *retry = Instant::now();
            }
        }
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600, 600]);
        // Another URL of the node starts afresh.
        assert!(d.start("n", "v"));
        assert_eq!(d.failed("n", "v").as_secs(), 2);
    }
}
