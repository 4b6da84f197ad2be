//! The reconciler's Kubernetes side, against a fake API server behind kube's
//! `Client` (a `tower_test::mock::pair` service answered by an in-memory
//! store) and a fake Ironic (the real Ironic is exercised in
//! tests/it/reconcile_ironic.rs).
//!
//! There is no baremetal-operator here: its behaviours the reconciler relies
//! on are simulated by `operator_steady_state` (keeps a host off while any
//! `reboot.metal3.io/<suffix>` annotation is present, otherwise powers an
//! online host on) and `operator_whole_object_write` (its Go types do not know
//! `status.dataImage`, so a whole-object status write drops it while the
//! annotations it read are written back unchanged).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::support::fake_kube;
use crate::support::iso;
use fake_kube::*;

use kube::runtime::reflector::store::Writer;
use kube::runtime::watcher;
use metal3_dataimage::ironic::ours::Op;
use metal3_dataimage::ironic::{IronicError, Node, PowerState, ProvisionState, VirtualMedia};
use metal3_dataimage::model::bmh::HostResource;
use metal3_dataimage::reconcile::controller::{self, Context, IronicApi};
use metal3_dataimage::reconcile::decision::DecisionConfig;
use metal3_dataimage::reconcile::metrics::{FailureLabels, Metrics};
use metal3_dataimage::reconcile::record::{
    AttachedRecord, FINALIZER, HOLD_ANNOTATION, Phase, STATE_ANNOTATION,
};
use serde_json::{Value, json};

const NODE: &str = "5f0b3c1e-7d1a-4b59-9d43-0f5a3f6e2c11";
const URL1: &str = "https://images.example.test/config-1.iso";

// ------------------------------------------------------------ fake Ironic + operator

#[derive(Default)]
struct IronicState {
    power_on: bool,
    inserted: Option<String>,
    last_error: Option<String>,
    fail_next: Option<IronicError>,
    calls: Vec<String>,
    /// Ordered history of drive and power changes.
    timeline: Vec<String>,
}

#[derive(Clone, Default)]
struct FakeIronic(Arc<Mutex<IronicState>>);

impl FakeIronic {
    fn state(&self) -> std::sync::MutexGuard<'_, IronicState> {
        self.0.lock().unwrap()
    }
}

impl IronicApi for FakeIronic {
    async fn get_node(&self, node: &str) -> Result<Node, IronicError> {
        let state = self.state();
        Ok(Node {
            uuid: node.to_string(),
            provision_state: ProvisionState::Active,
            power_state: Some(if state.power_on {
                PowerState::On
            } else {
                PowerState::Off
            }),
            last_error: state.last_error.clone(),
            ..Default::default()
        })
    }
    async fn list_vmedia(&self, _node: &str) -> Result<Vec<VirtualMedia>, IronicError> {
        let state = self.state();
        Ok(vec![VirtualMedia {
            media_types: vec!["CD".into(), "DVD".into()],
            inserted: state.inserted.is_some(),
            image: state.inserted.clone(),
        }])
    }
    async fn attach_cdrom(&self, node: &str, image_url: &str) -> Result<(), IronicError> {
        let mut state = self.state();
        state.calls.push(format!("attach {image_url}"));
        if let Some(err) = state.fail_next.take() {
            return Err(err);
        }
        state.inserted = Some(format!("http://127.0.0.1:8088/redfish/cdrom-{node}.iso"));
        state.timeline.push("inserted".into());
        Ok(())
    }
    async fn ping(&self) -> Result<(), IronicError> {
        Ok(())
    }
    async fn detach_cdrom(&self, _node: &str) -> Result<(), IronicError> {
        let mut state = self.state();
        state.calls.push("detach".into());
        state.inserted = None;
        state.timeline.push("ejected".into());
        Ok(())
    }
}

/// The baremetal-operator's steady state for an online provisioned host:
/// powers it on unless a `reboot.metal3.io[/suffix]` annotation holds it off.
fn operator_steady_state(api: &FakeApi, ironic: &FakeIronic) {
    let host = api.host();
    let held = host.metadata.annotations.as_ref().is_some_and(|a| {
        a.keys()
            .any(|k| k == "reboot.metal3.io" || k.starts_with("reboot.metal3.io/"))
    });
    let mut state = ironic.state();
    if host.spec.online == Some(true) && !held && !state.power_on {
        state.power_on = true;
        let with_image = if state.inserted.is_some() {
            "with image"
        } else {
            "without image"
        };
        state.timeline.push(format!("powered on {with_image}"));
    }
}

