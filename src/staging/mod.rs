//! Image staging: fetch a credentialed / self-signed image ourselves, check it
//! is ISO 9660, store it content-addressed and serve it to Ironic at an
//! unguessable per-host URL, so credentials never reach Ironic.
//!
//! Contract used by the reconciler: build one [`Stager`] from a
//! [`StagingConfig`], [`Stager::start`] staging for every host whose data
//! image needs credentials or a relaxed TLS policy and [`Stager::poll`] it
//! (or [`Stager::put`] an image built here), hand
//! [`StagedImage::ironic_url`] to Ironic, call [`Stager::release`] when the
//! host no longer needs it, and run [`Stager::serve_tls`] for the image server.
//!
//! Layout: `iso` (pure ISO 9660 checks), [`config_iso`] (the ISO built from
//! a Secret), `server` (image server), `fetch` (download), [`args`] (CLI
//! flags), this module (cache bookkeeping: single-flight, per-host tokens,
//! eviction).

pub mod args;
pub mod config_iso;
mod fetch;
mod iso;
mod server;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub use fetch::MAX_REDIRECTS;

use crate::model::SecretCredentials;
use crate::telemetry::redact_url;

/// How to fetch, store and serve staged images (see [`args::StagingArgs`]).
#[derive(Clone, Debug)]
pub struct StagingConfig {
    /// One per replica (emptied of a previous run's files).
    pub cache_dir: PathBuf,
    /// Largest image accepted, in bytes.
    pub max_image_size: u64,
    /// Extra CA certificates (PEM bundle) trusted besides the system roots.
    pub image_ca_file: Option<PathBuf>,
    pub listen: SocketAddr,
    /// Base URL under which Ironic reaches that listener.
    pub public_url: url::Url,
    pub connect_timeout: Duration,
    /// Time allowed for each read (a stalled transfer fails after it).
    pub read_timeout: Duration,
    /// A failed staging is reported this long before it is tried again
    /// ([`RETRY_FAILED`]).
    pub retry_failed: Duration,
}

/// One host's image to stage. `Debug` redacts credentials (also any the
/// user put into the URL itself).
#[derive(Clone)]
pub struct StageRequest {
    /// `namespace/name` of the host.
    pub host_key: String,
    /// The user's URL, unchanged.
    pub url: String,
    pub credentials: Option<SecretCredentials>,
    /// `disableCertificateVerification: true`.
    pub insecure: bool,
}

impl std::fmt::Debug for StageRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageRequest")
            .field("host_key", &self.host_key)
            .field("url", &redact_url(&self.url))
            .field("credentials", &self.credentials)
            .field("insecure", &self.insecure)
            .finish()
    }
}

/// A staged image. `Debug` hides the URL's token (whoever has the URL can
/// download the image).
#[derive(Clone, PartialEq, Eq)]
pub struct StagedImage {
    pub digest: String,
    pub size: u64,
    /// URL handed to Ironic (per-host token + digest).
    pub ironic_url: String,
    /// The ISO carries an El Torito boot record.
    pub bootable: bool,
}

/// Why staging failed. Messages never contain credentials. `Clone` (so
/// `String` payloads): hosts sharing a download share its result.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StageError {
    #[error("the image's server refused the credentials from the Secret (HTTP {0})")]
    Unauthorized(u16),
    #[error("image download failed: {0}")]
    Download(String),
    #[error("TLS error fetching the image: {0}")]
    Tls(String),
    #[error("image is larger than the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("not an ISO 9660 image: {0}")]
    NotIso(String),
    #[error("image cache: {0}")]
    Io(String),
}

impl std::fmt::Debug for StagedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `.../images/<token>/<digest>.iso` → `.../images/***/<digest>.iso`.
        let url = match self.ironic_url.rsplitn(3, '/').collect::<Vec<_>>()[..] {
            [file, _token, base] if base.ends_with("/images") => format!("{base}/***/{file}"),
            _ => self.ironic_url.clone(),
        };
        f.debug_struct("StagedImage")
            .field("digest", &self.digest)
            .field("size", &self.size)
            .field("ironic_url", &url)
            .field("bootable", &self.bootable)
            .finish()
    }
}

