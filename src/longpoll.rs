//! Waiting for a document to change, with GCE's query names:
//! `?wait_for_change=true&last_etag=E&timeout_sec=N`. The request is answered at once when
//! the document's ETag differs from `E` (or when no ETag is given: when it changes from
//! the one it has now); otherwise it is parked until an index swap changes it or `N`
//! seconds pass (default 60, at most 300). Parked requests cost no Ironic request and hold
//! no rate-limit slot; they are bounded per client and in total.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use percent_encoding::percent_decode_str;
use tokio::sync::watch;

use crate::metrics::Metrics;
use crate::policy::limiter::client_key;
use crate::reply::Refusal;

/// Longest wait a request may ask for, in seconds.
pub(crate) const MAX_WAIT_SECONDS: u64 = 300;
/// Wait when `timeout_sec` is not given, in seconds.
pub(crate) const DEFAULT_WAIT_SECONDS: u64 = 60;
/// Longest `last_etag` accepted (ours are 28 characters).
const MAX_ETAG: usize = 128;

/// What a request asked to wait for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wait {
    /// The ETag the client holds, without quotes or `W/`; `None`: the current one.
    pub(crate) last_etag: Option<String>,
    pub(crate) timeout: Duration,
}

/// The wait a request target asks for: `None` when it does not ask to wait. Each of the
/// three parameters may appear once; other parameters are ignored, as GCE ignores them.
pub(crate) fn parse(target: &str) -> Result<Option<Wait>, Refusal> {
    let Some((_, query)) = target.split_once('?') else {
        return Ok(None);
    };
    let query = query.split('#').next().unwrap_or("");
    let (mut wait, mut etag, mut timeout) = (None, None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "wait_for_change" => &mut wait,
            "last_etag" => &mut etag,
            "timeout_sec" => &mut timeout,
            _ => continue,
        };
        let value = percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| Refusal::BadWait)?;
        if slot.replace(value.into_owned()).is_some() {
            return Err(Refusal::BadWait);
        }
    }
    let waits = match wait.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(Refusal::BadWait),
    };
    let timeout = match timeout {
        None => DEFAULT_WAIT_SECONDS,
        Some(t) => t
            .parse::<u64>()
            .ok()
            .filter(|t| (1..=MAX_WAIT_SECONDS).contains(t))
            .ok_or(Refusal::BadWait)?,
    };
    let last_etag = match etag {
        None => None,
        Some(e) if e.len() <= MAX_ETAG && e.bytes().all(|b| b.is_ascii_graphic()) => {
            Some(bare(&e).to_string())
        }
        Some(_) => return Err(Refusal::BadWait),
    };
    Ok(waits.then(|| Wait {
        last_etag,
        timeout: Duration::from_secs(timeout),
    }))
}

/// An ETag without `W/` and quotes: how a client may hand back the header's value.
pub(crate) fn bare(etag: &str) -> &str {
    let e = etag.strip_prefix("W/").unwrap_or(etag);
    e.strip_prefix('"')
        .and_then(|e| e.strip_suffix('"'))
        .unwrap_or(e)
}

/// The parked requests: bounded in total and per client (an IPv6 client by its /64, as
/// the rate limiter and connection caps count it).
pub(crate) struct Parking {
    max_total: usize,
    max_per_client: usize,
    held: Mutex<(usize, HashMap<IpAddr, usize>)>,
    stopping: watch::Sender<bool>,
    metrics: Arc<Metrics>,
}

/// One parked request's place; given back when dropped.
pub(crate) struct Slot {
    parking: Arc<Parking>,
    key: IpAddr,
}

impl Parking {
    pub(crate) fn new(max_total: usize, max_per_client: usize, metrics: Arc<Metrics>) -> Parking {
        Parking {
            max_total,
            max_per_client,
            held: Mutex::new((0, HashMap::new())),
            stopping: watch::channel(false).0,
            metrics,
        }
    }

