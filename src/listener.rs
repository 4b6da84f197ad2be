//! One way to run an HTTP listener: the accept loop and TLS handshake every
//! listener shares, and [`serve_router`] for the probes and the image server.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;

/// Accepts connections until `stop` completes and hands each one, with
/// TCP_NODELAY set, to `serve`. Accept errors back off (without it, a
/// process out of file descriptors spins) and are logged at most once per
/// [`ACCEPT_LOG_INTERVAL`]; the stop is not delayed by a back-off.
pub(crate) async fn accept_until(
    listener: &TcpListener,
    stop: impl Future<Output = ()>,
    mut serve: impl FnMut(TcpStream, SocketAddr),
) {
    tokio::pin!(stop);
    let mut errors = AcceptErrors::default();
    loop {
        let backoff = tokio::select! {
            biased;
            () = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Some(unreported) = errors.succeeded(Instant::now()) {
                        tracing::info!(suppressed = unreported, "accepting connections again");
                    }
                    // Without this, about half of new connections wait ~40 ms on a delayed ACK.
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, error = %err, "cannot set TCP_NODELAY");
                    }
                    serve(stream, peer);
                    continue;
                }
                Err(err) => {
                    let (backoff, report) = errors.failed(&err, Instant::now());
                    match report {
                        AcceptReport::Quiet => {
                            tracing::debug!(error = %err, "accept failed (connection error)");
                        }
                        AcceptReport::Log { suppressed } => tracing::warn!(
                            error = %err,
                            suppressed,
                            backoff_ms = backoff.as_millis() as u64,
                            "accept failed"
                        ),
                        AcceptReport::Suppressed => {}
                    }
                    backoff
                }
            },
        };
        tokio::select! {
            biased;
            () = &mut stop => return,
            () = tokio::time::sleep(backoff) => {}
        }
    }
}

