//! Who is on the link. For a client address this asks the kernel two exact questions over
//! rtnetlink: the route it would use to reach the client, and, when that route is on a link
//! of this host, the link-layer (MAC) address its neighbour table holds for the client. No
//! table dumps and no external commands: two small messages per lookup.
//!
//! A MAC is only evidence for a client on the same segment as this host. Behind a router the
//! neighbour table holds the router's MAC, so a routed client reads as [`L2::Routed`], never
//! as a MAC.

use std::io;
use std::net::{IpAddr, Ipv6Addr};

use macaddr::MacAddr6;
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// What the link layer says about a client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum L2 {
    /// On a link of this host; the neighbour table maps the address to this MAC.
    Mac(MacAddr6),
    /// Reached through this gateway: the MAC seen is the router's, not the client's.
    Routed(IpAddr),
    /// An address of this host itself (loopback or local).
    Local,
    /// On a link of this host, with no usable neighbour entry (none, incomplete or failed).
    NoEntry,
    /// An IPv6 link-local address: without its interface it may name a host on any link.
    LinkLocal,
    /// The kernel has no usable route to the address (unreachable, blackhole, ...).
    NoRoute,
}

impl L2 {
    /// Why this is not a MAC, for logs.
    pub(crate) fn describe(&self) -> String {
        match self {
            L2::Mac(m) => format!("neighbour MAC {}", mac_text(m)),
            L2::Routed(gw) => format!("routed via {gw}, not on a link of this host"),
            L2::Local => "an address of this host".into(),
            L2::NoEntry => "no neighbour entry with a link-layer address".into(),
            L2::LinkLocal => "IPv6 link-local address (ambiguous without its interface)".into(),
            L2::NoRoute => "no route to the address".into(),
        }
    }
}

/// MACs as Ironic writes them: lower case, colon-separated.
pub(crate) fn mac_text(m: &MacAddr6) -> String {
    m.to_string().to_ascii_lowercase()
}

/// The index of a network interface of this host, by name or as a number.
pub(crate) fn interface_index(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let bad = || format!("no network interface named {name:?} on this host");
    if name.contains('/') || name == "." || name == ".." {
        return Err(bad());
    }
    let text =
        std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex")).map_err(|_| bad())?;
    text.trim().parse().map_err(|_| bad())
}

/// Looks up the link-layer facts of a client address.
pub(crate) trait Neighbours: Send + Sync {
    fn resolve(&self, ip: IpAddr) -> io::Result<L2>;

    /// The neighbour entry of an IPv6 link-local address on interface `ifindex` (the
    /// interface the client asked on); no route is involved.
    fn resolve_scoped(&self, ip: Ipv6Addr, ifindex: u32) -> io::Result<L2>;
}

/// The kernel's tables, over rtnetlink, in this process's network namespace.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Netlink;

impl Neighbours for Netlink {
    fn resolve(&self, ip: IpAddr) -> io::Result<L2> {
        let ip = ip.to_canonical();
        if let IpAddr::V6(v6) = ip {
            if v6.is_unicast_link_local() {
                return Ok(L2::LinkLocal);
            }
        }
        with_socket(|socket| resolve_on(socket, ip))
    }

    fn resolve_scoped(&self, ip: Ipv6Addr, ifindex: u32) -> io::Result<L2> {
        if ifindex == 0 {
            return Ok(L2::LinkLocal);
        }
        with_socket(|socket| neighbour_on(socket, IpAddr::V6(ip), ifindex))
    }
}

thread_local! {
    /// One rtnetlink socket per thread, opened on first use and reopened after an error.
    static ASKER: std::cell::RefCell<Option<Asker>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with this thread's socket.
fn with_socket<T>(f: impl FnOnce(&mut Asker) -> io::Result<T>) -> io::Result<T> {
    ASKER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let mut asker = match slot.take() {
            Some(a) => a,
            None => Asker {
                socket: open()?,
                seq: 0,
                buf: vec![0; 8192],
            },
        };
        let result = f(&mut asker);
        // A socket that saw an error may still hold a late answer: it is dropped, not reused.
        if result.is_ok() {
            *slot = Some(asker);
        }
        result
    })
}

