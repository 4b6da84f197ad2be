//! The reconciler (`metal3-dataimage reconcile` and `cleanup`).
//!
//! - [`decision`]: the pure decision function (host + Ironic → actions);
//! - [`record`]: the `dataimage.metal3.io/attached` state annotation;
//! - [`kube_ops`]: patch bodies and the start-up CRD check;
//! - [`controller`]: the kube-runtime reconcile loop executing plans;
//! - [`metrics`]: Prometheus metrics.

pub mod controller;
pub mod decision;
pub mod events;
pub mod health;
pub mod kube_ops;
pub mod leader;
pub mod metrics;
pub mod record;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio_util::sync::CancellationToken;

use crate::ironic::{IronicClient, IronicConfig};
use crate::model::bmh::HostResource;
use crate::staging::Stager;
use crate::staging::args::{StagingArgs, parse_duration};
use crate::telemetry::{LogFormat, init_logging, redact_url};
use controller::Context;
use decision::DecisionConfig;
use record::{FINALIZER, HOLD_ANNOTATION, STATE_ANNOTATION};

/// Default listeners of the reconciler (chosen not to collide with the
/// baremetal-operator's 9440/9443 when run as its sidecar).
pub const DEFAULT_PROBE_LISTEN: &str = "0.0.0.0:9441";
pub const DEFAULT_IMAGE_SERVER_LISTEN: &str = "0.0.0.0:9445";
pub const DEFAULT_LEASE_NAME: &str = "metal3-dataimage-reconciler";
pub const DEFAULT_NAMESPACE: &str = "metal3-dataimage-system";

#[derive(Clone, Debug, clap::Args)]
pub struct ReconcileArgs {
    /// Ironic API endpoint, e.g. https://ironic.metal3.svc:6385.
    #[arg(long, env = "METAL3_DATAIMAGE_IRONIC_URL")]
    pub ironic_url: url::Url,
    /// HTTP basic auth user for Ironic.
    #[arg(
        long,
        env = "METAL3_DATAIMAGE_IRONIC_USERNAME",
        requires = "ironic_password_file"
    )]
    pub ironic_username: Option<String>,
    /// File holding the Ironic password (trailing newline ignored).
    #[arg(
        long,
        env = "METAL3_DATAIMAGE_IRONIC_PASSWORD_FILE",
        requires = "ironic_username"
    )]
    pub ironic_password_file: Option<PathBuf>,
    /// CA bundle (PEM) to verify Ironic's certificate.
    #[arg(long, env = "METAL3_DATAIMAGE_IRONIC_CA_FILE")]
    pub ironic_ca_file: Option<PathBuf>,
    /// Do not verify Ironic's TLS certificate (testing only).
    #[arg(long, env = "METAL3_DATAIMAGE_IRONIC_INSECURE")]
    pub ironic_insecure: bool,
    /// Timeout of each Ironic request.
    #[arg(long, env = "METAL3_DATAIMAGE_IRONIC_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub ironic_timeout: Duration,
    /// /healthz, /readyz and /metrics listener.
    #[arg(long, env = "METAL3_DATAIMAGE_PROBE_LISTEN", default_value = DEFAULT_PROBE_LISTEN)]
    pub probe_listen: SocketAddr,
    #[command(flatten)]
    pub staging: Box<StagingArgs>,
    /// Release the power hold on a powered-off host after this long without a
    /// confirmed attach (the operator may then power it on without the image).
    #[arg(long, env = "METAL3_DATAIMAGE_HOLD_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub hold_timeout: Duration,
    /// Release the finalizer of a deleted host after this long without a
    /// confirmed detach (Ironic unreachable, node unknown).
    #[arg(long, env = "METAL3_DATAIMAGE_FINALIZER_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub finalizer_timeout: Duration,
    /// How often the drive of an attached host is re-read (notices a BMC
    /// that ejected the image). Each check is a live BMC read by Ironic.
    #[arg(long, env = "METAL3_DATAIMAGE_VERIFY_INTERVAL", default_value = "10m", value_parser = parse_duration)]
    pub verify_interval: Duration,
    /// Maximum concurrent Ironic requests.
    #[arg(long, env = "METAL3_DATAIMAGE_MAX_CONCURRENT", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    pub max_concurrent: u16,
    /// Only watch hosts in this namespace (default: all namespaces).
    #[arg(long, env = "METAL3_DATAIMAGE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Namespace of the leader election Lease (default: POD_NAMESPACE, then
    /// the client's namespace).
    #[arg(long, env = "METAL3_DATAIMAGE_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the leader election Lease.
    #[arg(long, env = "METAL3_DATAIMAGE_LEASE_NAME", default_value = DEFAULT_LEASE_NAME)]
    pub lease_name: String,
    #[arg(long, env = "METAL3_DATAIMAGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Clone, Debug, clap::Args)]
