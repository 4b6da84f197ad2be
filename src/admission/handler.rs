//! The three webhook endpoints: HTTP checks, envelope, rules, answer.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::FutureExt as _;
use http_body_util::BodyExt as _;

use super::envelope::{self, EnvelopeError, Review};
use super::metrics::{AdmissionLabels, Metrics, WebhookCodeLabels, WebhookLabels};
use super::secrets::{self, SharedSecretSource};
use super::{MUTATE_BMH_PATH, VALIDATE_BMH_PATH, VALIDATE_DATAIMAGE_PATH};
use crate::duration::parse_duration;
use crate::reconcile::record::FIELD_MANAGER;
use crate::rules::{self, Policy, ResourceKind, SecretLookup, TypedObject, Verdict};

/// The request body limit: two 3 MiB objects plus slack, as controller-runtime.
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;
/// How much of an oversized body we keep to find its uid.
const OVERSIZED_PREFIX_BYTES: usize = 64 * 1024;
/// How much more of an oversized body we read (and drop) before giving up.
const MAX_DISCARDED_BYTES: usize = 64 * 1024 * 1024;
/// Body read limit when the API server gave no `?timeout=`.
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound of `?timeout=`: the API server never sends more than 30 s
/// (`timeoutSeconds` is 1..=30), so a larger value comes from some other
/// client and must not let it hold a request open (e.g. `?timeout=1h` with
/// one body byte per second).
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Which endpoint a request came in on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Webhook {
    ValidateHost,
    MutateHost,
    ValidateDataImage,
}

