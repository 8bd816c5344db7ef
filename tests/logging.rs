//! Logs as an operator reads them: text at a terminal, JSON for a log shipper, library
//! lines (pingora's) with their level and message but no source-file path, and one line
//! at start-up that says what is served where.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{bin, fixture, free_port, wait_exit};

/// Where the server's stderr goes.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Stderr {
    Terminal,
    Pipe,
}

/// A server whose stderr lines arrive on a channel.
struct Logged {
    child: Child,
    lines: mpsc::Receiver<String>,
    port: u16,
    admin: u16,
}

impl Drop for Logged {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pseudo-terminal: the reading end and the terminal a child writes to.
fn pty() -> (std::fs::File, std::fs::File) {
    use rustix::pty::{grantpt, openpt, ptsname, unlockpt, OpenptFlags};
    let master = openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
    grantpt(&master).unwrap();
    unlockpt(&master).unwrap();
    let name = ptsname(&master, Vec::new()).unwrap();
    let slave = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(name.to_str().unwrap())
        .unwrap();
    (std::fs::File::from(master), slave)
}

/// Starts the server with `LOG_FORMAT` as given (unset: `None`) and stderr on `stderr`;
/// its lines are read on a thread until it exits.
fn start(stderr: Stderr, log_format: Option<&str>) -> Logged {
    let ip = "127.0.0.1".parse().unwrap();
    let (port, admin) = (free_port(ip), free_port(ip));
    let policy = fixture("policies/open");
    let mut cmd = bin();
    cmd.args(["serve", "--inventory"])
        .arg(fixture("nodes.json"))
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .arg("--policy-dir")
        .arg(&policy)
        .args(["--threads", "1", "--log-level", "info"])
        .env_remove("LOG_FORMAT")
        .env_remove("LOG_LEVEL")
        .env_remove("INVENTORY_FILE")
        .env_remove("IRONIC_URL")
        .env_remove("OS_CLOUD")
        .env_remove("OS_AUTH_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if let Some(f) = log_format {
        cmd.env("LOG_FORMAT", f);
    }
    let reader: Box<dyn Read + Send> = match stderr {
        Stderr::Terminal => {
            let (master, slave) = pty();
            cmd.stderr(Stdio::from(slave));
            Box::new(master)
        }
        Stderr::Pipe => {
            cmd.stderr(Stdio::piped());
            let child = cmd.spawn().expect("start the server");
            return logged(child, port, admin, None);
        }
    };
    let child = cmd.spawn().expect("start the server");
    // The terminal's other end stays open in `cmd` until it is dropped: reads would never
    // see the end of the output.
    drop(cmd);
    logged(child, port, admin, Some(reader))
}

fn logged(mut child: Child, port: u16, admin: u16, reader: Option<Box<dyn Read + Send>>) -> Logged {
    let reader: Box<dyn Read + Send> = match reader {
        Some(r) => r,
        None => Box::new(child.stderr.take().unwrap()),
    };
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        // A terminal whose last writer closed reads as an error (EIO): the end.
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let line = strip_ansi(line.trim_end_matches('\r'));
            if !line.is_empty() && tx.send(line).is_err() {
                break;
            }
        }
    });
    Logged {
        child,
        lines,
        port,
        admin,
    }
}

/// The text of a line without its colour escapes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

impl Logged {
    /// The lines up to and including the first that contains `what`.
    fn until(&self, what: &str) -> Vec<String> {
        let mut seen = Vec::new();
        loop {
            match self.lines.recv_timeout(Duration::from_secs(20)) {
                Ok(line) => {
                    let done = line.contains(what);
                    seen.push(line);
                    if done {
                        return seen;
                    }
                }
                Err(_) => panic!("no line with {what:?}; got:\n{}", seen.join("\n")),
            }
        }
    }

    /// Stops the server once both listeners accept connections (its signal handlers are
    /// installed by then) and returns every line it wrote after the ones already read.
    fn stop(mut self) -> Vec<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        for port in [self.port, self.admin] {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "port {port} never accepted"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        wait_exit(&mut self.child, Duration::from_secs(15)).expect("the server stops");
        let mut rest = Vec::new();
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            rest.push(line);
        }
        rest
    }
}

