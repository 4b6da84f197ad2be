//! HTTP implementation of the Ironic contract (reqwest + rustls).
//!
//! I/O lives here; parsing and error classification are pure functions
//! (unit-tested below).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use super::{IronicError, MIN_MICROVERSION, Node, VirtualMedia};
use crate::telemetry::redact_url;

/// Header carrying the API microversion ([`MIN_MICROVERSION`]) on every request.
pub(crate) const VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Version";
/// Header with the server's maximum microversion (sent with every answer).
pub(crate) const MAX_VERSION_HEADER: &str = "X-OpenStack-Ironic-API-Maximum-Version";
/// Default per-request timeout.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// Cap on the TCP/TLS connect phase (an unreachable Ironic fails fast).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How to reach Ironic.
#[derive(Clone)]
pub struct IronicConfig {
    /// Ironic's API root, e.g. `https://ironic:6385` (a trailing `/v1` is
    /// accepted). Credentials in the URL are used for basic auth.
    pub endpoint: url::Url,
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM bundle of extra CAs to trust (besides the system roots).
    pub ca_file: Option<PathBuf>,
    /// Skip TLS certificate verification (test setups only).
    pub insecure: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Client certificate (PEM, leaf first, chain may follow) presented to
    /// Ironic (mutual TLS); set together with [`Self::client_key_file`].
    pub client_cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM: PKCS#8, RSA or SEC1).
    pub client_key_file: Option<PathBuf>,
}

impl IronicConfig {
    /// No auth, system CAs, [`DEFAULT_TIMEOUT`].
    pub fn new(endpoint: url::Url) -> Self {
        Self {
            endpoint,
            username: None,
            password: None,
            ca_file: None,
            insecure: false,
            timeout: DEFAULT_TIMEOUT,
            client_cert_file: None,
            client_key_file: None,
        }
    }
}

impl fmt::Debug for IronicConfig {
    // Never print the password (or URL credentials).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IronicConfig")
            .field("endpoint", &redact_url(self.endpoint.as_str()))
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .field("timeout", &self.timeout)
            .field("client_cert_file", &self.client_cert_file)
            .field("client_key_file", &self.client_key_file)
            .finish()
    }
}

/// The client certificate and key of [`IronicConfig`] as one identity
/// (`None` without them); one without the other is a configuration error.
fn client_identity(config: &IronicConfig) -> Result<Option<reqwest::Identity>, IronicError> {
    let (cert_file, key_file) = match (&config.client_cert_file, &config.client_key_file) {
        (None, None) => return Ok(None),
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) | (None, Some(_)) => {
            return Err(IronicError::Config(
                "an ironic client certificate needs both the certificate and the private key file"
                    .to_string(),
            ));
        }
    };
    let (cert, key) = crate::admission::tls::read_cert_files(cert_file, key_file)
        .map_err(|e| IronicError::Config(format!("ironic client certificate: {e:#}")))?;
    // reqwest wants the key and the certificates in one PEM buffer.
    let pem = [key, b"\n".to_vec(), cert].concat();
    reqwest::Identity::from_pem(&pem).map(Some).map_err(|e| {
        IronicError::Config(format!(
            "invalid client certificate {} or key {}: {e}",
            cert_file.display(),
            key_file.display()
        ))
    })
}

/// An Ironic API microversion (`1.93`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Microversion {
    pub major: u32,
    pub minor: u32,
}

