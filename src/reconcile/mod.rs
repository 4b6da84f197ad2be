//! The reconciler (`metal3-dataimage reconcile` and `cleanup`).
//!
//! - [`decision`]: the pure decision function (host + Ironic → actions);
//! - [`record`]: the `dataimage.metal3.io/attached` state annotation;
//! - [`kube_ops`]: patch bodies and the start-up CRD check;
//! - [`controller`]: the kube-runtime reconcile loop executing plans;
//! - [`metrics`]: Prometheus metrics.

pub mod controller;
pub mod decision;
pub mod events;
pub mod health;
pub mod kube_ops;
pub mod leader;
pub mod metrics;
pub mod record;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::duration::{parse_duration, parse_positive_duration};
use crate::ironic::{IronicClient, IronicConfig};
use crate::model::bmh::HostResource;
use crate::staging::Stager;
use crate::staging::args::StagingArgs;
use crate::telemetry::{LogFormat, redact_url};
use controller::Context;
use decision::DecisionConfig;
use record::{FINALIZER, HOLD_ANNOTATION, STATE_ANNOTATION};

/// Default listeners of the reconciler (chosen not to collide with the
/// baremetal-operator's 9440/9443 when run as its sidecar).
pub const DEFAULT_PROBE_LISTEN: &str = "0.0.0.0:9441";
pub const DEFAULT_LEASE_NAME: &str = "metal3-dataimage-reconciler";

#[derive(Clone, Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Ironic API endpoint, e.g. https://ironic.metal3.svc:6385 (default: the
    /// baremetal-operator's IRONIC_ENDPOINT).
    #[arg(long, env = "METAL3_DATAIMAGE_IRONIC_URL")]
    pub ironic_url: Option<url::Url>,
    /// HTTP basic auth user for Ironic (default: the baremetal-operator's
    /// credential files, see docs/install.md).
    #[arg(
        long,
        env = "METAL3_DATAIMAGE_IRONIC_USERNAME",
        requires = "ironic_password_file"
    )]
    pub ironic_username: Option<String>,
    /// File holding the Ironic password (trailing newline ignored).
    #[arg(
        long,
        env = "METAL3_DATAIMAGE_IRONIC_PASSWORD_FILE",
        requires = "ironic_username"
    )]
    pub ironic_password_file: Option<PathBuf>,
    /// CA bundle (PEM) to verify Ironic's certificate (default: the
    /// operator's IRONIC_CACERT_FILE or /opt/metal3/certs/ca/tls.crt, if it exists).
    #[arg(long, env = "METAL3_DATAIMAGE_IRONIC_CA_FILE")]
    pub ironic_ca_file: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS with Ironic (default: the
    /// operator's IRONIC_CLIENT_CERT_FILE or /opt/metal3/certs/client/tls.crt, if it exists).
    #[arg(
        long,
        env = "METAL3_DATAIMAGE_IRONIC_CLIENT_CERT_FILE",
        requires = "ironic_client_key_file"
    )]
    pub ironic_client_cert_file: Option<PathBuf>,
    /// Private key (PEM) of --ironic-client-cert-file.
    #[arg(
        long,
        env = "METAL3_DATAIMAGE_IRONIC_CLIENT_KEY_FILE",
        requires = "ironic_client_cert_file"
    )]
    pub ironic_client_key_file: Option<PathBuf>,
    /// Do not verify Ironic's TLS certificate (testing only; default: the
    /// operator's IRONIC_INSECURE). `--ironic-insecure=false` overrides it.
    #[arg(
        long,
        env = "METAL3_DATAIMAGE_IRONIC_INSECURE",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub ironic_insecure: Option<bool>,
    /// Timeout of each Ironic request (default: the operator's
    /// IRONIC_CLIENT_TIMEOUT, then 30s).
    #[arg(long, env = "METAL3_DATAIMAGE_IRONIC_TIMEOUT", value_parser = parse_positive_duration)]
    pub ironic_timeout: Option<Duration>,
    /// /healthz, /readyz and /metrics listener.
    #[arg(long, env = "METAL3_DATAIMAGE_PROBE_LISTEN", default_value = DEFAULT_PROBE_LISTEN)]
    pub probe_listen: SocketAddr,
    #[command(flatten)]
    pub staging: Box<StagingArgs>,
    /// Release the power hold on a powered-off host after this long without a
    /// confirmed attach (the operator may then power it on without the image).
    #[arg(long, env = "METAL3_DATAIMAGE_HOLD_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub hold_timeout: Duration,
    /// Release the finalizer of a deleted host after this long without a
    /// confirmed detach (Ironic unreachable, node unknown).
    #[arg(long, env = "METAL3_DATAIMAGE_FINALIZER_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub finalizer_timeout: Duration,
    /// How often the drive of an attached host is re-read (notices a BMC
    /// that ejected the image). Each check is a live BMC read by Ironic.
    #[arg(long, env = "METAL3_DATAIMAGE_VERIFY_INTERVAL", default_value = "10m", value_parser = parse_positive_duration)]
    pub verify_interval: Duration,
    /// Maximum concurrent Ironic requests.
    #[arg(long, env = "METAL3_DATAIMAGE_MAX_CONCURRENT", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent: u16,
    /// Only watch hosts in this namespace (default: all namespaces).
    #[arg(long, env = "METAL3_DATAIMAGE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Namespace of the leader election Lease (default: POD_NAMESPACE, then
    /// the client's namespace).
    #[arg(long, env = "METAL3_DATAIMAGE_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader election Lease.
    #[arg(long, env = "METAL3_DATAIMAGE_LEASE_NAME", default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    #[arg(long, env = "METAL3_DATAIMAGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The baremetal-operator's default directory of credential directories
