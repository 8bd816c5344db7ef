//! The admin listener's answers: liveness, readiness with details, Prometheus metrics.
//! It listens on its own address (loopback by default) and never on the metadata address.

use serde_json::json;

use crate::identity::ProjectScopes;
use crate::inventory::Catalog;
use crate::metrics::{age_seconds, IndexGauges, Metrics};
use crate::reply::{Refusal, Reply, JSON};

/// `listening`: whether the metadata listener accepts connections yet (the two listeners
/// start independently).
pub(crate) fn handle(
    method: &str,
    path: &str,
    catalog: &Catalog,
    metrics: &Metrics,
    scopes: &dyn ProjectScopes,
    segment: &[String],
    listening: bool,
) -> Reply {
    if method != "GET" && method != "HEAD" {
        return Refusal::MethodNotAllowed.reply();
    }
    match path.split('?').next().unwrap_or("") {
        "/healthz" => Reply::text("ok\n"),
        "/readyz" => readyz(catalog, scopes, segment, listening),
        "/metrics" => Reply::ok("text/plain; version=0.0.4", metrics.render(gauges(catalog))),
        _ => Refusal::NotFound.reply(),
    }
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
        "last_error": status.last_error,
        "warnings": warnings,
    });
    let mut reply = Reply::ok(JSON, format!("{body}\n"));
    if !ready {
        reply.status = 503;
    }
    reply
}
