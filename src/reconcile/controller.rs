//! The controller: observes a host (and its Ironic node when the decision
//! asks), calls [`decide`], and executes the plan with patches, Ironic calls
//! (bounded by a semaphore) and Events.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::controller::Action as RequeueAction;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};
use tokio::sync::Semaphore;

use super::decision::{
    self, Action, DecisionConfig, EventNote, Input, IronicView, Op, Plan, Read, StagingView,
    StatusChange, Step, decide,
};
use super::events::EventPublisher;
use super::health::IronicHealth;
use super::kube_ops::{self, HostWriter};
use super::metrics::{Metrics, Operation, error_reason};
use super::record::AttachedRecord;
use crate::ironic::{IronicClient, IronicError};
use crate::model::bmh::HostResource;
use crate::model::{DataImageState, SecretCredentials};
use crate::staging::{StageRequest, Stager, Staging};

/// What the Ironic side of the controller needs (a trait so the Kubernetes
/// side can be tested without Ironic).
pub trait IronicApi: Send + Sync + 'static {
    fn get_node(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<crate::ironic::Node, IronicError>> + Send;
    fn list_vmedia(
        &self,
        node: &str,
    ) -> impl Future<Output = Result<Vec<crate::ironic::VirtualMedia>, IronicError>> + Send;
    fn attach_cdrom(
        &self,
        node: &str,
        image_url: &str,
    ) -> impl Future<Output = Result<(), IronicError>> + Send;
    fn detach_cdrom(&self, node: &str) -> impl Future<Output = Result<(), IronicError>> + Send;
    /// Does Ironic answer at all (`GET /`)?
    fn ping(&self) -> impl Future<Output = Result<(), IronicError>> + Send;
}

impl IronicApi for IronicClient {
    async fn get_node(&self, node: &str) -> Result<crate::ironic::Node, IronicError> {
        IronicClient::get_node(self, node).await
    }
    async fn list_vmedia(
        &self,
        node: &str,
    ) -> Result<Vec<crate::ironic::VirtualMedia>, IronicError> {
        IronicClient::list_vmedia(self, node).await
    }
    async fn attach_cdrom(&self, node: &str, image_url: &str) -> Result<(), IronicError> {
        IronicClient::attach_cdrom(self, node, image_url).await
    }
    async fn detach_cdrom(&self, node: &str) -> Result<(), IronicError> {
        IronicClient::detach_cdrom(self, node).await
    }
    async fn ping(&self) -> Result<(), IronicError> {
        IronicClient::ping(self).await
    }
}

