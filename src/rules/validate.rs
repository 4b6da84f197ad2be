//! The validating path: rules 1-16 in a fixed order, warnings, ratcheting.

use super::content_rules;
use super::field_error::{FieldError, invalid_message};
use super::host_rules::{self, CREDENTIALS_FIELD, SecretFinding};
use super::url_rules;
use super::{
    DenyStatus, Inner, Operation, Policy, ResourceKind, ReviewInput, SecretLookup, StatusCause,
    StatusDetails, Verdict,
};
use crate::model::{BareMetalHost, GROUP, ObjectMeta, UpstreamDataImage};
use DependsOn::{AlsoBmcAddress, AlsoImageFormat, DataImageOnly};

const HOST_URL_FIELD: &str = "spec.dataImage.url";
const DATAIMAGE_URL_FIELD: &str = "spec.url";

/// Which stored values a violation depends on, for ratcheting: the rule is
/// relaxed to a warning on UPDATE when all of them are unchanged.
#[derive(Clone, Copy, PartialEq, Eq)]
enum DependsOn {
    DataImageOnly,
    AlsoImageFormat,
    AlsoBmcAddress,
}

/// Violations and warnings collected in rule order.
#[derive(Default)]
struct Findings {
    violations: Vec<(FieldError, DependsOn)>,
    warnings: Vec<String>,
}

/// The validating webhook's decision.
pub fn validate(
    input: &ReviewInput<'_>,
    decoded: &super::Decoded,
    secret: &SecretLookup,
    policy: &Policy,
) -> Verdict {
    if !matches!(input.operation, Operation::Create | Operation::Update)
        // Status writes cannot change spec (the API server resets it).
        || input.sub_resource.is_some()
    {
        return Verdict::allow(Vec::new());
    }
    let mut verdict = match &decoded.inner {
        Inner::Nothing => Verdict::allow(Vec::new()),
        Inner::Invalid { field, message } => bad_request(input, field, message),
        Inner::Host { new } => judge_host(input, new, secret, policy),
        Inner::DataImage { new } => judge_data_image(input, new),
    };
    if policy.operator_users.iter().any(|u| u == input.user) {
        verdict.warnings.clear();
    }
    verdict
}

/// An object that does not decode: named by `request.name` alone (its
/// metadata was not read).
fn bad_request(input: &ReviewInput<'_>, field: &str, message: &str) -> Verdict {
    let name = input.name;
    let at = if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    };
    let text = format!(
        "{}.{GROUP} {} could not be decoded: {at}{message}",
        input.kind.as_str(),
        super::field_error::go_quote(name)
    );
    let cause = StatusCause {
        reason: "FieldValueTypeInvalid".to_string(),
        field: field.to_string(),
        message: message.to_string(),
    };
    deny((400, "BadRequest"), text, input.kind, name, vec![cause])
}

fn judge_host(
    input: &ReviewInput<'_>,
    new: &BareMetalHost,
    secret: &SecretLookup,
    policy: &Policy,
) -> Verdict {
    // Without dataImage the host's fields belong to the operator's webhook.
    let Some(data_image) = new.data_image().filter(|_| !new.is_being_deleted()) else {
        return Verdict::allow(Vec::new());
    };
    let mut findings = Findings::default();

    // Rule 12: exactly one source; rule 13: no fields of the other source.
    findings.add(content_rules::check_source(data_image), DataImageOnly);
    findings.add(
        content_rules::check_source_fields(data_image),
        DataImageOnly,
    );
    let content = data_image.content_from.is_some();

    // Rules 1-7, for a URL that is set (an empty one is no URL: rule 12).
    let url = if data_image.url_set() {
        url_rules::check_url(
            HOST_URL_FIELD,
            data_image.url.as_deref(),
            "put them in a Secret named by spec.dataImage.credentialsName",
        )
    } else {
        url_rules::UrlReport::default()
    };
    findings.add(url.errors, DataImageOnly);

    // Rules 8-9 (credentialsName is forbidden with contentFrom: rule 13).
    if let Some(name) = data_image.credentials_name.as_deref().filter(|_| !content) {
        let name_errors = host_rules::check_secret_name(CREDENTIALS_FIELD, name);
        if name_errors.is_empty() {
            findings.secret(
                host_rules::check_secret(name, input.namespace, secret),
                policy,
            );
        }
        findings.add(name_errors, DataImageOnly);
    }

    // Rules 14-16: the contentFrom Secret and the label.
    if content {
        let name_errors = content_rules::check_content_secret_name(data_image);
        let name_ok = name_errors.is_empty();
        findings.add(name_errors, DataImageOnly);
        findings.add(content_rules::check_volume_label(data_image), DataImageOnly);
        if let Some(name) = data_image.content_secret().filter(|_| name_ok) {
            let found = content_rules::check_content_secret(name, input.namespace, secret);
            findings.secret(found, policy);
        }
    }

    // Rules 10-11.
    findings.add(
        host_rules::check_image_format(new.image_format()),
        AlsoImageFormat,
    );
    findings.add(
        host_rules::check_bmc_address(new.bmc_address()),
        AlsoBmcAddress,
    );

    // Warnings.
    findings.warnings.extend(url.warnings);
    if url.plain_http {
        if data_image.disable_certificate_verification == Some(true) {
            findings.warnings.push(
                "spec.dataImage.disableCertificateVerification: has no effect on an http URL"
                    .to_string(),
            );
        }
        if data_image.credentials_name.is_some() {
            findings.warnings.push(format!(
                "{CREDENTIALS_FIELD}: the credentials would travel unencrypted over http; use an https URL"
            ));
        }
    }
    if new.disable_power_off() {
        findings.warnings.push(
            "spec.disablePowerOff: the data image becomes visible to the host only at its next reboot"
                .to_string(),
        );
    }

    // Ratcheting: unchanged inputs of a rule relax it to a warning.
    let old: Option<BareMetalHost> = findings.old_if_needed(input);
    let unchanged = |depends: DependsOn| {
        let Some(old) = &old else { return false };
        let same_data_image = old
            .data_image()
            .is_some_and(|o| o.same_for_rules(data_image));
        same_data_image
            && match depends {
                DataImageOnly => true,
                AlsoImageFormat => old.image_format() == new.image_format(),
                AlsoBmcAddress => old.bmc_address() == new.bmc_address(),
            }
    };
    findings.finish(input, &new.metadata, unchanged)
}

