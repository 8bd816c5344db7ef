//! The commands of the binary: `serve`, `policy check`, `render`.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, LogFormat, PolicyCommand};
use crate::inventory::file;
use crate::metadata::render;
use crate::{handle, policy, proxy, server};

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
    }
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
    if let Err(msg) = init_logging(&args.log_level, args.log_format) {
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

fn init_logging(level: &str, format: LogFormat) -> Result<(), String> {
    let filter =
        EnvFilter::try_new(level).map_err(|e| format!("invalid LOG_LEVEL {level:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| format!("cannot start logging: {e}"))
}
