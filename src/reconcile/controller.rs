//! The controller: observes a host (and its Ironic node when the decision
//! asks), calls [`decide`], and executes the plan with patches, Ironic calls
//! (bounded by a semaphore) and Events.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::OptionFuture;
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
use super::metrics::{Metrics, OperationLabels, ResultLabels, error_reason};
use super::record::{AttachedRecord, FINALIZER, HOLD_ANNOTATION, HOLD_VALUE, STATE_ANNOTATION};
pub use crate::ironic::IronicApi;
use crate::ironic::IronicError;
use crate::model::bmh::HostResource;
use crate::model::{DataImageSpec, DataImageState, SecretCredentials};
use crate::staging::{StageRequest, Stager, Staging};

/// Shared state of the reconcile loop.
pub struct Context<I: IronicApi> {
    pub client: kube::Client,
    pub ironic: Arc<I>,
    /// Bounds concurrent Ironic calls (`--max-concurrent`). Never closed:
    /// acquiring a permit cannot fail.
    ironic_permits: Semaphore,
    pub events: EventPublisher,
    pub config: DecisionConfig,
    pub metrics: Arc<Metrics>,
    pub health: Arc<IronicHealth>,
    pub stager: Option<Stager>,
    /// Upstream DataImages (conflict detection); `None` when the kind is
    /// not installed.
    pub dataimages: Option<(Store<DynamicObject>, ApiResource)>,
    /// When each host's drive was last read from Ironic by this process.
    pub verified: Mutex<HashMap<String, Instant>>,
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
        let (ironic, metrics) = (self.ironic.clone(), self.metrics.clone());
        let ping = move || {
            let (ironic, metrics) = (ironic.clone(), metrics.clone());
            async move {
                let result = ironic.ping().await;
                result.inspect_err(|err| metrics.request_failed("ping", err))
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
    let after = reconcile_once(&host, &ctx).await?;
    Ok(after.map_or_else(RequeueAction::await_change, RequeueAction::requeue))
}

/// One reconcile of one host: when to look again (`None`: on a change).
pub async fn reconcile_once<I: IronicApi>(
    host: &HostResource,
    ctx: &Context<I>,
) -> Result<Option<Duration>, ReconcileError> {
    let result = reconcile_inner(host, ctx).await;
    let labels = ResultLabels {
        result: if result.is_ok() { "ok" } else { "error" },
    };
    ctx.metrics.reconciles.get_or_create(&labels).inc();
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
    let after = if conflict { 1 } else { 15 };
    RequeueAction::requeue(Duration::from_secs(after))
}

async fn reconcile_inner<I: IronicApi>(
    host: &HostResource,
    ctx: &Context<I>,
) -> Result<Option<Duration>, ReconcileError> {
    let (Some(namespace), Some(name)) = (host.namespace(), host.metadata.name.as_deref()) else {
        return Err(ReconcileError::Unnamed);
    };
    let run = Run {
        ctx,
        host,
        writer: HostWriter::new(ctx.client.clone(), &namespace, name),
        key: format!("{namespace}/{name}"),
        node_id: host
            .status
            .as_ref()
            .and_then(|s| s.provisioning.as_ref())
            .map(|p| p.id.clone())
            .unwrap_or_default(),
    };
    if decision::is_idle(host) {
        run.forget();
        return Ok(None);
    }
    match run.decide_and_execute().await {
        Err(ReconcileError::Kube(kube::Error::Api(status))) if status.code == 404 => {
            // The host is gone (its last finalizer was ours, or it was
            // deleted meanwhile): nothing to write, nothing failed.
            run.forget();
            Ok(None)
        }
        other => other,
    }
}

fn kube_reason(err: &kube::Error) -> String {
    match err {
        kube::Error::Api(status) => format!("HTTP {} {}", status.code, status.reason),
        other => other.to_string(),
    }
}

/// The host as the actions so far left it (what the next patch needs).
struct Written {
    finalizers: Vec<String>,
    resource_version: Option<String>,
    record: Option<AttachedRecord>,
}

/// One reconcile of one host.
struct Run<'a, I: IronicApi> {
    ctx: &'a Context<I>,
    host: &'a HostResource,
    writer: HostWriter,
    /// `namespace/name`: what this process keeps about the host is keyed by it.
    key: String,
    /// The Ironic node (`status.provisioning.ID`).
    node_id: String,
}

impl<I: IronicApi> Run<'_, I> {
    /// Observes what `decide` asks for, then executes its plan.
    async fn decide_and_execute(&self) -> Result<Option<Duration>, ReconcileError> {
        let ctx = self.ctx;
        let conflict = ctx.dataimages.as_ref().is_some_and(|(store, resource)| {
            let reference = ObjectRef::new_with(&self.writer.name, resource.clone())
                .within(&self.writer.namespace);
            store.get(&reference).is_some()
        });
        let staging = self.staging_view().await;
        let jitter: f64 = rand::random();
        let verified_ago = ctx
            .verified
            .lock()
            .ok()
            .and_then(|map| map.get(&self.key).map(Instant::elapsed));
        let mut ironic = IronicView::NotObserved;
        // At most: the drive, then the node (see `Read`), then the plan.
        for _ in 0..3 {
            let input = Input {
                host: self.host,
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
                Step::ObserveIronic(read) => ironic = self.observe(read, ironic).await,
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
                            map.insert(self.key.clone(), Instant::now());
                        } else if observed {
                            map.remove(&self.key);
                        }
                    }
                    return self.execute(&input, plan).await;
                }
            }
        }
        Ok(Some(Duration::from_secs(5)))
    }

    /// Makes the read `decide` asked for. `before` is the view of the previous
    /// read in this reconcile: [`Read::Node`] completes a [`Read::Drive`].
    async fn observe(&self, read: Read, before: IronicView) -> IronicView {
        let ctx = self.ctx;
        if let Some((since, error)) = ctx.health.down() {
            return IronicView::Unreachable { since, error };
        }
        let permit = ctx.ironic_permits.acquire().await.ok();
        let result = self.read_ironic(read, before).await;
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

    /// The Ironic requests of [`Self::observe`]; a drive that answers 409
    /// (locked) gives [`IronicView::Busy`] with the node.
    async fn read_ironic(
        &self,
        read: Read,
        before: IronicView,
    ) -> Result<IronicView, (&'static str, IronicError)> {
        let (ironic, node_id) = (&self.ctx.ironic, self.node_id.as_str());
        let get_node = async || ironic.get_node(node_id).await.map_err(|e| ("get_node", e));
        let node = match (read, before) {
            (Read::Node, IronicView::Drive { vmedia }) => {
                let node = get_node().await?;
                return Ok(IronicView::Observed { node, vmedia });
            }
            (Read::Drive, _) => None,
            _ => Some(get_node().await?),
        };
        match (ironic.list_vmedia(node_id).await, node) {
            (Ok(vmedia), Some(node)) => Ok(IronicView::Observed { node, vmedia }),
            (Ok(vmedia), None) => Ok(IronicView::Drive { vmedia }),
            (Err(err @ IronicError::Locked(_)), node) => {
                self.ctx.metrics.request_failed("list_vmedia", &err);
                let node = match node {
                    Some(node) => node,
                    None => get_node().await?,
                };
                Ok(IronicView::Busy { node })
            }
            (Err(err), _) => Err(("list_vmedia", err)),
        }
    }

    /// What the stager knows of the host's image, without waiting for anything.
    /// Whether staging may start is the decision's call ([`Action::Stage`]).
    async fn staging_view(&self) -> StagingView {
        let (stager, key) = (self.ctx.stager.as_ref(), self.key.as_str());
        let spec = self.host.spec.data_image.as_ref();
        if let Some(spec) = spec.filter(|d| d.url.is_empty())
            && let Some(content) = &spec.content_from
        {
            return self.built_view(spec, &content.secret_name).await;
        }
        let insecure = spec.is_some_and(|d| d.disable_certificate_verification == Some(true));
        // Credentials or skipped TLS verification: the image must be staged.
        let Some(spec) = spec.filter(|d| d.credentials_name.is_some() || insecure) else {
            if let Some(stager) = stager {
                stager.release(key);
            }
            return StagingView::NotNeeded;
        };
        let Some(stager) = stager else {
            return StagingView::Unavailable(
                "the image needs credentials or disableCertificateVerification, so it must be staged, and this \
                 reconciler has no image server (--image-server-url): not attached"
                    .into(),
            );
        };
        StagingView::Needed(stager.poll(key, &spec.url, insecure))
    }

    /// An image built from a Secret (contentFrom): read the Secret, build the
    /// ISO (deterministic: the same content gives the same digest, so an
    /// unchanged Secret changes nothing) and hand it to the image server.
    /// A missing or unreadable Secret leaves the host waiting; the Secret's
    /// values never leave this function but as the ISO's bytes.
    async fn built_view(&self, spec: &DataImageSpec, secret: &str) -> StagingView {
        let Some(stager) = &self.ctx.stager else {
            return StagingView::Unavailable(
                "the image is built from a Secret (contentFrom) and served by the reconciler's image server, \
                 and this reconciler has none (--image-server-url): not attached"
                    .into(),
            );
        };
        let namespace = &self.writer.namespace;
        let files: BTreeMap<String, Vec<u8>> = match self.secret(secret, "contentFrom").await {
            Ok(Some(found)) => crate::model::secret::secret_entries(&found)
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_vec()))
                .collect(),
            Ok(None) => {
                return StagingView::Unavailable(format!(
                    "Secret {namespace}/{secret} (contentFrom) not found: the image is built once it exists"
                ));
            }
            Err(message) => return StagingView::Unavailable(message),
        };
        let iso = match crate::staging::config_iso::build(&files, spec.effective_volume_label()) {
            Ok(iso) => iso,
            Err(err) => {
                return StagingView::Needed(Staging::Failed(format!(
                    "cannot build the ISO from Secret {namespace}/{secret}: {err}"
                )));
            }
        };
        StagingView::Needed(match stager.put(&self.key, &iso) {
            Ok(image) => Staging::Ready(image),
            Err(err) => Staging::Failed(err.to_string()),
        })
    }

    /// A targeted get of the Secret the host's `field` names (the reconciler
    /// has no list/watch on Secrets, so it is re-read on every reconcile).
    async fn secret(&self, name: &str, field: &str) -> Result<Option<Secret>, String> {
        let namespace = &self.writer.namespace;
        Api::<Secret>::namespaced(self.ctx.client.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|err| {
                format!(
                    "cannot read Secret {namespace}/{name} ({field}): {}",
                    kube_reason(&err)
                )
            })
    }

    /// [`Action::Stage`]: reads the credentials and starts the background
    /// download; a failure shows through [`Stager::poll`].
    async fn start_staging(&self) {
        let (Some(stager), Some(spec)) = (&self.ctx.stager, self.host.spec.data_image.as_ref())
        else {
            return;
        };
        let (key, url) = (self.key.as_str(), &spec.url);
        let insecure = spec.disable_certificate_verification == Some(true);
        let credentials = spec
            .credentials_name
            .as_deref()
            .map(|n| self.credentials(n));
        match OptionFuture::from(credentials).await.transpose() {
            Ok(credentials) => stager.start(StageRequest {
                host_key: key.to_string(),
                url: url.clone(),
                credentials,
                insecure,
            }),
            Err(message) => stager.fail(key, url, insecure, message),
        }
    }

    /// `username`/`password` from the `credentialsName` Secret.
    async fn credentials(&self, name: &str) -> Result<SecretCredentials, String> {
        let namespace = &self.writer.namespace;
        let found = self.secret(name, "credentialsName").await?;
        let found = found
            .ok_or_else(|| format!("Secret {namespace}/{name} (credentialsName) not found"))?;
        SecretCredentials::from_secret(&found)
            .map_err(|why| format!("Secret {namespace}/{name} (credentialsName): {why}"))
    }

    /// Drops what this process keeps about a host it has nothing to do for
    /// (idle, or gone).
    fn forget(&self) {
        self.ctx.metrics.set_host_state(&self.key, None);
        if let Ok(mut map) = self.ctx.verified.lock() {
            map.remove(&self.key);
        }
        if let Some(stager) = &self.ctx.stager {
            stager.release(&self.key);
        }
    }

    /// The plan's actions in order, then the status and metrics. When an
    /// attach or detach fails, the failure plan (its actions, status and
    /// metrics) takes the place of the plan's remaining actions and status.
    async fn execute(
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
        let Some((op, err)) = self.actions(&plan.actions, &mut written).await? else {
            return self.finish(&plan, &written).await;
        };
        // The record as written before the call (none: look again later).
        let Some(before) = written.record.clone() else {
            return Ok(Some(decision::BACKOFF_BASE));
        };
        let view = self.judge(op, &err).await;
        let input = Input {
            ironic: &view,
            ..input.clone()
        };
        let mut failure = decision::after_failure(&input, &before, op, &err);
        // A failure plan makes no Ironic call: nothing stops it.
        self.actions(&failure.actions, &mut written).await?;
        // The refused call was counted with its error kind.
        failure.failure = None;
        self.finish(&failure, &written).await
    }

    /// After a refused attach/detach: counted, and an outage told from a
    /// failure of this host.
    async fn judge(&self, op: Op, err: &IronicError) -> IronicView {
        let call = op.verb();
        let outage = self.ctx.judge_failure(call, err).await;
        if outage.is_none() {
            self.ctx.metrics.failure(op, error_reason(err));
            tracing::warn!(host = %self.key, node = %self.node_id, error = %err, "ironic {call} failed");
        }
        outage.unwrap_or(IronicView::Failed(err.clone()))
    }

    /// The actions, up to the end or to an attach or detach that failed.
    async fn actions(
        &self,
        actions: &[Action],
        written: &mut Written,
    ) -> Result<Option<(Op, IronicError)>, ReconcileError> {
        let ctx = self.ctx;
        for action in actions {
            let version = written.resource_version.as_deref();
            let patch = match action {
                Action::AddFinalizer | Action::RemoveFinalizer => {
                    let add = *action == Action::AddFinalizer;
                    kube_ops::finalizer_patch(&written.finalizers, version, add)
                }
                Action::SetHold(on) => {
                    let value = on.then_some(HOLD_VALUE);
                    Some(kube_ops::annotations_patch(&[(HOLD_ANNOTATION, value)]))
                }
                Action::WriteRecord(new) => {
                    let text = new.as_ref().map(AttachedRecord::to_annotation);
                    written.record.clone_from(new);
                    let patch = [(STATE_ANNOTATION, text.as_deref())];
                    Some(kube_ops::annotations_patch(&patch))
                }
                Action::Attach { .. } | Action::Detach => {
                    let op = match action {
                        Action::Attach { .. } => Op::Attach,
                        _ => Op::Detach,
                    };
                    let labels = OperationLabels { operation: op };
                    ctx.metrics.attempts.get_or_create(&labels).inc();
                    let _permit = ctx.ironic_permits.acquire().await.ok();
                    let result = match action {
                        Action::Attach { image_url } => {
                            ctx.ironic.attach_cdrom(&self.node_id, image_url).await
                        }
                        _ => ctx.ironic.detach_cdrom(&self.node_id).await,
                    };
                    if let Err(err) = result {
                        return Ok(Some((op, err)));
                    }
                    ctx.health.mark_up();
                    None
                }
                Action::Stage => {
                    self.start_staging().await;
                    None
                }
                Action::Event(note) => {
                    self.publish(note).await;
                    None
                }
            };
            if let Some(patch) = patch {
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
    ) -> Result<Option<Duration>, ReconcileError> {
        let (ctx, host, key) = (self.ctx, self.host, self.key.as_str());
        if let Some(op) = plan.failure {
            // Failures seen by observation (last_error, no effect).
            ctx.metrics.failure(op, "async");
        }
        let finished = host.metadata.deletion_timestamp.is_some()
            && !written.finalizers.iter().any(|f| f == FINALIZER);
        if finished && written.finalizers.is_empty() {
            // Ours was the last finalizer: the API server has deleted the
            // host, and a status write could only answer 404.
            self.forget();
            return Ok(None);
        }
        let shown = host.status.as_ref().and_then(|s| s.data_image.as_ref());
        let state = match &plan.status {
            StatusChange::Set(status) => {
                if shown != Some(status) {
                    self.writer.apply_status(status).await?;
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
            self.forget();
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

    async fn publish(&self, note: &EventNote) {
        let (key, reason) = (self.key.as_str(), note.reason.as_str());
        if note.reason.is_warning() {
            tracing::warn!(host = %key, reason, message = %note.message, "event");
        } else {
            tracing::info!(host = %key, reason, message = %note.message, "event");
        }
        let reference = self.host.object_ref(&());
        if let Err(err) = self.ctx.events.publish(note, &reference).await {
            tracing::warn!(host = %key, error = %kube_reason(&err), "could not publish event");
        }
    }
}
