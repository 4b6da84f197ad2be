//! The driver: certificates, then for each server (baseline, then the real
//! `metal3-dataimage serve`) cold starts, idle memory, the load phases and
//! the final memory; then the table.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Parser;

use crate::{
    baseline::Provider,
    cases, load,
    procstat::{self, Memory},
    report::{self, PhaseKind, PhaseResult, ServerResult},
    tls,
};

#[derive(Debug, Parser)]
#[command(
    name = "admission-bench",
    about = "Admission webhook benchmark: `metal3-dataimage serve` against a bare axum + rustls baseline"
)]
struct Options {
    /// A short run (seconds) that checks everything works and prints the
    /// table; the figures mean nothing. The default unless run by `cargo bench`.
    #[arg(long)]
    smoke: bool,
    /// Set by `cargo bench`: the full run.
    #[arg(long, hide = true)]
    bench: bool,
    /// Measured seconds per load phase (after a warm-up).
    #[arg(long)]
    duration: Option<f64>,
    /// Request rate of the open-loop phases, requests per second.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Keep-alive connections of the open-loop phases.
    #[arg(long, default_value_t = 8)]
    rate_connections: usize,
    /// Keep-alive connections of the maximum-throughput phases.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// Concurrent connectors of the new-connection (handshake) phase.
    #[arg(long, default_value_t = 4)]
    handshake_connections: usize,
    /// Cold starts to time per server and round.
    #[arg(long)]
    cold_starts: Option<usize>,
    /// Rounds; the baselines and the webhook alternate, each figure is the median of
    /// the rounds (default 3; smoke 1).
    #[arg(long)]
    rounds: Option<usize>,
    /// Mixes to run (see tests/fixtures/bench): `update`, `mixed`
    /// [default: update,mixed; smoke: mixed, which has every case].
    #[arg(long, value_delimiter = ',')]
    mixes: Vec<String>,
    /// Do not pin the load client and the servers to different CPUs.
    #[arg(long)]
    no_pin: bool,
    /// rustls providers to run the baseline with, each as its own server in
    /// every round; the table compares the webhook with the fastest one (the
    /// highest max throughput on the first mix) and lists the others.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Provider::AwsLcRs, Provider::Ring])]
    baseline_providers: Vec<Provider>,
    /// The `metal3-dataimage` binary (default: the one cargo built with this bench).
    #[arg(long)]
    serve_bin: Option<PathBuf>,
    /// Also write the report (Markdown) to this file.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Keep the work directory (certificates, server logs) and print its path.
    #[arg(long)]
    keep: bool,
    /// Record a CPU profile of each server during its max-throughput phases
    /// with `perf record` into this directory (first round), and print the
    /// top symbols.
    #[arg(long)]
    perf_dir: Option<PathBuf>,
    /// With --perf-dir: record call graphs too (`--call-graph dwarf`, large files).
    #[arg(long)]
    perf_call_graph: bool,
    /// Start the webhook under this command (split on spaces), e.g.
    /// `valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.out`; it is then
    /// stopped with SIGTERM so the wrapper can write its output.
    #[arg(long)]
    wrap: Option<String>,
    /// Extra argument for `serve` (repeatable), for what-if runs such as
    /// `--webhook-arg=--log-format=json`. The report lists them.
    #[arg(long, allow_hyphen_values = true)]
    webhook_arg: Vec<String>,
    /// Extra environment variable for `serve` (repeatable, `KEY=VALUE`), e.g.
    /// `RUST_LOG=warn` to measure without per-request logs.
    #[arg(long)]
    webhook_env: Vec<String>,
    /// Arguments cargo's test runner may pass (`cargo test -- ...`); ignored.
    #[arg(hide = true, allow_hyphen_values = true)]
    ignored: Vec<String>,
}

struct Settings {
    smoke: bool,
    warmup: Duration,
    measure: Duration,
    idle_wait: Duration,
    cold_starts: usize,
    load_cpu: Option<u32>,
    server_cpu: Option<u32>,
    perf_dir: Option<PathBuf>,
    perf_call_graph: bool,
    rounds: usize,
}