    /// A place for `client`, or `None` when it or the listener holds the most allowed.
    pub(crate) fn park(self: &Arc<Self>, client: IpAddr) -> Option<Slot> {
        let key = client_key(client, 64);
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let mine = held.1.get(&key).copied().unwrap_or(0);
        if held.0 >= self.max_total || mine >= self.max_per_client {
            drop(held);
            self.metrics
                .conn
                .waits
                .with_label_values(&["refused"])
                .inc();
            return None;
        }
        held.0 += 1;
        held.1.insert(key, mine + 1);
        self.metrics.conn.waiting.inc();
        Some(Slot {
            parking: self.clone(),
            key,
        })
    }

    /// Told when the service stops: parked requests are answered at once.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    pub(crate) fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Counts a parked request's answer by why it came (`changed`, `timeout`, `shutdown`).
    pub(crate) fn answered(&self, why: &str) {
        self.metrics.conn.waits.with_label_values(&[why]).inc();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.parking.held.lock().unwrap_or_else(|e| e.into_inner());
        held.0 = held.0.saturating_sub(1);
        if let Some(n) = held.1.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                held.1.remove(&self.key);
            }
        }
        self.parking.metrics.conn.waiting.dec();
    }
}

/// Until when a connection's request is parked, for the listener's exchange deadline
/// (milliseconds after the process's first use of it; 0: not parked).
#[derive(Debug, Default)]
pub(crate) struct ParkedUntil(AtomicU64);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl ParkedUntil {
    pub(crate) fn set(&self, until: Option<Instant>) {
        let ms = until.map_or(0, |u| {
            u64::try_from(u.saturating_duration_since(epoch()).as_millis())
                .unwrap_or(u64::MAX)
                .max(1)
        });
        self.0.store(ms, Ordering::Release);
    }

    /// How long the parked request may still wait; `None` when it is not parked.
    pub(crate) fn remaining(&self) -> Option<Duration> {
        match self.0.load(Ordering::Acquire) {
            0 => None,
            ms => Some(
                (epoch() + Duration::from_millis(ms)).saturating_duration_since(Instant::now()),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait(etag: Option<&str>, secs: u64) -> Option<Wait> {
        Some(Wait {
            last_etag: etag.map(str::to_string),
            timeout: Duration::from_secs(secs),
        })
    }

    #[test]
    fn parameters_as_gce_names_them() {
        assert_eq!(parse("/openstack/latest/user_data"), Ok(None));
        assert_eq!(parse("/x?wait_for_change=false&timeout_sec=5"), Ok(None));
        assert_eq!(parse("/x?wait_for_change=true"), Ok(wait(None, 60)));
        assert_eq!(
            parse("/x?wait_for_change=true&last_etag=%22ab12%22&timeout_sec=300"),
            Ok(wait(Some("ab12"), 300))
        );
        assert_eq!(
            parse("/x?last_etag=W/%22ab12%22&wait_for_change=true&recursive=true"),
            Ok(wait(Some("ab12"), 60))
        );
        assert_eq!(
            parse("/x?wait_for_change=true&last_etag=ab12"),
            Ok(wait(Some("ab12"), 60))
        );
    }

    #[test]
    fn bad_parameters_are_refused() {
        for q in [
            "wait_for_change=yes",
            "wait_for_change=true&timeout_sec=0",
            "wait_for_change=true&timeout_sec=301",
            "wait_for_change=true&timeout_sec=-1",
            "wait_for_change=true&timeout_sec=1.5",
            "wait_for_change=true&timeout_sec=",
            "wait_for_change=true&wait_for_change=false",
            "wait_for_change=true&last_etag=a%20b",
            "wait_for_change=true&last_etag=%ff",
            &format!("wait_for_change=true&last_etag={}", "a".repeat(129)),
        ] {
            assert_eq!(parse(&format!("/x?{q}")), Err(Refusal::BadWait), "{q}");
        }
    }

    #[test]
    fn parking_is_bounded_per_client_and_in_total() {
        let metrics = Arc::new(Metrics::new());
        let p = Arc::new(Parking::new(3, 2, metrics));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        let b2: IpAddr = "2001:db8::2".parse().unwrap();
        let s1 = p.park(a).unwrap();
        let _s2 = p.park(a).unwrap();
        assert!(p.park(a).is_none());
        // One /64 is one client.
        let _s3 = p.park(b).unwrap();
        assert!(p.park(b2).is_none(), "total bound");
        drop(s1);
        assert!(p.park(b2).is_some());
    }
}
