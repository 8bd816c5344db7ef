//! Policy files: TOML in one directory, all files together forming one policy. The file
//! structs mirror what operators write (with source positions); [`load_dir`] validates
//! them into the model, naming file, line and field for anything it rejects.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use super::{
    Action, ForwardedHeader, IdentityRules, PathRule, PolicySet, Project, Quota, RequestRules,
    TokenMode, VendorToken, Zone,
};
use crate::identity::{Source as ClaimSource, Sources};

/// Largest accepted rate, requests per second per client.
pub(crate) const MAX_PER_SECOND: f64 = 100_000.0;
/// Smallest accepted rate: one request a day.
pub(crate) const MIN_PER_SECOND: f64 = 1.0 / 86_400.0;
pub(crate) const MAX_BURST: u32 = 1_000_000;
pub(crate) const MAX_HOPS: u8 = 32;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    zone: Vec<Spanned<ZoneFile>>,
    #[serde(default)]
    project: Vec<Spanned<ProjectFile>>,
}

/// Where one project's deployers may claim addresses in their configdrives.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    id: Spanned<String>,
    cidrs: Spanned<Vec<Spanned<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ZoneFile {
    name: Spanned<String>,
    cidrs: Spanned<Vec<Spanned<String>>>,
    action: Spanned<Action>,
    #[serde(default)]
    rate_limit: Option<Spanned<RateFile>>,
    #[serde(default)]
    ipv6_prefix: Option<Spanned<u8>>,
    #[serde(default)]
    trusted_proxies: Vec<Spanned<String>>,
    #[serde(default)]
    forwarded_header: Option<ForwardedHeader>,
    #[serde(default)]
    max_forwarded_hops: Option<Spanned<u8>>,
    #[serde(default)]
    tokens: Option<TokenMode>,
    #[serde(default)]
    paths: Option<Vec<Spanned<String>>>,
    #[serde(default)]
    deny_paths: Vec<Spanned<String>>,
    #[serde(default)]
    verify_mac: Option<Spanned<bool>>,
    #[serde(default)]
    identify_by_mac: Option<Spanned<bool>>,
    #[serde(default)]
    identity_sources: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    allowed_hosts: Vec<Spanned<String>>,
    #[serde(default)]
    require_header: Option<Spanned<String>>,
    #[serde(default)]
    forwarded_refuse: Option<bool>,
    #[serde(default)]
    token_hop_limit: Option<Spanned<u8>>,
    #[serde(default)]
    identity_audiences: Vec<Spanned<String>>,
    #[serde(default)]
    identity_vendor_data2: Option<Spanned<String>>,
    #[serde(default)]
    identity_vendor_data2_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RateFile {
    per_second: Spanned<f64>,
    burst: Spanned<i64>,
}

/// A rejected policy: where and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub(crate) struct PolicyError {
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
    pub(crate) message: String,
}

struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn line_of(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .matches('\n')
            .count()
            + 1
    }

    fn err(&self, span: std::ops::Range<usize>, message: String) -> PolicyError {
        PolicyError {
            file: self.path.to_owned(),
            line: self.line_of(span.start),
            message,
        }
    }
}

/// The `*.toml` files of `dir` (not hidden ones: Kubernetes keeps ConfigMap data in
/// `..data`), in name order.
pub(crate) fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let at_dir = |message: String| PolicyError {
        file: dir.to_owned(),
        line: 0,
        message,
    };
    let entries =
        std::fs::read_dir(dir).map_err(|e| at_dir(format!("cannot read policy directory: {e}")))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            !name.starts_with('.') && name.ends_with(".toml") && p.is_file()
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(at_dir("no *.toml policy file in the directory".into()));
    }
    Ok(files)
}

/// Read and validate every policy file of `dir`.
pub(crate) fn load_dir(dir: &Path) -> Result<PolicySet, PolicyError> {
    let texts = read_dir(dir)?;
    parse_files(texts.iter().map(|(p, t)| (p.as_path(), t.as_str())))
}

