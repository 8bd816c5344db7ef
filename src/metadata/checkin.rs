//! Check-ins of booted nodes: what cloud-init's `phone_home` module POSTs (its SSH host
//! keys, instance id, hostname and FQDN, form-encoded) and its webhook reporting handler
//! POSTs (one JSON event per stage and module), at `/openstack/<version>/phone_home` and
//! `/openstack/<version>/reporting`. Kept per node and deployment, so a redeployed node
//! starts clean; in the state directory when one is configured (one file per node,
//! replaced by rename), so it survives restarts. The admin listener shows them at
//! `/nodes/<uuid>/checkin`: host-key fingerprints as `ssh-keygen -l` prints them, the last
//! event of each stage, and when each arrived.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Mutex;

use base64::Engine;
use governor::clock::MonotonicClock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use percent_encoding::percent_decode;
use prometheus::IntCounterVec;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Largest check-in body (a larger one is 413 and nothing is stored).
pub(crate) const MAX_BODY: usize = 16 * 1024;
/// Stages (the first part of an event's name: `init-local`, `modules-final`, ...) kept per
/// node; cloud-init reports four.
const MAX_STAGES: usize = 16;
/// Longest event name, result or text field kept.
const MAX_NAME: usize = 256;
const MAX_TEXT: usize = 1024;
/// Check-ins a node may send: cloud-init reports the start and end of every module, a
/// hundred or two per boot, at once.
const PER_SECOND: u32 = 5;
const BURST: u32 = 400;

/// The host keys phone_home posts, by form field.
const KEY_FIELDS: &[&str] = &[
    "pub_key_rsa",
    "pub_key_ecdsa",
    "pub_key_ed25519",
    "pub_key_dsa",
];

/// Which check-in a POST is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    PhoneHome,
    Reporting,
}

impl Kind {
    /// The OpenStack-tree file name a check-in is POSTed to.
    pub(crate) fn of_file(file: &str) -> Option<Kind> {
        match file {
            "phone_home" => Some(Kind::PhoneHome),
            "reporting" => Some(Kind::Reporting),
            _ => None,
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::PhoneHome => "phone_home",
            Kind::Reporting => "reporting",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum CheckinError {
    #[error("{0}")]
    Malformed(String),
    #[error("too many check-ins from this node")]
    RateLimited,
    #[error("cannot store the check-in: {0}")]
    Io(String),
}

/// One node's check-ins in one deployment.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Checkin {
    pub(crate) deployment: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) phone_home: Option<PhoneHome>,
    /// The last event of each stage.
    #[serde(default)]
    pub(crate) events: BTreeMap<String, Event>,
    /// When the last check-in arrived (RFC 3339, UTC).
    #[serde(default)]
    pub(crate) last_at: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct PhoneHome {
    pub(crate) at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) instance_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) hostname: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) fqdn: Option<String>,
    pub(crate) host_keys: Vec<HostKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct HostKey {
    /// The key's algorithm as OpenSSH names it (`ssh-ed25519`, `ecdsa-sha2-nistp256`, ...).
    #[serde(rename = "type")]
    pub(crate) kind: String,
    /// `SHA256:` and the unpadded base64 of the key blob's SHA-256, as `ssh-keygen -l`.
    pub(crate) fingerprint: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub(crate) struct Event {
    pub(crate) at: String,
    pub(crate) name: String,
    pub(crate) event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) description: Option<String>,
    /// The node's own clock, as it sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) timestamp: Option<f64>,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    node: String,
    checkin: Checkin,
}

pub(crate) struct CheckinStore {
    dir: Option<PathBuf>,
    entries: Mutex<HashMap<String, Checkin>>,
    /// Timed by the OS monotonic clock (see `policy::limiter`).
    limiter: RateLimiter<
        String,
        DefaultKeyedStateStore<String>,
        MonotonicClock,
        NoOpMiddleware<std::time::Instant>,
    >,
    /// `metadata_checkins_total{kind,result}`, when counted.
    counter: Option<IntCounterVec>,
}

impl CheckinStore {
    /// With `dir`, check-ins are kept as files in it (created when missing).
    pub(crate) fn new(dir: Option<PathBuf>) -> Result<CheckinStore, String> {
        if let Some(d) = &dir {
            std::fs::create_dir_all(d)
                .map_err(|e| format!("cannot create state directory {}: {e}", d.display()))?;
        }
        let quota = Quota::per_second(NonZeroU32::new(PER_SECOND).unwrap_or(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MIN));
        Ok(CheckinStore {
            dir,
            entries: Mutex::new(HashMap::new()),
            limiter: RateLimiter::dashmap_with_clock(quota, MonotonicClock),
            counter: None,
        })
    }

