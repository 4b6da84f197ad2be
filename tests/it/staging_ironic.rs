//! End to end with the real Ironic (tests/ironic/up.sh, node index 4): an
//! image behind basic auth on HTTPS is staged, Ironic downloads it from the
//! staging URL and inserts it (seen in the Redfish emulator), and nothing
//! Ironic keeps about the node holds the credentials.

use crate::support::ironic as ironic_support;
use crate::support::staging as support;

use std::time::Duration;

use crate::support::observe::{CdromExt as _, Expect, Verdict};
use axum::body::Bytes;
use base64::Engine;
use ironic_support::{IronicEnv, ironic_raw, reset_node, retry_locked, wait_redfish_cd};
use metal3_dataimage::ironic::IronicApi as _;
use support::{PASSWORD, Pki, Reply, StagingHarness, TestServer, USER, credentials, iso, request};

/// This test's Ironic node (indexes 0-3: Ironic client tests, 5-7: reconciler).
const NODE_INDEX: usize = 4;

#[tokio::test]
async fn a_credentialed_image_is_staged_and_inserted_without_leaking_credentials() {
    let env = IronicEnv::load();
    let node = env.node(NODE_INDEX);
    let client = env.client().await;
    reset_node(&env, &env.url, &client, &node).await;

    let pki = Pki::new();
    let origin = TestServer::start(Some(pki.good.clone())).await;
    let image = iso::data_iso("STAGED_DATA", b"network config for this host\n");
    origin.set(
        "/private/data.iso",
        Reply::Protected {
            user: USER.into(),
            password: PASSWORD.into(),
            body: Bytes::from(image.clone()),
        },
    );
    let user_url = origin.url("127.0.0.1", "/private/data.iso");
    let harness = StagingHarness::start(Some(&pki.ca_file), 64 * 1024 * 1024).await;

    let staged = harness
        .stager
        .stage(request("e2e/host-4", &user_url, Some(credentials()), false))
        .await
        .unwrap();
    assert!(!staged.bootable);
    assert_eq!(staged.size, image.len() as u64);

    // Ironic gets the staging URL, never the user's.
    retry_locked(|| client.attach_cdrom(&node, &staged.ironic_url))
        .await
        .unwrap();
    let observation = client
        .wait_cdrom(&node, Expect::Inserted, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(observation.verdict, Verdict::Confirmed, "{observation:?}");
    let (inserted, republished) = wait_redfish_cd(&env, &env.url, &node, true, None).await;
    assert!(inserted, "the emulator shows no media");
    assert!(
        republished.contains(&format!("cdrom-{node}")),
        "{republished}"
    );
    // What the BMC got is our image, byte for byte (downloaded by Ironic
    // from the staging server, republished on its own web server).
    let served = ironic_support::http()
        .get(&republished)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(served.as_ref(), image.as_slice());
    // Only the stager talked to the origin.
    assert_eq!(origin.gets("/private/data.iso"), 1);

    // Ironic's data about the node: no credential anywhere.
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let (status, node_doc) = ironic_raw(
        &env.url,
        reqwest::Method::GET,
        &format!("/v1/nodes/{node}"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{node_doc}");
    let (status, history) = ironic_raw(
        &env.url,
        reqwest::Method::GET,
        &format!("/v1/nodes/{node}/history"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 200, "{history}");
    for (what, doc) in [
        ("node", node_doc.to_string()),
        ("driver_info", node_doc["driver_info"].to_string()),
        ("instance_info", node_doc["instance_info"].to_string()),
        (
            "driver_internal_info",
            node_doc["driver_internal_info"].to_string(),
        ),
        ("last_error", node_doc["last_error"].to_string()),
        ("history", history.to_string()),
    ] {
        assert!(
            !doc.contains(PASSWORD),
            "password in Ironic's {what}: {doc}"
        );
        assert!(
            !doc.contains(&encoded),
            "basic auth header in Ironic's {what}: {doc}"
        );
        assert!(
            !doc.contains(&user_url),
            "the user's URL reached Ironic's {what}: {doc}"
        );
    }
    assert!(
        node_doc["last_error"].is_null(),
        "{}",
        node_doc["last_error"]
    );
    // Nor in Ironic's logs.
    for log in ironic_logs() {
        let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap()).into_owned();
        assert!(
            !text.contains(PASSWORD) && !text.contains(&encoded),
            "credential in {}",
            log.display()
        );
    }

    retry_locked(|| client.detach_cdrom(&node)).await.unwrap();
    let observation = client
        .wait_cdrom(&node, Expect::Ejected, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(observation.verdict, Verdict::Confirmed, "{observation:?}");
    harness.stager.release("e2e/host-4");
    assert!(harness.cache_files().is_empty());
}

/// Ironic's log files (IRONIC_LOG_DIR from up.sh's environment).
fn ironic_logs() -> Vec<std::path::PathBuf> {
    let dir = std::env::var("IRONIC_LOG_DIR").ok().or_else(|| {
        let env_file =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ironic/.state/env");
        let text = std::fs::read_to_string(env_file).ok()?;
        ironic_support::parse_env_file(&text).remove("IRONIC_LOG_DIR")
    });
    let dir =
        dir.expect("IRONIC_LOG_DIR is not set: start the test Ironic with tests/ironic/up.sh");
    let logs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read Ironic's log directory {dir}: {e}"))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    assert!(!logs.is_empty(), "no Ironic logs in {dir}");
    logs
}
