//! The rules on AdmissionReviews captured from a real kube-apiserver 1.36
//! (tests/fixtures/admission-reviews), as received and with edits that make
//! them violate a rule.

use metal3_dataimage::rules::{
    self, Operation, Policy, ResourceKind, ReviewInput, SecretLookup, Verdict,
};
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Value, json};

const OPERATOR: &str = rules::DEFAULT_OPERATOR_USER;

/// One admission request, owned, with the objects as raw JSON.
struct Review {
    kind: ResourceKind,
    operation: Operation,
    sub_resource: Option<String>,
    user: String,
    name: String,
    namespace: String,
    object: Option<Box<RawValue>>,
    old_object: Option<Box<RawValue>>,
}

fn fixture(file: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/admission-reviews/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn raw(v: &Value) -> Option<Box<RawValue>> {
    (!v.is_null()).then(|| to_raw_value(v).unwrap())
}

impl Review {
    fn from_value(review: &Value) -> Self {
        let r = &review["request"];
        Review {
            kind: match r["kind"]["kind"].as_str().unwrap() {
                "BareMetalHost" => ResourceKind::BareMetalHost,
                "DataImage" => ResourceKind::DataImage,
                other => panic!("unexpected kind {other}"),
            },
            operation: Operation::parse(r["operation"].as_str().unwrap()).unwrap(),
            sub_resource: r["subResource"].as_str().map(str::to_string),
            user: r["userInfo"]["username"].as_str().unwrap().to_string(),
            name: r["name"].as_str().unwrap_or("").to_string(),
            namespace: r["namespace"].as_str().unwrap_or("").to_string(),
            object: raw(&r["object"]),
            old_object: raw(&r["oldObject"]),
        }
    }

    fn load(file: &str) -> Self {
        Self::from_value(&fixture(file))
    }

    /// The same request with `edit` applied to the new object.
    fn edit(file: &str, edit: impl FnOnce(&mut Value)) -> Self {
        let mut review = fixture(file);
        edit(&mut review["request"]["object"]);
        Self::from_value(&review)
    }

    /// The same request with `edit` applied to both object and oldObject.
    fn edit_both(file: &str, edit: impl Fn(&mut Value)) -> Self {
        let mut review = fixture(file);
        edit(&mut review["request"]["object"]);
        edit(&mut review["request"]["oldObject"]);
        Self::from_value(&review)
    }

    fn input(&self) -> ReviewInput<'_> {
        ReviewInput {
            kind: self.kind,
            operation: self.operation,
            sub_resource: self.sub_resource.as_deref(),
            user: &self.user,
            name: &self.name,
            namespace: &self.namespace,
            object: self.object.as_deref(),
            old_object: self.old_object.as_deref(),
        }
    }

    fn validate_with(&self, secret: &SecretLookup, policy: &Policy) -> Verdict {
        let input = self.input();
        let decoded = rules::decode(&input);
        rules::validate(&input, &decoded, secret, policy)
    }

    fn validate(&self) -> Verdict {
        self.validate_with(&good_secret(), &Policy::default())
    }

    fn mutate(&self) -> Verdict {
        let input = self.input();
        let decoded = rules::decode(&input);
        let old = rules::OldDataImages::from_raw(input.old_object);
        rules::mutate(&input, &decoded, &old, &Policy::default())
    }
}

fn good_secret() -> SecretLookup {
    SecretLookup::from_entries([("username", &b"admin"[..]), ("password", b"secret")])
}

fn set_url(url: &str) -> impl Fn(&mut Value) + '_ {
    move |o: &mut Value| o["spec"]["dataImage"]["url"] = json!(url)
}

fn causes(v: &Verdict) -> Vec<(String, String, String)> {
    let status = v.status.as_ref().expect("a denial carries a status");
    status
        .details
        .as_ref()
        .expect("details")
        .causes
        .iter()
        .map(|c| (c.reason.clone(), c.field.clone(), c.message.clone()))
        .collect()
}

