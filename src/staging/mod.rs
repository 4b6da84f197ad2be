//! Image staging: fetch a credentialed / self-signed image ourselves, check it
//! is ISO 9660, store it content-addressed and serve it to Ironic at an
//! unguessable per-host URL, so credentials never reach Ironic.
//!
//! Contract used by the reconciler.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::model::SecretCredentials;

#[derive(Clone, Debug)]
pub struct StagingConfig {
    pub cache_dir: PathBuf,
    pub max_image_size: u64,
    pub image_ca_file: Option<PathBuf>,
    /// Where the image server listens.
    pub listen: SocketAddr,
    /// Base URL under which Ironic reaches that listener.
    pub public_url: url::Url,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
}

/// One host's image to stage.
#[derive(Clone, Debug)]
pub struct StageRequest {
    /// `namespace/name` of the host.
    pub host_key: String,
    /// The user's URL, unchanged.
    pub url: String,
    pub credentials: Option<SecretCredentials>,
    /// `disableCertificateVerification: true`.
    pub insecure: bool,
}

/// A staged image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedImage {
    pub digest: String,
    pub size: u64,
    /// URL handed to Ironic (per-host token + digest).
    pub ironic_url: String,
    /// The ISO carries an El Torito boot record.
    pub bootable: bool,
}

/// Why staging failed. Messages never contain credentials.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum StageError {
    #[error("image server refused the credentials (HTTP {0})")]
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
