//! `metal3-dataimage crd`: the CRD schema for `spec.dataImage` and
//! `status.dataImage`, generated from the Rust types
//! ([`DataImageSpec`], [`DataImageStatus`]) with schemars, so the schema the
//! API server enforces cannot drift from what the code reads.
//!
//! Three outputs:
//! - `patch`: a JSON6902 patch (YAML) adding both properties to the
//!   baremetal-operator's `baremetalhosts.metal3.io` CRD, used by the kustomize
//!   component `manifests/components/crd-dataimage`;
//! - `crd`: a standalone, minimal BareMetalHost CRD for test clusters without
//!   the baremetal-operator;
//! - `schema`: the two schemas alone, as JSON.
//!
//! The output is a Kubernetes *structural* schema: every node typed, no `$ref`,
//! no keywords the API server rejects, and no `default` (the mutating webhook
//! owns the one default, `disableCertificateVerification: false`).

use std::path::PathBuf;

use anyhow::Context as _;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::model::{DataImageSpec, DataImageStatus};

/// The CRD the patch applies to.
pub const BMH_CRD_NAME: &str = "baremetalhosts.metal3.io";
/// Where the two properties go in the BareMetalHost `v1alpha1` schema (the
/// upstream CRD has a single version; the patch's `test` op fails loudly if
/// that changes).
pub const SPEC_DATA_IMAGE_POINTER: &str =
    "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/dataImage";
pub const STATUS_DATA_IMAGE_POINTER: &str =
    "/spec/versions/0/schema/openAPIV3Schema/properties/status/properties/dataImage";
/// JSON Pointer `-`: append to the version's printer columns.
pub const PRINTER_COLUMNS_APPEND_POINTER: &str = "/spec/versions/0/additionalPrinterColumns/-";

/// Checked-in generated files (relative to the repository root) and the
/// command that regenerates each.
pub const GENERATED_FILES: [(&str, Output); 2] = [
    (
        "manifests/components/crd-dataimage/dataimage-schema.patch.yaml",
        Output::Patch,
    ),
    (
        "manifests/test-crd/baremetalhosts.metal3.io.yaml",
        Output::Crd,
    ),
];

/// The only keywords `spec.dataImage` carries: structure, no value rules.
/// The API server checks the CRD schema (pattern, lengths, enum, format, CEL)
/// *before* the validating webhooks run, so any such rule here would answer
/// first with its generic message ("should match '^…'", "should be at least 1
/// chars long") and hide the webhook's precise one. The webhook owns every
/// value rule, including the ones CEL cannot reproduce (ratcheting, admitting
/// any update of a host being deleted, every error at once). Without CEL
/// rules the API server's cost estimation needs no `maxLength` either.
pub const SPEC_KEYWORDS: [&str; 4] = ["type", "description", "properties", "required"];

/// Columns appended to the BareMetalHost's `additionalPrinterColumns`
/// (`kubectl get bmh`): `(name, jsonPath, priority, description)`. Priority 1
/// columns show only with `-o wide`.
pub const PRINTER_COLUMNS: [(&str, &str, u8, &str); 3] = [
    (
        "DataImage",
        ".status.dataImage.state",
        0,
        "State of the data image (metal3-dataimage)",
    ),
    (
        "DataImage URL",
        ".status.dataImage.url",
        1,
        "URL of the data image the state refers to",
    ),
    (
        "DataImage Message",
        ".status.dataImage.message",
        1,
        "Detail for the data image state",
    ),
];

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// JSON6902 patch for the baremetal-operator's CRD (kustomize `patches:`).
    Patch,
    /// Standalone minimal BareMetalHost CRD for test clusters.
    Crd,
    /// The spec.dataImage and status.dataImage schemas as JSON.
    Schema,
}

impl Output {
    /// The command that prints this output (shown when a checked-in file is stale).
    pub fn command(self) -> &'static str {
        match self {
            Output::Patch => "metal3-dataimage crd --output patch",
            Output::Crd => "metal3-dataimage crd --output crd",
            Output::Schema => "metal3-dataimage crd --output schema",
        }
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct CrdArgs {
    /// What to print.
    #[arg(
        long,
        env = "METAL3_DATAIMAGE_OUTPUT",
        value_enum,
        default_value = "patch"
    )]
    pub output: Output,
    /// Write to this file instead of stdout.
    #[arg(long, env = "METAL3_DATAIMAGE_OUT")]
    pub out: Option<PathBuf>,
}

