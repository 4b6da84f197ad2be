//! Kubernetes writes of the reconciler, as small patches (never whole-object
//! writes, so nothing the baremetal-operator owns is ever overwritten):
//!
//! - annotations: JSON merge patch of single keys;
//! - finalizers: JSON merge patch of the list, guarded by the object's
//!   `resourceVersion` (the API server refuses it with 409 if anything changed
//!   since we read it, so a concurrent change of another finalizer is never lost);
//! - `status.dataImage`: server-side apply on the status subresource with the
//!   `metal3-dataimage` field manager; cleared with a merge patch.
//!
//! The patch bodies are built by pure functions (tested without a cluster).

use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

use super::record::{FIELD_MANAGER, FINALIZER, HOLD_ANNOTATION, HOLD_VALUE, STATE_ANNOTATION};
use crate::model::bmh::HostResource;
use crate::model::{API_VERSION, DataImageStatus};

/// Merge patch setting (`Some`) or deleting (`None`) annotations.
pub(crate) fn annotations_patch(changes: &[(&str, Option<&str>)]) -> Value {
    let mut map = serde_json::Map::new();
    for (key, value) in changes {
        map.insert(
            (*key).to_string(),
            value.map_or(Value::Null, |v| Value::String(v.to_string())),
        );
    }
    json!({ "metadata": { "annotations": map } })
}

/// Merge patch for the state annotation.
pub(crate) fn record_patch(record: Option<&str>) -> Value {
    annotations_patch(&[(STATE_ANNOTATION, record)])
}

/// Merge patch for the power hold.
pub(crate) fn hold_patch(on: bool) -> Value {
    annotations_patch(&[(HOLD_ANNOTATION, on.then_some(HOLD_VALUE))])
}

/// Merge patch adding our finalizer to `current`, guarded by `resource_version`.
/// `None` when it is already there.
pub(crate) fn finalizer_add_patch(
    current: &[String],
    resource_version: Option<&str>,
) -> Option<Value> {
    if current.iter().any(|f| f == FINALIZER) {
        return None;
    }
    let mut list = current.to_vec();
    list.push(FINALIZER.to_string());
    Some(finalizers_patch(list, resource_version))
}

/// Merge patch removing our finalizer from `current`, guarded by
/// `resource_version`. `None` when it is not there.
pub(crate) fn finalizer_remove_patch(
    current: &[String],
    resource_version: Option<&str>,
) -> Option<Value> {
    if !current.iter().any(|f| f == FINALIZER) {
        return None;
    }
    let list: Vec<String> = current
        .iter()
        .filter(|f| *f != FINALIZER)
        .cloned()
        .collect();
    Some(finalizers_patch(list, resource_version))
}

fn finalizers_patch(list: Vec<String>, resource_version: Option<&str>) -> Value {
    let mut metadata = json!({ "finalizers": list });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = Value::String(rv.to_string());
    }
    json!({ "metadata": metadata })
}

/// Server-side apply body for `status.dataImage`.
pub(crate) fn status_apply_body(name: &str, namespace: &str, status: &DataImageStatus) -> Value {
    json!({
        "apiVersion": API_VERSION,
        "kind": "BareMetalHost",
        "metadata": { "name": name, "namespace": namespace },
        "status": { "dataImage": status },
    })
}

/// Merge patch clearing `status.dataImage`.
pub(crate) fn status_clear_patch() -> Value {
    json!({ "status": { "dataImage": null } })
}

/// Every merge patch names our field manager (`managedFields` then say
/// who wrote the annotations, the finalizer and the status).
fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// The writes, against one host.
pub(crate) struct HostWriter {
    pub api: Api<HostResource>,
    pub name: String,
}

