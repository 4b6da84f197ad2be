//! The reconciler's brain, as a pure function: host + annotation state +
//! observed Ironic node/vmedia + staging state + clock + config → next actions
//! and the status to show. No I/O here: the controller observes, calls
//! [`decide`], and executes the [`Plan`] in order.
//!
//! One call decides one step; the controller requeues to observe the result
//! (Ironic's 204 only means "accepted", so every attach and detach is
//! confirmed by a later observation).

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;

use super::record::{
    AttachedRecord, DETACHED_ANNOTATION, FINALIZER, HOLD_ANNOTATION, PAUSED_ANNOTATION, Phase,
};
use crate::ironic::{IronicError, Node, PowerState, ProvisionState, VirtualMedia};
use crate::model::bmh::HostResource;
use crate::model::{DataImageState, DataImageStatus};
use crate::staging::StagedImage;
use crate::telemetry::redact_url;

/// Provisioning states in which the image may be attached.
pub(crate) const ACTIVE_STATES: [&str; 2] = ["provisioned", "externally provisioned"];
/// First retry delay after a failure, and the cap of the exponential backoff.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_secs(30);
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(600);
/// How often an in-flight attach/detach is re-observed.
pub(crate) const CONFIRM_POLL: Duration = Duration::from_secs(3);
/// Re-check interval while Ironic holds the node (reservation).
pub(crate) const BUSY_POLL: Duration = Duration::from_secs(15);
/// Re-check interval while something outside our control blocks the drive.
pub(crate) const BLOCKED_POLL: Duration = Duration::from_secs(30);
/// Re-read interval of the Secret an image is built from (contentFrom).
pub const CONTENT_POLL: Duration = Duration::from_secs(60);
/// Re-check interval while the host's image is staged in the background.
pub(crate) const STAGING_POLL: Duration = Duration::from_secs(5);
/// Re-check interval while Ironic is unreachable. Nothing is sent to Ironic
/// then (the controller's prober notices its return and wakes every host);
/// this only bounds power-hold and finalizer deadlines.
pub(crate) const OUTAGE_POLL: Duration = Duration::from_secs(60);

/// Tunables (flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionConfig {
    /// Release the power hold after this long without a confirmed attach.
    pub hold_timeout: Duration,
    /// Release the finalizer of a deleted host after this long without a
    /// confirmed detach (Ironic unreachable, node unknown, node stuck).
    pub finalizer_timeout: Duration,
    /// Re-read the drive of an attached host this often (notices a BMC that
    /// ejected our image).
    pub verify_interval: Duration,
    /// An attach/detach Ironic accepted but that shows no effect and no error
    /// after this long counts as failed.
    pub confirm_timeout: Duration,
}

impl Default for DecisionConfig {
    fn default() -> Self {
        Self {
            hold_timeout: Duration::from_secs(600),
            finalizer_timeout: Duration::from_secs(600),
            verify_interval: Duration::from_secs(600),
            confirm_timeout: Duration::from_secs(120),
        }
    }
}

/// What the controller saw in Ironic for the host's node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum IronicView {
    NotObserved,
    Observed {
        node: Node,
        vmedia: Vec<VirtualMedia>,
    },
    /// The node was read but its drive could not be: `GET vmedia` answered
    /// 409 because a conductor holds the node's lock (Ironic before 35.0
    /// takes an exclusive lock for it). "Not yet", never a failure.
    Busy {
        node: Node,
    },
    /// Only the drive was read ([`Read::Drive`]): enough when it shows our
    /// image; otherwise the decision asks for the node too ([`Read::Node`]).
    Drive {
        vmedia: Vec<VirtualMedia>,
    },
    /// A host-specific failure (404, 400 ...): counted per host.
    Failed(IronicError),
    /// Ironic itself is down (connection refused, 5xx, and its API root did
    /// not answer either): one fact for every host, never counted per host.
    Unreachable {
        since: Timestamp,
        error: String,
    },
}

/// Whether the host's image must be staged, and how far that is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StagingView {
    /// Plain URL: Ironic downloads it itself.
    NotNeeded,
    Ready(StagedImage),
    /// Nothing staged or running for this URL: the decision starts it
    /// ([`Action::Stage`]) once every other gate is open.
    NotStarted,
    /// Downloading in the background: bytes so far, announced size.
    Running {
        done: u64,
        total: Option<u64>,
    },
    Failed(String),
    /// The host asks for credentials or skipped TLS verification but this
    /// reconciler cannot stage (no image server configured, or not built yet).
    Unavailable(String),
}

/// Everything [`decide`] looks at.
#[derive(Clone, Debug)]
pub(crate) struct Input<'a> {
    pub host: &'a HostResource,
    pub ironic: &'a IronicView,
    pub staging: &'a StagingView,
    /// An upstream `DataImage` with the host's name exists.
    pub upstream_conflict: bool,
    pub now: Timestamp,
    /// Uniform random number in [0, 1) for backoff jitter.
    pub jitter: f64,
    pub config: &'a DecisionConfig,
    /// Time since this process last read the host's drive from Ironic
    /// (`None`: never). An attached host in sync is not re-read before
    /// `verify_interval`, however often the BMH changes.
    pub verified_ago: Option<Duration>,
    /// When Ironic last came back after an outage: an attach or detach sent
    /// before it is confirmed from then on (the outage does not count
    /// towards `confirm_timeout`).
    pub ironic_recovered_at: Option<Timestamp>,
}

/// One thing for the controller to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    AddFinalizer,
    RemoveFinalizer,
    /// Add (`true`) or remove (`false`) the suffixed reboot annotation.
    SetHold(bool),
    /// Write (`Some`) or delete (`None`) the state annotation. Always
    /// executed before the Ironic call that follows it.
    WriteRecord(Option<AttachedRecord>),
    /// `POST vmedia` with this URL (the user's URL or the staged one).
    Attach {
        image_url: String,
    },
    /// `DELETE vmedia?device_types=cdrom`.
    Detach,
    /// Start staging the host's image in the background (never waited for).
    Stage,
    Event(EventNote),
}

/// A Kubernetes Event on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventNote {
    pub reason: Reason,
    pub message: String,
}

