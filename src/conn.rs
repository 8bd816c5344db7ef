//! Connection-level limits: how many connections the metadata listener holds at once, in
//! total and per client address. Checked when a connection is accepted, before a byte of
//! it is parsed; the count drops when the connection closes (the guard is dropped).
//!
//! A client is counted under the same key as the rate limiter counts it (an IPv6 client
//! under its zone's prefix, a /64 by default): one host can take any number of addresses
//! from its prefix.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::reply::Refusal;

#[derive(Debug)]
pub(crate) struct ConnLimits {
    max_total: usize,
    max_per_client: usize,
    total: AtomicUsize,
    per_client: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection; dropping it gives the slot back.
#[derive(Debug)]
pub(crate) struct ConnGuard {
    limits: Arc<ConnLimits>,
    /// `None` for clients exempt from the per-client cap (trusted proxies).
    key: Option<IpAddr>,
}

impl ConnLimits {
    pub(crate) fn new(max_total: usize, max_per_client: usize) -> Arc<ConnLimits> {
        Arc::new(ConnLimits {
            max_total,
            max_per_client,
            total: AtomicUsize::new(0),
            per_client: Mutex::new(HashMap::new()),
        })
    }

    /// Take a slot for a connection from the client counted under `key`. `None` is a
    /// trusted proxy, which carries many clients' connections: only the total cap applies.
    pub(crate) fn acquire(self: &Arc<Self>, key: Option<IpAddr>) -> Result<ConnGuard, Refusal> {
        let taken = self
            .total
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_total).then_some(n + 1)
            });
        if taken.is_err() {
            return Err(Refusal::TotalConnections);
        }
        let key = match key {
            None => None,
            Some(key) => {
                let mut map = self.per_client.lock().unwrap_or_else(|e| e.into_inner());
                let held = map.entry(key).or_insert(0);
                if *held >= self.max_per_client {
                    if *held == 0 {
                        map.remove(&key);
                    }
                    drop(map);
                    self.total.fetch_sub(1, Ordering::AcqRel);
                    return Err(Refusal::ClientConnections);
                }
                *held += 1;
                Some(key)
            }
        };
        Ok(ConnGuard {
            limits: self.clone(),
            key,
        })
    }

    /// Connections open now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Client addresses (or /64s) holding at least one connection.
    #[cfg(test)]
    fn clients(&self) -> usize {
        self.per_client
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            let mut map = self
                .limits
                .per_client
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if let Some(held) = map.get_mut(&key) {
                *held -= 1;
                if *held == 0 {
                    map.remove(&key);
                }
            }
        }
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Option<IpAddr> {
        Some(crate::policy::limiter::client_key(s.parse().unwrap(), 64))
    }

    #[test]
    fn per_client_cap_counts_each_address_and_frees_on_drop() {
        let limits = ConnLimits::new(100, 2);
        let a1 = limits.acquire(ip("10.0.0.1")).unwrap();
        let _a2 = limits.acquire(ip("10.0.0.1")).unwrap();
        assert_eq!(
            limits.acquire(ip("10.0.0.1")).unwrap_err(),
            Refusal::ClientConnections
        );
        // Another client is not affected, and the refused attempt left no slot taken.
        let _b = limits.acquire(ip("10.0.0.2")).unwrap();
        assert_eq!(limits.open(), 3);
        drop(a1);
        assert_eq!(limits.open(), 2);
        let _a3 = limits.acquire(ip("10.0.0.1")).unwrap();
    }

    #[test]
    fn ipv6_clients_count_per_prefix() {
        let limits = ConnLimits::new(100, 1);
        let _a = limits.acquire(ip("2001:db8:1:2::10")).unwrap();
        assert_eq!(
            limits.acquire(ip("2001:db8:1:2::99")).unwrap_err(),
            Refusal::ClientConnections
        );
        let _b = limits.acquire(ip("2001:db8:1:3::10")).unwrap();
    }

    #[test]
    fn total_cap_applies_to_exempt_clients_too() {
        let limits = ConnLimits::new(2, 1);
        let _p1 = limits.acquire(None).unwrap();
        let _p2 = limits.acquire(None).unwrap();
        assert_eq!(limits.acquire(None).unwrap_err(), Refusal::TotalConnections);
        assert_eq!(
            limits.acquire(ip("10.0.0.1")).unwrap_err(),
            Refusal::TotalConnections
        );
        assert_eq!(limits.open(), 2);
        assert_eq!(limits.clients(), 0);
    }

    #[test]
    fn map_is_empty_once_every_connection_closed() {
        let limits = ConnLimits::new(10_000, 4);
        let guards: Vec<_> = (0..1000u32)
            .map(|i| {
                limits
                    .acquire(Some(IpAddr::from(std::net::Ipv4Addr::from(
                        0x0a00_0000 + i,
                    ))))
                    .unwrap()
            })
            .collect();
        assert_eq!(limits.clients(), 1000);
        drop(guards);
        assert_eq!(limits.clients(), 0);
        assert_eq!(limits.open(), 0);
    }
}
