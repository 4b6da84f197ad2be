//! Fleet-scale reconciler benchmark (`scripts/bench-reconcile.sh`): the real
//! `metal3-dataimage reconcile` against a real Ironic with N fake Redfish
//! nodes and a stand-in Kubernetes API server holding N hosts, compared
//! with a bare Ironic client (the floor) in the same run. See docs/bench.md.

mod apiserver;
mod floor;
mod ironic;
// The tests' ISO builder; the benchmark uses a part of it.
#[allow(dead_code)]
#[path = "../../tests/it/support/iso.rs"]
mod iso;
#[allow(dead_code)]
#[path = "../admission/procstat.rs"]
mod procstat;

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};

use apiserver::{ApiServer, Counters, ServerConfig};
use ironic::{IronicCounts, IronicEnv};

#[derive(Parser, Debug)]
#[command(
    name = "reconcile-bench",
    about = "Reconciler fleet benchmark: the real `metal3-dataimage reconcile` against a bare Ironic client"
)]
struct Options {
    /// Short functional run (N = 20, own Ironic environment): judges
    /// correctness, never time. The default unless run by `cargo bench`.
    #[arg(long)]
    smoke: bool,
    /// Set by `cargo bench`: the full run.
    #[arg(long, hide = true)]
    bench: bool,
    /// Host counts to run, e.g. 100,1000 [default: 100; smoke: 20].
    #[arg(long, value_delimiter = ',')]
    hosts: Vec<usize>,
    /// Faults to run after the clean run at the largest N: ironic-stop,
    /// restart (comma-separated) [default: none; `all` = both].
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Seconds Ironic is stopped in the ironic-stop fault.
    #[arg(long, default_value_t = 30)]
    outage: u64,
    /// `--max-concurrent` of the reconciler, and the floor's limit.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The floor's poll interval after its first `GET vmedia`, seconds.
    #[arg(long, default_value_t = 1.0)]
    floor_poll: f64,
    /// `--verify-interval` of the reconciler (its default: 10m).
    #[arg(long, default_value = "10m")]
    verify_interval: String,
    /// Steady-state window after convergence, seconds [default 60; smoke 3].
    #[arg(long)]
    steady: Option<u64>,
    /// Ironic state directory (reused when it runs with enough nodes)
    /// [default: a temporary one, stopped at the end]. tests/run.sh starts
    /// the smoke run's environment beside the Rust build and passes it here.
    #[arg(long, env = "BENCH_IRONIC_STATE")]
    ironic_state: Option<PathBuf>,
    /// Keep the Ironic environment running at the end.
    #[arg(long)]
    keep_ironic: bool,
    /// `tests/ironic/up.sh` timeout per step, seconds.
    #[arg(long, default_value_t = 7200)]
    up_timeout: u64,
    /// The `metal3-dataimage` binary (default: the one cargo built).
    #[arg(long)]
    reconcile_bin: Option<PathBuf>,
    /// Also write the Markdown report to FILE.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Keep the work directory (kubeconfig, reconciler logs).
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let options = match Options::try_parse_from(&args) {
        Ok(o) => o,
        Err(err) => {
            let _ = err.print();
            return if err.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match runtime.block_on(run(options)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: FAILED (see the verdicts above)");
            ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

struct Settings {
    smoke: bool,
    concurrency: usize,
    floor_poll: Duration,
    verify_interval: String,
    steady: Duration,
    outage: Duration,
    bin: PathBuf,
    work: PathBuf,
}

/// One reconciler run at one N.
#[derive(Default)]
struct RunResult {
    label: String,
    hosts: usize,
    floor_seconds: f64,
    floor_requests: IronicCounts,
    floor_failed: Vec<String>,
    converge_seconds: f64,
    attached: usize,
    not_attached: Vec<String>,
    attaching_left: usize,
    rollout_ironic: IronicCounts,
    rollout_kube: Counters,
    steady_seconds: f64,
    steady_ironic: IronicCounts,
    steady_kube: Counters,
    relist_seconds: Option<f64>,
    relist_ironic: IronicCounts,
    relist_kube: Counters,
    gone_sent: u64,
    bookmarks: u64,
    peak_rss_kib: u64,
    cpu_seconds: f64,
    rollout_cpu_seconds: f64,
    reconciler_warnings: usize,
    unknown_paths: Vec<String>,
    fault_note: String,
    image_downloads: u64,
    /// Distinct `status.dataImage.message`s of hosts seen in Error during
    /// the rollout (digits folded), with how many hosts showed each.
    error_messages: std::collections::BTreeMap<String, usize>,
}

fn delta(after: &Counters, before: &Counters) -> Counters {
    Counters {
        host_lists: after.host_lists - before.host_lists,
        host_list_pages: after.host_list_pages - before.host_list_pages,
        host_watches: after.host_watches - before.host_watches,
        host_gets: after.host_gets - before.host_gets,
        host_patches: after.host_patches - before.host_patches,
        status_applies: after.status_applies - before.status_applies,
        status_patches: after.status_patches - before.status_patches,
        noop_writes: after.noop_writes - before.noop_writes,
        host_conflicts: after.host_conflicts - before.host_conflicts,
        event_creates: after.event_creates - before.event_creates,
        event_patches: after.event_patches - before.event_patches,
        lease_reads: after.lease_reads - before.lease_reads,
        lease_writes: after.lease_writes - before.lease_writes,
        secret_gets: after.secret_gets - before.secret_gets,
        other: after.other - before.other,
        unknown: after.unknown[before.unknown.len().min(after.unknown.len())..].to_vec(),
        bookmarks: after.bookmarks - before.bookmarks,
        gone: after.gone - before.gone,
        watch_starts: Vec::new(),
        list_times: Vec::new(),
    }
}

fn host_object(index: usize, node: &str) -> Value {
    json!({
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": format!("host-{index:05}"), "namespace": format!("rack-{:02}", index / 500),
                     "finalizers": ["baremetalhost.metal3.io"], "labels": {"bench": "fleet"}},
        "spec": {"online": true, "externallyProvisioned": true,
                 "bmc": {"address": format!("redfish-virtualmedia://127.0.0.1:8000/redfish/v1/Systems/{node}"),
                         "credentialsName": format!("host-{index:05}-bmc-secret")},
                 "bootMACAddress": format!("52:54:00:{:02x}:{:02x}:{:02x}", index >> 16 & 0xff, index >> 8 & 0xff, index & 0xff)},
        "status": {"provisioning": {"state": "externally provisioned", "ID": node},
                   "poweredOn": true, "operationalStatus": "OK", "errorCount": 0}
    })
}

fn data_image_state(host: &Value) -> &str {
    host.pointer("/status/dataImage/state")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The reconciler process.
struct Reconciler {
    child: Child,
    log: PathBuf,
}

impl Reconciler {
    fn start(
        settings: &Settings,
        kubeconfig: &std::path::Path,
        ironic_url: &str,
        tag: &str,
    ) -> anyhow::Result<Self> {
        let probe = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = settings.work.join(format!("reconcile-{tag}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(&settings.bin)
            .arg("reconcile")
            .args(["--ironic-url", ironic_url])
            .args(["--probe-listen", &probe.to_string()])
            .args(["--max-concurrent", &settings.concurrency.to_string()])
            .args(["--verify-interval", &settings.verify_interval])
            .args(["--leader-election-namespace", "bench"])
            .env("KUBECONFIG", kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("starting metal3-dataimage reconcile")?;
        Ok(Self { child, log })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status();
    }

    /// SIGTERM, then SIGKILL after 15 s.
    fn stop(mut self) {
        self.signal("-TERM");
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn warnings(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|t| {
                t.lines()
                    .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
                    .count()
            })
            .unwrap_or(0)
    }
}

async fn wait_leading(
    api: &ApiServer,
    reconciler: &mut Reconciler,
    timeout: Duration,
) -> anyhow::Result<()> {
    let end = Instant::now() + timeout;
    let watches = api.counters().host_watches;
    loop {
        if !reconciler.alive() {
            let log = std::fs::read_to_string(&reconciler.log).unwrap_or_default();
            bail!("the reconciler exited:\n{}", tail(&log, 30));
        }
        if api.counters().host_watches > watches {
            return Ok(());
        }
        if Instant::now() > end {
            bail!("the reconciler did not start watching hosts within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Records the Error messages of hosts (once per host and message).
fn note_errors(api: &ApiServer, seen: &mut std::collections::HashSet<(String, String)>) {
    api.with_hosts(|hosts| {
        for ((_, name), host) in hosts {
            if data_image_state(host) == "Error" {
                let message = host
                    .pointer("/status/dataImage/message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .chars()
                    .map(|c| if c.is_ascii_digit() { '#' } else { c })
                    .take(200)
                    .collect::<String>();
                seen.insert((name.clone(), message));
            }
        }
    });
}

fn count_states(api: &ApiServer) -> (usize, usize) {
    api.with_hosts(|hosts| {
        let mut attached = 0;
        let mut attaching = 0;
        for host in hosts.values() {
            match data_image_state(host) {
                "Attached" => attached += 1,
                "Attaching" => attaching += 1,
                _ => {}
            }
        }
        (attached, attaching)
    })
}

#[allow(clippy::too_many_lines)]
async fn run_one(
    settings: &Settings,
    env: &IronicEnv,
    client: &metal3_dataimage::ironic::IronicClient,
    image: &ironic::ImageServer,
    n: usize,
    fault: Option<&str>,
) -> anyhow::Result<RunResult> {
    let nodes = &env.nodes[..n];
    let label = match fault {
        None => format!("N={n}"),
        Some(f) => format!("N={n}, fault {f}"),
    };
    eprintln!("bench: {label}: ejecting every CD");
    let left = floor::reset(client, nodes, settings.concurrency).await;
    if !left.is_empty() {
        bail!(
            "could not eject the CD of {} node(s): {:?}",
            left.len(),
            &left[..left.len().min(5)]
        );
    }
    let mut result = RunResult {
        label: label.clone(),
        hosts: n,
        ..RunResult::default()
    };
    let deadline = Duration::from_secs(600 + 2 * n as u64);
    let downloads0 = image.downloads.load(std::sync::atomic::Ordering::Relaxed);

    // The floor.
    eprintln!(
        "bench: {label}: floor (bare client, {} concurrent)",
        settings.concurrency
    );
    let mark = env.log_mark();
    let floor_result = floor::run(
        client,
        nodes,
        &image.url,
        settings.concurrency,
        settings.floor_poll,
        deadline,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    result.floor_requests = env.count_since(mark, None);
    result.floor_seconds = floor_result.seconds;
    result.floor_failed = floor_result.failed;
    eprintln!(
        "bench: {label}: floor {:.1} s, {} requests ({} by its own count), {} attached",
        result.floor_seconds,
        result.floor_requests.total,
        floor_result.requests,
        floor_result.attached
    );
    let left = floor::reset(client, nodes, settings.concurrency).await;
    if !left.is_empty() {
        bail!(
            "could not eject the CD of {} node(s) after the floor",
            left.len()
        );
    }

    // The stand-in API server with N hosts.
    let api = ApiServer::start(ServerConfig {
        bookmark_every: Duration::from_secs(if settings.smoke { 1 } else { 5 }),
        ..ServerConfig::default()
    })
    .await?;
    for (i, node) in nodes.iter().enumerate() {
        api.put_host(host_object(i, node));
    }
    let kubeconfig = settings.work.join(format!("kubeconfig-{n}"));
    std::fs::write(&kubeconfig, api.kubeconfig())?;
    let mut reconciler = Reconciler::start(
        settings,
        &kubeconfig,
        &env.url,
        &format!("{n}-{}", fault.unwrap_or("clean")),
    )?;
    wait_leading(&api, &mut reconciler, Duration::from_secs(60)).await?;
    // Let it see every host once (nothing to do: no dataImage yet).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle_kube = api.counters();
    let cpu0 = procstat::cpu_seconds(reconciler.pid(), procstat::ticks_per_second()).unwrap_or(0.0);

    // The rollout: every host gets dataImage at once.
    eprintln!("bench: {label}: rollout");
    let mark = env.log_mark();
    let t0 = Instant::now();
    api.with_hosts(|_| ());
    for (i, _) in nodes.iter().enumerate() {
        let ns = format!("rack-{:02}", i / 500);
        api.user_patch_host(
            &ns,
            &format!("host-{i:05}"),
            &json!({"spec": {"dataImage": {"url": image.url}}}),
        );
    }
    let mut fault_done = fault.is_none();
    let mut note = String::new();
    let mut peak = 0;
    let mut errors_seen = std::collections::HashSet::new();
    loop {
        note_errors(&api, &mut errors_seen);
        let (attached, attaching) = count_states(&api);
        if let Ok(m) = procstat::memory(reconciler.pid()) {
            peak = peak.max(m.hwm_kib);
        }
        if attached == n {
            break;
        }
        if !fault_done && attached * 2 >= n {
            fault_done = true;
            let at = t0.elapsed().as_secs_f64();
            match fault {
                Some("ironic-stop") => {
                    eprintln!(
                        "bench: {label}: {attached}/{n} attached, {attaching} attaching: stopping Ironic for {:?}",
                        settings.outage
                    );
                    env.ctl(&["stop-api", "noauth"])?;
                    let stopped = Instant::now();
                    tokio::time::sleep(settings.outage).await;
                    env.ctl(&["start-api", "noauth"])?;
                    let _ = write!(
                        note,
                        "Ironic stopped at {at:.1} s ({attached}/{n} attached, {attaching} attaching), started again after {:.1} s",
                        stopped.elapsed().as_secs_f64()
                    );
                }
                Some("restart") => {
                    eprintln!(
                        "bench: {label}: {attached}/{n} attached, {attaching} attaching: killing the reconciler (SIGKILL) and starting a new one"
                    );
                    if let Ok(m) = procstat::memory(reconciler.pid()) {
                        peak = peak.max(m.hwm_kib);
                    }
                    result.rollout_cpu_seconds +=
                        procstat::cpu_seconds(reconciler.pid(), procstat::ticks_per_second())
                            .unwrap_or(0.0)
                            - cpu0;
                    result.reconciler_warnings += reconciler.warnings();
                    reconciler.kill();
                    reconciler = Reconciler::start(
                        settings,
                        &kubeconfig,
                        &env.url,
                        &format!("{n}-restarted"),
                    )?;
                    wait_leading(&api, &mut reconciler, Duration::from_secs(60)).await?;
                    let _ = write!(
                        note,
                        "reconciler killed (SIGKILL) at {at:.1} s ({attached}/{n} attached, {attaching} attaching); the new one took the Lease after {:.1} s",
                        t0.elapsed().as_secs_f64() - at
                    );
                }
                Some(other) => bail!("unknown fault {other}"),
                None => {}
            }
        }
        if t0.elapsed() > deadline {
            break;
        }
        if !reconciler.alive() {
            bail!(
                "the reconciler exited during the rollout (log: {})",
                reconciler.log.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    result.converge_seconds = t0.elapsed().as_secs_f64();
    result.fault_note = note;
    for (_, message) in errors_seen {
        *result.error_messages.entry(message).or_default() += 1;
    }
    let (attached, attaching) = count_states(&api);
    result.attached = attached;
    result.attaching_left = attaching;
    result.not_attached = api.with_hosts(|hosts| {
        hosts
            .iter()
            .filter(|(_, h)| data_image_state(h) != "Attached")
            .map(|((ns, name), h)| {
                format!(
                    "{ns}/{name}: {} {}",
                    data_image_state(h),
                    h.pointer("/status/dataImage/message")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                )
            })
            .collect()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rollout_end = env.log_mark();
    result.rollout_ironic = env.count_since(mark, Some(rollout_end));
    let after_rollout = api.counters();
    result.rollout_kube = delta(&after_rollout, &idle_kube);
    let cpu1 = procstat::cpu_seconds(reconciler.pid(), procstat::ticks_per_second()).unwrap_or(0.0);
    result.rollout_cpu_seconds += cpu1 - if fault == Some("restart") { 0.0 } else { cpu0 };
    eprintln!(
        "bench: {label}: {attached}/{n} attached in {:.1} s ({} Ironic requests)",
        result.converge_seconds, result.rollout_ironic.total
    );

    // Steady state: nothing changes.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mark = env.log_mark();
    let before = api.counters();
    let t = Instant::now();
    tokio::time::sleep(settings.steady).await;
    result.steady_seconds = t.elapsed().as_secs_f64();
    result.steady_ironic = env.count_since(mark, None);
    result.steady_kube = delta(&api.counters(), &before);

    // Watch expiry: 410 Gone, re-list.
    let mark = env.log_mark();
    let before = api.counters();
    let lists = before.list_times.len();
    let expired = Instant::now();
    api.expire();
    let end = Instant::now() + Duration::from_secs(120);
    while Instant::now() < end {
        let c = api.counters();
        let relisted = c.list_times.get(lists).and_then(|(_, done)| *done);
        if let Some(done) = relisted
            && c.watch_starts.iter().any(|(at, _)| *at >= done)
        {
            let watching = c
                .watch_starts
                .iter()
                .find(|(at, _)| *at >= done)
                .map(|(at, _)| *at)
                .unwrap_or(done);
            result.relist_seconds = Some(watching.duration_since(expired).as_secs_f64());
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // What the re-list caused (every host is reconciled again).
    tokio::time::sleep(Duration::from_secs(if settings.smoke { 3 } else { 10 })).await;
    let after = api.counters();
    result.relist_ironic = env.count_since(mark, None);
    result.relist_kube = delta(&after, &before);
    result.gone_sent = after.gone;
    result.bookmarks = after.bookmarks;
    result.unknown_paths = after.unknown.clone();

    if let Ok(m) = procstat::memory(reconciler.pid()) {
        peak = peak.max(m.hwm_kib);
    }
    result.peak_rss_kib = peak;
    result.cpu_seconds =
        procstat::cpu_seconds(reconciler.pid(), procstat::ticks_per_second()).unwrap_or(0.0);
    result.reconciler_warnings += reconciler.warnings();
    result.image_downloads =
        image.downloads.load(std::sync::atomic::Ordering::Relaxed) - downloads0;
    reconciler.stop();
    Ok(result)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "n/a".into()
    }
}

/// The floor's requests as Ironic logged them (anything else in the log
/// meanwhile, e.g. an enrollment still running, is not the floor's).
fn floor_requests(c: &IronicCounts) -> u64 {
    c.post_vmedia + c.get_vmedia
}

/// Requests of the kinds the reconciler sends (the enrollment's lists and
/// state changes are other kinds).
fn reconciler_requests(c: &IronicCounts) -> u64 {
    c.post_vmedia + c.get_vmedia + c.delete_vmedia + c.get_node + c.root
}

/// Correctness problems of a run (smoke and full runs fail on these).
fn problems(r: &RunResult) -> Vec<String> {
    let mut p = Vec::new();
    if !r.floor_failed.is_empty() {
        p.push(format!(
            "floor: {} node(s) failed: {:?}",
            r.floor_failed.len(),
            &r.floor_failed[..r.floor_failed.len().min(3)]
        ));
    }
    if r.attached != r.hosts {
        p.push(format!(
            "{} host(s) not Attached: {:?}",
            r.hosts - r.attached,
            &r.not_attached[..r.not_attached.len().min(3)]
        ));
    }
    if r.attaching_left > 0 {
        p.push(format!("{} host(s) stuck in Attaching", r.attaching_left));
    }
    let doubles = r.rollout_ironic.double_attaches();
    if doubles > 0 {
        p.push(format!(
            "{doubles} node(s) got more than one successful POST vmedia"
        ));
    }
    if r.relist_seconds.is_none() {
        p.push("no re-list after the watch expired (410)".into());
    }
    if r.gone_sent == 0 {
        p.push("no 410 Gone was sent".into());
    }
    if r.bookmarks == 0 {
        p.push("no bookmark was sent (allowWatchBookmarks not asked?)".into());
    }
    if !r.unknown_paths.is_empty() {
        p.push(format!(
            "requests the stand-in does not serve: {:?}",
            &r.unknown_paths[..r.unknown_paths.len().min(5)]
        ));
    }
    let steady_writes = r.steady_kube.host_writes() + r.steady_kube.event_writes();
    if steady_writes > 0 {
        p.push(format!(
            "{steady_writes} Kubernetes write(s) at steady state"
        ));
    }
    p
}

fn verdict(ok: bool) -> &'static str {
    if ok { "met" } else { "**missed**" }
}

#[allow(clippy::too_many_lines)]
fn report(
    results: &[RunResult],
    settings: &Settings,
    env: &IronicEnv,
    machine: &str,
    commit: &str,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Reconciler fleet benchmark\n");
    let _ = writeln!(out, "Machine:\n\n{}\n", machine.trim_end());
    let _ = writeln!(out, "- commit: {commit}");
    let _ = writeln!(
        out,
        "- Ironic: tests/ironic/ environment ({} nodes enrolled, `active`){}",
        env.nodes.len(),
        env.up_seconds
            .map(|s| format!(", started by this run in {s:.0} s"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "- `--max-concurrent {c}` for the reconciler, {c} concurrent requests for the floor; floor polls `GET vmedia` at once, then every {:.1} s; `--verify-interval {}`; steady-state window {} s",
        settings.floor_poll.as_secs_f64(),
        settings.verify_interval,
        settings.steady.as_secs(),
        c = settings.concurrency
    );
    if settings.smoke {
        let _ = writeln!(
            out,
            "- **smoke run**: figures mean nothing, no target is judged"
        );
    }
    let _ = writeln!(out);
    let _ = write!(out, "| figure |");
    for r in results {
        let _ = write!(out, " {} |", r.label);
    }
    let _ = write!(out, " target |\n|---|");
    for _ in results {
        let _ = write!(out, "---:|");
    }
    let _ = writeln!(out, "---|");
    let row = |out: &mut String, name: &str, target: &str, f: &dyn Fn(&RunResult) -> String| {
        let _ = write!(out, "| {name} |");
        for r in results {
            let _ = write!(out, " {} |", f(r));
        }
        let _ = writeln!(out, " {target} |");
    };
    let per = |v: u64, n: usize| v as f64 / n.max(1) as f64;
    row(&mut out, "floor: wall time, s", "", &|r| {
        format!("{:.1}", r.floor_seconds)
    });
    row(
        &mut out,
        "reconciler: all N hosts get dataImage → all N Attached, s",
        "",
        &|r| format!("{:.1}", r.converge_seconds),
    );
    row(&mut out, "converge time / floor", "≤ 1.2×", &|r| {
        format!(
            "{} ({})",
            ratio(r.converge_seconds, r.floor_seconds),
            verdict(r.converge_seconds <= 1.2 * r.floor_seconds)
        )
    });
    row(
        &mut out,
        "floor: Ironic requests per host (POST + GET vmedia)",
        "",
        &|r| format!("{:.2}", per(r.floor_requests.total, r.hosts)),
    );
    row(
        &mut out,
        "reconciler: Ironic requests per attached host",
        "",
        &|r| {
            let c = &r.rollout_ironic;
            format!(
                "{:.2} ({} GET node, {} GET vmedia, {} POST, {} other)",
                per(reconciler_requests(c), r.attached),
                c.get_node,
                c.get_vmedia,
                c.post_vmedia,
                c.root + c.delete_vmedia
            )
        },
    );
    row(
        &mut out,
        "Ironic requests per host / floor",
        "≤ 1.5×",
        &|r| {
            let a = per(reconciler_requests(&r.rollout_ironic), r.attached);
            let b = per(floor_requests(&r.floor_requests), r.hosts);
            format!("{} ({})", ratio(a, b), verdict(a <= 1.5 * b))
        },
    );
    row(
        &mut out,
        "Ironic 409 / 503 / other error answers in the rollout",
        "0 storms",
        &|r| {
            format!(
                "{} / {} / {}",
                r.rollout_ironic.conflicts, r.rollout_ironic.unavailable, r.rollout_ironic.errors
            )
        },
    );
    row(
        &mut out,
        "successful POST vmedia per node: max (double attaches)",
        "1 (0)",
        &|r| {
            format!(
                "{} ({})",
                r.rollout_ironic
                    .posts_per_node
                    .values()
                    .max()
                    .copied()
                    .unwrap_or(0),
                r.rollout_ironic.double_attaches()
            )
        },
    );
    row(
        &mut out,
        "Kubernetes writes per host: merge patches / status applies / status patches / events",
        "",
        &|r| {
            let k = &r.rollout_kube;
            format!(
                "{:.2} / {:.2} / {:.2} / {:.2}",
                per(k.host_patches, r.hosts),
                per(k.status_applies, r.hosts),
                per(k.status_patches, r.hosts),
                per(k.event_writes(), r.hosts)
            )
        },
    );
    row(
        &mut out,
        "409 conflicts on host writes in the rollout",
        "",
        &|r| r.rollout_kube.host_conflicts.to_string(),
    );
    row(
        &mut out,
        "steady state: Ironic requests/s (per host per verify-interval)",
        "≤ 1 read per host per interval",
        &|r| {
            let reads = reconciler_requests(&r.steady_ironic) as f64;
            let rate = reads / r.steady_seconds.max(0.001);
            format!(
                "{:.2}/s in {:.0} s ({:.3})",
                rate,
                r.steady_seconds,
                rate * parse_secs(&settings.verify_interval) / r.hosts.max(1) as f64
            )
        },
    );
    row(&mut out, "steady state: Kubernetes writes", "0", &|r| {
        let w = r.steady_kube.host_writes() + r.steady_kube.event_writes();
        format!("{w} ({})", verdict(w == 0))
    });
    row(
        &mut out,
        "reconciler peak RSS (VmHWM), MiB",
        "≤ 64 at 1,000; ≤ 160 at 5,000",
        &|r| {
            let mib = r.peak_rss_kib as f64 / 1024.0;
            let target = if r.hosts >= 5000 {
                Some(160.0)
            } else if r.hosts >= 1000 {
                Some(64.0)
            } else {
                None
            };
            match target {
                Some(t) => format!("{mib:.1} ({})", verdict(mib <= t)),
                None => format!("{mib:.1}"),
            }
        },
    );
    row(
        &mut out,
        "reconciler CPU seconds: rollout / whole run",
        "",
        &|r| format!("{:.1} / {:.1}", r.rollout_cpu_seconds, r.cpu_seconds),
    );
    row(
        &mut out,
        "hosts not Attached / left in Attaching",
        "0 / 0",
        &|r| format!("{} / {}", r.hosts - r.attached, r.attaching_left),
    );
    row(
        &mut out,
        "watch expired (410 Gone) → re-listed and watching again, s",
        "",
        &|r| {
            r.relist_seconds
                .map_or("none".into(), |s| format!("{s:.2}"))
        },
    );
    row(
        &mut out,
        "after the re-list (10 s): Ironic requests / Kubernetes writes",
        "0 / 0",
        &|r| {
            format!(
                "{} / {}",
                reconciler_requests(&r.relist_ironic),
                r.relist_kube.host_writes() + r.relist_kube.event_writes()
            )
        },
    );
    row(&mut out, "bookmarks sent / 410 sent", "", &|r| {
        format!("{} / {}", r.bookmarks, r.gone_sent)
    });
    row(&mut out, "reconciler WARN/ERROR log lines", "", &|r| {
        r.reconciler_warnings.to_string()
    });
    row(
        &mut out,
        "image downloads by Ironic (floor + reconciler)",
        "",
        &|r| r.image_downloads.to_string(),
    );
    for r in results {
        if !r.fault_note.is_empty() {
            let _ = writeln!(out, "\n{}: {}.", r.label, r.fault_note);
        }
        for (message, hosts) in &r.error_messages {
            let _ = writeln!(
                out,
                "\n{}: {hosts} host(s) were in Error during the rollout with: `{message}`",
                r.label
            );
        }
        let p = problems(r);
        if !p.is_empty() {
            let _ = writeln!(out, "\n{}: **problems**: {}", r.label, p.join("; "));
        }
    }
    out
}

fn parse_secs(text: &str) -> f64 {
    metal3_dataimage::duration::parse_duration(text)
        .map(|d| d.as_secs_f64())
        .unwrap_or(600.0)
}

fn git_commit() -> String {
    Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into())
}

async fn run(options: Options) -> anyhow::Result<bool> {
    let smoke = options.smoke || !options.bench;
    let mut hosts = options.hosts.clone();
    if hosts.is_empty() {
        hosts.push(if smoke { 20 } else { 100 });
    }
    hosts.sort_unstable();
    let largest = *hosts.last().expect("one N");
    let faults: Vec<String> = if options.faults.iter().any(|f| f == "all") {
        vec!["ironic-stop".into(), "restart".into()]
    } else {
        options.faults.clone()
    };
    let work = tempfile::Builder::new()
        .prefix("metal3-dataimage-fleet-")
        .tempdir()?;
    let settings = Settings {
        smoke,
        concurrency: options.concurrency,
        floor_poll: Duration::from_secs_f64(options.floor_poll),
        verify_interval: options.verify_interval.clone(),
        steady: Duration::from_secs(options.steady.unwrap_or(if smoke { 3 } else { 60 })),
        outage: Duration::from_secs(options.outage),
        bin: options
            .reconcile_bin
            .clone()
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_metal3-dataimage"))),
        work: work.path().to_path_buf(),
    };
    let temp_state;
    let state_dir = match &options.ironic_state {
        Some(dir) => dir.clone(),
        None => {
            temp_state = tempfile::Builder::new()
                .prefix("metal3-dataimage-fleet-ironic-")
                .tempdir()?;
            temp_state.path().to_path_buf()
        }
    };
    let t_env = Instant::now();
    let env = IronicEnv::ensure(&state_dir, largest, Duration::from_secs(options.up_timeout))?;
    eprintln!(
        "bench: Ironic ready after {:.0} s",
        t_env.elapsed().as_secs_f64()
    );
    struct Down<'a>(&'a IronicEnv, bool);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            if self.1 {
                eprintln!(
                    "bench: stopping the Ironic environment {}",
                    self.0.state_dir.display()
                );
                self.0.down();
            }
        }
    }
    let _down = Down(&env, env.started && !options.keep_ironic);
    let client =
        metal3_dataimage::ironic::IronicClient::connect(metal3_dataimage::ironic::IronicConfig {
            timeout: Duration::from_secs(60),
            ..metal3_dataimage::ironic::IronicConfig::new(env.url.parse()?)
        })
        .await
        .map_err(|e| anyhow::anyhow!("Ironic at {}: {e}", env.url))?;
    let image =
        ironic::ImageServer::start(iso::data_iso("FLEET", b"fleet benchmark data image")).await?;

    let mut results = Vec::new();
    for &n in &hosts {
        results.push(run_one(&settings, &env, &client, &image, n, None).await?);
    }
    for fault in &faults {
        results.push(run_one(&settings, &env, &client, &image, largest, Some(fault)).await?);
    }
    let machine = procstat::machine_description();
    let text = report(&results, &settings, &env, &machine, &git_commit());
    println!("{text}");
    if let Some(path) = &options.output {
        std::fs::write(path, &text).with_context(|| format!("writing {}", path.display()))?;
    }
    if options.keep {
        let kept = work.keep();
        eprintln!("bench: work directory kept: {}", kept.display());
    }
    let ok = results.iter().all(|r| problems(r).is_empty());
    Ok(ok)
}
