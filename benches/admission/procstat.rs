//! Figures from /proc: memory (VmRSS, VmHWM), CPU time (utime + stime) and
//! the machine description.

use anyhow::Context;

/// Memory of a process, KiB.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
    /// Private memory: heap, stacks (`RssAnon`).
    pub anon_kib: u64,
    /// Mapped files: the binary's code and data, shared libraries
    /// (`RssFile`); clean pages the kernel can drop and share.
    pub file_kib: u64,
}

pub(crate) fn memory(pid: u32) -> anyhow::Result<Memory> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .context("read /proc/<pid>/status")?;
    Ok(Memory {
        rss_kib: status_kib(&status, "VmRSS:").context("VmRSS missing")?,
        hwm_kib: status_kib(&status, "VmHWM:").context("VmHWM missing")?,
        anon_kib: status_kib(&status, "RssAnon:").unwrap_or(0),
        file_kib: status_kib(&status, "RssFile:").unwrap_or(0),
    })
}

/// `VmRSS:     8840 kB` -> 8840.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

/// User + system CPU seconds of a process (all its threads).
pub(crate) fn cpu_seconds(pid: u32, ticks_per_second: f64) -> anyhow::Result<f64> {
    let stat =
        std::fs::read_to_string(format!("/proc/{pid}/stat")).context("read /proc/<pid>/stat")?;
    let ticks = stat_cpu_ticks(&stat).context("unexpected /proc/<pid>/stat format")?;
    Ok(ticks as f64 / ticks_per_second)
}

/// Fields 14 (utime) and 15 (stime) of /proc/<pid>/stat. The command name
/// (field 2) may contain spaces, so count from the last `)`.
fn stat_cpu_ticks(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Context switches (voluntary + involuntary) of every thread of a process:
/// each one is a thread going to sleep or being preempted, so per request it
/// shows wake-up overhead.
pub(crate) fn context_switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|task| std::fs::read_to_string(task.path().join("status")).ok())
        .map(|status| {
            status_kib(&status, "voluntary_ctxt_switches:").unwrap_or(0)
                + status_kib(&status, "nonvoluntary_ctxt_switches:").unwrap_or(0)
        })
        .sum()
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 on Linux).
pub(crate) fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPUs this process may run on (`Cpus_allowed_list`, e.g. `0-1` or `0,2-3`).
pub(crate) fn allowed_cpus() -> Vec<u32> {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return Vec::new();
    };
    let Some(list) = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))
    else {
        return Vec::new();
    };
    parse_cpu_list(list.trim())
}

fn parse_cpu_list(list: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((from, to)) => {
                if let (Ok(from), Ok(to)) = (from.parse::<u32>(), to.parse::<u32>()) {
                    cpus.extend(from..=to);
                }
            }
            None => {
                if let Ok(cpu) = part.parse() {
                    cpus.push(cpu);
                }
            }
        }
    }
    cpus
}

/// nproc, CPU model, kernel, rustc, as one Markdown list.
pub(crate) fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map(|(_, name)| name.trim().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    let nproc = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_string())
        .unwrap_or_else(|_| "unknown".to_string());
    let rustc = command_line(&[
        &std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into()),
        "--version",
    ]);
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| status_kib(&info, "MemTotal:"))
        .map_or_else(
            || "unknown".to_string(),
            |kib| format!("{:.1} GiB", kib as f64 / 1048576.0),
        );
    format!(
        "- CPU: {model}, nproc {nproc} (CPUs allowed: {:?})\n- memory: {memory}\n- kernel: Linux {kernel}\n- {rustc}\n",
        allowed_cpus()
    )
}

fn command_line(argv: &[&str]) -> String {
    let Some((program, args)) = argv.split_first() else {
        return "unknown".to_string();
    };
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_string())
        .unwrap_or_else(|| "rustc: unknown".to_string())
}
