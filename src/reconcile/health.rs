//! Ironic reachability, one fact for every host.
//!
//! When a call fails with a connection error or a 5xx, the controller asks
//! [`IronicHealth::confirm_outage`]: one `GET /` of the API root tells an
//! outage (the root does not answer either) from a host-specific failure (a
//! node in maintenance answering 503, a slow call that timed out). During an
//! outage no host sends anything to Ironic; a single prober polls the root
//! every [`PROBE_INTERVAL`], and when Ironic answers it wakes every host
//! (the controller's `reconcile_all_on` trigger), so they are retried within
//! seconds instead of at their per-host backoff.

use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::watch;

use crate::ironic::IronicError;

/// How often the prober asks Ironic's API root during an outage.
pub(crate) const PROBE_INTERVAL: Duration = Duration::from_secs(2);

/// Whether `err` may mean that Ironic as a whole is down (as opposed to an
/// answer about one node).
pub(crate) fn may_be_outage(err: &IronicError) -> bool {
    match err {
        IronicError::Unavailable(_) => true,
        IronicError::Http { status, .. } => *status >= 500,
        _ => false,
    }
}

#[derive(Default)]
struct State {
    /// Since when, and the first error seen.
    down: Option<(Timestamp, String)>,
    probing: bool,
}

/// Shared by every reconcile of one controller.
pub struct IronicHealth {
    state: Mutex<State>,
    /// When Ironic last came back; each change is the controller's trigger
    /// to reconcile every host.
    recovered: watch::Sender<Option<Timestamp>>,
    up_gauge: prometheus_client::metrics::gauge::Gauge,
}

