//! Signed node identity: a JWT for an audience the node names, saying which Ironic node
//! asked, verifiable offline against the keys the service publishes (as GCE's identity
//! tokens and SPIFFE JWT-SVIDs are).
//!
//! `GET /openstack/latest/identity?audience=AUD` and `/latest/meta-data/identity?aud=AUD`
//! go through the whole request path (zone, limits, session token, identity, MAC rules);
//! before identity, this module checks what only they need: a signing key, a header SSRF
//! payloads rarely carry, one valid audience that the client's zone lists. After identity,
//! a per-node limit, then the token. A zone may also place a token in `vendor_data2.json`.
//! The keys ([`store`]) are published as a JWKS with an OpenID discovery document.

pub(crate) mod keys;
pub(crate) mod store;
pub(crate) mod token;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use governor::clock::{Clock, MonotonicClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::RateLimiter;
use percent_encoding::percent_decode_str;
use serde_json::{json, Map, Value};
use tokio::sync::watch;

use crate::metadata::route::Route;
use crate::metrics::Metrics;
use crate::node::{doc, NodeView};
use crate::policy::file::MAX_AUDIENCE;
use crate::policy::store::{DirWatch, Hangup, WatchLog, SETTLE};
use crate::policy::{ActiveZone, Policy};
use crate::reply::{Denied, Refusal, Reply, JSON};
use crate::versions;
use keys::{Key, KeySet};
use store::KeyStore;
use token::{Claims, NodeClaims, Subject};

/// The media type of a compact JWT (RFC 7519).
pub(crate) const JWT: &str = "application/jwt";
pub(crate) const JWKS_PATH: &str = "/.well-known/jwks.json";
pub(crate) const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// How often the per-node limiter forgets nodes whose share is full again.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// What the service states in every token, and how often a node may have one.
#[derive(Debug, Clone)]
pub(crate) struct IssuerConfig {
    /// `iss`, and where the keys are published: `<issuer>/.well-known/jwks.json`.
    pub(crate) issuer: String,
    pub(crate) ttl: u32,
    pub(crate) subject: Subject,
    /// Tokens per second per node, and the burst.
    pub(crate) per_second: u32,
    pub(crate) burst: u32,
    /// The keys are also published to nodes on the metadata listener.
    pub(crate) publish_on_metadata: bool,
}

/// Issues identity tokens from the keys in force.
pub(crate) struct Issuer {
    config: IssuerConfig,
    keys: Arc<KeyStore>,
    limiter: NodeLimiter,
    metrics: Arc<Metrics>,
    /// The OpenID discovery document, rendered once.
    discovery: Bytes,
}

impl Issuer {
    pub(crate) fn new(config: IssuerConfig, keys: Arc<KeyStore>, metrics: Arc<Metrics>) -> Issuer {
        let discovery = json!({
            "issuer": config.issuer,
            "jwks_uri": format!("{}{JWKS_PATH}", config.issuer),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256", "RS256"],
            "claims_supported": ["iss", "sub", "aud", "iat", "nbf", "exp", "jti", "ironic"],
        });
        Issuer {
            limiter: NodeLimiter::new(config.per_second, config.burst),
            config,
            keys,
            metrics,
            discovery: Bytes::from(discovery.to_string()),
        }
    }

    /// The published documents, on the admin listener: the JWKS and the discovery
    /// document; `None` for any other path.
    pub(crate) fn published(&self, path: &str) -> Option<Reply> {
        match path.split('?').next().unwrap_or("") {
            JWKS_PATH => Some(Reply::ok(JSON, self.keys.current().jwks())),
            DISCOVERY_PATH => Some(Reply::ok(JSON, self.discovery.clone())),
            _ => None,
        }
    }

    /// The same documents for nodes, when the metadata listener publishes them:
    /// `segments` is the normalised path.
    pub(crate) fn published_to_nodes(&self, segments: &[String]) -> Option<Reply> {
        match segments {
            [dir, file] if self.config.publish_on_metadata && dir == ".well-known" => {
                self.published(&format!("/{dir}/{file}"))
            }
            _ => None,
        }
    }

    /// Readiness warnings about the keys.
    pub(crate) fn warnings(&self) -> Vec<String> {
        self.keys.warnings()
    }

