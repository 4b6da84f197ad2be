//! Certificates: the development CA + serving certificate used by `serve`
//! when no certificate flags are given ([`ensure_dev_certs`]), and
//! `metal3-dataimage certs`, which writes a CA, a serving certificate for the
//! webhook Service and a kustomize component that installs them in a cluster
//! without cert-manager.
//!
//! Pure logic ([`generate_ca`], [`issue_serving_cert`], [`check_serving_cert`],
//! [`render_component`]) is separate from the file I/O around it.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::client::danger::ServerCertVerifier as _;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use serde_json::json;
use x509_parser::certificate::X509Certificate;

/// File names, as cert-manager and the kubelet's Secret volume lay them out.
const CA_CERT_FILE: &str = "ca.crt";
const CA_KEY_FILE: &str = "ca.key";
const TLS_CERT_FILE: &str = "tls.crt";
const TLS_KEY_FILE: &str = "tls.key";
/// The kustomize component written by `certs` (and the caBundle patches it uses).
const KUSTOMIZATION_FILE: &str = "kustomization.yaml";
pub const VALIDATING_CA_PATCH_FILE: &str = "validating-ca-bundle.patch.yaml";
const MUTATING_CA_PATCH_FILE: &str = "mutating-ca-bundle.patch.yaml";

/// Names the shipped manifests use (checked against `manifests/` by tests).
pub const NAMESPACE: &str = "metal3-dataimage-system";
pub const WEBHOOK_SERVICE: &str = "metal3-dataimage-webhook";
pub const WEBHOOK_CERT_SECRET: &str = "metal3-dataimage-webhook-cert";
pub const VALIDATING_WEBHOOK_CONFIGURATION: &str = "metal3-dataimage-validating";
pub const MUTATING_WEBHOOK_CONFIGURATION: &str = "metal3-dataimage-mutating";
/// Webhook entries, in manifest order: the caBundle patch addresses them by index.
pub const VALIDATING_WEBHOOKS: [&str; 2] = [
    "baremetalhost.dataimage.metal3.io",
    "dataimage.dataimage.metal3.io",
];
pub const MUTATING_WEBHOOKS: [&str; 1] = ["baremetalhost.dataimage.metal3.io"];

/// Names the development serving certificate is valid for.
const DEV_SERVER_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "::1"];

/// Existing certificates are reused only while they stay valid at least a day.
const DAY: Duration = Duration::from_secs(24 * 60 * 60);
/// Lifetimes of generated CAs (development and `certs`) and development certificates.
const CA_VALIDITY: Duration = Duration::from_secs(3650 * 24 * 60 * 60);
const DEV_CERT_VALIDITY: Duration = Duration::from_secs(365 * 24 * 60 * 60);
/// Backdating tolerates clocks a little behind ours (API server, curl).
const BACKDATE: Duration = Duration::from_secs(5 * 60);

/// A certificate with its private key, both PEM (no `Debug`: never print a key).
#[derive(Clone)]
pub struct KeyedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// Where [`ensure_dev_certs`] put the development certificates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DevCerts {
    pub ca_cert: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `true` when new certificates were written, `false` when the existing ones were reused.
    pub generated: bool,
}

