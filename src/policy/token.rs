//! IMDSv2-compatible session tokens, stateless: an HMAC-SHA256 over the client address and
//! the expiry, keyed from a file. Replicas sharing the key accept each other's tokens and a
//! restart invalidates none.

use std::net::IpAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Longest token lifetime AWS allows (six hours), and the shortest.
pub(crate) const MAX_TTL: u32 = 21_600;
pub(crate) const MIN_TTL: u32 = 1;
const VERSION: u8 = 1;
const TOKEN_LEN: usize = 1 + 8 + 32;

#[derive(Clone)]
pub(crate) struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(***)")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("token is not well-formed")]
    Malformed,
    #[error("token was not issued to this client or by this service")]
    Forged,
    #[error("token has expired")]
    Expired,
}

impl TokenKey {
    /// The key is the SHA-256 of the file's bytes; at least 16 bytes of secret are required.
    pub(crate) fn from_file(path: &Path) -> Result<TokenKey, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read token key file {}: {e}", path.display()))?;
        let trimmed = bytes.trim_ascii();
        if trimmed.len() < 16 {
            return Err(format!(
                "token key file {} holds fewer than 16 bytes",
                path.display()
            ));
        }
        Ok(TokenKey(Sha256::digest(trimmed).into()))
    }

    /// A random key: tokens then die with the process and are not shared between replicas.
    pub(crate) fn from_bytes(key: [u8; 32]) -> TokenKey {
        TokenKey(key)
    }

    pub(crate) fn random() -> TokenKey {
        TokenKey(rand::random())
    }

    fn mac(&self, client: IpAddr, expiry: u64) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("any key length");
        mac.update(b"ironic-metadata token v1\0");
        let ip = match client.to_canonical() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        mac.update(&ip);
        mac.update(&expiry.to_be_bytes());
        mac
    }

    pub(crate) fn issue(&self, client: IpAddr, now: SystemTime, ttl: u32) -> String {
        let expiry = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs()
            + u64::from(ttl);
        let mut raw = Vec::with_capacity(TOKEN_LEN);
        raw.push(VERSION);
        raw.extend_from_slice(&expiry.to_be_bytes());
        raw.extend_from_slice(&self.mac(client, expiry).finalize().into_bytes());
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub(crate) fn verify(
        &self,
        token: &str,
        client: IpAddr,
        now: SystemTime,
    ) -> Result<(), TokenError> {
        if token.len() > 128 {
            return Err(TokenError::Malformed);
        }
        let raw = URL_SAFE_NO_PAD
            .decode(token.trim())
            .map_err(|_| TokenError::Malformed)?;
        if raw.len() != TOKEN_LEN || raw[0] != VERSION {
            return Err(TokenError::Malformed);
        }
        let expiry = u64::from_be_bytes(raw[1..9].try_into().expect("8 bytes"));
        self.mac(client, expiry)
            .verify_slice(&raw[9..])
            .map_err(|_| TokenError::Forged)?;
        let now = now
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs();
        if now >= expiry {
            return Err(TokenError::Expired);
        }
        Ok(())
    }
}

/// The TTL header of a token PUT: an integer from 1 to 21600.
pub(crate) fn parse_ttl(value: Option<&str>) -> Option<u32> {
    value?
        .trim()
        .parse::<u32>()
        .ok()
        .filter(|t| (MIN_TTL..=MAX_TTL).contains(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_verify_expire_and_bind_to_client() {
        let key = TokenKey([7; 32]);
        let me: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let tok = key.issue(me, t0, 60);
        assert_eq!(key.verify(&tok, me, t0 + Duration::from_secs(59)), Ok(()));
        assert_eq!(
            key.verify(&tok, me, t0 + Duration::from_secs(60)),
            Err(TokenError::Expired)
        );
        assert_eq!(
            key.verify(&tok, "192.0.2.2".parse().unwrap(), t0),
            Err(TokenError::Forged)
        );
        assert_eq!(
            TokenKey([8; 32]).verify(&tok, me, t0),
            Err(TokenError::Forged)
        );
        assert_eq!(
            key.verify("not a token", me, t0),
            Err(TokenError::Malformed)
        );
        // The same address seen as IPv4-mapped IPv6 is the same client.
        assert_eq!(
            key.verify(&tok, "::ffff:192.0.2.1".parse().unwrap(), t0),
            Ok(())
        );
    }

    #[test]
    fn ttl_bounds() {
        assert_eq!(parse_ttl(Some("21600")), Some(21600));
        assert_eq!(parse_ttl(Some("1")), Some(1));
        for bad in [Some("0"), Some("21601"), Some("-1"), Some("ten"), None] {
            assert_eq!(parse_ttl(bad), None);
        }
    }
}
