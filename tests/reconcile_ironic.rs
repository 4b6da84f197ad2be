//! The reconciler's full loop against the real Ironic (and its Redfish
//! emulator) started by `tests/ironic/up.sh`, with the Kubernetes side faked
//! (reconcile_support/fake_kube.rs). Nodes used: IRONIC_NODES #5, #6, #7.
//!
//! Needs the Ironic environment (tests/run.sh starts it); fails with
//! instructions when it is missing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action as Requeue;
use metal3_dataimage::ironic::IronicClient;
use metal3_dataimage::reconcile::controller::{self, Context};
use metal3_dataimage::reconcile::decision::DecisionConfig;
use metal3_dataimage::reconcile::metrics::Metrics;
use metal3_dataimage::reconcile::record::{
    AttachedRecord, FINALIZER, HOLD_ANNOTATION, Phase, STATE_ANNOTATION,
};
use serde_json::{Value, json};

#[path = "reconcile_support/fake_kube.rs"]
mod fake_kube;
#[path = "support/ironic.rs"]
mod ironic_support;
#[path = "support/iso.rs"]
mod iso;

use fake_kube::*;
use ironic_support::{IronicEnv, redfish_cd, reset_node, wait_redfish_cd};

struct Loop {
    api: Arc<FakeApi>,
    ctx: Arc<Context<IronicClient>>,
}

async fn setup(env: &IronicEnv, node: &str, host: Value) -> Loop {
    let client = env.client().await;
    reset_node(env, &env.url, &client, node).await;
    let api = Arc::new(FakeApi::default());
    api.put(&host_path(HOST), host);
    let kube = fake_client(api.clone());
    let ctx = Arc::new(Context::new(
        kube,
        client,
        DecisionConfig::default(),
        4,
        Arc::new(Metrics::new()),
        None,
    ));
    Loop { api, ctx }
}

impl Loop {
    fn object(&self) -> Value {
        self.api.get(&host_path(HOST)).expect("host exists")
    }

    fn record(&self) -> Option<AttachedRecord> {
        let text = self.object()["metadata"]["annotations"][STATE_ANNOTATION]
            .as_str()?
            .to_string();
        Some(serde_json::from_str(&text).expect("valid record"))
    }

    fn data_image_status(&self) -> Value {
        self.object()["status"]["dataImage"].clone()
    }

    /// Reconciles (as the controller would on requeue) until `done` holds;
    /// panics with the last status after `limit`.
    async fn until(&self, what: &str, limit: Duration, done: impl Fn(&Loop) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            let action = controller::reconcile(Arc::new(self.api.host()), self.ctx.clone())
                .await
                .expect("reconcile");
            if done(self) {
                eprintln!(
                    "{what}: reached after {:?}",
                    limit - deadline.saturating_duration_since(Instant::now())
                );
                eprintln!("{what}: status.dataImage = {}", self.data_image_status());
                return;
            }
            if std::env::var_os("RECONCILE_TEST_TRACE").is_some() {
                eprintln!("{what}: {}", self.data_image_status());
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not reached within {limit:?}; status {}; record {:?}",
                self.data_image_status(),
                self.record()
            );
            // Requeue delays are shortened: the test only needs the order.
            let pause = if action == Requeue::await_change() {
                Duration::from_millis(500)
            } else {
                Duration::from_millis(300)
            };
            tokio::time::sleep(pause).await;
        }
    }

    fn set_url(&self, url: Option<&str>) {
        let mut object = self.object();
        match url {
            Some(url) => object["spec"]["dataImage"] = json!({ "url": url }),
            None => {
                object["spec"].as_object_mut().unwrap().remove("dataImage");
            }
        }
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        object["metadata"]["generation"] = json!(generation);
        self.api.put(&host_path(HOST), object);
    }
}

