//! Command line and environment. Static settings only: they need a restart to change.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::builder::TypedValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::identity::DEFAULT_SERVED_STATES;

#[derive(Debug, Parser)]
#[command(
    name = "ironic-metadata",
    version,
    about = "OpenStack and EC2 metadata for bare-metal nodes managed by Ironic"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

// Parsed once at start-up; the size of the serve arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Serve metadata on BIND_ADDR:BIND_PORT, with health and metrics on ADMIN_ADDR.
    Serve(ServeArgs),
    /// Work with policy directories.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Print what one node of an inventory file is served for PATH, as if it asked.
    Render(RenderArgs),
    /// Explain what a request from ADDRESS would get, and why: its zone, every claim on the
    /// address and who wrote it, which one decides, the node's provision state, the answer.
    Explain(ExplainArgs),
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ExplainArgs {
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// Directory of *.toml policy files, as `serve` reads it.
    #[arg(long = "policy-dir", env = "POLICY_DIR", default_value = "policies")]
    pub(crate) policy_dir: PathBuf,
    /// Provision states whose nodes are answered for (comma-separated).
    #[arg(long = "served-states", env = "SERVED_STATES", value_delimiter = ',',
          default_values_t = DEFAULT_SERVED_STATES.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    pub(crate) served_states: Vec<String>,
    /// The client's MAC, for zones that verify or identify by MAC (no neighbour table is
    /// read here; the admin listener's /explain reads the service's).
    #[arg(long = "mac")]
    pub(crate) mac: Option<String>,
    /// The interface an IPv6 link-local client asks on (or ADDRESS%INTERFACE).
    #[arg(long = "interface")]
    pub(crate) interface: Option<String>,
    /// The path the request asks for.
    #[arg(long = "path", default_value = crate::explain::DEFAULT_PATH)]
    pub(crate) path: String,
    /// Print JSON, as the admin listener's /explain answers, instead of text.
    #[arg(long = "json")]
    pub(crate) json: bool,
    /// The client address.
    pub(crate) address: String,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct RenderArgs {
    /// Inventory file (the `--inventory` format: nodes, ports and portgroups as Ironic
    /// lists them).
    #[arg(long = "inventory")]
    pub(crate) inventory: PathBuf,
    /// The node, by UUID or name.
    #[arg(long = "node")]
    pub(crate) node: String,
    /// DNS servers announced in network data generated from ports.
    #[arg(long = "dns-servers", env = "DNS_SERVERS", value_delimiter = ',')]
    pub(crate) dns_servers: Vec<IpAddr>,
    /// Policy directory whose projects decide which configdrive claims count (warnings on
    /// stderr name the ones that do not).
    #[arg(long = "policy-dir", env = "POLICY_DIR")]
    pub(crate) policy_dir: Option<PathBuf>,
    /// A metadata path, e.g. /openstack/latest/network_data.json.
    pub(crate) path: String,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Validate a policy directory as the server would and print the effective zones.
    Check {
        /// The directory of *.toml policy files.
        dir: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ImpostorDetection {
    /// On every interface that holds a metadata address (needs CAP_NET_RAW; without it a
    /// warning says detection is off).
    Auto,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the nodes come from: an inventory file, or Ironic (`serve` and `explain`).
#[derive(Debug, Clone, Args)]
pub(crate) struct SourceArgs {
    /// The nodes of this inventory file (an Ironic dump: {"nodes", "ports", "portgroups"}).
    #[arg(long = "inventory", env = "INVENTORY_FILE")]
    pub(crate) inventory: Option<PathBuf>,
    /// Ironic API endpoint, with or without /v1. Credentials come from the environment:
    /// OS_CLOUD (clouds.yaml), IRONIC_USERNAME with IRONIC_PASSWORD or IRONIC_PASSWORD_FILE
    /// (http_basic), or OS_AUTH_URL and the other OS_* variables (Keystone).
    #[arg(long = "ironic-url", env = "IRONIC_URL")]
    pub(crate) ironic_url: Option<String>,
    /// PEM CA bundle that signs Ironic's (and Keystone's) certificate.
    #[arg(long = "ironic-cacert", env = "IRONIC_CACERT")]
    pub(crate) ironic_cacert: Option<PathBuf>,
    /// PEM client certificate for TLS client authentication to Ironic.
    #[arg(
        long = "ironic-client-cert",
        env = "IRONIC_CLIENT_CERT",
        requires = "ironic_client_key"
    )]
    pub(crate) ironic_client_cert: Option<PathBuf>,
    /// PEM key of the client certificate.
    #[arg(
        long = "ironic-client-key",
        env = "IRONIC_CLIENT_KEY",
        requires = "ironic_client_cert"
    )]
    pub(crate) ironic_client_key: Option<PathBuf>,
    /// Seconds one request to Ironic may take in total.
    #[arg(long = "ironic-timeout", env = "IRONIC_TIMEOUT", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) ironic_timeout: u64,
    /// Seconds to establish a connection to Ironic.
    #[arg(long = "ironic-connect-timeout", env = "IRONIC_CONNECT_TIMEOUT", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub(crate) ironic_connect_timeout: u64,
    /// Items per page when listing Ironic collections (default: Ironic's own limit).
    #[arg(long = "ironic-page-size", env = "IRONIC_PAGE_SIZE", value_parser = clap::value_parser!(u32).range(1..=100000))]
    pub(crate) ironic_page_size: Option<u32>,
}

