//! The real `metal3-dataimage serve` binary: SIGTERM while requests flow
//! (not ready at once, every request answered, exit 0), and the probes.

use crate::support::server as server_support;

use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use server_support::*;

async fn probe(address: &str, path: &str) -> Option<(u16, String)> {
    let response = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{address}{path}"))
        .send()
        .await
        .ok()?;
    Some((response.status().as_u16(), response.text().await.ok()?))
}

/// Sends SIGTERM to the child (with the shell's builtin `kill`).
fn sigterm(child: &Child) {
    let sent = Command::new("sh")
        .arg("-c")
        .arg(format!("kill -TERM {}", child.id()))
        .status()
        .unwrap();
    assert!(sent.success());
}

fn wait_for_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_requests_drops_none_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test-ca");
    let serving = pki.serving();
    write(&dir.path().join("tls.crt"), &serving.cert_pem);
    write(&dir.path().join("tls.key"), &serving.key_pem);
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let mut server = spawn_server(
        dir.path(),
        &[
            "--tls-cert-file".as_ref(),
            cert.as_os_str(),
            "--tls-key-file".as_ref(),
            key.as_os_str(),
        ],
        // Flags can also come from the environment. Without cluster access,
        // a review whose only warning is the unchecked Secret is logged at
        // debug: ask for it, the per-request line is checked below.
        &[
            ("METAL3_DATAIMAGE_SHUTDOWN_DELAY", "2s"),
            ("RUST_LOG", "info,metal3_dataimage=debug"),
        ],
    );

    // Ready (the probe server answers, and the TLS listener is warmed up).
    let deadline = Instant::now() + Duration::from_secs(20);
    while probe(&server.probe_address, "/readyz")
        .await
        .map(|(code, _)| code)
        != Some(200)
    {
        assert!(Instant::now() < deadline, "never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        probe(&server.probe_address, "/healthz").await.unwrap().0,
        200
    );

    let body = fixture("bmh-create-dataimage-full.json");
    let url = format!("https://{}{VALIDATE}?timeout=10s", server.address);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicUsize::new(0));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (stop, answered, body, url) =
            (stop.clone(), answered.clone(), body.clone(), url.clone());
        let client = client(&pki.ca_pem, None);
        load.spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match post_with(&client, &url, "application/json", body.clone()).await {
                    Ok(answer)
                        if answer.status == 200
                            && answer.json()["response"]["uid"] == uid_of(&body) =>
                    {
                        answered.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(answer) => failures.push(format!("{}: {}", answer.status, answer.text)),
                    Err(err) => failures.push(format!("{err:?}")),
                }
            }
            failures
        });
    }
    while answered.load(Ordering::SeqCst) < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    sigterm(&server.child);

    // Not ready at once, while requests keep being answered.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some((503, reason)) = probe(&server.probe_address, "/readyz").await {
            assert_eq!(reason, "shutting down");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readiness did not turn false after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = answered.load(Ordering::SeqCst);
    // Endpoints propagate during --shutdown-delay: clients still reach us.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    while let Some(result) = load.join_next().await {
        failures.extend(result.unwrap());
    }
    assert!(
        failures.is_empty(),
        "requests failed during shutdown: {failures:?}"
    );
    assert!(
        answered.load(Ordering::SeqCst) > before,
        "no request was served during the shutdown delay"
    );

    let status = wait_for_exit(&mut server.child, Duration::from_secs(30));
    assert!(status.success(), "exit status {status:?}");
    let logs: Vec<String> = server.logs.try_iter().collect();
    assert!(
        logs.iter().any(|l| l.contains("webhook server stopped")),
        "{logs:?}"
    );
    // Logs never carry Secret data or URL credentials; this review has none,
    // but each request must be logged with its uid.
    assert!(
        logs.iter().any(|l| l.contains(&uid_of(&body))),
        "no per-request log line"
    );
}

#[tokio::test]
async fn dev_certificates_are_generated_and_served_without_flags() {
    let dir = tempfile::tempdir().unwrap();
    let cert_dir = dir.path().join("certs");
    let mut server = spawn_server(
        dir.path(),
        &[
            "--shutdown-delay".as_ref(),
            "0s".as_ref(),
            "--cert-dir".as_ref(),
            cert_dir.as_os_str(),
        ],
        &[],
    );
    let address = server.address.clone();
    assert!(
        server.startup.iter().any(|l| l.contains("curl --cacert")),
        "the curl example is printed"
    );
    let ca = std::fs::read_to_string(dir.path().join("certs/ca.crt")).unwrap();
    let body = fixture("bmh-create-minimal.json");
    let port = address.rsplit(':').next().unwrap();
    // The development certificate is valid for localhost.
    let client = client_builder(&ca, None)
        .resolve("localhost", address.parse().unwrap())
        .build()
        .unwrap();
    let answer = post(
        &client,
        &format!("https://localhost:{port}{VALIDATE}"),
        &body,
    )
    .await;
    assert_eq!(answer.response()["uid"], uid_of(&body).as_str());
    sigterm(&server.child);
    let status = wait_for_exit(&mut server.child, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn in_flight_review_finishes_when_the_listener_closes() {
    use metal3_dataimage::rules::SecretLookup;
    // A Secret lookup that takes a while keeps the review in flight.
    let server = start(|_, _, settings| {
        settings.secrets = Arc::new(StaticSecrets {
            answer: SecretLookup::NotFound,
            delay: Duration::from_millis(800),
        });
        // Shorter than the request: draining must not reuse this limit.
        settings.args.header_read_timeout = Duration::from_millis(200);
    })
    .await;
    let body = fixture("bmh-create-dataimage-full.json");
    let (client, url) = (server.client(), server.url(VALIDATE));
    let request = tokio::spawn({
        let body = body.clone();
        async move { post(&client, &url, &body).await }
    });
    // Wait until the server has the request, then shut down without delay.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !server
        .metrics_text()
        .contains(r#"controller_runtime_webhook_requests_in_flight{webhook="/validate-metal3-io-v1alpha1-baremetalhost"} 1"#)
    {
        assert!(Instant::now() < deadline, "the request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Shutdown delay is zero in these settings: the listener closes at once.
    server.handle.shutdown();
    let answer = request.await.unwrap();
    assert_eq!(answer.response()["uid"], uid_of(&body).as_str());
    // The server stops once the request is done.
    tokio::time::timeout(Duration::from_secs(20), server.task)
        .await
        .expect("the server did not stop")
        .unwrap()
        .unwrap();
}
