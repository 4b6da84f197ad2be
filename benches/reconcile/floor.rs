//! The floor: a bare Ironic client that does only what an attach must do,
//! for every node, with the reconciler's concurrency limit: `POST vmedia`,
//! then `GET vmedia` (at once, then every `poll`) until the CD slot holds
//! the inserted image. Its wall time and request count are the least any
//! client could do against this Ironic.
//!
//! Also the reset between runs (`DELETE vmedia` on every node), which is
//! not measured.

use std::sync::Arc;
use std::time::{Duration, Instant};

use metal3_dataimage::ironic::{IronicApi, IronicClient, IronicError, VirtualMedia};
use tokio::sync::Semaphore;

pub(crate) struct FloorResult {
    pub seconds: f64,
    pub attached: usize,
    pub failed: Vec<String>,
    /// Requests this client sent (POST + GET), by its own count.
    pub requests: u64,
}

fn inserted(media: &[VirtualMedia], node: &str) -> bool {
    media.iter().any(|m| {
        m.inserted
            && m.media_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case("CD") || t.eq_ignore_ascii_case("DVD"))
            && m.image
                .as_deref()
                .is_some_and(|i| i.ends_with(&format!("cdrom-{node}.iso")))
    })
}

/// One request with the permit held; a 409 (node locked) is retried after
/// 200 ms, at most 50 times.
async fn call<T, F, Fut>(
    permits: &Semaphore,
    requests: &std::sync::atomic::AtomicU64,
    mut f: F,
) -> Result<T, IronicError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, IronicError>>,
{
    let mut tries = 0;
    loop {
        let result = {
            let _permit = permits.acquire().await.expect("semaphore");
            requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f().await
        };
        match result {
            Err(IronicError::Locked(_)) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

pub(crate) async fn run(
    client: &IronicClient,
    nodes: &[String],
    image_url: &str,
    concurrency: usize,
    poll: Duration,
    deadline: Duration,
) -> FloorResult {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for node in nodes {
        let (client, permits, requests) = (client.clone(), permits.clone(), requests.clone());
        let (node, image_url) = (node.clone(), image_url.to_string());
        tasks.spawn(async move {
            let end = Instant::now() + deadline;
            if let Err(err) = call(&permits, &requests, || {
                client.attach_cdrom(&node, &image_url)
            })
            .await
            {
                return Err(format!("{node}: POST vmedia: {err}"));
            }
            loop {
                match call(&permits, &requests, || client.list_vmedia(&node)).await {
                    Ok(media) if inserted(&media, &node) => return Ok(()),
                    Ok(_) => {}
                    Err(err) => return Err(format!("{node}: GET vmedia: {err}")),
                }
                if Instant::now() > end {
                    return Err(format!("{node}: not inserted after {deadline:?}"));
                }
                tokio::time::sleep(poll).await;
            }
        });
    }
    let mut failed = Vec::new();
    let mut attached = 0;
    while let Some(result) = tasks.join_next().await {
        match result {
            Ok(Ok(())) => attached += 1,
            Ok(Err(message)) => failed.push(message),
            Err(err) => failed.push(format!("task: {err}")),
        }
    }
    FloorResult {
        seconds: t0.elapsed().as_secs_f64(),
        attached,
        failed,
        requests: requests.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// Ejects the CD of every node (`DELETE vmedia`) and waits until no node
/// shows one; returns the nodes that still do.
pub(crate) async fn reset(
    client: &IronicClient,
    nodes: &[String],
    concurrency: usize,
) -> Vec<String> {
    let permits = Arc::new(Semaphore::new(concurrency.max(1)));
    let requests = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for node in nodes {
        let (client, permits, requests, node) = (
            client.clone(),
            permits.clone(),
            requests.clone(),
            node.clone(),
        );
        tasks.spawn(async move {
            for _ in 0..20 {
                let media = call(&permits, &requests, || client.list_vmedia(&node)).await;
                match media {
                    Ok(m) if !m.iter().any(|m| m.inserted) => return None,
                    _ => {}
                }
                let _ = call(&permits, &requests, || client.detach_cdrom(&node)).await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Some(node)
        });
    }
    let mut left = Vec::new();
    while let Some(result) = tasks.join_next().await {
        if let Ok(Some(node)) = result {
            left.push(node);
        }
    }
    left
}
