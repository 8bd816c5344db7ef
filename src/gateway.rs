//! The request path in order, over plain types. Each step may end the request; the order is
//! a security property (see DESIGN.md): nothing keys on the client before its address is
//! known, and nothing reaches node data before identity is settled.

use std::net::IpAddr;

use crate::identity::Lookup;
use crate::inventory::{Catalog, OnDemand};
use crate::metadata::render;
use crate::metadata::route::{self, Route, RouteError};
use crate::reply::{Refusal, Reply};

/// What the gateway needs of one HTTP request.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target as sent (path and optional query).
    pub path: &'a str,
    /// The TCP peer, `None` when the transport has no IP address.
    pub peer: Option<IpAddr>,
}

/// The reply plus what the caller logs and counts about it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub reply: Reply,
    pub refusal: Option<Refusal>,
    /// The client address the request was answered for.
    pub client: Option<IpAddr>,
    /// The node the request was answered for.
    pub node: Option<String>,
    /// Why identity refused, for the log (never sent to the client).
    pub detail: Option<String>,
}

impl Outcome {
    fn refuse(refusal: Refusal, client: Option<IpAddr>, detail: Option<String>) -> Outcome {
        Outcome {
            reply: refusal.reply(),
            refusal: Some(refusal),
            client,
            node: None,
            detail,
        }
    }
}

pub fn handle(catalog: &Catalog, req: &Request<'_>, today: &str) -> Outcome {
    // 1. Client address: the TCP peer. A dual-stack listener reports IPv4 clients as
    //    IPv4-mapped IPv6; identity keys on the plain IPv4 form.
    let Some(client) = req.peer.map(|ip| ip.to_canonical()) else {
        return Outcome::refuse(Refusal::NoClientAddress, None, None);
    };
    // 2. Request hygiene: only reads, and only paths inside the two trees.
    if req.method != "GET" && req.method != "HEAD" {
        return Outcome::refuse(Refusal::MethodNotAllowed, Some(client), None);
    }
    let route = match route::parse(req.path) {
        Ok(r) => r,
        Err(e) => {
            let refusal = match e {
                RouteError::NotFound => Refusal::NotFound,
                RouteError::TooLong => Refusal::PathTooLong,
                RouteError::BadEncoding | RouteError::ControlCharacter => Refusal::BadPath,
            };
            return Outcome::refuse(refusal, Some(client), None);
        }
    };
    // 3. Version lists hold no node data: answered for anyone allowed this far, as Nova does.
    match route {
        Route::Ec2Versions => return answered(render::ec2_versions(), client, None),
        Route::OpenStackVersions => {
            return answered(render::openstack_versions(today), client, None)
        }
        _ => {}
    }
    // 4. Identity: exactly one served node, or a refusal.
    let index = catalog.index();
    let node = match index.lookup(client) {
        Lookup::Found(node) => node,
        Lookup::Unknown => {
            return Outcome::refuse(
                Refusal::UnknownAddress,
                Some(client),
                Some("no node claims this address".into()),
            )
        }
        Lookup::Contested(uuids) => {
            return Outcome::refuse(
                Refusal::ContestedAddress,
                Some(client),
                Some(format!("address claimed by nodes {}", uuids.join(", "))),
            )
        }
        Lookup::NotServed { uuid, state } => {
            return Outcome::refuse(
                Refusal::NodeNotServed,
                Some(client),
                Some(format!("node {uuid} is in provision state {state:?}")),
            )
        }
    };
    // 5. Render.
    match render::render(&node, &route, client) {
        Ok(reply) => answered(reply, client, Some(node.uuid.clone())),
        Err(refusal) => {
            let mut out = Outcome::refuse(refusal, Some(client), None);
            out.node = Some(node.uuid.clone());
            out
        }
    }
}

/// [`handle`], plus one on-demand refresh when the address is unknown: a node deployed a
/// moment ago is answered on its first request. Before the first inventory has loaded an
/// unknown address gets 503 rather than a 404 that would read as "no such node".
pub async fn handle_with_refresh(
    catalog: &Catalog,
    on_demand: Option<&dyn OnDemand>,
    req: &Request<'_>,
    today: &str,
) -> Outcome {
    let out = handle(catalog, req, today);
    if out.refusal != Some(Refusal::UnknownAddress) {
        return out;
    }
    let (Some(source), Some(client)) = (on_demand, out.client) else {
        return out;
    };
    let out = if source.refresh_for(client).await {
        handle(catalog, req, today)
    } else {
        out
    };
    if out.refusal == Some(Refusal::UnknownAddress) && !catalog.status().ready {
        return Outcome::refuse(
            Refusal::NotReady,
            out.client,
            Some("no inventory loaded yet".into()),
        );
    }
    out
}

fn answered(reply: Reply, client: IpAddr, node: Option<String>) -> Outcome {
    Outcome {
        reply,
        refusal: None,
        client: Some(client),
        node,
        detail: None,
    }
}

/// Today's date in UTC as `YYYY-MM-DD`, for hiding future-dated versions.
pub fn today_utc() -> String {
    chrono::Utc::now().format("%Y-%m-%d").to_string()
}