fn state_is(state: &'static str) -> impl Fn(&Loop) -> bool {
    move |l: &Loop| l.data_image_status()["state"] == state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_confirm_url_change_and_removal_against_real_ironic() {
    let env = IronicEnv::load();
    let node = env.node(5);
    let images = ironic_support::ImageServer::start(vec![
        ("config-a.iso", iso::data_iso("CONFIG_A", b"first image")),
        ("config-b.iso", iso::data_iso("CONFIG_B", b"second image")),
    ])
    .await;
    let (url_a, url_b) = (images.url("config-a.iso"), images.url("config-b.iso"));
    let l = setup(&env, &node, host_object("provisioned", &node, Some(&url_a))).await;

    // Attach, confirmed by Ironic's GET vmedia and seen by the BMC emulator.
    l.until("attach A", Duration::from_secs(90), state_is("Attached"))
        .await;
    let (inserted, image) = redfish_cd(&env, &env.url, &node, None).await;
    assert!(inserted, "emulator shows the CD inserted");
    assert!(image.ends_with(&format!("/cdrom-{node}.iso")), "{image}");
    let record = l.record().unwrap();
    assert_eq!(
        (record.url.as_str(), record.phase),
        (url_a.as_str(), Phase::Attached)
    );
    assert!(
        l.object()["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .contains(&json!(FINALIZER))
    );
    assert_eq!(l.data_image_status()["url"], url_a.as_str());
    assert_eq!(l.data_image_status()["errorCount"], 0);
    // The node was running: no power hold, and the status says when the OS sees it.
    assert!(l.object()["metadata"]["annotations"][HOLD_ANNOTATION].is_null());
    assert!(
        l.data_image_status()["message"]
            .as_str()
            .unwrap()
            .contains("next boot")
    );

    // URL change: detach A, confirm, attach B.
    l.set_url(Some(&url_b));
    l.until("attach B", Duration::from_secs(120), |l| {
        l.data_image_status()["state"] == "Attached" && l.record().is_some_and(|r| r.url == url_b)
    })
    .await;
    let reasons = event_reasons(&l.api.log());
    let detaching = reasons
        .iter()
        .position(|r| r == "Detaching")
        .expect("Detaching event");
    let detached = reasons
        .iter()
        .position(|r| r == "Detached")
        .expect("Detached event");
    let second_attach = reasons.iter().rposition(|r| r == "Attaching").unwrap();
    assert!(
        detaching < detached && detached < second_attach,
        "{reasons:?}"
    );
    let (inserted, _) = redfish_cd(&env, &env.url, &node, None).await;
    assert!(inserted);
    // Ironic republished the new image: its copy carries B's volume id.
    let published = ironic_support::http()
        .get(format!(
            "{}/redfish/cdrom-{node}.iso",
            env.http_url.trim_end_matches('/')
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(
        published.windows(8).any(|w| w == b"CONFIG_B"),
        "Ironic serves image B"
    );

    // Removal: detach, confirm, clear status, drop the finalizer.
    l.set_url(None);
    l.until("removal", Duration::from_secs(90), |l| {
        l.record().is_none() && l.data_image_status().is_null()
    })
    .await;
    let (inserted, _) = wait_redfish_cd(&env, &env.url, &node, false, None).await;
    assert!(!inserted, "emulator shows the CD ejected");
    let finalizers = l.object()["metadata"]["finalizers"].clone();
    assert_eq!(finalizers, json!([BMO_FINALIZER]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_surfaces_as_an_error_status() {
    let env = IronicEnv::load();
    let node = env.node(6);
    let images =
        ironic_support::ImageServer::start(vec![("good.iso", iso::data_iso("GOOD", b"g"))]).await;
    let missing = images.url("missing.iso");
    let l = setup(
        &env,
        &node,
        host_object("provisioned", &node, Some(&missing)),
    )
    .await;

    l.until("error", Duration::from_secs(90), state_is("Error"))
        .await;
    let status = l.data_image_status();
    let message = status["message"].as_str().unwrap();
    assert!(
        message.contains("404"),
        "Ironic's asynchronous failure is shown: {message}"
    );
    assert!(status["errorCount"].as_u64().unwrap() >= 1);
    assert_eq!(status["url"], missing.as_str());
    let record = l.record().unwrap();
    assert_eq!(record.phase, Phase::Failed);
    assert!(record.retry_at.is_some(), "retried after a backoff");
    assert!(
        event_reasons(&l.api.log())
            .iter()
            .any(|r| r == "AttachFailed")
    );
    let async_failures = l
        .ctx
        .metrics
        .failures
        .get_or_create(&metal3_dataimage::reconcile::metrics::FailureLabels {
            operation: metal3_dataimage::reconcile::metrics::Operation::Attach,
            reason: "async",
        })
        .get();
    assert_eq!(
        async_failures, 1,
        "the failure seen in last_error is counted"
    );
    let (inserted, _) = redfish_cd(&env, &env.url, &node, None).await;
    assert!(!inserted);

    // The user fixes the URL while the node is in maintenance: wait, then
    // attach once it leaves maintenance (the error count resets on success).
    ironic_support::set_maintenance(&env.url, &node, true).await;
    let good = images.url("good.iso");
    l.set_url(Some(&good));
    l.until("maintenance wait", Duration::from_secs(60), |l| {
        l.data_image_status()["message"]
            .as_str()
            .is_some_and(|m| m.contains("maintenance"))
    })
    .await;
    assert_eq!(l.data_image_status()["state"], "Waiting");
    ironic_support::set_maintenance(&env.url, &node, false).await;
    l.until(
        "attach after maintenance",
        Duration::from_secs(90),
        state_is("Attached"),
    )
    .await;
    assert_eq!(l.data_image_status()["errorCount"], 0);
    assert_eq!(l.data_image_status()["url"], good.as_str());
}

/// Sets the node's power through Ironic and waits until Ironic reports it
/// (the emulator applies power changes after a random delay).
async fn set_power(env: &IronicEnv, node: &str, on: bool) {
    let target = if on { "power on" } else { "power off" };
    let (status, body) = ironic_support::ironic_raw(
        &env.url,
        reqwest::Method::PUT,
        &format!("/v1/nodes/{node}/states/power"),
        Some(json!({ "target": target })),
        None,
    )
    .await;
    assert!(
        status == 202 || status == 409,
        "power {target}: {status} {body}"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (_, doc) = ironic_support::ironic_raw(
            &env.url,
            reqwest::Method::GET,
            &format!("/v1/nodes/{node}"),
            None,
            None,
        )
        .await;
        if doc["power_state"] == target && doc["target_power_state"].is_null() {
            return;
        }
        if status == 409 && doc["target_power_state"].is_null() && doc["reservation"].is_null() {
            // The first request met a lock: send it again.
            return Box::pin(set_power(env, node, on)).await;
        }
        assert!(
            Instant::now() < deadline,
            "node {node} did not reach {target}: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenario1_powered_off_host_is_held_until_attached_then_detached_before_deletion() {
    let env = IronicEnv::load();
    let node = env.node(7);
    let images =
        ironic_support::ImageServer::start(vec![("config.iso", iso::data_iso("CONFIG_D", b"d"))])
            .await;
    let url = images.url("config.iso");
    set_power(&env, &node, false).await;
    let l = setup(
        &env,
        &node,
        host_object("externally provisioned", &node, Some(&url)),
    )
    .await;

    // First pass: Ironic reports the node off, so the hold goes on before the attach.
    controller::reconcile(Arc::new(l.api.host()), l.ctx.clone())
        .await
        .expect("reconcile");
    let hold = l.object()["metadata"]["annotations"][HOLD_ANNOTATION].clone();
    assert_eq!(
        hold,
        json!("{\"mode\":\"soft\"}"),
        "powered-off host held off"
    );
    assert_eq!(l.record().map(|r| r.phase), Some(Phase::Attaching));

    l.until("attach", Duration::from_secs(90), state_is("Attached"))
        .await;
    assert!(
        l.object()["metadata"]["annotations"][HOLD_ANNOTATION].is_null(),
        "hold released once attached"
    );
    assert_eq!(
        l.data_image_status()["message"],
        "attached",
        "host was off: no next-boot note"
    );
    let reasons = event_reasons(&l.api.log());
    assert!(reasons.iter().any(|r| r == "PowerHold"), "{reasons:?}");
    // Still off: the reconciler never powers hosts on (the operator does).
    let (_, doc) = ironic_support::ironic_raw(
        &env.url,
        reqwest::Method::GET,
        &format!("/v1/nodes/{node}"),
        None,
        None,
    )
    .await;
    assert_eq!(doc["power_state"], "power off");

    let mut object = l.object();
    object["metadata"]["deletionTimestamp"] = json!(jiff::Timestamp::now().to_string());
    l.api.put(&host_path(HOST), object);
    l.until("finalizer released", Duration::from_secs(90), |l| {
        !l.object()["metadata"]["finalizers"]
            .as_array()
            .unwrap()
            .contains(&json!(FINALIZER))
    })
    .await;
    let (inserted, _) = wait_redfish_cd(&env, &env.url, &node, false, None).await;
    assert!(!inserted, "detached before the host went away");
    assert!(l.record().is_none());
    set_power(&env, &node, true).await;
}