    /// Counts every check-in in `counter` (labels `kind`, `result`).
    pub(crate) fn counting(self, counter: IntCounterVec) -> CheckinStore {
        CheckinStore {
            counter: Some(counter),
            ..self
        }
    }

    /// Counts one check-in of `kind` with `result`.
    pub(crate) fn count(&self, kind: Kind, result: &str) {
        if let Some(c) = &self.counter {
            c.with_label_values(&[kind.label(), result]).inc();
        }
    }

    fn file(&self, node: &str) -> Option<PathBuf> {
        let name: String = Sha256::digest(node.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        self.dir
            .as_ref()
            .map(|d| d.join(format!("checkin-{name}.json")))
    }

    fn load(&self, node: &str) -> Option<Checkin> {
        let text = std::fs::read(self.file(node)?).ok()?;
        let entry: Entry = serde_json::from_slice(&text).ok()?;
        (entry.node == node).then_some(entry.checkin)
    }

    /// The check-ins of this deployment of the node, if any.
    pub(crate) fn get(&self, node: &str, deployment: &str) -> Option<Checkin> {
        let cached = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned();
        cached
            .or_else(|| self.load(node))
            .filter(|c| c.deployment == deployment)
    }

    /// Stores one check-in of `kind` with `body` for this deployment of the node: nothing
    /// is stored when the body is malformed or the node sends too many.
    pub(crate) fn record(
        &self,
        node: &str,
        deployment: &str,
        kind: Kind,
        body: &[u8],
    ) -> Result<(), CheckinError> {
        let result = self.store(node, deployment, kind, body);
        self.count(
            kind,
            match &result {
                Ok(()) => "stored",
                Err(CheckinError::Malformed(_)) => "malformed",
                Err(CheckinError::RateLimited) => "rate_limited",
                Err(CheckinError::Io(_)) => "not_stored",
            },
        );
        result
    }

    fn store(
        &self,
        node: &str,
        deployment: &str,
        kind: Kind,
        body: &[u8],
    ) -> Result<(), CheckinError> {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        // Parsed before the rate limit counts it: a malformed body costs nothing stored.
        let update = match kind {
            Kind::PhoneHome => Update::PhoneHome(phone_home(body, &now)?),
            Kind::Reporting => Update::Event(event(body, &now)?),
        };
        if self.limiter.check_key(&node.to_string()).is_err() {
            return Err(CheckinError::RateLimited);
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let current = match entries.get(node) {
            Some(c) => Some(c.clone()),
            None => self.load(node),
        };
        let mut c = current
            .filter(|c| c.deployment == deployment)
            .unwrap_or_else(|| Checkin {
                deployment: deployment.into(),
                ..Checkin::default()
            });
        match update {
            Update::PhoneHome(p) => c.phone_home = Some(p),
            Update::Event(e) => {
                let stage = e.name.split('/').next().unwrap_or_default().to_string();
                if !c.events.contains_key(&stage) && c.events.len() >= MAX_STAGES {
                    return Err(CheckinError::Malformed(format!(
                        "more than {MAX_STAGES} stages"
                    )));
                }
                c.events.insert(stage, e);
            }
        }
        c.last_at = now;
        if let Some(path) = self.file(node) {
            let entry = Entry {
                node: node.into(),
                checkin: c.clone(),
            };
            let tmp = path.with_extension("tmp");
            let write = || -> std::io::Result<()> {
                std::fs::write(&tmp, serde_json::to_vec(&entry).unwrap_or_default())?;
                std::fs::rename(&tmp, &path)
            };
            write().map_err(|e| CheckinError::Io(e.to_string()))?;
        }
        entries.insert(node.into(), c);
        Ok(())
    }
}

enum Update {
    PhoneHome(PhoneHome),
    Event(Event),
}

fn malformed(msg: impl Into<String>) -> CheckinError {
    CheckinError::Malformed(msg.into())
}

/// A text field as kept: at most `max` bytes, no control characters.
fn text(field: &str, value: &str, max: usize) -> Result<String, CheckinError> {
    if value.len() > max {
        return Err(malformed(format!("{field} is longer than {max} bytes")));
    }
    if value
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(malformed(format!("{field} holds control characters")));
    }
    Ok(value.to_string())
}

/// cloud-init's phone_home form: `application/x-www-form-urlencoded`, `N/A` for what the
/// node could not read.
fn phone_home(body: &[u8], now: &str) -> Result<PhoneHome, CheckinError> {
    let mut p = PhoneHome {
        at: now.into(),
        ..PhoneHome::default()
    };
    let mut known = 0;
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let (k, v) = match pair.iter().position(|b| *b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &b""[..]),
        };
        let (k, v) = (form_decode(k)?, form_decode(v)?);
        let v = v.trim();
        let slot = match k.as_str() {
            "instance_id" => &mut p.instance_id,
            "hostname" => &mut p.hostname,
            "fqdn" => &mut p.fqdn,
            k if KEY_FIELDS.contains(&k) => {
                known += 1;
                if v != "N/A" && !v.is_empty() {
                    p.host_keys.push(host_key(k, v)?);
                }
                continue;
            }
            _ => continue,
        };
        known += 1;
        if v != "N/A" {
            *slot = Some(text(&k, v, MAX_NAME)?);
        }
    }
    if known == 0 {
        return Err(malformed(
            "a phone_home form names none of pub_key_rsa, pub_key_ecdsa, pub_key_ed25519, instance_id, hostname, fqdn",
        ));
    }
    Ok(p)
}

