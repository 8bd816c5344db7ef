//! The binary as an operator meets it: start-up errors, the admin listener, stopping.

mod common;

use std::net::TcpListener;

use common::{bin, client_from, fixture, get, run_to_exit, Server};

fn serve_args(inventory: &str, port: u16, admin_port: u16) -> Vec<String> {
    vec![
        "serve".into(),
        "--inventory".into(),
        inventory.into(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--admin".into(),
        format!("127.0.0.1:{admin_port}"),
    ]
}

fn free() -> u16 {
    common::free_port("127.0.0.1".parse().unwrap())
}

#[test]
fn missing_inventory_file_is_one_clear_error() {
    let (code, err) =
        run_to_exit(bin().args(serve_args("/nonexistent/inventory.json", free(), free())));
    assert_eq!(code, Some(1));
    assert_eq!(err, "error: cannot read inventory file /nonexistent/inventory.json: No such file or directory (os error 2)\n");
}

#[test]
fn invalid_json_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(&path, "{\"nodes\": [\n  {\"uuid\": \"a\",}\n]}\n").unwrap();
    let p = path.to_str().unwrap();
    let (code, err) = run_to_exit(bin().args(serve_args(p, free(), free())));
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        format!("error: invalid inventory file {p}: line 2, column 16: trailing comma\n")
    );
}

#[test]
fn no_inventory_is_refused() {
    let (code, err) = run_to_exit(
        bin()
            .args([
                "serve",
                "--bind",
                "127.0.0.1",
                "--port",
                &free().to_string(),
            ])
            .env_remove("INVENTORY_FILE")
            .env_remove("IRONIC_URL")
            .env_remove("OS_CLOUD")
            .env_remove("OS_AUTH_URL"),
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "error: no inventory given: set IRONIC_URL (or --ironic-url), or pass --inventory FILE\n"
    );
}

#[test]
fn inventory_file_and_ironic_together_are_refused() {
    let inv = fixture("nodes.json");
    let (code, err) = run_to_exit(
        bin()
            .args(serve_args(inv.to_str().unwrap(), free(), free()))
            .env("IRONIC_URL", "http://127.0.0.1:1"),
    );
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "error: both an inventory file and an Ironic URL are given: choose one\n"
    );
}

#[test]
fn bad_ironic_settings_are_refused_at_start() {
    let (code, err) = run_to_exit(bin().args([
        "serve",
        "--bind",
        "127.0.0.1",
        "--port",
        &free().to_string(),
        "--ironic-url",
        "ftp://ironic",
    ]));
    assert_eq!(code, Some(1));
    assert_eq!(err, "error: invalid Ironic client settings: invalid Ironic URL ftp://ironic/: scheme must be http or https\n");
    let (code, err) = run_to_exit(
        bin()
            .args([
                "serve",
                "--bind",
                "127.0.0.1",
                "--port",
                &free().to_string(),
                "--ironic-url",
                "http://127.0.0.1:1",
            ])
            .env("IRONIC_USERNAME", "u")
            .env_remove("IRONIC_PASSWORD")
            .env_remove("IRONIC_PASSWORD_FILE")
            .env_remove("OS_CLOUD"),
    );
    assert_eq!(code, Some(1));
    assert_eq!(err, "error: Ironic credentials: IRONIC_USERNAME is set but neither IRONIC_PASSWORD nor IRONIC_PASSWORD_FILE\n");
}

#[test]
fn port_in_use_is_refused_at_once() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let inv = fixture("nodes.json");
    let (code, err) = run_to_exit(bin().args(serve_args(inv.to_str().unwrap(), port, free())));
    assert_eq!(code, Some(1));
    assert!(
        err.ends_with(&format!(
            "error: cannot listen on 127.0.0.1:{port} (metadata): address already in use\n"
        )),
        "{err}"
    );
}

#[test]
fn bad_bind_lists_are_refused_before_anything_listens() {
    let inv = fixture("nodes.json");
    let run = |bind: &str| {
        let mut args = serve_args(inv.to_str().unwrap(), free(), free());
        args[4] = bind.to_string();
        run_to_exit(bin().args(args))
    };
    // Start-up problems: exit 1 and one line.
    let (code, err) = run("127.0.0.1,127.0.0.1");
    assert_eq!(
        (code, err.as_str()),
        (Some(1), "error: --bind: 127.0.0.1 is listed twice\n")
    );
    let (code, err) = run("127.0.0.1,fe80::a9fe:a9fe%nosuchif0");
    assert_eq!(
        (code, err.as_str()),
        (
            Some(1),
            "error: --bind: no network interface named \"nosuchif0\" on this host\n"
        )
    );
    // Unusable arguments: exit 2, naming the value.
    let (code, err) = run("fe80::a9fe:a9fe");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("\"fe80::a9fe:a9fe\": a link-local address needs its interface, e.g. fe80::a9fe:a9fe%eth1"),
        "{err}"
    );
    let (code, err) = run("169.254.169.254%eth0");
    assert_eq!(code, Some(2));
    assert!(
        err.contains("only an IPv6 link-local address takes an interface"),
        "{err}"
    );
}

