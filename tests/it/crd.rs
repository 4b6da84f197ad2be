//! The CRD schema: checked-in YAML equals what the code generates, the patch
//! applies to the real upstream BareMetalHost CRD (json-patch in Rust and
//! `kubectl kustomize`), the result is structural, the schema never answers
//! before the webhook (no value rules under `spec.dataImage`), every field has a
//! description, and the printer columns render the way `kubectl get` shows them.

use std::path::{Path, PathBuf};
use std::process::Command;

use metal3_dataimage::crd;
use metal3_dataimage::model::{DataImageSpec, DataImageStatus};
use metal3_dataimage::rules::host_rules::{CREDENTIALS_FIELD, check_secret_name};
use metal3_dataimage::rules::url_rules::check_url;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|err| panic!("reading {}: {err}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|err| panic!("parsing {}: {err}", path.display()))
}

/// The reconciler's start-up check of the installed CRD.
fn reconciler_accepts(crd: &Value) -> bool {
    metal3_dataimage::reconcile::kube_ops::check_crd(crd).is_ok()
}

fn upstream_bmh_crd() -> Value {
    read_yaml(&repo().join("tests/fixtures/crds/metal3.io_baremetalhosts.yaml"))
}

fn patched_in_rust() -> Value {
    let mut crd = upstream_bmh_crd();
    let patch: json_patch::Patch = serde_json::from_value(crd::crd_patch()).unwrap();
    json_patch::patch(&mut crd, &patch).expect("the CRD patch applies to the upstream CRD");
    crd
}

/// Checked-in generated files (relative to the repository root) and the
/// command that regenerates each.
const GENERATED_FILES: [(&str, crd::Output); 2] = [
    (
        "manifests/components/crd-dataimage/dataimage-schema.patch.yaml",
        crd::Output::Patch,
    ),
    (
        "manifests/test-crd/baremetalhosts.metal3.io.yaml",
        crd::Output::Crd,
    ),
];

