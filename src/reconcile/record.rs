//! The authoritative record of what the reconciler did to a host's drive,
//! kept in the `dataimage.metal3.io/attached` annotation.
//!
//! Annotations survive the baremetal-operator's whole-object writes (it writes
//! back the metadata it read), unlike unknown status fields, so the reconciler
//! never depends on `status.dataImage` to know what is in the drive.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::model::bmh::HostResource;

/// State annotation (JSON [`AttachedRecord`]).
pub const STATE_ANNOTATION: &str = "dataimage.metal3.io/attached";
/// Suffixed reboot annotation: the baremetal-operator keeps a provisioned host
/// powered off while any `reboot.metal3.io/<suffix>` annotation is present.
pub const HOLD_ANNOTATION: &str = "reboot.metal3.io/metal3-dataimage";
/// Value of the hold annotation. `soft`: if the operator ever acts on it while
/// the host runs (the race documented in docs/reconciler.md), it asks for a
/// graceful shutdown, never a hard power cut.
pub(crate) const HOLD_VALUE: &str = r#"{"mode":"soft"}"#;
/// Finalizer added before the first attach; removed after the detach is confirmed.
pub const FINALIZER: &str = "dataimage.metal3.io/detach";
/// The baremetal-operator's pause / detach annotations.
pub(crate) const PAUSED_ANNOTATION: &str = "baremetalhost.metal3.io/paused";
pub(crate) const DETACHED_ANNOTATION: &str = "baremetalhost.metal3.io/detached";
/// Field manager for server-side apply (and the events' reporting controller).
pub const FIELD_MANAGER: &str = "metal3-dataimage";

/// Where the drive work for one host stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Phase {
    /// Nothing of ours was sent to Ironic for this URL yet (waiting for a
    /// gate, staging, or a retry before the first POST).
    #[default]
    Pending,
    /// The attach was sent (or is about to be: the record is written first);
    /// not confirmed yet.
    Attaching,
    /// Confirmed inserted.
    Attached,
    /// An attach failed; the drive was emptied; retry at `retry_at`.
    Failed,
    /// A detach was sent for `url` (URL change, removal, deprovisioning or
    /// deletion); not confirmed yet.
    Detaching,
}

/// JSON in [`STATE_ANNOTATION`]. `url` is always the user's URL (never a
/// staging URL, which carries a token).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedRecord {
    pub url: String,
    /// Ironic node UUID the record applies to.
    pub node: String,
    pub phase: Phase,
    /// When `phase` was entered.
    pub time: Timestamp,
    /// sha256 of the staged image, when staged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Consecutive failures since the last success.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Earliest time of the next attempt after a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<Timestamp>,
    /// When the power hold was added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_since: Option<Timestamp>,
    /// The hold timed out for this URL: never re-add it until the URL changes
    /// or an attach succeeds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub hold_expired: bool,
    /// When this URL was first seen in the spec (start of the
    /// spec-change→Attached histogram).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<Timestamp>,
    /// The host was powered on when the attach was confirmed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attached_running: bool,
    /// The attach was sent into an empty drive, so our image in the drive
    /// afterwards is this attach's: the drive alone confirms it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub into_empty: bool,
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

impl AttachedRecord {
    pub fn new(url: &str, node: &str, phase: Phase, now: Timestamp) -> Self {
        Self {
            url: url.to_string(),
            node: node.to_string(),
            phase,
            time: now,
            requested_at: Some(now),
            ..Self::default()
        }
    }

    /// The host's record. A corrupt one counts as absent: whatever is in
    /// the drive is then unknown, and an attach replaces it.
    pub(crate) fn of_host(host: &HostResource) -> Option<Self> {
        Self::from_annotation(host.metadata.annotations.as_ref()?.get(STATE_ANNOTATION)?)
    }

    /// Parses the annotation value; `None` when it is corrupt.
    pub(crate) fn from_annotation(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    pub fn to_annotation(&self) -> String {
        // Serialising a struct of strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Moves to `phase` at `now` (keeps errors, hold and request bookkeeping).
    pub(crate) fn enter(&mut self, phase: Phase, now: Timestamp) {
        self.phase = phase;
        self.time = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_annotation() {
        let now: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        let mut record = AttachedRecord::new(
            "https://example.test/a.iso",
            "node-1",
            Phase::Attaching,
            now,
        );
        record.errors = 2;
        record.hold_expired = true;
        let text = record.to_annotation();
        assert!(text.contains(r#""phase":"attaching""#), "{text}");
        assert!(text.contains(r#""time":"2026-01-02T03:04:05Z""#), "{text}");
        let parsed = AttachedRecord::from_annotation(&text).unwrap();
        assert_eq!(parsed, record);
    }

    #[test]
    fn minimal_annotation_decodes_and_garbage_is_an_error() {
        let text = r#"{"url":"http://h/a.iso","node":"n","phase":"attached","time":"2026-01-02T03:04:05Z"}"#.to_string();
        let parsed = AttachedRecord::from_annotation(&text).unwrap();
        let parsed_minimal = parsed.clone();
        assert_eq!(parsed.phase, Phase::Attached);
        assert_eq!(parsed.errors, 0);
        assert_eq!(
            parsed.time,
            "2026-01-02T03:04:05Z".parse::<Timestamp>().unwrap()
        );
        // Written by the previous version (times as RFC 3339 strings, with
        // fractions and offsets as `Timestamp::to_string` wrote them).
        let old = r#"{"url":"u","node":"n","phase":"failed","time":"2026-01-02T03:04:05.123456789Z","errors":1,"retryAt":"2026-01-02T03:05:05Z","holdSince":"2026-01-02T03:00:00Z","requestedAt":"2026-01-02T02:59:59Z"}"#.to_string();
        let parsed = AttachedRecord::from_annotation(&old).unwrap();
        assert_eq!(parsed.retry_at.unwrap().to_string(), "2026-01-02T03:05:05Z");
        assert_eq!(parsed.to_annotation(), old);
        assert_eq!(AttachedRecord::from_annotation("{"), None);
        // Absent, or corrupt on a host: no record.
        let mut host = HostResource::default();
        assert_eq!(AttachedRecord::of_host(&host), None);
        host.metadata.annotations = Some([(STATE_ANNOTATION.to_string(), "{".into())].into());
        assert_eq!(AttachedRecord::of_host(&host), None);
        host.metadata.annotations = Some([(STATE_ANNOTATION.to_string(), text)].into());
        assert_eq!(AttachedRecord::of_host(&host), Some(parsed_minimal));
    }
}
