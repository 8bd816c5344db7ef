//! Hostile clients against the real binary: malformed requests, slow and numerous
//! connections, floods and address rotation. Every client speaks from a loopback address;
//! each test bounds its own duration through the server's timeouts, never by sleeping.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use common::{
    body, client_from, connect, eventually, fixture, get, raw, read_to_close, status_line, Server,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

const ALPHA: &str = "127.0.0.11";
const ALPHA_ID: &str = "aaaaaaaa-0000-4000-8000-000000000011";
const BRAVO: &str = "127.0.0.12";
const FOX: &str = "127.0.0.15";
const WAIT: Duration = Duration::from_secs(30);

/// The server still answers an ordinary request, right after something hostile.
async fn still_serves(s: &Server) {
    let (status, _, body) = get(&client_from(ALPHA), &s.url("/latest/meta-data/instance-id")).await;
    assert_eq!((status, body.as_str()), (200, ALPHA_ID));
}

/// What each malformed request gets, and that the server answers normally right after.
/// Requests pingora cannot parse get its bare `400` (no body) and a closed connection.
#[tokio::test]
async fn malformed_requests_get_defined_answers() {
    let s = Server::start(&fixture("nodes.json"));
    let get_close = |target: &str, extra: &str| {
        format!(
            "GET {target} HTTP/1.1\r\nHost: 169.254.169.254\r\n{extra}Connection: close\r\n\r\n"
        )
        .into_bytes()
    };
    let id = "/latest/meta-data/instance-id";
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        (
            "random bytes",
            b"\x16\x03\x01\x02\x00\xff\xfe garbage\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
            "",
        ),
        (
            "HTTP/0.9",
            b"GET /openstack\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
            "",
        ),
        (
            "unknown HTTP version",
            b"GET /openstack HTTP/9.9\r\nHost: 169.254.169.254\r\n\r\n".to_vec(),
            "HTTP/1.1 400 Bad Request",
            "",
        ),
        // RFC 9112 §3.2.2: a server accepts the absolute form; the path is what counts.
        (
            "absolute-form target",
            get_close("http://169.254.169.254/latest/meta-data/instance-id", ""),
            "HTTP/1.1 200 OK",
            ALPHA_ID,
        ),
        (
            "NUL in a header",
            get_close(id, "X-A: a\0b\r\n"),
            "HTTP/1.1 400 Bad Request",
            "",
        ),
        (
            "a header of 2 MiB",
            get_close(id, &format!("X-Big: {}\r\n", "a".repeat(2 << 20))),
            "HTTP/1.1 400 Bad Request",
            "",
        ),
        (
            "duplicate Host",
            get_close(id, "Host: other\r\n"),
            "HTTP/1.1 400 Bad Request",
            "",
        ),
        (
            "percent-encoded traversal",
            get_close("/openstack/latest/%2e%2e/%2e%2e/%2e%2e/etc/passwd", ""),
            "HTTP/1.1 404 Not Found",
            "not found\n",
        ),
        (
            "encoded slashes",
            get_close("/openstack/latest/..%2f..%2f..%2fetc%2fpasswd", ""),
            "HTTP/1.1 404 Not Found",
            "not found\n",
        ),
        (
            "TRACE",
            b"TRACE / HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n".to_vec(),
            "HTTP/1.1 405 Method Not Allowed",
            "method not allowed\n",
        ),
        (
            "CONNECT",
            b"CONNECT 10.0.0.1:443 HTTP/1.1\r\nHost: 10.0.0.1:443\r\n\r\n".to_vec(),
            "HTTP/1.1 405 Method Not Allowed",
            "",
        ),
        (
            "a method name in lower case",
            b"get / HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n".to_vec(),
            "HTTP/1.1 405 Method Not Allowed",
            "method not allowed\n",
        ),
        // Blank lines before a request are ignored (RFC 9112 §2.2); then the client left.
        ("blank lines only", b"\r\n\r\n".to_vec(), "", ""),
    ];
    for (what, bytes, want_status, want_body) in cases {
        let answer = raw(&s, ALPHA, &bytes).await;
        assert_eq!(
            (status_line(&answer), body(&answer)),
            (want_status, want_body),
            "{what}: {answer:?}"
        );
        still_serves(&s).await;
    }
}

