//! The image server Ironic downloads staged images from: one route,
//! `/images/{token}/{digest}.iso`, `GET` and `HEAD` with single-range
//! support (tower-http's `ServeFile`); everything else is an empty 404.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, Response, StatusCode, header};
use axum::routing::any;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use super::Inner;

/// Slow clients may not hold a connection open without sending headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const STREAM_CHUNK: usize = 256 * 1024;

pub(super) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/images/{token}/{file}", any(image))
        .fallback(not_found)
        .with_state(inner)
}

async fn not_found() -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

async fn image(
    State(inner): State<Arc<Inner>>,
    Path((token, file)): Path<(String, String)>,
    request: Request,
) -> Response<Body> {
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return not_found().await;
    }
    let Some(blob) = inner.lookup(&token, &file) else {
        return not_found().await;
    };
    let served = ServeFile::new(&blob.path)
        .with_buf_chunk_size(STREAM_CHUNK)
        .oneshot(request)
        .await;
    let mut response = match served {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    };
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        // Evicted between the lookup and the open.
        tracing::warn!(digest = %blob.digest, "staged image missing from the cache");
        return not_found().await;
    }
    // Never the path: it carries the host's token.
    let digest = format!("sha256:{}", blob.digest);
    if method == Method::GET {
        let bytes = response.headers().get(header::CONTENT_LENGTH).cloned();
        let bytes = bytes.as_ref().and_then(|v| v.to_str().ok()).unwrap_or("0");
        tracing::info!(%digest, status = status.as_u16(), bytes, "serving staged image");
    } else {
        tracing::debug!(%digest, status = status.as_u16(), "staged image HEAD");
    }
    if status.is_success() {
        let headers = response.headers_mut();
        let iso = HeaderValue::from_static("application/x-iso9660-image");
        headers.insert(header::CONTENT_TYPE, iso);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", blob.digest)) {
            headers.insert(header::ETAG, etag);
        }
    }
    response
}

/// Serves `router` on `listener` (TLS when `tls` is given) until `shutdown`
/// completes, then lets open downloads finish.
pub(super) async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let service = TowerToHyperService::new(router);
    crate::listener::accept_until(&listener, shutdown, |stream, peer| {
        let (builder, service) = (builder.clone(), service.clone());
        let (watcher, acceptor) = (graceful.watcher(), acceptor.clone());
        tokio::spawn(async move {
            let result = match acceptor {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(acceptor) => {
                    let handshake =
                        crate::listener::tls_handshake(acceptor, stream, HEADER_READ_TIMEOUT, peer);
                    let Some(tls_stream) = handshake.await else {
                        return;
                    };
                    let conn = builder.serve_connection(TokioIo::new(tls_stream), service);
                    watcher.watch(conn.into_owned()).await
                }
            };
            if let Err(err) = result {
                tracing::debug!(error = %err, "image server connection ended with an error");
            }
        });
    })
    .await;
    graceful.shutdown().await;
    Ok(())
}
