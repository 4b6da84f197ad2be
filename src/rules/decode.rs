//! Typed decoding of only the fields the rules read, straight from the raw
//! JSON text (no `serde_json::Value` tree). Unknown fields are skipped; a
//! known field with the wrong JSON type is reported with its path.

use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::{Decoded, Inner, Operation, ResourceKind, ReviewInput, TypedObject};
use crate::telemetry::redact_url;

/// Reads only the fields the rules use from `input.object`/`old_object`.
pub fn decode(input: &ReviewInput<'_>) -> Decoded {
    fn typed<T: DeserializeOwned>(object: &RawValue, wrap: impl FnOnce(Box<T>) -> Inner) -> Inner {
        match decode_json_text(object.get()) {
            Ok(new) => wrap(Box::new(new)),
            Err((field, message)) => Inner::Invalid { field, message },
        }
    }
    let inner = match (input.operation, present(input.object)) {
        (Operation::Delete | Operation::Connect, _) | (_, None) => Inner::Nothing,
        (_, Some(object)) => match input.kind {
            ResourceKind::BareMetalHost => typed(object, |new| Inner::Host { new }),
            ResourceKind::DataImage => typed(object, |new| Inner::DataImage { new }),
        },
    };
    Decoded {
        inner,
        sub_resource: input.sub_resource.is_some(),
    }
}

/// Like [`decode`] for a request whose object is already typed: the same
/// [`Decoded`] as [`decode`] on the object's JSON text. `input.object` is not
/// read (it may be `None`); `input.old_object` stays raw, decoded later only
/// when needed. An object of another kind than `input.kind` falls back to
/// [`decode`] of `input.object`.
pub fn decode_typed(input: &ReviewInput<'_>, object: TypedObject) -> Decoded {
    let inner = match (input.operation, object) {
        (Operation::Delete | Operation::Connect, _) => Inner::Nothing,
        (_, TypedObject::Host(new)) if input.kind == ResourceKind::BareMetalHost => {
            Inner::Host { new }
        }
        (_, TypedObject::DataImage(new)) if input.kind == ResourceKind::DataImage => {
            Inner::DataImage { new }
        }
        _ => return decode(input),
    };
    Decoded {
        inner,
        sub_resource: input.sub_resource.is_some(),
    }
}

/// `None` for an absent or JSON `null` object.
fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get().trim() != "null")
}

/// oldObject, typed; `None` when absent or when it does not decode (the new
/// object is then judged without ratcheting rather than denied for a stored
/// object the user cannot fix).
pub(super) fn decode_old<T: DeserializeOwned>(raw: Option<&RawValue>) -> Option<T> {
    decode_json_text(present(raw)?.get()).ok()
}