impl HostWriter {
    pub(crate) fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
        }
    }

    pub(crate) async fn merge(&self, patch: &Value) -> Result<HostResource, kube::Error> {
        self.api
            .patch(&self.name, &merge_params(), &Patch::Merge(patch))
            .await
    }

    pub(crate) async fn apply_status(
        &self,
        namespace: &str,
        status: &DataImageStatus,
    ) -> Result<(), kube::Error> {
        let body = status_apply_body(&self.name, namespace, status);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        self.api
            .patch_status(&self.name, &params, &Patch::Apply(&body))
            .await
            .map(|_| ())
    }

    pub(crate) async fn clear_status(&self) -> Result<(), kube::Error> {
        self.api
            .patch_status(
                &self.name,
                &merge_params(),
                &Patch::Merge(&status_clear_patch()),
            )
            .await
            .map(|_| ())
    }
}

/// Start-up check: the installed BareMetalHost CRD must carry
/// `spec.dataImage` (an operator upgrade that re-applies its own CRD prunes
/// it, and the API server would then silently drop users' dataImage).
pub fn check_crd(crd: &Value) -> Result<(), String> {
    let versions = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .ok_or_else(|| "the BareMetalHost CRD has no spec.versions".to_string())?;
    let served: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("name").and_then(Value::as_str) == Some(crate::model::VERSION))
        .collect();
    let Some(version) = served.first() else {
        return Err(format!(
            "the BareMetalHost CRD does not serve {}",
            crate::model::VERSION
        ));
    };
    let schema = version.pointer("/schema/openAPIV3Schema");
    let spec_field = schema.and_then(|s| s.pointer("/properties/spec/properties/dataImage"));
    if spec_field.is_none() {
        return Err(
            "the installed BareMetalHost CRD has no spec.dataImage (an operator upgrade probably re-applied its own CRD): \
             re-apply this project's CRD patch (`metal3-dataimage crd`) before starting the reconciler"
                .to_string(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_patches_touch_only_their_keys() {
        assert_eq!(
            hold_patch(true),
            json!({"metadata":{"annotations":{"reboot.metal3.io/metal3-dataimage":"{\"mode\":\"soft\"}"}}})
        );
        assert_eq!(
            hold_patch(false),
            json!({"metadata":{"annotations":{"reboot.metal3.io/metal3-dataimage":null}}})
        );
        assert_eq!(
            record_patch(None),
            json!({"metadata":{"annotations":{"dataimage.metal3.io/attached":null}}})
        );
    }

    #[test]
    fn finalizer_patches_keep_other_finalizers_and_guard_the_version() {
        let current = vec!["metal3.io/baremetalhost".to_string()];
        let add = finalizer_add_patch(&current, Some("42")).unwrap();
        assert_eq!(
            add,
            json!({"metadata":{"finalizers":["metal3.io/baremetalhost","dataimage.metal3.io/detach"],"resourceVersion":"42"}})
        );
        let with = vec!["a".to_string(), FINALIZER.to_string(), "b".to_string()];
        assert_eq!(finalizer_add_patch(&with, Some("1")), None);
        assert_eq!(
            finalizer_remove_patch(&with, Some("7")).unwrap(),
            json!({"metadata":{"finalizers":["a","b"],"resourceVersion":"7"}})
        );
        assert_eq!(finalizer_remove_patch(&current, Some("7")), None);
    }

    #[test]
    fn crd_check_refuses_a_pruned_crd() {
        let good = json!({"spec":{"versions":[{"name":"v1alpha1","schema":{"openAPIV3Schema":{"properties":{"spec":{"properties":{"dataImage":{"type":"object"}}}}}}}]}});
        assert_eq!(check_crd(&good), Ok(()));
        let pruned = json!({"spec":{"versions":[{"name":"v1alpha1","schema":{"openAPIV3Schema":{"properties":{"spec":{"properties":{"online":{"type":"boolean"}}}}}}}]}});
        assert!(check_crd(&pruned).unwrap_err().contains("spec.dataImage"));
        assert!(check_crd(&json!({})).is_err());
    }
}