/// The operator writes the whole object back from Go types that do not know
/// status.dataImage: that field is lost, annotations and finalizers stay.
fn operator_whole_object_write(api: &FakeApi) {
    let path = host_path(HOST);
    let mut object = api.get(&path).unwrap();
    if let Some(status) = object["status"].as_object_mut() {
        status.remove("dataImage");
    }
    api.put(&path, object);
}

// ------------------------------------------------------------ fixtures

struct Harness {
    api: Arc<FakeApi>,
    ironic: FakeIronic,
    ctx: Arc<Context<FakeIronic>>,
}

fn harness(host: Value) -> Harness {
    harness_with(host, None)
}

fn harness_with(host: Value, dataimages: Option<Vec<Value>>) -> Harness {
    harness_full(host, dataimages, None)
}

fn harness_full(
    host: Value,
    dataimages: Option<Vec<Value>>,
    stager: Option<metal3_dataimage::staging::Stager>,
) -> Harness {
    let api = Arc::new(FakeApi::default());
    api.put(&host_path(HOST), host);
    let client = fake_client(api.clone());
    let ironic = FakeIronic::default();
    let dataimages = dataimages.map(|objects| {
        let resource = metal3_dataimage::reconcile::dataimage_resource();
        let mut writer = Writer::<kube::api::DynamicObject>::new(resource.clone());
        for object in objects {
            let object: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
            writer.apply_watcher_event(&watcher::Event::Apply(object));
        }
        (writer.as_reader(), resource)
    });
    let mut ctx = Context::new(
        client,
        ironic.clone(),
        DecisionConfig::default(),
        2,
        Arc::new(Metrics::default()),
        Some("test-replica".into()),
    );
    ctx.stager = stager;
    ctx.dataimages = dataimages;
    let ctx = Arc::new(ctx);
    Harness { api, ironic, ctx }
}

impl Harness {
    async fn reconcile(
        &self,
    ) -> Result<kube::runtime::controller::Action, controller::ReconcileError> {
        controller::reconcile(Arc::new(self.api.host()), self.ctx.clone()).await
    }

    fn annotation(&self, key: &str) -> Option<String> {
        self.api
            .host()
            .metadata
            .annotations
            .and_then(|a| a.get(key).cloned())
    }

    fn record(&self) -> Option<AttachedRecord> {
        self.annotation(STATE_ANNOTATION)
            .map(|text| serde_json::from_str(&text).expect("valid record"))
    }

    /// Reconciles every 50 ms (requeues shortened) until `done` holds.
    async fn reconcile_until(&self, done: impl Fn(&Harness) -> bool) {
        for _ in 0..200 {
            self.reconcile().await.unwrap();
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "not reached: {}",
            self.api.get(&host_path(HOST)).unwrap()["status"]["dataImage"]
        );
    }

    fn status_state(&self) -> Option<String> {
        let object = self.api.get(&host_path(HOST))?;
        object["status"]["dataImage"]["state"]
            .as_str()
            .map(str::to_string)
    }
}

// ------------------------------------------------------------ tests

