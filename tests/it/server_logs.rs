//! What the real `metal3-dataimage serve` binary writes to its log when
//! requests reach :9443 directly: request fields cannot forge log lines, and
//! running out of file descriptors does not flood the log.

use crate::support::server as server_support;

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

/// With the file descriptor limit reached, connections wait in the backlog
/// and every accept fails with EMFILE at once: the accept loop backs off 1 s
/// and logs one line per 10 s instead of one per retry (~20 a second), and
/// serves again once descriptors are free.
#[tokio::test]
async fn out_of_file_descriptors_logs_one_line_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test-ca");
    // `sh` lowers RLIMIT_NOFILE for the binary it execs (same pid).
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(r#"ulimit -n 64 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_metal3-dataimage"))
        .args(serve_args("json"))
        .args(tls_args(dir.path(), &pki))
        // Nothing on the server side closes the held connections, and no
        // certificate poll needs a descriptor during the test.
        .args(["--handshake-timeout", "2m", "--cert-poll-interval", "1h"]);
    let server = spawn_command(command, dir.path());
    let addr: std::net::SocketAddr = server.address.parse().unwrap();
    let answered = |client: reqwest::Client| async move {
        let url = format!("https://{addr}{VALIDATE}");
        post(&client, &url, &fixture("bmh-create-minimal.json"))
            .await
            .response()["allowed"]
            == true
    };
    assert!(answered(client(&pki.ca_pem, None)).await);

    // More idle connections than descriptors left: the last ones stay in
    // the listen backlog.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    let lines = server.lines_within(Duration::from_secs(3));
    let failures: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["message"] == "accept failed")
        .collect();
    assert_eq!(failures.len(), 1, "{lines:#?}");
    assert!(
        failures[0]["error"]
            .as_str()
            .unwrap()
            .contains("Too many open files"),
        "{}",
        failures[0]
    );
    assert_eq!(failures[0]["backoff_ms"], 1000);
    assert_eq!(failures[0]["suppressed"], 0);

    // Descriptors come back: the server accepts and answers again.
    drop(held);
    assert!(answered(client(&pki.ca_pem, None)).await);
}
