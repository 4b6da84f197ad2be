//! The webhook's HTTPS listener: the accept loop and handshake of
//! `crate::listener`, and connection handling of our own, because hyper's
//! `header_read_timeout` (what `listener::serve_router` uses) also runs while
//! a keep-alive connection waits for its next request, so it cannot coexist
//! with an idle timeout above the API server's 90 s; a drain bounded by a
//! timeout and `Connection: close` while draining come with it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderValue, Request, header};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use prometheus_client::registry::Registry;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::io::InspectReader;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use super::Settings;
use super::handler::{self, AppState};
use super::metrics::Metrics;
use super::reload::{TlsState, spawn_reloader};
use super::tls;
use crate::probes::ReadinessCheck;
use crate::rules::Policy;

struct HandleInner {
    /// Graceful shutdown requested (readiness turns false at once).
    shutdown_requested: CancellationToken,
    /// Skip the remaining shutdown delay.
    hurry: CancellationToken,
    serving: AtomicBool,
    tls: Arc<TlsState>,
}

/// Controls a running [`Server`] (cheap to clone).
#[derive(Clone)]
pub struct ServerHandle(Arc<HandleInner>);

impl ServerHandle {
    /// Starts a graceful shutdown: not ready now, keep serving for the
    /// shutdown delay, then stop accepting and drain.
    pub fn shutdown(&self) {
        self.0.shutdown_requested.cancel();
    }

    /// Like [`ServerHandle::shutdown`] without waiting for the delay.
    pub fn shutdown_now(&self) {
        self.shutdown();
        self.0.hurry.cancel();
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.0.shutdown_requested.is_cancelled()
    }

    /// Ready when the listener serves, the certificate is valid, and we are
    /// not shutting down.
    pub fn readiness(&self) -> Result<(), String> {
        if self.is_draining() {
            return Err("shutting down".to_string());
        }
        if !self.0.serving.load(Ordering::SeqCst) {
            return Err("TLS listener not serving yet".to_string());
        }
        let now = jiff::Timestamp::now().as_second();
        if self.0.tls.cert_not_after() <= now {
            return Err("serving certificate has expired".to_string());
        }
        Ok(())
    }

    pub fn readiness_check(&self) -> ReadinessCheck {
        let handle = self.clone();
        Arc::new(move || handle.readiness())
    }

    /// Completes once a shutdown was requested and the shutdown delay (not
    /// ready, still serving, while endpoints propagate) is over or cut short.
    async fn stop_accepting(self, delay: Duration) {
        self.0.shutdown_requested.cancelled().await;
        let delay_ms = delay.as_millis() as u64;
        tracing::info!(delay_ms, "shutdown requested: not ready, still serving");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = self.0.hurry.cancelled() => {}
        }
    }
}

/// The webhook server, bound and ready to [`Server::run`].
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    handle: ServerHandle,
    registry: Arc<Registry>,
    settings: Settings,
}