const ALL_REVIEWS: &[&str] = &[
    "bmh-apply-mutate-then-validate-update",
    "bmh-apply-mutate-then-validate",
    "bmh-create-dataimage-full",
    "bmh-create-dataimage-http-no-creds",
    "bmh-create-externally-provisioned-with-image",
    "bmh-create-externally-provisioned",
    "bmh-create-generate-name",
    "bmh-create-image-live-iso",
    "bmh-create-image",
    "bmh-create-ipmi",
    "bmh-create-kubectl-create",
    "bmh-create-minimal",
    "bmh-create-server-side-apply",
    "bmh-create-with-finalizer",
    "bmh-delete-dryrun-server",
    "bmh-delete-with-finalizer",
    "bmh-delete",
    "bmh-dryrun-server-create",
    "bmh-dryrun-server-update",
    "bmh-update-add-dataimage",
    "bmh-update-annotation-only",
    "bmh-update-dataimage-url-change",
    "bmh-update-patch-json",
    "bmh-update-patch-merge",
    "bmh-update-remove-dataimage",
    "bmh-update-remove-finalizer-while-deleting",
    "bmh-update-replace",
    "bmh-update-server-side-apply",
    "dataimage-create",
    "dataimage-delete",
    "dataimage-update-url",
    "extra-bmh-update-status-with-status-rule",
];

#[test]
fn every_captured_request_is_admitted() {
    for case in ALL_REVIEWS {
        let v = Review::load(&format!("{case}.json")).validate();
        assert!(v.allowed, "{case}: {:?}", v.status);
        assert!(v.status.is_none(), "{case}");
        assert!(v.patch.is_none(), "{case}: validation never patches");
        let m = Review::load(&format!("{case}.mutate.json")).mutate();
        assert!(m.allowed, "{case}");
    }
    // The schema-invalid capture only reached the mutating webhook.
    assert!(
        Review::load("bmh-create-schema-invalid.mutate.json")
            .mutate()
            .allowed
    );
}

#[test]
fn mutation_defaults_only_when_absent_and_is_idempotent() {
    for case in ALL_REVIEWS {
        let review = fixture(&format!("{case}.mutate.json"));
        let verdict = Review::from_value(&review).mutate();
        let object = &review["request"]["object"];
        let needs_default = object["spec"]["dataImage"].is_object()
            && object["spec"]["dataImage"]
                .get("disableCertificateVerification")
                .is_none()
            && review["request"].get("subResource").is_none();
        assert_eq!(verdict.patch.is_some(), needs_default, "{case}");
        if let Some(patch) = verdict.patch {
            assert_eq!(
                serde_json::to_value(&patch).unwrap(),
                json!([{"op": "add", "path": "/spec/dataImage/disableCertificateVerification", "value": false}]),
                "{case}"
            );
            let mut again = review.clone();
            json_patch::patch(&mut again["request"]["object"], &patch).unwrap();
            assert!(
                Review::from_value(&again).mutate().patch.is_none(),
                "{case}"
            );
        }
    }
}

#[test]
fn a_bad_scheme_is_denied_like_the_api_server_would() {
    let v = Review::edit("bmh-create-dataimage-full.json", set_url("ftp://h/a.iso")).validate();
    assert!(!v.allowed);
    let status = v.status.as_ref().unwrap();
    assert_eq!(status.code, 422);
    assert_eq!(status.reason, "Invalid");
    assert_eq!(
        status.message,
        r#"BareMetalHost.metal3.io "host-dataimage-full" is invalid: spec.dataImage.url: Invalid value: "ftp://h/a.iso": scheme must be http or https"#
    );
    let details = status.details.as_ref().unwrap();
    assert_eq!(
        (
            details.name.as_str(),
            details.group.as_str(),
            details.kind.as_str()
        ),
        ("host-dataimage-full", "metal3.io", "BareMetalHost")
    );
    assert_eq!(
        causes(&v),
        [(
            "FieldValueInvalid".to_string(),
            "spec.dataImage.url".to_string(),
            r#"Invalid value: "ftp://h/a.iso": scheme must be http or https"#.to_string()
        )]
    );
    // Serialised with the JSON key kubectl reads (`reason`, not `type`).
    let json = serde_json::to_value(status).unwrap();
    assert_eq!(json["details"]["causes"][0]["reason"], "FieldValueInvalid");
    assert!(json["details"]["causes"][0].get("type").is_none());
}