#[tokio::test]
async fn scenario1_holds_attaches_confirms_then_the_operator_powers_on_with_the_image() {
    let h = harness(host_object("externally provisioned", NODE, Some(URL1)));

    h.reconcile().await.unwrap();
    assert!(
        h.annotation(HOLD_ANNOTATION).is_some(),
        "powered-off host held off"
    );
    let record = h.record().unwrap();
    assert_eq!(
        (record.url.as_str(), record.node.as_str(), record.phase),
        (URL1, NODE, Phase::Attaching)
    );
    let finalizers = h.api.host().metadata.finalizers.unwrap();
    assert_eq!(
        finalizers,
        vec![BMO_FINALIZER.to_string(), FINALIZER.to_string()]
    );
    assert_eq!(h.ironic.state().calls, vec![format!("attach {URL1}")]);
    assert_eq!(h.status_state().as_deref(), Some("Attaching"));

    // The operator's steady state runs: the hold keeps the host off.
    operator_steady_state(&h.api, &h.ironic);
    assert!(!h.ironic.state().power_on);

    h.reconcile().await.unwrap();
    assert_eq!(
        h.annotation(HOLD_ANNOTATION),
        None,
        "hold removed once confirmed"
    );
    assert_eq!(h.record().unwrap().phase, Phase::Attached);
    assert_eq!(h.status_state().as_deref(), Some("Attached"));

    operator_steady_state(&h.api, &h.ironic);
    assert_eq!(
        h.ironic.state().timeline,
        vec!["inserted", "powered on with image"]
    );
    assert_eq!(h.ironic.state().calls.len(), 1, "attached exactly once");

    let log = h.api.log();
    // Never a whole-object write: only patches on the host.
    for write in host_writes(&log) {
        assert_eq!(write.method, "PATCH", "{write:?}");
    }
    // Every write (annotations, finalizer, status, Events) names our field
    // manager: none is recorded as `unknown` in managedFields.
    for write in log.iter().filter(|l| l.method != "GET") {
        assert!(
            write.query.contains("fieldManager=metal3-dataimage"),
            "{} {} {}",
            write.method,
            write.path,
            write.query
        );
    }
    // Status: server-side apply on the status subresource, our field manager.
    let applies: Vec<&Logged> = log
        .iter()
        .filter(|l| {
            l.path == format!("{}/status", host_path(HOST))
                && l.content_type == "application/apply-patch+yaml"
        })
        .collect();
    assert_eq!(applies.len(), 2, "Attaching then Attached");
    for apply in &applies {
        assert!(
            apply.query.contains("fieldManager=metal3-dataimage"),
            "{}",
            apply.query
        );
        assert!(apply.query.contains("force=true"), "{}", apply.query);
        assert_eq!(apply.body["apiVersion"], "metal3.io/v1alpha1");
        assert_eq!(apply.body["kind"], "BareMetalHost");
        assert_eq!(apply.body["metadata"]["name"], HOST);
        assert_eq!(apply.body["status"]["dataImage"]["url"], URL1);
        assert_eq!(apply.body["status"]["dataImage"]["observedGeneration"], 2);
        let keys: Vec<&String> = apply.body["status"].as_object().unwrap().keys().collect();
        assert_eq!(keys, vec!["dataImage"], "only our field is applied");
    }
    assert_eq!(applies[1].body["status"]["dataImage"]["state"], "Attached");
    // Finalizer patch: merge patch of the list guarded by resourceVersion.
    let finalizer_patch = log
        .iter()
        .find(|l| l.body["metadata"]["finalizers"].is_array())
        .expect("finalizer patch");
    assert_eq!(finalizer_patch.content_type, "application/merge-patch+json");
    assert!(finalizer_patch.body["metadata"]["resourceVersion"].is_string());
    // Annotation patches touch only our keys.
    for patch in log
        .iter()
        .filter(|l| l.body["metadata"]["annotations"].is_object())
    {
        for key in patch.body["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .keys()
        {
            assert!(key == STATE_ANNOTATION || key == HOLD_ANNOTATION, "{key}");
        }
    }
    assert_eq!(h.annotation("owner").as_deref(), Some("team-a"));
    // Events for the hold, the attach and its confirmation, from our controller.
    let reasons = event_reasons(&log);
    for wanted in ["PowerHold", "Attaching", "Attached"] {
        assert!(
            reasons.iter().any(|r| r == wanted),
            "{wanted} in {reasons:?}"
        );
    }
    let event = log.iter().find(|l| l.path.ends_with("/events")).unwrap();
    assert_eq!(
        event.path,
        format!("/apis/events.k8s.io/v1/namespaces/{NS}/events")
    );
    assert_eq!(event.body["regarding"]["name"], HOST);
    assert_eq!(event.body["regarding"]["kind"], "BareMetalHost");
    assert_eq!(event.body["reportingController"], "metal3-dataimage");
    // Metrics.
    let attach_attempts = h
        .ctx
        .metrics
        .attempts
        .get_or_create(&metal3_dataimage::reconcile::metrics::OperationLabels {
            operation: Op::Attach,
        })
        .get();
    assert_eq!(attach_attempts, 1);
}

#[tokio::test]
async fn status_dropped_by_an_operator_write_is_rewritten_from_the_annotation() {
    // A running host, as the baremetal-operator reports it.
    let mut host = host_object("provisioned", NODE, Some(URL1));
    host["status"]["poweredOn"] = json!(true);
    let h = harness(host);
    h.ironic.state().power_on = true;
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    assert_eq!(h.status_state().as_deref(), Some("Attached"));
    assert!(h.record().unwrap().attached_running);

    operator_whole_object_write(&h.api);
    assert_eq!(h.status_state(), None);
    assert_eq!(
        h.record().unwrap().phase,
        Phase::Attached,
        "annotations survive"
    );

    h.api.clear_log();
    h.reconcile().await.unwrap();
    assert_eq!(h.status_state().as_deref(), Some("Attached"));
    let object = h.api.get(&host_path(HOST)).unwrap();
    assert!(
        object["status"]["dataImage"]["message"]
            .as_str()
            .unwrap()
            .contains("next boot"),
        "running host: next-boot note"
    );
    assert_eq!(h.ironic.state().calls.len(), 1, "no second attach");
    // In sync: no further writes at all on the next pass.
    h.api.clear_log();
    h.reconcile().await.unwrap();
    assert!(host_writes(&h.api.log()).is_empty(), "{:?}", h.api.log());
}

#[tokio::test]
async fn deletion_detaches_then_removes_only_our_finalizer() {
    let h = harness(host_object("provisioned", NODE, Some(URL1)));
    h.ironic.state().power_on = true;
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    assert_eq!(h.record().unwrap().phase, Phase::Attached);

    // kubectl delete: the API server sets deletionTimestamp; the operator's
    // own finalizer is dropped by the operator after deprovisioning.
    let path = host_path(HOST);
    let mut object = h.api.get(&path).unwrap();
    object["metadata"]["deletionTimestamp"] = json!(jiff::Timestamp::now().to_string());
    h.api.put(&path, object);

    h.reconcile().await.unwrap();
    assert_eq!(
        h.ironic.state().calls.last().map(String::as_str),
        Some("detach")
    );
    assert!(
        h.api
            .host()
            .metadata
            .finalizers
            .unwrap()
            .contains(&FINALIZER.to_string())
    );

    h.api.clear_log();
    h.reconcile().await.unwrap();
    let host = h.api.host();
    assert_eq!(
        host.metadata.finalizers.unwrap(),
        vec![BMO_FINALIZER.to_string()]
    );
    assert_eq!(h.annotation(STATE_ANNOTATION), None);
    let log = h.api.log();
    let removal = log
        .iter()
        .find(|l| l.body["metadata"]["finalizers"].is_array())
        .expect("finalizer removal patch");
    assert_eq!(
        removal.body["metadata"]["finalizers"],
        json!([BMO_FINALIZER])
    );
    assert!(removal.body["metadata"]["resourceVersion"].is_string());
    assert!(event_reasons(&log).iter().any(|r| r == "Detached"));
}

/// Issue 10: after our finalizer, the last one, is released, the API server
/// deletes the host. No status write may follow (it would answer 404 and be
/// logged and counted as a failed reconcile), and the hosts gauge forgets it.
#[tokio::test]
async fn a_normal_deletion_is_not_an_error_and_leaves_no_gauge_entry() {
    let h = harness(host_object("provisioned", NODE, Some(URL1)));
    h.ironic.state().power_on = true;
    h.reconcile().await.unwrap();
    h.reconcile().await.unwrap();
    assert_eq!(h.record().unwrap().phase, Phase::Attached);
    let path = host_path(HOST);
    let mut object = h.api.get(&path).unwrap();
    object["metadata"]["deletionTimestamp"] = json!(jiff::Timestamp::now().to_string());
    object["metadata"]["finalizers"] = json!([FINALIZER]);
    h.api.put(&path, object);
    h.reconcile().await.unwrap(); // detach
    h.api.clear_log();
    h.reconcile().await.expect("the release is not an error");
    assert!(h.api.get(&path).is_none(), "the host is gone");
    let log = h.api.log();
    assert!(
        !log.iter().any(|l| l.path.ends_with("/status")),
        "no status write after the host is gone: {log:?}"
    );
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    h.ctx.metrics.register(&mut registry);
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let gauge_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("metal3_dataimage_reconciler_hosts{") && !l.ends_with(" 0"))
        .collect();
    assert!(gauge_lines.is_empty(), "{gauge_lines:?}");
    let errors = h
        .ctx
        .metrics
        .reconciles
        .get_or_create(&metal3_dataimage::reconcile::metrics::ResultLabels { result: "error" })
        .get();
    assert_eq!(errors, 0);
}