/// A socket, the sequence number of its last request (answers to earlier ones are
/// skipped) and the buffer requests and answers pass through.
struct Asker {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Asker {
    /// Sends one request and returns its answer; `None` when the kernel says there is none.
    fn ask(&mut self, msg: RouteNetlinkMessage) -> io::Result<Option<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = self.seq;
        let mut req = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        req.finalize();
        let request = &mut self.buf[..req.header.length as usize];
        req.serialize(request);
        self.socket.send(request, 0)?;
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if reply.header.sequence_number != self.seq {
                continue;
            }
            return match reply.payload {
                NetlinkPayload::InnerMessage(m) => Ok(Some(m)),
                NetlinkPayload::Error(e) if e.code.is_none() => Ok(None),
                NetlinkPayload::Error(e) => {
                    let err = e.to_io();
                    // No such entry, or no route at all (unreachable, no device).
                    match err.raw_os_error() {
                        Some(
                            libc::ENOENT | libc::ENODEV | libc::ENETUNREACH | libc::EHOSTUNREACH,
                        ) => Ok(None),
                        _ => Err(err),
                    }
                }
                NetlinkPayload::Done(_) => Ok(None),
                _ => Err(unexpected()),
            };
        }
    }
}

/// The route to `ip`, then, when it is on-link, the neighbour entry on its interface.
fn resolve_on(socket: &mut Asker, ip: IpAddr) -> io::Result<L2> {
    let route = match socket.ask(route_request(ip))? {
        Some(RouteNetlinkMessage::NewRoute(r)) => r,
        Some(_) => return Err(unexpected()),
        None => return Ok(L2::NoRoute),
    };
    match route.header.kind {
        RouteType::Unicast => {}
        RouteType::Local => return Ok(L2::Local),
        _ => return Ok(L2::NoRoute),
    }
    let mut oif = None;
    for attr in &route.attributes {
        match attr {
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Gateway(RouteAddress::Inet(g)) => {
                return Ok(L2::Routed(IpAddr::V4(*g)))
            }
            RouteAttribute::Gateway(RouteAddress::Inet6(g)) => {
                return Ok(L2::Routed(IpAddr::V6(*g)))
            }
            RouteAttribute::Via(_) | RouteAttribute::MultiPath(_) => {
                return Ok(L2::Routed(ip));
            }
            _ => {}
        }
    }
    let Some(oif) = oif else {
        return Ok(L2::NoRoute);
    };
    neighbour_on(socket, ip, oif)
}

/// The neighbour entry of `ip` on interface `oif`.
fn neighbour_on(socket: &mut Asker, ip: IpAddr, oif: u32) -> io::Result<L2> {
    let neigh = match socket.ask(neighbour_request(ip, oif))? {
        Some(RouteNetlinkMessage::NewNeighbour(n)) => n,
        Some(_) => return Err(unexpected()),
        None => return Ok(L2::NoEntry),
    };
    Ok(from_neighbour(&neigh))
}

/// One connection's answer, kept for its later requests.
#[derive(Debug, Default)]
pub(crate) struct ConnectionMemo(std::sync::Mutex<Option<(IpAddr, MacAddr6)>>);

/// Asks `inner` once per connection: a MAC found for the connection's client is reused for
/// the client's later requests on it (the TCP handshake tied the connection to the host that
/// MAC belongs to). Anything but a MAC is asked again.
pub(crate) struct Remembered<'a> {
    pub(crate) inner: &'a dyn Neighbours,
    pub(crate) memo: &'a ConnectionMemo,
}

impl Remembered<'_> {
    fn remembered(&self, ip: IpAddr, ask: impl FnOnce() -> io::Result<L2>) -> io::Result<L2> {
        let mut memo = self.memo.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((known, mac)) = *memo {
            if known == ip {
                return Ok(L2::Mac(mac));
            }
        }
        let answer = ask()?;
        if let L2::Mac(mac) = answer {
            *memo = Some((ip, mac));
        }
        Ok(answer)
    }
}

impl Neighbours for Remembered<'_> {
    fn resolve(&self, ip: IpAddr) -> io::Result<L2> {
        let ip = ip.to_canonical();
        self.remembered(ip, || self.inner.resolve(ip))
    }

    /// A connection arrives on one interface: the memo holds for it as for any address.
    fn resolve_scoped(&self, ip: Ipv6Addr, ifindex: u32) -> io::Result<L2> {
        self.remembered(IpAddr::V6(ip), || self.inner.resolve_scoped(ip, ifindex))
    }
}

/// A fixed table, for tests.
#[cfg(test)]
#[derive(Debug, Default, Clone)]
pub(crate) struct Fixed(pub(crate) std::collections::HashMap<IpAddr, L2>);

#[cfg(test)]
impl Neighbours for Fixed {
    fn resolve(&self, ip: IpAddr) -> io::Result<L2> {
        Ok(self
            .0
            .get(&ip.to_canonical())
            .cloned()
            .unwrap_or(L2::NoEntry))
    }

    fn resolve_scoped(&self, ip: Ipv6Addr, _ifindex: u32) -> io::Result<L2> {
        self.resolve(IpAddr::V6(ip))
    }
}

