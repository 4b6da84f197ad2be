//! Shared helpers for the webhook server tests: a test PKI made with rcgen,
//! an in-process server on an ephemeral loopback port, and HTTPS clients.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser as _;
use metal3_dataimage::admission::secrets::{NoClusterAccess, SecretSource, SharedSecretSource};
use metal3_dataimage::admission::{Server, ServerHandle, Settings};
use metal3_dataimage::cli::{Cli, Command};
use metal3_dataimage::rules::SecretLookup;
use prometheus_client::registry::Registry;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber,
};

pub(crate) const VALIDATE: &str = "/validate-metal3-io-v1alpha1-baremetalhost";
pub(crate) const MUTATE: &str = "/mutate-metal3-io-v1alpha1-baremetalhost";
pub(crate) const VALIDATE_DATAIMAGE: &str = "/validate-metal3-io-v1alpha1-dataimage";

/// A certificate and its key, PEM, plus the DER of the certificate.
#[derive(Clone)]
pub(crate) struct Issued {
    pub(crate) cert_pem: String,
    pub(crate) key_pem: String,
    pub(crate) der: Vec<u8>,
}

/// A test CA.
pub(crate) struct Pki {
    pub(crate) ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

impl Pki {
    pub(crate) fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, names: Vec<String>, usage: ExtendedKeyUsagePurpose) -> Issued {
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        params.extended_key_usages = vec![usage];
        params.serial_number = Some(random_serial());
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A serving certificate for localhost, 127.0.0.1 and ::1.
    pub(crate) fn serving(&self) -> Issued {
        self.issue(
            vec!["localhost".into(), "127.0.0.1".into(), "::1".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate (what the API server presents for mTLS).
    pub(crate) fn client(&self, name: &str) -> Issued {
        self.issue(vec![name.into()], ExtendedKeyUsagePurpose::ClientAuth)
    }
}

pub(crate) fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
}

/// Lays out `dir` the way the kubelet mounts a Secret: `tls.crt` ->
/// `..data/tls.crt`, `..data` -> `..<version>`.
pub(crate) fn kubelet_publish(dir: &Path, version: &str, issued: &Issued) {
    let versioned = dir.join(format!("..{version}"));
    std::fs::create_dir(&versioned).unwrap();
    write(&versioned.join("tls.crt"), &issued.cert_pem);
    write(&versioned.join("tls.key"), &issued.key_pem);
    // Atomic swap of ..data through a temporary symlink, like AtomicWriter.
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(format!("..{version}"), &tmp).unwrap();
    let old_target = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        if std::fs::symlink_metadata(dir.join(file)).is_err() {
            std::os::unix::fs::symlink(format!("..data/{file}"), dir.join(file)).unwrap();
        }
    }
    if let Some(old) = old_target {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

pub(crate) struct TestServer {
    pub(crate) addr: SocketAddr,
    pub(crate) handle: ServerHandle,
    pub(crate) registry: Arc<Registry>,
    pub(crate) task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub(crate) pki: Pki,
    pub(crate) dir: tempfile::TempDir,
}

/// A fixed answer for every Secret lookup, optionally after a delay.
#[derive(Clone, Debug)]
pub(crate) struct StaticSecrets {
    pub(crate) answer: SecretLookup,
    pub(crate) delay: Duration,
}

impl SecretSource for StaticSecrets {
    fn lookup<'a>(
        &'a self,
        _namespace: &'a str,
        _name: &'a str,
    ) -> std::pin::Pin<Box<dyn Future<Output = SecretLookup> + Send + 'a>> {
        Box::pin(async move {
            if !self.delay.is_zero() {
                tokio::time::sleep(self.delay).await;
            }
            self.answer.clone()
        })
    }
}

pub(crate) fn no_cluster() -> SharedSecretSource {
    Arc::new(NoClusterAccess)
}

/// Plain settings: certificate files in a temp dir, loopback, ephemeral port.
pub(crate) fn settings(dir: &Path, pki: &Pki) -> Settings {
    let serving = pki.serving();
    write(&dir.join("tls.crt"), &serving.cert_pem);
    write(&dir.join("tls.key"), &serving.key_pem);
    let line = ["metal3-dataimage", "serve", "--listen", "127.0.0.1:0"];
    let Command::Serve(args) = Cli::try_parse_from(line).unwrap().command else {
        unreachable!("serve parses as serve")
    };
    let mut settings = Settings {
        args,
        cert_file: dir.join("tls.crt"),
        key_file: dir.join("tls.key"),
        secrets: no_cluster(),
    };
    settings.args.shutdown_delay = Duration::ZERO;
    settings
}

/// Starts the server in process; `configure` adjusts the default settings.
pub(crate) async fn start(configure: impl FnOnce(&Path, &Pki, &mut Settings)) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test-ca");
    let mut settings = settings(dir.path(), &pki);
    configure(dir.path(), &pki, &mut settings);
    let server = Server::bind(settings).await.unwrap();
    let addr = server.local_addr();
    let handle = server.handle();
    let registry = server.registry();
    let task = tokio::spawn(server.run());
    // Ready once the warm-up handshake is done.
    for _ in 0..500 {
        if handle.readiness().is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(handle.readiness(), Ok(()));
    TestServer {
        addr,
        handle,
        registry,
        task,
        pki,
        dir,
    }
}

impl TestServer {
    pub(crate) fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub(crate) fn client(&self) -> reqwest::Client {
        client(&self.pki.ca_pem, None)
    }

    /// The metrics in Prometheus text format.
    pub(crate) fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry).unwrap();
        text
    }

