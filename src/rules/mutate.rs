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

use super::decoded::Inner;
use super::{Operation, Policy, ReviewInput, Verdict};
use crate::model::{BareMetalHost, DataImageInput};

pub(super) fn mutate(
    input: &ReviewInput<'_>,
    decoded: &super::Decoded,
    policy: &Policy,
) -> Verdict {
    let mut ops = Vec::new();
    if let (Operation::Create | Operation::Update, Inner::Host { new, .. }) =
        (input.operation, &decoded.inner)
    {
        let operator = policy.operator_users.iter().any(|u| u == input.user);
        let restore = operator && input.operation == Operation::Update;
        match input.sub_resource {
            None => main_resource_ops(input, new, restore, &mut ops),
            Some("status") => {
                if restore && !new.has_status_data_image() {
                    restore_ops(
                        input.old_object,
                        Part::Status,
                        new.status.is_some(),
                        &mut ops,
                    );
                }
            }
            Some(_) => {}
        }
    }
    Verdict {
        allowed: true,
        status: None,
        warnings: Vec::new(),
        patch: (!ops.is_empty()).then_some(Patch(ops)),
    }
}

fn main_resource_ops(
    input: &ReviewInput<'_>,
    new: &BareMetalHost,
    restore: bool,
    ops: &mut Vec<PatchOperation>,
) {
    let mut effective = new.data_image().cloned();
    if restore && effective.is_none() {
        effective = restore_ops(input.old_object, Part::Spec, new.spec.is_some(), ops);
    }
    // The default belongs to url; an image built from contentFrom is not
    // fetched (and rule 13 forbids the field there).
    if effective
        .is_some_and(|d| d.disable_certificate_verification.is_none() && d.content_from.is_none())
    {
        ops.push(add(
            "/spec/dataImage/disableCertificateVerification",
            Value::Bool(false),
        ));
    }
}

#[derive(Clone, Copy)]
enum Part {
    Spec,
    Status,
}

/// Adds the operations that copy `<part>.dataImage` from oldObject into the
/// new object, and returns it typed (for defaulting) when it is an object.
fn restore_ops(
    old_object: Option<&RawValue>,
    part: Part,
    new_has_part: bool,
    ops: &mut Vec<PatchOperation>,
) -> Option<DataImageInput> {
    #[derive(Deserialize)]
    struct Old {
        #[serde(default)]
        spec: Option<OldPart>,
        #[serde(default)]
        status: Option<OldPart>,
    }
    #[derive(Deserialize)]
    struct OldPart {
        #[serde(default, rename = "dataImage")]
        data_image: Option<Box<RawValue>>,
    }

    let old: Old = serde_json::from_str(old_object?.get()).ok()?;
    let raw = match part {
        Part::Spec => old.spec,
        Part::Status => old.status,
    }?
    .data_image?;
    let value: Value = serde_json::from_str(raw.get()).ok()?;
    let (part_path, field_path) = match part {
        Part::Spec => ("/spec", "/spec/dataImage"),
        Part::Status => ("/status", "/status/dataImage"),
    };
    if new_has_part {
        ops.push(add(field_path, value));
    } else {
        let mut wrapper = serde_json::Map::new();
        wrapper.insert("dataImage".to_string(), value);
        ops.push(add(part_path, Value::Object(wrapper)));
    }
    serde_json::from_str(raw.get()).ok()
}

fn add(path: &'static str, value: Value) -> PatchOperation {
    PatchOperation::Add(AddOperation {
        path: Pointer::from_static(path).to_buf(),
        value,
    })
}
