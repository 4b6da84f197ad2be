//! The deployable manifests, rendered with `kubectl kustomize` (no cluster
//! needed) and checked against the code: webhook paths, ports, names, RBAC,
//! certificates and the pod hardening the install docs promise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use metal3_dataimage::{admission, certs, rbac, reconcile};
use serde_json::{Value, json};

const OVERLAYS: [&str; 4] = [
    "cert-manager",
    "cert-manager-without-match-conditions",
    "no-cert-manager",
    "no-cert-manager-without-match-conditions",
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// A rendered overlay: every document, plus the CA the caBundle must carry
/// when the overlay uses `metal3-dataimage certs` output.
struct Rendered {
    docs: Vec<Value>,
    ca_pem: Option<String>,
    _workdir: tempfile::TempDir,
}

/// Render an overlay from a copy of `manifests/` next to a `certs/` directory
/// written by the real `certs` subcommand (what an operator does).
fn render(overlay: &str) -> Rendered {
    let workdir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("manifests"), &workdir.path().join("manifests"));
    let certs_dir = workdir.path().join("certs");
    let status = Command::new(env!("CARGO_BIN_EXE_metal3-dataimage"))
        .args([
            "certs",
            "--service",
            certs::WEBHOOK_SERVICE,
            "--namespace",
            certs::NAMESPACE,
            "--out",
        ])
        .arg(&certs_dir)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "metal3-dataimage certs failed");
    let ca_pem = overlay
        .starts_with("no-cert-manager")
        .then(|| std::fs::read_to_string(certs_dir.join("ca.crt")).unwrap());

    let dir = workdir.path().join("manifests/overlays").join(overlay);
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("running `kubectl kustomize` (kubectl must be installed; no cluster is needed)");
    assert!(
        output.status.success(),
        "kubectl kustomize manifests/overlays/{overlay} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_str_multiple(&text).unwrap();
    assert!(
        docs.len() > 10,
        "{overlay}: rendered only {} documents",
        docs.len()
    );
    Rendered {
        docs,
        ca_pem,
        _workdir: workdir,
    }
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|doc| doc["kind"] == kind && doc["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered manifests"))
}

fn all<'a>(docs: &'a [Value], kind: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    docs.iter().filter(move |doc| doc["kind"] == kind)
}

fn port_of(listen: &str) -> u64 {
    listen.rsplit_once(':').unwrap().1.parse().unwrap()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

fn container(deployment: &Value) -> &Value {
    let containers = deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(containers.len(), 1);
    &containers[0]
}

fn arg_value(container: &Value, long: &str) -> Option<String> {
    arg(container, &format!("--{long}")).map(String::from)
}

fn arg<'a>(container: &'a Value, flag: &str) -> Option<&'a str> {
    strings(&container["args"])
        .into_iter()
        .find_map(|arg| arg.strip_prefix(&format!("{flag}=")))
}