pub struct CleanupArgs {
    /// Only clean hosts in this namespace (default: all namespaces).
    #[arg(long, env = "METAL3_DATAIMAGE_NAMESPACE")]
    pub namespace: Option<String>,
    /// Show what would be removed without changing anything.
    #[arg(long, env = "METAL3_DATAIMAGE_DRY_RUN")]
    pub dry_run: bool,
    #[arg(long, env = "METAL3_DATAIMAGE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

pub fn run(args: ReconcileArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_async(args))
}

pub fn cleanup(args: CleanupArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let client = Client::try_default()
            .await
            .context("connecting to Kubernetes")?;
        let report = cleanup_hosts(client, args.namespace.as_deref(), args.dry_run).await?;
        println!(
            "{} {} host(s): {} finalizer(s), {} power hold(s), {} state annotation(s)",
            if args.dry_run {
                "would clean"
            } else {
                "cleaned"
            },
            report.hosts,
            report.finalizers,
            report.holds,
            report.records
        );
        Ok(())
    })
}

/// What `cleanup` removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CleanupReport {
    pub hosts: usize,
    pub finalizers: usize,
    pub holds: usize,
    pub records: usize,
}

/// Removes this project's finalizer, power hold and state annotation from
/// every host (uninstall). Images left in drives stay there.
pub async fn cleanup_hosts(
    client: Client,
    namespace: Option<&str>,
    dry_run: bool,
) -> anyhow::Result<CleanupReport> {
    let api: Api<HostResource> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let hosts = api
        .list(&ListParams::default())
        .await
        .context("listing BareMetalHosts")?;
    let mut report = CleanupReport::default();
    for host in hosts.items {
        let (Some(ns), Some(name)) = (host.namespace(), host.metadata.name.clone()) else {
            continue;
        };
        let annotations = host.annotations();
        let has_hold = annotations.contains_key(HOLD_ANNOTATION);
        let has_record = annotations.contains_key(STATE_ANNOTATION);
        let finalizers = host.metadata.finalizers.clone().unwrap_or_default();
        let has_finalizer = finalizers.iter().any(|f| f == FINALIZER);
        if !(has_hold || has_record || has_finalizer) {
            continue;
        }
        report.hosts += 1;
        report.holds += usize::from(has_hold);
        report.records += usize::from(has_record);
        report.finalizers += usize::from(has_finalizer);
        println!(
            "{ns}/{name}:{}{}{}",
            if has_finalizer { " finalizer" } else { "" },
            if has_hold { " power-hold" } else { "" },
            if has_record { " state-annotation" } else { "" }
        );
        if dry_run {
            continue;
        }
        let writer = kube_ops::HostWriter::new(client.clone(), &ns, &name);
        if has_hold || has_record {
            let patch =
                kube_ops::annotations_patch(&[(HOLD_ANNOTATION, None), (STATE_ANNOTATION, None)]);
            writer
                .merge(&patch)
                .await
                .with_context(|| format!("removing annotations from {ns}/{name}"))?;
        }
        if has_finalizer {
            // Re-read for a fresh resourceVersion after the annotation patch.
            let fresh = writer
                .api
                .get(&name)
                .await
                .with_context(|| format!("reading {ns}/{name}"))?;
            let current = fresh.metadata.finalizers.clone().unwrap_or_default();
            if let Some(patch) = kube_ops::finalizer_remove_patch(
                &current,
                fresh.metadata.resource_version.as_deref(),
            ) {
                writer
                    .merge(&patch)
                    .await
                    .with_context(|| format!("removing the finalizer from {ns}/{name}"))?;
            }
        }
    }
    Ok(report)
}

