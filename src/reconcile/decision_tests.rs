//! Table tests of the pure decision function: one test per scenario of the
//! reconciler's specification (issue 5) and the derived upstream cases.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::model::bmh::{BareMetalHostStatus, HostResource, ProvisionStatus};
use crate::model::{DataImageSpec, DataImageState};
use crate::reconcile::record::{
    AttachedRecord, DETACHED_ANNOTATION, FINALIZER, HOLD_ANNOTATION, HOLD_VALUE, PAUSED_ANNOTATION,
    Phase, STATE_ANNOTATION,
};

const NODE: &str = "1be26c0b-03f2-4d2e-ae87-c02d7f33c123";
const URL1: &str = "https://images.example.test/data-1.iso";
const URL2: &str = "https://images.example.test/data-2.iso";

fn now() -> Timestamp {
    "2026-03-01T12:00:00Z".parse().unwrap()
}

fn ago(seconds: i64) -> Timestamp {
    Timestamp::from_second(now().as_second() - seconds).unwrap()
}

/// A host builder: provisioned, online, with a node, optionally a dataImage.
#[derive(Clone)]
struct H(HostResource);

impl H {
    fn new(state: &str, url: Option<&str>) -> Self {
        let mut host = HostResource::default();
        host.metadata.name = Some("host-0".into());
        host.metadata.namespace = Some("metal3".into());
        host.metadata.generation = Some(3);
        host.spec.online = Some(true);
        host.spec.data_image = url.map(|u| DataImageSpec {
            url: u.into(),
            ..Default::default()
        });
        host.status = Some(BareMetalHostStatus {
            provisioning: Some(ProvisionStatus {
                state: state.into(),
                id: NODE.into(),
            }),
            operational_status: Some("OK".into()),
            ..Default::default()
        });
        Self(host)
    }
    fn annotate(mut self, key: &str, value: &str) -> Self {
        self.0
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
        self
    }
    fn record(self, record: &AttachedRecord) -> Self {
        self.annotate(STATE_ANNOTATION, &record.to_annotation())
    }
    fn hold(self) -> Self {
        self.annotate(HOLD_ANNOTATION, HOLD_VALUE)
    }
    fn finalizer(mut self) -> Self {
        self.0.metadata.finalizers = Some(vec!["metal3.io/baremetalhost".into(), FINALIZER.into()]);
        self
    }
    fn deleting(mut self, seconds_ago: i64) -> Self {
        self.0.metadata.deletion_timestamp = Some(Time(ago(seconds_ago)));
        self
    }
    fn online(mut self, online: bool) -> Self {
        self.0.spec.online = Some(online);
        self
    }
    fn disable_power_off(mut self) -> Self {
        self.0.spec.disable_power_off = Some(true);
        self
    }
    fn no_node(mut self) -> Self {
        if let Some(p) = self.0.status.as_mut().and_then(|s| s.provisioning.as_mut()) {
            p.id.clear();
        }
        self
    }
    fn credentials(mut self) -> Self {
        if let Some(d) = self.0.spec.data_image.as_mut() {
            d.credentials_name = Some("image-creds".into());
        }
        self
    }
    fn status(mut self, status: DataImageStatus) -> Self {
        if let Some(s) = self.0.status.as_mut() {
            s.data_image = Some(status);
        }
        self
    }
}

fn record(url: &str, phase: Phase, since: i64) -> AttachedRecord {
    let mut r = AttachedRecord::new(url, NODE, phase, ago(since));
    r.requested_at = Some(ago(since + 5));
    r
}

fn node(power: &str) -> Node {
    Node {
        uuid: NODE.into(),
        provision_state: ProvisionState::Active,
        power_state: Some(power.to_string().into()),
        ..Default::default()
    }
}

fn cd(image: Option<&str>) -> Vec<VirtualMedia> {
    vec![
        VirtualMedia {
            media_types: vec!["CD".into(), "DVD".into()],
            inserted: image.is_some(),
            image: Some(image.unwrap_or("").to_string()),
        },
        VirtualMedia {
            media_types: vec!["Floppy".into(), "USBStick".into()],
            inserted: false,
            image: Some(String::new()),
        },
    ]
}

fn ours() -> Vec<VirtualMedia> {
    cd(Some(&format!(
        "http://127.0.0.1:8088/redfish/cdrom-{NODE}.iso"
    )))
}

fn boot_media() -> Vec<VirtualMedia> {
    cd(Some(&format!(
        "http://127.0.0.1:8088/redfish/boot-{NODE}.iso"
    )))
}

fn empty() -> Vec<VirtualMedia> {
    cd(None)
}

fn observed(node: Node, vmedia: Vec<VirtualMedia>) -> IronicView {
    IronicView::Observed { node, vmedia }
}

struct Case {
    host: H,
    ironic: IronicView,
    staging: StagingView,
    conflict: bool,
    config: DecisionConfig,
    verified_ago: Option<Duration>,
}

impl Case {
    fn new(host: H) -> Self {
        Self {
            host,
            ironic: IronicView::NotObserved,
            staging: StagingView::NotNeeded,
            conflict: false,
            config: DecisionConfig::default(),
            verified_ago: None,
        }
    }
    fn ironic(mut self, view: IronicView) -> Self {
        self.ironic = view;
        self
    }
    fn staging(mut self, view: StagingView) -> Self {
        self.staging = view;
        self
    }
    fn step(&self) -> Step {
        decide(&Input {
            host: &self.host.0,
            ironic: &self.ironic,
            staging: &self.staging,
            upstream_conflict: self.conflict,
            now: now(),
            jitter: 0.0,
            config: &self.config,
            verified_ago: self.verified_ago,
            ironic_recovered_at: None,
        })
    }
    fn plan(&self) -> Plan {
        match self.step() {
            Step::Plan(plan) => plan,
            Step::ObserveIronic(_) => panic!("expected a plan, got ObserveIronic"),
        }
    }
}

fn status_of(plan: &Plan) -> &DataImageStatus {
    match &plan.status {
        StatusChange::Set(status) => status,
        other => panic!("expected a status, got {other:?}"),
    }
}

fn state_of(plan: &Plan) -> DataImageState {
    status_of(plan).state.unwrap()
}

fn message_of(plan: &Plan) -> String {
    status_of(plan).message.clone().unwrap_or_default()
}

fn written_record(plan: &Plan) -> Option<AttachedRecord> {
    plan.actions.iter().rev().find_map(|a| match a {
        Action::WriteRecord(r) => Some(r.clone()),
        _ => None,
    })?
}

fn has(plan: &Plan, wanted: &Action) -> bool {
    plan.actions.contains(wanted)
}

fn position(plan: &Plan, pred: impl Fn(&Action) -> bool) -> usize {
    plan.actions
        .iter()
        .position(pred)
        .unwrap_or_else(|| panic!("action missing in {:?}", plan.actions))
}

fn attaches(plan: &Plan) -> bool {
    plan.actions
        .iter()
        .any(|a| matches!(a, Action::Attach { .. }))
}

fn event_reasons(plan: &Plan) -> Vec<&'static str> {
    plan.actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some(e.reason.as_str()),
            _ => None,
        })
        .collect()
}

fn touches_ironic(plan: &Plan) -> bool {
    plan.actions
        .iter()
        .any(|a| matches!(a, Action::Attach { .. } | Action::Detach))
}

// ---------------------------------------------------------------- gating

#[test]
fn gating_states_wait_without_touching_ironic() {
    for state in [
        "registering",
        "inspecting",
        "available",
        "provisioning",
        "preparing",
        "",
    ] {
        let plan = Case::new(H::new(state, Some(URL1))).plan();
        assert_eq!(state_of(&plan), DataImageState::Waiting, "{state}");
        assert!(plan.actions.is_empty(), "{state}: {:?}", plan.actions);
        assert!(message_of(&plan).contains("provisioned"), "{state}");
    }
}

#[test]
fn active_states_observe_ironic_first() {
    for state in ["provisioned", "externally provisioned"] {
        assert_eq!(
            Case::new(H::new(state, Some(URL1))).step(),
            Step::ObserveIronic(Read::NodeAndDrive),
            "{state}"
        );
    }
}

