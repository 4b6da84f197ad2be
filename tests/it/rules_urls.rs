//! URL rules 1-7 over the table in tests/fixtures/rules/url-cases.yaml, on a
//! BareMetalHost (`spec.dataImage.url`) and a DataImage (`spec.url`).

use metal3_dataimage::rules::{
    self, Operation, Policy, ResourceKind, ReviewInput, SecretLookup, Verdict,
};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::{RawValue, to_raw_value};

#[derive(Debug, Deserialize)]
struct Case {
    url: String,
    #[serde(default)]
    deny: Option<String>,
    #[serde(default)]
    warnings: usize,
}

fn cases() -> Vec<Case> {
    let path = format!(
        "{}/tests/fixtures/rules/url-cases.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn judge(kind: ResourceKind, object: &RawValue) -> Verdict {
    let input = ReviewInput {
        kind,
        operation: Operation::Create,
        sub_resource: None,
        user: "admin",
        name: "worker-0",
        namespace: "metal3",
        object: Some(object),
        old_object: None,
    };
    let decoded = rules::decode(&input);
    rules::validate(
        &input,
        &decoded,
        &SecretLookup::NotNeeded,
        &Policy::default(),
    )
}

fn host(url: &str) -> Box<RawValue> {
    to_raw_value(&json!({
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": "worker-0", "namespace": "metal3"},
        "spec": {
            "online": true,
            "bmc": {"address": "redfish-virtualmedia+https://192.0.2.10/redfish/v1/Systems/1",
                    "credentialsName": "bmc-secret"},
            "dataImage": {"url": url}
        }
    }))
    .unwrap()
}

fn data_image(url: &str) -> Box<RawValue> {
    to_raw_value(&json!({
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "DataImage",
        "metadata": {"name": "worker-0", "namespace": "metal3"},
        "spec": {"url": url}
    }))
    .unwrap()
}

fn check(case: &Case, verdict: &Verdict, field: &str) {
    match &case.deny {
        None => {
            assert!(verdict.allowed, "{case:?}: {:?}", verdict.status);
            assert_eq!(
                verdict.warnings.len(),
                case.warnings,
                "{case:?}: {:?}",
                verdict.warnings
            );
        }
        Some(needle) => {
            assert!(!verdict.allowed, "{case:?} was admitted");
            let status = verdict.status.as_ref().unwrap();
            assert_eq!(status.code, 422);
            let causes = &status.details.as_ref().unwrap().causes;
            assert!(
                causes
                    .iter()
                    .any(|c| c.field == field && c.message.contains(needle.as_str())),
                "{case:?}: {causes:?}"
            );
            assert!(!status.message.contains("s3cret"), "{}", status.message);
        }
    }
}

#[test]
fn url_cases_on_a_bare_metal_host() {
    let cases = cases();
    assert!(cases.len() > 40);
    for case in &cases {
        // An empty url is no url: on a host, rule 12 (url or contentFrom)
        // reports it on spec.dataImage.
        let field = if case.url.is_empty() {
            "spec.dataImage"
        } else {
            "spec.dataImage.url"
        };
        check(
            case,
            &judge(ResourceKind::BareMetalHost, &host(&case.url)),
            field,
        );
    }
}

#[test]
fn url_cases_on_a_data_image() {
    for case in &cases() {
        check(
            case,
            &judge(ResourceKind::DataImage, &data_image(&case.url)),
            "spec.url",
        );
    }
}

#[test]
fn very_long_urls() {
    let at_limit = format!("https://images.example.com/{}.iso", "a".repeat(2048 - 31));
    assert_eq!(at_limit.len(), 2048);
    assert!(judge(ResourceKind::BareMetalHost, &host(&at_limit)).allowed);
    let over = format!("{at_limit}x");
    let v = judge(ResourceKind::BareMetalHost, &host(&over));
    let status = v.status.unwrap();
    let cause = &status.details.unwrap().causes[0];
    assert!(
        cause
            .message
            .ends_with("must be at most 2048 characters (it has 2049)"),
        "{}",
        cause.message
    );
    // The value is shortened in the message, not echoed in full.
    assert!(cause.message.len() < 200);
    let huge = format!("https://images.example.com/{}.iso", "a".repeat(1 << 20));
    assert!(!judge(ResourceKind::BareMetalHost, &host(&huge)).allowed);
}

#[test]
fn the_url_is_never_rewritten() {
    // Admitted URLs are handed on as written: validation never patches and
    // defaulting touches only disableCertificateVerification.
    let url = "HTTPS://Images.Example.COM:443/config.iso";
    let object = host(url);
    let input = ReviewInput {
        kind: ResourceKind::BareMetalHost,
        operation: Operation::Create,
        sub_resource: None,
        user: "admin",
        name: "worker-0",
        namespace: "metal3",
        object: Some(&object),
        old_object: None,
    };
    let decoded = rules::decode(&input);
    let patch = rules::mutate(&input, &decoded, &Default::default(), &Policy::default())
        .patch
        .unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(object.get()).unwrap();
    json_patch::patch(&mut doc, &patch).unwrap();
    assert_eq!(doc["spec"]["dataImage"]["url"], url);
}
