//! The metadata trees: path → [`route::Route`] (pure), then node view + route → bytes
//! (pure). Nothing here knows about HTTP servers, policies or Ironic's API.

pub mod configdrive;
pub mod network;
pub mod password;
pub mod pyjson;
pub mod render;
pub mod route;
pub mod view;
