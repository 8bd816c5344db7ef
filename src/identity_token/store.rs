//! The live key set: loaded from the key directory and swapped whole on change, as the
//! policy is. A directory with any file that is not a usable key is rejected, logged once,
//! counted, and the keys in force stay; a directory without key files is valid (tokens are
//! then not issued, and readiness says so).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::keys::{self, KeyError, KeySet};
use crate::metrics::Metrics;

pub(crate) struct KeyStore {
    dir: PathBuf,
    current: ArcSwap<KeySet>,
    metrics: Arc<Metrics>,
    /// Serialises reloads; what is in force and what was last rejected.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    applied: u64,
    /// The fingerprint of the last rejected file set (none for an unreadable directory) and
    /// why, while it is what the directory holds.
    rejected: Option<(Option<u64>, String)>,
}

impl KeyStore {
    /// Loads the directory; a file that is not a usable key is an error (fatal at start-up).
    pub(crate) fn load(dir: &Path, metrics: Arc<Metrics>) -> Result<KeyStore, KeyError> {
        // Read as every reload reads it, so that an unchanged directory is not a change.
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        let files = keys::read_dir(&dir)?;
        let set = keys::parse_files(&files)?;
        metrics.identity.keys.set(set.keys().len() as i64);
        Ok(KeyStore {
            dir,
            current: ArcSwap::from_pointee(set),
            metrics,
            state: Mutex::new(State {
                applied: keys::fingerprint(&files),
                rejected: None,
            }),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The keys in force; a request holds one set for its whole life.
    pub(crate) fn current(&self) -> Arc<KeySet> {
        self.current.load_full()
    }

    /// The fingerprint of the directory's key files as they are now.
    pub(crate) fn read_fingerprint(&self) -> Option<u64> {
        keys::read_dir(&self.dir)
            .map(|f| keys::fingerprint(&f))
            .ok()
    }

    /// Re-reads the directory and swaps the new keys in, or keeps the old ones.
    pub(crate) fn reload(&self) -> Result<(), KeyError> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let files = keys::read_dir(&self.dir);
        let print = files.as_ref().map(|f| keys::fingerprint(f)).ok();
        if print == Some(state.applied) {
            state.rejected = None;
            return Ok(());
        }
        match files.and_then(|f| keys::parse_files(&f)) {
            Ok(set) => {
                let kids: Vec<String> = set.keys().iter().map(|k| k.kid.clone()).collect();
                let signing = set.signing().map(|k| k.kid.clone());
                self.metrics.identity.keys.set(kids.len() as i64);
                self.current.store(Arc::new(set));
                *state = State {
                    applied: print.unwrap_or_default(),
                    rejected: None,
                };
                self.metrics
                    .identity
                    .key_reloads
                    .with_label_values(&["applied"])
                    .inc();
                tracing::info!(target: "identity", dir = %self.dir.display(), keys = %kids.join(","),
                    signing = signing.as_deref().unwrap_or("-"), "identity keys reloaded");
                Ok(())
            }
            Err(e) => {
                let repeated =
                    print.is_some() && state.rejected.as_ref().is_some_and(|(p, _)| *p == print);
                if !repeated {
                    self.metrics
                        .identity
                        .key_reloads
                        .with_label_values(&["rejected"])
                        .inc();
                    tracing::error!(target: "identity", error = %e,
                        "identity keys rejected; the keys loaded before stay in use");
                }
                state.rejected = Some((print, e.to_string()));
                Err(e)
            }
        }
    }

    /// What readiness says about the keys: none to sign with, or a change that was refused.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.current().signing().is_none() {
            out.push(format!(
                "identity tokens: no key file (*.pem) in {}: /openstack/latest/identity and /latest/meta-data/identity answer 404",
                self.dir.display()
            ));
        }
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, why)) = &state.rejected {
            out.push(format!(
                "identity keys: the key directory was rejected ({why}); the keys loaded before stay in use"
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy(dir: &Path, name: &str, fixture: &str) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/identity")
            .join(fixture);
        std::fs::copy(src, dir.join(name)).unwrap();
    }

    fn kids(store: &KeyStore) -> Vec<String> {
        store
            .current()
            .keys()
            .iter()
            .map(|k| k.kid.clone())
            .collect()
    }

    #[test]
    fn a_bad_key_file_never_replaces_good_keys() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let store = KeyStore::load(dir.path(), metrics.clone()).unwrap();
        assert!(store.current().signing().is_none());
        assert!(store.warnings()[0].starts_with("identity tokens: no key file (*.pem) in"));
        copy(dir.path(), "2026-01.pem", "ec-leading-zero.pem");
        store.reload().unwrap();
        assert_eq!(kids(&store), ["2026-01"]);
        assert!(store.warnings().is_empty());
        // Rotation: the new key signs, the old one is still published.
        copy(dir.path(), "2026-07.pem", "rsa-2048.pem");
        store.reload().unwrap();
        assert_eq!(kids(&store), ["2026-01", "2026-07"]);
        assert_eq!(store.current().signing().unwrap().kid, "2026-07");
        // A bad file: the whole directory is refused and the two keys stay.
        copy(dir.path(), "2026-09.pem", "rsa-1024.pem");
        let err = store.reload().unwrap_err();
        assert_eq!(err.file, store.dir().join("2026-09.pem"));
        assert_eq!(kids(&store), ["2026-01", "2026-07"]);
        let warning = store.warnings().join("\n");
        assert!(
            warning.contains("2026-09.pem: an RSA key shorter than 2048 bits"),
            "{warning}"
        );
        // Rejected once per file set, however often it is read.
        assert!(store.reload().is_err());
        let rejected = metrics
            .identity
            .key_reloads
            .with_label_values(&["rejected"]);
        assert_eq!(rejected.get(), 1);
        // Removed: the set applies again; removing the old key stops publishing it.
        std::fs::remove_file(dir.path().join("2026-09.pem")).unwrap();
        store.reload().unwrap();
        assert!(store.warnings().is_empty());
        std::fs::remove_file(dir.path().join("2026-01.pem")).unwrap();
        store.reload().unwrap();
        assert_eq!(kids(&store), ["2026-07"]);
        assert_eq!(metrics.identity.keys.get(), 1);
    }

    #[test]
    fn a_bad_key_file_at_start_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        copy(dir.path(), "a.pem", "ec-p384.pem");
        let err = KeyStore::load(dir.path(), Arc::new(Metrics::new()))
            .err()
            .unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: not a P-256 (ES256) or RSA (RS256) private key",
                dir.path().join("a.pem").display()
            )
        );
    }
}