pub(crate) fn main(args: &[String]) -> ExitCode {
    let options = match Options::try_parse_from(
        std::iter::once("admission-bench".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(options) => options,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Returns whether the run worked (servers ready, no failed request).
fn run(options: &Options) -> anyhow::Result<bool> {
    let smoke = options.smoke || !options.bench;
    // Before pinning: the description shows every CPU this run may use.
    let machine = procstat::machine_description();
    let (load_cpu, server_cpu) = if options.no_pin {
        (None, None)
    } else {
        pin_self()
    };
    let measure = options.duration.unwrap_or(if smoke { 1.0 } else { 5.0 });
    let settings = Settings {
        smoke,
        warmup: Duration::from_secs_f64(if smoke { 0.2 } else { 1.0 }),
        measure: Duration::from_secs_f64(measure),
        idle_wait: Duration::from_secs_f64(if smoke { 0.2 } else { 1.0 }),
        cold_starts: options
            .cold_starts
            .unwrap_or(if smoke { 1 } else { 5 })
            .max(1),
        load_cpu,
        server_cpu,
        perf_dir: options.perf_dir.clone(),
        perf_call_graph: options.perf_call_graph,
        rounds: options.rounds.unwrap_or(if smoke { 1 } else { 3 }).max(1),
    };
    if let Some(dir) = &settings.perf_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let rate = if smoke {
        options.rate.min(200.0)
    } else {
        options.rate
    };
    let serve_bin = options
        .serve_bin
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_metal3-dataimage")));
    // Servers run in the work directory: make the path absolute.
    let serve_bin = std::fs::canonicalize(&serve_bin)
        .with_context(|| format!("serve binary {} (build it first)", serve_bin.display()))?;
    let self_bin = std::env::current_exe().context("path of this benchmark binary")?;

    let workdir = tempfile::Builder::new()
        .prefix("metal3-dataimage-bench-")
        .tempdir()
        .context("work directory")?;
    // Certificates in their own directory, as a mounted Secret: `serve`
    // watches it, and the server logs written next to it would wake it.
    let cert_dir = workdir.path().join("certs");
    std::fs::create_dir(&cert_dir).context("certificate directory")?;
    let certs = tls::generate(&cert_dir)?;
    let client_tls = tls::client_config(&certs.ca_der)?;
    let mix_names: Vec<String> = if !options.mixes.is_empty() {
        options.mixes.clone()
    } else if smoke {
        vec!["mixed".to_string()]
    } else {
        vec!["update".to_string(), "mixed".to_string()]
    };
    let mut mixes = Vec::new();
    for name in &mix_names {
        mixes.push((name.clone(), Arc::new(cases::mix(name)?)));
    }

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("load client runtime")?;

    let mut providers = options.baseline_providers.clone();
    providers.dedup();
    anyhow::ensure!(!providers.is_empty(), "--baseline-providers: none given");
    let mut baseline_rounds: Vec<Vec<ServerResult>> = vec![Vec::new(); providers.len()];
    let mut webhook_rounds = Vec::new();
    let servers: Vec<Server> = providers
        .iter()
        .map(|provider| Server::Baseline(*provider))
        .chain([Server::Webhook])
        .collect();
    for (round, server) in
        (0..settings.rounds).flat_map(|round| servers.iter().map(move |server| (round, *server)))
    {
        eprintln!(
            "bench: round {}/{}: {} ...",
            round + 1,
            settings.rounds,
            server.name()
        );
        let spawn = SpawnSpec {
            server,
            serve_bin: &serve_bin,
            self_bin: &self_bin,
            cert: &certs.cert_file,
            key: &certs.key_file,
            workdir: workdir.path(),
            cpu: settings.server_cpu,
            wrap: match server {
                Server::Webhook => options.wrap.as_deref(),
                Server::Baseline(_) => None,
            },
            extra_args: match server {
                Server::Webhook => &options.webhook_arg,
                Server::Baseline(_) => &[],
            },
            extra_env: match server {
                Server::Webhook => &options.webhook_env,
                Server::Baseline(_) => &[],
            },
        };
        let phases = phase_plan(options, &settings, rate, &mix_names);
        let profile = round == 0;
        let result = measure_server(
            &spawn,
            &settings,
            profile,
            &runtime,
            &client_tls,
            &mixes,
            &phases,
        )?;
        match server {
            Server::Baseline(provider) => {
                let index = providers.iter().position(|p| *p == provider);
                baseline_rounds[index.unwrap_or(0)].push(result);
            }
            Server::Webhook => webhook_rounds.push(result),
        }
    }
    let baselines: Vec<(Provider, ServerResult)> = providers
        .iter()
        .zip(&baseline_rounds)
        .map(|(provider, rounds)| (*provider, ServerResult::combine(rounds)))
        .collect();
    // The strongest floor: the highest max throughput on the first mix.
    let reference = |result: &ServerResult| {
        result
            .phases
            .iter()
            .find(|phase| phase.kind == PhaseKind::MaxThroughput)
            .map_or(0.0, |phase| phase.rate)
    };
    let best = (0..baselines.len())
        .max_by(|a, b| reference(&baselines[*a].1).total_cmp(&reference(&baselines[*b].1)))
        .unwrap_or(0);
    let baseline = baselines[best].1.clone();
    let webhook = ServerResult::combine(&webhook_rounds);

    let run = RunInfo {
        rate,
        serve_bin: &serve_bin,
        machine: &machine,
        mixes: &mixes,
    };
    let mut report = render_report(options, &settings, &run, &webhook, &baseline);
    report.push_str(&report::baselines_section(
        &baselines
            .iter()
            .map(|(provider, result)| (provider.name(), result))
            .collect::<Vec<_>>(),
        best,
        &webhook,
    ));
    let mut per_round: Vec<(String, &[ServerResult])> = providers
        .iter()
        .zip(&baseline_rounds)
        .map(|(provider, rounds)| (format!("baseline ({})", provider.name()), rounds.as_slice()))
        .collect();
    per_round.push(("webhook".to_string(), webhook_rounds.as_slice()));
    report.push_str(&report::rounds_section(&per_round, best));
    for (provider, result) in &baselines {
        for (label, profile) in &result.profiles {
            report.push_str(&format!(
                "\nCPU profile, baseline ({}), {label} (perf, cpu-clock, self time, symbols ≥ 1%):\n\n```text\n{profile}\n```\n",
                provider.name()
            ));
        }
    }
    print!("{report}");
    if let Some(path) = &options.output {
        std::fs::write(path, &report).with_context(|| format!("write {}", path.display()))?;
    }
    if options.keep {
        let kept = workdir.keep();
        eprintln!("bench: work directory kept: {}", kept.display());
    }
    let ok = webhook.errors() == 0 && baselines.iter().all(|(_, result)| result.errors() == 0);
    if !ok {
        eprintln!("bench: some requests failed (see the errors rows and notes above)");
    }
    Ok(ok)
}

/// Pins this process (the load client) to the first allowed CPU and returns
/// (load CPU, server CPU) when there are at least two CPUs and `taskset`.
fn pin_self() -> (Option<u32>, Option<u32>) {
    let cpus = procstat::allowed_cpus();
    if cpus.len() < 2 {
        return (None, None);
    }
    let pinned = Command::new("taskset")
        .args(["-pc", &cpus[0].to_string(), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if pinned {
        (Some(cpus[0]), Some(cpus[1]))
    } else {
        (None, None)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Server {
    Baseline(Provider),
    Webhook,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Self::Baseline(Provider::Ring) => "baseline-ring",
            Self::Baseline(Provider::AwsLcRs) => "baseline-aws-lc-rs",
            Self::Webhook => "webhook",
        }
    }
}

struct SpawnSpec<'a> {
    server: Server,
    serve_bin: &'a Path,
    self_bin: &'a Path,
    cert: &'a Path,
    key: &'a Path,
    workdir: &'a Path,
    cpu: Option<u32>,
    wrap: Option<&'a str>,
    extra_args: &'a [String],
    extra_env: &'a [String],
}

/// A started server; killed when dropped so a failed run leaves nothing behind.
struct Running {
    child: Child,
    listen: SocketAddr,
    log: PathBuf,
    /// Stop with SIGTERM and wait (a wrapper such as valgrind writes its
    /// output at exit) instead of SIGKILL.
    graceful: bool,
}

impl Running {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn stop(mut self) {
        if self.graceful {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    listener.local_addr().context("free port address")
}

/// Starts the server and returns it with the time from spawn to the first
/// `/readyz` 200.
fn start(spec: &SpawnSpec, attempt: usize) -> anyhow::Result<(Running, Duration)> {
    let listen = free_port()?;
    let probe = free_port()?;
    let log = spec
        .workdir
        .join(format!("{}-{attempt}.log", spec.server.name()));
    let log_file = std::fs::File::create(&log).context("server log file")?;
    let program = match spec.server {
        Server::Baseline(_) => spec.self_bin,
        Server::Webhook => spec.serve_bin,
    };
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Some(cpu) = spec.cpu {
        argv.extend(["taskset".into(), "-c".into(), cpu.to_string().into()]);
    }
    if let Some(wrap) = spec.wrap {
        argv.extend(wrap.split_whitespace().map(Into::into));
    }
    argv.push(program.into());
    let mut command = Command::new(&argv[0]);
    command.args(&argv[1..]);
    match spec.server {
        Server::Baseline(provider) => command
            .arg("baseline-server")
            .arg("--provider")
            .arg(provider.name()),
        Server::Webhook => command.arg("serve"),
    };
    command
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--probe-listen")
        .arg(probe.to_string())
        .arg("--tls-cert-file")
        .arg(spec.cert)
        .arg("--tls-key-file")
        .arg(spec.key);
    // Default settings: no inherited configuration, no cluster access.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("METAL3_DATAIMAGE_") {
            command.env_remove(&key);
        }
    }
    command
        .env_remove("RUST_LOG")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBERNETES_SERVICE_PORT")
        .env("KUBECONFIG", spec.workdir.join("no-kubeconfig"))
        .args(spec.extra_args)
        .current_dir(spec.workdir)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().context("server log file")?)
        .stderr(log_file);
    for pair in spec.extra_env {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--webhook-env {pair:?}: expected KEY=VALUE"))?;
        command.env(key, value);
    }
    let started = Instant::now();
    let child = command
        .spawn()
        .with_context(|| format!("start {}", program.display()))?;
    let mut running = Running {
        child,
        listen,
        log,
        graceful: spec.wrap.is_some(),
    };
    let deadline = started + Duration::from_secs(if spec.wrap.is_some() { 300 } else { 60 });
    loop {
        if ready(probe) {
            return Ok((running, started.elapsed()));
        }
        if let Some(status) = running.child.try_wait().context("wait for server")? {
            anyhow::bail!(
                "{} exited with {status} before /readyz answered 200; its log:\n{}",
                spec.server.name(),
                log_tail(&running.log)
            );
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "{} not ready in time; its log:\n{}",
                spec.server.name(),
                log_tail(&running.log)
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `GET /readyz` on the plain-HTTP probe listener answers 200.
fn ready(probe: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&probe, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let _ = stream.set_nodelay(true);
    let request = format!("GET /readyz HTTP/1.1\r\nHost: {probe}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).is_ok()
        && (head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

struct PlannedPhase {
    label: String,
    mix: usize,
    kind: PhaseKind,
    phase: load::Phase,
}

fn phase_plan(
    options: &Options,
    settings: &Settings,
    rate: f64,
    mix_names: &[String],
) -> Vec<PlannedPhase> {
    let mut plan = Vec::new();
    for (index, name) in mix_names.iter().enumerate() {
        plan.push(PlannedPhase {
            label: format!("{name}, {rate:.0} req/s open loop"),
            mix: index,
            kind: PhaseKind::FixedRate,
            phase: load::Phase {
                mode: load::Mode::FixedRate(rate),
                connections: options.rate_connections.max(1),
                warmup: settings.warmup,
                measure: settings.measure,
            },
        });
        plan.push(PlannedPhase {
            label: format!("{name}, max throughput, {} conns", options.connections),
            mix: index,
            kind: PhaseKind::MaxThroughput,
            phase: load::Phase {
                mode: load::Mode::MaxThroughput,
                connections: options.connections.max(1),
                warmup: settings.warmup,
                measure: settings.measure,
            },
        });
    }
    plan.push(PlannedPhase {
        label: format!(
            "new TLS connection per request, {} connectors",
            options.handshake_connections
        ),
        mix: 0,
        kind: PhaseKind::NewConnections,
        phase: load::Phase {
            mode: load::Mode::NewConnections,
            connections: options.handshake_connections.max(1),
            warmup: settings.warmup / 2,
            measure: settings.measure / 2,
        },
    });
    plan
}

fn measure_server(
    spec: &SpawnSpec,
    settings: &Settings,
    profile: bool,
    runtime: &tokio::runtime::Runtime,
    client_tls: &Arc<rustls::ClientConfig>,
    mixes: &[(String, Arc<Vec<cases::Case>>)],
    phases: &[PlannedPhase],
) -> anyhow::Result<ServerResult> {
    let mut result = ServerResult::default();
    let mut running = None;
    for attempt in 0..settings.cold_starts {
        if let Some(previous) = running.take() {
            Running::stop(previous);
        }
        let (server, elapsed) = start(spec, attempt)?;
        result.cold_start_ms.push(elapsed.as_secs_f64() * 1000.0);
        running = Some(server);
    }
    let server = running.context("no server started")?;
    std::thread::sleep(settings.idle_wait);
    let pid = server.pid();
    let idle = procstat::memory(pid)?;
    result.idle_rss_kib = idle.rss_kib;
    result.idle_anon_kib = idle.anon_kib;
    result.idle_file_kib = idle.file_kib;
    let ticks = procstat::ticks_per_second();
    let target = load::Target {
        addr: server.listen,
        tls: Arc::clone(client_tls),
        check_verdict: spec.server == Server::Webhook,
    };
    for planned in phases {
        let cases = Arc::clone(&mixes[planned.mix].1);
        let profiler = match (&settings.perf_dir, planned.kind) {
            (Some(dir), PhaseKind::MaxThroughput) if profile => Some(Profiler::start(
                dir,
                spec.server,
                &planned.label,
                pid,
                settings.perf_call_graph,
            )?),
            _ => None,
        };
        let cpu_before = procstat::cpu_seconds(pid, ticks)?;
        let switches_before = procstat::context_switches(pid);
        let outcome = runtime.block_on(load::run(&target, cases, &planned.phase))?;
        let cpu = procstat::cpu_seconds(pid, ticks)? - cpu_before;
        let switches = procstat::context_switches(pid).saturating_sub(switches_before);
        if let Some(profiler) = profiler {
            result
                .profiles
                .push((planned.label.clone(), profiler.finish()?));
        }
        result.total_requests += outcome.completed_total;
        let ms = |quantile: f64| outcome.histogram.value_at_quantile(quantile) as f64 / 1e6;
        let phase = PhaseResult {
            label: planned.label.clone(),
            kind: planned.kind,
            rate: outcome.rate,
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            max_ms: outcome.histogram.max() as f64 / 1e6,
            errors: outcome.errors,
            error_samples: outcome.error_samples,
            cpu_seconds: cpu,
            cpu_us_per_request: if outcome.completed_total == 0 {
                0.0
            } else {
                cpu * 1e6 / outcome.completed_total as f64
            },
            switches_per_request: if outcome.completed_total == 0 {
                0.0
            } else {
                switches as f64 / outcome.completed_total as f64
            },
        };
        eprintln!(
            "bench: {} | {}: {:.0}/s p50 {:.3} ms p99 {:.3} ms max {:.3} ms, errors {}, CPU {:.2} s = {:.1} µs/req",
            spec.server.name(),
            phase.label,
            phase.rate,
            phase.p50_ms,
            phase.p99_ms,
            phase.max_ms,
            phase.errors,
            phase.cpu_seconds,
            phase.cpu_us_per_request
        );
        result.phases.push(phase);
    }
    let after: Memory = procstat::memory(pid)?;
    result.after_load_rss_kib = after.rss_kib;
    result.after_load_anon_kib = after.anon_kib;
    result.peak_rss_kib = after.hwm_kib;
    result.log_bytes = std::fs::metadata(&server.log).map_or(0, |m| m.len());
    if result.errors() > 0 {
        eprintln!(
            "bench: {} log tail:\n{}",
            spec.server.name(),
            log_tail(&server.log)
        );
    }
    server.stop();
    Ok(result)
}

/// `perf record` attached to a server for one phase.
struct Profiler {
    child: Child,
    data: PathBuf,
}

impl Profiler {
    fn start(
        dir: &Path,
        server: Server,
        label: &str,
        pid: u32,
        call_graph: bool,
    ) -> anyhow::Result<Self> {
        let slug: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        let data = dir.join(format!("{}-{slug}.perf.data", server.name()));
        let mut command = Command::new("perf");
        command.args([
            "record",
            "-e",
            "cpu-clock",
            "-F",
            "1999",
            "-p",
            &pid.to_string(),
        ]);
        if call_graph {
            command.args(["--call-graph", "dwarf,16384"]);
        }
        let child = command
            .arg("-o")
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start perf record (is perf installed?)")?;
        // Let perf attach before the load starts.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Self { child, data })
    }

    /// Stops the recording (SIGINT, as perf expects) and returns the top of
    /// the flat profile.
    fn finish(mut self) -> anyhow::Result<String> {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let report = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "--no-children",
                "--sort",
                "dso,symbol",
                "--percent-limit",
                "1",
                "-i",
            ])
            .arg(&self.data)
            .output()
            .context("perf report")?;
        let text = String::from_utf8_lossy(&report.stdout);
        let top: Vec<&str> = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .take(30)
            .collect();
        // perf pads its columns with spaces and `-` placeholders.
        let top: Vec<&str> = top
            .iter()
            .map(|line| line.trim_end_matches([' ', '-']))
            .collect();
        Ok(format!("{}\n{}", self.data.display(), top.join("\n")))
    }
}

/// `git describe --always --dirty` of the checkout this bench was built from.
fn git_commit() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| format!("`{}`", text.trim()))
        .unwrap_or_else(|| "unknown".to_string())
}

/// What the report says about the run besides the figures.
struct RunInfo<'a> {
    rate: f64,
    serve_bin: &'a Path,
    machine: &'a str,
    mixes: &'a [(String, Arc<Vec<cases::Case>>)],
}

fn render_report(
    options: &Options,
    settings: &Settings,
    run: &RunInfo,
    webhook: &ServerResult,
    baseline: &ServerResult,
) -> String {
    let RunInfo {
        rate,
        serve_bin,
        machine,
        mixes,
    } = *run;
    let mut out = String::new();
    let mode = if settings.smoke {
        "SMOKE run (checks that the benchmark works; the figures mean nothing)"
    } else {
        "full run"
    };
    out.push_str(&format!("## Admission benchmark: {mode}\n\n"));
    out.push_str(machine);
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| arg != "--bench")
        .collect();
    out.push_str(&format!(
        "- command: `scripts/bench.sh{}{}` at commit {}\n",
        if args.is_empty() { "" } else { " " },
        args.join(" "),
        git_commit()
    ));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let extra: Vec<&str> = options
        .webhook_env
        .iter()
        .chain(&options.webhook_arg)
        .map(String::as_str)
        .collect();
    let settings_text = if extra.is_empty() {
        "default settings, logging included".to_string()
    } else {
        format!("NOT default: {}", extra.join(" "))
    };
    out.push_str(&format!(
        "- webhook: `{} serve` ({settings_text}); benchmark binary built {profile}\n",
        serve_bin.display()
    ));
    out.push_str(&match (settings.load_cpu, settings.server_cpu) {
        (Some(load), Some(server)) => {
            format!("- pinning: load client on CPU {load} (one thread), each server on CPU {server} (taskset)\n")
        }
        _ => "- pinning: none (load client and server share the CPUs)\n".to_string(),
    });
    out.push_str(&format!(
        "- rounds: {} (the baselines ({}) and the webhook alternate, each freshly started; every figure is the median of the rounds, peak RSS the highest, cold starts over all starts); the table's baseline is the fastest provider (max throughput, first mix), the others are listed below it\n",
        settings.rounds,
        options
            .baseline_providers
            .iter()
            .map(|provider| provider.name())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    out.push_str(&format!(
        "- load: HTTPS (TLS 1.3, ALPN http/1.1, no session resumption), warm-up {:.1} s + {:.1} s measured per phase; open loop at {rate:.0} req/s over {} keep-alive connections (a request due while its connection is still busy is timed from its intended send time: no coordinated omission); max throughput over {} connections; new-connection phase with {} connectors\n",
        settings.warmup.as_secs_f64(),
        settings.measure.as_secs_f64(),
        options.rate_connections,
        options.connections,
        options.handshake_connections,
    ));
    for (name, cases) in mixes {
        out.push_str(&format!("- mix `{name}`: {}\n", cases::describe(cases)));
    }
    out.push('\n');
    out.push_str(&report::render(webhook, baseline, !settings.smoke));
    let notes = format!(
        "{}{}",
        report::error_notes("webhook", webhook),
        report::error_notes("baseline", baseline)
    );
    if !notes.is_empty() {
        out.push_str("\nErrors (first samples):\n\n");
        out.push_str(&notes);
    }
    for (name, result) in [("webhook", webhook)] {
        for (label, profile) in &result.profiles {
            out.push_str(&format!(
                "\nCPU profile, {name}, {label} (perf, cpu-clock, self time, symbols ≥ 1%):\n\n```text\n{profile}\n```\n"
            ));
        }
    }
    out
}
