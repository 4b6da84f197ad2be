//! Shared helpers for tests against the real Ironic started by
//! `tests/ironic/up.sh`.
//!
//! The environment comes from the variables up.sh writes to
//! `tests/ironic/.state/env` (`tests/run.sh` exports them); when
//! `IRONIC_URL` is not set the file itself is read. Missing both is a test
//! failure with instructions, never a skip.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::observe::CdromExt as _;
use metal3_dataimage::ironic::{IronicApi, IronicClient, IronicConfig, IronicError, Microversion};

/// Where the test Ironic environment lives.
#[derive(Clone, Debug)]
pub(crate) struct IronicEnv {
    /// noauth Ironic.
    pub url: String,
    /// Its nodes (all `active`): one per concurrently running test.
    pub nodes: Vec<String>,
    /// http_basic Ironic and its credentials.
    pub basic_url: String,
    pub basic_user: String,
    pub basic_password: String,
    pub basic_password_file: PathBuf,
    pub basic_nodes: Vec<String>,
    /// Ironic that tests may stop and start (`ctl.sh stop-api restart`).
    pub restart_url: String,
    pub restart_nodes: Vec<String>,
    /// Ironic 39 pinned to release 26.0 (API 1.91), started on demand.
    pub old_url: String,
    /// The Ironic release of `url`, `basic_url`, `restart_url` (e.g. 39.0.0).
    pub version: String,
    /// The old Ironic release itself (26.1, its own venv), with its nodes
    /// (all `active`): GET vmedia takes an exclusive lock there.
    pub old_release_url: String,
    pub old_release_nodes: Vec<String>,
    pub old_release_version: String,
    /// The Redfish emulator.
    pub sushy_url: String,
    /// Ironic's http_root web server (republished images).
    pub http_url: String,
    /// tests/ironic/ctl.sh.
    pub ctl: PathBuf,
}

const HOWTO: &str = "start the test Ironic first: `tests/ironic/up.sh` (then `set -a; . tests/ironic/.state/env; set +a`), or run everything with `tests/run.sh`";

impl IronicEnv {
    /// Reads the environment; panics with instructions when it is missing.
    pub(crate) fn load() -> Self {
        let file_vars = if std::env::var_os("IRONIC_URL").is_none() {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ironic/.state/env");
            match std::fs::read_to_string(&path) {
                Ok(text) => parse_env_file(&text),
                Err(_) => panic!(
                    "the Ironic test environment is missing: IRONIC_URL is not set and {} does not exist; {HOWTO}",
                    path.display()
                ),
            }
        } else {
            HashMap::new()
        };
        let get = |key: &str| -> String {
            std::env::var(key)
                .ok()
                .or_else(|| file_vars.get(key).cloned())
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| {
                    panic!("{key} is not set in the Ironic test environment; {HOWTO}")
                })
        };
        let list = |key: &str| {
            get(key)
                .split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        Self {
            url: get("IRONIC_URL"),
            nodes: list("IRONIC_NODES"),
            basic_url: get("IRONIC_BASIC_URL"),
            basic_user: get("IRONIC_BASIC_USER"),
            basic_password: get("IRONIC_BASIC_PASSWORD"),
            basic_password_file: PathBuf::from(get("IRONIC_BASIC_PASSWORD_FILE")),
            basic_nodes: list("IRONIC_BASIC_NODES"),
            restart_url: get("IRONIC_RESTART_URL"),
            restart_nodes: list("IRONIC_RESTART_NODES"),
            old_url: get("IRONIC_OLD_URL"),
            version: get("IRONIC_VERSION"),
            old_release_url: get("IRONIC_OLD_RELEASE_URL"),
            old_release_nodes: list("IRONIC_OLD_RELEASE_NODES"),
            old_release_version: get("IRONIC_OLD_RELEASE_VERSION"),
            sushy_url: get("SUSHY_URL"),
            http_url: get("IRONIC_HTTP_URL"),
            ctl: PathBuf::from(get("IRONIC_CTL")),
        }
    }

    /// The noauth node reserved for one test (fixed index per test, so
    /// tests can run concurrently without fighting over node locks).
    pub(crate) fn node(&self, index: usize) -> String {
        self.nodes.get(index).cloned().unwrap_or_else(|| {
            panic!(
                "this test uses Ironic node #{index} but IRONIC_NODES has {}: restart the environment with IRONIC_NODE_COUNT={} tests/ironic/up.sh",
                self.nodes.len(),
                index + 1
            )
        })
    }

    /// The noauth instance of the current release.
    pub(crate) fn current(&self) -> Target {
        Target {
            instance: "noauth",
            version: self.version.clone(),
            url: self.url.clone(),
            nodes: self.nodes.clone(),
        }
    }

    /// The old release's instance (`oldrel`).
    pub(crate) fn old_release(&self) -> Target {
        Target {
            instance: "oldrel",
            version: self.old_release_version.clone(),
            url: self.old_release_url.clone(),
            nodes: self.old_release_nodes.clone(),
        }
    }