    pub(crate) async fn stop(self) {
        self.handle.shutdown_now();
        self.task.await.unwrap().unwrap();
    }
}

/// An HTTPS client trusting only `ca_pem`, offering h2 and http/1.1 like the
/// API server.
pub(crate) fn client(ca_pem: &str, identity: Option<&Issued>) -> reqwest::Client {
    client_builder(ca_pem, identity).build().unwrap()
}

pub(crate) fn client_builder(ca_pem: &str, identity: Option<&Issued>) -> reqwest::ClientBuilder {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
        .tls_info(true)
        .no_proxy()
        .timeout(Duration::from_secs(30));
    if let Some(identity) = identity {
        let pem = format!("{}{}", identity.cert_pem, identity.key_pem);
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    builder
}

pub(crate) fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/admission-reviews")
        .join(name)
}

/// A captured AdmissionReview request body.
pub(crate) fn fixture(name: &str) -> String {
    std::fs::read_to_string(fixture_path(name)).unwrap()
}

pub(crate) fn uid_of(body: &str) -> String {
    let review: serde_json::Value = serde_json::from_str(body).unwrap();
    review["request"]["uid"].as_str().unwrap().to_string()
}

/// A parsed webhook answer.
pub(crate) struct Answer {
    pub(crate) status: reqwest::StatusCode,
    pub(crate) version: reqwest::Version,
    pub(crate) content_type: String,
    pub(crate) text: String,
    pub(crate) peer_cert: Option<Vec<u8>>,
}

impl Answer {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|err| panic!("not JSON ({err}): {}", self.text))
    }

    pub(crate) fn response(&self) -> serde_json::Value {
        assert_eq!(self.status, reqwest::StatusCode::OK, "{}", self.text);
        self.json()["response"].clone()
    }
}

pub(crate) async fn post_with(
    client: &reqwest::Client,
    url: &str,
    content_type: &str,
    body: impl Into<reqwest::Body>,
) -> Result<Answer, reqwest::Error> {
    let response = client
        .post(url)
        .header("Content-Type", content_type)
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let version = response.version();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let peer_cert = response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate().map(<[u8]>::to_vec));
    let text = response.text().await?;
    Ok(Answer {
        status,
        version,
        content_type,
        text,
        peer_cert,
    })
}

