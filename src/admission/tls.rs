//! TLS for the webhook listener: protocol versions and cipher suites (named
//! like the baremetal-operator's flags), the serving certificate behind a
//! hot-swappable resolver, optional client-certificate verification, ALPN.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, bail};
use arc_swap::ArcSwap;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme, SupportedCipherSuite,
    SupportedProtocolVersion,
};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::ServeArgs;

/// `--tls-min-version`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMinVersion {
    #[default]
    #[value(name = "TLS12", alias = "VersionTLS12", alias = "1.2")]
    Tls12,
    #[value(name = "TLS13", alias = "VersionTLS13", alias = "1.3")]
    Tls13,
}

impl TlsMinVersion {
    fn versions(self) -> &'static [&'static SupportedProtocolVersion] {
        match self {
            Self::Tls12 => rustls::DEFAULT_VERSIONS,
            Self::Tls13 => {
                static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
                &TLS13_ONLY
            }
        }
    }
}

/// Installs the ring provider as the process default (idempotent). rustls is
/// built with both ring and aws-lc-rs, so it cannot pick one from its crate
/// features: every process installs ring before any TLS client is built (the
/// kube and reqwest clients use the default). The webhook's own listener does
/// not use it: [`crypto_provider`] hands aws-lc-rs to its `ServerConfig`.
pub(crate) fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// IANA name of a suite as rustls spells it (`TLS13_...` for TLS 1.3).
fn rustls_name(suite: &SupportedCipherSuite) -> String {
    format!("{:?}", suite.suite())
}

/// Maps IANA/Go spellings to rustls' names.
fn canonical_suite_name(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    match upper.as_str() {
        "TLS_AES_128_GCM_SHA256" => "TLS13_AES_128_GCM_SHA256".to_string(),
        "TLS_AES_256_GCM_SHA384" => "TLS13_AES_256_GCM_SHA384".to_string(),
        "TLS_CHACHA20_POLY1305_SHA256" => "TLS13_CHACHA20_POLY1305_SHA256".to_string(),
        // Go's short names for the ChaCha20 suites.
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305" => {
            format!("{upper}_SHA256")
        }
        _ => upper,
    }
}

/// The cipher suites for `--tls-cipher-suites`. As in Go (and the
/// baremetal-operator), the list restricts TLS 1.2; TLS 1.3 suites stay all
/// enabled unless TLS 1.3 names are listed too. Names rustls does not
/// implement (CBC, RSA key exchange, 3DES: all insecure) are skipped with a
/// warning; unknown names are an error.
pub(crate) fn select_cipher_suites(
    names: &[String],
    min_version: TlsMinVersion,
) -> anyhow::Result<Vec<SupportedCipherSuite>> {
    let all = rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES;
    if names.iter().all(|name| name.trim().is_empty()) {
        return Ok(all.to_vec());
    }
    let mut chosen: Vec<SupportedCipherSuite> = Vec::new();
    let mut skipped = Vec::new();
    for name in names.iter().filter(|name| !name.trim().is_empty()) {
        let wanted = canonical_suite_name(name);
        match all.iter().find(|suite| rustls_name(suite) == wanted) {
            Some(suite) if !chosen.contains(suite) => chosen.push(*suite),
            Some(_) => {}
            None if wanted.starts_with("TLS_") && wanted.contains("_WITH_") => {
                skipped.push(name.trim());
            }
            None => bail!(
                "unknown TLS cipher suite {name:?}; supported: {}",
                all.iter().map(rustls_name).collect::<Vec<_>>().join(", ")
            ),
        }
    }
    if !skipped.is_empty() {
        tracing::warn!(
            suites = skipped.join(","),
            "ignoring TLS cipher suites that rustls does not implement (not AEAD or no forward secrecy)"
        );
    }
    let is_tls13 = |s: &&SupportedCipherSuite| s.version() == &rustls::version::TLS13;
    let (tls13, tls12): (Vec<_>, Vec<_>) = chosen.into_iter().partition(|s| is_tls13(&s));
    // TLS 1.3 names restrict TLS 1.3; without them, all of its suites stay.
    let tls13: Vec<_> = (all.iter().filter(is_tls13))
        .filter(|s| tls13.is_empty() || tls13.contains(s))
        .copied()
        .collect();
    if min_version == TlsMinVersion::Tls13 {
        return Ok(tls13);
    }
    if tls12.is_empty() {
        bail!(
            "--tls-cipher-suites leaves no usable TLS 1.2 cipher suite (use --tls-min-version TLS13 for TLS 1.3 only)"
        );
    }
    Ok([tls13, tls12].concat())
}

