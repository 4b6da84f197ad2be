//! The reconciler (`metal3-dataimage reconcile` and `cleanup`).

pub mod decision;
pub mod record;

#[derive(Clone, Debug, clap::Args)]
pub struct ReconcileArgs {}

#[derive(Clone, Debug, clap::Args)]
pub struct CleanupArgs {}

pub fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("reconcile: not implemented yet")
}

pub fn cleanup(args: CleanupArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("cleanup: not implemented yet")
}

/// Default listeners of the reconciler (chosen not to collide with the
/// baremetal-operator's 9440/9443 when run as its sidecar).
pub const DEFAULT_PROBE_LISTEN: &str = "0.0.0.0:9441";
pub const DEFAULT_IMAGE_SERVER_LISTEN: &str = "0.0.0.0:9445";