/// Make sure `dir` holds a development CA (`ca.crt`) and a serving certificate
/// (`tls.crt`, `tls.key`, mode 0600) for localhost, 127.0.0.1 and ::1.
///
/// Existing files are reused when they parse, the certificate verifies against
/// the CA for all three names, the key matches, and everything stays valid for
/// more than a day; otherwise all three are regenerated (the development CA key
/// is not kept: a new CA is cheap, and a key on disk is a key to protect).
pub fn ensure_dev_certs(dir: &Path) -> anyhow::Result<DevCerts> {
    let paths = DevCerts {
        ca_cert: dir.join(CA_CERT_FILE),
        cert: dir.join(TLS_CERT_FILE),
        key: dir.join(TLS_KEY_FILE),
        generated: false,
    };
    let names = DEV_SERVER_NAMES.map(String::from);
    let now = SystemTime::now();

    let read = |path: &Path| fs::read_to_string(path).ok();
    if let (Some(ca_pem), Some(cert_pem), Some(key_pem)) =
        (read(&paths.ca_cert), read(&paths.cert), read(&paths.key))
        && check_serving_cert(&ca_pem, &cert_pem, &key_pem, &names, now + DAY).is_ok()
    {
        // A reused key is made readable by its owner only.
        let mode = fs::metadata(&paths.key)
            .with_context(|| format!("reading {}", paths.key.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(&paths.key, fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting {} to mode 0600", paths.key.display()))?;
        }
        return Ok(paths);
    }
    if dir.join(KUSTOMIZATION_FILE).exists() {
        // Never overwrite cluster certificates written by `metal3-dataimage certs`.
        bail!(
            "{} holds certificates written by `metal3-dataimage certs` (it has a {KUSTOMIZATION_FILE}) that are not \
             valid development certificates for localhost; pass --cert-dir with another directory, or \
             --tls-cert-file/--tls-key-file",
            dir.display()
        );
    }

    let ca = generate_ca("metal3-dataimage development CA", CA_VALIDITY, now)?;
    let serving = issue_serving_cert(&ca, &names, DEV_CERT_VALIDITY, now)?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    write_file(&paths.key, serving.key_pem.as_bytes(), true)?;
    write_file(&paths.cert, serving.cert_pem.as_bytes(), false)?;
    write_file(&paths.ca_cert, ca.cert_pem.as_bytes(), false)?;
    Ok(DevCerts {
        generated: true,
        ..paths
    })
}

/// A self-signed CA allowed to sign serving certificates only (path length 0).
pub fn generate_ca(
    common_name: &str,
    validity: Duration,
    now: SystemTime,
) -> anyhow::Result<KeyedCert> {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    sign(params, common_name, validity, now, None)
}

/// A serving certificate (server auth) for `names` (DNS names or IP
/// addresses), signed by `ca`.
fn issue_serving_cert(
    ca: &KeyedCert,
    names: &[String],
    validity: Duration,
    now: SystemTime,
) -> anyhow::Result<KeyedCert> {
    let Some(first) = names.first() else {
        bail!("a serving certificate needs at least one name");
    };
    let mut params = CertificateParams::new(names.to_vec()).context("invalid certificate name")?;
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    sign(params, first, validity, now, Some(ca))
}

/// Names `params` after `common_name`, makes it valid from a little before
/// `now` for `validity`, and signs it with a fresh key: by `issuer`, or
/// itself when there is none.
fn sign(
    mut params: CertificateParams,
    common_name: &str,
    validity: Duration,
    now: SystemTime,
    issuer: Option<&KeyedCert>,
) -> anyhow::Result<KeyedCert> {
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "metal3-dataimage");
    name.push(DnType::CommonName, common_name);
    params.distinguished_name = name;
    // rcgen drops the sub-second part.
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + validity).into();
    let key = KeyPair::generate().context("generating a key")?;
    let cert = match issuer {
        None => params.self_signed(&key),
        Some(ca) => {
            let ca_key = KeyPair::from_pem(&ca.key_pem).context("reading the CA key")?;
            let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)
                .context("reading the CA certificate")?;
            params.signed_by(&key, &issuer)
        }
    };
    Ok(KeyedCert {
        cert_pem: cert.context("signing the certificate")?.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// The DER of the first certificate in `pem`; [`parse`] reads it.
fn der(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    CertificateDer::from_pem_slice(pem.as_bytes()).context("no PEM certificate")
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> anyhow::Result<X509Certificate<'a>> {
    Ok(x509_parser::parse_x509_certificate(der)
        .context("certificate does not parse")?
        .1)
}

fn key_matches(key: &KeyPair, cert: &X509Certificate<'_>) -> bool {
    key.public_key_raw() == cert.public_key().subject_public_key.data.as_ref()
}

/// Check that `cert_pem` is a serving certificate signed by `ca_pem`, valid
/// for every name in `names` now and still at `valid_until`, that the CA is
/// valid until then too, and that `key_pem` is its private key.
fn check_serving_cert(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    names: &[String],
    valid_until: SystemTime,
) -> anyhow::Result<()> {
    let ca_der = der(ca_pem).context("CA certificate")?;
    let cert_der = der(cert_pem).context("serving certificate")?;
    let ca = parse(&ca_der).context("CA certificate")?;
    if SystemTime::from(ca.validity().not_after.to_datetime()) < valid_until {
        bail!("CA certificate expires at {}", ca.validity().not_after);
    }
    let cert = parse(&cert_der).context("serving certificate")?;
    let key = KeyPair::from_pem(key_pem).context("private key does not parse")?;
    if !key_matches(&key, &cert) {
        bail!("private key does not match the serving certificate");
    }

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca_der.clone())
        .context("CA certificate is not a usable trust anchor")?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .context("building the certificate verifier")?;
    for at in [SystemTime::now(), valid_until] {
        let when = UnixTime::since_unix_epoch(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        for name in names {
            // An IP address or a DNS name.
            let server_name = ServerName::try_from(name.as_str())
                .with_context(|| format!("{name:?} is not a valid server name"))?;
            verifier
                .verify_server_cert(&cert_der, &[], &server_name, &[], when)
                .with_context(|| {
                    format!(
                        "serving certificate is not valid for {name} until {}",
                        cert.validity().not_after
                    )
                })?;
        }
    }
    Ok(())
}

/// Write `contents` to `path` through a temporary file and a rename, so a
/// reader never sees half a file; private files are created mode 0600.
fn write_file(path: &Path, contents: &[u8], private: bool) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mode = if private { 0o600 } else { 0o644 };
    let mut file = tempfile::Builder::new()
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    file.write_all(contents)
        .and_then(|()| file.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    file.persist(path)
        .with_context(|| format!("renaming a temporary file to {}", path.display()))?;
    Ok(())
}

// ---------------------------------------------------------------------------
// `metal3-dataimage certs`
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, clap::Args)]
pub struct CertsArgs {
    /// Name of the webhook Service the API server calls.
    #[arg(long, env = "METAL3_DATAIMAGE_SERVICE", default_value = WEBHOOK_SERVICE)]
    pub service: String,
    /// Namespace of the webhook Service (and of the generated Secret).
    #[arg(long, env = "METAL3_DATAIMAGE_NAMESPACE", default_value = NAMESPACE)]
    pub namespace: String,
    /// Directory to write ca.crt, ca.key, tls.crt, tls.key and the kustomize component into.
    #[arg(long, env = "METAL3_DATAIMAGE_OUT", default_value = "certs")]
    pub out: PathBuf,
    /// Lifetime of the serving certificate in days (run `certs` again to renew: the CA is kept).
    #[arg(long, env = "METAL3_DATAIMAGE_VALIDITY_DAYS", default_value_t = 365,
          value_parser = clap::value_parser!(u32).range(2..=3650))]
    pub validity_days: u32,
}