/// The policy files of `dir` with their contents.
pub(crate) fn read_dir(dir: &Path) -> Result<Vec<(PathBuf, String)>, PolicyError> {
    let mut texts = Vec::new();
    for path in policy_files(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|e| PolicyError {
            file: path.clone(),
            line: 0,
            message: format!("cannot read: {e}"),
        })?;
        texts.push((path, text));
    }
    Ok(texts)
}

/// A digest of a file set, to tell a real change from a touch: the files' names and texts,
/// not their paths, which differ as the directory is named (relative at start, absolute
/// when watched).
pub(crate) fn fingerprint(files: &[(PathBuf, String)]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (path, text) in files {
        (path.file_name(), text).hash(&mut h);
    }
    h.finish()
}

/// Validate a set of (path, text) policy files into zones and projects.
pub(crate) fn parse_files<'a>(
    files: impl IntoIterator<Item = (&'a Path, &'a str)>,
) -> Result<PolicySet, PolicyError> {
    let mut zones: Vec<Zone> = Vec::new();
    let mut projects = ProjectTable::default();
    let mut first: Option<PathBuf> = None;
    // Where each zone name and each CIDR was first declared.
    let mut names: HashMap<String, (PathBuf, usize)> = HashMap::new();
    let mut cidrs: HashMap<IpNet, (String, PathBuf, usize)> = HashMap::new();
    for (path, text) in files {
        first.get_or_insert_with(|| path.to_owned());
        let src = Source { path, text };
        let parsed: PolicyFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| src.line_of(s.start)).unwrap_or(0);
            PolicyError {
                file: path.to_owned(),
                line,
                message: e.message().trim().to_string(),
            }
        })?;
        for project in parsed.project {
            projects.add(&src, project)?;
        }
        for zone in parsed.zone {
            let zone_line = src.line_of(zone.span().start);
            let z = zone.into_inner();
            let zone = validate_zone(&src, z)?;
            if let Some((file, line)) = names.get(&zone.name) {
                return Err(PolicyError {
                    file: path.to_owned(),
                    line: zone_line,
                    message: format!(
                        "zone {:?}: field name: duplicate zone name (first declared at {}:{line})",
                        zone.name,
                        file.display()
                    ),
                });
            }
            names.insert(zone.name.clone(), (path.to_owned(), zone_line));
            for net in &zone.cidrs {
                if let Some((other, file, line)) = cidrs.get(net) {
                    return Err(PolicyError {
                        file: path.to_owned(),
                        line: zone_line,
                        message: format!(
                            "zone {:?}: field cidrs: {net} is also claimed by zone {other:?} at {}:{line}",
                            zone.name,
                            file.display()
                        ),
                    });
                }
                cidrs.insert(*net, (zone.name.clone(), path.to_owned(), zone_line));
            }
            zones.push(zone);
        }
    }
    if zones.is_empty() {
        return Err(PolicyError {
            file: first.unwrap_or_default(),
            line: 0,
            message: "no zone in the policy: every client would be refused".into(),
        });
    }
    Ok(PolicySet {
        zones,
        projects: projects.projects,
    })
}

/// The projects read so far, with where each id and CIDR was declared.
#[derive(Default)]
struct ProjectTable {
    projects: Vec<Project>,
    at: Vec<(PathBuf, usize)>,
}