/// The reasons of the Events the reconciler publishes (`kubectl describe
/// bmh` shows them).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Attaching,
    Attached,
    AttachFailed,
    Ejected,
    Detaching,
    Detached,
    DetachFailed,
    PowerHold,
    HoldReleased,
    FinalizerReleased,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Attaching => "Attaching",
            Self::Attached => "Attached",
            Self::AttachFailed => "AttachFailed",
            Self::Ejected => "Ejected",
            Self::Detaching => "Detaching",
            Self::Detached => "Detached",
            Self::DetachFailed => "DetachFailed",
            Self::PowerHold => "PowerHold",
            Self::HoldReleased => "HoldReleased",
            Self::FinalizerReleased => "FinalizerReleased",
        }
    }

    /// Published as a `Warning` Event (else `Normal`).
    pub(crate) fn is_warning(self) -> bool {
        matches!(
            self,
            Self::AttachFailed
                | Self::Ejected
                | Self::DetachFailed
                | Self::HoldReleased
                | Self::FinalizerReleased
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum StatusChange {
    Keep,
    Set(DataImageStatus),
    Clear,
}

/// The outcome of one decision.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub actions: Vec<Action>,
    pub status: StatusChange,
    /// Reconcile again after this long (`None`: only on changes).
    pub requeue: Option<Duration>,
    /// Seconds from the spec change to this confirmed attach (metrics).
    pub attached_after: Option<f64>,
    /// This plan records a failed attach/detach (metrics).
    pub failure: Option<Op>,
    /// Ironic was read and showed our image in the drive: the controller
    /// may skip the next reads until `--verify-interval`. Any other
    /// observation forgets that (a node that went through servicing is read
    /// again at once).
    pub verified: bool,
}

impl Plan {
    /// Nothing to do but look again after `after`.
    pub(crate) fn wait(after: Duration) -> Self {
        Self {
            actions: Vec::new(),
            status: StatusChange::Keep,
            requeue: Some(after),
            attached_after: None,
            failure: None,
            verified: false,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
// One Step per reconcile, moved once: boxing the Plan would buy nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Step {
    /// Read Ironic as asked, then decide again.
    ObserveIronic(Read),
    Plan(Plan),
}

/// The Ironic read a decision needs. `GET vmedia` is the expensive one (a
/// live BMC read), `GET node` a database read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// The node, then its drive: what the gates before an attach or a detach
    /// need.
    NodeAndDrive,
    /// The drive alone: confirming or verifying our image, where a drive that
    /// shows it is all there is to know (one request instead of two).
    Drive,
    /// The node, after a [`Read::Drive`] that did not show our image.
    Node,
}

/// The Ironic operation that failed (see [`after_failure`]): the same
/// notion [`crate::ironic::ours`] judges `last_error` by.
pub use crate::ironic::ours::Op;

/// Backoff after `errors` consecutive failures: 30 s doubling to 10 min,
/// minus up to 25 % jitter so hosts that failed together spread out.
pub fn backoff(errors: u32, jitter: f64) -> Duration {
    let exponent = errors.saturating_sub(1).min(16);
    let base = BACKOFF_BASE
        .saturating_mul(1u32 << exponent)
        .min(BACKOFF_CAP);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    base.mul_f64(1.0 - 0.25 * jitter)
}

/// What occupies the host's virtual CD drive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Drive {
    Empty,
    /// Media inserted through the vmedia API (`cdrom-<node>.iso`): ours.
    Ours,
    /// Something else (Ironic's `boot-<node>.iso` deploy/rescue media, a
    /// live ISO): never ejected by us.
    Foreign(String),
}

/// Reads the CD slot: ours is Ironic's republished `cdrom-<node>.iso`
/// (judged by [`crate::ironic::ours::cd_contents`]).
pub(crate) fn drive_state(vmedia: &[VirtualMedia], node: &str) -> Drive {
    match crate::ironic::ours::cd_contents(vmedia, node) {
        crate::ironic::ours::CdContents::Empty => Drive::Empty,
        crate::ironic::ours::CdContents::Ours => Drive::Ours,
        crate::ironic::ours::CdContents::Other(image) => {
            Drive::Foreign(redact_url(&image).into_owned())
        }
    }
}

/// `last_error` written by our vmedia attach or detach (Ironic also writes
/// its own failures there, its own virtual-media boot failures included;
/// only ours count): [`crate::ironic::ours::our_error`], redacted.
pub(crate) fn vmedia_error(node: &Node, op: Op) -> Option<String> {
    crate::ironic::ours::our_error(node.last_error.as_deref(), Some(op))
        .map(|text| redact_url(text).into_owned())
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Power {
    On,
    Off,
    Unknown,
}

fn power(node: &Node) -> Power {
    match (&node.power_state, &node.target_power_state) {
        (_, Some(PowerState::On | PowerState::Rebooting)) | (Some(PowerState::On), _) => Power::On,
        (Some(PowerState::Off), None) => Power::Off,
        _ => Power::Unknown,
    }
}

/// The image the host asks for: its URL, or `secret:<name>` for one built
/// from a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Desired {
    url: String,
}

/// The host fields the decision reads.
struct Host<'a> {
    generation: Option<i64>,
    deletion: Option<Timestamp>,
    has_finalizer: bool,
    paused: bool,
    detached: bool,
    hold: bool,
    record: Option<AttachedRecord>,
    /// What the host asks for ([`crate::model::DataImageSpec::source`]).
    desired: Option<Desired>,
    online: bool,
    disable_power_off: bool,
    state: &'a str,
    node_id: &'a str,
    status: Option<&'a DataImageStatus>,
    /// The baremetal-operator has written the host's status. Until then a
    /// status write would be refused (the CRD requires the operator's
    /// status fields), so none is made.
    operator_status: bool,
    /// The operator is servicing the host (firmware updates): Ironic's
    /// `prepare_ramdisk` ejects the CD, so the drive is read again.
    servicing: bool,
    /// `status.poweredOn`, for an attach confirmed without reading the node.
    powered_on: bool,
}

impl<'a> Host<'a> {
    fn read(host: &'a HostResource) -> Self {
        static EMPTY: BTreeMap<String, String> = BTreeMap::new();
        let annotations = host.metadata.annotations.as_ref().unwrap_or(&EMPTY);
        let provisioning = host.status.as_ref().and_then(|s| s.provisioning.as_ref());
        Self {
            generation: host.metadata.generation,
            deletion: host.metadata.deletion_timestamp.as_ref().map(|t| t.0),
            has_finalizer: host
                .metadata
                .finalizers
                .as_ref()
                .is_some_and(|f| f.iter().any(|x| x == FINALIZER)),
            paused: annotations.contains_key(PAUSED_ANNOTATION),
            detached: annotations.contains_key(DETACHED_ANNOTATION),
            hold: annotations.contains_key(HOLD_ANNOTATION),
            record: AttachedRecord::of_host(host),
            desired: host
                .spec
                .data_image
                .as_ref()
                .and_then(super::super::model::dataimage::DataImageSpec::source)
                .map(|url| Desired { url }),
            online: host.spec.online.unwrap_or(false),
            disable_power_off: host.spec.disable_power_off.unwrap_or(false),
            state: provisioning.map(|p| p.state.as_str()).unwrap_or(""),
            node_id: provisioning.map(|p| p.id.as_str()).unwrap_or(""),
            status: host.status.as_ref().and_then(|s| s.data_image.as_ref()),
            operator_status: host
                .status
                .as_ref()
                .is_some_and(|s| s.operational_status.is_some()),
            servicing: host
                .status
                .as_ref()
                .and_then(|s| s.operational_status.as_deref())
                == Some("servicing"),
            powered_on: host
                .status
                .as_ref()
                .and_then(|s| s.powered_on)
                .unwrap_or(false),
        }
    }
}

/// Builds plans with the host's status bookkeeping.
struct Builder<'a, 'b> {
    input: &'b Input<'a>,
    host: Host<'a>,
    actions: Vec<Action>,
}

impl<'a, 'b> Builder<'a, 'b> {
    fn new(input: &'b Input<'a>) -> Self {
        Self {
            input,
            host: Host::read(input.host),
            actions: Vec::new(),
        }
    }

    fn now(&self) -> Timestamp {
        self.input.now
    }