pub fn run(args: CrdArgs) -> anyhow::Result<()> {
    let text = render(args.output)?;
    match args.out {
        Some(path) => {
            std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
        }
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// The text of one output, exactly as checked in under `manifests/`.
pub fn render(output: Output) -> anyhow::Result<String> {
    let header = format!(
        "# Generated by `{}` from the Rust types: do not edit.\n",
        output.command()
    );
    Ok(match output {
        Output::Patch => {
            header + &serde_saphyr::to_string(&crd_patch()?).context("rendering the patch")?
        }
        Output::Crd => {
            header + &serde_saphyr::to_string(&standalone_crd()?).context("rendering the CRD")?
        }
        Output::Schema => {
            let schemas =
                json!({"spec.dataImage": spec_schema()?, "status.dataImage": status_schema()?});
            serde_json::to_string_pretty(&schemas)? + "\n"
        }
    })
}

/// Structural schema of `spec.dataImage`.
pub fn spec_schema() -> anyhow::Result<Value> {
    let schema = generate::<DataImageSpec>()?;
    check_structural(&schema)
        .and_then(|()| check_defers_to_webhook(&schema))
        .map_err(|problems| anyhow::anyhow!("spec.dataImage schema: {}", problems.join("; ")))?;
    Ok(schema)
}

/// Structural schema of `status.dataImage`.
pub fn status_schema() -> anyhow::Result<Value> {
    let mut schema = generate::<DataImageStatus>()?;
    set_keyword(
        &mut schema,
        &["lastTransitionTime"],
        "format",
        json!("date-time"),
    )?;
    check_structural(&schema)
        .map_err(|problems| anyhow::anyhow!("status.dataImage schema: {}", problems.join("; ")))?;
    Ok(schema)
}

/// The [`PRINTER_COLUMNS`] as CRD `additionalPrinterColumns` entries.
pub fn printer_columns() -> Vec<Value> {
    PRINTER_COLUMNS
        .iter()
        .map(|&(name, json_path, priority, description)| {
            let mut column = json!({
                "name": name,
                "type": "string",
                "jsonPath": json_path,
                "description": description,
            });
            if priority > 0 {
                column["priority"] = json!(priority);
            }
            column
        })
        .collect()
}

/// JSON6902 operations adding both properties and the printer columns to the
/// BareMetalHost CRD.
pub fn crd_patch() -> anyhow::Result<Value> {
    let mut operations = vec![
        // Fails the patch (instead of patching the wrong version) if the
        // operator's CRD ever lists another version first.
        json!({"op": "test", "path": "/spec/versions/0/name", "value": crate::model::VERSION}),
        json!({"op": "add", "path": SPEC_DATA_IMAGE_POINTER, "value": spec_schema()?}),
        json!({"op": "add", "path": STATUS_DATA_IMAGE_POINTER, "value": status_schema()?}),
    ];
    // `/-` appends: the operator's own columns keep their order (a strategic
    // merge patch would replace the whole list).
    operations.extend(printer_columns().into_iter().map(
        |column| json!({"op": "add", "path": PRINTER_COLUMNS_APPEND_POINTER, "value": column}),
    ));
    Ok(Value::Array(operations))
}

/// A minimal BareMetalHost CRD (every other field preserved unvalidated) for
/// test clusters that run this project without the baremetal-operator.
pub fn standalone_crd() -> anyhow::Result<Value> {
    Ok(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": BMH_CRD_NAME,
            "annotations": {
                "metal3-dataimage.metal3.io/purpose": "test clusters only: the baremetal-operator ships the real CRD"
            }
        },
        "spec": {
            "group": crate::model::GROUP,
            "names": {
                "kind": "BareMetalHost",
                "listKind": "BareMetalHostList",
                "plural": "baremetalhosts",
                "singular": "baremetalhost",
                "shortNames": ["bmh", "bmhost"]
            },
            "scope": "Namespaced",
            "versions": [{
                "name": crate::model::VERSION,
                "served": true,
                "storage": true,
                "subresources": {"status": {}},
                "additionalPrinterColumns": printer_columns(),
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "BareMetalHost (test CRD): only dataImage is validated.",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {"dataImage": spec_schema()?}
                        },
                        "status": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": true,
                            "properties": {"dataImage": status_schema()?}
                        }
                    }
                }}
            }]
        }
    }))
}