impl ProjectTable {
    /// Adds one `[[project]]`: a new id, CIDRs that overlap no CIDR of any project (its own
    /// included), so each address belongs to at most one project.
    fn add(&mut self, src: &Source<'_>, p: Spanned<ProjectFile>) -> Result<(), PolicyError> {
        let line = src.line_of(p.span().start);
        let p = p.into_inner();
        let id = p.id.get_ref().trim().to_string();
        if id.is_empty() {
            return Err(src.err(p.id.span(), "project: field id: must not be empty".into()));
        }
        if let Some(k) = self.projects.iter().position(|q| q.id == id) {
            let (file, l) = &self.at[k];
            return Err(src.err(
                p.id.span(),
                format!(
                    "project {id:?}: field id: duplicate project (first declared at {}:{l})",
                    file.display()
                ),
            ));
        }
        if p.cidrs.get_ref().is_empty() {
            return Err(src.err(
                p.cidrs.span(),
                format!("project {id:?}: field cidrs: must list at least one CIDR"),
            ));
        }
        let mut cidrs: Vec<IpNet> = Vec::new();
        for c in p.cidrs.get_ref() {
            let net = parse_cidr(src, &format!("project {id:?}"), "cidrs", c)?;
            self.check_overlap(src, c, &id, net, &cidrs)?;
            cidrs.push(net);
        }
        self.projects.push(Project { id, cidrs });
        self.at.push((src.path.to_owned(), line));
        Ok(())
    }