    /// The ctl.sh instance serving `base`, for the instances whose nodes
    /// tests lock and fault.
    pub(crate) fn instance_of(&self, base: &str) -> Option<&'static str> {
        if base == self.url {
            Some("noauth")
        } else if base == self.old_release_url {
            Some("oldrel")
        } else {
            None
        }
    }

    pub(crate) fn config(&self) -> IronicConfig {
        IronicConfig::new(self.url.parse().expect("IRONIC_URL is a URL"))
    }

    pub(crate) async fn client(&self) -> IronicClient {
        IronicClient::connect(self.config())
            .await
            .unwrap_or_else(|e| panic!("cannot connect to the test Ironic at {}: {e}", self.url))
    }

    /// Runs `tests/ironic/ctl.sh ARGS`; panics with its output on failure.
    /// A test that stops the `restart` instance's API holds
    /// [`restart_instance`] while it does.
    pub(crate) fn ctl(&self, args: &[&str]) {
        let out = Command::new("bash")
            .arg(&self.ctl)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.ctl.display()));
        assert!(
            out.status.success(),
            "ctl.sh {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// One tested Ironic release: a noauth instance and its nodes.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    /// ctl.sh instance name (`noauth`, `oldrel`).
    pub instance: &'static str,
    /// Ironic release, e.g. `39.0.0`, `26.1.6`.
    pub version: String,
    pub url: String,
    pub nodes: Vec<String>,
}

impl Target {
    /// The node reserved for one test on this release.
    pub(crate) fn node(&self, index: usize) -> String {
        self.nodes.get(index).cloned().unwrap_or_else(|| {
            panic!(
                "this test uses node #{index} of Ironic {} ({}) but it has {}: restart the environment (tests/ironic/up.sh) with more nodes",
                self.version,
                self.instance,
                self.nodes.len()
            )
        })
    }

    pub(crate) async fn client(&self) -> IronicClient {
        IronicClient::connect(IronicConfig::new(self.url.parse().expect("URL")))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "cannot connect to Ironic {} at {}: {e}",
                    self.version, self.url
                )
            })
    }

    /// `GET /v1/nodes/{node}/vmedia` takes a shared lock (works while the
    /// node is reserved) only since Ironic 35.0.0.
    pub(crate) fn get_vmedia_while_locked(&self) -> bool {
        let major: u32 = self
            .version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("bad Ironic version {:?}", self.version));
        major >= 35
    }
}

/// Parses `KEY=value` / `KEY='a b'` lines (the format up.sh writes).
pub(crate) fn parse_env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let l = l.strip_prefix("export ").unwrap_or(l);
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
                .unwrap_or(v);
            Some((k.trim().to_string(), v.to_string()))
        })
        .collect()
}

/// A raw HTTP client for things the product client does not do (node
/// maintenance, the emulator's Redfish resources).
pub(crate) fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// Raw Ironic call with a microversion; returns (status, JSON body or Null).
pub(crate) async fn ironic_raw(
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
    auth: Option<(&str, &str)>,
) -> (u16, serde_json::Value) {
    let mut req = http()
        .request(method, format!("{}{path}", base.trim_end_matches('/')))
        .header("X-OpenStack-Ironic-API-Version", "1.93");
    if let Some((user, password)) = auth {
        req = req.basic_auth(user, Some(password));
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("ironic raw request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("ironic raw body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
    )
}

/// Ironic's supported (min, max) microversions, from its `GET /` document.
pub(crate) async fn server_versions(base: &str) -> (Microversion, Microversion) {
    let (status, root) = ironic_raw(base, reqwest::Method::GET, "/", None, None).await;
    assert_eq!(status, 200, "GET /: {root}");
    let version = |key: &str| {
        root["default_version"][key]
            .as_str()
            .and_then(Microversion::parse)
            .unwrap_or_else(|| panic!("no {key} in {root}"))
    };
    (version("min_version"), version("version"))
}

/// `GET {path}` at another microversion than the product client's (which
/// always sends [`metal3_dataimage::ironic::MIN_MICROVERSION`]), judged by
/// the client's error classification.
pub(crate) async fn get_at_version(
    base: &str,
    version: Microversion,
    path: &str,
) -> Result<serde_json::Value, IronicError> {
    let resp = http()
        .get(format!("{}{path}", base.trim_end_matches('/')))
        .header("X-OpenStack-Ironic-API-Version", version.to_string())
        .send()
        .await
        .expect("ironic request");
    let status = resp.status().as_u16();
    let bytes = resp.bytes().await.expect("ironic body");
    if (200..300).contains(&status) {
        Ok(serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null))
    } else {
        Err(metal3_dataimage::ironic::client::classify(status, &bytes))
    }
}