fn form_decode(bytes: &[u8]) -> Result<String, CheckinError> {
    let plus: Vec<u8> = bytes
        .iter()
        .map(|b| if *b == b'+' { b' ' } else { *b })
        .collect();
    percent_decode(&plus)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| malformed("the form is not UTF-8"))
}

/// An OpenSSH public key line, `<type> <base64 blob> [comment]`: its type and fingerprint.
/// The blob must name the same type (RFC 4253 string encoding).
fn host_key(field: &str, line: &str) -> Result<HostKey, CheckinError> {
    let bad = || malformed(format!("{field} is not an OpenSSH public key"));
    let mut parts = line.split_ascii_whitespace();
    let (kind, b64) = (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad())?;
    let len = blob
        .get(..4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(bad)?;
    if blob.get(4..4 + len) != Some(kind.as_bytes()) {
        return Err(bad());
    }
    let digest = Sha256::digest(&blob);
    Ok(HostKey {
        kind: text(field, kind, MAX_NAME)?,
        fingerprint: format!(
            "SHA256:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
        ),
    })
}

/// One event of cloud-init's webhook reporting handler (`ReportingEvent.as_dict`).
fn event(body: &[u8], now: &str) -> Result<Event, CheckinError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| malformed("an event is a JSON object"))?;
    let string = |k: &str, max: usize| -> Result<Option<String>, CheckinError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => text(k, s, max).map(Some),
            Some(_) => Err(malformed(format!("{k} must be a string"))),
        }
    };
    let name = string("name", MAX_NAME)?
        .filter(|n| !n.is_empty())
        .ok_or_else(|| malformed("an event needs a name"))?;
    let event_type = string("event_type", MAX_NAME)?
        .filter(|t| t == "start" || t == "finish")
        .ok_or_else(|| malformed("event_type must be start or finish"))?;
    let timestamp = match obj.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_f64(),
        Some(_) => return Err(malformed("timestamp must be a number")),
    };
    Ok(Event {
        at: now.into(),
        name,
        event_type,
        result: string("result", MAX_NAME)?,
        description: string("description", MAX_TEXT)?,
        timestamp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Made by `ssh-keygen -t ed25519`; `ssh-keygen -lf` prints its fingerprint as below.
    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIH2xeR5cb3AFJAfja8uGhdYsDweQTzEsSCwrGGTQ8i7 root@node";
    const ED25519_FP: &str = "SHA256:zbwxxaB1LZGW3WaoWvjVE23DhgqxsZOGMA+Wqu02XH8";

    #[test]
    fn phone_home_keeps_fingerprints_and_names() {
        let form = format!(
            "pub_key_dsa=N%2FA&pub_key_ed25519={}&instance_id=i-1&hostname=n1&fqdn=n1.example.com",
            percent_encoding::utf8_percent_encode(ED25519, percent_encoding::NON_ALPHANUMERIC)
        );
        let p = phone_home(form.as_bytes(), "t").unwrap();
        assert_eq!(p.host_keys.len(), 1);
        assert_eq!(p.host_keys[0].kind, "ssh-ed25519");
        assert_eq!(p.host_keys[0].fingerprint, ED25519_FP);
        assert_eq!(
            (
                p.instance_id.as_deref(),
                p.hostname.as_deref(),
                p.fqdn.as_deref()
            ),
            (Some("i-1"), Some("n1"), Some("n1.example.com"))
        );
    }

    #[test]
    fn malformed_bodies_are_refused() {
        for body in [
            &b"colour=blue"[..],
            b"pub_key_rsa=ssh-rsa+AAAA",
            b"pub_key_ed25519=ssh-rsa+AAAAC3NzaC1lZDI1NTE5AAAAIIH2xeR5cb3AFJAfja8uGhdYsDweQTzEsSCwrGGTQ8i7",
            b"hostname=%ff",
            b"hostname=a%0Db",
        ] {
            assert!(
                matches!(phone_home(body, "t"), Err(CheckinError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        for body in [
            &b"[]"[..],
            b"{\"name\": \"init-local\"}",
            b"{\"name\": \"\", \"event_type\": \"start\"}",
            b"{\"name\": \"x\", \"event_type\": \"stop\"}",
            b"{\"name\": 1, \"event_type\": \"start\"}",
            b"{\"name\": \"x\", \"event_type\": \"start\", \"timestamp\": \"now\"}",
            b"{",
        ] {
            assert!(
                matches!(event(body, "t"), Err(CheckinError::Malformed(_))),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn last_event_per_stage_per_deployment_and_persistent() {
        let dir = tempfile::tempdir().unwrap();
        let s = CheckinStore::new(Some(dir.path().to_owned())).unwrap();
        let ev = |name: &str, t: &str| {
            format!("{{\"name\": \"{name}\", \"event_type\": \"{t}\", \"origin\": \"cloudinit\", \"timestamp\": 1.5, \"result\": \"SUCCESS\"}}")
        };
        for (n, t) in [
            ("init-local", "start"),
            ("init-local/search", "finish"),
            ("init-network", "start"),
        ] {
            s.record("n1", "d1", Kind::Reporting, ev(n, t).as_bytes())
                .unwrap();
        }
        let c = s.get("n1", "d1").unwrap();
        assert_eq!(
            c.events.keys().collect::<Vec<_>>(),
            ["init-local", "init-network"]
        );
        assert_eq!(c.events["init-local"].name, "init-local/search");
        assert_eq!(c.events["init-local"].event_type, "finish");
        // Another process reads it back; a redeployment starts clean.
        let s2 = CheckinStore::new(Some(dir.path().to_owned())).unwrap();
        assert_eq!(s2.get("n1", "d1"), Some(c));
        assert_eq!(s2.get("n1", "d2"), None);
        s2.record(
            "n1",
            "d2",
            Kind::Reporting,
            ev("modules-final", "start").as_bytes(),
        )
        .unwrap();
        assert_eq!(s2.get("n1", "d1"), None);
        assert_eq!(s2.get("n1", "d2").unwrap().events.len(), 1);
        // Stages are bounded.
        for i in 1..MAX_STAGES {
            s2.record(
                "n1",
                "d2",
                Kind::Reporting,
                ev(&format!("s{i}"), "start").as_bytes(),
            )
            .unwrap();
        }
        assert!(matches!(
            s2.record(
                "n1",
                "d2",
                Kind::Reporting,
                ev("one-more", "start").as_bytes()
            ),
            Err(CheckinError::Malformed(_))
        ));
    }

    #[test]
    fn a_node_sending_too_many_is_refused() {
        let s = CheckinStore::new(None).unwrap();
        let body = b"{\"name\": \"init\", \"event_type\": \"start\"}";
        let mut stored = 0;
        while s.record("n1", "d", Kind::Reporting, body).is_ok() {
            stored += 1;
            assert!(stored <= BURST + PER_SECOND * 10, "never limited");
        }
        assert!(stored >= BURST, "{stored}");
        assert_eq!(
            s.record("n1", "d", Kind::Reporting, body),
            Err(CheckinError::RateLimited)
        );
        // Another node has its own allowance.
        s.record("n2", "d", Kind::Reporting, body).unwrap();
    }
}
