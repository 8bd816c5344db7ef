//! Audit logging that no client can drive, and a budget of refusals per client. Every
//! refusal is counted; the first of each client and reason in an interval is an audit line,
//! the rest are only counted and summed up in one line per interval. A client refused more
//! often than its budget allows has its connection closed, and new connections refused,
//! until the budget has refilled: a denied client costs a TCP handshake per try.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
#[cfg(test)]
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::RateLimiter;

use crate::policy::limiter::client_key;

/// Past this many remembered (client, reason) pairs in one interval, every further pair is
/// counted without a line: the gate's memory is bounded whatever the clients do.
const MAX_KEYS: usize = 100_000;

/// Which refusals are logged, per interval.
pub(crate) struct AuditGate {
    state: Mutex<Window>,
}

struct Window {
    logged: HashSet<(IpAddr, &'static str)>,
    suppressed: u64,
    clients: HashSet<IpAddr>,
}

impl AuditGate {
    pub(crate) fn new() -> AuditGate {
        AuditGate {
            state: Mutex::new(Window {
                logged: HashSet::new(),
                suppressed: 0,
                clients: HashSet::new(),
            }),
        }
    }

    /// Whether the refusal of `client` for `reason` gets an audit line (the first of its
    /// kind in this interval) or is only counted.
    pub(crate) fn admit(&self, client: Option<IpAddr>, reason: &'static str) -> bool {
        let key = client.map_or(IpAddr::from([0u8; 4]), |c| client_key(c, 64));
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if w.logged.contains(&(key, reason)) || w.logged.len() >= MAX_KEYS {
            w.suppressed += 1;
            if w.clients.len() < MAX_KEYS {
                w.clients.insert(key);
            }
            return false;
        }
        w.logged.insert((key, reason));
        true
    }

    /// Ends the interval: how many refusals went unlogged in it, and from how many clients.
    pub(crate) fn rotate(&self) -> (u64, usize) {
        let mut w = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let out = (w.suppressed, w.clients.len());
        w.logged.clear();
        w.clients.clear();
        w.suppressed = 0;
        out
    }
}

/// Refusals per client, with a budget like a rate limit; a client over it is blocked until
/// its budget allows one more.
pub(crate) struct RefusalBudget<C: Clock = MonotonicClock> {
    limiter: RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    blocked: Mutex<HashMap<IpAddr, C::Instant>>,
}

impl RefusalBudget<MonotonicClock> {
    /// `per_minute` refusals a minute, all of them at once at most.
    pub(crate) fn new(per_minute: u32) -> RefusalBudget {
        RefusalBudget::with_clock(per_minute, MonotonicClock)
    }
}

impl<C: Clock + Clone> RefusalBudget<C> {
    pub(crate) fn with_clock(per_minute: u32, clock: C) -> RefusalBudget<C> {
        let n = NonZeroU32::new(per_minute.max(1)).expect("at least one");
        let quota = governor::Quota::per_minute(n);
        RefusalBudget {
            limiter: RateLimiter::dashmap_with_clock(quota, clock.clone()),
            clock,
            blocked: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one refusal of `client`; true when that was one too many (the client is now
    /// blocked).
    pub(crate) fn refused(&self, client: IpAddr) -> bool {
        let key = client_key(client, 64);
        match self.limiter.check_key(&key) {
            Ok(()) => false,
            Err(not_until) => {
                let until = not_until.earliest_possible();
                let mut b = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
                if b.len() >= MAX_KEYS {
                    let now = self.clock.now();
                    b.retain(|_, t| *t > now);
                }
                if b.len() < MAX_KEYS {
                    b.insert(key, until);
                }
                true
            }
        }
    }

    /// Whether `client` is blocked now (its connections are refused at once).
    pub(crate) fn blocked(&self, client: IpAddr) -> bool {
        let key = client_key(client, 64);
        let now = self.clock.now();
        let mut b = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        match b.get(&key) {
            Some(t) if *t > now => true,
            Some(_) => {
                b.remove(&key);
                false
            }
            None => false,
        }
    }

    /// Forgets clients whose budget is full again.
    pub(crate) fn sweep(&self) {
        self.limiter.retain_recent();
        let now = self.clock.now();
        self.blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, t| *t > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    #[test]
    fn one_line_per_client_and_reason_per_interval() {
        let g = AuditGate::new();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert!(g.admit(Some(a), "zone_denied"));
        for _ in 0..1000 {
            assert!(!g.admit(Some(a), "zone_denied"));
        }
        assert!(g.admit(Some(a), "rate_limited"));
        assert!(g.admit(Some(b), "zone_denied"));
        // IPv6 clients count per /64.
        assert!(g.admit(Some("2001:db8::1".parse().unwrap()), "no_zone"));
        assert!(!g.admit(Some("2001:db8::2".parse().unwrap()), "no_zone"));
        assert_eq!(g.rotate(), (1001, 2));
        assert!(g.admit(Some(a), "zone_denied"));
    }

    #[test]
    fn a_client_over_its_refusal_budget_is_blocked_until_it_refills() {
        let clock = FakeRelativeClock::default();
        let budget = RefusalBudget::with_clock(60, clock.clone());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..60 {
            assert!(!budget.refused(a));
        }
        assert!(!budget.blocked(a));
        assert!(budget.refused(a));
        assert!(budget.blocked(a));
        assert!(!budget.blocked("10.0.0.2".parse().unwrap()));
        // One refusal a second refills.
        clock.advance(Duration::from_secs(1));
        assert!(!budget.blocked(a));
        assert!(!budget.refused(a));
    }
}
