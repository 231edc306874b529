//! `--metrics-addr HOST:PORT`: serves the process's [`Metrics`] in the Prometheus text
//! format on `GET /metrics` while the command runs.
//!
//! The counters live in `afterimage-core` ([`Metrics::global`]), where providers and
//! the engine update them; this module only answers scrapes, with hyper's HTTP/1 server.

use std::convert::Infallible;
use std::net::SocketAddr;

use afterimage_core::Metrics;
use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The content type of the text format, version 0.0.4.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `addr` and serves `/metrics` for the rest of the process; returns the bound
/// address (port 0 picks a free one).
pub(crate) async fn serve(addr: &str) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot serve metrics on {addr}: give a free HOST:PORT to --metrics-addr (for example 0.0.0.0:9464, or 127.0.0.1:0 for any free port)"
        )
    })?;
    let bound = listener.local_addr()?;
    tokio::spawn(accept(listener));
    Ok(bound)
}

async fn accept(listener: TcpListener) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, say: try again shortly rather than spin.
                tracing::debug!("metrics: accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        tokio::spawn(async move {
            let served = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
            if let Err(e) = served {
                tracing::debug!("metrics: a scrape connection failed: {e}");
            }
        });
    }
}

async fn answer(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = match (request.method(), request.uri().path()) {
        (&Method::GET, "/metrics") => (StatusCode::OK, Metrics::global().render()),
        (_, "/metrics") => (
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET /metrics\n".to_owned(),
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "afterimage serves its metrics on /metrics\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(TEXT_FORMAT));
    Ok(response)
}
