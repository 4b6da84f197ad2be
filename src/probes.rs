//! The plain-HTTP listener for `/healthz`, `/readyz` and `/metrics`, shared
//! by `serve` (webhook) and `reconcile` (controller).
//!
//! - `GET /healthz`: 200 `ok` while the process runs (never depends on the
//!   API server or on readiness).
//! - `GET /readyz`: 200 `ok` when the readiness check passes, else 503 with the
//!   reason as plain text.
//! - `GET /metrics`: the registry in the Prometheus text format (0.0.4), or in
//!   OpenMetrics when the scraper asks for `application/openmetrics-text`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The readiness check: `Ok(())` when ready, `Err(reason)` otherwise.
pub type ReadinessCheck = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Binds `listen` (`--probe-listen`) and serves `/healthz`, `/readyz` (from
/// `readiness`) and `/metrics` (from `registry`) there until `shutdown` is
/// cancelled, then stops accepting and finishes open requests: the bound
/// address and the serving task.
pub async fn spawn(
    listen: SocketAddr,
    registry: Arc<Registry>,
    readiness: ReadinessCheck,
    shutdown: &CancellationToken,
) -> anyhow::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
    let listener = (TcpListener::bind(listen).await)
        .with_context(|| format!("binding --probe-listen {listen}"))?;
    let address = listener.local_addr()?;
    let router = ProbeServer {
        registry,
        readiness,
    }
    .router();
    let stop = shutdown.clone().cancelled_owned();
    let serve = crate::listener::serve_router(listener, router, None, stop);
    Ok((address, tokio::spawn(serve)))
}

/// The handlers' state.
#[derive(Clone)]
struct ProbeServer {
    registry: Arc<Registry>,
    readiness: ReadinessCheck,
}

impl ProbeServer {
    fn router(&self) -> Router {
        Router::new()
            .route("/healthz", get(async || "ok"))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .fallback(not_found)
            .method_not_allowed_fallback(|| async { method_not_allowed("GET") })
            .with_state(self.clone())
    }
}

/// Longest part of a request path echoed in a 404 answer.
const MAX_ECHOED_PATH: usize = 256;

/// 404 with a one-line plain-text reason (axum's default has an empty body,
/// which tells someone probing the port nothing). Also used by the webhook
/// listener.
pub(crate) async fn not_found(uri: Uri) -> Response {
    let shown = crate::text::truncate(uri.path(), MAX_ECHOED_PATH, "...");
    let reason = format!("404 page not found: {shown}\n");
    (StatusCode::NOT_FOUND, reason).into_response()
}

/// 405 with a one-line plain-text reason naming the method to use (axum
/// still adds the `Allow` header).
pub(crate) fn method_not_allowed(allowed: &str) -> Response {
    let reason = format!("405 method not allowed: use {allowed}\n");
    (StatusCode::METHOD_NOT_ALLOWED, reason).into_response()
}

async fn readyz(State(server): State<ProbeServer>) -> Response {
    match (server.readiness)() {
        Ok(()) => (StatusCode::OK, "ok").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, reason).into_response(),
    }
}

async fn metrics(State(server): State<ProbeServer>, headers: HeaderMap) -> Response {
    let wants_openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("application/openmetrics-text"));
    let mut body = String::with_capacity(8 * 1024);
    let (encoded, content_type) = if wants_openmetrics {
        let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
        (text::encode(&mut body, &server.registry), content_type)
    } else {
        let encoded = prometheus_text::encode(&mut body, &server.registry);
        (encoded, prometheus_text::CONTENT_TYPE)
    };
    match encoded {
        Ok(()) => ([(header::CONTENT_TYPE, content_type)], body).into_response(),
        Err(err) => {
            let reason = format!("encoding metrics: {err}");
            (StatusCode::INTERNAL_SERVER_ERROR, reason).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use prometheus_client::metrics::counter::Counter;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tower::ServiceExt;

    async fn get_path(
        router: Router,
        path: &str,
        accept: Option<&str>,
    ) -> (StatusCode, String, String) {
        let mut request = Request::get(path);
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        let response = router
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            String::from_utf8(body.to_vec()).unwrap(),
            content_type,
        )
    }

    /// A server with one counter, ready while the returned flag is set.
    fn server_with_counter() -> (ProbeServer, Arc<AtomicBool>, Counter) {
        let mut registry = Registry::default();
        let counter = Counter::default();
        registry.register(
            "probe_test_events",
            "Events seen by the test",
            counter.clone(),
        );
        let ready = Arc::new(AtomicBool::new(false));
        let flag = ready.clone();
        let check = move || match flag.load(Ordering::SeqCst) {
            true => Ok(()),
            false => Err("not ready".to_string()),
        };
        let server = ProbeServer {
            registry: Arc::new(registry),
            readiness: Arc::new(check),
        };
        (server, ready, counter)
    }

    #[tokio::test]
    async fn healthz_is_always_ok_and_readyz_follows_the_flag() {
        let (server, readiness, _) = server_with_counter();
        assert_eq!(
            get_path(server.router(), "/healthz", None).await.0,
            StatusCode::OK
        );
        let (status, body, _) = get_path(server.router(), "/readyz", None).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body, "not ready");
        readiness.store(true, Ordering::SeqCst);
        assert_eq!(
            get_path(server.router(), "/readyz", None).await.0,
            StatusCode::OK
        );
        readiness.store(false, Ordering::SeqCst);
        assert_eq!(
            get_path(server.router(), "/readyz", None).await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test]
    async fn metrics_in_prometheus_text_and_openmetrics() {
        let (server, _, counter) = server_with_counter();
        counter.inc_by(3);
        let (status, body, content_type) = get_path(server.router(), "/metrics", None).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        assert!(body.contains("probe_test_events_total 3"), "{body}");
        assert!(!body.contains("# EOF"));
        let (_, body, content_type) = get_path(
            server.router(),
            "/metrics",
            Some("application/openmetrics-text;version=1.0.0"),
        )
        .await;
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        assert!(body.contains("probe_test_events_total 3"), "{body}");
        assert!(body.ends_with("# EOF\n"));
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_get_a_plain_text_reason() {
        let (server, _, _) = server_with_counter();
        let (status, body, content_type) = get_path(server.router(), "/foo?x=1", None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(body, "404 page not found: /foo\n");
        assert_eq!(content_type, "text/plain; charset=utf-8");
        let long = format!("/{}", "a".repeat(1000));
        let (_, body, _) = get_path(server.router(), &long, None).await;
        assert_eq!(body, format!("404 page not found: {}...\n", &long[..256]));

        let response = server
            .router()
            .oneshot(Request::post("/healthz").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET,HEAD");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/plain; charset=utf-8"
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "405 method not allowed: use GET\n");
    }

    #[tokio::test]
    async fn serves_over_tcp_and_stops_on_shutdown() {
        let (server, readiness, _) = server_with_counter();
        readiness.store(true, Ordering::SeqCst);
        let shutdown = CancellationToken::new();
        let listen = "127.0.0.1:0".parse().unwrap();
        let ProbeServer {
            registry,
            readiness,
        } = server;
        let (addr, task) = spawn(listen, registry, readiness, &shutdown).await.unwrap();
        let body = reqwest::get(format!("http://{addr}/readyz"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(body, "ok");
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}
