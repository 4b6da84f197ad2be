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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use notify::Watcher as _;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;

use super::Settings;
use super::metrics::{CertificateLabels, Metrics};
use super::tls::{self, CertResolver};

const SERVING: CertificateLabels = CertificateLabels {
    certificate: "serving",
};
const CLIENT_CA: CertificateLabels = CertificateLabels {
    certificate: "client-ca",
};

/// Digests of the file contents last loaded and last rejected, so an
/// unchanged (or unchanged-and-bad) file is neither reloaded nor reported again.
#[derive(Default)]
struct Seen {
    loaded: Option<[u8; 32]>,
    failed: Option<[u8; 32]>,
}

/// The live TLS configuration.
pub(crate) struct TlsState {
    settings: Settings,
    provider: Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
    config: ArcSwap<ServerConfig>,
    /// Serving certificate, client CA.
    seen: Mutex<[Seen; 2]>,
    /// Also holds the notAfter of the certificate being served.
    metrics: Metrics,
}

/// SHA-256 of files' bytes (with their lengths, so the split matters).
fn digest_of(parts: &[Vec<u8>]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    hasher.finalize().into()
}

impl TlsState {
    /// Loads the certificate (and client CA); any problem here is fatal.
    pub(crate) fn load(settings: Settings, metrics: Metrics) -> anyhow::Result<Self> {
        let provider = tls::crypto_provider(&settings.args)?;
        // Export the error counters at 0 from the start (alerts on `increase()`).
        let _ = metrics.certificate_read_errors.get_or_create(&SERVING);
        let (cert_pem, key_pem) = tls::read_cert_files(&settings.cert_file, &settings.key_file)?;
        metrics.certificate_reads.get_or_create(&SERVING).inc();
        let cert = tls::parse_cert(&cert_pem, &key_pem, &provider).with_context(|| {
            format!(
                "loading {} and {}",
                settings.cert_file.display(),
                settings.key_file.display()
            )
        })?;
        let mut seen: [Seen; 2] = Default::default();
        seen[0].loaded = Some(digest_of(&[cert_pem, key_pem]));
        let client_ca = match &settings.args.client_ca_file {
            Some(path) => {
                let _ = metrics.certificate_read_errors.get_or_create(&CLIENT_CA);
                metrics.certificate_reads.get_or_create(&CLIENT_CA).inc();
                let pem =
                    std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
                let (roots, not_after) = tls::parse_client_ca(&pem)
                    .with_context(|| format!("loading {}", path.display()))?;
                metrics
                    .certificate_expiry
                    .get_or_create(&CLIENT_CA)
                    .set(not_after);
                seen[1].loaded = Some(digest_of(&[pem]));
                Some(roots)
            }
            None => None,
        };
        let resolver = Arc::new(CertResolver(ArcSwap::new(cert.certified.clone())));
        let args = &settings.args;
        let config = tls::server_config(args, &provider, resolver.clone(), client_ca.as_ref())?;
        metrics
            .certificate_expiry
            .get_or_create(&SERVING)
            .set(cert.not_after);
        log_loaded("loaded serving certificate", &settings.cert_file, &cert);
        Ok(Self {
            seen: Mutex::new(seen),
            settings,
            provider,
            resolver,
            config: ArcSwap::from(config),
            metrics,
        })
    }

    /// The rustls configuration for the next accepted connection.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }

    pub(crate) fn provider(&self) -> &Arc<CryptoProvider> {
        &self.provider
    }

    /// notAfter (Unix seconds) of the certificate being served.
    pub(crate) fn cert_not_after(&self) -> i64 {
        let expiry = self.metrics.certificate_expiry.get_or_create(&SERVING);
        expiry.get()
    }

    /// Re-reads the files; swaps in what changed and is valid.
    fn reload(&self) {
        let settings = &self.settings;
        self.reload_one(0, &[&settings.cert_file, &settings.key_file], |pems| {
            let cert = tls::parse_cert(&pems[0], &pems[1], &self.provider)?;
            self.resolver.0.store(cert.certified.clone());
            log_loaded("reloaded serving certificate", &settings.cert_file, &cert);
            Ok(cert.not_after)
        });
        if let Some(path) = &settings.args.client_ca_file {
            self.reload_one(1, &[path], |pems| {
                let (roots, not_after) = tls::parse_client_ca(&pems[0])?;
                let config = tls::server_config(
                    &settings.args,
                    &self.provider,
                    self.resolver.clone(),
                    Some(&roots),
                )?;
                self.config.store(config);
                tracing::info!(file = %path.display(), not_after, "reloaded client CA");
                Ok(not_after)
            });
        }
    }

    /// Reads `files` (input 0: the serving certificate and key, 1: the
    /// client CA) and, when their bytes are new, lets `apply` parse and
    /// install them; `apply` returns the notAfter to export.
    fn reload_one(
        &self,
        input: usize,
        files: &[&PathBuf],
        apply: impl FnOnce(&[Vec<u8>]) -> anyhow::Result<i64>,
    ) {
        let pems: Result<Vec<Vec<u8>>, _> = files.iter().map(std::fs::read).collect();
        let Ok(pems) = pems else {
            // Mid-swap reads can fail transiently; the next event or poll retries.
            tracing::debug!(file = %files[0].display(), "certificate files not readable right now");
            return;
        };
        let digest = Some(digest_of(&pems));
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let seen = &mut seen[input];
        if digest == seen.loaded || digest == seen.failed {
            return;
        }
        let labels = [&SERVING, &CLIENT_CA][input];
        self.metrics.certificate_reads.get_or_create(labels).inc();
        match apply(&pems) {
            Ok(not_after) => {
                let expiry = self.metrics.certificate_expiry.get_or_create(labels);
                expiry.set(not_after);
                *seen = Seen {
                    loaded: digest,
                    failed: None,
                };
            }
            Err(err) => {
                let errors = self.metrics.certificate_read_errors.get_or_create(labels);
                errors.inc();
                seen.failed = digest;
                tracing::warn!(
                    error = format!("{err:#}"),
                    file = %files[0].display(),
                    "{}",
                    [
                        "new serving certificate rejected; still serving the previous one",
                        "new client CA rejected; still using the previous one",
                    ][input]
                );
            }
        }
    }

    /// The watched files (certificate, key, client CA).
    fn files(&self) -> impl Iterator<Item = &PathBuf> {
        let settings = &self.settings;
        [&settings.cert_file, &settings.key_file]
            .into_iter()
            .chain(&settings.args.client_ca_file)
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

fn log_loaded(what: &str, cert_file: &std::path::Path, cert: &tls::LoadedCert) {
    let not_after = jiff::Timestamp::from_second(cert.not_after)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| cert.not_after.to_string());
    tracing::info!(
        serial = %cert.serial,
        not_after = %not_after,
        cert_file = %cert_file.display(),
        "{what}"
    );
}

/// Watches the certificate directories and polls every `poll_interval`
/// until `stop` is cancelled. Watch failures fall back to polling alone.
pub(crate) fn spawn_reloader(
    state: Arc<TlsState>,
    poll_interval: Duration,
    stop: CancellationToken,
) {
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let names: BTreeSet<_> = (state.files())
        .filter_map(|file| file.file_name().map(ToOwned::to_owned))
        .collect();
    // Directories survive the Secret volume's symlink swaps; the files do not.
    let dirs: BTreeSet<PathBuf> = (state.files())
        .map(|file| match file.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && is_relevant(&event, &names)
        {
            let _ = events_tx.send(());
        }
    });
    let watcher = match watcher {
        Ok(mut watcher) => {
            for dir in dirs {
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