/// Turns maintenance on or off (`PUT`/`DELETE /v1/nodes/{n}/maintenance`).
pub(crate) async fn set_maintenance(base: &str, node: &str, on: bool) {
    let path = format!("/v1/nodes/{node}/maintenance");
    let (status, body) = if on {
        ironic_raw(
            base,
            reqwest::Method::PUT,
            &path,
            Some(serde_json::json!({"reason": "metal3-dataimage test"})),
            None,
        )
        .await
    } else {
        ironic_raw(base, reqwest::Method::DELETE, &path, None, None).await
    };
    assert_eq!(status, 202, "maintenance {on} on {node}: {body}");
}

/// The emulator's view of the node's virtual CD: (inserted, image).
pub(crate) async fn redfish_cd(
    env: &IronicEnv,
    base: &str,
    node: &str,
    auth: Option<(&str, &str)>,
) -> (bool, String) {
    let (status, doc) = ironic_raw(
        base,
        reqwest::Method::GET,
        &format!("/v1/nodes/{node}"),
        None,
        auth,
    )
    .await;
    assert_eq!(status, 200, "GET node {node}: {doc}");
    let system = doc["driver_info"]["redfish_system_id"]
        .as_str()
        .unwrap_or_else(|| panic!("node {node} has no redfish_system_id: {doc}"));
    let url = format!(
        "{}{system}/VirtualMedia/Cd",
        env.sushy_url.trim_end_matches('/')
    );
    let cd: serde_json::Value = http()
        .get(&url)
        .send()
        .await
        .expect("GET emulator VirtualMedia/Cd")
        .json()
        .await
        .expect("emulator VirtualMedia JSON");
    (
        cd["Inserted"].as_bool().unwrap_or(false),
        cd["Image"].as_str().unwrap_or("").to_string(),
    )
}

/// Polls the emulator until the CD's `Inserted` equals `inserted`.
pub(crate) async fn wait_redfish_cd(
    env: &IronicEnv,
    base: &str,
    node: &str,
    inserted: bool,
    auth: Option<(&str, &str)>,
) -> (bool, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let state = redfish_cd(env, base, node, auth).await;
        if state.0 == inserted || Instant::now() > deadline {
            return state;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Retries `op` while Ironic answers 409 (a previous worker still holds
/// the node lock).
pub(crate) async fn retry_locked<F, Fut>(mut op: F) -> Result<(), IronicError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), IronicError>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match op().await {
            Err(IronicError::Locked(_)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            other => return other,
        }
    }
}

/// Puts a node back to a known state: not in maintenance, CD ejected, no
/// running operation (tests leave nodes as they like; the next run starts
/// from here).
pub(crate) async fn reset_node(env: &IronicEnv, base: &str, client: &IronicClient, node: &str) {
    if let Some(instance) = env.instance_of(base) {
        env.ctl(&["unlock-node", instance, node]);
        env.ctl(&["clear-fault", instance, node]);
    }
    let current = client.get_node(node).await.expect("get node before reset");
    if current.maintenance {
        set_maintenance(base, node, false).await;
    }
    retry_locked(|| client.detach_cdrom(node))
        .await
        .expect("detach during reset");
    let obs = client
        .wait_cdrom(
            node,
            super::observe::Expect::Ejected,
            Duration::from_secs(60),
        )
        .await
        .expect("observe during reset");
    assert_eq!(
        obs.verdict,
        super::observe::Verdict::Confirmed,
        "node {node} did not reset: {obs:?}"
    );
}

/// A tiny image server on 127.0.0.1:0 (GET and HEAD, as Ironic's
/// conductor uses: HEAD to validate, then GET to download).
pub(crate) struct ImageServer {
    pub base: String,
    task: tokio::task::JoinHandle<()>,
}

impl ImageServer {
    pub(crate) async fn start(files: Vec<(&str, Vec<u8>)>) -> Self {
        use axum::extract::{Path as AxPath, State};
        use axum::http::StatusCode;
        use std::sync::Arc;
        let files: Arc<HashMap<String, Vec<u8>>> =
            Arc::new(files.into_iter().map(|(n, d)| (n.to_string(), d)).collect());
        async fn serve(
            State(files): State<Arc<HashMap<String, Vec<u8>>>>,
            AxPath(name): AxPath<String>,
        ) -> Result<Vec<u8>, StatusCode> {
            files.get(&name).cloned().ok_or(StatusCode::NOT_FOUND)
        }
        let app = axum::Router::new()
            .route("/{name}", axum::routing::get(serve))
            .with_state(files);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind image server");
        let addr = listener.local_addr().expect("image server address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base: format!("http://{addr}"),
            task,
        }
    }

    pub(crate) fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }
}

impl Drop for ImageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The suites share one process and one Ironic environment: the tests that
/// stop and start the `restart` instance's API hold this lock, so that one
/// never stops it under another.
pub(crate) async fn restart_instance() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}