/// The listener's crypto provider, restricted to the chosen suites: aws-lc-rs
/// (its AES-GCM and P-256 signing cost less CPU per review and per handshake
/// than ring's; BENCHMARKS.md). Passed explicitly to every `ServerConfig`,
/// so it does not depend on the process default.
pub(crate) fn crypto_provider(args: &ServeArgs) -> anyhow::Result<Arc<CryptoProvider>> {
    let cipher_suites = select_cipher_suites(&args.tls_cipher_suites, args.tls_min_version)?;
    Ok(Arc::new(CryptoProvider {
        cipher_suites,
        ..rustls::crypto::aws_lc_rs::default_provider()
    }))
}

/// A loaded serving certificate with what we log and export about it.
pub(crate) struct LoadedCert {
    pub(crate) certified: Arc<CertifiedKey>,
    pub(crate) serial: String,
    /// notAfter as a Unix timestamp.
    pub(crate) not_after: i64,
}

/// Reads the certificate chain and key files.
pub(crate) fn read_cert_files(
    cert_file: &Path,
    key_file: &Path,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let read =
        |path: &Path| std::fs::read(path).with_context(|| format!("reading {}", path.display()));
    Ok((read(cert_file)?, read(key_file)?))
}

/// The one PEM loader (webhook and image server): a certificate chain (at
/// least one certificate) and a private key.
pub(crate) fn parse_pem_pair(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
    let chain = pem_certificates(cert_pem).context("certificate file")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .context("key file holds no usable PEM private key")?;
    Ok((chain, key))
}

/// The certificates of a PEM file; none is an error.
fn pem_certificates(pem: &[u8]) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .context("not valid PEM")?;
    if certs.is_empty() {
        bail!("holds no certificate");
    }
    Ok(certs)
}

/// Parses a PEM certificate chain + key and checks that they belong together.
pub(crate) fn parse_cert(
    cert_pem: &[u8],
    key_pem: &[u8],
    provider: &CryptoProvider,
) -> anyhow::Result<LoadedCert> {
    let (chain, key) = parse_pem_pair(cert_pem, key_pem)?;
    let (serial, not_after) = describe(&chain[0])?;
    let certified =
        CertifiedKey::from_der(chain, key, provider).context("certificate and key do not match")?;
    // from_der tolerates "cannot tell"; insist on a positive match.
    certified
        .keys_match()
        .context("certificate and key do not match")?;
    Ok(LoadedCert {
        certified: Arc::new(certified),
        serial,
        not_after,
    })
}

/// Serial (hex, colon-free) and notAfter of a DER certificate.
fn describe(cert: &CertificateDer<'_>) -> anyhow::Result<(String, i64)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .context("certificate is not valid X.509")?;
    Ok((
        parsed
            .tbs_certificate
            .raw_serial_as_string()
            .replace(':', ""),
        parsed.validity().not_after.timestamp(),
    ))
}

/// The client CA bundle for mTLS and its earliest notAfter.
pub(crate) fn parse_client_ca(pem: &[u8]) -> anyhow::Result<(Arc<RootCertStore>, i64)> {
    let certs = pem_certificates(pem).context("client CA file")?;
    let mut roots = RootCertStore::empty();
    let mut not_after = i64::MAX;
    for cert in certs {
        not_after = not_after.min(describe(&cert)?.1);
        roots
            .add(cert)
            .context("client CA certificate is not usable as a trust anchor")?;
    }
    Ok((Arc::new(roots), not_after))
}

