//! Webhook metrics, named like controller-runtime's so existing dashboards
//! for the baremetal-operator's webhook keep working.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds, up to 10 s (the API server's default timeout).
const LATENCY_BUCKETS: [f64; 15] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabels {
    pub webhook: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookCodeLabels {
    pub webhook: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdmissionLabels {
    pub webhook: &'static str,
    pub operation: &'static str,
    pub allowed: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    /// `serving` or `client-ca`.
    pub certificate: &'static str,
}

/// Every metric of the webhook server (cheap to clone: all handles are shared).
#[derive(Clone, Debug)]
pub struct Metrics {
    pub requests: Family<WebhookCodeLabels, Counter>,
    pub latency: Family<WebhookLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Family<WebhookLabels, Gauge>,
    pub panics: Counter,
    pub admissions: Family<AdmissionLabels, Counter>,
    pub certificate_reads: Family<CertificateLabels, Counter>,
    pub certificate_read_errors: Family<CertificateLabels, Counter>,
    pub certificate_expiry: Family<CertificateLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            latency: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            in_flight: Family::default(),
            panics: Counter::default(),
            admissions: Family::default(),
            certificate_reads: Family::default(),
            certificate_read_errors: Family::default(),
            certificate_expiry: Family::default(),
        }
    }
}

impl Metrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "controller_runtime_webhook_requests",
            "Total number of admission requests by HTTP status code",
            metrics.requests.clone(),
        );
        registry.register(
            "controller_runtime_webhook_latency_seconds",
            "Histogram of the latency of processing admission requests",
            metrics.latency.clone(),
        );
        registry.register(
            "controller_runtime_webhook_requests_in_flight",
            "Current number of admission requests being served",
            metrics.in_flight.clone(),
        );
        registry.register(
            "controller_runtime_webhook_panics",
            "Total number of webhook panics",
            metrics.panics.clone(),
        );
        registry.register(
            "metal3_dataimage_admission",
            "Admission reviews answered, by webhook, operation and verdict",
            metrics.admissions.clone(),
        );
        registry.register(
            "certwatcher_read_certificate",
            "Total number of certificate reads (initial load and reloads)",
            metrics.certificate_reads.clone(),
        );
        registry.register(
            "certwatcher_read_certificate_errors",
            "Total number of certificate read errors (the last good certificate stays in use)",
            metrics.certificate_read_errors.clone(),
        );
        registry.register(
            "metal3_dataimage_certificate_expiry_timestamp_seconds",
            "notAfter of the certificate in use, as a Unix timestamp (for the client CA: the earliest)",
            metrics.certificate_expiry.clone(),
        );
        metrics
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_controller_runtime_names() {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        let labels = WebhookLabels {
            webhook: "/validate",
        };
        metrics
            .requests
            .get_or_create(&WebhookCodeLabels {
                webhook: "/validate",
                code: 200,
            })
            .inc();
        metrics.latency.get_or_create(&labels).observe(0.002);
        metrics.in_flight.get_or_create(&labels).set(0);
        metrics.panics.inc();
        metrics
            .admissions
            .get_or_create(&AdmissionLabels {
                webhook: "/validate",
                operation: "CREATE",
                allowed: true,
            })
            .inc();
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        for expected in [
            r#"controller_runtime_webhook_requests_total{webhook="/validate",code="200"} 1"#,
            r#"controller_runtime_webhook_latency_seconds_bucket{webhook="/validate",le="10"} 1"#,
            r#"controller_runtime_webhook_requests_in_flight{webhook="/validate"} 0"#,
            "controller_runtime_webhook_panics_total 1",
            r#"metal3_dataimage_admission_total{webhook="/validate",operation="CREATE",allowed="true"} 1"#,
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
    }
}
