//! AdmissionReview semantics over real HTTPS against the in-process server,
//! with captured kube-apiserver requests as bodies.

use crate::support::server as server_support;

use std::sync::Arc;
use std::time::Duration;

use metal3_dataimage::admission::handler::MAX_BODY_BYTES;
use metal3_dataimage::rules::SecretLookup;
use reqwest::StatusCode;
use server_support::*;

fn with_secrets(
    answer: SecretLookup,
    delay: Duration,
) -> impl FnOnce(&std::path::Path, &Pki, &mut metal3_dataimage::admission::Settings) {
    move |_, _, settings| settings.secrets = Arc::new(StaticSecrets { answer, delay })
}

#[tokio::test]
async fn allows_a_plain_host_with_the_request_uid() {
    let server = start(|_, _, _| {}).await;
    let client = server.client();
    for name in ["bmh-create-minimal.json", "bmh-create-minimal.mutate.json"] {
        let body = fixture(name);
        let path = if name.contains("mutate") {
            MUTATE
        } else {
            VALIDATE
        };
        let answer = post(&client, &server.url(path), &body).await;
        assert_eq!(answer.content_type, "application/json");
        let review = answer.json();
        assert_eq!(review["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(review["kind"], "AdmissionReview");
        let response = answer.response();
        assert_eq!(response["uid"], uid_of(&body).as_str(), "{name}");
        assert_eq!(response["allowed"], true, "{name}: {response}");
        assert!(
            response.get("patch").is_none() && response.get("patchType").is_none(),
            "{response}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn denies_a_bad_url_with_an_invalid_status() {
    let server = start(|_, _, _| {}).await;
    let body = fixture("bmh-create-dataimage-full.json").replace(
        "https://images.example.com/config/worker-0-config.iso",
        "ftp://images.example.com/a.iso",
    );
    let response = post(&server.client(), &server.url(VALIDATE), &body)
        .await
        .response();
    assert_eq!(response["uid"], uid_of(&body).as_str());
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 422, "{response}");
    assert_eq!(response["status"]["reason"], "Invalid");
    let causes = response["status"]["details"]["causes"]
        .as_array()
        .expect("causes");
    assert!(
        causes.iter().any(|c| c["field"] == "spec.dataImage.url"),
        "{response}"
    );
    server.stop().await;
}

#[tokio::test]
async fn missing_secret_is_a_warning_and_strict_mode_denies() {
    let server = start(with_secrets(SecretLookup::NotFound, Duration::ZERO)).await;
    let body = fixture("bmh-create-dataimage-full.json");
    let response = post(&server.client(), &server.url(VALIDATE), &body)
        .await
        .response();
    assert_eq!(response["allowed"], true, "{response}");
    let warnings = response["warnings"].as_array().expect("warnings");
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("dataimage-creds")),
        "{response}"
    );
    server.stop().await;

    let strict = start(|_, _, settings| {
        settings.secrets = Arc::new(StaticSecrets {
            answer: SecretLookup::NotFound,
            delay: Duration::ZERO,
        });
        settings.args.strict_secrets = true;
    })
    .await;
    let response = post(&strict.client(), &strict.url(VALIDATE), &body)
        .await
        .response();
    assert_eq!(response["allowed"], false, "{response}");
    strict.stop().await;
}

#[tokio::test]
async fn secret_with_empty_password_denies() {
    let server = start(with_secrets(
        SecretLookup::from_entries([("username", &b"admin"[..]), ("password", b"")]),
        Duration::ZERO,
    ))
    .await;
    let body = fixture("bmh-create-dataimage-full.json");
    let response = post(&server.client(), &server.url(VALIDATE), &body)
        .await
        .response();
    assert_eq!(response["allowed"], false, "{response}");
    server.stop().await;
}

#[tokio::test]
async fn slow_secret_lookup_answers_within_the_request_timeout_with_a_warning() {
    // The lookup would take a minute; the API server allows 1 s.
    let server = start(with_secrets(
        SecretLookup::NotFound,
        Duration::from_secs(60),
    ))
    .await;
    let body = fixture("bmh-create-dataimage-full.json");
    let url = format!("{}?timeout=1s", server.url(VALIDATE));
    let answer = post_with(&server.client(), &url, "application/json", body.clone())
        .await
        .unwrap();
    let response = answer.response();
    assert_eq!(response["allowed"], true, "{response}");
    assert!(
        response["warnings"]
            .as_array()
            .is_some_and(|w| !w.is_empty()),
        "{response}"
    );
    server.stop().await;
}

#[tokio::test]
async fn mutating_webhook_answers_a_base64_json_patch() {
    let server = start(|_, _, _| {}).await;
    let body = fixture("bmh-apply-mutate-then-validate.mutate.json");
    let response = post(&server.client(), &server.url(MUTATE), &body)
        .await
        .response();
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(response["patchType"], "JSONPatch", "{response}");
    let patch = patch_of(&response).expect("patch");
    assert_eq!(
        patch,
        serde_json::json!([{"op":"add","path":"/spec/dataImage/disableCertificateVerification","value":false}])
    );
    // The validating call of the same apply already has the default: no patch.
    let body = fixture("bmh-apply-mutate-then-validate.json");
    let response = post(&server.client(), &server.url(MUTATE), &body)
        .await
        .response();
    assert!(response.get("patch").is_none(), "{response}");
    server.stop().await;
}

#[tokio::test]
async fn v1beta1_reviews_are_answered_as_v1beta1() {
    let server = start(|_, _, _| {}).await;
    let body = fixture("bmh-create-minimal.json").replacen(
        "admission.k8s.io/v1",
        "admission.k8s.io/v1beta1",
        1,
    );
    let answer = post(&server.client(), &server.url(VALIDATE), &body).await;
    assert_eq!(answer.json()["apiVersion"], "admission.k8s.io/v1beta1");
    assert_eq!(answer.response()["uid"], uid_of(&body).as_str());
    server.stop().await;
}

#[tokio::test]
async fn data_image_kind_is_judged_on_its_own_path() {
    let server = start(|_, _, _| {}).await;
    let body = fixture("dataimage-create.json");
    let response = post(&server.client(), &server.url(VALIDATE_DATAIMAGE), &body)
        .await
        .response();
    assert_eq!(response["uid"], uid_of(&body).as_str());
    assert_eq!(response["allowed"], true, "{response}");
    server.stop().await;
}

#[tokio::test]
async fn http_level_errors_for_bodies_without_a_uid() {
    let server = start(|_, _, _| {}).await;
    let client = server.client();
    let url = server.url(VALIDATE);
    for (body, what) in [
        ("{not json", "bad JSON"),
        (r#"{"kind":"Pod","apiVersion":"v1"}"#, "not a review"),
        (
            r#"{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"operation":"CREATE"}}"#,
            "no uid",
        ),
    ] {
        let answer = post_with(&client, &url, "application/json", body)
            .await
            .unwrap();
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{what}: {}",
            answer.text
        );
        assert!(
            answer.content_type.starts_with("text/plain"),
            "{what}: {}",
            answer.content_type
        );
        assert!(!answer.text.is_empty());
    }
    server.stop().await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let server = start(|_, _, _| {}).await;
    let body = fixture("bmh-create-minimal.json");
    let answer = post_with(
        &server.client(),
        &server.url(VALIDATE),
        "application/yaml",
        body,
    )
    .await
    .unwrap();
    assert_eq!(
        answer.status,
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "{}",
        answer.text
    );
    server.stop().await;
}

#[tokio::test]
async fn oversized_body_gets_an_in_band_413() {
    let server = start(|_, _, _| {}).await;
    let body = fixture("bmh-create-minimal.json");
    let uid = uid_of(&body);
    let padding = "a".repeat(MAX_BODY_BYTES);
    let big = body.replacen(
        "\"dryRun\": false",
        &format!("\"dryRun\": false, \"padding\": \"{padding}\""),
        1,
    );
    assert!(big.len() > MAX_BODY_BYTES);
    let response = post(&server.client(), &server.url(VALIDATE), &big)
        .await
        .response();
    assert_eq!(response["uid"], uid.as_str());
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["code"], 413, "{response}");
    // The connection is still usable afterwards (a fresh request works).
    let answer = post(&server.client(), &server.url(VALIDATE), &body).await;
    assert_eq!(answer.response()["allowed"], true);
    server.stop().await;
}

