//! `/metrics` on its own address (`--metrics-listen`): Prometheus scrapes it there, and an
//! Ingress or load balancer in front of the main port never routes to it.
//!
//! It is still an open port, so it keeps the front's rules in small: at most
//! `--metrics-max-connections` at once (more are closed unanswered), headers within
//! `--metrics-header-timeout-ms`, only `GET /metrics` (404 otherwise), and it stops with the
//! node.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use mmsub_api::http::{error_response, HttpResponse};
use mmsub_metrics::Metrics;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::settings::MetricsSettings;

/// Binds `addr` and serves `/metrics` until `shutdown`, within `settings`' limits; returns the
/// bound address.
pub async fn start(
    addr: SocketAddr,
    settings: &MetricsSettings,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics-listen {addr}: {e}"))?;
    let local = listener.local_addr()?;
    tracing::info!(addr = %local, "serving /metrics");
    tokio::spawn(accept(listener, settings.clone(), metrics, shutdown));
    Ok(local)
}

async fn accept(
    listener: TcpListener,
    settings: MetricsSettings,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let places = Arc::new(Semaphore::new(settings.max_connections.max(1)));
    let header_read_timeout = settings.header_read_timeout;
    loop {
        let accepted = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            // Typically EMFILE: the main port's loop backs off too; this one is not busy.
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let Ok(place) = places.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _place = place;
            let service = service_fn(move |request: Request<Incoming>| {
                let answer = if request.uri().path() == "/metrics" {
                    answer(&metrics, request.method())
                } else {
                    error_response(StatusCode::NOT_FOUND, "Only /metrics is served here.")
                };
                async move { Ok::<_, Infallible>(answer) }
            });
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = shutdown.cancelled() => {}
            }
        });
    }
}

/// The answer to a request for `/metrics`, here or on the main port.
pub fn answer(metrics: &Metrics, method: &Method) -> HttpResponse {
    if method != Method::GET && method != Method::HEAD {
        return error_response(StatusCode::METHOD_NOT_ALLOWED, "Use GET for /metrics.");
    }
    let mut response = Response::new(Full::new(Bytes::from(metrics.encode())));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(mmsub_metrics::CONTENT_TYPE),
    );
    response
}
