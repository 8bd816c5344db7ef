//! The benchmark's pingora floor: the least a pingora 0.9 HTTP/1.1 service does per request.
//! A pingora `Server` with one listening service whose app (`ServeHttp`, pingora's own
//! lightest HTTP app, no proxy phases) answers every request with the same bytes (a file
//! read once at start) and the header fields ironic-metadata sends for JSON; the listener
//! gathers answers in the same 16 KiB write buffer as ironic-metadata's. No address check,
//! no zone, no rate limit, no rendering, no timers of its own.
//!
//! Whatever ironic-metadata does per request comes on top of this: the distance from here
//! to nginx is pingora's, the distance from ironic-metadata to here is the service's.
//!
//! `pingora_floor --port PORT --body FILE [--threads N]` listens on 127.0.0.1:PORT with N
//! worker threads (default 1), as `ironic-metadata --threads N` does.

use async_trait::async_trait;
use bytes::Bytes;
use pingora::apps::http_app::{HttpServer, ServeHttp};
use pingora::listeners::{L4BufferSettings, ListenerConfig};
use pingora::protocols::http::ServerSession;
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};
use pingora::services::listening::Service;

#[path = "shared/fixed.rs"]
mod fixed;

struct Answer(Bytes);

#[async_trait]
impl ServeHttp for Answer {
    async fn response(&self, _session: &mut ServerSession) -> http::Response<Vec<u8>> {
        http::Response::builder()
            .header("Content-Type", "application/json")
            .header("Content-Length", self.0.len())
            .header("Cache-Control", "no-store")
            .body(self.0.to_vec())
            .expect("a valid response")
    }
}

fn main() {
    let (a, body) = fixed::load("pingora_floor");
    let conf = ServerConf {
        threads: a.threads.max(1),
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        pid_file: String::new(),
        upgrade_sock: String::new(),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    let mut service = Service::new("floor".to_string(), HttpServer::new_app(Answer(body)));
    service.add_listener(
        ListenerConfig::tcp(format!("127.0.0.1:{}", a.port))
            .l4_buffer(L4BufferSettings::default().write(16 * 1024)),
    );
    server.add_service(service);
    server.run(RunArgs::default());
}
