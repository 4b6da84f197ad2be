//! `metal3-dataimage certs` as an operator runs it, and the development
//! certificates of `serve`: the files it writes complete a real TLS handshake
//! (rustls, loopback) for the names the API server / curl use, and nothing
//! else.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

use metal3_dataimage::certs;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

fn certs_command(args: &[&str], out: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_metal3-dataimage"))
        .arg("certs")
        .args(args)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Serve one TLS connection on loopback with `cert_file`/`key_file`, connect
/// to it trusting only `ca_file` and asking for `server_name`; `Ok` when the
/// handshake verifies and a byte makes the round trip.
async fn handshake(dir: &Path, server_name: &str, connect_to: IpAddr) -> Result<(), String> {
    let chain = vec![CertificateDer::from_pem_file(dir.join("tls.crt")).unwrap()];
    let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).unwrap();
    let server_config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(connect_to, 0))
        .await
        .unwrap();
    let address = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        if let Ok(mut tls) = acceptor.accept(tcp).await {
            let _ = tls.write_all(b"k").await;
            let _ = tls.shutdown().await;
        }
    });

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(dir.join("ca.crt")).unwrap())
        .unwrap();
    let client_config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let result = async {
        let mut tls = connector
            .connect(name, tcp)
            .await
            .map_err(|err| err.to_string())?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte)
            .await
            .map_err(|err| err.to_string())?;
        if &byte == b"k" {
            Ok(())
        } else {
            Err("wrong byte".to_string())
        }
    }
    .await;
    server.abort();
    result
}

#[tokio::test]
async fn cluster_certificate_serves_tls_for_the_service_names_only() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    let output = certs_command(&["--service", "hook", "--namespace", "infra"], &out);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("hook.infra.svc, hook.infra.svc.cluster.local"),
        "{stdout}"
    );

    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for name in ["hook.infra.svc", "hook.infra.svc.cluster.local"] {
        handshake(&out, name, loopback)
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    for name in ["hook.other.svc", "localhost", "hook"] {
        let err = handshake(&out, name, loopback).await.expect_err(name);
        assert!(
            err.contains("certificate") || err.contains("Certificate"),
            "{name}: {err}"
        );
    }
}

#[tokio::test]
async fn flags_come_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("from-env");
    let output = Command::new(env!("CARGO_BIN_EXE_metal3-dataimage"))
        .arg("certs")
        .env("METAL3_DATAIMAGE_SERVICE", "envhook")
        .env("METAL3_DATAIMAGE_NAMESPACE", "envns")
        .env("METAL3_DATAIMAGE_OUT", &out)
        .env("METAL3_DATAIMAGE_VALIDITY_DAYS", "10")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    handshake(&out, "envhook.envns.svc", IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .unwrap();
    let kustomization = std::fs::read_to_string(out.join("kustomization.yaml")).unwrap();
    assert!(kustomization.contains("namespace: envns"));
}

#[test]
fn bad_input_is_a_clear_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("never");
    for (args, expected) in [
        (
            &["--service", "a/b", "--namespace", "ns"][..],
            "valid DNS name",
        ),
        (
            &[
                "--service",
                "ok",
                "--namespace",
                "ns",
                "--validity-days",
                "0",
            ][..],
            "--validity-days",
        ),
        (
            &[
                "--service",
                "ok",
                "--namespace",
                "ns",
                "--validity-days",
                "many",
            ][..],
            "--validity-days",
        ),
    ] {
        let output = certs_command(args, &out);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
    // An output path that cannot be a directory.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let output = certs_command(&[], &file);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains(&file.display().to_string()));
}

#[test]
fn renewal_keeps_the_ca_and_the_ca_bundle() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("certs");
    assert!(certs_command(&[], &out).status.success());
    let read = |file: &str| std::fs::read_to_string(out.join(file)).unwrap();
    let (ca, patch, cert) = (
        read("ca.crt"),
        read(certs::VALIDATING_CA_PATCH_FILE),
        read("tls.crt"),
    );
    let output = certs_command(&[], &out);
    assert!(String::from_utf8_lossy(&output.stdout).contains("reusing the CA"));
    assert_eq!(read("ca.crt"), ca);
    assert_eq!(read(certs::VALIDATING_CA_PATCH_FILE), patch);
    assert_ne!(read("tls.crt"), cert);

    // A CA key that does not match its certificate is not reused.
    let stray = certs::generate_ca(
        "stray",
        std::time::Duration::from_secs(86400),
        std::time::SystemTime::now(),
    )
    .unwrap();
    std::fs::write(out.join("ca.key"), stray.key_pem).unwrap();
    let output = certs_command(&[], &out);
    assert!(String::from_utf8_lossy(&output.stdout).contains("wrote a new CA"));
    assert_ne!(read("ca.crt"), ca);
}

#[tokio::test]
async fn dev_certificates_serve_localhost_and_both_loopback_addresses() {
    let dir = tempfile::tempdir().unwrap();
    let dev = certs::ensure_dev_certs(dir.path()).unwrap();
    assert!(dev.generated);
    handshake(dir.path(), "localhost", IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .unwrap();
    handshake(dir.path(), "127.0.0.1", IpAddr::V4(Ipv4Addr::LOCALHOST))
        .await
        .unwrap();
    // ::1 may be unavailable in some sandboxes; the name check itself does not need it.
    let v6 = "::1".parse().unwrap();
    let v6_bind = if std::net::TcpListener::bind(SocketAddr::new(v6, 0)).is_ok() {
        v6
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    };
    handshake(dir.path(), "::1", v6_bind).await.unwrap();
    assert!(
        handshake(dir.path(), "example.com", IpAddr::V4(Ipv4Addr::LOCALHOST))
            .await
            .is_err()
    );
}
