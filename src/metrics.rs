//! Prometheus counters. Labels are bounded sets (status code, refusal reason); never a
//! client address, so a flood of distinct addresses cannot grow the registry.

use std::time::SystemTime;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// What the index gauges show, read from the catalog when scraped.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IndexGauges {
    pub(crate) nodes: usize,
    pub(crate) served: usize,
    pub(crate) ready: bool,
    pub(crate) age_seconds: Option<i64>,
    /// Addresses two nodes claim with the same weight (both refused).
    pub(crate) contested: usize,
    /// Configdrive claims on addresses other nodes' own data holds (ignored).
    pub(crate) overruled: usize,
}

pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    denied: IntCounterVec,
    index: Index,
    /// The Ironic source.
    pub(crate) source: Source,
    /// The policy and its limiters.
    pub(crate) policy: Policy,
    /// The metadata listener's connections and what its clients cost.
    pub(crate) conn: Conn,
    /// Check-ins of booted nodes by kind (`phone_home`, `reporting`) and result.
    pub(crate) checkins: IntCounterVec,
    /// Check-ins and passwords written to nodes' `extra` in Ironic, by kind and result.
    pub(crate) write_backs: IntCounterVec,
    /// Signed identity tokens and their keys.
    pub(crate) identity: Identity,
}

struct Index {
    nodes: IntGauge,
    served_nodes: IntGauge,
    age_seconds: IntGauge,
    ready: IntGauge,
    contested: IntGauge,
    overruled: IntGauge,
}

pub(crate) struct Source {
    /// Inventory sweeps by trigger (`periodic`, `resync`).
    pub(crate) sweeps: IntCounterVec,
    /// Failed sweeps by reason (`connect`, `timeout`, `http_5xx`, `auth`, ...).
    pub(crate) sweep_failures: IntCounterVec,
    pub(crate) sweep_seconds: Histogram,
    /// HTTP requests sent to Ironic (and Keystone).
    pub(crate) ironic_requests: IntCounter,
    /// Polls for changes, by result (`changed`, `unchanged`).
    pub(crate) polls: IntCounterVec,
    /// Nodes rebuilt or dropped after a poll or a reconciliation.
    pub(crate) changes: IntCounter,
    /// Full sweeps a poll asked for, by reason (`unsorted`, `more_than_a_page`,
    /// `time_went_back`, `missed_nodes`, `null_timestamps`).
    pub(crate) resyncs: IntCounterVec,
    /// Index snapshots written to `STATE_DIR`, by result (`ok`, `failed`).
    pub(crate) snapshot_writes: IntCounterVec,
    /// Snapshots looked for at start, by result (`loaded`, `absent`, `unreadable`,
    /// `corrupt`, `format`, `other_source`, `stale`).
    pub(crate) snapshot_loads: IntCounterVec,
    /// When the last snapshot was written (seconds since the epoch).
    pub(crate) snapshot_written: IntGauge,
}

pub(crate) struct Policy {
    /// Policy reloads by result (`applied`, `rejected`).
    pub(crate) reloads: IntCounterVec,
    pub(crate) zones: IntGauge,
    /// Clients the rate limiters track (after the last sweep).
    pub(crate) ratelimit_clients: IntGauge,
}

pub(crate) struct Conn {
    /// Connections the metadata listener holds now.
    pub(crate) open: IntGauge,
    /// Connections closed at accept time, by reason (`total_limit`, `client_limit`, ...).
    pub(crate) refused: IntCounterVec,
    /// Connections closed because a request's headers did not arrive in time.
    pub(crate) header_timeouts: IntCounter,
    /// Connections closed because an exchange (body, answer) did not finish in time.
    pub(crate) exchange_timeouts: IntCounter,
    /// Refusals counted but not logged (one line per client and reason per interval).
    pub(crate) audit_suppressed: IntCounter,
    /// Clients over their refusal budget, by what was done (`closed`, `refused`).
    pub(crate) refusal_throttled: IntCounterVec,
    /// Frames of another host claiming a metadata address, by kind.
    pub(crate) impostor_frames: IntCounterVec,
    /// Requests parked by `wait_for_change` now.
    pub(crate) waiting: IntGauge,
    /// Parked requests answered, by why (`changed`, `timeout`, `shutdown`), and waits
    /// refused over the bounds (`refused`).
    pub(crate) waits: IntCounterVec,
}