#[test]
fn paused_and_detached_hosts_wait_with_the_reason() {
    let paused =
        Case::new(H::new("provisioned", Some(URL1)).annotate(PAUSED_ANNOTATION, "")).plan();
    assert_eq!(state_of(&paused), DataImageState::Waiting);
    assert!(message_of(&paused).contains("paused"));
    assert!(paused.actions.is_empty());
    let detached =
        Case::new(H::new("provisioned", Some(URL1)).annotate(DETACHED_ANNOTATION, "{}")).plan();
    assert_eq!(state_of(&detached), DataImageState::Waiting);
    assert!(message_of(&detached).contains("detached"));
    assert!(detached.actions.is_empty());
}

#[test]
fn host_without_node_waits() {
    let plan = Case::new(H::new("provisioned", Some(URL1)).no_node()).plan();
    assert_eq!(state_of(&plan), DataImageState::Waiting);
    assert!(message_of(&plan).contains("no Ironic node"));
}

#[test]
fn busy_node_waits_and_polls() {
    let mut busy = node("power on");
    busy.reservation = Some("conductor-1".into());
    let plan = Case::new(H::new("provisioned", Some(URL1)))
        .ironic(observed(busy, empty()))
        .plan();
    assert!(!attaches(&plan));
    assert_eq!(state_of(&plan), DataImageState::Waiting);
    assert!(message_of(&plan).contains("busy"));
    assert_eq!(plan.requeue, Some(BUSY_POLL));
}

#[test]
fn maintenance_and_non_active_nodes_wait() {
    let mut maint = node("power on");
    maint.maintenance = true;
    let plan = Case::new(H::new("provisioned", Some(URL1)))
        .ironic(observed(maint, empty()))
        .plan();
    assert!(!attaches(&plan));
    assert!(message_of(&plan).contains("maintenance"));
    let mut deploying = node("power on");
    deploying.provision_state = "wait call-back".to_string().into();
    let plan = Case::new(H::new("provisioned", Some(URL1)))
        .ironic(observed(deploying, empty()))
        .plan();
    assert!(!attaches(&plan));
    assert!(message_of(&plan).contains("wait call-back"));
}

#[test]
fn upstream_dataimage_conflict_is_reported_and_the_drive_left_alone() {
    let mut case = Case::new(H::new("provisioned", Some(URL1)).hold());
    case.conflict = true;
    let plan = case.plan();
    assert_eq!(state_of(&plan), DataImageState::Error);
    assert!(message_of(&plan).contains("upstream DataImage"));
    assert_eq!(plan.actions, vec![Action::SetHold(false)]);
}

// ---------------------------------------------------------------- scenario 1

#[test]
fn scenario1_powered_off_host_is_held_then_attached() {
    let plan = Case::new(H::new("externally provisioned", Some(URL1)))
        .ironic(observed(node("power off"), empty()))
        .plan();
    let hold = position(&plan, |a| *a == Action::SetHold(true));
    let fin = position(&plan, |a| *a == Action::AddFinalizer);
    let rec = position(
        &plan,
        |a| matches!(a, Action::WriteRecord(Some(r)) if r.phase == Phase::Attaching),
    );
    let attach = position(
        &plan,
        |a| matches!(a, Action::Attach { image_url } if image_url == URL1),
    );
    assert!(
        hold < attach && fin < attach && rec < attach,
        "{:?}",
        plan.actions
    );
    let written = written_record(&plan).unwrap();
    assert_eq!(written.url, URL1);
    assert_eq!(written.node, NODE);
    assert!(written.hold_since.is_some());
    assert_eq!(state_of(&plan), DataImageState::Attaching);
    assert_eq!(plan.requeue, Some(CONFIRM_POLL));
    assert!(event_reasons(&plan).contains(&"PowerHold"));
    assert!(event_reasons(&plan).contains(&"Attaching"));
}

#[test]
fn scenario1_confirmed_attach_releases_the_hold() {
    let mut rec = record(URL1, Phase::Attaching, 2);
    rec.hold_since = Some(ago(3));
    let plan = Case::new(
        H::new("externally provisioned", Some(URL1))
            .hold()
            .finalizer()
            .record(&rec),
    )
    .ironic(observed(node("power off"), ours()))
    .plan();
    assert!(has(&plan, &Action::SetHold(false)));
    let written = written_record(&plan).unwrap();
    assert_eq!(written.phase, Phase::Attached);
    assert_eq!(written.hold_since, None);
    assert!(!written.attached_running);
    assert_eq!(state_of(&plan), DataImageState::Attached);
    assert_eq!(message_of(&plan), "attached");
    assert_eq!(plan.attached_after, Some(7.0));
    assert!(!touches_ironic(&plan));
    assert_eq!(event_reasons(&plan), vec!["Attached"]);
}

#[test]
fn no_hold_when_offline_or_unknown_power() {
    let plan = Case::new(H::new("externally provisioned", Some(URL1)).online(false))
        .ironic(observed(node("power off"), empty()))
        .plan();
    assert!(attaches(&plan));
    assert!(!has(&plan, &Action::SetHold(true)));
    let mut transitioning = node("power off");
    transitioning.target_power_state = Some(PowerState::On);
    let plan = Case::new(H::new("externally provisioned", Some(URL1)))
        .ironic(observed(transitioning, empty()))
        .plan();
    assert!(attaches(&plan));
    assert!(!has(&plan, &Action::SetHold(true)));
}

#[test]
fn never_hold_a_disable_power_off_host() {
    let plan = Case::new(H::new("provisioned", Some(URL1)).disable_power_off())
        .ironic(observed(node("power off"), empty()))
        .plan();
    assert!(attaches(&plan));
    assert!(!has(&plan, &Action::SetHold(true)));
    // A hold found on such a host (e.g. the flag was set later) is removed.
    let plan = Case::new(H::new("provisioned", Some(URL1)).disable_power_off().hold())
        .ironic(observed(node("power off"), empty()))
        .plan();
    assert!(has(&plan, &Action::SetHold(false)));
}

#[test]
fn hold_race_host_powered_on_removes_hold_and_attaches_anyway() {
    let mut rec = record(URL1, Phase::Pending, 1);
    rec.hold_since = Some(ago(1));
    let plan = Case::new(
        H::new("externally provisioned", Some(URL1))
            .hold()
            .record(&rec),
    )
    .ironic(observed(node("power on"), empty()))
    .plan();
    let release = position(&plan, |a| *a == Action::SetHold(false));
    let attach = position(&plan, |a| matches!(a, Action::Attach { .. }));
    assert!(release < attach);
    assert!(
        message_of(&plan).contains("powered on"),
        "{}",
        message_of(&plan)
    );
    assert_eq!(written_record(&plan).unwrap().hold_since, None);
}

#[test]
fn hold_race_during_attaching_removes_hold_without_reattaching() {
    let mut rec = record(URL1, Phase::Attaching, 1);
    rec.hold_since = Some(ago(2));
    let mut n = node("power on");
    n.reservation = Some("c".into());
    let plan = Case::new(
        H::new("externally provisioned", Some(URL1))
            .hold()
            .finalizer()
            .record(&rec),
    )
    .ironic(observed(n, empty()))
    .plan();
    assert!(has(&plan, &Action::SetHold(false)));
    assert!(!touches_ironic(&plan));
    assert_eq!(state_of(&plan), DataImageState::Attaching);
}

#[test]
fn hold_times_out_with_the_reason_and_is_not_added_again() {
    let mut rec = record(URL1, Phase::Failed, 30);
    rec.errors = 4;
    rec.message = Some("ironic unavailable: connection refused".into());
    rec.retry_at = Some(Timestamp::from_second(now().as_second() + 200).unwrap());
    rec.hold_since = Some(ago(601));
    let plan = Case::new(
        H::new("externally provisioned", Some(URL1))
            .hold()
            .finalizer()
            .record(&rec),
    )
    .ironic(observed(node("power off"), empty()))
    .plan();
    assert!(has(&plan, &Action::SetHold(false)));
    assert!(event_reasons(&plan).contains(&"HoldReleased"));
    let written = written_record(&plan).unwrap();
    assert!(written.hold_expired);
    assert!(message_of(&plan).contains("released the power hold after 10m"));
    assert!(message_of(&plan).contains("connection refused"));
    assert_eq!(state_of(&plan), DataImageState::Error);

    // Next pass: host still off, hold gone, expired: not re-added.
    let plan = Case::new(
        H::new("externally provisioned", Some(URL1))
            .finalizer()
            .record(&written),
    )
    .ironic(observed(node("power off"), empty()))
    .plan();
    assert!(!has(&plan, &Action::SetHold(true)));
}