    fn push(&mut self, action: Action) {
        self.actions.push(action);
    }

    fn event(&mut self, reason: Reason, message: impl Into<String>) {
        self.actions.push(Action::Event(EventNote {
            reason,
            message: message.into(),
        }));
    }

    fn set_hold(&mut self, on: bool) {
        if self.host.hold != on {
            self.actions.push(Action::SetHold(on));
            self.host.hold = on;
        }
    }

    fn write_record(&mut self, record: Option<AttachedRecord>) {
        if self.host.record != record {
            self.host.record.clone_from(&record);
            // One patch is enough when no Ironic call sits between two writes.
            let last_ironic = self
                .actions
                .iter()
                .rposition(|a| matches!(a, Action::Attach { .. } | Action::Detach));
            let earlier = self
                .actions
                .iter()
                .rposition(|a| matches!(a, Action::WriteRecord(_)));
            if let Some(index) = earlier
                && last_ironic.is_none_or(|ironic| ironic < index)
            {
                self.actions.remove(index);
            }
            self.actions.push(Action::WriteRecord(record));
        }
    }

    fn remove_finalizer(&mut self) {
        if self.host.has_finalizer {
            self.actions.push(Action::RemoveFinalizer);
            self.host.has_finalizer = false;
        }
    }

    fn add_finalizer(&mut self) {
        if !self.host.has_finalizer {
            self.actions.push(Action::AddFinalizer);
            self.host.has_finalizer = true;
        }
    }

    fn status(
        &self,
        url: Option<&str>,
        state: DataImageState,
        message: impl Into<String>,
    ) -> StatusChange {
        if !self.host.operator_status {
            return StatusChange::Keep;
        }
        let previous = self.host.status;
        let record = self.host.record.as_ref();
        let staged = match self.input.staging {
            StagingView::Ready(image)
                if self
                    .host
                    .desired
                    .as_ref()
                    .is_some_and(|d| Some(d.url.as_str()) == url) =>
            {
                Some((image.digest.clone(), image.size))
            }
            _ => record
                .filter(|r| Some(r.url.as_str()) == url)
                .and_then(|r| r.digest.clone().zip(r.size)),
        };
        let last_transition_time = match previous {
            Some(prev) if prev.state == Some(state) && prev.last_transition_time.is_some() => {
                prev.last_transition_time.clone()
            }
            _ => Some(self.now().to_string()),
        };
        let errors = record.map(|r| r.errors).unwrap_or(0);
        let mut message = message.into();
        // A data image should not be bootable: say so when the staged ISO
        // carries an El Torito record (only staged images are inspected).
        if let StagingView::Ready(image) = self.input.staging
            && self
                .host
                .desired
                .as_ref()
                .is_some_and(|d| Some(d.url.as_str()) == url)
            && let Some(note) = image.status_note()
        {
            message = format!("{message}; {note}");
        }
        StatusChange::Set(DataImageStatus {
            url: url.map(|u| redact_url(u).into_owned()),
            state: Some(state),
            message: Some(message),
            error_count: Some(errors),
            last_transition_time,
            observed_generation: self.host.generation,
            staged_digest: staged.as_ref().map(|(d, _)| d.clone()),
            staged_size: staged.map(|(_, s)| s),
        })
    }

    /// A failure to read the node, counted and backed off like any other
    /// ([`note_failure`]), shown as `what` of the recorded message until the
    /// retry.
    fn read_failed(
        mut self,
        mut record: AttachedRecord,
        url: Option<&str>,
        err: &IronicError,
        what: impl FnOnce(&str) -> String,
        note: Option<String>,
    ) -> Step {
        let now = self.now();
        let at = note_failure(&mut record, now, self.input.jitter, err.to_string(), None);
        let what = what(record.message.as_deref().unwrap_or_default());
        self.write_record(Some(record));
        let message = join_note(format!("{what}; retrying at {at}"), note);
        self.show(
            url,
            DataImageState::Error,
            message,
            Some(wait_until(at, now)),
        )
    }

    /// Shows the image the host asks for in `state`; looks again only on a
    /// change.
    fn show_desired(self, state: DataImageState, message: impl Into<String>) -> Step {
        let url = self.host.desired.as_ref().map(|d| d.url.clone());
        self.show(url.as_deref(), state, message, None)
    }

    /// Shows the image at `url` attached; looks again after `requeue`.
    fn show_attached(self, url: &str, record: &AttachedRecord, requeue: Duration) -> Step {
        self.show(
            Some(url),
            DataImageState::Attached,
            attached_message(record),
            Some(requeue),
        )
    }

    /// Shows `message` in `state` for `url`; looks again after `requeue`.
    fn show(
        self,
        url: Option<&str>,
        state: DataImageState,
        message: impl Into<String>,
        requeue: Option<Duration>,
    ) -> Step {
        let status = self.status(url, state, message);
        self.finish(status, requeue)
    }

    fn clear_status(&self) -> StatusChange {
        if self.host.status.is_some() {
            StatusChange::Clear
        } else {
            StatusChange::Keep
        }
    }

