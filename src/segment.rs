//! Watching the segment for an impostor: any host on a flat provisioning network can answer
//! ARP for 169.254.169.254 (or neighbour discovery for fe80::a9fe:a9fe) and serve booting
//! nodes its own user data. On each interface that holds a metadata address this listens,
//! on a packet socket (CAP_NET_RAW), for ARP replies, gratuitous ARP and probes claiming
//! the IPv4 addresses, and for neighbour advertisements and duplicate-address solicitations
//! claiming the IPv6 ones, from any MAC that is not this host's. Every two seconds it also
//! sends an ARP probe for its IPv4 addresses: an impostor that only answers the nodes would
//! otherwise never be heard here. A sighting is an audit line within a second, a metric and
//! a `/readyz` warning naming the MAC.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use macaddr::MacAddr6;
use nix::ifaddrs::getifaddrs;
use nix::sys::socket::{bind, recvfrom, send, LinkAddr, MsgFlags};
use socket2::{Domain, Protocol, SockFilter, Socket, Type};

use crate::identity::neighbour::mac_text;

/// Sightings older than this drop out of `/readyz`.
const REMEMBER: Duration = Duration::from_secs(600);
/// Time between two ARP probes of our own addresses.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// One interface to watch and the metadata addresses it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Watch {
    pub(crate) interface: String,
    ifindex: u32,
    mac: [u8; 6],
    v4: Vec<Ipv4Addr>,
    v6: Vec<Ipv6Addr>,
    link: LinkAddr,
}

/// A frame that claims one of our addresses from a MAC that is not ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Claim {
    pub(crate) address: IpAddr,
    pub(crate) mac: MacAddr6,
    /// `arp_reply`, `gratuitous_arp`, `arp_probe`, `neighbour_advertisement`,
    /// `duplicate_address_probe`.
    pub(crate) kind: &'static str,
}

struct Sighting {
    interface: String,
    kind: &'static str,
    last: SystemTime,
}

/// What the watchers saw, for `/readyz`, and the switch that stops them.
#[derive(Default)]
pub(crate) struct Guard {
    seen: Mutex<HashMap<(IpAddr, MacAddr6), Sighting>>,
    off: Mutex<Vec<String>>,
    stop: AtomicBool,
}

/// The interfaces holding the metadata addresses among `listen` (the wildcard and loopback
/// hold none), with their MACs, and every MAC of this host (none of them is an impostor).
pub(crate) fn plan(listen: &[IpAddr]) -> (Vec<Watch>, HashSet<[u8; 6]>) {
    let Ok(addrs) = getifaddrs() else {
        return (Vec::new(), HashSet::new());
    };
    let addrs: Vec<_> = addrs.collect();
    let links: HashMap<String, LinkAddr> = addrs
        .iter()
        .filter_map(|a| {
            Some((
                a.interface_name.clone(),
                *a.address.as_ref()?.as_link_addr()?,
            ))
        })
        .collect();
    let own: HashSet<[u8; 6]> = links.values().filter_map(LinkAddr::addr).collect();
    let mut watches: Vec<Watch> = Vec::new();
    for a in &addrs {
        let ip = a.address.as_ref().and_then(|s| {
            s.as_sockaddr_in()
                .map(|v4| IpAddr::V4(Ipv4Addr::from(v4.ip())))
                .or_else(|| s.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip())))
        });
        let (Some(ip), Some(link)) = (ip, links.get(&a.interface_name)) else {
            continue;
        };
        if !listen.contains(&ip) || ip.is_loopback() || link.addr().is_none() {
            continue;
        }
        let w = match watches.iter_mut().find(|w| w.interface == a.interface_name) {
            Some(w) => w,
            None => {
                watches.push(Watch {
                    interface: a.interface_name.clone(),
                    ifindex: link.ifindex() as u32,
                    mac: link.addr().unwrap_or_default(),
                    v4: Vec::new(),
                    v6: Vec::new(),
                    link: *link,
                });
                watches.last_mut().expect("just pushed")
            }
        };
        match ip {
            IpAddr::V4(v4) => w.v4.push(v4),
            IpAddr::V6(v6) => w.v6.push(v6),
        }
    }
    (watches, own)
}

