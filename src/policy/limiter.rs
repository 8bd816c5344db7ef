//! Per-client rate limiting: governor's keyed GCRA, generic over its clock so tests move
//! time by hand. IPv6 clients are keyed by prefix (a /64 is one client by default), so one
//! host cannot escape its limit by rotating addresses inside its subnet.
//!
//! Every limiter of the service is timed by the OS monotonic clock, never by governor's
//! default TSC clock (`quanta`): that one is calibrated once at start and, on a virtual
//! machine under load, can run fast (a flood passes) or jump back (a quiet client is refused).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::RateLimiter;
use ipnet::IpNet;

use super::Quota;

pub(crate) struct ZoneLimiter<C: Clock = MonotonicClock> {
    limiter: RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
    ipv6_prefix: u8,
}

fn governor_quota(q: Quota) -> governor::Quota {
    let period = Duration::from_secs_f64(1.0 / q.per_second);
    let burst = NonZeroU32::new(q.burst.max(1)).expect("burst is at least 1");
    governor::Quota::with_period(period)
        .expect("validated rate gives a non-zero period")
        .allow_burst(burst)
}

/// The address a client is counted under: itself for IPv4 (and IPv4-mapped IPv6), its
/// prefix of `ipv6_prefix` bits for IPv6; an IPv6 link-local client by its whole address,
/// as [`scoped`] folds its interface in (`fe80::/64` is every link's).
pub(crate) fn client_key(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        v4 @ IpAddr::V4(_) => v4,
        IpAddr::V6(v6) if v6.is_unicast_link_local() => IpAddr::V6(v6),
        v6 => IpNet::new(v6, ipv6_prefix)
            .map(|n| n.trunc().addr())
            .unwrap_or(v6),
    }
}

/// A link-local client's address with the index of the interface it asked on written into
/// bits 32 to 63, which the link-local prefix leaves zero: one key per (interface, address).
/// Any other address is itself.
pub(crate) fn scoped(ip: IpAddr, scope: u32) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) if v6.is_unicast_link_local() => {
            let mut seg = v6.segments();
            seg[2] = (scope >> 16) as u16;
            seg[3] = scope as u16;
            IpAddr::V6(seg.into())
        }
        other => other,
    }
}

impl ZoneLimiter<MonotonicClock> {
    pub(crate) fn new(quota: Quota, ipv6_prefix: u8) -> Self {
        ZoneLimiter::with_clock(quota, ipv6_prefix, MonotonicClock)
    }
}

impl<C: Clock + Clone> ZoneLimiter<C> {
    pub(crate) fn with_clock(quota: Quota, ipv6_prefix: u8, clock: C) -> Self {
        ZoneLimiter {
            limiter: RateLimiter::dashmap_with_clock(governor_quota(quota), clock.clone()),
            clock,
            ipv6_prefix,
        }
    }

    fn key(&self, ip: IpAddr) -> IpAddr {
        client_key(ip, self.ipv6_prefix)
    }

    /// Ok, or how long until this client may ask again.
    pub(crate) fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        self.limiter
            .check_key(&self.key(ip))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forget clients whose bucket is full again (they would be allowed a full burst anyway).
    pub(crate) fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Clients currently tracked.
    pub(crate) fn len(&self) -> usize {
        self.limiter.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limiter(per_second: f64, burst: u32) -> (ZoneLimiter<FakeRelativeClock>, FakeRelativeClock) {
        let clock = FakeRelativeClock::default();
        (
            ZoneLimiter::with_clock(Quota { per_second, burst }, 64, clock.clone()),
            clock,
        )
    }

    #[test]
    fn exact_counts_under_a_fake_clock() {
        let (l, clock) = limiter(2.0, 5);
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..5 {
            assert_eq!(l.check(ip), Ok(()));
        }
        assert_eq!(l.check(ip), Err(Duration::from_millis(500)));
        clock.advance(Duration::from_millis(499));
        assert_eq!(l.check(ip), Err(Duration::from_millis(1)));
        clock.advance(Duration::from_millis(1));
        assert_eq!(l.check(ip), Ok(()));
        assert!(l.check(ip).is_err());
        // Another client has its own bucket.
        assert_eq!(l.check("192.0.2.2".parse().unwrap()), Ok(()));
    }

    #[test]
    fn an_ipv6_64_is_one_client() {
        let (l, _) = limiter(1.0, 2);
        assert!(l.check("2001:db8::1".parse().unwrap()).is_ok());
        assert!(l.check("2001:db8::ffff:2".parse().unwrap()).is_ok());
        assert!(l.check("2001:db8::3".parse().unwrap()).is_err());
        assert!(l.check("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }

    #[test]
    fn a_link_local_client_is_its_address_on_its_interface() {
        let (l, _) = limiter(1.0, 1);
        let ll: IpAddr = "fe80::1".parse().unwrap();
        assert!(l.check(scoped(ll, 2)).is_ok());
        assert!(l.check(scoped(ll, 2)).is_err());
        // The same address on another interface, and another address on the same one.
        assert!(l.check(scoped(ll, 3)).is_ok());
        assert!(l.check(scoped("fe80::2".parse().unwrap(), 2)).is_ok());
        // Other addresses are not changed.
        let g: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(scoped(g, 2), g);
    }

    #[test]
    fn memory_is_bounded_after_a_million_addresses() {
        let (l, clock) = limiter(10.0, 20);
        for i in 0..1_000_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert!(l.check(ip).is_ok());
        }
        assert_eq!(l.len(), 1_000_000);
        // Once every bucket is full again (burst / rate = 2 s), a sweep forgets them all.
        clock.advance(Duration::from_secs(2));
        l.sweep();
        assert_eq!(l.len(), 0);
    }
}