/// (`METAL3_AUTH_ROOT_DIR`); Ironic's are in its `ironic` subdirectory.
pub const OPERATOR_AUTH_ROOT: &str = "/opt/metal3/auth";
/// The operator's default `IRONIC_CACERT_FILE`.
pub const OPERATOR_CACERT_FILE: &str = "/opt/metal3/certs/ca/tls.crt";

/// The baremetal-operator's environment variables for Ironic (its
/// `pkg/provisioner/ironic/factory.go` and `clients/auth.go`), with the
/// operator's default where it has one.
const OPERATOR_VARS: [(&str, Option<&str>); 7] = [
    ("IRONIC_ENDPOINT", None),
    ("METAL3_AUTH_ROOT_DIR", Some(OPERATOR_AUTH_ROOT)),
    ("IRONIC_CACERT_FILE", Some(OPERATOR_CACERT_FILE)),
    (CLIENT_CERT_VAR, Some("/opt/metal3/certs/client/tls.crt")),
    (CLIENT_KEY_VAR, Some("/opt/metal3/certs/client/tls.key")),
    ("IRONIC_INSECURE", None),
    ("IRONIC_CLIENT_TIMEOUT", None),
];
const CLIENT_CERT_VAR: &str = "IRONIC_CLIENT_CERT_FILE";
const CLIENT_KEY_VAR: &str = "IRONIC_CLIENT_PRIVATE_KEY_FILE";

/// The baremetal-operator's Ironic settings ([`OPERATOR_VARS`]) as this
/// process found them. `reconcile` falls back to them for every setting its
/// own flags leave unset, so that as the operator's sidecar it reads the
/// very same configuration. Empty values count as unset, as with the
/// operator's `os.Getenv`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OperatorEnv(BTreeMap<&'static str, String>);

impl OperatorEnv {
    /// Reads the variables through `get` (e.g. `std::env::var`).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let set = |(var, _)| Some((var, get(var).filter(|value| !value.is_empty())?));
        Self(OPERATOR_VARS.into_iter().filter_map(set).collect())
    }

    /// `var`, else the operator's default for it.
    fn get(&self, var: &str) -> Option<&str> {
        let default = OPERATOR_VARS.iter().find(|(v, _)| *v == var);
        (self.0.get(var).map(String::as_str)).or(default.and_then(|(_, d)| *d))
    }

    /// The path in `var` (or its default), if a file exists there. As with
    /// the operator, a missing file is ignored, one that exists but cannot
    /// be read is an error.
    fn file(
        &self,
        var: &str,
        files: &dyn Fn(&Path) -> FileState,
    ) -> Result<(PathBuf, Option<PathBuf>), String> {
        let path = PathBuf::from(self.get(var).unwrap_or_default());
        let found = files(&path).content(format_args!("{var} {}", path.display()))?;
        let existing = found.map(|_| path.clone());
        Ok((path, existing))
    }
}

/// What [`resolve_ironic_config`] found at a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileState {
    /// Does not exist.
    Missing,
    /// Exists, with this content.
    Present(String),
    /// Exists but cannot be read (the reason).
    Unreadable(String),
}

