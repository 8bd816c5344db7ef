//! ironic-metadata: OpenStack- and EC2-compatible metadata for bare-metal nodes managed by
//! OpenStack Ironic, served on 169.254.169.254 by a pingora gateway.
//!
//! The request path, one module per step: [`gateway`] runs the fixed filter order over
//! plain types, [`identity`] maps the client to one node of the [`inventory`], and
//! [`metadata`] renders that node's files. [`proxy`] is the only module that knows pingora.
#![forbid(unsafe_code)]

pub mod admin;
pub mod cli;
pub mod conn;
#[doc(hidden)]
pub mod fuzzing;
pub mod gateway;
pub mod identity;
pub mod inventory;
pub mod ironic;
pub mod metadata;
pub mod metrics;
pub mod neighbour;
pub mod policy;
#[cfg(feature = "server")]
pub mod proxy;
pub mod reply;
#[cfg(feature = "server")]
pub mod server;
