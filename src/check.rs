//! `metal3-dataimage check`: the admission rules on manifest files, offline.

#[derive(Clone, Debug, clap::Args)]
pub struct CheckArgs {}

/// Returns the process exit code (0 admitted, 1 denied, 2 unreadable input).
pub fn run(args: CheckArgs) -> u8 {
    let _ = args;
    2
}
