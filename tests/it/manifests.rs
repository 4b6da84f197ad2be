//! The deployable manifests, rendered with `kubectl kustomize` (no cluster
//! needed) and checked against the code: webhook paths, ports, names, RBAC,
//! certificates and the pod hardening the install docs promise.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::rbac;
use base64::Engine as _;
use metal3_dataimage::{admission, certs, reconcile, staging};
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
    render_prepared(overlay, |_| {})
}

/// [`render`], after `prepare` has edited the copy of `manifests/`.
fn render_prepared(overlay: &str, prepare: impl FnOnce(&Path)) -> Rendered {
    let workdir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("manifests"), &workdir.path().join("manifests"));
    prepare(&workdir.path().join("manifests"));
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
            BTreeSet::from([
                admission::VALIDATE_BMH_PATH,
                admission::MUTATE_BMH_PATH,
                admission::VALIDATE_DATAIMAGE_PATH,
            ]),
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
        Some(staging::args::DEFAULT_IMAGE_SERVER_LISTEN)
    );
    let probe_port = port_of(reconcile::DEFAULT_PROBE_LISTEN);
    let image_port = port_of(staging::args::DEFAULT_IMAGE_SERVER_LISTEN);
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
                .map(ToString::to_string)
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
        .map(ToString::to_string)
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
        std::sync::Arc::new(metal3_dataimage::admission::secrets::NoClusterAccess),
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

// ---------------------------------------------------------------------------
// The optional monitoring component (manifests/components/monitoring).

const MONITORING: &str = "manifests/components/monitoring";

/// `overlay` plus the monitoring component, rendered from a copy of
/// `manifests/` (an overlay of the overlay, as an operator would write it).
fn render_with_monitoring(overlay: &str) -> Rendered {
    let monitored = format!("{overlay}-with-monitoring-test");
    let rendered = render_prepared(&monitored, |manifests| {
        let dir = manifests.join("overlays").join(&monitored);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n\
                 resources:\n- ../{overlay}\ncomponents:\n- ../../components/monitoring\n"
            ),
        )
        .unwrap();
    });
    assert!(
        rendered.docs.len() > render(overlay).docs.len(),
        "{overlay}: the component adds nothing"
    );
    rendered
}

fn has_all_labels(labels: &Value, selector: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(key, value)| &labels[key] == value)
}

