//! Test support: start the real binary on free loopback ports, and HTTP clients that speak
//! from a chosen loopback address so one test process can pose as several nodes.
#![allow(dead_code)]

pub mod fake_ironic;

use std::io::Read;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

pub fn repo_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(name)
}

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ironic-metadata"))
}

/// A port that was free a moment ago on `ip`. The server re-checks before it listens and
/// the start loop retries on a collision.
pub fn free_port(ip: IpAddr) -> u16 {
    TcpListener::bind(SocketAddr::new(ip, 0))
        .expect("bind an ephemeral port")
        .local_addr()
        .unwrap()
        .port()
}

/// The binary, serving until dropped.
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    pub fn start(inventory: &Path) -> Server {
        Server::start_with(inventory, "127.0.0.1".parse().unwrap(), &[])
    }

    pub fn start_with(inventory: &Path, bind: IpAddr, extra: &[&str]) -> Server {
        let inv = inventory.to_str().unwrap().to_string();
        Server::launch(&["--inventory", &inv], bind, extra, &[])
    }

    /// Serve from the Ironic at `url`, with credentials in `env`.
    pub fn start_ironic(url: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::launch(
            &["--ironic-url", url],
            "127.0.0.1".parse().unwrap(),
            extra,
            env,
        )
    }

    pub fn launch(source: &[&str], bind: IpAddr, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let open = fixture("policies/open");
        let mut args: Vec<&str> = Vec::new();
        if !extra.contains(&"--policy-dir") {
            args.extend(["--policy-dir", open.to_str().unwrap()]);
        }
        args.extend(extra);
        Server::launch_exact(source, bind, &args, env)
    }

    /// Like [`Server::launch`] without the default open policy.
    pub fn launch_exact(
        source: &[&str],
        bind: IpAddr,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut last_log = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let log = dir.path().join("server.log");
            let addr = SocketAddr::new(bind, free_port(bind));
            let admin = SocketAddr::new(
                "127.0.0.1".parse().unwrap(),
                free_port("127.0.0.1".parse().unwrap()),
            );
            let mut cmd = bin();
            cmd.arg("serve")
                .args(source)
                // A test that lists its own addresses (`--bind A,B`) gets them instead.
                .args(if extra.contains(&"--bind") {
                    vec![]
                } else {
                    vec!["--bind".to_string(), bind.to_string()]
                })
                .args(["--port", &addr.port().to_string()])
                .args([
                    "--admin",
                    &admin.to_string(),
                    "--threads",
                    "2",
                    "--log-level",
                    "debug",
                    "--log-format",
                    "json",
                ])
                .args(extra)
                .env_remove("BIND_ADDR")
                .env_remove("BIND_PORT")
                .env_remove("ADMIN_ADDR")
                .env_remove("INVENTORY_FILE")
                .env_remove("IRONIC_URL")
                .env_remove("OS_CLOUD")
                .env_remove("OS_AUTH_URL")
                .env_remove("IRONIC_USERNAME")
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            let mut child = cmd.spawn().expect("start the server binary");
            match wait_ready(&mut child, admin, addr) {
                Ok(()) => {
                    return Server {
                        child,
                        addr,
                        admin,
                        log,
                        _dir: dir,
                    }
                }
                Err(status) => {
                    last_log = std::fs::read_to_string(&log).unwrap_or_default();
                    let _ = child.kill();
                    let _ = child.wait();
                    if !last_log.contains("address already in use") {
                        panic!("server did not start ({status:?}):\n{last_log}");
                    }
                }
            }
        }
        panic!("server did not start after 5 port collisions:\n{last_log}");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin, path)
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The audit events logged so far, as JSON objects.
    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "audit")
            .collect()
    }

    /// The audit events once `done` holds for them. A request is logged just after its
    /// answer is written (pingora's logging phase), so a test waits for its events.
    pub async fn audit_until(
        &self,
        what: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.audit_events();
            if done(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until the sample in /metrics reaches at least `min`, and returns its value.
    pub async fn metric_reaches(&self, sample: &str, min: f64) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let v = self.metric(sample).await;
            if v >= min {
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "{sample} stayed at {v}, below {min}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The value of one unlabelled or labelled sample in /metrics, 0 when absent.
    pub async fn metric(&self, sample: &str) -> f64 {
        let (_, _, text) = get(&client_from("127.0.0.1"), &self.admin_url("/metrics")).await;
        text.lines()
            .find_map(|l| l.strip_prefix(sample).and_then(|v| v.strip_prefix(' ')))
            .map(|v| v.parse().unwrap())
            .unwrap_or(0.0)
    }

    /// /readyz as JSON (any status).
    pub async fn readyz(&self) -> serde_json::Value {
        let (_, _, body) = get(&client_from("127.0.0.1"), &self.admin_url("/readyz")).await;
        serde_json::from_str(&body).unwrap()
    }

    /// Send a signal (`HUP`, `TERM`, ...) to the server.
    pub fn signal(&self, sig: &str) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap()
            .success());
    }

    /// Send SIGTERM and wait for the exit status (bounded).
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        wait_exit(&mut self.child, Duration::from_secs(15)).expect("server exits after SIGTERM")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll until the admin /healthz answers and the metadata port accepts connections (the
/// two listeners start independently), the child exits, or 20 s pass.
fn wait_ready(
    child: &mut Child,
    admin: SocketAddr,
    listen: SocketAddr,
) -> Result<(), Option<ExitStatus>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Some(status));
        }
        if healthz(admin)
            && std::net::TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok()
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(None)
}

fn healthz(admin: SocketAddr) -> bool {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&admin, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}

pub fn wait_exit(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Run the binary to completion (bounded) and return (exit code, stderr).
pub fn run_to_exit(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = wait_exit(&mut child, Duration::from_secs(30));
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    (status.and_then(|s| s.code()), reader.join().unwrap())
}

/// An HTTP client whose connections come from `ip` (any 127.0.0.0/8 address works on
/// Linux loopback), so the server sees that address as the client.
pub fn client_from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(Some(ip.parse().unwrap()))
        .no_proxy()
        // Plain HTTP only: skip loading the system's CA store for every client.
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Poll `check` until it holds or `limit` passes; panics with `what` on time-out. For
/// conditions that come true through the server's own work (a sweep, a reload).
pub async fn eventually<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Status, content type and body of one GET.
pub async fn get(client: &reqwest::Client, url: &str) -> (u16, String, String) {
    let r = client.get(url).send().await.expect("request");
    let status = r.status().as_u16();
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ct, r.text().await.unwrap())
}

/// A TCP connection to the server from `from`.
pub async fn connect(s: &Server, from: IpAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(s.addr).await.unwrap()
}

/// Everything the server sends until it closes the connection (or 10 s pass: a hang).
pub async fn read_to_close(stream: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            match tokio::io::AsyncReadExt::read(stream, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server neither answered nor closed");
    String::from_utf8_lossy(&out).into_owned()
}

/// Send raw bytes from `from`; the answer up to the server's close.
pub async fn raw(s: &Server, from: &str, bytes: &[u8]) -> String {
    let mut stream = connect(s, from.parse().unwrap()).await;
    // The server may close before reading everything (it refused early): not an error.
    let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, bytes).await;
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
    read_to_close(&mut stream).await
}

pub fn status_line(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

pub fn body(answer: &str) -> &str {
    answer.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}
