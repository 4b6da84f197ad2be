//! Admission webhook benchmark (`scripts/bench.sh`): drives the real
//! `metal3-dataimage serve` and a minimal axum + rustls baseline with the same
//! HTTPS load and prints a table with the webhook/baseline ratio of every
//! figure. See docs/bench.md.
//!
//! One binary, two roles: the driver (default) and, started by the driver as
//! a separate process, the baseline server (`baseline-server ...`). The
//! baseline also answers to `serve`, so `--serve-bin <this binary>` runs the
//! baseline against itself (an A/A run that shows the harness's own noise).

mod baseline;
mod cases;
mod driver;
mod load;
mod procstat;
mod report;
mod tls;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("baseline-server" | "serve") => baseline::main(&args[1..]),
        _ => driver::main(&args),
    }
}