    fn check_overlap(
        &self,
        src: &Source<'_>,
        at: &Spanned<String>,
        id: &str,
        net: IpNet,
        own: &[IpNet],
    ) -> Result<(), PolicyError> {
        let overlaps = |a: &IpNet, b: &IpNet| a.contains(&b.network()) || b.contains(&a.network());
        if let Some(o) = own.iter().find(|o| overlaps(o, &net)) {
            return Err(src.err(
                at.span(),
                format!("project {id:?}: field cidrs: {net} overlaps {o} of the same project"),
            ));
        }
        for (k, q) in self.projects.iter().enumerate() {
            if let Some(o) = q.cidrs.iter().find(|o| overlaps(o, &net)) {
                let (file, line) = &self.at[k];
                return Err(src.err(
                    at.span(),
                    format!(
                        "project {id:?}: field cidrs: {net} overlaps {o} of project {:?} at {}:{line}",
                        q.id,
                        file.display()
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// A CIDR (or a bare address: that one host) of `owner` (`zone "a"`, `project "p"`).
fn parse_cidr(
    src: &Source<'_>,
    owner: &str,
    field: &str,
    s: &Spanned<String>,
) -> Result<IpNet, PolicyError> {
    let raw = s.get_ref().trim();
    let err = |why: String| src.err(s.span(), format!("{owner}: field {field}: {raw:?} {why}"));
    // A bare address means that one host.
    let net =
        match raw.parse::<IpNet>() {
            Ok(n) => n,
            Err(_) => match raw.parse::<std::net::IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => return Err(err(
                    "is not a CIDR (address/prefix, prefix at most 32 for IPv4 and 128 for IPv6)"
                        .into(),
                )),
            },
        };
    if net.trunc() != net {
        return Err(err(format!(
            "has host bits set (did you mean {}?)",
            net.trunc()
        )));
    }
    Ok(net)
}

fn zone_name(src: &Source<'_>, name: &Spanned<String>) -> Result<String, PolicyError> {
    let n = name.get_ref().trim().to_string();
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        return Ok(n);
    }
    Err(src.err(
        name.span(),
        format!("field name: {n:?} must be 1 to 64 characters of letters, digits, '-', '_' or '.'"),
    ))
}

fn quota(
    src: &Source<'_>,
    name: &str,
    r: &Option<Spanned<RateFile>>,
) -> Result<Quota, PolicyError> {
    let Some(r) = r else {
        return Ok(Quota::default());
    };
    let r = r.get_ref();
    let ps = *r.per_second.get_ref();
    if !ps.is_finite() || !(MIN_PER_SECOND..=MAX_PER_SECOND).contains(&ps) {
        return Err(src.err(r.per_second.span(), format!(
            "zone {name:?}: field rate_limit.per_second: {ps} is outside {MIN_PER_SECOND:.6} (one a day) to {MAX_PER_SECOND}"
        )));
    }
    let burst = *r.burst.get_ref();
    if !(1..=i64::from(MAX_BURST)).contains(&burst) {
        return Err(src.err(
            r.burst.span(),
            format!("zone {name:?}: field rate_limit.burst: {burst} is outside 1 to {MAX_BURST}"),
        ));
    }
    Ok(Quota {
        per_second: ps,
        burst: burst as u32,
    })
}

/// A small number within `min..=max`, `default` when absent.
fn bounded(
    src: &Source<'_>,
    name: &str,
    field: &str,
    v: &Option<Spanned<u8>>,
    (min, max, default): (u8, u8, u8),
) -> Result<u8, PolicyError> {
    match v {
        None => Ok(default),
        Some(v) if (min..=max).contains(v.get_ref()) => Ok(*v.get_ref()),
        Some(v) => Err(src.err(
            v.span(),
            format!(
                "zone {name:?}: field {field}: {} is outside {min} to {max}",
                v.get_ref()
            ),
        )),
    }
}

fn path_rules(
    src: &Source<'_>,
    name: &str,
    field: &str,
    list: &[Spanned<String>],
) -> Result<Vec<PathRule>, PolicyError> {
    list.iter()
        .map(|p| {
            PathRule::parse(p.get_ref())
                .map_err(|why| src.err(p.span(), format!("zone {name:?}: field {field}: {why}")))
        })
        .collect()
}

/// `identity_sources`: a non-empty list of known sources, each once; all three by default.
fn identity_sources(src: &Source<'_>, name: &str, z: &ZoneFile) -> Result<Sources, PolicyError> {
    let Some(list) = &z.identity_sources else {
        return Ok(Sources::ALL);
    };
    if list.get_ref().is_empty() {
        return Err(src.err(
            list.span(),
            format!("zone {name:?}: field identity_sources: must list at least one source"),
        ));
    }
    let mut seen: Vec<ClaimSource> = Vec::new();
    for item in list.get_ref() {
        let s = ClaimSource::ALL
            .into_iter()
            .find(|s| s.name() == item.get_ref().trim())
            .ok_or_else(|| {
                src.err(
                    item.span(),
                    format!(
                        "zone {name:?}: field identity_sources: {:?} is not one of \"node\", \"configdrive\", \"mac\"",
                        item.get_ref()
                    ),
                )
            })?;
        if seen.contains(&s) {
            return Err(src.err(
                item.span(),
                format!(
                    "zone {name:?}: field identity_sources: {:?} is listed twice",
                    s.name()
                ),
            ));
        }
        seen.push(s);
    }
    Ok(Sources::of(&seen))
}

/// `verify_mac` and `identify_by_mac`; identifying by MAC needs verifying it, and `mac`
/// among the zone's identity sources.
fn mac_rules(
    src: &Source<'_>,
    name: &str,
    z: &ZoneFile,
    sources: Sources,
) -> Result<(bool, bool), PolicyError> {
    let verify = z.verify_mac.as_ref().is_some_and(|v| *v.get_ref());
    match &z.identify_by_mac {
        Some(v) if *v.get_ref() && !sources.accepts(ClaimSource::Mac) => Err(src.err(
            v.span(),
            format!("zone {name:?}: field identify_by_mac: needs \"mac\" in identity_sources"),
        )),
        Some(v) if *v.get_ref() && !verify => Err(src.err(
            v.span(),
            format!(
                "zone {name:?}: field identify_by_mac: needs verify_mac = true in the same zone \
                 (a node found by its MAC is served only to that MAC)"
            ),
        )),
        Some(v) => Ok((verify, *v.get_ref())),
        None => Ok((verify, false)),
    }
}

fn validate_zone(src: &Source<'_>, z: ZoneFile) -> Result<Zone, PolicyError> {
    let name = zone_name(src, &z.name)?;
    if z.cidrs.get_ref().is_empty() {
        return Err(src.err(
            z.cidrs.span(),
            format!("zone {name:?}: field cidrs: must list at least one CIDR"),
        ));
    }
    let cidrs = z
        .cidrs
        .get_ref()
        .iter()
        .map(|c| parse_cidr(src, &format!("zone {name:?}"), "cidrs", c))
        .collect::<Result<Vec<_>, _>>()?;
    let trusted_proxies = z
        .trusted_proxies
        .iter()
        .map(|c| parse_cidr(src, &format!("zone {name:?}"), "trusted_proxies", c))
        .collect::<Result<Vec<_>, _>>()?;
    let quota = quota(src, &name, &z.rate_limit)?;
    let ipv6_prefix = bounded(src, &name, "ipv6_prefix", &z.ipv6_prefix, (1, 128, 64))?;
    let hops = (1, MAX_HOPS, 8);
    let max_hops = bounded(
        src,
        &name,
        "max_forwarded_hops",
        &z.max_forwarded_hops,
        hops,
    )?;
    let paths = match &z.paths {
        None => vec![PathRule::parse("/").expect("root rule")],
        Some(list) => path_rules(src, &name, "paths", list)?,
    };
    let deny_paths = path_rules(src, &name, "deny_paths", &z.deny_paths)?;
    let sources = identity_sources(src, &name, &z)?;
    let request = request_rules(src, &name, &z)?;
    let identity = identity_rules(src, &name, &z)?;
    let (verify_mac, identify_by_mac) = mac_rules(src, &name, &z, sources)?;
    Ok(Zone {
        name,
        cidrs,
        action: *z.action.get_ref(),
        quota,
        ipv6_prefix,
        trusted_proxies,
        forwarded_header: z.forwarded_header.unwrap_or_default(),
        max_hops,
        tokens: z.tokens.unwrap_or_default(),
        paths,
        deny_paths,
        verify_mac,
        identify_by_mac,
        sources,
        request,
        identity,
    })
}

/// Longest audience a token is issued for, in bytes.
pub(crate) const MAX_AUDIENCE: usize = 256;
/// The key `vendor_data2.json` places a token under when none is given (what the SPIRE
/// attestor for OpenStack reads).
const DEFAULT_VENDOR_KEY: &str = "openstack_iid";

/// `identity_audiences`, `identity_vendor_data2`, `identity_vendor_data2_key`.
fn identity_rules(
    src: &Source<'_>,
    name: &str,
    z: &ZoneFile,
) -> Result<IdentityRules, PolicyError> {
    let mut audiences: Vec<String> = Vec::new();
    for a in &z.identity_audiences {
        let aud = a.get_ref();
        let why = if aud.is_empty() || aud.len() > MAX_AUDIENCE {
            Some(format!("must be 1 to {MAX_AUDIENCE} bytes"))
        } else if aud.chars().any(char::is_control) {
            Some("must not contain control characters".to_string())
        } else if audiences.contains(aud) {
            Some("is listed twice".to_string())
        } else {
            None
        };
        if let Some(why) = why {
            return Err(src.err(
                a.span(),
                format!("zone {name:?}: field identity_audiences: {aud:?} {why}"),
            ));
        }
        audiences.push(aud.clone());
    }
    let vendor_data2 = match (&z.identity_vendor_data2, &z.identity_vendor_data2_key) {
        (None, None) => None,
        (None, Some(k)) => {
            return Err(src.err(
                k.span(),
                format!("zone {name:?}: field identity_vendor_data2_key: needs identity_vendor_data2 (the token's audience)"),
            ))
        }
        (Some(aud), key) => {
            if !audiences.contains(aud.get_ref()) {
                return Err(src.err(
                    aud.span(),
                    format!(
                        "zone {name:?}: field identity_vendor_data2: {:?} is not one of identity_audiences",
                        aud.get_ref()
                    ),
                ));
            }
            let key = match key {
                None => DEFAULT_VENDOR_KEY.to_string(),
                Some(k) => vendor_key(src, name, k)?,
            };
            Some(VendorToken {
                audience: aud.get_ref().clone(),
                key,
            })
        }
    };
    Ok(IdentityRules {
        audiences,
        vendor_data2,
    })
}

/// A key of `vendor_data2.json` beside `static`.
fn vendor_key(src: &Source<'_>, name: &str, k: &Spanned<String>) -> Result<String, PolicyError> {
    let key = k.get_ref();
    let ok = !key.is_empty()
        && key.len() <= 64
        && key != "static"
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        return Ok(key.clone());
    }
    Err(src.err(
        k.span(),
        format!("zone {name:?}: field identity_vendor_data2_key: {key:?} must be 1 to 64 letters, digits, '-', '_' or '.', and not \"static\""),
    ))
}

/// `allowed_hosts`, `require_header`, `forwarded_refuse`, `token_hop_limit`.
fn request_rules(src: &Source<'_>, name: &str, z: &ZoneFile) -> Result<RequestRules, PolicyError> {
    let mut hosts = Vec::new();
    for h in &z.allowed_hosts {
        let host = h
            .get_ref()
            .trim()
            .trim_end_matches('.')
            .to_ascii_lowercase();
        let ok = host == "*"
            || host.parse::<std::net::IpAddr>().is_ok()
            || (!host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|l| {
                    !l.is_empty()
                        && l.len() <= 63
                        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                }));
        if !ok {
            return Err(src.err(
                h.span(),
                format!("zone {name:?}: field allowed_hosts: {:?} is not a host name, an address or \"*\"", h.get_ref()),
            ));
        }
        hosts.push(host);
    }
    let required_header = match &z.require_header {
        None => None,
        Some(h) => Some(required_header(h.get_ref()).ok_or_else(|| {
            src.err(
                h.span(),
                format!(
                    "zone {name:?}: field require_header: {:?} must be \"Name: value\"",
                    h.get_ref()
                ),
            )
        })?),
    };
    let hop_limit = match &z.token_hop_limit {
        Some(h) if *h.get_ref() == 0 => {
            return Err(src.err(
                h.span(),
                format!("zone {name:?}: field token_hop_limit: 0 is outside 1 to 255"),
            ))
        }
        h => h.as_ref().map(|h| *h.get_ref()),
    };
    Ok(RequestRules {
        hosts,
        required_header,
        forwarded_refuse: z.forwarded_refuse.unwrap_or(false),
        token_hop_limit: hop_limit,
    })
}

/// `Name: value`, the name a valid header name (kept lower case), the value not empty.
fn required_header(text: &str) -> Option<(http::HeaderName, String)> {
    let (name, value) = text.split_once(':')?;
    let name = http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
    let value = value.trim();
    (!value.is_empty() && http::HeaderValue::from_str(value).is_ok())
        .then(|| (name, value.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Vec<Zone>, String> {
        parse_files([(Path::new("p.toml"), text)])
            .map(|set| set.zones)
            .map_err(|e| e.to_string())
    }

    const OK: &str = "[[zone]]\nname = \"lab\"\ncidrs = [\"10.0.0.0/8\", \"fd00::/8\"]\naction = \"allow\"\nrate_limit = { per_second = 5, burst = 10 }\n";

    #[test]
    fn valid_zone_with_defaults() {
        let z = &one(OK).unwrap()[0];
        assert_eq!(z.name, "lab");
        assert_eq!(z.cidrs.len(), 2);
        assert_eq!((z.quota.per_second, z.quota.burst), (5.0, 10));
        assert_eq!(
            (z.ipv6_prefix, z.max_hops, z.tokens),
            (64, 8, TokenMode::Optional)
        );
    }

    #[test]
    fn rejections_name_file_line_and_field() {
        let cases = [
            ("[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/33\"]\naction = \"allow\"\n",
             "p.toml:3: zone \"a\": field cidrs: \"10.0.0.0/33\" is not a CIDR (address/prefix, prefix at most 32 for IPv4 and 128 for IPv6)"),
            ("[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.1/8\"]\naction = \"allow\"\n",
             "p.toml:3: zone \"a\": field cidrs: \"10.0.0.1/8\" has host bits set (did you mean 10.0.0.0/8?)"),
            ("[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"allow\"\ncolour = \"blue\"\n",
             "p.toml:5: unknown field `colour`, expected one of `name`, `cidrs`, `action`, `rate_limit`, `ipv6_prefix`, `trusted_proxies`, `forwarded_header`, `max_forwarded_hops`, `tokens`, `paths`, `deny_paths`, `verify_mac`, `identify_by_mac`, `identity_sources`, `allowed_hosts`, `require_header`, `forwarded_refuse`, `token_hop_limit`, `identity_audiences`, `identity_vendor_data2`, `identity_vendor_data2_key`"),
            ("[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"allow\"\nrate_limit = { per_second = 0, burst = 5 }\n",
             "p.toml:5: zone \"a\": field rate_limit.per_second: 0 is outside 0.000012 (one a day) to 100000"),
            ("[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"allow\"\nrate_limit = { per_second = 1, burst = 0 }\n",
             "p.toml:5: zone \"a\": field rate_limit.burst: 0 is outside 1 to 1000000"),
            ("[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"maybe\"\n",
             "p.toml:4: unknown variant `maybe`, expected `allow` or `deny`"),
            ("[[zone]]\nname = \"a\"\ncidrs = []\naction = \"allow\"\n",
             "p.toml:3: zone \"a\": field cidrs: must list at least one CIDR"),
            ("[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"allow\"\n[[zone]]\nname = \"a\"\ncidrs = [\"10.1.0.0/16\"]\naction = \"deny\"\n",
             "p.toml:5: zone \"a\": field name: duplicate zone name (first declared at p.toml:1)"),
            ("[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"allow\"\nidentify_by_mac = true\n",
             "p.toml:5: zone \"a\": field identify_by_mac: needs verify_mac = true in the same zone (a node found by its MAC is served only to that MAC)"),
            ("[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"allow\"\nverify_mac = \"yes\"\n",
             "p.toml:5: invalid type: string \"yes\", expected a boolean"),
            ("[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"allow\"\npaths = [\"openstack\"]\n",
             "p.toml:5: zone \"a\": field paths: \"openstack\" must start with '/'"),
        ];
        for (text, want) in cases {
            assert_eq!(one(text).unwrap_err(), want, "{text}");
        }
    }

    #[test]
    fn projects_and_identity_sources_are_checked() {
        let z = "[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"allow\"\n";
        let cases = [
            (format!("{z}identity_sources = [\"node\", \"dhcp\"]\n"),
             "p.toml:5: zone \"a\": field identity_sources: \"dhcp\" is not one of \"node\", \"configdrive\", \"mac\""),
            (format!("{z}identity_sources = [\"node\", \"node\"]\n"),
             "p.toml:5: zone \"a\": field identity_sources: \"node\" is listed twice"),
            (format!("{z}identity_sources = []\n"),
             "p.toml:5: zone \"a\": field identity_sources: must list at least one source"),
            (format!("{z}verify_mac = true\nidentify_by_mac = true\nidentity_sources = [\"node\"]\n"),
             "p.toml:6: zone \"a\": field identify_by_mac: needs \"mac\" in identity_sources"),
            ("[[project]]\nid = \"p\"\ncidrs = [\"10.0.0.0/16\", \"10.0.1.0/24\"]\n".into(),
             "p.toml:3: project \"p\": field cidrs: 10.0.1.0/24 overlaps 10.0.0.0/16 of the same project"),
            ("[[project]]\nid = \"p\"\ncidrs = [\"10.0.0.0/16\"]\n[[project]]\nid = \"q\"\ncidrs = [\"10.0.0.0/8\"]\n".into(),
             "p.toml:6: project \"q\": field cidrs: 10.0.0.0/8 overlaps 10.0.0.0/16 of project \"p\" at p.toml:1"),
            ("[[project]]\nid = \"p\"\ncidrs = [\"10.0.0.0/16\"]\n[[project]]\nid = \"p\"\ncidrs = [\"10.1.0.0/16\"]\n".into(),
             "p.toml:5: project \"p\": field id: duplicate project (first declared at p.toml:1)"),
            ("[[project]]\nid = \"p\"\ncidrs = [\"10.0.0.1/16\"]\n".into(),
             "p.toml:3: project \"p\": field cidrs: \"10.0.0.1/16\" has host bits set (did you mean 10.0.0.0/16?)"),
            ("[[project]]\nid = \"\"\ncidrs = [\"10.0.0.0/16\"]\n".into(),
             "p.toml:2: project: field id: must not be empty"),
        ];
        for (text, want) in cases {
            assert_eq!(one(&text).unwrap_err(), want, "{text}");
        }
        let set = parse_files([(Path::new("p.toml"), &*format!("{z}identity_sources = [\"node\", \"mac\"]\n[[project]]\nid = \"p\"\ncidrs = [\"10.1.0.0/16\", \"192.0.2.7\"]\n"))]).unwrap();
        assert_eq!(
            set.zones[0].sources,
            Sources::of(&[ClaimSource::Node, ClaimSource::Mac])
        );
        assert_eq!(set.projects[0].cidrs.len(), 2);
    }

    #[test]
    fn identity_audiences_and_vendor_data2_are_checked() {
        let z = "[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"allow\"\n";
        let zones = one(&format!(
            "{z}identity_audiences = [\"openbao\", \"spiffe://example.org\"]\nidentity_vendor_data2 = \"spiffe://example.org\"\n"
        ))
        .unwrap();
        assert_eq!(
            zones[0].identity.audiences,
            ["openbao", "spiffe://example.org"]
        );
        assert_eq!(
            zones[0].identity.vendor_data2,
            Some(VendorToken {
                audience: "spiffe://example.org".into(),
                key: "openstack_iid".into()
            })
        );
        assert_eq!(one(z).unwrap()[0].identity, IdentityRules::default());
        let long = "a".repeat(257);
        let cases = [
            (format!("{z}identity_audiences = [\"\"]\n"),
             "p.toml:5: zone \"a\": field identity_audiences: \"\" must be 1 to 256 bytes".to_string()),
            (format!("{z}identity_audiences = [\"{long}\"]\n"),
             format!("p.toml:5: zone \"a\": field identity_audiences: \"{long}\" must be 1 to 256 bytes")),
            (format!("{z}identity_audiences = [\"a\\tb\"]\n"),
             "p.toml:5: zone \"a\": field identity_audiences: \"a\\tb\" must not contain control characters".into()),
            (format!("{z}identity_audiences = [\"x\", \"x\"]\n"),
             "p.toml:5: zone \"a\": field identity_audiences: \"x\" is listed twice".into()),
            (format!("{z}identity_audiences = [\"x\"]\nidentity_vendor_data2 = \"y\"\n"),
             "p.toml:6: zone \"a\": field identity_vendor_data2: \"y\" is not one of identity_audiences".into()),
            (format!("{z}identity_vendor_data2_key = \"k\"\n"),
             "p.toml:5: zone \"a\": field identity_vendor_data2_key: needs identity_vendor_data2 (the token's audience)".into()),
            (format!("{z}identity_audiences = [\"x\"]\nidentity_vendor_data2 = \"x\"\nidentity_vendor_data2_key = \"static\"\n"),
             "p.toml:7: zone \"a\": field identity_vendor_data2_key: \"static\" must be 1 to 64 letters, digits, '-', '_' or '.', and not \"static\"".into()),
        ];
        for (text, want) in cases {
            assert_eq!(one(&text).unwrap_err(), want, "{text}");
        }
    }

    #[test]
    fn equal_cidrs_across_files_are_an_error() {
        let a = "[[zone]]\nname = \"a\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"allow\"\n";
        let b = "\n[[zone]]\nname = \"b\"\ncidrs = [\"10.0.0.0/8\"]\naction = \"deny\"\n";
        let err = parse_files([(Path::new("a.toml"), a), (Path::new("b.toml"), b)]).unwrap_err();
        assert_eq!(err.to_string(), "b.toml:2: zone \"b\": field cidrs: 10.0.0.0/8 is also claimed by zone \"a\" at a.toml:1");
    }
}