impl StagedImage {
    /// A remark for the host's status, if the image deserves one.
    pub fn status_note(&self) -> Option<&'static str> {
        self.bootable.then_some(
            "the ISO carries an El Torito boot record: firmware may boot from it, while a data image should not be bootable",
        )
    }
}

/// Content-addressed images live in `<cache>/sha256/<hex>.iso`; downloads in
/// progress in `<cache>/tmp/` (cleared at start-up).
const BLOB_DIR: &str = "sha256";
const TMP_DIR: &str = "tmp";
/// Per-host URL token: 256 random bits, hex in the URL.
const TOKEN_BYTES: usize = 32;

/// Identifies one download: a salted hash of URL, credentials and TLS
/// setting. The salt is random per process and the map lives in memory only,
/// so neither the password nor a guessable hash of it is ever stored.
type FetchKey = [u8; 32];
type SharedFetch = Shared<BoxFuture<'static, Result<Blob, StageError>>>;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Blob {
    hex: String,
    size: u64,
    bootable: bool,
}

struct HostEntry {
    key: FetchKey,
    blob: Blob,
    token: String,
}

#[derive(Default)]
struct State {
    hosts: HashMap<String, HostEntry>,
    /// sha256(token) → host, so a lookup does not branch on token bytes.
    by_token: HashMap<[u8; 32], String>,
    /// Completed downloads still referenced (by a host or a waiting caller).
    fetched: HashMap<FetchKey, Blob>,
    /// Downloads in progress, and how far they got: callers with the same
    /// key share one.
    inflight: HashMap<FetchKey, (SharedFetch, Arc<fetch::Progress>)>,
    /// One clone per caller waiting on a key (dropped when it stops
    /// waiting): while there is one, the key's blob survives eviction.
    pins: HashMap<FetchKey, Arc<()>>,
    /// Background staging started by [`Stager::start`], per host.
    jobs: HashMap<String, Job>,
}

/// One host's background staging ([`Stager::start`]).
struct Job {
    url: String,
    insecure: bool,
    key: FetchKey,
    outcome: JobOutcome,
}

enum JobOutcome {
    Running,
    Done,
    Failed(String, Instant),
}

/// Where a host's wanted image stands (see [`Stager::poll`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Staging {
    Ready(StagedImage),
    /// Downloading: bytes so far and the announced size, if any.
    Running {
        done: u64,
        total: Option<u64>,
    },
    /// The last attempt failed; a new one may start after
    /// [`StagingConfig::retry_failed`].
    Failed(String),
    /// Nothing staged or running for this URL: [`Stager::start`] it.
    Idle,
}

/// A failed staging is reported this long before it may be tried again.
pub const RETRY_FAILED: Duration = Duration::from_secs(30);

/// Fetches, checks, stores and serves staged images. Cheap to clone.
#[derive(Clone)]
pub struct Stager {
    inner: Arc<Inner>,
}

struct Inner {
    config: StagingConfig,
    blob_dir: PathBuf,
    tmp_dir: PathBuf,
    verified: reqwest::Client,
    insecure: reqwest::Client,
    key_salt: [u8; 32],
    state: Mutex<State>,
}

impl std::fmt::Debug for Stager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hosts = self.inner.lock().hosts.len();
        f.debug_struct("Stager")
            .field("cache_dir", &self.inner.config.cache_dir)
            .field("public_url", &self.inner.config.public_url.as_str())
            .field("hosts", &hosts)
            .finish_non_exhaustive()
    }
}

