//! The CRD schema: checked-in YAML equals what the code generates, the patch
//! applies to the real upstream BareMetalHost CRD (json-patch in Rust and
//! `kubectl kustomize`), the result is structural, and the schema's patterns
//! never deny what the webhook's rules admit.

use std::path::{Path, PathBuf};
use std::process::Command;

use metal3_dataimage::crd;
use metal3_dataimage::rules::host_rules::check_secret_name;
use metal3_dataimage::rules::url_rules::check_url;
use proptest::prelude::*;
use serde_json::{Value, json};

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
    let patch: json_patch::Patch = serde_json::from_value(crd::crd_patch().unwrap()).unwrap();
    json_patch::patch(&mut crd, &patch).expect("the CRD patch applies to the upstream CRD");
    crd
}

#[test]
fn checked_in_generated_files_are_up_to_date() {
    let mut stale = Vec::new();
    for (path, output) in crd::GENERATED_FILES {
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
        &crd::spec_schema().unwrap()
    );
    assert_eq!(
        patched.pointer(crd::STATUS_DATA_IMAGE_POINTER).unwrap(),
        &crd::status_schema().unwrap()
    );

    // Removing what the patch added gives back the upstream CRD exactly.
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
        crd::check_structural(schema).unwrap_or_else(|problems| panic!("{pointer}: {problems:?}"));
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
    let patch: json_patch::Patch = serde_json::from_value(crd::crd_patch().unwrap()).unwrap();
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
        crd::spec_schema().unwrap()
    );
    assert_eq!(
        root["properties"]["status"]["properties"]["dataImage"],
        crd::status_schema().unwrap()
    );
}

fn url_pattern() -> regex::Regex {
    regex::Regex::new(crd::URL_PATTERN).unwrap()
}

#[test]
fn url_pattern_accepts_urls_the_webhook_admits_and_rejects_clear_violations() {
    let pattern = url_pattern();
    let long = format!("https://images.example.com/{}.iso", "a".repeat(2000));
    let admitted = [
        "http://1.2.3.4/image.iso",
        "HTTPS://Images.Example.COM/a.iso",
        "http://[2001:db8::1]:8080/data.iso",
        "https://bücher.example/a%20b.iso?sig=abc&x=1#frag",
        "https://h:443/path/to/image",
        long.as_str(),
    ];
    for url in admitted {
        assert!(
            check_url("spec.dataImage.url", Some(url), "")
                .errors
                .is_empty(),
            "rules should admit {url}"
        );
        assert!(pattern.is_match(url), "schema pattern rejects {url}");
    }
    for url in [
        "ftp://h/a.iso",
        "http://",
        " http://h/a.iso",
        "http://h/a.iso ",
        "http://h/a\t.iso",
        "http://h/\na.iso",
        "file:///etc/passwd",
    ] {
        assert!(!pattern.is_match(url), "schema pattern accepts {url:?}");
        assert!(
            !check_url("spec.dataImage.url", Some(url), "")
                .errors
                .is_empty(),
            "rules should deny {url:?}"
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// The schema never denies a URL the webhook admits (it runs first, and
    /// its messages are worse).
    #[test]
    fn url_pattern_never_denies_what_the_rules_admit(
        scheme in prop::sample::select(vec!["http://", "https://", "HTTP://", "hTTps://", "ftp://", ""]),
        rest in "[a-zA-Z0-9.:/?#@%\\[\\]\\\\ \t\u{7f}\u{a0}é~_-]{0,40}",
    ) {
        let url = format!("{scheme}{rest}");
        let report = check_url("spec.dataImage.url", Some(&url), "");
        if report.errors.is_empty() {
            prop_assert!(url_pattern().is_match(&url), "pattern rejects admitted {:?}", url);
            prop_assert!(url.chars().count() <= 2048);
        }
    }

    /// credentialsName: the schema's pattern and maxLength agree exactly with the rules.
    #[test]
    fn credentials_name_pattern_agrees_with_the_rules(name in "[a-z0-9.A-Z_-]{0,12}|[a-z]{250,256}") {
        let pattern = regex::Regex::new(crd::DNS1123_SUBDOMAIN_PATTERN).unwrap();
        let schema_ok = !name.is_empty() && name.len() <= 253 && pattern.is_match(&name);
        prop_assert_eq!(schema_ok, check_secret_name(&name).is_empty(), "{:?}", name);
    }
}