impl Microversion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Parses `"1.93"`; `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        let (major, minor) = s.trim().split_once('.')?;
        Some(Self {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

impl fmt::Display for Microversion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A connected client with a negotiated microversion.
#[derive(Clone)]
pub struct IronicClient {
    http: reqwest::Client,
    /// API root with userinfo removed and a trailing slash.
    root: url::Url,
    auth: Option<(String, String)>,
}

impl fmt::Debug for IronicClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IronicClient")
            .field("root", &self.root.as_str())
            .field("auth", &self.auth.as_ref().map(|(user, _)| (user, "***")))
            .finish()
    }
}

/// The version document of `GET /`.
#[derive(Debug, Default, Deserialize)]
struct RootDocument {
    default_version: Option<VersionDocument>,
    #[serde(default)]
    versions: Vec<VersionDocument>,
}

#[derive(Debug, Deserialize)]
struct VersionDocument {
    #[serde(default)]
    id: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    min_version: Option<String>,
}

/// Server's (min, max) from the `GET /` body, falling back to the
/// `X-OpenStack-Ironic-API-{Minimum,Maximum}-Version` headers.
pub(crate) fn parse_version_range(
    body: &[u8],
    header_min: Option<&str>,
    header_max: Option<&str>,
) -> Option<(Microversion, Microversion)> {
    let doc: RootDocument = serde_json::from_slice(body).unwrap_or_default();
    let v1 = doc
        .default_version
        .into_iter()
        .chain(doc.versions.into_iter().filter(|v| v.id == "v1"))
        .find(|v| v.version.is_some());
    // The document's value, else the header's.
    let pick = |field: Option<&String>, header: Option<&str>| {
        (field.map(String::as_str).and_then(Microversion::parse))
            .or_else(|| header.and_then(Microversion::parse))
    };
    let max = pick(v1.as_ref().and_then(|v| v.version.as_ref()), header_max)?;
    let min = pick(v1.as_ref().and_then(|v| v.min_version.as_ref()), header_min)
        .unwrap_or(Microversion::new(1, 1));
    Some((min, max))
}

/// Picks the microversion to use: always [`MIN_MICROVERSION`], the version
/// this client was written for (a newer server answers every call as that
/// version did), refusing servers whose range does not include it.
pub(crate) fn negotiate(
    server_min: Microversion,
    server_max: Microversion,
) -> Result<Microversion, IronicError> {
    let needed = MIN_MICROVERSION;
    if server_max < needed {
        return Err(IronicError::VersionTooOld {
            found: server_max.to_string(),
            needed: needed.to_string(),
        });
    }
    if server_min > needed {
        return Err(IronicError::Http {
            status: 406,
            message: format!(
                "ironic API versions {server_min} to {server_max} do not include {needed}, the version this client speaks"
            ),
        });
    }
    Ok(needed)
}

/// API root from the configured endpoint: userinfo removed (returned
/// separately), a trailing `/v1` dropped, always ending in `/`. (`url`
/// refuses an http(s) URL without a host.)
pub(crate) fn api_root(
    endpoint: &url::Url,
) -> Result<(url::Url, Option<(String, String)>), IronicError> {
    if !matches!(endpoint.scheme(), "http" | "https") {
        return Err(IronicError::Config(format!(
            "ironic URL {} must be http:// or https://",
            redact_url(endpoint.as_str())
        )));
    }
    let mut root = endpoint.clone();
    let creds = if root.username().is_empty() {
        None
    } else {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(std::borrow::Cow::into_owned)
                .map_err(|_| {
                    IronicError::Config("ironic URL credentials are not valid UTF-8".to_string())
                })
        };
        let user = decode(root.username())?;
        let pass = decode(root.password().unwrap_or(""))?;
        Some((user, pass))
    };
    // Infallible for http(s) URLs with a host.
    let _ = root.set_username("");
    let _ = root.set_password(None);
    root.set_query(None);
    root.set_fragment(None);
    let path = root.path().trim_end_matches('/');
    let path = path.strip_suffix("/v1").unwrap_or(path);
    let path = format!("{path}/");
    root.set_path(&path);
    Ok((root, creds))
}

/// Ironic's error message from an error body. Ironic wraps a JSON
/// document in a string: `{"error_message": "{\"faultstring\": ...}"}`
/// (`description` for routing errors); http_basic uses
/// `{"error": {"message": ...}}`. Falls back to the (shortened) body.
pub(crate) fn parse_error_body(body: &[u8]) -> Option<String> {
    let message = |doc: &serde_json::Value| {
        ["faultstring", "description", "message", "title"]
            .into_iter()
            .find_map(|key| doc.get(key)?.as_str().filter(|s| !s.is_empty()))
            .map(str::to_string)
    };
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        if let Some(serde_json::Value::String(s)) = value.get("error_message") {
            return match serde_json::from_str::<serde_json::Value>(s) {
                Ok(inner) => message(&inner).or_else(|| Some(s.clone())),
                Err(_) => Some(s.clone()).filter(|s| !s.is_empty()),
            };
        }
        let nested = [value.get("error_message"), value.get("error"), Some(&value)];
        if let Some(found) = nested.into_iter().flatten().find_map(message) {
            return Some(found);
        }
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(crate::text::truncate(text, 300, "…").into_owned())
}

/// Maps an HTTP error answer to an [`IronicError`]; the message is
/// Ironic's faultstring (credentials redacted).
pub fn classify(status: u16, body: &[u8]) -> IronicError {
    let message = parse_error_body(body)
        .map(|m| redact_url(&m).into_owned())
        .unwrap_or_else(|| {
            StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("no message")
                .to_string()
        });
    match status {
        400 => IronicError::BadRequest(message),
        404 => IronicError::NotFound(message),
        409 => IronicError::Locked(message),
        // 502/504 come from proxies in front of Ironic while it restarts.
        502..=504 => IronicError::Unavailable(message),
        _ => IronicError::Http { status, message },
    }
}

pub(crate) fn parse_node(body: &[u8]) -> Result<Node, String> {
    serde_json::from_slice(body).map_err(|e| format!("unexpected node document: {e}"))
}

pub(crate) fn parse_vmedia(body: &[u8]) -> Result<Vec<VirtualMedia>, String> {
    // 1.93 returns a bare array; accept {"vmedia": [...]} too.
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("unexpected vmedia document: {e}"))?;
    let list = match value {
        serde_json::Value::Array(_) => value,
        serde_json::Value::Object(mut map) => map
            .remove("vmedia")
            .or_else(|| map.remove("virtual_media"))
            .ok_or("unexpected vmedia document: no list")?,
        _ => return Err("unexpected vmedia document: not a list".to_string()),
    };
    serde_json::from_value(list).map_err(|e| format!("unexpected vmedia document: {e}"))
}

/// Describes a transport failure without the URL's credentials.
fn transport_error(method: &Method, url: &url::Url, err: reqwest::Error) -> IronicError {
    let kind = if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let detail = crate::text::error_chain(&err.without_url()).join(": ");
    IronicError::Unavailable(
        redact_url(&format!("{method} {}: {kind}: {detail}", url.as_str())).into_owned(),
    )
}

impl IronicClient {
    /// Builds the client and negotiates the microversion from `GET /`;
    /// refuses servers older than [`super::MIN_MICROVERSION`].
    pub async fn connect(config: IronicConfig) -> Result<Self, IronicError> {
        let (root, url_creds) = api_root(&config.endpoint)?;
        let auth = match (&config.username, &config.password, url_creds) {
            (Some(user), password, _) => Some((user.clone(), password.clone().unwrap_or_default())),
            (None, Some(_), _) => {
                return Err(IronicError::Config(
                    "an ironic password was given without a username".to_string(),
                ));
            }
            (None, None, creds) => creds,
        };
        if config.timeout.is_zero() {
            return Err(IronicError::Config(
                "the ironic timeout must be > 0".to_string(),
            ));
        }
        let extra_roots = match &config.ca_file {
            Some(ca_file) => crate::staging::ca_certificates(ca_file).map_err(|e| {
                IronicError::Config(format!("the CA file {} {e:#}", ca_file.display()))
            })?,
            None => Vec::new(),
        };
        let mut builder = crate::staging::http_client(config.insecure, &extra_roots)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(MAX_CONNECT_TIMEOUT));
        if let Some(identity) = client_identity(&config)? {
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| IronicError::Config(format!("cannot build the HTTP client: {e}")))?;
        let client = Self { http, root, auth };
        client.negotiate_version().await?;
        Ok(client)
    }

    /// `GET /` (no version header): reads the server's version range and
    /// checks that it supports [`super::MIN_MICROVERSION`], the version every
    /// later call sends.
    async fn negotiate_version(&self) -> Result<(), IronicError> {
        let (status, headers, body) = self.call(Method::GET, self.root.clone(), None).await?;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let (min, max) = parse_version_range(
            &body,
            header("X-OpenStack-Ironic-API-Minimum-Version"),
            header(MAX_VERSION_HEADER),
        )
        .ok_or_else(|| IronicError::Http {
            status: status.as_u16(),
            message: format!(
                "{} does not look like an Ironic API (no version information)",
                self.root
            ),
        })?;
        negotiate(min, max)?;
        Ok(())
    }

    fn node_url(&self, node: &str, sub: Option<&str>) -> Result<url::Url, IronicError> {
        if node.trim().is_empty() {
            return Err(IronicError::BadRequest(
                "the ironic node id is empty".to_string(),
            ));
        }
        let mut url = self.root.clone();
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|_| IronicError::Config("ironic URL cannot have a path".to_string()))?;
            segments.pop_if_empty().extend(["v1", "nodes", node]);
            if let Some(sub) = sub {
                segments.push(sub);
            }
        }
        Ok(url)
    }

    /// One API call; returns the status, headers and body of a 2xx answer,
    /// else the classified error. `GET /` goes without the version header.
    async fn call(
        &self,
        method: Method,
        url: url::Url,
        body: Option<&serde_json::Value>,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), IronicError> {
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .header("Accept", "application/json");
        if url != self.root {
            request = request.header(VERSION_HEADER, MIN_MICROVERSION.to_string());
        }
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, Some(password));
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let started = std::time::Instant::now();
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(&method, &url, e))?;
        let (status, headers) = (response.status(), response.headers().clone());
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport_error(&method, &url, e))?;
        tracing::debug!(
            method = %method,
            url = %url,
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "ironic call"
        );
        if status.is_success() {
            Ok((status, headers, bytes.to_vec()))
        } else {
            Err(classify(status.as_u16(), &bytes))
        }
    }

    /// A `GET` whose answer `parse` reads.
    async fn get<T>(
        &self,
        url: url::Url,
        parse: fn(&[u8]) -> Result<T, String>,
    ) -> Result<T, IronicError> {
        let (status, _, body) = self.call(Method::GET, url, None).await?;
        parse(&body).map_err(|message| IronicError::Http {
            status: status.as_u16(),
            message,
        })
    }
}

impl super::IronicApi for IronicClient {
    async fn ping(&self) -> Result<(), IronicError> {
        self.call(Method::GET, self.root.clone(), None).await?;
        Ok(())
    }

    async fn get_node(&self, node: &str) -> Result<Node, IronicError> {
        self.get(self.node_url(node, None)?, parse_node).await
    }

    async fn list_vmedia(&self, node: &str) -> Result<Vec<VirtualMedia>, IronicError> {
        self.get(self.node_url(node, Some("vmedia"))?, parse_vmedia)
            .await
    }

    async fn attach_cdrom(&self, node: &str, image_url: &str) -> Result<(), IronicError> {
        let parsed = url::Url::parse(image_url).map_err(|e| {
            IronicError::BadRequest(format!(
                "image URL {} is invalid: {e}",
                redact_url(image_url)
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(IronicError::BadRequest(format!(
                "image URL {} must be http:// or https://",
                redact_url(image_url)
            )));
        }
        let url = self.node_url(node, Some("vmedia"))?;
        let body = serde_json::json!({"device_type": "cdrom", "image_url": image_url});
        self.call(Method::POST, url, Some(&body)).await?;
        Ok(())
    }

    async fn detach_cdrom(&self, node: &str) -> Result<(), IronicError> {
        let mut url = self.node_url(node, Some("vmedia"))?;
        url.query_pairs_mut().append_pair("device_types", "cdrom");
        self.call(Method::DELETE, url, None).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microversions_parse_and_order() {
        assert_eq!(Microversion::parse("1.93"), Some(Microversion::new(1, 93)));
        assert_eq!(
            Microversion::parse(" 1.115 "),
            Some(Microversion::new(1, 115))
        );
        assert!(Microversion::new(1, 115) > Microversion::new(1, 93));
        assert!(Microversion::new(1, 9) < Microversion::new(1, 89));
        for bad in ["", "1", "1.", "a.b", "1.2.3", "-1.2"] {
            assert_eq!(Microversion::parse(bad), None, "{bad}");
        }
        assert_eq!(Microversion::new(1, 93).to_string(), "1.93");
    }

    const ROOT_39: &str = r#"{"name": "OpenStack Ironic API", "default_version": {"id": "v1", "links": [], "status": "CURRENT", "min_version": "1.1", "version": "1.115"}, "versions": [{"id": "v1", "links": [], "status": "CURRENT", "min_version": "1.1", "version": "1.115"}]}"#;

    #[test]
    fn version_range_from_root_document() {
        let (min, max) = parse_version_range(ROOT_39.as_bytes(), None, None).unwrap();
        assert_eq!(
            (min, max),
            (Microversion::new(1, 1), Microversion::new(1, 115))
        );
    }

    #[test]
    fn version_range_falls_back_to_headers() {
        let (min, max) =
            parse_version_range(b"<html>proxy</html>", Some("1.1"), Some("1.99")).unwrap();
        assert_eq!(
            (min, max),
            (Microversion::new(1, 1), Microversion::new(1, 99))
        );
        assert_eq!(parse_version_range(b"{}", None, None), None);
        assert_eq!(parse_version_range(b"", None, Some("garbage")), None);
    }

    #[test]
    fn negotiation_pins_the_minimum_and_refuses_old_servers() {
        let v = Microversion::new;
        assert_eq!(negotiate(v(1, 1), v(1, 115)).unwrap(), v(1, 93));
        assert_eq!(negotiate(v(1, 1), v(1, 93)).unwrap(), v(1, 93));
        assert_eq!(negotiate(v(1, 93), v(2, 1)).unwrap(), v(1, 93));
        assert!(matches!(
            negotiate(v(1, 94), v(1, 115)),
            Err(IronicError::Http { status: 406, .. })
        ));
        let err = negotiate(v(1, 1), v(1, 91)).unwrap_err();
        assert_eq!(
            err,
            IronicError::VersionTooOld {
                found: "1.91".into(),
                needed: "1.93".into()
            }
        );
        assert!(err.to_string().contains("Ironic 26.1"), "{err}");
    }

    #[test]
    fn api_root_normalises_and_strips_credentials() {
        let (root, creds) = api_root(&"http://127.0.0.1:6385".parse().unwrap()).unwrap();
        assert_eq!(root.as_str(), "http://127.0.0.1:6385/");
        assert_eq!(creds, None);
        let (root, _) = api_root(&"https://ironic.example:6385/v1/".parse().unwrap()).unwrap();
        assert_eq!(root.as_str(), "https://ironic.example:6385/");
        let (root, _) = api_root(&"https://h/baremetal/v1".parse().unwrap()).unwrap();
        assert_eq!(root.as_str(), "https://h/baremetal/");
        let (root, creds) = api_root(&"http://us%40r:p%3Ass@h:1/".parse().unwrap()).unwrap();
        assert_eq!(root.as_str(), "http://h:1/");
        assert_eq!(creds, Some(("us@r".to_string(), "p:ss".to_string())));
        let err = api_root(&"http://u:%ff@h/".parse().unwrap()).unwrap_err();
        assert!(matches!(err, IronicError::Config(_)), "{err:?}");
        let err = api_root(&"ftp://u:secret@h/".parse().unwrap()).unwrap_err();
        assert!(matches!(err, IronicError::Config(_)));
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn error_bodies_yield_the_faultstring() {
        let locked = br#"{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"Node 8c48 is locked by host other-conductor, please retry after the current operation is completed.\", \"debuginfo\": null}"}"#;
        assert_eq!(
            parse_error_body(locked).unwrap(),
            "Node 8c48 is locked by host other-conductor, please retry after the current operation is completed."
        );
        let not_acceptable = br#"{"error_message": "{\"code\": 406, \"title\": \"Not Acceptable\", \"description\": \"Version 1.200 was requested but the minor version is not supported by this service.\"}"}"#;
        assert!(
            parse_error_body(not_acceptable)
                .unwrap()
                .starts_with("Version 1.200 was requested")
        );
        let routing_404 = br#"{"error_message": "{\"code\": 404, \"title\": \"Not Found\", \"description\": \"\"}"}"#;
        assert_eq!(parse_error_body(routing_404).unwrap(), "Not Found");
        let basic = br#"{"error":{"message":"Incorrect username or password","code":401}}"#;
        assert_eq!(
            parse_error_body(basic).unwrap(),
            "Incorrect username or password"
        );
        let object = br#"{"error_message": {"faultstring": "as an object"}}"#;
        assert_eq!(parse_error_body(object).unwrap(), "as an object");
        assert_eq!(parse_error_body(b"Bad Gateway\n").unwrap(), "Bad Gateway");
        assert_eq!(parse_error_body(b"   "), None);
        let long = "x".repeat(1000);
        assert!(parse_error_body(long.as_bytes()).unwrap().chars().count() <= 301);
    }

    #[test]
    fn statuses_are_classified_for_retries() {
        let body = br#"{"error_message": "{\"faultstring\": \"msg\"}"}"#;
        assert_eq!(classify(404, body), IronicError::NotFound("msg".into()));
        assert_eq!(classify(409, body), IronicError::Locked("msg".into()));
        assert_eq!(classify(400, body), IronicError::BadRequest("msg".into()));
        assert_eq!(classify(503, body), IronicError::Unavailable("msg".into()));
        assert_eq!(
            classify(502, b""),
            IronicError::Unavailable("Bad Gateway".into())
        );
        assert_eq!(
            classify(406, body),
            IronicError::Http {
                status: 406,
                message: "msg".into()
            }
        );
        assert_eq!(
            classify(401, b""),
            IronicError::Http {
                status: 401,
                message: "Unauthorized".into()
            }
        );
    }

    #[test]
    fn error_messages_never_carry_url_credentials() {
        let body = br#"{"error_message": "{\"faultstring\": \"Validation of image href https://user:s3cret@img.example/a.iso failed\"}"}"#;
        let err = classify(400, body);
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(
            err.to_string().contains("https://***@img.example/a.iso"),
            "{err}"
        );
    }

    #[test]
    fn node_documents_parse() {
        let body = br#"{"uuid": "8c48", "name": "node-0", "provision_state": "active", "power_state": "power on",
            "target_power_state": null, "reservation": null, "maintenance": false,
            "last_error": "Could not attach device cdrom to node 8c48: Validation of image href http://u:pw@h/x.iso failed",
            "driver_info": {"redfish_password": "******"}}"#;
        let node = parse_node(body).unwrap();
        assert_eq!(node.uuid, "8c48");
        assert_eq!(node.provision_state, crate::ironic::ProvisionState::Active);
        assert_eq!(node.power_state, Some(crate::ironic::PowerState::On));
        assert_eq!(node.reservation, None);
        assert!(!node.maintenance);
        let last_error = node.last_error.unwrap();
        assert!(last_error.contains("http://***@h/x.iso") && !last_error.contains("pw"));
        let minimal = parse_node(br#"{"uuid": "u", "reservation": "", "last_error": ""}"#).unwrap();
        assert_eq!((minimal.reservation, minimal.last_error), (None, None));
        assert!(parse_node(b"[]").is_err());
        assert!(parse_node(br#"{"name": "no uuid"}"#).is_err());
    }

    #[test]
    fn vmedia_documents_parse() {
        let body = br#"[{"media_types": ["CD", "DVD"], "inserted": true, "image": "http://127.0.0.1:8088/redfish/cdrom-u.iso"}, {"media_types": ["Floppy", "USBStick"], "inserted": false, "image": ""}]"#;
        let media = parse_vmedia(body).unwrap();
        assert_eq!(media.len(), 2);
        assert!(media[0].inserted);
        assert_eq!(
            media[0].image.as_deref(),
            Some("http://127.0.0.1:8088/redfish/cdrom-u.iso")
        );
        assert_eq!(media[1].image, None);
        assert_eq!(parse_vmedia(br#"{"vmedia": []}"#).unwrap(), vec![]);
        assert!(parse_vmedia(b"42").is_err());
        assert!(parse_vmedia(br#"[{"inserted": "yes"}]"#).is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let mut config = IronicConfig::new("http://u:urlpw@h:6385".parse().unwrap());
        config.username = Some("admin".into());
        config.password = Some("hunter2".into());
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("urlpw"),
            "{debug}"
        );
    }

    #[test]
    fn client_identity_needs_both_files_and_valid_pem() {
        let dir = tempfile::tempdir().unwrap();
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["metal3-dataimage".to_string()]).unwrap();
        let cert_file = dir.path().join("tls.crt");
        let key_file = dir.path().join("tls.key");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, signing_key.serialize_pem()).unwrap();
        let base = IronicConfig::new("https://127.0.0.1:6385".parse().unwrap());

        assert!(client_identity(&base).unwrap().is_none());
        let both = IronicConfig {
            client_cert_file: Some(cert_file.clone()),
            client_key_file: Some(key_file.clone()),
            ..base.clone()
        };
        assert!(client_identity(&both).unwrap().is_some());

        let cert_only = IronicConfig {
            client_cert_file: Some(cert_file.clone()),
            ..base.clone()
        };
        let err = client_identity(&cert_only).unwrap_err().to_string();
        assert!(
            err.contains("both the certificate and the private key"),
            "{err}"
        );

        let missing_key = IronicConfig {
            client_key_file: Some(dir.path().join("absent.key")),
            ..both.clone()
        };
        let err = client_identity(&missing_key).unwrap_err().to_string();
        assert!(err.contains("absent.key"), "{err}");

        // A certificate where the key should be: no private key in the PEM.
        let swapped = IronicConfig {
            client_key_file: Some(cert_file.clone()),
            ..both
        };
        let err = client_identity(&swapped).unwrap_err().to_string();
        assert!(err.contains("invalid client certificate"), "{err}");
    }
}
