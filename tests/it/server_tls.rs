//! TLS behaviour of the webhook listener: certificate rotation through a
//! kubelet-style `..data` symlink swap while requests flow, keeping the last
//! good certificate, mTLS, ALPN/HTTP/2, minimum TLS version.

use crate::support::server as server_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use metal3_dataimage::admission::TlsMinVersion;
use server_support::*;

/// Polls `condition` until it holds; fails the test after `limit`.
async fn eventually<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The certificate served to a brand-new connection.
async fn served_cert(server: &TestServer, body: &str) -> Vec<u8> {
    let fresh = client_builder(&server.pki.ca_pem, None)
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let answer = post(&fresh, &server.url(VALIDATE), body).await;
    assert_eq!(answer.response()["allowed"], true);
    answer.peer_cert.expect("peer certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotated_twice_by_symlink_swap_while_requests_flow() {
    let first = Arc::new(std::sync::Mutex::new(None::<Issued>));
    let first_in = first.clone();
    let server = start(move |dir, pki, settings| {
        let tls_dir = dir.join("tls");
        std::fs::create_dir(&tls_dir).unwrap();
        let issued = pki.serving();
        kubelet_publish(&tls_dir, "v1", &issued);
        *first_in.lock().unwrap() = Some(issued);
        settings.cert_file = tls_dir.join("tls.crt");
        settings.key_file = tls_dir.join("tls.key");
        // The directory watch must do the work; polling is only a slow fallback.
        settings.args.cert_poll_interval = Duration::from_secs(3600);
    })
    .await;
    let tls_dir = server.dir.path().join("tls");
    let body = fixture("bmh-create-minimal.json");
    let v1 = first.lock().unwrap().clone().unwrap();
    assert_eq!(served_cert(&server, &body).await, v1.der);

    // Steady load on keep-alive connections and on new connections.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let mut load = tokio::task::JoinSet::new();
    for fresh_connections in [false, true, false] {
        let (stop, sent, body, url) = (
            stop.clone(),
            sent.clone(),
            body.clone(),
            server.url(VALIDATE),
        );
        let mut builder = client_builder(&server.pki.ca_pem, None);
        if fresh_connections {
            builder = builder.pool_max_idle_per_host(0);
        }
        let client = builder.build().unwrap();
        load.spawn(async move {
            let mut failures = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                match post_with(
                    &client,
                    &format!("{url}?timeout=10s"),
                    "application/json",
                    body.clone(),
                )
                .await
                {
                    Ok(answer)
                        if answer.status == 200 && answer.json()["response"]["allowed"] == true => {
                    }
                    Ok(answer) => failures.push(format!("{}: {}", answer.status, answer.text)),
                    Err(err) => failures.push(format!("{err:?}")),
                }
                sent.fetch_add(1, Ordering::SeqCst);
            }
            failures
        });
    }

    // Rotation 1.
    let v2 = server.pki.serving();
    kubelet_publish(&tls_dir, "v2", &v2);
    eventually(
        "the second certificate is served",
        Duration::from_secs(20),
        || async { served_cert(&server, &body).await == v2.der },
    )
    .await;

    // A broken update (certificate and key do not match) is rejected and
    // the last good certificate stays in use.
    let v3 = server.pki.serving();
    let broken = Issued {
        key_pem: v2.key_pem.clone(),
        ..v3.clone()
    };
    kubelet_publish(&tls_dir, "broken", &broken);
    eventually(
        "the broken certificate is rejected",
        Duration::from_secs(20),
        || async {
            server
                .metrics_text()
                .contains(r#"certwatcher_read_certificate_errors_total{certificate="serving"} 1"#)
        },
    )
    .await;
    assert_eq!(served_cert(&server, &body).await, v2.der);

    // Rotation 2 (kernel watches on the old files are long gone by now).
    kubelet_publish(&tls_dir, "v3", &v3);
    eventually(
        "the third certificate is served",
        Duration::from_secs(20),
        || async { served_cert(&server, &body).await == v3.der },
    )
    .await;

    stop.store(true, Ordering::SeqCst);
    let mut failures = Vec::new();
    while let Some(result) = load.join_next().await {
        failures.extend(result.unwrap());
    }
    assert!(
        failures.is_empty(),
        "requests failed during rotation: {failures:?}"
    );
    assert!(sent.load(Ordering::SeqCst) > 0);
    let metrics = server.metrics_text();
    assert!(
        metrics.contains(r#"certwatcher_read_certificate_total{certificate="serving"} 4"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("metal3_dataimage_certificate_expiry_timestamp_seconds"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn mutual_tls_accepts_trusted_clients_and_refuses_others() {
    let client_pki = Pki::new("client-ca");
    let client_ca_pem = client_pki.ca_pem.clone();
    let server = start(move |dir, _, settings| {
        write(&dir.join("client-ca.crt"), &client_ca_pem);
        settings.args.client_ca_file = Some(dir.join("client-ca.crt"));
    })
    .await;
    let body = fixture("bmh-create-minimal.json");
    let url = format!("{}?timeout=10s", server.url(VALIDATE));

    let apiserver = client_pki.client("kube-apiserver");
    let trusted = client(&server.pki.ca_pem, Some(&apiserver));
    let answer = post_with(&trusted, &url, "application/json", body.clone())
        .await
        .unwrap();
    assert_eq!(answer.response()["allowed"], true);

    let anonymous = client(&server.pki.ca_pem, None);
    assert!(
        post_with(&anonymous, &url, "application/json", body.clone())
            .await
            .is_err()
    );

    let stranger = Pki::new("other-ca").client("kube-apiserver");
    let untrusted = client(&server.pki.ca_pem, Some(&stranger));
    assert!(
        post_with(&untrusted, &url, "application/json", body.clone())
            .await
            .is_err()
    );
    server.stop().await;
}

#[tokio::test]
async fn http2_is_off_by_default_even_when_the_client_offers_it() {
    let server = start(|_, _, _| {}).await;
    let body = fixture("bmh-create-minimal.json");
    // reqwest offers h2 and http/1.1, like the API server.
    let answer = post(&server.client(), &server.url(VALIDATE), &body).await;
    assert_eq!(answer.version, reqwest::Version::HTTP_11);
    assert_eq!(answer.response()["uid"], uid_of(&body).as_str());
    server.stop().await;
}

#[tokio::test]
async fn http2_when_enabled_serves_concurrent_streams() {
    let server = start(|_, _, settings| settings.args.enable_http2 = true).await;
    let client = server.client();
    let mut tasks = tokio::task::JoinSet::new();
    for name in [
        "bmh-create-minimal.json",
        "bmh-create-dataimage-full.json",
        "bmh-delete.json",
        "bmh-update-replace.json",
    ] {
        for _ in 0..8 {
            let (client, url, body) = (client.clone(), server.url(VALIDATE), fixture(name));
            tasks.spawn(async move { (uid_of(&body), post(&client, &url, &body).await) });
        }
    }
    while let Some(result) = tasks.join_next().await {
        let (uid, answer) = result.unwrap();
        assert_eq!(answer.version, reqwest::Version::HTTP_2);
        assert_eq!(answer.response()["uid"], uid.as_str());
    }
    server.stop().await;
}

#[tokio::test]
async fn tls13_minimum_refuses_tls12_clients() {
    let server = start(|_, _, settings| settings.args.tls_min_version = TlsMinVersion::Tls13).await;
    let body = fixture("bmh-create-minimal.json");
    let url = format!("{}?timeout=10s", server.url(VALIDATE));
    let tls12 = client_builder(&server.pki.ca_pem, None)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert!(
        post_with(&tls12, &url, "application/json", body.clone())
            .await
            .is_err()
    );
    let answer = post_with(&server.client(), &url, "application/json", body)
        .await
        .unwrap();
    assert_eq!(answer.response()["allowed"], true);
    server.stop().await;
}

#[tokio::test]
async fn tls12_with_a_restricted_cipher_suite_list_still_serves() {
    let server = start(|_, _, settings| {
        settings.args.tls_cipher_suites = vec!["TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256".into()];
    })
    .await;
    let body = fixture("bmh-create-minimal.json");
    let tls12 = client_builder(&server.pki.ca_pem, None)
        .max_tls_version(reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    let answer = post(&tls12, &server.url(VALIDATE), &body).await;
    assert_eq!(answer.response()["allowed"], true);
    server.stop().await;
}

/// A raw TLS connection (HTTP/1.1 by ALPN) for byte-level tests.
async fn raw_connection(
    server: &TestServer,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(
            rustls_pki_types::CertificateDer::from_pem_slice(server.pki.ca_pem.as_bytes()).unwrap(),
        )
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    connector.connect(name, tcp).await.unwrap()
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_until_closed(
    stream: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut received = Vec::new();
    let reading = async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(20), reading)
        .await
        .expect("the server never closed the connection");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn stalled_headers_and_idle_keep_alive_connections_are_closed() {
    use tokio::io::AsyncWriteExt as _;
    let server = start(|_, _, settings| {
        settings.args.header_read_timeout = Duration::from_millis(300);
        settings.args.idle_timeout = Duration::from_millis(600);
    })
    .await;

    // Half a request line and headers, then nothing.
    let mut stalled = raw_connection(&server).await;
    assert_eq!(
        stalled.get_ref().1.alpn_protocol(),
        Some(b"http/1.1".as_slice())
    );
    stalled
        .write_all(format!("POST {VALIDATE} HTTP/1.1\r\nHost: localhost\r\n").as_bytes())
        .await
        .unwrap();
    stalled.flush().await.unwrap();
    assert_eq!(read_until_closed(&mut stalled).await, "");

    // A complete request is answered, then the idle connection is closed.
    let body = fixture("bmh-create-minimal.json");
    let mut idle = raw_connection(&server).await;
    let request = format!(
        "POST {VALIDATE}?timeout=10s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    idle.write_all(request.as_bytes()).await.unwrap();
    idle.flush().await.unwrap();
    let received = read_until_closed(&mut idle).await;
    assert!(received.starts_with("HTTP/1.1 200 OK"), "{received}");
    assert!(received.contains(&uid_of(&body)), "{received}");
    server.stop().await;
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_answered_with_408() {
    use tokio::io::AsyncWriteExt as _;
    let server = start(|_, _, _| {}).await;
    let mut stream = raw_connection(&server).await;
    let request = format!(
        "POST {VALIDATE}?timeout=1s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n{{\"kind\":"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let received = read_until_closed(&mut stream).await;
    assert!(received.starts_with("HTTP/1.1 408"), "{received}");
    server.stop().await;
}

#[tokio::test]
async fn client_ca_is_reloaded() {
    let first_pki = Pki::new("client-ca-1");
    let first_pem = first_pki.ca_pem.clone();
    let server = start(move |dir, _, settings| {
        write(&dir.join("client-ca.crt"), &first_pem);
        settings.args.client_ca_file = Some(dir.join("client-ca.crt"));
    })
    .await;
    let body = fixture("bmh-create-minimal.json");
    let url = format!("{}?timeout=10s", server.url(VALIDATE));
    let second_pki = Pki::new("client-ca-2");
    let second_identity = second_pki.client("kube-apiserver");
    let fresh = || {
        client_builder(&server.pki.ca_pem, Some(&second_identity))
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    assert!(
        post_with(&fresh(), &url, "application/json", body.clone())
            .await
            .is_err()
    );
    // Replace the file (write to a temp file, then rename, as tools do).
    let tmp = server.dir.path().join("client-ca.crt.tmp");
    write(&tmp, &second_pki.ca_pem);
    std::fs::rename(&tmp, server.dir.path().join("client-ca.crt")).unwrap();
    eventually(
        "the new client CA is trusted",
        Duration::from_secs(20),
        || async {
            post_with(&fresh(), &url, "application/json", body.clone())
                .await
                .is_ok()
        },
    )
    .await;
    let old_identity = first_pki.client("kube-apiserver");
    let old = client_builder(&server.pki.ca_pem, Some(&old_identity))
        .build()
        .unwrap();
    assert!(
        post_with(&old, &url, "application/json", body.clone())
            .await
            .is_err()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_completes_the_handshake_is_dropped() {
    use tokio::io::AsyncReadExt as _;
    let server =
        start(|_, _, settings| settings.args.handshake_timeout = Duration::from_millis(300)).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(20), tcp.read(&mut buffer))
        .await
        .expect("the server kept a silent connection open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // The server still serves others.
    let body = fixture("bmh-create-minimal.json");
    assert_eq!(
        post(&server.client(), &server.url(VALIDATE), &body)
            .await
            .response()["allowed"],
        true
    );
    server.stop().await;
}
