//! Kubernetes Events (`events.k8s.io/v1`) about hosts.
//!
//! kube-runtime's `Recorder` groups repeats into a series by type, reason
//! and action only, and keeps the first Event's note: "attached
//! http://…/config-a.iso" was still shown (count 2) after config-b was
//! attached. client-go's events broadcaster (`getKey` in
//! `tools/events/event_broadcaster.go`) keys a series on the note too; this
//! publisher does the same, and names its field manager on every write.

use std::collections::HashMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::ResourceExt;
use kube::api::{Api, Patch};
use tokio::sync::Mutex;

use super::decision::{EventNote, Reason};
use super::kube_ops::{merge_params, post_params};
use super::record::FIELD_MANAGER;
use crate::text::truncate;

/// A series is continued while its last repeat is younger than this
/// (client-go and kube-runtime use 6 minutes).
const SERIES_TTL: SignedDuration = SignedDuration::from_mins(6);
/// Longer notes are cut (the API server refuses notes over 1 KiB).
const MAX_NOTE: usize = 1000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    reason: Reason,
    note: String,
    namespace: String,
    name: String,
    uid: String,
}

pub struct EventPublisher {
    client: kube::Client,
    instance: String,
    series: Mutex<HashMap<Key, Event>>,
}

impl EventPublisher {
    /// `instance`: the reporting instance (the pod name), or the controller's name.
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        Self {
            client,
            instance: instance.unwrap_or_else(|| FIELD_MANAGER.to_string()),
            series: Mutex::new(HashMap::new()),
        }
    }

    /// Creates the Event, or counts a repeat of the same reason and note on
    /// the same object.
    pub async fn publish(
        &self,
        note: &EventNote,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let text = truncate(&note.message, MAX_NOTE, "…").into_owned();
        let key = Key {
            reason: note.reason,
            note: text.clone(),
            namespace: regarding.namespace.clone().unwrap_or_default(),
            name: regarding.name.clone().unwrap_or_default(),
            uid: regarding.uid.clone().unwrap_or_default(),
        };
        let mut series = self.series.lock().await;
        series.retain(|_, event| last_seen(event).is_some_and(|t| t + SERIES_TTL > now));
        let api: Api<Event> = Api::namespaced(self.client.clone(), &key.namespace);
        let written = match series.get(&key) {
            Some(previous) => {
                let mut event = previous.clone();
                let count = previous.series.as_ref().map_or(2, |s| s.count + 1);
                event.series = Some(EventSeries {
                    count,
                    last_observed_time: MicroTime(now),
                });
                let patch = Patch::Merge(serde_json::json!({ "series": event.series }));
                api.patch(&event.name_any(), &merge_params(), &patch)
                    .await?;
                event
            }
            None => {
                let event = self.new_event(note.reason, text, regarding, now);
                api.create(&post_params(), &event).await?;
                event
            }
        };
        series.insert(key, written);
        Ok(())
    }

    fn new_event(
        &self,
        reason: Reason,
        note: String,
        regarding: &ObjectReference,
        now: Timestamp,
    ) -> Event {
        let kind = if reason.is_warning() {
            "Warning"
        } else {
            "Normal"
        };
        Event {
            action: Some(reason.as_str().to_string()),
            reason: Some(reason.as_str().to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            note: Some(note),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                // Like kubectl's and client-go's: <object>.<unique hex>.
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(FIELD_MANAGER),
                    now.as_nanosecond()
                )),
                ..Default::default()
            },
            reporting_controller: Some(FIELD_MANAGER.to_string()),
            reporting_instance: Some(self.instance.clone()),
            type_: Some(kind.into()),
            ..Default::default()
        }
    }
}

fn last_seen(event: &Event) -> Option<Timestamp> {
    let repeated = event.series.as_ref().map(|s| s.last_observed_time.0);
    repeated.or_else(|| event.event_time.as_ref().map(|t| t.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_utf8_boundaries() {
        assert_eq!(truncate("short", 10, "…"), "short");
        let long = "é".repeat(600);
        let cut = truncate(&long, MAX_NOTE, "…");
        assert!(cut.len() <= MAX_NOTE + '…'.len_utf8());
        assert!(cut.ends_with('…'));
    }
}
