//! Certificate hot reload.
//!
//! Kubernetes updates a mounted Secret by writing a new timestamped directory
//! and atomically swapping the `..data` symlink; the file paths never change,
//! so inotify watches on the files themselves fire once and then go silent.
//! We watch the *directories* holding the files (which survive every swap)
//! and also poll, compare file contents by digest, and keep the last good
//! certificate when the new files are unreadable or do not match.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use notify::Watcher as _;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use tokio_util::sync::CancellationToken;

use super::metrics::{CertificateLabels, Metrics};
use super::tls::{self, CertResolver, LoadedClientCa, TlsSettings};

const SERVING: CertificateLabels = CertificateLabels {
    certificate: "serving",
};
const CLIENT_CA: CertificateLabels = CertificateLabels {
    certificate: "client-ca",
};

/// File digests we have seen, so an unchanged (or unchanged-and-bad) file is
/// neither reloaded nor reported again.
#[derive(Default)]
struct Seen {
    cert_loaded: [u8; 32],
    cert_failed: Option<[u8; 32]>,
    ca_loaded: Option<[u8; 32]>,
    ca_failed: Option<[u8; 32]>,
}

/// The live TLS configuration.
pub struct TlsState {
    settings: TlsSettings,
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
    config: ArcSwap<ServerConfig>,
    client_ca: Mutex<Option<LoadedClientCa>>,
    seen: Mutex<Seen>,
    cert_not_after: AtomicI64,
    metrics: Metrics,
}

impl TlsState {
    /// Loads the certificate (and client CA); any problem here is fatal.
    pub fn load(settings: TlsSettings, metrics: Metrics) -> anyhow::Result<Self> {
        let provider = tls::crypto_provider(&settings)?;
        // Export the error counters at 0 from the start (alerts on `increase()`).
        let _ = metrics.certificate_read_errors.get_or_create(&SERVING);
        if settings.client_ca_file.is_some() {
            let _ = metrics.certificate_read_errors.get_or_create(&CLIENT_CA);
        }
        let (cert_pem, key_pem) = tls::read_cert_files(&settings.cert_file, &settings.key_file)?;
        metrics.certificate_reads.get_or_create(&SERVING).inc();
        let cert = tls::parse_cert(&cert_pem, &key_pem, &provider).with_context(|| {
            format!(
                "loading {} and {}",
                settings.cert_file.display(),
                settings.key_file.display()
            )
        })?;
        let client_ca = match &settings.client_ca_file {
            Some(path) => {
                metrics.certificate_reads.get_or_create(&CLIENT_CA).inc();
                let pem =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let ca = tls::parse_client_ca(&pem)
                    .with_context(|| format!("loading {}", path.display()))?;
                metrics
                    .certificate_expiry
                    .get_or_create(&CLIENT_CA)
                    .set(ca.not_after);
                Some(ca)
            }
            None => None,
        };
        let resolver = Arc::new(CertResolver::new(cert.certified.clone()));
        let config =
            tls::server_config(&settings, &provider, resolver.clone(), client_ca.as_ref())?;
        metrics
            .certificate_expiry
            .get_or_create(&SERVING)
            .set(cert.not_after);
        log_loaded("loaded serving certificate", &settings, &cert);
        Ok(Self {
            seen: Mutex::new(Seen {
                cert_loaded: cert.digest,
                ca_loaded: client_ca.as_ref().map(|ca| ca.digest),
                ..Seen::default()
            }),
            cert_not_after: AtomicI64::new(cert.not_after),
            client_ca: Mutex::new(client_ca),
            settings,
            provider,
            resolver,
            config: ArcSwap::from(config),
            metrics,
        })
    }

    /// The rustls configuration for the next accepted connection.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    pub fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// notAfter (Unix seconds) of the certificate being served.
    pub fn cert_not_after(&self) -> i64 {
        self.cert_not_after.load(Ordering::Relaxed)
    }

    /// Re-reads the files; swaps in what changed and is valid.
    pub fn reload(&self) {
        self.reload_cert();
        if self.settings.client_ca_file.is_some() {
            self.reload_client_ca();
        }
    }

    fn reload_cert(&self) {
        let (cert_pem, key_pem) =
            match tls::read_cert_files(&self.settings.cert_file, &self.settings.key_file) {
                Ok(files) => files,
                Err(err) => {
                    // Mid-swap reads can fail transiently; the next event or poll retries.
                    tracing::debug!(
                        error = format!("{err:#}"),
                        "certificate files not readable right now"
                    );
                    return;
                }
            };
        let digest = tls::digest_of(&[&cert_pem, &key_pem]);
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        if digest == seen.cert_loaded || Some(digest) == seen.cert_failed {
            return;
        }
        self.metrics.certificate_reads.get_or_create(&SERVING).inc();
        match tls::parse_cert(&cert_pem, &key_pem, &self.provider) {
            Ok(cert) => {
                self.resolver.swap(cert.certified.clone());
                self.cert_not_after.store(cert.not_after, Ordering::Relaxed);
                self.metrics
                    .certificate_expiry
                    .get_or_create(&SERVING)
                    .set(cert.not_after);
                seen.cert_loaded = digest;
                seen.cert_failed = None;
                log_loaded("reloaded serving certificate", &self.settings, &cert);
            }
            Err(err) => {
                self.metrics
                    .certificate_read_errors
                    .get_or_create(&SERVING)
                    .inc();
                seen.cert_failed = Some(digest);
                tracing::warn!(
                    error = format!("{err:#}"),
                    cert_file = %self.settings.cert_file.display(),
                    "new serving certificate rejected; still serving the previous one"
                );
            }
        }
    }

