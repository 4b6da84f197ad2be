//! The reconciler's brain, as a pure function: host + annotation state +
//! observed Ironic node/vmedia + staging state + clock + config → next actions
//! and the status to show. No I/O here: the controller observes, calls
//! [`decide`], and executes the [`Plan`] in order.
//!
//! One call decides one step; the controller requeues to observe the result
//! (Ironic's 204 only means "accepted", so every attach and detach is
//! confirmed by a later observation).

use std::time::Duration;

use jiff::Timestamp;
use kube::ResourceExt;

use super::record::{
    AttachedRecord, DETACHED_ANNOTATION, FINALIZER, HOLD_ANNOTATION, PAUSED_ANNOTATION, Phase,
};
use crate::ironic::ours::{CdContents, cd_contents};
use crate::ironic::{IronicError, Node, PowerState, ProvisionState, VirtualMedia};
use crate::model::DataImageState as State;
use crate::model::bmh::HostResource;
use crate::model::{DataImageSpec, DataImageStatus};
use crate::staging::{StagedImage, Staging};
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
    /// What the stager reports. [`Staging::Idle`]: the decision starts it
    /// ([`Action::Stage`]) once every other gate is open.
    Needed(Staging),
    /// The host asks for credentials or skipped TLS verification but this
    /// reconciler cannot stage (no image server configured, or not built yet).
    Unavailable(String),
}

impl StagingView {
    fn ready(&self) -> Option<&StagedImage> {
        match self {
            Self::Needed(Staging::Ready(image)) => Some(image),
            _ => None,
        }
    }
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

#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum StatusChange {
    #[default]
    Keep,
    Set(DataImageStatus),
    Clear,
}

/// The outcome of one decision.
#[derive(Clone, Debug, Default, PartialEq)]
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

/// `last_error` written by our vmedia attach or detach (Ironic also writes
/// its own failures there, its own virtual-media boot failures included;
/// only ours count): [`crate::ironic::ours::our_error`], redacted.
pub(crate) fn vmedia_error(node: &Node, op: Op) -> Option<String> {
    crate::ironic::ours::our_error(node.last_error.as_deref(), Some(op))
        .map(|text| redact_url(text).into_owned())
}

/// Whether the node is (or is turning) on; `None`: unknown, or changing.
fn powered(node: &Node) -> Option<bool> {
    match (&node.power_state, &node.target_power_state) {
        (_, Some(PowerState::On | PowerState::Rebooting)) | (Some(PowerState::On), _) => Some(true),
        (Some(PowerState::Off), None) => Some(false),
        _ => None,
    }
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
    /// The image the host asks for: its URL, or `secret:<name>` for one
    /// built from a Secret ([`crate::model::DataImageSpec::source`]).
    desired: Option<String>,
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
        let annotations = host.annotations();
        let status = host.status.as_ref();
        let provisioning = status.and_then(|s| s.provisioning.as_ref());
        let operational = status.and_then(|s| s.operational_status.as_deref());
        Self {
            generation: host.metadata.generation,
            deletion: host.metadata.deletion_timestamp.as_ref().map(|t| t.0),
            has_finalizer: host.finalizers().iter().any(|f| f == FINALIZER),
            paused: annotations.contains_key(PAUSED_ANNOTATION),
            detached: annotations.contains_key(DETACHED_ANNOTATION),
            hold: annotations.contains_key(HOLD_ANNOTATION),
            record: AttachedRecord::of_host(host),
            desired: host
                .spec
                .data_image
                .as_ref()
                .and_then(DataImageSpec::source),
            online: host.spec.online.unwrap_or(false),
            disable_power_off: host.spec.disable_power_off.unwrap_or(false),
            state: provisioning.map_or("", |p| p.state.as_str()),
            node_id: provisioning.map_or("", |p| p.id.as_str()),
            status: status.and_then(|s| s.data_image.as_ref()),
            operator_status: operational.is_some(),
            servicing: operational == Some("servicing"),
            powered_on: status.and_then(|s| s.powered_on).unwrap_or(false),
        }
    }
}

/// What to show while an attach waits: state, message, when to look again.
type Waiting = (State, String, Duration);

/// Builds plans with the host's status bookkeeping.
struct Builder<'a, 'b> {
    input: &'b Input<'a>,
    host: Host<'a>,
    /// The image the status shows: by default the one the host asks for.
    url: Option<String>,
    plan: Plan,
}

impl<'a, 'b> Builder<'a, 'b> {
    fn new(input: &'b Input<'a>) -> Self {
        let host = Host::read(input.host);
        Self {
            input,
            url: host.desired.clone(),
            host,
            plan: Plan::default(),
        }
    }

    fn push(&mut self, action: Action) {
        self.plan.actions.push(action);
    }

