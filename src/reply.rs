//! Plain response values: the one place where a refusal becomes an HTTP status, and the
//! one list of header fields every listener writes for a reply.

use bytes::Bytes;

pub(crate) const TEXT: &str = "text/plain; charset=utf-8";
pub(crate) const JSON: &str = "application/json";
/// User data is opaque bytes (cloud-config, a script, gzip, MIME multipart).
pub(crate) const USER_DATA: &str = "text/plain";

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) content_type: &'static str,
    pub(crate) body: Bytes,
    pub(crate) headers: Vec<(&'static str, String)>,
    /// The IP TTL (IPv6 hop limit) the answer's packets leave with, when limited.
    pub(crate) hop_limit: Option<u8>,
    /// The entity tag, when known before the body (`meta_data.json`, whose seed changes
    /// on every answer: a weak tag of everything else); computed from the body otherwise.
    pub(crate) etag: Option<std::sync::Arc<str>>,
}

impl Reply {
    pub(crate) fn ok(content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            content_type,
            body: body.into(),
            headers: Vec::new(),
            hop_limit: None,
            etag: None,
        }
    }

    pub(crate) fn text(body: impl Into<Bytes>) -> Reply {
        Reply::ok(TEXT, body)
    }

    /// This answer's entity tag: the one given, or a strong one of the body.
    pub(crate) fn entity_tag(&self) -> std::sync::Arc<str> {
        match &self.etag {
            Some(t) => t.clone(),
            None => entity_tag(&self.body, false).into(),
        }
    }

    /// Calls `put` with each header field of this reply, in the order they are sent.
    pub(crate) fn fields<E>(
        &self,
        mut put: impl FnMut(&'static str, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        put("Content-Type", self.content_type)?;
        if self.status != 304 {
            put("Content-Length", &self.body.len().to_string())?;
        }
        put("Cache-Control", "no-store")?;
        for (k, v) in &self.headers {
            put(k, v)?;
        }
        Ok(())
    }

    /// The whole HTTP/1.1 response, closing the connection: for answers written before
    /// any request was read (a connection refused when it is accepted).
    pub(crate) fn to_http1_closing(&self) -> Vec<u8> {
        use std::fmt::Write;
        let reason = http::StatusCode::from_u16(self.status)
            .ok()
            .and_then(|s| s.canonical_reason())
            .unwrap_or("");
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", self.status);
        let _ = self.fields(|k, v| write!(head, "{k}: {v}\r\n"));
        head.push_str("Connection: close\r\n\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// An entity tag of `bytes`: 24 hex digits of their SHA-256, the same on every replica.
pub(crate) fn entity_tag(bytes: &[u8], weak: bool) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(bytes);
    let tag: String = d[..12].iter().map(|b| format!("{b:02x}")).collect();
    if weak {
        format!("W/\"{tag}\"")
    } else {
        format!("\"{tag}\"")
    }
}

/// A refusal with what its audit line says: the node it concerns and why (never sent to
/// the client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Denied {
    pub(crate) refusal: Refusal,
    pub(crate) node: Option<String>,
    pub(crate) detail: Option<String>,
}

impl Denied {
    pub(crate) fn new(refusal: Refusal) -> Denied {
        Denied {
            refusal,
            node: None,
            detail: None,
        }
    }

    pub(crate) fn detail(mut self, detail: impl Into<String>) -> Denied {
        self.detail = Some(detail.into());
        self
    }

    pub(crate) fn node(mut self, uuid: &str) -> Denied {
        self.node = Some(uuid.to_string());
        self
    }
}

impl From<Refusal> for Denied {
    fn from(refusal: Refusal) -> Denied {
        Denied::new(refusal)
    }
}

/// Every reason a request is not answered with data. Each maps to exactly one status in
/// [`Refusal::reply`]; `reason` is the audit and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Refusal {
    /// The peer address is unavailable (not a TCP client): nobody to answer for.
    NoClientAddress,
    /// No node claims the client's address.
    UnknownAddress,
    /// Several nodes claim the client's address.
    ContestedAddress,
    /// The node's provision state is not served.
    NodeNotServed,
    /// No inventory has been loaded yet (Ironic not reached since start-up).
    NotReady,
    /// The path names nothing in the metadata trees.
    NotFound,
    /// The path is not decodable.
    BadPath,
    /// The path is longer than any metadata path.
    PathTooLong,
    /// A method other than GET or HEAD.
    MethodNotAllowed,
    /// A forwarded header from a trusted proxy that cannot be parsed, or too long a chain.
    BadForwardedHeader,
    /// The client address is in no zone of the policy.
    NoZone,
    /// The client's zone denies.
    ZoneDenied,
    /// The client is over its zone's rate; seconds until it may ask again.
    RateLimited(u64),
    /// The zone does not serve this path.
    PathDenied,
    /// A session token is present but invalid, forged or expired.
    TokenInvalid,
    /// The zone requires a session token and none was sent.
    TokenRequired,
    /// A token PUT without a valid TTL header.
    TokenBadTtl,
    /// A token PUT that came through a proxy (carries X-Forwarded-For), or to a versioned path.
    TokenPutForbidden,
    /// A password POST when one is already set.
    PasswordExists,
    /// A password POST over 1020 bytes.
    PasswordTooLong,
    /// The password could not be stored.
    PasswordNotStored,
    /// A check-in (phone_home, reporting) whose body is not what cloud-init sends.
    CheckinMalformed,
    /// A check-in body over 16 KiB.
    CheckinTooLarge,
    /// The node sent more check-ins than allowed.
    CheckinRateLimited,
    /// The check-in could not be stored.
    CheckinNotStored,
    /// A body on a request that takes none (anything but the token PUT and password POST).
    BodyNotAccepted,
    /// More header lines or header bytes than any metadata client sends.
    HeadersTooLarge,
    /// A password POST whose body did not arrive within the header timeout.
    BodyTimeout,
    /// The zone verifies MACs and the client's neighbour MAC is not a port of its node.
    MacMismatch,
    /// The zone verifies MACs and the client has none to verify (routed, behind a proxy, no
    /// neighbour entry).
    MacUnverifiable,
    /// The kernel's neighbour table could not be read.
    NeighbourLookupFailed,
    /// The listener already holds `MAX_CONNECTIONS` (refused when accepted).
    TotalConnections,
    /// The client (address, or IPv6 prefix) already holds `MAX_CONNECTIONS_PER_CLIENT`.
    ClientConnections,
    /// The client was refused more often than its budget allows: its connection is closed
    /// and new ones refused until the budget refills.
    TooManyRefusals,
    /// The request's Host is neither a metadata address, one of the listeners' own, nor a
    /// name the zone allows (DNS rebinding).
    HostNotAllowed,
    /// The zone requires a header (`require_header`) the request lacks.
    HeaderRequired,
    /// The zone refuses forwarded headers from peers that are not its trusted proxies.
    ForwardedRefused,
    /// The zone limits a token answer's hops and the socket would not take the limit.
    HopLimitUnavailable,
    /// `wait_for_change`, `last_etag` or `timeout_sec` is not valid.
    BadWait,
    /// The client (or the listener) already holds as many waiting requests as allowed.
    TooManyWaiting,
    /// An identity token is asked and no signing key is loaded (or none is configured).
    IdentityUnavailable,
    /// An identity token is asked without `Metadata-Flavor: ironic` or `Metadata: true`.
    IdentityHeaderRequired,
    /// An identity token is asked without one valid `audience` (or `aud`).
    BadAudience,
    /// An identity token is asked for an audience the client's zone does not list.
    AudienceNotAllowed,
    /// The node was issued its share of identity tokens; seconds until the next one.
    IdentityRateLimited(u64),
    /// An identity token could not be signed.
    IdentityNotSigned,
    /// `wait_for_change` on a path whose every answer is new (a token).
    WaitNotServed,
}