    fn reload_client_ca(&self) {
        let Some(path) = &self.settings.client_ca_file else {
            return;
        };
        let Ok(pem) = std::fs::read(path) else { return };
        let digest = tls::digest_of(&[&pem]);
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        if Some(digest) == seen.ca_loaded || Some(digest) == seen.ca_failed {
            return;
        }
        self.metrics
            .certificate_reads
            .get_or_create(&CLIENT_CA)
            .inc();
        let rebuilt = tls::parse_client_ca(&pem).and_then(|ca| {
            let config = tls::server_config(
                &self.settings,
                &self.provider,
                self.resolver.clone(),
                Some(&ca),
            )?;
            Ok((ca, config))
        });
        match rebuilt {
            Ok((ca, config)) => {
                self.config.store(config);
                self.metrics
                    .certificate_expiry
                    .get_or_create(&CLIENT_CA)
                    .set(ca.not_after);
                seen.ca_loaded = Some(digest);
                seen.ca_failed = None;
                tracing::info!(file = %path.display(), not_after = ca.not_after, "reloaded client CA");
                if let Ok(mut current) = self.client_ca.lock() {
                    *current = Some(ca);
                }
            }
            Err(err) => {
                self.metrics
                    .certificate_read_errors
                    .get_or_create(&CLIENT_CA)
                    .inc();
                seen.ca_failed = Some(digest);
                tracing::warn!(
                    error = format!("{err:#}"),
                    file = %path.display(),
                    "new client CA rejected; still using the previous one"
                );
            }
        }
    }

    /// File names of the watched files (certificate, key, client CA).
    fn watched_names(&self) -> BTreeSet<std::ffi::OsString> {
        [
            Some(&self.settings.cert_file),
            Some(&self.settings.key_file),
            self.settings.client_ca_file.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|file| file.file_name().map(ToOwned::to_owned))
        .collect()
    }

    /// Directories holding the watched files.
    fn watched_dirs(&self) -> BTreeSet<PathBuf> {
        let files = [
            Some(&self.settings.cert_file),
            Some(&self.settings.key_file),
            self.settings.client_ca_file.as_ref(),
        ];
        files
            .into_iter()
            .flatten()
            .map(|file| match file.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
                _ => PathBuf::from("."),
            })
            .collect()
    }
}

/// Whether a directory event can concern our files: one of their names, the
/// kubelet's `..data` / `..<timestamp>` entries of a Secret volume swap, or an
/// event without paths (a rescan). Other files in the directory (logs, say)
/// must not trigger a reload on every write; polling still covers anything
/// this misses.
fn is_relevant(event: &notify::Event, names: &BTreeSet<std::ffi::OsString>) -> bool {
    if matches!(event.kind, notify::EventKind::Access(_)) {
        return false;
    }
    event.paths.is_empty()
        || event.paths.iter().any(|path| {
            path.file_name().is_some_and(|name| {
                names.contains(name) || name.as_encoded_bytes().starts_with(b"..")
            })
        })
}

fn log_loaded(what: &str, settings: &TlsSettings, cert: &tls::LoadedCert) {
    let not_after = jiff::Timestamp::from_second(cert.not_after)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| cert.not_after.to_string());
    tracing::info!(
        serial = %cert.serial,
        not_after = %not_after,
        cert_file = %settings.cert_file.display(),
        "{what}"
    );
}

/// Watches the certificate directories and polls every `poll_interval`
/// until `stop` is cancelled. Watch failures fall back to polling alone.
pub fn spawn_reloader(state: Arc<TlsState>, poll_interval: Duration, stop: CancellationToken) {
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let names = state.watched_names();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && is_relevant(&event, &names)
        {
            let _ = events_tx.send(());
        }
    });
    let watcher = match watcher {
        Ok(mut watcher) => {
            for dir in state.watched_dirs() {
                if let Err(err) = watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!(dir = %dir.display(), error = %err, "cannot watch certificate directory; polling only");
                }
            }
            Some(watcher)
        }
        Err(err) => {
            tracing::warn!(error = %err, "file watching unavailable; polling certificates only");
            None
        }
    };
    tokio::spawn(async move {
        let _watcher = watcher; // dropped (unwatched) when the task ends
        let mut poll = tokio::time::interval(poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        poll.tick().await; // the first tick is immediate
        let mut watching = true;
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                event = events_rx.recv(), if watching => {
                    if event.is_none() {
                        // Watcher gone: keep polling.
                        watching = false;
                        continue;
                    }
                    // A swap is several events; let it settle, then read once.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while events_rx.try_recv().is_ok() {}
                }
                _ = poll.tick() => {}
            }
            let state = state.clone();
            let _ = tokio::task::spawn_blocking(move || state.reload()).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use notify::event::{AccessKind, CreateKind, EventKind, ModifyKind};

    use super::is_relevant;

    #[test]
    fn only_events_about_our_files_or_secret_swaps_trigger_a_reload() {
        let names: BTreeSet<std::ffi::OsString> =
            ["tls.crt".into(), "tls.key".into()].into_iter().collect();
        let event = |kind: EventKind, path: &str| notify::Event::new(kind).add_path(path.into());
        let modify = EventKind::Modify(ModifyKind::Any);
        assert!(is_relevant(&event(modify, "/certs/tls.crt"), &names));
        assert!(is_relevant(
            &event(EventKind::Create(CreateKind::Any), "/certs/..data_tmp"),
            &names
        ));
        assert!(is_relevant(
            &event(modify, "/certs/..2026_11_25_13_00_00.123"),
            &names
        ));
        assert!(is_relevant(&notify::Event::new(modify), &names));
        assert!(!is_relevant(&event(modify, "/certs/serve.log"), &names));
        assert!(!is_relevant(
            &event(EventKind::Access(AccessKind::Any), "/certs/tls.crt"),
            &names
        ));
    }
}