    fn event(&mut self, reason: Reason, message: impl Into<String>) {
        let message = message.into();
        self.push(Action::Event(EventNote { reason, message }));
    }

    fn set_hold(&mut self, on: bool) {
        if self.host.hold != on {
            self.push(Action::SetHold(on));
            self.host.hold = on;
        }
    }

    fn write_record(&mut self, record: Option<AttachedRecord>) {
        if self.host.record != record {
            self.host.record.clone_from(&record);
            // One patch is enough when no Ironic call sits between two writes.
            let actions = &mut self.plan.actions;
            let last_ironic = actions
                .iter()
                .rposition(|a| matches!(a, Action::Attach { .. } | Action::Detach));
            let earlier = actions
                .iter()
                .rposition(|a| matches!(a, Action::WriteRecord(_)));
            if let Some(index) = earlier
                && last_ironic.is_none_or(|ironic| ironic < index)
            {
                actions.remove(index);
            }
            actions.push(Action::WriteRecord(record));
        }
    }

    /// Lets the host go: hold, record and our finalizer removed.
    fn let_go(&mut self) {
        self.set_hold(false);
        self.write_record(None);
        if self.host.has_finalizer {
            self.push(Action::RemoveFinalizer);
            self.host.has_finalizer = false;
        }
    }

    /// Nothing to attach and nothing of ours in the drive: let go, and the
    /// status goes too.
    fn done(mut self) -> Step {
        self.let_go();
        let status = (self.host.status).map_or(StatusChange::Keep, |_| StatusChange::Clear);
        Step::Plan(self.finish(status, None))
    }

    /// Records the detach as sent (the record goes first), then sends it.
    fn send_detach(&mut self, mut record: AttachedRecord, event: String) {
        record.enter(Phase::Detaching, self.input.now);
        record.retry_at = None;
        self.write_record(Some(record));
        self.push(Action::Detach);
        self.event(Reason::Detaching, event);
    }

    fn status(&self, state: State, message: impl Into<String>) -> StatusChange {
        if !self.host.operator_status {
            return StatusChange::Keep;
        }
        let url = self.url.as_deref();
        let record = self.host.record.as_ref();
        // The staged image, when the image shown is the one the host asks for.
        let desired = url.is_some() && url == self.host.desired.as_deref();
        let staged_image = self.input.staging.ready().filter(|_| desired);
        let (staged_digest, staged_size) = match staged_image {
            Some(image) => Some((image.digest.clone(), image.size)),
            None => record
                .filter(|r| Some(r.url.as_str()) == url)
                .and_then(|r| r.digest.clone().zip(r.size)),
        }
        .unzip();
        let last_transition_time = (self.host.status)
            .filter(|prev| prev.state == Some(state))
            .and_then(|prev| prev.last_transition_time.clone())
            .or_else(|| Some(self.input.now.to_string()));
        let mut message = message.into();
        // A data image should not be bootable: say so when the staged ISO
        // carries an El Torito record (only staged images are inspected).
        if let Some(note) = staged_image.and_then(StagedImage::status_note) {
            message = format!("{message}; {note}");
        }
        StatusChange::Set(DataImageStatus {
            url: url.map(|u| redact_url(u).into_owned()),
            state: Some(state),
            message: Some(message),
            error_count: Some(record.map_or(0, |r| r.errors)),
            last_transition_time,
            observed_generation: self.host.generation,
            staged_digest,
            staged_size,
        })
    }

    /// The one failure bookkeeping of every path (attach; detach for a URL
    /// change, a removal, leaving the provisioned states; detach before
    /// deletion): counts a failure and schedules its retry, unless a retry
    /// is already pending. Then the same failure is only being seen again:
    /// no new count, no new random retry time, so nothing to write. Returns
    /// the retry time. `delay` overrides the exponential backoff.
    fn count_failure(
        &self,
        record: &mut AttachedRecord,
        message: String,
        delay: Option<Duration>,
    ) -> Timestamp {
        let now = self.input.now;
        if let Some(at) = pending_retry(record, now) {
            return at;
        }
        record.errors = record.errors.saturating_add(1);
        let delay = delay.unwrap_or_else(|| backoff(record.errors, self.input.jitter));
        let at = add(now, delay);
        record.message = Some(message);
        record.retry_at = Some(at);
        at
    }

    /// A failure to read the node, counted like any other
    /// ([`Self::count_failure`]), shown as "`doing`: <error>" until the retry.
    fn read_failed(
        mut self,
        mut record: AttachedRecord,
        doing: &str,
        err: &IronicError,
        note: Option<String>,
    ) -> Step {
        let at = self.count_failure(&mut record, err.to_string(), None);
        let what = match err {
            IronicError::NotFound(_) => format!(
                "Ironic node {} not found (not registered again yet?)",
                self.host.node_id
            ),
            _ => format!("{doing}: {}", record.message.as_deref().unwrap_or_default()),
        };
        self.write_record(Some(record));
        let wait = wait_until(at, self.input.now);
        let message = join_note(format!("{what}; retrying at {at}"), note);
        self.show(State::Error, message, Some(wait))
    }