#[derive(Debug, Clone, Args)]
pub(crate) struct ServeArgs {
    /// Addresses the metadata listeners bind (comma-separated); an IPv6 link-local one
    /// names its interface: fe80::a9fe:a9fe%eth1.
    #[arg(long = "bind", env = "BIND_ADDR", default_value = "169.254.169.254", value_delimiter = ',', value_parser = parse_bind_addr)]
    pub(crate) bind: Vec<BindAddr>,
    /// Port the metadata listener binds.
    #[arg(long = "port", env = "BIND_PORT", default_value_t = 80, value_parser = parse_port)]
    pub(crate) port: u16,
    /// Address of the admin listener (/healthz, /readyz, /metrics).
    #[arg(long = "admin", env = "ADMIN_ADDR", default_value = "127.0.0.1:9180")]
    pub(crate) admin: SocketAddr,
    /// Let the admin listener bind every address (0.0.0.0 or [::]), which includes the
    /// metadata address: only where nodes cannot reach this host's other ports (a pod
    /// behind a Service, with a NetworkPolicy on the admin port).
    #[arg(long = "admin-on-all-addresses", env = "ADMIN_ON_ALL_ADDRESSES")]
    pub(crate) admin_on_all_addresses: bool,
    #[command(flatten)]
    pub(crate) source: SourceArgs,
    /// Seconds between full sweeps of Ironic (the safety net; changes come from polls).
    #[arg(long = "refresh-interval", env = "REFRESH_INTERVAL", default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub(crate) refresh_interval: u64,
    /// Seconds between polls of Ironic for changes (a few small requests each).
    #[arg(long = "poll-interval", env = "POLL_INTERVAL", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) poll_interval: u64,
    /// Seconds between listings of every node's UUID, which find deleted nodes.
    #[arg(long = "reconcile-interval", env = "RECONCILE_INTERVAL", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub(crate) reconcile_interval: u64,
    /// Directory of *.toml policy files (zones, allow/deny, rate limits, proxies, tokens);
    /// watched and reloaded on change or SIGHUP.
    #[arg(long = "policy-dir", env = "POLICY_DIR", default_value = "policies")]
    pub(crate) policy_dir: PathBuf,
    /// File whose contents key the session tokens (share it between replicas). Without
    /// it a random key is used and tokens do not survive a restart.
    #[arg(long = "token-key-file", env = "TOKEN_KEY_FILE")]
    pub(crate) token_key_file: Option<PathBuf>,
    /// DNS servers announced in network_data.json generated from Ironic ports
    /// (comma-separated addresses).
    #[arg(long = "dns-servers", env = "DNS_SERVERS", value_delimiter = ',')]
    pub(crate) dns_servers: Vec<IpAddr>,
    /// EC2 region served as `placement/region` and in the instance identity document
    /// (default: the availability zone's, `us-east-1a` -> `us-east-1`, `nova` -> `nova`).
    #[arg(long = "ec2-region", env = "EC2_REGION")]
    pub(crate) ec2_region: Option<String>,
    /// Directory for state that must survive restarts (instance passwords). Without it
    /// that state is kept in memory only.
    #[arg(long = "state-dir", env = "STATE_DIR")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Write each node's check-in (when it arrived, host-key fingerprints, each boot
    /// stage's last result) to the node's `extra` in Ironic, and show what any replica
    /// wrote there: replicas sharing one Ironic then agree. Needs Ironic as the source and
    /// permission to update nodes' `extra`.
    #[arg(long = "checkin-write-back", env = "CHECKIN_WRITE_BACK")]
    pub(crate) checkin_write_back: bool,
    /// Write each instance password (as cloudbase-init POSTs it, encrypted with the
    /// instance's key) to the node's `extra` in Ironic, and answer password GETs from what
    /// any replica wrote there. Anyone who can read the node in Ironic can read it. Needs
    /// Ironic as the source and permission to update nodes' `extra`.
    #[arg(long = "password-write-back", env = "PASSWORD_WRITE_BACK")]
    pub(crate) password_write_back: bool,
    /// Provision states whose nodes are answered for (comma-separated).
    #[arg(long = "served-states", env = "SERVED_STATES", value_delimiter = ',',
          default_values_t = DEFAULT_SERVED_STATES.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    pub(crate) served_states: Vec<String>,
    /// Worker threads of the metadata listener (default: one per CPU).
    #[arg(long = "threads", env = "THREADS")]
    pub(crate) threads: Option<usize>,
    /// Seconds an idle keep-alive connection is kept open.
    #[arg(long = "keepalive-seconds", env = "KEEPALIVE_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub(crate) keepalive_seconds: u64,
    /// Seconds one write of an answer may wait for a client that does not read; the whole
    /// exchange after the headers is bounded by the header timeout, the on-demand Ironic
    /// wait and this.
    #[arg(long = "write-timeout-seconds", env = "WRITE_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub(crate) write_timeout_seconds: u64,
    /// Seconds a new connection has to send its first request's headers (a kept-alive
    /// one: the keep-alive time plus this). Slower: the connection is closed.
    #[arg(long = "header-timeout-seconds", env = "HEADER_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=600))]
    pub(crate) header_timeout_seconds: u64,
    /// Most connections the metadata listener holds at once (more: 503, then closed).
    #[arg(long = "max-connections", env = "MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|v| v as usize))]
    pub(crate) max_connections: usize,
    /// Most connections one client address (an IPv6 client: its zone's prefix) holds at
    /// once; trusted proxies are exempt (more: 429, then closed).
    #[arg(long = "max-connections-per-client", env = "MAX_CONNECTIONS_PER_CLIENT", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=1_000_000).map(|v| v as usize))]
    pub(crate) max_connections_per_client: usize,
    /// Most requests parked by `wait_for_change` at once (more: 429). Each holds a
    /// connection: keep it below --max-connections.
    #[arg(long = "max-waiting", env = "MAX_WAITING", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(0..=1_000_000).map(|v| v as usize))]
    pub(crate) max_waiting: usize,
    /// Most requests one client (an IPv6 client: its /64) parks at once (more: 429).
    #[arg(long = "max-waiting-per-client", env = "MAX_WAITING_PER_CLIENT", default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=1_000_000).map(|v| v as usize))]
    pub(crate) max_waiting_per_client: usize,
    /// Most header lines a request may carry (more: 431).
    #[arg(long = "max-header-count", env = "MAX_HEADER_COUNT", default_value_t = 64, value_parser = clap::value_parser!(u16).range(8..=1024).map(usize::from))]
    pub(crate) max_header_count: usize,
    /// Most bytes of headers a request may carry (more: 431).
    #[arg(long = "max-header-bytes", env = "MAX_HEADER_BYTES", default_value_t = 16384, value_parser = clap::value_parser!(u32).range(1024..=1048576).map(|v| v as usize))]
    pub(crate) max_header_bytes: usize,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(
        long = "shutdown-grace-seconds",
        env = "SHUTDOWN_GRACE_SECONDS",
        default_value_t = 2
    )]
    pub(crate) shutdown_grace_seconds: u64,
    /// Seconds per audit interval: the first refusal of each client and reason in one is
    /// logged, the rest are counted and summed up in one line.
    #[arg(long = "audit-interval-seconds", env = "AUDIT_INTERVAL_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub(crate) audit_interval_seconds: u64,
    /// Refusals a client may collect per minute (all at once at most); past them its
    /// connection is closed and new ones refused (429) until the budget refills.
    #[arg(long = "refusals-per-minute", env = "REFUSALS_PER_MINUTE", default_value_t = 120, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub(crate) refusals_per_minute: u32,
    /// Watch the segment for another host claiming the metadata addresses (ARP, neighbour
    /// discovery).
    #[arg(long = "impostor-detection", env = "IMPOSTOR_DETECTION", value_enum, default_value_t = ImpostorDetection::Auto)]
    pub(crate) impostor_detection: ImpostorDetection,
    /// Directory of PEM private keys (P-256 or RSA) that sign node identity tokens; each
    /// file's name without .pem is its key id, the last in name order signs, all are
    /// published. Watched and reloaded on change or SIGHUP. Without it (or without a key
    /// in it) the identity paths answer 404.
    #[arg(long = "identity-key-dir", env = "IDENTITY_KEY_DIR")]
    pub(crate) identity_key_dir: Option<PathBuf>,
    /// `iss` of identity tokens: the URL where verifiers find
    /// /.well-known/openid-configuration and /.well-known/jwks.json (the admin listener, or
    /// a proxy to it), e.g. https://metadata.example.com. Needed with --identity-key-dir.
    #[arg(long = "identity-issuer", env = "IDENTITY_ISSUER")]
    pub(crate) identity_issuer: Option<String>,
    /// Seconds an identity token is valid.
    #[arg(long = "identity-ttl-seconds", env = "IDENTITY_TTL_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::identity_token::token::MAX_TTL)))]
    pub(crate) identity_ttl_seconds: u32,
    /// `sub` of identity tokens: a template with {uuid}, the node's UUID (e.g.
    /// spiffe://example.org/ironic/node/{uuid}).
    #[arg(
        long = "identity-subject",
        env = "IDENTITY_SUBJECT",
        default_value = "{uuid}"
    )]
    pub(crate) identity_subject: String,
    /// Identity tokens one node may have per second (vendor_data2.json answers included).
    #[arg(long = "identity-tokens-per-second", env = "IDENTITY_TOKENS_PER_SECOND", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) identity_tokens_per_second: u32,
    /// Identity tokens one node may have at once before the rate applies.
    #[arg(long = "identity-tokens-burst", env = "IDENTITY_TOKENS_BURST", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10000))]
    pub(crate) identity_tokens_burst: u32,
    /// Also publish /.well-known/jwks.json and /.well-known/openid-configuration on the
    /// metadata listener, for verifiers on the nodes' segment.
    #[arg(
        long = "identity-publish-on-metadata",
        env = "IDENTITY_PUBLISH_ON_METADATA"
    )]
    pub(crate) identity_publish_on_metadata: bool,
    /// Log filter (error, warn, info, debug, trace, or tracing directives).
    #[arg(long = "log-level", env = "LOG_LEVEL", default_value = "info")]
    pub(crate) log_level: String,
    /// Log line format (default: text when stderr is a terminal, JSON otherwise).
    #[arg(long = "log-format", env = "LOG_FORMAT", value_enum)]
    pub(crate) log_format: Option<LogFormat>,
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) | Err(_) => {
            Err("expected a TCP port number from 1 to 65535 (set by --port or BIND_PORT)".into())
        }
        Ok(p) => Ok(p),
    }
}