/// A thousand connections that never finish their headers, from a hundred addresses, hold
/// the server no longer than the header timeout, and a real client is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_cut_at_the_header_timeout() {
    let s = Server::start_with(
        &fixture("nodes.json"),
        "127.0.0.1".parse().unwrap(),
        &["--header-timeout-seconds", "4"],
    );
    let mut slow = Vec::new();
    for i in 0..1000u32 {
        let from = IpAddr::V4(Ipv4Addr::new(127, 1, 0, (i % 100) as u8 + 1));
        let mut c = connect(&s, from).await;
        // Half of them send a partial request; the others nothing at all.
        if i % 2 == 0 {
            c.write_all(
                b"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\n",
            )
            .await
            .unwrap();
        }
        slow.push(c);
    }
    eventually(WAIT, "1000 connections held", || async {
        s.metric("metadata_connections_open").await >= 1000.0
    })
    .await;
    // A real client is served while the slow connections are still held.
    still_serves(&s).await;
    let (status, _, _) = get(
        &client_from(BRAVO),
        &s.url("/openstack/latest/meta_data.json"),
    )
    .await;
    assert_eq!(status, 200);
    assert!(s.metric("metadata_header_timeouts_total").await < 1000.0);
    // Every slow connection is closed by the server (no answer: the request never came).
    for mut c in slow {
        assert_eq!(read_to_close(&mut c).await, "");
    }
    assert_eq!(s.metric("metadata_header_timeouts_total").await, 1000.0);
    eventually(WAIT, "connections released", || async {
        s.metric("metadata_connections_open").await == 0.0
    })
    .await;
    still_serves(&s).await;
}

/// A client dripping its headers a byte at a time is cut off at the deadline (pingora alone
/// waits 60 s per byte); a password POST whose body never comes gets 408.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dripping_headers_and_bodies_are_cut_off() {
    let s = Server::start_with(
        &fixture("nodes.json"),
        "127.0.0.1".parse().unwrap(),
        &["--header-timeout-seconds", "2"],
    );
    let mut c = connect(&s, ALPHA.parse().unwrap()).await;
    let request = b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: 169.254.169.254\r\n\r\n";
    let mut sent = 0;
    let mut answer = Vec::new();
    // One byte per 200 ms: the whole request would take 11 s; the server must stop at 2 s.
    while sent < request.len() {
        let mut buf = [0u8; 512];
        tokio::select! {
            r = c.read(&mut buf) => {
                match r {
                    Ok(0) | Err(_) => break,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if c.write_all(&request[sent..=sent]).await.is_err() {
                    break;
                }
                sent += 1;
            }
        }
    }
    assert!(
        sent < request.len(),
        "the whole request was accepted byte by byte"
    );
    assert!(answer.is_empty(), "{:?}", String::from_utf8_lossy(&answer));
    assert_eq!(s.metric("metadata_header_timeouts_total").await, 1.0);

    let mut c = connect(&s, ALPHA.parse().unwrap()).await;
    c.write_all(
        b"POST /openstack/latest/password HTTP/1.1\r\nHost: 169.254.169.254\r\nContent-Length: 10\r\n\r\nabc",
    )
    .await
    .unwrap();
    let answer = read_to_close(&mut c).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 408 Request Timeout");
    assert_eq!(body(&answer), "request body not received in time\n");
    // Nothing was stored.
    let (status, _, stored) = get(&client_from(ALPHA), &s.url("/openstack/latest/password")).await;
    assert_eq!((status, stored.as_str()), (200, ""));
}

/// Connections beyond the per-client cap get 429 and are closed; beyond the total cap, 503.
/// Slots come back when connections close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_caps_per_client_and_in_total() {
    let s = Server::start_with(
        &fixture("nodes.json"),
        "127.0.0.1".parse().unwrap(),
        &[
            "--max-connections-per-client",
            "4",
            "--max-connections",
            "10",
        ],
    );
    let flooder: IpAddr = "127.2.0.1".parse().unwrap();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(connect(&s, flooder).await);
    }
    eventually(WAIT, "4 connections held", || async {
        s.metric("metadata_connections_open").await == 4.0
    })
    .await;
    let mut fifth = connect(&s, flooder).await;
    let answer = read_to_close(&mut fifth).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 429 Too Many Requests");
    assert_eq!(body(&answer), "too many connections from this client\n");
    // Another client is not affected.
    still_serves(&s).await;
    // Its connection closes with its client; then fill the total: 4 + 6 from elsewhere.
    eventually(WAIT, "the other client's connection closed", || async {
        s.metric("metadata_connections_open").await == 4.0
    })
    .await;
    for i in 0..6u8 {
        held.push(connect(&s, IpAddr::V4(Ipv4Addr::new(127, 2, 1, i + 1))).await);
    }
    eventually(WAIT, "10 connections held", || async {
        s.metric("metadata_connections_open").await == 10.0
    })
    .await;
    let mut over = connect(&s, ALPHA.parse().unwrap()).await;
    let answer = read_to_close(&mut over).await;
    assert_eq!(status_line(&answer), "HTTP/1.1 503 Service Unavailable");
    assert_eq!(body(&answer), "too many connections\n");
    assert_eq!(
        s.metric("metadata_connections_refused_total{reason=\"client_limit\"}")
            .await,
        1.0
    );
    assert_eq!(
        s.metric("metadata_connections_refused_total{reason=\"total_limit\"}")
            .await,
        1.0
    );
    // Closing the held connections frees their slots.
    drop(held);
    eventually(WAIT, "slots released", || async {
        s.metric("metadata_connections_open").await == 0.0
    })
    .await;
    still_serves(&s).await;
}