fn from_neighbour(n: &NeighbourMessage) -> L2 {
    // Entries being resolved or that failed to resolve carry no address worth believing;
    // NOARP entries (loopback, point-to-point) carry a placeholder.
    match n.header.state {
        NeighbourState::Reachable
        | NeighbourState::Stale
        | NeighbourState::Delay
        | NeighbourState::Probe
        | NeighbourState::Permanent => {}
        _ => return L2::NoEntry,
    }
    n.attributes
        .iter()
        .find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(b) => <[u8; 6]>::try_from(b.as_slice()).ok(),
            _ => None,
        })
        .map(MacAddr6::from)
        .filter(|m| !m.is_nil() && !m.is_broadcast() && !m.is_multicast())
        .map_or(L2::NoEntry, L2::Mac)
}

fn open() -> io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

fn family(ip: IpAddr) -> AddressFamily {
    if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    }
}

fn route_request(ip: IpAddr) -> RouteNetlinkMessage {
    let mut m = RouteMessage::default();
    m.header.address_family = family(ip);
    m.header.destination_prefix_length = if ip.is_ipv4() { 32 } else { 128 };
    m.attributes
        .push(RouteAttribute::Destination(RouteAddress::from(ip)));
    RouteNetlinkMessage::GetRoute(m)
}

fn neighbour_request(ip: IpAddr, ifindex: u32) -> RouteNetlinkMessage {
    let mut m = NeighbourMessage::default();
    m.header.family = family(ip);
    m.header.ifindex = ifindex;
    let dst = match ip {
        IpAddr::V4(a) => NeighbourAddress::Inet(a),
        IpAddr::V6(a) => NeighbourAddress::Inet6(a),
    };
    m.attributes.push(NeighbourAttribute::Destination(dst));
    RouteNetlinkMessage::GetNeighbour(m)
}

fn unexpected() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "unexpected netlink answer")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts the questions it is asked.
    struct Counting(std::sync::atomic::AtomicUsize, Fixed);
    impl Neighbours for Counting {
        fn resolve(&self, ip: IpAddr) -> io::Result<L2> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.1.resolve(ip)
        }

        fn resolve_scoped(&self, ip: Ipv6Addr, ifindex: u32) -> io::Result<L2> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.1.resolve_scoped(ip, ifindex)
        }
    }

    #[test]
    fn a_connection_asks_once_for_its_mac() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mac = L2::Mac(MacAddr6::new(0x52, 0x54, 0, 0, 0, 1));
        let table = Fixed([(a, mac.clone())].into_iter().collect());
        let counting = Counting(Default::default(), table);
        let memo = ConnectionMemo::default();
        let r = Remembered {
            inner: &counting,
            memo: &memo,
        };
        let asked = || counting.0.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(r.resolve(a).unwrap(), mac);
        assert_eq!(r.resolve(a).unwrap(), mac);
        assert_eq!(asked(), 1);
        // Another address, or no MAC: asked every time.
        assert_eq!(r.resolve(b).unwrap(), L2::NoEntry);
        assert_eq!(r.resolve(b).unwrap(), L2::NoEntry);
        assert_eq!(asked(), 3);
    }

    #[test]
    fn loopback_is_local_not_a_mac() {
        assert_eq!(
            Netlink.resolve("127.0.0.1".parse().unwrap()).unwrap(),
            L2::Local
        );
        assert_eq!(
            Netlink
                .resolve("::ffff:127.0.0.1".parse().unwrap())
                .unwrap(),
            L2::Local
        );
    }

    #[test]
    fn ipv6_link_local_is_ambiguous() {
        assert_eq!(
            Netlink.resolve("fe80::1".parse().unwrap()).unwrap(),
            L2::LinkLocal
        );
    }

    #[test]
    fn states_without_a_usable_address_are_no_entry() {
        let mac = [0x52, 0x54, 0, 0x77, 0, 0x11];
        let entry = |state, lladdr: &[u8]| {
            let mut m = NeighbourMessage::default();
            m.header.state = state;
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(lladdr.to_vec()));
            from_neighbour(&m)
        };
        assert_eq!(
            entry(NeighbourState::Stale, &mac),
            L2::Mac(MacAddr6::from(mac))
        );
        assert_eq!(entry(NeighbourState::Incomplete, &mac), L2::NoEntry);
        assert_eq!(entry(NeighbourState::Failed, &mac), L2::NoEntry);
        assert_eq!(entry(NeighbourState::Noarp, &[0; 6]), L2::NoEntry);
        assert_eq!(entry(NeighbourState::Reachable, &[0; 6]), L2::NoEntry);
        assert_eq!(entry(NeighbourState::Reachable, &mac[..4]), L2::NoEntry);
    }
}
