//! Command-line flags of the image staging component, for the reconcile
//! subcommand to `#[command(flatten)]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

use super::StagingConfig;
use crate::duration::parse_positive_duration;

/// Not the baremetal-operator's 9440/9443: the reconciler may run as its sidecar.
pub const DEFAULT_IMAGE_SERVER_LISTEN: &str = "0.0.0.0:9445";
const DEFAULT_IMAGE_CACHE_DIR: &str = "/var/cache/metal3-dataimage";
const DEFAULT_MAX_IMAGE_SIZE: &str = "4GiB";

#[derive(Clone, Debug, clap::Args)]
pub struct StagingArgs {
    /// Address of the image server Ironic downloads staged images from.
    #[arg(long, env = "METAL3_DATAIMAGE_IMAGE_SERVER_LISTEN", default_value = DEFAULT_IMAGE_SERVER_LISTEN)]
    pub image_server_listen: SocketAddr,
    /// Base URL under which Ironic reaches this replica's image server, e.g.
    /// `http://$(POD_IP):9445`. Without it, hosts whose image needs
    /// credentials or a relaxed TLS policy are not attached.
    #[arg(long, env = "METAL3_DATAIMAGE_IMAGE_SERVER_URL")]
    pub image_server_url: Option<url::Url>,
    /// Where staged images are stored (content-addressed).
    #[arg(long, env = "METAL3_DATAIMAGE_IMAGE_CACHE_DIR", default_value = DEFAULT_IMAGE_CACHE_DIR)]
    pub image_cache_dir: PathBuf,
    /// Largest image staged (B, KiB, MiB, GiB, TiB or KB, MB, GB, TB).
    #[arg(long, env = "METAL3_DATAIMAGE_MAX_IMAGE_SIZE", default_value = DEFAULT_MAX_IMAGE_SIZE, value_parser = parse_size)]
    pub max_image_size: u64,
    /// Extra CA certificates (PEM) trusted when fetching images, besides the system roots.
    #[arg(long, env = "METAL3_DATAIMAGE_IMAGE_CA_FILE")]
    pub image_ca_file: Option<PathBuf>,
    /// Serve staged images over HTTPS with this certificate (PEM chain).
    #[arg(
        long,
        env = "METAL3_DATAIMAGE_IMAGE_SERVER_TLS_CERT_FILE",
        requires = "image_server_tls_key_file"
    )]
    pub image_server_tls_cert_file: Option<PathBuf>,
    /// Private key (PEM) for `--image-server-tls-cert-file`.
    #[arg(
        long,
        env = "METAL3_DATAIMAGE_IMAGE_SERVER_TLS_KEY_FILE",
        requires = "image_server_tls_cert_file"
    )]
    pub image_server_tls_key_file: Option<PathBuf>,
    /// Time allowed to connect to the image's server.
    #[arg(long, env = "METAL3_DATAIMAGE_IMAGE_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub image_connect_timeout: Duration,
    /// Time allowed for each read while downloading an image (a stalled transfer fails after it).
    #[arg(long, env = "METAL3_DATAIMAGE_IMAGE_READ_TIMEOUT", default_value = "60s", value_parser = parse_positive_duration)]
    pub image_read_timeout: Duration,
}

impl StagingArgs {
    /// The staging configuration, or `None` when `--image-server-url` is not
    /// set (staging disabled).
    pub fn config(&self) -> Option<StagingConfig> {
        Some(StagingConfig {
            cache_dir: self.image_cache_dir.clone(),
            max_image_size: self.max_image_size,
            image_ca_file: self.image_ca_file.clone(),
            listen: self.image_server_listen,
            public_url: self.image_server_url.clone()?,
            connect_timeout: self.image_connect_timeout,
            read_timeout: self.image_read_timeout,
            retry_failed: super::RETRY_FAILED,
        })
    }

    /// The image server's TLS configuration, when HTTPS was asked for
    /// (HTTP/1.1 only: Ironic's downloader speaks nothing else).
    pub fn server_tls(&self) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
        use crate::admission::tls::{parse_pem_pair, read_cert_files};
        let (Some(cert_file), Some(key_file)) = (
            &self.image_server_tls_cert_file,
            &self.image_server_tls_key_file,
        ) else {
            return Ok(None);
        };
        let load = || -> anyhow::Result<rustls::ServerConfig> {
            let (cert_pem, key_pem) = read_cert_files(cert_file, key_file)?;
            let cert_name = || cert_file.display().to_string();
            let (certs, key) = parse_pem_pair(&cert_pem, &key_pem).with_context(cert_name)?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .with_context(cert_name)?;
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(config)
        };
        let config = load().context("image server certificate")?;
        Ok(Some(Arc::new(config)))
    }
}

/// Parses `4GiB`, `512MiB`, `1.5GB`, `1000000` (bytes).
fn parse_size(input: &str) -> Result<u64, String> {
    let text = input.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {input:?} (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{input:?} is not a size such as 4GiB"))?;
    let bytes = value * multiplier as f64;
    if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
        return Err(format!("{input:?} is not a usable size (at least 1 byte)"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        staging: StagingArgs,
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4GiB"), Ok(4 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5GB"), Ok(1_500_000_000));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert_eq!(parse_size("2k"), Ok(2048));
        assert!(parse_size("4 parsecs").unwrap_err().contains("unit"));
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("-1GiB").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_positive_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_positive_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(
            parse_positive_duration("1h30m"),
            Ok(Duration::from_secs(5400))
        );
        assert!(parse_positive_duration("0s").is_err());
        assert!(parse_positive_duration("-5s").is_err());
        assert!(parse_positive_duration("soon").is_err());
    }

    #[test]
    fn defaults_and_disabled_without_url() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        assert_eq!(cli.staging.max_image_size, 4 << 30);
        assert_eq!(
            cli.staging.image_cache_dir,
            PathBuf::from(DEFAULT_IMAGE_CACHE_DIR)
        );
        assert_eq!(cli.staging.image_server_listen.port(), 9445);
        assert!(cli.staging.config().is_none());
        assert!(cli.staging.server_tls().unwrap().is_none());
    }

    #[test]
    fn url_enables_staging() {
        let cli = Cli::try_parse_from([
            "x",
            "--image-server-url",
            "http://10.0.0.5:9445",
            "--max-image-size",
            "1GiB",
            "--image-read-timeout",
            "30s",
        ])
        .unwrap();
        let config = cli.staging.config().unwrap();
        assert_eq!(config.public_url.as_str(), "http://10.0.0.5:9445/");
        assert_eq!(config.max_image_size, 1 << 30);
        assert_eq!(config.read_timeout, Duration::from_secs(30));
    }

    #[test]
    fn tls_needs_both_files() {
        assert!(Cli::try_parse_from(["x", "--image-server-tls-cert-file", "/c.pem"]).is_err());
    }

    #[test]
    fn missing_tls_files_are_a_clear_error() {
        let cli = Cli::try_parse_from([
            "x",
            "--image-server-tls-cert-file",
            "/nonexistent/c.pem",
            "--image-server-tls-key-file",
            "/nonexistent/k.pem",
        ])
        .unwrap();
        let err = cli.staging.server_tls().unwrap_err();
        assert!(format!("{err:#}").contains("/nonexistent/c.pem"), "{err:#}");
    }
}