#[test]
fn every_overlay_renders_and_webhooks_match_the_server() {
    for overlay in OVERLAYS {
        let rendered = render(overlay);
        let docs = &rendered.docs;
        let validating = find(
            docs,
            "ValidatingWebhookConfiguration",
            certs::VALIDATING_WEBHOOK_CONFIGURATION,
        );
        let mutating = find(
            docs,
            "MutatingWebhookConfiguration",
            certs::MUTATING_WEBHOOK_CONFIGURATION,
        );
        let validating_hooks = validating["webhooks"].as_array().unwrap();
        let mutating_hooks = mutating["webhooks"].as_array().unwrap();
        let names = |hooks: &[Value]| {
            hooks
                .iter()
                .map(|hook| hook["name"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(validating_hooks),
            certs::VALIDATING_WEBHOOKS,
            "the caBundle patch addresses webhooks by index"
        );
        assert_eq!(names(mutating_hooks), certs::MUTATING_WEBHOOKS);

        // Every path the server serves is called, and nothing else.
        let paths: BTreeSet<&str> = validating_hooks
            .iter()
            .chain(mutating_hooks)
            .map(|hook| hook["clientConfig"]["service"]["path"].as_str().unwrap())
            .collect();
        assert_eq!(
            paths,
            admission::WEBHOOK_PATHS
                .into_iter()
                .collect::<BTreeSet<_>>(),
            "{overlay}"
        );
        assert_eq!(
            mutating_hooks[0]["clientConfig"]["service"]["path"],
            admission::MUTATE_BMH_PATH
        );
        assert_eq!(
            validating_hooks[0]["clientConfig"]["service"]["path"],
            admission::VALIDATE_BMH_PATH
        );
        assert_eq!(
            validating_hooks[1]["clientConfig"]["service"]["path"],
            admission::VALIDATE_DATAIMAGE_PATH
        );

        let with_conditions = !overlay.ends_with("without-match-conditions");
        for hook in validating_hooks.iter().chain(mutating_hooks) {
            let service = &hook["clientConfig"]["service"];
            assert_eq!(service["name"], certs::WEBHOOK_SERVICE);
            assert_eq!(service["namespace"], certs::NAMESPACE);
            assert_eq!(service["port"], 443);
            assert_eq!(hook["admissionReviewVersions"], json!(["v1", "v1beta1"]));
            assert_eq!(hook["sideEffects"], "None");
            assert_eq!(hook["failurePolicy"], "Fail");
            assert_eq!(hook["matchPolicy"], "Equivalent");
            let timeout = hook["timeoutSeconds"].as_u64().unwrap();
            assert!((1..=10).contains(&timeout), "timeoutSeconds {timeout}");
            let rules = hook["rules"].as_array().unwrap();
            assert_eq!(rules.len(), 1);
            assert_eq!(rules[0]["apiGroups"], json!(["metal3.io"]));
            assert_eq!(rules[0]["apiVersions"], json!(["v1alpha1"]));
            assert_eq!(rules[0]["operations"], json!(["CREATE", "UPDATE"]));
            let is_bmh =
                hook["clientConfig"]["service"]["path"] != admission::VALIDATE_DATAIMAGE_PATH;
            if is_bmh {
                assert_eq!(
                    hook["matchConditions"].is_array(),
                    with_conditions,
                    "{overlay}: matchConditions"
                );
            } else {
                assert!(hook.get("matchConditions").is_none());
                assert_eq!(rules[0]["resources"], json!(["dataimages"]));
            }
        }
        assert_eq!(
            validating_hooks[0]["rules"][0]["resources"],
            json!(["baremetalhosts"])
        );
        assert_eq!(
            mutating_hooks[0]["rules"][0]["resources"],
            json!(["baremetalhosts", "baremetalhosts/status"])
        );
        assert_eq!(mutating_hooks[0]["reinvocationPolicy"], "IfNeeded");
        assert!(
            validating_hooks
                .iter()
                .all(|hook| hook.get("reinvocationPolicy").is_none())
        );
        if with_conditions {
            let mutate_condition = mutating_hooks[0]["matchConditions"][0]["expression"]
                .as_str()
                .unwrap();
            for needle in [
                "object.spec.dataImage",
                "oldObject.spec.dataImage",
                "object.status.dataImage",
                "oldObject.status.dataImage",
                "request.subResource == 'status'",
            ] {
                assert!(
                    mutate_condition.contains(needle),
                    "mutating matchCondition lacks {needle}"
                );
            }
            let validate_condition = validating_hooks[0]["matchConditions"][0]["expression"]
                .as_str()
                .unwrap();
            assert!(validate_condition.contains("has(object.spec.dataImage)"));
        }

        // Certificates: caBundle from `certs`, or cert-manager's injection.
        match &rendered.ca_pem {
            Some(ca_pem) => {
                let expected = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
                for hook in validating_hooks.iter().chain(mutating_hooks) {
                    assert_eq!(
                        hook["clientConfig"]["caBundle"].as_str(),
                        Some(expected.as_str()),
                        "{overlay}: {}",
                        hook["name"]
                    );
                }
                let secret = find(docs, "Secret", certs::WEBHOOK_CERT_SECRET);
                assert_eq!(secret["metadata"]["namespace"], certs::NAMESPACE);
                assert_eq!(secret["type"], "kubernetes.io/tls");
                for key in ["tls.crt", "tls.key", "ca.crt"] {
                    assert!(secret["data"][key].is_string(), "Secret lacks {key}");
                }
                assert_eq!(all(docs, "Certificate").count(), 0);
            }
            None => {
                let inject = format!("{}/{}", certs::NAMESPACE, certs::WEBHOOK_CERT_SECRET);
                for configuration in [validating, mutating] {
                    assert_eq!(
                        configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
                        inject.as_str()
                    );
                }
                let certificate = find(docs, "Certificate", certs::WEBHOOK_CERT_SECRET);
                assert_eq!(certificate["metadata"]["namespace"], certs::NAMESPACE);
                assert_eq!(
                    certificate["spec"]["secretName"],
                    certs::WEBHOOK_CERT_SECRET
                );
                let dns_names: Vec<String> = strings(&certificate["spec"]["dnsNames"])
                    .into_iter()
                    .map(String::from)
                    .collect();
                assert_eq!(
                    dns_names,
                    certs::service_dns_names(certs::WEBHOOK_SERVICE, certs::NAMESPACE)
                );
                let issuer = certificate["spec"]["issuerRef"]["name"].as_str().unwrap();
                let issuer = find(docs, "Issuer", issuer);
                let ca_secret = issuer["spec"]["ca"]["secretName"]
                    .as_str()
                    .expect("served by a CA issuer");
                let ca = all(docs, "Certificate")
                    .find(|cert| cert["spec"]["secretName"] == ca_secret)
                    .unwrap();
                assert_eq!(ca["spec"]["isCA"], true);
                assert!(
                    all(docs, "Secret").next().is_none(),
                    "cert-manager writes the Secret"
                );
            }
        }
    }
}

#[test]
fn webhook_workload_ports_probes_and_certificates() {
    let docs = render("cert-manager").docs;
    let service = find(&docs, "Service", certs::WEBHOOK_SERVICE);
    assert_eq!(service["metadata"]["namespace"], certs::NAMESPACE);
    let ports = service["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["port"], 443);
    assert_eq!(
        ports[0]["targetPort"].as_u64(),
        Some(port_of(admission::DEFAULT_LISTEN))
    );

    let deployment = find(&docs, "Deployment", "metal3-dataimage-webhook");
    let pod = &deployment["spec"]["template"];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(
            &pod["metadata"]["labels"][key], value,
            "Service selects the webhook pods"
        );
    }
    let webhook = container(deployment);
    assert_eq!(strings(&webhook["args"])[0], "serve");
    assert_eq!(arg(webhook, "--listen"), Some(admission::DEFAULT_LISTEN));
    assert_eq!(
        arg(webhook, "--operator-user"),
        Some(metal3_dataimage::rules::DEFAULT_OPERATOR_USER)
    );
    assert_eq!(
        arg(webhook, "--probe-listen"),
        Some(admission::DEFAULT_PROBE_LISTEN)
    );
    let container_ports: BTreeSet<u64> = webhook["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|port| port["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(
        container_ports,
        BTreeSet::from([
            port_of(admission::DEFAULT_LISTEN),
            port_of(admission::DEFAULT_PROBE_LISTEN)
        ])
    );
    assert_eq!(webhook["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(webhook["livenessProbe"]["httpGet"]["path"], "/healthz");
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            webhook[probe]["httpGet"]["port"].as_u64(),
            Some(port_of(admission::DEFAULT_PROBE_LISTEN))
        );
    }

    // The serving Secret is mounted where the TLS flags point.
    let mount = webhook["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| mount["name"] == "tls")
        .unwrap();
    assert_eq!(mount["mountPath"], "/etc/metal3-dataimage/tls");
    assert_eq!(mount["readOnly"], true);
    assert_eq!(
        arg(webhook, "--tls-cert-file"),
        Some("/etc/metal3-dataimage/tls/tls.crt")
    );
    assert_eq!(
        arg(webhook, "--tls-key-file"),
        Some("/etc/metal3-dataimage/tls/tls.key")
    );
    let volume = pod["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == "tls")
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], certs::WEBHOOK_CERT_SECRET);

    // Graceful shutdown fits in the grace period (defaults of the serve flags).
    let serve_default = |flag: &str| -> u64 {
        use clap::CommandFactory as _;
        let cli = metal3_dataimage::cli::Cli::command();
        let serve = cli.find_subcommand("serve").unwrap();
        let arg = serve
            .get_arguments()
            .find(|arg| arg.get_long() == Some(flag))
            .unwrap();
        let text = arg_value(webhook, flag)
            .unwrap_or_else(|| arg.get_default_values()[0].to_str().unwrap().to_string());
        let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap());
        number.parse::<u64>().unwrap()
            * if unit == "m" {
                60
            } else {
                assert_eq!(unit, "s");
                1
            }
    };
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(
        grace > serve_default("shutdown-delay") + serve_default("drain-timeout"),
        "terminationGracePeriodSeconds {grace} too short"
    );

    // Availability: 2+ replicas, surge before stopping, PDB, spread over nodes.
    assert!(deployment["spec"]["replicas"].as_u64().unwrap() >= 2);
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
        0
    );
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"],
        1
    );
    let anti = &pod["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        [0];
    assert_eq!(
        anti["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        anti["podAffinityTerm"]["labelSelector"]["matchLabels"],
        pod["metadata"]["labels"]
    );
    let pdb = find(&docs, "PodDisruptionBudget", "metal3-dataimage-webhook");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        pod["metadata"]["labels"]
    );
    assert_eq!(pdb["spec"]["minAvailable"], 1);
}

#[test]
fn reconciler_workload_ports_cache_and_pod_ip() {
    let docs = render("cert-manager").docs;
    let deployment = find(&docs, "Deployment", "metal3-dataimage-reconciler");
    let pod = &deployment["spec"]["template"]["spec"];
    let reconciler = container(deployment);
    assert_eq!(strings(&reconciler["args"])[0], "reconcile");
    assert_eq!(
        arg(reconciler, "--probe-listen"),
        Some(reconcile::DEFAULT_PROBE_LISTEN)
    );
    assert_eq!(
        arg(reconciler, "--image-server-listen"),
        Some(reconcile::DEFAULT_IMAGE_SERVER_LISTEN)
    );
    let probe_port = port_of(reconcile::DEFAULT_PROBE_LISTEN);
    let image_port = port_of(reconcile::DEFAULT_IMAGE_SERVER_LISTEN);
    // Not the baremetal-operator's ports: the reconciler may also run as its sidecar.
    for port in [probe_port, image_port] {
        assert!(
            ![9440, 9443].contains(&port),
            "reconciler port {port} collides with the operator's"
        );
    }
    let container_ports: BTreeSet<u64> = reconciler["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|port| port["containerPort"].as_u64().unwrap())
        .collect();
    assert_eq!(container_ports, BTreeSet::from([probe_port, image_port]));
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            reconciler[probe]["httpGet"]["port"].as_u64(),
            Some(probe_port)
        );
    }
    assert!(
        deployment["spec"]["replicas"].as_u64().unwrap() >= 2,
        "leader election makes 2 replicas safe"
    );
    assert_eq!(
        arg(reconciler, "--leader-election-namespace"),
        Some("$(POD_NAMESPACE)")
    );

    // Image cache: a size-limited emptyDir at the cache dir (the root fs stays read-only).
    let cache_dir = arg(reconciler, "--image-cache-dir").unwrap();
    let mount = reconciler["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|mount| mount["mountPath"] == cache_dir)
        .unwrap();
    assert_ne!(mount["readOnly"], true);
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|volume| volume["name"] == mount["name"])
        .unwrap();
    assert!(
        volume["emptyDir"]["sizeLimit"].is_string(),
        "the cache volume must be size-limited"
    );

    // The image server URL is built from the pod IP (downward API).
    let env = reconciler["env"].as_array().unwrap();
    let pod_ip = env.iter().find(|var| var["name"] == "POD_IP").unwrap();
    assert_eq!(pod_ip["valueFrom"]["fieldRef"]["fieldPath"], "status.podIP");
    let url = env
        .iter()
        .find(|var| var["name"] == "METAL3_DATAIMAGE_IMAGE_SERVER_URL")
        .unwrap();
    assert_eq!(url["value"], format!("http://$(POD_IP):{image_port}"));
    let pod_ip_index = env.iter().position(|var| var["name"] == "POD_IP").unwrap();
    let url_index = env
        .iter()
        .position(|var| var["name"] == "METAL3_DATAIMAGE_IMAGE_SERVER_URL")
        .unwrap();
    assert!(
        pod_ip_index < url_index,
        "$(POD_IP) expands only when defined earlier"
    );

    // Ironic settings come from the ConfigMap as METAL3_DATAIMAGE_* variables.
    let config_name = reconciler["envFrom"][0]["configMapRef"]["name"]
        .as_str()
        .unwrap();
    let config = find(&docs, "ConfigMap", config_name);
    assert!(config["data"]["METAL3_DATAIMAGE_IRONIC_URL"].is_string());
    for key in config["data"].as_object().unwrap().keys() {
        assert!(
            key.starts_with("METAL3_DATAIMAGE_"),
            "{key} is not a reconcile flag variable"
        );
    }
    let pdb = find(&docs, "PodDisruptionBudget", "metal3-dataimage-reconciler");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["template"]["metadata"]["labels"]
    );
}