/// One address flooding at full speed is limited (429) while every other client is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_address_is_limited_and_others_are_served() {
    let policy = tempfile::tempdir().unwrap();
    std::fs::write(
        policy.path().join("zones.toml"),
        "[[zone]]\nname = \"lab\"\ncidrs = [\"127.0.0.0/8\"]\naction = \"allow\"\n\
         rate_limit = { per_second = 20, burst = 40 }\n",
    )
    .unwrap();
    // The refusal budget (tested on its own) would close the flood's connection: here the
    // rate limit alone is at work.
    let s = Server::start_with(
        &fixture("nodes.json"),
        "127.0.0.1".parse().unwrap(),
        &[
            "--policy-dir",
            policy.path().to_str().unwrap(),
            "--refusals-per-minute",
            "1000000",
        ],
    );
    let url = s.url("/openstack/latest/meta_data.json");
    let flood = {
        let url = url.clone();
        tokio::spawn(async move {
            let c = client_from(ALPHA);
            let mut counts = std::collections::BTreeMap::new();
            for _ in 0..2000 {
                let status = c.get(&url).send().await.unwrap().status().as_u16();
                *counts.entry(status).or_insert(0u32) += 1;
            }
            counts
        })
    };
    // Meanwhile two other nodes fetch what cloud-init fetches, within their own limit.
    for from in [BRAVO, FOX] {
        for path in [
            "/openstack",
            "/openstack/latest/meta_data.json",
            "/openstack/latest/network_data.json",
            "/openstack/latest/vendor_data.json",
            "/openstack/latest/vendor_data2.json",
        ] {
            let (status, _, _) = get(&client_from(from), &s.url(path)).await;
            assert_eq!(status, 200, "{from} {path}");
        }
    }
    let counts = flood.await.unwrap();
    assert_eq!(
        counts.keys().copied().collect::<Vec<_>>(),
        vec![200, 429],
        "{counts:?}"
    );
    // At most the burst plus what the rate refilled during the flood got through.
    assert!(counts[&429] > 1000, "{counts:?}");
    s.metric_reaches(
        "metadata_requests_denied_total{reason=\"rate_limited\",zone=\"lab\"}",
        f64::from(counts[&429]),
    )
    .await;
}

/// 100,000 requests from as many source addresses: the limiter holds one entry per address
/// until its sweep, then none; resident memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_source_addresses_keep_memory_bounded() {
    const CLIENTS: u32 = 100_000;
    let s = Server::start(&fixture("nodes.json"));
    still_serves(&s).await;
    let before = s.rss_kib();
    let addr = s.addr;
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut workers = Vec::new();
    for _ in 0..32 {
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut statuses = std::collections::BTreeMap::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= CLIENTS {
                    break;
                }
                // 127.1.0.0 onwards: addresses no node claims (answered 404 after the limiter).
                let from = Ipv4Addr::from(0x7f01_0000 + i);
                let socket = TcpSocket::new_v4().unwrap();
                socket.bind(SocketAddr::new(from.into(), 0)).unwrap();
                let mut c = socket.connect(addr).await.unwrap();
                c.write_all(
                    b"GET /openstack/latest/meta_data.json HTTP/1.1\r\nHost: 169.254.169.254\r\nConnection: close\r\n\r\n",
                )
                    .await
                    .unwrap();
                let answer = read_to_close(&mut c).await;
                *statuses.entry(status_line(&answer).to_string()).or_insert(0u32) += 1;
            }
            statuses
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    for w in workers {
        for (k, v) in w.await.unwrap() {
            *statuses.entry(k).or_insert(0) += v;
        }
    }
    assert_eq!(
        statuses,
        [("HTTP/1.1 404 Not Found".to_string(), CLIENTS)].into()
    );
    let after = s.rss_kib();
    // The limiter's sweep (every 10 s) forgets addresses whose bucket is full again.
    eventually(Duration::from_secs(60), "limiter swept", || async {
        s.metric("metadata_ratelimit_tracked_clients").await == 0.0
    })
    .await;
    let swept = s.rss_kib();
    println!("RSS before {before} KiB, after {CLIENTS} addresses {after} KiB, after the sweep {swept} KiB");
    assert!(
        swept <= before + 16 * 1024,
        "RSS grew from {before} KiB to {swept} KiB"
    );
    still_serves(&s).await;
}
