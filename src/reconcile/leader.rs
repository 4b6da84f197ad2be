//! Leader election on a `coordination.k8s.io/v1` Lease, the way client-go's
//! `leaderelection` package does it (controller-runtime's defaults: lease
//! 15 s, renew deadline 10 s, retry every 2 s):
//!
//! - every replica looks at the Lease every [`RETRY_PERIOD`]; a free Lease
//!   (no holder, or released) or one whose holder stopped renewing for
//!   [`LEASE_DURATION`] is taken at once, so a standby takes over within
//!   one retry period of a graceful release;
//! - "stopped renewing" is measured on this replica's clock, from when it
//!   last saw the Lease change (client-go's `observedTime`), never by
//!   comparing another node's `renewTime` with our clock;
//! - the leader renews every retry period and gives up leadership when it
//!   could not renew for [`RENEW_DEADLINE`];
//! - on shutdown the leader releases the Lease (holder cleared).
//!
//! kube-lease-manager, used before, sleeps until the old Lease would have
//! expired even after it was released (a 22 s failover); hence this module.
//! Writes are a create, or merge patches guarded by `resourceVersion`, so
//! two replicas can never both take the same Lease.

use std::time::Duration;

use tokio::time::Instant;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, Patch};
use serde_json::json;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::kube_ops::{merge_params, post_params};

/// The Lease's `leaseDurationSeconds`.
const LEASE_SECONDS: i32 = 15;
pub const LEASE_DURATION: Duration = Duration::from_secs(LEASE_SECONDS as u64);
pub(crate) const RENEW_DEADLINE: Duration = Duration::from_secs(10);
pub const RETRY_PERIOD: Duration = Duration::from_secs(2);

/// What to do with the Lease as it was read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// We hold it: renew.
    Renew,
    /// Free, released or expired: take it.
    Take,
    /// Another replica holds it and renews it.
    HeldBy(String),
}

/// The pure decision: `holder` as read, and how long ago this replica saw
/// the Lease's holder/renewTime last change.
pub fn judge(holder: Option<&str>, identity: &str, unchanged_for: Duration) -> Verdict {
    match holder.filter(|h| !h.is_empty()) {
        Some(h) if h == identity => Verdict::Renew,
        None => Verdict::Take,
        Some(_) if unchanged_for >= LEASE_DURATION => Verdict::Take,
        Some(h) => Verdict::HeldBy(h.to_string()),
    }
}

/// A Lease's holder and renewTime, as this replica last saw them.
type Seen = (Option<String>, Option<Timestamp>);

struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// (holder, renewTime) last seen, and when it was first seen so.
    observed: Option<(Seen, Instant)>,
}

impl Elector {
    /// One round: `Ok(true)` when we hold the Lease afterwards.
    async fn round(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        // What taking the Lease writes (its `transitions`-th holder).
        let take = |transitions: i32| LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(LEASE_SECONDS),
            acquire_time: Some(now.clone()),
            renew_time: Some(now.clone()),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        };
        let written = match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(take(0)),
                };
                self.api.create(&post_params(), &lease).await.map(drop)
            }
            Some(lease) => {
                let spec = lease.spec.unwrap_or_default();
                let seen = (spec.holder_identity.clone(), spec.renew_time.map(|t| t.0));
                let since = match &self.observed {
                    Some((previous, at)) if *previous == seen => *at,
                    _ => Instant::now(),
                };
                self.observed = Some((seen, since));
                let holder = spec.holder_identity.as_deref();
                let spec = match judge(holder, &self.identity, since.elapsed()) {
                    Verdict::HeldBy(_) => return Ok(false),
                    Verdict::Renew => json!({
                        "renewTime": now,
                        "leaseDurationSeconds": LEASE_SECONDS,
                    }),
                    Verdict::Take => {
                        let transitions = spec.lease_transitions.unwrap_or(0);
                        json!(take(transitions.saturating_add(1)))
                    }
                };
                let version = lease.metadata.resource_version;
                let body = json!({ "metadata": { "resourceVersion": version }, "spec": spec });
                let patch = Patch::Merge(&body);
                self.api
                    .patch(&self.name, &merge_params(), &patch)
                    .await
                    .map(drop)
            }
        };
        match written {
            Ok(()) => Ok(true),
            // Another replica created or wrote it since we read it: look
            // again next round.
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(err) => Err(err),
        }
    }

    /// Clears the holder so that a standby takes over at its next round.
    async fn release(&self) -> Result<(), kube::Error> {
        let Some(lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(&self.identity) {
            return Ok(());
        }
        let body = json!({
            "metadata": { "resourceVersion": lease.metadata.resource_version },
            "spec": { "holderIdentity": null, "acquireTime": null, "renewTime": null, "leaseDurationSeconds": 1 },
        });
        self.api
            .patch(&self.name, &merge_params(), &Patch::Merge(&body))
            .await
            .map(drop)
    }
}

/// Runs the election until `stop` is cancelled, then releases the Lease if
/// held. The receiver is `true` while this replica leads.
pub fn start(
    client: kube::Client,
    namespace: &str,
    name: &str,
    identity: String,
    stop: CancellationToken,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let mut elector = Elector {
        api: Api::namespaced(client, namespace),
        name: name.to_string(),
        identity,
        observed: None,
    };
    let lease = format!("{namespace}/{name}");
    let task = tokio::spawn(async move {
        let mut renewed: Option<Instant> = None;
        loop {
            let leading = match elector.round().await {
                Ok(true) => {
                    renewed = Some(Instant::now());
                    true
                }
                Ok(false) => false,
                Err(err) => {
                    tracing::warn!(%lease, error = %err, "leader election: cannot read or write the Lease");
                    // Keep leading until the renew deadline passes.
                    renewed.is_some_and(|at| at.elapsed() < RENEW_DEADLINE)
                }
            };
            if !leading {
                renewed = None;
            }
            tx.send_if_modified(|current| std::mem::replace(current, leading) != leading);
            tokio::select! {
                () = tokio::time::sleep(RETRY_PERIOD) => {}
                () = stop.cancelled() => break,
            }
        }
        if *tx.borrow() {
            tx.send_replace(false);
            match elector.release().await {
                Ok(()) => tracing::info!(%lease, "released the leader Lease"),
                Err(err) => {
                    tracing::warn!(%lease, error = %err, "could not release the leader Lease");
                }
            }
        }
    });
    (rx, task)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_taken_when_free_released_or_expired() {
        let me = "replica-a";
        let cases: [(Option<&str>, u64, Verdict); 7] = [
            (None, 0, Verdict::Take),
            (Some(""), 0, Verdict::Take),
            (Some(me), 0, Verdict::Renew),
            (Some(me), 60, Verdict::Renew),
            (Some("replica-b"), 0, Verdict::HeldBy("replica-b".into())),
            (Some("replica-b"), 14, Verdict::HeldBy("replica-b".into())),
            (Some("replica-b"), 15, Verdict::Take),
        ];
        for (holder, unchanged, want) in cases {
            assert_eq!(
                judge(holder, me, Duration::from_secs(unchanged)),
                want,
                "{holder:?} unchanged for {unchanged}s"
            );
        }
    }
}