/// Generate `T`'s schema inline (no `$ref`) and normalise it to a structural schema.
fn generate<T: schemars::JsonSchema>() -> anyhow::Result<Value> {
    let mut settings = SchemaSettings::openapi3();
    settings.inline_subschemas = true;
    settings.meta_schema = None;
    let schema = settings.into_generator().into_root_schema_for::<T>();
    let mut value = schema.to_value();
    normalise(&mut value);
    Ok(value)
}

/// Turn schemars' OpenAPI 3 output into what a CRD accepts: drop `title`,
/// `nullable` (absent and null mean the same here; the API server prunes a
/// null), `default` and schema-document keys; map Rust integer formats onto
/// the Kubernetes ones; keep everything else.
fn normalise(value: &mut Value) {
    let Value::Object(node) = value else {
        return;
    };
    for key in [
        "$schema",
        "title",
        "nullable",
        "default",
        "components",
        "$defs",
        "definitions",
        "examples",
        "example",
    ] {
        node.remove(key);
    }
    // Option<Enum> can arrive as `anyOf: [{..enum..}, {nullable}]`: keep the non-null branch.
    if let Some(Value::Array(branches)) = node.remove("anyOf") {
        let mut rest: Vec<Value> = branches
            .into_iter()
            .filter(|branch| !is_null_schema(branch))
            .collect();
        if rest.len() == 1
            && let Some(Value::Object(inner)) = rest.pop()
        {
            for (key, inner_value) in inner {
                node.entry(key).or_insert(inner_value);
            }
        } else {
            node.insert("anyOf".into(), Value::Array(rest));
        }
    }
    if let Some(Value::Array(types)) = node.get("type") {
        let concrete: Vec<Value> = types
            .iter()
            .filter(|kind| kind.as_str() != Some("null"))
            .cloned()
            .collect();
        if concrete.len() == 1 {
            node.insert("type".into(), concrete[0].clone());
        }
    }
    // Option<Enum> lists `null` among the values: a CRD enum must not.
    if let Some(Value::Array(values)) = node.get_mut("enum") {
        values.retain(|value| !value.is_null());
    }
    if let Some(format) = node.get("format").and_then(Value::as_str) {
        let mapped = match format {
            "uint8" | "uint16" | "int8" | "int16" | "int32" => Some("int32"),
            "uint32" | "uint64" | "int64" | "uint" | "int" => Some("int64"),
            _ => None,
        };
        if let Some(mapped) = mapped {
            node.insert("format".into(), json!(mapped));
        }
    }
    if let Some(Value::Object(properties)) = node.get_mut("properties") {
        for property in properties.values_mut() {
            normalise(property);
        }
    }
    if let Some(items) = node.get_mut("items") {
        normalise(items);
    }
}

fn is_null_schema(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("null")
        || schema.get("nullable") == Some(&json!(true)) && schema.get("type").is_none()
}

/// Set `keyword` on the property at `path` (which must exist: a renamed
/// field must not silently lose its rule).
fn set_keyword(
    schema: &mut Value,
    path: &[&str],
    keyword: &str,
    value: Value,
) -> anyhow::Result<()> {
    let mut node = schema;
    for segment in path {
        node = node
            .get_mut("properties")
            .and_then(|properties| properties.get_mut(*segment))
            .with_context(|| {
                format!("generated schema has no property {segment:?} (model changed?)")
            })?;
    }
    node.as_object_mut()
        .context("schema node is not an object")?
        .insert(keyword.into(), value);
    Ok(())
}