impl Stager {
    /// Prepares the cache directory (removing what a previous run left:
    /// incomplete downloads and images) and the HTTP clients (system roots
    /// plus `image_ca_file`).
    pub fn new(config: StagingConfig) -> Result<Self, StageError> {
        if !matches!(config.public_url.scheme(), "http" | "https") {
            return Err(StageError::Io(format!(
                "the image server URL {} must be http or https",
                redact_url(config.public_url.as_str())
            )));
        }
        let blob_dir = config.cache_dir.join(BLOB_DIR);
        let tmp_dir = config.cache_dir.join(TMP_DIR);
        for dir in [&blob_dir, &tmp_dir] {
            std::fs::create_dir_all(dir)
                .map_err(|err| StageError::Io(format!("cannot create {}: {err}", dir.display())))?;
        }
        let leftovers = remove_files_in(&tmp_dir);
        if leftovers > 0 {
            tracing::info!(
                count = leftovers,
                "removed incomplete downloads left by a previous run"
            );
        }
        let extra_roots = match &config.image_ca_file {
            Some(path) => ca_certificates(path).map_err(|err| {
                StageError::Tls(format!("the image CA file {} {err:#}", path.display()))
            })?,
            None => Vec::new(),
        };
        let inner = Inner {
            verified: build_client(&config, &extra_roots, false)?,
            insecure: build_client(&config, &extra_roots, true)?,
            config,
            blob_dir,
            tmp_dir,
            key_salt: rand::random(),
            state: Mutex::new(State::default()),
        };
        // Download keys live in memory only, so images of a previous run
        // cannot be matched to hosts again: they are downloaded anew.
        let stale = inner.evict(&mut inner.lock());
        if stale > 0 {
            tracing::info!(count = stale, "removed images left by a previous run");
        }
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Makes `request.url` available to Ironic for `request.host_key`.
    ///
    /// Cheap when nothing changed (no network). Downloads again when the URL,
    /// the credentials or the TLS setting differ from what the host has;
    /// hosts asking for the same thing share one download. On failure the
    /// host keeps what it had staged before (until [`Stager::release`]).
    pub async fn stage(&self, request: StageRequest) -> Result<StagedImage, StageError> {
        let url = fetch::parse_user_url(&request.url)?;
        let key = self
            .inner
            .fetch_key(&url, request.credentials.as_ref(), request.insecure);
        let (fetch, _pin) = {
            let mut state = self.inner.lock();
            if let Some(staged) = self.inner.reuse(&mut state, &request.host_key, &key) {
                return Ok(staged);
            }
            let pin = state.pins.entry(key).or_default().clone();
            let (fetch, _) = state.inflight.entry(key).or_insert_with(|| {
                self.inner
                    .start_fetch(key, url, request.credentials.clone(), request.insecure)
            });
            (fetch.clone(), pin)
        };
        let result = fetch.clone().await;
        let mut state = self.inner.lock();
        // Normally the download task removed itself; not if it panicked.
        if state
            .inflight
            .get(&key)
            .is_some_and(|(f, _)| f.ptr_eq(&fetch))
        {
            state.inflight.remove(&key);
        }
        Ok(self
            .inner
            .assign(&mut state, &request.host_key, key, result?))
    }

    /// Where `host_key`'s image for `url` stands, without waiting for
    /// anything (a reconcile never waits for a download).
    pub fn poll(&self, host_key: &str, url: &str, insecure: bool) -> Staging {
        let state = self.inner.lock();
        let Some(job) = state
            .jobs
            .get(host_key)
            .filter(|j| j.url == url && j.insecure == insecure)
        else {
            return Staging::Idle;
        };
        match &job.outcome {
            JobOutcome::Running => match state.inflight.get(&job.key) {
                Some((_, progress)) => progress.running(),
                None => fetch::Progress::default().running(),
            },
            JobOutcome::Done => match state.hosts.get(host_key) {
                Some(entry) if entry.key == job.key => {
                    Staging::Ready(self.inner.staged_image(entry))
                }
                _ => Staging::Idle,
            },
            JobOutcome::Failed(message, at) if at.elapsed() < self.inner.config.retry_failed => {
                Staging::Failed(message.clone())
            }
            JobOutcome::Failed(..) => Staging::Idle,
        }
    }

    /// Stages `request` in the background (hosts asking for the same image
    /// share one download); [`Stager::poll`] reports how it goes.
    pub fn start(&self, request: StageRequest) {
        let (host_key, insecure) = (request.host_key.clone(), request.insecure);
        let key = match fetch::parse_user_url(&request.url) {
            Ok(url) => self
                .inner
                .fetch_key(&url, request.credentials.as_ref(), insecure),
            Err(err) => return self.fail(&host_key, &request.url, insecure, err.to_string()),
        };
        let job = Job {
            url: request.url.clone(),
            insecure,
            key,
            outcome: JobOutcome::Running,
        };
        let previous = self.inner.lock().jobs.insert(host_key.clone(), job);
        if previous.is_some_and(|job| job.key == key && matches!(job.outcome, JobOutcome::Running))
        {
            return; // That download's task reports to the new job as well.
        }
        let stager = self.clone();
        tokio::spawn(async move {
            let result = stager.stage(request).await;
            let mut state = stager.inner.lock();
            if let Some(job) = state.jobs.get_mut(&host_key)
                && job.key == key
            {
                job.outcome = match result {
                    Ok(_) => JobOutcome::Done,
                    Err(err) => JobOutcome::Failed(err.to_string(), Instant::now()),
                };
            }
        });
    }

    /// Records a failure that happened before any download (an unreadable
    /// credentials Secret), reported by [`Stager::poll`] like any other.
    pub fn fail(&self, host_key: &str, url: &str, insecure: bool, message: String) {
        let job = Job {
            url: url.to_string(),
            insecure,
            key: [0; 32],
            outcome: JobOutcome::Failed(message, Instant::now()),
        };
        self.inner.lock().jobs.insert(host_key.to_string(), job);
    }

    /// Serves `iso` (an image built here, e.g. from a Secret) for
    /// `host_key`, like a downloaded one: content-addressed file, per-host
    /// token (kept while the content stays the same). Cheap when the host
    /// already has these bytes.
    pub fn put(&self, host_key: &str, iso: &[u8]) -> Result<StagedImage, StageError> {
        let hex = hex::encode(Sha256::digest(iso));
        let key = self.inner.key(&[b"built", hex.as_bytes()]);
        let dest = self.inner.blob_path(&hex);
        let mut state = self.inner.lock();
        if let Some(staged) = self.inner.reuse(&mut state, host_key, &key) {
            return Ok(staged);
        }
        let info =
            iso::inspect(&iso[..iso.len().min(iso::HEADER_LEN)]).map_err(StageError::NotIso)?;
        if !dest.is_file() {
            tempfile::NamedTempFile::new_in(&self.inner.tmp_dir)
                .and_then(|mut tmp| tmp.write_all(iso).map(|()| tmp))
                .and_then(|tmp| tmp.persist(&dest).map_err(|err| err.error))
                .map_err(|err| StageError::Io(format!("writing the built image: {err}")))?;
            sync_dir(&self.inner.blob_dir);
        }
        let blob = Blob {
            hex,
            size: iso.len() as u64,
            bootable: info.bootable,
        };
        state.fetched.insert(key, blob.clone());
        Ok(self.inner.assign(&mut state, host_key, key, blob))
    }

    pub fn staged(&self, host_key: &str) -> Option<StagedImage> {
        let state = self.inner.lock();
        state
            .hosts
            .get(host_key)
            .map(|entry| self.inner.staged_image(entry))
    }

    /// The host no longer needs its image: its URL stops working at once and
    /// the file is deleted unless another host uses the same content.
    pub fn release(&self, host_key: &str) {
        let mut state = self.inner.lock();
        state.jobs.remove(host_key);
        if let Some(entry) = state.hosts.remove(host_key) {
            state.by_token.remove(&token_hash(&entry.token));
            tracing::info!(host = %host_key, digest = %format!("sha256:{}", entry.blob.hex), "released staged image");
            self.inner.evict(&mut state);
        }
    }

    /// Serves staged images (`/images/{token}/{digest}.iso`) on
    /// `config.listen` until `shutdown` completes, over HTTPS when `tls` is given.
    pub async fn serve_tls(
        &self,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let listener = tokio::net::TcpListener::bind(self.inner.config.listen).await?;
        tracing::info!(
            listen = %self.inner.config.listen,
            url = %redact_url(self.inner.config.public_url.as_str()),
            tls = tls.is_some(),
            "image server listening"
        );
        self.serve_listener(listener, tls, shutdown).await
    }

    /// Serves on an already bound listener (tests bind port 0).
    pub async fn serve_listener(
        &self,
        listener: tokio::net::TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let router = server::router(self.inner.clone());
        crate::listener::serve_router(listener, router, tls, shutdown).await
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the image server down with it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A salted hash of length-prefixed fields. Download keys start with
    /// the URL, keys of built images with `built`: the two never meet.
    fn key(&self, fields: &[&[u8]]) -> FetchKey {
        let mut hasher = Sha256::new();
        for field in std::iter::once(&self.key_salt[..]).chain(fields.iter().copied()) {
            hasher.update((field.len() as u64).to_le_bytes());
            hasher.update(field);
        }
        hasher.finalize().into()
    }

    fn fetch_key(
        &self,
        url: &url::Url,
        creds: Option<&SecretCredentials>,
        insecure: bool,
    ) -> FetchKey {
        let url = url.as_str().as_bytes();
        let tls: &[u8] = if insecure { b"insecure" } else { b"verify" };
        match creds {
            Some(c) => self.key(&[
                url,
                b"basic",
                c.username.as_bytes(),
                c.password.as_bytes(),
                tls,
            ]),
            None => self.key(&[url, b"anonymous", tls]),
        }
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.blob_dir.join(format!("{hex}.iso"))
    }

    /// The host's current image or a finished download (or built image)
    /// with the same key, if its file is still on disk.
    fn reuse(&self, state: &mut State, host_key: &str, key: &FetchKey) -> Option<StagedImage> {
        let on_disk = |blob: &Blob| self.blob_path(&blob.hex).is_file();
        let current = state.hosts.get(host_key);
        if let Some(entry) = current.filter(|e| e.key == *key && on_disk(&e.blob)) {
            return Some(self.staged_image(entry));
        }
        let blob = state.fetched.get(key).filter(|b| on_disk(b))?.clone();
        Some(self.assign(state, host_key, *key, blob))
    }

    /// Starts a download in a task of its own: a reconcile that gives up
    /// waiting does not abort a download other hosts may share.
    fn start_fetch(
        self: &Arc<Self>,
        key: FetchKey,
        url: url::Url,
        credentials: Option<SecretCredentials>,
        insecure: bool,
    ) -> (SharedFetch, Arc<fetch::Progress>) {
        let progress = Arc::new(fetch::Progress::default());
        let (inner, shared) = (self.clone(), progress.clone());
        let task = tokio::spawn(async move {
            inner
                .fetch_and_store(key, url, credentials.as_ref(), insecure, &shared)
                .await
        });
        let fetch = async move {
            task.await.unwrap_or_else(|err| {
                Err(StageError::Io(format!(
                    "the download task ended unexpectedly: {err}"
                )))
            })
        };
        (fetch.boxed().shared(), progress)
    }

    async fn fetch_and_store(
        &self,
        key: FetchKey,
        url: url::Url,
        credentials: Option<&SecretCredentials>,
        insecure: bool,
        progress: &fetch::Progress,
    ) -> Result<Blob, StageError> {
        let client = if insecure {
            &self.insecure
        } else {
            &self.verified
        };
        let max_size = self.config.max_image_size;
        let shown = redact_url(url.as_str()).into_owned();
        tracing::info!(url = %shown, insecure, "downloading image to stage");
        let result =
            fetch::download(client, &url, credentials, max_size, &self.tmp_dir, progress).await;
        let mut state = self.lock();
        state.inflight.remove(&key);
        let (file, blob) = result.inspect_err(|err| {
            tracing::warn!(url = %shown, error = %err, "image staging failed");
        })?;
        file.persist(self.blob_path(&blob.hex)).map_err(|err| {
            StageError::Io(format!(
                "cannot move the image into {}: {}",
                self.blob_dir.display(),
                err.error
            ))
        })?;
        sync_dir(&self.blob_dir);
        tracing::info!(
            url = %shown,
            digest = %format!("sha256:{}", blob.hex),
            size = blob.size,
            bootable = blob.bootable,
            "image downloaded and verified"
        );
        state.fetched.insert(key, blob.clone());
        Ok(blob)
    }

    /// Points the host at `blob`, keeping its token while the content stays
    /// the same and minting a new one (old URL dead) when it changes; then
    /// evicts what the host no longer uses.
    fn assign(&self, state: &mut State, host_key: &str, key: FetchKey, blob: Blob) -> StagedImage {
        let digest = format!("sha256:{}", blob.hex);
        let token = match state.hosts.remove(host_key) {
            Some(old) => {
                state.by_token.remove(&token_hash(&old.token));
                if old.blob.hex == blob.hex {
                    old.token
                } else {
                    tracing::info!(host = %host_key, %digest, "host's staged image changed");
                    new_token()
                }
            }
            None => {
                tracing::info!(host = %host_key, %digest, "host's image staged");
                new_token()
            }
        };
        state
            .by_token
            .insert(token_hash(&token), host_key.to_string());
        let entry = HostEntry { key, blob, token };
        let staged = self.staged_image(&entry);
        state.hosts.insert(host_key.to_string(), entry);
        self.evict(state);
        staged
    }

    fn staged_image(&self, entry: &HostEntry) -> StagedImage {
        let base = self.config.public_url.as_str().trim_end_matches('/');
        StagedImage {
            digest: format!("sha256:{}", entry.blob.hex),
            size: entry.blob.size,
            ironic_url: format!("{base}/images/{}/{}.iso", entry.token, entry.blob.hex),
            bootable: entry.blob.bootable,
        }
    }

    /// Forgets downloads nobody needs and deletes image files no host uses;
    /// returns how many files were deleted.
    fn evict(&self, state: &mut State) -> usize {
        let host_keys: HashSet<FetchKey> = state.hosts.values().map(|e| e.key).collect();
        state.pins.retain(|_, pin| Arc::strong_count(pin) > 1);
        let pins = &state.pins;
        state
            .fetched
            .retain(|key, _| host_keys.contains(key) || pins.contains_key(key));
        let keep: HashSet<&str> = state
            .hosts
            .values()
            .map(|e| e.blob.hex.as_str())
            .chain(state.fetched.values().map(|b| b.hex.as_str()))
            .collect();
        let Ok(entries) = std::fs::read_dir(&self.blob_dir) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(hex) = name.to_str().and_then(|n| n.strip_suffix(".iso")) else {
                continue;
            };
            let is_digest = hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit());
            if !is_digest || keep.contains(hex) {
                continue;
            }
            let digest = format!("sha256:{hex}");
            match std::fs::remove_file(entry.path()) {
                Ok(()) => {
                    removed += 1;
                    tracing::info!(%digest, "evicted image no host uses");
                }
                Err(err) => tracing::warn!(%digest, error = %err, "cannot evict image"),
            }
        }
        removed
    }