/// The upstream DataImage kind.
pub fn dataimage_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(crate::model::GROUP, crate::model::VERSION, "DataImage"),
        "dataimages",
    )
}

/// Start-up check of the BareMetalHost CRD (refuses to run without spec.dataImage).
pub async fn check_bmh_crd(client: Client) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client);
    let crd = api
        .get(crate::crd::BMH_CRD_NAME)
        .await
        .with_context(|| format!("reading CRD {}", crate::crd::BMH_CRD_NAME))?;
    let value = serde_json::to_value(&crd).context("encoding the CRD")?;
    kube_ops::check_crd(&value).map_err(|message| anyhow::anyhow!("refusing to start: {message}"))
}

fn read_password(path: &PathBuf) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --ironic-password-file {}", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn identity() -> String {
    let base = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "metal3-dataimage".into());
    let suffix: u32 = rand::random();
    format!("{base}-{suffix:08x}")
}

async fn run_async(args: ReconcileArgs) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    check_bmh_crd(client.clone()).await?;

    let password = args
        .ironic_password_file
        .as_ref()
        .map(read_password)
        .transpose()?;
    let ironic = IronicClient::connect(IronicConfig {
        endpoint: args.ironic_url.clone(),
        username: args.ironic_username.clone(),
        password,
        ca_file: args.ironic_ca_file.clone(),
        insecure: args.ironic_insecure,
        timeout: args.ironic_timeout,
    })
    .await
    .map_err(|err| {
        anyhow::anyhow!(
            "refusing to start: Ironic at {}: {err}",
            redact_url(args.ironic_url.as_str())
        )
    })?;
    tracing::info!(ironic = %redact_url(args.ironic_url.as_str()), "connected to Ironic");

    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            shutdown.cancel();
        });
    }

    let stager = match args.staging.config() {
        Some(config) => {
            let tls = args
                .staging
                .server_tls()
                .map_err(|e| anyhow::anyhow!("image server TLS: {e}"))?;
            let stager = Stager::new(config).map_err(|e| anyhow::anyhow!("image staging: {e}"))?;
            let serving = stager.clone();
            let token = shutdown.clone();
            tokio::spawn(async move {
                if let Err(err) = serving.serve_tls(tls, token.cancelled_owned()).await {
                    tracing::error!(error = %err, "image server stopped");
                }
            });
            Some(stager)
        }
        None => {
            tracing::warn!(
                "--image-server-url not set: hosts whose dataImage has credentialsName or disableCertificateVerification are not attached"
            );
            None
        }
    };

    let metrics = Arc::new(metrics::Metrics::new());
    let mut registry = prometheus_client::registry::Registry::default();
    metrics.register(&mut registry);
    let readiness = crate::probes::Readiness::new();
    let listener = crate::probes::bind(args.probe_listen)
        .await
        .with_context(|| format!("binding --probe-listen {}", args.probe_listen))?;
    let server = crate::probes::ProbeServer::new(Arc::new(registry), readiness.checker());
    tokio::spawn(server.serve(listener, shutdown.clone().cancelled_owned()));

    // Upstream DataImage kind: watched only if installed.
    let dataimage_api = match &args.namespace {
        Some(ns) => {
            Api::<DynamicObject>::namespaced_with(client.clone(), ns, &dataimage_resource())
        }
        None => Api::<DynamicObject>::all_with(client.clone(), &dataimage_resource()),
    };
    let dataimages_installed = match dataimage_api.list(&ListParams::default().limit(1)).await {
        Ok(_) => true,
        Err(kube::Error::Api(status)) if status.code == 404 => {
            tracing::info!(
                "the upstream DataImage kind is not installed: no conflict detection needed"
            );
            false
        }
        Err(err) => return Err(err).context("listing upstream DataImages"),
    };

    let lease_namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| client.default_namespace().to_string());
    let lease_stop = CancellationToken::new();
    let (mut leader, lease_task) = leader::start(
        client.clone(),
        &lease_namespace,
        &args.lease_name,
        identity(),
        lease_stop.clone(),
    );
    readiness.set_ready(true);
    tracing::info!(lease = %format!("{lease_namespace}/{}", args.lease_name), "waiting for leadership");

    let decision_config = DecisionConfig {
        hold_timeout: args.hold_timeout,
        finalizer_timeout: args.finalizer_timeout,
        verify_interval: args.verify_interval,
        ..DecisionConfig::default()
    };

    loop {
        // Wait to lead (or to shut down).
        while !*leader.borrow_and_update() {
            tokio::select! {
                _ = shutdown.cancelled() => { lease_stop.cancel(); let _ = lease_task.await; return Ok(()); }
                changed = leader.changed() => { if changed.is_err() { bail!("leader election stopped"); } }
            }
        }
        tracing::info!("became leader: reconciling");
        metrics.leader.set(1);
        let stop = shutdown.child_token();
        let dataimages = if dataimages_installed {
            let writer = reflector::store::Writer::<DynamicObject>::new(dataimage_resource());
            let reader = writer.as_reader();
            let stream = reflector::reflector(
                writer,
                watcher(dataimage_api.clone(), watcher::Config::default()),
            )
            .applied_objects()
            .for_each(|_| futures::future::ready(()));
            let stop_reflector = stop.clone();
            tokio::spawn(async move {
                tokio::select! { _ = stream => {}, _ = stop_reflector.cancelled() => {} }
            });
            Some((reader, dataimage_resource()))
        } else {
            None
        };
        let mut context = Context::new(
            client.clone(),
            ironic.clone(),
            decision_config.clone(),
            usize::from(args.max_concurrent),
            metrics.clone(),
            std::env::var("POD_NAME").ok(),
        );
        context.stager = stager.clone();
        context.dataimages = dataimages;
        let recoveries = context.health.recoveries();
        let context = Arc::new(context);
        let hosts: Api<HostResource> = match &args.namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let mut controller = Controller::new(hosts, watcher::Config::default()).with_config(
            ControllerConfig::default().concurrency(args.max_concurrent.saturating_mul(2)),
        );
        if dataimages_installed {
            controller = controller.watches_with(
                dataimage_api.clone(),
                dataimage_resource(),
                watcher::Config::default(),
                |image: DynamicObject| {
                    let name = image.metadata.name.clone()?;
                    let namespace = image.metadata.namespace.clone()?;
                    Some(ObjectRef::<HostResource>::new(&name).within(&namespace))
                },
            );
        }
        // When Ironic answers again after an outage, every host is retried
        // at once (they wait without polling Ironic meanwhile).
        controller = controller.reconcile_all_on(recoveries);
        let stop_controller = stop.clone();
        let run = controller
            .graceful_shutdown_on(async move { stop_controller.cancelled().await })
            .run(controller::reconcile, controller::error_policy, context)
            .for_each(|result| {
                if let Err(err) = result {
                    tracing::debug!(error = %err, "controller event");
                }
                futures::future::ready(())
            });
        tokio::pin!(run);
        let lost = loop {
            tokio::select! {
                _ = &mut run => break false,
                changed = leader.changed() => {
                    if changed.is_err() || !*leader.borrow_and_update() { break true; }
                }
                _ = shutdown.cancelled() => break false,
            }
        };
        stop.cancel();
        metrics.leader.set(0);
        if lost {
            tracing::warn!("lost leadership: stopped reconciling");
            run.await;
            continue;
        }
        run.await;
        // Released only now that reconciling has stopped: the standby takes
        // over within one retry period, never while we still work.
        lease_stop.cancel();
        let _ = lease_task.await;
        return Ok(());
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
