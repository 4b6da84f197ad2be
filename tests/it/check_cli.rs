//! The `check` subcommand, run as the built binary over the manifests in
//! tests/fixtures/manifests.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn manifest(name: &str) -> String {
    format!(
        "{}/tests/fixtures/manifests/{name}",
        env!("CARGO_MANIFEST_DIR")
    )
}

fn check(args: &[&str]) -> Output {
    check_with_stdin(args, None)
}

fn check_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_metal3-dataimage"))
        .arg("check")
        .args(args)
        .current_dir(format!(
            "{}/tests/fixtures/manifests",
            env!("CARGO_MANIFEST_DIR")
        ))
        .env_remove("METAL3_DATAIMAGE_OUTPUT")
        .env_remove("METAL3_DATAIMAGE_SECRET")
        .env_remove("METAL3_DATAIMAGE_STRICT_SECRETS")
        .env_remove("METAL3_DATAIMAGE_OLD")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run metal3-dataimage");
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.unwrap_or_default()).unwrap();
    drop(pipe);
    child.wait_with_output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

#[test]
fn valid_manifests_exit_0_and_other_kinds_are_skipped() {
    let o = check(&["hosts-valid.yaml", "host-list.json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "BareMetalHost metal3/worker-0: allowed\n\
         Secret metal3/dataimage-creds: skipped (not a metal3.io BareMetalHost or DataImage)\n\
         DataImage metal3/worker-1: allowed\n\
         ConfigMap metal3/edge-1-settings: skipped (not a metal3.io BareMetalHost or DataImage)\n\
         BareMetalHost metal3/worker-2: allowed\n"
    );
    assert_eq!(stderr(&o), "");
}

#[test]
fn json_output_one_object_per_line() {
    let o = check(&["--output", "json", "hosts-valid.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    let lines = json_lines(&o);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["kind"], "BareMetalHost");
    assert_eq!(lines[0]["namespace"], "metal3");
    assert_eq!(lines[0]["name"], "worker-0");
    assert_eq!(lines[0]["allowed"], true);
    assert_eq!(lines[0]["code"], Value::Null);
    assert_eq!(lines[0]["causes"], serde_json::json!([]));
    assert_eq!(lines[0]["warnings"], serde_json::json!([]));
    // disableCertificateVerification is already set: no patch.
    assert_eq!(lines[0]["patch"], serde_json::json!([]));
    assert_eq!(lines[1]["skipped"], true);
    assert_eq!(lines[1]["kind"], "Secret");
    assert_eq!(lines[2]["kind"], "DataImage");
    assert_eq!(lines[2]["allowed"], true);
}

#[test]
fn denials_exit_1_with_every_cause_and_no_secret_in_output() {
    let o = check(&["host-denied.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.starts_with("BareMetalHost metal3/worker-bad: denied: spec.dataImage.url: Invalid value: \"ftp://***@images.example.com/config.iso\": scheme must be http or https; "), "{out}");
    assert!(!out.contains("s3cret"));

    let o = check(&["--output", "json", "host-denied.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    let line = &json_lines(&o)[0];
    assert_eq!(line["allowed"], false);
    assert_eq!(line["code"], 422);
    let fields: Vec<&str> = line["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "spec.dataImage.url",
            "spec.dataImage.url",
            "spec.dataImage.credentialsName",
            "spec.dataImage",
            "spec.bmc.address"
        ]
    );
    assert!(
        line["message"]
            .as_str()
            .unwrap()
            .starts_with("BareMetalHost.metal3.io \"worker-bad\" is invalid: [")
    );
    assert_eq!(
        line["patch"],
        serde_json::json!([{"op": "add", "path": "/spec/dataImage/disableCertificateVerification", "value": false}])
    );
}

#[test]
fn wrong_json_type_is_a_denial_naming_the_field() {
    let o = check(&["host-url-42.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "BareMetalHost metal3/worker-typo: denied: spec.dataImage.url: invalid type: integer 42, expected a string\n"
    );
    let o = check(&["--output", "json", "host-url-42.yaml"]);
    assert_eq!(json_lines(&o)[0]["code"], 400);
}

#[test]
fn warnings_are_printed_under_their_object() {
    let o = check(&["host-http-warnings.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        "BareMetalHost metal3/worker-http: allowed\n\
         warning: spec.dataImage.credentialsName: the credentials would travel unencrypted over http; use an https URL\n\
         warning: spec.disablePowerOff: the data image becomes visible to the host only at its next reboot\n"
    );
}

#[test]
fn unparseable_input_exits_2_naming_file_and_position_and_wins_over_denial() {
    let o = check(&[
        "host-denied.yaml",
        "broken.yaml",
        "missing.yaml",
        "hosts-valid.yaml",
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("error: broken.yaml: invalid YAML: unclosed bracket '[' at line 7, column 14"),
        "{err}"
    );
    assert!(err.contains("error: missing.yaml: cannot read: "), "{err}");
    // Every readable file is still judged.
    let out = stdout(&o);
    assert!(out.contains("worker-bad: denied"));
    assert!(out.contains("worker-0: allowed"));
}

#[test]
fn stdin_is_read_with_dash() {
    let text = std::fs::read(manifest("host-http-warnings.yaml")).unwrap();
    let o = check_with_stdin(&["--output", "json", "-"], Some(&text));
    assert_eq!(o.status.code(), Some(0));
    let line = &json_lines(&o)[0];
    assert_eq!(line["file"], "<stdin>");
    assert_eq!(line["warnings"].as_array().unwrap().len(), 2);
    let o = check_with_stdin(&["-"], Some(b"{\"kind\": }"));
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "error: <stdin>: invalid JSON: expected value at line 1 column 10\n"
    );
}

#[test]
fn old_object_enables_ratcheting() {
    let o = check(&[
        "--old",
        "host-legacy-old.yaml",
        "host-legacy-annotated.yaml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(out.starts_with("BareMetalHost metal3/worker-legacy: allowed\nwarning: spec.dataImage.url: Invalid value: \"ftp://images.example.com/config/worker-legacy.iso\": scheme must be http or https (not enforced"), "{out}");
    let o = check(&["--old", "host-legacy-old.yaml", "host-legacy-changed.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    // Without --old the same object is a CREATE: denied.
    assert_eq!(
        check(&["host-legacy-annotated.yaml"]).status.code(),
        Some(1)
    );
    // --old takes one document.
    let o = check(&["--old", "hosts-valid.yaml", "host-legacy-annotated.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--old takes exactly one document, found 4"));
}

#[test]
fn secrets_from_files_data_and_string_data() {
    // `data` (base64) with both keys.
    let o = check(&["--secret", "secret-data.yaml", "host-with-creds.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(stdout(&o), "BareMetalHost metal3/worker-3: allowed\n");
    // An empty password denies.
    let o = check(&[
        "--secret",
        "secret-missing-password.yaml",
        "host-with-creds.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("missing or empty: \"password\""));
    // The Secret in another document of the checked files (`stringData`).
    let o = check(&[
        "hosts-valid.yaml",
        "host-with-creds.yaml",
        "--strict-secrets",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // Not found: a warning when Secrets were given, a denial when strict.
    let o = check(&["--secret", "secret-data.yaml", "host-http-warnings.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    let o = check(&["--strict-secrets", "host-with-creds.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("Secret not found in namespace \"metal3\""));
    // A --secret file that is not a Secret is an input error.
    let o = check(&["--secret", "host-with-creds.yaml", "host-with-creds.yaml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--secret files may only hold Secrets, found BareMetalHost"));
}

#[test]
fn secret_not_found_is_a_warning_by_default() {
    let o = check(&["--secret", "secret-data.yaml", "--output", "json", "-"]);
    // stdin is empty here: no documents, admitted.
    assert_eq!(o.status.code(), Some(0));
    let text = std::fs::read_to_string(manifest("host-with-creds.yaml"))
        .unwrap()
        .replace("dataimage-creds", "other-creds");
    let o = check_with_stdin(
        &["--secret", "secret-data.yaml", "-"],
        Some(text.as_bytes()),
    );
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        stdout(&o),
        "BareMetalHost metal3/worker-3: allowed\nwarning: spec.dataImage.credentialsName: Secret \"other-creds\" does not exist (yet) in namespace \"metal3\"; the image cannot be attached until it does\n"
    );
}

#[test]
fn content_from_hosts_are_judged_with_secret_files() {
    // The Secret as a --secret file, and as another document of the input.
    let o = check(&[
        "--secret",
        "secret-config-iso.yaml",
        "--strict-secrets",
        "host-config-iso.yaml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert_eq!(stdout(&o), "BareMetalHost metal3/worker-5: allowed\n");
    let o = check(&[
        "--strict-secrets",
        "secret-config-iso.yaml",
        "host-config-iso.yaml",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // Missing: a warning, a denial when strict.
    let o = check(&["--secret", "secret-data.yaml", "host-config-iso.yaml"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(
        stdout(&o).contains(
            "warning: spec.dataImage.contentFrom.secretName: Secret \"worker-5-config\" does not \
             exist (yet) in namespace \"metal3\"; the ISO cannot be built until it does"
        ),
        "{}",
        stdout(&o)
    );
    let o = check(&["--strict-secrets", "host-config-iso.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    // A key that cannot be an ISO file name.
    let o = check(&[
        "--secret",
        "secret-config-iso-bad.yaml",
        "host-config-iso.yaml",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains(
            "key \"this-key-is-far-too-long-to-be-a-joliet-file-name-on-an-iso-9660-image\" cannot \
             be a file name in the ISO: must be at most 64 characters"
        ),
        "{}",
        stdout(&o)
    );
}

#[test]
fn content_from_denials_name_every_field() {
    let o = check(&["--output", "json", "host-config-iso-denied.yaml"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let text = stdout(&o);
    for field in [
        "\"spec.dataImage\"",
        "\"spec.dataImage.credentialsName\"",
        "\"spec.dataImage.disableCertificateVerification\"",
        "\"spec.dataImage.contentFrom.secretName\"",
        "\"spec.dataImage.volumeLabel\"",
    ] {
        assert!(text.contains(field), "{field} missing: {text}");
    }
    assert!(text.contains("(found '.')"), "{text}");
}
