//! The token: claims about one node, signed as a compact JWS (RFC 7515/7519).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::Serialize;

use super::keys::Key;
use crate::node::NodeView;

/// Longest lifetime a token may be given, in seconds.
pub(crate) const MAX_TTL: u32 = 3600;

/// `sub`: the node UUID inside a template (`{uuid}` alone by default, or a SPIFFE ID such
/// as `spiffe://example.org/ironic/node/{uuid}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subject {
    before: String,
    after: String,
}

impl Subject {
    /// A template naming `{uuid}` exactly once, and no other `{...}`.
    pub(crate) fn parse(template: &str) -> Result<Subject, String> {
        let bad = || {
            format!("{template:?}: the subject template must contain {{uuid}} once, and no other braces")
        };
        let (before, after) = template.split_once("{uuid}").ok_or_else(bad)?;
        if [before, after].iter().any(|p| p.contains(['{', '}'])) {
            return Err(bad());
        }
        if template.len() > 512 || template.chars().any(char::is_control) {
            return Err(format!(
                "{template:?}: the subject template must be at most 512 characters, none a control character"
            ));
        }
        Ok(Subject {
            before: before.to_string(),
            after: after.to_string(),
        })
    }

    pub(crate) fn of(&self, uuid: &str) -> String {
        format!("{}{uuid}{}", self.before, self.after)
    }
}

/// What a token says.
#[derive(Debug, Serialize)]
pub(crate) struct Claims<'a> {
    pub(crate) iss: &'a str,
    pub(crate) sub: String,
    pub(crate) aud: &'a str,
    pub(crate) iat: u64,
    pub(crate) nbf: u64,
    pub(crate) exp: u64,
    pub(crate) jti: String,
    pub(crate) ironic: NodeClaims<'a>,
}

/// The `ironic` claim: the node as Ironic describes it (`null` where Ironic has nothing).
#[derive(Debug, Serialize)]
pub(crate) struct NodeClaims<'a> {
    pub(crate) node_uuid: &'a str,
    pub(crate) name: Option<&'a str>,
    pub(crate) instance_uuid: Option<&'a str>,
    pub(crate) owner: Option<&'a str>,
    pub(crate) lessee: Option<&'a str>,
    pub(crate) provision_state: Option<&'a str>,
    pub(crate) conductor_group: Option<&'a str>,
    pub(crate) resource_class: Option<&'a str>,
}

impl<'a> NodeClaims<'a> {
    pub(crate) fn of(node: &'a NodeView) -> NodeClaims<'a> {
        let f = &node.facts;
        NodeClaims {
            node_uuid: &node.uuid,
            name: node.name.as_deref(),
            instance_uuid: f.instance_uuid.as_deref(),
            owner: f.owner.as_deref(),
            lessee: f.lessee.as_deref(),
            provision_state: node.provision_state.as_deref(),
            conductor_group: f.conductor_group.as_deref(),
            resource_class: f.resource_class.as_deref(),
        }
    }
}

/// A fresh token id: 128 random bits, as 32 hex digits.
pub(crate) fn new_jti() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `claims` signed by `key`: `header.payload.signature`, each base64url without padding.
pub(crate) fn sign(key: &Key, claims: &impl Serialize) -> Result<String, ring::error::Unspecified> {
    #[derive(Serialize)]
    struct Header<'a> {
        alg: &'static str,
        typ: &'static str,
        kid: &'a str,
    }
    let header = Header {
        alg: key.alg().name(),
        typ: "JWT",
        kid: &key.kid,
    };
    // Structs with string keys always serialise.
    let header = serde_json::to_vec(&header).map_err(|_| ring::error::Unspecified)?;
    let claims = serde_json::to_vec(claims).map_err(|_| ring::error::Unspecified)?;
    let mut token = URL_SAFE_NO_PAD.encode(header);
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(claims));
    let signature = key.sign(token.as_bytes())?;
    token.push('.');
    token.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(token)
}