/// Shared state of the reconcile loop.
pub struct Context<I: IronicApi> {
    pub client: kube::Client,
    pub ironic: Arc<I>,
    /// Bounds concurrent Ironic calls (`--max-concurrent`).
    pub ironic_permits: Semaphore,
    pub events: EventPublisher,
    pub config: DecisionConfig,
    pub metrics: Arc<Metrics>,
    pub health: Arc<IronicHealth>,
    pub stager: Option<Stager>,
    /// Upstream DataImages (conflict detection); `None` when the kind is
    /// not installed.
    pub dataimages: Option<(Store<DynamicObject>, ApiResource)>,
    /// When each host's drive was last read from Ironic by this process.
    pub verified: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl<I: IronicApi> Context<I> {
    /// A context without staging or DataImage conflict detection (set those
    /// fields afterwards when wanted).
    pub fn new(
        client: kube::Client,
        ironic: I,
        config: DecisionConfig,
        max_concurrent: usize,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let health = Arc::new(IronicHealth::new(metrics.ironic_up.clone()));
        Self {
            events: EventPublisher::new(client.clone(), instance),
            client,
            ironic: Arc::new(ironic),
            ironic_permits: Semaphore::new(max_concurrent.max(1)),
            config,
            metrics,
            health,
            stager: None,
            dataimages: None,
            verified: Default::default(),
        }
    }

    /// After a failed Ironic call: counts it, and tells an outage (the
    /// view every host then gets) from a host-specific failure (`None`).
    async fn judge_failure(&self, call: &'static str, err: &IronicError) -> Option<IronicView> {
        self.metrics.request_failed(call, err);
        let ironic = self.ironic.clone();
        let metrics = self.metrics.clone();
        let ping = move || {
            let (ironic, metrics) = (ironic.clone(), metrics.clone());
            async move {
                let result = ironic.ping().await;
                if let Err(err) = &result {
                    metrics.request_failed("ping", err);
                }
                result
            }
        };
        let (since, error) = self.health.confirm_outage(err, ping).await?;
        Some(IronicView::Unreachable { since, error })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("host has no name or namespace")]
    Unnamed,
    #[error("kubernetes: {0}")]
    Kube(#[from] kube::Error),
}

/// Reconciles one host (the controller's reconcile function).
pub async fn reconcile<I: IronicApi>(
    host: Arc<HostResource>,
    ctx: Arc<Context<I>>,
) -> Result<RequeueAction, ReconcileError> {
    Ok(match reconcile_once(&host, &ctx).await? {
        Some(after) => RequeueAction::requeue(after),
        None => RequeueAction::await_change(),
    })
}

/// One reconcile of one host: when to look again (`None`: on a change).
pub async fn reconcile_once<I: IronicApi>(
    host: &HostResource,
    ctx: &Context<I>,
) -> Result<Option<Duration>, ReconcileError> {
    let result = reconcile_inner(host, ctx).await;
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconciles
        .get_or_create(&super::metrics::ResultLabels { result: label })
        .inc();
    result
}

/// Requeue policy for Kubernetes errors (Ironic errors are handled in the plan).
pub fn error_policy<I: IronicApi>(
    host: Arc<HostResource>,
    err: &ReconcileError,
    _ctx: Arc<Context<I>>,
) -> RequeueAction {
    let conflict =
        matches!(err, ReconcileError::Kube(kube::Error::Api(status)) if status.code == 409);
    tracing::warn!(host = %host.name_any(), error = %err, "reconcile failed");
    RequeueAction::requeue(if conflict {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(15)
    })
}

async fn reconcile_inner<I: IronicApi>(
    host: &HostResource,
    ctx: &Context<I>,
) -> Result<Option<Duration>, ReconcileError> {
    let namespace = host.namespace().ok_or(ReconcileError::Unnamed)?;
    let name = host.metadata.name.clone().ok_or(ReconcileError::Unnamed)?;
    let key = format!("{namespace}/{name}");
    if decision::is_idle(host) {
        forget(ctx, &key);
        return Ok(None);
    }
    let conflict = ctx.dataimages.as_ref().is_some_and(|(store, resource)| {
        let reference = ObjectRef::new_with(&name, resource.clone()).within(&namespace);
        store.get(&reference).is_some()
    });
    let staging = staging_view(ctx, host, &namespace, &key).await;
    let node_id = host
        .status
        .as_ref()
        .and_then(|s| s.provisioning.as_ref())
        .map(|p| p.id.clone())
        .unwrap_or_default();
    let jitter: f64 = rand::random();
    let verified_ago = ctx
        .verified
        .lock()
        .ok()
        .and_then(|map| map.get(&key).map(std::time::Instant::elapsed));
    let mut ironic = IronicView::NotObserved;
    // At most: the drive, then the node (see `Read`), then the plan.
    for _ in 0..3 {
        let input = Input {
            host,
            ironic: &ironic,
            staging: &staging,
            upstream_conflict: conflict,
            now: jiff::Timestamp::now(),
            jitter,
            config: &ctx.config,
            verified_ago,
            ironic_recovered_at: ctx.health.recovered_at(),
        };
        match decide(&input) {
            Step::ObserveIronic(read) => {
                ironic = observe(ctx, &node_id, read, ironic).await;
            }
            Step::Plan(plan) => {
                // Only an observation that showed our image lets the next
                // reconciles skip Ironic until --verify-interval.
                let observed = matches!(
                    ironic,
                    IronicView::Observed { .. }
                        | IronicView::Busy { .. }
                        | IronicView::Drive { .. }
                );
                if let Ok(mut map) = ctx.verified.lock() {
                    if plan.verified {
                        map.insert(key.clone(), std::time::Instant::now());
                    } else if observed {
                        map.remove(&key);
                    }
                }
                return execute(ctx, host, &input, &namespace, &name, &node_id, plan).await;
            }
        }
    }
    Ok(Some(Duration::from_secs(5)))
}

/// Makes the read `decide` asked for. `before` is the view of the previous
/// read in this reconcile: [`Read::Node`] completes a [`Read::Drive`].
async fn observe<I: IronicApi>(
    ctx: &Context<I>,
    node_id: &str,
    read: Read,
    before: IronicView,
) -> IronicView {
    if let Some((since, error)) = ctx.health.down() {
        return IronicView::Unreachable { since, error };
    }
    let Ok(permit) = ctx.ironic_permits.acquire().await else {
        return IronicView::Failed(IronicError::Unavailable("shutting down".into()));
    };
    let node = async || {
        ctx.ironic
            .get_node(node_id)
            .await
            .map_err(|e| ("get_node", e))
    };
    let result = match (read, before) {
        (Read::Drive, _) => match ctx.ironic.list_vmedia(node_id).await {
            Ok(vmedia) => Ok(IronicView::Drive { vmedia }),
            Err(err @ IronicError::Locked(_)) => {
                ctx.metrics.request_failed("list_vmedia", &err);
                node().await.map(|node| IronicView::Busy { node })
            }
            Err(err) => Err(("list_vmedia", err)),
        },
        (Read::Node, IronicView::Drive { vmedia }) => node()
            .await
            .map(|node| IronicView::Observed { node, vmedia }),
        _ => match node().await {
            Ok(node) => match ctx.ironic.list_vmedia(node_id).await {
                Ok(vmedia) => Ok(IronicView::Observed { node, vmedia }),
                Err(err @ IronicError::Locked(_)) => {
                    ctx.metrics.request_failed("list_vmedia", &err);
                    Ok(IronicView::Busy { node })
                }
                Err(err) => Err(("list_vmedia", err)),
            },
            Err(failed) => Err(failed),
        },
    };
    drop(permit);
    match result {
        Ok(view) => {
            ctx.health.mark_up();
            view
        }
        Err((call, err)) => {
            let outage = ctx.judge_failure(call, &err).await;
            outage.unwrap_or(IronicView::Failed(err))
        }
    }
}

fn needs_staging(host: &HostResource) -> bool {
    host.spec.data_image.as_ref().is_some_and(|d| {
        d.credentials_name.is_some() || d.disable_certificate_verification == Some(true)
    })
}

/// An image built from a Secret (contentFrom): read the Secret, build the
/// ISO (deterministic: the same content gives the same digest, so an
/// unchanged Secret changes nothing) and hand it to the image server.
/// A missing or unreadable Secret leaves the host waiting.
async fn built_view<I: IronicApi>(
    ctx: &Context<I>,
    spec: &crate::model::DataImageSpec,
    secret: &str,
    namespace: &str,
    key: &str,
) -> StagingView {
    let Some(stager) = &ctx.stager else {
        return StagingView::Unavailable(
            "the image is built from a Secret (contentFrom) and served by the reconciler's image server, \
             and this reconciler has none (--image-server-url): not attached"
                .into(),
        );
    };
    let files = match read_secret_files(ctx.client.clone(), namespace, secret).await {
        Ok(files) => files,
        Err(message) => return StagingView::Unavailable(message),
    };
    let iso = match crate::staging::config_iso::build(&files, spec.effective_volume_label()) {
        Ok(iso) => iso,
        Err(err) => {
            return StagingView::Failed(format!(
                "cannot build the ISO from Secret {namespace}/{secret}: {err}"
            ));
        }
    };
    match stager.put(key, &iso) {
        Ok(image) => StagingView::Ready(image),
        Err(err) => StagingView::Failed(err.to_string()),
    }
}

/// A Secret's keys and values ([`crate::model::secret::secret_entries`]).
/// Values never leave this function but as bytes.
async fn read_secret_files(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let secret = get_secret(client, namespace, name, "contentFrom").await?.ok_or_else(|| {
        format!("Secret {namespace}/{name} (contentFrom) not found: the image is built once it exists")
    })?;
    let entries = crate::model::secret::secret_entries(&secret);
    Ok(entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_vec()))
        .collect())
}