impl FileState {
    /// Reads `path` from the file system.
    pub fn read(path: &Path) -> Self {
        match std::fs::read(path) {
            Ok(bytes) => Self::Present(String::from_utf8_lossy(&bytes).into_owned()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Self::Missing,
            Err(err) => Self::Unreadable(err.to_string()),
        }
    }

    /// The content (`None`: missing); an unreadable file is an error about
    /// `what`.
    fn content(self, what: std::fmt::Arguments<'_>) -> Result<Option<String>, String> {
        match self {
            Self::Present(text) => Ok(Some(text)),
            Self::Missing => Ok(None),
            Self::Unreadable(reason) => Err(format!("{what}: {reason}")),
        }
    }
}

/// The Ironic client settings and, for the start-up log, where each came from.
#[derive(Clone, Debug)]
pub struct ResolvedIronic {
    pub config: IronicConfig,
    /// E.g. `endpoint from IRONIC_ENDPOINT`, `basic auth from /opt/metal3/auth/ironic`.
    pub sources: Vec<String>,
}

/// Builds the Ironic client settings from `reconcile`'s own flags and, for
/// each setting they leave unset, the baremetal-operator's conventions:
///
/// | setting | own flag (wins) | operator fallback |
/// |---|---|---|
/// | endpoint | `--ironic-url` | `IRONIC_ENDPOINT` (a trailing `/v1/` is fine) |
/// | basic auth | `--ironic-username` + `--ironic-password-file` | files `username`, `password` in `$METAL3_AUTH_ROOT_DIR/ironic` (default `/opt/metal3/auth/ironic`); neither file = no auth |
/// | CA | `--ironic-ca-file` | `IRONIC_CACERT_FILE` (default `/opt/metal3/certs/ca/tls.crt`) if it exists |
/// | client certificate | `--ironic-client-cert-file` + `--ironic-client-key-file` | `IRONIC_CLIENT_CERT_FILE` + `IRONIC_CLIENT_PRIVATE_KEY_FILE` (defaults `/opt/metal3/certs/client/tls.crt`, `.key`) if they exist |
/// | insecure | `--ironic-insecure[=BOOL]` | `IRONIC_INSECURE=true` |
/// | timeout | `--ironic-timeout` | `IRONIC_CLIENT_TIMEOUT`, then 30s |
///
/// Pure: `files` says what exists at a path (the password file of
/// `--ironic-password-file` included). The CA and client certificate files
/// are only checked for existence here; [`IronicClient::connect`] reads them.
pub fn resolve_ironic_config(
    args: &ReconcileArgs,
    env: &OperatorEnv,
    files: &dyn Fn(&Path) -> FileState,
) -> Result<ResolvedIronic, String> {
    let mut sources = Vec::new();
    let mut from = |source: String| sources.push(source);

    let endpoint = match (&args.ironic_url, env.get("IRONIC_ENDPOINT")) {
        (Some(url), _) => {
            from("endpoint from --ironic-url".into());
            url.clone()
        }
        (None, Some(endpoint)) => {
            from("endpoint from IRONIC_ENDPOINT".into());
            let url = url::Url::parse(endpoint.trim()).map_err(|err| {
                let shown = redact_url(endpoint);
                format!("IRONIC_ENDPOINT {shown:?} is not a URL: {err}")
            })?;
            crate::ironic::client::api_root(&url)
                .map_err(|err| format!("IRONIC_ENDPOINT: {err}"))?;
            url
        }
        (None, None) => {
            return Err(
                "no Ironic endpoint: set --ironic-url (METAL3_DATAIMAGE_IRONIC_URL) or the baremetal-operator's IRONIC_ENDPOINT"
                    .to_string(),
            );
        }
    };

    let (username, password) = match (&args.ironic_username, &args.ironic_password_file) {
        (Some(user), Some(file)) => {
            let shown = file.display();
            let password = files(file)
                .content(format_args!("reading --ironic-password-file {shown}"))?
                .ok_or_else(|| format!("--ironic-password-file {shown} does not exist"))?;
            let password = password.trim_end_matches(['\n', '\r']);
            if password.is_empty() {
                return Err(format!("--ironic-password-file {shown} is empty"));
            }
            from("basic auth from --ironic-username".into());
            (Some(user.clone()), Some(password.to_string()))
        }
        (None, None) => match operator_auth(env, files)? {
            Some((dir, user, password)) => {
                from(format!("basic auth from {}", dir.display()));
                (Some(user), Some(password))
            }
            None => (None, None),
        },
        // clap enforces both-or-neither; refuse rather than guess.
        _ => return Err("--ironic-username and --ironic-password-file go together".into()),
    };

    let ca_file = match &args.ironic_ca_file {
        Some(file) => {
            from(format!("CA {} from --ironic-ca-file", file.display()));
            Some(file.clone())
        }
        None => (env.file("IRONIC_CACERT_FILE", files)?.1)
            .inspect(|p| from(format!("CA {} (IRONIC_CACERT_FILE)", p.display()))),
    };

    let client_files = (&args.ironic_client_cert_file, &args.ironic_client_key_file);
    let (client_cert_file, client_key_file) = match client_files {
        (Some(cert), Some(key)) => {
            from("client certificate from --ironic-client-cert-file".into());
            (Some(cert.clone()), Some(key.clone()))
        }
        (None, None) => match (
            env.file(CLIENT_CERT_VAR, files)?,
            env.file(CLIENT_KEY_VAR, files)?,
        ) {
            ((_, Some(cert)), (_, Some(key))) => {
                from(format!(
                    "client certificate {} ({CLIENT_CERT_VAR})",
                    cert.display()
                ));
                (Some(cert), Some(key))
            }
            ((_, None), (_, None)) => (None, None),
            // The operator's TLS transport refuses this too.
            ((_, Some(found)), (missing, None)) | ((missing, None), (_, Some(found))) => {
                return Err(format!(
                    "Ironic client certificate: {} exists but {} does not ({CLIENT_CERT_VAR} and {CLIENT_KEY_VAR} go together)",
                    found.display(),
                    missing.display()
                ));
            }
        },
        _ => {
            return Err(
                "--ironic-client-cert-file and --ironic-client-key-file go together".to_string(),
            );
        }
    };

    // Where TLS verification was turned off, if it was. IRONIC_INSECURE has
    // the operator's rule: `true` in any case, anything else is false.
    let insecure_by = match (args.ironic_insecure, env.get("IRONIC_INSECURE")) {
        (Some(true), _) => Some("--ironic-insecure"),
        (None, Some(value)) if value.eq_ignore_ascii_case("true") => Some("IRONIC_INSECURE"),
        _ => None,
    };
    if let Some(flag) = insecure_by {
        from(format!("TLS verification off ({flag})"));
    }

    let timeout = match (args.ironic_timeout, env.get("IRONIC_CLIENT_TIMEOUT")) {
        (Some(timeout), _) => timeout,
        (None, Some(value)) => {
            parse_positive_duration(value).map_err(|err| format!("IRONIC_CLIENT_TIMEOUT: {err}"))?
        }
        (None, None) => crate::ironic::client::DEFAULT_TIMEOUT,
    };

    Ok(ResolvedIronic {
        config: IronicConfig {
            endpoint,
            username,
            password,
            ca_file,
            insecure: insecure_by.is_some(),
            timeout,
            client_cert_file,
            client_key_file,
        },
        sources,
    })
}

/// The operator's credential files: `username` and `password` in
/// `$METAL3_AUTH_ROOT_DIR/ironic` (that directory, user, password),
/// surrounding whitespace trimmed. Neither file (or no directory) means no
/// authentication; an empty directory counts as none too, since an optional
/// Secret volume whose Secret does not exist is mounted as one.
fn operator_auth(
    env: &OperatorEnv,
    files: &dyn Fn(&Path) -> FileState,
) -> Result<Option<(PathBuf, String, String)>, String> {
    let dir = PathBuf::from(env.get("METAL3_AUTH_ROOT_DIR").unwrap_or_default()).join("ironic");
    let read = |name: &str| -> Result<Option<String>, String> {
        let path = dir.join(name);
        let what = format_args!("reading Ironic credentials {}", path.display());
        Ok(files(&path)
            .content(what)?
            .map(|text| text.trim().to_string()))
    };
    let problem = match (read("username")?, read("password")?) {
        (None, None) => return Ok(None),
        (Some(user), Some(_)) if user.is_empty() => "empty HTTP Basic Auth username",
        (Some(_), Some(password)) if password.is_empty() => "empty HTTP Basic Auth password",
        (Some(user), Some(password)) => return Ok(Some((dir, user, password))),
        (Some(_), None) => "username without password",
        (None, Some(_)) => "password without username",
    };
    Err(format!(
        "Ironic credentials in {}: {problem}",
        dir.display()
    ))
}

#[cfg(test)]
mod ironic_settings_tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReconcileArgs,
    }

    fn args(flags: &[&str]) -> ReconcileArgs {
        let argv = std::iter::once("reconcile").chain(flags.iter().copied());
        Cli::try_parse_from(argv)
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
            .args
    }

    fn env(vars: &[(&str, &str)]) -> OperatorEnv {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OperatorEnv::from_lookup(|key| map.get(key).cloned())
    }

    /// The expected IronicConfig, in short.
    #[derive(Debug, PartialEq, Eq)]
    struct Want {
        endpoint: &'static str,
        auth: Option<(&'static str, &'static str)>,
        ca: Option<&'static str>,
        client: Option<(&'static str, &'static str)>,
        insecure: bool,
        timeout: u64,
    }

    const NO_AUTH: Want = Want {
        endpoint: "http://172.22.0.2:6385/v1/",
        auth: None,
        ca: None,
        client: None,
        insecure: false,
        timeout: 30,
    };
    const BMO_ENDPOINT: (&str, &str) = ("IRONIC_ENDPOINT", "http://172.22.0.2:6385/v1/");
    const AUTH_USER: &str = "/opt/metal3/auth/ironic/username";
    const AUTH_PASSWORD: &str = "/opt/metal3/auth/ironic/password";

    struct Case {
        name: &'static str,
        flags: &'static [&'static str],
        env: &'static [(&'static str, &'static str)],
        /// Existing files and their content (`!` = unreadable).
        files: &'static [(&'static str, &'static str)],
        want: Result<Want, &'static str>,
    }

    #[test]
    fn operator_conventions_and_precedence() {
        let cases = [
            Case {
                name: "the operator's endpoint alone: no auth, system CAs",
                flags: &[],
                env: &[BMO_ENDPOINT],
                files: &[],
                want: Ok(NO_AUTH),
            },
            Case {
                name: "endpoint without /v1/",
                flags: &[],
                env: &[("IRONIC_ENDPOINT", "https://ironic.svc:6385")],
                files: &[],
                want: Ok(Want {
                    endpoint: "https://ironic.svc:6385/",
                    ..NO_AUTH
                }),
            },
            Case {
                name: "credential files in the default directory, whitespace trimmed",
                flags: &[],
                env: &[BMO_ENDPOINT],
                files: &[(AUTH_USER, "ironic-user\n"), (AUTH_PASSWORD, " s3cret \n")],
                want: Ok(Want {
                    auth: Some(("ironic-user", "s3cret")),
                    ..NO_AUTH
                }),
            },
            Case {
                name: "METAL3_AUTH_ROOT_DIR moves the credential directory",
                flags: &[],
                env: &[BMO_ENDPOINT, ("METAL3_AUTH_ROOT_DIR", "/run/auth")],
                files: &[
                    (AUTH_USER, "default-user"),
                    (AUTH_PASSWORD, "default-password"),
                    ("/run/auth/ironic/username", "moved-user"),
                    ("/run/auth/ironic/password", "moved-password"),
                ],
                want: Ok(Want {
                    auth: Some(("moved-user", "moved-password")),
                    ..NO_AUTH
                }),
            },
            Case {
                name: "a username without a password",
                flags: &[],
                env: &[BMO_ENDPOINT],
                files: &[(AUTH_USER, "ironic-user")],
                want: Err("/opt/metal3/auth/ironic: username without password"),
            },
            Case {
                name: "a password without a username",
                flags: &[],
                env: &[BMO_ENDPOINT],
                files: &[(AUTH_PASSWORD, "s3cret")],
                want: Err("password without username"),
            },
            Case {
                name: "an empty password file",
                flags: &[],
                env: &[BMO_ENDPOINT],
                files: &[(AUTH_USER, "ironic-user"), (AUTH_PASSWORD, "\n")],
                want: Err("empty HTTP Basic Auth password"),
            },
            Case {
                name: "an unreadable credential file",
                flags: &[],
                env: &[BMO_ENDPOINT],
                files: &[(AUTH_USER, "!"), (AUTH_PASSWORD, "s3cret")],
                want: Err("reading Ironic credentials /opt/metal3/auth/ironic/username"),
            },
            Case {
                name: "the default CA path, when it exists",
                flags: &[],
                env: &[BMO_ENDPOINT],
                files: &[("/opt/metal3/certs/ca/tls.crt", "PEM")],
                want: Ok(Want {
                    ca: Some("/opt/metal3/certs/ca/tls.crt"),
                    ..NO_AUTH
                }),
            },
            Case {
                name: "IRONIC_CACERT_FILE replaces the default path",
                flags: &[],
                env: &[BMO_ENDPOINT, ("IRONIC_CACERT_FILE", "/etc/ironic-ca.pem")],
                files: &[
                    ("/opt/metal3/certs/ca/tls.crt", "PEM"),
                    ("/etc/ironic-ca.pem", "PEM"),
                ],
                want: Ok(Want {
                    ca: Some("/etc/ironic-ca.pem"),
                    ..NO_AUTH
                }),
            },
            Case {
                name: "a missing IRONIC_CACERT_FILE is ignored, as by the operator",
                flags: &[],
                env: &[BMO_ENDPOINT, ("IRONIC_CACERT_FILE", "/etc/absent.pem")],
                files: &[],
                want: Ok(NO_AUTH),
            },
            Case {
                name: "an unreadable CA file",
                flags: &[],
                env: &[BMO_ENDPOINT],
                files: &[("/opt/metal3/certs/ca/tls.crt", "!")],
                want: Err("IRONIC_CACERT_FILE /opt/metal3/certs/ca/tls.crt"),
            },
            Case {
                name: "the default client certificate and key",
                flags: &[],
                env: &[BMO_ENDPOINT],
                files: &[
                    ("/opt/metal3/certs/client/tls.crt", "PEM"),
                    ("/opt/metal3/certs/client/tls.key", "PEM"),
                ],
                want: Ok(Want {
                    client: Some((
                        "/opt/metal3/certs/client/tls.crt",
                        "/opt/metal3/certs/client/tls.key",
                    )),
                    ..NO_AUTH
                }),
            },
            Case {
                name: "client certificate files named by the operator's variables",
                flags: &[],
                env: &[
                    BMO_ENDPOINT,
                    ("IRONIC_CLIENT_CERT_FILE", "/c/cert.pem"),
                    ("IRONIC_CLIENT_PRIVATE_KEY_FILE", "/c/key.pem"),
                ],
                files: &[("/c/cert.pem", "PEM"), ("/c/key.pem", "PEM")],
                want: Ok(Want {
                    client: Some(("/c/cert.pem", "/c/key.pem")),
                    ..NO_AUTH
                }),
            },
            Case {
                name: "a client certificate without its key",
                flags: &[],
                env: &[BMO_ENDPOINT],
                files: &[("/opt/metal3/certs/client/tls.crt", "PEM")],
                want: Err(
                    "/opt/metal3/certs/client/tls.crt exists but /opt/metal3/certs/client/tls.key does not",
                ),
            },
            Case {
                name: "IRONIC_INSECURE=true in any case",
                flags: &[],
                env: &[BMO_ENDPOINT, ("IRONIC_INSECURE", "TRUE")],
                files: &[],
                want: Ok(Want {
                    insecure: true,
                    ..NO_AUTH
                }),
            },
            Case {
                name: "IRONIC_INSECURE other than true is false (the operator's rule)",
                flags: &[],
                env: &[BMO_ENDPOINT, ("IRONIC_INSECURE", "1")],
                files: &[],
                want: Ok(NO_AUTH),
            },
            Case {
                name: "IRONIC_CLIENT_TIMEOUT",
                flags: &[],
                env: &[BMO_ENDPOINT, ("IRONIC_CLIENT_TIMEOUT", "1m30s")],
                files: &[],
                want: Ok(Want {
                    timeout: 90,
                    ..NO_AUTH
                }),
            },
            Case {
                name: "an invalid IRONIC_CLIENT_TIMEOUT",
                flags: &[],
                env: &[BMO_ENDPOINT, ("IRONIC_CLIENT_TIMEOUT", "soon")],
                files: &[],
                want: Err("IRONIC_CLIENT_TIMEOUT"),
            },
            Case {
                name: "no endpoint anywhere",
                flags: &[],
                env: &[],
                files: &[],
                want: Err(
                    "set --ironic-url (METAL3_DATAIMAGE_IRONIC_URL) or the baremetal-operator's IRONIC_ENDPOINT",
                ),
            },
            Case {
                name: "an empty IRONIC_ENDPOINT is unset",
                flags: &[],
                env: &[("IRONIC_ENDPOINT", "")],
                files: &[],
                want: Err("no Ironic endpoint"),
            },
            Case {
                name: "an IRONIC_ENDPOINT that is no URL",
                flags: &[],
                env: &[("IRONIC_ENDPOINT", "ironic:6385")],
                files: &[],
                want: Err(
                    "IRONIC_ENDPOINT: ironic client configuration: ironic URL ironic:6385 must be http:// or https://",
                ),
            },
            Case {
                name: "an IRONIC_ENDPOINT that does not parse",
                flags: &[],
                env: &[("IRONIC_ENDPOINT", "http://[::1")],
                files: &[],
                want: Err("IRONIC_ENDPOINT \"http://[::1\" is not a URL"),
            },
            Case {
                name: "our own flags win over every operator setting",
                flags: &[
                    "--ironic-url=https://own.example:6385",
                    "--ironic-username=own-user",
                    "--ironic-password-file=/own/password",
                    "--ironic-ca-file=/own/ca.crt",
                    "--ironic-client-cert-file=/own/tls.crt",
                    "--ironic-client-key-file=/own/tls.key",
                    "--ironic-insecure=false",
                    "--ironic-timeout=5s",
                ],
                env: &[
                    BMO_ENDPOINT,
                    ("IRONIC_INSECURE", "true"),
                    ("IRONIC_CLIENT_TIMEOUT", "1m"),
                ],
                files: &[
                    (AUTH_USER, "bmo-user"),
                    (AUTH_PASSWORD, "bmo-password"),
                    ("/opt/metal3/certs/ca/tls.crt", "PEM"),
                    ("/opt/metal3/certs/client/tls.crt", "PEM"),
                    ("/opt/metal3/certs/client/tls.key", "PEM"),
                    ("/own/password", "own-password\n"),
                ],
                want: Ok(Want {
                    endpoint: "https://own.example:6385/",
                    auth: Some(("own-user", "own-password")),
                    ca: Some("/own/ca.crt"),
                    client: Some(("/own/tls.crt", "/own/tls.key")),
                    insecure: false,
                    timeout: 5,
                }),
            },
            Case {
                name: "per setting: our URL with the operator's credentials and CA",
                flags: &["--ironic-url=https://own.example:6385", "--ironic-insecure"],
                env: &[BMO_ENDPOINT],
                files: &[
                    (AUTH_USER, "bmo-user"),
                    (AUTH_PASSWORD, "bmo-password"),
                    ("/opt/metal3/certs/ca/tls.crt", "PEM"),
                ],
                want: Ok(Want {
                    endpoint: "https://own.example:6385/",
                    auth: Some(("bmo-user", "bmo-password")),
                    ca: Some("/opt/metal3/certs/ca/tls.crt"),
                    insecure: true,
                    ..NO_AUTH
                }),
            },
            Case {
                name: "our password file is missing",
                flags: &[
                    "--ironic-username=own-user",
                    "--ironic-password-file=/own/password",
                ],
                env: &[BMO_ENDPOINT],
                files: &[],
                want: Err("--ironic-password-file /own/password does not exist"),
            },
        ];
        for case in cases {
            let files: HashMap<PathBuf, FileState> = case
                .files
                .iter()
                .map(|(path, content)| {
                    let state = if *content == "!" {
                        FileState::Unreadable("permission denied".into())
                    } else {
                        FileState::Present(content.to_string())
                    };
                    (PathBuf::from(path), state)
                })
                .collect();
            let lookup = |path: &Path| files.get(path).cloned().unwrap_or(FileState::Missing);
            let got = resolve_ironic_config(&args(case.flags), &env(case.env), &lookup);
            match (got, case.want) {
                (Ok(resolved), Ok(want)) => {
                    let config = resolved.config;
                    let (root, _) = crate::ironic::client::api_root(&config.endpoint).unwrap();
                    let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
                    let got = (
                        root.to_string(),
                        config.username.clone().zip(config.password.clone()),
                        path(&config.ca_file),
                        path(&config.client_cert_file).zip(path(&config.client_key_file)),
                        config.insecure,
                        config.timeout,
                    );
                    let root_want = if want.endpoint.ends_with("/v1/") {
                        want.endpoint.trim_end_matches("v1/").to_string()
                    } else {
                        want.endpoint.to_string()
                    };
                    let want = (
                        root_want,
                        want.auth.map(|(u, p)| (u.to_string(), p.to_string())),
                        want.ca.map(str::to_string),
                        want.client.map(|(c, k)| (c.to_string(), k.to_string())),
                        want.insecure,
                        Duration::from_secs(want.timeout),
                    );
                    assert_eq!(got, want, "{}", case.name);
                    assert!(!resolved.sources.is_empty(), "{}", case.name);
                }
                (Err(err), Err(want)) => {
                    assert!(err.contains(want), "{}: {err:?} lacks {want:?}", case.name);
                }
                (got, want) => panic!("{}: got {got:?}, want {want:?}", case.name),
            }
        }
    }

    #[test]
    fn sources_name_where_each_setting_came_from() {
        let files = |path: &Path| {
            if path == Path::new(AUTH_USER) {
                FileState::Present("user".into())
            } else if path == Path::new(AUTH_PASSWORD) {
                FileState::Present("hunter2".into())
            } else {
                FileState::Missing
            }
        };
        let resolved = resolve_ironic_config(&args(&[]), &env(&[BMO_ENDPOINT]), &files).unwrap();
        assert_eq!(
            resolved.sources,
            [
                "endpoint from IRONIC_ENDPOINT",
                "basic auth from /opt/metal3/auth/ironic"
            ]
        );
        // The password never reaches the sources or the Debug output.
        assert!(!format!("{resolved:?}").contains("hunter2"), "{resolved:?}");

        let insecure = [BMO_ENDPOINT, ("IRONIC_INSECURE", "true")];
        let off = |flags: &[&str], vars: &[(&str, &str)]| {
            let resolved = resolve_ironic_config(&args(flags), &env(vars), &files).unwrap();
            let source = resolved.sources.into_iter().find(|s| s.starts_with("TLS"));
            (resolved.config.insecure, source)
        };
        assert_eq!(off(&[], &[BMO_ENDPOINT]), (false, None));
        let by_env = Some("TLS verification off (IRONIC_INSECURE)".to_string());
        assert_eq!(off(&[], &insecure), (true, by_env));
        let by_flag = Some("TLS verification off (--ironic-insecure)".to_string());
        assert_eq!(
            off(&["--ironic-insecure"], &[BMO_ENDPOINT]),
            (true, by_flag)
        );
        assert_eq!(off(&["--ironic-insecure=false"], &insecure), (false, None));
    }

    #[test]
    fn ironic_insecure_flag_forms() {
        assert_eq!(args(&[]).ironic_insecure, None);
        assert_eq!(args(&["--ironic-insecure"]).ironic_insecure, Some(true));
        assert_eq!(
            args(&["--ironic-insecure=false"]).ironic_insecure,
            Some(false)
        );
        assert_eq!(
            args(&["--ironic-insecure=true"]).ironic_insecure,
            Some(true)
        );
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct CleanupArgs {
    /// Only clean hosts in this namespace (default: all namespaces).
    #[arg(long, env = "METAL3_DATAIMAGE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Show what would be removed without changing anything.
    #[arg(long, env = "METAL3_DATAIMAGE_DRY_RUN")]
    pub dry_run: bool,
    #[arg(long, env = "METAL3_DATAIMAGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

pub(crate) async fn cleanup(args: CleanupArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let report = cleanup_hosts(client, args.namespace.as_deref(), args.dry_run).await?;
    let done = if args.dry_run {
        "would clean"
    } else {
        "cleaned"
    };
    println!(
        "{done} {} host(s): {} finalizer(s), {} power hold(s), {} state annotation(s)",
        report.hosts, report.finalizers, report.holds, report.records
    );
    Ok(())
}

/// What `cleanup` removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub hosts: usize,
    pub finalizers: usize,
    pub holds: usize,
    pub records: usize,
}

/// The hosts in `namespace`, or in all namespaces.
fn hosts_api(client: Client, namespace: Option<&str>) -> Api<HostResource> {
    match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    }
}

