#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use ironic_metadata::cli::{Cli, Command, LogFormat, PolicyCommand};
use ironic_metadata::inventory::file;
use ironic_metadata::metadata::render;
use ironic_metadata::policy;
use ironic_metadata::server;
use tracing_subscriber::EnvFilter;

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

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Policy(PolicyCommand::Check { dir }) => match policy::file::load_dir(&dir) {
            Ok(zones) => {
                let n = zones.len();
                let text = format!(
                    "{}{}: {n} zone(s), valid\n",
                    policy::Policy::build(zones, None).describe(),
                    dir.display()
                );
                write_stdout(text.as_bytes())
            }
            Err(e) => {
                eprintln!("error: invalid policy: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Render(args) => {
            let rendered = file::load(&args.inventory)
                .map_err(|e| e.to_string())
                .and_then(|inv| {
                    render::render_offline(
                        inv,
                        &args.node,
                        &args.path,
                        &args.dns_servers,
                        &ironic_metadata::gateway::today_utc(),
                    )
                });
            match rendered {
                Ok(reply) => write_stdout(&reply.body),
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve(args) => {
            if let Err(msg) = init_logging(&args.log_level, args.log_format) {
                eprintln!("error: {msg}");
                return ExitCode::from(2);
            }
            let prepared = server::Settings::from_args(&args).and_then(server::prepare);
            match prepared {
                Ok(p) => {
                    server::run(p);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
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
