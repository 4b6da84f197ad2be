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
//! The annotation and finalizer patches are pure functions (tested without a
//! cluster).

use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use super::record::{FIELD_MANAGER, FINALIZER};
use crate::model::bmh::HostResource;
use crate::model::{API_VERSION, DataImageStatus};

/// Merge patch setting (`Some`) or deleting (`None`) annotations.
pub(crate) fn annotations_patch(changes: &[(&str, Option<&str>)]) -> Value {
    let map: serde_json::Map<String, Value> = changes
        .iter()
        .map(|(key, value)| (key.to_string(), (*value).into()))
        .collect();
    json!({ "metadata": { "annotations": map } })
}

/// Merge patch adding (`add`) or removing our finalizer from `current`,
/// guarded by `resource_version`. `None` when there is nothing to change.
pub(crate) fn finalizer_patch(
    current: &[String],
    resource_version: Option<&str>,
    add: bool,
) -> Option<Value> {
    if current.iter().any(|f| f == FINALIZER) == add {
        return None;
    }
    let others = current
        .iter()
        .map(String::as_str)
        .filter(|f| *f != FINALIZER);
    let list: Vec<&str> = others.chain(add.then_some(FINALIZER)).collect();
    let mut metadata = json!({ "finalizers": list });
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = rv.into();
    }
    Some(json!({ "metadata": metadata }))
}

/// Every merge patch names our field manager (`managedFields` then say
/// who wrote the annotations, the finalizer, the status and the Lease).
pub(crate) fn merge_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PatchParams::default()
    }
}

/// Creates (Events, the Lease) name our field manager too.
pub(crate) fn post_params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..PostParams::default()
    }
}

/// The writes, against one host.
pub(crate) struct HostWriter {
    pub api: Api<HostResource>,
    pub namespace: String,
    pub name: String,
}

impl HostWriter {
    pub(crate) fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub(crate) async fn merge(&self, patch: &Value) -> Result<HostResource, kube::Error> {
        self.api
            .patch(&self.name, &merge_params(), &Patch::Merge(patch))
            .await
    }

    /// Server-side apply of `status.dataImage`.
    pub(crate) async fn apply_status(&self, status: &DataImageStatus) -> Result<(), kube::Error> {
        let body = json!({
            "apiVersion": API_VERSION,
            "kind": "BareMetalHost",
            "metadata": { "name": self.name, "namespace": self.namespace },
            "status": { "dataImage": status },
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let patch = Patch::Apply(&body);
        self.api
            .patch_status(&self.name, &params, &patch)
            .await
            .map(drop)
    }

    /// Merge patch clearing `status.dataImage`.
    pub(crate) async fn clear_status(&self) -> Result<(), kube::Error> {
        let patch = Patch::Merge(json!({ "status": { "dataImage": null } }));
        self.api
            .patch_status(&self.name, &merge_params(), &patch)
            .await
            .map(drop)
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
    let version = crate::model::VERSION;
    let Some(served) = versions.iter().find(|v| v["name"] == version) else {
        return Err(format!("the BareMetalHost CRD does not serve {version}"));
    };
    let field = "/schema/openAPIV3Schema/properties/spec/properties/dataImage";
    if served.pointer(field).is_none() {
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
        use crate::reconcile::record::{HOLD_ANNOTATION, HOLD_VALUE, STATE_ANNOTATION};
        assert_eq!(
            annotations_patch(&[(HOLD_ANNOTATION, Some(HOLD_VALUE))]),
            json!({"metadata":{"annotations":{"reboot.metal3.io/metal3-dataimage":"{\"mode\":\"soft\"}"}}})
        );
        assert_eq!(
            annotations_patch(&[(HOLD_ANNOTATION, None)]),
            json!({"metadata":{"annotations":{"reboot.metal3.io/metal3-dataimage":null}}})
        );
        assert_eq!(
            annotations_patch(&[(STATE_ANNOTATION, None)]),
            json!({"metadata":{"annotations":{"dataimage.metal3.io/attached":null}}})
        );
    }

    #[test]
    fn finalizer_patches_keep_other_finalizers_and_guard_the_version() {
        let current = vec!["metal3.io/baremetalhost".to_string()];
        let add = finalizer_patch(&current, Some("42"), true).unwrap();
        assert_eq!(
            add,
            json!({"metadata":{"finalizers":["metal3.io/baremetalhost","dataimage.metal3.io/detach"],"resourceVersion":"42"}})
        );
        let with = vec!["a".to_string(), FINALIZER.to_string(), "b".to_string()];
        assert_eq!(finalizer_patch(&with, Some("1"), true), None);
        assert_eq!(
            finalizer_patch(&with, Some("7"), false).unwrap(),
            json!({"metadata":{"finalizers":["a","b"],"resourceVersion":"7"}})
        );
        assert_eq!(finalizer_patch(&current, Some("7"), false), None);
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
