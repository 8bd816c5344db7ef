//! Prometheus counters. Labels are bounded sets (status code, refusal reason); never a
//! client address, so a flood of distinct addresses cannot grow the registry.

use std::time::SystemTime;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::inventory::Catalog;

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    denied: IntCounterVec,
    index_nodes: IntGauge,
    index_served_nodes: IntGauge,
    index_age_seconds: IntGauge,
    index_ready: IntGauge,
    /// Inventory sweeps by trigger (`periodic`, `on_demand`).
    pub sweeps: IntCounterVec,
    /// Failed sweeps by reason (`connect`, `timeout`, `http_5xx`, `auth`, ...).
    pub sweep_failures: IntCounterVec,
    pub sweep_seconds: Histogram,
    /// HTTP requests sent to Ironic (and Keystone).
    pub ironic_requests: IntCounter,
    /// Policy reloads by result (`applied`, `rejected`).
    pub policy_reloads: IntCounterVec,
    pub policy_zones: IntGauge,
    /// Clients the rate limiters track (after the last sweep).
    pub ratelimit_clients: IntGauge,
    /// Connections the metadata listener holds now.
    pub connections_open: IntGauge,
    /// Connections closed at accept time, by reason (`total_limit`, `client_limit`).
    pub connections_refused: IntCounterVec,
    /// Connections closed because a request's headers did not arrive in time.
    pub header_timeouts: IntCounter,
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
            &["reason", "zone"],
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
        let sweeps = IntCounterVec::new(
            Opts::new(
                "metadata_inventory_sweeps_total",
                "Inventory sweeps, by trigger",
            ),
            &["trigger"],
        )
        .expect("static metric definition");
        let sweep_failures = IntCounterVec::new(
            Opts::new(
                "metadata_inventory_sweep_failures_total",
                "Failed inventory sweeps, by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let sweep_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "metadata_inventory_sweep_duration_seconds",
                "Time to fetch the whole inventory",
            )
            .buckets(vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
        )
        .expect("static metric definition");
        let policy_reloads = IntCounterVec::new(
            Opts::new("metadata_policy_reloads_total", "Policy reloads, by result"),
            &["result"],
        )
        .expect("static metric definition");
        let policy_zones = gauge("metadata_policy_zones", "Zones in the policy in force");
        let ratelimit_clients = gauge(
            "metadata_ratelimit_tracked_clients",
            "Client addresses the rate limiters hold state for",
        );
        let connections_open = gauge(
            "metadata_connections_open",
            "Connections the metadata listener holds",
        );
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "metadata_connections_refused_total",
                "Connections closed when accepted, by reason",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        let header_timeouts = IntCounter::new(
            "metadata_header_timeouts_total",
            "Connections closed because request headers did not arrive in time",
        )
        .expect("static metric definition");
        let ironic_requests = IntCounter::new(
            "metadata_ironic_requests_total",
            "HTTP requests sent to Ironic and Keystone",
        )
        .expect("static metric definition");
        for c in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(denied.clone()),
            Box::new(index_nodes.clone()),
            Box::new(index_served_nodes.clone()),
            Box::new(index_age_seconds.clone()),
            Box::new(index_ready.clone()),
            Box::new(sweeps.clone()),
            Box::new(sweep_failures.clone()),
            Box::new(sweep_seconds.clone()),
            Box::new(ironic_requests.clone()),
            Box::new(policy_reloads.clone()),
            Box::new(policy_zones.clone()),
            Box::new(ratelimit_clients.clone()),
            Box::new(connections_open.clone()),
            Box::new(connections_refused.clone()),
            Box::new(header_timeouts.clone()),
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
            sweeps,
            sweep_failures,
            sweep_seconds,
            ironic_requests,
            policy_reloads,
            policy_zones,
            ratelimit_clients,
            connections_open,
            connections_refused,
            header_timeouts,
        }
    }

    pub fn observe(&self, status: u16, refusal: Option<&'static str>, zone: Option<&str>) {
        let label = match status {
            200 => "200",
            304 => "304",
            400 => "400",
            401 => "401",
            403 => "403",
            404 => "404",
            429 => "429",
            503 => "503",
            other => {
                self.requests
                    .with_label_values(&[other.to_string().as_str()])
                    .inc();
                return self.count_refusal(refusal, zone);
            }
        };
        self.requests.with_label_values(&[label]).inc();
        self.count_refusal(refusal, zone);
    }

    fn count_refusal(&self, refusal: Option<&'static str>, zone: Option<&str>) {
        if let Some(reason) = refusal {
            self.denied
                .with_label_values(&[reason, zone.unwrap_or("-")])
                .inc();
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
