//! The metadata trees: path → [`route::Route`] (pure), then node view + route → bytes
//! (pure). Nothing here knows about HTTP servers, policies or Ironic's API.

pub(crate) mod checkin;
mod ec2;
mod facts;
mod netconfig;
mod nocloud;
mod openstack;
pub(crate) mod password;
pub(crate) mod render;
pub(crate) mod route;
mod yaml;
