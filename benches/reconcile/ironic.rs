//! The real Ironic side: the project's `tests/ironic/` environment started
//! in a state directory of its own (`IRONIC_STATE_DIR`, `IRONIC_NODE_COUNT`),
//! requests counted from Ironic's own API log (one `ironic.api` line per
//! request served, with method, path and status), and a tiny image server.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub(crate) struct IronicEnv {
    pub state_dir: PathBuf,
    pub url: String,
    pub nodes: Vec<String>,
    pub log: PathBuf,
    ctl: PathBuf,
    /// Started by this run (stopped at the end unless kept).
    pub started: bool,
    /// Seconds `up.sh` took (when started by this run).
    pub up_seconds: Option<f64>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.trim().trim_matches('\'').to_string(),
            )
        })
        .collect()
}

fn answers(url: &str) -> bool {
    let Ok(url) = url::Url::parse(url) else {
        return false;
    };
    let Some(host) = url.host_str() else {
        return false;
    };
    let port = url.port_or_known_default().unwrap_or(80);
    std::net::TcpStream::connect_timeout(
        &format!("{host}:{port}")
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from(([127, 0, 0, 1], port))),
        Duration::from_secs(2),
    )
    .is_ok()
}

impl IronicEnv {
    /// Reuses the environment in `state_dir` when it runs with at least
    /// `count` nodes; starts one (`tests/ironic/up.sh` with
    /// `IRONIC_ENROLL=0`) otherwise. Then enrolls and adopts the nodes in
    /// batches (`enroll.py`; idempotent).
    pub(crate) fn ensure(
        state_dir: &Path,
        count: usize,
        up_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let env_file = state_dir.join("env");
        let t0 = Instant::now();
        let mut started = false;
        let reusable = std::fs::read_to_string(&env_file).ok().is_some_and(|text| {
            let env = parse_env(&text);
            let nodes = env
                .get("IRONIC_NODES")
                .map_or(0, |n| n.split_whitespace().count());
            nodes >= count && env.get("IRONIC_URL").is_some_and(|u| answers(u))
        });
        if reusable {
            eprintln!(
                "bench: reusing the Ironic environment in {}",
                state_dir.display()
            );
        } else {
            eprintln!(
                "bench: starting Ironic for {count} nodes in {} (tests/ironic/up.sh)",
                state_dir.display()
            );
            let status = Command::new("bash")
                .arg(repo().join("tests/ironic/up.sh"))
                .env("IRONIC_STATE_DIR", state_dir)
                .env("IRONIC_NODE_COUNT", count.to_string())
                .env("IRONIC_BASIC_NODE_COUNT", "0")
                .env("IRONIC_ENROLL", "0")
                .env("IRONIC_UP_TIMEOUT", up_timeout.as_secs().to_string())
                .status()
                .context("running tests/ironic/up.sh")?;
            if !status.success() {
                bail!(
                    "tests/ironic/up.sh failed ({status}); logs in {}/log",
                    state_dir.display()
                );
            }
            started = true;
        }
        let text = std::fs::read_to_string(&env_file).context("reading the Ironic env file")?;
        let env = parse_env(&text);
        let t_enroll = Instant::now();
        let batch = std::env::var("BENCH_ENROLL_BATCH").unwrap_or_else(|_| "10".into());
        let output = Command::new(std::env::var("PYTHON").unwrap_or_else(|_| "python3".into()))
            .arg(repo().join("benches/reconcile/enroll.py"))
            .arg(env.get("IRONIC_URL").context("IRONIC_URL missing")?)
            .arg(env.get("SUSHY_URL").context("SUSHY_URL missing")?)
            .arg(count.to_string())
            .arg(batch)
            .arg(up_timeout.as_secs().to_string())
            .stderr(Stdio::inherit())
            .output()
            .context("running benches/reconcile/enroll.py")?;
        if !output.status.success() {
            if started {
                Self::stop_dir(state_dir);
            }
            bail!(
                "enrolling {count} nodes failed; logs in {}/log",
                state_dir.display()
            );
        }
        eprintln!(
            "bench: {count} nodes active; enrolling took {:.0} s",
            t_enroll.elapsed().as_secs_f64()
        );
        let up = started.then(|| t0.elapsed().as_secs_f64());
        Self::from_env(state_dir, &env, count, started, up)
    }

    fn stop_dir(state_dir: &Path) {
        let _ = Command::new("bash")
            .arg(repo().join("tests/ironic/down.sh"))
            .env("IRONIC_STATE_DIR", state_dir)
            .status();
    }