#[tokio::test]
async fn undecodable_object_is_denied_with_400_naming_the_field_and_admitted_by_mutate() {
    let server = start(|_, _, _| {}).await;
    let body = fixture("bmh-create-dataimage-full.json").replace(
        "\"https://images.example.com/config/worker-0-config.iso\"",
        "42",
    );
    let uid = uid_of(&body);
    let response = post(&server.client(), &server.url(VALIDATE), &body)
        .await
        .response();
    assert_eq!(response["uid"], uid.as_str());
    assert_eq!(response["allowed"], false, "{response}");
    assert_eq!(response["status"]["code"], 400, "{response}");
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.dataImage.url"),
        "{response}"
    );

    let response = post(&server.client(), &server.url(MUTATE), &body)
        .await
        .response();
    assert_eq!(response["allowed"], true, "{response}");
    assert!(response.get("patch").is_none(), "{response}");
    server.stop().await;
}

#[tokio::test]
async fn damaged_envelope_with_a_uid_is_answered_in_band() {
    let server = start(|_, _, _| {}).await;
    let body = fixture("bmh-create-minimal.json").replacen(
        "\"operation\": \"CREATE\"",
        "\"operation\": 5",
        1,
    );
    let response = post(&server.client(), &server.url(VALIDATE), &body)
        .await
        .response();
    assert_eq!(response["uid"], uid_of(&body).as_str());
    assert_eq!(response["status"]["code"], 400);
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("request.operation"),
        "{response}"
    );
    server.stop().await;
}

