//! The Ironic client against real Ironic releases + the sushy-tools
//! Redfish emulator (started by `tests/ironic/up.sh`; these tests fail with
//! instructions when it is not running). The important tests run against
//! both tested releases (`both_releases!`): the current one (Ironic 39,
//! IRONIC_URL) and the old one (Ironic 26.1, IRONIC_OLD_RELEASE_URL), whose
//! `GET vmedia` takes an exclusive node lock. Each test owns one node (fixed
//! index) so they run concurrently: this file uses noauth nodes 0-3 and
//! 8-11 (10 read-only) and old-release nodes 0-4; staging_ironic.rs uses 4
//! and reconcile_ironic.rs 5-7, so the binaries may also run at the same
//! time.

use crate::support::ironic as ironic_support;
use crate::support::iso;

use std::time::Duration;

use crate::support::observe::{CdromExt as _, Expect, Verdict, is_transient};
use ironic_support::{
    ImageServer, IronicEnv, Target, get_at_version, redfish_cd, reset_node, retry_locked,
    server_versions, set_maintenance, wait_redfish_cd,
};
use metal3_dataimage::ironic::{IronicApi, IronicClient, IronicConfig, IronicError, Microversion};

const WAIT: Duration = Duration::from_secs(60);

/// `both_releases!(test_fn, current_node, old_release_node)`: a module
/// `test_fn` with the tests `current` and `old_release`, each calling
/// `test_fn(&env, &target, node)` with its own node.
macro_rules! both_releases {
    ($test:ident, $current:expr, $old:expr) => {
        mod $test {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn current() {
                let env = super::IronicEnv::load();
                let target = env.current();
                let node = target.node($current);
                super::$test(&env, &target, node).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn old_release() {
                let env = super::IronicEnv::load();
                let target = env.old_release();
                let node = target.node($old);
                super::$test(&env, &target, node).await;
            }
        }
    };
}

fn our_image_name(node: &str) -> String {
    format!("cdrom-{node}.iso")
}

/// What Ironic republished for the BMC (it serves this copy, not ours).
async fn published_copy(env: &IronicEnv, node: &str) -> Vec<u8> {
    let url = format!("{}/redfish/{}", env.http_url, our_image_name(node));
    let resp = ironic_support::http()
        .get(&url)
        .send()
        .await
        .expect("GET published image");
    assert_eq!(resp.status().as_u16(), 200, "{url}");
    resp.bytes().await.expect("published image body").to_vec()
}

both_releases!(attach_is_confirmed_by_the_bmc_then_detach_ejects, 0, 0);
async fn attach_is_confirmed_by_the_bmc_then_detach_ejects(
    env: &IronicEnv,
    target: &Target,
    node: String,
) {
    let client = target.client().await;
    reset_node(env, &target.url, &client, &node).await;

    let image = iso::data_iso("METAL3DATA", b"hello from the attach test\n");
    assert!(iso::has_iso9660_signature(&image));
    let server = ImageServer::start(vec![("data.iso", image.clone())]).await;

    client
        .attach_cdrom(&node, &server.url("data.iso"))
        .await
        .expect("attach accepted");
    let obs = client
        .wait_cdrom(&node, Expect::Inserted, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
    let cd = obs.cd().expect("a CD slot");
    assert!(cd.inserted);
    assert!(
        cd.image
            .as_deref()
            .unwrap_or("")
            .ends_with(&our_image_name(&node)),
        "{cd:?}"
    );
    assert_eq!(obs.node.reservation, None);
    assert_eq!(obs.node.last_error, None);

    // The emulator's Redfish VirtualMedia resource agrees, and the image
    // the BMC got is byte for byte ours.
    let (inserted, bmc_image) = redfish_cd(env, &target.url, &node, None).await;
    assert!(inserted, "Redfish Cd not inserted");
    assert!(bmc_image.ends_with(&our_image_name(&node)), "{bmc_image}");
    assert_eq!(published_copy(env, &node).await, image);

    // Our own worker has finished (Confirmed needs no reservation): the
    // detach is not refused.
    client.detach_cdrom(&node).await.expect("detach accepted");
    let obs = client
        .wait_cdrom(&node, Expect::Ejected, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
    assert!(!obs.cd().expect("a CD slot").inserted);
    let (inserted, _) = wait_redfish_cd(env, &target.url, &node, false, None).await;
    assert!(!inserted, "Redfish Cd still inserted after detach");

    // Detaching an empty drive is fine too.
    client.detach_cdrom(&node).await.expect("second detach");
    let obs = client
        .wait_cdrom(&node, Expect::Ejected, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_change_replaces_the_image() {
    let env = IronicEnv::load();
    let node = env.node(1);
    let client = env.client().await;
    reset_node(&env, &env.url, &client, &node).await;
    let first = iso::data_iso("FIRST", b"first\n");
    let second = iso::IsoBuilder::new("SECOND")
        .file("README.TXT", b"second\n")
        .file("META.JSON", br#"{"v": 2}"#)
        .build();
    assert_ne!(first, second);
    let server = ImageServer::start(vec![
        ("first.iso", first.clone()),
        ("second.iso", second.clone()),
    ])
    .await;

    client
        .attach_cdrom(&node, &server.url("first.iso"))
        .await
        .expect("attach first");
    let obs = client
        .wait_cdrom(&node, Expect::Inserted, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
    assert_eq!(published_copy(&env, &node).await, first);

    // As the reconciler does: detach, confirm, attach the new URL.
    let second_url = server.url("second.iso");
    retry_locked(|| client.detach_cdrom(&node))
        .await
        .expect("detach");
    let obs = client
        .wait_cdrom(&node, Expect::Ejected, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
    retry_locked(|| client.attach_cdrom(&node, &second_url))
        .await
        .expect("attach second");
    let obs = client
        .wait_cdrom(&node, Expect::Inserted, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
    assert_eq!(published_copy(&env, &node).await, second);
    let (inserted, _) = redfish_cd(&env, &env.url, &node, None).await;
    assert!(inserted);

    reset_node(&env, &env.url, &client, &node).await;
}

both_releases!(missing_image_fails_asynchronously_in_last_error, 2, 1);
async fn missing_image_fails_asynchronously_in_last_error(
    env: &IronicEnv,
    target: &Target,
    node: String,
) {
    let client = target.client().await;
    reset_node(env, &target.url, &client, &node).await;
    let server = ImageServer::start(vec![]).await;
    let missing = server.url("missing.iso");

    // Accepted: 204 does not mean attached.
    client
        .attach_cdrom(&node, &missing)
        .await
        .expect("attach accepted");
    let obs = client
        .wait_cdrom(&node, Expect::Inserted, WAIT)
        .await
        .expect("observe");
    let Verdict::Failed(message) = &obs.verdict else {
        panic!("expected a failure, got {obs:?}");
    };
    assert!(
        message.starts_with("Could not attach device cdrom to node"),
        "{message}"
    );
    assert!(message.contains("404"), "{message}");
    assert!(message.contains(&missing), "{message}");
    assert_eq!(obs.node.last_error.as_deref(), Some(message.as_str()));
    assert!(!obs.cd().expect("CD slot").inserted);
    // The one judgement of "ours" agrees (the reconciler's decision uses it).
    assert_eq!(
        metal3_dataimage::ironic::ours::our_error(obs.node.last_error.as_deref(), None),
        Some(message.as_str())
    );

    // The next accepted call clears last_error.
    retry_locked(|| client.detach_cdrom(&node))
        .await
        .expect("detach");
    let obs = client
        .wait_cdrom(&node, Expect::Ejected, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
    assert_eq!(obs.node.last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_url_credentials_never_appear_in_errors() {
    let env = IronicEnv::load();
    let node = env.node(9);
    let client = env.client().await;
    reset_node(&env, &env.url, &client, &node).await;
    let server = ImageServer::start(vec![]).await;
    let with_creds = server
        .url("missing.iso")
        .replace("http://", "http://user:s3cret@");

    client
        .attach_cdrom(&node, &with_creds)
        .await
        .expect("attach accepted");
    let obs = client
        .wait_cdrom(&node, Expect::Inserted, WAIT)
        .await
        .expect("observe");
    let Verdict::Failed(message) = &obs.verdict else {
        panic!("expected a failure, got {obs:?}");
    };
    assert!(!message.contains("s3cret"), "{message}");
    assert!(!format!("{obs:?}").contains("s3cret"));
    reset_node(&env, &env.url, &client, &node).await;
}

both_releases!(locked_node_answers_locked_and_is_observed_as_pending, 3, 2);
async fn locked_node_answers_locked_and_is_observed_as_pending(
    env: &IronicEnv,
    target: &Target,
    node: String,
) {
    let client = target.client().await;
    reset_node(env, &target.url, &client, &node).await;
    let server = ImageServer::start(vec![("data.iso", iso::data_iso("LOCKED", b"x"))]).await;

    // Another conductor's operation holds the node lock.
    env.ctl(&["lock-node", target.instance, &node, "other-conductor"]);
    let attach = client.attach_cdrom(&node, &server.url("data.iso")).await;
    let detach = client.detach_cdrom(&node).await;
    let listed = client.list_vmedia(&node).await;
    let observed = client.observe_cdrom(&node, Expect::Inserted).await;
    let waited = client
        .wait_cdrom(&node, Expect::Inserted, Duration::from_secs(2))
        .await;
    env.ctl(&["unlock-node", target.instance, &node]);

    let err = attach.expect_err("attach on a locked node");
    assert!(
        matches!(&err, IronicError::Locked(m) if m.contains("is locked by host other-conductor")),
        "{err:?}"
    );
    assert!(is_transient(&err));
    assert!(matches!(detach, Err(IronicError::Locked(_))), "{detach:?}");
    if target.get_vmedia_while_locked() {
        // Ironic >= 35.0.0: GET vmedia takes a shared lock.
        assert!(
            listed
                .expect("list while locked")
                .iter()
                .any(|m| m.media_types.iter().any(|t| t == "CD"))
        );
    } else {
        // Before 35.0.0 it takes an exclusive one: 409, like the writes.
        assert!(
            matches!(&listed, Err(IronicError::Locked(m)) if m.contains("other-conductor")),
            "{listed:?}"
        );
    }
    // Either way the observation is "not yet", never an error.
    let observed = observed.expect("observe while locked");
    assert!(
        matches!(&observed.verdict, Verdict::Pending(r) if r.contains("other-conductor")),
        "{observed:?}"
    );
    let waited = waited.expect("wait while locked");
    assert!(matches!(&waited.verdict, Verdict::Pending(_)), "{waited:?}");

    client
        .attach_cdrom(&node, &server.url("data.iso"))
        .await
        .expect("attach after unlock");
    // Right after our own attach the node is reserved by our worker: on the
    // old release the GETs in between answer 409 and count as pending.
    let obs = client
        .wait_cdrom(&node, Expect::Inserted, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
    reset_node(env, &target.url, &client, &node).await;
}

both_releases!(
    maintenance_allows_vmedia_but_power_failure_is_unavailable,
    8,
    4
);
async fn maintenance_allows_vmedia_but_power_failure_is_unavailable(
    env: &IronicEnv,
    target: &Target,
    node: String,
) {
    let client = target.client().await;
    reset_node(env, &target.url, &client, &node).await;
    let server = ImageServer::start(vec![("data.iso", iso::data_iso("MAINT", b"x"))]).await;
    let data_url = server.url("data.iso");

    set_maintenance(&target.url, &node, true).await;
    assert!(client.get_node(&node).await.expect("node").maintenance);
    // Ironic does not gate vmedia on maintenance (the reconciler's job).
    client
        .attach_cdrom(&node, &server.url("data.iso"))
        .await
        .expect("attach in maintenance");
    let obs = client
        .wait_cdrom(&node, Expect::Inserted, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
    assert!(obs.node.maintenance);

    // Maintenance with a power failure fault: 503, transient.
    env.ctl(&["set-fault", target.instance, &node, "power failure"]);
    let attach = retry_locked(|| client.attach_cdrom(&node, &data_url)).await;
    let detach = retry_locked(|| client.detach_cdrom(&node)).await;
    env.ctl(&["clear-fault", target.instance, &node]);
    if target.instance == "oldrel" {
        // Ironic 26.1 does not check the fault: both calls are accepted
        // (Ironic 39 answers 503).
        attach.expect("Ironic 26.1 accepts the attach despite the fault");
        detach.expect("Ironic 26.1 accepts the detach despite the fault");
        reset_node(env, &target.url, &client, &node).await;
        return;
    }
    let err = attach.expect_err("attach with power failure");
    assert!(
        matches!(&err, IronicError::Unavailable(m) if m.contains("due to power failure state")),
        "{err:?}"
    );
    assert!(is_transient(&err));
    assert!(
        matches!(detach, Err(IronicError::Unavailable(_))),
        "{detach:?}"
    );

    reset_node(env, &target.url, &client, &node).await;
    assert!(!client.get_node(&node).await.expect("node").maintenance);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_ironic_is_refused_and_wrong_microversions_are_errors() {
    let env = IronicEnv::load();
    // A real Ironic pinned to release 26.0: API 1.91, no GET vmedia.
    env.ctl(&["start-api", "old"]);
    let err = IronicClient::connect(IronicConfig::new(env.old_url.parse().unwrap()))
        .await
        .expect_err("Ironic 26.0 must be refused");
    assert_eq!(
        err,
        IronicError::VersionTooOld {
            found: "1.91".into(),
            needed: "1.93".into()
        }
    );
    assert!(err.to_string().contains("too old"), "{err}");

    // Against Ironic 39 (maximum above 1.93), the client connects; the
    // version it sends is checked by every_call_sends_the_pinned_microversion.
    let client = env.client().await;
    let (_, server_max) = server_versions(&env.url).await;
    assert!(server_max > Microversion::new(1, 93), "{server_max}");
    let node = env.node(10);
    client
        .list_vmedia(&node)
        .await
        .expect("list at the negotiated version");

    // Pinned below 1.93, GET vmedia does not exist (404); above the
    // server's maximum every call is 406.
    let vmedia = format!("/v1/nodes/{node}/vmedia");
    let err = get_at_version(&env.url, Microversion::new(1, 89), &vmedia)
        .await
        .expect_err("GET vmedia at 1.89");
    assert!(matches!(err, IronicError::NotFound(_)), "{err:?}");
    let err = get_at_version(
        &env.url,
        Microversion::new(1, 999),
        &format!("/v1/nodes/{node}"),
    )
    .await
    .expect_err("1.999");
    assert!(
        matches!(&err, IronicError::Http { status: 406, message } if message.contains("supported version range")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_node_is_not_found() {
    let env = IronicEnv::load();
    let client = env.client().await;
    let missing = "00000000-0000-4000-8000-00000000dead";
    for result in [
        client.get_node(missing).await.map(|_| ()),
        client.list_vmedia(missing).await.map(|_| ()),
        client
            .attach_cdrom(missing, "http://127.0.0.1:1/x.iso")
            .await,
        client.detach_cdrom(missing).await,
    ] {
        let err = result.expect_err("unknown node");
        assert!(
            matches!(&err, IronicError::NotFound(m) if m.contains("could not be found")),
            "{err:?}"
        );
    }
    // Names with URL metacharacters are escaped into one path segment,
    // not interpreted: Ironic rejects the identifier itself.
    let err = client
        .get_node("no/such?node")
        .await
        .expect_err("weird name");
    assert!(
        matches!(&err, IronicError::BadRequest(m) if m.contains("Expected UUID or name")),
        "{err:?}"
    );
    let err = client.get_node("").await.expect_err("empty name");
    assert!(matches!(err, IronicError::BadRequest(_)), "{err:?}");
    // Bad image URLs are refused before calling Ironic.
    let node = env.node(10);
    let err = client
        .attach_cdrom(&node, "file:///etc/passwd")
        .await
        .expect_err("file URL");
    assert!(matches!(err, IronicError::BadRequest(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_good_and_bad_credentials() {
    let env = IronicEnv::load();
    let node = env
        .basic_nodes
        .first()
        .cloned()
        .expect("IRONIC_BASIC_NODES has a node");
    let url: url::Url = env.basic_url.parse().unwrap();

    // Right credentials, password from a file (--ironic-password-file).
    let password = std::fs::read_to_string(&env.basic_password_file).expect("password file");
    let config = IronicConfig {
        username: Some(env.basic_user.clone()),
        password: Some(password.trim_end_matches(['\n', '\r']).to_string()),
        ..IronicConfig::new(url.clone())
    };
    let client = IronicClient::connect(config)
        .await
        .expect("connect with basic auth");
    assert_eq!(client.get_node(&node).await.expect("node").uuid, node);
    let auth = Some((env.basic_user.as_str(), env.basic_password.as_str()));
    let server = ImageServer::start(vec![("data.iso", iso::data_iso("BASIC", b"x"))]).await;
    let data_url = server.url("data.iso");
    retry_locked(|| client.attach_cdrom(&node, &data_url))
        .await
        .expect("attach");
    let obs = client
        .wait_cdrom(&node, Expect::Inserted, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
    let (inserted, _) = redfish_cd(&env, &env.basic_url, &node, auth).await;
    assert!(inserted);
    retry_locked(|| client.detach_cdrom(&node))
        .await
        .expect("detach");
    let obs = client
        .wait_cdrom(&node, Expect::Ejected, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");

    // Credentials in the URL work the same way.
    let mut with_userinfo = url.clone();
    with_userinfo.set_username(&env.basic_user).unwrap();
    with_userinfo
        .set_password(Some(&env.basic_password))
        .unwrap();
    let client = IronicClient::connect(IronicConfig::new(with_userinfo))
        .await
        .expect("connect");
    client
        .get_node(&node)
        .await
        .expect("node via URL credentials");
    assert!(!format!("{client:?}").contains(&env.basic_password));

    // Wrong password, and none: the version document is public, node calls are 401.
    let mut wrong = IronicConfig::new(url.clone());
    wrong.username = Some(env.basic_user.clone());
    wrong.password = Some("not-the-password".into());
    let client = IronicClient::connect(wrong).await.expect("GET / is public");
    let err = client.get_node(&node).await.expect_err("wrong password");
    assert!(
        matches!(&err, IronicError::Http { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains("not-the-password"));
    let client = IronicClient::connect(IronicConfig::new(url))
        .await
        .expect("GET / is public");
    let err = client.get_node(&node).await.expect_err("no credentials");
    assert!(
        matches!(&err, IronicError::Http { status: 401, .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ironic_stopped_then_restarted() {
    let env = IronicEnv::load();
    let node = env
        .restart_nodes
        .first()
        .cloned()
        .expect("IRONIC_RESTART_NODES has a node");
    let _restart = ironic_support::restart_instance().await;
    env.ctl(&["start-api", "restart"]);
    let client = IronicClient::connect(IronicConfig::new(env.restart_url.parse().unwrap()))
        .await
        .expect("connect");
    assert_eq!(
        client.get_node(&node).await.expect("node").provision_state,
        metal3_dataimage::ironic::ProvisionState::Active
    );

    env.ctl(&["stop-api", "restart"]);
    let err = client.get_node(&node).await.expect_err("Ironic is stopped");
    assert!(
        matches!(&err, IronicError::Unavailable(m) if m.contains("cannot connect")),
        "{err:?}"
    );
    assert!(is_transient(&err));
    let err = client
        .detach_cdrom(&node)
        .await
        .expect_err("Ironic is stopped");
    assert!(matches!(err, IronicError::Unavailable(_)), "{err:?}");
    let err = IronicClient::connect(IronicConfig::new(env.restart_url.parse().unwrap()))
        .await
        .expect_err("connect while stopped");
    assert!(matches!(err, IronicError::Unavailable(_)), "{err:?}");

    env.ctl(&["start-api", "restart"]);
    // The same client works again: no reconnect needed.
    let server = ImageServer::start(vec![("data.iso", iso::data_iso("RESTART", b"x"))]).await;
    let data_url = server.url("data.iso");
    assert_eq!(
        client
            .get_node(&node)
            .await
            .expect("node after restart")
            .uuid,
        node
    );
    retry_locked(|| client.attach_cdrom(&node, &data_url))
        .await
        .expect("attach");
    let obs = client
        .wait_cdrom(&node, Expect::Inserted, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
    retry_locked(|| client.detach_cdrom(&node))
        .await
        .expect("detach");
    let obs = client
        .wait_cdrom(&node, Expect::Ejected, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_or_non_ironic_endpoints_are_clear_errors() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = IronicClient::connect(IronicConfig::new(
        format!("http://127.0.0.1:{port}").parse().unwrap(),
    ))
    .await
    .expect_err("nothing listens");
    assert!(
        matches!(&err, IronicError::Unavailable(m) if m.contains("cannot connect")),
        "{err:?}"
    );

    // Something that is not Ironic.
    let server = ImageServer::start(vec![("x", b"not ironic".to_vec())]).await;
    let err = IronicClient::connect(IronicConfig::new(server.base.parse().unwrap()))
        .await
        .expect_err("not Ironic");
    assert!(
        matches!(err, IronicError::NotFound(_) | IronicError::Http { .. }),
        "{err:?}"
    );

    // Configuration errors.
    let err = IronicClient::connect(IronicConfig::new("ftp://127.0.0.1/".parse().unwrap()))
        .await
        .expect_err("ftp");
    assert!(matches!(err, IronicError::Config(_)), "{err:?}");
    let mut config = IronicConfig::new(server.base.parse().unwrap());
    config.ca_file = Some("/nonexistent/ca.pem".into());
    let err = IronicClient::connect(config).await.expect_err("missing CA");
    assert!(matches!(err, IronicError::Config(_)), "{err:?}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("ca.pem");
    std::fs::write(&junk, "not a certificate").unwrap();
    let mut config = IronicConfig::new(server.base.parse().unwrap());
    config.ca_file = Some(junk);
    let err = IronicClient::connect(config).await.expect_err("junk CA");
    assert!(matches!(err, IronicError::Config(_)), "{err:?}");
}

#[test]
fn iso_builder_writes_iso9660() {
    let plain = iso::data_iso("DATA", b"content");
    assert!(iso::has_iso9660_signature(&plain));
    assert_eq!(plain.len() % iso::SECTOR, 0);
    // Sector 17 is the terminator for a data image, the El Torito boot
    // record for a bootable one.
    assert_eq!(plain[17 * iso::SECTOR], 255);
    let bootable = iso::IsoBuilder::new("BOOT")
        .file("A.TXT", b"a")
        .bootable(true)
        .build();
    assert!(iso::has_iso9660_signature(&bootable));
    assert_eq!(bootable[17 * iso::SECTOR], 0);
    assert_eq!(
        &bootable[17 * iso::SECTOR + 7..17 * iso::SECTOR + 30],
        b"EL TORITO SPECIFICATION"
    );
}

/// A reverse proxy in front of Ironic that records, for every request, the
/// method, path, the version header sent and the one Ironic answered with.
struct RecordingProxy {
    base: String,
    seen: std::sync::Arc<std::sync::Mutex<Vec<Exchange>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(Clone, Debug)]
struct Exchange {
    method: String,
    path: String,
    sent: Option<String>,
    answered: Option<String>,
    status: u16,
}

impl RecordingProxy {
    async fn start(upstream: &str) -> Self {
        use axum::extract::{Request, State};
        use axum::response::Response;
        use std::sync::{Arc, Mutex};
        type Shared = (String, Arc<Mutex<Vec<Exchange>>>);
        async fn forward(State((upstream, seen)): State<Shared>, request: Request) -> Response {
            const VERSION: &str = "x-openstack-ironic-api-version";
            let method = request.method().clone();
            let path = request
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let headers = request.headers().clone();
            let body = axum::body::to_bytes(request.into_body(), usize::MAX)
                .await
                .expect("request body");
            let mut out =
                ironic_support::http().request(method.clone(), format!("{upstream}{path}"));
            for (name, value) in &headers {
                if name != "host" && name != "content-length" {
                    out = out.header(name, value);
                }
            }
            let answer = out.body(body).send().await.expect("forward to Ironic");
            let status = answer.status();
            let answer_headers = answer.headers().clone();
            let bytes = answer.bytes().await.expect("Ironic answer body");
            let text = |h: &axum::http::HeaderMap| {
                h.get(VERSION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            seen.lock().unwrap().push(Exchange {
                method: method.to_string(),
                path: path.split('?').next().unwrap_or("").to_string(),
                sent: text(&headers),
                answered: text(&answer_headers),
                status: status.as_u16(),
            });
            let mut response = Response::builder().status(status);
            for (name, value) in &answer_headers {
                if name != "content-length" && name != "transfer-encoding" {
                    response = response.header(name, value);
                }
            }
            response
                .body(axum::body::Body::from(bytes))
                .expect("proxy response")
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let app = axum::Router::new()
            .fallback(forward)
            .with_state((upstream.trim_end_matches('/').to_string(), seen.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base: format!("http://{addr}"),
            seen,
            task,
        }
    }

    fn exchanges(&self) -> Vec<Exchange> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for RecordingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

both_releases!(every_call_sends_the_pinned_microversion, 11, 3);
async fn every_call_sends_the_pinned_microversion(env: &IronicEnv, target: &Target, node: String) {
    let direct = target.client().await;
    reset_node(env, &target.url, &direct, &node).await;
    let proxy = RecordingProxy::start(&target.url).await;
    let client = IronicClient::connect(IronicConfig::new(proxy.base.parse().unwrap()))
        .await
        .expect("connect through the proxy");
    let (_, server_max) = server_versions(&target.url).await;
    assert!(server_max >= Microversion::new(1, 93), "{server_max}");

    let server = ImageServer::start(vec![("data.iso", iso::data_iso("PINNED", b"x"))]).await;
    client
        .attach_cdrom(&node, &server.url("data.iso"))
        .await
        .expect("attach");
    let obs = client
        .wait_cdrom(&node, Expect::Inserted, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
    retry_locked(|| client.detach_cdrom(&node))
        .await
        .expect("detach");
    let obs = client
        .wait_cdrom(&node, Expect::Ejected, WAIT)
        .await
        .expect("observe");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
    client.ping().await.expect("ping");

    let exchanges = proxy.exchanges();
    // The start-up check: GET / without a version (the answer names the
    // server's maximum).
    let first = &exchanges[0];
    assert_eq!((first.method.as_str(), first.path.as_str()), ("GET", "/"));
    assert_eq!(first.sent, None, "{first:?}");
    let calls: Vec<_> = exchanges.iter().filter(|e| e.path != "/").collect();
    for kind in [
        ("GET", format!("/v1/nodes/{node}")),
        ("GET", format!("/v1/nodes/{node}/vmedia")),
        ("POST", format!("/v1/nodes/{node}/vmedia")),
        ("DELETE", format!("/v1/nodes/{node}/vmedia")),
    ] {
        assert!(
            calls
                .iter()
                .any(|e| (e.method.as_str(), &e.path) == (kind.0, &kind.1)),
            "no {kind:?} in {calls:#?}"
        );
    }
    // Every node/vmedia call sent 1.93, and Ironic served it as 1.93 (it
    // echoes the version it used), on both releases.
    for call in &calls {
        assert_eq!(call.sent.as_deref(), Some("1.93"), "{call:?}");
        assert_eq!(call.answered.as_deref(), Some("1.93"), "{call:?}");
    }
    assert!(
        calls.iter().all(|c| c.status < 400 || c.status == 409),
        "{calls:#?}"
    );
}
