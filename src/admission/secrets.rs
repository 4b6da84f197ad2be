//! Looking up the Secret a host references: `credentialsName` (rule 9) or
//! `contentFrom.secretName` (rule 16).
//!
//! Targeted `get`s of the one Secret, in the request's namespace, with a short
//! TTL cache of bounded size: never a cluster-wide watch of every Secret
//! (memory, and more privilege than needed). Only the key names, the size of
//! each value and whether it is blank are kept; Secret data is dropped at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Secret;

use crate::model::secret::secret_entries;
use crate::rules::SecretLookup;

/// Where Secrets come from. Implementations must never put Secret data in
/// [`SecretLookup::Unknown`] reasons.
pub trait SecretSource: Send + Sync + 'static {
    fn lookup<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, SecretLookup>;
}

/// The reason [`NoClusterAccess`] gives (reviews whose only warnings end
/// with it are logged at debug: `serve` says it once at start-up).
pub const NO_CLUSTER_ACCESS: &str = "the webhook has no cluster access";

/// No cluster access: every lookup is unknown (a warning, or a denial under
/// `--strict-secrets`).
#[derive(Clone, Copy, Debug)]
pub struct NoClusterAccess;

impl SecretSource for NoClusterAccess {
    fn lookup<'a>(&'a self, _namespace: &'a str, _name: &'a str) -> BoxFuture<'a, SecretLookup> {
        Box::pin(std::future::ready(SecretLookup::Unknown {
            reason: NO_CLUSTER_ACCESS.to_string(),
        }))
    }
}

/// Looks up a Secret within `budget`; a slow lookup degrades to unknown.
pub async fn lookup_within(
    source: &dyn SecretSource,
    namespace: &str,
    name: &str,
    budget: Duration,
) -> SecretLookup {
    match tokio::time::timeout(budget, source.lookup(namespace, name)).await {
        Ok(found) => found,
        Err(_) => SecretLookup::Unknown {
            reason: format!(
                "the Secret lookup did not finish within {} ms",
                budget.as_millis()
            ),
        },
    }
}

/// How long an answer of the API server is reused.
const CACHE_TTL: Duration = Duration::from_secs(10);

/// Secrets read from the API server with a small TTL cache.
pub struct KubeSecrets {
    client: kube::Client,
    cache: Mutex<HashMap<(String, String), (Instant, SecretLookup)>>,
    max_entries: usize,
}

impl KubeSecrets {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Mutex::new(HashMap::new()),
            max_entries: 1024,
        }
    }

    fn cached(&self, key: &(String, String)) -> Option<SecretLookup> {
        let cache = self.cache.lock().ok()?;
        let (at, found) = cache.get(key)?;
        (at.elapsed() < CACHE_TTL).then(|| found.clone())
    }

    fn remember(&self, key: (String, String), found: &SecretLookup) {
        // Only answers from the API server are cached; failures are retried.
        if matches!(
            found,
            SecretLookup::Unknown { .. } | SecretLookup::NotNeeded
        ) {
            return;
        }
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        if cache.len() >= self.max_entries {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        }
        if cache.len() >= self.max_entries {
            let oldest = cache
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                cache.remove(&oldest);
            }
        }
        cache.insert(key, (Instant::now(), found.clone()));
    }

    async fn fetch(&self, namespace: &str, name: &str) -> SecretLookup {
        let api = kube::Api::<Secret>::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            // Only the key names, value sizes and blankness are kept.
            Ok(Some(secret)) => SecretLookup::from_entries(secret_entries(&secret)),
            Ok(None) => SecretLookup::NotFound,
            Err(kube::Error::Api(status)) => SecretLookup::Unknown {
                reason: format!(
                    "the API server refused the Secret lookup ({} {})",
                    status.code, status.reason
                ),
            },
            Err(err) => SecretLookup::Unknown {
                reason: format!("the Secret lookup failed: {}", short_error(&err)),
            },
        }
    }
}

/// A one-line error without any response body.
fn short_error(err: &kube::Error) -> String {
    match err {
        kube::Error::HyperError(_) | kube::Error::Service(_) => {
            "cannot reach the API server".to_string()
        }
        kube::Error::SerdeError(_) => "unexpected answer from the API server".to_string(),
        other => crate::text::truncate(&other.to_string(), 200, "…").into_owned(),
    }
}

impl SecretSource for KubeSecrets {
    fn lookup<'a>(&'a self, namespace: &'a str, name: &'a str) -> BoxFuture<'a, SecretLookup> {
        Box::pin(async move {
            let key = (namespace.to_string(), name.to_string());
            if let Some(found) = self.cached(&key) {
                return found;
            }
            let found = self.fetch(namespace, name).await;
            self.remember(key, &found);
            found
        })
    }
}