#[test]
fn monitoring_component_scrapes_both_probe_listeners() {
    for overlay in OVERLAYS {
        let plain = render(overlay);
        assert!(
            !plain.docs.iter().any(|doc| doc["apiVersion"]
                .as_str()
                .unwrap()
                .starts_with("monitoring.coreos.com")),
            "{overlay}: monitoring is optional, the overlay must not need its CRDs"
        );
        let rendered = render_with_monitoring(overlay);
        let docs = &rendered.docs;
        for (monitor, deployment) in [
            ("metal3-dataimage-webhook", "metal3-dataimage-webhook"),
            ("metal3-dataimage-reconciler", "metal3-dataimage-reconciler"),
        ] {
            let monitor = find(docs, "ServiceMonitor", monitor);
            assert_eq!(monitor["metadata"]["namespace"], certs::NAMESPACE);
            let selector = &monitor["spec"]["selector"]["matchLabels"];
            let services: Vec<&Value> = all(docs, "Service")
                .filter(|service| has_all_labels(&service["metadata"]["labels"], selector))
                .collect();
            assert_eq!(
                services.len(),
                1,
                "{overlay}: {selector} selects {services:?}"
            );
            let service = services[0];
            let endpoint = &monitor["spec"]["endpoints"][0];
            assert_eq!(endpoint["path"], "/metrics");
            assert_eq!(
                endpoint["scheme"], "http",
                "the probe listener is plain HTTP"
            );
            let port = service["spec"]["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|port| port["name"] == endpoint["port"])
                .unwrap_or_else(|| {
                    panic!("{overlay}: no port {} on the Service", endpoint["port"])
                });

            // The Service reaches the container's --probe-listen port, where /metrics is.
            let deployment = find(docs, "Deployment", deployment);
            let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
            assert!(has_all_labels(pod_labels, &service["spec"]["selector"]));
            let container = container(deployment);
            let listen = port_of(&arg_value(container, "probe-listen").unwrap());
            let container_port = container["ports"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["name"] == port["targetPort"])
                .unwrap_or_else(|| panic!("{overlay}: no container port {}", port["targetPort"]));
            assert_eq!(container_port["containerPort"], listen);
            assert_eq!(port["port"], listen);
        }

        let dashboard = find(docs, "ConfigMap", "metal3-dataimage-grafana-dashboard");
        assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
        assert_eq!(dashboard["metadata"]["namespace"], certs::NAMESPACE);
        let json: Value = serde_json::from_str(
            dashboard["data"]["metal3-dataimage-dashboard.json"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(json, dashboard_json());

        let rule = find(docs, "PrometheusRule", "metal3-dataimage");
        assert_eq!(rule["spec"], prometheus_rule()["spec"]);
    }
}

fn prometheus_rule() -> Value {
    let text =
        std::fs::read_to_string(repo().join(MONITORING).join("prometheusrule.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

fn dashboard_json() -> Value {
    let text = std::fs::read_to_string(
        repo()
            .join(MONITORING)
            .join("metal3-dataimage-dashboard.json"),
    )
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

fn alerts() -> Vec<Value> {
    prometheus_rule()["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap().clone())
        .collect()
}

/// GitHub's anchor for a Markdown heading.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// Where every runbook_url points (replace it where the docs are published).
const RUNBOOK_BASE: &str = "https://metal3-dataimage.example/docs/monitoring.md#";

#[test]
fn every_alert_has_a_summary_a_description_and_a_runbook_section() {
    let runbooks = std::fs::read_to_string(repo().join("docs/monitoring.md")).unwrap();
    let anchors: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|line| line.strip_prefix('#'))
        .map(|heading| anchor(heading.trim_start_matches('#')))
        .collect();
    let alerts = alerts();
    let names: BTreeSet<&str> = alerts
        .iter()
        .map(|a| a["alert"].as_str().unwrap())
        .collect();
    for expected in [
        "Metal3DataImageAttachFailing",
        "Metal3DataImageAttachStuck",
        "Metal3DataImageHostsWaiting",
        "Metal3DataImageReconcilerNoLeader",
        "Metal3DataImageIronicUnreachable",
        "Metal3DataImageWebhookErrors",
        "Metal3DataImageWebhookPanics",
        "Metal3DataImageWebhookSlow",
        "Metal3DataImageCertificateExpiring",
    ] {
        assert!(names.contains(expected), "no alert {expected}");
    }
    let tests = std::fs::read_to_string(repo().join(MONITORING).join("alerts.test.yaml")).unwrap();
    for alert in &alerts {
        let name = alert["alert"].as_str().unwrap();
        let annotations = &alert["annotations"];
        for key in ["summary", "description"] {
            assert!(
                annotations[key]
                    .as_str()
                    .is_some_and(|text| text.len() > 20),
                "{name}: no {key}"
            );
        }
        assert!(
            ["info", "warning", "critical"]
                .contains(&alert["labels"]["severity"].as_str().unwrap()),
            "{name}: severity"
        );
        let url = annotations["runbook_url"].as_str().unwrap();
        let section = url.strip_prefix(RUNBOOK_BASE).unwrap_or_else(|| {
            panic!("{name}: runbook_url {url} does not start with {RUNBOOK_BASE}")
        });
        assert_eq!(section, name.to_lowercase(), "{name}: runbook anchor");
        assert!(
            anchors.contains(section),
            "{name}: docs/monitoring.md has no section #{section}"
        );
        // Every alert is exercised by promtool, firing at least once.
        assert!(
            tests.contains(&format!(
                "alertname: {name}\n    exp_alerts:\n    - exp_labels"
            )),
            "{name}: alerts.test.yaml never sees it fire"
        );
    }
}

/// promtool from Debian's `prometheus` package (tests/run.sh installs it).
fn promtool(args: &[&str], dir: &Path) -> String {
    let output = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|err| {
            panic!(
                "running promtool: {err}. Install it (Debian: `apt-get install prometheus`; \
                 tests/run.sh does this) — this test does not skip"
            )
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[test]
fn promtool_checks_and_unit_tests_the_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let spec = serde_json::to_string_pretty(&prometheus_rule()["spec"]).unwrap();
    // JSON is YAML: promtool reads the PrometheusRule's spec as a rule file.
    std::fs::write(dir.path().join("rules.yaml"), spec).unwrap();
    std::fs::copy(
        repo().join(MONITORING).join("alerts.test.yaml"),
        dir.path().join("alerts.test.yaml"),
    )
    .unwrap();
    let checked = promtool(&["check", "rules", "rules.yaml"], dir.path());
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", alerts().len())),
        "{checked}"
    );
    let tested = promtool(&["test", "rules", "alerts.test.yaml"], dir.path());
    assert!(tested.contains("SUCCESS"), "{tested}");
}

/// Metric names a PromQL expression reads: identifiers outside strings,
/// label matchers, ranges and label lists, that are neither functions nor
/// keywords.
fn promql_metric_names(expr: &str) -> BTreeSet<String> {
    let mut cleaned = String::new();
    let (mut quote, mut braces, mut brackets) = (None, 0, 0);
    for c in expr.chars() {
        if let Some(open) = quote {
            if c == open {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '{' => braces += 1,
            '}' => braces -= 1,
            '[' => brackets += 1,
            ']' => brackets -= 1,
            _ if braces > 0 || brackets > 0 => {}
            _ => {
                cleaned.push(c);
                continue;
            }
        }
        cleaned.push(' ');
    }
    // Keywords, and aggregation operators (`sum by (x) (…)` puts no `(` right after `sum`).
    const KEYWORDS: [&str; 23] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "count",
        "group",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
    ];
    const LABEL_LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let chars: Vec<char> = cleaned.chars().collect();
    let mut names = BTreeSet::new();
    let mut i = 0;
    let mut skip_label_list = false;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() || c == '.' {
            // A number (or a number's exponent/suffix).
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            continue;
        }
        if !(c.is_ascii_alphabetic() || c == '_' || c == ':') {
            if c == '(' && skip_label_list {
                let close = chars[i..].iter().position(|&c| c == ')').unwrap() + i;
                i = close + 1;
                skip_label_list = false;
                continue;
            }
            if !c.is_whitespace() {
                skip_label_list = false;
            }
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len()
            && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
        {
            i += 1;
        }
        let word: String = chars[start..i].iter().collect();
        let next = chars[i..].iter().find(|c| !c.is_whitespace());
        if LABEL_LISTS.contains(&word.as_str()) {
            skip_label_list = true;
        } else if KEYWORDS.contains(&word.as_str()) || next == Some(&'(') {
            skip_label_list = false;
        } else {
            names.insert(word);
        }
    }
    names
}

/// Every query in the dashboard: panel targets and template variables
/// (`label_values(metric, label)` reads `metric`).
fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    let mut queries = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_string());
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            let query = variable["query"]["query"].as_str().unwrap();
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|rest| rest.split_once(','))
                .map(|(metric, _)| metric.to_string())
                .unwrap_or_else(|| query.to_string());
            queries.push(inner);
        }
    }
    queries
}

/// Series names a registry exposes, from its `# TYPE` lines (so families
/// without samples yet count too): counters as written (`…_total`),
/// histograms as `_bucket`, `_sum` and `_count`.
fn exported_series(registry: &prometheus_client::registry::Registry) -> BTreeSet<String> {
    let mut text = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry).unwrap();
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

/// The webhook's registry as `serve` builds it, with every labelled family
/// touched once (a family without samples is not encoded).
fn webhook_registry() -> prometheus_client::registry::Registry {
    use admission::metrics::{
        AdmissionLabels, CertificateLabels, WebhookCodeLabels, WebhookLabels,
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = admission::metrics::Metrics::register(&mut registry);
    let webhook = "/validate-metal3-io-v1alpha1-baremetalhost";
    metrics
        .requests
        .get_or_create(&WebhookCodeLabels { webhook, code: 200 })
        .inc();
    metrics
        .latency
        .get_or_create(&WebhookLabels { webhook })
        .observe(0.001);
    metrics
        .in_flight
        .get_or_create(&WebhookLabels { webhook })
        .set(0);
    metrics
        .admissions
        .get_or_create(&AdmissionLabels {
            webhook,
            operation: "CREATE",
            allowed: false,
        })
        .inc();
    let certificate = CertificateLabels {
        certificate: "serving",
    };
    metrics.certificate_reads.get_or_create(&certificate).inc();
    metrics
        .certificate_read_errors
        .get_or_create(&certificate)
        .inc();
    metrics
        .certificate_expiry
        .get_or_create(&certificate)
        .set(1);
    registry
}

/// The reconciler's registry as `reconcile` builds it, every labelled family touched.
fn reconciler_registry() -> prometheus_client::registry::Registry {
    use metal3_dataimage::ironic::ours::Op;
    use reconcile::metrics::{OperationLabels, RequestFailureLabels, ResultLabels};
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = reconcile::metrics::Metrics::default();
    metrics.register(&mut registry);
    metrics
        .reconciles
        .get_or_create(&ResultLabels { result: "ok" })
        .inc();
    metrics
        .attempts
        .get_or_create(&OperationLabels {
            operation: Op::Attach,
        })
        .inc();
    metrics.failure(Op::Attach, "locked");
    metrics.set_host_state(
        "ns/host",
        Some(metal3_dataimage::model::DataImageState::Error),
    );
    metrics
        .request_failures
        .get_or_create(&RequestFailureLabels {
            call: "get_node",
            kind: "unavailable",
        })
        .inc();
    registry
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let webhook_series = exported_series(&webhook_registry());
    let reconciler_series = exported_series(&reconciler_registry());
    // A family without samples is not encoded: every registered one must
    // have been touched below.
    for (source, series) in [
        ("src/admission/metrics.rs", &webhook_series),
        ("src/reconcile/metrics.rs", &reconciler_series),
    ] {
        let prefix = if source.contains("reconcile") {
            "metal3_dataimage_reconciler_"
        } else {
            ""
        };
        let text = std::fs::read_to_string(repo().join(source)).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap();
        let registered: Vec<&str> = code
            .split(".register(")
            .skip(1)
            .filter_map(|call| call.trim_start().strip_prefix('"'))
            .filter_map(|call| call.split('"').next())
            .collect();
        assert!(registered.len() >= 8, "{source}: {registered:?}");
        for name in registered {
            let name = format!("{prefix}{name}");
            assert!(
                series.iter().any(|s| s.starts_with(&name)),
                "{name} ({source}) is not encoded: touch it in webhook_registry/reconciler_registry"
            );
        }
    }
    for known in [
        "controller_runtime_webhook_requests_total",
        "controller_runtime_webhook_latency_seconds_bucket",
        "metal3_dataimage_certificate_expiry_timestamp_seconds",
    ] {
        assert!(
            webhook_series.contains(known),
            "{known}: {webhook_series:?}"
        );
    }
    assert!(
        reconciler_series.contains("metal3_dataimage_reconciler_hosts"),
        "{reconciler_series:?}"
    );

    let mut used: Vec<(String, String)> = Vec::new();
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap().to_string();
        for metric in promql_metric_names(alert["expr"].as_str().unwrap()) {
            used.push((metric, format!("alert {name}")));
        }
    }
    for query in dashboard_queries(&dashboard_json()) {
        for metric in promql_metric_names(&query) {
            used.push((metric, format!("dashboard query {query}")));
        }
    }
    let distinct: BTreeSet<&str> = used.iter().map(|(metric, _)| metric.as_str()).collect();
    assert!(
        distinct.len() >= 15,
        "the extraction finds too little: {distinct:?}"
    );
    let mut missing = Vec::new();
    for (metric, place) in &used {
        let exported = webhook_series.contains(metric) || reconciler_series.contains(metric);
        if !exported {
            missing.push(format!("{metric} (in {place})"));
        }
        // Webhook series are queried in webhook terms, reconciler ones in reconciler terms.
        assert!(
            !(metric.starts_with("metal3_dataimage_reconciler_")
                && webhook_series.contains(metric)),
            "{metric}"
        );
    }
    assert!(
        missing.is_empty(),
        "metrics neither registry exports:\n{}",
        missing.join("\n")
    );
}

#[test]
fn promql_metric_name_extraction() {
    assert_eq!(
        promql_metric_names(
            "histogram_quantile(0.99, sum by (namespace, webhook, le) \
             (rate(a_bucket{code=~\"5..\", x=\"y z\"}[5m]))) > 1 or absent(b) \
             * on (namespace, pod) group_left () (c == 1) - time() < 7 * 24 * 3600 \
             unless d offset 5m"
        ),
        ["a_bucket", "b", "c", "d"]
            .into_iter()
            .map(String::from)
            .collect()
    );
}

// ---------------------------------------------------------------------------
// The reconciler as a sidecar of the baremetal-operator
// (manifests/components/bmo-sidecar), rendered with the operator's own
// kustomize config (tests/fixtures/bmo-config: a copy of the operator's
// config/ at the commit its README names).

const BMO_NAMESPACE: &str = "baremetal-operator-system";
const BMO_DEPLOYMENT: &str = "baremetal-operator-controller-manager";
const BMO_SERVICE_ACCOUNT: &str = "baremetal-operator-controller-manager";
const SIDECAR: &str = "dataimage-reconciler";

/// Renders a kustomization with the operator's `config/default` as resource
/// and `components` (paths relative to a directory holding `bmo-config/` and
/// `manifests/`), as a user installs the operator.
fn render_bmo(components: &[&str]) -> Vec<Value> {
    let workdir = tempfile::tempdir().unwrap();
    copy_dir(
        &repo().join("tests/fixtures/bmo-config"),
        &workdir.path().join("bmo-config"),
    );
    copy_dir(&repo().join("manifests"), &workdir.path().join("manifests"));
    let dir = workdir.path().join("install");
    std::fs::create_dir(&dir).unwrap();
    let mut kustomization = String::from(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../bmo-config/default\n",
    );
    if !components.is_empty() {
        kustomization.push_str("components:\n");
        for component in components {
            kustomization.push_str(&format!("- ../{component}\n"));
        }
    }
    std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .expect("running `kubectl kustomize`");
    assert!(
        output.status.success(),
        "kubectl kustomize with {components:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_saphyr::from_str_multiple(&String::from_utf8(output.stdout).unwrap()).unwrap()
}

const WITH_AUTH_AND_TLS: [&str; 3] = [
    "bmo-config/components/basic-auth",
    "bmo-config/components/tls",
    "manifests/components/bmo-sidecar",
];

fn bmo_pod(docs: &[Value]) -> &Value {
    let deployment = find(docs, "Deployment", BMO_DEPLOYMENT);
    assert_eq!(deployment["metadata"]["namespace"], BMO_NAMESPACE);
    &deployment["spec"]["template"]["spec"]
}

fn named<'a>(list: &'a Value, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {list}"))
}

/// Every TCP port a container declares, probes or listens on.
fn ports_used(container: &Value) -> BTreeSet<u64> {
    let mut ports: BTreeSet<u64> = container["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|port| port["containerPort"].as_u64().unwrap())
        .collect();
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(port) = container[probe]["httpGet"]["port"].as_u64() {
            ports.insert(port);
        }
    }
    for flag in ["--probe-listen", "--image-server-listen"] {
        if let Some(listen) = arg(container, flag) {
            ports.insert(port_of(listen));
        }
    }
    ports
}

#[test]
fn bmo_sidecar_container_env_mounts_and_ports() {
    for components in [
        &WITH_AUTH_AND_TLS[..],
        &["manifests/components/bmo-sidecar"][..],
    ] {
        let docs = render_bmo(components);
        let pod = bmo_pod(&docs);
        let containers = pod["containers"].as_array().unwrap();
        let names: Vec<&str> = containers
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["manager", SIDECAR], "the operator stays first");
        let manager = &containers[0];
        let ours = &containers[1];
        assert_eq!(pod["serviceAccountName"], BMO_SERVICE_ACCOUNT);

        // The same envFrom: the operator's `ironic` ConfigMap.
        assert_eq!(ours["envFrom"], manager["envFrom"], "{components:?}");
        assert_eq!(
            ours["envFrom"],
            json!([{"configMapRef": {"name": "ironic"}}])
        );
        assert!(find(&docs, "ConfigMap", "ironic")["data"]["IRONIC_ENDPOINT"].is_string());
        // No Ironic setting of our own: everything falls back to the operator's.
        let env: Vec<&str> = ours["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|var| var["name"].as_str().unwrap())
            .collect();
        assert!(
            env.iter()
                .all(|name| !name.starts_with("METAL3_DATAIMAGE_IRONIC")),
            "{env:?}"
        );
        for name in ["POD_NAME", "POD_NAMESPACE", "POD_IP"] {
            assert!(env.contains(&name), "{name}");
        }
        assert!(
            strings(&ours["args"])
                .iter()
                .all(|a| !a.starts_with("--ironic"))
        );

        // The operator's credential and CA mounts, at the operator's paths,
        // from the same Secrets (with its basic-auth and tls components).
        let mounts = |container: &Value| -> Vec<(String, String)> {
            container["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|mount| {
                    let volume = named(&pod["volumes"], mount["name"].as_str().unwrap());
                    let secret = volume["secret"]["secretName"].as_str()?;
                    Some((
                        mount["mountPath"].as_str().unwrap().to_string(),
                        secret.to_string(),
                    ))
                })
                .collect()
        };
        let ours_mounts = mounts(ours);
        let auth_dir = format!("{}/ironic", reconcile::OPERATOR_AUTH_ROOT);
        let ca_dir = Path::new(reconcile::OPERATOR_CACERT_FILE)
            .parent()
            .unwrap()
            .display()
            .to_string();
        assert_eq!(
            ours_mounts,
            [
                (auth_dir.clone(), "ironic-credentials".to_string()),
                (ca_dir.clone(), "ironic-cacert".to_string())
            ]
        );
        if components.len() == 3 {
            for shared in mounts(manager)
                .into_iter()
                .filter(|(path, _)| path.starts_with("/opt/metal3"))
            {
                assert!(ours_mounts.contains(&shared), "{shared:?} not shared");
            }
            assert_eq!(mounts(manager).len(), 3, "auth, CA, webhook cert");
        }
        for mount in ours["volumeMounts"].as_array().unwrap() {
            let volume = named(&pod["volumes"], mount["name"].as_str().unwrap());
            if volume.get("secret").is_some() {
                assert_eq!(mount["readOnly"], true);
                assert_eq!(volume["secret"]["optional"], true, "{volume}");
            }
        }

        // Ports: ours are declared, probed and listened on; none clashes with
        // anything the operator uses (9440 probes, 9443 webhook, 8443 metrics).
        let probe = port_of(arg(ours, "--probe-listen").unwrap());
        let images = port_of(arg(ours, "--image-server-listen").unwrap());
        assert_eq!(ours["readinessProbe"]["httpGet"]["port"], probe);
        assert_eq!(ours["livenessProbe"]["httpGet"]["port"], probe);
        let declared: Vec<u64> = ours["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["containerPort"].as_u64().unwrap())
            .collect();
        assert_eq!(declared, [probe, images]);
        let image_url = named(&ours["env"], "METAL3_DATAIMAGE_IMAGE_SERVER_URL")["value"]
            .as_str()
            .unwrap();
        assert_eq!(port_of(image_url), images);
        let operator_ports = ports_used(manager);
        for port in [9440, 9443, 8443] {
            assert!(operator_ports.contains(&port), "{operator_ports:?}");
        }
        assert!(
            ports_used(ours).is_disjoint(&operator_ports),
            "{:?} vs {operator_ports:?}",
            ports_used(ours)
        );
        let port_names: Vec<&str> = containers
            .iter()
            .flat_map(|c| c["ports"].as_array().unwrap())
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        let unique: BTreeSet<&str> = port_names.iter().copied().collect();
        assert_eq!(unique.len(), port_names.len(), "{port_names:?}");
        assert!(port_names.iter().all(|n| n.len() <= 15), "{port_names:?}");

        // Our own Lease in the pod's namespace (docs/install.md says why).
        assert_eq!(
            arg(ours, "--leader-election-namespace"),
            Some("$(POD_NAMESPACE)")
        );
        assert_eq!(
            arg(ours, "--lease-name"),
            Some(reconcile::DEFAULT_LEASE_NAME)
        );
        assert!(strings(&manager["args"]).contains(&"--enable-leader-election"));

        // The command line parses, and the operator's ConfigMap alone gives
        // the Ironic settings (no credential files here: no auth, system CAs).
        use clap::Parser as _;
        let line = effective_command_line(&docs, ours);
        let cli = metal3_dataimage::cli::Cli::try_parse_from(&line)
            .unwrap_or_else(|err| panic!("{line:?}:\n{err}"));
        let metal3_dataimage::cli::Command::Reconcile(args) = cli.command else {
            panic!("{line:?} is not reconcile");
        };
        let data = find(&docs, "ConfigMap", "ironic")["data"].clone();
        let env = reconcile::OperatorEnv::from_lookup(|key| data[key].as_str().map(str::to_string));
        let resolved =
            reconcile::resolve_ironic_config(&args, &env, &|_| reconcile::FileState::Missing)
                .unwrap();
        assert_eq!(
            resolved.config.endpoint.as_str(),
            data["IRONIC_ENDPOINT"].as_str().unwrap()
        );
        assert_eq!(resolved.config.username, None);
    }
}

#[test]
fn bmo_sidecar_pod_passes_restricted_and_the_projects_hardening() {
    let docs = render_bmo(&WITH_AUTH_AND_TLS);
    let pod = bmo_pod(&docs);
    let pod_security = &pod["securityContext"];
    // PodSecurity `restricted` (v1.30 rules), for every container of the pod.
    for flag in ["hostNetwork", "hostPID", "hostIPC"] {
        assert_ne!(pod[flag], true, "{flag}");
    }
    for volume in pod["volumes"].as_array().unwrap() {
        let kind = volume
            .as_object()
            .unwrap()
            .keys()
            .find(|key| *key != "name")
            .unwrap()
            .as_str();
        assert!(
            [
                "configMap",
                "csi",
                "downwardAPI",
                "emptyDir",
                "ephemeral",
                "persistentVolumeClaim",
                "projected",
                "secret"
            ]
            .contains(&kind),
            "volume type {kind} is not allowed by restricted"
        );
    }
    for container in pod["containers"].as_array().unwrap() {
        let name = container["name"].as_str().unwrap();
        let security = &container["securityContext"];
        let effective = |key: &str| {
            if security[key].is_null() {
                pod_security[key].clone()
            } else {
                security[key].clone()
            }
        };
        assert_eq!(effective("runAsNonRoot"), true, "{name}");
        assert_ne!(effective("runAsUser"), 0, "{name}");
        assert!(
            ["RuntimeDefault", "Localhost"]
                .contains(&effective("seccompProfile")["type"].as_str().unwrap_or("")),
            "{name}"
        );
        assert_eq!(security["allowPrivilegeEscalation"], false, "{name}");
        assert_ne!(security["privileged"], true, "{name}");
        assert_eq!(security["capabilities"]["drop"], json!(["ALL"]), "{name}");
        for added in strings(&security["capabilities"]["add"]) {
            assert_eq!(added, "NET_BIND_SERVICE", "{name}");
        }
        for port in container["ports"].as_array().into_iter().flatten() {
            assert!(port.get("hostPort").is_none(), "{name}");
        }
    }
    // The project's own checks on its container (every_pod_is_hardened_and_has_resources).
    let ours = named(&pod["containers"], SIDECAR);
    let security = &ours["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"], 65532);
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert!(security["capabilities"].get("add").is_none());
    for (kind, resource) in [
        ("requests", "cpu"),
        ("requests", "memory"),
        ("limits", "memory"),
    ] {
        assert!(
            ours["resources"][kind][resource].is_string(),
            "{kind}.{resource}"
        );
    }
    // The image cache is the one writable path, bounded.
    let cache = named(&pod["volumes"], "dataimage-cache");
    assert!(cache["emptyDir"]["sizeLimit"].is_string());
    assert_eq!(
        arg(ours, "--image-cache-dir"),
        named(&ours["volumeMounts"], "dataimage-cache")["mountPath"].as_str()
    );
}

/// Without an API server `kubectl apply --dry-run=client` cannot run (it
/// needs discovery), so the Deployment is checked offline: it decodes into
/// the typed API object and encodes back to the same JSON (no unknown or
/// misspelt field, every value of the right type), and the pod's references
/// hold (mounted volumes exist, names unique).
#[test]
fn bmo_sidecar_deployment_is_a_valid_deployment() {
    let docs = render_bmo(&WITH_AUTH_AND_TLS);
    let deployment = find(&docs, "Deployment", BMO_DEPLOYMENT).clone();
    let typed: k8s_openapi::api::apps::v1::Deployment =
        serde_json::from_value(deployment.clone()).expect("a Deployment");
    assert_eq!(
        serde_json::to_value(&typed).unwrap(),
        deployment,
        "fields lost in the typed round trip"
    );
    let pod = typed.spec.unwrap().template.spec.unwrap();
    let volumes: BTreeSet<String> = pod
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    let mut container_names = BTreeSet::new();
    for container in &pod.containers {
        assert!(container_names.insert(container.name.clone()));
        let mut paths = BTreeSet::new();
        for mount in container.volume_mounts.iter().flatten() {
            assert!(
                volumes.contains(&mount.name),
                "{}: {}",
                container.name,
                mount.name
            );
            assert!(
                paths.insert(mount.mount_path.clone()),
                "{}",
                mount.mount_path
            );
        }
    }
}

#[test]
fn bmo_sidecar_rbac_is_what_the_reconciler_needs_minus_the_operators_role() {
    /// (group, resource, verb, resourceNames) granted to the operator's
    /// ServiceAccount, split into cluster-wide grants and the grants of
    /// Roles in the operator's namespace.
    fn grants(docs: &[Value]) -> (BTreeSet<Grant>, BTreeSet<Grant>, BTreeSet<String>) {
        let mut cluster = BTreeSet::new();
        let mut namespaced = BTreeSet::new();
        let mut bindings = BTreeSet::new();
        for binding in docs
            .iter()
            .filter(|doc| doc["kind"] == "ClusterRoleBinding" || doc["kind"] == "RoleBinding")
        {
            let bound = binding["subjects"].as_array().unwrap().iter().any(|s| {
                s["kind"] == "ServiceAccount"
                    && s["name"] == BMO_SERVICE_ACCOUNT
                    && s["namespace"] == BMO_NAMESPACE
            });
            if !bound {
                continue;
            }
            bindings.insert(binding["metadata"]["name"].as_str().unwrap().to_string());
            let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
            let role = find(
                docs,
                role_kind,
                binding["roleRef"]["name"].as_str().unwrap(),
            );
            let target = if role_kind == "Role" {
                assert_eq!(binding["metadata"]["namespace"], BMO_NAMESPACE);
                &mut namespaced
            } else {
                &mut cluster
            };
            for rule in role["rules"].as_array().unwrap() {
                let names: Vec<String> = strings(&rule["resourceNames"])
                    .into_iter()
                    .map(String::from)
                    .collect();
                for group in strings(&rule["apiGroups"]) {
                    for resource in strings(&rule["resources"]) {
                        for verb in strings(&rule["verbs"]) {
                            assert!(group != "*" && resource != "*" && verb != "*");
                            target.insert((
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
        (cluster, namespaced, bindings)
    }
    /// Whether `have` allows `need` (no resourceNames = every name).
    fn covers(have: &BTreeSet<Grant>, need: &Grant) -> bool {
        have.iter().any(|g| {
            (&g.0, &g.1, &g.2) == (&need.0, &need.1, &need.2)
                && (g.3.is_empty() || need.3.iter().all(|n| g.3.contains(n)))
        })
    }

    let operator_only = render_bmo(&WITH_AUTH_AND_TLS[..2]);
    let with_sidecar = render_bmo(&WITH_AUTH_AND_TLS);
    let (op_cluster, op_namespaced, op_bindings) = grants(&operator_only);
    assert!(!op_cluster.is_empty() && !op_namespaced.is_empty());

    // What the reconciler needs that the operator's roles do not give it.
    // Leases: our Lease lives in the pod's namespace (--leader-election-namespace=$(POD_NAMESPACE)).
    let needed = flatten(rbac::RECONCILER);
    let missing: BTreeSet<Grant> = needed
        .iter()
        .filter(|need| {
            let in_namespace = rbac::NAMESPACED_RESOURCES.contains(&need.1.as_str());
            !(covers(&op_cluster, need) || in_namespace && covers(&op_namespaced, need))
        })
        .cloned()
        .collect();

    // What the component adds: bindings that were not there before.
    let (all_cluster, all_namespaced, all_bindings) = grants(&with_sidecar);
    let added: Vec<&String> = all_bindings.difference(&op_bindings).collect();
    assert_eq!(added, ["metal3-dataimage-sidecar"]);
    let added_docs: Vec<Value> = with_sidecar
        .iter()
        .filter(|doc| doc["metadata"]["name"] == "metal3-dataimage-sidecar")
        .cloned()
        .collect();
    let (added_cluster, added_namespaced, _) = grants(&added_docs);
    assert!(added_namespaced.is_empty());
    assert_eq!(
        added_cluster, missing,
        "the component must grant exactly crate::rbac::RECONCILER minus the operator's roles"
    );
    // The operator's own roles are untouched, and now everything is covered.
    assert_eq!(all_namespaced, op_namespaced);
    for need in &needed {
        assert!(
            covers(&all_cluster, need) || covers(&all_namespaced, need),
            "{need:?}"
        );
    }
    // Today's difference, spelled out (fails if the operator's role changes).
    let names = |grants: &BTreeSet<Grant>| -> Vec<String> {
        grants
            .iter()
            .map(|g| format!("{}/{} {}", g.0, g.1, g.2))
            .collect()
    };
    assert_eq!(
        names(&missing),
        [
            "apiextensions.k8s.io/customresourcedefinitions get",
            "events.k8s.io/events create",
            "events.k8s.io/events patch"
        ]
    );
}

#[test]
fn bmo_sidecar_webhook_only_drops_the_separate_reconciler() {
    let workdir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("manifests"), &workdir.path().join("manifests"));
    let dir = workdir.path().join("webhook");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("kustomization.yaml"),
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n- ../manifests/overlays/cert-manager\ncomponents:\n- ../manifests/components/bmo-sidecar/webhook-only\n",
    )
    .unwrap();
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let docs: Vec<Value> =
        serde_saphyr::from_str_multiple(&String::from_utf8(output.stdout).unwrap()).unwrap();
    let full = render("cert-manager").docs;
    let ids = |docs: &[Value]| -> BTreeSet<String> {
        docs.iter()
            .map(|d| {
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                )
            })
            .collect()
    };
    let dropped: Vec<String> = ids(&full).difference(&ids(&docs)).cloned().collect();
    assert_eq!(
        dropped,
        [
            "ConfigMap/metal3-dataimage-reconciler",
            "Deployment/metal3-dataimage-reconciler",
            "PodDisruptionBudget/metal3-dataimage-reconciler"
        ]
    );
    find(&docs, "Deployment", "metal3-dataimage-webhook");
}
