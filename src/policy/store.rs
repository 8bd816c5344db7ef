//! The live policy: loaded from a directory, swapped whole on reload. A reload parses and
//! validates every file first; a set with any error is rejected, logged, counted, and the
//! last good policy keeps serving. Reloads come from inotify events on the directory
//! (editors' atomic renames and Kubernetes ConfigMap symlink swaps included) and SIGHUP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use notify::{RecursiveMode, Watcher};
use tokio::sync::{mpsc, watch};

use super::file::{self, PolicyError};
use super::Policy;
use crate::metrics::Metrics;

pub struct PolicyStore {
    dir: PathBuf,
    current: ArcSwap<Policy>,
    metrics: Arc<Metrics>,
    /// Serialises reloads so two never interleave their build and swap; holds the
    /// fingerprint of the file set in force.
    reloading: Mutex<u64>,
}

/// How long file events are gathered before one reload (an editor writes several).
const SETTLE: Duration = Duration::from_millis(100);
/// How often limiter state of idle clients is dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

impl PolicyStore {
    /// Load the directory; an invalid set is an error (fatal at start-up).
    pub fn load(dir: &Path, metrics: Arc<Metrics>) -> Result<PolicyStore, PolicyError> {
        let files = file::read_dir(dir)?;
        let zones = file::parse_files(files.iter().map(|(p, t)| (p.as_path(), t.as_str())))?;
        let policy = Policy::build(zones, None);
        metrics.policy_zones.set(policy.zones().len() as i64);
        Ok(PolicyStore {
            dir: dir.to_owned(),
            current: ArcSwap::from_pointee(policy),
            metrics,
            reloading: Mutex::new(file::fingerprint(&files)),
        })
    }

    /// The policy in force; a request holds one for its whole life.
    pub fn current(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Re-read the directory and swap the new policy in, or keep the old one. A file set
    /// identical to the last one read is left alone.
    pub fn reload(&self) -> Result<(), PolicyError> {
        let mut last = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let parsed = file::read_dir(&self.dir).and_then(|files| {
            let print = file::fingerprint(&files);
            if print == *last {
                return Ok(None);
            }
            file::parse_files(files.iter().map(|(p, t)| (p.as_path(), t.as_str())))
                .map(|zones| Some((zones, print)))
        });
        match parsed {
            Ok(None) => Ok(()),
            Ok(Some((zones, print))) => {
                let policy = Policy::build(zones, Some(&self.current.load()));
                *last = print;
                let n = policy.zones().len();
                self.current.store(Arc::new(policy));
                self.metrics
                    .policy_reloads
                    .with_label_values(&["applied"])
                    .inc();
                self.metrics.policy_zones.set(n as i64);
                tracing::info!(target: "policy", dir = %self.dir.display(), zones = n, "policy reloaded");
                Ok(())
            }
            Err(e) => {
                self.metrics
                    .policy_reloads
                    .with_label_values(&["rejected"])
                    .inc();
                tracing::error!(target: "policy", error = %e, "policy rejected; the previous policy stays in force");
                Err(e)
            }
        }
    }

    /// Watch the directory and SIGHUP, reload on change, sweep limiters, until shutdown.
    pub async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        let (tx, mut rx) = mpsc::unbounded_channel::<()>();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                let _ = tx.send(());
            }
        })
        .and_then(|mut w| w.watch(&self.dir, RecursiveMode::NonRecursive).map(|_| w));
        let _watcher = match watcher {
            Ok(w) => {
                // Changes made between the first load and the watch would have no event.
                let _ = self.reload();
                Some(w)
            }
            Err(e) => {
                tracing::error!(target: "policy", dir = %self.dir.display(), error = %e,
                    "cannot watch the policy directory; reload with SIGHUP");
                None
            }
        };
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            let hup_recv = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                Some(()) = rx.recv() => {
                    tokio::time::sleep(SETTLE).await;
                    while rx.try_recv().is_ok() {}
                    let _ = self.reload();
                }
                _ = hup_recv => {
                    tracing::info!(target: "policy", "SIGHUP received, reloading the policy");
                    let _ = self.reload();
                }
                _ = sweep.tick() => {
                    let tracked = self.current().sweep_limiters();
                    self.metrics.ratelimit_clients.set(tracked as i64);
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