#[test]
fn every_pod_is_hardened_and_has_resources() {
    let docs = render("cert-manager").docs;
    let deployments: Vec<&Value> = all(&docs, "Deployment").collect();
    assert_eq!(deployments.len(), 2);
    for deployment in deployments {
        let name = deployment["metadata"]["name"].as_str().unwrap();
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{name}");
        assert_eq!(pod["securityContext"]["runAsUser"], 65532, "{name}");
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        assert_eq!(
            pod["serviceAccountName"], name,
            "{name}: own ServiceAccount"
        );
        find(&docs, "ServiceAccount", name);
        assert!(
            pod.get("hostNetwork").is_none() && pod.get("hostPID").is_none(),
            "{name}"
        );
        let security = &container(deployment)["securityContext"];
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_eq!(security["readOnlyRootFilesystem"], true, "{name}");
        assert_eq!(security["runAsNonRoot"], true, "{name}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
        assert!(security["capabilities"].get("add").is_none(), "{name}");
        assert_eq!(
            security["seccompProfile"]["type"], "RuntimeDefault",
            "{name}"
        );
        let resources = &container(deployment)["resources"];
        for (kind, resource) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "memory"),
        ] {
            assert!(
                resources[kind][resource].is_string(),
                "{name}: {kind}.{resource}"
            );
        }
        for mount in container(deployment)["volumeMounts"].as_array().unwrap() {
            let volume = pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|volume| volume["name"] == mount["name"])
                .unwrap();
            if volume.get("secret").is_some() {
                assert_eq!(
                    mount["readOnly"], true,
                    "{name}: Secret volumes are read-only"
                );
            }
        }
    }
    let namespace = find(&docs, "Namespace", certs::NAMESPACE);
    assert_eq!(
        namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
}

