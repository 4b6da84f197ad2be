//! The result table: webhook against baseline, ratios, and the targets.

use std::fmt::Write;

/// What one load phase measured on one server.
#[derive(Clone, Debug)]
pub(crate) struct PhaseResult {
    /// e.g. `update, 1000 req/s open loop`.
    pub label: String,
    pub kind: PhaseKind,
    pub rate: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Server CPU (user + system) during the phase, warm-up included.
    pub cpu_seconds: f64,
    /// `cpu_seconds` divided by every request of the phase, warm-up included.
    pub cpu_us_per_request: f64,
    /// Server context switches divided by every request of the phase.
    pub switches_per_request: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PhaseKind {
    FixedRate,
    MaxThroughput,
    NewConnections,
}

/// Everything measured on one server.
#[derive(Clone, Debug, Default)]
pub(crate) struct ServerResult {
    pub cold_start_ms: Vec<f64>,
    pub idle_rss_kib: u64,
    pub idle_anon_kib: u64,
    pub idle_file_kib: u64,
    pub after_load_rss_kib: u64,
    pub after_load_anon_kib: u64,
    pub peak_rss_kib: u64,
    pub log_bytes: u64,
    pub total_requests: u64,
    pub phases: Vec<PhaseResult>,
    /// (phase label, top of the flat CPU profile) when `--perf-dir` is set.
    pub profiles: Vec<(String, String)>,
}

impl ServerResult {
    pub(crate) fn cold_start_median_ms(&self) -> f64 {
        let mut sorted = self.cold_start_ms.clone();
        sorted.sort_by(f64::total_cmp);
        sorted.get(sorted.len() / 2).copied().unwrap_or(f64::NAN)
    }

    pub(crate) fn cold_start_max_ms(&self) -> f64 {
        self.cold_start_ms.iter().copied().fold(f64::NAN, f64::max)
    }

    pub(crate) fn errors(&self) -> u64 {
        self.phases.iter().map(|p| p.errors).sum()
    }

    /// Combines rounds of the same server: the median of each figure, the
    /// highest peak RSS, every cold start, summed errors and log volume.
    pub(crate) fn combine(rounds: &[ServerResult]) -> ServerResult {
        let Some(first) = rounds.first() else {
            return ServerResult::default();
        };
        let median_u64 = |f: &dyn Fn(&ServerResult) -> u64| {
            let mut values: Vec<u64> = rounds.iter().map(f).collect();
            values.sort_unstable();
            values[values.len() / 2]
        };
        let phases = first
            .phases
            .iter()
            .enumerate()
            .map(|(index, phase)| {
                let same: Vec<&PhaseResult> =
                    rounds.iter().filter_map(|r| r.phases.get(index)).collect();
                let median = |f: &dyn Fn(&PhaseResult) -> f64| {
                    let mut values: Vec<f64> = same.iter().map(|p| f(p)).collect();
                    values.sort_by(f64::total_cmp);
                    values[values.len() / 2]
                };
                let mut error_samples: Vec<String> = same
                    .iter()
                    .flat_map(|p| p.error_samples.iter().cloned())
                    .collect();
                error_samples.truncate(5);
                PhaseResult {
                    label: phase.label.clone(),
                    kind: phase.kind,
                    rate: median(&|p| p.rate),
                    p50_ms: median(&|p| p.p50_ms),
                    p90_ms: median(&|p| p.p90_ms),
                    p99_ms: median(&|p| p.p99_ms),
                    p999_ms: median(&|p| p.p999_ms),
                    max_ms: median(&|p| p.max_ms),
                    errors: same.iter().map(|p| p.errors).sum(),
                    error_samples,
                    cpu_seconds: median(&|p| p.cpu_seconds),
                    cpu_us_per_request: median(&|p| p.cpu_us_per_request),
                    switches_per_request: median(&|p| p.switches_per_request),
                }
            })
            .collect();
        ServerResult {
            cold_start_ms: rounds
                .iter()
                .flat_map(|r| r.cold_start_ms.iter().copied())
                .collect(),
            idle_rss_kib: median_u64(&|r| r.idle_rss_kib),
            idle_anon_kib: median_u64(&|r| r.idle_anon_kib),
            idle_file_kib: median_u64(&|r| r.idle_file_kib),
            after_load_rss_kib: median_u64(&|r| r.after_load_rss_kib),
            after_load_anon_kib: median_u64(&|r| r.after_load_anon_kib),
            peak_rss_kib: rounds.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0),
            log_bytes: rounds.iter().map(|r| r.log_bytes).sum(),
            total_requests: rounds.iter().map(|r| r.total_requests).sum(),
            phases,
            profiles: rounds
                .iter()
                .flat_map(|r| r.profiles.iter().cloned())
                .collect(),
        }
    }
}