impl Webhook {
    pub fn path(self) -> &'static str {
        match self {
            Self::ValidateHost => VALIDATE_BMH_PATH,
            Self::MutateHost => MUTATE_BMH_PATH,
            Self::ValidateDataImage => VALIDATE_DATAIMAGE_PATH,
        }
    }

    fn is_mutating(self) -> bool {
        self == Self::MutateHost
    }

    /// The kind this endpoint is registered for.
    fn kind(self) -> ResourceKind {
        match self {
            Self::ValidateHost | Self::MutateHost => ResourceKind::BareMetalHost,
            Self::ValidateDataImage => ResourceKind::DataImage,
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub policy: Policy,
    /// [`Self::policy`] for the reconciler's own writes (see [`mutate_policy`]).
    pub own_writes_policy: Policy,
    pub secrets: SharedSecretSource,
    /// Upper bound for one Secret lookup (also bounded by `?timeout=`).
    pub secret_timeout: Duration,
    pub metrics: Metrics,
}

impl AppState {
    pub fn new(
        policy: Policy,
        secrets: SharedSecretSource,
        secret_timeout: Duration,
        metrics: Metrics,
    ) -> Self {
        let own_writes_policy = Policy {
            operator_users: Vec::new(),
            ..policy.clone()
        };
        Self(Arc::new(AppInner {
            policy,
            own_writes_policy,
            secrets,
            secret_timeout,
            metrics,
        }))
    }
}

/// The policy of the mutating path for `review`.
///
/// The operator's whole-object writes drop `dataImage`, so the mutating path
/// restores it for the operator's users. As the operator's sidecar the
/// reconciler writes under the same user, and its removals (clearing
/// `status.dataImage` after a detach) must be honoured. The writers differ in
/// the field manager they name: every write of the reconciler names
/// [`FIELD_MANAGER`] (`options.fieldManager` of the review, the same for a
/// merge patch, a server-side apply or a replace), the operator's
/// controller-runtime client names none. A write naming ours is therefore
/// judged as anyone else's: removals honoured, defaulting still applied.
pub fn mutate_policy<'s>(state: &'s AppInner, review: &Review<'_>) -> &'s Policy {
    if review.field_manager.as_deref() == Some(FIELD_MANAGER) {
        &state.own_writes_policy
    } else {
        &state.policy
    }
}

/// The webhook routes (no TLS, no connection handling: usable with
/// `tower::ServiceExt::oneshot` in tests).
pub fn router(state: AppState) -> Router {
    [
        Webhook::ValidateHost,
        Webhook::MutateHost,
        Webhook::ValidateDataImage,
    ]
    .into_iter()
    .fold(Router::new(), |router, webhook| {
        let handler = move |State(state): State<AppState>, uri: Uri, headers: HeaderMap, body| {
            async move { serve(&state, webhook, &uri, &headers, body).await }
        };
        router.route(webhook.path(), post(handler))
    })
    .fallback(crate::probes::not_found)
    .method_not_allowed_fallback(|| async { crate::probes::method_not_allowed("POST") })
    .with_state(state)
}

/// Decrements the in-flight gauge however the request ends.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn serve(
    state: &AppState,
    webhook: Webhook,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let metrics = &state.0.metrics;
    let labels = WebhookLabels {
        webhook: webhook.path(),
    };
    let gauge = metrics.in_flight.get_or_create(&labels).clone();
    gauge.inc();
    let _in_flight = InFlight(gauge);

    let response = answer(state, webhook, uri, headers, body, started).await;

    let code = response.status().as_u16();
    metrics
        .requests
        .get_or_create(&WebhookCodeLabels {
            webhook: webhook.path(),
            code,
        })
        .inc();
    metrics
        .latency
        .get_or_create(&labels)
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn answer(
    state: &AppState,
    webhook: Webhook,
    uri: &Uri,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if !content_type.is_some_and(is_json) {
        let got = content_type.unwrap_or("none");
        tracing::info!(
            webhook = webhook.path(),
            content_type = got,
            "rejected request: not application/json"
        );
        return plain(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Type must be application/json, got {got:?}"),
        );
    }
    let timeout = match request_timeout(uri) {
        Ok(timeout) => timeout,
        Err(message) => return plain(StatusCode::BAD_REQUEST, message),
    };
    let body = match read_body(body, headers, timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT)).await {
        BodyRead::Complete(body) => body,
        BodyRead::TooLarge(prefix) => return too_large(webhook, &prefix),
        BodyRead::Failed(message) => return plain(StatusCode::BAD_REQUEST, message),
        BodyRead::TimedOut => {
            return plain(
                StatusCode::REQUEST_TIMEOUT,
                "timed out reading the request body",
            );
        }
    };
    let (review, typed_object) =
        match envelope::parse_review_for(&body, webhook.kind(), webhook.is_mutating()) {
            Ok(parsed) => parsed,
            Err(EnvelopeError::NotAReview(message)) => {
                tracing::info!(
                    webhook = webhook.path(),
                    error = message.as_str(),
                    "rejected request: not an AdmissionReview"
                );
                return plain(StatusCode::BAD_REQUEST, message);
            }
            Err(EnvelopeError::InBand {
                api_version,
                uid,
                message,
            }) => {
                tracing::info!(
                    webhook = webhook.path(),
                    uid = &*uid,
                    error = message.as_str(),
                    "malformed AdmissionReview"
                );
                let verdict = envelope::error_verdict(400, "BadRequest", message);
                return json(envelope::render_answer(api_version, &uid, &verdict));
            }
        };

    let lookup_budget = lookup_budget(timeout, state.0.secret_timeout);
    let verdict = guarded(
        judge(state, webhook, &review, typed_object, lookup_budget),
        &state.0.metrics,
    )
    .await;
    log_review(webhook, &review, &verdict, started);
    state
        .0
        .metrics
        .admissions
        .get_or_create(&AdmissionLabels {
            webhook: webhook.path(),
            operation: review.operation.as_str(),
            allowed: verdict.allowed,
        })
        .inc();
    json(envelope::render_answer(
        review.api_version,
        &review.uid,
        &verdict,
    ))
}

/// Runs the rules for one review.
async fn judge(
    state: &AppState,
    webhook: Webhook,
    review: &Review<'_>,
    typed_object: Option<TypedObject>,
    lookup_budget: Duration,
) -> Verdict {
    let Some(input) = review.input() else {
        // A kind we do not judge (a misconfigured webhook rule): never block it.
        tracing::warn!(
            kind = &*review.kind_name,
            webhook = webhook.path(),
            "admitting a kind this webhook does not handle"
        );
        return Verdict::allow(Vec::new());
    };
    let decoded = match typed_object {
        Some(object) => rules::decode_typed(&input, object),
        None => rules::decode(&input),
    };
    if webhook.is_mutating() {
        let old = review.old_data_images();
        return rules::mutate(&input, &decoded, &old, mutate_policy(&state.0, review));
    }
    let secret = match decoded.secret_to_check() {
        Some(name) if !review.namespace.is_empty() => {
            secrets::lookup_within(
                state.0.secrets.as_ref(),
                &review.namespace,
                name,
                lookup_budget,
            )
            .await
        }
        Some(_) => SecretLookup::Unknown {
            reason: "the request has no namespace".to_string(),
        },
        None => SecretLookup::NotNeeded,
    };
    rules::validate(&input, &decoded, &secret, &state.0.policy)
}