/// (group, resource, verb, resourceNames) grants, flattened.
type Grant = (String, String, String, Vec<String>);

fn flatten(accesses: &[rbac::ApiAccess]) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for access in accesses {
        for verb in access.verbs {
            let names = access
                .resource_names
                .iter()
                .map(|name| name.to_string())
                .collect();
            grants.insert((
                access.group.to_string(),
                access.resource.to_string(),
                verb.to_string(),
                names,
            ));
        }
    }
    grants
}

/// Everything granted to a ServiceAccount through (Cluster)RoleBindings, and
/// the resources granted only through namespaced Roles.
fn granted_to(docs: &[Value], service_account: &str) -> (BTreeSet<Grant>, BTreeSet<String>) {
    let mut grants = BTreeSet::new();
    let mut namespaced = BTreeSet::new();
    for binding in docs
        .iter()
        .filter(|doc| doc["kind"] == "ClusterRoleBinding" || doc["kind"] == "RoleBinding")
    {
        let bound = binding["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .any(|subject| {
                subject["kind"] == "ServiceAccount"
                    && subject["name"] == service_account
                    && subject["namespace"] == certs::NAMESPACE
            });
        if !bound {
            continue;
        }
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
        let role = find(
            docs,
            role_kind,
            binding["roleRef"]["name"].as_str().unwrap(),
        );
        if role_kind == "Role" {
            assert_eq!(role["metadata"]["namespace"], certs::NAMESPACE);
            assert_eq!(binding["metadata"]["namespace"], certs::NAMESPACE);
        }
        for rule in role["rules"].as_array().unwrap() {
            let names: Vec<String> = strings(&rule["resourceNames"])
                .into_iter()
                .map(String::from)
                .collect();
            for group in strings(&rule["apiGroups"]) {
                for resource in strings(&rule["resources"]) {
                    assert_ne!(resource, "*", "no wildcards");
                    if role_kind == "Role" {
                        namespaced.insert(resource.to_string());
                    }
                    for verb in strings(&rule["verbs"]) {
                        assert_ne!(verb, "*", "no wildcards");
                        grants.insert((
                            group.to_string(),
                            resource.to_string(),
                            verb.to_string(),
                            names.clone(),
                        ));
                    }
                }
            }
        }
    }
    (grants, namespaced)
}