/// A targeted get of one Secret (the reconciler has no list/watch on
/// Secrets, so it is re-read on every reconcile).
async fn get_secret(
    client: kube::Client,
    namespace: &str,
    name: &str,
    field: &str,
) -> Result<Option<Secret>, String> {
    Api::<Secret>::namespaced(client, namespace)
        .get_opt(name)
        .await
        .map_err(|err| {
            format!(
                "cannot read Secret {namespace}/{name} ({field}): {}",
                kube_reason(&err)
            )
        })
}

/// What the stager knows of the host's image, without waiting for anything.
/// Whether staging may start is the decision's call ([`Action::Stage`]).
async fn staging_view<I: IronicApi>(
    ctx: &Context<I>,
    host: &HostResource,
    namespace: &str,
    key: &str,
) -> StagingView {
    if let Some(spec) = host.spec.data_image.as_ref().filter(|d| d.url.is_empty())
        && let Some(content) = &spec.content_from
    {
        return built_view(ctx, spec, &content.secret_name, namespace, key).await;
    }
    let Some(spec) = host
        .spec
        .data_image
        .as_ref()
        .filter(|_| needs_staging(host))
    else {
        if let Some(stager) = &ctx.stager {
            stager.release(key);
        }
        return StagingView::NotNeeded;
    };
    let Some(stager) = &ctx.stager else {
        return StagingView::Unavailable(
            "the image needs credentials or disableCertificateVerification, so it must be staged, and this \
             reconciler has no image server (--image-server-url): not attached"
                .into(),
        );
    };
    let insecure = spec.disable_certificate_verification == Some(true);
    match stager.poll(key, &spec.url, insecure) {
        Staging::Ready(image) => StagingView::Ready(image),
        Staging::Running { done, total } => StagingView::Running { done, total },
        Staging::Failed(message) => StagingView::Failed(message),
        Staging::Idle => StagingView::NotStarted,
    }
}

