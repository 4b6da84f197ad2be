//! `spec.dataImage` / `status.dataImage` on a BareMetalHost, and the upstream
//! `DataImage` kind. These types are also the source of the CRD schema
//! (`metal3-dataimage crd`), so their doc comments become field descriptions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A non-bootable ISO 9660 image to attach to the host's virtual CD drive once
/// the host is provisioned or externally provisioned: either fetched from url,
/// or built from a Secret (contentFrom). Exactly one of the two is set (the
/// metal3-dataimage admission webhook checks it).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataImageSpec {
    /// URL of the ISO image (http or https, at most 2048 characters; the
    /// metal3-dataimage admission webhook checks it). The BMC fetches it through
    /// Ironic; put credentials in the Secret named by credentialsName, never in
    /// the URL. Leave it out when the image is built from contentFrom.
    //
    // An empty string means "not set" (a missing `url` decodes as ""), so
    // the type stays `String` for the reconciler: `url.is_empty()` is "no URL".
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,

    /// Name of a Secret in the host's namespace holding `username` and
    /// `password` for HTTP basic authentication to the image server (a DNS-1123
    /// subdomain; the admission webhook checks it). Only with url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_name: Option<String>,

    /// Skip TLS certificate verification when fetching an https image.
    /// Defaulted to false by the mutating webhook when url is used; only with
    /// url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_certificate_verification: Option<bool>,

    /// Build the image from a Secret instead of fetching it: each key of the
    /// Secret becomes a file in the ISO's root directory, its value the file's
    /// bytes (cloud-init user-data/meta-data/network-config, an Ignition
    /// config, a Windows autounattend.xml). The ISO is rebuilt when the Secret
    /// changes. Instead of url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_from: Option<ContentFrom>,

    /// Volume label of the ISO built from contentFrom: at most 32 letters,
    /// digits, '_' or '-' (lower case and '-' only in labels of at most 16
    /// characters). Defaults to "config-2"; cloud-init's NoCloud datasource
    /// looks for "cidata". Only with contentFrom.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_label: Option<String>,
}

/// Where the content of a built data image comes from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContentFrom {
    /// Name of a Secret in the host's namespace (a DNS-1123 subdomain). Each
    /// key becomes a file of the same name in the ISO's root directory (at
    /// most 64 characters); the Secret must have at least one key.
    pub secret_name: String,
}

impl DataImageSpec {
    /// What the host asks for, as one string: the URL, or
    /// `secret:<secretName>` for an image built from contentFrom (the
    /// reconciler keeps it in its record and shows it in `status.dataImage.url`;
    /// a change of it is a swap). `None` when neither is set.
    pub fn source(&self) -> Option<String> {
        if !self.url.is_empty() {
            return Some(self.url.clone());
        }
        self.content_from
            .as_ref()
            .map(|c| format!("secret:{}", c.secret_name))
    }

    /// The label of the ISO built from contentFrom: volumeLabel, else
    /// [`crate::staging::config_iso::DEFAULT_VOLUME_LABEL`].
    pub fn effective_volume_label(&self) -> &str {
        self.volume_label
            .as_deref()
            .unwrap_or(crate::staging::config_iso::DEFAULT_VOLUME_LABEL)
    }
}

/// `spec.dataImage` as the admission rules read it: every field optional, so
/// that `url: ""` or a missing `url` is reported as a field error (rule 1)
/// instead of failing to decode.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataImageInput {
    pub url: Option<String>,
    pub credentials_name: Option<String>,
    pub disable_certificate_verification: Option<bool>,
    pub content_from: Option<ContentFromInput>,
    pub volume_label: Option<String>,
}

/// `spec.dataImage.contentFrom` as the admission rules read it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContentFromInput {
    pub secret_name: Option<String>,
}

impl DataImageInput {
    /// Equal for the rules: an absent `disableCertificateVerification` means
    /// `false` (the mutating webhook fills it in), so defaulting never counts
    /// as a change for ratcheting.
    pub fn same_for_rules(&self, other: &Self) -> bool {
        self.url == other.url
            && self.credentials_name == other.credentials_name
            && self.disable_certificate_verification.unwrap_or(false)
                == other.disable_certificate_verification.unwrap_or(false)
            && self.content_from == other.content_from
            && self.volume_label == other.volume_label
    }

    /// `url` when set to a non-empty string.
    pub fn url_set(&self) -> bool {
        self.url.as_deref().is_some_and(|u| !u.is_empty())
    }

    /// `contentFrom.secretName`, when contentFrom is set.
    pub fn content_secret(&self) -> Option<&str> {
        self.content_from.as_ref()?.secret_name.as_deref()
    }
}

/// Lifecycle of the data image as seen by the reconciler.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DataImageState {
    Waiting,
    Attaching,
    Attached,
    Detaching,
    Detached,
    Error,
}

impl DataImageState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "Waiting",
            Self::Attaching => "Attaching",
            Self::Attached => "Attached",
            Self::Detaching => "Detaching",
            Self::Detached => "Detached",
            Self::Error => "Error",
        }
    }
}

/// What the reconciler last did with the data image. A mirror, for people, of
/// the authoritative `dataimage.metal3.io/attached` annotation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataImageStatus {
    /// The user's URL this status refers to (never a staging URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Waiting, Attaching, Attached, Detaching, Detached or Error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<DataImageState>,
    /// Human-readable detail for the current state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Consecutive failures since the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_count: Option<u32>,
    /// When state last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub last_transition_time: Option<String>,
    /// metadata.generation of the host this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// sha256 of the staged image, when the image was staged (credentials or
    /// disableCertificateVerification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_digest: Option<String>,
    /// Size in bytes of the staged image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged_size: Option<u64>,
}

/// The upstream `DataImage` kind (`metal3.io/v1alpha1`), same name and
/// namespace as its host; only `spec.url` is read.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct UpstreamDataImage {
    pub metadata: super::ObjectMeta,
    pub spec: Option<UpstreamDataImageSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct UpstreamDataImageSpec {
    pub url: Option<String>,
}