/// Issue 10: the upstream CRD requires the operator's status fields, so a
/// status written before the operator's first one is refused (422).
#[tokio::test]
async fn no_status_write_before_the_operator_has_written_a_status() {
    let mut host = host_object("externally provisioned", NODE, Some(URL1));
    host["status"] = json!({ "provisioning": { "state": "externally provisioned", "ID": NODE } });
    let h = harness(host);
    h.ironic.state().power_on = true;
    h.reconcile().await.unwrap();
    let log = h.api.log();
    assert!(!log.iter().any(|l| l.path.ends_with("/status")), "{log:?}");
    assert_eq!(
        h.record().unwrap().phase,
        Phase::Attaching,
        "the attach itself goes on"
    );
}

#[tokio::test]
async fn a_concurrent_change_makes_the_finalizer_patch_fail_and_retry() {
    let h = harness(host_object("provisioned", NODE, Some(URL1)));
    h.ironic.state().power_on = true;
    // The reconciler works from a cached copy older than the server's.
    let stale = h.api.host();
    let path = host_path(HOST);
    let mut object = h.api.get(&path).unwrap();
    object["metadata"]["finalizers"] = json!([BMO_FINALIZER, "other.example.com/keep"]);
    h.api.put(&path, object);

    let err = controller::reconcile(Arc::new(stale.clone()), h.ctx.clone())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("409") || err.to_string().contains("modified"),
        "{err}"
    );
    assert!(
        h.ironic.state().calls.is_empty(),
        "no attach without the finalizer"
    );
    let action = controller::error_policy(Arc::new(stale), &err, h.ctx.clone());
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(Duration::from_secs(1))
    );
    // With a fresh read it goes through and keeps the other finalizer.
    h.reconcile().await.unwrap();
    let finalizers = h.api.host().metadata.finalizers.unwrap();
    assert_eq!(
        finalizers,
        vec![
            BMO_FINALIZER.to_string(),
            "other.example.com/keep".into(),
            FINALIZER.into()
        ]
    );
}

