//! `metal3-dataimage check`: the admission rules on manifest files, offline.
//!
//! Every document goes through exactly the webhook's code path: YAML is
//! converted to JSON text, then [`rules::decode`], [`rules::validate`] and
//! [`rules::mutate`] run on it as on an AdmissionReview's object.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::model::ObjectMeta;
use crate::rules::{
    self, Operation, Policy, ResourceKind, ReviewInput, SecretLookup, StatusCause, Verdict,
};

/// Exit status: every object admitted.
const EXIT_ADMITTED: u8 = 0;
/// Exit status: at least one object denied.
const EXIT_DENIED: u8 = 1;
/// Exit status: some input could not be read or parsed (wins over denied).
const EXIT_UNREADABLE: u8 = 2;

/// The user name the rules see for offline checks (never an operator user).
const CHECK_USER: &str = "metal3-dataimage-check";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// One line per object, `warning:` lines under it.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Clone, Debug, clap::Args)]
pub struct CheckArgs {
    /// Judge FILE (one object) as an UPDATE of the object in OLD_FILE
    /// (ratcheting applies).
    #[arg(long, value_name = "OLD_FILE", env = "METAL3_DATAIMAGE_OLD")]
    pub old: Option<PathBuf>,

    /// A Secret manifest (`data` or `stringData`) that
    /// spec.dataImage.credentialsName or spec.dataImage.contentFrom.secretName
    /// may name; repeatable. Secrets among the FILE documents count too.
    #[arg(
        long = "secret",
        value_name = "SECRET_FILE",
        env = "METAL3_DATAIMAGE_SECRET",
        value_delimiter = ','
    )]
    pub secrets: Vec<PathBuf>,

    /// A referenced Secret that is not among the given ones denies instead of
    /// warning.
    #[arg(long, env = "METAL3_DATAIMAGE_STRICT_SECRETS")]
    pub strict_secrets: bool,

    /// Output format.
    #[arg(long, value_enum, default_value_t = OutputFormat::Text, env = "METAL3_DATAIMAGE_OUTPUT")]
    pub output: OutputFormat,

    /// YAML (multi-document) or JSON manifests; `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Returns the process exit code (0 admitted, 1 denied, 2 unreadable input).
pub fn run(args: CheckArgs) -> u8 {
    let mut stdin_used = false;
    let outcome = check(&args, &mut |path| read_source(path, &mut stdin_used));
    for line in &outcome.stdout {
        println!("{line}");
    }
    for line in &outcome.stderr {
        eprintln!("{line}");
    }
    outcome.exit_code
}

/// What a check run prints and returns.
#[derive(Debug, Default)]
struct Outcome {
    stdout: Vec<String>,
    stderr: Vec<String>,
    exit_code: u8,
}

impl Outcome {
    /// An `error:` line; the run then exits [`EXIT_UNREADABLE`].
    fn error(&mut self, message: String) {
        self.stderr.push(format!("error: {message}"));
        self.exit_code = EXIT_UNREADABLE;
    }

    /// An error that stops the run before any object is judged.
    fn stop(mut self, message: String) -> Self {
        self.error(message);
        self
    }
}

/// The whole check, with file reading injected (pure apart from `read`).
fn check(args: &CheckArgs, read: &mut dyn FnMut(&Path) -> Result<String, String>) -> Outcome {
    let mut out = Outcome::default();

    // Secrets: --secret files, then Secret documents among the FILEs.
    let mut secrets = Vec::new();
    for path in &args.secrets {
        let docs = load_documents(path, read).unwrap_or_else(|e| {
            out.error(e);
            Vec::new()
        });
        for doc in docs {
            match secret_entry(&doc) {
                Ok(Some(entry)) => secrets.push(entry),
                Ok(None) => out.error(format!(
                    "{}: document {}: --secret files may only hold Secrets, found {}",
                    doc.source,
                    doc.index,
                    (doc.header.kind.as_deref()).unwrap_or("an object without kind")
                )),
                Err(e) => out.error(e),
            }
        }
    }

    let old = match &args.old {
        None => None,
        Some(path) => match load_documents(path, read) {
            Ok(mut docs) if docs.len() == 1 => docs.pop(),
            Ok(docs) => {
                let (path, found) = (path.display(), docs.len());
                return out.stop(format!(
                    "{path}: --old takes exactly one document, found {found}"
                ));
            }
            Err(e) => return out.stop(e),
        },
    };

    let mut documents = Vec::new();
    for path in &args.files {
        match load_documents(path, read) {
            Ok(docs) => {
                if docs.is_empty() {
                    out.stderr
                        .push(format!("note: {}: no documents", display_path(path)));
                }
                secrets.extend(docs.iter().filter_map(|doc| secret_entry(doc).ok()?));
                documents.extend(docs);
            }
            Err(e) => out.error(e),
        }
    }
    if old.is_some() && documents.len() != 1 {
        let found = documents.len();
        return out.stop(format!(
            "--old judges exactly one object, but FILE holds {found} documents"
        ));
    }

    let policy = Policy {
        strict_secrets: args.strict_secrets,
        operator_users: Vec::new(),
    };
    let secrets_given = !args.secrets.is_empty();
    for doc in &documents {
        let judgement = judge(doc, old.as_ref(), &secrets, secrets_given, &policy);
        if judgement.as_ref().is_some_and(|v| !v.allowed) && out.exit_code == EXIT_ADMITTED {
            out.exit_code = EXIT_DENIED;
        }
        match args.output {
            OutputFormat::Text => out.stdout.extend(render_text(doc, &judgement)),
            OutputFormat::Json => out.stdout.push(render_json(doc, &judgement)),
        }
    }
    out
}