    /// Signs a token for `node` and `audience`, within the node's share: counted, and an
    /// audit line (never the token itself).
    fn mint(
        &self,
        key: &Key,
        node: &NodeView,
        audience: &str,
        asked: Asked<'_>,
    ) -> Result<String, Denied> {
        if let Err(wait) = self.limiter.check(&node.uuid) {
            self.metrics
                .identity
                .tokens
                .with_label_values(&["rate_limited"])
                .inc();
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return Err(Denied::new(Refusal::IdentityRateLimited(secs.max(1)))
                .node(&node.uuid)
                .detail(format!("identity tokens for audience {audience:?}")));
        }
        let iat = asked
            .now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let claims = Claims {
            iss: &self.config.issuer,
            sub: self.config.subject.of(&node.uuid),
            aud: audience,
            iat,
            nbf: iat,
            exp: iat + u64::from(self.config.ttl),
            jti: token::new_jti(),
            ironic: NodeClaims::of(node),
        };
        let jwt = token::sign(key, &claims).map_err(|_| {
            Denied::new(Refusal::IdentityNotSigned)
                .node(&node.uuid)
                .detail(format!("key {} did not sign", key.kid))
        })?;
        self.metrics
            .identity
            .tokens
            .with_label_values(&["issued"])
            .inc();
        tracing::info!(
            target: "audit",
            event = "identity_issued",
            node = %node.uuid,
            client = %asked.client,
            zone = asked.zone.label.as_ref(),
            audience,
            jti = %claims.jti,
            kid = %key.kid,
            exp = claims.exp,
            via = asked.via,
            "identity token issued"
        );
        Ok(jwt)
    }

    /// Watches the key directory and SIGHUP, reloads on change, sweeps the per-node
    /// limiter, until shutdown.
    pub(crate) async fn run(&self, mut shutdown: watch::Receiver<bool>) {
        const LOG: WatchLog = WatchLog {
            no_watcher: |e| {
                tracing::error!(target: "identity", error = %e, "cannot watch the identity key directory; reload with SIGHUP");
            },
            no_dir: |dir, e| {
                tracing::warn!(target: "identity", dir = %dir.display(), error = %e,
                    "cannot watch the identity key directory (yet); watching for it to appear");
            },
        };
        let mut watch = DirWatch::new(self.keys.dir(), LOG);
        // Changes made between the first load and the watch would have no event.
        let _ = self.keys.reload();
        let mut hup = Hangup::new();
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        loop {
            tokio::select! {
                first = watch.next() => {
                    watch.settle(first).await;
                    self.reload_settled().await;
                }
                () = hup.recv() => {
                    let _ = self.keys.reload();
                }
                _ = sweep.tick() => self.limiter.sweep(),
                _ = shutdown.changed() => return,
            }
        }
    }

    /// A reload once the files stay the same for [`SETTLE`]: a key being written is never
    /// read half-written.
    async fn reload_settled(&self) {
        let before = self.keys.read_fingerprint();
        tokio::time::sleep(SETTLE).await;
        if before == self.keys.read_fingerprint() {
            let _ = self.keys.reload();
        }
    }
}

/// Who asked, for the audit line.
#[derive(Clone, Copy)]
struct Asked<'a> {
    client: IpAddr,
    zone: &'a ActiveZone,
    now: SystemTime,
    /// `identity` or `vendor_data2`.
    via: &'static str,
}

/// A request for a token that passed the checks before identity.
pub(crate) struct Ask<'a> {
    issuer: &'a Issuer,
    keys: Arc<KeySet>,
    audience: String,
    zone: &'a ActiveZone,
}

/// What [`asked`] needs of the request.
pub(crate) struct TokenRequest<'a> {
    /// The request target (path and query).
    pub(crate) target: &'a str,
    pub(crate) headers: Option<&'a http::HeaderMap>,
    pub(crate) client: IpAddr,
}

/// The identity path: `/openstack/latest/identity`, `/latest/meta-data/identity`.
pub(crate) fn is_identity(route: &Route) -> bool {
    match route {
        Route::OpenStack {
            version,
            file: Some(f),
        } => f == "identity" && versions::OPENSTACK.last() == Some(version),
        Route::Ec2 { version, path } => {
            path.len() == 2
                && path[0] == "meta-data"
                && path[1] == "identity"
                && versions::EC2.last() == Some(version)
        }
        _ => false,
    }
}

