//! (node view, route) → bytes, a pure function except for `random_seed`: the version
//! lists, and the dispatch to the OpenStack and EC2 trees.

use std::net::IpAddr;

use super::ec2::ec2;
use super::openstack::openstack;
use super::route::Route;
use crate::identity::Index;
use crate::ironic::model::Inventory;
use crate::node::NodeView;
use crate::reply::{Refusal, Reply};
use crate::versions;

/// `/`: the EC2 versions and `latest`.
pub(crate) fn ec2_versions() -> Reply {
    let mut lines: Vec<&str> = versions::EC2.to_vec();
    lines.push("latest");
    Reply::text(lines.join("\n"))
}

/// `/openstack`: versions not dated in the future (UTC), then `latest`.
pub(crate) fn openstack_versions(today: &str) -> Reply {
    let mut lines: Vec<&str> = versions::OPENSTACK
        .iter()
        .copied()
        .filter(|v| *v <= today)
        .collect();
    lines.push("latest");
    Reply::text(lines.join("\n"))
}

/// A route that names data of one node.
pub(crate) fn render(node: &NodeView, route: &Route, client: IpAddr) -> Result<Reply, Refusal> {
    match route {
        Route::Ec2Versions => Ok(ec2_versions()),
        Route::OpenStackVersions => Err(Refusal::NotFound),
        Route::OpenStack { version, file } => openstack(node, version, file.as_deref()),
        Route::Ec2 { version, path } => ec2(node, version, path, client),
    }
}

/// What `node` (a UUID or name in `inventory`) is served for `path`, whatever its
/// provision state, as if it asked from its first address: the `render` command, for
/// operators checking a node's documents before it boots.
pub(crate) fn render_offline(
    inventory: Inventory,
    node: &str,
    path: &str,
    dns: &[IpAddr],
    today: &str,
) -> Result<Reply, String> {
    let (views, _) = crate::node::build(inventory, dns, &mut Default::default());
    let index = Index::build(views, &[]);
    let view = index
        .nodes()
        .iter()
        .find(|n| n.uuid == node || n.name.as_deref() == Some(node))
        .ok_or_else(|| format!("no node {node:?} in the inventory"))?;
    let route = super::route::parse(path).map_err(|e| format!("{path}: {e}"))?;
    let client = view
        .addresses
        .first()
        .copied()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    match route {
        Route::OpenStackVersions => Ok(openstack_versions(today)),
        route => render(view, &route, client).map_err(|r| {
            let reply = r.reply();
            format!(
                "{path}: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body).trim_end()
            )
        }),
    }
}