#[test]
fn all_violations_are_reported_at_once_in_rule_order() {
    let v = Review::edit("bmh-create-dataimage-full.json", |o| {
        o["spec"]["dataImage"]["url"] = json!("ftp://user:hunter2@h/a.iso");
        o["spec"]["dataImage"]["credentialsName"] = json!("Bad_Name");
        o["spec"]["image"]["format"] = json!("live-iso");
        o["spec"]["bmc"]["address"] = json!("ipmi://192.0.2.11");
    })
    .validate();
    let fields: Vec<_> = causes(&v).into_iter().map(|(r, f, _)| (r, f)).collect();
    assert_eq!(
        fields,
        [
            ("FieldValueInvalid".into(), "spec.dataImage.url".into()),
            ("FieldValueInvalid".into(), "spec.dataImage.url".into()),
            (
                "FieldValueInvalid".into(),
                "spec.dataImage.credentialsName".into()
            ),
            ("FieldValueForbidden".into(), "spec.dataImage".into()),
            ("FieldValueNotSupported".into(), "spec.bmc.address".into()),
        ]
    );
    let message = &v.status.as_ref().unwrap().message;
    assert!(message.starts_with(r#"BareMetalHost.metal3.io "host-dataimage-full" is invalid: [spec.dataImage.url: Invalid value: "ftp://***@h/a.iso": scheme must be http or https, spec.dataImage.url: Invalid value: "ftp://***@h/a.iso": must not contain a user name or password"#), "{message}");
    assert!(
        message.ends_with(r#"(each type also with +http or +https)]"#),
        "{message}"
    );
    assert!(!message.contains("hunter2"));
    assert!(!format!("{v:?}").contains("hunter2"));
}

#[test]
fn wrong_json_type_is_a_bad_request_naming_the_field() {
    let review = Review::edit("bmh-create-dataimage-full.json", |o| {
        o["spec"]["dataImage"]["url"] = json!(42);
    });
    let v = review.validate();
    assert!(!v.allowed);
    let status = v.status.unwrap();
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        status.message,
        r#"BareMetalHost.metal3.io "host-dataimage-full" could not be decoded: spec.dataImage.url: invalid type: integer 42, expected a string"#
    );
    // The mutating path admits it unchanged (schema validation reports it).
    let m = review.mutate();
    assert!(m.allowed && m.patch.is_none());
}

#[test]
fn null_data_image_and_unknown_fields() {
    let v = Review::edit("bmh-create-dataimage-full.json", |o| {
        o["spec"]["dataImage"] = Value::Null;
    });
    assert!(v.validate().allowed && v.validate().warnings.is_empty());
    assert!(v.mutate().patch.is_none());
    let v = Review::edit("bmh-create-dataimage-full.json", |o| {
        o["spec"]["dataImage"]["mirror"] = json!({"url": "https://mirror/a.iso"});
        o["spec"]["futureField"] = json!([1, {"x": null}]);
        o["metadata"]["futureMeta"] = json!("x");
    })
    .validate();
    assert!(v.allowed, "{:?}", v.status);
}

#[test]
fn generate_name_create_uses_the_prefix_as_name() {
    let v = Review::edit("bmh-create-generate-name.mutate.json", |o| {
        o["spec"]["dataImage"] = json!({"url": "ftp://h/a.iso"});
    })
    .validate();
    let status = v.status.unwrap();
    assert!(
        status
            .message
            .starts_with(r#"BareMetalHost.metal3.io "host-gen-" is invalid: "#),
        "{}",
        status.message
    );
    assert_eq!(status.details.unwrap().name, "host-gen-");
    // The validating call already has the generated name.
    let v = Review::edit("bmh-create-generate-name.json", |o| {
        o["spec"]["dataImage"] = json!({"url": "ftp://h/a.iso"});
    })
    .validate();
    assert_eq!(v.status.unwrap().details.unwrap().name, "host-gen-dtsw2");
}

#[test]
fn ratcheting_relaxes_unchanged_values_only() {
    // An annotation-only update of a host stored before the webhook existed.
    let legacy = |o: &mut Value| {
        o["spec"]["dataImage"] = json!({"url": "ftp://legacy/a.iso"});
    };
    let v = Review::edit_both("bmh-update-annotation-only.json", legacy).validate();
    assert!(v.allowed, "{:?}", v.status);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert!(v.warnings[0].starts_with(
        r#"spec.dataImage.url: Invalid value: "ftp://legacy/a.iso": scheme must be http or https (not enforced"#
    ));
    // The mutating webhook's default does not count as a change.
    let mut review = fixture("bmh-update-annotation-only.json");
    legacy(&mut review["request"]["oldObject"]);
    review["request"]["object"]["spec"]["dataImage"] =
        json!({"url": "ftp://legacy/a.iso", "disableCertificateVerification": false});
    assert!(Review::from_value(&review).validate().allowed);
    // A changed value is judged in full: ftp://a -> ftp://b is denied.
    let mut review = fixture("bmh-update-annotation-only.json");
    legacy(&mut review["request"]["oldObject"]);
    review["request"]["object"]["spec"]["dataImage"] = json!({"url": "ftp://other/a.iso"});
    assert!(!Review::from_value(&review).validate().allowed);
    // Rule 11 ratchets on spec.bmc.address too: changing the address to a
    // non-virtual-media BMC is judged, the unchanged data image is not.
    let mut review = fixture("bmh-update-annotation-only.json");
    for key in ["object", "oldObject"] {
        review["request"][key]["spec"]["dataImage"] = json!({"url": "https://h/a.iso"});
        review["request"][key]["spec"]["bmc"]["address"] = json!("ipmi://192.0.2.11");
    }
    let v = Review::from_value(&review).validate();
    assert!(v.allowed && v.warnings.len() == 1, "{v:?}");
    review["request"]["object"]["spec"]["bmc"]["address"] = json!("ipmi://192.0.2.12");
    let v = Review::from_value(&review).validate();
    assert_eq!(causes(&v)[0].1, "spec.bmc.address");
    // CREATE is never ratcheted.
    assert!(
        !Review::edit(
            "bmh-create-dataimage-full.json",
            set_url("ftp://legacy/a.iso")
        )
        .validate()
        .allowed
    );
}

#[test]
fn deletion_delete_and_connect_are_always_admitted() {
    let v = Review::edit(
        "bmh-update-remove-finalizer-while-deleting.json",
        set_url("ftp://h/a.iso"),
    )
    .validate();
    assert!(v.allowed && v.warnings.is_empty());
    let mut review = Review::edit("bmh-create-dataimage-full.json", set_url("ftp://h/a.iso"));
    review.operation = Operation::Delete;
    assert!(review.validate().allowed);
    review.operation = Operation::Connect;
    assert!(review.validate().allowed);
    assert!(Review::load("bmh-delete.json").validate().allowed);
}

#[test]
fn illegal_combinations() {
    let v = Review::edit("bmh-create-image-live-iso.json", |o| {
        o["spec"]["dataImage"] = json!({"url": "https://h/a.iso"});
    })
    .validate();
    assert_eq!(
        causes(&v),
        [(
            "FieldValueForbidden".into(),
            "spec.dataImage".into(),
            "Forbidden: cannot be used with spec.image.format \"live-iso\": the live ISO occupies the host's virtual CD drive".into()
        )]
    );
    let v = Review::edit("bmh-create-ipmi.json", |o| {
        o["spec"]["dataImage"] = json!({"url": "https://h/a.iso"});
    })
    .validate();
    let (reason, field, message) = causes(&v).remove(0);
    assert_eq!(
        (reason.as_str(), field.as_str()),
        ("FieldValueNotSupported", "spec.bmc.address")
    );
    assert!(message.starts_with(
        r#"Unsupported value: "ipmi": supported values: "redfish", "redfish-virtualmedia""#
    ));
    for (address, expected) in [
        (json!("192.0.2.11:623"), "\"ipmi\""),
        (json!("libvirt://192.0.2.1/"), "\"libvirt\""),
        (json!("irmc://h"), "\"irmc\""),
    ] {
        let v = Review::edit("bmh-create-dataimage-full.json", |o| {
            o["spec"]["bmc"]["address"] = address.clone();
        })
        .validate();
        assert!(causes(&v)[0].2.contains(expected), "{address}: {v:?}");
    }
    let v = Review::edit("bmh-create-dataimage-full.json", |o| {
        o["spec"].as_object_mut().unwrap().remove("bmc");
    })
    .validate();
    assert_eq!(causes(&v)[0].0, "FieldValueRequired");
}

#[test]
fn secret_rule() {
    let review = Review::load("bmh-create-dataimage-full.json");
    let input = review.input();
    assert_eq!(
        rules::decode(&input).secret_to_check(),
        Some("dataimage-creds")
    );

    let strict = Policy {
        strict_secrets: true,
        ..Policy::default()
    };
    // Missing password denies, whatever the policy.
    let missing = SecretLookup::from_entries([("username", &b"admin"[..]), ("password", b"  ")]);
    let v = review.validate_with(&missing, &Policy::default());
    assert_eq!(
        causes(&v),
        [(
            "FieldValueInvalid".into(),
            "spec.dataImage.credentialsName".into(),
            r#"Invalid value: "dataimage-creds": the Secret must have non-empty "username" and "password" keys; missing or empty: "password""#.into()
        )]
    );
    // Not found: a warning by default, a denial under the strict policy.
    let v = review.validate_with(&SecretLookup::NotFound, &Policy::default());
    assert!(v.allowed);
    assert_eq!(
        v.warnings,
        [
            r#"spec.dataImage.credentialsName: Secret "dataimage-creds" does not exist (yet) in namespace "metal3"; the image cannot be attached until it does"#
        ]
    );
    assert!(
        !review
            .validate_with(&SecretLookup::NotFound, &strict)
            .allowed
    );
    let unknown = SecretLookup::Unknown {
        reason: "timed out".into(),
    };
    let v = review.validate_with(&unknown, &Policy::default());
    assert!(v.allowed && v.warnings[0].contains("could not be checked: timed out"));
    assert!(!review.validate_with(&unknown, &strict).allowed);
    // An invalid name is rule 8, and no lookup is asked for.
    let bad = Review::edit("bmh-create-dataimage-full.json", |o| {
        o["spec"]["dataImage"]["credentialsName"] = json!("Creds!");
    });
    assert_eq!(rules::decode(&bad.input()).secret_to_check(), None);
    assert!(causes(&bad.validate())[0].2.contains("RFC 1123 subdomain"));
}

#[test]
fn warnings() {
    let v = Review::edit("bmh-create-dataimage-full.json", |o| {
        o["spec"]["dataImage"] = json!({
            "url": "http://192.0.2.20/config.img#frag",
            "credentialsName": "dataimage-creds",
            "disableCertificateVerification": true,
        });
        o["spec"]["disablePowerOff"] = json!(true);
    })
    .validate();
    assert!(v.allowed);
    assert_eq!(v.warnings.len(), 5, "{:?}", v.warnings);
    let expected_starts = [
        "spec.dataImage.url: the path does not end in .iso",
        "spec.dataImage.url: the fragment (#...) is never sent",
        "spec.dataImage.disableCertificateVerification: has no effect on an http URL",
        "spec.dataImage.credentialsName: the credentials would travel unencrypted over http",
        "spec.disablePowerOff: the data image becomes visible",
    ];
    for (w, start) in v.warnings.iter().zip(expected_starts) {
        assert!(w.starts_with(start), "{w}");
    }
    // The operator's own writes get no warnings.
    let mut review = Review::edit("bmh-create-dataimage-full.json", |o| {
        o["spec"]["dataImage"]["url"] = json!("http://192.0.2.20/config.img");
    });
    assert_eq!(review.validate().warnings.len(), 2);
    review.user = OPERATOR.to_string();
    assert!(review.validate().warnings.is_empty());
}

#[test]
fn field_preservation_restores_for_the_operator_only() {
    // A person removes spec.dataImage: honoured.
    let removal = Review::load("bmh-update-remove-dataimage.mutate.json");
    assert!(removal.mutate().patch.is_none());
    // The operator's typed client drops it: restored verbatim (unknown
    // subfields included) and defaulted.
    let mut review = fixture("bmh-update-remove-dataimage.mutate.json");
    review["request"]["userInfo"]["username"] = json!(OPERATOR);
    review["request"]["oldObject"]["spec"]["dataImage"]["futureField"] = json!({"keep": [1, 2]});
    let verdict = Review::from_value(&review).mutate();
    let patch = verdict.patch.expect("restored");
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([
            {"op": "add", "path": "/spec/dataImage", "value": {
                "credentialsName": "dataimage-creds",
                "url": "https://images.example.com/config/host-minimal.iso",
                "futureField": {"keep": [1, 2]}}},
            {"op": "add", "path": "/spec/dataImage/disableCertificateVerification", "value": false}
        ])
    );
    let mut patched = review.clone();
    json_patch::patch(&mut patched["request"]["object"], &patch).unwrap();
    assert_eq!(
        patched["request"]["object"]["spec"]["dataImage"]["futureField"],
        json!({"keep": [1, 2]})
    );
    assert!(Review::from_value(&patched).mutate().patch.is_none());
    // ... and the validating call then sees it unchanged: admitted.
    assert!(Review::from_value(&patched).validate().allowed);
}

#[test]
fn field_preservation_on_the_status_subresource() {
    let mut review = fixture("extra-bmh-update-status-with-status-rule.mutate.json");
    let old_status_image = review["request"]["oldObject"]["status"]["dataImage"].clone();
    review["request"]["object"]["status"]
        .as_object_mut()
        .unwrap()
        .remove("dataImage");
    // A person's status write without it: honoured.
    assert!(Review::from_value(&review).mutate().patch.is_none());
    review["request"]["userInfo"]["username"] = json!(OPERATOR);
    let patch = Review::from_value(&review)
        .mutate()
        .patch
        .expect("restored");
    assert_eq!(
        serde_json::to_value(&patch).unwrap(),
        json!([{"op": "add", "path": "/status/dataImage", "value": old_status_image}])
    );
    // Status writes never get the spec default, and validation admits them
    // without asking for the Secret.
    let status_write = Review::load("extra-bmh-update-status-with-status-rule.json");
    assert!(status_write.validate().allowed);
    assert_eq!(rules::decode(&status_write.input()).secret_to_check(), None);
    // The whole status dropped: the patch creates it.
    review["request"]["object"]
        .as_object_mut()
        .unwrap()
        .remove("status");
    let patch = Review::from_value(&review)
        .mutate()
        .patch
        .expect("restored");
    assert_eq!(
        serde_json::to_value(&patch).unwrap()[0]["path"],
        json!("/status")
    );
}

#[test]
fn operator_create_is_not_a_removal() {
    let mut review = fixture("bmh-create-minimal.mutate.json");
    review["request"]["userInfo"]["username"] = json!(OPERATOR);
    assert!(Review::from_value(&review).mutate().patch.is_none());
}

#[test]
fn data_image_kind_gets_the_url_rules() {
    let v = Review::edit("dataimage-create.json", |o| {
        o["spec"]["url"] = json!("http:///a.iso");
    })
    .validate();
    let status = v.status.unwrap();
    assert!(
        status.message.starts_with(
            r#"DataImage.metal3.io "host-dataimage-full" is invalid: spec.url: Invalid value: "http:///a.iso": must start with "http://""#
        ),
        "{}",
        status.message
    );
    assert_eq!(status.details.unwrap().kind, "DataImage");
    let v = Review::edit("dataimage-create.json", |o| {
        o["spec"]["url"] = json!("https://h/x.qcow2");
    })
    .validate();
    assert!(v.allowed && v.warnings.len() == 1);
    let v = Review::edit("dataimage-create.json", |o| {
        o["spec"].as_object_mut().unwrap().remove("url");
    })
    .validate();
    assert_eq!(causes(&v)[0].2, "Required value");
    // DataImage never gets a patch.
    assert!(
        Review::load("dataimage-create.mutate.json")
            .mutate()
            .patch
            .is_none()
    );
}

// ---- contentFrom: rules 12-16 -------------------------------------------

fn set_data_image(data_image: Value) -> impl Fn(&mut Value) {
    move |o: &mut Value| o["spec"]["dataImage"] = data_image.clone()
}

fn config_keys(names: &[&str]) -> SecretLookup {
    SecretLookup::from_entries(names.iter().map(|n| (*n, &b"x"[..])))
}

fn nocloud() -> Value {
    json!({"contentFrom": {"secretName": "worker-5-config"}, "volumeLabel": "cidata"})
}

#[test]
fn content_from_host_is_admitted_and_looks_up_its_secret() {
    let review = Review::edit("bmh-create-dataimage-full.json", set_data_image(nocloud()));
    let input = review.input();
    let decoded = rules::decode(&input);
    assert_eq!(decoded.secret_to_check(), Some("worker-5-config"));
    let v = review.validate_with(
        &config_keys(&["user-data", "meta-data", "network-config"]),
        &Policy::default(),
    );
    assert!(v.allowed, "{:?}", v.status);
    assert!(v.warnings.is_empty(), "{:?}", v.warnings);
    // Without volumeLabel (the default label) too.
    let review = Review::edit(
        "bmh-create-dataimage-full.json",
        set_data_image(json!({"contentFrom": {"secretName": "worker-5-config"}})),
    );
    assert!(
        review
            .validate_with(&config_keys(&["user-data"]), &Policy::default())
            .allowed
    );
    // The url default is not written for contentFrom.
    let m = Review::edit(
        "bmh-create-dataimage-full.mutate.json",
        set_data_image(nocloud()),
    )
    .mutate();
    assert!(m.patch.is_none(), "{:?}", m.patch);
}

#[test]
fn content_from_violations_are_reported_at_once_in_rule_order() {
    let review = Review::edit(
        "bmh-create-dataimage-full.json",
        set_data_image(json!({
            "url": "https://images.example.com/a.iso",
            "contentFrom": {"secretName": "Worker_5"},
            "credentialsName": "dataimage-creds",
            "disableCertificateVerification": true,
            "volumeLabel": "config 2"
        })),
    );
    let v = review.validate_with(&SecretLookup::NotNeeded, &Policy::default());
    let fields: Vec<(String, String)> = causes(&v)
        .into_iter()
        .map(|(reason, field, _)| (reason, field))
        .collect();
    let expected = [
        ("FieldValueInvalid", "spec.dataImage"),
        ("FieldValueForbidden", "spec.dataImage.credentialsName"),
        (
            "FieldValueForbidden",
            "spec.dataImage.disableCertificateVerification",
        ),
        ("FieldValueInvalid", "spec.dataImage.contentFrom.secretName"),
        ("FieldValueInvalid", "spec.dataImage.volumeLabel"),
    ];
    assert_eq!(
        fields,
        expected
            .iter()
            .map(|(r, f)| (r.to_string(), f.to_string()))
            .collect::<Vec<_>>()
    );
    let message = &v.status.unwrap().message;
    assert!(
        message.contains(
            "spec.dataImage.volumeLabel: Invalid value: \"config 2\": must consist of letters, \
             digits, '_' or '-' (found U+0020)"
        ),
        "{message}"
    );

    // Neither source.
    let v = Review::edit(
        "bmh-create-dataimage-full.json",
        set_data_image(json!({"volumeLabel": "cidata"})),
    )
    .validate();
    assert_eq!(
        causes(&v),
        vec![
            (
                "FieldValueRequired".to_string(),
                "spec.dataImage".to_string(),
                "Required value: set exactly one of url (an image to fetch) or contentFrom (a \
                 Secret to build the image from)"
                    .to_string()
            ),
            (
                "FieldValueForbidden".to_string(),
                "spec.dataImage.volumeLabel".to_string(),
                "Forbidden: may only be used with contentFrom: an image fetched from url keeps \
                 its own label"
                    .to_string()
            ),
        ]
    );
    // contentFrom without secretName.
    let v = Review::edit(
        "bmh-create-dataimage-full.json",
        set_data_image(json!({"contentFrom": {}})),
    )
    .validate();
    assert_eq!(
        causes(&v)[0].1,
        "spec.dataImage.contentFrom.secretName",
        "{:?}",
        causes(&v)
    );
}

#[test]
fn content_secret_rule() {
    let review = Review::edit("bmh-create-dataimage-full.json", set_data_image(nocloud()));
    // No keys.
    let v = review.validate_with(&config_keys(&[]), &Policy::default());
    assert_eq!(
        causes(&v)[0].2,
        "Invalid value: \"worker-5-config\": the Secret has no keys; each key becomes a file of \
         the ISO"
    );
    // A key too long for Joliet.
    let long = "k".repeat(65);
    let v = review.validate_with(&config_keys(&["user-data", &long]), &Policy::default());
    let c = causes(&v);
    assert_eq!(c.len(), 1);
    assert!(
        c[0].2
            .contains("cannot be a file name in the ISO: must be at most 64 characters")
    );
    // Keys differing only in case: admitted with a warning.
    let v = review.validate_with(&config_keys(&["README", "readme"]), &Policy::default());
    assert!(v.allowed);
    assert!(
        v.warnings[0].contains("differ only in letter case"),
        "{:?}",
        v.warnings
    );
    // Missing Secret: a warning, a denial when strict (as for credentialsName).
    let v = review.validate_with(&SecretLookup::NotFound, &Policy::default());
    assert!(v.allowed);
    assert_eq!(
        v.warnings,
        [
            "spec.dataImage.contentFrom.secretName: Secret \"worker-5-config\" does not exist (yet) \
          in namespace \"metal3\"; the ISO cannot be built until it does"
        ]
    );
    let strict = Policy {
        strict_secrets: true,
        ..Policy::default()
    };
    let v = review.validate_with(&SecretLookup::NotFound, &strict);
    assert_eq!(
        causes(&v),
        vec![(
            "FieldValueInvalid".to_string(),
            "spec.dataImage.contentFrom.secretName".to_string(),
            "Invalid value: \"worker-5-config\": Secret not found in namespace \"metal3\""
                .to_string()
        )]
    );
    let unknown = SecretLookup::Unknown {
        reason: "the API server refused the Secret lookup (403 Forbidden)".into(),
    };
    assert!(review.validate_with(&unknown, &Policy::default()).allowed);
    assert!(!review.validate_with(&unknown, &strict).allowed);
    // A credentials Secret's keys (rule 9) are judged from the same lookup.
    let url_host = Review::load("bmh-create-dataimage-full.json");
    assert!(
        url_host
            .validate_with(&config_keys(&["username", "password"]), &Policy::default())
            .allowed
    );
    let v = url_host.validate_with(&config_keys(&["username"]), &Policy::default());
    assert!(causes(&v)[0].2.ends_with("missing or empty: \"password\""));
}

#[test]
fn content_from_violations_ratchet_on_update() {
    let both = json!({
        "url": "https://images.example.com/config/worker-0-config.iso",
        "contentFrom": {"secretName": "worker-5-config"}
    });
    let review = Review::edit_both(
        "bmh-update-annotation-only.json",
        set_data_image(both.clone()),
    );
    let v = review.validate_with(&config_keys(&["user-data"]), &Policy::default());
    assert!(v.allowed, "{:?}", v.status);
    assert!(
        v.warnings[0].starts_with("spec.dataImage: Invalid value: \"url and contentFrom\""),
        "{:?}",
        v.warnings
    );
    // Changing the label is a change of dataImage: enforced again.
    let review = Review::edit_both("bmh-update-annotation-only.json", set_data_image(both));
    let mut changed = fixture("bmh-update-annotation-only.json");
    changed["request"]["oldObject"]["spec"]["dataImage"] = json!({
        "url": "https://images.example.com/config/worker-0-config.iso",
        "contentFrom": {"secretName": "worker-5-config"},
        "volumeLabel": "cidata"
    });
    changed["request"]["object"] = review_object(&review);
    let v = Review::from_value(&changed)
        .validate_with(&config_keys(&["user-data"]), &Policy::default());
    assert!(!v.allowed);
}

fn review_object(review: &Review) -> Value {
    serde_json::from_str(review.object.as_ref().unwrap().get()).unwrap()
}
