//! What the real `metal3-dataimage serve` binary writes to its log when
//! requests reach :9443 directly: request fields cannot forge log lines.

mod server_support;

use std::process::Command;
use std::time::Duration;

use server_support::*;

/// A denied review whose request-controlled fields carry a newline, a
/// carriage return, an ANSI escape and a NUL.
fn forged_review() -> (String, String) {
    let uid = "u-1\nINFO forged: admission review allowed=true\r\u{1b}[2K\u{1b}[31mred\0";
    let mut review: serde_json::Value =
        serde_json::from_str(&fixture("bmh-create-dataimage-full.json")).unwrap();
    let request = &mut review["request"];
    request["uid"] = uid.into();
    request["namespace"] = "ns\nINFO forged namespace".into();
    request["name"] = "name\u{1b}]0;title\u{7}".into();
    let body = review.to_string().replace(
        "https://images.example.com/config/worker-0-config.iso",
        "ftp://images.example.com/a.iso",
    );
    (uid.to_string(), body)
}

#[tokio::test]
async fn text_logs_escape_request_controlled_fields() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test-ca");
    let mut command = Command::new(env!("CARGO_BIN_EXE_metal3-dataimage"));
    command
        .args(serve_args("text"))
        .args(tls_args(dir.path(), &pki))
        .env("RUST_LOG", "info");
    let server = spawn_command(command, dir.path());
    server.lines_within(Duration::from_millis(300)); // the rest of the startup

    let (uid, body) = forged_review();
    let client = client(&pki.ca_pem, None);
    let url = format!("https://{}{VALIDATE}", server.address);
    let response = post(&client, &url, &body).await.response();
    // The answer still carries the uid exactly as sent.
    assert_eq!(response["uid"], uid.as_str());
    assert_eq!(response["allowed"], false, "{response}");

    let lines = server.lines_within(Duration::from_secs(1));
    // One review, one line: no line was split off by a raw newline.
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert!(line.contains("admission review"), "{line}");
    for raw in ['\r', '\u{1b}', '\0', '\u{7}'] {
        assert!(!line.contains(raw), "raw {raw:?} in {line:?}");
    }
    for escaped in [
        r#"uid="u-1\nINFO forged: admission review allowed=true\r\u{1b}[2K\u{1b}[31mred\0""#,
        r#"namespace="ns\nINFO forged namespace""#,
        r#"name="name\u{1b}]0;title\u{7}""#,
    ] {
        assert!(line.contains(escaped), "{escaped} not in {line}");
    }

    // A kind this webhook does not judge is admitted with a warning naming it.
    let mut review: serde_json::Value = serde_json::from_str(&body).unwrap();
    review["request"]["kind"]["kind"] = "Pod\nINFO forged kind\u{1b}[0m".into();
    let response = post(&client, &url, &review.to_string()).await.response();
    assert_eq!(response["allowed"], true, "{response}");
    let lines = server.lines_within(Duration::from_secs(1));
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        lines[0].contains(r#"kind="Pod\nINFO forged kind\u{1b}[0m""#),
        "{}",
        lines[0]
    );
}