#[tokio::test]
async fn synchronous_ironic_failure_is_counted_in_status_events_and_metrics() {
    let h = harness(host_object("provisioned", NODE, Some(URL1)));
    h.ironic.state().power_on = true;
    h.ironic.state().fail_next = Some(IronicError::Locked(format!(
        "Node {NODE} is locked by host c1"
    )));
    h.reconcile().await.unwrap();
    let object = h.api.get(&host_path(HOST)).unwrap();
    assert_eq!(object["status"]["dataImage"]["state"], "Error");
    assert_eq!(object["status"]["dataImage"]["errorCount"], 1);
    assert!(
        object["status"]["dataImage"]["message"]
            .as_str()
            .unwrap()
            .contains("locked")
    );
    let record = h.record().unwrap();
    assert_eq!((record.phase, record.errors), (Phase::Failed, 1));
    assert!(record.retry_at.is_some());
    assert!(
        event_reasons(&h.api.log())
            .iter()
            .any(|r| r == "AttachFailed")
    );
    let event = h
        .api
        .log()
        .into_iter()
        .find(|l| l.body["reason"] == "AttachFailed")
        .unwrap();
    assert_eq!(event.body["type"], "Warning");
    let failures = h
        .ctx
        .metrics
        .failures
        .get_or_create(&FailureLabels {
            operation: Op::Attach,
            reason: "locked",
        })
        .get();
    assert_eq!(failures, 1);
    let async_failures = h
        .ctx
        .metrics
        .failures
        .get_or_create(&FailureLabels {
            operation: Op::Attach,
            reason: "async",
        })
        .get();
    assert_eq!(async_failures, 0, "a synchronous failure is counted once");
    // Within the backoff nothing is retried.
    h.reconcile().await.unwrap();
    assert_eq!(h.ironic.state().calls.len(), 1);
}

#[tokio::test]
async fn upstream_dataimage_conflict_is_reported_without_touching_the_drive() {
    let dataimage = json!({"apiVersion":"metal3.io/v1alpha1","kind":"DataImage",
        "metadata":{"name":HOST,"namespace":NS},"spec":{"url":"http://example.test/upstream.iso"}});
    let h = harness_with(
        host_object("provisioned", NODE, Some(URL1)),
        Some(vec![dataimage]),
    );
    h.reconcile().await.unwrap();
    assert_eq!(h.status_state().as_deref(), Some("Error"));
    let object = h.api.get(&host_path(HOST)).unwrap();
    assert!(
        object["status"]["dataImage"]["message"]
            .as_str()
            .unwrap()
            .contains("upstream DataImage")
    );
    assert!(h.ironic.state().calls.is_empty());
    assert_eq!(h.record(), None);
}