fn read_source(path: &Path, stdin_used: &mut bool) -> Result<String, String> {
    if path.as_os_str() == "-" {
        if *stdin_used {
            return Err("-: standard input can be read only once".to_string());
        }
        *stdin_used = true;
        return std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("-: cannot read standard input: {e}"));
    }
    std::fs::read_to_string(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))
}

fn display_path(path: &Path) -> String {
    if path.as_os_str() == "-" {
        "<stdin>".to_string()
    } else {
        path.display().to_string()
    }
}

/// The identifying fields of a manifest document, read leniently.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct Header {
    api_version: Option<String>,
    kind: Option<String>,
    metadata: ObjectMeta,
}

/// One manifest document as compact JSON text.
#[derive(Clone, Debug)]
struct Document {
    source: String,
    /// 1-based position in its file (items of a `List` count one by one).
    index: usize,
    json: Box<RawValue>,
    header: Header,
}

/// Reads and parses one file into JSON documents; an error names the file
/// and, where the parser knows it, the line and column.
fn load_documents(
    path: &Path,
    read: &mut dyn FnMut(&Path) -> Result<String, String>,
) -> Result<Vec<Document>, String> {
    let text = read(path)?;
    let source = display_path(path);
    let values = parse_text(&text).map_err(|e| format!("{source}: {e}"))?;
    let mut docs = Vec::new();
    for mut value in values {
        let is_list = value["kind"] == "List" && value["items"].is_array();
        let items = match value.get_mut("items").filter(|_| is_list).map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => vec![value],
        };
        for item in items {
            let index = docs.len() + 1;
            if !item.is_object() {
                return Err(format!(
                    "{source}: document {index} is not a mapping (a Kubernetes object)"
                ));
            }
            let header = Header::deserialize(&item).unwrap_or_default();
            let json = serde_json::value::to_raw_value(&item)
                .map_err(|e| format!("{source}: document {index}: {e}"))?;
            docs.push(Document {
                source: source.clone(),
                index,
                json,
                header,
            });
        }
    }
    Ok(docs)
}

/// JSON (one or more concatenated values) when the text starts with `{` or
/// `[`, otherwise YAML (multi-document).
fn parse_text(text: &str) -> Result<Vec<Value>, String> {
    let trimmed = text.trim_start_matches('\u{feff}');
    if trimmed.trim_start().starts_with(['{', '[']) {
        return serde_json::Deserializer::from_str(trimmed)
            .into_iter::<Value>()
            .collect::<Result<_, _>>()
            .map_err(|e| format!("invalid JSON: {e}"));
    }
    serde_saphyr::from_multiple::<Value>(trimmed)
        .map(|docs| docs.into_iter().filter(|d| !d.is_null()).collect())
        .map_err(|e| {
            let text = e.without_snippet().to_string();
            format!(
                "invalid YAML: {}",
                text.strip_prefix("error: ").unwrap_or(&text)
            )
        })
}

/// A Secret's name, namespace and keys.
#[derive(Debug)]
struct SecretEntry {
    name: String,
    namespace: Option<String>,
    keys: SecretLookup,
}