    fn from_env(
        state_dir: &Path,
        env: &HashMap<String, String>,
        count: usize,
        started: bool,
        up_seconds: Option<f64>,
    ) -> anyhow::Result<Self> {
        let nodes: Vec<String> = env
            .get("IRONIC_NODES")
            .context("IRONIC_NODES missing")?
            .split_whitespace()
            .take(count)
            .map(str::to_string)
            .collect();
        if nodes.len() < count {
            bail!("the environment has {} nodes, {count} wanted", nodes.len());
        }
        let log_dir = env
            .get("IRONIC_LOG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| state_dir.join("log"));
        Ok(Self {
            state_dir: state_dir.to_path_buf(),
            url: env.get("IRONIC_URL").context("IRONIC_URL missing")?.clone(),
            nodes,
            log: log_dir.join("ironic-noauth.log"),
            ctl: repo().join("tests/ironic/ctl.sh"),
            started,
            up_seconds,
        })
    }

    /// `tests/ironic/ctl.sh ARGS...` against this environment.
    pub(crate) fn ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let status = Command::new("bash")
            .arg(&self.ctl)
            .args(args)
            .env("IRONIC_STATE_DIR", &self.state_dir)
            .status()
            .context("running tests/ironic/ctl.sh")?;
        if !status.success() {
            bail!("ctl.sh {args:?} failed ({status})");
        }
        Ok(())
    }

    pub(crate) fn down(&self) {
        Self::stop_dir(&self.state_dir);
    }

    /// Current end of the API log (a phase boundary).
    pub(crate) fn log_mark(&self) -> u64 {
        std::fs::metadata(&self.log).map(|m| m.len()).unwrap_or(0)
    }

    /// Requests Ironic served between two marks.
    pub(crate) fn count_since(&self, from: u64, to: Option<u64>) -> IronicCounts {
        let mut counts = IronicCounts::default();
        let Ok(mut file) = std::fs::File::open(&self.log) else {
            return counts;
        };
        if file.seek(SeekFrom::Start(from)).is_err() {
            return counts;
        }
        let mut text = String::new();
        let _ = match to {
            Some(to) => file.take(to.saturating_sub(from)).read_to_string(&mut text),
            None => file.read_to_string(&mut text),
        };
        for line in text.lines() {
            counts.add_line(line);
        }
        counts
    }
}

/// Requests Ironic's API served, from its log.
#[derive(Clone, Debug, Default)]
pub(crate) struct IronicCounts {
    pub total: u64,
    pub post_vmedia: u64,
    pub get_vmedia: u64,
    pub delete_vmedia: u64,
    pub get_node: u64,
    /// `GET /` and `GET /v1` (version negotiation, pings).
    pub root: u64,
    pub other: u64,
    /// 409 answers (node locked).
    pub conflicts: u64,
    /// 503 answers.
    pub unavailable: u64,
    /// Other 4xx/5xx answers.
    pub errors: u64,
    /// Successful `POST vmedia` per node.
    pub posts_per_node: HashMap<String, u32>,
}

impl IronicCounts {
    /// `... INFO ironic.api [req-...] 127.0.0.1 - GET /v1/nodes/X/vmedia - 200 (7.6ms)`
    fn add_line(&mut self, line: &str) {
        if !line.contains(" ironic.api ") {
            return;
        }
        let Some(rest) = line.split("] ").nth(1) else {
            return;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // [client, "-", METHOD, PATH, "-", STATUS, (time)]
        if fields.len() < 6 || fields[1] != "-" || fields[4] != "-" {
            return;
        }
        let (method, path) = (fields[2], fields[3].split('?').next().unwrap_or(""));
        let Ok(status) = fields[5].parse::<u16>() else {
            return;
        };
        self.total += 1;
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method, parts.as_slice()) {
            ("POST", ["v1", "nodes", node, "vmedia"]) => {
                self.post_vmedia += 1;
                if status < 300 {
                    *self.posts_per_node.entry((*node).to_string()).or_default() += 1;
                }
            }
            ("GET", ["v1", "nodes", _, "vmedia"]) => self.get_vmedia += 1,
            ("DELETE", ["v1", "nodes", _, "vmedia"]) => self.delete_vmedia += 1,
            ("GET", ["v1", "nodes", _]) => self.get_node += 1,
            ("GET", [""] | ["v1"]) => self.root += 1,
            _ => self.other += 1,
        }
        match status {
            409 => self.conflicts += 1,
            503 => self.unavailable += 1,
            s if s >= 400 => self.errors += 1,
            _ => {}
        }
    }

    /// Nodes that got more than one successful `POST vmedia`.
    pub(crate) fn double_attaches(&self) -> usize {
        self.posts_per_node.values().filter(|c| **c > 1).count()
    }
}

/// Serves one ISO on 127.0.0.1 (GET and HEAD), counting downloads.
pub(crate) struct ImageServer {
    pub url: String,
    pub downloads: Arc<AtomicU64>,
}

impl ImageServer {
    pub(crate) async fn start(image: Vec<u8>) -> anyhow::Result<Self> {
        let downloads = Arc::new(AtomicU64::new(0));
        let image = Arc::new(image);
        let counter = downloads.clone();
        let app = axum::Router::new().route(
            "/bench-config.iso",
            axum::routing::get(move || {
                let image = image.clone();
                let counter = counter.clone();
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    // Like any web server serving a file: without
                    // Last-Modified, Ironic's image cache downloads the
                    // image again for every attach.
                    (
                        [(
                            axum::http::header::LAST_MODIFIED,
                            "Thu, 01 Jan 2026 00:00:00 GMT",
                        )],
                        image.as_ref().clone(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: format!("http://{addr}/bench-config.iso"),
            downloads,
        })
    }
}
