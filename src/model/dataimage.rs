//! `spec.dataImage` / `status.dataImage` on a BareMetalHost, and the upstream
//! `DataImage` kind. These types are also the source of the CRD schema
//! (`metal3-dataimage crd`), so their doc comments become field descriptions.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A non-bootable ISO 9660 image to attach to the host's virtual CD drive once
/// the host is provisioned or externally provisioned.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataImageSpec {
    /// URL of the ISO image (http or https, at most 2048 characters; the
    /// metal3-dataimage admission webhook checks it). The BMC fetches it through
    /// Ironic; put credentials in the Secret named by credentialsName, never in
    /// the URL.
    pub url: String,

    /// Name of a Secret in the host's namespace holding `username` and
    /// `password` for HTTP basic authentication to the image server (a DNS-1123
    /// subdomain; the admission webhook checks it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_name: Option<String>,

    /// Skip TLS certificate verification when fetching an https image.
    /// Defaulted to false by the mutating webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_certificate_verification: Option<bool>,
}

/// `spec.dataImage` as the admission rules read it: every field optional, so
/// that `url: ""` or a missing `url` is reported as a field error (rule 1)
/// instead of failing to decode.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DataImageInput {
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub credentials_name: Option<String>,
    #[serde(default)]
    pub disable_certificate_verification: Option<bool>,
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
    pub const ALL: [DataImageState; 6] = [
        Self::Waiting,
        Self::Attaching,
        Self::Attached,
        Self::Detaching,
        Self::Detached,
        Self::Error,
    ];

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
pub struct UpstreamDataImage {
    #[serde(default)]
    pub metadata: super::bmh::ObjectMeta,
    #[serde(default)]
    pub spec: Option<UpstreamDataImageSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
pub struct UpstreamDataImageSpec {
    #[serde(default)]
    pub url: Option<String>,
}

/// Convenience alias used by the rules for the BMH field.
pub type DataImage = DataImageSpec;