/// [`Action::Stage`]: reads the credentials and starts the background
/// download; a failure shows through [`Stager::poll`].
async fn start_staging<I: IronicApi>(
    ctx: &Context<I>,
    host: &HostResource,
    namespace: &str,
    key: &str,
) {
    let (Some(stager), Some(spec)) = (&ctx.stager, host.spec.data_image.as_ref()) else {
        return;
    };
    let insecure = spec.disable_certificate_verification == Some(true);
    let credentials = match &spec.credentials_name {
        None => None,
        Some(secret) => match read_credentials(ctx.client.clone(), namespace, secret).await {
            Ok(credentials) => Some(credentials),
            Err(message) => {
                stager.fail(key, &spec.url, insecure, message);
                return;
            }
        },
    };
    stager.start(StageRequest {
        host_key: key.to_string(),
        url: spec.url.clone(),
        credentials,
        insecure,
    });
}

/// `username`/`password` from the `credentialsName` Secret.
async fn read_credentials(
    client: kube::Client,
    namespace: &str,
    name: &str,
) -> Result<SecretCredentials, String> {
    let secret = get_secret(client, namespace, name, "credentialsName")
        .await?
        .ok_or_else(|| format!("Secret {namespace}/{name} (credentialsName) not found"))?;
    SecretCredentials::from_secret(&secret)
        .map_err(|why| format!("Secret {namespace}/{name} (credentialsName): {why}"))
}

fn kube_reason(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("HTTP {} {}", status.code, status.reason),
        other => other.to_string(),
    }
}

/// Runs the plan's actions in order, then writes the status.
async fn execute<I: IronicApi>(
    ctx: &Context<I>,
    host: &HostResource,
    input: &Input<'_>,
    namespace: &str,
    name: &str,
    node_id: &str,
    plan: Plan,
) -> Result<Option<Duration>, ReconcileError> {
    let key = format!("{namespace}/{name}");
    let run = Run {
        ctx,
        host,
        writer: HostWriter::new(ctx.client.clone(), namespace, name),
        namespace,
        node_id,
        key: &key,
    };
    match run.plan(input, plan).await {
        Err(ReconcileError::Kube(kube::Error::Api(status))) if status.code == 404 => {
            // The host is gone (its last finalizer was ours, or it was
            // deleted meanwhile): nothing to write, nothing failed.
            forget(ctx, &key);
            Ok(None)
        }
        other => other,
    }
}

