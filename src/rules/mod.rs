//! The admission rules: pure functions from a decoded request to a verdict.
//!
//! Used identically by the HTTPS webhook (`admission`) and the offline `check`
//! CLI. No I/O happens here: the one thing that needs the network, the
//! credentials Secret, is looked up by the caller between [`decode`] and
//! [`validate`] and handed in as a [`SecretLookup`].
//!
//! Flow for a caller:
//! ```text
//! let decoded = rules::decode(&input);            // typed, only the fields we read
//! let secret  = match decoded.secret_to_check() { // Some(name) when a lookup is useful
//!     Some(name) => /* get Secret name in input.namespace, bounded time */,
//!     None => SecretLookup::NotNeeded };
//! let verdict = rules::validate(&input, &decoded, &secret, &policy);   // validating webhook
//! let old     = OldDataImages::from_raw(input.old_object);            // what a write may drop
//! let verdict = rules::mutate(&input, &decoded, &old, &policy);        // mutating webhook
//! ```

pub mod content_rules;
mod decode;
pub use decode::{decode, decode_json_text, decode_typed};
pub mod field_error;
pub mod host_rules;
mod mutate;
pub use mutate::{OldDataImages, mutate};
pub mod url_rules;
mod validate;
pub use validate::validate;

use serde_json::value::RawValue;

pub use field_error::{CauseReason, FieldError};

/// The admission operation (`request.operation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    Create,
    Update,
    Delete,
    Connect,
}

impl Operation {
    /// Parses the AdmissionReview spelling (`CREATE`, `UPDATE`, ...).
    pub fn parse(s: &str) -> Option<Self> {
        let all = [Self::Create, Self::Update, Self::Delete, Self::Connect];
        all.into_iter().find(|op| op.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "CREATE",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
            Self::Connect => "CONNECT",
        }
    }
}

/// Which kind a request is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResourceKind {
    BareMetalHost,
    /// The upstream `DataImage` kind (`spec.url`).
    DataImage,
}

impl ResourceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BareMetalHost => "BareMetalHost",
            Self::DataImage => "DataImage",
        }
    }
}

/// Everything the rules need from one admission request (or one manifest
/// document in the CLI). Objects stay raw JSON until [`decode`] reads only
/// the fields the rules use.
#[derive(Clone, Copy, Debug)]
pub struct ReviewInput<'a> {
    pub kind: ResourceKind,
    pub operation: Operation,
    /// `request.subResource` (`status` for status writes).
    pub sub_resource: Option<&'a str>,
    /// `request.userInfo.username`.
    pub user: &'a str,
    /// `request.name` (empty on a generateName create).
    pub name: &'a str,
    pub namespace: &'a str,
    pub object: Option<&'a RawValue>,
    pub old_object: Option<&'a RawValue>,
}

/// Settings that change what the rules decide.
#[derive(Clone, Debug)]
pub struct Policy {
    /// A referenced Secret that does not exist (or cannot be read) denies
    /// instead of warning.
    pub strict_secrets: bool,
    /// Users whose whole-object writes drop `dataImage` (the baremetal-operator's
    /// service account); the mutating path restores the field for them.
    pub operator_users: Vec<String>,
}

pub const DEFAULT_OPERATOR_USER: &str =
    "system:serviceaccount:baremetal-operator-system:baremetal-operator-controller-manager";

impl Default for Policy {
    fn default() -> Self {
        Self {
            strict_secrets: false,
            operator_users: vec![DEFAULT_OPERATOR_USER.to_string()],
        }
    }
}

/// What the caller found when it looked up the referenced Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretLookup {
    /// No lookup needed or none possible for this request.
    NotNeeded,
    /// The Secret exists: each key's name and the size of its value, sorted
    /// by name (what the webhook's lookup and `check` report; never values).
    /// Serves both rule 9 (credentials) and rule 16 (contentFrom).
    Keys(Vec<SecretKey>),
    /// The API server says the Secret does not exist.
    NotFound,
    /// The lookup could not be made (no cluster access, timeout, forbidden).
    /// The reason must never contain Secret data.
    Unknown { reason: String },
}