/// `None` unless `route` is the identity path; then the request checked, before any node
/// data is looked at: a key to sign with (404), the header (400), one valid audience (400),
/// listed by the client's zone (403).
pub(crate) fn asked<'a>(
    issuer: Option<&'a Issuer>,
    policy: &'a Policy,
    req: &TokenRequest<'_>,
    route: &Route,
) -> Result<Option<Ask<'a>>, Denied> {
    if !is_identity(route) {
        return Ok(None);
    }
    let Some(issuer) = issuer else {
        return Err(Denied::new(Refusal::IdentityUnavailable).detail("no --identity-key-dir"));
    };
    let keys = issuer.keys.current();
    if keys.signing().is_none() {
        return Err(Denied::new(Refusal::IdentityUnavailable)
            .detail(format!("no key file in {}", issuer.keys.dir().display())));
    }
    if !flavoured(req.headers) {
        return Err(Refusal::IdentityHeaderRequired.into());
    }
    let audience = audience(req.target)?;
    let zone = policy
        .zone_for(req.client)
        .ok_or_else(|| Denied::new(Refusal::NoZone).detail("address in no zone"))?;
    if !zone.zone.identity.audiences.contains(&audience) {
        return Err(Denied::new(Refusal::AudienceNotAllowed)
            .detail(format!("audience {:?}", truncate(&audience))));
    }
    Ok(Some(Ask {
        issuer,
        keys,
        audience,
        zone,
    }))
}

impl Ask<'_> {
    /// The token for `node`, the node identity found for the client.
    pub(crate) fn issue(
        &self,
        node: &NodeView,
        client: IpAddr,
        now: SystemTime,
    ) -> Result<Reply, Denied> {
        let key = self.keys.signing().ok_or(Refusal::IdentityUnavailable)?;
        let asked = Asked {
            client,
            zone: self.zone,
            now,
            via: "identity",
        };
        let jwt = self.issuer.mint(key, node, &self.audience, asked)?;
        Ok(Reply::ok(JWT, jwt))
    }
}

/// `vendor_data2.json` with the token the client's zone places in it, fresh per answer:
/// `{"static": ..., "<key>": {"jwt": "..."}}`. Any other answer is returned as it is; so is
/// this one when no key is loaded (readiness says so).
pub(crate) fn place(
    issuer: Option<&Issuer>,
    policy: &Policy,
    route: &Route,
    node: &NodeView,
    reply: Reply,
    (client, now): (IpAddr, SystemTime),
) -> Result<Reply, Denied> {
    let Some(issuer) = issuer else {
        return Ok(reply);
    };
    let vendor_data2 =
        matches!(route, Route::OpenStack { file: Some(f), .. } if f == "vendor_data2.json");
    if !vendor_data2 || reply.status != 200 || reply.body.last() != Some(&b'}') {
        return Ok(reply);
    }
    let Some(zone) = policy.zone_for(client) else {
        return Ok(reply);
    };
    let Some(placed) = &zone.zone.identity.vendor_data2 else {
        return Ok(reply);
    };
    let keys = issuer.keys.current();
    let Some(key) = keys.signing() else {
        return Ok(reply);
    };
    let asked = Asked {
        client,
        zone,
        now,
        via: "vendor_data2",
    };
    let jwt = issuer.mint(key, node, &placed.audience, asked)?;
    let mut extra = Map::new();
    extra.insert(placed.key.clone(), json!({ "jwt": jwt }));
    // `{"static": ...}` becomes `{"static": ..., "<key>": {...}}`, as json.dumps prints it.
    let extra = doc::to_vec(&Value::Object(extra));
    let mut body = Vec::with_capacity(reply.body.len() + extra.len() + 2);
    body.extend_from_slice(&reply.body[..reply.body.len() - 1]);
    body.extend_from_slice(b", ");
    body.extend_from_slice(&extra[1..]);
    Ok(Reply {
        body: Bytes::from(body),
        // A new body per answer: its tag is its own.
        etag: None,
        ..reply
    })
}

/// `Metadata-Flavor: ironic` or `Metadata: true` (Azure's), as a URL fetcher made to ask on
/// a client's behalf rarely sends.
fn flavoured(headers: Option<&http::HeaderMap>) -> bool {
    let Some(h) = headers else {
        return false;
    };
    let has = |name: &str, want: &str| {
        h.get_all(name)
            .iter()
            .any(|v| v.as_bytes().eq_ignore_ascii_case(want.as_bytes()))
    };
    has("metadata-flavor", "ironic") || has("metadata", "true")
}

