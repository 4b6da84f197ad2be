//! Properties: the rules never panic on arbitrary input, never echo URL
//! passwords, and defaulting is idempotent.

use metal3_dataimage::rules::{
    self, DEFAULT_OPERATOR_USER, Operation, Policy, ResourceKind, ReviewInput, SecretLookup,
    Verdict,
};
use proptest::prelude::*;
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Value, json};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        let keys = prop_oneof![
            Just("spec".to_string()),
            Just("status".to_string()),
            Just("metadata".to_string()),
            Just("dataImage".to_string()),
            Just("url".to_string()),
            Just("bmc".to_string()),
            Just("address".to_string()),
            Just("image".to_string()),
            Just("format".to_string()),
            Just("credentialsName".to_string()),
            Just("disableCertificateVerification".to_string()),
            Just("deletionTimestamp".to_string()),
            "[a-zA-Z]{1,8}",
        ];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(keys, inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn arb_url() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "(https?|HTTP|ftp|file)?:?/{0,4}[a-zA-Z0-9.:@%\\[\\]\\\\/?#~ -]{0,40}",
        "https?://[a-z0-9.-]{1,20}(:[0-9]{1,6})?(/[a-zA-Z0-9._%~-]{0,12}){0,4}(\\?[a-z=&%]{0,12})?(#.{0,5})?",
        "https?://\\[[0-9a-fA-F:.%]{0,30}\\](:[0-9]{0,6})?/.{0,10}",
    ]
}

fn arb_op() -> impl Strategy<Value = Operation> {
    prop_oneof![
        Just(Operation::Create),
        Just(Operation::Update),
        Just(Operation::Delete),
        Just(Operation::Connect),
    ]
}

fn arb_secret() -> impl Strategy<Value = SecretLookup> {
    prop_oneof![
        Just(SecretLookup::NotNeeded),
        Just(SecretLookup::NotFound),
        (any::<bool>(), any::<bool>()).prop_map(|(u, p)| {
            let value = |set: bool| if set { &b"x"[..] } else { b" " };
            SecretLookup::from_entries([("username", value(u)), ("password", value(p))])
        }),
        Just(SecretLookup::Unknown {
            reason: "timeout".into()
        }),
    ]
}

#[allow(clippy::too_many_arguments)]
fn run(
    kind: ResourceKind,
    operation: Operation,
    sub_resource: Option<&str>,
    user: &str,
    object: Option<&RawValue>,
    old: Option<&RawValue>,
    secret: &SecretLookup,
    policy: &Policy,
) -> (Verdict, Verdict) {
    let input = ReviewInput {
        kind,
        operation,
        sub_resource,
        user,
        name: "h",
        namespace: "metal3",
        object,
        old_object: old,
    };
    let decoded = rules::decode(&input);
    let _ = decoded.secret_to_check();
    (
        rules::validate(&input, &decoded, secret, policy),
        rules::mutate(
            &input,
            &decoded,
            &rules::OldDataImages::from_raw(old),
            policy,
        ),
    )
}

