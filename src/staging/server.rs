//! The image server Ironic downloads staged images from: one route,
//! `/images/{token}/{digest}.iso`, `GET` and `HEAD` with single-range
//! support (tower-http's `ServeFile`); everything else is an empty 404.
//! Served by `crate::listener::serve_router`.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use tower::ServiceExt as _;
use tower_http::services::ServeFile;

use super::Inner;

const STREAM_CHUNK: usize = 256 * 1024;

pub(super) fn router(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/images/{token}/{file}", any(image))
        .fallback(async || StatusCode::NOT_FOUND)
        .with_state(inner)
}

async fn image(
    State(inner): State<Arc<Inner>>,
    Path((token, file)): Path<(String, String)>,
    request: Request,
) -> Response {
    let method = request.method().clone();
    if method != Method::GET && method != Method::HEAD {
        return StatusCode::NOT_FOUND.into_response();
    }
    let Some(hex) = inner.lookup(&token, &file) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let file = ServeFile::new(inner.blob_path(&hex)).with_buf_chunk_size(STREAM_CHUNK);
    let Ok(response) = file.oneshot(request).await;
    let mut response = response.map(Body::new);
    let status = response.status();
    if status == StatusCode::NOT_FOUND {
        // Evicted between the lookup and the open.
        tracing::warn!(digest = %hex, "staged image missing from the cache");
        return StatusCode::NOT_FOUND.into_response();
    }
    // Never the path: it carries the host's token.
    let digest = format!("sha256:{hex}");
    if method == Method::GET {
        let length = response.headers().get(header::CONTENT_LENGTH);
        let bytes: u64 = length
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        tracing::info!(%digest, status = status.as_u16(), bytes, "serving staged image");
    } else {
        tracing::debug!(%digest, status = status.as_u16(), "staged image HEAD");
    }
    if status.is_success() {
        let headers = response.headers_mut();
        let iso = HeaderValue::from_static("application/x-iso9660-image");
        headers.insert(header::CONTENT_TYPE, iso);
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(etag) = HeaderValue::from_str(&format!("\"{hex}\"")) {
            headers.insert(header::ETAG, etag);
        }
    }
    response
}