/// Drops what this process keeps about a host it has nothing to do for
/// (idle, or gone).
fn forget<I: IronicApi>(ctx: &Context<I>, key: &str) {
    ctx.metrics.set_host_state(key, None);
    if let Ok(mut map) = ctx.verified.lock() {
        map.remove(key);
    }
    if let Some(stager) = &ctx.stager {
        stager.release(key);
    }
}

/// The host as the actions so far left it (what the next patch needs).
struct Written {
    finalizers: Vec<String>,
    resource_version: Option<String>,
    record: Option<AttachedRecord>,
}

/// Why the actions stopped before the end of the plan.
enum Stopped {
    /// An attach or detach failed: `written` is the record written before it.
    Failed {
        op: Op,
        err: IronicError,
        written: Box<AttachedRecord>,
    },
    /// Look again after this long (shutting down, or no record before the call).
    Requeue(Duration),
}

/// One plan's execution for one host.
struct Run<'a, I: IronicApi> {
    ctx: &'a Context<I>,
    host: &'a HostResource,
    writer: HostWriter,
    namespace: &'a str,
    node_id: &'a str,
    key: &'a str,
}

impl<I: IronicApi> Run<'_, I> {
    /// The actions, then (when an Ironic call failed) the failure plan in
    /// their place, then the status and metrics.
    async fn plan(
        &self,
        input: &Input<'_>,
        plan: Plan,
    ) -> Result<Option<Duration>, ReconcileError> {
        let metadata = &self.host.metadata;
        let mut written = Written {
            finalizers: metadata.finalizers.clone().unwrap_or_default(),
            resource_version: metadata.resource_version.clone(),
            record: AttachedRecord::of_host(self.host),
        };
        let (plan, refused) = match self.actions(&plan.actions, &mut written).await? {
            None => (plan, false),
            Some(Stopped::Requeue(after)) => return Ok(Some(after)),
            Some(Stopped::Failed {
                op,
                err,
                written: before,
            }) => {
                let view = self.judge(op, &err).await;
                let input = Input {
                    ironic: &view,
                    ..input.clone()
                };
                let failure = decision::after_failure(&input, &before, op, &err);
                // A failure plan makes no Ironic call: nothing stops it.
                self.actions(&failure.actions, &mut written).await?;
                (failure, true)
            }
        };
        self.finish(&plan, &written, refused).await
    }

    /// After a refused attach/detach: counted, and an outage told from a
    /// failure of this host.
    async fn judge(&self, op: Op, err: &IronicError) -> IronicView {
        let (operation, call) = operation(op);
        let outage = self.ctx.judge_failure(call, err).await;
        if outage.is_none() {
            self.ctx.metrics.failure(operation, error_reason(err));
            tracing::warn!(host = %self.key, node = %self.node_id, error = %err, "ironic {call} failed");
        }
        outage.unwrap_or(IronicView::Failed(err.clone()))
    }

    async fn actions(
        &self,
        actions: &[Action],
        written: &mut Written,
    ) -> Result<Option<Stopped>, ReconcileError> {
        let ctx = self.ctx;
        for action in actions {
            let version = written.resource_version.as_deref();
            let updated = match action {
                Action::AddFinalizer => kube_ops::finalizer_add_patch(&written.finalizers, version),
                Action::RemoveFinalizer => {
                    kube_ops::finalizer_remove_patch(&written.finalizers, version)
                }
                Action::SetHold(on) => Some(kube_ops::hold_patch(*on)),
                Action::WriteRecord(new) => {
                    let text = new.as_ref().map(AttachedRecord::to_annotation);
                    written.record.clone_from(new);
                    Some(kube_ops::record_patch(text.as_deref()))
                }
                Action::Attach { .. } | Action::Detach => {
                    let op = match action {
                        Action::Attach { .. } => Op::Attach,
                        _ => Op::Detach,
                    };
                    ctx.metrics
                        .attempts
                        .get_or_create(&super::metrics::OperationLabels {
                            operation: operation(op).0,
                        })
                        .inc();
                    let Ok(_permit) = ctx.ironic_permits.acquire().await else {
                        return Ok(Some(Stopped::Requeue(Duration::from_secs(5))));
                    };
                    let result = match action {
                        Action::Attach { image_url } => {
                            ctx.ironic.attach_cdrom(self.node_id, image_url).await
                        }
                        _ => ctx.ironic.detach_cdrom(self.node_id).await,
                    };
                    match (result, written.record.clone()) {
                        (Ok(()), _) => ctx.health.mark_up(),
                        (Err(err), Some(before)) => {
                            return Ok(Some(Stopped::Failed {
                                op,
                                err,
                                written: Box::new(before),
                            }));
                        }
                        (Err(_), None) => {
                            return Ok(Some(Stopped::Requeue(decision::BACKOFF_BASE)));
                        }
                    }
                    None
                }
                Action::Stage => {
                    start_staging(ctx, self.host, self.namespace, self.key).await;
                    None
                }
                Action::Event(note) => {
                    publish(ctx, &self.host.object_ref(&()), note, self.key).await;
                    None
                }
            };
            if let Some(patch) = updated {
                let updated = self.writer.merge(&patch).await?;
                if matches!(action, Action::AddFinalizer | Action::RemoveFinalizer) {
                    written.finalizers = updated.metadata.finalizers.clone().unwrap_or_default();
                }
                written.resource_version = updated.metadata.resource_version.clone();
            }
        }
        Ok(None)
    }

    /// The status write and the metrics, once the actions ran.
    async fn finish(
        &self,
        plan: &Plan,
        written: &Written,
        refused: bool,
    ) -> Result<Option<Duration>, ReconcileError> {
        let (ctx, host, key) = (self.ctx, self.host, self.key);
        if let Some(op) = plan.failure
            && !refused
        {
            // Failures seen by observation (last_error, no effect); refused
            // calls were counted with their error kind.
            ctx.metrics.failure(operation(op).0, "async");
        }
        let finished = host.metadata.deletion_timestamp.is_some()
            && !written
                .finalizers
                .iter()
                .any(|f| f == super::record::FINALIZER);
        if finished && written.finalizers.is_empty() {
            // Ours was the last finalizer: the API server has deleted the
            // host, and a status write could only answer 404.
            forget(ctx, key);
            return Ok(None);
        }
        let shown = host.status.as_ref().and_then(|s| s.data_image.as_ref());
        let state = match &plan.status {
            StatusChange::Set(status) => {
                if shown != Some(status) {
                    self.writer.apply_status(self.namespace, status).await?;
                }
                status.state
            }
            StatusChange::Clear => {
                self.writer.clear_status().await?;
                None
            }
            StatusChange::Keep => shown.and_then(|s| s.state),
        };
        if finished {
            // Other finalizers keep the host a while; it is no longer ours.
            forget(ctx, key);
            return Ok(None);
        }
        ctx.metrics.set_host_state(key, state);
        if written.record.is_none()
            && host.spec.data_image.is_none()
            && let Some(stager) = &ctx.stager
        {
            stager.release(key);
        }
        if let Some(seconds) = plan.attached_after {
            ctx.metrics.attach_seconds.observe(seconds);
        }
        if state == Some(DataImageState::Error) {
            tracing::info!(host = %key, "data image in error state; see status.dataImage.message");
        }
        Ok(plan.requeue)
    }
}

/// The metric label and the call name of an operation.
fn operation(op: Op) -> (Operation, &'static str) {
    match op {
        Op::Attach => (Operation::Attach, "attach"),
        Op::Detach => (Operation::Detach, "detach"),
    }
}

async fn publish<I: IronicApi>(
    ctx: &Context<I>,
    reference: &k8s_openapi::api::core::v1::ObjectReference,
    note: &EventNote,
    key: &str,
) {
    let reason = note.reason.as_str();
    if note.reason.is_warning() {
        tracing::warn!(host = %key, reason, message = %note.message, "event");
    } else {
        tracing::info!(host = %key, reason, message = %note.message, "event");
    }
    if let Err(err) = ctx.events.publish(note, reference).await {
        tracing::warn!(host = %key, error = %kube_reason(&err), "could not publish event");
    }
}
