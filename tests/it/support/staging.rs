//! Test fixtures for the staging tests: a CA and server certificates made
//! with rcgen, an HTTPS (or HTTP) image server on 127.0.0.1 with basic auth,
//! redirects and broken transfers, ISO images, and a log capture.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri, header};
use base64::Engine;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use metal3_dataimage::model::SecretCredentials;
use metal3_dataimage::staging::{StageRequest, Stager, StagingConfig};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;

pub(crate) const USER: &str = "stager";
/// Distinctive so the grep test cannot match it by accident.
pub(crate) const PASSWORD: &str = "pw-Zq8rT3vLk9";

pub(crate) fn credentials() -> SecretCredentials {
    SecretCredentials {
        username: USER.into(),
        password: PASSWORD.into(),
    }
}

pub(crate) fn basic_header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

pub(crate) use super::iso;

/// A valid ISO 9660 image of exactly `len` bytes (built by the shared
/// `support::iso`, padded with zeros): one data file whose content
/// is derived from `seed` so images differ, optional El Torito boot record.
pub(crate) fn iso_image(len: usize, bootable: bool, seed: u8) -> Vec<u8> {
    let mut content = Vec::with_capacity(len / 2);
    let mut byte = seed;
    while content.len() < len.saturating_sub(64 * 1024).max(1) {
        content.push(byte);
        byte = byte.wrapping_mul(31).wrapping_add(7);
    }
    let mut image = iso::IsoBuilder::new("STAGING_TEST")
        .file("DATA.BIN", &content)
        .bootable(bootable)
        .build();
    assert!(
        image.len() <= len,
        "an ISO of {len} bytes is too small for the test image"
    );
    assert!(iso::has_iso9660_signature(&image));
    image.resize(len, 0);
    image
}

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// A test CA and three server identities.
pub(crate) struct Pki {
    /// Holds the PEM files below for the test's lifetime.
    _dir: tempfile::TempDir,
    pub ca_file: PathBuf,
    /// Signed by the CA for 127.0.0.1 and localhost.
    pub good: Arc<rustls::ServerConfig>,
    /// Signed by the CA, valid 2020-2021.
    pub expired: Arc<rustls::ServerConfig>,
    /// Self-signed, not from the CA.
    pub self_signed: Arc<rustls::ServerConfig>,
    /// PEM files of the `good` identity (for the product's own TLS loading).
    pub good_cert_file: PathBuf,
    pub good_key_file: PathBuf,
}

impl Pki {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "staging test CA");
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();

        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let leaf = |params: CertificateParams, signer: Option<&CertifiedIssuer<'_, KeyPair>>| {
            let key = KeyPair::generate().unwrap();
            let cert = match signer {
                Some(ca) => params.signed_by(&key, ca).unwrap(),
                None => params.self_signed(&key).unwrap(),
            };
            (
                server_config(cert.der().clone(), &key),
                cert.pem(),
                key.serialize_pem(),
            )
        };
        let (good, good_pem, good_key_pem) =
            leaf(CertificateParams::new(names.clone()).unwrap(), Some(&ca));
        let good_cert_file = dir.path().join("good.pem");
        let good_key_file = dir.path().join("good-key.pem");
        std::fs::write(&good_cert_file, good_pem).unwrap();
        std::fs::write(&good_key_file, good_key_pem).unwrap();
        let mut expired_params = CertificateParams::new(names.clone()).unwrap();
        expired_params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        expired_params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        let expired = leaf(expired_params, Some(&ca)).0;
        let self_signed = leaf(CertificateParams::new(names).unwrap(), None).0;
        Self {
            _dir: dir,
            ca_file,
            good,
            expired,
            self_signed,
            good_cert_file,
            good_key_file,
        }
    }
}

