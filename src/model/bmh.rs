//! The BareMetalHost fields this project reads.
//!
//! Two views, both only ever decoded:
//! - [`BareMetalHost`]: a light object with a small [`ObjectMeta`], decoded
//!   straight from an admission request or a manifest (no `managedFields`, no
//!   `serde_json::Value` trees: the admission hot path stays cheap);
//! - [`HostResource`]: Kubernetes' full `ObjectMeta`, a `kube::Resource` for
//!   the reconciler's `Api`/`Controller`. The reconciler only ever *patches*,
//!   so the fields we do not model are never lost.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta as K8sObjectMeta;
use serde::Deserialize;

use super::ObjectMeta;
use super::dataimage::{DataImageInput, DataImageSpec, DataImageStatus};

/// `spec.bmc`
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct BmcDetails {
    #[serde(default)]
    pub address: String,
}

/// `spec.image` (what the operator provisions; only its format is read).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct HostImage {
    pub format: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BareMetalHostSpec {
    pub data_image: Option<DataImageSpec>,
    pub online: Option<bool>,
    pub disable_power_off: Option<bool>,
}

/// `status.provisioning`
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
pub struct ProvisionStatus {
    #[serde(default)]
    pub state: String,
    /// The Ironic node UUID.
    #[serde(default, rename = "ID")]
    pub id: String,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BareMetalHostStatus {
    pub provisioning: Option<ProvisionStatus>,
    pub powered_on: Option<bool>,
    /// Written by the baremetal-operator with every status (`OK`,
    /// `discovered`, `error`, ...): its presence says the operator has
    /// written the status at all.
    pub operational_status: Option<String>,
    pub data_image: Option<DataImageStatus>,
}

/// A BareMetalHost as decoded by the admission path and the `check` CLI: only
/// the fields the rules read, each typed, so a wrong JSON type is reported
/// with its path. `spec.dataImage` is read leniently ([`DataImageInput`]) so
/// that a missing or empty `url` is a field error rather than a decode error.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(default)]
pub struct BareMetalHost {
    pub metadata: ObjectMeta,
    pub spec: Option<AdmissionHostSpec>,
    pub status: Option<AdmissionHostStatus>,
}

/// `spec` as the rules read it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionHostSpec {
    /// `null` decodes as absent.
    pub data_image: Option<DataImageInput>,
    pub bmc: Option<BmcDetails>,
    pub image: Option<HostImage>,
    pub disable_power_off: Option<bool>,
}

/// `status` as the mutating path reads it: only whether `status.dataImage`
/// is there (its content is restored verbatim from oldObject when needed).
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionHostStatus {
    #[serde(default, deserialize_with = "present_and_not_null")]
    pub data_image: bool,
}

/// `true` when the value is present and not `null`, without building it.
fn present_and_not_null<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<bool, D::Error> {
    Ok(Option::<serde::de::IgnoredAny>::deserialize(deserializer)?.is_some())
}

impl BareMetalHost {
    pub fn data_image(&self) -> Option<&DataImageInput> {
        self.spec.as_ref()?.data_image.as_ref()
    }

    pub fn bmc_address(&self) -> Option<&str> {
        Some(self.spec.as_ref()?.bmc.as_ref()?.address.as_str())
    }

    pub fn image_format(&self) -> Option<&str> {
        self.spec.as_ref()?.image.as_ref()?.format.as_deref()
    }

    pub fn disable_power_off(&self) -> bool {
        self.spec.as_ref().and_then(|s| s.disable_power_off) == Some(true)
    }

    pub fn has_status_data_image(&self) -> bool {
        self.status.as_ref().is_some_and(|s| s.data_image)
    }

    pub fn is_being_deleted(&self) -> bool {
        self.metadata.deletion_timestamp.is_some()
    }
}

/// The reconciler's view: full Kubernetes metadata, same spec/status types.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct HostResource {
    pub metadata: K8sObjectMeta,
    #[serde(default)]
    pub spec: BareMetalHostSpec,
    pub status: Option<BareMetalHostStatus>,
}

// kube's blanket `kube::Resource` impl reads these two.
impl k8s_openapi::Resource for HostResource {
    const API_VERSION: &'static str = super::API_VERSION;
    const GROUP: &'static str = super::GROUP;
    const KIND: &'static str = "BareMetalHost";
    const VERSION: &'static str = super::VERSION;
    const URL_PATH_SEGMENT: &'static str = "baremetalhosts";
    type Scope = k8s_openapi::NamespaceResourceScope;
}

impl k8s_openapi::Metadata for HostResource {
    type Ty = K8sObjectMeta;

    fn metadata(&self) -> &K8sObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut K8sObjectMeta {
        &mut self.metadata
    }
}
