//! Check-ins of booted nodes: what cloud-init's `phone_home` module POSTs (its SSH host
//! keys, instance id, hostname and FQDN, form-encoded) and its webhook reporting handler
//! POSTs (one JSON event per stage and module), at `/openstack/<version>/phone_home` and
//! `/openstack/<version>/reporting`. Kept per node and deployment, so a redeployed node
//! starts clean; in the state directory when one is configured (one file per node,
//! replaced by rename), so it survives restarts. The admin listener shows them at
//! `/nodes/<uuid>/checkin`: host-key fingerprints as `ssh-keygen -l` prints them, the last
//! event of each stage, and when each arrived.
//!
//! With write-back on, each node's check-in is also written to its `extra` in Ironic
//! (one key, [`EXTRA_KEY`], in a bounded form: fingerprints, times, each stage's last
//! event without its text) by a worker of its own, after the POST is answered, at most
//! once a second per node and retried with back-off. The worker reads the node first and
//! writes the join of both (another replica may have received other parts), and checks
//! again a little later; every replica reads the key back from its index, so replicas
//! sharing one Ironic show the same check-in.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// The key of a node's `extra` that holds its check-in when replicas write it back.
pub(crate) const EXTRA_KEY: &str = "ironic_metadata_checkin";
/// Largest check-in written to Ironic, in bytes of JSON.
pub(crate) const MAX_WRITTEN: usize = 4096;
/// Host keys written to Ironic (cloud-init posts at most four).
const MAX_WRITTEN_KEYS: usize = 8;
/// A node's check-ins are written to Ironic at most this often: cloud-init reports a
/// hundred or two events within seconds.
const WRITE_EVERY: Duration = Duration::from_secs(1);
/// A refused write is tried again after 1, 2, 4 ... seconds, at most a minute apart, and
/// given up after this many attempts (a later check-in of the node is tried afresh).
const WRITE_ATTEMPTS: u32 = 10;
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A write is checked this long after it was made (another replica's write, read before
/// this one landed, may have replaced it).
const CHECK_AFTER: Duration = Duration::from_secs(3);

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
    /// Writes check-ins to Ironic, when told to.
    write_back: Option<Arc<WriteBack>>,
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
            write_back: None,
        })
    }

    /// Writes every stored check-in to the node's `extra` in Ironic through `write_back`.
    pub(crate) fn writing_back(self, write_back: Arc<WriteBack>) -> CheckinStore {
        CheckinStore {
            write_back: Some(write_back),
            ..self
        }
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

    /// The check-ins of this deployment of the node, if any: those stored here joined
    /// with `shared`, what replicas wrote to the node's `extra` (newest of each part).
    pub(crate) fn get(
        &self,
        node: &str,
        deployment: &str,
        shared: Option<&Value>,
    ) -> Option<Checkin> {
        let cached = self
            .entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(node)
            .cloned();
        let local = cached
            .or_else(|| self.load(node))
            .filter(|c| c.deployment == deployment);
        joined(local, self.shared(shared), deployment)
    }

    /// What replicas wrote to the node's `extra`, read only when writing back.
    fn shared<'a>(&self, shared: Option<&'a Value>) -> Option<&'a Value> {
        shared.filter(|_| self.write_back.is_some())
    }

    /// Stores one check-in of `kind` with `body` for this deployment of the node: nothing
    /// is stored when the body is malformed or the node sends too many.
    pub(crate) fn record(
        &self,
        node: &str,
        deployment: &str,
        kind: Kind,
        body: &[u8],
        shared: Option<&Value>,
    ) -> Result<(), CheckinError> {
        let result = self.store(node, deployment, kind, body, shared);
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
        shared: Option<&Value>,
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
        let current = current.filter(|c| c.deployment == deployment);
        let mut c = joined(current, self.shared(shared), deployment).unwrap_or_else(|| Checkin {
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
        if let Some(w) = &self.write_back {
            w.queue(Shared::Checkin, node, deployment, c.shared_form());
        }
        entries.insert(node.into(), c);
        Ok(())
    }
}

/// `local` joined with the check-in of this deployment in `shared` (a node's `extra`).
fn joined(local: Option<Checkin>, shared: Option<&Value>, deployment: &str) -> Option<Checkin> {
    let remote = shared
        .and_then(Checkin::from_shared)
        .filter(|c| c.deployment == deployment);
    match (local, remote) {
        (Some(l), Some(r)) => Some(l.join(r)),
        (l, r) => l.or(r),
    }
}

impl Checkin {
    /// The newest of each part of two check-ins of one deployment: the phone_home, each
    /// stage's event; `self`'s on a tie (it keeps the texts the shared form leaves out).
    fn join(mut self, other: Checkin) -> Checkin {
        match (&self.phone_home, other.phone_home) {
            (Some(mine), Some(theirs)) if theirs.at > mine.at => self.phone_home = Some(theirs),
            (None, theirs) => self.phone_home = theirs,
            _ => {}
        }
        for (stage, e) in other.events {
            match self.events.get(&stage) {
                Some(mine) if mine.at >= e.at => {}
                _ => {
                    self.events.insert(stage, e);
                }
            }
        }
        while self.events.len() > MAX_STAGES {
            drop_oldest_event(&mut self.events);
        }
        if other.last_at > self.last_at {
            self.last_at = other.last_at;
        }
        self
    }

    /// The check-in as written to Ironic: fingerprints and times, each stage's last event
    /// without its description or the node's timestamp, at most [`MAX_WRITTEN`] bytes of
    /// JSON (the oldest stages, then the names, then host keys left out to fit).
    pub(crate) fn shared_form(&self) -> Value {
        let mut c = self.clone();
        for e in c.events.values_mut() {
            e.description = None;
            e.timestamp = None;
        }
        if let Some(p) = &mut c.phone_home {
            p.host_keys.truncate(MAX_WRITTEN_KEYS);
        }
        loop {
            let v = serde_json::to_value(&c).unwrap_or(Value::Null);
            if v.to_string().len() <= MAX_WRITTEN {
                return v;
            }
            if !c.events.is_empty() {
                drop_oldest_event(&mut c.events);
            } else if let Some(p) = c
                .phone_home
                .as_mut()
                .filter(|p| p.instance_id.is_some() || p.hostname.is_some() || p.fqdn.is_some())
            {
                (p.instance_id, p.hostname, p.fqdn) = (None, None, None);
            } else if let Some(p) = c.phone_home.as_mut().filter(|p| !p.host_keys.is_empty()) {
                p.host_keys.pop();
            } else {
                return Value::Null;
            }
        }
    }

    /// A check-in as read from a node's `extra`: whoever may update the node wrote it, so
    /// it is read in the bounded shared form, and anything else reads as none.
    fn from_shared(v: &Value) -> Option<Checkin> {
        let c: Checkin = serde_json::from_value(v.clone()).ok()?;
        serde_json::from_value(c.shared_form()).ok()
    }
}

fn drop_oldest_event(events: &mut BTreeMap<String, Event>) {
    let oldest = events
        .iter()
        .min_by(|a, b| a.1.at.cmp(&b.1.at))
        .map(|(k, _)| k.clone());
    if let Some(k) = oldest {
        events.remove(&k);
    }
}

/// What replicas share through a node's `extra`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Shared {
    /// The check-in, under [`EXTRA_KEY`].
    Checkin,
    /// The instance password (`{deployment, password}`), under [`PASSWORD_KEY`].
    Password,
}