#[test]
fn rbac_grants_exactly_what_the_code_calls() {
    let docs = render("cert-manager").docs;
    let (webhook, webhook_namespaced) = granted_to(&docs, "metal3-dataimage-webhook");
    assert_eq!(
        webhook,
        flatten(rbac::WEBHOOK),
        "webhook RBAC differs from crate::rbac::WEBHOOK"
    );
    assert!(webhook_namespaced.is_empty());
    let (reconciler, reconciler_namespaced) = granted_to(&docs, "metal3-dataimage-reconciler");
    assert_eq!(
        reconciler,
        flatten(rbac::RECONCILER),
        "reconciler RBAC differs from crate::rbac::RECONCILER"
    );
    let expected_namespaced: BTreeSet<String> = rbac::NAMESPACED_RESOURCES
        .iter()
        .map(|name| name.to_string())
        .collect();
    assert_eq!(
        reconciler_namespaced, expected_namespaced,
        "leases only in the reconciler's own namespace"
    );

    // What the issue requires the reconciler to be able to do.
    for (group, resource, verb) in [
        ("", "secrets", "get"),
        ("metal3.io", "baremetalhosts", "patch"),
        ("metal3.io", "baremetalhosts/status", "patch"),
        ("events.k8s.io", "events", "create"),
        ("coordination.k8s.io", "leases", "patch"),
    ] {
        assert!(reconciler.iter().any(|grant| (
            grant.0.as_str(),
            grant.1.as_str(),
            grant.2.as_str()
        ) == (group, resource, verb)));
    }
    // Secrets: get only, for both.
    for grant in webhook.iter().chain(&reconciler) {
        if grant.1 == "secrets" {
            assert_eq!(grant.2, "get");
        }
    }
}