/// The one `audience` (or `aud`) of the query: percent-decoded, 1 to 256 bytes, no control
/// characters. Other parameters are ignored, except a wait for a change, which a token
/// (new on every answer) cannot honour.
fn audience(target: &str) -> Result<String, Denied> {
    let bad = |why: &str| Denied::new(Refusal::BadAudience).detail(why.to_string());
    let query = target
        .split_once('?')
        .map_or("", |(_, q)| q.split('#').next().unwrap_or(""));
    let mut found: Option<String> = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "audience" | "aud" => {
                let value = percent_decode_str(value)
                    .decode_utf8()
                    .map_err(|_| bad("audience is not UTF-8"))?;
                if found.replace(value.into_owned()).is_some() {
                    return Err(bad("more than one audience"));
                }
            }
            "wait_for_change" if value == "true" => {
                return Err(Denied::new(Refusal::WaitNotServed)
                    .detail("wait_for_change on an identity token"))
            }
            _ => {}
        }
    }
    let audience = found.ok_or_else(|| bad("no audience"))?;
    if audience.is_empty() || audience.len() > MAX_AUDIENCE {
        return Err(bad("audience empty or over 256 bytes"));
    }
    if audience.chars().any(char::is_control) {
        return Err(bad("audience with a control character"));
    }
    Ok(audience)
}