/// The TLS handshake, bounded by `timeout`; failures are the peer's business
/// (logged at debug).
pub(crate) async fn tls_handshake(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    timeout: Duration,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => Some(tls_stream),
        Ok(Err(err)) => {
            tracing::debug!(%peer, error = %err, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// Serves `router` on `listener` (TLS when `tls` is given) until `shutdown`
/// completes, then lets open requests and downloads finish: the probes and
/// the image server. (The webhook handles its connections itself, see
/// `admission::server`.)
pub(crate) async fn serve_router(
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
    accept_until(&listener, shutdown, |stream, peer| {
        let (builder, service) = (builder.clone(), service.clone());
        let (watcher, acceptor) = (graceful.watcher(), acceptor.clone());
        tokio::spawn(async move {
            let stream = match acceptor {
                None => Either::Left(stream),
                Some(acceptor) => {
                    let handshake = tls_handshake(acceptor, stream, HEADER_READ_TIMEOUT, peer);
                    let Some(tls_stream) = handshake.await else {
                        return;
                    };
                    Either::Right(tls_stream)
                }
            };
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            let result = watcher.watch(conn.into_owned()).await;
            if let Err(err) = result {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    })
    .await;
    graceful.shutdown().await;
    Ok(())
}

/// Slow clients may not hold a connection open without sending headers
/// (hyper's timer also runs while a keep-alive connection is idle).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Back-off after an accept error, by cause. Out of file descriptors or
/// memory, the same error comes back at once until something is closed:
/// wait as hyper 0.14 and axum::serve do.
const ACCEPT_BACKOFF_EXHAUSTED: Duration = Duration::from_secs(1);
const ACCEPT_BACKOFF_OTHER: Duration = Duration::from_millis(100);
/// At most one "accept failed" line per this interval; the next one (or the
/// "accepting connections again" line) counts the errors left out.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Linux errno values of resource exhaustion (no libc dependency for four numbers).
const ENOMEM: i32 = 12;
const ENFILE: i32 = 23;
const EMFILE: i32 = 24;
const ENOBUFS: i32 = 105;

/// What to log for one accept error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AcceptReport {
    /// A connection reset/aborted before we took it: the peer's business.
    Quiet,
    /// Log it, with the number of errors left out since the last line.
    Log { suppressed: u64 },
    /// Within [`ACCEPT_LOG_INTERVAL`] of the last line: only counted.
    Suppressed,
}

/// Rate limit and back-off of the accept loop's errors (without them, a
/// process out of file descriptors writes "accept failed" ~20 times a second).
#[derive(Debug, Default)]
struct AcceptErrors {
    last_logged: Option<Instant>,
    /// Errors not logged since the last line.
    suppressed: u64,
}

impl AcceptErrors {
    fn failed(&mut self, err: &std::io::Error, now: Instant) -> (Duration, AcceptReport) {
        use std::io::ErrorKind;
        if matches!(
            err.kind(),
            ErrorKind::ConnectionAborted
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionRefused
        ) {
            // axum::serve's `is_connection_error`: retry at once.
            return (Duration::ZERO, AcceptReport::Quiet);
        }
        let backoff = match err.raw_os_error() {
            Some(EMFILE | ENFILE | ENOBUFS | ENOMEM) => ACCEPT_BACKOFF_EXHAUSTED,
            _ => ACCEPT_BACKOFF_OTHER,
        };
        if !self.due(now) {
            self.suppressed += 1;
            return (backoff, AcceptReport::Suppressed);
        }
        self.last_logged = Some(now);
        let suppressed = std::mem::take(&mut self.suppressed);
        (backoff, AcceptReport::Log { suppressed })
    }

    /// A connection was accepted: the number of errors not logged yet, once
    /// a line is due (shares the interval with the error lines, so a listener
    /// flapping between failing and accepting cannot flood the log either).
    fn succeeded(&mut self, now: Instant) -> Option<u64> {
        if self.suppressed == 0 || !self.due(now) {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    fn due(&self, now: Instant) -> bool {
        self.last_logged
            .is_none_or(|last| now.duration_since(last) >= ACCEPT_LOG_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_back_off_and_log_at_most_once_per_interval() {
        use std::io::{Error, ErrorKind};
        let emfile = || Error::from_raw_os_error(EMFILE);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut errors = AcceptErrors::default();
        // (when, error, expected back-off, expected report)
        let steps: Vec<(u64, Error, Duration, AcceptReport)> = vec![
            (
                0,
                emfile(),
                ACCEPT_BACKOFF_EXHAUSTED,
                AcceptReport::Log { suppressed: 0 },
            ),
            (
                1_000,
                emfile(),
                ACCEPT_BACKOFF_EXHAUSTED,
                AcceptReport::Suppressed,
            ),
            (
                2_000,
                Error::from_raw_os_error(ENFILE),
                ACCEPT_BACKOFF_EXHAUSTED,
                AcceptReport::Suppressed,
            ),
            (
                3_000,
                Error::from_raw_os_error(ENOBUFS),
                ACCEPT_BACKOFF_EXHAUSTED,
                AcceptReport::Suppressed,
            ),
            (
                4_000,
                Error::from_raw_os_error(ENOMEM),
                ACCEPT_BACKOFF_EXHAUSTED,
                AcceptReport::Suppressed,
            ),
            (
                4_500,
                Error::from(ErrorKind::ConnectionAborted),
                Duration::ZERO,
                AcceptReport::Quiet,
            ),
            (
                4_600,
                Error::from(ErrorKind::ConnectionReset),
                Duration::ZERO,
                AcceptReport::Quiet,
            ),
            (
                5_000,
                Error::from(ErrorKind::PermissionDenied),
                ACCEPT_BACKOFF_OTHER,
                AcceptReport::Suppressed,
            ),
            (
                9_999,
                emfile(),
                ACCEPT_BACKOFF_EXHAUSTED,
                AcceptReport::Suppressed,
            ),
            (
                10_000,
                emfile(),
                ACCEPT_BACKOFF_EXHAUSTED,
                AcceptReport::Log { suppressed: 6 },
            ),
            (
                11_000,
                emfile(),
                ACCEPT_BACKOFF_EXHAUSTED,
                AcceptReport::Suppressed,
            ),
        ];
        for (ms, err, backoff, report) in steps {
            assert_eq!(
                errors.failed(&err, at(ms)),
                (backoff, report),
                "at {ms} ms: {err}"
            );
        }
        // Flapping between accepting and failing: still one line per interval.
        assert_eq!(errors.succeeded(at(12_000)), None);
        assert_eq!(
            errors.failed(&emfile(), at(13_000)),
            (ACCEPT_BACKOFF_EXHAUSTED, AcceptReport::Suppressed)
        );
        assert_eq!(errors.succeeded(at(14_000)), None);
        // Once due, an accepted connection reports the errors never logged.
        assert_eq!(errors.succeeded(at(20_000)), Some(2));
        assert_eq!(errors.succeeded(at(40_000)), None);
        assert_eq!(
            errors.failed(&emfile(), at(40_001)),
            (
                ACCEPT_BACKOFF_EXHAUSTED,
                AcceptReport::Log { suppressed: 0 }
            )
        );
    }

    /// Out of file descriptors for a minute at the rate a 1 s back-off allows:
    /// six lines, not the ~1200 of a 50 ms retry that logs every error.
    #[test]
    fn a_minute_without_file_descriptors_logs_six_lines() {
        let start = Instant::now();
        let mut errors = AcceptErrors::default();
        let mut now = start;
        let mut lines = 0;
        while now < start + Duration::from_secs(60) {
            let (backoff, report) = errors.failed(&std::io::Error::from_raw_os_error(EMFILE), now);
            if matches!(report, AcceptReport::Log { .. }) {
                lines += 1;
            }
            now += backoff;
        }
        assert_eq!(lines, 6);
    }
}
