//! The benchmark's ceiling: a bare hyper 1.x HTTP/1.1 server answering every request with
//! the same bytes (a file read once at start), the header fields ironic-metadata sends for
//! JSON, and nothing else: no address check, no zone, no rate limit, no rendering.
//!
//! `hyper_ceiling --port PORT --body FILE [--threads N]` listens on 127.0.0.1:PORT with a
//! tokio runtime of N worker threads (default 1), as `ironic-metadata --threads N` does.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

#[path = "shared/fixed.rs"]
mod fixed;

async fn serve(addr: SocketAddr, body: Bytes) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let body = body.clone();
        tokio::spawn(async move {
            let answer = service_fn(move |_req: Request<Incoming>| {
                let body = body.clone();
                async move {
                    Ok::<_, Infallible>(
                        Response::builder()
                            .header("Content-Type", "application/json")
                            .header("Cache-Control", "no-store")
                            .body(http_body_util_full(body))
                            .expect("a valid response"),
                    )
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), answer)
                .await;
        });
    }
}

/// A whole body of known length (what `http_body_util::Full` does, without the crate).
fn http_body_util_full(b: Bytes) -> Full {
    Full(Some(b))
}

struct Full(Option<Bytes>);

impl hyper::body::Body for Full {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(self.0.take().map(|b| Ok(hyper::body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.0.as_ref().map_or(0, |b| b.len() as u64))
    }
}

fn main() {
    let (a, body) = fixed::load("hyper_ceiling");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(a.threads.max(1))
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let addr = SocketAddr::from(([127, 0, 0, 1], a.port));
    if let Err(e) = rt.block_on(serve(addr, body)) {
        eprintln!("hyper_ceiling: {addr}: {e}");
        std::process::exit(1);
    }
}