/// Serves whatever certificate was loaded last; swapped on reload without
/// touching the `ServerConfig` (session cache and ALPN stay).
#[derive(Debug)]
pub(crate) struct CertResolver(pub(crate) ArcSwap<CertifiedKey>);

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Builds the rustls server configuration.
pub(crate) fn server_config(
    args: &ServeArgs,
    provider: &Arc<CryptoProvider>,
    resolver: Arc<CertResolver>,
    client_ca: Option<&Arc<RootCertStore>>,
) -> anyhow::Result<Arc<ServerConfig>> {
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(args.tls_min_version.versions())
        .context("TLS versions and cipher suites do not fit together")?;
    let builder = match client_ca {
        Some(roots) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .context("building the client certificate verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(resolver);
    // `h2` first when enabled: the API server speaks HTTP/2 whenever we select it.
    config.alpn_protocols = if args.enable_http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    Ok(Arc::new(config))
}

/// Runs one in-memory TLS handshake against `config`, so the first real
/// client does not pay for seeding randomness and initialising the crypto
/// code. Failures (e.g. mTLS refusing the anonymous client) are harmless.
pub(crate) async fn warm_up(
    config: Arc<ServerConfig>,
    provider: &Arc<CryptoProvider>,
) -> anyhow::Result<()> {
    let client_config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyServer(provider.clone())))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let name = ServerName::try_from("localhost")?;
    let (client, server) = tokio::io::duplex(64 * 1024);
    let (client, server) = tokio::join!(
        connector.connect(name, client),
        tokio_rustls::TlsAcceptor::from(config).accept(server)
    );
    client?;
    server?;
    Ok(())
}

/// Only for the in-memory warm-up handshake with ourselves: the server
/// side is what is warmed up, so nothing is verified.
#[derive(Debug)]
struct AcceptAnyServer(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(suites: &[SupportedCipherSuite]) -> Vec<String> {
        suites.iter().map(rustls_name).collect()
    }

    #[test]
    fn default_suites_are_rustls_defaults() {
        assert_eq!(
            select_cipher_suites(&[], TlsMinVersion::Tls12)
                .unwrap()
                .len(),
            9
        );
    }

    #[test]
    fn suite_list_restricts_tls12_and_keeps_tls13() {
        let chosen = select_cipher_suites(
            &[
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".into(),
                "tls_ecdhe_ecdsa_with_chacha20_poly1305".into(),
                "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA".into(),
            ],
            TlsMinVersion::Tls12,
        )
        .unwrap();
        let chosen = names(&chosen);
        assert_eq!(chosen.len(), 5, "{chosen:?}");
        assert!(chosen.contains(&"TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256".to_string()));
        assert!(chosen.contains(&"TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256".to_string()));
        assert!(chosen.iter().filter(|n| n.starts_with("TLS13_")).count() == 3);
    }

    #[test]
    fn tls13_names_restrict_tls13() {
        let chosen =
            select_cipher_suites(&["TLS_AES_256_GCM_SHA384".into()], TlsMinVersion::Tls13).unwrap();
        assert_eq!(names(&chosen), vec!["TLS13_AES_256_GCM_SHA384".to_string()]);
    }

    #[test]
    fn unknown_or_unusable_lists_are_errors() {
        assert!(select_cipher_suites(&["NOPE".into()], TlsMinVersion::Tls12).is_err());
        assert!(
            select_cipher_suites(
                &["TLS_RSA_WITH_AES_128_CBC_SHA".into()],
                TlsMinVersion::Tls12
            )
            .is_err()
        );
    }

    #[tokio::test]
    async fn the_warm_up_handshake_completes() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let cert = params.self_signed(&key).unwrap();
        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from(["metal3-dataimage", "serve"]).unwrap();
        let crate::cli::Command::Serve(args) = cli.command else {
            unreachable!("serve parses as serve")
        };
        let provider = crypto_provider(&args).unwrap();
        let pems = (cert.pem(), key.serialize_pem());
        let loaded = parse_cert(pems.0.as_bytes(), pems.1.as_bytes(), &provider).unwrap();
        let resolver = Arc::new(CertResolver(ArcSwap::from(loaded.certified)));
        let config = server_config(&args, &provider, resolver, None).unwrap();
        warm_up(config, &provider).await.unwrap();
    }
}