/// A listener address as written: an IP address and, for an IPv6 link-local one, the
/// interface it is on (a name or an index).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BindAddr {
    pub(crate) ip: IpAddr,
    pub(crate) interface: Option<String>,
}

impl std::fmt::Display for BindAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.interface {
            Some(i) => write!(f, "{}%{i}", self.ip),
            None => write!(f, "{}", self.ip),
        }
    }
}

fn parse_bind_addr(s: &str) -> Result<BindAddr, String> {
    let s = s.trim();
    let (ip, interface) = match s.split_once('%') {
        Some((ip, i)) => (ip, Some(i.to_string())),
        None => (s, None),
    };
    let ip: IpAddr = ip.parse().map_err(|_| {
        format!("{s:?}: expected an IPv4 or IPv6 address (set by --bind or BIND_ADDR)")
    })?;
    let link_local = matches!(ip, IpAddr::V6(v6) if v6.is_unicast_link_local());
    match (&interface, link_local) {
        (Some(i), _) if i.is_empty() => Err(format!("{s:?}: no interface after '%'")),
        (Some(_), false) => Err(format!(
            "{s:?}: only an IPv6 link-local address takes an interface"
        )),
        (None, true) => Err(format!(
            "{s:?}: a link-local address needs its interface, e.g. {ip}%eth1"
        )),
        _ => Ok(BindAddr { ip, interface }),
    }
}
