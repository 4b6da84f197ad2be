//! The HTTPS admission webhook server (`metal3-dataimage serve`).

#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("serve: not implemented yet")
}

/// Paths served on the HTTPS listener (also checked against the manifests).
pub const VALIDATE_BMH_PATH: &str = "/validate-metal3-io-v1alpha1-baremetalhost";
pub const MUTATE_BMH_PATH: &str = "/mutate-metal3-io-v1alpha1-baremetalhost";
pub const VALIDATE_DATAIMAGE_PATH: &str = "/validate-metal3-io-v1alpha1-dataimage";
pub const WEBHOOK_PATHS: [&str; 3] = [VALIDATE_BMH_PATH, MUTATE_BMH_PATH, VALIDATE_DATAIMAGE_PATH];
/// Default listeners.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9443";
pub const DEFAULT_PROBE_LISTEN: &str = "0.0.0.0:9440";
