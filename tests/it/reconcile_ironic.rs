//! The reconciler's full loop against the real Ironic (and its Redfish
//! emulator) started by `tests/ironic/up.sh`, with the Kubernetes side faked
//! (reconcile_support/fake_kube.rs). Nodes used: IRONIC_NODES #5, #6, #7.
//!
//! Needs the Ironic environment (tests/run.sh starts it); fails with
//! instructions when it is missing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::runtime::controller::Action as Requeue;
use metal3_dataimage::ironic::{IronicApi, IronicClient, IronicConfig, IronicError};
use metal3_dataimage::reconcile::controller::{self, Context};
use metal3_dataimage::reconcile::decision::DecisionConfig;
use metal3_dataimage::reconcile::metrics::Metrics;
use metal3_dataimage::reconcile::record::{
    AttachedRecord, FINALIZER, HOLD_ANNOTATION, Phase, STATE_ANNOTATION,
};
use serde_json::{Value, json};

use crate::support::fake_kube;
use crate::support::ironic as ironic_support;
use crate::support::iso;

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
        Arc::new(Metrics::default()),
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
    // The node runs, and the baremetal-operator reports it (`status.poweredOn`
    // follows Ironic's power state in its host state machine).
    let mut host = host_object("provisioned", &node, Some(&url_a));
    host["status"]["poweredOn"] = json!(true);
    let l = setup(&env, &node, host).await;

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
            operation: metal3_dataimage::ironic::ours::Op::Attach,
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

// ------------------------------------------------------------------ Ironic outage