impl Guard {
    /// Starts one watcher thread per interface; a watcher that cannot open its socket
    /// (no CAP_NET_RAW) says so in the log and in `/readyz`.
    pub(crate) fn start(
        self: &Arc<Self>,
        watches: Vec<Watch>,
        own: HashSet<[u8; 6]>,
        on_claim: Arc<dyn Fn(&Claim) + Send + Sync>,
    ) {
        for w in watches {
            let guard = self.clone();
            let own = own.clone();
            let on_claim = on_claim.clone();
            let name = format!("segment-{}", w.interface);
            let spawned = std::thread::Builder::new().name(name).spawn(move || {
                if let Err(e) = guard.watch(&w, &own, &*on_claim) {
                    tracing::warn!(target: "segment", interface = %w.interface, error = %e,
                        "impostor detection is off on this interface (it needs CAP_NET_RAW)");
                    guard
                        .off
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(format!("impostor detection is off on {}: {e}", w.interface));
                }
            });
            if let Err(e) = spawned {
                tracing::warn!(target: "segment", error = %e, "cannot start an impostor watcher");
            }
        }
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Sightings of the last ten minutes, and interfaces not watched, in words.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let now = SystemTime::now();
        let mut out: Vec<String> = self
            .seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, s)| now.duration_since(s.last).unwrap_or_default() < REMEMBER)
            .map(|((ip, mac), s)| {
                format!(
                    "impostor: MAC {} claims {ip} on {} ({})",
                    mac_text(mac),
                    s.interface,
                    s.kind
                )
            })
            .collect();
        out.sort();
        out.extend(
            self.off
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        out
    }

    fn watch(
        &self,
        w: &Watch,
        own: &HashSet<[u8; 6]>,
        on_claim: &(dyn Fn(&Claim) + Send + Sync),
    ) -> std::io::Result<()> {
        // ETH_P_ALL in network order; the filter keeps incoming ARP, NS and NA only.
        let socket = Socket::new(
            Domain::PACKET,
            Type::RAW,
            Some(Protocol::from(i32::from(0x0003u16.to_be()))),
        )?;
        socket.attach_filter(&filter(w.ifindex))?;
        bind(socket.as_raw_fd(), &w.link)?;
        socket.set_read_timeout(Some(Duration::from_millis(250)))?;
        tracing::info!(target: "segment", interface = %w.interface, addresses = ?(&w.v4, &w.v6), "watching for impostors");
        let probe = (!w.v4.is_empty()).then(|| arp_probe(w.mac, w.v4[0]));
        let mut last_probe: Option<Instant> = None;
        let mut buf = [0u8; 2048];
        while !self.stop.load(Ordering::Relaxed) {
            if let Some(p) = &probe {
                if last_probe.is_none_or(|t| t.elapsed() >= PROBE_EVERY) {
                    let _ = send(socket.as_raw_fd(), p, MsgFlags::empty());
                    last_probe = Some(Instant::now());
                }
            }
            let n = match recvfrom::<LinkAddr>(socket.as_raw_fd(), &mut buf) {
                Ok((n, _)) => n,
                Err(
                    nix::errno::Errno::EAGAIN
                    | nix::errno::Errno::EINTR
                    | nix::errno::Errno::ENETDOWN,
                ) => continue,
                Err(e) => return Err(e.into()),
            };
            if let Some(claim) = inspect(&buf[..n], &w.v4, &w.v6, own) {
                self.record(&w.interface, &claim);
                on_claim(&claim);
            }
        }
        Ok(())
    }

    fn record(&self, interface: &str, claim: &Claim) {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() > 1024 {
            let now = SystemTime::now();
            seen.retain(|_, s| now.duration_since(s.last).unwrap_or_default() < REMEMBER);
        }
        if seen.len() <= 1024 {
            seen.insert(
                (claim.address, claim.mac),
                Sighting {
                    interface: interface.to_string(),
                    kind: claim.kind,
                    last: SystemTime::now(),
                },
            );
        }
    }
}

/// A broadcast ARP probe for `ip` (sender address 0.0.0.0, as duplicate address detection
/// sends it): whoever holds `ip` answers it.
fn arp_probe(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0, 0, 0, 0]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f
}

