//! A fake Kubernetes API server for the reconciler tests: kube's `Client`
//! over a `tower_test::mock::pair` service answered by an in-memory store
//! (GET, JSON merge patches with resourceVersion preconditions, a simplified
//! server-side apply of status.dataImage, Events, Leases, host lists).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use metal3_dataimage::model::bmh::HostResource;
use serde_json::{Value, json};

pub(crate) const NS: &str = "metal3";
pub(crate) const HOST: &str = "worker-0";
pub(crate) const BMO_FINALIZER: &str = "baremetalhost.metal3.io";

#[derive(Clone, Debug)]
pub(crate) struct Logged {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: Value,
}

#[derive(Default)]
pub(crate) struct FakeApi {
    objects: Mutex<HashMap<String, Value>>,
    log: Mutex<Vec<Logged>>,
    rv: AtomicU64,
}

pub(crate) fn host_path(name: &str) -> String {
    format!("/apis/metal3.io/v1alpha1/namespaces/{NS}/baremetalhosts/{name}")
}

pub(crate) fn status(code: u16, reason: &str, message: &str) -> Response<Body> {
    let body = json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":message,"reason":reason,"code":code});
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&body).unwrap()))
        .unwrap()
}

pub(crate) fn ok(value: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(value).unwrap()))
        .unwrap()
}

impl FakeApi {
    pub(crate) fn next_rv(&self) -> String {
        (self.rv.fetch_add(1, Ordering::SeqCst) + 1).to_string()
    }

    pub(crate) fn put(&self, path: &str, mut value: Value) {
        value["metadata"]["resourceVersion"] = json!(self.next_rv());
        self.objects.lock().unwrap().insert(path.to_string(), value);
    }

    pub(crate) fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    pub(crate) fn host(&self) -> HostResource {
        serde_json::from_value(self.get(&host_path(HOST)).expect("host exists")).unwrap()
    }

    pub(crate) fn log(&self) -> Vec<Logged> {
        self.log.lock().unwrap().clone()
    }

    pub(crate) fn clear_log(&self) {
        self.log.lock().unwrap().clear();
    }

    pub(crate) async fn handle(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or("").to_string();
        let content_type = request
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let bytes = request.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        self.log.lock().unwrap().push(Logged {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            content_type: content_type.clone(),
            body: body.clone(),
        });

        // Collections.
        if method == "GET" && path == "/apis/metal3.io/v1alpha1/baremetalhosts" {
            let objects = self.objects.lock().unwrap();
            let mut items: Vec<Value> = objects
                .iter()
                .filter(|(k, _)| k.contains("/baremetalhosts/"))
                .map(|(_, v)| v.clone())
                .collect();
            items.sort_by_key(|v| v["metadata"]["name"].as_str().unwrap_or("").to_string());
            return ok(
                &json!({"apiVersion":"metal3.io/v1alpha1","kind":"BareMetalHostList","metadata":{"resourceVersion":"1"},"items":items}),
            );
        }
        if method == "POST" && path.ends_with("/events") {
            // Stored, so that the Recorder's series PATCHes find it.
            let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
            self.put(&format!("{path}/{name}"), body.clone());
            return Response::builder()
                .status(StatusCode::CREATED)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&body).unwrap()))
                .unwrap();
        }
        if method == "POST" && path.ends_with("/leases") {
            let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
            let object_path = format!("{path}/{name}");
            let mut lease = body.clone();
            lease["metadata"]["namespace"] = json!(path.split('/').nth(5).unwrap_or(""));
            self.put(&object_path, lease);
            return ok(&self.get(&object_path).unwrap());
        }

        // Single objects (optionally /status).
        let (object_path, subresource) = match path.strip_suffix("/status") {
            Some(base) => (base.to_string(), true),
            None => (path.clone(), false),
        };
        let Some(mut current) = self.get(&object_path) else {
            return status(404, "NotFound", &format!("{path} not found"));
        };
        match method.as_str() {
            "GET" => ok(&current),
            "PATCH" if content_type == "application/apply-patch+yaml" => {
                // Server-side apply, simplified to what the reconciler applies.
                if subresource {
                    current["status"]["dataImage"] = body["status"]["dataImage"].clone();
                } else {
                    json_patch::merge(&mut current, &body);
                }
                self.put(&object_path, current);
                ok(&self.get(&object_path).unwrap())
            }
            "PATCH" => {
                let mut patch = body.clone();
                if let Some(rv) = patch["metadata"]["resourceVersion"].as_str() {
                    if Some(rv) != current["metadata"]["resourceVersion"].as_str() {
                        return status(409, "Conflict", "the object has been modified");
                    }
                    patch["metadata"]
                        .as_object_mut()
                        .unwrap()
                        .remove("resourceVersion");
                }
                if subresource {
                    let status_patch = json!({"status": patch["status"].clone()});
                    json_patch::merge(&mut current, &status_patch);
                } else {
                    json_patch::merge(&mut current, &patch);
                }
                // An object being deleted goes away with its last finalizer.
                let deleting = current["metadata"]["deletionTimestamp"].is_string();
                let no_finalizers = current["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(std::vec::Vec::is_empty);
                if deleting && no_finalizers {
                    self.objects.lock().unwrap().remove(&object_path);
                    return ok(&current);
                }
                self.put(&object_path, current);
                ok(&self.get(&object_path).unwrap())
            }
            _ => status(405, "MethodNotAllowed", "not supported by the fake"),
        }
    }
}

pub(crate) fn fake_client(api: Arc<FakeApi>) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let response = api.handle(request).await;
            send.send_response(response);
        }
    });
    kube::Client::new(service, "default")
}

pub(crate) fn host_object(state: &str, node: &str, url: Option<&str>) -> Value {
    let mut spec = json!({"online": true, "bmc": {"address": "redfish-virtualmedia://127.0.0.1:8000/redfish/v1/Systems/1"}});
    if state == "externally provisioned" {
        spec["externallyProvisioned"] = json!(true);
    }
    if let Some(url) = url {
        spec["dataImage"] = json!({"url": url});
    }
    json!({
        "apiVersion": "metal3.io/v1alpha1",
        "kind": "BareMetalHost",
        "metadata": {"name": HOST, "namespace": NS, "uid": "uid-1", "generation": 2,
                     "finalizers": [BMO_FINALIZER], "annotations": {"owner": "team-a"}},
        "spec": spec,
        "status": {"provisioning": {"state": state, "ID": node}, "poweredOn": false, "operationalStatus": "OK"}
    })
}

pub(crate) fn event_reasons(log: &[Logged]) -> Vec<String> {
    log.iter()
        .filter(|l| (l.method == "POST" || l.method == "PATCH") && l.path.contains("/events"))
        .map(|l| l.body["reason"].as_str().unwrap_or("").to_string())
        .collect()
}

pub(crate) fn host_writes(log: &[Logged]) -> Vec<&Logged> {
    log.iter()
        .filter(|l| l.path.contains("/baremetalhosts/") && l.method != "GET")
        .collect()
}
