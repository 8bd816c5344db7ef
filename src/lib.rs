//! ironic-metadata: OpenStack- and EC2-compatible metadata for bare-metal nodes managed by
//! OpenStack Ironic, served on 169.254.169.254 by a pingora gateway.
//!
//! Data flows one way through the modules, each shared type living where it is produced:
//!
//! - [`ironic`]: Ironic's wire types, the REST client and its credentials;
//! - [`node`]: the node as served (configdrive decoding, network data from ports), built
//!   from the wire types;
//! - [`identity`]: the index of claims (address → node, MAC → node), the kernel's neighbour
//!   table and the zone's MAC rules;
//! - [`inventory`]: the published catalog, its file source, the Ironic refresher and the
//!   index snapshot a warm restart serves from;
//! - [`metadata`]: path → route, node + route → bytes, the password store;
//! - [`admit`] (steps 1 to 5 of the request path) and [`handle`] (identity and rendering,
//!   one outcome per request);
//! - [`proxy`]: pingora, one app per file, and the assembled server.
//!
//! Beside them: [`policy`] (zones, forwarded chains, limits, tokens, reload), [`reply`]
//! (replies, refusals, header fields), [`versions`], [`metrics`], [`conn`] (connection
//! caps), [`audit`] (audit lines no client can drive, the refusal budget), [`longpoll`]
//! (requests parked until their document changes), [`segment`] (the impostor watch),
//! [`identity_token`] (signed node identity tokens), [`admin`] (health, readiness, metrics
//! answers), [`server`] (settings and start-up) and [`cli`]. Only the binary's entry point
//! and the hidden [`fuzzing`] and [`probe`] modules are public: everything else is private
//! to the crate, so the compiler reports what nothing uses.
#![forbid(unsafe_code)]
#![warn(clippy::too_many_lines)]
// The parsers build without the server (the fuzz targets): the rest is unused there.
#![cfg_attr(not(feature = "server"), allow(dead_code, unused_imports))]

mod admin;
mod admit;
mod audit;
mod cli;
#[cfg(feature = "server")]
mod commands;
mod conn;
mod explain;
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod identity;
mod identity_token;
mod inventory;
mod ironic;
#[cfg(feature = "server")]
mod logging;
mod longpoll;
mod metadata;
mod metrics;
mod node;
mod policy;
#[doc(hidden)]
pub mod probe;
#[cfg(feature = "server")]
mod proxy;
mod reply;
#[cfg(feature = "server")]
mod segment;
#[cfg(feature = "server")]
mod server;
mod versions;

#[cfg(feature = "server")]
pub use commands::main;