/// The key of a node's `extra` that holds its instance password when written back.
pub(crate) const PASSWORD_KEY: &str = "ironic_metadata_password";

impl Shared {
    fn key(self) -> &'static str {
        match self {
            Shared::Checkin => EXTRA_KEY,
            Shared::Password => PASSWORD_KEY,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Shared::Checkin => "checkin",
            Shared::Password => "password",
        }
    }

    /// What the node's `extra` holds for this kind.
    pub(crate) fn held(self, extra: &crate::ironic::model::NodeExtra) -> Option<Value> {
        match self {
            Shared::Checkin => extra.ironic_metadata_checkin.as_ref(),
            Shared::Password => extra.ironic_metadata_password.as_ref(),
        }
        .map(crate::ironic::model::Raw::value)
    }
}

/// Writes nodes' check-ins and passwords to their `extra` in Ironic, on a thread of its
/// own started with the first write: the POST that stored one never waits for Ironic. One
/// value per node and kind waits at a time (a newer one replaces it), so what waits is
/// bounded by the fleet.
pub(crate) struct WriteBack {
    queue: Arc<Queue>,
    client: Mutex<Option<crate::ironic::IronicClient>>,
}

struct Queue {
    pending: Mutex<HashMap<(String, Shared), Pending>>,
    wake: tokio::sync::Notify,
    /// `metadata_ironic_write_backs_total{kind,result}`.
    counter: IntCounterVec,
}