#[tokio::test]
async fn crd_check_refuses_a_crd_without_spec_data_image() {
    let api = Arc::new(FakeApi::default());
    let path = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/baremetalhosts.metal3.io";
    let crd = |spec_properties: Value| {
        json!({"apiVersion":"apiextensions.k8s.io/v1","kind":"CustomResourceDefinition",
            "metadata":{"name":"baremetalhosts.metal3.io"},
            "spec":{"group":"metal3.io","names":{"kind":"BareMetalHost","plural":"baremetalhosts"},"scope":"Namespaced",
                "versions":[{"name":"v1alpha1","served":true,"storage":true,
                    "schema":{"openAPIV3Schema":{"type":"object","properties":{"spec":{"type":"object","properties":spec_properties}}}}}]}})
    };
    api.put(path, crd(json!({"online":{"type":"boolean"}})));
    let client = fake_client(api.clone());
    let err = metal3_dataimage::reconcile::check_bmh_crd(client.clone())
        .await
        .unwrap_err();
    let text = format!("{err:#}");
    assert!(
        text.contains("refusing to start") && text.contains("spec.dataImage"),
        "{text}"
    );

    api.put(
        path,
        crd(json!({"online":{"type":"boolean"},"dataImage":{"type":"object"}})),
    );
    metal3_dataimage::reconcile::check_bmh_crd(client)
        .await
        .unwrap();
}

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/metal3-dataimage-system/leases/metal3-dataimage-reconciler";

fn elect(
    api: &Arc<FakeApi>,
    identity: &str,
) -> (
    tokio::sync::watch::Receiver<bool>,
    tokio::task::JoinHandle<()>,
    tokio_util::sync::CancellationToken,
) {
    let stop = tokio_util::sync::CancellationToken::new();
    let (rx, task) = metal3_dataimage::reconcile::leader::start(
        fake_client(api.clone()),
        "metal3-dataimage-system",
        "metal3-dataimage-reconciler",
        identity.into(),
        stop.clone(),
    );
    (rx, task, stop)
}

async fn until_leading(rx: &mut tokio::sync::watch::Receiver<bool>, want: bool) {
    while *rx.borrow_and_update() != want {
        rx.changed().await.unwrap();
    }
}

/// Paused tokio clock: the times below are the election's own schedule,
/// not this machine's speed.
#[tokio::test(start_paused = true)]
async fn leader_election_fails_over_within_one_retry_period_of_a_release() {
    use metal3_dataimage::reconcile::leader::{LEASE_DURATION, RETRY_PERIOD};
    let api = Arc::new(FakeApi::default());
    let (mut a, task_a, stop_a) = elect(&api, "replica-a");
    until_leading(&mut a, true).await;
    let (mut b, task_b, stop_b) = elect(&api, "replica-b");
    // b stays standby while a renews, however long.
    tokio::time::sleep(LEASE_DURATION * 3).await;
    assert!(!*b.borrow_and_update(), "two leaders");
    let lease = api.get(LEASE).expect("lease created");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");

    // Graceful stop of a: released, and b takes over at its next retry.
    stop_a.cancel();
    task_a.await.unwrap();
    assert!(!*a.borrow());
    let released = tokio::time::Instant::now();
    let lease = api.get(LEASE).unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "{lease}");
    until_leading(&mut b, true).await;
    let failover = released.elapsed();
    assert!(failover <= RETRY_PERIOD, "standby took {failover:?}");
    let lease = api.get(LEASE).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "replica-b");
    assert_eq!(lease["spec"]["leaseTransitions"], 1);

    // Every write names our field manager.
    let log = api.log();
    assert!(
        log.iter()
            .any(|l| l.method == "POST" && l.path.ends_with("/leases"))
    );
    for write in log
        .iter()
        .filter(|l| l.method != "GET" && l.path.contains("/leases"))
    {
        assert!(
            write.query.contains("fieldManager=metal3-dataimage"),
            "{write:?}"
        );
    }
    stop_b.cancel();
    task_b.await.unwrap();
}

/// A leader that dies without releasing: the standby waits the lease
/// duration on its own clock, then takes over.
#[tokio::test(start_paused = true)]
async fn leader_election_takes_over_a_crashed_leaders_lease_after_the_lease_duration() {
    use metal3_dataimage::reconcile::leader::{LEASE_DURATION, RETRY_PERIOD};
    let api = Arc::new(FakeApi::default());
    let (mut a, task_a, _stop_a) = elect(&api, "replica-a");
    until_leading(&mut a, true).await;
    let (mut b, _task_b, _stop_b) = elect(&api, "replica-b");
    tokio::time::sleep(RETRY_PERIOD * 2).await;
    task_a.abort(); // crash: no release
    let crashed = tokio::time::Instant::now();
    until_leading(&mut b, true).await;
    let waited = crashed.elapsed();
    assert!(
        waited >= LEASE_DURATION - RETRY_PERIOD * 2 && waited <= LEASE_DURATION + RETRY_PERIOD,
        "{waited:?}"
    );
}

