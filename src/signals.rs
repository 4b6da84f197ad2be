//! SIGTERM and SIGINT, the one way every subcommand hears them.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The shutdown-signal handler every subcommand can use: the first
/// SIGTERM/SIGINT calls `first` (graceful shutdown), a second one `second`
/// (skip the remaining waits). Needs a running Tokio runtime.
pub(crate) fn spawn_handler(
    first: impl FnOnce(&'static str) + Send + 'static,
    second: impl FnOnce(&'static str) + Send + 'static,
) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        first(next(&mut term, &mut int).await);
        second(next(&mut term, &mut int).await);
    });
    Ok(())
}

/// Waits for the next SIGTERM or SIGINT and names it.
async fn next(term: &mut Signal, int: &mut Signal) -> &'static str {
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