impl Server {
    /// Loads the certificates and binds the listener (port 0 picks a free port).
    pub async fn bind(settings: Settings) -> anyhow::Result<Self> {
        tls::install_default_provider();
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let tls = Arc::new(TlsState::load(settings.clone(), metrics.clone())?);
        let args = &settings.args;
        let listener = TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("binding {}", args.listen))?;
        let local_addr = listener.local_addr()?;
        let policy = Policy {
            strict_secrets: args.strict_secrets,
            operator_users: args.operator_users.clone(),
        };
        let state = AppState::new(
            policy,
            settings.secrets.clone(),
            args.secret_timeout,
            metrics,
        );
        let handle = ServerHandle(Arc::new(HandleInner {
            shutdown_requested: CancellationToken::new(),
            hurry: CancellationToken::new(),
            serving: AtomicBool::new(false),
            tls,
        }));
        Ok(Self {
            listener,
            local_addr,
            router: handler::router(state),
            handle,
            registry: Arc::new(registry),
            settings,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// The metrics registry (serve it with [`crate::probes`]).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Serves until a requested shutdown has drained.
    pub async fn run(self) -> anyhow::Result<()> {
        let (args, handle) = (&self.settings.args, &self.handle);
        let tls = &handle.0.tls;
        let reloader_stop = CancellationToken::new();
        spawn_reloader(tls.clone(), args.cert_poll_interval, reloader_stop.clone());
        // Before readiness turns true.
        match tls::warm_up(tls.config(), tls.provider()).await {
            Ok(()) => tracing::debug!("TLS warm-up handshake done"),
            Err(err) => {
                tracing::debug!(error = %err, "TLS warm-up handshake ended early (harmless)");
            }
        }
        handle.0.serving.store(true, Ordering::SeqCst);

        let connections = TaskTracker::new();
        let options = Arc::new(ConnectionOptions {
            handshake: args.handshake_timeout,
            header_read: args.header_read_timeout,
            idle: args.idle_timeout,
            router: self.router,
            handle: handle.clone(),
            close_gracefully: CancellationToken::new(),
            close_now: CancellationToken::new(),
        });
        let stop_accepting = handle.clone().stop_accepting(args.shutdown_delay);
        crate::listener::accept_until(&self.listener, stop_accepting, |stream, peer| {
            let acceptor = TlsAcceptor::from(tls.config());
            connections.spawn(serve_connection(stream, peer, acceptor, options.clone()));
        })
        .await;
        drop(self.listener);
        handle.0.serving.store(false, Ordering::SeqCst);
        drain(&connections, &options, args.drain_timeout).await;
        reloader_stop.cancel();
        tracing::info!("webhook server stopped");
        Ok(())
    }
}

/// After the listener closed: idle connections close now, in-flight requests
/// get `limit` to finish (a second signal cuts it short), then the rest is
/// closed.
async fn drain(connections: &TaskTracker, options: &ConnectionOptions, limit: Duration) {
    let open = connections.len();
    tracing::info!(
        connections = open,
        "listener closed; draining in-flight requests"
    );
    options.close_gracefully.cancel();
    connections.close();
    let hurried = async {
        options.handle.0.hurry.cancelled().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::select! {
        () = connections.wait() => {}
        () = tokio::time::sleep(limit) => {
            let open = connections.len();
            tracing::warn!(connections = open, "drain timeout: closing the remaining connections");
        }
        () = hurried => {}
    }
    options.close_now.cancel();
    connections.wait().await;
}

struct ConnectionOptions {
    handshake: Duration,
    header_read: Duration,
    idle: Duration,
    router: Router,
    handle: ServerHandle,
    close_gracefully: CancellationToken,
    close_now: CancellationToken,
}

/// Per-connection activity, shared by the I/O wrapper, the service and the
/// connection task (monotonic milliseconds since the connection started).
struct Activity {
    start: Instant,
    in_flight: AtomicUsize,
    /// When the last request finished (or the connection started).
    last_done_ms: AtomicU64,
    /// 1 + when bytes of a not-yet-dispatched request first arrived; 0: none.
    pending_since_ms: AtomicU64,
    track_reads: bool,
}

impl Activity {
    fn new(track_reads: bool) -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
            pending_since_ms: AtomicU64::new(0),
            track_reads,
        }
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn bytes_read(&self) {
        if self.track_reads && self.pending_since_ms.load(Ordering::Relaxed) == 0 {
            let _ = self.pending_since_ms.compare_exchange(
                0,
                self.now_ms() + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn request_started(&self) {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.pending_since_ms.store(0, Ordering::Relaxed);
    }

    fn request_finished(&self) {
        self.last_done_ms.store(self.now_ms(), Ordering::Relaxed);
        // Bytes read while the request ran were its body.
        self.pending_since_ms.store(0, Ordering::Relaxed);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
    }

    /// What to do with the connection now, and when to look again.
    fn check(&self, header_read: Duration, idle_limit: Duration) -> (ConnectionState, Duration) {
        let recheck = header_read.min(idle_limit);
        if self.in_flight.load(Ordering::SeqCst) > 0 {
            return (ConnectionState::Busy, recheck);
        }
        let now = self.now_ms();
        let pending = self.pending_since_ms.load(Ordering::Relaxed);
        if pending != 0 {
            let waited = Duration::from_millis(now.saturating_sub(pending - 1));
            if waited >= header_read {
                return (ConnectionState::Stalled, recheck);
            }
            return (ConnectionState::Busy, header_read - waited);
        }
        let idle =
            Duration::from_millis(now.saturating_sub(self.last_done_ms.load(Ordering::Relaxed)));
        if idle >= idle_limit {
            return (ConnectionState::Idle, recheck);
        }
        (ConnectionState::Busy, (idle_limit - idle).min(recheck))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnectionState {
    Busy,
    Idle,
    Stalled,
}

/// Marks a request finished however its future ends.
struct RequestGuard(Arc<Activity>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.0.request_finished();
    }
}

/// HTTP/2 (when ALPN chose it) with stream limits against rapid-reset
/// floods, else HTTP/1.1 with keep-alive.
fn connection_builder(http2: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    if http2 {
        builder = builder.http2_only();
        builder
            .http2()
            .max_concurrent_streams(256)
            .max_pending_accept_reset_streams(20)
            .max_local_error_reset_streams(Some(256));
    } else {
        builder = builder.http1_only();
        builder.http1().keep_alive(true).max_buf_size(1024 * 1024);
    }
    builder
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    options: Arc<ConnectionOptions>,
) {
    let handshake = crate::listener::tls_handshake(acceptor, stream, options.handshake, peer);
    let tls_stream = tokio::select! {
        tls_stream = handshake => match tls_stream {
            Some(tls_stream) => tls_stream,
            None => return,
        },
        () = options.close_gracefully.cancelled() => return,
    };
    let http2 = tls_stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let activity = Arc::new(Activity::new(!http2));
    // Records when request bytes arrive (for the header-read timeout).
    let reads = activity.clone();
    let io = TokioIo::new(InspectReader::new(tls_stream, move |bytes: &[u8]| {
        if !bytes.is_empty() {
            reads.bytes_read();
        }
    }));
    let service = {
        let (router, activity) = (options.router.clone(), activity.clone());
        let handle = options.handle.clone();
        // service_fn: the request future is not boxed (this is the hot path).
        hyper::service::service_fn(move |request: Request<Incoming>| {
            activity.request_started();
            let guard = RequestGuard(activity.clone());
            let (router, handle) = (router.clone(), handle.clone());
            async move {
                let _guard = guard;
                let Ok(mut response) = router.oneshot(request.map(Body::new)).await;
                if !http2 && handle.is_draining() {
                    // While draining, move HTTP/1.1 clients to another replica.
                    let close = HeaderValue::from_static("close");
                    response.headers_mut().insert(header::CONNECTION, close);
                }
                Ok::<_, Infallible>(response)
            }
        })
    };
    let builder = connection_builder(http2);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut closing_since: Option<Instant> = None;
    loop {
        let (state, next_check) = activity.check(options.header_read, options.idle);
        match state {
            ConnectionState::Stalled => {
                tracing::debug!(%peer, "request headers not received in time: closing");
                return;
            }
            ConnectionState::Idle if closing_since.is_none() => {
                tracing::debug!(%peer, "idle keep-alive connection: closing");
                connection.as_mut().graceful_shutdown();
                closing_since = Some(Instant::now());
            }
            _ => {}
        }
        if state != ConnectionState::Busy
            && closing_since.is_some_and(|since| since.elapsed() > options.header_read)
        {
            // A peer that never finishes closing cannot keep the socket (an
            // in-flight request is bounded by the drain timeout instead).
            return;
        }
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "connection ended with an error");
                }
                return;
            }
            _ = options.close_gracefully.cancelled(), if closing_since.is_none() => {
                connection.as_mut().graceful_shutdown();
                closing_since = Some(Instant::now());
            }
            _ = options.close_now.cancelled() => return,
            _ = tokio::time::sleep(next_check) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(activity: &Activity) -> ConnectionState {
        // header-read timeout 40 ms, idle timeout 200 ms
        activity
            .check(Duration::from_millis(40), Duration::from_millis(200))
            .0
    }

    #[tokio::test(start_paused = true)]
    async fn activity_tells_idle_from_stalled() {
        let activity = Activity::new(true);
        assert_eq!(state(&activity), ConnectionState::Busy);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(state(&activity), ConnectionState::Idle);

        // Part of a request arrived, then nothing: stalled after header_read.
        activity.bytes_read();
        assert_eq!(state(&activity), ConnectionState::Busy);
        tokio::time::advance(Duration::from_millis(50)).await;
        assert_eq!(state(&activity), ConnectionState::Stalled);

        // A dispatched request is busy however long it runs.
        activity.request_started();
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(state(&activity), ConnectionState::Busy);
        activity.request_finished();
        assert_eq!(state(&activity), ConnectionState::Busy);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(state(&activity), ConnectionState::Idle);
    }
}
