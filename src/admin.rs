//! The admin listener's answers: liveness, readiness with details, Prometheus metrics, and
//! why an address gets the answer it gets (`/explain`).
//! It listens on its own address (loopback by default) and never on the metadata address.

use serde_json::json;

use crate::explain::{explain, LinkLayer, Query};
use crate::identity::neighbour::{interface_index, Netlink};
use crate::identity::ProjectScopes;
use crate::inventory::Catalog;
use crate::metrics::{age_seconds, IndexGauges, Metrics};
use crate::policy::Policy;
use crate::reply::{Refusal, Reply, JSON};

/// `listening`: whether the metadata listener accepts connections yet (the two listeners
/// start independently).
pub(crate) fn handle(
    method: &str,
    path: &str,
    catalog: &Catalog,
    metrics: &Metrics,
    policy: &Policy,
    segment: &[String],
    listening: bool,
) -> Reply {
    if method != "GET" && method != "HEAD" {
        return Refusal::MethodNotAllowed.reply();
    }
    let (route, query) = path.split_once('?').unwrap_or((path, ""));
    match route {
        "/healthz" => Reply::text("ok\n"),
        "/readyz" => readyz(catalog, policy, segment, listening),
        "/explain" => explained(query, catalog, policy),
        "/metrics" => Reply::ok("text/plain; version=0.0.4", metrics.render(gauges(catalog))),
        _ => Refusal::NotFound.reply(),
    }
}

/// `/explain?address=A[&mac=M][&interface=I][&path=P]`: what a request from A would get and why,
/// from the index and policy in force, as `ironic-metadata explain --json` prints it. The
/// client's MAC is the one given, else this host's neighbour entry, as a request's would be.
fn explained(query: &str, catalog: &Catalog, policy: &Policy) -> Reply {
    match explain_query(query) {
        Ok(q) => {
            let ready = catalog.status().ready;
            let e = explain(
                &catalog.index(),
                policy,
                LinkLayer::Live(&Netlink),
                &q,
                ready,
            );
            let body = serde_json::to_string_pretty(&e).unwrap_or_default();
            Reply::ok(JSON, format!("{body}\n"))
        }
        Err(msg) => Reply {
            status: 400,
            ..Reply::text(format!("{msg}\n"))
        },
    }
}

/// The question of an `/explain` query string; what is wrong with it in one line.
fn explain_query(query: &str) -> Result<Query, String> {
    let (mut address, mut mac, mut interface, mut path) = (None, None, None, None);
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let slot = match key.as_ref() {
            "address" => &mut address,
            "mac" => &mut mac,
            "interface" => &mut interface,
            "path" => &mut path,
            _ => return Err("parameters: address, mac, interface, path".into()),
        };
        if slot.replace(value.into_owned()).is_some() {
            return Err(format!("{key} is given twice"));
        }
    }
    let address = address.ok_or("address=ADDRESS is required")?;
    let mut q = Query::parse(
        &address,
        mac.as_deref(),
        interface.as_deref(),
        path.as_deref(),
    )?;
    if let Some(i) = &q.interface {
        q.scope = interface_index(i)?;
    }
    Ok(q)
}

fn gauges(catalog: &Catalog) -> IndexGauges {
    let (index, status) = (catalog.index(), catalog.status());
    IndexGauges {
        nodes: index.nodes().len(),
        served: index.served_count(),
        ready: status.ready,
        age_seconds: age_seconds(status.last_success),
        contested: index.contested().count(),
        overruled: index.overruled().len(),
    }
}

fn readyz(
    catalog: &Catalog,
    scopes: &dyn ProjectScopes,
    segment: &[String],
    listening: bool,
) -> Reply {
    let status = catalog.status();
    let index = catalog.index();
    // Claims the policy in force does not honour (it may change without a refresh).
    let mut warnings = status.warnings.clone();
    warnings.extend(index.out_of_scope(scopes).into_iter().map(|(ip, node)| {
        format!(
            "node {node}: its configdrive claims {ip}, outside the CIDRs the policy gives its project; the claim is ignored unless the client's MAC verifies it"
        )
    }));
    warnings.extend(segment.iter().cloned());
    let ready = status.ready && listening;
    // Degraded: still serving the last good index, but the source is failing.
    let state = match (ready, status.last_error.is_some()) {
        (false, _) => "starting",
        (true, false) => "ok",
        (true, true) => "degraded",
    };
    let body = json!({
        "ready": ready,
        "listening": listening,
        "status": state,
        "source": status.source,
        "nodes": index.nodes().len(),
        "served_nodes": index.served_count(),
        "index_age_seconds": age_seconds(status.last_success),
        "index": index_origin(&status),
        "snapshot_age_seconds": age_seconds(status.snapshot),
        "last_error": status.last_error,
        "warnings": warnings,
    });
    let mut reply = Reply::ok(JSON, format!("{body}\n"));
    if !ready {
        reply.status = 503;
    }
    reply
}

/// Where the index served comes from: a snapshot loaded at start (with its age) until
/// the source has been caught up with, else the source itself.
fn index_origin(status: &crate::inventory::SourceStatus) -> String {
    match (status.ready, status.snapshot) {
        (false, _) => "none".into(),
        (true, Some(_)) => format!(
            "snapshot (age {} s)",
            age_seconds(status.snapshot).unwrap_or(0)
        ),
        (true, None) => "live".into(),
    }
}

/// `GET /nodes/<uuid>/checkin`: the check-ins of the node's current deployment, as JSON
/// (404 when the node is unknown or has none); `None` for any other path.
pub(crate) fn checkin(
    method: &str,
    path: &str,
    catalog: &Catalog,
    checkins: &crate::metadata::checkin::CheckinStore,
) -> Option<Reply> {
    let route = path.split('?').next().unwrap_or("");
    let uuid = route.strip_prefix("/nodes/")?.strip_suffix("/checkin")?;
    if method != "GET" && method != "HEAD" {
        return Some(Refusal::MethodNotAllowed.reply());
    }
    let index = catalog.index();
    let Some(node) = index.nodes().iter().find(|n| n.uuid == uuid) else {
        return Some(Refusal::NotFound.reply());
    };
    let shared = node
        .written_back
        .as_ref()
        .and_then(|w| crate::metadata::checkin::Shared::Checkin.held(w));
    let Some(c) = checkins.get(&node.uuid, &node.deployment(), shared.as_ref()) else {
        return Some(Refusal::NotFound.reply());
    };
    let mut doc = json!({"node": node.uuid});
    if let (Some(d), Ok(serde_json::Value::Object(fields))) =
        (doc.as_object_mut(), serde_json::to_value(c))
    {
        d.extend(fields);
    }
    let body = serde_json::to_string_pretty(&doc).unwrap_or_default();
    Some(Reply::ok(JSON, format!("{body}\n")))
}
