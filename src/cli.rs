//! Command line and environment. Static settings only: they need a restart to change.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::identity::DEFAULT_SERVED_STATES;

#[derive(Debug, Parser)]
#[command(
    name = "ironic-metadata",
    version,
    about = "OpenStack and EC2 metadata for bare-metal nodes managed by Ironic"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve metadata on BIND_ADDR:BIND_PORT, with health and metrics on ADMIN_ADDR.
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address the metadata listener binds.
    #[arg(long = "bind", env = "BIND_ADDR", default_value = "169.254.169.254", value_parser = parse_bind_addr)]
    pub bind: IpAddr,
    /// Port the metadata listener binds.
    #[arg(long = "port", env = "BIND_PORT", default_value_t = 80, value_parser = parse_port)]
    pub port: u16,
    /// Address of the admin listener (/healthz, /readyz, /metrics).
    #[arg(long = "admin", env = "ADMIN_ADDR", default_value = "127.0.0.1:9180")]
    pub admin: SocketAddr,
    /// Serve the nodes of this inventory file (an Ironic dump: {"nodes", "ports", "portgroups"}).
    #[arg(long = "inventory", env = "INVENTORY_FILE")]
    pub inventory: Option<PathBuf>,
    /// Provision states whose nodes are answered for (comma-separated).
    #[arg(long = "served-states", env = "SERVED_STATES", value_delimiter = ',',
          default_values_t = DEFAULT_SERVED_STATES.iter().map(|s| s.to_string()).collect::<Vec<_>>())]
    pub served_states: Vec<String>,
    /// Worker threads of the metadata listener (default: one per CPU).
    #[arg(long = "threads", env = "THREADS")]
    pub threads: Option<usize>,
    /// Seconds an idle keep-alive connection is kept open.
    #[arg(
        long = "keepalive-seconds",
        env = "KEEPALIVE_SECONDS",
        default_value_t = 15
    )]
    pub keepalive_seconds: u64,
    /// Seconds in-flight requests get to finish after SIGTERM.
    #[arg(
        long = "shutdown-grace-seconds",
        env = "SHUTDOWN_GRACE_SECONDS",
        default_value_t = 2
    )]
    pub shutdown_grace_seconds: u64,
    /// Log filter (error, warn, info, debug, trace, or tracing directives).
    #[arg(long = "log-level", env = "LOG_LEVEL", default_value = "info")]
    pub log_level: String,
    /// Log line format.
    #[arg(long = "log-format", env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.trim().parse::<u16>() {
        Ok(0) | Err(_) => {
            Err("expected a TCP port number from 1 to 65535 (set by --port or BIND_PORT)".into())
        }
        Ok(p) => Ok(p),
    }
}

fn parse_bind_addr(s: &str) -> Result<IpAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected an IPv4 or IPv6 address (set by --bind or BIND_ADDR)".into())
}
