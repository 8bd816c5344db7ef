//! Entry points for the criterion benchmarks and the integration tests, which live outside
//! the crate: a few calls over the crate's own types, nothing they could not reach through
//! the binary but at a cost a benchmark can isolate.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use crate::admit::{Context, Request};
use crate::identity::neighbour::{Neighbours, Netlink};
use crate::identity::DEFAULT_SERVED_STATES;
use crate::identity_token::store::KeyStore;
use crate::identity_token::token::Subject;
use crate::identity_token::{Issuer, IssuerConfig};
use crate::inventory::{file, Catalog};
use crate::metadata::password::PasswordStore;
use crate::metrics::Metrics;
use crate::policy::store::PolicyStore;
use crate::policy::token::TokenKey;
use crate::policy::Policy;

/// The request path over an inventory file and a policy directory, without a network.
pub struct RequestPath {
    catalog: Catalog,
    policy: Arc<Policy>,
    tokens: TokenKey,
    passwords: PasswordStore,
    checkins: crate::metadata::checkin::CheckinStore,
    identity: Option<Issuer>,
}

impl RequestPath {
    pub fn from_files(inventory: &Path, policy_dir: &Path) -> Result<RequestPath, String> {
        let served = DEFAULT_SERVED_STATES
            .iter()
            .map(|s| s.to_string())
            .collect();
        let catalog = Catalog::new("probe", served);
        catalog.publish(file::load(inventory).map_err(|e| e.to_string())?);
        let store =
            PolicyStore::load(policy_dir, Arc::new(Metrics::new())).map_err(|e| e.to_string())?;
        Ok(RequestPath {
            catalog,
            policy: store.current(),
            tokens: TokenKey::random(),
            passwords: PasswordStore::new(None)?,
            checkins: crate::metadata::checkin::CheckinStore::new(None)?,
            identity: None,
        })
    }

    /// The same path with identity tokens configured, keys from `key_dir`: what every
    /// request of a service started with --identity-key-dir goes through.
    pub fn with_identity(mut self, key_dir: &Path) -> Result<RequestPath, String> {
        let metrics = Arc::new(Metrics::new());
        let keys = KeyStore::load(key_dir, metrics.clone()).map_err(|e| e.to_string())?;
        let config = IssuerConfig {
            issuer: "https://metadata.example.com".into(),
            ttl: 600,
            subject: Subject::parse("{uuid}")?,
            per_second: 3,
            burst: 8,
            publish_on_metadata: false,
        };
        self.identity = Some(Issuer::new(config, Arc::new(keys), metrics));
        Ok(self)
    }

    /// A GET of `path` from `peer` through every step of the path (no MAC lookups, no
    /// on-demand refresh): the status and the body's length.
    pub fn get(&self, peer: IpAddr, path: &str) -> (u16, usize) {
        let ctx = Context {
            catalog: &self.catalog,
            neighbours: &Netlink,
            policy: &self.policy,
            tokens: &self.tokens,
            passwords: &self.passwords,
            checkins: &self.checkins,
            tree: &Default::default(),
            now: SystemTime::now(),
            today: "2026-11-27",
            own_addresses: &[],
            identity: self.identity.as_ref(),
        };
        let req = Request {
            method: "GET",
            path,
            peer: Some(peer),
            ..Request::default()
        };
        let out = crate::handle::handle_now(&ctx, &req);
        (out.reply.status, out.reply.body.len())
    }
}

/// One kernel route query for `ip`, as a MAC-verifying zone asks it; false on error.
pub fn route_query(ip: IpAddr) -> bool {
    Netlink.resolve(ip).is_ok()
}

/// Decodes a configdrive in its string form; false when it is not readable.
pub fn decode_configdrive(text: &str) -> bool {
    crate::node::configdrive::decode(text).is_ok()
}

/// A session token as the service with the key in `key_file` would issue it to `client`
/// at `issued`, valid for `ttl` seconds.
pub fn session_token(
    key_file: &Path,
    client: IpAddr,
    issued: SystemTime,
    ttl: u32,
) -> Result<String, String> {
    Ok(TokenKey::from_file(key_file)?.issue(client, issued, ttl))
}
