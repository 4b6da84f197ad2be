//! Command line: one binary, one subcommand per job. Each subcommand's flags
//! live beside the code that uses them.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "metal3-dataimage",
    version,
    about = "Attach a non-bootable data ISO to Metal3 BareMetalHosts"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTPS admission webhook (validating + mutating).
    Serve(crate::admission::ServeArgs),
    /// Judge BareMetalHost/DataImage manifests offline (for CI pipelines).
    Check(crate::check::CheckArgs),
    /// Attach data images through Ironic (runs beside the baremetal-operator).
    Reconcile(crate::reconcile::ReconcileArgs),
    /// Remove this project's finalizers and power holds from every host (uninstall).
    Cleanup(crate::reconcile::CleanupArgs),
    /// Print the CRD schema for spec/status.dataImage.
    Crd(crate::crd::CrdArgs),
    /// Write a CA, a serving certificate and a caBundle kustomize patch.
    Certs(crate::certs::CertsArgs),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // One process-wide rustls provider for every subcommand (see the function).
    crate::admission::tls::install_default_provider();
    let result = match cli.command {
        Command::Serve(args) => crate::admission::run(args),
        Command::Check(args) => return ExitCode::from(crate::check::run(args)),
        Command::Reconcile(args) => crate::reconcile::run(args),
        Command::Cleanup(args) => crate::reconcile::cleanup(args),
        Command::Crd(args) => crate::crd::run(args),
        Command::Certs(args) => crate::certs::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
