//! Reloads never expose an empty or partial policy to requests: clients keep asking while
//! the policy files are rewritten, validly and invalidly, and SIGHUP forces reloads.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::{client_from, fixture, Server};

/// a.toml is rewritten; b.toml never changes. A partial read (a without b) would let the
/// quarantined host in; an empty policy would shut the node out.
const B: &str = "[[zone]]\nname = \"quarantine\"\ncidrs = [\"127.0.0.50/32\"]\naction = \"deny\"\n";

fn a_valid(n: usize) -> String {
    format!("[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\nrate_limit = {{ per_second = {}, burst = 100000 }}\n", 1000 + n)
}
const A_INVALID: &str = "[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\nrate_limit = { per_second = 0, burst = 1 }\n";

fn write_atomic(dir: &std::path::Path, name: &str, text: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_during_reloads_see_whole_policies() {
    let dir = tempfile::tempdir().unwrap();
    write_atomic(dir.path(), "a.toml", &a_valid(0));
    write_atomic(dir.path(), "b.toml", B);
    let s = Server::start_with(
        &fixture("nodes.json"),
        "127.0.0.1".parse().unwrap(),
        // The quarantined client is refused on every request: its refusal budget would
        // close its connections, which this test is not about.
        &[
            "--policy-dir",
            dir.path().to_str().unwrap(),
            "--refusals-per-minute",
            "1000000",
        ],
    );
    let url = s.url("/latest/meta-data/instance-id");
    let stop = Arc::new(AtomicBool::new(false));
    let done: Arc<[AtomicUsize; 2]> = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let clients: Vec<_> = [("127.0.0.11", 200u16), ("127.0.0.50", 403u16)]
        .into_iter()
        .enumerate()
        .map(|(i, (from, want))| {
            let (url, stop, done) = (url.clone(), stop.clone(), done.clone());
            tokio::spawn(async move {
                let c = client_from(from);
                while !stop.load(Ordering::Relaxed) {
                    let status = c.get(&url).send().await.unwrap().status().as_u16();
                    assert_eq!(status, want, "{from} during a reload");
                    done[i].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Keep editing until both clients have made 300 requests under the changing policy.
    let mut i = 0;
    while i < 200 || done.iter().any(|d| d.load(Ordering::Relaxed) < 300) {
        // A client that saw a wrong answer has stopped: stop editing and report it below.
        if clients.iter().any(|c| c.is_finished()) {
            break;
        }
        let valid = a_valid(i);
        write_atomic(
            dir.path(),
            "a.toml",
            if i % 2 == 0 { A_INVALID } else { &valid },
        );
        if i % 10 == 0 {
            s.signal("HUP");
        }
        i += 1;
        tokio::task::yield_now().await;
    }
    // Edits this fast are gathered until they settle: end with a rejected one and a
    // valid one, each waited for, while the clients still ask.
    write_atomic(dir.path(), "a.toml", A_INVALID);
    s.metric_reaches("metadata_policy_reloads_total{result=\"rejected\"}", 1.0)
        .await;
    write_atomic(dir.path(), "a.toml", &a_valid(1));
    s.metric_reaches("metadata_policy_reloads_total{result=\"applied\"}", 1.0)
        .await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
}

/// SIGHUP asks for a reload, and its default action ends a process. One sent from the
/// moment the service has started logging (a configuration manager reloading it as it
/// deploys) until it answers must reload, never stop it.
#[test]
fn sighup_while_starting_never_stops_the_service() {
    use std::time::{Duration, Instant};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let lo: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let (port, admin) = (common::free_port(lo), common::free_port(lo));
    let mut child = common::bin()
        .arg("serve")
        .arg("--inventory")
        .arg(fixture("nodes.json"))
        .arg("--policy-dir")
        .arg(fixture("policies/open"))
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--admin", &format!("127.0.0.1:{admin}")])
        .args(["--log-format", "json"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let hup = |pid: u32| {
        std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap();
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let logged = |what: &str| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains(what)
    };
    while !logged("serving metadata") {
        assert!(
            child.try_wait().unwrap().is_none(),
            "ended before it served"
        );
        assert!(Instant::now() < deadline, "never started");
        std::thread::sleep(Duration::from_millis(1));
    }
    // From the start-up line on, until the policy says it reloaded on a SIGHUP.
    while !logged("SIGHUP received") {
        hup(child.id());
        if let Some(status) = child.try_wait().unwrap() {
            panic!("a SIGHUP during start-up ended the service ({status})");
        }
        assert!(Instant::now() < deadline, "no reload on SIGHUP");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "alive after the reload"
    );
    let _ = child.kill();
    let _ = child.wait();
}