/// Classic BPF: drop what this host sends, keep frames of interface `ifindex` that are ARP,
/// or ICMPv6 neighbour solicitations and advertisements (no extension headers).
fn filter(ifindex: u32) -> Vec<SockFilter> {
    const LD_W_ABS: u16 = 0x20;
    const LD_H_ABS: u16 = 0x28;
    const LD_B_ABS: u16 = 0x30;
    const JEQ_K: u16 = 0x15;
    const RET_K: u16 = 0x06;
    const PKTTYPE: u32 = 0xffff_f004;
    const IFINDEX: u32 = 0xffff_f008;
    vec![
        SockFilter::new(LD_W_ABS, 0, 0, PKTTYPE),
        SockFilter::new(JEQ_K, 11, 0, 4), // PACKET_OUTGOING
        SockFilter::new(LD_W_ABS, 0, 0, IFINDEX),
        SockFilter::new(JEQ_K, 0, 9, ifindex),
        SockFilter::new(LD_H_ABS, 0, 0, 12),
        SockFilter::new(JEQ_K, 6, 0, 0x0806),
        SockFilter::new(JEQ_K, 0, 6, 0x86dd),
        SockFilter::new(LD_B_ABS, 0, 0, 20),
        SockFilter::new(JEQ_K, 0, 4, 58),
        SockFilter::new(LD_B_ABS, 0, 0, 54),
        SockFilter::new(JEQ_K, 1, 0, 136),
        SockFilter::new(JEQ_K, 0, 1, 135),
        SockFilter::new(RET_K, 0, 0, 2048),
        SockFilter::new(RET_K, 0, 0, 0),
    ]
}

/// The claim an Ethernet frame makes on one of our addresses from a MAC not ours, if any.
pub(crate) fn inspect(
    frame: &[u8],
    v4: &[Ipv4Addr],
    v6: &[Ipv6Addr],
    own: &HashSet<[u8; 6]>,
) -> Option<Claim> {
    let ethertype = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
    let claim = match ethertype {
        0x0806 => inspect_arp(frame.get(14..42)?, v4)?,
        0x86dd => inspect_ndp(frame, v6)?,
        _ => return None,
    };
    (!own.contains(&claim.mac.into_array())).then_some(claim)
}

fn inspect_arp(arp: &[u8], v4: &[Ipv4Addr]) -> Option<Claim> {
    // Ethernet and IPv4 only.
    if arp[0..6] != [0, 1, 0x08, 0, 6, 4] {
        return None;
    }
    let op = u16::from_be_bytes([arp[6], arp[7]]);
    let sha: [u8; 6] = arp[8..14].try_into().ok()?;
    let spa = Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]);
    let tpa = Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]);
    let (address, kind) = if v4.contains(&spa) {
        (
            spa,
            if op == 2 {
                "arp_reply"
            } else {
                "gratuitous_arp"
            },
        )
    } else if spa.is_unspecified() && v4.contains(&tpa) && op == 1 {
        (tpa, "arp_probe")
    } else {
        return None;
    };
    Some(Claim {
        address: IpAddr::V4(address),
        mac: MacAddr6::from(sha),
        kind,
    })
}

fn inspect_ndp(frame: &[u8], v6: &[Ipv6Addr]) -> Option<Claim> {
    if *frame.get(20)? != 58 {
        return None;
    }
    let src: [u8; 16] = frame.get(22..38)?.try_into().ok()?;
    let icmp = frame.get(54..)?;
    let target: [u8; 16] = icmp.get(8..24)?.try_into().ok()?;
    let target = Ipv6Addr::from(target);
    if !v6.contains(&target) {
        return None;
    }
    let eth_src: [u8; 6] = frame.get(6..12)?.try_into().ok()?;
    let (mac, kind) = match icmp[0] {
        136 => (
            target_link_layer(icmp.get(24..)?).unwrap_or(eth_src),
            "neighbour_advertisement",
        ),
        135 if Ipv6Addr::from(src).is_unspecified() => (eth_src, "duplicate_address_probe"),
        _ => return None,
    };
    Some(Claim {
        address: IpAddr::V6(target),
        mac: MacAddr6::from(mac),
        kind,
    })
}

