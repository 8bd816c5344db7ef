//! Forwarded-header chains (`X-Forwarded-For`, RFC 7239 `Forwarded`) and the walk that
//! finds the real client behind trusted proxies. Only called when the TCP peer itself is a
//! trusted proxy: a header from anyone else is never read.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ForwardedError {
    #[error("malformed forwarded header entry {0:?}")]
    Malformed(String),
    #[error("forwarded chain of {0} hops is longer than allowed")]
    TooManyHops(usize),
}

/// One address of a chain element: a bare address, `v4:port`, `[v6]` or `[v6]:port`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    let s = raw.trim().trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Ok(sa) = s.parse::<SocketAddr>() {
        return Some(sa.ip().to_canonical());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
}

/// All `X-Forwarded-For` values in order (several header lines join like one list).
pub(crate) fn parse_xff(values: &[&str], max_hops: usize) -> Result<Vec<IpAddr>, ForwardedError> {
    let mut out = Vec::new();
    for v in values {
        for entry in v.split(',') {
            if out.len() >= max_hops {
                return Err(ForwardedError::TooManyHops(out.len() + 1));
            }
            out.push(parse_node(entry).ok_or_else(|| ForwardedError::Malformed(truncate(entry)))?);
        }
    }
    Ok(out)
}

/// The `for=` addresses of all `Forwarded` values in order. `unknown` and obfuscated
/// identifiers cannot be matched to a node, so they are malformed here.
pub(crate) fn parse_forwarded(
    values: &[&str],
    max_hops: usize,
) -> Result<Vec<IpAddr>, ForwardedError> {
    let mut out = Vec::new();
    for v in values {
        for element in v.split(',') {
            if out.len() >= max_hops {
                return Err(ForwardedError::TooManyHops(out.len() + 1));
            }
            let mut found = None;
            for pair in element.split(';') {
                let Some((k, val)) = pair.split_once('=') else {
                    return Err(ForwardedError::Malformed(truncate(element)));
                };
                if k.trim().eq_ignore_ascii_case("for") {
                    found = Some(
                        parse_node(val)
                            .ok_or_else(|| ForwardedError::Malformed(truncate(element)))?,
                    );
                }
            }
            out.push(found.ok_or_else(|| ForwardedError::Malformed(truncate(element)))?);
        }
    }
    Ok(out)
}

/// Walk `chain` right to left, skipping trusted hops: the first untrusted address is the
/// client. When every hop is trusted the leftmost one is the client.
pub(crate) fn client_from_chain(peer: IpAddr, chain: &[IpAddr], trusted: &[IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|n| n.contains(ip));
    match chain.iter().rev().find(|ip| !is_trusted(ip)) {
        Some(ip) => *ip,
        None => chain.first().copied().unwrap_or(peer),
    }
}

fn truncate(s: &str) -> String {
    s.trim().chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn xff_forms() {
        assert_eq!(
            parse_xff(&["192.0.2.1, 10.0.0.1"], 8).unwrap(),
            vec![ip("192.0.2.1"), ip("10.0.0.1")]
        );
        assert_eq!(
            parse_xff(&["192.0.2.1:5555", "[2001:db8::1]:80,[2001:db8::2]"], 8).unwrap(),
            vec![ip("192.0.2.1"), ip("2001:db8::1"), ip("2001:db8::2")]
        );
        assert_eq!(
            parse_xff(&["192.0.2.1, nonsense"], 8),
            Err(ForwardedError::Malformed("nonsense".into()))
        );
        assert_eq!(
            parse_xff(&[""], 8),
            Err(ForwardedError::Malformed("".into()))
        );
        assert_eq!(
            parse_xff(&["1.1.1.1,1.1.1.2,1.1.1.3"], 2),
            Err(ForwardedError::TooManyHops(3))
        );
    }

    #[test]
    fn forwarded_forms() {
        assert_eq!(
            parse_forwarded(
                &[
                    "for=192.0.2.60;proto=http;by=203.0.113.43",
                    "for=\"[2001:db8:cafe::17]:4711\""
                ],
                8
            )
            .unwrap(),
            vec![ip("192.0.2.60"), ip("2001:db8:cafe::17")]
        );
        assert!(parse_forwarded(&["for=unknown"], 8).is_err());
        assert!(parse_forwarded(&["proto=http"], 8).is_err());
        assert!(parse_forwarded(&["garbage"], 8).is_err());
    }

    #[test]
    fn walk_skips_trusted_hops_from_the_right() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let peer = ip("10.0.0.1");
        // A client forging an entry on the left cannot choose its address: the walk stops
        // at the first untrusted hop from the right.
        let chain = [ip("192.0.2.99"), ip("192.0.2.7"), ip("10.0.0.2")];
        assert_eq!(client_from_chain(peer, &chain, &trusted), ip("192.0.2.7"));
        assert_eq!(
            client_from_chain(peer, &[ip("10.0.0.3"), ip("10.0.0.2")], &trusted),
            ip("10.0.0.3")
        );
        assert_eq!(client_from_chain(peer, &[], &trusted), peer);
    }
}