/// A panic while judging becomes a denial with code 500 (the uid is kept by
/// the caller) and is counted; the server keeps serving.
pub async fn guarded(judging: impl Future<Output = Verdict>, metrics: &Metrics) -> Verdict {
    match AssertUnwindSafe(judging).catch_unwind().await {
        Ok(verdict) => verdict,
        Err(panic) => {
            metrics.panics.inc();
            let what = (panic.downcast_ref::<&str>().copied())
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or_default();
            tracing::error!(panic = what, "panic while reviewing a request");
            envelope::error_verdict(
                500,
                "InternalError",
                "internal error while reviewing the request",
            )
        }
    }
}

/// One line per review. Denials, warnings and patches are logged at `info`;
/// a plain "allowed" (most traffic: the operator's own status writes) at
/// `debug`, to keep the log about what changed something; so is an "allowed"
/// whose only warnings say the Secret was not checked for lack of cluster access.
///
/// Request-controlled strings (uid, kind, namespace, name, messages quoting
/// the object) are recorded as `&str`, never with `%`: the text format then
/// writes them Debug-quoted with `\n`, ESC and NUL escaped, so a request
/// cannot forge log lines (`%` writes them raw); JSON escapes them either way.
fn log_review(webhook: Webhook, review: &Review<'_>, verdict: &Verdict, started: Instant) {
    let duration_ms = (started.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    let patched = verdict.patch.as_ref().is_some_and(|p| !p.0.is_empty());
    // A denial names its code, reason and message; an admission whether it patched.
    let denial = verdict.status.as_ref().filter(|_| !verdict.allowed);
    macro_rules! review_event {
        ($log:ident) => {
            tracing::$log!(
                webhook = webhook.path(),
                uid = &*review.uid,
                kind = &*review.kind_name,
                namespace = &*review.namespace,
                name = &*review.name,
                operation = review.operation.as_str(),
                dry_run = review.dry_run,
                allowed = verdict.allowed,
                code = denial.map(|status| status.code),
                reason = denial.map(|status| &*status.reason),
                status_message = denial.map(|status| &*status.message),
                warnings = verdict.warnings.len(),
                patched = denial.is_none().then_some(patched),
                duration_ms,
                "admission review"
            )
        };
    }
    // Without cluster access every Secret reference gets the same "could
    // not be checked" warning, announced once at start-up: not worth a line
    // per review. Any other warning (a failed lookup too) stays at info.
    if patched
        || !verdict.allowed
        || verdict
            .warnings
            .iter()
            .any(|w| !w.ends_with(secrets::NO_CLUSTER_ACCESS))
    {
        review_event!(info);
    } else {
        review_event!(debug);
    }
}

/// Whether a Content-Type names JSON (parameters such as `charset` aside).
fn is_json(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default();
    essence.trim().eq_ignore_ascii_case("application/json")
}

/// The `?timeout=10s` the API server appends to webhook URLs, capped at
/// [`MAX_REQUEST_TIMEOUT`].
pub fn request_timeout(uri: &Uri) -> Result<Option<Duration>, String> {
    let query = uri.query().unwrap_or_default();
    let value = query
        .split('&')
        .find_map(|pair| pair.strip_prefix("timeout="));
    let timeout = value.map(parse_duration).transpose();
    let timeout = timeout.map_err(|err| format!("bad timeout query parameter: {err}"))?;
    Ok(timeout.map(|timeout| timeout.min(MAX_REQUEST_TIMEOUT)))
}

/// Time allowed for the Secret lookup: within `--secret-timeout`, and early
/// enough inside the API server's deadline to still answer in time.
pub fn lookup_budget(timeout: Option<Duration>, secret_timeout: Duration) -> Duration {
    match timeout {
        Some(timeout) => {
            let margin = (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
            secret_timeout.min(timeout.saturating_sub(margin))
        }
        None => secret_timeout,
    }
}

enum BodyRead {
    Complete(Bytes),
    /// The first bytes of a body over the limit.
    TooLarge(Vec<u8>),
    Failed(String),
    TimedOut,
}

async fn read_body(mut body: Body, headers: &HeaderMap, within: Duration) -> BodyRead {
    let deadline = tokio::time::Instant::now() + within;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<usize>().ok());
    // A body that arrives in one chunk is used as is (no copy).
    let mut single: Option<Bytes> = None;
    let mut buffer: Vec<u8> = Vec::new();
    let mut too_large = declared.is_some_and(|length| length > MAX_BODY_BYTES);
    let mut discarded = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => frame,
            Ok(None) => break,
            Ok(Some(Err(err))) => {
                return BodyRead::Failed(format!("reading the request body: {err}"));
            }
            // An oversized body that stops arriving still gets its 413.
            Err(_) if too_large => break,
            Err(_) => return BodyRead::TimedOut,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if let Some(first) = single.take() {
            buffer.reserve(
                declared
                    .unwrap_or(0)
                    .clamp(first.len() + data.len(), MAX_BODY_BYTES),
            );
            buffer.extend_from_slice(&first);
        }
        if !too_large && buffer.len() + data.len() > MAX_BODY_BYTES {
            too_large = true;
            buffer.truncate(OVERSIZED_PREFIX_BYTES);
            buffer.shrink_to_fit();
        }
        if too_large {
            // Keep only what is needed to find the uid; drain the rest so the
            // client reads our answer instead of a reset connection.
            let room = OVERSIZED_PREFIX_BYTES
                .saturating_sub(buffer.len())
                .min(data.len());
            buffer.extend_from_slice(&data[..room]);
            discarded += data.len() - room;
            if discarded > MAX_DISCARDED_BYTES {
                break;
            }
        } else if buffer.is_empty() {
            single = Some(data);
        } else {
            buffer.extend_from_slice(&data);
        }
    }
    if too_large {
        BodyRead::TooLarge(buffer)
    } else {
        BodyRead::Complete(single.unwrap_or_else(|| Bytes::from(buffer)))
    }
}