#[test]
fn uninstall_job_runs_cleanup_as_the_reconciler_hardened() {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("manifests/uninstall"))
        .output()
        .expect("running `kubectl kustomize` (kubectl must be installed; no cluster is needed)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let docs: Vec<Value> =
        serde_saphyr::from_str_multiple(&String::from_utf8(output.stdout).unwrap()).unwrap();
    assert_eq!(docs.len(), 1);
    let job = find(&docs, "Job", "metal3-dataimage-cleanup");
    assert_eq!(job["metadata"]["namespace"], certs::NAMESPACE);
    let pod = &job["spec"]["template"]["spec"];
    assert_eq!(
        pod["serviceAccountName"], "metal3-dataimage-reconciler",
        "cleanup patches hosts: the reconciler's RBAC"
    );
    assert_eq!(pod["restartPolicy"], "Never");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let containers = pod["containers"].as_array().unwrap();
    assert_eq!(strings(&containers[0]["args"])[0], "cleanup");
    let security = &containers[0]["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"], json!(["ALL"]));
}

/// Command line the container would run: its args, plus every
/// METAL3_DATAIMAGE_* variable (container env and envFrom ConfigMaps) turned
/// into the flag that reads it, with the kubelet's `$(VAR)` expansion done.
fn effective_command_line(docs: &[Value], container: &Value) -> Vec<String> {
    use clap::CommandFactory as _;
    let args = strings(&container["args"]);
    let subcommand_name = args[0];
    let cli = metal3_dataimage::cli::Cli::command();
    let subcommand = cli
        .find_subcommand(subcommand_name)
        .unwrap_or_else(|| panic!("unknown subcommand {subcommand_name}"));

    let mut variables: Vec<(String, String)> = vec![
        ("POD_IP".into(), "10.0.0.7".into()),
        ("POD_NAMESPACE".into(), certs::NAMESPACE.into()),
    ];
    for source in container["envFrom"].as_array().into_iter().flatten() {
        let name = source["configMapRef"]["name"]
            .as_str()
            .expect("only ConfigMaps feed env");
        for (key, value) in find(docs, "ConfigMap", name)["data"].as_object().unwrap() {
            variables.push((key.clone(), value.as_str().unwrap().to_string()));
        }
    }
    for var in container["env"].as_array().into_iter().flatten() {
        if let Some(value) = var["value"].as_str() {
            variables.push((var["name"].as_str().unwrap().to_string(), value.to_string()));
        }
    }
    let expand = |text: &str, variables: &[(String, String)]| {
        variables
            .iter()
            .fold(text.to_string(), |text, (name, value)| {
                text.replace(&format!("$({name})"), value)
            })
    };

    let mut line = vec!["metal3-dataimage".to_string()];
    line.extend(args.iter().map(|arg| expand(arg, &variables)));
    for (name, value) in &variables {
        if !name.starts_with("METAL3_DATAIMAGE_") {
            continue;
        }
        let arg = subcommand
            .get_arguments()
            .find(|arg| arg.get_env().is_some_and(|env| env == name.as_str()))
            .unwrap_or_else(|| panic!("{name} is not read by `{subcommand_name}`"));
        let long = arg.get_long().unwrap();
        if arg.get_action().takes_values() {
            line.push(format!("--{long}={}", expand(value, &variables)));
        } else if value == "true" {
            line.push(format!("--{long}"));
        }
    }
    line
}

