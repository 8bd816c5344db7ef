//! The policy engine: zones of CIDRs that allow or deny, rate-limit per client, name the
//! proxies whose forwarded headers are believed, require session tokens and restrict paths.
//! A [`Policy`] is immutable; reloads build a new one and swap it in one step.

pub(crate) mod file;
pub(crate) mod forwarded;
pub(crate) mod limiter;
pub(crate) mod store;
pub(crate) mod token;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use serde::Deserialize;

use crate::identity::{ProjectScopes, Sources};
use crate::versions;
use limiter::ZoneLimiter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Action {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum ForwardedHeader {
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=...`.
    Forwarded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum TokenMode {
    /// Tokens are checked when present (an invalid one is 401) but not needed.
    #[default]
    Optional,
    /// Every metadata GET needs a valid token.
    Required,
}

/// Requests per second and burst, per client address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Quota {
    pub(crate) per_second: f64,
    pub(crate) burst: u32,
}

impl Default for Quota {
    /// Enough for any boot (cloud-init reads a few dozen files), far below a flood.
    fn default() -> Self {
        Quota {
            per_second: 20.0,
            burst: 100,
        }
    }
}

/// A path prefix, matched against the parsed route rather than the request's spelling: the
/// EC2 tree with or without its `/ec2` prefix, a version by any of its names (`latest` is
/// the newest version). `*` matches any one segment (`/openstack/*/user_data` is that file
/// of every version; `/*/user-data` the EC2 user data of every version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PathRule {
    /// As written, for messages.
    text: String,
    /// `["openstack", version, file]` or `["ec2", version, ...]`, versions resolved.
    segments: Vec<String>,
}

impl PathRule {
    pub(crate) fn parse(s: &str) -> Result<PathRule, String> {
        if !s.starts_with('/') {
            return Err(format!("{s:?} must start with '/'"));
        }
        let mut segments: Vec<String> = s
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        if segments.iter().any(|p| p == "." || p == "..") {
            return Err(format!("{s:?} must not contain '.' or '..' segments"));
        }
        let tree = match segments.first().map(String::as_str) {
            None => {
                return Ok(PathRule {
                    text: s.into(),
                    segments,
                })
            }
            // The NoCloud tree has no versions.
            Some("nocloud") => {
                return Ok(PathRule {
                    text: s.into(),
                    segments,
                })
            }
            Some("openstack") => versions::OPENSTACK,
            Some("ec2") => versions::EC2,
            // The EC2 tree is also served at the root.
            Some(_) => {
                segments.insert(0, "ec2".into());
                versions::EC2
            }
        };
        if let Some(v) = segments.get_mut(1).filter(|v| *v != "*") {
            *v = versions::resolve(tree, v)
                .ok_or_else(|| {
                    format!("{s:?}: {v:?} is not a metadata version of its tree, nor latest or *")
                })?
                .to_string();
        }
        Ok(PathRule {
            text: s.into(),
            segments,
        })
    }

    pub(crate) fn matches(&self, route: &[&str]) -> bool {
        self.segments.len() <= route.len()
            && self
                .segments
                .iter()
                .zip(route)
                .all(|(rule, seg)| rule == "*" || rule == seg)
    }
}

impl std::fmt::Display for PathRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Zone {
    pub(crate) name: String,
    pub(crate) cidrs: Vec<IpNet>,
    pub(crate) action: Action,
    pub(crate) quota: Quota,
    /// IPv6 clients are limited per prefix of this length (one /64 is one client).
    pub(crate) ipv6_prefix: u8,
    pub(crate) trusted_proxies: Vec<IpNet>,
    pub(crate) forwarded_header: ForwardedHeader,
    pub(crate) max_hops: u8,
    pub(crate) tokens: TokenMode,
    pub(crate) paths: Vec<PathRule>,
    pub(crate) deny_paths: Vec<PathRule>,
    /// An on-link client's MAC (from the neighbour table) must be a port of its node.
    pub(crate) verify_mac: bool,
    /// A client whose address no node claims is identified by its MAC's Ironic port.
    pub(crate) identify_by_mac: bool,
    /// The claim sources that identify a client in this zone.
    pub(crate) sources: Sources,
    /// What a request must look like beyond its path.
    pub(crate) request: RequestRules,
    /// The signed identity tokens its nodes may have.
    pub(crate) identity: IdentityRules,
}

/// Which signed identity tokens the nodes of a zone may have.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct IdentityRules {
    /// Audiences a node may ask a token for, matched byte for byte; none: every audience
    /// is refused.
    pub(crate) audiences: Vec<String>,
    /// A token placed in every `vendor_data2.json` answer.
    pub(crate) vendor_data2: Option<VendorToken>,
}

/// The token `vendor_data2.json` carries: `{"<key>": {"jwt": "<token for audience>"}}`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct VendorToken {
    pub(crate) audience: String,
    pub(crate) key: String,
}

/// Per-zone defences of the metadata address, each against one attack.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RequestRules {
    /// Host names (lower case) or addresses accepted besides the metadata addresses and the
    /// listeners' own (DNS rebinding); `*` accepts any.
    pub(crate) hosts: Vec<String>,
    /// A header every request must carry, as GCE's `Metadata-Flavor: Google` (SSRF).
    pub(crate) required_header: Option<(http::HeaderName, String)>,
    /// A forwarded header from a peer that is not a trusted proxy is refused, not ignored.
    pub(crate) forwarded_refuse: bool,
    /// The IP TTL (IPv6 hop limit) of a token PUT's answer: containers behind NAT on a node
    /// get no token (AWS's `HttpPutResponseHopLimit`).
    pub(crate) token_hop_limit: Option<u8>,
}

/// One project's CIDRs: where its deployers' configdrives may claim addresses.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Project {
    pub(crate) id: String,
    pub(crate) cidrs: Vec<IpNet>,
}

/// What a set of policy files declares.
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicySet {
    pub(crate) zones: Vec<Zone>,
    pub(crate) projects: Vec<Project>,
}

impl Zone {
    pub(crate) fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|n| n.contains(&ip))
    }

    /// Whether the zone's path rules let `route` through (see [`PathRule`]).
    pub(crate) fn serves_route(&self, route: &[&str]) -> bool {
        self.paths.iter().any(|r| r.matches(route))
            && !self.deny_paths.iter().any(|r| r.matches(route))
    }
}

/// One zone with its limiter.
pub(crate) struct ActiveZone {
    pub(crate) zone: Zone,
    /// Shared name for logs and metric labels.
    pub(crate) label: Arc<str>,
    pub(crate) limiter: Arc<ZoneLimiter>,
}

/// A validated, indexed policy.
pub(crate) struct Policy {
    zones: Vec<ActiveZone>,
    projects: Vec<Project>,
    /// Per prefix length (longest first): network → zone index.
    by_prefix: Vec<(u8, bool, HashMap<IpNet, usize>)>,
}

impl Policy {
    /// Index `zones`, keeping the limiter state of zones whose limit did not change so a
    /// reload never hands a flooding client a fresh burst.
    pub(crate) fn build(set: PolicySet, previous: Option<&Policy>) -> Policy {
        let PolicySet { zones, projects } = set;
        let mut by_len: HashMap<(u8, bool), HashMap<IpNet, usize>> = HashMap::new();
        for (i, z) in zones.iter().enumerate() {
            for net in &z.cidrs {
                let v4 = matches!(net, IpNet::V4(_));
                by_len
                    .entry((net.prefix_len(), v4))
                    .or_default()
                    .insert(*net, i);
            }
        }
        let mut by_prefix: Vec<(u8, bool, HashMap<IpNet, usize>)> = by_len
            .into_iter()
            .map(|((len, v4), m)| (len, v4, m))
            .collect();
        by_prefix.sort_by_key(|p| std::cmp::Reverse(p.0));
        let zones = zones
            .into_iter()
            .map(|zone| {
                let reused = previous.and_then(|p| {
                    p.zones.iter().find(|a| {
                        a.zone.name == zone.name
                            && a.zone.quota == zone.quota
                            && a.zone.ipv6_prefix == zone.ipv6_prefix
                    })
                });
                let limiter = match reused {
                    Some(a) => a.limiter.clone(),
                    None => Arc::new(ZoneLimiter::new(zone.quota, zone.ipv6_prefix)),
                };
                ActiveZone {
                    label: Arc::from(zone.name.as_str()),
                    zone,
                    limiter,
                }
            })
            .collect();
        Policy {
            zones,
            projects,
            by_prefix,
        }
    }

    /// The zone whose most specific CIDR contains `ip`.
    pub(crate) fn zone_for(&self, ip: IpAddr) -> Option<&ActiveZone> {
        let ip = ip.to_canonical();
        let v4 = ip.is_ipv4();
        for (len, is_v4, nets) in &self.by_prefix {
            if *is_v4 != v4 {
                continue;
            }
            let Ok(net) = IpNet::new(ip, *len) else {
                continue;
            };
            if let Some(i) = nets.get(&net.trunc()) {
                return Some(&self.zones[*i]);
            }
        }
        None
    }

    /// The key a connection from `peer` is counted under for the per-client connection
    /// cap: `None` for a trusted proxy of its zone (it carries many clients), otherwise the
    /// address as its zone's rate limiter keys it (IPv6 by prefix; a /64 outside any zone).
    /// A link-local peer is counted per (interface `scope`, address).
    pub(crate) fn connection_key(&self, peer: IpAddr, scope: u32) -> Option<IpAddr> {
        let key = limiter::scoped(peer, scope);
        match self.zone_for(peer) {
            Some(z) if z.zone.trusts(peer) => None,
            Some(z) => Some(limiter::client_key(key, z.zone.ipv6_prefix)),
            None => Some(limiter::client_key(key, 64)),
        }
    }

    pub(crate) fn zones(&self) -> &[ActiveZone] {
        &self.zones
    }

    /// Drop limiter state of clients that are back at full burst; returns clients tracked.
    pub(crate) fn sweep_limiters(&self) -> usize {
        let mut seen = std::collections::HashSet::new();
        let mut total = 0;
        for z in &self.zones {
            if seen.insert(Arc::as_ptr(&z.limiter)) {
                z.limiter.sweep();
                total += z.limiter.len();
            }
        }
        total
    }

    /// Human-readable table of the effective zones, most specific CIDR first, then the
    /// projects' CIDRs.
    pub(crate) fn describe(&self) -> String {
        let mut rows: Vec<(u8, String)> = Vec::new();
        for z in &self.zones {
            let zone = &z.zone;
            let (action, extra) = match zone.action {
                Action::Deny => ("deny", String::new()),
                Action::Allow => ("allow", zone.summary()),
            };
            for net in &zone.cidrs {
                let row = format!(
                    "{:<24} {:<16} {action:<6} {extra}",
                    net.to_string(),
                    zone.name
                );
                rows.push((net.prefix_len(), row));
            }
        }
        rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut out = format!(
            "{:<24} {:<16} {:<5} {}\n",
            "CIDR", "ZONE", "ACTION", "LIMITS"
        );
        for (_, r) in rows {
            out.push_str(r.trim_end());
            out.push('\n');
        }
        out.push_str(&format!("{:<24} {:<16} deny\n", "any other address", "-"));
        for p in &self.projects {
            let cidrs: Vec<String> = p.cidrs.iter().map(|c| c.to_string()).collect();
            out.push_str(&format!(
                "project {:?}: configdrives may claim {}\n",
                p.id,
                cidrs.join(", ")
            ));
        }
        out
    }
}

impl Zone {
    /// The zone's limits and rules in one line, for `policy check`.
    pub(crate) fn summary(&self) -> String {
        let mut parts = vec![format!(
            "{}/s burst {}",
            self.quota.per_second, self.quota.burst
        )];
        if self.tokens == TokenMode::Required {
            parts.push("tokens required".into());
        }
        if self.identify_by_mac {
            parts.push("MAC verified, identifies".into());
        } else if self.verify_mac {
            parts.push("MAC verified".into());
        }
        if self.sources != Sources::ALL {
            parts.push(format!("identity from {}", self.sources.names().join(",")));
        }
        if !self.trusted_proxies.is_empty() {
            let proxies: Vec<String> = self.trusted_proxies.iter().map(|p| p.to_string()).collect();
            let header = match self.forwarded_header {
                ForwardedHeader::XForwardedFor => "X-Forwarded-For",
                ForwardedHeader::Forwarded => "Forwarded",
            };
            parts.push(format!("trusts {} via {header}", proxies.join(",")));
        }
        let paths: Vec<String> = self.paths.iter().map(|p| p.to_string()).collect();
        if paths != ["/"] {
            parts.push(format!("paths {}", paths.join(",")));
        }
        if !self.deny_paths.is_empty() {
            let d: Vec<String> = self.deny_paths.iter().map(|p| p.to_string()).collect();
            parts.push(format!("not {}", d.join(",")));
        }
        if !self.identity.audiences.is_empty() {
            parts.push(format!(
                "identity tokens for {}",
                self.identity.audiences.join(",")
            ));
        }
        if let Some(v) = &self.identity.vendor_data2 {
            parts.push(format!(
                "vendor_data2.json {} token for {}",
                v.key, v.audience
            ));
        }
        parts.join("; ")
    }
}

impl ProjectScopes for Policy {
    fn allows(&self, project: Option<&str>, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        project.is_some_and(|id| {
            self.projects
                .iter()
                .any(|p| p.id == id && p.cidrs.iter().any(|n| n.contains(&ip)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::build(
            file::parse_files([(std::path::Path::new("t.toml"), text)]).unwrap(),
            None,
        )
    }

    #[test]
    fn most_specific_cidr_wins() {
        let p = policy(
            "[[zone]]\nname = \"wide\"\ncidrs = [\"10.0.0.0/8\", \"::/0\"]\naction = \"allow\"\n\
             [[zone]]\nname = \"narrow\"\ncidrs = [\"10.1.2.0/24\", \"2001:db8::/32\"]\naction = \"deny\"\n\
             [[zone]]\nname = \"host\"\ncidrs = [\"10.1.2.3\"]\naction = \"allow\"\n",
        );
        let z = |ip: &str| p.zone_for(ip.parse().unwrap()).map(|z| z.zone.name.clone());
        assert_eq!(z("10.9.9.9").as_deref(), Some("wide"));
        assert_eq!(z("10.1.2.9").as_deref(), Some("narrow"));
        assert_eq!(z("10.1.2.3").as_deref(), Some("host"));
        assert_eq!(z("::ffff:10.1.2.3").as_deref(), Some("host"));
        assert_eq!(z("2001:db8::1").as_deref(), Some("narrow"));
        assert_eq!(z("2001:db9::1").as_deref(), Some("wide"));
        assert_eq!(z("192.0.2.1"), None);
    }

    #[test]
    fn path_rules_match_routes_whatever_their_spelling() {
        let rule = |s: &str| PathRule::parse(s).unwrap();
        let route = |s: &str| {
            let r = crate::metadata::route::parse(s).unwrap();
            crate::metadata::route::canonical(&r)
                .iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
        };
        let m = |r: &str, path: &str| {
            let segs = route(path);
            rule(r).matches(&segs.iter().map(String::as_str).collect::<Vec<_>>())
        };
        assert!(m("/openstack/*/user_data", "/openstack/latest/user_data"));
        assert!(m(
            "/openstack/*/user_data",
            "/openstack/2012-08-10/user_data"
        ));
        assert!(!m(
            "/openstack/*/user_data",
            "/openstack/latest/meta_data.json"
        ));
        assert!(!m("/openstack/*/user_data", "/openstack/latest"));
        // A version matches by any of its names, and only that version.
        assert!(m(
            "/openstack/latest/user_data",
            "/openstack/2025-04-04/user_data"
        ));
        assert!(!m(
            "/openstack/latest/user_data",
            "/openstack/2012-08-10/user_data"
        ));
        // The EC2 tree with and without its prefix.
        for p in [
            "/latest/user-data",
            "/ec2/latest/user-data",
            "/ec2/2009-04-04/user-data",
            "/1.0/user-data",
        ] {
            assert!(m("/*/user-data", p), "{p}");
            assert!(m("/ec2/*/user-data", p), "{p}");
            assert!(!m("/openstack", p), "{p}");
        }
        assert!(m("/latest/user-data", "/ec2/2009-04-04/user-data"));
        assert!(!m("/latest/user-data", "/1.0/user-data"));
        assert!(m("/", "/openstack/latest/user_data"));
        assert!(m("/latest/api", "/latest/api/token"));
        assert!(PathRule::parse("/openstack/2099-01-01").is_err());
        assert!(PathRule::parse("/3.0/meta-data").is_err());
    }

    #[test]
    fn reload_keeps_limiter_state_of_unchanged_zones() {
        let text = "[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"allow\"\nrate_limit = { per_second = 0.001, burst = 1 }\n";
        let p1 = policy(text);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(p1.zone_for(ip).unwrap().limiter.check(ip).is_ok());
        let p2 = Policy::build(
            file::parse_files([(std::path::Path::new("t.toml"), text)]).unwrap(),
            Some(&p1),
        );
        assert!(
            p2.zone_for(ip).unwrap().limiter.check(ip).is_err(),
            "the burst was already used"
        );
    }
}