pub(crate) struct Identity {
    /// Identity tokens by result (`issued`, `rate_limited`).
    pub(crate) tokens: IntCounterVec,
    /// Keys loaded from the key directory (all published; the last signs).
    pub(crate) keys: IntGauge,
    /// Reloads of the key directory by result (`applied`, `rejected`).
    pub(crate) key_reloads: IntCounterVec,
}

/// Creates metrics and registers each in the registry as it is made.
struct Maker(Registry);

impl Maker {
    fn add<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        self.0
            .register(Box::new(c.clone()))
            .expect("metric names are unique");
        c
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.add(IntCounter::new(name, help).expect("static metric definition"))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        self.add(
            IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition"),
        )
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.add(IntGauge::new(name, help).expect("static metric definition"))
    }
}

impl Index {
    fn new(m: &Maker) -> Index {
        Index {
            nodes: m.gauge("metadata_index_nodes", "Nodes in the current index"),
            served_nodes: m.gauge(
                "metadata_index_served_nodes",
                "Indexed nodes in a served provision state",
            ),
            age_seconds: m.gauge(
                "metadata_index_age_seconds",
                "Seconds since the index was last refreshed successfully",
            ),
            ready: m.gauge(
                "metadata_index_ready",
                "1 once an inventory has been loaded",
            ),
            contested: m.gauge(
                "metadata_index_contested_addresses",
                "Addresses two or more nodes claim with the same weight: refused to all",
            ),
            overruled: m.gauge(
                "metadata_index_overruled_claims",
                "Configdrive claims on addresses another node's network_data holds: ignored",
            ),
        }
    }
}

impl Source {
    fn new(m: &Maker) -> Source {
        let buckets = vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
        Source {
            sweeps: m.counters(
                "metadata_inventory_sweeps_total",
                "Inventory sweeps, by trigger",
                &["trigger"],
            ),
            sweep_failures: m.counters(
                "metadata_inventory_sweep_failures_total",
                "Failed inventory sweeps, by reason",
                &["reason"],
            ),
            sweep_seconds: m.add(
                Histogram::with_opts(
                    HistogramOpts::new(
                        "metadata_inventory_sweep_duration_seconds",
                        "Time to fetch the whole inventory",
                    )
                    .buckets(buckets),
                )
                .expect("static metric definition"),
            ),
            ironic_requests: m.counter(
                "metadata_ironic_requests_total",
                "HTTP requests sent to Ironic and Keystone",
            ),
            polls: m.counters(
                "metadata_inventory_polls_total",
                "Polls of Ironic for changes, by result",
                &["result"],
            ),
            changes: m.counter(
                "metadata_inventory_changes_total",
                "Nodes rebuilt or dropped after polls and reconciliations",
            ),
            resyncs: m.counters(
                "metadata_inventory_resyncs_total",
                "Full sweeps asked for because a poll could not tell what changed, by reason",
                &["reason"],
            ),
            snapshot_writes: m.counters(
                "metadata_inventory_snapshot_writes_total",
                "Index snapshots written to the state directory, by result",
                &["result"],
            ),
            snapshot_loads: m.counters(
                "metadata_inventory_snapshot_loads_total",
                "Index snapshots looked for at start, by result",
                &["result"],
            ),
            snapshot_written: m.gauge(
                "metadata_inventory_snapshot_last_write_timestamp_seconds",
                "When the last index snapshot was written, in seconds since the epoch",
            ),
        }
    }
}

impl Policy {
    fn new(m: &Maker) -> Policy {
        Policy {
            reloads: m.counters(
                "metadata_policy_reloads_total",
                "Policy reloads, by result",
                &["result"],
            ),
            zones: m.gauge("metadata_policy_zones", "Zones in the policy in force"),
            ratelimit_clients: m.gauge(
                "metadata_ratelimit_tracked_clients",
                "Client addresses the rate limiters hold state for",
            ),
        }
    }
}

