//! Certificates: the development CA + serving certificate used by `serve`
//! when no certificate flags are given, and `metal3-dataimage certs`.

#[derive(Clone, Debug, clap::Args)]
pub struct CertsArgs {}

pub fn run(args: CertsArgs) -> anyhow::Result<()> {
    let _ = args;
    anyhow::bail!("certs: not implemented yet")
}