/// `Ok(None)` when the document is not a Secret.
fn secret_entry(doc: &Document) -> Result<Option<SecretEntry>, String> {
    /// A `null` value counts as absent.
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct SecretDoc {
        data: Option<BTreeMap<String, Option<String>>>,
        string_data: Option<BTreeMap<String, Option<String>>>,
    }
    if doc.header.kind.as_deref() != Some("Secret") {
        return Ok(None);
    }
    let at = format!("{}: document {}", doc.source, doc.index);
    let name = (doc.header.metadata.name.clone())
        .ok_or_else(|| format!("{at}: Secret without metadata.name"))?;
    let secret: SecretDoc = rules::decode_json_text(doc.json.get())
        .map_err(|(field, message)| format!("{at}: Secret {name}: {field}: {message}"))?;
    // `data` (base64) and `stringData` merged, `stringData` winning as the
    // API server does.
    let mut values = BTreeMap::new();
    for (key, encoded) in secret.data.into_iter().flatten() {
        let Some(encoded) = encoded else { continue };
        let value = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|_| format!("{at}: Secret {name}: data.{key} is not valid base64"))?;
        values.insert(key, value);
    }
    let string_data = secret.string_data.into_iter().flatten();
    values.extend(string_data.filter_map(|(key, plain)| Some((key, plain?.into_bytes()))));
    let keys = SecretLookup::from_entries(values.iter().map(|(k, v)| (k.as_str(), v.as_slice())));
    Ok(Some(SecretEntry {
        namespace: doc.header.metadata.namespace.clone(),
        name,
        keys,
    }))
}

/// A document's verdict (with the defaulting patch); `None` when it is skipped.
type Judgement = Option<Verdict>;

fn judge(
    doc: &Document,
    old: Option<&Document>,
    secrets: &[SecretEntry],
    secrets_given: bool,
    policy: &Policy,
) -> Judgement {
    let meta = &doc.header.metadata;
    let metal3 = (doc.header.api_version.as_deref()).is_some_and(|v| v.starts_with("metal3.io/"));
    let kind = match doc.header.kind.as_deref() {
        Some("BareMetalHost") if metal3 => ResourceKind::BareMetalHost,
        Some("DataImage") if metal3 => ResourceKind::DataImage,
        _ => return None,
    };
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    let input = ReviewInput {
        kind,
        operation: old.map_or(Operation::Create, |_| Operation::Update),
        sub_resource: None,
        user: CHECK_USER,
        name: meta.name.as_deref().unwrap_or(""),
        namespace,
        object: Some(&doc.json),
        old_object: old.map(|o| &*o.json),
    };
    let decoded = rules::decode(&input);
    let lookup = match decoded.secret_to_check() {
        None => SecretLookup::NotNeeded,
        Some(name) => {
            let found = secrets.iter().find(|s| {
                s.name == name
                    && (s.namespace.is_none()
                        || meta.namespace.is_none()
                        || s.namespace.as_deref() == Some(namespace))
            });
            match found {
                Some(s) => s.keys.clone(),
                None if secrets_given || policy.strict_secrets => SecretLookup::NotFound,
                None => SecretLookup::NotNeeded,
            }
        }
    };
    let mut verdict = rules::validate(&input, &decoded, &lookup, policy);
    let old = rules::OldDataImages::from_raw(input.old_object);
    verdict.patch = rules::mutate(&input, &decoded, &old, policy).patch;
    Some(verdict)
}

fn causes_of(verdict: &Verdict) -> &[StatusCause] {
    verdict
        .status
        .as_ref()
        .and_then(|s| s.details.as_ref())
        .map_or(&[], |d| d.causes.as_slice())
}

fn render_text(doc: &Document, judgement: &Judgement) -> Vec<String> {
    let kind = doc.header.kind.as_deref().unwrap_or("(no kind)");
    let meta = &doc.header.metadata;
    let name = meta.name_or_generate_name().unwrap_or("(unnamed)");
    let label = match meta.namespace.as_deref() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    };
    let Some(verdict) = judgement else {
        return vec![format!(
            "{label}: skipped (not a metal3.io BareMetalHost or DataImage)"
        )];
    };
    let causes = causes_of(verdict).iter().map(|c| match c.field.as_str() {
        "" => c.message.clone(),
        field => format!("{field}: {}", c.message),
    });
    let text = causes.collect::<Vec<_>>().join("; ");
    let first = match &verdict.status {
        _ if verdict.allowed => format!("{label}: allowed"),
        Some(status) if text.is_empty() => format!("{label}: denied: {}", status.message),
        _ => format!("{label}: denied: {text}"),
    };
    let warnings = verdict.warnings.iter().map(|w| format!("warning: {w}"));
    std::iter::once(first).chain(warnings).collect()
}