    /// The digest (hex) of the image a request for `/images/{token}/{file}`
    /// may receive.
    fn lookup(&self, token: &str, file: &str) -> Option<String> {
        if token.len() != TOKEN_BYTES * 2 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let state = self.lock();
        let entry = state
            .by_token
            .get(&token_hash(token))
            .and_then(|host| state.hosts.get(host))?;
        let token_matches = bool::from(entry.token.as_bytes().ct_eq(token.as_bytes()));
        (token_matches && file.strip_suffix(".iso") == Some(entry.blob.hex.as_str()))
            .then(|| entry.blob.hex.clone())
    }
}

fn new_token() -> String {
    hex::encode(rand::random::<[u8; TOKEN_BYTES]>())
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn remove_files_in(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| std::fs::remove_file(e.path()).is_ok())
        .count()
}

/// Makes a rename durable (best effort: not every filesystem allows it).
fn sync_dir(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// The certificates of a CA bundle (PEM) to trust besides the system roots:
/// `--image-ca-file` and `--ironic-ca-file`. None is an error.
pub(crate) fn ca_certificates(path: &Path) -> anyhow::Result<Vec<reqwest::Certificate>> {
    let pem = std::fs::read(path).context("cannot be read")?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .context("is not valid PEM")?;
    anyhow::ensure!(!certs.is_empty(), "holds no certificate");
    let usable = certs.iter().map(|der| reqwest::Certificate::from_der(der));
    usable
        .collect::<Result<_, _>>()
        .context("holds an unusable certificate")
}

/// What the Ironic and the image clients share: rustls, our user agent, no
/// redirects (an Ironic redirect could carry the Authorization header
/// elsewhere; image redirects are followed by hand, so that credentials stay
/// on their origin), `insecure` and the extra CAs.
pub(crate) fn http_client(
    insecure: bool,
    extra_roots: &[reqwest::Certificate],
) -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("metal3-dataimage/", env!("CARGO_PKG_VERSION")))
        .danger_accept_invalid_certs(insecure);
    let roots = extra_roots.iter().cloned();
    roots.fold(builder, reqwest::ClientBuilder::add_root_certificate)
}