/// The DNS names the API server uses to reach a Service.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Files of the kustomize component that installs the certificates: the
/// serving Secret (generated from the files beside it) and the caBundle of
/// both webhook configurations. Returns `(file name, contents)` pairs.
fn render_component(namespace: &str, ca_cert_pem: &str) -> Vec<(&'static str, String)> {
    let ca_bundle = base64::engine::general_purpose::STANDARD.encode(ca_cert_pem.as_bytes());
    let patch_target = |kind: &str, name: &str| json!({"group": "admissionregistration.k8s.io", "version": "v1", "kind": kind, "name": name});
    let kustomization = json!({
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "secretGenerator": [{
            "name": WEBHOOK_CERT_SECRET,
            "namespace": namespace,
            "type": "kubernetes.io/tls",
            "files": [TLS_CERT_FILE, TLS_KEY_FILE, CA_CERT_FILE],
            "options": {"disableNameSuffixHash": true},
        }],
        "patches": [
            {"path": VALIDATING_CA_PATCH_FILE,
             "target": patch_target("ValidatingWebhookConfiguration", VALIDATING_WEBHOOK_CONFIGURATION)},
            {"path": MUTATING_CA_PATCH_FILE,
             "target": patch_target("MutatingWebhookConfiguration", MUTATING_WEBHOOK_CONFIGURATION)},
        ],
    });
    vec![
        (
            KUSTOMIZATION_FILE,
            "# Generated by `metal3-dataimage certs`: the webhook's serving Secret and the\n\
             # caBundle the API server uses to trust it. Re-run the command to renew.\n"
                .to_owned()
                + &yaml(&kustomization),
        ),
        (
            VALIDATING_CA_PATCH_FILE,
            ca_bundle_patch(&VALIDATING_WEBHOOKS, &ca_bundle),
        ),
        (
            MUTATING_CA_PATCH_FILE,
            ca_bundle_patch(&MUTATING_WEBHOOKS, &ca_bundle),
        ),
    ]
}