/// Problems that would make the API server reject the schema (or make it
/// non-structural), with their location; `Ok` when there are none.
pub fn check_structural(schema: &Value) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    check_node(schema, "", &mut problems);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Problems that would make the API server's schema check answer before the
/// validating webhook: any keyword outside [`SPEC_KEYWORDS`] anywhere in
/// `spec.dataImage`; `Ok` when there are none.
pub fn check_defers_to_webhook(schema: &Value) -> Result<(), Vec<String>> {
    let mut problems = Vec::new();
    check_spec_node(schema, "", &mut problems);
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
    for key in node.keys() {
        if !SPEC_KEYWORDS.contains(&key.as_str()) {
            problems.push(format!(
                "{at}: keyword {key:?} would be checked before the webhook (it owns value rules)"
            ));
        }
    }
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
    check_keywords(node, at, problems);
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

fn check_keywords(node: &Map<String, Value>, at: &str, problems: &mut Vec<String>) {
    for key in node.keys() {
        if !ALLOWED_KEYWORDS.contains(&key.as_str()) {
            problems.push(format!(
                "{at}: keyword {key:?} is not allowed in this CRD schema"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_schema_is_structure_only_with_optional_url_and_no_default() {
        let schema = spec_schema().unwrap();
        assert_eq!(schema["type"], "object");
        // url or contentFrom: the webhook's rule 12 says which is missing.
        assert!(schema.get("required").is_none(), "{schema}");
        let content = &schema["properties"]["contentFrom"];
        assert_eq!(content["type"], "object");
        assert_eq!(content["required"], json!(["secretName"]));
        assert_eq!(content["properties"]["secretName"]["type"], "string");
        assert_eq!(schema["properties"]["volumeLabel"]["type"], "string");
        let url = &schema["properties"]["url"];
        assert_eq!(url["type"], "string");
        assert!(
            url["description"]
                .as_str()
                .unwrap()
                .contains("http or https")
        );
        assert_eq!(schema["properties"]["credentialsName"]["type"], "string");
        let insecure = &schema["properties"]["disableCertificateVerification"];
        assert_eq!(insecure["type"], "boolean");
        assert!(
            insecure.get("default").is_none(),
            "the mutating webhook owns this default"
        );
        let text = serde_json::to_string(&schema).unwrap();
        for keyword in [
            "$ref",
            "pattern",
            "minLength",
            "maxLength",
            "x-kubernetes-validations",
        ] {
            assert!(!text.contains(keyword), "spec.dataImage has {keyword}");
        }
    }

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
        assert!(check_defers_to_webhook(&spec_schema().unwrap()).is_ok());
    }

    #[test]
    fn printer_columns_are_string_columns_with_one_default_column() {
        let columns = printer_columns();
        assert_eq!(columns[0]["name"], "DataImage");
        assert_eq!(columns[0]["jsonPath"], ".status.dataImage.state");
        assert!(columns[0].get("priority").is_none());
        for column in &columns[1..] {
            assert_eq!(column["priority"], 1, "{column}");
        }
        let patch = crd_patch().unwrap();
        let appended: Vec<&Value> = patch
            .as_array()
            .unwrap()
            .iter()
            .filter(|op| op["path"] == PRINTER_COLUMNS_APPEND_POINTER)
            .map(|op| &op["value"])
            .collect();
        assert_eq!(appended, columns.iter().collect::<Vec<_>>());
    }

    #[test]
    fn status_schema_lists_states_and_typed_counters() {
        let schema = status_schema().unwrap();
        let properties = &schema["properties"];
        let states: Vec<&str> = crate::model::DataImageState::ALL
            .iter()
            .map(|state| state.as_str())
            .collect();
        assert_eq!(properties["state"]["enum"], json!(states));
        assert_eq!(properties["state"]["type"], "string");
        assert_eq!(properties["errorCount"]["type"], "integer");
        assert_eq!(properties["observedGeneration"]["format"], "int64");
        assert_eq!(properties["lastTransitionTime"]["format"], "date-time");
        assert!(
            schema.get("required").is_none(),
            "every status field is optional"
        );
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

    #[test]
    fn normalise_strips_nullability_and_maps_formats() {
        let mut value = json!({
            "title": "X", "type": "object",
            "properties": {
                "n": {"type": ["integer", "null"], "format": "uint32", "minimum": 0},
                "e": {"anyOf": [{"type": "string", "enum": ["A", null]}, {"type": "null"}], "description": "d"}
            }
        });
        normalise(&mut value);
        assert_eq!(
            value,
            json!({"type": "object", "properties": {
                "n": {"type": "integer", "format": "int64", "minimum": 0},
                "e": {"type": "string", "enum": ["A"], "description": "d"}
            }})
        );
    }

    #[test]
    fn outputs_render_and_parse_back() {
        let patch: Value = serde_saphyr::from_str(&render(Output::Patch).unwrap()).unwrap();
        assert_eq!(patch, crd_patch().unwrap());
        let crd: Value = serde_saphyr::from_str(&render(Output::Crd).unwrap()).unwrap();
        assert_eq!(crd, standalone_crd().unwrap());
        let schemas: Value = serde_json::from_str(&render(Output::Schema).unwrap()).unwrap();
        assert_eq!(schemas["spec.dataImage"], spec_schema().unwrap());
    }
}
