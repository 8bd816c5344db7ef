//! The Ironic API as an inventory source: a REST client (microversions, pagination, auth)
//! and a refresher that keeps the published index current in the background, so requests
//! never wait on Ironic once the index is warm.

pub mod auth;
pub mod client;
pub mod refresh;

pub use client::{ClientConfig, ClientError, IronicClient};
pub use refresh::{RefreshConfig, Refresher};