/// A JSON6902 patch (YAML) setting `clientConfig.caBundle` on every webhook
/// entry (the entries are addressed by index: see [`VALIDATING_WEBHOOKS`]).
fn ca_bundle_patch(webhooks: &[&str], ca_bundle: &str) -> String {
    let (mut operations, mut names) = (Vec::new(), Vec::new());
    for (index, name) in webhooks.iter().enumerate() {
        let path = format!("/webhooks/{index}/clientConfig/caBundle");
        operations.push(json!({"op": "add", "path": path, "value": ca_bundle}));
        names.push(format!("{index}: {name}"));
    }
    format!("# webhooks {}\n{}", names.join(", "), yaml(&operations))
}

fn yaml(value: &impl serde::Serialize) -> String {
    serde_saphyr::to_string(value).expect("a JSON value always renders as YAML")
}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let names = service_dns_names(&args.service, &args.namespace);
    // Validate the names before touching any file.
    for name in &names {
        match ServerName::try_from(name.as_str()) {
            Ok(ServerName::DnsName(_)) => {}
            _ => bail!(
                "--service {:?} / --namespace {:?} do not form a valid DNS name: {name:?}",
                args.service,
                args.namespace
            ),
        }
    }
    let out = &args.out;
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let now = SystemTime::now();
    let validity = DAY * args.validity_days;

    // Keep a CA that outlives the new serving certificate: the caBundle
    // installed in the cluster then stays valid across renewals.
    let ca = match reuse_ca(out, now + validity) {
        Some(ca) => {
            println!("reusing the CA in {}", out.join(CA_CERT_FILE).display());
            ca
        }
        None => {
            let ca = generate_ca("metal3-dataimage webhook CA", CA_VALIDITY, now)?;
            write_file(&out.join(CA_KEY_FILE), ca.key_pem.as_bytes(), true)?;
            write_file(&out.join(CA_CERT_FILE), ca.cert_pem.as_bytes(), false)?;
            println!("wrote a new CA to {}", out.join(CA_CERT_FILE).display());
            ca
        }
    };
    let serving = issue_serving_cert(&ca, &names, validity, now)?;
    check_serving_cert(
        &ca.cert_pem,
        &serving.cert_pem,
        &serving.key_pem,
        &names,
        now + validity - DAY,
    )
    .context("the generated certificate does not verify (bug)")?;
    write_file(&out.join(TLS_KEY_FILE), serving.key_pem.as_bytes(), true)?;
    write_file(&out.join(TLS_CERT_FILE), serving.cert_pem.as_bytes(), false)?;
    for (file, contents) in render_component(&args.namespace, &ca.cert_pem) {
        write_file(&out.join(file), contents.as_bytes(), false)?;
    }
    let serving_der = der(&serving.cert_pem)?;
    let cert = parse(&serving_der)?;
    println!(
        "wrote a serving certificate for {} (serial {} expires {}) to {}",
        names.join(", "),
        cert.raw_serial_as_string(),
        cert.validity().not_after,
        out.join(TLS_CERT_FILE).display()
    );
    println!(
        "wrote the kustomize component {} (Secret {WEBHOOK_CERT_SECRET} + caBundle patches)",
        out.join(KUSTOMIZATION_FILE).display()
    );
    println!(
        "keys ({CA_KEY_FILE}, {TLS_KEY_FILE}) are mode 0600: keep them out of version control"
    );
    Ok(())
}