/// Audiences refused are client-chosen: bound what an audit line carries.
fn truncate(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Tokens per node: governor's keyed GCRA over node UUIDs (only identified nodes reach it),
/// generic over its clock so tests move time by hand.
pub(crate) struct NodeLimiter<C: Clock = MonotonicClock> {
    limiter: RateLimiter<String, DefaultKeyedStateStore<String>, C, NoOpMiddleware<C::Instant>>,
    clock: C,
}

impl NodeLimiter<MonotonicClock> {
    pub(crate) fn new(per_second: u32, burst: u32) -> NodeLimiter {
        NodeLimiter::with_clock(per_second, burst, MonotonicClock)
    }
}

impl<C: Clock + Clone> NodeLimiter<C> {
    pub(crate) fn with_clock(per_second: u32, burst: u32, clock: C) -> Self {
        let rate = NonZeroU32::new(per_second.max(1)).expect("at least 1");
        let burst = NonZeroU32::new(burst.max(1)).expect("at least 1");
        NodeLimiter {
            limiter: RateLimiter::dashmap_with_clock(
                governor::Quota::per_second(rate).allow_burst(burst),
                clock.clone(),
            ),
            clock,
        }
    }

    /// Ok, or how long until `node` may have another token.
    pub(crate) fn check(&self, node: &str) -> Result<(), Duration> {
        self.limiter
            .check_key(&node.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Forgets nodes whose share is full again.
    pub(crate) fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Index;
    use crate::metadata::route;
    use crate::policy::file::parse_files;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use governor::clock::FakeRelativeClock;
    use std::path::Path;

    const POLICY: &str = r#"
[[zone]]
name = "lab"
cidrs = ["10.0.0.0/24"]
action = "allow"
identity_audiences = ["openbao", "spiffe://example.org"]
identity_vendor_data2 = "spiffe://example.org"

[[zone]]
name = "plain"
cidrs = ["10.0.1.0/24"]
action = "allow"
"#;

    fn policy() -> Policy {
        Policy::build(parse_files([(Path::new("p.toml"), POLICY)]).unwrap(), None)
    }

    fn node() -> NodeView {
        let inventory = serde_json::from_value(json!({"nodes": [{
            "uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", "name": "web-0",
            "provision_state": "active", "instance_uuid": "5c1d7f3e-0000-4000-8000-000000000001",
            "owner": "p-owner", "lessee": "p-lessee", "conductor_group": "rack-1",
            "resource_class": "baremetal-gold"}]}))
        .unwrap();
        let (views, _) = crate::node::build(inventory, &[], &mut Default::default());
        let index = Index::build(views, &[]);
        index.nodes()[0].as_ref().clone()
    }

    fn copy(dir: &Path, name: &str, fixture: &str) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/identity")
            .join(fixture);
        std::fs::copy(src, dir.join(name)).unwrap();
    }

    fn issuer(dir: &Path) -> Issuer {
        let metrics = Arc::new(Metrics::new());
        let keys = Arc::new(KeyStore::load(dir, metrics.clone()).unwrap());
        let config = IssuerConfig {
            issuer: "https://metadata.example.com".into(),
            ttl: 600,
            subject: Subject::parse("spiffe://example.org/ironic/node/{uuid}").unwrap(),
            per_second: 3,
            burst: 8,
            publish_on_metadata: false,
        };
        Issuer::new(config, keys, metrics)
    }

    fn flavoured_headers() -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert("metadata-flavor", "ironic".parse().unwrap());
        h
    }

    fn ask(
        i: &Issuer,
        p: &Policy,
        target: &str,
        headers: Option<&http::HeaderMap>,
    ) -> Result<Option<String>, Denied> {
        let route = route::parse(target).unwrap();
        let req = TokenRequest {
            target,
            headers,
            client: "10.0.0.7".parse().unwrap(),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        match asked(Some(i), p, &req, &route)? {
            None => Ok(None),
            Some(a) => {
                let reply = a.issue(&node(), req.client, now)?;
                assert_eq!(reply.content_type, "application/jwt");
                Ok(Some(String::from_utf8(reply.body.to_vec()).unwrap()))
            }
        }
    }

    /// (header, claims, signature) of a compact JWT, the first two parsed.
    fn parts(jwt: &str) -> (Value, Value, Vec<u8>) {
        let p: Vec<&str> = jwt.split('.').collect();
        assert_eq!(p.len(), 3, "{jwt}");
        let json = |s: &str| serde_json::from_slice(&URL_SAFE_NO_PAD.decode(s).unwrap()).unwrap();
        (
            json(p[0]),
            json(p[1]),
            URL_SAFE_NO_PAD.decode(p[2]).unwrap(),
        )
    }

    /// Whether `jwt` verifies against one key of the JWKS `i` publishes now (by its kid).
    fn verifies(i: &Issuer, jwt: &str) -> bool {
        let (header, _, sig) = parts(jwt);
        let jwks: Value = serde_json::from_slice(&i.published(JWKS_PATH).unwrap().body).unwrap();
        let signed = &jwt[..jwt.rfind('.').unwrap()];
        jwks["keys"].as_array().unwrap().iter().any(|k| {
            k["kid"] == header["kid"] && keys::tests::verify_with_jwk(k, signed.as_bytes(), &sig)
        })
    }

    #[test]
    fn claims_say_which_node_asked_and_for_whom() {
        let dir = tempfile::tempdir().unwrap();
        copy(dir.path(), "2026-01.pem", "ec-sec1.pem");
        let (i, p, h) = (issuer(dir.path()), policy(), flavoured_headers());
        let jwt = ask(
            &i,
            &p,
            "/openstack/latest/identity?audience=openbao",
            Some(&h),
        )
        .unwrap()
        .unwrap();
        let (header, claims, sig) = parts(&jwt);
        assert_eq!(
            header,
            json!({"alg": "ES256", "typ": "JWT", "kid": "2026-01"})
        );
        assert_eq!(sig.len(), 64);
        assert!(verifies(&i, &jwt));
        let jti = claims["jti"].as_str().unwrap().to_string();
        assert!(
            jti.len() == 32 && jti.bytes().all(|b| b.is_ascii_hexdigit()),
            "{jti}"
        );
        assert_eq!(
            claims,
            json!({
                "iss": "https://metadata.example.com",
                "sub": "spiffe://example.org/ironic/node/1be26c0b-03f2-4d2e-ae87-c02d7f33c123",
                "aud": "openbao",
                "iat": 1_800_000_000u64, "nbf": 1_800_000_000u64, "exp": 1_800_000_600u64,
                "jti": jti,
                "ironic": {
                    "node_uuid": "1be26c0b-03f2-4d2e-ae87-c02d7f33c123", "name": "web-0",
                    "instance_uuid": "5c1d7f3e-0000-4000-8000-000000000001",
                    "owner": "p-owner", "lessee": "p-lessee", "provision_state": "active",
                    "conductor_group": "rack-1", "resource_class": "baremetal-gold"
                }
            })
        );
        // The EC2 spelling and `aud=`; every token has its own jti.
        let other = ask(
            &i,
            &p,
            "/latest/meta-data/identity?aud=spiffe://example.org&x=1",
            Some(&h),
        )
        .unwrap()
        .unwrap();
        let (_, c2, _) = parts(&other);
        assert_eq!(c2["aud"], "spiffe://example.org");
        assert_ne!(c2["jti"], claims["jti"]);
        // A token cut short or with a changed payload does not verify.
        let forged = jwt.replacen(
            &jwt[..jwt.find('.').unwrap()],
            &URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            1,
        );
        assert!(!verifies(&i, &forged));
    }

    #[test]
    fn requests_are_checked_before_any_token() {
        let dir = tempfile::tempdir().unwrap();
        let (i, p, h) = (issuer(dir.path()), policy(), flavoured_headers());
        let path = "/openstack/latest/identity";
        let refused = |query: &str, headers: Option<&http::HeaderMap>| {
            let target = format!("{path}{query}");
            ask(&i, &p, &target, headers).err().map(|d| d.refusal)
        };
        // No key yet: the path does not exist.
        let no_key = refused("?audience=openbao", Some(&h));
        assert_eq!(no_key, Some(Refusal::IdentityUnavailable));
        copy(dir.path(), "k.pem", "ec-leading-zero.pem");
        i.keys.reload().unwrap();
        let header = |name: &str, value: &str| {
            let mut m = http::HeaderMap::new();
            m.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
            m
        };
        assert_eq!(
            refused("?audience=openbao", Some(&header("Metadata", "true"))),
            None
        );
        let google = header("Metadata-Flavor", "Google");
        for headers in [None, Some(&google)] {
            let r = refused("?audience=openbao", headers);
            assert_eq!(r, Some(Refusal::IdentityHeaderRequired));
        }
        let long = format!("?audience={}", "a".repeat(257));
        for (query, want) in [
            ("", Refusal::BadAudience),
            ("?audience=", Refusal::BadAudience),
            ("?audience=openbao&aud=openbao", Refusal::BadAudience),
            ("?audience=open%0abao", Refusal::BadAudience),
            ("?audience=%ff", Refusal::BadAudience),
            (&long, Refusal::BadAudience),
            (
                "?audience=openbao&wait_for_change=true",
                Refusal::WaitNotServed,
            ),
            // Matched exactly: no prefix, case or encoding surprises.
            ("?audience=openba", Refusal::AudienceNotAllowed),
            ("?audience=OpenBao", Refusal::AudienceNotAllowed),
            ("?audience=openbao%20", Refusal::AudienceNotAllowed),
            (
                "?audience=spiffe://example.org/x",
                Refusal::AudienceNotAllowed,
            ),
        ] {
            assert_eq!(refused(query, Some(&h)), Some(want), "{query}");
        }
    }

    #[test]
    fn other_paths_and_zones_without_audiences_get_no_token() {
        let dir = tempfile::tempdir().unwrap();
        copy(dir.path(), "k.pem", "ec-leading-zero.pem");
        let (i, p, h) = (issuer(dir.path()), policy(), flavoured_headers());
        // Other paths are none of this module's business; older versions have no identity.
        assert_eq!(
            ask(&i, &p, "/openstack/latest/meta_data.json", None).unwrap(),
            None
        );
        assert_eq!(
            ask(
                &i,
                &p,
                "/openstack/2012-08-10/identity?audience=openbao",
                Some(&h)
            )
            .unwrap(),
            None
        );
        assert_eq!(
            ask(&i, &p, "/1.0/meta-data/identity?audience=openbao", Some(&h)).unwrap(),
            None
        );
        // A zone that lists no audience refuses them all.
        let route = route::parse("/latest/meta-data/identity").unwrap();
        let req = TokenRequest {
            target: "/latest/meta-data/identity?aud=openbao",
            headers: Some(&h),
            client: "10.0.1.5".parse().unwrap(),
        };
        assert_eq!(
            asked(Some(&i), &p, &req, &route).err().map(|d| d.refusal),
            Some(Refusal::AudienceNotAllowed)
        );
        assert_eq!(
            asked(None, &p, &req, &route).err().map(|d| d.refusal),
            Some(Refusal::IdentityUnavailable)
        );
    }

    #[test]
    fn rotation_keeps_old_tokens_verifiable_until_their_key_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        copy(dir.path(), "2026-01.pem", "ec-sec1.pem");
        let (i, p, h) = (issuer(dir.path()), policy(), flavoured_headers());
        let target = "/openstack/latest/identity?audience=openbao";
        let old = ask(&i, &p, target, Some(&h)).unwrap().unwrap();
        copy(dir.path(), "2026-07.pem", "rsa-2048.pem");
        i.keys.reload().unwrap();
        let new = ask(&i, &p, target, Some(&h)).unwrap().unwrap();
        assert_eq!(
            parts(&new).0,
            json!({"alg": "RS256", "typ": "JWT", "kid": "2026-07"})
        );
        assert!(verifies(&i, &new) && verifies(&i, &old));
        std::fs::remove_file(dir.path().join("2026-01.pem")).unwrap();
        i.keys.reload().unwrap();
        assert!(verifies(&i, &new));
        assert!(!verifies(&i, &old), "a removed key is no longer published");
    }

    #[test]
    fn vendor_data2_carries_a_fresh_token_where_the_zone_places_one() {
        let dir = tempfile::tempdir().unwrap();
        let (i, p) = (issuer(dir.path()), policy());
        let route = route::parse("/openstack/latest/vendor_data2.json").unwrap();
        let now = SystemTime::now();
        let served = || Reply::ok(JSON, &b"{\"static\": {\"a\": 1}}"[..]);
        let place_for = |ip: &str| {
            place(
                Some(&i),
                &p,
                &route,
                &node(),
                served(),
                (ip.parse().unwrap(), now),
            )
            .unwrap()
        };
        // Without a key it is served as it is.
        assert_eq!(place_for("10.0.0.7"), served());
        copy(dir.path(), "k.pem", "ec-sec1.pem");
        i.keys.reload().unwrap();
        let placed = place_for("10.0.0.7");
        let doc: Value = serde_json::from_slice(&placed.body).unwrap();
        assert_eq!(doc["static"], json!({"a": 1}));
        let jwt = doc["openstack_iid"]["jwt"].as_str().unwrap();
        assert_eq!(parts(jwt).1["aud"], "spiffe://example.org");
        assert!(verifies(&i, jwt));
        let text = String::from_utf8(placed.body.to_vec()).unwrap();
        assert_eq!(
            text,
            format!("{{\"static\": {{\"a\": 1}}, \"openstack_iid\": {{\"jwt\": \"{jwt}\"}}}}")
        );
        assert_ne!(place_for("10.0.0.7"), placed, "fresh per answer");
        // A zone that places none, another file, or no issuer: untouched.
        assert_eq!(place_for("10.0.1.7"), served());
        let other = route::parse("/openstack/latest/vendor_data.json").unwrap();
        let out = place(
            Some(&i),
            &p,
            &other,
            &node(),
            served(),
            ("10.0.0.7".parse().unwrap(), now),
        )
        .unwrap();
        assert_eq!(out, served());
        let out = place(
            None,
            &p,
            &route,
            &node(),
            served(),
            ("10.0.0.7".parse().unwrap(), now),
        )
        .unwrap();
        assert_eq!(out, served());
    }

    #[test]
    fn a_node_has_its_share_of_tokens() {
        let clock = FakeRelativeClock::default();
        let limiter = NodeLimiter::with_clock(3, 8, clock.clone());
        for _ in 0..8 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(334),
            "{wait:?}"
        );
        assert!(limiter.check("b").is_ok(), "another node has its own share");
        clock.advance(Duration::from_millis(334));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_err());
    }

    #[test]
    fn the_issuer_limits_each_node_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        copy(dir.path(), "k.pem", "ec-sec1.pem");
        let (i, p, h) = (issuer(dir.path()), policy(), flavoured_headers());
        let target = "/openstack/latest/identity?audience=openbao";
        let results: Vec<Option<Refusal>> = (0..12)
            .map(|_| ask(&i, &p, target, Some(&h)).err().map(|d| d.refusal))
            .collect();
        let issued = results.iter().filter(|r| r.is_none()).count();
        assert!((8..12).contains(&issued), "{results:?}");
        assert!(matches!(results[11], Some(Refusal::IdentityRateLimited(s)) if s >= 1));
        let count = |r: &str| i.metrics.identity.tokens.with_label_values(&[r]).get();
        assert_eq!(
            (count("issued"), count("rate_limited")),
            (issued as u64, 12 - issued as u64)
        );
    }

    #[test]
    fn subject_templates_name_the_uuid_once() {
        assert_eq!(Subject::parse("{uuid}").unwrap().of("u"), "u");
        assert_eq!(
            Subject::parse("spiffe://td/ironic/node/{uuid}")
                .unwrap()
                .of("u"),
            "spiffe://td/ironic/node/u"
        );
        for bad in ["", "node", "{uuid}{uuid}", "{name}/{uuid}", "{uuid}}"] {
            assert!(Subject::parse(bad).is_err(), "{bad}");
        }
    }
}