impl IronicHealth {
    pub fn new(up_gauge: prometheus_client::metrics::gauge::Gauge) -> Self {
        up_gauge.set(1);
        Self {
            state: Mutex::new(State::default()),
            recovered: watch::channel(None).0,
            up_gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere: the state is plain data.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Some((since, error))` while Ironic is known to be down.
    pub fn down(&self) -> Option<(Timestamp, String)> {
        self.lock().down.clone()
    }

    /// When Ironic last came back.
    pub fn recovered_at(&self) -> Option<Timestamp> {
        *self.recovered.borrow()
    }

    /// A stream item each time Ironic comes back after an outage.
    pub fn recoveries(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        let mut rx = self.recovered.subscribe();
        rx.mark_unchanged();
        futures::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }

    /// Ironic answered: ends an outage (and wakes every host) if one was on.
    pub(crate) fn mark_up(&self) {
        let mut state = self.lock();
        // Under the lock: no reconcile sees Ironic up before `recovered_at`.
        if let Some((since, _)) = state.down.take() {
            self.up_gauge.set(1);
            tracing::info!(down_since = %since, "Ironic answers again: retrying every waiting host");
            self.recovered.send_replace(Some(Timestamp::now()));
        }
    }

    /// Marks Ironic down (first error kept). Returns whether the caller
    /// must start the prober (only one runs).
    fn mark_down(&self, error: &IronicError) -> bool {
        let mut state = self.lock();
        if state.down.is_none() {
            tracing::warn!(error = %error, "Ironic is unreachable: nothing is sent to it until it answers again");
            state.down = Some((Timestamp::now(), error.to_string()));
            self.up_gauge.set(0);
        }
        !std::mem::replace(&mut state.probing, true)
    }

    /// After `err` from a call that may mean an outage: asks the API root.
    /// Returns the outage (since, error) when Ironic does not answer, `None`
    /// when it does (the failure is the host's own).
    pub(crate) async fn confirm_outage<F, Fut>(
        self: &std::sync::Arc<Self>,
        err: &IronicError,
        ping: F,
    ) -> Option<(Timestamp, String)>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), IronicError>> + Send,
    {
        if !may_be_outage(err) {
            return None;
        }
        if let Some(down) = self.down() {
            return Some(down);
        }
        match ping().await {
            Err(ping_err) if may_be_outage(&ping_err) => {
                if self.mark_down(err) {
                    let health = self.clone();
                    tokio::spawn(async move { health.probe_until_up(ping).await });
                }
                self.down()
            }
            // Ironic answered: the failure is the host's own.
            _ => None,
        }
    }

    async fn probe_until_up<F, Fut>(self: std::sync::Arc<Self>, ping: F)
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), IronicError>> + Send,
    {
        loop {
            tokio::time::sleep(PROBE_INTERVAL).await;
            if self.down().is_none() {
                break;
            }
            match ping().await {
                Err(err) if may_be_outage(&err) => {
                    tracing::debug!(error = %err, "Ironic still unreachable");
                }
                // Any other answer (401, 404 ...) is an answer: Ironic is up.
                _ => {
                    self.mark_up();
                    break;
                }
            }
        }
        self.lock().probing = false;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures::StreamExt;

    use super::*;

    #[test]
    fn outage_class_errors() {
        let cases = [
            (IronicError::Unavailable("connection refused".into()), true),
            (
                IronicError::Http {
                    status: 500,
                    message: "boom".into(),
                },
                true,
            ),
            (
                IronicError::Http {
                    status: 418,
                    message: "teapot".into(),
                },
                false,
            ),
            (IronicError::NotFound("n".into()), false),
            (IronicError::Locked("n".into()), false),
            (IronicError::BadRequest("n".into()), false),
        ];
        for (err, want) in cases {
            assert_eq!(may_be_outage(&err), want, "{err}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_outage_one_prober_and_a_wake_up_on_return() {
        let health = Arc::new(IronicHealth::new(Default::default()));
        let up = Arc::new(AtomicBool::new(false));
        let pings = Arc::new(AtomicUsize::new(0));
        let ping = {
            let (up, pings) = (up.clone(), pings.clone());
            move || {
                let (up, pings) = (up.clone(), pings.clone());
                async move {
                    pings.fetch_add(1, Ordering::SeqCst);
                    if up.load(Ordering::SeqCst) {
                        Ok(())
                    } else {
                        Err(IronicError::Unavailable("connection refused".into()))
                    }
                }
            }
        };
        let mut recoveries = Box::pin(health.recoveries());
        let err = IronicError::Unavailable("connection refused".into());
        // A host-specific error never asks the root.
        assert_eq!(
            health
                .confirm_outage(&IronicError::NotFound("x".into()), ping.clone())
                .await,
            None
        );
        assert_eq!(pings.load(Ordering::SeqCst), 0);
        // 100 hosts fail: one ping confirms, the rest read the known fact.
        let first = health.confirm_outage(&err, ping.clone()).await;
        assert!(first.is_some());
        for _ in 0..99 {
            assert_eq!(health.confirm_outage(&err, ping.clone()).await, first);
        }
        assert_eq!(pings.load(Ordering::SeqCst), 1);
        assert_eq!(health.up_gauge.get(), 0);
        // The prober asks every PROBE_INTERVAL.
        tokio::time::sleep(PROBE_INTERVAL * 5 + Duration::from_millis(10)).await;
        assert_eq!(pings.load(Ordering::SeqCst), 6);
        up.store(true, Ordering::SeqCst);
        tokio::time::timeout(PROBE_INTERVAL * 2, recoveries.next())
            .await
            .expect("woken within one probe interval")
            .expect("stream open");
        assert_eq!(health.down(), None);
        assert!(health.recovered_at().is_some());
        assert_eq!(health.up_gauge.get(), 1);
        // Stopped probing.
        let after = pings.load(Ordering::SeqCst);
        tokio::time::sleep(PROBE_INTERVAL * 3).await;
        assert_eq!(pings.load(Ordering::SeqCst), after);
    }

    #[tokio::test]
    async fn a_root_that_answers_means_the_failure_is_the_hosts() {
        let health = Arc::new(IronicHealth::new(Default::default()));
        let err = IronicError::Unavailable("503 node in maintenance".into());
        let outage = health.confirm_outage(&err, || async { Ok(()) }).await;
        assert_eq!(outage, None);
        assert_eq!(health.down(), None);
    }
}
