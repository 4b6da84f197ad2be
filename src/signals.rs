//! SIGTERM and SIGINT, the one way every subcommand hears them.

use tokio::signal::unix::{Signal, SignalKind, signal};

/// The termination signals, received one at a time.
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    pub(crate) fn new() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT and names it.
    pub(crate) async fn next(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}

/// The shutdown-signal handler every subcommand can use: the first
/// SIGTERM/SIGINT calls `first` (graceful shutdown), a second one `second`
/// (skip the remaining waits). Needs a running Tokio runtime.
pub(crate) fn spawn_handler(
    first: impl FnOnce(&'static str) + Send + 'static,
    second: impl FnOnce(&'static str) + Send + 'static,
) -> std::io::Result<()> {
    let mut signals = Signals::new()?;
    tokio::spawn(async move {
        first(signals.next().await);
        second(signals.next().await);
    });
    Ok(())
}
