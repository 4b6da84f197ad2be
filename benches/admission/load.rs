//! The load client: HTTPS keep-alive connections (hyper + tokio-rustls) on a
//! single-threaded runtime, an HDR histogram per phase.
//!
//! Fixed-rate mode is open loop (as wrk2): each connection owns a schedule of
//! intended send times. When a request's turn comes while the previous answer
//! is still outstanding, its latency is measured from the intended time, so a
//! stalled server shows up in the tail instead of slowing the client down
//! (no coordinated omission). When the connection was idle, latency starts at
//! the actual send: tokio's timer wakes up to 1 ms late, and that lateness is
//! the client's, not the server's.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Bytes,
    client::conn::http1::{self, SendRequest},
};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, pki_types::ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::cases::{Case, Expect};

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct Target {
    pub addr: SocketAddr,
    pub tls: Arc<ClientConfig>,
    /// Check the verdict (allowed/denied/patch) as well as the uid.
    pub check_verdict: bool,
}

/// What one phase measured.
pub(crate) struct PhaseOutcome {
    /// Latency of the measured (post warm-up) requests, nanoseconds.
    pub histogram: Histogram<u64>,
    /// Measured requests per second (post warm-up).
    pub rate: f64,
    /// Requests completed including warm-up (for CPU per request).
    pub completed_total: u64,
    pub errors: u64,
    /// The first few error messages, for the report.
    pub error_samples: Vec<String>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Mode {
    /// Open loop at this many requests per second in total.
    FixedRate(f64),
    /// Closed loop: every connection sends its next request as soon as the
    /// previous answer is read.
    MaxThroughput,
    /// A new TCP + TLS connection for every request (full handshake).
    NewConnections,
}

pub(crate) struct Phase {
    pub mode: Mode,
    pub connections: usize,
    pub warmup: Duration,
    pub measure: Duration,
}

struct Worker {
    histogram: Histogram<u64>,
    completed_total: u64,
    measured: u64,
    errors: u64,
    error_samples: Vec<String>,
}

impl Worker {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            histogram: new_histogram()?,
            completed_total: 0,
            measured: 0,
            errors: 0,
            error_samples: Vec::new(),
        })
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < 3 {
            self.error_samples.push(message);
        }
    }

    /// Records a completed request: latency from `origin`, measured when it
    /// was due (`due`) after the warm-up.
    fn done(&mut self, origin: Instant, due: Instant, measure_from: Instant, now: Instant) {
        self.completed_total += 1;
        if due >= measure_from {
            self.measured += 1;
            let nanos =
                u64::try_from(now.saturating_duration_since(origin).as_nanos()).unwrap_or(u64::MAX);
            self.histogram.saturating_record(nanos.max(1));
        }
    }
}

pub(crate) fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, 120_000_000_000, 3).context("histogram bounds")
}

/// Runs one phase against `target` with `cases` sent round robin.
pub(crate) async fn run(
    target: &Target,
    cases: Arc<Vec<Case>>,
    phase: &Phase,
) -> anyhow::Result<PhaseOutcome> {
    let start = Instant::now() + Duration::from_millis(20);
    let measure_from = start + phase.warmup;
    let end = measure_from + phase.measure;
    let mut tasks = Vec::with_capacity(phase.connections);
    for index in 0..phase.connections {
        let target = target.clone();
        let cases = Arc::clone(&cases);
        let mode = phase.mode;
        let connections = phase.connections;
        tasks.push(tokio::spawn(async move {
            let mut worker = Worker::new()?;
            match mode {
                Mode::FixedRate(rate) => {
                    fixed_rate(
                        &target,
                        &cases,
                        index,
                        connections,
                        rate,
                        (start, measure_from, end),
                        &mut worker,
                    )
                    .await;
                }
                Mode::MaxThroughput => {
                    max_throughput(
                        &target,
                        &cases,
                        index,
                        (start, measure_from, end),
                        &mut worker,
                    )
                    .await;
                }
                Mode::NewConnections => {
                    new_connections(
                        &target,
                        &cases,
                        index,
                        (start, measure_from, end),
                        &mut worker,
                    )
                    .await;
                }
            }
            anyhow::Ok(worker)
        }));
    }
    let mut histogram = new_histogram()?;
    let (mut measured, mut completed_total, mut errors) = (0, 0, 0);
    let mut error_samples = Vec::new();
    for task in tasks {
        let worker = task.await.context("load worker panicked")??;
        histogram
            .add(&worker.histogram)
            .context("merge histograms")?;
        measured += worker.measured;
        completed_total += worker.completed_total;
        errors += worker.errors;
        error_samples.extend(worker.error_samples);
    }
    error_samples.truncate(5);
    Ok(PhaseOutcome {
        histogram,
        rate: measured as f64 / phase.measure.as_secs_f64(),
        completed_total,
        errors,
        error_samples,
    })
}

type Window = (Instant, Instant, Instant);

/// Per request, connection set-up included (kube-apiserver's default `timeoutSeconds`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

