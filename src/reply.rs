//! Plain response values, and the one place where a refusal becomes an HTTP status.

use bytes::Bytes;

pub const TEXT: &str = "text/plain; charset=utf-8";
pub const JSON: &str = "application/json";
/// User data is opaque bytes (cloud-config, a script, gzip, MIME multipart).
pub const USER_DATA: &str = "text/plain";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
    pub headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn ok(content_type: &'static str, body: impl Into<Bytes>) -> Reply {
        Reply {
            status: 200,
            content_type,
            body: body.into(),
            headers: Vec::new(),
        }
    }

    pub fn text(body: impl Into<Bytes>) -> Reply {
        Reply::ok(TEXT, body)
    }
}

/// Every reason a request is not answered with data. Each maps to exactly one status in
/// [`Refusal::reply`]; `reason` is the audit and metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
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
}

impl Refusal {
    pub fn reason(self) -> &'static str {
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
        }
    }

    /// The single mapping from refusal to what the client sees. Identity refusals all look
    /// the same from outside so a prober learns nothing about other nodes.
    pub fn reply(self) -> Reply {
        let (status, body): (u16, &'static str) = match self {
            Refusal::NoClientAddress => (403, "client address unknown\n"),
            Refusal::UnknownAddress | Refusal::ContestedAddress | Refusal::NodeNotServed => {
                (404, "no metadata for this address\n")
            }
            Refusal::NotReady => (503, "metadata not available yet\n"),
            Refusal::NotFound => (404, "not found\n"),
            Refusal::BadPath => (400, "bad request path\n"),
            Refusal::PathTooLong => (414, "request path too long\n"),
            Refusal::MethodNotAllowed => (405, "method not allowed\n"),
        };
        let mut reply = Reply {
            status,
            content_type: TEXT,
            body: Bytes::from_static(body.as_bytes()),
            headers: Vec::new(),
        };
        match self {
            Refusal::MethodNotAllowed => reply.headers.push(("Allow", "GET, HEAD".into())),
            Refusal::NotReady => reply.headers.push(("Retry-After", "5".into())),
            _ => {}
        }
        reply
    }

    /// Refusals that say something about who is asking, worth an audit line.
    pub fn is_denial(self) -> bool {
        !matches!(self, Refusal::NotFound)
    }
}