fn server_config(cert: CertificateDer<'static>, key: &KeyPair) -> Arc<rustls::ServerConfig> {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// How the test server answers a path.
#[derive(Clone)]
pub(crate) enum Reply {
    File(Bytes),
    /// Basic auth required (401 otherwise).
    Protected {
        user: String,
        password: String,
        body: Bytes,
    },
    Redirect(String),
    /// No Content-Length (chunked).
    Unsized(Bytes),
}

#[derive(Clone, Debug)]
pub(crate) struct Seen {
    pub method: Method,
    pub path: String,
    pub authorization: Option<String>,
}

#[derive(Default)]
pub(crate) struct ServerState {
    routes: Mutex<HashMap<String, Reply>>,
    seen: Mutex<Vec<Seen>>,
}

pub(crate) struct TestServer {
    pub addr: SocketAddr,
    pub tls: bool,
    state: Arc<ServerState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub(crate) async fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(ServerState::default());
        let router = Router::new().fallback(handle).with_state(state.clone());
        let is_tls = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let task = tokio::spawn(async move {
            let service = TowerToHyperService::new(router);
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let service = service.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            tls: is_tls,
            state,
            task,
        }
    }

    /// URL of `path` on this server, naming it `host` (127.0.0.1 or localhost).
    pub(crate) fn url(&self, host: &str, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}:{}{path}", self.addr.port())
    }

    pub(crate) fn set(&self, path: &str, reply: Reply) {
        self.state
            .routes
            .lock()
            .unwrap()
            .insert(path.to_string(), reply);
    }

    pub(crate) fn seen(&self, path: &str) -> Vec<Seen> {
        self.state
            .seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .cloned()
            .collect()
    }

    pub(crate) fn gets(&self, path: &str) -> usize {
        self.seen(path)
            .iter()
            .filter(|s| s.method == Method::GET)
            .count()
    }
}

async fn handle(
    axum::extract::State(state): axum::extract::State<Arc<ServerState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response<Body> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    state.seen.lock().unwrap().push(Seen {
        method,
        path: uri.path().to_string(),
        authorization: authorization.clone(),
    });
    let reply = state.routes.lock().unwrap().get(uri.path()).cloned();
    let build = |status: StatusCode| Response::builder().status(status);
    match reply {
        None => build(StatusCode::NOT_FOUND).body(Body::empty()).unwrap(),
        Some(Reply::File(body)) => build(StatusCode::OK).body(Body::from(body)).unwrap(),
        Some(Reply::Protected {
            user,
            password,
            body,
        }) => {
            if authorization.as_deref() == Some(basic_header(&user, &password).as_str()) {
                build(StatusCode::OK).body(Body::from(body)).unwrap()
            } else {
                build(StatusCode::UNAUTHORIZED)
                    .header(header::WWW_AUTHENTICATE, "Basic realm=\"images\"")
                    .body(Body::empty())
                    .unwrap()
            }
        }
        Some(Reply::Redirect(location)) => build(StatusCode::FOUND)
            .header(header::LOCATION, location)
            .body(Body::empty())
            .unwrap(),
        Some(Reply::Unsized(body)) => {
            let chunks: Vec<Result<Bytes, std::io::Error>> = body
                .chunks(16 * 1024)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            build(StatusCode::OK)
                .body(Body::from_stream(futures::stream::iter(chunks)))
                .unwrap()
        }
    }
}

