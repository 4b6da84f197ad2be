//! Rules 8-11: the credentials Secret reference and the illegal state
//! combinations of a BareMetalHost with `spec.dataImage`.

use super::SecretLookup;
use super::field_error::{FieldError, go_quote};

pub const CREDENTIALS_FIELD: &str = "spec.dataImage.credentialsName";
const BMC_ADDRESS_FIELD: &str = "spec.bmc.address";
pub const DATA_IMAGE_FIELD: &str = "spec.dataImage";

/// BMC types (URL schemes) whose Ironic driver can insert virtual media.
/// Each also accepts a `+http` / `+https` suffix.
const VIRTUAL_MEDIA_BMC_TYPES: [&str; 7] = [
    "redfish",
    "redfish-virtualmedia",
    "idrac-redfish",
    "idrac-virtualmedia",
    "ilo5-redfish",
    "ilo5-virtualmedia",
    "redfish-uefihttp",
];

const DNS1123_SUBDOMAIN_MAX: usize = 253;

/// Rules 8 and 14: the Secret name at `field` must be a DNS-1123 subdomain
/// (Kubernetes' messages).
pub fn check_secret_name(field: &str, name: &str) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if name.len() > DNS1123_SUBDOMAIN_MAX {
        errors.push(FieldError::invalid(
            field,
            name,
            "must be no more than 253 characters",
        ));
    }
    if !is_dns1123_subdomain_shape(name) {
        errors.push(FieldError::invalid(
            field,
            name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, \
             '-' or '.', and must start and end with an alphanumeric character (e.g. \
             'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
        ));
    }
    errors
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*`
fn is_dns1123_subdomain_shape(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            let bytes = label.as_bytes();
            let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            match (bytes.first(), bytes.last()) {
                (Some(first), Some(last)) => {
                    alnum(first) && alnum(last) && bytes.iter().all(|b| alnum(b) || *b == b'-')
                }
                _ => false,
            }
        })
}

/// What a looked-up Secret says (rules 9 and 16).
#[derive(Debug, Default)]
pub struct SecretFinding {
    /// Always violations (keys missing, empty, or no ISO file names).
    pub errors: Vec<FieldError>,
    /// A violation only under `strict_secrets`, a warning otherwise
    /// (missing or unreadable Secret).
    pub unverified: Option<(FieldError, String)>,
    /// Admitted, but worth saying.
    pub warnings: Vec<String>,
}

/// Rule 9: what the looked-up Secret `name` (in `namespace`) says.
pub fn check_secret(name: &str, namespace: &str, lookup: &SecretLookup) -> SecretFinding {
    let consequence = "the image cannot be attached";
    let mut finding = SecretFinding::new(CREDENTIALS_FIELD, name, namespace, lookup, consequence);
    if let SecretLookup::Keys(keys) = lookup {
        let missing: Vec<String> = ["username", "password"]
            .into_iter()
            .filter(|key| !keys.iter().any(|k| k.name == *key && !k.blank))
            .map(go_quote)
            .collect();
        if !missing.is_empty() {
            finding.errors.push(FieldError::invalid(
                CREDENTIALS_FIELD,
                name,
                &format!(
                    "the Secret must have non-empty \"username\" and \"password\" keys; missing or empty: {}",
                    missing.join(", ")
                ),
            ));
        }
    }
    finding
}

impl SecretFinding {
    /// The finding for a lookup of the Secret `name` at `field` before its
    /// keys are judged: a Secret that is missing or could not be read is
    /// `unverified` (the error for `strict_secrets`, else the warning);
    /// `consequence` says what waits for it.
    pub(super) fn new(
        field: &str,
        name: &str,
        namespace: &str,
        lookup: &SecretLookup,
        consequence: &str,
    ) -> Self {
        let (error, warning) = match lookup {
            SecretLookup::NotFound => {
                let ns = go_quote(namespace);
                (
                    format!("Secret not found in namespace {ns}"),
                    format!("does not exist (yet) in namespace {ns}; {consequence} until it does"),
                )
            }
            SecretLookup::Unknown { reason } => (
                format!("the Secret could not be checked: {reason}"),
                format!("could not be checked: {reason}"),
            ),
            SecretLookup::NotNeeded | SecretLookup::Keys(_) => return Self::default(),
        };
        let warning = format!("{field}: Secret {} {warning}", go_quote(name));
        Self {
            unverified: Some((FieldError::invalid(field, name, &error), warning)),
            ..Self::default()
        }
    }
}

/// Rule 10: a live ISO occupies the virtual CD drive.
pub fn check_image_format(format: Option<&str>) -> Option<FieldError> {
    (format == Some("live-iso")).then(|| {
        FieldError::forbidden(
            DATA_IMAGE_FIELD,
            "cannot be used with spec.image.format \"live-iso\": the live ISO occupies the host's \
             virtual CD drive",
        )
    })
}

/// Rule 11: the BMC must be able to attach virtual media.
pub fn check_bmc_address(address: Option<&str>) -> Option<FieldError> {
    let address = address.unwrap_or("");
    if address.is_empty() {
        return Some(FieldError::required(
            BMC_ADDRESS_FIELD,
            "dataImage needs a BMC that can attach virtual media (a Redfish-family address such \
             as redfish-virtualmedia://...)",
        ));
    }
    let (bmc_type, implicit) = bmc_type(address);
    let base = bmc_type
        .strip_suffix("+https")
        .or_else(|| bmc_type.strip_suffix("+http"))
        .unwrap_or(&bmc_type);
    if VIRTUAL_MEDIA_BMC_TYPES.contains(&base) {
        return None;
    }
    let detail = if implicit {
        "an address without a scheme is IPMI; dataImage needs a BMC that can attach virtual media \
         (each type also with +http or +https)"
    } else {
        "dataImage needs a BMC that can attach virtual media (each type also with +http or +https)"
    };
    Some(FieldError::not_supported(
        BMC_ADDRESS_FIELD,
        &bmc_type,
        &VIRTUAL_MEDIA_BMC_TYPES,
        detail,
    ))
}

/// The BMC type of an address the way the baremetal-operator reads it
/// (`bmc.GetParsedURL`): `scheme://...` gives the scheme (lower case), a bare
/// host or `IP:port` is IPMI, `word:rest` gives `word`. The bool says the
/// type was implied (no scheme written). Only the type is ever echoed: a BMC
/// address may carry credentials.
fn bmc_type(address: &str) -> (String, bool) {
    if let Some((scheme, _)) = address.split_once("://") {
        return (scheme.to_ascii_lowercase(), false);
    }
    match address.split_once(':') {
        Some((word, _)) if is_url_scheme(word) => (word.to_ascii_lowercase(), false),
        _ => ("ipmi".to_string(), true),
    }
}

/// RFC 3986 `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
fn is_url_scheme(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names() {
        assert!(check_secret_name(CREDENTIALS_FIELD, "dataimage-secret").is_empty());
        assert!(check_secret_name(CREDENTIALS_FIELD, "a.b-c.d0").is_empty());
        assert_eq!(check_secret_name(CREDENTIALS_FIELD, "Data_Image").len(), 1);
        assert_eq!(check_secret_name(CREDENTIALS_FIELD, "").len(), 1);
        assert_eq!(check_secret_name(CREDENTIALS_FIELD, "-a").len(), 1);
        assert_eq!(check_secret_name(CREDENTIALS_FIELD, "a..b").len(), 1);
        assert_eq!(
            check_secret_name(CREDENTIALS_FIELD, &"a".repeat(254)).len(),
            1
        );
        assert_eq!(
            check_secret_name(CREDENTIALS_FIELD, &"A".repeat(254)).len(),
            2
        );
        assert!(check_secret_name(CREDENTIALS_FIELD, &"a".repeat(253)).is_empty());
    }

    #[test]
    fn bmc_types() {
        for ok in [
            "redfish://192.0.2.10/redfish/v1/Systems/1",
            "redfish-virtualmedia+https://192.0.2.10/redfish/v1/Systems/1",
            "idrac-virtualmedia+http://[2001:db8::1]/redfish/v1/Systems/System.Embedded.1",
            "ilo5-virtualmedia://h/redfish/v1/Systems/1",
            "Redfish-VirtualMedia://h/x",
            "redfish-uefihttp+https://h/x",
        ] {
            assert_eq!(check_bmc_address(Some(ok)), None, "{ok}");
        }
        let ipmi = check_bmc_address(Some("ipmi://192.0.2.11")).unwrap();
        assert!(
            ipmi.message
                .starts_with("Unsupported value: \"ipmi\": supported values: \"redfish\"")
        );
        let bare = check_bmc_address(Some("192.0.2.11:623")).unwrap();
        assert!(
            bare.message.contains("without a scheme is IPMI"),
            "{}",
            bare.message
        );
        assert!(
            check_bmc_address(Some("[fe80::1]:623"))
                .unwrap()
                .message
                .contains("\"ipmi\"")
        );
        assert!(
            check_bmc_address(Some("libvirt://h"))
                .unwrap()
                .message
                .contains("\"libvirt\"")
        );
        assert!(
            check_bmc_address(Some("ipm:host:6223"))
                .unwrap()
                .message
                .contains("\"ipm\"")
        );
        assert!(check_bmc_address(Some("redfish+ftp://h")).is_some());
        let missing = check_bmc_address(None).unwrap();
        assert_eq!(missing.field, "spec.bmc.address");
        assert!(missing.message.starts_with("Required value: "));
        // Credentials in a BMC address are never echoed.
        let m = check_bmc_address(Some("ipmi://admin:pw@h"))
            .unwrap()
            .message;
        assert!(!m.contains("pw"));
    }

    #[test]
    fn secret_lookup_outcomes() {
        let finding = check_secret("s", "ns", &SecretLookup::NotNeeded);
        assert!(finding.errors.is_empty() && finding.unverified.is_none());
        let found = SecretLookup::from_entries([("username", &b"u"[..]), ("password", b" ")]);
        let errors = check_secret("s", "ns", &found).errors;
        assert!(
            errors[0]
                .message
                .ends_with("missing or empty: \"password\"")
        );
        let (_, warning) = check_secret("s", "ns", &SecretLookup::NotFound)
            .unverified
            .expect("unverified");
        assert!(warning.contains("Secret \"s\" does not exist (yet) in namespace \"ns\""));
    }

    #[test]
    fn live_iso() {
        assert!(check_image_format(Some("live-iso")).is_some());
        assert!(check_image_format(Some("qcow2")).is_none());
        assert!(check_image_format(None).is_none());
    }
}
