//! Prometheus counters. Labels are bounded sets (status code, refusal reason); never a
//! client address, so a flood of distinct addresses cannot grow the registry.

use std::time::SystemTime;

use prometheus::{Encoder, IntCounterVec, IntGauge, Opts, Registry, TextEncoder};

use crate::inventory::Catalog;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    denied: IntCounterVec,
    index_nodes: IntGauge,
    index_served_nodes: IntGauge,
    index_age_seconds: IntGauge,
    index_ready: IntGauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "metadata_requests_total",
                "Metadata requests answered, by HTTP status",
            ),
            &["status"],
        )
        .expect("static metric definition");
        let denied = IntCounterVec::new(
            Opts::new(
                "metadata_requests_denied_total",
                "Metadata requests refused, by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("static metric");
        let index_nodes = gauge("metadata_index_nodes", "Nodes in the current index");
        let index_served_nodes = gauge(
            "metadata_index_served_nodes",
            "Indexed nodes in a served provision state",
        );
        let index_age_seconds = gauge(
            "metadata_index_age_seconds",
            "Seconds since the index was last refreshed successfully",
        );
        let index_ready = gauge(
            "metadata_index_ready",
            "1 once an inventory has been loaded",
        );
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(denied.clone()),
            Box::new(index_nodes.clone()),
            Box::new(index_served_nodes.clone()),
            Box::new(index_age_seconds.clone()),
            Box::new(index_ready.clone()),
        ] {
            registry.register(c).expect("metric names are unique");
        }
        Metrics {
            registry,
            requests,
            denied,
            index_nodes,
            index_served_nodes,
            index_age_seconds,
            index_ready,
        }
    }

    pub fn observe(&self, status: u16, refusal: Option<&'static str>) {
        self.requests
            .with_label_values(&[status.to_string().as_str()])
            .inc();
        if let Some(reason) = refusal {
            self.denied.with_label_values(&[reason]).inc();
        }
    }

    /// Prometheus text exposition, with index gauges read at scrape time.
    pub fn render(&self, catalog: &Catalog) -> String {
        let index = catalog.index();
        let status = catalog.status();
        self.index_nodes.set(index.nodes().len() as i64);
        self.index_served_nodes.set(index.served_count() as i64);
        self.index_ready.set(i64::from(status.ready));
        self.index_age_seconds
            .set(age_seconds(status.last_success).unwrap_or(-1));
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

pub fn age_seconds(t: Option<SystemTime>) -> Option<i64> {
    t.map(|t| {
        SystemTime::now()
            .duration_since(t)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    })
}