#[test]
fn hold_within_timeout_is_kept() {
    let mut rec = record(URL1, Phase::Attaching, 10);
    rec.hold_since = Some(ago(300));
    let mut n = node("power off");
    n.reservation = Some("c".into());
    let plan = Case::new(
        H::new("externally provisioned", Some(URL1))
            .hold()
            .finalizer()
            .record(&rec),
    )
    .ironic(observed(n, empty()))
    .plan();
    assert!(!plan.actions.iter().any(|a| matches!(a, Action::SetHold(_))));
}

// ---------------------------------------------------------------- scenario 2

#[test]
fn scenario2_waits_for_deploy_media_to_leave_then_attaches_while_running() {
    let host = H::new("provisioned", Some(URL1));
    let plan = Case::new(host.clone())
        .ironic(observed(node("power on"), boot_media()))
        .plan();
    assert!(!attaches(&plan));
    assert_eq!(state_of(&plan), DataImageState::Waiting);
    assert!(message_of(&plan).contains("not ours"));
    assert!(message_of(&plan).contains(&format!("boot-{NODE}.iso")));

    let plan = Case::new(host)
        .ironic(observed(node("power on"), empty()))
        .plan();
    assert!(attaches(&plan));
    assert!(
        !has(&plan, &Action::SetHold(true)),
        "never hold a running host"
    );
}

#[test]
fn running_host_attach_says_next_boot() {
    let rec = record(URL1, Phase::Attaching, 1);
    let plan = Case::new(H::new("provisioned", Some(URL1)).finalizer().record(&rec))
        .ironic(observed(node("power on"), ours()))
        .plan();
    assert_eq!(state_of(&plan), DataImageState::Attached);
    assert!(message_of(&plan).contains("next boot"));
    assert!(written_record(&plan).unwrap().attached_running);
}

// ---------------------------------------------------------------- changes

#[test]
fn url_change_detaches_confirms_then_attaches_the_new_one() {
    let attached = record(URL1, Phase::Attached, 100);
    let host = H::new("provisioned", Some(URL2))
        .finalizer()
        .record(&attached);
    let plan = Case::new(host)
        .ironic(observed(node("power on"), ours()))
        .plan();
    assert!(has(&plan, &Action::Detach));
    assert!(!attaches(&plan));
    let detaching = written_record(&plan).unwrap();
    assert_eq!(
        (detaching.url.as_str(), detaching.phase),
        (URL1, Phase::Detaching)
    );
    assert_eq!(status_of(&plan).url.as_deref(), Some(URL2));
    assert_eq!(state_of(&plan), DataImageState::Detaching);

    // Still inserted shortly after: wait, no second detach.
    let host = H::new("provisioned", Some(URL2))
        .finalizer()
        .record(&detaching);
    let plan = Case::new(host)
        .ironic(observed(node("power on"), ours()))
        .plan();
    assert!(!touches_ironic(&plan));

    // Confirmed empty: record for the new URL, then attach.
    let host = H::new("provisioned", Some(URL2))
        .finalizer()
        .record(&detaching);
    let plan = Case::new(host)
        .ironic(observed(node("power on"), empty()))
        .plan();
    let pending = written_record(&plan).unwrap();
    assert_eq!(
        (pending.url.as_str(), pending.phase),
        (URL2, Phase::Pending)
    );
    assert!(!touches_ironic(&plan));
    assert!(event_reasons(&plan).contains(&"Detached"));

    let host = H::new("provisioned", Some(URL2))
        .finalizer()
        .record(&pending);
    let plan = Case::new(host)
        .ironic(observed(node("power on"), empty()))
        .plan();
    assert!(has(
        &plan,
        &Action::Attach {
            image_url: URL2.into()
        }
    ));
}

#[test]
fn removal_detaches_confirms_and_clears() {
    let attached = record(URL1, Phase::Attached, 100);
    let host = H::new("provisioned", None)
        .finalizer()
        .record(&attached)
        .status(DataImageStatus {
            url: Some(URL1.into()),
            state: Some(DataImageState::Attached),
            ..Default::default()
        });
    let plan = Case::new(host.clone())
        .ironic(observed(node("power on"), ours()))
        .plan();
    assert!(has(&plan, &Action::Detach));
    assert_eq!(status_of(&plan).url.as_deref(), Some(URL1));
    let detaching = written_record(&plan).unwrap();

    let host = H::new("provisioned", None)
        .finalizer()
        .record(&detaching)
        .status(DataImageStatus {
            url: Some(URL1.into()),
            state: Some(DataImageState::Detaching),
            ..Default::default()
        });
    let plan = Case::new(host)
        .ironic(observed(node("power on"), empty()))
        .plan();
    assert!(has(&plan, &Action::WriteRecord(None)));
    assert!(has(&plan, &Action::RemoveFinalizer));
    assert_eq!(plan.status, StatusChange::Clear);
    assert!(!touches_ironic(&plan));
}

#[test]
fn removal_without_record_needs_no_ironic() {
    let plan = Case::new(H::new("provisioned", None).hold().finalizer()).plan();
    assert!(has(&plan, &Action::SetHold(false)));
    assert!(has(&plan, &Action::RemoveFinalizer));
    assert_eq!(plan.status, StatusChange::Keep);
}

#[test]
fn deprovisioning_detaches_ours_but_never_ironics_media() {
    let attached = record(URL1, Phase::Attached, 100);
    let host = H::new("deprovisioning", Some(URL1))
        .finalizer()
        .record(&attached);
    let plan = Case::new(host.clone())
        .ironic(observed(node("power on"), ours()))
        .plan();
    assert!(has(&plan, &Action::Detach));

    // Ironic already put its deploy ramdisk in the drive: never eject it.
    let plan = Case::new(host.clone())
        .ironic(observed(node("power on"), boot_media()))
        .plan();
    assert!(!touches_ironic(&plan));
    assert!(has(&plan, &Action::WriteRecord(None)));
    assert_eq!(state_of(&plan), DataImageState::Waiting);
    assert!(
        !has(&plan, &Action::RemoveFinalizer),
        "dataImage still set: keep the finalizer"
    );

    // Best effort: a node gone from Ironic just clears the record.
    let plan = Case::new(host)
        .ironic(IronicView::Failed(IronicError::NotFound(NODE.into())))
        .plan();
    assert!(has(&plan, &Action::WriteRecord(None)));
}

// ---------------------------------------------------------------- deletion

#[test]
fn deletion_detaches_then_releases_the_finalizer() {
    let attached = record(URL1, Phase::Attached, 100);
    let host = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&attached)
        .deleting(1);
    assert_eq!(
        Case::new(host.clone()).step(),
        Step::ObserveIronic(Read::NodeAndDrive)
    );
    let plan = Case::new(host)
        .ironic(observed(node("power on"), ours()))
        .plan();
    assert!(has(&plan, &Action::Detach));
    assert!(!has(&plan, &Action::RemoveFinalizer));
    let detaching = written_record(&plan).unwrap();

    let host = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&detaching)
        .deleting(4);
    let plan = Case::new(host)
        .ironic(observed(node("power on"), empty()))
        .plan();
    assert!(has(&plan, &Action::RemoveFinalizer));
    assert!(has(&plan, &Action::WriteRecord(None)));
    assert!(!touches_ironic(&plan));
}

#[test]
fn deletion_of_a_detached_host_releases_at_once() {
    let attached = record(URL1, Phase::Attached, 100);
    let host = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&attached)
        .annotate(DETACHED_ANNOTATION, "{}")
        .deleting(0);
    let plan = Case::new(host).plan();
    assert!(has(&plan, &Action::RemoveFinalizer));
    assert!(!touches_ironic(&plan));
}

#[test]
fn deletion_with_unknown_node_waits_a_bounded_time() {
    let attached = record(URL1, Phase::Attached, 100);
    let not_found = IronicView::Failed(IronicError::NotFound(NODE.into()));
    let host = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&attached);
    let plan = Case::new(host.clone().deleting(60))
        .ironic(not_found.clone())
        .plan();
    assert!(!has(&plan, &Action::RemoveFinalizer));
    assert!(message_of(&plan).contains("not found"));
    assert!(plan.requeue.unwrap() <= BLOCKED_POLL);

    let plan = Case::new(host.deleting(601)).ironic(not_found).plan();
    assert!(has(&plan, &Action::RemoveFinalizer));
    assert!(event_reasons(&plan).contains(&"FinalizerReleased"));
}

