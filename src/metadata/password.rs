//! The `password` file cloudbase-init uses on Windows: the instance POSTs its (encrypted)
//! administrator password once; GET returns it. Stored per node and deployment, so a
//! redeployed node starts without one; in a state directory when one is configured, each
//! entry written atomically (temporary file, fsync, rename), so it survives restarts.
//! With write-back on, the password is also written to the node's `extra` in Ironic
//! (`ironic_metadata_password`: the deployment and the password as the instance sent it,
//! encrypted by cloudbase-init with the instance's key), and read back from there, so
//! every replica sharing one Ironic answers the same.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::checkin::{Shared, WriteBack};
use sha2::{Digest, Sha256};

/// Nova keeps four 255-character chunks.
pub(crate) const MAX_SIZE: usize = 1020;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum PasswordError {
    #[error("a password is already set")]
    Exists,
    #[error("password longer than {MAX_SIZE} bytes")]
    TooLong,
    #[error("cannot store the password: {0}")]
    Io(String),
}

#[derive(Serialize, Deserialize)]
struct Entry {
    deployment: String,
    password: String,
}

pub(crate) struct PasswordStore {
    dir: Option<PathBuf>,
    /// Entries by node; the only copy without a state directory, a cache with one.
    entries: Mutex<HashMap<String, (String, String)>>,
    /// Writes passwords to Ironic, when told to.
    write_back: Option<Arc<WriteBack>>,
}

impl PasswordStore {
    /// With `dir`, entries are kept as files in it (created when missing).
    pub(crate) fn new(dir: Option<PathBuf>) -> Result<PasswordStore, String> {
        if let Some(d) = &dir {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create state directory {}: {e}", d.display()))?;
        }
        Ok(PasswordStore {
            dir,
            entries: Mutex::new(HashMap::new()),
            write_back: None,
        })
    }

    /// Writes every password set to the node's `extra` in Ironic through `write_back`,
    /// and reads what replicas wrote there.
    pub(crate) fn writing_back(self, write_back: Arc<WriteBack>) -> PasswordStore {
        PasswordStore {
            write_back: Some(write_back),
            ..self
        }
    }

    /// The password of this deployment in `shared` (the node's `extra`), read only when
    /// writing back, and only in the shape this service writes.
    fn shared(&self, shared: Option<&Value>, deployment: &str) -> Option<String> {
        self.write_back.as_ref()?;
        let entry: Entry = serde_json::from_value(shared?.clone()).ok()?;
        (entry.deployment == deployment && entry.password.len() <= MAX_SIZE)
            .then_some(entry.password)
    }

    fn file(&self, node: &str) -> Option<PathBuf> {
        // Node identifiers come from the inventory: hash them into a safe file name.
        let name: String = Sha256::digest(node.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir
            .as_ref()
            .map(|d| d.join(format!("password-{name}.json")))
    }

    fn load(&self, node: &str) -> Option<(String, String)> {
        if let Some(e) = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
        {
            return Some(e.clone());
        }
        let text = std::fs::read(self.file(node)?).ok()?;
        let entry: Entry = serde_json::from_slice(&text).ok()?;
        Some((entry.deployment, entry.password))
    }

    /// The password of this deployment of the node, if one was set: with write-back, the
    /// one `shared` (the node's `extra`) holds, which replicas agree on (the first written
    /// wins); else, or until one is there, the one set here.
    pub(crate) fn get(
        &self,
        node: &str,
        deployment: &str,
        shared: Option<&Value>,
    ) -> Option<String> {
        self.shared(shared, deployment).or_else(|| {
            self.load(node)
                .filter(|(d, _)| d == deployment)
                .map(|(_, p)| p)
        })
    }

    /// Set the password once per deployment.
    pub(crate) fn set(
        &self,
        node: &str,
        deployment: &str,
        password: &str,
        shared: Option<&Value>,
    ) -> Result<(), PasswordError> {
        if password.len() > MAX_SIZE {
            return Err(PasswordError::TooLong);
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let current = match entries.get(node) {
            Some(e) => Some(e.clone()),
            None => {
                drop(entries);
                let loaded = self.load(node);
                entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
                loaded
            }
        };
        if current.is_some_and(|(d, _)| d == deployment)
            || self.shared(shared, deployment).is_some()
        {
            return Err(PasswordError::Exists);
        }
        if let Some(path) = self.file(node) {
            let entry = Entry {
                deployment: deployment.into(),
                password: password.into(),
            };
            let tmp = path.with_extension("tmp");
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&serde_json::to_vec(&entry).unwrap_or_default())?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)
            };
            write().map_err(|e| PasswordError::Io(e.to_string()))?;
        }
        if let Some(w) = &self.write_back {
            let entry = serde_json::json!({"deployment": deployment, "password": password});
            w.queue(Shared::Password, node, deployment, entry);
        }
        entries.insert(node.into(), (deployment.into(), password.into()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_deployment_and_persistent() {
        let dir = tempfile::tempdir().unwrap();
        let s = PasswordStore::new(Some(dir.path().to_owned())).unwrap();
        assert_eq!(s.get("n1", "d1", None), None);
        s.set("n1", "d1", "secret", None).unwrap();
        assert_eq!(s.set("n1", "d1", "other", None), Err(PasswordError::Exists));
        assert_eq!(s.get("n1", "d1", None).as_deref(), Some("secret"));
        // A new process reads it back; a redeployment does not see it.
        let s2 = PasswordStore::new(Some(dir.path().to_owned())).unwrap();
        assert_eq!(s2.get("n1", "d1", None).as_deref(), Some("secret"));
        assert_eq!(s2.get("n1", "d2", None), None);
        s2.set("n1", "d2", "new", None).unwrap();
        assert_eq!(s2.get("n1", "d2", None).as_deref(), Some("new"));
        assert_eq!(
            s2.set("n2", "d", &"x".repeat(1021), None),
            Err(PasswordError::TooLong)
        );
    }
}