/// Shared handle used by the server state.
pub type SharedSecretSource = Arc<dyn SecretSource>;

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    /// What [`KubeSecrets`] keeps of a Secret it found.
    fn summarize(secret: &Secret) -> SecretLookup {
        SecretLookup::from_entries(secret_entries(secret))
    }

    /// Answers "not found" after `0` (never, within the test's budget).
    struct Slow(Duration);

    impl SecretSource for Slow {
        fn lookup<'a>(&'a self, _: &'a str, _: &'a str) -> BoxFuture<'a, SecretLookup> {
            Box::pin(async move {
                tokio::time::sleep(self.0).await;
                SecretLookup::NotFound
            })
        }
    }

    #[test]
    fn summarize_keeps_only_key_presence() {
        let secret = Secret {
            data: Some(BTreeMap::from([
                ("username".to_string(), ByteString(b"admin".to_vec())),
                ("password".to_string(), ByteString(Vec::new())),
            ])),
            ..Secret::default()
        };
        let summary = summarize(&secret);
        assert_eq!(
            summary,
            SecretLookup::Keys(vec![
                crate::rules::SecretKey {
                    name: "password".into(),
                    size: 0,
                    blank: true
                },
                crate::rules::SecretKey {
                    name: "username".into(),
                    size: 5,
                    blank: false
                },
            ])
        );
        // Rule 9 reads the summary: the blank password is missing.
        let rule_9 = |lookup: &SecretLookup| {
            crate::rules::host_rules::check_secret("s", "ns", lookup).errors[0]
                .message
                .clone()
        };
        assert!(rule_9(&summary).ends_with("missing or empty: \"password\""));
        assert!(!format!("{summary:?}").contains("admin"), "no values kept");
        assert_eq!(
            summarize(&Secret::default()),
            SecretLookup::Keys(Vec::new())
        );
        assert!(
            rule_9(&summarize(&Secret::default()))
                .ends_with("missing or empty: \"username\", \"password\"")
        );
    }

    /// A kube client whose API server is this test: answers each GET from
    /// `answers` (status, JSON body) in order, and records the paths asked.
    fn mock_client(
        answers: Vec<(u16, serde_json::Value)>,
    ) -> (kube::Client, tokio::task::JoinHandle<Vec<String>>) {
        use http::{Request, Response};
        use kube::client::Body;
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let server = tokio::spawn(async move {
            let mut handle = std::pin::pin!(handle);
            let mut paths = Vec::new();
            for (status, body) in answers {
                let Some((request, respond)) = handle.next_request().await else {
                    break;
                };
                paths.push(request.uri().path().to_string());
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&body).unwrap()))
                    .unwrap();
                respond.send_response(response);
            }
            // No further request may come (the cache must answer).
            if let Some((request, _)) = handle.next_request().await {
                paths.push(format!("unexpected {}", request.uri().path()));
            }
            paths
        });
        (kube::Client::new(service, "default"), server)
    }

    fn status(code: u16, reason: &str) -> serde_json::Value {
        serde_json::json!({"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure",
            "message":"secret says no","reason":reason,"code":code})
    }

    #[tokio::test]
    async fn kube_lookup_gets_the_one_secret_and_caches_answers() {
        let secret = serde_json::json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":"creds","namespace":"ns"},
            "data":{"username":"YWRtaW4=","password":"c2VjcmV0"}});
        let (client, server) = mock_client(vec![(200, secret), (404, status(404, "NotFound"))]);
        let secrets = KubeSecrets::new(client);
        let found =
            SecretLookup::from_entries([("password", &b"secret"[..]), ("username", &b"admin"[..])]);
        assert_eq!(secrets.lookup("ns", "creds").await, found);
        assert_eq!(
            secrets.lookup("ns", "creds").await,
            found,
            "second answer from the cache"
        );
        assert_eq!(
            secrets.lookup("ns", "missing").await,
            SecretLookup::NotFound
        );
        assert_eq!(
            secrets.lookup("ns", "missing").await,
            SecretLookup::NotFound
        );
        drop(secrets);
        assert_eq!(
            server.await.unwrap(),
            vec![
                "/api/v1/namespaces/ns/secrets/creds",
                "/api/v1/namespaces/ns/secrets/missing"
            ]
        );
    }

    #[tokio::test]
    async fn kube_lookup_refused_is_unknown_and_not_cached() {
        let (client, server) = mock_client(vec![
            (403, status(403, "Forbidden")),
            (403, status(403, "Forbidden")),
        ]);
        let secrets = KubeSecrets::new(client);
        for _ in 0..2 {
            match secrets.lookup("ns", "creds").await {
                SecretLookup::Unknown { reason } => {
                    assert!(reason.contains("403"), "{reason}");
                    assert!(
                        !reason.contains("secret says no"),
                        "no server text in reasons: {reason}"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        drop(secrets);
        assert_eq!(
            server.await.unwrap().len(),
            2,
            "failures are retried, not cached"
        );
    }

    #[tokio::test]
    async fn cache_is_bounded() {
        let answers = (0..5)
            .map(|i| {
                (
                    200,
                    serde_json::json!({"apiVersion":"v1","kind":"Secret","metadata":{"name":format!("s{i}")}}),
                )
            })
            .collect();
        let (client, _server) = mock_client(answers);
        let mut secrets = KubeSecrets::new(client);
        secrets.max_entries = 3;
        for i in 0..5 {
            secrets.lookup("ns", &format!("s{i}")).await;
        }
        assert_eq!(secrets.cache.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn slow_lookup_degrades_to_unknown() {
        let slow = Slow(Duration::from_secs(30));
        let found = lookup_within(&slow, "ns", "s", Duration::from_millis(20)).await;
        assert!(matches!(found, SecretLookup::Unknown { .. }), "{found:?}");
        assert_eq!(
            lookup_within(&Slow(Duration::ZERO), "ns", "s", Duration::from_secs(5)).await,
            SecretLookup::NotFound
        );
    }
}