#[test]
fn deletion_with_ironic_unreachable_is_released_after_the_timeout() {
    let attached = record(URL1, Phase::Attached, 100);
    let down = IronicView::Failed(IronicError::Unavailable("connection refused".into()));
    let host = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&attached);
    let plan = Case::new(host.clone().deleting(30))
        .ironic(down.clone())
        .plan();
    assert!(!has(&plan, &Action::RemoveFinalizer));
    let plan = Case::new(host.deleting(700)).ironic(down).plan();
    assert!(has(&plan, &Action::RemoveFinalizer));
    let warning = plan
        .actions
        .iter()
        .any(|a| matches!(a, Action::Event(e) if e.reason.is_warning()));
    assert!(warning);
}

#[test]
fn deletion_of_never_attached_host_releases_without_ironic() {
    let pending = record(URL1, Phase::Pending, 10);
    let host = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&pending)
        .deleting(0);
    let plan = Case::new(host).plan();
    assert!(has(&plan, &Action::RemoveFinalizer));
    // Without our finalizer there is nothing to do.
    let plan = Case::new(H::new("provisioned", Some(URL1)).deleting(0)).plan();
    assert!(plan.actions.is_empty());
}

// ---------------------------------------------------------------- failures

#[test]
fn backoff_doubles_from_30s_to_a_10min_cap_with_jitter() {
    assert_eq!(backoff(0, 0.0), Duration::from_secs(30));
    assert_eq!(backoff(1, 0.0), Duration::from_secs(30));
    assert_eq!(backoff(2, 0.0), Duration::from_secs(60));
    assert_eq!(backoff(3, 0.0), Duration::from_secs(120));
    assert_eq!(backoff(5, 0.0), Duration::from_secs(480));
    assert_eq!(backoff(6, 0.0), Duration::from_secs(600));
    assert_eq!(backoff(u32::MAX, 0.0), Duration::from_secs(600));
    let jittered = backoff(9, 0.99);
    assert!(jittered < Duration::from_secs(600) && jittered >= Duration::from_secs(450));
    assert_eq!(backoff(2, f64::NAN), Duration::from_secs(60));
}

#[test]
fn async_attach_failure_detaches_before_retry_and_counts() {
    let rec = record(URL1, Phase::Attaching, 2);
    let mut n = node("power on");
    n.last_error = Some(format!(
        "Could not attach device cdrom to node {NODE}: Validation of image href {URL1} failed, reason: Got HTTP code 404"
    ));
    let plan = Case::new(H::new("provisioned", Some(URL1)).finalizer().record(&rec))
        .ironic(observed(n, ours()))
        .plan();
    let write = position(
        &plan,
        |a| matches!(a, Action::WriteRecord(Some(r)) if r.phase == Phase::Failed),
    );
    let detach = position(&plan, |a| *a == Action::Detach);
    assert!(write < detach);
    assert!(!attaches(&plan));
    assert_eq!(state_of(&plan), DataImageState::Error);
    assert_eq!(status_of(&plan).error_count, Some(1));
    assert!(message_of(&plan).contains("404"));
    assert_eq!(plan.requeue, Some(Duration::from_secs(30)));
    assert!(event_reasons(&plan).contains(&"AttachFailed"));
}

#[test]
fn unrelated_last_error_is_not_ours() {
    let rec = record(URL1, Phase::Attaching, 2);
    let mut n = node("power on");
    n.last_error = Some("Failed to get power state for node: timeout".into());
    let plan = Case::new(H::new("provisioned", Some(URL1)).finalizer().record(&rec))
        .ironic(observed(n, ours()))
        .plan();
    assert_eq!(state_of(&plan), DataImageState::Attached);
}

#[test]
fn failed_attach_is_retried_after_the_backoff() {
    let mut rec = record(URL1, Phase::Failed, 60);
    rec.errors = 1;
    rec.message = Some("boom".into());
    rec.retry_at = Some(ago(1));
    let plan = Case::new(H::new("provisioned", Some(URL1)).finalizer().record(&rec))
        .ironic(observed(node("power on"), empty()))
        .plan();
    assert!(attaches(&plan));
    let written = written_record(&plan).unwrap();
    assert_eq!(written.errors, 1, "count kept until a success");
    assert_eq!(status_of(&plan).error_count, Some(1));

    rec.retry_at = Some(Timestamp::from_second(now().as_second() + 40).unwrap());
    let plan = Case::new(H::new("provisioned", Some(URL1)).finalizer().record(&rec))
        .ironic(observed(node("power on"), empty()))
        .plan();
    assert!(!attaches(&plan));
    assert_eq!(state_of(&plan), DataImageState::Error);
    assert_eq!(plan.requeue, Some(Duration::from_secs(40)));
}

#[test]
fn attach_not_inserted_after_confirm_timeout_fails() {
    let rec = record(URL1, Phase::Attaching, 121);
    let plan = Case::new(H::new("provisioned", Some(URL1)).finalizer().record(&rec))
        .ironic(observed(node("power on"), empty()))
        .plan();
    assert_eq!(state_of(&plan), DataImageState::Error);
    assert!(message_of(&plan).contains("not inserted after 2m"));
    assert!(!touches_ironic(&plan), "empty drive: nothing to detach");
}

#[test]
fn synchronous_failures_back_off_by_kind() {
    let host = H::new("provisioned", Some(URL1)).finalizer();
    let config = DecisionConfig::default();
    let input = Input {
        host: &host.0,
        ironic: &IronicView::NotObserved,
        staging: &StagingView::NotNeeded,
        upstream_conflict: false,
        now: now(),
        jitter: 0.0,
        config: &config,
        verified_ago: None,
        ironic_recovered_at: None,
    };
    let rec = record(URL1, Phase::Attaching, 0);
    let plan = after_failure(
        &input,
        &rec,
        Op::Attach,
        &IronicError::Locked("node locked".into()),
    );
    let written = written_record(&plan).unwrap();
    assert_eq!((written.phase, written.errors), (Phase::Failed, 1));
    assert_eq!(plan.requeue, Some(Duration::from_secs(30)));
    assert!(message_of(&plan).contains("locked"));
    assert_eq!(state_of(&plan), DataImageState::Error);

    let plan = after_failure(
        &input,
        &rec,
        Op::Attach,
        &IronicError::BadRequest("driver_info".into()),
    );
    assert_eq!(plan.requeue, Some(BACKOFF_CAP));
}

#[test]
fn ironic_unreachable_counts_and_backs_off() {
    let down = IronicView::Failed(IronicError::Unavailable("connection refused".into()));
    let plan = Case::new(H::new("provisioned", Some(URL1)))
        .ironic(down)
        .plan();
    assert_eq!(state_of(&plan), DataImageState::Error);
    assert_eq!(status_of(&plan).error_count, Some(1));
    assert!(message_of(&plan).contains("connection refused"));
    assert_eq!(plan.requeue, Some(Duration::from_secs(30)));
}

// ---------------------------------------------------------------- restarts, identity

#[test]
fn restart_mid_attach_confirms_instead_of_attaching_twice() {
    let rec = record(URL1, Phase::Attaching, 5);
    let host = H::new("provisioned", Some(URL1)).finalizer().record(&rec);
    let mut busy = node("power on");
    busy.reservation = Some("c".into());
    let plan = Case::new(host.clone())
        .ironic(observed(busy, empty()))
        .plan();
    assert!(!touches_ironic(&plan));
    assert_eq!(state_of(&plan), DataImageState::Attaching);
    let plan = Case::new(host.clone())
        .ironic(observed(node("power on"), empty()))
        .plan();
    assert!(!touches_ironic(&plan), "within the confirm window: wait");
    let plan = Case::new(host)
        .ironic(observed(node("power on"), ours()))
        .plan();
    assert!(!touches_ironic(&plan));
    assert_eq!(state_of(&plan), DataImageState::Attached);
}

#[test]
fn our_media_is_cdrom_of_this_node_only() {
    assert_eq!(cd_contents(&ours(), NODE), CdContents::Ours);
    assert_eq!(cd_contents(&empty(), NODE), CdContents::Empty);
    assert!(matches!(
        cd_contents(&boot_media(), NODE),
        CdContents::Other(_)
    ));
    let other = cd(Some("http://127.0.0.1:8088/redfish/cdrom-another-node.iso"));
    assert!(matches!(cd_contents(&other, NODE), CdContents::Other(_)));
    assert_eq!(cd_contents(&[], NODE), CdContents::Empty);
}