/// One request: when, which call, which node, whether it succeeded.
type Call = (Instant, &'static str, String, bool);

/// Counts every request the reconciler makes to the real Ironic.
struct Counting {
    inner: IronicClient,
    calls: Arc<std::sync::Mutex<Vec<Call>>>,
}

impl Counting {
    fn note<T>(&self, call: &'static str, node: &str, result: &Result<T, IronicError>) {
        self.calls
            .lock()
            .unwrap()
            .push((Instant::now(), call, node.to_string(), result.is_ok()));
    }
}

impl controller::IronicApi for Counting {
    async fn get_node(&self, node: &str) -> Result<metal3_dataimage::ironic::Node, IronicError> {
        let r = self.inner.get_node(node).await;
        self.note("get_node", node, &r);
        r
    }
    async fn list_vmedia(
        &self,
        node: &str,
    ) -> Result<Vec<metal3_dataimage::ironic::VirtualMedia>, IronicError> {
        let r = self.inner.list_vmedia(node).await;
        self.note("list_vmedia", node, &r);
        r
    }
    async fn attach_cdrom(&self, node: &str, image_url: &str) -> Result<(), IronicError> {
        let r = self.inner.attach_cdrom(node, image_url).await;
        self.note("attach", node, &r);
        r
    }
    async fn detach_cdrom(&self, node: &str) -> Result<(), IronicError> {
        let r = self.inner.detach_cdrom(node).await;
        self.note("detach", node, &r);
        r
    }
    async fn ping(&self) -> Result<(), IronicError> {
        let r = self.inner.ping().await;
        self.note("ping", "", &r);
        r
    }
}

/// Runs reconciles the way kube-runtime's `Controller` schedules them
/// (kube-runtime 5.0 `controller/mod.rs` + `scheduler.rs`): a change of a
/// host (any write, ours included, arrives as a watch event) reconciles it
/// at once; otherwise at its requeue time; `reconcile_all_on` (the Ironic
/// recovery trigger wired in `reconcile::run`) reconciles every host.
struct Fleet {
    api: Arc<FakeApi>,
    ctx: Arc<Context<Counting>>,
    names: Vec<String>,
    seen: std::collections::HashMap<String, String>,
    due: std::collections::HashMap<String, Instant>,
    recoveries: std::pin::Pin<Box<dyn futures::Stream<Item = ()> + Send>>,
    reconciles: usize,
}

impl Fleet {
    fn object(&self, name: &str) -> Value {
        self.api.get(&host_path(name)).expect("host exists")
    }

    fn status(&self, name: &str) -> Value {
        self.object(name)["status"]["dataImage"].clone()
    }

    fn put(&self, name: &str, edit: impl FnOnce(&mut Value)) {
        let mut object = self.object(name);
        edit(&mut object);
        let generation = object["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
        object["metadata"]["generation"] = json!(generation);
        self.api.put(&host_path(name), object);
    }

    async fn run_until(
        &mut self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Fleet) -> bool,
    ) -> Duration {
        use futures::StreamExt;
        let start = Instant::now();
        loop {
            if done(self) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < limit,
                "{what}: not reached within {limit:?}: {}",
                self.names
                    .iter()
                    .map(|n| format!("{n}: {}", self.status(n)))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            let now = Instant::now();
            for name in self.names.clone() {
                let object = self.object(&name);
                let rv = object["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let changed = self.seen.get(&name) != Some(&rv);
                let due = self.due.get(&name).is_some_and(|at| *at <= now);
                if !(changed || due) {
                    continue;
                }
                self.seen.insert(name.clone(), rv);
                let host: metal3_dataimage::model::bmh::HostResource =
                    serde_json::from_value(object).unwrap();
                self.reconciles += 1;
                let requeue = controller::reconcile_once(&host, &self.ctx)
                    .await
                    .unwrap_or(Some(Duration::from_secs(1)));
                match requeue {
                    Some(after) => self.due.insert(name, Instant::now() + after),
                    None => self.due.remove(&name),
                };
            }
            // Wait for the next tick or the recovery trigger.
            if let Ok(Some(())) =
                tokio::time::timeout(Duration::from_millis(50), self.recoveries.next()).await
            {
                for name in &self.names {
                    self.due.insert(name.clone(), Instant::now());
                }
            }
        }
    }
}

fn writes_of(log: &[Logged], name: &str) -> usize {
    let path = host_path(name);
    host_writes(log)
        .iter()
        .filter(|l| l.path == path || l.path == format!("{path}/status"))
        .count()
}

/// Issue 10: an Ironic outage in the middle of a detach, an attach and a
/// swap. Nothing is sent to Ironic while it is away except one probe every
/// 2 s; each host's status is written once; nothing counts as a host
/// failure; every host is retried as soon as Ironic answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ironic_outage_is_waited_out_without_writes_or_errors() {
    let outage = Duration::from_secs(
        std::env::var("OUTAGE_TEST_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let env = IronicEnv::load();
    assert!(
        env.restart_nodes.len() >= 4,
        "IRONIC_RESTART_NODES needs 4 nodes (tests/ironic/up.sh)"
    );
    let _restart = ironic_support::restart_instance().await;
    env.ctl(&["start-api", "restart"]);
    let client = IronicClient::connect(IronicConfig::new(env.restart_url.parse().unwrap()))
        .await
        .expect("connect to the restart instance");
    let nodes = &env.restart_nodes[1..4];
    for node in nodes {
        reset_node(&env, &env.restart_url, &client, node).await;
    }
    let images = ironic_support::ImageServer::start(vec![
        ("config-a.iso", iso::data_iso("OUTAGE_A", b"a")),
        ("config-b.iso", iso::data_iso("OUTAGE_B", b"b")),
    ])
    .await;
    let (url_a, url_b) = (images.url("config-a.iso"), images.url("config-b.iso"));
    let api = Arc::new(FakeApi::default());
    let names: Vec<String> = ["detach", "attach", "swap"]
        .iter()
        .map(|n| format!("outage-{n}"))
        .collect();
    for (name, node) in names.iter().zip(nodes) {
        let url = (name != "outage-attach").then_some(url_a.as_str());
        let mut host = host_object("provisioned", node, url);
        host["metadata"]["name"] = json!(name);
        host["metadata"]["uid"] = json!(format!("uid-{name}"));
        api.put(&host_path(name), host);
    }
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ctx = Arc::new(Context::new(
        fake_client(api.clone()),
        Counting {
            inner: client,
            calls: calls.clone(),
        },
        DecisionConfig::default(),
        4,
        Arc::new(Metrics::default()),
        None,
    ));
    let recoveries = Box::pin(ctx.health.recoveries());
    let mut fleet = Fleet {
        api: api.clone(),
        ctx: ctx.clone(),
        names: names.clone(),
        seen: Default::default(),
        due: Default::default(),
        recoveries,
        reconciles: 0,
    };
    fleet
        .run_until(
            "attached before the outage",
            Duration::from_secs(120),
            |f| {
                f.status("outage-detach")["state"] == "Attached"
                    && f.status("outage-swap")["state"] == "Attached"
            },
        )
        .await;

    // The outage: Ironic stops, and meanwhile the user removes, adds and
    // changes images.
    env.ctl(&["stop-api", "restart"]);
    api.clear_log();
    let mark = calls.lock().unwrap().len();
    let stopped = Instant::now();
    fleet.put("outage-detach", |o| {
        o["spec"].as_object_mut().unwrap().remove("dataImage");
    });
    fleet.put("outage-attach", |o| {
        o["spec"]["dataImage"] = json!({ "url": url_b });
    });
    fleet.put("outage-swap", |o| {
        o["spec"]["dataImage"] = json!({ "url": url_b });
    });
    let reconciles_before = fleet.reconciles;
    fleet
        .run_until("the outage", outage + Duration::from_secs(5), |_| {
            stopped.elapsed() >= outage
        })
        .await;
    let during: Vec<_> = calls.lock().unwrap()[mark..].to_vec();
    let log = api.log();
    let writes: Vec<usize> = names.iter().map(|n| writes_of(&log, n)).collect();
    let pings = during.iter().filter(|c| c.1 == "ping").count();
    let work = during.iter().filter(|c| c.1 != "ping").count();
    eprintln!(
        "outage of {outage:?}: host writes {writes:?} ({names:?}), Ironic requests: {work} calls + {pings} probes, {} reconciles",
        fleet.reconciles - reconciles_before
    );
    for (name, writes) in names.iter().zip(&writes) {
        assert!(*writes <= 2, "{name}: {writes} writes during the outage");
        let status = fleet.status(name);
        assert_eq!(status["state"], "Waiting", "{name}: {status}");
        assert!(
            status["message"]
                .as_str()
                .unwrap()
                .contains("Ironic is unreachable since"),
            "{status}"
        );
        assert_eq!(status["errorCount"], 0, "{name}: {status}");
    }
    assert!(
        work <= names.len(),
        "at most one failed read per host before the outage was known: {during:?}"
    );
    assert!(
        pings <= (outage.as_secs() / 2 + 3) as usize,
        "{pings} probes"
    );
    assert_eq!(ctx.metrics.ironic_up.get(), 0);

    // Ironic comes back.
    let started = Instant::now();
    let ctl = env.ctl.clone();
    let start = tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("bash")
            .arg(&ctl)
            .args(["start-api", "restart"])
            .output()
            .expect("ctl.sh");
        assert!(out.status.success(), "{out:?}");
        Instant::now()
    });
    let url_b2 = url_b.clone();
    fleet
        .run_until("recovered", Duration::from_secs(180), move |f| {
            f.status("outage-detach").is_null()
                && f.status("outage-attach")["state"] == "Attached"
                && f.status("outage-swap")["state"] == "Attached"
                && f.status("outage-swap")["url"] == url_b2.as_str()
        })
        .await;
    let done = Instant::now();
    let serving = start.await.expect("ctl.sh start-api");
    let recovered_at = ctx.health.recovered_at().expect("recovery seen");
    let noticed = jiff::Timestamp::now().duration_since(recovered_at);
    eprintln!(
        "recovery: ctl.sh start-api took {:?}; all three hosts done {:?} after ctl.sh returned ({:?} after the start began; recovery noticed {:?} ago)",
        serving - started,
        done.saturating_duration_since(serving),
        done - started,
        noticed
    );
    let all: Vec<_> = calls.lock().unwrap()[mark..].to_vec();
    let attaches = |node: &str| {
        all.iter()
            .filter(|c| c.1 == "attach" && c.2 == node && c.3)
            .count()
    };
    assert_eq!(attaches(&nodes[1]), 1, "one attach for the new image");
    assert_eq!(attaches(&nodes[2]), 1, "one attach for the swapped image");
    assert_eq!(attaches(&nodes[0]), 0);
    for name in &names[1..] {
        assert_eq!(fleet.status(name)["errorCount"], 0, "{name}");
    }
    assert_eq!(ctx.metrics.ironic_up.get(), 1);
    let failures = ctx
        .metrics
        .request_failures
        .get_or_create(
            &metal3_dataimage::reconcile::metrics::RequestFailureLabels {
                call: "ping",
                kind: "unavailable",
            },
        )
        .get();
    assert!(failures >= 1, "failed probes are counted");
}

/// Issue 10: the process wrote the `attaching` record and died before the
/// POST left. Against the real Ironic: nothing is inserted and no error is
/// written, so the attach counts as failed after the confirm timeout
/// ("no effect"), and the retry attaches exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_the_attaching_record_and_the_post_is_retried_once() {
    let env = IronicEnv::load();
    let node = env.node(16);
    let client = env.client().await;
    reset_node(&env, &env.url, &client, &node).await;
    let images =
        ironic_support::ImageServer::start(vec![("crash.iso", iso::data_iso("CRASH", b"c"))]).await;
    let url = images.url("crash.iso");
    let api = Arc::new(FakeApi::default());
    let mut host = host_object("provisioned", &node, Some(&url));
    // What the crashed process left: finalizer and record, no POST.
    let record = AttachedRecord::new(&url, &node, Phase::Attaching, jiff::Timestamp::now());
    host["metadata"]["annotations"][STATE_ANNOTATION] = json!(record.to_annotation());
    host["metadata"]["finalizers"] = json!([BMO_FINALIZER, FINALIZER]);
    api.put(&host_path(HOST), host);
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let config = DecisionConfig {
        confirm_timeout: Duration::from_secs(5),
        ..DecisionConfig::default()
    };
    let ctx = Arc::new(Context::new(
        fake_client(api.clone()),
        Counting {
            inner: client,
            calls: calls.clone(),
        },
        config,
        4,
        Arc::new(Metrics::default()),
        None,
    ));
    let mut fleet = Fleet {
        api: api.clone(),
        ctx: ctx.clone(),
        names: vec![HOST.to_string()],
        seen: Default::default(),
        due: Default::default(),
        recoveries: Box::pin(ctx.health.recoveries()),
        reconciles: 0,
    };
    fleet
        .run_until("no effect noticed", Duration::from_secs(60), |f| {
            f.status(HOST)["state"] == "Error"
        })
        .await;
    let status = fleet.status(HOST);
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("Ironic accepted the attach but the image was not inserted after 5s"),
        "{status}"
    );
    assert_eq!(status["errorCount"], 1);
    let attaches = || {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.1 == "attach")
            .count()
    };
    assert_eq!(
        attaches(),
        0,
        "never attached while the record said attaching"
    );
    fleet
        .run_until("retried", Duration::from_secs(90), |f| {
            f.status(HOST)["state"] == "Attached"
        })
        .await;
    assert_eq!(attaches(), 1, "exactly one POST");
    let (inserted, _) = redfish_cd(&env, &env.url, &node, None).await;
    assert!(inserted);
}

