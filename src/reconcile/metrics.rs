//! Reconciler metrics, served on `--probe-listen` at `/metrics`.

use std::collections::HashMap;
use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::ironic::IronicError;
use crate::ironic::ours::Op;
use crate::model::DataImageState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub operation: Op,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub operation: Op,
    pub reason: &'static str,
}

/// One Ironic request: which call, and the error kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestFailureLabels {
    pub call: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: &'static str,
}

/// All reconciler metrics plus the per-host state used for the gauge.
pub struct Metrics {
    pub reconciles: Family<ResultLabels, Counter>,
    pub attempts: Family<OperationLabels, Counter>,
    pub failures: Family<FailureLabels, Counter>,
    pub attach_seconds: Histogram,
    pub hosts: Family<StateLabels, Gauge>,
    pub request_failures: Family<RequestFailureLabels, Counter>,
    pub ironic_up: Gauge,
    pub leader: Gauge,
    host_states: Mutex<HashMap<String, DataImageState>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            reconciles: Family::default(),
            attempts: Family::default(),
            failures: Family::default(),
            // 1 s … ~68 min: a confirmed attach takes seconds; a held host
            // waiting for a gate can take much longer.
            attach_seconds: Histogram::new([
                1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
            ]),
            hosts: Family::default(),
            request_failures: Family::default(),
            ironic_up: Gauge::default(),
            leader: Gauge::default(),
            host_states: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    pub fn register(&self, registry: &mut Registry) {
        let sub = registry.sub_registry_with_prefix("metal3_dataimage_reconciler");
        sub.register(
            "reconciles",
            "Reconciles by result",
            self.reconciles.clone(),
        );
        sub.register(
            "ironic_attempts",
            "Attach/detach calls sent to Ironic",
            self.attempts.clone(),
        );
        sub.register(
            "ironic_failures",
            "Attach/detach failures by reason (synchronous errors and failures seen in Ironic's last_error)",
            self.failures.clone(),
        );
        sub.register(
            "attach_duration_seconds",
            "Time from a dataImage spec change being seen to the attach being confirmed",
            self.attach_seconds.clone(),
        );
        sub.register(
            "hosts",
            "Hosts by status.dataImage state",
            self.hosts.clone(),
        );
        sub.register(
            "ironic_request_failures",
            "Failed Ironic requests by call (get_node, list_vmedia, attach, detach, ping) and error kind",
            self.request_failures.clone(),
        );
        sub.register(
            "ironic_up",
            "1 while Ironic answers, 0 while it is unreachable (nothing is sent to it then)",
            self.ironic_up.clone(),
        );
        sub.register(
            "leader",
            "1 while this replica holds the leader election Lease and reconciles",
            self.leader.clone(),
        );
    }

    /// Counts one failed Ironic request.
    pub(crate) fn request_failed(&self, call: &'static str, err: &IronicError) {
        self.request_failures
            .get_or_create(&RequestFailureLabels {
                call,
                kind: error_reason(err),
            })
            .inc();
    }

    /// Records a host's current state (or `None` when it has no data image).
    pub fn set_host_state(&self, host: &str, state: Option<DataImageState>) {
        let Ok(mut states) = self.host_states.lock() else {
            return;
        };
        let old = match state {
            Some(state) => states.insert(host.to_string(), state),
            None => states.remove(host),
        };
        if old != state {
            let gauge = |state: DataImageState| {
                let labels = StateLabels {
                    state: state.as_str(),
                };
                self.hosts.get_or_create(&labels).clone()
            };
            if let Some(old) = old {
                gauge(old).dec();
            }
            if let Some(new) = state {
                gauge(new).inc();
            }
        }
    }

    pub fn failure(&self, operation: Op, reason: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { operation, reason })
            .inc();
    }
}

/// A bounded label value for an Ironic error.
pub(crate) fn error_reason(err: &IronicError) -> &'static str {
    match err {
        IronicError::NotFound(_) => "not_found",
        IronicError::Locked(_) => "locked",
        IronicError::Unavailable(_) => "unavailable",
        IronicError::BadRequest(_) => "bad_request",
        IronicError::VersionTooOld { .. } => "version",
        IronicError::Http { .. } => "http",
        IronicError::Config(_) => "config",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_gauge_follows_state_changes() {
        let metrics = Metrics::default();
        metrics.set_host_state("ns/a", Some(DataImageState::Attaching));
        metrics.set_host_state("ns/b", Some(DataImageState::Attaching));
        metrics.set_host_state("ns/a", Some(DataImageState::Attached));
        metrics.set_host_state("ns/b", None);
        let get = |s: DataImageState| {
            metrics
                .hosts
                .get_or_create(&StateLabels { state: s.as_str() })
                .get()
        };
        assert_eq!(get(DataImageState::Attaching), 0);
        assert_eq!(get(DataImageState::Attached), 1);
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(
            text.contains(r#"metal3_dataimage_reconciler_hosts{state="Attached"} 1"#),
            "{text}"
        );
    }
}