async fn fixed_rate(
    target: &Target,
    cases: &[Case],
    index: usize,
    connections: usize,
    rate: f64,
    (start, measure_from, end): Window,
    worker: &mut Worker,
) {
    // Connection i sends at start + i/rate + k*connections/rate.
    let interval = Duration::from_secs_f64(connections as f64 / rate);
    let offset = Duration::from_secs_f64(index as f64 / rate);
    let mut sender = None;
    let mut k: u32 = 0;
    loop {
        let scheduled = start + offset + interval * k;
        if scheduled >= end {
            break;
        }
        k += 1;
        let idle_since = Instant::now();
        tokio::time::sleep_until(scheduled.into()).await;
        // Behind schedule (the server was slow): count from the intended time.
        let origin = if idle_since > scheduled {
            scheduled
        } else {
            Instant::now()
        };
        let case = &cases[(index + k as usize * connections) % cases.len()];
        match exchange(target, &mut sender, case).await {
            Ok(()) => worker.done(origin, scheduled, measure_from, Instant::now()),
            Err(err) => worker.error(format!("{}: {err:#}", case.name)),
        }
    }
}

async fn max_throughput(
    target: &Target,
    cases: &[Case],
    index: usize,
    (start, measure_from, end): Window,
    worker: &mut Worker,
) {
    tokio::time::sleep_until(start.into()).await;
    let mut sender = None;
    let mut next = index;
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let case = &cases[next % cases.len()];
        next += 1;
        match exchange(target, &mut sender, case).await {
            Ok(()) => worker.done(sent, sent, measure_from, Instant::now()),
            Err(err) => worker.error(format!("{}: {err:#}", case.name)),
        }
    }
}

async fn new_connections(
    target: &Target,
    cases: &[Case],
    index: usize,
    (start, measure_from, end): Window,
    worker: &mut Worker,
) {
    tokio::time::sleep_until(start.into()).await;
    let mut next = index;
    loop {
        let sent = Instant::now();
        if sent >= end {
            break;
        }
        let case = &cases[next % cases.len()];
        next += 1;
        // A fresh connection each time; dropping the sender closes it.
        let mut sender = None;
        match exchange(target, &mut sender, case).await {
            Ok(()) => worker.done(sent, sent, measure_from, Instant::now()),
            Err(err) => worker.error(format!("{}: {err:#}", case.name)),
        }
    }
}

/// Sends one review on the connection in `sender` (connecting first when
/// there is none) and checks the answer. A failed exchange drops the
/// connection so the next one reconnects.
async fn exchange(
    target: &Target,
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    case: &Case,
) -> anyhow::Result<()> {
    // The API server's default webhook timeout: a server that never answers
    // is an error, not a hung benchmark.
    let result =
        match tokio::time::timeout(REQUEST_TIMEOUT, exchange_inner(target, sender, case)).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "no answer within {} s",
                REQUEST_TIMEOUT.as_secs()
            )),
        };
    if result.is_err() {
        *sender = None;
    }
    result
}

async fn exchange_inner(
    target: &Target,
    sender: &mut Option<SendRequest<Full<Bytes>>>,
    case: &Case,
) -> anyhow::Result<()> {
    if sender
        .as_ref()
        .is_none_or(hyper::client::conn::http1::SendRequest::is_closed)
    {
        *sender = Some(connect(target).await?);
    }
    let Some(connection) = sender.as_mut() else {
        anyhow::bail!("no connection");
    };
    connection.ready().await.context("connection not ready")?;
    // The headers kube-apiserver sends, in its order.
    let request = hyper::Request::post(case.path_and_query.as_str())
        .header("host", target.addr.to_string())
        .header("user-agent", "kube-apiserver-admission")
        .header("content-length", case.body.len())
        .header("accept", "application/json, */*")
        .header("content-type", "application/json")
        .header("accept-encoding", "gzip")
        .body(Full::new(case.body.clone()))
        .context("build request")?;
    let response = connection
        .send_request(request)
        .await
        .context("send request")?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .context("read response body")?
        .to_bytes();
    check_answer(target.check_verdict, case, status.as_u16(), &body)
}

fn check_answer(check_verdict: bool, case: &Case, status: u16, body: &[u8]) -> anyhow::Result<()> {
    if status != 200 {
        anyhow::bail!(
            "HTTP {status}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
    }
    if !contains(body, case.uid.as_bytes()) {
        anyhow::bail!("answer does not echo uid {}", case.uid);
    }
    if check_verdict {
        let allowed = contains(body, b"\"allowed\":true");
        let patched = contains(body, b"\"patch\":");
        let ok = match case.expect {
            Expect::Allow => allowed && !patched,
            Expect::Deny => !allowed,
            Expect::Patch => allowed && patched,
        };
        if !ok {
            anyhow::bail!(
                "expected {:?}, got: {}",
                case.expect,
                String::from_utf8_lossy(&body[..body.len().min(300)])
            );
        }
    }
    Ok(())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

async fn connect(target: &Target) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let tcp = TcpStream::connect(target.addr)
        .await
        .with_context(|| format!("connect {}", target.addr))?;
    tcp.set_nodelay(true).context("TCP_NODELAY")?;
    // An IP literal: like kube-apiserver, no SNI is sent.
    let server_name = ServerName::IpAddress(target.addr.ip().into());
    let tls = TlsConnector::from(Arc::clone(&target.tls))
        .connect(server_name, tcp)
        .await
        .context("TLS handshake")?;
    let (sender, connection) = http1::handshake(TokioIo::new(tls))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(async move {
        // Ends when the sender is dropped or the server closes.
        let _ = connection.await;
    });
    Ok(sender)
}