fn host_with(data_image: Value) -> Value {
    json!({
        "metadata": {"name": "h", "namespace": "metal3"},
        "spec": {"bmc": {"address": "redfish://192.0.2.1/redfish/v1/Systems/1"}, "dataImage": data_image}
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_json_never_panics(
        object in arb_json(),
        old in arb_json(),
        op in arb_op(),
        status in any::<bool>(),
        datakind in any::<bool>(),
        strict in any::<bool>(),
        secret in arb_secret(),
    ) {
        let object = to_raw_value(&object).unwrap();
        let old = to_raw_value(&old).unwrap();
        let kind = if datakind { ResourceKind::DataImage } else { ResourceKind::BareMetalHost };
        let policy = Policy { strict_secrets: strict, ..Policy::default() };
        let (v, m) = run(kind, op, status.then_some("status"), DEFAULT_OPERATOR_USER,
                         Some(&object), Some(&old), &secret, &policy);
        prop_assert!(v.allowed || v.status.is_some());
        prop_assert!(m.allowed);
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,64}") {
        // Not even JSON: the caller only hands RawValues, but decode_json_text is public.
        let _ = rules::decode_json_text::<Value>(&text);
    }

    #[test]
    fn arbitrary_urls_never_panic_and_denials_are_well_formed(url in arb_url(), datakind in any::<bool>()) {
        let (kind, object) = if datakind {
            (ResourceKind::DataImage, json!({"metadata": {"name": "h"}, "spec": {"url": url}}))
        } else {
            (ResourceKind::BareMetalHost, host_with(json!({"url": url})))
        };
        let object = to_raw_value(&object).unwrap();
        let (v, _) = run(kind, Operation::Create, None, "admin", Some(&object), None,
                         &SecretLookup::NotNeeded, &Policy::default());
        if let Some(status) = &v.status {
            prop_assert_eq!(status.code, 422);
            let details = status.details.as_ref().unwrap();
            prop_assert!(!details.causes.is_empty());
            for c in &details.causes {
                let rendered = format!("{}: {}", c.field, c.message);
                prop_assert!(status.message.contains(&rendered), "{} lacks {}", status.message, rendered);
            }
        }
    }

    #[test]
    fn url_passwords_are_never_echoed(
        scheme in "(https?|ftp|HTTP)",
        slashes in "[/\\\\]{0,3}",
        user in "[a-z]{0,6}",
        password in "[a-zA-Z0-9]{6,12}",
        rest in "[a-z0-9.@:/?#%\\[\\] -]{0,30}",
    ) {
        let secret = format!("PW{password}");
        let url = format!("{scheme}:{slashes}{user}:{secret}@{rest}");
        let object = to_raw_value(&host_with(json!({"url": url}))).unwrap();
        let (v, _) = run(ResourceKind::BareMetalHost, Operation::Create, None, "admin",
                         Some(&object), None, &SecretLookup::NotNeeded, &Policy::default());
        prop_assert!(!v.allowed);
        let shown = format!("{v:?}");
        prop_assert!(!shown.contains(&secret), "{}", shown);
    }

    #[test]
    fn defaulting_is_idempotent(
        url in arb_url(),
        dcv in prop::option::of(any::<bool>()),
        creds in prop::option::of("[a-z-]{1,10}"),
        extra in any::<bool>(),
        operator in any::<bool>(),
        drop_new in any::<bool>(),
        drop_spec in any::<bool>(),
        op in prop_oneof![Just(Operation::Create), Just(Operation::Update)],
    ) {
        let mut data_image = json!({"url": url});
        if let Some(d) = dcv { data_image["disableCertificateVerification"] = json!(d); }
        if let Some(c) = creds { data_image["credentialsName"] = json!(c); }
        if extra { data_image["futureField"] = json!({"x": [1]}); }
        let old = host_with(data_image.clone());
        let mut new = old.clone();
        if drop_new {
            if drop_spec {
                new.as_object_mut().unwrap().remove("spec");
            } else {
                new["spec"].as_object_mut().unwrap().remove("dataImage");
            }
        }
        let user = if operator { DEFAULT_OPERATOR_USER } else { "admin" };
        let old_raw = to_raw_value(&old).unwrap();
        let old_arg = (op == Operation::Update).then_some(&*old_raw);
        let new_raw = to_raw_value(&new).unwrap();
        let (_, first) = run(ResourceKind::BareMetalHost, op, None, user, Some(&new_raw), old_arg,
                             &SecretLookup::NotNeeded, &Policy::default());
        let mut patched = new.clone();
        if let Some(patch) = &first.patch {
            json_patch::patch(&mut patched, patch).unwrap();
        }
        let patched_raw = to_raw_value(&patched).unwrap();
        let (_, second) = run(ResourceKind::BareMetalHost, op, None, user, Some(&patched_raw), old_arg,
                              &SecretLookup::NotNeeded, &Policy::default());
        prop_assert!(second.patch.is_none(), "{:?}", second.patch);
        // The user's URL is never rewritten.
        if patched["spec"]["dataImage"].is_object() {
            prop_assert_eq!(&patched["spec"]["dataImage"]["url"], &data_image["url"]);
            prop_assert!(patched["spec"]["dataImage"]["disableCertificateVerification"].is_boolean());
        }
        // Restored exactly for the operator, honoured for anyone else.
        let restored = operator && op == Operation::Update;
        prop_assert_eq!(patched["spec"]["dataImage"].is_object(), !drop_new || restored);
        if restored && extra {
            prop_assert_eq!(&patched["spec"]["dataImage"]["futureField"], &json!({"x": [1]}));
        }
    }
}