#[test]
fn ejected_by_the_bmc_is_attached_again() {
    let rec = record(URL1, Phase::Attached, 1000);
    let plan = Case::new(H::new("provisioned", Some(URL1)).finalizer().record(&rec))
        .ironic(observed(node("power on"), empty()))
        .plan();
    assert!(attaches(&plan));
    assert!(event_reasons(&plan).contains(&"Ejected"));
}

#[test]
fn attached_steady_state_polls_at_the_verify_interval() {
    let rec = record(URL1, Phase::Attached, 1000);
    let previous = DataImageStatus {
        url: Some(URL1.into()),
        state: Some(DataImageState::Attached),
        last_transition_time: Some("2026-02-01T00:00:00Z".into()),
        ..Default::default()
    };
    let plan = Case::new(
        H::new("provisioned", Some(URL1))
            .finalizer()
            .record(&rec)
            .status(previous),
    )
    .ironic(observed(node("power on"), ours()))
    .plan();
    assert!(plan.actions.is_empty());
    assert_eq!(
        plan.requeue,
        Some(DecisionConfig::default().verify_interval)
    );
    let status = status_of(&plan);
    assert_eq!(
        status.last_transition_time.as_deref(),
        Some("2026-02-01T00:00:00Z")
    );
    assert_eq!(status.observed_generation, Some(3));
}

#[test]
fn lost_status_is_rewritten_from_the_annotation() {
    let rec = record(URL1, Phase::Attached, 1000);
    let plan = Case::new(H::new("provisioned", Some(URL1)).finalizer().record(&rec))
        .ironic(observed(node("power on"), ours()))
        .plan();
    assert_eq!(state_of(&plan), DataImageState::Attached);
    assert_eq!(status_of(&plan).url.as_deref(), Some(URL1));
}

// ---------------------------------------------------------------- staging

#[test]
fn staging_required_but_unavailable_never_attaches() {
    let host = H::new("provisioned", Some(URL1)).credentials();
    let plan = Case::new(host.clone())
        .ironic(observed(node("power on"), empty()))
        .staging(StagingView::Unavailable(
            "needs the image staging server".into(),
        ))
        .plan();
    assert!(!attaches(&plan));
    assert!(message_of(&plan).contains("staging"));
    let plan = Case::new(host)
        .ironic(observed(node("power on"), empty()))
        .staging(StagingView::Needed(Staging::Running {
            done: 1288 << 20,
            total: Some(4 << 30),
        }))
        .plan();
    assert!(!attaches(&plan));
    assert_eq!(state_of(&plan), DataImageState::Waiting);
    assert_eq!(message_of(&plan), "staging the image: 1.2 GiB of 4.0 GiB");
    assert!(!has(&plan, &Action::Stage), "already running");
}

#[test]
fn staging_starts_only_once_every_other_gate_is_open() {
    let host = H::new("provisioned", Some(URL1)).credentials();
    let plan = Case::new(host.clone())
        .ironic(observed(node("power on"), empty()))
        .staging(StagingView::Needed(Staging::Idle))
        .plan();
    assert!(has(&plan, &Action::Stage));
    assert!(!attaches(&plan));
    assert_eq!(
        message_of(&plan),
        "staging the image: starting the download"
    );
    // Gated hosts never start a download.
    let mut maintenance = node("power on");
    maintenance.maintenance = true;
    for (name, case) in [
        (
            "maintenance",
            Case::new(host.clone()).ironic(observed(maintenance, empty())),
        ),
        (
            "deploy media",
            Case::new(host.clone()).ironic(observed(node("power on"), boot_media())),
        ),
        (
            "not provisioned",
            Case::new(H::new("provisioning", Some(URL1)).credentials()),
        ),
        (
            "paused",
            Case::new(host.clone().annotate(PAUSED_ANNOTATION, ""))
                .ironic(observed(node("power on"), empty())),
        ),
    ] {
        let plan = case.staging(StagingView::Needed(Staging::Idle)).plan();
        assert!(!has(&plan, &Action::Stage), "{name}: {plan:?}");
    }
}

#[test]
fn progress_is_shown_in_binary_units_with_one_decimal() {
    for (n, want) in [
        (0, "0 bytes"),
        (1023, "1023 bytes"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 << 20, "5.0 MiB"),
        ((4 << 30) - 1, "3.9 GiB"),
        (4 << 30, "4.0 GiB"),
        (u64::MAX, "1717986918.3 GiB"),
    ] {
        assert_eq!(bytes(n), want, "{n}");
    }
}

#[test]
fn staged_image_is_attached_by_its_staging_url_and_shown_by_the_users() {
    let staged = crate::staging::StagedImage {
        digest: "ab".repeat(32),
        size: 2048,
        ironic_url: "http://10.0.0.5:9445/i/token/abab.iso".into(),
        bootable: false,
    };
    let host = H::new("provisioned", Some(URL1)).credentials();
    let plan = Case::new(host)
        .ironic(observed(node("power on"), empty()))
        .staging(StagingView::Needed(Staging::Ready(staged.clone())))
        .plan();
    assert!(has(
        &plan,
        &Action::Attach {
            image_url: staged.ironic_url.clone()
        }
    ));
    let status = status_of(&plan);
    assert_eq!(status.url.as_deref(), Some(URL1));
    assert_eq!(
        status.staged_digest.as_deref(),
        Some(staged.digest.as_str())
    );
    assert_eq!(status.staged_size, Some(2048));
    assert_eq!(
        written_record(&plan).unwrap().digest,
        Some(staged.digest.clone())
    );

    // New content behind the same URL (Secret or file changed): replace.
    let mut rec = record(URL1, Phase::Attached, 100);
    rec.digest = Some("cd".repeat(32));
    let host = H::new("provisioned", Some(URL1))
        .credentials()
        .finalizer()
        .record(&rec);
    let plan = Case::new(host)
        .ironic(observed(node("power on"), ours()))
        .staging(StagingView::Needed(Staging::Ready(staged)))
        .plan();
    assert!(has(&plan, &Action::Detach));
}

#[test]
fn idle_hosts_are_recognised() {
    assert!(is_idle(&H::new("provisioned", None).0));
    assert!(!is_idle(&H::new("provisioned", Some(URL1)).0));
    assert!(!is_idle(&H::new("provisioned", None).finalizer().0));
}

#[test]
fn released_deletion_shows_detached_or_error_while_the_host_lingers() {
    let detaching = record(URL1, Phase::Detaching, 5);
    let shown = DataImageStatus {
        url: Some(URL1.into()),
        state: Some(DataImageState::Detaching),
        ..Default::default()
    };
    let host = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&detaching)
        .status(shown.clone())
        .deleting(10);
    let plan = Case::new(host)
        .ironic(observed(node("power on"), empty()))
        .plan();
    assert!(has(&plan, &Action::RemoveFinalizer));
    assert_eq!(state_of(&plan), DataImageState::Detached);

    let host = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&detaching)
        .status(shown)
        .deleting(900);
    let plan = Case::new(host)
        .ironic(IronicView::Failed(IronicError::Unavailable(
            "refused".into(),
        )))
        .plan();
    assert!(has(&plan, &Action::RemoveFinalizer));
    assert_eq!(state_of(&plan), DataImageState::Error);
    assert!(message_of(&plan).contains("without a confirmed detach"));
}

#[test]
fn image_swap_on_a_powered_off_host_is_held_and_removal_releases_the_hold() {
    let attached = record(URL1, Phase::Attached, 100);
    let host = H::new("externally provisioned", Some(URL2))
        .finalizer()
        .record(&attached);
    let plan = Case::new(host)
        .ironic(observed(node("power off"), ours()))
        .plan();
    let hold = position(&plan, |a| *a == Action::SetHold(true));
    let detach = position(&plan, |a| *a == Action::Detach);
    assert!(hold < detach);
    let written = written_record(&plan).unwrap();
    assert!(written.hold_since.is_some());

    // The hold bookkeeping survives the swap into the new URL's record.
    let host = H::new("externally provisioned", Some(URL2))
        .finalizer()
        .record(&written)
        .hold();
    let plan = Case::new(host)
        .ironic(observed(node("power off"), empty()))
        .plan();
    let pending = written_record(&plan).unwrap();
    assert_eq!(
        (pending.url.as_str(), pending.phase),
        (URL2, Phase::Pending)
    );
    assert_eq!(pending.hold_since, written.hold_since);
    assert!(!plan.actions.iter().any(|a| matches!(a, Action::SetHold(_))));

    // Removal while held: the hold goes at once, before the detach.
    let host = H::new("externally provisioned", None)
        .finalizer()
        .record(&attached)
        .hold();
    let plan = Case::new(host)
        .ironic(observed(node("power off"), ours()))
        .plan();
    let release = position(&plan, |a| *a == Action::SetHold(false));
    let detach = position(&plan, |a| *a == Action::Detach);
    assert!(release < detach);
}