fn build_client(
    config: &StagingConfig,
    extra_roots: &[reqwest::Certificate],
    insecure: bool,
) -> Result<reqwest::Client, StageError> {
    http_client(insecure, extra_roots)
        .tls_built_in_webpki_certs(false)
        .tls_built_in_native_certs(true)
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.read_timeout)
        .build()
        .map_err(|err| StageError::Tls(format!("cannot set up the HTTP client: {err}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staged_image_debug_hides_the_token() {
        let staged = StagedImage {
            digest: "sha256:ab".into(),
            size: 1,
            ironic_url: format!("http://10.0.0.1:9445/images/{}/ab.iso", "f".repeat(64)),
            bootable: false,
        };
        let shown = format!("{staged:?}");
        assert!(
            shown.contains("http://10.0.0.1:9445/images/***/ab.iso"),
            "{shown}"
        );
        assert!(!shown.contains(&"f".repeat(64)));
    }

    #[test]
    fn a_blob_waited_for_survives_eviction_until_its_waiters_are_gone() {
        let cache = tempfile::tempdir().unwrap();
        let stager = Stager::new(StagingConfig {
            cache_dir: cache.path().to_path_buf(),
            max_image_size: 1 << 20,
            image_ca_file: None,
            listen: "127.0.0.1:0".parse().unwrap(),
            public_url: "http://127.0.0.1:9445/".parse().unwrap(),
            connect_timeout: Duration::from_secs(1),
            read_timeout: Duration::from_secs(1),
            retry_failed: RETRY_FAILED,
        })
        .unwrap();
        let inner = &stager.inner;
        let hex = "a".repeat(64);
        std::fs::write(inner.blob_path(&hex), b"iso").unwrap();
        let key = inner.key(&[b"waited for"]);
        let mut state = inner.lock();
        let blob = Blob {
            hex: hex.clone(),
            size: 3,
            bootable: false,
        };
        state.fetched.insert(key, blob);
        let (first, second) = (
            state.pins.entry(key).or_default().clone(),
            state.pins[&key].clone(),
        );
        assert_eq!(inner.evict(&mut state), 0);
        drop(first);
        assert_eq!(inner.evict(&mut state), 0);
        assert!(inner.blob_path(&hex).is_file());
        drop(second);
        assert_eq!(inner.evict(&mut state), 1);
        assert!(!inner.blob_path(&hex).exists());
        assert!(state.pins.is_empty() && state.fetched.is_empty());
    }

    #[test]
    fn stage_request_debug_redacts_credentials() {
        let request = StageRequest {
            host_key: "ns/h".into(),
            url: "https://u:hunter2@h.example/a.iso".into(),
            credentials: Some(SecretCredentials {
                username: "u".into(),
                password: "hunter2".into(),
            }),
            insecure: false,
        };
        let shown = format!("{request:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("ns/h"));
    }
}