#[tokio::test]
async fn cleanup_removes_our_finalizer_hold_and_state_only() {
    let api = Arc::new(FakeApi::default());
    let mut dirty = host_object("provisioned", NODE, Some(URL1));
    dirty["metadata"]["finalizers"] = json!([BMO_FINALIZER, FINALIZER]);
    dirty["metadata"]["annotations"][HOLD_ANNOTATION] = json!("{\"mode\":\"soft\"}");
    dirty["metadata"]["annotations"][STATE_ANNOTATION] = json!("{}");
    api.put(&host_path(HOST), dirty);
    let mut clean = host_object("provisioned", NODE, None);
    clean["metadata"]["name"] = json!("worker-1");
    api.put(&host_path("worker-1"), clean);
    let client = fake_client(api.clone());

    let dry = metal3_dataimage::reconcile::cleanup_hosts(client.clone(), None, true)
        .await
        .unwrap();
    assert_eq!(
        (dry.hosts, dry.finalizers, dry.holds, dry.records),
        (1, 1, 1, 1)
    );
    assert!(
        api.log().iter().all(|l| l.method == "GET"),
        "dry run writes nothing"
    );

    let report = metal3_dataimage::reconcile::cleanup_hosts(client, None, false)
        .await
        .unwrap();
    assert_eq!(report.hosts, 1);
    let host: HostResource = serde_json::from_value(api.get(&host_path(HOST)).unwrap()).unwrap();
    assert_eq!(
        host.metadata.finalizers.unwrap(),
        vec![BMO_FINALIZER.to_string()]
    );
    let annotations = host.metadata.annotations.unwrap();
    assert!(!annotations.contains_key(HOLD_ANNOTATION));
    assert!(!annotations.contains_key(STATE_ANNOTATION));
    assert_eq!(annotations.get("owner").map(String::as_str), Some("team-a"));
}

// ------------------------------------------------------------ staging

const PASSWORD: &str = "s3cr3t-Pa55word-xyz";

/// An image server on 127.0.0.1:0 that wants HTTP basic auth `user:PASSWORD`.
async fn protected_image_server(image: Vec<u8>) -> String {
    use axum::http::{HeaderMap, StatusCode as AxStatus};
    use base64::Engine as _;
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("user:{PASSWORD}"))
    );
    let app = axum::Router::new().route(
        "/data.iso",
        axum::routing::get(move |headers: HeaderMap| {
            let ok = headers.get("authorization").and_then(|v| v.to_str().ok())
                == Some(expected.as_str());
            let image = image.clone();
            async move {
                if ok {
                    Ok(image)
                } else {
                    Err(AxStatus::UNAUTHORIZED)
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{address}/data.iso")
}

fn stager(cache: &std::path::Path) -> metal3_dataimage::staging::Stager {
    metal3_dataimage::staging::Stager::new(metal3_dataimage::staging::StagingConfig {
        cache_dir: cache.to_path_buf(),
        max_image_size: 16 << 20,
        image_ca_file: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: "http://127.0.0.1:9445/".parse().unwrap(),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        // Short: the tests fix a Secret and want the next try at once.
        retry_failed: Duration::from_millis(300),
    })
    .unwrap()
}

fn secret(password: &str) -> Value {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"image-creds","namespace":NS},
           "data":{"username": b64("user"), "password": b64(password)}})
}

fn staged_host(url: &str) -> Value {
    let mut host = host_object("provisioned", NODE, None);
    host["spec"]["dataImage"] = json!({"url": url, "credentialsName": "image-creds"});
    host
}

#[tokio::test]
async fn credentialed_image_is_staged_and_ironic_gets_only_the_staging_url() {
    let image = iso::data_iso("STAGED", b"secret config");
    let url = protected_image_server(image.clone()).await;
    let cache = tempfile::tempdir().unwrap();
    let h = harness_full(staged_host(&url), None, Some(stager(cache.path())));
    h.api.put(
        &format!("/api/v1/namespaces/{NS}/secrets/image-creds"),
        secret(PASSWORD),
    );
    h.ironic.state().power_on = true;

    // Staging runs in the background: reconcile as the controller's
    // requeues would until the attach is confirmed.
    h.reconcile_until(|h| h.status_state().as_deref() == Some("Attached"))
        .await;
    let calls = h.ironic.state().calls.clone();
    assert_eq!(calls.len(), 1, "{calls:?}");
    assert!(
        calls[0].starts_with("attach http://127.0.0.1:9445/"),
        "{calls:?}"
    );
    assert!(
        !calls[0].contains(&url) && !calls[0].contains(PASSWORD),
        "{calls:?}"
    );

    let object = h.api.get(&host_path(HOST)).unwrap();
    let status = &object["status"]["dataImage"];
    assert_eq!(status["state"], "Attached");
    assert_eq!(
        status["url"],
        url.as_str(),
        "the user's URL, not the staging URL"
    );
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(&image));
    assert!(
        status["stagedDigest"].as_str().unwrap().contains(&digest),
        "{status}"
    );
    assert_eq!(status["stagedSize"], image.len());
    assert!(h.record().unwrap().digest.is_some());
    // The password never reached the Kubernetes objects, events or status.
    for entry in h.api.log() {
        assert!(!entry.body.to_string().contains(PASSWORD), "{entry:?}");
    }
}