/// An image server that sends `body` in 64 KiB pieces, one every `pause`
/// (a large image on a slow link, scaled down); the second half waits until
/// `gate` is set, so the download is still running whatever the machine's
/// speed.
async fn trickling_server(
    body: Vec<u8>,
    pause: Duration,
    gate: Arc<std::sync::atomic::AtomicBool>,
) -> String {
    use axum::body::Body;
    use futures::StreamExt as _;
    let body = Arc::new(body);
    let app = axum::Router::new().route(
        "/slow.iso",
        axum::routing::get(move || {
            let body = body.clone();
            async move {
                let chunks: Vec<Vec<u8>> = body.chunks(64 << 10).map(<[u8]>::to_vec).collect();
                let half = chunks.len() / 2;
                let gate = gate.clone();
                let stream = futures::stream::iter(chunks.into_iter().enumerate()).then(
                    move |(i, chunk)| {
                        let gate = gate.clone();
                        async move {
                            tokio::time::sleep(pause).await;
                            while i >= half && !gate.load(std::sync::atomic::Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            Ok::<_, std::io::Error>(axum::body::Bytes::from(chunk))
                        }
                    },
                );
                axum::response::Response::builder()
                    .header("content-length", body.len())
                    .body(Body::from_stream(stream))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{address}/slow.iso")
}

/// Issue 11: a host whose image is still downloading never delays another
/// host. Both images must be staged (disableCertificateVerification); the
/// slow one trickles for about 8 s, the small one is attached meanwhile,
/// and the slow host shows its progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_staging_download_does_not_delay_another_host() {
    let env = IronicEnv::load();
    let (slow_node, fast_node) = (env.node(12), env.node(13));
    let client = env.client().await;
    for node in [&slow_node, &fast_node] {
        reset_node(&env, &env.url, &client, node).await;
    }
    let gate = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let slow_url = trickling_server(
        iso::data_iso("SLOW", &vec![7u8; 8 << 20]),
        Duration::from_millis(20),
        gate.clone(),
    )
    .await;
    let images =
        ironic_support::ImageServer::start(vec![("fast.iso", iso::data_iso("FAST", b"f"))]).await;
    let fast_url = images.url("fast.iso");

    let cache = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}/", listener.local_addr().unwrap());
    let stager = metal3_dataimage::staging::Stager::new(metal3_dataimage::staging::StagingConfig {
        cache_dir: cache.path().to_path_buf(),
        max_image_size: 64 << 20,
        image_ca_file: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: public.parse().unwrap(),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        retry_failed: metal3_dataimage::staging::RETRY_FAILED,
    })
    .unwrap();
    let serving = stager.clone();
    tokio::spawn(async move {
        let _ = serving
            .serve_listener(listener, None, std::future::pending())
            .await;
    });

    let api = Arc::new(FakeApi::default());
    let names = ["slow", "fast"].map(|n| format!("staging-{n}"));
    for (name, (node, url)) in names
        .iter()
        .zip([(&slow_node, &slow_url), (&fast_node, &fast_url)])
    {
        let mut host = host_object("provisioned", node, None);
        host["metadata"]["name"] = json!(name);
        host["spec"]["dataImage"] = json!({ "url": url, "disableCertificateVerification": true });
        api.put(&host_path(name), host);
    }
    let mut ctx = Context::new(
        fake_client(api.clone()),
        Counting {
            inner: client,
            calls: Default::default(),
        },
        DecisionConfig::default(),
        4,
        Arc::new(Metrics::default()),
        None,
    );
    ctx.stager = Some(stager);
    let ctx = Arc::new(ctx);
    let mut fleet = Fleet {
        api: api.clone(),
        ctx: ctx.clone(),
        names: names.to_vec(),
        seen: Default::default(),
        due: Default::default(),
        recoveries: Box::pin(ctx.health.recoveries()),
        reconciles: 0,
    };
    let progress = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let seen = progress.clone();
    fleet
        .run_until(
            "the small image attached",
            Duration::from_secs(60),
            move |f| {
                if let Some(message) = f.status("staging-slow")["message"].as_str()
                    && message.starts_with("staging the image")
                {
                    let mut seen = seen.lock().unwrap();
                    if seen.last().map(String::as_str) != Some(message) {
                        seen.push(message.to_string());
                    }
                }
                f.status("staging-fast")["state"] == "Attached"
            },
        )
        .await;
    let slow = fleet.status("staging-slow");
    assert_eq!(slow["state"], "Waiting", "still downloading: {slow}");
    eprintln!("slow host while the fast one attached: {slow}");
    gate.store(true, std::sync::atomic::Ordering::SeqCst);
    fleet
        .run_until("the slow image attached", Duration::from_secs(120), |f| {
            f.status("staging-slow")["state"] == "Attached"
        })
        .await;
    let progress = progress.lock().unwrap().clone();
    eprintln!("progress shown: {progress:?}");
    assert!(
        progress.iter().any(|m| m.contains(" MiB of 8.0 MiB")),
        "{progress:?}"
    );
    assert_eq!(
        fleet.status("staging-slow")["stagedSize"],
        iso::data_iso("SLOW", &vec![7u8; 8 << 20]).len()
    );
}

/// Polls the node until `done` holds for its JSON.
async fn wait_node(
    env: &IronicEnv,
    node: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
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
        if done(&doc) {
            return doc;
        }
        assert!(
            Instant::now() < deadline,
            "node {node}: {what} not reached: {doc}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Issue 11: servicing (the operator's firmware updates) runs Ironic's
/// `prepare_ramdisk`, which ejects the CD. Against the real Ironic: a
/// service with an agent step makes Ironic power the node off and eject our
/// image (then it fails, as no ramdisk can boot here, and is aborted back to
/// `active`, the closest this Ironic allows to a finished service). The
/// reconciler notices through the operator's `servicing` status, and attaches
/// again as soon as the node is active, long before `--verify-interval`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servicing_ejects_the_image_and_it_is_attached_again_once_active() {
    let env = IronicEnv::load();
    let node = env.node(14);
    let client = env.client().await;
    reset_node(&env, &env.url, &client, &node).await;
    let images = ironic_support::ImageServer::start(vec![
        ("config.iso", iso::data_iso("SERVICED", b"s")),
        ("deploy.iso", iso::data_iso("DEPLOY", b"not a ramdisk")),
    ])
    .await;
    let url = images.url("config.iso");
    let api = Arc::new(FakeApi::default());
    api.put(
        &host_path(HOST),
        host_object("provisioned", &node, Some(&url)),
    );
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ctx = Arc::new(Context::new(
        fake_client(api.clone()),
        Counting {
            inner: client,
            calls: calls.clone(),
        },
        DecisionConfig::default(),
        4,
        Arc::new(Metrics::default()),
        None,
    ));
    let mut fleet = Fleet {
        api: api.clone(),
        ctx: ctx.clone(),
        names: vec![HOST.to_string()],
        seen: Default::default(),
        due: Default::default(),
        recoveries: Box::pin(ctx.health.recoveries()),
        reconciles: 0,
    };
    fleet
        .run_until("attached", Duration::from_secs(90), |f| {
            f.status(HOST)["state"] == "Attached"
        })
        .await;
    let attaches = || {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.1 == "attach" && c.3)
            .count()
    };
    assert_eq!(attaches(), 1);

    // The operator starts servicing: its status says so, and Ironic runs a
    // service whose step needs the ramdisk.
    let (status, body) = ironic_support::ironic_raw(
        &env.url,
        reqwest::Method::PATCH,
        &format!("/v1/nodes/{node}"),
        Some(json!([{"op": "add", "path": "/driver_info/deploy_iso", "value": images.url("deploy.iso")}])),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    fleet.put(HOST, |o| {
        o["status"]["operationalStatus"] = json!("servicing");
    });
    let (status, body) = ironic_support::ironic_raw(
        &env.url,
        reqwest::Method::PUT,
        &format!("/v1/nodes/{node}/states/provision"),
        Some(json!({"target": "service", "service_steps": [{"interface": "deploy", "step": "burn_in_cpu"}]})),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let failed = wait_node(&env, &node, "service failed", |d| {
        d["provision_state"] == "service failed" && d["reservation"].is_null()
    })
    .await;
    eprintln!("service: {}", failed["last_error"]);
    let (inserted, _) = redfish_cd(&env, &env.url, &node, None).await;
    assert!(!inserted, "prepare_ramdisk ejected the CD");
    fleet
        .run_until("servicing noticed", Duration::from_secs(30), |f| {
            f.status(HOST)["message"]
                .as_str()
                .is_some_and(|m| m.contains("Ironic node is service failed"))
        })
        .await;
    assert_eq!(attaches(), 1, "nothing attached while the node is serviced");

    // The service ends (aborted back to active), the operator's status too.
    let (status, body) = ironic_support::ironic_raw(
        &env.url,
        reqwest::Method::PUT,
        &format!("/v1/nodes/{node}/states/provision"),
        Some(json!({"target": "abort"})),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    wait_node(&env, &node, "active", |d| {
        d["provision_state"] == "active" && d["reservation"].is_null()
    })
    .await;
    let back = Instant::now();
    fleet.put(HOST, |o| o["status"]["operationalStatus"] = json!("OK"));
    fleet
        .run_until("attached again", Duration::from_secs(90), |f| {
            f.status(HOST)["state"] == "Attached"
                && f.status(HOST)["message"]
                    .as_str()
                    .is_some_and(|m| !m.contains("Ironic node is"))
        })
        .await;
    eprintln!(
        "attached again {:?} after the node was active",
        back.elapsed()
    );
    assert_eq!(attaches(), 2, "attached again, once");
    let (inserted, image) = wait_redfish_cd(&env, &env.url, &node, true, None).await;
    assert!(inserted, "{image}");
    assert!(event_reasons(&api.log()).iter().any(|r| r == "Ejected"));
}

// ---------------------------------------------------------------------------
// Sidecar mode: `reconcile` configured only by the baremetal-operator's
// environment and files (docs/install.md, "5b. Or: the reconciler as a
// sidecar of the baremetal-operator").
// Uses the basic-auth Ironic's one node (IRONIC_BASIC_NODES), which no other
// test in this binary touches.

#[derive(clap::Parser)]
struct ReconcileCli {
    #[command(flatten)]
    args: metal3_dataimage::reconcile::ReconcileArgs,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_connects_with_only_the_operators_settings_and_attaches() {
    use crate::support::observe::{CdromExt as _, Expect, Verdict};
    use clap::Parser as _;
    use metal3_dataimage::reconcile::{FileState, OperatorEnv, resolve_ironic_config};

    let env = IronicEnv::load();
    // Node 0 is `ironic_client::basic_auth_good_and_bad_credentials`'s.
    let node = env
        .basic_nodes
        .get(1)
        .cloned()
        .expect("IRONIC_BASIC_NODES has two nodes (tests/ironic/up.sh)");

    // The operator's layout: $METAL3_AUTH_ROOT_DIR/ironic/{username,password}
    // as a mounted Secret writes them (no trailing newline needed, one is fine).
    let root = tempfile::tempdir().unwrap();
    let auth_dir = root.path().join("ironic");
    std::fs::create_dir(&auth_dir).unwrap();
    std::fs::write(auth_dir.join("username"), &env.basic_user).unwrap();
    std::fs::write(
        auth_dir.join("password"),
        format!("{}\n", env.basic_password),
    )
    .unwrap();
    let absent = root.path().join("absent");
    let operator_env = |endpoint: String, auth_root: &std::path::Path| {
        let vars: std::collections::HashMap<&str, String> = [
            // As in the operator's `ironic` ConfigMap: with the /v1/ suffix.
            ("IRONIC_ENDPOINT", endpoint),
            ("METAL3_AUTH_ROOT_DIR", auth_root.display().to_string()),
            // Plain HTTP Ironic: no CA, no client certificate (paths that do
            // not exist, so nothing on this machine under /opt/metal3 counts).
            (
                "IRONIC_CACERT_FILE",
                absent.join("ca.crt").display().to_string(),
            ),
            (
                "IRONIC_CLIENT_CERT_FILE",
                absent.join("tls.crt").display().to_string(),
            ),
            (
                "IRONIC_CLIENT_PRIVATE_KEY_FILE",
                absent.join("tls.key").display().to_string(),
            ),
        ]
        .into_iter()
        .collect();
        OperatorEnv::from_lookup(|key| vars.get(key).cloned())
    };

    // No reconciler flag at all (and none of METAL3_DATAIMAGE_IRONIC_* set).
    let args = ReconcileCli::try_parse_from(["reconcile"]).unwrap().args;
    assert!(
        args.ironic_url.is_none() && args.ironic_username.is_none(),
        "METAL3_DATAIMAGE_IRONIC_* must not be set for this test"
    );
    let endpoint = format!("{}/v1/", env.basic_url.trim_end_matches('/'));
    let resolved = resolve_ironic_config(
        &args,
        &operator_env(endpoint.clone(), root.path()),
        &FileState::read,
    )
    .expect("the operator's settings resolve");
    assert_eq!(
        resolved.sources,
        [
            "endpoint from IRONIC_ENDPOINT".to_string(),
            format!("basic auth from {}", auth_dir.display()),
        ]
    );
    assert_eq!(
        resolved.config.password.as_deref(),
        Some(env.basic_password.as_str())
    );

    let client = IronicClient::connect(resolved.config)
        .await
        .expect("connect with the operator's settings");
    // The API root (no `/v1`, no credentials) shows in the client's Debug.
    let root = format!("{}/", env.basic_url.trim_end_matches('/'));
    let shown = format!("{client:?}");
    assert!(shown.contains(&format!("root: {root:?}")), "{shown}");
    reset_node(&env, &env.basic_url, &client, &node).await;
    let server =
        ironic_support::ImageServer::start(vec![("sidecar.iso", iso::data_iso("SIDECAR", b"s"))])
            .await;
    let image_url = server.url("sidecar.iso");
    ironic_support::retry_locked(|| client.attach_cdrom(&node, &image_url))
        .await
        .expect("attach");
    let obs = client
        .wait_cdrom(&node, Expect::Inserted, Duration::from_secs(60))
        .await
        .expect("observe the attach");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");
    let auth = Some((env.basic_user.as_str(), env.basic_password.as_str()));
    let (inserted, _) = wait_redfish_cd(&env, &env.basic_url, &node, true, auth).await;
    assert!(inserted, "the BMC has the image");
    ironic_support::retry_locked(|| client.detach_cdrom(&node))
        .await
        .expect("detach");
    let obs = client
        .wait_cdrom(&node, Expect::Ejected, Duration::from_secs(60))
        .await
        .expect("observe the detach");
    assert_eq!(obs.verdict, Verdict::Confirmed, "{obs:?}");

    // An empty credential directory (an optional Secret that does not
    // exist) means no authentication, as no directory does: this Ironic
    // then refuses node calls.
    let empty_root = tempfile::tempdir().unwrap();
    std::fs::create_dir(empty_root.path().join("ironic")).unwrap();
    for auth_root in [empty_root.path(), absent.as_path()] {
        let resolved = resolve_ironic_config(
            &args,
            &operator_env(endpoint.clone(), auth_root),
            &FileState::read,
        )
        .expect("no credentials resolve to no auth");
        assert_eq!(resolved.config.username, None);
        let client = IronicClient::connect(resolved.config)
            .await
            .expect("GET / is public");
        let err = client.get_node(&node).await.expect_err("no credentials");
        assert!(
            matches!(&err, IronicError::Http { status: 401, .. }),
            "{err:?}"
        );
    }
}

/// Issue 11: on Ironic before 35.0 (the old tested release) `GET vmedia`
/// takes the node's exclusive lock and answers 409 while the node is
/// reserved. The reconciler's confirmation meets that right after its own
/// attach, and whenever another operation holds the node: it must read it
/// as "not yet" (no error, no backoff) and confirm once the lock is gone.
/// The lock is held here by `ctl.sh lock-node` (as a long conductor
/// operation would), so the 409s are certain, not a matter of timing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_releases_locked_vmedia_read_is_not_an_error() {
    let env = IronicEnv::load();
    let target = env.old_release();
    let node = target.node(5);
    let client = IronicClient::connect(IronicConfig::new(target.url.parse().unwrap()))
        .await
        .expect("connect to the old release");
    reset_node(&env, &target.url, &client, &node).await;
    let images =
        ironic_support::ImageServer::start(vec![("old.iso", iso::data_iso("OLDREL", b"o"))]).await;
    let url = images.url("old.iso");
    let api = Arc::new(FakeApi::default());
    api.put(
        &host_path(HOST),
        host_object("provisioned", &node, Some(&url)),
    );
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let ctx = Arc::new(Context::new(
        fake_client(api.clone()),
        Counting {
            inner: client,
            calls: calls.clone(),
        },
        DecisionConfig::default(),
        4,
        Arc::new(Metrics::default()),
        None,
    ));
    let mut fleet = Fleet {
        api: api.clone(),
        ctx: ctx.clone(),
        names: vec![HOST.to_string()],
        seen: Default::default(),
        due: Default::default(),
        recoveries: Box::pin(ctx.health.recoveries()),
        reconciles: 0,
    };
    fleet
        .run_until("attach sent", Duration::from_secs(60), |f| {
            f.status(HOST)["state"] == "Attaching"
        })
        .await;
    // Let our own attach finish (its worker releases the node lock), then
    // hold the lock as another conductor's operation would.
    tokio::time::sleep(Duration::from_secs(4)).await;
    env.ctl(&["lock-node", "oldrel", &node]);
    let locked_reads = || {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.1 == "list_vmedia" && !c.3)
            .count()
    };
    fleet
        .run_until("409s met", Duration::from_secs(60), |_| locked_reads() >= 2)
        .await;
    let status = fleet.status(HOST);
    assert_eq!(status["state"], "Attaching", "{status}");
    assert_eq!(status["errorCount"], 0, "{status}");
    assert!(
        status["message"]
            .as_str()
            .unwrap()
            .contains("the node is locked"),
        "{status}"
    );
    env.ctl(&["unlock-node", "oldrel", &node]);
    fleet
        .run_until("confirmed", Duration::from_secs(90), |f| {
            f.status(HOST)["state"] == "Attached"
        })
        .await;
    assert_eq!(fleet.status(HOST)["errorCount"], 0);
    let attaches = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.1 == "attach")
        .count();
    assert_eq!(attaches, 1, "confirmed, never re-sent");
    eprintln!("{} locked GET vmedia answers met", locked_reads());
}

/// Issue 15: a host whose image is built from a Secret (contentFrom). The
/// reconciler builds the ISO, serves it from its image server and attaches
/// it; the bytes behind the staging URL are an ISO whose files are the
/// Secret's keys (listed by isoinfo, an independent reader); a change of
/// the Secret is noticed at the next re-read (CONTENT_POLL) and swapped:
/// detach, confirm, attach.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_built_from_a_secret_is_attached_and_swapped_when_the_secret_changes() {
    use base64::Engine as _;
    let env = IronicEnv::load();
    let node = env.node(15);
    let client = env.client().await;
    reset_node(&env, &env.url, &client, &node).await;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret = |user_data: &str| {
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "worker-config", "namespace": NS},
               "data": {"user-data": b64(user_data), "meta-data": b64("instance-id: worker-0\n")}})
    };
    let secret_path = format!("/api/v1/namespaces/{NS}/secrets/worker-config");
    let api = Arc::new(FakeApi::default());
    api.put(&secret_path, secret("#cloud-config\nhostname: first\n"));
    let mut host = host_object("provisioned", &node, None);
    host["spec"]["dataImage"] =
        json!({"contentFrom": {"secretName": "worker-config"}, "volumeLabel": "cidata"});
    api.put(&host_path(HOST), host);

    let cache = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let public = format!("http://{}/", listener.local_addr().unwrap());
    let stager = metal3_dataimage::staging::Stager::new(metal3_dataimage::staging::StagingConfig {
        cache_dir: cache.path().to_path_buf(),
        max_image_size: 64 << 20,
        image_ca_file: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: public.parse().unwrap(),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        retry_failed: metal3_dataimage::staging::RETRY_FAILED,
    })
    .unwrap();
    let serving = stager.clone();
    tokio::spawn(async move {
        let _ = serving
            .serve_listener(listener, None, std::future::pending())
            .await;
    });
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut ctx = Context::new(
        fake_client(api.clone()),
        Counting {
            inner: client,
            calls: calls.clone(),
        },
        DecisionConfig::default(),
        4,
        Arc::new(Metrics::default()),
        None,
    );
    ctx.stager = Some(stager.clone());
    let ctx = Arc::new(ctx);
    let mut fleet = Fleet {
        api: api.clone(),
        ctx: ctx.clone(),
        names: vec![HOST.to_string()],
        seen: Default::default(),
        due: Default::default(),
        recoveries: Box::pin(ctx.health.recoveries()),
        reconciles: 0,
    };
    fleet
        .run_until("attached", Duration::from_secs(90), |f| {
            f.status(HOST)["state"] == "Attached"
        })
        .await;
    let status = fleet.status(HOST);
    assert_eq!(status["url"], "secret:worker-config", "{status}");
    let first_digest = status["stagedDigest"].as_str().unwrap().to_string();
    let (inserted, _) = redfish_cd(&env, &env.url, &node, None).await;
    assert!(inserted);

    // The bytes behind the staging URL, read by an independent reader.
    let staged = stager.staged(&format!("{NS}/{HOST}")).expect("staged");
    let bytes = ironic_support::http()
        .get(&staged.ironic_url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(status["stagedSize"], bytes.len());
    let file = cache.path().join("read-back.iso");
    std::fs::write(&file, &bytes).unwrap();
    let listing = std::process::Command::new("isoinfo")
        .args(["-f", "-J", "-i"])
        .arg(&file)
        .output()
        .expect("isoinfo (Debian genisoimage; tests/run.sh installs it)");
    let names = String::from_utf8_lossy(&listing.stdout).to_string();
    assert!(
        names.contains("/user-data") && names.contains("/meta-data"),
        "{names}"
    );
    let label = std::process::Command::new("isoinfo")
        .args(["-d", "-J", "-i"])
        .arg(&file)
        .output()
        .unwrap();
    let volume = String::from_utf8_lossy(&label.stdout).to_lowercase();
    assert!(volume.contains("volume id: cidata"), "{volume}");
    // Ironic republished exactly those bytes for the BMC.
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
    assert_eq!(published, bytes);

    // The Secret changes: swapped at the next re-read.
    api.put(&secret_path, secret("#cloud-config\nhostname: second\n"));
    let first = first_digest.clone();
    fleet
        .run_until("swapped", Duration::from_secs(150), move |f| {
            let status = f.status(HOST);
            status["state"] == "Attached" && status["stagedDigest"].as_str() != Some(first.as_str())
        })
        .await;
    let reasons = event_reasons(&api.log());
    assert!(reasons.iter().any(|r| r == "Detached"), "{reasons:?}");
    let attaches = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| c.1 == "attach" && c.3)
        .count();
    assert_eq!(attaches, 2);
    // No Secret value reached the host object, its events or the status.
    for entry in api.log() {
        let text = entry.body.to_string();
        if entry.path.contains("/secrets/") {
            continue;
        }
        assert!(
            !text.contains("hostname: second")
                && !text.contains(&b64("#cloud-config\nhostname: second\n")),
            "{entry:?}"
        );
    }
}

