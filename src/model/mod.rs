//! Typed views of the Kubernetes objects this project reads.
//!
//! Only the fields the rules and the reconciler read are modelled; serde skips
//! every other field, so a BareMetalHost written by a newer baremetal-operator
//! still decodes and is judged on the fields we know. Nothing here is ever
//! serialised back as a whole object: writes are patches.

use serde::Deserialize;

pub mod bmh;
pub mod dataimage;
pub mod secret;

pub use bmh::BareMetalHost;
pub use dataimage::{
    ContentFrom, DataImageInput, DataImageSpec, DataImageState, DataImageStatus, UpstreamDataImage,
};
pub use secret::SecretCredentials;

/// API group and version shared by every kind handled here.
pub const GROUP: &str = "metal3.io";
pub const VERSION: &str = "v1alpha1";
pub const API_VERSION: &str = "metal3.io/v1alpha1";

/// The light `ObjectMeta` shared by the BareMetalHost and DataImage views:
/// the few metadata fields the rules read. Annotations, labels and
/// managedFields are deliberately absent: serde skips them without allocating,
/// which keeps the admission hot path cheap (a client-side-applied host carries
/// its whole manifest again in an annotation).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub generate_name: Option<String>,
    pub namespace: Option<String>,
    pub generation: Option<i64>,
    pub deletion_timestamp: Option<String>,
}

impl ObjectMeta {
    /// `name`, else `generateName` (a generateName create has no name yet).
    pub fn name_or_generate_name(&self) -> Option<&str> {
        self.name.as_deref().or(self.generate_name.as_deref())
    }
}
