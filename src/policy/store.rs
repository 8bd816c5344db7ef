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

pub(crate) struct PolicyStore {
    dir: PathBuf,
    current: ArcSwap<Policy>,
    metrics: Arc<Metrics>,
    /// Serialises reloads so two never interleave their build and swap; holds the
    /// fingerprints of the file set in force and of the last one rejected.
    reloading: Mutex<Fingerprints>,
}

#[derive(Default)]
struct Fingerprints {
    applied: u64,
    rejected: Option<u64>,
}

/// Quiet time after the last file event before the set is read: an editor, `cp` or a
/// ConfigMap update writes in several steps.
pub(crate) const SETTLE: Duration = Duration::from_millis(250);
/// Longest a stream of events defers a reload.
const MAX_DEFER: Duration = Duration::from_secs(5);
/// How often limiter state of idle clients is dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What a file event says about the policy directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    /// Something in the directory was created, written, renamed or removed.
    InDir,
    /// The directory itself was replaced, removed or created: its watch must be renewed.
    Dir,
}

/// Only what changes files counts: reading them (open, close after read), which every
/// reload does, must never look like a change.
pub(crate) fn change_of(event: &notify::Event, dir: &Path) -> Option<Change> {
    use notify::EventKind;
    if !matches!(
        event.kind,
        EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_)
    ) {
        return None;
    }
    let mut out = None;
    for p in &event.paths {
        if p == dir {
            return Some(Change::Dir);
        }
        if p.parent() == Some(dir) {
            out = Some(Change::InDir);
        }
    }
    out
}