impl Conn {
    fn new(m: &Maker) -> Conn {
        Conn {
            open: m.gauge(
                "metadata_connections_open",
                "Connections the metadata listener holds",
            ),
            refused: m.counters(
                "metadata_connections_refused_total",
                "Connections closed when accepted, by reason",
                &["reason"],
            ),
            header_timeouts: m.counter(
                "metadata_header_timeouts_total",
                "Connections closed because request headers did not arrive in time",
            ),
            exchange_timeouts: m.counter(
                "metadata_exchange_timeouts_total",
                "Connections closed because an answer was not taken (or a body not sent) in time",
            ),
            audit_suppressed: m.counter(
                "metadata_audit_suppressed_total",
                "Refusals counted without an audit line (the first per client and reason per interval has one)",
            ),
            refusal_throttled: m.counters(
                "metadata_refusal_throttled_total",
                "Connections of clients over their refusal budget, closed after an answer or refused when accepted",
                &["action"],
            ),
            impostor_frames: m.counters(
                "metadata_impostor_frames_total",
                "ARP or neighbour discovery frames of another host claiming a metadata address",
                &["kind"],
            ),
            waiting: m.gauge(
                "metadata_waiting_requests",
                "Requests parked by wait_for_change until their document changes",
            ),
            waits: m.counters(
                "metadata_waits_total",
                "wait_for_change requests answered, by why (changed, timeout, shutdown), or refused over the bounds",
                &["result"],
            ),
        }
    }
}

impl Identity {
    fn new(m: &Maker) -> Identity {
        Identity {
            tokens: m.counters(
                "metadata_identity_tokens_total",
                "Signed identity tokens, by result (issued, rate_limited)",
                &["result"],
            ),
            keys: m.gauge(
                "metadata_identity_keys",
                "Identity keys loaded and published (the last in file name order signs)",
            ),
            key_reloads: m.counters(
                "metadata_identity_key_reloads_total",
                "Reloads of the identity key directory, by result",
                &["result"],
            ),
        }
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let m = Maker(Registry::new());
        Metrics {
            requests: m.counters(
                "metadata_requests_total",
                "Metadata requests answered, by HTTP status",
                &["status"],
            ),
            denied: m.counters(
                "metadata_requests_denied_total",
                "Metadata requests refused, by reason",
                &["reason", "zone"],
            ),
            index: Index::new(&m),
            source: Source::new(&m),
            policy: Policy::new(&m),
            conn: Conn::new(&m),
            checkins: m.counters(
                "metadata_checkins_total",
                "Check-ins of booted nodes, by kind (phone_home, reporting) and result (stored, malformed, too_large, rate_limited, not_stored)",
                &["kind", "result"],
            ),
            write_backs: m.counters(
                "metadata_ironic_write_backs_total",
                "Check-ins and passwords written to nodes' extra in Ironic, by kind (checkin, password) and result (written; unchanged when Ironic held it already; no_node; stale when the node was redeployed since; config, connect, timeout, http_4xx, http_5xx, auth, invalid_response when a write failed; given_up after the last attempt)",
                &["kind", "result"],
            ),
            identity: Identity::new(&m),
            registry: m.0,
        }
    }

    pub(crate) fn observe(&self, status: u16, refusal: Option<&'static str>, zone: Option<&str>) {
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

    /// Prometheus text exposition, with the index gauges as read at scrape time.
    pub(crate) fn render(&self, index: IndexGauges) -> String {
        self.index.nodes.set(index.nodes as i64);
        self.index.served_nodes.set(index.served as i64);
        self.index.ready.set(i64::from(index.ready));
        self.index.age_seconds.set(index.age_seconds.unwrap_or(-1));
        self.index.contested.set(index.contested as i64);
        self.index.overruled.set(index.overruled as i64);
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

pub(crate) fn age_seconds(t: Option<SystemTime>) -> Option<i64> {
    t.map(|t| {
        SystemTime::now()
            .duration_since(t)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0)
    })
}