/// Removes this project's finalizer, power hold and state annotation from
/// every host (uninstall). Images left in drives stay there.
pub async fn cleanup_hosts(
    client: Client,
    namespace: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<CleanupReport> {
    let hosts = hosts_api(client.clone(), namespace)
        .list(&ListParams::default())
        .await
        .context("listing BareMetalHosts")?;
    let mut report = CleanupReport::default();
    for host in hosts.items {
        let (Some(ns), Some(name)) = (host.namespace(), host.metadata.name.clone()) else {
            continue;
        };
        let annotations = host.annotations();
        let has_hold = annotations.contains_key(HOLD_ANNOTATION);
        let has_record = annotations.contains_key(STATE_ANNOTATION);
        let has_finalizer = host.finalizers().iter().any(|f| f == FINALIZER);
        if !(has_hold || has_record || has_finalizer) {
            continue;
        }
        report.hosts += 1;
        report.holds += usize::from(has_hold);
        report.records += usize::from(has_record);
        report.finalizers += usize::from(has_finalizer);
        println!(
            "{ns}/{name}:{}{}{}",
            if has_finalizer { " finalizer" } else { "" },
            if has_hold { " power-hold" } else { "" },
            if has_record { " state-annotation" } else { "" }
        );
        if dry_run {
            continue;
        }
        let writer = kube_ops::HostWriter::new(client.clone(), &ns, &name);
        if has_hold || has_record {
            let patch =
                kube_ops::annotations_patch(&[(HOLD_ANNOTATION, None), (STATE_ANNOTATION, None)]);
            writer
                .merge(&patch)
                .await
                .with_context(|| format!("removing annotations from {ns}/{name}"))?;
        }
        if has_finalizer {
            // Re-read for a fresh resourceVersion after the annotation patch.
            let fresh = writer
                .api
                .get(&name)
                .await
                .with_context(|| format!("reading {ns}/{name}"))?;
            let version = fresh.resource_version();
            if let Some(patch) =
                kube_ops::finalizer_patch(fresh.finalizers(), version.as_deref(), false)
            {
                writer
                    .merge(&patch)
                    .await
                    .with_context(|| format!("removing the finalizer from {ns}/{name}"))?;
            }
        }
    }
    Ok(report)
}

/// The upstream DataImage kind.
pub fn dataimage_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(crate::model::GROUP, crate::model::VERSION, "DataImage"),
        "dataimages",
    )
}