#[test]
fn waiting_messages_are_stable_so_status_writes_do_not_loop() {
    // Our own status write triggers another reconcile a moment later: the
    // message must not change with the clock, or every pass would write.
    let mut rec = record(URL1, Phase::Failed, 60);
    rec.errors = 2;
    rec.message = Some("boom".into());
    rec.retry_at = Some(Timestamp::from_second(now().as_second() + 50).unwrap());
    let host = H::new("provisioned", Some(URL1)).finalizer().record(&rec);
    let at = |seconds_later: i64| {
        let config = DecisionConfig::default();
        let ironic = observed(node("power on"), empty());
        let step = decide(&Input {
            host: &host.0,
            ironic: &ironic,
            staging: &StagingView::NotNeeded,
            upstream_conflict: false,
            now: Timestamp::from_second(now().as_second() + seconds_later).unwrap(),
            jitter: 0.0,
            config: &config,
            verified_ago: None,
            ironic_recovered_at: None,
        });
        match step {
            Step::Plan(plan) => message_of(&plan),
            Step::ObserveIronic(_) => panic!("observed already"),
        }
    };
    assert_eq!(at(0), at(7));
    assert!(
        at(0).contains("retrying at 2026-03-01T12:00:50Z"),
        "{}",
        at(0)
    );
}

#[test]
fn attached_host_checked_recently_is_not_read_again_on_unrelated_changes() {
    let rec = record(URL1, Phase::Attached, 1000);
    let host = H::new("provisioned", Some(URL1)).finalizer().record(&rec);
    let mut case = Case::new(host.clone());
    case.verified_ago = Some(Duration::from_secs(60));
    let plan = case.plan();
    assert!(plan.actions.is_empty());
    assert_eq!(state_of(&plan), DataImageState::Attached);
    assert_eq!(plan.requeue, Some(Duration::from_secs(540)));
    // Due for verification, or never verified by this process: read the drive.
    case.verified_ago = Some(Duration::from_secs(600));
    assert_eq!(case.step(), Step::ObserveIronic(Read::Drive));
    let mut case = Case::new(host);
    case.verified_ago = None;
    assert_eq!(case.step(), Step::ObserveIronic(Read::Drive));
    // A URL change is never short-circuited.
    let mut case = Case::new(H::new("provisioned", Some(URL2)).finalizer().record(&rec));
    case.verified_ago = Some(Duration::from_secs(1));
    assert_eq!(case.step(), Step::ObserveIronic(Read::NodeAndDrive));
}

#[test]
fn bootable_staged_image_is_noted_in_the_status() {
    let staged = crate::staging::StagedImage {
        digest: "ef".repeat(32),
        size: 4096,
        ironic_url: "http://10.0.0.5:9445/i/token/efef.iso".into(),
        bootable: true,
    };
    let host = H::new("provisioned", Some(URL1)).credentials();
    let plan = Case::new(host)
        .ironic(observed(node("power on"), empty()))
        .staging(StagingView::Needed(Staging::Ready(staged.clone())))
        .plan();
    assert!(message_of(&plan).contains("El Torito boot record"));

    let not_bootable = crate::staging::StagedImage {
        bootable: false,
        ..staged
    };
    let host = H::new("provisioned", Some(URL1)).credentials();
    let plan = Case::new(host)
        .ironic(observed(node("power on"), empty()))
        .staging(StagingView::Needed(Staging::Ready(not_bootable)))
        .plan();
    assert!(!message_of(&plan).contains("El Torito"));
}

// ---------------------------------------------------------------- failures and outages (issue 10)

/// Every path that talks to Ironic, with a host that has just reached it.
fn failure_paths() -> Vec<(&'static str, H)> {
    let attached = record(URL1, Phase::Attached, 600);
    vec![
        ("attach", H::new("provisioned", Some(URL1)).finalizer()),
        (
            "detach for a URL change",
            H::new("provisioned", Some(URL2))
                .finalizer()
                .record(&attached),
        ),
        (
            "detach for a removal",
            H::new("provisioned", None).finalizer().record(&attached),
        ),
        (
            "detach when leaving the provisioned states",
            H::new("deprovisioning", Some(URL1))
                .finalizer()
                .record(&attached),
        ),
        (
            "detach before deletion",
            H::new("provisioned", Some(URL1))
                .finalizer()
                .record(&attached)
                .deleting(5),
        ),
    ]
}

/// The host as the next pass sees it: the plan's record and status written.
fn after(host: &H, plan: &Plan) -> H {
    let mut next = host.clone();
    if let Some(record) = plan.actions.iter().rev().find_map(|a| match a {
        Action::WriteRecord(r) => Some(r.clone()),
        _ => None,
    }) {
        match record {
            Some(record) => next = next.record(&record),
            None => {
                if let Some(a) = next.0.metadata.annotations.as_mut() {
                    a.remove(STATE_ANNOTATION);
                }
            }
        }
    }
    if let StatusChange::Set(status) = &plan.status {
        next = next.status(status.clone());
    }
    next
}

fn writes_record(plan: &Plan) -> bool {
    plan.actions
        .iter()
        .any(|a| matches!(a, Action::WriteRecord(_)))
}

#[test]
fn every_failure_path_counts_once_and_honours_the_pending_retry() {
    // A host-specific failure (Ironic answers, about this node).
    let failure = IronicView::Failed(IronicError::Http {
        status: 406,
        message: "not acceptable".into(),
    });
    // (path, is the failure counted per host?)
    let counted = [true, true, true, true, false];
    for ((name, host), counted) in failure_paths().into_iter().zip(counted) {
        let first = Case::new(host.clone()).ironic(failure.clone()).plan();
        assert!(
            !touches_ironic(&first),
            "{name}: nothing sent on a failed read"
        );
        let second_host = after(&host, &first);
        if counted {
            let record = written_record(&first).unwrap_or_else(|| panic!("{name}: {first:?}"));
            assert_eq!(record.errors, 1, "{name}");
            let retry_at: Timestamp = record.retry_at.unwrap();
            assert_eq!(
                retry_at,
                Timestamp::from_second(now().as_second() + 30).unwrap(),
                "{name}"
            );
            assert_eq!(state_of(&first), DataImageState::Error, "{name}");
            assert_eq!(status_of(&first).error_count, Some(1), "{name}");
            assert!(
                message_of(&first).contains(&format!("retrying at {retry_at}")),
                "{name}: {}",
                message_of(&first)
            );
            assert_eq!(first.requeue, Some(Duration::from_secs(30)), "{name}");
        } else {
            assert!(!writes_record(&first), "{name}: {first:?}");
            assert_eq!(state_of(&first), DataImageState::Detaching, "{name}");
        }
        // The same failure seen again, before the retry time: no new count,
        // no new retry time, no record write, the same status (so the
        // controller writes nothing and its own write cannot loop).
        let mut case = Case::new(second_host.clone()).ironic(failure.clone());
        for pass in 0..3 {
            let again = case.plan();
            assert!(!writes_record(&again), "{name} pass {pass}: {again:?}");
            assert_eq!(&again.status, &first.status, "{name} pass {pass}");
            assert!(!touches_ironic(&again), "{name} pass {pass}");
            assert!(event_reasons(&again).is_empty(), "{name} pass {pass}");
            case = Case::new(after(&second_host, &again)).ironic(failure.clone());
        }
    }
}

#[test]
fn an_ironic_outage_is_waited_out_on_every_path_without_counting_or_writing() {
    let down = IronicView::Unreachable {
        since: ago(42),
        error: "connection refused".into(),
    };
    let expected_state = [
        DataImageState::Waiting,
        DataImageState::Waiting,
        DataImageState::Waiting,
        DataImageState::Waiting,
        DataImageState::Detaching,
    ];
    for ((name, host), state) in failure_paths().into_iter().zip(expected_state) {
        let plan = Case::new(host.clone()).ironic(down.clone()).plan();
        assert!(!touches_ironic(&plan), "{name}");
        assert!(!writes_record(&plan), "{name}: {plan:?}");
        assert!(event_reasons(&plan).is_empty(), "{name}");
        assert_eq!(state_of(&plan), state, "{name}");
        assert_eq!(status_of(&plan).error_count, Some(0), "{name}");
        let message = message_of(&plan);
        assert!(
            message.contains(&format!(
                "Ironic is unreachable since {} (connection refused)",
                ago(42)
            )),
            "{name}: {message}"
        );
        assert!(plan.requeue.is_some_and(|r| r <= OUTAGE_POLL), "{name}");
        // Written once: the next pass during the outage shows the same status.
        let again = Case::new(after(&host, &plan)).ironic(down.clone()).plan();
        assert_eq!(again.status, plan.status, "{name}");
        assert!(again.actions.is_empty(), "{name}: {again:?}");
    }
}

