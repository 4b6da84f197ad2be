//! The HTTPS admission webhook server (`metal3-dataimage serve`).
//!
//! - [`envelope`]: AdmissionReview parsing (borrowed, objects stay raw) and answers
//! - [`handler`]: the three endpoints (HTTP checks, rules, metrics, logs)
//! - `server`: TLS listener, connection handling, graceful shutdown
//! - `tls`, `reload`: rustls configuration and certificate hot reload
//! - [`secrets`]: bounded, cached lookups of the referenced Secret
//! - [`metrics`]: controller-runtime-compatible metrics

pub mod envelope;
pub mod handler;
pub mod metrics;
mod reload;
pub mod secrets;
mod server;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

pub use server::{Server, ServerHandle};
pub use tls::TlsMinVersion;

use crate::duration::parse_duration;
use crate::rules::DEFAULT_OPERATOR_USER;
use crate::telemetry::LogFormat;
use secrets::{KubeSecrets, NoClusterAccess, SharedSecretSource};

/// Paths served on the HTTPS listener (also checked against the manifests).
pub const VALIDATE_BMH_PATH: &str = "/validate-metal3-io-v1alpha1-baremetalhost";
pub const MUTATE_BMH_PATH: &str = "/mutate-metal3-io-v1alpha1-baremetalhost";
pub const VALIDATE_DATAIMAGE_PATH: &str = "/validate-metal3-io-v1alpha1-dataimage";
/// Default listeners.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9443";
pub const DEFAULT_PROBE_LISTEN: &str = "0.0.0.0:9440";

/// `metal3-dataimage serve`: every flag is also an environment variable.
#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// HTTPS address for the webhooks.
    #[arg(long, env = "METAL3_DATAIMAGE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Plain-HTTP address for /healthz, /readyz and /metrics.
    #[arg(long, env = "METAL3_DATAIMAGE_PROBE_LISTEN", default_value = DEFAULT_PROBE_LISTEN)]
    pub probe_listen: SocketAddr,
    /// Serving certificate (PEM, chain allowed). Without it and --tls-key-file,
    /// a development certificate is generated in --cert-dir.
    #[arg(
        long,
        env = "METAL3_DATAIMAGE_TLS_CERT_FILE",
        requires = "tls_key_file"
    )]
    pub tls_cert_file: Option<PathBuf>,
    /// Private key of the serving certificate (PEM).
    #[arg(
        long,
        env = "METAL3_DATAIMAGE_TLS_KEY_FILE",
        requires = "tls_cert_file"
    )]
    pub tls_key_file: Option<PathBuf>,
    /// Require client certificates signed by these CAs (PEM; reloaded on change).
    #[arg(long, env = "METAL3_DATAIMAGE_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
    /// Lowest TLS version accepted.
    #[arg(long, env = "METAL3_DATAIMAGE_TLS_MIN_VERSION", value_enum, default_value_t = TlsMinVersion::Tls12)]
    pub tls_min_version: TlsMinVersion,
    /// Comma-separated IANA cipher suite names for TLS 1.2 (TLS 1.3 suites stay
    /// enabled unless listed); empty: rustls' AEAD suites.
    #[arg(
        long,
        env = "METAL3_DATAIMAGE_TLS_CIPHER_SUITES",
        value_delimiter = ','
    )]
    pub tls_cipher_suites: Vec<String>,
    /// Offer HTTP/2 (ALPN h2). Off by default (HTTP/2 rapid reset, CVE-2023-44487).
    #[arg(long, env = "METAL3_DATAIMAGE_ENABLE_HTTP2")]
    pub enable_http2: bool,
    /// After SIGTERM/SIGINT, keep serving (reporting not ready) this long
    /// before closing the listener, while endpoints propagate.
    #[arg(long, env = "METAL3_DATAIMAGE_SHUTDOWN_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub shutdown_delay: Duration,
    /// After closing the listener, how long in-flight requests may take.
    #[arg(long, env = "METAL3_DATAIMAGE_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Deny (instead of warn) when the referenced Secret is missing or cannot be read.
    #[arg(long, env = "METAL3_DATAIMAGE_STRICT_SECRETS")]
    pub strict_secrets: bool,
    /// Users whose whole-object writes drop dataImage (repeatable; comma-separated in the env var).
    #[arg(
        long = "operator-user",
        env = "METAL3_DATAIMAGE_OPERATOR_USER",
        value_delimiter = ',',
        default_value = DEFAULT_OPERATOR_USER
    )]
    pub operator_users: Vec<String>,
    /// Upper bound for one Secret lookup (also kept inside the API server's ?timeout=).
    #[arg(long, env = "METAL3_DATAIMAGE_SECRET_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub secret_timeout: Duration,
    /// Where the development certificate is generated/reused when no
    /// certificate flags are given.
    #[arg(long, env = "METAL3_DATAIMAGE_CERT_DIR", default_value = "certs")]
    pub cert_dir: PathBuf,
    /// TLS handshake timeout.
    #[arg(long, env = "METAL3_DATAIMAGE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub handshake_timeout: Duration,
    /// Time allowed to receive a request's headers once it started.
    #[arg(long, env = "METAL3_DATAIMAGE_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,
    /// Idle keep-alive connections are closed after this (keep it above the
    /// API server's 90 s).
    #[arg(long, env = "METAL3_DATAIMAGE_IDLE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Certificate files are re-read at least this often (besides file events).
    #[arg(long, env = "METAL3_DATAIMAGE_CERT_POLL_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub cert_poll_interval: Duration,
    /// Log format.
    #[arg(long, env = "METAL3_DATAIMAGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Everything needed to run the webhook server: `serve`'s flags (their
