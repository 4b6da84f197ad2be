//! Image staging against test image servers on 127.0.0.1 (HTTPS with a CA
//! generated here, basic auth, redirects, broken transfers).

use crate::support::staging as support;

use axum::body::Bytes;
use metal3_dataimage::model::SecretCredentials;
use metal3_dataimage::staging::{StageError, Stager};
use reqwest::StatusCode;
use support::*;

const MIB: u64 = 1024 * 1024;
const IMAGE_LEN: usize = 96 * 1024;

async fn good_server(pki: &Pki) -> TestServer {
    TestServer::start(Some(pki.good.clone())).await
}

fn protected(body: &[u8]) -> Reply {
    Reply::Protected {
        user: USER.into(),
        password: PASSWORD.into(),
        body: Bytes::copy_from_slice(body),
    }
}

#[tokio::test]
async fn good_credentials_stage_and_the_image_server_serves_it() {
    let pki = Pki::new();
    let origin = good_server(&pki).await;
    let image = iso_image(IMAGE_LEN, false, 1);
    origin.set("/data.iso", protected(&image));
    let harness = StagingHarness::start(Some(&pki.ca_file), MIB).await;

    let staged = harness
        .stager
        .stage(request(
            "ns/host-a",
            &origin.url("127.0.0.1", "/data.iso"),
            Some(credentials()),
            false,
        ))
        .await
        .unwrap();

    assert_eq!(staged.digest, format!("sha256:{}", sha256_hex(&image)));
    assert_eq!(staged.size, image.len() as u64);
    assert!(!staged.bootable);
    assert_eq!(staged.status_note(), None);
    let prefix = format!("http://localhost:{}/images/", harness.image_server.port());
    assert!(
        staged.ironic_url.starts_with(&prefix),
        "{}",
        staged.ironic_url
    );
    assert!(
        staged
            .ironic_url
            .ends_with(&format!("/{}.iso", sha256_hex(&image)))
    );
    let token = staged.ironic_url[prefix.len()..]
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert_eq!(token.len(), 64);
    assert_eq!(
        origin.seen("/data.iso")[0].authorization.as_deref(),
        Some(basic_header(USER, PASSWORD).as_str())
    );
    assert!(harness.stager.staged("ns/host-a").is_some());

    let client = http();
    // Whole file.
    let response = client.get(&staged.ironic_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-length"],
        image.len().to_string().as_str()
    );
    assert_eq!(response.headers()["accept-ranges"], "bytes");
    assert_eq!(response.bytes().await.unwrap().as_ref(), image.as_slice());
    // HEAD: length, no body.
    let response = client.head(&staged.ironic_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-length"],
        image.len().to_string().as_str()
    );
    assert!(response.bytes().await.unwrap().is_empty());
    // One range: the CD001 signature.
    let response = client
        .get(&staged.ironic_url)
        .header("range", "bytes=32768-32773")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes 32768-32773/{}", image.len()).as_str()
    );
    assert_eq!(response.headers()["content-length"], "6");
    assert_eq!(response.bytes().await.unwrap().as_ref(), b"\x01CD001");
    // Suffix range.
    let response = client
        .get(&staged.ironic_url)
        .header("range", "bytes=-10")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        response.bytes().await.unwrap().as_ref(),
        &image[image.len() - 10..]
    );
    // HEAD with a range.
    let response = client
        .head(&staged.ironic_url)
        .header("range", "bytes=0-99")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(response.headers()["content-length"], "100");
    // Unsatisfiable.
    let response = client
        .get(&staged.ironic_url)
        .header("range", format!("bytes={}-", image.len()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(
        response.headers()["content-range"],
        format!("bytes */{}", image.len()).as_str()
    );

    // Nothing else answers.
    let mut wrong_token = token.clone().into_bytes();
    wrong_token[0] = if wrong_token[0] == b'a' { b'b' } else { b'a' };
    let wrong_token = String::from_utf8(wrong_token).unwrap();
    let base = format!("http://{}", harness.image_server);
    let digest_hex = sha256_hex(&image);
    for path in [
        format!("/images/{wrong_token}/{digest_hex}.iso"),
        format!("/images/{token}/{}.iso", "0".repeat(64)),
        format!("/images/{token}/{digest_hex}"),
        format!("/images/{token}"),
        format!("/images/{}/{digest_hex}.iso", &token[..63]),
        "/images/".to_string(),
        "/".to_string(),
        format!("/{digest_hex}.iso"),
        format!("/sha256/{digest_hex}.iso"),
    ] {
        let response = client.get(format!("{base}{path}")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(response.bytes().await.unwrap().is_empty(), "{path}");
    }
    let response = client.post(&staged.ironic_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let response = client.delete(&staged.ironic_url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn el_torito_boot_record_is_noted() {
    let pki = Pki::new();
    let origin = good_server(&pki).await;
    origin.set("/boot.iso", protected(&iso_image(IMAGE_LEN, true, 2)));
    let harness = StagingHarness::start(Some(&pki.ca_file), MIB).await;
    let staged = harness
        .stager
        .stage(request(
            "ns/h",
            &origin.url("127.0.0.1", "/boot.iso"),
            Some(credentials()),
            false,
        ))
        .await
        .unwrap();
    assert!(staged.bootable);
    assert!(staged.status_note().unwrap().contains("El Torito"));
}

#[tokio::test]
async fn bad_credentials_are_unauthorized_with_a_clear_message() {
    let pki = Pki::new();
    let origin = good_server(&pki).await;
    origin.set("/data.iso", protected(&iso_image(IMAGE_LEN, false, 3)));
    let harness = StagingHarness::start(Some(&pki.ca_file), MIB).await;
    let wrong = SecretCredentials {
        username: USER.into(),
        password: "not-the-password".into(),
    };
    let err = harness
        .stager
        .stage(request(
            "ns/h",
            &origin.url("127.0.0.1", "/data.iso"),
            Some(wrong),
            false,
        ))
        .await
        .unwrap_err();
    assert_eq!(err, StageError::Unauthorized(401));
    assert_eq!(
        err.to_string(),
        "the image's server refused the credentials from the Secret (HTTP 401)"
    );
    assert!(harness.cache_files().is_empty());
    assert!(harness.stager.staged("ns/h").is_none());

    // No credentials at all: say which field to set.
    let err = harness
        .stager
        .stage(request(
            "ns/h",
            &origin.url("127.0.0.1", "/data.iso"),
            None,
            false,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StageError::Download(_)), "{err:?}");
    assert!(
        err.to_string().contains("401") && err.to_string().contains("credentialsName"),
        "{err}"
    );
}

#[tokio::test]
async fn redirect_to_another_host_does_not_carry_the_credentials() {
    let pki = Pki::new();
    let first = good_server(&pki).await;
    let second = good_server(&pki).await;
    let image = iso_image(IMAGE_LEN, false, 4);
    // 127.0.0.1 → localhost: a different host for credentials.
    first.set(
        "/data.iso",
        Reply::Redirect(second.url("localhost", "/mirror/data.iso")),
    );
    second.set("/mirror/data.iso", Reply::File(Bytes::from(image.clone())));
    let harness = StagingHarness::start(Some(&pki.ca_file), MIB).await;

    let staged = harness
        .stager
        .stage(request(
            "ns/h",
            &first.url("127.0.0.1", "/data.iso"),
            Some(credentials()),
            false,
        ))
        .await
        .unwrap();
    assert_eq!(staged.digest, format!("sha256:{}", sha256_hex(&image)));
    assert_eq!(
        first.seen("/data.iso")[0].authorization.as_deref(),
        Some(basic_header(USER, PASSWORD).as_str())
    );
    let at_second = second.seen("/mirror/data.iso");
    assert_eq!(at_second.len(), 1);
    assert_eq!(
        at_second[0].authorization, None,
        "credentials leaked to another host"
    );

    // The other host wants credentials: it does not get them, and says so.
    second.set("/mirror/data.iso", protected(&image));
    let err = harness
        .stager
        .stage(request(
            "ns/h2",
            &first.url("127.0.0.1", "/data.iso"),
            Some(credentials()),
            true,
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("not sent to a host other than"),
        "{err}"
    );
    assert!(
        second
            .seen("/mirror/data.iso")
            .iter()
            .all(|s| s.authorization.is_none())
    );
}

#[tokio::test]
async fn redirect_on_the_same_origin_keeps_the_credentials() {
    let pki = Pki::new();
    let origin = good_server(&pki).await;
    let image = iso_image(IMAGE_LEN, false, 5);
    origin.set("/latest.iso", Reply::Redirect("/v2/data.iso".into()));
    origin.set("/v2/data.iso", protected(&image));
    let harness = StagingHarness::start(Some(&pki.ca_file), MIB).await;
    let staged = harness
        .stager
        .stage(request(
            "ns/h",
            &origin.url("127.0.0.1", "/latest.iso"),
            Some(credentials()),
            false,
        ))
        .await
        .unwrap();
    assert_eq!(staged.size, image.len() as u64);
}

#[tokio::test]
async fn redirects_to_other_schemes_or_down_to_http_are_refused() {
    let pki = Pki::new();
    let origin = good_server(&pki).await;
    let plain = TestServer::start(None).await;
    plain.set(
        "/data.iso",
        Reply::File(Bytes::from(iso_image(IMAGE_LEN, false, 6))),
    );
    origin.set("/file.iso", Reply::Redirect("file:///etc/passwd".into()));
    origin.set(
        "/plain.iso",
        Reply::Redirect(plain.url("127.0.0.1", "/data.iso")),
    );
    origin.set("/loop.iso", Reply::Redirect("/loop.iso".into()));
    let harness = StagingHarness::start(Some(&pki.ca_file), MIB).await;

    let err = harness
        .stager
        .stage(request(
            "ns/h",
            &origin.url("127.0.0.1", "/file.iso"),
            None,
            false,
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("unsupported scheme \"file\""),
        "{err}"
    );
    let err = harness
        .stager
        .stage(request(
            "ns/h",
            &origin.url("127.0.0.1", "/plain.iso"),
            None,
            false,
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("https to plain http"), "{err}");
    assert_eq!(plain.gets("/data.iso"), 0);
    let err = harness
        .stager
        .stage(request(
            "ns/h",
            &origin.url("127.0.0.1", "/loop.iso"),
            None,
            false,
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("redirects"), "{err}");
    assert_eq!(
        origin.gets("/loop.iso"),
        metal3_dataimage::staging::MAX_REDIRECTS + 1
    );
}

#[tokio::test]
async fn self_signed_certificate_needs_disable_certificate_verification() {
    let pki = Pki::new();
    let origin = TestServer::start(Some(pki.self_signed.clone())).await;
    origin.set("/data.iso", protected(&iso_image(IMAGE_LEN, false, 7)));
    let harness = StagingHarness::start(Some(&pki.ca_file), MIB).await;
    let url = origin.url("127.0.0.1", "/data.iso");

    let err = harness
        .stager
        .stage(request("ns/h", &url, Some(credentials()), false))
        .await
        .unwrap_err();
    let StageError::Tls(message) = &err else {
        panic!("expected a TLS error, got {err:?}")
    };
    assert!(
        message.contains("certificate") && message.contains("disableCertificateVerification"),
        "{message}"
    );
    // Nothing was sent: the handshake failed first.
    assert!(origin.seen("/data.iso").is_empty());

    let staged = harness
        .stager
        .stage(request("ns/h", &url, Some(credentials()), true))
        .await
        .unwrap();
    assert_eq!(staged.size, IMAGE_LEN as u64);
}

#[tokio::test]
async fn expired_certificate_needs_disable_certificate_verification() {
    let pki = Pki::new();
    let origin = TestServer::start(Some(pki.expired.clone())).await;
    origin.set("/data.iso", protected(&iso_image(IMAGE_LEN, false, 8)));
    let harness = StagingHarness::start(Some(&pki.ca_file), MIB).await;
    let url = origin.url("localhost", "/data.iso");

    let err = harness
        .stager
        .stage(request("ns/h", &url, Some(credentials()), false))
        .await
        .unwrap_err();
    let StageError::Tls(message) = &err else {
        panic!("expected a TLS error, got {err:?}")
    };
    assert!(message.to_lowercase().contains("expired"), "{message}");

    harness
        .stager
        .stage(request("ns/h", &url, Some(credentials()), true))
        .await
        .unwrap();
}

#[tokio::test]
async fn certificate_from_an_unknown_ca_fails_without_the_ca_file() {
    let pki = Pki::new();
    let origin = good_server(&pki).await;
    origin.set("/data.iso", protected(&iso_image(IMAGE_LEN, false, 9)));
    let harness = StagingHarness::start(None, MIB).await;
    let err = harness
        .stager
        .stage(request(
            "ns/h",
            &origin.url("127.0.0.1", "/data.iso"),
            Some(credentials()),
            false,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StageError::Tls(_)), "{err:?}");
}

#[tokio::test]
async fn a_file_that_is_not_an_iso_is_refused() {
    let pki = Pki::new();
    let origin = good_server(&pki).await;
    let mut page = b"<!DOCTYPE html><html><body>Please log in</body></html>".to_vec();
    page.resize(IMAGE_LEN, b' ');
    origin.set("/login", Reply::File(Bytes::from(page)));
    origin.set("/tiny.iso", Reply::File(Bytes::from_static(b"CD001")));
    let harness = StagingHarness::start(Some(&pki.ca_file), MIB).await;

    let err = harness
        .stager
        .stage(request(
            "ns/h",
            &origin.url("127.0.0.1", "/login"),
            None,
            false,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StageError::NotIso(_)), "{err:?}");
    assert!(
        err.to_string().contains("CD001") && err.to_string().contains("HTML"),
        "{err}"
    );
    let err = harness
        .stager
        .stage(request(
            "ns/h",
            &origin.url("127.0.0.1", "/tiny.iso"),
            None,
            false,
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("5 bytes"), "{err}");
    assert!(harness.cache_files().is_empty());
}

#[tokio::test]
async fn a_file_over_the_size_cap_is_refused() {
    let pki = Pki::new();
    let origin = good_server(&pki).await;
    let image = iso_image(200_000, false, 10);
    origin.set("/announced.iso", Reply::File(Bytes::from(image.clone())));
    origin.set("/chunked.iso", Reply::Unsized(Bytes::from(image.clone())));
    let harness = StagingHarness::start(Some(&pki.ca_file), 100_000).await;

    for path in ["/announced.iso", "/chunked.iso"] {
        let err = harness
            .stager
            .stage(request("ns/h", &origin.url("127.0.0.1", path), None, false))
            .await
            .unwrap_err();
        assert_eq!(err, StageError::TooLarge { limit: 100_000 }, "{path}");
        assert_eq!(
            err.to_string(),
            "image is larger than the 100000-byte limit"
        );
        assert!(
            harness.cache_files().is_empty(),
            "{path}: {:?}",
            harness.cache_files()
        );
    }
    // Exactly at the cap is fine.
    let exact = iso_image(100_000, false, 11);
    origin.set("/exact.iso", Reply::Unsized(Bytes::from(exact)));
    harness
        .stager
        .stage(request(
            "ns/h",
            &origin.url("127.0.0.1", "/exact.iso"),
            None,
            false,
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_connection_dropped_midway_leaves_no_partial_image() {
    let pki = Pki::new();
    let image = iso_image(IMAGE_LEN, false, 12);
    let broken = DropServer::start(
        Some(pki.good.clone()),
        image.len(),
        image[..IMAGE_LEN / 2].to_vec(),
    )
    .await;
    let harness = StagingHarness::start(Some(&pki.ca_file), MIB).await;

    let err = harness
        .stager
        .stage(request(
            "ns/h",
            &broken.url("127.0.0.1", "/data.iso"),
            Some(credentials()),
            false,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StageError::Download(_)), "{err:?}");
    assert!(err.to_string().contains("connection lost"), "{err}");
    assert_eq!(broken.connections(), 1);
    assert!(
        harness.cache_files().is_empty(),
        "{:?}",
        harness.cache_files()
    );
    assert!(harness.stager.staged("ns/h").is_none());

    // A failure is not remembered: once the server recovers, it works.
    let origin = good_server(&pki).await;
    origin.set("/data.iso", Reply::File(Bytes::from(image.clone())));
    let url = origin.url("127.0.0.1", "/data.iso");
    let staged = harness
        .stager
        .stage(request("ns/h", &url, Some(credentials()), false))
        .await
        .unwrap();
    assert_eq!(staged.digest, format!("sha256:{}", sha256_hex(&image)));
    assert_eq!(harness.cache_files().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_hosts_sharing_a_url_download_it_once() {
    let pki = Pki::new();
    let origin = good_server(&pki).await;
    let image = iso_image(512 * 1024, false, 13);
    origin.set("/shared.iso", protected(&image));
    let harness = StagingHarness::start(Some(&pki.ca_file), MIB).await;
    let url = origin.url("127.0.0.1", "/shared.iso");

    let stages = (0..8).map(|i| {
        harness.stager.stage(request(
            &format!("ns/host-{i}"),
            &url,
            Some(credentials()),
            false,
        ))
    });
    let results = futures::future::join_all(stages).await;
    let staged: Vec<_> = results.into_iter().map(Result::unwrap).collect();
    assert_eq!(origin.gets("/shared.iso"), 1, "one download for all hosts");
    assert!(staged.iter().all(|s| s.digest == staged[0].digest));
    let mut urls: Vec<_> = staged.iter().map(|s| s.ironic_url.clone()).collect();
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), 8, "each host has its own URL");
    assert_eq!(harness.cache_files().len(), 1);
    for s in &staged {
        let body = http()
            .get(&s.ironic_url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(body.len(), image.len());
    }
    // A later host with the same request reuses the finished download.
    harness
        .stager
        .stage(request("ns/late", &url, Some(credentials()), false))
        .await
        .unwrap();
    assert_eq!(origin.gets("/shared.iso"), 1);
}

#[tokio::test]
async fn changes_to_url_secret_or_tls_setting_fetch_again() {
    let pki = Pki::new();
    let origin = good_server(&pki).await;
    let image = iso_image(IMAGE_LEN, false, 14);
    origin.set("/data.iso", protected(&image));
    let harness = StagingHarness::start(Some(&pki.ca_file), MIB).await;
    let url = origin.url("127.0.0.1", "/data.iso");

    let first = harness
        .stager
        .stage(request("ns/h", &url, Some(credentials()), false))
        .await
        .unwrap();
    let again = harness
        .stager
        .stage(request("ns/h", &url, Some(credentials()), false))
        .await
        .unwrap();
    assert_eq!(first, again, "nothing changed: same URL, no download");
    assert_eq!(origin.gets("/data.iso"), 1);

    // The Secret's password changes (and the server's with it).
    let rotated = SecretCredentials {
        username: USER.into(),
        password: "rotated-password".into(),
    };
    origin.set(
        "/data.iso",
        Reply::Protected {
            user: USER.into(),
            password: rotated.password.clone(),
            body: Bytes::from(image.clone()),
        },
    );
    let after_rotation = harness
        .stager
        .stage(request("ns/h", &url, Some(rotated.clone()), false))
        .await
        .unwrap();
    assert_eq!(origin.gets("/data.iso"), 2);
    assert_eq!(after_rotation.digest, first.digest);
    assert_eq!(
        after_rotation.ironic_url, first.ironic_url,
        "same content keeps the host's URL"
    );

    // disableCertificateVerification flips.
    harness
        .stager
        .stage(request("ns/h", &url, Some(rotated.clone()), true))
        .await
        .unwrap();
    assert_eq!(origin.gets("/data.iso"), 3);

    // The URL changes to other content: new digest, new URL, old one dead.
    let other = iso_image(IMAGE_LEN, false, 15);
    origin.set(
        "/v2.iso",
        Reply::Protected {
            user: USER.into(),
            password: rotated.password.clone(),
            body: Bytes::from(other.clone()),
        },
    );
    let moved = harness
        .stager
        .stage(request(
            "ns/h",
            &origin.url("127.0.0.1", "/v2.iso"),
            Some(rotated),
            true,
        ))
        .await
        .unwrap();
    assert_eq!(moved.digest, format!("sha256:{}", sha256_hex(&other)));
    assert_ne!(moved.ironic_url, first.ironic_url);
    assert_eq!(
        http().get(&first.ironic_url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        http().get(&moved.ironic_url).send().await.unwrap().status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn images_no_host_references_are_evicted() {
    let pki = Pki::new();
    let origin = good_server(&pki).await;
    let (one, two) = (
        iso_image(IMAGE_LEN, false, 16),
        iso_image(IMAGE_LEN, false, 17),
    );
    origin.set("/one.iso", Reply::File(Bytes::from(one.clone())));
    origin.set("/two.iso", Reply::File(Bytes::from(two.clone())));
    let harness = StagingHarness::start(Some(&pki.ca_file), MIB).await;
    let blob = |data: &[u8]| {
        harness
            .cache
            .path()
            .join("sha256")
            .join(format!("{}.iso", sha256_hex(data)))
    };
    let (url_one, url_two) = (
        origin.url("127.0.0.1", "/one.iso"),
        origin.url("127.0.0.1", "/two.iso"),
    );

    harness
        .stager
        .stage(request("ns/a", &url_one, None, false))
        .await
        .unwrap();
    assert!(blob(&one).is_file());
    let a = harness
        .stager
        .stage(request("ns/a", &url_two, None, false))
        .await
        .unwrap();
    assert!(!blob(&one).exists(), "old image of host a evicted");
    assert!(blob(&two).is_file());
    let b = harness
        .stager
        .stage(request("ns/b", &url_two, None, false))
        .await
        .unwrap();

    harness.stager.release("ns/a");
    assert_eq!(
        http().get(&a.ironic_url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    assert!(blob(&two).is_file(), "still used by host b");
    assert_eq!(
        http().get(&b.ironic_url).send().await.unwrap().status(),
        StatusCode::OK
    );

    harness.stager.release("ns/b");
    assert!(!blob(&two).exists());
    assert!(harness.cache_files().is_empty());
    assert_eq!(
        http().get(&b.ironic_url).send().await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    harness.stager.release("ns/unknown");
}

#[tokio::test]
async fn a_restart_clears_incomplete_downloads_and_stale_images() {
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cache.path().join("tmp")).unwrap();
    std::fs::create_dir_all(cache.path().join("sha256")).unwrap();
    let partial = cache.path().join("tmp").join("abc.part");
    std::fs::write(&partial, b"half an image").unwrap();
    let stale = cache
        .path()
        .join("sha256")
        .join(format!("{}.iso", "ab".repeat(32)));
    std::fs::write(&stale, b"old image").unwrap();
    let unrelated = cache.path().join("sha256").join("README");
    std::fs::write(&unrelated, b"not ours").unwrap();

    Stager::new(config(cache.path(), None, MIB, "http://127.0.0.1:9445/")).unwrap();
    assert!(!partial.exists(), "incomplete download removed at start-up");
    assert!(
        !stale.exists(),
        "images of a previous run removed at start-up"
    );
    assert!(unrelated.exists(), "files that are not ours are left alone");
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let harness = StagingHarness::start(None, MIB).await;
    let err = harness
        .stager
        .stage(request(
            "ns/h",
            &format!("https://{USER}:{PASSWORD}@127.0.0.1:1/x.iso"),
            None,
            false,
        ))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("credentialsName"), "{err}");
    assert!(!err.to_string().contains(PASSWORD));
    let err = harness
        .stager
        .stage(request("ns/h", "ftp://127.0.0.1/x.iso", None, false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ftp"), "{err}");
    let err = harness
        .stager
        .stage(request("ns/h", "", None, false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("invalid image URL"), "{err}");
    // Nobody listens on port 1.
    let err = harness
        .stager
        .stage(request("ns/h", "http://127.0.0.1:1/x.iso", None, false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");

    let cache = tempfile::tempdir().unwrap();
    let missing_ca = cache.path().join("missing-ca.pem");
    let err = Stager::new(config(
        cache.path(),
        Some(&missing_ca),
        MIB,
        "http://127.0.0.1:9445/",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("missing-ca.pem"), "{err}");
    let not_pem = cache.path().join("not.pem");
    std::fs::write(&not_pem, b"hello").unwrap();
    let err = Stager::new(config(
        cache.path(),
        Some(&not_pem),
        MIB,
        "http://127.0.0.1:9445/",
    ))
    .unwrap_err();
    assert!(err.to_string().contains("not.pem"), "{err}");
    let err = Stager::new(config(cache.path(), None, MIB, "ftp://127.0.0.1/")).unwrap_err();
    assert!(err.to_string().contains("http or https"), "{err}");
}

#[tokio::test]
async fn a_stalled_transfer_fails_after_the_read_timeout() {
    let pki = Pki::new();
    let image = iso_image(IMAGE_LEN, false, 18);
    let stalled =
        DropServer::start_stalling(Some(pki.good.clone()), image.len(), image[..1000].to_vec())
            .await;
    let harness = StagingHarness::start_with(Some(&pki.ca_file), MIB, None, |config| {
        config.read_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let err = harness
        .stager
        .stage(request(
            "ns/h",
            &stalled.url("127.0.0.1", "/data.iso"),
            None,
            false,
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, StageError::Download(_)), "{err:?}");
    assert!(
        err.to_string()
            .contains("stalled (read timeout) after 1000 bytes"),
        "{err}"
    );
    assert!(harness.cache_files().is_empty());
}

#[tokio::test]
async fn the_image_server_speaks_https_with_the_configured_certificate() {
    let pki = Pki::new();
    let origin = good_server(&pki).await;
    let image = iso_image(IMAGE_LEN, false, 19);
    origin.set("/data.iso", protected(&image));
    let tls = server_tls(&pki.good_cert_file, &pki.good_key_file);
    let harness = StagingHarness::start_with(Some(&pki.ca_file), MIB, Some(tls), |_| {}).await;
    let staged = harness
        .stager
        .stage(request(
            "ns/h",
            &origin.url("127.0.0.1", "/data.iso"),
            Some(credentials()),
            false,
        ))
        .await
        .unwrap();
    assert!(
        staged.ironic_url.starts_with("https://localhost:"),
        "{}",
        staged.ironic_url
    );

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&pki.ca_file).unwrap()).unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .no_proxy()
        .build()
        .unwrap();
    let head = client.head(&staged.ironic_url).send().await.unwrap();
    assert_eq!(head.status(), StatusCode::OK);
    assert_eq!(
        head.headers()["content-length"],
        image.len().to_string().as_str()
    );
    let body = client
        .get(&staged.ironic_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.as_ref(), image.as_slice());
    // Plain HTTP on the TLS port gets nothing.
    let plain = staged.ironic_url.replacen("https://", "http://", 1);
    assert!(http().get(&plain).send().await.is_err());
}

#[tokio::test]
async fn a_cancelled_caller_does_not_abort_a_shared_download() {
    let image = iso_image(IMAGE_LEN, false, 20);
    let origin = GatedServer::start(image.clone(), 40_000).await;
    let harness = StagingHarness::start(None, MIB).await;
    let url = origin.url("/data.iso");

    // Host a's reconcile starts the download, then gives up (cancelled).
    let stager = harness.stager.clone();
    let first_url = url.clone();
    let first =
        tokio::spawn(async move { stager.stage(request("ns/a", &first_url, None, false)).await });
    origin.wait_for_requests(1).await;
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());

    // Host b asks for the same image: it joins the running download.
    let stager = harness.stager.clone();
    let second_url = url.clone();
    let second = tokio::spawn(async move {
        stager
            .stage(request("ns/b", &second_url, None, false))
            .await
    });
    origin.open();
    let staged = second.await.unwrap().unwrap();
    assert_eq!(staged.digest, format!("sha256:{}", sha256_hex(&image)));
    assert_eq!(origin.requests(), 1, "one download for both");
    assert!(
        harness.stager.staged("ns/a").is_none(),
        "the cancelled host got nothing"
    );

    // Nothing keeps the image alive once b lets go (no leaked pin).
    harness.stager.release("ns/b");
    assert!(
        harness.cache_files().is_empty(),
        "{:?}",
        harness.cache_files()
    );
}

/// The image server's TLS configuration as the flags give it.
fn server_tls(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> std::sync::Arc<rustls::ServerConfig> {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        staging: metal3_dataimage::staging::args::StagingArgs,
    }
    let cli = <Cli as clap::Parser>::try_parse_from([
        "x".as_ref(),
        "--image-server-tls-cert-file".as_ref(),
        cert.as_os_str(),
        "--image-server-tls-key-file".as_ref(),
        key.as_os_str(),
    ])
    .unwrap();
    cli.staging.server_tls().unwrap().unwrap()
}