/// Start-up check of the BareMetalHost CRD (refuses to run without spec.dataImage).
pub async fn check_bmh_crd(client: Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let crd = api
        .get(crate::crd::BMH_CRD_NAME)
        .await
        .with_context(|| format!("reading CRD {}", crate::crd::BMH_CRD_NAME))?;
    let value = serde_json::to_value(&crd).context("encoding the CRD")?;
    kube_ops::check_crd(&value).map_err(|message| anyhow::anyhow!("refusing to start: {message}"))
}

fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "metal3-dataimage".into());
    let suffix: u32 = rand::random();
    format!("{base}-{suffix:08x}")
}

pub(crate) async fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    check_bmh_crd(client.clone()).await?;
    let ironic = connect_ironic(&args).await?;
    let shutdown = shutdown_on_signal()?;
    let stager = start_image_server(&args, &shutdown)?;
    let metrics = Arc::new(metrics::Metrics::default());
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    // Ready once started, as leader or standby alike.
    let started = Arc::new(std::sync::OnceLock::new());
    let check = started.clone();
    let ready = Arc::new(move || check.get().copied().ok_or_else(|| "not ready".to_string()));
    crate::probes::spawn(args.probe_listen, Arc::new(registry), ready, &shutdown).await?;

    // Upstream DataImage kind: watched only if installed.
    let resource = dataimage_resource();
    let dataimage_api = match &args.namespace {
        Some(ns) => Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource),
        None => Api::<DynamicObject>::all_with(client.clone(), &resource),
    };
    let dataimages = match dataimage_api.list(&ListParams::default().limit(1)).await {
        Ok(_) => Some(dataimage_api),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::info!(
                "the upstream DataImage kind is not installed: no conflict detection needed"
            );
            None
        }
        Err(err) => return Err(err).context("listing upstream DataImages"),
    };

    let lease_namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let lease_stop = CancellationToken::new();
    let (mut leader, lease_task) = leader::start(
        client.clone(),
        &lease_namespace,
        &args.lease_name,
        identity(),
        lease_stop.clone(),
    );
    let _ = started.set(());
    tracing::info!(lease = %format!("{lease_namespace}/{}", args.lease_name), "waiting for leadership");

    let leading = Leading {
        args: &args,
        client,
        ironic,
        stager,
        metrics,
        dataimages,
    };
    let result = loop {
        tokio::select! {
            _ = shutdown.cancelled() => break Ok(()),
            led = leader.wait_for(|leading| *leading) => {
                if led.is_err() {
                    break Err(anyhow::anyhow!("leader election stopped"));
                }
            }
        }
        if !leading.reconcile(&mut leader, &shutdown).await {
            break Ok(());
        }
    };
    // Released only now that reconciling has stopped: the standby takes
    // over within one retry period, never while we still work.
    lease_stop.cancel();
    let _ = lease_task.await;
    result
}

