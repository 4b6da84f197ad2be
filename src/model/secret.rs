//! Reading the Secrets a host names: the one reader shared by the webhook
//! (rule 9, which only looks at key names and blankness) and the reconciler
//! (which needs the values).
//!
//! `Debug` of [`SecretCredentials`] never prints the password.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::Secret;

#[derive(Clone, PartialEq, Eq)]
pub struct SecretCredentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for SecretCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCredentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// A Secret's keys and values: `data` and `stringData` (which a Secret
/// built client-side may carry) merged, `stringData` winning as the API
/// server does.
pub(crate) fn secret_entries(secret: &Secret) -> BTreeMap<&str, &[u8]> {
    let data = secret.data.iter().flatten();
    let string_data = secret.string_data.iter().flatten();
    data.map(|(key, value)| (key.as_str(), value.0.as_slice()))
        .chain(string_data.map(|(key, value)| (key.as_str(), value.as_bytes())))
        .collect()
}

/// Empty or whitespace only: counts as a missing value.
pub(crate) fn is_blank(value: &[u8]) -> bool {
    value.iter().all(u8::is_ascii_whitespace)
}

impl SecretCredentials {
    /// `username` and `password` from the Secret: a blank value counts as
    /// missing, one that is not UTF-8 is an error. The message names the
    /// keys, never a value.
    pub(crate) fn from_secret(secret: &Secret) -> Result<Self, String> {
        let entries = secret_entries(secret);
        let field = |key: &str| match entries.get(key).filter(|v| !is_blank(v)) {
            None => Err(format!("no non-empty `{key}` key")),
            Some(value) => String::from_utf8(value.to_vec())
                .map_err(|_| format!("the `{key}` value is not UTF-8")),
        };
        Ok(Self {
            username: field("username")?,
            password: field("password")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;

    fn secret(data: &[(&str, &[u8])], string_data: &[(&str, &str)]) -> Secret {
        Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            string_data: Some(
                string_data
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn credentials_from_data_and_string_data() {
        let both = secret(
            &[("username", b"admin"), ("password", b"old")],
            &[("password", "new")],
        );
        let creds = SecretCredentials::from_secret(&both).unwrap();
        assert_eq!(
            (creds.username.as_str(), creds.password.as_str()),
            ("admin", "new")
        );
        assert!(!format!("{creds:?}").contains("new"));
    }

    #[test]
    fn blank_is_missing_and_non_utf8_is_an_error() {
        for (data, want) in [
            (
                &[("username", &b"admin"[..])][..],
                "no non-empty `password` key",
            ),
            (
                &[("username", b"admin"), ("password", b" \n\t")],
                "no non-empty `password` key",
            ),
            (
                &[("username", b""), ("password", b"pw")],
                "no non-empty `username` key",
            ),
            (
                &[("username", b"admin"), ("password", b"\xff\xfe")],
                "the `password` value is not UTF-8",
            ),
        ] {
            let err = SecretCredentials::from_secret(&secret(data, &[])).unwrap_err();
            assert_eq!(err, want, "{data:?}");
        }
        assert!(is_blank(b"") && is_blank(b" \r\n") && !is_blank(b" x "));
    }
}
