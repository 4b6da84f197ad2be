//! The baseline: the floor for any Rust webhook. Same stack as `serve`
//! (tokio multi-thread runtime, rustls with the ring or the aws-lc-rs
//! provider (`--provider`; the driver runs both), TLS 1.2 + 1.3,
//! ALPN http/1.1, tokio-rustls + hyper HTTP/1.1 keep-alive, TCP_NODELAY, an
//! axum router), but the handler reads only `request.uid` and answers
//! "allowed". It also serves a plain-HTTP `/readyz` like `serve`, so cold
//! start is measured the same way for both.

use std::{
    borrow::Cow, net::SocketAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration,
};

use anyhow::Context;
use axum::{
    Router,
    body::Bytes,
    http::{StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
    routing::get,
};
use clap::Parser;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use rustls::{
    ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Parser)]
#[command(name = "baseline-server")]
pub(crate) struct BaselineArgs {
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    probe_listen: SocketAddr,
    #[arg(long)]
    tls_cert_file: PathBuf,
    #[arg(long)]
    tls_key_file: PathBuf,
    /// rustls crypto provider of the listener.
    #[arg(long, value_enum, default_value_t = Provider::AwsLcRs)]
    provider: Provider,
}

/// The rustls crypto providers the baseline can be built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Provider {
    #[value(name = "ring")]
    Ring,
    #[value(name = "aws-lc-rs")]
    AwsLcRs,
}

impl Provider {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Ring => "ring",
            Self::AwsLcRs => "aws-lc-rs",
        }
    }

    fn crypto(self) -> rustls::crypto::CryptoProvider {
        match self {
            Self::Ring => rustls::crypto::ring::default_provider(),
            Self::AwsLcRs => rustls::crypto::aws_lc_rs::default_provider(),
        }
    }
}

pub(crate) fn main(args: &[String]) -> ExitCode {
    let args = match BaselineArgs::try_parse_from(
        std::iter::once("baseline-server".to_string()).chain(args.iter().cloned()),
    ) {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(2);
        }
    };
    // The same runtime `#[tokio::main]` builds: one worker per available CPU.
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("baseline: runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("baseline: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: BaselineArgs) -> anyhow::Result<()> {
    let chain = CertificateDer::pem_file_iter(&args.tls_cert_file)
        .context("read certificate")?
        .collect::<Result<Vec<_>, _>>()
        .context("parse certificate")?;
    let key = PrivateKeyDer::from_pem_file(&args.tls_key_file).context("read key")?;
    // rustls' defaults (TLS 1.2 + 1.3, the provider's default suites and
    // groups), with the provider given explicitly: rustls is built with both.
    let mut config = ServerConfig::builder_with_provider(Arc::new(args.provider.crypto()))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("TLS config")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = TlsAcceptor::from(Arc::new(config));

    let listener = TcpListener::bind(args.listen)
        .await
        .context("bind listen")?;
    let probes = TcpListener::bind(args.probe_listen)
        .await
        .context("bind probe")?;
    let probe_app = Router::new()
        .route("/readyz", get(|| async { "ok" }))
        .route("/healthz", get(|| async { "ok" }));
    tokio::spawn(async move {
        if let Err(err) = axum::serve(probes, probe_app).await {
            eprintln!("baseline: probe server: {err}");
        }
    });

    let app = Router::new().fallback(review);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                eprintln!("baseline: accept: {err}");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            if tcp.set_nodelay(true).is_err() {
                return;
            }
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .keep_alive(true)
                .serve_connection(TokioIo::new(tls), TowerToHyperService::new(app))
                .await;
        });
    }
}

#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    request: UidOnly<'a>,
}

#[derive(serde::Deserialize)]
struct UidOnly<'a> {
    #[serde(borrow)]
    uid: Cow<'a, str>,
}

#[derive(serde::Serialize)]
struct Answer<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    response: Allowed<'a>,
}

#[derive(serde::Serialize)]
struct Allowed<'a> {
    uid: &'a str,
    allowed: bool,
}

async fn review(body: Bytes) -> Response {
    let Ok(envelope) = serde_json::from_slice::<Envelope>(&body) else {
        return (StatusCode::BAD_REQUEST, "not an AdmissionReview").into_response();
    };
    let answer = Answer {
        api_version: "admission.k8s.io/v1",
        kind: "AdmissionReview",
        response: Allowed {
            uid: &envelope.request.uid,
            allowed: true,
        },
    };
    match serde_json::to_vec(&answer) {
        Ok(json) => ([(CONTENT_TYPE, "application/json")], json).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