/// POSTs a review the way the API server does (`?timeout=10s`, JSON).
pub(crate) async fn post(client: &reqwest::Client, url: &str, body: &str) -> Answer {
    let url = format!("{url}?timeout=10s");
    post_with(client, &url, "application/json", body.to_string())
        .await
        .unwrap()
}

/// Decodes the base64 JSON Patch of an answer.
pub(crate) fn patch_of(response: &serde_json::Value) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let patch = response["patch"].as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patch)
        .unwrap();
    Some(serde_json::from_slice(&bytes).unwrap())
}

/// The real `metal3-dataimage serve` binary, started by [`spawn_server`].
pub(crate) struct Running {
    pub(crate) child: std::process::Child,
    pub(crate) address: String,
    pub(crate) probe_address: String,
    /// stderr, one log line per message, after the startup lines.
    pub(crate) logs: std::sync::mpsc::Receiver<String>,
    /// Lines printed up to and including the "listening" line.
    pub(crate) startup: Vec<String>,
}

impl Drop for Running {
    fn drop(&mut self) {
        // Never leave a server behind if an assertion failed.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on ephemeral loopback ports with JSON logs and waits
/// for its "listening" log line to learn the addresses.
pub(crate) fn spawn_server(
    dir: &Path,
    extra: &[&std::ffi::OsStr],
    env: &[(&str, &str)],
) -> Running {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_metal3-dataimage"));
    command
        .args(serve_args("json"))
        .args(extra)
        .envs(env.iter().copied());
    spawn_command(command, dir)
}

/// `serve` on ephemeral loopback ports with the given `--log-format`.
pub(crate) fn serve_args(log_format: &str) -> Vec<String> {
    [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--probe-listen",
        "127.0.0.1:0",
        "--log-format",
        log_format,
    ]
    .map(String::from)
    .to_vec()
}

/// Runs `command` (the binary with [`serve_args`], possibly behind a
/// wrapper) without cluster access and waits for the "listening" line, in
/// either log format.
pub(crate) fn spawn_command(mut command: std::process::Command, dir: &Path) -> Running {
    use std::io::{BufRead as _, BufReader};
    use std::process::Stdio;
    use std::time::Instant;
    let mut child = command
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the metal3-dataimage binary");
    let stderr = child.stderr.take();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    // From here on, Drop kills and reaps the child whatever happens.
    let mut running = Running {
        child,
        address: String::new(),
        probe_address: String::new(),
        logs: lines_rx,
        startup: Vec::new(),
    };
    let stderr = stderr.expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = running.logs.recv_timeout(remaining).unwrap_or_else(|_| {
            panic!("the server did not report listening: {:?}", running.startup)
        });
        running.startup.push(line.clone());
        if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
            if event["message"] == "webhook server listening" {
                running.address = event["address"].as_str().unwrap().to_string();
                running.probe_address = event["probe_address"].as_str().unwrap().to_string();
                return running;
            }
        } else if line.contains("webhook server listening") {
            // Text format: `... webhook server listening address=127.0.0.1:1 probe_address=...`
            let field = |name: &str| {
                line.split_whitespace()
                    .find_map(|token| token.strip_prefix(name))
                    .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                    .to_string()
            };
            running.address = field("address=");
            running.probe_address = field("probe_address=");
            return running;
        }
    }
}

impl Running {
    /// Log lines printed within `window` from now.
    pub(crate) fn lines_within(&self, window: Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + window;
        let mut lines = Vec::new();
        while let Ok(line) = self
            .logs
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            lines.push(line);
        }
        lines
    }
}

/// Writes a serving certificate from `pki` into `dir` and returns the
/// `--tls-cert-file`/`--tls-key-file` arguments for it.
pub(crate) fn tls_args(dir: &Path, pki: &Pki) -> Vec<String> {
    let serving = pki.serving();
    write(&dir.join("tls.crt"), &serving.cert_pem);
    write(&dir.join("tls.key"), &serving.key_pem);
    vec![
        "--tls-cert-file".into(),
        dir.join("tls.crt").display().to_string(),
        "--tls-key-file".into(),
        dir.join("tls.key").display().to_string(),
    ]
}
