//! Downloading a user's image: basic auth on the original origin only,
//! hand-followed redirects, size cap, early ISO check, streamed to a
//! temporary file that disappears unless the download completed.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use reqwest::StatusCode;
use reqwest::header::LOCATION;
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::io::{AsyncWriteExt, BufWriter};
use url::Url;

use super::iso;
use super::{Blob, StageError, Staging};
use crate::model::SecretCredentials;
use crate::telemetry::redact_url;

/// Redirect hops followed before giving up (curl and browsers use ~20; image
/// hosts rarely need more than 2).
pub const MAX_REDIRECTS: usize = 10;
const WRITE_BUFFER: usize = 1024 * 1024;

/// Checks the user's URL before any network use (the parser already refuses
/// an http(s) URL without a host). The userinfo part is refused: credentials
/// belong in the Secret, and a URL carrying them would be echoed in places
/// we do not control.
pub(super) fn parse_user_url(raw: &str) -> Result<Url, StageError> {
    let url = Url::parse(raw.trim()).map_err(|err| {
        StageError::Download(format!("invalid image URL {}: {err}", redact_url(raw)))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(StageError::Download(format!(
            "unsupported URL scheme {:?}: only http and https images can be staged",
            url.scheme()
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(StageError::Download(
            "the image URL embeds credentials: put them in the Secret named by credentialsName instead".into(),
        ));
    }
    Ok(url)
}

/// Where a redirect may lead: http(s) only, never from https down to http,
/// never with userinfo.
fn next_hop(current: &Url, location: &str) -> Result<Url, StageError> {
    let next = current.join(location).map_err(|err| {
        StageError::Download(format!(
            "redirect from {} to an invalid location: {err}",
            redact_url(current.as_str())
        ))
    })?;
    match (current.scheme(), next.scheme()) {
        (_, "https") | ("http", "http") => {}
        ("https", "http") => {
            return Err(StageError::Download(format!(
                "refusing redirect from https to plain http ({})",
                redact_url(next.as_str())
            )));
        }
        (_, other) => {
            return Err(StageError::Download(format!(
                "refusing redirect to unsupported scheme {other:?}: only http and https are followed"
            )));
        }
    }
    if !next.username().is_empty() || next.password().is_some() {
        return Err(StageError::Download(
            "refusing redirect to a URL that embeds credentials".into(),
        ));
    }
    Ok(next)
}

/// Sends the credentials only to the exact origin (scheme, host, port) the
/// user named: `127.0.0.1` and `localhost` are different hosts.
fn credentials_allowed(original: &Url, target: &Url) -> bool {
    original.origin() == target.origin()
}

/// Bytes received so far of a download, and the announced size (0 when
/// unknown), readable while it runs.
#[derive(Debug, Default)]
pub(super) struct Progress {
    done: AtomicU64,
    total: AtomicU64,
}

impl Progress {
    pub(super) fn running(&self) -> Staging {
        let total = self.total.load(Relaxed);
        let done = self.done.load(Relaxed);
        Staging::Running {
            done,
            total: (total > 0).then_some(total),
        }
    }
}

/// Fetches `url` into a temporary file in `tmp_dir`, following redirects by
/// hand. The file disappears unless the caller persists it, so an error or a
/// cancelled download never leaves a partial image behind.
pub(super) async fn download(
    client: &reqwest::Client,
    url: &Url,
    credentials: Option<&SecretCredentials>,
    max_size: u64,
    tmp_dir: &Path,
    progress: &Progress,
) -> Result<(NamedTempFile, Blob), StageError> {
    let response = open(client, url, credentials).await?;
    let announced = response.content_length();
    if announced.is_some_and(|announced| announced > max_size) {
        return Err(StageError::TooLarge { limit: max_size });
    }
    progress.total.store(announced.unwrap_or(0), Relaxed);
    stream_to_file(response, announced, max_size, tmp_dir, progress).await
}

/// Follows redirects until a 2xx answer and returns it (body unread).
async fn open(
    client: &reqwest::Client,
    url: &Url,
    credentials: Option<&SecretCredentials>,
) -> Result<reqwest::Response, StageError> {
    let mut current = url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let mut request = client.get(current.clone());
        if let Some(creds) = credentials
            && credentials_allowed(url, &current)
        {
            request = request.basic_auth(&creds.username, Some(&creds.password));
        }
        let response = request
            .send()
            .await
            .map_err(|err| classify(&err, &current))?;
        let status = response.status();
        if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
            let location = response
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    StageError::Download(format!(
                        "HTTP {status} without a usable Location header from {}",
                        redact_url(current.as_str())
                    ))
                })?;
            current = next_hop(&current, location)?;
            continue;
        }
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            if credentials.is_some() && credentials_allowed(url, &current) {
                return Err(StageError::Unauthorized(status.as_u16()));
            }
            return Err(StageError::Download(format!(
                "HTTP {status} from {}: the server wants credentials{}",
                redact_url(current.as_str()),
                if credentials.is_some() {
                    " and they are not sent to a host other than the one in the URL"
                } else {
                    " (set credentialsName)"
                }
            )));
        }
        if !status.is_success() {
            return Err(StageError::Download(format!(
                "HTTP {status} from {}",
                redact_url(current.as_str())
            )));
        }
        return Ok(response);
    }
    Err(StageError::Download(format!(
        "more than {MAX_REDIRECTS} redirects starting at {}",
        redact_url(url.as_str())
    )))
}

