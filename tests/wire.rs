//! What an answer looks like on the wire: its header and body leave in one TCP segment
//! (one write), as a client counts them (`data_segs_in` of its socket, read with `ss`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{connect, fixture, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALPHA: &str = "127.0.0.11";
/// Bytes of user data: several times pingora's default write buffer.
const USER_DATA: usize = 6000;

/// Data segments the kernel received on the client socket `local` connected to `remote`.
fn data_segments_in(local: SocketAddr, remote: SocketAddr) -> u64 {
    let out = Command::new("ss")
        .args(["-tinH", "state", "established"])
        .arg("src")
        .arg(local.to_string())
        .arg("dst")
        .arg(remote.to_string())
        .output()
        .expect("ss (iproute2) runs");
    assert!(out.status.success(), "ss failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    // A socket that has received nothing lists no data_segs_in.
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("data_segs_in:"))
        .map_or(0, |n| n.parse().expect("a count"))
}

/// One whole answer (header and `Content-Length` bytes of body) from a kept-alive
/// connection; its status line and body length.
async fn answer(stream: &mut TcpStream, path: &str, host: &str) -> (String, usize) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the answer was complete");
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("Content-Length: "))
                    .expect("Content-Length")
                    .parse()
                    .unwrap();
                if body.len() >= length {
                    return (head.lines().next().unwrap().to_string(), length);
                }
            }
        }
    })
    .await;
    read.expect("the answer arrives")
}

/// The test inventory with alpha's user data grown to `size` bytes.
fn inventory_with_user_data(dir: &Path, size: usize) -> PathBuf {
    let text = std::fs::read_to_string(fixture("nodes.json")).unwrap();
    let mut inv: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut user_data = String::from("#cloud-config\nhostname: alpha\n");
    while user_data.len() < size {
        user_data.push_str("# padding to grow the answer past one default write buffer\n");
    }
    user_data.truncate(size);
    inv["nodes"][0]["instance_info"]["configdrive"]["user_data"] = user_data.into();
    let path = dir.join("nodes.json");
    std::fs::write(&path, serde_json::to_vec(&inv).unwrap()).unwrap();
    path
}

#[tokio::test]
async fn an_answer_leaves_in_one_segment() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&inventory_with_user_data(dir.path(), USER_DATA));
    let mut stream = connect(&s, ALPHA.parse().unwrap()).await;
    let (local, host) = (stream.local_addr().unwrap(), s.addr.to_string());
    // Answers of a few bytes to several KiB on one kept-alive connection: user data
    // above pingora's default write buffer (1,460 bytes), which used to send the header
    // alone first.
    let paths = [
        ("/openstack/latest/user_data", 200),
        ("/openstack/latest/meta_data.json", 200),
        ("/openstack/latest/user_data", 200),
        ("/openstack/latest", 200),
        ("/openstack/latest/no_such_file", 404),
    ];
    for (i, (path, status)) in paths.into_iter().enumerate() {
        let (line, length) = answer(&mut stream, path, &host).await;
        assert!(line.contains(&format!(" {status} ")), "{path}: {line}");
        if path.ends_with("user_data") {
            assert_eq!(length, USER_DATA);
        }
        assert_eq!(
            data_segments_in(local, s.addr),
            i as u64 + 1,
            "answer {} ({path}, {length} bytes of body) came in more than one segment",
            i + 1
        );
    }
}