struct Pending {
    /// The check-in in its shared form or the password entry, and its deployment.
    value: Value,
    deployment: String,
    attempt: u32,
    /// Passes left to check that Ironic still holds what was written.
    checks: u32,
    due: Instant,
}

impl WriteBack {
    pub(crate) fn new(client: crate::ironic::IronicClient, counter: IntCounterVec) -> WriteBack {
        WriteBack {
            queue: Arc::new(Queue {
                pending: Mutex::new(HashMap::new()),
                wake: tokio::sync::Notify::new(),
                counter,
            }),
            client: Mutex::new(Some(client)),
        }
    }

    /// Writes `value` as node's `what`, soon; replaces what waits for the node.
    pub(crate) fn queue(&self, what: Shared, node: &str, deployment: &str, value: Value) {
        if let Some(client) = self.client.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let queue = self.queue.clone();
            let started = std::thread::Builder::new()
                .name("checkin-write-back".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(write_back(client, queue)),
                        Err(e) => {
                            tracing::error!(target: "checkin", error = %e, "cannot start writing check-ins to Ironic")
                        }
                    }
                });
            if let Err(e) = started {
                tracing::error!(target: "checkin", error = %e, "cannot start writing check-ins to Ironic");
            }
        }
        let mut pending = self.queue.pending.lock().unwrap_or_else(|e| e.into_inner());
        // A write already waiting keeps its time; a new one waits a moment for more.
        let at = (node.to_string(), what);
        let due = pending.get(&at).map_or_else(
            || Instant::now() + WRITE_EVERY,
            |p| p.due.min(Instant::now() + WRITE_EVERY),
        );
        pending.insert(
            at,
            Pending {
                value,
                deployment: deployment.into(),
                attempt: 0,
                checks: 1,
                due,
            },
        );
        drop(pending);
        self.queue.wake.notify_one();
    }
}

