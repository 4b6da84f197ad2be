//! A stand-in Kubernetes API server: plain HTTP/1.1 on 127.0.0.1, in
//! process, holding BareMetalHosts, Secrets, Leases and Events in memory.
//! The reconciler runs as the real binary with `KUBECONFIG` pointing here.
//!
//! What it serves (what `metal3-dataimage reconcile` calls, nothing more):
//!
//! - `GET /apis/apiextensions.k8s.io/v1/customresourcedefinitions/baremetalhosts.metal3.io`:
//!   the project's test CRD (it has `spec.dataImage`);
//! - `GET /apis/metal3.io/v1alpha1/dataimages`: 404 (kind not installed);
//! - BareMetalHosts: list (`limit` + `continue` pages served from a
//!   snapshot, like etcd), watch, get, JSON merge patch (with the
//!   `metadata.resourceVersion` precondition: 409 on mismatch), server-side
//!   apply and merge patch on `/status`;
//! - Secrets: get; Leases: get, create, merge patch with precondition;
//!   Events (events.k8s.io/v1): create, merge patch.
//!
//! Watch semantics, as kube-apiserver's: one global resourceVersion; a watch
//! from resourceVersion R streams every change after R, then live changes;
//! `BOOKMARK` events carry the current resourceVersion every
//! [`ServerConfig::bookmark_every`] when `allowWatchBookmarks=true`; a watch
//! ends after `timeoutSeconds`; a watch from an R older than the compacted
//! history gets a `410 Gone` `ERROR` event (HTTP 200, as the real server
//! does), which forces the client to re-list. [`ApiServer::expire`] compacts
//! the history and closes every watch (what an etcd compaction plus an API
//! server restart does).
//!
//! A write that changes nothing (the object after the patch equals the
//! object before) does not bump the resourceVersion and sends no watch
//! event, as the real server; it is still counted as a write.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Bytes;
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

pub(crate) type Body = BoxBody<Bytes, Infallible>;

const CRD_PATH: &str =
    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/baremetalhosts.metal3.io";

#[derive(Clone, Debug)]
pub(crate) struct ServerConfig {
    /// Interval of BOOKMARK events on watches that asked for them.
    pub bookmark_every: Duration,
    /// Watch events kept for resuming watches; older ones are compacted.
    pub history: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bookmark_every: Duration::from_secs(5),
            history: 200_000,
        }
    }
}

/// What the clients did, counted by the server.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counters {
    pub host_lists: u64,
    pub host_list_pages: u64,
    pub host_watches: u64,
    pub host_gets: u64,
    /// JSON merge patches on hosts (annotations, finalizers).
    pub host_patches: u64,
    /// Server-side applies on `/status`.
    pub status_applies: u64,
    /// Merge patches on `/status` (clearing it).
    pub status_patches: u64,
    /// Writes that changed nothing.
    pub noop_writes: u64,
    /// 409 answers to host writes (stale resourceVersion).
    pub host_conflicts: u64,
    pub event_creates: u64,
    pub event_patches: u64,
    pub lease_reads: u64,
    pub lease_writes: u64,
    pub secret_gets: u64,
    pub other: u64,
    /// Paths answered 404 that the server does not serve (not CRD/DataImage).
    pub unknown: Vec<String>,
    /// BOOKMARK events sent.
    pub bookmarks: u64,
    /// 410 Gone ERROR events sent to watches that were too old.
    pub gone: u64,
    /// resourceVersion asked by each host watch, with the time.
    pub watch_starts: Vec<(Instant, u64)>,
    /// When each host list (first page) was asked and when its last page was served.
    pub list_times: Vec<(Instant, Option<Instant>)>,
}

impl Counters {
    /// Kubernetes writes to hosts.
    pub(crate) fn host_writes(&self) -> u64 {
        self.host_patches + self.status_applies + self.status_patches
    }
    pub(crate) fn event_writes(&self) -> u64 {
        self.event_creates + self.event_patches
    }
}

struct Watcher {
    namespace: Option<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

struct State {
    rv: u64,
    /// Hosts by (namespace, name).
    hosts: BTreeMap<(String, String), Value>,
    /// Other objects by path.
    objects: HashMap<String, Value>,
    /// Host watch events after `compacted`: (rv, namespace, line).
    history: VecDeque<(u64, String, Bytes)>,
    /// Watches from a resourceVersion below this get 410.
    compacted: u64,
    watchers: Vec<Watcher>,
    /// List snapshots for `continue`.
    snapshots: HashMap<u64, (u64, Arc<Vec<Value>>, usize)>,
    next_snapshot: u64,
    counters: Counters,
}

pub(crate) struct ApiServer {
    state: Mutex<State>,
    config: ServerConfig,
    pub addr: SocketAddr,
    crd: Value,
    /// Set by [`ApiServer::expire`]: every open watch stream ends.
    epoch: AtomicU64,
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
           "message":message,"reason":reason,"code":code})
}