    fn finish(self, status: StatusChange, requeue: Option<Duration>) -> Step {
        Step::Plan(Plan {
            actions: self.actions,
            status,
            requeue,
            attached_after: None,
            failure: None,
            verified: false,
        })
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn elapsed(since: Option<Timestamp>, now: Timestamp) -> Duration {
    let Some(since) = since else {
        return Duration::ZERO;
    };
    let seconds = now.as_second().saturating_sub(since.as_second());
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// The one failure bookkeeping of every path (attach; detach for a URL
/// change, a removal, leaving the provisioned states; detach before
/// deletion): counts a failure and schedules its retry, unless a retry is
/// already pending. Then the same failure is only being seen again: no new
/// count, no new random retry time, so nothing to write. Returns the retry
/// time. `delay` overrides the exponential backoff.
fn note_failure(
    record: &mut AttachedRecord,
    now: Timestamp,
    jitter: f64,
    message: String,
    delay: Option<Duration>,
) -> Timestamp {
    if let Some(at) = pending_retry(record, now) {
        return at;
    }
    record.errors = record.errors.saturating_add(1);
    let delay = delay.unwrap_or_else(|| backoff(record.errors, jitter));
    let at = add(now, delay);
    record.message = Some(message);
    record.retry_at = Some(at);
    at
}

/// The record's retry time, when it is still ahead.
fn pending_retry(record: &AttachedRecord, now: Timestamp) -> Option<Timestamp> {
    let at = record.retry_at?;
    (at > now).then_some(at)
}

fn wait_until(at: Timestamp, now: Timestamp) -> Duration {
    let seconds = at.as_second().saturating_sub(now.as_second()).max(1);
    Duration::from_secs(u64::try_from(seconds).unwrap_or(1))
}

/// "Ironic is unreachable since …" (the same text on every pass, so the
/// status is written once per outage).
fn unreachable_message(since: Timestamp, error: &str, then: &str) -> String {
    format!("Ironic is unreachable since {since} ({error}); {then} when it answers again")
}

fn add(now: Timestamp, d: Duration) -> Timestamp {
    Timestamp::from_second(now.as_second().saturating_add(secs(d))).unwrap_or(now)
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 && s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// Decides the next step for one host.
pub(crate) fn decide(input: &Input) -> Step {
    let step = decide_host(input);
    let built = input
        .host
        .spec
        .data_image
        .as_ref()
        .is_some_and(|d| d.url.is_empty() && d.content_from.is_some());
    match step {
        // The reconciler cannot watch Secrets (it may only get the ones
        // hosts name), so an image built from one is looked at again every
        // CONTENT_POLL: a change of the Secret is a swap.
        Step::Plan(mut plan) if built && input.host.metadata.deletion_timestamp.is_none() => {
            plan.requeue = Some(plan.requeue.map_or(CONTENT_POLL, |r| r.min(CONTENT_POLL)));
            Step::Plan(plan)
        }
        other => other,
    }
}

fn decide_host(input: &Input) -> Step {
    let mut b = Builder::new(input);

    if b.host.deletion.is_some() {
        return deletion(b);
    }
    if b.host.paused {
        let message = "host is paused (baremetalhost.metal3.io/paused): nothing is done until the annotation is removed";
        return b.show_desired(DataImageState::Waiting, message);
    }
    if b.host.detached {
        let message = "host is detached from the operator (baremetalhost.metal3.io/detached): nothing is done until it is reattached";
        return b.show_desired(DataImageState::Waiting, message);
    }
    if input.upstream_conflict {
        // The operator would attach the DataImage into the same drive: do not
        // fight over it; only release our hold so the host is not kept off.
        b.set_hold(false);
        let message = "an upstream DataImage with this host's name exists: the baremetal-operator attaches it into the same \
             drive; delete it or remove spec.dataImage (left untouched)";
        return b.show_desired(DataImageState::Error, message);
    }

    let active = ACTIVE_STATES.contains(&b.host.state);
    let record_in_drive = b
        .host
        .record
        .as_ref()
        .is_some_and(|r| r.phase != Phase::Pending);
    if !active {
        if record_in_drive && !b.host.node_id.is_empty() {
            return detach_flow(b, Purpose::Leaving);
        }
        b.set_hold(false);
        b.write_record(None);
        if b.host.desired.is_none() {
            b.remove_finalizer();
            let status = b.clear_status();
            return b.finish(status, None);
        }
        let state = if b.host.state.is_empty() {
            "not registered"
        } else {
            b.host.state
        };
        let message = format!(
            "host is {state}: the image is attached once it is provisioned or externally provisioned"
        );
        return b.show_desired(DataImageState::Waiting, message);
    }
    if b.host.node_id.is_empty() {
        return b.show_desired(
            DataImageState::Waiting,
            "host has no Ironic node yet (status.provisioning.ID is empty)",
        );
    }

    let desired = b.host.desired.clone();
    match desired {
        None if !record_in_drive => {
            b.set_hold(false);
            b.write_record(None);
            b.remove_finalizer();
            let status = b.clear_status();
            b.finish(status, None)
        }
        None => detach_flow(b, Purpose::Removal),
        Some(desired) => {
            let stale = b.host.record.as_ref().is_some_and(|r| {
                r.phase != Phase::Pending
                    && (r.url != desired.url
                        || r.phase == Phase::Detaching
                        || staged_digest(input.staging)
                            .is_some_and(|d| r.digest.as_deref() != Some(d)))
            });
            if stale
                && b.host
                    .record
                    .as_ref()
                    .is_some_and(|r| r.node == b.host.node_id)
            {
                detach_flow(b, Purpose::Replace)
            } else {
                attach_flow(b, &desired.url)
            }
        }
    }
}

fn staged_digest(staging: &StagingView) -> Option<&str> {
    match staging {
        StagingView::Ready(image) => Some(image.digest.as_str()),
        _ => None,
    }
}

/// Why the drive is being emptied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Purpose {
    /// `spec.dataImage` removed.
    Removal,
    /// URL (or staged content) changed: attach the new image afterwards.
    Replace,
    /// Host left the provisioned states (deprovisioning): best effort.
    Leaving,
}

fn detach_flow(mut b: Builder, purpose: Purpose) -> Step {
    let now = b.now();
    let Some(mut record) = b.host.record.clone() else {
        return b.finish(StatusChange::Keep, None);
    };
    // The status shows the image the host asks for, if any.
    let shown_url = match (purpose, &b.host.desired) {
        (Purpose::Replace | Purpose::Leaving, Some(desired)) => desired.url.clone(),
        _ => record.url.clone(),
    };
    let url = Some(shown_url.as_str());
    if record.node != b.host.node_id && !b.host.node_id.is_empty() {
        // The host was registered again under a new node: the old node's
        // drive is not this host's any more.
        return drive_emptied(b, purpose, false);
    }
    let (node, vmedia) = match b.input.ironic {
        IronicView::NotObserved => return Step::ObserveIronic(Read::NodeAndDrive),
        IronicView::Drive { .. } => return Step::ObserveIronic(Read::Node),
        IronicView::Failed(IronicError::NotFound(_)) => return drive_emptied(b, purpose, false),
        IronicView::Failed(err) => {
            let what =
                |message: &str| format!("cannot read the node to detach the image: {message}");
            return b.read_failed(record, url, err, what, None);
        }
        IronicView::Busy { .. } => {
            let message = if record.phase == Phase::Detaching && record.retry_at.is_none() {
                format!(
                    "detaching {} (the node is locked, so its drive cannot be read yet)",
                    redact_url(&record.url)
                )
            } else {
                "Ironic node is busy (locked by a running operation); detaching when it is free"
                    .into()
            };
            return b.show(url, DataImageState::Detaching, message, Some(BUSY_POLL));
        }
        IronicView::Unreachable { since, error } => {
            if purpose == Purpose::Replace {
                // The hold's deadline still runs while Ironic is away.
                let _ = hold_step(&mut b, &mut record, None);
                b.write_record(Some(record));
            } else {
                b.set_hold(false);
            }
            return b.show(
                url,
                DataImageState::Waiting,
                unreachable_message(*since, error, "detaching"),
                Some(OUTAGE_POLL),
            );
        }
        IronicView::Observed { node, vmedia } => (node, vmedia),
    };
    if purpose == Purpose::Replace {
        // Swapping images on a powered-off host: hold it off meanwhile.
        let _ = hold_step(&mut b, &mut record, Some(node));
        b.write_record(Some(record.clone()));
    } else {
        b.set_hold(false);
    }
    let drive = drive_state(vmedia, &node.uuid);
    if drive != Drive::Ours {
        if node.reservation.is_some() && record.phase == Phase::Attaching {
            // Our attach may still be running: wait for it before calling
            // the drive empty.
            return b.show(
                url,
                DataImageState::Detaching,
                "waiting for Ironic to finish the previous attach before detaching",
                Some(CONFIRM_POLL),
            );
        }
        let was_ours = matches!(
            record.phase,
            Phase::Attached | Phase::Detaching | Phase::Attaching
        );
        return drive_emptied(b, purpose, was_ours);
    }
    let why = match purpose {
        Purpose::Removal => "spec.dataImage was removed",
        Purpose::Replace => "the image changed",
        Purpose::Leaving => "the host is leaving the provisioned state",
    };
    let detaching = format!("detaching {} ({why})", redact_url(&record.url));
    if node.reservation.is_some() {
        // While our own detach runs, the reservation is ours.
        let message = if record.phase == Phase::Detaching && record.retry_at.is_none() {
            detaching
        } else {
            "Ironic node is busy (reserved by another operation); detaching when it is free".into()
        };
        return b.show(url, DataImageState::Detaching, message, Some(BUSY_POLL));
    }
    if let Some(at) = pending_retry(&record, now) {
        let message = record.message.clone().unwrap_or_default();
        return b.show(
            url,
            DataImageState::Error,
            format!("detach failed: {message}; retrying at {at}"),
            Some(wait_until(at, now)),
        );
    }
    if record.phase == Phase::Detaching {
        let waited = confirm_elapsed(&record, b.input.ironic_recovered_at, now);
        if let Some(error) = vmedia_error(node, Op::Detach) {
            return failed(b, record, Some(shown_url), Op::Detach, error);
        }
        if waited < b.input.config.confirm_timeout {
            return b.show(
                url,
                DataImageState::Detaching,
                detaching,
                Some(CONFIRM_POLL),
            );
        }
        if record.retry_at.is_none() {
            let message = format!(
                "Ironic accepted the detach but the image was still inserted after {}",
                human(b.input.config.confirm_timeout)
            );
            return failed(b, record, Some(shown_url), Op::Detach, message);
        }
    }
    record.enter(Phase::Detaching, now);
    record.retry_at = None;
    b.write_record(Some(record.clone()));
    b.push(Action::Detach);
    b.event(Reason::Detaching, detaching.clone());
    b.show(
        url,
        DataImageState::Detaching,
        detaching,
        Some(CONFIRM_POLL),
    )
}

/// Nothing of ours is in the drive any more.
fn drive_emptied(mut b: Builder, purpose: Purpose, was_ours: bool) -> Step {
    let now = b.now();
    let old = b.host.record.clone();
    if was_ours && let Some(old) = &old {
        b.event(
            Reason::Detached,
            format!("detached {}", redact_url(&old.url)),
        );
    }
    match purpose {
        Purpose::Removal => {
            b.set_hold(false);
            b.write_record(None);
            b.remove_finalizer();
            let status = b.clear_status();
            b.finish(status, None)
        }
        Purpose::Leaving => {
            b.set_hold(false);
            b.write_record(None);
            let url = b.host.desired.as_ref().map(|d| d.url.clone());
            let status = match &url {
                Some(url) => b.status(
                    Some(url),
                    DataImageState::Waiting,
                    format!(
                        "host is {}: the image was detached and is attached again once the host is provisioned",
                        b.host.state
                    ),
                ),
                None => b.clear_status(),
            };
            if url.is_none() {
                b.remove_finalizer();
            }
            b.finish(status, None)
        }
        Purpose::Replace => {
            let Some(desired) = b.host.desired.clone() else {
                return b.finish(StatusChange::Keep, None);
            };
            let url = desired.url.clone();
            let mut record = AttachedRecord::new(&url, b.host.node_id, Phase::Pending, now);
            // Keep the hold bookkeeping across the swap.
            if let Some(old) = &old {
                record.hold_since.clone_from(&old.hold_since);
                record.hold_expired = old.hold_expired;
            }
            b.write_record(Some(record));
            b.show(
                Some(&url),
                DataImageState::Attaching,
                "previous image detached; attaching the new one",
                Some(Duration::from_secs(1)),
            )
        }
    }
}

/// Records a failure seen by observation (Ironic's `last_error`, or no
/// effect after `confirm_timeout`).
fn failed(
    b: Builder,
    record: AttachedRecord,
    url: Option<String>,
    op: Op,
    message: String,
) -> Step {
    Step::Plan(failure_plan(b, record, url, op, message, None))
}

/// The one failure bookkeeping of an attach or detach (seen by observation
/// or refused by Ironic): counted and backed off ([`note_failure`]; `delay`
/// overrides the backoff), an Event, the error status.
fn failure_plan(
    mut b: Builder,
    mut record: AttachedRecord,
    url: Option<String>,
    op: Op,
    message: String,
    delay: Option<Duration>,
) -> Plan {
    let now = b.now();
    let at = note_failure(&mut record, now, b.input.jitter, message.clone(), delay);
    let (reason, doing) = match op {
        Op::Attach => (Reason::AttachFailed, "attaching"),
        Op::Detach => (Reason::DetachFailed, "detaching"),
    };
    let event = format!("{doing} {} failed: {message}", redact_url(&record.url));
    // A failed detach stays in Detaching: the retry re-sends it.
    if op == Op::Attach {
        record.enter(Phase::Failed, now);
    }
    b.write_record(Some(record));
    // A failed attach is followed by a detach before the retry (the BMC may
    // still show a half-inserted image).
    if let (Op::Attach, IronicView::Observed { node, vmedia }) = (op, b.input.ironic)
        && drive_state(vmedia, &node.uuid) == Drive::Ours
    {
        b.push(Action::Detach);
    }
    b.event(reason, event);
    let message = format!("{} failed: {message}; retrying at {at}", op.verb());
    let status = b.status(url.as_deref(), DataImageState::Error, message);
    Plan {
        actions: b.actions,
        status,
        requeue: Some(wait_until(at, now)),
        attached_after: None,
        failure: Some(op),
        verified: false,
    }
}

/// The plan after an Ironic call of `op` failed synchronously. `written` is
/// the record as written before the call.
///
/// With `input.ironic` = [`IronicView::Unreachable`] (the controller found
/// Ironic down), nothing is counted: the record goes back to what it was
/// before this plan, so the call is made again once Ironic answers.
/// Otherwise the failure is counted and backed off.
pub(crate) fn after_failure(
    input: &Input,
    written: &AttachedRecord,
    op: Op,
    err: &IronicError,
) -> Plan {
    if let IronicView::Unreachable { .. } = input.ironic {
        let before = Host::read(input.host).record;
        let mut plan = match decide(input) {
            Step::Plan(plan) => plan,
            // decide never asks to observe when Ironic is known down.
            Step::ObserveIronic(_) => Plan::wait(OUTAGE_POLL),
        };
        // Only the writes of the undone plan are left out: its events and
        // the Ironic call itself did not happen.
        plan.actions
            .retain(|a| !matches!(a, Action::Attach { .. } | Action::Detach));
        if before.as_ref() != Some(written) {
            plan.actions.insert(0, Action::WriteRecord(before));
        }
        return plan;
    }
    let mut b = Builder::new(input);
    b.host.record = None; // force the write
    // 400 may come from the node's driver/driver_info, not our request: a
    // long wait before trying again; locks and outages back off normally.
    let delay = match err {
        IronicError::BadRequest(_) | IronicError::Http { .. } => {
            Some(BACKOFF_CAP.mul_f64(1.0 - 0.25 * input.jitter.clamp(0.0, 1.0)))
        }
        _ => None,
    };
    let url = (b.host.desired.as_ref()).map_or(written.url.clone(), |d| d.url.clone());
    let deleting = b.host.deletion.is_some();
    let mut plan = failure_plan(b, written.clone(), Some(url), op, err.to_string(), delay);
    if deleting {
        plan.requeue = plan.requeue.map(|r| r.min(BLOCKED_POLL));
    }
    plan
}

/// Power hold bookkeeping while an attach is pending. Returns a note for the
/// status when the hold was released for a reason worth telling.
fn hold_step(b: &mut Builder, record: &mut AttachedRecord, node: Option<&Node>) -> Option<String> {
    let now = b.now();
    let power = node.map(power).unwrap_or(Power::Unknown);
    if b.host.hold {
        if b.host.disable_power_off {
            b.set_hold(false);
            record.hold_since = None;
            return None;
        }
        if power == Power::On {
            // The operator powered the host on between our observation and
            // the annotation (or someone else did): never keep a running host
            // held; attach without the hold.
            b.set_hold(false);
            record.hold_since = None;
            return Some("the host was powered on; attaching while it runs".into());
        }
        let since = *record.hold_since.get_or_insert(now);
        if elapsed(Some(since), now) >= b.input.config.hold_timeout {
            b.set_hold(false);
            record.hold_since = None;
            record.hold_expired = true;
            let why = record
                .message
                .clone()
                .unwrap_or_else(|| "the attach is not confirmed".into());
            let note = format!(
                "released the power hold after {} without a confirmed attach ({why}); the operator may power the host on without the image",
                human(b.input.config.hold_timeout)
            );
            b.event(Reason::HoldReleased, note.clone());
            return Some(note);
        }
        return None;
    }
    // `--hold-timeout 0` turns the hold off.
    let wanted = b.host.online
        && !b.host.disable_power_off
        && power == Power::Off
        && !record.hold_expired
        && !b.input.config.hold_timeout.is_zero();
    if wanted {
        b.set_hold(true);
        record.hold_since = Some(now);
        b.event(
            Reason::PowerHold,
            "host is powered off: holding it off (reboot.metal3.io/metal3-dataimage) until the image is attached",
        );
    }
    None
}

fn attach_flow(mut b: Builder, url: &str) -> Step {
    let now = b.now();
    let node_id = b.host.node_id.to_string();
    let mut record = match b.host.record.clone() {
        Some(r) if r.url == url && r.node == node_id => r,
        _ => AttachedRecord::new(url, &node_id, Phase::Pending, now),
    };
    let verify = b.input.config.verify_interval;
    let fresh = b.input.verified_ago.filter(|ago| *ago < verify);
    if let (IronicView::NotObserved, Some(ago)) = (b.input.ironic, fresh)
        && record.phase == Phase::Attached
        && !b.host.hold
        && !b.host.servicing
    {
        // In sync and checked recently: no Ironic (BMC) read for every
        // unrelated change of the BareMetalHost.
        return b.show_attached(url, &record, verify - ago);
    }
    // Confirming or verifying needs the drive alone when it shows our image.
    // An attach confirmed that way must have gone into an empty drive (a
    // drive that held `cdrom-<node>.iso` before could still show the old
    // image). A held or serviced host reads the node first (power, state).
    let drive_first = !b.host.hold
        && !b.host.servicing
        && (record.phase == Phase::Attached
            || (record.phase == Phase::Attaching && record.into_empty));
    let (node, vmedia) = match b.input.ironic {
        IronicView::NotObserved if drive_first => return Step::ObserveIronic(Read::Drive),
        IronicView::NotObserved => return Step::ObserveIronic(Read::NodeAndDrive),
        IronicView::Drive { vmedia } => {
            if drive_first && drive_state(vmedia, b.host.node_id) == Drive::Ours {
                return if record.phase == Phase::Attaching {
                    let running = b.host.powered_on;
                    confirmed(b, record, url, running)
                } else {
                    still_attached(b, record, url)
                };
            }
            return Step::ObserveIronic(Read::Node);
        }
        IronicView::Failed(err) => {
            let note = hold_step(&mut b, &mut record, None);
            let what = |message: &str| match err {
                IronicError::NotFound(_) => {
                    format!("Ironic node {node_id} not found (not registered again yet?)")
                }
                _ => format!("cannot read the Ironic node: {message}"),
            };
            return b.read_failed(record, Some(url), err, what, note);
        }
        IronicView::Busy { node } => {
            let (state, message, wait) = match record.phase {
                Phase::Attached => (DataImageState::Attached, attached_message(&record), BUSY_POLL),
                Phase::Attaching => (
                    DataImageState::Attaching,
                    "Ironic is inserting the image (the node is locked, so its drive cannot be read yet)"
                        .to_string(),
                    CONFIRM_POLL,
                ),
                _ => (
                    DataImageState::Waiting,
                    "Ironic node is busy (locked by a running operation); attaching when it is free"
                        .to_string(),
                    BUSY_POLL,
                ),
            };
            let note = hold_step(&mut b, &mut record, Some(node));
            if b.host.record.as_ref() != Some(&record) && b.host.record.is_some() {
                b.write_record(Some(record));
            }
            return b.show(Some(url), state, join_note(message, note), Some(wait));
        }
        IronicView::Unreachable { since, error } => {
            if record.phase == Phase::Attached {
                // Nothing says the image left: it stays shown as attached,
                // and is verified again when Ironic answers.
                return b.show_attached(url, &record, OUTAGE_POLL);
            }
            let note = hold_step(&mut b, &mut record, None);
            if b.host.record.as_ref() != Some(&record)
                && (b.host.record.is_some() || record.hold_since.is_some() || record.hold_expired)
            {
                b.write_record(Some(record.clone()));
            }
            let then = if record.phase == Phase::Attaching {
                "confirming the attach"
            } else {
                "attaching"
            };
            let message = join_note(unreachable_message(*since, error, then), note);
            return b.show(
                Some(url),
                DataImageState::Waiting,
                message,
                Some(OUTAGE_POLL),
            );
        }
        IronicView::Observed { node, vmedia } => (node, vmedia),
    };
    attach_observed(b, record, url, node, vmedia)
}

/// Attach once the node's drive was read: verify an attached image,
/// confirm an attach in flight, or attach when every gate is open.
fn attach_observed(
    mut b: Builder,
    mut record: AttachedRecord,
    url: &str,
    node: &Node,
    vmedia: &[VirtualMedia],
) -> Step {
    let now = b.now();
    let drive = drive_state(vmedia, &node.uuid);

    if record.phase == Phase::Attached {
        if node.provision_state != ProvisionState::Active && node.reservation.is_none() {
            // Servicing (or rescue) runs Ironic's prepare_ramdisk, which
            // ejects the CD: look again once the node is active.
            return b.show(
                Some(url),
                DataImageState::Attached,
                format!(
                    "{}; Ironic node is {}: the drive is checked again (and the image attached again if it was ejected) once the node is active",
                    attached_message(&record),
                    node.provision_state
                ), Some(BLOCKED_POLL));
        }
        match &drive {
            Drive::Ours => return still_attached(b, record, url),
            _ if node.reservation.is_some() => {
                return b.show_attached(url, &record, BUSY_POLL);
            }
            Drive::Foreign(image) => {
                let message = format!(
                    "the CD drive holds media that is not ours ({image}); the image is attached again once it is gone"
                );
                return b.show(
                    Some(url),
                    DataImageState::Waiting,
                    message,
                    Some(BLOCKED_POLL),
                );
            }
            Drive::Empty => {
                // Ejected behind our back (BMC reset, manual eject): attach again.
                b.event(
                    Reason::Ejected,
                    format!(
                        "{} is no longer inserted; attaching it again",
                        redact_url(url)
                    ),
                );
                record.enter(Phase::Pending, now);
                record.requested_at = Some(now);
            }
        }
    }

    if record.phase == Phase::Attaching {
        attaching(b, record, url, node, &drive)
    } else {
        attach_pending(b, record, url, node, &drive)
    }
}

/// A verification found our image in the drive.
fn still_attached(mut b: Builder, mut record: AttachedRecord, url: &str) -> Step {
    b.set_hold(false);
    if record.hold_since.take().is_some() {
        b.write_record(Some(record.clone()));
    }
    let verify = b.input.config.verify_interval;
    verified(b.show_attached(url, &record, verify))
}

/// An attach was sent: confirm it, or judge it failed.
fn attaching(
    mut b: Builder,
    mut record: AttachedRecord,
    url: &str,
    node: &Node,
    drive: &Drive,
) -> Step {
    let now = b.now();
    let note = hold_step(&mut b, &mut record, Some(node));
    if node.reservation.is_none()
        && let Some(error) = vmedia_error(node, Op::Attach)
    {
        return failed(b, record, Some(url.to_string()), Op::Attach, error);
    }
    if *drive == Drive::Ours && node.reservation.is_none() {
        let running = power(node) == Power::On;
        return confirmed(b, record, url, running);
    }
    let waited = confirm_elapsed(&record, b.input.ironic_recovered_at, now);
    if node.reservation.is_none() && waited >= b.input.config.confirm_timeout {
        let message = format!(
            "Ironic accepted the attach but the image was not inserted after {}",
            human(b.input.config.confirm_timeout)
        );
        return failed(b, record, Some(url.to_string()), Op::Attach, message);
    }
    b.write_record(Some(record));
    let message = join_note("Ironic is downloading and inserting the image".into(), note);
    b.show(
        Some(url),
        DataImageState::Attaching,
        message,
        Some(CONFIRM_POLL),
    )
}

/// Pending or Failed: attach when every gate is open.
fn attach_pending(
    mut b: Builder,
    mut record: AttachedRecord,
    url: &str,
    node: &Node,
    drive: &Drive,
) -> Step {
    let now = b.now();
    let note = hold_step(&mut b, &mut record, Some(node));
    let blocked: Option<(DataImageState, String, Duration)> = if let Some(at) =
        pending_retry(&record, now)
    {
        let message = record.message.clone().unwrap_or_default();
        Some((
            DataImageState::Error,
            format!("attach failed: {message}; retrying at {at}"),
            wait_until(at, now),
        ))
    } else if node.maintenance {
        Some((
            DataImageState::Waiting,
            "Ironic node is in maintenance; waiting for it to leave maintenance".into(),
            BLOCKED_POLL,
        ))
    } else if node.reservation.is_some() {
        Some((
            DataImageState::Waiting,
            "Ironic node is busy (reserved by a running operation)".into(),
            BUSY_POLL,
        ))
    } else if node.provision_state != ProvisionState::Active {
        Some((
            DataImageState::Waiting,
            format!(
                "Ironic node is {} (waiting for active)",
                node.provision_state
            ),
            BLOCKED_POLL,
        ))
    } else if let Drive::Foreign(image) = drive {
        Some((
            DataImageState::Waiting,
            format!(
                "the CD drive holds media that is not ours ({image}: deploy media or a live ISO); waiting for it to leave"
            ),
            BLOCKED_POLL,
        ))
    } else {
        match b.input.staging {
            StagingView::NotNeeded | StagingView::Ready(_) => None,
            StagingView::NotStarted => {
                // Only now that an attach could follow: no download for a
                // host that is gated anyway.
                b.push(Action::Stage);
                Some((
                    DataImageState::Waiting,
                    "staging the image: starting the download".into(),
                    STAGING_POLL,
                ))
            }
            StagingView::Running { done, total } => Some((
                DataImageState::Waiting,
                match total {
                    Some(total) => {
                        format!("staging the image: {} of {}", bytes(*done), bytes(*total))
                    }
                    None => format!("staging the image: {} so far", bytes(*done)),
                },
                STAGING_POLL,
            )),
            StagingView::Failed(message) => Some((
                DataImageState::Error,
                format!("staging the image failed: {message}"),
                BACKOFF_BASE,
            )),
            StagingView::Unavailable(message) => {
                Some((DataImageState::Waiting, message.clone(), BLOCKED_POLL))
            }
        }
    };
    if let Some((state, message, wait)) = blocked {
        if b.host.record.as_ref() != Some(&record)
            && (b.host.record.is_some() || record.hold_since.is_some() || record.hold_expired)
        {
            b.write_record(Some(record));
        }
        return b.show(Some(url), state, join_note(message, note), Some(wait));
    }

    let image_url = match b.input.staging {
        StagingView::Ready(image) => {
            record.digest = Some(image.digest.clone());
            record.size = Some(image.size);
            image.ironic_url.clone()
        }
        _ => {
            record.digest = None;
            record.size = None;
            url.to_string()
        }
    };
    // The finalizer and the record go first: a crash after the POST then
    // finds "attaching" and confirms instead of attaching twice.
    b.add_finalizer();
    record.enter(Phase::Attaching, now);
    record.retry_at = None;
    record.into_empty = *drive == Drive::Empty;
    b.write_record(Some(record));
    b.push(Action::Attach { image_url });
    b.event(Reason::Attaching, format!("attaching {}", redact_url(url)));
    let message = join_note("attach sent to Ironic".into(), note);
    b.show(
        Some(url),
        DataImageState::Attaching,
        message,
        Some(CONFIRM_POLL),
    )
}

/// How long an attach/detach sent at `record`'s phase time has been
/// waiting for its effect; an Ironic outage since then restarts the clock.
fn confirm_elapsed(
    record: &AttachedRecord,
    recovered_at: Option<Timestamp>,
    now: Timestamp,
) -> Duration {
    let since = recovered_at.map_or(record.time, |back| record.time.max(back));
    elapsed(Some(since), now)
}

/// "1.2 GiB": one decimal, binary units (the progress shown while staging
/// changes only every tenth of a unit, so the status is not rewritten for
/// every chunk).
fn bytes(n: u64) -> String {
    const UNITS: [(&str, u64); 3] = [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)];
    for (unit, size) in UNITS {
        if n >= size {
            // Integer tenths: exact, no float formatting surprises.
            let tenths = n.saturating_mul(10) / size;
            return format!("{}.{} {unit}", tenths / 10, tenths % 10);
        }
    }
    format!("{n} bytes")
}

fn attached_message(record: &AttachedRecord) -> String {
    if record.attached_running {
        "attached; the host was running, so its OS may only see the image after its next boot (depends on the BMC)".into()
    } else {
        "attached".into()
    }
}

fn join_note(message: String, note: Option<String>) -> String {
    match note {
        Some(note) => format!("{message} ({note})"),
        None => message,
    }
}

fn confirmed(mut b: Builder, mut record: AttachedRecord, url: &str, running: bool) -> Step {
    let now = b.now();
    let attached_after = record
        .requested_at
        .map(|t| elapsed(Some(t), now).as_secs_f64());
    record.enter(Phase::Attached, now);
    record.errors = 0;
    record.message = None;
    record.retry_at = None;
    record.hold_since = None;
    record.hold_expired = false;
    record.requested_at = None;
    record.attached_running = running;
    b.set_hold(false);
    b.write_record(Some(record.clone()));
    b.event(Reason::Attached, format!("attached {}", redact_url(url)));
    let verify = b.input.config.verify_interval;
    let mut step = verified(b.show_attached(url, &record, verify));
    if let Step::Plan(plan) = &mut step {
        plan.attached_after = attached_after;
    }
    step
}

/// Marks a plan made from an observation that showed our image in the drive.
fn verified(mut step: Step) -> Step {
    if let Step::Plan(plan) = &mut step {
        plan.verified = true;
    }
    step
}

/// The host is being deleted: detach before our finalizer goes, or give up
/// after `--finalizer-timeout`.
fn deletion(mut b: Builder) -> Step {
    let now = b.now();
    if !b.host.has_finalizer {
        return b.finish(StatusChange::Keep, None);
    }
    if b.host.paused {
        let url = b.host.record.as_ref().map(|r| r.url.clone());
        return b.show(
            url.as_deref(),
            DataImageState::Detaching,
            "host is being deleted but paused: waiting for the pause to be lifted",
            None,
        );
    }
    if b.host.detached {
        let message = "host is detached: finalizer released without calling Ironic";
        return release(b, false, message.into());
    }
    if b.input.upstream_conflict {
        let message = "an upstream DataImage owns the drive: finalizer released";
        return release(b, false, message.into());
    }
    let Some(record) = b.host.record.clone() else {
        b.set_hold(false);
        b.remove_finalizer();
        return b.finish(StatusChange::Keep, None);
    };
    if record.phase == Phase::Pending || b.host.node_id.is_empty() || record.node != b.host.node_id
    {
        b.set_hold(false);
        b.write_record(None);
        b.remove_finalizer();
        return b.finish(StatusChange::Keep, None);
    }
    let timeout = b.input.config.finalizer_timeout;
    let remaining = timeout.saturating_sub(elapsed(b.host.deletion, now));
    let (at, timeout) = (add(now, remaining), human(timeout));
    // Without a drive to look at: the message when the deadline releases
    // the finalizer, the one shown until then, and when to look again.
    let (released, waiting, poll) = match b.input.ironic {
        IronicView::NotObserved => return Step::ObserveIronic(Read::NodeAndDrive),
        IronicView::Drive { .. } => return Step::ObserveIronic(Read::Node),
        IronicView::Observed { node, vmedia } => {
            return deletion_observed(b, record, node, vmedia, remaining.is_zero());
        }
        IronicView::Failed(IronicError::NotFound(_)) => (
            format!(
                "Ironic node {} not found for {timeout}: finalizer released without a confirmed detach",
                record.node
            ),
            format!(
                "Ironic node {} not found (Ironic may not have registered it again yet); releasing the finalizer at {at}",
                record.node
            ),
            remaining.min(BLOCKED_POLL),
        ),
        IronicView::Busy { .. } => (
            format!(
                "detach not confirmed within {timeout} (the node stayed locked): finalizer released; the image may still be inserted"
            ),
            "Ironic node is busy; detaching before deletion when it is free".into(),
            CONFIRM_POLL,
        ),
        IronicView::Unreachable { since, error } => (
            format!(
                "Ironic unreachable since {since} ({error}): finalizer released after {timeout} without a confirmed detach"
            ),
            format!(
                "{}, or releasing the finalizer at {at}",
                unreachable_message(*since, error, "detaching before deletion")
            ),
            remaining.min(OUTAGE_POLL),
        ),
        IronicView::Failed(err) => (
            format!(
                "Ironic unreachable for {timeout} ({err}): finalizer released without a confirmed detach"
            ),
            format!("cannot reach Ironic to detach ({err}); releasing the finalizer at {at}"),
            remaining.min(BLOCKED_POLL),
        ),
    };
    if remaining.is_zero() {
        return release(b, true, released);
    }
    let url = Some(record.url.as_str());
    b.show(url, DataImageState::Detaching, waiting, Some(poll))
}

/// Deletion once the node's drive was read.
fn deletion_observed(
    mut b: Builder,
    mut record: AttachedRecord,
    node: &Node,
    vmedia: &[VirtualMedia],
    expired: bool,
) -> Step {
    let now = b.now();
    let attach_running = record.phase == Phase::Attaching && node.reservation.is_some();
    if drive_state(vmedia, &node.uuid) != Drive::Ours && !attach_running {
        let message = format!("detached {} before deletion", redact_url(&record.url));
        return release(b, false, message);
    }
    if expired {
        let message = format!(
            "detach not confirmed within {}: finalizer released; the image may still be inserted",
            human(b.input.config.finalizer_timeout)
        );
        return release(b, true, message);
    }
    let url = Some(record.url.clone());
    let waiting = |b: Builder, message: &str| {
        b.show(
            url.as_deref(),
            DataImageState::Detaching,
            message,
            Some(CONFIRM_POLL),
        )
    };
    if node.reservation.is_some() {
        return waiting(
            b,
            "Ironic node is busy; detaching before deletion when it is free",
        );
    }
    let recently_sent = record.phase == Phase::Detaching
        && record.retry_at.is_none()
        && confirm_elapsed(&record, b.input.ironic_recovered_at, now)
            < b.input.config.confirm_timeout;
    if recently_sent || pending_retry(&record, now).is_some() {
        return waiting(b, "waiting for Ironic to eject the image");
    }
    record.enter(Phase::Detaching, now);
    record.retry_at = None;
    let message = format!("detaching {} before deletion", redact_url(&record.url));
    b.write_record(Some(record));
    b.push(Action::Detach);
    b.event(Reason::Detaching, message);
    waiting(b, "detaching the image before deletion")
}

/// Lets the deleted host go: hold, record and our finalizer removed.
/// `warning`: without a confirmed detach.
fn release(mut b: Builder, warning: bool, message: String) -> Step {
    // Shown while other finalizers (the operator's) keep the host around.
    let url = b.host.record.as_ref().map(|r| r.url.clone());
    let (state, reason) = if warning {
        (DataImageState::Error, Reason::FinalizerReleased)
    } else {
        (DataImageState::Detached, Reason::Detached)
    };
    let status = match (&url, b.host.status) {
        (Some(url), Some(_)) => b.status(Some(url), state, message.clone()),
        _ => StatusChange::Keep,
    };
    b.set_hold(false);
    b.write_record(None);
    b.remove_finalizer();
    b.event(reason, message);
    b.finish(status, None)
}

/// Does the host need any work from the reconciler at all (used to keep
/// hosts without dataImage, record, hold or finalizer cheap)?
pub(crate) fn is_idle(host: &HostResource) -> bool {
    let h = Host::read(host);
    h.desired.is_none() && h.record.is_none() && !h.hold && !h.has_finalizer && h.status.is_none()
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;