#[tokio::test]
async fn every_address_of_the_bind_list_serves() {
    // One listener per address, with the same request path: the node at 127.0.0.11 (whose
    // network data also names ::1) is answered on both.
    let s = Server::start_with(
        &fixture("nodes.json"),
        "127.0.0.1".parse().unwrap(),
        &["--bind", "127.0.0.1,::1"],
    );
    let port = s.addr.port();
    for (from, base) in [
        ("127.0.0.11", format!("http://127.0.0.1:{port}")),
        ("::1", format!("http://[::1]:{port}")),
    ] {
        let (status, _, body) = get(
            &client_from(from),
            &format!("{base}/latest/meta-data/instance-id"),
        )
        .await;
        assert_eq!(
            (status, body.as_str()),
            (200, "aaaaaaaa-0000-4000-8000-000000000011"),
            "{base}"
        );
    }
}

#[test]
fn bind_port_that_is_not_a_number() {
    let inv = fixture("nodes.json");
    let (code, err) = run_to_exit(
        bin()
            .args([
                "serve",
                "--inventory",
                inv.to_str().unwrap(),
                "--bind",
                "127.0.0.1",
            ])
            .env("BIND_PORT", "eighty"),
    );
    assert_eq!(code, Some(2));
    assert!(
        err.starts_with("error: invalid value 'eighty' for '--port <PORT>': expected a TCP port number from 1 to 65535 (set by --port or BIND_PORT)\n"),
        "{err}"
    );
}

#[test]
fn env_vars_configure_and_flags_override() {
    // BIND_PORT from the environment is used unless --port is given; the port-in-use check
    // shows which one the server tried.
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let inv = fixture("nodes.json");
    let (code, err) = run_to_exit(
        bin()
            .args([
                "serve",
                "--inventory",
                inv.to_str().unwrap(),
                "--admin",
                &format!("127.0.0.1:{}", free()),
            ])
            .env("BIND_ADDR", "127.0.0.1")
            .env("BIND_PORT", port.to_string()),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port} (metadata)")),
        "{err}"
    );

    let other = free();
    let (code, err) = run_to_exit(
        bin()
            .args([
                "serve",
                "--inventory",
                inv.to_str().unwrap(),
                "--port",
                &other.to_string(),
                "--admin",
                &format!("127.0.0.1:{port}"),
            ])
            .env("BIND_ADDR", "127.0.0.1")
            .env("BIND_PORT", "1"),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port} (admin)")),
        "flag --port won over BIND_PORT, admin port is the one taken: {err}"
    );
}

#[test]
fn admin_must_not_share_a_routable_metadata_address() {
    let inv = fixture("nodes.json");
    let (code, err) = run_to_exit(bin().args([
        "serve",
        "--inventory",
        inv.to_str().unwrap(),
        "--bind",
        "169.254.169.254",
        "--admin",
        "169.254.169.254:9180",
    ]));
    assert_eq!(code, Some(1));
    assert_eq!(err, "error: the admin listener 169.254.169.254:9180 must not share the metadata address 169.254.169.254\n");
}

#[tokio::test]
async fn admin_listener_reports_health_readiness_and_metrics() {
    let s = Server::start(&fixture("nodes.json"));
    let local = client_from("127.0.0.1");
    assert_eq!(
        get(&local, &s.admin_url("/healthz")).await,
        (200, "text/plain; charset=utf-8".into(), "ok\n".into())
    );
    let (status, ct, body) = get(&local, &s.admin_url("/readyz")).await;
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);
    // Ready means the metadata listener accepts connections too.
    assert_eq!(ready["listening"], true);
    assert_eq!(ready["nodes"], 7);
    assert_eq!(ready["served_nodes"], 6);
    assert!(ready["source"].as_str().unwrap().starts_with("file:"));

    // One answered and two refused requests show up in the counters.
    get(
        &client_from("127.0.0.11"),
        &s.url("/latest/meta-data/instance-id"),
    )
    .await;
    get(
        &client_from("127.0.0.99"),
        &s.url("/latest/meta-data/instance-id"),
    )
    .await;
    get(
        &client_from("127.0.0.13"),
        &s.url("/latest/meta-data/instance-id"),
    )
    .await;
    s.metric_reaches("metadata_requests_total{status=\"200\"}", 1.0)
        .await;
    s.metric_reaches("metadata_requests_total{status=\"404\"}", 2.0)
        .await;
    let (status, ct, metrics) = get(&local, &s.admin_url("/metrics")).await;
    assert_eq!((status, ct.as_str()), (200, "text/plain; version=0.0.4"));
    for line in [
        "metadata_requests_total{status=\"200\"} 1",
        "metadata_requests_total{status=\"404\"} 2",
        "metadata_requests_denied_total{reason=\"unknown_address\",zone=\"loopback\"} 1",
        "metadata_requests_denied_total{reason=\"contested_address\",zone=\"loopback\"} 1",
        "metadata_index_nodes 7",
        "metadata_index_served_nodes 6",
        "metadata_index_ready 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "missing {line:?} in\n{metrics}"
        );
    }
    assert!(
        !metrics.contains("127.0.0."),
        "no metric is labelled by address"
    );
    assert_eq!(get(&local, &s.admin_url("/nope")).await.0, 404);
}

#[tokio::test]
async fn sigterm_stops_gracefully() {
    let s = Server::start(&fixture("nodes.json"));
    assert_eq!(
        get(
            &client_from("127.0.0.11"),
            &s.url("/latest/meta-data/instance-id")
        )
        .await
        .0,
        200
    );
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
}