fn too_large(webhook: Webhook, prefix: &[u8]) -> Response {
    let message = format!(
        "request body is larger than the {} MiB limit",
        MAX_BODY_BYTES / (1024 * 1024)
    );
    match envelope::in_band_target(prefix) {
        Some((api_version, uid)) => {
            tracing::info!(
                webhook = webhook.path(),
                uid = &*uid,
                "rejected oversized AdmissionReview"
            );
            let verdict = envelope::error_verdict(413, "RequestEntityTooLarge", message);
            json(envelope::render_answer(api_version, &uid, &verdict))
        }
        None => plain(StatusCode::PAYLOAD_TOO_LARGE, message),
    }
}

fn json(body: Vec<u8>) -> Response {
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn plain(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::secrets::NoClusterAccess;
    use axum::http::Request;
    use tower::ServiceExt as _;

    fn state() -> AppState {
        AppState::new(
            Policy::default(),
            Arc::new(NoClusterAccess),
            Duration::from_secs(1),
            Metrics::default(),
        )
    }

    async fn call(path: &str, content_type: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
        let request = Request::post(path)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body))
            .unwrap();
        let response = router(state()).oneshot(request).await.unwrap();
        let status = response.status();
        (
            status,
            response
                .into_body()
                .collect()
                .await
                .unwrap()
                .to_bytes()
                .to_vec(),
        )
    }

    const REVIEW: &str = r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"u-7",
        "kind":{"group":"metal3.io","version":"v1alpha1","kind":"BareMetalHost"},"namespace":"ns","name":"h",
        "operation":"DELETE","userInfo":{"username":"admin"},"object":null,"oldObject":{},"dryRun":false}}"#;

    #[tokio::test]
    async fn answers_in_band_with_the_uid() {
        let (status, body) = call(
            &format!("{VALIDATE_BMH_PATH}?timeout=10s"),
            "application/json; charset=utf-8",
            REVIEW.into(),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["response"]["uid"], "u-7");
        assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    }

    /// The warnings `log_review` keeps at debug end with the reason
    /// `NoClusterAccess` gives.
    #[tokio::test]
    async fn no_cluster_access_warning_is_recognised() {
        let state = AppState::new(
            Policy::default(),
            Arc::new(NoClusterAccess),
            Duration::from_secs(1),
            Metrics::default(),
        );
        let body = include_str!("../../tests/fixtures/bench/update-allow.json");
        let request = Request::post(VALIDATE_BMH_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .unwrap();
        let response = router(state).oneshot(request).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let warnings = answer["response"]["warnings"].as_array().unwrap();
        assert!(!warnings.is_empty(), "{answer}");
        for warning in warnings {
            assert!(
                warning
                    .as_str()
                    .unwrap()
                    .ends_with(secrets::NO_CLUSTER_ACCESS),
                "{warning}"
            );
        }
    }

    #[tokio::test]
    async fn a_body_in_several_chunks_is_reassembled() {
        let chunks: Vec<Result<Bytes, std::io::Error>> = REVIEW
            .as_bytes()
            .chunks(40)
            .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
            .collect();
        let request = Request::post(VALIDATE_BMH_PATH)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(futures::stream::iter(chunks)))
            .unwrap();
        let response = router(state()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["response"]["uid"], "u-7");
    }

    #[tokio::test]
    async fn wrong_content_type_is_415() {
        assert_eq!(
            call(VALIDATE_BMH_PATH, "text/plain", REVIEW.into()).await.0,
            StatusCode::UNSUPPORTED_MEDIA_TYPE
        );
    }

    #[tokio::test]
    async fn oversized_body_is_413_in_band() {
        let padding = "x".repeat(MAX_BODY_BYTES);
        let body = REVIEW.replace(
            r#""dryRun":false"#,
            &format!(r#""dryRun":false,"pad":"{padding}""#),
        );
        let (status, body) = call(MUTATE_BMH_PATH, "application/json", body.into()).await;
        assert_eq!(status, StatusCode::OK);
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(answer["response"]["uid"], "u-7");
        assert_eq!(answer["response"]["status"]["code"], 413);
        let (status, _) = call(
            MUTATE_BMH_PATH,
            "application/json",
            vec![b' '; MAX_BODY_BYTES + 1],
        )
        .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn panics_become_500_denials_and_are_counted() {
        let metrics = Metrics::default();
        let verdict = guarded(async { panic!("boom") }, &metrics).await;
        assert!(!verdict.allowed);
        assert_eq!(verdict.status.unwrap().code, 500);
        assert_eq!(metrics.panics.get(), 1);
    }

    #[test]
    fn timeout_query_is_capped_at_30s() {
        assert_eq!(MAX_REQUEST_TIMEOUT, Duration::from_secs(30));
        let cases = [
            ("/v?timeout=10s", Ok(Some(Duration::from_secs(10)))),
            (
                "/v?dryRun=true&timeout=250ms",
                Ok(Some(Duration::from_millis(250))),
            ),
            ("/v?timeout=30s", Ok(Some(MAX_REQUEST_TIMEOUT))),
            ("/v?timeout=31s", Ok(Some(MAX_REQUEST_TIMEOUT))),
            ("/v?timeout=1h", Ok(Some(MAX_REQUEST_TIMEOUT))),
            ("/v?timeout=2562047h", Ok(Some(MAX_REQUEST_TIMEOUT))),
            ("/v", Ok(None)),
            ("/v?dryRun=true", Ok(None)),
        ];
        for (uri, expected) in cases {
            assert_eq!(request_timeout(&uri.parse().unwrap()), expected, "{uri}");
        }
        for bad in ["/v?timeout=ten", "/v?timeout=", "/v?timeout=-1s"] {
            assert!(request_timeout(&bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    /// `?timeout=1h` and a body trickling one byte a second: answered 408
    /// once the 30 s cap is reached (paused clock: no real waiting).
    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_is_cut_off_at_the_timeout_cap() {
        let trickle = futures::stream::unfold(0u8, |n| async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Some((Ok::<_, std::io::Error>(Bytes::from_static(b" ")), n))
        });
        let request = Request::post(format!("{VALIDATE_BMH_PATH}?timeout=1h"))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(trickle))
            .unwrap();
        let started = tokio::time::Instant::now();
        let response = router(state()).oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        let waited = started.elapsed();
        assert!(
            waited >= MAX_REQUEST_TIMEOUT && waited < MAX_REQUEST_TIMEOUT + Duration::from_secs(2),
            "answered after {waited:?}"
        );
    }

    #[test]
    fn timeout_query_and_lookup_budget() {
        let uri: Uri = "/validate?timeout=10s".parse().unwrap();
        assert_eq!(request_timeout(&uri), Ok(Some(Duration::from_secs(10))));
        assert_eq!(request_timeout(&"/validate".parse().unwrap()), Ok(None));
        assert!(request_timeout(&"/v?timeout=ten".parse().unwrap()).is_err());
        let two = Duration::from_secs(2);
        assert_eq!(lookup_budget(Some(Duration::from_secs(10)), two), two);
        assert_eq!(
            lookup_budget(Some(Duration::from_secs(1)), two),
            Duration::from_millis(900)
        );
        assert_eq!(lookup_budget(None, two), two);
    }
}
