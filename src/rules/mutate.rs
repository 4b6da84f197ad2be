//! The mutating path: defaulting and field preservation, as a JSON Patch.
//!
//! Field preservation: the baremetal-operator's Go types do not know
//! `dataImage`, so its whole-object writes drop `spec.dataImage` (main
//! resource) and `status.dataImage` (status subresource). For the operator's
//! own user the value is restored verbatim from oldObject (unknown subfields
//! included). Anyone else removing the field is honoured.
//!
//! The reconciler running as the operator's sidecar writes under the same
//! user; its writes name the field manager `metal3-dataimage`, the operator's
//! name none. The webhook (`admission::handler::mutate_policy`) judges a
//! write naming ours with a policy without operator users, so the
//! reconciler's removals (clearing `status.dataImage`) are honoured.

use json_patch::jsonptr::Pointer;
use json_patch::{AddOperation, Patch, PatchOperation};
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::{Inner, Operation, Policy, ReviewInput, Verdict};
use crate::model::DataImageInput;

/// The mutating webhook's decision: defaults plus field preservation.
/// `old`: what oldObject holds of `dataImage` ([`OldDataImages::from_raw`]
/// reads it from `input.old_object`).
pub fn mutate(
    input: &ReviewInput<'_>,
    decoded: &super::Decoded,
    old: &OldDataImages,
    policy: &Policy,
) -> Verdict {
    let mut ops = Vec::new();
    if let (Operation::Create | Operation::Update, Inner::Host { new }) =
        (input.operation, &decoded.inner)
    {
        let operator = policy.operator_users.iter().any(|u| u == input.user);
        let restore = operator && input.operation == Operation::Update;
        match input.sub_resource {
            None => {
                let mut effective = new.data_image().cloned();
                if restore && effective.is_none() {
                    let paths = ("/spec", "/spec/dataImage");
                    effective = restore_ops(old.spec.as_ref(), paths, new.spec.is_some(), &mut ops);
                }
                // The default belongs to url; an image built from contentFrom
                // is not fetched (and rule 13 forbids the field there).
                if effective.is_some_and(|d| {
                    d.disable_certificate_verification.is_none() && d.content_from.is_none()
                }) {
                    let path = "/spec/dataImage/disableCertificateVerification";
                    ops.push(add(path, Value::Bool(false)));
                }
            }
            Some("status") if restore && !new.has_status_data_image() => {
                let paths = ("/status", "/status/dataImage");
                restore_ops(old.status.as_ref(), paths, new.status.is_some(), &mut ops);
            }
            Some(_) => {}
        }
    }
    Verdict {
        patch: (!ops.is_empty()).then_some(Patch(ops)),
        ..Verdict::allow(Vec::new())
    }
}

/// `spec.dataImage` and `status.dataImage` of oldObject, verbatim (unknown
/// subfields included): all the mutating path reads of oldObject. The webhook
/// reads it while parsing the envelope; [`OldDataImages::from_raw`] reads it
/// from a raw oldObject.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct OldDataImages {
    spec: Option<OldPart>,
    status: Option<OldPart>,
}

#[derive(Clone, Debug, Default, Deserialize)]
struct OldPart {
    #[serde(rename = "dataImage")]
    data_image: Option<Box<RawValue>>,
}

impl OldDataImages {
    /// From a raw oldObject; absent, or not shaped like a host: nothing to
    /// restore.
    pub fn from_raw(old_object: Option<&RawValue>) -> Self {
        old_object
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
            .unwrap_or_default()
    }
}

/// Adds the operations that copy `<part>.dataImage` from oldObject (`old`,
/// its `<part>`) into the new object, and returns it typed (for defaulting)
/// when it is an object. `paths`: the JSON Pointers of `<part>` and of
/// `<part>/dataImage`.
fn restore_ops(
    old: Option<&OldPart>,
    (part_path, field_path): (&'static str, &'static str),
    new_has_part: bool,
    ops: &mut Vec<PatchOperation>,
) -> Option<DataImageInput> {
    let raw = old?.data_image.as_deref()?;
    let value: Value = serde_json::from_str(raw.get()).ok()?;
    let typed = DataImageInput::deserialize(&value).ok();
    if new_has_part {
        ops.push(add(field_path, value));
    } else {
        ops.push(add(part_path, serde_json::json!({ "dataImage": value })));
    }
    typed
}

fn add(path: &'static str, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: Pointer::from_static(path).to_buf(),
        value,
    })
}