#[test]
fn container_args_and_environment_are_accepted_by_the_cli() {
    use clap::Parser as _;
    let mut docs = render("cert-manager").docs;
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(repo().join("manifests/uninstall"))
        .output()
        .unwrap();
    docs.extend(
        serde_saphyr::from_str_multiple::<Value, Vec<Value>>(
            &String::from_utf8(output.stdout).unwrap(),
        )
        .unwrap(),
    );
    let mut checked = 0;
    for workload in docs
        .iter()
        .filter(|doc| doc["kind"] == "Deployment" || doc["kind"] == "Job")
    {
        let container = &workload["spec"]["template"]["spec"]["containers"][0];
        let line = effective_command_line(&docs, container);
        // Parsing with --help validates every flag and value, without running anything.
        let err =
            metal3_dataimage::cli::Cli::try_parse_from(line.iter().chain([&"--help".to_string()]))
                .unwrap_err();
        assert_eq!(
            err.kind(),
            clap::error::ErrorKind::DisplayHelp,
            "{}: {line:?} is rejected:\n{err}",
            workload["metadata"]["name"]
        );
        // And without --help the whole command line parses (required flags present).
        metal3_dataimage::cli::Cli::try_parse_from(&line)
            .unwrap_or_else(|err| panic!("{}: {line:?}:\n{err}", workload["metadata"]["name"]));
        checked += 1;
    }
    assert_eq!(checked, 3, "webhook, reconciler and cleanup");
}

/// Send a recorded AdmissionReview to the server's router at `path`.
async fn post_review(path: &str, fixture: &str) -> (u16, Value) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let state = metal3_dataimage::admission::handler::AppState::new(
        metal3_dataimage::rules::Policy::default(),
        std::sync::Arc::new(metal3_dataimage::admission::secrets::NoClusterAccess {
            reason: "test".into(),
        }),
        std::time::Duration::from_secs(1),
        metal3_dataimage::admission::metrics::Metrics::register(
            &mut prometheus_client::registry::Registry::default(),
        ),
    );
    let body = std::fs::read_to_string(
        repo()
            .join("tests/fixtures/admission-reviews")
            .join(fixture),
    )
    .unwrap();
    let request = axum::http::Request::post(format!("{path}?timeout=5s"))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap();
    let response = metal3_dataimage::admission::handler::router(state)
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test]
async fn configured_paths_reach_the_right_handlers_in_the_server() {
    let docs = render("cert-manager").docs;
    let hooks = |kind: &str, name: &str| {
        find(&docs, kind, name)["webhooks"]
            .as_array()
            .unwrap()
            .clone()
    };
    let validating = hooks(
        "ValidatingWebhookConfiguration",
        certs::VALIDATING_WEBHOOK_CONFIGURATION,
    );
    let mutating = hooks(
        "MutatingWebhookConfiguration",
        certs::MUTATING_WEBHOOK_CONFIGURATION,
    );
    let path = |hook: &Value| {
        hook["clientConfig"]["service"]["path"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // The mutating configuration's path defaults disableCertificateVerification (a patch).
    let (status, review) = post_review(
        &path(&mutating[0]),
        "bmh-create-dataimage-http-no-creds.mutate.json",
    )
    .await;
    assert_eq!(status, 200, "{review}");
    assert_eq!(
        review["response"]["patchType"], "JSONPatch",
        "mutating config must reach the mutating handler: {review}"
    );

    // The validating configuration's paths answer without patches.
    for (hook, fixture) in validating.iter().zip([
        "bmh-create-dataimage-http-no-creds.json",
        "dataimage-create.json",
    ]) {
        let (status, review) = post_review(&path(hook), fixture).await;
        assert_eq!(status, 200, "{}: {review}", path(hook));
        assert!(review["response"]["uid"].is_string(), "{review}");
        assert!(review["response"]["allowed"].is_boolean(), "{review}");
        assert!(
            review["response"].get("patch").is_none(),
            "validating {} answered with a patch",
            path(hook)
        );
    }
}
