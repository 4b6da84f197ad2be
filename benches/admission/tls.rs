//! Certificates for the run (generated before any server starts) and the
//! TLS client configuration of the load client.

use std::{net::IpAddr, path::Path, sync::Arc};

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::{ClientConfig, RootCertStore, client::Resumption, pki_types::CertificateDer};

/// PEM files of one CA and one serving certificate for 127.0.0.1 / localhost.
pub(crate) struct RunCerts {
    pub ca_der: CertificateDer<'static>,
    pub cert_file: std::path::PathBuf,
    pub key_file: std::path::PathBuf,
}

/// Writes a fresh CA + serving certificate (ECDSA P-256, rcgen's default
/// key type) into `dir`.
pub(crate) fn generate(dir: &Path) -> anyhow::Result<RunCerts> {
    let ca_key = KeyPair::generate().context("CA key")?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).context("CA params")?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "metal3-dataimage bench CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).context("CA certificate")?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().context("serving key")?;
    let mut params =
        CertificateParams::new(vec!["localhost".to_string()]).context("serving params")?;
    params
        .distinguished_name
        .push(DnType::CommonName, "metal3-dataimage-webhook");
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::from([127, 0, 0, 1])));
    let cert = params
        .signed_by(&key, &issuer)
        .context("serving certificate")?;

    let cert_file = dir.join("tls.crt");
    let key_file = dir.join("tls.key");
    std::fs::write(&cert_file, cert.pem()).context("write tls.crt")?;
    std::fs::write(&key_file, key.serialize_pem()).context("write tls.key")?;
    std::fs::write(dir.join("ca.crt"), ca_cert.pem()).context("write ca.crt")?;
    Ok(RunCerts {
        ca_der: ca_cert.der().clone(),
        cert_file,
        key_file,
    })
}

/// A client like kube-apiserver's: TLS 1.2/1.3, ALPN http/1.1, and no session
/// resumption (Go's http.Transport keeps no session cache by default), so a
/// new connection always costs a full handshake.
pub(crate) fn client_config(ca: &CertificateDer<'static>) -> anyhow::Result<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.clone()).context("add bench CA")?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}
