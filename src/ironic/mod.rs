//! The Ironic API as an inventory source: a REST client (microversions, pagination, auth)
//! and a refresher that keeps the published index current in the background, so requests
//! never wait on Ironic once the index is warm.

pub(crate) mod auth;
pub(crate) mod client;
pub(crate) mod model;

pub(crate) use client::{ClientConfig, ClientError, IronicClient};
