//! The password must not appear anywhere the staging code writes: logs (every
//! target, TRACE level), error messages, Debug output, staged results.

use crate::support::staging as support;

use axum::body::Bytes;
use base64::Engine;
use metal3_dataimage::model::SecretCredentials;
use support::*;

const IMAGE_LEN: usize = 96 * 1024;

#[tokio::test]
async fn the_password_never_appears_in_logs_errors_or_results() {
    let logs = LogCapture::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    // tracing caches each log line's interest process-wide, and while a
    // single dispatcher is alive tracing-core asks the registering thread's
    // default (its "just one" shortcut): a line that another test's thread
    // reaches first (the image server's, the stager's) is then cached as
    // never enabled and this capture misses it (it failed 2 runs in 3 beside
    // `staging::`). A global no-op registry keeps a second dispatcher alive,
    // so every interest is computed from all of them.
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry());
    // Current-thread runtime: every task of this test logs through it.
    let _guard = tracing::subscriber::set_default(subscriber);

    let pki = Pki::new();
    let origin = TestServer::start(Some(pki.good.clone())).await;
    let other_host = TestServer::start(Some(pki.good.clone())).await;
    let self_signed = TestServer::start(Some(pki.self_signed.clone())).await;
    let image = iso_image(IMAGE_LEN, true, 1);
    let protected = |body: Vec<u8>| Reply::Protected {
        user: USER.into(),
        password: PASSWORD.into(),
        body: Bytes::from(body),
    };
    origin.set("/data.iso", protected(image.clone()));
    origin.set(
        "/away.iso",
        Reply::Redirect(other_host.url("localhost", "/data.iso")),
    );
    other_host.set("/data.iso", protected(image.clone()));
    origin.set("/html", protected(b"<html>nope</html>".repeat(4000)));
    let broken =
        DropServer::start(Some(pki.good.clone()), IMAGE_LEN, image[..40_000].to_vec()).await;
    self_signed.set("/data.iso", protected(image.clone()));
    let harness = StagingHarness::start(Some(&pki.ca_file), 1024 * 1024).await;

    let mut outputs: Vec<String> = Vec::new();
    let wrong = SecretCredentials {
        username: USER.into(),
        password: format!("{PASSWORD}-wrong"),
    };
    let cases = [
        (origin.url("127.0.0.1", "/data.iso"), credentials(), false),
        (origin.url("127.0.0.1", "/data.iso"), wrong, false),
        (origin.url("127.0.0.1", "/away.iso"), credentials(), false),
        (origin.url("127.0.0.1", "/html"), credentials(), false),
        (broken.url("127.0.0.1", "/drop.iso"), credentials(), false),
        (
            origin.url("127.0.0.1", "/missing.iso"),
            credentials(),
            false,
        ),
        (
            self_signed.url("127.0.0.1", "/data.iso"),
            credentials(),
            false,
        ),
        (
            self_signed.url("127.0.0.1", "/data.iso"),
            credentials(),
            true,
        ),
        (
            format!("https://{USER}:{PASSWORD}@127.0.0.1:1/x.iso"),
            credentials(),
            false,
        ),
    ];
    let mut failures = 0;
    let mut tokens: Vec<String> = Vec::new();
    for (i, (url, creds, insecure)) in cases.into_iter().enumerate() {
        let req = request(&format!("ns/host-{i}"), &url, Some(creds), insecure);
        outputs.push(format!("{req:?}"));
        match harness.stager.stage(req).await {
            Ok(staged) => {
                outputs.push(format!("{staged:?}"));
                tokens.push(staged.ironic_url.rsplit('/').nth(1).unwrap().to_string());
                outputs.push(staged.digest.clone());
                outputs.push(staged.status_note().unwrap_or_default().to_string());
                let body = http()
                    .get(&staged.ironic_url)
                    .send()
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap();
                assert_eq!(body.len(), IMAGE_LEN);
            }
            Err(err) => {
                failures += 1;
                outputs.push(err.to_string());
                outputs.push(format!("{err:?}"));
            }
        }
    }
    assert_eq!(failures, 7, "{outputs:#?}");
    outputs.push(format!("{:?}", harness.stager));
    harness.stager.release("ns/host-0");

    let logged = logs.text();
    assert!(
        logged.contains("image downloaded and verified"),
        "the capture works:\n{logged}"
    );
    assert!(logged.contains("image staging failed"), "{logged}");
    assert!(logged.contains("serving staged image"), "{logged}");
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    for needle in [PASSWORD, encoded.as_str()] {
        assert!(!logged.contains(needle), "secret in the logs:\n{logged}");
        for output in &outputs {
            assert!(!output.contains(needle), "secret in an output: {output}");
        }
    }
    // Tokens in the staged URLs are secrets of their own: never logged or
    // shown by Debug.
    assert_eq!(tokens.len(), 2);
    for token in &tokens {
        assert_eq!(token.len(), 64);
        assert!(!logged.contains(token.as_str()), "token logged:\n{logged}");
        assert!(
            outputs.iter().all(|o| !o.contains(token.as_str())),
            "token in an output"
        );
    }
    let url_lines: Vec<&str> = logged.lines().filter(|l| l.contains("/images/")).collect();
    assert!(
        url_lines.is_empty(),
        "image server URLs with tokens logged: {url_lines:#?}"
    );
}