/// The target link-layer address option (type 2) of a neighbour advertisement.
fn target_link_layer(mut options: &[u8]) -> Option<[u8; 6]> {
    while options.len() >= 8 {
        let len = usize::from(options[1]) * 8;
        if len == 0 || len > options.len() {
            return None;
        }
        if options[0] == 2 {
            return options[2..8].try_into().ok();
        }
        options = &options[len..];
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const THEM: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x66];
    const MD: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

    fn arp(op: u16, sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&sha);
        f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
        f.extend_from_slice(&op.to_be_bytes());
        f.extend_from_slice(&sha);
        f.extend_from_slice(&spa.octets());
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa.octets());
        f
    }

    fn own() -> HashSet<[u8; 6]> {
        [US].into_iter().collect()
    }

    fn kind(frame: &[u8]) -> Option<&'static str> {
        let v6 = ["fe80::a9fe:a9fe".parse().unwrap()];
        inspect(frame, &[MD], &v6, &own()).map(|c| c.kind)
    }

    #[test]
    fn arp_claims_on_our_address_from_another_mac() {
        // arping -U: a request with our address as sender and target.
        assert_eq!(kind(&arp(1, THEM, MD, MD)), Some("gratuitous_arp"));
        // arping -A, or an answer to our probe.
        assert_eq!(
            kind(&arp(2, THEM, MD, Ipv4Addr::UNSPECIFIED)),
            Some("arp_reply")
        );
        // Someone probing for our address.
        assert_eq!(
            kind(&arp(1, THEM, Ipv4Addr::UNSPECIFIED, MD)),
            Some("arp_probe")
        );
        // Ours, another address, or an ordinary question for ours: nothing.
        assert_eq!(kind(&arp(2, US, MD, MD)), None);
        assert_eq!(kind(&arp(2, THEM, Ipv4Addr::new(10, 0, 0, 1), MD)), None);
        assert_eq!(kind(&arp(1, THEM, Ipv4Addr::new(10, 0, 0, 7), MD)), None);
        // Truncated frames.
        assert_eq!(kind(&arp(2, THEM, MD, MD)[..30]), None);
        // The probe we send is one: an impostor answers it.
        let probe = arp_probe(US, MD);
        assert_eq!(probe.len(), 42);
        assert_eq!(
            inspect(&probe, &[MD], &[], &HashSet::new()).map(|c| c.kind),
            Some("arp_probe")
        );
    }

    fn icmp6(kind: u8, src: Ipv6Addr, target: Ipv6Addr, tlla: Option<[u8; 6]>) -> Vec<u8> {
        let mut f = vec![0x33, 0x33, 0, 0, 0, 1];
        f.extend_from_slice(&THEM);
        f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 32, 58, 255]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1).octets());
        f.extend_from_slice(&[kind, 0, 0, 0, 0x20, 0, 0, 0]);
        f.extend_from_slice(&target.octets());
        if let Some(mac) = tlla {
            f.extend_from_slice(&[2, 1]);
            f.extend_from_slice(&mac);
        }
        f
    }

    #[test]
    fn neighbour_discovery_claims_on_our_address() {
        let md6: Ipv6Addr = "fe80::a9fe:a9fe".parse().unwrap();
        let other: Ipv6Addr = "fe80::66".parse().unwrap();
        let mac = |frame: &[u8]| inspect(frame, &[], &[md6], &own()).map(|c| (c.kind, c.mac));
        assert_eq!(
            mac(&icmp6(136, other, md6, Some(THEM))),
            Some(("neighbour_advertisement", MacAddr6::from(THEM)))
        );
        // The advertised MAC is ours: our own answer, relayed or looped.
        assert_eq!(mac(&icmp6(136, other, md6, Some(US))), None);
        assert_eq!(
            mac(&icmp6(135, Ipv6Addr::UNSPECIFIED, md6, None)),
            Some(("duplicate_address_probe", MacAddr6::from(THEM)))
        );
        // An ordinary solicitation for our address, or another target: nothing.
        assert_eq!(mac(&icmp6(135, other, md6, None)), None);
        assert_eq!(mac(&icmp6(136, other, other, Some(THEM))), None);
    }
}