/// defaults are the only defaults: the tests start from them too), the
/// serving certificate and key files, and where Secrets are looked up.
#[derive(Clone)]
pub struct Settings {
    pub args: ServeArgs,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub secrets: SharedSecretSource,
}

/// The serving certificate and key files: the flags', or a development
/// certificate in --cert-dir (with a curl command to try it).
fn serving_certificate(args: &ServeArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    if let (Some(cert), Some(key)) = (&args.tls_cert_file, &args.tls_key_file) {
        return Ok((cert.clone(), key.clone()));
    }
    let dev = crate::certs::ensure_dev_certs(&args.cert_dir).with_context(|| {
        format!(
            "preparing development certificates in {}",
            args.cert_dir.display()
        )
    })?;
    tracing::info!(
        ca = %dev.ca_cert.display(),
        cert = %dev.cert.display(),
        generated = dev.generated,
        "no --tls-cert-file/--tls-key-file: serving a development certificate for localhost, 127.0.0.1 and ::1"
    );
    // The certificate is for localhost: show that name for local addresses.
    let listen = args.listen;
    let host = if listen.ip().is_unspecified() || listen.ip().is_loopback() {
        format!("localhost:{}", listen.port())
    } else {
        listen.to_string()
    };
    eprintln!(
        "Development CA: {ca}\nTry it:\n  curl --cacert {ca} -H 'Content-Type: application/json' \\\n    \
         -d '{{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{{\"uid\":\"1\",\
         \"kind\":{{\"group\":\"metal3.io\",\"version\":\"v1alpha1\",\"kind\":\"BareMetalHost\"}},\
         \"operation\":\"CREATE\",\"namespace\":\"default\",\"name\":\"host-0\",\"object\":{{\"apiVersion\":\
         \"metal3.io/v1alpha1\",\"kind\":\"BareMetalHost\",\"metadata\":{{\"name\":\"host-0\"}},\"spec\":{{\
         \"dataImage\":{{\"url\":\"ftp://example.com/a.iso\"}}}}}}}}}}' \\\n    https://{host}{path}",
        ca = dev.ca_cert.display(),
        path = VALIDATE_BMH_PATH,
    );
    Ok((dev.cert, dev.key))
}

pub(crate) async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let (cert_file, key_file) = serving_certificate(&args)?;
    let secrets: SharedSecretSource = match kube::Client::try_default().await {
        Ok(client) => {
            tracing::info!("Secret lookups use the Kubernetes API");
            Arc::new(KubeSecrets::new(client))
        }
        Err(err) => {
            tracing::info!(error = %err, "no cluster access: referenced Secrets are treated as unknown");
            Arc::new(NoClusterAccess)
        }
    };

    if args.idle_timeout <= Duration::from_secs(90) {
        tracing::warn!(
            idle_timeout_s = args.idle_timeout.as_secs(),
            "--idle-timeout is not above the API server's 90 s: it may reuse a connection we are closing"
        );
    }

    let settings = Settings {
        args: args.clone(),
        cert_file,
        key_file,
        secrets,
    };
    let server = Server::bind(settings).await?;
    let handle = server.handle();
    let (registry, readiness) = (server.registry(), handle.readiness_check());
    let probes_stop = tokio_util::sync::CancellationToken::new();
    let probes = crate::probes::spawn(args.probe_listen, registry, readiness, &probes_stop);
    let (probe_address, probes_task) = probes.await?;
    tracing::info!(
        address = %server.local_addr(),
        probe_address = %probe_address,
        http2 = args.enable_http2,
        client_auth = args.client_ca_file.is_some(),
        tls_min_version = ?args.tls_min_version,
        "webhook server listening"
    );

    let (graceful, now) = (handle.clone(), handle.clone());
    let signals = crate::signals::spawn_handler(
        move |signal| {
            tracing::info!(signal, "graceful shutdown");
            graceful.shutdown();
        },
        move |signal| {
            tracing::info!(signal, "second signal: shutting down now");
            now.shutdown_now();
        },
    );
    if let Err(err) = signals {
        tracing::warn!(error = %err, "cannot install signal handlers");
    }
    let result = server.run().await;
    probes_stop.cancel();
    let _ = probes_task.await;
    result
}
