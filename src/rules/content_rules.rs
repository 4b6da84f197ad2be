//! Rules 12-16: where the data image comes from (`url` or `contentFrom`),
//! and the Secret and label a built configuration ISO is made of. The file
//! name and label limits are the writer's own
//! ([`crate::staging::config_iso`]), so what the webhook admits always builds.

use super::SecretLookup;
use super::field_error::{FieldError, go_quote};
use super::host_rules::{CREDENTIALS_FIELD, DATA_IMAGE_FIELD, SecretFinding, check_secret_name};
use crate::model::DataImageInput;
use crate::staging::config_iso;

pub const CONTENT_SECRET_FIELD: &str = "spec.dataImage.contentFrom.secretName";
const VOLUME_LABEL_FIELD: &str = "spec.dataImage.volumeLabel";
const INSECURE_FIELD: &str = "spec.dataImage.disableCertificateVerification";

/// Rule 12: exactly one of `url` (non-empty) and `contentFrom`.
pub fn check_source(data_image: &DataImageInput) -> Option<FieldError> {
    match (data_image.url_set(), data_image.content_from.is_some()) {
        (false, false) => Some(FieldError::required(
            DATA_IMAGE_FIELD,
            "set exactly one of url (an image to fetch) or contentFrom (a Secret to build the \
             image from)",
        )),
        (true, true) => Some(FieldError::invalid(
            DATA_IMAGE_FIELD,
            "url and contentFrom",
            "set exactly one of url or contentFrom, not both",
        )),
        _ => None,
    }
}

/// Rule 13: fields that belong to the other source.
pub fn check_source_fields(data_image: &DataImageInput) -> Vec<FieldError> {
    const URL_ONLY: &str =
        "may only be used with url: an image built from contentFrom is not fetched";
    let mut errors = Vec::new();
    if data_image.content_from.is_some() {
        if data_image.credentials_name.is_some() {
            errors.push(FieldError::forbidden(CREDENTIALS_FIELD, URL_ONLY));
        }
        if data_image.disable_certificate_verification == Some(true) {
            errors.push(FieldError::forbidden(INSECURE_FIELD, URL_ONLY));
        }
    } else if data_image.volume_label.is_some() {
        errors.push(FieldError::forbidden(
            VOLUME_LABEL_FIELD,
            "may only be used with contentFrom: an image fetched from url keeps its own label",
        ));
    }
    errors
}

/// Rule 14 (with contentFrom): `contentFrom.secretName` present and a
/// DNS-1123 subdomain.
pub fn check_content_secret_name(data_image: &DataImageInput) -> Vec<FieldError> {
    match data_image.content_secret() {
        None | Some("") => vec![FieldError::required(CONTENT_SECRET_FIELD, "")],
        Some(name) => check_secret_name(CONTENT_SECRET_FIELD, name),
    }
}

/// Rule 15 (with contentFrom): `volumeLabel`, when set, is a label the ISO
/// can carry.
pub fn check_volume_label(data_image: &DataImageInput) -> Option<FieldError> {
    let label = data_image.volume_label.as_deref()?;
    config_iso::check_volume_label(label)
        .err()
        .map(|problem| FieldError::invalid(VOLUME_LABEL_FIELD, label, &problem.to_string()))
}