/// The Ironic client from the flags and the operator's settings; refuses to
/// start without a reachable Ironic of a supported version.
async fn connect_ironic(args: &ReconcileArgs) -> anyhow::Result<IronicClient> {
    let env = OperatorEnv::from_lookup(|key| std::env::var(key).ok());
    let resolved = resolve_ironic_config(args, &env, &FileState::read)
        .map_err(|err| anyhow::anyhow!("refusing to start: {err}"))?;
    let endpoint = redact_url(resolved.config.endpoint.as_str()).into_owned();
    let ironic = IronicClient::connect(resolved.config)
        .await
        .map_err(|err| anyhow::anyhow!("refusing to start: Ironic at {endpoint}: {err}"))?;
    tracing::info!(ironic = %endpoint, settings = %resolved.sources.join(", "), "connected to Ironic");
    Ok(ironic)
}

/// A token cancelled at the first SIGTERM or SIGINT (a second one is ignored).
fn shutdown_on_signal() -> anyhow::Result<CancellationToken> {
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let first = move |signal| {
        tracing::info!(signal, "shutting down");
        token.cancel();
    };
    crate::signals::spawn_handler(first, |_| {}).context("installing signal handlers")?;
    Ok(shutdown)
}

/// The image server for staged and built images, when configured.
fn start_image_server(
    args: &ReconcileArgs,
    shutdown: &CancellationToken,
) -> anyhow::Result<Option<Stager>> {
    let Some(config) = args.staging.config() else {
        tracing::warn!(
            "--image-server-url not set: hosts whose dataImage has credentialsName or disableCertificateVerification are not attached"
        );
        return Ok(None);
    };
    let tls = args.staging.server_tls().context("image server TLS")?;
    let stager = Stager::new(config).context("image staging")?;
    let (serving, stop) = (stager.clone(), shutdown.clone().cancelled_owned());
    tokio::spawn(async move {
        if let Err(err) = serving.serve_tls(tls, stop).await {
            tracing::error!(error = %err, "image server stopped");
        }
    });
    Ok(Some(stager))
}