/// No line names a source file: neither a path into a crate's sources nor a `.rs` file.
fn assert_no_source_paths(lines: &[String]) {
    for line in lines {
        assert!(
            !line.contains("/src/") && !line.contains(".rs\"") && !line.contains(".rs:"),
            "a source path in: {line}"
        );
    }
}

fn assert_json(lines: &[String]) {
    for line in lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let o = v.as_object().unwrap();
        for key in ["timestamp", "level", "message", "target"] {
            assert!(o.contains_key(key), "no {key} in {line}");
        }
        assert!(
            !o.keys().any(|k| k.starts_with("log.")),
            "log crate metadata in {line}"
        );
    }
    // pingora's own lines (through the `log` crate) keep their level, message and target.
    let pingora = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["message"] == "Server starting")
        .expect("pingora's start-up line");
    assert_eq!(pingora["level"], "INFO");
    assert_eq!(pingora["target"], "pingora_core::server");
}

fn assert_text(lines: &[String]) {
    for line in lines {
        assert!(!line.starts_with('{'), "JSON at a terminal: {line}");
        assert!(
            [" INFO ", " WARN ", " ERROR ", " DEBUG "]
                .iter()
                .any(|l| line.contains(l)),
            "no level in: {line}"
        );
    }
    let pingora = lines
        .iter()
        .find(|l| l.contains("Server starting"))
        .expect("pingora's start-up line");
    assert!(
        pingora.contains(" INFO ") && pingora.contains("pingora_core::server"),
        "{pingora}"
    );
}

/// Exactly one line says where the metadata and admin listeners are, the source, the
/// policy directory and its zone count.
fn assert_one_startup_line(lines: &[String], s: &Logged, json: bool) {
    let listen = format!("127.0.0.1:{}", s.port);
    let naming: Vec<&String> = lines.iter().filter(|l| l.contains(&listen)).collect();
    assert_eq!(naming.len(), 1, "lines naming {listen}: {naming:#?}");
    let line = naming[0];
    let policy = fixture("policies/open");
    let inventory = fixture("nodes.json");
    if json {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["message"], "serving metadata", "{line}");
        assert_eq!(v["listen"], listen.as_str());
        assert_eq!(v["admin"], format!("127.0.0.1:{}", s.admin));
        assert_eq!(v["source"], format!("file:{}", inventory.display()));
        assert_eq!(v["policy_dir"], policy.display().to_string());
        assert_eq!(v["zones"], 1);
        assert_eq!(
            (v["nodes"].as_u64(), v["served"].as_u64()),
            (Some(7), Some(6))
        );
    } else {
        for part in [
            "serving metadata".to_string(),
            format!("listen={listen}"),
            format!("admin=127.0.0.1:{}", s.admin),
            format!("source=file:{}", inventory.display()),
            format!("policy_dir={}", policy.display()),
            "zones=1".into(),
            "nodes=7".into(),
        ] {
            assert!(line.contains(&part), "no {part:?} in: {line}");
        }
    }
    // The start-up is that line: the policy and the inventory have no lines of their own.
    for gone in ["policy loaded", "inventory loaded"] {
        assert!(
            !lines.iter().any(|l| l.contains(gone)),
            "{gone}: {lines:#?}"
        );
    }
}

fn check(stderr: Stderr, log_format: Option<&str>, json: bool) {
    let s = start(stderr, log_format);
    let started = s.until("serving metadata");
    // pingora logs its own start after ours.
    let mut lines = started.clone();
    lines.extend(s.until("Starting service: metadata"));
    assert_one_startup_line(&lines, &s, json);
    let mut all = lines;
    all.extend(s.stop());
    assert!(
        all.iter().any(|l| l.contains("gracefully exiting")),
        "pingora's shutdown lines: {all:#?}"
    );
    assert_no_source_paths(&all);
    if json {
        assert_json(&all);
    } else {
        assert_text(&all);
    }
}

#[test]
fn a_terminal_gets_text() {
    check(Stderr::Terminal, None, false);
}

#[test]
fn a_pipe_gets_json() {
    check(Stderr::Pipe, None, true);
}

#[test]
fn log_format_overrides_the_guess() {
    check(Stderr::Terminal, Some("json"), true);
    check(Stderr::Pipe, Some("text"), false);
}