impl PolicyStore {
    /// Load the directory; an invalid set is an error (fatal at start-up).
    pub(crate) fn load(dir: &Path, metrics: Arc<Metrics>) -> Result<PolicyStore, PolicyError> {
        let files = file::read_dir(dir)?;
        let set = file::parse_files(files.iter().map(|(p, t)| (p.as_path(), t.as_str())))?;
        let policy = Policy::build(set, None);
        metrics.policy.zones.set(policy.zones().len() as i64);
        Ok(PolicyStore {
            dir: std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned()),
            current: ArcSwap::from_pointee(policy),
            metrics,
            reloading: Mutex::new(Fingerprints {
                applied: file::fingerprint(&files),
                rejected: None,
            }),
        })
    }

    /// The policy in force; a request holds one for its whole life.
    pub(crate) fn current(&self) -> Arc<Policy> {
        self.current.load_full()
    }

    /// Re-read the directory and swap the new policy in, or keep the old one. A file set
    /// identical to the one in force is left alone; one identical to the last rejected one
    /// is rejected again without another log line.
    pub(crate) fn reload(&self) -> Result<(), PolicyError> {
        let mut prints = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let files = file::read_dir(&self.dir);
        let print = files.as_ref().map(|f| file::fingerprint(f)).ok();
        if print == Some(prints.applied) {
            return Ok(());
        }
        let parsed = files.and_then(|files| {
            file::parse_files(files.iter().map(|(p, t)| (p.as_path(), t.as_str())))
        });
        match parsed {
            Ok(set) => {
                let policy = Policy::build(set, Some(&self.current.load()));
                *prints = Fingerprints {
                    applied: print.unwrap_or_default(),
                    rejected: None,
                };
                let n = policy.zones().len();
                self.current.store(Arc::new(policy));
                self.metrics
                    .policy
                    .reloads
                    .with_label_values(&["applied"])
                    .inc();
                self.metrics.policy.zones.set(n as i64);
                tracing::info!(target: "policy", dir = %self.dir.display(), zones = n, "policy reloaded");
                Ok(())
            }
            Err(e) => {
                if print.is_none() || prints.rejected != print {
                    prints.rejected = print;
                    self.metrics
                        .policy
                        .reloads
                        .with_label_values(&["rejected"])
                        .inc();
                    tracing::error!(target: "policy", error = %e, "policy rejected; the previous policy stays in force");
                }
                Err(e)
            }
        }
    }

    /// [`PolicyStore::reload`] once the files stay the same for [`SETTLE`]: a file being
    /// written is never applied half-written.
    async fn reload_settled(&self) {
        let before = file::read_dir(&self.dir)
            .map(|f| file::fingerprint(&f))
            .ok();
        tokio::time::sleep(SETTLE).await;
        let after = file::read_dir(&self.dir)
            .map(|f| file::fingerprint(&f))
            .ok();
        if before == after {
            let _ = self.reload();
        }
    }

    /// Watches the directory and SIGHUP, reloads on change, sweeps limiters, until
    /// shutdown.
    pub(crate) async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        const LOG: WatchLog = WatchLog {
            no_watcher: |e| {
                tracing::error!(target: "policy", error = %e, "cannot watch the policy directory; reload with SIGHUP");
            },
            no_dir: |dir, e| {
                tracing::warn!(target: "policy", dir = %dir.display(), error = %e,
                    "cannot watch the policy directory (yet); watching for it to appear");
            },
        };
        let mut watch = DirWatch::new(&self.dir, LOG);
        // Changes made between the first load and the watch would have no event.
        let _ = self.reload();
        let mut hup = Hangup::new();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                first = watch.next() => {
                    watch.settle(first).await;
                    self.reload_settled().await;
                }
                () = hup.recv() => {
                    tracing::info!(target: "policy", "SIGHUP received, reloading the policy");
                    let _ = self.reload();
                }
                _ = sweep.tick() => {
                    let tracked = self.current().sweep_limiters();
                    self.metrics.policy.ratelimit_clients.set(tracked as i64);
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

/// How a [`DirWatch`] tells of trouble, in its owner's log lines.
#[derive(Clone, Copy)]
pub(crate) struct WatchLog {
    /// No watcher could be made: only SIGHUP reloads.
    pub(crate) no_watcher: fn(&notify::Error),
    /// The directory cannot be watched (yet).
    pub(crate) no_dir: fn(&Path, &notify::Error),
}

/// A directory watched for changes of its files, and its parent, so that a replaced
/// directory (an editor's rename, a Kubernetes ConfigMap's symlink swap) is watched again.
pub(crate) struct DirWatch {
    dir: PathBuf,
    log: WatchLog,
    watcher: Option<notify::RecommendedWatcher>,
    rx: mpsc::UnboundedReceiver<Change>,
}

impl DirWatch {
    pub(crate) fn new(dir: &Path, log: WatchLog) -> DirWatch {
        let (tx, rx) = mpsc::unbounded_channel::<Change>();
        let watched = dir.to_owned();
        let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Some(c) = res.ok().and_then(|e| change_of(&e, &watched)) {
                let _ = tx.send(c);
            }
        });
        let watcher = match watcher {
            Ok(mut w) => {
                if let Some(parent) = dir.parent() {
                    let _ = w.watch(parent, RecursiveMode::NonRecursive);
                }
                Some(w)
            }
            Err(e) => {
                (log.no_watcher)(&e);
                None
            }
        };
        let mut watch = DirWatch {
            dir: dir.to_owned(),
            log,
            watcher,
            rx,
        };
        watch.rewatch();
        watch
    }

    /// The next change seen (cancel-safe); never, when nothing watches.
    pub(crate) async fn next(&mut self) -> Change {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    /// Waits until the files settle after `first` ([`gather`]) and watches the directory
    /// again if it was replaced.
    pub(crate) async fn settle(&mut self, first: Change) {
        if gather(&mut self.rx, first).await == Change::Dir {
            self.rewatch();
        }
    }

    /// (Re)starts the watch on the directory, which may have been replaced.
    fn rewatch(&mut self) {
        if let Some(w) = self.watcher.as_mut() {
            let _ = w.unwatch(&self.dir);
            if let Err(e) = w.watch(&self.dir, RecursiveMode::NonRecursive) {
                (self.log.no_dir)(&self.dir, &e);
            }
        }
    }
}

/// SIGHUP; never, where its handler cannot be installed.
pub(crate) struct Hangup(Option<tokio::signal::unix::Signal>);

impl Hangup {
    pub(crate) fn new() -> Hangup {
        Hangup(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok())
    }

    /// The next SIGHUP (cancel-safe).
    pub(crate) async fn recv(&mut self) {
        match self.0.as_mut() {
            Some(h) => {
                h.recv().await;
            }
            None => std::future::pending().await,
        }
    }
}