    /// A failed attach or detach (seen by observation or refused by Ironic):
    /// counted and backed off ([`Self::count_failure`]), an Event, the error
    /// status.
    fn failed(
        mut self,
        mut record: AttachedRecord,
        op: Op,
        message: String,
        delay: Option<Duration>,
    ) -> Plan {
        let now = self.input.now;
        let at = self.count_failure(&mut record, message.clone(), delay);
        // "attaching …" / "detaching …"
        let url = redact_url(&record.url).into_owned();
        let event = format!("{}ing {url} failed: {message}", op.verb());
        // A failed detach stays in Detaching: the retry re-sends it.
        let reason = if op == Op::Attach {
            record.enter(Phase::Failed, now);
            Reason::AttachFailed
        } else {
            Reason::DetachFailed
        };
        self.write_record(Some(record));
        // A failed attach is followed by a detach before the retry (the BMC
        // may still show a half-inserted image).
        if let (Op::Attach, IronicView::Observed { node, vmedia }) = (op, self.input.ironic)
            && cd_contents(vmedia, &node.uuid) == CdContents::Ours
        {
            self.push(Action::Detach);
        }
        self.event(reason, event);
        self.plan.failure = Some(op);
        let status = self.status(State::Error, retry_message(op, &message, at));
        self.finish(status, Some(wait_until(at, now)))
    }

    /// Shows the image attached; looks again after `requeue`.
    fn show_attached(self, record: &AttachedRecord, requeue: Duration) -> Step {
        let message = attached_message(record);
        self.show(State::Attached, message, Some(requeue))
    }

    /// Shows the image attached after a read that showed it in the drive:
    /// the controller may skip reads until `--verify-interval`.
    fn show_verified(mut self, record: &AttachedRecord) -> Step {
        self.plan.verified = true;
        let verify = self.input.config.verify_interval;
        self.show_attached(record, verify)
    }

    /// Shows `message` in `state`; looks again after `requeue` (`None`: only
    /// on a change).
    fn show(self, state: State, message: impl Into<String>, requeue: Option<Duration>) -> Step {
        let status = self.status(state, message);
        Step::Plan(self.finish(status, requeue))
    }

    fn finish(mut self, status: StatusChange, requeue: Option<Duration>) -> Plan {
        self.plan.status = status;
        self.plan.requeue = requeue;
        self.plan
    }
}

fn elapsed(since: Timestamp, now: Timestamp) -> Duration {
    let seconds = now.as_second().saturating_sub(since.as_second());
    Duration::from_secs(u64::try_from(seconds).unwrap_or(0))
}

/// The record's retry time, when it is still ahead.
fn pending_retry(record: &AttachedRecord, now: Timestamp) -> Option<Timestamp> {
    record.retry_at.filter(|at| *at > now)
}

/// "attach failed: …; retrying at …" (the same text until the retry, so the
/// status is written once).
fn retry_message(op: Op, message: &str, at: Timestamp) -> String {
    format!("{} failed: {message}; retrying at {at}", op.verb())
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
    let seconds = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    Timestamp::from_second(now.as_second().saturating_add(seconds)).unwrap_or(now)
}