/// What a term of leadership needs.
struct Leading<'a> {
    args: &'a ReconcileArgs,
    client: Client,
    ironic: IronicClient,
    stager: Option<Stager>,
    metrics: Arc<metrics::Metrics>,
    /// The upstream DataImages, when the kind is installed.
    dataimages: Option<Api<DynamicObject>>,
}

impl Leading<'_> {
    /// Reconciles until leadership is lost (`true`) or the process shuts
    /// down (`false`); returns once the controller has stopped.
    async fn reconcile(
        &self,
        leader: &mut tokio::sync::watch::Receiver<bool>,
        shutdown: &CancellationToken,
    ) -> bool {
        let args = self.args;
        tracing::info!("became leader: reconciling");
        self.metrics.leader.set(1);
        let stop = shutdown.child_token();
        let context = self.context(&stop);
        let recoveries = context.health.recoveries();
        let hosts = hosts_api(self.client.clone(), args.namespace.as_deref());
        let mut controller = Controller::new(hosts, watcher::Config::default()).with_config(
            ControllerConfig::default().concurrency(args.max_concurrent.saturating_mul(2)),
        );
        if let Some(api) = &self.dataimages {
            controller = controller.watches_with(
                api.clone(),
                dataimage_resource(),
                watcher::Config::default(),
                |image: DynamicObject| {
                    let (name, namespace) = (image.metadata.name?, image.metadata.namespace?);
                    Some(ObjectRef::<HostResource>::new(&name).within(&namespace))
                },
            );
        }
        // When Ironic answers again after an outage, every host is retried
        // at once (they wait without polling Ironic meanwhile).
        controller = controller.reconcile_all_on(recoveries);
        let run = controller
            .graceful_shutdown_on(stop.clone().cancelled_owned())
            .run(
                controller::reconcile,
                controller::error_policy,
                Arc::new(context),
            )
            .for_each(|result| {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "controller event");
                }
                std::future::ready(())
            });
        tokio::pin!(run);
        let lost = tokio::select! {
            _ = &mut run => false,
            _ = leader.wait_for(|leading| !*leading) => true,
            _ = shutdown.cancelled() => false,
        };
        stop.cancel();
        self.metrics.leader.set(0);
        if lost {
            tracing::warn!("lost leadership: stopped reconciling");
        }
        run.await;
        lost
    }

    /// The controller's context for this term; the DataImage reflector runs
    /// until `stop`.
    fn context(&self, stop: &CancellationToken) -> Context<IronicClient> {
        let args = self.args;
        let mut context = Context::new(
            self.client.clone(),
            self.ironic.clone(),
            DecisionConfig {
                hold_timeout: args.hold_timeout,
                finalizer_timeout: args.finalizer_timeout,
                verify_interval: args.verify_interval,
                ..DecisionConfig::default()
            },
            usize::from(args.max_concurrent),
            self.metrics.clone(),
            std::env::var("POD_NAME").ok(),
        );
        context.stager = self.stager.clone();
        context.dataimages = self.dataimages.as_ref().map(|api| {
            let writer = reflector::store::Writer::<DynamicObject>::new(dataimage_resource());
            let reader = writer.as_reader();
            let stream = reflector::reflector(writer, watcher(api.clone(), Default::default()));
            let stopped = stop.clone().cancelled_owned();
            tokio::spawn(
                stream
                    .take_until(stopped)
                    .for_each(|_| std::future::ready(())),
            );
            (reader, dataimage_resource())
        });
        context
    }
}