/// The targets, judged on the webhook's figures.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Targets {
    pub throughput_ratio: f64,
    pub p99_ms: f64,
    pub peak_rss_mib: f64,
    pub idle_rss_mib: f64,
    pub ready_ms: f64,
}

pub(crate) const TARGETS: Targets = Targets {
    throughput_ratio: 0.8,
    p99_ms: 2.0,
    peak_rss_mib: 20.0,
    idle_rss_mib: 10.0,
    ready_ms: 100.0,
};

/// One row of the provider table: its label, how to read it from a phase, and its decimals.
type Figure = (&'static str, fn(&PhaseResult) -> f64, usize);

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn ratio(webhook: f64, baseline: f64) -> String {
    if baseline > 0.0 && webhook.is_finite() && baseline.is_finite() {
        format!("{:.2}×", webhook / baseline)
    } else if webhook == 0.0 && baseline == 0.0 {
        "=".to_string()
    } else {
        "n/a".to_string()
    }
}

/// `met` or `MISSED by ...` for an upper bound.
fn at_most(value: f64, limit: f64, unit: &str) -> String {
    if value <= limit {
        "met".to_string()
    } else {
        format!(
            "**MISSED** by {:.2} {unit} ({:.0}% over)",
            value - limit,
            (value / limit - 1.0) * 100.0
        )
    }
}

/// `met` or `MISSED by ...` for a lower bound.
fn at_least(value: f64, limit: f64) -> String {
    if value >= limit {
        "met".to_string()
    } else {
        format!("**MISSED**: {value:.2}× of {limit:.2}×")
    }
}

struct Table {
    text: String,
    /// Smoke runs print the targets but judge nothing.
    judge: bool,
}

impl Table {
    fn new(judge: bool) -> Self {
        Self {
            text: String::from(
                "| figure | webhook | baseline | webhook/baseline | target | verdict |\n|---|---:|---:|---:|---|---|\n",
            ),
            judge,
        }
    }

    fn row(
        &mut self,
        figure: &str,
        webhook: f64,
        baseline: f64,
        precision: usize,
        target: &str,
        verdict: &str,
    ) {
        let verdict = if self.judge || verdict.is_empty() {
            verdict
        } else {
            "not judged (smoke)"
        };
        let _ = writeln!(
            self.text,
            "| {figure} | {webhook:.precision$} | {baseline:.precision$} | {} | {target} | {verdict} |",
            ratio(webhook, baseline)
        );
    }
}

/// Renders the Markdown table (one row per figure) and the target verdicts.
pub(crate) fn render(webhook: &ServerResult, baseline: &ServerResult, judge: bool) -> String {
    let mut table = Table::new(judge);
    let t = TARGETS;
    table.row(
        &format!(
            "cold start to /readyz 200, median of {}, ms",
            webhook.cold_start_ms.len()
        ),
        webhook.cold_start_median_ms(),
        baseline.cold_start_median_ms(),
        1,
        &format!("≤ {} ms", t.ready_ms),
        &at_most(webhook.cold_start_median_ms(), t.ready_ms, "ms"),
    );
    table.row(
        "cold start, slowest, ms",
        webhook.cold_start_max_ms(),
        baseline.cold_start_max_ms(),
        1,
        "",
        "",
    );
    table.row(
        "RSS idle (ready, before load), MiB",
        mib(webhook.idle_rss_kib),
        mib(baseline.idle_rss_kib),
        1,
        &format!("≤ {} MiB", t.idle_rss_mib),
        &at_most(mib(webhook.idle_rss_kib), t.idle_rss_mib, "MiB"),
    );
    table.row(
        "RSS idle: anonymous (heap, stacks), MiB",
        mib(webhook.idle_anon_kib),
        mib(baseline.idle_anon_kib),
        1,
        "",
        "",
    );
    table.row(
        "RSS idle: file-backed (binary code, libraries), MiB",
        mib(webhook.idle_file_kib),
        mib(baseline.idle_file_kib),
        1,
        "",
        "",
    );
    table.row(
        "peak RSS (VmHWM, whole run), MiB",
        mib(webhook.peak_rss_kib),
        mib(baseline.peak_rss_kib),
        1,
        &format!("≤ {} MiB", t.peak_rss_mib),
        &at_most(mib(webhook.peak_rss_kib), t.peak_rss_mib, "MiB"),
    );
    table.row(
        "RSS after load, MiB",
        mib(webhook.after_load_rss_kib),
        mib(baseline.after_load_rss_kib),
        1,
        "",
        "",
    );
    table.row(
        "RSS after load: anonymous, MiB",
        mib(webhook.after_load_anon_kib),
        mib(baseline.after_load_anon_kib),
        1,
        "",
        "",
    );
    for (w, b) in webhook.phases.iter().zip(&baseline.phases) {
        let label = &w.label;
        match w.kind {
            PhaseKind::FixedRate => {
                table.row(
                    &format!("{label}: achieved req/s"),
                    w.rate,
                    b.rate,
                    0,
                    "",
                    "",
                );
                for (name, wv, bv) in [("p50", w.p50_ms, b.p50_ms), ("p90", w.p90_ms, b.p90_ms)] {
                    table.row(&format!("{label}: {name} ms"), wv, bv, 3, "", "");
                }
                table.row(
                    &format!("{label}: p99 ms"),
                    w.p99_ms,
                    b.p99_ms,
                    3,
                    &format!("≤ {} ms", t.p99_ms),
                    &at_most(w.p99_ms, t.p99_ms, "ms"),
                );
                table.row(
                    &format!("{label}: p99.9 ms"),
                    w.p999_ms,
                    b.p999_ms,
                    3,
                    "",
                    "",
                );
                table.row(&format!("{label}: max ms"), w.max_ms, b.max_ms, 3, "", "");
            }
            PhaseKind::MaxThroughput => {
                table.row(
                    &format!("{label}: req/s"),
                    w.rate,
                    b.rate,
                    0,
                    &format!("≥ {}× baseline", t.throughput_ratio),
                    &at_least(w.rate / b.rate, t.throughput_ratio),
                );
                for (name, wv, bv) in [
                    ("p50", w.p50_ms, b.p50_ms),
                    ("p99", w.p99_ms, b.p99_ms),
                    ("p99.9", w.p999_ms, b.p999_ms),
                    ("max", w.max_ms, b.max_ms),
                ] {
                    table.row(&format!("{label}: {name} ms"), wv, bv, 3, "", "");
                }
            }
            PhaseKind::NewConnections => {
                table.row(
                    &format!("{label}: connections/s"),
                    w.rate,
                    b.rate,
                    0,
                    "",
                    "",
                );
                table.row(&format!("{label}: p99 ms"), w.p99_ms, b.p99_ms, 3, "", "");
            }
        }
        let per = if w.kind == PhaseKind::NewConnections {
            "connection"
        } else {
            "request"
        };
        table.row(
            &format!("{label}: server CPU µs per {per}"),
            w.cpu_us_per_request,
            b.cpu_us_per_request,
            1,
            "",
            "",
        );
        table.row(
            &format!("{label}: server context switches per {per}"),
            w.switches_per_request,
            b.switches_per_request,
            2,
            "",
            "",
        );
        table.row(
            &format!("{label}: errors"),
            w.errors as f64,
            b.errors as f64,
            0,
            "0",
            if w.errors == 0 { "met" } else { "**MISSED**" },
        );
    }
    let per_request = |r: &ServerResult| {
        if r.total_requests == 0 {
            0.0
        } else {
            r.log_bytes as f64 / r.total_requests as f64
        }
    };
    table.row(
        "log output, bytes per request",
        per_request(webhook),
        per_request(baseline),
        1,
        "",
        "",
    );
    table.text
}

/// The baseline of every provider: the max-throughput and handshake figures,
/// and the webhook's ratio to each; `chosen` is the table's baseline.
pub(crate) fn baselines_section(
    baselines: &[(&str, &ServerResult)],
    chosen: usize,
    webhook: &ServerResult,
) -> String {
    let mut out = String::from(
        "\nBaseline per rustls provider (the table above uses the one marked *):\n\n| phase | figure | webhook |",
    );
    for (index, (name, _)) in baselines.iter().enumerate() {
        let mark = if index == chosen { " *" } else { "" };
        let _ = write!(out, " baseline {name}{mark} | webhook/{name} |");
    }
    out.push_str("\n|---|---|---:|");
    for _ in baselines {
        out.push_str("---:|---:|");
    }
    out.push('\n');
    for (index, phase) in webhook.phases.iter().enumerate() {
        let figures: [Figure; 2] = match phase.kind {
            PhaseKind::FixedRate => [
                ("p99 ms", |p| p.p99_ms, 3),
                ("server CPU µs per request", |p| p.cpu_us_per_request, 1),
            ],
            PhaseKind::MaxThroughput => [
                ("req/s", |p| p.rate, 0),
                ("server CPU µs per request", |p| p.cpu_us_per_request, 1),
            ],
            PhaseKind::NewConnections => [
                ("connections/s", |p| p.rate, 0),
                ("server CPU µs per connection", |p| p.cpu_us_per_request, 1),
            ],
        };
        for (figure, get, digits) in figures {
            let value = get(phase);
            let _ = write!(out, "| {} | {figure} | {value:.digits$} |", phase.label);
            for (_, baseline) in baselines {
                match baseline.phases.get(index) {
                    Some(other) => {
                        let _ = write!(
                            out,
                            " {:.digits$} | {} |",
                            get(other),
                            ratio(value, get(other))
                        );
                    }
                    None => out.push_str(" | |"),
                }
            }
            out.push('\n');
        }
    }
    out
}

/// Every round's max-throughput figures, so the spread behind the medians
/// shows; the ratio is to the chosen baseline of the same round.
pub(crate) fn rounds_section(servers: &[(String, &[ServerResult])], chosen: usize) -> String {
    let mut out = String::from(
        "\nMax throughput per round (req/s, server CPU µs per request; ratio: webhook / the chosen baseline of the same round):\n\n| phase | round |",
    );
    for (name, _) in servers {
        let _ = write!(out, " {name} |");
    }
    out.push_str(" ratio |\n|---|---:|");
    for _ in servers {
        out.push_str("---:|");
    }
    out.push_str("---:|\n");
    let Some((_, webhook_rounds)) = servers.last() else {
        return out;
    };
    let Some((_, chosen_rounds)) = servers.get(chosen) else {
        return out;
    };
    for (round, webhook) in webhook_rounds.iter().enumerate() {
        for (index, phase) in webhook.phases.iter().enumerate() {
            if phase.kind != PhaseKind::MaxThroughput {
                continue;
            }
            let _ = write!(out, "| {} | {} |", phase.label, round + 1);
            for (_, rounds) in servers {
                match rounds.get(round).and_then(|r| r.phases.get(index)) {
                    Some(p) => {
                        let _ = write!(out, " {:.0} ({:.1} µs) |", p.rate, p.cpu_us_per_request);
                    }
                    None => out.push_str(" |"),
                }
            }
            let floor = chosen_rounds
                .get(round)
                .and_then(|r| r.phases.get(index))
                .map_or(f64::NAN, |p| p.rate);
            let _ = writeln!(out, " {} |", ratio(phase.rate, floor));
        }
    }
    out
}

/// Error samples of both servers, for the report.
pub(crate) fn error_notes(name: &str, result: &ServerResult) -> String {
    let mut notes = String::new();
    for phase in &result.phases {
        for sample in &phase.error_samples {
            let _ = writeln!(notes, "- {name}, {}: {sample}", phase.label);
        }
    }
    notes
}