/// "45s", "2m", "1m30s".
fn human(d: Duration) -> String {
    match (d.as_secs() / 60, d.as_secs() % 60) {
        (0, s) => format!("{s}s"),
        (m, 0) => format!("{m}m"),
        (m, s) => format!("{m}m{s}s"),
    }
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

/// How long an attach/detach sent at `record`'s phase time has been
/// waiting for its effect; an Ironic outage since then restarts the clock.
fn confirm_elapsed(record: &AttachedRecord, input: &Input) -> Duration {
    let since = input
        .ironic_recovered_at
        .map_or(record.time, |back| record.time.max(back));
    elapsed(since, input.now)
}

/// Decides the next step for one host.
pub(crate) fn decide(input: &Input) -> Step {
    let mut step = decide_host(input);
    let spec = input.host.spec.data_image.as_ref();
    // The reconciler cannot watch Secrets (it may only get the ones hosts
    // name), so an image built from one is looked at again every
    // CONTENT_POLL: a change of the Secret is a swap.
    if let Step::Plan(plan) = &mut step
        && spec.is_some_and(|d| d.url.is_empty() && d.content_from.is_some())
        && input.host.metadata.deletion_timestamp.is_none()
    {
        plan.requeue = Some(plan.requeue.map_or(CONTENT_POLL, |r| r.min(CONTENT_POLL)));
    }
    step
}

fn decide_host(input: &Input) -> Step {
    let mut b = Builder::new(input);

    if let Some(deleted) = b.host.deletion {
        return deletion(b, deleted);
    }
    if b.host.paused {
        let message = "host is paused (baremetalhost.metal3.io/paused): nothing is done until the annotation is removed";
        return b.show(State::Waiting, message, None);
    }
    if b.host.detached {
        let message = "host is detached from the operator (baremetalhost.metal3.io/detached): nothing is done until it is reattached";
        return b.show(State::Waiting, message, None);
    }
    if input.upstream_conflict {
        // The operator would attach the DataImage into the same drive: do not
        // fight over it; only release our hold so the host is not kept off.
        b.set_hold(false);
        let message = "an upstream DataImage with this host's name exists: the baremetal-operator attaches it into the same \
             drive; delete it or remove spec.dataImage (left untouched)";
        return b.show(State::Error, message, None);
    }

    // The record of an image of ours that went into the drive.
    let in_drive = b.host.record.clone().filter(|r| r.phase != Phase::Pending);
    if !ACTIVE_STATES.contains(&b.host.state) {
        return match in_drive {
            Some(record) if !b.host.node_id.is_empty() => detach_flow(b, record, Purpose::Leaving),
            _ if b.host.desired.is_none() => b.done(),
            _ => not_provisioned(
                b,
                "the image is attached once it is provisioned or externally provisioned",
            ),
        };
    }
    if b.host.node_id.is_empty() {
        let message = "host has no Ironic node yet (status.provisioning.ID is empty)";
        return b.show(State::Waiting, message, None);
    }
    let Some(url) = b.host.desired.clone() else {
        return match in_drive {
            Some(record) => detach_flow(b, record, Purpose::Removal),
            None => b.done(),
        };
    };
    match in_drive {
        Some(record)
            if record.node == b.host.node_id
                && (record.url != url
                    || record.phase == Phase::Detaching
                    || (input.staging.ready())
                        .is_some_and(|image| record.digest.as_deref() != Some(&image.digest))) =>
        {
            detach_flow(b, record, Purpose::Replace)
        }
        _ => attach_flow(b, &url),
    }
}

/// Outside the provisioned states nothing of ours stays on the host; the
/// image it asks for waits ("host is <state>: `then`").
fn not_provisioned(mut b: Builder, then: &str) -> Step {
    b.set_hold(false);
    b.write_record(None);
    let state = Some(b.host.state).filter(|s| !s.is_empty());
    let state = state.unwrap_or("not registered");
    b.show(State::Waiting, format!("host is {state}: {then}"), None)
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

/// Empties the drive of our image (`record`, never [`Phase::Pending`]).
fn detach_flow(mut b: Builder, mut record: AttachedRecord, purpose: Purpose) -> Step {
    let now = b.input.now;
    // The status shows the image the host asks for, if any.
    b.url.get_or_insert_with(|| record.url.clone());
    if record.node != b.host.node_id {
        // The host was registered again under a new node: the old node's
        // drive is not this host's any more.
        return drive_emptied(b, purpose, false);
    }
    let (node, vmedia) = match b.input.ironic {
        IronicView::NotObserved => return Step::ObserveIronic(Read::NodeAndDrive),
        IronicView::Drive { .. } => return Step::ObserveIronic(Read::Node),
        IronicView::Failed(IronicError::NotFound(_)) => return drive_emptied(b, purpose, false),
        IronicView::Failed(err) => {
            let doing = "cannot read the node to detach the image";
            return b.read_failed(record, doing, err, None);
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
            return b.show(State::Detaching, message, Some(BUSY_POLL));
        }
        IronicView::Unreachable { since, error } => {
            detach_hold(&mut b, &mut record, purpose, None);
            let message = unreachable_message(*since, error, "detaching");
            return b.show(State::Waiting, message, Some(OUTAGE_POLL));
        }
        IronicView::Observed { node, vmedia } => (node, vmedia),
    };
    detach_hold(&mut b, &mut record, purpose, Some(node));
    if cd_contents(vmedia, &node.uuid) != CdContents::Ours {
        if node.reservation.is_some() && record.phase == Phase::Attaching {
            // Our attach may still be running: wait for it before calling
            // the drive empty.
            let message = "waiting for Ironic to finish the previous attach before detaching";
            return b.show(State::Detaching, message, Some(CONFIRM_POLL));
        }
        // A failed attach was detached already.
        let was_ours = record.phase != Phase::Failed;
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
        return b.show(State::Detaching, message, Some(BUSY_POLL));
    }
    if let Some(at) = pending_retry(&record, now) {
        let message = record.message.as_deref().unwrap_or_default();
        let message = retry_message(Op::Detach, message, at);
        return b.show(State::Error, message, Some(wait_until(at, now)));
    }
    if record.phase == Phase::Detaching {
        if let Some(error) = vmedia_error(node, Op::Detach) {
            return Step::Plan(b.failed(record, Op::Detach, error, None));
        }
        if confirm_elapsed(&record, b.input) < b.input.config.confirm_timeout {
            return b.show(State::Detaching, detaching, Some(CONFIRM_POLL));
        }
        if record.retry_at.is_none() {
            let message = format!(
                "Ironic accepted the detach but the image was still inserted after {}",
                human(b.input.config.confirm_timeout)
            );
            return Step::Plan(b.failed(record, Op::Detach, message, None));
        }
    }
    b.send_detach(record, detaching.clone());
    b.show(State::Detaching, detaching, Some(CONFIRM_POLL))
}

/// Swapping images on a powered-off host holds it off meanwhile (the hold's
/// deadline runs on while Ironic is away); any other detach lets it go.
fn detach_hold(
    b: &mut Builder,
    record: &mut AttachedRecord,
    purpose: Purpose,
    node: Option<&Node>,
) {
    if purpose == Purpose::Replace {
        let _ = hold_step(b, record, node);
        b.write_record(Some(record.clone()));
    } else {
        b.set_hold(false);
    }
}

/// Nothing of ours is in the drive any more.
fn drive_emptied(mut b: Builder, purpose: Purpose, was_ours: bool) -> Step {
    let old = b.host.record.clone();
    if was_ours && let Some(old) = &old {
        let url = redact_url(&old.url);
        b.event(Reason::Detached, format!("detached {url}"));
    }
    match (purpose, b.host.desired.clone()) {
        (Purpose::Replace, Some(url)) => {
            let mut record = AttachedRecord::new(&url, b.host.node_id, Phase::Pending, b.input.now);
            // Keep the hold bookkeeping across the swap.
            if let Some(old) = old {
                record.hold_since = old.hold_since;
                record.hold_expired = old.hold_expired;
            }
            b.write_record(Some(record));
            let message = "previous image detached; attaching the new one";
            b.show(State::Attaching, message, Some(Duration::from_secs(1)))
        }
        (Purpose::Leaving, Some(_)) => not_provisioned(
            b,
            "the image was detached and is attached again once the host is provisioned",
        ),
        _ => b.done(),
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
    // With Ironic known down, decide plans (it asks to read only a view it
    // has not got).
    if let IronicView::Unreachable { .. } = input.ironic
        && let Step::Plan(mut plan) = decide(input)
    {
        // Only the writes of the undone plan are left out: its events and
        // the Ironic call itself did not happen.
        plan.actions
            .retain(|a| !matches!(a, Action::Attach { .. } | Action::Detach));
        let before = AttachedRecord::of_host(input.host);
        if before.as_ref() != Some(written) {
            plan.actions.insert(0, Action::WriteRecord(before));
        }
        return plan;
    }
    let mut b = Builder::new(input);
    b.host.record = None; // force the write
    b.url.get_or_insert_with(|| written.url.clone());
    // 400 may come from the node's driver/driver_info, not our request: the
    // longest wait before trying again; locks and outages back off normally.
    let delay = matches!(err, IronicError::BadRequest(_) | IronicError::Http { .. })
        .then(|| backoff(u32::MAX, input.jitter));
    let deleting = b.host.deletion.is_some();
    let mut plan = b.failed(written.clone(), op, err.to_string(), delay);
    if deleting {
        plan.requeue = plan.requeue.map(|r| r.min(BLOCKED_POLL));
    }
    plan
}

/// Power hold bookkeeping while an attach is pending. Returns a note for the
/// status when the hold was released for a reason worth telling.
fn hold_step(b: &mut Builder, record: &mut AttachedRecord, node: Option<&Node>) -> Option<String> {
    let now = b.input.now;
    let power = node.and_then(powered);
    if b.host.hold {
        let since = *record.hold_since.get_or_insert(now);
        let expired = elapsed(since, now) >= b.input.config.hold_timeout;
        if !b.host.disable_power_off && power != Some(true) && !expired {
            return None;
        }
        b.set_hold(false);
        record.hold_since = None;
        if b.host.disable_power_off {
            return None;
        }
        if power == Some(true) {
            // The operator powered the host on between our observation and
            // the annotation (or someone else did): never keep a running host
            // held; attach without the hold.
            return Some("the host was powered on; attaching while it runs".into());
        }
        record.hold_expired = true;
        let why = record
            .message
            .as_deref()
            .unwrap_or("the attach is not confirmed");
        let note = format!(
            "released the power hold after {} without a confirmed attach ({why}); the operator may power the host on without the image",
            human(b.input.config.hold_timeout)
        );
        b.event(Reason::HoldReleased, note.clone());
        return Some(note);
    }
    // `--hold-timeout 0` turns the hold off.
    let wanted = b.host.online
        && !b.host.disable_power_off
        && power == Some(false)
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

/// Attaches `url` (the image the host asks for): first the reads it needs.
fn attach_flow(mut b: Builder, url: &str) -> Step {
    let node_id = b.host.node_id;
    let mut record = match b.host.record.clone() {
        Some(r) if r.url == url && r.node == node_id => r,
        _ => AttachedRecord::new(url, node_id, Phase::Pending, b.input.now),
    };
    // A held or serviced host reads the node first (power, state).
    let settled = !b.host.hold && !b.host.servicing;
    let verify = b.input.config.verify_interval;
    let fresh = b.input.verified_ago.filter(|ago| *ago < verify);
    if let (IronicView::NotObserved, Some(ago)) = (b.input.ironic, fresh)
        && record.phase == Phase::Attached
        && settled
    {
        // In sync and checked recently: no Ironic (BMC) read for every
        // unrelated change of the BareMetalHost.
        return b.show_attached(&record, verify - ago);
    }
    // Confirming or verifying needs the drive alone when it shows our image.
    // An attach confirmed that way must have gone into an empty drive (a
    // drive that held `cdrom-<node>.iso` before could still show the old
    // image).
    let drive_first = settled
        && (record.phase == Phase::Attached
            || (record.phase == Phase::Attaching && record.into_empty));
    let (node, vmedia) = match b.input.ironic {
        IronicView::NotObserved if drive_first => return Step::ObserveIronic(Read::Drive),
        IronicView::NotObserved => return Step::ObserveIronic(Read::NodeAndDrive),
        IronicView::Drive { vmedia }
            if drive_first && cd_contents(vmedia, node_id) == CdContents::Ours =>
        {
            return if record.phase == Phase::Attaching {
                let running = b.host.powered_on;
                confirmed(b, record, running)
            } else {
                still_attached(b, record)
            };
        }
        IronicView::Drive { .. } => return Step::ObserveIronic(Read::Node),
        IronicView::Failed(err) => {
            let note = hold_step(&mut b, &mut record, None);
            return b.read_failed(record, "cannot read the Ironic node", err, note);
        }
        IronicView::Busy { node } => {
            let (state, message, wait) = match record.phase {
                Phase::Attached => (State::Attached, attached_message(&record), BUSY_POLL),
                Phase::Attaching => {
                    let message = "Ironic is inserting the image (the node is locked, so its drive cannot be read yet)";
                    (State::Attaching, message.into(), CONFIRM_POLL)
                }
                _ => {
                    let message = "Ironic node is busy (locked by a running operation); attaching when it is free";
                    (State::Waiting, message.into(), BUSY_POLL)
                }
            };
            let note = hold_step(&mut b, &mut record, Some(node));
            if b.host.record.is_some() {
                b.write_record(Some(record));
            }
            return b.show(state, join_note(message, note), Some(wait));
        }
        IronicView::Unreachable { since, error } => {
            if record.phase == Phase::Attached {
                // Nothing says the image left: it stays shown as attached,
                // and is verified again when Ironic answers.
                return b.show_attached(&record, OUTAGE_POLL);
            }
            let then = if record.phase == Phase::Attaching {
                "confirming the attach"
            } else {
                "attaching"
            };
            let note = hold_step(&mut b, &mut record, None);
            let message = unreachable_message(*since, error, then);
            return wait_to_attach(b, record, note, (State::Waiting, message, OUTAGE_POLL));
        }
        IronicView::Observed { node, vmedia } => (node, vmedia),
    };
    attach_observed(b, record, node, vmedia)
}

/// Attach once the node's drive was read: verify an attached image,
/// confirm an attach in flight, or attach when every gate is open.
fn attach_observed(
    mut b: Builder,
    mut record: AttachedRecord,
    node: &Node,
    vmedia: &[VirtualMedia],
) -> Step {
    let drive = cd_contents(vmedia, &node.uuid);
    if record.phase == Phase::Attached {
        if node.provision_state != ProvisionState::Active && node.reservation.is_none() {
            // Servicing (or rescue) runs Ironic's prepare_ramdisk, which
            // ejects the CD: look again once the node is active.
            let message = format!(
                "{}; Ironic node is {}: the drive is checked again (and the image attached again if it was ejected) once the node is active",
                attached_message(&record),
                node.provision_state
            );
            return b.show(State::Attached, message, Some(BLOCKED_POLL));
        }
        match &drive {
            CdContents::Ours => return still_attached(b, record),
            _ if node.reservation.is_some() => return b.show_attached(&record, BUSY_POLL),
            CdContents::Other(image) => {
                let message = format!(
                    "the CD drive holds media that is not ours ({}); the image is attached again once it is gone",
                    redact_url(image)
                );
                return b.show(State::Waiting, message, Some(BLOCKED_POLL));
            }
            CdContents::Empty => {
                // Ejected behind our back (BMC reset, manual eject): attach again.
                let url = redact_url(&record.url);
                b.event(
                    Reason::Ejected,
                    format!("{url} is no longer inserted; attaching it again"),
                );
                record.enter(Phase::Pending, b.input.now);
                record.requested_at = Some(b.input.now);
            }
        }
    }
    if record.phase == Phase::Attaching {
        attaching(b, record, node, &drive)
    } else {
        attach_pending(b, record, node, &drive)
    }
}

/// A verification found our image in the drive.
fn still_attached(mut b: Builder, mut record: AttachedRecord) -> Step {
    b.set_hold(false);
    if record.hold_since.take().is_some() {
        b.write_record(Some(record.clone()));
    }
    b.show_verified(&record)
}

/// An attach was sent: confirm it, or judge it failed.
fn attaching(mut b: Builder, mut record: AttachedRecord, node: &Node, drive: &CdContents) -> Step {
    let note = hold_step(&mut b, &mut record, Some(node));
    if node.reservation.is_none() {
        if let Some(error) = vmedia_error(node, Op::Attach) {
            return Step::Plan(b.failed(record, Op::Attach, error, None));
        }
        if *drive == CdContents::Ours {
            let running = powered(node) == Some(true);
            return confirmed(b, record, running);
        }
        if confirm_elapsed(&record, b.input) >= b.input.config.confirm_timeout {
            let message = format!(
                "Ironic accepted the attach but the image was not inserted after {}",
                human(b.input.config.confirm_timeout)
            );
            return Step::Plan(b.failed(record, Op::Attach, message, None));
        }
    }
    b.write_record(Some(record));
    let message = join_note("Ironic is downloading and inserting the image".into(), note);
    b.show(State::Attaching, message, Some(CONFIRM_POLL))
}

/// Pending or Failed: attach when every gate is open.
fn attach_pending(
    mut b: Builder,
    mut record: AttachedRecord,
    node: &Node,
    drive: &CdContents,
) -> Step {
    let note = hold_step(&mut b, &mut record, Some(node));
    if let Some(waiting) = attach_gate(&mut b, &record, node, drive) {
        return wait_to_attach(b, record, note, waiting);
    }
    let staged = b.input.staging.ready();
    record.digest = staged.map(|image| image.digest.clone());
    record.size = staged.map(|image| image.size);
    let image_url = staged.map_or_else(|| record.url.clone(), |image| image.ironic_url.clone());
    let event = format!("attaching {}", redact_url(&record.url));
    // The finalizer and the record go first: a crash after the POST then
    // finds "attaching" and confirms instead of attaching twice.
    if !b.host.has_finalizer {
        b.push(Action::AddFinalizer);
    }
    record.enter(Phase::Attaching, b.input.now);
    record.retry_at = None;
    record.into_empty = *drive == CdContents::Empty;
    b.write_record(Some(record));
    b.push(Action::Attach { image_url });
    b.event(Reason::Attaching, event);
    let message = join_note("attach sent to Ironic".into(), note);
    b.show(State::Attaching, message, Some(CONFIRM_POLL))
}

/// What keeps a pending attach from being sent, if anything. Starts staging
/// once nothing else does.
fn attach_gate(
    b: &mut Builder,
    record: &AttachedRecord,
    node: &Node,
    drive: &CdContents,
) -> Option<Waiting> {
    let now = b.input.now;
    if let Some(at) = pending_retry(record, now) {
        let message = record.message.as_deref().unwrap_or_default();
        let message = retry_message(Op::Attach, message, at);
        return Some((State::Error, message, wait_until(at, now)));
    }
    let (message, wait) = if node.maintenance {
        let message = "Ironic node is in maintenance; waiting for it to leave maintenance";
        (message.into(), BLOCKED_POLL)
    } else if node.reservation.is_some() {
        let message = "Ironic node is busy (reserved by a running operation)";
        (message.into(), BUSY_POLL)
    } else if node.provision_state != ProvisionState::Active {
        let state = &node.provision_state;
        let message = format!("Ironic node is {state} (waiting for active)");
        (message, BLOCKED_POLL)
    } else if let CdContents::Other(image) = drive {
        let message = format!(
            "the CD drive holds media that is not ours ({}: deploy media or a live ISO); waiting for it to leave",
            redact_url(image)
        );
        (message, BLOCKED_POLL)
    } else {
        match b.input.staging {
            StagingView::NotNeeded | StagingView::Needed(Staging::Ready(_)) => return None,
            StagingView::Needed(Staging::Idle) => {
                // Only now that an attach could follow: no download for a
                // host that is gated anyway.
                b.push(Action::Stage);
                let message = "staging the image: starting the download";
                (message.into(), STAGING_POLL)
            }
            StagingView::Needed(Staging::Running { done, total }) => {
                let done = bytes(*done);
                let message = match total {
                    Some(total) => format!("staging the image: {done} of {}", bytes(*total)),
                    None => format!("staging the image: {done} so far"),
                };
                (message, STAGING_POLL)
            }
            StagingView::Needed(Staging::Failed(message)) => {
                let message = format!("staging the image failed: {message}");
                return Some((State::Error, message, BACKOFF_BASE));
            }
            StagingView::Unavailable(message) => (message.clone(), BLOCKED_POLL),
        }
    };
    Some((State::Waiting, message, wait))
}

/// An attach that waits: the pending record is written when there is one or
/// it keeps the hold's bookkeeping, and `waiting` is shown.
fn wait_to_attach(
    mut b: Builder,
    record: AttachedRecord,
    note: Option<String>,
    (state, message, wait): Waiting,
) -> Step {
    if b.host.record.is_some() || record.hold_since.is_some() || record.hold_expired {
        b.write_record(Some(record));
    }
    b.show(state, join_note(message, note), Some(wait))
}

/// Our image is in the drive: the attach is confirmed.
fn confirmed(mut b: Builder, mut record: AttachedRecord, running: bool) -> Step {
    let now = b.input.now;
    b.plan.attached_after = record.requested_at.map(|t| elapsed(t, now).as_secs_f64());
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
    let url = redact_url(&record.url);
    b.event(Reason::Attached, format!("attached {url}"));
    b.show_verified(&record)
}

/// The host is being deleted: detach before our finalizer goes, or give up
/// after `--finalizer-timeout`.
fn deletion(mut b: Builder, deleted: Timestamp) -> Step {
    let now = b.input.now;
    // The status shows the image in the drive.
    b.url = b.host.record.as_ref().map(|r| r.url.clone());
    if !b.host.has_finalizer {
        return Step::Plan(b.finish(StatusChange::Keep, None));
    }
    if b.host.paused {
        let message = "host is being deleted but paused: waiting for the pause to be lifted";
        return b.show(State::Detaching, message, None);
    }
    if b.host.detached {
        let message = "host is detached: finalizer released without calling Ironic";
        return release(b, false, message.into());
    }
    if b.input.upstream_conflict {
        let message = "an upstream DataImage owns the drive: finalizer released";
        return release(b, false, message.into());
    }
    let node_id = b.host.node_id;
    let record = match b.host.record.clone() {
        Some(r) if r.phase != Phase::Pending && !node_id.is_empty() && r.node == node_id => r,
        _ => {
            b.let_go();
            return Step::Plan(b.finish(StatusChange::Keep, None));
        }
    };
    let timeout = b.input.config.finalizer_timeout;
    let remaining = timeout.saturating_sub(elapsed(deleted, now));
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
    b.show(State::Detaching, waiting, Some(poll))
}

/// Deletion once the node's drive was read.
fn deletion_observed(
    mut b: Builder,
    record: AttachedRecord,
    node: &Node,
    vmedia: &[VirtualMedia],
    expired: bool,
) -> Step {
    let url = redact_url(&record.url).into_owned();
    let attach_running = record.phase == Phase::Attaching && node.reservation.is_some();
    if cd_contents(vmedia, &node.uuid) != CdContents::Ours && !attach_running {
        return release(b, false, format!("detached {url} before deletion"));
    }
    if expired {
        let message = format!(
            "detach not confirmed within {}: finalizer released; the image may still be inserted",
            human(b.input.config.finalizer_timeout)
        );
        return release(b, true, message);
    }
    let recently_sent = record.phase == Phase::Detaching
        && record.retry_at.is_none()
        && confirm_elapsed(&record, b.input) < b.input.config.confirm_timeout;
    let message = if node.reservation.is_some() {
        "Ironic node is busy; detaching before deletion when it is free"
    } else if recently_sent || pending_retry(&record, b.input.now).is_some() {
        "waiting for Ironic to eject the image"
    } else {
        b.send_detach(record, format!("detaching {url} before deletion"));
        "detaching the image before deletion"
    };
    b.show(State::Detaching, message, Some(CONFIRM_POLL))
}

/// Lets the deleted host go. `warning`: without a confirmed detach.
fn release(mut b: Builder, warning: bool, message: String) -> Step {
    let (state, reason) = if warning {
        (State::Error, Reason::FinalizerReleased)
    } else {
        (State::Detached, Reason::Detached)
    };
    // Shown while other finalizers (the operator's) keep the host around.
    let status = match (&b.url, b.host.status) {
        (Some(_), Some(_)) => b.status(state, message.clone()),
        _ => StatusChange::Keep,
    };
    b.let_go();
    b.event(reason, message);
    Step::Plan(b.finish(status, None))
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