/// Rule 16: what the looked-up contentFrom Secret `name` says.
pub fn check_content_secret(name: &str, namespace: &str, lookup: &SecretLookup) -> SecretFinding {
    let consequence = "the ISO cannot be built";
    let mut finding =
        SecretFinding::new(CONTENT_SECRET_FIELD, name, namespace, lookup, consequence);
    let SecretLookup::Keys(keys) = lookup else {
        return finding;
    };
    let invalid = |detail: &str| FieldError::invalid(CONTENT_SECRET_FIELD, name, detail);
    if keys.is_empty() {
        finding.errors.push(invalid(
            "the Secret has no keys; each key becomes a file of the ISO",
        ));
    }
    for key in keys {
        if let Err(problem) = config_iso::check_file_name(&key.name) {
            let key = go_quote(&key.name);
            finding.errors.push(invalid(&format!(
                "key {key} cannot be a file name in the ISO: {problem}"
            )));
        }
    }
    if keys.len() > config_iso::MAX_FILES {
        finding.errors.push(invalid(&format!(
            "the Secret has {} keys; at most {} files fit in the ISO",
            keys.len(),
            config_iso::MAX_FILES
        )));
    }
    let total: usize = keys.iter().map(|k| k.size).sum();
    if total > config_iso::MAX_TOTAL_SIZE {
        finding.errors.push(invalid(&format!(
            "the Secret's values add up to {total} bytes; at most {} are accepted",
            config_iso::MAX_TOTAL_SIZE
        )));
    }
    for (i, a) in keys.iter().enumerate() {
        for b in keys[i + 1..]
            .iter()
            .filter(|b| a.name.eq_ignore_ascii_case(&b.name))
        {
            finding.warnings.push(format!(
                "{CONTENT_SECRET_FIELD}: keys {} and {} of Secret {} differ only in letter \
                 case; Windows reads ISO file names case-insensitively and sees only one of them",
                go_quote(&a.name),
                go_quote(&b.name),
                go_quote(name)
            ));
        }
    }
    finding
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::dataimage::ContentFromInput;

    fn content(secret: Option<&str>) -> DataImageInput {
        DataImageInput {
            content_from: Some(ContentFromInput {
                secret_name: secret.map(Into::into),
            }),
            ..DataImageInput::default()
        }
    }

    #[test]
    fn exactly_one_source() {
        let neither = check_source(&DataImageInput::default()).unwrap();
        assert_eq!(neither.field, "spec.dataImage");
        assert!(
            neither
                .message
                .starts_with("Required value: set exactly one of url")
        );
        let empty_url = DataImageInput {
            url: Some(String::new()),
            ..DataImageInput::default()
        };
        assert!(check_source(&empty_url).is_some(), "an empty url is no url");
        let both = DataImageInput {
            url: Some("https://h/a.iso".into()),
            ..content(Some("s"))
        };
        assert_eq!(
            check_source(&both).unwrap().to_string(),
            "spec.dataImage: Invalid value: \"url and contentFrom\": set exactly one of url or \
             contentFrom, not both"
        );
        assert!(check_source(&content(Some("s"))).is_none());
    }

    #[test]
    fn fields_of_the_other_source_are_forbidden() {
        let mut d = content(Some("s"));
        d.credentials_name = Some("creds".into());
        d.disable_certificate_verification = Some(true);
        let errors = check_source_fields(&d);
        assert_eq!(errors.len(), 2);
        assert_eq!(errors[0].field, CREDENTIALS_FIELD);
        assert!(
            errors[0]
                .message
                .starts_with("Forbidden: may only be used with url")
        );
        assert_eq!(errors[1].field, INSECURE_FIELD);
        // false is the default the mutating webhook writes for url: harmless.
        d.credentials_name = None;
        d.disable_certificate_verification = Some(false);
        assert!(check_source_fields(&d).is_empty());
        let url_with_label = DataImageInput {
            url: Some("https://h/a.iso".into()),
            volume_label: Some("cidata".into()),
            ..DataImageInput::default()
        };
        assert_eq!(
            check_source_fields(&url_with_label)[0].field,
            VOLUME_LABEL_FIELD
        );
    }

    #[test]
    fn secret_name_and_label() {
        assert_eq!(
            check_content_secret_name(&content(None))[0].to_string(),
            "spec.dataImage.contentFrom.secretName: Required value"
        );
        assert_eq!(check_content_secret_name(&content(Some(""))).len(), 1);
        assert_eq!(
            check_content_secret_name(&content(Some("Bad_Name"))).len(),
            1
        );
        assert!(check_content_secret_name(&content(Some("worker-5-config"))).is_empty());
        let label = |l: &str| {
            check_volume_label(&DataImageInput {
                volume_label: Some(l.into()),
                ..content(Some("s"))
            })
        };
        assert!(label("cidata").is_none());
        assert!(label("config-2").is_none());
        assert_eq!(
            label("config 2.x").unwrap().to_string(),
            "spec.dataImage.volumeLabel: Invalid value: \"config 2.x\": must consist of letters, \
             digits, '_' or '-' (found U+0020, '.')"
        );
        assert!(
            label(&"A".repeat(33))
                .unwrap()
                .message
                .contains("at most 32")
        );
    }

    #[test]
    fn secret_keys() {
        let keys = |entries: &[(&str, &[u8])]| SecretLookup::from_entries(entries.iter().copied());
        let f = check_content_secret("s", "ns", &keys(&[("user-data", b"x"), ("meta-data", b"")]));
        assert!(f.errors.is_empty() && f.unverified.is_none() && f.warnings.is_empty());
        let f = check_content_secret("s", "ns", &keys(&[]));
        assert!(
            f.errors[0]
                .message
                .ends_with("the Secret has no keys; each key becomes a file of the ISO")
        );
        let long = "k".repeat(65);
        let f = check_content_secret("s", "ns", &keys(&[(long.as_str(), b""), ("a b", b"")]));
        assert_eq!(f.errors.len(), 2);
        assert!(
            f.errors
                .iter()
                .any(|e| e.message.contains("at most 64 characters"))
        );
        let f = check_content_secret("s", "ns", &keys(&[("README", b""), ("readme", b"")]));
        assert!(f.errors.is_empty());
        assert!(
            f.warnings[0].contains("differ only in letter case"),
            "{:?}",
            f.warnings
        );
        let f = check_content_secret("s", "ns", &SecretLookup::NotFound);
        let (error, warning) = f.unverified.unwrap();
        assert_eq!(error.field, CONTENT_SECRET_FIELD);
        assert!(
            warning.contains("the ISO cannot be built until it does"),
            "{warning}"
        );
    }
}
