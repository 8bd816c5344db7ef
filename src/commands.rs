//! The commands of the binary: `serve`, `policy check`, `render`, `explain`.

use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use crate::cli::{Cli, Command, ExplainArgs, PolicyCommand};
use crate::explain::{Explanation, LinkLayer, Query};
use crate::inventory::{file, Catalog};
use crate::ironic::model::Inventory;
use crate::metadata::render;
use crate::{handle, logging, policy, proxy, server};

/// Parses the command line and runs the command it names.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Policy(PolicyCommand::Check { dir }) => match policy::file::load_dir(&dir) {
            Ok(set) => {
                let (n, p) = (set.zones.len(), set.projects.len());
                let text = format!(
                    "{}{}: {n} zone(s), {p} project(s), valid\n",
                    policy::Policy::build(set, None).describe(),
                    dir.display()
                );
                write_stdout(text.as_bytes())
            }
            Err(e) => {
                eprintln!("error: invalid policy: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Render(args) => match render(&args) {
            Ok((reply, warnings)) => {
                for w in warnings {
                    eprintln!("warning: {w}");
                }
                write_stdout(&reply.body)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(args) => serve(&args),
        Command::Explain(args) => explain(&args),
    }
}

/// `explain`: a question that is not one (an address that is no IP, a MAC that is no MAC)
/// exits 2 with one line; an inventory or policy that cannot be read, 1.
fn explain(args: &ExplainArgs) -> ExitCode {
    let mac = args.mac.as_deref();
    let query = Query::parse(
        &args.address,
        mac,
        args.interface.as_deref(),
        Some(&args.path),
    );
    let query = match query {
        Ok(q) => q,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match explained(args, &query) {
        Ok(e) if args.json => {
            let json = serde_json::to_string_pretty(&e).unwrap_or_default();
            write_stdout(format!("{json}\n").as_bytes())
        }
        Ok(e) => write_stdout(e.text().as_bytes()),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The explanation of `query` under the policy directory, over the inventory file or what
/// Ironic lists now.
fn explained(args: &ExplainArgs, query: &Query) -> Result<Explanation, String> {
    let set =
        policy::file::load_dir(&args.policy_dir).map_err(|e| format!("invalid policy: {e}"))?;
    let policy = policy::Policy::build(set, None);
    let env = std::env::vars().collect();
    let inventory = match server::origin_of(&args.source, &env).map_err(|e| e.to_string())? {
        server::Origin::File(path) => file::load(&path).map_err(|e| e.to_string())?,
        server::Origin::Ironic(config) => from_ironic(*config)?,
    };
    let served: Vec<String> = args
        .served_states
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if served.is_empty() {
        return Err("--served-states lists no state".into());
    }
    let catalog = Catalog::new("explain", served);
    catalog.publish(inventory);
    let index = catalog.index();
    Ok(crate::explain::explain(
        &index,
        &policy,
        LinkLayer::Offline,
        query,
        true,
    ))
}

/// Everything Ironic lists now (configdrives given as URLs are not fetched).
fn from_ironic(config: crate::ironic::ClientConfig) -> Result<Inventory, String> {
    let client = crate::ironic::IronicClient::new(config).map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(client.fetch_inventory())
        .map_err(|e| format!("Ironic: {e}"))
}

fn render(args: &crate::cli::RenderArgs) -> Result<(crate::reply::Reply, Vec<String>), String> {
    let policy = match &args.policy_dir {
        Some(dir) => policy::file::load_dir(dir).map_err(|e| format!("invalid policy: {e}"))?,
        None => Default::default(),
    };
    let scopes = policy::Policy::build(policy, None);
    let inventory = file::load(&args.inventory).map_err(|e| e.to_string())?;
    render::render_offline(
        inventory,
        &args.node,
        &args.path,
        &args.dns_servers,
        &handle::today_utc(),
        &scopes,
    )
}

fn serve(args: &crate::cli::ServeArgs) -> ExitCode {
    if let Err(msg) = logging::init(&args.log_level, args.log_format) {
        eprintln!("error: {msg}");
        return ExitCode::from(2);
    }
    raise_capabilities();
    match server::Settings::from_args(args).and_then(server::prepare) {
        Ok(prepared) => {
            proxy::run(prepared, Arc::new(tokio::sync::Notify::new()));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The image grants the binary CAP_NET_BIND_SERVICE (port 80) and CAP_NET_RAW (the
/// impostor watch) as permitted file capabilities only, so that it runs where a deployment
/// keeps neither: whichever of them this process holds is made effective here.
fn raise_capabilities() {
    use caps::{CapSet, Capability};
    for cap in [Capability::CAP_NET_BIND_SERVICE, Capability::CAP_NET_RAW] {
        let held = caps::has_cap(None, CapSet::Permitted, cap).unwrap_or(false);
        if held {
            if let Err(e) = caps::raise(None, CapSet::Effective, cap) {
                tracing::warn!(capability = %cap, error = %e, "cannot raise a permitted capability");
            }
        }
    }
}

/// Writes a command's output; a reader that went away (`| head`) ends it quietly.
fn write_stdout(bytes: &[u8]) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