/// A raw server that announces `announced` bytes, sends the shorter `body`,
/// flushes and closes the connection (TLS without close_notify): a transfer
/// broken midway, deterministically.
pub(crate) struct DropServer {
    pub addr: SocketAddr,
    pub tls: bool,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for DropServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl DropServer {
    pub(crate) async fn start(
        tls: Option<Arc<rustls::ServerConfig>>,
        announced: usize,
        body: Vec<u8>,
    ) -> Self {
        Self::start_inner(tls, announced, body, false).await
    }

    /// Like `start`, but keeps the connection open, silent, after `body`.
    pub(crate) async fn start_stalling(
        tls: Option<Arc<rustls::ServerConfig>>,
        announced: usize,
        body: Vec<u8>,
    ) -> Self {
        Self::start_inner(tls, announced, body, true).await
    }

    async fn start_inner(
        tls: Option<Arc<rustls::ServerConfig>>,
        announced: usize,
        body: Vec<u8>,
        stall: bool,
    ) -> Self {
        use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
        async fn answer<S: AsyncRead + AsyncWrite + Unpin>(
            mut stream: S,
            announced: usize,
            body: &[u8],
            stall: bool,
        ) {
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {announced}\r\n\r\n"
            );
            let _ = stream.write_all(head.as_bytes()).await;
            let _ = stream.write_all(body).await;
            let _ = stream.flush().await;
            if stall {
                std::future::pending::<()>().await;
            }
            // Dropped here: the connection ends before `announced` bytes.
        }
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let is_tls = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = requests.clone();
        let body = Arc::new(body);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (acceptor, body) = (acceptor.clone(), body.clone());
                tokio::spawn(async move {
                    match acceptor {
                        None => answer(stream, announced, &body, stall).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                answer(stream, announced, &body, stall).await;
                            }
                        }
                    }
                });
            }
        });
        Self {
            addr,
            tls: is_tls,
            requests,
            task,
        }
    }

    pub(crate) fn url(&self, host: &str, path: &str) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{host}:{}{path}", self.addr.port())
    }

    pub(crate) fn connections(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A plain-HTTP server that sends the first `split` bytes of `body` and the
/// rest only once [`GatedServer::open`] is called: a download that stays in
/// progress for as long as the test wants.
pub(crate) struct GatedServer {
    pub addr: SocketAddr,
    gate: Arc<tokio::sync::Semaphore>,
    requests: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for GatedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GatedServer {
    pub(crate) async fn start(body: Vec<u8>, split: usize) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (gate2, counter, body) = (gate.clone(), requests.clone(), Arc::new(body));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let (gate, counter, body) = (gate2.clone(), counter.clone(), body.clone());
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body[..split]).await;
                    let _ = stream.flush().await;
                    // Held open until the test opens the gate (never closed).
                    let _permit = gate.acquire().await;
                    let _ = stream.write_all(&body[split..]).await;
                    let _ = stream.flush().await;
                });
            }
        });
        Self {
            addr,
            gate,
            requests,
            task,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    pub(crate) fn requests(&self) -> usize {
        self.requests.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Lets every held transfer finish.
    pub(crate) fn open(&self) {
        self.gate.add_permits(1000);
    }

    /// Waits (without a deadline of its own) until `n` requests arrived.
    pub(crate) async fn wait_for_requests(&self, n: usize) {
        while self.requests() < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A Stager with its image server running on 127.0.0.1 (plain HTTP).
pub(crate) struct StagingHarness {
    pub stager: Stager,
    pub cache: tempfile::TempDir,
    pub image_server: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for StagingHarness {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub(crate) fn config(
    cache: &Path,
    ca_file: Option<&Path>,
    max_image_size: u64,
    public_url: &str,
) -> StagingConfig {
    StagingConfig {
        cache_dir: cache.to_path_buf(),
        max_image_size,
        image_ca_file: ca_file.map(Path::to_path_buf),
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: public_url.parse().unwrap(),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        retry_failed: metal3_dataimage::staging::RETRY_FAILED,
    }
}

impl StagingHarness {
    pub(crate) async fn start(ca_file: Option<&Path>, max_image_size: u64) -> Self {
        Self::start_with(ca_file, max_image_size, None, |_| {}).await
    }

    /// With an HTTPS image server when `tls` is given, and a chance to
    /// adjust the configuration.
    pub(crate) async fn start_with(
        ca_file: Option<&Path>,
        max_image_size: u64,
        tls: Option<Arc<rustls::ServerConfig>>,
        adjust: impl FnOnce(&mut StagingConfig),
    ) -> Self {
        let cache = tempfile::tempdir().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let image_server = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let public_url = format!("{scheme}://localhost:{}/", image_server.port());
        let mut config = config(cache.path(), ca_file, max_image_size, &public_url);
        adjust(&mut config);
        let stager = Stager::new(config).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let serving = stager.clone();
        tokio::spawn(async move {
            serving
                .serve_listener(listener, tls, async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Self {
            stager,
            cache,
            image_server,
            shutdown: Some(tx),
        }
    }

    /// Every file under the cache directory (blobs and temporaries).
    pub(crate) fn cache_files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.cache.path(), &mut out);
        out
    }
}

pub(crate) fn request(
    host: &str,
    url: &str,
    credentials: Option<SecretCredentials>,
    insecure: bool,
) -> StageRequest {
    StageRequest {
        host_key: host.to_string(),
        url: url.to_string(),
        credentials,
        insecure,
    }
}

/// A plain client for talking to the image server.
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Collects everything logged through `tracing` into memory.
#[derive(Clone, Default)]
pub(crate) struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl LogCapture {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