/// The writer's loop: writes what is due, one node at a time; waits for the next due
/// write or a new check-in.
async fn write_back(client: crate::ironic::IronicClient, queue: Arc<Queue>) {
    loop {
        let (due, next) = {
            let mut pending = queue.pending.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let ready: Vec<(String, Shared)> = pending
                .iter()
                .filter(|(_, p)| p.due <= now)
                .map(|(k, _)| k.clone())
                .collect();
            let due: Vec<((String, Shared), Pending)> = ready
                .into_iter()
                .filter_map(|k| pending.remove(&k).map(|p| (k, p)))
                .collect();
            (due, pending.values().map(|p| p.due).min())
        };
        if due.is_empty() {
            let wait = next.map_or(MAX_BACKOFF, |d| d.saturating_duration_since(Instant::now()));
            tokio::select! {
                () = queue.wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        for (node, p) in due {
            write_one(&client, &queue, node, p).await;
        }
    }
}

/// What to write for `p` when Ironic holds `held`; `None` when Ironic holds it already.
/// A check-in is joined with what Ironic holds (another replica may have written parts
/// this one has not seen); a password is written once per deployment, the first wins.
fn to_write(what: Shared, p: &Pending, held: Option<&Value>) -> Option<Value> {
    match what {
        Shared::Checkin => {
            let value = match Checkin::from_shared(&p.value) {
                Some(ours) => {
                    joined(Some(ours), held, &p.deployment).map_or(Value::Null, |c| c.shared_form())
                }
                None => p.value.clone(),
            };
            let now = held.and_then(Checkin::from_shared).map(|c| c.shared_form());
            (now != Some(value.clone())).then_some(value)
        }
        Shared::Password => {
            let same =
                held.and_then(|h| h.get("deployment")) == Some(&Value::from(p.deployment.as_str()));
            (!same).then(|| p.value.clone())
        }
    }
}

/// One pass over a node: reads what Ironic holds and writes what [`to_write`] says. A
/// write is checked by one more pass a little later, which writes again when another
/// replica's write crossed it.
async fn write_one(
    client: &crate::ironic::IronicClient,
    queue: &Queue,
    (node, what): (String, Shared),
    p: Pending,
) {
    let count = |result: &str| {
        queue
            .counter
            .with_label_values(&[what.label(), result])
            .inc()
    };
    let written = async {
        let Some(current) = client.node(&node).await? else {
            return Ok("no_node");
        };
        // Redeployed since: what this deployment sent is not written over the next one's.
        if current.deployment() != p.deployment {
            return Ok("stale");
        }
        let Some(value) = to_write(what, &p, what.held(&current.extra).as_ref()) else {
            return Ok("unchanged");
        };
        client.set_node_extra(&node, what.key(), &value).await?;
        Ok::<_, crate::ironic::ClientError>("written")
    };
    let e = match written.await {
        Ok("written") => {
            count("written");
            tracing::debug!(target: "checkin", node = %node, key = what.key(), "written to Ironic");
            if p.checks > 0 {
                requeue(
                    queue,
                    (node, what),
                    Pending {
                        checks: p.checks - 1,
                        attempt: 0,
                        due: Instant::now() + CHECK_AFTER,
                        ..p
                    },
                );
            }
            return;
        }
        Ok(other) => return count(other),
        Err(e) => e,
    };
    count(e.reason());
    let attempt = p.attempt + 1;
    if attempt >= WRITE_ATTEMPTS {
        count("given_up");
        tracing::warn!(target: "checkin", node = %node, key = what.key(), attempts = attempt, error = %e,
            "cannot write to the node's extra in Ironic; given up until the node sends another");
        return;
    }
    let pause = Duration::from_secs(1 << p.attempt.min(6)).min(MAX_BACKOFF);
    tracing::warn!(target: "checkin", node = %node, key = what.key(), attempt, error = %e, retry_in_s = pause.as_secs(),
        "cannot write to the node's extra in Ironic; trying again");
    requeue(
        queue,
        (node, what),
        Pending {
            attempt,
            due: Instant::now() + pause,
            ..p
        },
    );
}

/// Waits `p` for its node again, unless a newer value of the node already waits.
fn requeue(queue: &Queue, at: (String, Shared), p: Pending) {
    let mut pending = queue.pending.lock().unwrap_or_else(|e| e.into_inner());
    pending.entry(at).or_insert(p);
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
            s.record("n1", "d1", Kind::Reporting, ev(n, t).as_bytes(), None)
                .unwrap();
        }
        let c = s.get("n1", "d1", None).unwrap();
        assert_eq!(
            c.events.keys().collect::<Vec<_>>(),
            ["init-local", "init-network"]
        );
        assert_eq!(c.events["init-local"].name, "init-local/search");
        assert_eq!(c.events["init-local"].event_type, "finish");
        // Another process reads it back; a redeployment starts clean.
        let s2 = CheckinStore::new(Some(dir.path().to_owned())).unwrap();
        assert_eq!(s2.get("n1", "d1", None), Some(c));
        assert_eq!(s2.get("n1", "d2", None), None);
        s2.record(
            "n1",
            "d2",
            Kind::Reporting,
            ev("modules-final", "start").as_bytes(),
            None,
        )
        .unwrap();
        assert_eq!(s2.get("n1", "d1", None), None);
        assert_eq!(s2.get("n1", "d2", None).unwrap().events.len(), 1);
        // Stages are bounded.
        for i in 1..MAX_STAGES {
            s2.record(
                "n1",
                "d2",
                Kind::Reporting,
                ev(&format!("s{i}"), "start").as_bytes(),
                None,
            )
            .unwrap();
        }
        assert!(matches!(
            s2.record(
                "n1",
                "d2",
                Kind::Reporting,
                ev("one-more", "start").as_bytes(),
                None
            ),
            Err(CheckinError::Malformed(_))
        ));
    }

    #[test]
    fn the_shared_form_is_bounded_and_joins_keep_the_newest() {
        let long = "x".repeat(MAX_NAME);
        let event = |at: &str, result: &str| Event {
            at: at.into(),
            name: long.clone(),
            event_type: "finish".into(),
            result: Some(result.into()),
            description: Some("d".repeat(MAX_TEXT)),
            timestamp: Some(1.5),
        };
        let mut big = Checkin {
            deployment: "d".into(),
            last_at: "2026-01-01T00:00:16.000Z".into(),
            ..Checkin::default()
        };
        for i in 0..MAX_STAGES {
            big.events.insert(
                format!("{i:02}{long}"),
                event(&format!("2026-01-01T00:00:{i:02}.000Z"), &long),
            );
        }
        let shared = big.shared_form();
        assert!(shared.to_string().len() <= MAX_WRITTEN, "{}", shared);
        let back = Checkin::from_shared(&shared).unwrap();
        assert!(!back.events.is_empty() && back.events.len() < MAX_STAGES);
        assert!(back.events.values().all(|e| e.description.is_none()));
        // The oldest stages are the ones left out.
        assert!(!back.events.keys().any(|k| k.starts_with("00")));
        assert!(back.events.keys().any(|k| k.starts_with("15")));
        // Whatever a node's extra holds is read in the same bounded form, or not at all.
        let mut hostile = serde_json::to_value(&big).unwrap();
        hostile["phone_home"] = serde_json::json!({"at": "t", "host_keys":
            vec![serde_json::json!({"type": long, "fingerprint": long}); 100]});
        let read = Checkin::from_shared(&hostile).unwrap();
        assert!(serde_json::to_string(&read).unwrap().len() <= MAX_WRITTEN);
        assert_eq!(Checkin::from_shared(&serde_json::json!([1, 2])), None);

        // Joined: the newer phone_home and the newer event of each stage, the latest time.
        let at = |t: &str| format!("2026-01-01T00:00:{t}.000Z");
        let mut a = Checkin {
            deployment: "d".into(),
            last_at: at("05"),
            phone_home: Some(PhoneHome {
                at: at("01"),
                hostname: Some("old".into()),
                ..PhoneHome::default()
            }),
            ..Checkin::default()
        };
        a.events.insert("init".into(), event(&at("05"), "SUCCESS"));
        a.events
            .insert("modules-final".into(), event(&at("02"), "FAIL"));
        let mut b = Checkin {
            deployment: "d".into(),
            last_at: at("04"),
            phone_home: Some(PhoneHome {
                at: at("04"),
                hostname: Some("new".into()),
                ..PhoneHome::default()
            }),
            ..Checkin::default()
        };
        b.events.insert("init".into(), event(&at("03"), "FAIL"));
        b.events
            .insert("modules-final".into(), event(&at("04"), "SUCCESS"));
        b.events
            .insert("init-local".into(), event(&at("00"), "SUCCESS"));
        let j = a.join(b);
        assert_eq!(j.phone_home.unwrap().hostname.as_deref(), Some("new"));
        let results: Vec<_> = j
            .events
            .iter()
            .map(|(k, e)| (k.as_str(), e.result.as_deref().unwrap()))
            .collect();
        assert_eq!(
            results,
            [
                ("init", "SUCCESS"),
                ("init-local", "SUCCESS"),
                ("modules-final", "SUCCESS")
            ]
        );
        assert_eq!(j.last_at, at("05"));
    }

    #[test]
    fn a_node_sending_too_many_is_refused() {
        let s = CheckinStore::new(None).unwrap();
        let body = b"{\"name\": \"init\", \"event_type\": \"start\"}";
        let mut stored = 0;
        while s.record("n1", "d", Kind::Reporting, body, None).is_ok() {
            stored += 1;
            assert!(stored <= BURST + PER_SECOND * 10, "never limited");
        }
        assert!(stored >= BURST, "{stored}");
        assert_eq!(
            s.record("n1", "d", Kind::Reporting, body, None),
            Err(CheckinError::RateLimited)
        );
        // Another node has its own allowance.
        s.record("n2", "d", Kind::Reporting, body, None).unwrap();
    }
}