/// Gathers events until none came for [`SETTLE`] (at most [`MAX_DEFER`]): whether the
/// directory itself changed among them.
pub(crate) async fn gather(rx: &mut mpsc::UnboundedReceiver<Change>, first: Change) -> Change {
    let mut change = first;
    let deadline = tokio::time::Instant::now() + MAX_DEFER;
    loop {
        let quiet = tokio::time::sleep(SETTLE);
        tokio::select! {
            Some(c) = rx.recv() => {
                if c == Change::Dir {
                    change = Change::Dir;
                }
                if tokio::time::Instant::now() >= deadline {
                    return change;
                }
            }
            _ = quiet => return change,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_the_files_is_not_a_change() {
        use notify::event::{AccessKind, AccessMode, CreateKind, ModifyKind, RemoveKind};
        use notify::{Event, EventKind};
        let dir = Path::new("/etc/policies");
        let ev = |kind, path: &str| Event::new(kind).add_path(PathBuf::from(path));
        for kind in [
            EventKind::Access(AccessKind::Open(AccessMode::Any)),
            EventKind::Access(AccessKind::Close(AccessMode::Read)),
            EventKind::Access(AccessKind::Read),
        ] {
            assert_eq!(change_of(&ev(kind, "/etc/policies/a.toml"), dir), None);
        }
        let write = EventKind::Modify(ModifyKind::Any);
        assert_eq!(
            change_of(&ev(write, "/etc/policies/a.toml"), dir),
            Some(Change::InDir)
        );
        // Elsewhere in the parent: nothing to do with the policy.
        assert_eq!(change_of(&ev(write, "/etc/passwd"), dir), None);
        assert_eq!(
            change_of(
                &ev(EventKind::Remove(RemoveKind::Folder), "/etc/policies"),
                dir
            ),
            Some(Change::Dir)
        );
        assert_eq!(
            change_of(
                &ev(EventKind::Create(CreateKind::Folder), "/etc/policies"),
                dir
            ),
            Some(Change::Dir)
        );
    }

    #[test]
    fn a_relative_directory_is_not_reloaded_at_start() {
        // The first load reads the directory as given; the watcher re-reads it by its
        // absolute path: the same files, not a change to apply and count.
        let dir = tempfile::Builder::new()
            .prefix("relative-policy")
            .tempdir_in(env!("CARGO_MANIFEST_DIR"))
            .unwrap();
        std::fs::write(dir.path().join("a.toml"), a_valid(1)).unwrap();
        let relative = Path::new(dir.path().file_name().unwrap());
        assert!(
            relative.is_relative() && relative.is_dir(),
            "tests run in the crate"
        );
        let metrics = Arc::new(Metrics::new());
        let store = PolicyStore::load(relative, metrics.clone()).unwrap();
        assert!(store.reload().is_ok());
        let applied = metrics.policy.reloads.with_label_values(&["applied"]).get();
        assert_eq!(applied, 0, "an unchanged policy counted as reloaded");
    }

    use crate::policy::Action;
    use std::net::IpAddr;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// a.toml is rewritten; b.toml never changes. A partial read (a without b) would let
    /// the quarantined host in; an empty policy would shut the node out.
    const B: &str =
        "[[zone]]\nname = \"quarantine\"\ncidrs = [\"127.0.0.50/32\"]\naction = \"deny\"\n";

    fn a_valid(n: usize) -> String {
        format!("[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\nrate_limit = {{ per_second = {}, burst = 100000 }}\n", 1000 + n)
    }
    const A_INVALID: &str = "[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\nrate_limit = { per_second = 0, burst = 1 }\n";

    fn write_atomic(dir: &Path, name: &str, text: &str) {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }

    /// 1,000 reloads alternating valid and invalid file sets while readers check every
    /// policy they see.
    #[test]
    fn a_thousand_reloads_never_expose_a_partial_policy() {
        let dir = tempfile::tempdir().unwrap();
        write_atomic(dir.path(), "a.toml", &a_valid(0));
        write_atomic(dir.path(), "b.toml", B);
        let store = Arc::new(PolicyStore::load(dir.path(), Arc::new(Metrics::new())).unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(AtomicUsize::new(0));
        let node: IpAddr = "127.0.0.11".parse().unwrap();
        let quarantined: IpAddr = "127.0.0.50".parse().unwrap();
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (store, stop, seen) = (store.clone(), stop.clone(), seen.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let p = store.current();
                        assert_eq!(
                            p.zones().len(),
                            2,
                            "a policy with a missing file was published"
                        );
                        assert_eq!(p.zone_for(node).map(|z| z.zone.action), Some(Action::Allow));
                        assert_eq!(
                            p.zone_for(quarantined).map(|z| z.zone.action),
                            Some(Action::Deny)
                        );
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        let (mut applied, mut rejected) = (0, 0);
        for i in 0..1000 {
            if i % 2 == 0 {
                write_atomic(dir.path(), "a.toml", &a_valid(i));
                store.reload().unwrap();
                applied += 1;
            } else {
                write_atomic(dir.path(), "a.toml", A_INVALID);
                let err = store.reload().unwrap_err();
                assert_eq!(err.line, 5);
                rejected += 1;
            }
            // The rate in force is always the last valid one.
            let last_valid = if i % 2 == 0 { i } else { i - 1 };
            assert_eq!(
                store.current().zones()[0].zone.quota.per_second,
                (1000 + last_valid) as f64
            );
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().expect("a reader saw an inconsistent policy");
        }
        assert_eq!((applied, rejected), (500, 500));
        assert!(
            seen.load(Ordering::Relaxed) > 1000,
            "readers ran during the reloads"
        );
    }
}