/// The CA in `dir`, if its certificate and key parse, match, and stay valid past `until`.
fn reuse_ca(dir: &Path, until: SystemTime) -> Option<KeyedCert> {
    let cert_pem = fs::read_to_string(dir.join(CA_CERT_FILE)).ok()?;
    let key_pem = fs::read_to_string(dir.join(CA_KEY_FILE)).ok()?;
    let der = der(&cert_pem).ok()?;
    let cert = parse(&der).ok()?;
    let usable = cert.is_ca()
        && key_matches(&KeyPair::from_pem(&key_pem).ok()?, &cert)
        && SystemTime::from(cert.validity().not_after.to_datetime()) > until;
    usable.then_some(KeyedCert { cert_pem, key_pem })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(std::string::ToString::to_string).collect()
    }

    #[test]
    fn serving_cert_verifies_against_its_ca_for_service_names() {
        let now = SystemTime::now();
        let ca = generate_ca("test CA", DAY * 30, now).unwrap();
        let sans = service_dns_names("metal3-dataimage-webhook", "metal3-dataimage-system");
        assert_eq!(
            sans,
            names(&[
                "metal3-dataimage-webhook.metal3-dataimage-system.svc",
                "metal3-dataimage-webhook.metal3-dataimage-system.svc.cluster.local"
            ])
        );
        let cert = issue_serving_cert(&ca, &sans, DAY * 10, now).unwrap();
        check_serving_cert(
            &ca.cert_pem,
            &cert.cert_pem,
            &cert.key_pem,
            &sans,
            now + DAY * 9,
        )
        .unwrap();
    }

    #[test]
    fn serving_cert_is_rejected_for_other_names_other_cas_and_other_keys() {
        let now = SystemTime::now();
        let ca = generate_ca("test CA", DAY * 30, now).unwrap();
        let other_ca = generate_ca("other CA", DAY * 30, now).unwrap();
        let sans = service_dns_names("svc", "ns");
        let cert = issue_serving_cert(&ca, &sans, DAY * 10, now).unwrap();
        let other = issue_serving_cert(&ca, &sans, DAY * 10, now).unwrap();

        let wrong_name = check_serving_cert(
            &ca.cert_pem,
            &cert.cert_pem,
            &cert.key_pem,
            &names(&["svc.other.svc"]),
            now,
        );
        assert!(format!("{:#}", wrong_name.unwrap_err()).contains("not valid for svc.other.svc"));
        let wrong_ca = check_serving_cert(
            &other_ca.cert_pem,
            &cert.cert_pem,
            &cert.key_pem,
            &sans,
            now,
        );
        assert!(wrong_ca.is_err());
        let wrong_key =
            check_serving_cert(&ca.cert_pem, &cert.cert_pem, &other.key_pem, &sans, now);
        assert!(format!("{:#}", wrong_key.unwrap_err()).contains("does not match"));
    }

    #[test]
    fn serving_cert_is_rejected_when_it_expires_too_soon() {
        let now = SystemTime::now();
        let ca = generate_ca("test CA", DAY * 30, now).unwrap();
        let sans = names(&["localhost"]);
        let cert = issue_serving_cert(&ca, &sans, DAY / 2, now).unwrap();
        check_serving_cert(&ca.cert_pem, &cert.cert_pem, &cert.key_pem, &sans, now).unwrap();
        assert!(
            check_serving_cert(
                &ca.cert_pem,
                &cert.cert_pem,
                &cert.key_pem,
                &sans,
                now + DAY
            )
            .is_err()
        );
        // A CA that expires before the requested time is rejected as well.
        let short_ca = generate_ca("short CA", DAY / 2, now).unwrap();
        let cert = issue_serving_cert(&short_ca, &sans, DAY * 10, now).unwrap();
        let err = check_serving_cert(
            &short_ca.cert_pem,
            &cert.cert_pem,
            &cert.key_pem,
            &sans,
            now + DAY,
        )
        .unwrap_err();
        assert!(err.to_string().contains("CA certificate expires"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let sans = names(&["localhost"]);
        assert!(check_serving_cert("", "", "", &sans, SystemTime::now()).is_err());
        assert!(
            check_serving_cert(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                "x",
                "y",
                &sans,
                SystemTime::now()
            )
            .is_err()
        );
        assert!(der("not a certificate").is_err());
    }

    #[test]
    fn dev_certs_are_generated_then_reused_then_regenerated_when_broken() {
        let dir = tempfile::tempdir().unwrap();
        let first = ensure_dev_certs(dir.path()).unwrap();
        assert!(first.generated);
        let ca = fs::read_to_string(&first.ca_cert).unwrap();
        let cert = fs::read_to_string(&first.cert).unwrap();
        let key = fs::read_to_string(&first.key).unwrap();
        check_serving_cert(
            &ca,
            &cert,
            &key,
            &names(&DEV_SERVER_NAMES),
            SystemTime::now() + DAY * 300,
        )
        .unwrap();
        assert_eq!(mode(&first.key), 0o600);

        fs::set_permissions(&first.key, fs::Permissions::from_mode(0o644)).unwrap();
        let second = ensure_dev_certs(dir.path()).unwrap();
        assert!(!second.generated);
        assert_eq!(mode(&second.key), 0o600, "a reused key is made private");
        assert_eq!(
            fs::read_to_string(&second.cert).unwrap(),
            cert,
            "a valid certificate is reused"
        );

        // A key that does not match the certificate forces regeneration.
        let stray = generate_ca("stray", DAY, SystemTime::now()).unwrap();
        fs::write(&first.key, stray.key_pem).unwrap();
        let third = ensure_dev_certs(dir.path()).unwrap();
        assert!(third.generated);
        assert_ne!(fs::read_to_string(&third.cert).unwrap(), cert);

        // A certificate that expires within a day is replaced.
        let now = SystemTime::now();
        let ca = generate_ca("short", DAY * 30, now).unwrap();
        let short = issue_serving_cert(&ca, &names(&DEV_SERVER_NAMES), DAY / 2, now).unwrap();
        fs::write(&first.ca_cert, &ca.cert_pem).unwrap();
        fs::write(&first.cert, &short.cert_pem).unwrap();
        fs::write(&first.key, &short.key_pem).unwrap();
        assert!(ensure_dev_certs(dir.path()).unwrap().generated);

        // Garbage is replaced too.
        fs::write(&first.cert, "garbage").unwrap();
        assert!(ensure_dev_certs(dir.path()).unwrap().generated);
    }

    #[test]
    fn dev_certs_never_overwrite_cluster_certs() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(KUSTOMIZATION_FILE), "kind: Component\n").unwrap();
        let err = ensure_dev_certs(dir.path()).unwrap_err();
        assert!(err.to_string().contains("metal3-dataimage certs"));
        assert!(!dir.path().join(TLS_CERT_FILE).exists());
    }

    #[test]
    fn certs_command_writes_verifiable_certs_and_keeps_the_ca_on_renewal() {
        let dir = tempfile::tempdir().unwrap();
        let args = CertsArgs {
            service: "hook".into(),
            namespace: "ns1".into(),
            out: dir.path().join("out"),
            validity_days: 30,
        };
        run(args.clone()).unwrap();
        let read = |file: &str| fs::read_to_string(args.out.join(file)).unwrap();
        let sans = service_dns_names("hook", "ns1");
        check_serving_cert(
            &read(CA_CERT_FILE),
            &read(TLS_CERT_FILE),
            &read(TLS_KEY_FILE),
            &sans,
            SystemTime::now() + DAY * 28,
        )
        .unwrap();
        for key in [CA_KEY_FILE, TLS_KEY_FILE] {
            assert_eq!(mode(&args.out.join(key)), 0o600, "{key}");
        }
        // Public files: 0644 less the umask, which a plain new file shows.
        let reference = dir.path().join("reference");
        fs::write(&reference, "").unwrap();
        assert_eq!(
            mode(&args.out.join(TLS_CERT_FILE)),
            mode(&reference) & 0o644
        );
        let ca_before = read(CA_CERT_FILE);
        let cert_before = read(TLS_CERT_FILE);
        let bundle = base64::engine::general_purpose::STANDARD.encode(ca_before.as_bytes());
        assert!(read(VALIDATING_CA_PATCH_FILE).contains(&bundle));
        assert!(read(MUTATING_CA_PATCH_FILE).contains(&bundle));
        assert!(read(KUSTOMIZATION_FILE).contains("namespace: ns1"));

        run(args.clone()).unwrap();
        assert_eq!(
            read(CA_CERT_FILE),
            ca_before,
            "renewal keeps the CA, so the caBundle stays valid"
        );
        assert_ne!(
            read(TLS_CERT_FILE),
            cert_before,
            "renewal issues a new serving certificate"
        );
    }

    #[test]
    fn certs_command_rejects_names_that_are_not_dns_names() {
        let dir = tempfile::tempdir().unwrap();
        let args = CertsArgs {
            service: "bad name".into(),
            namespace: "ns".into(),
            out: dir.path().join("out"),
            validity_days: 30,
        };
        let err = run(args.clone()).unwrap_err();
        assert!(err.to_string().contains("valid DNS name"), "{err}");
        assert!(!args.out.exists(), "nothing is written for bad input");
    }

    #[test]
    fn ca_bundle_patch_addresses_every_webhook() {
        let files = render_component("ns", "-----BEGIN CERTIFICATE-----\n");
        let (_, validating) = files
            .iter()
            .find(|(name, _)| *name == VALIDATING_CA_PATCH_FILE)
            .unwrap();
        let ops: Vec<serde_json::Value> = serde_saphyr::from_str(validating).unwrap();
        assert_eq!(ops.len(), VALIDATING_WEBHOOKS.len());
        assert_eq!(ops[1]["path"], "/webhooks/1/clientConfig/caBundle");
        assert_eq!(
            ops[1]["value"],
            base64::engine::general_purpose::STANDARD.encode("-----BEGIN CERTIFICATE-----\n")
        );
    }
}