/// Streams the body to the file, hashing it and checking the ISO signature
/// as soon as it arrives.
async fn stream_to_file(
    mut response: reqwest::Response,
    announced: Option<u64>,
    max_size: u64,
    tmp_dir: &Path,
    progress: &Progress,
) -> Result<(NamedTempFile, Blob), StageError> {
    let shown_url = redact_url(response.url().as_str()).into_owned();
    let io_error =
        |err: std::io::Error| StageError::Io(format!("writing the image to the cache: {err}"));
    let tmp = NamedTempFile::new_in(tmp_dir).map_err(io_error)?;
    let file = tokio::fs::File::from_std(tmp.as_file().try_clone().map_err(io_error)?);
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, file);
    let mut hasher = Sha256::new();
    let mut header = Vec::with_capacity(iso::HEADER_LEN);
    let mut size: u64 = 0;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(err) if err.is_timeout() => {
                return Err(StageError::Download(format!(
                    "transfer stalled (read timeout) after {size} bytes of {shown_url}"
                )));
            }
            Err(err) => {
                return Err(StageError::Download(format!(
                    "connection lost after {size} bytes of {shown_url}: {}",
                    error_chain(&err, true)
                )));
            }
        };
        size += chunk.len() as u64;
        progress.done.store(size, Relaxed);
        if size > max_size {
            return Err(StageError::TooLarge { limit: max_size });
        }
        if header.len() < iso::HEADER_LEN {
            let wanted = (iso::HEADER_LEN - header.len()).min(chunk.len());
            let had = header.len();
            header.extend_from_slice(&chunk[..wanted]);
            // A large non-ISO download is abandoned after 32 KiB instead of
            // filling the disk first.
            if had < iso::SIGNATURE_END && header.len() >= iso::SIGNATURE_END {
                iso::inspect(&header).map_err(StageError::NotIso)?;
            }
        }
        hasher.update(&chunk);
        writer.write_all(&chunk).await.map_err(io_error)?;
    }
    if let Some(announced) = announced
        && announced != size
    {
        return Err(StageError::Download(format!(
            "connection lost: received {size} of {announced} bytes of {shown_url}"
        )));
    }
    let info = iso::inspect(&header).map_err(StageError::NotIso)?;
    writer.flush().await.map_err(io_error)?;
    writer.into_inner().sync_all().await.map_err(io_error)?;
    let blob = Blob {
        hex: hex::encode(hasher.finalize()),
        size,
        bootable: info.bootable,
    };
    Ok((tmp, blob))
}