fn full(code: StatusCode, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(serde_json::to_vec(value).unwrap_or_default())).boxed())
        .expect("response")
}

fn error(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &status_body(code, reason, message),
    )
}

fn query_map(query: &str) -> HashMap<String, String> {
    url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn watch_line(kind: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

/// Everything of a host except its resourceVersion (for no-op detection).
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("resourceVersion");
        }
        v
    };
    strip(a) == strip(b)
}

impl ApiServer {
    /// Binds 127.0.0.1 on a free port and serves until the process ends.
    pub(crate) async fn start(config: ServerConfig) -> anyhow::Result<Arc<Self>> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let crd = metal3_dataimage::crd::standalone_crd();
        let server = Arc::new(Self {
            state: Mutex::new(State {
                rv: 1000,
                hosts: BTreeMap::new(),
                objects: HashMap::new(),
                history: VecDeque::new(),
                compacted: 1000,
                watchers: Vec::new(),
                snapshots: HashMap::new(),
                next_snapshot: 1,
                counters: Counters::default(),
            }),
            config,
            addr,
            crd,
            epoch: AtomicU64::new(0),
        });
        let accept = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let server = accept.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(server)
    }

    /// A kubeconfig for this server (plain HTTP, no credentials).
    pub(crate) fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: bench\n  cluster:\n    server: http://{}\n\
             contexts:\n- name: bench\n  context:\n    cluster: bench\n    user: bench\n    namespace: bench\n\
             current-context: bench\nusers:\n- name: bench\n  user: {{}}\n",
            self.addr
        )
    }

    pub(crate) fn counters(&self) -> Counters {
        self.state.lock().expect("state").counters.clone()
    }

    /// Adds or replaces a host (as another client would), with a watch event.
    pub(crate) fn put_host(&self, mut host: Value) {
        let mut state = self.state.lock().expect("state");
        let namespace = host["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = host["metadata"]["name"].as_str().unwrap_or("").to_string();
        let key = (namespace.clone(), name);
        let kind = if state.hosts.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        state.rv += 1;
        host["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        if host["metadata"]["uid"].is_null() {
            host["metadata"]["uid"] = json!(format!("uid-{}", state.rv));
        }
        if host["metadata"]["generation"].is_null() {
            host["metadata"]["generation"] = json!(1);
        }
        host["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        let line = watch_line(kind, &host);
        state.hosts.insert(key, host);
        let rv = state.rv;
        self.publish(&mut state, rv, &namespace, line);
    }

    /// Changes a host's spec with a merge patch, as a user (GitOps) would:
    /// bumps generation, sends a watch event; not counted as the reconciler's.
    pub(crate) fn user_patch_host(&self, namespace: &str, name: &str, patch: &Value) -> bool {
        let mut state = self.state.lock().expect("state");
        let key = (namespace.to_string(), name.to_string());
        let Some(mut host) = state.hosts.get(&key).cloned() else {
            return false;
        };
        let before = host.clone();
        json_patch::merge(&mut host, patch);
        if same_object(&before, &host) {
            return true;
        }
        if before.get("spec") != host.get("spec") {
            let generation = host["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
            host["metadata"]["generation"] = json!(generation);
        }
        state.rv += 1;
        host["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        let line = watch_line("MODIFIED", &host);
        state.hosts.insert(key, host);
        let rv = state.rv;
        self.publish(&mut state, rv, namespace, line);
        true
    }

    /// Runs `f` over every host without copying them.
    pub(crate) fn with_hosts<T>(
        &self,
        f: impl FnOnce(&BTreeMap<(String, String), Value>) -> T,
    ) -> T {
        f(&self.state.lock().expect("state").hosts)
    }

    /// Compacts the watch history past the current resourceVersion and ends
    /// every open watch: a client resuming from its last resourceVersion
    /// gets 410 Gone and must re-list.
    pub(crate) fn expire(&self) {
        let mut state = self.state.lock().expect("state");
        // An unrelated write elsewhere in etcd moves the revision on, so
        // even a client that saw the latest host event is now too old.
        state.rv += 1;
        state.compacted = state.rv;
        state.history.clear();
        state.watchers.clear();
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn publish(&self, state: &mut State, rv: u64, namespace: &str, line: Bytes) {
        state
            .history
            .push_back((rv, namespace.to_string(), line.clone()));
        while state.history.len() > self.config.history {
            if let Some((old, _, _)) = state.history.pop_front() {
                state.compacted = old;
            }
        }
        state.watchers.retain(|w| {
            if w.namespace.as_deref().is_some_and(|ns| ns != namespace) {
                return !w.tx.is_closed();
            }
            w.tx.send(line.clone()).is_ok()
        });
    }

    async fn handle(self: Arc<Self>, request: Request<Incoming>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = query_map(request.uri().query().unwrap_or(""));
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = match request.into_body().collect().await {
            Ok(body) => body.to_bytes(),
            Err(_) => return error(400, "BadRequest", "unreadable body"),
        };
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(e) => return error(400, "BadRequest", &format!("body is not JSON: {e}")),
            }
        };
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();

        if method == hyper::Method::GET && path == CRD_PATH {
            self.count(|c| c.other += 1);
            return full(StatusCode::OK, &self.crd);
        }
        if path.starts_with("/apis/metal3.io/v1alpha1") && path.contains("/dataimages") {
            self.count(|c| c.other += 1);
            return error(
                404,
                "NotFound",
                "the server could not find the requested resource",
            );
        }
        // Host collections: all namespaces or one.
        let host_collection = match segments.as_slice() {
            ["apis", "metal3.io", "v1alpha1", "baremetalhosts"] => Some(None),
            [
                "apis",
                "metal3.io",
                "v1alpha1",
                "namespaces",
                ns,
                "baremetalhosts",
            ] => Some(Some((*ns).to_string())),
            _ => None,
        };
        if let Some(namespace) = host_collection {
            if method != hyper::Method::GET {
                return error(405, "MethodNotAllowed", "only list and watch");
            }
            let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
            return if watch {
                self.watch(namespace, &query)
            } else {
                self.list(namespace, &query)
            };
        }
        match segments.as_slice() {
            [
                "apis",
                "metal3.io",
                "v1alpha1",
                "namespaces",
                ns,
                "baremetalhosts",
                name,
                rest @ ..,
            ] => {
                let subresource = match rest {
                    [] => false,
                    ["status"] => true,
                    _ => return error(404, "NotFound", "no such subresource"),
                };
                self.host_request(&method, ns, name, subresource, &content_type, body)
            }
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                _ns,
                "leases",
                rest @ ..,
            ] => self.simple_object(&method, &path, rest, body, true),
            [
                "apis",
                "events.k8s.io",
                "v1",
                "namespaces",
                _ns,
                "events",
                rest @ ..,
            ] => self.simple_object(&method, &path, rest, body, false),
            ["api", "v1", "namespaces", _ns, "secrets", _name] if method == hyper::Method::GET => {
                self.count(|c| c.secret_gets += 1);
                let state = self.state.lock().expect("state");
                match state.objects.get(&path) {
                    Some(secret) => full(StatusCode::OK, secret),
                    None => error(404, "NotFound", &format!("secrets \"{_name}\" not found")),
                }
            }
            _ => {
                self.count(|c| c.unknown.push(format!("{method} {path}")));
                error(
                    404,
                    "NotFound",
                    "the server could not find the requested resource",
                )
            }
        }
    }

    fn count(&self, f: impl FnOnce(&mut Counters)) {
        f(&mut self.state.lock().expect("state").counters);
    }

    fn list(&self, namespace: Option<String>, query: &HashMap<String, String>) -> Response<Body> {
        let limit: usize = query
            .get("limit")
            .and_then(|l| l.parse().ok())
            .filter(|l| *l > 0)
            .unwrap_or(usize::MAX);
        let mut state = self.state.lock().expect("state");
        let (id, rv, items, offset) = match query.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let Some((id, offset)) = token
                    .split_once(':')
                    .and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<usize>().ok()?)))
                else {
                    return error(400, "BadRequest", "bad continue token");
                };
                let Some((rv, items, _)) = state.snapshots.get(&id).cloned() else {
                    return error(410, "Expired", "the continue token has expired");
                };
                (id, rv, items, offset)
            }
            None => {
                let items: Vec<Value> = state
                    .hosts
                    .iter()
                    .filter(|((ns, _), _)| namespace.as_ref().is_none_or(|want| want == ns))
                    .map(|(_, v)| v.clone())
                    .collect();
                let id = state.next_snapshot;
                state.next_snapshot += 1;
                let rv = state.rv;
                let index = state.counters.list_times.len();
                state.counters.host_lists += 1;
                state.counters.list_times.push((Instant::now(), None));
                let items = Arc::new(items);
                state.snapshots.insert(id, (rv, items.clone(), index));
                (id, rv, items, 0)
            }
        };
        state.counters.host_list_pages += 1;
        let end = offset.saturating_add(limit).min(items.len());
        let page: Vec<&Value> = items[offset.min(end)..end].iter().collect();
        let mut metadata = json!({"resourceVersion": rv.to_string()});
        if end < items.len() {
            metadata["continue"] = json!(format!("{id}:{end}"));
            metadata["remainingItemCount"] = json!(items.len() - end);
        } else if let Some((_, _, index)) = state.snapshots.remove(&id)
            && let Some(entry) = state.counters.list_times.get_mut(index)
        {
            entry.1 = Some(Instant::now());
        }
        drop(state);
        full(
            StatusCode::OK,
            &json!({"apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHostList",
                    "metadata": metadata, "items": page}),
        )
    }

    fn watch(
        self: &Arc<Self>,
        namespace: Option<String>,
        query: &HashMap<String, String>,
    ) -> Response<Body> {
        let from: u64 = query
            .get("resourceVersion")
            .and_then(|r| r.parse().ok())
            .unwrap_or(0);
        let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
        let timeout = query
            .get("timeoutSeconds")
            .and_then(|t| t.parse::<u64>().ok())
            .map_or(Duration::from_secs(1800), Duration::from_secs);
        let (tx, rx) = mpsc::unbounded_channel::<Bytes>();
        {
            let mut state = self.state.lock().expect("state");
            state.counters.host_watches += 1;
            state.counters.watch_starts.push((Instant::now(), from));
            if from < state.compacted {
                state.counters.gone += 1;
                let gone = status_body(
                    410,
                    "Expired",
                    &format!("too old resource version: {from} ({})", state.compacted),
                );
                let _ = tx.send(watch_line("ERROR", &gone));
                drop(tx);
            } else {
                for (rv, ns, line) in &state.history {
                    if *rv > from && namespace.as_ref().is_none_or(|want| want == ns) {
                        let _ = tx.send(line.clone());
                    }
                }
                state.watchers.push(Watcher {
                    namespace: namespace.clone(),
                    tx,
                });
            }
        }
        let server = self.clone();
        let epoch = self.epoch.load(Ordering::SeqCst);
        let deadline = tokio::time::Instant::now() + timeout;
        let every = self.config.bookmark_every;
        let stream = futures::stream::unfold(
            (
                rx,
                tokio::time::interval_at(tokio::time::Instant::now() + every, every),
            ),
            move |(mut rx, mut tick)| {
                let server = server.clone();
                async move {
                    loop {
                        if server.epoch.load(Ordering::SeqCst) != epoch {
                            return None;
                        }
                        tokio::select! {
                            line = rx.recv() => {
                                let line = line?;
                                return Some((Ok::<_, Infallible>(Frame::data(line)), (rx, tick)));
                            }
                            _ = tokio::time::sleep_until(deadline) => return None,
                            _ = tick.tick() => {
                                if server.epoch.load(Ordering::SeqCst) != epoch {
                                    return None;
                                }
                                if bookmarks {
                                    let rv = {
                                        let mut state = server.state.lock().expect("state");
                                        state.counters.bookmarks += 1;
                                        state.rv
                                    };
                                    let line = watch_line("BOOKMARK", &json!({
                                        "apiVersion": "metal3.io/v1alpha1", "kind": "BareMetalHost",
                                        "metadata": {"resourceVersion": rv.to_string()}}));
                                    return Some((Ok(Frame::data(line)), (rx, tick)));
                                }
                            }
                        }
                    }
                }
            },
        );
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("transfer-encoding", "chunked")
            .body(BodyExt::boxed(StreamBody::new(stream)))
            .expect("response")
    }

    fn host_request(
        &self,
        method: &hyper::Method,
        namespace: &str,
        name: &str,
        subresource: bool,
        content_type: &str,
        body: Value,
    ) -> Response<Body> {
        let mut state = self.state.lock().expect("state");
        let key = (namespace.to_string(), name.to_string());
        let Some(current) = state.hosts.get(&key).cloned() else {
            return error(
                404,
                "NotFound",
                &format!("baremetalhosts.metal3.io \"{name}\" not found"),
            );
        };
        if *method == hyper::Method::GET {
            state.counters.host_gets += 1;
            return full(StatusCode::OK, &current);
        }
        if *method != hyper::Method::PATCH {
            return error(405, "MethodNotAllowed", "get and patch only");
        }
        let apply = content_type.starts_with("application/apply-patch");
        match (subresource, apply) {
            (true, true) => state.counters.status_applies += 1,
            (true, false) => state.counters.status_patches += 1,
            (false, true) => {
                return error(
                    415,
                    "UnsupportedMediaType",
                    "apply on the main resource is not served",
                );
            }
            (false, false) => state.counters.host_patches += 1,
        }
        if !apply && !content_type.starts_with("application/merge-patch+json") {
            return error(415, "UnsupportedMediaType", content_type);
        }
        let mut patch = body;
        if let Some(rv) = patch
            .get_mut("metadata")
            .and_then(Value::as_object_mut)
            .and_then(|m| m.remove("resourceVersion"))
            && rv.as_str() != current["metadata"]["resourceVersion"].as_str()
        {
            state.counters.host_conflicts += 1;
            return error(
                409,
                "Conflict",
                &format!(
                    "Operation cannot be fulfilled on baremetalhosts.metal3.io \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
            );
        }
        let mut updated = current.clone();
        if subresource {
            // The status subresource changes status only.
            let status = patch.get("status").cloned().unwrap_or(Value::Null);
            if apply {
                // Server-side apply, force, one field manager: the fields it
                // applies (under status) are replaced by its values.
                if let Value::Object(fields) = status {
                    if !updated["status"].is_object() {
                        updated["status"] = json!({});
                    }
                    for (field, value) in fields {
                        updated["status"][field] = value;
                    }
                }
            } else {
                json_patch::merge(&mut updated, &json!({"status": status}));
            }
        } else {
            // The main resource ignores status.
            if let Some(object) = patch.as_object_mut() {
                object.remove("status");
            }
            json_patch::merge(&mut updated, &patch);
            if updated.get("spec") != current.get("spec") {
                let generation = updated["metadata"]["generation"].as_i64().unwrap_or(1) + 1;
                updated["metadata"]["generation"] = json!(generation);
            }
        }
        if same_object(&current, &updated) {
            state.counters.noop_writes += 1;
            return full(StatusCode::OK, &current);
        }
        state.rv += 1;
        updated["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        let line = watch_line("MODIFIED", &updated);
        state.hosts.insert(key, updated.clone());
        let rv = state.rv;
        self.publish(&mut state, rv, namespace, line);
        full(StatusCode::OK, &updated)
    }

    /// Leases and Events: create (POST on the collection), get, merge patch.
    fn simple_object(
        &self,
        method: &hyper::Method,
        path: &str,
        rest: &[&str],
        body: Value,
        lease: bool,
    ) -> Response<Body> {
        let mut state = self.state.lock().expect("state");
        match (method, rest) {
            (&hyper::Method::POST, []) => {
                if lease {
                    state.counters.lease_writes += 1;
                } else {
                    state.counters.event_creates += 1;
                }
                let Some(name) = body["metadata"]["name"].as_str().map(str::to_string) else {
                    return error(422, "Invalid", "metadata.name is required");
                };
                let object_path = format!("{path}/{name}");
                if state.objects.contains_key(&object_path) {
                    return error(409, "AlreadyExists", &format!("\"{name}\" already exists"));
                }
                state.rv += 1;
                let mut object = body;
                object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
                object["metadata"]["uid"] = json!(format!("uid-{}", state.rv));
                state.objects.insert(object_path, object.clone());
                full(StatusCode::CREATED, &object)
            }
            (&hyper::Method::GET, [_name]) => {
                if lease {
                    state.counters.lease_reads += 1;
                } else {
                    state.counters.other += 1;
                }
                match state.objects.get(path) {
                    Some(object) => full(StatusCode::OK, object),
                    None => error(404, "NotFound", &format!("\"{_name}\" not found")),
                }
            }
            (&hyper::Method::PATCH, [_name]) => {
                if lease {
                    state.counters.lease_writes += 1;
                } else {
                    state.counters.event_patches += 1;
                }
                let Some(current) = state.objects.get(path).cloned() else {
                    return error(404, "NotFound", &format!("\"{_name}\" not found"));
                };
                let mut patch = body;
                if let Some(rv) = patch
                    .get_mut("metadata")
                    .and_then(Value::as_object_mut)
                    .and_then(|m| m.remove("resourceVersion"))
                    && rv.as_str() != current["metadata"]["resourceVersion"].as_str()
                {
                    return error(409, "Conflict", "the object has been modified");
                }
                let mut updated = current;
                json_patch::merge(&mut updated, &patch);
                state.rv += 1;
                updated["metadata"]["resourceVersion"] = json!(state.rv.to_string());
                state.objects.insert(path.to_string(), updated.clone());
                full(StatusCode::OK, &updated)
            }
            _ => {
                state.counters.unknown.push(format!("{method} {path}"));
                error(405, "MethodNotAllowed", "not served by the stand-in")
            }
        }
    }
}