#[tokio::test]
async fn every_captured_review_gets_its_own_uid_back_under_concurrency() {
    let server = start(|_, _, _| {}).await;
    let dir = fixture_path("");
    let mut bodies = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            bodies.push((
                path.to_string_lossy().contains(".mutate."),
                std::fs::read_to_string(path).unwrap(),
            ));
        }
    }
    assert!(
        bodies.len() >= 60,
        "expected the captured reviews, found {}",
        bodies.len()
    );
    let client = server.client();
    let mut tasks = tokio::task::JoinSet::new();
    for round in 0..3 {
        for (mutating, body) in bodies.clone() {
            let client = client.clone();
            let url = server.url(if mutating { MUTATE } else { VALIDATE });
            tasks.spawn(async move {
                let answer = post(&client, &url, &body).await;
                (round, uid_of(&body), answer.response())
            });
        }
    }
    let mut answered = 0;
    while let Some(result) = tasks.join_next().await {
        let (_, uid, response) = result.unwrap();
        assert_eq!(response["uid"], uid.as_str());
        assert!(response["allowed"].is_boolean());
        answered += 1;
    }
    assert_eq!(answered, bodies.len() * 3);
    let metrics = server.metrics_text();
    assert!(
        metrics.contains("controller_runtime_webhook_requests_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("metal3_dataimage_admission_total"),
        "{metrics}"
    );
    assert!(
        metrics.contains("controller_runtime_webhook_panics_total 0"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test]
async fn dry_run_is_judged_like_a_real_request() {
    let server = start(|_, _, _| {}).await;
    let real = fixture("bmh-create-dataimage-full.json").replace(
        "https://images.example.com/config/worker-0-config.iso",
        "ftp://images.example.com/a.iso",
    );
    let dry = real.replacen("\"dryRun\": false", "\"dryRun\": true", 1);
    assert_ne!(real, dry);
    let real_response = post(&server.client(), &server.url(VALIDATE), &real)
        .await
        .response();
    let dry_response = post(&server.client(), &server.url(VALIDATE), &dry)
        .await
        .response();
    assert_eq!(real_response["allowed"], false);
    assert_eq!(real_response["status"], dry_response["status"]);
    server.stop().await;
}

/// What a request to a wrong path or with a wrong method gets back.
async fn plain_answer(request: reqwest::RequestBuilder) -> (u16, String, String, String) {
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (content_type, allow) = (header("content-type"), header("allow"));
    let status = response.status().as_u16();
    (status, content_type, allow, response.text().await.unwrap())
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_get_a_one_line_reason_on_both_listeners() {
    const TEXT: &str = "text/plain; charset=utf-8";
    let server = start(|_, _, _| {}).await;
    let client = server.client();
    assert_eq!(
        plain_answer(client.get(server.url("/foo?x=1"))).await,
        (
            404,
            TEXT.into(),
            String::new(),
            "404 page not found: /foo\n".into()
        )
    );
    assert_eq!(
        plain_answer(
            client
                .post(server.url("/validate"))
                .header("Content-Type", "application/json")
                .body(fixture("bmh-create-minimal.json"))
        )
        .await,
        (
            404,
            TEXT.into(),
            String::new(),
            "404 page not found: /validate\n".into()
        )
    );
    for path in [VALIDATE, MUTATE, VALIDATE_DATAIMAGE] {
        assert_eq!(
            plain_answer(client.get(server.url(path))).await,
            (
                405,
                TEXT.into(),
                "POST".into(),
                "405 method not allowed: use POST\n".into()
            ),
            "{path}"
        );
    }

    // The plain-HTTP probe listener.
    let stop = tokio_util::sync::CancellationToken::new();
    let (registry, readiness) = (server.registry.clone(), server.handle.readiness_check());
    let listen = "127.0.0.1:0".parse().unwrap();
    let probes = metal3_dataimage::probes::spawn(listen, registry, readiness, &stop);
    let (probe_addr, task) = probes.await.unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    assert_eq!(
        plain_answer(http.get(format!("http://{probe_addr}/foo"))).await,
        (
            404,
            TEXT.into(),
            String::new(),
            "404 page not found: /foo\n".into()
        )
    );
    assert_eq!(
        plain_answer(http.post(format!("http://{probe_addr}/healthz"))).await,
        (
            405,
            TEXT.into(),
            "GET,HEAD".into(),
            "405 method not allowed: use GET\n".into()
        )
    );
    assert_eq!(
        plain_answer(http.get(format!("http://{probe_addr}/healthz")))
            .await
            .3,
        "ok"
    );
    stop.cancel();
    task.await.unwrap().unwrap();
    server.stop().await;
}

// ---------------------------------------------------------------------------
// Sidecar mode: the reconciler writes under the operator's user. Its writes
// name the field manager `metal3-dataimage` (options.fieldManager), the
// operator's controller-runtime Update names none; only the latter gets
// dataImage restored. Reviews derived from the captures: the API server
// sends `options.kind: UpdateOptions` for a replace, a merge patch and a
// server-side apply alike, with the writer's fieldManager, and no
// fieldManager (nor fieldValidation) for a client that sets none.

/// `file` as if `user` had sent it naming `field_manager`, with `edit`
/// applied to the new object.
fn review_as(
    file: &str,
    user: &str,
    field_manager: Option<&str>,
    edit: impl FnOnce(&mut serde_json::Value),
) -> (String, serde_json::Value) {
    let mut review: serde_json::Value = serde_json::from_str(&fixture(file)).unwrap();
    let request = &mut review["request"];
    request["userInfo"]["username"] = user.into();
    request["userInfo"]["groups"] = serde_json::json!([
        "system:serviceaccounts",
        "system:serviceaccounts:baremetal-operator-system",
        "system:authenticated"
    ]);
    let options = request["options"].as_object_mut().unwrap();
    assert_eq!(options["kind"], "UpdateOptions", "{file}");
    match field_manager {
        Some(manager) => {
            options.insert("fieldManager".into(), manager.into());
        }
        None => {
            options.remove("fieldManager");
            options.remove("fieldValidation");
        }
    }
    edit(&mut request["object"]);
    let old = request["oldObject"].clone();
    (review.to_string(), old)
}

#[tokio::test]
async fn operator_writes_get_data_image_back_and_the_sidecars_own_removals_are_honoured() {
    let operator = metal3_dataimage::rules::DEFAULT_OPERATOR_USER;
    let ours = metal3_dataimage::reconcile::record::FIELD_MANAGER;
    assert_eq!(ours, "metal3-dataimage");
    let server = start(|_, _, _| {}).await;
    let mutate = |body: String| {
        let client = server.client();
        let url = server.url(MUTATE);
        async move { post(&client, &url, &body).await.response() }
    };
    let drop_status = |object: &mut serde_json::Value| {
        object["status"]
            .as_object_mut()
            .unwrap()
            .remove("dataImage");
    };
    let drop_spec = |object: &mut serde_json::Value| {
        object["spec"].as_object_mut().unwrap().remove("dataImage");
    };
    const STATUS: &str = "extra-bmh-update-status-with-status-rule.mutate.json";
    const REPLACE: &str = "bmh-update-replace.mutate.json";

    // The operator's typed status Update (its Go types lack dataImage): restored.
    let (body, old) = review_as(STATUS, operator, None, drop_status);
    let response = mutate(body).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        patch_of(&response),
        Some(serde_json::json!([
            {"op": "add", "path": "/status/dataImage", "value": old["status"]["dataImage"]}
        ])),
        "{response}"
    );

    // The operator's whole-object Update of the main resource: spec.dataImage restored.
    let (body, old) = review_as(REPLACE, operator, None, drop_spec);
    let response = mutate(body).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(
        patch_of(&response),
        Some(serde_json::json!([
            {"op": "add", "path": "/spec/dataImage", "value": old["spec"]["dataImage"]}
        ])),
        "{response}"
    );

    // The sidecar clears status.dataImage after a removal (merge patch on
    // the status subresource, fieldManager metal3-dataimage) under the same
    // user: honoured, no patch.
    let (body, _) = review_as(STATUS, operator, Some(ours), drop_status);
    let response = mutate(body).await;
    assert_eq!(response["allowed"], true, "{response}");
    assert_eq!(patch_of(&response), None, "{response}");

    // Any write naming our manager is judged like anyone else's: a removal of
    // spec.dataImage stands, and defaulting still applies.
    let (body, _) = review_as(REPLACE, operator, Some(ours), drop_spec);
    let response = mutate(body).await;
    assert_eq!(patch_of(&response), None, "{response}");
    let (body, _) = review_as(REPLACE, operator, Some(ours), |object| {
        object["spec"]["dataImage"]
            .as_object_mut()
            .unwrap()
            .remove("disableCertificateVerification");
    });
    let response = mutate(body).await;
    assert_eq!(
        patch_of(&response),
        Some(serde_json::json!([
            {"op": "add", "path": "/spec/dataImage/disableCertificateVerification", "value": false}
        ])),
        "{response}"
    );

    // Only our name counts: the operator's user under another manager name
    // (e.g. a future field owner of its own) still gets the field back.
    let (body, _) = review_as(STATUS, operator, Some("manager"), drop_status);
    let response = mutate(body).await;
    assert!(patch_of(&response).is_some(), "{response}");

    // And for anyone else, with or without our manager name, removals stand.
    for manager in [None, Some(ours), Some("kubectl-patch")] {
        let (body, _) = review_as(STATUS, "admin", manager, drop_status);
        let response = mutate(body).await;
        assert_eq!(patch_of(&response), None, "{manager:?}: {response}");
    }
    server.stop().await;
}