/// Decodes JSON `text`, or returns the JSON path of the offending value
/// (empty for the root) and a message without serde_json's line/column
/// suffix. Only a JSON object is accepted (serde would otherwise read a
/// struct from an array).
pub fn decode_json_text<T: DeserializeOwned>(text: &str) -> Result<T, (String, String)> {
    if !text.trim_start().starts_with('{') {
        return Err((String::new(), "must be a JSON object".to_string()));
    }
    // The fast path does not track the path; only a failure is decoded
    // again to find out where.
    if let Ok(value) = serde_json::from_str(text) {
        return Ok(value);
    }
    let mut deserializer = serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(&mut deserializer).map_err(|err| {
        let path = err.path().to_string();
        let field = if path == "." { String::new() } else { path };
        // serde's message without position and backticks, with any URL
        // userinfo masked (a type error may quote a string value).
        let err = err.into_inner();
        let mut text = err.to_string();
        if err.line() > 0
            && let Some(at) = text.rfind(" at line ")
        {
            text.truncate(at);
        }
        (field, redact_url(&text.replace('`', "")).into_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BareMetalHost, DataImageInput};

    /// The JSON path and message of a decode failure.
    fn invalid_field(d: &Decoded) -> Option<(&str, &str)> {
        match &d.inner {
            Inner::Invalid { field, message } => Some((field, message)),
            _ => None,
        }
    }

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).unwrap()
    }

    fn input<'a>(object: &'a RawValue, old: Option<&'a RawValue>) -> ReviewInput<'a> {
        ReviewInput {
            kind: ResourceKind::BareMetalHost,
            operation: if old.is_some() {
                Operation::Update
            } else {
                Operation::Create
            },
            sub_resource: None,
            user: "admin",
            name: "h",
            namespace: "metal3",
            object: Some(object),
            old_object: old,
        }
    }

    #[test]
    fn wrong_type_names_the_field() {
        let obj = raw(r#"{"metadata":{"name":"h"},"spec":{"dataImage":{"url":42}}}"#);
        let d = decode(&input(&obj, None));
        assert_eq!(
            invalid_field(&d),
            Some((
                "spec.dataImage.url",
                "invalid type: integer 42, expected a string"
            ))
        );
        let obj = raw(
            r#"{"spec":{"dataImage":{"url":"https://h/a.iso","disableCertificateVerification":"https://u:pw@h"}}}"#,
        );
        let (field, message) = invalid_field(&decode(&input(&obj, None)))
            .map(|(f, m)| (f.to_string(), m.to_string()))
            .unwrap();
        assert_eq!(field, "spec.dataImage.disableCertificateVerification");
        assert!(!message.contains("pw"), "{message}");
        let obj = raw("[1]");
        assert_eq!(invalid_field(&decode(&input(&obj, None))).unwrap().0, "");
    }

    #[test]
    fn null_and_unknown_fields() {
        let obj = raw(
            r#"{"metadata":{"name":"h","annotations":{"a":"b"},"future":{"x":[1,2]}},
                "spec":{"dataImage":null,"newField":{"deep":true},"bmc":{"address":"redfish://h","extra":1}},
                "status":{"hardware":{"cpu":{"count":8}},"dataImage":null}}"#,
        );
        let d = decode(&input(&obj, None));
        let Inner::Host { new } = &d.inner else {
            panic!("{d:?}")
        };
        assert!(new.data_image().is_none());
        assert!(!new.has_status_data_image());
        assert_eq!(new.bmc_address(), Some("redfish://h"));
    }

    #[test]
    fn reads_data_image_and_old_object() {
        let obj = raw(
            r#"{"metadata":{"name":"h"},"spec":{"dataImage":{"url":"https://h/a.iso","credentialsName":"s","future":1}},
                "status":{"dataImage":{"state":"Attached"}}}"#,
        );
        let old = raw(r#"{"metadata":{"name":"h"},"spec":{"dataImage":{"url":7}}}"#);
        let d = decode(&input(&obj, Some(&old)));
        let Inner::Host { new } = &d.inner else {
            panic!("{d:?}")
        };
        assert_eq!(
            new.data_image(),
            Some(&DataImageInput {
                url: Some("https://h/a.iso".into()),
                credentials_name: Some("s".into()),
                disable_certificate_verification: None,
                ..DataImageInput::default()
            })
        );
        assert!(new.has_status_data_image());
        // An old object that does not decode is ignored, not fatal.
        assert!(decode_old::<BareMetalHost>(Some(&old)).is_none());
        assert!(decode_old::<BareMetalHost>(Some(&obj)).is_some());
        assert_eq!(d.secret_to_check(), Some("s"));
    }

    #[test]
    fn delete_and_null_object_decode_to_nothing() {
        let null = raw("null");
        let mut i = input(&null, None);
        assert!(matches!(decode(&i).inner, Inner::Nothing));
        let obj = raw("{}");
        i.object = Some(&obj);
        i.operation = Operation::Delete;
        assert!(matches!(decode(&i).inner, Inner::Nothing));
    }

    #[test]
    fn typed_objects_decode_like_their_json_text() {
        let text = r#"{"metadata":{"name":"h"},"spec":{"dataImage":{"url":"https://h/a.iso"}}}"#;
        let obj = raw(text);
        let host: BareMetalHost = decode_json_text(text).unwrap();
        let typed = || TypedObject::Host(Box::new(host.clone()));
        let mut i = input(&obj, None);
        assert_eq!(
            format!("{:?}", decode_typed(&i, typed())),
            format!("{:?}", decode(&i))
        );
        // DELETE judges nothing, whatever the object.
        i.operation = Operation::Delete;
        assert!(matches!(decode_typed(&i, typed()).inner, Inner::Nothing));
        // Another kind than the input's: decoded from the raw object instead.
        i.operation = Operation::Create;
        i.kind = ResourceKind::DataImage;
        let d = decode_typed(&i, TypedObject::Host(Box::new(host)));
        let Inner::DataImage { new } = &d.inner else {
            panic!("{d:?}")
        };
        assert_eq!(new.metadata.name.as_deref(), Some("h"));
    }

    #[test]
    fn masks_userinfo_in_free_text() {
        assert_eq!(
            redact_url(r#"string "http://u:p@h/x""#),
            r#"string "http://***@h/x""#
        );
        assert_eq!(redact_url("no url here"), "no url here");
        assert_eq!(redact_url("a://b c://d@e"), "a://b c://***@e");
    }
}