#[tokio::test]
async fn bad_credentials_or_missing_secret_never_attach() {
    let url = protected_image_server(iso::data_iso("STAGED", b"x")).await;
    let cache = tempfile::tempdir().unwrap();
    let h = harness_full(staged_host(&url), None, Some(stager(cache.path())));
    h.ironic.state().power_on = true;

    let message = |h: &Harness| {
        h.api.get(&host_path(HOST)).unwrap()["status"]["dataImage"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    h.reconcile_until(|h| message(h).contains("image-creds") && message(h).contains("not found"))
        .await;
    assert_eq!(h.status_state().as_deref(), Some("Error"));

    h.api.put(
        &format!("/api/v1/namespaces/{NS}/secrets/image-creds"),
        secret("wrong-password"),
    );
    h.reconcile_until(|h| message(h).contains("401")).await;
    assert_eq!(h.status_state().as_deref(), Some("Error"));
    assert!(
        h.ironic.state().calls.is_empty(),
        "never attached without the credentials asked for"
    );
}

#[tokio::test]
async fn without_an_image_server_staging_hosts_wait_with_the_reason() {
    let h = harness(staged_host("https://images.example.test/private.iso"));
    h.ironic.state().power_on = true;
    h.reconcile().await.unwrap();
    let object = h.api.get(&host_path(HOST)).unwrap();
    assert_eq!(object["status"]["dataImage"]["state"], "Waiting");
    assert!(
        object["status"]["dataImage"]["message"]
            .as_str()
            .unwrap()
            .contains("--image-server-url")
    );
    assert!(h.ironic.state().calls.is_empty());
}

/// Issue 10: "attached …/config-a.iso" must not be shown (count 2) for a
/// later attach of config-b. A series is one reason and one message, as
/// client-go keys it.
#[tokio::test]
async fn events_repeat_only_with_the_same_message_and_name_our_field_manager() {
    use metal3_dataimage::reconcile::decision::{EventNote, Reason};
    use metal3_dataimage::reconcile::events::EventPublisher;
    let api = Arc::new(FakeApi::default());
    let publisher = EventPublisher::new(fake_client(api.clone()), Some("pod-a".into()));
    let regarding = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some("metal3.io/v1alpha1".into()),
        kind: Some("BareMetalHost".into()),
        name: Some(HOST.into()),
        namespace: Some(NS.into()),
        uid: Some("uid-1".into()),
        ..Default::default()
    };
    let note = |message: &str| EventNote {
        reason: Reason::Attached,
        message: message.into(),
    };
    for message in [
        "attached http://x/config-a.iso",
        "attached http://x/config-b.iso",
        "attached http://x/config-b.iso",
    ] {
        publisher.publish(&note(message), &regarding).await.unwrap();
    }
    let log = api.log();
    let writes: Vec<_> = log.iter().filter(|l| l.path.contains("/events")).collect();
    assert_eq!(writes.len(), 3, "{writes:?}");
    assert_eq!(writes[0].method, "POST");
    assert_eq!(writes[0].body["note"], "attached http://x/config-a.iso");
    assert_eq!(writes[1].method, "POST", "a new message is a new Event");
    assert_eq!(writes[1].body["note"], "attached http://x/config-b.iso");
    assert_eq!(
        writes[2].method, "PATCH",
        "the same message repeats the series"
    );
    assert!(
        writes[2]
            .path
            .ends_with(writes[1].body["metadata"]["name"].as_str().unwrap())
    );
    assert_eq!(writes[2].body["series"]["count"], 2);
    for write in &writes {
        assert!(
            write.query.contains("fieldManager=metal3-dataimage"),
            "{write:?}"
        );
    }
    let stored = api
        .get(&format!(
            "{}/{}",
            writes[1].path,
            writes[1].body["metadata"]["name"].as_str().unwrap()
        ))
        .unwrap();
    assert_eq!(stored["note"], "attached http://x/config-b.iso");
    assert_eq!(stored["type"], "Normal");
    assert_eq!(stored["reportingController"], "metal3-dataimage");
    assert_eq!(stored["reportingInstance"], "pod-a");
}