impl Refusal {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Refusal::NoClientAddress => "no_client_address",
            Refusal::UnknownAddress => "unknown_address",
            Refusal::ContestedAddress => "contested_address",
            Refusal::NodeNotServed => "node_not_served",
            Refusal::NotReady => "not_ready",
            Refusal::NotFound => "not_found",
            Refusal::BadPath => "bad_path",
            Refusal::PathTooLong => "path_too_long",
            Refusal::MethodNotAllowed => "method_not_allowed",
            Refusal::BadForwardedHeader => "bad_forwarded_header",
            Refusal::NoZone => "no_zone",
            Refusal::ZoneDenied => "zone_denied",
            Refusal::RateLimited(_) => "rate_limited",
            Refusal::PathDenied => "path_denied",
            Refusal::TokenInvalid => "token_invalid",
            Refusal::TokenRequired => "token_required",
            Refusal::TokenBadTtl => "token_bad_ttl",
            Refusal::TokenPutForbidden => "token_put_forbidden",
            Refusal::PasswordExists => "password_exists",
            Refusal::PasswordTooLong => "password_too_long",
            Refusal::PasswordNotStored => "password_not_stored",
            Refusal::CheckinMalformed => "checkin_malformed",
            Refusal::CheckinTooLarge => "checkin_too_large",
            Refusal::CheckinRateLimited => "checkin_rate_limited",
            Refusal::CheckinNotStored => "checkin_not_stored",
            Refusal::BodyNotAccepted => "body_not_accepted",
            Refusal::HeadersTooLarge => "headers_too_large",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::MacMismatch => "mac_mismatch",
            Refusal::MacUnverifiable => "mac_unverifiable",
            Refusal::NeighbourLookupFailed => "neighbour_lookup_failed",
            Refusal::TotalConnections => "total_limit",
            Refusal::ClientConnections => "client_limit",
            Refusal::TooManyRefusals => "refusal_budget",
            Refusal::HostNotAllowed => "host_not_allowed",
            Refusal::HeaderRequired => "header_required",
            Refusal::ForwardedRefused => "forwarded_refused",
            Refusal::HopLimitUnavailable => "hop_limit_unavailable",
            Refusal::BadWait => "bad_wait",
            Refusal::TooManyWaiting => "too_many_waiting",
            Refusal::IdentityUnavailable => "identity_unavailable",
            Refusal::IdentityHeaderRequired => "identity_header_required",
            Refusal::BadAudience => "bad_audience",
            Refusal::AudienceNotAllowed => "audience_not_allowed",
            Refusal::IdentityRateLimited(_) => "identity_rate_limited",
            Refusal::IdentityNotSigned => "identity_not_signed",
            Refusal::WaitNotServed => "wait_not_served",
        }
    }

    /// The single mapping from refusal to what the client sees. Identity refusals all look
    /// the same from outside so a prober learns nothing about other nodes.
    pub(crate) fn reply(self) -> Reply {
        let (status, body): (u16, &'static str) = match self {
            Refusal::NoClientAddress => (403, "client address unknown\n"),
            Refusal::UnknownAddress
            | Refusal::ContestedAddress
            | Refusal::NodeNotServed
            | Refusal::MacMismatch
            | Refusal::MacUnverifiable => (404, "no metadata for this address\n"),
            Refusal::NotReady => (503, "metadata not available yet\n"),
            Refusal::NeighbourLookupFailed => (503, "metadata not available\n"),
            Refusal::NotFound => (404, "not found\n"),
            Refusal::BadPath => (400, "bad request path\n"),
            Refusal::PathTooLong => (414, "request path too long\n"),
            Refusal::MethodNotAllowed => (405, "method not allowed\n"),
            Refusal::BadForwardedHeader => (400, "bad forwarded header\n"),
            Refusal::NoZone | Refusal::ZoneDenied => (403, "forbidden\n"),
            Refusal::RateLimited(_) => (429, "too many requests\n"),
            Refusal::PathDenied => (403, "path not served to this network\n"),
            Refusal::TokenInvalid | Refusal::TokenRequired => (401, "unauthorized\n"),
            Refusal::TokenBadTtl => (
                400,
                "missing or invalid X-aws-ec2-metadata-token-ttl-seconds\n",
            ),
            Refusal::TokenPutForbidden => (403, "forbidden\n"),
            Refusal::PasswordExists => (409, "password already set\n"),
            Refusal::PasswordTooLong => (400, "password too long\n"),
            Refusal::PasswordNotStored => (500, "password not stored\n"),
            Refusal::CheckinMalformed => (400, "malformed check-in\n"),
            Refusal::CheckinTooLarge => (413, "check-in over 16384 bytes\n"),
            Refusal::CheckinRateLimited => (429, "too many check-ins\n"),
            Refusal::CheckinNotStored => (500, "check-in not stored\n"),
            Refusal::BodyNotAccepted => (413, "request body not accepted\n"),
            Refusal::HeadersTooLarge => (431, "request headers too large\n"),
            Refusal::BodyTimeout => (408, "request body not received in time\n"),
            Refusal::TotalConnections => (503, "too many connections\n"),
            Refusal::ClientConnections => (429, "too many connections from this client\n"),
            Refusal::TooManyRefusals => (429, "too many refused requests\n"),
            Refusal::HostNotAllowed => (403, "host not allowed\n"),
            Refusal::HeaderRequired => (403, "required header missing\n"),
            Refusal::ForwardedRefused => (403, "forwarded header refused\n"),
            Refusal::HopLimitUnavailable => (503, "token not available\n"),
            Refusal::BadWait => (
                400,
                "wait_for_change must be true or false, timeout_sec a whole number from 1 to 300, last_etag at most 128 characters\n",
            ),
            Refusal::TooManyWaiting => (429, "too many waiting requests\n"),
            Refusal::IdentityUnavailable => (404, "not found\n"),
            Refusal::IdentityHeaderRequired => (
                400,
                "identity tokens need the header Metadata-Flavor: ironic or Metadata: true\n",
            ),
            Refusal::BadAudience => (
                400,
                "give one audience= (or aud=) of 1 to 256 bytes without control characters\n",
            ),
            Refusal::AudienceNotAllowed => (403, "audience not allowed\n"),
            Refusal::IdentityRateLimited(_) => (429, "too many identity tokens\n"),
            Refusal::IdentityNotSigned => (503, "identity token not available\n"),
            Refusal::WaitNotServed => (400, "wait_for_change is not served for this path\n"),
        };
        Reply {
            status,
            content_type: TEXT,
            body: Bytes::from_static(body.as_bytes()),
            headers: self.headers(),
            hop_limit: None,
            etag: None,
        }
    }

    /// The headers a refusal's answer carries.
    fn headers(self) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        match self {
            Refusal::MethodNotAllowed => headers.push(("Allow", "GET, HEAD".into())),
            Refusal::NotReady | Refusal::NeighbourLookupFailed | Refusal::IdentityNotSigned => {
                headers.push(("Retry-After", "5".into()))
            }
            Refusal::RateLimited(secs) | Refusal::IdentityRateLimited(secs) => {
                headers.push(("Retry-After", secs.max(1).to_string()))
            }
            Refusal::TotalConnections | Refusal::ClientConnections | Refusal::TooManyRefusals => {
                headers.push(("Retry-After", "1".into()))
            }
            _ => {}
        }
        headers
    }

    /// Refusals that say something about who is asking, worth an audit line.
    pub(crate) fn is_denial(self) -> bool {
        !matches!(
            self,
            Refusal::NotFound | Refusal::IdentityUnavailable | Refusal::IdentityNotSigned
        )
    }
}