/// One key of a looked-up Secret, without its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretKey {
    pub name: String,
    /// Bytes in the value.
    pub size: usize,
    /// The value is empty or only ASCII whitespace.
    pub blank: bool,
}

/// The typed objects of a request, or why they could not be decoded.
#[derive(Clone, Debug)]
pub struct Decoded {
    pub(crate) inner: Inner,
    /// A write to a subresource (`status`): spec rules do not apply there.
    pub(crate) sub_resource: bool,
}

#[derive(Clone, Debug)]
pub(crate) enum Inner {
    /// Nothing to judge (DELETE/CONNECT, or no object).
    Nothing,
    /// oldObject is decoded only when needed (ratcheting a violation),
    /// which keeps the common case to one pass over the object.
    Host {
        new: Box<crate::model::BareMetalHost>,
    },
    DataImage {
        new: Box<crate::model::UpstreamDataImage>,
    },
    /// The object does not fit the schema. `field` is the JSON path of
    /// the offending value (e.g. `spec.dataImage.url`), empty for the
    /// object itself; `message` says what is wrong with it.
    Invalid { field: String, message: String },
}

impl Decoded {
    /// The Secret name whose contents the rules want to see, if any, for a
    /// host that is not being deleted, outside subresource (status) writes:
    /// `spec.dataImage.contentFrom.secretName` when contentFrom is set (rule
    /// 16), else `spec.dataImage.credentialsName` (rule 9); only a valid
    /// Secret name.
    pub fn secret_to_check(&self) -> Option<&str> {
        match &self.inner {
            Inner::Host { new } if !self.sub_resource && !new.is_being_deleted() => {
                let data_image = new.data_image()?;
                let name = match data_image.content_from {
                    Some(_) => data_image.content_secret()?,
                    None => data_image.credentials_name.as_deref()?,
                };
                // The field only names the errors, which are not kept.
                (host_rules::check_secret_name(host_rules::CREDENTIALS_FIELD, name).is_empty())
                    .then_some(name)
            }
            _ => None,
        }
    }
}

impl SecretLookup {
    /// A found Secret from its keys and values (kept: names and sizes).
    pub fn from_entries<'v>(entries: impl IntoIterator<Item = (&'v str, &'v [u8])>) -> Self {
        let mut keys: Vec<SecretKey> = entries
            .into_iter()
            .map(|(name, value)| SecretKey {
                name: name.to_string(),
                size: value.len(),
                blank: crate::model::secret::is_blank(value),
            })
            .collect();
        keys.sort_by(|a, b| a.name.cmp(&b.name));
        keys.dedup_by(|a, b| a.name == b.name);
        Self::Keys(keys)
    }
}

/// The outcome of a review: what the webhook answers and the CLI prints.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Verdict {
    pub allowed: bool,
    /// Set when denied (and for in-band errors).
    pub status: Option<DenyStatus>,
    /// Shown by kubectl as `Warning: ...`.
    pub warnings: Vec<String>,
    /// JSON Patch for the mutating path; `None` when nothing changes.
    pub patch: Option<json_patch::Patch>,
}

impl Verdict {
    /// Admitted, with `warnings` and no patch.
    pub(crate) fn allow(warnings: Vec<String>) -> Self {
        Self {
            allowed: true,
            warnings,
            ..Self::default()
        }
    }
}

/// A `metav1.Status` for a denial, shaped so that kubectl renders
/// `The BareMetalHost "h" is invalid:` + one bullet per cause.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct DenyStatus {
    pub code: u16,
    /// `Invalid` for rule violations, `BadRequest` for undecodable objects,
    /// `InternalError` for handler panics.
    pub reason: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StatusDetails {
    pub name: String,
    pub group: String,
    pub kind: String,
    pub causes: Vec<StatusCause>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StatusCause {
    pub reason: String,
    pub field: String,
    pub message: String,
}

/// A request object the caller already decoded into the rules' types (the
/// webhook does it while parsing the AdmissionReview envelope, which saves a
/// second scan of the object). It must have been decoded the way
/// [`decode_json_text`] does (a JSON object, unknown fields skipped).
#[derive(Clone, Debug)]
pub enum TypedObject {
    Host(Box<crate::model::BareMetalHost>),
    DataImage(Box<crate::model::UpstreamDataImage>),
}