fn render_json(doc: &Document, judgement: &Judgement) -> String {
    let meta = &doc.header.metadata;
    let mut line = json!({
        "file": doc.source,
        "document": doc.index,
        "kind": doc.header.kind,
        "namespace": meta.namespace,
        "name": meta.name_or_generate_name(),
        "skipped": judgement.is_none(),
    });
    if let Some(verdict) = judgement {
        let status = verdict.status.as_ref();
        line["allowed"] = json!(verdict.allowed);
        line["code"] = json!(status.map(|s| s.code));
        line["message"] = json!(status.map(|s| &s.message));
        line["causes"] = json!(causes_of(verdict));
        line["warnings"] = json!(verdict.warnings);
        line["patch"] = json!(verdict.patch.as_ref().map_or(&[][..], |p| p.0.as_slice()));
    }
    line.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn args(files: &[&str]) -> CheckArgs {
        CheckArgs {
            old: None,
            secrets: Vec::new(),
            strict_secrets: false,
            output: OutputFormat::Text,
            files: files.iter().map(PathBuf::from).collect(),
        }
    }

    fn run_on(args: &CheckArgs, files: &[(&str, &str)]) -> Outcome {
        let files: HashMap<PathBuf, String> = files
            .iter()
            .map(|(p, t)| (PathBuf::from(p), t.to_string()))
            .collect();
        let mut read = |p: &Path| {
            files
                .get(p)
                .cloned()
                .ok_or_else(|| format!("{}: cannot read: No such file", p.display()))
        };
        check(args, &mut read)
    }

    const HOST: &str = "apiVersion: metal3.io/v1alpha1
kind: BareMetalHost
metadata:
  name: worker-0
  namespace: metal3
spec:
  bmc:
    address: redfish-virtualmedia+https://192.0.2.10/redfish/v1/Systems/1
  dataImage:
    url: URL
";

    #[test]
    fn text_output_and_exit_codes() {
        let ok = HOST.replace("URL", "https://images.example.com/a.iso");
        let bad = HOST.replace("URL", "ftp://h/a.iso");
        let out = run_on(&args(&["ok.yaml"]), &[("ok.yaml", &ok)]);
        assert_eq!(out.stdout, ["BareMetalHost metal3/worker-0: allowed"]);
        assert_eq!(out.exit_code, EXIT_ADMITTED);
        let both =
            format!("{ok}---\n{bad}---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: c\n");
        let out = run_on(&args(&["a.yaml"]), &[("a.yaml", &both)]);
        assert_eq!(out.exit_code, EXIT_DENIED);
        assert_eq!(
            out.stdout,
            [
                "BareMetalHost metal3/worker-0: allowed",
                "BareMetalHost metal3/worker-0: denied: spec.dataImage.url: Invalid value: \"ftp://h/a.iso\": scheme must be http or https",
                "ConfigMap c: skipped (not a metal3.io BareMetalHost or DataImage)",
            ]
        );
        // A missing file wins over the denial, and the other file is still judged.
        let out = run_on(&args(&["a.yaml", "missing.yaml"]), &[("a.yaml", &bad)]);
        assert_eq!(out.exit_code, EXIT_UNREADABLE);
        assert_eq!(out.stdout.len(), 1);
        assert_eq!(
            out.stderr,
            ["error: missing.yaml: cannot read: No such file"]
        );
    }

    #[test]
    fn yaml_errors_name_file_and_position() {
        let out = run_on(
            &args(&["b.yaml"]),
            &[("b.yaml", "kind: [unclosed\n  x: y\n")],
        );
        assert_eq!(out.exit_code, EXIT_UNREADABLE);
        assert!(
            out.stderr[0].starts_with("error: b.yaml: invalid YAML: "),
            "{:?}",
            out.stderr
        );
        let out = run_on(
            &args(&["c.json"]),
            &[("c.json", "{\"kind\": \n  \"BareMetalHost\",,}")],
        );
        assert_eq!(
            out.stderr,
            ["error: c.json: invalid JSON: key must be a string at line 2 column 19"]
        );
    }

    #[test]
    fn json_output_has_the_patch() {
        let mut a = args(&["ok.yaml"]);
        a.output = OutputFormat::Json;
        let out = run_on(
            &a,
            &[("ok.yaml", &HOST.replace("URL", "http://192.0.2.1/a.iso"))],
        );
        let line: Value = serde_json::from_str(&out.stdout[0]).unwrap();
        assert_eq!(line["allowed"], true);
        assert_eq!(
            line["patch"],
            serde_json::json!([{"op": "add", "path": "/spec/dataImage/disableCertificateVerification", "value": false}])
        );
    }
}