#[test]
fn an_attached_host_stays_attached_through_an_outage() {
    let host = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&record(URL1, Phase::Attached, 600));
    let down = IronicView::Unreachable {
        since: ago(5),
        error: "connection refused".into(),
    };
    let plan = Case::new(host).ironic(down).plan();
    assert_eq!(state_of(&plan), DataImageState::Attached);
    assert!(plan.actions.is_empty(), "{plan:?}");
}

#[test]
fn a_synchronous_outage_failure_undoes_the_record_and_counts_nothing() {
    // The attach's record (Attaching) was written, then the POST found
    // Ironic gone: back to the record before the plan, Waiting, no count.
    let host = H::new("provisioned", Some(URL1)).finalizer();
    let config = DecisionConfig::default();
    let down = IronicView::Unreachable {
        since: now(),
        error: "connection refused".into(),
    };
    let input = Input {
        host: &host.0,
        ironic: &down,
        staging: &StagingView::NotNeeded,
        upstream_conflict: false,
        now: now(),
        jitter: 0.0,
        config: &config,
        verified_ago: None,
        ironic_recovered_at: None,
    };
    let written = record(URL1, Phase::Attaching, 0);
    let plan = after_failure(
        &input,
        &written,
        Op::Attach,
        &IronicError::Unavailable("connection refused".into()),
    );
    assert_eq!(plan.actions.first(), Some(&Action::WriteRecord(None)));
    assert!(!touches_ironic(&plan));
    assert_eq!(plan.failure, None);
    assert_eq!(state_of(&plan), DataImageState::Waiting);
    assert_eq!(status_of(&plan).error_count, Some(0));

    // A detach for a removal: the Attached record comes back.
    let attached = record(URL1, Phase::Attached, 600);
    let host = H::new("provisioned", None).finalizer().record(&attached);
    let input = Input {
        host: &host.0,
        ..input
    };
    let mut detaching = attached.clone();
    detaching.enter(Phase::Detaching, now());
    let plan = after_failure(
        &input,
        &detaching,
        Op::Detach,
        &IronicError::Unavailable("connection refused".into()),
    );
    assert_eq!(
        plan.actions.first(),
        Some(&Action::WriteRecord(Some(attached)))
    );
    assert_eq!(state_of(&plan), DataImageState::Waiting);
}

#[test]
fn the_confirm_timeout_does_not_count_an_outage() {
    // Sent 5 min ago; Ironic came back 10 s ago; nothing inserted yet.
    let host = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&record(URL1, Phase::Attaching, 300));
    let case = Case::new(host).ironic(observed(node("power on"), empty()));
    let plan = case.plan();
    assert_eq!(
        state_of(&plan),
        DataImageState::Error,
        "without an outage: no effect after 2m"
    );
    let mut input_case = case;
    let recovered = ago(10);
    let plan = match decide(&Input {
        host: &input_case.host.0,
        ironic: &input_case.ironic,
        staging: &input_case.staging,
        upstream_conflict: false,
        now: now(),
        jitter: 0.0,
        config: &input_case.config,
        verified_ago: None,
        ironic_recovered_at: Some(recovered),
    }) {
        Step::Plan(plan) => plan,
        Step::ObserveIronic(_) => panic!("observed already"),
    };
    assert_eq!(
        state_of(&plan),
        DataImageState::Attaching,
        "{}",
        message_of(&plan)
    );
    input_case.config.confirm_timeout = Duration::from_secs(5);
    let plan = match decide(&Input {
        host: &input_case.host.0,
        ironic: &input_case.ironic,
        staging: &input_case.staging,
        upstream_conflict: false,
        now: now(),
        jitter: 0.0,
        config: &input_case.config,
        verified_ago: None,
        ironic_recovered_at: Some(recovered),
    }) {
        Step::Plan(plan) => plan,
        Step::ObserveIronic(_) => panic!("observed already"),
    };
    assert_eq!(
        state_of(&plan),
        DataImageState::Error,
        "the clock runs from the return"
    );
}

#[test]
fn crash_after_the_attaching_record_before_the_post_takes_the_no_effect_path() {
    // The record says Attaching, but the process died before the POST left:
    // the drive stays empty, Ironic has no error and no reservation.
    let host = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&record(URL1, Phase::Attaching, 30));
    let view = observed(node("power on"), empty());
    // Within the confirm timeout: wait, never a second POST.
    let plan = Case::new(host.clone()).ironic(view.clone()).plan();
    assert!(!attaches(&plan));
    assert_eq!(state_of(&plan), DataImageState::Attaching);
    // After it: counted as failed ("no effect"), retried after the backoff.
    let late = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&record(URL1, Phase::Attaching, 121));
    let plan = Case::new(late.clone()).ironic(view.clone()).plan();
    assert!(!attaches(&plan));
    assert_eq!(plan.failure, Some(Op::Attach));
    let failed = written_record(&plan).unwrap();
    assert_eq!((failed.phase, failed.errors), (Phase::Failed, 1));
    assert!(message_of(&plan).contains("was not inserted after 2m"));
    // At the retry time: exactly one attach.
    let mut due = failed.clone();
    due.retry_at = Some(ago(1));
    let plan = Case::new(late.record(&due)).ironic(view).plan();
    assert_eq!(
        plan.actions
            .iter()
            .filter(|a| matches!(a, Action::Attach { .. }))
            .count(),
        1
    );
}

#[test]
fn our_own_running_detach_is_called_detaching() {
    let mut sent = record(URL1, Phase::Detaching, 2);
    sent.retry_at = None;
    let mut reserved = node("power on");
    reserved.reservation = Some("conductor-1".into());
    let plan = Case::new(H::new("provisioned", None).finalizer().record(&sent))
        .ironic(observed(reserved.clone(), ours()))
        .plan();
    assert_eq!(
        message_of(&plan),
        format!("detaching {URL1} (spec.dataImage was removed)")
    );
    // Someone else's operation before ours was sent.
    let attached = record(URL1, Phase::Attached, 600);
    let plan = Case::new(H::new("provisioned", None).finalizer().record(&attached))
        .ironic(observed(reserved, ours()))
        .plan();
    assert!(message_of(&plan).contains("reserved by another operation"));
}

#[test]
fn no_status_is_written_before_the_operator_has_written_one() {
    let mut host = H::new("provisioned", Some(URL1));
    if let Some(status) = host.0.status.as_mut() {
        status.operational_status = None;
    }
    let plan = Case::new(host)
        .ironic(observed(node("power on"), empty()))
        .plan();
    assert_eq!(plan.status, StatusChange::Keep);
    assert!(
        attaches(&plan),
        "the attach itself does not need the status"
    );
}

// ---------------------------------------------------------------- issue 11: locked drive, servicing

#[test]
fn a_locked_drive_read_is_not_yet_on_every_path() {
    // Ironic < 35.0: GET vmedia answers 409 while the node is locked.
    let mut locked = node("power on");
    locked.reservation = Some("conductor-1".into());
    let busy = IronicView::Busy { node: locked };
    let attaching = record(URL1, Phase::Attaching, 2);
    let mut detaching = record(URL1, Phase::Detaching, 2);
    detaching.retry_at = None;
    let cases = [
        (
            "confirming our attach",
            H::new("provisioned", Some(URL1))
                .finalizer()
                .record(&attaching),
            DataImageState::Attaching,
            "Ironic is inserting the image",
        ),
        (
            "confirming our detach",
            H::new("provisioned", None).finalizer().record(&detaching),
            DataImageState::Detaching,
            "detaching",
        ),
        (
            "before an attach",
            H::new("provisioned", Some(URL1)),
            DataImageState::Waiting,
            "busy",
        ),
        (
            "attached",
            H::new("provisioned", Some(URL1))
                .finalizer()
                .record(&record(URL1, Phase::Attached, 600)),
            DataImageState::Attached,
            "attached",
        ),
        (
            "deleting",
            H::new("provisioned", Some(URL1))
                .finalizer()
                .record(&record(URL1, Phase::Attached, 600))
                .deleting(5),
            DataImageState::Detaching,
            "busy",
        ),
    ];
    for (name, host, state, words) in cases {
        let plan = Case::new(host).ironic(busy.clone()).plan();
        assert_eq!(state_of(&plan), state, "{name}");
        assert!(
            message_of(&plan).contains(words),
            "{name}: {}",
            message_of(&plan)
        );
        assert!(!touches_ironic(&plan), "{name}");
        assert!(!writes_record(&plan), "{name}: {plan:?}");
        assert_eq!(plan.failure, None, "{name}");
        assert_eq!(status_of(&plan).error_count, Some(0), "{name}");
    }
}