/// Issue 13: what one attach costs in Ironic requests. Before the attach the
/// node and the drive are read (every gate needs both), then one `POST
/// vmedia`. The attach went into an empty drive, so the drive alone confirms
/// it: a confirm read that shows our image ends the attach, and only one
/// that does not costs a node read too. A verification is one drive read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_is_confirmed_and_verified_by_the_drive_alone() {
    let env = IronicEnv::load();
    let node = env.node(17);
    let client = env.client().await;
    reset_node(&env, &env.url, &client, &node).await;
    let images =
        ironic_support::ImageServer::start(vec![("config.iso", iso::data_iso("READS", b"r"))])
            .await;
    let api = Arc::new(FakeApi::default());
    let mut host = host_object("provisioned", &node, Some(&images.url("config.iso")));
    host["status"]["poweredOn"] = json!(true);
    api.put(&host_path(HOST), host);
    let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
    let verify = Duration::from_secs(2);
    let ctx = Arc::new(Context::new(
        fake_client(api.clone()),
        Counting {
            inner: client,
            calls: calls.clone(),
        },
        DecisionConfig {
            verify_interval: verify,
            ..DecisionConfig::default()
        },
        4,
        Arc::new(Metrics::default()),
        None,
    ));
    let mut fleet = Fleet {
        api: api.clone(),
        ctx: ctx.clone(),
        names: vec![HOST.to_string()],
        seen: Default::default(),
        due: Default::default(),
        recoveries: Box::pin(ctx.health.recoveries()),
        reconciles: 0,
    };
    fleet
        .run_until("attached", Duration::from_secs(120), |f| {
            f.status(HOST)["state"] == "Attached"
        })
        .await;
    let count = |calls: &[Call], what: &str| calls.iter().filter(|c| c.1 == what).count();
    let attach: Vec<Call> = calls.lock().unwrap().clone();
    let (nodes, drives) = (count(&attach, "get_node"), count(&attach, "list_vmedia"));
    eprintln!(
        "attach: {nodes} GET node, {drives} GET vmedia, {} POST",
        count(&attach, "attach")
    );
    assert_eq!(count(&attach, "attach"), 1, "{attach:?}");
    assert!(
        attach.iter().all(|c| c.3),
        "every call succeeded: {attach:?}"
    );
    assert!(
        drives >= 2,
        "a read before and one after the POST: {attach:?}"
    );
    // Only the confirm reads that did not show our image yet read the node.
    assert_eq!(nodes, 1 + (drives - 2), "{attach:?}");
    assert_eq!(
        attach.last().unwrap().1,
        "list_vmedia",
        "confirmed by the drive"
    );
    let record = fleet.api.get(&host_path(HOST)).unwrap()["metadata"]["annotations"]
        [STATE_ANNOTATION]
        .as_str()
        .map(|s| serde_json::from_str::<AttachedRecord>(s).unwrap())
        .unwrap();
    assert!(record.attached_running, "status.poweredOn said it runs");

    // Verification after --verify-interval: the drive alone.
    let mark = attach.len();
    fleet
        .run_until("verified twice", Duration::from_secs(30), |_| {
            count(&calls.lock().unwrap()[mark..], "list_vmedia") >= 2
        })
        .await;
    let verifying: Vec<Call> = calls.lock().unwrap()[mark..].to_vec();
    assert_eq!(count(&verifying, "get_node"), 0, "{verifying:?}");
    assert_eq!(count(&verifying, "attach"), 0, "{verifying:?}");
    assert_eq!(fleet.status(HOST)["state"], "Attached");
}