fn judge_data_image(input: &ReviewInput<'_>, new: &UpstreamDataImage) -> Verdict {
    if new.metadata.deletion_timestamp.is_some() {
        return Verdict::allow(Vec::new());
    }
    let url_of = |d: &UpstreamDataImage| d.spec.as_ref().and_then(|s| s.url.clone());
    let new_url = url_of(new);
    let mut findings = Findings::default();
    let url = url_rules::check_url(
        DATAIMAGE_URL_FIELD,
        new_url.as_deref(),
        "serve the image without credentials",
    );
    findings.add(url.errors, DataImageOnly);
    findings.warnings.extend(url.warnings);
    let old: Option<UpstreamDataImage> = findings.old_if_needed(input);
    let unchanged = |_: DependsOn| old.as_ref().is_some_and(|o| url_of(o) == new_url);
    findings.finish(input, &new.metadata, unchanged)
}

impl Findings {
    /// oldObject, decoded only for an UPDATE with something to ratchet.
    fn old_if_needed<T: serde::de::DeserializeOwned>(&self, input: &ReviewInput<'_>) -> Option<T> {
        if input.operation == Operation::Update && !self.violations.is_empty() {
            super::decode::decode_old(input.old_object)
        } else {
            None
        }
    }

    fn add(&mut self, errors: impl IntoIterator<Item = FieldError>, depends: DependsOn) {
        self.violations
            .extend(errors.into_iter().map(|e| (e, depends)));
    }

    /// What a looked-up Secret says; one that could not be checked is
    /// denied under `strict_secrets`, else a warning.
    fn secret(&mut self, found: SecretFinding, policy: &Policy) {
        self.add(found.errors, DataImageOnly);
        match found.unverified {
            Some((error, _)) if policy.strict_secrets => {
                self.add([error], DataImageOnly);
            }
            Some((_, warning)) => self.warnings.push(warning),
            None => {}
        }
        self.warnings.extend(found.warnings);
    }

    /// The verdict on the violations whose inputs changed (the others are
    /// warnings), for the object named `request.name`, else `metadata.name`,
    /// else `metadata.generateName` (the mutating call of a generateName
    /// create has no name yet), else empty.
    fn finish(
        self,
        input: &ReviewInput<'_>,
        meta: &ObjectMeta,
        unchanged: impl Fn(DependsOn) -> bool,
    ) -> Verdict {
        let kind = input.kind;
        let name = (Some(input.name).filter(|n| !n.is_empty()))
            .or(meta.name_or_generate_name())
            .unwrap_or("");
        let mut denials = Vec::new();
        let mut warnings = Vec::new();
        let guarded = match kind {
            ResourceKind::BareMetalHost => "spec.dataImage",
            ResourceKind::DataImage => DATAIMAGE_URL_FIELD,
        };
        for (error, depends) in self.violations {
            if unchanged(depends) {
                warnings.push(format!(
                    "{error} (not enforced: unchanged from the stored object; fix it before \
                     changing {guarded})"
                ));
            } else {
                denials.push(error);
            }
        }
        warnings.extend(self.warnings);
        if denials.is_empty() {
            return Verdict::allow(warnings);
        }
        let message = invalid_message(kind.as_str(), GROUP, name, &denials);
        let causes = denials.into_iter().map(|e| StatusCause {
            reason: e.reason.as_str().to_string(),
            field: e.field,
            message: e.message,
        });
        Verdict {
            warnings,
            ..deny((422, "Invalid"), message, kind, name, causes.collect())
        }
    }
}

/// A denial in `metav1.Status` shape (`code`, `reason`) with its causes.
fn deny(
    (code, reason): (u16, &str),
    message: String,
    kind: ResourceKind,
    name: &str,
    causes: Vec<StatusCause>,
) -> Verdict {
    Verdict {
        allowed: false,
        status: Some(DenyStatus {
            code,
            reason: reason.to_string(),
            message,
            details: Some(StatusDetails {
                name: name.to_string(),
                group: GROUP.to_string(),
                kind: kind.as_str().to_string(),
                causes,
            }),
        }),
        ..Verdict::default()
    }
}