/// Turns a reqwest error into a status-fit message without the URL's
/// secrets (ours never carry userinfo; redacted anyway).
fn classify(err: &reqwest::Error, url: &Url) -> StageError {
    let shown = redact_url(url.as_str());
    if let Some(tls) = find_tls_error(err) {
        let hint = match tls {
            rustls::Error::InvalidCertificate(_) => {
                " (trust its CA with --image-ca-file, or set disableCertificateVerification: true on the host)"
            }
            _ => "",
        };
        return StageError::Tls(format!("{shown}: {tls}{hint}"));
    }
    if err.is_timeout() {
        return StageError::Download(format!("timed out fetching {shown}"));
    }
    if err.is_connect() {
        return StageError::Download(format!(
            "cannot connect to {shown}: {}",
            error_chain(err, false)
        ));
    }
    StageError::Download(format!("fetching {shown}: {}", error_chain(err, false)))
}

/// The rustls error somewhere in the source chain, if the failure was TLS.
fn find_tls_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    // io::Error::source() skips its payload (hyper-rustls nests io errors
    // around the rustls error): descend into the payload itself.
    std::iter::successors(Some(err), |e| match e.downcast_ref::<std::io::Error>() {
        Some(io) => io
            .get_ref()
            .map(|inner| inner as &(dyn std::error::Error + 'static)),
        None => e.source(),
    })
    .find_map(|e| e.downcast_ref::<rustls::Error>())
}

/// "a: b: c" from an error's sources (not reqwest's own text: it carries the
/// URL), without repeats or the documentation links rustls appends; only "c"
/// when `innermost` (for a broken body the layers above it only say "error
/// reading a body").
fn error_chain(err: &reqwest::Error, innermost: bool) -> String {
    let mut parts = std::error::Error::source(err)
        .map(crate::text::error_chain)
        .unwrap_or_default();
    let text = match (parts.is_empty(), innermost) {
        (true, _) if err.is_body() => "body error".to_string(),
        (true, _) => "request failed".to_string(),
        (false, true) => parts.pop().unwrap_or_default(),
        (false, false) => parts.join(": "),
    };
    redact_url(&text).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn user_url_must_be_http_without_userinfo() {
        assert!(parse_user_url("https://h.example/a.iso").is_ok());
        assert!(parse_user_url(" http://h.example/a.iso ").is_ok());
        let err = parse_user_url("https://bob:hunter2@h.example/a.iso")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("credentialsName") && !err.contains("hunter2"),
            "{err}"
        );
        assert!(
            parse_user_url("ftp://h.example/a.iso")
                .unwrap_err()
                .to_string()
                .contains("ftp")
        );
        assert!(parse_user_url("not a url").is_err());
        assert!(parse_user_url("file:///etc/passwd").is_err());
    }

    #[test]
    fn invalid_url_message_redacts_userinfo() {
        let err = parse_user_url("https://bob:hunter2@[bad/a.iso")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn redirects_stay_on_http_and_https() {
        let here = url("https://a.example/x/img.iso");
        assert_eq!(
            next_hop(&here, "/y.iso").unwrap().as_str(),
            "https://a.example/y.iso"
        );
        assert_eq!(
            next_hop(&here, "other.iso").unwrap().as_str(),
            "https://a.example/x/other.iso"
        );
        assert!(next_hop(&here, "https://b.example/z.iso").is_ok());
        assert!(
            next_hop(&here, "http://b.example/z.iso")
                .unwrap_err()
                .to_string()
                .contains("plain http")
        );
        assert!(
            next_hop(&here, "file:///etc/shadow")
                .unwrap_err()
                .to_string()
                .contains("\"file\"")
        );
        assert!(next_hop(&here, "ftp://b.example/z.iso").is_err());
        assert!(next_hop(&here, "https://u:p@b.example/z.iso").is_err());
        let plain = url("http://a.example/img.iso");
        assert!(next_hop(&plain, "http://b.example/z.iso").is_ok());
        assert!(next_hop(&plain, "https://b.example/z.iso").is_ok());
    }

    #[test]
    fn credentials_only_go_to_the_same_origin() {
        let original = url("https://127.0.0.1:8443/img.iso");
        assert!(credentials_allowed(
            &original,
            &url("https://127.0.0.1:8443/other.iso")
        ));
        assert!(!credentials_allowed(
            &original,
            &url("https://localhost:8443/img.iso")
        ));
        assert!(!credentials_allowed(
            &original,
            &url("https://127.0.0.1:9443/img.iso")
        ));
        assert!(!credentials_allowed(
            &original,
            &url("http://127.0.0.1:8443/img.iso")
        ));
    }
}
