//! `metal3-dataimage crd`: the CRD schema for spec/status.dataImage, generated
//! from the Rust types.

#[derive(Clone, Debug, clap::Args)]
pub struct CrdArgs {}

pub fn run(args: CrdArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("crd: not implemented yet")
}