#[test]
fn servicing_makes_the_drive_read_again_and_reattaches_once_active() {
    let attached = record(URL1, Phase::Attached, 600);
    let mut host = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&attached);
    // Verified a minute ago: normally no Ironic read.
    let mut case = Case::new(host.clone());
    case.verified_ago = Some(Duration::from_secs(60));
    assert!(matches!(case.step(), Step::Plan(_)));
    // The operator services the host: read Ironic regardless.
    if let Some(status) = host.0.status.as_mut() {
        status.operational_status = Some("servicing".into());
    }
    let mut case = Case::new(host.clone());
    case.verified_ago = Some(Duration::from_secs(60));
    assert_eq!(case.step(), Step::ObserveIronic(Read::NodeAndDrive));
    // While Ironic services the node: wait, and forget the verification.
    let mut servicing = node("power off");
    servicing.provision_state = "service wait".to_string().into();
    let plan = Case::new(host.clone())
        .ironic(observed(servicing, boot_media()))
        .plan();
    assert!(!touches_ironic(&plan));
    assert!(!plan.verified);
    assert!(
        message_of(&plan).contains("Ironic node is service wait"),
        "{}",
        message_of(&plan)
    );
    // Active again, the CD was ejected by prepare_ramdisk: attach at once.
    let plan = Case::new(host)
        .ironic(observed(node("power on"), empty()))
        .plan();
    assert!(attaches(&plan), "{plan:?}");
    assert!(event_reasons(&plan).contains(&"Ejected"));
    // And a read that shows our image is what marks the host verified.
    let plan = Case::new(
        H::new("provisioned", Some(URL1))
            .finalizer()
            .record(&attached),
    )
    .ironic(observed(node("power on"), ours()))
    .plan();
    assert!(plan.verified);
}

#[test]
fn every_event_reason_is_documented_with_its_type() {
    let docs = include_str!("../../docs/reconciler.md");
    for reason in [
        Reason::Attaching,
        Reason::Attached,
        Reason::AttachFailed,
        Reason::Ejected,
        Reason::Detaching,
        Reason::Detached,
        Reason::DetachFailed,
        Reason::PowerHold,
        Reason::HoldReleased,
        Reason::FinalizerReleased,
    ] {
        let kind = if reason.is_warning() {
            "Warning"
        } else {
            "Normal"
        };
        let row = format!("| {kind} | `{}` |", reason.as_str());
        assert!(docs.contains(&row), "docs/reconciler.md lacks {row}");
    }
}

#[test]
fn a_zero_hold_timeout_never_holds() {
    let mut case =
        Case::new(H::new("provisioned", Some(URL1))).ironic(observed(node("power off"), empty()));
    case.config.hold_timeout = Duration::ZERO;
    let plan = case.plan();
    assert!(attaches(&plan));
    assert!(!has(&plan, &Action::SetHold(true)), "{plan:?}");
}

// ---------------------------------------------------------------- which Ironic read (issue 13)

fn drive(vmedia: Vec<VirtualMedia>) -> IronicView {
    IronicView::Drive { vmedia }
}

fn powered_on(mut host: H, on: bool) -> H {
    if let Some(status) = host.0.status.as_mut() {
        status.powered_on = Some(on);
    }
    host
}

#[test]
fn the_read_asked_for_depends_on_the_phase() {
    let mut into_empty = record(URL1, Phase::Attaching, 2);
    into_empty.into_empty = true;
    let attached = record(URL1, Phase::Attached, 1000);
    let host = |rec: &AttachedRecord| H::new("provisioned", Some(URL1)).finalizer().record(rec);
    let servicing = {
        let mut h = host(&attached);
        if let Some(status) = h.0.status.as_mut() {
            status.operational_status = Some("servicing".into());
        }
        h
    };
    for (name, h, read) in [
        // Before an attach every gate needs the node and the drive.
        (
            "pending",
            H::new("provisioned", Some(URL1)),
            Read::NodeAndDrive,
        ),
        // Sent into an empty drive: our image there is this attach's.
        (
            "attaching into an empty drive",
            host(&into_empty),
            Read::Drive,
        ),
        // Sent while the drive showed cdrom-<node>.iso (an older image of
        // ours): only a node without the attach's lock confirms it.
        (
            "attaching into our old image",
            host(&record(URL1, Phase::Attaching, 2)),
            Read::NodeAndDrive,
        ),
        ("verifying", host(&attached), Read::Drive),
        ("held host", host(&into_empty).hold(), Read::NodeAndDrive),
        ("servicing", servicing, Read::NodeAndDrive),
        ("deleting", host(&attached).deleting(1), Read::NodeAndDrive),
        (
            "url changed",
            H::new("provisioned", Some(URL2))
                .finalizer()
                .record(&attached),
            Read::NodeAndDrive,
        ),
    ] {
        assert_eq!(Case::new(h).step(), Step::ObserveIronic(read), "{name}");
    }
}

#[test]
fn attach_into_an_empty_drive_is_confirmed_by_the_drive_alone() {
    let mut rec = record(URL1, Phase::Attaching, 2);
    rec.into_empty = true;
    for on in [true, false] {
        let h = powered_on(
            H::new("provisioned", Some(URL1)).finalizer().record(&rec),
            on,
        );
        let plan = Case::new(h).ironic(drive(ours())).plan();
        let written = written_record(&plan).unwrap();
        assert_eq!(written.phase, Phase::Attached);
        // Without the node, status.poweredOn says whether the host runs.
        assert_eq!(written.attached_running, on);
        assert_eq!(state_of(&plan), DataImageState::Attached);
        assert_eq!(event_reasons(&plan), vec!["Attached"]);
        assert!(plan.verified);
        assert!(!touches_ironic(&plan));
    }
}

#[test]
fn a_drive_without_our_image_asks_for_the_node() {
    let mut attaching = record(URL1, Phase::Attaching, 2);
    attaching.into_empty = true;
    let attached = record(URL1, Phase::Attached, 1000);
    for rec in [&attaching, &attached] {
        let h = H::new("provisioned", Some(URL1)).finalizer().record(rec);
        for vmedia in [empty(), boot_media()] {
            let step = Case::new(h.clone()).ironic(drive(vmedia)).step();
            assert_eq!(step, Step::ObserveIronic(Read::Node), "{:?}", rec.phase);
        }
    }
    // Every other flow completes a drive-only view the same way.
    let deleting = H::new("provisioned", Some(URL1))
        .finalizer()
        .record(&attached)
        .deleting(1);
    let removed = H::new("provisioned", None).finalizer().record(&attached);
    for h in [deleting, removed] {
        assert_eq!(
            Case::new(h).ironic(drive(ours())).step(),
            Step::ObserveIronic(Read::Node)
        );
    }
}

#[test]
fn verification_by_the_drive_alone_keeps_the_host_attached() {
    let rec = record(URL1, Phase::Attached, 1000);
    let plan = Case::new(H::new("provisioned", Some(URL1)).finalizer().record(&rec))
        .ironic(drive(ours()))
        .plan();
    assert_eq!(state_of(&plan), DataImageState::Attached);
    assert!(plan.verified);
    assert!(plan.actions.is_empty(), "{:?}", plan.actions);
    assert_eq!(plan.requeue, Some(Duration::from_secs(600)));
}

#[test]
fn the_attach_records_whether_the_drive_was_empty() {
    for (vmedia, into_empty) in [(empty(), true), (ours(), false)] {
        let plan = Case::new(H::new("provisioned", Some(URL1)))
            .ironic(observed(node("power on"), vmedia))
            .plan();
        assert!(attaches(&plan));
        assert_eq!(written_record(&plan).unwrap().into_empty, into_empty);
    }
}
