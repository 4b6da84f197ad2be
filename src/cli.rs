//! Command line: one binary, one subcommand per job. Each subcommand's flags
//! live beside the code that uses them.

use std::future::Future;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

use crate::telemetry::LogFormat;

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
        Command::Serve(args) => run_async(args.log_format, true, crate::admission::serve(args)),
        Command::Check(args) => return ExitCode::from(crate::check::run(args)),
        Command::Reconcile(args) => run_async(args.log_format, true, crate::reconcile::run(args)),
        // Hosts are cleaned one after another: no worker threads.
        Command::Cleanup(args) => {
            run_async(args.log_format, false, crate::reconcile::cleanup(args))
        }
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

/// The long-running subcommands: logging, then `job` on a Tokio runtime
/// (`threaded`: the multi-thread one, else the current thread).
fn run_async(
    log_format: LogFormat,
    threaded: bool,
    job: impl Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    crate::telemetry::init_logging(log_format);
    let mut builder = if threaded {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = builder.enable_all().build();
    runtime.context("starting the async runtime")?.block_on(job)
}