#[test]
fn checked_in_generated_files_are_up_to_date() {
    let mut stale = Vec::new();
    for (path, output) in GENERATED_FILES {
        let expected = crd::render(output).unwrap();
        let actual = std::fs::read_to_string(repo().join(path)).unwrap_or_default();
        if actual != expected {
            stale.push(format!(
                "  cargo run -q -- {} --out {path}",
                output.command().trim_start_matches("metal3-dataimage ")
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "checked-in CRD YAML differs from what the Rust types generate; regenerate with:\n{}",
        stale.join("\n")
    );
}

#[test]
fn patch_adds_both_fields_to_the_upstream_crd_and_changes_nothing_else() {
    let upstream = upstream_bmh_crd();
    assert!(
        !reconciler_accepts(&upstream),
        "upstream has no spec.dataImage: the patch adds it"
    );
    let mut patched = patched_in_rust();
    assert!(reconciler_accepts(&patched));
    assert_eq!(
        patched.pointer(crd::SPEC_DATA_IMAGE_POINTER).unwrap(),
        &crd::schema::<DataImageSpec>()
    );
    assert_eq!(
        patched.pointer(crd::STATUS_DATA_IMAGE_POINTER).unwrap(),
        &crd::schema::<DataImageStatus>()
    );

    // The operator's columns keep their order; ours come after them.
    let upstream_columns = upstream["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .clone();
    let columns = patched["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array_mut()
        .unwrap();
    assert_eq!(columns[..upstream_columns.len()], upstream_columns[..]);
    assert_eq!(
        columns[upstream_columns.len()..],
        crd::printer_columns()[..]
    );

    // Removing what the patch added gives back the upstream CRD exactly.
    columns.truncate(upstream_columns.len());
    for pointer in [crd::SPEC_DATA_IMAGE_POINTER, crd::STATUS_DATA_IMAGE_POINTER] {
        let (parent, name) = pointer.rsplit_once('/').unwrap();
        patched
            .pointer_mut(parent)
            .unwrap()
            .as_object_mut()
            .unwrap()
            .remove(name);
    }
    assert_eq!(patched, upstream);
}

#[test]
fn patched_data_image_subtrees_are_structural() {
    let patched = patched_in_rust();
    for pointer in [crd::SPEC_DATA_IMAGE_POINTER, crd::STATUS_DATA_IMAGE_POINTER] {
        let schema = patched.pointer(pointer).unwrap();
        check_structural(schema).unwrap_or_else(|problems| panic!("{pointer}: {problems:?}"));
        let text = serde_json::to_string(schema).unwrap();
        for forbidden in ["$ref", "\"default\"", "nullable", "anyOf", "\"title\""] {
            assert!(!text.contains(forbidden), "{pointer} contains {forbidden}");
        }
    }
    // Parent nodes keep their types (the patch adds properties, never replaces objects).
    let spec = patched
        .pointer("/spec/versions/0/schema/openAPIV3Schema/properties/spec")
        .unwrap();
    assert_eq!(spec["type"], "object");
    assert!(
        spec["properties"]["bmc"].is_object(),
        "existing spec fields are kept"
    );
}

#[test]
fn patch_refuses_a_crd_whose_first_version_is_not_v1alpha1() {
    let mut crd = upstream_bmh_crd();
    crd["spec"]["versions"][0]["name"] = json!("v1beta1");
    let patch: json_patch::Patch = serde_json::from_value(crd::crd_patch()).unwrap();
    assert!(json_patch::patch(&mut crd, &patch).is_err());
}

fn kubectl_kustomize(dir: &Path) -> String {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .expect("running `kubectl kustomize` (kubectl must be installed; no cluster is needed)");
    assert!(
        output.status.success(),
        "kubectl kustomize {} failed:\n{}",
        dir.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn kustomize_component_patches_the_upstream_crd_like_the_rust_patch() {
    // What an operator does: the baremetal-operator's CRD plus our component.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        repo().join("tests/fixtures/crds/metal3.io_baremetalhosts.yaml"),
        dir.path().join("bmh.yaml"),
    )
    .unwrap();
    // kustomize refuses absolute component paths: copy the component beside it.
    let component = dir.path().join("crd-dataimage");
    std::fs::create_dir(&component).unwrap();
    for file in ["kustomization.yaml", "dataimage-schema.patch.yaml"] {
        std::fs::copy(
            repo().join("manifests/components/crd-dataimage").join(file),
            component.join(file),
        )
        .unwrap();
    }
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        "resources:\n- bmh.yaml\ncomponents:\n- crd-dataimage\n",
    )
    .unwrap();
    let rendered: Value = serde_saphyr::from_str(&kubectl_kustomize(dir.path())).unwrap();
    assert_eq!(rendered, patched_in_rust());
}

#[test]
fn standalone_test_crd_renders_and_carries_the_schema() {
    let rendered: Value =
        serde_saphyr::from_str(&kubectl_kustomize(&repo().join("manifests/test-crd"))).unwrap();
    assert_eq!(rendered["metadata"]["name"], crd::BMH_CRD_NAME);
    assert!(reconciler_accepts(&rendered));
    let version = &rendered["spec"]["versions"][0];
    assert_eq!(version["subresources"]["status"], json!({}));
    let root = &version["schema"]["openAPIV3Schema"];
    assert_eq!(
        root["properties"]["spec"]["properties"]["dataImage"],
        crd::schema::<DataImageSpec>()
    );
    assert_eq!(
        root["properties"]["status"]["properties"]["dataImage"],
        crd::schema::<DataImageStatus>()
    );
}

/// The value rules of an OpenAPI schema the API server checks before calling
/// the validating webhooks: `Some(message)` when the schema denies `value`.
/// `pattern`, `format` and CEL are not evaluated here: the test fails on them
/// (under `spec.dataImage` they would pre-empt the webhook).
fn schema_denies(schema: &Value, value: &Value, at: &str) -> Option<String> {
    let node = schema.as_object().unwrap();
    for keyword in ["pattern", "format", "x-kubernetes-validations"] {
        assert!(
            !node.contains_key(keyword),
            "{at}: {keyword} would be checked by the API server before the webhook"
        );
    }
    let kind = node.get("type").and_then(Value::as_str);
    let type_ok = match kind {
        Some("object") => value.is_object(),
        Some("string") => value.is_string(),
        Some("boolean") => value.is_boolean(),
        other => panic!("{at}: type {other:?} not handled here"),
    };
    if !type_ok {
        return Some(format!("{at}: Invalid value: must be of type {kind:?}"));
    }
    if let Some(text) = value.as_str() {
        let chars = text.chars().count() as u64;
        if let Some(min) = node.get("minLength").and_then(Value::as_u64)
            && chars < min
        {
            return Some(format!("{at} in body should be at least {min} chars long"));
        }
        if let Some(max) = node.get("maxLength").and_then(Value::as_u64)
            && chars > max
        {
            return Some(format!("{at}: Too long: may not be more than {max} bytes"));
        }
        if let Some(Value::Array(values)) = node.get("enum")
            && !values.contains(value)
        {
            return Some(format!("{at}: Unsupported value"));
        }
    }
    if let Some(object) = value.as_object() {
        for name in node
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !object.contains_key(name.as_str().unwrap()) {
                return Some(format!("{at}.{}: Required value", name.as_str().unwrap()));
            }
        }
        let properties = node.get("properties").and_then(Value::as_object);
        for (name, field) in object {
            if let Some(property) = properties.and_then(|properties| properties.get(name))
                && let Some(denied) = schema_denies(property, field, &format!("{at}.{name}"))
            {
                return Some(denied);
            }
        }
    }
    None
}

fn installed_spec_schema() -> Value {
    static SCHEMA: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    SCHEMA
        .get_or_init(|| {
            patched_in_rust()
                .pointer(crd::SPEC_DATA_IMAGE_POINTER)
                .unwrap()
                .clone()
        })
        .clone()
}

#[test]
fn spec_data_image_has_no_value_rule_that_answers_before_the_webhook() {
    let patched = patched_in_rust();
    let schema = patched.pointer(crd::SPEC_DATA_IMAGE_POINTER).unwrap();
    let text = serde_json::to_string(schema).unwrap();
    for keyword in [
        "pattern",
        "minLength",
        "maxLength",
        "enum",
        "format",
        "x-kubernetes-validations",
    ] {
        assert!(
            !text.contains(&format!("\"{keyword}\"")),
            "spec.dataImage has {keyword}"
        );
    }
    // url or contentFrom: rule 12 of the webhook says which is missing.
    assert!(schema.get("required").is_none());
    assert_eq!(
        schema["properties"]["contentFrom"]["required"],
        json!(["secretName"])
    );
    check_defers_to_webhook(schema).unwrap();
}

/// The cases where a kube-apiserver 1.36 with the old schema answered with
/// the schema's message ("should match '^[Hh][Tt]…'", "should be at least 1
/// chars long") instead of the webhook's: the schema now admits each of them,
/// and the webhook denies each with its own message.
#[test]
fn every_denial_the_webhook_owns_reaches_the_webhook() {
    let schema = installed_spec_schema();
    let long = format!("https://images.example.com/{}.iso", "a".repeat(2030));
    let url_cases: [(&str, &str); 9] = [
        (
            "ftp://images.example.com/config.iso",
            "scheme must be http or https",
        ),
        ("file:///etc/passwd", "scheme must be http or https"),
        (
            "oci://registry.example.com/config:1",
            "scheme must be http or https",
        ),
        (" http://images.example.com/config.iso", ""),
        ("http://images.example.com/config.iso ", ""),
        ("http://images.example.com/a\t.iso", ""),
        ("http://", ""),
        ("", "Required value"),
        (long.as_str(), "must be at most 2048 characters"),
    ];
    for (url, message) in url_cases {
        let body = json!({"url": url});
        assert_eq!(
            schema_denies(&schema, &body, "spec.dataImage"),
            None,
            "schema denies {url:?}"
        );
        let errors = check_url("spec.dataImage.url", Some(url), "").errors;
        assert!(!errors.is_empty(), "webhook admits {url:?}");
        let text = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        assert!(
            text.contains(message),
            "webhook's message for {url:?} is {text:?}, expected {message:?}"
        );
    }
    for name in ["", "Bad_Name", "-a", "a..b", &"a".repeat(254)] {
        let body = json!({"url": "https://images.example.com/config.iso", "credentialsName": name});
        assert_eq!(
            schema_denies(&schema, &body, "spec.dataImage"),
            None,
            "schema denies credentialsName {name:?}"
        );
        assert!(
            !check_secret_name(CREDENTIALS_FIELD, name).is_empty(),
            "webhook admits {name:?}"
        );
    }
    // Which source, and the contentFrom Secret and label: the webhook's.
    for body in [
        json!({}),
        json!({"url": "https://h/a.iso", "contentFrom": {"secretName": "s"}}),
        json!({"contentFrom": {"secretName": "Bad_Name"}, "volumeLabel": "not a label!"}),
        json!({"contentFrom": {"secretName": "s"}, "credentialsName": "c",
               "disableCertificateVerification": true, "volumeLabel": "x".repeat(40)}),
    ] {
        assert_eq!(
            schema_denies(&schema, &body, "spec.dataImage"),
            None,
            "schema denies {body}"
        );
    }
    // What the schema keeps: structure.
    assert_eq!(
        schema_denies(&schema, &json!({"contentFrom": {}}), "spec.dataImage").as_deref(),
        Some("spec.dataImage.contentFrom.secretName: Required value")
    );
    assert!(schema_denies(&schema, &json!({"contentFrom": "s"}), "spec.dataImage").is_some());
    assert!(schema_denies(&schema, &json!({"url": 5}), "spec.dataImage").is_some());
    assert!(
        schema_denies(
            &schema,
            &json!({"url": "https://h/a.iso", "disableCertificateVerification": "yes"}),
            "spec.dataImage"
        )
        .is_some()
    );
}

#[test]
fn every_data_image_field_has_a_description_from_the_doc_comments() {
    fn walk(schema: &Value, at: &str, seen: &mut Vec<String>) {
        let description = schema["description"].as_str().unwrap_or("");
        assert!(
            description.trim().len() >= 10,
            "{at} has no description (add a doc comment in src/model/dataimage.rs)"
        );
        seen.push(at.to_string());
        if let Some(properties) = schema["properties"].as_object() {
            for (name, property) in properties {
                walk(property, &format!("{at}.{name}"), seen);
            }
        }
    }
    let patched = patched_in_rust();
    let mut seen = Vec::new();
    walk(
        patched.pointer(crd::SPEC_DATA_IMAGE_POINTER).unwrap(),
        "spec.dataImage",
        &mut seen,
    );
    walk(
        patched.pointer(crd::STATUS_DATA_IMAGE_POINTER).unwrap(),
        "status.dataImage",
        &mut seen,
    );
    // Every serialized field of both types is in the schema (and so described).
    let spec = serde_json::to_value(metal3_dataimage::model::DataImageSpec {
        url: "u".into(),
        credentials_name: Some("c".into()),
        disable_certificate_verification: Some(true),
        content_from: Some(metal3_dataimage::model::ContentFrom {
            secret_name: "s".into(),
        }),
        volume_label: Some("cidata".into()),
    })
    .unwrap();
    let status = serde_json::to_value(metal3_dataimage::model::DataImageStatus {
        url: Some("u".into()),
        state: Some(metal3_dataimage::model::DataImageState::Attached),
        message: Some("m".into()),
        error_count: Some(1),
        last_transition_time: Some("2026-01-01T00:00:00Z".into()),
        observed_generation: Some(1),
        staged_digest: Some("d".into()),
        staged_size: Some(1),
    })
    .unwrap();
    for (prefix, value) in [("spec.dataImage", spec), ("status.dataImage", status)] {
        for field in value.as_object().unwrap().keys() {
            let path = format!("{prefix}.{field}");
            assert!(seen.contains(&path), "{path} missing from the schema");
        }
    }
    assert_eq!(seen.len(), 2 + 5 + 1 + 8, "{seen:?}");
    // The one from the issue: the doc comment is the description.
    let url = &patched.pointer(crd::SPEC_DATA_IMAGE_POINTER).unwrap()["properties"]["url"];
    assert!(
        url["description"]
            .as_str()
            .unwrap()
            .starts_with("URL of the ISO image (http or https")
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    /// Whatever the strings, the schema admits them and leaves the verdict to
    /// the webhook.
    #[test]
    fn schema_never_judges_url_or_secret_name_strings(
        url in "\\PC{0,40}|[ \t\u{7f}a-z:/]{0,10}",
        name in "\\PC{0,20}",
    ) {
        let schema = installed_spec_schema();
        let body = json!({"url": url, "credentialsName": name});
        prop_assert_eq!(schema_denies(&schema, &body, "spec.dataImage"), None);
    }
}

/// Two saved hosts as the reconciler leaves them (one attached, one failing)
/// and one without a data image.
const HOSTS: [&str; 3] = [
    r#"apiVersion: metal3.io/v1alpha1
kind: BareMetalHost
metadata:
  name: worker-0
  namespace: metal3
  creationTimestamp: "2026-03-01T10:00:00Z"
spec:
  online: true
  bmc:
    address: redfish-virtualmedia://192.0.2.10/redfish/v1/Systems/1
  consumerRef:
    name: cluster-a-worker-0
  dataImage:
    url: https://images.example.com/worker-0.iso
status:
  operationalStatus: OK
  provisioning:
    state: provisioned
  dataImage:
    state: Attached
    url: https://images.example.com/worker-0.iso
    message: attached to the virtual CD drive
"#,
    r#"apiVersion: metal3.io/v1alpha1
kind: BareMetalHost
metadata:
  name: worker-1
  namespace: metal3
  creationTimestamp: "2026-03-01T10:00:00Z"
spec:
  online: true
  bmc:
    address: redfish-virtualmedia://192.0.2.11/redfish/v1/Systems/1
  dataImage:
    url: https://images.example.com/worker-1.iso
status:
  operationalStatus: OK
  provisioning:
    state: provisioned
  dataImage:
    state: Error
    url: https://images.example.com/worker-1.iso
    message: 'Ironic: 503 Service Unavailable'
    errorCount: 3
"#,
    r#"apiVersion: metal3.io/v1alpha1
kind: BareMetalHost
metadata:
  name: worker-2
  namespace: metal3
  creationTimestamp: "2026-03-01T10:00:00Z"
spec:
  online: false
  bmc:
    address: ipmi://192.0.2.12
status:
  operationalStatus: OK
  provisioning:
    state: available
"#,
];

/// `kubectl get bmh` (or `-o wide`) as a kube-apiserver's table convertor and
/// kubectl's printer produce it: each column's `jsonPath` evaluated over the
/// host with client-go's JSONPath (here through `kubectl annotate --local -o
/// jsonpath`, which runs offline), a missing value as an empty cell, headers
/// upper-cased, cells padded like kubectl's tabwriter (3 spaces, width ≥ 6).
/// `date` columns print the age at `now`.
fn kubectl_get_table(crd: &Value, hosts: &[&str], wide: bool, now: &str) -> String {
    let columns: Vec<&Value> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|column| wide || column["priority"].as_u64().unwrap_or(0) == 0)
        .collect();
    let mut rows = vec![
        std::iter::once("NAME".to_string())
            .chain(
                columns
                    .iter()
                    .map(|column| column["name"].as_str().unwrap().to_uppercase()),
            )
            .collect::<Vec<_>>(),
    ];
    let template: String = std::iter::once(".metadata.name")
        .chain(
            columns
                .iter()
                .map(|column| column["jsonPath"].as_str().unwrap()),
        )
        .map(|path| format!("{{{path}}}{{\"\\t\"}}"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for (index, host) in hosts.iter().enumerate() {
        let file = dir.path().join(format!("host-{index}.yaml"));
        std::fs::write(&file, host).unwrap();
        let output = Command::new("kubectl")
            .args(["annotate", "--local", "--dry-run=client", "-f"])
            .arg(&file)
            .args(["unused=x", "-o"])
            .arg(format!("jsonpath={template}"))
            .output()
            .expect("running kubectl (no cluster is needed)");
        assert!(
            output.status.success(),
            "kubectl jsonpath: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let text = String::from_utf8(output.stdout).unwrap();
        let mut cells: Vec<String> = text.split('\t').map(str::to_string).collect();
        assert_eq!(cells.pop().as_deref(), Some(""), "{text:?}");
        for (cell, column) in cells[1..].iter_mut().zip(&columns) {
            if column["type"] == "date" && !cell.is_empty() {
                *cell = age(cell, now);
            }
        }
        rows.push(cells);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|row| row[i].chars().count()).max().unwrap())
        .collect();
    let mut table = String::new();
    for row in &rows {
        let last = row.len() - 1;
        for (i, cell) in row.iter().enumerate() {
            if i == last {
                table.push_str(cell);
            } else {
                let width = (widths[i] + 3).max(6);
                table.push_str(&format!("{cell:<width$}"));
            }
        }
        table.push('\n');
    }
    table
}

/// kubectl's `HumanDuration` for whole days (all this test needs).
fn age(timestamp: &str, now: &str) -> String {
    let then: jiff::Timestamp = timestamp.parse().unwrap();
    let now: jiff::Timestamp = now.parse().unwrap();
    let seconds = now.duration_since(then).as_secs();
    assert!(seconds % 86_400 == 0 && seconds >= 2 * 86_400, "{seconds}");
    format!("{}d", seconds / 86_400)
}

#[test]
fn printer_columns_render_like_kubectl_get() {
    let crd = patched_in_rust();
    let now = "2026-03-11T10:00:00Z";
    let table = kubectl_get_table(&crd, &HOSTS, false, now);
    assert_eq!(
        table,
        "\
NAME       STATE         CONSUMER             ONLINE   ERROR   AGE   DATAIMAGE
worker-0   provisioned   cluster-a-worker-0   true             10d   Attached
worker-1   provisioned                        true             10d   Error
worker-2   available                          false            10d   
"
    );
    // README.md and docs/install.md show this table (trailing spaces trimmed).
    let shown: String = table
        .lines()
        .map(|line| line.trim_end().to_string() + "\n")
        .collect();
    for doc in ["README.md", "docs/install.md"] {
        let text = std::fs::read_to_string(repo().join(doc)).unwrap();
        assert!(text.contains(&shown), "{doc} does not show:\n{shown}");
    }
    let wide = kubectl_get_table(&crd, &HOSTS, true, now);
    let header: Vec<&str> = wide
        .lines()
        .next()
        .unwrap()
        .split("   ")
        .map(str::trim)
        .filter(|header| !header.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "STATUS",
            "STATE",
            "CONSUMER",
            "BMC",
            "ONLINE",
            "ERROR",
            "AGE",
            "DATAIMAGE",
            "DATAIMAGE URL",
            "DATAIMAGE MESSAGE"
        ]
    );
    let worker_1 = wide.lines().nth(2).unwrap();
    assert!(
        worker_1.ends_with(
            "Error       https://images.example.com/worker-1.iso   Ironic: 503 Service Unavailable"
        ),
        "{wide}"
    );
    // The standalone test CRD shows the same columns.
    let test_crd = read_yaml(&repo().join("manifests/test-crd/baremetalhosts.metal3.io.yaml"));
    assert_eq!(
        test_crd["spec"]["versions"][0]["additionalPrinterColumns"],
        Value::Array(crd::printer_columns())
    );
}

// The schema checks. They run here rather than in `crd`: the output is a pure
// function of the Rust types, so checking it once per test run is enough.

/// The only keywords `spec.dataImage` carries: structure, no value rules.
/// The API server checks the CRD schema (pattern, lengths, enum, format, CEL)
/// *before* the validating webhooks run, so any such rule here would answer
/// first with its generic message ("should match '^…'", "should be at least 1
/// chars long") and hide the webhook's precise one. The webhook owns every
/// value rule, including the ones CEL cannot reproduce (ratcheting, admitting
/// any update of a host being deleted, every error at once). Without CEL
/// rules the API server's cost estimation needs no `maxLength` either.
const SPEC_KEYWORDS: [&str; 4] = ["type", "description", "properties", "required"];

/// Keywords a structural schema node may carry here (a subset of what the API
/// server accepts, and everything schemars emits for these types once normalised).
const ALLOWED_KEYWORDS: [&str; 9] = [
    "type",
    "description",
    "properties",
    "required",
    "items",
    "enum",
    "format",
    "minimum",
    "maximum",
];

/// Problems that would make the API server reject the schema (or make it
/// non-structural), with their location; `Ok` when there are none.
fn check_structural(schema: &Value) -> Result<(), Vec<String>> {
    collect(|problems| check_node(schema, "", problems))
}

/// Problems that would make the API server's schema check answer before the
/// validating webhook: any keyword outside [`SPEC_KEYWORDS`] anywhere in
/// `spec.dataImage`; `Ok` when there are none.
fn check_defers_to_webhook(schema: &Value) -> Result<(), Vec<String>> {
    collect(|problems| check_spec_node(schema, "", problems))
}

fn collect(check: impl FnOnce(&mut Vec<String>)) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    check(&mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

fn check_spec_node(schema: &Value, at: &str, problems: &mut Vec<String>) {
    let Value::Object(node) = schema else {
        return;
    };
    let why = "would be checked before the webhook (it owns value rules)";
    check_keywords(node, &SPEC_KEYWORDS, why, at, problems);
    if let Some(Value::Object(properties)) = node.get("properties") {
        for (name, property) in properties {
            check_spec_node(property, &format!("{at}.{name}"), problems);
        }
    }
}

fn check_node(schema: &Value, at: &str, problems: &mut Vec<String>) {
    let Value::Object(node) = schema else {
        problems.push(format!("{at}: not an object schema"));
        return;
    };
    let why = "is not allowed in this CRD schema";
    check_keywords(node, &ALLOWED_KEYWORDS, why, at, problems);
    if let Some(Value::Array(values)) = node.get("enum") {
        let kind = node.get("type").and_then(Value::as_str);
        for value in values {
            let fits = matches!(
                (kind, value),
                (Some("string"), Value::String(_)) | (Some("integer" | "number"), Value::Number(_))
            );
            if !fits {
                problems.push(format!(
                    "{at}: enum value {value} does not fit type {kind:?}"
                ));
            }
        }
    }
    match node.get("type").and_then(Value::as_str) {
        Some("object") => {
            if let Some(Value::Object(properties)) = node.get("properties") {
                for (name, property) in properties {
                    check_node(property, &format!("{at}.{name}"), problems);
                }
                if let Some(Value::Array(required)) = node.get("required") {
                    for name in required {
                        if !name
                            .as_str()
                            .is_some_and(|name| properties.contains_key(name))
                        {
                            problems.push(format!("{at}: required {name} is not a property"));
                        }
                    }
                }
            }
        }
        Some("array") => match node.get("items") {
            Some(items) => check_node(items, &format!("{at}[]"), problems),
            None => problems.push(format!("{at}: array without items")),
        },
        Some("string" | "integer" | "number" | "boolean") => {}
        other => problems.push(format!("{at}: missing or unsupported type {other:?}")),
    }
}

fn check_keywords(
    node: &Map<String, Value>,
    allowed: &[&str],
    why: &str,
    at: &str,
    problems: &mut Vec<String>,
) {
    for key in node.keys().filter(|key| !allowed.contains(&key.as_str())) {
        problems.push(format!("{at}: keyword {key:?} {why}"));
    }
}

#[cfg(test)]
#[test]
fn value_rules_in_spec_are_reported() {
    let bad = json!({
        "type": "object",
        "properties": {
            "url": {"type": "string", "minLength": 1, "pattern": "^h"},
            "n": {"type": "object", "properties": {"m": {"type": "string", "maxLength": 3}}}
        },
        "x-kubernetes-validations": [{"rule": "true"}]
    });
    let problems = check_defers_to_webhook(&bad).unwrap_err().join("\n");
    for expected in [
        ": keyword \"x-kubernetes-validations\"",
        ".url: keyword \"minLength\"",
        ".url: keyword \"pattern\"",
        ".n.m: keyword \"maxLength\"",
    ] {
        assert!(
            problems.contains(expected),
            "{expected} not in:\n{problems}"
        );
    }
    assert!(check_defers_to_webhook(&crd::schema::<DataImageSpec>()).is_ok());
}

#[test]
fn checker_reports_what_the_api_server_rejects() {
    let bad = json!({
        "type": "object",
        "properties": {
            "a": {"$ref": "#/x"},
            "b": {"type": "string", "default": "x"},
            "c": {"type": "array"},
            "d": {"description": "untyped"},
            "e": {"type": "string", "enum": ["A", null]}
        },
        "required": ["a", "zzz"]
    });
    let problems = check_structural(&bad).unwrap_err().join("\n");
    for expected in [
        "keyword \"$ref\"",
        "keyword \"default\"",
        ".c: array without items",
        ".d: missing",
        "required \"zzz\"",
        ".e: enum value null",
    ] {
        assert!(
            problems.contains(expected),
            "{expected} not in:\n{problems}"
        );
    }
}
