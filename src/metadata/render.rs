//! (node view, route) → bytes, a pure function except for `random_seed`: the version
//! lists, and the dispatch to the OpenStack and EC2 trees.

use std::net::IpAddr;

use super::ec2::ec2;
pub(crate) use super::ec2::TreeOptions;
use super::nocloud::nocloud;
use super::openstack::openstack;
use super::route::Route;
use crate::identity::{Index, ProjectScopes, DEFAULT_SERVED_STATES};
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
pub(crate) fn render(
    node: &NodeView,
    route: &Route,
    client: IpAddr,
    options: &TreeOptions,
) -> Result<Reply, Refusal> {
    match route {
        Route::Ec2Versions => Ok(ec2_versions()),
        Route::OpenStackVersions => Err(Refusal::NotFound),
        Route::OpenStack { version, file } => {
            openstack(node, version, file.as_deref()).map(|r| tagged(node, route, r))
        }
        Route::Ec2 { version, path } => ec2(node, version, path, client, options),
        Route::NoCloud { file } => nocloud(node, file.as_deref()).map(|r| tagged(node, route, r)),
    }
}

/// `reply` with its entity tag, computed once per node view and path: the OpenStack and
/// NoCloud documents depend on the node alone (the EC2 tree may name the asking address).
fn tagged(node: &NodeView, route: &Route, mut reply: Reply) -> Reply {
    if reply.status == 200 && reply.etag.is_none() {
        let path = super::route::canonical(route).join("/");
        let body = &reply.body;
        reply.etag = Some(
            node.render_cache
                .entity_tag(&path, || crate::reply::entity_tag(body, false).into()),
        );
    }
    reply
}

/// What `node` (a UUID or name in `inventory`) is served for `path`, whatever its
/// provision state, as if it asked from its first address: the `render` command, for
/// operators checking a node's documents before it boots. With it come warnings about the
/// node's configdrive claims that identity ignores (under `scopes`, the policy's projects).
pub(crate) fn render_offline(
    inventory: Inventory,
    node: &str,
    path: &str,
    dns: &[IpAddr],
    today: &str,
    scopes: &dyn ProjectScopes,
) -> Result<(Reply, Vec<String>), String> {
    let (views, _) = crate::node::build(inventory, dns, &mut Default::default());
    // Projects are counted over the nodes served by default, as the service counts them
    // (else a fleet of several projects would look like one and no claim would be ignored);
    // the node asked for is rendered whatever its state.
    let served: Vec<String> = DEFAULT_SERVED_STATES
        .iter()
        .map(|s| s.to_string())
        .collect();
    let index = Index::build(views, &served);
    let view = index
        .nodes()
        .iter()
        .find(|n| n.uuid == node || n.name.as_deref() == Some(node))
        .ok_or_else(|| format!("no node {node:?} in the inventory"))?;
    let route = super::route::parse(path).map_err(|e| format!("{path}: {e}"))?;
    let client = view
        .node_addresses
        .first()
        .or(view.drive_addresses.first())
        .copied()
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    let warnings = ignored_claims(&index, &view.uuid, scopes);
    match route {
        Route::OpenStackVersions => Ok(openstack_versions(today)),
        route => render(view, &route, client, &TreeOptions::default()).map_err(|r| {
            let reply = r.reply();
            format!(
                "{path}: {} {}",
                reply.status,
                String::from_utf8_lossy(&reply.body).trim_end()
            )
        }),
    }
    .map(|reply| (reply, warnings))
}

/// The configdrive claims of node `uuid` that identity ignores, in words.
fn ignored_claims(index: &Index, uuid: &str, scopes: &dyn ProjectScopes) -> Vec<String> {
    let overruled = index
        .overruled()
        .iter()
        .filter(|o| o.claimant == uuid)
        .map(|o| {
            format!(
                "the configdrive claims {}, which the network_data of node {} holds: ignored",
                o.ip,
                o.owners.join(", ")
            )
        });
    let out_of_scope = index
        .out_of_scope(scopes)
        .into_iter()
        .filter(|(_, n)| n == uuid)
        .map(|(ip, _)| {
            format!("the configdrive claims {ip}, outside the CIDRs the policy gives the node's project: ignored unless its MAC verifies it")
        });
    overruled.chain(out_of_scope).collect()
}
