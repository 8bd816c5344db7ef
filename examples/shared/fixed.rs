//! What the benchmark's fixed-answer servers (`hyper_ceiling`, `pingora_floor`) share:
//! their command line and the body they answer every request with.

use std::path::PathBuf;

use bytes::Bytes;
use clap::Parser;

/// `--port PORT --body FILE [--threads N]`: listen on 127.0.0.1:PORT with N worker threads
/// (as `ironic-metadata --threads N`), answering every request with FILE's bytes.
#[derive(Parser)]
pub struct Args {
    #[arg(long)]
    pub port: u16,
    #[arg(long)]
    pub body: PathBuf,
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// The command line and the body file's bytes; exits with a message naming what is wrong.
pub fn load(name: &str) -> (Args, Bytes) {
    let args = Args::parse();
    match std::fs::read(&args.body) {
        Ok(b) => (args, Bytes::from(b)),
        Err(e) => {
            eprintln!("{name}: {}: {e}", args.body.display());
            std::process::exit(1);
        }
    }
}
